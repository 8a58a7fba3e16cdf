//! What one group commit's transaction offers the ops applied in it ([`Tx`]): the open tables,
//! the chain position, the group's records, index entries and gate changes, and each batch's
//! key/value writes staged until the batch ends well (`Tx::keep`) or undone with everything
//! else the batch did (`Tx::roll_back`).

use super::index::{self, Tags};
use super::journal::FrameBuf;
use super::pending::GroupChanges;
use super::writer::{Chain, Op};
use super::{FileRecord, OrderGate, SpentKey, StoreError};
use crate::activity::{Entry, Record};
use redb::{ReadableTable, Table};
use serde::{de::DeserializeOwned, Serialize};
use std::any::Any;
use std::collections::BTreeMap;

/// The open tables of one write transaction, and the chain position; what [`Op::Txn`] closures
/// work with.
pub struct Tx<'a, 't> {
    /// Not opened for a journalled group, whose ops never write a link.
    pub(super) links: Option<&'a mut Table<'t, &'static [u8], &'static [u8]>>,
    /// Not opened for a journalled group either: its counter changes go to `changes`.
    pub(super) spent: Option<&'a mut Table<'t, &'static [u8], u64>>,
    pub(super) kv: &'a mut BTreeMap<&'static str, Table<'t, &'static str, &'static [u8]>>,
    /// The records not yet in the record file, this group's last, one per line (see
    /// [`super::pending`]).
    pub(super) records: &'a mut Vec<u8>,
    /// Counter changes and time index entries, applied to redb when the records are published
    /// (see [`super::pending`]).
    pub(super) changes: GroupChanges<'a>,
    /// The group's filter index entries — `(tags, seq, offset)` — and the record file's length,
    /// where `records` will start (see [`index`]).
    pub(super) ix: &'a mut Vec<(Tags, u64, u64)>,
    pub(super) base_offset: u64,
    pub(super) chain: &'a mut Chain,
    pub(super) now_us: u64,
    pub(super) last_seq: Option<u64>,
    /// Records appended in this transaction, as stored: for the JSON Lines mirror (if any).
    pub(super) appended: Option<&'a mut Vec<(u64, Vec<u8>)>>,
    /// The last `at` formatted, and its text (a group's records share one).
    pub(super) at_text: (u64, String),
    /// The journal frame being built, when this group is journalled rather than fsynced by redb.
    pub(super) frame: Option<&'a mut FrameBuf>,
    /// Gate changes of this group, with their versions, for the sink after the commit.
    pub(super) gates: &'a mut Vec<(String, OrderGate, u64)>,
    /// The current batch's writes to the key/value tables, applied when the batch ends well and
    /// dropped when it fails (see [`super::commit::apply`]).
    pub(super) overlay: BTreeMap<(&'static str, String), Option<Vec<u8>>>,
}

/// Where a batch started: what [`Tx::roll_back`] returns to.
pub(super) struct Mark {
    next_seq: u64,
    prev_hash: String,
    last_at_us: u64,
    gate_version: u64,
    records: usize,
    ix: usize,
    gates: usize,
    appended: usize,
}

impl<'t> Tx<'_, 't> {
    fn kv(&mut self, table: &'static str) -> Result<&mut Table<'t, &'static str, &'static [u8]>, StoreError> {
        self.kv.get_mut(table).ok_or_else(|| StoreError::Bug(format!("unknown table {table}")))
    }

    pub fn get_raw(&mut self, table: &'static str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(v) = self.overlay.get(&(table, key.to_owned())) {
            return Ok(v.clone());
        }
        Ok(self.kv(table)?.get(key)?.map(|v| v.value().to_vec()))
    }

    /// Where the current batch starts.
    pub(super) fn mark(&self) -> Mark {
        Mark {
            next_seq: self.chain.next_seq,
            prev_hash: self.chain.prev_hash.clone(),
            last_at_us: self.chain.last_at_us,
            gate_version: self.chain.gate_version,
            records: self.records.len(),
            ix: self.ix.len(),
            gates: self.gates.len(),
            appended: self.appended.as_ref().map_or(0, |a| a.len()),
        }
    }

    /// Undoes what the current batch did: its key/value writes, records, index entries and gate
    /// changes. (Links and counters are written straight to their tables, by ops that cannot
    /// refuse: they are never rolled back.)
    pub(super) fn roll_back(&mut self, m: Mark) {
        self.overlay.clear();
        self.chain.next_seq = m.next_seq;
        self.chain.prev_hash = m.prev_hash;
        self.chain.last_at_us = m.last_at_us;
        self.chain.gate_version = m.gate_version;
        self.records.truncate(m.records);
        self.ix.truncate(m.ix);
        self.gates.truncate(m.gates);
        if let Some(a) = self.appended.as_deref_mut() {
            a.truncate(m.appended);
        }
    }

    /// Applies the current batch's key/value writes to the tables.
    pub(super) fn keep(&mut self) -> Result<(), StoreError> {
        for ((table, key), value) in std::mem::take(&mut self.overlay) {
            let t = self.kv(table)?;
            match value {
                Some(v) => t.insert(key.as_str(), v.as_slice())?,
                None => t.remove(key.as_str())?,
            };
        }
        Ok(())
    }

    pub fn get_json<T: DeserializeOwned>(&mut self, table: &'static str, key: &str) -> Result<Option<T>, StoreError> {
        Ok(self.get_raw(table, key)?.map(|v| serde_json::from_slice(&v)).transpose()?)
    }

    pub fn put_raw(&mut self, table: &'static str, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.kv(table)?;
        self.overlay.insert((table, key.to_owned()), Some(value.to_vec()));
        Ok(())
    }

    pub fn put_json<T: Serialize>(&mut self, table: &'static str, key: &str, value: &T) -> Result<(), StoreError> {
        let v = serde_json::to_vec(value)?;
        self.put_raw(table, key, &v)
    }

    pub fn remove(&mut self, table: &'static str, key: &str) -> Result<(), StoreError> {
        self.kv(table)?;
        self.overlay.insert((table, key.to_owned()), None);
        Ok(())
    }

    /// Up to `limit` `(key, value)` pairs whose key starts with `prefix`, in key order.
    pub fn scan_prefix(
        &mut self,
        table: &'static str,
        prefix: &str,
        limit: usize,
    ) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        // The table's pairs as the current batch has changed them.
        let pending: Vec<_> = self
            .overlay
            .range((table, prefix.to_owned())..)
            .take_while(|((t, k), _)| *t == table && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        let removed = pending.iter().filter(|(_, v)| v.is_none()).count();
        let stored = super::scan_prefix_in(self.kv(table)?, prefix, limit.saturating_add(removed))?;
        let mut merged: BTreeMap<String, Vec<u8>> = stored.into_iter().collect();
        for (k, v) in pending {
            match v {
                Some(v) => merged.insert(k, v),
                None => merged.remove(&k),
            };
        }
        Ok(merged.into_iter().take(limit).collect())
    }

    /// Writes an order's gate; once the group commits, the store's [`super::writer::GateSink`] hears of it.
    pub fn put_gate(&mut self, order_id: &str, gate: &OrderGate) -> Result<(), StoreError> {
        self.put_json(GATES_KV, order_id, gate)?;
        self.chain.gate_version += 1;
        self.gates.push((order_id.to_owned(), gate.clone(), self.chain.gate_version));
        Ok(())
    }

    /// Appends an activity record in this transaction and returns its `seq`.
    pub fn append(&mut self, entry: Entry) -> Result<u64, StoreError> {
        self.append_body(&entry.body(), &index::tags_of(&entry))
    }

    /// Appends the record whose [`Entry::body`] this is.
    fn append_body(&mut self, body: &[u8], tags: &Tags) -> Result<u64, StoreError> {
        let at_us = self.now_us.max(self.chain.last_at_us);
        let seq = self.chain.next_seq;
        if self.at_text.0 != at_us || self.at_text.1.is_empty() {
            self.at_text = (at_us, crate::activity::format_at(at_us));
        }
        let (json, hash) = Record::seal_body(body, seq, &self.at_text.1, &self.chain.prev_hash);
        self.ix.push((*tags, seq, self.base_offset + self.records.len() as u64));
        self.records.extend_from_slice(&json);
        self.records.push(b'\n');
        self.changes.at(seq, at_us);
        if let Some(f) = self.frame.as_deref_mut() {
            f.record(seq, at_us, &json);
        }
        if let Some(a) = self.appended.as_deref_mut() {
            a.push((seq, json));
        }
        self.chain.next_seq += 1;
        self.chain.prev_hash = hash;
        self.chain.last_at_us = at_us;
        self.last_seq = Some(seq);
        Ok(seq)
    }

    pub(super) fn apply(&mut self, op: Op) -> Result<Option<Box<dyn Any + Send>>, StoreError> {
        match op {
            Op::Reserve { key, bytes } => {
                self.changes.counter(&key, bytes as i64);
                if let Some(f) = self.frame.as_deref_mut() {
                    f.reserve(&key, bytes);
                }
            }
            Op::Refund { key, bytes } => {
                self.changes.counter(&key, -(bytes as i64));
                if let Some(f) = self.frame.as_deref_mut() {
                    f.refund(&key, bytes);
                }
            }
            Op::PutLink(rec) => {
                let id = hex::decode(&rec.link_id).map_err(|e| StoreError::Bug(e.to_string()))?;
                let links = self.links.as_deref_mut().ok_or_else(|| StoreError::Bug("links table not open".into()))?;
                links.insert(id.as_slice(), serde_json::to_vec(&rec)?.as_slice())?;
                let spent = self.spent.as_deref_mut().ok_or_else(|| StoreError::Bug("spent table not open".into()))?;
                spent.insert(super::spent_key(&rec).as_slice(), 0)?;
                self.put_raw(ORDER_LINKS, &format!("{}\0{}", rec.order_id, rec.link_id), b"")?;
            }
            Op::PutFile(rec) => self.put_json(FILES_KV, &super::file_key(&rec.product_id, &rec.file_id), &rec)?,
            Op::SetFileSha { product_id, file_id, size, sha256 } => {
                let key = super::file_key(&product_id, &file_id);
                let existing: Option<FileRecord> = self.get_json(FILES_KV, &key)?;
                if let Some(mut rec) = existing.filter(|r| r.size == size) {
                    rec.sha256 = Some(sha256);
                    self.put_json(FILES_KV, &key, &rec)?;
                }
            }
            Op::PutGate { order_id, gate } => {
                self.put_gate(&order_id, &gate)?;
            }
            Op::Append(entry) => {
                self.append(entry)?;
            }
            Op::AppendBody { body, tags } => {
                self.append_body(&body, &tags)?;
            }
            Op::Txn(f) => return f(self).map(Some),
        }
        Ok(None)
    }
}

const FILES_KV: &str = "files";
const GATES_KV: &str = "order_gates";
/// `order_id \0 link_id` → nothing: the links of an order.
pub const ORDER_LINKS: &str = "order_links";

pub(super) fn add_spent(
    spent: &mut Table<'_, &'static [u8], u64>,
    key: &SpentKey,
    bytes: u64,
    add: bool,
) -> Result<(), StoreError> {
    let cur = spent.get(key.as_slice())?.map_or(0, |v| v.value());
    let new = if add { cur.saturating_add(bytes) } else { cur.saturating_sub(bytes) };
    spent.insert(key.as_slice(), new)?;
    Ok(())
}

/// Keeps the time index for a record. The index is sparse: one `(at, first seq)` entry per
/// distinct `at`, and every record of a group commit shares one `at`. `at` never decreases with
/// `seq`, so seeking the index to a time and walking records by `seq` from there finds every
/// later record.
pub(super) fn index_at(
    activity_at: &mut Table<'_, (u64, u64), ()>,
    indexed_at: &mut Option<u64>,
    seq: u64,
    at_us: u64,
) -> Result<(), StoreError> {
    if *indexed_at != Some(at_us) {
        activity_at.insert((at_us, seq), ())?;
        *indexed_at = Some(at_us);
    }
    Ok(())
}
