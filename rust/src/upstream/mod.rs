//! Upstream pools: named sets of servers, their connection pools, and
//! connecting under a timeout.

mod conn;
mod pool;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;

pub use conn::UpstreamBody;
pub(crate) use conn::{ExchangeError, OutBody, UpgradeTunnel, UpstreamConn};
use pool::Pool;

use crate::config::UpstreamConfig;
use crate::error::{Error, ErrorKind, Result};
use crate::timer::Deadline;

/// Timeouts and limits for talking to a pool's servers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) response: Duration,
    pub(crate) body_idle: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
}

/// One upstream server.
pub struct Server {
    pub(crate) addr: SocketAddr,
    pool: Pool,
    keepalive_requests: u32,
}

impl Server {
    /// Return a connection whose exchange finished cleanly.
    pub(crate) fn release(&self, io: TcpStream, requests: u32, deadline: Deadline) {
        if requests < self.keepalive_requests {
            self.pool.checkin(io, requests, deadline);
        }
    }
}

/// A named pool of servers.
pub(crate) struct Upstream {
    pub(crate) name: String,
    pub(crate) servers: Vec<Arc<Server>>,
    /// `Host` sent for requests that carry no authority (HTTP/1.0).
    pub(crate) default_host: String,
    next: AtomicUsize,
    pub(crate) timeouts: Timeouts,
}

impl Upstream {
    pub(crate) fn new(
        name: &str,
        cfg: &UpstreamConfig,
        max_header_bytes: usize,
        max_headers: usize,
    ) -> Self {
        let servers: Vec<Arc<Server>> = cfg
            .servers
            .iter()
            .map(|addr| {
                Arc::new(Server {
                    addr: *addr,
                    pool: Pool::new(cfg.keepalive, cfg.keepalive_timeout),
                    keepalive_requests: cfg.keepalive_requests.max(1),
                })
            })
            .collect();
        Upstream {
            name: name.to_owned(),
            default_host: servers
                .first()
                .map(|s| s.addr.to_string())
                .unwrap_or_default(),
            servers,
            next: AtomicUsize::new(0),
            timeouts: Timeouts {
                connect: cfg.connect_timeout,
                response: cfg.response_timeout,
                body_idle: cfg.body_idle_timeout,
                max_header_bytes,
                max_headers,
            },
        }
    }

    /// The server to try first for the next request (round robin).
    pub(crate) fn next_start(&self) -> usize {
        let n = self.servers.len();
        if n > 1 {
            self.next.fetch_add(1, Ordering::Relaxed) % n
        } else {
            0
        }
    }

    /// All servers, starting with the one at `first` (a hook's choice).
    pub(crate) fn order_from(&self, first: usize) -> impl Iterator<Item = &Arc<Server>> {
        let n = self.servers.len();
        (0..n).map(move |i| &self.servers[(first + i) % n])
    }

    /// A pooled connection to `server`, or a new one.
    pub(crate) async fn connection(&self, server: &Arc<Server>) -> Result<UpstreamConn> {
        if let Some((io, requests, deadline)) = server.pool.checkout() {
            return Ok(UpstreamConn::new(
                io,
                server.clone(),
                requests,
                true,
                deadline,
            ));
        }
        self.connect(server).await
    }

    /// A new connection to `server`.
    pub(crate) async fn connect(&self, server: &Arc<Server>) -> Result<UpstreamConn> {
        let connecting = TcpStream::connect(server.addr);
        let io = match tokio::time::timeout(self.timeouts.connect, connecting).await {
            Err(_) => {
                return Err(Error::new(ErrorKind::UpstreamConnect, "connect_timeout").retryable());
            }
            Ok(Err(e)) => {
                return Err(
                    Error::new(ErrorKind::UpstreamConnect, "connecting upstream")
                        .with_cause(e)
                        .retryable(),
                );
            }
            Ok(Ok(io)) => io,
        };
        let _ = io.set_nodelay(true);
        Ok(UpstreamConn::new(
            io,
            server.clone(),
            0,
            false,
            Deadline::default(),
        ))
    }

    /// Send a bodiless request (`head`, the request line and fields
    /// written) to the pool's servers in turn until one answers, and read
    /// its response: the head, and at most `max_body` bytes of body, which
    /// are discarded (a longer body closes the connection).
    pub(crate) async fn subrequest(
        &self,
        head: &bytes::Bytes,
        max_body: usize,
    ) -> Result<(http::StatusCode, http::HeaderMap)> {
        let method = http::Method::GET;
        let mut last_error = None;
        for server in self.order_from(self.next_start()) {
            let mut conn = match self.connection(server).await {
                Ok(c) => c,
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            };
            let mut body = OutBody {
                prefix: Vec::new(),
                trailers: None,
                rest: None,
                chunked: false,
            };
            let (resp, sent_all) = match conn
                .exchange(head, &mut body, &method, &self.timeouts)
                .await
            {
                Ok(r) => r,
                // A pooled connection the server had closed: try a fresh one.
                Err(ExchangeError { stale: true, .. }) => {
                    conn = self.connect(server).await?;
                    conn.exchange(head, &mut body, &method, &self.timeouts)
                        .await
                        .map_err(|e| e.error)?
                }
                Err(e) => return Err(e.error),
            };
            let crate::h1::parse::ResponseHead {
                status,
                headers,
                framing,
                keep_alive,
                ..
            } = resp;
            let mut rest = UpstreamBody::new(
                conn,
                framing,
                keep_alive && sent_all,
                self.timeouts.body_idle,
            );
            let mut read = 0usize;
            while read <= max_body {
                match std::future::poll_fn(|cx| rest.poll_frame(cx)).await {
                    None => break,
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
                    Some(Err(e)) => return Err(e),
                }
            }
            return Ok((status, headers));
        }
        Err(last_error
            .unwrap_or_else(|| Error::new(ErrorKind::UpstreamConnect, "no upstream server")))
    }

    /// Close idle connections past their timeout.
    pub(crate) fn sweep(&self) {
        for s in &self.servers {
            s.pool.sweep();
        }
    }
}
