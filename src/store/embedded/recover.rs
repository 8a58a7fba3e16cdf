//! Recovery: bringing redb and the record file up to date from the journal after a crash or a
//! failed commit, moving records of older databases, and indexing what the filter index lacks.

use super::index;
use super::journal::{Frame, JournalOp};
use super::records::{self, RecordFile, ACTIVITY_POS};
use super::tx::{add_spent, index_at};
use super::{StoreError, ACTIVITY_AT, LEGACY_ACTIVITY, META, SPENT};
use redb::{Database, ReadableTable, ReadableTableMetadata};

/// `meta` key: the number of the last journal frame whose changes redb holds (u64, big-endian).
const JOURNAL_APPLIED: &str = "journal_applied";

/// The last journal frame `meta` says redb holds (0 if none).
pub(crate) fn journal_applied(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<u64, StoreError> {
    Ok(meta.get(JOURNAL_APPLIED)?.and_then(|v| v.value().try_into().ok().map(u64::from_be_bytes)).unwrap_or(0))
}

pub(super) fn set_journal_applied(tx: &redb::WriteTransaction, frame: u64) -> Result<(), StoreError> {
    tx.open_table(META)?.insert(JOURNAL_APPLIED, frame.to_be_bytes().as_slice())?;
    Ok(())
}

/// Brings the database and the record file up to date, in one durable transaction, and returns
/// the journal frame the database now holds everything up to (for [`Journal::restart`]):
///
/// 1. the record file's next append goes where the durable `activity_end` says it ends;
/// 2. records of a database from before the record file are moved into it;
/// 3. every intact journal frame numbered past `meta/journal_applied` is re-applied — counters,
///    time index, and its records written to the file again.
///
/// Run at start and after every reopen (a crash or a failed commit loses redb's non-durable
/// commits, never the journal's frames), and by `verify-log` on a database left by a crash.
pub(super) fn recover(db: &Database, frames: &[Frame], records: &mut RecordFile) -> Result<u64, StoreError> {
    let tx = db.begin_write()?;
    let (applied, mut end) = {
        let meta = tx.open_table(META)?;
        (journal_applied(&meta)?, records::end(&meta)?)
    };
    records.reset(end.len)?;
    let mut buf = Vec::new();
    {
        let mut pos = tx.open_table(ACTIVITY_POS)?;
        let legacy = tx.open_table(LEGACY_ACTIVITY)?;
        let moved = legacy.len()?;
        if moved > 0 {
            for item in legacy.iter()? {
                let (k, v) = item?;
                if buf.is_empty() {
                    pos.insert(k.value(), records.len())?;
                }
                follow(&mut end, k.value())?;
                buf.extend_from_slice(v.value());
                buf.push(b'\n');
                if buf.len() >= 1 << 20 {
                    records.append(&buf)?;
                    buf.clear();
                }
            }
            records.append(&buf)?;
            buf.clear();
            tracing::info!(records = moved, "moved the activity records from the database to the record file");
        }
        drop(legacy);
        tx.delete_table(LEGACY_ACTIVITY)?;

        let mut spent = tx.open_table(SPENT)?;
        let mut activity_at = tx.open_table(ACTIVITY_AT)?;
        let mut indexed_at = None;
        let (mut replayed, mut replayed_records) = (0u64, 0u64);
        for f in frames.iter().filter(|f| f.number > applied) {
            let first = end.next_seq;
            for op in &f.ops {
                match op {
                    JournalOp::Reserve { key, bytes } => add_spent(&mut spent, key, *bytes, true)?,
                    JournalOp::Refund { key, bytes } => add_spent(&mut spent, key, *bytes, false)?,
                    JournalOp::Record { seq, at_us, json } => {
                        follow(&mut end, *seq)?;
                        buf.extend_from_slice(json);
                        buf.push(b'\n');
                        index_at(&mut activity_at, &mut indexed_at, *seq, *at_us)?;
                        replayed_records += 1;
                    }
                }
            }
            if !buf.is_empty() {
                pos.insert(first, records.append(&buf)?)?;
                buf.clear();
            }
            replayed += 1;
        }
        if replayed > 0 {
            tracing::info!(frames = replayed, records = replayed_records, "replayed the journal into the database");
        }
    }
    end.len = records.len();
    records.truncate()?;
    records.sync()?;
    records::set_end(&tx, end)?;
    let indexed = index::catch_up(&tx, records.path())?;
    if indexed > 0 {
        tracing::info!(records = indexed, "indexed the activity records the filter index lacked");
    }
    let applied = frames.last().map_or(0, |f| f.number).max(applied);
    set_journal_applied(&tx, applied)?;
    tx.commit()?;
    Ok(applied)
}

/// Counts record `seq` into `end`, which must be where it belongs: the log is gap-free.
fn follow(end: &mut records::End, seq: u64) -> Result<(), StoreError> {
    if seq != end.next_seq {
        return Err(StoreError::Corrupt(format!("record {seq} found where record {} belongs", end.next_seq)));
    }
    end.next_seq += 1;
    Ok(())
}
