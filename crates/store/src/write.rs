//! Recording messages (batches of one, see `batch`), and the liveness sweep.

use meshtable_proto::{Hello, Telemetry};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
    SqliteTransactionMode, TransactionOptions, TransactionTrait,
};

use crate::batch::{Content, Incoming, Outcome};
use crate::entity::node;
use crate::{NodeStatus, Recorded, Store, StoreError};

/// Text the database can hold on both backends: PostgreSQL refuses NUL.
pub(crate) fn clean(s: &str) -> String {
    s.replace('\0', "\u{fffd}")
}

impl Store {
    /// Starts a write transaction. On SQLite it takes the write lock at once
    /// (`BEGIN IMMEDIATE`), so a transaction that reads before it writes
    /// waits for other writers instead of failing with "database is locked".
    pub(crate) async fn begin_write(&self) -> Result<DatabaseTransaction, StoreError> {
        Ok(self
            .writer
            .begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await?)
    }

    /// Records one message as a batch of one.
    async fn record_one(&self, incoming: Incoming<'_>) -> Result<Outcome, StoreError> {
        let outcome = self.record_batch(&[incoming]).await?.pop();
        match outcome {
            Some(Outcome::Invalid(e)) => Err(StoreError::Invalid(e)),
            Some(o) => Ok(o),
            None => Err(StoreError::Invalid("no outcome".to_owned())),
        }
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
        self.record_one(Incoming {
            network,
            node,
            content: Content::Hello(hello),
            received_ms,
        })
        .await?;
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
        self.record_one(Incoming {
            network,
            node,
            content: Content::State(status),
            received_ms,
        })
        .await?;
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
        let outcome = self
            .record_one(Incoming {
                network,
                node,
                content: Content::Telemetry(t),
                received_ms,
            })
            .await?;
        Ok(match outcome {
            Outcome::Duplicate => Recorded::Duplicate,
            _ => Recorded::Inserted,
        })
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
        let mut history = Vec::new();
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
                history.push((id, now_ms, NodeStatus::Offline.as_str()));
            }
        }
        crate::liveness::record_states(&txn, &history).await?;
        txn.commit().await?;
        Ok(changed)
    }
}
