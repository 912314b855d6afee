//! A stored response and what RFC 9111 computes about it: whether it may be
//! stored (§3), its freshness lifetime (§4.2.1, §4.2.2), its age (§4.2.3),
//! which requests it answers (§4.1), and how a 304 freshens it (§4.3.4).

#[cfg(test)]
use std::time::Duration;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode};

use super::control::{RequestDirectives, ResponseDirectives, Seconds};

/// Statuses a cache may store without explicit freshness and give a
/// heuristic lifetime (RFC 9110 §15.1: "heuristically cacheable").
pub(crate) fn heuristically_cacheable(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 206 | 300 | 301 | 308 | 404 | 405 | 410 | 414 | 501
    )
}

/// Statuses whose caching rules rproxy implements, for `must-understand`
/// (RFC 9111 §5.2.2.3). 206 is left out: partial responses are not stored.
fn understood(status: StatusCode) -> bool {
    matches!(
        status.as_u16(),
        200 | 203 | 204 | 300 | 301 | 302 | 303 | 307 | 308 | 404 | 405 | 410 | 414 | 451 | 501
    )
}

/// Whole seconds since the epoch.
pub(crate) fn secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// An HTTP-date (RFC 9110 §5.6.7), as seconds since the epoch.
pub(crate) fn date_of(v: &HeaderValue) -> Option<u64> {
    let text = v.to_str().ok()?;
    httpdate::parse_http_date(text.trim()).ok().map(secs)
}

/// The single value of field `name`, or `None` when it is absent or
/// appears more than once.
fn single<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a HeaderValue> {
    let mut all = headers.get_all(name).iter();
    let first = all.next()?;
    all.next().is_none().then_some(first)
}

/// How the freshness of stored responses is decided where RFC 9111 leaves
/// it to the cache.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Freshness {
    /// The route's lifetime for responses that state none (`cache_ttl`).
    pub(crate) ttl: Option<u64>,
    /// The most a heuristic lifetime may be.
    pub(crate) heuristic_max: u64,
    /// `CDN-Cache-Control`, when present, replaces `Cache-Control` and
    /// `Expires` (RFC 9213 §2).
    pub(crate) cdn: bool,
}

const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

impl Freshness {
    /// Whether `response`'s directives come from `CDN-Cache-Control`.
    fn targeted(&self, response: &HeaderMap) -> bool {
        self.cdn && response.contains_key(&CDN_CACHE_CONTROL)
    }

    /// The response directives this cache obeys.
    pub(crate) fn directives(&self, response: &HeaderMap) -> ResponseDirectives {
        if self.targeted(response) {
            ResponseDirectives::parse(response, &CDN_CACHE_CONTROL)
        } else {
            ResponseDirectives::parse(response, &header::CACHE_CONTROL)
        }
    }
}

/// What the request field values a response varies on were.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Vary {
    /// `Vary: *`: no request matches (§4.1).
    Any,
    /// Field names and their normalised values (`None`: absent).
    Fields(Vec<(HeaderName, Option<String>)>),
}

impl Vary {
    /// The secondary key of `request` for the response `headers`.
    pub(crate) fn of(response: &HeaderMap, request: &HeaderMap) -> Vary {
        let mut fields = Vec::new();
        for line in response.get_all(header::VARY) {
            let Ok(text) = line.to_str() else {
                return Vary::Any;
            };
            for name in text.split(',').map(str::trim).filter(|n| !n.is_empty()) {
                if name == "*" {
                    return Vary::Any;
                }
                let Ok(name) = HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()) else {
                    return Vary::Any;
                };
                if fields.iter().all(|(n, _)| *n != name) {
                    let value = normalised(request, &name);
                    fields.push((name, value));
                }
            }
        }
        Vary::Fields(fields)
    }

    /// Whether `request` has the same secondary key.
    pub(crate) fn matches(&self, request: &HeaderMap) -> bool {
        match self {
            Vary::Any => false,
            Vary::Fields(fields) => fields
                .iter()
                .all(|(name, value)| normalised(request, name) == *value),
        }
    }
}

/// A request field's value for matching (§4.1): its lines joined, each
/// list member trimmed of whitespace, and lower-cased for the fields whose
/// values are case-insensitive.
fn normalised(request: &HeaderMap, name: &HeaderName) -> Option<String> {
    let mut lines = request.get_all(name).iter().peekable();
    lines.peek()?;
    let joined: Vec<String> = lines
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .collect();
    let joined = joined.join(",");
    let members: Vec<&str> = joined
        .split(',')
        .map(|m| m.trim_matches([' ', '\t']))
        .collect();
    let value = members.join(",");
    let insensitive = [
        header::ACCEPT,
        header::ACCEPT_ENCODING,
        header::ACCEPT_LANGUAGE,
        header::ACCEPT_CHARSET,
    ];
    Some(if insensitive.contains(name) {
        value.to_ascii_lowercase()
    } else {
        value
    })
}

/// A response in the store.
#[derive(Debug, Clone)]
pub(crate) struct Stored {
    pub(crate) status: StatusCode,
    /// The fields as stored: hop-by-hop fields were already removed, and
    /// `private="…"` fields and `Age` are left out.
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
    pub(crate) vary: Vary,
    /// §4.2.3's corrected initial age, in seconds.
    pub(crate) initial_age: u64,
    /// When the response was received (seconds since the epoch).
    pub(crate) response_time: u64,
    /// The freshness lifetime, in seconds.
    pub(crate) lifetime: u64,
    pub(crate) cc: ResponseDirectives,
    /// The route, pool and forwarding fields it was fetched under.
    pub(crate) scope: super::Scope,
}

/// The answer to "may this response be stored?" (§3): `Err` says why not.
#[allow(clippy::too_many_arguments)]
pub(crate) fn storable(
    method: &Method,
    request: &HeaderMap,
    credentialed: bool,
    req_cc: &RequestDirectives,
    status: StatusCode,
    response: &HeaderMap,
    cc: &ResponseDirectives,
    fresh: &Freshness,
) -> Result<(), &'static str> {
    if *method != Method::GET {
        return Err("method");
    }
    if status.is_informational()
        || status == StatusCode::PARTIAL_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        return Err("status");
    }
    if cc.must_understand && !understood(status) {
        return Err("must-understand");
    }
    if cc.no_store && !(cc.must_understand && understood(status)) {
        return Err("no-store");
    }
    if req_cc.no_store {
        return Err("request no-store");
    }
    if cc.private {
        return Err("private");
    }
    let reusable_with_credentials = cc.public || cc.must_revalidate || cc.s_maxage.present();
    if credentialed && !reusable_with_credentials {
        return Err("authorization");
    }
    let cookie_left_out = cc.private_fields.iter().any(|f| f == "set-cookie");
    if response.contains_key(header::SET_COOKIE)
        && !(cc.public || cc.s_maxage.present() || cookie_left_out)
    {
        return Err("set-cookie");
    }
    if matches!(Vary::of(response, request), Vary::Any) {
        return Err("vary *");
    }
    let explicit = cc.public
        || cc.max_age.present()
        || cc.s_maxage.present()
        || (response.contains_key(header::EXPIRES) && !fresh.targeted(response));
    if !explicit && !heuristically_cacheable(status) {
        return Err("status");
    }
    Ok(())
}

/// The freshness lifetime in seconds (§4.2.1): s-maxage, max-age, Expires
/// minus Date, then the route's `cache_ttl`, then a heuristic (§4.2.2):
/// 10 % of the time since Last-Modified, capped.
pub(crate) fn lifetime(
    status: StatusCode,
    response: &HeaderMap,
    cc: &ResponseDirectives,
    date: u64,
    fresh: &Freshness,
) -> u64 {
    match (cc.s_maxage, cc.max_age) {
        (Seconds::Value(v), _) => return v,
        (Seconds::Invalid, _) => return 0,
        (Seconds::Absent, Seconds::Value(v)) => return v,
        (Seconds::Absent, Seconds::Invalid) => return 0,
        (Seconds::Absent, Seconds::Absent) => {}
    }
    if response.contains_key(header::EXPIRES) && !fresh.targeted(response) {
        // An invalid date, "0" included, is in the past (§5.3).
        return single(response, &header::EXPIRES)
            .and_then(date_of)
            .map_or(0, |expires| expires.saturating_sub(date));
    }
    if !(heuristically_cacheable(status) || cc.public) {
        return 0;
    }
    if let Some(ttl) = fresh.ttl {
        return ttl;
    }
    {
        if let Some(modified) = single(response, &header::LAST_MODIFIED).and_then(date_of) {
            return (date.saturating_sub(modified) / 10).min(fresh.heuristic_max);
        }
    }
    0
}

impl Stored {
    /// A response received at `response_time` for a request sent at
    /// `request_time`, to be stored with `body`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        request: &HeaderMap,
        cc: ResponseDirectives,
        request_time: SystemTime,
        response_time: SystemTime,
        fresh: &Freshness,
    ) -> Self {
        for name in &cc.private_fields {
            if let Ok(name) = HeaderName::from_bytes(name.as_bytes()) {
                headers.remove(name);
            }
        }
        // RFC 9110 §6.6.1: a cache adds the Date a response lacks.
        if !headers.contains_key(header::DATE) {
            if let Ok(v) = HeaderValue::from_str(&httpdate::fmt_http_date(response_time)) {
                headers.insert(header::DATE, v);
            }
        }
        let (initial_age, date) = initial_age(&headers, request_time, response_time);
        headers.remove(header::AGE);
        let lifetime = lifetime(status, &headers, &cc, date, fresh);
        Stored {
            status,
            vary: Vary::of(&headers, request),
            headers,
            body,
            initial_age,
            response_time: secs(response_time),
            lifetime,
            cc,
            scope: super::Scope::default(),
        }
    }

    /// The current age in seconds (§4.2.3).
    pub(crate) fn age(&self, now: SystemTime) -> u64 {
        self.initial_age + secs(now).saturating_sub(self.response_time)
    }

    /// Whether the response is fresh at age `age`.
    pub(crate) fn fresh_at(&self, age: u64) -> bool {
        self.lifetime > age
    }

    /// Whether a shared cache must not serve it stale (§5.2.2.2, §5.2.2.8,
    /// §5.2.2.10: s-maxage implies proxy-revalidate).
    pub(crate) fn must_revalidate(&self) -> bool {
        self.cc.must_revalidate || self.cc.proxy_revalidate || self.cc.s_maxage.present()
    }

    /// Whether a request with Authorization may be answered with it (§3.5).
    pub(crate) fn serves_credentials(&self) -> bool {
        self.cc.public || self.cc.must_revalidate || self.cc.s_maxage.present()
    }

    /// The validators to revalidate with (§4.3.1): If-None-Match from
    /// ETag, If-Modified-Since from Last-Modified.
    pub(crate) fn validators(&self) -> Vec<(HeaderName, HeaderValue)> {
        let mut out = Vec::new();
        if let Some(etag) = self.headers.get(header::ETAG) {
            out.push((header::IF_NONE_MATCH, etag.clone()));
        }
        if let Some(lm) = self.headers.get(header::LAST_MODIFIED) {
            out.push((header::IF_MODIFIED_SINCE, lm.clone()));
        }
        out
    }

    /// This response freshened by a 304 (§4.3.4): its fields replaced by
    /// the 304's, Content-Length excepted, and its age and lifetime
    /// computed anew.
    pub(crate) fn freshened(
        &self,
        not_modified: &HeaderMap,
        request: &HeaderMap,
        request_time: SystemTime,
        response_time: SystemTime,
        fresh: &Freshness,
    ) -> Stored {
        let mut headers = self.headers.clone();
        if !not_modified.contains_key(header::DATE) {
            // Dated anew when stored again: the 304 is the latest word.
            headers.remove(header::DATE);
        }
        let mut replaced: Vec<&HeaderName> = Vec::new();
        for (name, value) in not_modified {
            if *name == header::CONTENT_LENGTH {
                continue;
            }
            if !replaced.contains(&name) {
                headers.remove(name);
                replaced.push(name);
            }
            headers.append(name.clone(), value.clone());
        }
        let cc = fresh.directives(&headers);
        let mut renewed = Stored::new(
            self.status,
            headers,
            self.body.clone(),
            request,
            cc,
            request_time,
            response_time,
            fresh,
        );
        renewed.scope = self.scope.clone();
        renewed
    }

    /// Bytes this entry holds, roughly.
    pub(crate) fn weight(&self) -> u64 {
        let fields: usize = self
            .headers
            .iter()
            .map(|(n, v)| n.as_str().len() + v.len() + 32)
            .sum();
        (self.body.len() + fields + 256) as u64
    }
}

/// §4.2.3: the corrected initial age, and the Date value used (the
/// response time when the response has none).
fn initial_age(
    headers: &HeaderMap,
    request_time: SystemTime,
    response_time: SystemTime,
) -> (u64, u64) {
    let (requested, received) = (secs(request_time), secs(response_time));
    let date = single(headers, &header::DATE)
        .and_then(date_of)
        .unwrap_or(received);
    // A list (a field repeated or joined): the first member counts (§5.1).
    let age_value = headers
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(',').next())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    let apparent_age = received.saturating_sub(date);
    let response_delay = received.saturating_sub(requested);
    let corrected_age_value = age_value.saturating_add(response_delay);
    (apparent_age.max(corrected_age_value), date)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(fields: &[(&str, &str)]) -> HeaderMap {
        let mut m = HeaderMap::new();
        for (k, v) in fields {
            m.append(
                HeaderName::from_bytes(k.as_bytes()).expect("name"),
                v.parse().expect("value"),
            );
        }
        m
    }

    const FRESH: Freshness = Freshness {
        ttl: None,
        heuristic_max: 86400,
        cdn: false,
    };

    fn stored(fields: &[(&str, &str)], now: SystemTime) -> Stored {
        let headers = h(fields);
        let cc = ResponseDirectives::parse(&headers, &header::CACHE_CONTROL);
        Stored::new(
            StatusCode::OK,
            headers,
            Bytes::new(),
            &HeaderMap::new(),
            cc,
            now,
            now,
            &FRESH,
        )
    }

    #[test]
    fn lifetime_order_and_invalid_expires() {
        let now = SystemTime::now();
        let date = httpdate::fmt_http_date(now);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(100));
        assert_eq!(
            stored(&[("cache-control", "max-age=10, s-maxage=20")], now).lifetime,
            20
        );
        assert_eq!(
            stored(&[("cache-control", "max-age=10"), ("expires", &later)], now).lifetime,
            10
        );
        assert_eq!(
            stored(&[("date", &date), ("expires", &later)], now).lifetime,
            100
        );
        assert_eq!(
            stored(&[("date", &date), ("expires", "0")], now).lifetime,
            0
        );
        let old = httpdate::fmt_http_date(now - Duration::from_secs(1000));
        assert_eq!(
            stored(&[("date", &date), ("last-modified", &old)], now).lifetime,
            100
        );
    }

    #[test]
    fn age_counts_upstream_age_and_date() {
        let now = SystemTime::now();
        let s = stored(&[("age", "30")], now);
        assert_eq!(s.age(now), 30);
        assert_eq!(s.age(now + Duration::from_secs(5)), 35);
        let past = httpdate::fmt_http_date(now - Duration::from_secs(50));
        assert_eq!(stored(&[("date", &past)], now).age(now), 50);
        assert!(
            !s.headers.contains_key(header::AGE),
            "Age is computed, not stored"
        );
    }

    #[test]
    fn vary_normalises_and_star_never_matches() {
        let resp = h(&[("vary", "Accept-Encoding, X-A")]);
        let req = h(&[("accept-encoding", "GZIP,  br"), ("x-a", "1")]);
        let v = Vary::of(&resp, &req);
        assert!(v.matches(&h(&[("accept-encoding", "gzip, br"), ("x-a", "1")])));
        assert!(!v.matches(&h(&[("accept-encoding", "gzip, br")])));
        assert!(!Vary::of(&h(&[("vary", "x-a, *")]), &req).matches(&req));
    }
}
