//! Running the engine: a tokio runtime, listeners, and a stop signal.
//!
//! [`Engine::run`] serves on the calling thread until a stop future
//! resolves; [`Engine::start`] does the same on a background thread and
//! returns a handle (used by tests and by Python's in-process engine).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use tokio::sync::{oneshot, watch};

use crate::config::EngineConfig;
use crate::hooks::Hooks;
use crate::net;
use crate::proxy::Proxy;
use crate::server::{self, ServerCtx};

/// A configured engine, ready to bind and serve.
pub struct Engine {
    config: EngineConfig,
    proxy: Arc<Proxy>,
}

impl Engine {
    /// Compile `config` into an engine.
    pub fn new(config: EngineConfig) -> Result<Self, String> {
        Engine::with_hooks(config, None)
    }

    /// Compile `config` with `hooks` consulted per request.
    pub fn with_hooks(config: EngineConfig, hooks: Option<Arc<dyn Hooks>>) -> Result<Self, String> {
        let mut proxy = Proxy::new(&config, hooks)?;
        let proxy = Arc::new_cyclic(|me| {
            proxy.me = me.clone();
            proxy
        });
        Ok(Engine { config, proxy })
    }

    /// The compiled request path (for statistics).
    pub fn proxy(&self) -> Arc<Proxy> {
        self.proxy.clone()
    }

    /// Bind every configured listener.
    pub fn listen(&self) -> io::Result<Vec<std::net::TcpListener>> {
        self.config
            .server
            .listen
            .iter()
            .map(|addr| {
                net::listen(*addr)
                    .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))
            })
            .collect()
    }

    fn runtime(&self) -> io::Result<tokio::runtime::Runtime> {
        let threads = self.config.server.threads.max(1);
        if threads == 1 {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
        } else {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name("rproxy-worker")
                .enable_all()
                .build()
        }
    }

    /// Serve `listeners` on this thread until `stop` resolves, then drain
    /// in-flight requests for up to `shutdown_timeout`.
    pub fn run<F>(self, listeners: Vec<std::net::TcpListener>, stop: F) -> io::Result<()>
    where
        F: Future<Output = ()>,
    {
        let runtime = self.runtime()?;
        let ctx = Arc::new(ServerCtx::new(
            self.config.server.clone(),
            self.proxy.clone(),
        ));
        let (tx, rx) = watch::channel(false);
        runtime.block_on(async move {
            let server = tokio::spawn(server::serve(listeners, ctx, rx));
            stop.await;
            let _ = tx.send(true);
            match server.await {
                Ok(result) => result,
                Err(e) => Err(io::Error::other(e)),
            }
        })
    }

    /// Serve until SIGTERM or SIGINT, then drain.
    pub fn run_until_signal(self, listeners: Vec<std::net::TcpListener>) -> io::Result<()> {
        self.run(listeners, async {
            use tokio::signal::unix::{SignalKind, signal};
            match (
                signal(SignalKind::terminate()),
                signal(SignalKind::interrupt()),
            ) {
                (Ok(mut term), Ok(mut int)) => {
                    tokio::select! {
                        _ = term.recv() => {}
                        _ = int.recv() => {}
                    }
                }
                _ => {
                    log::error!("cannot install signal handlers; stop the worker with SIGKILL");
                    std::future::pending::<()>().await;
                }
            }
        })
    }

    /// Bind and serve on a background thread.
    pub fn start(self) -> io::Result<RunningEngine> {
        self.start_with(|run| run())
    }

    /// [`Engine::start`], with the engine thread's work run inside `wrap`
    /// (the Python bindings use it to give the thread a lasting
    /// interpreter thread state).
    pub fn start_with<W>(self, wrap: W) -> io::Result<RunningEngine>
    where
        W: FnOnce(Box<dyn FnOnce() -> io::Result<()> + Send>) -> io::Result<()> + Send + 'static,
    {
        let listeners = self.listen()?;
        let addrs = listeners
            .iter()
            .map(std::net::TcpListener::local_addr)
            .collect::<io::Result<Vec<_>>>()?;
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("rproxy-engine".into())
            .spawn(move || {
                wrap(Box::new(move || {
                    self.run(listeners, async move {
                        let _ = stop_rx.await;
                    })
                }))
            })?;
        Ok(RunningEngine {
            addrs,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }
}

/// An engine serving on a background thread.
pub struct RunningEngine {
    addrs: Vec<SocketAddr>,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl RunningEngine {
    /// The bound listener addresses (port 0 resolved).
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Whether the engine thread has finished.
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// Stop accepting, drain, and wait for the engine thread.
    pub fn stop(&mut self) -> io::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| io::Error::other("engine thread panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for RunningEngine {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
