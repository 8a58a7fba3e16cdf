//! The download path end to end: a real server on 127.0.0.1:0 and a real HTTP client.

mod common;

use common::*;
use http_body_util::BodyExt;
use keydrop::activity::Kind;
use keydrop::store::Access;
use std::time::{Duration, Instant};

const ISO_NAME: &str = "Windows Server 2022 (繁體中文).iso";

#[tokio::test]
async fn full_download_matches_digest_and_carries_every_contract_header() {
    let s = Server::start().await;
    let data = s.add_file("ws2022", ISO_NAME, 3 * 1024 * 1024 + 17).await;
    s.open_order("ord-1").await;
    let link = s.issue("ord-1", "ws2022", 50).await;
    assert!(link.url.starts_with(&format!("http://{}/d/", s.public)));
    assert!(link.url.ends_with("/Windows%20Server%202022%20%28%E7%B9%81%E9%AB%94%E4%B8%AD%E6%96%87%29.iso"));

    let (st, h, body) = get(&link.url, &[]).await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(body.len(), data.len());
    assert_eq!(sha256_hex(&body), sha256_hex(&data));
    assert_eq!(h["content-length"], data.len().to_string().as_str());
    assert_eq!(h["accept-ranges"], "bytes");
    assert_eq!(h["cache-control"], "private, no-store");
    assert_eq!(h["content-type"], "application/x-iso9660-image");
    let etag = h["etag"].to_str().unwrap();
    assert!(etag.starts_with('"') && etag.ends_with('"') && !etag.starts_with("W/"), "strong ETag: {etag}");
    assert!(httpdate::parse_http_date(h["last-modified"].to_str().unwrap()).is_ok());
    assert_eq!(
        h["content-disposition"],
        "attachment; filename=\"Windows Server 2022 (____).iso\"; \
         filename*=UTF-8''Windows%20Server%202022%20%28%E7%B9%81%E9%AB%94%E4%B8%AD%E6%96%87%29.iso"
    );
    let digest = ring::digest::digest(&ring::digest::SHA256, &data);
    use base64::Engine;
    let expected = format!("sha-256=:{}:", base64::engine::general_purpose::STANDARD.encode(digest));
    assert_eq!(h["repr-digest"], expected.as_str());

    // `/d/{token}` alone works the same.
    let bare = link.url.rsplit_once('/').unwrap().0;
    let (st, _, body2) = get(bare, &[]).await.unwrap();
    assert_eq!((st, body2.len()), (200, data.len()));

    // HEAD: same headers, no body, no cost.
    let before = s.settled(&link).await.bytes_spent;
    let (st, hh, hb) = send("HEAD", &link.url, &[]).await.unwrap();
    assert_eq!(st, 200);
    assert!(hb.is_empty());
    for name in [
        "content-length",
        "etag",
        "last-modified",
        "content-disposition",
        "repr-digest",
        "accept-ranges",
        "cache-control",
    ] {
        assert_eq!(hh[name], h[name], "{name}");
    }
    let after = s.settled(&link).await;
    assert_eq!(after.bytes_spent, before);
    assert!((after.downloads_used - 2.0).abs() < 1e-9, "{}", after.downloads_used);

    // The log: started+finished per GET, with bytes, IP, UA.
    let recs = s.records().await;
    let started: Vec<_> = recs.iter().filter(|r| r.kind == Kind::DownloadStarted).collect();
    let finished: Vec<_> = recs.iter().filter(|r| r.kind == Kind::DownloadFinished).collect();
    assert_eq!((started.len(), finished.len()), (2, 2));
    assert!(finished.iter().all(|r| r.bytes == Some(data.len() as u64) && r.outcome.as_deref() == Some("complete")));
    assert!(started
        .iter()
        .all(|r| r.ip.as_deref() == Some("127.0.0.1") && r.link_id.as_deref() == Some(link.link_id.as_str())));
    s.stop().await;
}

/// Reads of a file the page cache does not hold go to the blocking pool (the in-place read only
/// takes what is cached); the client gets the same bytes either way, cold or warm. With
/// `map_files` (the default) the bytes come from a read-only mapping, and a span whose pages are
/// not resident is faulted in on the blocking pool; with it off, from reads.
async fn evicted_file_downloads_byte_exact(map_files: bool) {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.storage.map_files = map_files;
    let s = Server::start_with(dir, cfg).await;
    let data = s.add_file("cold", "cold.iso", 5 * 1024 * 1024 + 3).await;
    s.open_order("ord-1").await;
    let link = s.issue("ord-1", "cold", 50).await;
    for round in 0..3 {
        let f = std::fs::File::open(s.files_dir().join("cold")).unwrap();
        f.sync_all().unwrap();
        if round < 2 {
            rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        }
        let (st, _, body) = get(&link.url, &[]).await.unwrap();
        assert_eq!(st, 200);
        assert_eq!(sha256_hex(&body), sha256_hex(&data), "round {round}");
        let (st, _, part) = get(&link.url, &[("range", "bytes=4000000-4099999")]).await.unwrap();
        assert_eq!((st, &part[..]), (206, &data[4_000_000..4_100_000]), "round {round}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_evicted_from_the_page_cache_downloads_byte_exact_from_its_mapping() {
    evicted_file_downloads_byte_exact(true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_evicted_from_the_page_cache_downloads_byte_exact_by_reads_with_map_files_off() {
    evicted_file_downloads_byte_exact(false).await;
}

#[tokio::test]
async fn ranges_if_range_and_conditional_requests_rfc9110() {
    let s = Server::start().await;
    let data = s.add_file("f", "f.bin", 100_000).await;
    s.open_order("o").await;
    let link = s.issue("o", "f", 50).await;

    let (st, h, b) = get(&link.url, &[("range", "bytes=10-19")]).await.unwrap();
    assert_eq!(st, 206);
    assert_eq!(h["content-range"], "bytes 10-19/100000");
    assert_eq!(&b[..], &data[10..20]);
    let etag = h["etag"].to_str().unwrap().to_owned();

    let (st, _, b) = get(&link.url, &[("range", "bytes=-5")]).await.unwrap();
    assert_eq!((st, &b[..]), (206, &data[99_995..]));

    // If-Range matching → 206; stale → 200 whole file.
    let (st, _, _) = get(&link.url, &[("range", "bytes=0-0"), ("if-range", &etag)]).await.unwrap();
    assert_eq!(st, 206);
    let (st, _, b) = get(&link.url, &[("range", "bytes=0-0"), ("if-range", "\"stale\"")]).await.unwrap();
    assert_eq!((st, b.len()), (200, data.len()));

    // Several ranges → 200 and the whole file.
    let (st, _, b) = get(&link.url, &[("range", "bytes=0-1,5-6")]).await.unwrap();
    assert_eq!((st, b.len()), (200, data.len()));

    // Unsatisfiable → 416 with Content-Range: bytes */size, costs nothing.
    let spent = s.settled(&link).await.bytes_spent;
    let (st, h, b) = get(&link.url, &[("range", "bytes=100000-")]).await.unwrap();
    assert_eq!(st, 416);
    assert_eq!(h["content-range"], "bytes */100000");
    assert_eq!(problem(&b)["code"], "range_not_satisfiable");
    // If-None-Match → 304, costs nothing.
    let (st, _, b) = get(&link.url, &[("if-none-match", &etag)]).await.unwrap();
    assert_eq!((st, b.len()), (304, 0));
    assert_eq!(s.settled(&link).await.bytes_spent, spent);
    s.stop().await;
}

/// Fetches `[start, end)` of a link and returns the bytes.
async fn fetch_range(url: &str, start: u64, end: u64) -> bytes::Bytes {
    let (st, _, b) = get(url, &[("range", &format!("bytes={start}-{}", end - 1))]).await.unwrap();
    assert_eq!(st, 206);
    b
}

/// Three downloads fetched as 4 parallel ranges each, plus one cut off halfway and resumed with
/// `Range`, cost 4.0 uses (±0.01): each costs what it received. The bytes that sat in socket
/// buffers when the client cut off were sent and stay charged (never more than the budget), so
/// the link has a fifth use: the resume must fit, and the next full GET must not.
#[tokio::test]
async fn parallel_ranges_and_a_resumed_download_cost_four_uses() {
    let s = Server::start().await;
    let size: u64 = 64 * 1024 * 1024;
    let data = s.add_file("big", "big.iso", size as usize).await;
    s.open_order("o").await;
    let link = s.issue("o", "big", 5).await;

    // Three downloads, each fetched as 4 parallel ranges, like a download manager.
    for _ in 0..3 {
        let q = size / 4;
        let parts = futures_join(link.url.clone(), q, size).await;
        let whole: Vec<u8> = parts.concat();
        assert_eq!(sha256_hex(&whole), sha256_hex(&data));
    }

    // One cut off halfway: a client with a 64 KiB receive window reads half the body, then
    // drops the connection.
    let mut got = cut_off_get(&link.url, size / 2).await;
    let after_cut = s.settled(&link).await;
    let slop = after_cut.bytes_spent - (3 * size + got.len() as u64);
    println!("cut-off download: client read {} bytes, server charged {slop} more (socket buffers)", got.len());
    assert!(slop <= size / 100, "a cut-off download is charged about what it received: {slop} extra");
    assert!(after_cut.bytes_spent >= 3 * size + got.len() as u64, "never less than what the client got");

    // Resume from where the client really is.
    let rest = fetch_range(&link.url, got.len() as u64, size).await;
    got.extend_from_slice(&rest);
    assert_eq!(sha256_hex(&got), sha256_hex(&data));

    let st = s.settled(&link).await;
    assert!((st.downloads_used - 4.0).abs() <= 0.01, "downloads_used = {}", st.downloads_used);

    // Less than one copy's worth is left: a full GET is refused and sends nothing.
    let (code, _, b) = get(&link.url, &[]).await.unwrap();
    assert_eq!(code, 410);
    assert_eq!(problem(&b)["code"], "exhausted");
    assert_eq!(s.settled(&link).await.bytes_spent, st.bytes_spent);
    s.stop().await;
}

/// `http://host:port/path` → (`host:port`, `/path`), for requests written by hand.
fn host_and_path(url: &str) -> (&str, &str) {
    let rest = url.strip_prefix("http://").unwrap();
    rest.split_at(rest.find('/').unwrap())
}

/// A raw HTTP/1.1 GET over a socket with a small receive buffer; returns the first `want` body
/// bytes (or a little more) and closes the connection.
async fn cut_off_get(url: &str, want: u64) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (host, path) = host_and_path(url);
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(64 * 1024).unwrap();
    let mut stream = within(10, "connect", sock.connect(host.parse().unwrap())).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: cut-off-test\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut head = Vec::new();
    let mut body = Vec::new();
    while (body.len() as u64) < want {
        let n = within(30, "read", stream.read(&mut buf)).await.unwrap();
        assert!(n > 0, "connection closed early");
        if head.ends_with(b"\r\n\r\n") {
            body.extend_from_slice(&buf[..n]);
        } else {
            head.extend_from_slice(&buf[..n]);
            if let Some(i) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                body.extend_from_slice(&head[i + 4..]);
                head.truncate(i + 4);
                assert!(head.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
            }
        }
    }
    drop(stream);
    body
}

async fn futures_join(url: String, q: u64, size: u64) -> Vec<bytes::Bytes> {
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let url = url.clone();
            let end = if i == 3 { size } else { (i + 1) * q };
            tokio::spawn(async move { fetch_range(&url, i * q, end).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(within(60, "range part", t).await.unwrap());
    }
    out
}

#[tokio::test]
async fn two_hundred_racing_gets_on_a_five_use_link_serve_exactly_five() {
    let s = Server::start().await;
    let data = s.add_file("mib", "one.bin", 1024 * 1024).await;
    s.open_order("o").await;
    let link = s.issue("o", "mib", 5).await;
    let commits_before = s.state.store.stats().commits.load(std::sync::atomic::Ordering::Relaxed);
    let barrier = std::sync::Arc::new(tokio::sync::Barrier::new(200));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let (url, barrier) = (link.url.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                get(&url, &[]).await.unwrap()
            })
        })
        .collect();
    let (mut ok, mut exhausted) = (0, 0);
    for t in tasks {
        let (st, _, b) = within(120, "racer", t).await.unwrap();
        match st {
            200 => {
                assert_eq!(b.len(), data.len());
                ok += 1;
            }
            410 => {
                assert_eq!(problem(&b)["code"], "exhausted");
                exhausted += 1;
            }
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!((ok, exhausted), (5, 195));
    // Group commit: 5 reservations, 5 refunds/finished records and 195 refusal records share commits.
    let commits = s.state.store.stats().commits.load(std::sync::atomic::Ordering::Relaxed) - commits_before;
    assert!(commits < 205, "{commits} commits for 205 writes: no batching");
    println!("racing GETs: {commits} commits for 205 logged writes");
    let st = s.settled(&link).await;
    assert_eq!(st.bytes_spent, 5 * data.len() as u64);
    assert_eq!(st.state, "exhausted");
    // Every refusal is counted; they share a few coalesced records (API.md §5.2).
    let refused = s.refusal_records(&link.link_id, "exhausted", 195).await;
    assert!(refused.len() <= 5, "{} records for 195 refusals in about a second", refused.len());
    s.stop().await;
}

#[tokio::test]
async fn zero_byte_file_costs_one_use_per_get() {
    let s = Server::start().await;
    s.add_file("empty", "empty.txt", 0).await;
    s.open_order("o").await;
    let link = s.issue("o", "empty", 2).await;
    for _ in 0..2 {
        let (st, h, b) = get(&link.url, &[]).await.unwrap();
        assert_eq!((st, b.len()), (200, 0));
        assert_eq!(h["content-length"], "0");
    }
    let (st, _, _) = get(&link.url, &[]).await.unwrap();
    assert_eq!(st, 410);
    assert!((s.settled(&link).await.downloads_used - 2.0).abs() < 1e-9);
    s.stop().await;
}

#[tokio::test]
async fn h2c_prior_knowledge_download_works() {
    let s = Server::start().await;
    let data = s.add_file("f", "f.bin", 700_000).await;
    s.open_order("o").await;
    let link = s.issue("o", "f", 5).await;
    let c: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).http2_only(true).build_http();
    let resp = within(30, "h2 get", c.request(request("GET", &link.url, &[]))).await.unwrap();
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.status(), 200);
    let body = within(30, "h2 body", resp.into_body().collect()).await.unwrap().to_bytes();
    assert_eq!(sha256_hex(&body), sha256_hex(&data));
    s.stop().await;
}

#[tokio::test]
async fn revocation_cuts_off_a_download_in_flight_within_one_second() {
    let s = Server::start().await;
    let size = 64 * 1024 * 1024;
    s.add_file("big", "big.iso", size).await;
    s.open_order("o").await;
    let link = s.issue("o", "big", 5).await;
    // A client that reads a little and then stops reading (stalled), and one that keeps reading slowly.
    let stalled = within(30, "get", client().request(request("GET", &link.url, &[]))).await.unwrap();
    let mut stalled_body = stalled.into_body();
    within(30, "first frame", stalled_body.frame()).await.unwrap().unwrap();
    let reading = within(30, "get", client().request(request("GET", &link.url, &[]))).await.unwrap();
    let reader = read_slowly(reading);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let revoked_at = Instant::now();
    s.set_access("o", Access::Revoked).await;
    let (n, ended, errored) = within(5, "cut off", reader).await.unwrap();
    assert!(n < size, "the reading download must not complete");
    assert!(errored, "the body must end with an error, not a clean end");
    assert!(ended.duration_since(revoked_at) < Duration::from_secs(1), "cut after {:?}", ended - revoked_at);
    // The stalled one: its connection is closed by the server, so draining the body errors quickly.
    let drained = within(5, "stalled cut", async {
        loop {
            match stalled_body.frame().await {
                Some(Ok(_)) => continue,
                Some(Err(_)) => return true,
                None => return false,
            }
        }
    })
    .await;
    assert!(drained, "stalled download must be cut, not completed");
    assert!(revoked_at.elapsed() < Duration::from_secs(5));
    // Next request: 410 revoked. Finished records say revoked or aborted.
    let (st, _, b) = get(&link.url, &[]).await.unwrap();
    assert_eq!((st, problem(&b)["code"].as_str().unwrap()), (410, "revoked"));
    let st = s.settled(&link).await;
    assert!(st.bytes_spent < 2 * size as u64, "unsent bytes were refunded: {}", st.bytes_spent);
    assert_eq!(st.state, "revoked");
    s.stop().await;
}

#[tokio::test]
async fn graceful_shutdown_lets_a_download_in_flight_finish_and_refuses_new_connections() {
    let mut s = Server::start().await;
    let size = 16 * 1024 * 1024;
    let data = s.add_file("f", "f.iso", size).await;
    s.open_order("o").await;
    let link = s.issue("o", "f", 5).await;
    let resp = within(30, "get", client().request(request("GET", &link.url, &[]))).await.unwrap();
    let mut body = resp.into_body();
    let mut got = Vec::new();
    got.extend_from_slice(&within(30, "frame", body.frame()).await.unwrap().unwrap().into_data().unwrap());
    let stopping = s.begin_shutdown();
    tokio::time::sleep(Duration::from_millis(100)).await;
    // New connections are refused once the listener is closed.
    let refused = tokio::net::TcpStream::connect(s.public).await;
    assert!(refused.is_err(), "listener must be closed during shutdown");
    while let Some(f) = within(30, "frame", body.frame()).await {
        got.extend_from_slice(&f.unwrap().into_data().unwrap());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(sha256_hex(&got), sha256_hex(&data));
    within(30, "stopped", stopping).await.unwrap().unwrap();
}

#[tokio::test]
async fn connections_over_the_cap_get_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = test_config(dir.path());
    cfg.server.max_connections = 3;
    let s = Server::start_with(dir, cfg).await;
    // Hold the three slots with idle keep-alive connections.
    let mut held = Vec::new();
    for _ in 0..3 {
        held.push(within(5, "connect", tokio::net::TcpStream::connect(s.public)).await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (st, h, b) = get(&format!("http://{}/healthz", s.public), &[]).await.unwrap();
    assert_eq!(st, 503);
    assert_eq!(h["retry-after"], "1");
    assert_eq!(problem(&b)["code"], "unavailable");
    drop(held);
    within(5, "slot freed", async {
        loop {
            if get(&format!("http://{}/healthz", s.public), &[]).await.unwrap().0 == 200 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    s.stop().await;
}

#[tokio::test]
async fn readyz_answers_200_while_serving_and_503_while_draining() {
    let s = Server::start().await;
    for addr in [s.public, s.admin] {
        let (st, _, b) = get(&format!("http://{addr}/readyz"), &[]).await.unwrap();
        assert_eq!((st, &b[..]), (200, &b"{\"status\":\"ready\"}"[..]));
    }
    s.state.begin_draining();
    let (st, h, b) = get(&format!("http://{}/readyz", s.admin), &[]).await.unwrap();
    assert_eq!((st, problem(&b)["code"].as_str().unwrap()), (503, "unavailable"));
    assert!(h.contains_key("retry-after"));
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slowloris_connections_do_not_stop_a_normal_download() {
    use tokio::io::AsyncWriteExt;
    let s = Server::start().await;
    let data = s.add_file("f", "f.bin", 2 * 1024 * 1024).await;
    s.open_order("o").await;
    let link = s.issue("o", "f", 5).await;
    // 500 connections that send a request head one byte at a time and never finish it, from
    // 100 addresses (so the per-IP cap does not turn them away: this is about timeouts and
    // resources), while the normal client comes from 127.0.0.1.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut trickles = Vec::new();
    for i in 0..500u32 {
        let (addr, stop) = (s.public, stop.clone());
        trickles.push(tokio::spawn(async move {
            let src = std::net::Ipv4Addr::new(127, 0, 1, (i % 100 + 1) as u8);
            let Ok(mut c) = connect_from(src, addr).await else { return };
            for b in b"GET /d/slow HTTP/1.1\r\nHost: x\r\nX-Slow: ".iter().cycle() {
                if stop.load(std::sync::atomic::Ordering::Relaxed) || c.write_all(&[*b]).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let t0 = Instant::now();
    let (st, _, b) = get(&link.url, &[]).await.unwrap();
    assert_eq!(st, 200);
    assert_eq!(sha256_hex(&b), sha256_hex(&data));
    assert!(t0.elapsed() < Duration::from_secs(5), "download took {:?} under slowloris", t0.elapsed());
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for t in trickles {
        let _ = within(10, "trickle stops", t).await;
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_an_order_resets_its_http2_stream_and_another_orders_download_on_the_connection_completes() {
    let s = Server::start().await;
    s.add_file("a", "a.iso", 32 * 1024 * 1024).await;
    let b_data = s.add_file("b", "b.iso", 8 * 1024 * 1024).await;
    s.open_order("order-a").await;
    s.open_order("order-b").await;
    let link_a = s.issue("order-a", "a", 5).await;
    let link_b = s.issue("order-b", "b", 5).await;

    // One h2c connection carrying both downloads.
    let tcp = tokio::net::TcpStream::connect(s.public).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(hyper_util::rt::TokioExecutor::new(), hyper_util::rt::TokioIo::new(tcp))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let get_on = |url: &str| {
        let mut sender = sender.clone();
        let req = request("GET", url, &[]);
        async move { within(30, "h2 get", sender.send_request(req)).await.unwrap() }
    };
    // A: reads one frame, then stops reading (the server can no longer send: flow control).
    let a = get_on(&link_a.url).await;
    assert_eq!((a.version(), a.status().as_u16()), (http::Version::HTTP_2, 200));
    let mut a_body = a.into_body();
    within(30, "a's first frame", a_body.frame()).await.unwrap().unwrap();
    // B: read slowly for its first MiB, then at full speed.
    let b = get_on(&link_b.url).await;
    let reader = tokio::spawn(async move {
        let mut body = b.into_body();
        let mut got = Vec::new();
        while let Some(f) = body.frame().await {
            got.extend_from_slice(&f.map_err(|e| format!("b was cut: {e}"))?.into_data().unwrap_or_default());
            if got.len() < 1 << 20 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        Ok::<_, String>(got)
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let revoked_at = Instant::now();
    s.set_access("order-a", Access::Revoked).await;

    // A's download ends on the server within a second, as revoked, and its stream is reset.
    within(5, "a's download.finished", async {
        loop {
            let recs = s.records().await;
            let done =
                recs.iter().find(|r| r.kind == Kind::DownloadFinished && r.link_id == Some(link_a.link_id.clone()));
            if let Some(r) = done {
                assert_eq!(r.outcome.as_deref(), Some("revoked"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(revoked_at.elapsed() < Duration::from_secs(1), "a was cut after {:?}", revoked_at.elapsed());
    let a_end = within(5, "a's stream", async {
        loop {
            match a_body.frame().await {
                Some(Ok(_)) => continue,
                Some(Err(e)) => return Some(e.to_string()),
                None => return None,
            }
        }
    })
    .await;
    assert!(a_end.is_some(), "a's body must end with a reset, not complete");

    // B, on the same connection, completes byte for byte.
    let got = within(60, "b completes", reader).await.unwrap().unwrap();
    assert!(got == b_data, "b received {} of {} bytes", got.len(), b_data.len());
    assert!(!conn.is_finished(), "the connection stays open");
    let (st, _, _) = get(&link_a.url, &[]).await.unwrap();
    assert_eq!(st, 410);
    s.stop().await;
}

#[tokio::test]
async fn a_download_records_its_user_agent_cut_to_512_characters() {
    let s = Server::start().await;
    s.add_file("f", "f.bin", 1000).await;
    s.open_order("o").await;
    let link = s.issue("o", "f", 5).await;
    // 170 three-byte characters (510 bytes) are kept whole; 600 characters (1,200 bytes) keep
    // their first 512 characters, never cut inside one.
    let short = "한".repeat(170);
    let long = "é".repeat(600);
    for ua in [&short, &long] {
        let (st, _, body) = get(&link.url, &[("user-agent", ua)]).await.unwrap();
        assert_eq!((st, body.len()), (200, 1000));
    }
    let records = s.records().await;
    let started: Vec<_> =
        records.iter().filter(|r| r.kind == Kind::DownloadStarted).filter_map(|r| r.user_agent.clone()).collect();
    assert_eq!(started, vec![short.clone(), "é".repeat(512)]);
    s.stop().await;
}

/// RFC 9112 §9.6: a client may shut down its sending side once its request is sent (some
/// scripts and proxies do); the server still answers in full, and the download costs one use.
#[tokio::test]
async fn a_client_that_half_closes_after_its_request_gets_the_whole_file() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let s = Server::start().await;
    let bytes = s.add_file("half", "half.bin", 300_000).await;
    s.open_order("o").await;
    let link = s.issue("o", "half", 2).await;
    let (host, path) = host_and_path(&link.url);
    let mut stream = within(10, "connect", tokio::net::TcpStream::connect(host)).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    stream.shutdown().await.unwrap();
    let mut got = Vec::new();
    within(30, "read to the end", stream.read_to_end(&mut got)).await.unwrap();
    let split = got.windows(4).position(|w| w == b"\r\n\r\n").expect("a response head") + 4;
    let head = String::from_utf8_lossy(&got[..split]).into_owned();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(got[split..] == bytes[..], "body of {} bytes, want the file's {}", got.len() - split, bytes.len());
    assert!((s.settled(&link).await.downloads_used - 1.0).abs() < 1e-9);
    s.stop().await;
}
