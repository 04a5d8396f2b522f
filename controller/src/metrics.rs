//! Prometheus metrics on an explicit [`Registry`], served at `/metrics`.
//!
//! Ingest counters are incremented as messages go through. The fleet view
//! (`meshtable_nodes`, `meshtable_agent_reports_dropped_total`) is read from
//! the store at scrape time and set in the same critical section as the
//! encoding, so a scrape never sees half of an update.

use std::sync::Mutex;

use meshtable_proto::Kind;
use meshtable_store::{Store, StoreError};
use prometheus::{Encoder, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry, TextEncoder};

/// Every `reason` label of `meshtable_ingest_rejected_total`: the decode
/// reasons of [`meshtable_proto::DecodeError::reason`] plus the controller's own.
pub const REJECT_REASONS: [&str; 9] = [
    "empty",
    "oversized",
    "truncated",
    "malformed",
    "unknown_version",
    "invalid",
    "topic",
    "node_mismatch",
    "missing_base",
];

/// Why the metrics could not be registered or rendered.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The prometheus crate refused a metric or failed to encode.
    #[error("prometheus: {0}")]
    Prometheus(#[from] prometheus::Error),
    /// The text encoding is not UTF-8 (it always is).
    #[error("metrics text is not utf-8")]
    Utf8,
}

/// The fleet as the store sees it, for one scrape.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetSnapshot {
    /// `(network, status, nodes)`; status is `online` or `offline`.
    pub nodes: Vec<(String, &'static str, u64)>,
    /// `(network, sum of the latest "dropped" counter of its agents)`.
    pub agent_dropped: Vec<(String, u64)>,
    /// Per-node figures for the network and site aggregates and the
    /// optional per-node series.
    pub detail: crate::fleet_metrics::FleetDetail,
}

/// The controller's metrics.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    messages: IntCounterVec,
    duplicates: IntCounter,
    rejected: IntCounterVec,
    queue_dropped: IntCounter,
    store_errors: IntCounter,
    nodes: IntGaugeVec,
    agent_dropped: IntCounterVec,
    alert_delivery_failures: IntCounterVec,
    alert_webhook_refused: IntCounter,
    broker_lost: IntCounter,
    fleet: crate::fleet_metrics::FleetMetrics,
    /// Serializes fleet updates with the gathering that follows them.
    scrape: Mutex<()>,
}

impl Metrics {
    /// Registers every metric, with every known label value at 0.
    pub fn new() -> Result<Metrics, MetricsError> {
        let registry = Registry::new();
        let messages = IntCounterVec::new(
            Opts::new(
                "meshtable_ingest_messages_total",
                "Messages stored, by kind (hello, state, telemetry).",
            ),
            &["kind"],
        )?;
        let duplicates = IntCounter::new(
            "meshtable_ingest_duplicates_total",
            "Telemetry reports received again and dropped as duplicates (stored once).",
        )?;
        let rejected = IntCounterVec::new(
            Opts::new(
                "meshtable_ingest_rejected_total",
                "Messages refused by ingest, by reason.",
            ),
            &["reason"],
        )?;
        let queue_dropped = IntCounter::new(
            "meshtable_ingest_queue_dropped_total",
            "Messages dropped by the controller's internal ingest queue (it applies backpressure instead, so this stays 0).",
        )?;
        let store_errors = IntCounter::new(
            "meshtable_ingest_store_errors_total",
            "Failed attempts to store a message (each is retried until it succeeds).",
        )?;
        let nodes = IntGaugeVec::new(
            Opts::new("meshtable_nodes", "Known nodes, by network and status."),
            &["network", "status"],
        )?;
        let agent_dropped = IntCounterVec::new(
            Opts::new(
                "meshtable_agent_reports_dropped_total",
                "Reports dropped by the agents' bounded queues since they started (sum over the latest report of each node).",
            ),
            &["network"],
        )?;
        for kind in Kind::ALL {
            messages.with_label_values(&[kind.as_str()]);
        }
        for reason in REJECT_REASONS
            .iter()
            .chain(&crate::registry::REJECT_REASONS)
        {
            rejected.with_label_values(&[reason]);
        }
        registry.register(Box::new(messages.clone()))?;
        registry.register(Box::new(duplicates.clone()))?;
        registry.register(Box::new(rejected.clone()))?;
        registry.register(Box::new(queue_dropped.clone()))?;
        registry.register(Box::new(store_errors.clone()))?;
        registry.register(Box::new(nodes.clone()))?;
        registry.register(Box::new(agent_dropped.clone()))?;
        let alert_delivery_failures = IntCounterVec::new(
            Opts::new(
                "meshtable_alerts_delivery_failures_total",
                "Alert digests that could not be delivered (retried at the next evaluation), by channel (webhook, email).",
            ),
            &["channel"],
        )?;
        for c in ["webhook", "email"] {
            alert_delivery_failures.with_label_values(&[c]);
        }
        registry.register(Box::new(alert_delivery_failures.clone()))?;
        let alert_webhook_refused = IntCounter::new(
            "meshtable_alerts_webhook_refused_total",
            "Alert webhook deliveries refused because the webhook's host is or resolves to an internal address (see alert_webhook_allow_private); each is also a delivery failure.",
        )?;
        registry.register(Box::new(alert_webhook_refused.clone()))?;
        let broker_lost = IntCounter::new(
            "meshtable_broker_messages_lost_total",
            "Reports the embedded broker acknowledged to their publishers and then dropped because ingest fell further behind than its in-memory log (--mqtt-buffer) holds; 0 with an external broker.",
        )?;
        registry.register(Box::new(broker_lost.clone()))?;
        let fleet = crate::fleet_metrics::FleetMetrics::register(&registry, Default::default())?;
        Ok(Metrics {
            registry,
            messages,
            duplicates,
            rejected,
            queue_dropped,
            store_errors,
            nodes,
            agent_dropped,
            alert_delivery_failures,
            alert_webhook_refused,
            broker_lost,
            fleet,
            scrape: Mutex::new(()),
        })
    }

    /// Turns the per-node series on or off, with their cap.
    pub fn with_per_node(mut self, per_node: crate::fleet_metrics::PerNode) -> Metrics {
        self.fleet.per_node = per_node;
        self
    }

    /// Counts a stored message.
    pub fn stored(&self, kind: Kind) {
        self.messages.with_label_values(&[kind.as_str()]).inc();
    }

    /// Counts a duplicate telemetry report.
    pub fn duplicate(&self) {
        self.duplicates.inc();
    }

    /// Counts a refused message; `reason` is one of [`REJECT_REASONS`].
    pub fn rejected(&self, reason: &str) {
        self.rejected.with_label_values(&[reason]).inc();
    }

    /// Counts a message dropped by an internal queue.
    pub fn queue_dropped(&self) {
        self.queue_dropped.inc();
    }

    /// Counts a failed attempt to store a message.
    pub fn store_error(&self) {
        self.store_errors.inc();
    }

    /// Counts an alert digest that could not be delivered on `channel`
    /// (`webhook` or `email`).
    pub fn alert_delivery_failed(&self, channel: &str) {
        self.alert_delivery_failures
            .with_label_values(&[channel])
            .inc();
    }

    /// Counts an alert webhook delivery refused for an internal address.
    pub fn alert_webhook_refused(&self) {
        self.alert_webhook_refused.inc();
    }

    /// Current value of `meshtable_ingest_rejected_total{reason}`.
    pub fn rejected_count(&self, reason: &str) -> u64 {
        self.rejected.with_label_values(&[reason]).get()
    }

    /// Current value of `meshtable_ingest_messages_total{kind}`.
    pub fn stored_count(&self, kind: Kind) -> u64 {
        self.messages.with_label_values(&[kind.as_str()]).get()
    }

    /// Sets the fleet view from `fleet` (when given) and renders every
    /// metric in the Prometheus text format.
    pub fn render(&self, fleet: Option<&FleetSnapshot>) -> Result<String, MetricsError> {
        let _guard = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(fleet) = fleet {
            self.nodes.reset();
            for (network, status, n) in &fleet.nodes {
                self.nodes
                    .with_label_values(&[network.as_str(), status])
                    .set(i64::try_from(*n).unwrap_or(i64::MAX));
            }
            self.agent_dropped.reset();
            for (network, n) in &fleet.agent_dropped {
                self.agent_dropped
                    .with_label_values(&[network.as_str()])
                    .inc_by(*n);
            }
            let networks = fleet.nodes.iter().map(|(n, _, _)| n.as_str()).collect();
            self.fleet.set(&networks, &fleet.detail);
        }
        let lost = crate::broker::messages_lost();
        self.broker_lost
            .inc_by(lost.saturating_sub(self.broker_lost.get()));
        let mut buf = Vec::new();
        TextEncoder::new().encode(&self.registry.gather(), &mut buf)?;
        String::from_utf8(buf).map_err(|_| MetricsError::Utf8)
    }
}

/// Reads the fleet view for a scrape: node counts by status and the agents'
/// dropped counters, per network, each with one query.
pub async fn fleet_snapshot(store: &Store) -> Result<FleetSnapshot, StoreError> {
    let nodes = store
        .status_counts()
        .await?
        .into_iter()
        .map(|(network, status, n)| (network, status.as_str(), n))
        .collect();
    let agent_dropped = store.agent_dropped().await?;
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let detail = crate::fleet_metrics::FleetDetail::read(store, now_ms).await?;
    Ok(FleetSnapshot {
        nodes,
        agent_dropped,
        detail,
    })
}

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    #[test]
    fn every_label_is_there_at_zero() {
        let m = Metrics::new().unwrap();
        let text = m.render(None).unwrap();
        for reason in REJECT_REASONS {
            let s = format!("meshtable_ingest_rejected_total{{reason=\"{reason}\"}}");
            assert_eq!(value(&text, &s), Some(0.0), "{s}");
        }
        for kind in ["hello", "state", "telemetry"] {
            let s = format!("meshtable_ingest_messages_total{{kind=\"{kind}\"}}");
            assert_eq!(value(&text, &s), Some(0.0), "{s}");
        }
        for s in [
            "meshtable_ingest_duplicates_total",
            "meshtable_ingest_queue_dropped_total",
            "meshtable_ingest_store_errors_total",
        ] {
            assert_eq!(value(&text, s), Some(0.0), "{s}");
        }
        // Process-wide (the broker's own test may have counted in this process).
        assert!(value(&text, "meshtable_broker_messages_lost_total").is_some());
        // Families without series are left out until the store has networks.
        assert!(!text.contains("meshtable_nodes"));
    }

    #[test]
    fn fleet_view_replaces_the_previous_one() {
        let m = Metrics::new().unwrap();
        let first = FleetSnapshot {
            nodes: vec![
                ("a".to_owned(), "online", 3),
                ("a".to_owned(), "offline", 1),
                ("b".to_owned(), "online", 2),
            ],
            agent_dropped: vec![("a".to_owned(), 10)],
            ..FleetSnapshot::default()
        };
        let text = m.render(Some(&first)).unwrap();
        assert!(text.contains("# HELP meshtable_nodes "));
        assert!(text.contains("# TYPE meshtable_agent_reports_dropped_total counter"));
        assert_eq!(
            value(&text, r#"meshtable_nodes{network="a",status="online"}"#),
            Some(3.0)
        );
        assert_eq!(
            value(
                &text,
                r#"meshtable_agent_reports_dropped_total{network="a"}"#
            ),
            Some(10.0)
        );
        let second = FleetSnapshot {
            nodes: vec![("a".to_owned(), "online", 4)],
            agent_dropped: vec![("a".to_owned(), 2)],
            ..FleetSnapshot::default()
        };
        let text = m.render(Some(&second)).unwrap();
        assert_eq!(
            value(&text, r#"meshtable_nodes{network="a",status="online"}"#),
            Some(4.0)
        );
        assert_eq!(
            value(&text, r#"meshtable_nodes{network="b",status="online"}"#),
            None
        );
        assert_eq!(
            value(
                &text,
                r#"meshtable_agent_reports_dropped_total{network="a"}"#
            ),
            Some(2.0)
        );
    }

    #[test]
    fn counters_count() {
        let m = Metrics::new().unwrap();
        m.rejected("topic");
        m.rejected("topic");
        m.stored(Kind::Telemetry);
        m.duplicate();
        let text = m.render(None).unwrap();
        assert_eq!(
            value(&text, r#"meshtable_ingest_rejected_total{reason="topic"}"#),
            Some(2.0)
        );
        assert_eq!(
            value(
                &text,
                r#"meshtable_ingest_messages_total{kind="telemetry"}"#
            ),
            Some(1.0)
        );
        assert_eq!(value(&text, "meshtable_ingest_duplicates_total"), Some(1.0));
        assert_eq!(m.rejected_count("topic"), 2);
    }
}
