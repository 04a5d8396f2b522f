//! Link references: the known-good quality of each link direction that the
//! `link_degraded` alert rule compares the latest report against.
//!
//! A reference has two parts, both per link direction (`link.id`):
//!
//! - the **operator's**, set and cleared through the API for every
//!   direction from one node to another ([`Store::set_link_reference`],
//!   [`Store::clear_link_reference`]);
//! - the **learned** one: once an hour the alert engine takes one sample of
//!   every link direction seen in that hour (the first values it sees in
//!   the hour, into `link_quality_hour`, kept [`LEARN_WINDOW_MS`]), and the
//!   reference is the median of those hourly samples, per part (signal, TQ,
//!   cost), once a part has at least [`LEARN_MIN_HOURS`] of them
//!   ([`Store::learn_link_references`]). Hourly samples weigh every hour the
//!   same however often the link reports; the median ignores a few bad
//!   hours, and follows a change only once it has lasted about half the
//!   window (3.5 days), after which it is the link's new normal.
//!
//! The rules use the operator's part where it is set and the learned one
//! for the rest. Links belong to nodes and nodes to one network: every
//! read and write here is scoped by the network, so a reference of one
//! network is invisible to another.

use std::collections::{HashMap, HashSet};

use meshtable_proto::MeshProtocol;
use sea_orm::sea_query::{OnConflict, Query};
use sea_orm::{ActiveValue::Set, ColumnTrait, EntityTrait, QueryFilter, QuerySelect};
use serde::Serialize;

use crate::alerts::{LinkFacts, LinkQuality};
use crate::entity::{link, node};
use crate::rollup::floor_to;
use crate::topology::{LinkEnd, LinkView, normalize_address};
use crate::write::clean;
use crate::{Store, StoreError};

/// How far back the hourly samples of a learned reference reach: 7 days.
pub const LEARN_WINDOW_MS: i64 = 7 * 24 * HOUR_MS;
/// Hourly samples a learned reference part needs: 24 (a day).
pub const LEARN_MIN_HOURS: u32 = 24;

const HOUR_MS: i64 = 3_600_000;
/// Ids per `IN (...)` list and rows per insert.
const CHUNK: usize = 1_000;

/// The `link_reference` table.
pub(crate) mod reference {
    use sea_orm::entity::prelude::*;

    /// The references of one link direction.
    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "link_reference")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub link_id: i64,
        pub signal_dbm: Option<f64>,
        pub tq: Option<f64>,
        pub cost: Option<f64>,
        pub set_by: Option<String>,
        pub set_ms: Option<i64>,
        pub learned_signal_dbm: Option<f64>,
        pub learned_tq: Option<f64>,
        pub learned_cost: Option<f64>,
        pub learned_hours: i32,
        pub learned_ms: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// The `link_quality_hour` table.
pub(crate) mod link_quality_hour {
    use sea_orm::entity::prelude::*;

    /// One hourly sample of a link direction's quality.
    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "link_quality_hour")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub link_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub hour_ms: i64,
        pub signal_dbm: Option<i32>,
        pub tq: Option<i32>,
        pub cost: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// One link direction with its references, as the API shows it.
///
/// JSON: `{"link","source","source_ifname","target":{"node","ifname","address"},
/// "protocol","up","quality":{..},"operator":{..}|null,"set_by","set",
/// "learned":{..}|null,"learned_hours","learned_at"}`, where a quality is
/// `{"signal_dbm","tq","cost"}` with the parts known.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LinkReferenceView {
    /// The link direction's id.
    pub link: i64,
    /// The reporting node.
    pub source: String,
    /// The reporter's interface.
    pub source_ifname: String,
    /// The far end.
    pub target: LinkEnd,
    /// The routing protocol that reports it.
    pub protocol: MeshProtocol,
    /// Whether the link is up.
    pub up: bool,
    /// Its quality in the latest report.
    pub quality: LinkQuality,
    /// The operator's reference.
    pub operator: Option<LinkQuality>,
    /// Who set the operator's reference.
    pub set_by: Option<String>,
    /// When, Unix ms.
    #[serde(rename = "set", with = "crate::alerts::opt_ms")]
    pub set_ms: Option<i64>,
    /// The learned reference (the parts with enough hourly samples).
    pub learned: Option<LinkQuality>,
    /// Hourly samples within the learning window.
    pub learned_hours: u32,
    /// When the learned reference was last computed, Unix ms.
    #[serde(rename = "learned_at", with = "crate::alerts::opt_ms")]
    pub learned_ms: Option<i64>,
}

/// The quality of a link view as the rules compare it: babel's `cost`
/// (else `rxcost`) as the cost.
fn quality_of(l: &LinkView) -> LinkQuality {
    LinkQuality {
        signal_dbm: l.signal_dbm.map(f64::from),
        tq: l.tq.map(f64::from),
        cost: l.cost.or(l.rxcost).map(f64::from),
    }
}

fn non_empty(q: LinkQuality) -> Option<LinkQuality> {
    (!q.is_empty()).then_some(q)
}

fn operator_of(r: &reference::Model) -> Option<LinkQuality> {
    non_empty(LinkQuality {
        signal_dbm: r.signal_dbm,
        tq: r.tq,
        cost: r.cost,
    })
}

fn learned_of(r: &reference::Model) -> Option<LinkQuality> {
    non_empty(LinkQuality {
        signal_dbm: r.learned_signal_dbm,
        tq: r.learned_tq,
        cost: r.learned_cost,
    })
}

/// The median of some values (the mean of the middle two for an even
/// count); `None` when there are fewer than `min`.
pub fn median(values: &mut [f64], min: usize) -> Option<f64> {
    if values.is_empty() || values.len() < min {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    Some(if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    })
}

impl Store {
    /// The link directions of a network from node `from` to `to` (a node id,
    /// or the neighbour's address when the far end is not joined to a
    /// node), down ones included. `None`: unknown network or no such link.
    async fn link_directions(
        &self,
        network: &str,
        from: &str,
        to: &str,
    ) -> Result<Option<Vec<LinkView>>, StoreError> {
        let Some(graph) = self.graph(network, true, false).await? else {
            return Ok(None);
        };
        let address = normalize_address(to);
        let found: Vec<LinkView> = graph
            .links
            .into_iter()
            .filter(|l| {
                l.source == from
                    && (l.target.node.as_deref() == Some(to) || l.target.address == address)
            })
            .collect();
        Ok((!found.is_empty()).then_some(found))
    }

    async fn reference_rows(
        &self,
        ids: &[i64],
    ) -> Result<HashMap<i64, reference::Model>, StoreError> {
        let mut out = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            out.extend(
                reference::Entity::find()
                    .filter(reference::Column::LinkId.is_in(chunk.iter().copied()))
                    .all(&self.db)
                    .await?
                    .into_iter()
                    .map(|r| (r.link_id, r)),
            );
        }
        Ok(out)
    }

    async fn reference_views(
        &self,
        links: Vec<LinkView>,
    ) -> Result<Vec<LinkReferenceView>, StoreError> {
        let ids: Vec<i64> = links.iter().map(|l| l.id).collect();
        let refs = self.reference_rows(&ids).await?;
        Ok(links
            .into_iter()
            .map(|l| {
                let r = refs.get(&l.id);
                LinkReferenceView {
                    link: l.id,
                    quality: quality_of(&l),
                    operator: r.and_then(operator_of),
                    set_by: r.and_then(|r| r.set_by.clone()),
                    set_ms: r.and_then(|r| r.set_ms),
                    learned: r.and_then(learned_of),
                    learned_hours: r.map_or(0, |r| u32::try_from(r.learned_hours).unwrap_or(0)),
                    learned_ms: r.and_then(|r| r.learned_ms),
                    source: l.source,
                    source_ifname: l.source_ifname,
                    target: l.target,
                    protocol: l.protocol,
                    up: l.up,
                }
            })
            .collect())
    }

    /// The references of every link direction of a network from `from` to
    /// `to`. `None`: unknown network, or no link from `from` to `to` in it.
    pub async fn link_references(
        &self,
        network: &str,
        from: &str,
        to: &str,
    ) -> Result<Option<Vec<LinkReferenceView>>, StoreError> {
        match self.link_directions(network, from, to).await? {
            None => Ok(None),
            Some(links) => Ok(Some(self.reference_views(links).await?)),
        }
    }

    /// Sets the operator's reference of every link direction of a network
    /// from `from` to `to` (replacing the parts set before; the learned
    /// reference is kept). `None`: unknown network or no such link.
    pub async fn set_link_reference(
        &self,
        network: &str,
        from: &str,
        to: &str,
        quality: &LinkQuality,
        who: &str,
        now_ms: i64,
    ) -> Result<Option<Vec<LinkReferenceView>>, StoreError> {
        let Some(links) = self.link_directions(network, from, to).await? else {
            return Ok(None);
        };
        let txn = self.begin_write().await?;
        let rows: Vec<reference::ActiveModel> = links
            .iter()
            .map(|l| reference::ActiveModel {
                link_id: Set(l.id),
                signal_dbm: Set(quality.signal_dbm),
                tq: Set(quality.tq),
                cost: Set(quality.cost),
                set_by: Set(Some(clean(who))),
                set_ms: Set(Some(now_ms)),
                learned_signal_dbm: Set(None),
                learned_tq: Set(None),
                learned_cost: Set(None),
                learned_hours: Set(0),
                learned_ms: Set(None),
            })
            .collect();
        reference::Entity::insert_many(rows)
            .on_conflict(
                OnConflict::column(reference::Column::LinkId)
                    .update_columns([
                        reference::Column::SignalDbm,
                        reference::Column::Tq,
                        reference::Column::Cost,
                        reference::Column::SetBy,
                        reference::Column::SetMs,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(&txn)
            .await?;
        txn.commit().await?;
        Ok(Some(self.reference_views(links).await?))
    }

    /// Clears the operator's reference of every link direction of a network
    /// from `from` to `to` (the learned one stays). `None`: unknown network
    /// or no such link.
    pub async fn clear_link_reference(
        &self,
        network: &str,
        from: &str,
        to: &str,
    ) -> Result<Option<Vec<LinkReferenceView>>, StoreError> {
        let Some(links) = self.link_directions(network, from, to).await? else {
            return Ok(None);
        };
        let ids: Vec<i64> = links.iter().map(|l| l.id).collect();
        let txn = self.begin_write().await?;
        reference::Entity::update_many()
            .col_expr(
                reference::Column::SignalDbm,
                sea_orm::sea_query::Expr::val(Option::<f64>::None),
            )
            .col_expr(
                reference::Column::Tq,
                sea_orm::sea_query::Expr::val(Option::<f64>::None),
            )
            .col_expr(
                reference::Column::Cost,
                sea_orm::sea_query::Expr::val(Option::<f64>::None),
            )
            .col_expr(
                reference::Column::SetBy,
                sea_orm::sea_query::Expr::val(Option::<String>::None),
            )
            .col_expr(
                reference::Column::SetMs,
                sea_orm::sea_query::Expr::val(Option::<i64>::None),
            )
            .filter(reference::Column::LinkId.is_in(ids))
            .exec(&txn)
            .await?;
        txn.commit().await?;
        Ok(Some(self.reference_views(links).await?))
    }

    /// The learning step (idempotent, safe on any number of controllers):
    /// takes this hour's sample of every link direction of the network seen
    /// in the hour of `now_ms` that has none yet, and for those recomputes
    /// the learned reference from the samples of the last 7 days, dropping
    /// older ones. Returns how many links were sampled (0 once the hour is
    /// done: then nothing is written).
    pub async fn learn_link_references(
        &self,
        network: &str,
        now_ms: i64,
    ) -> Result<u64, StoreError> {
        let hour = floor_to(now_ms, HOUR_MS);
        let in_network = Query::select()
            .column(node::Column::Id)
            .from(node::Entity)
            .and_where(node::Column::Network.eq(clean(network)))
            .to_owned();
        type Row = (i64, Option<i32>, Option<i32>, Option<i64>, Option<i64>);
        let seen: Vec<Row> = link::Entity::find()
            .select_only()
            .columns([
                link::Column::Id,
                link::Column::SignalDbm,
                link::Column::Tq,
                link::Column::Cost,
                link::Column::Rxcost,
            ])
            .filter(link::Column::NodeId.in_subquery(in_network))
            .filter(link::Column::LastSeenMs.gte(hour))
            .filter(link::Column::LastSeenMs.lt(hour.saturating_add(HOUR_MS)))
            .into_tuple()
            .all(&self.db)
            .await?;
        let seen: Vec<Row> = seen
            .into_iter()
            .filter(|r| r.1.is_some() || r.2.is_some() || r.3.is_some() || r.4.is_some())
            .collect();
        if seen.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = seen.iter().map(|r| r.0).collect();
        let mut done: HashSet<i64> = HashSet::new();
        for chunk in ids.chunks(CHUNK) {
            let rows: Vec<i64> = link_quality_hour::Entity::find()
                .select_only()
                .column(link_quality_hour::Column::LinkId)
                .filter(link_quality_hour::Column::HourMs.eq(hour))
                .filter(link_quality_hour::Column::LinkId.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(&self.db)
                .await?;
            done.extend(rows);
        }
        let missing: Vec<Row> = seen.into_iter().filter(|r| !done.contains(&r.0)).collect();
        if missing.is_empty() {
            return Ok(0);
        }
        let ids: Vec<i64> = missing.iter().map(|r| r.0).collect();
        let cutoff = hour.saturating_sub(LEARN_WINDOW_MS);
        let txn = self.begin_write().await?;
        for chunk in missing.chunks(CHUNK) {
            link_quality_hour::Entity::insert_many(chunk.iter().map(
                |&(id, signal, tq, cost, rxcost)| link_quality_hour::ActiveModel {
                    link_id: Set(id),
                    hour_ms: Set(hour),
                    signal_dbm: Set(signal),
                    tq: Set(tq),
                    cost: Set(cost.or(rxcost)),
                },
            ))
            .on_conflict_do_nothing()
            .exec_without_returning(&txn)
            .await?;
        }
        let mut samples: HashMap<i64, Vec<link_quality_hour::Model>> = HashMap::new();
        for chunk in ids.chunks(CHUNK) {
            link_quality_hour::Entity::delete_many()
                .filter(link_quality_hour::Column::LinkId.is_in(chunk.iter().copied()))
                .filter(link_quality_hour::Column::HourMs.lte(cutoff))
                .exec(&txn)
                .await?;
            for r in link_quality_hour::Entity::find()
                .filter(link_quality_hour::Column::LinkId.is_in(chunk.iter().copied()))
                .filter(link_quality_hour::Column::HourMs.gt(cutoff))
                .all(&txn)
                .await?
            {
                samples.entry(r.link_id).or_default().push(r);
            }
        }
        let min = LEARN_MIN_HOURS as usize;
        let learned: Vec<reference::ActiveModel> = ids
            .iter()
            .map(|id| {
                let list = samples.get(id).map(Vec::as_slice).unwrap_or(&[]);
                let mut signal: Vec<f64> = list
                    .iter()
                    .filter_map(|s| s.signal_dbm)
                    .map(f64::from)
                    .collect();
                let mut tq: Vec<f64> = list.iter().filter_map(|s| s.tq).map(f64::from).collect();
                let mut cost: Vec<f64> = list
                    .iter()
                    .filter_map(|s| s.cost)
                    .map(|c| c as f64)
                    .collect();
                reference::ActiveModel {
                    link_id: Set(*id),
                    signal_dbm: Set(None),
                    tq: Set(None),
                    cost: Set(None),
                    set_by: Set(None),
                    set_ms: Set(None),
                    learned_signal_dbm: Set(median(&mut signal, min)),
                    learned_tq: Set(median(&mut tq, min)),
                    learned_cost: Set(median(&mut cost, min)),
                    learned_hours: Set(i32::try_from(list.len()).unwrap_or(i32::MAX)),
                    learned_ms: Set(Some(now_ms)),
                }
            })
            .collect();
        let mut rows = learned.into_iter().peekable();
        while rows.peek().is_some() {
            let chunk: Vec<_> = rows.by_ref().take(CHUNK).collect();
            reference::Entity::insert_many(chunk)
                .on_conflict(
                    OnConflict::column(reference::Column::LinkId)
                        .update_columns([
                            reference::Column::LearnedSignalDbm,
                            reference::Column::LearnedTq,
                            reference::Column::LearnedCost,
                            reference::Column::LearnedHours,
                            reference::Column::LearnedMs,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(ids.len() as u64)
    }

    /// The alert rules' view of some link directions (up ones, from the
    /// graph): their quality and references. One query per 1000 links.
    pub(crate) async fn link_facts(
        &self,
        links: &[LinkView],
    ) -> Result<Vec<LinkFacts>, StoreError> {
        let ids: Vec<i64> = links.iter().map(|l| l.id).collect();
        let refs = self.reference_rows(&ids).await?;
        Ok(links
            .iter()
            .map(|l| {
                let r = refs.get(&l.id);
                LinkFacts {
                    id: l.id,
                    source: l.source.clone(),
                    source_ifname: l.source_ifname.clone(),
                    target: l
                        .target
                        .node
                        .clone()
                        .unwrap_or_else(|| l.target.address.clone()),
                    target_is_node: l.target.node.is_some(),
                    last_seen_ms: l.last_seen_ms,
                    quality: quality_of(l),
                    operator: r.and_then(operator_of),
                    learned: r.and_then(learned_of),
                }
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::median;

    #[test]
    fn medians() {
        let cases: [(&[f64], usize, Option<f64>); 5] = [
            (&[], 0, None),
            (&[-60.0], 1, Some(-60.0)),
            (&[-70.0, -60.0, -65.0], 1, Some(-65.0)),
            (&[-70.0, -60.0, -66.0, -64.0], 1, Some(-65.0)),
            (&[-70.0, -60.0], 3, None),
        ];
        for (values, min, want) in cases {
            let mut v = values.to_vec();
            assert_eq!(median(&mut v, min), want, "{values:?} min {min}");
        }
    }
}
