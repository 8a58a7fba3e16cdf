//! The embedded backend: one redb database in `data_dir/keydrop.redb`, one node.
//!
//! ## Who writes, and why memory and disk cannot disagree
//!
//! Exactly one thread, the writer ([`writer`]), opens write transactions. Everybody else sends it
//! [`Op`]s in a [`Batch`] over one FIFO channel; it drains what is waiting (up to
//! [`writer::MAX_BATCH`] batches), applies all of it together, makes it durable, and
//! only then answers each batch's reply slot (through a task on the runtime, [`answers`]). "Durable" is one of two things: a group made only of
//! the download path's ops (reservations, refunds, activity records) is written as one frame to
//! the preallocated [`journal`] and fsynced there — by a thread of its own ([`flusher`]), while
//! the writer seals the next group — and reaches redb later, with its records'
//! publication ([`pending`]), in a commit without an fsync (`Durability::None`) — until then
//! readers of a link's counter add the journalled changes from memory ([`unapplied`]); any other
//! group is a redb `Durability::Immediate` commit, which also makes every journalled commit before
//! it durable in redb and lets the journal start over. Once the journal passes
//! [`journal::CHECKPOINT_AT`], such a commit of everything journalled (a checkpoint) runs on a
//! thread of its own while the writer goes on journalling into the journal's other file
//! ([`checkpointer`]).
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
//! absent. If a commit fails, the writer bumps [`Embedded::epoch`]; the ledger then drops its cache
//! and reloads from disk, so a failed batch can never leave memory believing something disk lost.

mod answers;
pub mod budgets;
mod checkpointer;
mod commands;
mod commit;
pub mod disk;
mod flusher;
mod gather;
pub mod index;
pub mod journal;
mod migrate;
mod mirror;
mod offline;
mod pending;
pub mod records;
mod recover;
pub mod tx;
pub mod unapplied;
pub mod writer;

use crate::activity::Record;
use crate::token::LinkId;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

pub use crate::model::{Access, FileRecord, LinkRecord, OrderGate};
pub use crate::store::StoreError;
pub use disk::DiskSwitch;
use migrate::migrate;
pub use offline::scan_activity_offline;
use offline::scan_records;
use recover::journal_applied;

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
pub const KV_TABLES: [&str; 15] = [
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
    "customer_tokens",    // SHA-256 of the token (hex) → CustomerToken
    "tenant_tokens",      // tenant_id \0 token_id → SHA-256 (hex)
    "live_subscriptions", // order_id → nothing (see [`crate::store::keys::LIVE_SUBSCRIPTIONS`])
];
/// Where activity records were stored before [`records`]: `seq` → sealed JSON. Moved to the
/// record file on the first start that finds it (see [`writer::recover`]).
pub(crate) const LEGACY_ACTIVITY: TableDefinition<u64, &[u8]> = TableDefinition::new("activity");
/// `(at in microseconds, seq)` → nothing: the time index for date-range queries. Sparse: one
/// entry for the first record of each distinct `at` (all records of a group commit share one).
pub(crate) const ACTIVITY_AT: TableDefinition<(u64, u64), ()> = TableDefinition::new("activity_at");

pub use crate::store::keys::file_key;

/// A link's key in the spent table: issue time, then id — so links issued together, the ones
/// downloaded together, share a few B-tree pages (a storage concern, kept out of the domain type).
pub fn spent_key(rec: &LinkRecord) -> SpentKey {
    let mut k = [0u8; 24];
    k[..8].copy_from_slice(&(rec.issued_at.max(0) as u64).to_be_bytes());
    if let Ok(id) = hex::decode(&rec.link_id) {
        if id.len() == 16 {
            k[8..].copy_from_slice(&id);
        }
    }
    k
}

/// The database and its writer.
pub struct Embedded {
    db: Arc<disk::DbHandle>,
    /// The activity record file ([`records`]).
    records: std::path::PathBuf,
    writer: Writer,
    epoch: Arc<AtomicU64>,
}

impl Embedded {
    /// Opens (creating if needed) `data_dir/keydrop.redb`, makes sure every table exists, and
    /// starts the writer thread.
    pub fn open(data_dir: &Path) -> Result<Embedded, StoreError> {
        Embedded::open_with(data_dir, Default::default(), None, None)
    }

    /// Like [`Embedded::open`], with the [`crate::clock::Clock`] activity records are stamped by (the
    /// one the handlers decide by) and an optional JSON Lines mirror of the activity log.
    /// `disk` makes the database's writes fail on demand (tests of a full disk).
    pub fn open_with(
        data_dir: &Path,
        clock: crate::clock::Clock,
        jsonl: Option<std::path::PathBuf>,
        disk: Option<DiskSwitch>,
    ) -> Result<Embedded, StoreError> {
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
        let writer = Writer::start(db.clone(), epoch.clone(), clock, jsonl, files)?;
        Ok(Embedded { db, records, writer, epoch })
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

    /// A link and its spent bytes: redb's counter plus the journalled changes redb lacks
    /// ([`unapplied`]).
    pub fn link(&self, id: &LinkId) -> Result<Option<(LinkRecord, u64)>, StoreError> {
        let (rec, spent) = self.writer.unapplied.spent(|| {
            let tx = self.db.get()?.begin_read()?;
            let Some(raw) = tx.open_table(LINKS)?.get(id.as_slice())? else {
                return Ok::<_, StoreError>((None, Vec::new(), 0));
            };
            let rec: LinkRecord = serde_json::from_slice(raw.value())?;
            let key = spent_key(&rec);
            let spent = tx.open_table(SPENT)?.get(key.as_slice())?.map_or(0, |v| v.value());
            Ok((Some(rec), vec![(key, spent)], journal_applied(&tx.open_table(META)?)?))
        })?;
        Ok(rec.map(|r| (r, spent[0])))
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

    /// Makes every record sealed so far visible to the activity reads below, which see only what
    /// the record file holds (see [`pending`]); [`crate::store::Store`]'s reads call it first.
    /// After [`Embedded::close`] there is nothing to wait for: the writer published everything
    /// as it stopped (or, if it could not, the next start writes it from the journal).
    pub async fn publish(&self) -> Result<(), StoreError> {
        match self.writer.publish().await {
            Err(StoreError::Closed) => Ok(()),
            other => other,
        }
    }

    /// [`Embedded::publish`], then the store itself, to read the activity log through.
    pub async fn published(&self) -> Result<&Embedded, StoreError> {
        self.publish().await?;
        Ok(self)
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
                // Entries are in `seq` order; past what the transaction sees, none is readable.
                index::scan(&tx.open_table(index::ACTIVITY_IX)?, recent, tag, start, |seq, offset| {
                    Ok(reader.has(seq) && take(seq, &reader.read(offset)?)?)
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

    /// Every link with its spent bytes (for `move-store`), journalled changes included.
    pub fn all_links(&self) -> Result<Vec<(LinkRecord, u64)>, StoreError> {
        let (recs, spent) = self.writer.unapplied.spent(|| {
            let tx = self.db.get()?.begin_read()?;
            let (links, spent) = (tx.open_table(LINKS)?, tx.open_table(SPENT)?);
            let (mut recs, mut stored) = (Vec::new(), Vec::new());
            for item in links.iter()? {
                let (_, raw) = item?;
                let rec: LinkRecord = serde_json::from_slice(raw.value())?;
                let key = spent_key(&rec);
                stored.push((key, spent.get(key.as_slice())?.map_or(0, |v| v.value())));
                recs.push(rec);
            }
            Ok::<_, StoreError>((recs, stored, journal_applied(&tx.open_table(META)?)?))
        })?;
        Ok(recs.into_iter().zip(spent).collect())
    }

    /// Every row of a key/value table (for `move-store`).
    pub fn table_rows(&self, table: &'static str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        self.scan_prefix(table, "", usize::MAX)
    }

    pub fn record_count(&self) -> Result<u64, StoreError> {
        let tx = self.db.get()?.begin_read()?;
        Ok(records::end(&tx.open_table(META)?)?.next_seq - 1)
    }
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

#[cfg(test)]
mod checkpoint_tests;
#[cfg(test)]
mod tests;
