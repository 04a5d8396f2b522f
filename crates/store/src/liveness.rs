//! Liveness beyond online and offline: every node's state history, flapping
//! with hysteresis, maintenance windows, and the "new" and "recently lost"
//! node lists.
//!
//! # State machine
//!
//! A node's *status* is online or offline, as ingest and the offline sweep
//! set it; every change is kept in `node_state` (at ingest, in the same
//! transaction as the change). A node's *state* adds flapping on top:
//!
//! ```text
//!            >= transitions changes within window
//!   stable  ---------------------------------------->  flapping
//!   (online | offline)  <----------------------------   (status still kept)
//!            no change for quiet
//! ```
//!
//! [`Store::reconcile_flapping`] applies the two rules at a given time. It
//! is an idempotent reconcile step (run it from the periodic sweep, on any
//! replica); entering and leaving flapping are kept in the history too, as
//! `flapping` and `stable`. Because leaving needs a quiet period and
//! entering needs several changes, a node does not toggle between flapping
//! and stable on every change: that is the hysteresis.
//!
//! # Maintenance windows
//!
//! A window silences one node or one site of a network from `start` until
//! `end` (exclusive). [`Store::in_maintenance`] and
//! [`Store::maintenance_nodes`] answer whether a node is silenced now:
//! alerting reads them, and listings show `in_maintenance`.

use std::collections::{HashMap, HashSet};

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};

use crate::entity::{maintenance, node, node_extra, node_state, site};
use crate::time::rfc3339_ms;
use crate::write::clean;
use crate::{NodeStatus, Store, StoreError};

/// When a node counts as flapping, and when it is stable again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlapPolicy {
    /// Status changes within `window_ms` that make a node flapping.
    pub transitions: u32,
    /// The window the changes are counted in, ms.
    pub window_ms: i64,
    /// How long a flapping node must keep its status to be stable again, ms.
    pub quiet_ms: i64,
}

impl Default for FlapPolicy {
    /// Four changes within 30 minutes; stable after 30 quiet minutes.
    fn default() -> FlapPolicy {
        FlapPolicy {
            transitions: 4,
            window_ms: 30 * 60_000,
            quiet_ms: 30 * 60_000,
        }
    }
}

/// A node's state: its status, or flapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeState {
    /// Reporting, and stable.
    Online,
    /// Not reporting, and stable.
    Offline,
    /// Changing status too often (see [`FlapPolicy`]).
    Flapping,
}

impl NodeState {
    /// `"online"`, `"offline"` or `"flapping"`.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeState::Online => "online",
            NodeState::Offline => "offline",
            NodeState::Flapping => "flapping",
        }
    }

    fn of(status: NodeStatus, flapping: bool) -> NodeState {
        match (flapping, status) {
            (true, _) => NodeState::Flapping,
            (false, NodeStatus::Online) => NodeState::Online,
            (false, NodeStatus::Offline) => NodeState::Offline,
        }
    }
}

/// One entry of a node's state history.
///
/// JSON: `{"time", "state"}` where `state` is `online`, `offline`,
/// `flapping` (began flapping) or `stable` (stopped flapping).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    /// When, Unix ms (controller clock).
    #[serde(rename = "time", with = "rfc3339_ms")]
    pub t_ms: i64,
    /// What the node became.
    pub state: String,
}

/// A node's liveness as listed.
///
/// JSON: `{"network","node","hostname","site","status","state","status_since",
/// "flapping_since","in_maintenance","first_seen","last_seen"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeLiveness {
    /// The network id.
    pub network: String,
    /// The node id.
    pub node: String,
    /// Hostname from the latest hello.
    pub hostname: Option<String>,
    /// The site the node belongs to.
    pub site: Option<String>,
    /// Online or offline.
    pub status: NodeStatus,
    /// Online, offline or flapping.
    pub state: NodeState,
    /// When the status last changed, Unix ms.
    #[serde(rename = "status_since", with = "rfc3339_ms")]
    pub status_since_ms: i64,
    /// Since when the node is flapping, Unix ms.
    #[serde(rename = "flapping_since", with = "opt_rfc3339_ms")]
    pub flapping_since_ms: Option<i64>,
    /// Whether a maintenance window covers the node now.
    pub in_maintenance: bool,
    /// First message, Unix ms.
    #[serde(rename = "first_seen", with = "rfc3339_ms")]
    pub first_seen_ms: i64,
    /// Latest message, Unix ms.
    #[serde(rename = "last_seen", with = "rfc3339_ms")]
    pub last_seen_ms: i64,
}

/// A node that began or stopped flapping in a [`Store::reconcile_flapping`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlapChange {
    /// The network id.
    pub network: String,
    /// The node id.
    pub node: String,
    /// `true`: began flapping; `false`: stable again.
    pub flapping: bool,
}

/// A maintenance window.
///
/// JSON: `{"id","network","node","site","start","end","reason","created"}`;
/// exactly one of `node` and `site` is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    /// The window's id.
    pub id: i64,
    /// The network id.
    pub network: String,
    /// The node it silences.
    pub node: Option<String>,
    /// The site it silences.
    pub site: Option<String>,
    /// Start, Unix ms, inclusive.
    #[serde(rename = "start", with = "rfc3339_ms")]
    pub start_ms: i64,
    /// End, Unix ms, exclusive.
    #[serde(rename = "end", with = "rfc3339_ms")]
    pub end_ms: i64,
    /// Why, free text.
    pub reason: Option<String>,
    /// When it was created, Unix ms.
    #[serde(rename = "created", with = "rfc3339_ms")]
    pub created_ms: i64,
}

/// What a maintenance window covers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaintenanceTarget {
    /// One node, by id.
    Node(String),
    /// Every node of a site, by site id.
    Site(String),
}

/// A maintenance window to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewMaintenance {
    /// What it silences.
    pub target: MaintenanceTarget,
    /// Start, Unix ms, inclusive.
    pub start_ms: i64,
    /// End, Unix ms, exclusive; after `start_ms`.
    pub end_ms: i64,
    /// Why, free text.
    pub reason: Option<String>,
}

/// What [`Store::create_maintenance`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MaintenanceCreated {
    /// Created.
    Created(Maintenance),
    /// The network, node or site is unknown (the message says which).
    Unknown(String),
}

/// Longest maintenance reason kept, in bytes.
pub const MAX_REASON: usize = 1024;

/// `#[serde(with)]` for an optional time as RFC 3339 (or `null`).
pub mod opt_rfc3339_ms {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes `Some` as an RFC 3339 string, `None` as `null`.
    pub fn serialize<S: Serializer>(ms: &Option<i64>, s: S) -> Result<S::Ok, S::Error> {
        match ms {
            Some(ms) => s.serialize_str(&crate::time::format_rfc3339_ms(*ms)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes an RFC 3339 string or `null`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<i64>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| crate::time::parse_rfc3339_ms(&s).map_err(serde::de::Error::custom))
            .transpose()
    }
}

/// Stores status changes `(node id, time, state)` in the state history.
pub(crate) async fn record_states<C: ConnectionTrait>(
    db: &C,
    rows: &[(i64, i64, &str)],
) -> Result<(), StoreError> {
    for chunk in rows.chunks(5_000) {
        let models: Vec<node_state::ActiveModel> = chunk
            .iter()
            .map(|&(node_id, t_ms, state)| node_state::ActiveModel {
                id: NotSet,
                node_id: Set(node_id),
                t_ms: Set(t_ms),
                state: Set(state.to_owned()),
            })
            .collect();
        node_state::Entity::insert_many(models)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    clean(&s[..end])
}

fn to_maintenance(m: maintenance::Model) -> Maintenance {
    Maintenance {
        id: m.id,
        network: m.network,
        node: m.node,
        site: m.site,
        start_ms: m.start_ms,
        end_ms: m.end_ms,
        reason: m.reason,
        created_ms: m.created_ms,
    }
}

impl Store {
    /// Applies the [`FlapPolicy`] at `now_ms`: a stable node with at least
    /// `transitions` status changes in `(now - window, now]` starts flapping;
    /// a flapping node without a change in `(now - quiet, now]` is stable
    /// again. Both are kept in the state history. Returns what changed.
    /// Idempotent.
    pub async fn reconcile_flapping(
        &self,
        now_ms: i64,
        policy: FlapPolicy,
    ) -> Result<Vec<FlapChange>, StoreError> {
        let txn = self.begin_write().await?;
        let since = now_ms.saturating_sub(policy.window_ms);
        let counts: Vec<(i64, i64)> = node_state::Entity::find()
            .select_only()
            .column(node_state::Column::NodeId)
            .column_as(node_state::Column::Id.count(), "n")
            .filter(node_state::Column::TMs.gt(since))
            .filter(node_state::Column::TMs.lte(now_ms))
            .filter(node_state::Column::State.is_in(["online", "offline"]))
            .group_by(node_state::Column::NodeId)
            .into_tuple()
            .all(&txn)
            .await?;
        let busy: HashMap<i64, i64> = counts.into_iter().collect();
        let flapping: Vec<node_extra::Model> = node_extra::Entity::find()
            .filter(node_extra::Column::FlappingSinceMs.is_not_null())
            .all(&txn)
            .await?;
        let flapping_ids: HashSet<i64> = flapping.iter().map(|n| n.id).collect();

        let mut changes = Vec::new();
        let mut history = Vec::new();
        // Start flapping.
        let starting: Vec<i64> = busy
            .iter()
            .filter(|&(id, &n)| {
                n >= i64::from(policy.transitions.max(1)) && !flapping_ids.contains(id)
            })
            .map(|(&id, _)| id)
            .collect();
        if !starting.is_empty() {
            let rows = node_extra::Entity::find()
                .filter(node_extra::Column::Id.is_in(starting.iter().copied()))
                .filter(node_extra::Column::FlappingSinceMs.is_null())
                .all(&txn)
                .await?;
            for r in rows {
                node_extra::Entity::update_many()
                    .col_expr(node_extra::Column::FlappingSinceMs, Expr::val(now_ms))
                    .filter(node_extra::Column::Id.eq(r.id))
                    .exec(&txn)
                    .await?;
                history.push((r.id, now_ms, "flapping"));
                changes.push(FlapChange {
                    network: r.network,
                    node: r.node,
                    flapping: true,
                });
            }
        }
        // Stop flapping: no change within the quiet period.
        if !flapping.is_empty() {
            let quiet_since = now_ms.saturating_sub(policy.quiet_ms);
            let recent: HashSet<i64> = node_state::Entity::find()
                .select_only()
                .column(node_state::Column::NodeId)
                .distinct()
                .filter(node_state::Column::NodeId.is_in(flapping_ids.iter().copied()))
                .filter(node_state::Column::TMs.gt(quiet_since))
                .filter(node_state::Column::State.is_in(["online", "offline"]))
                .into_tuple::<i64>()
                .all(&txn)
                .await?
                .into_iter()
                .collect();
            for r in flapping {
                if recent.contains(&r.id) {
                    continue;
                }
                node_extra::Entity::update_many()
                    .col_expr(
                        node_extra::Column::FlappingSinceMs,
                        Expr::val(Option::<i64>::None),
                    )
                    .filter(node_extra::Column::Id.eq(r.id))
                    .exec(&txn)
                    .await?;
                history.push((r.id, now_ms, "stable"));
                changes.push(FlapChange {
                    network: r.network,
                    node: r.node,
                    flapping: false,
                });
            }
        }
        record_states(&txn, &history).await?;
        txn.commit().await?;
        changes.sort_by(|a, b| (&a.network, &a.node).cmp(&(&b.network, &b.node)));
        Ok(changes)
    }

    /// The state history of a node with `from_ms <= time <= to_ms`, oldest
    /// first; empty for an unknown node.
    pub async fn state_history(
        &self,
        network: &str,
        node: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<StateChange>, StoreError> {
        let Some(id) = self.node_id(network, node).await? else {
            return Ok(Vec::new());
        };
        let rows = node_state::Entity::find()
            .filter(node_state::Column::NodeId.eq(id))
            .filter(node_state::Column::TMs.between(from_ms, to_ms))
            .order_by_asc(node_state::Column::TMs)
            .order_by_asc(node_state::Column::Id)
            .all(&self.db)
            .await?;
        Ok(rows
            .into_iter()
            .map(|r| StateChange {
                t_ms: r.t_ms,
                state: r.state,
            })
            .collect())
    }

    /// The row id of a node.
    pub(crate) async fn node_id(
        &self,
        network: &str,
        node: &str,
    ) -> Result<Option<i64>, StoreError> {
        Ok(node::Entity::find()
            .select_only()
            .column(node::Column::Id)
            .filter(node::Column::Network.eq(clean(network)))
            .filter(node::Column::Node.eq(clean(node)))
            .into_tuple::<i64>()
            .one(&self.db)
            .await?)
    }

    /// Every node of a network with its state, site and whether a
    /// maintenance window covers it at `now_ms`, by node id.
    pub async fn liveness(
        &self,
        network: &str,
        now_ms: i64,
    ) -> Result<Vec<NodeLiveness>, StoreError> {
        let network = clean(network);
        let rows = node::Entity::find()
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
        Ok(rows
            .into_iter()
            .map(|r| {
                let e = extra.get(&r.id);
                let status = NodeStatus::from_db(&r.status);
                let flapping_since_ms = e.and_then(|e| e.flapping_since_ms);
                NodeLiveness {
                    in_maintenance: silenced.contains(&r.node),
                    network: r.network,
                    node: r.node,
                    hostname: r.hostname,
                    site: e.and_then(|e| e.site_id.clone()),
                    status,
                    state: NodeState::of(status, flapping_since_ms.is_some()),
                    status_since_ms: r.status_since_ms,
                    flapping_since_ms,
                    first_seen_ms: r.first_seen_ms,
                    last_seen_ms: r.last_seen_ms,
                }
            })
            .collect())
    }

    /// Nodes first seen at or after `since_ms`, newest first.
    pub async fn new_nodes(
        &self,
        network: &str,
        since_ms: i64,
        now_ms: i64,
    ) -> Result<Vec<NodeLiveness>, StoreError> {
        let mut nodes: Vec<NodeLiveness> = self
            .liveness(network, now_ms)
            .await?
            .into_iter()
            .filter(|n| n.first_seen_ms >= since_ms)
            .collect();
        nodes.sort_by(|a, b| {
            b.first_seen_ms
                .cmp(&a.first_seen_ms)
                .then(a.node.cmp(&b.node))
        });
        Ok(nodes)
    }

    /// Offline nodes whose status changed to offline more than `min_ms` and
    /// less than `max_ms` before `now_ms`, most recently lost first.
    pub async fn lost_nodes(
        &self,
        network: &str,
        now_ms: i64,
        min_ms: i64,
        max_ms: i64,
    ) -> Result<Vec<NodeLiveness>, StoreError> {
        let mut nodes: Vec<NodeLiveness> = self
            .liveness(network, now_ms)
            .await?
            .into_iter()
            .filter(|n| {
                let offline_for = now_ms.saturating_sub(n.status_since_ms);
                n.status == NodeStatus::Offline && offline_for > min_ms && offline_for < max_ms
            })
            .collect();
        nodes.sort_by(|a, b| {
            b.status_since_ms
                .cmp(&a.status_since_ms)
                .then(a.node.cmp(&b.node))
        });
        Ok(nodes)
    }

    /// Creates a maintenance window at `now_ms`. The node or site must exist
    /// in the network; `end_ms` must be after `start_ms`
    /// ([`StoreError::BadQuery`] otherwise). The reason is cut to
    /// [`MAX_REASON`] bytes.
    pub async fn create_maintenance(
        &self,
        network: &str,
        window: &NewMaintenance,
        now_ms: i64,
    ) -> Result<MaintenanceCreated, StoreError> {
        if window.end_ms <= window.start_ms {
            return Err(StoreError::BadQuery(
                "maintenance end must be after its start".to_owned(),
            ));
        }
        let network = clean(network);
        let txn = self.begin_write().await?;
        let known = match &window.target {
            MaintenanceTarget::Node(n) => node::Entity::find()
                .filter(node::Column::Network.eq(network.clone()))
                .filter(node::Column::Node.eq(clean(n)))
                .one(&txn)
                .await?
                .is_some()
                .then_some(())
                .ok_or_else(|| format!("unknown node {n} in network {network}")),
            MaintenanceTarget::Site(s) => site::Entity::find_by_id((network.clone(), clean(s)))
                .one(&txn)
                .await?
                .is_some()
                .then_some(())
                .ok_or_else(|| format!("unknown site {s} in network {network}")),
        };
        if let Err(msg) = known {
            return Ok(MaintenanceCreated::Unknown(msg));
        }
        let (node, site) = match &window.target {
            MaintenanceTarget::Node(n) => (Some(clean(n)), None),
            MaintenanceTarget::Site(s) => (None, Some(clean(s))),
        };
        let res = maintenance::Entity::insert(maintenance::ActiveModel {
            id: NotSet,
            network: Set(network),
            node: Set(node),
            site: Set(site),
            start_ms: Set(window.start_ms),
            end_ms: Set(window.end_ms),
            reason: Set(window.reason.as_deref().map(|r| truncate(r, MAX_REASON))),
            created_ms: Set(now_ms),
        })
        .exec(&txn)
        .await?;
        let row = maintenance::Entity::find_by_id(res.last_insert_id)
            .one(&txn)
            .await?
            .ok_or_else(|| {
                StoreError::Database(sea_orm::DbErr::RecordNotFound(
                    "maintenance window vanished".to_owned(),
                ))
            })?;
        txn.commit().await?;
        Ok(MaintenanceCreated::Created(to_maintenance(row)))
    }

    /// The maintenance windows of a network that end after `after_ms`
    /// (all of them with `i64::MIN`), by start then id.
    pub async fn maintenance_windows(
        &self,
        network: &str,
        after_ms: i64,
    ) -> Result<Vec<Maintenance>, StoreError> {
        let rows = maintenance::Entity::find()
            .filter(maintenance::Column::Network.eq(clean(network)))
            .filter(maintenance::Column::EndMs.gt(after_ms))
            .order_by_asc(maintenance::Column::StartMs)
            .order_by_asc(maintenance::Column::Id)
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(to_maintenance).collect())
    }

    /// Deletes a maintenance window of a network; `false` if there is none
    /// with that id in that network.
    pub async fn delete_maintenance(&self, network: &str, id: i64) -> Result<bool, StoreError> {
        let res = maintenance::Entity::delete_many()
            .filter(maintenance::Column::Network.eq(clean(network)))
            .filter(maintenance::Column::Id.eq(id))
            .exec(&self.db)
            .await?;
        Ok(res.rows_affected > 0)
    }

    /// The ids of the nodes of a network a maintenance window covers at
    /// `now_ms` (directly or through their site).
    pub async fn maintenance_nodes(
        &self,
        network: &str,
        now_ms: i64,
    ) -> Result<HashSet<String>, StoreError> {
        let network = clean(network);
        let active = maintenance::Entity::find()
            .filter(maintenance::Column::Network.eq(network.clone()))
            .filter(maintenance::Column::StartMs.lte(now_ms))
            .filter(maintenance::Column::EndMs.gt(now_ms))
            .all(&self.db)
            .await?;
        let mut out: HashSet<String> = HashSet::new();
        let mut sites: Vec<String> = Vec::new();
        for m in active {
            if let Some(n) = m.node {
                out.insert(n);
            }
            if let Some(s) = m.site {
                sites.push(s);
            }
        }
        if !sites.is_empty() {
            let members: Vec<String> = node_extra::Entity::find()
                .select_only()
                .column(node_extra::Column::Node)
                .filter(node_extra::Column::Network.eq(network))
                .filter(node_extra::Column::SiteId.is_in(sites))
                .into_tuple()
                .all(&self.db)
                .await?;
            out.extend(members);
        }
        Ok(out)
    }

    /// Whether a maintenance window covers a node at `now_ms` (directly or
    /// through its site). Alerting asks this before it notifies.
    pub async fn in_maintenance(
        &self,
        network: &str,
        node: &str,
        now_ms: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .maintenance_nodes(network, now_ms)
            .await?
            .contains(&clean(node)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states() {
        assert_eq!(NodeState::of(NodeStatus::Online, false), NodeState::Online);
        assert_eq!(
            NodeState::of(NodeStatus::Offline, false),
            NodeState::Offline
        );
        assert_eq!(NodeState::of(NodeStatus::Online, true), NodeState::Flapping);
        assert_eq!(NodeState::Flapping.as_str(), "flapping");
    }

    #[test]
    fn reasons_are_cut_on_char_boundaries() {
        assert_eq!(truncate("abc", 2), "ab");
        assert_eq!(truncate("aé", 2), "a");
        assert_eq!(truncate("a\0", 5), "a\u{fffd}");
    }
}
