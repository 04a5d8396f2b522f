//! A keyed token-bucket rate limiter, for logins (per source address and
//! per login name) and enrollment.
//!
//! Each key has a bucket of `burst` tokens that refills at one token per
//! `period`. [`RateLimiter::check`] asks without spending, [`RateLimiter::hit`]
//! spends one, [`RateLimiter::acquire`] does both. The map of keys is
//! bounded: past [`MAX_KEYS`] full (idle) buckets are forgotten first, then
//! the oldest; a forgotten key starts over with a full bucket.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys a limiter remembers.
pub const MAX_KEYS: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A keyed token bucket. Cheap to share behind an `Arc`.
#[derive(Debug)]
pub struct RateLimiter {
    burst: f64,
    period: Duration,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter allowing `burst` events at once per key, then one per `period`.
    pub fn new(burst: u32, period: Duration) -> RateLimiter {
        RateLimiter {
            burst: f64::from(burst.max(1)),
            period: period.max(Duration::from_millis(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, b: Bucket, now: Instant) -> Bucket {
        let gained =
            now.saturating_duration_since(b.updated).as_secs_f64() / self.period.as_secs_f64();
        Bucket {
            tokens: (b.tokens + gained).min(self.burst),
            updated: now,
        }
    }

    fn wait_for_one(&self, b: Bucket) -> Duration {
        self.period.mul_f64((1.0 - b.tokens).max(0.0))
    }

    /// `Ok` if `key` may act now, else `Err` with how long until it may.
    /// Spends nothing.
    pub fn check(&self, key: &str) -> Result<(), Duration> {
        self.check_at(key, Instant::now())
    }

    /// [`RateLimiter::check`] at `now`.
    pub fn check_at(&self, key: &str, now: Instant) -> Result<(), Duration> {
        let map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(key) {
            None => Ok(()),
            Some(b) => {
                let b = self.refilled(*b, now);
                if b.tokens >= 1.0 {
                    Ok(())
                } else {
                    Err(self.wait_for_one(b))
                }
            }
        }
    }

    /// Spends one token of `key` (down to zero).
    pub fn hit(&self, key: &str) {
        self.hit_at(key, Instant::now());
    }

    /// [`RateLimiter::hit`] at `now`.
    pub fn hit_at(&self, key: &str, now: Instant) {
        let mut map = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            self.prune(&mut map, now);
        }
        let full = Bucket {
            tokens: self.burst,
            updated: now,
        };
        let b = self.refilled(*map.get(key).unwrap_or(&full), now);
        map.insert(
            key.to_owned(),
            Bucket {
                tokens: (b.tokens - 1.0).max(0.0),
                updated: now,
            },
        );
    }

    /// Spends one token of `key` if it has one: `Err` with the wait otherwise.
    pub fn acquire(&self, key: &str) -> Result<(), Duration> {
        let now = Instant::now();
        self.check_at(key, now)?;
        self.hit_at(key, now);
        Ok(())
    }

    /// Forgets full buckets, then the least recently used half if still too many.
    fn prune(&self, map: &mut HashMap<String, Bucket>, now: Instant) {
        map.retain(|_, b| self.refilled(*b, now).tokens < self.burst);
        if map.len() >= MAX_KEYS {
            let mut ages: Vec<Instant> = map.values().map(|b| b.updated).collect();
            ages.sort_unstable();
            let cut = ages[ages.len() / 2];
            map.retain(|_, b| b.updated > cut);
        }
    }

    /// How many keys it remembers.
    pub fn len(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Whether it remembers no key.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let l = RateLimiter::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        for _ in 0..3 {
            assert!(l.check_at("a", t0).is_ok());
            l.hit_at("a", t0);
        }
        let wait = l.check_at("a", t0).unwrap_err();
        assert_eq!(wait, Duration::from_secs(10));
        // Other keys are untouched.
        assert!(l.check_at("b", t0).is_ok());
        // Half a period later: still not, and the wait halved.
        assert_eq!(
            l.check_at("a", t0 + Duration::from_secs(5)).unwrap_err(),
            Duration::from_secs(5)
        );
        assert!(l.check_at("a", t0 + Duration::from_secs(10)).is_ok());
        // Refills up to the burst only.
        let later = t0 + Duration::from_secs(1000);
        for _ in 0..3 {
            l.hit_at("a", later);
        }
        assert!(l.check_at("a", later).is_err());
    }

    #[test]
    fn acquire_spends() {
        let l = RateLimiter::new(1, Duration::from_secs(60));
        assert!(l.acquire("k").is_ok());
        assert!(l.acquire("k").is_err());
        assert_eq!(l.len(), 1);
    }
}
