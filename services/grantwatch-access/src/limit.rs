//! Token-bucket rate limits, per key (a principal, or a client address before authentication).
//!
//! Memory is bounded: at most `max_tracked` buckets are kept; when full, the bucket idle longest is
//! dropped (a dropped caller starts again with a full bucket, which is the generous error).

use std::collections::HashMap;
use std::sync::Mutex;

use grantwatch_types::EventTime;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: i64,
}

#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    max_tracked: usize,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new(per_sec: f64, burst: f64, max_tracked: usize) -> RateLimiter {
        RateLimiter {
            per_sec: per_sec.max(0.0),
            burst: burst.max(1.0),
            max_tracked: max_tracked.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key` at `now`: `Ok` if there was one, otherwise `Err(seconds)` until there
    /// will be.
    pub fn check(&self, key: &str, now: EventTime) -> Result<(), u64> {
        let Ok(mut buckets) = self.buckets.lock() else { return Ok(()) };
        if !buckets.contains_key(key)
            && buckets.len() >= self.max_tracked
            && let Some(oldest) = buckets.iter().min_by_key(|(_, b)| b.last_ms).map(|(k, _)| k.clone())
        {
            buckets.remove(&oldest);
        }
        let b = buckets.entry(key.to_string()).or_insert(Bucket { tokens: self.burst, last_ms: now.0 });
        let elapsed = (now.0 - b.last_ms).max(0) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * self.per_sec).min(self.burst);
        b.last_ms = b.last_ms.max(now.0);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = if self.per_sec > 0.0 { ((1.0 - b.tokens) / self.per_sec).ceil() as u64 } else { 3600 };
        Err(wait.max(1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_allowed_then_the_rate_and_memory_stays_bounded() {
        let l = RateLimiter::new(2.0, 3.0, 2);
        let t = |ms| EventTime(ms);
        assert!((0..3).all(|_| l.check("a", t(0)).is_ok()));
        assert_eq!(l.check("a", t(0)), Err(1));
        assert!(l.check("a", t(500)).is_ok(), "one token back after half a second at 2/s");
        assert!(l.check("a", t(500)).is_err());
        assert!(l.check("b", t(600)).is_ok(), "another key has its own bucket");
        assert!(l.check("c", t(700)).is_ok());
        assert_eq!(l.buckets.lock().unwrap().len(), 2, "the idlest bucket went");
    }
}
