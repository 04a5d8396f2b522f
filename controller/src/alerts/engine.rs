//! The periodic alert evaluation: for every network, read the facts from the
//! store, apply the rules, reconcile the alerts, then deliver a digest when
//! the network's digest interval has passed. Every step is idempotent, so a
//! missed or repeated tick only delays or repeats nothing.

use std::sync::Arc;
use std::time::Duration;

use meshtable_store::alerts::{AlertChange, InputWindow};
use meshtable_store::{Store, StoreError};
use tokio::sync::watch;
use tracing::{debug, error, info, warn};

use super::notify::{self, NotifyError};
use super::rules::{self, Rules};
use crate::metrics::Metrics;
use crate::periodic::Every;

/// Why an evaluation or delivery failed.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A notification could not be delivered.
    #[error(transparent)]
    Notify(#[from] NotifyError),
}

/// A network's rules: its stored settings, or the defaults when it has none
/// or they do not parse (logged).
pub fn network_rules(network: &str, rules_json: Option<&str>) -> Rules {
    match rules_json {
        None => Rules::default(),
        Some(j) => serde_json::from_str(j).unwrap_or_else(|e| {
            warn!(network, error = %e, "stored alert rules do not parse, using the defaults");
            Rules::default()
        }),
    }
}

/// Evaluates one network at `now_ms` and reconciles its alerts; returns the
/// lifecycle changes made. Takes the hour's link samples for the learned
/// link references first (a no-op once the hour has them).
pub async fn evaluate_network(
    store: &Store,
    network: &str,
    now_ms: i64,
) -> Result<Vec<AlertChange>, EngineError> {
    let settings = store.alert_settings(network).await?;
    let rules = network_rules(network, settings.rules_json.as_deref());
    // A failed learning step delays the learned references, nothing else.
    match store.learn_link_references(network, now_ms).await {
        Ok(0) => {}
        Ok(links) => debug!(network, links, "link references learned"),
        Err(e) => warn!(network, error = %e, "link reference learning failed"),
    }
    let window = InputWindow {
        backfill_lag_ms: i64::from(rules.backfill_lag_seconds) * 1000,
        // No capacity, no saturation rule: skip the uplink queries.
        uplink_intervals: if rules.uplink_capacity_bps.is_some() {
            rules.uplink_intervals as usize
        } else {
            0
        },
    };
    let facts = store.alert_inputs(network, now_ms, window).await?;
    let conditions = rules::evaluate(&facts, &rules, now_ms);
    let changes = store.reconcile_alerts(network, &conditions, now_ms).await?;
    for c in &changes {
        info!(network, alert = c.id, rule = %c.rule, subject = %c.subject, event = c.event.as_str(), "alert changed");
    }
    Ok(changes)
}

/// Delivers a network's undelivered alert changes as one digest per channel
/// when its digest interval has passed since the last one. Returns how many
/// changes went out (0: nothing due, or no channel set).
pub async fn deliver_network(
    store: &Store,
    hooks: &notify::Webhooks,
    network: &str,
    now_ms: i64,
) -> Result<usize, EngineError> {
    let s = store.alert_settings(network).await?;
    let email = s.smtp_server.is_some() && !s.email_to.is_empty();
    if s.webhook_url.is_none() && !email {
        return Ok(0);
    }
    if s.last_digest_ms > 0 && now_ms.saturating_sub(s.last_digest_ms) < s.digest_ms {
        return Ok(0);
    }
    let notices = store.pending_notices(network).await?;
    if notices.is_empty() {
        return Ok(0);
    }
    if let Some(url) = &s.webhook_url {
        notify::send_webhook(hooks, url, network, &notices).await?;
    }
    if let (true, Some(server)) = (email, &s.smtp_server) {
        notify::send_email(
            server,
            s.email_from.as_deref(),
            &s.email_to,
            network,
            &notices,
        )
        .await?;
    }
    let ids: Vec<i64> = notices.iter().map(|n| n.event_id).collect();
    store.mark_notified(network, &ids, now_ms).await?;
    info!(network, changes = ids.len(), "alert digest delivered");
    Ok(ids.len())
}

/// One pass over every network: evaluate, then deliver. A failing network
/// is logged (and a failed delivery counted) and does not stop the others.
/// A webhook refused for its internal address counts as a failed delivery
/// and, besides, as a refused one.
pub async fn tick(
    store: &Store,
    metrics: &Metrics,
    hooks: &notify::Webhooks,
    now_ms: i64,
) -> Result<(), StoreError> {
    for network in store.network_ids().await? {
        if let Err(e) = evaluate_network(store, &network, now_ms).await {
            error!(network = %network, error = %e, "alert evaluation failed");
            continue;
        }
        if let Err(e) = deliver_network(store, hooks, &network, now_ms).await {
            if let EngineError::Notify(n) = &e {
                metrics.alert_delivery_failed(n.channel());
            }
            if let EngineError::Notify(NotifyError::Refused(t)) = &e {
                metrics.alert_webhook_refused();
                warn!(network = %network, reason = %t, "alert webhook refused: internal address, retrying at the next evaluation");
            } else {
                warn!(network = %network, error = %e, "alert delivery failed, retrying at the next evaluation");
            }
        }
    }
    Ok(())
}

/// Runs [`tick`] every `interval`, the first one interval after the start
/// (so the liveness sweep has run first), until `stop` turns true.
/// Webhooks may reach internal addresses only with `allow_private`
/// (`alert_webhook_allow_private`).
pub async fn run(
    store: Store,
    metrics: Arc<Metrics>,
    interval: Duration,
    allow_private: bool,
    stop: watch::Receiver<bool>,
) {
    // reqwest may be built without a default TLS provider: name one (no-op
    // when one is installed already).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let http = match notify::Webhooks::new(allow_private) {
        Ok(h) => h,
        Err(e) => {
            error!(error = %e, "cannot build the webhook client, alerts are not evaluated");
            return;
        }
    };
    let mut every = Every::after_one(interval, stop);
    while every.tick().await {
        if let Err(e) = tick(&store, &metrics, &http, crate::ingest::now_ms()).await {
            error!(error = %e, "alert sweep failed");
        }
    }
}
