//! The engine's typed error: what went wrong, who caused it, and whether a
//! retry on another upstream is allowed.
//!
//! Wording of messages is not API; match on [`ErrorKind`] and the predicates.

use std::fmt;

use http::StatusCode;

/// Boxed cause carried by an [`Error`].
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Who caused an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client (downstream) sent something we refuse, or went away.
    Downstream,
    /// An upstream server failed, timed out or answered malformed.
    Upstream,
    /// A plugin's hook raised, returned the wrong type or timed out.
    Plugin,
    /// The proxy itself (configuration, a bug).
    Internal,
}

/// What went wrong. Each kind maps to one status code sent downstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// A malformed or ambiguous request (RFC 9112 framing, headers, target).
    BadRequest,
    /// The request target is longer than `max_uri_size`.
    UriTooLong,
    /// The header section is larger than `max_header_bytes` or has too many fields.
    HeadersTooLarge,
    /// The request body is larger than `max_body_size`.
    BodyTooLarge,
    /// A transfer coding the proxy does not implement (RFC 9112 §6.1).
    NotImplemented,
    /// An HTTP version other than 1.0 / 1.1 on an HTTP/1 connection.
    VersionNotSupported,
    /// An `Expect` value other than `100-continue`.
    ExpectationFailed,
    /// A method the proxy does not forward (CONNECT).
    MethodNotAllowed,
    /// The client was too slow sending its request.
    ClientTimeout,
    /// The client closed the connection or reset it.
    ClientClosed,
    /// No route matched the request.
    NoRoute,
    /// Connecting to the upstream failed (refused, unreachable, timed out).
    UpstreamConnect,
    /// The upstream did not send response headers within `response_timeout`,
    /// or stalled longer than `body_idle_timeout`.
    UpstreamTimeout,
    /// The upstream sent a malformed response.
    UpstreamProtocol,
    /// The upstream closed or reset the connection before the response was complete.
    UpstreamClosed,
    /// The pool is at a concurrency limit and its queue is full or timed out.
    Overloaded,
    /// A plugin's hook failed and its policy fails the request.
    Plugin,
    /// A failure inside the proxy.
    Internal,
}

impl ErrorKind {
    /// The status code a client receives for this kind.
    pub fn status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::UriTooLong => StatusCode::URI_TOO_LONG,
            ErrorKind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            ErrorKind::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::NotImplemented => StatusCode::NOT_IMPLEMENTED,
            ErrorKind::VersionNotSupported => StatusCode::HTTP_VERSION_NOT_SUPPORTED,
            ErrorKind::ExpectationFailed => StatusCode::EXPECTATION_FAILED,
            ErrorKind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ErrorKind::ClientTimeout => StatusCode::REQUEST_TIMEOUT,
            ErrorKind::ClientClosed => StatusCode::BAD_REQUEST,
            ErrorKind::NoRoute => StatusCode::NOT_FOUND,
            ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamProtocol
            | ErrorKind::UpstreamClosed => StatusCode::BAD_GATEWAY,
            ErrorKind::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Plugin | ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// Who is to blame for this kind.
    pub fn source(self) -> ErrorSource {
        match self {
            ErrorKind::BadRequest
            | ErrorKind::UriTooLong
            | ErrorKind::HeadersTooLarge
            | ErrorKind::BodyTooLarge
            | ErrorKind::NotImplemented
            | ErrorKind::VersionNotSupported
            | ErrorKind::ExpectationFailed
            | ErrorKind::MethodNotAllowed
            | ErrorKind::ClientTimeout
            | ErrorKind::ClientClosed => ErrorSource::Downstream,
            ErrorKind::NoRoute | ErrorKind::Internal => ErrorSource::Internal,
            ErrorKind::Plugin => ErrorSource::Plugin,
            ErrorKind::UpstreamConnect
            | ErrorKind::UpstreamTimeout
            | ErrorKind::UpstreamProtocol
            | ErrorKind::UpstreamClosed
            | ErrorKind::Overloaded => ErrorSource::Upstream,
        }
    }
}

/// An engine error: a kind, whether a retry elsewhere is safe, and a cause.
pub struct Error {
    kind: ErrorKind,
    retryable: bool,
    context: &'static str,
    cause: Option<Cause>,
}

impl Error {
    /// A new error of `kind`; `context` is a short fixed description.
    pub fn new(kind: ErrorKind, context: &'static str) -> Self {
        Error {
            kind,
            retryable: false,
            context,
            cause: None,
        }
    }

    /// Attach the underlying cause.
    pub fn with_cause(mut self, cause: impl Into<Cause>) -> Self {
        self.cause = Some(cause.into());
        self
    }

    /// Mark the error as safe to retry on another upstream server.
    pub fn retryable(mut self) -> Self {
        self.retryable = true;
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Who caused it.
    pub fn source_side(&self) -> ErrorSource {
        self.kind.source()
    }

    /// Whether the request may be sent again to another server.
    pub fn is_retryable(&self) -> bool {
        self.retryable
    }

    /// Whether this is an upstream timeout (504).
    pub fn is_timeout(&self) -> bool {
        matches!(
            self.kind,
            ErrorKind::UpstreamTimeout | ErrorKind::ClientTimeout
        )
    }

    /// The status code the client receives.
    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind)
            .field("source", &self.kind.source())
            .field("retryable", &self.retryable)
            .field("context", &self.context);
        if let Some(cause) = &self.cause {
            d.field("cause", cause);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.context)?;
        if let Some(cause) = &self.cause {
            write!(f, ": {cause}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.cause
            .as_ref()
            .map(|c| &**c as &(dyn std::error::Error + 'static))
    }
}

/// Result alias for engine operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_map_to_status_and_source() {
        let e = Error::new(ErrorKind::UpstreamConnect, "connect").retryable();
        assert_eq!(e.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(e.source_side(), ErrorSource::Upstream);
        assert!(e.is_retryable());
        let e = Error::new(ErrorKind::UpstreamTimeout, "slow");
        assert_eq!(e.status(), StatusCode::GATEWAY_TIMEOUT);
        assert!(e.is_timeout() && !e.is_retryable());
        assert_eq!(
            Error::new(ErrorKind::HeadersTooLarge, "x")
                .status()
                .as_u16(),
            431
        );
        assert_eq!(
            Error::new(ErrorKind::BadRequest, "x").source_side(),
            ErrorSource::Downstream
        );
    }

    #[test]
    fn display_includes_cause() {
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let e = Error::new(ErrorKind::UpstreamConnect, "connecting upstream").with_cause(io);
        assert_eq!(e.to_string(), "connecting upstream: refused");
    }
}
