//! `keydrop demo`: a fresh data dir with a generated sample file, a customer's order, a product
//! key and a download link, then serving — so a newcomer can `curl -OJ` a file seconds after
//! cloning. Also home of the helpers the CLI uses to mint admin tokens.

use crate::catalog::FileSpec;
use crate::config::{Config, Principal};
use crate::links::{issue_link, IssueRequest};
use crate::server::{run, Listeners};
use crate::state::AppState;
use crate::store::{Access, OrderGate};
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
    let (admin_token, admin_sha) = new_admin_token();
    for (name, role) in [("demo-admin", "admin_agent"), ("demo-global", "global_admin")] {
        cfg.principals.push(Principal { name: name.into(), role: role.into(), token_sha256: admin_sha.clone() });
    }
    let admin_url = format!("http://{}", admin.local_addr()?);

    let state = AppState::open(cfg)?;
    let tenant = "3f2a9c4e-8d1b-4e6a-9f0c-5b7d2e1a4c8f".to_owned();
    let order_id = "ord_demo_0001".to_owned();
    state
        .catalog
        .attach(FileSpec {
            file_id: "sample-iso".into(),
            product_id: Some("keydrop-sample".into()),
            path: filename.into(),
            filename: filename.into(),
            version: Some("1.0".into()),
            language: Some("en".into()),
            file_type: Some("iso".into()),
        })
        .await?;
    state
        .ledger
        .set_access(&order_id, OrderGate { access: Access::Open, tenant_id: Some(tenant.clone()) }, None)
        .await?;
    let link = issue_link(
        &state,
        IssueRequest {
            order_id: order_id.clone(),
            tenant_id: Some(tenant.clone()),
            product_id: Some("keydrop-sample".into()),
            file_id: "sample-iso".into(),
            ttl_secs: None,
            max_uses: None,
            now: chrono::Utc::now(),
            actor: "demo".into(),
        },
    )
    .await?;

    println!("keydrop demo — data in {}", root.display());
    println!();
    println!("  customer (tenant) : {tenant}");
    println!("  order             : {order_id}");
    println!("  product key       : {}", sample_product_key());
    println!("  download link     : {}", link.url);
    println!(
        "                      ({} bytes, {} downloads, expires {})",
        link.size,
        link.max_uses,
        link.expires_at.to_rfc3339()
    );
    println!("  admin token       : {admin_token}   (roles admin_agent and global_admin)");
    println!();
    println!("Try:");
    println!("  curl -OJ '{}'", link.url);
    println!("  curl -I '{}'", link.url);
    println!("  curl -r 0-1023 -o part.bin '{}'", link.url);
    println!("  curl -H 'Authorization: Bearer {admin_token}' {admin_url}/healthz");
    println!();
    println!("Serving on {} (public) and {admin_url} (admin). Ctrl-C stops.", state.config.server.public_base_url);
    run(Listeners { public, admin }, state, shutdown).await?;
    Ok(())
}
