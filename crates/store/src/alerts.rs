//! Alerts: what the alert engine reads (per-node and per-link facts of a
//! network) and what it keeps (alerts with their lifecycle, their events,
//! and per-network settings).
//!
//! # Inputs
//!
//! [`Store::alert_inputs`] reads, with one statement per kind and never one
//! per node: the nodes and the links that are up (the topology graph, far
//! ends joined), each node's latest live sample of the last hour, its
//! distinct boots among the last hour's live samples, the p95 of its
//! uplink's rates in the latest closed 5-minute intervals (from the
//! `rollup` rows where they are current, else from the samples, the same
//! way the history API does), which of those intervals hold a live sample,
//! and the link references (`link_reference`). A sample is *live* when it
//! was received within `backfill_lag_ms` of its series time.
//!
//! # Lifecycle
//!
//! ```text
//!   condition seen      held for hold_ms       operator ack
//!  ---------------> pending -----------> firing -----------> acknowledged
//!                      |                    |                      |
//!     condition gone   v   condition gone   v    condition gone    v
//!                  (deleted)             resolved <----------------+
//! ```
//!
//! An alert is keyed by `(network, rule, subject)` while open (pending,
//! firing or acknowledged). [`Store::reconcile_alerts`] is an idempotent
//! reconcile step: given the conditions that hold now, it opens, promotes
//! and resolves alerts, and writes one `alert_event` per lifecycle change
//! (`firing`, `acknowledged`, `resolved`). Pending alerts never notify.
//! Notification delivery marks events `notified`.

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Value,
};
use serde::{Deserialize, Serialize};

use crate::entity::{node, rollup, rollup_dirty, sample};
use crate::ifaces;
use crate::rollup::{FIVE_MINUTES_MS, floor_to, stats};
use crate::time::rfc3339_ms;
use crate::write::clean;
use crate::{NodeStatus, Store, StoreError};

/// The `alert` table.
pub(crate) mod alert {
    use sea_orm::entity::prelude::*;

    /// One alert.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "alert")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub network: String,
        pub rule: String,
        pub subject: String,
        pub site: Option<String>,
        pub state: String,
        pub message: String,
        pub value: Option<f64>,
        pub since_ms: i64,
        pub fired_ms: Option<i64>,
        pub acked_ms: Option<i64>,
        pub acked_by: Option<String>,
        pub resolved_ms: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The `alert_event` table.
pub(crate) mod alert_event {
    use sea_orm::entity::prelude::*;

    /// One lifecycle change of an alert.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "alert_event")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub alert_id: i64,
        pub network: String,
        pub t_ms: i64,
        pub event: String,
        pub notified: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The `alert_settings` table.
pub(crate) mod alert_settings {
    use sea_orm::entity::prelude::*;

    /// A network's alert settings.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "alert_settings")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub network: String,
        pub webhook_url: Option<String>,
        pub email_to: Option<String>,
        pub email_from: Option<String>,
        pub smtp_server: Option<String>,
        pub digest_ms: i64,
        pub rules: Option<String>,
        pub last_digest_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Where an alert is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertState {
    /// The condition holds, not yet for its tolerance window; never notified.
    Pending,
    /// The condition holds and has held for its tolerance window.
    Firing,
    /// Firing, and someone said they are on it.
    Acknowledged,
    /// The condition no longer holds.
    Resolved,
}

impl AlertState {
    /// The state's name, as stored and in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
            AlertState::Acknowledged => "acknowledged",
            AlertState::Resolved => "resolved",
        }
    }

    fn from_db(s: &str) -> AlertState {
        match s {
            "pending" => AlertState::Pending,
            "firing" => AlertState::Firing,
            "acknowledged" => AlertState::Acknowledged,
            _ => AlertState::Resolved,
        }
    }
}

/// An alert as listed.
///
/// JSON: `{"id","network","rule","subject","site","state","message","value",
/// "since","fired","acked","acked_by","resolved"}`; times RFC 3339 or `null`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// The alert's id.
    pub id: i64,
    /// The network id.
    pub network: String,
    /// The rule that raised it (`node_offline`, `site_down`, ...).
    pub rule: String,
    /// What it is about: a node id, a site id, or `node/ifname`.
    pub subject: String,
    /// The site of the subject, when known.
    pub site: Option<String>,
    /// Its lifecycle state.
    pub state: AlertState,
    /// A sentence for people.
    pub message: String,
    /// The measured value that broke the rule, when there is one.
    pub value: Option<f64>,
    /// When the condition was first seen, Unix ms.
    #[serde(rename = "since", with = "rfc3339_ms")]
    pub since_ms: i64,
    /// When it started firing, Unix ms.
    #[serde(rename = "fired", with = "opt_ms")]
    pub fired_ms: Option<i64>,
    /// When it was acknowledged, Unix ms.
    #[serde(rename = "acked", with = "opt_ms")]
    pub acked_ms: Option<i64>,
    /// Who acknowledged it.
    pub acked_by: Option<String>,
    /// When it was resolved, Unix ms.
    #[serde(rename = "resolved", with = "opt_ms")]
    pub resolved_ms: Option<i64>,
}

pub(crate) mod opt_ms {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct W(#[serde(with = "crate::time::rfc3339_ms")] i64);
        ms.map(W).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        #[derive(Deserialize)]
        struct W(#[serde(with = "crate::time::rfc3339_ms")] i64);
        Ok(Option::<W>::deserialize(d)?.map(|w| w.0))
    }
}

fn to_alert(m: alert::Model) -> Alert {
    Alert {
        id: m.id,
        network: m.network,
        rule: m.rule,
        subject: m.subject,
        site: m.site,
        state: AlertState::from_db(&m.state),
        message: m.message,
        value: m.value,
        since_ms: m.since_ms,
        fired_ms: m.fired_ms,
        acked_ms: m.acked_ms,
        acked_by: m.acked_by,
        resolved_ms: m.resolved_ms,
    }
}

/// A condition that holds now, as the rules found it.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    /// The rule's name.
    pub rule: String,
    /// What it is about (see [`Alert::subject`]).
    pub subject: String,
    /// The subject's site.
    pub site: Option<String>,
    /// A sentence for people.
    pub message: String,
    /// The measured value.
    pub value: Option<f64>,
    /// How long it must hold before it fires (tolerance window), ms.
    pub hold_ms: i64,
}

/// One lifecycle change made by [`Store::reconcile_alerts`] or [`Store::ack_alert`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertChange {
    /// The alert's id.
    pub id: i64,
    /// The rule.
    pub rule: String,
    /// The subject.
    pub subject: String,
    /// `firing`, `acknowledged` or `resolved`.
    pub event: AlertState,
}

/// A network's alert settings: where notifications go, how often, and the
/// rule thresholds (kept as JSON; the alert engine owns their meaning).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct AlertSettings {
    /// Webhook URL notifications are POSTed to as JSON.
    pub webhook_url: Option<String>,
    /// E-mail recipients.
    pub email_to: Vec<String>,
    /// The sender address of e-mails.
    pub email_from: Option<String>,
    /// The SMTP relay, `host:port`.
    pub smtp_server: Option<String>,
    /// Digest interval: one message per channel per interval at most, ms.
    pub digest_ms: i64,
    /// The rule settings as JSON, `None` for the defaults.
    pub rules_json: Option<String>,
    /// When the last digest went out, Unix ms (0: never).
    pub last_digest_ms: i64,
}

/// A lifecycle change waiting to be notified, with its alert as it is now.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingNotice {
    /// The event's id.
    pub event_id: i64,
    /// When it happened, Unix ms.
    pub t_ms: i64,
    /// `firing`, `acknowledged` or `resolved`.
    pub event: AlertState,
    /// The alert.
    pub alert: Alert,
}

/// The latest live sample of a node, as the rules read it.
#[derive(Debug, Clone, PartialEq)]
pub struct SampleFacts {
    /// Series time, Unix ms.
    pub t_ms: i64,
    /// Memory total and available, bytes.
    pub mem_total: i64,
    /// Available memory, bytes.
    pub mem_available: i64,
    /// Root filesystem size, bytes.
    pub rootfs_size: i64,
    /// Root filesystem free, bytes.
    pub rootfs_free: i64,
    /// 5-minute load average.
    pub load5: f64,
}

/// One closed 5-minute interval of a node's uplink, as the rules read it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct UplinkInterval {
    /// The interval's start, Unix ms (a multiple of 5 minutes).
    pub start_ms: i64,
    /// The 95th percentile of the received rate in it, bits/s.
    pub rx_p95: Option<f64>,
    /// The 95th percentile of the sent rate in it, bits/s.
    pub tx_p95: Option<f64>,
    /// Whether the node sent a live (not backfilled) report in it.
    pub live: bool,
}

/// One node as the alert rules see it at a time.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    /// The node id.
    pub node: String,
    /// Its hostname.
    pub hostname: Option<String>,
    /// Its site.
    pub site: Option<String>,
    /// Online or offline.
    pub status: NodeStatus,
    /// Latest message, Unix ms.
    pub last_seen_ms: i64,
    /// Flapping now.
    pub flapping: bool,
    /// A maintenance window covers it now.
    pub in_maintenance: bool,
    /// Its latest live (not backfilled) sample of the last hour.
    pub latest: Option<SampleFacts>,
    /// Distinct boot ids among live samples of the last hour.
    pub boots_last_hour: u32,
    /// Its uplink interface: the interface of the gateway it reports, when
    /// the topology sees it as an uplink (not a route through the mesh).
    pub uplink: Option<String>,
    /// The uplink's closed 5-minute intervals in the look-back window
    /// ([`InputWindow::uplink_intervals`] of them, ending at the latest
    /// 5-minute boundary), newest first; intervals without values are left
    /// out.
    pub uplink_intervals: Vec<UplinkInterval>,
}

/// A link direction's quality, measured or as a reference.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct LinkQuality {
    /// Wifi signal of the mesh peer, dBm.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_dbm: Option<f64>,
    /// batman-adv transmit quality, 0-255 (higher is better).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tq: Option<f64>,
    /// babel link cost (`cost`, else `rxcost`; lower is better).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<f64>,
}

impl LinkQuality {
    /// Whether no part is set.
    pub fn is_empty(&self) -> bool {
        self.signal_dbm.is_none() && self.tq.is_none() && self.cost.is_none()
    }
}

/// One link direction (up) as the alert rules see it.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkFacts {
    /// The link's row id.
    pub id: i64,
    /// The reporting node.
    pub source: String,
    /// The reporter's interface.
    pub source_ifname: String,
    /// The far end: its node id when joined, else the neighbour's address.
    pub target: String,
    /// Whether `target` is a node of the network.
    pub target_is_node: bool,
    /// Latest report of the link, Unix ms.
    pub last_seen_ms: i64,
    /// Its quality in that report.
    pub quality: LinkQuality,
    /// The reference the operator set, if any.
    pub operator: Option<LinkQuality>,
    /// The learned reference (median of the hourly samples of the last 7
    /// days), once there are at least 24 of them.
    pub learned: Option<LinkQuality>,
}

/// What the alert rules read about a network at a time.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct NetworkFacts {
    /// Every node, by node id.
    pub nodes: Vec<NodeFacts>,
    /// The link directions that are up, by source, interface and far end.
    pub links: Vec<LinkFacts>,
}

/// How [`Store::alert_inputs`] tells live samples from backfilled ones and
/// how far it looks back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputWindow {
    /// A sample received more than this after its series time is backfill.
    pub backfill_lag_ms: i64,
    /// How many closed 5-minute uplink intervals to return (0: none, the
    /// uplink queries are skipped).
    pub uplink_intervals: usize,
}

const HOUR_MS: i64 = 3_600_000;

/// Ids per `IN (...)` list.
const ID_CHUNK: usize = 1_000;

impl Store {
    /// The alert settings of a network (defaults with `digest_ms` 0 when none are set).
    pub async fn alert_settings(&self, network: &str) -> Result<AlertSettings, StoreError> {
        let row = alert_settings::Entity::find_by_id(clean(network))
            .one(&self.db)
            .await?;
        Ok(row.map_or_else(AlertSettings::default, |r| AlertSettings {
            webhook_url: r.webhook_url,
            email_to: r
                .email_to
                .map(|e| {
                    e.split(',')
                        .map(str::trim)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            email_from: r.email_from,
            smtp_server: r.smtp_server,
            digest_ms: r.digest_ms,
            rules_json: r.rules,
            last_digest_ms: r.last_digest_ms,
        }))
    }

    /// Sets a network's alert settings (all but `last_digest_ms`, which is kept).
    pub async fn set_alert_settings(
        &self,
        network: &str,
        s: &AlertSettings,
    ) -> Result<(), StoreError> {
        use alert_settings::Column as C;
        let network = clean(network);
        let email = (!s.email_to.is_empty()).then(|| s.email_to.join(","));
        let model = alert_settings::ActiveModel {
            network: Set(network),
            webhook_url: Set(s.webhook_url.as_deref().map(clean)),
            email_to: Set(email.as_deref().map(clean)),
            email_from: Set(s.email_from.as_deref().map(clean)),
            smtp_server: Set(s.smtp_server.as_deref().map(clean)),
            digest_ms: Set(Ord::max(s.digest_ms, 0)),
            rules: Set(s.rules_json.as_deref().map(clean)),
            last_digest_ms: Set(0),
        };
        // One upsert, not a read then an insert: two first saves at once
        // (two people, two controllers) must not fail on the primary key.
        // The digest watermark of an existing row is kept.
        alert_settings::Entity::insert(model)
            .on_conflict(
                sea_orm::sea_query::OnConflict::column(C::Network)
                    .update_columns([
                        C::WebhookUrl,
                        C::EmailTo,
                        C::EmailFrom,
                        C::SmtpServer,
                        C::DigestMs,
                        C::Rules,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        Ok(())
    }

    /// What the alert rules read about a network at `now_ms`: every node
    /// with its latest live sample, its boots of the last hour and its
    /// uplink's latest closed 5-minute intervals, and the link directions
    /// that are up with their references. One query per kind of fact, never
    /// one per node; the samples of the last hour are not read one by one.
    pub async fn alert_inputs(
        &self,
        network: &str,
        now_ms: i64,
        window: InputWindow,
    ) -> Result<NetworkFacts, StoreError> {
        let network = clean(network);
        let Some(graph) = self.graph(&network, false, false).await? else {
            return Ok(NetworkFacts::default());
        };
        let ids: HashMap<String, i64> = node::Entity::find()
            .select_only()
            .column(node::Column::Node)
            .column(node::Column::Id)
            .filter(node::Column::Network.eq(network.clone()))
            .into_tuple::<(String, i64)>()
            .all(&self.db)
            .await?
            .into_iter()
            .collect();
        let silenced = self.maintenance_nodes(&network, now_ms).await?;
        let since = now_ms.saturating_sub(HOUR_MS);
        let lag = window.backfill_lag_ms;
        let mut latest = self.latest_live_samples(&network, since, lag).await?;
        let boots = self.live_boots(&network, since, lag).await?;
        let uplinks: HashMap<i64, String> = if window.uplink_intervals == 0 {
            HashMap::new()
        } else {
            graph
                .nodes
                .iter()
                .filter(|n| n.uplink)
                .filter_map(|n| Some((*ids.get(&n.node)?, n.gateway.as_ref()?.ifname.clone())))
                .collect()
        };
        let mut intervals = self.uplink_intervals(&uplinks, now_ms, window).await?;
        let links = self.link_facts(&graph.links).await?;
        let nodes = graph
            .nodes
            .into_iter()
            .map(|n| {
                let id = ids.get(&n.node).copied().unwrap_or(-1);
                let uplink = uplinks.get(&id).cloned();
                NodeFacts {
                    in_maintenance: silenced.contains(&n.node),
                    hostname: n.hostname,
                    site: n.site,
                    status: n.status,
                    last_seen_ms: n.last_seen_ms,
                    flapping: n.flapping_since_ms.is_some(),
                    latest: latest.remove(&id),
                    boots_last_hour: boots.get(&id).copied().unwrap_or(0),
                    uplink_intervals: if uplink.is_some() {
                        intervals.remove(&id).unwrap_or_default()
                    } else {
                        Vec::new()
                    },
                    uplink,
                    node: n.node,
                }
            })
            .collect();
        Ok(NetworkFacts { nodes, links })
    }

    /// The latest live sample of the last hour of every node of a network
    /// that has one: one statement, the newest row per node through the
    /// `(node_id, t_ms)` index.
    async fn latest_live_samples(
        &self,
        network: &str,
        since: i64,
        lag: i64,
    ) -> Result<HashMap<i64, SampleFacts>, StoreError> {
        let p: Vec<String> = (1..=4).map(|n| self.sql_param(n)).collect();
        let sql = format!(
            "SELECT s.node_id, s.t_ms, s.mem_total, s.mem_available, s.rootfs_size, \
             s.rootfs_free, s.load5 FROM sample s JOIN node n ON s.node_id = n.id \
             WHERE n.network = {} AND s.id = (SELECT s2.id FROM sample s2 \
             WHERE s2.node_id = n.id AND s2.t_ms >= {} AND s2.received_ms >= {} \
             AND s2.received_ms - s2.t_ms <= {} ORDER BY s2.t_ms DESC, s2.id DESC LIMIT 1)",
            p[0], p[1], p[2], p[3]
        );
        let rows = self
            .raw_rows(
                sql,
                vec![
                    Value::from(network),
                    Value::from(since),
                    Value::from(since),
                    Value::from(lag),
                ],
            )
            .await?;
        let mut out = HashMap::new();
        for row in rows {
            out.insert(
                row.try_get::<i64>("", "node_id")?,
                SampleFacts {
                    t_ms: row.try_get("", "t_ms")?,
                    mem_total: row.try_get("", "mem_total")?,
                    mem_available: row.try_get("", "mem_available")?,
                    rootfs_size: row.try_get("", "rootfs_size")?,
                    rootfs_free: row.try_get("", "rootfs_free")?,
                    load5: row.try_get("", "load5")?,
                },
            );
        }
        Ok(out)
    }

    /// Distinct boot ids among the live samples of the last hour, per node
    /// of a network: one grouped statement.
    async fn live_boots(
        &self,
        network: &str,
        since: i64,
        lag: i64,
    ) -> Result<HashMap<i64, u32>, StoreError> {
        let p: Vec<String> = (1..=4).map(|n| self.sql_param(n)).collect();
        let sql = format!(
            "SELECT s.node_id, COUNT(DISTINCT s.boot_id) AS boots FROM sample s \
             JOIN node n ON s.node_id = n.id WHERE n.network = {} AND s.t_ms >= {} \
             AND s.received_ms >= {} AND s.received_ms - s.t_ms <= {} GROUP BY s.node_id",
            p[0], p[1], p[2], p[3]
        );
        let rows = self
            .raw_rows(
                sql,
                vec![
                    Value::from(network),
                    Value::from(since),
                    Value::from(since),
                    Value::from(lag),
                ],
            )
            .await?;
        let mut out = HashMap::new();
        for row in rows {
            let boots: i64 = row.try_get("", "boots")?;
            out.insert(
                row.try_get::<i64>("", "node_id")?,
                u32::try_from(boots).unwrap_or(u32::MAX),
            );
        }
        Ok(out)
    }

    /// The latest `window.uplink_intervals` closed 5-minute intervals of
    /// each uplink (node id -> interface), newest first: the p95 of the rx
    /// and tx rates from the 5-minute rollups where they are current
    /// (before the rollup watermark, hour not dirty), else computed the
    /// same way from the samples; and whether each interval holds a live
    /// sample. One query per kind: dirty hours, rollup rows, interface
    /// samples of the part not rolled up, live sample times.
    async fn uplink_intervals(
        &self,
        uplinks: &HashMap<i64, String>,
        now_ms: i64,
        window: InputWindow,
    ) -> Result<HashMap<i64, Vec<UplinkInterval>>, StoreError> {
        if uplinks.is_empty() || window.uplink_intervals == 0 {
            return Ok(HashMap::new());
        }
        let k = i64::try_from(window.uplink_intervals).unwrap_or(i64::MAX);
        let end = floor_to(now_ms, FIVE_MINUTES_MS);
        let start = end.saturating_sub(k.saturating_mul(FIVE_MINUTES_MS));
        let ids: Vec<i64> = uplinks.keys().copied().collect();
        let mut names: Vec<String> = uplinks.values().map(|n| clean(n)).collect();
        names.sort_unstable();
        names.dedup();
        let w = self.rollup_watermark().await?.unwrap_or(i64::MIN);
        let mut dirty: HashSet<(i64, i64)> = HashSet::new();
        if start < w {
            for chunk in ids.chunks(ID_CHUNK) {
                let rows: Vec<(i64, i64)> = rollup_dirty::Entity::find()
                    .select_only()
                    .column(rollup_dirty::Column::NodeId)
                    .column(rollup_dirty::Column::BucketMs)
                    .filter(rollup_dirty::Column::NodeId.is_in(chunk.iter().copied()))
                    .filter(rollup_dirty::Column::BucketMs.gte(floor_to(start, HOUR_MS)))
                    .filter(rollup_dirty::Column::BucketMs.lt(end))
                    .into_tuple()
                    .all(&self.db)
                    .await?;
                dirty.extend(rows);
            }
        }
        let fresh = |node: i64, bucket: i64| {
            bucket < w && !dirty.contains(&(node, floor_to(bucket, HOUR_MS)))
        };
        let on_uplink = |node: i64, name: &str| uplinks.get(&node).is_some_and(|u| u == name);
        // (node, bucket) -> (rx p95, tx p95)
        let mut p95: HashMap<(i64, i64), (Option<f64>, Option<f64>)> = HashMap::new();
        if start < w {
            for chunk in ids.chunks(ID_CHUNK) {
                type Row = (i64, String, String, i64, Option<f64>);
                let rows: Vec<Row> = rollup::Entity::find()
                    .select_only()
                    .columns([
                        rollup::Column::NodeId,
                        rollup::Column::Metric,
                        rollup::Column::Interface,
                        rollup::Column::BucketMs,
                        rollup::Column::VP95,
                    ])
                    .filter(rollup::Column::NodeId.is_in(chunk.iter().copied()))
                    .filter(rollup::Column::ResS.eq(300))
                    .filter(rollup::Column::Metric.is_in(["rx_bps", "tx_bps"]))
                    .filter(rollup::Column::Interface.is_in(names.clone()))
                    .filter(rollup::Column::BucketMs.gte(start))
                    .filter(rollup::Column::BucketMs.lt(Ord::min(end, w)))
                    .into_tuple()
                    .all(&self.db)
                    .await?;
                for (node, metric, iface, bucket, v) in rows {
                    if !on_uplink(node, &iface) || !fresh(node, bucket) {
                        continue;
                    }
                    let e = p95.entry((node, bucket)).or_default();
                    if metric == "rx_bps" {
                        e.0 = v;
                    } else {
                        e.1 = v;
                    }
                }
            }
        }
        // The part not rolled up (from the watermark on, and dirty hours),
        // from the samples: every stored value, as the rollup would take it.
        let mut from: Option<i64> = (end > w).then(|| Ord::max(start, w));
        for &(_, hour) in &dirty {
            let h = Ord::max(hour, start);
            from = Some(from.map_or(h, |f| Ord::min(f, h)));
        }
        if let Some(from) = from {
            let mut values: HashMap<(i64, i64), (Vec<f64>, Vec<f64>)> = HashMap::new();
            for chunk in ids.chunks(ID_CHUNK) {
                let rows: Vec<(i64, i64, i64, String)> = sample::Entity::find()
                    .select_only()
                    .columns([
                        sample::Column::Id,
                        sample::Column::NodeId,
                        sample::Column::TMs,
                        sample::Column::Interfaces,
                    ])
                    .filter(sample::Column::NodeId.is_in(chunk.iter().copied()))
                    .filter(sample::Column::TMs.gte(from))
                    .filter(sample::Column::TMs.lt(end))
                    .into_tuple()
                    .all(&self.db)
                    .await?;
                for (id, node, t, json) in rows {
                    let bucket = floor_to(t, FIVE_MINUTES_MS);
                    if fresh(node, bucket) {
                        continue;
                    }
                    for i in ifaces::decode(id, &json)? {
                        if !on_uplink(node, &i.name) {
                            continue;
                        }
                        let e = values.entry((node, bucket)).or_default();
                        e.0.extend(i.rx_bps.filter(|v| v.is_finite()));
                        e.1.extend(i.tx_bps.filter(|v| v.is_finite()));
                    }
                }
            }
            for (key, (mut rx, mut tx)) in values {
                let rx = stats(&mut rx).map(|s| s.p95);
                let tx = stats(&mut tx).map(|s| s.p95);
                if rx.is_some() || tx.is_some() {
                    p95.insert(key, (rx, tx));
                }
            }
        }
        // Which intervals hold a live sample.
        let mut live: HashSet<(i64, i64)> = HashSet::new();
        for chunk in ids.chunks(ID_CHUNK) {
            let rows: Vec<(i64, i64)> = sample::Entity::find()
                .select_only()
                .column(sample::Column::NodeId)
                .column_as(Expr::col(sample::Column::TMs).div(FIVE_MINUTES_MS), "b")
                .distinct()
                .filter(sample::Column::NodeId.is_in(chunk.iter().copied()))
                .filter(sample::Column::TMs.gte(start))
                .filter(sample::Column::TMs.lt(end))
                .filter(
                    Expr::col(sample::Column::ReceivedMs)
                        .sub(Expr::col(sample::Column::TMs))
                        .lte(window.backfill_lag_ms),
                )
                .into_tuple()
                .all(&self.db)
                .await?;
            live.extend(rows);
        }
        let mut out: HashMap<i64, Vec<UplinkInterval>> = HashMap::new();
        for &node in &ids {
            let list = (1..=k)
                .filter_map(|i| {
                    let b = end - i * FIVE_MINUTES_MS;
                    let (rx, tx) = p95.get(&(node, b)).copied()?;
                    (rx.is_some() || tx.is_some()).then_some(UplinkInterval {
                        start_ms: b,
                        rx_p95: rx,
                        tx_p95: tx,
                        live: live.contains(&(node, b / FIVE_MINUTES_MS)),
                    })
                })
                .collect();
            out.insert(node, list);
        }
        Ok(out)
    }

    /// Applies the conditions that hold at `now_ms` to a network's alerts
    /// (see the module docs). Idempotent: the same conditions at the same
    /// time change nothing the second time.
    pub async fn reconcile_alerts(
        &self,
        network: &str,
        conditions: &[Condition],
        now_ms: i64,
    ) -> Result<Vec<AlertChange>, StoreError> {
        let network = clean(network);
        let txn = self.begin_write().await?;
        let open = alert::Entity::find()
            .filter(alert::Column::Network.eq(network.clone()))
            .filter(alert::Column::State.is_in(["pending", "firing", "acknowledged"]))
            .all(&txn)
            .await?;
        let mut open: HashMap<(String, String), alert::Model> = open
            .into_iter()
            .map(|a| ((a.rule.clone(), a.subject.clone()), a))
            .collect();
        let mut changes = Vec::new();
        let mut events: Vec<(i64, AlertState)> = Vec::new();
        for c in conditions {
            let key = (clean(&c.rule), clean(&c.subject));
            match open.remove(&key) {
                Some(a) => {
                    let state = AlertState::from_db(&a.state);
                    let mut m = alert::ActiveModel {
                        id: Set(a.id),
                        message: Set(clean(&c.message)),
                        value: Set(c.value),
                        site: Set(c.site.as_deref().map(clean)),
                        ..Default::default()
                    };
                    if state == AlertState::Pending && now_ms - a.since_ms >= c.hold_ms {
                        m.state = Set(AlertState::Firing.as_str().to_owned());
                        m.fired_ms = Set(Some(now_ms));
                        events.push((a.id, AlertState::Firing));
                        changes.push(AlertChange {
                            id: a.id,
                            rule: a.rule.clone(),
                            subject: a.subject.clone(),
                            event: AlertState::Firing,
                        });
                    }
                    alert::Entity::update(m).exec(&txn).await?;
                }
                None => {
                    let fire = c.hold_ms <= 0;
                    let state = if fire {
                        AlertState::Firing
                    } else {
                        AlertState::Pending
                    };
                    let res = alert::Entity::insert(alert::ActiveModel {
                        id: NotSet,
                        network: Set(network.clone()),
                        rule: Set(key.0.clone()),
                        subject: Set(key.1.clone()),
                        site: Set(c.site.as_deref().map(clean)),
                        state: Set(state.as_str().to_owned()),
                        message: Set(clean(&c.message)),
                        value: Set(c.value),
                        since_ms: Set(now_ms),
                        fired_ms: Set(fire.then_some(now_ms)),
                        acked_ms: Set(None),
                        acked_by: Set(None),
                        resolved_ms: Set(None),
                    })
                    .exec(&txn)
                    .await?;
                    if fire {
                        events.push((res.last_insert_id, AlertState::Firing));
                        changes.push(AlertChange {
                            id: res.last_insert_id,
                            rule: key.0,
                            subject: key.1,
                            event: AlertState::Firing,
                        });
                    }
                }
            }
        }
        // What is left no longer holds.
        for (_, a) in open {
            if a.state == AlertState::Pending.as_str() {
                alert::Entity::delete_by_id(a.id).exec(&txn).await?;
                continue;
            }
            alert::Entity::update(alert::ActiveModel {
                id: Set(a.id),
                state: Set(AlertState::Resolved.as_str().to_owned()),
                resolved_ms: Set(Some(now_ms)),
                ..Default::default()
            })
            .exec(&txn)
            .await?;
            events.push((a.id, AlertState::Resolved));
            changes.push(AlertChange {
                id: a.id,
                rule: a.rule,
                subject: a.subject,
                event: AlertState::Resolved,
            });
        }
        if !events.is_empty() {
            alert_event::Entity::insert_many(events.into_iter().map(|(id, e)| {
                alert_event::ActiveModel {
                    id: NotSet,
                    alert_id: Set(id),
                    network: Set(network.clone()),
                    t_ms: Set(now_ms),
                    event: Set(e.as_str().to_owned()),
                    notified: Set(false),
                }
            }))
            .exec_without_returning(&txn)
            .await?;
        }
        txn.commit().await?;
        Ok(changes)
    }

    /// A network's alerts, newest first: open ones (pending excluded unless
    /// `pending`), and resolved ones too when `resolved`.
    pub async fn alerts(
        &self,
        network: &str,
        pending: bool,
        resolved: bool,
    ) -> Result<Vec<Alert>, StoreError> {
        let mut states = vec!["firing", "acknowledged"];
        if pending {
            states.push("pending");
        }
        if resolved {
            states.push("resolved");
        }
        Ok(alert::Entity::find()
            .filter(alert::Column::Network.eq(clean(network)))
            .filter(alert::Column::State.is_in(states))
            .order_by_desc(alert::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(to_alert)
            .collect())
    }

    /// One alert of a network.
    pub async fn alert(&self, network: &str, id: i64) -> Result<Option<Alert>, StoreError> {
        Ok(alert::Entity::find_by_id(id)
            .filter(alert::Column::Network.eq(clean(network)))
            .one(&self.db)
            .await?
            .map(to_alert))
    }

    /// Acknowledges a firing alert of a network at `now_ms` by `who`.
    /// `None`: no such alert; `Some(false)`: it is not firing (pending,
    /// already acknowledged or resolved), nothing changed.
    pub async fn ack_alert(
        &self,
        network: &str,
        id: i64,
        who: &str,
        now_ms: i64,
    ) -> Result<Option<bool>, StoreError> {
        let network = clean(network);
        let txn = self.begin_write().await?;
        let res = alert::Entity::update_many()
            .col_expr(
                alert::Column::State,
                Expr::val(AlertState::Acknowledged.as_str()),
            )
            .col_expr(alert::Column::AckedMs, Expr::val(now_ms))
            .col_expr(alert::Column::AckedBy, Expr::val(clean(who)))
            .filter(alert::Column::Id.eq(id))
            .filter(alert::Column::Network.eq(network.clone()))
            .filter(alert::Column::State.eq(AlertState::Firing.as_str()))
            .exec(&txn)
            .await?;
        if res.rows_affected == 0 {
            let exists = alert::Entity::find_by_id(id)
                .filter(alert::Column::Network.eq(network))
                .one(&txn)
                .await?
                .is_some();
            return Ok(exists.then_some(false));
        }
        alert_event::Entity::insert(alert_event::ActiveModel {
            id: NotSet,
            alert_id: Set(id),
            network: Set(network),
            t_ms: Set(now_ms),
            event: Set(AlertState::Acknowledged.as_str().to_owned()),
            notified: Set(false),
        })
        .exec_without_returning(&txn)
        .await?;
        txn.commit().await?;
        Ok(Some(true))
    }

    /// The lifecycle changes of a network not yet notified, oldest first.
    pub async fn pending_notices(&self, network: &str) -> Result<Vec<PendingNotice>, StoreError> {
        let network = clean(network);
        let events = alert_event::Entity::find()
            .filter(alert_event::Column::Network.eq(network.clone()))
            .filter(alert_event::Column::Notified.eq(false))
            .order_by_asc(alert_event::Column::Id)
            .all(&self.db)
            .await?;
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = events.iter().map(|e| e.alert_id).collect();
        let alerts: HashMap<i64, Alert> = alert::Entity::find()
            .filter(alert::Column::Id.is_in(ids))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|a| (a.id, to_alert(a)))
            .collect();
        Ok(events
            .into_iter()
            .filter_map(|e| {
                Some(PendingNotice {
                    event_id: e.id,
                    t_ms: e.t_ms,
                    event: AlertState::from_db(&e.event),
                    alert: alerts.get(&e.alert_id)?.clone(),
                })
            })
            .collect())
    }

    /// Marks events notified and records the digest time of their network.
    pub async fn mark_notified(
        &self,
        network: &str,
        event_ids: &[i64],
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        for chunk in event_ids.chunks(500) {
            alert_event::Entity::update_many()
                .col_expr(alert_event::Column::Notified, Expr::val(true))
                .filter(alert_event::Column::Id.is_in(chunk.to_vec()))
                .exec(&txn)
                .await?;
        }
        alert_settings::Entity::update_many()
            .col_expr(alert_settings::Column::LastDigestMs, Expr::val(now_ms))
            .filter(alert_settings::Column::Network.eq(clean(network)))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(())
    }

    /// The ids of every network, for the alert engine's sweep.
    pub async fn network_ids(&self) -> Result<Vec<String>, StoreError> {
        Ok(crate::entity::network::Entity::find()
            .select_only()
            .column(crate::entity::network::Column::Id)
            .order_by_asc(crate::entity::network::Column::Id)
            .into_tuple()
            .all(&self.db)
            .await?)
    }
}
