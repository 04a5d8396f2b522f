//! meshtable fleet simulator: every node of a real community mesh snapshot
//! becomes a simulated router with its own MQTT connection, speaking the real
//! protocol of [`meshtable_proto`] (for the demo and for load tests).
//!
//! A router connects with client id `meshtable-<network>-<node>`, clean
//! session, QoS 1 and the retained offline [`State`](meshtable_proto::State)
//! as its last will. At every connect it publishes its hello and `online`
//! (both retained), then telemetry every interval: the first report right
//! after connecting, `seq` from 0, cumulative counters that grow at a rate
//! set by its client count, and gauges around the snapshot's load, memory and
//! rootfs usage. Startup is staggered over a few seconds.
//!
//! Nodes that were offline in the snapshot connect once, announce themselves
//! and vanish (their last will marks them offline), so the controller knows
//! the whole network with the snapshot's share of dead nodes, as a real
//! network's map shows them. They stay offline for the run.
//!
//! Churn takes online routers down now and then (see [`SimConfig::churn`]):
//! half lose power (abrupt: the connection drops without DISCONNECT, the
//! broker fires the will; they come back with a new boot), three in ten lose
//! their link (abrupt; the router stays up, keeps its boot and queues its
//! reports, which it sends after reconnecting), and two in ten reboot cleanly
//! (retained `offline` state, DISCONNECT, back with a new boot). At shutdown
//! every connected router publishes `offline` and disconnects cleanly.
//!
//! ```no_run
//! # async fn demo() -> Result<(), meshtable_sim::SimError> {
//! use meshtable_sim::{SimConfig, Snapshot};
//! let cfg = SimConfig {
//!     mqtt_host: "127.0.0.1".into(),
//!     mqtt_port: 1883,
//!     network: "leipzig".into(),
//!     snapshot: Snapshot::leipzig(),
//!     interval: meshtable_sim::DEFAULT_INTERVAL,
//!     churn: meshtable_sim::DEFAULT_CHURN,
//!     seed: 1,
//! };
//! let report = meshtable_sim::run(cfg, tokio::time::sleep(std::time::Duration::from_secs(60))).await?;
//! println!("{report}");
//! # Ok(()) }
//! ```

pub mod flood;
pub mod mesh;
pub mod model;
mod node;
pub mod profile;
pub mod rng;
pub mod snapshot;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinSet;
use tracing::{error, info, warn};

pub use snapshot::{LinkKind, Snapshot, SnapshotLink, SnapshotNode};

use crate::node::{Shared, SimNode};
use crate::profile::NodeProfile;
use crate::rng::Rng;

/// Telemetry interval of the demo.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

/// Churn of the demo: at a 10 s interval about one Leipzig router goes down
/// every half minute, and some nine are down for churn at any time.
pub const DEFAULT_CHURN: f64 = 0.002;

/// Shortest telemetry interval [`run`] accepts.
pub const MIN_INTERVAL: Duration = Duration::from_millis(10);

/// Longest time over which router connections are spread at startup.
pub const MAX_STAGGER: Duration = Duration::from_secs(5);

/// How to run a simulated fleet.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// MQTT broker host name or address.
    pub mqtt_host: String,
    /// MQTT broker port.
    pub mqtt_port: u16,
    /// The meshtable network (tenant) the routers report to.
    pub network: String,
    /// The mesh to simulate.
    pub snapshot: Snapshot,
    /// Telemetry interval (at least [`MIN_INTERVAL`]).
    pub interval: Duration,
    /// Probability, per online router and interval, that the router goes
    /// down (0 = never; 0..=1). Outages last some 3-60 intervals.
    pub churn: f64,
    /// Seeds everything random: traffic habits, boot ids, churn.
    pub seed: u64,
}

/// What a run did. Messages count when the broker acknowledged them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SimReport {
    /// Simulated routers.
    pub nodes: usize,
    /// Successful MQTT connects (ConnAck), reconnects included.
    pub connections: u64,
    /// Failed connects and lost connections (broker trouble, not churn).
    pub connection_errors: u64,
    /// Hellos published.
    pub hellos: u64,
    /// States published by the routers (`online` at connect, `offline`
    /// before a clean disconnect); last wills are the broker's, not counted.
    pub states: u64,
    /// Telemetry reports published.
    pub telemetry: u64,
    /// Telemetry reports dropped from full router queues.
    pub telemetry_dropped: u64,
    /// Routers that vanished without DISCONNECT, so that the broker fired
    /// their last will: churn power and link losses, and the snapshot's
    /// offline nodes after announcing themselves.
    pub offline_abrupt: u64,
    /// Clean churn reboots: `offline` state published, then DISCONNECT.
    pub offline_clean: u64,
    /// Routers that published `offline` and disconnected at shutdown.
    pub stopped: u64,
    /// Routers that came back with a new boot.
    pub reboots: u64,
}

impl SimReport {
    /// Every offline event of the run: abrupt, clean and at shutdown.
    pub fn offline(&self) -> u64 {
        self.offline_abrupt + self.offline_clean + self.stopped
    }
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "nodes={} connections={} connection_errors={} hellos={} states={} telemetry={} \
             telemetry_dropped={} offline_abrupt={} offline_clean={} stopped={} reboots={}",
            self.nodes,
            self.connections,
            self.connection_errors,
            self.hellos,
            self.states,
            self.telemetry,
            self.telemetry_dropped,
            self.offline_abrupt,
            self.offline_clean,
            self.stopped,
            self.reboots
        )
    }
}

/// Why the simulator cannot start or run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// A snapshot file could not be read.
    #[error("cannot read snapshot {path}: {source}")]
    Read {
        /// The path given.
        path: String,
        /// The IO error.
        source: std::io::Error,
    },
    /// The snapshot is not meshviewer JSON.
    #[error("snapshot is not meshviewer json: {0}")]
    Parse(#[source] serde_json::Error),
    /// The snapshot parses but cannot be simulated (bad or duplicate node ids).
    #[error("invalid snapshot: {0}")]
    Snapshot(String),
    /// A [`SimConfig`] value is out of range.
    #[error("invalid simulator config: {0}")]
    Config(String),
    /// An MQTT URL is not `mqtt://host[:port]`.
    #[error("invalid mqtt url {url:?}: {reason}")]
    MqttUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// The broker cannot be reached or refuses an MQTT connection.
    #[error("cannot connect to the mqtt broker at {addr}: {reason}")]
    Broker {
        /// `host:port`.
        addr: String,
        /// The connect error.
        reason: String,
    },
    /// A simulated router's task panicked.
    #[error("simulated node task failed: {0}")]
    Task(String),
}

/// Splits `mqtt://host[:port]` into host and port (see
/// [`meshtable_proto::BrokerUrl::parse`]); the simulator does not log in, so
/// credentials are refused.
pub fn parse_mqtt_url(url: &str) -> Result<(String, u16), SimError> {
    let b = meshtable_proto::BrokerUrl::parse(url).map_err(|e| SimError::MqttUrl {
        url: e.url,
        reason: e.reason,
    })?;
    if b.credentials.is_some() {
        return Err(SimError::MqttUrl {
            url: url.to_owned(),
            reason: "the simulator does not log in: leave out user and password",
        });
    }
    if b.tls {
        return Err(SimError::MqttUrl {
            url: url.to_owned(),
            reason: "the simulator speaks plain MQTT only: use mqtt://",
        });
    }
    Ok((b.host, b.port))
}

fn check(cfg: &SimConfig) -> Result<(), SimError> {
    let bad = |m: String| Err(SimError::Config(m));
    if cfg.mqtt_host.is_empty() {
        return bad("mqtt_host is empty".to_owned());
    }
    if cfg.mqtt_port == 0 {
        return bad("mqtt_port is 0".to_owned());
    }
    if let Err(e) = meshtable_proto::validate_id(&cfg.network) {
        return bad(format!("network: {e}"));
    }
    if cfg.interval < MIN_INTERVAL || cfg.interval.as_millis() > u128::from(u32::MAX) {
        return bad(format!(
            "interval {:?} is outside {MIN_INTERVAL:?}..{}ms",
            cfg.interval,
            u32::MAX
        ));
    }
    if !(cfg.churn.is_finite() && (0.0..=1.0).contains(&cfg.churn)) {
        return bad(format!("churn {} is outside 0..=1", cfg.churn));
    }
    if cfg.snapshot.nodes.is_empty() {
        return bad("the snapshot has no nodes".to_owned());
    }
    Ok(())
}

/// Runs the fleet until `shutdown` completes, then lets every connected
/// router publish `offline` and disconnect (a few seconds at most), and
/// returns what happened.
///
/// Fails at once on an invalid config or when nothing listens at the broker
/// address; later broker trouble makes the routers reconnect with backoff
/// (logged, counted in [`SimReport::connection_errors`]).
pub async fn run(
    cfg: SimConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<SimReport, SimError> {
    run_with(cfg, RunOptions::default(), shutdown).await
}

/// How [`run_with`] runs the fleet beyond its [`SimConfig`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunOptions {
    /// Every router signs everything it publishes (hello, states, last will,
    /// telemetry) with its [`node_key`], in a [`meshtable_proto::sign`]
    /// envelope; the controller must know the public keys.
    pub sign: bool,
}

/// The ed25519 key of simulated router `node` of `network`, derived from the
/// fleet seed: the same seed gives the same keys, so a controller can register
/// the public keys before the fleet starts. For simulations only: anyone who
/// knows the seed knows the keys.
pub fn node_key(seed: u64, network: &str, node: &str) -> meshtable_proto::sign::SigningKey {
    let mut rng = Rng::derive(seed, node, &format!("ed25519-{network}"));
    let mut bytes = [0u8; 32];
    for chunk in bytes.chunks_exact_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
    }
    meshtable_proto::sign::SigningKey::from_bytes(&bytes)
}

/// [`run`], with [`RunOptions`].
pub async fn run_with(
    cfg: SimConfig,
    options: RunOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<SimReport, SimError> {
    check(&cfg)?;
    // One MQTT connect first, so that a wrong address or a refusing broker
    // fails at once rather than as endless reconnects of every router.
    node::probe(&cfg.mqtt_host, cfg.mqtt_port, &cfg.network)
        .await
        .map_err(|reason| SimError::Broker {
            addr: format!("{}:{}", cfg.mqtt_host, cfg.mqtt_port),
            reason,
        })?;

    let profiles = profile::fleet(&cfg.snapshot, cfg.seed);
    let n = profiles.len();
    let shared = Arc::new(Shared::new(&cfg, options.sign));
    let (stop_tx, stop_rx) = watch::channel(false);

    // Connections spread over up to MAX_STAGGER, in a seeded random order.
    let stagger = MAX_STAGGER.min(Duration::from_millis(10) * u32::try_from(n).unwrap_or(u32::MAX));
    let mut order: Vec<usize> = (0..n).collect();
    let mut rng = Rng::new(cfg.seed);
    for i in (1..n).rev() {
        let j = rng.int(0, i as u64) as usize;
        order.swap(i, j);
    }
    let mut profiles: Vec<Option<NodeProfile>> = profiles.into_iter().map(Some).collect();
    let mut tasks = JoinSet::new();
    for (rank, &index) in order.iter().enumerate() {
        let Some(profile) = profiles[index].take() else {
            continue;
        };
        let profile = Arc::new(profile);
        let delay = stagger.mul_f64(rank as f64 / n as f64);
        let sim = SimNode::new(Arc::clone(&shared), profile, cfg.seed);
        tasks.spawn(sim.run(delay, stop_rx.clone()));
    }
    drop(stop_rx);
    info!(
        network = %cfg.network,
        nodes = n,
        online = cfg.snapshot.online(),
        interval = ?cfg.interval,
        churn = cfg.churn,
        broker = %format!("{}:{}", cfg.mqtt_host, cfg.mqtt_port),
        "simulator started"
    );

    let mut failures = Vec::new();
    let mut progress = tokio::time::interval(Duration::from_secs(60));
    progress.tick().await;
    let mut last_errors = 0;
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            _ = progress.tick() => {
                let r = shared.report(n);
                info!(
                    connected = shared.connected(),
                    telemetry = r.telemetry,
                    offline = r.offline(),
                    reboots = r.reboots,
                    "simulator progress"
                );
                if r.connection_errors > last_errors {
                    warn!(
                        errors = r.connection_errors - last_errors,
                        error = %shared.last_error(),
                        "simulated routers lost or could not open broker connections"
                    );
                    last_errors = r.connection_errors;
                }
            }
            Some(done) = tasks.join_next() => {
                if let Err(e) = done {
                    error!(error = %e, "simulated node task failed");
                    failures.push(e.to_string());
                }
            }
        }
    }
    let _ = stop_tx.send(true);
    while let Some(done) = tasks.join_next().await {
        if let Err(e) = done {
            error!(error = %e, "simulated node task failed");
            failures.push(e.to_string());
        }
    }
    let report = shared.report(n);
    info!(%report, "simulator stopped");
    match failures.first() {
        Some(e) => Err(SimError::Task(e.clone())),
        None => Ok(report),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_keys_follow_the_seed_and_sign() {
        let a = node_key(7, "net", "a");
        assert_eq!(a.to_bytes(), node_key(7, "net", "a").to_bytes());
        assert_ne!(a.to_bytes(), node_key(8, "net", "a").to_bytes());
        assert_ne!(a.to_bytes(), node_key(7, "net", "b").to_bytes());
        assert_ne!(a.to_bytes(), node_key(7, "other", "a").to_bytes());
        let topic = "meshtable/v1/net/a/telemetry";
        let sealed = meshtable_proto::sign::seal(&a, "a", topic, b"report");
        let inner =
            meshtable_proto::sign::open_verified(&a.verifying_key(), topic, &sealed).unwrap();
        assert_eq!(inner, b"report");
    }

    #[test]
    fn mqtt_urls() {
        // The grammar itself is tested in meshtable-proto.
        assert_eq!(
            parse_mqtt_url("mqtt://[::1]:1883").unwrap(),
            ("::1".to_owned(), 1883)
        );
        assert!(parse_mqtt_url("mqtt://user@h:1883").is_err());
        assert!(parse_mqtt_url("localhost:1884").is_err());
    }

    fn cfg() -> SimConfig {
        let mut snapshot = Snapshot::leipzig();
        snapshot.truncate(3);
        SimConfig {
            mqtt_host: "127.0.0.1".to_owned(),
            mqtt_port: 1883,
            network: "simtest".to_owned(),
            snapshot,
            interval: DEFAULT_INTERVAL,
            churn: DEFAULT_CHURN,
            seed: 1,
        }
    }

    #[test]
    fn config_checks() {
        assert!(check(&cfg()).is_ok());
        let cases: [fn(&mut SimConfig); 7] = [
            |c| c.mqtt_host.clear(),
            |c| c.mqtt_port = 0,
            |c| c.network = "Not Valid".to_owned(),
            |c| c.interval = Duration::from_millis(1),
            |c| c.churn = 1.5,
            |c| c.churn = f64::NAN,
            |c| c.snapshot.nodes.clear(),
        ];
        for (i, breaks) in cases.iter().enumerate() {
            let mut c = cfg();
            breaks(&mut c);
            assert!(matches!(check(&c), Err(SimError::Config(_))), "case {i}");
        }
    }

    #[tokio::test]
    async fn unreachable_broker_fails_fast() {
        // A port nothing listens on: bind, note it, close.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let mut c = cfg();
        c.mqtt_port = port;
        let err = run(c, std::future::pending()).await.unwrap_err();
        assert!(matches!(err, SimError::Broker { .. }), "{err}");
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")));
    }
}
