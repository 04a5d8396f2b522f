//! Compact telemetry (v2) end to end: the real agent, compact by default,
//! reports to `meshtable serve`; the controller is killed (`kill -9`) and
//! started again, and every report must be stored once, with the counters
//! the agent sent and rates derived from them, and none refused as
//! `missing_base`.
//!
//! On Mosquitto (service suite) the agent stays connected while the
//! controller is down and goes on sending compact reports, which wait in the
//! controller's persistent session: the restarted controller has no report
//! in memory and must find each node's base in the database. A spy
//! subscriber reassembles what the agent published, the ground truth the
//! stored counters are compared with. On the embedded broker the broker
//! dies with the controller and the agent reconnects (its first report of a
//! connection is full), so that variant checks the pipeline, not the gap.

use std::collections::BTreeMap;
use std::time::Duration;

use meshtable_proto::{CompactTelemetry, Reassembler, Telemetry, decode};
use meshtable_store::{InterfaceRow, Store};
use meshtable_tests::{
    Agent, Backend, Controller, MqttClient, SharedBrokerCleanup, unique, wait_for,
};

/// Reports stored before the kill, and after the restart.
const BEFORE: usize = 6;
const AFTER: usize = 6;

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

/// The stored interface rows of the node, by seq.
fn stored(
    rt: &tokio::runtime::Runtime,
    store: &Store,
    network: &str,
    node: &str,
) -> BTreeMap<i64, Vec<InterfaceRow>> {
    let mut by_seq: BTreeMap<i64, Vec<InterfaceRow>> = BTreeMap::new();
    for row in rt
        .block_on(store.interface_rows(network, node))
        .expect("read the stored interface rows")
    {
        by_seq.entry(row.seq).or_default().push(row);
    }
    by_seq
}

fn scenario(backend: &Backend) {
    let mut ctl = Controller::start(backend);
    let network = unique("compact");
    let node = unique("n");
    ctl.add_network(&network, true);
    let _cleanup = SharedBrokerCleanup::new(backend, &network, &node);
    let database_url = backend.database_url().map_or_else(
        || format!("sqlite://{}/meshtable.db", ctl.data_dir().display()),
        str::to_owned,
    );
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let store = rt
        .block_on(Store::connect(&database_url))
        .expect("connect to the controller's database");

    // The spy sees what the agent publishes, where the broker outlives the
    // controller.
    let topic = format!("meshtable/v1/{network}/{node}/telemetry");
    let mut spy = backend.mqtt_url().map(|url| {
        let mut c = MqttClient::connect(url, &unique("spy"));
        c.subscribe(&topic);
        c
    });

    let state = tempfile::tempdir().expect("state directory");
    // No --compact: compact is the default.
    let mut agent = Agent::start(ctl.mqtt_url(), &network, &node, "1s", state.path());

    let before = wait_for(
        "reports stored before the restart",
        Duration::from_secs(60),
        || {
            let s = stored(&rt, &store, &network, &node);
            if s.len() >= BEFORE {
                Ok(s.keys().max().copied().unwrap_or(0))
            } else {
                Err(format!("{} stored\n{}", s.len(), agent.log_tail()))
            }
        },
    );
    let rejected_before = ctl.metric(
        "meshtable_ingest_rejected_total",
        &[("reason", "missing_base")],
    );
    assert_eq!(rejected_before, Some(0.0), "before the restart");

    ctl.kill_and_restart(backend, &[]);

    let last = wait_for(
        "reports stored after the restart",
        Duration::from_secs(90),
        || {
            let s = stored(&rt, &store, &network, &node);
            let max = s.keys().max().copied().unwrap_or(0);
            if max >= before + AFTER as i64 {
                Ok(max)
            } else {
                Err(format!(
                    "up to seq {max}, before the restart {before}\n{}\n{}",
                    ctl.log_tail(),
                    agent.log_tail()
                ))
            }
        },
    );
    agent.assert_running();
    ctl.assert_running();

    // Every report from the first to the last, stored once: no gap.
    let rows = stored(&rt, &store, &network, &node);
    let seqs: Vec<i64> = rows.keys().copied().filter(|&s| s <= last).collect();
    let want: Vec<i64> = (0..=last).collect();
    assert_eq!(seqs, want, "stored seqs");
    let boots: std::collections::BTreeSet<&str> = rows
        .values()
        .flatten()
        .map(|r| r.boot_id.as_str())
        .collect();
    assert_eq!(boots.len(), 1, "one boot: {boots:?}");
    assert_eq!(
        ctl.metric(
            "meshtable_ingest_rejected_total",
            &[("reason", "missing_base")]
        ),
        Some(0.0),
        "after the restart:\n{}",
        ctl.log_tail()
    );
    assert_eq!(
        ctl.metric(
            "meshtable_ingest_rejected_total",
            &[("reason", "unknown_version")]
        ),
        Some(0.0)
    );

    // Rates: each derived from the report before it.
    let mut rates = 0;
    for (seq, ifaces) in &rows {
        let Some(prev) = rows.get(&(seq - 1)) else {
            continue;
        };
        for i in ifaces {
            let Some(p) = prev.iter().find(|p| p.name == i.name) else {
                continue;
            };
            let dt = (i.uptime_ms - p.uptime_ms) as f64 / 1000.0;
            if dt <= 0.0 || i.rx_bytes < p.rx_bytes || i.tx_bytes < p.tx_bytes {
                continue;
            }
            let rx = (i.rx_bytes - p.rx_bytes) as f64 * 8.0 / dt;
            let tx = (i.tx_bytes - p.tx_bytes) as f64 * 8.0 / dt;
            let close =
                |a: Option<f64>, b: f64| a.is_some_and(|a| (a - b).abs() <= 1e-6 * b.max(1.0));
            assert!(
                close(i.rx_bps, rx) && close(i.tx_bps, tx),
                "seq {seq} {}: stored {:?}/{:?}, counters give {rx}/{tx}",
                i.name,
                i.rx_bps,
                i.tx_bps
            );
            rates += 1;
        }
    }
    assert!(rates >= last as usize, "{rates} rates checked");

    // What the agent sent, reassembled by the spy, is what was stored; and
    // compact reports went out after the restart.
    if let Some(spy) = spy.as_mut() {
        let mut reassembler = Reassembler::new();
        let mut sent: BTreeMap<i64, Telemetry> = BTreeMap::new();
        let mut compact_after = 0;
        while let Some(m) = spy.wait_message(&topic, Duration::from_secs(3)) {
            let v2 = decode::<CompactTelemetry>(&m.payload).is_ok();
            let (t, _) = reassembler
                .decode("spy", &m.payload)
                .expect("the spy reassembles every report");
            if v2 && i64::try_from(t.seq).unwrap() > before {
                compact_after += 1;
            }
            sent.insert(i64::try_from(t.seq).unwrap(), t);
            if sent.keys().max().copied().unwrap_or(0) >= last {
                break;
            }
        }
        assert!(
            compact_after >= AFTER - 1,
            "{compact_after} compact reports after the restart"
        );
        let mut compared = 0;
        for (seq, t) in &sent {
            let Some(ifaces) = rows.get(seq) else {
                continue;
            };
            for c in &t.interfaces {
                let row = ifaces
                    .iter()
                    .find(|r| r.name == c.name)
                    .unwrap_or_else(|| panic!("seq {seq}: interface {} not stored", c.name));
                let sat = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                assert_eq!(
                    (row.rx_bytes, row.tx_bytes, row.rx_packets),
                    (sat(c.rx_bytes), sat(c.tx_bytes), sat(c.rx_packets)),
                    "seq {seq} {}",
                    c.name
                );
                compared += 1;
            }
        }
        assert!(compared > 0, "no report compared");
        eprintln!(
            "compact e2e: {} reports stored, {} compared with the spy, {compact_after} compact after the restart",
            seqs.len(),
            sent.len()
        );
    }
    rt.block_on(store.close()).expect("close the store");
}
