//! Catalog files served from a read-only memory mapping, so a download's bytes go from the page
//! cache straight into the socket (one copy, as with nginx's `sendfile`) instead of page cache →
//! a user buffer → the socket. This is the crate's one module with `unsafe` code, and why it is
//! sound to use:
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
//!   spans that are not resident are faulted in on the blocking pool ([`fault_in`]).
//!
//! The mapping is owned by the [`Bytes`] it is wrapped in: slices handed to hyper keep it alive,
//! and it is unmapped when the last slice is dropped.
#![allow(unsafe_code)]

use bytes::Bytes;
use std::fs::File;

/// The whole of `file` (of `len` bytes, `len > 0`), mapped read-only, as [`Bytes`].
pub fn map(file: &File, len: u64) -> std::io::Result<Bytes> {
    let len = usize::try_from(len).map_err(|_| std::io::Error::other("file too large to map"))?;
    // SAFETY: catalog files are not modified while served (module docs); the mapping is
    // read-only and its length is the size the catalog checked at open.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
    Ok(Bytes::from_owner(map))
}

/// True if every page of `span` (a slice of a mapping from [`map`]) is in the page cache, so
/// reading it cannot wait for the disk. An error from `mincore` counts as not resident.
pub fn resident(span: &[u8]) -> bool {
    if span.is_empty() {
        return true;
    }
    let page = rustix::param::page_size();
    let addr = span.as_ptr() as usize;
    let mut start = addr & !(page - 1);
    let end = addr + span.len();
    // One byte per page, on the stack: up to 128 pages (512 KiB) per call, no allocation.
    let mut vec = [0u8; 128];
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
}
