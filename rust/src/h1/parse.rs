//! Strict parsing of HTTP/1.x message heads (RFC 9112).
//!
//! `httparse` tokenises the start line and the field lines; this module adds
//! the rules a proxy needs so that no request or response is ever forwarded
//! with a framing the next hop could read differently:
//!
//! * requests: exactly one valid `Host` on HTTP/1.1 (§3.2), no
//!   `Content-Length` together with `Transfer-Encoding` (§6.3), no duplicate
//!   or non-numeric `Content-Length`, `Transfer-Encoding` exactly `chunked`
//!   (§6.1), none at all on HTTP/1.0, size limits mapped to 414 / 431;
//! * responses: a valid status code, the same `Content-Length` and
//!   `Transfer-Encoding` rules, and the body-length algorithm of §6.3.
//!
//! NUL, bare CR, obs-fold and whitespace before the colon are rejected by
//! `httparse` itself in its default (strict) configuration.

use std::mem::MaybeUninit;

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Method, StatusCode, Uri, Version};

use crate::error::{Error, ErrorKind, Result};

/// Header fields parsed on the stack; larger `max_headers` use the heap.
const STACK_HEADERS: usize = 128;

/// Limits applied while parsing a request head.
#[derive(Debug, Clone, Copy)]
pub struct HeadLimits {
    /// Largest head (start line and fields), in bytes.
    pub max_header_bytes: usize,
    /// Most header fields.
    pub max_headers: usize,
    /// Longest request target.
    pub max_uri_size: usize,
}

/// How a message body is delimited (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    Empty,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked transfer coding.
    Chunked,
    /// Until the connection closes (responses only).
    Close,
}

/// A parsed and validated request head.
#[derive(Debug)]
pub struct RequestHead {
    /// Request method.
    pub method: Method,
    /// Request target as received.
    pub uri: Uri,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Header fields, framing fields included.
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the client allows the connection to be reused.
    pub keep_alive: bool,
    /// `Expect: 100-continue` on an HTTP/1.1 request.
    pub expect_continue: bool,
    /// The client asks for a protocol upgrade (other than h2c).
    pub upgrade: bool,
}

/// A parsed and validated response head.
#[derive(Debug)]
pub struct ResponseHead {
    /// Status code.
    pub status: StatusCode,
    /// HTTP/1.0 or HTTP/1.1.
    pub version: Version,
    /// Header fields.
    pub headers: HeaderMap,
    /// How the body is delimited.
    pub framing: Framing,
    /// Whether the server allows the connection to be reused.
    pub keep_alive: bool,
}

fn bad(context: &'static str) -> Error {
    Error::new(ErrorKind::BadRequest, context)
}

/// Offset of `part` inside `base`; `part` must be a sub-slice of `base`.
fn offset(base: &[u8], part: &[u8]) -> usize {
    part.as_ptr() as usize - base.as_ptr() as usize
}

/// Byte ranges of one field's name and value in the head.
type FieldRange = ((usize, usize), (usize, usize));

/// Raw results of tokenising a head: byte ranges into the buffer. The
/// field ranges go to a per-thread scratch list, so parsing allocates
/// nothing but the header map itself.
struct RawHead {
    len: usize,
    version: u8,
    method: (usize, usize),
    target: (usize, usize),
    code: u16,
}

thread_local! {
    static FIELDS: std::cell::RefCell<Vec<FieldRange>> = const { std::cell::RefCell::new(Vec::new()) };
}

fn field_ranges(buf: &[u8], headers: &[httparse::Header<'_>], out: &mut Vec<FieldRange>) {
    out.clear();
    out.extend(headers.iter().map(|h| {
        let o = offset(buf, h.name.as_bytes());
        let v = offset(buf, h.value);
        ((o, o + h.name.len()), (v, v + h.value.len()))
    }));
}

/// Run `parse` with room for `max_headers` fields: on the stack up to
/// [`STACK_HEADERS`], on the heap beyond.
fn with_slots<'b, R>(
    max_headers: usize,
    parse: impl FnOnce(&mut [MaybeUninit<httparse::Header<'b>>]) -> R,
) -> R {
    if max_headers <= STACK_HEADERS {
        let mut stack = [const { MaybeUninit::<httparse::Header<'b>>::uninit() }; STACK_HEADERS];
        parse(&mut stack[..max_headers])
    } else {
        let mut heap = Vec::with_capacity(max_headers);
        heap.resize_with(max_headers, MaybeUninit::uninit);
        parse(&mut heap)
    }
}

fn tokenise_request(
    buf: &[u8],
    max_headers: usize,
    fields: &mut Vec<FieldRange>,
) -> httparse::Result<RawHead> {
    with_slots(max_headers, |slots| {
        let mut req = httparse::Request::new(&mut []);
        let status = httparse::ParserConfig::default()
            .parse_request_with_uninit_headers(&mut req, buf, slots)?;
        let httparse::Status::Complete(len) = status else {
            return Ok(httparse::Status::Partial);
        };
        let method = req.method.unwrap_or_default().as_bytes();
        let target = req.path.unwrap_or_default().as_bytes();
        field_ranges(buf, req.headers, fields);
        Ok(httparse::Status::Complete(RawHead {
            len,
            version: req.version.unwrap_or(1),
            method: (offset(buf, method), offset(buf, method) + method.len()),
            target: (offset(buf, target), offset(buf, target) + target.len()),
            code: 0,
        }))
    })
}

fn tokenise_response(
    buf: &[u8],
    max_headers: usize,
    fields: &mut Vec<FieldRange>,
) -> httparse::Result<RawHead> {
    with_slots(max_headers, |slots| {
        let mut res = httparse::Response::new(&mut []);
        let status = httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut res, buf, slots)?;
        let httparse::Status::Complete(len) = status else {
            return Ok(httparse::Status::Partial);
        };
        field_ranges(buf, res.headers, fields);
        Ok(httparse::Status::Complete(RawHead {
            len,
            version: res.version.unwrap_or(1),
            method: (0, 0),
            target: (0, 0),
            code: res.code.unwrap_or(0),
        }))
    })
}

/// What the framing fields of a head said, gathered while building the map.
#[derive(Default)]
struct FramingFields {
    content_length: Option<u64>,
    content_length_count: usize,
    content_length_invalid: bool,
    transfer_encoding: Option<TransferCoding>,
    host_count: usize,
    close: bool,
    keep_alive: bool,
    upgrade_token: bool,
}

/// The result of reading a `Transfer-Encoding` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TransferCoding {
    /// Exactly `chunked`.
    Chunked,
    /// `chunked` last, preceded by codings we recognise but do not implement.
    Unsupported,
    /// Anything else: `chunked` not last, repeated, unknown tokens, empty.
    Invalid,
}

fn read_transfer_coding(previous: Option<TransferCoding>, value: &[u8]) -> TransferCoding {
    // Several Transfer-Encoding lines form one list (RFC 9110 §5.3); a second
    // line after a complete `chunked` means chunked was applied twice.
    if previous.is_some() {
        return TransferCoding::Invalid;
    }
    let Ok(text) = std::str::from_utf8(value) else {
        return TransferCoding::Invalid;
    };
    let codings: Vec<&str> = text.split(',').map(str::trim).collect();
    match codings.as_slice() {
        [only] if only.eq_ignore_ascii_case("chunked") => TransferCoding::Chunked,
        [rest @ .., last] if last.eq_ignore_ascii_case("chunked") && !rest.is_empty() => {
            let known = |c: &&str| {
                ["gzip", "x-gzip", "deflate", "compress", "x-compress"]
                    .iter()
                    .any(|k| c.eq_ignore_ascii_case(k))
            };
            if rest.iter().all(known) {
                TransferCoding::Unsupported
            } else {
                TransferCoding::Invalid
            }
        }
        _ => TransferCoding::Invalid,
    }
}

fn parse_content_length(value: &[u8]) -> Option<u64> {
    // RFC 9110 §8.6: Content-Length = 1*DIGIT. Lists ("5, 5") are refused.
    if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    value.iter().try_fold(0u64, |n, d| {
        n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
    })
}

fn has_token(value: &[u8], token: &str) -> bool {
    value
        .split(|b| *b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
}

/// Fields a response never carries past this hop (RFC 9110 §7.6.1); `Upgrade`
/// is kept for a 101 and removed later otherwise.
fn response_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::PROXY_AUTHENTICATE
        || name == header::PROXY_AUTHORIZATION
        || name.as_str() == "keep-alive"
        || name.as_str() == "proxy-connection"
}

/// Build the header map from the raw field ranges, noting framing fields.
/// With `drop_hop_by_hop` the connection-specific fields (and any field that
/// `Connection` names) are noted but left out of the map.
fn build_headers(
    head: &Bytes,
    fields: &[FieldRange],
    on_error: fn(&'static str) -> Error,
    drop_hop_by_hop: bool,
) -> Result<(HeaderMap, FramingFields)> {
    let mut map = HeaderMap::with_capacity(fields.len());
    let mut ff = FramingFields::default();
    // Names listed in Connection: skipped when they follow it, removed when
    // they came first (rare, and the only case that reorders the map).
    let mut listed: Vec<HeaderName> = Vec::new();
    let mut listed_late = false;
    for &((ns, ne), (vs, ve)) in fields {
        let name = HeaderName::from_bytes(&head[ns..ne])
            .map_err(|_| on_error("invalid header field name"))?;
        let value = HeaderValue::from_maybe_shared(head.slice(vs..ve))
            .map_err(|_| on_error("invalid header field value"))?;
        let v = value.as_bytes();
        if name == header::CONTENT_LENGTH {
            ff.content_length_count += 1;
            match parse_content_length(v) {
                Some(n) => ff.content_length = Some(n),
                None => ff.content_length_invalid = true,
            }
        } else if name == header::TRANSFER_ENCODING {
            ff.transfer_encoding = Some(read_transfer_coding(ff.transfer_encoding, v));
        } else if name == header::HOST {
            ff.host_count += 1;
        } else if name == header::CONNECTION {
            ff.close |= has_token(v, "close");
            ff.keep_alive |= has_token(v, "keep-alive");
            ff.upgrade_token |= has_token(v, "upgrade");
            if drop_hop_by_hop {
                for token in v.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                    if token.eq_ignore_ascii_case(b"close") {
                        continue;
                    }
                    if let Ok(named) = HeaderName::from_bytes(token) {
                        if named != header::UPGRADE && !response_hop_by_hop(&named) {
                            listed_late |= map.contains_key(&named);
                            listed.push(named);
                        }
                    }
                }
            }
        }
        if drop_hop_by_hop && (response_hop_by_hop(&name) || listed.contains(&name)) {
            continue;
        }
        map.append(name, value);
    }
    if listed_late {
        for name in &listed {
            map.remove(name);
        }
    }
    Ok((map, ff))
}

/// Whether the start of `buf` could still become the HTTP/2 connection preface.
pub fn maybe_h2_preface(buf: &[u8]) -> bool {
    let n = buf.len().min(H2_PREFACE.len());
    buf[..n] == H2_PREFACE[..n]
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Parse a request head from the front of `buf`.
///
/// Returns `Ok(None)` when more bytes are needed, and consumes the head from
/// `buf` on success. Errors carry the status to answer with; the connection
/// must be closed after answering.
pub fn parse_request(buf: &mut BytesMut, limits: &HeadLimits) -> Result<Option<RequestHead>> {
    FIELDS.with_borrow_mut(|fields| parse_request_with(buf, limits, fields))
}

fn parse_request_with(
    buf: &mut BytesMut,
    limits: &HeadLimits,
    fields: &mut Vec<FieldRange>,
) -> Result<Option<RequestHead>> {
    let raw = match tokenise_request(buf, limits.max_headers, fields) {
        Ok(httparse::Status::Complete(raw)) => raw,
        Ok(httparse::Status::Partial) => {
            check_partial_request(buf, limits)?;
            return Ok(None);
        }
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Error::new(
                ErrorKind::HeadersTooLarge,
                "too many header fields",
            ));
        }
        Err(httparse::Error::Version) if looks_like_http_version(buf) => {
            return Err(Error::new(
                ErrorKind::VersionNotSupported,
                "unsupported HTTP version",
            ));
        }
        Err(_) => return Err(bad("malformed request head")),
    };
    if raw.target.1 - raw.target.0 > limits.max_uri_size {
        return Err(Error::new(ErrorKind::UriTooLong, "request target too long"));
    }
    if raw.len > limits.max_header_bytes {
        return Err(Error::new(
            ErrorKind::HeadersTooLarge,
            "request head too large",
        ));
    }
    let head = buf.split_to(raw.len).freeze();
    let method =
        Method::from_bytes(&head[raw.method.0..raw.method.1]).map_err(|_| bad("invalid method"))?;
    let uri = Uri::from_maybe_shared(head.slice(raw.target.0..raw.target.1))
        .map_err(|_| bad("invalid request target"))?;
    check_target_form(&method, &uri)?;
    let version = if raw.version == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let (headers, ff) = build_headers(&head, fields, bad, false)?;
    let framing = request_framing(&ff, version)?;
    check_host(&headers, &ff, version)?;

    let expect_continue = match headers.get(header::EXPECT) {
        None => false,
        Some(v) if v.as_bytes().eq_ignore_ascii_case(b"100-continue") => {
            // RFC 9110 §10.1.1: ignored in HTTP/1.0 requests.
            version == Version::HTTP_11
        }
        Some(_) => {
            return Err(Error::new(
                ErrorKind::ExpectationFailed,
                "unsupported expectation",
            ));
        }
    };
    let keep_alive = if version == Version::HTTP_11 {
        !ff.close
    } else {
        ff.keep_alive && !ff.close
    };
    let upgrade = version == Version::HTTP_11
        && ff.upgrade_token
        && headers
            .get_all(header::UPGRADE)
            .iter()
            .any(|v| !has_token(v.as_bytes(), "h2c"));
    Ok(Some(RequestHead {
        method,
        uri,
        version,
        headers,
        framing,
        keep_alive,
        expect_continue,
        upgrade,
    }))
}

/// A partial head that can never become acceptable is refused early.
fn check_partial_request(buf: &[u8], limits: &HeadLimits) -> Result<()> {
    match memchr_newline(buf) {
        None if buf.len() > limits.max_uri_size + 64 => {
            Err(Error::new(ErrorKind::UriTooLong, "request target too long"))
        }
        _ if buf.len() > limits.max_header_bytes => Err(Error::new(
            ErrorKind::HeadersTooLarge,
            "request head too large",
        )),
        _ => Ok(()),
    }
}

fn memchr_newline(buf: &[u8]) -> Option<usize> {
    buf.iter().position(|b| *b == b'\n')
}

/// `METHOD SP target SP HTTP/d.d` with a version httparse refuses → 505.
fn looks_like_http_version(buf: &[u8]) -> bool {
    let line = match memchr_newline(buf) {
        Some(n) => &buf[..n],
        None => return false,
    };
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Some(pos) = line.iter().rposition(|b| *b == b' ') else {
        return false;
    };
    let v = &line[pos + 1..];
    v.len() == 8
        && v.starts_with(b"HTTP/")
        && v[5].is_ascii_digit()
        && v[6] == b'.'
        && v[7].is_ascii_digit()
}

/// RFC 9112 §3.2: origin-form for most methods, authority-form only for
/// CONNECT, asterisk-form only for OPTIONS, absolute-form http(s) for any.
fn check_target_form(method: &Method, uri: &Uri) -> Result<()> {
    let ok = if uri.path() == "*" && uri.authority().is_none() {
        method == Method::OPTIONS
    } else if let Some(scheme) = uri.scheme_str() {
        (scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https"))
            && uri.authority().is_some_and(|a| !a.as_str().contains('@'))
    } else if uri.authority().is_some() {
        method == Method::CONNECT
    } else {
        uri.path().starts_with('/')
    };
    if ok {
        Ok(())
    } else {
        Err(bad("invalid request target form"))
    }
}

fn request_framing(ff: &FramingFields, version: Version) -> Result<Framing> {
    if ff.content_length_invalid || ff.content_length_count > 1 {
        return Err(bad("invalid or repeated Content-Length"));
    }
    match (ff.transfer_encoding, ff.content_length) {
        (None, None) => Ok(Framing::Empty),
        (None, Some(0)) => Ok(Framing::Empty),
        (None, Some(n)) => Ok(Framing::Length(n)),
        (Some(_), Some(_)) => Err(bad("both Content-Length and Transfer-Encoding")),
        (Some(_), None) if version == Version::HTTP_10 => {
            // RFC 9112 §6.1: framing of an HTTP/1.0 message with
            // Transfer-Encoding is faulty.
            Err(bad("Transfer-Encoding in an HTTP/1.0 request"))
        }
        (Some(TransferCoding::Chunked), None) => Ok(Framing::Chunked),
        (Some(TransferCoding::Unsupported), None) => Err(Error::new(
            ErrorKind::NotImplemented,
            "unsupported transfer coding",
        )),
        (Some(TransferCoding::Invalid), None) => Err(bad("invalid Transfer-Encoding")),
    }
}

/// RFC 9112 §3.2: exactly one Host on HTTP/1.1, at most one on HTTP/1.0,
/// and its value must be a valid `uri-host [":" port]`.
fn check_host(headers: &HeaderMap, ff: &FramingFields, version: Version) -> Result<()> {
    if ff.host_count > 1 {
        return Err(bad("more than one Host"));
    }
    match headers.get(header::HOST) {
        None if version == Version::HTTP_11 => Err(bad("missing Host")),
        None => Ok(()),
        Some(v) => {
            if valid_host(v.as_bytes()) {
                Ok(())
            } else {
                Err(bad("invalid Host"))
            }
        }
    }
}

/// Whether `value` is a `uri-host [":" port]` (RFC 9110 §7.2, RFC 3986 §3.2.2).
pub fn valid_host(value: &[u8]) -> bool {
    let (host, port) = if value.first() == Some(&b'[') {
        // IP-literal: IPv6 or IPvFuture in brackets.
        let Some(end) = value.iter().position(|b| *b == b']') else {
            return false;
        };
        let inner = &value[1..end];
        if inner.is_empty()
            || !inner
                .iter()
                .all(|b| b.is_ascii_hexdigit() || matches!(b, b':' | b'.' | b'v' | b'V'))
        {
            return false;
        }
        match &value[end + 1..] {
            [] => return true,
            [b':', port @ ..] => (&value[..=end], port),
            _ => return false,
        }
    } else {
        match value.iter().rposition(|b| *b == b':') {
            Some(i) => (&value[..i], &value[i + 1..]),
            None => (value, &b""[..]),
        }
    };
    // reg-name: unreserved, pct-encoded and sub-delims (no userinfo, no spaces).
    let reg_name = |b: &u8| {
        b.is_ascii_alphanumeric()
            || matches!(
                b,
                b'-' | b'.'
                    | b'_'
                    | b'~'
                    | b'%'
                    | b'!'
                    | b'$'
                    | b'&'
                    | b'\''
                    | b'('
                    | b')'
                    | b'*'
                    | b'+'
                    | b','
                    | b';'
                    | b'='
            )
    };
    !host.is_empty()
        && (host[0] == b'[' || host.iter().all(reg_name))
        && port.len() <= 5
        && port.iter().all(u8::is_ascii_digit)
}

/// Parse a response head from the front of `buf`, for a request made with
/// `method`. Returns `Ok(None)` when more bytes are needed.
///
/// Any error means the response is malformed: the caller answers 502 and
/// must not reuse the connection.
pub fn parse_response(
    buf: &mut BytesMut,
    method: &Method,
    max_header_bytes: usize,
    max_headers: usize,
) -> Result<Option<ResponseHead>> {
    FIELDS.with_borrow_mut(|fields| {
        parse_response_with(buf, method, max_header_bytes, max_headers, fields)
    })
}

fn parse_response_with(
    buf: &mut BytesMut,
    method: &Method,
    max_header_bytes: usize,
    max_headers: usize,
    fields: &mut Vec<FieldRange>,
) -> Result<Option<ResponseHead>> {
    let proto = |context| Error::new(ErrorKind::UpstreamProtocol, context);
    let raw = match tokenise_response(buf, max_headers, fields) {
        Ok(httparse::Status::Complete(raw)) => raw,
        Ok(httparse::Status::Partial) => {
            if buf.len() > max_header_bytes {
                return Err(proto("response head too large"));
            }
            return Ok(None);
        }
        Err(_) => return Err(proto("malformed response head")),
    };
    if raw.len > max_header_bytes {
        return Err(proto("response head too large"));
    }
    let status = match StatusCode::from_u16(raw.code) {
        Ok(s) if (100..=599).contains(&raw.code) => s,
        _ => return Err(proto("invalid status code")),
    };
    // Copied rather than shared: the header map may outlive the exchange,
    // and a read buffer still shared when its connection is reused would
    // have to be allocated afresh for every response.
    let head = Bytes::copy_from_slice(&buf[..raw.len]);
    buf.advance(raw.len);
    let version = if raw.version == 1 {
        Version::HTTP_11
    } else {
        Version::HTTP_10
    };
    let (headers, ff) = build_headers(&head, fields, proto, true)?;
    if ff.content_length_invalid || ff.content_length_count > 1 {
        return Err(proto("invalid or repeated Content-Length"));
    }
    if ff.transfer_encoding.is_some() && ff.content_length.is_some() {
        return Err(proto("both Content-Length and Transfer-Encoding"));
    }
    if ff
        .transfer_encoding
        .is_some_and(|te| te != TransferCoding::Chunked)
    {
        return Err(proto("unsupported Transfer-Encoding"));
    }
    // RFC 9112 §6.3, in order.
    let framing = if method == Method::HEAD
        || status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        Framing::Empty
    } else if ff.transfer_encoding.is_some() {
        Framing::Chunked
    } else {
        match ff.content_length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::Close,
        }
    };
    let keep_alive =
        framing != Framing::Close && !ff.close && (version == Version::HTTP_11 || ff.keep_alive);
    Ok(Some(ResponseHead {
        status,
        version,
        headers,
        framing,
        keep_alive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: HeadLimits = HeadLimits {
        max_header_bytes: 1024,
        max_headers: 8,
        max_uri_size: 64,
    };

    fn req(raw: &str) -> Result<Option<RequestHead>> {
        parse_request(&mut BytesMut::from(raw), &LIMITS)
    }

    fn kind(raw: &str) -> ErrorKind {
        req(raw).expect_err(raw).kind()
    }

    #[test]
    fn parses_a_simple_request_and_leaves_the_rest() {
        let mut buf = BytesMut::from("GET /a?b=1 HTTP/1.1\r\nHost: x\r\n\r\nGET /next");
        let head = parse_request(&mut buf, &LIMITS)
            .expect("ok")
            .expect("complete");
        assert_eq!(head.method, Method::GET);
        assert_eq!(head.uri.path(), "/a");
        assert_eq!(head.uri.query(), Some("b=1"));
        assert_eq!(head.framing, Framing::Empty);
        assert!(head.keep_alive && !head.expect_continue && !head.upgrade);
        assert_eq!(&buf[..], b"GET /next");
    }

    #[test]
    fn partial_heads_wait_for_more() {
        assert!(req("GET / HTTP/1.1\r\nHost: x\r\n").expect("ok").is_none());
    }

    #[test]
    fn framing_fields() {
        let h = req("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert_eq!(h.framing, Framing::Length(5));
        let h = req("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: Chunked\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert_eq!(h.framing, Framing::Chunked);
    }

    #[test]
    fn ambiguous_framing_is_refused() {
        use ErrorKind::*;
        let cases = [
            (
                "Content-Length: 5\r\nTransfer-Encoding: chunked",
                BadRequest,
            ),
            (
                "Transfer-Encoding: chunked\r\nContent-Length: 5",
                BadRequest,
            ),
            ("Content-Length: 5\r\nContent-Length: 6", BadRequest),
            ("Content-Length: 5\r\nContent-Length: 5", BadRequest),
            ("Content-Length: 5, 5", BadRequest),
            ("Content-Length: +5", BadRequest),
            ("Content-Length: 99999999999999999999", BadRequest),
            ("Transfer-Encoding: chunked, identity", BadRequest),
            ("Transfer-Encoding: identity", BadRequest),
            (
                "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
                BadRequest,
            ),
            ("Transfer-Encoding: chunked, chunked", BadRequest),
            ("Transfer-Encoding: xchunked", BadRequest),
            ("Transfer-Encoding: gzip, chunked", NotImplemented),
        ];
        for (fields, want) in cases {
            let raw = format!("POST / HTTP/1.1\r\nHost: x\r\n{fields}\r\n\r\n");
            assert_eq!(kind(&raw), want, "{fields:?}");
        }
        assert_eq!(
            kind("POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"),
            BadRequest
        );
    }

    #[test]
    fn malformed_fields_are_refused() {
        for raw in [
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\rb\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost : x\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: x\r\nX y: z\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
            "GET / HTTP/1.1\r\nHost: u@h\r\n\r\n",
            "GET  / HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET x HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET * HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET h:80 HTTP/1.1\r\nHost: x\r\n\r\n",
            "GET ftp://h/ HTTP/1.1\r\nHost: x\r\n\r\n",
        ] {
            assert_eq!(kind(raw), ErrorKind::BadRequest, "{raw:?}");
        }
        // HTTP/1.0 needs no Host; OPTIONS * is fine.
        assert!(req("GET / HTTP/1.0\r\n\r\n").expect("ok").is_some());
        assert!(
            req("OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("ok")
                .is_some()
        );
        assert!(
            req("GET http://h/p HTTP/1.1\r\nHost: x\r\n\r\n")
                .expect("ok")
                .is_some()
        );
    }

    #[test]
    fn limits_map_to_414_and_431() {
        let long = format!("GET /{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(100));
        assert_eq!(kind(&long), ErrorKind::UriTooLong);
        let partial = format!("GET /{}", "a".repeat(200));
        assert_eq!(kind(&partial), ErrorKind::UriTooLong);
        let big = format!(
            "GET / HTTP/1.1\r\nHost: x\r\nX: {}\r\n\r\n",
            "v".repeat(1100)
        );
        assert_eq!(kind(&big), ErrorKind::HeadersTooLarge);
        let many: String = (0..9).map(|i| format!("X{i}: v\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\nHost: x\r\n{many}\r\n");
        assert_eq!(kind(&raw), ErrorKind::HeadersTooLarge);
    }

    #[test]
    fn versions_and_expectations() {
        assert_eq!(
            kind("GET / HTTP/2.0\r\nHost: x\r\n\r\n"),
            ErrorKind::VersionNotSupported
        );
        assert_eq!(
            kind("GET / HTTQ/1.1\r\nHost: x\r\n\r\n"),
            ErrorKind::BadRequest
        );
        assert_eq!(
            kind("GET / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n"),
            ErrorKind::ExpectationFailed
        );
        let h =
            req("PUT / HTTP/1.1\r\nHost: x\r\nExpect: 100-Continue\r\nContent-Length: 1\r\n\r\n")
                .expect("ok")
                .expect("complete");
        assert!(h.expect_continue);
        let h = req("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(h.keep_alive);
        let h = req("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(!h.keep_alive);
    }

    #[test]
    fn upgrades_except_h2c() {
        let ws =
            req("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
                .expect("ok")
                .expect("complete");
        assert!(ws.upgrade);
        let h2c = req("GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\n\r\n")
            .expect("ok")
            .expect("complete");
        assert!(!h2c.upgrade);
    }

    fn resp(raw: &str, method: &Method) -> Result<Option<ResponseHead>> {
        parse_response(&mut BytesMut::from(raw), method, 1024, 16)
    }

    #[test]
    fn response_framing() {
        let get = Method::GET;
        let r = resp("HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nabc", &get)
            .expect("ok")
            .expect("complete");
        assert_eq!(r.framing, Framing::Length(3));
        assert!(r.keep_alive);
        let r = resp("HTTP/1.1 200 OK\r\n\r\n", &get)
            .expect("ok")
            .expect("complete");
        assert_eq!(r.framing, Framing::Close);
        assert!(!r.keep_alive);
        let r = resp(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n",
            &Method::HEAD,
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(r.framing, Framing::Empty);
        let r = resp(
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 3\r\n\r\n",
            &get,
        )
        .expect("ok")
        .expect("complete");
        assert_eq!(r.framing, Framing::Empty);
        let r = resp("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n", &get)
            .expect("ok")
            .expect("complete");
        assert!(!r.keep_alive);
    }

    #[test]
    fn response_hop_by_hop_fields_are_left_out() {
        let raw = "HTTP/1.1 200 OK\r\nConnection: keep-alive, X-Node\r\nX-Node: 7\r\nKeep-Alive: timeout=5\r\n\
                   Upgrade: h2c\r\nContent-Length: 0\r\nX-Kept: 1\r\n\r\n";
        let r = resp(raw, &Method::GET).expect("ok").expect("complete");
        let names: Vec<&str> = r.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(names, ["upgrade", "content-length", "x-kept"]);
        assert!(r.keep_alive);
    }

    #[test]
    fn malformed_responses_are_refused() {
        for raw in [
            "HTTP/1.1 2000 OK\r\n\r\n",
            "HTTP/1.1 099 Low\r\n\r\n",
            "HTTX/1.1 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\0b\r\n\r\n",
        ] {
            let err = resp(raw, &Method::GET).expect_err(raw);
            assert_eq!(err.kind(), ErrorKind::UpstreamProtocol, "{raw:?}");
        }
    }

    #[test]
    fn host_values() {
        for good in [
            "a",
            "a.b.c",
            "a:80",
            "a:",
            "127.0.0.1:8080",
            "[::1]",
            "[::1]:443",
            "xn--bcher-kva.example",
        ] {
            assert!(valid_host(good.as_bytes()), "{good}");
        }
        for bad in [
            "", "a b", "u@h", "a:b", "[::1", "[::1]x", "[]", "a:123456", ":80", "a/b", "[::1]:x",
        ] {
            assert!(!valid_host(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn h2_preface_detection() {
        assert!(maybe_h2_preface(b"PRI * HT"));
        assert!(maybe_h2_preface(H2_PREFACE));
        assert!(!maybe_h2_preface(b"GET / HTTP/1.1"));
    }
}
