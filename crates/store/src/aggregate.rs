//! Network-wide aggregates that name no node: what a funder may see.

use std::collections::HashMap;

use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde::Serialize;

use crate::entity::{node, sample};
use crate::ifaces;
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
        let nodes: Vec<i64> = node::Entity::find()
            .select_only()
            .column(node::Column::Id)
            .filter(node::Column::Network.eq(clean(network)))
            .into_tuple()
            .all(&self.db)
            .await?;
        // Per (node, boot, interface): the lowest and highest rx and tx
        // counter. Node by node, so that memory holds one node's samples.
        let mut ranges: HashMap<(i64, String, String), [(i64, i64); 2]> = HashMap::new();
        for node in nodes {
            let rows: Vec<(i64, String, String)> = sample::Entity::find()
                .select_only()
                .columns([
                    sample::Column::Id,
                    sample::Column::BootId,
                    sample::Column::Interfaces,
                ])
                .filter(sample::Column::NodeId.eq(node))
                .filter(sample::Column::TMs.between(from_ms, to_ms))
                .into_tuple()
                .all(&self.db)
                .await?;
            for (id, boot, json) in rows {
                for i in ifaces::decode(id, &json)? {
                    let r = ranges
                        .entry((node, boot.clone(), i.name))
                        .or_insert([(i.rx_bytes, i.rx_bytes), (i.tx_bytes, i.tx_bytes)]);
                    for (range, v) in r.iter_mut().zip([i.rx_bytes, i.tx_bytes]) {
                        range.0 = range.0.min(v);
                        range.1 = range.1.max(v);
                    }
                }
            }
        }
        let delta = |(lo, hi): (i64, i64)| u64::try_from(hi.saturating_sub(lo)).unwrap_or(0);
        Ok(ranges
            .into_values()
            .fold(Traffic::default(), |t, [rx, tx]| Traffic {
                rx_bytes: t.rx_bytes.saturating_add(delta(rx)),
                tx_bytes: t.tx_bytes.saturating_add(delta(tx)),
            }))
    }
}
