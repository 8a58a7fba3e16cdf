//! A checkpoint's durable commit on a thread of its own, while the writer goes on journalling.
//!
//! Once the journal passes [`super::journal::CHECKPOINT_AT`], redb is made to hold everything
//! journalled so far in a durable commit, so that the journal can start over. That commit (the
//! record file's fsync, then redb's page writes and fsync) took milliseconds, and every request
//! queued behind it waited for all of it: it set the 4 KiB tail. So the writer only *prepares* the
//! checkpoint — publishes what is gathered into a write transaction, seals the counter changes it
//! covers ([`super::unapplied`]), switches the journal to its other file
//! ([`super::journal::Journal::switch`]) — and hands the transaction to a thread that commits it.
//! Meanwhile journalled groups go on (their frames in the other file, their changes kept apart);
//! only what needs redb's write lock — a publication, an admin change, another checkpoint — waits
//! for the commit to end ([`InFlight::finish`] with `wait`). The writer then settles it: the
//! sealed changes, the synced length of the record file and the index entries it wrote are
//! dropped from memory. The filter index's entries, when due, are written into the transaction
//! here too, not on the writer ([`super::index::Recent::take_flush`]).
//!
//! If the commit fails, the journal still holds every frame it covered (the switch never writes
//! over a file whose frames redb lacks), so the writer treats it as any failed commit: it reopens
//! the database and replays both files ([`super::commit::healthy`]).

use super::index::Flush;
use super::records::RecordSync;
use super::StoreError;
use std::thread::JoinHandle;

/// What a checkpoint's commit, once it succeeds, lets the writer forget.
#[derive(Debug, Clone, Copy)]
pub(super) struct Covers {
    /// The last journal frame whose changes it holds.
    pub(super) applied: u64,
    /// How much of the record file it synced.
    pub(super) records_len: u64,
    /// Whether it wrote the filter index entries held when it started.
    pub(super) index: bool,
}

/// The checkpoint whose commit is running, if one is.
#[derive(Default)]
pub(super) struct InFlight {
    job: Option<(Covers, JoinHandle<Result<(), StoreError>>)>,
}

impl InFlight {
    pub(super) fn is_idle(&self) -> bool {
        self.job.is_none()
    }

    /// Commits `tx` durably on a new thread — with `index`'s entries written into it first —
    /// after syncing the record file: redb's durable end must never cover bytes that are not on
    /// disk. Call only when idle.
    pub(super) fn start(
        &mut self,
        tx: redb::WriteTransaction,
        records: RecordSync,
        index: Option<Flush>,
        covers: Covers,
    ) -> Result<(), StoreError> {
        debug_assert!(self.is_idle());
        let handle = std::thread::Builder::new().name("keydrop-checkpoint".into()).spawn(move || {
            if let Some(f) = index {
                f.write(&tx)?;
            }
            records.sync()?;
            tx.commit()?;
            Ok(())
        })?;
        self.job = Some((covers, handle));
        Ok(())
    }

    /// The running checkpoint's outcome once it has ended — at once if `wait` is false and it
    /// has not — or `None` if none runs.
    pub(super) fn finish(&mut self, wait: bool) -> Option<Result<Covers, StoreError>> {
        if !wait && self.job.as_ref().is_some_and(|(_, h)| !h.is_finished()) {
            return None;
        }
        let (covers, handle) = self.job.take()?;
        Some(match handle.join() {
            Ok(Ok(())) => Ok(covers),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(StoreError::Bug("the checkpoint thread panicked".into())),
        })
    }
}
