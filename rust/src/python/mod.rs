//! The `rproxy._engine` extension module: the engine as Python sees it.
//!
//! Python validates the configuration and passes it here as JSON. The
//! engine then runs without the interpreter: every blocking call below
//! detaches from it first, so Python threads keep running meanwhile.

mod plan;
mod views;

use std::io::Write;
use std::sync::{Arc, Mutex};

use pyo3::exceptions::{PyOSError, PyRuntimeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::config::EngineConfig;
use crate::engine::{Engine, RunningEngine};
use crate::hooks::Hooks;
use plan::PyHooks;

/// An engine built from a validated configuration (JSON).
#[pyclass(name = "Engine", module = "rproxy._engine")]
struct PyEngine {
    engine: Mutex<Option<Engine>>,
    proxy: Arc<crate::proxy::Proxy>,
    running: Mutex<Option<RunningEngine>>,
    hooks: Option<Arc<PyHooks>>,
}

fn take<T>(slot: &Mutex<Option<T>>, what: &str) -> PyResult<T> {
    slot.lock()
        .map_err(|_| PyRuntimeError::new_err("engine state poisoned"))?
        .take()
        .ok_or_else(|| PyRuntimeError::new_err(format!("engine {what}")))
}

#[pymethods]
impl PyEngine {
    /// ``Engine(config_json, plan=None)``: ``plan`` is a ``rproxy.plan.Plan``.
    #[new]
    #[pyo3(signature = (config_json, plan=None))]
    fn new(config_json: &str, plan: Option<Bound<'_, PyAny>>) -> PyResult<Self> {
        let config = EngineConfig::from_json(config_json)
            .map_err(|e| PyValueError::new_err(format!("invalid engine config: {e}")))?;
        let hooks = plan.map(|p| PyHooks::new(&p)).transpose()?.map(Arc::new);
        let dyn_hooks = hooks.clone().map(|h| h as Arc<dyn Hooks>);
        let engine = Engine::with_hooks(config, dyn_hooks).map_err(PyValueError::new_err)?;
        Ok(PyEngine {
            proxy: engine.proxy(),
            engine: Mutex::new(Some(engine)),
            running: Mutex::new(None),
            hooks,
        })
    }

    /// Every pool's statistics: a list of dicts (docs/load-balancing.md).
    fn upstream_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let stats = self.proxy.upstream_stats();
        let json =
            serde_json::to_string(&stats).map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        py.import("json")?.call_method1("loads", (json,))
    }

    /// The cache's figures (``bytes``, ``max_size``, ``keys``), or
    /// ``None`` without a cache.
    fn cache_stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let json = serde_json::to_string(&self.proxy.cache_stats())
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        py.import("json")?.call_method1("loads", (json,))
    }

    /// Counters of every hook step: a list of dicts with ``hook``,
    /// ``plugin``, ``calls``, ``errors``, ``total_ns`` and ``histogram``.
    fn hook_stats<'py>(&self, py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
        let reports = self.hooks.as_ref().map(|h| h.stats()).unwrap_or_default();
        reports
            .into_iter()
            .map(|r| {
                let d = PyDict::new(py);
                d.set_item("hook", r.hook)?;
                d.set_item("plugin", r.plugin)?;
                d.set_item("calls", r.calls)?;
                d.set_item("errors", r.errors)?;
                d.set_item("total_ns", r.total_ns)?;
                d.set_item("histogram", r.histogram)?;
                Ok(d)
            })
            .collect()
    }

    /// Bind the listeners and serve on a background thread; returns the
    /// bound addresses as "host:port" strings.
    fn start(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        let engine = take(&self.engine, "was already started")?;
        // The engine thread attaches once for its whole life and detaches
        // while it serves: each later attach (a hook call) then finds its
        // thread state instead of creating and destroying one per call.
        let running = py
            .detach(|| engine.start_with(|run| Python::attach(|py| py.detach(run))))
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let addrs = running.addrs().iter().map(ToString::to_string).collect();
        *self
            .running
            .lock()
            .map_err(|_| PyRuntimeError::new_err("engine state poisoned"))? = Some(running);
        Ok(addrs)
    }

    /// Stop a started engine: stop accepting, drain in-flight requests for
    /// up to `shutdown_timeout`, and wait for it to finish.
    fn stop(&self, py: Python<'_>) -> PyResult<()> {
        let mut running = take(&self.running, "is not running")?;
        py.detach(|| running.stop())
            .map_err(|e| PyOSError::new_err(e.to_string()))
    }

    /// Whether a started engine is still serving.
    fn is_running(&self) -> bool {
        self.running
            .lock()
            .map(|r| r.as_ref().is_some_and(|r| !r.is_finished()))
            .unwrap_or(false)
    }

    /// Serve in the foreground until SIGTERM or SIGINT, then drain.
    /// `on_ready(addresses)` is called once the listeners are bound.
    fn serve(&self, py: Python<'_>, on_ready: Bound<'_, PyAny>) -> PyResult<()> {
        let engine = take(&self.engine, "was already started")?;
        let listeners = engine
            .listen()
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        let addrs: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.to_string()))
            .collect::<std::io::Result<_>>()
            .map_err(|e| PyOSError::new_err(e.to_string()))?;
        on_ready.call1((addrs,))?;
        py.detach(|| engine.run_until_signal(listeners))
            .map_err(|e| PyOSError::new_err(e.to_string()))
    }
}

/// Writes engine log records to stderr as `rproxy[pid] level: message`.
struct StderrLogger {
    level: log::LevelFilter,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record<'_>) {
        if self.enabled(record.metadata()) {
            let line = format!(
                "rproxy[{}] {}: {}\n",
                std::process::id(),
                record.level().as_str().to_ascii_lowercase(),
                record.args()
            );
            let _ = std::io::stderr().write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

fn init_logging() {
    let level = match std::env::var("RPROXY_LOG").as_deref() {
        Ok("error") => log::LevelFilter::Error,
        Ok("info") => log::LevelFilter::Info,
        Ok("debug") => log::LevelFilter::Debug,
        Ok("off") => log::LevelFilter::Off,
        _ => log::LevelFilter::Warn,
    };
    if log::set_boxed_logger(Box::new(StderrLogger { level })).is_ok() {
        log::set_max_level(level);
    }
}

/// The engine's version.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// Why the engine cannot compile the regular expression `pattern`, or
/// `None` when it can (configuration checks use it for `path_regex` and
/// friends, so an expression Python accepts but the engine does not is a
/// configuration error, not a start-up failure).
#[pyfunction]
fn check_regex(pattern: &str) -> Option<String> {
    crate::route::compile_regex(pattern).err()
}

#[pymodule]
#[pyo3(name = "_engine")]
fn engine_module(m: &Bound<'_, PyModule>) -> PyResult<()> {
    init_logging();
    m.add_class::<PyEngine>()?;
    m.add_class::<views::PyRequest>()?;
    m.add_class::<views::PyResponse>()?;
    m.add_class::<views::PyHeaders>()?;
    m.add_class::<plan::Completion>()?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(check_regex, m)?)?;
    m.add_function(wrap_pyfunction!(views::_live_views, m)?)?;
    Ok(())
}
