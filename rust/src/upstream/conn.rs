//! One HTTP/1.1 connection to an upstream server: sending a request,
//! reading a strictly parsed response head, streaming the response body
//! back, and tunnelling after `101 Switching Protocols`.
//!
//! The response body reads the upstream socket directly from the task that
//! writes to the client, so a proxied response costs no channel hand-offs.

use std::future::poll_fn;
use std::io;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncWriteExt, Interest};
use tokio::net::TcpStream;

use super::{Server, Timeouts};
use crate::body::RequestBody;
use crate::error::{Error, ErrorKind};
use crate::h1::decode::{DecodeError, Decoder};
use crate::h1::encode::WriteQueue;
use crate::h1::parse::{self, Framing, ResponseHead};
use crate::h1::reader::{self, ReadError, Source};
use crate::server::h1::{DownWrite, ReadSide};
use crate::timer::{Deadline, IdleTimer, lazy_timeout};

/// A request body as it will be sent upstream: the part already read from
/// the client, and the rest still to stream.
pub(crate) struct OutBody {
    /// Bytes read before the upstream was chosen.
    pub(crate) prefix: Vec<Bytes>,
    /// Trailers, when the client's body ended within the prefix.
    pub(crate) trailers: Option<HeaderMap>,
    /// The unread remainder, if the body did not fit in the prefix.
    pub(crate) rest: Option<RequestBody>,
    /// Send with chunked framing (otherwise the head carries a Content-Length).
    pub(crate) chunked: bool,
}

impl OutBody {
    /// No body.
    pub(crate) fn empty() -> Self {
        OutBody {
            prefix: Vec::new(),
            trailers: None,
            rest: None,
            chunked: false,
        }
    }

    /// Whether the whole body is in memory, so the request can be sent again.
    pub(crate) fn replayable(&self) -> bool {
        self.rest.is_none()
    }
}

/// A failed exchange, and whether the connection was found stale (it broke
/// before any byte of a response), which makes a retry on a fresh one safe.
pub(crate) struct ExchangeError {
    pub(crate) error: Error,
    pub(crate) stale: bool,
}

/// A connection to an upstream server.
pub(crate) struct UpstreamConn {
    io: TcpStream,
    buf: BytesMut,
    eof: bool,
    server: Arc<Server>,
    requests: u32,
    /// Taken from the pool rather than newly connected.
    pub(crate) reused: bool,
    /// A final response head that arrived while the request body was still being sent.
    early: Option<ResponseHead>,
    /// The response timeout, kept with the connection from request to request.
    deadline: Deadline,
    /// Counts held while the connection is a tunnel.
    held: Option<super::Leases>,
}

enum UploadStep {
    Frame(Option<Result<Frame<Bytes>, Error>>),
    Readable(io::Result<()>),
}

impl Source for UpstreamConn {
    fn buffered(&mut self) -> (&mut BytesMut, bool) {
        (&mut self.buf, self.eof)
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        reader::poll_fill(&mut self.io, &mut self.buf, &mut self.eof, cx)
    }
}

impl UpstreamConn {
    pub(crate) fn new(
        io: TcpStream,
        server: Arc<Server>,
        requests: u32,
        reused: bool,
        deadline: Deadline,
    ) -> Self {
        UpstreamConn {
            io,
            buf: BytesMut::new(),
            eof: false,
            server,
            requests,
            reused,
            early: None,
            deadline,
            held: None,
        }
    }

    /// Keep `leases` until this connection is dropped (a tunnel's life).
    pub(crate) fn hold(&mut self, leases: super::Leases) {
        self.held = Some(leases);
    }

    fn stale_or(&self, received: bool) -> bool {
        self.reused && !received
    }

    /// Send `head` and `body`, then read the response head.
    ///
    /// Returns the head and whether the request body was sent completely (an
    /// upstream may answer early, before reading all of it).
    pub(crate) async fn exchange(
        &mut self,
        head: &Bytes,
        body: &mut OutBody,
        method: &Method,
        t: &Timeouts,
    ) -> Result<(ResponseHead, bool), ExchangeError> {
        self.requests += 1;
        let write_failed = |e: io::Error, stale: bool| ExchangeError {
            error: Error::new(ErrorKind::UpstreamClosed, "writing the request upstream")
                .with_cause(e),
            stale,
        };
        let write_timeout = || ExchangeError {
            error: Error::new(
                ErrorKind::UpstreamTimeout,
                "body_idle_timeout writing the request",
            ),
            stale: false,
        };

        let mut q = WriteQueue::default();
        if body.prefix.is_empty() && body.rest.is_none() && !body.chunked {
            match lazy_timeout(t.body_idle, self.io.write_all(head)).await {
                None => return Err(write_timeout()),
                Some(Err(e)) => return Err(write_failed(e, self.reused)),
                Some(Ok(())) => {}
            }
            return self.finish_exchange(method, t, true).await;
        }
        q.push_shared(head.clone());
        for piece in &body.prefix {
            if body.chunked {
                q.push_chunk(piece.clone());
            } else {
                q.push(piece.clone());
            }
        }
        if body.rest.is_none() && body.chunked {
            q.push_last_chunk(body.trailers.as_ref());
        }
        match lazy_timeout(t.body_idle, q.flush(&mut self.io)).await {
            None => return Err(write_timeout()),
            Some(Err(e)) => return Err(write_failed(e, self.reused)),
            Some(Ok(())) => {}
        }

        let mut sent_all = true;
        if let Some(rest) = body.rest.as_mut() {
            let mut trailers = None;
            loop {
                let step = tokio::select! {
                    biased;
                    r = self.io.ready(Interest::READABLE) => UploadStep::Readable(r.map(|_| ())),
                    f = poll_fn(|cx| Pin::new(&mut *rest).poll_frame(cx)) => UploadStep::Frame(f),
                };
                match step {
                    UploadStep::Readable(r) => {
                        // The upstream answered (or closed) before the body
                        // was sent: stop uploading and read its response.
                        if r.is_err() {
                            return Err(write_failed(io::ErrorKind::ConnectionReset.into(), false));
                        }
                        let mut cx = Context::from_waker(std::task::Waker::noop());
                        match self.poll_fill(&mut cx) {
                            Poll::Ready(Ok(0)) => {
                                sent_all = false;
                                break;
                            }
                            Poll::Ready(Ok(_)) => {
                                if self.final_head_buffered(method, t)? {
                                    sent_all = false;
                                    break;
                                }
                                continue;
                            }
                            Poll::Ready(Err(e)) => return Err(write_failed(e, false)),
                            Poll::Pending => continue,
                        }
                    }
                    UploadStep::Frame(None) => break,
                    UploadStep::Frame(Some(Err(e))) => {
                        return Err(ExchangeError {
                            error: e,
                            stale: false,
                        });
                    }
                    UploadStep::Frame(Some(Ok(frame))) => match frame.into_data() {
                        Ok(data) if body.chunked => q.push_chunk(data),
                        Ok(data) => q.push(data),
                        Err(frame) => trailers = frame.into_trailers().ok(),
                    },
                }
                match lazy_timeout(t.body_idle, q.flush(&mut self.io)).await {
                    None => return Err(write_timeout()),
                    Some(Err(e)) => return Err(write_failed(e, false)),
                    Some(Ok(())) => {}
                }
            }
            if sent_all {
                if body.chunked {
                    q.push_last_chunk(trailers.as_ref());
                }
                match lazy_timeout(t.body_idle, q.flush(&mut self.io)).await {
                    None => return Err(write_timeout()),
                    Some(Err(e)) => return Err(write_failed(e, false)),
                    Some(Ok(())) => {}
                }
            }
        }

        self.finish_exchange(method, t, sent_all).await
    }

    async fn finish_exchange(
        &mut self,
        method: &Method,
        t: &Timeouts,
        sent_all: bool,
    ) -> Result<(ResponseHead, bool), ExchangeError> {
        let mut deadline = std::mem::take(&mut self.deadline);
        let head = deadline.run(t.response, self.read_head(method, t)).await;
        self.deadline = deadline;
        match head {
            None => Err(ExchangeError {
                error: Error::new(ErrorKind::UpstreamTimeout, "response_timeout"),
                stale: false,
            }),
            Some(Err(e)) => Err(e),
            Some(Ok(head)) => Ok((head, sent_all)),
        }
    }

    /// Parse what the upstream sent during the upload; true once a final
    /// response head is complete (kept for [`Self::read_head`]).
    fn final_head_buffered(
        &mut self,
        method: &Method,
        t: &Timeouts,
    ) -> Result<bool, ExchangeError> {
        loop {
            match parse::parse_response(&mut self.buf, method, t.max_header_bytes, t.max_headers) {
                Ok(Some(head)) if head.status.is_informational() && head.status.as_u16() != 101 => {
                }
                Ok(Some(head)) => {
                    self.early = Some(head);
                    return Ok(true);
                }
                Ok(None) => return Ok(false),
                Err(error) => {
                    return Err(ExchangeError {
                        error,
                        stale: false,
                    });
                }
            }
        }
    }

    async fn read_head(
        &mut self,
        method: &Method,
        t: &Timeouts,
    ) -> Result<ResponseHead, ExchangeError> {
        if let Some(head) = self.early.take() {
            return Ok(head);
        }
        let mut received = !self.buf.is_empty();
        loop {
            if !self.buf.is_empty() {
                match parse::parse_response(
                    &mut self.buf,
                    method,
                    t.max_header_bytes,
                    t.max_headers,
                ) {
                    Ok(Some(head))
                        if head.status.is_informational() && head.status.as_u16() != 101 =>
                    {
                        // Interim responses (100, 102, 103) are not forwarded.
                        continue;
                    }
                    Ok(Some(head)) => return Ok(head),
                    Ok(None) => {}
                    Err(error) => {
                        return Err(ExchangeError {
                            error,
                            stale: false,
                        });
                    }
                }
            }
            if self.eof {
                return Err(ExchangeError {
                    error: Error::new(
                        ErrorKind::UpstreamClosed,
                        "upstream closed before a complete response head",
                    ),
                    stale: self.stale_or(received),
                });
            }
            match poll_fn(|cx| self.poll_fill(cx)).await {
                Ok(n) => received |= n > 0,
                Err(e) => {
                    return Err(ExchangeError {
                        error: Error::new(ErrorKind::UpstreamClosed, "reading the response head")
                            .with_cause(e),
                        stale: self.stale_or(received),
                    });
                }
            }
        }
    }

    /// Join this connection with a client connection after a 101 response,
    /// until both directions are closed or one fails.
    pub(crate) async fn tunnel(self, down: ReadSide, mut down_w: DownWrite) {
        let (mut down_r, down_buf) = down.into_parts();
        let (mut up_r, mut up_w) = self.io.into_split();
        let up_buf = self.buf;
        let to_upstream = async {
            up_w.write_all(&down_buf).await?;
            tokio::io::copy(&mut down_r, &mut up_w).await?;
            up_w.shutdown().await
        };
        let to_client = async {
            down_w.write_all(&up_buf).await?;
            tokio::io::copy(&mut up_r, &mut down_w).await?;
            down_w.shutdown().await
        };
        let _ = tokio::try_join!(to_upstream, to_client);
    }
}

/// A response body streamed from an upstream connection. When it ends
/// cleanly the connection goes back to its pool.
pub struct UpstreamBody {
    conn: Option<UpstreamConn>,
    decoder: Decoder,
    timer: IdleTimer,
    reusable: bool,
    /// The request's places in its pool's counts, given up when the body ends.
    leases: Option<super::Leases>,
}

impl UpstreamBody {
    pub(crate) fn new(
        conn: UpstreamConn,
        framing: Framing,
        reusable: bool,
        idle: Duration,
    ) -> Self {
        let mut body = UpstreamBody {
            conn: Some(conn),
            decoder: Decoder::new(framing),
            timer: IdleTimer::new(idle),
            reusable: reusable && framing != Framing::Close,
            leases: None,
        };
        if body.decoder.is_done() {
            body.finish();
        }
        body
    }

    /// Hold `leases` until the body ends.
    pub(crate) fn holding(mut self, leases: super::Leases) -> Self {
        if self.conn.is_some() {
            self.leases = Some(leases);
        }
        self
    }

    fn finish(&mut self) {
        self.leases = None;
        if let Some(conn) = self.conn.take() {
            if self.reusable && conn.buf.is_empty() && !conn.eof {
                conn.server.release(conn.io, conn.requests, conn.deadline);
            }
        }
    }

    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let Some(conn) = self.conn.as_mut() else {
            return Poll::Ready(None);
        };
        let err = match ready!(reader::poll_frame(
            &mut self.decoder,
            conn,
            &mut self.timer,
            cx,
            || {}
        )) {
            Ok(frame) => {
                // Give the connection back as soon as the body is complete,
                // even if nobody polls again after the last frame.
                if self.decoder.is_done() {
                    self.finish();
                }
                return Poll::Ready(frame.map(Ok));
            }
            Err(ReadError::Decode(DecodeError::Invalid)) => Error::new(
                ErrorKind::UpstreamProtocol,
                "malformed chunked response body",
            ),
            Err(ReadError::Decode(DecodeError::Truncated)) => Error::new(
                ErrorKind::UpstreamClosed,
                "upstream closed during the response body",
            ),
            Err(ReadError::Io(e)) => {
                Error::new(ErrorKind::UpstreamClosed, "reading the response body").with_cause(e)
            }
            Err(ReadError::Idle) => Error::new(
                ErrorKind::UpstreamTimeout,
                "body_idle_timeout reading the response body",
            ),
        };
        self.conn = None;
        self.leases = None;
        Poll::Ready(Some(Err(err)))
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.conn.is_none() || self.decoder.is_done()
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

/// An upstream connection that answered `101 Switching Protocols`, carried
/// on the response until the client connection takes it over.
#[derive(Clone)]
pub(crate) struct UpgradeTunnel(Arc<Mutex<Option<UpstreamConn>>>);

impl UpgradeTunnel {
    pub(crate) fn new(conn: UpstreamConn) -> Self {
        UpgradeTunnel(Arc::new(Mutex::new(Some(conn))))
    }

    pub(crate) fn take(&self) -> Option<UpstreamConn> {
        self.0.lock().ok().and_then(|mut c| c.take())
    }
}
