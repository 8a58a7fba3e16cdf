//! `keydrop push revoke`: a tiny sender an order system can call (or copy) to push a
//! revocation: it signs `{"order_id", "reason"}` with the push secret, POSTs it to
//! `/api/revocations`, and retries with exponential backoff (0.5 s doubling to 30 s) on
//! connection errors and 5xx until a 2xx (done) or a 4xx (final: fix the request) or the attempt
//! limit. Each attempt is signed afresh, so a long retry never goes stale. Plain HTTP only.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use std::time::Duration;

/// The outcome of a push: the final status and body.
#[derive(Debug)]
pub struct Sent {
    pub status: u16,
    pub body: String,
    pub attempts: u32,
}

/// Splits `http://host:port[/path]` into the address and the path (default `/api/revocations`).
pub fn parse_url(url: &str) -> Result<(String, String), String> {
    let rest = url.strip_prefix("http://").ok_or("the URL must start with http://")?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if host.is_empty() {
        return Err("the URL has no host".into());
    }
    let host = if host.contains(':') { host.to_owned() } else { format!("{host}:80") };
    let path = if path.is_empty() || path == "/" { "/api/revocations".to_owned() } else { path.to_owned() };
    Ok((host, path))
}

async fn attempt(host: &str, path: &str, body: &[u8], secret: &str) -> Result<(u16, String), String> {
    let tcp = tokio::time::timeout(Duration::from_secs(10), tokio::net::TcpStream::connect(host))
        .await
        .map_err(|_| "connect timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tcp)).await.map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let signature = crate::push::sign(secret, chrono::Utc::now().timestamp(), body);
    let req = http::Request::post(path)
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, concat!("keydrop-push/", env!("CARGO_PKG_VERSION")))
        .header("keydrop-signature", signature)
        .body(Full::new(Bytes::copy_from_slice(body)))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), sender.send_request(req))
        .await
        .map_err(|_| "request timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let bytes = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&bytes).into_owned()))
}

/// Pushes a revocation, retrying as described in the module docs.
pub async fn revoke(url: &str, secret: &str, order_id: &str, reason: &str, max_attempts: u32) -> Result<Sent, String> {
    let (host, path) = parse_url(url)?;
    let body = serde_json::json!({ "order_id": order_id, "reason": reason }).to_string().into_bytes();
    let mut delay = Duration::from_millis(500);
    let mut last_err = String::new();
    for n in 1..=max_attempts.max(1) {
        match attempt(&host, &path, &body, secret).await {
            Ok((status, body)) if status < 500 => return Ok(Sent { status, body, attempts: n }),
            Ok((status, body)) => last_err = format!("HTTP {status}: {body}"),
            Err(e) => last_err = e,
        }
        if n < max_attempts {
            eprintln!("keydrop push: attempt {n} failed ({last_err}); retrying in {delay:?}");
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(30));
        }
    }
    Err(format!("gave up after {max_attempts} attempts: {last_err}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_default_to_the_revocations_path() {
        assert_eq!(parse_url("http://127.0.0.1:8081").unwrap(), ("127.0.0.1:8081".into(), "/api/revocations".into()));
        assert_eq!(parse_url("http://h/x/y").unwrap(), ("h:80".into(), "/x/y".into()));
        assert!(parse_url("https://h").is_err());
        assert!(parse_url("http:///x").is_err());
    }
}
