//! `Cache-Control` (RFC 9111 §5.2) and its CDN-targeted twin
//! `CDN-Cache-Control` (RFC 9213): the directives a cache acts on.

use http::HeaderMap;
use http::header::HeaderName;

/// A delta-seconds value (RFC 9111 §1.2.2): a value too large to
/// represent is taken as 2^31 seconds.
fn delta_seconds(value: &str) -> Option<u64> {
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(value.parse::<u64>().map_or(1 << 31, |v| v.min(1 << 31)))
}

/// A directive's argument: a seconds value, or `Invalid` when it has one
/// that is not, or is repeated (RFC 9111 §4.2.1: then the response is
/// treated as stale).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Seconds {
    #[default]
    Absent,
    Value(u64),
    Invalid,
}

impl Seconds {
    fn set(&mut self, arg: Option<&str>) {
        *self = match (*self, arg.and_then(delta_seconds)) {
            (Seconds::Absent, Some(v)) => Seconds::Value(v),
            _ => Seconds::Invalid,
        };
    }

    pub(crate) fn present(self) -> bool {
        self != Seconds::Absent
    }
}

/// The directives of a response (RFC 9111 §5.2.2, RFC 5861).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ResponseDirectives {
    pub(crate) max_age: Seconds,
    pub(crate) s_maxage: Seconds,
    pub(crate) no_store: bool,
    /// `no-cache`, qualified or not (the qualified form is treated as the
    /// unqualified one: revalidating is always allowed).
    pub(crate) no_cache: bool,
    /// Unqualified `private`.
    pub(crate) private: bool,
    /// `private="a, b"`: fields a shared cache must not store.
    pub(crate) private_fields: Vec<String>,
    pub(crate) public: bool,
    pub(crate) must_revalidate: bool,
    pub(crate) proxy_revalidate: bool,
    pub(crate) must_understand: bool,
    pub(crate) stale_while_revalidate: Option<u64>,
    pub(crate) stale_if_error: Option<u64>,
}

/// The directives of a request (RFC 9111 §5.2.1, RFC 5861 §4).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct RequestDirectives {
    pub(crate) max_age: Option<u64>,
    /// `max-stale` without a value: any staleness.
    pub(crate) max_stale: Option<u64>,
    pub(crate) min_fresh: Option<u64>,
    pub(crate) no_cache: bool,
    pub(crate) no_store: bool,
    pub(crate) only_if_cached: bool,
    pub(crate) stale_if_error: Option<u64>,
}

/// Split a Cache-Control list into (lower-case name, argument) pairs,
/// honouring quoted strings (which may contain commas).
pub(crate) fn directives(headers: &HeaderMap, name: &HeaderName) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for line in headers.get_all(name) {
        let Ok(text) = line.to_str() else {
            continue;
        };
        let mut rest = text;
        while !rest.is_empty() {
            let (item, after) = split_item(rest);
            rest = after;
            let item = item.trim_matches([' ', '\t']);
            if item.is_empty() {
                continue;
            }
            match item.split_once('=') {
                None => out.push((item.to_ascii_lowercase(), None)),
                Some((k, v)) => {
                    let k = k.trim_matches([' ', '\t']).to_ascii_lowercase();
                    let v = v.trim_matches([' ', '\t']);
                    out.push((k, Some(unquote(v))));
                }
            }
        }
    }
    out
}

/// The first list item of `s` (up to a comma outside quotes), and the rest.
fn split_item(s: &str) -> (&str, &str) {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => return (&s[..i], &s[i + 1..]),
            _ => {}
        }
    }
    (s, "")
}

fn unquote(v: &str) -> String {
    match v.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c == '\\' {
                    if let Some(n) = chars.next() {
                        out.push(n);
                    }
                } else {
                    out.push(c);
                }
            }
            out
        }
        None => v.to_owned(),
    }
}

impl ResponseDirectives {
    /// The directives of `name` (`cache-control` or `cdn-cache-control`).
    pub(crate) fn parse(headers: &HeaderMap, name: &HeaderName) -> Self {
        let mut d = ResponseDirectives::default();
        for (k, v) in directives(headers, name) {
            match k.as_str() {
                "max-age" => d.max_age.set(v.as_deref()),
                "s-maxage" => d.s_maxage.set(v.as_deref()),
                "no-store" => d.no_store = true,
                "no-cache" => d.no_cache = true,
                "private" => match v {
                    Some(fields) if !fields.trim().is_empty() => d.private_fields.extend(
                        fields
                            .split(',')
                            .map(|f| f.trim().to_ascii_lowercase())
                            .filter(|f| !f.is_empty()),
                    ),
                    _ => d.private = true,
                },
                "public" => d.public = true,
                "must-revalidate" => d.must_revalidate = true,
                "proxy-revalidate" => d.proxy_revalidate = true,
                "must-understand" => d.must_understand = true,
                "stale-while-revalidate" => {
                    d.stale_while_revalidate = v.as_deref().and_then(delta_seconds);
                }
                "stale-if-error" => d.stale_if_error = v.as_deref().and_then(delta_seconds),
                _ => {}
            }
        }
        d
    }
}

impl RequestDirectives {
    /// The request's directives; `Pragma: no-cache` counts as `no-cache`
    /// when the request has no Cache-Control (RFC 9111 §5.4).
    pub(crate) fn parse(headers: &HeaderMap) -> Self {
        let mut d = RequestDirectives::default();
        let cc = http::header::CACHE_CONTROL;
        for (k, v) in directives(headers, &cc) {
            let secs = v.as_deref().and_then(delta_seconds);
            match k.as_str() {
                "max-age" => d.max_age = secs.or(Some(0)),
                "max-stale" => {
                    d.max_stale = Some(if v.is_some() {
                        secs.unwrap_or(0)
                    } else {
                        u64::MAX
                    })
                }
                "min-fresh" => d.min_fresh = secs.or(Some(u64::MAX)),
                "no-cache" => d.no_cache = true,
                "no-store" => d.no_store = true,
                "only-if-cached" => d.only_if_cached = true,
                "stale-if-error" => d.stale_if_error = secs,
                _ => {}
            }
        }
        if !headers.contains_key(&cc)
            && directives(headers, &http::header::PRAGMA)
                .iter()
                .any(|(k, _)| k == "no-cache")
        {
            d.no_cache = true;
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::CACHE_CONTROL;

    fn headers(lines: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for l in lines {
            h.append(CACHE_CONTROL, l.parse().expect("value"));
        }
        h
    }

    #[test]
    fn response_directives() {
        let d = ResponseDirectives::parse(
            &headers(&[
                "public, max-age=60",
                r#"private="set-cookie, x-a", s-maxage="30""#,
            ]),
            &CACHE_CONTROL,
        );
        assert!(d.public);
        assert_eq!(d.max_age, Seconds::Value(60));
        assert_eq!(d.s_maxage, Seconds::Value(30));
        assert!(!d.private);
        assert_eq!(d.private_fields, ["set-cookie", "x-a"]);
        let twice = ResponseDirectives::parse(&headers(&["max-age=5, max-age=6"]), &CACHE_CONTROL);
        assert_eq!(
            twice.max_age,
            Seconds::Invalid,
            "a repeated directive is invalid"
        );
        let bad =
            ResponseDirectives::parse(&headers(&["max-age=-1", "MUST-REVALIDATE"]), &CACHE_CONTROL);
        assert_eq!(bad.max_age, Seconds::Invalid);
        assert!(bad.must_revalidate);
        let huge =
            ResponseDirectives::parse(&headers(&["max-age=99999999999999999999"]), &CACHE_CONTROL);
        assert_eq!(huge.max_age, Seconds::Value(1 << 31));
    }

    #[test]
    fn request_directives() {
        let d = RequestDirectives::parse(&headers(&["max-stale, min-fresh=5", "only-if-cached"]));
        assert_eq!(d.max_stale, Some(u64::MAX));
        assert_eq!(d.min_fresh, Some(5));
        assert!(d.only_if_cached);
        let mut h = HeaderMap::new();
        h.insert(http::header::PRAGMA, "no-cache".parse().expect("value"));
        assert!(RequestDirectives::parse(&h).no_cache);
        h.insert(CACHE_CONTROL, "max-age=10".parse().expect("value"));
        assert!(
            !RequestDirectives::parse(&h).no_cache,
            "Cache-Control wins over Pragma"
        );
    }
}
