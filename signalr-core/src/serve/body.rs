//! The request body [`serve_with`](crate::serve_with) and [`serve_service`](crate::serve_service)
//! hand to services: hyper's body under the size limit and the minimum data rate.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Limited;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use crate::http::BoxError;

/// A minimum data rate: bytes per second, enforced once a grace period has passed, as
/// Kestrel's `MinDataRate` is. Set on [`ServeOptions`](crate::ServeOptions).
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

    /// Kestrel's default for request bodies: 240 bytes/s after 5 s.
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

    /// How long a body may take before its rate is judged.
    pub fn grace_period(&self) -> Duration {
        self.grace_period
    }

    /// How long a body that has brought `received` bytes may have taken in all.
    fn allowed(&self, received: u64) -> Duration {
        let earned = Duration::try_from_secs_f64(received as f64 / self.bytes_per_second)
            .unwrap_or(Duration::MAX);
        self.grace_period.max(earned)
    }
}

/// The error a [`RequestBody`] ends with when its client sends it slower than the minimum
/// data rate. [`serve_with`](crate::serve_with) then answers `408` itself and closes the
/// connection, whatever the service answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MinDataRateError;

impl std::fmt::Display for MinDataRateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the request body arrived slower than the minimum data rate")
    }
}

impl std::error::Error for MinDataRateError {}

/// A request body as `serve_with` and `serve_service` give it: bounded by
/// [`max_request_body_size`](crate::ServeOptions::max_request_body_size) (past it the body
/// ends with `http_body_util::LengthLimitError`) and by
/// [`min_request_body_data_rate`](crate::ServeOptions::min_request_body_data_rate) (a
/// [`MinDataRateError`]). As in Kestrel, time counts only while the service is waiting for
/// the body: a service that stops reading for a while (backpressure) is not the client's
/// fault.
pub struct RequestBody {
    inner: Limited<Incoming>,
    rate: Option<MinDataRate>,
    received: u64,
    /// Time spent waiting for the client in earlier waits.
    waited: Duration,
    /// When the current wait began.
    waiting_since: Option<Instant>,
    /// Made at the first wait only: most bodies arrive with their head.
    timer: Option<Pin<Box<Sleep>>>,
    /// Shared with `serve`, which answers `408` when it is set.
    too_slow: Arc<AtomicBool>,
}

impl RequestBody {
    pub(super) fn new(
        body: Incoming,
        limit: usize,
        rate: Option<MinDataRate>,
        too_slow: Arc<AtomicBool>,
    ) -> Self {
        RequestBody {
            inner: Limited::new(body, limit),
            rate,
            received: 0,
            waited: Duration::ZERO,
            waiting_since: None,
            timer: None,
            too_slow,
        }
    }

    fn fail(&mut self) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.too_slow.store(true, Ordering::Relaxed);
        Poll::Ready(Some(Err(Box::new(MinDataRateError))))
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("received", &self.received)
            .finish_non_exhaustive()
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.too_slow.load(Ordering::Relaxed) {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(since) = this.waiting_since.take() {
                    this.waited += since.elapsed();
                }
                if let Some(Ok(data)) = frame.as_ref().map(|f| f.as_ref().map(Frame::data_ref)) {
                    this.received += data.map_or(0, |d| d.len() as u64);
                }
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let Some(rate) = this.rate else {
                    return Poll::Pending;
                };
                let now = Instant::now();
                let since = *this.waiting_since.get_or_insert(now);
                let left = rate.allowed(this.received).saturating_sub(this.waited);
                let Some(deadline) = since.checked_add(left) else {
                    return Poll::Pending;
                };
                if deadline <= now {
                    return this.fail();
                }
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if timer.deadline() != deadline {
                    timer.as_mut().reset(deadline);
                }
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => this.fail(),
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.too_slow.load(Ordering::Relaxed) || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
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
}
