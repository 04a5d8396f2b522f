//! The controller's periodic jobs (history, liveness sweep, alerts, WAL
//! checkpoints) tick with [`Every`] until shutdown.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::{Instant, Interval, MissedTickBehavior};

/// Ticks every `interval` until `stop` turns true. A tick missed while the
/// job ran late is delayed, not caught up in a burst.
pub struct Every {
    ticker: Interval,
    stop: watch::Receiver<bool>,
}

impl Every {
    /// The first tick at once.
    pub fn new(interval: Duration, stop: watch::Receiver<bool>) -> Every {
        Every::from(tokio::time::interval(interval), stop)
    }

    /// The first tick one `interval` after now.
    pub fn after_one(interval: Duration, stop: watch::Receiver<bool>) -> Every {
        Every::from(
            tokio::time::interval_at(Instant::now() + interval, interval),
            stop,
        )
    }

    fn from(mut ticker: Interval, stop: watch::Receiver<bool>) -> Every {
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Every { ticker, stop }
    }

    /// Waits for the next tick: true then, false once `stop` turned true.
    pub async fn tick(&mut self) -> bool {
        tokio::select! {
            biased;
            _ = self.stop.wait_for(|s| *s) => false,
            _ = self.ticker.tick() => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn ticks_until_stop() {
        let interval = Duration::from_millis(30);
        let (stop_tx, stop) = watch::channel(false);
        let start = Instant::now();
        let mut every = Every::new(interval, stop.clone());
        let mut later = Every::after_one(interval, stop);
        assert!(every.tick().await);
        assert!(every.tick().await);
        assert!(start.elapsed() >= interval);
        assert!(later.tick().await);
        assert!(start.elapsed() >= interval);

        stop_tx.send(true).unwrap();
        assert!(!every.tick().await);
        assert!(!later.tick().await);
        // A stopped job's sender may be gone too.
        drop(stop_tx);
        assert!(!every.tick().await);
    }
}
