//! `type = "forward"`: ask an auth service (like nginx's `auth_request`),
//! and remember its decisions for a while when configured to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, StatusCode, request};

use super::{AuthInfo, Outcome, refusal};
use crate::h1::encode;
use crate::server::ConnInfo;
use crate::upstream::Upstream;

/// Most decisions remembered (then the memory starts over).
const REMEMBERED: usize = 10_000;

/// Most bytes of an answer's body read (and discarded).
const MAX_BODY: usize = 64 * 1024;

#[derive(Clone)]
enum Decision {
    Allow(Vec<(HeaderName, Option<HeaderValue>)>),
    Challenge(Option<HeaderValue>),
    Forbid,
}

pub(super) struct Forward {
    pool: Arc<Upstream>,
    path: String,
    send: Vec<HeaderName>,
    copy: Vec<HeaderName>,
    cache: Duration,
    decisions: Mutex<HashMap<Vec<u8>, (Instant, Decision)>>,
}

fn names(list: &[String]) -> Result<Vec<HeaderName>, String> {
    list.iter()
        .map(|n| HeaderName::from_bytes(n.as_bytes()).map_err(|_| format!("invalid name {n:?}")))
        .collect()
}

impl Forward {
    pub(super) fn compile(
        pool: Arc<Upstream>,
        path: &str,
        send: &[String],
        copy: &[String],
        cache: Duration,
    ) -> Result<Self, String> {
        Ok(Forward {
            pool,
            path: path.to_owned(),
            send: names(send)?,
            copy: names(copy)?,
            cache,
            decisions: Mutex::default(),
        })
    }

    pub(super) async fn check(
        &self,
        policy: &Arc<str>,
        parts: &request::Parts,
        conn: &ConnInfo,
    ) -> Outcome {
        // The sent fields, which are also the cache key.
        let mut sent = BytesMut::new();
        for name in &self.send {
            for value in parts.headers.get_all(name) {
                sent.extend_from_slice(name.as_str().as_bytes());
                sent.extend_from_slice(b": ");
                sent.extend_from_slice(value.as_bytes());
                sent.extend_from_slice(b"\r\n");
            }
        }
        let remembered = (!self.cache.is_zero())
            .then(|| {
                let d = self.decisions.lock().ok()?;
                let (at, decision) = d.get(sent.as_ref())?;
                (at.elapsed() < self.cache).then(|| decision.clone())
            })
            .flatten();
        let decision = match remembered {
            Some(d) => d,
            None => {
                let decision = match self.ask(&sent, parts, conn).await {
                    Ok(d) => d,
                    Err(e) => {
                        log::warn!("{} auth service {}: {e}", conn.client, self.pool.name);
                        return Outcome::Refuse(refusal(StatusCode::BAD_GATEWAY, Vec::new()));
                    }
                };
                if !self.cache.is_zero() {
                    if let Ok(mut d) = self.decisions.lock() {
                        if d.len() >= REMEMBERED {
                            d.clear();
                        }
                        d.insert(sent.to_vec(), (Instant::now(), decision.clone()));
                    }
                }
                decision
            }
        };
        match decision {
            Decision::Allow(fields) => Outcome::Pass(
                AuthInfo {
                    policy: policy.clone(),
                    kind: "forward",
                    user: String::new(),
                    claims: serde_json::Value::Object(serde_json::Map::new()),
                },
                fields,
            ),
            Decision::Challenge(c) => Outcome::Challenge(c),
            Decision::Forbid => Outcome::Refuse(refusal(StatusCode::FORBIDDEN, Vec::new())),
        }
    }

    /// Ask the auth service about this request.
    async fn ask(
        &self,
        sent: &[u8],
        parts: &request::Parts,
        conn: &ConnInfo,
    ) -> crate::error::Result<Decision> {
        let mut head = BytesMut::with_capacity(256 + sent.len());
        encode::write_request_line(&mut head, &Method::GET, &self.path);
        head.extend_from_slice(b"host: ");
        head.extend_from_slice(self.pool.default_host.as_bytes());
        head.extend_from_slice(b"\r\n");
        head.extend_from_slice(sent);
        let field = |head: &mut BytesMut, name: &str, value: &[u8]| {
            head.extend_from_slice(name.as_bytes());
            head.extend_from_slice(b": ");
            head.extend_from_slice(value);
            head.extend_from_slice(b"\r\n");
        };
        field(
            &mut head,
            "x-original-method",
            parts.method.as_str().as_bytes(),
        );
        let target = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
        field(&mut head, "x-original-uri", target.as_bytes());
        let client = crate::headers::client_ip(parts, conn);
        field(&mut head, "x-forwarded-for", client.as_bytes());
        field(&mut head, "x-forwarded-proto", conn.scheme.as_bytes());
        if let Some(host) = parts.headers.get(header::HOST) {
            field(&mut head, "x-forwarded-host", host.as_bytes());
        }
        head.extend_from_slice(b"\r\n");
        let head: Bytes = head.freeze();
        let (status, fields) = self.pool.subrequest(&head, MAX_BODY).await?;
        Ok(if status.is_success() {
            Decision::Allow(
                self.copy
                    .iter()
                    .map(|n| (n.clone(), fields.get(n).cloned()))
                    .collect(),
            )
        } else if status == StatusCode::UNAUTHORIZED {
            Decision::Challenge(fields.get(header::WWW_AUTHENTICATE).cloned())
        } else if status == StatusCode::FORBIDDEN {
            Decision::Forbid
        } else {
            return Err(crate::error::Error::new(
                crate::error::ErrorKind::UpstreamProtocol,
                "the auth service answered neither 2xx, 401 nor 403",
            ));
        })
    }
}
