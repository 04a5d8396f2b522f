//! Router clocks: where in time a report is placed.
//!
//! A report carries the router's wall clock (`time_ms`) and its uptime
//! (`uptime_ms`). A router without a real-time clock starts at 1970 until
//! NTP answers, and a battery-less RTC may hold any old date. The
//! controller therefore keeps, per (node, boot), a **boot anchor**: the
//! wall-clock time the boot started, `anchor = trusted time - uptime`,
//! learned from
//!
//! - a report with a good clock ([`AnchorSource::Clock`]): the latest such
//!   report sets it; or, until one arrives,
//! - the reception time of a live report ([`AnchorSource::Received`]): the
//!   smallest `received - uptime` seen (reception lags the report by the
//!   transport delay, so the smallest is the closest).
//!
//! The placement rules ([`place`]):
//!
//! 1. A **live** report (not `backfill`) whose clock is plausible (after
//!    2020-01-01) and within the skew tolerance of its reception time
//!    (default five minutes either way) is placed at its own time, with
//!    `clock_ok`; it sets the anchor from its clock.
//!    A live report that arrives late (its clock behind the reception time
//!    by more than the tolerance, as when the broker queued it while the
//!    controller was away) is also placed at its own time when its clock
//!    agrees with the boot's clock anchor; it does not change the skew.
//! 2. Any other live report is flagged (`clock_ok = false`), teaches the
//!    anchor its reception time (unless a clock anchor exists), and is placed
//!    at `anchor + uptime`. For the first report of a boot that is its
//!    reception time.
//! 3. A **backfilled** report (replayed from the agent's spool, so its
//!    reception time says nothing) is placed at its own time, with
//!    `clock_ok`, when that is plausible, not ahead of the reception time by
//!    more than the tolerance, and agrees with the anchor (its `time -
//!    uptime` within the tolerance of it) if there is one; a boot without an
//!    anchor learns one from it.
//! 4. Any other backfilled report is flagged and placed at `anchor +
//!    uptime`, or at its reception time when the boot has no anchor.

use std::collections::HashMap;

use meshtable_proto::Telemetry;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    QueryFilter, QuerySelect, Statement, Value,
};

use crate::derive::{CLOCK_MIN_MS, sat};
use crate::entity::boot_anchor;
use crate::{Store, StoreError};

/// Default tolerance between a live report's clock and its reception time.
pub const DEFAULT_MAX_SKEW_MS: i64 = 5 * 60 * 1000;

/// Where a boot anchor was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AnchorSource {
    /// From the clock of a report that passed the checks.
    Clock,
    /// From the reception time of a live report.
    Received,
}

impl AnchorSource {
    /// `"clock"` or `"received"`, as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            AnchorSource::Clock => "clock",
            AnchorSource::Received => "received",
        }
    }

    fn from_db(s: &str) -> AnchorSource {
        if s == "clock" {
            AnchorSource::Clock
        } else {
            AnchorSource::Received
        }
    }
}

/// The wall-clock start of one boot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    /// Trusted time minus uptime, Unix ms.
    pub anchor_ms: i64,
    /// Where it was learned.
    pub source: AnchorSource,
}

/// What [`place`] needs of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockReading {
    /// The router's clock, Unix ms.
    pub time_ms: i64,
    /// Time since boot, ms.
    pub uptime_ms: i64,
    /// Replayed from the agent's spool.
    pub backfill: bool,
    /// When the controller received it, Unix ms.
    pub received_ms: i64,
}

/// How a report was placed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placed {
    /// At the router's own clock (`clock_ok`).
    RouterClock,
    /// At the boot anchor plus uptime.
    BootAnchor,
    /// At its reception time (a backfill of a boot without anchor).
    Received,
}

/// Where a report goes, and what the boot's anchor becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The series time, Unix ms.
    pub t_ms: i64,
    /// Whether `t_ms` is the router's own clock.
    pub clock_ok: bool,
    /// How it was placed.
    pub how: Placed,
    /// The boot's anchor after this report.
    pub anchor: Option<Anchor>,
    /// For a live report: router clock minus reception time, ms.
    pub skew_ms: Option<i64>,
}

/// Places one report of a boot whose anchor is `prior` (see the module
/// documentation for the rules). Pure: the caller keeps the anchor.
pub fn place(r: ClockReading, prior: Option<Anchor>, max_skew_ms: i64) -> Placement {
    let plausible = r.time_ms >= CLOCK_MIN_MS;
    let own_anchor = r.time_ms.saturating_sub(r.uptime_ms);
    let at_anchor = |a: Anchor| a.anchor_ms.saturating_add(r.uptime_ms);
    if !r.backfill {
        let skew = r.time_ms.saturating_sub(r.received_ms);
        if plausible && skew.saturating_abs() <= max_skew_ms {
            return Placement {
                t_ms: r.time_ms,
                clock_ok: true,
                how: Placed::RouterClock,
                anchor: Some(Anchor {
                    anchor_ms: own_anchor,
                    source: AnchorSource::Clock,
                }),
                skew_ms: Some(skew),
            };
        }
        // Late, not wrong: queued in the broker while the controller was
        // away, with a clock that agrees with the boot's clock anchor.
        if plausible
            && skew < 0
            && let Some(
                a @ Anchor {
                    source: AnchorSource::Clock,
                    ..
                },
            ) = prior
            && own_anchor.abs_diff(a.anchor_ms) <= max_skew_ms.unsigned_abs()
        {
            return Placement {
                t_ms: r.time_ms,
                clock_ok: true,
                how: Placed::RouterClock,
                anchor: Some(Anchor {
                    anchor_ms: own_anchor,
                    source: AnchorSource::Clock,
                }),
                skew_ms: None,
            };
        }
        let from_reception = r.received_ms.saturating_sub(r.uptime_ms);
        let anchor = match prior {
            Some(
                a @ Anchor {
                    source: AnchorSource::Clock,
                    ..
                },
            ) => a,
            Some(a) => Anchor {
                anchor_ms: a.anchor_ms.min(from_reception),
                source: AnchorSource::Received,
            },
            None => Anchor {
                anchor_ms: from_reception,
                source: AnchorSource::Received,
            },
        };
        return Placement {
            t_ms: at_anchor(anchor),
            clock_ok: false,
            how: Placed::BootAnchor,
            anchor: Some(anchor),
            skew_ms: Some(skew),
        };
    }
    let agrees =
        prior.is_none_or(|a| own_anchor.abs_diff(a.anchor_ms) <= max_skew_ms.unsigned_abs());
    if plausible && r.time_ms <= r.received_ms.saturating_add(max_skew_ms) && agrees {
        return Placement {
            t_ms: r.time_ms,
            clock_ok: true,
            how: Placed::RouterClock,
            anchor: Some(prior.unwrap_or(Anchor {
                anchor_ms: own_anchor,
                source: AnchorSource::Clock,
            })),
            skew_ms: None,
        };
    }
    match prior {
        Some(a) => Placement {
            t_ms: at_anchor(a),
            clock_ok: false,
            how: Placed::BootAnchor,
            anchor: Some(a),
            skew_ms: None,
        },
        None => Placement {
            t_ms: r.received_ms,
            clock_ok: false,
            how: Placed::Received,
            anchor: None,
            skew_ms: None,
        },
    }
}

/// A boot's anchor as the batch replays it.
#[derive(Debug, Clone)]
pub(crate) struct AnchorState {
    anchor: Anchor,
    skew_ms: Option<i64>,
    updated_ms: i64,
    changed: bool,
}

/// The anchors of the boots a batch touches, by (node id, boot id).
#[derive(Debug, Default)]
pub(crate) struct Anchors {
    by_boot: HashMap<(i64, String), AnchorState>,
}

impl Anchors {
    /// Reads the stored anchors of these (node id, boot id) pairs.
    pub(crate) async fn load(
        txn: &DatabaseTransaction,
        boots: &[(i64, String)],
    ) -> Result<Anchors, StoreError> {
        let mut by_boot = HashMap::with_capacity(boots.len());
        let backend = txn.get_database_backend();
        // The exact pairs, joined as a row source: two IN lists would make
        // the database probe every node with every boot id.
        for chunk in boots.chunks(crate::batch::MAX_PARAMS / 2) {
            let (source, values) = crate::batch::row_source(
                backend,
                chunk
                    .iter()
                    .map(|(node_id, boot_id)| {
                        vec![Value::from(*node_id), Value::from(boot_id.clone())]
                    })
                    .collect(),
            );
            let sql = format!(
                "WITH k(node_id, boot_id) AS ({source}) \
                 SELECT b.* FROM boot_anchor b \
                 JOIN k ON b.node_id = k.node_id AND b.boot_id = k.boot_id"
            );
            let rows = boot_anchor::Entity::find()
                .from_raw_sql(Statement::from_sql_and_values(backend, sql, values))
                .all(txn)
                .await?;
            for r in rows {
                by_boot.insert(
                    (r.node_id, r.boot_id),
                    AnchorState {
                        anchor: Anchor {
                            anchor_ms: r.anchor_ms,
                            source: AnchorSource::from_db(&r.source),
                        },
                        skew_ms: r.skew_ms,
                        updated_ms: r.updated_ms,
                        changed: false,
                    },
                );
            }
        }
        Ok(Anchors { by_boot })
    }

    /// Places a report of (node, boot) and keeps what it taught the anchor.
    pub(crate) fn place(
        &mut self,
        node_id: i64,
        boot_id: &str,
        t: &Telemetry,
        received_ms: i64,
        max_skew_ms: i64,
    ) -> Placement {
        let key = (node_id, boot_id.to_owned());
        let prior = self.by_boot.get(&key);
        let p = place(
            ClockReading {
                time_ms: sat(t.time_ms),
                uptime_ms: sat(t.uptime_ms),
                backfill: t.backfill,
                received_ms,
            },
            prior.map(|s| s.anchor),
            max_skew_ms,
        );
        if let Some(anchor) = p.anchor {
            let skew_ms = p.skew_ms.or(prior.and_then(|s| s.skew_ms));
            let updated_ms = prior.map_or(received_ms, |s| s.updated_ms.max(received_ms));
            let state = AnchorState {
                anchor,
                skew_ms,
                updated_ms,
                changed: true,
            };
            if prior.is_none_or(|s| {
                s.anchor != anchor || s.skew_ms != skew_ms || s.updated_ms != updated_ms
            }) {
                self.by_boot.insert(key, state);
            }
        }
        p
    }

    /// Writes the anchors this batch changed.
    pub(crate) async fn save(self, txn: &DatabaseTransaction) -> Result<(), StoreError> {
        let mut rows: Vec<boot_anchor::ActiveModel> = self
            .by_boot
            .into_iter()
            .filter(|(_, s)| s.changed)
            .map(|((node_id, boot_id), s)| boot_anchor::ActiveModel {
                node_id: Set(node_id),
                boot_id: Set(boot_id),
                anchor_ms: Set(s.anchor.anchor_ms),
                source: Set(s.anchor.source.as_str().to_owned()),
                skew_ms: Set(s.skew_ms),
                updated_ms: Set(s.updated_ms),
            })
            .collect();
        // In key order, so concurrent writers lock rows in the same order.
        rows.sort_by(|a, b| {
            (a.node_id.as_ref(), a.boot_id.as_ref()).cmp(&(b.node_id.as_ref(), b.boot_id.as_ref()))
        });
        // PostgreSQL: one statement of the same text whatever the number of
        // rows (see `crate::unnest`).
        if txn.get_database_backend() == DbBackend::Postgres
            && let Some(statement) = crate::unnest::insert_statement(
                &rows,
                "ON CONFLICT (node_id, boot_id) DO UPDATE SET anchor_ms = excluded.anchor_ms, \
                 source = excluded.source, skew_ms = excluded.skew_ms, \
                 updated_ms = excluded.updated_ms",
            )
        {
            txn.execute_raw(statement).await?;
            return Ok(());
        }
        for chunk in rows.chunks(4_000) {
            boot_anchor::Entity::insert_many(chunk.to_vec())
                .on_conflict(
                    OnConflict::columns([boot_anchor::Column::NodeId, boot_anchor::Column::BootId])
                        .update_columns([
                            boot_anchor::Column::AnchorMs,
                            boot_anchor::Column::Source,
                            boot_anchor::Column::SkewMs,
                            boot_anchor::Column::UpdatedMs,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
        }
        Ok(())
    }
}

/// A node's clock as the node detail shows it: the anchor of its latest
/// boot.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ClockStatus {
    /// The boot the anchor belongs to.
    pub boot_id: String,
    /// Whether the latest sample was placed at the router's own clock.
    pub clock_ok: bool,
    /// Router clock minus reception time of the latest live report, ms
    /// (positive: the router is ahead); `None` before any live report.
    pub skew_ms: Option<i64>,
    /// When the boot started (wall clock), as RFC 3339.
    #[serde(rename = "boot_anchor", with = "crate::time::rfc3339_ms")]
    pub anchor_ms: i64,
    /// `"clock"` or `"received"`: where the anchor was learned.
    pub anchor_source: String,
}

impl Store {
    /// The clock status of a node's boot, if an anchor is stored.
    pub(crate) async fn clock_status(
        &self,
        node_id: i64,
        boot_id: &str,
        clock_ok: bool,
    ) -> Result<Option<ClockStatus>, StoreError> {
        let row = boot_anchor::Entity::find()
            .filter(boot_anchor::Column::NodeId.eq(node_id))
            .filter(boot_anchor::Column::BootId.eq(boot_id))
            .limit(1)
            .one(&self.db)
            .await?;
        Ok(row.map(|r| ClockStatus {
            boot_id: r.boot_id,
            clock_ok,
            skew_ms: r.skew_ms,
            anchor_ms: r.anchor_ms,
            anchor_source: r.source,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_764_344_400_000;
    const SKEW: i64 = DEFAULT_MAX_SKEW_MS;

    fn live(time_ms: i64, uptime_ms: i64, received_ms: i64) -> ClockReading {
        ClockReading {
            time_ms,
            uptime_ms,
            backfill: false,
            received_ms,
        }
    }

    fn backfill(time_ms: i64, uptime_ms: i64, received_ms: i64) -> ClockReading {
        ClockReading {
            backfill: true,
            ..live(time_ms, uptime_ms, received_ms)
        }
    }

    fn clock(anchor_ms: i64) -> Option<Anchor> {
        Some(Anchor {
            anchor_ms,
            source: AnchorSource::Clock,
        })
    }

    fn received(anchor_ms: i64) -> Option<Anchor> {
        Some(Anchor {
            anchor_ms,
            source: AnchorSource::Received,
        })
    }

    #[test]
    fn live_good_clock_is_used_and_anchors() {
        let p = place(live(NOW - 2_000, 60_000, NOW), None, SKEW);
        assert_eq!(
            (p.t_ms, p.clock_ok, p.how),
            (NOW - 2_000, true, Placed::RouterClock)
        );
        assert_eq!(p.anchor, clock(NOW - 62_000));
        assert_eq!(p.skew_ms, Some(-2_000));
        // A good clock replaces an anchor learned from reception.
        let p = place(live(NOW, 60_000, NOW), received(NOW - 50_000), SKEW);
        assert_eq!(p.anchor, clock(NOW - 60_000));
    }

    #[test]
    fn live_bad_clock_is_flagged_and_placed_by_anchor() {
        // A 1970 router, first report of the boot: reception time.
        let p = place(live(60_000, 60_000, NOW), None, SKEW);
        assert_eq!(
            (p.t_ms, p.clock_ok, p.how),
            (NOW, false, Placed::BootAnchor)
        );
        assert_eq!(p.anchor, received(NOW - 60_000));
        assert_eq!(p.skew_ms, Some(60_000 - NOW));
        // The next one arrives late (10 s in a queue): placed by the anchor,
        // which keeps the earlier, closer estimate.
        let p = place(live(120_000, 120_000, NOW + 70_000), p.anchor, SKEW);
        assert_eq!(p.t_ms, NOW + 60_000);
        assert_eq!(p.anchor, received(NOW - 60_000));
        // A clock anchor is kept, not overwritten by reception times.
        let p = place(live(0, 180_000, NOW + 500_000), clock(NOW - 60_000), SKEW);
        assert_eq!((p.t_ms, p.anchor), (NOW + 120_000, clock(NOW - 60_000)));
        // Delivered late (queued in the broker) with a clock that agrees
        // with the clock anchor: its own time.
        let p = place(
            live(NOW - 600_000, 1_000_000, NOW),
            clock(NOW - 1_600_000),
            SKEW,
        );
        assert_eq!((p.t_ms, p.clock_ok, p.skew_ms), (NOW - 600_000, true, None));
        // ... but not without a clock anchor, nor when it disagrees.
        let p = place(
            live(NOW - 600_000, 1_000_000, NOW),
            received(NOW - 1_600_000),
            SKEW,
        );
        assert_eq!((p.t_ms, p.clock_ok), (NOW - 600_000, false));
        let p = place(
            live(NOW - 600_000, 1_000_000, NOW),
            clock(NOW - 3_600_000),
            SKEW,
        );
        assert_eq!((p.t_ms, p.clock_ok), (NOW - 2_600_000, false));
        // Plausible but far off (an RTC holding an old date) is bad too.
        let p = place(live(NOW - SKEW - 1, 1_000, NOW), None, SKEW);
        assert!(!p.clock_ok);
        let p = place(live(NOW + SKEW + 1, 1_000, NOW), None, SKEW);
        assert!(!p.clock_ok);
        // Exactly at the tolerance is still good.
        let p = place(live(NOW + SKEW, 1_000, NOW), None, SKEW);
        assert!(p.clock_ok);
    }

    #[test]
    fn backfill_rules() {
        // Good clock, no anchor: its own time, and it anchors the boot.
        let p = place(backfill(NOW - 3_600_000, 60_000, NOW), None, SKEW);
        assert_eq!((p.t_ms, p.clock_ok), (NOW - 3_600_000, true));
        assert_eq!(p.anchor, clock(NOW - 3_660_000));
        // Good clock agreeing with the anchor: own time, anchor unchanged.
        let p = place(
            backfill(NOW - 3_600_000, 60_000, NOW),
            clock(NOW - 3_661_000),
            SKEW,
        );
        assert_eq!((p.t_ms, p.clock_ok), (NOW - 3_600_000, true));
        assert_eq!(p.anchor, clock(NOW - 3_661_000));
        // 1970 clock from a boot with an anchor: anchor + uptime.
        let p = place(
            backfill(60_000, 60_000, NOW),
            received(NOW - 7_200_000),
            SKEW,
        );
        assert_eq!(
            (p.t_ms, p.clock_ok, p.how),
            (NOW - 7_140_000, false, Placed::BootAnchor)
        );
        // A plausible clock disagreeing with the anchor (RTC before NTP).
        let p = place(
            backfill(CLOCK_MIN_MS + 60_000, 60_000, NOW),
            clock(NOW - 7_200_000),
            SKEW,
        );
        assert_eq!((p.t_ms, p.clock_ok), (NOW - 7_140_000, false));
        // Reception time says nothing about a backfill: it never anchors.
        let p = place(backfill(60_000, 60_000, NOW), None, SKEW);
        assert_eq!(
            (p.t_ms, p.clock_ok, p.how, p.anchor),
            (NOW, false, Placed::Received, None)
        );
        // From the future.
        let p = place(backfill(NOW + SKEW + 1, 60_000, NOW), None, SKEW);
        assert!(!p.clock_ok);
        assert_eq!(p.skew_ms, None);
    }

    #[test]
    fn extremes_do_not_overflow() {
        for r in [
            live(i64::MAX, i64::MAX, i64::MIN),
            live(i64::MIN, i64::MAX, i64::MAX),
            backfill(i64::MAX, 0, i64::MIN),
            backfill(0, i64::MAX, i64::MAX),
        ] {
            for prior in [None, clock(i64::MIN), received(i64::MAX)] {
                let _ = place(r, prior, SKEW);
            }
        }
    }

    /// Random sequences of one boot's reports, property-checked.
    #[test]
    fn placement_properties() {
        use proptest::prelude::*;
        let report = (
            0i64..2_000_000,
            0i64..86_400_000,
            any::<bool>(),
            0i64..3,
            -600_000i64..600_000,
        );
        proptest!(ProptestConfig::with_cases(500), |(reports in proptest::collection::vec(report, 1..40))| {
            // A router booted at BOOT; its clock is 1970-based until NTP at
            // some point, then true; reception lags by 0..=30 s.
            const BOOT: i64 = 1_764_000_000_000;
            let mut anchor: Option<Anchor> = None;
            for (lag, uptime, backfill, clock_kind, _) in reports {
                let true_time = BOOT + uptime;
                let time_ms = match clock_kind {
                    0 => uptime,           // no RTC, no NTP yet
                    _ => true_time,        // NTP synchronised
                };
                let lag = lag % 30_001;
                // A backfill arrives long after; a live report after the lag.
                let received_ms = if backfill { true_time + 3_600_000 } else { true_time + lag };
                let r = ClockReading { time_ms, uptime_ms: uptime, backfill, received_ms };
                let p = place(r, anchor, SKEW);
                // Never in the future of its reception by more than the tolerance.
                prop_assert!(p.t_ms <= received_ms + SKEW);
                // A good clock is always trusted live; a bad one never.
                if !backfill {
                    prop_assert_eq!(p.clock_ok, clock_kind != 0);
                    prop_assert!(p.anchor.is_some());
                }
                if p.clock_ok {
                    prop_assert_eq!(p.t_ms, time_ms);
                }
                // Placed by an anchor: within the worst reception lag of the truth.
                if p.how == Placed::BootAnchor {
                    prop_assert!((p.t_ms - true_time).abs() <= 30_000, "{} vs {}", p.t_ms, true_time);
                }
                // A clock anchor is never replaced by a reception time.
                if anchor.is_some_and(|a| a.source == AnchorSource::Clock) {
                    prop_assert_eq!(p.anchor.map(|a| a.source), Some(AnchorSource::Clock));
                }
                anchor = p.anchor;
            }
        });
    }
}
