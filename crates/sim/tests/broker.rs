//! The simulator against a real MQTT broker (Mosquitto here): set
//! `MESHTABLE_TEST_MQTT_URL=mqtt://127.0.0.1:1883`. Without it the tests print
//! a skip line and pass.
//!
//! Each test uses its own network name, observes it with an MQTT subscriber
//! like the controller does, and clears the retained messages it caused.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail, ensure};
use meshtable_proto::{Hello, Kind, Report, State, Status, Telemetry, Topic};
use meshtable_sim::{SimConfig, SimReport, Snapshot, parse_mqtt_url};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

fn broker(test: &str) -> Option<(String, u16)> {
    match std::env::var("MESHTABLE_TEST_MQTT_URL") {
        Ok(url) if !url.is_empty() => Some(parse_mqtt_url(&url).expect("MESHTABLE_TEST_MQTT_URL")),
        _ => {
            // Straight to stderr, past the test harness's capture, so the skip shows.
            let _ = writeln!(
                std::io::stderr(),
                "skip {test}: MESHTABLE_TEST_MQTT_URL is not set (e.g. mqtt://127.0.0.1:1883)"
            );
            None
        }
    }
}

fn unique(prefix: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

/// One message as a subscriber sees it.
#[derive(Debug, Clone)]
struct Seen {
    node: String,
    retained: bool,
    report: Report,
}

/// A subscriber to one network's topics.
struct Observer {
    client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Seen>,
    task: JoinHandle<()>,
}

impl Observer {
    async fn start(host: &str, port: u16, network: &str) -> anyhow::Result<Observer> {
        let mut opts = MqttOptions::new(unique("simtest-observer"), host, port);
        opts.set_max_packet_size(64 * 1024, 64 * 1024);
        let (client, mut eventloop) = AsyncClient::new(opts, 64);
        client
            .subscribe(Topic::filter(Some(network)), QoS::AtLeastOnce)
            .await?;
        // Wait for the subscription to take effect, keeping anything that
        // arrives (retained messages) for the reader.
        let (tx, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = oneshot::channel();
        let task = tokio::spawn(async move {
            let mut ready = Some(ready_tx);
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        if let Some(r) = ready.take() {
                            let _ = r.send(());
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        if p.payload.is_empty() {
                            continue; // a cleared retained message
                        }
                        let topic = Topic::parse(&p.topic).expect("simulator topic");
                        let (report, _) = Report::decode(topic.kind, &p.payload)
                            .unwrap_or_else(|e| panic!("{}: {e}", p.topic));
                        let seen = Seen {
                            node: topic.node,
                            retained: p.retain,
                            report,
                        };
                        if tx.send(seen).is_err() {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(e) => {
                        // Ends the reader's collect() with "observer stopped".
                        eprintln!("observer connection ended: {e}");
                        return;
                    }
                }
            }
        });
        timeout(Duration::from_secs(10), ready_rx)
            .await
            .context("no SubAck")??;
        Ok(Observer { client, rx, task })
    }

    /// Messages until `done` says so or `limit` passes.
    async fn collect(
        &mut self,
        limit: Duration,
        mut done: impl FnMut(&[Seen]) -> bool,
    ) -> anyhow::Result<Vec<Seen>> {
        let deadline = Instant::now() + limit;
        let mut all = Vec::new();
        while !done(&all) {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(seen)) => all.push(seen),
                Ok(None) => bail!("observer stopped"),
                Err(_) => bail!("timed out after {limit:?} with {} messages", all.len()),
            }
        }
        Ok(all)
    }

    async fn stop(self) {
        let _ = self.client.disconnect().await;
        tokio::time::sleep(Duration::from_millis(100)).await;
        self.task.abort();
    }
}

/// Clears the retained hello and state of every node of a test network.
async fn clear_retained(host: &str, port: u16, network: &str, nodes: &[String]) {
    let (client, mut eventloop) =
        AsyncClient::new(MqttOptions::new(unique("simtest-clean"), host, port), 16);
    let pump = tokio::spawn(async move { while eventloop.poll().await.is_ok() {} });
    for node in nodes {
        for kind in [Kind::Hello, Kind::State] {
            let topic = Topic::new(network, node, kind).unwrap().to_string();
            let _ = client
                .publish(topic, QoS::AtLeastOnce, true, Vec::new())
                .await;
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = client.disconnect().await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    pump.abort();
}

fn start_sim(cfg: SimConfig) -> (oneshot::Sender<()>, JoinHandle<anyhow::Result<SimReport>>) {
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let sim = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop_rx.await;
        };
        Ok(meshtable_sim::run(cfg, shutdown).await?)
    });
    (stop_tx, sim)
}

fn telemetry<'a>(seen: &'a [Seen], node: &str) -> Vec<&'a Telemetry> {
    seen.iter()
        .filter(|s| s.node == node)
        .filter_map(|s| match &s.report {
            Report::Telemetry(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn states<'a>(seen: &'a [Seen], node: &str) -> Vec<&'a State> {
    seen.iter()
        .filter(|s| s.node == node)
        .filter_map(|s| match &s.report {
            Report::State(t) => Some(t),
            _ => None,
        })
        .collect()
}

fn hellos<'a>(seen: &'a [Seen], node: &str) -> Vec<&'a Hello> {
    seen.iter()
        .filter(|s| s.node == node)
        .filter_map(|s| match &s.report {
            Report::Hello(h) => Some(h),
            _ => None,
        })
        .collect()
}

/// The retained hello and state of every node, as a new subscriber gets them.
async fn retained(
    host: &str,
    port: u16,
    network: &str,
    nodes: &[String],
) -> anyhow::Result<BTreeMap<String, (Hello, State)>> {
    let mut o = Observer::start(host, port, network).await?;
    let want = nodes.len() * 2;
    let seen = o
        .collect(Duration::from_secs(10), |s| {
            s.iter().filter(|m| m.retained).count() >= want
        })
        .await?;
    o.stop().await;
    let mut out = BTreeMap::new();
    for node in nodes {
        let h = hellos(&seen, node);
        let s = states(&seen, node);
        ensure!(h.len() == 1 && s.len() == 1, "{node}: retained {h:?} {s:?}");
        out.insert(node.clone(), (h[0].clone(), s[0].clone()));
    }
    ensure!(
        seen.iter().all(|m| m.retained),
        "only retained messages expected"
    );
    Ok(out)
}

/// Eighteen routers online in the snapshot and two offline: the online ones
/// announce themselves and report with increasing seq, the offline ones
/// announce themselves and vanish (last will), everything retained is right
/// during and after the run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routers_speak_the_protocol_through_a_real_broker() -> anyhow::Result<()> {
    let Some((host, port)) = broker("routers_speak_the_protocol_through_a_real_broker") else {
        return Ok(());
    };
    let network = unique("simtest");
    let mut snapshot = Snapshot::leipzig();
    let online: Vec<String> = snapshot
        .nodes
        .iter()
        .filter(|n| n.is_online)
        .take(18)
        .map(|n| n.node_id.clone())
        .collect();
    let offline: Vec<String> = snapshot
        .nodes
        .iter()
        .filter(|n| !n.is_online)
        .take(2)
        .map(|n| n.node_id.clone())
        .collect();
    let keep: BTreeSet<&String> = online.iter().chain(&offline).collect();
    snapshot.nodes.retain(|n| keep.contains(&n.node_id));
    let hostnames: BTreeMap<String, String> = snapshot
        .nodes
        .iter()
        .map(|n| (n.node_id.clone(), n.hostname.clone()))
        .collect();
    let all: Vec<String> = snapshot.nodes.iter().map(|n| n.node_id.clone()).collect();
    assert_eq!(all.len(), 20);

    let mut observer = Observer::start(&host, port, &network).await?;
    let interval = Duration::from_millis(300);
    let (stop, sim) = start_sim(SimConfig {
        mqtt_host: host.clone(),
        mqtt_port: port,
        network: network.clone(),
        snapshot,
        interval,
        churn: 0.0,
        seed: 7,
    });

    let started = Instant::now();
    let seen = observer
        .collect(Duration::from_secs(30), |seen| {
            online.iter().all(|n| telemetry(seen, n).len() >= 4)
                && offline
                    .iter()
                    .all(|n| states(seen, n).iter().any(|s| s.status == Status::Offline))
        })
        .await?;
    eprintln!("all 20 nodes seen in {:?}", started.elapsed());

    for node in &online {
        let h = hellos(&seen, node);
        ensure!(h.len() == 1, "{node}: {} hellos", h.len());
        ensure!(h[0].hostname == hostnames[node], "{node}: hostname");
        ensure!(h[0].interval_ms == 300);
        ensure!(h[0].interfaces.iter().any(|i| i.name == "br-client"));
        let s = states(&seen, node);
        ensure!(
            s.len() == 1 && s[0].status == Status::Online && s[0].time_ms.is_some(),
            "{node}: {s:?}"
        );
        let t = telemetry(&seen, node);
        for (i, r) in t.iter().enumerate() {
            ensure!(r.seq == i as u64, "{node}: seq {} at {i}", r.seq);
            ensure!(r.node == *node && r.boot_id == t[0].boot_id);
        }
        for w in t.windows(2) {
            ensure!(w[1].uptime_ms > w[0].uptime_ms && w[1].time_ms >= w[0].time_ms);
            for (a, b) in w[0].interfaces.iter().zip(&w[1].interfaces) {
                ensure!(
                    b.rx_bytes >= a.rx_bytes && b.tx_packets >= a.tx_packets,
                    "{node}: counters"
                );
            }
        }
    }
    for node in &offline {
        let h = hellos(&seen, node);
        ensure!(h.len() == 1, "{node}: {} hellos", h.len());
        ensure!(telemetry(&seen, node).is_empty(), "{node} sent telemetry");
        let s: Vec<Status> = states(&seen, node).iter().map(|s| s.status).collect();
        ensure!(s == [Status::Online, Status::Offline], "{node}: {s:?}");
        // The broker's last will: no time stamp.
        ensure!(states(&seen, node)[1].time_ms.is_none());
    }
    // Live messages to an existing subscriber never carry the retain flag.
    ensure!(seen.iter().all(|m| !m.retained));

    // What a controller starting now would get.
    let during = retained(&host, port, &network, &all).await?;
    for node in &online {
        ensure!(during[node].1.status == Status::Online, "{node}");
        ensure!(during[node].0.hostname == hostnames[node]);
    }
    for node in &offline {
        ensure!(during[node].1.status == Status::Offline, "{node}");
    }

    let _ = stop.send(());
    let report = timeout(Duration::from_secs(15), sim)
        .await
        .context("sim did not stop")???;
    eprintln!("report: {report}");
    ensure!(report.nodes == 20);
    ensure!(
        report.connections == 20 && report.connection_errors == 0,
        "{report}"
    );
    ensure!(report.hellos == 20, "{report}");
    ensure!(report.telemetry >= 18 * 4, "{report}");
    ensure!(
        report.offline_abrupt == 2 && report.offline_clean == 0 && report.reboots == 0,
        "{report}"
    );
    ensure!(report.stopped == 18, "{report}");
    ensure!(report.states == 20 + 18, "{report}");

    // After shutdown every router is offline; the stopped ones said so themselves.
    let after = retained(&host, port, &network, &all).await?;
    for node in &online {
        let s = &after[node].1;
        ensure!(
            s.status == Status::Offline && s.time_ms.is_some(),
            "{node}: {s:?}"
        );
    }
    for node in &offline {
        ensure!(after[node].1.status == Status::Offline);
    }
    observer.stop().await;
    clear_retained(&host, port, &network, &all).await;
    Ok(())
}

/// With heavy churn, routers drop off abruptly (the broker publishes their
/// will), reboot cleanly, come back with new boots whose seq and uptime
/// start again, or come back after a link loss with their boot and seq intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn churn_goes_offline_and_comes_back() -> anyhow::Result<()> {
    let Some((host, port)) = broker("churn_goes_offline_and_comes_back") else {
        return Ok(());
    };
    let network = unique("simchurn");
    let mut snapshot = Snapshot::bremen();
    snapshot.nodes.retain(|n| n.is_online);
    snapshot.truncate(12);
    let all: Vec<String> = snapshot.nodes.iter().map(|n| n.node_id.clone()).collect();

    let mut observer = Observer::start(&host, port, &network).await?;
    let (stop, sim) = start_sim(SimConfig {
        mqtt_host: host.clone(),
        mqtt_port: port,
        network: network.clone(),
        snapshot,
        interval: Duration::from_millis(100),
        churn: 0.04,
        seed: 3,
    });

    // Per node: the telemetry of each boot in arrival order.
    let boots = |seen: &[Seen], node: &str| -> BTreeMap<String, Vec<Telemetry>> {
        let mut b: BTreeMap<String, Vec<Telemetry>> = BTreeMap::new();
        for t in telemetry(seen, node) {
            b.entry(t.boot_id.clone()).or_default().push(t.clone());
        }
        b
    };
    let seen = observer
        .collect(Duration::from_secs(60), |seen| {
            let wills = seen.iter().any(|s| matches!(&s.report, Report::State(st) if st.status == Status::Offline && st.time_ms.is_none()));
            let clean = seen.iter().any(|s| matches!(&s.report, Report::State(st) if st.status == Status::Offline && st.time_ms.is_some()));
            let reboots = all.iter().filter(|n| boots(seen, n).len() >= 2).count();
            // A link loss: offline, then back online within the same boot.
            let link_loss = all.iter().any(|n| {
                let mut after_offline = false;
                let mut boot_at_offline = None;
                for s in seen.iter().filter(|s| s.node == *n) {
                    match &s.report {
                        Report::State(st) if st.status == Status::Offline => after_offline = true,
                        Report::Telemetry(t) if !after_offline => boot_at_offline = Some(t.boot_id.clone()),
                        Report::Telemetry(t) if after_offline => return Some(&t.boot_id) == boot_at_offline.as_ref() && t.seq > 0,
                        _ => {}
                    }
                }
                false
            });
            wills && clean && reboots >= 2 && link_loss
        })
        .await?;

    for node in &all {
        for (boot, reports) in boots(&seen, node) {
            // Within a boot: seq strictly increasing (queued reports arrive in
            // order after a link loss), counters never decrease.
            for w in reports.windows(2) {
                ensure!(
                    w[1].seq > w[0].seq,
                    "{node} {boot}: seq {} after {}",
                    w[1].seq,
                    w[0].seq
                );
                ensure!(w[1].uptime_ms > w[0].uptime_ms, "{node} {boot}");
                for (a, b) in w[0].interfaces.iter().zip(&w[1].interfaces) {
                    ensure!(
                        b.rx_bytes >= a.rx_bytes && b.tx_bytes >= a.tx_bytes,
                        "{node} {boot}"
                    );
                }
            }
        }
        let b = boots(&seen, node);
        // Every boot after the first starts from zero.
        let firsts: Vec<&Telemetry> = b.values().map(|r| &r[0]).collect();
        let first_boot = telemetry(&seen, node).first().map(|t| t.boot_id.clone());
        for t in firsts {
            if Some(&t.boot_id) != first_boot.as_ref() {
                ensure!(t.seq == 0, "{node}: new boot starts at seq {}", t.seq);
                ensure!(
                    t.uptime_ms < 5_000,
                    "{node}: new boot uptime {}",
                    t.uptime_ms
                );
                ensure!(t.interfaces.iter().all(|i| i.rx_bytes < 50_000_000));
            }
        }
    }

    let _ = stop.send(());
    let report = timeout(Duration::from_secs(15), sim)
        .await
        .context("sim did not stop")???;
    eprintln!("report: {report}");
    ensure!(
        report.offline_abrupt >= 1 && report.offline_clean >= 1 && report.reboots >= 2,
        "{report}"
    );
    ensure!(report.connections > 12, "{report}");
    ensure!(
        report.hellos >= 12 && report.hellos <= report.connections,
        "{report}"
    );

    observer.stop().await;
    clear_retained(&host, port, &network, &all).await;
    Ok(())
}
