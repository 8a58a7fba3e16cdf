//! Test harness: a real keydrop server in-process on 127.0.0.1:0, a real HTTP client (hyper),
//! readiness by polling, every await under a timeout, shutdown through a channel.
#![allow(dead_code)]

pub mod contract;
pub mod pg;

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use keydrop::catalog::FileSpec;
use keydrop::config::Config;
use keydrop::links::{issue_link, link_status, IssueRequest, IssuedLink, LinkStatus};
use keydrop::store::{Access, OrderGate};
use keydrop::{run, AppState, Listeners};
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

pub const TENANT: &str = "3f2a9c4e-8d1b-4e6a-9f0c-5b7d2e1a4c8f";
/// The product the harness attaches its files to.
pub const PRODUCT: &str = "prod-1";

/// The built `keydrop` binary, for tests that need a real process.
pub const BIN: &str = env!("CARGO_BIN_EXE_keydrop");

/// A loopback port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `keydrop serve --config <config>` with its output discarded and `KEYDROP_LOG=<log>`;
/// the caller polls for readiness its own way (plain HTTP or TLS).
pub fn spawn_serve(config: &Path, log: &str) -> std::process::Child {
    std::process::Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .env("KEYDROP_LOG", log)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

/// Runs `keydrop verify-log --config <config>`: whether it passed, and what it printed.
pub fn verify_log(config: &Path) -> (bool, String) {
    let out = std::process::Command::new(BIN).args(["verify-log", "--config"]).arg(config).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

/// Awaits `f` for at most `secs` seconds, panicking with `what` on timeout.
pub async fn within<T>(secs: u64, what: &str, f: impl Future<Output = T>) -> T {
    tokio::time::timeout(Duration::from_secs(secs), f).await.unwrap_or_else(|_| panic!("timed out: {what}"))
}

/// Deterministic pseudo-random bytes (xorshift), different per `seed`.
pub fn content(size: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(size + 8);
    while v.len() < size {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.extend_from_slice(&x.to_le_bytes());
    }
    v.truncate(size);
    v
}

pub fn sha256_hex(b: &[u8]) -> String {
    hex::encode(ring::digest::digest(&ring::digest::SHA256, b))
}

pub struct Server {
    pub dir: tempfile::TempDir,
    pub state: Arc<AppState>,
    pub public: SocketAddr,
    pub admin: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

/// The storage backend the behaviour suites run against: `KEYDROP_TEST_BACKEND` (`redb`, the
/// default, or `postgres`). The same tests, the same assertions, whichever backend is below.
pub fn backend_under_test() -> keydrop::config::Backend {
    match std::env::var("KEYDROP_TEST_BACKEND").as_deref() {
        Err(_) | Ok("") | Ok("redb") => keydrop::config::Backend::Redb,
        Ok("postgres") => keydrop::config::Backend::Postgres,
        Ok(other) => panic!("KEYDROP_TEST_BACKEND={other:?}: expected redb or postgres"),
    }
}

pub fn test_config(root: &Path) -> Config {
    let mut cfg = Config::default();
    cfg.storage.backend = backend_under_test();
    if cfg.storage.backend == keydrop::config::Backend::Postgres {
        // A database of its own in the process's one cluster, and a KEK file as every node has.
        cfg.storage.postgres_url = Some(pg::Pg::shared().fresh_database());
        cfg.storage.node_id = Some("test-node".into());
        let kek = root.join("kek.key");
        if !kek.exists() {
            std::fs::create_dir_all(root).unwrap();
            std::fs::write(&kek, keydrop::secrets::random_bytes::<32>()).unwrap();
        }
        cfg.storage.kek_file = Some(kek);
    }
    cfg.storage.data_dir = root.join("data");
    cfg.storage.files_dir = root.join("files");
    cfg.server.shutdown_grace_secs = 10;
    // The lifecycle clock ticks every second here, so tests see term changes without waiting.
    cfg.orders.lifecycle_tick_secs = 1;
    cfg
}

impl Server {
    pub async fn start() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let cfg = test_config(dir.path());
        Server::start_with(dir, cfg).await
    }

    pub async fn start_with(dir: tempfile::TempDir, cfg: Config) -> Server {
        Server::start_full(dir, cfg, None).await
    }

    /// A server whose store's disk can be made "full" through `disk`.
    pub async fn start_full(
        dir: tempfile::TempDir,
        mut cfg: Config,
        disk: Option<keydrop::store::DiskSwitch>,
    ) -> Server {
        let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (pa, aa) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
        cfg.server.public_base_url = format!("http://{pa}");
        let state = AppState::open_with(cfg, disk).await.unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(run(Listeners { public, admin }, state.clone(), async {
            let _ = rx.await;
        }));
        let s = Server { dir, state, public: pa, admin: aa, shutdown: Some(tx), task: Some(task) };
        within(10, "server ready", async {
            loop {
                if let Ok((st, _, _)) = get(&format!("http://{pa}/healthz"), &[]).await {
                    if st == 200 {
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await;
        s
    }

    pub fn files_dir(&self) -> PathBuf {
        self.state.config.storage.files_dir.clone()
    }

    /// Writes a file of `size` bytes under files_dir, attaches it, and waits for its digest.
    pub async fn add_file(&self, file_id: &str, filename: &str, size: usize) -> Vec<u8> {
        let data = content(size, file_id.len() as u64 * 31 + size as u64);
        std::fs::write(self.files_dir().join(file_id), &data).unwrap();
        self.state
            .catalog
            .attach(FileSpec {
                file_id: file_id.into(),
                product_id: PRODUCT.into(),
                path: file_id.into(),
                filename: filename.into(),
                ..Default::default()
            })
            .await
            .unwrap();
        within(30, "file digest", async {
            while self.state.catalog.record(PRODUCT, file_id).await.unwrap().unwrap().sha256.is_none() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await;
        data
    }

    pub async fn open_order(&self, order_id: &str) {
        self.state
            .ledger
            .set_access(order_id, OrderGate { access: Access::Open, tenant_id: Some(TENANT.into()) }, None)
            .await
            .unwrap();
    }

    pub async fn set_access(&self, order_id: &str, access: Access) {
        self.state
            .ledger
            .set_access(order_id, OrderGate { access, tenant_id: Some(TENANT.into()) }, None)
            .await
            .unwrap();
    }

    pub async fn issue(&self, order_id: &str, file_id: &str, max_uses: u32) -> IssuedLink {
        self.issue_at(order_id, file_id, max_uses, None, chrono::Utc::now()).await
    }

    pub async fn issue_at(
        &self,
        order_id: &str,
        file_id: &str,
        max_uses: u32,
        ttl_secs: Option<u64>,
        now: chrono::DateTime<chrono::Utc>,
    ) -> IssuedLink {
        issue_link(
            &self.state,
            IssueRequest {
                order_id: order_id.into(),
                tenant_id: Some(TENANT.into()),
                product_id: PRODUCT.into(),
                file_id: file_id.into(),
                ttl_secs,
                max_uses: Some(max_uses),
                now,
                actor: "test".into(),
                ip: None,
                user_agent: None,
            },
        )
        .await
        .unwrap()
    }

    pub async fn status(&self, link: &IssuedLink) -> LinkStatus {
        link_status(&self.state, &link.link_id, chrono::Utc::now()).await.unwrap().unwrap()
    }

    /// Waits until the link's spent bytes stop moving (refunds are asynchronous) and the writer
    /// has made everything durable.
    pub async fn settled(&self, link: &IssuedLink) -> LinkStatus {
        within(10, "settle", async {
            let mut last = u64::MAX;
            loop {
                self.state.store.flush().await.unwrap();
                let s = self.status(link).await;
                if s.bytes_spent == last {
                    return s;
                }
                last = s.bytes_spent;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
    }

    /// The `download.refused` records of a link with `code`, once their counts add up to
    /// `expected` (held refusals are recorded about a second after they happen).
    pub async fn refusal_records(&self, link_id: &str, code: &str, expected: u64) -> Vec<keydrop::activity::Record> {
        within(10, "refusal records", async {
            loop {
                let recs: Vec<_> = self
                    .records()
                    .await
                    .into_iter()
                    .filter(|r| r.kind == keydrop::activity::Kind::DownloadRefused)
                    .filter(|r| r.link_id.as_deref() == Some(link_id) && r.outcome.as_deref() == Some(code))
                    .collect();
                let total: u64 = recs.iter().map(|r| r.count.unwrap_or(1)).sum();
                assert!(total <= expected, "{total} refusals recorded, {expected} served");
                if total == expected {
                    return recs;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
        .await
    }

    pub async fn records(&self) -> Vec<keydrop::activity::Record> {
        self.state.store.flush().await.unwrap();
        self.state.store.records_after(0, 1_000_000).await.unwrap()
    }

    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            within(30, "server stop", t).await.unwrap().unwrap();
        }
        self.dir
    }

    /// Triggers shutdown without waiting.
    pub fn begin_shutdown(&mut self) -> tokio::task::JoinHandle<std::io::Result<()>> {
        let _ = self.shutdown.take().unwrap().send(());
        self.task.take().unwrap()
    }
}

pub type HttpClient = Client<HttpConnector, Empty<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).pool_max_idle_per_host(0).build_http()
}

pub fn request(method: &str, url: &str, headers: &[(&str, &str)]) -> http::Request<Empty<Bytes>> {
    let mut b = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(Empty::new()).unwrap()
}

/// One request on a fresh connection; the whole body is read.
pub async fn send(method: &str, url: &str, headers: &[(&str, &str)]) -> Result<(u16, http::HeaderMap, Bytes), String> {
    within(60, "request", async {
        let resp = client().request(request(method, url, headers)).await.map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let h = resp.headers().clone();
        let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
        Ok((status, h, body))
    })
    .await
}

pub async fn get(url: &str, headers: &[(&str, &str)]) -> Result<(u16, http::HeaderMap, Bytes), String> {
    send("GET", url, headers).await
}

/// A TCP connection to `addr` from the loopback address `src` (any of 127.0.0.0/8), so a test
/// can be several clients as far as per-IP limits go.
pub async fn connect_from(
    src: std::net::Ipv4Addr,
    addr: std::net::SocketAddr,
) -> std::io::Result<tokio::net::TcpStream> {
    let sock = tokio::net::TcpSocket::new_v4()?;
    sock.bind(std::net::SocketAddr::from((src, 0)))?;
    sock.connect(addr).await
}

/// Reads a response body 20 ms per frame (a slow client) on its own task: bytes read, when it
/// ended, and whether it ended with an error (cut) rather than cleanly.
pub fn read_slowly(
    resp: http::Response<hyper::body::Incoming>,
) -> tokio::task::JoinHandle<(usize, std::time::Instant, bool)> {
    let reading = resp;
    tokio::spawn(async move {
        let mut body = reading.into_body();
        let mut n = 0usize;
        loop {
            match body.frame().await {
                Some(Ok(f)) => {
                    n += f.into_data().map(|d| d.len()).unwrap_or(0);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Some(Err(_)) => return (n, std::time::Instant::now(), true),
                None => return (n, std::time::Instant::now(), false),
            }
        }
    })
}

pub fn problem(body: &[u8]) -> serde_json::Value {
    serde_json::from_slice(body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
}

pub const ROLES: [&str; 8] = [
    "admin_agent",
    "global_admin",
    "billing_admin",
    "sales_agent",
    "helpdesk_agent",
    "account_admin",
    "referral_admin",
    "marketing_content_admin",
];

/// The bearer token the admin test server gives each role.
pub fn token_for(role: &str) -> String {
    format!("test-token-{role}")
}

/// A config with one principal per role (named after the role).
pub fn admin_config(root: &Path) -> Config {
    let mut cfg = test_config(root);
    for role in ROLES {
        cfg.principals.push(keydrop::config::Principal {
            name: format!("{role}-user"),
            role: role.into(),
            token_sha256: sha256_hex(token_for(role).as_bytes()),
            tenant_id: None,
        });
    }
    cfg
}

impl Server {
    pub async fn start_admin() -> Server {
        let dir = tempfile::tempdir().unwrap();
        let cfg = admin_config(dir.path());
        Server::start_with(dir, cfg).await
    }

    /// An admin call as `role` (or with no token when `role` is empty); JSON in and out.
    pub async fn api(
        &self,
        method: &str,
        path: &str,
        role: &str,
        body: Option<serde_json::Value>,
    ) -> (u16, serde_json::Value) {
        let raw = body.map(|b| b.to_string().into_bytes());
        self.api_raw(method, path, role, raw).await
    }

    pub async fn api_raw(
        &self,
        method: &str,
        path: &str,
        role: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, serde_json::Value) {
        let token = if role.is_empty() { String::new() } else { token_for(role) };
        self.api_as(method, path, &token, body).await
    }

    /// An admin call with any bearer token (or none when empty): raw body in, JSON out.
    pub async fn api_as(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<Vec<u8>>,
    ) -> (u16, serde_json::Value) {
        let url = format!("http://{}{path}", self.admin);
        within(30, "admin call", async {
            let c: Client<HttpConnector, http_body_util::Full<Bytes>> =
                Client::builder(TokioExecutor::new()).build_http();
            let mut b = http::Request::builder().method(method).uri(&url).header("content-type", "application/json");
            if !token.is_empty() {
                b = b.header("authorization", format!("Bearer {token}"));
            }
            let req = b.body(http_body_util::Full::new(Bytes::from(body.unwrap_or_default()))).unwrap();
            let resp = c.request(req).await.unwrap();
            let status = resp.status().as_u16();
            let bytes = resp.into_body().collect().await.unwrap().to_bytes();
            let v = if bytes.is_empty() { serde_json::Value::Null } else { serde_json::from_slice(&bytes).unwrap() };
            contract::check(self.admin, method, path, status, &v).await;
            (status, v)
        })
        .await
    }
}
