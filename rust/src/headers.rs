//! Header hygiene between hops (RFC 9110 §7.6): hop-by-hop fields are
//! dropped in both directions, forwarding fields are added.

use bytes::BytesMut;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Version, request};

use crate::server::ConnInfo;

/// The pseudonym this proxy uses in `Via` (RFC 9110 §7.6.3).
pub const VIA_PSEUDONYM: &str = "rproxy";

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Fields that describe one connection, never the message (RFC 9110 §7.6.1),
/// plus `Proxy-Authorization`/`Proxy-Authenticate`, which are for this proxy.
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == KEEP_ALIVE
        || name == header::TE
        || name == header::TRANSFER_ENCODING
        || name == header::UPGRADE
        || name == PROXY_CONNECTION
        || name == header::PROXY_AUTHORIZATION
        || name == header::PROXY_AUTHENTICATE
}

/// Field names listed in `Connection`, which are hop-by-hop too.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    let mut names = Vec::new();
    for value in headers.get_all(header::CONNECTION) {
        let Ok(text) = value.to_str() else { continue };
        for token in text.split(',') {
            let token = token.trim();
            if token.is_empty()
                || token.eq_ignore_ascii_case("close")
                || token.eq_ignore_ascii_case("keep-alive")
                || token.eq_ignore_ascii_case("upgrade")
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes()) {
                names.push(name);
            }
        }
    }
    names
}

/// The `Via` received-protocol for a version (RFC 9110 §7.6.3).
fn via_protocol(version: Version) -> &'static str {
    match version {
        Version::HTTP_10 => "1.0",
        Version::HTTP_2 => "2",
        _ => "1.1",
    }
}

fn field(out: &mut BytesMut, name: &str, value: &[u8]) {
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// The authority a request was sent to: the absolute-form or `:authority`
/// target wins over `Host` (RFC 9112 §3.2.2, RFC 9113 §8.3.1).
pub fn request_authority(parts: &request::Parts) -> Option<&[u8]> {
    match parts.uri.authority() {
        Some(a) => Some(a.as_str().as_bytes()),
        None => parts.headers.get(header::HOST).map(HeaderValue::as_bytes),
    }
}

/// Append the header section of a request forwarded upstream, without the
/// framing fields and the final empty line (the caller adds both).
///
/// `fallback_host` is used when the client sent no authority at all (HTTP/1.0).
pub fn write_upstream_fields(
    out: &mut BytesMut,
    parts: &request::Parts,
    conn: &ConnInfo,
    upgrade: bool,
    fallback_host: &str,
) {
    let headers = &parts.headers;
    let listed = connection_listed(headers);
    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    let mut cookies: Vec<&[u8]> = Vec::new();
    let mut te_trailers = false;
    for (name, value) in headers {
        if name == header::TE {
            te_trailers |= value
                .as_bytes()
                .split(|b| *b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"trailers"));
            continue;
        }
        if is_hop_by_hop(name)
            || name == header::HOST
            || name == header::CONTENT_LENGTH
            || name == header::EXPECT
            || name == X_FORWARDED_PROTO
            || name == X_FORWARDED_HOST
            || listed.contains(name)
        {
            continue;
        }
        if name == X_FORWARDED_FOR {
            forwarded_for.push(value.as_bytes());
            continue;
        }
        if name == header::COOKIE && parts.version == Version::HTTP_2 {
            // RFC 9113 §8.2.3: split cookies are joined for HTTP/1.1.
            cookies.push(value.as_bytes());
            continue;
        }
        field(out, name.as_str(), value.as_bytes());
    }
    let host = request_authority(parts).unwrap_or(fallback_host.as_bytes());
    field(out, "host", host);
    if !cookies.is_empty() {
        field(out, "cookie", &cookies.join(&b"; "[..]));
    }
    out.extend_from_slice(b"x-forwarded-for: ");
    for prior in forwarded_for {
        out.extend_from_slice(prior);
        out.extend_from_slice(b", ");
    }
    out.extend_from_slice(conn.client_ip.as_bytes());
    out.extend_from_slice(b"\r\n");
    field(out, "x-forwarded-proto", conn.scheme.as_bytes());
    if let Some(h) = request_authority(parts) {
        field(out, "x-forwarded-host", h);
    }
    out.extend_from_slice(b"via: ");
    out.extend_from_slice(via_protocol(parts.version).as_bytes());
    out.extend_from_slice(b" ");
    out.extend_from_slice(VIA_PSEUDONYM.as_bytes());
    out.extend_from_slice(b"\r\n");
    if te_trailers {
        field(out, "te", b"trailers");
    }
    if upgrade {
        for value in headers.get_all(header::UPGRADE) {
            field(out, "upgrade", value.as_bytes());
        }
        field(out, "connection", b"upgrade");
    }
}

/// Remove hop-by-hop fields from an upstream response and add `Via`.
/// A `101` keeps its `Upgrade`.
pub fn clean_response(headers: &mut HeaderMap, switching: bool) {
    let needs_work = headers
        .keys()
        .any(|n| is_hop_by_hop(n) && !(switching && n == header::UPGRADE));
    if needs_work {
        for name in connection_listed(headers) {
            headers.remove(&name);
        }
        for name in [
            header::CONNECTION,
            KEEP_ALIVE.clone(),
            header::TE,
            header::TRANSFER_ENCODING,
            PROXY_CONNECTION.clone(),
            header::PROXY_AUTHORIZATION,
            header::PROXY_AUTHENTICATE,
        ] {
            headers.remove(name);
        }
        if !switching {
            headers.remove(header::UPGRADE);
        }
    }
    headers.append(header::VIA, HeaderValue::from_static("1.1 rproxy"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::Request;
    use std::sync::Arc;

    fn conn() -> Arc<ConnInfo> {
        Arc::new(ConnInfo::new(
            "10.1.2.3:5555".parse().expect("addr"),
            "127.0.0.1:8080".parse().expect("addr"),
            "http",
        ))
    }

    fn forwarded(req: Request<()>, upgrade: bool) -> String {
        let (parts, ()) = req.into_parts();
        let mut out = BytesMut::new();
        write_upstream_fields(&mut out, &parts, &conn(), upgrade, "backend:9000");
        String::from_utf8(out.to_vec()).expect("utf8")
    }

    #[test]
    fn hop_by_hop_fields_are_dropped_and_forwarding_fields_added() {
        let req = Request::builder()
            .uri("/p")
            .header("host", "example.com")
            .header("connection", "keep-alive, X-Secret")
            .header("x-secret", "1")
            .header("keep-alive", "timeout=5")
            .header("te", "trailers, deflate")
            .header("transfer-encoding", "chunked")
            .header("upgrade", "websocket")
            .header("proxy-connection", "keep-alive")
            .header("proxy-authorization", "Basic Zm9v")
            .header("x-forwarded-for", "1.1.1.1")
            .header("x-forwarded-proto", "https")
            .header("accept", "*/*")
            .header("via", "1.0 edge")
            .body(())
            .expect("request");
        let text = forwarded(req, false);
        for gone in [
            "connection",
            "x-secret",
            "keep-alive",
            "transfer-encoding",
            "upgrade",
            "proxy-",
            "https",
        ] {
            assert!(!text.contains(gone), "{gone} in {text}");
        }
        assert!(text.contains("accept: */*\r\n"));
        assert!(text.contains("host: example.com\r\n"));
        assert!(text.contains("x-forwarded-for: 1.1.1.1, 10.1.2.3\r\n"));
        assert!(text.contains("x-forwarded-proto: http\r\n"));
        assert!(text.contains("x-forwarded-host: example.com\r\n"));
        assert!(text.contains("via: 1.0 edge\r\nhost"));
        assert!(text.contains("via: 1.1 rproxy\r\n"));
        assert!(text.contains("te: trailers\r\n"));
    }

    #[test]
    fn upgrades_keep_their_fields_and_absolute_targets_win() {
        let req = Request::builder()
            .uri("http://target.example/x")
            .header("host", "other")
            .header("connection", "Upgrade")
            .header("upgrade", "websocket")
            .body(())
            .expect("request");
        let text = forwarded(req, true);
        assert!(text.contains("host: target.example\r\n"), "{text}");
        assert!(text.contains("upgrade: websocket\r\nconnection: upgrade\r\n"));
        let req = Request::builder()
            .version(Version::HTTP_10)
            .uri("/")
            .body(())
            .expect("request");
        assert!(forwarded(req, false).contains("host: backend:9000\r\n"));
    }

    #[test]
    fn h2_cookies_are_joined() {
        let req = Request::builder()
            .version(Version::HTTP_2)
            .uri("http://h/")
            .header("cookie", "a=1")
            .header("cookie", "b=2")
            .body(())
            .expect("request");
        let text = forwarded(req, false);
        assert!(text.contains("cookie: a=1; b=2\r\n"), "{text}");
        assert!(text.contains("via: 2 rproxy\r\n"));
    }

    #[test]
    fn responses_lose_hop_by_hop_fields() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, x-internal"));
        h.insert("x-internal", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("proxy-authenticate", HeaderValue::from_static("Basic"));
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("content-type", HeaderValue::from_static("text/plain"));
        clean_response(&mut h, false);
        let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["content-type", "via"]);

        let mut h = HeaderMap::new();
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        h.insert("connection", HeaderValue::from_static("upgrade"));
        clean_response(&mut h, true);
        assert_eq!(h["upgrade"], "websocket");
        assert!(!h.contains_key("connection"));
    }
}
