//! The request path through the HTTP cache (docs/caching.md): serve a
//! stored response, revalidate it, or fetch and store — RFC 9111 as a
//! shared cache, with RFC 5861's stale-if-error and RFC 9211's
//! `Cache-Status`.

use std::sync::Arc;
use std::time::SystemTime;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};

use super::{InFlight, Proxy, Rewrite};
use crate::body::{ProxyBody, RequestBody};
use crate::cache::entry::{date_of, storable};
use crate::cache::{
    Cache, Fill, FillHead, FlightGuard, Freshness, Lookup, RequestDirectives, RouteCache, Scope,
    Stored, default_key, is_safe, related_key,
};
use crate::error::{Error, ErrorKind, Result};
use crate::hooks::{CacheKey, Exchange, Hooks};
use crate::upstream::Upstream;
use http_body::Body;

/// The client's own conditional fields, set aside while the cache
/// revalidates with its validators.
const CONDITIONALS: [HeaderName; 2] = [header::IF_NONE_MATCH, header::IF_MODIFIED_SINCE];

/// What one cached request needs besides the exchange.
struct Ctx<'a> {
    cache: &'a Arc<Cache>,
    key: String,
    rc: &'a RouteCache,
    req_cc: RequestDirectives,
    /// The request carries credentials (§3.5).
    credentialed: bool,
    /// The route, pool and trusted forwarding fields of the request.
    scope: Scope,
    /// The store's generation when the request began.
    since: u64,
}

impl Proxy {
    /// Forward a routed request through the cache, when its route caches.
    pub(super) async fn forward_cached<X: InFlight>(
        &self,
        upstream: &Arc<Upstream>,
        ex: &mut X,
        body: RequestBody,
        hooks: Option<&dyn Hooks>,
        rewrite: Rewrite,
    ) -> Result<Response<ProxyBody>> {
        let Some(cache) = &self.cache else {
            return self.forward(upstream, ex, body, hooks, rewrite).await;
        };
        let rc = cache.route(ex.route_index());
        if !rc.enabled {
            return self.forward(upstream, ex, body, hooks, rewrite).await;
        }
        let method = ex.parts().method.clone();
        let key = match ex.cache_choice() {
            CacheKey::Bypass => None,
            CacheKey::Key(k) => Some(k.clone()),
            // Without the cache built-in (disabled), only a hook's keys are cached.
            CacheKey::Default if self.cache_keys => default_key(ex.parts(), ex.conn().scheme),
            CacheKey::Default => None,
        };
        let Some(key) = key else {
            let resp = self.forward(upstream, ex, body, hooks, rewrite).await?;
            return Ok(with_status(resp, &cache.status("fwd=bypass")));
        };
        if !is_safe(&method) {
            // RFC 9111 §4.4: a successful unsafe request invalidates the
            // target and the same-origin Location and Content-Location.
            let resp = self.forward(upstream, ex, body, hooks, rewrite).await?;
            if resp.status().is_success() || resp.status().is_redirection() {
                // In every worker: each has its own store.
                use crate::server::control::Purge;
                self.purge_everywhere(&Purge::Key(key.clone()));
                for field in [header::LOCATION, header::CONTENT_LOCATION] {
                    if let Some(k) = resp.headers().get(field).and_then(|v| related_key(&key, v)) {
                        self.purge_everywhere(&Purge::Key(k));
                    }
                }
            }
            return Ok(with_status(resp, &cache.status("fwd=method")));
        }
        let ranged = ex.parts().headers.contains_key(header::RANGE);
        let upgrade = ex
            .parts()
            .extensions
            .get::<super::UpgradeRequested>()
            .is_some();
        if (method != Method::GET && method != Method::HEAD) || ranged || upgrade {
            // Ranges are passed through (partial responses are not stored),
            // and so are protocol upgrades.
            let resp = self.forward(upstream, ex, body, hooks, rewrite).await?;
            let params = if ranged {
                "fwd=bypass; detail=range"
            } else if upgrade {
                "fwd=bypass; detail=upgrade"
            } else {
                "fwd=method"
            };
            return Ok(with_status(resp, &cache.status(params)));
        }
        let cx = Ctx {
            cache,
            key,
            credentialed: rc.credentials || ex.parts().headers.contains_key(header::AUTHORIZATION),
            rc,
            req_cc: RequestDirectives::parse(&ex.parts().headers),
            scope: Scope::of(
                ex.route_index(),
                &upstream.name,
                ex.parts(),
                ex.conn().trusted.is_some(),
            ),
            since: cache.generation(),
        };
        let mut lookup = cx.lookup(ex.parts());
        let mut flight = None;
        let mut collapsed = false;
        if !matches!(lookup, Lookup::Hit(_)) && method == Method::GET && !cx.req_cc.only_if_cached {
            // Another request may be fetching this key: wait for it, look
            // again, and lead the next fetch if nothing came of it (its
            // client went away, say) — within lock_timeout in all.
            let deadline = tokio::time::Instant::now() + cache.lock_timeout;
            loop {
                match cache.flight(&cx.key) {
                    Ok(guard) => {
                        flight = Some(guard);
                        break;
                    }
                    Err(mut done) => {
                        let waited = tokio::time::timeout_at(deadline, done.wait_for(|d| *d)).await;
                        collapsed = true;
                        lookup = cx.lookup(ex.parts());
                        if matches!(lookup, Lookup::Hit(_)) || waited.is_err() {
                            break;
                        }
                    }
                }
            }
        }
        let now = SystemTime::now();
        match lookup {
            Lookup::Hit(stored) => {
                let age = stored.age(now);
                let fresh = stored.fresh_at(age);
                let r = &cx.req_cc;
                let acceptable = r.max_age.is_none_or(|m| age <= m)
                    && r.min_fresh
                        .is_none_or(|m| stored.lifetime.saturating_sub(age) >= m && fresh);
                let validate = stored.cc.no_cache || r.no_cache;
                if fresh && acceptable && !validate {
                    let mut params = format!("hit; ttl={}", ttl(&stored, age));
                    if collapsed {
                        params.push_str("; collapsed");
                    }
                    return Ok(serve(&stored, age, &cache.status(&params), ex.parts()));
                }
                // Stale: served only when the request allows it (§4.2.4).
                let staleness = age.saturating_sub(stored.lifetime);
                if !fresh
                    && !validate
                    && !stored.must_revalidate()
                    && r.max_stale.is_some_and(|m| staleness <= m)
                    && r.max_age.is_none_or(|m| age <= m)
                {
                    let params = format!("hit; ttl={}", ttl(&stored, age));
                    return Ok(serve(&stored, age, &cache.status(&params), ex.parts()));
                }
                // RFC 5861 §3: within stale-while-revalidate, the stale
                // response now, and a refresh in the background.
                if !fresh
                    && !validate
                    && !stored.must_revalidate()
                    && stored
                        .cc
                        .stale_while_revalidate
                        .is_some_and(|w| staleness <= w)
                    && r.max_age.is_none_or(|m| age <= m)
                    && r.max_stale.is_none_or(|m| staleness <= m)
                    && r.min_fresh.is_none()
                {
                    if let Ok(guard) = cache.flight(&cx.key) {
                        self.refresh_later(&cx, stored.clone(), upstream, ex, rewrite, guard);
                    }
                    let params = format!(
                        "hit; ttl={}; detail=stale-while-revalidate",
                        ttl(&stored, age)
                    );
                    return Ok(serve(&stored, age, &cache.status(&params), ex.parts()));
                }
                if r.only_if_cached {
                    return Ok(only_if_cached(cache));
                }
                // Fresh, but the request wants it checked: RFC 9211's "request".
                let fwd = if fresh && !stored.cc.no_cache {
                    "fwd=request"
                } else {
                    "fwd=stale"
                };
                self.revalidate(&cx, stored, upstream, ex, body, hooks, rewrite, flight, fwd)
                    .await
            }
            _ if cx.req_cc.only_if_cached => Ok(only_if_cached(cache)),
            miss => {
                let mut fwd = match miss {
                    Lookup::VaryMiss => "fwd=vary-miss",
                    Lookup::Unusable => "fwd=miss",
                    _ => "fwd=uri-miss",
                }
                .to_owned();
                if collapsed {
                    fwd.push_str("; collapsed");
                }
                self.fetch(&cx, &fwd, upstream, ex, body, hooks, rewrite, flight)
                    .await
            }
        }
    }

    /// Revalidate `stored` in a task of its own (without Python hooks: the
    /// client is not waiting), storing what comes back.
    fn refresh_later<X: InFlight>(
        &self,
        cx: &Ctx<'_>,
        stored: Arc<Stored>,
        upstream: &Arc<Upstream>,
        ex: &X,
        rewrite: Rewrite,
        guard: FlightGuard,
    ) {
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let src = ex.parts();
        let (mut parts, ()) = http::Request::new(()).into_parts();
        parts.method = Method::GET;
        parts.uri = src.uri.clone();
        parts.version = src.version;
        parts.headers = src.headers.clone();
        for name in &CONDITIONALS {
            parts.headers.remove(name);
        }
        let facts = ex.facts();
        let mut bg = Exchange::new(parts, ex.conn_arc());
        bg.route = facts.route.cloned();
        bg.pool = facts.pool.map(str::to_owned);
        bg.auth = facts.auth.cloned();
        let (cache, key, rc, credentialed) = (
            cx.cache.clone(),
            cx.key.clone(),
            cx.rc.clone(),
            cx.credentialed,
        );
        let (scope, since) = (cx.scope.clone(), cx.since);
        let upstream = upstream.clone();
        tokio::spawn(async move {
            let cx = Ctx {
                cache: &cache,
                key,
                rc: &rc,
                req_cc: RequestDirectives::default(),
                credentialed,
                scope,
                since,
            };
            let refreshed = me
                .revalidate(
                    &cx,
                    stored,
                    &upstream,
                    &mut bg,
                    RequestBody::empty(),
                    None,
                    rewrite,
                    Some(guard),
                    "fwd=stale",
                )
                .await;
            match refreshed {
                // Read the body to its end, so that it is stored.
                Ok(resp) => {
                    let mut body = resp.into_body();
                    while let Some(frame) =
                        std::future::poll_fn(|c| std::pin::Pin::new(&mut body).poll_frame(c)).await
                    {
                        if frame.is_err() {
                            break;
                        }
                    }
                }
                Err(e) => log::debug!("background refresh of {}: {e}", cx.key),
            }
        });
    }

    /// Forward, then store the response as it streams if RFC 9111 §3 allows.
    #[allow(clippy::too_many_arguments)]
    async fn fetch<X: InFlight>(
        &self,
        cx: &Ctx<'_>,
        fwd: &str,
        upstream: &Arc<Upstream>,
        ex: &mut X,
        body: RequestBody,
        hooks: Option<&dyn Hooks>,
        rewrite: Rewrite,
        flight: Option<FlightGuard>,
    ) -> Result<Response<ProxyBody>> {
        let request_time = SystemTime::now();
        let resp = self.forward(upstream, ex, body, hooks, rewrite).await?;
        Ok(cx.store(resp, ex.parts(), request_time, fwd, flight))
    }

    /// Ask the upstream whether `stored` is still good (§4.3.1), with its
    /// validators instead of the client's.
    #[allow(clippy::too_many_arguments)]
    async fn revalidate<X: InFlight>(
        &self,
        cx: &Ctx<'_>,
        stored: Arc<Stored>,
        upstream: &Arc<Upstream>,
        ex: &mut X,
        body: RequestBody,
        hooks: Option<&dyn Hooks>,
        rewrite: Rewrite,
        flight: Option<FlightGuard>,
        fwd: &str,
    ) -> Result<Response<ProxyBody>> {
        let own = swap_conditionals(&mut ex.parts_mut().headers, stored.validators());
        let request_time = SystemTime::now();
        let again = rewrite.clone();
        let result = self.forward(upstream, ex, body, hooks, rewrite).await;
        swap_conditionals(&mut ex.parts_mut().headers, own);
        let now = SystemTime::now();
        let age = stored.age(now);
        let may_serve_stale = |cx: &Ctx<'_>| {
            let window = stored.cc.stale_if_error.max(cx.req_cc.stale_if_error);
            !stored.must_revalidate()
                && window.is_some_and(|w| age.saturating_sub(stored.lifetime) <= w)
        };
        match result {
            Ok(resp)
                if resp.status() == StatusCode::NOT_MODIFIED
                    && other_validator(&stored, resp.headers()) =>
            {
                // §4.3.4: this 304 is about another representation: it
                // updates nothing. Ask again as the client asked.
                drop(resp);
                let request_time = SystemTime::now();
                let resp = self
                    .forward(upstream, ex, RequestBody::empty(), hooks, again)
                    .await?;
                Ok(cx.store(resp, ex.parts(), request_time, fwd, flight))
            }
            Ok(resp) if resp.status() == StatusCode::NOT_MODIFIED => {
                let freshness = cx.freshness();
                let renewed = stored.freshened(
                    resp.headers(),
                    &ex.parts().headers,
                    request_time,
                    now,
                    &freshness,
                );
                let age = renewed.age(now);
                // The 304's fields may forbid storing what they update
                // (private, no-store, a Set-Cookie, Vary: *): then this
                // client gets the updated response, and nobody else.
                if let Err(why) = cx.may_store(
                    &ex.parts().headers,
                    renewed.status,
                    &renewed.headers,
                    &renewed.cc,
                ) {
                    cx.cache.invalidate(&cx.key);
                    let params = format!("{fwd}; fwd-status=304; detail=\"{why}\"");
                    return Ok(serve(&renewed, age, &cx.cache.status(&params), ex.parts()));
                }
                let out = serve(
                    &renewed,
                    age,
                    &cx.cache.status(&format!("{fwd}; fwd-status=304")),
                    ex.parts(),
                );
                cx.cache.insert(&cx.key, renewed, cx.since);
                drop(flight);
                Ok(out)
            }
            Ok(resp) if resp.status().is_server_error() && may_serve_stale(cx) => {
                let params = format!(
                    "fwd=stale; fwd-status={}; ttl={}; detail=stale-if-error",
                    resp.status().as_u16(),
                    ttl(&stored, age)
                );
                Ok(serve(&stored, age, &cx.cache.status(&params), ex.parts()))
            }
            Ok(resp) => Ok(cx.store(resp, ex.parts(), request_time, fwd, flight)),
            Err(e)
                if e.source_side() == crate::error::ErrorSource::Upstream
                    && may_serve_stale(cx) =>
            {
                let params = format!(
                    "fwd=stale; ttl={}; detail=stale-if-error",
                    ttl(&stored, age)
                );
                Ok(serve(&stored, age, &cx.cache.status(&params), ex.parts()))
            }
            // §5.2.2.2: a response that must be revalidated is never served
            // stale; without the origin, the answer is 504.
            Err(e)
                if stored.must_revalidate()
                    && e.source_side() == crate::error::ErrorSource::Upstream =>
            {
                Err(Error::new(
                    ErrorKind::UpstreamTimeout,
                    "cannot revalidate a must-revalidate response",
                )
                .with_cause(e))
            }
            Err(e) => Err(e),
        }
    }
}

impl Ctx<'_> {
    fn freshness(&self) -> Freshness {
        self.cache.freshness(self.rc)
    }

    /// RFC 9111 §3 for this request and a response, and rproxy's own rule:
    /// no storing a response that varies on a field the proxy itself set.
    fn may_store(
        &self,
        request: &HeaderMap,
        status: StatusCode,
        response: &HeaderMap,
        cc: &crate::cache::control::ResponseDirectives,
    ) -> std::result::Result<(), &'static str> {
        storable(
            &Method::GET,
            request,
            self.credentialed,
            &self.req_cc,
            status,
            response,
            cc,
            &self.freshness(),
        )?;
        if let crate::cache::entry::Vary::Fields(fields) =
            crate::cache::entry::Vary::of(response, request)
        {
            if fields.iter().any(|(n, _)| self.rc.proxy_fields.contains(n)) {
                return Err("vary on a field the proxy sets");
            }
        }
        Ok(())
    }

    /// The stored response for this request, if it may be used for it.
    fn lookup(&self, parts: &http::request::Parts) -> Lookup {
        match self.cache.lookup(&self.key, &parts.headers, &self.scope) {
            // §3.5: a response to a request with credentials is reused
            // only when it says so.
            Lookup::Hit(s) if self.credentialed && !s.serves_credentials() => Lookup::Unusable,
            other => other,
        }
    }

    /// `resp` with `Cache-Status`, and copied into the cache as it is sent
    /// if it may be stored.
    fn store(
        &self,
        resp: Response<ProxyBody>,
        parts: &http::request::Parts,
        request_time: SystemTime,
        fwd: &str,
        flight: Option<FlightGuard>,
    ) -> Response<ProxyBody> {
        let response_time = SystemTime::now();
        let status = resp.status();
        let freshness = self.freshness();
        let cc = freshness.directives(resp.headers());
        let decision = if parts.method == Method::GET {
            self.may_store(&parts.headers, status, resp.headers(), &cc)
        } else {
            Err("method")
        }
        .and_then(|()| {
            let useful = crate::cache::entry::lifetime(
                status,
                resp.headers(),
                &cc,
                crate::cache::entry::secs(response_time),
                &freshness,
            ) > 0
                || resp.headers().contains_key(header::ETAG)
                || resp.headers().contains_key(header::LAST_MODIFIED);
            let declared = resp
                .headers()
                .get(header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if declared.is_some_and(|n| n > self.cache.max_object_size) {
                Err("too large")
            } else if useful {
                Ok(())
            } else {
                Err("stale at once")
            }
        });
        let mut params = format!("{fwd}; fwd-status={}", status.as_u16());
        let (mut head, body) = resp.into_parts();
        let body = match decision {
            Ok(()) => {
                params.push_str("; stored");
                let fill = Fill {
                    cache: self.cache.clone(),
                    key: self.key.clone(),
                    since: self.since,
                    head: Some(FillHead {
                        status,
                        headers: head.headers.clone(),
                        request: parts.headers.clone(),
                        cc,
                        request_time,
                        response_time,
                        freshness,
                        scope: self.scope.clone(),
                    }),
                    buf: bytes::BytesMut::new(),
                    _flight: flight,
                };
                body.teeing(Box::new(fill))
            }
            Err(why) => {
                drop(flight);
                params.push_str(&format!("; detail=\"{why}\""));
                body
            }
        };
        append_status(&mut head.headers, &self.cache.status(&params));
        Response::from_parts(head, body)
    }
}

/// Replace the request's conditional fields with `with`; the ones it had.
fn swap_conditionals(
    headers: &mut HeaderMap,
    with: Vec<(HeaderName, HeaderValue)>,
) -> Vec<(HeaderName, HeaderValue)> {
    let mut had = Vec::new();
    for name in &CONDITIONALS {
        if let http::header::Entry::Occupied(e) = headers.entry(name) {
            let (name, values) = e.remove_entry_mult();
            had.extend(values.map(|v| (name.clone(), v)));
        }
    }
    for (name, value) in with {
        headers.append(name, value);
    }
    had
}

/// An entity tag without its weakness mark, for weak comparison (RFC 9110 §8.8.3.2).
fn opaque_tag(tag: &str) -> &str {
    tag.trim().trim_start_matches("W/")
}

/// The response's ETag, for weak comparison.
fn etag(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .map(opaque_tag)
}

/// Whether a 304 names a representation other than `stored` by its ETag.
fn other_validator(stored: &Stored, not_modified: &HeaderMap) -> bool {
    matches!((etag(&stored.headers), etag(not_modified)), (Some(a), Some(b)) if a != b)
}

/// The freshness left, in seconds (negative when stale), for `ttl=`.
fn ttl(stored: &Stored, age: u64) -> i64 {
    stored.lifetime as i64 - age as i64
}

/// A response from the store: with `Age` (RFC 9111 §5.1), `Cache-Status`,
/// and 304 when the client's own conditions hold (§4.3.2).
fn serve(
    stored: &Stored,
    age: u64,
    status_member: &str,
    parts: &http::request::Parts,
) -> Response<ProxyBody> {
    let mut headers = stored.headers.clone();
    headers.insert(header::AGE, HeaderValue::from(age));
    append_status(&mut headers, status_member);
    let not_modified = stored.status == StatusCode::OK && conditions_hold(stored, &parts.headers);
    let status = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        stored.status
    };
    let body = if not_modified || parts.method == Method::HEAD {
        if !not_modified && !headers.contains_key(header::CONTENT_LENGTH) {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(stored.body.len()));
        }
        ProxyBody::empty()
    } else {
        headers.remove(header::CONTENT_LENGTH);
        ProxyBody::full(stored.body.clone())
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// Whether the client's If-None-Match (weak comparison) or, without it,
/// If-Modified-Since says it has the stored response already.
fn conditions_hold(stored: &Stored, request: &HeaderMap) -> bool {
    let inm: Vec<&HeaderValue> = request.get_all(header::IF_NONE_MATCH).iter().collect();
    if !inm.is_empty() {
        let Some(have) = etag(&stored.headers) else {
            return false;
        };
        return inm
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim() == "*" || opaque_tag(t) == have);
    }
    let since = request.get(header::IF_MODIFIED_SINCE).and_then(date_of);
    let modified = stored.headers.get(header::LAST_MODIFIED).and_then(date_of);
    matches!((since, modified), (Some(s), Some(m)) if m <= s)
}

/// 504 for `only-if-cached` without a usable stored response (§5.2.1.7).
fn only_if_cached(cache: &Cache) -> Response<ProxyBody> {
    let mut resp = crate::response::plain(StatusCode::GATEWAY_TIMEOUT, "504 Gateway Timeout\n");
    append_status(resp.headers_mut(), &cache.status("detail=only-if-cached"));
    resp
}

/// Append this cache's member to `Cache-Status` (RFC 9211 §2: the cache
/// nearest the client comes last).
fn append_status(headers: &mut HeaderMap, member: &str) {
    let value = match headers.get(CACHE_STATUS).and_then(|v| v.to_str().ok()) {
        Some(existing) if !existing.trim().is_empty() => format!("{existing}, {member}"),
        _ => member.to_owned(),
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(CACHE_STATUS, v);
    }
}

fn with_status(mut resp: Response<ProxyBody>, member: &str) -> Response<ProxyBody> {
    append_status(resp.headers_mut(), member);
    resp
}

const CACHE_STATUS: HeaderName = HeaderName::from_static("cache-status");

impl Proxy {
    /// Answer `PURGE` when the cache is on (docs/caching.md): the target's
    /// key, or every key starting with it when the path ends with `*`;
    /// only from `[cache] purge_from`.
    pub(super) fn purge(
        &self,
        parts: &http::request::Parts,
        conn: &crate::server::ConnInfo,
    ) -> Option<Response<ProxyBody>> {
        let cache = self.cache.as_ref()?;
        if parts.method.as_str() != "PURGE" {
            return None;
        }
        let answer = |status: StatusCode, text: String| Some(crate::response::plain(status, text));
        if !cache.may_purge(conn.client.ip().to_canonical()) {
            return answer(StatusCode::FORBIDDEN, "403 Forbidden\n".to_owned());
        }
        let Some(key) = default_key(parts, conn.scheme) else {
            return answer(
                StatusCode::BAD_REQUEST,
                "400 Bad Request: no host\n".to_owned(),
            );
        };
        let purge = match key.strip_suffix('*') {
            Some(prefix) => crate::server::control::Purge::Prefix(prefix.to_owned()),
            None => crate::server::control::Purge::Key(key),
        };
        // The other workers purge theirs too; the answer counts this one's.
        let (purged, _) = self.purge_everywhere(&purge);
        if purged == 0 {
            return answer(StatusCode::NOT_FOUND, "nothing stored\n".to_owned());
        }
        answer(StatusCode::OK, format!("purged {purged}\n"))
    }
}
