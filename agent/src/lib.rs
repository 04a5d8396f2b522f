//! meshtable-agent: runs on a community-mesh router, collects its health and
//! traffic counters and publishes them to the meshtable controller over MQTT.
//!
//! The pipeline is visible in the modules:
//!
//! ```text
//! config ─> collect (proc, netlink, system) ─> encode ─> queue ─> publish (MQTT)
//! ```
//!
//! - [`config`]: flags over a TOML file over defaults, validated before any
//!   connection is made.
//! - [`collect`]: `/proc` (uptime, loadavg, stat, meminfo, boot id), rtnetlink
//!   (interfaces, counters, addresses), `uname`, `statvfs`, release files.
//! - [`encode`]: topics, client id and payloads (CBOR from `meshtable-proto`).
//! - [`queue`]: the bounded report queue; a report leaves it only when the
//!   broker acknowledges it, and what it drops is counted.
//! - [`publish`]: the MQTT driver (rumqttc, QoS 1, persistent session, last
//!   will, reconnect backoff).
//!
//! The agent links no server code and no TLS stack (`tests/deps.rs`).

pub mod backoff;
pub mod collect;
pub mod config;
pub mod encode;
pub mod publish;
pub mod queue;

use std::future::Future;

pub use config::{Cli, Config};

use collect::{CollectError, Collector};
use config::ConfigError;
use publish::{PublishConfig, PublishError};

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
    c
}

/// `--once`: one hello and one telemetry report (`seq` 0) as a line of JSON.
pub fn once(config: &Config, node: &str) -> Result<String, AgentError> {
    let c = collector(config, node);
    let hello = c.hello()?;
    let telemetry = c.telemetry(0, 0)?;
    Ok(encode::once_json(&hello, &telemetry))
}

/// Runs the agent until `shutdown` completes (SIGTERM/SIGINT in the binary).
pub async fn run(
    config: &Config,
    node: &str,
    shutdown: impl Future<Output = ()>,
) -> Result<(), AgentError> {
    let publish = PublishConfig {
        broker: config.broker.clone(),
        network: config.network.clone(),
        node: node.to_owned(),
        interval: config.interval,
        queue_capacity: config.queue_capacity,
    };
    publish::run(publish, collector(config, node), shutdown).await?;
    Ok(())
}
