//! The engine's configuration: the validated, normalised form of
//! `proxy.toml` that Python hands over as JSON.
//!
//! Python (`rproxy.config`) owns the user-facing format: units, defaults,
//! error messages with file and line. By the time a value reaches this module
//! it is plain numbers (durations in milliseconds, sizes in bytes) and
//! resolved socket addresses, so deserialising can only fail on a bug.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// Everything one worker process needs to run.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineConfig {
    /// Listener and downstream connection settings.
    pub server: ServerConfig,
    /// Named pools of upstream servers.
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// Routes, tried in order; the first match wins.
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// The built-ins whose compiled (native) form the engine runs, e.g.
    /// `router`; the others' Python reference implementations run as hooks.
    #[serde(default = "all_natives")]
    pub natives: Vec<String>,
    /// `[headers]`: global header rules, hidden fields, security preset.
    #[serde(default)]
    pub headers: HeadersConfig,
    /// `[cors]`: CORS for every route that does not say otherwise.
    #[serde(default)]
    pub cors: Option<CorsConfig>,
    /// `[auth.NAME]`: credential policies routes refer to by name.
    #[serde(default)]
    pub auth: BTreeMap<String, AuthConfig>,
    /// `[cache]`: the HTTP cache, when configured.
    #[serde(default)]
    pub cache: Option<CacheConfig>,
}

/// `[cache]` (docs/caching.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Whether routes cache unless they say `cache = false`.
    #[serde(default)]
    pub enabled: bool,
    /// The store's bound, in bytes (per worker).
    #[serde(default = "mib256")]
    pub max_size: u64,
    /// The largest response stored, in bytes.
    #[serde(default = "mib8")]
    pub max_object_size: u64,
    /// How long a request waits for a fetch of the same key in progress.
    #[serde(with = "millis", default = "d5s")]
    pub lock_timeout: Duration,
    /// The longest heuristic freshness lifetime.
    #[serde(with = "millis", default = "d1day")]
    pub heuristic_max: Duration,
    /// The cache's name in `Cache-Status`.
    #[serde(default = "rproxy_name")]
    pub name: String,
    /// Clients allowed to send PURGE.
    #[serde(default, deserialize_with = "cidrs")]
    pub purge_from: Vec<crate::net::Cidr>,
    /// Obey `CDN-Cache-Control` (RFC 9213) over `Cache-Control` and `Expires`.
    #[serde(default)]
    pub cdn_cache_control: bool,
    /// Where to serve the admin endpoint (purge, statistics), if anywhere.
    #[serde(default)]
    pub admin: Option<SocketAddr>,
}

/// One `[auth.NAME]` policy (docs/auth.md), files already read.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum AuthConfig {
    /// API keys in a header field or query parameter.
    ApiKey {
        /// The field carrying the key (lower-case), or `None` with `query`.
        header: Option<String>,
        /// The query parameter carrying the key.
        query: Option<String>,
        /// Holder names and the hex SHA-256 digests of their keys.
        keys: Vec<(String, String)>,
        /// The realm in the challenge.
        realm: String,
        /// Send the key's header field upstream.
        forward_credentials: bool,
    },
    /// HTTP Basic against htpasswd entries.
    Basic {
        /// User names and their hashes.
        users: Vec<(String, String)>,
        /// The realm in the challenge.
        realm: String,
        /// Send `Authorization` upstream.
        forward_credentials: bool,
    },
    /// JWT bearer tokens.
    Jwt {
        /// Accepted `alg` values.
        algorithms: Vec<String>,
        /// Verification keys as JWKs (RFC 7517), PEM keys converted.
        keys: Vec<serde_json::Value>,
        /// Required `iss`.
        issuer: Option<String>,
        /// Accepted `aud` values (empty: not checked).
        audience: Vec<String>,
        /// Allowed clock skew, in seconds.
        leeway: f64,
        /// The realm in the challenge.
        realm: String,
        /// Send `Authorization` upstream.
        forward_credentials: bool,
    },
    /// A subrequest to an auth service.
    Forward {
        /// The auth service's pool.
        upstream: String,
        /// The path asked.
        path: String,
        /// Request fields passed on (lower-case).
        send_headers: Vec<String>,
        /// Answer fields copied onto the upstream request (lower-case).
        copy_headers: Vec<String>,
        /// How long a decision is remembered (0: not at all).
        #[serde(with = "millis")]
        cache: Duration,
        /// Send `Authorization` upstream.
        forward_credentials: bool,
    },
}

fn all_natives() -> Vec<String> {
    ["router", "headers", "auth", "balancer", "cache"]
        .map(str::to_owned)
        .to_vec()
}

/// `[headers]` (docs/headers.md).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeadersConfig {
    /// Response fields removed before the client sees them (lower-case).
    pub hide: Vec<String>,
    /// The security-header preset, when on.
    pub security: Option<SecurityConfig>,
    /// Rules for every request sent upstream.
    pub request: RulesConfig,
    /// Rules for every response sent to the client.
    pub response: RulesConfig,
}

/// A rule set: remove, then set, then add.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Field names to remove (lower-case).
    pub remove: Vec<String>,
    /// Fields to replace: name and value template.
    pub set: Vec<(String, String)>,
    /// Fields to append: name and value template.
    pub add: Vec<(String, String)>,
}

/// The security-header preset; an empty value leaves that field out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecurityConfig {
    /// `Strict-Transport-Security`, sent over TLS only.
    pub hsts: String,
    /// `X-Content-Type-Options`.
    pub content_type_options: String,
    /// `X-Frame-Options` (`DENY` or `SAMEORIGIN`).
    pub frame_options: String,
    /// `Referrer-Policy`.
    pub referrer_policy: String,
    /// `Content-Security-Policy`.
    pub csp: String,
}

/// CORS for a route (docs/headers.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CorsConfig {
    /// Allowed origins, or `["*"]`.
    pub origins: Vec<String>,
    /// Methods a preflight allows.
    pub methods: Vec<String>,
    /// Request fields a preflight allows, or `["*"]` for whatever it asks.
    pub headers: Vec<String>,
    /// Response fields exposed to scripts.
    pub expose: Vec<String>,
    /// Whether credentials are allowed.
    pub credentials: bool,
    /// How long a preflight may be cached, in seconds.
    pub max_age: Option<u64>,
}

/// A route's CORS setting: `false` turns CORS off, a table replaces the
/// global one, `null` (absent) inherits it.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum RouteCors {
    /// `false`.
    Off(bool),
    /// The route's own.
    Own(CorsConfig),
}

/// `[server]`: listeners, downstream timeouts and limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Addresses to listen on (port 0 picks a free port).
    pub listen: Vec<SocketAddr>,
    /// Tokio worker threads in this process; 1 runs a single-threaded runtime.
    #[serde(default = "one")]
    pub threads: usize,
    /// Time allowed for a request's header section, from its first byte (slowloris bound).
    #[serde(with = "millis", default = "d10s")]
    pub client_header_timeout: Duration,
    /// Time allowed between two reads of a request body.
    #[serde(with = "millis", default = "d60s")]
    pub client_body_timeout: Duration,
    /// Time a write to the client may make no progress (the client stopped reading).
    #[serde(with = "millis", default = "d60s")]
    pub send_timeout: Duration,
    /// Time an idle keep-alive connection is kept open.
    #[serde(with = "millis", default = "d60s")]
    pub keepalive_timeout: Duration,
    /// Largest request body accepted (413 beyond).
    #[serde(default = "mib128")]
    pub max_body_size: u64,
    /// Largest request header section, request line included (431 beyond).
    #[serde(default = "kib64")]
    pub max_header_bytes: usize,
    /// Most header fields in one request (431 beyond).
    #[serde(default = "hundred")]
    pub max_headers: usize,
    /// Longest request target (414 beyond).
    #[serde(default = "kib8")]
    pub max_uri_size: usize,
    /// Most simultaneous downstream connections in this process.
    #[serde(default = "ten_thousand")]
    pub max_connections: usize,
    /// Grace period for in-flight requests when stopping.
    #[serde(with = "millis", default = "d10s")]
    pub shutdown_timeout: Duration,
    /// Bytes of a request body read before the upstream is chosen; a body
    /// that ends within it is sent with a Content-Length and can be retried.
    #[serde(default = "kib64")]
    pub request_buffer_size: usize,
    /// Peers whose forwarding fields (X-Forwarded-*, Forwarded) are believed
    /// and extended; from anyone else they are replaced.
    #[serde(default, deserialize_with = "cidrs")]
    pub trusted_proxies: Vec<crate::net::Cidr>,
    /// Where to write hook statistics every second (JSON), if anywhere.
    #[serde(default)]
    pub stats_file: Option<std::path::PathBuf>,
}

/// `[upstreams.NAME]`: one pool of servers and how to talk to them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The pool's servers, in configured order.
    pub servers: Vec<ServerEntry>,
    /// How a server is chosen for a request.
    #[serde(default)]
    pub balance: Balance,
    /// With `balance = "hash"`: what is hashed.
    #[serde(default)]
    pub hash_key: Option<HashKey>,
    /// Further attempts after a failed one, each on another server.
    #[serde(default = "two")]
    pub retries: u32,
    /// Retries may be at most this share of the pool's requests.
    #[serde(default = "fifth")]
    pub retry_budget: f64,
    /// Retries allowed per second whatever the share.
    #[serde(default = "ten")]
    pub retry_budget_min: u32,
    /// Concurrent requests to the pool (0: no limit).
    #[serde(default)]
    pub max_requests: u32,
    /// Concurrent requests to one server (0: no limit).
    #[serde(default)]
    pub max_requests_per_server: u32,
    /// Requests that may wait for capacity at a limit.
    #[serde(default)]
    pub max_pending: u32,
    /// How long such a request waits.
    #[serde(with = "millis", default = "d1s")]
    pub queue_timeout: Duration,
    /// Consecutive failures that eject a server (0: passive checks off).
    #[serde(default = "five")]
    pub max_fails: u32,
    /// Count 5xx responses as failures.
    #[serde(default)]
    pub fail_on_5xx: bool,
    /// The first ejection's length, doubled on each repeat.
    #[serde(with = "millis", default = "d10s")]
    pub eject_time: Duration,
    /// The longest ejection.
    #[serde(with = "millis", default = "d300s")]
    pub eject_time_max: Duration,
    /// At most this share of the pool is ejected at once.
    #[serde(default = "fifty")]
    pub max_ejected_percent: u32,
    /// A recovered server's weight ramps up over this time.
    #[serde(with = "millis", default)]
    pub slow_start: Duration,
    /// Active health checks.
    #[serde(default)]
    pub health_check: Option<HealthCheckConfig>,
    /// Time allowed to establish a connection (502 beyond).
    #[serde(with = "millis", default = "d2s")]
    pub connect_timeout: Duration,
    /// Time allowed from the request being sent to the response headers (504 beyond).
    #[serde(with = "millis", default = "d30s")]
    pub response_timeout: Duration,
    /// Time allowed between two reads of a response body, or two writes of a request body.
    #[serde(with = "millis", default = "d60s")]
    pub body_idle_timeout: Duration,
    /// Idle keep-alive connections kept per server.
    #[serde(default = "sixty_four")]
    pub keepalive: usize,
    /// Time an idle upstream connection is kept.
    #[serde(with = "millis", default = "d60s")]
    pub keepalive_timeout: Duration,
    /// Requests sent over one upstream connection before it is closed.
    #[serde(default = "thousand")]
    pub keepalive_requests: u32,
    /// Header rules for requests sent to this pool.
    #[serde(default)]
    pub request_headers: RulesConfig,
    /// Header rules for responses that came from this pool.
    #[serde(default)]
    pub response_headers: RulesConfig,
}

/// One server of a pool: an address, or an address with a weight and a
/// backup flag.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum ServerEntry {
    /// `"host:port"`: weight 1, not a backup.
    Addr(SocketAddr),
    /// The table form.
    Full {
        /// The address.
        addr: SocketAddr,
        /// Its share relative to the others (1–100).
        #[serde(default = "one_u32")]
        weight: u32,
        /// Used only when every primary server is down.
        #[serde(default)]
        backup: bool,
    },
}

impl ServerEntry {
    /// The address, weight and backup flag.
    pub fn parts(&self) -> (SocketAddr, u32, bool) {
        match *self {
            ServerEntry::Addr(a) => (a, 1, false),
            ServerEntry::Full {
                addr,
                weight,
                backup,
            } => (addr, weight.clamp(1, 100), backup),
        }
    }
}

/// A pool's selection algorithm (docs/load-balancing.md).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Balance {
    /// Round robin, smooth weighted when weights differ.
    #[default]
    RoundRobin,
    /// Fewest requests in flight relative to weight.
    LeastConn,
    /// The less loaded of two random servers.
    RandomTwo,
    /// Consistent hashing of a request key.
    Hash,
    /// The first eligible server in configured order.
    First,
}

/// What `balance = "hash"` hashes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, tag = "kind", rename_all = "snake_case")]
pub enum HashKey {
    /// The client address (after `trusted_proxies`).
    ClientIp,
    /// A request header field (lower-case name).
    Header {
        /// The field.
        name: String,
    },
    /// A cookie.
    Cookie {
        /// The cookie.
        name: String,
    },
}

/// `[upstreams.NAME.health_check]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `http` or `tcp`.
    #[serde(rename = "type")]
    pub kind: HealthCheckKind,
    /// The path asked (http).
    #[serde(default = "slash")]
    pub path: String,
    /// The `Host` sent (http); default the server's address.
    #[serde(default)]
    pub host: Option<String>,
    /// Accepted statuses, inclusive.
    #[serde(default = "ok_range")]
    pub status: (u16, u16),
    /// Time between checks.
    #[serde(with = "millis", default = "d5s")]
    pub interval: Duration,
    /// Time one check may take.
    #[serde(with = "millis", default = "d2s")]
    pub timeout: Duration,
    /// Consecutive successes that bring a down server up.
    #[serde(default = "two")]
    pub rise: u32,
    /// Consecutive failures that take an up server down.
    #[serde(default = "three")]
    pub fall: u32,
}

/// How a health check probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// An HTTP request.
    Http,
    /// A TCP connect.
    Tcp,
}

/// One `[[routes]]` entry (see docs/routing.md for what each key means).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// The route's name, for logs and `$route`.
    pub name: String,
    /// Hosts (lower-case; `*.example.com` for any subdomain); empty = any.
    pub hosts: Vec<String>,
    /// The normalised path equals this.
    pub path: Option<String>,
    /// The normalised path starts with this.
    pub path_prefix: Option<String>,
    /// A regular expression finds a match in the normalised path.
    pub path_regex: Option<String>,
    /// The method is one of these; empty = any.
    pub methods: Vec<String>,
    /// Conditions on header fields (names lower-case).
    pub headers: Vec<FieldCondConfig>,
    /// Conditions on query parameters.
    pub query: Vec<FieldCondConfig>,
    /// Forward to this pool.
    pub upstream: Option<String>,
    /// Or forward to one of these pools, by weight.
    pub split: Vec<SplitConfig>,
    /// Choose the split's pool by a hash of this cookie.
    pub sticky_cookie: Option<String>,
    /// Or of this header field (lower-case).
    pub sticky_header: Option<String>,
    /// Remove `path_prefix` from the path sent upstream.
    pub strip_prefix: bool,
    /// Send this path (a template) instead.
    pub rewrite: Option<String>,
    /// Send this `Host` (a template) upstream.
    pub upstream_host: Option<String>,
    /// Or answer with a redirect.
    pub redirect: Option<RedirectConfig>,
    /// Or answer directly.
    pub respond: Option<RespondConfig>,
    /// Header rules for requests this route forwards.
    pub request_headers: RulesConfig,
    /// Header rules for this route's responses.
    pub response_headers: RulesConfig,
    /// This route's CORS: inherited when absent.
    pub cors: Option<RouteCors>,
    /// Credential policies, any one of which lets a request through.
    pub auth: Vec<String>,
    /// Client networks let through (empty: all).
    #[serde(deserialize_with = "cidrs")]
    pub allow: Vec<crate::net::Cidr>,
    /// Client networks refused (checked first).
    #[serde(deserialize_with = "cidrs")]
    pub deny: Vec<crate::net::Cidr>,
    /// Whether this route caches (`None`: as `[cache] enabled` says).
    pub cache: Option<bool>,
    /// Freshness lifetime for responses that state none, in milliseconds.
    pub cache_ttl: Option<u64>,
}

/// A condition on a header field or query parameter.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FieldCondConfig {
    /// Field or parameter name.
    pub name: String,
    /// `present`, `absent`, `equals` or `regex`.
    pub cond: String,
    /// The value compared with, or the expression.
    #[serde(default)]
    pub value: String,
}

/// One pool of a weighted split.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitConfig {
    /// The pool.
    pub upstream: String,
    /// Its share.
    pub weight: u32,
}

/// A redirect a route answers with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RedirectConfig {
    /// 301, 302, 303, 307 or 308.
    pub status: u16,
    /// The `Location` template.
    pub location: String,
}

/// A response the proxy sends itself.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RespondConfig {
    /// Status code.
    pub status: u16,
    /// Response body.
    #[serde(default)]
    pub body: String,
    /// Response headers, in order.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
}

impl EngineConfig {
    /// Parse the JSON form produced by `rproxy.config`.
    pub fn from_json(text: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(text)
    }
}

fn one() -> usize {
    1
}
fn hundred() -> usize {
    100
}
fn sixty_four() -> usize {
    64
}
fn thousand() -> u32 {
    1000
}
fn one_u32() -> u32 {
    1
}
fn two() -> u32 {
    2
}
fn three() -> u32 {
    3
}
fn five() -> u32 {
    5
}
fn ten() -> u32 {
    10
}
fn fifty() -> u32 {
    50
}
fn fifth() -> f64 {
    0.2
}
fn slash() -> String {
    "/".to_owned()
}
fn ok_range() -> (u16, u16) {
    (200, 399)
}
fn mib8() -> u64 {
    8 << 20
}
fn mib256() -> u64 {
    256 << 20
}
fn d1day() -> Duration {
    Duration::from_secs(86400)
}
fn rproxy_name() -> String {
    "rproxy".to_owned()
}
fn d1s() -> Duration {
    Duration::from_secs(1)
}
fn d5s() -> Duration {
    Duration::from_secs(5)
}
fn d300s() -> Duration {
    Duration::from_secs(300)
}
fn ten_thousand() -> usize {
    10_000
}
fn kib8() -> usize {
    8 * 1024
}
fn kib64() -> usize {
    64 * 1024
}
fn mib128() -> u64 {
    128 * 1024 * 1024
}
fn d2s() -> Duration {
    Duration::from_secs(2)
}
fn d10s() -> Duration {
    Duration::from_secs(10)
}
fn d30s() -> Duration {
    Duration::from_secs(30)
}
fn d60s() -> Duration {
    Duration::from_secs(60)
}

fn cidrs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<crate::net::Cidr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.parse().map_err(serde::de::Error::custom))
        .collect()
}

mod millis {
    use super::*;

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimal_config_gets_defaults() {
        let cfg = EngineConfig::from_json(
            r#"{"server": {"listen": ["127.0.0.1:0"]},
                "upstreams": {"app": {"servers": ["127.0.0.1:9000"], "connect_timeout": 500}},
                "routes": [{"path_prefix": "/", "upstream": "app"}]}"#,
        )
        .expect("valid config");
        assert_eq!(cfg.server.client_header_timeout, Duration::from_secs(10));
        assert_eq!(cfg.server.max_header_bytes, 65536);
        assert_eq!(cfg.server.max_body_size, 128 << 20);
        let app = &cfg.upstreams["app"];
        assert_eq!(app.connect_timeout, Duration::from_millis(500));
        assert_eq!(app.response_timeout, Duration::from_secs(30));
        assert_eq!(cfg.routes[0].upstream.as_deref(), Some("app"));
        assert_eq!(cfg.routes[0].path_prefix.as_deref(), Some("/"));
        assert!(cfg.routes[0].hosts.is_empty());
        assert_eq!(
            cfg.natives,
            ["router", "headers", "auth", "balancer", "cache"]
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let err = EngineConfig::from_json(r#"{"server": {"listen": [], "lisen": 1}}"#)
            .expect_err("unknown key");
        assert!(err.to_string().contains("lisen"), "{err}");
    }
}
