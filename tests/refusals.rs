//! Refusals (API.md §3 table) and bad input: exact statuses and codes, never a 5xx or a panic.

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use keydrop::activity::Kind;
use keydrop::store::Access;
use keydrop::token::KeyRing;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn refused(url: &str, status: u16, code: &str) -> serde_json::Value {
    let (st, h, b) = get(url, &[]).await.unwrap();
    assert_eq!(st, status, "{url}: {}", String::from_utf8_lossy(&b));
    assert_eq!(h["content-type"], "application/problem+json");
    let p = problem(&b);
    assert_eq!(p["status"], status);
    assert_eq!(p["code"], code);
    assert!(p["title"].is_string() && p["detail"].is_string());
    p
}

fn token_of(url: &str) -> &str {
    url.split("/d/").nth(1).unwrap().split('/').next().unwrap()
}

#[tokio::test]
async fn refusal_table_expired_revoked_suspended_invalid() {
    let s = Server::start().await;
    s.add_file("f", "f.bin", 1000).await;
    for o in ["o-exp", "o-rev", "o-sus"] {
        s.open_order(o).await;
    }
    let base = format!("http://{}", s.public);

    // Expired: issued two days ago with a one-day lifetime.
    let past = chrono::Utc::now() - chrono::Duration::days(2);
    let exp = s.issue_at("o-exp", "f", 5, Some(86_400), past).await;
    let p = refused(&exp.url, 410, "expired").await;
    assert_eq!(p["expired_at"], exp.expires_at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    assert!(p["detail"].as_str().unwrap().contains("ask your partner to issue a new link"));

    // Revoked and suspended orders.
    let rev = s.issue("o-rev", "f", 5).await;
    let sus = s.issue("o-sus", "f", 5).await;
    assert_eq!(get(&rev.url, &[]).await.unwrap().0, 200);
    s.set_access("o-rev", Access::Revoked).await;
    s.set_access("o-sus", Access::Suspended).await;
    refused(&rev.url, 410, "revoked").await;
    refused(&sus.url, 403, "suspended").await;
    // Suspension is reversible.
    s.set_access("o-sus", Access::Open).await;
    assert_eq!(get(&sus.url, &[]).await.unwrap().0, 200);
    // HEAD on a refused link is refused the same way and costs nothing.
    assert_eq!(send("HEAD", &rev.url, &[]).await.unwrap().0, 410);

    // A revoked order cannot get new links either.
    let err = keydrop::links::issue_link(
        &s.state,
        keydrop::links::IssueRequest {
            order_id: "o-rev".into(),
            tenant_id: None,
            product_id: "prod-1".into(),
            file_id: "f".into(),
            ttl_secs: None,
            max_uses: None,
            now: chrono::Utc::now(),
            actor: "t".into(),
            ip: None,
            user_agent: None,
        },
    )
    .await
    .unwrap_err();
    assert!(matches!(err, keydrop::links::IssueError::Revoked));

    // Invalid: bad signature, flipped bit, unknown key id, garbage, 10 KB token, unknown link.
    let good = s.issue("o-exp", "f", 5).await;
    let t = token_of(&good.url);
    let mut raw = URL_SAFE_NO_PAD.decode(t).unwrap();
    let last = raw.len() - 1;
    raw[last] ^= 0x01;
    refused(&format!("{base}/d/{}", URL_SAFE_NO_PAD.encode(&raw)), 404, "invalid").await;
    let mut raw = URL_SAFE_NO_PAD.decode(t).unwrap();
    raw[10] ^= 0x80;
    refused(&format!("{base}/d/{}/f.bin", URL_SAFE_NO_PAD.encode(&raw)), 404, "invalid").await;
    let foreign = KeyRing::new([(7, vec![1u8; 32])]).sign(&[9u8; 16], i64::MAX);
    refused(&format!("{base}/d/{foreign}"), 404, "invalid").await;
    let own_key_unknown_link = s.state.keys.sign(&[9u8; 16], i64::MAX);
    refused(&format!("{base}/d/{own_key_unknown_link}"), 404, "invalid").await;
    refused(&format!("{base}/d/not-a-token"), 404, "invalid").await;
    refused(&format!("{base}/d/{}", "A".repeat(10_000)), 404, "invalid").await;
    refused(&format!("{base}/nothing-here"), 404, "not_found").await;

    // Refusals of correctly signed links are logged, with the code as outcome.
    let recs = s.records().await;
    let outcomes: Vec<_> =
        recs.iter().filter(|r| r.kind == Kind::DownloadRefused).filter_map(|r| r.outcome.clone()).collect();
    for code in ["expired", "revoked", "suspended"] {
        assert!(outcomes.iter().any(|o| o == code), "{code} refusal logged: {outcomes:?}");
    }
    s.stop().await;
}

#[tokio::test]
async fn browsers_get_localized_html_refusal_pages() {
    let s = Server::start().await;
    s.add_file("f", "f.bin", 10).await;
    s.open_order("o").await;
    let link = s.issue("o", "f", 5).await;
    s.set_access("o", Access::Revoked).await;
    let accept = "text/html,application/xhtml+xml,*/*;q=0.8";
    for (lang, needle) in
        [("ko-KR,ko;q=0.9", "링크 취소됨"), ("zh-TW", "連結已撤銷"), ("zh-CN", "链接已撤销"), ("en-US", "Link revoked")]
    {
        let (st, h, b) = get(&link.url, &[("accept", accept), ("accept-language", lang)]).await.unwrap();
        assert_eq!(st, 410);
        assert_eq!(h["content-type"], "text/html; charset=utf-8");
        assert!(String::from_utf8_lossy(&b).contains(needle), "{lang}");
    }
    s.stop().await;
}

#[tokio::test]
async fn rotated_signing_key_keeps_old_links_working() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = test_config(dir.path());
    let s = Server::start_with(dir, cfg.clone()).await;
    s.add_file("f", "f.bin", 100).await;
    s.open_order("o").await;
    let old = s.issue("o", "f", 5).await;
    let dir = s.stop().await;
    assert_eq!(keydrop::secrets::rotate_link_key(&cfg.storage.data_dir).unwrap(), 2);
    let s = Server::start_with(dir, cfg.clone()).await;
    assert_eq!(s.state.keys.signing_key_id(), 2);
    let new = s.issue("o", "f", 5).await;
    // Same link, this server's (new, random) port.
    let old_url = format!("http://{}/d/{}", s.public, token_of(&old.url));
    assert_eq!(get(&old_url, &[]).await.unwrap().0, 200, "link signed by the retired signing key still works");
    assert_eq!(get(&new.url, &[]).await.unwrap().0, 200);
    // Removing key 1 retires it for good.
    let dir = s.stop().await;
    std::fs::remove_file(cfg.storage.data_dir.join("link-keys/1.key")).unwrap();
    let s = Server::start_with(dir, cfg).await;
    refused(&format!("http://{}/d/{}", s.public, token_of(&old.url)), 404, "invalid").await;
    assert_eq!(get(&format!("http://{}/d/{}", s.public, token_of(&new.url)), &[]).await.unwrap().0, 200);
    s.stop().await;
}

/// Sends raw bytes and returns the status line's code (0 if the server just closed).
async fn raw(addr: std::net::SocketAddr, request: &[u8]) -> (u16, String) {
    within(10, "raw request", async {
        let mut c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let _ = c.write_all(request).await;
        let mut out = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            match tokio::time::timeout(Duration::from_secs(3), c.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
                Ok(Ok(n)) => {
                    out.extend_from_slice(&buf[..n]);
                    if out.windows(4).any(|w| w == b"\r\n\r\n") {
                        break;
                    }
                }
            }
        }
        let text = String::from_utf8_lossy(&out).into_owned();
        let code = text.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        (code, text)
    })
    .await
}

#[tokio::test]
async fn bad_input_gets_4xx_never_5xx() {
    let s = Server::start().await;
    let data = s.add_file("f", "f.bin", 5000).await;
    s.open_order("o").await;
    let link = s.issue("o", "f", 50).await;
    let path = link.url.split(&s.public.to_string()).nth(1).unwrap().to_owned();

    // Malformed and absurd Range headers.
    for (range, want) in [
        ("bytes=abc", 416),
        ("bytes=5-2", 416),
        ("bytes=--", 416),
        ("bytes=99999999999999999999999999-", 416),
        ("bytes=-0", 416),
        ("bytes=0-99999999999999999999999999", 206),
        ("bytes=,,,,0-1", 206),
        ("items=0-1", 200),
        ("bytes=0-0,1-1,2-2,3-3,4-4,5-5,6-6,7-7,8-8,9-9", 200),
    ] {
        let (st, h, b) = get(&link.url, &[("range", range)]).await.unwrap();
        assert_eq!(st, want, "{range}");
        if st == 416 {
            assert_eq!(h["content-range"], "bytes */5000");
        }
        if st == 200 {
            assert_eq!(b.len(), data.len());
        }
    }
    let huge_range = format!("bytes={}", "0-1,".repeat(8000));
    let (st, _, _) = get(&link.url, &[("range", &huge_range)]).await.unwrap();
    assert!((200..500).contains(&st) && st != 500, "huge range: {st}");

    // Unknown methods.
    for m in ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"] {
        let (st, h, b) = send(m, &link.url, &[]).await.unwrap();
        assert_eq!(st, 405, "{m}");
        assert_eq!(h["allow"], "GET, HEAD");
        assert_eq!(problem(&b)["code"], "method_not_allowed");
    }
    let (st, _) = raw(s.public, format!("BREW {path} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes()).await;
    assert_eq!(st, 405);

    // Non-UTF-8 and malformed request lines, huge headers: hyper answers 4xx itself.
    let (st, _) = raw(s.public, b"GET /d/\xff\xfe\x80 HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert!((400..500).contains(&st), "non-UTF-8 path: {st}");
    let (st, _) = raw(s.public, b"GET /d/%ff%fe HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(st, 404);
    let (st, _) = raw(s.public, b"\x16\x03\x01garbage\r\n\r\n").await;
    assert!(st == 0 || (400..500).contains(&st), "garbage: {st}");
    let big = format!("GET {path} HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(200_000));
    let (st, _) = raw(s.public, big.as_bytes()).await;
    assert!(st == 431 || st == 400 || st == 0, "huge header: {st}");
    let many: String = (0..200).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (st, _) = raw(s.public, format!("GET {path} HTTP/1.1\r\nHost: x\r\n{many}\r\n").as_bytes()).await;
    assert!(st == 431 || st == 400 || st == 0, "many headers: {st}");

    // The server is still fine.
    let (st, _, b) = get(&link.url, &[]).await.unwrap();
    assert_eq!((st, b.len()), (200, data.len()));
    s.stop().await;
}
