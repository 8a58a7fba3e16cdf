//! How a gathered group becomes durable: journalled, or a durable redb commit (a checkpoint).
//!
//! [`apply`] runs a group's batches. A group made only of the download path's ops is journalled:
//! one frame written and fsynced ([`super::journal`]); its records, counter changes and time
//! index entries reach redb when they are published, in a commit without an fsync, every few
//! groups ([`super::pending`], [`super::unapplied`]). Once the journal passes [`CHECKPOINT_AT`],
//! [`start_checkpoint`] hands a durable commit of all of it to another thread
//! ([`super::checkpointer`]) and the journal goes on in its other file; [`settle`] takes the
//! outcome. Any other group — and a journalled one whose frame no longer fits — runs in one redb
//! transaction committed durably on the writer, after the record file is fsynced, and the journal
//! starts over. [`publish_alone`] makes gathered records visible when nothing else is queued;
//! [`healthy`] reopens the database after a failed commit.

use super::checkpointer::{Covers, InFlight};
use super::disk::DbHandle;
use super::flusher::Flusher;
use super::index::{self, Tags};
use super::journal::{FrameBuf, Journal, Sealed, CHECKPOINT_AT};
use super::mirror::Mirror;
use super::pending::Pending;
use super::records::RecordFile;
use super::recover::recover;
use super::writer::{load_chain, Batch, Chain, Committed, Op, Reply, Tx};
use super::{OrderGate, StoreError, KV_TABLES, LINKS, SPENT};
use crate::store::stats::WriterStats;
use crate::store::GateSink;
use redb::{Database, TableDefinition};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The writer's files besides redb: the journal (and the frame buffer it is written from), the
/// record file (and the records not yet written to it), and the optional JSON Lines mirror.
pub(super) struct Logs {
    pub(super) mirror: Option<Mirror>,
    pub(super) journal: Journal,
    pub(super) frame: FrameBuf,
    pub(super) records: RecordFile,
    pub(super) pending: Pending,
    /// The group's filter index entries, and those the index table does not hold yet.
    pub(super) group_ix: Vec<(Tags, u64, u64)>,
    pub(super) recent: index::Recent,
    /// The group's gate changes, and who hears of them once committed.
    pub(super) gates: Vec<(String, OrderGate, u64)>,
    pub(super) gate_sink: Arc<std::sync::OnceLock<std::sync::Weak<dyn GateSink>>>,
    /// The checkpoint committing on another thread, if one is.
    pub(super) inflight: InFlight,
    /// The thread that writes sealed journal frames.
    pub(super) flusher: Flusher,
}

/// A transaction that only publishes the gathered records (see [`super::pending`]): when they
/// are due and no work came, or when readers asked and nothing else was queued. Not durable in
/// redb and not journalled: what it makes visible is already durable in the journal. Answers
/// `replies` once it is visible.
pub(super) fn publish_alone(
    handle: &DbHandle,
    broken: &mut bool,
    chain: &mut Chain,
    epoch: &AtomicU64,
    stats: &WriterStats,
    logs: &mut Logs,
    replies: Vec<Reply>,
) {
    // Nothing is published before its frame is on disk.
    let drained = logs.flusher.drain();
    if drained.is_ok() && logs.pending.is_empty() {
        for r in replies {
            let _ = r.send(Ok(Committed::default()));
        }
        return;
    }
    let result = drained
        .and_then(|()| settle(logs, true))
        .and_then(|()| healthy(handle, broken, chain, epoch, logs))
        .and_then(|db| publish(&db, chain, logs));
    if let Err(e) = &result {
        tracing::error!(error = %e, "publishing activity records failed; recovery writes them from the journal");
        broke(broken, epoch, stats);
    }
    let msg = result.err().map(|e| e.to_string());
    for r in replies {
        let _ = r.send(match &msg {
            None => Ok(Committed::default()),
            Some(m) => Err(StoreError::CommitFailed(m.clone())),
        });
    }
}

/// After a failed commit (the caller logs why): counts it, marks the database broken — the next
/// transaction reopens it and replays the journal ([`healthy`]) — and bumps the store epoch, so
/// caches reload from disk.
pub(super) fn broke(broken: &mut bool, epoch: &AtomicU64, stats: &WriterStats) {
    stats.failed_commits.fetch_add(1, Ordering::Relaxed);
    stats.metrics.failed_commits.inc();
    *broken = true;
    epoch.fetch_add(1, Ordering::AcqRel);
}

/// The database to write to; after a failed commit, reopens it first and reloads the chain
/// position from what is durable.
pub(super) fn healthy(
    handle: &DbHandle,
    broken: &mut bool,
    chain: &mut Chain,
    epoch: &AtomicU64,
    logs: &mut Logs,
) -> Result<Arc<Database>, StoreError> {
    if *broken {
        // Whatever a checkpoint still committing did, recovery redoes from the journal; and no
        // frame may still be on its way while the journal is read back.
        let _ = logs.inflight.finish(true);
        let _ = logs.flusher.drain();
        // Recovery writes them from the journal.
        logs.pending.clear();
        handle.reopen()?;
        let db = handle.get()?;
        let frames = logs.journal.read_back()?;
        let applied = recover(&db, &frames, &mut logs.records)?;
        logs.journal.restart(applied);
        logs.flusher.reset();
        logs.pending.published(applied);
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

/// What each batch of an applied group reports, and a journalled group's sealed frame.
pub(super) type Applied = (Vec<Result<Committed, StoreError>>, Option<Sealed>);

/// Applies a group; returns what each batch reports, and — for a journalled group — its sealed
/// frame, which the caller hands to [`super::flusher`] and then calls [`after_frame`].
///
/// A group made only of download ops ([`Op::is_hot`]) is journalled: its frame is sealed here and
/// written by another thread, and redb sees nothing of it until the records are due for
/// publication (see [`super::pending`]) — its counter changes wait in [`super::unapplied`], where
/// readers add them once the frame is durable. Any other group, or one whose frame would not fit,
/// is a durable redb commit (once every frame handed over is written and a checkpoint committing
/// on another thread has ended) — which also makes every earlier journalled group durable in
/// redb, so the journal starts over after it.
pub(super) fn apply(
    db: &Database,
    group: &mut [Batch],
    chain: &mut Chain,
    now_us: u64,
    logs: &mut Logs,
    appended: &mut Vec<(u64, Vec<u8>)>,
) -> Result<Applied, StoreError> {
    let hot = group.iter().all(|b| b.ops.iter().all(Op::is_hot));
    logs.frame.clear();
    logs.pending.start_group(chain.next_seq);
    logs.group_ix.clear();
    if !hot {
        logs.flusher.drain()?;
        settle(logs, true)?;
        let tx = db.begin_write()?;
        let results = run_group(Some(&tx), group, chain, now_us, logs, appended)?;
        checkpoint(tx, chain, logs)?;
        return Ok((results, None));
    }
    let results = run_group(None, group, chain, now_us, logs, appended)?;
    if !logs.journal.fits(logs.frame.frame_len()) {
        logs.flusher.drain()?;
        settle(logs, true)?;
        checkpoint(db.begin_write()?, chain, logs)?;
        return Ok((results, None));
    }
    let frame = logs.journal.seal(&logs.frame)?;
    Ok((results, Some(frame)))
}

/// After a journalled group's frame was handed over: publishes what is gathered if a reader
/// asked (`force`) or it is due — once every frame is on disk: a reader never sees what a crash
/// could take back — and keeps the group's index entries and the clock of what it left.
pub(super) fn after_frame(db: &Database, chain: &Chain, force: bool, logs: &mut Logs) -> Result<(), StoreError> {
    let at = std::time::Instant::now();
    // A reader waits for a checkpoint's commit to end; gathered records do not (they are due
    // again in the next group after it).
    if force || (logs.pending.due(at) && logs.inflight.is_idle()) {
        logs.flusher.drain()?;
        settle(logs, true)?;
        publish(db, chain, logs)?;
    }
    logs.recent.add(&logs.group_ix);
    logs.pending.committed(at);
    Ok(())
}

/// After a journalled group was answered: once the journal is past [`CHECKPOINT_AT`] and no
/// checkpoint is committing, publishes everything gathered into a transaction, hands it to
/// another thread for its durable commit — with the filter index entries, when due, for that
/// thread to write — and switches the journal to its other file (see [`super::checkpointer`]).
/// Says whether it started one.
pub(super) fn start_checkpoint(db: &Database, chain: &Chain, logs: &mut Logs) -> Result<bool, StoreError> {
    if logs.journal.offset() < CHECKPOINT_AT || !logs.inflight.is_idle() {
        return Ok(false);
    }
    // The checkpoint covers every frame sealed so far: each must be on disk first.
    logs.flusher.drain()?;
    let tx = db.begin_write()?;
    let applied = logs.journal.next_frame() - 1;
    logs.pending.publish(&tx, &mut logs.records, chain.next_seq, applied)?;
    let index = logs.recent.due().then(|| logs.recent.take_flush());
    let records = logs.records.syncer()?;
    let covers = Covers { applied, records_len: records.len, index: index.is_some() };
    logs.inflight.start(tx, records, index, covers)?;
    logs.pending.seal(applied);
    logs.journal.switch();
    Ok(true)
}

/// Takes the outcome of the checkpoint committing on another thread, if it has ended — or, with
/// `wait`, once it has — and forgets what it made durable. An `Err` is a failed commit: the
/// caller marks the database broken, and recovery replays the journal.
pub(super) fn settle(logs: &mut Logs, wait: bool) -> Result<(), StoreError> {
    match logs.inflight.finish(wait) {
        None => Ok(()),
        Some(Ok(covers)) => {
            tracing::debug!(applied = covers.applied, "checkpoint committed");
            logs.pending.settled();
            logs.records.synced_to(covers.records_len);
            if covers.index {
                logs.recent.flushed();
            }
            Ok(())
        }
        Some(Err(e)) => Err(e),
    }
}

/// Publishes what journalled groups left (records, counter changes, time index entries) in a
/// redb commit without an fsync: every frame it covers is durable in the journal already.
fn publish(db: &Database, chain: &Chain, logs: &mut Logs) -> Result<(), StoreError> {
    let mut tx = db.begin_write()?;
    let applied = logs.journal.next_frame() - 1;
    logs.pending.publish(&tx, &mut logs.records, chain.next_seq, applied)?;
    tx.set_durability(redb::Durability::None).map_err(|e| StoreError::Bug(e.to_string()))?;
    tx.commit()?;
    logs.pending.published(applied);
    Ok(())
}

/// Runs a group's batches: in `tx` (a durable commit's, with every table open), or — a journalled
/// group, `None` — into its journal frame and [`super::pending`] only.
fn run_group(
    tx: Option<&redb::WriteTransaction>,
    group: &mut [Batch],
    chain: &mut Chain,
    now_us: u64,
    logs: &mut Logs,
    appended: &mut Vec<(u64, Vec<u8>)>,
) -> Result<Vec<Result<Committed, StoreError>>, StoreError> {
    let hot = tx.is_none();
    let mut results = Vec::with_capacity(group.len());
    let mut links = tx.map(|t| t.open_table(LINKS)).transpose()?;
    let mut spent = tx.map(|t| t.open_table(SPENT)).transpose()?;
    let mut kv = BTreeMap::new();
    if let Some(tx) = tx {
        for name in KV_TABLES {
            kv.insert(name, tx.open_table(TableDefinition::<&str, &[u8]>::new(name))?);
        }
    }
    let keep = logs.mirror.is_some();
    let (records, changes) = logs.pending.parts();
    let mut t = Tx {
        links: links.as_mut(),
        spent: spent.as_mut(),
        kv: &mut kv,
        records,
        changes,
        ix: &mut logs.group_ix,
        gates: &mut logs.gates,
        base_offset: logs.records.len(),
        chain,
        now_us,
        last_seq: None,
        appended: keep.then_some(appended),
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
    Ok(results)
}

/// Commits `tx` durably with everything gathered (a checkpoint): redb then holds every frame
/// written so far, and the journal starts over.
fn checkpoint(tx: redb::WriteTransaction, chain: &Chain, logs: &mut Logs) -> Result<(), StoreError> {
    let applied = logs.journal.next_frame() - 1;
    logs.pending.publish(&tx, &mut logs.records, chain.next_seq, applied)?;
    let flush = logs.recent.due();
    if flush {
        logs.recent.write_into(&tx, &logs.group_ix)?;
    }
    // Records first: redb's durable end must never cover bytes that are not on disk.
    logs.records.sync()?;
    tx.commit()?;
    logs.pending.published(applied);
    if flush {
        logs.recent.clear();
    } else {
        logs.recent.add(&logs.group_ix);
    }
    logs.journal.restart(applied);
    Ok(())
}
