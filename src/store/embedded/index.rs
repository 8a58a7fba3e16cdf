//! The activity log's filter index (API.md §5.2): `GET /api/activity` filtered by `order_id`,
//! `tenant_id` or `kind` reads this index, never the whole log.
//!
//! Every record has up to three tags: its kind's, its tenant's and its order's — a namespaced
//! 64-bit value, the FNV-1a hash of the name or id — so all of one tag's records can be listed in
//! `seq` order as `(seq, offset in the record file)`. A hash may collide; the query checks every
//! record it reads against the filter, so a collision costs a read, never a wrong answer.
//!
//! ## Why chunks, written now and then
//!
//! One B-tree entry per record and tag was tried first: six inserts per download, each on another
//! leaf page once downloads are spread over many orders, which tripled the writer's time per
//! download. So the writer keeps the entries of recent records in memory, in [`Recent`] (a list
//! per tag), and from time to time writes each tag's list as one row of `activity_ix_chunks`:
//! `(tag, first seq) → packed (seq, offset) pairs`. A flush costs one insert per tag seen since
//! the last one — a few thousand for thousands of orders — whatever the number of records.
//!
//! A flush happens inside a durable redb commit once [`FLUSH_AT`] entries are held — a
//! checkpoint's, written on the checkpoint's own thread, or one on the writer — and at stop;
//! the same commit sets `meta/activity_ix_through`, the last `seq` the table covers. Nothing is
//! lost to a crash: on start (`catch_up`) the records after `activity_ix_through` are read back
//! from the record file (journal replay has already put them there) and indexed into the table —
//! the same path that builds the index of a database from before it. A query takes the tag's
//! entries from [`Recent`] *before* its read transaction begins and merges them with the table's
//! rows (see `scan`): whatever a flush moved in between is seen on one side or both, never
//! neither.

use super::StoreError;
use crate::activity::{Entry, Kind, Record};
use redb::{ReadableTable, Table, TableDefinition};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};

/// `(tag, seq of the chunk's first record)` → the chunk: `(seq, offset)` pairs, 16 bytes each
/// (little-endian), ascending.
pub(crate) const ACTIVITY_IX: TableDefinition<(u64, u64), &[u8]> = TableDefinition::new("activity_ix_chunks");

/// Entries held in memory (16 bytes each) before the next durable commit writes them out: about
/// 21,000 downloads' records, which a start after a crash reads back. A checkpoint writes them on
/// its own thread ([`Recent::take_flush`]); a durable commit on the writer (an admin change, a
/// frame that no longer fits) writes them itself, and every download waiting for it waits too:
/// eight times as many (the earlier value) made such commits of 100–200 ms under load, the 4 KiB
/// benchmark's p99 (the README has the figures). Smaller in the crate's unit tests, so that they
/// cross it.
pub const FLUSH_AT: usize = if cfg!(test) { 16 * 1024 } else { 64 * 1024 };

/// `meta` key: the last `seq` whose entries the table holds (u64, big-endian; absent = none).
const THROUGH: &str = "activity_ix_through";

/// A record's index tags; 0 means none.
pub type Tags = [u64; 3];

const KIND: u64 = 1 << 62;
const TENANT: u64 = 2 << 62;
const ORDER: u64 = 3 << 62;
const LOW: u64 = (1 << 62) - 1;

fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

/// The tag of a kind: a hash of its contract name, so it never depends on the enum's order.
pub fn kind_tag(kind: Kind) -> u64 {
    KIND | (fnv1a(kind.name()) & LOW)
}

/// The tag of a tenant id (as stored: lowercase).
pub fn tenant_tag(tenant_id: &str) -> u64 {
    TENANT | (fnv1a(tenant_id) & LOW)
}

/// The tag of an order id.
pub fn order_tag(order_id: &str) -> u64 {
    ORDER | (fnv1a(order_id) & LOW)
}

/// A record's tags from its kind (none: 0, to be filled in), tenant and order.
pub fn tags(kind: Option<Kind>, tenant_id: Option<&str>, order_id: Option<&str>) -> Tags {
    [kind.map_or(0, kind_tag), tenant_id.map_or(0, tenant_tag), order_id.map_or(0, order_tag)]
}

/// The tags of an entry (computed where the entry is made, like its serialization).
pub fn tags_of(e: &Entry) -> Tags {
    tags(Some(e.kind), e.tenant_id.as_deref(), e.order_id.as_deref())
}

/// The tags of a stored record.
pub fn tags_of_stored(json: &[u8]) -> Result<Tags, StoreError> {
    let r: Record = serde_json::from_slice(json)?;
    Ok(tags(Some(r.kind), r.tenant_id.as_deref(), r.order_id.as_deref()))
}

/// Per tag, `(seq, offset)` in `seq` order.
#[derive(Debug, Default)]
struct Lists {
    by_tag: HashMap<u64, Vec<(u64, u64)>>,
    entries: usize,
    /// The last `seq` added.
    last_seq: u64,
}

impl Lists {
    fn add(&mut self, tags: &Tags, seq: u64, offset: u64) {
        for tag in tags.iter().filter(|t| **t != 0) {
            self.by_tag.entry(*tag).or_default().push((seq, offset));
            self.entries += 1;
        }
        self.last_seq = self.last_seq.max(seq);
    }

    /// Writes one chunk per tag, in tag order, and the `seq` the table now covers.
    fn write(&self, tx: &redb::WriteTransaction) -> Result<(), StoreError> {
        let mut ix = tx.open_table(ACTIVITY_IX)?;
        let mut tags: Vec<_> = self.by_tag.iter().collect();
        tags.sort_unstable_by_key(|(t, _)| **t);
        for (tag, list) in tags {
            insert_chunk(&mut ix, *tag, list)?;
        }
        set_through(tx, self.last_seq)
    }
}

fn insert_chunk(ix: &mut Table<'_, (u64, u64), &[u8]>, tag: u64, list: &[(u64, u64)]) -> Result<(), StoreError> {
    let Some(first) = list.first() else { return Ok(()) };
    let mut packed = Vec::with_capacity(list.len() * 16);
    for (seq, offset) in list {
        packed.extend_from_slice(&seq.to_le_bytes());
        packed.extend_from_slice(&offset.to_le_bytes());
    }
    ix.insert((tag, first.0), packed.as_slice())?;
    Ok(())
}

fn unpack(chunk: &[u8]) -> impl Iterator<Item = (u64, u64)> + '_ {
    chunk.chunks_exact(16).map(|c| {
        let (s, o) = c.split_at(8);
        (u64::from_le_bytes(s.try_into().unwrap_or_default()), u64::from_le_bytes(o.try_into().unwrap_or_default()))
    })
}

fn through(tx: &redb::WriteTransaction) -> Result<u64, StoreError> {
    let meta = tx.open_table(super::META)?;
    let v = meta.get(THROUGH)?.and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes));
    Ok(v.unwrap_or(0))
}

fn set_through(tx: &redb::WriteTransaction, seq: u64) -> Result<(), StoreError> {
    if seq > 0 {
        tx.open_table(super::META)?.insert(THROUGH, seq.to_be_bytes().as_slice())?;
    }
    Ok(())
}

/// The entries of records the table does not cover yet (see the module docs). Written by the
/// writer thread only; read by queries.
///
/// A flush's entries move out of the open lists into `flushing` when a checkpoint takes them
/// ([`Recent::take_flush`]): the checkpoint's own thread writes them into its transaction, so the
/// writer — and every download waiting on its next group — no longer waits for that write.
/// Queries read both until the checkpoint has committed.
#[derive(Debug, Clone, Default)]
pub struct Recent(Arc<RwLock<Held>>);

#[derive(Debug, Default)]
struct Held {
    open: Lists,
    /// Entries a checkpoint committing on another thread is writing (all before `open`'s).
    flushing: Option<Arc<Lists>>,
}

/// Held entries handed to a checkpoint, which writes them into its transaction ([`Flush::write`]).
pub(super) struct Flush(Arc<Lists>);

impl Flush {
    /// Writes one chunk per tag and moves the `seq` the table covers to the last one's.
    pub(super) fn write(&self, tx: &redb::WriteTransaction) -> Result<(), StoreError> {
        self.0.write(tx)
    }
}

impl Recent {
    /// After a commit: the entries of its records.
    pub(super) fn add(&self, group: &[(Tags, u64, u64)]) {
        let mut held = self.0.write().expect("not poisoned");
        for (tags, seq, offset) in group {
            held.open.add(tags, *seq, *offset);
        }
    }

    /// Whether the next durable commit should write the held entries out.
    pub(super) fn due(&self) -> bool {
        self.0.read().expect("not poisoned").open.entries >= FLUSH_AT
    }

    /// Inside a durable commit on the writer: everything held, plus `group` (this commit's records).
    pub(super) fn write_into(&self, tx: &redb::WriteTransaction, group: &[(Tags, u64, u64)]) -> Result<(), StoreError> {
        let held = self.0.read().expect("not poisoned");
        if let Some(f) = &held.flushing {
            f.write(tx)?;
        }
        if group.is_empty() {
            return held.open.write(tx);
        }
        let mut all =
            Lists { by_tag: held.open.by_tag.clone(), entries: held.open.entries, last_seq: held.open.last_seq };
        for (tags, seq, offset) in group {
            all.add(tags, *seq, *offset);
        }
        all.write(tx)
    }

    /// For a checkpoint that commits on another thread: takes the held entries for it to write.
    /// Queries still see them until [`Recent::flushed`]. Call only with no flush in progress.
    pub(super) fn take_flush(&self) -> Flush {
        let mut held = self.0.write().expect("not poisoned");
        debug_assert!(held.flushing.is_none());
        let lists = Arc::new(std::mem::take(&mut held.open));
        held.flushing = Some(lists.clone());
        Flush(lists)
    }

    /// That checkpoint has committed: the table holds what it took.
    pub(super) fn flushed(&self) {
        self.0.write().expect("not poisoned").flushing = None;
    }

    /// After a durable commit that wrote everything held.
    pub(super) fn clear(&self) {
        *self.0.write().expect("not poisoned") = Held::default();
    }

    /// `(seq, offset)` of the held entries of `tag` from `from_seq` on.
    pub(super) fn of(&self, tag: u64, from_seq: u64) -> Vec<(u64, u64)> {
        let held = self.0.read().expect("not poisoned");
        let lists = held.flushing.as_deref().into_iter().chain([&held.open]);
        lists.filter_map(|l| l.by_tag.get(&tag)).flatten().copied().filter(|(s, _)| *s >= from_seq).collect()
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        let held = self.0.read().expect("not poisoned");
        held.open.entries + held.flushing.as_ref().map_or(0, |f| f.entries)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// `(seq, offset)` of the records with `tag` from `from_seq` on, in `seq` order — the table's
/// chunks merged with `recent` (taken from [`Recent::of`] before the read transaction began; an
/// entry on both sides is read once) — fed to `f` until it returns `false`.
pub(super) fn scan(
    ix: &impl ReadableTable<(u64, u64), &'static [u8]>,
    recent: Vec<(u64, u64)>,
    tag: u64,
    from_seq: u64,
    mut f: impl FnMut(u64, u64) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    // The chunk that starts at or before `from_seq` may hold later records too.
    let first = match ix.range((tag, 0)..=(tag, from_seq))?.next_back() {
        Some(item) => item?.0.value().1,
        None => from_seq,
    };
    let mut last = 0u64;
    for item in ix.range((tag, first)..=(tag, u64::MAX))? {
        let (_, chunk) = item?;
        for (seq, offset) in unpack(chunk.value()).filter(|(s, _)| *s >= from_seq) {
            if seq > last {
                last = seq;
                if !f(seq, offset)? {
                    return Ok(());
                }
            }
        }
    }
    for (seq, offset) in recent.into_iter().filter(|(s, _)| *s >= from_seq) {
        if seq > last {
            last = seq;
            if !f(seq, offset)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Indexes, straight into the table, every record after the `seq` the table covers — read back
/// from the record file — and moves that mark to the end: after a crash (the held entries were
/// lost, the records were not), and for a database from before the index. Returns how many
/// records it indexed.
pub(super) fn catch_up(tx: &redb::WriteTransaction, records_path: &std::path::Path) -> Result<u64, StoreError> {
    let from = through(tx)? + 1;
    let mut lists = Lists::default();
    let mut n = 0;
    super::records::walk_write(tx, records_path, from, |seq, offset, json| {
        lists.add(&tags_of_stored(json)?, seq, offset);
        n += 1;
        if lists.entries >= FLUSH_AT {
            lists.write(tx)?;
            lists = Lists::default();
        }
        Ok(())
    })?;
    lists.write(tx)?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::ReadableDatabase;

    #[test]
    fn a_scan_merges_stored_chunks_and_held_entries_in_seq_order_reading_each_once() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let recent = Recent::default();
        let (tag, other) = (order_tag("o7"), order_tag("o8"));
        let t = |tag| [kind_tag(Kind::KeyAccessed), 0, tag];
        recent.add(&[(t(tag), 1, 10), (t(tag), 3, 30)]);
        let tx = db.begin_write().unwrap();
        recent.write_into(&tx, &[(t(tag), 5, 50), (t(other), 6, 60)]).unwrap();
        tx.commit().unwrap();
        // The flush committed but `Recent` still holds 1 and 3 (cleared only afterwards), and 7.
        recent.add(&[(t(tag), 7, 70)]);
        let rtx = db.begin_read().unwrap();
        let ix = rtx.open_table(ACTIVITY_IX).unwrap();
        let mut seen = Vec::new();
        scan(&ix, recent.of(tag, 1), tag, 1, |seq, off| {
            seen.push((seq, off));
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, vec![(1, 10), (3, 30), (5, 50), (7, 70)]);
        let mut from_3 = Vec::new();
        scan(&ix, recent.of(tag, 3), tag, 3, |seq, _| {
            from_3.push(seq);
            Ok(from_3.len() < 2)
        })
        .unwrap();
        assert_eq!(from_3, vec![3, 5], "starts inside a chunk at from_seq and stops when told");
        let mut kinds = 0;
        scan(&ix, recent.of(kind_tag(Kind::KeyAccessed), 1), kind_tag(Kind::KeyAccessed), 1, |_, _| {
            kinds += 1;
            Ok(true)
        })
        .unwrap();
        assert_eq!(kinds, 5);
        recent.clear();
        assert!(recent.is_empty());
    }

    #[test]
    fn entries_a_checkpoint_takes_stay_found_until_it_has_committed_them() {
        let dir = tempfile::tempdir().unwrap();
        let db = redb::Database::create(dir.path().join("t.redb")).unwrap();
        let recent = Recent::default();
        let tag = order_tag("o7");
        let t = [kind_tag(Kind::DownloadStarted), 0, tag];
        recent.add(&[(t, 1, 10), (t, 2, 20)]);
        let flush = recent.take_flush();
        assert!(!recent.due() && recent.len() == 4, "taken, not forgotten: both tags of both records");
        recent.add(&[(t, 3, 30)]);
        assert_eq!(recent.of(tag, 2), vec![(2, 20), (3, 30)], "the taken entries, then the open ones");
        // The checkpoint's thread writes them into its transaction and commits.
        let tx = db.begin_write().unwrap();
        flush.write(&tx).unwrap();
        tx.commit().unwrap();
        // A query that took the held entries before that commit and reads the table after it
        // reads each record once.
        let held = recent.of(tag, 1);
        let rtx = db.begin_read().unwrap();
        let ix = rtx.open_table(ACTIVITY_IX).unwrap();
        let mut seen = Vec::new();
        scan(&ix, held, tag, 1, |seq, _| {
            seen.push(seq);
            Ok(true)
        })
        .unwrap();
        assert_eq!(seen, vec![1, 2, 3]);
        recent.flushed();
        assert_eq!(recent.of(tag, 1), vec![(3, 30)], "only what came after the flush is held");
        assert_eq!(recent.len(), 2);
        let mut after = Vec::new();
        scan(&ix, recent.of(tag, 1), tag, 1, |seq, _| {
            after.push(seq);
            Ok(true)
        })
        .unwrap();
        assert_eq!(after, vec![1, 2, 3]);
        let wtx = db.begin_write().unwrap();
        assert_eq!(through(&wtx).unwrap(), 2, "the table covers what the flush wrote");
    }

    #[test]
    fn tags_of_an_entry_and_of_its_stored_record_agree_and_namespaces_differ() {
        let mut e = Entry::new(Kind::DownloadStarted);
        e.tenant_id = Some("t-1".into());
        e.order_id = Some("t-1".into());
        let (json, _) = Record::seal_json(&e, 1, "2026-11-21T08:30:00.000000Z", crate::activity::GENESIS);
        let t = tags_of(&e);
        assert_eq!(tags_of_stored(&json).unwrap(), t);
        assert_ne!(t[1], t[2], "a tenant and an order with the same id are different tags");
        assert_ne!(kind_tag(Kind::DownloadStarted), kind_tag(Kind::DownloadFinished));
        assert_eq!(tags_of(&Entry::new(Kind::KeyAccessed))[1..], [0, 0]);
    }
}
