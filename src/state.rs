//! The server's shared state, built once at start-up from the config: the store and its writer,
//! the ledger of hot links, the file catalog and the link-signing key ring.

use crate::catalog::Catalog;
use crate::config::Config;
use crate::ledger::Ledger;
use crate::secrets;
use crate::store::{Store, StoreError};
use crate::token::KeyRing;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot prepare data_dir {path}: {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error("cannot open the store: {0}")]
    Store(#[from] StoreError),
}

pub struct AppState {
    pub config: Config,
    pub store: Arc<Store>,
    pub ledger: Ledger,
    pub catalog: Arc<Catalog>,
    pub keys: KeyRing,
    draining: AtomicBool,
}

impl AppState {
    /// Opens the store in `data_dir` (creating it and its secrets on first start).
    pub fn open(config: Config) -> Result<Arc<AppState>, StartError> {
        let data_dir = config.storage.data_dir.clone();
        let dd_err = |source| StartError::DataDir { path: data_dir.display().to_string(), source };
        std::fs::create_dir_all(&data_dir).map_err(dd_err)?;
        std::fs::create_dir_all(&config.storage.files_dir).map_err(dd_err)?;
        let keys = KeyRing::new(secrets::load_link_keys(&data_dir).map_err(dd_err)?);
        let store = Arc::new(Store::open(&data_dir)?);
        let ledger = Ledger::new(store.clone());
        let catalog = Arc::new(Catalog::new(store.clone(), config.storage.files_dir.clone()));
        Ok(Arc::new(AppState { config, store, ledger, catalog, keys, draining: AtomicBool::new(false) }))
    }

    /// True once shutdown has begun: new downloads are refused with `503`.
    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    pub fn begin_draining(&self) {
        self.draining.store(true, Ordering::Release);
    }
}
