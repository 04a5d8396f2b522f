//! The demo's signed fleet, in-process (embedded broker, SQLite in a temp
//! dir): simulated routers whose keys `register_sim_keys` registered are
//! stored in a signed-only network; the same routers unsigned are refused
//! and counted.

use std::collections::BTreeSet;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use meshtable::config::{Config, Layer};
use meshtable::serve::{Controller, Listeners};
use meshtable_sim::{RunOptions, SimConfig, Snapshot};
use tokio::sync::watch;

const NETWORK: &str = "signed";

fn fleet(skip: usize) -> Snapshot {
    let mut s = Snapshot::leipzig();
    let keep: BTreeSet<String> = s
        .nodes
        .iter()
        .filter(|n| n.is_online)
        .skip(skip)
        .take(5)
        .map(|n| n.node_id.clone())
        .collect();
    s.nodes.retain(|n| keep.contains(&n.node_id));
    s
}

fn sim(controller: &Controller, snapshot: Snapshot, sign: bool) -> Result<watch::Sender<bool>> {
    let (host, port) = meshtable_sim::parse_mqtt_url(controller.mqtt_url())?;
    let cfg = SimConfig {
        mqtt_host: host,
        mqtt_port: port,
        network: NETWORK.to_owned(),
        snapshot,
        interval: Duration::from_millis(200),
        churn: 0.0,
        seed: 7,
    };
    let (stop, mut stop_rx) = watch::channel(false);
    tokio::spawn(meshtable_sim::run_with(
        cfg,
        RunOptions { sign },
        async move {
            let _ = stop_rx.wait_for(|s| *s).await;
        },
    ));
    Ok(stop)
}

async fn rejected_unsigned(http: &reqwest::Client, url: &str) -> Result<f64> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    text.lines()
        .find_map(|l| {
            l.strip_prefix("meshtable_ingest_rejected_total{reason=\"unsigned\"} ")?
                .parse()
                .ok()
        })
        .context("no unsigned rejection counter")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_fleet_is_stored_and_unsigned_refused() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let layer = Layer {
        listen: Some("127.0.0.1:0".parse()?),
        mqtt_listen: Some("127.0.0.1:0".parse()?),
        data_dir: Some(dir.path().to_owned()),
        mqtt_allow_anonymous: Some(true),
        ..Layer::default()
    };
    let config = Config::resolve(&layer, None)?;
    let controller = Controller::start(&config, Listeners::bind(&config)?).await?;
    let store = controller.store().clone();

    let signed = fleet(0);
    let ids: Vec<String> = signed.nodes.iter().map(|n| n.node_id.clone()).collect();
    meshtable::demo::register_sim_keys(&store, NETWORK, &signed, 7).await;
    let trust = store.network_trust().await?;
    ensure!(
        trust.iter().any(|n| n.id == NETWORK && !n.accept_unsigned),
        "{trust:?}"
    );
    let stop = sim(&controller, signed, true)?;
    tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let mut all = true;
            for id in &ids {
                let d = store.node_detail(NETWORK, id).await?;
                all &= d.is_some_and(|d| d.latest.is_some() && d.hello.is_some());
            }
            if all {
                return Ok::<_, anyhow::Error>(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await
    .context("signed reports were not all stored")??;
    let _ = stop.send(true);

    // Other routers, unsigned: refused and counted, never stored.
    let http = reqwest::Client::new();
    let url = controller.http_url();
    let before = rejected_unsigned(&http, &url).await?;
    let unsigned = fleet(5);
    let others: Vec<String> = unsigned.nodes.iter().map(|n| n.node_id.clone()).collect();
    let stop = sim(&controller, unsigned, false)?;
    tokio::time::timeout(Duration::from_secs(60), async {
        while rejected_unsigned(&http, &url).await? < before + 10.0 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok::<_, anyhow::Error>(())
    })
    .await
    .context("unsigned reports were not refused")??;
    let _ = stop.send(true);
    for id in &others {
        ensure!(
            store.node_detail(NETWORK, id).await?.is_none(),
            "{id} stored"
        );
    }
    controller.shutdown().await;
    Ok(())
}
