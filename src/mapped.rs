//! Catalog files served from a read-only memory mapping, so a download's bytes go from the page
//! cache into the socket without a user buffer between them — by `sendfile(2)` on plain TCP (as
//! nginx sends), copied from the mapping where the socket writer cannot (TLS, which encrypts
//! them first). This is the crate's one module with `unsafe` code, and why it is sound to use:
//!
//! - **Mapping** ([`map`]) is `unsafe` because the file could change under the mapping. Catalog
//!   files are immutable by contract (a file is attached with its size and mtime, hashed, and a
//!   changed file is refused at open, [`crate::catalog`]); the mapping is read-only and private to
//!   this process. A file *replaced* the way deployments replace files — a new file renamed over
//!   the old path — changes nothing here: the mapping keeps the old inode. A file *shrunk in place*
//!   while mapped makes the next access past its new end raise `SIGBUS`, which ends the process;
//!   that loses nothing, since every reservation is durable before its first byte is sent (the
//!   same promise as after `kill -9`). The README tells operators never to edit a served file in
//!   place; `map_files = false` turns mapping off.
//! - **Residency** ([`resident`]) asks the kernel with `mincore(2)` whether a span's pages are in
//!   the page cache, so an async worker only touches mapped pages that cannot block on the disk;
//!   spans that are not resident are faulted in on the blocking pool ([`fault_in`]). The same
//!   holds for `sendfile`, which reads the same pages.
//! - **Sending** ([`first_mapped`]): every live mapping is listed with its file, so the socket writer
//!   ([`crate::counted`]) can tell that a slice hyper hands it lies in a mapping and send those
//!   bytes with `sendfile(2)` from the file at the same offset — the same bytes, since the file
//!   does not change (above), without copying them through this process (the copy nginx's
//!   `sendfile` also avoids). A mapping leaves the list before it is unmapped, and a slice being
//!   written borrows its mapping, so an address found in the list is that file's bytes.
//!
//! The mapping is owned by the [`Bytes`] it is wrapped in: slices handed to hyper keep it alive,
//! and it is unmapped when the last slice is dropped.
#![allow(unsafe_code)]

use bytes::Bytes;
use std::fs::File;
use std::io::IoSlice;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};

/// A live mapping's address range, the file it maps (from offset 0), and which of its
/// [`BLOCK`]s [`resident`] has entered into the page tables.
struct Region {
    start: usize,
    end: usize,
    file: Arc<File>,
    entered: Box<[AtomicU64]>,
}

impl Region {
    /// The live region `span` lies in, if any, among `regions`.
    fn holding<'a>(regions: &'a [Region], span: &[u8]) -> Option<&'a Region> {
        let (start, end) = (span.as_ptr() as usize, span.as_ptr() as usize + span.len());
        regions.iter().find(|r| r.start <= start && end <= r.end)
    }

    /// `span`'s offset in this region's file (`span` lies in it).
    fn offset_of(&self, span: &[u8]) -> usize {
        span.as_ptr() as usize - self.start
    }
}

/// The unit in which a mapping's pages are entered into the page tables (see [`resident`]).
const BLOCK: usize = 64 * 1024;

/// Every live mapping. Mappings are made once per served file and dropped when it is, so the
/// list is short and changes rarely; writers of a socket only read it.
static REGIONS: RwLock<Vec<Region>> = RwLock::new(Vec::new());
/// `REGIONS.len()`, read without the lock: with no mapping, a write costs one load.
static LIVE: AtomicUsize = AtomicUsize::new(0);

/// A mapping as the owner of its [`Bytes`]: listed in [`REGIONS`] while it lives.
struct Mapping {
    map: memmap2::Mmap,
}

impl AsRef<[u8]> for Mapping {
    fn as_ref(&self) -> &[u8] {
        &self.map
    }
}

impl Drop for Mapping {
    // Runs before `map` is unmapped: the address range leaves the list first.
    fn drop(&mut self) {
        let start = self.map.as_ptr() as usize;
        let mut regions = REGIONS.write().unwrap_or_else(|e| e.into_inner());
        regions.retain(|r| r.start != start);
        LIVE.store(regions.len(), Ordering::Release);
    }
}

/// The whole of `file` (of `len` bytes, `len > 0`), mapped read-only, as [`Bytes`].
pub fn map(file: &File, len: u64) -> std::io::Result<Bytes> {
    let len = usize::try_from(len).map_err(|_| std::io::Error::other("file too large to map"))?;
    // SAFETY: catalog files are not modified while served (module docs); the mapping is
    // read-only and its length is the size the catalog checked at open.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
    let blocks = len.div_ceil(BLOCK).div_ceil(64);
    let region = Region {
        start: map.as_ptr() as usize,
        end: map.as_ptr() as usize + len,
        file: Arc::new(file.try_clone()?),
        entered: (0..blocks).map(|_| AtomicU64::new(0)).collect(),
    };
    let mut regions = REGIONS.write().unwrap_or_else(|e| e.into_inner());
    regions.push(region);
    LIVE.store(regions.len(), Ordering::Release);
    drop(regions);
    Ok(Bytes::from_owner(Mapping { map }))
}

/// The first non-empty slice of `bufs` that lies within one live mapping from [`map`].
pub struct Found {
    /// Its index in `bufs`.
    pub index: usize,
    /// The mapped file; the file's bytes at `offset` are the slice's bytes (while the slice is
    /// borrowed its mapping lives).
    pub file: Arc<File>,
    pub offset: u64,
    /// How many bytes the mapping holds from the slice's first byte on.
    pub room: usize,
}

/// Finds the first slice of `bufs` that lies in a mapping (one look at the list for all of them;
/// none at all while nothing is mapped).
pub fn first_mapped(bufs: &[IoSlice<'_>]) -> Option<Found> {
    if LIVE.load(Ordering::Acquire) == 0 {
        return None;
    }
    let regions = REGIONS.read().unwrap_or_else(|e| e.into_inner());
    bufs.iter().enumerate().filter(|(_, b)| !b.is_empty()).find_map(|(index, b)| {
        let r = Region::holding(&regions, b)?;
        let offset = r.offset_of(b);
        Some(Found { index, file: r.file.clone(), offset: offset as u64, room: r.end - r.start - offset })
    })
}

/// After `span` was found resident: its pages entered into this process's page tables, once
/// per [`BLOCK`]. `mincore` answers from the page tables for pages entered there, but for pages
/// the process never touched it searches the page cache page by page — and bytes sent by
/// `sendfile` are never touched through the mapping. Only blocks `span` covers whole are
/// marked; a range's ragged edges are entered again, which costs a walk of page tables.
fn enter(span: &[u8]) {
    let regions = REGIONS.read().unwrap_or_else(|e| e.into_inner());
    let Some(r) = Region::holding(&regions, span) else {
        return;
    };
    let (from, to) = (r.offset_of(span), r.offset_of(span) + span.len());
    let (start, end) = (r.start + from, r.start + to);
    let bit = |b: usize| (&r.entered[b / 64], 1u64 << (b % 64));
    if (from / BLOCK..=(to - 1) / BLOCK).all(|b| {
        let (word, mask) = bit(b);
        word.load(Ordering::Relaxed) & mask != 0
    }) {
        return;
    }
    let page = rustix::param::page_size();
    let aligned = start & !(page - 1);
    // SAFETY: [aligned, end) lies within the live mapping `span` borrows (mappings are page
    // aligned). MADV_POPULATE_READ only enters pages into the page tables, reading them in if
    // needed — `span` was just found resident, so it does not wait for the disk.
    let entered =
        unsafe { rustix::mm::madvise(aligned as *mut _, end - aligned, rustix::mm::Advice::LinuxPopulateRead) };
    if entered.is_err() {
        // Kernels before 5.14: touching each page enters it too.
        fault_in(span);
    }
    for b in from / BLOCK..=(to - 1) / BLOCK {
        let (lo, hi) = (b * BLOCK, ((b + 1) * BLOCK).min(r.end - r.start));
        if from <= lo && hi <= to {
            let (word, mask) = bit(b);
            word.fetch_or(mask, Ordering::Relaxed);
        }
    }
}

/// True if every page of `span` (a slice of a mapping from [`map`]) is in the page cache, so
/// reading it cannot wait for the disk; its pages are then entered into the page tables
/// ([`enter`]). An error from `mincore` counts as not resident.
pub fn resident(span: &[u8]) -> bool {
    if span.is_empty() {
        return true;
    }
    if !in_page_cache(span) {
        return false;
    }
    enter(span);
    true
}

/// The `mincore(2)` check of [`resident`].
fn in_page_cache(span: &[u8]) -> bool {
    let page = rustix::param::page_size();
    let addr = span.as_ptr() as usize;
    let mut start = addr & !(page - 1);
    let end = addr + span.len();
    // One byte per page, on the stack: up to 512 pages (2 MiB) per call, no allocation.
    let mut vec = [0u8; 512];
    while start < end {
        let len = (end - start).min(vec.len() * page);
        let pages = len.div_ceil(page);
        // SAFETY: [start, start + len) lies within one live mapping (`span` borrows it, and a
        // mapping is page-aligned, so rounding down to the page stays inside it); `vec` holds at
        // least one byte per page of that range, as mincore(2) requires. mincore only reads the
        // page tables.
        let rc = unsafe { libc::mincore(start as *mut libc::c_void, len, vec.as_mut_ptr()) };
        if rc != 0 || !vec[..pages].iter().all(|v| v & 1 == 1) {
            return false;
        }
        start += len;
    }
    true
}

/// Reads `span` into the page cache (for the blocking pool: this may wait for the disk).
pub fn fault_in(span: &[u8]) {
    let page = rustix::param::page_size();
    let mut sum = 0u8;
    for i in (0..span.len()).step_by(page) {
        sum = sum.wrapping_add(span[i]);
    }
    if let Some(last) = span.last() {
        sum = sum.wrapping_add(*last);
    }
    std::hint::black_box(sum);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn a_mapped_file_reads_as_its_bytes_and_slices_outlive_the_handle() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        f.write_all(&data).unwrap();
        let whole = map(&f, data.len() as u64).unwrap();
        drop(f);
        let tail = whole.slice(200_000..);
        drop(whole);
        assert_eq!(&tail[..], &data[200_000..]);
    }

    #[test]
    fn pages_just_written_are_resident_and_evicted_ones_are_not_until_faulted_in() {
        let mut f = tempfile::tempfile().unwrap();
        let data = vec![7u8; 1 << 20];
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        let m = map(&f, data.len() as u64).unwrap();
        assert!(resident(&m[4096..200_000]), "just written: in the page cache");
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        // The mapping's page-table entries can keep pages cached; a fresh mapping sees eviction.
        let fresh = map(&f, data.len() as u64).unwrap();
        drop(m);
        rustix::fs::fadvise(&f, 0, None, rustix::fs::Advice::DontNeed).unwrap();
        assert!(!resident(&fresh[..]), "evicted: not resident");
        fault_in(&fresh[..]);
        assert!(resident(&fresh[..]), "faulted in");
        assert_eq!(&fresh[..], &data[..]);
    }

    #[test]
    fn a_slice_of_a_live_mapping_is_located_at_its_offset_and_a_dropped_mapping_is_not() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![5u8; 100_000]).unwrap();
        let m = map(&f, 100_000).unwrap();
        let copy = m[4_000..9_000].to_vec();
        let bufs = [IoSlice::new(b""), IoSlice::new(&copy), IoSlice::new(&m[4_000..9_000]), IoSlice::new(&m[99_999..])];
        let found = first_mapped(&bufs).expect("a slice of a mapping");
        assert_eq!((found.index, found.offset, found.room), (2, 4_000, 96_000), "the copy lies outside every mapping");
        assert_eq!(found.file.metadata().unwrap().len(), 100_000);
        assert!(first_mapped(&bufs[..2]).is_none());
        assert_eq!(first_mapped(&bufs[3..]).map(|f| (f.offset, f.room)), Some((99_999, 1)));
        let range = (m.as_ptr() as usize, m.len());
        drop(m);
        let still = REGIONS.read().unwrap().iter().any(|r| r.start == range.0 && r.end == range.0 + range.1);
        assert!(!still, "an unmapped range has left the list");
    }

    /// Resident size of the mapping starting at `addr`, from `/proc/self/smaps`, in KiB.
    fn rss_kib(addr: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let head = format!("{addr:x}-");
        let mut lines = smaps.lines().skip_while(|l| !l.starts_with(&head)).skip(1);
        let rss = lines.find(|l| l.starts_with("Rss:")).expect("the mapping is listed");
        rss.split_whitespace().nth(1).unwrap().parse().unwrap()
    }

    #[test]
    fn a_resident_span_is_entered_into_the_page_tables_so_later_checks_read_them() {
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&vec![3u8; 1 << 20]).unwrap();
        let m = map(&f, 1 << 20).unwrap();
        assert_eq!(rss_kib(m.as_ptr() as usize), 0, "a fresh mapping has no page in the page tables");
        assert!(resident(&m[..256 * 1024]));
        // At least the span checked (the kernel may map cached neighbours along with it).
        assert!(rss_kib(m.as_ptr() as usize) >= 256, "the span checked resident is entered");
        assert!(resident(&m[..]));
        assert_eq!(rss_kib(m.as_ptr() as usize), 1024);
    }
}
