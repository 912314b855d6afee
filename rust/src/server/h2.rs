//! HTTP/2 downstream connections (cleartext, prior knowledge), served by
//! hyper's HTTP/2 implementation and forwarded upstream over HTTP/1.1.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::Request;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{ConnInfo, ServerCtx};
use crate::body::{ProxyBody, RequestBody};
use crate::error::Error;

/// Open streams of one connection, for the idle timeout.
struct Streams {
    open: AtomicUsize,
    last_closed: Mutex<Instant>,
}

impl Streams {
    fn idle_since(&self) -> Option<Instant> {
        if self.open.load(Ordering::Acquire) == 0 {
            self.last_closed.lock().ok().map(|t| *t)
        } else {
            None
        }
    }
}

struct StreamGuard(Arc<Streams>);

impl StreamGuard {
    fn new(streams: Arc<Streams>) -> Self {
        streams.open.fetch_add(1, Ordering::AcqRel);
        StreamGuard(streams)
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if let Ok(mut t) = self.0.last_closed.lock() {
            *t = Instant::now();
        }
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A response body that keeps its stream counted until it is done.
struct H2Body {
    body: ProxyBody,
    _guard: StreamGuard,
}

impl Body for H2Body {
    type Data = Bytes;
    type Error = Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serve one HTTP/2 connection until it closes, idles out, or we stop.
pub(crate) async fn serve<I>(
    io: I,
    ctx: Arc<ServerCtx>,
    info: Arc<ConnInfo>,
    mut shutdown: watch::Receiver<bool>,
) where
    I: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let streams = Arc::new(Streams {
        open: AtomicUsize::new(0),
        last_closed: Mutex::new(Instant::now()),
    });
    let client = info.client;
    let service = {
        let ctx = ctx.clone();
        let streams = streams.clone();
        service_fn(move |req: Request<Incoming>| {
            let ctx = ctx.clone();
            let info = info.clone();
            let guard = StreamGuard::new(streams.clone());
            async move {
                let limit = ctx.config.max_body_size;
                let req = req.map(|b| RequestBody::h2(b, limit));
                let resp = ctx.proxy.handle(req, &info).await;
                Ok::<_, Infallible>(resp.map(|body| H2Body {
                    body,
                    _guard: guard,
                }))
            }
        })
    };
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(ctx.config.max_header_bytes).unwrap_or(u32::MAX))
        .max_concurrent_streams(256);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);

    let keepalive = ctx.config.keepalive_timeout;
    let idle_check = tokio::time::sleep(keepalive);
    tokio::pin!(idle_check);
    let mut stopping = false;
    loop {
        tokio::select! {
            r = conn.as_mut() => {
                if let Err(e) = r {
                    log::debug!("h2 connection from {client}: {e}");
                }
                return;
            }
            _ = shutdown.changed(), if !stopping => {
                stopping = true;
                conn.as_mut().graceful_shutdown();
            }
            () = idle_check.as_mut(), if !stopping => {
                match streams.idle_since() {
                    Some(since) if since.elapsed() >= keepalive => {
                        stopping = true;
                        conn.as_mut().graceful_shutdown();
                    }
                    Some(since) => idle_check.as_mut().reset(since + keepalive),
                    None => idle_check.as_mut().reset(Instant::now() + keepalive),
                }
            }
        }
    }
}
