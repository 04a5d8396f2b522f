//! Liveness: a periodic sweep that marks silent nodes offline.
//!
//! Each sweep is an idempotent reconcile step over the store
//! ([`Store::sweep_offline`]): running it twice, or on several controllers
//! at once, changes nothing more than running it once.

use std::sync::Arc;
use std::time::Duration;

use meshtable_store::{Store, StoreError};
use tokio::sync::watch;
use tracing::{error, info};

use crate::ingest::{Progress, now_ms};

/// The report interval assumed for nodes whose hello did not arrive.
pub const DEFAULT_INTERVAL_MS: i64 = 60_000;

/// Runs one sweep at `now_ms` and logs every node it marked offline.
/// Returns the `(network, node)` pairs it changed.
pub async fn sweep(
    store: &Store,
    now_ms: i64,
    offline_after: u32,
) -> Result<Vec<(String, String)>, StoreError> {
    let changed = store
        .sweep_offline(now_ms, offline_after, DEFAULT_INTERVAL_MS)
        .await?;
    for (network, node) in &changed {
        info!(network = %network, node = %node, "node offline: missed its reports");
    }
    Ok(changed)
}

/// Sweeps every `interval` until `stop` turns true.
///
/// The sweep's "now" is the time up to which ingest has handled every
/// message ([`Progress::handled_until`]): when reports queue up behind a slow
/// database, their nodes are not declared offline for it.
pub async fn run(
    store: Store,
    interval: Duration,
    offline_after: u32,
    progress: Arc<Progress>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let now = progress.handled_until(now_ms());
        if let Err(e) = sweep(&store, now, offline_after).await {
            error!(error = %e, "liveness sweep failed");
        }
    }
}
