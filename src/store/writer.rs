//! The single writer: one OS thread owns every redb write transaction and commits in groups.
//!
//! Senders put a [`Batch`] (ops plus an optional reply slot) on an unbounded FIFO channel; the
//! send is synchronous and never blocks, so callers may send while holding a short lock (the
//! ledger relies on this to keep memory's order and the channel's order the same). The thread
//! blocks for the first batch, then takes whatever else is already waiting, up to [`MAX_BATCH`],
//! applies all of it in one transaction and makes it durable — through the [`super::journal`] for
//! a group of download ops, through a redb fsync otherwise (see `apply`). Only then does it
//! answer the reply slots — so "replied `Ok`" means "on disk". Under load many requests share one
//! fsync; when idle a lone request pays one.
//!
//! Activity records are sealed here, in apply order: the writer assigns `seq` (gap-free), `at`
//! (never decreasing) and the hash chain. If a commit fails, the chain position is rolled back to
//! the last durable record, every reply in the group gets the error, and the store epoch is
//! bumped so caches reload from disk.

use super::disk::{DbHandle, DiskSwitch};
use super::index::{self, Tags};
use super::journal::{Frame, FrameBuf, Journal, JournalOp, CHECKPOINT_AT};
use super::records::{self, RecordFile, ACTIVITY_POS};
use super::{
    FileRecord, LinkRecord, OrderGate, SpentKey, StoreError, ACTIVITY_AT, KV_TABLES, LEGACY_ACTIVITY, LINKS, META,
    SPENT,
};
use crate::activity::{Entry, Record, GENESIS};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, Table, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};
use std::any::Any;
use std::collections::BTreeMap;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// The most batches one transaction takes.
pub const MAX_BATCH: usize = 4096;

/// One change to apply.
pub enum Op {
    /// `spent += bytes` for a link (a reservation), by its [`LinkRecord::spent_key`].
    Reserve {
        key: SpentKey,
        bytes: u64,
    },
    /// `spent -= bytes` (a refund of bytes reserved but not sent).
    Refund {
        key: SpentKey,
        bytes: u64,
    },
    /// A new link, with `spent = 0`.
    PutLink(LinkRecord),
    PutFile(FileRecord),
    /// Records a file's SHA-256 once computed (a no-op if the file is gone or changed size).
    SetFileSha {
        product_id: String,
        file_id: String,
        size: u64,
        sha256: String,
    },
    PutGate {
        order_id: String,
        gate: OrderGate,
    },
    /// Appends an activity record.
    Append(Entry),
    /// Appends an activity record given as its [`Entry::body`] and index tags (see [`Op::append`]).
    AppendBody {
        body: Vec<u8>,
        tags: Tags,
    },
    /// Runs a read-modify-write inside the group's transaction (the admin API's atomic steps:
    /// take a key from the pool, check a window and revoke). The closure must validate before
    /// it writes: a domain refusal is returned *inside* its output and writes nothing; an `Err`
    /// fails the whole group.
    Txn(TxnFn),
}

/// A closure run by the writer; its output is handed back through [`Committed::output`].
pub type TxnFn = Box<dyn FnOnce(&mut Tx<'_, '_>) -> Result<Box<dyn Any + Send>, StoreError> + Send>;

/// What a durable batch reports back.
#[derive(Debug, Default)]
pub struct Committed {
    /// `seq` of the last record this batch appended, if any.
    pub last_seq: Option<u64>,
    /// The output of the batch's last [`Op::Txn`], if any.
    pub output: Option<Box<dyn Any + Send>>,
}

pub type Reply = oneshot::Sender<Result<Committed, StoreError>>;

/// Ops applied together, with an optional reply once durable.
pub struct Batch {
    pub ops: Vec<Op>,
    pub reply: Option<Reply>,
}

/// Counters for metrics and benchmarks.
#[derive(Debug, Default)]
pub struct WriterStats {
    pub commits: AtomicU64,
    pub batches: AtomicU64,
    pub ops: AtomicU64,
    pub failed_commits: AtomicU64,
    /// Commit latency and batch size, exported at `/metrics`.
    pub metrics: crate::metrics::WriterMetrics,
}

impl WriterStats {
    fn observe_commit(&self, batches: usize, took: std::time::Duration) {
        self.metrics.observe_commit(batches, took);
    }
}

enum Msg {
    Batch(Batch),
    /// Finish what came before, then exit the thread (dropping the database handle).
    Stop,
}

/// The sending side, cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::UnboundedSender<Msg>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    pub stats: Arc<WriterStats>,
    /// Filter index entries the index table does not hold yet (see [`index`]).
    pub(super) recent: index::Recent,
    gate_sink: Arc<std::sync::OnceLock<std::sync::Weak<dyn GateSink>>>,
}

struct Chain {
    next_seq: u64,
    prev_hash: String,
    last_at_us: u64,
    /// Counts gate changes in commit order (memory only: caches start empty after a restart).
    gate_version: u64,
}

impl Writer {
    pub(super) fn start(
        db: Arc<DbHandle>,
        epoch: Arc<AtomicU64>,
        clock: Arc<AtomicI64>,
        jsonl: Option<PathBuf>,
        files: Files,
    ) -> Result<Writer, StoreError> {
        let mut journal = Journal::open(&files.journal, files.disk.clone())?;
        let mut records = RecordFile::open(&files.records, files.disk)?;
        let frames = journal.read_back()?;
        journal.restart(recover(&*db.get()?, &frames, &mut records)?);
        let chain = load_chain(&*db.get()?, records.path())?;
        let mut mirror = jsonl.map(|path| Mirror::open(path, records.path().to_owned())).transpose()?;
        if let Some(m) = mirror.as_mut() {
            m.catch_up(&*db.get()?)?;
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(WriterStats::default());
        let st = stats.clone();
        let recent = index::Recent::default();
        let held = recent.clone();
        let gate_sink: Arc<std::sync::OnceLock<std::sync::Weak<dyn GateSink>>> = Arc::default();
        let sink = gate_sink.clone();
        let handle = std::thread::Builder::new().name("keydrop-writer".into()).spawn(move || {
            let logs = Logs {
                mirror,
                journal,
                frame: FrameBuf::default(),
                records,
                group_records: Vec::new(),
                group_ix: Vec::new(),
                recent: held,
                gates: Vec::new(),
                gate_sink: sink,
            };
            run(db, rx, chain, epoch, st, clock, logs)
        })?;
        Ok(Writer { tx, thread: Arc::new(Mutex::new(Some(handle))), stats, recent, gate_sink })
    }

    /// Names who hears of committed gate changes (once; later calls change nothing).
    pub fn on_gate_change(&self, sink: std::sync::Weak<dyn GateSink>) {
        let _ = self.gate_sink.set(sink);
    }

    /// Queues ops without waiting. Never blocks; fails only if the writer has stopped.
    pub fn send(&self, ops: Vec<Op>) -> Result<(), StoreError> {
        self.tx.send(Msg::Batch(Batch { ops, reply: None })).map_err(|_| StoreError::Closed)
    }

    /// Queues ops and returns a receiver that answers once they are durable. Synchronous, so it
    /// can be called under a lock; await the receiver after releasing it.
    pub fn send_durable(&self, ops: Vec<Op>) -> Result<oneshot::Receiver<Result<Committed, StoreError>>, StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Batch(Batch { ops, reply: Some(reply) })).map_err(|_| StoreError::Closed)?;
        Ok(rx)
    }

    /// Applies ops and waits until they are durable.
    pub async fn commit(&self, ops: Vec<Op>) -> Result<Committed, StoreError> {
        self.send_durable(ops)?.await.map_err(|_| StoreError::Closed)?
    }

    /// Runs `f` atomically in the writer's next transaction and returns its output once durable.
    pub async fn txn<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Tx<'_, '_>) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let op = Op::Txn(Box::new(move |tx| f(tx).map(|v| Box::new(v) as Box<dyn Any + Send>)));
        let out = self.commit(vec![op]).await?.output.ok_or(StoreError::Closed)?;
        out.downcast::<T>().map(|b| *b).map_err(|_| StoreError::Bug("txn output type".into()))
    }

    /// Waits until everything queued before this call is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.commit(Vec::new()).await.map(|_| ())
    }

    /// Makes everything queued so far durable, then stops the thread and waits for it; later
    /// sends fail with [`StoreError::Closed`]. Used at shutdown.
    pub async fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        let handle = self.thread.lock().expect("not poisoned").take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// The writer's files besides redb, as [`super::Store::open_with`] names them.
pub(super) struct Files {
    pub journal: PathBuf,
    pub records: PathBuf,
    pub disk: Option<DiskSwitch>,
}

fn load_chain(db: &Database, records_path: &Path) -> Result<Chain, StoreError> {
    Ok(match records::last(&db.begin_read()?, records_path)? {
        Some((seq, raw)) => {
            let r: Record = serde_json::from_slice(&raw)?;
            Chain { next_seq: seq + 1, prev_hash: r.hash, last_at_us: at_micros(&r.at), gate_version: 0 }
        }
        None => Chain { next_seq: 1, prev_hash: GENESIS.to_owned(), last_at_us: 0, gate_version: 0 },
    })
}

fn at_micros(at: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(at).map_or(0, |t| t.timestamp_micros().max(0) as u64)
}

fn format_micros(us: u64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(us as i64).unwrap_or_default();
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// The JSON Lines mirror of the activity log: one committed record per line, appended and
/// fsynced after each durable commit (before anyone is answered), and caught up from redb on
/// start and after a failed write, so it never has a record redb lacks and never stays behind.
struct Mirror {
    path: PathBuf,
    file: std::fs::File,
    last_seq: u64,
    /// The record file it copies from.
    records: PathBuf,
}

impl Mirror {
    fn open(path: PathBuf, records: PathBuf) -> Result<Mirror, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut last_seq = 0;
        if let Ok(f) = std::fs::File::open(&path) {
            for line in std::io::BufReader::new(f).lines() {
                let line = line?;
                if let Some(seq) = serde_json::from_str::<serde_json::Value>(&line).ok().and_then(|v| v["seq"].as_u64())
                {
                    last_seq = seq;
                }
            }
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Mirror { path, file, last_seq, records })
    }

    /// Appends every record redb has after the mirror's last line.
    fn catch_up(&mut self, db: &Database) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        let mut last = self.last_seq;
        records::walk(&db.begin_read()?, &self.records, self.last_seq + 1, |seq, raw| {
            buf.extend_from_slice(raw);
            buf.push(b'\n');
            last = seq;
            Ok(true)
        })?;
        if !buf.is_empty() {
            self.file.write_all(&buf)?;
            self.file.sync_data()?;
            self.last_seq = last;
        }
        Ok(())
    }

    fn append(&mut self, db: &Database, records: &[(u64, Vec<u8>)]) {
        let Some(first) = records.first() else { return };
        let result = (|| -> Result<(), StoreError> {
            if first.0 != self.last_seq + 1 {
                self.catch_up(db)?;
                return Ok(());
            }
            let mut buf = Vec::new();
            for (_, json) in records {
                buf.extend_from_slice(json);
                buf.push(b'\n');
            }
            self.file.write_all(&buf)?;
            self.file.sync_data()?;
            self.last_seq = records.last().map_or(self.last_seq, |r| r.0);
            Ok(())
        })();
        if let Err(e) = result {
            tracing::error!(path = %self.path.display(), error = %e, "activity mirror write failed; will catch up");
            // Re-read the file's real end next time.
            if let Ok(m) = Mirror::open(self.path.clone(), self.records.clone()) {
                *self = m;
            }
        }
    }
}

fn run(
    handle: Arc<DbHandle>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    mut chain: Chain,
    epoch: Arc<AtomicU64>,
    stats: Arc<WriterStats>,
    clock: Arc<AtomicI64>,
    mut logs: Logs,
) {
    let mut group: Vec<Batch> = Vec::with_capacity(256);
    let mut stopping = false;
    // Set by a failed commit: redb refuses every later call on that database, so the next
    // transaction first reopens it (see `disk`).
    let mut broken = false;
    while !stopping {
        match rx.blocking_recv() {
            Some(Msg::Batch(b)) => group.push(b),
            Some(Msg::Stop) | None => break,
        }
        while group.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(Msg::Batch(b)) => group.push(b),
                Ok(Msg::Stop) => {
                    stopping = true;
                    break;
                }
                Err(_) => break,
            }
        }
        let before = Chain { prev_hash: chain.prev_hash.clone(), ..chain };
        let now = chrono::Utc::now() + chrono::Duration::seconds(clock.load(Ordering::Relaxed));
        let mut appended = Vec::new();
        let started = std::time::Instant::now();
        let now_us = now.timestamp_micros().max(0) as u64;
        let result = healthy(&handle, &mut broken, &mut chain, &epoch, &mut logs)
            .and_then(|db| apply(&db, &mut group, &mut chain, now_us, &mut logs, &mut appended));
        stats.observe_commit(group.len(), started.elapsed());
        stats.batches.fetch_add(group.len() as u64, Ordering::Relaxed);
        stats.ops.fetch_add(group.iter().map(|b| b.ops.len() as u64).sum(), Ordering::Relaxed);
        match result {
            Ok(results) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                if let (Some(m), Ok(db)) = (logs.mirror.as_mut(), handle.get()) {
                    m.append(&db, &appended);
                }
                // Gate changes reach memory in commit order, before anyone is answered: the next
                // request after an admin call returns already sees its gate.
                let sink = logs.gate_sink.get().and_then(std::sync::Weak::upgrade);
                for (order_id, gate, version) in logs.gates.drain(..) {
                    if let Some(s) = &sink {
                        s.gate_committed(&order_id, &gate, version);
                    }
                }
                for (b, committed) in group.drain(..).zip(results) {
                    if let Some(r) = b.reply {
                        let _ = r.send(committed);
                    }
                }
            }
            Err(e) => {
                logs.gates.clear();
                stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                stats.metrics.failed_commits.inc();
                tracing::error!(error = %e, batches = group.len(), "store commit failed");
                chain = before;
                broken = true;
                epoch.fetch_add(1, Ordering::AcqRel);
                let msg = e.to_string();
                for b in group.drain(..) {
                    if let Some(r) = b.reply {
                        let _ = r.send(Err(StoreError::CommitFailed(msg.clone())));
                    }
                }
            }
        }
    }
    // redb makes its last (journalled, not yet durable) commit durable when it closes cleanly;
    // the records that commit vouches for must be on disk before that.
    if let Err(e) = logs.records.sync() {
        tracing::error!(error = %e, "could not sync the activity record file at stop");
    }
    // The held index entries, so the next start need not read those records back.
    if !broken && !logs.recent.is_empty() {
        let flushed = handle.get().and_then(|db| {
            let tx = db.begin_write()?;
            logs.recent.write_into(&tx, &[])?;
            tx.commit()?;
            Ok(())
        });
        if let Err(e) = flushed {
            tracing::warn!(error = %e, "could not write the filter index at stop; the next start rebuilds it");
        }
    }
    tracing::debug!("store writer stopped");
}

/// The database to write to; after a failed commit, reopens it first and reloads the chain
/// position from what is durable.
fn healthy(
    handle: &DbHandle,
    broken: &mut bool,
    chain: &mut Chain,
    epoch: &AtomicU64,
    logs: &mut Logs,
) -> Result<Arc<Database>, StoreError> {
    if *broken {
        handle.reopen()?;
        let db = handle.get()?;
        let frames = logs.journal.read_back()?;
        logs.journal.restart(recover(&db, &frames, &mut logs.records)?);
        // Recovery indexed every record the index table lacked.
        logs.recent.clear();
        let gate_version = chain.gate_version;
        *chain = Chain { gate_version, ..load_chain(&db, logs.records.path())? };
        *broken = false;
        epoch.fetch_add(1, Ordering::AcqRel);
        tracing::info!(next_seq = chain.next_seq, "store reopened after a failed commit");
        return Ok(db);
    }
    handle.get()
}

/// The open tables of one write transaction, and the chain position; what [`Op::Txn`] closures
/// work with.
pub struct Tx<'a, 't> {
    links: &'a mut Table<'t, &'static [u8], &'static [u8]>,
    spent: &'a mut Table<'t, &'static [u8], u64>,
    kv: &'a mut BTreeMap<&'static str, Table<'t, &'static str, &'static [u8]>>,
    /// This group's records, one per line, for the record file.
    records: &'a mut Vec<u8>,
    activity_at: &'a mut Table<'t, (u64, u64), ()>,
    /// The group's filter index entries — `(tags, seq, offset)` — and the record file's length
    /// before this group's append (see [`index`]).
    ix: &'a mut Vec<(Tags, u64, u64)>,
    base_offset: u64,
    chain: &'a mut Chain,
    now_us: u64,
    last_seq: Option<u64>,
    /// Records appended in this transaction, as stored: for the JSON Lines mirror (if any).
    appended: Option<&'a mut Vec<(u64, Vec<u8>)>>,
    /// The `at` the time index already has an entry for in this transaction.
    indexed_at: Option<u64>,
    /// The last `at` formatted, and its text (a group's records share one).
    at_text: (u64, String),
    /// The journal frame being built, when this group is journalled rather than fsynced by redb.
    frame: Option<&'a mut FrameBuf>,
    /// Gate changes of this group, with their versions, for the sink after the commit.
    gates: &'a mut Vec<(String, OrderGate, u64)>,
    /// The current batch's writes to the key/value tables, applied when the batch ends well and
    /// dropped when it fails (see [`apply`]).
    overlay: BTreeMap<(&'static str, String), Option<Vec<u8>>>,
}

/// Where a batch started: what [`Tx::roll_back`] returns to.
struct Mark {
    next_seq: u64,
    prev_hash: String,
    last_at_us: u64,
    gate_version: u64,
    records: usize,
    ix: usize,
    gates: usize,
    appended: usize,
}

impl<'t> Tx<'_, 't> {
    fn kv(&mut self, table: &'static str) -> Result<&mut Table<'t, &'static str, &'static [u8]>, StoreError> {
        self.kv.get_mut(table).ok_or_else(|| StoreError::Bug(format!("unknown table {table}")))
    }

    pub fn get_raw(&mut self, table: &'static str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.overlay.get(&(table, key.to_owned())) {
            return Ok(v.clone());
        }
        Ok(self.kv(table)?.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Where the current batch starts.
    fn mark(&self) -> Mark {
        Mark {
            next_seq: self.chain.next_seq,
            prev_hash: self.chain.prev_hash.clone(),
            last_at_us: self.chain.last_at_us,
            gate_version: self.chain.gate_version,
            records: self.records.len(),
            ix: self.ix.len(),
            gates: self.gates.len(),
            appended: self.appended.as_ref().map_or(0, |a| a.len()),
        }
    }

    /// Undoes what the current batch did: its key/value writes, records, index entries and gate
    /// changes. (Links and counters are written straight to their tables, by ops that cannot
    /// refuse: they are never rolled back.)
    fn roll_back(&mut self, m: Mark) {
        self.overlay.clear();
        self.chain.next_seq = m.next_seq;
        self.chain.prev_hash = m.prev_hash;
        self.chain.last_at_us = m.last_at_us;
        self.chain.gate_version = m.gate_version;
        self.records.truncate(m.records);
        self.ix.truncate(m.ix);
        self.gates.truncate(m.gates);
        if let Some(a) = self.appended.as_deref_mut() {
            a.truncate(m.appended);
        }
    }

    /// Applies the current batch's key/value writes to the tables.
    fn keep(&mut self) -> Result<(), StoreError> {
        for ((table, key), value) in std::mem::take(&mut self.overlay) {
            let t = self.kv(table)?;
            match value {
                Some(v) => t.insert(key.as_str(), v.as_slice())?,
                None => t.remove(key.as_str())?,
            };
        }
        Ok(())
    }

    pub fn get_json<T: DeserializeOwned>(&mut self, table: &'static str, key: &str) -> Result<Option<T>, StoreError> {
        Ok(self.get_raw(table, key)?.map(|v| serde_json::from_slice(&v)).transpose()?)
    }

    pub fn put_raw(&mut self, table: &'static str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.kv(table)?;
        self.overlay.insert((table, key.to_owned()), Some(value.to_vec()));
        Ok(())
    }

    pub fn put_json<T: Serialize>(&mut self, table: &'static str, key: &str, value: &T) -> Result<(), StoreError> {
        let v = serde_json::to_vec(value)?;
        self.put_raw(table, key, &v)
    }

    pub fn remove(&mut self, table: &'static str, key: &str) -> Result<(), StoreError> {
        self.kv(table)?;
        self.overlay.insert((table, key.to_owned()), None);
        Ok(())
    }

    /// Up to `limit` `(key, value)` pairs whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &mut self,
        table: &'static str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        // The table's pairs as the current batch has changed them.
        let pending: Vec<_> = self
            .overlay
            .range((table, prefix.to_owned())..)
            .take_while(|((t, k), _)| *t == table && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        let removed = pending.iter().filter(|(_, v)| v.is_none()).count();
        let stored = super::scan_prefix_in(self.kv(table)?, prefix, limit.saturating_add(removed))?;
        let mut merged: BTreeMap<String, Vec<u8>> = stored.into_iter().collect();
        for (k, v) in pending {
            match v {
                Some(v) => merged.insert(k, v),
                None => merged.remove(&k),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    /// Writes an order's gate; once the group commits, the store's [`GateSink`] hears of it.
    pub fn put_gate(&mut self, order_id: &str, gate: &OrderGate) -> Result<(), StoreError> {
        self.put_json(GATES_KV, order_id, gate)?;
        self.chain.gate_version += 1;
        self.gates.push((order_id.to_owned(), gate.clone(), self.chain.gate_version));
        Ok(())
    }

    /// Appends an activity record in this transaction and returns its `seq`.
    pub fn append(&mut self, entry: Entry) -> Result<u64, StoreError> {
        self.append_body(&entry.body(), &index::tags_of(&entry))
    }

    /// Appends the record whose [`Entry::body`] this is.
    fn append_body(&mut self, body: &[u8], tags: &Tags) -> Result<u64, StoreError> {
        let at_us = self.now_us.max(self.chain.last_at_us);
        let seq = self.chain.next_seq;
        if self.at_text.0 != at_us || self.at_text.1.is_empty() {
            self.at_text = (at_us, format_micros(at_us));
        }
        let (json, hash) = Record::seal_body(body, seq, &self.at_text.1, &self.chain.prev_hash);
        self.ix.push((*tags, seq, self.base_offset + self.records.len() as u64));
        self.records.extend_from_slice(&json);
        self.records.push(b'\n');
        index_at(self.activity_at, &mut self.indexed_at, seq, at_us)?;
        if let Some(f) = self.frame.as_deref_mut() {
            f.record(seq, at_us, &json);
        }
        if let Some(a) = self.appended.as_deref_mut() {
            a.push((seq, json));
        }
        self.chain.next_seq += 1;
        self.chain.prev_hash = hash;
        self.chain.last_at_us = at_us;
        self.last_seq = Some(seq);
        Ok(seq)
    }

    fn apply(&mut self, op: Op) -> Result<Option<Box<dyn Any + Send>>, StoreError> {
        match op {
            Op::Reserve { key, bytes } => {
                add_spent(self.spent, &key, bytes, true)?;
                if let Some(f) = self.frame.as_deref_mut() {
                    f.reserve(&key, bytes);
                }
            }
            Op::Refund { key, bytes } => {
                add_spent(self.spent, &key, bytes, false)?;
                if let Some(f) = self.frame.as_deref_mut() {
                    f.refund(&key, bytes);
                }
            }
            Op::PutLink(rec) => {
                let id = hex::decode(&rec.link_id).map_err(|e| StoreError::Bug(e.to_string()))?;
                self.links.insert(id.as_slice(), serde_json::to_vec(&rec)?.as_slice())?;
                self.spent.insert(rec.spent_key().as_slice(), 0)?;
                self.put_raw(ORDER_LINKS, &format!("{}\0{}", rec.order_id, rec.link_id), b"")?;
            }
            Op::PutFile(rec) => self.put_json(FILES_KV, &super::file_key(&rec.product_id, &rec.file_id), &rec)?,
            Op::SetFileSha { product_id, file_id, size, sha256 } => {
                let key = super::file_key(&product_id, &file_id);
                let existing: Option<FileRecord> = self.get_json(FILES_KV, &key)?;
                if let Some(mut rec) = existing.filter(|r| r.size == size) {
                    rec.sha256 = Some(sha256);
                    self.put_json(FILES_KV, &key, &rec)?;
                }
            }
            Op::PutGate { order_id, gate } => {
                self.put_gate(&order_id, &gate)?;
            }
            Op::Append(entry) => {
                self.append(entry)?;
            }
            Op::AppendBody { body, tags } => {
                self.append_body(&body, &tags)?;
            }
            Op::Txn(f) => return f(self).map(Some),
        }
        Ok(None)
    }
}

const FILES_KV: &str = "files";
const GATES_KV: &str = "order_gates";
/// `order_id \0 link_id` → nothing: the links of an order.
pub const ORDER_LINKS: &str = "order_links";

/// The writer's files besides redb: the journal (and the frame buffer it is written from), the
/// record file (and the group's records, one write), and the optional JSON Lines mirror.
struct Logs {
    mirror: Option<Mirror>,
    journal: Journal,
    frame: FrameBuf,
    records: RecordFile,
    group_records: Vec<u8>,
    /// The group's filter index entries, and those the index table does not hold yet.
    group_ix: Vec<(Tags, u64, u64)>,
    recent: index::Recent,
    /// The group's gate changes, and who hears of them once committed.
    gates: Vec<(String, OrderGate, u64)>,
    gate_sink: Arc<std::sync::OnceLock<std::sync::Weak<dyn GateSink>>>,
}

/// Hears of every committed gate change, in commit order, on the writer thread, before the
/// commit is acknowledged (the ledger: so in-memory gates follow the disk).
pub trait GateSink: Send + Sync {
    /// `version` increases with every change (never reused while the process runs).
    fn gate_committed(&self, order_id: &str, gate: &OrderGate, version: u64);
}

/// `meta` key: the number of the last journal frame whose changes redb holds (u64, big-endian).
const JOURNAL_APPLIED: &str = "journal_applied";

/// The last journal frame `meta` says redb holds (0 if none).
pub(super) fn journal_applied(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u64, StoreError> {
    Ok(meta.get(JOURNAL_APPLIED)?.and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes)).unwrap_or(0))
}

fn set_journal_applied(tx: &redb::WriteTransaction, frame: u64) -> Result<(), StoreError> {
    tx.open_table(META)?.insert(JOURNAL_APPLIED, frame.to_be_bytes().as_slice())?;
    Ok(())
}

impl Op {
    /// Can this op go through the journal? (The download path's ops; anything else — admin
    /// changes, arbitrary transactions — is committed durably by redb itself.)
    fn is_hot(&self) -> bool {
        matches!(self, Op::Reserve { .. } | Op::Refund { .. } | Op::Append(_) | Op::AppendBody { .. })
    }

    /// Appends `entry`, serialized here rather than on the writer thread: the download path's
    /// records are made on the request's worker, so the writer — one thread for every download —
    /// only adds `seq`, `at` and the hashes, and frees one buffer instead of the entry's strings.
    pub fn append(entry: Entry) -> Op {
        Op::AppendBody { tags: index::tags_of(&entry), body: entry.body() }
    }
}

fn add_spent(
    spent: &mut Table<'_, &'static [u8], u64>,
    key: &SpentKey,
    bytes: u64,
    add: bool,
) -> Result<(), StoreError> {
    let cur = spent.get(key.as_slice())?.map_or(0, |v| v.value());
    let new = if add { cur.saturating_add(bytes) } else { cur.saturating_sub(bytes) };
    spent.insert(key.as_slice(), new)?;
    Ok(())
}

/// Keeps the time index for a record. The index is sparse: one `(at, first seq)` entry per
/// distinct `at`, and every record of a group commit shares one `at`. `at` never decreases with
/// `seq`, so seeking the index to a time and walking records by `seq` from there finds every
/// later record.
fn index_at(
    activity_at: &mut Table<'_, (u64, u64), ()>,
    indexed_at: &mut Option<u64>,
    seq: u64,
    at_us: u64,
) -> Result<(), StoreError> {
    if *indexed_at != Some(at_us) {
        activity_at.insert((at_us, seq), ())?;
        *indexed_at = Some(at_us);
    }
    Ok(())
}

/// Brings the database and the record file up to date, in one durable transaction, and returns
/// the journal frame the database now holds everything up to (for [`Journal::restart`]):
///
/// 1. the record file's next append goes where the durable `activity_end` says it ends;
/// 2. records of a database from before the record file are moved into it;
/// 3. every intact journal frame numbered past `meta/journal_applied` is re-applied — counters,
///    time index, and its records written to the file again.
///
/// Run at start and after every reopen (a crash or a failed commit loses redb's non-durable
/// commits, never the journal's frames), and by `verify-log` on a database left by a crash.
pub(super) fn recover(db: &Database, frames: &[Frame], records: &mut RecordFile) -> Result<u64, StoreError> {
    let tx = db.begin_write()?;
    let (applied, mut end) = {
        let meta = tx.open_table(META)?;
        (journal_applied(&meta)?, records::end(&meta)?)
    };
    records.reset(end.len)?;
    let mut buf = Vec::new();
    {
        let mut pos = tx.open_table(ACTIVITY_POS)?;
        let legacy = tx.open_table(LEGACY_ACTIVITY)?;
        let moved = legacy.len()?;
        if moved > 0 {
            for item in legacy.iter()? {
                let (k, v) = item?;
                if buf.is_empty() {
                    pos.insert(k.value(), records.len())?;
                }
                follow(&mut end, k.value())?;
                buf.extend_from_slice(v.value());
                buf.push(b'\n');
                if buf.len() >= 1 << 20 {
                    records.append(&buf)?;
                    buf.clear();
                }
            }
            records.append(&buf)?;
            buf.clear();
            tracing::info!(records = moved, "moved the activity records from the database to the record file");
        }
        drop(legacy);
        tx.delete_table(LEGACY_ACTIVITY)?;

        let mut spent = tx.open_table(SPENT)?;
        let mut activity_at = tx.open_table(ACTIVITY_AT)?;
        let mut indexed_at = None;
        let (mut replayed, mut replayed_records) = (0u64, 0u64);
        for f in frames.iter().filter(|f| f.number > applied) {
            let first = end.next_seq;
            for op in &f.ops {
                match op {
                    JournalOp::Reserve { key, bytes } => add_spent(&mut spent, key, *bytes, true)?,
                    JournalOp::Refund { key, bytes } => add_spent(&mut spent, key, *bytes, false)?,
                    JournalOp::Record { seq, at_us, json } => {
                        follow(&mut end, *seq)?;
                        buf.extend_from_slice(json);
                        buf.push(b'\n');
                        index_at(&mut activity_at, &mut indexed_at, *seq, *at_us)?;
                        replayed_records += 1;
                    }
                }
            }
            if !buf.is_empty() {
                pos.insert(first, records.append(&buf)?)?;
                buf.clear();
            }
            replayed += 1;
        }
        if replayed > 0 {
            tracing::info!(frames = replayed, records = replayed_records, "replayed the journal into the database");
        }
    }
    end.len = records.len();
    records.truncate()?;
    records.sync()?;
    records::set_end(&tx, end)?;
    let indexed = index::catch_up(&tx, records.path())?;
    if indexed > 0 {
        tracing::info!(records = indexed, "indexed the activity records the filter index lacked");
    }
    let applied = frames.last().map_or(0, |f| f.number).max(applied);
    set_journal_applied(&tx, applied)?;
    tx.commit()?;
    Ok(applied)
}

/// Counts record `seq` into `end`, which must be where it belongs: the log is gap-free.
fn follow(end: &mut records::End, seq: u64) -> Result<(), StoreError> {
    if seq != end.next_seq {
        return Err(StoreError::Corrupt(format!("record {seq} found where record {} belongs", end.next_seq)));
    }
    end.next_seq += 1;
    Ok(())
}

/// Applies a group in one transaction; returns what each batch reports.
///
/// A group made only of download ops ([`Op::is_hot`]) is journalled: its frame is written and
/// fsynced, then redb commits without an fsync of its own. Any other group, or one arriving when
/// the journal is past [`CHECKPOINT_AT`], is a durable redb commit — which also makes every earlier
/// journalled commit durable in redb, so the journal starts over after it.
fn apply(
    db: &Database,
    group: &mut [Batch],
    chain: &mut Chain,
    now_us: u64,
    logs: &mut Logs,
    appended: &mut Vec<(u64, Vec<u8>)>,
) -> Result<Vec<Result<Committed, StoreError>>, StoreError> {
    let mut tx = db.begin_write()?;
    let mut results = Vec::with_capacity(group.len());
    let hot = logs.journal.offset() < CHECKPOINT_AT && group.iter().all(|b| b.ops.iter().all(Op::is_hot));
    logs.frame.clear();
    logs.group_records.clear();
    logs.group_ix.clear();
    let first_seq = chain.next_seq;
    let keep = logs.mirror.is_some();
    {
        let mut links = tx.open_table(LINKS)?;
        let mut spent = tx.open_table(SPENT)?;
        let mut activity_at = tx.open_table(ACTIVITY_AT)?;
        let mut kv = BTreeMap::new();
        if !hot {
            for name in KV_TABLES {
                kv.insert(name, tx.open_table(TableDefinition::<&str, &[u8]>::new(name))?);
            }
        }
        let mut t = Tx {
            links: &mut links,
            spent: &mut spent,
            kv: &mut kv,
            records: &mut logs.group_records,
            activity_at: &mut activity_at,
            ix: &mut logs.group_ix,
            gates: &mut logs.gates,
            base_offset: logs.records.len(),
            chain,
            now_us,
            last_seq: None,
            appended: keep.then_some(appended),
            indexed_at: None,
            at_text: (0, String::new()),
            frame: hot.then_some(&mut logs.frame),
            overlay: BTreeMap::new(),
        };
        for b in group.iter_mut() {
            t.last_seq = None;
            let mark = t.mark();
            let mut output = None;
            let mut failed = None;
            for op in std::mem::take(&mut b.ops) {
                match t.apply(op) {
                    Ok(Some(o)) => output = Some(o),
                    Ok(None) => {}
                    // A batch that fails for its own reasons (a stored value that does not decode,
                    // a broken invariant) fails alone, with nothing of it written; I/O fails the
                    // group. A journalled group has no such ops (and its frame is not undone).
                    Err(e) if !hot && !e.is_transient() => {
                        failed = Some(e);
                        break;
                    }
                    Err(e) => return Err(e),
                }
            }
            match failed {
                None => {
                    t.keep()?;
                    results.push(Ok(Committed { last_seq: t.last_seq, output }));
                }
                Some(e) => {
                    tracing::error!(error = %e, "a batch failed and was rolled back; the rest of its group commits");
                    t.roll_back(mark);
                    results.push(Err(e));
                }
            }
        }
    }
    if !logs.group_records.is_empty() {
        let at = logs.records.append(&logs.group_records)?;
        tx.open_table(ACTIVITY_POS)?.insert(first_seq, at)?;
        records::set_end(&tx, records::End { next_seq: chain.next_seq, len: logs.records.len() })?;
    }
    let journalled = hot && logs.journal.fits(logs.frame.frame_len());
    let applied = if journalled { logs.journal.next_frame() } else { logs.journal.next_frame() - 1 };
    // Written by journalled commits too: redb makes a pending non-durable commit durable when it
    // closes cleanly, and that state must not claim fewer frames than it holds (a replay would
    // count them twice).
    set_journal_applied(&tx, applied)?;
    if journalled {
        tx.set_durability(redb::Durability::None).map_err(|e| StoreError::Bug(e.to_string()))?;
        // Durable before redb makes it visible: a reader never sees what a crash could take back.
        logs.journal.append(&logs.frame)?;
        tx.commit()?;
        logs.recent.add(&logs.group_ix);
    } else {
        let flush = logs.recent.due();
        if flush {
            logs.recent.write_into(&tx, &logs.group_ix)?;
        }
        // Records first: redb's durable end must never cover bytes that are not on disk.
        logs.records.sync()?;
        tx.commit()?;
        if flush {
            logs.recent.clear();
        } else {
            logs.recent.add(&logs.group_ix);
        }
        logs.journal.restart(applied);
    }
    Ok(results)
}
