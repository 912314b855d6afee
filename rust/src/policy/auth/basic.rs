//! `type = "basic"`: HTTP Basic (RFC 7617) against htpasswd entries,
//! bcrypt or SHA-512-crypt.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use http::request;

use super::{AuthInfo, Outcome, challenge, credentials, sha256};

/// Successful checks remembered, at most (then the memory starts over).
const REMEMBERED: usize = 10_000;

/// bcrypt compares at most this many password bytes; longer passwords are
/// refused rather than silently cut.
const BCRYPT_MAX: usize = 72;

pub(super) struct Basic {
    users: HashMap<String, String>,
    realm: String,
    /// Digests of (user, password, hash) that verified.
    verified: Arc<Mutex<HashSet<[u8; 32]>>>,
}

impl Basic {
    pub(super) fn compile(users: &[(String, String)], realm: &str) -> Result<Self, String> {
        for (user, hash) in users {
            if !(hash.starts_with("$2") || hash.starts_with("$6$")) {
                return Err(format!("user {user:?}: unsupported hash"));
            }
        }
        Ok(Basic {
            users: users.iter().cloned().collect(),
            realm: realm.to_owned(),
            verified: Arc::default(),
        })
    }

    pub(super) async fn check(&self, policy: &Arc<str>, parts: &request::Parts) -> Outcome {
        let fail = || Outcome::Challenge(challenge("Basic", &self.realm, ", charset=\"UTF-8\""));
        let Some(encoded) = credentials(parts, "Basic") else {
            return fail();
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded) else {
            return fail();
        };
        let Some(colon) = decoded.iter().position(|&b| b == b':') else {
            return fail();
        };
        let (user, password) = (&decoded[..colon], &decoded[colon + 1..]);
        let Ok(user) = std::str::from_utf8(user) else {
            return fail();
        };
        let Some(hash) = self.users.get(user) else {
            return fail();
        };
        let mut memo = Vec::with_capacity(user.len() + password.len() + hash.len() + 2);
        memo.extend_from_slice(user.as_bytes());
        memo.push(0);
        memo.extend_from_slice(password);
        memo.push(0);
        memo.extend_from_slice(hash.as_bytes());
        let memo = sha256(&memo);
        let known = self.verified.lock().is_ok_and(|v| v.contains(&memo));
        let ok = known || {
            let (password, hash) = (password.to_vec(), hash.clone());
            // Slow by design: verify off the engine's request threads.
            tokio::task::spawn_blocking(move || verify(&password, &hash))
                .await
                .unwrap_or(false)
        };
        if !ok {
            return fail();
        }
        if !known {
            if let Ok(mut v) = self.verified.lock() {
                if v.len() >= REMEMBERED {
                    v.clear();
                }
                v.insert(memo);
            }
        }
        Outcome::Pass(
            AuthInfo {
                policy: policy.clone(),
                kind: "basic",
                user: user.to_owned(),
                claims: serde_json::Value::Object(serde_json::Map::new()),
            },
            Vec::new(),
        )
    }
}

/// Whether `password` matches the htpasswd `hash`.
fn verify(password: &[u8], hash: &str) -> bool {
    if hash.starts_with("$6$") {
        return std::str::from_utf8(password)
            .is_ok_and(|p| sha_crypt::sha512_check(p, hash).is_ok());
    }
    password.len() <= BCRYPT_MAX && bcrypt::verify(password, hash).unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::verify;

    #[test]
    fn bcrypt_and_sha512_crypt_hashes_verify() {
        // A bcrypt hash (fixed salt, cost 4) and a SHA-512-crypt hash, as htpasswd files hold them.
        let bcrypt = bcrypt::hash_with_salt("secret", 4, [7u8; 16])
            .expect("hash")
            .format_for_version(bcrypt::Version::TwoY);
        assert!(verify(b"secret", &bcrypt));
        assert!(!verify(b"Secret", &bcrypt));
        let params = sha_crypt::Sha512Params::new(5000).expect("params");
        let sha = sha_crypt::sha512_simple("secret", &params).expect("hash");
        assert!(sha.starts_with("$6$"));
        assert!(verify(b"secret", &sha));
        assert!(!verify(b"secret!", &sha));
        assert!(!verify(
            &[b'a'; 73],
            &bcrypt::hash("a".repeat(73), 4).expect("hash")
        ));
    }
}
