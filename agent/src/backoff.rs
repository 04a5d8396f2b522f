//! Reconnect backoff: exponential with jitter, so that a fleet of routers
//! that lost the broker at the same moment does not come back in lockstep.

use std::time::Duration;

/// Exponential backoff: `initial`, doubling up to `max`, each delay scaled by
/// a random factor in `[1 - jitter, 1 + jitter)`. [`Backoff::reset`] after a
/// successful connection starts over from `initial`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    jitter: f64,
    next: Duration,
}

impl Default for Backoff {
    /// 1 s doubling to 60 s, +-50 % jitter.
    fn default() -> Self {
        Backoff::new(Duration::from_secs(1), Duration::from_secs(60), 0.5)
    }
}

impl Backoff {
    /// A backoff starting at `initial`, capped at `max`, with `jitter` (0..1)
    /// as the relative spread.
    pub fn new(initial: Duration, max: Duration, jitter: f64) -> Backoff {
        Backoff {
            initial,
            max: max.max(initial),
            jitter: jitter.clamp(0.0, 1.0),
            next: initial,
        }
    }

    /// The next delay, given a uniform random number in `[0, 1)`.
    pub fn next_with(&mut self, random: f64) -> Duration {
        let base = self.next;
        self.next = (self.next * 2).min(self.max);
        let factor = 1.0 - self.jitter + 2.0 * self.jitter * random.clamp(0.0, 1.0);
        base.mul_f64(factor)
    }

    /// The next delay, with thread-local randomness.
    pub fn next_delay(&mut self) -> Duration {
        self.next_with(fastrand::f64())
    }

    /// Starts over from the initial delay.
    pub fn reset(&mut self) {
        self.next = self.initial;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: f64) -> Duration {
        Duration::from_secs_f64(s)
    }

    #[test]
    fn doubles_to_the_cap_with_jitter_bounds() {
        let mut b = Backoff::default();
        // random 0.5 is the unjittered value
        let mid: Vec<Duration> = (0..8).map(|_| b.next_with(0.5)).collect();
        assert_eq!(mid, [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0].map(secs));
        b.reset();
        assert_eq!(b.next_with(0.0), secs(0.5));
        assert_eq!(b.next_with(1.0), secs(3.0));
        b.reset();
        for _ in 0..100 {
            let d = b.next_delay();
            assert!(d >= secs(0.5) && d <= secs(90.0), "{d:?}");
        }
    }
}
