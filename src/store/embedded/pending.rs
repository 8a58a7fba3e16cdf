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

use super::records::{self, RecordFile, ACTIVITY_POS};
use super::StoreError;
use std::time::{Duration, Instant};

/// Publish once this many bytes of records have gathered.
pub const PUBLISH_BYTES: usize = 256 << 10;

/// Publish once the oldest gathered record has waited this long.
pub const PUBLISH_AFTER: Duration = Duration::from_millis(5);

/// The records sealed since the last publication, one per line, in `seq` order.
#[derive(Default)]
pub(super) struct Pending {
    buf: Vec<u8>,
    /// `seq` of the first record in `buf`.
    first_seq: u64,
    /// When the group that put the first record in `buf` committed.
    since: Option<Instant>,
}

impl Pending {
    /// Before a group's records are added: notes where they start if nothing is gathered yet.
    pub(super) fn start_group(&mut self, next_seq: u64) {
        if self.buf.is_empty() {
            self.first_seq = next_seq;
        }
    }

    /// The buffer a group's transaction appends its records to.
    pub(super) fn buf(&mut self) -> &mut Vec<u8> {
        &mut self.buf
    }

    pub(super) fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// After a group committed without publishing: starts the clock for its records.
    pub(super) fn committed(&mut self, now: Instant) {
        if !self.buf.is_empty() && self.since.is_none() {
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
    /// `End` in `tx` (a no-op if nothing is gathered). `next_seq` is the chain's next `seq`:
    /// every sealed record is in `buf` or already published.
    pub(super) fn publish(
        &mut self,
        tx: &redb::WriteTransaction,
        file: &mut RecordFile,
        next_seq: u64,
    ) -> Result<(), StoreError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let at = file.append(&self.buf)?;
        tx.open_table(ACTIVITY_POS)?.insert(self.first_seq, at)?;
        records::set_end(tx, records::End { next_seq, len: file.len() })?;
        self.clear();
        Ok(())
    }

    /// Forgets the gathered records (after a failed commit: recovery writes them from the journal).
    pub(super) fn clear(&mut self) {
        self.buf.clear();
        self.since = None;
    }
}
