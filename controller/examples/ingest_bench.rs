//! Ingest through the broker: committed reports per second beside the
//! ceiling, the rate at which a plain MQTT subscriber counts the same flow
//! in the same run. Run by `controller/bench/ingest.sh`, which builds the
//! release binaries, prepares the databases and runs this once per backend.
//!
//! 1. The broker alone: `meshtable-sim`'s flood publishes N distinct
//!    reports as fast as the broker acknowledges them, while a plain
//!    subscriber (QoS 1, acking at once) counts them, with the machine to
//!    themselves: rate = received / (last received − first publish).
//! 2. Controller: the release `meshtable` (external broker mode, its own
//!    share group and client id) ingests a flood of N other reports, while a
//!    plain subscriber counts the same flow: its rate is the ceiling.
//!    Committed = N / (moment the database holds all N samples − first
//!    publish), read by polling the database. The result line gives it as a
//!    share of the ceiling, and of the broker-alone rate of step 1: a
//!    stricter reference, since the ceiling's subscriber shares the machine
//!    with the controller, and is the slower the more CPU the controller
//!    takes.
//!
//! The broker drops messages for a subscriber that has more than
//! `max_queued_messages` (Mosquitto's default: 1000) waiting, so in step 2
//! the flood is gated: report `i` is published only once fewer than
//! `--window` reports are published and not yet committed (400 by default,
//! leaving room for other traffic on a shared broker). The controller's
//! figure is then what it sustains without losing anything; the broker-alone
//! rate is the broker's rate to a consumer that does no work.
//!
//! 3. CPU per report, from `/proc`: in step 2 the controller's and a local
//!    PostgreSQL server's (all `postgres` processes of the machine, so
//!    meaningful on an otherwise idle server); in both steps this
//!    process's (publisher, counting subscriber, database polls) and the
//!    broker's (`--broker-pid`). From them it prints what the broker and the
//!    bench alone would take at half the broker-alone rate: on a small
//!    machine they leave the controller too little for 50 % of it, whatever
//!    it does.
//!
//! ```text
//! ingest_bench --meshtable target/release/meshtable --database-url URL --network NET
//!     [--mqtt-url mqtt://127.0.0.1:1883] [--reports 100000] [--nodes 1000] [--window 400]
//!     [--broker-pid PID]
//! ```

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use meshtable_sim::flood::{self, CountConfig, FloodConfig};
use meshtable_store::Store;
use tokio::sync::{oneshot, watch};

/// How often step 2 reads the database's progress. Each read is a query
/// the database answers beside the controller's writes (on PostgreSQL some
/// 10 % of the server's statement time at 2 ms); 10 ms costs the figure at
/// most 0.2 % of a 5 s run.
const POLL: Duration = Duration::from_millis(10);

/// [`POLL`] for a gated flood, whose gate opens only as often as it polls:
/// a window of 400 every 2 ms lets up to 200,000 reports/s through.
const GATED_POLL: Duration = Duration::from_millis(2);

struct Args {
    meshtable: PathBuf,
    database_url: String,
    network: String,
    mqtt_url: String,
    reports: u64,
    nodes: u32,
    window: u64,
    label: String,
    broker_pid: Option<u32>,
}

fn args() -> anyhow::Result<Args> {
    let mut a = Args {
        meshtable: PathBuf::from("target/release/meshtable"),
        database_url: String::new(),
        network: String::new(),
        mqtt_url: "mqtt://127.0.0.1:1883".to_owned(),
        reports: 100_000,
        nodes: 1000,
        window: 400,
        label: String::new(),
        broker_pid: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--meshtable" => a.meshtable = PathBuf::from(value()?),
            "--database-url" => a.database_url = value()?,
            "--network" => a.network = value()?,
            "--mqtt-url" => a.mqtt_url = value()?,
            "--reports" => a.reports = value()?.parse()?,
            "--nodes" => a.nodes = value()?.parse()?,
            "--window" => a.window = value()?.parse()?,
            "--label" => a.label = value()?,
            "--broker-pid" => a.broker_pid = Some(value()?.parse()?),
            other => bail!("unknown argument {other}"),
        }
    }
    if a.database_url.is_empty() || a.network.is_empty() {
        bail!("--database-url and --network are required");
    }
    if a.label.is_empty() {
        a.label = a.database_url.split(':').next().unwrap_or("db").to_owned();
    }
    Ok(a)
}

fn suffix() -> String {
    format!("{:x}{:08x}", std::process::id(), rand_seed())
}

fn rand_seed() -> u32 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0)
}

/// User and system CPU time of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
        return 0.0;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After the command: state is field 3, utime 14 and stime 15 (1-based).
    let ticks = |i: usize| fields.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    let hz = 100.0;
    ticks(14).unwrap_or(0.0) / hz + ticks(15).unwrap_or(0.0) / hz
}

/// CPU seconds of every local PostgreSQL server process by pid (none when
/// the server runs elsewhere).
fn postgres_cpu() -> std::collections::HashMap<u32, f64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Default::default();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|c| c.trim() == "postgres")
        })
        .map(|pid| (pid, cpu_seconds(pid)))
        .collect()
}

/// CPU seconds the local PostgreSQL server spent between two
/// [`postgres_cpu`] readings (a process started between them counts whole).
fn postgres_cpu_since(before: &std::collections::HashMap<u32, f64>) -> f64 {
    postgres_cpu()
        .into_iter()
        .map(|(pid, cpu)| cpu - before.get(&pid).copied().unwrap_or(0.0))
        .sum()
}

/// CPU seconds of this process and of the broker (0 without its pid).
fn bench_and_broker_cpu(a: &Args) -> (f64, f64) {
    (
        cpu_seconds(std::process::id()),
        a.broker_pid.map_or(0.0, cpu_seconds),
    )
}

/// Microseconds of CPU per report.
fn per_report(seconds: f64, reports: u64) -> f64 {
    seconds * 1e6 / reports.max(1) as f64
}

/// The controller process; killed on drop.
struct Controller {
    child: Child,
    log: PathBuf,
}

impl Drop for Controller {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_controller(
    a: &Args,
    dir: &std::path::Path,
    client_id: &str,
    group: &str,
) -> anyhow::Result<Controller> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let log = dir.join("controller.log");
    let child = Command::new(&a.meshtable)
        .arg("serve")
        .args(["--mqtt-url", &a.mqtt_url])
        .args(["--database-url", &a.database_url])
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--mqtt-client-id", client_id])
        .args(["--mqtt-share-group", group])
        .args(["--data-dir", &dir.join("data").display().to_string()])
        .args(["--log", "info"])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()
        .with_context(|| format!("start {}", a.meshtable.display()))?;
    let mut c = Controller { child, log };
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(&c.log).unwrap_or_default();
        if text.contains("subscribed") {
            return Ok(c);
        }
        if let Some(status) = c.child.try_wait()? {
            bail!("controller exited ({status}):\n{text}");
        }
        if Instant::now() > deadline {
            bail!("controller did not subscribe within 60 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Removes the persistent session the controller left on the broker.
async fn purge_session(host: &str, port: u16, client_id: &str) {
    let mut o = rumqttc::MqttOptions::new(client_id, host, port);
    o.set_clean_session(true);
    let (client, mut el) = rumqttc::AsyncClient::new(o, 4);
    let _ = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match el.poll().await {
                Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_))) => {
                    let _ = client.try_disconnect();
                }
                Ok(rumqttc::Event::Outgoing(rumqttc::Outgoing::Disconnect)) | Err(_) => {
                    return;
                }
                Ok(_) => {}
            }
        }
    })
    .await;
}

fn count_config(host: &str, port: u16, network: &str, expect: u64) -> CountConfig {
    CountConfig {
        mqtt_host: host.to_owned(),
        mqtt_port: port,
        client_id: format!("meshtable-bench-count-{}", suffix()),
        filter: format!("meshtable/v1/{network}/+/telemetry"),
        expect,
        idle: Duration::from_secs(5),
    }
}

fn flood_config(host: &str, port: u16, network: &str, a: &Args, boot: &str) -> FloodConfig {
    FloodConfig {
        mqtt_host: host.to_owned(),
        mqtt_port: port,
        network: network.to_owned(),
        reports: a.reports,
        nodes: a.nodes,
        boot: boot.to_owned(),
        connections: flood::DEFAULT_CONNECTIONS,
        inflight: flood::DEFAULT_INFLIGHT,
        rate: None,
        gate: None,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let a = args()?;
    let (host, port) = meshtable_sim::parse_mqtt_url(&a.mqtt_url)?;
    let run = suffix();

    // 1. The broker alone: the flood and a plain subscriber, no controller.
    let alone_net = format!("bench-alone-{run}");
    let (ready_tx, ready_rx) = oneshot::channel();
    let (since_tx, since_rx) = watch::channel(None);
    let counter = tokio::spawn(flood::count(
        count_config(&host, port, &alone_net, a.reports),
        ready_tx,
        since_rx,
    ));
    ready_rx.await.context("broker-alone subscriber")?;
    let (bench0, broker0) = bench_and_broker_cpu(&a);
    since_tx.send_replace(Some(Instant::now()));
    let published = flood::flood(flood_config(&host, port, &alone_net, &a, "c")).await?;
    let alone = counter.await??;
    let (bench1, broker1) = bench_and_broker_cpu(&a);
    let alone_cpu = (
        per_report(bench1 - bench0, alone.received),
        per_report(broker1 - broker0, alone.received),
    );
    println!(
        "[{}] broker alone: published {} at {:.0}/s; plain subscriber received {} at {:.0}/s",
        a.label,
        published.acked,
        published.rate(),
        alone.received,
        alone.rate()
    );

    // 2. The controller.
    let dir = tempfile::tempdir()?;
    let client_id = format!("meshtable-bench-{run}");
    let group = format!("bench{run}");
    let controller = start_controller(&a, dir.path(), &client_id, &group)?;
    let pid = controller.child.id();
    let store = Store::connect(&a.database_url).await.context("connect")?;
    let base = store.last_sample_id().await?;
    let before = store.sample_count().await?;

    let (ready_tx, ready_rx) = oneshot::channel();
    let (since_tx, since_rx) = watch::channel(None);
    let counter = tokio::spawn(flood::count(
        count_config(&host, port, &a.network, a.reports),
        ready_tx,
        since_rx,
    ));
    ready_rx.await.context("subscriber")?;

    let (gate_tx, gate_rx) = watch::channel(if a.window == 0 { u64::MAX } else { a.window });
    let mut cfg = flood_config(&host, port, &a.network, &a, &format!("b{run}"));
    if a.window > 0 {
        cfg.gate = Some(gate_rx);
    }
    let cpu0 = cpu_seconds(pid);
    let (bench0, broker0) = bench_and_broker_cpu(&a);
    let pg0 = a.database_url.starts_with("postgres").then(postgres_cpu);
    let start = Instant::now();
    since_tx.send_replace(Some(start));
    let flood_task = tokio::spawn(flood::flood(cfg));

    // Poll the database: open the gate as samples commit; stop when all are in.
    let mut last_progress = Instant::now();
    let mut committed = 0u64;
    let done_at = loop {
        let id = store.last_sample_id().await?;
        let now_committed = u64::try_from(id - base).unwrap_or(0).min(a.reports);
        if now_committed > committed {
            committed = now_committed;
            last_progress = Instant::now();
        }
        if a.window > 0 {
            gate_tx.send_replace(committed + a.window);
        }
        if committed >= a.reports {
            let count = store.sample_count().await? - before;
            if count >= a.reports {
                break Some(Instant::now());
            }
        }
        if last_progress.elapsed() > Duration::from_secs(20) {
            break None;
        }
        tokio::time::sleep(if a.window > 0 { GATED_POLL } else { POLL }).await;
    };
    let cpu = cpu_seconds(pid) - cpu0;
    let (bench1, broker1) = bench_and_broker_cpu(&a);
    let pg_cpu = pg0.as_ref().map_or(0.0, postgres_cpu_since);
    if done_at.is_none() {
        // Lost at the broker: the gate will not open again.
        flood_task.abort();
    }
    let published = match flood_task.await {
        Ok(r) => r?,
        Err(_) => flood::FloodReport {
            acked: 0,
            elapsed: start.elapsed(),
        },
    };
    let ceiling = counter.await??;
    let count = store.sample_count().await? - before;
    let text = std::fs::read_to_string(&controller.log).unwrap_or_default();
    drop(controller);
    purge_session(&host, port, &client_id).await;
    let Some(done_at) = done_at else {
        bail!(
            "[{}] the controller committed {count} of {} reports and stopped making progress; log tail:\n{}",
            a.label,
            a.reports,
            text.lines().rev().take(20).collect::<Vec<_>>().join("\n")
        );
    };
    let secs = done_at.duration_since(start).as_secs_f64();
    let rate = count as f64 / secs;
    println!(
        "[{}] controller: {count} reports committed in {secs:.2} s = {rate:.0}/s \
         (published {} at {:.0}/s, gate window {}; the ceiling: the subscriber beside it received {} at {:.0}/s); \
         controller CPU {:.2} s = {:.0} us/report{}",
        a.label,
        published.acked,
        published.rate(),
        a.window,
        ceiling.received,
        ceiling.rate(),
        cpu,
        per_report(cpu, count),
        if pg_cpu > 0.0 {
            format!(
                ", local PostgreSQL server CPU {pg_cpu:.2} s = {:.0} us/report",
                per_report(pg_cpu, count)
            )
        } else {
            String::new()
        }
    );
    let (bench_us, broker_us) = (
        per_report(bench1 - bench0, count),
        per_report(broker1 - broker0, count),
    );
    if a.broker_pid.is_some() {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        let half = alone.rate() / 2.0;
        let need = half * (broker_us + bench_us) / 1e6;
        println!(
            "[{}] at half the broker-alone rate ({half:.0}/s) the broker and this bench \
             (publisher, counting subscriber, polls) would take {need:.2} of {cores} cores \
             ({broker_us:.1} + {bench_us:.1} us per report beside the controller; {:.1} + {:.1} \
             us with the broker alone), leaving {:.1} us per report for the controller and its \
             database; they took {:.1} us",
            a.label,
            alone_cpu.1,
            alone_cpu.0,
            (cores as f64 - need).max(0.0) / half * 1e6,
            per_report(cpu + pg_cpu, count),
        );
    }
    println!(
        "[{}] RESULT ceiling {:.0}/s  controller {:.0}/s  = {:.0} % of the ceiling \
         ({:.0} % of the {:.0}/s of the broker alone)",
        a.label,
        ceiling.rate(),
        rate,
        100.0 * rate / ceiling.rate(),
        100.0 * rate / alone.rate(),
        alone.rate()
    );
    Ok(())
}
