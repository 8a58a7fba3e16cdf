//! `cargo bench --bench micro`: criterion micro-benchmarks of the hot path's pieces — token sign
//! and verify, `Range` parsing, one reservation made durable through the group-commit writer
//! (alone, and 64 at once), and sealing an activity record (canonical JSON + SHA-256).

use criterion::{criterion_group, criterion_main, Criterion};
use keydrop::activity::{Entry, Kind, Record, GENESIS};
use keydrop::ledger::Outcome;
use keydrop::range::bytes_range;
use keydrop::requester::Requester;
use keydrop::store::{Embedded, LinkRecord, Store};
use keydrop::token::KeyRing;
use std::hint::black_box;
use std::sync::Arc;

fn tokens(c: &mut Criterion) {
    let ring = KeyRing::new([(1, vec![7u8; 32]), (2, vec![9u8; 32])]);
    let token = ring.sign(&[5u8; 16], 1_900_000_000);
    c.bench_function("token_sign", |b| b.iter(|| ring.sign(black_box(&[5u8; 16]), black_box(1_900_000_000))));
    c.bench_function("token_verify", |b| b.iter(|| ring.verify(black_box(&token)).unwrap()));
}

fn ranges(c: &mut Criterion) {
    c.bench_function("range_parse_single", |b| {
        b.iter(|| bytes_range(black_box(Some(b"bytes=1048576-2097151".as_slice())), black_box(4 << 30)))
    });
    let many =
        format!("bytes={}", (0..16).map(|i| format!("{}-{}", i * 100, i * 100 + 50)).collect::<Vec<_>>().join(","));
    c.bench_function("range_parse_16_ranges", |b| {
        b.iter(|| bytes_range(black_box(Some(many.as_bytes())), black_box(1 << 20)))
    });
}

fn hashing(c: &mut Criterion) {
    let mut e = Entry::new(Kind::DownloadStarted);
    e.actor = Some("customer".into());
    e.tenant_id = Some("3f2a9c4e-8d1b-4e6a-9f0c-5b7d2e1a4c8f".into());
    e.order_id = Some("ord_1f680c323d218f3c".into());
    e.link_id = Some("3c15ed6ce9cd146f5b9190a8dabb392d".into());
    e.ip = Some("203.0.113.7".into());
    e.user_agent = Some("Mozilla/5.0 (Windows NT 10.0; Win64; x64)".into());
    e.bytes = Some(4096);
    c.bench_function("activity_record_seal", |b| {
        b.iter(|| Record::seal(black_box(e.clone()), 42, "2026-11-21T08:30:00.000000Z".into(), GENESIS))
    });
    // What the writer runs: sealed straight to the stored JSON (one serialization, one hash).
    c.bench_function("activity_record_seal_json", |b| {
        b.iter(|| Record::seal_json(black_box(&e), 42, "2026-11-21T08:30:00.000000Z", GENESIS))
    });
}

fn reservations(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = Arc::new(Store::Embedded(Embedded::open(dir.path()).unwrap()));
    let ledger = Arc::new(keydrop::ledger::Ledger::new(store.clone()));
    let id = [1u8; 16];
    let rec = LinkRecord {
        link_id: hex::encode(id),
        order_id: "ord".into(),
        tenant_id: None,
        product_id: "p".into(),
        file_id: "f".into(),
        key_id: 1,
        issued_at: 0,
        expires_at: i64::MAX,
        max_uses: u32::MAX,
        unit: 1 << 40,
    };
    rt.block_on(store.issue_link(rec, Entry::new(Kind::LinkIssued))).unwrap();
    let link = rt.block_on(ledger.link(&id)).unwrap().unwrap();
    let who = || Requester::new(std::net::Ipv4Addr::LOCALHOST.into(), &http::HeaderMap::new(), None);
    // Each reservation is finished in full, as a completed download is (its record queued).
    c.bench_function("reserve_durable_alone", |b| {
        b.iter(|| rt.block_on(ledger.reserve(&link, 4096, 4096, who())).unwrap().finish(4096, Outcome::Complete));
    });
    c.bench_function("reserve_durable_64_concurrent", |b| {
        b.iter(|| {
            rt.block_on(async {
                let tasks: Vec<_> = (0..64)
                    .map(|_| {
                        let (ledger, link) = (ledger.clone(), link.clone());
                        tokio::spawn(async move {
                            let r = ledger.reserve(&link, 4096, 4096, who()).await.unwrap();
                            r.finish(4096, Outcome::Complete);
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        });
    });
    rt.block_on(store.close());
}

criterion_group!(benches, tokens, ranges, hashing, reservations);
criterion_main!(benches);
