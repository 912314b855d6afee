//! The built-in router: the `[[routes]]` table, compiled. Routes are tried
//! in the order written and the first whose conditions all hold wins
//! (docs/routing.md). An index by host and path keeps the cost flat as the
//! table grows: a request looks only at the routes it could match.

mod index;
mod normalize;
mod template;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode, request};
use regex::Regex;

use crate::body::ProxyBody;
use crate::config::{FieldCondConfig, RouteConfig};
use crate::response::LocalResponse;
use crate::upstream::Upstream;
use index::Index;

pub(crate) use normalize::{normalize_path, query_params, request_host};
use template::Vars;
pub(crate) use template::{Source, Template, Var};

/// Compile a configured regular expression, or say why it is not accepted.
pub(crate) fn compile_regex(pattern: &str) -> std::result::Result<Regex, String> {
    regex::RegexBuilder::new(pattern)
        .size_limit(1 << 20)
        .build()
        .map_err(|e| match e {
            regex::Error::Syntax(s) => s.lines().last().unwrap_or("syntax error").trim().to_owned(),
            regex::Error::CompiledTooBig(_) => "the expression is too large".to_owned(),
            other => other.to_string(),
        })
}

/// A condition on the path.
enum PathCond {
    Any,
    Exact(String),
    Prefix(String),
    Regex(Regex),
}

/// A condition on a header field or query parameter.
enum Cond {
    Present,
    Absent,
    Equals(String),
    Regex(Regex),
}

impl Cond {
    /// Whether `values` (every occurrence of the field) satisfy it.
    fn holds<V: AsRef<str>>(&self, mut values: impl Iterator<Item = V>) -> bool {
        match self {
            Cond::Present => values.next().is_some(),
            Cond::Absent => values.next().is_none(),
            Cond::Equals(want) => values.any(|v| v.as_ref() == want),
            Cond::Regex(re) => values.any(|v| re.is_match(v.as_ref())),
        }
    }
}

/// A forwarding action: one pool, or a weighted split.
pub(crate) struct Forward {
    pools: Vec<Arc<Upstream>>,
    /// Smooth weighted round-robin order of `pools` indices, one per unit of weight.
    schedule: Vec<u16>,
    /// Prefix sums of the weights, for sticky choices.
    bounds: Vec<u64>,
    next: AtomicUsize,
    sticky: Sticky,
    strip_prefix: bool,
    rewrite: Option<Template>,
    upstream_host: Option<Template>,
}

enum Sticky {
    None,
    Cookie(String),
    Header(HeaderName),
}

/// What a matching route does.
pub(crate) enum Action {
    /// Forward to a pool.
    Forward(Forward),
    /// Answer with a redirect to the expanded location.
    Redirect(StatusCode, Template),
    /// Answer with this response.
    Respond(LocalResponse),
}

/// One compiled route.
pub(crate) struct Route {
    name: Arc<str>,
    hosts: Vec<String>,
    path: PathCond,
    methods: Vec<Method>,
    headers: Vec<(HeaderName, Cond)>,
    query: Vec<(String, Cond)>,
    pub(crate) action: Action,
}

/// What routing decided for a request.
pub(crate) enum Decision<'a> {
    /// Forward to `upstream`, with a new target and `Host` when rewritten.
    Forward {
        upstream: &'a Arc<Upstream>,
        path: Option<String>,
        host: Option<String>,
    },
    /// Answer with this configured response.
    Respond(&'a LocalResponse),
    /// Answer with this response (a redirect).
    Answer(Response<ProxyBody>),
}

/// The request as routes see it.
pub(crate) struct Subject<'a> {
    parts: &'a request::Parts,
    scheme: &'a str,
    host: std::borrow::Cow<'a, str>,
    path: std::borrow::Cow<'a, str>,
    query: std::cell::OnceCell<Vec<(std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)>>,
}

impl<'a> Subject<'a> {
    /// `parts`, received over `scheme`, prepared for matching; `Err` when
    /// its path cannot be normalised (the request gets 400).
    pub(crate) fn new(parts: &'a request::Parts, scheme: &'a str) -> Result<Self, &'static str> {
        Ok(Subject {
            parts,
            scheme,
            host: request_host(parts),
            path: normalize_path(parts.uri.path())?,
            query: std::cell::OnceCell::new(),
        })
    }

    fn params(&self) -> &[(std::borrow::Cow<'a, str>, std::borrow::Cow<'a, str>)] {
        self.query
            .get_or_init(|| self.parts.uri.query().map(query_params).unwrap_or_default())
    }
}

impl Route {
    /// Whether every condition but the host holds (the index checked it).
    fn matches(&self, s: &Subject<'_>) -> bool {
        let path_ok = match &self.path {
            PathCond::Any => true,
            PathCond::Exact(p) => *s.path == **p,
            PathCond::Prefix(p) => s.path.starts_with(p.as_str()),
            PathCond::Regex(re) => re.is_match(&s.path),
        };
        path_ok
            && (self.methods.is_empty() || self.methods.contains(&s.parts.method))
            && self.headers.iter().all(|(name, cond)| {
                cond.holds(
                    s.parts
                        .headers
                        .get_all(name)
                        .iter()
                        .map(|v| String::from_utf8_lossy(v.as_bytes())),
                )
            })
            && self.query.iter().all(|(name, cond)| {
                cond.holds(
                    s.params()
                        .iter()
                        .filter(|(n, _)| n == name)
                        .map(|(_, v)| v.as_ref()),
                )
            })
    }

    fn host_matches(&self, host: &str) -> bool {
        self.hosts.is_empty()
            || self.hosts.iter().any(|h| match h.strip_prefix('*') {
                Some(suffix) => host.len() > suffix.len() && host.ends_with(suffix),
                None => h == host,
            })
    }

    /// The decision of this (matching) route for `s`.
    fn decide(&self, s: &Subject<'_>) -> Decision<'_> {
        match &self.action {
            Action::Respond(local) => Decision::Respond(local),
            Action::Redirect(status, location) => {
                let groups = self.groups(s);
                let location = location.expand(&self.vars(s, &groups));
                let mut resp = Response::new(ProxyBody::empty());
                *resp.status_mut() = *status;
                if let Ok(v) = HeaderValue::try_from(location) {
                    resp.headers_mut().insert(header::LOCATION, v);
                }
                Decision::Answer(resp)
            }
            Action::Forward(f) => {
                let upstream = &f.pools[f.choose(s.parts)];
                let needs_vars = f.rewrite.is_some() || f.upstream_host.is_some();
                let groups = if needs_vars {
                    self.groups(s)
                } else {
                    Vec::new()
                };
                let vars = self.vars(s, &groups);
                let query = s.parts.uri.query();
                let path = if f.strip_prefix {
                    let PathCond::Prefix(prefix) = &self.path else {
                        unreachable!("strip_prefix needs path_prefix (checked when compiled)")
                    };
                    let rest = &s.path[prefix.len()..];
                    let mut p = String::with_capacity(rest.len() + 2);
                    if !rest.starts_with('/') {
                        p.push('/');
                    }
                    p.push_str(rest);
                    Some(with_query(p, query))
                } else {
                    f.rewrite.as_ref().map(|t| {
                        let p = t.expand(&vars);
                        if t.has_query() {
                            p
                        } else {
                            with_query(p, query)
                        }
                    })
                };
                let host = f.upstream_host.as_ref().map(|t| t.expand(&vars));
                Decision::Forward {
                    upstream,
                    path,
                    host,
                }
            }
        }
    }

    fn groups(&self, s: &Subject<'_>) -> Vec<Option<(usize, usize)>> {
        match &self.path {
            PathCond::Regex(re) => {
                let mut locs = re.capture_locations();
                re.captures_read(&mut locs, &s.path);
                (0..locs.len()).map(|i| locs.get(i)).collect()
            }
            _ => Vec::new(),
        }
    }

    fn vars<'s>(&'s self, s: &'s Subject<'_>, groups: &'s [Option<(usize, usize)>]) -> Vars<'s> {
        Vars {
            host: &s.host,
            path: &s.path,
            query: s.parts.uri.query(),
            request_uri: s.parts.uri.path_and_query().map_or("/", |pq| pq.as_str()),
            scheme: s.scheme,
            method: s.parts.method.as_str(),
            route: &self.name,
            groups,
        }
    }
}

fn with_query(mut path: String, query: Option<&str>) -> String {
    if let Some(q) = query {
        path.push('?');
        path.push_str(q);
    }
    path
}

impl Forward {
    /// The index of the pool for this request.
    fn choose(&self, parts: &request::Parts) -> usize {
        if self.pools.len() == 1 {
            return 0;
        }
        let key = match &self.sticky {
            Sticky::None => None,
            Sticky::Header(name) => parts.headers.get(name).map(HeaderValue::as_bytes),
            Sticky::Cookie(name) => cookie(&parts.headers, name),
        };
        if let Some(key) = key {
            let total = *self.bounds.last().expect("a split has pools");
            let point = fnv1a(key) % total;
            return self.bounds.iter().position(|&b| point < b).unwrap_or(0);
        }
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        usize::from(self.schedule[n % self.schedule.len()])
    }
}

/// The value of cookie `name`: the first `name=value` pair of the first
/// `Cookie` field that has one.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h [u8]> {
    headers.get_all(header::COOKIE).iter().find_map(|line| {
        line.as_bytes().split(|&b| b == b';').find_map(|pair| {
            let pair = pair.trim_ascii_start();
            let eq = pair.iter().position(|&b| b == b'=')?;
            let value = pair[eq + 1..].trim_ascii_end();
            (&pair[..eq] == name.as_bytes()).then_some(value)
        })
    })
}

/// 64-bit FNV-1a.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// nginx's smooth weighted round robin, unrolled over one cycle.
fn schedule(weights: &[u32]) -> Vec<u16> {
    let total: i64 = weights.iter().map(|&w| i64::from(w)).sum();
    let mut current = vec![0i64; weights.len()];
    let mut out = Vec::with_capacity(usize::try_from(total).unwrap_or(0));
    for _ in 0..total {
        let mut best = 0;
        for (i, w) in weights.iter().enumerate() {
            current[i] += i64::from(*w);
            if current[i] > current[best] {
                best = i;
            }
        }
        current[best] -= total;
        out.push(u16::try_from(best).unwrap_or(0));
    }
    out
}

/// Routes in match order, with their index.
#[derive(Default)]
pub(crate) struct RouteTable {
    routes: Vec<Route>,
    index: Index,
}

impl RouteTable {
    /// Compile `configs` against the pools they name.
    pub(crate) fn compile(
        configs: &[RouteConfig],
        pools: &HashMap<&str, Arc<Upstream>>,
    ) -> Result<Self, String> {
        let routes = configs
            .iter()
            .enumerate()
            .map(|(i, r)| compile_route(r, pools).map_err(|e| format!("routes[{i}]: {e}")))
            .collect::<Result<Vec<_>, _>>()?;
        let index = Index::build(routes.iter().map(|r| (&r.hosts[..], &r.path)));
        Ok(RouteTable { routes, index })
    }

    /// The first route matching `s` (its index) and its decision, if any.
    pub(crate) fn decide<'t>(&'t self, s: &Subject<'_>) -> Option<(usize, Decision<'t>)> {
        let i = self
            .index
            .find(&s.host, &s.path, |i| self.routes[i].matches(s))?;
        debug_assert!(self.routes[i].host_matches(&s.host));
        Some((i, self.routes[i].decide(s)))
    }

    /// The name of route `i`.
    pub(crate) fn name(&self, i: usize) -> &Arc<str> {
        &self.routes[i].name
    }

    /// The first matching route's index, by walking the whole table (the
    /// definition the index must agree with).
    #[cfg(test)]
    fn find_linear(&self, s: &Subject<'_>) -> Option<usize> {
        self.routes
            .iter()
            .position(|r| r.host_matches(&s.host) && r.matches(s))
    }

    /// The first matching route's index, through the index.
    #[cfg(test)]
    fn find(&self, s: &Subject<'_>) -> Option<usize> {
        self.index
            .find(&s.host, &s.path, |i| self.routes[i].matches(s))
    }
}

/// For `rust/benches/routes.rs`: compile `routes` (every pool they name
/// gets a placeholder server), then route each of `requests` `rounds`
/// times. Returns the mean time per routing decision and how many
/// requests matched a route.
#[doc(hidden)]
pub fn bench_match(
    routes: &[RouteConfig],
    requests: &[http::Request<()>],
    rounds: usize,
) -> Result<(std::time::Duration, usize), String> {
    let cfg: crate::config::UpstreamConfig =
        serde_json::from_str(r#"{"servers": ["127.0.0.1:9"]}"#).map_err(|e| e.to_string())?;
    let mut names: Vec<&str> = routes
        .iter()
        .filter_map(|r| r.upstream.as_deref())
        .collect();
    names.extend(
        routes
            .iter()
            .flat_map(|r| r.split.iter().map(|s| s.upstream.as_str())),
    );
    let pools = names
        .into_iter()
        .map(|n| (n, Arc::new(Upstream::new(n, &cfg, 65536, 100))))
        .collect();
    let table = RouteTable::compile(routes, &pools)?;
    let parts: Vec<request::Parts> = requests
        .iter()
        .map(|r| {
            let mut b = http::Request::builder()
                .method(r.method().clone())
                .uri(r.uri().clone());
            for (n, v) in r.headers() {
                b = b.header(n, v);
            }
            b.body(()).map(|r| r.into_parts().0)
        })
        .collect::<Result<_, _>>()
        .map_err(|e| e.to_string())?;
    let mut matched = 0;
    let started = std::time::Instant::now();
    for _ in 0..rounds {
        matched = 0;
        for p in &parts {
            let s = Subject::new(p, "http")?;
            if let Some(d) = table.decide(&s) {
                matched += 1;
                std::hint::black_box(d);
            }
        }
    }
    let n = u32::try_from((rounds * parts.len()).max(1)).unwrap_or(u32::MAX);
    Ok((started.elapsed() / n, matched))
}

fn cond(c: &FieldCondConfig) -> Result<Cond, String> {
    Ok(match c.cond.as_str() {
        "present" => Cond::Present,
        "absent" => Cond::Absent,
        "equals" => Cond::Equals(c.value.clone()),
        "regex" => Cond::Regex(compile_regex(&c.value)?),
        other => return Err(format!("unknown condition {other:?}")),
    })
}

fn compile_route(r: &RouteConfig, pools: &HashMap<&str, Arc<Upstream>>) -> Result<Route, String> {
    let path = match (&r.path, &r.path_prefix, &r.path_regex) {
        (None, None, None) => PathCond::Any,
        (Some(p), None, None) => PathCond::Exact(p.clone()),
        (None, Some(p), None) => PathCond::Prefix(p.clone()),
        (None, None, Some(re)) => PathCond::Regex(compile_regex(re)?),
        _ => return Err("more than one path condition".to_owned()),
    };
    let regex = match &path {
        PathCond::Regex(re) => Some(re),
        _ => None,
    };
    let template = |t: &Option<String>| {
        t.as_deref()
            .map(|t| Template::compile(t, regex))
            .transpose()
    };
    let pool = |name: &str| {
        pools
            .get(name)
            .cloned()
            .ok_or_else(|| format!("unknown upstream {name:?}"))
    };
    let actions = usize::from(r.upstream.is_some())
        + usize::from(!r.split.is_empty())
        + usize::from(r.redirect.is_some())
        + usize::from(r.respond.is_some());
    if actions != 1 {
        return Err("needs exactly one of upstream / split / redirect / respond".to_owned());
    }
    let action = if let Some(resp) = &r.respond {
        let status = StatusCode::from_u16(resp.status)
            .map_err(|_| format!("invalid status {}", resp.status))?;
        let mut fields = Vec::with_capacity(resp.headers.len());
        for (name, value) in &resp.headers {
            let name = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| format!("invalid header name {name:?}"))?;
            let value = HeaderValue::from_str(value)
                .map_err(|_| format!("invalid header value {value:?}"))?;
            fields.push((name, value));
        }
        Action::Respond(LocalResponse::new(status, fields, resp.body.as_bytes()))
    } else if let Some(redirect) = &r.redirect {
        let status = StatusCode::from_u16(redirect.status)
            .ok()
            .filter(StatusCode::is_redirection)
            .ok_or_else(|| format!("invalid redirect status {}", redirect.status))?;
        Action::Redirect(status, Template::compile(&redirect.location, regex)?)
    } else {
        let (pools, weights): (Vec<_>, Vec<u32>) = match &r.upstream {
            Some(name) => (vec![pool(name)?], vec![1]),
            None => r
                .split
                .iter()
                .map(|s| Ok((pool(&s.upstream)?, s.weight.max(1))))
                .collect::<Result<Vec<_>, String>>()?
                .into_iter()
                .unzip(),
        };
        if pools.len() > usize::from(u16::MAX) || weights.iter().sum::<u32>() > 1_000_000 {
            return Err("split too large".to_owned());
        }
        let bounds = weights
            .iter()
            .scan(0u64, |acc, &w| {
                *acc += u64::from(w);
                Some(*acc)
            })
            .collect();
        if r.strip_prefix && !matches!(path, PathCond::Prefix(_)) {
            return Err("strip_prefix needs path_prefix".to_owned());
        }
        let sticky = match (&r.sticky_cookie, &r.sticky_header) {
            (Some(c), None) => Sticky::Cookie(c.clone()),
            (None, Some(h)) => Sticky::Header(
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("invalid sticky_header {h:?}"))?,
            ),
            (None, None) => Sticky::None,
            _ => return Err("sticky_cookie and sticky_header both set".to_owned()),
        };
        Action::Forward(Forward {
            pools,
            schedule: schedule(&weights),
            bounds,
            next: AtomicUsize::new(0),
            sticky,
            strip_prefix: r.strip_prefix,
            rewrite: template(&r.rewrite)?,
            upstream_host: template(&r.upstream_host)?,
        })
    };
    let methods = r
        .methods
        .iter()
        .map(|m| Method::from_bytes(m.as_bytes()).map_err(|_| format!("invalid method {m:?}")))
        .collect::<Result<_, _>>()?;
    let headers = r
        .headers
        .iter()
        .map(|c| {
            let name = HeaderName::from_bytes(c.name.as_bytes())
                .map_err(|_| format!("invalid header name {:?}", c.name))?;
            Ok((name, cond(c)?))
        })
        .collect::<Result<_, String>>()?;
    let query = r
        .query
        .iter()
        .map(|c| Ok((c.name.clone(), cond(c)?)))
        .collect::<Result<_, String>>()?;
    Ok(Route {
        name: Arc::from(r.name.as_str()),
        hosts: r.hosts.iter().map(|h| h.to_ascii_lowercase()).collect(),
        path,
        methods,
        headers,
        query,
        action,
    })
}

#[cfg(test)]
mod tests;
