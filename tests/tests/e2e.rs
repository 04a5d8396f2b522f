//! The real agent against `meshtable serve`: a node comes online, its reports
//! match what the kernel says, it goes offline when the agent dies or
//! freezes, and comes back when the agent does.
//!
//! One scenario, two backends: the embedded broker with SQLite (always), and
//! Mosquitto with PostgreSQL when `MESHTABLE_TEST_MQTT_URL` and
//! `MESHTABLE_TEST_DATABASE_URL` are set.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use meshtable_proto::{State, Status};
use meshtable_tests::json::{array_at, bool_at, f64_at, str_at, time_at, u64_at};
use meshtable_tests::{
    Agent, Backend, Controller, Link, MqttClient, SharedBrokerCleanup, agent_once, binaries,
    boot_id, free_port, hostname, isolate_env, links, now_ms, poll, unique, wait_for,
};
use serde_json::Value;

/// The agents' report interval in this test.
const INTERVAL: Duration = Duration::from_secs(1);
/// The controller's sweep interval (`--sweep-interval 1s`).
const SWEEP: Duration = Duration::from_secs(1);
/// Missed intervals before a node is offline (the default `--offline-after`).
const MISSED: u32 = 3;
/// Scheduling slack on a loaded two-core machine.
const SLACK: Duration = Duration::from_secs(2);

/// How long a node that stopped reporting may still show online.
fn offline_deadline() -> Duration {
    INTERVAL * MISSED + SWEEP + SLACK
}

#[test]
fn embedded_sqlite() {
    scenario(&Backend::embedded());
}

#[test]
fn service_mosquitto_postgres() {
    let Some(backend) = Backend::service() else {
        return;
    };
    scenario(&backend);
}

/// `--once` describes this machine as the kernel does, without a broker.
#[test]
fn agent_once_reports_this_machine() {
    let before = links();
    let out = agent_once(&["--network", "once", "--node-id", "once-node"]);
    let after = links();

    let hello = &out["hello"];
    assert_eq!(u64_at(hello, "/v"), 1, "{hello}");
    assert_eq!(str_at(hello, "/hostname"), hostname(), "{hello}");
    assert_eq!(str_at(hello, "/kernel"), os_release_kernel(), "{hello}");
    assert_eq!(
        u64_at(hello, "/interval_ms"),
        60_000,
        "default --interval is 60s"
    );
    check_hello_interfaces(hello, &before, &after);

    let t = &out["telemetry"];
    assert_eq!(u64_at(t, "/v"), 1, "{t}");
    assert_eq!(str_at(t, "/node"), "once-node", "{t}");
    assert_eq!(
        u64_at(t, "/seq"),
        0,
        "the first report of a run is seq 0: {t}"
    );
    assert_eq!(u64_at(t, "/dropped"), 0, "{t}");
    check_machine_gauges(t);
    let clock = u64_at(t, "/time_ms");
    let now = u64::try_from(now_ms()).unwrap();
    assert!(
        clock <= now && now - clock < 30_000,
        "time_ms {clock} vs now {now}"
    );
    check_counters(array_at(t, "/interfaces"), &before, &after, false);

    // Without --node-id the node id is the primary MAC address.
    let out = agent_once(&["--network", "once"]);
    let node = str_at(&out, "/telemetry/node");
    let macs: BTreeSet<String> = after
        .values()
        .filter_map(|l| l.mac.as_ref())
        .map(|m| m.replace(':', ""))
        .collect();
    assert!(
        node.len() == 12 && macs.contains(node),
        "default node id {node:?} is not one of this machine's MAC addresses {macs:?}"
    );
}

/// A taken `--mqtt-listen` port is a clear error naming the flag, before
/// anything else starts.
#[test]
fn busy_mqtt_port_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").expect("bind a port");
    let addr = taken.local_addr().expect("local address").to_string();
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cmd = Command::new(&binaries().controller);
    isolate_env(&mut cmd);
    let mut child = cmd
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--mqtt-listen", &addr])
        .arg("--data-dir")
        .arg(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(dir.path().join("stderr")).expect("log file"))
        .spawn()
        .expect("start meshtable serve");
    let status = poll(Duration::from_secs(30), || {
        child
            .try_wait()
            .expect("poll meshtable serve")
            .ok_or_else(String::new)
    });
    let stderr = fs::read_to_string(dir.path().join("stderr")).unwrap_or_default();
    let Ok(status) = status else {
        let _ = child.kill();
        let _ = child.wait();
        panic!("meshtable serve kept running with --mqtt-listen {addr} taken:\n{stderr}");
    };
    assert!(!status.success(), "exit status {status}:\n{stderr}");
    let want = format!("error: --mqtt-listen {addr} is already in use");
    assert!(
        stderr.lines().any(|l| l.trim() == want),
        "no line {want:?} in:\n{stderr}"
    );
}

/// The whole life of one node, against one backend.
fn scenario(backend: &Backend) {
    let mut ctl = Controller::start(backend);
    let net = unique("e2e");
    ctl.add_network(&net, true);
    let node = "router-1";
    let _cleanup = SharedBrokerCleanup::new(backend, &net, node);
    let base = MetricBase::new(&ctl, backend);

    // The node's state directory outlives each agent process, as tmpfs
    // outlives agent restarts on a router.
    let state = tempfile::tempdir().expect("temporary state directory");
    let before = links();
    let started_ms = now_ms();
    let mut agent = Agent::start(ctl.mqtt_url(), &net, node, "1s", state.path());

    // 1. The node shows up online, in its network.
    let summary = wait_for(
        "the node online in /api/v1/nodes",
        Duration::from_secs(20),
        || {
            agent.assert_running();
            match ctl.node_summary(&net, node) {
                Some(s) if s["status"] == "online" => Ok(s),
                other => Err(format!("{other:?}")),
            }
        },
    );
    assert_eq!(str_at(&summary, "/network"), net);
    assert_eq!(str_at(&summary, "/hostname"), hostname());
    let first_seen = time_at(&summary, "/first_seen");
    let last_seen = time_at(&summary, "/last_seen");
    let since = time_at(&summary, "/status_since");
    assert!(
        started_ms - 1_000 <= first_seen && first_seen <= last_seen && since <= now_ms(),
        "first_seen {first_seen} last_seen {last_seen} status_since {since}, agent started at \
         {started_ms}: {summary}"
    );
    assert_eq!(ctl.nodes(&net).len(), 1, "{:?}", ctl.nodes(&net));
    wait_network(&ctl, &net, 1, 0);

    // 2. Telemetry is stored: wait for three samples of this run.
    let load1 = wait_for("three load1 points", Duration::from_secs(15), || {
        agent.assert_running();
        let p = ctl.series(&net, node, "load1", None, started_ms - 1_000);
        if p.len() >= 3 {
            Ok(p)
        } else {
            Err(format!("{p:?}"))
        }
    });
    check_points("load1", &load1, started_ms, 0.0, f64::INFINITY);

    // 3. The latest sample says what the kernel says.
    let detail = ctl.node_detail(&net, node);
    let after = links();
    check_detail(&detail, &net, node);
    check_hello_interfaces(&detail["hello"], &before, &after);
    let latest = &detail["latest"];
    check_machine_gauges(latest);
    // The agent talked to the broker over lo before it collected this.
    check_counters(array_at(latest, "/interfaces"), &before, &after, true);

    // Two consecutive samples: counters never go down, and the rate is
    // exactly the counter delta over the uptime delta.
    let (s1, s2) = consecutive_samples(&ctl, &net, node);
    check_monotonic(&s1, &s2);
    check_rates(&s1, &s2);
    let lo_rate = rate(&s2, "lo", "rx_bps").expect("lo has a previous sample, so a rate");
    assert!(lo_rate > 0.0, "the agent talks to the broker over lo: {s2}");

    // Series of every metric.
    for (metric, max) in [
        ("load5", f64::INFINITY),
        ("load15", f64::INFINITY),
        ("mem_used_ratio", 1.0),
        ("rootfs_used_ratio", 1.0),
        ("cpu_busy_ratio", 1.0),
    ] {
        let points = ctl.series(&net, node, metric, None, started_ms - 1_000);
        assert!(!points.is_empty(), "no {metric} points");
        check_points(metric, &points, started_ms, 0.0, max);
    }
    let mem = ctl.series(&net, node, "mem_used_ratio", None, started_ms - 1_000);
    let want = 1.0 - f64_at(&s2, "/mem_available") / f64_at(&s2, "/mem_total");
    assert!(
        mem.iter().any(|(_, v)| (v - want).abs() < 1e-9),
        "no mem_used_ratio point equals 1 - mem_available/mem_total = {want} of the latest \
         sample: {mem:?}"
    );
    let lo_rx = ctl.series(&net, node, "rx_bps", Some("lo"), started_ms - 1_000);
    assert!(!lo_rx.is_empty(), "no rx_bps points for lo");
    check_points("rx_bps lo", &lo_rx, started_ms, 0.0, f64::INFINITY);
    check_api_errors(&ctl, &net, node);

    // The front page lists the network, its page lists the node, and the
    // metrics count it.
    let (status, page) = ctl.get("/");
    assert_eq!(status, 200, "GET /: {page}");
    assert!(
        page.contains(&format!("/networks/{net}")),
        "GET / lacks {net}:\n{page}"
    );
    let (status, page) = ctl.get(&format!("/networks/{net}"));
    assert_eq!(status, 200, "GET /networks/{net}: {page}");
    assert!(
        page.contains(node),
        "GET /networks/{net} lacks {node}:\n{page}"
    );
    base.check_nodes(&ctl, &net, 1, 0);
    for (kind, at_least) in [("telemetry", 3.0), ("hello", 1.0), ("state", 1.0)] {
        let stored = base.delta(&ctl, "meshtable_ingest_messages_total", &[("kind", kind)]);
        assert!(
            stored >= at_least,
            "{stored} {kind} messages stored, want {at_least}+"
        );
    }

    // 4. kill -9: the broker publishes the last will, or the sweep notices.
    let killed_ms = now_ms();
    let killed = Instant::now();
    agent.kill();
    wait_status(
        &ctl,
        &net,
        node,
        "offline",
        offline_deadline(),
        "kill -9 of the agent",
    );
    eprintln!(
        "[{}] offline {:?} after kill -9",
        backend.name(),
        killed.elapsed()
    );
    let summary = ctl
        .node_summary(&net, node)
        .expect("the node is still listed");
    assert!(
        time_at(&summary, "/status_since") >= killed_ms - 1_000,
        "{summary}"
    );
    assert_eq!(
        retained_state(&ctl, &net, node),
        Status::Offline,
        "the last will is retained"
    );
    wait_network(&ctl, &net, 0, 1);
    base.check_nodes(&ctl, &net, 0, 1);
    let old_seq = u64_at(&ctl.node_detail(&net, node), "/latest/seq");

    // 5. Restart with the same node id on the same boot: online again, and
    // the new run's reports are stored, not taken for duplicates of the old
    // run's (same boot_id, seq again from 0). Failures here are collected, so
    // that the rest of the scenario still runs and reports.
    let mut failures: Vec<String> = Vec::new();
    let dups = base.delta(&ctl, "meshtable_ingest_duplicates_total", &[]);
    let restarted_ms = now_ms();
    let mut agent = Agent::start(ctl.mqtt_url(), &net, node, "1s", state.path());
    wait_status(
        &ctl,
        &net,
        node,
        "online",
        Duration::from_secs(10),
        "restart of the agent",
    );
    let mut went_offline = false;
    let stored = poll(INTERVAL * MISSED + SLACK, || {
        agent.assert_running();
        let summary = ctl.node_summary(&net, node);
        went_offline |= summary.as_ref().is_some_and(|s| s["status"] == "offline");
        let new = ctl.series(&net, node, "load1", None, restarted_ms);
        if new.len() >= 2 {
            return Ok(());
        }
        Err(format!("{} load1 points since the restart", new.len()))
    });
    let dropped = base.delta(&ctl, "meshtable_ingest_duplicates_total", &[]) - dups;
    if let Err(seen) = stored {
        failures.push(format!(
            "the restarted agent's reports were not stored within {:?} ({seen})",
            INTERVAL * MISSED + SLACK
        ));
    }
    if dropped != 0.0 {
        failures.push(format!(
            "{dropped} reports of the restarted agent were dropped as duplicates \
             (meshtable_ingest_duplicates_total): a restarted agent starts seq at 0 again with \
             the same boot_id, so (node, boot_id, seq) collides with the previous run's reports"
        ));
    }
    if went_offline {
        failures.push(
            "the node went offline while the restarted agent was reporting every second \
             (duplicates do not count as seen)"
                .to_owned(),
        );
    }
    let detail = ctl.node_detail(&net, node);
    let latest_received = time_at(&detail, "/latest/received");
    if latest_received < restarted_ms {
        failures.push(format!(
            "{:?} after the restart the latest sample is still one of the previous run's: {}",
            INTERVAL * MISSED + SLACK,
            detail["latest"]
        ));
    }
    assert_eq!(str_at(&detail, "/latest/boot_id"), boot_id());
    let new_seq = u64_at(&detail, "/latest/seq");
    if latest_received >= restarted_ms && new_seq <= old_seq {
        failures.push(format!(
            "the restarted agent's seq {new_seq} is not past the previous run's {old_seq} \
             (--state-dir keeps the sequence of the boot)"
        ));
    }
    // Whatever happened above, go on once the new run's reports are stored.
    wait_for(
        "reports of the restarted agent",
        Duration::from_secs(30),
        || {
            let new = ctl.series(&net, node, "load1", None, restarted_ms);
            if new.len() >= 2 {
                Ok(())
            } else {
                Err(format!("{} points", new.len()))
            }
        },
    );
    wait_status(
        &ctl,
        &net,
        node,
        "online",
        offline_deadline(),
        "reports of the restarted agent",
    );

    // 6. A frozen agent keeps its connection (no last will): the liveness
    // sweep must notice the missed intervals.
    agent.pause();
    let paused = Instant::now();
    wait_status(
        &ctl,
        &net,
        node,
        "offline",
        offline_deadline(),
        "SIGSTOP of the agent",
    );
    eprintln!(
        "[{}] offline {:?} after SIGSTOP (sweep)",
        backend.name(),
        paused.elapsed()
    );
    assert_eq!(
        retained_state(&ctl, &net, node),
        Status::Online,
        "no last will while the connection is open: the sweep set the node offline"
    );
    agent.resume();
    wait_status(
        &ctl,
        &net,
        node,
        "online",
        INTERVAL * 2 + SLACK,
        "SIGCONT of the agent",
    );

    // 7. No rate is negative anywhere, across both runs.
    let detail = ctl.node_detail(&net, node);
    for iface in array_at(&detail, "/latest/interfaces") {
        let name = str_at(iface, "/name");
        for metric in ["rx_bps", "tx_bps"] {
            let points = ctl.series(&net, node, metric, Some(name), started_ms - 1_000);
            check_points(
                &format!("{metric} {name}"),
                &points,
                started_ms,
                0.0,
                f64::INFINITY,
            );
        }
    }
    // The agent dropped nothing.
    wait_for(
        "meshtable_agent_reports_dropped_total of the network at 0",
        Duration::from_secs(5),
        || {
            let got = ctl.metric(
                "meshtable_agent_reports_dropped_total",
                &[("network", &net)],
            );
            if got == Some(0.0) {
                Ok(())
            } else {
                Err(format!("{got:?}"))
            }
        },
    );
    agent.assert_running();
    ctl.assert_healthy();
    let log = ctl.stderr();
    assert!(!log.contains("panicked"), "the controller panicked:\n{log}");
    assert!(
        failures.is_empty(),
        "[{}] agent restart on the same boot:\n- {}",
        backend.name(),
        failures.join("\n- ")
    );
}

/// Waits until the node's status in `/api/v1/nodes` is `status`.
fn wait_status(
    ctl: &Controller,
    net: &str,
    node: &str,
    status: &str,
    within: Duration,
    after: &str,
) {
    wait_for(
        &format!("{net}/{node} {status} after {after}"),
        within,
        || match ctl.node_summary(net, node) {
            Some(s) if s["status"] == status => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

/// Waits until `/api/v1/networks` counts the network's nodes so.
fn wait_network(ctl: &Controller, net: &str, online: u64, offline: u64) {
    let want = serde_json::json!({
        "id": net, "nodes": online + offline, "online": online, "offline": offline
    });
    wait_for(
        &format!("/api/v1/networks to list {want}"),
        Duration::from_secs(5),
        || match ctl.network(net) {
            Some(n) if n == want => Ok(()),
            other => Err(format!("{other:?}")),
        },
    );
}

/// The node's retained state on the broker, as a new subscriber gets it.
fn retained_state(ctl: &Controller, net: &str, node: &str) -> Status {
    let topic = format!("meshtable/v1/{net}/{node}/state");
    let mut c = MqttClient::connect(ctl.mqtt_url(), &unique("e2e-reader"));
    c.subscribe(&topic);
    let msg = c
        .wait_message(&topic, Duration::from_secs(5))
        .unwrap_or_else(|| panic!("no retained message on {topic}"));
    c.disconnect();
    assert!(msg.retain, "{topic}: not delivered as retained");
    let (state, _) = meshtable_proto::decode::<State>(&msg.payload)
        .unwrap_or_else(|e| panic!("{topic}: retained payload does not decode: {e}"));
    state.status
}

/// The detail's own fields and its hello.
fn check_detail(d: &Value, net: &str, node: &str) {
    assert_eq!(str_at(d, "/network"), net, "{d}");
    assert_eq!(str_at(d, "/node"), node, "{d}");
    assert_eq!(str_at(d, "/status"), "online", "{d}");
    assert_eq!(str_at(d, "/hostname"), hostname(), "{d}");
    let hello = &d["hello"];
    assert_eq!(u64_at(hello, "/v"), 1, "{hello}");
    assert_eq!(str_at(hello, "/hostname"), hostname(), "{hello}");
    assert_eq!(str_at(hello, "/kernel"), os_release_kernel(), "{hello}");
    assert_eq!(
        u64_at(hello, "/interval_ms"),
        1_000,
        "--interval 1s: {hello}"
    );
    let latest = &d["latest"];
    assert_eq!(str_at(latest, "/boot_id"), boot_id(), "{latest}");
    assert!(
        bool_at(latest, "/clock_ok"),
        "this machine's clock is fine: {latest}"
    );
    let time = time_at(latest, "/time");
    let received = time_at(latest, "/received");
    assert!(
        (received - time).abs() < 5_000 && received <= now_ms(),
        "time {time} received {received}: {latest}"
    );
    assert_eq!(u64_at(latest, "/dropped"), 0, "{latest}");
}

/// Gauges of a telemetry report (proto JSON or API sample) against /proc.
fn check_machine_gauges(t: &Value) {
    let mem_total = u64_at(t, "/mem_total");
    assert_eq!(
        mem_total,
        meminfo_total(),
        "mem_total is MemTotal in bytes: {t}"
    );
    let mem_available = u64_at(t, "/mem_available");
    assert!(0 < mem_available && mem_available <= mem_total, "{t}");
    let rootfs_size = u64_at(t, "/rootfs_size");
    let rootfs_free = u64_at(t, "/rootfs_free");
    assert!(0 < rootfs_size && rootfs_free <= rootfs_size, "{t}");
    let uptime = u64_at(t, "/uptime_ms");
    assert!(
        uptime > 0 && uptime <= proc_uptime_ms() + 1_000,
        "uptime_ms {uptime}: {t}"
    );
    let load = array_at(t, "/load");
    assert_eq!(load.len(), 3, "{t}");
    for l in load {
        let l = l.as_f64().unwrap_or(-1.0);
        assert!(l.is_finite() && l >= 0.0, "load {l}: {t}");
    }
    assert!(u64_at(t, "/cpu/idle") > 0, "{t}");
}

/// The interfaces of a hello match `ip link`: names, MAC addresses, MTUs.
fn check_hello_interfaces(
    hello: &Value,
    before: &BTreeMap<String, Link>,
    after: &BTreeMap<String, Link>,
) {
    let ifaces = array_at(hello, "/interfaces");
    let names: Vec<&str> = ifaces.iter().map(|i| str_at(i, "/name")).collect();
    check_names("hello", &names, before, after);
    for i in ifaces {
        let name = str_at(i, "/name");
        let Some(link) = after.get(name) else {
            continue;
        };
        assert_eq!(u64_at(i, "/mtu"), link.mtu, "mtu of {name}: {i}");
        if name == "lo" {
            assert_eq!(str_at(i, "/kind"), "loopback", "{i}");
        }
        match link.mac.as_deref() {
            Some(mac) if mac != "00:00:00:00:00:00" => {
                assert_eq!(i["mac"], mac, "mac of {name}: {i}");
            }
            _ => {}
        }
    }
}

/// The interface names of a report are this machine's: every interface that
/// existed before and after is there, and nothing that existed at neither
/// time (other tests may add and remove interfaces meanwhile).
fn check_names(
    what: &str,
    names: &[&str],
    before: &BTreeMap<String, Link>,
    after: &BTreeMap<String, Link>,
) {
    let got: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(
        got.len(),
        names.len(),
        "{what}: an interface listed twice: {names:?}"
    );
    let always: BTreeSet<&str> = before
        .keys()
        .filter(|k| after.contains_key(*k))
        .map(String::as_str)
        .collect();
    let ever: BTreeSet<&str> = before
        .keys()
        .chain(after.keys())
        .map(String::as_str)
        .collect();
    assert!(
        always.is_subset(&got) && got.is_subset(&ever),
        "{what}: interfaces {got:?}, but `ip link` lists {always:?} (and at some point {ever:?})"
    );
}

/// Each interface's counters lie between the kernel's before the agent
/// collected them and after the API returned them; with `lo_traffic` (the
/// agent talked to a broker on 127.0.0.1 before it collected them) lo's
/// received bytes grew.
fn check_counters(
    ifaces: &[Value],
    before: &BTreeMap<String, Link>,
    after: &BTreeMap<String, Link>,
    lo_traffic: bool,
) {
    let names: Vec<&str> = ifaces.iter().map(|i| str_at(i, "/name")).collect();
    check_names("telemetry", &names, before, after);
    for i in ifaces {
        let name = str_at(i, "/name");
        let (Some(b), Some(a)) = (before.get(name), after.get(name)) else {
            continue;
        };
        for (field, lo, hi) in [
            ("rx_bytes", b.rx_bytes, a.rx_bytes),
            ("tx_bytes", b.tx_bytes, a.tx_bytes),
            ("rx_packets", b.rx_packets, a.rx_packets),
            ("tx_packets", b.tx_packets, a.tx_packets),
        ] {
            let v = u64_at(i, &format!("/{field}"));
            assert!(
                lo <= v && v <= hi,
                "{name} {field} = {v}, but the kernel counted {lo} before and {hi} after: {i}"
            );
        }
        if name == "lo" && lo_traffic {
            let rx = u64_at(i, "/rx_bytes");
            assert!(
                rx > b.rx_bytes,
                "lo carried the agent's traffic, yet rx_bytes {rx} did not grow"
            );
        }
    }
}

/// Polls the latest sample until two consecutive ones (seq n and n + 1) have
/// been seen.
fn consecutive_samples(ctl: &Controller, net: &str, node: &str) -> (Value, Value) {
    let mut prev: Option<Value> = None;
    wait_for("two consecutive samples", INTERVAL * 4 + SLACK, || {
        let latest = ctl.node_detail(net, node)["latest"].clone();
        let seq = u64_at(&latest, "/seq");
        if let Some(p) = &prev {
            let p_seq = u64_at(p, "/seq");
            if seq == p_seq + 1 {
                return Ok((p.clone(), latest));
            }
            if seq == p_seq {
                return Err(format!("latest seq {seq}"));
            }
        }
        let seen = format!("latest seq {seq}");
        prev = Some(latest);
        Err(seen)
    })
}

/// Counters of `s2` are not below those of `s1`.
fn check_monotonic(s1: &Value, s2: &Value) {
    assert!(
        u64_at(s2, "/uptime_ms") > u64_at(s1, "/uptime_ms"),
        "{s1}\n{s2}"
    );
    for cpu in [
        "user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal",
    ] {
        let ptr = format!("/cpu/{cpu}");
        assert!(
            u64_at(s2, &ptr) >= u64_at(s1, &ptr),
            "cpu {cpu} went down: {s1}\n{s2}"
        );
    }
    let first: BTreeMap<&str, &Value> = array_at(s1, "/interfaces")
        .iter()
        .map(|i| (str_at(i, "/name"), i))
        .collect();
    for i2 in array_at(s2, "/interfaces") {
        let name = str_at(i2, "/name");
        let Some(i1) = first.get(name) else { continue };
        for field in [
            "rx_bytes",
            "tx_bytes",
            "rx_packets",
            "tx_packets",
            "rx_errors",
            "tx_errors",
            "rx_dropped",
            "tx_dropped",
        ] {
            let ptr = format!("/{field}");
            assert!(
                u64_at(i2, &ptr) >= u64_at(i1, &ptr),
                "{name} {field} went down between seq {} and {}: {i1} {i2}",
                s1["seq"],
                s2["seq"]
            );
        }
    }
}

/// `s2`'s rates are (counter delta * 8) / (uptime delta in seconds) against
/// `s1`, its predecessor of the same boot.
fn check_rates(s1: &Value, s2: &Value) {
    let dt = (u64_at(s2, "/uptime_ms") - u64_at(s1, "/uptime_ms")) as f64 / 1000.0;
    let first: BTreeMap<&str, &Value> = array_at(s1, "/interfaces")
        .iter()
        .map(|i| (str_at(i, "/name"), i))
        .collect();
    for i2 in array_at(s2, "/interfaces") {
        let name = str_at(i2, "/name");
        for (rate_field, counter) in [("rx_bps", "rx_bytes"), ("tx_bps", "tx_bytes")] {
            let got = rate(s2, name, rate_field);
            let Some(i1) = first.get(name) else {
                assert_eq!(
                    got, None,
                    "{name} is new in seq {}: no {rate_field}",
                    s2["seq"]
                );
                continue;
            };
            let ptr = format!("/{counter}");
            let delta = (u64_at(i2, &ptr) - u64_at(i1, &ptr)) as f64;
            let want = delta * 8.0 / dt;
            let got = got.unwrap_or_else(|| panic!("{name}: no {rate_field} in {i2}"));
            assert!(
                (got - want).abs() <= 1e-6 * want.max(1.0),
                "{name} {rate_field} = {got}, want {delta} bytes * 8 / {dt} s = {want}"
            );
        }
    }
}

/// The `field` rate (`rx_bps`/`tx_bps`) of interface `name` in a sample;
/// `None` for null. Panics on a negative or non-finite rate.
fn rate(sample: &Value, name: &str, field: &str) -> Option<f64> {
    let iface = array_at(sample, "/interfaces")
        .iter()
        .find(|i| i["name"] == name)
        .unwrap_or_else(|| panic!("no interface {name} in {sample}"));
    let v = &iface[field];
    if v.is_null() {
        return None;
    }
    let r = v
        .as_f64()
        .unwrap_or_else(|| panic!("{name} {field} is neither null nor a number: {iface}"));
    assert!(r.is_finite() && r >= 0.0, "{name} {field} = {r}: {iface}");
    Some(r)
}

/// Every point is in `[min, max]`, and the times are sane and ascending.
fn check_points(what: &str, points: &[(i64, f64)], started_ms: i64, min: f64, max: f64) {
    let now = now_ms();
    for (t, v) in points {
        assert!(
            v.is_finite() && (min..=max).contains(v),
            "{what}: value {v} at {t} is outside [{min}, {max}]: {points:?}"
        );
        assert!(
            started_ms - 1_000 <= *t && *t <= now + 1_000,
            "{what}: time {t} outside this test ({started_ms}..{now})"
        );
    }
    assert!(
        points.windows(2).all(|w| w[0].0 <= w[1].0),
        "{what}: points not in time order: {points:?}"
    );
}

/// The API's documented errors for bad requests.
fn check_api_errors(ctl: &Controller, net: &str, node: &str) {
    let cases = [
        (format!("/api/v1/nodes/no-such-node?network={net}"), 404),
        (
            format!("/api/v1/nodes/{node}/series?network={net}&metric=bogus"),
            400,
        ),
        (
            format!("/api/v1/nodes/{node}/series?network={net}&metric=rx_bps"),
            400,
        ),
        (
            format!("/api/v1/nodes/{node}/series?network={net}&metric=load1&from=yesterday"),
            400,
        ),
    ];
    for (path, want) in cases {
        let (status, body) = ctl.get_json_status(&path);
        assert_eq!(status, want, "GET {path}: {body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "GET {path}: no {{\"error\": ...}}: {body}"
        );
    }
}

/// Counter values at the start of a test: zero on the embedded broker, where
/// the controller sees only this test's messages; whatever they were on a
/// shared broker, where it also sees everyone else's.
struct MetricBase {
    samples: Vec<meshtable_tests::MetricSample>,
}

impl MetricBase {
    fn new(ctl: &Controller, backend: &Backend) -> MetricBase {
        if backend.is_shared() {
            MetricBase {
                samples: ctl.metrics(),
            }
        } else {
            MetricBase {
                samples: Vec::new(),
            }
        }
    }

    /// How much the counter grew since the start of the test.
    fn delta(&self, ctl: &Controller, name: &str, labels: &[(&str, &str)]) -> f64 {
        let now = ctl
            .metric(name, labels)
            .unwrap_or_else(|| panic!("/metrics has no {name}{labels:?}"));
        let base: f64 = self
            .samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map_or(0.0, |s| s.value);
        now - base
    }

    /// `meshtable_nodes{network,status}` as expected.
    fn check_nodes(&self, ctl: &Controller, net: &str, online: u64, offline: u64) {
        for (status, want) in [("online", online), ("offline", offline)] {
            wait_for(
                &format!("meshtable_nodes{{network={net},status={status}}} == {want}"),
                Duration::from_secs(5),
                || {
                    let got =
                        ctl.metric("meshtable_nodes", &[("network", net), ("status", status)]);
                    if got == Some(want as f64) {
                        Ok(())
                    } else {
                        Err(format!("{got:?}"))
                    }
                },
            );
        }
    }
}

fn meminfo_total() -> u64 {
    let meminfo = fs::read_to_string("/proc/meminfo").expect("read /proc/meminfo");
    let kb: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
        .expect("MemTotal in /proc/meminfo");
    kb * 1024
}

fn proc_uptime_ms() -> u64 {
    let uptime = fs::read_to_string("/proc/uptime").expect("read /proc/uptime");
    let secs: f64 = uptime
        .split_whitespace()
        .next()
        .and_then(|s| s.parse().ok())
        .expect("seconds in /proc/uptime");
    (secs * 1000.0) as u64
}

fn os_release_kernel() -> String {
    fs::read_to_string("/proc/sys/kernel/osrelease")
        .expect("read /proc/sys/kernel/osrelease")
        .trim()
        .to_owned()
}
