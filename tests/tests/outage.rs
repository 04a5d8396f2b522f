//! The uplink drops: an agent in a network namespace reports every 100 ms
//! to the controller through a veth pair; the pair is taken down for at
//! least 300 of the agent's intervals, then brought back.
//!
//! - Plain outage: the controller must end with every report, each stored
//!   once; on the wire they arrive in order, and every report collected
//!   during the outage is marked backfill.
//! - kill -9 late in the outage, then a restart while still cut off (same
//!   state and spool directories), with a small spool: nothing is lost
//!   beyond what the spool cap drops (the oldest reports, one contiguous run), and exactly that
//!   loss is counted, in `Telemetry.dropped` and in
//!   `meshtable_agent_reports_dropped_total`.
//!
//! The namespace needs root: without it every test prints "skipped outage
//! tests: ..." and passes. The broker listens on loopback (the embedded
//! one, or Mosquitto on 127.0.0.1:1883), so a TCP relay on the host end of
//! the pair ([`Relay`]) carries the agent's connection to it; the outage
//! itself is the namespace's link going down. Inside the namespace
//! `net.ipv4.tcp_retries2` is 3, so the agent's stalled connection fails
//! after a few seconds, as a router's would after its retransmission
//! timeout, instead of a quarter of an hour.
//!
//! The outage lasts until the agent has logged 300 reports spooled since
//! the link went down (its own count of intervals), not for a fixed time.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::thread;
use std::time::Duration;

use meshtable_proto::{BrokerUrl, Reassembler};
use meshtable_tests::{
    Backend, Controller, MqttClient, NetnsAgent, NetnsLink, Relay, SharedBrokerCleanup,
    netns_unavailable, now_ms, unique, wait_for,
};

/// The agent's report interval.
const INTERVAL: &str = "100ms";
/// Intervals the link stays down, at least.
const OUTAGE_INTERVALS: usize = 300;
/// Spool bound of the kill -9 run: far below what 300 reports take (about
/// 250 bytes each here), so the cap must drop some, and above what the
/// reconnect after the outage adds, so that some reports of the outage
/// survive to be replayed.
const SMALL_SPOOL: u64 = 24 * 1024;
/// The kill -9 comes when this many reports were spooled in the outage; the
/// agent is started again at once, still cut off, so its reconnect backoff
/// is short when the link comes back.
const KILL_AT: usize = OUTAGE_INTERVALS * 9 / 10;
/// Reports per second replayed after the reconnect.
const DRAIN_RATE: &str = "200";
/// What the agent logs once per collected report (at debug level).
const SPOOLED: &str = "report spooled";
/// How long the reconnect may take: the agent's backoff doubles up to 60 s
/// with +-50 % jitter, so after a 30 s outage the pending retry may be up to
/// about 48 s away.
const RECONNECT_TIMEOUT: Duration = Duration::from_secs(100);

fn skip() -> bool {
    match netns_unavailable() {
        Some(why) => {
            eprintln!("skipped outage tests: {why}");
            true
        }
        None => false,
    }
}

#[test]
fn outage_embedded_sqlite() {
    if skip() {
        return;
    }
    scenario(&Backend::embedded(), false);
}

#[test]
fn outage_kill_embedded_sqlite() {
    if skip() {
        return;
    }
    scenario(&Backend::embedded(), true);
}

#[test]
fn outage_service_mosquitto_postgres() {
    if skip() {
        return;
    }
    let Some(backend) = Backend::service() else {
        return;
    };
    scenario(&backend, false);
}

#[test]
fn outage_kill_service_mosquitto_postgres() {
    if skip() {
        return;
    }
    let Some(backend) = Backend::service() else {
        return;
    };
    scenario(&backend, true);
}

/// One telemetry report as a subscriber on the broker received it.
#[derive(Debug, Clone, Copy)]
struct Arrival {
    seq: u64,
    time_ms: i64,
    backfill: bool,
    dropped: u64,
}

/// A subscriber to the node's telemetry topic, keeping every arrival.
struct Wire {
    client: MqttClient,
    topic: String,
    reassembler: Reassembler,
    arrivals: Vec<Arrival>,
}

impl Wire {
    fn subscribe(ctl: &Controller, net: &str, node: &str) -> Wire {
        let mut client = MqttClient::connect(ctl.mqtt_url(), &unique("outage-wire"));
        let topic = format!("meshtable/v1/{net}/{node}/telemetry");
        client.subscribe(&topic);
        Wire {
            client,
            topic,
            reassembler: Reassembler::new(),
            arrivals: Vec::new(),
        }
    }

    /// Takes in everything received so far.
    fn pump(&mut self) {
        while let Some(m) = self
            .client
            .wait_message(&self.topic, Duration::from_millis(20))
        {
            // Signed reports come in an envelope; the report is inside.
            let bare = match meshtable_proto::sign::open(&m.payload) {
                Ok(opened) => opened.payload(),
                Err(e) => panic!("telemetry on {} is no envelope nor report: {e}", self.topic),
            };
            // Full (v1) or compact (v2, the difference from seq - 1) reports,
            // read as the controller reads them.
            let (t, _) = self
                .reassembler
                .decode(&self.topic, bare)
                .unwrap_or_else(|e| panic!("telemetry on {} does not decode: {e}", self.topic));
            self.arrivals.push(Arrival {
                seq: t.seq,
                time_ms: i64::try_from(t.time_ms).expect("time fits in i64"),
                backfill: t.backfill,
                dropped: t.dropped,
            });
        }
    }

    /// The first arrival of every seq, in arrival order.
    fn first_arrivals(&self) -> Vec<Arrival> {
        let mut seen = BTreeSet::new();
        self.arrivals
            .iter()
            .filter(|a| seen.insert(a.seq))
            .copied()
            .collect()
    }
}

fn broker_addr(url: &str) -> SocketAddr {
    let b = BrokerUrl::parse(url).unwrap_or_else(|e| panic!("broker URL {url}: {e:?}"));
    (b.host.as_str(), b.port)
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("resolve {url}: {e}"))
        .next()
        .unwrap_or_else(|| panic!("{url} resolves to nothing"))
}

/// The times of the node's stored samples (one per stored report), sorted;
/// none while the controller does not know the node yet (404).
fn stored_times(ctl: &Controller, net: &str, node: &str, from_ms: i64) -> Vec<i64> {
    let path = format!("/api/v1/nodes/{node}/series?network={net}&metric=load1&from={from_ms}");
    let (status, body) = ctl.get_json_status(&path);
    if status == 404 {
        return Vec::new();
    }
    assert_eq!(status, 200, "GET {path}: {body}");
    let mut t: Vec<i64> = body["points"]
        .as_array()
        .unwrap_or_else(|| panic!("GET {path}: no points array: {body}"))
        .iter()
        .map(|p| {
            p["t"]
                .as_i64()
                .unwrap_or_else(|| panic!("GET {path}: point {p} has no t"))
        })
        .collect();
    t.sort_unstable();
    t
}

/// Sleeps `d` while keeping the subscriber drained.
fn pump_for(wire: &mut Wire, d: Duration) {
    let end = std::time::Instant::now() + d;
    while std::time::Instant::now() < end {
        wire.pump();
        thread::sleep(Duration::from_millis(50));
    }
}

fn scenario(backend: &Backend, kill: bool) {
    let what = if kill { "kill -9 outage" } else { "outage" };
    let ctl = Controller::start(backend);
    let net = unique("outage");
    let node = unique("router");
    // Networks are created by an admin; this agent is not enrolled.
    ctl.add_network(&net, true);
    let _cleanup = SharedBrokerCleanup::new(backend, &net, &node);
    let link = NetnsLink::create();
    let relay = Relay::start(
        SocketAddr::new(link.host_addr().into(), 0),
        broker_addr(ctl.mqtt_url()),
    );
    let mut wire = Wire::subscribe(&ctl, &net, &node);
    let state = tempfile::tempdir().expect("create a state directory");
    let url = format!("mqtt://{}", relay.addr());
    let state_dir = state
        .path()
        .to_str()
        .expect("UTF-8 temporary path")
        .to_owned();
    let spool_bytes = if kill { SMALL_SPOOL } else { 1024 * 1024 }.to_string();
    let args = [
        "--mqtt-url",
        url.as_str(),
        "--network",
        net.as_str(),
        "--node-id",
        node.as_str(),
        "--interval",
        INTERVAL,
        "--state-dir",
        state_dir.as_str(),
        "--spool-max-bytes",
        spool_bytes.as_str(),
        "--spool-drain-rate",
        DRAIN_RATE,
        "--log",
        "meshtable_agent=debug",
    ];
    let from_ms = now_ms() - 60_000;
    let mut agent = NetnsAgent::start(&link, &args);

    // 1. Live: reports reach the controller through the namespace's link.
    wait_for(
        "20 reports stored before the outage",
        Duration::from_secs(60),
        || {
            agent.assert_running();
            wire.pump();
            let n = stored_times(&ctl, &net, &node, from_ms).len();
            if n >= 20 {
                Ok(())
            } else {
                Err(format!("{n} stored"))
            }
        },
    );

    // Reports sent before the controller knew the network are rejected
    // (unknown_network): a network added while the controller runs is seen
    // at its next registry reload, which a shared broker's traffic for other
    // networks can hold back for up to a second. What this test checks
    // starts at the first report stored.
    let first_stored = stored_times(&ctl, &net, &node, from_ms)[0];
    let first_seq = wire
        .arrivals
        .iter()
        .find(|a| a.time_ms == first_stored)
        .map(|a| a.seq)
        .expect("the first stored report arrived on the wire");

    // 2. The outage, for at least OUTAGE_INTERVALS of the agent's intervals
    //    (two more, as the reports collected around the edges may fall on
    //    either side of them).
    let spooled = |agent: &NetnsAgent| agent.stderr().matches(SPOOLED).count();
    let base = spooled(&agent);
    link.set_up(false);
    let down_ms = now_ms();
    if kill {
        wait_for("most of the outage", Duration::from_secs(60), || {
            agent.assert_running();
            wire.pump();
            let n = spooled(&agent) - base;
            if n >= KILL_AT {
                Ok(())
            } else {
                Err(format!("{n} spooled"))
            }
        });
        agent.kill();
        agent.restart(&link, &args);
    }
    wait_for("300 intervals of outage", Duration::from_secs(90), || {
        agent.assert_running();
        wire.pump();
        let n = spooled(&agent) - base;
        if n >= OUTAGE_INTERVALS + 2 {
            Ok(())
        } else {
            Err(format!("{n} spooled"))
        }
    });
    let up_ms = now_ms();
    link.set_up(true);
    eprintln!(
        "{what}: link down for {} ms ({} reports spooled meanwhile)",
        up_ms - down_ms,
        spooled(&agent) - base
    );

    // 3. The agent reconnects, replays its spool and goes on live.
    wait_for(
        "a live report collected after the link came back",
        RECONNECT_TIMEOUT,
        || {
            agent.assert_running();
            wire.pump();
            let live = wire
                .arrivals
                .iter()
                .any(|a| !a.backfill && a.time_ms > up_ms);
            let last = wire.arrivals.last().map(|a| (a.seq, a.backfill));
            if live {
                Ok(())
            } else {
                Err(format!("last arrival (seq, backfill): {last:?}"))
            }
        },
    );
    pump_for(&mut wire, Duration::from_millis(500));
    agent.kill();
    pump_for(&mut wire, Duration::from_millis(500));

    // 4. What the broker saw: in order, contiguous but for the spool's drops.
    let first: Vec<Arrival> = wire
        .first_arrivals()
        .into_iter()
        .filter(|a| a.seq >= first_seq)
        .collect();
    if first_seq > 0 {
        eprintln!(
            "{what}: seq 0..{first_seq} were sent before the controller knew the network; left out"
        );
    }
    let seqs: Vec<u64> = first.iter().map(|a| a.seq).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "{what}: reports arrived out of order: {seqs:?}"
    );
    let (lo, hi) = (seqs[0], *seqs.last().expect("reports arrived"));
    let got: BTreeSet<u64> = seqs.iter().copied().collect();
    let missing: Vec<u64> = (lo..=hi).filter(|s| !got.contains(s)).collect();
    let last = first.last().expect("reports arrived");
    let dropped = last.dropped;
    let during: Vec<&Arrival> = first
        .iter()
        .filter(|a| (down_ms..=up_ms).contains(&a.time_ms))
        .collect();
    eprintln!(
        "{what}: seq {lo}..={hi}, {} arrivals of {} reports, {} collected during the outage \
         delivered, {} missing, dropped counter {dropped}, relay connections {}",
        wire.arrivals.len(),
        got.len(),
        during.len(),
        missing.len(),
        relay.accepted()
    );
    assert!(
        relay.accepted() >= 2,
        "{what}: the agent never reconnected (relay connections: {})",
        relay.accepted()
    );
    // The reports the spool cap dropped: what the agent counts.
    let mut dropped_run: &[u64] = &missing;
    if kill {
        assert!(
            !missing.is_empty(),
            "{what}: a {SMALL_SPOOL}-byte spool kept all {} reports of the outage",
            during.len()
        );
        // One run of the oldest reports, dropped by the cap; and at most one
        // more, alone: either the report the kill -9 caught before it was
        // durable (its number reserved, its record not yet written, or torn
        // and discarded when the restarted agent reopened the spool), a gap
        // by design (agent/src/state.rs, "Write-ahead") that nothing counts;
        // or one more counted drop, when the cap found the oldest record in
        // flight and dropped the next (agent/src/spool.rs, "Bounds").
        let gaps = missing.windows(2).filter(|w| w[1] != w[0] + 1).count();
        assert!(
            gaps <= 1
                && (gaps == 0 || missing[missing.len() - 2] + 1 != missing[missing.len() - 1]),
            "{what}: the spool lost more than the oldest reports and one torn record: {missing:?}"
        );
        if gaps == 1 && dropped != missing.len() as u64 {
            dropped_run = &missing[..missing.len() - 1];
        }
    } else {
        assert_eq!(missing, Vec::<u64>::new(), "{what}: reports lost");
        assert!(
            during.len() >= OUTAGE_INTERVALS,
            "{what}: only {} reports collected during the outage arrived",
            during.len()
        );
    }
    // Every report of the run is counted. A record the cap drops while in
    // flight may still arrive (agent/src/spool.rs, "Bounds"), so the count
    // may exceed the missing by what the agent has in flight (at most 32,
    // rumqttc's window in agent/src/publish.rs).
    assert!(
        dropped_run.len() as u64 <= dropped && dropped <= missing.len() as u64 + 32,
        "{what}: reports missing {missing:?} but the agent counted {dropped} dropped"
    );

    // 5. Backfill: every sending of a report collected during the outage is
    //    marked; the reports before it went out live.
    let unmarked: Vec<u64> = wire
        .arrivals
        .iter()
        .filter(|a| (down_ms..=up_ms).contains(&a.time_ms) && !a.backfill)
        .map(|a| a.seq)
        .collect();
    assert_eq!(
        unmarked,
        Vec::<u64>::new(),
        "{what}: reports collected during the outage sent without the backfill mark"
    );
    assert!(
        !first[0].backfill,
        "{what}: the first report (seq {lo}) was not sent live"
    );

    // 6. The controller stores every report that arrived, once each.
    let want: Vec<i64> = {
        let mut t: Vec<i64> = first.iter().map(|a| a.time_ms).collect();
        t.sort_unstable();
        t
    };
    let by_time: BTreeMap<i64, u64> = first.iter().map(|a| (a.time_ms, a.seq)).collect();
    wait_for(
        "the controller to store every report that arrived, once",
        Duration::from_secs(30),
        || {
            let have = stored_times(&ctl, &net, &node, from_ms);
            if have == want {
                return Ok(());
            }
            let extra: Vec<i64> = have
                .iter()
                .filter(|t| !by_time.contains_key(t))
                .copied()
                .collect();
            let dup = have.windows(2).filter(|w| w[0] == w[1]).count();
            Err(format!(
                "{} stored of {} ({} not on the wire, {dup} twice)",
                have.len(),
                want.len(),
                extra.len()
            ))
        },
    );
    let latest = ctl.node_detail(&net, &node);
    eprintln!(
        "{what}: node detail latest sample seq: {}",
        latest["latest"]["seq"]
    );

    // 7. The loss is counted by the controller too.
    wait_for(
        "meshtable_agent_reports_dropped_total of the network to equal the agent's count",
        Duration::from_secs(10),
        || {
            let counted = ctl.metric(
                "meshtable_agent_reports_dropped_total",
                &[("network", &net)],
            );
            if counted == Some(dropped as f64) {
                Ok(())
            } else {
                Err(format!("{counted:?}, want {dropped}"))
            }
        },
    );
}
