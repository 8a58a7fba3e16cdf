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
//!
//! It is also where a download's bytes leave without a copy: a slice hyper hands over that lies
//! in a catalog file's mapping ([`crate::mapped::first_mapped`]) is sent with `sendfile(2)` from the
//! file itself, and what comes before it (the response head) is sent with `MSG_MORE`, so head and
//! body still share their first segment. Every other write is the socket's own.

use std::fs::File;
use std::io::IoSlice;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncWrite, Interest, ReadBuf};
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

impl Counted {
    /// Runs the non-blocking send `f` once the socket is writable, again each time it finds the
    /// socket full.
    fn poll_send(
        &self,
        cx: &mut Context<'_>,
        mut f: impl FnMut() -> std::io::Result<usize>,
    ) -> Poll<std::io::Result<usize>> {
        loop {
            std::task::ready!(self.inner.poll_write_ready(cx))?;
            match self.inner.try_io(Interest::WRITABLE, &mut f) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                r => return Poll::Ready(r),
            }
        }
    }

    /// Up to `len` bytes of `file` from `offset`, by `sendfile(2)`. `Ok(0)` if the file ended
    /// early (shrunk in place): hyper then ends the connection.
    fn poll_sendfile(
        &self,
        cx: &mut Context<'_>,
        file: &File,
        offset: u64,
        len: usize,
    ) -> Poll<std::io::Result<usize>> {
        self.poll_send(cx, || {
            let mut at = offset;
            Ok(rustix::fs::sendfile(&self.inner, file, Some(&mut at), len)?)
        })
    }

    /// The write itself: `bufs` up to the first mapped slice by `writev` (with `MSG_MORE` when a
    /// mapped slice follows), or, when the first slice is mapped, it and the slices continuing
    /// it in the same mapping by `sendfile`.
    fn poll_write_bufs(&mut self, cx: &mut Context<'_>, bufs: &[IoSlice<'_>]) -> Poll<std::io::Result<usize>> {
        let Some(found) = crate::mapped::first_mapped(bufs) else {
            return Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        };
        let head = &bufs[..found.index];
        if head.iter().any(|b| !b.is_empty()) {
            return self
                .poll_send(cx, || socket2::SockRef::from(&self.inner).send_vectored_with_flags(head, libc::MSG_MORE));
        }
        // Chunks hyper queued one after another in the same mapping go in the same call.
        let at = bufs[found.index].as_ptr() as usize;
        let mut len = bufs[found.index].len();
        for b in bufs[found.index + 1..].iter().filter(|b| !b.is_empty()) {
            if b.as_ptr() as usize != at + len || len + b.len() > found.room {
                break;
            }
            len += b.len();
        }
        self.poll_sendfile(cx, &found.file, found.offset, len)
    }
}

impl AsyncWrite for Counted {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        let r = self.poll_write_bufs(cx, &[IoSlice::new(buf)]);
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
        let r = self.poll_write_bufs(cx, bufs);
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    async fn pair() -> (Counted, Written, TcpStream) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (counted, written, _) = Counted::new(server);
        (counted, written, client)
    }

    fn mapped(len: usize) -> (bytes::Bytes, Vec<u8>) {
        let data: Vec<u8> = (0..len).map(|i| (i * 31 % 253) as u8).collect();
        let mut f = tempfile::tempfile().unwrap();
        f.write_all(&data).unwrap();
        (crate::mapped::map(&f, len as u64).unwrap(), data)
    }

    #[tokio::test]
    async fn a_head_goes_alone_and_the_mapped_body_after_it_arrives_byte_for_byte() {
        let (body, data) = mapped(3 << 20);
        let (mut counted, written, mut client) = pair().await;
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 3145000\r\n\r\n".to_vec();
        let slice = body.slice(100..3_145_100);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            // A slow reader: the socket fills, so sends find it full and wait.
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                let n = client.read(&mut buf).await.unwrap();
                if n == 0 {
                    return got;
                }
                got.extend_from_slice(&buf[..n]);
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        });
        let work = async {
            let n = counted.write_vectored(&[IoSlice::new(&head), IoSlice::new(&slice)]).await.unwrap();
            assert_eq!(n, head.len(), "the head is written alone, the mapped slice by the next call");
            let mut sent = 0;
            while sent < slice.len() {
                let n = counted.write_vectored(&[IoSlice::new(&slice[sent..])]).await.unwrap();
                assert!(n > 0);
                sent += n;
            }
            counted.shutdown().await.unwrap();
        };
        tokio::time::timeout(Duration::from_secs(30), work).await.expect("writes finished");
        let got = tokio::time::timeout(Duration::from_secs(30), reader).await.unwrap().unwrap();
        assert_eq!(written.get() as usize, head.len() + slice.len(), "every byte counted once");
        assert_eq!(&got[..head.len()], &head[..]);
        assert!(got[head.len()..] == data[100..3_145_100], "the body is the file's bytes at the slice's offset");
    }

    #[tokio::test]
    async fn buffers_outside_any_mapping_are_written_together_as_before() {
        let _keep = mapped(1 << 16); // a live mapping elsewhere changes nothing for other buffers
        let (mut counted, written, mut client) = pair().await;
        let (a, b) = (vec![1u8; 300], vec![2u8; 5000]);
        let n = tokio::time::timeout(
            Duration::from_secs(10),
            counted.write_vectored(&[IoSlice::new(&a), IoSlice::new(&b)]),
        )
        .await
        .unwrap()
        .unwrap();
        assert_eq!(n, 5300, "one writev took both");
        assert_eq!(written.get(), 5300);
        let mut got = vec![0u8; 5300];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut got)).await.unwrap().unwrap();
        assert_eq!(&got[..300], &a[..]);
        assert_eq!(&got[300..], &b[..]);
    }

    #[tokio::test]
    async fn chunks_that_continue_each_other_in_a_mapping_go_in_one_call_and_others_do_not() {
        let (body, data) = mapped(1 << 17);
        let (mut counted, written, mut client) = pair().await;
        let (a, b, c) = (body.slice(0..10_000), body.slice(10_000..30_000), body.slice(60_000..70_000));
        let bufs = [IoSlice::new(&a), IoSlice::new(&b), IoSlice::new(&c)];
        let n = tokio::time::timeout(Duration::from_secs(10), counted.write_vectored(&bufs)).await.unwrap().unwrap();
        assert_eq!(n, 30_000, "two chunks that continue each other in one call, the third apart");
        let n =
            tokio::time::timeout(Duration::from_secs(10), counted.write_vectored(&bufs[2..])).await.unwrap().unwrap();
        assert_eq!(n, 10_000);
        assert_eq!(written.get(), 40_000);
        let mut got = vec![0u8; 40_000];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut got)).await.unwrap().unwrap();
        assert!(got[..30_000] == data[..30_000] && got[30_000..] == data[60_000..70_000]);
    }
}
