//! The one response body type every handler returns: a buffer (problem bodies, JSON, HEAD's
//! nothing) or a boxed stream (a file download). Boxing costs one allocation per download and
//! keeps the shared layer ignorant of how downloads stream.

use bytes::Bytes;
use http_body::{Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

pub type BoxStream = Pin<Box<dyn http_body::Body<Data = Bytes, Error = std::io::Error> + Send + 'static>>;

pub enum Body {
    Bytes(Option<Bytes>),
    Stream(BoxStream),
}

impl Body {
    pub fn empty() -> Body {
        Body::Bytes(None)
    }

    pub fn from_bytes(b: impl Into<Bytes>) -> Body {
        let b = b.into();
        Body::Bytes((!b.is_empty()).then_some(b))
    }
}

impl http_body::Body for Body {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        match self.get_mut() {
            Body::Bytes(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Body::Stream(s) => s.as_mut().poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Bytes(b) => b.is_none(),
            Body::Stream(s) => s.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Bytes(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Body::Stream(s) => s.size_hint(),
        }
    }
}
