//! Upstream pools: named sets of servers, choosing one for a request
//! (balance.rs), their health (health.rs), the limits that protect them
//! (limits.rs), their connection pools, and connecting under a timeout.

mod balance;
mod conn;
mod health;
mod limits;
mod pool;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use balance::Balancer;
pub use balance::Candidate;
pub(crate) use balance::hash_key as balance_key;
pub use conn::UpstreamBody;
pub(crate) use conn::{ExchangeError, OutBody, UpgradeTunnel, UpstreamConn};
pub(crate) use health::spawn_checks;
use health::{Health, Passive};
use limits::{Gauge, RetryBudget};
pub(crate) use limits::{Leases, RequestLease, ServerLease};
use pool::Pool;

use crate::config::{HashKey, HealthCheckConfig, UpstreamConfig};
use crate::error::{Error, ErrorKind, Result};
use crate::timer::Deadline;

/// Timeouts and limits for talking to a pool's servers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timeouts {
    pub(crate) connect: Duration,
    pub(crate) response: Duration,
    pub(crate) body_idle: Duration,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
}

/// One upstream server.
pub struct Server {
    pub(crate) addr: SocketAddr,
    pub(crate) weight: u32,
    pub(crate) backup: bool,
    pool: Pool,
    keepalive_requests: u32,
    pub(crate) health: Health,
    /// Attempts in progress on this server.
    pub(crate) in_flight: AtomicU32,
    /// Attempts made, and those that failed.
    pub(crate) requests: AtomicU64,
    pub(crate) failures: AtomicU64,
    /// The pool's gauge, woken when an attempt ends.
    gauge: Arc<Gauge>,
}

impl Server {
    /// Return a connection whose exchange finished cleanly.
    pub(crate) fn release(&self, io: TcpStream, requests: u32, deadline: Deadline) {
        if requests < self.keepalive_requests {
            self.pool.checkin(io, requests, deadline);
        }
    }
}

/// The servers one attempt may use.
pub(crate) struct Eligible {
    pub(crate) cands: Vec<Candidate>,
    /// Some server was left out only because it was at its limit.
    pub(crate) at_capacity: bool,
}

/// A named pool of servers.
pub(crate) struct Upstream {
    pub(crate) name: String,
    pub(crate) servers: Vec<Arc<Server>>,
    /// `Host` sent for requests that carry no authority (HTTP/1.0).
    pub(crate) default_host: String,
    pub(crate) timeouts: Timeouts,
    balancer: Balancer,
    pub(crate) retries: u32,
    budget: RetryBudget,
    gauge: Arc<Gauge>,
    max_requests: u32,
    max_requests_per_server: u32,
    max_pending: u32,
    queue_timeout: Duration,
    passive: Passive,
    health_check: Option<HealthCheckConfig>,
    epoch: Instant,
    eject_lock: Mutex<()>,
    /// Requests, retries made and refused by the budget, 503s from limits.
    requests: AtomicU64,
    retried: AtomicU64,
    retries_refused: AtomicU64,
    overloaded: AtomicU64,
}

/// A pool's statistics (`rproxy upstreams`).
#[derive(Debug, serde::Serialize)]
pub struct PoolStats {
    pool: String,
    requests: u64,
    retries: u64,
    retries_refused: u64,
    overloaded: u64,
    in_flight: u32,
    pending: u32,
    servers: Vec<ServerStats>,
}

/// One server's statistics.
#[derive(Debug, serde::Serialize)]
pub struct ServerStats {
    address: String,
    weight: u32,
    backup: bool,
    state: &'static str,
    in_flight: u32,
    requests: u64,
    failures: u64,
    ejections: u64,
    ramp: f64,
}

impl Upstream {
    pub(crate) fn new(
        name: &str,
        cfg: &UpstreamConfig,
        max_header_bytes: usize,
        max_headers: usize,
    ) -> Self {
        let limited = cfg.max_requests > 0 || cfg.max_requests_per_server > 0;
        // Without limits nobody waits, and releases need not wake anyone.
        let gauge = Arc::new(Gauge::new(limited));
        let servers: Vec<Arc<Server>> = cfg
            .servers
            .iter()
            .map(|entry| {
                let (addr, weight, backup) = entry.parts();
                Arc::new(Server {
                    addr,
                    weight,
                    backup,
                    pool: Pool::new(cfg.keepalive, cfg.keepalive_timeout),
                    keepalive_requests: cfg.keepalive_requests.max(1),
                    health: Health::default(),
                    in_flight: AtomicU32::new(0),
                    requests: AtomicU64::new(0),
                    failures: AtomicU64::new(0),
                    gauge: gauge.clone(),
                })
            })
            .collect();
        let ring_input: Vec<(String, u32)> = servers
            .iter()
            .map(|s| (s.addr.to_string(), s.weight))
            .collect();
        Upstream {
            name: name.to_owned(),
            default_host: servers
                .first()
                .map(|s| s.addr.to_string())
                .unwrap_or_default(),
            balancer: Balancer::new(cfg.balance, cfg.hash_key.clone(), &ring_input),
            servers,
            timeouts: Timeouts {
                connect: cfg.connect_timeout,
                response: cfg.response_timeout,
                body_idle: cfg.body_idle_timeout,
                max_header_bytes,
                max_headers,
            },
            retries: cfg.retries,
            budget: RetryBudget::new(cfg.retry_budget, cfg.retry_budget_min),
            gauge,
            max_requests: cfg.max_requests,
            max_requests_per_server: cfg.max_requests_per_server,
            max_pending: cfg.max_pending,
            queue_timeout: cfg.queue_timeout,
            passive: Passive {
                max_fails: cfg.max_fails,
                fail_on_5xx: cfg.fail_on_5xx,
                eject_time: cfg.eject_time,
                eject_time_max: cfg.eject_time_max,
                max_ejected_percent: cfg.max_ejected_percent,
                slow_start: cfg.slow_start,
            },
            health_check: cfg.health_check.clone(),
            epoch: Instant::now(),
            eject_lock: Mutex::new(()),
            requests: AtomicU64::new(0),
            retried: AtomicU64::new(0),
            retries_refused: AtomicU64::new(0),
            overloaded: AtomicU64::new(0),
        }
    }

    /// Whether 5xx responses count as failures for the passive check.
    pub(crate) fn fail_on_5xx(&self) -> bool {
        self.passive.fail_on_5xx
    }

    /// What `balance = "hash"` hashes, if that is the pool's algorithm.
    pub(crate) fn hash_key_spec(&self) -> Option<&HashKey> {
        self.balancer.key_spec()
    }

    /// The servers an attempt may use, leaving out those in `tried`:
    /// healthy primaries; else healthy backups; else (every server down)
    /// the primaries regardless of health. Servers at
    /// `max_requests_per_server` are left out in each case.
    pub(crate) fn eligible(&self, tried: &[usize]) -> Eligible {
        let now = self.now_ms();
        let cap = self.max_requests_per_server;
        let mut out = Eligible {
            cands: Vec::with_capacity(self.servers.len()),
            at_capacity: false,
        };
        for pass in 0..3 {
            for (i, s) in self.servers.iter().enumerate() {
                let wanted = match pass {
                    0 => !s.backup && s.health.healthy(now),
                    1 => s.backup && s.health.healthy(now),
                    _ => !s.backup,
                };
                if !wanted || tried.contains(&i) {
                    continue;
                }
                let in_flight = s.in_flight.load(Ordering::Relaxed);
                if cap > 0 && in_flight >= cap {
                    out.at_capacity = true;
                    continue;
                }
                out.cands.push(Candidate {
                    index: i,
                    addr: s.addr,
                    weight: s.weight,
                    backup: s.backup,
                    in_flight,
                    ramp: s.health.ramp(now, self.passive.slow_start),
                });
            }
            if !out.cands.is_empty() {
                if pass == 2 {
                    log::debug!(
                        "upstream {}: no healthy server; trying the others",
                        self.name
                    );
                }
                break;
            }
            if out.at_capacity {
                // A server of this tier is only busy: wait for it rather
                // than fall back to backups or unhealthy servers.
                break;
            }
        }
        out
    }

    /// The pool's own choice among `cands`.
    pub(crate) fn choose(&self, cands: &[Candidate], key: Option<&[u8]>) -> Option<usize> {
        self.balancer.choose(cands, key)
    }

    /// Count a request, and wait (bounded) while the pool is at
    /// `max_requests`; `Err` is the 503 for a full pool.
    pub(crate) async fn admit(&self) -> Result<RequestLease> {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.budget.request();
        let max = self.max_requests;
        let mut lease = None;
        let admitted = self
            .gauge
            .wait_for(self.max_pending, self.queue_timeout, || {
                lease = RequestLease::try_new(&self.gauge, max);
                lease.is_some()
            })
            .await;
        match lease {
            Some(lease) if admitted => Ok(lease),
            _ => Err(self.overloaded()),
        }
    }

    /// A place in server `i`'s count, if it is below `max_requests_per_server`.
    pub(crate) fn lease(&self, i: usize) -> Option<ServerLease> {
        ServerLease::try_new(&self.servers[i], self.max_requests_per_server)
    }

    /// Wait (bounded) for a server below `max_requests_per_server`.
    pub(crate) async fn wait_for_server(&self, tried: &[usize]) -> Result<()> {
        if self
            .gauge
            .wait_for(self.max_pending, self.queue_timeout, || {
                !self.eligible(tried).cands.is_empty()
            })
            .await
        {
            Ok(())
        } else {
            Err(self.overloaded())
        }
    }

    fn overloaded(&self) -> Error {
        self.overloaded.fetch_add(1, Ordering::Relaxed);
        Error::new(ErrorKind::Overloaded, "upstream at its concurrency limit")
    }

    /// Take a retry from the pool's budget.
    pub(crate) fn try_retry(&self) -> bool {
        if self.budget.try_retry() {
            self.retried.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            self.retries_refused.fetch_add(1, Ordering::Relaxed);
            false
        }
    }

    /// The pool's statistics now.
    pub(crate) fn stats(&self) -> PoolStats {
        let now = self.now_ms();
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PoolStats {
            pool: self.name.clone(),
            requests: load(&self.requests),
            retries: load(&self.retried),
            retries_refused: load(&self.retries_refused),
            overloaded: load(&self.overloaded),
            in_flight: self.gauge.in_flight.load(Ordering::Relaxed),
            pending: self.gauge.pending.load(Ordering::Relaxed),
            servers: self
                .servers
                .iter()
                .map(|s| ServerStats {
                    address: s.addr.to_string(),
                    weight: s.weight,
                    backup: s.backup,
                    state: s.health.state(now),
                    in_flight: s.in_flight.load(Ordering::Relaxed),
                    requests: load(&s.requests),
                    failures: load(&s.failures),
                    ejections: load(&s.health.ejected_total),
                    ramp: s.health.ramp(now, self.passive.slow_start),
                })
                .collect(),
        }
    }

    /// A pooled connection to `server`, or a new one.
    pub(crate) async fn connection(&self, server: &Arc<Server>) -> Result<UpstreamConn> {
        if let Some((io, requests, deadline)) = server.pool.checkout() {
            return Ok(UpstreamConn::new(
                io,
                server.clone(),
                requests,
                true,
                deadline,
            ));
        }
        self.connect(server).await
    }

    /// A new connection to `server`.
    pub(crate) async fn connect(&self, server: &Arc<Server>) -> Result<UpstreamConn> {
        let connecting = TcpStream::connect(server.addr);
        let io = match tokio::time::timeout(self.timeouts.connect, connecting).await {
            Err(_) => {
                return Err(Error::new(ErrorKind::UpstreamConnect, "connect_timeout").retryable());
            }
            Ok(Err(e)) => {
                return Err(
                    Error::new(ErrorKind::UpstreamConnect, "connecting upstream")
                        .with_cause(e)
                        .retryable(),
                );
            }
            Ok(Ok(io)) => io,
        };
        let _ = io.set_nodelay(true);
        Ok(UpstreamConn::new(
            io,
            server.clone(),
            0,
            false,
            Deadline::default(),
        ))
    }

    /// Send a bodiless request (`head`, the request line and fields
    /// written) to the pool's servers in turn until one answers, and read
    /// its response: the head, and at most `max_body` bytes of body, which
    /// are discarded (a longer body closes the connection).
    pub(crate) async fn subrequest(
        &self,
        head: &bytes::Bytes,
        max_body: usize,
    ) -> Result<(http::StatusCode, http::HeaderMap)> {
        let method = http::Method::GET;
        let mut last_error = None;
        let mut tried = Vec::new();
        while let Some(i) = self.choose(&self.eligible(&tried).cands, None) {
            tried.push(i);
            let server = &self.servers[i];
            let mut conn = match self.connection(server).await {
                Ok(c) => c,
                Err(e) => {
                    last_error = Some(e);
                    continue;
                }
            };
            let mut body = OutBody::empty();
            let (resp, sent_all) = match conn
                .exchange(head, &mut body, &method, &self.timeouts)
                .await
            {
                Ok(r) => r,
                // A pooled connection the server had closed: try a fresh one.
                Err(ExchangeError { stale: true, .. }) => {
                    conn = match self.connect(server).await {
                        Ok(c) => c,
                        Err(e) => {
                            last_error = Some(e);
                            continue;
                        }
                    };
                    conn.exchange(head, &mut body, &method, &self.timeouts)
                        .await
                        .map_err(|e| e.error)?
                }
                Err(e) => return Err(e.error),
            };
            let crate::h1::parse::ResponseHead {
                status,
                headers,
                framing,
                keep_alive,
                ..
            } = resp;
            let mut rest = UpstreamBody::new(
                conn,
                framing,
                keep_alive && sent_all,
                self.timeouts.body_idle,
            );
            let mut read = 0usize;
            while read <= max_body {
                match std::future::poll_fn(|cx| rest.poll_frame(cx)).await {
                    None => break,
                    Some(Ok(frame)) => read += frame.data_ref().map_or(0, |d| d.len()),
                    Some(Err(e)) => return Err(e),
                }
            }
            return Ok((status, headers));
        }
        Err(last_error
            .unwrap_or_else(|| Error::new(ErrorKind::UpstreamConnect, "no upstream server")))
    }

    /// Close idle connections past their timeout; note ended ejections.
    pub(crate) fn sweep(&self) {
        for s in &self.servers {
            s.pool.sweep();
        }
        self.sweep_health();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(json: &str) -> Upstream {
        let cfg: UpstreamConfig = serde_json::from_str(json).expect("pool config");
        Upstream::new("app", &cfg, 65536, 100)
    }

    fn indices(e: &Eligible) -> Vec<usize> {
        e.cands.iter().map(|c| c.index).collect()
    }

    #[test]
    fn tiers_primaries_then_backups_then_anything() {
        let up = pool(
            r#"{"servers": ["10.0.0.1:80", "10.0.0.2:80",
                 {"addr": "10.0.0.3:80", "weight": 1, "backup": true}]}"#,
        );
        assert_eq!(indices(&up.eligible(&[])), [0, 1]);
        assert_eq!(
            indices(&up.eligible(&[0, 1])),
            [2],
            "tried primaries: the backup"
        );
        up.servers[0].health.down.store(true, Ordering::Relaxed);
        up.servers[1].health.down.store(true, Ordering::Relaxed);
        assert_eq!(
            indices(&up.eligible(&[])),
            [2],
            "every primary down: the backup"
        );
        assert_eq!(
            indices(&up.eligible(&[2])),
            [0, 1],
            "nothing healthy left: the primaries"
        );
    }

    #[test]
    fn a_busy_server_is_waited_for_not_replaced_by_a_worse_tier() {
        let up = pool(
            r#"{"servers": ["10.0.0.1:80", "10.0.0.2:80",
                 {"addr": "10.0.0.3:80", "weight": 1, "backup": true}],
                "max_requests_per_server": 1}"#,
        );
        up.servers[1].health.down.store(true, Ordering::Relaxed);
        let lease = up.lease(0).expect("room");
        let e = up.eligible(&[]);
        assert!(
            e.cands.is_empty() && e.at_capacity,
            "neither the backup nor the down server"
        );
        assert!(up.lease(0).is_none(), "the limit holds");
        drop(lease);
        assert_eq!(indices(&up.eligible(&[])), [0]);
    }
}
