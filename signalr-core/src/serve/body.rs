//! The request body [`serve_with`](crate::serve_with) and [`serve_service`](crate::serve_service)
//! hand to services: hyper's body under the size limit and the minimum data rate.

use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Limited;
use hyper::body::Incoming;

use super::limits::Tracker;
use super::rate::{MinDataRate, RateClock};
use crate::http::BoxError;

/// The error a [`RequestBody`] ends with when its client sends it slower than the minimum
/// data rate. If the service is still answering the request, [`serve_with`](crate::serve_with)
/// answers `408` in its place. The connection is closed (HTTP/1), or sent a `GOAWAY`
/// (HTTP/2: its other requests finish, new ones need a new connection).
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
/// [`MinDataRateError`]). As in Kestrel, time counts only while the service is
/// waiting for the body: a service that stops reading for a while (backpressure) is not the
/// client's fault.
pub struct RequestBody {
    inner: Limited<Incoming>,
    clock: Option<RateClock>,
    /// Told when the body is too slow: `serve` then closes the connection, or sends HTTP/2's
    /// `GOAWAY`.
    tracker: Arc<Tracker>,
    /// Set when this body is too slow, on HTTP/2, where several requests share the tracker.
    too_slow: Option<Arc<AtomicBool>>,
    failed: bool,
}

impl RequestBody {
    pub(super) fn new(
        body: Incoming,
        limit: usize,
        rate: Option<MinDataRate>,
        tracker: Arc<Tracker>,
        too_slow: Option<Arc<AtomicBool>>,
    ) -> Self {
        RequestBody {
            inner: Limited::new(body, limit),
            clock: rate.map(RateClock::new),
            tracker,
            too_slow,
            failed: false,
        }
    }
}

impl std::fmt::Debug for RequestBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RequestBody")
            .field("failed", &self.failed)
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
        if this.failed {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                let length = match &frame {
                    Some(Ok(frame)) => frame.data_ref().map_or(0, Bytes::len),
                    _ => 0,
                };
                if let Some(clock) = &mut this.clock {
                    clock.moved(length);
                }
                Poll::Ready(frame)
            }
            Poll::Pending => {
                let too_slow = this
                    .clock
                    .as_mut()
                    .is_some_and(|clock| clock.poll_waiting(cx).is_ready());
                if !too_slow {
                    return Poll::Pending;
                }
                this.failed = true;
                if let Some(flag) = &this.too_slow {
                    flag.store(true, Ordering::Relaxed);
                }
                this.tracker.body_too_slow();
                Poll::Ready(Some(Err(Box::new(MinDataRateError))))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
