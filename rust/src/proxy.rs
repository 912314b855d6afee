//! The request path: validate, route, forward, and turn every failure into
//! the right response.
//!
//! Phases today: request checks → route → (respond | forward upstream →
//! clean response). The hook plan of the plugin API slots in between them.

use std::collections::HashMap;
use std::future::poll_fn;
use std::pin::Pin;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body;

use crate::body::{ProxyBody, RequestBody};
use crate::config::EngineConfig;
use crate::error::{Error, ErrorKind, ErrorSource, Result};
use crate::h1::encode;
use crate::h1::parse::{ResponseHead, valid_host};
use crate::headers;
use crate::response::{self, LocalResponse};
use crate::route::{Action, Route, RouteTable};
use crate::server::ConnInfo;
use crate::upstream::{ExchangeError, OutBody, UpgradeTunnel, Upstream, UpstreamBody};

/// Request extension: the client asked for a protocol upgrade (WebSocket).
#[derive(Debug, Clone, Copy)]
pub struct UpgradeRequested;

/// Response extension: close the client connection after this response.
#[derive(Debug, Clone, Copy)]
pub struct CloseConnection;

/// The compiled request path of one configuration.
pub struct Proxy {
    routes: RouteTable,
    upstreams: Vec<Arc<Upstream>>,
    request_buffer_size: usize,
}

impl Proxy {
    /// Compile `config`. Fails only on inconsistencies that config
    /// validation should already have reported.
    pub fn new(config: &EngineConfig) -> std::result::Result<Self, String> {
        let s = &config.server;
        let mut pools: HashMap<&str, Arc<Upstream>> = HashMap::new();
        for (name, cfg) in &config.upstreams {
            if cfg.servers.is_empty() {
                return Err(format!("upstream {name:?} has no servers"));
            }
            pools.insert(
                name,
                Arc::new(Upstream::new(name, cfg, s.max_header_bytes, s.max_headers)),
            );
        }
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, r) in config.routes.iter().enumerate() {
            let action = match (&r.upstream, &r.respond) {
                (Some(name), None) => Action::Forward(
                    pools
                        .get(name.as_str())
                        .ok_or_else(|| format!("routes[{i}]: unknown upstream {name:?}"))?
                        .clone(),
                ),
                (None, Some(resp)) => {
                    let status = StatusCode::from_u16(resp.status)
                        .map_err(|_| format!("routes[{i}]: invalid status {}", resp.status))?;
                    let mut fields = Vec::with_capacity(resp.headers.len());
                    for (name, value) in &resp.headers {
                        let name = HeaderName::from_bytes(name.as_bytes())
                            .map_err(|_| format!("routes[{i}]: invalid header name {name:?}"))?;
                        let value = HeaderValue::from_str(value)
                            .map_err(|_| format!("routes[{i}]: invalid header value {value:?}"))?;
                        fields.push((name, value));
                    }
                    Action::Respond(LocalResponse::new(status, fields, resp.body.as_bytes()))
                }
                _ => {
                    return Err(format!(
                        "routes[{i}]: needs exactly one of upstream / respond"
                    ));
                }
            };
            routes.push(Route {
                path_prefix: r.path_prefix.clone(),
                action,
            });
        }
        let mut upstreams: Vec<Arc<Upstream>> = pools.into_values().collect();
        upstreams.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Proxy {
            routes: RouteTable::new(routes),
            upstreams,
            request_buffer_size: s.request_buffer_size,
        })
    }

    /// Close idle upstream connections past their keep-alive timeout.
    pub(crate) fn sweep_pools(&self) {
        for u in &self.upstreams {
            u.sweep();
        }
    }

    /// Serve one request. Never fails: errors become error responses.
    pub async fn handle(&self, req: Request<RequestBody>, conn: &ConnInfo) -> Response<ProxyBody> {
        match self.process(req, conn).await {
            Ok(resp) => resp,
            Err(err) => {
                match err.source_side() {
                    ErrorSource::Upstream => log::warn!("{} upstream error: {err}", conn.client),
                    ErrorSource::Internal => log::error!("{} internal error: {err}", conn.client),
                    ErrorSource::Downstream => log::debug!("{} client error: {err}", conn.client),
                }
                response::error(&err)
            }
        }
    }

    async fn process(
        &self,
        req: Request<RequestBody>,
        conn: &ConnInfo,
    ) -> Result<Response<ProxyBody>> {
        if req.method() == Method::CONNECT {
            return Err(Error::new(
                ErrorKind::MethodNotAllowed,
                "CONNECT is not proxied",
            ));
        }
        if req.version() == Version::HTTP_2 {
            check_h2_authority(&req)?;
        }
        let route = self
            .routes
            .find(req.uri().path())
            .ok_or_else(|| Error::new(ErrorKind::NoRoute, "no route matches"))?;
        match &route.action {
            Action::Respond(local) => Ok(local.to_response()),
            Action::Forward(upstream) => self.forward(upstream, req, conn).await,
        }
    }

    async fn forward(
        &self,
        upstream: &Upstream,
        req: Request<RequestBody>,
        conn: &ConnInfo,
    ) -> Result<Response<ProxyBody>> {
        let (parts, body) = req.into_parts();
        let upgrade = parts.extensions.get::<UpgradeRequested>().is_some();
        let declared_body = parts.headers.contains_key(header::CONTENT_LENGTH)
            || parts.headers.contains_key(header::TRANSFER_ENCODING)
            || matches!(parts.method, Method::POST | Method::PUT | Method::PATCH);

        let mut out = prebuffer(body, self.request_buffer_size).await?;

        let target = parts
            .uri
            .path_and_query()
            .map(|pq| pq.as_str())
            .filter(|pq| !pq.is_empty())
            .unwrap_or("/");
        let mut head = BytesMut::with_capacity(512);
        encode::write_request_line(&mut head, &parts.method, target);
        headers::write_upstream_fields(&mut head, &parts, conn, upgrade, &upstream.default_host);
        match (&out.rest, out.chunked) {
            (_, true) => head.extend_from_slice(b"transfer-encoding: chunked\r\n"),
            (Some(rest), false) => {
                let total = out.prefix.iter().map(|b| b.len() as u64).sum::<u64>()
                    + rest.size_hint().exact().unwrap_or(0);
                head.extend_from_slice(b"content-length: ");
                encode::write_decimal(&mut head, total);
                head.extend_from_slice(b"\r\n");
            }
            (None, false) => {
                let total = out.prefix.iter().map(|b| b.len() as u64).sum::<u64>();
                if total > 0 || declared_body {
                    head.extend_from_slice(b"content-length: ");
                    encode::write_decimal(&mut head, total);
                    head.extend_from_slice(b"\r\n");
                }
            }
        }
        head.extend_from_slice(b"\r\n");
        let head = head.freeze();

        let idempotent = matches!(
            parts.method,
            Method::GET
                | Method::HEAD
                | Method::OPTIONS
                | Method::TRACE
                | Method::PUT
                | Method::DELETE
        );
        let mut last_error = None;
        for server in upstream.order() {
            // Connect failures are retried on the next server: nothing was sent.
            let mut conn = match upstream.connection(server).await {
                Ok(c) => c,
                Err(e) => {
                    log::debug!("upstream {} server {}: {e}", upstream.name, server.addr);
                    last_error = Some(e);
                    continue;
                }
            };
            let mut retried_fresh = false;
            loop {
                match conn
                    .exchange(&head, &mut out, &parts.method, &upstream.timeouts)
                    .await
                {
                    Ok((resp, sent_all)) => {
                        return finish(conn, resp, sent_all, upgrade, upstream);
                    }
                    Err(ExchangeError { error, stale }) => {
                        // A pooled connection the server had closed: the
                        // request never arrived, so send it once more on a
                        // fresh connection when that is safe.
                        if stale && !retried_fresh && idempotent && out.replayable() {
                            retried_fresh = true;
                            conn = upstream.connect(server).await?;
                            continue;
                        }
                        return Err(error);
                    }
                }
            }
        }
        Err(last_error
            .unwrap_or_else(|| Error::new(ErrorKind::UpstreamConnect, "no upstream server")))
    }
}

/// Turn an upstream response head into the response sent downstream.
fn finish(
    conn: crate::upstream::UpstreamConn,
    head: ResponseHead,
    sent_all: bool,
    upgrade: bool,
    upstream: &Upstream,
) -> Result<Response<ProxyBody>> {
    let ResponseHead {
        status,
        mut headers,
        framing,
        keep_alive,
        ..
    } = head;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        if !upgrade || !headers.contains_key(header::UPGRADE) {
            return Err(Error::new(
                ErrorKind::UpstreamProtocol,
                "unexpected 101 response",
            ));
        }
        headers::clean_response(&mut headers, true);
        let mut resp = Response::new(ProxyBody::empty());
        *resp.status_mut() = status;
        *resp.headers_mut() = headers;
        resp.extensions_mut().insert(UpgradeTunnel::new(conn));
        return Ok(resp);
    }
    headers::clean_response(&mut headers, false);
    let reusable = keep_alive && sent_all && !upgrade;
    let body = UpstreamBody::new(conn, framing, reusable, upstream.timeouts.body_idle);
    let mut resp = Response::new(ProxyBody::upstream(body));
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    Ok(resp)
}

/// Read up to `limit` bytes of a request body before choosing an upstream.
///
/// A body that ends within the limit is sent with a Content-Length, can be
/// sent again, and — most important — is known to be well-formed before a
/// single byte of the request reaches an upstream.
async fn prebuffer(mut body: RequestBody, limit: usize) -> Result<OutBody> {
    let exact = body.size_hint().exact();
    let mut out = OutBody {
        prefix: Vec::new(),
        trailers: None,
        rest: None,
        chunked: false,
    };
    if body.is_end_stream() {
        return Ok(out);
    }
    if body.declared_too_large() {
        return Err(Error::new(
            ErrorKind::BodyTooLarge,
            "Content-Length above max_body_size",
        ));
    }
    let mut size = 0usize;
    loop {
        if size >= limit {
            out.chunked = exact.is_none();
            out.rest = Some(body);
            return Ok(out);
        }
        match poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
            None => break,
            Some(Err(e)) => return Err(e),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => {
                    size += data.len();
                    out.prefix.push(data);
                }
                Err(frame) => out.trailers = frame.into_trailers().ok(),
            },
        }
    }
    if out.trailers.is_some() {
        out.chunked = true;
    }
    if out.prefix.len() > 1 && !out.chunked {
        let joined: BytesMut =
            out.prefix
                .iter()
                .fold(BytesMut::with_capacity(size), |mut acc, b| {
                    acc.extend_from_slice(b);
                    acc
                });
        out.prefix = vec![Bytes::from(joined)];
    }
    Ok(out)
}

/// RFC 9113 §8.3.1: an HTTP/2 request names its authority in `:authority`
/// or `Host`; when both are present they must agree.
fn check_h2_authority(req: &Request<RequestBody>) -> Result<()> {
    let bad = |why| Error::new(ErrorKind::BadRequest, why);
    let host = req.headers().get(header::HOST).map(HeaderValue::as_bytes);
    match (req.uri().authority(), host) {
        (None, None) => Err(bad("HTTP/2 request without authority")),
        (Some(a), Some(h)) if !a.as_str().as_bytes().eq_ignore_ascii_case(h) => {
            Err(bad(":authority and Host differ"))
        }
        (None, Some(h)) if !valid_host(h) => Err(bad("invalid Host")),
        _ => Ok(()),
    }
}
