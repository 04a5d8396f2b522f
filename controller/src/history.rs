//! The history job: brings the rollups up to date and applies retention,
//! every `--history-interval`.
//!
//! Each run is an idempotent reconcile over the store
//! ([`Store::reconcile_rollups`], [`Store::apply_retention`]): it may run on
//! every controller of a deployment at once; they take turns on the rollup
//! watermark and never compute an hour twice into different results. A run
//! does a bounded amount of work (a catch-up over a long backlog continues
//! on the next tick, or at once while there is more), so it never holds the
//! database for long.

use std::time::Duration;

use meshtable_store::rollup::DEFAULT_GRACE_MS;
use meshtable_store::{HistoryPolicy, ReconcileReport, RetentionReport, Store, StoreError};
use tokio::sync::watch;
use tracing::{debug, error, info};

use crate::config::HistoryConfig;
use crate::ingest::now_ms;
use crate::periodic::Every;

/// Reconcile steps per batch of a run (a catch-up step covers 1 to 24 hours
/// of the fleet, sized to its sample rate; see `meshtable_store::rollup`).
pub const RECONCILE_STEPS: u32 = 24;
/// Rows per retention chunk.
pub const RETENTION_CHUNK: u64 = 10_000;
/// Retention chunks per kind and run.
pub const RETENTION_CHUNKS: u32 = 20;
/// Batches of reconcile steps per run while there is a backlog.
const MAX_BATCHES: u32 = 100;

/// The store's history policy for these settings.
pub fn policy(config: &HistoryConfig) -> HistoryPolicy {
    let ms = |d: Duration| i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
    HistoryPolicy {
        raw_retention_ms: ms(config.raw_retention),
        rollup_retention_ms: ms(config.rollup_retention),
        grace_ms: DEFAULT_GRACE_MS,
    }
}

/// One run at `now_ms`: rollups until caught up (or a bounded number of
/// steps), then retention.
pub async fn run_once(
    store: &Store,
    policy: &HistoryPolicy,
    now_ms: i64,
) -> Result<(ReconcileReport, RetentionReport), StoreError> {
    let mut total = ReconcileReport::default();
    for _ in 0..MAX_BATCHES {
        let r = store
            .reconcile_rollups(now_ms, policy, RECONCILE_STEPS)
            .await?;
        total.hours += r.hours;
        total.recomputed += r.recomputed;
        total.dropped += r.dropped;
        total.samples += r.samples;
        total.rows += r.rows;
        total.watermark_ms = r.watermark_ms;
        total.more = r.more;
        if !r.more {
            break;
        }
        // Let ingest in between batches.
        tokio::task::yield_now().await;
    }
    let retention = store
        .apply_retention(now_ms, policy, RETENTION_CHUNK, RETENTION_CHUNKS)
        .await?;
    Ok((total, retention))
}

/// Runs the history job every `config.interval` until `stop` turns true.
pub async fn run(store: Store, config: HistoryConfig, stop: watch::Receiver<bool>) {
    let policy = policy(&config);
    let mut every = Every::new(config.interval, stop);
    while every.tick().await {
        match run_once(&store, &policy, now_ms()).await {
            Ok((r, d)) => {
                let fields = (r.hours, r.recomputed, d.samples, d.rollups);
                if fields != (0, 0, 0, 0) || r.dropped > 0 {
                    info!(
                        hours = r.hours,
                        recomputed = r.recomputed,
                        dropped_dirty = r.dropped,
                        rollup_rows = r.rows,
                        deleted_samples = d.samples,
                        deleted_rollups = d.rollups,
                        watermark = ?r.watermark_ms,
                        "history updated"
                    );
                } else {
                    debug!(watermark = ?r.watermark_ms, "history up to date");
                }
            }
            Err(e) => error!(error = %e, "history job failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use meshtable_proto::examples;

    use super::*;

    #[tokio::test]
    async fn a_run_rolls_up_and_a_second_does_nothing() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        // 2025-11-24T16:00:00Z, two hours of reports.
        let t0: i64 = 1_764_000_000_000;
        for k in 0..120u64 {
            let t = meshtable_proto::Telemetry {
                seq: k,
                uptime_ms: 60_000 * (k + 1),
                time_ms: (t0 + 60_000 * k as i64) as u64,
                ..examples::telemetry_v1()
            };
            let received = t0 + 60_000 * k as i64 + 100;
            store
                .record_telemetry("net", "n1", &t, received)
                .await
                .unwrap();
        }
        let policy = policy(&HistoryConfig::default());
        let now = t0 + 2 * 3_600_000 + 5 * 60_000;
        let (r, d) = run_once(&store, &policy, now).await.unwrap();
        assert_eq!((r.hours, r.more), (2, false), "{r:?}");
        assert_eq!(r.watermark_ms, Some(t0 + 2 * 3_600_000));
        assert_eq!(d.samples, 0, "nothing is old enough");
        let (r, d) = run_once(&store, &policy, now).await.unwrap();
        assert_eq!((r.hours, r.recomputed, r.rows), (0, 0, 0), "{r:?}");
        assert_eq!((d.samples, d.rollups), (0, 0));
    }
}
