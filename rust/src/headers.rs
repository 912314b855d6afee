//! Header hygiene between hops (RFC 9110 §7.6): hop-by-hop fields are
//! dropped in both directions, forwarding fields are added.

use std::borrow::Cow;
use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Version, request};

use crate::net::Cidr;
use crate::server::ConnInfo;

/// The pseudonym this proxy uses in `Via` (RFC 9110 §7.6.3).
pub const VIA_PSEUDONYM: &str = "rproxy";

static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
static X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
static X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
static FORWARDED: HeaderName = HeaderName::from_static("forwarded");
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

/// Where the fields of an outbound request go: straight into the request
/// head being written, or into a header map that hooks may still change.
pub trait FieldSink {
    /// Add one field.
    fn field(&mut self, name: &str, value: &[u8]);

    /// Add one field of the request as it was received.
    fn pass(&mut self, name: &HeaderName, value: &HeaderValue) {
        self.field(name.as_str(), value.as_bytes());
    }
}

impl FieldSink for BytesMut {
    fn field(&mut self, name: &str, value: &[u8]) {
        self.extend_from_slice(name.as_bytes());
        self.extend_from_slice(b": ");
        self.extend_from_slice(value);
        self.extend_from_slice(b"\r\n");
    }
}

impl FieldSink for HeaderMap {
    fn field(&mut self, name: &str, value: &[u8]) {
        // Names and values come from a parsed request or from fixed text,
        // so both are valid; a failure here would be a bug, not input.
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_bytes(value),
        ) {
            self.append(n, v);
        }
    }

    fn pass(&mut self, name: &HeaderName, value: &HeaderValue) {
        // Already valid, and the value shares the request's buffer.
        self.append(name.clone(), value.clone());
    }
}

/// The authority a request was sent to: the absolute-form or `:authority`
/// target wins over `Host` (RFC 9112 §3.2.2, RFC 9113 §8.3.1).
pub fn request_authority(parts: &request::Parts) -> Option<&[u8]> {
    match parts.uri.authority() {
        Some(a) => Some(a.as_str().as_bytes()),
        None => parts.headers.get(header::HOST).map(HeaderValue::as_bytes),
    }
}

/// The `Via` value this proxy adds for a request received with `version`.
fn via_value(version: Version) -> &'static [u8] {
    match version {
        Version::HTTP_10 => b"1.0 rproxy",
        Version::HTTP_2 => b"2 rproxy",
        _ => b"1.1 rproxy",
    }
}

/// Emit the header section of a request forwarded upstream, without the
/// framing fields (the caller adds those).
///
/// `host` replaces the `Host` the client asked for (a route may set one);
/// `fallback_host` is used when the client sent no authority at all (HTTP/1.0).
pub fn write_upstream_fields<S: FieldSink>(
    out: &mut S,
    parts: &request::Parts,
    conn: &ConnInfo,
    upgrade: bool,
    host: Option<&str>,
    fallback_host: &str,
) {
    let headers = &parts.headers;
    let listed = connection_listed(headers);
    // From a trusted proxy the forwarding fields are extended; from anyone
    // else they are replaced, so a client cannot forge its address.
    let trusted = conn.trusted.is_some();
    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    let mut forwarded: Vec<&[u8]> = Vec::new();
    let mut proto_in: Option<&[u8]> = None;
    let mut host_in: Option<&[u8]> = None;
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
            || listed.contains(name)
        {
            continue;
        }
        if name == X_FORWARDED_FOR || name == FORWARDED {
            if trusted {
                let list = if name == FORWARDED {
                    &mut forwarded
                } else {
                    &mut forwarded_for
                };
                list.push(value.as_bytes());
            }
            continue;
        }
        if name == X_FORWARDED_PROTO || name == X_FORWARDED_HOST {
            if trusted {
                let slot = if name == X_FORWARDED_PROTO {
                    &mut proto_in
                } else {
                    &mut host_in
                };
                slot.get_or_insert(value.as_bytes());
            }
            continue;
        }
        if name == header::COOKIE && parts.version == Version::HTTP_2 {
            // RFC 9113 §8.2.3: split cookies are joined for HTTP/1.1.
            cookies.push(value.as_bytes());
            continue;
        }
        out.pass(name, value);
    }
    let authority = request_authority(parts);
    let sent_host = host
        .map(str::as_bytes)
        .or(authority)
        .unwrap_or(fallback_host.as_bytes());
    out.field("host", sent_host);
    if !cookies.is_empty() {
        out.field("cookie", &cookies.join(&b"; "[..]));
    }
    forwarded_for.push(conn.client_ip.as_bytes());
    out.field("x-forwarded-for", &forwarded_for.join(&b", "[..]));
    out.field(
        "x-forwarded-proto",
        proto_in.unwrap_or(conn.scheme.as_bytes()),
    );
    if let Some(h) = host_in.or(authority) {
        out.field("x-forwarded-host", h);
    }
    let element = forwarded_element(conn, authority);
    forwarded.push(&element);
    out.field("forwarded", &forwarded.join(&b", "[..]));
    out.field("via", via_value(parts.version));
    if te_trailers {
        out.field("te", b"trailers");
    }
    if upgrade {
        for value in headers.get_all(header::UPGRADE) {
            out.pass(&header::UPGRADE, value);
        }
        out.field("connection", b"upgrade");
    }
}

/// This hop's `Forwarded` element (RFC 7239 §4): `for`, `proto` and `host`.
fn forwarded_element(conn: &ConnInfo, authority: Option<&[u8]>) -> Vec<u8> {
    let mut e = Vec::with_capacity(64);
    e.extend_from_slice(b"for=");
    match conn.client.ip().to_canonical() {
        IpAddr::V4(_) => e.extend_from_slice(conn.client_ip.as_bytes()),
        IpAddr::V6(_) => {
            // §6: an IPv6 node is bracketed, and so quoted.
            e.extend_from_slice(b"\"[");
            e.extend_from_slice(conn.client_ip.as_bytes());
            e.extend_from_slice(b"]\"");
        }
    }
    e.extend_from_slice(b";proto=");
    e.extend_from_slice(conn.scheme.as_bytes());
    if let Some(host) = authority {
        e.extend_from_slice(b";host=");
        let token = host
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if token {
            e.extend_from_slice(host);
        } else {
            e.push(b'"');
            for &b in host {
                if b == b'"' || b == b'\\' {
                    e.push(b'\\');
                }
                e.push(b);
            }
            e.push(b'"');
        }
    }
    e
}

/// The client's address as the request's policy sees it. From a trusted
/// proxy it is read from `X-Forwarded-For`, right to left: the first
/// address that is not a trusted proxy (or the leftmost, if all are; or
/// the last good one before an entry that is not an address). From anyone
/// else it is the peer's address.
pub fn client_ip<'a>(parts: &request::Parts, conn: &'a ConnInfo) -> Cow<'a, str> {
    let Some(trusted) = &conn.trusted else {
        return Cow::Borrowed(&conn.client_ip);
    };
    let mut client = Cow::Borrowed(conn.client_ip.as_str());
    let lines: Vec<&str> = parts
        .headers
        .get_all(&X_FORWARDED_FOR)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    for entry in lines.iter().rev().flat_map(|l| l.rsplit(',')) {
        let entry = entry.trim();
        let Some(ip) = entry
            .parse::<IpAddr>()
            .ok()
            .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        else {
            break;
        };
        let ip = ip.to_canonical();
        client = Cow::Owned(ip.to_string());
        if !Cidr::any_contains(trusted, ip) {
            break;
        }
    }
    client
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
        write_upstream_fields(&mut out, &parts, &conn(), upgrade, None, "backend:9000");
        String::from_utf8(out.to_vec()).expect("utf8")
    }

    #[test]
    fn forwarding_fields_from_trusted_proxies_are_extended() {
        let trusted: Arc<[Cidr]> = vec!["10.0.0.0/8".parse().expect("cidr")].into();
        let conn = ConnInfo::new(
            "10.1.2.3:5555".parse().expect("addr"),
            "127.0.0.1:8080".parse().expect("addr"),
            "http",
        )
        .trusting(&trusted);
        let (parts, ()) = Request::builder()
            .uri("/p")
            .header("host", "shop.example:8443")
            .header("x-forwarded-for", "198.51.100.7, 10.9.9.9")
            .header("x-forwarded-proto", "https")
            .header("x-forwarded-host", "shop.example")
            .header("forwarded", "for=198.51.100.7;proto=https")
            .body(())
            .expect("request")
            .into_parts();
        let mut out = BytesMut::new();
        write_upstream_fields(&mut out, &parts, &conn, false, None, "b");
        let text = String::from_utf8(out.to_vec()).expect("utf8");
        assert!(
            text.contains("x-forwarded-for: 198.51.100.7, 10.9.9.9, 10.1.2.3\r\n"),
            "{text}"
        );
        assert!(text.contains("x-forwarded-proto: https\r\n"));
        assert!(text.contains("x-forwarded-host: shop.example\r\n"));
        assert!(text.contains(
            "forwarded: for=198.51.100.7;proto=https, for=10.1.2.3;proto=http;host=\"shop.example:8443\"\r\n"
        ));
        // The client is the first address from the right that is not a trusted proxy.
        assert_eq!(client_ip(&parts, &conn), "198.51.100.7");
        let untrusted = ConnInfo::new(
            "203.0.113.1:1".parse().expect("addr"),
            "127.0.0.1:8080".parse().expect("addr"),
            "http",
        )
        .trusting(&trusted);
        assert_eq!(client_ip(&parts, &untrusted), "203.0.113.1");
        let (spoof, ()) = Request::builder()
            .header("x-forwarded-for", "10.0.0.5, garbage, 10.0.0.6")
            .body(())
            .expect("request")
            .into_parts();
        assert_eq!(client_ip(&spoof, &conn), "10.0.0.6");
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
        // The peer is not a trusted proxy: its forwarding fields are replaced.
        assert!(text.contains("x-forwarded-for: 10.1.2.3\r\n"));
        assert!(text.contains("x-forwarded-proto: http\r\n"));
        assert!(text.contains("forwarded: for=10.1.2.3;proto=http;host=example.com\r\n"));
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
