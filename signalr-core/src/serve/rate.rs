//! Minimum data rates: what a client must keep up while the server waits on it, for request
//! bodies and for responses, with Kestrel's values and rules.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// A minimum data rate: bytes per second, enforced once a grace period has passed, like
/// Kestrel's `MinDataRate`. Set on [`ServeOptions`](crate::ServeOptions).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MinDataRate {
    bytes_per_second: f64,
    grace_period: Duration,
}

impl MinDataRate {
    /// At least `bytes_per_second` on average, counted from the start once `grace_period`
    /// has passed. Panics unless the rate is positive and finite and the grace period is at
    /// least one second (so that a client's first packet is never judged alone).
    pub fn new(bytes_per_second: f64, grace_period: Duration) -> Self {
        assert!(
            bytes_per_second.is_finite() && bytes_per_second > 0.0,
            "a minimum data rate must be positive"
        );
        assert!(
            grace_period >= Duration::from_secs(1),
            "a minimum data rate's grace period must be at least 1 s"
        );
        MinDataRate {
            bytes_per_second,
            grace_period,
        }
    }

    /// Kestrel's default for request bodies and for responses: 240 bytes/s after 5 s.
    pub const fn kestrel_default() -> Self {
        MinDataRate {
            bytes_per_second: 240.0,
            grace_period: Duration::from_secs(5),
        }
    }

    /// The least average rate, in bytes per second.
    pub fn bytes_per_second(&self) -> f64 {
        self.bytes_per_second
    }

    /// How long a transfer may take before its rate is judged.
    pub fn grace_period(&self) -> Duration {
        self.grace_period
    }

    /// How long a transfer that has moved `bytes` may have been waited for in all.
    fn allowed(&self, bytes: u64) -> Duration {
        let earned = Duration::try_from_secs_f64(bytes as f64 / self.bytes_per_second)
            .unwrap_or(Duration::MAX);
        self.grace_period.max(earned)
    }
}

/// Times one transfer against a [`MinDataRate`]: only time spent waiting on the client
/// counts, so a server that is slow to produce or to consume is never held against it.
pub(super) struct RateClock {
    rate: MinDataRate,
    bytes: u64,
    /// Time spent waiting in earlier waits.
    waited: Duration,
    /// When the current wait began.
    waiting_since: Option<Instant>,
    /// Made at the first wait only: most transfers never wait.
    timer: Option<Pin<Box<Sleep>>>,
}

impl RateClock {
    pub(super) fn new(rate: MinDataRate) -> Self {
        RateClock {
            rate,
            bytes: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
        }
    }

    /// The client moved `bytes`; a wait, if one was running, is over.
    pub(super) fn moved(&mut self, bytes: usize) {
        if let Some(since) = self.waiting_since.take() {
            self.waited += since.elapsed();
        }
        self.bytes += bytes as u64;
    }

    /// Counts `bytes` as moved without ending a wait: what a write that must wait offers
    /// earns its time to finish, as in Kestrel.
    pub(super) fn credit(&mut self, bytes: usize) {
        self.bytes += bytes as u64;
    }

    /// Whether the transfer has had to wait on the client yet.
    pub(super) fn has_waited(&self) -> bool {
        self.waiting_since.is_some() || !self.waited.is_zero()
    }

    /// Starts the count again: the transfer it measured is over. The timer is kept.
    pub(super) fn restart(&mut self) {
        self.bytes = 0;
        self.waited = Duration::ZERO;
        self.waiting_since = None;
    }

    /// The server is waiting on the client: `Ready` once the client is too slow, otherwise
    /// `Pending`, with `cx` woken when it would become too slow.
    pub(super) fn poll_waiting(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        let now = Instant::now();
        let since = *self.waiting_since.get_or_insert(now);
        let left = self.rate.allowed(self.bytes).saturating_sub(self.waited);
        let Some(deadline) = since.checked_add(left) else {
            return Poll::Pending;
        };
        if deadline <= now {
            return Poll::Ready(());
        }
        let timer = self
            .timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        timer.as_mut().poll(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_time_allowed_is_the_grace_period_or_what_the_bytes_earned() {
        let rate = MinDataRate::kestrel_default();
        assert_eq!(rate.allowed(0), Duration::from_secs(5));
        assert_eq!(rate.allowed(1_200), Duration::from_secs(5));
        assert_eq!(rate.allowed(2_400), Duration::from_secs(10));
        assert_eq!(
            rate.allowed(u64::MAX),
            Duration::from_secs_f64(u64::MAX as f64 / 240.0)
        );
    }

    #[test]
    #[should_panic(expected = "grace period")]
    fn a_grace_period_under_a_second_is_refused() {
        MinDataRate::new(240.0, Duration::from_millis(500));
    }

    #[tokio::test(start_paused = true)]
    async fn only_the_time_spent_waiting_counts() {
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut clock = RateClock::new(MinDataRate::kestrel_default());
        assert!(clock.poll_waiting(&mut cx).is_pending());
        tokio::time::advance(Duration::from_secs(4)).await;
        clock.moved(100);
        // Ten minutes of the server's own time, not waiting on the client: none of it counts.
        tokio::time::advance(Duration::from_secs(600)).await;
        assert!(clock.poll_waiting(&mut cx).is_pending());
        tokio::time::advance(Duration::from_millis(999)).await;
        assert!(clock.poll_waiting(&mut cx).is_pending());
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(clock.poll_waiting(&mut cx).is_ready());
        clock.restart();
        assert!(clock.poll_waiting(&mut cx).is_pending());
    }
}
