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
///    time index, and its records written to the file again — and so is every journalled record
///    past the durable `End` of a frame redb already holds (records are written to the file in
///    batches, after their frames: see [`super::pending`]).
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
        for f in frames {
            let replay = f.number > applied;
            let first = end.next_seq;
            for op in &f.ops {
                match op {
                    JournalOp::Reserve { key, bytes } if replay => add_spent(&mut spent, key, *bytes, true)?,
                    JournalOp::Refund { key, bytes } if replay => add_spent(&mut spent, key, *bytes, false)?,
                    JournalOp::Record { seq, at_us, json } if *seq >= end.next_seq => {
                        follow(&mut end, *seq)?;
                        buf.extend_from_slice(json);
                        buf.push(b'\n');
                        // A frame redb holds has its time index entries already.
                        if replay {
                            index_at(&mut activity_at, &mut indexed_at, *seq, *at_us)?;
                        }
                        replayed_records += 1;
                    }
                    _ => {}
                }
            }
            if !buf.is_empty() {
                pos.insert(first, records.append(&buf)?)?;
                buf.clear();
            }
            replayed += u64::from(replay);
        }
        if replayed + replayed_records > 0 {
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

/// Does the journal hold anything the database lacks — a frame past `applied`, or a record past
/// `end` (what [`recover`] would write)?
pub(super) fn needs_recovery(frames: &[Frame], applied: u64, end: records::End) -> bool {
    frames.iter().any(|f| {
        f.number > applied || f.ops.iter().any(|op| matches!(op, JournalOp::Record { seq, .. } if *seq >= end.next_seq))
    })
}

/// Counts record `seq` into `end`, which must be where it belongs: the log is gap-free.
fn follow(end: &mut records::End, seq: u64) -> Result<(), StoreError> {
    if seq != end.next_seq {
        return Err(StoreError::Corrupt(format!("record {seq} found where record {} belongs", end.next_seq)));
    }
    end.next_seq += 1;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::activity::{Entry, Kind, Record, GENESIS};
    use redb::ReadableDatabase;

    fn sealed(n: u64) -> Vec<Vec<u8>> {
        let mut prev = GENESIS.to_owned();
        (1..=n)
            .map(|seq| {
                let (json, hash) =
                    Record::seal_json(&Entry::new(Kind::DownloadStarted), seq, "2026-01-01T00:00:00.000000Z", &prev);
                prev = hash;
                json
            })
            .collect()
    }

    fn record(seq: u64, json: &[u8]) -> JournalOp {
        JournalOp::Record { seq, at_us: 1_000 + seq, json: json.to_vec() }
    }

    /// Records reach the record file in batches, after their frames (see `super::pending`): redb
    /// can hold a frame — its counters — whose records the file does not have yet. Recovery writes
    /// those records from the journal without counting the frame's reservations twice, and a
    /// second recovery changes nothing.
    #[test]
    fn records_past_the_durable_end_are_written_even_from_frames_the_database_holds() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        let path = dir.path().join(records::RECORDS_FILE);
        let json = sealed(4);
        let key = [5u8; 24];
        {
            // What a commit of frames 1 and 2 that published none of their records leaves.
            let tx = db.begin_write().unwrap();
            tx.open_table(SPENT).unwrap().insert(key.as_slice(), 300).unwrap();
            set_journal_applied(&tx, 2).unwrap();
            tx.commit().unwrap();
        }
        let frames = vec![
            Frame { number: 1, ops: vec![JournalOp::Reserve { key, bytes: 100 }, record(1, &json[0])] },
            Frame {
                number: 2,
                ops: vec![JournalOp::Reserve { key, bytes: 200 }, record(2, &json[1]), record(3, &json[2])],
            },
            Frame { number: 3, ops: vec![JournalOp::Reserve { key, bytes: 50 }, record(4, &json[3])] },
        ];
        for _ in 0..2 {
            let mut file = RecordFile::open(&path, None).unwrap();
            assert_eq!(recover(&db, &frames, &mut file).unwrap(), 3);
            let tx = db.begin_read().unwrap();
            let spent = tx.open_table(SPENT).unwrap().get(key.as_slice()).unwrap().map(|v| v.value());
            assert_eq!(spent, Some(350), "frames 1 and 2 were counted once; frame 3 is replayed");
            assert_eq!(records::end(&tx.open_table(META).unwrap()).unwrap().next_seq, 5);
            let mut seen = Vec::new();
            records::walk(&tx, &path, 1, |seq, raw| {
                seen.push((seq, raw.to_vec()));
                Ok(true)
            })
            .unwrap();
            assert_eq!(seen, json.iter().cloned().enumerate().map(|(i, j)| (i as u64 + 1, j)).collect::<Vec<_>>());
            let lines = std::fs::read(&path).unwrap().iter().filter(|b| **b == b'\n').count();
            assert_eq!(lines, 4, "nothing written twice");
        }
    }
}
