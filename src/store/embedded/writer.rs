//! The single writer: one OS thread owns every redb write transaction and commits in groups.
//!
//! Senders put a [`Batch`] (ops plus an optional reply slot) on an unbounded FIFO channel; the
//! send is synchronous and never blocks, so callers may send while holding a short lock (the
//! ledger relies on this to keep memory's order and the channel's order the same). The thread
//! blocks for the first batch, then takes whatever else is already waiting, up to [`MAX_BATCH`]
//! (`gather`), applies all of it together and makes it durable — as one [`super::journal`] frame
//! for a group of download ops (redb gets it later, with the records' publication), in one redb
//! transaction and its fsync otherwise (`commit`). A frame is only sealed here: a thread of its
//! own writes it ([`super::flusher`]) while this one gathers and seals the next group, and every
//! frame sealed meanwhile goes down in that thread's next write. Only once a group is on disk are
//! its reply slots answered (by a task on the runtime, [`super::answers`]) — so "replied `Ok`"
//! means "on disk". Under load many requests share one fsync; when idle a lone request pays one.
//! A group nobody waits for (settlements, refusal records) first waits up to [`LINGER`] for a
//! batch somebody does, and shares its commit.
//!
//! Records reach the record file in batches, after their journal frames ([`super::pending`]):
//! the thread also wakes, with no work queued, when gathered records fall due.
//!
//! Activity records are sealed here, in apply order: the writer assigns `seq` (gap-free), `at`
//! (never decreasing) and the hash chain. If a commit fails, the chain position is rolled back to
//! the last durable record, every reply in the group gets the error, and the store epoch is
//! bumped so caches reload from disk. If a frame's write fails, so does every group sealed after
//! it; the writer then reopens redb and replays the journal, which reloads the chain.

use super::answers::Answers;
use super::commit::{after_frame, apply, broke, healthy, publish_alone, settle, start_checkpoint, Logs};
use super::disk::{DbHandle, DiskSwitch};
use super::flusher::{self, Flusher, Job};
use super::gather::{gather, Doorbell, Gathered, Msg};
pub use super::gather::{LINGER, MAX_BATCH};
use super::index::{self, Tags};
use super::journal::{FrameBuf, Journal};
use super::pending::Pending;
use super::records::{self, RecordFile};
use super::unapplied::Unapplied;
use super::{FileRecord, LinkRecord, OrderGate, SpentKey, StoreError};
use crate::activity::{at_micros, Entry, Record, GENESIS};
pub use crate::store::stats::WriterStats;
pub use crate::store::GateSink;
use redb::{Database, ReadableDatabase};
use std::any::Any;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

use super::mirror::Mirror;
pub(crate) use super::recover::journal_applied;
pub(super) use super::recover::recover;
pub use super::tx::{Tx, ORDER_LINKS};

/// One change to apply.
pub enum Op {
    /// `spent += bytes` for a link (a reservation), by its [`super::spent_key`].
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

/// The sending side, cheap to clone.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Msg>,
    /// Rung after each message somebody waits for (see [`Doorbell`]).
    bell: Arc<Doorbell>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
    pub stats: Arc<WriterStats>,
    /// Filter index entries the index table does not hold yet (see [`index`]).
    pub(super) recent: index::Recent,
    /// Counter changes durable in the journal that redb does not hold yet (see [`Unapplied`]).
    pub(super) unapplied: Arc<Unapplied>,
    gate_sink: Arc<std::sync::OnceLock<std::sync::Weak<dyn GateSink>>>,
}

pub(super) struct Chain {
    pub(super) next_seq: u64,
    pub(super) prev_hash: String,
    pub(super) last_at_us: u64,
    /// Counts gate changes in commit order (memory only: caches start empty after a restart).
    pub(super) gate_version: u64,
}

impl Writer {
    pub(super) fn start(
        db: Arc<DbHandle>,
        epoch: Arc<AtomicU64>,
        clock: crate::clock::Clock,
        jsonl: Option<PathBuf>,
        files: Files,
    ) -> Result<Writer, StoreError> {
        let mut journal = Journal::open(&files.journal, files.disk.clone())?;
        let mut records = RecordFile::open(&files.records, files.disk.clone())?;
        let frames = journal.read_back()?;
        let applied = recover(&*db.get()?, &frames, &mut records)?;
        journal.restart(applied);
        let unapplied = Arc::new(Unapplied::default());
        unapplied.rebase(applied);
        let mut pending = Pending::default();
        pending.unapplied = unapplied.clone();
        let chain = load_chain(&*db.get()?, records.path())?;
        let mut mirror = jsonl.map(|path| Mirror::open(path, records.path().to_owned())).transpose()?;
        if let Some(m) = mirror.as_mut() {
            m.catch_up(&*db.get()?)?;
        }
        let (tx, rx) = mpsc::channel();
        let stats = Arc::new(WriterStats::default());
        let st = stats.clone();
        let recent = index::Recent::default();
        let held = recent.clone();
        let gate_sink: Arc<std::sync::OnceLock<std::sync::Weak<dyn GateSink>>> = Arc::default();
        let sink = gate_sink.clone();
        let answers = Answers::start();
        let flusher = Flusher::start(flusher::Context {
            sides: journal.writers()?,
            switch: files.disk,
            unapplied: unapplied.clone(),
            answers: answers.clone(),
            epoch: epoch.clone(),
            stats: stats.clone(),
        })?;
        let bell = Arc::new(Doorbell::default());
        let writer_bell = bell.clone();
        let handle = std::thread::Builder::new().name("keydrop-writer".into()).spawn(move || {
            writer_bell.answer_here();
            let logs = Logs {
                mirror,
                journal,
                frame: FrameBuf::default(),
                records,
                pending,
                group_ix: Vec::new(),
                recent: held,
                gates: Vec::new(),
                gate_sink: sink,
                inflight: Default::default(),
                flusher,
            };
            run(db, rx, chain, Shared { epoch, stats: st, clock, answers, bell: writer_bell }, logs)
        })?;
        Ok(Writer { tx, bell, thread: Arc::new(Mutex::new(Some(handle))), stats, recent, unapplied, gate_sink })
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
        self.bell.ring();
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

    /// Waits until every record sealed before this call is in the record file, where readers
    /// see it (see [`super::pending`]); answers at once if all of them already are.
    pub async fn publish(&self) -> Result<(), StoreError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Msg::Publish(reply)).map_err(|_| StoreError::Closed)?;
        self.bell.ring();
        rx.await.map_err(|_| StoreError::Closed)?.map(|_| ())
    }

    /// Waits until everything queued before this call is durable.
    pub async fn flush(&self) -> Result<(), StoreError> {
        self.commit(Vec::new()).await.map(|_| ())
    }

    /// Makes everything queued so far durable, then stops the thread and waits for it; later
    /// sends fail with [`StoreError::Closed`]. Used at shutdown.
    pub async fn stop(&self) {
        let _ = self.tx.send(Msg::Stop);
        self.bell.ring();
        let handle = self.thread.lock().expect("not poisoned").take();
        if let Some(h) = handle {
            let _ = tokio::task::spawn_blocking(move || h.join()).await;
        }
    }
}

/// The writer's files besides redb, as [`super::Embedded::open_with`] names them.
pub(super) struct Files {
    pub journal: PathBuf,
    pub records: PathBuf,
    pub disk: Option<DiskSwitch>,
}

pub(super) fn load_chain(db: &Database, records_path: &Path) -> Result<Chain, StoreError> {
    Ok(match records::last(&db.begin_read()?, records_path)? {
        Some((seq, raw)) => {
            let r: Record = serde_json::from_slice(&raw)?;
            Chain { next_seq: seq + 1, prev_hash: r.hash, last_at_us: at_micros(&r.at), gate_version: 0 }
        }
        None => Chain { next_seq: 1, prev_hash: GENESIS.to_owned(), last_at_us: 0, gate_version: 0 },
    })
}

/// What the writer thread shares with the rest of the process besides its channel.
struct Shared {
    epoch: Arc<AtomicU64>,
    bell: Arc<Doorbell>,
    stats: Arc<WriterStats>,
    clock: crate::clock::Clock,
    answers: Answers,
}

fn run(handle: Arc<DbHandle>, rx: mpsc::Receiver<Msg>, mut chain: Chain, shared: Shared, mut logs: Logs) {
    let Shared { epoch, stats, clock, answers, bell } = shared;
    let mut group: Vec<Batch> = Vec::with_capacity(256);
    let mut stopping = false;
    // Set by a failed commit: redb refuses every later call on that database, so the next
    // transaction first reopens it (see `disk`).
    let mut broken = false;
    while !stopping {
        // With records gathered, wait no longer than until they are due.
        let force = match gather(&rx, &bell, logs.pending.deadline(), &mut group, LINGER) {
            Gathered::Due => {
                publish_alone(&handle, &mut broken, &mut chain, &epoch, &stats, &mut logs, Vec::new());
                continue;
            }
            Gathered::Group { force, stopping: stop } => {
                stopping = stop;
                force
            }
        };
        if group.is_empty() {
            break;
        }
        if force && group.iter().all(|b| b.ops.is_empty()) {
            let replies = group.drain(..).filter_map(|b| b.reply).collect();
            publish_alone(&handle, &mut broken, &mut chain, &epoch, &stats, &mut logs, replies);
            continue;
        }
        if !broken && logs.flusher.failed() {
            // A frame's write failed (its waiters have been told): replay before going on.
            let _ = logs.flusher.drain();
            broke(&mut broken, &epoch, &stats);
        }
        if let Err(e) = settle(&mut logs, false) {
            checkpoint_failed(&e, &mut broken, &epoch, &stats);
        }
        let before = Chain { prev_hash: chain.prev_hash.clone(), ..chain };
        let now = clock.now();
        let mut appended = Vec::new();
        let started = std::time::Instant::now();
        let now_us = now.timestamp_micros().max(0) as u64;
        let result = healthy(&handle, &mut broken, &mut chain, &epoch, &mut logs)
            .and_then(|db| apply(&db, &mut group, &mut chain, now_us, &mut logs, &mut appended));
        let batches = group.len();
        stats.batches.fetch_add(batches as u64, Ordering::Relaxed);
        stats.ops.fetch_add(group.iter().map(|b| b.ops.len() as u64).sum(), Ordering::Relaxed);
        match result {
            Ok((results, frame)) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                let mut answered: Vec<_> =
                    group.drain(..).zip(results).filter_map(|(b, c)| b.reply.map(|r| (r, c))).collect();
                if let Some(frame) = frame {
                    // The frame's thread answers once it is on disk — unless a reader asked to see
                    // the records (they are published below, after it) or the mirror must have
                    // them first: then this thread answers, after both.
                    let later = force || logs.mirror.is_some();
                    let answers = if later { Vec::new() } else { std::mem::take(&mut answered) };
                    let changes = logs.pending.take_group();
                    logs.flusher.submit(Job { frame, changes, answers, batches, started });
                    let done = handle.get().and_then(|db| after_frame(&db, &chain, force, &mut logs));
                    let done = done.and_then(|()| if later { logs.flusher.drain() } else { Ok(()) });
                    if let Err(e) = done {
                        // The frame was handed over: whether it is durable is its thread's to say.
                        tracing::error!(error = %e, "publishing activity records failed; recovery writes them from the journal");
                        broke(&mut broken, &epoch, &stats);
                        fail_all(&mut answered, &e);
                    }
                } else {
                    stats.observe_commit(batches, started.elapsed());
                }
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
                answers.send(answered);
                match handle.get().and_then(|db| start_checkpoint(&db, &chain, &mut logs)) {
                    Ok(started) => {
                        stats.checkpoints.fetch_add(u64::from(started), Ordering::Relaxed);
                    }
                    Err(e) => checkpoint_failed(&e, &mut broken, &epoch, &stats),
                }
            }
            Err(e) => {
                stats.observe_commit(batches, started.elapsed());
                logs.gates.clear();
                tracing::error!(error = %e, batches, "store commit failed");
                chain = before;
                broke(&mut broken, &epoch, &stats);
                let msg = e.to_string();
                for b in group.drain(..) {
                    if let Some(r) = b.reply {
                        let _ = r.send(Err(StoreError::CommitFailed(msg.clone())));
                    }
                }
            }
        }
    }
    if logs.flusher.drain().is_err() {
        broken = true;
    }
    if let Err(e) = settle(&mut logs, true) {
        checkpoint_failed(&e, &mut broken, &epoch, &stats);
    }
    // redb makes its last (journalled, not yet durable) commit durable when it closes cleanly;
    // the records that commit vouches for must be on disk before that.
    if let Err(e) = logs.records.sync() {
        tracing::error!(error = %e, "could not sync the activity record file at stop");
    }
    // The gathered records and the held index entries, so the next start need not write or read
    // those records again.
    if !broken && (!logs.pending.is_empty() || !logs.recent.is_empty()) {
        let flushed = handle.get().and_then(|db| {
            let tx = db.begin_write()?;
            let applied = logs.journal.next_frame() - 1;
            logs.pending.publish(&tx, &mut logs.records, chain.next_seq, applied)?;
            logs.records.sync()?;
            logs.recent.write_into(&tx, &[])?;
            tx.commit()?;
            logs.pending.published(applied);
            Ok(())
        });
        if let Err(e) = flushed {
            tracing::warn!(error = %e, "could not publish the last records or write the filter index at stop; the next start does it");
        }
    }
    tracing::debug!("store writer stopped");
}

/// Turns every answer of a group into the failure `e` (its frame may be durable, but what the
/// caller waited for — a publication, the mirror — did not happen).
fn fail_all(answered: &mut [(Reply, Result<Committed, StoreError>)], e: &StoreError) {
    for (_, result) in answered.iter_mut() {
        *result = Err(StoreError::CommitFailed(e.to_string()));
    }
}

/// A checkpoint failed to start or to commit on its thread: the groups it covered are answered
/// and durable in the journal, so nobody is told; the next transaction reopens the database and
/// replays the journal ([`healthy`]).
fn checkpoint_failed(e: &StoreError, broken: &mut bool, epoch: &AtomicU64, stats: &WriterStats) {
    tracing::error!(error = %e, "checkpoint failed; the journal is replayed before the next transaction");
    broke(broken, epoch, stats);
}

impl Op {
    /// Can this op go through the journal? (The download path's ops; anything else — admin
    /// changes, arbitrary transactions — is committed durably by redb itself.)
    pub(super) fn is_hot(&self) -> bool {
        matches!(self, Op::Reserve { .. } | Op::Refund { .. } | Op::Append(_) | Op::AppendBody { .. })
    }

    /// Appends `entry`, serialized here rather than on the writer thread: the download path's
    /// records are made on the request's worker, so the writer — one thread for every download —
    /// only adds `seq`, `at` and the hashes, and frees one buffer instead of the entry's strings.
    pub fn append(entry: Entry) -> Op {
        Op::AppendBody { tags: index::tags_of(&entry), body: entry.body() }
    }
}
