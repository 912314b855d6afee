//! The `auth` built-in, natively: per-route address lists and credential
//! policies — API keys, HTTP Basic from htpasswd entries, JWT bearer
//! tokens and forward auth (docs/auth.md).

mod basic;
mod forward;
mod jwt;
mod keys;

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{Response, StatusCode, request};

use crate::body::ProxyBody;
use crate::config::{AuthConfig, EngineConfig};
use crate::net::Cidr;
use crate::server::ConnInfo;
use crate::upstream::Upstream;

/// Who a request was authenticated as.
#[derive(Debug, Clone)]
pub struct AuthInfo {
    /// The policy that accepted the request.
    pub policy: Arc<str>,
    /// Its type: `api_key`, `basic`, `jwt` or `forward`.
    pub kind: &'static str,
    /// The key holder, Basic user, JWT `sub`, or empty.
    pub user: String,
    /// The JWT payload (an empty object for the other types).
    pub claims: serde_json::Value,
}

/// What one policy made of a request.
enum Outcome {
    /// Accepted: who it is, and fields to set on the request (`None`:
    /// remove the field, whatever the client sent).
    Pass(AuthInfo, Vec<(HeaderName, Option<HeaderValue>)>),
    /// Not accepted; the challenge to send, if any.
    Challenge(Option<HeaderValue>),
    /// Refused outright, with this response.
    Refuse(Response<ProxyBody>),
}

enum Check {
    ApiKey(keys::ApiKeys),
    Basic(basic::Basic),
    Jwt(jwt::Jwt),
    Forward(forward::Forward),
}

struct Policy {
    name: Arc<str>,
    check: Check,
    forward_credentials: bool,
}

impl Policy {
    async fn check(&self, parts: &request::Parts, conn: &ConnInfo) -> Outcome {
        match &self.check {
            Check::ApiKey(k) => k.check(&self.name, parts),
            Check::Basic(b) => b.check(&self.name, parts).await,
            Check::Jwt(j) => j.check(&self.name, parts),
            Check::Forward(f) => f.check(&self.name, parts, conn).await,
        }
    }

    /// The field carrying this policy's credential, removed from the
    /// request unless `forward_credentials`.
    fn credential_field(&self) -> Option<HeaderName> {
        match &self.check {
            Check::ApiKey(k) => k.header().cloned(),
            _ => Some(header::AUTHORIZATION),
        }
    }
}

/// A route's access rules.
#[derive(Default)]
struct RouteAccess {
    allow: Vec<Cidr>,
    deny: Vec<Cidr>,
    policies: Vec<Arc<Policy>>,
}

impl RouteAccess {
    fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty() && self.policies.is_empty()
    }
}

/// The compiled `auth` built-in.
pub(crate) struct AuthPolicy {
    routes: Vec<RouteAccess>,
}

/// A request `rproxy_access` may change: its head, and who it is.
pub(crate) struct Caller<'a> {
    pub(crate) parts: &'a mut request::Parts,
    pub(crate) conn: &'a ConnInfo,
    pub(crate) route: Option<usize>,
    pub(crate) auth: &'a mut Option<AuthInfo>,
    /// Set when `auth` changes, for hooks to pick it up.
    pub(crate) fresh: Option<&'a mut bool>,
}

impl AuthPolicy {
    /// Compile the access rules of `config`; `None` when no route has any.
    pub(crate) fn compile(
        config: &EngineConfig,
        pools: &HashMap<&str, Arc<Upstream>>,
    ) -> Result<Option<Self>, String> {
        let mut policies: HashMap<&str, Arc<Policy>> = HashMap::new();
        for (name, c) in &config.auth {
            let (check, forward_credentials) = match c {
                AuthConfig::ApiKey {
                    header,
                    query,
                    keys,
                    realm,
                    forward_credentials,
                } => (
                    Check::ApiKey(keys::ApiKeys::compile(
                        header.as_deref(),
                        query.as_deref(),
                        keys,
                        realm,
                    )?),
                    *forward_credentials,
                ),
                AuthConfig::Basic {
                    users,
                    realm,
                    forward_credentials,
                } => (
                    Check::Basic(basic::Basic::compile(users, realm)?),
                    *forward_credentials,
                ),
                AuthConfig::Jwt {
                    algorithms,
                    keys,
                    issuer,
                    audience,
                    leeway,
                    realm,
                    forward_credentials,
                } => (
                    Check::Jwt(jwt::Jwt::compile(
                        algorithms, keys, issuer, audience, *leeway, realm,
                    )?),
                    *forward_credentials,
                ),
                AuthConfig::Forward {
                    upstream,
                    path,
                    send_headers,
                    copy_headers,
                    cache,
                    forward_credentials,
                } => {
                    let pool = pools
                        .get(upstream.as_str())
                        .ok_or_else(|| format!("auth.{name}: unknown upstream {upstream:?}"))?;
                    (
                        Check::Forward(forward::Forward::compile(
                            pool.clone(),
                            path,
                            send_headers,
                            copy_headers,
                            *cache,
                        )?),
                        *forward_credentials,
                    )
                }
            };
            let policy = Policy {
                name: Arc::from(name.as_str()),
                check,
                forward_credentials,
            };
            policies.insert(name, Arc::new(policy));
        }
        let routes = config
            .routes
            .iter()
            .map(|r| {
                Ok(RouteAccess {
                    allow: r.allow.clone(),
                    deny: r.deny.clone(),
                    policies: r
                        .auth
                        .iter()
                        .map(|n| {
                            policies
                                .get(n.as_str())
                                .cloned()
                                .ok_or_else(|| format!("unknown auth policy {n:?}"))
                        })
                        .collect::<Result<_, String>>()?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok((!routes.iter().all(RouteAccess::is_empty)).then_some(AuthPolicy { routes }))
    }

    /// `rproxy_access`: `None` lets the request through.
    pub(crate) async fn access(&self, s: Caller<'_>) -> Option<Response<ProxyBody>> {
        let rules = self.routes.get(s.route?)?;
        if !rules.allow.is_empty() || !rules.deny.is_empty() {
            let ip: Option<IpAddr> = crate::headers::client_ip(s.parts, s.conn).parse().ok();
            let refused = match ip {
                Some(ip) => {
                    Cidr::any_contains(&rules.deny, ip)
                        || (!rules.allow.is_empty() && !Cidr::any_contains(&rules.allow, ip))
                }
                None => true,
            };
            if refused {
                return Some(refusal(StatusCode::FORBIDDEN, Vec::new()));
            }
        }
        if rules.policies.is_empty() {
            return None;
        }
        let mut challenges = Vec::new();
        for policy in &rules.policies {
            match policy.check(s.parts, s.conn).await {
                Outcome::Pass(info, fields) => {
                    if !policy.forward_credentials {
                        if let Some(name) = policy.credential_field() {
                            s.parts.headers.remove(name);
                        }
                    }
                    for (name, value) in fields {
                        match value {
                            Some(v) => s.parts.headers.insert(name, v),
                            None => s.parts.headers.remove(name),
                        };
                    }
                    *s.auth = Some(info);
                    if let Some(fresh) = s.fresh {
                        *fresh = true;
                    }
                    return None;
                }
                Outcome::Challenge(c) => challenges.extend(c),
                Outcome::Refuse(resp) => return Some(resp),
            }
        }
        Some(refusal(StatusCode::UNAUTHORIZED, challenges))
    }
}

/// A `401` (with its challenges) or `403`, with a one-line body.
fn refusal(status: StatusCode, challenges: Vec<HeaderValue>) -> Response<ProxyBody> {
    let text = format!(
        "{} {}\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("Error")
    );
    let mut resp = Response::new(ProxyBody::full(text));
    *resp.status_mut() = status;
    let f = resp.headers_mut();
    f.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    f.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    for c in challenges {
        f.append(header::WWW_AUTHENTICATE, c);
    }
    resp
}

/// `scheme realm="REALM"` plus `extra`, as a challenge field value.
fn challenge(scheme: &str, realm: &str, extra: &str) -> Option<HeaderValue> {
    let realm = realm.replace('\\', "\\\\").replace('"', "\\\"");
    HeaderValue::from_str(&format!("{scheme} realm=\"{realm}\"{extra}")).ok()
}

/// The credentials of an `Authorization` field with `scheme`
/// (case-insensitive): the text after the scheme and its spaces.
fn credentials<'p>(parts: &'p request::Parts, scheme: &str) -> Option<&'p str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (given, rest) = value.split_once(' ')?;
    if !given.eq_ignore_ascii_case(scheme) {
        return None;
    }
    let rest = rest.trim_start_matches(' ');
    (!rest.is_empty()).then_some(rest)
}

/// SHA-256 of `bytes`.
fn sha256(bytes: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}
