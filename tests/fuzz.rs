//! Property-based fuzzing (proptest) of everything that parses untrusted input: the link token
//! decoder, the Range parser, the revocation signature header, and the admin API's JSON bodies
//! (through the real HTTP server). Each target runs a bounded number of cases so CI stays fast;
//! set `KEYDROP_FUZZ_CASES` to run longer. Any input a run finds is added below as a named
//! regression test.

mod common;

use common::*;
use keydrop::range::{bytes_range, RangeDecision};
use keydrop::token::KeyRing;
use proptest::prelude::*;
use proptest::test_runner::{Config as PtConfig, TestRunner};

fn cases(default: u32) -> u32 {
    std::env::var("KEYDROP_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

fn runner(n: u32) -> TestRunner {
    TestRunner::new(PtConfig { cases: n, failure_persistence: None, ..PtConfig::default() })
}

fn ring() -> KeyRing {
    KeyRing::new([(1, vec![7u8; 32]), (2, vec![9u8; 32])])
}

const B64URL: &str = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

#[test]
fn token_decoder_refuses_everything_it_did_not_sign() {
    let keys = ring();
    let n = cases(20_000);
    // Arbitrary text, and text of the token alphabet and length.
    runner(n)
        .run(&any::<String>(), |s| {
            prop_assert!(keys.verify(&s).is_err());
            Ok(())
        })
        .unwrap();
    runner(n)
        .run(&"[A-Za-z0-9_-]{70,90}", |s| {
            prop_assert!(keys.verify(&s).is_err());
            Ok(())
        })
        .unwrap();
    // Genuine tokens round-trip; any one-character change is refused.
    let strat = (any::<[u8; 16]>(), 0i64..4_000_000_000, any::<prop::sample::Index>(), 0usize..64);
    runner(n)
        .run(&strat, |(id, exp, pos, c)| {
            let t = keys.sign(&id, exp);
            let claims = keys.verify(&t).expect("own token verifies");
            prop_assert_eq!((claims.link_id, claims.expires_at), (id, exp));
            let i = pos.index(t.len());
            let new = B64URL.as_bytes()[c] as char;
            prop_assume!(t.as_bytes()[i] as char != new);
            let mut m = t.clone().into_bytes();
            m[i] = new as u8;
            let m = String::from_utf8(m).unwrap();
            prop_assert!(keys.verify(&m).is_err(), "mutated token {} verified", m);
            Ok(())
        })
        .unwrap();
    eprintln!("token decoder: {} cases", 3 * n);
}

#[test]
fn range_parser_never_exceeds_the_representation() {
    let n = cases(50_000);
    let header = prop_oneof![
        prop::collection::vec(any::<u8>(), 0..64),
        "(bytes|BYTES|items)?=? ?[0-9]{0,20}-?[0-9]{0,20}(,[0-9]{0,5}-[0-9]{0,5})?".prop_map(String::into_bytes),
    ];
    runner(n)
        .run(&(header, any::<u64>().prop_map(|x| x >> (x % 64))), |(h, len)| {
            let d = bytes_range(Some(&h), len);
            if let RangeDecision::Partial { start, end } = d {
                prop_assert!(start <= end && end < len, "{:?} for len {}", d, len);
            }
            prop_assert!(d.body_len(len) <= len);
            Ok(())
        })
        .unwrap();
    // Well-formed single ranges are honoured exactly (RFC 9110 §14.1.2).
    runner(n)
        .run(&(1u64..1 << 40, any::<u64>(), any::<u64>()), |(len, a, b)| {
            let (first, last) = (a % len, b % len);
            let (first, last) = (first.min(last), first.max(last));
            let h = format!("bytes={first}-{last}");
            prop_assert_eq!(bytes_range(Some(h.as_bytes()), len), RangeDecision::Partial { start: first, end: last });
            let suffix = format!("bytes=-{}", last + 1);
            let want = RangeDecision::Partial { start: len - (last + 1).min(len), end: len - 1 };
            prop_assert_eq!(bytes_range(Some(suffix.as_bytes()), len), want);
            Ok(())
        })
        .unwrap();
    eprintln!("range parser: {} cases", 2 * n);
}

#[test]
fn signature_header_parser_accepts_only_the_right_signature() {
    use keydrop::push;
    let secrets = vec!["s3cret".to_string()];
    let now = 1_800_000_000i64;
    let n = cases(20_000);
    let header = prop_oneof![
        any::<String>(),
        "t=-?[0-9]{0,20}(,v1=[0-9a-f]{0,70}){0,3}(,[a-z0-9]{1,3}=[^,]{0,10})?",
        (any::<i64>(), "[0-9a-f]{64}").prop_map(|(t, v)| format!("t={t},v1={v}")),
    ];
    runner(n)
        .run(&(header, prop::collection::vec(any::<u8>(), 0..64)), |(h, body)| {
            let _ = push::parse(&h);
            prop_assert!(push::verify(&secrets, Some(&h), &body, now).is_err());
            Ok(())
        })
        .unwrap();
    runner(n)
        .run(
            &(prop::collection::vec(any::<u8>(), 1..64), -300i64..=300, any::<prop::sample::Index>()),
            |(body, skew, i)| {
                let h = push::sign("s3cret", now + skew, &body);
                prop_assert!(push::verify(&secrets, Some(&h), &body, now).is_ok());
                let mut altered = body.clone();
                let i = i.index(altered.len());
                altered[i] ^= 1;
                prop_assert!(push::verify(&secrets, Some(&h), &altered, now).is_err());
                prop_assert!(push::verify(&["other".to_string()], Some(&h), &body, now).is_err());
                Ok(())
            },
        )
        .unwrap();
    eprintln!("signature header: {} cases", 2 * n);
}

/// Arbitrary JSON, biased towards the shapes the admin API expects.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value;
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
        ".{0,20}".prop_map(Value::from),
        prop::sample::select(vec!["perpetual", "subscription", "standard", "US", "AU", "EUR", "2026-11-21T08:30:00Z"])
            .prop_map(Value::from),
    ];
    let keys = prop::sample::select(vec![
        "name",
        "kind",
        "term_days",
        "unit_price_cents",
        "currency",
        "cancel_policy",
        "unavailable_markets",
        "key_required",
        "tenant_id",
        "domain",
        "country",
        "items",
        "product_id",
        "quantity",
        "ttl_secs",
        "max_uses",
        "auto_renew",
        "keys",
        "path",
        "filename",
        "version",
        "language",
        "file_type",
        "order_id",
        "reason",
        "x",
    ]);
    leaf.prop_recursive(3, 32, 6, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(keys.clone().prop_map(str::to_owned), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

#[test]
fn admin_json_bodies_get_answers_never_server_errors() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let s = rt.block_on(async {
        let s = Server::start_admin().await;
        s.add_file("f", "f.bin", 1000).await;
        let product = serde_json::json!({"name": "P", "kind": "perpetual", "unit_price_cents": 100, "currency": "USD",
            "cancel_policy": "standard", "unavailable_markets": [], "key_required": false});
        assert!(s.api("PUT", "/api/products/p", "global_admin", Some(product)).await.0 < 300);
        let customer =
            serde_json::json!({"tenant_id": TENANT, "domain": "contoso.com", "name": "Contoso", "country": "US"});
        assert_eq!(s.api("POST", "/api/customers", "admin_agent", Some(customer)).await.0, 201);
        s
    });
    let tenant = TENANT;
    let targets: Vec<(&str, String, &str)> = vec![
        ("PUT", "/api/products/q".into(), "global_admin"),
        ("PUT", "/api/products/p/files/g".into(), "global_admin"),
        ("POST", "/api/products/p/keys".into(), "global_admin"),
        ("POST", "/api/customers".into(), "admin_agent"),
        ("POST", format!("/api/customers/{tenant}/orders"), "admin_agent"),
        ("POST", "/api/orders/none/downloads".into(), "admin_agent"),
        ("PATCH", "/api/orders/none".into(), "admin_agent"),
        ("POST", "/api/orders/none/cancel".into(), "admin_agent"),
        ("POST", "/api/support-requests".into(), "admin_agent"),
    ];
    let n = cases(150);
    let mut execs = 0u32;
    // Well-shaped bodies with extreme numbers: products, orders, link requests.
    let num = prop_oneof![
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        (-3i64..3).prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from)
    ];
    let accepted = [std::sync::atomic::AtomicU32::new(0), std::sync::atomic::AtomicU32::new(0)];
    let shaped = (
        num.clone(),
        num.clone(),
        num.clone(),
        any::<bool>(),
        prop::sample::select(vec!["perpetual", "subscription", "x"]),
    );
    runner(n)
        .run(&shaped, |(a, b, c, flag, kind)| {
            let product = serde_json::json!({"name": "P", "kind": kind, "term_days": a, "unit_price_cents": b,
                "currency": "USD", "cancel_policy": "standard", "unavailable_markets": [], "key_required": flag});
            let order = serde_json::json!({"items": [{"product_id": "p", "quantity": c}], "purchased_at": "2026-11-21T08:30:00Z"});
            let links = serde_json::json!({"ttl_secs": a, "max_uses": b});
            for (m, p, role, body) in [
                ("PUT", "/api/products/q".to_string(), "global_admin", product),
                ("POST", format!("/api/customers/{tenant}/orders"), "admin_agent", order),
                ("POST", "/api/orders/none/downloads".to_string(), "admin_agent", links),
            ] {
                let (st, v) = rt.block_on(s.api(m, &p, role, Some(body.clone())));
                prop_assert!((200..500).contains(&st), "{} {} answered {} to {}: {}", m, p, st, body, v);
                accepted[usize::from(st < 300)].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
            Ok(())
        })
        .unwrap();
    execs += 3 * n;
    eprintln!(
        "well-shaped bodies with extreme numbers: {} refused, {} accepted",
        accepted[0].load(std::sync::atomic::Ordering::Relaxed),
        accepted[1].load(std::sync::atomic::Ordering::Relaxed)
    );
    for (method, path, role) in &targets {
        let body = prop_oneof![
            3 => json_value().prop_map(|v| v.to_string().into_bytes()),
            1 => prop::collection::vec(any::<u8>(), 0..200),
        ];
        runner(n)
            .run(&body, |raw| {
                let (st, v) = rt.block_on(s.api_raw(method, path, role, Some(raw.clone())));
                prop_assert!(
                    (200..500).contains(&st),
                    "{} {} answered {} to {}: {}",
                    method,
                    path,
                    st,
                    String::from_utf8_lossy(&raw),
                    v
                );
                if st >= 400 {
                    prop_assert!(v["code"].is_string(), "no problem body: {}", v);
                }
                Ok(())
            })
            .unwrap();
        execs += n;
    }
    eprintln!("admin JSON bodies: {execs} requests over {} endpoints", targets.len());
    rt.block_on(s.stop());
}

/// Found by hand while writing the targets above: `t=-9223372036854775808` overflowed the
/// staleness check (a panic in debug builds; in release the wrapped difference passed it).
#[test]
fn regression_extreme_signature_timestamps_are_refused_not_overflowed() {
    use keydrop::push;
    let secrets = vec!["s3cret".to_string()];
    for t in [i64::MIN, i64::MAX, i64::MIN + 1] {
        let h = push::sign("s3cret", t, b"{}");
        assert!(push::verify(&secrets, Some(&h), b"{}", 1_800_000_000).is_err(), "t={t}");
    }
}
