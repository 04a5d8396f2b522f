//! The reconcile's catch-up step: rolls up a range of whole hours for every
//! node in one pass.
//!
//! The samples of the range are read with one statement (each row with its
//! interfaces), sorted in memory by node, series and time, and every
//! bucket's values
//! handed to [`stats`], the function that also computes buckets from raw
//! samples on read: a rollup row is the same whichever backend or path
//! computed it. The range's rows are deleted (normally there are none: the
//! range is past the watermark) and the 5-minute and hourly rows written grouped by node
//! and series (so each primary-key leaf is touched once per step), with one
//! statement per chunk: `INSERT ... SELECT FROM UNNEST` of one array per
//! column on PostgreSQL, a multi-row `VALUES` on SQLite.

use sea_orm::sea_query::{Expr, ExprTrait, Query};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait, QueryFilter,
    Statement, Value,
};

use super::{FIVE_MINUTES_MS, HOUR_MS, ROLLED_METRICS, floor_to, stats};
use crate::StoreError;
use crate::derive::used_ratio;
use crate::entity::{rollup, sample};
use crate::ifaces;

/// The node metrics, in the order of [`NodeRow::v`]: the rolled metrics
/// before the interface rates.
const NODE_METRICS: &[&str] = ROLLED_METRICS.split_at(6).0;
/// (bucket length ms, `res_s`).
const RESOLUTIONS: [(i64, i32); 2] = [(FIVE_MINUTES_MS, 300), (HOUR_MS, 3600)];

/// Rows per statement on SQLite: 10 bind parameters each, under SQLite's
/// limit of 32,766.
const SQLITE_ROWS_PER_STATEMENT: usize = 3_000;
/// Rows per statement on PostgreSQL (one array per column).
const PG_ROWS_PER_STATEMENT: usize = 50_000;

const COLUMNS: &str = "node_id, res_s, metric, interface, bucket_ms, n, v_min, v_avg, v_max, v_p95";

/// One sample's node metrics.
struct NodeRow {
    id: i64,
    node: i64,
    t: i64,
    v: [Option<f64>; NODE_METRICS.len()],
}

/// One interface of one sample.
struct IfaceRow {
    node: i64,
    name: String,
    t: i64,
    rx: Option<f64>,
    tx: Option<f64>,
}

/// One rollup row.
struct Row {
    node_id: i64,
    res_s: i32,
    metric: &'static str,
    interface: String,
    bucket_ms: i64,
    n: i64,
    min: f64,
    avg: f64,
    max: f64,
    p95: f64,
}

/// What [`roll_range`] did.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct Rolled {
    /// Samples read.
    pub samples: u64,
    /// Hours of the range that held samples.
    pub hours: u64,
    /// Rollup rows written.
    pub rows: u64,
}

/// Rolls up `[from, to)` (whole hours) for every node, replacing rows with
/// the same key. Runs inside the reconcile step's transaction.
pub(super) async fn roll_range(
    txn: &DatabaseTransaction,
    from: i64,
    to: i64,
) -> Result<Rolled, StoreError> {
    let backend = txn.get_database_backend();
    let s = |c: sample::Column| (sample::Entity, c);
    let q = Query::select()
        .columns([
            s(sample::Column::Id),
            s(sample::Column::NodeId),
            s(sample::Column::TMs),
            s(sample::Column::Load1),
            s(sample::Column::Load5),
            s(sample::Column::Load15),
            s(sample::Column::CpuBusyRatio),
            s(sample::Column::MemAvailable),
            s(sample::Column::MemTotal),
            s(sample::Column::RootfsFree),
            s(sample::Column::RootfsSize),
            s(sample::Column::Interfaces),
        ])
        .from(sample::Entity)
        .and_where(Expr::col(s(sample::Column::TMs)).gte(from))
        .and_where(Expr::col(s(sample::Column::TMs)).lt(to))
        .to_owned();
    let raw = txn.query_all(&q).await?;
    if raw.is_empty() {
        return Ok(Rolled::default());
    }
    let mut nodes: Vec<NodeRow> = Vec::with_capacity(raw.len());
    let mut ifaces = Vec::with_capacity(raw.len());
    let span_hours = usize::try_from((to - from) / HOUR_MS).unwrap_or(0);
    let mut hour_seen = vec![false; span_hours.max(1)];
    for r in &raw {
        let id: i64 = r.try_get_by_index(0)?;
        let node: i64 = r.try_get_by_index(1)?;
        let t: i64 = r.try_get_by_index(2)?;
        let json: String = r.try_get_by_index(11)?;
        for i in ifaces::decode(id, &json)? {
            ifaces.push(IfaceRow {
                node,
                t,
                name: i.name,
                rx: i.rx_bps,
                tx: i.tx_bps,
            });
        }
        if let Some(seen) = usize::try_from((t - from) / HOUR_MS)
            .ok()
            .and_then(|h| hour_seen.get_mut(h))
        {
            *seen = true;
        }
        let mem_av: i64 = r.try_get_by_index(7)?;
        let mem_tot: i64 = r.try_get_by_index(8)?;
        let fs_free: i64 = r.try_get_by_index(9)?;
        let fs_size: i64 = r.try_get_by_index(10)?;
        nodes.push(NodeRow {
            id,
            node,
            t,
            v: [
                Some(r.try_get_by_index(3)?),
                Some(r.try_get_by_index(4)?),
                Some(r.try_get_by_index(5)?),
                r.try_get_by_index(6)?,
                used_ratio(mem_av, mem_tot),
                used_ratio(fs_free, fs_size),
            ],
        });
    }
    drop(raw);
    nodes.sort_unstable_by_key(|r| (r.node, r.t, r.id));
    let mut rolled = Rolled {
        samples: nodes.len() as u64,
        hours: hour_seen.iter().filter(|s| **s).count() as u64,
        rows: 0,
    };

    ifaces.sort_unstable_by(|a, b| (a.node, &a.name, a.t).cmp(&(b.node, &b.name, b.t)));

    let mut rows = Vec::new();
    let mut scratch = Vec::new();
    let mut ifaces = ifaces.as_slice();
    for group in nodes.chunk_by(|a, b| a.node == b.node) {
        let node = group[0].node;
        // Every interface row comes with its sample's node row; skipping
        // any below this node keeps the two in step regardless.
        let skip = ifaces.partition_point(|r| r.node < node);
        ifaces = &ifaces[skip..];
        let mine = ifaces.partition_point(|r| r.node == node);
        let (own, rest) = ifaces.split_at(mine);
        ifaces = rest;
        for res in RESOLUTIONS {
            for (i, metric) in NODE_METRICS.iter().enumerate() {
                let key = Key {
                    node,
                    res,
                    metric,
                    iface: "",
                };
                roll(
                    &mut rows,
                    &mut scratch,
                    &key,
                    group.iter().map(|r| (r.t, r.v[i])),
                );
            }
            for series in own.chunk_by(|a, b| a.name == b.name) {
                let iface = series[0].name.as_str();
                let key = |metric| Key {
                    node,
                    res,
                    metric,
                    iface,
                };
                roll(
                    &mut rows,
                    &mut scratch,
                    &key("rx_bps"),
                    series.iter().map(|r| (r.t, r.rx)),
                );
                roll(
                    &mut rows,
                    &mut scratch,
                    &key("tx_bps"),
                    series.iter().map(|r| (r.t, r.tx)),
                );
            }
        }
    }
    // Nothing from the watermark on is rolled up yet; whatever is there is
    // replaced.
    rollup::Entity::delete_many()
        .filter(rollup::Column::BucketMs.gte(from))
        .filter(rollup::Column::BucketMs.lt(to))
        .exec(txn)
        .await?;
    rolled.rows = write(txn, backend, rows).await?;
    Ok(rolled)
}

/// The series a [`roll`] writes.
struct Key<'a> {
    node: i64,
    res: (i64, i32),
    metric: &'static str,
    iface: &'a str,
}

/// Appends the buckets of one series, given its points in time order.
fn roll(
    out: &mut Vec<Row>,
    scratch: &mut Vec<f64>,
    key: &Key<'_>,
    points: impl Iterator<Item = (i64, Option<f64>)>,
) {
    let (len, res_s) = key.res;
    let mut flush = |bucket: i64, values: &mut Vec<f64>| {
        if let Some(s) = stats(values) {
            out.push(Row {
                node_id: key.node,
                res_s,
                metric: key.metric,
                interface: key.iface.to_owned(),
                bucket_ms: bucket,
                n: i64::try_from(s.n).unwrap_or(i64::MAX),
                min: s.min,
                avg: s.avg,
                max: s.max,
                p95: s.p95,
            });
        }
        values.clear();
    };
    let mut current = None;
    for (t, v) in points {
        let bucket = floor_to(t, len);
        if current != Some(bucket) {
            if let Some(b) = current {
                flush(b, scratch);
            }
            current = Some(bucket);
        }
        if let Some(v) = v.filter(|v| v.is_finite()) {
            scratch.push(v);
        }
    }
    if let Some(b) = current {
        flush(b, scratch);
    }
}

/// Writes `rows`, replacing rows with the same key; returns how many.
async fn write(
    txn: &DatabaseTransaction,
    backend: DbBackend,
    rows: Vec<Row>,
) -> Result<u64, StoreError> {
    let total = rows.len() as u64;
    if backend == DbBackend::Postgres {
        for chunk in rows.chunks(PG_ROWS_PER_STATEMENT) {
            let sql = format!(
                "INSERT INTO rollup ({COLUMNS}) SELECT * FROM UNNEST($1::bigint[], \
                 $2::integer[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], \
                 $7::float8[], $8::float8[], $9::float8[], $10::float8[])"
            );
            let values = vec![
                Value::from(chunk.iter().map(|r| r.node_id).collect::<Vec<_>>()),
                Value::from(chunk.iter().map(|r| r.res_s).collect::<Vec<_>>()),
                Value::from(
                    chunk
                        .iter()
                        .map(|r| r.metric.to_owned())
                        .collect::<Vec<_>>(),
                ),
                Value::from(
                    chunk
                        .iter()
                        .map(|r| r.interface.clone())
                        .collect::<Vec<_>>(),
                ),
                Value::from(chunk.iter().map(|r| r.bucket_ms).collect::<Vec<_>>()),
                Value::from(chunk.iter().map(|r| r.n).collect::<Vec<_>>()),
                Value::from(chunk.iter().map(|r| r.min).collect::<Vec<_>>()),
                Value::from(chunk.iter().map(|r| r.avg).collect::<Vec<_>>()),
                Value::from(chunk.iter().map(|r| r.max).collect::<Vec<_>>()),
                Value::from(chunk.iter().map(|r| r.p95).collect::<Vec<_>>()),
            ];
            txn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?;
        }
        return Ok(total);
    }
    let mut full_sql = None;
    for chunk in rows.chunks(SQLITE_ROWS_PER_STATEMENT) {
        let build = |n: usize| {
            let one = "(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
            format!(
                "INSERT INTO rollup ({COLUMNS}) VALUES {}",
                vec![one; n].join(", ")
            )
        };
        // The same text for every full chunk: prepared once and cached.
        let sql = if chunk.len() == SQLITE_ROWS_PER_STATEMENT {
            full_sql
                .get_or_insert_with(|| build(SQLITE_ROWS_PER_STATEMENT))
                .clone()
        } else {
            build(chunk.len())
        };
        let mut values = Vec::with_capacity(chunk.len() * 10);
        for r in chunk {
            values.extend([
                Value::from(r.node_id),
                Value::from(r.res_s),
                Value::from(r.metric),
                Value::from(r.interface.as_str()),
                Value::from(r.bucket_ms),
                Value::from(r.n),
                Value::from(r.min),
                Value::from(r.avg),
                Value::from(r.max),
                Value::from(r.p95),
            ]);
        }
        txn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
    }
    Ok(total)
}
