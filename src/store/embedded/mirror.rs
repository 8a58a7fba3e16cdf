//! The JSON Lines mirror of the activity log (`[activity] jsonl_path`): a copy of every committed
//! record, kept by the writer after each commit.

use super::records;
use super::StoreError;
use redb::{Database, ReadableDatabase};
use std::io::{BufRead, Write};
use std::path::PathBuf;

/// The JSON Lines mirror of the activity log: one committed record per line, appended and
/// fsynced after each durable commit (before anyone is answered), and caught up from redb on
/// start and after a failed write, so it never has a record redb lacks and never stays behind.
pub(super) struct Mirror {
    path: PathBuf,
    file: std::fs::File,
    last_seq: u64,
    /// The record file it copies from.
    records: PathBuf,
}

impl Mirror {
    pub(super) fn open(path: PathBuf, records: PathBuf) -> Result<Mirror, StoreError> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut last_seq = 0;
        if let Ok(f) = std::fs::File::open(&path) {
            for line in std::io::BufReader::new(f).lines() {
                let line = line?;
                if let Some(seq) = serde_json::from_str::<serde_json::Value>(&line).ok().and_then(|v| v["seq"].as_u64())
                {
                    last_seq = seq;
                }
            }
        }
        let file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
        Ok(Mirror { path, file, last_seq, records })
    }

    /// Appends every record redb has after the mirror's last line.
    pub(super) fn catch_up(&mut self, db: &Database) -> Result<(), StoreError> {
        let mut buf = Vec::new();
        let mut last = self.last_seq;
        records::walk(&db.begin_read()?, &self.records, self.last_seq + 1, |seq, raw| {
            buf.extend_from_slice(raw);
            buf.push(b'\n');
            last = seq;
            Ok(true)
        })?;
        if !buf.is_empty() {
            self.file.write_all(&buf)?;
            self.file.sync_data()?;
            self.last_seq = last;
        }
        Ok(())
    }

    pub(super) fn append(&mut self, db: &Database, records: &[(u64, Vec<u8>)]) {
        let Some(first) = records.first() else { return };
        let result = (|| -> Result<(), StoreError> {
            if first.0 != self.last_seq + 1 {
                self.catch_up(db)?;
                return Ok(());
            }
            let mut buf = Vec::new();
            for (_, json) in records {
                buf.extend_from_slice(json);
                buf.push(b'\n');
            }
            self.file.write_all(&buf)?;
            self.file.sync_data()?;
            self.last_seq = records.last().map_or(self.last_seq, |r| r.0);
            Ok(())
        })();
        if let Err(e) = result {
            tracing::error!(path = %self.path.display(), error = %e, "activity mirror write failed; will catch up");
            // Re-read the file's real end next time.
            if let Ok(m) = Mirror::open(self.path.clone(), self.records.clone()) {
                *self = m;
            }
        }
    }
}
