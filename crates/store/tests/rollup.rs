//! History on every backend: rollups computed incrementally equal a
//! computation from scratch over the stored samples (also after late and
//! backfilled samples), the same on SQLite and PostgreSQL; retention; and
//! clock placement of a router without RTC whose NTP answers mid-boot, with
//! a backfill after an outage.

mod common;

use std::sync::Mutex;

use anyhow::{Context, ensure};
use common::each_backend;
use meshtable_proto::{CpuTimes, InterfaceCounters, Telemetry, examples};
use meshtable_store::rollup::{HOUR_MS, stats};
use meshtable_store::{HistoryPolicy, Incoming, Metric, Outcome, Resolution, Store};

/// 2025-11-24T16:00:00Z, an hour boundary.
const T0: i64 = 1_764_000_000_000;
const MIN: i64 = 60_000;

/// One report of a node booted at `boot_ms` (true time), `k` minutes in.
fn report(node: &str, boot: &str, k: u64, time_ms: u64, backfill: bool) -> Telemetry {
    // Deterministic, uneven traffic and load.
    let rx = (0..=k).map(|i| 1000 + (i * 7919) % 5000).sum::<u64>() * 60;
    Telemetry {
        node: node.to_owned(),
        boot_id: boot.to_owned(),
        seq: k,
        uptime_ms: MIN as u64 * (k + 1),
        time_ms,
        backfill,
        load: [((k * 37) % 100) as f32 / 50.0, 0.5, 0.25],
        cpu: CpuTimes {
            user: k * 30 + (k * k) % 17,
            idle: k * 60,
            ..CpuTimes::default()
        },
        mem_total: 128 << 20,
        mem_available: (64 << 20) + ((k * 104_729) % (32 << 20)),
        interfaces: vec![InterfaceCounters {
            name: "eth0".to_owned(),
            rx_bytes: rx,
            tx_bytes: rx / 3,
            ..InterfaceCounters::default()
        }],
        ..examples::telemetry_v1()
    }
}

async fn record(store: &Store, node: &str, t: &Telemetry, received_ms: i64) -> anyhow::Result<()> {
    let out = store
        .record_batch(&[Incoming {
            network: "net",
            node,
            content: meshtable_store::Content::Telemetry(t),
            received_ms,
        }])
        .await?;
    ensure!(out == [Outcome::Inserted], "{out:?}");
    Ok(())
}

const METRICS: [&str; 8] = [
    "load1",
    "load5",
    "load15",
    "cpu_busy_ratio",
    "mem_used_ratio",
    "rootfs_used_ratio",
    "rx_bps",
    "tx_bps",
];

/// Bucket series computed here from the raw points: an independent
/// from-scratch computation.
async fn scratch(
    store: &Store,
    node: &str,
    metric: &Metric,
    from: i64,
    to: i64,
    len: i64,
) -> anyhow::Result<Vec<(i64, u64, f64, f64, f64, f64)>> {
    let first = from.div_euclid(len) * len;
    let end = to.div_euclid(len) * len + len;
    let raw = store.series("net", node, metric, first, end - 1).await?;
    let mut by_bucket: std::collections::BTreeMap<i64, Vec<f64>> = Default::default();
    for p in raw {
        by_bucket
            .entry(p.t.div_euclid(len) * len)
            .or_default()
            .push(p.v);
    }
    Ok(by_bucket
        .into_iter()
        .map(|(b, mut v)| {
            let s = stats(&mut v).expect("non-empty");
            (b, s.n, s.min, s.avg, s.max, s.p95)
        })
        .collect())
}

/// Every metric of `node`, at both bucket resolutions, as history returns
/// it, checked against [`scratch`]. Returns it as JSON for cross-backend
/// comparison.
async fn check_all(store: &Store, node: &str, from: i64, to: i64) -> anyhow::Result<String> {
    check_iface(store, node, "eth0", from, to).await
}

/// [`check_all`] with the interface metrics of `iface`.
async fn check_iface(
    store: &Store,
    node: &str,
    iface: &str,
    from: i64,
    to: i64,
) -> anyhow::Result<String> {
    let mut all = Vec::new();
    for name in METRICS {
        let metric = Metric::parse(name, Some(iface))?;
        for res in [Resolution::FiveMinutes, Resolution::Hourly] {
            let got = store
                .history_at("net", node, &metric, from, to, res)
                .await?;
            ensure!(got.resolution == res);
            let len = res.bucket_ms().context("bucketed")?;
            let want = scratch(store, node, &metric, from, to, len).await?;
            let got_t: Vec<_> = got
                .points
                .iter()
                .map(|p| {
                    (
                        p.t,
                        p.n.unwrap_or(0),
                        p.min.unwrap_or(f64::NAN),
                        p.v,
                        p.max.unwrap_or(f64::NAN),
                        p.p95.unwrap_or(f64::NAN),
                    )
                })
                .collect();
            ensure!(
                got_t == want,
                "{node} {name} {res:?}:\n got {got_t:?}\nwant {want:?}"
            );
            all.push(serde_json::to_string(&got)?);
        }
    }
    Ok(all.join("\n"))
}

/// Results of each backend, compared when both ran.
static SEEN: Mutex<Vec<String>> = Mutex::new(Vec::new());

#[tokio::test]
async fn rollups_are_incremental_and_equal_scratch() -> anyhow::Result<()> {
    each_backend(
        "rollups_are_incremental_and_equal_scratch",
        |store| async move {
            let policy = HistoryPolicy::default();
            // Two nodes, three hours of live reports with good clocks.
            for k in 0..180u64 {
                for (node, lag) in [("a", 300), ("b", 900)] {
                    let t = T0 + MIN * k as i64;
                    let r = report(node, "boot1", k, t as u64, false);
                    record(&store, node, &r, t + lag).await?;
                }
            }
            let now = T0 + 3 * HOUR_MS + 10 * MIN;
            // Before any reconcile, history is computed from the samples.
            check_all(&store, "a", T0, now).await?;
            let r = store.reconcile_rollups(now, &policy, 100).await?;
            ensure!(r.hours == 3 && !r.more, "{r:?}");
            ensure!(r.watermark_ms == Some(T0 + 3 * HOUR_MS), "{r:?}");
            // Once caught up, another run does nothing.
            let again = store.reconcile_rollups(now, &policy, 100).await?;
            ensure!(
                again.hours == 0 && again.recomputed == 0 && again.rows == 0,
                "{again:?}"
            );
            check_all(&store, "a", T0, now).await?;

            // Late reports into rolled hours: a backfilled report of a new boot
            // (good clock) an hour back, and one of node b 30 minutes back.
            let late = report("a", "boot0", 5, (T0 + 75 * MIN + 30_000) as u64, true);
            record(&store, "a", &late, now).await?;
            let late_b = report("b", "boot0", 9, (T0 + 150 * MIN + 1) as u64, true);
            record(&store, "b", &late_b, now).await?;
            // Read before the recompute: still exact (dirty hours come from raw).
            check_all(&store, "a", T0, now).await?;
            let r = store.reconcile_rollups(now, &policy, 100).await?;
            ensure!(r.recomputed == 2 && r.hours == 0, "{r:?}");
            let a = check_all(&store, "a", T0, now).await?;
            let b = check_all(&store, "b", T0, now).await?;

            // Pick: 6 h is raw, 7 d is 5-minute, more is hourly.
            let load1 = Metric::Load1;
            let s = store
                .history("net", "a", &load1, T0, T0 + 6 * HOUR_MS)
                .await?;
            ensure!(s.resolution == Resolution::Raw && s.points.len() == 181);
            ensure!(s.points.iter().all(|p| p.min.is_none()));
            let s = store
                .history("net", "a", &load1, T0, T0 + 7 * 24 * HOUR_MS)
                .await?;
            ensure!(s.resolution == Resolution::FiveMinutes && s.points.len() == 36);
            let s = store
                .history("net", "a", &load1, T0 - 30 * 24 * HOUR_MS, T0 + HOUR_MS)
                .await?;
            ensure!(s.resolution == Resolution::Hourly && s.points.len() == 2);
            ensure!(s.points[0].n == Some(60), "{:?}", s.points[0]);
            ensure!(s.points[1].n == Some(61), "{:?}", s.points[1]);
            // Unknown node, unknown interface: no points.
            let s = store
                .history("net", "zz", &load1, T0, T0 + 7 * 24 * HOUR_MS)
                .await?;
            ensure!(s.points.is_empty());
            let wlan = Metric::parse("rx_bps", Some("wlan9"))?;
            let s = store
                .history("net", "a", &wlan, T0, T0 + 7 * 24 * HOUR_MS)
                .await?;
            ensure!(s.points.is_empty());

            SEEN.lock().unwrap().push(format!("{a}\n{b}"));
            Ok(())
        },
    )
    .await?;
    let seen = SEEN.lock().unwrap();
    ensure!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "sqlite and postgresql rollups differ"
    );
    Ok(())
}

/// Results of each backend for the catch-up test, compared when both ran.
static SEEN_CATCH_UP: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// A catch-up over a backlog of several nodes with several interfaces each
/// (steps of several hours, one read row per sample and interface) equals a
/// computation from scratch per node, interface and bucket, and counts every
/// sample once; the same on SQLite and PostgreSQL.
#[tokio::test]
async fn catch_up_with_several_interfaces_equals_scratch() -> anyhow::Result<()> {
    each_backend(
        "catch_up_with_several_interfaces_equals_scratch",
        |store| async move {
            let nodes = ["n1", "n2", "n3"];
            let ifaces = ["br-lan", "eth0", "wlan0"];
            for k in 0..300u64 {
                for (i, node) in nodes.iter().enumerate() {
                    let t = T0 + MIN * k as i64 + 1_000 * i as i64;
                    let mut r = report(node, "boot1", k, t as u64, false);
                    let base = r.interfaces[0].clone();
                    r.interfaces = ifaces
                        .iter()
                        .enumerate()
                        .map(|(j, name)| InterfaceCounters {
                            name: (*name).to_owned(),
                            rx_bytes: base.rx_bytes * (j as u64 + 1) + k * k * (i as u64 + 1),
                            tx_bytes: base.tx_bytes / (j as u64 + 1),
                            ..base.clone()
                        })
                        .collect();
                    record(&store, node, &r, t + 500).await?;
                }
            }
            let now = T0 + 5 * HOUR_MS + 10 * MIN;
            let r = store
                .reconcile_rollups(now, &HistoryPolicy::default(), 100)
                .await?;
            ensure!(r.hours == 5 && !r.more, "{r:?}");
            ensure!(r.samples == 3 * 300, "{r:?}");
            ensure!(r.watermark_ms == Some(T0 + 5 * HOUR_MS), "{r:?}");
            // Per hour: 6 node metrics and 3 interfaces x 2 rates, 12
            // five-minute buckets and one hourly each; 3 nodes.
            ensure!(r.rows == 5 * 3 * 12 * 13, "{r:?}");
            let mut all = Vec::new();
            for node in nodes {
                for iface in ifaces {
                    all.push(check_iface(&store, node, iface, T0, now).await?);
                }
                let s = store
                    .history_at("net", node, &Metric::Load1, T0, now, Resolution::Hourly)
                    .await?;
                ensure!(
                    s.points.iter().take(5).all(|p| p.n == Some(60)),
                    "{node}: {:?}",
                    s.points
                );
            }
            SEEN_CATCH_UP.lock().unwrap().push(all.join("\n"));
            Ok(())
        },
    )
    .await?;
    let seen = SEEN_CATCH_UP.lock().unwrap();
    ensure!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "sqlite and postgresql rollups differ"
    );
    Ok(())
}

#[tokio::test]
async fn retention_keeps_what_it_must() -> anyhow::Result<()> {
    each_backend("retention_keeps_what_it_must", |store| async move {
        // 20 days, one report every 30 minutes.
        let policy = HistoryPolicy {
            raw_retention_ms: 14 * 24 * HOUR_MS,
            rollup_retention_ms: 18 * 24 * HOUR_MS,
            ..HistoryPolicy::default()
        };
        let n = 20 * 48u64;
        for k in 0..n {
            let t = T0 + 30 * MIN * k as i64;
            let mut r = report("a", "boot1", k, t as u64, false);
            r.uptime_ms = 30 * MIN as u64 * (k + 1);
            record(&store, "a", &r, t).await?;
        }
        let now = T0 + 20 * 24 * HOUR_MS;
        let raw = |store: Store| async move {
            Ok::<_, anyhow::Error>(
                store
                    .series("net", "a", &Metric::Load1, 0, i64::MAX)
                    .await?
                    .len(),
            )
        };
        // Nothing is rolled up yet: nothing raw may go.
        let d = store.apply_retention(now, &policy, 100, 1000).await?;
        ensure!(d.samples == 0 && d.rollups == 0, "{d:?}");
        ensure!(raw(store.clone()).await? == n as usize);

        let r = store.reconcile_rollups(now, &policy, 1000).await?;
        ensure!(r.hours == 20 * 24 - 1 && !r.more, "{r:?}");
        // Chunks of 100: two chunks per run.
        let d = store.apply_retention(now, &policy, 100, 2).await?;
        ensure!(d.samples == 200 && d.more, "{d:?}");
        let d = store.apply_retention(now, &policy, 100, 1000).await?;
        ensure!(!d.more, "{d:?}");
        // Raw: only the last 14 days.
        let kept = store
            .series("net", "a", &Metric::Load1, 0, i64::MAX)
            .await?;
        ensure!(kept.len() == 14 * 48, "{}", kept.len());
        ensure!(kept[0].t == now - 14 * 24 * HOUR_MS, "{}", kept[0].t);
        // Rollups: 18 days of hours, also where the raw samples are gone.
        let s = store
            .history_at("net", "a", &Metric::Load1, 0, now, Resolution::Hourly)
            .await?;
        ensure!(s.points.len() == 18 * 24, "{}", s.points.len());
        ensure!(s.points[0].t == now - 18 * 24 * HOUR_MS);
        ensure!(
            s.points
                .iter()
                .all(|p| p.n == Some(2) || p.t == now - HOUR_MS)
        );
        // Again: nothing more.
        let d = store.apply_retention(now, &policy, 100, 1000).await?;
        ensure!(d.samples == 0 && d.rollups == 0, "{d:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn router_without_rtc_ntp_mid_boot_and_backfill() -> anyhow::Result<()> {
    each_backend(
        "router_without_rtc_ntp_mid_boot_and_backfill",
        |store| async move {
            const LAG: i64 = 700;
            // True boot time of both routers.
            let boot = T0 - 5 * MIN;
            let policy = HistoryPolicy::default();
            // Router "ntp": 1970 clock for 10 minutes, then NTP; router "rtcless"
            // never gets NTP. Both are cut off from minute 20 to 79, spool, and
            // replay at minute 80 as backfill.
            for k in 0..90u64 {
                let uptime = MIN * (k as i64 + 1);
                let true_time = boot + uptime;
                let outage = (20..80).contains(&k);
                let received = if outage {
                    boot + 80 * MIN + 5_000 + k as i64
                } else {
                    true_time + LAG
                };
                if k == 20 {
                    // The controller rolls up the hours before the outage's
                    // reports arrive, so that the backfill lands in rolled hours.
                    let r = store.reconcile_rollups(received, &policy, 100).await?;
                    ensure!(
                        r.hours == 2 && r.watermark_ms == Some(T0 + HOUR_MS),
                        "{r:?}"
                    );
                }
                for node in ["ntp", "rtcless"] {
                    let synced = node == "ntp" && k >= 10;
                    let time_ms = if synced { true_time } else { uptime } as u64;
                    let r = report(node, "b", k, time_ms, outage);
                    record(&store, node, &r, received).await?;
                }
            }
            let check = |node: &'static str, store: Store| async move {
                let pts = store
                    .series("net", node, &Metric::Load1, 0, i64::MAX)
                    .await?;
                ensure!(pts.len() == 90, "{node}: {} points", pts.len());
                for (k, p) in pts.iter().enumerate() {
                    let true_time = boot + MIN * (k as i64 + 1);
                    // Before NTP: the first live report anchors the boot at its
                    // reception, so every placed report is LAG late; after NTP
                    // the clock is exact. Backfill lands where it belongs.
                    let want = if node == "ntp" && k >= 10 {
                        true_time
                    } else {
                        true_time + LAG
                    };
                    ensure!(p.t == want, "{node} report {k}: at {} want {want}", p.t);
                }
                Ok::<_, anyhow::Error>(())
            };
            check("ntp", store.clone()).await?;
            check("rtcless", store.clone()).await?;

            // Node detail shows the clock.
            let d = store.node_detail("net", "ntp").await?.context("ntp")?;
            let c = d.clock.context("clock")?;
            ensure!(
                c.clock_ok && c.anchor_source == "clock" && c.anchor_ms == boot,
                "{c:?}"
            );
            ensure!(c.skew_ms == Some(-LAG), "{c:?}");
            let d = store
                .node_detail("net", "rtcless")
                .await?
                .context("rtcless")?;
            let c = d.clock.clone().context("clock")?;
            ensure!(!c.clock_ok && c.anchor_source == "received", "{c:?}");
            ensure!(c.anchor_ms == boot + LAG, "{c:?}");
            let json = serde_json::to_value(&d)?;
            ensure!(json["clock"]["clock_ok"] == false, "{json}");
            ensure!(
                json["clock"]["skew_ms"]
                    .as_i64()
                    .is_some_and(|s| s < -1_000_000_000_000),
                "{json}"
            );
            ensure!(json["latest"]["clock_ok"] == false, "{json}");

            // The backfill landed in rolled hours: after a reconcile the rollups
            // equal a computation from scratch.
            let now = boot + 90 * MIN + HOUR_MS;
            store.reconcile_rollups(now, &policy, 100).await?;
            for node in ["ntp", "rtcless"] {
                check_all(&store, node, boot, now).await?;
            }
            Ok(())
        },
    )
    .await
}
