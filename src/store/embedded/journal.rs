//! The hot-path journal: what makes a download's reservation durable without a redb fsync.
//!
//! A download changes three things: its link's spent counter (a reservation, later perhaps a
//! refund) and two activity records. Committing those to redb durably costs a copy-on-write of
//! every touched B-tree page plus redb's free-page bookkeeping, written and fsynced per group —
//! measured, that was most of the writer's time. So for groups made only of those ops the writer
//! instead appends one *frame* to this preallocated file and `fdatasync`s it, then commits the
//! same changes to redb with `Durability::None` (visible to readers at once, durable only at the
//! next durable commit). Every durable redb commit stores the number of the last frame whose
//! changes it contains (`meta/journal_applied`), after which the journal starts again at offset 0.
//!
//! The journal is two files (`journal.wal`, `journal.1.wal`). A checkpoint's durable commit runs
//! on a thread of its own ([`super::checkpointer`]): when it starts, frames go on at offset 0 of
//! the other file ([`Journal::switch`]), and the next switch back waits until that commit has
//! ended — so a file is written over only once redb durably holds every frame in it.
//!
//! After a crash, redb holds the state of its last durable commit; [`Journal::read_back`] reads
//! every intact frame, and the writer re-applies, in one durable transaction, those numbered past
//! `journal_applied`, from both files in number order. Replaying is exact: records are stored sealed (seq, time, hash) and counter
//! changes are deltas applied in their original order to the same starting state.
//!
//! ## Frame layout (little-endian)
//!
//! `magic "KDJ2" | frame number u64 | payload length u32 | CRC-32(number ‖ length ‖ payload) u32 |
//! 12 zero bytes | payload`, where the payload is a sequence of ops: `1 key[24] bytes u64`
//! (reserve), `2 key[24] bytes u64` (refund), `3 seq u64 at_us u64 len u32 json[len]` (a sealed
//! record). Reading stops at the first frame that is torn, fails its checksum or does not carry the
//! next number — so stale frames from before the last restart at offset 0 (all numbered lower) are
//! never replayed.
//!
//! The checksum only tells a torn or damaged frame from a whole one (what a WAL's CRC does); the
//! records inside carry their own SHA-256 chain, which is what makes the log tamper-evident. Frames
//! written before this layout (`"KDJ1"`: the first 16 bytes of SHA-256 over the same bytes, a
//! cryptographic hash where none is needed) are still read, so a journal an older build left replays.
//!
//! Each frame starts on a [`BLOCK`] boundary and is padded with zeros to the next one, because
//! the file is written with `O_DIRECT | O_DSYNC` where the filesystem allows it: one write that
//! returns once the frame is on stable storage, without the page cache. Measured here (20 KiB
//! writes, `dd`): 99 µs per write against 180 µs for a buffered write plus `fdatasync`. The group
//! commit's latency is what bounds downloads per second, so this is the journal's main lever.
//! Where `O_DIRECT` is refused (some filesystems), frames are written buffered and `fdatasync`ed.

use super::disk::DiskSwitch;
use super::SpentKey;
use std::fs::File;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Each journal file's size: it is written with zeros once, so appends never allocate blocks.
pub const CAPACITY: u64 = 4 << 20;
/// Past this offset the writer makes redb durable and starts the journal over.
pub const CHECKPOINT_AT: u64 = 2 << 20;

/// The layout written: a CRC-32 checksum.
const MAGIC: &[u8; 4] = b"KDJ2";
/// The layout of older builds, still read: a truncated SHA-256 checksum.
const MAGIC_SHA: &[u8; 4] = b"KDJ1";
const HEADER: usize = 4 + 8 + 4 + 16;
/// Frames start on this boundary and are padded to it (the alignment `O_DIRECT` asks for).
pub const BLOCK: usize = 4096;

/// A frame's size in the file: header and payload, padded to a whole number of blocks.
fn padded(payload: usize) -> usize {
    (HEADER + payload).div_ceil(BLOCK) * BLOCK
}

/// One change, as journalled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JournalOp {
    Reserve {
        key: SpentKey,
        bytes: u64,
    },
    Refund {
        key: SpentKey,
        bytes: u64,
    },
    /// A sealed activity record, exactly as stored.
    Record {
        seq: u64,
        at_us: u64,
        json: Vec<u8>,
    },
}

/// Builds one frame's payload.
#[derive(Default)]
pub struct FrameBuf {
    buf: Vec<u8>,
}

impl FrameBuf {
    pub fn clear(&mut self) {
        self.buf.clear();
    }

    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    pub fn reserve(&mut self, key: &SpentKey, bytes: u64) {
        self.counter(1, key, bytes);
    }

    pub fn refund(&mut self, key: &SpentKey, bytes: u64) {
        self.counter(2, key, bytes);
    }

    fn counter(&mut self, tag: u8, key: &SpentKey, bytes: u64) {
        self.buf.push(tag);
        self.buf.extend_from_slice(key);
        self.buf.extend_from_slice(&bytes.to_le_bytes());
    }

    pub fn record(&mut self, seq: u64, at_us: u64, json: &[u8]) {
        self.buf.push(3);
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf.extend_from_slice(&at_us.to_le_bytes());
        self.buf.extend_from_slice(&(json.len() as u32).to_le_bytes());
        self.buf.extend_from_slice(json);
    }

    /// Bytes the frame will take in the file.
    pub fn frame_len(&self) -> u64 {
        padded(self.buf.len()) as u64
    }
}

/// The open journal: two files, written in turn (see the module's notes on checkpoints).
pub struct Journal {
    sides: [Side; 2],
    /// The side frames are appended to.
    cur: usize,
    offset: u64,
    next_frame: u64,
    switch: Option<DiskSwitch>,
}

/// One of the journal's two files.
pub(super) struct Side {
    /// Buffered: zero-filling, reading back, and writing where `O_DIRECT` is refused.
    file: File,
    /// The same file opened `O_DIRECT | O_DSYNC`, if the filesystem allows it.
    direct: Option<File>,
}

/// An intact frame read back.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    pub number: u64,
    pub ops: Vec<JournalOp>,
}

impl Journal {
    /// Opens `path` and its second file ([`second_path`]), creating and zero-filling them if
    /// needed. The caller reads back what they hold ([`Journal::read_back`]), replays what its
    /// database lacks, makes that durable, then calls [`Journal::restart`]; until then appends
    /// are refused.
    pub fn open(path: &Path, switch: Option<DiskSwitch>) -> std::io::Result<Journal> {
        let sides = [Side::open(path)?, Side::open(&second_path(path))?];
        Ok(Journal { sides, cur: 0, offset: CAPACITY, next_frame: 1, switch })
    }

    /// Every intact frame of both files, in number order (see the module's notes on where
    /// reading stops). Also moves frame numbering past them.
    pub fn read_back(&mut self) -> std::io::Result<Vec<Frame>> {
        let frames = merge(read_frames(&self.sides[0].file)?, read_frames(&self.sides[1].file)?);
        if let Some(last) = frames.last() {
            self.next_frame = self.next_frame.max(last.number + 1);
        }
        Ok(frames)
    }

    /// Starts writing at offset 0 of the current file again, numbering frames after `applied`
    /// (and after anything already read). Only call once redb durably holds every frame written
    /// so far, in either file.
    pub fn restart(&mut self, applied: u64) {
        self.offset = 0;
        self.next_frame = self.next_frame.max(applied + 1);
    }

    /// Goes on at offset 0 of the other file, with the next number: what a checkpoint does when
    /// it starts, so that its durable commit can run while frames are still appended. Only call
    /// once redb durably holds every frame in the other file (the checkpoint before has ended).
    pub fn switch(&mut self) {
        self.cur ^= 1;
        self.offset = 0;
    }

    /// Where the next frame goes.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Would a frame of `len` bytes fit before the end of the file?
    pub fn fits(&self, len: u64) -> bool {
        self.offset + len <= CAPACITY
    }

    /// The number the next frame will carry.
    pub fn next_frame(&self) -> u64 {
        self.next_frame
    }

    /// Writes `payload` as the next frame on this thread and waits until it is on disk; returns
    /// its number. (The writer instead [`Journal::seal`]s frames for [`super::flusher`] to write.)
    pub fn append(&mut self, payload: &FrameBuf) -> std::io::Result<u64> {
        if let Some(s) = &self.switch {
            s.check()?;
        }
        let (offset, number) = (self.offset, self.next_frame);
        let mut frame = self.seal(payload)?;
        if let Err(e) = self.sides[frame.side].write(frame.offset, frame.bytes()) {
            (self.offset, self.next_frame) = (offset, number);
            return Err(e);
        }
        Ok(number)
    }

    /// Numbers `payload` as the next frame and lays it out in a buffer of its own, for another
    /// thread to write ([`Sealed::write`]): the journal counts it as written from here on, so
    /// the caller must not build on it until that write has succeeded.
    pub(super) fn seal(&mut self, payload: &FrameBuf) -> std::io::Result<Sealed> {
        let (offset, number, side) = (self.offset, self.next_frame, self.cur);
        let total = self.take_place(payload)?;
        let mut buf = Vec::new();
        lay_out(aligned_window(&mut buf, total), number, payload);
        Ok(Sealed { side, offset, buf, len: total })
    }

    /// Handles on both files for the thread that writes sealed frames ([`super::flusher`]).
    pub(super) fn writers(&self) -> std::io::Result<[Side; 2]> {
        Ok([self.sides[0].try_clone()?, self.sides[1].try_clone()?])
    }

    /// Reserves the place of `payload`'s frame: its padded size, if it fits.
    fn take_place(&mut self, payload: &FrameBuf) -> std::io::Result<usize> {
        let total = padded(payload.buf.len());
        if !self.fits(total as u64) {
            return Err(std::io::Error::other("journal frame does not fit"));
        }
        self.offset += total as u64;
        self.next_frame += 1;
        Ok(total)
    }
}

/// Writes frame `number` with `payload` into `out` (its padded size): header, checksum, payload,
/// zeros.
fn lay_out(out: &mut [u8], number: u64, payload: &FrameBuf) {
    let len = payload.buf.len();
    out[..4].copy_from_slice(MAGIC);
    out[4..12].copy_from_slice(&number.to_le_bytes());
    out[12..16].copy_from_slice(&(len as u32).to_le_bytes());
    out[16..HEADER].copy_from_slice(&checksum(number, len as u32, &payload.buf));
    out[HEADER..HEADER + len].copy_from_slice(&payload.buf);
    out[HEADER + len..].fill(0);
}

/// A frame numbered and laid out by [`Journal::seal`], not yet written.
pub(super) struct Sealed {
    /// Which of the two files, and where in it.
    pub(super) side: usize,
    pub(super) offset: u64,
    /// The frame is the `len` bytes at the [`BLOCK`]-aligned address inside `buf`.
    buf: Vec<u8>,
    len: usize,
}

impl Sealed {
    /// The frame's bytes, [`BLOCK`]-aligned in memory.
    pub(super) fn bytes(&mut self) -> &mut [u8] {
        aligned_window(&mut self.buf, self.len)
    }

    /// Where the frame ends in its file.
    pub(super) fn end(&self) -> u64 {
        self.offset + self.len as u64
    }
}

impl Side {
    /// Writes `out` (whole [`BLOCK`]s, aligned in memory) at `offset` and waits until it is on
    /// disk: one `O_DIRECT | O_DSYNC` write, or — where the filesystem refuses that — a buffered
    /// write and `fdatasync`.
    pub(super) fn write(&mut self, offset: u64, out: &[u8]) -> std::io::Result<()> {
        let written = match &self.direct {
            Some(direct) => direct.write_all_at(out, offset),
            None => Err(std::io::ErrorKind::Unsupported.into()),
        };
        match written {
            Ok(()) => Ok(()),
            // Not allowed here after all (or not opened): buffered, then fsynced.
            Err(e) if matches!(e.kind(), std::io::ErrorKind::InvalidInput | std::io::ErrorKind::Unsupported) => {
                if self.direct.take().is_some() {
                    tracing::info!(error = %e, "journal: O_DIRECT writes refused; writing buffered");
                }
                self.file.write_all_at(out, offset)?;
                self.file.sync_data()
            }
            Err(e) => Err(e),
        }
    }

    fn try_clone(&self) -> std::io::Result<Side> {
        let direct = self.direct.as_ref().map(File::try_clone).transpose()?;
        Ok(Side { file: self.file.try_clone()?, direct })
    }

    fn open(path: &Path) -> std::io::Result<Side> {
        let file = std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(path)?;
        let len = file.metadata()?.len();
        if len < CAPACITY {
            let zeros = vec![0u8; 1 << 20];
            let mut at = len;
            while at < CAPACITY {
                let n = (CAPACITY - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            file.sync_all()?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
        }
        let flags = (rustix::fs::OFlags::DIRECT | rustix::fs::OFlags::DSYNC).bits() as i32;
        let direct = std::fs::OpenOptions::new().write(true).custom_flags(flags).open(path).ok();
        Ok(Side { file, direct })
    }
}

/// The journal's second file, next to `path`: `journal.wal` → `journal.1.wal`.
pub fn second_path(path: &Path) -> PathBuf {
    let stem = path.file_stem().unwrap_or_default().to_string_lossy();
    let name = match path.extension() {
        Some(ext) => format!("{stem}.1.{}", ext.to_string_lossy()),
        None => format!("{stem}.1"),
    };
    path.with_file_name(name)
}

/// Two files' runs of frames as one, in number order. Each run is contiguous; a run left from
/// before the other file's last start is numbered below it (every frame of it is already in
/// redb), so the runs never interleave, and a frame read twice is taken once.
fn merge(a: Vec<Frame>, b: Vec<Frame>) -> Vec<Frame> {
    let (mut first, second) = match (a.first(), b.first()) {
        (Some(x), Some(y)) if y.number < x.number => (b, a),
        _ => (a, b),
    };
    for f in second {
        if first.last().is_none_or(|l| f.number > l.number) {
            first.push(f);
        }
    }
    first
}

/// A `len`-byte window of `buf` at a [`BLOCK`]-aligned address (what `O_DIRECT` asks of memory).
/// `buf` grows as needed and is kept for reuse, so the window holds whatever was there before:
/// callers write or zero all of it.
pub(super) fn aligned_window(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buf.len() < len + BLOCK {
        buf.resize(len + BLOCK, 0);
    }
    let off = buf.as_ptr().align_offset(BLOCK).min(BLOCK);
    &mut buf[off..off + len]
}

/// The intact frames of a journal (the file at `path` and its [`second_path`], if there),
/// read without opening them for writing (`verify-log`).
pub fn read_file(path: &Path) -> std::io::Result<Vec<Frame>> {
    let second = second_path(path);
    let other = if second.exists() { read_frames(&File::open(second)?)? } else { Vec::new() };
    Ok(merge(read_frames(&File::open(path)?)?, other))
}

/// A frame's checksum field: CRC-32 of its number, length and payload, then zeros.
fn checksum(number: u64, len: u32, payload: &[u8]) -> [u8; 16] {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&number.to_le_bytes());
    crc.update(&len.to_le_bytes());
    crc.update(payload);
    let mut out = [0u8; 16];
    out[..4].copy_from_slice(&crc.finalize().to_le_bytes());
    out
}

/// The checksum field of an older build's frame (`"KDJ1"`).
fn checksum_sha(number: u64, len: u32, payload: &[u8]) -> [u8; 16] {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&number.to_le_bytes());
    ctx.update(&len.to_le_bytes());
    ctx.update(payload);
    let mut out = [0u8; 16];
    out.copy_from_slice(&ctx.finish().as_ref()[..16]);
    out
}

/// Every intact frame of a file from offset 0, stopping at the first torn, corrupt or
/// out-of-sequence one.
fn read_frames(file: &File) -> std::io::Result<Vec<Frame>> {
    let mut data = vec![0u8; file.metadata()?.len() as usize];
    file.read_exact_at(&mut data, 0)?;
    let mut frames: Vec<Frame> = Vec::new();
    let mut at = 0usize;
    while at + HEADER <= data.len() {
        let h = &data[at..at + HEADER];
        let sum: fn(u64, u32, &[u8]) -> [u8; 16] = match &h[..4] {
            m if m == MAGIC => checksum,
            m if m == MAGIC_SHA => checksum_sha,
            _ => break,
        };
        let number = u64::from_le_bytes(h[4..12].try_into().expect("8 bytes"));
        let plen = u32::from_le_bytes(h[12..16].try_into().expect("4 bytes"));
        let Some(payload) = data.get(at + HEADER..at + HEADER + plen as usize) else { break };
        if h[16..32] != sum(number, plen, payload) || frames.last().is_some_and(|f| f.number + 1 != number) {
            break;
        }
        let Some(ops) = decode(payload) else { break };
        frames.push(Frame { number, ops });
        at += padded(plen as usize);
    }
    Ok(frames)
}

fn decode(mut p: &[u8]) -> Option<Vec<JournalOp>> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
        let (head, rest) = p.split_at_checked(n)?;
        *p = rest;
        Some(head)
    }
    fn u64_of(p: &mut &[u8]) -> Option<u64> {
        Some(u64::from_le_bytes(take(p, 8)?.try_into().ok()?))
    }
    let mut ops = Vec::new();
    while let Some((&tag, rest)) = p.split_first() {
        p = rest;
        ops.push(match tag {
            1 | 2 => {
                let key: SpentKey = take(&mut p, 24)?.try_into().ok()?;
                let bytes = u64_of(&mut p)?;
                if tag == 1 {
                    JournalOp::Reserve { key, bytes }
                } else {
                    JournalOp::Refund { key, bytes }
                }
            }
            3 => {
                let seq = u64_of(&mut p)?;
                let at_us = u64_of(&mut p)?;
                let n = u32::from_le_bytes(take(&mut p, 4)?.try_into().ok()?) as usize;
                JournalOp::Record { seq, at_us, json: take(&mut p, n)?.to_vec() }
            }
            _ => return None,
        });
    }
    Some(ops)
}

#[cfg(test)]
#[path = "journal_tests.rs"]
mod tests;
