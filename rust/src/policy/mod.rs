//! The native forms of the built-in policies other than the router:
//! header rules, the security preset and CORS ([`headers`]).
//!
//! Each built-in's Python reference is a pluggy plugin; where the engine
//! runs a native form, that form takes the plugin's place in each phase it
//! implements. A phase's natives run in a fixed order ([`native_order`]),
//! which is also the order pluggy calls the references in; the plan's
//! Python steps are split around them into segments
//! ([`crate::hooks::Hooks::has_at`]), so a plugin's `tryfirst` hook still
//! runs before a built-in and an ordinary one after.

mod auth;
mod cors;
mod headers;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Response, request};

use crate::body::ProxyBody;
use crate::config::EngineConfig;
use crate::hooks::{Phase, RouteRef};
use crate::request_id::RequestId;
use crate::route::{Source, Var, normalize_path, request_host};
use crate::server::ConnInfo;
use crate::upstream::Upstream;
pub use auth::AuthInfo;
use auth::AuthPolicy;
pub(crate) use auth::Caller;
use headers::HeaderPolicy;

/// The built-ins with a native step in `phase`, in the order they run
/// (and the order pluggy calls their references: see builtins/).
pub fn native_order(phase: Phase) -> &'static [&'static str] {
    match phase {
        Phase::CacheKey => &["cache"],
        Phase::Route => &["router"],
        Phase::Access => &["headers", "auth"],
        Phase::SelectUpstream => &["balancer"],
        Phase::UpstreamRequest | Phase::Response => &["headers"],
        _ => &[],
    }
}

/// The compiled native built-ins of one configuration.
#[derive(Default)]
pub(crate) struct Policy {
    headers: Option<HeaderPolicy>,
    auth: Option<AuthPolicy>,
    /// The configured routes' indices by name (a route hook may name one).
    routes: HashMap<Arc<str>, usize>,
    /// The empty name of a route a hook chose without naming it.
    unnamed: Arc<str>,
}

/// What the natives know about a request: its head, its connection, and
/// what routing decided.
pub(crate) struct Facts<'a> {
    pub(crate) parts: &'a request::Parts,
    pub(crate) conn: &'a ConnInfo,
    pub(crate) route: Option<&'a RouteRef>,
    pub(crate) pool: Option<&'a str>,
    pub(crate) upstream: Option<SocketAddr>,
    pub(crate) id: RequestId,
    pub(crate) auth: Option<&'a AuthInfo>,
}

/// A request the natives of `rproxy_access` may change.
pub(crate) trait Target: Send {
    /// What is known of it.
    fn facts(&self) -> Facts<'_>;
    /// Its head and identity, to change.
    fn caller(&mut self) -> Caller<'_>;
}

impl Source for Facts<'_> {
    fn var(&self, var: Var, out: &mut String) {
        use std::fmt::Write;
        match var {
            Var::Host => out.push_str(&request_host(self.parts)),
            Var::Path => {
                let path = normalize_path(self.parts.uri.path());
                out.push_str(path.as_deref().unwrap_or(""));
            }
            Var::Query => out.push_str(self.parts.uri.query().unwrap_or("")),
            Var::RequestUri => out.push_str(
                self.parts
                    .uri
                    .path_and_query()
                    .map_or("/", |pq| pq.as_str()),
            ),
            Var::Scheme => out.push_str(self.conn.scheme),
            Var::Method => out.push_str(self.parts.method.as_str()),
            Var::Route => out.push_str(self.route.map_or("", |r| &r.name)),
            Var::ClientIp => out.push_str(&crate::headers::client_ip(self.parts, self.conn)),
            Var::RemoteAddr => out.push_str(&self.conn.client_ip),
            Var::Upstream => out.push_str(self.pool.unwrap_or("")),
            Var::UpstreamAddr => {
                if let Some(a) = self.upstream {
                    let _ = write!(out, "{a}");
                }
            }
            Var::RequestId => {
                let _ = write!(out, "{}", self.id);
            }
            Var::AuthUser => out.push_str(self.auth.map_or("", |a| &a.user)),
        }
    }
}

impl Policy {
    /// Compile the natives `config` names.
    pub(crate) fn compile(
        config: &EngineConfig,
        pools: &HashMap<&str, Arc<Upstream>>,
    ) -> Result<Self, String> {
        let on = |name: &str| config.natives.iter().any(|n| n == name);
        Ok(Policy {
            headers: if on("headers") {
                HeaderPolicy::compile(config)?
            } else {
                None
            },
            auth: if on("auth") {
                AuthPolicy::compile(config, pools)?
            } else {
                None
            },
            routes: config
                .routes
                .iter()
                .enumerate()
                .map(|(i, r)| (Arc::from(r.name.as_str()), i))
                .collect(),
            unnamed: Arc::from(""),
        })
    }

    /// The route a route hook named (`None`: unnamed, shown as the empty name).
    pub(crate) fn route_named(&self, name: Option<String>) -> RouteRef {
        match name {
            Some(name) => {
                let name: Arc<str> = Arc::from(name);
                RouteRef {
                    index: self.routes.get(&name).copied(),
                    name,
                }
            }
            None => RouteRef {
                name: self.unnamed.clone(),
                index: None,
            },
        }
    }

    /// Whether native step `k` of `phase` (see [`native_order`]) has
    /// anything to do in this configuration.
    pub(crate) fn active(&self, phase: Phase, k: usize) -> bool {
        let h = self.headers.as_ref();
        match (phase, k) {
            (Phase::Access, 0) => h.is_some_and(HeaderPolicy::answers_preflights),
            (Phase::Access, 1) => self.auth.is_some(),
            (Phase::UpstreamRequest, 0) => h.is_some_and(HeaderPolicy::has_request_rules),
            (Phase::Response, 0) => h.is_some(),
            _ => false,
        }
    }

    /// Native step `k` of `rproxy_access`: a response refusing the
    /// request, or `None` to let it through.
    pub(crate) async fn access<T: Target>(
        &self,
        k: usize,
        ex: &mut T,
    ) -> Option<Response<ProxyBody>> {
        match k {
            0 => self.headers.as_ref()?.access(&ex.facts()),
            _ => self.auth.as_ref()?.access(ex.caller()).await,
        }
    }

    /// Native step `k` of `rproxy_upstream_request`: change the fields sent upstream.
    pub(crate) fn upstream_request(&self, _k: usize, facts: &Facts<'_>, fields: &mut HeaderMap) {
        if let Some(h) = &self.headers {
            h.upstream_request(facts, fields);
        }
    }

    /// Native step `k` of `rproxy_response`: change the response head sent to the client.
    pub(crate) fn response(&self, _k: usize, facts: &Facts<'_>, fields: &mut HeaderMap) {
        if let Some(h) = &self.headers {
            h.response(facts, fields);
        }
    }
}
