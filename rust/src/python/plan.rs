//! The hook plan: each phase's hook implementations, in pluggy's call
//! order, called directly — the request path never goes through pluggy.
//!
//! Built once at start-up from `rproxy.plan.build_plan()`. A plain `def`
//! hook runs inline on the engine thread (the interpreter is attached for
//! the phase, a few hundred nanoseconds when no other Python thread runs);
//! consecutive `def` hooks of a phase share one attach. An `async def` hook
//! is handed to the worker's asyncio loop thread and awaited with its
//! timeout while the engine thread serves other requests.

use std::sync::Mutex;
use std::time::Duration;

use http::{HeaderMap, Method, Response, StatusCode};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyDict, PyString, PyTuple};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::views::{PyRequest, PyResponse, ResponseData};
use crate::body::ProxyBody;
use crate::error::{Error, ErrorKind, Result};
use crate::hooks::{
    CacheKey, ErrorSummary, Exchange, HookFuture, Hooks, LogRecord, Outbound, Phase, RouteDecision,
    StepReport, StepStats,
};
use crate::policy::native_order;
use crate::upstream::Candidate;

/// An argument a hook implementation can ask for, by name.
#[derive(Debug, Clone, Copy)]
enum Arg {
    Request,
    Response,
    Ctx,
    Route,
    Candidates,
    Upstream,
    Error,
    Timings,
}

impl Arg {
    fn from_name(name: &str) -> PyResult<Arg> {
        Ok(match name {
            "request" => Arg::Request,
            "response" => Arg::Response,
            "ctx" => Arg::Ctx,
            "route" => Arg::Route,
            "candidates" => Arg::Candidates,
            "upstream" => Arg::Upstream,
            "error" => Arg::Error,
            "timings" => Arg::Timings,
            other => {
                return Err(PyValueError::new_err(format!(
                    "unknown hook argument {other:?}"
                )));
            }
        })
    }
}

/// One plugin's implementation of one hook.
struct Step {
    phase: Phase,
    /// Its segment: how many of the phase's native steps run before it
    /// (counted by position in [`native_order`]).
    seg: usize,
    plugin: String,
    func: Py<PyAny>,
    args: Vec<Arg>,
    /// Call with keyword arguments (a pluggy hook caller, used when a phase has wrappers).
    keywords: bool,
    is_async: bool,
    fails_closed: bool,
    timeout: Duration,
    stats: StepStats,
}

/// Per-request Python objects, kept in [`Exchange::state`].
struct State {
    request: Py<PyRequest>,
    response: Py<PyResponse>,
    ctx: Py<PyAny>,
}

impl State {
    fn clone_ref(&self, py: Python<'_>) -> State {
        State {
            request: self.request.clone_ref(py),
            response: self.response.clone_ref(py),
            ctx: self.ctx.clone_ref(py),
        }
    }
}

/// Phase-specific arguments, built once per phase.
#[derive(Default)]
struct Extras {
    route: Option<Py<PyAny>>,
    candidates: Option<Py<PyAny>>,
    upstream: Option<Py<PyAny>>,
    error: Option<Py<PyAny>>,
    timings: Option<Py<PyAny>>,
}

/// Delivers the result of an async hook from the loop thread to the engine.
#[pyclass(module = "rproxy._engine")]
pub(crate) struct Completion {
    tx: Mutex<Option<oneshot::Sender<Py<PyAny>>>>,
}

#[pymethods]
impl Completion {
    fn __call__(&self, future: Py<PyAny>) {
        if let Some(tx) = self.tx.lock().ok().and_then(|mut t| t.take()) {
            let _ = tx.send(future);
        }
    }
}

/// An async step handed to the loop thread: its index, the receiver of its
/// completion, its `concurrent.futures.Future`, and when it started.
type InFlight = (usize, oneshot::Receiver<Py<PyAny>>, Py<PyAny>, Instant);

/// What happened to one call.
enum Called {
    /// A result (possibly `None`).
    Value(Py<PyAny>),
    /// It raised, returned the wrong type, or timed out.
    Failed(String),
}

/// The plan, implementing the engine's [`Hooks`].
pub(crate) struct PyHooks {
    phases: Vec<Vec<Step>>,
    /// `rproxy.plan.Runtime`: reports failures, runs async hooks, builds values.
    runtime: Py<PyAny>,
}

fn plugin_error(step: &Step, what: &str) -> Error {
    Error::new(ErrorKind::Plugin, "a plugin hook failed").with_cause(format!(
        "plugin {:?} {}: {what}",
        step.plugin,
        step.phase.hook_name()
    ))
}

impl PyHooks {
    /// Compile `plan` (a `rproxy.plan.Plan`).
    pub(crate) fn new(plan: &Bound<'_, PyAny>) -> PyResult<Self> {
        let mut phases: Vec<Vec<Step>> = Phase::ALL.iter().map(|_| Vec::new()).collect();
        let steps = plan.getattr("steps")?;
        for phase in Phase::ALL {
            let Ok(list) = steps.get_item(phase.hook_name()) else {
                continue;
            };
            let mut seg = 0;
            for step in list.try_iter()? {
                let step = step?;
                let native = step.getattr("native")?;
                if native.is_truthy()? {
                    // The engine's own implementation runs in its place:
                    // the steps after it form the next segment.
                    let name: String = native.extract()?;
                    let order = native_order(phase);
                    let Some(at) = order.iter().position(|n| *n == name) else {
                        return Err(PyValueError::new_err(format!(
                            "the engine has no native {name:?} step in {}",
                            phase.hook_name()
                        )));
                    };
                    if at < seg {
                        return Err(PyValueError::new_err(format!(
                            "native steps of {} out of the engine's order ({})",
                            phase.hook_name(),
                            order.join(", ")
                        )));
                    }
                    seg = at + 1;
                    continue;
                }
                let args = step
                    .getattr("argnames")?
                    .extract::<Vec<String>>()?
                    .iter()
                    .map(|a| Arg::from_name(a))
                    .collect::<PyResult<Vec<_>>>()?;
                phases[phase as usize].push(Step {
                    phase,
                    seg,
                    plugin: step.getattr("plugin")?.extract()?,
                    func: step.getattr("function")?.unbind(),
                    args,
                    keywords: step.getattr("dispatch")?.is_truthy()?,
                    is_async: step.getattr("is_async")?.is_truthy()?,
                    fails_closed: step.getattr("fails_closed")?.is_truthy()?,
                    timeout: Duration::from_secs_f64(step.getattr("timeout")?.extract::<f64>()?),
                    stats: StepStats::default(),
                });
            }
        }
        Ok(PyHooks {
            phases,
            runtime: plan.getattr("runtime")?.unbind(),
        })
    }

    fn steps(&self, phase: Phase) -> &[Step] {
        &self.phases[phase as usize]
    }

    /// The steps of segment `seg` of `phase` (steps are in segment order).
    fn segment(&self, phase: Phase, seg: usize) -> &[Step] {
        let steps = self.steps(phase);
        let start = steps.partition_point(|s| s.seg < seg);
        let end = steps.partition_point(|s| s.seg <= seg);
        &steps[start..end]
    }

    /// The request's Python objects, created on first use.
    fn state(&self, py: Python<'_>, ex: &mut Exchange) -> PyResult<State> {
        let st = match ex.state.as_ref().and_then(|s| s.downcast_ref::<State>()) {
            Some(st) => st.clone_ref(py),
            None => {
                let st = State {
                    request: Py::new(py, PyRequest::empty())?,
                    response: Py::new(py, PyResponse::empty())?,
                    ctx: PyDict::new(py).into_any().unbind(),
                };
                let out = st.clone_ref(py);
                ex.state = Some(Box::new(st));
                out
            }
        };
        if ex.auth_unseen {
            // The auth built-in ran natively since hooks last ran.
            ex.auth_unseen = false;
            if let Some(a) = &ex.auth {
                let info = PyDict::new(py);
                info.set_item("policy", &*a.policy)?;
                info.set_item("type", a.kind)?;
                info.set_item("user", &a.user)?;
                let claims = py
                    .import("json")?
                    .call_method1("loads", (a.claims.to_string(),))?;
                info.set_item("claims", claims)?;
                st.ctx.bind(py).set_item("auth", info)?;
            }
        }
        Ok(st)
    }

    fn arguments<'py>(
        &self,
        py: Python<'py>,
        step: &Step,
        st: &State,
        extras: &Extras,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let none = || py.None();
        let values = step.args.iter().map(|arg| match arg {
            Arg::Request => st.request.clone_ref(py).into_any(),
            Arg::Response => st.response.clone_ref(py).into_any(),
            Arg::Ctx => st.ctx.clone_ref(py),
            Arg::Route => extras.route.as_ref().map_or_else(none, |v| v.clone_ref(py)),
            Arg::Candidates => extras
                .candidates
                .as_ref()
                .map_or_else(none, |v| v.clone_ref(py)),
            Arg::Upstream => extras
                .upstream
                .as_ref()
                .map_or_else(none, |v| v.clone_ref(py)),
            Arg::Error => extras.error.as_ref().map_or_else(none, |v| v.clone_ref(py)),
            Arg::Timings => extras
                .timings
                .as_ref()
                .map_or_else(none, |v| v.clone_ref(py)),
        });
        PyTuple::new(py, values)
    }

    fn invoke<'py>(
        &self,
        py: Python<'py>,
        step: &Step,
        st: &State,
        extras: &Extras,
    ) -> PyResult<Bound<'py, PyAny>> {
        let args = self.arguments(py, step, st, extras)?;
        let func = step.func.bind(py);
        if step.keywords {
            let kwargs = PyDict::new(py);
            for (arg, value) in step.args.iter().zip(args.iter()) {
                kwargs.set_item(arg_name(*arg), value)?;
            }
            func.call((), Some(&kwargs))
        } else {
            func.call1(args)
        }
    }

    fn report(&self, py: Python<'_>, step: &Step, err: &PyErr) {
        // into_value attaches the traceback to the exception object.
        let exc = err.clone_ref(py).into_value(py);
        let report = self.runtime.bind(py).call_method1(
            "report",
            (step.plugin.as_str(), step.phase.hook_name(), exc),
        );
        if let Err(e) = report {
            log::error!("reporting a failure of plugin {:?}: {e}", step.plugin);
        }
    }

    /// Submit an async step; the receiver yields its `concurrent.futures.Future`.
    fn submit(
        &self,
        py: Python<'_>,
        step: &Step,
        st: &State,
        extras: &Extras,
    ) -> PyResult<(oneshot::Receiver<Py<PyAny>>, Py<PyAny>)> {
        let coro = self.invoke(py, step, st, extras)?;
        let (tx, rx) = oneshot::channel();
        let done = Py::new(
            py,
            Completion {
                tx: Mutex::new(Some(tx)),
            },
        )?;
        let future = self.runtime.bind(py).call_method1(
            "submit",
            (
                coro,
                step.plugin.as_str(),
                step.phase.hook_name(),
                step.timeout.as_secs_f64(),
                done,
            ),
        )?;
        Ok((rx, future.unbind()))
    }

    /// Run the steps of `phase`. `enter` moves the request into the views
    /// and builds the phase's arguments; `convert` reads a hook's result
    /// (`Some` ends a first-result phase, `Err` is a wrong type); `leave`
    /// takes the request back.
    async fn run<T: Send>(
        &self,
        steps: &[Step],
        ex: &mut Exchange,
        enter: impl FnOnce(Python<'_>, &State, &mut Exchange) -> PyResult<Extras> + Send,
        convert: impl Fn(Python<'_>, &State, &Bound<'_, PyAny>) -> PyResult<Option<T>> + Send + Sync,
        leave: impl FnOnce(Python<'_>, &State, &mut Exchange) + Send,
    ) -> Result<Option<T>> {
        let started = Instant::now();
        let mut outcome: Option<T> = None;
        let mut failure: Option<Error> = None;
        let mut state: Option<(State, Extras)> = None;
        let mut enter = Some(enter);
        let mut leave = Some(leave);
        let mut next = 0usize;
        // The async step in flight: its index, receiver, future and start.
        let mut pending: Option<(usize, Called, Instant)> = None;
        loop {
            let waiting = Python::attach(|py| -> Option<InFlight> {
                if state.is_none() {
                    let prepare_failed = |e: PyErr| {
                        Error::new(ErrorKind::Internal, "preparing hook arguments")
                            .with_cause(e.to_string())
                    };
                    let st = match self.state(py, ex) {
                        Ok(st) => st,
                        Err(e) => {
                            failure = Some(prepare_failed(e));
                            return None;
                        }
                    };
                    let enter = enter.take().expect("entered once");
                    match enter(py, &st, ex) {
                        Ok(extras) => state = Some((st, extras)),
                        Err(e) => {
                            // Whatever was moved into the views goes back first.
                            if let Some(leave) = leave.take() {
                                leave(py, &st, ex);
                            }
                            failure = Some(prepare_failed(e));
                            return None;
                        }
                    }
                }
                let (st, extras) = state.as_ref().expect("prepared above");
                if let Some((i, called, t0)) = pending.take() {
                    let step = &steps[i];
                    let result = match called {
                        Called::Value(future) => match future.bind(py).call_method0("result") {
                            Ok(value) => self.settle(py, step, st, &value, &convert, t0, true),
                            // The runtime already reported it, with its traceback.
                            Err(e) => Err(format!("{}", e.value(py))),
                        },
                        Called::Failed(why) => Err(why),
                    };
                    match result {
                        Ok(Some(v)) => outcome = Some(v),
                        Ok(None) => {}
                        Err(why) => {
                            step.stats.record(t0.elapsed(), true);
                            if step.fails_closed {
                                failure = Some(plugin_error(step, &why));
                            }
                        }
                    }
                }
                while outcome.is_none() && failure.is_none() && next < steps.len() {
                    let step = &steps[next];
                    next += 1;
                    let t0 = Instant::now();
                    if step.is_async {
                        match self.submit(py, step, st, extras) {
                            Ok((rx, future)) => return Some((next - 1, rx, future, t0)),
                            Err(e) => {
                                self.report(py, step, &e);
                                step.stats.record(t0.elapsed(), true);
                                if step.fails_closed {
                                    failure = Some(plugin_error(step, &e.to_string()));
                                }
                            }
                        }
                        continue;
                    }
                    let result = match self.invoke(py, step, st, extras) {
                        Ok(value) => self.settle(py, step, st, &value, &convert, t0, false),
                        Err(e) => {
                            self.report(py, step, &e);
                            Err(e.to_string())
                        }
                    };
                    match result {
                        Ok(Some(v)) => outcome = Some(v),
                        Ok(None) => {}
                        Err(why) => {
                            step.stats.record(t0.elapsed(), true);
                            if step.fails_closed {
                                failure = Some(plugin_error(step, &why));
                            }
                        }
                    }
                }
                if let Some(leave) = leave.take() {
                    leave(py, st, ex);
                }
                None
            });
            let Some((i, rx, future, t0)) = waiting else {
                break;
            };
            // Python's own timeout cancels the hook; this one only guards
            // against a loop thread that stopped running.
            let guard = steps[i].timeout + Duration::from_secs(1);
            let called = match tokio::time::timeout(guard, rx).await {
                Ok(Ok(done)) => Called::Value(done),
                Ok(Err(_)) => Called::Failed("the hook loop dropped the call".to_owned()),
                Err(_) => {
                    Python::attach(|py| {
                        let _ = future.bind(py).call_method0("cancel");
                    });
                    Called::Failed(format!("timed out after {:?}", steps[i].timeout))
                }
            };
            pending = Some((i, called, t0));
        }
        ex.hook_time += started.elapsed();
        match failure {
            Some(err) => Err(err),
            None => Ok(outcome),
        }
    }

    /// Count a call that returned `value` and convert it.
    #[allow(clippy::too_many_arguments)]
    fn settle<T>(
        &self,
        py: Python<'_>,
        step: &Step,
        st: &State,
        value: &Bound<'_, PyAny>,
        convert: &impl Fn(Python<'_>, &State, &Bound<'_, PyAny>) -> PyResult<Option<T>>,
        t0: Instant,
        reported: bool,
    ) -> std::result::Result<Option<T>, String> {
        match convert(py, st, value) {
            Ok(v) => {
                step.stats.record(t0.elapsed(), false);
                Ok(v)
            }
            Err(e) => {
                if !reported || e.is_instance_of::<PyTypeError>(py) {
                    self.report(py, step, &e);
                }
                Err(e.to_string())
            }
        }
    }

    fn enter_request(py: Python<'_>, st: &State, ex: &mut Exchange) {
        st.request.borrow_mut(py).enter(ex, None);
    }

    fn leave_request(py: Python<'_>, st: &State, ex: &mut Exchange) {
        st.request.borrow_mut(py).leave(ex);
    }

    /// Convert a `Response` a hook returned into one to send.
    fn answer(value: &Bound<'_, PyAny>, hook: &str) -> PyResult<Option<Response<ProxyBody>>> {
        if value.is_none() {
            return Ok(None);
        }
        let Ok(resp) = value.cast::<PyResponse>() else {
            return Err(PyTypeError::new_err(format!(
                "{hook} must return rproxy.Response or None, not {}",
                type_name(value)
            )));
        };
        let Some(ResponseData {
            status,
            headers,
            body,
        }) = resp.borrow_mut().take()
        else {
            return Err(PyTypeError::new_err(format!(
                "{hook} returned a Response that was already used"
            )));
        };
        let body = body.unwrap_or_default();
        let mut headers = headers;
        crate::response::default_content_type(&mut headers, &body);
        let mut out = Response::new(ProxyBody::full(body));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(Some(out))
    }

    fn runtime_call<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        args: impl pyo3::call::PyCallArgs<'py>,
    ) -> PyResult<Py<PyAny>> {
        Ok(self.runtime.bind(py).call_method1(name, args)?.unbind())
    }
}

fn arg_name(arg: Arg) -> &'static str {
    match arg {
        Arg::Request => "request",
        Arg::Response => "response",
        Arg::Ctx => "ctx",
        Arg::Route => "route",
        Arg::Candidates => "candidates",
        Arg::Upstream => "upstream",
        Arg::Error => "error",
        Arg::Timings => "timings",
    }
}

fn type_name(value: &Bound<'_, PyAny>) -> String {
    value
        .get_type()
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

fn optional_str(value: &Bound<'_, PyAny>, attr: &str) -> PyResult<Option<String>> {
    let v = value.getattr(attr)?;
    if v.is_none() {
        Ok(None)
    } else {
        Ok(Some(v.extract()?))
    }
}

impl Hooks for PyHooks {
    fn has(&self, phase: Phase) -> bool {
        !self.steps(phase).is_empty()
    }

    fn has_at(&self, phase: Phase, seg: usize) -> bool {
        !self.segment(phase, seg).is_empty()
    }

    fn request_filter<'a>(
        &'a self,
        ex: &'a mut Exchange,
    ) -> HookFuture<'a, Result<Option<Response<ProxyBody>>>> {
        Box::pin(async move {
            self.run(
                self.steps(Phase::RequestFilter),
                ex,
                |py, st, ex| {
                    Self::enter_request(py, st, ex);
                    Ok(Extras::default())
                },
                |_, _, value| Self::answer(value, "rproxy_request_filter").map(|r| r.map(Some)),
                Self::leave_request,
            )
            .await
            .map(Option::flatten)
        })
    }

    fn cache_key<'a>(&'a self, ex: &'a mut Exchange) -> HookFuture<'a, Result<()>> {
        Box::pin(async move {
            let key = self
                .run(
                    self.steps(Phase::CacheKey),
                    ex,
                    |py, st, ex| {
                        Self::enter_request(py, st, ex);
                        Ok(Extras::default())
                    },
                    |_, _, value| {
                        if value.is_none() {
                            Ok(None)
                        } else if let Ok(s) = value.cast::<PyString>() {
                            Ok(Some(CacheKey::Key(s.to_str()?.to_owned())))
                        } else if value.cast::<PyBool>().is_ok_and(|b| !b.is_true()) {
                            Ok(Some(CacheKey::Bypass))
                        } else {
                            Err(PyTypeError::new_err(format!(
                                "rproxy_cache_key must return str, False or None, not {}",
                                type_name(value)
                            )))
                        }
                    },
                    Self::leave_request,
                )
                .await?;
            if let Some(key) = key {
                ex.cache_key = key;
            }
            Ok(())
        })
    }

    fn route<'a>(&'a self, ex: &'a mut Exchange) -> HookFuture<'a, Result<Option<RouteDecision>>> {
        Box::pin(async move {
            self.run(
                self.steps(Phase::Route),
                ex,
                |py, st, ex| {
                    Self::enter_request(py, st, ex);
                    Ok(Extras::default())
                },
                |_, _, value| {
                    if value.is_none() {
                        return Ok(None);
                    }
                    if !value.hasattr("upstream")? || !value.hasattr("respond")? {
                        return Err(PyTypeError::new_err(format!(
                            "rproxy_route must return rproxy.Route or None, not {}",
                            type_name(value)
                        )));
                    }
                    let respond = value.getattr("respond")?;
                    if !respond.is_none() {
                        return match Self::answer(&respond, "rproxy_route (Route.respond)")? {
                            Some(response) => Ok(Some(RouteDecision::Respond {
                                name: optional_str(value, "name")?,
                                response,
                            })),
                            None => Ok(None),
                        };
                    }
                    let Some(pool) = optional_str(value, "upstream")? else {
                        return Err(PyTypeError::new_err("a Route needs upstream= or respond="));
                    };
                    Ok(Some(RouteDecision::Forward {
                        name: optional_str(value, "name")?,
                        pool,
                        path: optional_str(value, "path")?,
                        host: optional_str(value, "host")?,
                    }))
                },
                Self::leave_request,
            )
            .await
        })
    }

    fn access<'a>(
        &'a self,
        ex: &'a mut Exchange,
        seg: usize,
    ) -> HookFuture<'a, Result<Option<Response<ProxyBody>>>> {
        Box::pin(async move {
            self.run(
                self.segment(Phase::Access, seg),
                ex,
                |py, st, ex| {
                    Self::enter_request(py, st, ex);
                    Ok(Extras::default())
                },
                |_, _, value| Self::answer(value, "rproxy_access").map(|r| r.map(Some)),
                Self::leave_request,
            )
            .await
            .map(Option::flatten)
        })
    }

    fn select_upstream<'a>(
        &'a self,
        ex: &'a mut Exchange,
        candidates: &'a [Candidate],
    ) -> HookFuture<'a, Result<Option<usize>>> {
        Box::pin(async move {
            let names: Vec<String> = candidates.iter().map(|c| c.addr.to_string()).collect();
            self.run(
                self.segment(Phase::SelectUpstream, 0),
                ex,
                |py, st, ex| {
                    let pool = ex.pool.clone();
                    let name = ex
                        .route
                        .as_ref()
                        .filter(|r| !r.name.is_empty())
                        .map(|r| r.name.to_string());
                    Self::enter_request(py, st, ex);
                    let servers: Vec<(&str, u32, bool, u32, f64)> = candidates
                        .iter()
                        .zip(&names)
                        .map(|(c, n)| (n.as_str(), c.weight, c.backup, c.in_flight, c.ramp))
                        .collect();
                    let listed =
                        self.runtime_call(py, "candidates_for", (pool.clone(), servers))?;
                    Ok(Extras {
                        route: Some(self.runtime_call(py, "route_for", (pool, name))?),
                        candidates: Some(listed),
                        ..Extras::default()
                    })
                },
                |_, _, value| {
                    if value.is_none() {
                        return Ok(None);
                    }
                    let chosen: String = value.extract().map_err(|_| {
                        PyTypeError::new_err(format!(
                            "rproxy_select_upstream must return one of the candidates or None, not {}",
                            type_name(value)
                        ))
                    })?;
                    match names.iter().position(|n| *n == chosen) {
                        Some(i) => Ok(Some(i)),
                        None => Err(PyValueError::new_err(format!(
                            "rproxy_select_upstream returned {chosen:?}, which is not a candidate ({})",
                            names.join(", ")
                        ))),
                    }
                },
                Self::leave_request,
            )
            .await
        })
    }

    fn upstream_request<'a>(
        &'a self,
        ex: &'a mut Exchange,
        out: &'a mut Outbound,
        seg: usize,
    ) -> HookFuture<'a, Result<()>> {
        Box::pin(async move {
            let placeholder = || Outbound {
                method: Method::GET,
                target: String::new(),
                headers: HeaderMap::new(),
            };
            let upstream = ex.upstream.map(|a| a.to_string());
            let mut taken = Some(std::mem::replace(out, placeholder()));
            let mut returned = None;
            let result = self
                .run(
                    self.segment(Phase::UpstreamRequest, seg),
                    ex,
                    |py, st, ex| {
                        st.request.borrow_mut(py).enter(ex, taken.take());
                        Ok(Extras {
                            upstream: upstream.map(|u| PyString::new(py, &u).into_any().unbind()),
                            ..Extras::default()
                        })
                    },
                    |_, _, _| Ok(None::<()>),
                    |py, st, ex| returned = st.request.borrow_mut(py).leave(ex),
                )
                .await;
            if let Some(o) = returned {
                *out = o;
            }
            result.map(|_| ())
        })
    }

    fn upstream_response<'a>(
        &'a self,
        ex: &'a mut Exchange,
        status: &'a mut StatusCode,
        headers: &'a mut HeaderMap,
    ) -> HookFuture<'a, Result<()>> {
        Box::pin(self.response_phase(self.steps(Phase::UpstreamResponse), ex, status, headers))
    }

    fn response<'a>(
        &'a self,
        ex: &'a mut Exchange,
        status: &'a mut StatusCode,
        headers: &'a mut HeaderMap,
        seg: usize,
    ) -> HookFuture<'a, Result<()>> {
        Box::pin(self.response_phase(self.segment(Phase::Response, seg), ex, status, headers))
    }

    fn error<'a>(
        &'a self,
        ex: &'a mut Exchange,
        err: &'a ErrorSummary,
    ) -> HookFuture<'a, Option<Response<ProxyBody>>> {
        Box::pin(async move {
            self.run(
                self.steps(Phase::Error),
                ex,
                |py, st, ex| {
                    Self::enter_request(py, st, ex);
                    Ok(Extras {
                        error: Some(self.error_info(py, err)?),
                        ..Extras::default()
                    })
                },
                |_, _, value| Self::answer(value, "rproxy_error").map(|r| r.map(Some)),
                Self::leave_request,
            )
            .await
            .ok()
            .flatten()
            .flatten()
        })
    }

    fn log(&self, mut ex: Exchange, record: LogRecord) {
        let steps = self.steps(Phase::Log);
        Python::attach(|py| {
            let st = match self.state(py, &mut ex) {
                Ok(st) => st,
                Err(e) => {
                    log::error!("preparing rproxy_log: {e}");
                    return;
                }
            };
            let extras = (|| -> PyResult<Extras> {
                let timings = PyDict::new(py);
                timings.set_item("total", record.total.as_secs_f64())?;
                timings.set_item("upstream", ex.upstream_time.map(|d| d.as_secs_f64()))?;
                timings.set_item("hooks", ex.hook_time.as_secs_f64())?;
                timings.set_item("body_bytes", record.body_bytes)?;
                timings.set_item("complete", record.complete)?;
                let error = match &ex.error {
                    Some(e) => Some(self.error_info(py, e)?),
                    None => None,
                };
                Ok(Extras {
                    error,
                    timings: Some(timings.into_any().unbind()),
                    ..Extras::default()
                })
            })();
            let extras = match extras {
                Ok(e) => e,
                Err(e) => {
                    log::error!("preparing rproxy_log: {e}");
                    return;
                }
            };
            {
                let mut req = st.request.borrow_mut(py);
                req.enter(&mut ex, None);
                req.read_only = true;
                let mut resp = st.response.borrow_mut(py);
                let mut status = record.status;
                let mut headers = record.headers;
                resp.enter(&mut status, &mut headers);
                resp.read_only = true;
            }
            let mut async_pending = false;
            for step in steps {
                let t0 = Instant::now();
                if step.is_async {
                    // Not awaited: the runtime reports its failures.
                    async_pending = true;
                    if let Err(e) = self.submit(py, step, &st, &extras) {
                        self.report(py, step, &e);
                        step.stats.record(t0.elapsed(), true);
                    } else {
                        step.stats.record(t0.elapsed(), false);
                    }
                    continue;
                }
                match self.invoke(py, step, &st, &extras) {
                    Ok(_) => step.stats.record(t0.elapsed(), false),
                    Err(e) => {
                        self.report(py, step, &e);
                        step.stats.record(t0.elapsed(), true);
                    }
                }
            }
            if !async_pending {
                let mut req = st.request.borrow_mut(py);
                req.data = None;
                req.finished = true;
                let mut resp = st.response.borrow_mut(py);
                resp.data = None;
                resp.finished = true;
            }
            drop(ex.state.take());
        });
    }

    fn stats(&self) -> Vec<StepReport> {
        self.phases
            .iter()
            .flatten()
            .map(|s| s.stats.report(s.phase.hook_name(), &s.plugin))
            .collect()
    }
}

impl PyHooks {
    fn error_info(&self, py: Python<'_>, e: &ErrorSummary) -> PyResult<Py<PyAny>> {
        self.runtime_call(
            py,
            "error_info",
            (e.kind.as_str(), e.source, e.status, e.message.as_str()),
        )
    }

    async fn response_phase(
        &self,
        steps: &[Step],
        ex: &mut Exchange,
        status: &mut StatusCode,
        headers: &mut HeaderMap,
    ) -> Result<()> {
        let head = std::sync::Mutex::new((status, headers));
        self.run(
            steps,
            ex,
            |py, st, ex| {
                Self::enter_request(py, st, ex);
                let mut head = head.lock().expect("one user at a time");
                let (status, headers) = &mut *head;
                st.response.borrow_mut(py).enter(status, headers);
                Ok(Extras::default())
            },
            |_, _, _| Ok(None::<()>),
            |py, st, ex| {
                Self::leave_request(py, st, ex);
                let mut head = head.lock().expect("one user at a time");
                let (status, headers) = &mut *head;
                st.response.borrow_mut(py).leave(status, headers);
            },
        )
        .await
        .map(|_| ())
    }
}
