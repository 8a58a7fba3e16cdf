//! Tests that need a real process: `kill -9` during downloads, SIGTERM with a download in
//! flight, and `keydrop verify-log` on intact and tampered logs.

mod common;

use common::*;
use http_body_util::BodyExt;
use keydrop::links::IssuedLink;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

struct Proc {
    child: Child,
    port: u16,
    config: PathBuf,
}

fn write_config(root: &Path, port: u16) -> PathBuf {
    let admin = free_port();
    let path = root.join("keydrop.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\npublic_listen = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin}\"\n\
             public_base_url = \"http://127.0.0.1:{port}\"\nshutdown_grace_secs = 20\n\
             [storage]\ndata_dir = \"data\"\nfiles_dir = \"files\"\n"
        ),
    )
    .unwrap();
    path
}

async fn spawn(root: &Path) -> Proc {
    write_config(root, free_port());
    spawn_with(root).await
}

fn url_on(link: &IssuedLink, port: u16) -> String {
    let token = link.url.split("/d/").nth(1).unwrap();
    format!("http://127.0.0.1:{port}/d/{token}")
}

/// Prepares a data dir in-process (file, open order, link), then stops so the binary can own it.
async fn prepare(size: usize, max_uses: u32) -> (tempfile::TempDir, Vec<u8>, IssuedLink) {
    let s = Server::start().await;
    let data = s.add_file("iso", "image.iso", size).await;
    s.open_order("ord").await;
    let link = s.issue("ord", "iso", max_uses).await;
    (s.stop().await, data, link)
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

async fn open_link_status(root: &Path, link: &IssuedLink) -> keydrop::links::LinkStatus {
    let cfg = test_config(root);
    let state = keydrop::AppState::open(cfg).await.unwrap();
    let st = keydrop::links::link_status(&state, &link.link_id, chrono::Utc::now()).await.unwrap().unwrap();
    state.store.close().await;
    st
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
    let started = state
        .store
        .records_after(0, 10_000)
        .await
        .unwrap()
        .iter()
        .filter(|r| r.kind == keydrop::activity::Kind::DownloadStarted)
        .count();
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
    assert_eq!(started as u64, n, "every acknowledged download has its download.started record");
    // Replaying is idempotent: the server's start found nothing left to replay.
    let (ok, out) = verify_log(&p.config);
    assert!(ok && out.contains(&format!("intact: {records} records")), "{out}");
}

/// Sends SIGTERM with the `kill` command and waits for a clean exit.
fn sigterm_and_wait(p: &mut Proc) {
    let st = Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status().unwrap();
    assert!(st.success());
    let status = p.child.wait().unwrap();
    assert!(status.success(), "graceful exit: {status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_lets_a_download_in_flight_complete_and_refuses_new_connections() {
    let size = 16 * 1024 * 1024;
    let (root, data, link) = prepare(size, 5).await;
    let mut p = spawn(root.path()).await;
    let url = url_on(&link, p.port);
    let resp = within(10, "get", client().request(request("GET", &url, &[]))).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let mut got = Vec::with_capacity(size);
    got.extend_from_slice(&within(10, "frame", body.frame()).await.unwrap().unwrap().into_data().unwrap());

    Command::new("kill").args(["-TERM", &p.child.id().to_string()]).status().unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", p.port)).await.is_err(), "new connections refused");

    while let Some(f) = within(30, "frame", body.frame()).await {
        got.extend_from_slice(&f.unwrap().into_data().unwrap());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(sha256_hex(&got), sha256_hex(&data), "the in-flight download completed intact");
    let status = within(30, "exit", async { tokio::task::spawn_blocking(move || p.child.wait()).await }).await;
    assert!(status.unwrap().unwrap().success());
    let st = open_link_status(root.path(), &link).await;
    assert_eq!(st.bytes_spent, size as u64);
}

#[tokio::test]
async fn verify_log_names_the_first_tampered_record() {
    let (root, _data, link) = prepare(1000, 5).await;
    let p = write_config(root.path(), free_port());
    let s = {
        let cfg = test_config(root.path());
        Server::start_with(root, cfg).await
    };
    for _ in 0..3 {
        get(&link.url.replace(&link.url[7..link.url.find("/d/").unwrap()], &s.public.to_string()), &[]).await.unwrap();
    }
    let n = s.records().await.len() as u64;
    assert!(n >= 7, "issued + 3 × (started, finished): {n}");
    let root = s.stop().await;
    let (ok, out) = verify_log(&p);
    assert!(ok && out.contains(&format!("{n} records")), "{out}");

    // Flip one byte inside record 4's JSON, straight in the record file.
    let log = root.path().join("data").join(keydrop::store::RECORDS_FILE);
    let mut raw = std::fs::read(&log).unwrap();
    let text = String::from_utf8(raw.clone()).unwrap();
    let line = text.lines().find(|l| l.contains("\"seq\":4,")).unwrap();
    let at = line.as_ptr() as usize - text.as_ptr() as usize + line.find("\"bytes\":").unwrap() + 8;
    raw[at] = if raw[at] == b'9' { b'8' } else { b'9' };
    std::fs::write(&log, &raw).unwrap();
    let (ok, out) = verify_log(&p);
    assert!(!ok, "tampering must be detected");
    assert!(out.contains("record 4"), "{out}");
}

/// Records the database vouches for are gone (a file cut short, a bad restore): `verify-log`
/// says so, and the server refuses to start rather than continue the chain over the hole.
#[tokio::test]
async fn a_record_file_cut_short_is_reported_and_the_server_refuses_to_start() {
    let (root, _data, link) = prepare(1000, 5).await;
    let port = free_port();
    let p = write_config(root.path(), port);
    let s = {
        let cfg = test_config(root.path());
        Server::start_with(root, cfg).await
    };
    for _ in 0..3 {
        get(&link.url.replace(&link.url[7..link.url.find("/d/").unwrap()], &s.public.to_string()), &[]).await.unwrap();
    }
    let root = s.stop().await;
    let (ok, out) = verify_log(&p);
    assert!(ok, "{out}");

    let log = root.path().join("data").join(keydrop::store::RECORDS_FILE);
    let text = std::fs::read(&log).unwrap();
    let end = text.iter().rposition(|b| *b == b'\n').unwrap() + 1;
    std::fs::OpenOptions::new().write(true).open(&log).unwrap().set_len(end as u64 - 100).unwrap();

    let (ok, out) = verify_log(&p);
    assert!(!ok, "a short record file must fail verification: {out}");
    assert!(out.contains("activity.log") && out.contains("ends before record"), "{out}");
    let out = Command::new(BIN).args(["serve", "--config"]).arg(&p).stdout(Stdio::null()).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "must not start: {stderr}");
    assert!(stderr.contains("activity.log"), "the refusal names the file: {stderr}");
    assert!(tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err(), "nothing listens on the public port");
}

/// The binary serving `config` at the `info` log level with its stderr piped, once it answers
/// `/healthz` on `port`.
async fn serve_logging(config: &Path, port: u16) -> std::process::Child {
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("KEYDROP_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    within(20, "ready", async {
        while !matches!(get(&format!("http://127.0.0.1:{port}/healthz"), &[]).await, Ok((200, _, _))) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    child
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_format_writes_one_json_object_per_line() {
    let (root, _data, link) = prepare(1000, 5).await;
    let port = free_port();
    let config = write_config(root.path(), port);
    let mut text = std::fs::read_to_string(&config).unwrap();
    text.push_str("[log]\nformat = \"json\"\n");
    std::fs::write(&config, text).unwrap();
    let child = serve_logging(&config, port).await;
    assert_eq!(get(&url_on(&link, port), &[]).await.unwrap().0, 200);
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 3, "{stderr}");
    for l in &lines {
        serde_json::from_str::<serde_json::Value>(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
    assert!(stderr.contains("\"route\":\"download\""), "{stderr}");
    // The download's one request line: route, status, bytes, duration and link id.
    let line = lines
        .iter()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["fields"]["message"] == "request" && v["span"]["route"] == "download")
        .unwrap_or_else(|| panic!("no request line for the download: {stderr}"));
    assert_eq!(line["fields"]["status"], 200, "{line}");
    assert_eq!(line["fields"]["bytes"], 1000, "{line}");
    assert!(line["fields"]["micros"].as_u64().is_some(), "{line}");
    assert_eq!(line["span"]["link_id"].as_str(), Some(link.link_id.as_str()), "{line}");
    let token = link.url.split("/d/").nth(1).unwrap().split('/').next().unwrap();
    assert!(!stderr.contains(token), "the link token never reaches the log");
}

/// Request lines are gathered per worker and written several at a time (`logbuf`): a download's
/// line still reaches stderr at once when the server goes idle, not at shutdown.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_server_writes_its_request_lines_without_waiting_for_more() {
    use std::io::BufRead;
    let (root, _data, link) = prepare(1000, 5).await;
    let port = free_port();
    let config = write_config(root.path(), port);
    let mut child = serve_logging(&config, port).await;
    let stderr = child.stderr.take().unwrap();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    assert_eq!(get(&url_on(&link, port), &[]).await.unwrap().0, 200);
    let line = within(5, "the download's request line while the server runs", async {
        loop {
            let line = rx.recv().await.expect("stderr open while the server runs");
            if line.contains("route=\"download\"") && line.contains("status=200") {
                return line;
            }
        }
    })
    .await;
    assert!(line.contains(&format!("link_id=\"{}\"", link.link_id)), "{line}");
    assert!(line.contains("bytes=1000"), "{line}");
    Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    tokio::task::spawn_blocking(move || child.wait().unwrap()).await.unwrap();
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

/// Starts the binary on the config already written in `root`.
async fn spawn_with(root: &Path) -> Proc {
    let config = root.join("keydrop.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    let port: u16 =
        text.split("public_listen = \"127.0.0.1:").nth(1).unwrap().split('"').next().unwrap().parse().unwrap();
    let child = spawn_serve(&config, "warn");
    within(20, "binary ready", async {
        loop {
            if let Ok((200, _, _)) = get(&format!("http://127.0.0.1:{port}/healthz"), &[]).await {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    Proc { child, port, config }
}
