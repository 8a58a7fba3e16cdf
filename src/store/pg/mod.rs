//! The PostgreSQL backend: several nodes sharing one database (API.md §5.3).
//!
//! Every node holds a connection pool (deadpool-postgres over tokio-postgres, which pipelines
//! queries issued concurrently; TLS through rustls when the URL asks for it with `sslmode=require`),
//! one writer task ([`group`]) that turns what waits into one transaction, and one gate feed
//! ([`gates`]) on a dedicated connection. Admission is the database's: a reservation holds when
//! its group's conditional update holds, on whichever node it arrived. The chain position is one
//! row ([`schema`]), taken last in every appending transaction. Admin commands ([`commands`])
//! are one transaction each.
//!
//! What a node keeps in memory is a cache it can lose: link records (immutable once issued) and
//! gates, the latter kept current by the feed; spent bytes are never decided from memory.

mod chain;
mod commands;
pub mod gates;
pub mod group;
mod group_tx;
pub mod import;
mod kv;
mod reads;
pub mod schema;
pub mod secrets;

use crate::activity::Entry;
use crate::clock::Clock;
use crate::model::LinkRecord;
use crate::store::stats::WriterStats;
use crate::store::{GateSink, StoreError};
pub use group::Admission;
use group::Job;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};

pub use crate::activity::format_at;

/// Maps a client error: a lost connection, a database shutting down or out of resources, a
/// serialization failure or deadlock is transient (503, retry); any other SQL error is a bug in
/// the statements or the schema (500).
pub fn classify(e: tokio_postgres::Error) -> StoreError {
    match e.code().map(|c| c.code()) {
        None => StoreError::DatabaseDown(e.to_string()),
        Some(c) if ["08", "40", "53", "57", "58"].iter().any(|class| c.starts_with(class)) => {
            StoreError::DatabaseDown(e.to_string())
        }
        Some(_) => StoreError::Bug(e.to_string()),
    }
}

/// Where and who: the database URL, this node's name in activity records, and how stale its
/// view of order states may get before it stops serving.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub url: String,
    pub node_id: String,
    pub pool_size: usize,
    pub max_gate_staleness: Duration,
}

impl PgOptions {
    pub fn new(url: &str, node_id: &str) -> PgOptions {
        PgOptions {
            url: url.to_owned(),
            node_id: node_id.to_owned(),
            pool_size: 16,
            max_gate_staleness: Duration::from_secs(1),
        }
    }
}

/// Plain TCP or rustls (ring provider, the system's roots), by the URL's `sslmode`.
#[derive(Clone)]
pub enum Tls {
    Plain,
    Rustls(tokio_postgres_rustls::MakeRustlsConnect),
}

impl Tls {
    fn for_config(pg: &tokio_postgres::Config) -> Tls {
        use tokio_postgres::config::SslMode;
        match pg.get_ssl_mode() {
            SslMode::Disable | SslMode::Prefer => Tls::Plain,
            _ => Tls::Rustls(tls_connector()),
        }
    }

    /// A connection of its own whose notifications wake `notify`; the handle ends with it.
    async fn connect(
        &self,
        pg: &tokio_postgres::Config,
        notify: Arc<tokio::sync::Notify>,
    ) -> Result<(tokio_postgres::Client, tokio::task::JoinHandle<()>), StoreError> {
        match self {
            Tls::Plain => {
                let (client, conn) = pg.connect(tokio_postgres::NoTls).await.map_err(classify)?;
                Ok((client, tokio::spawn(drive(conn, notify))))
            }
            Tls::Rustls(t) => {
                let (client, conn) = pg.connect(t.clone()).await.map_err(classify)?;
                Ok((client, tokio::spawn(drive(conn, notify))))
            }
        }
    }
}

/// Polls a connection, turning each notification into a wake-up.
async fn drive<S, T>(mut conn: tokio_postgres::Connection<S, T>, notify: Arc<tokio::sync::Notify>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    while let Some(m) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
        match m {
            Ok(tokio_postgres::AsyncMessage::Notification(_)) => notify.notify_one(),
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "notification connection failed");
                return;
            }
        }
    }
}

fn tls_connector() -> tokio_postgres_rustls::MakeRustlsConnect {
    let mut roots = rustls::RootCertStore::empty();
    if let Ok(pem) = std::fs::read("/etc/ssl/certs/ca-certificates.crt") {
        use rustls_pki_types::pem::PemObject;
        for cert in rustls_pki_types::CertificateDer::pem_slice_iter(&pem).flatten() {
            let _ = roots.add(cert);
        }
    }
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    tokio_postgres_rustls::MakeRustlsConnect::new(cfg)
}

fn parse_url(url: &str) -> Result<tokio_postgres::Config, StoreError> {
    let mut pg: tokio_postgres::Config =
        url.parse().map_err(|_| StoreError::Bug("postgres_url does not parse".into()))?;
    pg.connect_timeout(Duration::from_secs(2));
    pg.keepalives_idle(Duration::from_secs(5));
    Ok(pg)
}

fn pool(pg: tokio_postgres::Config, tls: &Tls, size: usize) -> Result<deadpool_postgres::Pool, StoreError> {
    let cfg = deadpool_postgres::ManagerConfig { recycling_method: deadpool_postgres::RecyclingMethod::Fast };
    let mgr = match tls {
        Tls::Plain => deadpool_postgres::Manager::from_config(pg, tokio_postgres::NoTls, cfg),
        Tls::Rustls(t) => deadpool_postgres::Manager::from_config(pg, t.clone(), cfg),
    };
    deadpool_postgres::Pool::builder(mgr)
        .max_size(size)
        .wait_timeout(Some(Duration::from_secs(2)))
        .create_timeout(Some(Duration::from_secs(2)))
        .recycle_timeout(Some(Duration::from_secs(2)))
        .runtime(deadpool_postgres::Runtime::Tokio1)
        .build()
        .map_err(|e| StoreError::Bug(e.to_string()))
}

pub struct PgStore {
    pool: deadpool_postgres::Pool,
    jobs: mpsc::UnboundedSender<Job>,
    stats: Arc<WriterStats>,
    node: String,
    clock: Clock,
    gates: Arc<gates::GateFeed>,
}

impl PgStore {
    /// Connects, applies the schema (under the advisory lock), and starts this node's writer
    /// and gate feed.
    pub async fn open(opts: &PgOptions, clock: Clock) -> Result<PgStore, StoreError> {
        let pg = parse_url(&opts.url)?;
        let tls = Tls::for_config(&pg);
        let pool = pool(pg.clone(), &tls, opts.pool_size)?;
        let gates = Arc::new(gates::GateFeed::new(opts.max_gate_staleness));
        {
            let mut client = pool.get().await.map_err(|e| StoreError::DatabaseDown(e.to_string()))?;
            schema::migrate(&mut client).await.map_err(classify)?;
            gates.start_at_current(&**client).await?;
        }
        tokio::spawn(gates::GateFeed::run(Arc::downgrade(&gates), pg, tls));
        tokio::spawn(gates::GateFeed::watch(Arc::downgrade(&gates)));
        let (jobs, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(WriterStats::default());
        let writer = group::Writer {
            pool: pool.clone(),
            node: opts.node_id.clone(),
            clock: clock.clone(),
            stats: stats.clone(),
        };
        tokio::spawn(writer.run(rx));
        Ok(PgStore { pool, jobs, stats, node: opts.node_id.clone(), clock, gates })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn send(&self, job: Job) -> Result<(), StoreError> {
        self.jobs.send(job).map_err(|_| StoreError::Closed)
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.pool.get().await.map_err(|e| StoreError::DatabaseDown(e.to_string()))
    }

    /// Nothing in memory can run ahead of the database here: always 0.
    pub fn epoch(&self) -> u64 {
        0
    }

    /// False while this node cannot confirm order states in time (the database away).
    pub fn is_open(&self) -> bool {
        self.gates.is_fresh()
    }

    /// May downloads be served now (order states confirmed within the allowed staleness)?
    pub fn gates_fresh(&self) -> bool {
        self.gates.is_fresh()
    }

    pub fn stats(&self) -> &WriterStats {
        &self.stats
    }

    pub fn on_gate_change(&self, sink: std::sync::Weak<dyn GateSink>) {
        self.gates.set_sink(sink);
    }

    /// Waits until everything this node sent before is committed.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Flush { reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Commits what is queued and stops taking more.
    pub async fn close(&self) {
        let _ = self.flush().await;
    }

    /// Reserves `bytes` of a link's budget with its `download.started` record; answers after
    /// the group's `COMMIT`.
    pub async fn reserve(&self, link: [u8; 16], bytes: u64, started: Entry) -> Result<Admission, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Reserve { link, bytes, started, reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Hands back unsent bytes and records `download.finished`; does not wait.
    pub fn settle(&self, link: [u8; 16], refund: u64, finished: Entry) -> Result<(), StoreError> {
        self.send(Job::Settle { link, refund, finished })
    }

    /// Stores a new link (nothing spent) with its `link.issued` record.
    pub async fn issue_link(&self, rec: LinkRecord, issued: Entry) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Issue { rec: Box::new(rec), issued, reply })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Appends records durably.
    pub async fn append(&self, records: Vec<Entry>) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.send(Job::Append { records, reply: Some(reply) })?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Queues records that may lag (refusals) without waiting.
    pub fn append_later(&self, records: Vec<Entry>) {
        if !records.is_empty() && self.send(Job::Append { records, reply: None }).is_err() {
            tracing::warn!("records after the writer stopped are lost");
        }
    }

    /// Health: does a round trip to the database complete now?
    pub async fn commit_check(&self) -> Result<(), StoreError> {
        self.client().await?.simple_query("SELECT 1").await.map_err(classify)?;
        Ok(())
    }
}
