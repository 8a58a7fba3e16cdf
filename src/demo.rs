//! `keydrop demo`: a fresh data dir with a generated sample file, a customer's order, a product
//! key and a download link, then serving — so a newcomer can `curl -OJ` a file seconds after
//! cloning. Also home of the helpers the CLI uses to mint admin tokens.

use crate::config::{Config, Principal};
use crate::server::{run, Listeners};
use crate::state::AppState;
use base64::Engine;
use std::io::Write;
use std::path::Path;
use tokio::net::TcpListener;

/// A new random admin bearer token and the SHA-256 hex that goes in the config.
pub fn new_admin_token() -> (String, String) {
    let raw: [u8; 32] = crate::secrets::random_bytes();
    let token = format!("kd_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw));
    let sha = hex::encode(ring::digest::digest(&ring::digest::SHA256, token.as_bytes()));
    (token, sha)
}

/// The `[[principals]]` stanza for a token hash.
pub fn principal_stanza(name: &str, role: &str, sha: &str) -> String {
    format!("[[principals]]\nname = {name:?}\nrole = {role:?}\ntoken_sha256 = \"{sha}\"\n")
}

/// A product key in the usual five-by-five form.
fn sample_product_key() -> String {
    const ALPHABET: &[u8] = b"BCDFGHJKMPQRTVWXY2346789";
    let raw: [u8; 25] = crate::secrets::random_bytes();
    let chars: Vec<char> = raw.iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect();
    chars.chunks(5).map(|c| c.iter().collect::<String>()).collect::<Vec<_>>().join("-")
}

/// Writes `size` bytes of deterministic pseudo-random data (xorshift), so the sample has a real
/// digest and does not compress to nothing.
fn write_sample(path: &Path, size: usize) -> std::io::Result<()> {
    let mut f = std::io::BufWriter::new(std::fs::File::create(path)?);
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut left = size;
    while left > 0 {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let b = x.to_le_bytes();
        let n = left.min(8);
        f.write_all(&b[..n])?;
        left -= n;
    }
    f.flush()
}

async fn bind_or_any(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(_) => TcpListener::bind((addr.ip(), 0)).await,
    }
}

/// Sends one admin call through the real router and handler (authentication included).
async fn admin_call(
    state: &std::sync::Arc<AppState>,
    method: &'static str,
    path: &str,
    token: &str,
    body: serde_json::Value,
) -> Result<serde_json::Value, Box<dyn std::error::Error>> {
    use crate::router::{route, Endpoint, Listener};
    let method: http::Method = method.parse()?;
    let Endpoint::Admin(call) = route(Listener::Admin, &method, path) else {
        return Err(format!("no route {path}").into());
    };
    let mut headers = http::HeaderMap::new();
    headers.insert(http::header::AUTHORIZATION, format!("Bearer {token}").parse()?);
    let body = http_body_util::Full::new(bytes::Bytes::from(body.to_string()));
    let peer = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let resp = match crate::admin::handle(state, call, &method, &headers, None, body, peer).await {
        Ok(r) => r,
        Err(e) => return Err(format!("{method} {path}: {}", e.problem_json()).into()),
    };
    let crate::body::Body::Bytes(Some(b)) = resp.into_body() else { return Ok(serde_json::Value::Null) };
    Ok(serde_json::from_slice(&b)?)
}

/// Runs the demo in `root` (wiped first) until `shutdown` resolves.
pub async fn run_demo(
    root: &Path,
    sample_bytes: u64,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), Box<dyn std::error::Error>> {
    if root.exists() {
        std::fs::remove_dir_all(root)?;
    }
    let files = root.join("files");
    std::fs::create_dir_all(&files)?;
    let filename = "keydrop-sample-1.0.iso";
    write_sample(&files.join(filename), sample_bytes as usize)?;

    let mut cfg = Config::default();
    cfg.storage.data_dir = root.join("data");
    cfg.storage.files_dir = files;
    let public = bind_or_any(cfg.server.public_listen).await?;
    let admin = bind_or_any(cfg.server.admin_listen).await?;
    cfg.server.public_base_url = format!("http://{}", public.local_addr()?);
    // One bootstrap token per role the demo needs (a token belongs to exactly one principal).
    let (admin_token, admin_sha) = new_admin_token();
    let (global_token, global_sha) = new_admin_token();
    cfg.principals.push(Principal {
        name: "demo-admin".into(),
        role: "admin_agent".into(),
        token_sha256: admin_sha,
        tenant_id: None,
    });
    cfg.principals.push(Principal {
        name: "demo-global".into(),
        role: "global_admin".into(),
        token_sha256: global_sha,
        tenant_id: None,
    });
    let admin_url = format!("http://{}", admin.local_addr()?);

    let state = AppState::open(cfg).await?;
    let tenant = "3f2a9c4e-8d1b-4e6a-9f0c-5b7d2e1a4c8f";
    let product_key = sample_product_key();
    let call = |method: &'static str, path: String, body: serde_json::Value| {
        // Catalog calls need global_admin; the partner's calls admin_agent.
        let token = if path.starts_with("/api/products") { global_token.clone() } else { admin_token.clone() };
        let state = state.clone();
        async move { admin_call(&state, method, &path, &token, body).await }
    };
    call(
        "PUT",
        "/api/products/keydrop-sample".into(),
        serde_json::json!({"name": "keydrop Sample 1.0", "kind": "perpetual", "unit_price_cents": 4900,
            "currency": "USD", "cancel_policy": "standard", "key_required": true}),
    )
    .await?;
    call(
        "PUT",
        "/api/products/keydrop-sample/files/sample-iso".into(),
        serde_json::json!({"version": "1.0", "language": "en", "file_type": "iso", "path": filename, "filename": filename}),
    )
    .await?;
    call("POST", "/api/products/keydrop-sample/keys".into(), serde_json::json!({"keys": [product_key]})).await?;
    call(
        "POST",
        "/api/customers".into(),
        serde_json::json!({"tenant_id": tenant, "domain": "contoso.example", "name": "Contoso Ltd", "country": "US"}),
    )
    .await?;
    let order = call(
        "POST",
        format!("/api/customers/{tenant}/orders"),
        serde_json::json!({"items": [{"product_id": "keydrop-sample", "quantity": 1}]}),
    )
    .await?;
    let order_id = order["order_id"].as_str().unwrap_or_default().to_owned();
    let dl =
        call("POST", format!("/api/orders/{order_id}/downloads"), serde_json::json!({"product_id": "keydrop-sample"}))
            .await?;
    let link = &dl["links"][0];
    let url = link["url"].as_str().unwrap_or_default().to_owned();

    println!("keydrop demo — data in {}", root.display());
    println!();
    println!("  customer (tenant) : {tenant} (contoso.example, US)");
    println!("  order             : {order_id}");
    println!("  product key       : {}", dl["key"].as_str().unwrap_or_default());
    println!("  download link     : {url}");
    println!(
        "                      ({} bytes, {} downloads, expires {})",
        link["size"], link["max_uses"], link["expires_at"]
    );
    println!("  admin token       : {admin_token}   (principal demo-admin, role admin_agent)");
    println!("  catalog token     : {global_token}   (principal demo-global, role global_admin)");
    println!("  dashboard         : {admin_url}/   (sign in with the admin token)");
    println!();
    println!("Try:");
    println!("  curl -OJ '{url}'");
    println!("  curl -I '{url}'");
    println!("  curl -r 0-1023 -o part.bin '{url}'");
    let auth = format!("-H 'Authorization: Bearer {admin_token}'");
    println!("  curl {auth} {admin_url}/api/orders/{order_id}");
    println!("  curl {auth} {admin_url}/api/orders/{order_id}/keys");
    println!(
        "  curl {auth} -X POST -d '{{\"product_id\":\"keydrop-sample\"}}' {admin_url}/api/orders/{order_id}/downloads"
    );
    println!("  curl {auth} {admin_url}/api/links/{}", link["link_id"].as_str().unwrap_or_default());
    println!("  curl {auth} -X POST -d '{{\"acknowledged\":true}}' {admin_url}/api/orders/{order_id}/cancel");
    println!();
    println!("Serving on {} (public) and {admin_url} (admin). Ctrl-C stops.", state.config.server.public_base_url);
    run(Listeners { public, admin }, state, shutdown).await?;
    Ok(())
}
