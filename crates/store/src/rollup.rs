//! History: 5-minute and hourly rollups, computed incrementally, and the
//! series reader that picks a resolution from the requested range.
//!
//! # Rollups
//!
//! Table `rollup`, one row per (node, resolution, metric, interface,
//! bucket): the number of values, their min, avg, max and p95 (nearest rank
//! of the sorted values; the avg sums the sorted values, so it is the same
//! whatever order the database returns them in). Every metric the series
//! API serves is rolled up ([`ROLLED_METRICS`]: load1/5/15, cpu busy ratio,
//! memory and rootfs used ratios, and per interface rx/tx bits per second),
//! from the stored samples' values; a sample without a value (the first of
//! a boot has no rate) adds nothing. A bucket holds the samples whose series
//! time `t_ms` is in `[start, start + length)`.
//!
//! # Reconcile
//!
//! [`Store::reconcile_rollups`] is an idempotent reconcile step, safe on any
//! number of controllers at once. Each step is one transaction that
//!
//! 1. locks the watermark row (`rollup_state`, `FOR UPDATE` on PostgreSQL;
//!    SQLite's write transaction excludes other writers): every hour before
//!    the watermark is rolled up;
//! 2. recomputes a bounded number of **dirty** (node, hour) pairs from their
//!    samples, replacing their 5-minute and hourly rows;
//! 3. rolls up the next closed hours from the first that has samples (an
//!    hour is closed [`HistoryPolicy::grace_ms`] after its end), for every
//!    node, and moves the watermark past them. Hours without samples are
//!    skipped by one indexed lookup, so the first run over old data does not
//!    walk empty years. A step covers one hour at first, then as many whole
//!    hours (up to 24) as hold about 150,000 samples at the rate the last
//!    step saw, so a backlog (a first run over imported history, a long
//!    outage) goes in few large steps while each still holds the write lock
//!    briefly; see `catchup` for how a step reads, groups and writes.
//!
//! The ingest write path marks a (node, hour) dirty in the transaction that
//! stores a sample placed before the watermark (a late or backfilled
//! report), reading the watermark `FOR SHARE`: a reconcile step and such a
//! batch never interleave, so after reconcile every rolled hour equals a
//! computation from scratch over the stored samples. Dirty hours older than
//! the raw retention are dropped (their samples are gone).
//!
//! # Reading
//!
//! [`Store::history`] picks the resolution from the span `to - from`
//! ([`Resolution::for_span`]): raw samples up to 6 hours, 5-minute buckets
//! up to 7 days, hourly beyond. Bucket points come from `rollup` for hours
//! before the watermark that are not dirty, and are computed the same way
//! from the samples for the rest (the hour in progress, dirty hours), so a
//! series is complete and exact whether or not the reconcile has caught up.
//! A bucket point's time is its start; every bucket that overlaps the range
//! is returned whole.

use std::collections::{BTreeMap, BTreeSet};

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::Set, ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, Order,
    QueryFilter, QueryOrder, QuerySelect,
};
use serde::{Deserialize, Serialize};

mod catchup;

use crate::derive::used_ratio;
use crate::entity::{node, rollup, rollup_dirty, rollup_state, sample};
use crate::ifaces;
use crate::write::clean;
use crate::{Metric, Store, StoreError};

/// One hour, ms: the reconcile's unit of work and the hourly bucket.
pub const HOUR_MS: i64 = 3_600_000;
/// Five minutes, ms.
pub const FIVE_MINUTES_MS: i64 = 300_000;
/// Longest span answered from raw samples.
pub const RAW_MAX_SPAN_MS: i64 = 6 * HOUR_MS;
/// Longest span answered from 5-minute buckets; longer ones are hourly.
pub const FIVE_MINUTE_MAX_SPAN_MS: i64 = 7 * 24 * HOUR_MS;
/// Default raw sample retention: 14 days.
pub const DEFAULT_RAW_RETENTION_MS: i64 = 14 * 24 * HOUR_MS;
/// Default rollup retention: 400 days.
pub const DEFAULT_ROLLUP_RETENTION_MS: i64 = 400 * 24 * HOUR_MS;
/// Default wait after an hour ends before it is rolled up.
pub const DEFAULT_GRACE_MS: i64 = 2 * 60 * 1000;

/// The metrics with rollups, as [`Metric::name`] gives them.
pub const ROLLED_METRICS: [&str; 8] = [
    "load1",
    "load5",
    "load15",
    "cpu_busy_ratio",
    "mem_used_ratio",
    "rootfs_used_ratio",
    "rx_bps",
    "tx_bps",
];

/// The watermark row's name.
const WATERMARK: &str = "rollup";
/// Dirty (node, hour) pairs recomputed per reconcile step.
const DIRTY_PER_STEP: u64 = 200;
/// Bind parameters per statement (see `batch`).
const MAX_PARAMS: usize = 30_000;
/// Samples a catch-up step aims to roll up in one transaction: enough that
/// a long backlog goes in few, large steps (each rollup index page is
/// touched once per step, not once per hour), few enough that a step holds
/// the write lock for a second or two.
const STEP_SAMPLES: u64 = 150_000;
/// Most hours one catch-up step covers.
const MAX_STEP_HOURS: i64 = 24;

/// Hours the next catch-up step covers, after `hours` hours with samples
/// held `samples` samples.
fn next_span(samples: u64, hours: i64) -> i64 {
    let per_hour = samples / u64::try_from(hours.max(1)).unwrap_or(1);
    let span = STEP_SAMPLES / per_hour.max(1);
    i64::try_from(span)
        .unwrap_or(MAX_STEP_HOURS)
        .clamp(1, MAX_STEP_HOURS)
}

/// How long history is kept and when an hour is rolled up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryPolicy {
    /// Raw samples older than this are deleted (once rolled up).
    pub raw_retention_ms: i64,
    /// Rollups older than this are deleted.
    pub rollup_retention_ms: i64,
    /// How long after an hour ends it is rolled up (late reports that
    /// arrive after that make it dirty, which costs a recompute).
    pub grace_ms: i64,
}

impl Default for HistoryPolicy {
    fn default() -> Self {
        HistoryPolicy {
            raw_retention_ms: DEFAULT_RAW_RETENTION_MS,
            rollup_retention_ms: DEFAULT_ROLLUP_RETENTION_MS,
            grace_ms: DEFAULT_GRACE_MS,
        }
    }
}

/// The resolution of a series.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Resolution {
    /// One point per stored sample.
    #[serde(rename = "raw")]
    Raw,
    /// 5-minute buckets.
    #[serde(rename = "5m")]
    FiveMinutes,
    /// Hourly buckets.
    #[serde(rename = "1h")]
    Hourly,
}

impl Resolution {
    /// The resolution for a range of `span_ms`: raw up to
    /// [`RAW_MAX_SPAN_MS`] (6 h), 5 minutes up to
    /// [`FIVE_MINUTE_MAX_SPAN_MS`] (7 days), hourly beyond.
    pub fn for_span(span_ms: i64) -> Resolution {
        if span_ms <= RAW_MAX_SPAN_MS {
            Resolution::Raw
        } else if span_ms <= FIVE_MINUTE_MAX_SPAN_MS {
            Resolution::FiveMinutes
        } else {
            Resolution::Hourly
        }
    }

    /// `"raw"`, `"5m"` or `"1h"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Resolution::Raw => "raw",
            Resolution::FiveMinutes => "5m",
            Resolution::Hourly => "1h",
        }
    }

    /// The bucket length, ms; `None` for raw.
    pub fn bucket_ms(self) -> Option<i64> {
        match self {
            Resolution::Raw => None,
            Resolution::FiveMinutes => Some(FIVE_MINUTES_MS),
            Resolution::Hourly => Some(HOUR_MS),
        }
    }

    fn res_s(self) -> Option<i32> {
        self.bucket_ms().map(|ms| (ms / 1000) as i32)
    }
}

/// One point of a [`Series`].
///
/// JSON: `{"t": <unix ms>, "v": <f64>}` for raw points; bucket points add
/// `"min"`, `"max"`, `"p95"` and `"n"` (values in the bucket), with `v` the
/// average and `t` the bucket's start.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct SeriesPoint {
    /// The sample time or the bucket's start, Unix ms.
    pub t: i64,
    /// The value, or the bucket's average.
    pub v: f64,
    /// The bucket's smallest value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The bucket's largest value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    /// The bucket's 95th percentile (nearest rank).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub p95: Option<f64>,
    /// How many values the bucket holds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<u64>,
}

/// A series and the resolution it was read at.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Series {
    /// The resolution used.
    pub resolution: Resolution,
    /// The points, by time.
    pub points: Vec<SeriesPoint>,
}

/// The statistics of one bucket.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Stats {
    /// Number of values.
    pub n: u64,
    /// Smallest.
    pub min: f64,
    /// Mean.
    pub avg: f64,
    /// Largest.
    pub max: f64,
    /// 95th percentile, nearest rank: the value at rank ⌈0.95 n⌉.
    pub p95: f64,
}

/// The statistics of some finite values; `None` when there are none. The
/// result does not depend on the values' order.
pub fn stats(values: &mut [f64]) -> Option<Stats> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    let sum: f64 = values.iter().sum();
    let rank = (n * 95).div_ceil(100).max(1);
    Some(Stats {
        n: n as u64,
        min: values[0],
        avg: sum / n as f64,
        max: values[n - 1],
        p95: values[rank - 1],
    })
}

/// What a reconcile run did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReconcileReport {
    /// Hours rolled up past the watermark.
    pub hours: u64,
    /// Dirty (node, hour) pairs recomputed.
    pub recomputed: u64,
    /// Dirty pairs dropped: older than the raw retention.
    pub dropped: u64,
    /// Samples read.
    pub samples: u64,
    /// Rollup rows written.
    pub rows: u64,
    /// The watermark afterwards (every hour before it is rolled up).
    pub watermark_ms: Option<i64>,
    /// Whether closed hours or dirty pairs remain (the run hit its step cap).
    pub more: bool,
}

/// `t` rounded down to a multiple of `len`.
pub(crate) fn floor_to(t: i64, len: i64) -> i64 {
    t.div_euclid(len).checked_mul(len).unwrap_or(t)
}

/// (node, res_s, metric, interface, bucket).
type Key = (i64, i32, &'static str, String, i64);

/// Values grouped by bucket.
#[derive(Default)]
struct Buckets {
    values: BTreeMap<Key, Vec<f64>>,
    samples: u64,
}

/// What to collect: resolutions (bucket length ms, res_s) and optionally
/// only one (metric, interface).
struct Want<'a> {
    resolutions: &'a [(i64, i32)],
    only: Option<(&'static str, &'a str)>,
}

const BOTH: [(i64, i32); 2] = [(FIVE_MINUTES_MS, 300), (HOUR_MS, 3600)];

impl Want<'_> {
    fn takes(&self, metric: &str, iface: &str) -> bool {
        self.only.is_none_or(|(m, i)| m == metric && i == iface)
    }
}

impl Buckets {
    fn push(
        &mut self,
        want: &Want<'_>,
        node: i64,
        t: i64,
        metric: &'static str,
        iface: &str,
        v: Option<f64>,
    ) {
        let Some(v) = v.filter(|v| v.is_finite()) else {
            return;
        };
        if !want.takes(metric, iface) {
            return;
        }
        for &(len, res_s) in want.resolutions {
            self.values
                .entry((node, res_s, metric, iface.to_owned(), floor_to(t, len)))
                .or_default()
                .push(v);
        }
    }

    /// Reads the samples with `from <= t_ms < to` (of one node, or all) and
    /// files their values.
    async fn collect<C: ConnectionTrait>(
        &mut self,
        db: &C,
        want: &Want<'_>,
        node_id: Option<i64>,
        from: i64,
        to: i64,
    ) -> Result<(), StoreError> {
        let scalar = want
            .only
            .is_none_or(|(m, _)| m != "rx_bps" && m != "tx_bps");
        if scalar {
            let mut q = sample::Entity::find()
                .select_only()
                .columns([
                    sample::Column::NodeId,
                    sample::Column::TMs,
                    sample::Column::Load1,
                    sample::Column::Load5,
                    sample::Column::Load15,
                    sample::Column::CpuBusyRatio,
                    sample::Column::MemAvailable,
                    sample::Column::MemTotal,
                    sample::Column::RootfsFree,
                    sample::Column::RootfsSize,
                ])
                .filter(sample::Column::TMs.gte(from))
                .filter(sample::Column::TMs.lt(to));
            if let Some(n) = node_id {
                q = q.filter(sample::Column::NodeId.eq(n));
            }
            type Row = (i64, i64, f64, f64, f64, Option<f64>, i64, i64, i64, i64);
            let rows: Vec<Row> = q.into_tuple().all(db).await?;
            self.samples += rows.len() as u64;
            for (node, t, l1, l5, l15, cpu, mem_av, mem_tot, fs_free, fs_size) in rows {
                self.push(want, node, t, "load1", "", Some(l1));
                self.push(want, node, t, "load5", "", Some(l5));
                self.push(want, node, t, "load15", "", Some(l15));
                self.push(want, node, t, "cpu_busy_ratio", "", cpu);
                self.push(
                    want,
                    node,
                    t,
                    "mem_used_ratio",
                    "",
                    used_ratio(mem_av, mem_tot),
                );
                self.push(
                    want,
                    node,
                    t,
                    "rootfs_used_ratio",
                    "",
                    used_ratio(fs_free, fs_size),
                );
            }
        }
        let iface = want
            .only
            .is_none_or(|(m, _)| m == "rx_bps" || m == "tx_bps");
        if iface {
            let mut q = sample::Entity::find()
                .select_only()
                .columns([
                    sample::Column::Id,
                    sample::Column::NodeId,
                    sample::Column::TMs,
                    sample::Column::Interfaces,
                ])
                .filter(sample::Column::TMs.gte(from))
                .filter(sample::Column::TMs.lt(to));
            if let Some(n) = node_id {
                q = q.filter(sample::Column::NodeId.eq(n));
            }
            let only = want.only.map(|(_, name)| clean(name));
            let rows: Vec<(i64, i64, i64, String)> = q.into_tuple().all(db).await?;
            for (id, node, t, json) in rows {
                for i in ifaces::decode(id, &json)? {
                    if only.as_ref().is_some_and(|o| *o != i.name) {
                        continue;
                    }
                    self.push(want, node, t, "rx_bps", &i.name, i.rx_bps);
                    self.push(want, node, t, "tx_bps", &i.name, i.tx_bps);
                }
            }
        }
        Ok(())
    }

    fn into_rows(self) -> Vec<rollup::ActiveModel> {
        self.values
            .into_iter()
            .filter_map(|((node_id, res_s, metric, interface, bucket_ms), mut v)| {
                let s = stats(&mut v)?;
                Some(rollup::ActiveModel {
                    node_id: Set(node_id),
                    res_s: Set(res_s),
                    metric: Set(metric.to_owned()),
                    interface: Set(interface),
                    bucket_ms: Set(bucket_ms),
                    n: Set(i64::try_from(s.n).unwrap_or(i64::MAX)),
                    v_min: Set(s.min),
                    v_avg: Set(s.avg),
                    v_max: Set(s.max),
                    v_p95: Set(Some(s.p95)),
                })
            })
            .collect()
    }

    fn into_points(self) -> Vec<SeriesPoint> {
        self.values
            .into_iter()
            .filter_map(|((.., bucket), mut v)| {
                let s = stats(&mut v)?;
                Some(bucket_point(bucket, s.n, s.min, s.avg, s.max, Some(s.p95)))
            })
            .collect()
    }
}

fn bucket_point(t: i64, n: u64, min: f64, avg: f64, max: f64, p95: Option<f64>) -> SeriesPoint {
    SeriesPoint {
        t,
        v: avg,
        min: Some(min),
        max: Some(max),
        p95,
        n: Some(n),
    }
}

/// Writes rollup rows, replacing rows with the same key.
async fn upsert(
    txn: &DatabaseTransaction,
    rows: Vec<rollup::ActiveModel>,
) -> Result<u64, StoreError> {
    let total = rows.len() as u64;
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        let chunk: Vec<_> = rows.by_ref().take(MAX_PARAMS / 10).collect();
        rollup::Entity::insert_many(chunk)
            .on_conflict(
                OnConflict::columns([
                    rollup::Column::NodeId,
                    rollup::Column::ResS,
                    rollup::Column::Metric,
                    rollup::Column::Interface,
                    rollup::Column::BucketMs,
                ])
                .update_columns([
                    rollup::Column::N,
                    rollup::Column::VMin,
                    rollup::Column::VAvg,
                    rollup::Column::VMax,
                    rollup::Column::VP95,
                ])
                .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    Ok(total)
}

/// Reads the watermark; `lock` takes it `FOR UPDATE` (PostgreSQL; SQLite's
/// write transaction is exclusive already).
async fn watermark<C: ConnectionTrait>(db: &C, lock: bool) -> Result<Option<i64>, StoreError> {
    let mut q = rollup_state::Entity::find()
        .select_only()
        .column(rollup_state::Column::WatermarkMs)
        .filter(rollup_state::Column::Name.eq(WATERMARK));
    if lock {
        q = q.lock_exclusive();
    }
    Ok(q.into_tuple::<Option<i64>>().one(db).await?.flatten())
}

/// Called by the ingest write path inside its transaction, with the
/// (node id, series time) of every sample it stores: marks dirty the
/// (node, hour) pairs before the watermark. Reads the watermark `FOR SHARE`
/// so that a reconcile step cannot roll an hour between this read and the
/// commit.
pub(crate) async fn mark_dirty(
    txn: &DatabaseTransaction,
    placed: &[(i64, i64)],
) -> Result<(), StoreError> {
    if placed.is_empty() {
        return Ok(());
    }
    let Some(w) = rollup_state::Entity::find()
        .select_only()
        .column(rollup_state::Column::WatermarkMs)
        .filter(rollup_state::Column::Name.eq(WATERMARK))
        .lock_shared()
        .into_tuple::<Option<i64>>()
        .one(txn)
        .await?
        .flatten()
    else {
        return Ok(());
    };
    let dirty: BTreeSet<(i64, i64)> = placed
        .iter()
        .filter(|(_, t)| *t < w)
        .map(|(node, t)| (*node, floor_to(*t, HOUR_MS)))
        .collect();
    if dirty.is_empty() {
        return Ok(());
    }
    tracing::debug!(pairs = dirty.len(), "late samples mark rolled hours dirty");
    let rows: Vec<rollup_dirty::ActiveModel> = dirty
        .into_iter()
        .map(|(node_id, bucket_ms)| rollup_dirty::ActiveModel {
            node_id: Set(node_id),
            bucket_ms: Set(bucket_ms),
        })
        .collect();
    for chunk in rows.chunks(MAX_PARAMS / 2) {
        rollup_dirty::Entity::insert_many(chunk.to_vec())
            .on_conflict_do_nothing()
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

impl Store {
    /// Runs up to `max_steps` reconcile steps at `now_ms` (see the module
    /// documentation); each step is one transaction handling up to 200 dirty
    /// (node, hour) pairs and one closed hour. Idempotent: once caught up,
    /// another run changes nothing.
    pub async fn reconcile_rollups(
        &self,
        now_ms: i64,
        policy: &HistoryPolicy,
        max_steps: u32,
    ) -> Result<ReconcileReport, StoreError> {
        let mut report = ReconcileReport::default();
        let closed_until = floor_to(now_ms.saturating_sub(policy.grace_ms), HOUR_MS);
        let raw_cutoff = now_ms.saturating_sub(policy.raw_retention_ms);
        // Hours per catch-up step: one at first, then as many as hold about
        // STEP_SAMPLES samples at the rate the last step saw.
        let mut span_hours: i64 = 1;
        for _ in 0..max_steps {
            let txn = self.begin_write().await?;
            let mut w = watermark(&txn, true).await?;
            let mut worked = false;

            // Dirty pairs first: they are stale now.
            let dirty: Vec<(i64, i64)> = rollup_dirty::Entity::find()
                .select_only()
                .columns([rollup_dirty::Column::NodeId, rollup_dirty::Column::BucketMs])
                .order_by(rollup_dirty::Column::BucketMs, Order::Asc)
                .order_by(rollup_dirty::Column::NodeId, Order::Asc)
                .limit(DIRTY_PER_STEP)
                .into_tuple()
                .all(&txn)
                .await?;
            for &(node_id, hour) in &dirty {
                worked = true;
                rollup_dirty::Entity::delete_many()
                    .filter(rollup_dirty::Column::NodeId.eq(node_id))
                    .filter(rollup_dirty::Column::BucketMs.eq(hour))
                    .exec(&txn)
                    .await?;
                if hour < floor_to(raw_cutoff, HOUR_MS) {
                    report.dropped += 1;
                    continue;
                }
                rollup::Entity::delete_many()
                    .filter(rollup::Column::NodeId.eq(node_id))
                    .filter(rollup::Column::BucketMs.gte(hour))
                    .filter(rollup::Column::BucketMs.lt(hour + HOUR_MS))
                    .exec(&txn)
                    .await?;
                let mut b = Buckets::default();
                let want = Want {
                    resolutions: &BOTH,
                    only: None,
                };
                b.collect(&txn, &want, Some(node_id), hour, hour + HOUR_MS)
                    .await?;
                report.samples += b.samples;
                report.rows += upsert(&txn, b.into_rows()).await?;
                report.recomputed += 1;
            }

            // The next closed hour with samples.
            if w.is_none() {
                let first: Option<i64> = sample::Entity::find()
                    .select_only()
                    .column(sample::Column::TMs)
                    .order_by(sample::Column::TMs, Order::Asc)
                    .limit(1)
                    .into_tuple()
                    .one(&txn)
                    .await?;
                w = first.map(|t| floor_to(t, HOUR_MS).min(closed_until));
            }
            let before = w;
            if let Some(from) = w
                && from < closed_until
            {
                worked = true;
                let next: Option<i64> = sample::Entity::find()
                    .select_only()
                    .column(sample::Column::TMs)
                    .filter(sample::Column::TMs.gte(from))
                    .order_by(sample::Column::TMs, Order::Asc)
                    .limit(1)
                    .into_tuple()
                    .one(&txn)
                    .await?;
                match next.map(|t| floor_to(t, HOUR_MS)) {
                    Some(hour) if hour < closed_until => {
                        let to = hour
                            .saturating_add(span_hours.saturating_mul(HOUR_MS))
                            .min(closed_until);
                        let r = catchup::roll_range(&txn, hour, to).await?;
                        report.samples += r.samples;
                        report.rows += r.rows;
                        report.hours += r.hours;
                        // The rate of the hours that held samples: a gap does not
                        // make the next step larger.
                        span_hours = next_span(r.samples, i64::try_from(r.hours).unwrap_or(1));
                        w = Some(to);
                    }
                    _ => w = Some(closed_until),
                }
            }
            if w != before || before.is_none() {
                rollup_state::Entity::update_many()
                    .col_expr(rollup_state::Column::WatermarkMs, Expr::val(w))
                    .filter(rollup_state::Column::Name.eq(WATERMARK))
                    .exec(&txn)
                    .await?;
            }
            txn.commit().await?;
            report.watermark_ms = w;
            if !worked {
                report.more = false;
                return Ok(report);
            }
            report.more = true;
        }
        // The cap was hit: is anything left?
        let left_dirty = rollup_dirty::Entity::find().one(&self.db).await?.is_some();
        report.more = left_dirty || report.watermark_ms.is_some_and(|w| w < closed_until);
        Ok(report)
    }

    /// The rollup watermark: every hour before it is rolled up; `None`
    /// before the first reconcile that found samples.
    pub async fn rollup_watermark(&self) -> Result<Option<i64>, StoreError> {
        watermark(&self.db, false).await
    }

    /// A series of one metric of one node over `from_ms..=to_ms`, at the
    /// resolution [`Resolution::for_span`] picks for the span.
    pub async fn history(
        &self,
        network: &str,
        node: &str,
        metric: &Metric,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Series, StoreError> {
        let resolution = Resolution::for_span(to_ms.saturating_sub(from_ms));
        self.history_at(network, node, metric, from_ms, to_ms, resolution)
            .await
    }

    /// A series at a given resolution (see [`Store::history`]).
    pub async fn history_at(
        &self,
        network: &str,
        node: &str,
        metric: &Metric,
        from_ms: i64,
        to_ms: i64,
        resolution: Resolution,
    ) -> Result<Series, StoreError> {
        let (Some(len), Some(res_s)) = (resolution.bucket_ms(), resolution.res_s()) else {
            let points = self
                .series(network, node, metric, from_ms, to_ms)
                .await?
                .into_iter()
                .map(|p| SeriesPoint {
                    t: p.t,
                    v: p.v,
                    min: None,
                    max: None,
                    p95: None,
                    n: None,
                })
                .collect();
            return Ok(Series { resolution, points });
        };
        let mut points = Vec::new();
        let Some(node_id) = node::Entity::find()
            .select_only()
            .column(node::Column::Id)
            .filter(node::Column::Network.eq(clean(network)))
            .filter(node::Column::Node.eq(clean(node)))
            .into_tuple::<i64>()
            .one(&self.db)
            .await?
        else {
            return Ok(Series { resolution, points });
        };
        let first = floor_to(from_ms, len);
        let end = floor_to(to_ms, len).saturating_add(len);
        let iface = clean(metric.interface().unwrap_or(""));
        let name = metric.name();

        // Hours whose rollups are missing or stale: after the watermark,
        // and dirty ones.
        let w = watermark(&self.db, false).await?.unwrap_or(i64::MIN);
        let dirty: Vec<i64> = rollup_dirty::Entity::find()
            .select_only()
            .column(rollup_dirty::Column::BucketMs)
            .filter(rollup_dirty::Column::NodeId.eq(node_id))
            .filter(rollup_dirty::Column::BucketMs.gte(floor_to(first, HOUR_MS)))
            .filter(rollup_dirty::Column::BucketMs.lt(end))
            .into_tuple()
            .all(&self.db)
            .await?;
        let fresh = |bucket: i64| bucket < w && !dirty.contains(&floor_to(bucket, HOUR_MS));

        type RollupRow = (i64, i64, f64, f64, f64, Option<f64>);
        let rows: Vec<RollupRow> = rollup::Entity::find()
            .select_only()
            .columns([
                rollup::Column::BucketMs,
                rollup::Column::N,
                rollup::Column::VMin,
                rollup::Column::VAvg,
                rollup::Column::VMax,
                rollup::Column::VP95,
            ])
            .filter(rollup::Column::NodeId.eq(node_id))
            .filter(rollup::Column::ResS.eq(res_s))
            .filter(rollup::Column::Metric.eq(name))
            .filter(rollup::Column::Interface.eq(iface.as_str()))
            .filter(rollup::Column::BucketMs.gte(first))
            .filter(rollup::Column::BucketMs.lt(end.min(w)))
            .order_by(rollup::Column::BucketMs, Order::Asc)
            .into_tuple()
            .all(&self.db)
            .await?;
        points.extend(
            rows.into_iter()
                .filter(|r| fresh(r.0))
                .map(|(t, n, min, avg, max, p95)| {
                    bucket_point(t, u64::try_from(n).unwrap_or(0), min, avg, max, p95)
                }),
        );

        // The rest from the samples: the dirty hours, and from the
        // watermark on.
        let mut ranges: Vec<(i64, i64)> = dirty
            .iter()
            .filter(|&&h| h < w)
            .map(|&h| (h.max(first), (h + HOUR_MS).min(end)))
            .collect();
        if end > w {
            ranges.push((first.max(w), end));
        }
        let resolutions = [(len, res_s)];
        let want = Want {
            resolutions: &resolutions,
            only: Some((name, &iface)),
        };
        for (a, b) in ranges {
            let mut buckets = Buckets::default();
            buckets
                .collect(&self.db, &want, Some(node_id), a, b)
                .await?;
            points.extend(buckets.into_points());
        }
        points.sort_by_key(|p| p.t);
        Ok(Series { resolution, points })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolution_thresholds() {
        assert_eq!(Resolution::for_span(0), Resolution::Raw);
        assert_eq!(Resolution::for_span(RAW_MAX_SPAN_MS), Resolution::Raw);
        assert_eq!(
            Resolution::for_span(RAW_MAX_SPAN_MS + 1),
            Resolution::FiveMinutes
        );
        assert_eq!(
            Resolution::for_span(FIVE_MINUTE_MAX_SPAN_MS),
            Resolution::FiveMinutes
        );
        assert_eq!(
            Resolution::for_span(FIVE_MINUTE_MAX_SPAN_MS + 1),
            Resolution::Hourly
        );
        assert_eq!(Resolution::for_span(31 * 24 * HOUR_MS), Resolution::Hourly);
        assert_eq!(
            serde_json::to_string(&Resolution::FiveMinutes).unwrap(),
            "\"5m\""
        );
    }

    #[test]
    fn bucket_stats() {
        assert_eq!(stats(&mut []), None);
        let s = stats(&mut [3.0]).unwrap();
        assert_eq!((s.n, s.min, s.avg, s.max, s.p95), (1, 3.0, 3.0, 3.0, 3.0));
        // 1..=100: p95 is the 95th value.
        let mut v: Vec<f64> = (1..=100).rev().map(f64::from).collect();
        let s = stats(&mut v).unwrap();
        assert_eq!(
            (s.n, s.min, s.avg, s.max, s.p95),
            (100, 1.0, 50.5, 100.0, 95.0)
        );
        // 1..=20: rank ceil(19) = 19.
        let mut v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(stats(&mut v).unwrap().p95, 19.0);
        // Order never changes the result, not even the float sum.
        let mut a = vec![0.1, 1e16, 0.2, -1e16, 0.3];
        let mut b = vec![-1e16, 0.3, 0.2, 1e16, 0.1];
        assert_eq!(stats(&mut a), stats(&mut b));
    }

    #[test]
    fn catch_up_step_size() {
        // 1,000 nodes at 60 s: 60,000 samples an hour, two hours a step.
        assert_eq!(next_span(60_000, 1), 2);
        assert_eq!(next_span(120_000, 2), 2);
        // 10,000 nodes: one hour, never less.
        assert_eq!(next_span(600_000, 1), 1);
        // A small fleet: a day, never more.
        assert_eq!(next_span(120, 1), MAX_STEP_HOURS);
        assert_eq!(next_span(0, 0), MAX_STEP_HOURS);
    }

    #[test]
    fn flooring() {
        assert_eq!(floor_to(3_599_999, HOUR_MS), 0);
        assert_eq!(floor_to(3_600_000, HOUR_MS), HOUR_MS);
        assert_eq!(floor_to(-1, HOUR_MS), -HOUR_MS);
        assert_eq!(floor_to(i64::MIN, HOUR_MS), i64::MIN);
        assert_eq!(floor_to(299_999, FIVE_MINUTES_MS), 0);
    }
}
