//! `type = "api_key"`: a key in a header field or query parameter, looked
//! up by its SHA-256 digest.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::HeaderName;
use http::request;

use super::{AuthInfo, Outcome, challenge, sha256};
use crate::route::query_params;

pub(super) struct ApiKeys {
    header: Option<HeaderName>,
    query: Option<String>,
    /// Key digest → holder name.
    keys: HashMap<[u8; 32], String>,
    realm: String,
}

fn digest_of_hex(hex: &str) -> Result<[u8; 32], String> {
    let mut out = [0u8; 32];
    if hex.len() != 64 {
        return Err(format!("a key digest must be 64 hex digits, got {hex:?}"));
    }
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16)
            .map_err(|_| format!("invalid key digest {hex:?}"))?;
    }
    Ok(out)
}

impl ApiKeys {
    pub(super) fn compile(
        header: Option<&str>,
        query: Option<&str>,
        keys: &[(String, String)],
        realm: &str,
    ) -> Result<Self, String> {
        let header = match (header, query) {
            (Some(h), None) => Some(
                HeaderName::from_bytes(h.as_bytes())
                    .map_err(|_| format!("invalid header name {h:?}"))?,
            ),
            (None, Some(_)) => None,
            _ => return Err("an api_key policy has one of header and query".to_owned()),
        };
        Ok(ApiKeys {
            header,
            query: query.map(str::to_owned),
            keys: keys
                .iter()
                .map(|(name, hex)| Ok((digest_of_hex(hex)?, name.clone())))
                .collect::<Result<_, String>>()?,
            realm: realm.to_owned(),
        })
    }

    pub(super) fn header(&self) -> Option<&HeaderName> {
        self.header.as_ref()
    }

    pub(super) fn check(&self, policy: &Arc<str>, parts: &request::Parts) -> Outcome {
        let digest = match (&self.header, &self.query) {
            (Some(h), _) => parts.headers.get(h).map(|v| sha256(v.as_bytes())),
            (None, Some(q)) => parts.uri.query().and_then(|query| {
                query_params(query)
                    .into_iter()
                    .find(|(n, _)| n == q)
                    .map(|(_, v)| sha256(v.as_bytes()))
            }),
            (None, None) => None,
        };
        if let Some(user) = digest.and_then(|d| self.keys.get(&d)) {
            return Outcome::Pass(
                AuthInfo {
                    policy: policy.clone(),
                    kind: "api_key",
                    user: user.clone(),
                    claims: serde_json::Value::Object(serde_json::Map::new()),
                },
                Vec::new(),
            );
        }
        let extra = match (&self.header, &self.query) {
            (Some(h), _) => format!(", header=\"{}\"", h.as_str()),
            (None, Some(q)) => format!(", query=\"{q}\""),
            _ => String::new(),
        };
        Outcome::Challenge(challenge("ApiKey", &self.realm, &extra))
    }
}
