//! Journal frames written on a thread of their own, so the writer seals the next group meanwhile.
//!
//! A journalled group is durable once its frame is on disk ([`super::journal`]); that write — one
//! `O_DIRECT | O_DSYNC` round trip to the device — used to hold the writer, and with it every
//! request queued behind the group, while the request workers had nothing left to do. Now the
//! writer only seals a group ([`super::journal::Journal::seal`]) and hands its frame here, with the
//! group's counter changes and reply slots, then gathers the next group. This thread takes every
//! frame queued, writes each run of frames that lie end to end in one write, and only once that
//! write has returned adds the groups' counter changes to [`Unapplied`] (so readers see them) and
//! answers their waiters, in group order — so "answered `Ok`" still means "on disk".
//!
//! What must not run ahead of the disk waits for it: the writer [`Flusher::drain`]s before it
//! publishes records (readers must never see one a crash could take back), before a durable redb
//! commit or a checkpoint (redb's `journal_applied` must not cover a frame that is not written),
//! before reading the journal back after a failure, and at stop.
//!
//! If a write fails, its groups and every group queued after it fail — their waiters are answered
//! with the error, nothing of theirs is written (a frame written after a missing one would never
//! be replayed) — and the store epoch is bumped first, so caches reload. The writer notices at its
//! next drain (or sooner, [`Flusher::failed`]), replays the journal as after any failed commit
//! ([`super::commit::healthy`]), and then [`Flusher::reset`]s this thread.

use super::answers::{Answered, Answers};
use super::disk::DiskSwitch;
use super::journal::{aligned_window, Sealed, Side};
use super::unapplied::Unapplied;
use super::{SpentKey, StoreError};
use crate::store::stats::WriterStats;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Instant;

/// A sealed group on its way to disk.
pub(super) struct Job {
    pub(super) frame: Sealed,
    /// Its counter changes: readers see them once the frame is durable.
    pub(super) changes: Vec<(SpentKey, i64)>,
    /// Its waiters, answered once the frame is durable (empty if the writer answers them).
    pub(super) answers: Answered,
    /// How many batches it holds, and when the writer began applying it (the commit histogram).
    pub(super) batches: usize,
    pub(super) started: Instant,
}

/// The writer's handle on the frames' thread.
pub(super) struct Flusher {
    tx: Option<mpsc::Sender<Job>>,
    shared: Arc<Shared>,
    /// Jobs handed over so far (only the writer hands over).
    submitted: u64,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// What the thread reports: how many jobs it has finished, and the first write error since the
/// last reset.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Default)]
struct State {
    finished: u64,
    failed: Option<String>,
}

/// What the thread needs besides its jobs.
pub(super) struct Context {
    pub(super) sides: [Side; 2],
    pub(super) switch: Option<DiskSwitch>,
    pub(super) unapplied: Arc<Unapplied>,
    pub(super) answers: Answers,
    pub(super) epoch: Arc<AtomicU64>,
    pub(super) stats: Arc<WriterStats>,
}

impl Flusher {
    pub(super) fn start(cx: Context) -> std::io::Result<Flusher> {
        let (tx, rx) = mpsc::channel();
        let shared = Arc::new(Shared::default());
        let theirs = shared.clone();
        let thread = std::thread::Builder::new().name("keydrop-journal".into()).spawn(move || run(rx, cx, &theirs))?;
        Ok(Flusher { tx: Some(tx), shared, submitted: 0, thread: Some(thread) })
    }

    /// Hands a sealed group over. Never blocks.
    pub(super) fn submit(&mut self, job: Job) {
        self.submitted += 1;
        if let Some(tx) = &self.tx {
            if let Err(unsent) = tx.send(job) {
                // The thread is gone (it panicked): nothing of this group can become durable.
                let msg = "the journal's thread has stopped".to_owned();
                fail(unsent.0.answers, &msg);
                let mut g = self.shared.state.lock().expect("not poisoned");
                g.failed.get_or_insert(msg);
                g.finished += 1;
            }
        }
    }

    /// Waits until every frame handed over has been written or has failed; `Err` if a write
    /// failed since the last [`Flusher::reset`].
    pub(super) fn drain(&self) -> Result<(), StoreError> {
        let mut g = self.shared.state.lock().expect("not poisoned");
        while g.finished < self.submitted && !self.thread.as_ref().is_some_and(|t| t.is_finished()) {
            g = self.shared.done.wait(g).expect("not poisoned");
        }
        match &g.failed {
            None if g.finished >= self.submitted => Ok(()),
            None => Err(StoreError::CommitFailed("the journal's thread has stopped".into())),
            Some(m) => Err(StoreError::CommitFailed(m.clone())),
        }
    }

    /// Has a write failed since the last reset? (Cheap: the writer asks once per group.)
    pub(super) fn failed(&self) -> bool {
        self.shared.state.lock().expect("not poisoned").failed.is_some()
    }

    /// After the journal has been read back and restarted: frames may be written again. Call only
    /// after [`Flusher::drain`].
    pub(super) fn reset(&self) {
        self.shared.state.lock().expect("not poisoned").failed = None;
    }
}

impl Drop for Flusher {
    fn drop(&mut self) {
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn run(rx: mpsc::Receiver<Job>, mut cx: Context, shared: &Shared) {
    let mut buf = Vec::new();
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        jobs.extend(rx.try_iter());
        let failed = shared.state.lock().expect("not poisoned").failed.clone();
        let result = match failed {
            Some(m) => Err(m),
            None => write(&mut cx, &mut jobs, &mut buf).map_err(|e| e.to_string()),
        };
        let n = jobs.len() as u64;
        match result {
            Ok(()) => {
                for job in jobs {
                    cx.unapplied.add(&job.changes);
                    cx.stats.observe_commit(job.batches, job.started.elapsed());
                    cx.answers.send(job.answers);
                }
            }
            Err(msg) => {
                let first = shared.state.lock().expect("not poisoned").failed.replace(msg.clone()).is_none();
                if first {
                    tracing::error!(error = %msg, groups = n, "journal write failed; the journal is replayed before the next transaction");
                    cx.epoch.fetch_add(1, Ordering::AcqRel);
                }
                for job in jobs {
                    fail(job.answers, &msg);
                }
            }
        }
        shared.state.lock().expect("not poisoned").finished += n;
        shared.done.notify_all();
    }
}

/// Writes the jobs' frames in order, each run of frames that lie end to end in the same file
/// in one write (copied together into `buf`).
fn write(cx: &mut Context, jobs: &mut [Job], buf: &mut Vec<u8>) -> std::io::Result<()> {
    if let Some(s) = &cx.switch {
        s.check()?;
    }
    let mut i = 0;
    while i < jobs.len() {
        let mut j = i + 1;
        while j < jobs.len()
            && jobs[j].frame.side == jobs[i].frame.side
            && jobs[j].frame.offset == jobs[j - 1].frame.end()
        {
            j += 1;
        }
        let (side, offset) = (jobs[i].frame.side, jobs[i].frame.offset);
        if j == i + 1 {
            cx.sides[side].write(offset, jobs[i].frame.bytes())?;
        } else {
            let out = aligned_window(buf, (jobs[j - 1].frame.end() - offset) as usize);
            let mut at = 0;
            for job in &mut jobs[i..j] {
                let bytes = job.frame.bytes();
                out[at..at + bytes.len()].copy_from_slice(bytes);
                at += bytes.len();
            }
            cx.sides[side].write(offset, out)?;
        }
        i = j;
    }
    Ok(())
}

/// Answers a group's waiters with a failed write.
fn fail(answers: Answered, msg: &str) {
    for (reply, _) in answers {
        let _ = reply.send(Err(StoreError::CommitFailed(msg.to_owned())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::embedded::journal::{read_file, FrameBuf, Journal};
    use tokio::sync::oneshot;

    type Reply = oneshot::Receiver<Result<super::super::writer::Committed, StoreError>>;

    /// A journal ready for frames and its thread, as the writer starts them.
    fn started(path: &std::path::Path, switch: DiskSwitch) -> (Journal, Flusher, Arc<Unapplied>) {
        let mut journal = Journal::open(path, Some(switch.clone())).unwrap();
        journal.restart(0);
        let unapplied = Arc::new(Unapplied::default());
        let flusher = Flusher::start(Context {
            sides: journal.writers().unwrap(),
            switch: Some(switch),
            unapplied: unapplied.clone(),
            answers: Answers::start(),
            epoch: Arc::default(),
            stats: Arc::default(),
        })
        .unwrap();
        (journal, flusher, unapplied)
    }

    /// Seals a group of one reservation of `i` (and a record) and hands it over with one waiter.
    fn submit(journal: &mut Journal, flusher: &mut Flusher, i: u8) -> Reply {
        let mut payload = FrameBuf::default();
        payload.reserve(&[i; 24], 10);
        payload.record(u64::from(i), 1_000, &vec![b'x'; 300 * usize::from(i)]);
        let frame = journal.seal(&payload).unwrap();
        let (reply, rx) = oneshot::channel();
        let answers = vec![(reply, Ok(Default::default()))];
        flusher.submit(Job { frame, changes: vec![([i; 24], 10)], answers, batches: 1, started: Instant::now() });
        rx
    }

    fn numbers(path: &std::path::Path) -> Vec<u64> {
        read_file(path).unwrap().iter().map(|f| f.number).collect()
    }

    #[test]
    fn frames_handed_over_together_are_written_in_order_and_answered_once_durable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.wal");
        let (mut journal, mut flusher, unapplied) = started(&path, DiskSwitch::default());
        // Handed over faster than one write takes: most queue behind the first and go down in
        // one write, copied together.
        let mut replies: Vec<Reply> = (1..=40).map(|i| submit(&mut journal, &mut flusher, i)).collect();
        flusher.drain().unwrap();
        assert_eq!(numbers(&path), (1..=40).collect::<Vec<_>>(), "every frame intact, in order");
        for r in &mut replies {
            assert!(matches!(r.try_recv(), Ok(Ok(_))), "answered Ok once on disk");
        }
        assert!(!unapplied.is_empty(), "their counter changes are visible to readers");
    }

    #[test]
    fn a_failed_write_fails_its_group_and_every_group_behind_it_until_reset() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal.wal");
        let switch = DiskSwitch::default();
        let (mut journal, mut flusher, unapplied) = started(&path, switch.clone());
        let mut first = submit(&mut journal, &mut flusher, 1);
        flusher.drain().unwrap();
        assert!(matches!(first.try_recv(), Ok(Ok(_))));
        unapplied.rebase(1);

        switch.set_full(true);
        let mut failed = submit(&mut journal, &mut flusher, 2);
        assert!(flusher.drain().is_err());
        assert!(flusher.failed());
        switch.set_full(false);
        // The disk is back, but a frame after a missing one would never be replayed: it fails too.
        let mut behind = submit(&mut journal, &mut flusher, 3);
        assert!(flusher.drain().is_err());
        for r in [&mut failed, &mut behind] {
            assert!(matches!(r.try_recv(), Ok(Err(StoreError::CommitFailed(_)))), "told it failed");
        }
        assert_eq!(numbers(&path), vec![1], "nothing of the failed groups is on disk");
        assert!(unapplied.is_empty(), "nor are their counter changes visible");

        // What the writer does after replaying: the journal starts over, frames go down again.
        journal.restart(1);
        flusher.reset();
        let mut again = submit(&mut journal, &mut flusher, 4);
        flusher.drain().unwrap();
        assert!(matches!(again.try_recv(), Ok(Ok(_))));
        assert_eq!(numbers(&path).last(), Some(&4));
    }
}
