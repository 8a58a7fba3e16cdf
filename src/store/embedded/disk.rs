//! The database handle, and how the store gets back on its feet after the disk fails.
//!
//! redb turns the first failed write (a full disk, an I/O error) into a sticky state: from then
//! on every call on that `Database` — reads included — answers `PreviousIo` without touching the
//! disk, and the only documented recovery is to drop the database and open the file again. So
//! the store reaches its database through a [`DbHandle`], and the writer thread, after a failed
//! commit, calls [`DbHandle::reopen`] before its next transaction. While the disk is still full
//! the reopen (or the next commit) fails again and every request keeps getting `503`; once space
//! returns, the next commit — a download, an admin call, or `/readyz`'s probe — succeeds and the
//! store is healthy again, without a restart.
//!
//! [`DiskSwitch`] is the test hook: a storage backend over the same file whose writes fail with
//! `ENOSPC` while the switch is on, exercising exactly the path a real full disk takes.

use super::StoreError;
use redb::backends::FileBackend;
use redb::{BackendError, Database, StorageBackend};
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

/// How long a reopen waits for readers still holding the old database.
const REOPEN_WAIT: Duration = Duration::from_secs(2);

/// Makes the database's disk "full" while on: writes, resizes and syncs fail with `ENOSPC`.
#[derive(Debug, Clone, Default)]
pub struct DiskSwitch(Arc<AtomicBool>);

impl DiskSwitch {
    pub fn set_full(&self, full: bool) {
        self.0.store(full, Ordering::SeqCst);
    }

    pub(super) fn check(&self) -> std::io::Result<()> {
        if self.0.load(Ordering::SeqCst) {
            Err(std::io::Error::from_raw_os_error(28)) // ENOSPC
        } else {
            Ok(())
        }
    }
}

#[derive(Debug)]
struct SwitchedBackend {
    inner: FileBackend,
    switch: DiskSwitch,
}

impl StorageBackend for SwitchedBackend {
    fn len(&self) -> std::io::Result<u64> {
        self.inner.len()
    }
    fn read(&self, offset: u64, out: &mut [u8]) -> std::io::Result<()> {
        self.inner.read(offset, out)
    }
    fn set_len(&self, len: u64) -> std::io::Result<()> {
        self.switch.check()?;
        self.inner.set_len(len)
    }
    fn sync_data(&self) -> std::io::Result<()> {
        self.switch.check()?;
        self.inner.sync_data()
    }
    fn write(&self, offset: u64, data: &[u8]) -> std::io::Result<()> {
        self.switch.check()?;
        self.inner.write(offset, data)
    }
    fn close(&self) -> std::io::Result<()> {
        self.inner.close()
    }
    fn try_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_range(s, e)
    }
    fn try_lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.try_lock_shared_range(s, e)
    }
    fn lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_range(s, e)
    }
    fn lock_shared_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.inner.lock_shared_range(s, e)
    }
    fn unlock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<(), BackendError> {
        self.inner.unlock_range(s, e)
    }
    fn query_lock_range(&self, s: Bound<u64>, e: Bound<u64>) -> Result<bool, BackendError> {
        self.inner.query_lock_range(s, e)
    }
}

/// The open database, swappable: `None` while a reopen after a failure has not succeeded yet.
pub struct DbHandle {
    path: PathBuf,
    switch: Option<DiskSwitch>,
    db: RwLock<Option<Arc<Database>>>,
}

impl DbHandle {
    pub fn open(path: PathBuf, switch: Option<DiskSwitch>) -> Result<DbHandle, StoreError> {
        let h = DbHandle { path, switch, db: RwLock::new(None) };
        let db = h.create()?;
        *h.db.write().expect("not poisoned") = Some(Arc::new(db));
        Ok(h)
    }

    fn create(&self) -> Result<Database, StoreError> {
        Ok(match &self.switch {
            None => Database::create(&self.path)?,
            Some(switch) => {
                let file =
                    std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&self.path)?;
                let backend = SwitchedBackend { inner: FileBackend::new(file)?, switch: switch.clone() };
                redb::Builder::new().create_with_backend(backend)?
            }
        })
    }

    /// The current database; [`StoreError::Unavailable`] while it is being (or could not be)
    /// reopened. Holders must drop it soon: a reopen waits for every clone to go.
    pub fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.db.read().expect("not poisoned").clone().ok_or(StoreError::Unavailable)
    }

    pub fn is_open(&self) -> bool {
        self.db.read().expect("not poisoned").is_some()
    }

    /// Drops the current database (waiting briefly for readers to let go of it) and opens the
    /// file again, which runs redb's repair if the last commit was torn.
    pub fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.db.write().expect("not poisoned");
        let deadline = Instant::now() + REOPEN_WAIT;
        if let Some(mut old) = slot.take() {
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => break drop(db),
                    Err(still_shared) if Instant::now() < deadline => {
                        old = still_shared;
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    Err(still_shared) => {
                        *slot = Some(still_shared);
                        return Err(StoreError::Unavailable);
                    }
                }
            }
        }
        loop {
            match self.create() {
                Ok(db) => {
                    *slot = Some(Arc::new(db));
                    return Ok(());
                }
                // Read transactions begun on the old database keep its file open for a moment.
                Err(StoreError::Db(redb::Error::DatabaseAlreadyOpen)) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2));
                }
                Err(e) => return Err(e),
            }
        }
    }
}
