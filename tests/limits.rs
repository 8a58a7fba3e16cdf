//! Limits and timeouts from `[server]`, and what `/metrics` reports: the per-IP connection cap,
//! the idle timeout (keep-alive and stalled downloads), header count and size, the admin body cap.

mod common;

use common::*;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends one raw request and reads one response (head and `Content-Length` body) from `c`.
async fn exchange(c: &mut TcpStream, req: &str) -> (u16, String) {
    c.write_all(req.as_bytes()).await.unwrap();
    within(10, "response", async {
        let mut buf = Vec::new();
        let mut chunk = [0u8; 8192];
        loop {
            let n = c.read(&mut chunk).await.unwrap();
            assert!(n > 0, "connection closed before a whole response: {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
            let text = String::from_utf8_lossy(&buf).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().parse().unwrap())
                    })
                    .unwrap_or(0usize);
                if buf.len() >= end + 4 + len {
                    let status = text[9..12].parse().unwrap();
                    return (status, text);
                }
            }
        }
    })
    .await
}

/// True once the server has closed `c` (a read returns end of stream or a reset).
async fn closed_within(c: &mut TcpStream, secs: u64) -> bool {
    let mut b = [0u8; 65536];
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, c.read(&mut b)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
        }
    }
}

const HEALTH: &str = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test]
async fn connections_over_the_per_ip_cap_get_503_and_other_addresses_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.server.max_connections_per_ip = 2;
    let s = Server::start_with(dir, cfg).await;
    let me = Ipv4Addr::new(127, 0, 0, 9);
    let mut a = connect_from(me, s.public).await.unwrap();
    let mut b = connect_from(me, s.public).await.unwrap();
    assert_eq!(exchange(&mut a, HEALTH).await.0, 200);
    assert_eq!(exchange(&mut b, HEALTH).await.0, 200);

    let mut third = connect_from(me, s.public).await.unwrap();
    let (st, text) = exchange(&mut third, HEALTH).await;
    assert_eq!(st, 503, "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after: 1"), "{text}");
    assert!(text.contains("\"code\":\"unavailable\""), "{text}");

    // Another address is not affected.
    let mut other = connect_from(Ipv4Addr::new(127, 0, 0, 10), s.public).await.unwrap();
    assert_eq!(exchange(&mut other, HEALTH).await.0, 200);

    // Closing one frees its slot.
    drop(a);
    within(5, "slot freed", async {
        loop {
            let mut c = connect_from(me, s.public).await.unwrap();
            if exchange(&mut c, HEALTH).await.0 == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    s.stop().await;
}

#[tokio::test]
async fn each_listener_counts_its_own_connections_per_address() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.server.max_connections_per_ip = 2;
    let s = Server::start_with(dir, cfg).await;
    let me = Ipv4Addr::new(127, 0, 0, 11);
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = connect_from(me, s.public).await.unwrap();
        assert_eq!(exchange(&mut c, HEALTH).await.0, 200);
        held.push(c);
    }
    let mut over = connect_from(me, s.public).await.unwrap();
    assert_eq!(exchange(&mut over, HEALTH).await.0, 503, "the public cap is reached");
    // Downloads filling the public cap do not lock the address out of the admin API.
    for _ in 0..2 {
        let mut c = connect_from(me, s.admin).await.unwrap();
        assert_eq!(exchange(&mut c, HEALTH).await.0, 200);
        held.push(c);
    }
    let mut over = connect_from(me, s.admin).await.unwrap();
    assert_eq!(exchange(&mut over, HEALTH).await.0, 503, "the admin listener has its own cap");
    s.stop().await;
}

/// Sends a request head announcing a body, then the body one byte every `gap`; returns when
/// the server answered (status and elapsed time) or gave up on the connection.
async fn drip(addr: std::net::SocketAddr, head: &str, body: &[u8], gap: Duration) -> (Option<u16>, Duration) {
    let mut c = TcpStream::connect(addr).await.unwrap();
    let t0 = Instant::now();
    c.write_all(head.as_bytes()).await.unwrap();
    let (mut r, mut w) = c.into_split();
    let body = body.to_vec();
    let writer = tokio::spawn(async move {
        for b in body {
            if w.write_all(&[b]).await.is_err() {
                return;
            }
            tokio::time::sleep(gap).await;
        }
    });
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let status = within(30, "drip answer", async {
        loop {
            match r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&got).get(9..12).and_then(|s| s.parse().ok())
    })
    .await;
    writer.abort();
    (status, t0.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_drips_in_is_408_and_closed_within_the_body_timeout_and_a_normal_one_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = admin_config(dir.path());
    cfg.server.body_read_timeout_secs = 2;
    cfg.revocation.push_secret = Some("s".into());
    let s = Server::start_with(dir, cfg).await;
    let body = br#"{"tenant_id":"33333333-3333-4444-8555-666666666666","domain":"d.com","name":"N","country":"US"}"#;
    let auth = format!("Authorization: Bearer {}\r\n", token_for("admin_agent"));
    let fixed = format!("POST /api/customers HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: {}\r\n\r\n", body.len());
    let (st, took) = drip(s.admin, &fixed, body, Duration::from_millis(500)).await;
    assert_eq!(st, Some(408), "fixed-length body");
    assert!(took < Duration::from_secs(4), "closed after {took:?}");

    // Chunked, on the unauthenticated push endpoint: one chunk of one byte at a time.
    let chunked: Vec<u8> = std::iter::repeat_n(b"1\r\nx\r\n".to_vec(), 40).flatten().collect();
    let push = "POST /api/revocations HTTP/1.1\r\nHost: x\r\nKeydrop-Signature: t=1,v1=00\r\nTransfer-Encoding: chunked\r\n\r\n";
    let (st, took) = drip(s.admin, push, &chunked, Duration::from_millis(100)).await;
    assert_eq!(st, Some(408), "chunked body");
    assert!(took < Duration::from_secs(4), "closed after {took:?}");

    // A body sent at once is served as before.
    let mut c = TcpStream::connect(s.admin).await.unwrap();
    let req = format!("{fixed}{}", String::from_utf8_lossy(body));
    assert_eq!(exchange(&mut c, &req).await.0, 201);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keep_alive_connections_and_stalled_downloads_are_closed() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.server.idle_timeout_secs = 1;
    let s = Server::start_with(dir, cfg).await;
    let size = 32 * 1024 * 1024;
    s.add_file("big", "big.iso", size).await;
    s.open_order("o").await;
    let link = s.issue("o", "big", 3).await;

    // A keep-alive connection that sends nothing after its first request.
    let mut idle = TcpStream::connect(s.public).await.unwrap();
    assert_eq!(exchange(&mut idle, HEALTH).await.0, 200);
    let t0 = Instant::now();
    assert!(closed_within(&mut idle, 5).await, "an idle connection stayed open");
    assert!(t0.elapsed() >= Duration::from_millis(900), "closed too early: {:?}", t0.elapsed());

    // A download whose client stops reading after the head: closed, and the unsent bytes refunded.
    let path = link.url.splitn(4, '/').nth(3).unwrap().to_owned();
    let mut stalled = TcpStream::connect(s.public).await.unwrap();
    stalled.write_all(format!("GET /{path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await.unwrap();
    let mut head = [0u8; 1024];
    let n = within(5, "head", stalled.read(&mut head)).await.unwrap();
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"));
    // Stop reading; the server's writes stall once the socket buffers fill.
    let status = within(10, "stalled download cut and settled", async {
        loop {
            let st = s.settled(&link).await;
            if st.downloads_used < 0.9 {
                break st;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(status.downloads_used < 0.9, "charged {} of a download the client never read", status.downloads_used);
    s.stop().await;
}

#[tokio::test]
async fn too_many_or_too_large_headers_get_431_and_big_admin_bodies_400() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = admin_config(dir.path());
    cfg.server.max_headers = 20;
    cfg.server.max_header_bytes = 16 * 1024;
    cfg.server.admin_max_body_bytes = 1024;
    let s = Server::start_with(dir, cfg).await;

    let many: String = (0..30).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut c = TcpStream::connect(s.public).await.unwrap();
    let (st, _) = exchange(&mut c, &format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many}\r\n")).await;
    assert_eq!(st, 431);
    let few: String = (0..10).map(|i| format!("X-H{i}: v\r\n")).collect();
    let mut c = TcpStream::connect(s.public).await.unwrap();
    assert_eq!(exchange(&mut c, &format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{few}\r\n")).await.0, 200);

    let big = "a".repeat(20 * 1024);
    let mut c = TcpStream::connect(s.public).await.unwrap();
    let (st, _) = exchange(&mut c, &format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {big}\r\n\r\n")).await;
    assert_eq!(st, 431);

    let name = "n".repeat(2000);
    let (st, v) = s.api("POST", "/api/customers", "admin_agent", Some(serde_json::json!({ "name": name }))).await;
    assert_eq!((st, v["code"].as_str()), (400, Some("invalid_request")), "{v}");
    assert_eq!(v["errors"][0]["field"], "body", "{v}");
    assert!(v["errors"][0]["message"].as_str().unwrap().contains("1024"), "{v}");
    s.stop().await;
}

/// The value of an unlabelled sample, or of the sample with exactly these labels.
fn sample(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name_and_labels).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no sample {name_and_labels} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn metrics_count_requests_bytes_reservations_refusals_and_commits() {
    let s = Server::start().await;
    let data = s.add_file("f", "f.bin", 100_000).await;
    s.open_order("o").await;
    let link = s.issue("o", "f", 1).await;
    assert_eq!(get(&link.url, &[]).await.unwrap().0, 200);
    assert_eq!(get(&link.url, &[("range", "bytes=0-99")]).await.unwrap().0, 410);
    s.settled(&link).await;

    let (st, h, body) = get(&format!("http://{}/metrics", s.admin), &[]).await.unwrap();
    assert_eq!(st, 200);
    assert!(h["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    let text = String::from_utf8(body.to_vec()).unwrap();
    assert_eq!(sample(&text, "keydrop_requests_total{route=\"download\",status=\"200\"}"), 1.0);
    assert_eq!(sample(&text, "keydrop_requests_total{route=\"download\",status=\"410\"}"), 1.0);
    assert_eq!(sample(&text, "keydrop_refusals_total{code=\"exhausted\"}"), 1.0);
    assert_eq!(sample(&text, "keydrop_reservations_total"), 1.0);
    assert_eq!(sample(&text, "keydrop_reserved_bytes_total"), data.len() as f64);
    assert_eq!(sample(&text, "keydrop_refunded_bytes_total"), 0.0);
    assert_eq!(sample(&text, "keydrop_downloads_in_flight"), 0.0);
    assert!(sample(&text, "keydrop_sent_bytes_total") >= data.len() as f64);
    assert!(sample(&text, "keydrop_commit_duration_seconds_count") >= 3.0, "issue + reserve + settle");
    assert!(sample(&text, "keydrop_commit_batch_size_sum") >= 3.0);
    assert_eq!(sample(&text, "keydrop_open_connections{listener=\"admin\"}"), 1.0, "this scrape's own connection");

    // Not on the public listener.
    assert_eq!(get(&format!("http://{}/metrics", s.public), &[]).await.unwrap().0, 404);
    s.stop().await;
}
