//! The selection algorithms of docs/load-balancing.md, over the servers a
//! request may use (its candidates). The Python reference,
//! `rproxy.builtins.balancer`, implements the same rules; the differential
//! tests hold the two to the same choices.

use std::borrow::Cow;
use std::cell::Cell;
use std::hash::{BuildHasher, RandomState};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use http::request;
use std::net::SocketAddr;

use crate::config::{Balance, HashKey};

/// A server a request may be sent to: what a hook's `rproxy.Candidate`
/// shows, and what the algorithms weigh.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Candidate {
    /// Its index in the pool.
    pub(crate) index: usize,
    /// Its address.
    pub addr: SocketAddr,
    /// Configured weight.
    pub weight: u32,
    /// Whether it is a backup server.
    pub backup: bool,
    /// Attempts in flight on it.
    pub in_flight: u32,
    /// Slow-start factor in (0, 1].
    pub ramp: f64,
}

impl Candidate {
    /// Effective weight: `max(1, floor(weight × 100 × ramp))`.
    fn eff(&self) -> u64 {
        ((f64::from(self.weight) * 100.0 * self.ramp) as u64).max(1)
    }
}

/// A pool's algorithm and the state it keeps between requests.
pub(crate) struct Balancer {
    balance: Balance,
    key: Option<HashKey>,
    counter: AtomicU64,
    /// Smooth weighted round robin's running values, by server index.
    current: Mutex<Vec<i64>>,
    /// The consistent-hash ring: (point, server index), sorted.
    ring: Vec<(u64, u32)>,
}

impl Balancer {
    /// `servers`: each server's address text and configured weight, in order.
    pub(crate) fn new(balance: Balance, key: Option<HashKey>, servers: &[(String, u32)]) -> Self {
        let ring = if balance == Balance::Hash {
            build_ring(servers)
        } else {
            Vec::new()
        };
        Balancer {
            balance,
            key: if balance == Balance::Hash {
                Some(key.unwrap_or(HashKey::ClientIp))
            } else {
                None
            },
            counter: AtomicU64::new(0),
            current: Mutex::new(vec![0; servers.len()]),
            ring,
        }
    }

    /// Whether [`Self::choose`] wants the request's hash key.
    pub(crate) fn key_spec(&self) -> Option<&HashKey> {
        self.key.as_ref()
    }

    /// The server (index) for a request among `cands` (in configured
    /// order); `key` is the request's hash key, if any. A single candidate
    /// is chosen without touching any state.
    pub(crate) fn choose(&self, cands: &[Candidate], key: Option<&[u8]>) -> Option<usize> {
        match cands {
            [] => None,
            [only] => Some(only.index),
            _ => Some(match self.balance {
                Balance::RoundRobin => self.rr(cands),
                Balance::LeastConn => {
                    let least = cands
                        .iter()
                        .copied()
                        .reduce(|a, b| if lighter(&b, &a) { b } else { a })?;
                    let tied: Vec<Candidate> = cands
                        .iter()
                        .copied()
                        .filter(|c| !lighter(&least, c))
                        .collect();
                    self.rr(&tied)
                }
                Balance::RandomTwo => random_two(cands),
                Balance::First => cands[0].index,
                Balance::Hash => match key.and_then(|k| self.on_ring(cands, ring_hash(k))) {
                    Some(found) => found,
                    // No key (or, impossibly, no candidate on the ring).
                    None => self.rr(cands),
                },
            }),
        }
    }

    /// Round robin, smooth weighted when the weights differ.
    fn rr(&self, cands: &[Candidate]) -> usize {
        let eff = cands[0].eff();
        if cands.iter().all(|c| c.eff() == eff) {
            let k = self.counter.fetch_add(1, Ordering::Relaxed);
            return cands[(k % cands.len() as u64) as usize].index;
        }
        let mut current = self
            .current
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for c in cands {
            let w = c.eff() as i64;
            total += w;
            current[c.index] += w;
            if best.is_none_or(|b| current[c.index] > current[b]) {
                best = Some(c.index);
            }
        }
        let chosen = best.unwrap_or(cands[0].index);
        current[chosen] -= total;
        chosen
    }

    /// The first server clockwise from `point` that is a candidate.
    fn on_ring(&self, cands: &[Candidate], point: u64) -> Option<usize> {
        let start = self.ring.partition_point(|p| p.0 < point);
        let n = self.ring.len();
        (0..n)
            .map(|i| self.ring[(start + i) % n].1 as usize)
            .find(|s| cands.iter().any(|c| c.index == *s))
    }
}

/// Whether `a` carries less load than `b`, relative to their weights.
fn lighter(a: &Candidate, b: &Candidate) -> bool {
    u128::from(a.in_flight) * u128::from(b.eff()) < u128::from(b.in_flight) * u128::from(a.eff())
}

/// Power of two choices: two distinct candidates drawn by weight, the less
/// loaded one wins (the first drawn on a tie).
fn random_two(cands: &[Candidate]) -> usize {
    let total: u64 = cands.iter().map(Candidate::eff).sum();
    let first = draw(cands, total, None);
    let second = draw(cands, total - cands[first].eff(), Some(first));
    let (a, b) = (&cands[first], &cands[second]);
    if lighter(b, a) { b.index } else { a.index }
}

/// A position in `cands` drawn with probability proportional to weight,
/// leaving out `skip`.
fn draw(cands: &[Candidate], total: u64, skip: Option<usize>) -> usize {
    let mut r = random() % total.max(1);
    for (i, c) in cands.iter().enumerate() {
        if Some(i) == skip {
            continue;
        }
        if r < c.eff() {
            return i;
        }
        r -= c.eff();
    }
    cands.len() - 1
}

/// A fast per-thread pseudo-random number (xorshift64*), seeded once per
/// thread from the standard library's random hasher keys.
fn random() -> u64 {
    thread_local! {
        static STATE: Cell<u64> = Cell::new(RandomState::new().hash_one(0x5eed_u64) | 1);
    }
    STATE.with(|s| {
        let mut x = s.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        s.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    })
}

/// FNV-1a 64 followed by murmur3's fmix64 finaliser (docs/load-balancing.md).
pub(crate) fn ring_hash(data: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in data {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h ^= h >> 33;
    h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
    h ^= h >> 33;
    h = h.wrapping_mul(0xc4ce_b93f_e53e_f863);
    h ^ (h >> 33)
}

/// Points per unit of weight on the ring.
const POINTS: u32 = 160;

/// The ring of `servers` (address text, weight): `160 × weight` points each.
fn build_ring(servers: &[(String, u32)]) -> Vec<(u64, u32)> {
    let mut ring = Vec::new();
    for (j, (addr, weight)) in servers.iter().enumerate() {
        for i in 0..POINTS * weight {
            ring.push((ring_hash(format!("{addr}-{i}").as_bytes()), j as u32));
        }
    }
    ring.sort_unstable();
    ring
}

/// The request's hash key: the client address, a header field's first
/// value, or a cookie's value; `None` when the request has none.
pub(crate) fn hash_key<'a>(
    key: &HashKey,
    parts: &'a request::Parts,
    client_ip: impl FnOnce() -> Cow<'a, str>,
) -> Option<Cow<'a, [u8]>> {
    match key {
        HashKey::ClientIp => Some(match client_ip() {
            Cow::Borrowed(s) => Cow::Borrowed(s.as_bytes()),
            Cow::Owned(s) => Cow::Owned(s.into_bytes()),
        }),
        HashKey::Header { name } => parts
            .headers
            .get(name.as_str())
            .map(|v| Cow::Borrowed(v.as_bytes())),
        HashKey::Cookie { name } => cookie(parts, name).map(Cow::Borrowed),
    }
}

/// The value of cookie `name` in the request's `Cookie` fields: each
/// `;`-separated part trimmed of spaces and tabs, split at its first `=`.
fn cookie<'a>(parts: &'a request::Parts, name: &str) -> Option<&'a [u8]> {
    parts
        .headers
        .get_all(http::header::COOKIE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|&b| b == b';'))
        .find_map(|pair| {
            let is_ws = |b: &u8| *b == b' ' || *b == b'\t';
            let start = pair.iter().position(|b| !is_ws(b))?;
            let end = pair.iter().rposition(|b| !is_ws(b))? + 1;
            let pair = &pair[start..end];
            let eq = pair.iter().position(|&b| b == b'=')?;
            (&pair[..eq] == name.as_bytes()).then(|| &pair[eq + 1..])
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cands(weights: &[u32]) -> Vec<Candidate> {
        weights
            .iter()
            .enumerate()
            .map(|(index, &weight)| Candidate {
                index,
                addr: SocketAddr::from(([10, 0, 0, index as u8], 80)),
                weight,
                backup: false,
                in_flight: 0,
                ramp: 1.0,
            })
            .collect()
    }

    fn servers(n: usize) -> Vec<(String, u32)> {
        (0..n).map(|i| (format!("10.0.0.{i}:80"), 1)).collect()
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves() {
        let b = Balancer::new(Balance::RoundRobin, None, &servers(3));
        let cs = cands(&[5, 1, 1]);
        let picks: Vec<usize> = (0..7).map(|_| b.choose(&cs, None).expect("pick")).collect();
        assert_eq!(picks, [0, 0, 1, 0, 2, 0, 0]);
    }

    #[test]
    fn round_robin_and_first() {
        let b = Balancer::new(Balance::RoundRobin, None, &servers(3));
        let cs = cands(&[1, 1, 1]);
        let picks: Vec<usize> = (0..6).map(|_| b.choose(&cs, None).expect("pick")).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2]);
        let f = Balancer::new(Balance::First, None, &servers(3));
        assert_eq!(f.choose(&cs[1..], None), Some(1));
    }

    #[test]
    fn least_conn_prefers_the_lightest_and_rotates_ties() {
        let b = Balancer::new(Balance::LeastConn, None, &servers(3));
        let mut cs = cands(&[1, 1, 2]);
        cs[0].in_flight = 2;
        cs[1].in_flight = 1;
        cs[2].in_flight = 2;
        // 2/200 is lighter than 1/100? equal: 1×200 == 2×100 → tied, rr between 1 and 2.
        let picks: Vec<usize> = (0..4).map(|_| b.choose(&cs, None).expect("pick")).collect();
        assert!(picks.iter().all(|p| *p == 1 || *p == 2), "{picks:?}");
        assert!(picks.contains(&1) && picks.contains(&2), "{picks:?}");
        cs[2].in_flight = 3;
        assert_eq!(b.choose(&cs, None), Some(1));
    }

    #[test]
    fn random_two_follows_load() {
        let b = Balancer::new(Balance::RandomTwo, None, &servers(2));
        let mut cs = cands(&[1, 1]);
        cs[0].in_flight = 5;
        for _ in 0..50 {
            assert_eq!(b.choose(&cs, None), Some(1));
        }
    }

    #[test]
    fn ring_hash_is_fnv1a_with_fmix64() {
        // FNV-1a of the empty input is its offset basis; fmix64 of that:
        let mut k: u64 = 0xcbf2_9ce4_8422_2325;
        k ^= k >> 33;
        k = k.wrapping_mul(0xff51_afd7_ed55_8ccd);
        k ^= k >> 33;
        k = k.wrapping_mul(0xc4ce_b93f_e53e_f863);
        k ^= k >> 33;
        assert_eq!(ring_hash(b""), k);
        assert_ne!(ring_hash(b"a"), ring_hash(b"b"));
    }

    #[test]
    fn consistent_hashing_moves_few_keys() {
        let five = Balancer::new(Balance::Hash, None, &servers(5));
        let six = Balancer::new(Balance::Hash, None, &servers(6));
        let keys: Vec<String> = (0..10_000).map(|i| format!("key-{i}")).collect();
        let all5 = cands(&[1; 5]);
        let all6 = cands(&[1; 6]);
        let mut moved = 0;
        let mut counts = [0usize; 5];
        for k in &keys {
            let a = five.choose(&all5, Some(k.as_bytes())).expect("pick");
            let b = six.choose(&all6, Some(k.as_bytes())).expect("pick");
            counts[a] += 1;
            if a != b {
                assert_eq!(b, 5, "a key moved between old servers");
                moved += 1;
            }
        }
        assert!(moved < 10_000 / 6 + 300, "moved {moved}");
        assert!(counts.iter().all(|&c| c > 1400 && c < 2600), "{counts:?}");
        // Removing a server (here: it is no longer a candidate) moves only its keys.
        for k in &keys {
            let a = five.choose(&all5, Some(k.as_bytes())).expect("pick");
            let b = five.choose(&all5[..4], Some(k.as_bytes())).expect("pick");
            assert!(a == b || a == 4);
        }
    }

    #[test]
    fn cookies_are_found() {
        let req = http::Request::builder()
            .header("cookie", "a=1;\tsid=xyz ;b=; e =1")
            .header("cookie", "c=3")
            .body(())
            .expect("request");
        let (parts, ()) = req.into_parts();
        assert_eq!(cookie(&parts, "sid"), Some(&b"xyz"[..]));
        assert_eq!(cookie(&parts, "b"), Some(&b""[..]));
        assert_eq!(cookie(&parts, "c"), Some(&b"3"[..]));
        assert_eq!(cookie(&parts, "d"), None);
        assert_eq!(
            cookie(&parts, "e"),
            None,
            "names are not trimmed inside a part"
        );
    }
}
