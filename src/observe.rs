//! The request log line and the per-request metrics.
//!
//! Every response leaves the server wrapped in an [`Observed`] body. It counts the body bytes
//! handed to the connection and, when the body is finished or dropped (the client went away, a
//! revocation cut it, shutdown), writes the request's one log line — inside the request's span,
//! so the line carries route, method, peer and link id (never the token) — with status, bytes
//! and the duration to the last byte, and adds the bytes to `keydrop_sent_bytes_total`.

use crate::body::Body;
use bytes::Bytes;
use http_body::{Frame, SizeHint};
use prometheus_client::metrics::counter::Counter;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

pub struct Observed {
    inner: Body,
    bytes: u64,
    status: u16,
    started: Instant,
    span: tracing::Span,
    sent: Counter,
}

impl Observed {
    pub fn new(inner: Body, status: u16, started: Instant, span: tracing::Span, sent: Counter) -> Observed {
        Observed { inner, bytes: 0, status, started, span, sent }
    }
}

impl Drop for Observed {
    fn drop(&mut self) {
        self.sent.inc_by(self.bytes);
        let complete = http_body::Body::is_end_stream(&self.inner);
        let micros = self.started.elapsed().as_micros() as u64;
        self.span.in_scope(|| {
            tracing::info!(status = self.status, bytes = self.bytes, micros, complete, "request");
        });
    }
}

impl http_body::Body for Observed {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let r = Pin::new(&mut self.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(frame))) = &r {
            if let Some(d) = frame.data_ref() {
                self.bytes += d.len() as u64;
            }
        }
        r
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn counts_the_bytes_it_passes_on() {
        let sent = Counter::default();
        let b = Observed::new(Body::from_bytes("hello"), 200, Instant::now(), tracing::Span::none(), sent.clone());
        let got = b.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"hello");
        assert_eq!(sent.get(), 5);
    }
}
