//! Recording messages, and the liveness sweep.

use std::collections::{HashMap, HashSet};

use meshtable_proto::{Hello, Message, Telemetry};
use sea_orm::sea_query::{Expr, ExprTrait};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    QuerySelect, SqliteTransactionMode, TransactionOptions, TransactionTrait, TryInsertResult,
};

use crate::derive::{Ticks, bps, cpu_busy_ratio, sample_time, sat, widen};
use crate::entity::{interface_sample, network, node, sample};
use crate::{NodeStatus, Recorded, Store, StoreError};

/// Text the database can hold on both backends: PostgreSQL refuses NUL.
pub(crate) fn clean(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

/// What a hello sets on its node.
struct HelloFields {
    hostname: Option<String>,
    model: Option<String>,
    json: String,
    interval_ms: Option<i64>,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| clean(s))
}

impl Store {
    /// Starts a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so a transaction that reads before it writes
    /// waits for other writers instead of failing with "database is locked".
    async fn begin_write(&self) -> Result<DatabaseTransaction, StoreError> {
        Ok(self
            .db
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await?)
    }

    /// Records a hello: creates the node if new, stores the hello (the
    /// latest replaces the one before), marks the node online and seen at
    /// `received_ms` (controller clock, Unix ms). An `interval_ms` of 0 counts
    /// as unknown for [`Store::sweep_offline`]; an empty hostname or model is
    /// shown as `null`.
    pub async fn record_hello(
        &self,
        network: &str,
        node: &str,
        hello: &Hello,
        received_ms: i64,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(hello)
            .map_err(|e| StoreError::Invalid(format!("hello does not serialize: {e}")))?;
        let fields = HelloFields {
            hostname: non_empty(&hello.hostname),
            model: non_empty(&hello.model),
            json,
            interval_ms: (hello.interval_ms > 0).then_some(i64::from(hello.interval_ms)),
        };
        let txn = self.begin_write().await?;
        touch_node(
            &txn,
            network,
            node,
            received_ms,
            NodeStatus::Online,
            Some(fields),
        )
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Records a state message: creates the node if new, sets its status
    /// (`status_since` moves only when it changes), marks it seen.
    pub async fn record_state(
        &self,
        network: &str,
        node: &str,
        status: meshtable_proto::Status,
        received_ms: i64,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        touch_node(&txn, network, node, received_ms, status.into(), None).await?;
        txn.commit().await?;
        Ok(())
    }

    /// Records a telemetry report in one transaction: the sample, its
    /// interfaces with rates, and the node's liveness (online, seen at
    /// `received_ms`).
    ///
    /// A report whose (network, node, boot_id, seq) is already stored changes
    /// nothing and gives [`Recorded::Duplicate`]. A report that breaks the
    /// wire format's rules gives [`StoreError::Invalid`]. When one report
    /// lists an interface name twice, the first entry counts.
    pub async fn record_telemetry(
        &self,
        network: &str,
        node: &str,
        t: &Telemetry,
        received_ms: i64,
    ) -> Result<Recorded, StoreError> {
        t.validate()
            .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let (t_ms, clock_ok) = sample_time(t.time_ms, received_ms);
        let boot_id = clean(&t.boot_id);
        let seq = sat(t.seq);
        let uptime_ms = sat(t.uptime_ms);
        let ticks = Ticks::from_proto(&t.cpu);

        let txn = self.begin_write().await?;
        // Updating the node row first locks it (PostgreSQL) or the database
        // (SQLite): reports of one node are stored one after the other, and
        // the previous-sample lookup below sees every committed one.
        let node_id =
            touch_node(&txn, network, node, received_ms, NodeStatus::Online, None).await?;

        let prev = sample::Entity::find()
            .filter(sample::Column::NodeId.eq(node_id))
            .filter(sample::Column::BootId.eq(boot_id.as_str()))
            .filter(sample::Column::Seq.lt(seq))
            .order_by_desc(sample::Column::Seq)
            .limit(1)
            .one(&txn)
            .await?;
        let prev_ifaces: HashMap<String, (i64, i64)> = match &prev {
            Some(p) => interface_sample::Entity::find()
                .select_only()
                .column(interface_sample::Column::Name)
                .column(interface_sample::Column::RxBytes)
                .column(interface_sample::Column::TxBytes)
                .filter(interface_sample::Column::SampleId.eq(p.id))
                .into_tuple::<(String, i64, i64)>()
                .all(&txn)
                .await?
                .into_iter()
                .map(|(name, rx, tx)| (name, (rx, tx)))
                .collect(),
            None => HashMap::new(),
        };
        let cpu_busy = prev.as_ref().and_then(|p| {
            let prev_ticks = Ticks {
                all: [
                    p.cpu_user,
                    p.cpu_nice,
                    p.cpu_system,
                    p.cpu_idle,
                    p.cpu_iowait,
                    p.cpu_irq,
                    p.cpu_softirq,
                    p.cpu_steal,
                ],
            };
            if uptime_ms > p.uptime_ms {
                cpu_busy_ratio(&prev_ticks, &ticks)
            } else {
                None
            }
        });

        let row_boot_id = boot_id.clone();
        let row = sample::ActiveModel {
            id: NotSet,
            node_id: Set(node_id),
            boot_id: Set(boot_id),
            seq: Set(seq),
            t_ms: Set(t_ms),
            time_ms: Set(sat(t.time_ms)),
            received_ms: Set(received_ms),
            clock_ok: Set(clock_ok),
            uptime_ms: Set(uptime_ms),
            load1: Set(widen(t.load[0])),
            load5: Set(widen(t.load[1])),
            load15: Set(widen(t.load[2])),
            cpu_user: Set(ticks.all[0]),
            cpu_nice: Set(ticks.all[1]),
            cpu_system: Set(ticks.all[2]),
            cpu_idle: Set(ticks.all[3]),
            cpu_iowait: Set(ticks.all[4]),
            cpu_irq: Set(ticks.all[5]),
            cpu_softirq: Set(ticks.all[6]),
            cpu_steal: Set(ticks.all[7]),
            mem_total: Set(sat(t.mem_total)),
            mem_available: Set(sat(t.mem_available)),
            rootfs_size: Set(sat(t.rootfs_size)),
            rootfs_free: Set(sat(t.rootfs_free)),
            dropped: Set(sat(t.dropped)),
            cpu_busy_ratio: Set(cpu_busy),
        };
        let inserted = sample::Entity::insert(row)
            .on_conflict_do_nothing_on([
                sample::Column::NodeId,
                sample::Column::BootId,
                sample::Column::Seq,
            ])
            .exec(&txn)
            .await?;
        let sample_id = match inserted {
            TryInsertResult::Inserted(r) => r.last_insert_id,
            TryInsertResult::Conflicted | TryInsertResult::Empty => {
                let stored_uptime: Option<i64> = sample::Entity::find()
                    .select_only()
                    .column(sample::Column::UptimeMs)
                    .filter(sample::Column::NodeId.eq(node_id))
                    .filter(sample::Column::BootId.eq(row_boot_id.as_str()))
                    .filter(sample::Column::Seq.eq(seq))
                    .into_tuple()
                    .one(&txn)
                    .await?;
                txn.rollback().await?;
                if stored_uptime.is_some_and(|u| u != uptime_ms) {
                    // Not a redelivery: another report under the same key,
                    // as when an agent restarts (seq from 0) without a reboot.
                    tracing::warn!(
                        network,
                        node,
                        boot_id = %row_boot_id,
                        seq,
                        "report key reused by a different report, dropped as duplicate"
                    );
                }
                return Ok(Recorded::Duplicate);
            }
        };

        let prev_uptime = prev.as_ref().map(|p| p.uptime_ms);
        let mut seen = HashSet::new();
        let rows: Vec<interface_sample::ActiveModel> = t
            .interfaces
            .iter()
            .filter(|i| seen.insert(clean(&i.name)))
            .map(|i| {
                let (rx, tx) = (sat(i.rx_bytes), sat(i.tx_bytes));
                let name = clean(&i.name);
                let (rx_bps, tx_bps) = match (prev_uptime, prev_ifaces.get(&name)) {
                    (Some(pu), Some(&(prx, ptx))) => {
                        (bps(prx, rx, pu, uptime_ms), bps(ptx, tx, pu, uptime_ms))
                    }
                    _ => (None, None),
                };
                interface_sample::ActiveModel {
                    sample_id: Set(sample_id),
                    name: Set(name),
                    rx_bytes: Set(rx),
                    tx_bytes: Set(tx),
                    rx_packets: Set(sat(i.rx_packets)),
                    tx_packets: Set(sat(i.tx_packets)),
                    rx_errors: Set(sat(i.rx_errors)),
                    tx_errors: Set(sat(i.tx_errors)),
                    rx_dropped: Set(sat(i.rx_dropped)),
                    tx_dropped: Set(sat(i.tx_dropped)),
                    rx_bps: Set(rx_bps),
                    tx_bps: Set(tx_bps),
                }
            })
            .collect();
        if !rows.is_empty() {
            interface_sample::Entity::insert_many(rows)
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(Recorded::Inserted)
    }

    /// Marks offline every online node whose `last_seen_ms` is before
    /// `now_ms - missed * interval`, the interval being its hello's
    /// `interval_ms` or `default_interval_ms` when unknown. Returns the
    /// (network, node) pairs it changed. Idempotent; safe to run on several
    /// controllers at once (a node seen meanwhile is left alone).
    pub async fn sweep_offline(
        &self,
        now_ms: i64,
        missed: u32,
        default_interval_ms: i64,
    ) -> Result<Vec<(String, String)>, StoreError> {
        let txn = self.begin_write().await?;
        let online: Vec<(i64, String, String, i64, Option<i64>)> = node::Entity::find()
            .select_only()
            .column(node::Column::Id)
            .column(node::Column::Network)
            .column(node::Column::Node)
            .column(node::Column::LastSeenMs)
            .column(node::Column::IntervalMs)
            .filter(node::Column::Status.eq(NodeStatus::Online.as_str()))
            .order_by_asc(node::Column::Network)
            .order_by_asc(node::Column::Node)
            .into_tuple()
            .all(&txn)
            .await?;
        let mut changed = Vec::new();
        for (id, network, node, last_seen_ms, interval_ms) in online {
            let interval = Ord::max(interval_ms.unwrap_or(default_interval_ms), 0);
            let deadline = now_ms.saturating_sub(interval.saturating_mul(i64::from(missed)));
            if last_seen_ms >= deadline {
                continue;
            }
            // Only if nothing arrived since we looked.
            let res = node::Entity::update_many()
                .col_expr(
                    node::Column::Status,
                    Expr::val(NodeStatus::Offline.as_str()),
                )
                .col_expr(node::Column::StatusSinceMs, Expr::val(now_ms))
                .filter(node::Column::Id.eq(id))
                .filter(node::Column::Status.eq(NodeStatus::Online.as_str()))
                .filter(node::Column::LastSeenMs.eq(last_seen_ms))
                .exec(&txn)
                .await?;
            if res.rows_affected == 1 {
                changed.push((network, node));
            }
        }
        txn.commit().await?;
        Ok(changed)
    }
}

/// Creates the network and node rows if missing, then marks the node seen at
/// `received_ms` with `status` (and the hello's fields). Returns the node's id.
async fn touch_node<C: ConnectionTrait>(
    c: &C,
    network: &str,
    node: &str,
    received_ms: i64,
    status: NodeStatus,
    hello: Option<HelloFields>,
) -> Result<i64, StoreError> {
    let network = clean(network);
    let node = clean(node);
    network::Entity::insert(network::ActiveModel {
        id: Set(network.clone()),
        first_seen_ms: Set(received_ms),
    })
    .on_conflict_do_nothing()
    .exec(c)
    .await?;
    node::Entity::insert(node::ActiveModel {
        id: NotSet,
        network: Set(network.clone()),
        node: Set(node.clone()),
        hostname: Set(None),
        model: Set(None),
        hello: Set(None),
        interval_ms: Set(None),
        status: Set(status.as_str().to_owned()),
        status_since_ms: Set(received_ms),
        first_seen_ms: Set(received_ms),
        last_seen_ms: Set(received_ms),
    })
    .on_conflict_do_nothing_on([node::Column::Network, node::Column::Node])
    .exec(c)
    .await?;

    // One atomic UPDATE, so concurrent writers cannot lose each other's
    // changes: last_seen only moves forward, status_since only moves when the
    // status changes (SET expressions see the row as it was).
    let mut update = node::Entity::update_many()
        .col_expr(
            node::Column::LastSeenMs,
            Expr::case(
                Expr::col(node::Column::LastSeenMs).lt(received_ms),
                received_ms,
            )
            .finally(Expr::col(node::Column::LastSeenMs))
            .into(),
        )
        .col_expr(
            node::Column::StatusSinceMs,
            Expr::case(
                Expr::col(node::Column::Status).ne(status.as_str()),
                received_ms,
            )
            .finally(Expr::col(node::Column::StatusSinceMs))
            .into(),
        )
        .col_expr(node::Column::Status, Expr::val(status.as_str()));
    if let Some(h) = hello {
        update = update
            .col_expr(node::Column::Hostname, Expr::val(h.hostname))
            .col_expr(node::Column::Model, Expr::val(h.model))
            .col_expr(node::Column::Hello, Expr::val(h.json))
            .col_expr(node::Column::IntervalMs, Expr::val(h.interval_ms));
    }
    update
        .filter(node::Column::Network.eq(network.as_str()))
        .filter(node::Column::Node.eq(node.as_str()))
        .exec(c)
        .await?;

    let id = node::Entity::find()
        .select_only()
        .column(node::Column::Id)
        .filter(node::Column::Network.eq(network.as_str()))
        .filter(node::Column::Node.eq(node.as_str()))
        .into_tuple::<i64>()
        .one(c)
        .await?;
    id.ok_or_else(|| {
        StoreError::Database(sea_orm::DbErr::RecordNotFound(format!(
            "node {network}/{node} vanished"
        )))
    })
}
