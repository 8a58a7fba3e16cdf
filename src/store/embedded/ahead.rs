//! Zeros written ahead of `activity.log`'s end, on a thread of their own.
//!
//! The record file is kept written with zeros ahead of its end so that appends overwrite blocks
//! the file already has (see [`super::records`] for why). Those zeros used to be written by the
//! writer thread itself, at a checkpoint, right before the checkpoint's fsync: under a steady 4 KiB
//! load that was megabytes of zeros every fifth of a second, 2–10 ms during which every download
//! waiting on that group commit waited too — a large part of the p99. Nothing needs the zeros
//! *then*, only before appends reach them, so here a helper thread writes them while the writer
//! goes on.
//!
//! ## Who touches which bytes
//!
//! At most one request is in flight: a range `[from, to)` past every byte the writer has
//! appended, which the helper writes with zeros through its own `O_DIRECT` handle. The writer
//! never writes into that range while the request is in flight: an append that would reach `from`
//! first waits for the helper to finish ([`Ahead::wait_if_reaching`]), and so do a reset or a
//! truncation ([`Ahead::wait`]), which may move the end anywhere. So each byte has one writer at a
//! time, and the records appended over zeros are written after the zeros are. The zeros' own
//! durability does not matter: the next durable commit fsyncs the file (`fdatasync`, which also
//! makes the size durable) before redb's durable end can cover any record written over them.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::thread::JoinHandle;

use super::journal::aligned_window;

/// The zeros are written in pieces of this size, from one reused buffer.
const PIECE: usize = 1 << 20;

/// The writer's end of the helper thread.
pub(super) struct Ahead {
    requests: Option<mpsc::Sender<(u64, u64)>>,
    done: mpsc::Receiver<std::io::Result<u64>>,
    /// The range being written, if a request is in flight.
    in_flight: Option<(u64, u64)>,
    thread: Option<JoinHandle<()>>,
}

impl Ahead {
    /// Starts the helper on `direct`, a handle on the record file opened `O_DIRECT`.
    pub(super) fn start(direct: File) -> std::io::Result<Ahead> {
        Ahead::spawn(direct, None)
    }

    /// For tests: a helper that writes each request only once told to through the sender.
    #[cfg(test)]
    pub(super) fn start_held(direct: File) -> (Ahead, mpsc::Sender<()>) {
        let (go, hold) = mpsc::channel();
        (Ahead::spawn(direct, Some(hold)).expect("helper thread"), go)
    }

    fn spawn(direct: File, hold: Option<mpsc::Receiver<()>>) -> std::io::Result<Ahead> {
        let (requests, incoming) = mpsc::channel::<(u64, u64)>();
        let (finished, done) = mpsc::channel();
        let thread = std::thread::Builder::new().name("keydrop-ahead".into()).spawn(move || {
            let mut buf = Vec::new();
            for (from, to) in incoming {
                if let Some(h) = &hold {
                    let _ = h.recv();
                }
                let _ = finished.send(zero(&direct, &mut buf, from, to));
            }
        })?;
        Ok(Ahead { requests: Some(requests), done, in_flight: None, thread: Some(thread) })
    }

    /// Is a request in flight?
    pub(super) fn busy(&self) -> bool {
        self.in_flight.is_some()
    }

    /// Asks for zeros in `[from, to)` (block-aligned, past everything appended). Call only when
    /// not [`Ahead::busy`].
    pub(super) fn request(&mut self, from: u64, to: u64) {
        debug_assert!(self.in_flight.is_none(), "one request at a time");
        if self.requests.as_ref().is_some_and(|r| r.send((from, to)).is_ok()) {
            self.in_flight = Some((from, to));
        }
    }

    /// The end of the zeros written, if the request in flight has finished since; does not wait.
    pub(super) fn poll(&mut self) -> Option<u64> {
        self.in_flight?;
        match self.done.try_recv() {
            Ok(result) => self.finish(result),
            Err(mpsc::TryRecvError::Empty) => None,
            Err(mpsc::TryRecvError::Disconnected) => self.finish(Err(std::io::Error::other("helper gone"))),
        }
    }

    /// Before the writer writes up to `end`: waits for the request in flight if its range starts
    /// before `end`. Returns the end of the zeros written, if a request finished.
    pub(super) fn wait_if_reaching(&mut self, end: u64) -> Option<u64> {
        match self.in_flight {
            Some((from, _)) if end > from => self.wait(),
            _ => self.poll(),
        }
    }

    /// Waits for the request in flight, if any; returns the end of the zeros written.
    pub(super) fn wait(&mut self) -> Option<u64> {
        self.in_flight?;
        let result = self.done.recv().unwrap_or_else(|_| Err(std::io::Error::other("helper gone")));
        self.finish(result)
    }

    fn finish(&mut self, result: std::io::Result<u64>) -> Option<u64> {
        self.in_flight = None;
        match result {
            Ok(end) => Some(end),
            Err(e) => {
                // Best effort, as before: appends past the zeros only grow the file again.
                tracing::debug!(error = %e, "activity.log: could not write zeros ahead");
                None
            }
        }
    }
}

impl Drop for Ahead {
    fn drop(&mut self) {
        self.requests = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Writes zeros over `[from, to)`; returns `to`.
fn zero(file: &File, buf: &mut Vec<u8>, from: u64, to: u64) -> std::io::Result<u64> {
    let zeros = aligned_window(buf, PIECE);
    zeros.fill(0);
    let mut at = from;
    while at < to {
        let n = (to - at).min(PIECE as u64) as usize;
        file.write_all_at(&zeros[..n], at)?;
        at += n as u64;
    }
    Ok(to)
}
