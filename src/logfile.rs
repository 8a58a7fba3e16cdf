//! The log's file written back as it grows, and kept out of the page cache.
//!
//! When stderr is a regular file (`keydrop serve 2>>keydrop.log`), the kernel holds the log's
//! pages dirty until they are `vm.dirty_expire_centisecs` old (30 s by default) and then writes
//! them out together: at tens of thousands of requests a second, tens of megabytes at once. On a
//! disk shared with `data_dir`, every durable write the store makes in that moment waits behind
//! the burst, since the device's cache flush carries it. So every [`EVERY`] bytes the log writes,
//! it asks the kernel to start writing back what the file holds and to drop the pages already
//! clean (`posix_fadvise(POSIX_FADV_DONTNEED)`: on Linux it starts write-back of dirty pages and
//! does not wait for it). The log then reaches the disk in small pieces, and its pages do not push
//! the catalog's files out of the page cache. Nothing waits: lines are not made durable by this,
//! as before (the activity log, not this one, is the record of downloads).
//!
//! For a terminal, a pipe, `/dev/null` or journald's socket nothing is done.

use rustix::fd::AsFd;
use rustix::fs::{Advice, FileType};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

/// How many bytes the log writes between two starts of its write-back.
pub const EVERY: u64 = 256 * 1024;

/// What one log file has written, and whether it is a file to write back at all.
#[derive(Debug)]
pub struct WriteBack {
    regular_file: bool,
    written: AtomicU64,
}

impl WriteBack {
    /// For the file behind `fd`: written back only if it is a regular file.
    pub fn for_fd(fd: impl AsFd) -> Self {
        let regular_file = rustix::fs::fstat(fd)
            .map(|st| FileType::from_raw_mode(st.st_mode) == FileType::RegularFile)
            .unwrap_or(false);
        WriteBack { regular_file, written: AtomicU64::new(0) }
    }

    /// Whether the file is written back (a regular file).
    pub fn is_regular_file(&self) -> bool {
        self.regular_file
    }

    /// Counts `n` bytes written; `true` when they complete a piece of [`EVERY`] bytes. Threads
    /// may count at once: each multiple of [`EVERY`] passed is reported to exactly one of them.
    pub fn tally(&self, n: usize) -> bool {
        let n = n as u64;
        let before = self.written.fetch_add(n, Ordering::Relaxed);
        before / EVERY != (before + n) / EVERY
    }

    /// After `n` bytes were written to `fd`: starts its write-back once a piece is complete.
    /// Returns whether it did. An error (a filesystem without the advice) is ignored: the kernel's
    /// own write-back still runs.
    pub fn wrote(&self, fd: impl AsFd, n: usize) -> bool {
        if !self.regular_file || !self.tally(n) {
            return false;
        }
        rustix::fs::fadvise(fd, 0, None, Advice::DontNeed).is_ok()
    }
}

/// After `n` bytes of log were written to stderr (see the module docs).
pub fn stderr_wrote(n: usize) {
    static STDERR: OnceLock<WriteBack> = OnceLock::new();
    let stderr = std::io::stderr();
    STDERR.get_or_init(|| WriteBack::for_fd(&stderr)).wrote(&stderr, n);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek, Write};

    #[test]
    fn a_piece_is_complete_once_per_every_bytes_whatever_the_lines_lengths() {
        let wb = WriteBack { regular_file: true, written: AtomicU64::new(0) };
        let mut pieces = 0;
        let mut total = 0u64;
        for i in 0..20_000usize {
            let n = 37 + (i * 7919) % 900;
            total += n as u64;
            pieces += usize::from(wb.tally(n));
        }
        assert_eq!(pieces as u64, total / EVERY);
        assert!(pieces > 10, "{pieces}");
        assert!(wb.tally(EVERY as usize), "a write of a whole piece completes one");
    }

    #[test]
    fn threads_counting_at_once_see_each_piece_once() {
        let wb = std::sync::Arc::new(WriteBack { regular_file: true, written: AtomicU64::new(0) });
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let wb = wb.clone();
                std::thread::spawn(move || (0..100_000).filter(|_| wb.tally(131)).count())
            })
            .collect();
        let pieces: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(pieces as u64, 4 * 100_000 * 131 / EVERY);
    }

    #[test]
    fn only_a_regular_file_is_written_back() {
        let dir = std::env::temp_dir().join(format!("keydrop-logfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = std::fs::File::create(dir.join("log")).unwrap();
        assert!(WriteBack::for_fd(&file).is_regular_file());
        let null = std::fs::OpenOptions::new().write(true).open("/dev/null").unwrap();
        assert!(!WriteBack::for_fd(&null).is_regular_file());
        assert!(!WriteBack::for_fd(std::fs::File::open(&dir).unwrap()).is_regular_file(), "a directory");
        let (_r, w) = std::io::pipe().unwrap();
        let pipe = WriteBack::for_fd(&w);
        assert!(!pipe.is_regular_file());
        assert!(!pipe.wrote(&w, 2 * EVERY as usize), "a pipe is never advised");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_file_written_back_piece_by_piece_reads_back_every_byte_in_order() {
        let dir = std::env::temp_dir().join(format!("keydrop-logfile-wb-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .read(true)
            .write(true)
            .open(dir.join("log"))
            .unwrap();
        let wb = WriteBack::for_fd(&file);
        let mut expected = Vec::new();
        let mut started = 0;
        for i in 0..10_000u32 {
            let line = format!("line {i} {}\n", "x".repeat((i % 97) as usize));
            file.write_all(line.as_bytes()).unwrap();
            started += usize::from(wb.wrote(&file, line.len()));
            expected.extend_from_slice(line.as_bytes());
        }
        assert_eq!(started as u64, expected.len() as u64 / EVERY, "a write-back started per piece");
        assert!(started >= 2, "{started}");
        let mut back = Vec::new();
        file.rewind().unwrap();
        file.read_to_end(&mut back).unwrap();
        assert!(back == expected, "the file holds every line, in order");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
