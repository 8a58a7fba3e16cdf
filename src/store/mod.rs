//! The durable state: one redb database in `data_dir/keydrop.redb`.
//!
//! ## Who writes, and why memory and disk cannot disagree
//!
//! Exactly one thread, the writer ([`writer`]), opens write transactions. Everybody else sends it
//! [`Op`]s in a [`Batch`] over one FIFO channel; it drains what is waiting (up to
//! [`writer::MAX_BATCH`] batches), applies all of it in one transaction, makes it durable, and
//! only then answers each batch's reply slot. "Durable" is one of two things: a group made only of
//! the download path's ops (reservations, refunds, activity records) is written as one frame to
//! the preallocated [`journal`] and fsynced there, then committed to redb without an fsync
//! (`Durability::None`: visible to readers at once); any other group — and the first group after
//! the journal passes [`journal::CHECKPOINT_AT`] — is a redb `Durability::Immediate` commit, which
//! also makes every journalled commit before it durable in redb and lets the journal start over.
//! A crash loses only redb's non-durable commits, and the next open replays them from the journal
//! before anything else runs. A request that
//! must be durable before the client sees anything (a reservation, a link issue, a revocation)
//! awaits that answer; one that may lag (a refund, a `download.finished` record, a refusal
//! record) sends without awaiting, but still goes through the same ordered channel — so the
//! activity log's `seq` order is the commit order, and the per-link spent counter on disk is the
//! sum of the same deltas, in the same order, as the counter in memory.
//!
//! Activity records themselves live in `activity.log` ([`records`]), appended by the writer
//! before each commit; redb holds the file's committed end and its indexes, so a reader reads only
//! what its read transaction can see.
//!
//! Reads (loading a link on first use, catalog lookups, log queries) use redb read transactions
//! from any thread; they see the last committed state.
//!
//! The hot per-link counters live in the ledger's dashmap ([`crate::ledger`]). A counter there is
//! only ever changed while its entry is locked *and* in the same critical section as the `send`
//! of the matching op, so the channel carries every link's deltas in memory's order. Memory is
//! therefore never behind the disk's promise: a reservation is admitted in memory first, and only
//! then made durable; a refund is applied to memory first and reaches disk later (or, after a
//! crash, never — the bytes stay spent, which is the safe side). After a crash the store is the
//! truth: the dashmap is empty on start and every entry is loaded from the last durable state
//! (redb's last durable commit plus the journal's frames, replayed), where
//! every durable reservation is counted in full and a refund that was not yet durable is simply
//! absent. If a commit fails, the writer bumps [`Store::epoch`]; the ledger then drops its cache
//! and reloads from disk, so a failed batch can never leave memory believing something disk lost.

pub mod commands;
pub mod disk;
pub mod index;
pub mod journal;
pub mod records;
pub mod writer;

use crate::activity::Record;
use crate::token::LinkId;
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use disk::DiskSwitch;

/// The hot-path journal's file in `data_dir` (see [`journal`]).
pub const JOURNAL_FILE: &str = "journal.wal";
pub use records::RECORDS_FILE;
pub use writer::{Batch, Op, Writer};

pub(crate) const LINKS: TableDefinition<&[u8], &[u8]> = TableDefinition::new("links");
/// `issued_at (8 bytes, big-endian) ‖ link id` → bytes spent. Keyed by issue time first so that
/// links issued together — the ones downloaded together — share a few B-tree pages: a group
/// commit touches the same handful of pages however many links the store holds.
pub(crate) const SPENT: TableDefinition<&[u8], u64> = TableDefinition::new("link_spent");

/// A link's key in the spent table.
pub type SpentKey = [u8; 24];
pub(crate) const FILES: TableDefinition<&str, &[u8]> = TableDefinition::new("files");
pub(crate) const GATES: TableDefinition<&str, &[u8]> = TableDefinition::new("order_gates");
pub(crate) const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

/// The `&str → bytes` tables (JSON values unless noted). Composite keys join parts with `\0`.
pub const KV_TABLES: [&str; 12] = [
    "files", // product_id \0 file_id → FileRecord (see [`file_key`])
    "order_gates",
    "products",
    "customers",
    "customer_domains", // domain (lowercase) → tenant_id
    "orders",
    "tenant_orders", // tenant_id \0 purchased_at \0 order_id → nothing
    writer::ORDER_LINKS,
    "key_pool",   // product_id \0 seq (20 digits) → sealed key (raw)
    "order_keys", // order_id \0 item_id → sealed key (raw)
    "support_requests",
    "meta",
];
/// Where activity records were stored before [`records`]: `seq` → sealed JSON. Moved to the
/// record file on the first start that finds it (see [`writer::recover`]).
pub(crate) const LEGACY_ACTIVITY: TableDefinition<u64, &[u8]> = TableDefinition::new("activity");
/// `(at in microseconds, seq)` → nothing: the time index for date-range queries. Sparse: one
/// entry for the first record of each distinct `at` (all records of a group commit share one).
pub(crate) const ACTIVITY_AT: TableDefinition<(u64, u64), ()> = TableDefinition::new("activity_at");

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Db(#[from] redb::Error),
    #[error("encoding: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("the store's writer has stopped")]
    Closed,
    #[error("commit failed: {0}")]
    CommitFailed(String),
    #[error("the database is being reopened after a failed write")]
    Unavailable,
    #[error("damaged: {0}")]
    Corrupt(String),
    /// An invariant of the code itself failed ("cannot happen").
    #[error("internal: {0}")]
    Bug(String),
}

impl StoreError {
    /// Would the same call likely succeed later — an I/O error, a full disk, a database being
    /// reopened, a shutdown? Otherwise the data or the code is wrong (a damaged file, a stored
    /// value that does not decode, a broken invariant) and retrying will not help.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Io(_) | StoreError::Closed | StoreError::CommitFailed(_) | StoreError::Unavailable => true,
            StoreError::Db(e) => matches!(
                e,
                redb::Error::Io(_)
                    | redb::Error::PreviousIo
                    | redb::Error::DatabaseAlreadyOpen
                    | redb::Error::DatabaseClosed
                    | redb::Error::WouldBlock
                    | redb::Error::TransactionInProgress
                    | redb::Error::ReadTransactionStillInUse(_)
            ),
            StoreError::Encoding(_) | StoreError::Corrupt(_) | StoreError::Bug(_) => false,
        }
    }
}

macro_rules! redb_from {
    ($($t:ty),*) => {$(impl From<$t> for StoreError {
        fn from(e: $t) -> Self { StoreError::Db(e.into()) }
    })*};
}
redb_from!(redb::DatabaseError, redb::TransactionError, redb::TableError, redb::StorageError, redb::CommitError);

/// A download link as stored. Budget arithmetic uses `unit` = the file's size at issue time (1
/// for an empty file, whose every `GET` costs one unit).
///
/// A link names its file by `(product_id, file_id)` (API.md §5.1); attached files never change,
/// so a link serves exactly the bytes and name it was issued for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkRecord {
    pub link_id: String,
    pub order_id: String,
    pub tenant_id: Option<String>,
    /// Empty only in links stored before files belonged to products, until [`migrate`] fills it.
    #[serde(default, deserialize_with = "null_as_empty")]
    pub product_id: String,
    pub file_id: String,
    pub key_id: u32,
    /// Unix seconds.
    pub issued_at: i64,
    /// Unix seconds.
    pub expires_at: i64,
    pub max_uses: u32,
    pub unit: u64,
}

impl LinkRecord {
    /// Its key in the spent table: issue time, then id.
    pub fn spent_key(&self) -> SpentKey {
        let mut k = [0u8; 24];
        k[..8].copy_from_slice(&(self.issued_at.max(0) as u64).to_be_bytes());
        if let Ok(id) = hex::decode(&self.link_id) {
            if id.len() == 16 {
                k[8..].copy_from_slice(&id);
            }
        }
        k
    }

    /// `max_uses × unit` bytes.
    pub fn budget(&self) -> u64 {
        u64::from(self.max_uses).saturating_mul(self.unit)
    }
}

/// A downloadable file attached to a product, identified by `(product_id, file_id)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileRecord {
    pub file_id: String,
    #[serde(default, deserialize_with = "null_as_empty")]
    pub product_id: String,
    /// Relative to `files_dir`, already checked not to leave it.
    pub path: String,
    pub filename: String,
    pub size: u64,
    pub mtime_ns: u64,
    pub sha256: Option<String>,
    pub version: Option<String>,
    pub language: Option<String>,
    pub file_type: Option<String>,
    /// Set by `DELETE /api/products/{p}/files/{f}`: no new links; issued ones keep serving.
    #[serde(default)]
    pub retired_at: Option<chrono::DateTime<chrono::Utc>>,
}

/// A file's key in the `files` table: `product_id \0 file_id`.
pub fn file_key(product_id: &str, file_id: &str) -> String {
    format!("{product_id}\0{file_id}")
}

fn null_as_empty<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

/// What the download path needs to know about an order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Access {
    Open,
    Suspended,
    Revoked,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderGate {
    pub access: Access,
    pub tenant_id: Option<String>,
}

/// The database and its writer.
pub struct Store {
    db: Arc<disk::DbHandle>,
    /// The activity record file ([`records`]).
    records: std::path::PathBuf,
    writer: Writer,
    epoch: Arc<AtomicU64>,
}

impl Store {
    /// Opens (creating if needed) `data_dir/keydrop.redb`, makes sure every table exists, and
    /// starts the writer thread.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Store::open_with(data_dir, Arc::default(), None, None)
    }

    /// Like [`Store::open`], with the clock offset activity times follow (see
    /// [`crate::state::AppState::now`]) and an optional JSON Lines mirror of the activity log.
    /// `disk` makes the database's writes fail on demand (tests of a full disk).
    pub fn open_with(
        data_dir: &Path,
        clock_offset: Arc<std::sync::atomic::AtomicI64>,
        jsonl: Option<std::path::PathBuf>,
        disk: Option<DiskSwitch>,
    ) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir)?;
        let db = Arc::new(disk::DbHandle::open(data_dir.join("keydrop.redb"), disk.clone())?);
        {
            let tx = db.get()?.begin_write()?;
            tx.open_table(LINKS)?;
            tx.open_table(SPENT)?;
            for name in KV_TABLES {
                tx.open_table(TableDefinition::<&str, &[u8]>::new(name))?;
            }
            tx.open_table(records::ACTIVITY_POS)?;
            tx.open_table(ACTIVITY_AT)?;
            tx.open_table(index::ACTIVITY_IX)?;
            migrate(&tx)?;
            tx.commit()?;
        }
        let epoch = Arc::new(AtomicU64::new(0));
        let records = data_dir.join(RECORDS_FILE);
        let files = writer::Files { journal: data_dir.join(JOURNAL_FILE), records: records.clone(), disk };
        let writer = Writer::start(db.clone(), epoch.clone(), clock_offset, jsonl, files)?;
        Ok(Store { db, records, writer, epoch })
    }

    pub fn writer(&self) -> &Writer {
        &self.writer
    }

    /// Bumped on every failed commit; caches compare it to know when to reload.
    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// The open database (briefly: a reopen after a failed commit waits for every clone).
    pub fn database(&self) -> Result<Arc<Database>, StoreError> {
        self.db.get()
    }

    /// False while the database could not be reopened after a failed write.
    pub fn is_open(&self) -> bool {
        self.db.is_open()
    }

    /// Makes everything sent so far durable and stops the writer thread.
    pub async fn close(&self) {
        self.writer.stop().await;
    }

    pub fn link(&self, id: &LinkId) -> Result<Option<(LinkRecord, u64)>, StoreError> {
        let tx = self.db.get()?.begin_read()?;
        let Some(raw) = tx.open_table(LINKS)?.get(id.as_slice())? else {
            return Ok(None);
        };
        let rec: LinkRecord = serde_json::from_slice(raw.value())?;
        let spent = tx.open_table(SPENT)?.get(rec.spent_key().as_slice())?.map_or(0, |v| v.value());
        Ok(Some((rec, spent)))
    }

    pub fn file(&self, product_id: &str, file_id: &str) -> Result<Option<FileRecord>, StoreError> {
        let tx = self.db.get()?.begin_read()?;
        let raw = tx.open_table(FILES)?.get(file_key(product_id, file_id).as_str())?;
        Ok(raw.map(|r| serde_json::from_slice(r.value())).transpose()?)
    }

    /// The files attached to a product (retired ones included), in `file_id` order.
    pub fn files_of(&self, product_id: &str) -> Result<Vec<FileRecord>, StoreError> {
        self.scan_prefix("files", &file_key(product_id, ""), usize::MAX)?
            .into_iter()
            .map(|(_, v)| Ok(serde_json::from_slice(&v)?))
            .collect()
    }

    pub fn gate(&self, order_id: &str) -> Result<Option<OrderGate>, StoreError> {
        let tx = self.db.get()?.begin_read()?;
        let raw = tx.open_table(GATES)?.get(order_id)?;
        Ok(raw.map(|r| serde_json::from_slice(r.value())).transpose()?)
    }

    /// Up to `limit` records with `seq > after_seq`, in order.
    pub fn records_after(&self, after_seq: u64, limit: usize) -> Result<Vec<Record>, StoreError> {
        let mut out = Vec::new();
        if limit == 0 {
            return Ok(out);
        }
        records::walk(&self.db.get()?.begin_read()?, &self.records, after_seq.saturating_add(1), |_, raw| {
            out.push(serde_json::from_slice(raw)?);
            Ok(out.len() < limit)
        })?;
        Ok(out)
    }

    /// A JSON value from a key/value table.
    pub fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        table: &'static str,
        key: &str,
    ) -> Result<Option<T>, StoreError> {
        Ok(self.get_raw(table, key)?.map(|v| serde_json::from_slice(&v)).transpose()?)
    }

    pub fn get_raw(&self, table: &'static str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let tx = self.db.get()?.begin_read()?;
        let t = tx.open_table(TableDefinition::<&str, &[u8]>::new(table))?;
        let v = t.get(key)?.map(|v| v.value().to_vec());
        Ok(v)
    }

    /// Up to `limit` `(key, value)` pairs whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &self,
        table: &'static str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.get()?.begin_read()?;
        let t = tx.open_table(TableDefinition::<&str, &[u8]>::new(table))?;
        scan_prefix_in(&t, prefix, limit)
    }

    /// Runs an activity query: seeks the time index to `from` (or to just after `after_seq`),
    /// then reads forward in commit order — through the filter [`index`] when the query names an
    /// order, a tenant or a kind (the most selective of them), else the log itself — and stops at
    /// `to` or after `limit` matches. Returns the records and, if the limit cut the answer short,
    /// the cursor for the next page.
    pub fn query_activity(&self, q: &crate::activity::Query) -> Result<(Vec<Record>, Option<u64>), StoreError> {
        let tag = match (&q.order_id, &q.tenant_id, q.kind) {
            (Some(o), _, _) => Some(index::order_tag(o)),
            (None, Some(t), _) => Some(index::tenant_tag(t)),
            (None, None, Some(k)) => Some(index::kind_tag(k)),
            (None, None, None) => None,
        };
        // Before the read transaction begins (see `index::scan`).
        let recent = tag.map(|t| self.writer.recent.of(t, q.after_seq.saturating_add(1)));
        let tx = self.db.get()?.begin_read()?;
        let index = tx.open_table(ACTIVITY_AT)?;
        // The first record at or after `from`: the index's first entry at or after it.
        let mut start = 1u64;
        if let Some(from) = q.from_us {
            match index.range((from, 0u64)..)?.next() {
                Some(item) => start = item?.0.value().1,
                None => return Ok((Vec::new(), None)),
            }
        }
        start = start.max(q.after_seq.saturating_add(1));
        let (mut out, mut next) = (Vec::new(), None);
        let mut take = |seq: u64, raw: &[u8]| -> Result<bool, StoreError> {
            let r: Record = serde_json::from_slice(raw)?;
            if q.to_us.is_some_and(|to| crate::activity::at_micros(&r.at) > to) {
                return Ok(false);
            }
            if q.matches(&r) {
                out.push(r);
                if out.len() >= q.limit {
                    next = Some(seq);
                    return Ok(false);
                }
            }
            Ok(true)
        };
        match (tag, recent) {
            (Some(tag), Some(recent)) => {
                let reader = records::Reader::open(&tx, &self.records)?;
                index::scan(&tx.open_table(index::ACTIVITY_IX)?, recent, tag, start, |seq, offset| {
                    take(seq, &reader.read(offset)?)
                })?;
            }
            _ => records::walk(&tx, &self.records, start, take)?,
        }
        Ok((out, next))
    }

    /// One record exactly as stored.
    pub fn get_activity_raw(&self, seq: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let mut out = None;
        records::walk(&self.db.get()?.begin_read()?, &self.records, seq.max(1), |at, raw| {
            out = (at == seq).then(|| raw.to_vec());
            Ok(false)
        })?;
        Ok(out)
    }

    /// Feeds every activity record, in `seq` order, to `f` (stops when it returns `false`).
    pub fn scan_activity(&self, f: impl FnMut(Result<Record, String>) -> bool) -> Result<(), StoreError> {
        scan_records(&self.db.get()?.begin_read()?, &self.records, f)
    }

    pub fn record_count(&self) -> Result<u64, StoreError> {
        let tx = self.db.get()?.begin_read()?;
        Ok(records::end(&tx.open_table(META)?)?.next_seq - 1)
    }
}

/// `meta` key: the stored data's layout version (u64, big-endian; absent = 1).
const SCHEMA: &str = "schema";
/// 2: files keyed by `(product_id, file_id)`, every link naming its product.
const SCHEMA_VERSION: u64 = 2;

/// Moves data stored by an older keydrop to the current layout, once, inside the opening
/// transaction. Version 1 keyed files by `file_id` alone, so attaching an id to a second product
/// re-pointed the first product's links at the second's file (API.md §5.1): each file moves to
/// `product_id \0 file_id`, and each link that did not record its product gets the product of
/// the file it named.
fn migrate(tx: &redb::WriteTransaction) -> Result<(), StoreError> {
    let mut meta = tx.open_table(META)?;
    let version = meta.get(SCHEMA)?.and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes)).unwrap_or(1);
    if version >= SCHEMA_VERSION {
        return Ok(());
    }
    let mut files = tx.open_table(FILES)?;
    let mut product_of = std::collections::HashMap::new();
    let legacy: Vec<(String, Vec<u8>)> = files
        .iter()?
        .filter_map(|item| item.ok().map(|(k, v)| (k.value().to_owned(), v.value().to_vec())))
        .filter(|(k, _)| !k.contains('\0'))
        .collect();
    for (key, raw) in &legacy {
        let rec: FileRecord = serde_json::from_slice(raw)?;
        files.remove(key.as_str())?;
        files.insert(file_key(&rec.product_id, &rec.file_id).as_str(), raw.as_slice())?;
        product_of.insert(rec.file_id, rec.product_id);
    }
    let mut links = tx.open_table(LINKS)?;
    let mut fixed = Vec::new();
    for item in links.iter()? {
        let (k, v) = item?;
        let mut rec: LinkRecord = serde_json::from_slice(v.value())?;
        if rec.product_id.is_empty() {
            if let Some(p) = product_of.get(&rec.file_id) {
                rec.product_id.clone_from(p);
                fixed.push((k.value().to_vec(), serde_json::to_vec(&rec)?));
            }
        }
    }
    for (k, v) in &fixed {
        links.insert(k.as_slice(), v.as_slice())?;
    }
    meta.insert(SCHEMA, SCHEMA_VERSION.to_be_bytes().as_slice())?;
    if !legacy.is_empty() || !fixed.is_empty() {
        tracing::info!(files = legacy.len(), links = fixed.len(), "moved files under their products");
    }
    Ok(())
}

/// Up to `limit` `(key, value)` pairs of a key/value table whose key starts with `prefix`, in
/// key order — for read and write transactions alike.
pub(crate) fn scan_prefix_in(
    t: &impl ReadableTable<&'static str, &'static [u8]>,
    prefix: &str,
    limit: usize,
) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
    let mut out = Vec::new();
    for item in t.range(prefix..)? {
        let (k, v) = item?;
        if !k.value().starts_with(prefix) || out.len() >= limit {
            break;
        }
        out.push((k.value().to_owned(), v.value().to_vec()));
    }
    Ok(out)
}

/// Reads every activity record of a database that no server has open (for `verify-log`),
/// feeding them in order to `f`.
///
/// A database left by a crash (`kill -9`, power loss) needs redb's repair before it can be read,
/// its newest records may still be only in the journal (see [`journal`]), and one written before
/// the record file existed still holds its records in a table. A read-only open can do none of
/// that, so in those cases the database is opened for writing, repaired, caught up from the
/// journal and migrated — exactly what the server does on its next start — and read the same way.
pub fn scan_activity_offline(path: &Path, f: impl FnMut(Result<Record, String>) -> bool) -> Result<(), StoreError> {
    let journal_path = path.with_file_name(JOURNAL_FILE);
    let records_path = path.with_file_name(RECORDS_FILE);
    match redb::ReadOnlyDatabase::open(path) {
        Ok(db) => {
            let tx = db.begin_read()?;
            if !journal_pending(&tx, &journal_path)? && !legacy_records(&tx)? {
                return scan_records(&tx, &records_path, f);
            }
        }
        Err(redb::DatabaseError::RepairAborted) => {}
        Err(e) => return Err(e.into()),
    }
    let db = redb::Database::builder().open(path)?;
    let frames = if journal_path.exists() { journal::read_file(&journal_path)? } else { Vec::new() };
    writer::recover(&db, &frames, &mut records::RecordFile::open(&records_path, None)?)?;
    scan_records(&db.begin_read()?, &records_path, f)
}

/// Opens a table of a read transaction; `None` if the database never created it.
fn open_if_there<K: redb::Key + 'static, V: redb::Value + 'static>(
    tx: &redb::ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match tx.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Does the journal hold frames the database lacks?
fn journal_pending(tx: &redb::ReadTransaction, journal_path: &Path) -> Result<bool, StoreError> {
    if !journal_path.exists() {
        return Ok(false);
    }
    let applied = match open_if_there(tx, META)? {
        Some(meta) => writer::journal_applied(&meta)?,
        None => 0,
    };
    Ok(journal::read_file(journal_path)?.iter().any(|f| f.number > applied))
}

/// Does the database still hold records in the table they lived in before the record file?
fn legacy_records(tx: &redb::ReadTransaction) -> Result<bool, StoreError> {
    Ok(open_if_there(tx, LEGACY_ACTIVITY)?.map(|t| t.len()).transpose()?.unwrap_or(0) > 0)
}

fn scan_records(
    tx: &redb::ReadTransaction,
    records_path: &Path,
    mut f: impl FnMut(Result<Record, String>) -> bool,
) -> Result<(), StoreError> {
    let walked = records::walk(tx, records_path, 1, |seq, raw| {
        Ok(f(serde_json::from_slice::<Record>(raw).map_err(|e| format!("record {seq}: undecodable: {e}"))))
    });
    match walked {
        // A record file cut short is a finding for the verifier, not a failure to read.
        Err(StoreError::Corrupt(msg)) => {
            f(Err(msg));
            Ok(())
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::{Entry, Kind};

    #[test]
    fn io_failures_are_transient_and_damage_or_bugs_are_not() {
        let enospc = || std::io::Error::from_raw_os_error(28);
        assert!(StoreError::Io(enospc()).is_transient());
        assert!(StoreError::Db(redb::Error::Io(enospc())).is_transient());
        assert!(StoreError::Db(redb::Error::PreviousIo).is_transient());
        assert!(StoreError::Closed.is_transient() && StoreError::Unavailable.is_transient());
        assert!(!StoreError::Corrupt("short file".into()).is_transient());
        assert!(!StoreError::Db(redb::Error::Corrupted("page".into())).is_transient());
        assert!(!StoreError::Bug("cannot happen".into()).is_transient());
        let undecodable = serde_json::from_slice::<FileRecord>(b"{").unwrap_err();
        assert!(!StoreError::Encoding(undecodable).is_transient());
    }

    fn pending_after_close(dir: &Path) -> bool {
        let db = redb::ReadOnlyDatabase::open(dir.join("keydrop.redb")).unwrap();
        journal_pending(&db.begin_read().unwrap(), &dir.join(JOURNAL_FILE)).unwrap()
    }

    /// redb makes a pending non-durable commit durable when the database closes cleanly, so after a
    /// clean stop `keydrop.redb` is complete on its own (backups, offline readers).
    #[tokio::test]
    async fn a_clean_stop_makes_every_journalled_commit_durable_in_redb() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for _ in 0..3 {
            let ops = vec![Op::Reserve { key: [7; 24], bytes: 10 }, Op::Append(Entry::new(Kind::DownloadStarted))];
            store.writer().commit(ops).await.unwrap();
        }
        assert!(!journal::read_file(&dir.path().join(JOURNAL_FILE)).unwrap().is_empty(), "journalled");
        store.close().await;
        drop(store);
        assert!(!pending_after_close(dir.path()), "redb alone holds everything after a clean stop");
        let db = redb::ReadOnlyDatabase::open(dir.path().join("keydrop.redb")).unwrap();
        let tx = db.begin_read().unwrap();
        assert_eq!(records::end(&tx.open_table(META).unwrap()).unwrap().next_seq, 4);
        assert_eq!(std::fs::read(dir.path().join(RECORDS_FILE)).unwrap().iter().filter(|b| **b == b'\n').count(), 3);
        assert_eq!(tx.open_table(SPENT).unwrap().get([7u8; 24].as_slice()).unwrap().map(|v| v.value()), Some(30));
    }

    /// A batch that fails for its own reasons (here: a broken invariant after it wrote a value,
    /// a record and a gate) fails alone: nothing of it is written, and the other batches of its
    /// group commit, their records numbered as if it had never been.
    #[tokio::test]
    async fn a_failing_batch_rolls_back_alone_and_the_rest_of_its_group_commits() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let w = store.writer();
        // Hold the writer so the next batches share one group.
        let slow = w
            .send_durable(vec![Op::Txn(Box::new(|_| {
                std::thread::sleep(std::time::Duration::from_millis(200));
                Ok(Box::new(()) as Box<dyn std::any::Any + Send>)
            }))])
            .unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let bad = w
            .send_durable(vec![Op::Txn(Box::new(|tx| {
                tx.put_raw("products", "ghost", b"{}")?;
                tx.put_gate("o-bad", &OrderGate { access: Access::Revoked, tenant_id: None })?;
                tx.append(Entry::new(Kind::OrderRevoked))?;
                Err(StoreError::Bug("refused after writing".into()))
            }))])
            .unwrap();
        let good = w
            .send_durable(vec![Op::Txn(Box::new(|tx| {
                tx.put_raw("products", "real", b"{}")?;
                tx.append(Entry::new(Kind::OrderCreated))?;
                Ok(Box::new(()) as Box<dyn std::any::Any + Send>)
            }))])
            .unwrap();
        slow.await.unwrap().unwrap();
        assert!(matches!(bad.await.unwrap(), Err(StoreError::Bug(_))));
        let committed = good.await.unwrap().unwrap();
        assert_eq!(committed.last_seq, Some(1), "the failed batch's record was never numbered");
        assert!(store.get_raw("products", "ghost").unwrap().is_none());
        assert!(store.gate("o-bad").unwrap().is_none());
        assert!(store.get_raw("products", "real").unwrap().is_some());
        let recs = store.records_after(0, 10).unwrap();
        assert_eq!(recs.iter().map(|r| r.kind).collect::<Vec<_>>(), vec![Kind::OrderCreated]);
        assert_eq!(store.writer().stats.failed_commits.load(Ordering::Relaxed), 0, "the group did not fail");
        store.close().await;
    }

    /// Past [`index::FLUSH_AT`] held entries a durable commit writes them out as chunks; queries
    /// merge the chunks with what is held, before and after a restart.
    #[tokio::test]
    async fn filter_queries_merge_written_chunks_with_held_entries_across_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let orders = |n: u64| format!("o{}", n % 7);
        // 29 groups of 2,000 entries: written out at every 10th group, 9 groups' worth held.
        let expect: Vec<u64> = (0..29_000u64).filter(|n| n % 7 == 3).collect();
        let query = |store: &Store| {
            let mut got = Vec::new();
            let mut after = 0;
            loop {
                let q = crate::activity::Query {
                    order_id: Some("o3".into()),
                    after_seq: after,
                    limit: 1000,
                    ..Default::default()
                };
                let (recs, next) = store.query_activity(&q).unwrap();
                got.extend(recs.iter().map(|r| r.bytes.unwrap()));
                match next {
                    Some(n) => after = n,
                    None => return got,
                }
            }
        };
        {
            let store = Store::open(dir.path()).unwrap();
            for c in 0..29u64 {
                // Admin-like groups: durable redb commits, where a flush may happen.
                store
                    .writer()
                    .txn(move |tx| {
                        for i in 0..1000 {
                            let mut e = Entry::new(Kind::KeyAccessed);
                            e.order_id = Some(orders(c * 1000 + i));
                            e.bytes = Some(c * 1000 + i);
                            tx.append(e)?;
                        }
                        Ok(())
                    })
                    .await
                    .unwrap();
            }
            let held = store.writer.recent.len();
            assert!(held > 0 && held < 58_000, "some entries were written out, some are held: {held}");
            assert_eq!(query(&store), expect);
            store.close().await;
        }
        let store = Store::open(dir.path()).unwrap();
        assert!(store.writer.recent.is_empty());
        assert_eq!(query(&store), expect, "after a restart, from the table alone");
        store.close().await;
    }

    /// A database from before the filter index has records but no index: the first start builds it
    /// from the record file, and filtered queries find exactly what a scan would.
    #[tokio::test]
    async fn the_filter_index_of_a_database_from_before_it_is_built_on_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            for batch in 0..3u64 {
                let ops = (0..100u64)
                    .map(|i| {
                        let mut e = Entry::new(if i % 2 == 0 { Kind::DownloadStarted } else { Kind::KeyAccessed });
                        e.order_id = Some(format!("o{}", i % 10));
                        e.bytes = Some(batch * 100 + i);
                        Op::Append(e)
                    })
                    .collect();
                store.writer().commit(ops).await.unwrap();
            }
            store.close().await;
        }
        {
            // What an older keydrop left: no index table, no flag.
            let db = redb::Database::open(dir.path().join("keydrop.redb")).unwrap();
            let tx = db.begin_write().unwrap();
            tx.delete_table(index::ACTIVITY_IX).unwrap();
            tx.open_table(META).unwrap().remove("activity_ix_through").unwrap();
            tx.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let q = crate::activity::Query { order_id: Some("o3".into()), limit: 1000, ..Default::default() };
        let (found, next) = store.query_activity(&q).unwrap();
        let bytes: Vec<u64> = found.iter().map(|r| r.bytes.unwrap()).collect();
        assert_eq!(bytes, (0..300u64).filter(|n| n % 10 == 3).collect::<Vec<_>>());
        assert_eq!(next, None);
        let q = crate::activity::Query { kind: Some(Kind::KeyAccessed), limit: 1000, ..Default::default() };
        assert_eq!(store.query_activity(&q).unwrap().0.len(), 150);
        // New records are indexed as they are written.
        let mut e = Entry::new(Kind::KeyAccessed);
        e.order_id = Some("o3".into());
        store.writer().commit(vec![Op::append(e)]).await.unwrap();
        let q = crate::activity::Query { order_id: Some("o3".into()), limit: 1000, ..Default::default() };
        assert_eq!(store.query_activity(&q).unwrap().0.len(), 31);
        store.close().await;
    }

    /// A database from before files belonged to products keyed them by `file_id` alone, and its
    /// links may not name their product: the first start moves each file under its product and
    /// gives each such link the product of its file, once.
    #[tokio::test]
    async fn files_and_links_of_a_database_from_before_file_ids_per_product_are_moved_on_start() {
        let dir = tempfile::tempdir().unwrap();
        let link_id = [9u8; 16];
        {
            let db = redb::Database::create(dir.path().join("keydrop.redb")).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut files = tx.open_table(FILES).unwrap();
                let old = serde_json::json!({"file_id": "x", "product_id": "A", "path": "big.bin",
                    "filename": "A.iso", "size": 64, "mtime_ns": 1, "sha256": null, "version": "1",
                    "language": null, "file_type": null});
                files.insert("x", old.to_string().as_bytes()).unwrap();
                let mut links = tx.open_table(LINKS).unwrap();
                let link = serde_json::json!({"link_id": hex::encode(link_id), "order_id": "o", "tenant_id": null,
                    "product_id": null, "file_id": "x", "key_id": 1, "issued_at": 5, "expires_at": 99,
                    "max_uses": 2, "unit": 64});
                links.insert(link_id.as_slice(), link.to_string().as_bytes()).unwrap();
            }
            tx.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let file = store.file("A", "x").unwrap().expect("moved under its product");
        assert_eq!((file.filename.as_str(), file.size, file.version.as_deref()), ("A.iso", 64, Some("1")));
        assert_eq!(store.file("B", "x").unwrap(), None);
        assert_eq!(store.files_of("A").unwrap(), vec![file]);
        let (link, _) = store.link(&link_id).unwrap().unwrap();
        assert_eq!((link.product_id.as_str(), link.file_id.as_str()), ("A", "x"));
        assert!(store.get_raw("files", "x").unwrap().is_none(), "the old key is gone");
        store.close().await;
        drop(store);
        // A second start finds nothing left to move and changes nothing.
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.files_of("A").unwrap().len(), 1);
        store.close().await;
    }

    /// A database written before the record file keeps its records in the `activity` table; the
    /// first start moves them, in order and byte for byte, and the chain goes on from them.
    #[tokio::test]
    async fn records_of_a_database_from_before_the_record_file_are_moved_to_it_on_start() {
        let dir = tempfile::tempdir().unwrap();
        let mut stored = Vec::new();
        {
            let db = redb::Database::create(dir.path().join("keydrop.redb")).unwrap();
            let tx = db.begin_write().unwrap();
            {
                let mut t = tx.open_table(LEGACY_ACTIVITY).unwrap();
                let mut prev = crate::activity::GENESIS.to_owned();
                for seq in 1..=3u64 {
                    let mut e = Entry::new(Kind::DownloadStarted);
                    e.bytes = Some(seq * 100);
                    let (json, hash) = Record::seal_json(&e, seq, "2026-01-01T00:00:00.000000Z", &prev);
                    t.insert(seq, json.as_slice()).unwrap();
                    stored.push(json);
                    prev = hash;
                }
            }
            tx.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        for seq in 1..=3u64 {
            assert_eq!(store.get_activity_raw(seq).unwrap().as_deref(), Some(stored[seq as usize - 1].as_slice()));
        }
        let next = store.writer().commit(vec![Op::Append(Entry::new(Kind::DownloadFinished))]).await.unwrap();
        assert_eq!(next.last_seq, Some(4));
        let mut verifier = crate::activity::ChainVerifier::default();
        store.scan_activity(|r| verifier.push(&r.unwrap()).is_ok()).unwrap();
        assert_eq!(verifier.count(), 4, "one unbroken chain across the move");
        store.close().await;
        drop(store);
        let db = redb::ReadOnlyDatabase::open(dir.path().join("keydrop.redb")).unwrap();
        assert!(!legacy_records(&db.begin_read().unwrap()).unwrap(), "the old table is gone");
    }
}
