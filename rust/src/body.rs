//! Streaming bodies: [`RequestBody`] from a client, [`ProxyBody`] to a client.
//!
//! Neither is ever collected whole: frames are handed on as they arrive, so
//! a proxied body costs at most a few read buffers of memory.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::error::{Error, ErrorKind};
use crate::server::h1::H1Body;
use crate::upstream::UpstreamBody;

/// A request body as received from a client, with the size limit applied.
pub struct RequestBody {
    inner: RequestInner,
    limit: u64,
    received: u64,
}

enum RequestInner {
    Empty,
    H1(Box<H1Body>),
    H2(Incoming),
}

impl RequestBody {
    /// A body with no bytes.
    pub fn empty() -> Self {
        RequestBody {
            inner: RequestInner::Empty,
            limit: u64::MAX,
            received: 0,
        }
    }

    pub(crate) fn h1(body: H1Body, limit: u64) -> Self {
        RequestBody {
            inner: RequestInner::H1(Box::new(body)),
            limit,
            received: 0,
        }
    }

    pub(crate) fn h2(body: Incoming, limit: u64) -> Self {
        RequestBody {
            inner: RequestInner::H2(body),
            limit,
            received: 0,
        }
    }

    /// Whether the declared length (Content-Length) already exceeds the limit.
    pub fn declared_too_large(&self) -> bool {
        self.size_hint().exact().is_some_and(|n| n > self.limit)
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        let frame = match &mut this.inner {
            RequestInner::Empty => return Poll::Ready(None),
            RequestInner::H1(body) => std::task::ready!(body.poll_frame(cx)),
            RequestInner::H2(body) => match std::task::ready!(Pin::new(body).poll_frame(cx)) {
                None => None,
                Some(Ok(frame)) => Some(Ok(frame)),
                Some(Err(e)) => Some(Err(Error::new(
                    ErrorKind::ClientClosed,
                    "reading the HTTP/2 request body",
                )
                .with_cause(e))),
            },
        };
        if let Some(Ok(frame)) = &frame {
            if let Some(data) = frame.data_ref() {
                this.received += data.len() as u64;
                if this.received > this.limit {
                    return Poll::Ready(Some(Err(Error::new(
                        ErrorKind::BodyTooLarge,
                        "request body larger than max_body_size",
                    ))));
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            RequestInner::Empty => true,
            RequestInner::H1(body) => body.is_end_stream(),
            RequestInner::H2(body) => body.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            RequestInner::Empty => SizeHint::with_exact(0),
            RequestInner::H1(body) => body.size_hint(),
            RequestInner::H2(body) => body.size_hint(),
        }
    }
}

/// A response body sent to a client: nothing, bytes in memory, or a stream
/// from an upstream connection.
pub struct ProxyBody {
    inner: ProxyInner,
    done: Option<Completion>,
    tee: Option<Box<dyn Tee>>,
}

/// Where a copy of a body goes as it streams (the cache): `data` for each
/// chunk (false: stop copying), `end` once the body ended cleanly. A tee
/// dropped without `end` was abandoned.
pub(crate) trait Tee: Send {
    fn data(&mut self, data: &Bytes) -> bool;
    fn end(self: Box<Self>);
}

/// Called once when a body is dropped: with the bytes it produced and
/// whether it reached its end.
struct Completion {
    sent: u64,
    complete: bool,
    callback: Box<dyn FnOnce(u64, bool) + Send>,
}

enum ProxyInner {
    Empty,
    Full(Option<Bytes>),
    Upstream(Box<UpstreamBody>),
}

impl ProxyBody {
    /// No body.
    pub fn empty() -> Self {
        ProxyBody {
            inner: ProxyInner::Empty,
            done: None,
            tee: None,
        }
    }

    /// A body held in memory.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        let bytes = bytes.into();
        ProxyBody {
            inner: if bytes.is_empty() {
                ProxyInner::Empty
            } else {
                ProxyInner::Full(Some(bytes))
            },
            done: None,
            tee: None,
        }
    }

    pub(crate) fn upstream(body: UpstreamBody) -> Self {
        ProxyBody {
            inner: ProxyInner::Upstream(Box::new(body)),
            done: None,
            tee: None,
        }
    }

    /// Copy the body into `tee` as it is sent (a body already at its end
    /// is handed over at once).
    pub(crate) fn teeing(mut self, tee: Box<dyn Tee>) -> Self {
        if self.is_end_stream() {
            tee.end();
        } else {
            self.tee = Some(tee);
        }
        self
    }

    /// Call `callback(bytes, complete)` once the body is dropped — after it
    /// was sent, or when sending it was abandoned.
    pub fn on_done(mut self, callback: impl FnOnce(u64, bool) + Send + 'static) -> Self {
        self.done = Some(Completion {
            sent: 0,
            complete: self.is_end_stream(),
            callback: Box::new(callback),
        });
        self
    }
}

impl ProxyInner {
    fn is_end_stream(&self) -> bool {
        match self {
            ProxyInner::Empty => true,
            ProxyInner::Full(bytes) => bytes.is_none(),
            ProxyInner::Upstream(body) => body.is_end_stream(),
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        if let Some(done) = self.done.take() {
            (done.callback)(done.sent, done.complete);
        }
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let this = &mut *self;
        let frame = match &mut this.inner {
            ProxyInner::Empty => Poll::Ready(None),
            ProxyInner::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            ProxyInner::Upstream(body) => body.poll_frame(cx),
        };
        if let Some(tee) = &mut this.tee {
            let keep = match &frame {
                Poll::Ready(Some(Ok(f))) => f.data_ref().is_some_and(|d| tee.data(d)),
                // The end: handed over below. An error abandons the copy.
                Poll::Ready(None) => true,
                Poll::Ready(Some(Err(_))) => false,
                Poll::Pending => true,
            };
            if !keep {
                // Trailers are not stored either.
                this.tee = None;
            } else if matches!(frame, Poll::Ready(_)) && this.inner.is_end_stream() {
                if let Some(tee) = this.tee.take() {
                    tee.end();
                }
            }
        }
        if let Some(done) = &mut this.done {
            match &frame {
                Poll::Ready(Some(Ok(f))) => {
                    done.sent += f.data_ref().map_or(0, |d| d.len() as u64);
                }
                Poll::Ready(None) => done.complete = true,
                _ => {}
            }
        }
        frame
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            ProxyInner::Empty => SizeHint::with_exact(0),
            ProxyInner::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            ProxyInner::Upstream(body) => body.size_hint(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn completion_reports_bytes_and_end() {
        let (tx, rx) = std::sync::mpsc::channel();
        let body = ProxyBody::full("hello").on_done(move |n, complete| {
            let _ = tx.send((n, complete));
        });
        let bytes = body.collect().await.expect("collect").to_bytes();
        assert_eq!(&bytes[..], b"hello");
        assert_eq!(rx.recv().expect("called"), (5, true));
        let (tx, rx) = std::sync::mpsc::channel();
        drop(ProxyBody::full("unsent").on_done(move |n, complete| {
            let _ = tx.send((n, complete));
        }));
        assert_eq!(rx.recv().expect("called"), (0, false));
    }

    #[tokio::test]
    async fn full_and_empty_bodies() {
        let body = ProxyBody::full("hello");
        assert_eq!(body.size_hint().exact(), Some(5));
        let bytes = body.collect().await.expect("collect").to_bytes();
        assert_eq!(&bytes[..], b"hello");
        let empty = ProxyBody::full("");
        assert!(empty.is_end_stream());
        assert!(RequestBody::empty().is_end_stream());
    }
}
