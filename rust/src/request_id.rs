//! Request ids: 32 lower-case hex digits, unique per request
//! (`$request_id`, `request.id`).
//!
//! An id is a per-process random seed and a counter, the counter passed
//! through a bijective mixer so consecutive ids do not look consecutive.
//! Unique within a process by construction, and across processes and
//! restarts as far as 64 random bits are.

use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::{BuildHasher, Hasher};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

fn seed() -> u64 {
    static SEED: OnceLock<u64> = OnceLock::new();
    *SEED.get_or_init(|| {
        let mut h = RandomState::new().build_hasher();
        h.write_u32(std::process::id());
        if let Ok(t) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            h.write_u128(t.as_nanos());
        }
        h.finish()
    })
}

/// The splitmix64 finaliser: a bijection on `u64`.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// One request's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestId(u64, u64);

impl RequestId {
    /// A new id, never handed out before in this process.
    pub fn next() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        RequestId(seed(), mix(n))
    }
}

impl std::str::FromStr for RequestId {
    type Err = ();

    /// Read an id back from its 32 hex digits.
    fn from_str(s: &str) -> Result<Self, ()> {
        if s.len() != 32 || !s.is_ascii() {
            return Err(());
        }
        let a = u64::from_str_radix(&s[..16], 16).map_err(|_| ())?;
        let b = u64::from_str_radix(&s[16..], 16).map_err(|_| ())?;
        Ok(RequestId(a, b))
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016x}{:016x}", self.0, self.1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_hex_digits_and_distinct() {
        let ids: std::collections::HashSet<String> =
            (0..10_000).map(|_| RequestId::next().to_string()).collect();
        assert_eq!(ids.len(), 10_000);
        assert!(ids.iter().all(|id| {
            id.len() == 32
                && id
                    .bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
                && id
                    .parse::<RequestId>()
                    .is_ok_and(|back| back.to_string() == *id)
        }));
    }
}
