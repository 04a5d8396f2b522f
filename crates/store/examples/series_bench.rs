//! History series benchmark: N nodes × D days of 60-second samples stored,
//! rolled up by the real incremental reconcile, then the 30-day series of
//! one node as the API answers it (`Store::history`, which picks hourly
//! rollups for a 30-day range) against the baseline measured in the same
//! run: the same range read from the raw samples (`Store::series`).
//!
//! For each database it prints the dataset (nodes, samples, rows per table,
//! size on disk), the load time, the rollup catch-up time, and the median
//! and p95 latency over `MESHTABLE_BENCH_QUERIES` (default 50) queries on
//! random nodes. Figures, not assertions.
//!
//! What is stored: the raw samples of all D days are kept (no retention
//! run), so that the baseline can answer the same range; the default raw
//! retention (14 days) would keep 14 days raw beside the rollups, so this
//! is the larger, conservative store.
//!
//! Loading: the nodes are created through the real write path
//! (`Store::record_batch`); the raw samples (node metrics and one interface,
//! `eth0`, with rates as ingest derives them) are bulk-inserted hour by
//! hour, every node's minutes of that hour together, as ingest stores them
//! (ids ascend with time): multi-row `INSERT` statements on SQLite, `COPY`
//! on PostgreSQL. For the load, the raw tables' secondary indexes (and on
//! PostgreSQL their foreign keys) are dropped and rebuilt afterwards from
//! their own definitions, as a restore does; the load time includes the
//! rebuild. Then `Store::reconcile_rollups` catches up from nothing,
//! exactly as the controller's history job does on a backlog.
//!
//! ```text
//! cargo run --release -p meshtable-store --example series_bench
//! MESHTABLE_BENCH_NODES=100 MESHTABLE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --release -p meshtable-store --example series_bench
//! ```
//!
//! `MESHTABLE_BENCH_NODES` (default 1000) and `MESHTABLE_BENCH_DAYS`
//! (default 30) set the size; `MESHTABLE_BENCH_BACKENDS` (`sqlite,postgres`)
//! which backends run; `MESHTABLE_BENCH_DIR` where the SQLite file goes (a
//! temporary directory by default); `MESHTABLE_TEST_DATABASE_URL` the
//! PostgreSQL server (a fresh database is created and dropped afterwards).

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context;
use meshtable_proto::Status;
use meshtable_store::rollup::HOUR_MS;
use meshtable_store::{Content, HistoryPolicy, Incoming, Metric, Resolution, Store};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, Statement};

#[path = "../tests/common/pg_url.rs"]
mod pg_url;
use pg_url::with_database;

/// 2025-10-01T00:00:00Z.
const T0: i64 = 1_759_276_800_000;
const STEP_MS: i64 = 60_000;
/// Rows per INSERT statement (SQLite).
const ROWS_PER_STATEMENT: usize = 500;
const DAY_MS: i64 = 24 * HOUR_MS;

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Median and p95 (nearest rank), ms.
fn median_p95(mut v: Vec<Duration>) -> (f64, f64) {
    v.sort();
    let rank = (v.len() * 95).div_ceil(100).max(1);
    (ms(v[v.len() / 2]), ms(v[rank - 1]))
}

/// A deterministic pseudo-random number from two integers.
fn noise(a: u64, b: u64) -> u64 {
    let mut x = a.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ b.wrapping_mul(0xC2B2_AE3D_27D4_EB4F);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29)
}

#[derive(Clone, Copy)]
struct Size {
    nodes: u64,
    days: u64,
    queries: u64,
}

/// One generated sample, the values ingest would store for it.
struct Gen {
    id: i64,
    node_id: i64,
    k: u64,
    t: i64,
    uptime: i64,
    load1: f64,
    user: u64,
    idle: u64,
    mem_av: u64,
    /// `None` for the first sample of the boot.
    cpu_ratio: Option<f64>,
    rx_bytes: u64,
    tx_bytes: u64,
    rx_bps: Option<f64>,
    tx_bps: Option<f64>,
}

const MEM_TOTAL: u64 = 128 << 20;
const FS_SIZE: u64 = 16 << 20;
const FS_FREE: u64 = 8 << 20;

fn gen_sample(id: i64, n: u64, node_id: i64, k: u64) -> Gen {
    let t = T0 + k as i64 * STEP_MS;
    let r = noise(n, k);
    let busy = (r >> 8) % 1000;
    let first = k == 0;
    Gen {
        id,
        node_id,
        k,
        t,
        uptime: (k + 1) as i64 * STEP_MS,
        load1: (r % 400) as f64 / 100.0,
        user: k * 30 + busy,
        idle: k * 60,
        mem_av: (32u64 << 20) + (r >> 16) % (64 << 20),
        cpu_ratio: (!first).then(|| busy as f64 / 1000.0),
        rx_bytes: k * 10_000_000,
        tx_bytes: k * 2_000_000,
        // Rates as ingest derives them: delta × 8 / 60 s.
        rx_bps: (!first).then_some(((r >> 24) % 20_000_000) as f64),
        tx_bps: (!first).then_some(((r >> 40) % 5_000_000) as f64),
    }
}

const SAMPLE_COLUMNS: &str = "id, node_id, boot_id, seq, t_ms, time_ms, received_ms, clock_ok, \
     uptime_ms, load1, load5, load15, cpu_user, cpu_nice, cpu_system, cpu_idle, cpu_iowait, \
     cpu_irq, cpu_softirq, cpu_steal, mem_total, mem_available, rootfs_size, rootfs_free, \
     dropped, cpu_busy_ratio, interfaces";

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
        .query_all_raw(Statement::from_string(
            db.get_database_backend(),
            "SELECT id FROM node WHERE network = 'bench' ORDER BY node",
        ))
        .await?;
    rows.iter()
        .map(|r| r.try_get::<i64>("", "id").map_err(Into::into))
        .collect()
}

/// The samples of one hour: every node's minutes, node by node.
fn hour_samples(ids: &[i64], hour: u64, next_id: &mut i64) -> Vec<Gen> {
    let per_hour = (HOUR_MS / STEP_MS) as u64;
    let mut out = Vec::with_capacity(ids.len() * per_hour as usize);
    for (n, &node_id) in ids.iter().enumerate() {
        for i in 0..per_hour {
            out.push(gen_sample(*next_id, n as u64, node_id, hour * per_hour + i));
            *next_id += 1;
        }
    }
    out
}

fn opt(v: Option<f64>, null: &str) -> String {
    v.map_or_else(|| null.to_owned(), |v| format!("{v:?}"))
}

/// The sample's one interface, `eth0`, as `sample.interfaces` holds it.
fn interfaces(g: &Gen) -> String {
    format!(
        "[[\"eth0\",{},{},0,0,0,0,0,0,{},{}]]",
        g.rx_bytes,
        g.tx_bytes,
        opt(g.rx_bps, "null"),
        opt(g.tx_bps, "null"),
    )
}

/// The raw tables' secondary indexes (and, on PostgreSQL, foreign keys),
/// dropped for the bulk load and rebuilt after it from their own
/// definitions, as a restore does: a sorted build instead of one scattered
/// insert per row and index. The schema afterwards is the migrated one.
struct Deferred {
    /// Statements that rebuild what was dropped, in order.
    create: Vec<String>,
}

/// The raw tables the loader fills.
const RAW_TABLES: &str = "('sample')";

/// Drops the raw tables' secondary indexes (kept: primary keys and unique
/// constraints) and, on PostgreSQL, their foreign keys; on SQLite the
/// loader's connection stops enforcing foreign keys instead (the loaded
/// rows satisfy them by construction: every node exists). Returns how to
/// rebuild them.
async fn defer_constraints(db: &DatabaseConnection, sqlite: bool) -> anyhow::Result<Deferred> {
    let backend = db.get_database_backend();
    let mut create = Vec::new();
    let mut drop = Vec::new();
    if sqlite {
        db.execute_unprepared("PRAGMA foreign_keys = OFF").await?;
        // Indexes the schema created (constraint indexes have no SQL).
        let rows = db
            .query_all_raw(Statement::from_string(
                backend,
                format!(
                    "SELECT name, sql FROM sqlite_master WHERE type = 'index' \
                     AND tbl_name IN {RAW_TABLES} AND sql IS NOT NULL ORDER BY name"
                ),
            ))
            .await?;
        for r in rows {
            let name: String = r.try_get("", "name")?;
            drop.push(format!("DROP INDEX \"{name}\""));
            create.push(r.try_get("", "sql")?);
        }
    } else {
        let rows = db
            .query_all_raw(Statement::from_string(
                backend,
                format!(
                    "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = \
                     current_schema() AND tablename IN {RAW_TABLES} AND indexname NOT IN \
                     (SELECT conname FROM pg_constraint) ORDER BY indexname"
                ),
            ))
            .await?;
        for r in rows {
            let name: String = r.try_get("", "indexname")?;
            drop.push(format!("DROP INDEX \"{name}\""));
            create.push(r.try_get("", "indexdef")?);
        }
        let rows = db
            .query_all_raw(Statement::from_string(
                backend,
                format!(
                    "SELECT conrelid::regclass::text AS tbl, conname, \
                     pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE contype = 'f' \
                     AND conrelid::regclass::text IN {RAW_TABLES} ORDER BY conname"
                ),
            ))
            .await?;
        for r in rows {
            let table: String = r.try_get("", "tbl")?;
            let name: String = r.try_get("", "conname")?;
            let def: String = r.try_get("", "def")?;
            drop.push(format!("ALTER TABLE {table} DROP CONSTRAINT \"{name}\""));
            create.push(format!(
                "ALTER TABLE {table} ADD CONSTRAINT \"{name}\" {def}"
            ));
        }
    }
    for sql in &drop {
        db.execute_unprepared(sql).await?;
    }
    Ok(Deferred { create })
}

/// Rebuilds what [`defer_constraints`] dropped (PostgreSQL validates each
/// foreign key over all loaded rows as it adds it back).
async fn restore_constraints(
    db: &DatabaseConnection,
    sqlite: bool,
    deferred: &Deferred,
) -> anyhow::Result<()> {
    for sql in &deferred.create {
        if sqlite {
            db.execute_unprepared(sql).await?;
        } else {
            // The session setting in the same simple query as the build.
            db.execute_unprepared(&format!("SET maintenance_work_mem = '1GB'; {sql}"))
                .await?;
        }
    }
    if sqlite {
        db.execute_unprepared("PRAGMA foreign_keys = ON").await?;
    }
    Ok(())
}

/// SQLite: multi-row INSERTs, one transaction per day.
async fn load_sqlite(db: &DatabaseConnection, ids: &[i64], size: &Size) -> anyhow::Result<u64> {
    let mut next_id = 1;
    let mut total = 0;
    for day in 0..size.days {
        let txn = sea_orm::TransactionTrait::begin(db).await?;
        for hour in day * 24..(day + 1) * 24 {
            let gens = hour_samples(ids, hour, &mut next_id);
            for chunk in gens.chunks(ROWS_PER_STATEMENT) {
                let mut s = format!("INSERT INTO sample ({SAMPLE_COLUMNS}) VALUES ");
                for (j, g) in chunk.iter().enumerate() {
                    let sep = if j == 0 { "" } else { "," };
                    write!(
                        s,
                        "{sep}({},{},'boot',{},{},{},{},1,{},{:?},0.5,0.25,{},0,0,{},0,0,0,0,\
                         {MEM_TOTAL},{},{FS_SIZE},{FS_FREE},0,{},'{}')",
                        g.id,
                        g.node_id,
                        g.k,
                        g.t,
                        g.t,
                        g.t,
                        g.uptime,
                        g.load1,
                        g.user,
                        g.idle,
                        g.mem_av,
                        opt(g.cpu_ratio, "NULL"),
                        interfaces(g),
                    )?;
                }
                txn.execute_unprepared(&s).await?;
                total += chunk.len() as u64;
            }
        }
        txn.commit().await?;
    }
    Ok(total)
}

/// PostgreSQL: `COPY ... FROM STDIN`, one per hour and table.
async fn load_postgres(db: &DatabaseConnection, ids: &[i64], size: &Size) -> anyhow::Result<u64> {
    let pool = db.get_postgres_connection_pool();
    let mut conn = pool.acquire().await?;
    let mut next_id = 1;
    let mut total = 0;
    for hour in 0..size.days * 24 {
        let gens = hour_samples(ids, hour, &mut next_id);
        let mut s = String::with_capacity(gens.len() * 160);
        for g in &gens {
            writeln!(
                s,
                "{}\t{}\tboot\t{}\t{}\t{}\t{}\tt\t{}\t{:?}\t0.5\t0.25\t{}\t0\t0\t{}\t0\t0\t0\t0\t\
                 {MEM_TOTAL}\t{}\t{FS_SIZE}\t{FS_FREE}\t0\t{}\t{}",
                g.id,
                g.node_id,
                g.k,
                g.t,
                g.t,
                g.t,
                g.uptime,
                g.load1,
                g.user,
                g.idle,
                g.mem_av,
                opt(g.cpu_ratio, "\\N"),
                interfaces(g),
            )?;
        }
        let mut copy = conn
            .copy_in_raw(&format!("COPY sample ({SAMPLE_COLUMNS}) FROM STDIN"))
            .await?;
        copy.send(s.into_bytes()).await?;
        copy.finish().await?;
        total += gens.len() as u64;
    }
    drop(conn);
    // The serial goes on after the loaded ids.
    db.execute_unprepared(
        "SELECT setval(pg_get_serial_sequence('sample', 'id'), (SELECT max(id) FROM sample))",
    )
    .await?;
    Ok(total)
}

async fn count(db: &DatabaseConnection, sql: &str) -> anyhow::Result<i64> {
    let row = db
        .query_one_raw(Statement::from_string(db.get_database_backend(), sql))
        .await?
        .context("no row")?;
    Ok(row.try_get_by_index::<i64>(0)?)
}

fn file_size(p: &Path) -> u64 {
    std::fs::metadata(p).map_or(0, |m| m.len())
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / (1u64 << 30) as f64
}

/// Loads, rolls up and queries one database. `sqlite_file` names the
/// SQLite file (for its size on disk).
async fn bench(
    url: &str,
    backend: &str,
    size: &Size,
    sqlite_file: Option<&Path>,
) -> anyhow::Result<()> {
    let store = Store::connect(url).await.context("connect")?;
    // The loader's own connection (one, so a pragma sticks).
    let mut opts = ConnectOptions::new(url);
    opts.max_connections(1)
        .idle_timeout(None)
        .max_lifetime(None)
        .sqlx_logging(false);
    let db = Database::connect(opts).await?;
    if sqlite_file.is_some() {
        db.execute_unprepared("PRAGMA cache_size = -262144").await?;
    }

    let load = Instant::now();
    let ids = create_nodes(&store, &db, size.nodes).await?;
    let sqlite = sqlite_file.is_some();
    let deferred = defer_constraints(&db, sqlite).await?;
    let samples = if sqlite {
        load_sqlite(&db, &ids, size).await?
    } else {
        load_postgres(&db, &ids, size).await?
    };
    let build = Instant::now();
    restore_constraints(&db, sqlite, &deferred).await?;
    if !sqlite {
        db.execute_unprepared("ANALYZE").await?;
    }
    let build_time = build.elapsed();
    let load_time = load.elapsed();
    println!(
        "{backend}: load: {} nodes x {} days = {samples} samples (each with one interface) \
         in {:.1} s ({:.0} samples/s; of that {:.1} s rebuilding {} deferred indexes and \
         constraints)",
        size.nodes,
        size.days,
        load_time.as_secs_f64(),
        samples as f64 / load_time.as_secs_f64(),
        build_time.as_secs_f64(),
        deferred.create.len(),
    );

    let end = T0 + size.days as i64 * DAY_MS;
    // The history job's view a little after the last hour closed.
    let now = end + 5 * 60 * 1000;
    let rollup = Instant::now();
    let report = store
        .reconcile_rollups(now, &HistoryPolicy::default(), u32::MAX)
        .await?;
    let rollup_time = rollup.elapsed();
    anyhow::ensure!(!report.more, "reconcile did not catch up: {report:?}");
    anyhow::ensure!(report.watermark_ms == Some(end), "{report:?}");
    if sqlite_file.is_none() {
        db.execute_unprepared("ANALYZE").await?;
    }
    println!(
        "{backend}: rollup catch-up (Store::reconcile_rollups from nothing): {} hours, {} samples \
         read, {} rollup rows written in {:.1} s ({:.0} samples/s)",
        report.hours,
        report.samples,
        report.rows,
        rollup_time.as_secs_f64(),
        report.samples as f64 / rollup_time.as_secs_f64(),
    );

    let nodes = count(&db, "SELECT count(*) FROM node").await?;
    let n_samples = count(&db, "SELECT count(*) FROM sample").await?;
    let n_5m = count(&db, "SELECT count(*) FROM rollup WHERE res_s = 300").await?;
    let n_1h = count(&db, "SELECT count(*) FROM rollup WHERE res_s = 3600").await?;
    let disk = match sqlite_file {
        Some(f) => {
            db.execute_unprepared("PRAGMA wal_checkpoint(TRUNCATE)")
                .await?;
            let wal = f.with_extension("db-wal");
            file_size(f) + file_size(&wal)
        }
        None => u64::try_from(count(&db, "SELECT pg_database_size(current_database())").await?)?,
    };
    println!(
        "{backend}: dataset: {nodes} nodes; sample {n_samples} rows \
         (raw kept for all {} days), rollup {} rows (5-minute {n_5m}, hourly {n_1h}); \
         database on disk {:.2} GiB",
        size.days,
        n_5m + n_1h,
        gib(disk),
    );

    time_queries(&store, backend, size, end).await?;
    db.close().await?;
    store.close().await?;
    Ok(())
}

/// Times the 30-day rx_bps series of random nodes: as the API answers it,
/// and from the raw samples.
async fn time_queries(store: &Store, backend: &str, size: &Size, end: i64) -> anyhow::Result<()> {
    let from = end - 30 * DAY_MS;
    let to = end - 1;
    let metric = Metric::parse("rx_bps", Some("eth0"))?;
    let mut api = Vec::new();
    let mut raw = Vec::new();
    let (mut n_api, mut n_raw) = (0, 0);
    let mut resolution = None;
    for q in 0..size.queries {
        let node = format!("n{:05}", noise(q, 7) % size.nodes);
        let t = Instant::now();
        let s = store.history("bench", &node, &metric, from, to).await?;
        api.push(t.elapsed());
        resolution = Some(s.resolution);
        n_api = s.points.len();
        let t = Instant::now();
        let p = store.series("bench", &node, &metric, from, to).await?;
        raw.push(t.elapsed());
        n_raw = p.len();
    }
    anyhow::ensure!(resolution == Some(Resolution::Hourly), "{resolution:?}");
    let ((a50, a95), (r50, r95)) = (median_p95(api), median_p95(raw));
    println!(
        "{backend}: 30-day rx_bps series of one node, {} queries on random nodes: \
         Store::history (API, resolution 1h, {n_api} points with min/avg/max/p95) \
         median {a50:.2} ms, p95 {a95:.2} ms; baseline from raw samples (Store::series, \
         {n_raw} points) median {r50:.2} ms, p95 {r95:.2} ms; median {:.0}x faster (target < 50 ms)",
        size.queries,
        r50 / a50,
    );
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let size = Size {
        nodes: env_u64("MESHTABLE_BENCH_NODES", 1000),
        days: env_u64("MESHTABLE_BENCH_DAYS", 30),
        queries: env_u64("MESHTABLE_BENCH_QUERIES", 50).max(1),
    };
    let backends =
        std::env::var("MESHTABLE_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".to_owned());
    println!(
        "series bench: {} nodes x {} days of 60 s samples (node metrics + 1 interface), \
         {} cores",
        size.nodes,
        size.days,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    if backends.contains("sqlite") {
        let dir = match std::env::var("MESHTABLE_BENCH_DIR") {
            Ok(d) => tempfile::tempdir_in(d)?,
            Err(_) => tempfile::tempdir()?,
        };
        let file = dir.path().join("series.db");
        let url = format!("sqlite://{}", file.display());
        bench(&url, "sqlite", &size, Some(&file)).await?;
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
    let r = bench(&with_database(&admin_url, &name), "postgresql", &size, None).await;
    admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .await?;
    admin.close().await?;
    r
}
