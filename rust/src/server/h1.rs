//! HTTP/1.1 downstream connections: keep-alive, pipelining, strict heads,
//! `Expect: 100-continue`, upgrades, and the slow-client timeouts.
//!
//! A connection is one task. It reads a head, hands the request to the
//! proxy, writes the response, and loops. A request body reads straight
//! from the connection's socket: the read side is lent to the body and
//! comes back through [`BodySlot`] when the body is dropped, so no channel
//! or extra task sits between the client and the upstream.

use std::future::poll_fn;
use std::io;
use std::pin::{Pin, pin};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::sync::{Notify, watch};
use tokio::time::{Instant, Sleep};

use super::{ConnInfo, ServerCtx};
use crate::body::{ProxyBody, RequestBody};
use crate::error::{Error, ErrorKind};
use crate::h1::decode::{DecodeError, Decoded, Decoder};
use crate::h1::encode::{self, WriteQueue};
use crate::h1::parse::{self, Framing, RequestHead};
use crate::h1::reader::{self, ReadError, Source};
use crate::proxy::{CloseConnection, UpgradeRequested};
use crate::response;
use crate::timer::{IdleTimer, lazy_timeout};
use crate::upstream::UpgradeTunnel;

/// The read half of a downstream connection.
pub(crate) type DownRead = Box<dyn AsyncRead + Send + Unpin>;
/// The write half of a downstream connection.
pub(crate) type DownWrite = Box<dyn AsyncWrite + Send + Unpin>;

/// Unread request body bytes discarded to keep a connection alive.
const DRAIN_MAX: u64 = 64 * 1024;
/// Response bytes queued before a write is forced.
const FLUSH_AT: usize = 64 * 1024;
/// Bounds of the lingering close after an error (RFC 9112 §9.6).
const LINGER_TIME: Duration = Duration::from_secs(2);
const LINGER_BYTES: usize = 256 * 1024;

/// The read side of a connection with its buffer.
pub(crate) struct ReadSide {
    io: DownRead,
    pub(crate) buf: BytesMut,
    eof: bool,
}

impl Source for ReadSide {
    fn buffered(&mut self) -> (&mut BytesMut, bool) {
        (&mut self.buf, self.eof)
    }

    fn poll_fill(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<usize>> {
        reader::poll_fill(&mut self.io, &mut self.buf, &mut self.eof, cx)
    }
}

impl ReadSide {
    pub(crate) fn new(io: DownRead, buf: BytesMut) -> Self {
        ReadSide {
            io,
            buf,
            eof: false,
        }
    }

    async fn fill(&mut self) -> io::Result<usize> {
        poll_fn(|cx| self.poll_fill(cx)).await
    }

    pub(crate) fn into_parts(self) -> (DownRead, BytesMut) {
        (self.io, self.buf)
    }
}

/// Where a request body hands the read side back, and how it asks the
/// connection to send `100 Continue`.
#[derive(Default)]
pub(crate) struct BodySlot {
    returned: Mutex<Option<Returned>>,
    want_continue: Notify,
}

struct Returned {
    read: ReadSide,
    decoder: Decoder,
    failed: bool,
}

/// The body of a request on an HTTP/1.1 connection.
pub struct H1Body {
    read: Option<ReadSide>,
    decoder: Decoder,
    slot: Arc<BodySlot>,
    timer: IdleTimer,
    expect_continue: bool,
    failed: bool,
}

impl H1Body {
    pub(crate) fn poll_frame(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        let Some(read) = self.read.as_mut() else {
            return Poll::Ready(None);
        };
        if self.failed {
            return Poll::Ready(None);
        }
        let expect_continue = &mut self.expect_continue;
        let slot = &self.slot;
        let before_read = || {
            // The body is wanted and the client waits for permission.
            if std::mem::take(expect_continue) {
                slot.want_continue.notify_one();
            }
        };
        let err = match ready!(reader::poll_frame(
            &mut self.decoder,
            read,
            &mut self.timer,
            cx,
            before_read
        )) {
            Ok(frame) => return Poll::Ready(frame.map(Ok)),
            Err(ReadError::Decode(DecodeError::Invalid)) => {
                Error::new(ErrorKind::BadRequest, "malformed chunked request body")
            }
            Err(ReadError::Decode(DecodeError::Truncated)) => Error::new(
                ErrorKind::ClientClosed,
                "client closed during the request body",
            ),
            Err(ReadError::Io(e)) => {
                Error::new(ErrorKind::ClientClosed, "reading the request body").with_cause(e)
            }
            Err(ReadError::Idle) => Error::new(
                ErrorKind::ClientTimeout,
                "client_body_timeout while reading the request body",
            ),
        };
        self.failed = true;
        Poll::Ready(Some(Err(err)))
    }

    pub(crate) fn is_end_stream(&self) -> bool {
        self.decoder.is_done()
    }

    pub(crate) fn size_hint(&self) -> SizeHint {
        match self.decoder.remaining() {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

impl Drop for H1Body {
    fn drop(&mut self) {
        if let Some(read) = self.read.take() {
            let returned = Returned {
                read,
                decoder: self.decoder.clone(),
                failed: self.failed,
            };
            if let Ok(mut slot) = self.slot.returned.lock() {
                *slot = Some(returned);
            }
        }
    }
}

/// Outcome of reading a request head.
#[allow(clippy::large_enum_variant)] // Lives on the stack for one moment.
enum HeadRead {
    Request(RequestHead),
    /// The client opened with the HTTP/2 preface.
    H2Preface,
    /// Nothing more to do: the client closed, went idle too long, or we stop.
    Close,
}

/// One HTTP/1.1 downstream connection.
pub(crate) struct H1Conn {
    read: Option<ReadSide>,
    write: DownWrite,
    out: WriteQueue,
    slot: Arc<BodySlot>,
    sleep: Pin<Box<Sleep>>,
    ctx: Arc<ServerCtx>,
    info: Arc<ConnInfo>,
    shutdown: watch::Receiver<bool>,
    first: bool,
}

/// What a finished HTTP/1 connection asks its caller to do.
pub(crate) enum H1Exit {
    /// Close the connection.
    Done,
    /// The client speaks HTTP/2: serve these halves and buffered bytes with h2.
    SwitchToH2(ReadSide, DownWrite),
}

impl H1Conn {
    pub(crate) fn new(
        read: ReadSide,
        write: DownWrite,
        ctx: Arc<ServerCtx>,
        info: Arc<ConnInfo>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        let deadline = Instant::now() + ctx.config.client_header_timeout;
        H1Conn {
            read: Some(read),
            write,
            out: WriteQueue::new(),
            slot: Arc::new(BodySlot::default()),
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            ctx,
            info,
            shutdown,
            first: true,
        }
    }

    /// Write everything queued, failing if the client accepts nothing for
    /// `send_timeout` (a client that stops reading must not hold the
    /// connection, and its upstream, forever).
    async fn send(&mut self) -> Result<(), ()> {
        let limit = self.ctx.config.send_timeout;
        match lazy_timeout(limit, self.out.flush(&mut self.write)).await {
            Some(Ok(())) => Ok(()),
            Some(Err(_)) => Err(()),
            None => {
                log::debug!("{}: send_timeout writing to the client", self.info.client);
                Err(())
            }
        }
    }

    /// Serve requests until the connection ends.
    pub(crate) async fn run(mut self) -> H1Exit {
        let mut idle_deadline = self.sleep.deadline();
        loop {
            let head = match self.read_head(idle_deadline).await {
                Ok(HeadRead::Request(head)) => head,
                Ok(HeadRead::Close) => return H1Exit::Done,
                Ok(HeadRead::H2Preface) => {
                    let read = self.read.take().expect("reader present between requests");
                    return H1Exit::SwitchToH2(read, self.write);
                }
                Err(e) => {
                    self.reject(&e, Version::HTTP_11).await;
                    return H1Exit::Done;
                }
            };
            self.first = false;
            match self.exchange(head).await {
                Ok(true) => {
                    idle_deadline = Instant::now() + self.ctx.config.keepalive_timeout;
                }
                Ok(false) | Err(()) => return H1Exit::Done,
            }
        }
    }

    /// Wait for a complete head, under the keep-alive and header timeouts.
    async fn read_head(&mut self, idle_deadline: Instant) -> Result<HeadRead, Error> {
        let H1Conn {
            read,
            sleep,
            ctx,
            shutdown,
            first,
            ..
        } = self;
        let read = read.as_mut().expect("reader present between requests");
        let mut header_deadline: Option<Instant> = None;
        loop {
            if !read.buf.is_empty() {
                if *first && parse::maybe_h2_preface(&read.buf) {
                    if read.buf.len() >= parse::H2_PREFACE.len() {
                        return Ok(HeadRead::H2Preface);
                    }
                } else if let Some(head) = parse::parse_request(&mut read.buf, &ctx.limits)? {
                    return Ok(HeadRead::Request(head));
                }
                if header_deadline.is_none() {
                    let d = if *first {
                        idle_deadline
                    } else {
                        Instant::now() + ctx.config.client_header_timeout
                    };
                    header_deadline = Some(d);
                }
            }
            if read.eof {
                return Ok(HeadRead::Close);
            }
            let deadline = header_deadline.unwrap_or(idle_deadline);
            if sleep.deadline() > deadline {
                sleep.as_mut().reset(deadline);
            }
            let idle = header_deadline.is_none();
            tokio::select! {
                biased;
                r = read.fill() => {
                    if r.is_err() {
                        return Ok(HeadRead::Close);
                    }
                }
                () = sleep.as_mut() => {
                    if Instant::now() >= deadline {
                        return if idle {
                            Ok(HeadRead::Close)
                        } else {
                            Err(Error::new(ErrorKind::ClientTimeout, "client_header_timeout"))
                        };
                    }
                    sleep.as_mut().reset(deadline);
                }
                _ = shutdown.changed(), if idle => return Ok(HeadRead::Close),
            }
        }
    }

    /// Serve one request; returns whether the connection stays open.
    async fn exchange(&mut self, head: RequestHead) -> Result<bool, ()> {
        let RequestHead {
            method,
            uri,
            version,
            headers,
            framing,
            keep_alive,
            expect_continue,
            upgrade,
        } = head;
        if let Framing::Length(n) = framing {
            if n > self.ctx.config.max_body_size {
                let e = Error::new(
                    ErrorKind::BodyTooLarge,
                    "Content-Length above max_body_size",
                );
                self.reject(&e, version).await;
                return Ok(false);
            }
        }
        let body = if framing == Framing::Empty {
            RequestBody::empty()
        } else {
            let read = self.read.take();
            RequestBody::h1(
                H1Body {
                    read,
                    decoder: Decoder::new(framing),
                    slot: self.slot.clone(),
                    timer: IdleTimer::new(self.ctx.config.client_body_timeout),
                    expect_continue,
                    failed: false,
                },
                self.ctx.config.max_body_size,
            )
        };
        let mut req = Request::new(body);
        *req.method_mut() = method.clone();
        *req.uri_mut() = uri;
        *req.version_mut() = version;
        *req.headers_mut() = headers;
        if upgrade {
            req.extensions_mut().insert(UpgradeRequested);
        }

        let proxy = self.ctx.proxy.clone();
        let info = self.info.clone();
        let resp = if expect_continue {
            let mut fut = pin!(proxy.handle(req, &info));
            let mut sent = false;
            loop {
                tokio::select! {
                    biased;
                    resp = &mut fut => break resp,
                    () = self.slot.want_continue.notified(), if !sent => {
                        sent = true;
                        self.out.put_slice(b"HTTP/1.1 100 Continue\r\n\r\n");
                        self.send().await?;
                    }
                }
            }
        } else {
            proxy.handle(req, &info).await
        };

        // Take the read side back from the request body.
        let mut unread: Option<Decoder> = None;
        let mut body_ok = true;
        if self.read.is_none() {
            let returned = self.slot.returned.lock().ok().and_then(|mut s| s.take());
            match returned {
                Some(r) => {
                    self.read = Some(r.read);
                    body_ok = !r.failed;
                    if !r.decoder.is_done() {
                        unread = Some(r.decoder);
                    }
                }
                None => body_ok = false,
            }
        }
        let drainable = unread
            .as_ref()
            .is_none_or(|d| d.remaining().is_none_or(|n| n <= DRAIN_MAX));
        let keep_alive = keep_alive
            && body_ok
            && drainable
            && !self.ctx.config.keepalive_timeout.is_zero()
            && !*self.shutdown.borrow()
            && resp.extensions().get::<CloseConnection>().is_none();

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            return self.switch_protocols(resp).await;
        }
        let keep_alive = match self
            .write_response(resp, &method, version, keep_alive)
            .await
        {
            Ok(k) => k,
            Err(()) => return Err(()),
        };
        if !keep_alive {
            if unread.is_some() || !body_ok {
                self.linger().await;
            } else {
                let _ = self.write.shutdown().await;
            }
            return Ok(false);
        }
        if let Some(decoder) = unread {
            if !self.drain(decoder).await {
                let _ = self.write.shutdown().await;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Write a response; returns whether the connection may be reused.
    async fn write_response(
        &mut self,
        resp: Response<ProxyBody>,
        method: &Method,
        version: Version,
        keep_alive: bool,
    ) -> Result<bool, ()> {
        let (parts, mut body) = resp.into_parts();
        let status = parts.status;
        let bodiless = method == Method::HEAD
            || status.is_informational()
            || status == StatusCode::NO_CONTENT
            || status == StatusCode::NOT_MODIFIED;
        let exact = body.size_hint().exact();
        let framing = if bodiless {
            Framing::Empty
        } else if let Some(n) = exact {
            Framing::Length(n)
        } else if version == Version::HTTP_11 {
            Framing::Chunked
        } else {
            Framing::Close
        };
        let keep_alive = keep_alive && framing != Framing::Close;
        // RFC 9110 §8.6: HEAD and 304 keep the Content-Length of the
        // representation; 1xx and 204 never carry one.
        let keep_length =
            bodiless && (method == Method::HEAD || status == StatusCode::NOT_MODIFIED);

        let head = self.out.scratch_mut();
        encode::write_status_line(head, Version::HTTP_11, status);
        for (name, value) in &parts.headers {
            if (name == header::CONTENT_LENGTH && !keep_length)
                || name == header::TRANSFER_ENCODING
                || name == header::CONNECTION
            {
                continue;
            }
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        if !parts.headers.contains_key(header::DATE) {
            head.extend_from_slice(b"date: ");
            head.extend_from_slice(&encode::http_date());
            head.extend_from_slice(b"\r\n");
        }
        match framing {
            Framing::Length(n) => {
                head.extend_from_slice(b"content-length: ");
                encode::write_decimal(head, n);
                head.extend_from_slice(b"\r\n");
            }
            Framing::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            Framing::Empty => {
                if method == Method::HEAD && !parts.headers.contains_key(header::CONTENT_LENGTH) {
                    if let Some(n) = exact.filter(|n| *n > 0) {
                        head.extend_from_slice(b"content-length: ");
                        encode::write_decimal(head, n);
                        head.extend_from_slice(b"\r\n");
                    }
                }
            }
            Framing::Close => {}
        }
        if !keep_alive {
            head.extend_from_slice(b"connection: close\r\n");
        } else if version == Version::HTTP_10 {
            head.extend_from_slice(b"connection: keep-alive\r\n");
        }
        head.extend_from_slice(b"\r\n");

        if framing != Framing::Empty {
            self.write_body(&mut body, framing).await?;
        }
        let sent = self.send().await;
        // Dropped only now: completion hooks (rproxy_log) run after the
        // client has the whole response.
        drop(body);
        sent?;
        Ok(keep_alive)
    }

    async fn write_body(&mut self, body: &mut ProxyBody, framing: Framing) -> Result<(), ()> {
        let mut trailers: Option<HeaderMap> = None;
        loop {
            let next = poll_fn(|cx| Poll::Ready(Pin::new(&mut *body).poll_frame(cx))).await;
            let next = match next {
                Poll::Ready(next) => next,
                Poll::Pending => {
                    // Send what we have while the body waits for more.
                    self.send().await?;
                    poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await
                }
            };
            match next {
                None => break,
                Some(Err(e)) => {
                    log::warn!("response body aborted for {}: {e}", self.info.client);
                    // Send what was received so far, then cut the connection:
                    // the missing end tells the client the body is incomplete.
                    let _ = self.send().await;
                    return Err(());
                }
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => {
                        if framing == Framing::Chunked {
                            self.out.push_chunk(data);
                        } else {
                            self.out.push(data);
                        }
                    }
                    Err(frame) => {
                        if let Ok(t) = frame.into_trailers() {
                            trailers = Some(t);
                        }
                    }
                },
            }
            if self.out.len() >= FLUSH_AT {
                self.send().await?;
            }
        }
        if framing == Framing::Chunked {
            self.out.push_last_chunk(trailers.as_ref());
        }
        Ok(())
    }

    /// Send a 101 and join the client and upstream connections.
    async fn switch_protocols(&mut self, resp: Response<ProxyBody>) -> Result<bool, ()> {
        let Some(upstream) = resp
            .extensions()
            .get::<UpgradeTunnel>()
            .and_then(UpgradeTunnel::take)
        else {
            return Err(());
        };
        let Some(read) = self.read.take() else {
            return Err(());
        };
        let mut head = BytesMut::with_capacity(256);
        encode::write_status_line(&mut head, Version::HTTP_11, StatusCode::SWITCHING_PROTOCOLS);
        for (name, value) in resp.headers() {
            if name == header::CONNECTION || name == header::CONTENT_LENGTH {
                continue;
            }
            head.extend_from_slice(name.as_str().as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value.as_bytes());
            head.extend_from_slice(b"\r\n");
        }
        head.extend_from_slice(b"connection: upgrade\r\n\r\n");
        self.out.put_slice(&head);
        self.send().await?;
        let write = std::mem::replace(&mut self.write, Box::new(tokio::io::sink()));
        upstream.tunnel(read, write).await;
        Ok(false)
    }

    /// Discard the rest of an unread request body so the connection can be reused.
    async fn drain(&mut self, mut decoder: Decoder) -> bool {
        let Some(read) = self.read.as_mut() else {
            return false;
        };
        let mut budget = DRAIN_MAX;
        let work = async {
            loop {
                match decoder.decode(&mut read.buf, read.eof) {
                    Ok(Decoded::Data(d)) => {
                        budget = budget.saturating_sub(d.len() as u64);
                        if budget == 0 {
                            return false;
                        }
                    }
                    Ok(Decoded::Trailers(_)) => {}
                    Ok(Decoded::Done) => return true,
                    Ok(Decoded::NeedMore) => {
                        if read.fill().await.is_err() {
                            return false;
                        }
                    }
                    Err(_) => return false,
                }
            }
        };
        tokio::time::timeout(LINGER_TIME, work)
            .await
            .unwrap_or(false)
    }

    /// Answer a request that cannot be served and close the connection.
    async fn reject(&mut self, err: &Error, version: Version) {
        if err.kind() != ErrorKind::ClientClosed {
            let resp = response::error(err);
            let _ = self
                .write_response(resp, &Method::GET, version, false)
                .await;
        }
        self.linger().await;
    }

    /// Close after an error without losing the response: stop writing, then
    /// read and discard for a short while so that the client's unread bytes
    /// do not turn our close into a reset that destroys the response.
    async fn linger(&mut self) {
        let _ = self.write.shutdown().await;
        let Some(read) = self.read.as_mut() else {
            return;
        };
        let mut seen = 0usize;
        let discard = async {
            loop {
                read.buf.clear();
                match read.fill().await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        seen += n;
                        if seen > LINGER_BYTES {
                            break;
                        }
                    }
                }
            }
        };
        let _ = tokio::time::timeout(LINGER_TIME, discard).await;
    }
}
