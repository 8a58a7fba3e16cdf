//! The activity log's records on disk: `data_dir/activity.log`, one sealed record per line
//! (its canonical JSON, which never contains a raw newline), in `seq` order, only ever appended.
//!
//! Records used to be values in a redb table. A B-tree of ~450-byte values cost the writer more
//! than everything else a download does together — every group commit copied the touched leaf and
//! branch pages and wrote them out again (measured: 19–23 µs of writer CPU per download with
//! records in redb, 10–11 µs without). Here a group's records are one `pwrite` at the end of the
//! file, and redb keeps only what makes the file readable and consistent:
//!
//! - `meta/activity_end` ([`End`]): the next `seq` and the file's length as of that commit. A
//!   reader reads no further than the `End` its read transaction sees — bytes past it belong to a
//!   commit it cannot see yet — so a query is as consistent as any other redb read.
//! - `activity_pos`: `seq → offset` of the first record of each group commit (sparse). A read
//!   starting at any `seq` seeks to the nearest entry at or before it and skips forward line by
//!   line (`seq` is gap-free, so the n-th line after the entry is `seq + n`).
//! - `activity_at` (in [`super`]): the time index, as before.
//!
//! Appends are written `O_DIRECT` where the filesystem allows it: the bytes go from the writer's
//! buffer to the device without a page-cache copy and later writeback, which measured as a fifth of
//! the 4 KiB download rate when the file was written buffered (the journal already holds the same
//! records durably, so nothing waits for them here but the device). `O_DIRECT` writes whole
//! aligned blocks, so the writer keeps the file's last partial block in memory and writes it again,
//! with the new records after it and zeros up to the block's end; past [`End::len`] the file holds
//! only that padding, which readers never reach and the next append writes over.
//!
//! Appends grow the file. (From 2026-12-04 to 12-06 the writer kept it written with zeros a few
//! MiB ahead of its end, at each checkpoint, because a growing file then cost an extra device
//! write per group commit. Since records are appended in batches ([`super::pending`]) rather than
//! in every group, that cost is gone, while writing the zeros made each checkpoint — a commit
//! every download waiting on it waits for — 2.7 ms longer on average, up to 10 ms: the README
//! has the measurements.)
//!
//! Durability follows the writer's two kinds of commit (see [`super::journal`]). A journalled
//! group's records are also in its journal frame, so the file is not fsynced for it — nor even
//! written in every group: the writer gathers records and appends them in batches
//! ([`super::pending`]), and `End` moves only when it does; a durable redb
//! commit (a checkpoint, an admin change) fsyncs the file first and then commits, so redb's durable
//! `End` never covers bytes that are not on disk. After a crash the durable `End` is where the file
//! is good up to: recovery writes the journal's records again from there (the same sealed bytes)
//! and cuts the file at the new end, then fsyncs it before its durable commit.

use super::disk::DiskSwitch;
use super::journal::{aligned_window, BLOCK};
use super::{StoreError, META};
use redb::{ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// The record file's name in `data_dir`.
pub const RECORDS_FILE: &str = "activity.log";

/// `seq` of the first record of a group commit → its offset in the record file.
pub(crate) const ACTIVITY_POS: TableDefinition<u64, u64> = TableDefinition::new("activity_pos");

/// `meta` key of the [`End`] (16 bytes: next seq, length; big-endian).
const ACTIVITY_END: &str = "activity_end";

/// How far the record file goes as of one commit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct End {
    /// The `seq` the next record gets (records `1..next_seq` exist).
    pub next_seq: u64,
    /// The file's length in bytes.
    pub len: u64,
}

impl Default for End {
    fn default() -> End {
        End { next_seq: 1, len: 0 }
    }
}

/// The [`End`] a transaction sees (an empty log if none was written yet).
pub(super) fn end(meta: &impl ReadableTable<&'static str, &'static [u8]>) -> Result<End, StoreError> {
    let Some(v) = meta.get(ACTIVITY_END)? else { return Ok(End::default()) };
    let v = v.value();
    match (v.get(..8), v.get(8..16)) {
        (Some(a), Some(b)) => Ok(End {
            next_seq: u64::from_be_bytes(a.try_into().unwrap_or_default()),
            len: u64::from_be_bytes(b.try_into().unwrap_or_default()),
        }),
        _ => Err(StoreError::Corrupt("meta/activity_end is not 16 bytes".into())),
    }
}

pub(super) fn set_end(tx: &WriteTransaction, end: End) -> Result<(), StoreError> {
    let mut v = [0u8; 16];
    v[..8].copy_from_slice(&end.next_seq.to_be_bytes());
    v[8..].copy_from_slice(&end.len.to_be_bytes());
    tx.open_table(META)?.insert(ACTIVITY_END, v.as_slice())?;
    Ok(())
}

/// The [`End`] a read transaction sees; an empty log if the database predates the record file's
/// tables (read-only opens cannot create them).
fn end_in(tx: &ReadTransaction) -> Result<End, StoreError> {
    match tx.open_table(META) {
        Ok(meta) => end(&meta),
        Err(redb::TableError::TableDoesNotExist(_)) => Ok(End::default()),
        Err(e) => Err(e.into()),
    }
}

/// Feeds `f` every record from `from_seq` on, as `(seq, stored bytes)`, up to what `tx` sees;
/// stops early when `f` returns `false`. A file shorter than redb says it is, or a missing file,
/// is [`StoreError::Corrupt`].
pub(super) fn walk(
    tx: &ReadTransaction,
    path: &Path,
    from_seq: u64,
    mut f: impl FnMut(u64, &[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    walk_from(&tx.open_table(ACTIVITY_POS)?, end_in(tx)?, path, from_seq, |seq, _, line| f(seq, line))
}

/// Feeds `f` every record from `from_seq` to the write transaction's [`End`], as `(seq, offset,
/// stored bytes)` (indexing records after a crash, or a whole log the first time).
pub(super) fn walk_write(
    tx: &WriteTransaction,
    path: &Path,
    from_seq: u64,
    mut f: impl FnMut(u64, u64, &[u8]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let end = end(&tx.open_table(META)?)?;
    walk_from(&tx.open_table(ACTIVITY_POS)?, end, path, from_seq, |seq, offset, line| {
        f(seq, offset, line)?;
        Ok(true)
    })
}

/// Seeks the position index to the group holding `from_seq` and reads lines from there up to
/// `end`, feeding `(seq, offset, line)` from `from_seq` on until `f` returns `false`.
fn walk_from(
    pos: &impl ReadableTable<u64, u64>,
    end: End,
    path: &Path,
    from_seq: u64,
    mut f: impl FnMut(u64, u64, &[u8]) -> Result<bool, StoreError>,
) -> Result<(), StoreError> {
    let from = from_seq.max(1);
    if from >= end.next_seq {
        return Ok(());
    }
    let (mut seq, mut offset) = match pos.range(..=from)?.next_back() {
        Some(item) => {
            let (k, v) = item?;
            (k.value(), v.value())
        }
        None => (1, 0),
    };
    let mut file = File::open(path).map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut r = BufReader::with_capacity(64 << 10, file.take(end.len.saturating_sub(offset)));
    let mut line = Vec::with_capacity(1024);
    while seq < end.next_seq {
        line.clear();
        let n = r.read_until(b'\n', &mut line)? as u64;
        if line.pop() != Some(b'\n') {
            return Err(StoreError::Corrupt(format!("{} ends before record {seq}", path.display())));
        }
        if seq >= from && !f(seq, offset, &line)? {
            break;
        }
        offset += n;
        seq += 1;
    }
    Ok(())
}

/// Reads single records at known offsets (from the filter index), no further than an [`End`].
pub(super) struct Reader {
    file: File,
    end: End,
    path: PathBuf,
}

impl Reader {
    pub(super) fn open(tx: &ReadTransaction, path: &Path) -> Result<Reader, StoreError> {
        let file = File::open(path).map_err(|e| StoreError::Corrupt(format!("{}: {e}", path.display())))?;
        Ok(Reader { file, end: end_in(tx)?, path: path.to_owned() })
    }

    /// Does the transaction see record `seq`? (An index entry may be newer: see [`super::pending`].)
    pub(super) fn has(&self, seq: u64) -> bool {
        seq < self.end.next_seq
    }

    /// The record whose line starts at `offset`.
    pub(super) fn read(&self, offset: u64) -> Result<Vec<u8>, StoreError> {
        let mut out = Vec::with_capacity(1024);
        let mut buf = [0u8; 2048];
        let mut at = offset;
        while at < self.end.len {
            let want = ((self.end.len - at) as usize).min(buf.len());
            let n = self.file.read_at(&mut buf[..want], at)?;
            if n == 0 {
                break;
            }
            if let Some(i) = buf[..n].iter().position(|b| *b == b'\n') {
                out.extend_from_slice(&buf[..i]);
                return Ok(out);
            }
            out.extend_from_slice(&buf[..n]);
            at += n as u64;
        }
        Err(StoreError::Corrupt(format!("{}: no whole record at offset {offset}", self.path.display())))
    }
}

/// The last record a transaction sees, as `(seq, stored bytes)`.
pub(super) fn last(tx: &ReadTransaction, path: &Path) -> Result<Option<(u64, Vec<u8>)>, StoreError> {
    let mut out = None;
    walk(tx, path, end_in(tx)?.next_seq.saturating_sub(1), |seq, raw| {
        out = Some((seq, raw.to_vec()));
        Ok(true)
    })?;
    Ok(out)
}

/// An fsync of the record file to run on another thread: `None` if nothing is unsynced.
pub(super) struct RecordSync {
    file: Option<File>,
    switch: Option<DiskSwitch>,
    /// How much of the file it covers.
    pub(super) len: u64,
}

impl RecordSync {
    pub(super) fn sync(&self) -> std::io::Result<()> {
        if let Some(f) = &self.file {
            self.switch.as_ref().map_or(Ok(()), DiskSwitch::check)?;
            f.sync_data()?;
        }
        Ok(())
    }
}

/// The writer's handle on the record file.
pub struct RecordFile {
    path: PathBuf,
    file: File,
    /// Where the next append goes.
    len: u64,
    /// How much of the file is known to be fsynced.
    synced: u64,
    switch: Option<DiskSwitch>,
    /// The file opened `O_DIRECT`, if the filesystem allows it.
    direct: Option<File>,
    /// The bytes of the block `len` falls in, before `len` (what an `O_DIRECT` append rewrites).
    tail: Vec<u8>,
    /// The block-aligned buffer appends are composed in.
    scratch: Vec<u8>,
}

impl RecordFile {
    /// Opens (creating) the file. Appends are placed after [`RecordFile::reset`] says where the
    /// good part ends.
    pub fn open(path: &Path, switch: Option<DiskSwitch>) -> std::io::Result<RecordFile> {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let len = file.metadata()?.len();
        let flags = rustix::fs::OFlags::DIRECT.bits() as i32;
        let direct = std::fs::OpenOptions::new().write(true).custom_flags(flags).open(path).ok();
        let mut f = RecordFile {
            path: path.to_owned(),
            file,
            len: 0,
            synced: 0,
            switch,
            direct,
            tail: Vec::new(),
            scratch: Vec::new(),
        };
        f.load_tail(len)?;
        f.len = len;
        Ok(f)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The length the file will have once everything appended is written.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn check(&self) -> std::io::Result<()> {
        self.switch.as_ref().map_or(Ok(()), DiskSwitch::check)
    }

    /// Writes `buf` at the end (not synced); returns the offset it starts at.
    pub fn append(&mut self, buf: &[u8]) -> std::io::Result<u64> {
        self.check()?;
        let at = self.len;
        if self.direct.is_some() {
            self.append_direct(buf)?;
        } else {
            self.file.write_all_at(buf, at)?;
        }
        self.len += buf.len() as u64;
        Ok(at)
    }

    /// The `O_DIRECT` append: the last partial block again, `buf`, zeros to the block's end.
    fn append_direct(&mut self, buf: &[u8]) -> std::io::Result<()> {
        let start = self.len - self.tail.len() as u64;
        let content = self.tail.len() + buf.len();
        let total = content.div_ceil(BLOCK) * BLOCK;
        let out = aligned_window(&mut self.scratch, total);
        out[..self.tail.len()].copy_from_slice(&self.tail);
        out[self.tail.len()..content].copy_from_slice(buf);
        out[content..].fill(0);
        let written = match &self.direct {
            Some(direct) => direct.write_all_at(out, start),
            None => Err(std::io::ErrorKind::Unsupported.into()),
        };
        match written {
            Ok(()) => {
                let keep = ((self.len + buf.len() as u64) % BLOCK as u64) as usize;
                self.tail.clear();
                self.tail.extend_from_slice(&out[content - keep..content]);
                Ok(())
            }
            // Refused after all: buffered from here on.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported) => {
                tracing::info!(error = %e, "activity.log: O_DIRECT writes refused; writing buffered");
                self.direct = None;
                self.file.write_all_at(buf, self.len)
            }
            Err(e) => Err(e),
        }
    }

    /// Reads the partial block before `len` into `tail` (direct mode only).
    fn load_tail(&mut self, len: u64) -> std::io::Result<()> {
        self.tail.clear();
        if self.direct.is_some() {
            let keep = (len % BLOCK as u64) as usize;
            self.tail.resize(keep, 0);
            self.file.read_exact_at(&mut self.tail, len - keep as u64)?;
        }
        Ok(())
    }

    /// Makes everything appended so far durable (a no-op if it already is).
    pub fn sync(&mut self) -> std::io::Result<()> {
        if self.synced != self.len {
            self.check()?;
            self.file.sync_data()?;
            self.synced = self.len;
        }
        Ok(())
    }

    /// What syncs the file as it is now from another thread (a checkpoint's, see
    /// [`super::checkpointer`]); tell [`RecordFile::synced_to`] once it has.
    pub(super) fn syncer(&self) -> std::io::Result<RecordSync> {
        let file = if self.synced == self.len { None } else { Some(self.file.try_clone()?) };
        Ok(RecordSync { file, switch: self.switch.clone(), len: self.len })
    }

    /// A [`RecordSync`] of the file up to `len` succeeded.
    pub(super) fn synced_to(&mut self, len: u64) {
        self.synced = self.synced.max(len);
    }

    /// Places the next append at `len` — the durable [`End`] — so whatever a crash or a failed
    /// commit left past it is written over. Fails if the file is shorter than that: records redb
    /// vouches for are gone, and the server must not carry on as if they were there.
    pub fn reset(&mut self, len: u64) -> Result<(), StoreError> {
        let actual = self.file.metadata()?.len();
        if actual < len {
            return Err(StoreError::Corrupt(format!(
                "{} is {actual} bytes, but the database's records reach byte {len}",
                self.path.display()
            )));
        }
        self.load_tail(len)?;
        self.len = len;
        self.synced = 0;
        Ok(())
    }

    /// Cuts off anything past the current end (left by a crash, or written again shorter).
    pub fn truncate(&mut self) -> std::io::Result<()> {
        if self.file.metadata()?.len() != self.len {
            self.check()?;
            self.file.set_len(self.len)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redb::{Database, ReadableDatabase};

    fn commit(db: &Database, f: &mut RecordFile, first_seq: u64, lines: &[&str]) {
        let tx = db.begin_write().unwrap();
        let mut buf = Vec::new();
        for l in lines {
            buf.extend_from_slice(l.as_bytes());
            buf.push(b'\n');
        }
        let at = f.append(&buf).unwrap();
        tx.open_table(ACTIVITY_POS).unwrap().insert(first_seq, at).unwrap();
        set_end(&tx, End { next_seq: first_seq + lines.len() as u64, len: f.len() }).unwrap();
        tx.commit().unwrap();
    }

    fn read(db: &Database, path: &Path, from: u64) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        walk(&db.begin_read().unwrap(), path, from, |seq, raw| {
            out.push((seq, String::from_utf8(raw.to_vec()).unwrap()));
            Ok(true)
        })
        .unwrap();
        out
    }

    #[test]
    fn a_walk_from_any_seq_seeks_the_nearest_group_and_reads_to_the_committed_end() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        let path = dir.path().join(RECORDS_FILE);
        let mut f = RecordFile::open(&path, None).unwrap();
        f.reset(0).unwrap();
        commit(&db, &mut f, 1, &["a", "b", "c"]);
        commit(&db, &mut f, 4, &["d"]);
        commit(&db, &mut f, 5, &["e", "f"]);
        // Appended but never committed: no reader may see it.
        f.append(b"g\n").unwrap();
        let all: Vec<String> = read(&db, &path, 0).into_iter().map(|(_, s)| s).collect();
        assert_eq!(all, ["a", "b", "c", "d", "e", "f"]);
        assert_eq!(
            read(&db, &path, 2),
            [(2, "b".into()), (3, "c".into()), (4, "d".into()), (5, "e".into()), (6, "f".into())]
        );
        assert_eq!(read(&db, &path, 6), [(6, "f".into())]);
        assert!(read(&db, &path, 7).is_empty());
        assert_eq!(last(&db.begin_read().unwrap(), &path).unwrap(), Some((6, b"f".to_vec())));
    }

    #[test]
    fn a_file_shorter_than_the_database_says_is_refused_not_read_short() {
        let dir = tempfile::tempdir().unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        let path = dir.path().join(RECORDS_FILE);
        let mut f = RecordFile::open(&path, None).unwrap();
        f.reset(0).unwrap();
        commit(&db, &mut f, 1, &["one", "two"]);
        std::fs::OpenOptions::new().write(true).open(&path).unwrap().set_len(5).unwrap();
        let err = walk(&db.begin_read().unwrap(), &path, 1, |_, _| Ok(true)).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err}");
        let mut again = RecordFile::open(&path, None).unwrap();
        assert!(matches!(again.reset(8), Err(StoreError::Corrupt(_))));
    }

    #[test]
    fn a_reset_writes_over_the_uncommitted_tail_and_truncate_cuts_what_is_left() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECORDS_FILE);
        let mut f = RecordFile::open(&path, None).unwrap();
        f.reset(0).unwrap();
        f.append(b"kept\nlost-after-a-crash\n").unwrap();
        f.reset(5).unwrap();
        assert_eq!(f.append(b"new\n").unwrap(), 5);
        f.truncate().unwrap();
        f.sync().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"kept\nnew\n");
    }

    /// `O_DIRECT` appends rewrite the last partial block; after any mix of sizes, and after reopening
    /// mid-block, the file up to the end holds exactly what was appended.
    /// The file as the writer has it after recovery; `direct: false` is the buffered path taken
    /// where the filesystem refuses `O_DIRECT`.
    fn open_at(path: &Path, len: u64, direct: bool) -> RecordFile {
        let mut f = RecordFile::open(path, None).unwrap();
        if !direct {
            f.direct = None;
        }
        f.reset(len).unwrap();
        f
    }

    #[test]
    fn appends_of_any_size_across_blocks_and_reopens_keep_every_byte() {
        for direct in [true, false] {
            appends_keep_every_byte(direct);
        }
    }

    fn appends_keep_every_byte(direct: bool) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECORDS_FILE);
        let mut expected = Vec::new();
        let mut f = open_at(&path, 0, direct);
        for (i, n) in [1usize, 700, 4095, 4096, 4097, 13, 9000, 1, 2].into_iter().enumerate() {
            let line: Vec<u8> = (0..n).map(|k| b'a' + ((i + k) % 26) as u8).chain([b'\n']).collect();
            assert_eq!(f.append(&line).unwrap(), expected.len() as u64);
            expected.extend_from_slice(&line);
            if i == 4 {
                // Reopen in the middle of a block, as a restart does.
                drop(f);
                f = open_at(&path, expected.len() as u64, direct);
            }
        }
        f.sync().unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[..expected.len()], expected.as_slice(), "direct: {direct}");
        f.truncate().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), expected, "direct: {direct}");
    }

    /// `O_DIRECT` appends write whole blocks, so the file holds zeros past the end: readers stop
    /// at the committed end, and a restart cuts the padding off.
    #[test]
    fn the_padding_past_the_end_is_never_read_and_a_restart_cuts_it_off() {
        // `target/`, not the system temp dir: it may be a tmpfs, which refuses `O_DIRECT`.
        let dir = tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/target")).unwrap();
        let db = Database::create(dir.path().join("db")).unwrap();
        let path = dir.path().join(RECORDS_FILE);
        let mut f = RecordFile::open(&path, None).unwrap();
        assert!(f.direct.is_some(), "this test needs O_DIRECT where target/ is (ext4, xfs)");
        f.reset(0).unwrap();
        commit(&db, &mut f, 1, &["a", "b"]);
        let line = "x".repeat(99);
        for seq in 3..53 {
            commit(&db, &mut f, seq, &[&line]);
        }
        f.sync().unwrap();
        let size = std::fs::metadata(&path).unwrap().len();
        assert!(size > f.len() && size % BLOCK as u64 == 0, "{size} bytes on disk for {}", f.len());
        let all = read(&db, &path, 1);
        assert_eq!(all.len(), 52);
        assert_eq!(all.last().unwrap(), &(52, line.clone()));
        assert_eq!(last(&db.begin_read().unwrap(), &path).unwrap(), Some((52, line.clone().into_bytes())));

        let durable = f.len();
        drop(f);
        let mut again = open_at(&path, durable, true);
        again.truncate().unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), durable);
        assert_eq!(read(&db, &path, 52), [(52, line)]);
    }

    #[test]
    fn a_full_disk_switch_fails_appends_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(RECORDS_FILE);
        let switch = DiskSwitch::default();
        let mut f = RecordFile::open(&path, Some(switch.clone())).unwrap();
        f.reset(0).unwrap();
        switch.set_full(true);
        assert_eq!(f.append(b"x\n").unwrap_err().raw_os_error(), Some(28));
        assert_eq!((f.len(), std::fs::metadata(&path).unwrap().len()), (0, 0));
    }
}
