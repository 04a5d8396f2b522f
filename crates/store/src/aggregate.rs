//! Network-wide aggregates that name no node: what a funder may see.

use sea_orm::sea_query::{Expr, Func};
use sea_orm::{ColumnTrait, EntityTrait, JoinType, QueryFilter, QuerySelect, RelationTrait};
use serde::Serialize;

use crate::entity::{interface_sample, node, sample};
use crate::write::clean;
use crate::{Store, StoreError};

/// Bytes moved by a network's nodes over a period.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Traffic {
    /// Received by all interfaces of all nodes.
    pub rx_bytes: u64,
    /// Sent by all interfaces of all nodes.
    pub tx_bytes: u64,
}

/// Per group: the first and last rx counter, the first and last tx counter.
type MinMax = (Option<i64>, Option<i64>, Option<i64>, Option<i64>);

impl Store {
    /// The bytes counted by every interface of every node of `network` with
    /// samples between `from_ms` and `to_ms`: per node, boot and interface,
    /// the last counter minus the first (a reboot starts a new boot, so a
    /// counter reset never goes negative).
    pub async fn network_traffic(
        &self,
        network: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Traffic, StoreError> {
        let rows: Vec<MinMax> = interface_sample::Entity::find()
            .select_only()
            .expr(Func::min(Expr::col((
                interface_sample::Entity,
                interface_sample::Column::RxBytes,
            ))))
            .expr(Func::max(Expr::col((
                interface_sample::Entity,
                interface_sample::Column::RxBytes,
            ))))
            .expr(Func::min(Expr::col((
                interface_sample::Entity,
                interface_sample::Column::TxBytes,
            ))))
            .expr(Func::max(Expr::col((
                interface_sample::Entity,
                interface_sample::Column::TxBytes,
            ))))
            .join(
                JoinType::InnerJoin,
                interface_sample::Relation::Sample.def(),
            )
            .join(JoinType::InnerJoin, sample::Relation::Node.def())
            .filter(node::Column::Network.eq(clean(network)))
            .filter(sample::Column::TMs.between(from_ms, to_ms))
            .group_by(sample::Column::NodeId)
            .group_by(sample::Column::BootId)
            .group_by(interface_sample::Column::Name)
            .into_tuple()
            .all(&self.db)
            .await?;
        let delta = |lo: Option<i64>, hi: Option<i64>| {
            u64::try_from(hi.unwrap_or(0).saturating_sub(lo.unwrap_or(0))).unwrap_or(0)
        };
        Ok(rows
            .into_iter()
            .fold(Traffic::default(), |t, (rx_lo, rx_hi, tx_lo, tx_hi)| {
                Traffic {
                    rx_bytes: t.rx_bytes.saturating_add(delta(rx_lo, rx_hi)),
                    tx_bytes: t.tx_bytes.saturating_add(delta(tx_lo, tx_hi)),
                }
            }))
    }
}
