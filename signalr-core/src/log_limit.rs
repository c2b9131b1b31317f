//! Rate-limited warnings: an event that can repeat once per request or per accept (a full
//! table, a refused connection, running out of file descriptors) is logged at most once per
//! interval, with the number of repeats left out, so a flood cannot become a log flood.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Lets one log line through per `interval`; counts the ones it holds back.
pub(crate) struct LogLimiter {
    interval: Duration,
    state: Mutex<LimiterState>,
}

struct LimiterState {
    last: Option<Instant>,
    suppressed: u64,
}

impl LogLimiter {
    pub(crate) const fn new(interval: Duration) -> Self {
        LogLimiter {
            interval,
            state: Mutex::new(LimiterState {
                last: None,
                suppressed: 0,
            }),
        }
    }

    /// `Some(n)` when a line may be logged now, `n` being how many were held back since the
    /// last one; `None` when this one should be dropped.
    pub(crate) fn allow(&self) -> Option<u64> {
        let now = Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.last {
            Some(last) if now.saturating_duration_since(last) < self.interval => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.last = Some(now);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

/// How often a repeating warning may be logged.
pub(crate) const REPEAT_INTERVAL: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn one_line_per_interval_with_the_count_held_back() {
        let limiter = LogLimiter::new(Duration::from_secs(10));
        assert_eq!(limiter.allow(), Some(0));
        for _ in 0..1000 {
            assert_eq!(limiter.allow(), None);
        }
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(limiter.allow(), None);
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(limiter.allow(), Some(1001));
        assert_eq!(limiter.allow(), None);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(limiter.allow(), Some(1));
    }
}
