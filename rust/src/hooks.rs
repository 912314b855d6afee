//! The hook plan as the engine sees it: the phases of a request where
//! policy may act, the request state hooks work on, and the [`Hooks`]
//! interface the request path calls.
//!
//! The engine knows nothing of Python here: the `python` feature implements
//! [`Hooks`] with pluggy hook implementations, and tests implement it in
//! Rust. A configuration without hooks has no `Hooks` at all, and a phase
//! without steps is never called ([`Hooks::has`]), so policy that is not
//! there costs nothing.

use std::any::Any;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{HeaderMap, Method, Response, StatusCode, request};
use serde::Serialize;
use tokio::time::Instant;

use crate::body::ProxyBody;
use crate::error::{Error, Result};
use crate::request_id::RequestId;
use crate::server::ConnInfo;

/// A future returned by a [`Hooks`] method.
pub type HookFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A point in a request's life where hooks run, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Phase {
    /// `rproxy_request_filter`: may answer before routing.
    RequestFilter,
    /// `rproxy_cache_key`: the cache key, or a bypass.
    CacheKey,
    /// `rproxy_route`: which pool serves the request.
    Route,
    /// `rproxy_access`: may refuse a routed request (auth, CORS preflight).
    Access,
    /// `rproxy_select_upstream`: which server of the pool.
    SelectUpstream,
    /// `rproxy_upstream_request`: change the outbound request.
    UpstreamRequest,
    /// `rproxy_upstream_response`: change the upstream's response head.
    UpstreamResponse,
    /// `rproxy_response`: change the response head sent to the client.
    Response,
    /// `rproxy_error`: make the error response.
    Error,
    /// `rproxy_log`: after the response is sent.
    Log,
}

impl Phase {
    /// Every phase, in request order.
    pub const ALL: [Phase; 10] = [
        Phase::RequestFilter,
        Phase::CacheKey,
        Phase::Route,
        Phase::Access,
        Phase::SelectUpstream,
        Phase::UpstreamRequest,
        Phase::UpstreamResponse,
        Phase::Response,
        Phase::Error,
        Phase::Log,
    ];

    /// The name of this phase's hook.
    pub fn hook_name(self) -> &'static str {
        match self {
            Phase::RequestFilter => "rproxy_request_filter",
            Phase::CacheKey => "rproxy_cache_key",
            Phase::Route => "rproxy_route",
            Phase::Access => "rproxy_access",
            Phase::SelectUpstream => "rproxy_select_upstream",
            Phase::UpstreamRequest => "rproxy_upstream_request",
            Phase::UpstreamResponse => "rproxy_upstream_response",
            Phase::Response => "rproxy_response",
            Phase::Error => "rproxy_error",
            Phase::Log => "rproxy_log",
        }
    }

    /// The phase of a hook name.
    pub fn from_hook_name(name: &str) -> Option<Phase> {
        Phase::ALL.into_iter().find(|p| p.hook_name() == name)
    }

    /// Whether a failing hook fails its request by default (otherwise it is
    /// logged and skipped).
    pub fn fails_closed(self) -> bool {
        matches!(
            self,
            Phase::RequestFilter
                | Phase::Route
                | Phase::Access
                | Phase::SelectUpstream
                | Phase::UpstreamRequest
        )
    }
}

/// The cache key a request ended up with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CacheKey {
    /// The default key.
    #[default]
    Default,
    /// This key.
    Key(String),
    /// Do not use the cache.
    Bypass,
}

/// A request in flight, as hooks see it from phase to phase.
pub struct Exchange {
    /// The client's request head.
    pub parts: request::Parts,
    /// The client connection.
    pub conn: Arc<ConnInfo>,
    /// This request's id (`request.id`, `$request_id`).
    pub id: RequestId,
    /// The route chosen: its name, and its index in the configured routes
    /// when it is one of them.
    pub route: Option<RouteRef>,
    /// Who the `auth` built-in authenticated the request as.
    pub auth: Option<crate::policy::AuthInfo>,
    /// `auth` is new since hooks last saw the request (it goes into `ctx`).
    pub auth_unseen: bool,
    /// The pool chosen by routing.
    pub pool: Option<String>,
    /// The path and `Host` a route hook rewrote the request to, if any.
    pub rewrite: (Option<String>, Option<String>),
    /// The upstream server chosen.
    pub upstream: Option<SocketAddr>,
    /// The cache key chosen by hooks.
    pub cache_key: CacheKey,
    /// The hook implementation's own per-request state (views, `ctx`).
    pub state: Option<Box<dyn Any + Send>>,
    /// When the request head was complete.
    pub started: Instant,
    /// Time spent in hooks so far.
    pub hook_time: Duration,
    /// From sending the request upstream to its response head.
    pub upstream_time: Option<Duration>,
    /// The error the request failed with, if it did.
    pub error: Option<ErrorSummary>,
}

impl Exchange {
    /// A new exchange for a request head from `conn`.
    pub fn new(parts: request::Parts, conn: Arc<ConnInfo>) -> Self {
        Exchange {
            parts,
            conn,
            id: RequestId::next(),
            route: None,
            auth: None,
            auth_unseen: false,
            pool: None,
            rewrite: (None, None),
            upstream: None,
            cache_key: CacheKey::Default,
            state: None,
            started: Instant::now(),
            hook_time: Duration::ZERO,
            upstream_time: None,
            error: None,
        }
    }
}

/// The route a request took.
#[derive(Debug, Clone)]
pub struct RouteRef {
    /// Its name (`$route`, `request.route_name`).
    pub name: Arc<str>,
    /// Its index in the configured `[[routes]]`, when it is one of them.
    pub index: Option<usize>,
}

/// What a route hook decided.
pub enum RouteDecision {
    /// Forward to `pool`, optionally with a new path and `Host`.
    Forward {
        /// The route's name, if it has one.
        name: Option<String>,
        /// The pool's name.
        pool: String,
        /// A new request target (path and query).
        path: Option<String>,
        /// A new `Host` for the upstream request.
        host: Option<String>,
    },
    /// Answer with this response.
    Respond {
        /// The route's name, if it has one.
        name: Option<String>,
        /// The response.
        response: Response<ProxyBody>,
    },
}

/// The request as it will be sent upstream, for `rproxy_upstream_request`.
#[derive(Debug, Clone)]
pub struct Outbound {
    /// Method.
    pub method: Method,
    /// Request target (origin-form path and query).
    pub target: String,
    /// Header fields, hop-by-hop ones removed and forwarding ones added.
    pub headers: HeaderMap,
}

/// A failed request, as hooks and logs see it.
#[derive(Debug, Clone, Serialize)]
pub struct ErrorSummary {
    /// The error kind, e.g. `UpstreamConnect`.
    pub kind: String,
    /// `downstream`, `upstream`, `plugin` or `internal`.
    pub source: &'static str,
    /// The status the client gets (unless an error hook answers).
    pub status: u16,
    /// What happened, for logs (never sent to the client).
    pub message: String,
}

impl ErrorSummary {
    /// Summarise `err`.
    pub fn of(err: &Error) -> Self {
        ErrorSummary {
            kind: format!("{:?}", err.kind()),
            source: match err.source_side() {
                crate::error::ErrorSource::Downstream => "downstream",
                crate::error::ErrorSource::Upstream => "upstream",
                crate::error::ErrorSource::Plugin => "plugin",
                crate::error::ErrorSource::Internal => "internal",
            },
            status: err.status().as_u16(),
            message: err.to_string(),
        }
    }
}

/// How the response went, for `rproxy_log`.
#[derive(Debug, Clone)]
pub struct LogRecord {
    /// The status sent.
    pub status: StatusCode,
    /// The response header fields sent.
    pub headers: HeaderMap,
    /// Body bytes handed to the client connection.
    pub body_bytes: u64,
    /// Whether the body was sent to its end.
    pub complete: bool,
    /// From the request head to the end of the response.
    pub total: Duration,
}

/// The policy the engine consults per request. Each method runs the hooks
/// of one phase; the engine calls only phases for which [`Hooks::has`] is
/// true. A hook failure that should fail the request comes back as `Err`
/// (with [`crate::ErrorKind::Plugin`]); others are logged and skipped by
/// the implementation.
pub trait Hooks: Send + Sync {
    /// Whether `phase` has any step.
    fn has(&self, phase: Phase) -> bool;

    /// Whether segment `seg` of `phase` has any step. The engine's native
    /// built-ins split a phase's steps into segments: segment `k` runs
    /// after the phase's `k`-th native step (see [`crate::policy`]), so
    /// each step runs where pluggy would call it. By default every step
    /// runs before the natives.
    fn has_at(&self, phase: Phase, seg: usize) -> bool {
        seg == 0 && self.has(phase)
    }

    /// `rproxy_request_filter`: a response to send at once, or `None`.
    fn request_filter<'a>(
        &'a self,
        ex: &'a mut Exchange,
    ) -> HookFuture<'a, Result<Option<Response<ProxyBody>>>>;

    /// `rproxy_cache_key`: sets `ex.cache_key`.
    fn cache_key<'a>(&'a self, ex: &'a mut Exchange) -> HookFuture<'a, Result<()>>;

    /// `rproxy_route`: a decision, or `None` for the configured routes.
    fn route<'a>(&'a self, ex: &'a mut Exchange) -> HookFuture<'a, Result<Option<RouteDecision>>>;

    /// `rproxy_access` (segment `seg`): a response refusing the routed
    /// request, or `None` to let it through.
    fn access<'a>(
        &'a self,
        ex: &'a mut Exchange,
        seg: usize,
    ) -> HookFuture<'a, Result<Option<Response<ProxyBody>>>>;

    /// `rproxy_select_upstream` (the steps before the native balancer):
    /// the index in `candidates` of the server for this attempt, or `None`.
    fn select_upstream<'a>(
        &'a self,
        ex: &'a mut Exchange,
        candidates: &'a [crate::upstream::Candidate],
    ) -> HookFuture<'a, Result<Option<usize>>>;

    /// `rproxy_upstream_request` (segment `seg`): change `out` in place.
    fn upstream_request<'a>(
        &'a self,
        ex: &'a mut Exchange,
        out: &'a mut Outbound,
        seg: usize,
    ) -> HookFuture<'a, Result<()>>;

    /// `rproxy_upstream_response`: change the upstream's status and fields.
    fn upstream_response<'a>(
        &'a self,
        ex: &'a mut Exchange,
        status: &'a mut StatusCode,
        headers: &'a mut HeaderMap,
    ) -> HookFuture<'a, Result<()>>;

    /// `rproxy_response` (segment `seg`): change the status and fields
    /// sent to the client.
    fn response<'a>(
        &'a self,
        ex: &'a mut Exchange,
        status: &'a mut StatusCode,
        headers: &'a mut HeaderMap,
        seg: usize,
    ) -> HookFuture<'a, Result<()>>;

    /// `rproxy_error`: a response for `err`, or `None` for the default page.
    fn error<'a>(
        &'a self,
        ex: &'a mut Exchange,
        err: &'a ErrorSummary,
    ) -> HookFuture<'a, Option<Response<ProxyBody>>>;

    /// `rproxy_log`: record the finished request. Runs after the response
    /// was sent; must not block the caller for long.
    fn log(&self, ex: Exchange, record: LogRecord);

    /// Counters of every step, for `rproxy hooks --stats`.
    fn stats(&self) -> Vec<StepReport> {
        Vec::new()
    }
}

/// Buckets of the hook time histogram: bucket `i` counts calls that took
/// less than 2^i microseconds (the last bucket counts the rest).
pub const HISTOGRAM_BUCKETS: usize = 24;

/// Counters of one step (one plugin's implementation of one hook).
#[derive(Debug, Default)]
pub struct StepStats {
    calls: AtomicU64,
    errors: AtomicU64,
    total_ns: AtomicU64,
    histogram: [AtomicU64; HISTOGRAM_BUCKETS],
}

impl StepStats {
    /// Count one call that took `elapsed` and failed or not.
    pub fn record(&self, elapsed: Duration, failed: bool) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        let ns = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        self.total_ns.fetch_add(ns, Ordering::Relaxed);
        let micros = ns / 1000;
        let bucket = (u64::BITS - micros.leading_zeros()) as usize;
        self.histogram[bucket.min(HISTOGRAM_BUCKETS - 1)].fetch_add(1, Ordering::Relaxed);
    }

    /// A snapshot for `plugin`'s implementation of `hook`.
    pub fn report(&self, hook: &str, plugin: &str) -> StepReport {
        StepReport {
            hook: hook.to_owned(),
            plugin: plugin.to_owned(),
            calls: self.calls.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            total_ns: self.total_ns.load(Ordering::Relaxed),
            histogram: self
                .histogram
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// A snapshot of [`StepStats`].
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct StepReport {
    /// The hook, e.g. `rproxy_route`.
    pub hook: String,
    /// The plugin's name.
    pub plugin: String,
    /// Calls made.
    pub calls: u64,
    /// Calls that raised, returned the wrong type or timed out.
    pub errors: u64,
    /// Time in all calls, in nanoseconds.
    pub total_ns: u64,
    /// Calls per bucket of [`HISTOGRAM_BUCKETS`] powers of two of microseconds.
    pub histogram: Vec<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phases_know_their_hooks_and_policies() {
        for p in Phase::ALL {
            assert_eq!(Phase::from_hook_name(p.hook_name()), Some(p));
        }
        assert!(Phase::Route.fails_closed());
        assert!(!Phase::Log.fails_closed());
        assert!(!Phase::CacheKey.fails_closed());
    }

    #[test]
    fn stats_bucket_by_powers_of_two() {
        let s = StepStats::default();
        s.record(Duration::from_nanos(500), false); // < 1 µs
        s.record(Duration::from_micros(3), true); // [2, 4) µs
        s.record(Duration::from_secs(100), false); // last bucket
        let r = s.report("rproxy_route", "p");
        assert_eq!((r.calls, r.errors), (3, 1));
        assert_eq!(r.histogram[0], 1);
        assert_eq!(r.histogram[2], 1);
        assert_eq!(r.histogram[HISTOGRAM_BUCKETS - 1], 1);
    }
}
