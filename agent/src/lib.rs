//! meshtable-agent: runs on a community-mesh router, collects its health and
//! traffic counters and publishes them to the meshtable controller over MQTT.
//!
//! The pipeline is visible in the modules:
//!
//! ```text
//! config ─> collect (proc, netlink, system) ─> encode ─> spool ─> publish (MQTT)
//!                           state (seq, --state-dir) ─┘   (--spool-dir)
//! ```
//!
//! - [`config`]: flags over a TOML file over defaults, validated before any
//!   connection is made.
//! - [`collect`]: `/proc` (uptime, loadavg, stat, meminfo, boot id), rtnetlink
//!   (interfaces, counters, addresses, default route), `uname`, `statvfs`,
//!   release files; the mesh: nl80211 radios and stations and batman-adv
//!   neighbours over generic netlink, babeld's `dump`, DHCP leases, clients
//!   as salted hashes (see [`collect::mesh`]).
//! - [`encode`]: topics, client id and payloads (CBOR from `meshtable-proto`).
//! - [`spool`]: the bounded on-disk spool of unacknowledged reports
//!   (segments with a checksum per record); a report leaves it only when the
//!   broker acknowledges it, it survives agent restarts and torn writes, and
//!   what it drops is counted.
//! - [`publish`]: the MQTT driver (rumqttc, QoS 1, persistent session, last
//!   will, reconnect backoff).
//! - [`state`]: the telemetry sequence number, persisted per boot in
//!   `--state-dir` before each report is queued, so that a restarted agent
//!   never repeats a `(boot_id, seq)` its predecessor sent.
//!
//! - [`tls`] (the `tls` feature only): MQTT over TLS (`mqtts://`) with
//!   rustls, certificates from PEM files.
//!
//! The agent links no server code, and no TLS stack unless built with the
//! `tls` feature (`tests/deps.rs`).

pub mod backoff;
pub mod collect;
pub mod config;
pub mod encode;
pub mod enroll;
pub mod publish;
pub mod spool;
pub mod state;
#[cfg(feature = "tls")]
pub mod tls;

use std::future::Future;

pub use config::{Cli, Config};

use collect::{CollectError, Collector};
use config::ConfigError;
use publish::{PublishConfig, PublishError};
use spool::{Spool, SpoolConfig, SpoolError};
use state::{Resume, SeqStore, StateError};
use tracing::{info, warn};

/// Why the agent stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration was refused.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The router could not be read.
    #[error(transparent)]
    Collect(#[from] CollectError),
    /// Publishing could not start.
    #[error(transparent)]
    Publish(#[from] PublishError),
    /// The state directory cannot be used.
    #[error(transparent)]
    State(#[from] StateError),
    /// The spool directory cannot be used.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The identity directory cannot be used.
    #[error(transparent)]
    Enroll(#[from] enroll::EnrollError),
}

/// Applies the identity `enroll` left in `config.identity_dir`, if any: the
/// enrolled network and node id replace the configured ones, and its broker
/// login is used unless `--mqtt-url` names one.
pub fn apply_identity(mut config: Config) -> Result<Config, AgentError> {
    if let Some(id) = enroll::read_identity(&config.identity_dir)? {
        if config.network != id.network || config.node_id.as_ref().is_some_and(|n| *n != id.node) {
            info!(network = %id.network, node = %id.node, "using the enrolled identity");
        }
        config.network = id.network;
        config.node_id = Some(id.node);
        if config.broker.credentials.is_none() {
            config.broker.credentials = Some((id.mqtt_username, id.mqtt_password));
        }
    }
    Ok(config)
}

/// The node id: the configured one, else the primary interface's MAC.
pub fn node_id(config: &Config) -> Result<String, AgentError> {
    match &config.node_id {
        Some(id) => Ok(id.clone()),
        None => {
            let id = collect::default_node_id(std::path::Path::new("/sys/class/net"))?;
            meshtable_proto::validate_id(&id).map_err(ConfigError::NodeId)?;
            Ok(id)
        }
    }
}

/// The collector for `config` and `node`.
pub fn collector(config: &Config, node: &str) -> Collector {
    let mut c = Collector::new(
        config.proc_root.clone(),
        node.to_owned(),
        config.interval_ms(),
    );
    c.location = config.location.clone();
    c.mesh = config.mesh.clone();
    c
}

/// `--once`: one hello and one telemetry report (`seq` 0) as a line of JSON.
/// It neither reads nor writes the state directory: nothing is published, so
/// no sequence number is used up.
pub fn once(config: &Config, node: &str) -> Result<String, AgentError> {
    let c = collector(config, node);
    let hello = c.hello()?;
    let telemetry = c.telemetry(0, 0)?;
    Ok(encode::once_json(&hello, &telemetry))
}

/// Opens the state directory for this boot (see [`state`]) and logs where
/// the telemetry sequence starts.
pub fn open_state(config: &Config) -> Result<SeqStore, AgentError> {
    let boot = collect::proc::read_snapshot(&config.proc_root).map_err(CollectError::from)?;
    let (store, resume) = SeqStore::open(&config.state_dir, &boot.boot_id, boot.uptime_ms)?;
    let dir = store.dir().display();
    match resume {
        Resume::Fresh => info!(state_dir = %dir, seq = store.next(), "first run of this boot"),
        Resume::Continue => info!(
            state_dir = %dir,
            seq = store.next(),
            "continuing the telemetry sequence of this boot"
        ),
        Resume::NewBoot { stored_boot_id } => info!(
            state_dir = %dir,
            seq = store.next(),
            stored_boot_id = %stored_boot_id,
            "sequence file of an earlier boot, starting over"
        ),
        Resume::Recover { reason } => warn!(
            state_dir = %dir,
            seq = store.next(),
            reason = %reason,
            "unusable sequence file, starting at the uptime in milliseconds, past every seq this boot used"
        ),
    }
    Ok(store)
}

/// Opens the spool (see [`spool`]): the reports an earlier run left
/// unacknowledged are read back, to be sent first, as backfill.
pub fn open_spool(config: &Config) -> Result<Spool, AgentError> {
    Ok(Spool::open(SpoolConfig {
        dir: config.spool_dir.clone(),
        max_bytes: config.spool_max_bytes,
        max_records: config.queue_capacity,
        write_budget: config.spool_write_budget,
    })?)
}

/// Runs the agent until `shutdown` completes (SIGTERM/SIGINT in the binary).
/// The state directory and the spool are opened first: an unusable one stops
/// the agent before it connects.
pub async fn run(
    config: &Config,
    node: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let seqs = open_state(config)?;
    let spool = open_spool(config)?;
    let signer = enroll::load(&config.identity_dir)?.map(|(_, s)| s);
    match &signer {
        Some(s) => {
            info!(identity_dir = %config.identity_dir.display(), node = %s.node, "reports are signed")
        }
        None => {
            info!(identity_dir = %config.identity_dir.display(), "not enrolled, reports are unsigned")
        }
    }
    let publish = PublishConfig {
        signer,
        broker: config.broker.clone(),
        tls: config.tls.clone(),
        network: config.network.clone(),
        node: node.to_owned(),
        interval: config.interval,
        drain_rate: config.spool_drain_rate,
        compact: config.compact.then(meshtable_proto::CompactPolicy::default),
    };
    publish::run(publish, collector(config, node), seqs, spool, shutdown).await?;
    Ok(())
}
