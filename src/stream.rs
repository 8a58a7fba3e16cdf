//! Streaming a byte span of an open file as an HTTP body, in large reads with one read of
//! look-ahead. A read the page cache can answer is done in place with `preadv2(RWF_NOWAIT)` (a
//! memory copy, cheaper than a trip to another thread and back: measured, it took 1 MiB downloads
//! from 1.9 to 2.5 GB/s); a read that would wait for the disk goes to the blocking pool, so an
//! async worker never waits on I/O.
//!
//! Reads adapt to the client. When hyper asks for the next chunk soon after taking the last one
//! (within [`FAST`]: the client keeps up), the chunk size doubles up to [`CHUNK`] and the next
//! read starts ahead of time, so disk and network overlap. When hyper is slow to ask (a slow or
//! stalled client), reads shrink to [`MIN_CHUNK`] and nothing is read ahead. Memory per download
//! is therefore at most two large chunks for a fast client and one small chunk for a slow one,
//! independent of the file's size — 1,000 slow downloads hold about 64 MiB of buffers. A mapped
//! file on an HTTP/1 connection is the exception: its spans are slices of the mapping (no buffer
//! at all), so it hands hyper [`MAPPED_CHUNK`] at a time, and the socket writer sends each span
//! with as few `sendfile` calls as the socket allows — a chunk boundary would end a call early
//! and push a short packet. A cut-off response is still charged only what the socket accepted
//! (see [`ConnDownloads`]); over HTTP/2, where no socket count is per stream, spans stay small.
//! Each poll first checks the order's
//! [`Gate`]: once the order is revoked or suspended, the body fails and hyper closes the
//! connection. When the body is dropped — finished, cut off by the client, revoked, or at
//! shutdown — its [`Reservation`] is finished exactly once with the bytes actually handed to hyper.

use crate::ledger::{Gate, Outcome, Reservation};
use bytes::{Bytes, BytesMut};
use http_body::{Frame, SizeHint};
use std::fs::File;
use std::future::Future;
use std::os::unix::fs::FileExt;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::task::JoinHandle;

/// The largest read, for clients that keep up.
pub const CHUNK: usize = 256 * 1024;
/// The smallest read (and the first), for slow clients.
pub const MIN_CHUNK: usize = 64 * 1024;
/// The span a mapped body hands hyper at a time on an HTTP/1 connection (see [`FileStream`]).
pub const MAPPED_CHUNK: usize = 4 << 20;
/// A client that asks for more within this long after the last chunk counts as keeping up.
pub const FAST: std::time::Duration = std::time::Duration::from_millis(5);

tokio::task_local! {
    /// The HTTP/2 stream a request runs in (set by the server's stream executor): a download
    /// registers its order's gate here, so a revocation resets that stream alone.
    pub static STREAM: Arc<StreamGates>;
}

/// The gates of the downloads in one HTTP/2 stream (at most one: a stream is one request).
#[derive(Debug, Default)]
pub struct StreamGates(Mutex<Vec<Arc<Gate>>>, tokio::sync::Notify);

impl StreamGates {
    fn register(&self, gate: Arc<Gate>) {
        self.0.lock().expect("not poisoned").push(gate);
        // A gate that closed before it was registered here is seen at once, not at the next change.
        self.1.notify_one();
    }

    /// Resolves when a gate is registered (see [`StreamGates::any_closed`]).
    pub async fn registered(&self) {
        self.1.notified().await;
    }

    /// True if the stream's download belongs to an order that is no longer open.
    pub fn any_closed(&self) -> bool {
        self.0.lock().expect("not poisoned").iter().any(|g| !g.is_open())
    }
}

/// Per-connection context for downloads: the HTTP/1 downloads currently streaming (so the
/// connection can be dropped when one of their orders is revoked even if the client has stopped
/// reading; an HTTP/1 connection carries one response at a time, so that cuts nothing else) and
/// the socket's written-bytes counter (so a cut-off HTTP/1 response is charged only for what
/// left the process). HTTP/2 downloads register with their stream instead ([`STREAM`]).
#[derive(Default, Clone)]
pub struct ConnDownloads {
    streaming: Arc<Mutex<Vec<Streaming>>>,
    written: Option<crate::counted::Written>,
}

/// A download in flight: its registration id and its order's gate.
type Streaming = (u64, Arc<Gate>);

impl ConnDownloads {
    /// Context for a connection whose socket writes are counted by `written`.
    pub fn new(written: Option<crate::counted::Written>) -> ConnDownloads {
        ConnDownloads { streaming: Arc::default(), written }
    }

    fn register(&self, gate: Arc<Gate>) -> Registration {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.streaming.lock().expect("not poisoned").push((id, gate));
        Registration { list: self.clone(), id }
    }

    /// True if any download on this connection belongs to a closed order.
    pub fn any_closed(&self) -> bool {
        self.streaming.lock().expect("not poisoned").iter().any(|(_, g)| !g.is_open())
    }
}

struct Registration {
    list: ConnDownloads,
    id: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.list.streaming.lock().expect("not poisoned").retain(|(id, _)| *id != self.id);
    }
}

/// What a body serves: `len` bytes of `file` from `start`, or of `memory` when a small file's
/// content is held in memory, or of `mapped` when a larger file is mapped ([`crate::mapped`]).
pub struct Source {
    pub file: Arc<File>,
    pub start: u64,
    pub len: u64,
    pub memory: Option<Bytes>,
    pub mapped: Option<Bytes>,
}

/// A chunk being read: already there (the page cache had it), or on the blocking pool.
enum Read {
    Ready(Bytes),
    Blocking(JoinHandle<std::io::Result<Bytes>>),
}

impl Read {
    fn abort(self) {
        if let Read::Blocking(h) = self {
            h.abort();
        }
    }
}

/// Reads what the page cache already holds of `buf.len()` bytes at `offset`, without blocking
/// (`preadv2` with `RWF_NOWAIT`); returns how many bytes it filled. Anything short — data not
/// cached, a filesystem without `RWF_NOWAIT`, an error — is left to the blocking read.
fn read_cached(file: &File, buf: &mut [u8], offset: u64) -> usize {
    let mut filled = 0;
    while filled < buf.len() {
        let mut iov = [std::io::IoSliceMut::new(&mut buf[filled..])];
        match rustix::io::preadv2(file, &mut iov, offset + filled as u64, rustix::io::ReadWriteFlags::NOWAIT) {
            Ok(0) | Err(_) => break,
            Ok(k) => filled += k,
        }
    }
    filled
}

pub struct FileStream {
    file: Arc<File>,
    /// Next offset to read.
    offset: u64,
    /// Bytes not yet read.
    unread: u64,
    /// Bytes the response carries in all.
    total: u64,
    sent: u64,
    pending: Option<Read>,
    /// A small file's whole content, when it is in memory: served by slicing, no reads.
    memory: Option<Bytes>,
    /// A larger file's mapping: chunks are its slices, faulted in on the blocking pool when
    /// their pages are not in the page cache.
    mapped: Option<Bytes>,
    /// Current read size (adapts between `MIN_CHUNK` and `CHUNK`).
    chunk: usize,
    /// Whether to read ahead (the client kept up last time).
    read_ahead: bool,
    /// Spans of [`MAPPED_CHUNK`], not adapted: a mapped body on a connection whose socket
    /// counts what it accepted (HTTP/1). Its spans cost no buffer, and a cut-off response is
    /// charged by the socket's count, not by what hyper was handed.
    whole: bool,
    /// When the last chunk was handed to hyper.
    yielded_at: Option<std::time::Instant>,
    gate: Arc<Gate>,
    outcome: Option<Outcome>,
    reservation: Option<Reservation>,
    /// The connection's written-bytes counter and its value when this response began (HTTP/1).
    written: Option<(crate::counted::Written, u64)>,
    _registration: Option<Registration>,
}

impl FileStream {
    /// A body of `len` bytes of `file` from `start`.
    pub fn new(
        source: Source,
        gate: Arc<Gate>,
        conn: &ConnDownloads,
        exclusive_wire: bool,
        reservation: Reservation,
    ) -> FileStream {
        let Source { file, start, len, memory, mapped } = source;
        let in_stream = !exclusive_wire && STREAM.try_with(|s| s.register(gate.clone())).is_ok();
        let _registration = (!in_stream).then(|| conn.register(gate.clone()));
        let written = conn.written.as_ref().filter(|_| exclusive_wire).map(|w| (w.clone(), w.get()));
        let whole = mapped.is_some() && written.is_some();
        let mut s = FileStream {
            file,
            offset: start,
            unread: len,
            total: len,
            sent: 0,
            pending: None,
            memory,
            mapped,
            chunk: if whole { MAPPED_CHUNK } else { MIN_CHUNK },
            read_ahead: whole,
            whole,
            yielded_at: None,
            gate,
            outcome: None,
            reservation: Some(reservation),
            written,
            _registration,
        };
        s.start_read();
        s
    }

    fn start_read(&mut self) {
        if self.unread == 0 || self.pending.is_some() || self.memory.is_some() {
            return;
        }
        let n = self.unread.min(self.chunk as u64) as usize;
        let offset = self.offset;
        self.offset += n as u64;
        self.unread -= n as u64;
        if let Some(m) = self.mapped.as_ref() {
            let span = m.slice(offset as usize..offset as usize + n);
            self.pending = Some(if crate::mapped::resident(&span) {
                Read::Ready(span)
            } else {
                Read::Blocking(tokio::task::spawn_blocking(move || {
                    crate::mapped::fault_in(&span);
                    Ok(span)
                }))
            });
            return;
        }
        let file = self.file.clone();
        let mut buf = BytesMut::zeroed(n);
        let mut filled = read_cached(&file, &mut buf, offset);
        if filled == n {
            self.pending = Some(Read::Ready(buf.freeze()));
            return;
        }
        self.pending = Some(Read::Blocking(tokio::task::spawn_blocking(move || {
            while filled < n {
                match file.read_at(&mut buf[filled..], offset + filled as u64)? {
                    0 => {
                        return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "file shrank while serving"))
                    }
                    k => filled += k,
                }
            }
            Ok(buf.freeze())
        })));
    }

    fn fail(&mut self, outcome: Outcome, msg: &'static str) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.outcome = Some(outcome);
        if let Some(p) = self.pending.take() {
            p.abort();
        }
        Poll::Ready(Some(Err(std::io::Error::other(msg))))
    }
}

impl http_body::Body for FileStream {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if this.outcome.is_some() && this.outcome != Some(Outcome::Complete) {
            return Poll::Ready(None);
        }
        if !this.gate.is_fresh() {
            return this.fail(Outcome::Unavailable, "order states not confirmed in time");
        }
        match this.gate.access() {
            crate::store::Access::Open => {}
            crate::store::Access::Suspended => return this.fail(Outcome::Suspended, "order suspended"),
            crate::store::Access::Revoked => return this.fail(Outcome::Revoked, "order revoked"),
        }
        if let Some(at) = this.yielded_at.take().filter(|_| !this.whole) {
            // How fast did hyper come back for more? Adapt the read size and read-ahead.
            if at.elapsed() <= FAST {
                this.read_ahead = true;
                this.chunk = (this.chunk * 2).min(CHUNK);
            } else {
                this.read_ahead = false;
                this.chunk = MIN_CHUNK;
            }
        }
        if let Some(content) = this.memory.as_ref() {
            if this.unread == 0 {
                this.outcome = Some(Outcome::Complete);
                return Poll::Ready(None);
            }
            let (start, n) = (this.offset as usize, this.unread as usize);
            let chunk = content.slice(start..start + n);
            this.offset += n as u64;
            this.unread = 0;
            this.sent += n as u64;
            this.outcome = Some(Outcome::Complete);
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if this.pending.is_none() {
            this.start_read();
        }
        let read = match this.pending.take() {
            None => {
                this.outcome = Some(Outcome::Complete);
                return Poll::Ready(None);
            }
            Some(Read::Ready(bytes)) => Poll::Ready(Ok(Ok(bytes))),
            Some(Read::Blocking(mut h)) => {
                let r = Pin::new(&mut h).poll(cx);
                if r.is_pending() {
                    this.pending = Some(Read::Blocking(h));
                }
                r
            }
        };
        match read {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Ok(bytes))) => {
                this.pending = None;
                this.sent += bytes.len() as u64;
                this.yielded_at = Some(std::time::Instant::now());
                if this.read_ahead {
                    this.start_read();
                }
                if this.sent == this.total {
                    this.outcome = Some(Outcome::Complete);
                }
                Poll::Ready(Some(Ok(Frame::data(bytes))))
            }
            Poll::Ready(Ok(Err(e))) => {
                tracing::error!(error = %e, "read failed while streaming");
                this.pending = None;
                this.fail(Outcome::ReadError, "read failed")
            }
            Poll::Ready(Err(_)) => {
                this.pending = None;
                this.fail(Outcome::ReadError, "read task failed")
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.sent == self.total
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.total - self.sent)
    }
}

impl Drop for FileStream {
    fn drop(&mut self) {
        if let Some(p) = self.pending.take() {
            p.abort();
        }
        let outcome = match (self.outcome, self.gate.access()) {
            (Some(o), _) => o,
            (None, _) if self.sent == self.total => Outcome::Complete,
            // Dropped unfinished because its order closed (an HTTP/2 stream reset, an HTTP/1
            // connection dropped while the client was not reading).
            (None, crate::store::Access::Revoked) => Outcome::Revoked,
            (None, crate::store::Access::Suspended) => Outcome::Suspended,
            (None, crate::store::Access::Open) => Outcome::Aborted,
        };
        // Bytes yielded to hyper but still in its queue when the connection died never left
        // the process: charge at most what the socket accepted since this response began.
        let sent = match (&self.written, outcome) {
            (Some((w, at_start)), o) if o != Outcome::Complete => self.sent.min(w.get().saturating_sub(*at_start)),
            _ => self.sent,
        };
        if let Some(r) = self.reservation.take() {
            r.finish(sent, outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Drops a file's pages from the page cache (they are clean after `sync_all`).
    fn evict(file: &File) {
        rustix::fs::fadvise(file, 0, None, rustix::fs::Advice::DontNeed).unwrap();
    }

    #[test]
    fn a_cached_chunk_is_read_in_place_and_an_evicted_one_is_left_to_the_blocking_pool() {
        let mut f = tempfile::tempfile().unwrap();
        let data: Vec<u8> = (0..CHUNK).map(|i| (i * 7 % 251) as u8).collect();
        f.write_all(&data).unwrap();
        f.sync_all().unwrap();
        let mut buf = vec![0u8; CHUNK];
        assert_eq!(read_cached(&f, &mut buf, 0), CHUNK, "just written: in the page cache");
        assert_eq!(buf, data);
        // The kernel may keep pages still in another CPU's LRU batch when asked to drop them
        // (seen under a loaded test run): ask again, a few times, before judging the read.
        let mut buf = vec![0u8; CHUNK];
        let mut n = CHUNK;
        for _ in 0..20 {
            evict(&f);
            n = read_cached(&f, &mut buf, 0);
            if n < CHUNK {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(n < CHUNK, "evicted: RWF_NOWAIT must not wait for the disk (read {n})");
        assert_eq!(buf[..n], data[..n]);
    }
}
