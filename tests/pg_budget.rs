//! Link budgets on one PostgreSQL shared by three nodes' stores (API.md §5.3): every node runs
//! its own group commit; the database alone decides what fits.

mod common;

use common::pg::Pg;
use common::within;
use keydrop::activity::{ChainVerifier, Entry, Kind};
use keydrop::model::LinkRecord;
use keydrop::store::pg::{Admission, PgOptions, PgStore};
use std::sync::Arc;

const MIB: u64 = 1 << 20;

async fn nodes(pg: &Pg, n: usize) -> Vec<Arc<PgStore>> {
    let mut out = Vec::new();
    for i in 0..n {
        let opts = PgOptions { pool_size: 8, ..PgOptions::new(&pg.url, &format!("edge-{i}")) };
        out.push(Arc::new(within(30, "open", PgStore::open(&opts, Default::default())).await.unwrap()));
    }
    out
}

fn link(id: u8, max_uses: u32, unit: u64) -> LinkRecord {
    LinkRecord {
        link_id: hex::encode([id; 16]),
        order_id: "ord-1".into(),
        tenant_id: None,
        product_id: "p".into(),
        file_id: "f".into(),
        key_id: 1,
        issued_at: 0,
        expires_at: i64::MAX,
        max_uses,
        unit,
    }
}

fn started(id: u8) -> Entry {
    let mut e = Entry::new(Kind::DownloadStarted);
    e.link_id = Some(hex::encode([id; 16]));
    e
}

/// Walks the whole log from one node, checking the one chain and its gap-free `seq`.
async fn verify(store: &PgStore) -> Vec<keydrop::activity::Record> {
    let mut all = Vec::new();
    let mut v = ChainVerifier::default();
    loop {
        let page = store.records_after(all.len() as u64, 1000).await.unwrap();
        if page.is_empty() {
            break;
        }
        for r in &page {
            v.push(r).unwrap();
        }
        all.extend(page);
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_thousand_racing_reservations_over_three_nodes_admit_exactly_fifty() {
    let pg = Pg::start();
    let nodes = nodes(&pg, 3).await;
    nodes[0].issue_link(link(7, 50, MIB), Entry::new(Kind::LinkIssued)).await.unwrap();
    let barrier = Arc::new(tokio::sync::Barrier::new(1000));
    let tasks: Vec<_> = (0..1000)
        .map(|i| {
            let (node, barrier) = (nodes[i % 3].clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                node.reserve([7; 16], MIB, started(7)).await.unwrap()
            })
        })
        .collect();
    let mut granted = 0;
    for t in tasks {
        if let Admission::Granted { .. } = within(60, "reserve", t).await.unwrap() {
            granted += 1;
        }
    }
    assert_eq!(granted, 50);
    let (_, spent) = nodes[1].link(&[7; 16]).await.unwrap().unwrap();
    assert_eq!(spent, 50 * MIB);
    // One chain over all nodes: the issue, then exactly the 50 admitted starts.
    let log = verify(&nodes[2]).await;
    assert_eq!(log.len(), 51);
    assert_eq!(log.iter().filter(|r| r.kind == Kind::DownloadStarted).count(), 50);
    assert!(log.iter().all(|r| r.node.as_deref().is_some_and(|n| n.starts_with("edge-"))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ranges_of_any_size_never_exceed_the_budget_and_refunds_come_back() {
    let pg = Pg::start();
    let nodes = nodes(&pg, 3).await;
    let budget = 5 * MIB;
    nodes[0].issue_link(link(9, 5, MIB), Entry::new(Kind::LinkIssued)).await.unwrap();
    let tasks: Vec<_> = (0..300u64)
        .map(|i| {
            let node = nodes[(i % 3) as usize].clone();
            // Sizes from 1 byte to 1 MiB, as parallel Range requests of a download manager.
            let bytes = 1 + (i * 7919 * 4099) % MIB;
            tokio::spawn(async move { (bytes, node.reserve([9; 16], bytes, started(9)).await.unwrap()) })
        })
        .collect();
    let mut sum = 0;
    for t in tasks {
        if let (bytes, Admission::Granted { spent }) = within(60, "reserve", t).await.unwrap() {
            assert!(spent <= budget);
            sum += bytes;
        }
    }
    let (_, spent) = nodes[0].link(&[9; 16]).await.unwrap().unwrap();
    assert!(sum <= budget && spent == sum, "granted {sum}, spent {spent}");
    // A refund of unsent bytes goes back to the budget, on any node.
    nodes[2].settle([9; 16], 1000, Entry::new(Kind::DownloadFinished)).unwrap();
    nodes[2].flush().await.unwrap(); // everything sent before is committed
    let (_, after) = nodes[1].link(&[9; 16]).await.unwrap().unwrap();
    assert_eq!(after, spent - 1000);
    verify(&nodes[1]).await;
}
