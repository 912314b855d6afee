//! The HTTP cache (docs/caching.md): a shared cache by RFC 9111 whose store
//! is this worker's memory, bounded in bytes with S3-FIFO eviction.
//!
//! [`control`] parses the directives, [`entry`] holds a stored response and
//! RFC 9111's computations about it; this module keys, stores, coalesces
//! concurrent misses, invalidates and purges. The request path that uses
//! it is in `crate::proxy` (`Proxy::forward_cached`).

pub(crate) mod control;
pub(crate) mod entry;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, StatusCode, request};
use tokio::sync::watch;

use crate::config::CacheConfig;
use crate::net::Cidr;
pub(crate) use control::RequestDirectives;
use control::ResponseDirectives;
pub(crate) use entry::{Freshness, Stored};

/// The variants stored under one primary key (one per secondary key and
/// scope), newest last, at most [`MAX_VARIANTS`].
#[derive(Debug, Default)]
pub(crate) struct Variants(Vec<Arc<Stored>>);

/// Variants kept per key: beyond, the oldest goes (a client inventing
/// values of a field the origin varies on cannot grow a key without bound).
const MAX_VARIANTS: usize = 32;

#[derive(Clone)]
struct Weigh;

impl quick_cache::Weighter<String, Arc<Variants>> for Weigh {
    fn weight(&self, key: &String, val: &Arc<Variants>) -> u64 {
        key.len() as u64 + val.0.iter().map(|s| s.weight()).sum::<u64>()
    }
}

/// A route's cache settings.
#[derive(Debug, Clone)]
pub(crate) struct RouteCache {
    pub(crate) enabled: bool,
    pub(crate) ttl: Option<u64>,
    /// The route checks credentials: its requests count as carrying
    /// Authorization (RFC 9111 §3.5), whether or not it is forwarded.
    pub(crate) credentials: bool,
    /// Request fields the proxy sets, adds or removes on this route's way
    /// upstream (header rules, forwarding fields): a response that varies
    /// on one of them is not stored, since the client's value is not what
    /// the origin saw.
    pub(crate) proxy_fields: Arc<[http::HeaderName]>,
}

/// The cache of one worker.
pub(crate) struct Cache {
    store: quick_cache::sync::Cache<String, Arc<Variants>, Weigh>,
    flights: Mutex<HashMap<String, watch::Receiver<bool>>>,
    /// Bumped by every invalidation and purge: a fill that began before
    /// one is not stored (it may hold what was just invalidated).
    generation: std::sync::atomic::AtomicU64,
    /// Serialises changes of the store (read-modify-write of variants).
    writes: Mutex<()>,
    routes: Vec<RouteCache>,
    default: RouteCache,
    pub(crate) max_object_size: u64,
    pub(crate) lock_timeout: Duration,
    heuristic_max: u64,
    cdn: bool,
    /// The cache's name in `Cache-Status`.
    name: String,
    purge_from: Vec<Cidr>,
    /// The admin endpoint's address.
    pub(crate) admin: Option<std::net::SocketAddr>,
}

impl Cache {
    /// The cache of `cfg`, with each route's `cache` and `cache_ttl`.
    pub(crate) fn new(cfg: &CacheConfig, routes: Vec<RouteCache>) -> Self {
        let max_size = cfg.max_size.max(1);
        let max_object = cfg.max_object_size.min(max_size);
        let options = quick_cache::OptionsBuilder::new()
            .shards(1)
            .weight_capacity(max_size)
            .estimated_items_capacity(((max_size / 4096).clamp(16, 1 << 20)) as usize)
            .build()
            .unwrap_or_else(|_| unreachable!("valid cache options"));
        Cache {
            store: quick_cache::sync::Cache::with_options(
                options,
                Weigh,
                Default::default(),
                Default::default(),
            ),
            flights: Mutex::new(HashMap::new()),
            generation: std::sync::atomic::AtomicU64::new(0),
            writes: Mutex::new(()),
            routes,
            default: RouteCache {
                enabled: cfg.enabled,
                ttl: None,
                credentials: false,
                proxy_fields: Arc::new([]),
            },
            max_object_size: max_object,
            lock_timeout: cfg.lock_timeout,
            heuristic_max: cfg.heuristic_max.as_secs(),
            cdn: cfg.cdn_cache_control,
            name: cfg.name.clone(),
            purge_from: cfg.purge_from.clone(),
            admin: cfg.admin,
        }
    }

    /// The settings of route `index` (or of a route a hook made up).
    pub(crate) fn route(&self, index: Option<usize>) -> &RouteCache {
        index
            .and_then(|i| self.routes.get(i))
            .unwrap_or(&self.default)
    }

    /// How freshness is decided for route settings `rc`.
    pub(crate) fn freshness(&self, rc: &RouteCache) -> Freshness {
        Freshness {
            ttl: rc.ttl,
            heuristic_max: self.heuristic_max,
            cdn: self.cdn,
        }
    }

    /// The stored response for `key` that answers a request with `headers`
    /// in `scope`.
    pub(crate) fn lookup(&self, key: &str, headers: &HeaderMap, scope: &Scope) -> Lookup {
        match self.store.get(key) {
            None => Lookup::Miss,
            Some(variants) => variants
                .0
                .iter()
                .rev()
                .find(|s| s.scope == *scope && s.vary.matches(headers))
                .map_or(Lookup::VaryMiss, |s| Lookup::Hit(s.clone())),
        }
    }

    /// The current generation (see [`Cache::insert`]).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.writes
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn bump(&self) {
        self.generation
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Store `stored` under `key`, replacing the variant with the same
    /// secondary key.
    ///
    /// `since` is the generation when the response was asked for: if an
    /// invalidation or purge came after, the response is not stored.
    pub(crate) fn insert(&self, key: &str, stored: Stored, since: u64) {
        if stored.body.len() as u64 > self.max_object_size {
            return;
        }
        let _writing = self.lock();
        if self.generation() != since {
            return;
        }
        let mut variants: Vec<Arc<Stored>> = self
            .store
            .peek(key)
            .map(|v| v.0.clone())
            .unwrap_or_default();
        variants.retain(|s| s.vary != stored.vary || s.scope != stored.scope);
        if variants.len() >= MAX_VARIANTS {
            variants.remove(0);
        }
        variants.push(Arc::new(stored));
        self.store
            .insert(key.to_owned(), Arc::new(Variants(variants)));
    }

    /// Forget every response stored under `key`; whether there was one.
    pub(crate) fn invalidate(&self, key: &str) -> bool {
        let _writing = self.lock();
        self.bump();
        self.store.remove(key).is_some()
    }

    /// Forget the responses whose key starts with `prefix`; how many keys.
    pub(crate) fn purge_prefix(&self, prefix: &str) -> usize {
        let _writing = self.lock();
        self.bump();
        let n = std::sync::atomic::AtomicUsize::new(0);
        self.store.retain(|k, _| {
            let keep = !k.starts_with(prefix);
            n.fetch_add(usize::from(!keep), std::sync::atomic::Ordering::Relaxed);
            keep
        });
        n.into_inner()
    }

    /// What the store holds now.
    pub(crate) fn stats(&self) -> CacheStats {
        CacheStats {
            bytes: self.store.weight(),
            max_size: self.store.capacity(),
            keys: self.store.len() as u64,
        }
    }

    /// Whether `client` may send PURGE.
    pub(crate) fn may_purge(&self, client: std::net::IpAddr) -> bool {
        Cidr::any_contains(&self.purge_from, client)
    }

    /// Join the fetch of `key` in progress, or lead a new one. `Ok` is the
    /// leader's guard; `Err` a receiver that turns true when it ends.
    pub(crate) fn flight(
        self: &Arc<Self>,
        key: &str,
    ) -> Result<FlightGuard, watch::Receiver<bool>> {
        let mut flights = self
            .flights
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(rx) = flights.get(key) {
            if !*rx.borrow() {
                return Err(rx.clone());
            }
        }
        let (tx, rx) = watch::channel(false);
        flights.insert(key.to_owned(), rx);
        Ok(FlightGuard {
            cache: self.clone(),
            key: key.to_owned(),
            tx,
        })
    }

    /// A `Cache-Status` member (RFC 9211) with `params`.
    pub(crate) fn status(&self, params: &str) -> String {
        if params.is_empty() {
            self.name.clone()
        } else {
            format!("{}; {params}", self.name)
        }
    }
}

/// The store's figures (`Engine.cache_stats()`, the workers' statistics).
#[derive(Debug, Clone, serde::Serialize)]
pub struct CacheStats {
    /// Bytes held (bodies, fields and keys, roughly).
    pub bytes: u64,
    /// The bound on `bytes`.
    pub max_size: u64,
    /// Keys stored.
    pub keys: u64,
}

/// What else than the key and the Vary fields a stored response depends on:
/// the route and pool that produced it, and the forwarding fields a trusted
/// proxy sent (passed upstream, so the origin may have answered by them).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Scope {
    pub(crate) route: Option<usize>,
    pub(crate) pool: String,
    pub(crate) forwarded: Option<String>,
}

impl Scope {
    /// The scope of a request routed to `route` and `pool`.
    pub(crate) fn of(
        route: Option<usize>,
        pool: &str,
        parts: &request::Parts,
        trusted: bool,
    ) -> Self {
        let forwarded = trusted
            .then(|| {
                let mut text = String::new();
                for name in ["x-forwarded-proto", "x-forwarded-host", "forwarded"] {
                    for v in parts.headers.get_all(name) {
                        text.push_str(name);
                        text.push(':');
                        text.push_str(&String::from_utf8_lossy(v.as_bytes()));
                        text.push('\n');
                    }
                }
                text
            })
            .filter(|t| !t.is_empty());
        Scope {
            route,
            pool: pool.to_owned(),
            forwarded,
        }
    }
}

/// What a lookup found.
pub(crate) enum Lookup {
    /// Nothing under the key.
    Miss,
    /// Responses under the key, none for this request's secondary key.
    VaryMiss,
    /// A stored response for the request.
    Hit(Arc<Stored>),
    /// A stored response this request may not be given (credentials, §3.5).
    Unusable,
}

/// The leader of a fetch: when dropped (the response stored or not), the
/// requests waiting for it look again.
pub(crate) struct FlightGuard {
    cache: Arc<Cache>,
    key: String,
    tx: watch::Sender<bool>,
}

impl Drop for FlightGuard {
    fn drop(&mut self) {
        if let Ok(mut flights) = self.cache.flights.lock() {
            flights.remove(&self.key);
        }
        let _ = self.tx.send(true);
    }
}

/// The primary key of a request (docs/caching.md): scheme, host and port,
/// path and query — `None` when the request names no host.
pub(crate) fn default_key(parts: &request::Parts, scheme: &str) -> Option<String> {
    let authority = parts
        .uri
        .authority()
        .map(|a| a.as_str().to_owned())
        .or_else(|| {
            parts
                .headers
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(str::to_owned)
        })?;
    let authority = authority.to_ascii_lowercase();
    let default_port = if scheme == "https" { 443 } else { 80 };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, "")) if !h.is_empty() => (h, default_port),
        Some((h, p)) if !h.is_empty() && !p.contains(']') => (h, p.parse().ok()?),
        _ => (authority.as_str(), default_port),
    };
    let host = host.trim_end_matches('.');
    if host.is_empty() {
        return None;
    }
    let path = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    Some(format!("{scheme}://{host}:{port}{path}"))
}

/// The key of a URI reference in `Location` or `Content-Location`, if it
/// names the same host as `key` (RFC 9111 §4.4: only same-origin
/// references are invalidated).
pub(crate) fn related_key(key: &str, reference: &HeaderValue) -> Option<String> {
    let reference = reference.to_str().ok()?.trim();
    let origin_end = key.find("://").map(|i| i + 3)?;
    let path_start = key[origin_end..].find('/').map(|i| i + origin_end)?;
    let origin = &key[..path_start];
    if reference.starts_with('/') && !reference.starts_with("//") {
        return Some(format!("{origin}{reference}"));
    }
    let uri: http::Uri = reference.parse().ok()?;
    let scheme = uri.scheme_str()?;
    let authority = uri.authority()?;
    let port = authority
        .port_u16()
        .unwrap_or(if scheme == "https" { 443 } else { 80 });
    let candidate = format!(
        "{scheme}://{}:{port}{}",
        authority.host().to_ascii_lowercase(),
        uri.path_and_query().map_or("/", |pq| pq.as_str())
    );
    let same_origin = candidate
        .strip_prefix(origin)
        .is_some_and(|rest| rest.starts_with('/'));
    same_origin.then_some(candidate)
}

/// A response being stored as it streams to the client.
pub(crate) struct Fill {
    pub(crate) cache: Arc<Cache>,
    pub(crate) key: String,
    /// The generation when the response was asked for.
    pub(crate) since: u64,
    pub(crate) head: Option<FillHead>,
    pub(crate) buf: BytesMut,
    /// The fetch this fill ends (dropped after the store).
    pub(crate) _flight: Option<FlightGuard>,
}

/// Everything of the response to store but its body.
pub(crate) struct FillHead {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) request: HeaderMap,
    pub(crate) cc: ResponseDirectives,
    pub(crate) request_time: SystemTime,
    pub(crate) response_time: SystemTime,
    pub(crate) freshness: Freshness,
    pub(crate) scope: Scope,
}

impl crate::body::Tee for Fill {
    fn data(&mut self, data: &Bytes) -> bool {
        if (self.buf.len() + data.len()) as u64 > self.cache.max_object_size {
            self.head = None;
            return false;
        }
        self.buf.extend_from_slice(data);
        true
    }

    fn end(mut self: Box<Self>) {
        if let Some(h) = self.head.take() {
            let body = std::mem::take(&mut self.buf).freeze();
            let mut stored = Stored::new(
                h.status,
                h.headers,
                body,
                &h.request,
                h.cc,
                h.request_time,
                h.response_time,
                &h.freshness,
            );
            stored.scope = h.scope;
            self.cache.insert(&self.key, stored, self.since);
        }
    }
}

/// Whether `method` is safe (RFC 9110 §9.2.1): other methods invalidate.
pub(crate) fn is_safe(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(target: &str, host: Option<&str>) -> request::Parts {
        let mut b = http::Request::builder().uri(target);
        if let Some(h) = host {
            b = b.header("host", h);
        }
        b.body(()).expect("request").into_parts().0
    }

    #[test]
    fn keys_name_the_host_and_port() {
        assert_eq!(
            default_key(&parts("/a?b=1", Some("Example.COM")), "http").as_deref(),
            Some("http://example.com:80/a?b=1")
        );
        assert_eq!(
            default_key(&parts("/", Some("example.com:8080")), "https").as_deref(),
            Some("https://example.com:8080/")
        );
        assert_eq!(
            default_key(&parts("/", Some("[::1]")), "http").as_deref(),
            Some("http://[::1]:80/")
        );
        assert_eq!(default_key(&parts("/", None), "http"), None);
        assert_eq!(
            default_key(&parts("/", Some("h.example.:81")), "http").as_deref(),
            Some("http://h.example:81/")
        );
        assert_eq!(
            default_key(&parts("/", Some("h.example:")), "http").as_deref(),
            Some("http://h.example:80/")
        );
    }

    #[test]
    fn related_keys_stay_on_the_origin() {
        let key = "http://example.com:80/a/b";
        let v = |s: &'static str| HeaderValue::from_static(s);
        assert_eq!(
            related_key(key, &v("/c")).as_deref(),
            Some("http://example.com:80/c")
        );
        assert_eq!(
            related_key(key, &v("http://example.com/d?x")).as_deref(),
            Some("http://example.com:80/d?x")
        );
        assert_eq!(related_key(key, &v("http://other.example/d")), None);
        assert_eq!(related_key(key, &v("//other.example/d")), None);
        assert_eq!(related_key(key, &v("http://example.com:8080/d")), None);
    }
}
