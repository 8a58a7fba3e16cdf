//! `kill -9` of the built binary: during downloads, right after them, while checkpoints commit
//! beside the journal, and right after a term end — nothing acknowledged is lost, nothing is
//! counted twice, and the activity log stays intact.

use crate::binary::*;
use crate::common::*;
use http_body_util::BodyExt;
use std::time::Duration;

/// How many `download.started` records the activity log holds.
async fn downloads_started(state: &keydrop::AppState) -> u64 {
    let records = state.store.records_after(0, 1_000_000).await.unwrap();
    records.iter().filter(|r| r.kind == keydrop::activity::Kind::DownloadStarted).count() as u64
}

/// Reads a body slowly, returning the bytes received until the end or an error.
async fn slow_read(url: String, delay_ms: u64) -> (u64, bool) {
    let Ok(resp) = client().request(request("GET", &url, &[])).await else { return (0, false) };
    if resp.status() != 200 {
        return (0, false);
    }
    let mut body = resp.into_body();
    let mut n = 0u64;
    loop {
        match tokio::time::timeout(Duration::from_secs(30), body.frame()).await {
            Ok(Some(Ok(f))) => {
                n += f.into_data().map(|d| d.len() as u64).unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            }
            Ok(None) => return (n, true),
            _ => return (n, false),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_downloads_never_loses_a_reservation_or_overspends() {
    let size = 4 * 1024 * 1024;
    let max_uses = 25u32;
    let budget = u64::from(max_uses) * size as u64;
    let (root, _data, link) = prepare(size, max_uses).await;

    // Phase 1: 20 slow downloads in flight, then kill -9.
    let mut p = spawn(root.path()).await;
    let url = url_on(&link, p.port);
    let readers: Vec<_> = (0..20).map(|_| tokio::spawn(slow_read(url.clone(), 60))).collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    p.child.kill().unwrap(); // SIGKILL
    p.child.wait().unwrap();
    let (mut received_1, mut cut) = (0u64, 0);
    for r in readers {
        let (n, complete) = within(60, "reader", r).await.unwrap();
        received_1 += n;
        cut += usize::from(!complete);
    }
    assert!(received_1 > 0 && cut > 0, "downloads were in flight at the kill: {cut} cut, {received_1} bytes");

    // After the crash: every byte a client received is counted; nothing beyond the budget.
    let st = open_link_status(root.path(), &link).await;
    assert!(st.bytes_spent >= received_1, "spent {} < received {received_1}", st.bytes_spent);
    assert!(st.bytes_spent <= budget);
    let (ok, out) = verify_log(&p.config);
    assert!(ok, "chain after kill -9: {out}");

    // Phase 2: restart on the same data dir and download until refused.
    let mut p = spawn(root.path()).await;
    let url = url_on(&link, p.port);
    let mut received_2 = 0u64;
    loop {
        let (st, _, b) = get(&url, &[]).await.unwrap();
        if st == 410 {
            assert_eq!(problem(&b)["code"], "exhausted");
            break;
        }
        assert_eq!(st, 200);
        received_2 += b.len() as u64;
    }
    assert!(received_1 + received_2 <= budget, "served {} > budget {budget}", received_1 + received_2);
    sigterm_and_wait(&mut p);
    let st = open_link_status(root.path(), &link).await;
    assert!(st.bytes_spent <= budget && st.bytes_spent >= received_1 + received_2);
    let (ok, out) = verify_log(&p.config);
    assert!(ok, "{out}");
    assert!(out.contains("intact"));
}

/// Downloads acknowledged just before a `kill -9` live only in the journal (redb has not made
/// them durable yet); `verify-log` and the next start must both replay them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_downloads_keeps_every_reservation_and_record_from_the_journal() {
    let size = 4096;
    let (root, data, link) = prepare(size, 1000).await;
    let mut p = spawn(root.path()).await;
    let url = url_on(&link, p.port);
    let n = 30u64;
    for _ in 0..n {
        let (st, _, b) = get(&url, &[]).await.unwrap();
        assert_eq!((st, b.as_ref()), (200, data.as_slice()));
    }
    p.child.kill().unwrap(); // SIGKILL, no shutdown
    p.child.wait().unwrap();
    // The journal holds the downloads' frames.
    let frames =
        keydrop::store::journal::read_file(&root.path().join("data").join(keydrop::store::JOURNAL_FILE)).unwrap();
    assert!(!frames.is_empty(), "the downloads were journalled");

    let (ok, out) = verify_log(&p.config);
    assert!(ok, "chain after kill -9: {out}");
    let records: u64 =
        out.split("intact: ").nth(1).and_then(|r| r.split(' ').next()).and_then(|c| c.parse().ok()).unwrap();
    assert!(records > n, "verify-log saw {records} records, fewer than the {n} downloads' started records: {out}");

    // The next start: every acknowledged download is counted and logged.
    let st = open_link_status(root.path(), &link).await;
    assert_eq!(st.bytes_spent, n * size as u64, "every acknowledged download is counted");
    let state = keydrop::AppState::open(test_config(root.path())).await.unwrap();
    let started = downloads_started(&state).await;
    // The replayed records are in the filter index too.
    let q = keydrop::activity::Query {
        kind: Some(keydrop::activity::Kind::DownloadStarted),
        order_id: state.store.records_after(0, 10_000).await.unwrap().iter().rev().find_map(|r| r.order_id.clone()),
        limit: 1000,
        ..Default::default()
    };
    assert_eq!(state.store.query_activity(&q).await.unwrap().0.len() as u64, n, "{q:?}");
    state.store.close().await;
    drop(state);
    assert_eq!(started, n, "every acknowledged download has its download.started record");
    // Replaying is idempotent: the server's start found nothing left to replay.
    let (ok, out) = verify_log(&p.config);
    assert!(ok && out.contains(&format!("intact: {records} records")), "{out}");
}

/// A subscription whose term ends while the binary runs, `kill -9` just after: whichever process
/// applied the expiry, it is applied once — one `order.expired` record, the link revoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_right_after_a_term_end_applies_the_expiry_once() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let cfg = admin_config(dir.path());
    let s = Server::start_with(dir, cfg).await;
    let tenant = "31111111-2222-4333-8444-555555555555";
    let body = json!({"tenant_id": tenant, "domain": "tailspin.com", "name": "Tailspin", "country": "US"});
    assert_eq!(s.api("POST", "/api/customers", "admin_agent", Some(body)).await.0, 201);
    let product = json!({"name": "Sub", "kind": "subscription", "term_days": 30, "unit_price_cents": 100,
        "currency": "USD", "cancel_policy": "standard"});
    assert_eq!(s.api("PUT", "/api/products/sub", "global_admin", Some(product)).await.0, 201);
    std::fs::write(s.files_dir().join("sub.zip"), b"payload").unwrap();
    let file = json!({"path": "sub.zip", "filename": "sub.zip"});
    assert_eq!(s.api("PUT", "/api/products/sub/files/zip", "global_admin", Some(file)).await.0, 201);
    // Bought 30 days ago less 5 seconds: the term ends 5 seconds from now.
    let term_end = chrono::Utc::now() + chrono::Duration::seconds(5);
    let purchased = (term_end - chrono::Duration::days(30)).to_rfc3339();
    let order = json!({"items": [{"product_id": "sub", "quantity": 1}], "purchased_at": purchased});
    let (st, o) = s.api("POST", &format!("/api/customers/{tenant}/orders"), "admin_agent", Some(order)).await;
    assert_eq!(st, 201, "{o}");
    let oid = o["order_id"].as_str().unwrap().to_owned();
    s.api("PATCH", &format!("/api/orders/{oid}"), "admin_agent", Some(json!({"auto_renew": false}))).await;
    let (_, dl) =
        s.api("POST", &format!("/api/orders/{oid}/downloads"), "admin_agent", Some(json!({"product_id": "sub"}))).await;
    let link_id = dl["links"][0]["link_id"].as_str().unwrap().to_owned();
    let root = s.stop().await;

    let mut config = std::fs::read_to_string(write_config(root.path(), free_port())).unwrap();
    config.push_str("[orders]\nlifecycle_tick_secs = 1\n");
    std::fs::write(root.path().join("keydrop.toml"), &config).unwrap();
    let mut p = spawn_with(root.path()).await;
    let wait = (term_end - chrono::Utc::now()).to_std().unwrap_or_default() + Duration::from_millis(1500);
    tokio::time::sleep(wait).await;
    p.child.kill().unwrap(); // SIGKILL, right after the term end
    p.child.wait().unwrap();
    let mut p = spawn_with(root.path()).await;
    tokio::time::sleep(Duration::from_millis(3000)).await; // three ticks
    sigterm_and_wait(&mut p);

    let state = keydrop::AppState::open(test_config(root.path())).await.unwrap();
    let expired: Vec<_> = state
        .store
        .records_after(0, 100_000)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.kind.name() == "order.expired" && r.order_id.as_deref() == Some(oid.as_str()))
        .collect();
    let st = keydrop::links::link_status(&state, &link_id, chrono::Utc::now()).await.unwrap().unwrap();
    state.store.close().await;
    assert_eq!(expired.len(), 1, "{expired:?}");
    assert_eq!(serde_json::to_value(&st).unwrap()["state"], "revoked");
}

/// Under load the journal passes its checkpoint size every couple of thousand downloads; the
/// checkpoint's durable commit then runs on a thread of its own while downloads go on, their
/// frames in the journal's second file. A `kill -9` amid that traffic loses no acknowledged
/// download and counts none twice: the next start replays both files.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_amid_downloads_while_checkpoints_commit_keeps_every_download_once() {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::Arc;
    let (size, clients, per_client) = (4096usize, 8usize, 25usize);
    let s = Server::start().await;
    let data = s.add_file("iso", "image.iso", size).await;
    s.open_order("ord").await;
    let mut links = Vec::new();
    for _ in 0..clients * per_client {
        links.push(s.issue("ord", "iso", 50).await);
    }
    let root = s.stop().await;
    let mut p = spawn(root.path()).await;
    let journal = root.path().join("data").join(keydrop::store::JOURNAL_FILE);
    let second = keydrop::store::journal::second_path(&journal);
    let completed = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let urls: Vec<String> = links.iter().skip(c).step_by(clients).map(|l| url_on(l, p.port)).collect();
            let (data, completed) = (data.clone(), completed.clone());
            tokio::spawn(async move {
                // Each link until it is used up, then the next, until the kill cuts the connection.
                for url in urls {
                    loop {
                        let got = tokio::time::timeout(Duration::from_secs(20), get(&url, &[])).await;
                        let Ok(Ok((st, _, body))) = got else { return };
                        if st == 410 {
                            break;
                        }
                        assert!(st == 200 && body == data, "status {st}, {} bytes", body.len());
                        completed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                panic!("every link was used up before the kill");
            })
        })
        .collect();
    // Killed once a checkpoint has switched the journal to its second file and more came after.
    within(120, "checkpoints under load", async {
        while completed.load(Ordering::Relaxed) < 4000
            || keydrop::store::journal::read_file(&second).map_or(true, |f| f.is_empty())
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    p.child.kill().unwrap(); // SIGKILL
    p.child.wait().unwrap();
    for t in tasks {
        within(30, "client", t).await.unwrap();
    }
    let acknowledged = completed.load(Ordering::Relaxed);

    // Every acknowledged download is counted, and at most the ones in flight besides; a
    // download's reservation and its `download.started` record are one batch, so they agree.
    // (The server's own start replays the journal here; `verify-log` below finds it intact.)
    let state = keydrop::AppState::open(test_config(root.path())).await.unwrap();
    let mut spent = 0u64;
    for l in &links {
        spent +=
            keydrop::links::link_status(&state, &l.link_id, chrono::Utc::now()).await.unwrap().unwrap().bytes_spent;
    }
    let started = downloads_started(&state).await;
    state.store.close().await;
    drop(state);
    assert_eq!(spent % size as u64, 0, "no download was cut short before the kill");
    let counted = spent / size as u64;
    let in_flight = clients as u64;
    assert!(
        (acknowledged..=acknowledged + in_flight).contains(&counted),
        "{counted} counted, {acknowledged} acknowledged"
    );
    assert_eq!(started, counted, "one download.started record per download counted");
    let (ok, out) = verify_log(&p.config);
    assert!(ok && out.contains("intact"), "chain after kill -9: {out}");
}
