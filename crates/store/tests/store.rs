//! The store's behaviour through its public API, on every backend (see
//! `common::each_backend`).

mod common;

use anyhow::{Context, ensure};
use common::each_backend;
use meshtable_proto::{CpuTimes, InterfaceCounters, Status, Telemetry, examples};
use meshtable_store::{
    Backend, Metric, NetworkSummary, NodeStatus, Point, Recorded, Store, StoreError,
};
use serde_json::json;

/// 2025-11-24T16:00:00Z: router clocks in these tests start here.
const T0: i64 = 1_764_000_000_000;

/// A report of boot `boot` whose router clock reads `T0 + uptime_ms`.
fn report(
    node: &str,
    boot: &str,
    seq: u64,
    uptime_ms: u64,
    ifaces: &[(&str, u64, u64)],
) -> Telemetry {
    let mut t = examples::telemetry_v1();
    t.node = node.to_owned();
    t.boot_id = boot.to_owned();
    t.seq = seq;
    t.uptime_ms = uptime_ms;
    t.time_ms = T0 as u64 + uptime_ms;
    t.interfaces = ifaces
        .iter()
        .map(|&(name, rx, tx)| InterfaceCounters {
            name: name.to_owned(),
            rx_bytes: rx,
            tx_bytes: tx,
            ..InterfaceCounters::default()
        })
        .collect();
    t
}

/// Received 100 ms after the router's clock says it was sent.
fn received(t: &Telemetry) -> i64 {
    t.time_ms as i64 + 100
}

async fn point_at(
    store: &Store,
    node: &str,
    metric: &Metric,
    t: i64,
) -> anyhow::Result<Option<f64>> {
    let points = store.series("net", node, metric, t, t).await?;
    ensure!(points.len() <= 1, "several points at {t}: {points:?}");
    Ok(points.first().map(|p| p.v))
}

#[tokio::test]
async fn rates() -> anyhow::Result<()> {
    each_backend("rates", |store| async move {
        /// One report: boot, seq, uptime in seconds, interfaces (name, rx bytes, tx bytes).
        type Step = (&'static str, u64, u64, &'static [(&'static str, u64, u64)]);
        /// What storing it gives, and the rates per interface (name, rx bps, tx bps).
        type Expect = (Recorded, &'static [(&'static str, Option<f64>, Option<f64>)]);
        use Recorded::{Duplicate, Inserted};
        let cases: &[(&str, &[(Step, Expect)])] = &[
            (
                "first sample of a boot",
                &[(("b1", 0, 100, &[("eth0", 1000, 2000)]), (Inserted, &[("eth0", None, None)]))],
            ),
            (
                "steady traffic",
                &[
                    (("b1", 0, 100, &[("eth0", 0, 0)]), (Inserted, &[("eth0", None, None)])),
                    (
                        ("b1", 1, 110, &[("eth0", 10_000, 5_000)]),
                        (Inserted, &[("eth0", Some(8000.0), Some(4000.0))]),
                    ),
                    (
                        ("b1", 2, 120, &[("eth0", 10_000, 5_000)]),
                        (Inserted, &[("eth0", Some(0.0), Some(0.0))]),
                    ),
                ],
            ),
            (
                "new boot",
                &[
                    (("b1", 7, 1000, &[("eth0", 5000, 5000)]), (Inserted, &[("eth0", None, None)])),
                    (("b2", 0, 1010, &[("eth0", 9000, 100)]), (Inserted, &[("eth0", None, None)])),
                    (
                        ("b2", 1, 1020, &[("eth0", 10_000, 100)]),
                        (Inserted, &[("eth0", Some(800.0), Some(0.0))]),
                    ),
                ],
            ),
            (
                "counter reset or wrap",
                &[
                    (("b1", 0, 100, &[("eth0", 5000, 5000)]), (Inserted, &[("eth0", None, None)])),
                    (
                        ("b1", 1, 110, &[("eth0", 100, 6000)]),
                        (Inserted, &[("eth0", None, Some(800.0))]),
                    ),
                    (
                        ("b1", 2, 120, &[("eth0", 1100, 6000)]),
                        (Inserted, &[("eth0", Some(800.0), Some(0.0))]),
                    ),
                ],
            ),
            (
                "interface missing in the previous sample",
                &[
                    (("b1", 0, 100, &[("eth0", 0, 0)]), (Inserted, &[("eth0", None, None)])),
                    (
                        ("b1", 1, 110, &[("eth0", 1000, 0), ("wlan0", 1000, 0)]),
                        (Inserted, &[("eth0", Some(800.0), Some(0.0)), ("wlan0", None, None)]),
                    ),
                ],
            ),
            (
                "zero uptime delta",
                &[
                    (("b1", 0, 100, &[("eth0", 0, 0)]), (Inserted, &[("eth0", None, None)])),
                    // Same uptime: stored with a distinct time (see below), no rate.
                    (("b1", 1, 100, &[("eth0", 1000, 1000)]), (Inserted, &[("eth0", None, None)])),
                ],
            ),
            (
                "out-of-order seq",
                &[
                    (("b1", 0, 0, &[("eth0", 0, 0)]), (Inserted, &[("eth0", None, None)])),
                    // seq 1 is late: seq 2 is against seq 0.
                    (
                        ("b1", 2, 20, &[("eth0", 2000, 0)]),
                        (Inserted, &[("eth0", Some(800.0), Some(0.0))]),
                    ),
                    // The late one is against the largest seq below it, seq 0.
                    (
                        ("b1", 1, 10, &[("eth0", 500, 0)]),
                        (Inserted, &[("eth0", Some(400.0), Some(0.0))]),
                    ),
                    (
                        ("b1", 3, 30, &[("eth0", 3000, 0)]),
                        (Inserted, &[("eth0", Some(800.0), Some(0.0))]),
                    ),
                ],
            ),
            (
                "duplicate",
                &[
                    (("b1", 0, 100, &[("eth0", 0, 0)]), (Inserted, &[("eth0", None, None)])),
                    (
                        ("b1", 1, 110, &[("eth0", 1000, 0)]),
                        (Inserted, &[("eth0", Some(800.0), Some(0.0))]),
                    ),
                    // Same (boot, seq) again, whatever it says: nothing stored.
                    (("b1", 1, 111, &[("eth0", 9999, 9999)]), (Duplicate, &[("eth0", None, None)])),
                    (
                        ("b1", 2, 120, &[("eth0", 2000, 0)]),
                        (Inserted, &[("eth0", Some(800.0), Some(0.0))]),
                    ),
                ],
            ),
        ];
        for (i, (case, steps)) in cases.iter().enumerate() {
            let node = format!("n{i}");
            for (j, ((boot, seq, uptime_s, ifaces), (recorded, rates))) in steps.iter().enumerate() {
                // Distinct times even when the uptime repeats.
                let mut t = report(&node, boot, *seq, uptime_s * 1000, ifaces);
                t.time_ms += j as u64;
                let got = store.record_telemetry("net", &node, &t, received(&t)).await?;
                ensure!(got == *recorded, "{case}, step {j}: got {got:?}, want {recorded:?}");
                for (name, rx, tx) in *rates {
                    let at = t.time_ms as i64;
                    let rx_got = point_at(&store, &node, &Metric::RxBps((*name).into()), at).await?;
                    let tx_got = point_at(&store, &node, &Metric::TxBps((*name).into()), at).await?;
                    ensure!(
                        (rx_got, tx_got) == (*rx, *tx),
                        "{case}, step {j}, {name}: got rx {rx_got:?} tx {tx_got:?}, want rx {rx:?} tx {tx:?}"
                    );
                }
            }
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn duplicate_changes_nothing() -> anyhow::Result<()> {
    each_backend("duplicate_changes_nothing", |store| async move {
        let t = report("n1", "b1", 5, 1000, &[("eth0", 1, 2)]);
        assert_eq!(
            store.record_telemetry("net", "n1", &t, T0 + 10).await?,
            Recorded::Inserted
        );
        store
            .record_state("net", "n1", Status::Offline, T0 + 20)
            .await?;
        // Redelivered later: already stored, so neither the sample nor the
        // node's liveness changes.
        assert_eq!(
            store.record_telemetry("net", "n1", &t, T0 + 30).await?,
            Recorded::Duplicate
        );
        let n = store.node_detail("net", "n1").await?.context("node")?;
        assert_eq!(n.summary.status, NodeStatus::Offline);
        assert_eq!(n.summary.last_seen_ms, T0 + 20);
        assert_eq!(n.latest.context("latest")?.received_ms, T0 + 10);
        // The same (boot, seq) on another node or network is another report.
        assert_eq!(
            store.record_telemetry("net", "n2", &t, T0 + 40).await?,
            Recorded::Inserted
        );
        assert_eq!(
            store.record_telemetry("other", "n1", &t, T0 + 40).await?,
            Recorded::Inserted
        );
        Ok(())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_duplicates_store_once() -> anyhow::Result<()> {
    each_backend("concurrent_duplicates_store_once", |store| async move {
        let mut tasks = Vec::new();
        for seq in 0..4u64 {
            for copy in 0..4i64 {
                let store = store.clone();
                tasks.push(tokio::spawn(async move {
                    let t = report(
                        "n1",
                        "b1",
                        seq,
                        1000 * (seq + 1),
                        &[("eth0", 1000 * seq, 0)],
                    );
                    store.record_telemetry("net", "n1", &t, T0 + copy).await
                }));
            }
        }
        let mut inserted = 0;
        for task in tasks {
            if task.await?? == Recorded::Inserted {
                inserted += 1;
            }
        }
        assert_eq!(inserted, 4);
        let load = store
            .series("net", "n1", &Metric::Load1, 0, i64::MAX)
            .await?;
        assert_eq!(load.len(), 4);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn liveness() -> anyhow::Result<()> {
    each_backend("liveness", |store| async move {
        let status = |store: Store| async move {
            let n = store.node_detail("net", "n1").await?.context("node")?;
            anyhow::Ok((
                n.summary.status,
                n.summary.status_since_ms,
                n.summary.last_seen_ms,
            ))
        };
        // The first message of any kind creates the node.
        store
            .record_state("net", "n1", Status::Offline, 1000)
            .await?;
        assert_eq!(
            status(store.clone()).await?,
            (NodeStatus::Offline, 1000, 1000)
        );
        let n = &store.nodes(Some("net")).await?[0];
        assert_eq!((n.first_seen_ms, n.hostname.as_deref()), (1000, None));

        store
            .record_state("net", "n1", Status::Online, 2000)
            .await?;
        assert_eq!(
            status(store.clone()).await?,
            (NodeStatus::Online, 2000, 2000)
        );
        // Same status: status_since stays.
        store
            .record_hello("net", "n1", &examples::hello_v1(), 3000)
            .await?;
        assert_eq!(
            status(store.clone()).await?,
            (NodeStatus::Online, 2000, 3000)
        );
        let t = report("n1", "b1", 0, 1000, &[]);
        store.record_telemetry("net", "n1", &t, 4000).await?;
        assert_eq!(
            status(store.clone()).await?,
            (NodeStatus::Online, 2000, 4000)
        );
        // last_seen never goes back.
        store
            .record_state("net", "n1", Status::Online, 3500)
            .await?;
        assert_eq!(
            status(store.clone()).await?,
            (NodeStatus::Online, 2000, 4000)
        );
        store
            .record_state("net", "n1", Status::Offline, 5000)
            .await?;
        assert_eq!(
            status(store.clone()).await?,
            (NodeStatus::Offline, 5000, 5000)
        );
        // Telemetry brings it back.
        let t = report("n1", "b1", 1, 2000, &[]);
        store.record_telemetry("net", "n1", &t, 6000).await?;
        assert_eq!(
            status(store.clone()).await?,
            (NodeStatus::Online, 6000, 6000)
        );
        let n = &store.nodes(Some("net")).await?[0];
        assert_eq!(n.first_seen_ms, 1000);
        assert_eq!(n.hostname.as_deref(), Some("leipzig-0001"));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn sweep_offline() -> anyhow::Result<()> {
    each_backend("sweep_offline", |store| async move {
        let mut hello = examples::hello_v1();
        hello.interval_ms = 10_000;
        // "fast" reports every 10 s, "slow" has no hello (default 60 s),
        // "gone" said offline itself.
        store.record_hello("net", "fast", &hello, 0).await?;
        store.record_state("net", "slow", Status::Online, 0).await?;
        store
            .record_state("net", "gone", Status::Offline, 0)
            .await?;
        store
            .record_state("other", "fast", Status::Online, 0)
            .await?;
        store.record_hello("other", "fast", &hello, 0).await?;

        // (now, expected changes)
        let steps: &[(i64, &[(&str, &str)])] = &[
            (30_000, &[]),
            (30_001, &[("net", "fast"), ("other", "fast")]),
            (30_002, &[]),
            (180_000, &[]),
            (180_001, &[("net", "slow")]),
        ];
        for (now, expect) in steps {
            let got = store.sweep_offline(*now, 3, 60_000).await?;
            let expect: Vec<(String, String)> = expect
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect();
            ensure!(got == expect, "at {now}: got {got:?}, want {expect:?}");
        }
        let n = store.node_detail("net", "fast").await?.context("node")?;
        assert_eq!(
            (n.summary.status, n.summary.status_since_ms),
            (NodeStatus::Offline, 30_001)
        );
        // Seen again: online, and swept again only after three more intervals.
        store
            .record_state("net", "fast", Status::Online, 200_000)
            .await?;
        assert!(store.sweep_offline(230_000, 3, 60_000).await?.is_empty());
        assert_eq!(store.sweep_offline(230_001, 3, 60_000).await?.len(), 1);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn listings_and_counts() -> anyhow::Result<()> {
    each_backend("listings_and_counts", |store| async move {
        assert!(store.networks().await?.is_empty());
        assert!(store.status_counts().await?.is_empty());
        store
            .record_state("bremen", "b1", Status::Online, 1)
            .await?;
        store
            .record_state("leipzig", "l2", Status::Offline, 1)
            .await?;
        store
            .record_state("leipzig", "l1", Status::Online, 1)
            .await?;
        store
            .record_state("leipzig", "shared", Status::Online, 1)
            .await?;
        store
            .record_state("bremen", "shared", Status::Offline, 1)
            .await?;

        let networks = store.networks().await?;
        let net = |id: &str, nodes, online, offline| NetworkSummary {
            id: id.to_owned(),
            nodes,
            online,
            offline,
        };
        assert_eq!(
            networks,
            vec![net("bremen", 2, 1, 1), net("leipzig", 3, 2, 1)]
        );

        store
            .record_state("bremen", "shared", Status::Online, 2)
            .await?;
        let counts = store.status_counts().await?;
        let c = |n: &str, s, k| (n.to_owned(), s, k);
        assert_eq!(
            counts,
            vec![
                c("bremen", NodeStatus::Online, 2),
                c("bremen", NodeStatus::Offline, 0),
                c("leipzig", NodeStatus::Online, 2),
                c("leipzig", NodeStatus::Offline, 1),
            ]
        );

        let ids = |v: Vec<meshtable_store::NodeSummary>| {
            v.into_iter()
                .map(|n| format!("{}/{}", n.network, n.node))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            ids(store.nodes(None).await?),
            [
                "bremen/b1",
                "bremen/shared",
                "leipzig/l1",
                "leipzig/l2",
                "leipzig/shared"
            ]
        );
        assert_eq!(
            ids(store.nodes(Some("leipzig")).await?),
            ["leipzig/l1", "leipzig/l2", "leipzig/shared"]
        );
        assert!(store.nodes(Some("nowhere")).await?.is_empty());
        assert_eq!(
            ids(store.find_node("shared", None).await?),
            ["bremen/shared", "leipzig/shared"]
        );
        assert_eq!(
            ids(store.find_node("shared", Some("bremen")).await?),
            ["bremen/shared"]
        );
        assert!(store.find_node("l1", Some("bremen")).await?.is_empty());
        assert!(store.find_node("nobody", None).await?.is_empty());
        assert!(store.node_detail("bremen", "l1").await?.is_none());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn node_detail_json() -> anyhow::Result<()> {
    each_backend("node_detail_json", |store| async move {
        let hello = examples::hello_v1();
        store
            .record_hello("leipzig", "1a3671205872", &hello, T0 - 60_000)
            .await?;
        let mut t = examples::telemetry_v1();
        t.interfaces.truncate(1);
        t.interfaces[0].rx_bytes = u64::MAX; // saturates
        store
            .record_telemetry("leipzig", "1a3671205872", &t, T0 + 123)
            .await?;
        // An older sample does not become the latest.
        let mut older = t.clone();
        older.seq -= 1;
        older.time_ms -= 60_000;
        older.uptime_ms -= 60_000;
        store
            .record_telemetry("leipzig", "1a3671205872", &older, T0 + 200)
            .await?;

        let d = store
            .node_detail("leipzig", "1a3671205872")
            .await?
            .context("node")?;
        let got = serde_json::to_value(&d)?;
        let want = json!({
            "network": "leipzig",
            "node": "1a3671205872",
            "hostname": "leipzig-0001",
            "model": "TP-Link CPE510 v1.1",
            "status": "online",
            "status_since": "2025-11-24T15:59:00.000Z",
            "first_seen": "2025-11-24T15:59:00.000Z",
            "last_seen": "2025-11-24T16:00:00.200Z",
            "hello": serde_json::to_value(&hello)?,
            "latest": {
                "boot_id": "3f1c2a4e-8d7b-4c1e-9a55-0b6f2d9e7c10",
                "seq": 17280,
                "time": "2025-11-24T16:00:00.000Z",
                "received": "2025-11-24T16:00:00.123Z",
                "uptime_ms": 1_036_800_000u64,
                "clock_ok": true,
                "load": [0.07, 0.12, 0.09],
                "cpu": {
                    "user": 1_523_411, "nice": 0, "system": 2_210_876, "idle": 98_311_240,
                    "iowait": 1_204, "irq": 0, "softirq": 402_118, "steal": 0
                },
                "mem_total": 61_440_000,
                "mem_available": 30_474_240,
                "rootfs_size": 3_932_160,
                "rootfs_free": 3_604_480,
                "dropped": 0,
                "interfaces": [{
                    "name": "eth0",
                    "rx_bytes": i64::MAX,
                    "tx_bytes": 9_118_332_401u64,
                    "rx_packets": 61_004_117,
                    "tx_packets": 23_871_402,
                    "rx_errors": 0,
                    "tx_errors": 0,
                    "rx_dropped": 1_207,
                    "tx_dropped": 12,
                    "rx_bps": null,
                    "tx_bps": null
                }]
            },
            // The older report was received last: its skew is the latest.
            "clock": {
                "boot_id": "3f1c2a4e-8d7b-4c1e-9a55-0b6f2d9e7c10",
                "clock_ok": true,
                "skew_ms": -60_200,
                "boot_anchor": "2025-11-12T16:00:00.000Z",
                "anchor_source": "clock"
            }
        });
        assert_eq!(got, want);
        // And back.
        let back: meshtable_store::NodeDetail = serde_json::from_value(got)?;
        assert_eq!(back, d);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn node_without_hello_or_samples() -> anyhow::Result<()> {
    each_backend("node_without_hello_or_samples", |store| async move {
        store.record_state("net", "n1", Status::Online, T0).await?;
        let d = store.node_detail("net", "n1").await?.context("node")?;
        let got = serde_json::to_value(&d)?;
        assert_eq!(
            got,
            json!({
                "network": "net", "node": "n1", "hostname": null, "model": null,
                "status": "online", "status_since": "2025-11-24T16:00:00.000Z",
                "first_seen": "2025-11-24T16:00:00.000Z", "last_seen": "2025-11-24T16:00:00.000Z",
                "hello": null, "latest": null, "clock": null
            })
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn series() -> anyhow::Result<()> {
    each_backend("series", |store| async move {
        // Three samples of boot b1 one minute apart, stored out of order,
        // then a new boot.
        let mk = |seq: u64,
                  boot: &str,
                  up_min: u64,
                  busy: (u64, u64, u64, u64),
                  mem_avail: u64,
                  free: u64,
                  rx: u64| {
            let mut t = report("n1", boot, seq, up_min * 60_000, &[("eth0", rx, 2 * rx)]);
            t.load = [seq as f32 + 0.5, 0.25, 0.125];
            t.cpu = CpuTimes {
                user: busy.0,
                system: busy.1,
                idle: busy.2,
                iowait: busy.3,
                ..CpuTimes::default()
            };
            t.mem_total = 1000;
            t.mem_available = mem_avail;
            t.rootfs_size = 400;
            t.rootfs_free = free;
            t
        };
        let reports = [
            mk(0, "b1", 1, (100, 100, 100, 100), 1000, 400, 0),
            mk(2, "b1", 3, (400, 200, 500, 100), 250, 0, 1_500_000),
            mk(1, "b1", 2, (200, 150, 200, 150), 500, 100, 750_000),
            mk(0, "b2", 10, (10, 10, 10, 10), 0, 300, 0),
        ];
        for t in &reports {
            store.record_telemetry("net", "n1", t, received(t)).await?;
        }
        let m = |minute: i64| T0 + minute * 60_000;
        let all = |metric: &str, iface: Option<&str>| {
            let store = store.clone();
            let metric = Metric::parse(metric, iface);
            async move { anyhow::Ok(store.series("net", "n1", &metric?, 0, i64::MAX).await?) }
        };
        let p = |minute: i64, v: f64| Point { t: m(minute), v };

        assert_eq!(
            all("load1", None).await?,
            [p(1, 0.5), p(2, 1.5), p(3, 2.5), p(10, 0.5)]
        );
        assert_eq!(
            all("load5", None).await?,
            [p(1, 0.25), p(2, 0.25), p(3, 0.25), p(10, 0.25)]
        );
        assert_eq!(
            all("load15", None).await?,
            [p(1, 0.125), p(2, 0.125), p(3, 0.125), p(10, 0.125)]
        );
        assert_eq!(
            all("mem_used_ratio", None).await?,
            [p(1, 0.0), p(2, 0.5), p(3, 0.75), p(10, 1.0)]
        );
        assert_eq!(
            all("rootfs_used_ratio", None).await?,
            [p(1, 0.0), p(2, 0.75), p(3, 1.0), p(10, 0.25)]
        );
        // seq 1 against seq 0: busy 150 of 300. seq 2 was stored before seq 1,
        // so against seq 0: busy 400 of 800 (against seq 1 iowait would have
        // gone down, giving no point).
        assert_eq!(all("cpu_busy_ratio", None).await?, [p(2, 0.5), p(3, 0.5)]);
        // rx: seq 1 750 kB in 60 s = 100 kbit/s; seq 2 against seq 0: 1.5 MB in 120 s.
        assert_eq!(
            all("rx_bps", Some("eth0")).await?,
            [p(2, 100_000.0), p(3, 100_000.0)]
        );
        assert_eq!(
            all("tx_bps", Some("eth0")).await?,
            [p(2, 200_000.0), p(3, 200_000.0)]
        );
        assert!(all("rx_bps", Some("wlan0")).await?.is_empty());

        // The range is inclusive at both ends.
        let load = |from, to| {
            let store = store.clone();
            async move { anyhow::Ok(store.series("net", "n1", &Metric::Load1, from, to).await?) }
        };
        assert_eq!(load(m(2), m(3)).await?, [p(2, 1.5), p(3, 2.5)]);
        assert_eq!(load(m(2) + 1, m(3) - 1).await?, []);
        assert_eq!(load(m(3), m(2)).await?, []);
        // Unknown nodes and networks have no points.
        assert!(
            store
                .series("net", "nobody", &Metric::Load1, 0, i64::MAX)
                .await?
                .is_empty()
        );
        assert!(
            store
                .series("nowhere", "n1", &Metric::Load1, 0, i64::MAX)
                .await?
                .is_empty()
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn implausible_clock_uses_received_time() -> anyhow::Result<()> {
    each_backend("implausible_clock_uses_received_time", |store| async move {
        // (router clock, received) -> (series time, clock_ok)
        let cases: &[(u64, i64, (i64, bool))] = &[
            (T0 as u64, T0 + 1000, (T0, true)),
            // Never set: 1970 plus uptime.
            (90_000, T0 + 2000, (T0 + 2000, false)),
            // Ten minutes ahead.
            ((T0 + 3000 + 600_000) as u64, T0 + 3000, (T0 + 3000, false)),
            // Four minutes ahead is fine.
            (
                (T0 + 4000 + 240_000) as u64,
                T0 + 4000,
                (T0 + 4000 + 240_000, true),
            ),
        ];
        for (i, (time_ms, recv, (t, ok))) in cases.iter().enumerate() {
            let node = format!("n{i}");
            let mut r = report(&node, "b1", 0, 1000, &[]);
            r.time_ms = *time_ms;
            store.record_telemetry("net", &node, &r, *recv).await?;
            let s = store
                .node_detail("net", &node)
                .await?
                .context("node")?
                .latest
                .context("latest")?;
            ensure!(
                (s.time_ms, s.clock_ok) == (*t, *ok),
                "case {i}: got {:?}",
                (s.time_ms, s.clock_ok)
            );
            let points = store.series("net", &node, &Metric::Load1, *t, *t).await?;
            ensure!(points.len() == 1, "case {i}: no point at {t}");
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn awkward_input() -> anyhow::Result<()> {
    each_backend("awkward_input", |store| async move {
        // A report breaking the wire rules is refused, and stores nothing.
        let mut t = report("n1", "b1", 0, 1000, &[]);
        t.load[0] = f32::NAN;
        let err = store
            .record_telemetry("net", "n1", &t, T0)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        assert!(store.nodes(None).await?.is_empty());

        // NUL is text on SQLite but not on PostgreSQL: both store it the same way.
        let mut hello = examples::hello_v1();
        hello.hostname = "a\0b".to_owned();
        store.record_hello("net", "n1", &hello, T0).await?;
        // Control characters in a report's text fields break the wire rules
        // (meshtable-proto refuses them): such a report stores nothing.
        let t = report("n1", "b\0oot", 0, 1000, &[("eth0", 1, 1)]);
        let err = store
            .record_telemetry("net", "n1", &t, T0)
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::Invalid(_)), "{err}");
        let t = report("n1", "boot", 0, 1000, &[("eth0", 1, 1), ("eth0", 2, 2)]);
        assert_eq!(
            store.record_telemetry("net", "n1", &t, T0).await?,
            Recorded::Inserted
        );
        assert_eq!(
            store.record_telemetry("net", "n1", &t, T0).await?,
            Recorded::Duplicate
        );
        let d = store.node_detail("net", "n1").await?.context("node")?;
        assert_eq!(d.summary.hostname.as_deref(), Some("a\u{fffd}b"));
        assert_eq!(d.hello.context("hello")?.hostname, "a\0b");
        let latest = d.latest.context("latest")?;
        assert_eq!(latest.boot_id, "boot");
        // An interface listed twice: the first counts.
        assert_eq!(latest.interfaces.len(), 1);
        assert_eq!(latest.interfaces[0].counters.rx_bytes, 1);
        let s = store
            .series("net", "n1", &Metric::RxBps("eth0".into()), 0, i64::MAX)
            .await?;
        assert!(s.is_empty());
        Ok(())
    })
    .await
}

#[tokio::test]
async fn connect_urls() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    // A file and its parents are created, the schema too; reconnecting keeps
    // the data and migrates nothing twice.
    let path = dir.path().join("a/b/m.db");
    let url = format!("sqlite://{}", path.display());
    let store = Store::connect(&url).await?;
    assert_eq!(store.backend(), Backend::Sqlite);
    store.record_state("net", "n1", Status::Online, 1).await?;
    assert!(path.exists());
    // WAL journal.
    assert!(dir.path().join("a/b/m.db-wal").exists());
    store.ping().await?;
    store.close().await?;
    let store = Store::connect(&url).await?;
    assert_eq!(store.nodes(None).await?.len(), 1);
    store.close().await?;

    // An explicit mode is respected.
    let missing = format!(
        "sqlite://{}?mode=rw",
        dir.path().join("missing.db").display()
    );
    assert!(matches!(
        Store::connect(&missing).await,
        Err(StoreError::Database(_))
    ));

    // In memory: one database for all calls.
    let store = Store::connect("sqlite::memory:").await?;
    store.record_state("net", "n1", Status::Online, 1).await?;
    assert_eq!(store.nodes(None).await?.len(), 1);

    for bad in ["mysql://localhost/x", "", "sqlite://x.db?mode=sideways"] {
        let r = Store::connect(bad).await;
        assert!(matches!(r, Err(StoreError::InvalidUrl(_))), "{bad}: {r:?}");
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_connects_migrate_once() -> anyhow::Result<()> {
    common::each_database(
        "concurrent_connects_migrate_once",
        |url, backend| async move {
            // Controllers starting together on one fresh database.
            let connects: Vec<_> = (0..4)
                .map(|_| {
                    let url = url.clone();
                    tokio::spawn(async move { Store::connect(&url).await })
                })
                .collect();
            let mut stores = Vec::new();
            for c in connects {
                stores.push(
                    c.await?
                        .with_context(|| format!("connect to {backend:?}"))?,
                );
            }
            stores[0]
                .record_state("net", "n1", Status::Online, 1)
                .await?;
            for s in &stores {
                assert_eq!(s.nodes(None).await?.len(), 1);
            }
            for s in stores {
                s.close().await?;
            }
            Ok(())
        },
    )
    .await
}

#[tokio::test]
async fn agent_dropped_sums_latest_per_node() -> anyhow::Result<()> {
    each_backend("agent_dropped_sums_latest_per_node", |store| async move {
        assert!(store.agent_dropped().await?.is_empty());
        // (network, node, seq, uptime s, dropped)
        let reports: &[(&str, &str, u64, u64, u64)] = &[
            ("a", "n1", 0, 10, 5),
            ("a", "n1", 1, 20, 7), // latest of a/n1
            ("a", "n2", 3, 30, 2), // latest of a/n2, stored before an older one
            ("a", "n2", 2, 25, 100),
            ("b", "n1", 0, 10, 0),
        ];
        for (net, node, seq, up, dropped) in reports {
            let mut t = report(node, "b1", *seq, up * 1000, &[]);
            t.dropped = *dropped;
            store.record_telemetry(net, node, &t, received(&t)).await?;
        }
        store.record_state("c", "quiet", Status::Online, T0).await?;
        let got = store.agent_dropped().await?;
        let want: Vec<(String, u64)> = [("a", 9), ("b", 0), ("c", 0)]
            .iter()
            .map(|(n, d)| ((*n).to_owned(), *d))
            .collect();
        assert_eq!(got, want);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn rates_with_two_writers() -> anyhow::Result<()> {
    // Two controllers on one database take turns with one node's reports:
    // each must derive rates from the sample the other stored last, not
    // from the one it remembers writing itself.
    common::each_database("rates_with_two_writers", |url, _| async move {
        let a = Store::connect(&url).await.context("connect a")?;
        let b = Store::connect(&url).await.context("connect b")?;
        // (writer, seq, uptime s, eth0 rx bytes, expected rx bps)
        let steps: [(&Store, u64, u64, u64, Option<f64>); 5] = [
            (&a, 0, 100, 0, None),
            (&a, 1, 110, 10_000, Some(8000.0)),
            (&b, 2, 120, 30_000, Some(16_000.0)),
            (&a, 3, 130, 31_000, Some(800.0)),
            (&b, 4, 140, 41_000, Some(8000.0)),
        ];
        for (j, (store, seq, uptime_s, rx, want)) in steps.into_iter().enumerate() {
            let t = report("n1", "b1", seq, uptime_s * 1000, &[("eth0", rx, 0)]);
            let got = store
                .record_telemetry("net", "n1", &t, received(&t))
                .await?;
            ensure!(got == Recorded::Inserted, "step {j}: {got:?}");
            let rate =
                point_at(store, "n1", &Metric::RxBps("eth0".into()), t.time_ms as i64).await?;
            ensure!(rate == want, "step {j}: rx {rate:?}, want {want:?}");
        }
        a.close().await?;
        b.close().await?;
        Ok(())
    })
    .await
}

/// On PostgreSQL the tables ingest updates with every report leave room on
/// their pages for in-place updates (migration `m20261129_100000_fillfactor`).
#[tokio::test]
async fn rewritten_tables_leave_room_for_updates_on_postgres() -> anyhow::Result<()> {
    common::each_database("fillfactor", |url, backend| async move {
        use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
        let store = Store::connect(&url).await?;
        store.close().await?;
        if backend != meshtable_store::Backend::Postgres {
            return Ok(());
        }
        let db = Database::connect(url.as_str()).await?;
        for table in ["node", "telemetry_base", "boot_anchor"] {
            let row = db
                .query_one_raw(Statement::from_string(
                    DbBackend::Postgres,
                    format!(
                        "SELECT array_to_string(reloptions, ',') AS o FROM pg_class \
                         WHERE relname = '{table}' AND relkind = 'r'"
                    ),
                ))
                .await?
                .context(table)?;
            let options: Option<String> = row.try_get("", "o")?;
            ensure!(
                options.as_deref() == Some("fillfactor=70"),
                "{table}: {options:?}"
            );
        }
        db.close().await?;
        Ok(())
    })
    .await
}

/// A SQLite file's WAL is copied into the database by `Store::checkpoint`,
/// not by the writer's commits (below its backstop), and the writer starts
/// the WAL over after a checkpoint; other databases have nothing to do.
#[tokio::test]
async fn wal_checkpoint() -> anyhow::Result<()> {
    each_backend("wal_checkpoint", |store| async move {
        let write = |seq: u64| {
            let store = store.clone();
            async move {
                let t = report("n1", "b1", seq, 60_000 * (seq + 1), &[("eth0", seq, seq)]);
                store
                    .record_telemetry("net", "n1", &t, T0 + 60_000 * (seq as i64 + 1))
                    .await
            }
        };
        for seq in 0..20 {
            write(seq).await?;
        }
        if store.backend() != Backend::Sqlite {
            ensure!(store.checkpoint().await?.is_none());
            return Ok(());
        }
        // Twenty commits left their pages in the WAL; the checkpoint copies
        // all of them (no reader holds an older snapshot).
        let first = store
            .checkpoint()
            .await?
            .context("a SQLite file has a WAL")?;
        ensure!(!first.busy, "{first:?}");
        ensure!(first.wal_pages >= 20, "{first:?}");
        ensure!(first.copied_pages == first.wal_pages, "{first:?}");
        // The next commit writes its pages from the WAL's start.
        write(20).await?;
        let second = store.checkpoint().await?.context("still a WAL")?;
        ensure!(
            second.wal_pages < first.wal_pages,
            "{first:?} then {second:?}"
        );
        ensure!(second.copied_pages == second.wal_pages, "{second:?}");
        ensure!(store.sample_count().await? == 21);
        Ok(())
    })
    .await?;

    // In memory: no WAL.
    let store = Store::connect("sqlite::memory:").await?;
    store.record_state("net", "n1", Status::Online, 1).await?;
    ensure!(store.checkpoint().await?.is_none());
    store.close().await?;
    Ok(())
}
