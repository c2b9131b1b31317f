//! Rate limits and throttles: a fixed window of `limit` events per `window` for each key
//! (a user, an address, a name). Counted in this process, or in Redis when the service runs as
//! several processes, so that a client cannot multiply its allowance by spreading its requests
//! over them. While Redis does not answer, each process counts on its own (limits then hold per
//! process) rather than refusing everyone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::time::Instant;

/// `limit` events per `window`; written `30/10` (30 per 10 seconds) in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub limit: u32,
    pub window: Duration,
}

impl Rate {
    pub const fn new(limit: u32, window_secs: u64) -> Rate {
        Rate {
            limit,
            window: Duration::from_secs(window_secs),
        }
    }

    /// Parses `COUNT/SECONDS`, both whole numbers above zero.
    pub fn parse(text: &str) -> Option<Rate> {
        let (limit, secs) = text.trim().split_once('/')?;
        let limit: u32 = limit.trim().parse().ok()?;
        let secs: u64 = secs.trim().parse().ok()?;
        (limit > 0 && secs > 0).then(|| Rate::new(limit, secs))
    }
}

impl std::fmt::Display for Rate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.limit, self.window.as_secs())
    }
}

/// Refused: try again after this long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limited {
    pub retry_after: Duration,
}

impl Limited {
    /// Whole seconds to wait (at least one), for `Retry-After` and error messages.
    pub fn retry_after_secs(&self) -> u64 {
        self.retry_after.as_millis().div_ceil(1000).max(1) as u64
    }
}

struct Window {
    started: Instant,
    length: Duration,
    count: u32,
}

/// The windows of this process; expired ones are swept as the map grows, so memory stays
/// bounded by the keys active within one window.
struct Local {
    windows: HashMap<String, Window>,
    sweep_at: usize,
}

impl Local {
    fn hit(&mut self, key: String, rate: Rate) -> Result<(), Limited> {
        let now = Instant::now();
        if self.windows.len() >= self.sweep_at {
            self.windows
                .retain(|_, w| now.duration_since(w.started) < w.length);
            self.sweep_at = (self.windows.len() * 2).max(1024);
        }
        let window = self.windows.entry(key).or_insert(Window {
            started: now,
            length: rate.window,
            count: 0,
        });
        if now.duration_since(window.started) >= window.length {
            *window = Window {
                started: now,
                length: rate.window,
                count: 0,
            };
        }
        window.count = window.count.saturating_add(1);
        if window.count > rate.limit {
            return Err(Limited {
                retry_after: (window.started + window.length).saturating_duration_since(now),
            });
        }
        Ok(())
    }
}

/// Counts in Redis: `INCR` the window's key, and the first hit sets its expiry.
const REDIS_HIT: &str = r"
local count = redis.call('INCR', KEYS[1])
if count == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
local ttl = redis.call('PTTL', KEYS[1])
if ttl < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]); ttl = tonumber(ARGV[1]) end
return {count, ttl}
";

struct Shared {
    connection: ConnectionManager,
    prefix: String,
    /// After a Redis failure, count locally until then instead of waiting on Redis again.
    local_until: Mutex<Option<Instant>>,
}

/// The limiter every rate limit and throttle of the service goes through. Cheap to clone.
#[derive(Clone)]
pub struct Limiter {
    local: Arc<Mutex<Local>>,
    shared: Option<Arc<Shared>>,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter::local()
    }
}

impl Limiter {
    /// Counts in this process only.
    pub fn local() -> Limiter {
        Limiter {
            local: Arc::new(Mutex::new(Local {
                windows: HashMap::new(),
                sweep_at: 1024,
            })),
            shared: None,
        }
    }

    /// Counts in the Redis at `url` (keys start with `prefix`), shared by every process using
    /// the same prefix. Connects lazily: start-up does not wait for Redis.
    pub fn redis(url: &str, prefix: &str) -> Result<Limiter, String> {
        let client = redis::Client::open(url)
            .map_err(|_| "REDIS_URL is not a valid Redis URL".to_owned())?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_millis(500)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(1);
        let connection = ConnectionManager::new_lazy_with_config(client, config)
            .map_err(|_| "REDIS_URL is not a valid Redis URL".to_owned())?;
        Ok(Limiter {
            shared: Some(Arc::new(Shared {
                connection,
                prefix: format!("{prefix}:limits"),
                local_until: Mutex::new(None),
            })),
            ..Limiter::local()
        })
    }

    /// Counts one event of `scope` (what is limited, e.g. `send`) by `key` (who), and says
    /// whether it is within `rate`.
    pub async fn hit(&self, scope: &str, key: &str, rate: Rate) -> Result<(), Limited> {
        let full_key = format!("{scope}:{key}");
        if let Some(shared) = &self.shared {
            let skip = {
                let until = shared.local_until.lock().unwrap_or_else(|p| p.into_inner());
                until.is_some_and(|t| Instant::now() < t)
            };
            if !skip {
                match shared.hit(&full_key, rate).await {
                    Ok(verdict) => return verdict,
                    Err(()) => {
                        let mut until =
                            shared.local_until.lock().unwrap_or_else(|p| p.into_inner());
                        if until.is_none() {
                            tracing::warn!(
                                "Redis does not answer: rate limits are counted per process until it does"
                            );
                        }
                        *until = Some(Instant::now() + Duration::from_secs(1));
                    }
                }
            }
        }
        self.local
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hit(full_key, rate)
    }
}

impl Shared {
    async fn hit(&self, key: &str, rate: Rate) -> Result<Result<(), Limited>, ()> {
        let mut connection = self.connection.clone();
        let window_ms = rate.window.as_millis().max(1) as u64;
        let answer: Result<(i64, i64), _> = redis::cmd("EVAL")
            .arg(REDIS_HIT)
            .arg(1)
            .arg(format!("{}:{key}", self.prefix))
            .arg(window_ms)
            .query_async(&mut connection)
            .await;
        match answer {
            Ok((count, ttl)) => {
                let mut until = self.local_until.lock().unwrap_or_else(|p| p.into_inner());
                if until.take().is_some() {
                    tracing::info!("Redis answers again: rate limits are shared again");
                }
                Ok(if count > i64::from(rate.limit) {
                    Err(Limited {
                        retry_after: Duration::from_millis(ttl.max(1) as u64),
                    })
                } else {
                    Ok(())
                })
            }
            Err(_) => Err(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_as_count_per_seconds() {
        assert_eq!(Rate::parse("30/10"), Some(Rate::new(30, 10)));
        assert_eq!(Rate::parse(" 5 / 60 "), Some(Rate::new(5, 60)));
        for bad in ["", "30", "0/10", "10/0", "x/10", "-1/5", "3/4/5"] {
            assert_eq!(Rate::parse(bad), None, "{bad}");
        }
        assert_eq!(Rate::new(3, 7).to_string(), "3/7");
    }

    #[tokio::test(start_paused = true)]
    async fn a_window_allows_its_limit_then_refuses_until_it_ends() {
        let limiter = Limiter::local();
        let rate = Rate::new(3, 10);
        for _ in 0..3 {
            assert_eq!(limiter.hit("send", "1", rate).await, Ok(()));
        }
        let refused = limiter.hit("send", "1", rate).await.unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_secs(10));
        assert_eq!(refused.retry_after_secs(), 10);
        // Other keys and scopes have their own windows.
        assert_eq!(limiter.hit("send", "2", rate).await, Ok(()));
        assert_eq!(limiter.hit("typing", "1", rate).await, Ok(()));
        tokio::time::advance(Duration::from_millis(9_500)).await;
        let refused = limiter.hit("send", "1", rate).await.unwrap_err();
        assert_eq!(refused.retry_after, Duration::from_millis(500));
        assert_eq!(refused.retry_after_secs(), 1);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert_eq!(limiter.hit("send", "1", rate).await, Ok(()));
    }

    #[tokio::test(start_paused = true)]
    async fn expired_windows_are_swept_so_memory_stays_bounded() {
        let limiter = Limiter::local();
        let rate = Rate::new(1, 1);
        for i in 0..5000 {
            limiter.hit("login", &i.to_string(), rate).await.unwrap();
        }
        tokio::time::advance(Duration::from_secs(2)).await;
        for i in 0..4000 {
            limiter.hit("login", &format!("b{i}"), rate).await.unwrap();
        }
        // The 5,000 expired windows went at the next sweep; only live ones are kept.
        let kept = limiter.local.lock().unwrap().windows.len();
        assert_eq!(kept, 4000);
    }

    #[tokio::test]
    async fn redis_counts_are_shared_and_an_unreachable_redis_falls_back_to_local_counts() {
        let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let prefix = format!(
            "chat-limits-test-{}-{}",
            std::process::id(),
            rand::random::<u32>()
        );
        let (a, b) = (
            Limiter::redis(&url, &prefix).unwrap(),
            Limiter::redis(&url, &prefix).unwrap(),
        );
        let rate = Rate::new(2, 1);
        match a.hit("send", "7", rate).await {
            Ok(()) => {}
            Err(_) => unreachable!("a first hit is allowed"),
        }
        if a.shared
            .as_ref()
            .unwrap()
            .local_until
            .lock()
            .unwrap()
            .is_some()
        {
            if std::env::var_os("CI").is_some() {
                panic!("Redis at {url} is needed under CI");
            }
            eprintln!("WARNING: Redis at {url} unreachable; the shared part is SKIPPED");
            return;
        }
        // The second process sees the first one's count: 2 of 2, then refused.
        assert_eq!(b.hit("send", "7", rate).await, Ok(()));
        let refused = a.hit("send", "7", rate).await.unwrap_err();
        assert!(refused.retry_after <= Duration::from_secs(1));
        // For real: the window ends within a second.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        assert_eq!(b.hit("send", "7", rate).await, Ok(()));

        // Nothing listens on port 1: counted locally, and quickly.
        let down = Limiter::redis("redis://127.0.0.1:1", &prefix).unwrap();
        let started = std::time::Instant::now();
        assert_eq!(down.hit("send", "7", Rate::new(1, 60)).await, Ok(()));
        assert!(down.hit("send", "7", Rate::new(1, 60)).await.is_err());
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
