//! A socket wrapper that counts the bytes the kernel accepted for writing (and the bytes read,
//! for the idle timeout).
//!
//! Used to charge a cut-off download only for what left the process: hyper queues body chunks
//! in user space before writing them, and when a client disconnects that queue is thrown away
//! undelivered. A response's charge is `min(bytes yielded to hyper, bytes written to the socket
//! since the response began)`; the second term includes the response head (a few hundred bytes),
//! so it can only overcharge by that much, never undercharge. It is exact per response only
//! while one response is on the wire at a time, i.e. for HTTP/1.x; HTTP/2 responses fall back to
//! the yielded count.

use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Bytes written to one connection's socket so far.
#[derive(Debug, Clone, Default)]
pub struct Written(Arc<AtomicU64>);

impl Written {
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Acquire)
    }

    fn add(&self, n: usize) {
        self.0.fetch_add(n as u64, Ordering::AcqRel);
    }
}

pub struct Counted {
    inner: TcpStream,
    written: Written,
    read: Written,
}

impl Counted {
    /// The wrapped socket, its written-bytes counter and its read-bytes counter (the server
    /// closes a connection on which neither moves for `idle_timeout_secs`).
    pub fn new(inner: TcpStream) -> (Counted, Written, Written) {
        let (written, read) = (Written::default(), Written::default());
        (Counted { inner, written: written.clone(), read: read.clone() }, written, read)
    }
}

impl AsyncRead for Counted {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            self.read.add(buf.filled().len() - before);
        }
        r
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.written.add(n);
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = r {
            self.written.add(n);
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
