//! Counter changes that are durable in the journal but not yet in redb, and how readers add them.
//!
//! A journalled group's reservations and refunds are on disk once its journal frame is (see
//! [`super::journal`]). Writing them into redb's spent table too, in every group, cost the writer
//! a B-tree update per download and a redb commit per group, on every request's path. So the
//! writer keeps them here instead and applies them to redb together with the records' publication
//! ([`super::pending`]): one transaction every few groups, one update per link however many
//! downloads it had meanwhile.
//!
//! ## How a reader stays exact
//!
//! The changes here sit on top of the redb state whose `meta/journal_applied` is [`Unapplied`]'s
//! `base`: they are the frames numbered past it. A reader ([`Unapplied::spent`]) holds the read
//! lock while it opens its read transaction and reads the counter and the marker; the writer takes
//! the write lock only to add a durable group's changes, and — after the transaction that applied
//! them all has committed — to empty the set and move `base` to that transaction's marker. So a
//! reader's snapshot either is from before that commit (its marker equals `base`, and the changes
//! it lacks are all here) or from after it (its marker is past `base`, and the snapshot has them
//! all): it adds them exactly when its snapshot lacks them. A change is added only once its frame
//! is durable, before anyone is answered; after a failed commit the writer replays the journal
//! into redb and starts the set over at the marker recovery reports.
//!
//! A checkpoint's durable commit runs while the writer goes on journalling (see
//! [`super::checkpointer`]), so its changes are *sealed* when it starts: they are what that commit
//! applies, and what a snapshot with its marker already has; changes added later are in no
//! snapshot until the next publication. Once it has committed, the writer drops the sealed set
//! and moves `base` to its marker — under the write lock, as above.

use super::SpentKey;
use std::collections::HashMap;
use std::sync::RwLock;

/// Changes to counters journalled past `base`, shared by the writer and readers.
#[derive(Default)]
pub struct Unapplied {
    inner: RwLock<Inner>,
}

#[derive(Default)]
struct Inner {
    /// The `meta/journal_applied` of the redb state these changes sit on.
    base: u64,
    /// The changes of a checkpoint being committed, and the marker it sets.
    sealed: Option<(u64, Deltas)>,
    deltas: Deltas,
}

type Deltas = HashMap<SpentKey, i64, crate::ledger::Fast>;

impl Unapplied {
    /// Starts over on top of the redb state whose marker is `base` (at open, after recovery).
    pub(super) fn rebase(&self, base: u64) {
        let mut g = self.inner.write().expect("not poisoned");
        g.base = base;
        g.sealed = None;
        g.deltas.clear();
    }

    /// A checkpoint that applies every change held and sets the marker `applied` starts
    /// committing: later changes are kept apart from them.
    pub(super) fn seal(&self, applied: u64) {
        let mut g = self.inner.write().expect("not poisoned");
        let deltas = std::mem::take(&mut g.deltas);
        g.sealed = Some((applied, deltas));
    }

    /// That checkpoint has committed: its changes are in redb, whose marker is now its own.
    pub(super) fn settle(&self) {
        let mut g = self.inner.write().expect("not poisoned");
        if let Some((applied, _)) = g.sealed.take() {
            g.base = applied;
        }
    }

    /// Adds a durable group's changes.
    pub(super) fn add(&self, changes: &[(SpentKey, i64)]) {
        if changes.is_empty() {
            return;
        }
        let mut g = self.inner.write().expect("not poisoned");
        for (k, d) in changes {
            *g.deltas.entry(*k).or_default() += d;
        }
    }

    /// Calls `f` for every held change (the writer, applying them in a transaction).
    pub(super) fn for_each(
        &self,
        mut f: impl FnMut(&SpentKey, i64) -> Result<(), super::StoreError>,
    ) -> Result<(), super::StoreError> {
        let g = self.inner.read().expect("not poisoned");
        g.deltas.iter().filter(|(_, d)| **d != 0).try_for_each(|(k, d)| f(k, *d))
    }

    pub(super) fn is_empty(&self) -> bool {
        let g = self.inner.read().expect("not poisoned");
        g.deltas.is_empty() && g.sealed.is_none()
    }

    /// Counters as the journal has them. `read` opens a read transaction and returns what it
    /// read, the counters redb holds (by key) and that snapshot's `journal_applied`; it runs
    /// while the writer cannot move `base` (see the module's notes).
    pub fn spent<T, E>(
        &self,
        read: impl FnOnce() -> Result<(T, Vec<(SpentKey, u64)>, u64), E>,
    ) -> Result<(T, Vec<u64>), E> {
        let g = self.inner.read().expect("not poisoned");
        let (value, stored, marker) = read()?;
        let delta = |k: &SpentKey| {
            let open = g.deltas.get(k).copied().unwrap_or(0);
            match &g.sealed {
                // A snapshot from before the checkpoint's commit lacks both sets; one from after
                // it, only the open one (nothing is published while a checkpoint commits).
                Some((_, sealed)) if marker == g.base => sealed.get(k).copied().unwrap_or(0) + open,
                Some(_) => open,
                None if marker == g.base => open,
                None => 0,
            }
        };
        Ok((value, stored.iter().map(|(k, s)| apply(*s, delta(k))).collect()))
    }
}

/// `stored` changed by `delta` (never below zero).
pub(super) fn apply(stored: u64, delta: i64) -> u64 {
    if delta >= 0 {
        stored.saturating_add(delta as u64)
    } else {
        stored.saturating_sub(delta.unsigned_abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Read = Result<((), Vec<(SpentKey, u64)>, u64), ()>;

    fn read(stored: u64, marker: u64) -> impl FnOnce() -> Read {
        move || Ok(((), vec![([1; 24], stored), ([3; 24], stored)], marker))
    }

    #[test]
    fn a_snapshot_at_the_base_gets_the_changes_and_a_later_one_does_not() {
        let u = Unapplied::default();
        u.rebase(7);
        u.add(&[([1; 24], 300), ([1; 24], -100), ([2; 24], 50)]);
        assert_eq!(u.spent(read(1000, 7)), Ok(((), vec![1200, 1000])));
        // The transaction that applied them has committed (marker 9), the set not yet emptied.
        assert_eq!(u.spent(read(1200, 9)), Ok(((), vec![1200, 1200])));
        u.rebase(9);
        assert!(u.is_empty());
        assert_eq!(u.spent(read(1200, 9)), Ok(((), vec![1200, 1200])));
    }

    #[test]
    fn while_a_checkpoint_commits_a_snapshot_gets_what_it_lacks_on_either_side_of_the_commit() {
        let u = Unapplied::default();
        u.rebase(7);
        u.add(&[([1; 24], 300)]);
        u.seal(9);
        // Journalled while the checkpoint commits.
        u.add(&[([1; 24], 50), ([3; 24], 20)]);
        assert!(!u.is_empty());
        // Before the commit (marker 7): both sets.
        assert_eq!(u.spent(read(1000, 7)), Ok(((), vec![1350, 1020])));
        // After it (marker 9), before the writer settles: the open set only.
        assert_eq!(u.spent(read(1300, 9)), Ok(((), vec![1350, 1320])));
        u.settle();
        assert_eq!(u.spent(read(1300, 9)), Ok(((), vec![1350, 1320])));
        // The next publication (marker 12) applies the open set and rebases.
        assert_eq!(u.spent(read(1350, 12)), Ok(((), vec![1350, 1350])));
        u.rebase(12);
        assert!(u.is_empty());
    }

    #[test]
    fn a_refund_never_takes_a_counter_below_zero() {
        assert_eq!(apply(100, -300), 0);
        assert_eq!(apply(100, 50), 150);
    }
}
