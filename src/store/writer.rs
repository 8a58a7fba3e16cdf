//! The single writer: one OS thread owns every redb write transaction and commits in groups.
//!
//! Senders put a [`Batch`] (ops plus an optional reply slot) on an unbounded FIFO channel; the
//! send is synchronous and never blocks, so callers may send while holding a short lock (the
//! ledger relies on this to keep memory's order and the channel's order the same). The thread
//! blocks for the first batch, then takes whatever else is already waiting, up to [`MAX_BATCH`],
//! applies all of it in one transaction and commits durably. Only after the commit returns does it
//! answer the reply slots — so "replied `Ok`" means "on disk". Under load many requests share one
//! fsync; when idle a lone request pays one commit.
//!
//! Activity records are sealed here, in apply order: the writer assigns `seq` (gap-free), `at`
//! (never decreasing) and the hash chain. If a commit fails, the chain position is rolled back to
//! the last durable record, every reply in the group gets the error, and the store epoch is
//! bumped so caches reload from disk.

use super::{FileRecord, LinkRecord, OrderGate, StoreError, ACTIVITY, ACTIVITY_AT, FILES, GATES, LINKS, SPENT};
use crate::activity::{Entry, Record, GENESIS};
use crate::token::LinkId;
use redb::{Database, ReadableDatabase, ReadableTable};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// The most batches one transaction takes.
pub const MAX_BATCH: usize = 4096;

/// One change to apply.
#[derive(Debug)]
pub enum Op {
    /// `spent += bytes` for a link (a reservation).
    Reserve {
        link: LinkId,
        bytes: u64,
    },
    /// `spent -= bytes` (a refund of bytes reserved but not sent).
    Refund {
        link: LinkId,
        bytes: u64,
    },
    /// A new link, with `spent = 0`.
    PutLink(LinkRecord),
    PutFile(FileRecord),
    /// Records a file's SHA-256 once computed (a no-op if the file is gone or changed size).
    SetFileSha {
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
}

/// What a durable batch reports back.
#[derive(Debug, Clone, Copy, Default)]
pub struct Committed {
    /// `seq` of the last record this batch appended, if any.
    pub last_seq: Option<u64>,
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
}

struct Chain {
    next_seq: u64,
    prev_hash: String,
    last_at_us: u64,
}

impl Writer {
    pub(super) fn start(db: Arc<Database>, epoch: Arc<AtomicU64>) -> Result<Writer, StoreError> {
        let chain = load_chain(&db)?;
        let (tx, rx) = mpsc::unbounded_channel();
        let stats = Arc::new(WriterStats::default());
        let st = stats.clone();
        let handle =
            std::thread::Builder::new().name("keydrop-writer".into()).spawn(move || run(db, rx, chain, epoch, st))?;
        Ok(Writer { tx, thread: Arc::new(Mutex::new(Some(handle))), stats })
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

fn load_chain(db: &Database) -> Result<Chain, StoreError> {
    let tx = db.begin_read()?;
    let t = tx.open_table(ACTIVITY)?;
    let last = t.last()?.map(|(k, v)| (k.value(), v.value().to_vec()));
    Ok(match last {
        Some((seq, raw)) => {
            let r: Record = serde_json::from_slice(&raw)?;
            Chain { next_seq: seq + 1, prev_hash: r.hash, last_at_us: at_micros(&r.at) }
        }
        None => Chain { next_seq: 1, prev_hash: GENESIS.to_owned(), last_at_us: 0 },
    })
}

fn at_micros(at: &str) -> u64 {
    chrono::DateTime::parse_from_rfc3339(at).map_or(0, |t| t.timestamp_micros().max(0) as u64)
}

fn format_micros(us: u64) -> String {
    let t = chrono::DateTime::from_timestamp_micros(us as i64).unwrap_or_default();
    t.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn run(
    db: Arc<Database>,
    mut rx: mpsc::UnboundedReceiver<Msg>,
    mut chain: Chain,
    epoch: Arc<AtomicU64>,
    stats: Arc<WriterStats>,
) {
    let mut group: Vec<Batch> = Vec::with_capacity(256);
    let mut stopping = false;
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
        let before =
            Chain { next_seq: chain.next_seq, prev_hash: chain.prev_hash.clone(), last_at_us: chain.last_at_us };
        let result = apply(&db, &group, &mut chain);
        stats.batches.fetch_add(group.len() as u64, Ordering::Relaxed);
        stats.ops.fetch_add(group.iter().map(|b| b.ops.len() as u64).sum(), Ordering::Relaxed);
        match result {
            Ok(last_seqs) => {
                stats.commits.fetch_add(1, Ordering::Relaxed);
                for (b, last_seq) in group.drain(..).zip(last_seqs) {
                    if let Some(r) = b.reply {
                        let _ = r.send(Ok(Committed { last_seq }));
                    }
                }
            }
            Err(e) => {
                stats.failed_commits.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, batches = group.len(), "store commit failed");
                chain = before;
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
    tracing::debug!("store writer stopped");
}

/// Applies a group in one transaction; returns each batch's last appended `seq`.
fn apply(db: &Database, group: &[Batch], chain: &mut Chain) -> Result<Vec<Option<u64>>, StoreError> {
    let tx = db.begin_write()?;
    let mut last_seqs = Vec::with_capacity(group.len());
    {
        let mut links = tx.open_table(LINKS)?;
        let mut spent = tx.open_table(SPENT)?;
        let mut files = tx.open_table(FILES)?;
        let mut gates = tx.open_table(GATES)?;
        let mut activity = tx.open_table(ACTIVITY)?;
        let mut activity_at = tx.open_table(ACTIVITY_AT)?;
        let now_us = chrono::Utc::now().timestamp_micros().max(0) as u64;
        for b in group {
            let mut last = None;
            for op in &b.ops {
                match op {
                    Op::Reserve { link, bytes } => {
                        let cur = spent.get(link.as_slice())?.map_or(0, |v| v.value());
                        spent.insert(link.as_slice(), cur.saturating_add(*bytes))?;
                    }
                    Op::Refund { link, bytes } => {
                        let cur = spent.get(link.as_slice())?.map_or(0, |v| v.value());
                        spent.insert(link.as_slice(), cur.saturating_sub(*bytes))?;
                    }
                    Op::PutLink(rec) => {
                        let id = hex::decode(&rec.link_id).map_err(|e| StoreError::CommitFailed(e.to_string()))?;
                        links.insert(id.as_slice(), serde_json::to_vec(rec)?.as_slice())?;
                        spent.insert(id.as_slice(), 0)?;
                    }
                    Op::PutFile(rec) => {
                        files.insert(rec.file_id.as_str(), serde_json::to_vec(rec)?.as_slice())?;
                    }
                    Op::SetFileSha { file_id, size, sha256 } => {
                        let existing: Option<FileRecord> =
                            files.get(file_id.as_str())?.map(|v| serde_json::from_slice(v.value())).transpose()?;
                        if let Some(mut rec) = existing.filter(|r| r.size == *size) {
                            rec.sha256 = Some(sha256.clone());
                            files.insert(file_id.as_str(), serde_json::to_vec(&rec)?.as_slice())?;
                        }
                    }
                    Op::PutGate { order_id, gate } => {
                        gates.insert(order_id.as_str(), serde_json::to_vec(gate)?.as_slice())?;
                    }
                    Op::Append(entry) => {
                        let at_us = now_us.max(chain.last_at_us);
                        let seq = chain.next_seq;
                        let rec = Record::seal(entry.clone(), seq, format_micros(at_us), &chain.prev_hash);
                        activity.insert(seq, serde_json::to_vec(&rec)?.as_slice())?;
                        activity_at.insert((at_us, seq), ())?;
                        chain.next_seq += 1;
                        chain.prev_hash = rec.hash;
                        chain.last_at_us = at_us;
                        last = Some(seq);
                    }
                }
            }
            last_seqs.push(last);
        }
    }
    tx.commit()?;
    Ok(last_seqs)
}
