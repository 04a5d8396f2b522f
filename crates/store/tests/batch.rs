//! `Store::record_batch` has the effect of recording its items one by one:
//! random message sequences, recorded one by one and in random batch splits,
//! leave the same database contents as the read API shows them, on every
//! backend (see `common::each_backend`).

mod common;

use anyhow::ensure;
use common::each_backend;
use meshtable_proto::{
    CpuTimes, Hello, InterfaceCounters, Report, State, Status, Telemetry, examples,
};
use meshtable_store::{Content, Incoming, Metric, Outcome, Store};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

/// 2025-11-24T16:00:00Z.
const T0: i64 = 1_764_000_000_000;

const NETWORKS: [&str; 2] = ["net", "other"];
const NODES: [&str; 3] = ["n1", "n2", "n3"];
const BOOTS: [&str; 2] = ["b1", "b2"];
const IFACES: [&str; 2] = ["eth0", "wlan0"];

/// One generated message: (network, node, report, received_ms).
type Msg = (String, String, Report, i64);

/// A random sequence of hello, state and telemetry messages over a few
/// nodes, with what makes batching hard: redeliveries and reused keys
/// (duplicates, also close together), reports out of seq order and far
/// apart, counters that go down, interfaces that come and go, reception
/// times that go back, status flips and invalid reports.
fn messages(rng: &mut StdRng, n: usize) -> Vec<Msg> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let network = NETWORKS[rng.random_range(0..NETWORKS.len())].to_owned();
        let node = NODES[rng.random_range(0..NODES.len())].to_owned();
        let received = T0 + 1000 * i as i64 - rng.random_range(0..3000);
        let report = match rng.random_range(0..10) {
            0 => Report::Hello(Hello {
                hostname: ["", "h1", "h2"][rng.random_range(0..3)].to_owned(),
                interval_ms: [0, 10_000, 60_000][rng.random_range(0..3)],
                ..examples::hello_v1()
            }),
            1 => Report::State(State {
                status: if rng.random_bool(0.5) {
                    Status::Online
                } else {
                    Status::Offline
                },
                ..examples::state_offline_v1()
            }),
            _ => {
                // Mostly close together; sometimes far apart, so that the
                // writer's lookups probe a boot's keys in several runs.
                let seq: u64 = if rng.random_bool(0.15) {
                    rng.random_range(0..300)
                } else {
                    rng.random_range(0..8)
                };
                // Mostly a redelivery of the same report; sometimes another
                // report under the same key.
                let uptime = seq * 10_000 + if rng.random_bool(0.1) { 7 } else { 0 };
                let reset = rng.random_bool(0.1);
                let mut interfaces = Vec::new();
                for name in IFACES {
                    if rng.random_bool(0.8) {
                        interfaces.push(InterfaceCounters {
                            name: name.to_owned(),
                            rx_bytes: if reset { 5 } else { seq * 1000 },
                            tx_bytes: seq * 300 + rng.random_range(0..200),
                            ..InterfaceCounters::default()
                        });
                    }
                }
                let mut t = Telemetry {
                    node: node.clone(),
                    boot_id: BOOTS[rng.random_range(0..BOOTS.len())].to_owned(),
                    seq,
                    uptime_ms: uptime,
                    time_ms: T0 as u64 + uptime,
                    // Tells which copy of a duplicate was stored.
                    load: [i as f32 / 10.0, 0.5, 0.25],
                    cpu: CpuTimes {
                        user: seq * 100 + rng.random_range(0..80),
                        system: seq * 50,
                        idle: seq * 400,
                        ..CpuTimes::default()
                    },
                    dropped: rng.random_range(0..3),
                    interfaces,
                    ..examples::telemetry_v1()
                };
                if rng.random_bool(0.05) {
                    t.load[0] = f32::NAN;
                }
                Report::Telemetry(t)
            }
        };
        out.push((network, node, report, received));
    }
    out
}

/// The messages as batch items, each in its network `nets[i]`.
fn incoming<'a>(msgs: &'a [Msg], nets: &'a [String]) -> Vec<Incoming<'a>> {
    msgs.iter()
        .zip(nets)
        .map(|((_, node, report, received), net)| Incoming::new(net, node, report, *received))
        .collect()
}

/// Everything the read API shows of the networks named `prefix*`, with the
/// prefix taken off.
async fn dump(store: &Store, prefix: &str) -> anyhow::Result<Value> {
    let short = |s: &str| s.strip_prefix(prefix).unwrap_or(s).to_owned();
    let mut networks = Vec::new();
    for n in store.networks().await? {
        if !n.id.starts_with(prefix) {
            continue;
        }
        let mut nodes = Vec::new();
        for s in store.nodes(Some(&n.id)).await? {
            let mut detail = serde_json::to_value(store.node_detail(&n.id, &s.node).await?)?;
            detail["network"] = json!(short(&s.network));
            let mut series = serde_json::Map::new();
            let mut metrics = vec![
                Metric::Load1,
                Metric::Load5,
                Metric::Load15,
                Metric::MemUsedRatio,
                Metric::RootfsUsedRatio,
                Metric::CpuBusyRatio,
            ];
            for i in IFACES {
                metrics.push(Metric::RxBps(i.to_owned()));
                metrics.push(Metric::TxBps(i.to_owned()));
            }
            for m in &metrics {
                let points = store.series(&n.id, &s.node, m, 0, i64::MAX).await?;
                series.insert(format!("{m:?}"), serde_json::to_value(points)?);
            }
            nodes.push(json!({"detail": detail, "series": series}));
        }
        networks.push(json!({
            "id": short(&n.id),
            "counts": [n.nodes, n.online, n.offline],
            "nodes": nodes,
        }));
    }
    let status: Vec<Value> = store
        .status_counts()
        .await?
        .into_iter()
        .filter(|(n, _, _)| n.starts_with(prefix))
        .map(|(n, s, c)| json!([short(&n), s, c]))
        .collect();
    let dropped: Vec<Value> = store
        .agent_dropped()
        .await?
        .into_iter()
        .filter(|(n, _)| n.starts_with(prefix))
        .map(|(n, d)| json!([short(&n), d]))
        .collect();
    Ok(json!({"networks": networks, "status": status, "dropped": dropped}))
}

#[tokio::test]
async fn batches_equal_one_by_one() -> anyhow::Result<()> {
    each_backend("batches_equal_one_by_one", |store| async move {
        for seed in 0..24u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let msgs = messages(&mut rng, 60);

            // One by one.
            let one = format!("s{seed}-one-");
            let nets: Vec<String> = msgs.iter().map(|m| format!("{one}{}", m.0)).collect();
            let mut single = Vec::new();
            for item in incoming(&msgs, &nets) {
                single.extend(store.record_batch(&[item]).await?);
            }

            // In random splits, from batches of one to all at once.
            let many = format!("s{seed}-many-");
            let nets: Vec<String> = msgs.iter().map(|m| format!("{many}{}", m.0)).collect();
            let items = incoming(&msgs, &nets);
            let mut batched = Vec::new();
            let mut rest = &items[..];
            let mut sizes = Vec::new();
            while !rest.is_empty() {
                let max = [1, 3, 10, 60][rng.random_range(0..4)];
                let k = rng.random_range(1..=max).min(rest.len());
                sizes.push(k);
                batched.extend(store.record_batch(&rest[..k]).await?);
                rest = &rest[k..];
            }

            ensure!(
                single == batched,
                "seed {seed}, batches {sizes:?}: outcomes differ\n{single:?}\n{batched:?}"
            );
            let (a, b) = (dump(&store, &one).await?, dump(&store, &many).await?);
            ensure!(
                a == b,
                "seed {seed}, batches {sizes:?}: contents differ\none by one: {a:#}\nbatched: {b:#}"
            );
            // Not trivially equal: something was stored, and every kind of
            // outcome occurs across the seeds.
            ensure!(single.contains(&Outcome::Inserted), "seed {seed}");
        }
        Ok(())
    })
    .await
}

/// The cases batching must get right, spelled out: a rate against an
/// earlier item of the batch, a duplicate within the batch, a report older
/// than an earlier item (its previous sample is the stored one), an invalid
/// item that changes nothing.
#[tokio::test]
async fn batch_cases() -> anyhow::Result<()> {
    each_backend("batch_cases", |store| async move {
        let report = |seq: u64, rx: u64| Telemetry {
            node: "n1".to_owned(),
            boot_id: "b1".to_owned(),
            seq,
            uptime_ms: seq * 1000,
            time_ms: T0 as u64 + seq * 1000,
            interfaces: vec![InterfaceCounters {
                name: "eth0".to_owned(),
                rx_bytes: rx,
                ..InterfaceCounters::default()
            }],
            ..examples::telemetry_v1()
        };
        let (r1, r2, r3, r5) = (
            report(1, 0),
            report(2, 1000),
            report(3, 3000),
            report(5, 4000),
        );
        let mut bad = report(4, 0);
        bad.load[0] = f32::NAN;
        let item = |t: &'static Telemetry| Incoming {
            network: "net",
            node: "n1",
            content: Content::Telemetry(t),
            received_ms: T0 + 10_000 + t.seq as i64,
        };
        let leak = |t: Telemetry| -> &'static Telemetry { Box::leak(Box::new(t)) };
        let (r1, r2, r3, r5, bad) = (leak(r1), leak(r2), leak(r3), leak(r5), leak(bad));
        assert_eq!(store.record_batch(&[item(r1)]).await?, [Outcome::Inserted]);
        let outcomes = store
            .record_batch(&[item(r3), item(r5), item(r3), item(bad), item(r2)])
            .await?;
        ensure!(matches!(outcomes[3], Outcome::Invalid(_)), "{outcomes:?}");
        assert_eq!(
            outcomes
                .iter()
                .filter(|o| !matches!(o, Outcome::Invalid(_)))
                .collect::<Vec<_>>(),
            [
                &Outcome::Inserted,
                &Outcome::Inserted,
                &Outcome::Duplicate,
                &Outcome::Inserted
            ]
        );
        let rx = store
            .series("net", "n1", &Metric::RxBps("eth0".into()), 0, i64::MAX)
            .await?;
        let rates: Vec<(i64, f64)> = rx.iter().map(|p| (p.t - T0, p.v)).collect();
        // seq 3 against stored seq 1 (3000 bytes in 2 s), seq 5 against seq 3
        // of this batch (1000 bytes in 2 s), seq 2 against stored seq 1, not
        // against seq 3 or 5 that came before it.
        assert_eq!(rates, [(2000, 8000.0), (3000, 12_000.0), (5000, 4000.0)]);
        let d = store.node_detail("net", "n1").await?.expect("node");
        assert_eq!(d.summary.last_seen_ms, T0 + 10_005);
        Ok(())
    })
    .await
}

/// The writer remembers which nodes have a row and stops inserting them; a
/// node row removed behind its back (by another process) is created again
/// by the node's next message, as its first message would have.
#[tokio::test]
async fn a_node_removed_behind_the_writers_back_comes_back() -> anyhow::Result<()> {
    common::each_database("node_removed", |url, _| async move {
        use sea_orm::{ConnectionTrait, Database};
        let store = Store::connect(&url).await?;
        let hello = examples::hello_v1();
        let item = |received_ms: i64| Incoming {
            network: "net",
            node: "n1",
            content: Content::Hello(&hello),
            received_ms,
        };
        assert_eq!(store.record_batch(&[item(T0)]).await?, [Outcome::Inserted]);
        let other = Database::connect(url.as_str()).await?;
        let removed = other
            .execute_unprepared("DELETE FROM node WHERE network = 'net' AND node = 'n1'")
            .await?;
        ensure!(
            removed.rows_affected() == 1,
            "removed {}",
            removed.rows_affected()
        );
        ensure!(
            store.node_detail("net", "n1").await?.is_none(),
            "still there"
        );
        assert_eq!(
            store.record_batch(&[item(T0 + 5_000)]).await?,
            [Outcome::Inserted]
        );
        let d = store.node_detail("net", "n1").await?.expect("node again");
        assert_eq!(d.summary.first_seen_ms, T0 + 5_000);
        other.close().await?;
        store.close().await?;
        Ok(())
    })
    .await
}

/// Samples go with their node, and only its samples (on PostgreSQL a
/// trigger does what a foreign key would, without a check per insert); a
/// sample's interfaces are in its row.
#[tokio::test]
async fn samples_go_with_their_node() -> anyhow::Result<()> {
    common::each_database("samples_cascade", |url, _| async move {
        use sea_orm::{ConnectionTrait, Database, Statement};
        let store = Store::connect(&url).await?;
        let reports: Vec<(&str, Telemetry)> = ["n1", "n2", "n3"]
            .into_iter()
            .map(|node| {
                let t = Telemetry {
                    node: node.to_owned(),
                    ..examples::telemetry_v1()
                };
                (node, t)
            })
            .collect();
        let items: Vec<Incoming<'_>> = reports
            .iter()
            .map(|(node, t)| Incoming {
                network: "net",
                node,
                content: Content::Telemetry(t),
                received_ms: T0,
            })
            .collect();
        store.record_batch(&items).await?;
        let other = Database::connect(url.as_str()).await?;
        let count = |sql: &'static str| {
            let other = &other;
            async move {
                let row = other
                    .query_one_raw(Statement::from_string(other.get_database_backend(), sql))
                    .await?
                    .expect("a row");
                anyhow::Ok(row.try_get_by_index::<i64>(0)?)
            }
        };
        let samples = "SELECT COUNT(*) FROM sample";
        let orphan_samples = "SELECT COUNT(*) FROM sample s \
                              WHERE NOT EXISTS (SELECT 1 FROM node n WHERE n.id = s.node_id)";
        assert_eq!(count(samples).await?, 3);

        other
            .execute_unprepared("DELETE FROM node WHERE network = 'net' AND node = 'n1'")
            .await?;
        assert_eq!(count(samples).await?, 2);
        other
            .execute_unprepared(
                "DELETE FROM sample WHERE node_id = \
                 (SELECT id FROM node WHERE network = 'net' AND node = 'n2')",
            )
            .await?;
        assert_eq!(count(samples).await?, 1);
        assert_eq!(count(orphan_samples).await?, 0);
        let n3 = store.interface_rows("net", "n3").await?;
        assert_eq!(n3.len(), examples::telemetry_v1().interfaces.len());
        other.close().await?;
        store.close().await?;
        Ok(())
    })
    .await
}

/// A batch of several insert statements' worth of new samples (the
/// writer sends them while it replays the rest) has the effect of the same
/// reports in batches too small for that: same outcomes, same contents.
#[tokio::test]
async fn a_large_batch_equals_small_ones() -> anyhow::Result<()> {
    each_backend("a_large_batch", |store| async move {
        let mut rng = StdRng::seed_from_u64(7);
        let nodes: Vec<String> = (0..40).map(|n| format!("n{n}")).collect();
        // 60 reports per node in seq order, nodes interleaved at random,
        // counters growing by a random step, a few redelivered.
        let mut next = vec![0u64; nodes.len()];
        let mut rx = vec![0u64; nodes.len()];
        let mut msgs: Vec<Msg> = Vec::new();
        while msgs.len() < 2600 {
            let n = rng.random_range(0..nodes.len());
            let redelivery = next[n] > 0 && rng.random_bool(0.05);
            if !redelivery {
                next[n] += 1;
                rx[n] += rng.random_range(0..100_000);
            }
            let seq = next[n] - 1;
            let mut t = examples::telemetry_v1();
            t.node = nodes[n].clone();
            t.boot_id = "b1".to_owned();
            t.seq = seq;
            t.uptime_ms = 60_000 * (seq + 1);
            t.time_ms = T0 as u64 + t.uptime_ms;
            t.interfaces.truncate(1);
            t.interfaces[0].name = IFACES[0].to_owned();
            t.interfaces[0].rx_bytes = rx[n];
            let received = T0 + t.uptime_ms as i64;
            msgs.push((
                String::new(),
                nodes[n].clone(),
                Report::Telemetry(t),
                received,
            ));
        }
        let nets = |prefix: &str| vec![format!("{prefix}net"); msgs.len()];

        let (all, small) = (nets("all-"), nets("small-"));
        let at_once = store.record_batch(&incoming(&msgs, &all)).await?;
        let mut in_fifties = Vec::new();
        for chunk in incoming(&msgs, &small).chunks(50) {
            in_fifties.extend(store.record_batch(chunk).await?);
        }
        ensure!(at_once == in_fifties, "outcomes differ");
        let inserted = at_once.iter().filter(|o| **o == Outcome::Inserted).count();
        ensure!(inserted > 2000, "{inserted} inserted");
        ensure!(store.sample_count().await? == 2 * inserted as u64);
        let (a, b) = (dump(&store, "all-").await?, dump(&store, "small-").await?);
        ensure!(a == b, "contents differ\nat once: {a:#}\nin fifties: {b:#}");

        // Redelivered whole: all duplicates.
        let again = store.record_batch(&incoming(&msgs, &all)).await?;
        ensure!(again.iter().all(|o| *o == Outcome::Duplicate));
        ensure!(store.sample_count().await? == 2 * inserted as u64);
        Ok(())
    })
    .await
}
