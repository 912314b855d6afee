//! Protecting upstreams: the retry budget, and the concurrency limits
//! (circuit breaking) with their bounded queue.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;

use super::Server;

/// Seconds in the retry budget's window.
const WINDOW: usize = 10;

/// Retries allowed as a share of requests over the last [`WINDOW`] seconds,
/// with a floor of `min` retries per second, so retries cannot multiply an
/// outage.
pub(crate) struct RetryBudget {
    ratio: f64,
    min: u32,
    epoch: Instant,
    /// Per second of the window: which second it holds, its requests and
    /// its retries.
    slots: [(AtomicU64, AtomicU32, AtomicU32); WINDOW],
}

impl RetryBudget {
    pub(crate) fn new(ratio: f64, min: u32) -> Self {
        RetryBudget {
            ratio,
            min,
            epoch: Instant::now(),
            slots: Default::default(),
        }
    }

    fn slot(&self) -> &(AtomicU64, AtomicU32, AtomicU32) {
        let sec = self.epoch.elapsed().as_secs() + 1;
        let slot = &self.slots[sec as usize % WINDOW];
        let held = slot.0.load(Ordering::Relaxed);
        if held != sec
            && slot
                .0
                .compare_exchange(held, sec, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            slot.1.store(0, Ordering::Relaxed);
            slot.2.store(0, Ordering::Relaxed);
        }
        slot
    }

    /// Count a request.
    pub(crate) fn request(&self) {
        self.slot().1.fetch_add(1, Ordering::Relaxed);
    }

    /// Take a retry from the budget, if it has one.
    pub(crate) fn try_retry(&self) -> bool {
        let slot = self.slot();
        let now = self.epoch.elapsed().as_secs() + 1;
        let (mut requests, mut retries) = (0u64, 0u64);
        for s in &self.slots {
            if now - s.0.load(Ordering::Relaxed) < WINDOW as u64 {
                requests += u64::from(s.1.load(Ordering::Relaxed));
                retries += u64::from(s.2.load(Ordering::Relaxed));
            }
        }
        let floor = u64::from(self.min) * WINDOW as u64;
        let allowed = ((requests as f64 * self.ratio) as u64).max(floor);
        if retries >= allowed {
            return false;
        }
        slot.2.fetch_add(1, Ordering::Relaxed);
        true
    }
}

/// A pool's requests in flight and the queue of those waiting for capacity.
#[derive(Default)]
pub(crate) struct Gauge {
    pub(crate) in_flight: AtomicU32,
    pub(crate) pending: AtomicU32,
    /// Whether any limit is set (only then do releases wake waiters).
    pub(crate) limited: bool,
    freed: Notify,
}

impl Gauge {
    pub(crate) fn new(limited: bool) -> Self {
        Gauge {
            limited,
            ..Gauge::default()
        }
    }

    fn released(&self) {
        if self.limited {
            self.freed.notify_one();
        }
    }

    /// Wait until `ready()` holds, as one of at most `max_pending` waiters
    /// and for at most `timeout`; false when it did not come to hold.
    pub(crate) async fn wait_for(
        &self,
        max_pending: u32,
        timeout: Duration,
        ready: impl Fn() -> bool,
    ) -> bool {
        if ready() {
            return true;
        }
        if self.pending.fetch_add(1, Ordering::Relaxed) >= max_pending {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        let deadline = Instant::now() + timeout;
        let ok = loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if ready() {
                break true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                break ready();
            }
        };
        self.pending.fetch_sub(1, Ordering::Relaxed);
        if !ok {
            // Pass on a wake-up this waiter may have consumed.
            self.released();
        }
        ok
    }
}

/// One request counted against its pool until dropped.
pub(crate) struct RequestLease(Arc<Gauge>);

impl RequestLease {
    pub(crate) fn new(gauge: &Arc<Gauge>) -> Self {
        gauge.in_flight.fetch_add(1, Ordering::Relaxed);
        RequestLease(gauge.clone())
    }
}

impl Drop for RequestLease {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.released();
    }
}

/// One attempt counted against its server until dropped.
pub(crate) struct ServerLease(Arc<Server>);

impl ServerLease {
    pub(crate) fn new(server: &Arc<Server>) -> Self {
        server.in_flight.fetch_add(1, Ordering::Relaxed);
        server.requests.fetch_add(1, Ordering::Relaxed);
        ServerLease(server.clone())
    }
}

impl Drop for ServerLease {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
        self.0.gauge.released();
    }
}

/// What a response body holds until it ends: its request's and its
/// attempt's places in the counts.
pub(crate) struct Leases {
    pub(crate) _request: Option<RequestLease>,
    pub(crate) _server: ServerLease,
}
