//! CORS (the Fetch standard's CORS protocol) for a route: preflights are
//! answered here, other responses get the allow fields (docs/headers.md).

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode, request};

use crate::body::ProxyBody;
use crate::config::CorsConfig;

/// A route's compiled CORS settings.
pub(crate) struct Cors {
    any_origin: bool,
    origins: Vec<String>,
    methods: HeaderValue,
    /// The allowed request fields, joined; `None` when empty.
    headers: Option<HeaderValue>,
    /// `headers = ["*"]`: allow whatever the preflight asks for.
    echo_headers: bool,
    expose: Option<HeaderValue>,
    credentials: bool,
    max_age: Option<HeaderValue>,
}

fn joined(list: &[String]) -> Result<Option<HeaderValue>, String> {
    if list.is_empty() {
        return Ok(None);
    }
    let text = list.join(", ");
    HeaderValue::from_str(&text)
        .map(Some)
        .map_err(|_| format!("invalid list {text:?}"))
}

const PREFLIGHT_VARY: HeaderValue = HeaderValue::from_static(
    "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
);

impl Cors {
    pub(crate) fn compile(c: &CorsConfig) -> Result<Cors, String> {
        Ok(Cors {
            any_origin: c.origins.iter().any(|o| o == "*"),
            origins: c.origins.clone(),
            methods: joined(&c.methods)?.unwrap_or(HeaderValue::from_static("")),
            headers: if c.headers.iter().any(|h| h == "*") {
                None
            } else {
                joined(&c.headers)?
            },
            echo_headers: c.headers.iter().any(|h| h == "*"),
            expose: joined(&c.expose)?,
            credentials: c.credentials,
            max_age: c.max_age.map(HeaderValue::from),
        })
    }

    /// `OPTIONS` with `Origin` and `Access-Control-Request-Method`.
    pub(crate) fn is_preflight(parts: &request::Parts) -> bool {
        parts.method == Method::OPTIONS
            && parts.headers.contains_key(header::ORIGIN)
            && parts
                .headers
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    }

    /// The request's origin (its first `Origin` field), if it is allowed.
    fn origin<'p>(&self, parts: &'p request::Parts) -> Option<&'p HeaderValue> {
        let origin = parts.headers.get(header::ORIGIN)?;
        (self.any_origin
            || self
                .origins
                .iter()
                .any(|o| o.as_bytes() == origin.as_bytes()))
        .then_some(origin)
    }

    /// `Access-Control-Allow-Origin` for an allowed `origin`.
    fn allow_origin(&self, origin: &HeaderValue) -> HeaderValue {
        if self.any_origin && !self.credentials {
            HeaderValue::from_static("*")
        } else {
            origin.clone()
        }
    }

    /// The answer to a preflight: 204 with the allow fields, or 403.
    pub(crate) fn preflight(&self, parts: &request::Parts) -> Response<ProxyBody> {
        let Some(allow_origin) = self.origin(parts).map(|o| self.allow_origin(o)) else {
            let mut resp = Response::new(ProxyBody::full("CORS origin not allowed\n"));
            *resp.status_mut() = StatusCode::FORBIDDEN;
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            return resp;
        };
        let mut resp = Response::new(ProxyBody::empty());
        *resp.status_mut() = StatusCode::NO_CONTENT;
        let f = resp.headers_mut();
        f.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, allow_origin);
        if self.credentials {
            f.insert(
                header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
        f.insert(header::ACCESS_CONTROL_ALLOW_METHODS, self.methods.clone());
        let asked = parts
            .headers
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .filter(|v| !v.is_empty());
        let allow_headers = if self.echo_headers {
            asked.cloned()
        } else {
            self.headers.clone()
        };
        if let Some(h) = allow_headers {
            f.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, h);
        }
        if let Some(age) = &self.max_age {
            f.insert(header::ACCESS_CONTROL_MAX_AGE, age.clone());
        }
        f.insert(header::VARY, PREFLIGHT_VARY);
        resp
    }

    /// The CORS fields of a response (not to a preflight): an upstream's
    /// own are removed — the proxy answers for CORS on this route — then the
    /// allow fields are set for an allowed origin. Unless every origin gets
    /// `*`, the response varies by `Origin` whether or not it had one, so a
    /// cache never hands one origin's answer to another.
    pub(crate) fn actual(&self, parts: &request::Parts, fields: &mut HeaderMap) {
        for name in OWN_FIELDS {
            fields.remove(name);
        }
        if let Some(origin) = self.origin(parts) {
            fields.insert(
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                self.allow_origin(origin),
            );
            if self.credentials {
                fields.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
            }
            if let Some(expose) = &self.expose {
                fields.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, expose.clone());
            }
        }
        if !self.any_origin || self.credentials {
            fields.append(header::VARY, HeaderValue::from_static("Origin"));
        }
    }
}

/// The CORS response fields, which the proxy owns on a route with CORS.
const OWN_FIELDS: [header::HeaderName; 6] = [
    header::ACCESS_CONTROL_ALLOW_ORIGIN,
    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
    header::ACCESS_CONTROL_EXPOSE_HEADERS,
    header::ACCESS_CONTROL_ALLOW_METHODS,
    header::ACCESS_CONTROL_ALLOW_HEADERS,
    header::ACCESS_CONTROL_MAX_AGE,
];
