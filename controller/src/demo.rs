//! `meshtable demo`: the controller with its embedded broker and SQLite in a
//! fresh directory, and a simulated fleet from a real community mesh
//! ([`meshtable_sim`]) reporting to it, all in one process.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use meshtable_sim::{RunOptions, SimConfig, SimError, Snapshot};
use meshtable_store::Store;
use tokio::sync::watch;
use tracing::{error, info};

use crate::broker::{self, BrokerError};
use crate::config::{Broker, DemoConfig, SimNetwork, sqlite_url};
use crate::serve::{self, Controller, Listeners, ServeError};

/// How long the demo waits for the simulated routers to say goodbye.
pub const SIM_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(10);

/// Why the demo could not run.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// The temporary data directory could not be created.
    #[error("cannot create a temporary data directory: {0}")]
    TempDir(io::Error),
    /// The controller failed.
    #[error(transparent)]
    Serve(#[from] ServeError),
    /// The simulator failed.
    #[error("simulator: {0}")]
    Sim(#[from] SimError),
    /// The simulator task panicked.
    #[error("simulator task failed: {0}")]
    SimTask(String),
}

/// Binds `addr`, or when it is taken and `may_move`, a free port on the same
/// address; returns the listener and whether it moved.
fn bind_http_or_move(
    addr: SocketAddr,
    may_move: bool,
) -> Result<(std::net::TcpListener, bool), ServeError> {
    match serve::bind_http(addr) {
        Err(ServeError::ListenInUse(_)) if may_move => {
            Ok((serve::bind_http(SocketAddr::new(addr.ip(), 0))?, true))
        }
        other => other.map(|l| (l, false)),
    }
}

fn reserve_mqtt_or_move(
    addr: SocketAddr,
    may_move: bool,
) -> Result<(SocketAddr, bool), BrokerError> {
    match broker::reserve(addr) {
        Err(BrokerError::AddrInUse(_)) if may_move => {
            Ok((broker::reserve(SocketAddr::new(addr.ip(), 0))?, true))
        }
        other => other.map(|a| (a, false)),
    }
}

/// Runs the demo until `shutdown` resolves or the simulator fails.
pub async fn run(
    mut demo: DemoConfig,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DemoError> {
    // A fresh database unless the user chose one; removed when the demo ends.
    let temp_dir = if demo.data_dir_given {
        None
    } else {
        let dir = tempfile::Builder::new()
            .prefix("meshtable-demo-")
            .tempdir()
            .map_err(DemoError::TempDir)?;
        demo.controller.data_dir = dir.path().to_owned();
        demo.controller.database_url = sqlite_url(dir.path());
        Some(dir)
    };

    let config = &mut demo.controller;
    let (http, http_moved) = bind_http_or_move(config.listen, !demo.listen_given)?;
    let Broker::Embedded {
        listen: mqtt_listen,
    } = config.broker
    else {
        unreachable!("DemoConfig::resolve refuses --mqtt-url")
    };
    let (mqtt, mqtt_moved) =
        reserve_mqtt_or_move(mqtt_listen, !demo.mqtt_listen_given).map_err(ServeError::from)?;
    let http_addr = http.local_addr().map_err(|source| ServeError::Listen {
        addr: config.listen,
        source,
    })?;
    if http_moved {
        println!(
            "port {} is taken, using {http_addr} for http instead",
            config.listen.port()
        );
    }
    if mqtt_moved {
        println!(
            "port {} is taken, using {mqtt} for mqtt instead",
            mqtt_listen.port()
        );
    }
    config.listen = http_addr;
    config.broker = Broker::Embedded { listen: mqtt };
    // The simulated routers have no broker login: they connect anonymously
    // and sign every report with a key registered below, in a network that
    // refuses unsigned reports.
    config.mqtt_allow_anonymous = true;

    let controller = Controller::start(
        config,
        Listeners {
            http,
            mqtt: Some(mqtt),
        },
    )
    .await?;
    let snapshot = match demo.sim.network {
        SimNetwork::Leipzig => Snapshot::leipzig(),
        SimNetwork::Bremen => Snapshot::bremen(),
    };
    register_sim_keys(
        controller.store(),
        demo.sim.network.as_str(),
        &snapshot,
        demo.sim.seed,
    )
    .await;
    println!("{}", controller.ready_line());
    print_urls(
        &controller,
        &demo,
        snapshot.nodes.len(),
        temp_dir.as_ref().map(|d| d.path().to_owned()),
    );
    let sim_config = SimConfig {
        mqtt_host: mqtt.ip().to_string(),
        mqtt_port: mqtt.port(),
        network: demo.sim.network.as_str().to_owned(),
        snapshot,
        interval: demo.sim.interval,
        churn: demo.sim.churn,
        seed: demo.sim.seed,
    };
    let (sim_stop, mut sim_stop_rx) = watch::channel(false);
    let mut sim = tokio::spawn(meshtable_sim::run_with(
        sim_config,
        RunOptions { sign: true },
        async move {
            let _ = sim_stop_rx.wait_for(|s| *s).await;
        },
    ));

    // Until Ctrl-C, or until the simulator gives up on its own.
    let early = tokio::select! {
        _ = shutdown => None,
        r = &mut sim => Some(r),
    };
    let result = match early {
        Some(r) => {
            let r = sim_result(r);
            if let Err(e) = &r {
                error!(error = %e, "simulator stopped");
            }
            r
        }
        None => {
            let _ = sim_stop.send(true);
            match tokio::time::timeout(SIM_SHUTDOWN_TIMEOUT, &mut sim).await {
                Ok(r) => sim_result(r),
                Err(_) => {
                    sim.abort();
                    info!("simulated routers did not all say goodbye in time");
                    Ok(())
                }
            }
        }
    };
    controller.shutdown().await;
    result
}

/// Creates the demo network as signed-only (or makes an existing one so)
/// and registers the public key of every simulated router, all before the
/// first router connects. Failures are logged: the demo then shows the
/// rejected reports in `meshtable_ingest_rejected_total`.
pub async fn register_sim_keys(store: &Store, network: &str, snapshot: &Snapshot, seed: u64) {
    match crate::enroll::add_network(store, network, false).await {
        Ok(()) => {}
        Err(crate::api::ApiError::Conflict(_)) => {
            if let Err(e) = store.set_accept_unsigned(network, false).await {
                tracing::warn!(error = %e, "cannot make the demo network signed-only");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot create the demo network"),
    }
    let keys: Vec<(String, String)> = snapshot
        .nodes
        .iter()
        .map(|n| {
            let key = meshtable_sim::node_key(seed, network, &n.node_id);
            let public = meshtable_proto::sign::to_hex(key.verifying_key().as_bytes());
            (n.node_id.clone(), public)
        })
        .collect();
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    match store.register_node_keys(network, &keys, now_ms).await {
        Ok(()) => info!(
            network,
            nodes = keys.len(),
            "registered the simulated routers' keys"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot register the simulated routers' keys"),
    }
}

fn sim_result(
    r: Result<Result<meshtable_sim::SimReport, SimError>, tokio::task::JoinError>,
) -> Result<(), DemoError> {
    match r {
        Ok(Ok(report)) => {
            info!(report = %report, "simulator finished");
            Ok(())
        }
        Ok(Err(e)) => Err(DemoError::Sim(e)),
        Err(e) => Err(DemoError::SimTask(e.to_string())),
    }
}

fn print_urls(controller: &Controller, demo: &DemoConfig, nodes: usize, temp_dir: Option<PathBuf>) {
    let http = controller.http_url();
    println!();
    println!(
        "meshtable demo: {nodes} simulated routers of {} report every {}",
        demo.sim.network,
        humantime::format_duration(demo.sim.interval)
    );
    println!("  web      {http}/");
    println!("  api      {http}/api/v1/networks");
    println!("  metrics  {http}/metrics");
    println!("  mqtt     {}", controller.mqtt_url());
    match controller.bootstrap_password() {
        Some(pw) => println!(
            "  login    user {} password {} (superadmin, shown once)",
            crate::auth::BOOTSTRAP_USER,
            pw.expose()
        ),
        None => println!(
            "  login    the accounts of this database (`meshtable user passwd {}` sets a new password)",
            crate::auth::BOOTSTRAP_USER
        ),
    }
    match temp_dir {
        Some(dir) => println!("  data     {} (temporary, removed on exit)", dir.display()),
        None => println!(
            "  database {}",
            crate::config::redact_url(&demo.controller.database_url)
        ),
    }
    println!("Press Ctrl-C to stop.");
    println!();
}
