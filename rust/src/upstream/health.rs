//! Server health: active checks (an HTTP request or a TCP connect on an
//! interval, with rise and fall thresholds), passive checks (consecutive
//! failures eject a server for a backoff that doubles on repeat), and the
//! slow-start ramp of a server that came back.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::Method;
use tokio::time::Instant;

use super::{OutBody, Upstream};
use crate::config::{HealthCheckConfig, HealthCheckKind};

/// One server's health, shared by the request path and the checker.
/// Times are milliseconds since the pool's epoch, plus one (0 = never).
#[derive(Default)]
pub(crate) struct Health {
    /// Taken down by the active check.
    pub(crate) down: AtomicBool,
    /// Ejected by the passive check until then.
    pub(crate) ejected_until: AtomicU64,
    /// When the server last came back (for slow start).
    pub(crate) back_at: AtomicU64,
    consecutive_fails: AtomicU32,
    /// Ejections since the server last stayed healthy for `eject_time_max`.
    pub(crate) ejections: AtomicU32,
    /// Times ejected in all.
    pub(crate) ejected_total: AtomicU64,
}

/// Passive-check settings of a pool.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Passive {
    pub(crate) max_fails: u32,
    pub(crate) fail_on_5xx: bool,
    pub(crate) eject_time: Duration,
    pub(crate) eject_time_max: Duration,
    pub(crate) max_ejected_percent: u32,
    pub(crate) slow_start: Duration,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u128::from(u64::MAX / 4)) as u64
}

impl Health {
    /// Whether the server takes traffic at `now`.
    pub(crate) fn healthy(&self, now: u64) -> bool {
        !self.down.load(Ordering::Relaxed) && self.ejected_until.load(Ordering::Relaxed) <= now
    }

    /// The slow-start factor in (0, 1] at `now`.
    pub(crate) fn ramp(&self, now: u64, slow_start: Duration) -> f64 {
        let back = self.back_at.load(Ordering::Relaxed);
        let span = ms(slow_start);
        if span == 0 || back == 0 || now >= back + span {
            return 1.0;
        }
        // Never quite 0: a candidate's weight stays positive.
        (now.saturating_sub(back) as f64 / span as f64).max(0.001)
    }

    /// The state's name in statistics.
    pub(crate) fn state(&self, now: u64) -> &'static str {
        if self.down.load(Ordering::Relaxed) {
            "down"
        } else if self.ejected_until.load(Ordering::Relaxed) > now {
            "ejected"
        } else {
            "up"
        }
    }
}

impl Upstream {
    /// Milliseconds since this pool was created, plus one.
    pub(crate) fn now_ms(&self) -> u64 {
        ms(self.epoch.elapsed()) + 1
    }

    /// Record how an attempt on server `i` went, for the passive check:
    /// `failed` is a connect failure, a reset, a timeout, a malformed
    /// response, or a 5xx with `fail_on_5xx`.
    pub(crate) fn record(&self, i: usize, failed: bool) {
        let server = &self.servers[i];
        let h = &server.health;
        if !failed {
            if h.consecutive_fails.load(Ordering::Relaxed) != 0 {
                h.consecutive_fails.store(0, Ordering::Relaxed);
            }
            return;
        }
        server.failures.fetch_add(1, Ordering::Relaxed);
        let p = &self.passive;
        if p.max_fails == 0 {
            return;
        }
        if h.consecutive_fails.fetch_add(1, Ordering::Relaxed) + 1 < p.max_fails {
            return;
        }
        let _one_at_a_time = self
            .eject_lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = self.now_ms();
        if h.ejected_until.load(Ordering::Relaxed) > now {
            return;
        }
        let n = self.servers.len() as u64;
        let allowed = match u64::from(p.max_ejected_percent) {
            0 => 0,
            pct => (n * pct / 100).max(1),
        };
        let ejected = self
            .servers
            .iter()
            .filter(|s| s.health.ejected_until.load(Ordering::Relaxed) > now)
            .count() as u64;
        if ejected >= allowed {
            return;
        }
        let repeat = h.ejections.fetch_add(1, Ordering::Relaxed).min(30);
        let span = ms(p.eject_time)
            .saturating_mul(1 << repeat)
            .min(ms(p.eject_time_max).max(ms(p.eject_time)));
        h.ejected_until.store(now + span, Ordering::Relaxed);
        h.back_at.store(now + span, Ordering::Relaxed);
        h.consecutive_fails.store(0, Ordering::Relaxed);
        h.ejected_total.fetch_add(1, Ordering::Relaxed);
        log::warn!(
            "upstream {} server {} is ejected for {:.1}s after {} consecutive failures",
            self.name,
            server.addr,
            span as f64 / 1000.0,
            p.max_fails
        );
    }

    /// Once a second: log servers whose ejection ended, and forget the
    /// ejection history of servers healthy for `eject_time_max`.
    pub(crate) fn sweep_health(&self) {
        let now = self.now_ms();
        let quiet = ms(self.passive.eject_time_max).max(ms(self.passive.eject_time));
        for s in &self.servers {
            let h = &s.health;
            let until = h.ejected_until.load(Ordering::Relaxed);
            if until != 0
                && until <= now
                && h.ejected_until
                    .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                log::warn!(
                    "upstream {} server {} is back after its ejection",
                    self.name,
                    s.addr
                );
            } else if until == 0
                && h.ejections.load(Ordering::Relaxed) != 0
                && now >= h.back_at.load(Ordering::Relaxed) + quiet
            {
                h.ejections.store(0, Ordering::Relaxed);
            }
        }
    }

    /// Probe server `i` once: `Err` says why it failed.
    async fn probe(&self, i: usize, hc: &HealthCheckConfig) -> Result<(), String> {
        let server = &self.servers[i];
        let work = async {
            let mut conn = self.connect(server).await.map_err(|e| e.to_string())?;
            if hc.kind == HealthCheckKind::Tcp {
                return Ok(());
            }
            let host = hc.host.clone().unwrap_or_else(|| server.addr.to_string());
            let head = Bytes::from(format!(
                "GET {} HTTP/1.1\r\nhost: {host}\r\nuser-agent: rproxy-health-check\r\nconnection: close\r\n\r\n",
                hc.path
            ));
            let mut body = OutBody::empty();
            let mut t = self.timeouts;
            t.response = hc.timeout;
            let (resp, _) = conn
                .exchange(&head, &mut body, &Method::GET, &t)
                .await
                .map_err(|e| e.error.to_string())?;
            let status = resp.status.as_u16();
            if (hc.status.0..=hc.status.1).contains(&status) {
                Ok(())
            } else {
                Err(format!("status {status}"))
            }
        };
        match tokio::time::timeout(hc.timeout, work).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", hc.timeout)),
        }
    }
}

/// Start one checker per server of `upstream`; each ends when the pool is
/// dropped or its handle aborted.
pub(crate) fn spawn_checks(upstream: &Arc<Upstream>) -> Vec<tokio::task::JoinHandle<()>> {
    let Some(hc) = upstream.health_check.clone() else {
        return Vec::new();
    };
    (0..upstream.servers.len())
        .map(|i| tokio::spawn(check_loop(Arc::downgrade(upstream), i, hc.clone())))
        .collect()
}

async fn check_loop(pool: Weak<Upstream>, i: usize, hc: HealthCheckConfig) {
    let (mut passes, mut fails) = (0u32, 0u32);
    let mut next = Instant::now();
    loop {
        tokio::time::sleep_until(next).await;
        next += hc.interval;
        let Some(up) = pool.upgrade() else {
            return;
        };
        let result = up.probe(i, &hc).await;
        let server = &up.servers[i];
        let h = &server.health;
        let down = h.down.load(Ordering::Relaxed);
        match result {
            Ok(()) => {
                fails = 0;
                passes = passes.saturating_add(1);
                if down && passes >= hc.rise {
                    h.down.store(false, Ordering::Relaxed);
                    h.back_at.store(up.now_ms(), Ordering::Relaxed);
                    log::warn!(
                        "upstream {} server {} is up ({} checks passed)",
                        up.name,
                        server.addr,
                        passes
                    );
                }
            }
            Err(why) => {
                passes = 0;
                fails = fails.saturating_add(1);
                if !down && fails >= hc.fall {
                    h.down.store(true, Ordering::Relaxed);
                    log::warn!(
                        "upstream {} server {} is down ({} checks failed; last: {why})",
                        up.name,
                        server.addr,
                        fails
                    );
                }
            }
        }
        if next < Instant::now() {
            next = Instant::now() + hc.interval;
        }
    }
}
