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
        // Whoever moves the slot to this second clears its counts.
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
            if now.saturating_sub(s.0.load(Ordering::Relaxed)) < WINDOW as u64 {
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
            // Waiters wait for different things (room in the pool, a
            // server they have not tried): wake them all to look again.
            self.freed.notify_waiters();
        }
    }

    /// Count a request in flight if that keeps the pool within `max`
    /// (0: no limit); false when the pool is full.
    fn try_take(&self, max: u32) -> bool {
        if max == 0 {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }

    /// Wait until `ready()` holds, as one of at most `max_pending` waiters
    /// and for at most `timeout`; false when it did not come to hold.
    pub(crate) async fn wait_for(
        &self,
        max_pending: u32,
        timeout: Duration,
        mut ready: impl FnMut() -> bool,
    ) -> bool {
        if ready() {
            return true;
        }
        if self.pending.fetch_add(1, Ordering::Relaxed) >= max_pending {
            self.pending.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        // Counted out again however this ends, the request dropped included.
        let _waiting = Waiting(&self.pending);
        let deadline = Instant::now() + timeout;
        loop {
            let notified = self.freed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if ready() {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return ready();
            }
        }
    }
}

/// A place in a pool's queue, given up when dropped.
struct Waiting<'a>(&'a AtomicU32);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One request counted against its pool until dropped.
pub(crate) struct RequestLease(Arc<Gauge>);

impl RequestLease {
    /// A place in the pool's count if it has room below `max` (0: no limit).
    pub(crate) fn try_new(gauge: &Arc<Gauge>, max: u32) -> Option<Self> {
        gauge.try_take(max).then(|| RequestLease(gauge.clone()))
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
    /// A place in the server's count if it has room below `max` (0: no limit).
    pub(crate) fn try_new(server: &Arc<Server>, max: u32) -> Option<Self> {
        let taken = if max == 0 {
            server.in_flight.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            server
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .is_ok()
        };
        if !taken {
            return None;
        }
        server.requests.fetch_add(1, Ordering::Relaxed);
        Some(ServerLease(server.clone()))
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
    pub(crate) _request: RequestLease,
    pub(crate) _server: ServerLease,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicBool;

    #[tokio::test]
    async fn a_cancelled_waiter_leaves_the_queue() {
        let gauge = Gauge::new(true);
        let waiting = gauge.wait_for(1, Duration::from_secs(10), || false);
        assert!(
            tokio::time::timeout(Duration::from_millis(20), waiting)
                .await
                .is_err()
        );
        assert_eq!(
            gauge.pending.load(Ordering::Relaxed),
            0,
            "dropped, so no longer pending"
        );
        // The queue has room again.
        assert!(!gauge.wait_for(1, Duration::from_millis(10), || false).await);
    }

    #[tokio::test]
    async fn a_release_wakes_every_waiter_to_look_again() {
        let gauge = Arc::new(Gauge::new(true));
        let (a, b) = (
            Arc::new(AtomicBool::new(false)),
            Arc::new(AtomicBool::new(false)),
        );
        let wait = |flag: Arc<AtomicBool>| {
            let gauge = gauge.clone();
            tokio::spawn(async move {
                gauge
                    .wait_for(4, Duration::from_secs(5), || flag.load(Ordering::Relaxed))
                    .await
            })
        };
        let (first, second) = (wait(a.clone()), wait(b.clone()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        // What frees up is what the second waiter wants, not the first.
        b.store(true, Ordering::Relaxed);
        let lease = RequestLease::try_new(&gauge, 0).expect("no limit");
        drop(lease);
        assert!(
            tokio::time::timeout(Duration::from_secs(1), second)
                .await
                .expect("woken")
                .expect("task")
        );
        first.abort();
    }

    #[test]
    fn leases_respect_the_limit() {
        let gauge = Arc::new(Gauge::new(true));
        let one = RequestLease::try_new(&gauge, 2).expect("room");
        let two = RequestLease::try_new(&gauge, 2).expect("room");
        assert!(RequestLease::try_new(&gauge, 2).is_none());
        drop(one);
        assert!(RequestLease::try_new(&gauge, 2).is_some());
        drop(two);
    }

    #[test]
    fn the_budget_allows_a_share_with_a_floor() {
        let budget = RetryBudget::new(0.2, 1);
        for _ in 0..100 {
            budget.request();
        }
        let granted = (0..100).filter(|_| budget.try_retry()).count();
        assert_eq!(
            granted, 20,
            "20 % of 100 requests (the floor, 10 in the window, is lower)"
        );
        let floor = RetryBudget::new(0.2, 1);
        assert_eq!((0..100).filter(|_| floor.try_retry()).count(), 10);
    }
}
