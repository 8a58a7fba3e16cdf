//! Signed download-link tokens: pure encode/verify, no I/O and no store.
//!
//! A token is `base64url(payload ‖ mac)` without padding, where
//!
//! ```text
//! payload = version:u8 (=1) ‖ key_id:u32 BE ‖ link_id:[u8;16] ‖ expires_at:i64 BE (unix seconds)
//! mac     = HMAC-SHA256(link_key[key_id], payload)           (32 bytes)
//! ```
//!
//! 29 + 32 bytes encode to exactly [`TOKEN_LEN`] = 82 characters, well under the 200 the contract
//! allows. A [`KeyRing`] holds several verification keys and one signing key (the newest), so a
//! key can be rotated without breaking links that are still live; a retired key is simply removed
//! from the ring. Verification checks the length before decoding, the MAC with `ring`'s
//! constant-time comparison, and never looks anything up: a bad token costs no store access.
//! Expiry is *not* decided here — the caller compares [`Claims::expires_at`] with its `now`, so
//! that an expired but genuine link can still be named in the activity log.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;
use std::collections::BTreeMap;

/// Length of every token this version issues, in characters.
pub const TOKEN_LEN: usize = 82;
const VERSION: u8 = 1;
const PAYLOAD_LEN: usize = 1 + 4 + 16 + 8;
const MAC_LEN: usize = 32;

/// A link's identity: 16 random bytes, shown to people as 32 hex characters.
pub type LinkId = [u8; 16];

/// What a genuine token says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claims {
    pub key_id: u32,
    pub link_id: LinkId,
    /// Unix seconds.
    pub expires_at: i64,
}

/// Why a token was refused. The HTTP layer maps every variant to the same `404 invalid`, so a
/// prober learns nothing; the variants exist for tests and for debugging logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    Length,
    Encoding,
    Version,
    UnknownKey,
    Signature,
}

/// The link-signing keys: every key verifies, the highest id signs.
#[derive(Clone)]
pub struct KeyRing {
    keys: BTreeMap<u32, hmac::Key>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("KeyRing").field("key_ids", &self.keys.keys().collect::<Vec<_>>()).finish()
    }
}

impl KeyRing {
    /// Builds a ring from `(key_id, secret)` pairs. Panics on an empty list: a server without a
    /// signing key is a programming error, caught at start-up.
    pub fn new(keys: impl IntoIterator<Item = (u32, Vec<u8>)>) -> Self {
        let keys: BTreeMap<_, _> =
            keys.into_iter().map(|(id, secret)| (id, hmac::Key::new(hmac::HMAC_SHA256, &secret))).collect();
        assert!(!keys.is_empty(), "a key ring needs at least one key");
        KeyRing { keys }
    }

    /// The id of the key new tokens are signed with.
    pub fn signing_key_id(&self) -> u32 {
        *self.keys.keys().next_back().expect("non-empty ring")
    }

    pub fn key_ids(&self) -> Vec<u32> {
        self.keys.keys().copied().collect()
    }

    /// Signs a token for `link_id` with the current signing key.
    pub fn sign(&self, link_id: &LinkId, expires_at: i64) -> String {
        self.sign_with(self.signing_key_id(), link_id, expires_at).expect("signing key is in the ring")
    }

    /// Signs with a named key (tests and rotation tooling); `None` if the ring lacks it.
    pub fn sign_with(&self, key_id: u32, link_id: &LinkId, expires_at: i64) -> Option<String> {
        let key = self.keys.get(&key_id)?;
        let mut buf = Vec::with_capacity(PAYLOAD_LEN + MAC_LEN);
        buf.push(VERSION);
        buf.extend_from_slice(&key_id.to_be_bytes());
        buf.extend_from_slice(link_id);
        buf.extend_from_slice(&expires_at.to_be_bytes());
        let tag = hmac::sign(key, &buf);
        buf.extend_from_slice(tag.as_ref());
        Some(URL_SAFE_NO_PAD.encode(buf))
    }

    /// Checks a token's form and signature. Constant-time in the MAC comparison; the length check
    /// comes first so that absurd inputs (10 KB "tokens") are refused without decoding.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.len() != TOKEN_LEN {
            return Err(TokenError::Length);
        }
        let mut raw = [0u8; PAYLOAD_LEN + MAC_LEN + 2];
        let n = URL_SAFE_NO_PAD.decode_slice(token.as_bytes(), &mut raw).map_err(|_| TokenError::Encoding)?;
        if n != PAYLOAD_LEN + MAC_LEN {
            return Err(TokenError::Encoding);
        }
        let (payload, mac) = raw[..n].split_at(PAYLOAD_LEN);
        if payload[0] != VERSION {
            return Err(TokenError::Version);
        }
        let key_id = u32::from_be_bytes(payload[1..5].try_into().expect("4 bytes"));
        let key = self.keys.get(&key_id).ok_or(TokenError::UnknownKey)?;
        hmac::verify(key, payload, mac).map_err(|_| TokenError::Signature)?;
        let mut link_id = [0u8; 16];
        link_id.copy_from_slice(&payload[5..21]);
        let expires_at = i64::from_be_bytes(payload[21..29].try_into().expect("8 bytes"));
        Ok(Claims { key_id, link_id, expires_at })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> KeyRing {
        KeyRing::new([(1, vec![7u8; 32]), (2, vec![9u8; 32])])
    }

    #[test]
    fn round_trip_signs_with_newest_key_and_fits_contract_length() {
        let r = ring();
        let t = r.sign(&[5u8; 16], 1_900_000_000);
        assert_eq!(t.len(), TOKEN_LEN);
        assert!(t.len() <= 200);
        assert!(t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        let c = r.verify(&t).unwrap();
        assert_eq!(c, Claims { key_id: 2, link_id: [5u8; 16], expires_at: 1_900_000_000 });
    }

    #[test]
    fn older_key_still_verifies_after_rotation() {
        let old = KeyRing::new([(1, vec![7u8; 32])]);
        let t = old.sign(&[1u8; 16], 10);
        assert_eq!(ring().verify(&t).unwrap().key_id, 1);
    }

    #[test]
    fn retired_or_unknown_key_is_refused() {
        let t = ring().sign_with(1, &[1u8; 16], 10).unwrap();
        let only_new = KeyRing::new([(2, vec![9u8; 32])]);
        assert_eq!(only_new.verify(&t), Err(TokenError::UnknownKey));
    }

    #[test]
    fn every_flipped_bit_is_refused() {
        let r = ring();
        let t = r.sign(&[3u8; 16], 99);
        let raw = URL_SAFE_NO_PAD.decode(&t).unwrap();
        for i in 0..raw.len() * 8 {
            let mut m = raw.clone();
            m[i / 8] ^= 1 << (i % 8);
            assert!(r.verify(&URL_SAFE_NO_PAD.encode(&m)).is_err(), "bit {i}");
        }
    }

    #[test]
    fn malformed_inputs_are_refused_without_panicking() {
        let r = ring();
        for bad in ["", "abc", &"A".repeat(TOKEN_LEN), &"!".repeat(TOKEN_LEN), &"A".repeat(10_000)] {
            assert!(r.verify(bad).is_err());
        }
        let mut wrong_version = URL_SAFE_NO_PAD.decode(r.sign(&[0; 16], 0)).unwrap();
        wrong_version[0] = 2;
        assert_eq!(r.verify(&URL_SAFE_NO_PAD.encode(wrong_version)), Err(TokenError::Version));
    }

    #[test]
    fn a_different_secret_with_the_same_key_id_is_refused() {
        let t = ring().sign(&[4u8; 16], 5);
        let other = KeyRing::new([(2, vec![1u8; 32])]);
        assert_eq!(other.verify(&t), Err(TokenError::Signature));
    }
}
