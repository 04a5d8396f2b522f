//! `meshtable-sim`: runs a simulated fleet against an MQTT broker and prints
//! a summary when it stops (Ctrl-C, or after `--duration`).

use std::io::IsTerminal;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use meshtable_sim::{DEFAULT_CHURN, SimConfig, Snapshot, parse_mqtt_url};
use tracing_subscriber::EnvFilter;

/// Simulates every router of a community mesh snapshot, each with its own
/// MQTT connection speaking the meshtable protocol.
#[derive(Debug, Parser)]
#[command(name = "meshtable-sim", version)]
struct Args {
    /// MQTT broker, mqtt://host:port
    #[arg(
        long,
        env = "MESHTABLE_SIM_MQTT_URL",
        default_value = "mqtt://127.0.0.1:1883"
    )]
    mqtt_url: String,
    /// meshtable network the routers report to [default: the snapshot name, or "sim"]
    #[arg(long, env = "MESHTABLE_SIM_NETWORK")]
    network: Option<String>,
    /// leipzig (279 nodes), bremen (891 nodes), or the path of a meshviewer.json
    #[arg(long, env = "MESHTABLE_SIM_SNAPSHOT", default_value = "leipzig")]
    snapshot: String,
    /// Telemetry interval (humantime: 10s, 500ms, 1m)
    #[arg(long, env = "MESHTABLE_SIM_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    interval: Duration,
    /// Probability per online router and interval that it goes down (0 = never)
    #[arg(long, env = "MESHTABLE_SIM_CHURN", default_value_t = DEFAULT_CHURN)]
    churn: f64,
    /// Seed for traffic habits, boot ids and churn
    #[arg(long, env = "MESHTABLE_SIM_SEED", default_value_t = 1)]
    seed: u64,
    /// Simulate only the first N nodes of the snapshot
    #[arg(long, env = "MESHTABLE_SIM_NODES")]
    nodes: Option<usize>,
    /// Grow the snapshot to N nodes, all online (copies get ids `<id>-r<k>`), for load tests
    #[arg(long, env = "MESHTABLE_SIM_FLEET_SIZE", value_name = "N")]
    fleet_size: Option<usize>,
    /// Stop after this long (humantime) instead of at Ctrl-C
    #[arg(long, env = "MESHTABLE_SIM_DURATION", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Flood mode: publish this many distinct telemetry reports as fast as
    /// the broker accepts them (QoS 1), print what the broker acknowledged and exit
    #[arg(long, value_name = "N")]
    flood: Option<u64>,
    /// Flood mode: distinct nodes the reports are spread over
    #[arg(long, value_name = "N", default_value_t = 1000)]
    flood_nodes: u32,
    /// Flood mode: boot id prefix (another prefix gives other reports)
    #[arg(long, value_name = "PREFIX", default_value = "flood")]
    flood_boot: String,
    /// Flood mode: publishing connections
    #[arg(long, value_name = "N", default_value_t = meshtable_sim::flood::DEFAULT_CONNECTIONS)]
    flood_connections: usize,
    /// Flood mode: at most this many reports per second [default: no limit]
    #[arg(long, value_name = "RATE")]
    flood_rate: Option<f64>,
    /// Log filter (RUST_LOG syntax) [default: RUST_LOG, else info]
    #[arg(long)]
    log: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = match &args.log {
        Some(f) => EnvFilter::try_new(f).context("invalid --log filter")?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    let (mqtt_host, mqtt_port) = parse_mqtt_url(&args.mqtt_url).context("--mqtt-url")?;
    if let Some(reports) = args.flood {
        let cfg = meshtable_sim::flood::FloodConfig {
            mqtt_host,
            mqtt_port,
            network: args.network.unwrap_or_else(|| "flood".to_owned()),
            reports,
            nodes: args.flood_nodes,
            boot: args.flood_boot,
            connections: args.flood_connections,
            inflight: meshtable_sim::flood::DEFAULT_INFLIGHT,
            rate: args.flood_rate,
            gate: None,
        };
        let r = meshtable_sim::flood::flood(cfg).await?;
        println!(
            "meshtable-sim flood: acked={} elapsed_ms={} rate={:.0}",
            r.acked,
            r.elapsed.as_millis(),
            r.rate()
        );
        return Ok(());
    }
    let mut snapshot = Snapshot::load(&args.snapshot).context("--snapshot")?;
    if let Some(n) = args.nodes {
        snapshot.truncate(n);
    }
    if let Some(n) = args.fleet_size {
        snapshot.replicate(n);
    }
    let network = args.network.unwrap_or_else(|| {
        if Snapshot::builtin(&args.snapshot).is_some() {
            args.snapshot.clone()
        } else {
            "sim".to_owned()
        }
    });
    let cfg = SimConfig {
        mqtt_host,
        mqtt_port,
        network,
        snapshot,
        interval: args.interval,
        churn: args.churn,
        seed: args.seed,
    };
    let duration = args.duration;
    let shutdown = async move {
        match duration {
            Some(d) => {
                tokio::select! {
                    () = tokio::time::sleep(d) => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            None => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    };
    let report = meshtable_sim::run(cfg, shutdown).await?;
    println!("meshtable-sim: {report}");
    Ok(())
}
