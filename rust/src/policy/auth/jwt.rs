//! `type = "jwt"`: bearer tokens (RFC 6750) in JWS compact form (RFC
//! 7515), signed with HS256, RS256 or ES256 (RFC 7518 §3), with the
//! registered claims of RFC 7519 §4.1 checked.

use std::sync::Arc;

use base64::Engine as _;
use http::request;
use ring::{hmac, signature};
use serde_json::Value;

use super::{AuthInfo, Outcome, challenge, credentials};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Alg {
    Hs256,
    Rs256,
    Es256,
}

impl Alg {
    fn from_name(name: &str) -> Option<Alg> {
        match name {
            "HS256" => Some(Alg::Hs256),
            "RS256" => Some(Alg::Rs256),
            "ES256" => Some(Alg::Es256),
            _ => None,
        }
    }
}

enum KeyMaterial {
    Hmac(hmac::Key),
    Rsa { n: Vec<u8>, e: Vec<u8> },
    Ec(Vec<u8>),
}

struct Key {
    kid: Option<String>,
    /// The JWK's own `alg`, if it names one.
    alg: Option<String>,
    material: KeyMaterial,
}

impl Key {
    fn suits(&self, alg: Alg, name: &str) -> bool {
        let family = matches!(
            (&self.material, alg),
            (KeyMaterial::Hmac(_), Alg::Hs256)
                | (KeyMaterial::Rsa { .. }, Alg::Rs256)
                | (KeyMaterial::Ec(_), Alg::Es256)
        );
        family && self.alg.as_deref().is_none_or(|a| a == name)
    }

    fn verifies(&self, message: &[u8], sig: &[u8]) -> bool {
        match &self.material {
            KeyMaterial::Hmac(k) => hmac::verify(k, message, sig).is_ok(),
            KeyMaterial::Rsa { n, e } => signature::RsaPublicKeyComponents { n, e }
                .verify(&signature::RSA_PKCS1_2048_8192_SHA256, message, sig)
                .is_ok(),
            KeyMaterial::Ec(point) => {
                signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, point)
                    .verify(message, sig)
                    .is_ok()
            }
        }
    }
}

fn b64url(text: &str) -> Option<Vec<u8>> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(text)
        .ok()
}

fn jwk_bytes(jwk: &Value, field: &str) -> Result<Vec<u8>, String> {
    jwk.get(field)
        .and_then(Value::as_str)
        .and_then(b64url)
        .ok_or_else(|| format!("a JWK without a valid {field:?}"))
}

fn compile_key(jwk: &Value) -> Result<Key, String> {
    let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or("");
    let material = match kty {
        "oct" => KeyMaterial::Hmac(hmac::Key::new(hmac::HMAC_SHA256, &jwk_bytes(jwk, "k")?)),
        "RSA" => KeyMaterial::Rsa {
            n: jwk_bytes(jwk, "n")?,
            e: jwk_bytes(jwk, "e")?,
        },
        "EC" => {
            if jwk.get("crv").and_then(Value::as_str) != Some("P-256") {
                return Err("only P-256 EC keys are supported".to_owned());
            }
            let mut point = vec![4u8];
            point.extend(jwk_bytes(jwk, "x")?);
            point.extend(jwk_bytes(jwk, "y")?);
            KeyMaterial::Ec(point)
        }
        other => return Err(format!("unsupported key type {other:?}")),
    };
    Ok(Key {
        kid: jwk.get("kid").and_then(Value::as_str).map(str::to_owned),
        alg: jwk.get("alg").and_then(Value::as_str).map(str::to_owned),
        material,
    })
}

pub(super) struct Jwt {
    algorithms: Vec<Alg>,
    keys: Vec<Key>,
    issuer: Option<String>,
    audience: Vec<String>,
    leeway: f64,
    realm: String,
}

impl Jwt {
    pub(super) fn compile(
        algorithms: &[String],
        keys: &[Value],
        issuer: &Option<String>,
        audience: &[String],
        leeway: f64,
        realm: &str,
    ) -> Result<Self, String> {
        Ok(Jwt {
            algorithms: algorithms
                .iter()
                .map(|a| Alg::from_name(a).ok_or_else(|| format!("unsupported algorithm {a:?}")))
                .collect::<Result<_, _>>()?,
            keys: keys.iter().map(compile_key).collect::<Result<_, _>>()?,
            issuer: issuer.clone(),
            audience: audience.to_vec(),
            leeway,
            realm: realm.to_owned(),
        })
    }

    pub(super) fn check(&self, policy: &Arc<str>, parts: &request::Parts) -> Outcome {
        let Some(token) = credentials(parts, "Bearer") else {
            return Outcome::Challenge(challenge("Bearer", &self.realm, ""));
        };
        match self.claims(token) {
            Some(claims) => Outcome::Pass(
                AuthInfo {
                    policy: policy.clone(),
                    kind: "jwt",
                    user: claims
                        .get("sub")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_owned(),
                    claims,
                },
                Vec::new(),
            ),
            None => Outcome::Challenge(challenge(
                "Bearer",
                &self.realm,
                ", error=\"invalid_token\"",
            )),
        }
    }

    /// The payload of `token` if it is valid now.
    fn claims(&self, token: &str) -> Option<Value> {
        let mut segments = token.split('.');
        let (h, p, s) = (segments.next()?, segments.next()?, segments.next()?);
        if segments.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&b64url(h)?).ok()?;
        let header = header.as_object()?;
        if header.contains_key("crit") {
            return None; // no extension is understood (RFC 7515 §4.1.11)
        }
        let name = header.get("alg")?.as_str()?;
        let alg = Alg::from_name(name).filter(|a| self.algorithms.contains(a))?;
        let kid = header.get("kid").map(|k| k.as_str());
        let sig = b64url(s)?;
        let message = &token.as_bytes()[..h.len() + 1 + p.len()];
        let verified = self.keys.iter().any(|k| {
            k.suits(alg, name)
                && match kid {
                    Some(Some(kid)) => k.kid.as_deref() == Some(kid),
                    Some(None) => false,
                    None => true,
                }
                && k.verifies(message, &sig)
        });
        if !verified {
            return None;
        }
        let claims: Value = serde_json::from_slice(&b64url(p)?).ok()?;
        let obj = claims.as_object()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        if let Some(exp) = obj.get("exp") {
            if now >= exp.as_f64()? + self.leeway {
                return None;
            }
        }
        if let Some(nbf) = obj.get("nbf") {
            if now < nbf.as_f64()? - self.leeway {
                return None;
            }
        }
        if let Some(issuer) = &self.issuer {
            if obj.get("iss").and_then(Value::as_str) != Some(issuer) {
                return None;
            }
        }
        if !self.audience.is_empty() {
            let wanted = |v: &Value| {
                v.as_str()
                    .is_some_and(|a| self.audience.iter().any(|w| w == a))
            };
            let ok = match obj.get("aud") {
                Some(Value::Array(list)) => list.iter().any(wanted),
                Some(v) => wanted(v),
                None => false,
            };
            if !ok {
                return None;
            }
        }
        Some(claims)
    }
}
