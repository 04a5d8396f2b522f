//! Committed telemetry reports per second, recorded one by one (one
//! transaction each, as ingest did) and in batches (`Store::record_batch`),
//! on SQLite and, when `MESHTABLE_TEST_DATABASE_URL` names a PostgreSQL
//! server, on PostgreSQL. Each figure is the median of 3 runs, each on a
//! fresh database.
//!
//! ```text
//! cargo run --release -p meshtable-store --example batch_bench
//! MESHTABLE_TEST_DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \
//!     cargo run --release -p meshtable-store --example batch_bench
//! ```

use std::time::Instant;

use anyhow::Context;
use meshtable_proto::{InterfaceCounters, Telemetry, examples};
use meshtable_store::{Incoming, Outcome, Store};
use sea_orm::{ConnectionTrait, Database};

#[path = "../tests/common/pg_url.rs"]
mod pg_url;
use pg_url::with_database;

/// 2025-11-24T16:00:00Z.
const T0: i64 = 1_764_000_000_000;
const NODES: u64 = 200;
const REPORTS_PER_NODE: u64 = 10;
const RUNS: usize = 3;

/// Reports of every node, interleaved as they would arrive: round by round.
fn reports() -> Vec<(String, Telemetry, i64)> {
    let mut out = Vec::new();
    for seq in 0..REPORTS_PER_NODE {
        for n in 0..NODES {
            let node = format!("{n:012x}");
            let t = Telemetry {
                node: node.clone(),
                boot_id: format!("boot-{n}"),
                seq,
                uptime_ms: 60_000 * (seq + 1),
                time_ms: T0 as u64 + 60_000 * seq,
                interfaces: ["br-client", "eth0", "wlan0"]
                    .iter()
                    .enumerate()
                    .map(|(i, name)| InterfaceCounters {
                        name: (*name).to_owned(),
                        rx_bytes: 1_000_000 * seq * (i as u64 + 1),
                        tx_bytes: 300_000 * seq,
                        ..InterfaceCounters::default()
                    })
                    .collect(),
                ..examples::telemetry_v1()
            };
            let received = T0 + 60_000 * seq as i64 + n as i64;
            out.push((node, t, received));
        }
    }
    out
}

/// Records every report in batches of `batch` and returns reports/s.
async fn run(url: &str, batch: usize, reports: &[(String, Telemetry, i64)]) -> anyhow::Result<f64> {
    let store = Store::connect(url).await.context("connect")?;
    let items: Vec<Incoming<'_>> = reports
        .iter()
        .map(|(node, t, received)| Incoming {
            network: "bench",
            node,
            content: meshtable_store::Content::Telemetry(t),
            received_ms: *received,
        })
        .collect();
    let start = Instant::now();
    let mut inserted = 0;
    for chunk in items.chunks(batch) {
        inserted += store
            .record_batch(chunk)
            .await?
            .iter()
            .filter(|o| **o == Outcome::Inserted)
            .count();
    }
    let secs = start.elapsed().as_secs_f64();
    anyhow::ensure!(inserted == reports.len(), "inserted {inserted}");
    store.close().await?;
    Ok(reports.len() as f64 / secs)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let reports = reports();
    let batches = [1, 20, 100, 500];
    println!(
        "{} telemetry reports ({NODES} nodes x {REPORTS_PER_NODE}, 3 interfaces each), median of {RUNS} runs",
        reports.len()
    );
    println!(
        "{:<10} {:>6} {:>12} {:>8}",
        "backend", "batch", "reports/s", "speedup"
    );

    let dir = tempfile::tempdir()?;
    let mut base = None;
    for batch in batches {
        let mut rates = Vec::new();
        for run_no in 0..RUNS {
            let url = format!("sqlite://{}/b{batch}-{run_no}.db", dir.path().display());
            rates.push(run(&url, batch, &reports).await?);
        }
        let m = median(rates);
        let b = *base.get_or_insert(m);
        println!("{:<10} {batch:>6} {m:>12.0} {:>7.1}x", "sqlite", m / b);
    }

    let Ok(admin_url) = std::env::var("MESHTABLE_TEST_DATABASE_URL") else {
        println!("postgresql skipped: MESHTABLE_TEST_DATABASE_URL not set");
        return Ok(());
    };
    let admin = Database::connect(admin_url.as_str()).await?;
    let mut base = None;
    for batch in batches {
        let mut rates = Vec::new();
        for _ in 0..RUNS {
            let name = format!("meshtable_bench_{:016x}", rand::random::<u64>());
            admin
                .execute_unprepared(&format!("CREATE DATABASE {name}"))
                .await?;
            let url = with_database(&admin_url, &name);
            let r = run(&url, batch, &reports).await;
            admin
                .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await?;
            rates.push(r?);
        }
        let m = median(rates);
        let b = *base.get_or_insert(m);
        println!("{:<10} {batch:>6} {m:>12.0} {:>7.1}x", "postgresql", m / b);
    }
    admin.close().await?;
    Ok(())
}
