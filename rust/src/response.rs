//! Responses the proxy writes itself: error pages and `respond` routes.

use bytes::Bytes;
use http::header::{self, HeaderName, HeaderValue};
use http::{HeaderMap, Response, StatusCode};

use crate::body::ProxyBody;
use crate::error::{Error, ErrorSource};
use crate::proxy::CloseConnection;

/// A response the proxy makes (a `respond` route, or one a hook returns)
/// with a body but no `Content-Type` is plain text.
pub(crate) fn default_content_type(headers: &mut HeaderMap, body: &[u8]) {
    if !body.is_empty() && !headers.contains_key(header::CONTENT_TYPE) {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
}

/// A fixed response configured on a route.
#[derive(Debug, Clone)]
pub struct LocalResponse {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
}

impl LocalResponse {
    /// A response with `status`, `headers` (in order) and `body`.
    /// Headers that fail to parse were rejected by config validation.
    pub(crate) fn new(
        status: StatusCode,
        headers: Vec<(HeaderName, HeaderValue)>,
        body: &[u8],
    ) -> Self {
        let mut map = HeaderMap::with_capacity(headers.len() + 1);
        for (name, value) in headers {
            map.append(name, value);
        }
        default_content_type(&mut map, body);
        LocalResponse {
            status,
            headers: map,
            body: Bytes::copy_from_slice(body),
        }
    }

    /// A fresh response to send.
    pub(crate) fn to_response(&self) -> Response<ProxyBody> {
        let mut resp = Response::new(ProxyBody::full(self.body.clone()));
        *resp.status_mut() = self.status;
        *resp.headers_mut() = self.headers.clone();
        resp
    }
}

/// A short text answer of the proxy's own, never to be stored.
pub(crate) fn plain(
    status: http::StatusCode,
    text: impl Into<bytes::Bytes>,
) -> Response<ProxyBody> {
    let mut resp = Response::new(ProxyBody::full(text));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}

/// The response for an error: its status and a one-line body that names no
/// upstream detail. Errors caused by the client close its connection.
pub(crate) fn error(err: &Error) -> Response<ProxyBody> {
    let status = err.status();
    let text = format!(
        "{} {}\n",
        status.as_str(),
        status.canonical_reason().unwrap_or("Error")
    );
    let mut resp = plain(status, text);
    if err.kind() == crate::error::ErrorKind::Overloaded {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    if err.source_side() == ErrorSource::Downstream {
        resp.extensions_mut().insert(CloseConnection);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn error_pages_are_small_and_close_on_client_errors() {
        let resp = error(&Error::new(
            ErrorKind::UpstreamConnect,
            "refused 10.0.0.1:80",
        ));
        assert_eq!(resp.status(), StatusCode::BAD_GATEWAY);
        assert!(resp.extensions().get::<CloseConnection>().is_none());
        let resp = error(&Error::new(ErrorKind::BadRequest, "x"));
        assert!(resp.extensions().get::<CloseConnection>().is_some());
    }
}
