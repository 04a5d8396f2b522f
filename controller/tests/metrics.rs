//! `/metrics` fleet aggregates, in-process on a real store (SQLite in a temp
//! dir; PostgreSQL too when `MESHTABLE_TEST_DATABASE_URL` is set): the network
//! and site aggregates equal what the store says node by node, the per-node
//! series stay under their cap and count what they leave out, and the scrape
//! passes `promtool check metrics`.

use std::collections::BTreeMap;
use std::io::Write;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail, ensure};
use meshtable::fleet_metrics::PerNode;
use meshtable::metrics::{Metrics, fleet_snapshot};
use meshtable_proto::{
    Clients, Hello, InterfaceInfo, InterfaceKind, MeshProtocol, Neighbour, Status, Telemetry,
    examples,
};
use meshtable_store::liveness::{FlapPolicy, MaintenanceTarget, NewMaintenance};
use meshtable_store::{NodeStatus, Store};

const MIN: i64 = 60_000;

fn now_ms() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock after 1970")
            .as_millis(),
    )
    .expect("ms fit i64")
}

/// Every store this run can reach: SQLite, and PostgreSQL when configured,
/// with the guard that drops the PostgreSQL database again (keep it until
/// the stores are done). Networks get a random suffix.
async fn stores(dir: &tempfile::TempDir) -> Result<(Vec<Store>, Option<PgDatabase>)> {
    let mut out = vec![
        Store::connect(&format!("sqlite://{}/m.db", dir.path().display()))
            .await
            .context("sqlite")?,
    ];
    let mut guard = None;
    if let Ok(url) = std::env::var("MESHTABLE_TEST_DATABASE_URL") {
        let db = PgDatabase::create(&url).await?;
        out.push(Store::connect(&db.url).await.context("postgres")?);
        guard = Some(db);
    } else {
        eprintln!("metrics tests: MESHTABLE_TEST_DATABASE_URL not set, PostgreSQL variant skipped");
    }
    Ok((out, guard))
}

/// A new, empty PostgreSQL database (`meshtable_m_<random>`) on the server
/// of an admin URL, dropped (`WITH (FORCE)`, through `psql`) when this is
/// dropped: after the test, and when it fails or panics too.
struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    async fn create(admin_url: &str) -> Result<PgDatabase> {
        use sea_orm::ConnectionTrait;
        let name = format!("meshtable_m_{:016x}", rand::random::<u64>());
        let admin = sea_orm::Database::connect(admin_url)
            .await
            .context("postgres admin")?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .context("create test database")?;
        admin.close().await?;
        let mut url = url::Url::parse(admin_url)?;
        url.set_path(&format!("/{name}"));
        Ok(PgDatabase {
            admin_url: admin_url.to_owned(),
            name,
            url: url.to_string(),
        })
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Synchronous (Drop cannot await) and independent of the runtime,
        // which may be shutting down when a test panics.
        let sql = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name);
        let out = Command::new("psql")
            .args([
                "-X",
                "-q",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                &self.admin_url,
                "-c",
                &sql,
            ])
            .stdin(Stdio::null())
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: cannot drop test database {}: {}",
                self.name,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!(
                "warning: cannot drop test database {} (psql: {e})",
                self.name
            ),
        }
    }
}

fn unique(prefix: &str) -> String {
    format!("{prefix}-{:08x}", rand::random::<u32>())
}

fn hello(node: &str) -> Hello {
    Hello {
        agent_version: "test".to_owned(),
        hostname: node.to_owned(),
        interval_ms: 60_000,
        interfaces: vec![InterfaceInfo {
            name: "mesh0".to_owned(),
            mac: Some(format!("02:00:00:00:00:{:02x}", node.as_bytes()[0])),
            mtu: 1500,
            addresses: vec![],
            kind: InterfaceKind::Ethernet,
        }],
        ..Hello::default()
    }
}

/// Report `seq` of `node`: counters grow with `seq` (times `k`), so the
/// second report has rates.
fn report(node: &str, seq: u64, k: u64, clients: u32, dropped: u64, to: Option<&str>) -> Telemetry {
    let mut t = examples::telemetry_v1();
    t.node = node.to_owned();
    t.boot_id = format!("boot-{node}");
    t.seq = seq;
    t.uptime_ms = 1_000 + seq * 60_000;
    t.time_ms = u64::try_from(now_ms() - 2 * MIN + i64::try_from(seq).unwrap() * MIN).unwrap();
    t.dropped = dropped;
    t.load = [0.25 * k as f32, 0.0, 0.0];
    for i in &mut t.interfaces {
        i.rx_bytes = 1_000 + seq * k * 7_500;
        i.tx_bytes = 2_000 + seq * k * 1_500;
    }
    t.clients = Some(Clients {
        total: clients,
        ..Clients::default()
    });
    t.neighbours = to
        .map(|peer| Neighbour {
            protocol: MeshProtocol::BatmanAdv,
            ifname: "mesh0".to_owned(),
            address: format!("02:00:00:00:00:{:02x}", peer.as_bytes()[0]),
            tq: Some(200),
            best: true,
            ..Neighbour::default()
        })
        .into_iter()
        .collect();
    t
}

/// A scrape as `(series with labels, value)`.
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (k, v) = l.rsplit_once(' ')?;
            Some((k.to_owned(), v.parse().ok()?))
        })
        .collect()
}

fn get(m: &BTreeMap<String, f64>, series: &str) -> Result<f64> {
    m.get(series)
        .copied()
        .with_context(|| format!("no series {series}"))
}

fn promtool_check(text: &str) -> Result<()> {
    let mut child = match Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => bail!("cannot run promtool ({e}): apt-get install -y prometheus"),
    };
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(text.as_bytes())?;
    let out = child.wait_with_output()?;
    ensure!(
        out.status.success(),
        "promtool check metrics failed: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Nodes a, b (site village), c (in maintenance), d (offline, flapping);
/// a reports an up link to b, c a link that went down.
async fn populate(store: &Store, net: &str) -> Result<i64> {
    meshtable::enroll::add_network(store, net, true)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let now = now_ms();
    let plan = [
        ("a", 1, 3, 0, Some("b")),
        ("b", 2, 5, 4, None),
        ("c", 3, 0, 0, Some("a")),
        ("d", 4, 1, 9, None),
    ];
    for (node, k, clients, dropped, to) in plan {
        store
            .record_hello(net, node, &hello(node), now - 3 * MIN)
            .await?;
        // c reported its link long ago; the sweep below takes it down.
        let at = if node == "c" {
            now - 30 * MIN
        } else {
            now - MIN
        };
        for seq in 0..2 {
            store
                .record_telemetry(net, node, &report(node, seq, k, clients, dropped, to), at)
                .await?;
        }
    }
    store.sweep_links(now - 10 * MIN, 3, MIN).await?;
    // d flaps, then stays offline.
    for (i, s) in [
        Status::Offline,
        Status::Online,
        Status::Offline,
        Status::Online,
        Status::Offline,
    ]
    .into_iter()
    .enumerate()
    {
        store
            .record_state(net, "d", s, now - 20_000 + i64::try_from(i)? * 1_000)
            .await?;
    }
    store.reconcile_flapping(now, FlapPolicy::default()).await?;
    store
        .create_site(net, "village", "Village", None, now)
        .await?;
    store.create_site(net, "empty", "Empty", None, now).await?;
    store.assign_site(net, "a", Some("village")).await?;
    store.assign_site(net, "b", Some("village")).await?;
    store
        .create_maintenance(
            net,
            &NewMaintenance {
                target: MaintenanceTarget::Node("c".to_owned()),
                start_ms: now - MIN,
                end_ms: now + 60 * MIN,
                reason: None,
            },
            now,
        )
        .await?;
    Ok(now)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregates_match_the_store() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (stores, _pg) = stores(&dir).await?;
    for store in stores {
        let backend = format!("{:?}", store.backend());
        let net = unique("agg");
        let now = populate(&store, &net).await?;
        let metrics = Metrics::new()?.with_per_node(PerNode {
            enabled: true,
            max_series: 10_000,
        });
        let text = metrics.render(Some(&fleet_snapshot(&store).await?))?;
        promtool_check(&text).with_context(|| backend.clone())?;
        let m = parse(&text);

        // What the store says, node by node.
        let live = store.liveness(&net, now).await?;
        ensure!(live.len() == 4, "{backend}: {live:?}");
        let mut rx = BTreeMap::<Option<String>, f64>::new();
        let mut tx = BTreeMap::<Option<String>, f64>::new();
        let mut dropped = 0u64;
        for l in &live {
            let d = store.node_detail(&net, &l.node).await?.context("detail")?;
            let latest = d.latest.context("latest sample")?;
            let up = u8::from(l.status == NodeStatus::Online);
            let lbl = format!("{{network=\"{net}\",node=\"{}\"}}", l.node);
            ensure!(get(&m, &format!("meshtable_node_up{lbl}"))? == f64::from(up));
            ensure!(get(&m, &format!("meshtable_node_load1{lbl}"))? == latest.load[0]);
            let (r, t) = latest
                .interfaces
                .iter()
                .filter(|i| i.counters.name != "lo")
                .fold((0.0, 0.0), |(r, t), i| {
                    (r + i.rx_bps.unwrap_or(0.0), t + i.tx_bps.unwrap_or(0.0))
                });
            ensure!(r > 0.0 && t > 0.0, "{backend}: rates of {}", l.node);
            let node_rx = get(&m, &format!("meshtable_node_receive_bytes_per_second{lbl}"))?;
            ensure!(
                (node_rx - r / 8.0).abs() < 1e-6,
                "{backend}: {node_rx} != {r} / 8"
            );
            *rx.entry(l.site.clone()).or_default() += r;
            *tx.entry(l.site.clone()).or_default() += t;
            dropped += latest.dropped;
        }
        let count = |f: &dyn Fn(&meshtable_store::liveness::NodeLiveness) -> bool| {
            live.iter().filter(|l| f(l)).count() as f64
        };
        let n = |s: &str| format!("{{network=\"{net}\"{s}}}");
        ensure!(
            get(&m, &format!("meshtable_nodes{}", n(",status=\"online\"")))?
                == count(&|l| l.status == NodeStatus::Online)
        );
        ensure!(get(&m, &format!("meshtable_nodes{}", n(",status=\"offline\"")))? == 1.0);
        ensure!(
            get(&m, &format!("meshtable_network_nodes_flapping{}", n("")))?
                == count(&|l| l.flapping_since_ms.is_some())
        );
        ensure!(
            count(&|l| l.flapping_since_ms.is_some()) == 1.0,
            "{backend}: d flaps"
        );
        ensure!(
            get(
                &m,
                &format!("meshtable_network_nodes_in_maintenance{}", n(""))
            )? == count(&|l| l.in_maintenance)
        );
        ensure!(count(&|l| l.in_maintenance) == 1.0);
        ensure!(get(&m, &format!("meshtable_network_clients{}", n("")))? == 9.0);
        let all_rx: f64 = rx.values().sum::<f64>() / 8.0;
        let all_tx: f64 = tx.values().sum::<f64>() / 8.0;
        ensure!(
            (get(
                &m,
                &format!("meshtable_network_receive_bytes_per_second{}", n(""))
            )? - all_rx)
                .abs()
                < 1e-6
        );
        ensure!(
            (get(
                &m,
                &format!("meshtable_network_transmit_bytes_per_second{}", n(""))
            )? - all_tx)
                .abs()
                < 1e-6
        );
        ensure!(
            get(
                &m,
                &format!("meshtable_agent_reports_dropped_total{}", n(""))
            )? == dropped as f64
        );
        // Links: the store's topology, every link with its state.
        let graph = store.topology(&net, true).await?.context("graph")?;
        let up = graph.links.iter().filter(|l| l.up).count() as f64;
        let down = graph.links.iter().filter(|l| !l.up).count() as f64;
        ensure!((up, down) == (1.0, 1.0), "{backend}: {:?}", graph.links);
        ensure!(
            get(
                &m,
                &format!("meshtable_network_links{}", n(",state=\"up\""))
            )? == up
        );
        ensure!(
            get(
                &m,
                &format!("meshtable_network_links{}", n(",state=\"down\""))
            )? == down
        );

        // The village: a and b, both online, a's link up.
        let v = |s: &str| format!("{{network=\"{net}\",site=\"village\"{s}}}");
        let village = Some("village".to_owned());
        ensure!(
            get(
                &m,
                &format!("meshtable_site_nodes{}", v(",status=\"online\""))
            )? == 2.0
        );
        ensure!(
            get(
                &m,
                &format!("meshtable_site_nodes{}", v(",status=\"offline\""))
            )? == 0.0
        );
        ensure!(get(&m, &format!("meshtable_site_clients{}", v("")))? == 8.0);
        ensure!(
            (get(
                &m,
                &format!("meshtable_site_receive_bytes_per_second{}", v(""))
            )? - rx[&village] / 8.0)
                .abs()
                < 1e-6
        );
        ensure!(
            (get(
                &m,
                &format!("meshtable_site_transmit_bytes_per_second{}", v(""))
            )? - tx[&village] / 8.0)
                .abs()
                < 1e-6
        );
        ensure!(get(&m, &format!("meshtable_site_links{}", v(",state=\"up\"")))? == 1.0);
        ensure!(
            get(
                &m,
                &format!("meshtable_site_agent_reports_dropped_total{}", v(""))
            )? == 4.0
        );
        // An empty site shows zeros.
        let e = format!("{{network=\"{net}\",site=\"empty\",status=\"online\"}}");
        ensure!(get(&m, &format!("meshtable_site_nodes{e}"))? == 0.0);
        ensure!(get(&m, "meshtable_metrics_node_series_capped")? == 0.0);
        store.close().await?;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_node_series_are_off_by_default_and_capped() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (stores, _pg) = stores(&dir).await?;
    for store in stores {
        let net = unique("cap");
        populate(&store, &net).await?;
        let fleet = fleet_snapshot(&store).await?;
        let per_node = |text: &str| {
            parse(text)
                .into_iter()
                .filter(|(k, _)| k.starts_with("meshtable_node_") && k.contains(&net))
                .count()
        };

        // Off by default: no per-node series at all.
        let text = Metrics::new()?.render(Some(&fleet))?;
        ensure!(per_node(&text) == 0 && !text.contains("meshtable_node_up"));
        ensure!(get(&parse(&text), "meshtable_metrics_node_series")? == 0.0);

        // Uncapped, every node has up, load1, rx, tx and clients: 5 each.
        // Other networks in a shared database add their own series.
        let all = Metrics::new()?
            .with_per_node(PerNode {
                enabled: true,
                max_series: usize::MAX,
            })
            .render(Some(&fleet))?;
        ensure!(per_node(&all) == 20, "{all}");
        let total = get(&parse(&all), "meshtable_metrics_node_series")?;

        // A cap of 12 keeps whole nodes only, the rest counted.
        let text = Metrics::new()?
            .with_per_node(PerNode {
                enabled: true,
                max_series: 12,
            })
            .render(Some(&fleet))?;
        promtool_check(&text)?;
        let m = parse(&text);
        let emitted = m
            .keys()
            .filter(|k| k.starts_with("meshtable_node_"))
            .count() as f64;
        ensure!(emitted <= 12.0 && emitted == get(&m, "meshtable_metrics_node_series")?);
        ensure!(get(&m, "meshtable_metrics_node_series_capped")? == total - emitted);
        ensure!(total - emitted >= 8.0, "{total} {emitted}");
        // The aggregates do not depend on the cap.
        ensure!(
            get(
                &m,
                &format!("meshtable_network_clients{{network=\"{net}\"}}")
            )? == 9.0
        );
        store.close().await?;
    }
    Ok(())
}
