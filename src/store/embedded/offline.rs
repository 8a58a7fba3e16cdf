//! Reading the activity log of a database no server has open (`keydrop verify-log`).

use super::{journal, records, recover};
use super::{writer, StoreError, JOURNAL_FILE, LEGACY_ACTIVITY, META, RECORDS_FILE};
use crate::activity::Record;
use redb::{ReadableDatabase, ReadableTableMetadata, TableDefinition};
use std::path::Path;

/// Reads every activity record of a database that no server has open (for `verify-log`),
/// feeding them in order to `f`.
///
/// A database left by a crash (`kill -9`, power loss) needs redb's repair before it can be read,
/// its newest records may still be only in the journal (see [`journal`]), and one written before
/// the record file existed still holds its records in a table. A read-only open can do none of
/// that, so in those cases the database is opened for writing, repaired, caught up from the
/// journal and migrated — exactly what the server does on its next start — and read the same way.
pub fn scan_activity_offline(path: &Path, f: impl FnMut(Result<Record, String>) -> bool) -> Result<(), StoreError> {
    let journal_path = path.with_file_name(JOURNAL_FILE);
    let records_path = path.with_file_name(RECORDS_FILE);
    match redb::ReadOnlyDatabase::open(path) {
        Ok(db) => {
            let tx = db.begin_read()?;
            if !journal_pending(&tx, &journal_path)? && !legacy_records(&tx)? {
                return scan_records(&tx, &records_path, f);
            }
        }
        Err(redb::DatabaseError::RepairAborted) => {}
        Err(e) => return Err(e.into()),
    }
    let db = redb::Database::builder().open(path)?;
    let frames = if journal_path.exists() { journal::read_file(&journal_path)? } else { Vec::new() };
    writer::recover(&db, &frames, &mut records::RecordFile::open(&records_path, None)?)?;
    scan_records(&db.begin_read()?, &records_path, f)
}

/// Opens a table of a read transaction; `None` if the database never created it.
fn open_if_there<K: redb::Key + 'static, V: redb::Value + 'static>(
    tx: &redb::ReadTransaction,
    def: TableDefinition<K, V>,
) -> Result<Option<redb::ReadOnlyTable<K, V>>, StoreError> {
    match tx.open_table(def) {
        Ok(t) => Ok(Some(t)),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Does the journal hold frames or records the database lacks?
pub(super) fn journal_pending(tx: &redb::ReadTransaction, journal_path: &Path) -> Result<bool, StoreError> {
    if !journal_path.exists() {
        return Ok(false);
    }
    let (applied, end) = match open_if_there(tx, META)? {
        Some(meta) => (writer::journal_applied(&meta)?, records::end(&meta)?),
        None => (0, records::End::default()),
    };
    Ok(recover::needs_recovery(&journal::read_file(journal_path)?, applied, end))
}

/// Does the database still hold records in the table they lived in before the record file?
pub(super) fn legacy_records(tx: &redb::ReadTransaction) -> Result<bool, StoreError> {
    Ok(open_if_there(tx, LEGACY_ACTIVITY)?.map(|t| t.len()).transpose()?.unwrap_or(0) > 0)
}

pub(super) fn scan_records(
    tx: &redb::ReadTransaction,
    records_path: &Path,
    mut f: impl FnMut(Result<Record, String>) -> bool,
) -> Result<(), StoreError> {
    let walked = records::walk(tx, records_path, 1, |seq, raw| {
        Ok(f(serde_json::from_slice::<Record>(raw).map_err(|e| format!("record {seq}: undecodable: {e}"))))
    });
    match walked {
        // A record file cut short is a finding for the verifier, not a failure to read.
        Err(StoreError::Corrupt(msg)) => {
            f(Err(msg));
            Ok(())
        }
        other => other,
    }
}
