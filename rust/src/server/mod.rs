//! Listeners and downstream connections.
//!
//! Each listener has an accept loop; each connection is one task that starts
//! as HTTP/1.1 and switches to HTTP/2 when the client opens with the h2
//! preface (cleartext "prior knowledge"). TLS will wrap the stream before
//! this point and choose the protocol by ALPN instead.

pub mod control;
pub(crate) mod h1;
mod h2;
mod rewind;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio_util::task::TaskTracker;

use crate::config::ServerConfig;
use crate::h1::parse::HeadLimits;
use crate::net::Cidr;
use crate::proxy::Proxy;
use h1::{H1Conn, H1Exit, ReadSide};
use rewind::Rewind;

/// What the proxy knows about a downstream connection.
#[derive(Debug)]
pub struct ConnInfo {
    /// The client's address.
    pub client: SocketAddr,
    /// The local address the client connected to.
    pub local: SocketAddr,
    /// The client's IP address as text, for forwarding headers and logs.
    pub client_ip: String,
    /// `http` or `https`.
    pub scheme: &'static str,
    /// The trusted proxy networks, when the peer is one of them.
    pub trusted: Option<Arc<[Cidr]>>,
}

impl ConnInfo {
    /// Describe a connection from `client` to `local`.
    pub fn new(client: SocketAddr, local: SocketAddr, scheme: &'static str) -> Self {
        ConnInfo {
            client,
            local,
            client_ip: client.ip().to_canonical().to_string(),
            scheme,
            trusted: None,
        }
    }

    /// Mark the connection as coming from a trusted proxy when its peer is
    /// in `trusted_proxies`: its forwarding fields are then believed.
    pub fn trusting(mut self, trusted_proxies: &Arc<[Cidr]>) -> Self {
        if Cidr::any_contains(trusted_proxies, self.client.ip()) {
            self.trusted = Some(trusted_proxies.clone());
        }
        self
    }
}

/// What every connection of a server shares.
pub(crate) struct ServerCtx {
    pub(crate) config: ServerConfig,
    pub(crate) limits: HeadLimits,
    pub(crate) proxy: Arc<Proxy>,
    pub(crate) trusted_proxies: Arc<[Cidr]>,
}

impl ServerCtx {
    pub(crate) fn new(config: ServerConfig, proxy: Arc<Proxy>) -> Self {
        let limits = HeadLimits {
            max_header_bytes: config.max_header_bytes,
            max_headers: config.max_headers,
            max_uri_size: config.max_uri_size,
        };
        ServerCtx {
            trusted_proxies: config.trusted_proxies.clone().into(),
            config,
            limits,
            proxy,
        }
    }
}

/// Serve `listeners` until `shutdown` turns true, then stop accepting and
/// give in-flight requests up to `shutdown_timeout` to finish.
pub(crate) async fn serve(
    listeners: Vec<std::net::TcpListener>,
    ctx: Arc<ServerCtx>,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()> {
    let tracker = TaskTracker::new();
    let permits = Arc::new(Semaphore::new(ctx.config.max_connections.max(1)));
    for listener in listeners {
        let listener = TcpListener::from_std(listener)?;
        tracker.spawn(accept_loop(
            listener,
            ctx.clone(),
            permits.clone(),
            tracker.clone(),
            shutdown.clone(),
        ));
    }
    let mut checks = ctx.proxy.spawn_health_checks();
    if let Some(path) = ctx.proxy.control_socket() {
        checks.push(tokio::spawn(control::listen(
            path.to_owned(),
            ctx.proxy.clone(),
        )));
    }
    if let Some(addr) = ctx.proxy.cache_admin() {
        match crate::net::listen(addr).and_then(TcpListener::from_std) {
            Ok(listener) => checks.push(tokio::spawn(control::admin(listener, ctx.proxy.clone()))),
            Err(e) => log::error!("cannot serve the cache admin endpoint on {addr}: {e}"),
        }
    }
    let sweeper = tokio::spawn({
        let ctx = ctx.clone();
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                ctx.proxy.sweep_pools();
                if let Some(path) = &ctx.config.stats_file {
                    write_stats(path, &ctx.proxy);
                }
            }
        }
    });
    while !*shutdown.borrow_and_update() {
        if shutdown.changed().await.is_err() {
            break;
        }
    }
    tracker.close();
    let grace = ctx.config.shutdown_timeout;
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        log::warn!(
            "shutdown_timeout ({grace:?}) passed with {} connection(s) still open; closing them",
            tracker.len()
        );
    }
    sweeper.abort();
    for check in checks {
        check.abort();
    }
    if let Some(path) = &ctx.config.stats_file {
        let _ = std::fs::remove_file(path);
        let _ = std::fs::remove_file(control::socket_path(path));
    }
    Ok(())
}

/// Write the hook counters where `rproxy hooks --stats` reads them: to a
/// temporary file first, so a reader never sees half of one.
fn write_stats(path: &std::path::Path, proxy: &Proxy) {
    #[derive(serde::Serialize)]
    struct Snapshot {
        pid: u32,
        steps: Vec<crate::hooks::StepReport>,
        upstreams: Vec<crate::upstream::PoolStats>,
        cache: Option<crate::cache::CacheStats>,
    }
    let snapshot = Snapshot {
        pid: std::process::id(),
        steps: proxy.hook_stats(),
        upstreams: proxy.upstream_stats(),
        cache: proxy.cache_stats(),
    };
    let Ok(json) = serde_json::to_vec(&snapshot) else {
        return;
    };
    let tmp = path.with_extension("tmp");
    if std::fs::write(&tmp, json)
        .and_then(|()| std::fs::rename(&tmp, path))
        .is_err()
    {
        log::debug!("cannot write hook statistics to {}", path.display());
    }
}

async fn accept_loop(
    listener: TcpListener,
    ctx: Arc<ServerCtx>,
    permits: Arc<Semaphore>,
    tracker: TaskTracker,
    mut shutdown: watch::Receiver<bool>,
) {
    let Ok(local) = listener.local_addr() else {
        return;
    };
    loop {
        // At max_connections, stop accepting until a connection ends.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
            _ = shutdown.changed() => return,
        };
        let (stream, peer) = tokio::select! {
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or memory: back off instead of spinning.
                    log::error!("accept on {local}: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let _ = stream.set_nodelay(true);
        tracker.spawn(connection(
            stream,
            peer,
            local,
            ctx.clone(),
            shutdown.clone(),
            permit,
        ));
    }
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    local: SocketAddr,
    ctx: Arc<ServerCtx>,
    shutdown: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) {
    let info = Arc::new(ConnInfo::new(peer, local, "http").trusting(&ctx.trusted_proxies));
    let (r, w) = stream.into_split();
    let read = ReadSide::new(Box::new(r), BytesMut::with_capacity(4096));
    let conn = H1Conn::new(
        read,
        Box::new(w),
        ctx.clone(),
        info.clone(),
        shutdown.clone(),
    );
    match conn.run().await {
        H1Exit::Done => {}
        H1Exit::SwitchToH2(read, write) => {
            let (r, buf) = read.into_parts();
            let io = Rewind::new(buf.freeze(), tokio::io::join(r, write));
            h2::serve(io, ctx, info, shutdown).await;
        }
    }
}
