//! Records sealed by the writer and durable in the journal, not yet written to the record file.
//!
//! A journalled group's records are on disk once its journal frame is (see [`super::journal`]);
//! writing them to the record file too, in every group, was a second device round trip per
//! group commit on the writer's thread. So the writer gathers them here and *publishes* them — one
//! append to the record file and the new [`records::End`] in that group's transaction — only
//! when one of these comes first:
//!
//! - [`PUBLISH_BYTES`] have gathered, or the oldest of them has waited [`PUBLISH_AFTER`] (the
//!   writer also wakes for that when no work comes);
//! - a reader asks ([`super::writer::Writer::publish`]): every read of the activity log through
//!   the store first publishes what was sealed before it, so an audit sees every record whose
//!   request was answered;
//! - the group is a durable redb commit (a checkpoint, an admin change) — redb's durable `End`
//!   then covers every record, which is what lets the journal start over — or the writer stops.
//!
//! Until published, a record is invisible to readers of the file (they stop at the `End` their
//! read transaction sees) but not lost: a crash or a failed commit loses only redb's non-durable
//! commits, and recovery writes every journalled record past the durable `End` to the file again
//! (see [`super::recover`]). Filter-index entries made meanwhile point past `End`; readers skip
//! them the same way.
//!
//! The journalled groups' counter changes ([`super::unapplied`]) and time index entries wait here
//! too, and reach redb in the same transaction as the records: a publication sets
//! `meta/journal_applied` to the last frame written, so recovery replays exactly the frames whose
//! changes redb lacks.

use super::records::{self, RecordFile, ACTIVITY_POS};
use super::recover::set_journal_applied;
use super::tx::add_spent;
use super::unapplied::Unapplied;
use super::{SpentKey, StoreError, ACTIVITY_AT, SPENT};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Publish once this many bytes of records have gathered.
pub const PUBLISH_BYTES: usize = 256 << 10;

/// Publish once the oldest gathered record has waited this long.
pub const PUBLISH_AFTER: Duration = Duration::from_millis(5);

/// The records sealed since the last publication, one per line, in `seq` order; the counter
/// changes and time index entries made since.
#[derive(Default)]
pub(super) struct Pending {
    buf: Vec<u8>,
    /// `seq` of the first record in `buf`.
    first_seq: u64,
    /// When the group that put the first record in `buf` committed.
    since: Option<Instant>,
    /// The current group's counter changes: into [`Unapplied`] once its frame is durable, or
    /// straight into the transaction that publishes.
    group: Vec<(SpentKey, i64)>,
    /// `(at, seq)` time index entries of the records sealed since the last publication.
    at_index: Vec<(u64, u64)>,
    /// The journalled groups' counter changes redb lacks, which readers add ([`Unapplied`]).
    pub(super) unapplied: Arc<Unapplied>,
}

/// What a group's ops add to [`Pending`] besides its records (borrowed by [`super::tx::Tx`]).
pub(super) struct GroupChanges<'a> {
    pub(super) counters: &'a mut Vec<(SpentKey, i64)>,
    pub(super) at_index: &'a mut Vec<(u64, u64)>,
}

impl GroupChanges<'_> {
    /// `spent += delta` on the link at `key`.
    pub(super) fn counter(&mut self, key: &SpentKey, delta: i64) {
        self.counters.push((*key, delta));
    }

    /// The time index entry for a record: one per distinct `at` (see [`super::tx::index_at`]).
    pub(super) fn at(&mut self, seq: u64, at_us: u64) {
        if self.at_index.last().is_none_or(|(at, _)| *at != at_us) {
            self.at_index.push((at_us, seq));
        }
    }
}

impl Pending {
    /// Before a group's records are added: notes where they start if nothing is gathered yet.
    pub(super) fn start_group(&mut self, next_seq: u64) {
        if self.buf.is_empty() {
            self.first_seq = next_seq;
        }
    }

    /// The buffer a group's transaction appends its records to, and where its other changes go.
    pub(super) fn parts(&mut self) -> (&mut Vec<u8>, GroupChanges<'_>) {
        self.group.clear();
        (&mut self.buf, GroupChanges { counters: &mut self.group, at_index: &mut self.at_index })
    }

    /// Nothing waits to be published: no records, counter changes or time index entries.
    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty() && self.at_index.is_empty() && self.group.is_empty() && self.unapplied.is_empty()
    }

    /// The current group's counter changes, for the thread that writes its frame to add to the
    /// unapplied ones once the frame is durable (see [`super::flusher`]).
    pub(super) fn take_group(&mut self) -> Vec<(SpentKey, i64)> {
        std::mem::take(&mut self.group)
    }

    /// After a group's frame is sealed and it did not publish: the clock starts for what it left.
    /// (Its counter changes went with its frame: [`Pending::take_group`].)
    pub(super) fn committed(&mut self, now: Instant) {
        debug_assert!(self.group.is_empty());
        if !self.is_empty() && self.since.is_none() {
            self.since = Some(now);
        }
    }

    /// When the gathered records are due, if any are gathered.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.since.map(|s| s + PUBLISH_AFTER)
    }

    /// Should this group publish?
    pub(super) fn due(&self, now: Instant) -> bool {
        self.buf.len() >= PUBLISH_BYTES || self.deadline().is_some_and(|d| now >= d)
    }

    /// Appends the gathered records to the record file and records where they start and the new
    /// `End` in `tx`; applies every counter change and time index entry gathered, and sets
    /// `meta/journal_applied` to `applied`, the last journal frame written (so the caller need not
    /// check whether anything is gathered). `next_seq` is the chain's next `seq`: every sealed
    /// record is in `buf` or already published. Call [`Pending::published`] once `tx` commits.
    pub(super) fn publish(
        &mut self,
        tx: &redb::WriteTransaction,
        file: &mut RecordFile,
        next_seq: u64,
        applied: u64,
    ) -> Result<(), StoreError> {
        if !self.group.is_empty() || !self.unapplied.is_empty() {
            let mut spent = tx.open_table(SPENT)?;
            let mut change = |key: &SpentKey, delta: i64| add_spent(&mut spent, key, delta.unsigned_abs(), delta >= 0);
            self.unapplied.for_each(&mut change)?;
            self.group.drain(..).try_for_each(|(k, d)| change(&k, d))?;
        }
        if !self.at_index.is_empty() {
            let mut at = tx.open_table(ACTIVITY_AT)?;
            for (at_us, seq) in self.at_index.drain(..) {
                at.insert((at_us, seq), ())?;
            }
        }
        set_journal_applied(tx, applied)?;
        self.since = None;
        if self.buf.is_empty() {
            return Ok(());
        }
        let at = file.append(&self.buf)?;
        tx.open_table(ACTIVITY_POS)?.insert(self.first_seq, at)?;
        records::set_end(tx, records::End { next_seq, len: file.len() })?;
        self.buf.clear();
        Ok(())
    }

    /// After the transaction of a [`Pending::publish`] with `applied` committed: redb holds every
    /// change journalled so far.
    pub(super) fn published(&mut self, applied: u64) {
        self.unapplied.rebase(applied);
    }

    /// A checkpoint's transaction with `applied` was given what [`Pending::publish`] had and
    /// commits on another thread: later counter changes are kept apart (see [`Unapplied::seal`]).
    pub(super) fn seal(&mut self, applied: u64) {
        self.unapplied.seal(applied);
    }

    /// That transaction committed.
    pub(super) fn settled(&mut self) {
        self.unapplied.settle();
    }

    /// Forgets what is gathered (after a failed commit: recovery writes it from the journal, then
    /// calls [`Pending::published`] with what it applied).
    pub(super) fn clear(&mut self) {
        self.buf.clear();
        self.group.clear();
        self.at_index.clear();
        self.since = None;
    }
}
