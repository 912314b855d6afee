//! `Request`, `Response` and `Headers`: what hooks see of a request.
//!
//! A view does not copy the request: for the duration of a hook call the
//! engine moves the request head into the view and takes it back after, so
//! a header is read (and converted to a Python string) only when a hook
//! asks for it. Outside its hook calls a view holds nothing, and using it
//! raises a clear error instead of showing stale data.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, StatusCode, request};
use pyo3::exceptions::{PyKeyError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::headers;
use crate::hooks::{CacheKey, Exchange, Outbound, RouteRef};
use crate::request_id::RequestId;
use crate::server::ConnInfo;

/// Views alive now, to prove they are freed (`_engine._live_views()`).
static LIVE_VIEWS: AtomicUsize = AtomicUsize::new(0);

/// Counts one live view from creation to drop.
pub(crate) struct Alive;

impl Alive {
    fn new() -> Self {
        LIVE_VIEWS.fetch_add(1, Ordering::Relaxed);
        Alive
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        LIVE_VIEWS.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How many `Request`, `Response` and `Headers` views are alive.
#[pyfunction]
pub(crate) fn _live_views() -> usize {
    LIVE_VIEWS.load(Ordering::Relaxed)
}

fn expired(finished: bool) -> PyErr {
    PyRuntimeError::new_err(if finished {
        "this view's request has finished; views are only valid during hook calls"
    } else {
        "this view is only valid during a hook call of its request"
    })
}

fn read_only() -> PyErr {
    PyRuntimeError::new_err("the response has been sent: this view is read-only")
}

/// The request head and what the engine decided so far.
pub(crate) struct RequestData {
    pub(crate) parts: request::Parts,
    pub(crate) conn: Option<Arc<ConnInfo>>,
    pub(crate) scheme: &'static str,
    pub(crate) id: RequestId,
    pub(crate) route: Option<RouteRef>,
    pub(crate) pool: Option<String>,
    pub(crate) rewrite: (Option<String>, Option<String>),
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) cache_key: CacheKey,
    pub(crate) outbound: Option<Outbound>,
}

fn empty_parts() -> request::Parts {
    http::Request::new(()).into_parts().0
}

/// A request as hooks see it.
#[pyclass(module = "rproxy._engine", name = "Request")]
pub struct PyRequest {
    pub(crate) data: Option<RequestData>,
    pub(crate) read_only: bool,
    pub(crate) finished: bool,
    _alive: Alive,
}

impl PyRequest {
    pub(crate) fn empty() -> Self {
        PyRequest {
            data: None,
            read_only: false,
            finished: false,
            _alive: Alive::new(),
        }
    }

    /// Move the request of `ex` into the view for a phase.
    pub(crate) fn enter(&mut self, ex: &mut Exchange, outbound: Option<Outbound>) {
        self.data = Some(RequestData {
            parts: std::mem::replace(&mut ex.parts, empty_parts()),
            conn: Some(ex.conn.clone()),
            scheme: ex.conn.scheme,
            id: ex.id,
            route: ex.route.clone(),
            pool: ex.pool.clone(),
            rewrite: ex.rewrite.clone(),
            upstream: ex.upstream,
            cache_key: ex.cache_key.clone(),
            outbound,
        });
    }

    /// Give the request back to `ex` after a phase; returns the outbound request.
    pub(crate) fn leave(&mut self, ex: &mut Exchange) -> Option<Outbound> {
        let data = self.data.take()?;
        ex.parts = data.parts;
        data.outbound
    }

    fn data(&self) -> PyResult<&RequestData> {
        self.data.as_ref().ok_or_else(|| expired(self.finished))
    }

    fn data_mut(&mut self) -> PyResult<&mut RequestData> {
        if self.read_only {
            return Err(read_only());
        }
        let finished = self.finished;
        self.data.as_mut().ok_or_else(|| expired(finished))
    }

    pub(crate) fn headers_mut(&mut self) -> PyResult<&mut HeaderMap> {
        let data = self.data_mut()?;
        Ok(match &mut data.outbound {
            Some(out) => &mut out.headers,
            None => &mut data.parts.headers,
        })
    }

    pub(crate) fn headers_ref(&self) -> PyResult<&HeaderMap> {
        let data = self.data()?;
        Ok(match &data.outbound {
            Some(out) => &out.headers,
            None => &data.parts.headers,
        })
    }

    fn target(&self) -> PyResult<String> {
        let data = self.data()?;
        Ok(match &data.outbound {
            Some(out) => out.target.clone(),
            None => data
                .parts
                .uri
                .path_and_query()
                .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()),
        })
    }
}

#[pymethods]
impl PyRequest {
    /// A request for tests, without the engine (`rproxy.testing`). With
    /// `outbound`, it is the request as it would be sent upstream: the
    /// engine's own header hygiene applied, its path settable.
    /// `outbound_target` and `outbound_host` are the target and `Host` a
    /// route rewrote to; `route_name`, `pool` and `upstream` what routing
    /// and balancing chose; `request_id` another view's `id`.
    #[staticmethod]
    #[pyo3(signature = (
        method="GET", target="/", headers=None, client="127.0.0.1:40000", scheme="http",
        outbound=false, *, outbound_target=None, outbound_host=None, route_name=None,
        pool=None, upstream=None, request_id=None,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn _for_testing(
        method: &str,
        target: &str,
        headers: Option<Bound<'_, PyAny>>,
        client: &str,
        scheme: &str,
        outbound: bool,
        outbound_target: Option<String>,
        outbound_host: Option<String>,
        route_name: Option<String>,
        pool: Option<String>,
        upstream: Option<String>,
        request_id: Option<String>,
    ) -> PyResult<Self> {
        let mut req = http::Request::builder()
            .method(method)
            .uri(target)
            .body(())
            .map_err(|e| PyValueError::new_err(format!("invalid request: {e}")))?;
        if let Some(h) = headers {
            fill_headers(req.headers_mut(), &h)?;
        }
        let client = client.parse::<SocketAddr>().map_err(|_| {
            PyValueError::new_err(format!("client must be \"ip:port\", got {client:?}"))
        })?;
        let scheme = if scheme == "https" { "https" } else { "http" };
        let parts = req.into_parts().0;
        let conn = Arc::new(ConnInfo::new(client, client, scheme));
        let outbound = outbound.then(|| {
            let mut fields = HeaderMap::new();
            headers::write_upstream_fields(
                &mut fields,
                &parts,
                &conn,
                false,
                outbound_host.as_deref(),
                "upstream",
            );
            Outbound {
                method: parts.method.clone(),
                target: outbound_target.clone().unwrap_or_else(|| {
                    parts
                        .uri
                        .path_and_query()
                        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned())
                }),
                headers: fields,
            }
        });
        let mut view = PyRequest::empty();
        view.data = Some(RequestData {
            parts,
            conn: Some(conn),
            scheme,
            id: match request_id {
                Some(id) => id.parse().map_err(|()| {
                    PyValueError::new_err(format!("request_id must be 32 hex digits, got {id:?}"))
                })?,
                None => RequestId::next(),
            },
            route: None,
            pool: None,
            rewrite: (outbound_target, outbound_host),
            upstream: None,
            cache_key: CacheKey::Default,
            outbound,
        });
        view._set_routing_for_testing(route_name, pool, upstream)?;
        Ok(view)
    }

    /// Record what routing and balancing chose, for tests
    /// (`rproxy.testing.Simulator`): the route's name, the pool, the server.
    #[pyo3(signature = (route_name=None, pool=None, upstream=None))]
    fn _set_routing_for_testing(
        &mut self,
        route_name: Option<String>,
        pool: Option<String>,
        upstream: Option<String>,
    ) -> PyResult<()> {
        let upstream = upstream
            .map(|u| {
                u.parse::<SocketAddr>().map_err(|_| {
                    PyValueError::new_err(format!("upstream must be \"ip:port\", got {u:?}"))
                })
            })
            .transpose()?;
        let data = self.data_mut()?;
        data.route = route_name.map(|name| RouteRef {
            name: Arc::from(name),
            index: None,
        });
        data.pool = pool;
        data.upstream = upstream;
        Ok(())
    }

    /// The method, e.g. ``"GET"``.
    #[getter]
    fn method(&self) -> PyResult<String> {
        let data = self.data()?;
        Ok(match &data.outbound {
            Some(out) => out.method.as_str().to_owned(),
            None => data.parts.method.as_str().to_owned(),
        })
    }

    /// The path, without the query (in ``rproxy_upstream_request``: the path
    /// sent upstream, which may be set).
    #[getter]
    fn path(&self) -> PyResult<String> {
        let target = self.target()?;
        Ok(target
            .split_once('?')
            .map_or(target.clone(), |(p, _)| p.to_owned()))
    }

    #[setter]
    fn set_path(&mut self, path: &str) -> PyResult<()> {
        if !path.starts_with('/')
            || path.contains(['?', '#', ' '])
            || path.chars().any(char::is_control)
        {
            return Err(PyValueError::new_err(format!("invalid path {path:?}")));
        }
        let data = self.data_mut()?;
        let Some(out) = &mut data.outbound else {
            return Err(PyRuntimeError::new_err(
                "the path can be changed only in rproxy_upstream_request (use a Route to rewrite it when routing)",
            ));
        };
        out.target = match out.target.split_once('?') {
            Some((_, q)) => format!("{path}?{q}"),
            None => path.to_owned(),
        };
        Ok(())
    }

    /// The query string without ``?``, or ``None``.
    #[getter]
    fn query(&self) -> PyResult<Option<String>> {
        let target = self.target()?;
        Ok(target.split_once('?').map(|(_, q)| q.to_owned()))
    }

    /// ``"http"`` or ``"https"``.
    #[getter]
    fn scheme(&self) -> PyResult<&'static str> {
        Ok(self.data()?.scheme)
    }

    /// The host the client asked for: the request target's authority or
    /// the ``Host`` field, lower-cased, without port and trailing dot.
    #[getter]
    fn host(&self) -> PyResult<Option<String>> {
        let data = self.data()?;
        let host = crate::route::request_host(&data.parts);
        let asked = data.parts.uri.authority().is_some()
            || data.parts.headers.contains_key(http::header::HOST);
        Ok(asked.then(|| host.into_owned()))
    }

    /// The client's IP address: the peer's, or, when the peer is one of
    /// ``trusted_proxies``, the one it names in ``X-Forwarded-For``.
    #[getter]
    fn client(&self) -> PyResult<Option<String>> {
        let data = self.data()?;
        Ok(data
            .conn
            .as_ref()
            .map(|c| headers::client_ip(&data.parts, c).into_owned()))
    }

    /// The client's port.
    #[getter]
    fn client_port(&self) -> PyResult<Option<u16>> {
        Ok(self.data()?.conn.as_ref().map(|c| c.client.port()))
    }

    /// ``"HTTP/1.0"``, ``"HTTP/1.1"`` or ``"HTTP/2"``.
    #[getter]
    fn version(&self) -> PyResult<&'static str> {
        Ok(match self.data()?.parts.version {
            http::Version::HTTP_10 => "HTTP/1.0",
            http::Version::HTTP_2 => "HTTP/2",
            _ => "HTTP/1.1",
        })
    }

    /// The header fields (in ``rproxy_upstream_request``: those sent upstream).
    #[getter]
    fn headers(slf: &Bound<'_, Self>) -> PyResult<Py<PyHeaders>> {
        // A new view each time: a cached one would form a reference cycle
        // with its request, which Python's collector cannot see through.
        Py::new(
            slf.py(),
            PyHeaders {
                owner: Owner::Request(slf.clone().unbind()),
                _alive: Alive::new(),
            },
        )
    }

    /// The pool chosen by routing, once routed.
    #[getter]
    fn upstream_pool(&self) -> PyResult<Option<String>> {
        Ok(self.data()?.pool.clone())
    }

    /// The name of the route chosen, once routed (``""`` for a route a hook
    /// chose without naming it).
    #[getter]
    fn route_name(&self) -> PyResult<Option<String>> {
        Ok(self.data()?.route.as_ref().map(|r| r.name.to_string()))
    }

    /// This request's id: 32 lower-case hex digits, unique per request
    /// (``$request_id`` in header rules).
    #[getter]
    fn id(&self) -> PyResult<String> {
        Ok(self.data()?.id.to_string())
    }

    /// The request target exactly as the client sent it (path and query),
    /// whatever a route rewrote.
    #[getter]
    fn uri(&self) -> PyResult<String> {
        Ok(self
            .data()?
            .parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned()))
    }

    /// The IP address of the peer (the TCP connection), whatever
    /// ``X-Forwarded-For`` says.
    #[getter]
    fn remote_addr(&self) -> PyResult<Option<String>> {
        Ok(self.data()?.conn.as_ref().map(|c| c.client_ip.clone()))
    }

    /// The route chosen, once forwarded to a pool: a ``rproxy.Route`` with
    /// its name, the pool, and any path or ``Host`` a route rewrote to.
    #[getter]
    fn route(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let data = self.data()?;
        let Some(pool) = &data.pool else {
            return Ok(py.None());
        };
        let kwargs = PyDict::new(py);
        let name = data.route.as_ref().filter(|r| !r.name.is_empty());
        kwargs.set_item("name", name.map(|r| r.name.to_string()))?;
        kwargs.set_item("upstream", pool)?;
        kwargs.set_item("path", &data.rewrite.0)?;
        kwargs.set_item("host", &data.rewrite.1)?;
        let route = py.import("rproxy.plan")?.getattr("Route")?;
        Ok(route.call((), Some(&kwargs))?.unbind())
    }

    /// The server chosen, ``"host:port"``, once chosen.
    #[getter]
    fn upstream(&self) -> PyResult<Option<String>> {
        Ok(self.data()?.upstream.map(|a| a.to_string()))
    }

    /// The cache key chosen by ``rproxy_cache_key``: a string, ``False`` for
    /// a bypass, ``None`` for the default.
    #[getter]
    fn cache_key(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match &self.data()?.cache_key {
            CacheKey::Default => py.None(),
            CacheKey::Bypass => false.into_pyobject(py)?.to_owned().into_any().unbind(),
            CacheKey::Key(k) => PyString::new(py, k).into_any().unbind(),
        })
    }

    fn __repr__(&self) -> String {
        match &self.data {
            Some(d) => format!("<Request {} {}>", d.parts.method, d.parts.uri),
            None => "<Request (not in a hook call)>".to_owned(),
        }
    }
}

/// The status and header fields of a response (and, for responses a hook
/// makes, the body).
pub(crate) struct ResponseData {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Option<Bytes>,
}

/// A response: one a hook makes to answer, or the one on its way to the client.
#[pyclass(module = "rproxy._engine", name = "Response")]
pub struct PyResponse {
    pub(crate) data: Option<ResponseData>,
    pub(crate) read_only: bool,
    pub(crate) finished: bool,
    _alive: Alive,
}

impl PyResponse {
    pub(crate) fn empty() -> Self {
        PyResponse {
            data: None,
            read_only: false,
            finished: false,
            _alive: Alive::new(),
        }
    }

    /// Move a response head into the view for a phase.
    pub(crate) fn enter(&mut self, status: &mut StatusCode, headers: &mut HeaderMap) {
        self.data = Some(ResponseData {
            status: *status,
            headers: std::mem::take(headers),
            body: None,
        });
    }

    /// Give the (possibly changed) head back after a phase.
    pub(crate) fn leave(&mut self, status: &mut StatusCode, headers: &mut HeaderMap) {
        if let Some(data) = self.data.take() {
            *status = data.status;
            *headers = data.headers;
        }
    }

    /// Take the whole response a hook made.
    pub(crate) fn take(&mut self) -> Option<ResponseData> {
        self.data.take()
    }

    fn data(&self) -> PyResult<&ResponseData> {
        self.data.as_ref().ok_or_else(|| expired(self.finished))
    }

    pub(crate) fn headers_mut(&mut self) -> PyResult<&mut HeaderMap> {
        if self.read_only {
            return Err(read_only());
        }
        let finished = self.finished;
        Ok(&mut self.data.as_mut().ok_or_else(|| expired(finished))?.headers)
    }

    pub(crate) fn headers_ref(&self) -> PyResult<&HeaderMap> {
        Ok(&self.data()?.headers)
    }
}

fn status_code(status: u16) -> PyResult<StatusCode> {
    match StatusCode::from_u16(status) {
        Ok(s) if (100..=599).contains(&status) => Ok(s),
        _ => Err(PyValueError::new_err(format!(
            "invalid status code {status}"
        ))),
    }
}

#[pymethods]
impl PyResponse {
    /// ``Response(status, headers=None, body=b"")``: a response to answer with.
    #[new]
    #[pyo3(signature = (status=200, headers=None, body=None))]
    fn new(
        status: u16,
        headers: Option<Bound<'_, PyAny>>,
        body: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Self> {
        let mut map = HeaderMap::new();
        if let Some(h) = headers {
            fill_headers(&mut map, &h)?;
        }
        let body = match body {
            None => Bytes::new(),
            Some(b) => {
                if let Ok(s) = b.cast::<PyString>() {
                    Bytes::from(s.to_str()?.to_owned())
                } else if let Ok(bytes) = b.cast::<PyBytes>() {
                    Bytes::copy_from_slice(bytes.as_bytes())
                } else {
                    return Err(PyTypeError::new_err("body must be bytes or str"));
                }
            }
        };
        Ok(PyResponse {
            data: Some(ResponseData {
                status: status_code(status)?,
                headers: map,
                body: Some(body),
            }),
            read_only: false,
            finished: false,
            _alive: Alive::new(),
        })
    }

    /// The status code.
    #[getter]
    fn status(&self) -> PyResult<u16> {
        Ok(self.data()?.status.as_u16())
    }

    #[setter]
    fn set_status(&mut self, status: u16) -> PyResult<()> {
        if self.read_only {
            return Err(read_only());
        }
        let code = status_code(status)?;
        let finished = self.finished;
        self.data.as_mut().ok_or_else(|| expired(finished))?.status = code;
        Ok(())
    }

    /// The header fields.
    #[getter]
    fn headers(slf: &Bound<'_, Self>) -> PyResult<Py<PyHeaders>> {
        // A new view each time: a cached one would form a reference cycle
        // with its response, which Python's collector cannot see through.
        Py::new(
            slf.py(),
            PyHeaders {
                owner: Owner::Response(slf.clone().unbind()),
                _alive: Alive::new(),
            },
        )
    }

    /// The body of a response a hook made; ``None`` for one from upstream
    /// (its body streams and is never held).
    #[getter]
    fn body<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        Ok(self.data()?.body.as_ref().map(|b| PyBytes::new(py, b)))
    }

    fn __repr__(&self) -> String {
        match &self.data {
            Some(d) => format!("<Response {}>", d.status.as_u16()),
            None => "<Response (not in a hook call)>".to_owned(),
        }
    }
}

enum Owner {
    Request(Py<PyRequest>),
    Response(Py<PyResponse>),
}

/// Header fields: case-insensitive names, several values per name.
#[pyclass(module = "rproxy._engine", name = "Headers")]
pub struct PyHeaders {
    owner: Owner,
    _alive: Alive,
}

impl PyHeaders {
    fn read<R>(&self, py: Python<'_>, f: impl FnOnce(&HeaderMap) -> PyResult<R>) -> PyResult<R> {
        match &self.owner {
            Owner::Request(r) => f(r.borrow(py).headers_ref()?),
            Owner::Response(r) => f(r.borrow(py).headers_ref()?),
        }
    }

    fn write<R>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut HeaderMap) -> PyResult<R>,
    ) -> PyResult<R> {
        match &self.owner {
            Owner::Request(r) => f(r.borrow_mut(py).headers_mut()?),
            Owner::Response(r) => f(r.borrow_mut(py).headers_mut()?),
        }
    }
}

fn name_of(name: &str) -> PyResult<HeaderName> {
    HeaderName::from_bytes(name.as_bytes())
        .map_err(|_| PyValueError::new_err(format!("invalid header name {name:?}")))
}

fn value_of(value: &str) -> PyResult<HeaderValue> {
    HeaderValue::from_str(value).map_err(|_| {
        PyValueError::new_err(format!(
            "invalid header value {value:?} (control characters are not allowed)"
        ))
    })
}

fn text(value: &HeaderValue) -> String {
    match value.to_str() {
        Ok(s) => s.to_owned(),
        // obs-text: bytes above 0x7f, shown as Latin-1 (RFC 9110 §5.5).
        Err(_) => value.as_bytes().iter().map(|b| char::from(*b)).collect(),
    }
}

/// Fill `map` from a dict, a list of pairs, or a `Headers` view.
fn fill_headers(map: &mut HeaderMap, source: &Bound<'_, PyAny>) -> PyResult<()> {
    if let Ok(h) = source.cast::<PyHeaders>() {
        for (k, v) in h.borrow().items(source.py())? {
            map.append(name_of(&k)?, value_of(&v)?);
        }
        return Ok(());
    }
    let pairs: Vec<(String, String)> = if let Ok(d) = source.cast::<PyDict>() {
        d.iter()
            .map(|(k, v)| Ok((k.extract()?, v.extract()?)))
            .collect::<PyResult<_>>()?
    } else {
        source.extract().map_err(|_| {
            PyTypeError::new_err(
                "headers must be a dict, a list of (name, value) pairs, or Headers",
            )
        })?
    };
    for (k, v) in pairs {
        map.append(name_of(&k)?, value_of(&v)?);
    }
    Ok(())
}

#[pymethods]
impl PyHeaders {
    /// The first value of ``name``, or ``default``.
    #[pyo3(signature = (name, default=None))]
    fn get(&self, py: Python<'_>, name: &str, default: Option<String>) -> PyResult<Option<String>> {
        self.read(py, |m| Ok(m.get(name).map(text).or(default)))
    }

    /// Every value of ``name``, in order.
    fn get_all(&self, py: Python<'_>, name: &str) -> PyResult<Vec<String>> {
        self.read(py, |m| Ok(m.get_all(name).iter().map(text).collect()))
    }

    /// Replace every value of ``name`` with ``value``.
    fn set(&self, py: Python<'_>, name: &str, value: &str) -> PyResult<()> {
        let (n, v) = (name_of(name)?, value_of(value)?);
        self.write(py, |m| {
            m.insert(n, v);
            Ok(())
        })
    }

    /// Add a value for ``name`` after the ones it has.
    fn add(&self, py: Python<'_>, name: &str, value: &str) -> PyResult<()> {
        let (n, v) = (name_of(name)?, value_of(value)?);
        self.write(py, |m| {
            m.append(n, v);
            Ok(())
        })
    }

    /// Remove every value of ``name``; returns whether there was one.
    fn remove(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        let n = name_of(name)?;
        self.write(py, |m| Ok(m.remove(&n).is_some()))
    }

    /// ``(name, value)`` pairs, in order; names are lower-case.
    fn items(&self, py: Python<'_>) -> PyResult<Vec<(String, String)>> {
        self.read(py, |m| {
            Ok(m.iter()
                .map(|(k, v)| (k.as_str().to_owned(), text(v)))
                .collect())
        })
    }

    /// The distinct names, lower-case, in order.
    fn keys(&self, py: Python<'_>) -> PyResult<Vec<String>> {
        self.read(py, |m| {
            Ok(m.keys().map(|k| k.as_str().to_owned()).collect())
        })
    }

    fn __getitem__(&self, py: Python<'_>, name: &str) -> PyResult<String> {
        self.get(py, name, None)?
            .ok_or_else(|| PyKeyError::new_err(name.to_owned()))
    }

    fn __setitem__(&self, py: Python<'_>, name: &str, value: &str) -> PyResult<()> {
        self.set(py, name, value)
    }

    fn __delitem__(&self, py: Python<'_>, name: &str) -> PyResult<()> {
        if self.remove(py, name)? {
            Ok(())
        } else {
            Err(PyKeyError::new_err(name.to_owned()))
        }
    }

    fn __contains__(&self, py: Python<'_>, name: &str) -> PyResult<bool> {
        self.read(py, |m| Ok(m.contains_key(name)))
    }

    fn __len__(&self, py: Python<'_>) -> PyResult<usize> {
        self.read(py, |m| Ok(m.keys_len()))
    }

    fn __iter__(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        let keys = PyList::new(py, self.keys(py)?)?;
        Ok(keys.call_method0("__iter__")?.unbind())
    }

    fn __repr__(&self, py: Python<'_>) -> String {
        match self.items(py) {
            Ok(items) => {
                let inner: Vec<String> = items.iter().map(|(k, v)| format!("{k}: {v:?}")).collect();
                format!("<Headers {{{}}}>", inner.join(", "))
            }
            Err(_) => "<Headers (not in a hook call)>".to_owned(),
        }
    }
}
