//! What a request is matched on: its normalised path, host and query
//! parameters (docs/routing.md, "What a request is matched on").

use std::borrow::Cow;

use http::{header, request};

/// The path routes are matched against (RFC 3986 §6.2.2): percent-encoded
/// unreserved characters decoded, other escapes in upper-case hex, runs of
/// `/` merged, `.` and `..` segments removed (§5.2.4). `Err` for a
/// malformed escape or a `..` that climbs above the root.
pub(crate) fn normalize_path(raw: &str) -> Result<Cow<'_, str>, &'static str> {
    if !raw.starts_with('/') {
        return Ok(Cow::Borrowed(raw));
    }
    if !raw.contains('%') && !raw.contains("//") && !raw.contains("/.") {
        return Ok(Cow::Borrowed(raw));
    }
    let bytes = raw.as_bytes();
    let mut decoded = String::with_capacity(raw.len());
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if b == b'%' {
            let (Some(hi), Some(lo)) = (
                bytes.get(i + 1).and_then(|c| hex(*c)),
                bytes.get(i + 2).and_then(|c| hex(*c)),
            ) else {
                return Err("malformed percent-encoding in the path");
            };
            let v = hi << 4 | lo;
            if v.is_ascii_alphanumeric() || matches!(v, b'-' | b'.' | b'_' | b'~') {
                decoded.push(char::from(v));
            } else {
                decoded.push('%');
                decoded.push(char::from(HEX[usize::from(hi)]));
                decoded.push(char::from(HEX[usize::from(lo)]));
            }
            i += 3;
        } else {
            // The request line holds only visible ASCII; keep any other
            // character whole.
            let ch = raw[i..].chars().next().unwrap_or('\u{fffd}');
            decoded.push(ch);
            i += ch.len_utf8();
        }
    }
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    let last = segments.len() - 1;
    for (n, seg) in segments.iter().enumerate() {
        match *seg {
            "" if n != last => {} // a run of slashes
            "." => {
                if n == last {
                    out.push("");
                }
            }
            ".." => {
                if out.pop().is_none() {
                    return Err("the path climbs above the root");
                }
                if n == last {
                    out.push("");
                }
            }
            s => out.push(s),
        }
    }
    let mut path = String::with_capacity(decoded.len());
    for seg in &out {
        path.push('/');
        path.push_str(seg);
    }
    if path.is_empty() {
        path.push('/');
    }
    Ok(Cow::Owned(path))
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The host a request asks for: the target's authority, else the `Host`
/// field; lower-case, without port and trailing dot. Empty when absent.
pub(crate) fn request_host(parts: &request::Parts) -> Cow<'_, str> {
    let authority = match parts.uri.authority() {
        Some(a) => a.as_str(),
        None => match parts.headers.get(header::HOST).map(|h| h.to_str()) {
            Some(Ok(h)) => h,
            _ => return Cow::Borrowed(""),
        },
    };
    let host = match authority.strip_prefix('[') {
        Some(rest) => rest.split(']').next().unwrap_or(rest),
        None => authority.rsplit_once(':').map_or(authority, |(h, _)| h),
    };
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(host.to_ascii_lowercase())
    } else {
        Cow::Borrowed(host)
    }
}

/// `%XX` decoded (invalid escapes kept as they are), then read as UTF-8
/// with replacement characters, as Python's `urllib.parse.unquote` does.
pub(crate) fn percent_decode(s: &str) -> Cow<'_, str> {
    if !s.contains('%') {
        return Cow::Borrowed(s);
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            if let (Some(hi), Some(lo)) = (
                b.get(i + 1).and_then(|c| hex(*c)),
                b.get(i + 2).and_then(|c| hex(*c)),
            ) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// The query's parameters: `&`-separated `name=value` parts (a part
/// without `=` has the empty value), names and values percent-decoded.
pub(crate) fn query_params(query: &str) -> Vec<(Cow<'_, str>, Cow<'_, str>)> {
    query
        .split('&')
        .map(|part| {
            let (name, value) = part.split_once('=').unwrap_or((part, ""));
            (percent_decode(name), percent_decode(value))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_as_rfc_3986_says() {
        let n = |p: &str| normalize_path(p).map(|c| c.into_owned());
        assert_eq!(n("/a/b").as_deref(), Ok("/a/b"));
        assert_eq!(n("/a/../admin").as_deref(), Ok("/admin"));
        assert_eq!(n("/%61dmin").as_deref(), Ok("/admin"));
        assert_eq!(n("//admin//x/").as_deref(), Ok("/admin/x/"));
        assert_eq!(n("/a/./b/.").as_deref(), Ok("/a/b/"));
        assert_eq!(n("/a/b/..").as_deref(), Ok("/a/"));
        assert_eq!(n("/a/%2fb%3a").as_deref(), Ok("/a/%2Fb%3A"));
        assert_eq!(n("/%2e%2E/x"), Err("the path climbs above the root"));
        assert_eq!(n("/.."), Err("the path climbs above the root"));
        assert_eq!(n("/a/%zz"), Err("malformed percent-encoding in the path"));
        assert_eq!(n("/a%4"), Err("malformed percent-encoding in the path"));
        assert_eq!(n("/.hidden/..").as_deref(), Ok("/"));
        assert_eq!(n("*").as_deref(), Ok("*"));
    }

    #[test]
    fn hosts_lose_port_case_and_trailing_dot() {
        let parts = |host: &str| {
            let (p, ()) = http::Request::get("/")
                .header("host", host)
                .body(())
                .expect("request")
                .into_parts();
            p
        };
        assert_eq!(request_host(&parts("Example.COM:8080")), "example.com");
        assert_eq!(request_host(&parts("example.com.")), "example.com");
        assert_eq!(request_host(&parts("[::1]:80")), "::1");
        let (abs, ()) = http::Request::get("http://Other.org/x")
            .header("host", "example.com")
            .body(())
            .expect("request")
            .into_parts();
        assert_eq!(request_host(&abs), "other.org");
    }

    #[test]
    fn query_parameters_decode() {
        let q = query_params("a=1&b=%41%zz&c&d=x+y&e=%C3%A9");
        let q: Vec<(String, String)> = q
            .into_iter()
            .map(|(n, v)| (n.into_owned(), v.into_owned()))
            .collect();
        assert_eq!(
            q,
            [
                ("a", "1"),
                ("b", "A%zz"),
                ("c", ""),
                ("d", "x+y"),
                ("e", "é")
            ]
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
        );
    }
}
