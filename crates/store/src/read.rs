//! Queries: listings, details, counts and series.

use std::collections::BTreeMap;

use meshtable_proto::{CpuTimes, Hello, InterfaceCounters};
use sea_orm::sea_query::{Expr, ExprTrait, Order, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DerivePartialModel, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect,
};

use crate::derive::used_ratio;
use crate::entity::{network, node, sample};
use crate::ifaces::{self, Iface};
use crate::write::clean;
use crate::{
    InterfaceSample, Metric, NetworkSummary, NodeDetail, NodeStatus, NodeSummary, Point, Sample,
    Store, StoreError,
};

/// The node columns a listing needs (not the hello).
#[derive(Debug, DerivePartialModel)]
#[sea_orm(entity = "node::Entity")]
struct NodeRow {
    network: String,
    node: String,
    hostname: Option<String>,
    model: Option<String>,
    status: String,
    status_since_ms: i64,
    first_seen_ms: i64,
    last_seen_ms: i64,
}

impl From<NodeRow> for NodeSummary {
    fn from(r: NodeRow) -> NodeSummary {
        NodeSummary {
            network: r.network,
            node: r.node,
            hostname: r.hostname,
            model: r.model,
            status: NodeStatus::from_db(&r.status),
            status_since_ms: r.status_since_ms,
            first_seen_ms: r.first_seen_ms,
            last_seen_ms: r.last_seen_ms,
        }
    }
}

/// Stored i64 counters are never negative (they come from u64s).
fn unsat(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Every network with its node counts, by id.
    pub async fn networks(&self) -> Result<Vec<NetworkSummary>, StoreError> {
        let mut by_id: BTreeMap<String, NetworkSummary> = BTreeMap::new();
        for (id, status, n) in self.status_counts().await? {
            let s = by_id.entry(id.clone()).or_insert_with(|| NetworkSummary {
                id,
                nodes: 0,
                online: 0,
                offline: 0,
            });
            s.nodes += n;
            match status {
                NodeStatus::Online => s.online += n,
                NodeStatus::Offline => s.offline += n,
            }
        }
        Ok(by_id.into_values().collect())
    }

    /// The nodes of one network, or of all, by network then node id.
    pub async fn nodes(&self, network: Option<&str>) -> Result<Vec<NodeSummary>, StoreError> {
        let mut q = node::Entity::find();
        if let Some(n) = network {
            q = q.filter(node::Column::Network.eq(clean(n)));
        }
        let rows = q
            .order_by_asc(node::Column::Network)
            .order_by_asc(node::Column::Node)
            .into_partial_model::<NodeRow>()
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(NodeSummary::from).collect())
    }

    /// All nodes with this id (one per network it exists in), optionally
    /// restricted to one network, by network.
    pub async fn find_node(
        &self,
        node: &str,
        network: Option<&str>,
    ) -> Result<Vec<NodeSummary>, StoreError> {
        let mut q = node::Entity::find().filter(node::Column::Node.eq(clean(node)));
        if let Some(n) = network {
            q = q.filter(node::Column::Network.eq(clean(n)));
        }
        let rows = q
            .order_by_asc(node::Column::Network)
            .into_partial_model::<NodeRow>()
            .all(&self.db)
            .await?;
        Ok(rows.into_iter().map(NodeSummary::from).collect())
    }

    /// A node with its latest hello and the sample with the latest time;
    /// `None` if the node is unknown.
    pub async fn node_detail(
        &self,
        network: &str,
        node: &str,
    ) -> Result<Option<NodeDetail>, StoreError> {
        let Some(row) = node::Entity::find()
            .filter(node::Column::Network.eq(clean(network)))
            .filter(node::Column::Node.eq(clean(node)))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        let hello = row.hello.as_deref().and_then(|json| {
            serde_json::from_str::<Hello>(json)
                .inspect_err(|e| {
                    tracing::warn!(network, node, error = %e, "stored hello does not parse");
                })
                .ok()
        });
        let latest = match sample::Entity::find()
            .filter(sample::Column::NodeId.eq(row.id))
            .order_by_desc(sample::Column::TMs)
            .order_by_desc(sample::Column::Id)
            .limit(1)
            .one(&self.db)
            .await?
        {
            Some(s) => {
                let ifaces = ifaces::decode(s.id, &s.interfaces)?;
                Some(to_sample(s, ifaces))
            }
            None => None,
        };
        let summary = NodeSummary {
            network: row.network,
            node: row.node,
            hostname: row.hostname,
            model: row.model,
            status: NodeStatus::from_db(&row.status),
            status_since_ms: row.status_since_ms,
            first_seen_ms: row.first_seen_ms,
            last_seen_ms: row.last_seen_ms,
        };
        let clock = match &latest {
            Some(l) => self.clock_status(row.id, &l.boot_id, l.clock_ok).await?,
            None => None,
        };
        Ok(Some(NodeDetail {
            summary,
            hello,
            latest,
            clock,
        }))
    }

    /// The points of one metric of one node with `from_ms <= t <= to_ms`,
    /// ordered by `t`. Samples without a value for the metric (no previous
    /// sample for a rate, an empty filesystem size...) give no point. An
    /// unknown node gives no points.
    pub async fn series(
        &self,
        network: &str,
        node: &str,
        metric: &Metric,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<Point>, StoreError> {
        let Some(node_id) = node::Entity::find()
            .select_only()
            .column(node::Column::Id)
            .filter(node::Column::Network.eq(clean(network)))
            .filter(node::Column::Node.eq(clean(node)))
            .into_tuple::<i64>()
            .one(&self.db)
            .await?
        else {
            return Ok(Vec::new());
        };
        let samples = || {
            sample::Entity::find()
                .select_only()
                .column(sample::Column::TMs)
                .filter(sample::Column::NodeId.eq(node_id))
                .filter(sample::Column::TMs.between(from_ms, to_ms))
                .order_by_asc(sample::Column::TMs)
                .order_by_asc(sample::Column::Id)
        };
        let points = |rows: Vec<(i64, Option<f64>)>| {
            rows.into_iter()
                .filter_map(|(t, v)| v.filter(|v| v.is_finite()).map(|v| Point { t, v }))
                .collect::<Vec<_>>()
        };
        let column = |c: sample::Column| async move {
            let rows: Vec<(i64, Option<f64>)> =
                samples().column(c).into_tuple().all(&self.db).await?;
            Ok::<_, StoreError>(points(rows))
        };
        let ratio = |free: sample::Column, whole: sample::Column| async move {
            let rows: Vec<(i64, i64, i64)> = samples()
                .column(free)
                .column(whole)
                .into_tuple()
                .all(&self.db)
                .await?;
            Ok::<_, StoreError>(points(
                rows.into_iter()
                    .map(|(t, free, whole)| (t, used_ratio(free, whole)))
                    .collect(),
            ))
        };
        let interface = |iface: &str, rate: fn(&Iface) -> Option<f64>| {
            let iface = clean(iface);
            async move {
                let rows: Vec<(i64, i64, String)> = samples()
                    .column(sample::Column::Id)
                    .column(sample::Column::Interfaces)
                    .into_tuple()
                    .all(&self.db)
                    .await?;
                let mut values = Vec::with_capacity(rows.len());
                for (t, id, json) in rows {
                    if let Some(i) = ifaces::decode(id, &json)?.iter().find(|i| i.name == iface) {
                        values.push((t, rate(i)));
                    }
                }
                Ok::<_, StoreError>(points(values))
            }
        };
        match metric {
            Metric::Load1 => column(sample::Column::Load1).await,
            Metric::Load5 => column(sample::Column::Load5).await,
            Metric::Load15 => column(sample::Column::Load15).await,
            Metric::CpuBusyRatio => column(sample::Column::CpuBusyRatio).await,
            Metric::MemUsedRatio => {
                ratio(sample::Column::MemAvailable, sample::Column::MemTotal).await
            }
            Metric::RootfsUsedRatio => {
                ratio(sample::Column::RootfsFree, sample::Column::RootfsSize).await
            }
            Metric::RxBps(i) => interface(i, |i| i.rx_bps).await,
            Metric::TxBps(i) => interface(i, |i| i.tx_bps).await,
        }
    }

    /// Per network, the sum of the `dropped` counter (reports an agent's
    /// queue dropped) of each node's latest sample, by network; every network
    /// appears, with 0 when nothing was dropped. One query, one indexed
    /// lookup per node.
    pub async fn agent_dropped(&self) -> Result<Vec<(String, u64)>, StoreError> {
        let latest = Query::select()
            .column(("s2", sample::Column::Dropped))
            .from_as(sample::Entity, "s2")
            .and_where(
                Expr::col(("s2", sample::Column::NodeId)).equals((node::Entity, node::Column::Id)),
            )
            .order_by(("s2", sample::Column::TMs), Order::Desc)
            .order_by(("s2", sample::Column::Id), Order::Desc)
            .limit(1)
            .take();
        let per_node = Query::select()
            .column((node::Entity, node::Column::Network))
            .expr_as(Expr::SubQuery(None, Box::new(latest.into())), "dropped")
            .from(node::Entity)
            .take();
        let mut sums: BTreeMap<String, u64> = network::Entity::find()
            .select_only()
            .column(network::Column::Id)
            .into_tuple::<String>()
            .all(&self.db)
            .await?
            .into_iter()
            .map(|id| (id, 0))
            .collect();
        for row in self.db.query_all(&per_node).await? {
            let network: String = row.try_get("", "network")?;
            let dropped: Option<i64> = row.try_get("", "dropped")?;
            let sum = sums.entry(network).or_default();
            *sum = sum.saturating_add(unsat(dropped.unwrap_or(0)));
        }
        Ok(sums.into_iter().collect())
    }

    /// (network, status, count) for every network and both statuses, zeros
    /// included, by network then online before offline.
    pub async fn status_counts(&self) -> Result<Vec<(String, NodeStatus, u64)>, StoreError> {
        let networks: Vec<String> = network::Entity::find()
            .select_only()
            .column(network::Column::Id)
            .order_by_asc(network::Column::Id)
            .into_tuple()
            .all(&self.db)
            .await?;
        let counts: Vec<(String, String, i64)> = node::Entity::find()
            .select_only()
            .column(node::Column::Network)
            .column(node::Column::Status)
            .column_as(node::Column::Id.count(), "n")
            .group_by(node::Column::Network)
            .group_by(node::Column::Status)
            .into_tuple()
            .all(&self.db)
            .await?;
        let mut by_key: BTreeMap<(String, NodeStatus), u64> = BTreeMap::new();
        for network in networks {
            for status in NodeStatus::ALL {
                by_key.insert((network.clone(), status), 0);
            }
        }
        for (network, status, n) in counts {
            *by_key
                .entry((network, NodeStatus::from_db(&status)))
                .or_insert(0) += unsat(n);
        }
        Ok(by_key
            .into_iter()
            .map(|((network, status), n)| (network, status, n))
            .collect())
    }
}

fn to_sample(s: sample::Model, ifaces: Vec<Iface>) -> Sample {
    Sample {
        boot_id: s.boot_id,
        seq: unsat(s.seq),
        time_ms: s.t_ms,
        received_ms: s.received_ms,
        uptime_ms: unsat(s.uptime_ms),
        clock_ok: s.clock_ok,
        load: [s.load1, s.load5, s.load15],
        cpu: CpuTimes {
            user: unsat(s.cpu_user),
            nice: unsat(s.cpu_nice),
            system: unsat(s.cpu_system),
            idle: unsat(s.cpu_idle),
            iowait: unsat(s.cpu_iowait),
            irq: unsat(s.cpu_irq),
            softirq: unsat(s.cpu_softirq),
            steal: unsat(s.cpu_steal),
        },
        mem_total: unsat(s.mem_total),
        mem_available: unsat(s.mem_available),
        rootfs_size: unsat(s.rootfs_size),
        rootfs_free: unsat(s.rootfs_free),
        dropped: unsat(s.dropped),
        interfaces: ifaces
            .into_iter()
            .map(|i| InterfaceSample {
                counters: InterfaceCounters {
                    name: i.name,
                    rx_bytes: unsat(i.rx_bytes),
                    tx_bytes: unsat(i.tx_bytes),
                    rx_packets: unsat(i.rx_packets),
                    tx_packets: unsat(i.tx_packets),
                    rx_errors: unsat(i.rx_errors),
                    tx_errors: unsat(i.tx_errors),
                    rx_dropped: unsat(i.rx_dropped),
                    tx_dropped: unsat(i.tx_dropped),
                },
                rx_bps: i.rx_bps,
                tx_bps: i.tx_bps,
            })
            .collect(),
    }
}
