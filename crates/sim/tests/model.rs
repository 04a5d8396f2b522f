//! Properties of the simulated routers over many ticks, for every node of both
//! embedded snapshots and several seeds: counters only grow within a boot,
//! rates stay plausible and follow the client count, and every report and
//! hello survives the real wire format.

use std::sync::Arc;

use meshtable_proto::{
    Encoding, Hello, InterfaceCounters, Kind, Message, Report, Telemetry, encode,
};
use meshtable_sim::Snapshot;
use meshtable_sim::model::{NodeModel, USER_HZ};
use meshtable_sim::profile::{NodeProfile, Role, fleet};
use meshtable_sim::rng::Rng;

/// 2025-11-24T16:00:00Z, a Monday afternoon.
const START_MS: u64 = 1_764_000_000_000;

fn snapshots() -> [(&'static str, Snapshot); 2] {
    [
        ("leipzig", Snapshot::leipzig()),
        ("bremen", Snapshot::bremen()),
    ]
}

fn counters(i: &InterfaceCounters) -> [u64; 8] {
    [
        i.rx_bytes,
        i.tx_bytes,
        i.rx_packets,
        i.tx_packets,
        i.rx_errors,
        i.tx_errors,
        i.rx_dropped,
        i.tx_dropped,
    ]
}

fn cpu(t: &Telemetry) -> [u64; 8] {
    let c = &t.cpu;
    [
        c.user, c.nice, c.system, c.idle, c.iowait, c.irq, c.softirq, c.steal,
    ]
}

/// Most a link of this node can plausibly carry, bits per second.
fn max_bps(p: &NodeProfile) -> f64 {
    if p.server { 1e9 } else { 100e6 }
}

/// Checks one report against the previous one of the same boot, `dt_ms` later.
fn check_step(p: &NodeProfile, prev: &Telemetry, t: &Telemetry, dt_ms: u64) {
    let ctx = format!("node {} seq {}", p.node_id, t.seq);
    assert_eq!(t.boot_id, prev.boot_id, "{ctx}");
    assert_eq!(t.seq, prev.seq + 1, "{ctx}");
    assert_eq!(t.uptime_ms, prev.uptime_ms + dt_ms, "{ctx}");
    assert_eq!(t.time_ms, prev.time_ms + dt_ms, "{ctx}");
    let dt = dt_ms as f64 / 1000.0;

    for (a, b) in prev.interfaces.iter().zip(&t.interfaces) {
        assert_eq!(a.name, b.name, "{ctx}");
        for (x, y) in counters(a).iter().zip(counters(b)) {
            assert!(y >= *x, "{ctx} {}: counter went down {x} -> {y}", b.name);
        }
        for (bytes, packets) in [
            (b.rx_bytes - a.rx_bytes, b.rx_packets - a.rx_packets),
            (b.tx_bytes - a.tx_bytes, b.tx_packets - a.tx_packets),
        ] {
            let bps = bytes as f64 * 8.0 / dt;
            assert!(bps <= max_bps(p), "{ctx} {}: {bps} bit/s", b.name);
            // Packets between 40 and 1600 bytes, give or take rounding.
            assert!(bytes + 40 >= packets * 40, "{ctx} {}", b.name);
            assert!(bytes <= packets * 1600 + 1600, "{ctx} {}", b.name);
        }
    }

    let (c0, c1) = (cpu(prev), cpu(t));
    for (x, y) in c0.iter().zip(c1) {
        assert!(y >= *x, "{ctx}: cpu counter went down");
    }
    let total: u64 = c1.iter().sum::<u64>() - c0.iter().sum::<u64>();
    let want = dt * USER_HZ * f64::from(p.nproc);
    assert!(
        (total as f64 - want).abs() <= 9.0,
        "{ctx}: {total} cpu ticks in {dt} s, want {want}"
    );
    let idle = (c1[3] - c0[3]) as f64;
    if want >= 1000.0 {
        assert!(idle / want >= 0.02, "{ctx}: never idle");
    }
}

/// Checks what holds for every report on its own.
fn check_report(p: &NodeProfile, t: &Telemetry) {
    t.validate().unwrap();
    assert_eq!(t.node, p.node_id);
    assert_eq!(t.interfaces.len(), p.interfaces.len());
    assert!(t.mem_available <= t.mem_total && t.mem_available > 0);
    assert!(t.rootfs_free <= t.rootfs_size);
    assert!(
        t.load
            .iter()
            .all(|l| l.is_finite() && *l >= 0.0 && *l < 100.0)
    );
    for i in &t.interfaces {
        assert!(i.rx_dropped <= i.rx_packets && i.tx_errors <= i.tx_packets);
    }
    // Counters since boot fit the uptime at plausible rates.
    let up = t.uptime_ms as f64 / 1000.0;
    for i in &t.interfaces {
        let bps = (i.rx_bytes.max(i.tx_bytes)) as f64 * 8.0 / up.max(1.0);
        assert!(
            bps <= max_bps(p),
            "{} {}: {bps} bit/s since boot",
            p.node_id,
            i.name
        );
    }
}

#[test]
fn counters_grow_and_rates_stay_plausible_over_many_ticks() {
    for (name, snapshot) in snapshots() {
        for seed in 0..4u64 {
            let mut steps = Rng::new(seed.wrapping_mul(7919) + 11);
            let mut reboots = 0;
            for profile in fleet(&snapshot, seed) {
                let p = Arc::new(profile);
                let mut m = NodeModel::new(Arc::clone(&p), seed);
                let mut wall = START_MS;
                let mut prev = m.report(wall, 0);
                assert_eq!(prev.seq, 0);
                assert_eq!(prev.uptime_ms, p.start_uptime_ms);
                check_report(&p, &prev);
                let reboot_at = steps.chance(0.25).then(|| steps.int(1, 60));
                for tick in 0..80 {
                    let dt = steps.int(200, 300_000);
                    wall += dt;
                    if Some(tick) == reboot_at {
                        let old = prev.boot_id.clone();
                        m.reboot();
                        m.advance(dt, wall as i64);
                        let t = m.report(wall, 0);
                        assert_ne!(t.boot_id, old, "{name} {}", p.node_id);
                        assert_eq!((t.seq, t.uptime_ms), (0, dt));
                        for i in &t.interfaces {
                            let bps = i.rx_bytes.max(i.tx_bytes) as f64 * 8000.0 / dt as f64;
                            assert!(bps <= max_bps(&p), "{} after reboot", p.node_id);
                        }
                        check_report(&p, &t);
                        prev = t;
                        reboots += 1;
                        continue;
                    }
                    m.advance(dt, wall as i64);
                    let t = m.report(wall, 0);
                    check_report(&p, &t);
                    check_step(&p, &prev, &t, dt);
                    prev = t;
                }
            }
            assert!(reboots > 0, "{name} seed {seed}: the reboot path ran");
        }
    }
}

/// Mean rate of one interface's counter over a simulated day, bytes per second.
fn day_rate(p: &Arc<NodeProfile>, seed: u64, iface: &str, tx: bool) -> f64 {
    let mut m = NodeModel::new(Arc::clone(p), seed);
    let pick = |t: &Telemetry| {
        let i = t.interfaces.iter().find(|i| i.name == iface).unwrap();
        if tx { i.tx_bytes } else { i.rx_bytes }
    };
    let first = pick(&m.report(START_MS, 0));
    let mut wall = START_MS;
    for _ in 0..288 {
        wall += 300_000;
        m.advance(300_000, wall as i64);
    }
    let last = pick(&m.report(wall, 0));
    (last - first) as f64 / 86_400.0
}

#[test]
fn traffic_follows_the_clients() {
    for seed in [1u64, 2, 3] {
        let profiles: Vec<Arc<NodeProfile>> = fleet(&Snapshot::bremen(), seed)
            .into_iter()
            .filter(|p| !p.server)
            .map(Arc::new)
            .collect();
        let mut busy = Vec::new();
        let mut idle = Vec::new();
        for p in &profiles {
            // Downstream to the clients leaves the node on br-client.
            let down = day_rate(p, seed, "br-client", true);
            let c = f64::from(p.clients);
            assert!(
                down >= c * 3e3 * 0.5 && down <= c * 40e3 * 0.9 + 600.0,
                "{}: {c} clients, {down} B/s",
                p.node_id
            );
            // The same traffic arrives on the uplink, with some overhead.
            let uplink = p
                .interfaces
                .iter()
                .find(|i| {
                    i.client_rx > 0.0 && i.role != Role::ClientBridge && i.role != Role::ClientRadio
                })
                .map(|i| i.info.name.clone());
            if let Some(uplink) = uplink {
                let rx = day_rate(p, seed, &uplink, false);
                assert!(
                    rx >= down * 0.9,
                    "{}: uplink {rx} < bridge {down}",
                    p.node_id
                );
            }
            // Protocol chatter alone keeps every mesh radio busy.
            if p.interfaces.iter().any(|i| i.info.name == "mesh0") {
                let chatter = day_rate(p, seed, "mesh0", true);
                assert!(
                    (300.0..=5_000.0 + c * 40e3).contains(&chatter),
                    "{}",
                    p.node_id
                );
            }
            if p.clients >= 5 {
                busy.push(down / c);
            } else if p.clients == 0 {
                idle.push(down);
            }
        }
        assert!(
            busy.len() >= 40 && idle.len() >= 400,
            "{} {}",
            busy.len(),
            idle.len()
        );
        let per_client = busy.iter().sum::<f64>() / busy.len() as f64;
        let idle_mean = idle.iter().sum::<f64>() / idle.len() as f64;
        // Average client: some 20 kB/s over the day; an empty bridge: chatter only.
        assert!((5e3..30e3).contains(&per_client), "{per_client}");
        assert!(idle_mean < 500.0, "{idle_mean}");
    }
}

#[test]
fn same_seed_same_fleet() {
    let s = Snapshot::leipzig();
    let run = |seed| -> Vec<Telemetry> {
        fleet(&s, seed)
            .into_iter()
            .map(|p| {
                let mut m = NodeModel::new(Arc::new(p), seed);
                m.advance(10_000, START_MS as i64);
                m.report(START_MS, 0)
            })
            .collect()
    };
    assert_eq!(run(9), run(9));
    assert_ne!(run(9), run(10));
}

fn round_trip<M: Message + PartialEq + std::fmt::Debug>(msg: &M, kind: Kind) {
    for encoding in [Encoding::Cbor, Encoding::Json] {
        let bytes = encode(msg, encoding);
        // A gateway with 160 batman-adv neighbours needs some 20 KiB in JSON.
        assert!(bytes.len() < 32 * 1024, "{} bytes", bytes.len());
        let (decoded, got) = Report::decode(kind, &bytes).unwrap();
        assert_eq!(got, encoding);
        let same = match decoded {
            Report::Hello(h) => format!("{h:?}"),
            Report::State(s) => format!("{s:?}"),
            Report::Telemetry(t) => format!("{t:?}"),
        };
        assert_eq!(same, format!("{msg:?}"));
    }
}

#[test]
fn telemetry_and_hello_pass_the_wire_format() {
    for (_, snapshot) in snapshots() {
        for p in fleet(&snapshot, 5) {
            let hello: Hello = p.hello(10_000);
            round_trip(&hello, Kind::Hello);
            let mut m = NodeModel::new(Arc::new(p), 5);
            let mut wall = START_MS;
            for _ in 0..3 {
                wall += 10_000;
                m.advance(10_000, wall as i64);
                let t = m.report(wall, 2);
                assert_eq!(t.dropped, 2);
                round_trip(&t, Kind::Telemetry);
            }
        }
    }
}
