//! The request path: validate, route, forward, and turn every failure into
//! the right response.
//!
//! Without hooks: request checks → route → (respond | forward upstream →
//! clean response). With hooks (see [`crate::hooks`]), the phases run in
//! their order around those steps: request_filter → cache_key → route →
//! select_upstream → upstream_request → upstream → upstream_response →
//! response → (sent) → log, and error when something fails.

mod cached;

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::poll_fn;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Request, Response, StatusCode, Version, request};
use http_body::Body;
use tokio::time::Instant;

use crate::body::{ProxyBody, RequestBody};
use crate::config::EngineConfig;
use crate::error::{Error, ErrorKind, ErrorSource, Result};
use crate::h1::encode;
use crate::h1::parse::{ResponseHead, valid_host};
use crate::headers;
use crate::hooks::{
    CacheKey, ErrorSummary, Exchange, Hooks, LogRecord, Outbound, Phase, RouteDecision, RouteRef,
};
use crate::policy::{AuthInfo, Caller, Facts, Policy, Target, native_order};
use crate::request_id::RequestId;
use crate::response;
use crate::route::{Decision, RouteTable, Subject, normalize_path};
use crate::server::ConnInfo;
use crate::upstream::{
    ExchangeError, Leases, OutBody, UpgradeTunnel, Upstream, UpstreamBody, balance_key,
};

/// Request extension: the client asked for a protocol upgrade (WebSocket).
#[derive(Debug, Clone, Copy)]
pub struct UpgradeRequested;

/// Response extension: close the client connection after this response.
#[derive(Debug, Clone, Copy)]
pub struct CloseConnection;

/// The compiled request path of one configuration.
pub struct Proxy {
    /// This proxy, for work that outlives a request (background refreshes).
    pub(crate) me: std::sync::Weak<Proxy>,
    routes: RouteTable,
    cache: Option<Arc<crate::cache::Cache>>,
    /// The cache built-in computes default keys (it is not disabled).
    cache_keys: bool,
    /// This worker's control socket, for telling the others of purges.
    control: Option<std::path::PathBuf>,
    policy: Policy,
    upstreams: Vec<Arc<Upstream>>,
    request_buffer_size: usize,
    hooks: Option<Arc<dyn Hooks>>,
}

impl Proxy {
    /// Compile `config`, with `hooks` consulted per request when given.
    /// Fails only on inconsistencies that config validation should already
    /// have reported.
    pub fn new(
        config: &EngineConfig,
        hooks: Option<Arc<dyn Hooks>>,
    ) -> std::result::Result<Self, String> {
        let s = &config.server;
        let mut pools: HashMap<&str, Arc<Upstream>> = HashMap::new();
        for (name, cfg) in &config.upstreams {
            if cfg.servers.is_empty() {
                return Err(format!("upstream {name:?} has no servers"));
            }
            pools.insert(
                name,
                Arc::new(Upstream::new(name, cfg, s.max_header_bytes, s.max_headers)),
            );
        }
        let routes = if config.natives.iter().any(|n| n == "router") {
            RouteTable::compile(&config.routes, &pools)?
        } else {
            RouteTable::default()
        };
        let policy = Policy::compile(config, &pools)?;
        let cache = config.cache.as_ref().map(|c| {
            let routes = config
                .routes
                .iter()
                .map(|r| crate::cache::RouteCache {
                    enabled: r.cache.unwrap_or(c.enabled),
                    ttl: r.cache_ttl.map(|ms| ms / 1000),
                    credentials: !r.auth.is_empty(),
                    proxy_fields: proxy_fields(config, r),
                })
                .collect();
            Arc::new(crate::cache::Cache::new(c, routes))
        });
        let mut upstreams: Vec<Arc<Upstream>> = pools.into_values().collect();
        upstreams.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Proxy {
            me: std::sync::Weak::new(),
            routes,
            cache,
            cache_keys: config.natives.iter().any(|n| n == "cache"),
            control: s
                .stats_file
                .as_deref()
                .map(crate::server::control::socket_path),
            policy,
            upstreams,
            request_buffer_size: s.request_buffer_size,
            hooks,
        })
    }

    /// Counters of every hook step.
    pub fn hook_stats(&self) -> Vec<crate::hooks::StepReport> {
        self.hooks.as_ref().map(|h| h.stats()).unwrap_or_default()
    }

    /// Close idle upstream connections past their keep-alive timeout.
    pub(crate) fn sweep_pools(&self) {
        for u in &self.upstreams {
            u.sweep();
        }
    }

    /// Every pool's statistics, by name.
    pub fn upstream_stats(&self) -> Vec<crate::upstream::PoolStats> {
        self.upstreams.iter().map(|u| u.stats()).collect()
    }

    /// Apply `purge` to this worker's cache; how many keys went.
    pub fn purge_local(&self, purge: &crate::server::control::Purge) -> usize {
        use crate::server::control::Purge;
        let Some(cache) = &self.cache else {
            return 0;
        };
        match purge {
            Purge::Key(k) => usize::from(cache.invalidate(k)),
            Purge::Prefix(p) => cache.purge_prefix(p),
        }
    }

    /// Apply `purge` here and tell the other workers: the keys purged here,
    /// and how many workers were told.
    pub(crate) fn purge_everywhere(&self, purge: &crate::server::control::Purge) -> (usize, usize) {
        let here = self.purge_local(purge);
        let told = self
            .control
            .as_deref()
            .map_or(0, |own| crate::server::control::broadcast(own, purge));
        (here, told)
    }

    /// The cache's admin address, if it has one.
    pub(crate) fn cache_admin(&self) -> Option<std::net::SocketAddr> {
        self.cache.as_ref().and_then(|c| c.admin)
    }

    /// Where this worker receives the others' purges, when it has a cache.
    pub(crate) fn control_socket(&self) -> Option<&std::path::Path> {
        self.cache.as_ref().and(self.control.as_deref())
    }

    /// The cache's figures, when there is a cache.
    pub fn cache_stats(&self) -> Option<crate::cache::CacheStats> {
        self.cache.as_ref().map(|c| c.stats())
    }

    /// Start the active health checks of every pool that has them.
    pub(crate) fn spawn_health_checks(&self) -> Vec<tokio::task::JoinHandle<()>> {
        self.upstreams
            .iter()
            .flat_map(crate::upstream::spawn_checks)
            .collect()
    }

    /// The pool called `name`.
    fn pool(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.iter().find(|u| u.name == name)
    }

    /// Serve one request. Never fails: errors become error responses.
    pub async fn handle(
        &self,
        req: Request<RequestBody>,
        conn: &Arc<ConnInfo>,
    ) -> Response<ProxyBody> {
        if let Some(hooks) = &self.hooks {
            return self.handle_with_hooks(hooks, req, conn).await;
        }
        let (parts, body) = req.into_parts();
        let mut ex = Bare {
            parts,
            conn,
            id: RequestId::next(),
            route: None,
            pool: None,
            upstream: None,
            auth: None,
        };
        let mut resp = self
            .process_bare(&mut ex, body)
            .await
            .unwrap_or_else(|err| {
                log_error(&err, conn);
                response::error(&err)
            });
        if self.policy.active(Phase::Response, 0) {
            self.policy.response(0, &ex.facts(), resp.headers_mut());
        }
        resp
    }

    /// The request path without hooks: the native built-ins only.
    async fn process_bare(
        &self,
        ex: &mut Bare<'_>,
        body: RequestBody,
    ) -> Result<Response<ProxyBody>> {
        if let Some(resp) = self.purge(&ex.parts, ex.conn) {
            return Ok(resp);
        }
        let (i, decision) = self.choose(&ex.parts, ex.conn.scheme)?;
        ex.route = Some(RouteRef {
            name: self.routes.name(i).clone(),
            index: Some(i),
        });
        if let Decision::Forward { upstream, .. } = &decision {
            ex.pool = Some((*upstream).clone());
        }
        for k in 0..native_order(Phase::Access).len() {
            if self.policy.active(Phase::Access, k) {
                if let Some(resp) = self.policy.access(k, ex).await {
                    return Ok(resp);
                }
            }
        }
        match decision {
            Decision::Respond(local) => Ok(local.to_response()),
            Decision::Answer(resp) => Ok(resp),
            Decision::Forward {
                upstream,
                path,
                host,
            } => {
                self.forward_cached(upstream, ex, body, None, Rewrite { path, host })
                    .await
            }
        }
    }

    /// Checks that apply whatever the route, then the configured route:
    /// its index and decision.
    fn choose(&self, parts: &request::Parts, scheme: &str) -> Result<(usize, Decision<'_>)> {
        check_request(parts)?;
        let subject = Subject::new(parts, scheme).map_err(bad_path)?;
        self.routes
            .decide(&subject)
            .ok_or_else(|| Error::new(ErrorKind::NoRoute, "no route matches"))
    }

    async fn handle_with_hooks(
        &self,
        hooks: &Arc<dyn Hooks>,
        req: Request<RequestBody>,
        conn: &Arc<ConnInfo>,
    ) -> Response<ProxyBody> {
        let (parts, body) = req.into_parts();
        let mut ex = Exchange::new(parts, conn.clone());
        let mut resp = match self.process_with_hooks(hooks.as_ref(), &mut ex, body).await {
            Ok(resp) => resp,
            Err(err) => {
                log_error(&err, conn);
                let summary = ErrorSummary::of(&err);
                let custom = if hooks.has(Phase::Error) {
                    hooks.error(&mut ex, &summary).await
                } else {
                    None
                };
                ex.error = Some(summary);
                let mut resp = custom.unwrap_or_else(|| response::error(&err));
                if err.source_side() == ErrorSource::Downstream {
                    resp.extensions_mut().insert(CloseConnection);
                }
                resp
            }
        };
        if hooks.has(Phase::Response) || self.policy.active(Phase::Response, 0) {
            let (mut head, body) = resp.into_parts();
            let natives = native_order(Phase::Response).len();
            for k in 0..=natives {
                if hooks.has_at(Phase::Response, k) {
                    // A failing response hook is logged and skipped by the plan.
                    let _ = hooks
                        .response(&mut ex, &mut head.status, &mut head.headers, k)
                        .await;
                }
                if k < natives && self.policy.active(Phase::Response, k) {
                    self.policy.response(k, &ex.facts(), &mut head.headers);
                }
            }
            resp = Response::from_parts(head, body);
        }
        if !hooks.has(Phase::Log) {
            return resp;
        }
        let status = resp.status();
        let headers = resp.headers().clone();
        let hooks = hooks.clone();
        resp.map(move |body| {
            body.on_done(move |body_bytes, complete| {
                let total = ex.started.elapsed();
                let record = LogRecord {
                    status,
                    headers,
                    body_bytes,
                    complete,
                    total,
                };
                hooks.log(ex, record);
            })
        })
    }

    async fn process_with_hooks(
        &self,
        hooks: &dyn Hooks,
        ex: &mut Exchange,
        body: RequestBody,
    ) -> Result<Response<ProxyBody>> {
        check_request(&ex.parts)?;
        // A path that cannot be normalised is refused before any policy
        // sees it (without hooks, routing does this check).
        normalize_path(ex.parts.uri.path()).map_err(bad_path)?;
        if let Some(resp) = self.purge(&ex.parts, &ex.conn) {
            return Ok(resp);
        }
        if hooks.has(Phase::RequestFilter) {
            if let Some(resp) = hooks.request_filter(ex).await? {
                return Ok(resp);
            }
        }
        if hooks.has(Phase::CacheKey) {
            hooks.cache_key(ex).await?;
        }
        let decision = if hooks.has(Phase::Route) {
            hooks.route(ex).await?
        } else {
            None
        };
        let action = match decision {
            Some(RouteDecision::Respond { name, response }) => {
                ex.route = Some(self.policy.route_named(name));
                Err(response)
            }
            Some(RouteDecision::Forward {
                name,
                pool,
                path,
                host,
            }) => {
                let upstream = self.pool(&pool).cloned().ok_or_else(|| {
                    Error::new(ErrorKind::Plugin, "a route hook chose an unknown pool")
                })?;
                ex.route = Some(self.policy.route_named(name));
                Ok((upstream, Rewrite { path, host }))
            }
            None => {
                let (i, decision) = self.choose(&ex.parts, ex.conn.scheme)?;
                ex.route = Some(RouteRef {
                    name: self.routes.name(i).clone(),
                    index: Some(i),
                });
                match decision {
                    Decision::Respond(local) => Err(local.to_response()),
                    Decision::Answer(resp) => Err(resp),
                    Decision::Forward {
                        upstream,
                        path,
                        host,
                    } => Ok((upstream.clone(), Rewrite { path, host })),
                }
            }
        };
        if let Ok((upstream, rewrite)) = &action {
            ex.rewrite = (rewrite.path.clone(), rewrite.host.clone());
            ex.pool = Some(upstream.name.clone());
        }
        let natives = native_order(Phase::Access).len();
        for k in 0..=natives {
            if hooks.has_at(Phase::Access, k) {
                if let Some(resp) = hooks.access(ex, k).await? {
                    return Ok(resp);
                }
            }
            if k < natives && self.policy.active(Phase::Access, k) {
                if let Some(resp) = self.policy.access(k, ex).await {
                    return Ok(resp);
                }
            }
        }
        match action {
            // A local answer: a `respond` or `redirect` route.
            Err(resp) => Ok(resp),
            Ok((upstream, rewrite)) => {
                self.forward_cached(&upstream, ex, body, Some(hooks), rewrite)
                    .await
            }
        }
    }

    async fn forward<X: InFlight>(
        &self,
        upstream: &Arc<Upstream>,
        ex: &mut X,
        body: RequestBody,
        hooks: Option<&dyn Hooks>,
        rewrite: Rewrite,
    ) -> Result<Response<ProxyBody>> {
        let upgrade = ex.parts().extensions.get::<UpgradeRequested>().is_some();
        let method = ex.parts().method.clone();
        let mut out = prebuffer(body, self.request_buffer_size).await?;
        let framing = Framing::of(&out, ex.parts());
        let request_lease = upstream.admit().await?;
        let key = upstream.hash_key_spec().and_then(|spec| {
            let (parts, conn) = (ex.parts(), ex.conn());
            balance_key(spec, parts, || headers::client_ip(parts, conn)).map(Cow::into_owned)
        });
        let idempotent = matches!(
            method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        let selecting = hooks.filter(|h| h.has_at(Phase::SelectUpstream, 0));
        let mut tried: Vec<usize> = Vec::new();
        let mut last_error = None;
        // A retry taken from the budget and not yet spent on an attempt.
        let mut retry_granted = false;
        loop {
            let eligible = upstream.eligible(&tried);
            if eligible.cands.is_empty() {
                if eligible.at_capacity {
                    upstream.wait_for_server(&tried).await?;
                    continue;
                }
                break;
            }
            if !tried.is_empty() && !retry_granted {
                if !upstream.try_retry() {
                    break;
                }
                retry_granted = true;
            }
            // A hook's choice, or the pool's own.
            let mut chosen = None;
            if let (Some(hooks), Some(exchange)) = (selecting, ex.exchange()) {
                chosen = hooks
                    .select_upstream(exchange, &eligible.cands)
                    .await?
                    .map(|k| eligible.cands[k].index);
            }
            let Some(i) = chosen.or_else(|| upstream.choose(&eligible.cands, key.as_deref()))
            else {
                break;
            };
            // Taken by another request since the candidates were listed: list again.
            let Some(lease) = upstream.lease(i) else {
                continue;
            };
            tried.push(i);
            retry_granted = false;
            let last_try = tried.len() > upstream.retries as usize;
            let server = &upstream.servers[i];
            ex.set_upstream(server.addr);
            let head = self
                .upstream_head(ex, upstream, hooks, &rewrite, framing, upgrade)
                .await?;
            // Connect failures may be retried whatever the method: nothing was sent.
            let mut conn = match upstream.connection(server).await {
                Ok(c) => c,
                Err(e) => {
                    log::debug!("upstream {} server {}: {e}", upstream.name, server.addr);
                    upstream.record(i, true);
                    last_error = Some(e);
                    if last_try {
                        break;
                    }
                    continue;
                }
            };
            let mut retried_fresh = false;
            let sent_at = Instant::now();
            let error = loop {
                match conn
                    .exchange(&head, &mut out, &method, &upstream.timeouts)
                    .await
                {
                    Ok((mut resp, sent_all)) => {
                        upstream.record(i, upstream.fail_on_5xx() && resp.status.is_server_error());
                        if let (Some(hooks), Some(ex)) = (hooks, ex.exchange()) {
                            ex.upstream_time = Some(sent_at.elapsed());
                            if hooks.has(Phase::UpstreamResponse)
                                && resp.status != StatusCode::SWITCHING_PROTOCOLS
                            {
                                hooks
                                    .upstream_response(ex, &mut resp.status, &mut resp.headers)
                                    .await?;
                            }
                        }
                        let leases = Leases {
                            _request: request_lease,
                            _server: lease,
                        };
                        return finish(conn, resp, sent_all, upgrade, upstream, leases);
                    }
                    Err(ExchangeError { error, stale }) => {
                        // A pooled connection the server had closed: the
                        // request never arrived, so send it once more on a
                        // fresh connection when that is safe.
                        if stale && !retried_fresh && idempotent && out.replayable() {
                            retried_fresh = true;
                            match upstream.connect(server).await {
                                Ok(fresh) => {
                                    conn = fresh;
                                    continue;
                                }
                                Err(e) => break e,
                            }
                        }
                        break error;
                    }
                }
            };
            if error.source_side() == ErrorSource::Upstream {
                upstream.record(i, true);
            }
            // A reset before the response head: safe to send again elsewhere
            // only for an idempotent method with the whole body in memory.
            let again = matches!(
                error.kind(),
                ErrorKind::UpstreamClosed | ErrorKind::UpstreamConnect
            ) && idempotent
                && out.replayable()
                && !last_try;
            if !again {
                return Err(error);
            }
            log::debug!(
                "upstream {} server {}: {error}; retrying",
                upstream.name,
                server.addr
            );
            last_error = Some(error);
        }
        Err(last_error
            .unwrap_or_else(|| Error::new(ErrorKind::UpstreamConnect, "no upstream server")))
    }

    /// The request head to send to the server just chosen (`ex`'s upstream),
    /// after the upstream_request steps.
    async fn upstream_head<X: InFlight>(
        &self,
        ex: &mut X,
        upstream: &Upstream,
        hooks: Option<&dyn Hooks>,
        rewrite: &Rewrite,
        framing: Framing,
        upgrade: bool,
    ) -> Result<Bytes> {
        let method = &ex.parts().method;
        let mut head = BytesMut::with_capacity(512);
        let hooked = hooks.filter(|h| h.has(Phase::UpstreamRequest));
        let natives = native_order(Phase::UpstreamRequest).len();
        if hooked.is_some() || self.policy.active(Phase::UpstreamRequest, 0) {
            let mut fields = HeaderMap::with_capacity(ex.parts().headers.len() + 8);
            headers::write_upstream_fields(
                &mut fields,
                ex.parts(),
                ex.conn(),
                upgrade,
                rewrite.host.as_deref(),
                &upstream.default_host,
            );
            let target = match &rewrite.path {
                Some(path) => path.clone(),
                None => origin_target(ex.parts()).to_owned(),
            };
            let mut outbound = Outbound {
                method: method.clone(),
                target,
                headers: fields,
            };
            for k in 0..=natives {
                if let (Some(hooks), Some(exchange)) = (hooked, ex.exchange()) {
                    if hooks.has_at(Phase::UpstreamRequest, k) {
                        hooks.upstream_request(exchange, &mut outbound, k).await?;
                    }
                }
                if k < natives && self.policy.active(Phase::UpstreamRequest, k) {
                    self.policy
                        .upstream_request(k, &ex.facts(), &mut outbound.headers);
                }
            }
            encode::write_request_line(&mut head, &outbound.method, &outbound.target);
            encode::write_fields(&mut head, &outbound.headers);
        } else {
            let target = rewrite
                .path
                .as_deref()
                .unwrap_or_else(|| origin_target(ex.parts()));
            encode::write_request_line(&mut head, method, target);
            headers::write_upstream_fields(
                &mut head,
                ex.parts(),
                ex.conn(),
                upgrade,
                rewrite.host.as_deref(),
                &upstream.default_host,
            );
        }
        match framing {
            Framing::Chunked => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            Framing::Length(total) => {
                head.extend_from_slice(b"content-length: ");
                encode::write_decimal(&mut head, total);
                head.extend_from_slice(b"\r\n");
            }
            Framing::None => {}
        }
        head.extend_from_slice(b"\r\n");
        Ok(head.freeze())
    }
}

/// The request fields the proxy sets, adds or removes on `route`'s way
/// upstream: its header rules (global, pool, route), the forwarding fields,
/// and `Host` when the route rewrites it.
fn proxy_fields(
    config: &EngineConfig,
    route: &crate::config::RouteConfig,
) -> Arc<[http::HeaderName]> {
    let mut names: Vec<http::HeaderName> = [
        "x-forwarded-for",
        "x-forwarded-proto",
        "x-forwarded-host",
        "forwarded",
        "via",
    ]
    .into_iter()
    .map(http::HeaderName::from_static)
    .collect();
    if route.upstream_host.is_some() {
        names.push(header::HOST);
    }
    let pool = route
        .upstream
        .as_deref()
        .and_then(|p| config.upstreams.get(p));
    let rules = [
        Some(&config.headers.request),
        pool.map(|p| &p.request_headers),
        Some(&route.request_headers),
    ];
    for r in rules.into_iter().flatten() {
        let named = r
            .remove
            .iter()
            .chain(r.set.iter().map(|(n, _)| n))
            .chain(r.add.iter().map(|(n, _)| n));
        names.extend(named.filter_map(|n| http::HeaderName::from_bytes(n.as_bytes()).ok()));
    }
    names.into()
}

/// How the request body is framed upstream.
#[derive(Clone, Copy)]
enum Framing {
    Chunked,
    Length(u64),
    None,
}

impl Framing {
    fn of(out: &OutBody, parts: &request::Parts) -> Self {
        let buffered = || out.prefix.iter().map(|b| b.len() as u64).sum::<u64>();
        match (&out.rest, out.chunked) {
            (_, true) => Framing::Chunked,
            (Some(rest), false) => {
                Framing::Length(buffered() + rest.size_hint().exact().unwrap_or(0))
            }
            (None, false) => {
                let total = buffered();
                let declared = parts.headers.contains_key(header::CONTENT_LENGTH)
                    || parts.headers.contains_key(header::TRANSFER_ENCODING)
                    || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);
                if total > 0 || declared {
                    Framing::Length(total)
                } else {
                    Framing::None
                }
            }
        }
    }
}

/// Changes a route makes to the upstream request.
#[derive(Default, Clone)]
struct Rewrite {
    path: Option<String>,
    host: Option<String>,
}

/// A request in flight: with hooks, the full [`Exchange`]; without, just
/// its head and connection (nothing to allocate).
trait InFlight: Target {
    fn parts(&self) -> &request::Parts;
    fn parts_mut(&mut self) -> &mut request::Parts;
    /// The connection, shared (for work that outlives the request).
    fn conn_arc(&self) -> Arc<ConnInfo>;
    /// The configured route's index, if a configured route was chosen.
    fn route_index(&self) -> Option<usize>;
    /// What `rproxy_cache_key` decided.
    fn cache_choice(&self) -> &CacheKey;
    fn conn(&self) -> &ConnInfo;
    fn exchange(&mut self) -> Option<&mut Exchange>;
    fn set_upstream(&mut self, addr: SocketAddr);
}

struct Bare<'a> {
    parts: request::Parts,
    conn: &'a Arc<ConnInfo>,
    id: RequestId,
    route: Option<RouteRef>,
    pool: Option<Arc<Upstream>>,
    upstream: Option<SocketAddr>,
    auth: Option<AuthInfo>,
}

impl InFlight for Bare<'_> {
    fn parts(&self) -> &request::Parts {
        &self.parts
    }
    fn parts_mut(&mut self) -> &mut request::Parts {
        &mut self.parts
    }
    fn conn_arc(&self) -> Arc<ConnInfo> {
        self.conn.clone()
    }
    fn route_index(&self) -> Option<usize> {
        self.route.as_ref().and_then(|r| r.index)
    }
    fn cache_choice(&self) -> &CacheKey {
        &CacheKey::Default
    }
    fn conn(&self) -> &ConnInfo {
        self.conn
    }
    fn exchange(&mut self) -> Option<&mut Exchange> {
        None
    }
    fn set_upstream(&mut self, addr: SocketAddr) {
        self.upstream = Some(addr);
    }
}

impl Target for Bare<'_> {
    fn facts(&self) -> Facts<'_> {
        Facts {
            parts: &self.parts,
            conn: self.conn,
            route: self.route.as_ref(),
            pool: self.pool.as_ref().map(|u| u.name.as_str()),
            upstream: self.upstream,
            id: self.id,
            auth: self.auth.as_ref(),
        }
    }
    fn caller(&mut self) -> Caller<'_> {
        Caller {
            parts: &mut self.parts,
            conn: self.conn,
            route: self.route.as_ref().and_then(|r| r.index),
            auth: &mut self.auth,
            fresh: None,
        }
    }
}

impl InFlight for Exchange {
    fn parts(&self) -> &request::Parts {
        &self.parts
    }
    fn parts_mut(&mut self) -> &mut request::Parts {
        &mut self.parts
    }
    fn conn_arc(&self) -> Arc<ConnInfo> {
        self.conn.clone()
    }
    fn route_index(&self) -> Option<usize> {
        self.route.as_ref().and_then(|r| r.index)
    }
    fn cache_choice(&self) -> &CacheKey {
        &self.cache_key
    }
    fn conn(&self) -> &ConnInfo {
        &self.conn
    }
    fn exchange(&mut self) -> Option<&mut Exchange> {
        Some(self)
    }
    fn set_upstream(&mut self, addr: SocketAddr) {
        self.upstream = Some(addr);
    }
}

impl Target for Exchange {
    fn facts(&self) -> Facts<'_> {
        Facts {
            parts: &self.parts,
            conn: &self.conn,
            route: self.route.as_ref(),
            pool: self.pool.as_deref(),
            upstream: self.upstream,
            id: self.id,
            auth: self.auth.as_ref(),
        }
    }
    fn caller(&mut self) -> Caller<'_> {
        Caller {
            parts: &mut self.parts,
            conn: &self.conn,
            route: self.route.as_ref().and_then(|r| r.index),
            auth: &mut self.auth,
            fresh: Some(&mut self.auth_unseen),
        }
    }
}

fn log_error(err: &Error, conn: &ConnInfo) {
    if err.kind() == ErrorKind::NoRoute {
        log::debug!("{} no route: {err}", conn.client);
        return;
    }
    match err.source_side() {
        ErrorSource::Upstream => log::warn!("{} upstream error: {err}", conn.client),
        // The plan already logged the failure, with the plugin's traceback.
        ErrorSource::Plugin => log::debug!("{} plugin error: {err}", conn.client),
        ErrorSource::Internal => log::error!("{} internal error: {err}", conn.client),
        ErrorSource::Downstream => log::debug!("{} client error: {err}", conn.client),
    }
}

/// The request target to send upstream: origin-form path and query.
fn origin_target(parts: &request::Parts) -> &str {
    parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .filter(|pq| !pq.is_empty())
        .unwrap_or("/")
}

/// The error for a path that cannot be normalised (docs/routing.md).
fn bad_path(why: &'static str) -> Error {
    Error::new(ErrorKind::BadRequest, why)
}

/// Requests the proxy refuses whatever the route.
fn check_request(parts: &request::Parts) -> Result<()> {
    if parts.method == Method::CONNECT {
        return Err(Error::new(
            ErrorKind::MethodNotAllowed,
            "CONNECT is not proxied",
        ));
    }
    if parts.version == Version::HTTP_2 {
        check_h2_authority(parts)?;
    }
    Ok(())
}

/// Turn an upstream response head into the response sent downstream.
fn finish(
    mut conn: crate::upstream::UpstreamConn,
    head: ResponseHead,
    sent_all: bool,
    upgrade: bool,
    upstream: &Upstream,
    leases: Leases,
) -> Result<Response<ProxyBody>> {
    let ResponseHead {
        status,
        mut headers,
        framing,
        keep_alive,
        ..
    } = head;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        if !upgrade || !headers.contains_key(header::UPGRADE) {
            return Err(Error::new(
                ErrorKind::UpstreamProtocol,
                "unexpected 101 response",
            ));
        }
        headers::clean_response(&mut headers, true);
        // The tunnel counts as in flight until it closes.
        conn.hold(leases);
        let mut resp = Response::new(ProxyBody::empty());
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp.extensions_mut().insert(UpgradeTunnel::new(conn));
        return Ok(resp);
    }
    headers::clean_response(&mut headers, false);
    let reusable = keep_alive && sent_all && !upgrade;
    let body =
        UpstreamBody::new(conn, framing, reusable, upstream.timeouts.body_idle).holding(leases);
    let mut resp = Response::new(ProxyBody::upstream(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// Read up to `limit` bytes of a request body before choosing an upstream.
///
/// A body that ends within the limit is sent with a Content-Length, can be
/// sent again, and — most important — is known to be well-formed before a
/// single byte of the request reaches an upstream.
async fn prebuffer(mut body: RequestBody, limit: usize) -> Result<OutBody> {
    let exact = body.size_hint().exact();
    let mut out = OutBody {
        prefix: Vec::new(),
        trailers: None,
        rest: None,
        chunked: false,
    };
    if body.is_end_stream() {
        return Ok(out);
    }
    if body.declared_too_large() {
        return Err(Error::new(
            ErrorKind::BodyTooLarge,
            "Content-Length above max_body_size",
        ));
    }
    let mut size = 0usize;
    loop {
        if size >= limit {
            out.chunked = exact.is_none();
            out.rest = Some(body);
            return Ok(out);
        }
        match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => break,
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    size += data.len();
                    out.prefix.push(data);
                }
                Err(frame) => out.trailers = frame.into_trailers().ok(),
            },
        }
    }
    if out.trailers.is_some() {
        out.chunked = true;
    }
    if out.prefix.len() > 1 && !out.chunked {
        let joined: BytesMut =
            out.prefix
                .iter()
                .fold(BytesMut::with_capacity(size), |mut acc, b| {
                    acc.extend_from_slice(b);
                    acc
                });
        out.prefix = vec![Bytes::from(joined)];
    }
    Ok(out)
}

/// RFC 9113 §8.3.1: an HTTP/2 request names its authority in `:authority`
/// or `Host`; when both are present they must agree.
fn check_h2_authority(parts: &request::Parts) -> Result<()> {
    let bad = |why| Error::new(ErrorKind::BadRequest, why);
    let host = parts.headers.get(header::HOST).map(HeaderValue::as_bytes);
    match (parts.uri.authority(), host) {
        (None, None) => Err(bad("HTTP/2 request without authority")),
        (Some(a), Some(h)) if !a.as_str().as_bytes().eq_ignore_ascii_case(h) => {
            Err(bad(":authority and Host differ"))
        }
        (None, Some(h)) if !valid_host(h) => Err(bad("invalid Host")),
        _ => Ok(()),
    }
}
