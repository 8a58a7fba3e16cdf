//! The activity log's filter index (API.md §5.2): `GET /api/activity` filtered by `order_id`,
//! `tenant_id` or `kind` reads this index, never the whole log.
//!
//! One redb table, `activity_ix`: `(tag, seq) → offset` of the record in the record file. Every
//! record gets up to three entries: one for its kind, one for its tenant, one for its order. A
//! tag is a namespaced 64-bit value — the kind's number, or a hash (FNV-1a) of the tenant or
//! order id — so keys are fixed-width and small, and all of one tag's entries are adjacent in
//! `seq` order: a filtered query is one range scan of the tag, reading each match's line at its
//! offset. A hash may collide; the query checks every record it reads against the filter, so a
//! collision costs a read, never a wrong answer.
//!
//! Entries are written in the transaction that appends their records (the writer's group commit,
//! and the journal's replay after a crash, which computes them again from the replayed records),
//! so the index is exactly as durable and as visible as the records. A database from before the
//! index gets it built from the record file on first start ([`build`]).

use super::StoreError;
use crate::activity::{Entry, Kind, Record};
use redb::{ReadableTable, Table, TableDefinition};

/// `(tag, seq)` → offset of the record's line in the record file.
pub(crate) const ACTIVITY_IX: TableDefinition<(u64, u64), u64> = TableDefinition::new("activity_ix");

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

fn tags(kind: Kind, tenant_id: Option<&str>, order_id: Option<&str>) -> Tags {
    [kind_tag(kind), tenant_id.map_or(0, tenant_tag), order_id.map_or(0, order_tag)]
}

/// The tags of an entry (computed where the entry is made, like its serialization).
pub fn tags_of(e: &Entry) -> Tags {
    tags(e.kind, e.tenant_id.as_deref(), e.order_id.as_deref())
}

/// The tags of a stored record (replay and the first build).
pub fn tags_of_stored(json: &[u8]) -> Result<Tags, StoreError> {
    let r: Record = serde_json::from_slice(json)?;
    Ok(tags(r.kind, r.tenant_id.as_deref(), r.order_id.as_deref()))
}

/// Indexes record `seq`, stored at `offset`.
pub(super) fn insert(
    ix: &mut Table<'_, (u64, u64), u64>,
    tags: &Tags,
    seq: u64,
    offset: u64,
) -> Result<(), StoreError> {
    for tag in tags.iter().filter(|t| **t != 0) {
        ix.insert((*tag, seq), offset)?;
    }
    Ok(())
}

/// `(seq, offset)` of the records with `tag` from `from_seq` on, in order, fed to `f` until it
/// returns `false`.
pub(super) fn scan(
    ix: &impl ReadableTable<(u64, u64), u64>,
    tag: u64,
    from_seq: u64,
    mut f: impl FnMut(u64, u64) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    for item in ix.range((tag, from_seq)..=(tag, u64::MAX))? {
        let (k, v) = item?;
        if !f(k.value().1, v.value())? {
            break;
        }
    }
    Ok(())
}

/// Indexes every record of a database from before the index, reading the record file once.
pub(super) fn build(tx: &redb::WriteTransaction, records_path: &std::path::Path) -> Result<u64, StoreError> {
    let mut ix = tx.open_table(ACTIVITY_IX)?;
    let mut n = 0;
    super::records::walk_write(tx, records_path, |seq, offset, json| {
        insert(&mut ix, &tags_of_stored(json)?, seq, offset)?;
        n += 1;
        Ok(())
    })?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

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
