//! A 30-day series of one node with N nodes × D days of 60-second samples
//! stored, answered from the rollups (`Store::history`, hourly for 30 days),
//! against the baseline measured in the same run: the same 30-day query
//! answered from the raw samples (`Store::series`). Median of 9 runs each,
//! on SQLite and, when `MESHTABLE_TEST_DATABASE_URL` names a PostgreSQL
//! server, on PostgreSQL (a fresh database, dropped afterwards).
//!
//! Loading: the nodes are created through the real write path; the raw
//! samples (one interface, `eth0`, with rates as ingest derives them) are
//! bulk-inserted with multi-row statements, day by day; then the real
//! rollup reconcile (`Store::reconcile_rollups`) rolls up every hour. The
//! raw samples are kept for all D days (no retention run) so that the
//! baseline can answer the same query.
//!
//! ```text
//! cargo run --release -p meshtable-store --example series_bench
//! MESHTABLE_BENCH_NODES=100 MESHTABLE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --release -p meshtable-store --example series_bench
//! ```
//!
//! `MESHTABLE_BENCH_NODES` (default 1000) and `MESHTABLE_BENCH_DAYS`
//! (default 30) set the size; `MESHTABLE_BENCH_BACKENDS` (`sqlite,postgres`)
//! which backends run; `MESHTABLE_BENCH_EXISTING=URL` only times the
//! queries on a database an earlier run loaded.

use std::time::{Duration, Instant};

use anyhow::Context;
use meshtable_proto::Status;
use meshtable_store::rollup::HOUR_MS;
use meshtable_store::{Content, HistoryPolicy, Incoming, Metric, Resolution, Store};
use sea_orm::{ConnectionTrait, Database, DatabaseConnection};

#[path = "../tests/common/pg_url.rs"]
mod pg_url;
use pg_url::with_database;

/// 2025-10-01T00:00:00Z.
const T0: i64 = 1_759_276_800_000;
const STEP_MS: i64 = 60_000;
const RUNS: usize = 9;
/// Rows per INSERT statement.
const ROWS_PER_STATEMENT: usize = 500;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A deterministic pseudo-random number from a few integers.
fn noise(a: u64, b: u64) -> u64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29)
}

struct Size {
    nodes: u64,
    days: u64,
}

/// Creates the nodes through the write path; returns their ids in order.
async fn create_nodes(store: &Store, db: &DatabaseConnection, n: u64) -> anyhow::Result<Vec<i64>> {
    let names: Vec<String> = (0..n).map(|i| format!("n{i:05}")).collect();
    let items: Vec<Incoming<'_>> = names
        .iter()
        .map(|node| Incoming {
            network: "bench",
            node,
            content: Content::State(Status::Online),
            received_ms: T0,
        })
        .collect();
    for chunk in items.chunks(500) {
        store.record_batch(chunk).await?;
    }
    let rows = db
        .query_all_raw(sea_orm::Statement::from_string(
            db.get_database_backend(),
            "SELECT id FROM node WHERE network = 'bench' ORDER BY node",
        ))
        .await?;
    rows.iter()
        .map(|r| r.try_get::<i64>("", "id").map_err(Into::into))
        .collect()
}

/// Bulk-inserts the raw samples of every node, day by day.
async fn load_raw(db: &DatabaseConnection, ids: &[i64], size: &Size) -> anyhow::Result<u64> {
    let backend = db.get_database_backend();
    let per_day = (24 * HOUR_MS / STEP_MS) as u64;
    let mut next_id: i64 = 1;
    let mut total = 0u64;
    for day in 0..size.days {
        let txn = sea_orm::TransactionTrait::begin(db).await?;
        for (n, &node_id) in ids.iter().enumerate() {
            let mut samples = Vec::with_capacity(ROWS_PER_STATEMENT);
            let mut ifaces = Vec::with_capacity(ROWS_PER_STATEMENT);
            for i in 0..per_day {
                let k = day * per_day + i;
                let t = T0 + k as i64 * STEP_MS;
                let uptime = (k + 1) as i64 * STEP_MS;
                let r = noise(n as u64, k);
                let load1 = (r % 400) as f64 / 100.0;
                let busy = (r >> 8) % 1000;
                let (user, idle) = (k * 30 + busy, k * 60);
                let cpu_ratio = if k == 0 {
                    "NULL".to_owned()
                } else {
                    format!("{:?}", (busy as f64) / 1000.0)
                };
                let mem_av = (32u64 << 20) + (r >> 16) % (64 << 20);
                samples.push(format!(
                    "({next_id},{node_id},'boot',{k},{t},{t},{t},TRUE,{uptime},{load1:?},0.5,0.25,\
                     {user},0,0,{idle},0,0,0,0,{},{mem_av},{},{},0,{cpu_ratio})",
                    128u64 << 20,
                    16u64 << 20,
                    8u64 << 20,
                ));
                // Rates as ingest derives them: delta × 8 / 60 s.
                let rx_rate = (r >> 24) % 20_000_000;
                let tx_rate = (r >> 40) % 5_000_000;
                let (rx_bps, tx_bps) = if k == 0 {
                    ("NULL".to_owned(), "NULL".to_owned())
                } else {
                    (
                        format!("{:?}", rx_rate as f64),
                        format!("{:?}", tx_rate as f64),
                    )
                };
                ifaces.push(format!(
                    "({next_id},'eth0',{},{},0,0,0,0,0,0,{rx_bps},{tx_bps})",
                    k * 10_000_000,
                    k * 2_000_000
                ));
                next_id += 1;
                if samples.len() == ROWS_PER_STATEMENT || i + 1 == per_day {
                    let sql = format!(
                        "INSERT INTO sample (id, node_id, boot_id, seq, t_ms, time_ms, received_ms, \
                         clock_ok, uptime_ms, load1, load5, load15, cpu_user, cpu_nice, cpu_system, \
                         cpu_idle, cpu_iowait, cpu_irq, cpu_softirq, cpu_steal, mem_total, \
                         mem_available, rootfs_size, rootfs_free, dropped, cpu_busy_ratio) VALUES {}",
                        samples.join(",")
                    );
                    txn.execute_raw(sea_orm::Statement::from_string(backend, sql))
                        .await?;
                    let sql = format!(
                        "INSERT INTO interface_sample (sample_id, name, rx_bytes, tx_bytes, \
                         rx_packets, tx_packets, rx_errors, tx_errors, rx_dropped, tx_dropped, \
                         rx_bps, tx_bps) VALUES {}",
                        ifaces.join(",")
                    );
                    txn.execute_raw(sea_orm::Statement::from_string(backend, sql))
                        .await?;
                    total += samples.len() as u64;
                    samples.clear();
                    ifaces.clear();
                }
            }
        }
        txn.commit().await?;
    }
    Ok(total)
}

async fn bench(url: &str, backend: &str, size: &Size) -> anyhow::Result<()> {
    let store = Store::connect(url).await.context("connect")?;
    let db = Database::connect(url).await?;
    if std::env::var("MESHTABLE_BENCH_EXISTING").is_ok() {
        // Only the queries, on a database a run loaded before.
        let w = store.rollup_watermark().await?;
        println!(
            "{backend}: existing database, rollups up to hour {:?} of the run",
            w.map(|w| (w - T0) / HOUR_MS)
        );
        let end = T0 + size.days as i64 * 24 * HOUR_MS;
        time_queries(&store, backend, end).await?;
        db.close().await?;
        store.close().await?;
        return Ok(());
    }
    let load = Instant::now();
    let ids = create_nodes(&store, &db, size.nodes).await?;
    let samples = load_raw(&db, &ids, size).await?;
    let raw_time = load.elapsed();
    if backend == "postgresql" {
        db.execute_unprepared("ANALYZE").await?;
    }
    let end = T0 + size.days as i64 * 24 * HOUR_MS;
    let rollup = Instant::now();
    let report = store
        .reconcile_rollups(end + HOUR_MS, &HistoryPolicy::default(), u32::MAX)
        .await?;
    let rollup_time = rollup.elapsed();
    if backend == "postgresql" {
        db.execute_unprepared("ANALYZE").await?;
    }
    println!(
        "{backend}: loaded {} nodes x {} days = {samples} samples (+{samples} interface rows) in {:.1} s \
         ({:.0} samples/s); rollup reconcile: {} hours, {} rollup rows in {:.1} s ({:.0} samples/s)",
        size.nodes,
        size.days,
        raw_time.as_secs_f64(),
        samples as f64 / raw_time.as_secs_f64(),
        report.hours,
        report.rows,
        rollup_time.as_secs_f64(),
        report.samples as f64 / rollup_time.as_secs_f64(),
    );

    time_queries(&store, backend, end).await?;
    db.close().await?;
    store.close().await?;
    Ok(())
}

/// Times the 30-day series of the first node, from rollups and from raw.
async fn time_queries(store: &Store, backend: &str, end: i64) -> anyhow::Result<()> {
    let from = end - 30 * 24 * HOUR_MS;
    let to = end - 1;
    let node = "n00000";
    let metric = Metric::parse("rx_bps", Some("eth0"))?;
    let mut rollups = Vec::new();
    let mut raw = Vec::new();
    let (mut n_rollup, mut n_raw) = (0, 0);
    for _ in 0..RUNS {
        let t = Instant::now();
        let s = store.history("bench", node, &metric, from, to).await?;
        rollups.push(t.elapsed());
        anyhow::ensure!(s.resolution == Resolution::Hourly);
        n_rollup = s.points.len();
        let t = Instant::now();
        let p = store.series("bench", node, &metric, from, to).await?;
        raw.push(t.elapsed());
        n_raw = p.len();
    }
    let (a, b) = (median(rollups), median(raw));
    println!(
        "{backend}: 30-day rx_bps series of one node, median of {RUNS}: from rollups (1h) {:.2} ms \
         ({n_rollup} points, min/avg/max/p95); baseline from raw samples {:.2} ms ({n_raw} points); \
         {:.0}x",
        ms(a),
        ms(b),
        ms(b) / ms(a)
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let size = Size {
        nodes: env_u64("MESHTABLE_BENCH_NODES", 1000),
        days: env_u64("MESHTABLE_BENCH_DAYS", 30),
    };
    let backends =
        std::env::var("MESHTABLE_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".to_owned());
    println!(
        "series bench: {} nodes x {} days of 60 s samples (1 interface), target < 50 ms",
        size.nodes, size.days
    );
    if let Ok(url) = std::env::var("MESHTABLE_BENCH_EXISTING") {
        return bench(&url, "existing", &size).await;
    }
    if backends.contains("sqlite") {
        let dir = tempfile::tempdir()?;
        let url = format!("sqlite://{}/series.db", dir.path().display());
        bench(&url, "sqlite", &size).await?;
    }
    if !backends.contains("postgres") {
        return Ok(());
    }
    let Ok(admin_url) = std::env::var("MESHTABLE_TEST_DATABASE_URL") else {
        println!("postgresql skipped: MESHTABLE_TEST_DATABASE_URL not set");
        return Ok(());
    };
    let admin = Database::connect(admin_url.as_str()).await?;
    let name = format!("meshtable_series_{:016x}", rand::random::<u64>());
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await?;
    let r = bench(&with_database(&admin_url, &name), "postgresql", &size).await;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    admin.close().await?;
    r
}
