//! Revocation push signatures, pure: `Keydrop-Signature: t=<unix seconds>,v1=<hex>` where `v1`
//! is `HMAC-SHA256("<t>.<raw body>")` under a push secret. Several `v1=` values may be sent (a
//! sender in the middle of a rotation); several secrets may be configured. A signature is good
//! when any `v1` verifies under any secret (ring's constant-time verification) and `t` is within
//! [`TOLERANCE_SECS`] of `now`, in either direction.

use ring::hmac;

/// How far `t` may be from the server's clock.
pub const TOLERANCE_SECS: i64 = 300;
/// The most `v1=` values a header may carry (API.md §5.2): each costs one HMAC per secret.
pub const MAX_SIGNATURES: usize = 4;
/// The longest header accepted, in bytes (API.md §5.2).
pub const MAX_HEADER_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BadSignature {
    #[error("missing Keydrop-Signature header")]
    Missing,
    #[error("malformed Keydrop-Signature header")]
    Malformed,
    #[error("timestamp outside the tolerance")]
    Stale,
    #[error("no signature matches")]
    Mismatch,
}

/// Parses `t=…,v1=…[,v1=…]`; unknown keys are ignored (future schemes). A header longer than
/// [`MAX_HEADER_BYTES`] or with more than [`MAX_SIGNATURES`] `v1=` values is malformed, so a
/// refused push costs at most that many HMACs per secret, whatever it sends.
pub fn parse(header: &str) -> Result<(i64, Vec<Vec<u8>>), BadSignature> {
    if header.len() > MAX_HEADER_BYTES {
        return Err(BadSignature::Malformed);
    }
    let mut t = None;
    let mut sigs = Vec::new();
    for part in header.split(',') {
        let (k, v) = part.trim().split_once('=').ok_or(BadSignature::Malformed)?;
        match k {
            "t" => t = Some(v.parse::<i64>().map_err(|_| BadSignature::Malformed)?),
            "v1" if sigs.len() == MAX_SIGNATURES => return Err(BadSignature::Malformed),
            "v1" => sigs.push(hex::decode(v).map_err(|_| BadSignature::Malformed)?),
            _ => {}
        }
    }
    match (t, sigs.is_empty()) {
        (Some(t), false) => Ok((t, sigs)),
        _ => Err(BadSignature::Malformed),
    }
}

fn signed_payload(t: i64, body: &[u8]) -> Vec<u8> {
    let mut p = format!("{t}.").into_bytes();
    p.extend_from_slice(body);
    p
}

/// Checks a push's signature header against the secrets at `now` (unix seconds).
pub fn verify(secrets: &[String], header: Option<&str>, body: &[u8], now: i64) -> Result<(), BadSignature> {
    let (t, sigs) = parse(header.ok_or(BadSignature::Missing)?)?;
    if now.abs_diff(t) > TOLERANCE_SECS.unsigned_abs() {
        return Err(BadSignature::Stale);
    }
    let payload = signed_payload(t, body);
    let ok = secrets.iter().any(|s| {
        let key = hmac::Key::new(hmac::HMAC_SHA256, s.as_bytes());
        sigs.iter().any(|sig| hmac::verify(&key, &payload, sig).is_ok())
    });
    if ok {
        Ok(())
    } else {
        Err(BadSignature::Mismatch)
    }
}

/// The header value for `body` signed at `t` under `secret`.
pub fn sign(secret: &str, t: i64, body: &[u8]) -> String {
    let key = hmac::Key::new(hmac::HMAC_SHA256, secret.as_bytes());
    format!("t={t},v1={}", hex::encode(hmac::sign(&key, &signed_payload(t, body))))
}

#[cfg(test)]
mod tests {
    use super::*;

    const BODY: &[u8] = br#"{"order_id":"ord_1","reason":"chargeback"}"#;

    #[test]
    fn good_signature_verifies_within_tolerance_both_ways() {
        let h = sign("s3cret", 1_000, BODY);
        let secrets = vec!["s3cret".to_owned()];
        assert_eq!(verify(&secrets, Some(&h), BODY, 1_000), Ok(()));
        assert_eq!(verify(&secrets, Some(&h), BODY, 1_300), Ok(()));
        assert_eq!(verify(&secrets, Some(&h), BODY, 700), Ok(()));
        assert_eq!(verify(&secrets, Some(&h), BODY, 1_301), Err(BadSignature::Stale));
        assert_eq!(verify(&secrets, Some(&h), BODY, 699), Err(BadSignature::Stale));
    }

    #[test]
    fn wrong_secret_altered_body_missing_or_malformed_header_fail() {
        let h = sign("s3cret", 1_000, BODY);
        assert_eq!(verify(&["other".into()], Some(&h), BODY, 1_000), Err(BadSignature::Mismatch));
        assert_eq!(verify(&["s3cret".into()], Some(&h), b"{}", 1_000), Err(BadSignature::Mismatch));
        assert_eq!(verify(&["s3cret".into()], None, BODY, 1_000), Err(BadSignature::Missing));
        for bad in ["", "t=abc,v1=00", "v1=00", "t=1000", "t=1000,v1=zz", "garbage"] {
            assert!(verify(&["s3cret".into()], Some(bad), BODY, 1_000).is_err(), "{bad}");
        }
        assert_eq!(verify(&[], Some(&h), BODY, 1_000), Err(BadSignature::Mismatch));
    }

    #[test]
    fn more_than_four_v1_values_or_a_header_over_1024_bytes_is_malformed_before_any_hmac() {
        let good = sign("s3cret", 1_000, BODY);
        let v1 = good.split_once(',').unwrap().1;
        let four = format!("t=1000,{}", [v1; 4].join(","));
        assert_eq!(verify(&["s3cret".into()], Some(&four), BODY, 1_000), Ok(()), "four values are allowed");
        let five = format!("t=1000,{}", [v1; 5].join(","));
        assert_eq!(parse(&five), Err(BadSignature::Malformed));
        assert_eq!(verify(&["s3cret".into()], Some(&five), BODY, 1_000), Err(BadSignature::Malformed));
        let long = format!("{good},x={}", "a".repeat(MAX_HEADER_BYTES));
        assert_eq!(verify(&["s3cret".into()], Some(&long), BODY, 1_000), Err(BadSignature::Malformed));
    }

    #[test]
    fn rotation_any_secret_any_v1() {
        let old = sign("old", 1_000, BODY);
        let new = sign("new", 1_000, BODY);
        let both = format!("{},{}", new, old.split_once(',').unwrap().1);
        assert_eq!(verify(&["old".into(), "new".into()], Some(&old), BODY, 1_000), Ok(()));
        assert_eq!(verify(&["old".into()], Some(&both), BODY, 1_000), Ok(()));
    }
}
