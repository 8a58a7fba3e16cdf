//! The server's shared state, built once at start-up from the config: the store and its writer,
//! the ledger of hot links, the file catalog and the link-signing key ring.

use crate::catalog::Catalog;
use crate::config::{Backend, Config};
use crate::ledger::Ledger;
use crate::secrets;
use crate::store::{Store, StoreError};
use crate::token::KeyRing;
use chrono::{DateTime, Utc};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot prepare data_dir {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    #[error("kek_file {path}: {why}")]
    Kek { path: String, why: String },
    #[error("{0}")]
    KeyRing(#[from] crate::store::pg::secrets::KeyRingError),
}

pub struct AppState {
    pub config: Config,
    pub store: Arc<Store>,
    pub ledger: Arc<Ledger>,
    pub catalog: Arc<Catalog>,
    pub keys: KeyRing,
    /// Secrets accepted on revocation pushes (several during a rotation).
    pub push_secrets: Vec<String>,
    /// Seals and opens activation keys at rest.
    pub sealer: crate::keys::Sealer,
    pub metrics: crate::metrics::Metrics,
    /// Refusal records held for their second (see [`crate::refusals`]).
    pub refusals: crate::refusals::Coalescer,
    /// TLS for the listeners, when `[server.tls]` is set; reloaded on SIGHUP.
    pub tls: Option<crate::tls::Tls>,
    /// Dashboard sessions on this node (see [`crate::ui::session`]).
    pub sessions: crate::ui::session::Sessions,
    draining: AtomicBool,
    /// Seconds added to the wall clock (tests move time forward; always 0 in production).
    clock: crate::clock::Clock,
}

impl AppState {
    /// Opens the store in `data_dir` (creating it and its secrets on first start).
    pub async fn open(config: Config) -> Result<Arc<AppState>, StartError> {
        AppState::open_with(config, None).await
    }

    /// Like [`AppState::open`]; `disk` lets a test make the store's disk "full".
    pub async fn open_with(
        config: Config,
        disk: Option<crate::store::DiskSwitch>,
    ) -> Result<Arc<AppState>, StartError> {
        let data_dir = config.storage.data_dir.clone();
        let dd_err = |source| StartError::DataDir { path: data_dir.display().to_string(), source };
        std::fs::create_dir_all(&data_dir).map_err(dd_err)?;
        std::fs::create_dir_all(&config.storage.files_dir).map_err(dd_err)?;
        let push_secrets = config.revocation.secrets()?;
        let tls = config.server.tls.as_ref().map(crate::tls::Tls::load).transpose()?;
        let kek_path = config.storage.kek_file.clone().unwrap_or_else(|| data_dir.join("kek.key"));
        let clock = crate::clock::Clock::default();
        // The backend is chosen here, once; everything above the store sees one interface.
        let (store, sealer, keys) = match config.storage.backend {
            Backend::Redb => {
                let sealer = crate::keys::Sealer::new(&secrets::load_or_create(&kek_path, 32).map_err(dd_err)?);
                let keys = KeyRing::new(secrets::load_link_keys(&data_dir).map_err(dd_err)?);
                let jsonl = config.activity.jsonl_path.clone();
                let store = crate::store::Embedded::open_with(&data_dir, clock.clone(), jsonl, disk)?;
                (Store::Embedded(store), sealer, keys)
            }
            Backend::Postgres => {
                // Every node must hold the same KEK: a missing file is an error, never generated.
                let kek_err = |why: String| StartError::Kek { path: kek_path.display().to_string(), why };
                let kek = std::fs::read(&kek_path).map_err(|e| kek_err(e.to_string()))?;
                if kek.len() != 32 {
                    return Err(kek_err(format!("holds {} bytes; a KEK is 32", kek.len())));
                }
                let sealer = crate::keys::Sealer::new(&kek);
                let mut opts = crate::store::pg::PgOptions::new(
                    &config.storage.postgres_url().unwrap_or_default(),
                    &config.storage.node_id(),
                );
                opts.max_gate_staleness = std::time::Duration::from_millis(config.cluster.max_gate_staleness_ms);
                let store = crate::store::pg::PgStore::open(&opts, clock.clone()).await?;
                let keys = KeyRing::new(store.link_keys(&sealer).await?);
                (Store::Postgres(store), sealer, keys)
            }
        };
        let store = Arc::new(store);
        let ledger = Arc::new(Ledger::new(store.clone()));
        Ledger::listen(&ledger);
        let metrics = crate::metrics::Metrics::new(&ledger.metrics, &store.stats().metrics);
        let catalog = Arc::new(Catalog::new(store.clone(), config.storage.files_dir.clone(), config.storage.map_files));
        if matches!(*store, Store::Postgres(_)) {
            // This node's copies of the catalog's files, checked once, before anyone asks.
            let c = catalog.clone();
            tokio::spawn(async move { c.verify_all().await });
        }
        Ok(Arc::new(AppState {
            config,
            store,
            ledger,
            catalog,
            keys,
            sealer,
            metrics,
            refusals: Default::default(),
            tls,
            push_secrets,
            sessions: Default::default(),
            draining: AtomicBool::new(false),
            clock,
        }))
    }

    /// The time every decision uses.
    pub fn now(&self) -> DateTime<Utc> {
        self.clock.now()
    }

    /// Moves this server's clock forward (tests of windows, expiry and retention).
    pub fn advance_clock(&self, secs: i64) {
        self.clock.advance(secs);
    }

    /// True once shutdown has begun: new downloads are refused with `503`.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}
