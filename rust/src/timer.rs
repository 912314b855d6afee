//! Timeouts that cost nothing on the fast path.
//!
//! Most reads and writes of a proxied request complete without waiting; a
//! timer registered for each of them would be pure overhead. [`IdleTimer`] is
//! armed only when an operation would block, and [`lazy_timeout`] only when
//! a future is not ready on its first poll.

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// Fires when no progress was reported for `limit` while waiting.
#[derive(Debug)]
pub struct IdleTimer {
    limit: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl IdleTimer {
    /// A timer allowing `limit` without progress.
    pub fn new(limit: Duration) -> Self {
        IdleTimer {
            limit,
            sleep: None,
            armed: false,
        }
    }

    /// Progress was made: the next wait starts a fresh period.
    pub fn progress(&mut self) {
        self.armed = false;
    }

    /// Called when the guarded operation is pending: arms the timer if it is
    /// not running and reports whether the period has run out.
    pub fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let deadline = Instant::now() + self.limit;
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if !self.armed {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        self.armed = true;
        sleep.as_mut().poll(cx).is_ready()
    }
}

/// A timeout timer reused for one operation after another (say, every
/// response on a keep-alive connection). It stays registered and is moved
/// only when a new deadline is earlier than where it is set, so a request
/// costs a clock read instead of a timer insert and removal.
#[derive(Debug, Default)]
pub struct Deadline {
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Deadline {
    /// Run `fut`, giving up (`None`) if it takes longer than `limit`.
    pub async fn run<F: Future>(&mut self, limit: Duration, fut: F) -> Option<F::Output> {
        let mut fut = pin!(fut);
        if let Poll::Ready(out) = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await {
            return Some(out);
        }
        let deadline = Instant::now() + limit;
        let sleep = match &mut self.sleep {
            Some(sleep) => {
                if sleep.deadline() > deadline {
                    sleep.as_mut().reset(deadline);
                }
                sleep
            }
            None => self
                .sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline))),
        };
        loop {
            tokio::select! {
                biased;
                out = &mut fut => return Some(out),
                () = sleep.as_mut() => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    sleep.as_mut().reset(deadline);
                }
            }
        }
    }
}

/// Poll `fut` once; if it is pending, finish it under a `limit` timeout.
pub async fn lazy_timeout<F: Future>(limit: Duration, fut: F) -> Option<F::Output> {
    let mut fut = pin!(fut);
    let first = poll_fn(|cx| Poll::Ready(fut.as_mut().poll(cx))).await;
    match first {
        Poll::Ready(out) => Some(out),
        Poll::Pending => tokio::time::timeout(limit, fut).await.ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn idle_timer_fires_only_without_progress() {
        let mut t = IdleTimer::new(Duration::from_secs(5));
        let expired = poll_fn(|cx| Poll::Ready(t.poll_expired(cx))).await;
        assert!(!expired);
        tokio::time::advance(Duration::from_secs(4)).await;
        t.progress();
        let expired = poll_fn(|cx| Poll::Ready(t.poll_expired(cx))).await;
        assert!(!expired, "progress restarts the period");
        tokio::time::advance(Duration::from_secs(6)).await;
        let expired = poll_fn(|cx| Poll::Ready(t.poll_expired(cx))).await;
        assert!(expired);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_is_reused_and_still_fires() {
        let mut d = Deadline::default();
        let slow = tokio::time::sleep(Duration::from_secs(2));
        assert_eq!(d.run(Duration::from_secs(5), slow).await, Some(()));
        // A later operation with a shorter limit still times out on time.
        let started = Instant::now();
        assert_eq!(
            d.run(Duration::from_secs(1), std::future::pending::<()>())
                .await,
            None
        );
        assert_eq!(started.elapsed(), Duration::from_secs(1));
        // And one with a longer limit is not cut short by the old setting.
        let slow = tokio::time::sleep(Duration::from_secs(8));
        assert_eq!(d.run(Duration::from_secs(10), slow).await, Some(()));
    }

    #[tokio::test(start_paused = true)]
    async fn lazy_timeout_times_out_pending_futures() {
        assert_eq!(
            lazy_timeout(Duration::from_secs(1), async { 7 }).await,
            Some(7)
        );
        let never = std::future::pending::<()>();
        assert_eq!(lazy_timeout(Duration::from_secs(1), never).await, None);
    }
}
