//! Alerts: what the alert engine reads (per-node facts of a network) and
//! what it keeps (alerts with their lifecycle, their events, and per-network
//! settings).
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
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};

use crate::entity::{interface_sample, node, node_extra, node_mesh, sample};
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

mod opt_ms {
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
    /// Its latest live (not backfilled) sample in the look-back window.
    pub latest: Option<SampleFacts>,
    /// Distinct boot ids among live samples of the last hour.
    pub boots_last_hour: u32,
    /// Its uplink interface (from the gateway it reports).
    pub uplink: Option<String>,
    /// Rates of the uplink in its latest live samples, newest first:
    /// `(rx_bps, tx_bps)`, missing values as 0.
    pub uplink_rates: Vec<(f64, f64)>,
}

/// How [`Store::alert_inputs`] tells live samples from backfilled ones and
/// how far it looks back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputWindow {
    /// A sample received more than this after its series time is backfill.
    pub backfill_lag_ms: i64,
    /// How many latest live samples of the uplink to return.
    pub uplink_samples: usize,
}

const HOUR_MS: i64 = 3_600_000;

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
        let network = clean(network);
        let txn = self.begin_write().await?;
        let existing = alert_settings::Entity::find_by_id(network.clone())
            .one(&txn)
            .await?;
        let email = (!s.email_to.is_empty()).then(|| s.email_to.join(","));
        let model = alert_settings::ActiveModel {
            network: Set(network),
            webhook_url: Set(s.webhook_url.as_deref().map(clean)),
            email_to: Set(email.as_deref().map(clean)),
            email_from: Set(s.email_from.as_deref().map(clean)),
            smtp_server: Set(s.smtp_server.as_deref().map(clean)),
            digest_ms: Set(Ord::max(s.digest_ms, 0)),
            rules: Set(s.rules_json.as_deref().map(clean)),
            last_digest_ms: Set(existing.as_ref().map_or(0, |e| e.last_digest_ms)),
        };
        if existing.is_some() {
            alert_settings::Entity::update(model).exec(&txn).await?;
        } else {
            alert_settings::Entity::insert(model)
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }

    /// What the alert rules read about every node of a network at `now_ms`.
    pub async fn alert_inputs(
        &self,
        network: &str,
        now_ms: i64,
        window: InputWindow,
    ) -> Result<Vec<NodeFacts>, StoreError> {
        let network = clean(network);
        let nodes = node::Entity::find()
            .filter(node::Column::Network.eq(network.clone()))
            .order_by_asc(node::Column::Node)
            .all(&self.db)
            .await?;
        let extra: HashMap<i64, node_extra::Model> = node_extra::Entity::find()
            .filter(node_extra::Column::Network.eq(network.clone()))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|e| (e.id, e))
            .collect();
        let silenced = self.maintenance_nodes(&network, now_ms).await?;
        let ids: Vec<i64> = nodes.iter().map(|n| n.id).collect();
        let gateways: HashMap<i64, String> = node_mesh::Entity::find()
            .filter(node_mesh::Column::NodeId.is_in(ids.clone()))
            .all(&self.db)
            .await?
            .into_iter()
            .filter_map(|m| {
                let g: meshtable_proto::Gateway =
                    serde_json::from_str(m.gateway.as_deref()?).ok()?;
                Some((m.node_id, g.ifname))
            })
            .collect();
        // Live samples of the last hour, newest first. A sample is live when
        // it arrived within `backfill_lag_ms` of its series time.
        let since = now_ms.saturating_sub(HOUR_MS);
        let samples = sample::Entity::find()
            .filter(sample::Column::NodeId.is_in(ids))
            .filter(sample::Column::ReceivedMs.gte(since))
            .filter(sample::Column::TMs.gte(since))
            .filter(
                Expr::col(sample::Column::ReceivedMs)
                    .sub(Expr::col(sample::Column::TMs))
                    .lte(window.backfill_lag_ms),
            )
            .order_by_desc(sample::Column::TMs)
            .order_by_desc(sample::Column::Id)
            .all(&self.db)
            .await?;
        let mut by_node: HashMap<i64, Vec<&sample::Model>> = HashMap::new();
        for s in &samples {
            by_node.entry(s.node_id).or_default().push(s);
        }
        // Uplink rates of the latest live samples.
        let mut wanted: Vec<i64> = Vec::new();
        for (node_id, list) in &by_node {
            if gateways.contains_key(node_id) {
                wanted.extend(list.iter().take(window.uplink_samples).map(|s| s.id));
            }
        }
        let mut rates: HashMap<(i64, String), (f64, f64)> = HashMap::new();
        for chunk in wanted.chunks(500) {
            let rows = interface_sample::Entity::find()
                .filter(interface_sample::Column::SampleId.is_in(chunk.to_vec()))
                .all(&self.db)
                .await?;
            for r in rows {
                rates.insert(
                    (r.sample_id, r.name),
                    (r.rx_bps.unwrap_or(0.0), r.tx_bps.unwrap_or(0.0)),
                );
            }
        }
        Ok(nodes
            .into_iter()
            .map(|n| {
                let e = extra.get(&n.id);
                let list = by_node.get(&n.id).map(Vec::as_slice).unwrap_or(&[]);
                let boots: HashSet<&str> = list.iter().map(|s| s.boot_id.as_str()).collect();
                let uplink = gateways.get(&n.id).cloned();
                let uplink_rates = match &uplink {
                    Some(ifname) => list
                        .iter()
                        .take(window.uplink_samples)
                        .map(|s| {
                            rates
                                .get(&(s.id, ifname.clone()))
                                .copied()
                                .unwrap_or((0.0, 0.0))
                        })
                        .collect(),
                    None => Vec::new(),
                };
                NodeFacts {
                    in_maintenance: silenced.contains(&n.node),
                    hostname: n.hostname,
                    site: e.and_then(|e| e.site_id.clone()),
                    status: NodeStatus::from_db(&n.status),
                    last_seen_ms: n.last_seen_ms,
                    flapping: e.is_some_and(|e| e.flapping_since_ms.is_some()),
                    latest: list.first().map(|s| SampleFacts {
                        t_ms: s.t_ms,
                        mem_total: s.mem_total,
                        mem_available: s.mem_available,
                        rootfs_size: s.rootfs_size,
                        rootfs_free: s.rootfs_free,
                        load5: s.load5,
                    }),
                    boots_last_hour: u32::try_from(boots.len()).unwrap_or(u32::MAX),
                    uplink,
                    uplink_rates,
                    node: n.node,
                }
            })
            .collect())
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
