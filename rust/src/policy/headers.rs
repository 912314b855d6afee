//! The `headers` built-in, natively: rule sets (global → pool → route;
//! remove → set → add), hidden origin fields, the security preset, and
//! CORS (docs/headers.md).

use std::collections::HashMap;
use std::sync::Arc;

use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response};

use super::Facts;
use super::cors::Cors;
use crate::body::ProxyBody;
use crate::config::{EngineConfig, RouteCors, RulesConfig, SecurityConfig};
use crate::route::Template;

/// A field value: fixed, or a template expanded per request.
enum Val {
    Fixed(HeaderValue),
    Dynamic(Template),
}

impl Val {
    fn compile(text: &str) -> Result<Val, String> {
        let t = Template::compile(text, None)?;
        Ok(match t.literal() {
            Some(lit) => Val::Fixed(
                HeaderValue::from_str(lit).map_err(|_| format!("invalid field value {text:?}"))?,
            ),
            None => Val::Dynamic(t),
        })
    }

    /// The value for this request; `None` when the expansion is not a
    /// valid field value (then the rule is skipped).
    fn get(&self, facts: &Facts<'_>) -> Option<HeaderValue> {
        match self {
            Val::Fixed(v) => Some(v.clone()),
            // The expansion's buffer becomes the value, without a copy.
            Val::Dynamic(t) => {
                HeaderValue::from_maybe_shared(bytes::Bytes::from(t.expand(facts))).ok()
            }
        }
    }
}

/// One rule set.
#[derive(Default)]
struct Rules {
    remove: Vec<HeaderName>,
    set: Vec<(HeaderName, Val)>,
    add: Vec<(HeaderName, Val)>,
}

fn name(text: &str) -> Result<HeaderName, String> {
    HeaderName::from_bytes(text.as_bytes()).map_err(|_| format!("invalid field name {text:?}"))
}

impl Rules {
    fn compile(c: &RulesConfig) -> Result<Rules, String> {
        let pairs = |list: &[(String, String)]| {
            list.iter()
                .map(|(n, v)| Ok((name(n)?, Val::compile(v)?)))
                .collect::<Result<Vec<_>, String>>()
        };
        Ok(Rules {
            remove: c.remove.iter().map(|n| name(n)).collect::<Result<_, _>>()?,
            set: pairs(&c.set)?,
            add: pairs(&c.add)?,
        })
    }

    fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }

    fn apply(&self, facts: &Facts<'_>, fields: &mut HeaderMap) {
        for n in &self.remove {
            fields.remove(n);
        }
        for (n, v) in &self.set {
            if let Some(v) = v.get(facts) {
                fields.insert(n.clone(), v);
            }
        }
        for (n, v) in &self.add {
            if let Some(v) = v.get(facts) {
                fields.append(n.clone(), v);
            }
        }
    }
}

/// A route's rules and CORS.
struct RouteRules {
    request: Rules,
    response: Rules,
    cors: Option<Arc<Cors>>,
}

/// A field of the security preset.
struct Preset {
    name: HeaderName,
    value: HeaderValue,
    tls_only: bool,
    /// The `frame-ancestors` policy made from `frame_options`: left out
    /// when the response has its own `X-Frame-Options`.
    from_frame_options: bool,
}

/// The compiled `headers` built-in.
pub(crate) struct HeaderPolicy {
    hide: Vec<HeaderName>,
    security: Vec<Preset>,
    request: Rules,
    response: Rules,
    pools: HashMap<String, (Rules, Rules)>,
    routes: Vec<RouteRules>,
    cors: Option<Arc<Cors>>,
    /// Some route has CORS (then preflights may be answered).
    preflights: bool,
    /// Some rule changes requests sent upstream.
    request_rules: bool,
}

impl HeaderPolicy {
    /// Compile the header policy of `config`; `None` when it has nothing to do.
    pub(crate) fn compile(config: &EngineConfig) -> Result<Option<Self>, String> {
        let h = &config.headers;
        let cors = config
            .cors
            .as_ref()
            .map(Cors::compile)
            .transpose()?
            .map(Arc::new);
        let mut pools = HashMap::new();
        for (pool, u) in &config.upstreams {
            let rules = (
                Rules::compile(&u.request_headers)?,
                Rules::compile(&u.response_headers)?,
            );
            if !rules.0.is_empty() || !rules.1.is_empty() {
                pools.insert(pool.clone(), rules);
            }
        }
        let routes = config
            .routes
            .iter()
            .enumerate()
            .map(|(i, r)| {
                Ok(RouteRules {
                    request: Rules::compile(&r.request_headers)?,
                    response: Rules::compile(&r.response_headers)?,
                    cors: match &r.cors {
                        None => cors.clone(),
                        Some(RouteCors::Off(_)) => None,
                        Some(RouteCors::Own(c)) => Some(Arc::new(Cors::compile(c)?)),
                    },
                })
                .map_err(|e: String| format!("routes[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let request = Rules::compile(&h.request)?;
        let preflights = cors.is_some() || routes.iter().any(|r| r.cors.is_some());
        let request_rules = !request.is_empty()
            || pools.values().any(|(r, _)| !r.is_empty())
            || routes.iter().any(|r| !r.request.is_empty());
        let policy = HeaderPolicy {
            hide: h.hide.iter().map(|n| name(n)).collect::<Result<_, _>>()?,
            security: h
                .security
                .as_ref()
                .map(preset)
                .transpose()?
                .unwrap_or_default(),
            request,
            response: Rules::compile(&h.response)?,
            pools,
            routes,
            cors,
            preflights,
            request_rules,
        };
        let idle = !preflights
            && !request_rules
            && policy.hide.is_empty()
            && policy.security.is_empty()
            && policy.response.is_empty()
            && policy.pools.is_empty()
            && policy.routes.iter().all(|r| r.response.is_empty());
        Ok((!idle).then_some(policy))
    }

    /// Whether some route has CORS (then preflights may be answered).
    pub(crate) fn answers_preflights(&self) -> bool {
        self.preflights
    }

    /// Whether any rule changes requests sent upstream.
    pub(crate) fn has_request_rules(&self) -> bool {
        self.request_rules
    }

    fn route(&self, facts: &Facts<'_>) -> Option<&RouteRules> {
        self.routes.get(facts.route?.index?)
    }

    /// CORS for the route the request took (none before routing).
    fn cors(&self, facts: &Facts<'_>) -> Option<&Cors> {
        let route = facts.route?;
        match route.index {
            Some(i) => self.routes.get(i)?.cors.as_deref(),
            None => self.cors.as_deref(),
        }
    }

    /// `rproxy_access`: answer a CORS preflight.
    pub(crate) fn access(&self, facts: &Facts<'_>) -> Option<Response<ProxyBody>> {
        let cors = self.cors(facts)?;
        Cors::is_preflight(facts.parts).then(|| cors.preflight(facts.parts))
    }

    /// `rproxy_upstream_request`: the request rules.
    pub(crate) fn upstream_request(&self, facts: &Facts<'_>, fields: &mut HeaderMap) {
        self.request.apply(facts, fields);
        if let Some((rules, _)) = facts.pool.and_then(|p| self.pools.get(p)) {
            rules.apply(facts, fields);
        }
        if let Some(r) = self.route(facts) {
            r.request.apply(facts, fields);
        }
    }

    /// `rproxy_response`: hide, preset, CORS, then the response rules.
    pub(crate) fn response(&self, facts: &Facts<'_>, fields: &mut HeaderMap) {
        for n in &self.hide {
            fields.remove(n);
        }
        if !self.security.is_empty() {
            let tls = facts.conn.scheme == "https";
            let own_frame_policy = fields.contains_key(header::X_FRAME_OPTIONS);
            for p in &self.security {
                let skip = (p.tls_only && !tls)
                    || (p.from_frame_options && own_frame_policy)
                    || fields.contains_key(&p.name);
                if !skip {
                    fields.insert(p.name.clone(), p.value.clone());
                }
            }
        }
        if let Some(cors) = self.cors(facts) {
            if !Cors::is_preflight(facts.parts) {
                cors.actual(facts.parts, fields);
            }
        }
        self.response.apply(facts, fields);
        if let Some((_, rules)) = facts.pool.and_then(|p| self.pools.get(p)) {
            rules.apply(facts, fields);
        }
        if let Some(r) = self.route(facts) {
            r.response.apply(facts, fields);
        }
    }
}

/// The preset's fields, in the order they are added.
fn preset(s: &SecurityConfig) -> Result<Vec<Preset>, String> {
    let derived = s.csp.is_empty();
    let csp = if !derived {
        s.csp.clone()
    } else {
        match s.frame_options.to_ascii_uppercase().as_str() {
            "DENY" => "frame-ancestors 'none'".to_owned(),
            "SAMEORIGIN" => "frame-ancestors 'self'".to_owned(),
            _ => String::new(),
        }
    };
    let fields = [
        (header::STRICT_TRANSPORT_SECURITY, &s.hsts, true, false),
        (
            header::X_CONTENT_TYPE_OPTIONS,
            &s.content_type_options,
            false,
            false,
        ),
        (header::X_FRAME_OPTIONS, &s.frame_options, false, false),
        (header::REFERRER_POLICY, &s.referrer_policy, false, false),
        (header::CONTENT_SECURITY_POLICY, &csp, false, derived),
    ];
    fields
        .into_iter()
        .filter(|(_, v, _, _)| !v.is_empty())
        .map(|(name, v, tls_only, from_frame_options)| {
            Ok(Preset {
                name,
                value: HeaderValue::from_str(v).map_err(|_| format!("invalid value {v:?}"))?,
                tls_only,
                from_frame_options,
            })
        })
        .collect()
}
