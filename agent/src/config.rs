//! Config: command-line flags over an optional TOML file over defaults,
//! validated as a whole before the agent touches the network.

use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Parser;
use meshtable_proto::{BrokerUrl, Location, TopicError, validate_id};
use serde::Deserialize;

use crate::collect::babeld::BabelSocket;
use crate::collect::mesh::MeshSources;
use crate::spool::WriteBudget;
use crate::state::DEFAULT_STATE_DIR;

/// Default broker.
pub const DEFAULT_MQTT_URL: &str = "mqtt://127.0.0.1:1883";
/// Default network id.
pub const DEFAULT_NETWORK: &str = "default";
/// Default telemetry interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(60);
/// Default queue capacity, in reports.
pub const DEFAULT_QUEUE_CAPACITY: usize = 1000;
/// Shortest interval accepted: 100 ms, for tests that need hundreds of
/// intervals in a short run (routers use the 60 s default).
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Longest interval accepted.
pub const MAX_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// Largest queue accepted, in reports.
pub const MAX_QUEUE_CAPACITY: usize = 1_000_000;
/// The spool directory's name inside the state directory, by default.
pub const DEFAULT_SPOOL_SUBDIR: &str = "spool";
/// Default spool bound, in bytes (1 MiB).
pub const DEFAULT_SPOOL_MAX_BYTES: u64 = 1024 * 1024;
/// Accepted spool bounds, in bytes (4 KiB to 1 GiB).
pub const SPOOL_MAX_BYTES_RANGE: std::ops::RangeInclusive<u64> = 4096..=1024 * 1024 * 1024;
/// Default drain rate after a reconnect, in reports per second.
pub const DEFAULT_SPOOL_DRAIN_RATE: u32 = 5;
/// Highest drain rate accepted, in reports per second.
pub const MAX_SPOOL_DRAIN_RATE: u32 = 1000;

/// Parses a write budget: `<bytes>/h` or `<bytes>/d` (bytes a whole number,
/// optionally with a `k` or `m` suffix for KiB and MiB), e.g. `65536/h` or
/// `4m/d`. `off` or an empty string means no budget.
pub fn parse_write_budget(text: &str) -> Result<Option<WriteBudget>, String> {
    let text = text.trim();
    if text.is_empty() || text == "off" {
        return Ok(None);
    }
    let (amount, per) = text
        .split_once('/')
        .ok_or_else(|| "expected <bytes>/h or <bytes>/d, e.g. 65536/h".to_owned())?;
    let per = match per {
        "h" => Duration::from_secs(3600),
        "d" => Duration::from_secs(24 * 3600),
        _ => return Err(format!("unknown period {per:?}: use h or d")),
    };
    let (digits, unit) = match amount.strip_suffix(['k', 'K']) {
        Some(d) => (d, 1024),
        None => match amount.strip_suffix(['m', 'M']) {
            Some(d) => (d, 1024 * 1024),
            None => (amount, 1),
        },
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(unit))
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("not a positive number of bytes: {amount:?}"))?;
    Ok(Some(WriteBudget { bytes, per }))
}

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The config file is not valid TOML of the expected shape.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message.
        message: String,
    },
    /// The broker URL is not `mqtt://host[:port]`.
    #[error("invalid --mqtt-url {url:?}: {reason}")]
    MqttUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The network id breaks the identifier rules.
    #[error("invalid --network: {0}")]
    Network(TopicError),
    /// The node id breaks the identifier rules.
    #[error("invalid --node-id: {0}")]
    NodeId(TopicError),
    /// The interval is out of range.
    #[error("invalid --interval {0}: use 100ms to 24h")]
    Interval(String),
    /// The queue capacity is out of range.
    #[error("invalid --queue-capacity {0}: use 1 to 1000000")]
    QueueCapacity(usize),
    /// The spool bound is out of range.
    #[error("invalid --spool-max-bytes {0}: use 4096 to 1073741824")]
    SpoolMaxBytes(u64),
    /// The write budget does not parse.
    #[error("invalid --spool-write-budget {value:?}: {reason}")]
    SpoolWriteBudget {
        /// The value given.
        value: String,
        /// What is wrong.
        reason: String,
    },
    /// The drain rate is out of range.
    #[error("invalid --spool-drain-rate {0}: use 1 to 1000 reports per second")]
    SpoolDrainRate(u32),
    /// The location is not a valid WGS 84 position.
    #[error("invalid location: latitude must be within -90..90 and longitude within -180..180")]
    Location,
    /// `mqtts://` in a build without the `tls` feature.
    #[error(
        "invalid --mqtt-url: mqtts:// needs TLS, and this agent was built without TLS; \
         rebuild with --features tls, or use a plain mqtt:// listener"
    )]
    TlsNotBuilt,
    /// `mqtts://` without `--ca-file`.
    #[error(
        "--mqtt-url is mqtts:// and needs --ca-file (ca_file in the config file): \
         the PEM file of the CA that signed the broker's certificate"
    )]
    NoCaFile,
    /// TLS files given for a plain `mqtt://` broker.
    #[error("{0} is set but --mqtt-url is not mqtts://: the TLS files are for mqtts:// only")]
    TlsFilesWithoutTls(&'static str),
    /// Only one of the client certificate and its key.
    #[error("--client-cert-file and --client-key-file go together: give both or neither")]
    ClientCertPair,
}

/// Command-line flags. Every flag but `--config` and `--once` can also be
/// set in the TOML file; a flag wins over the file.
#[derive(Debug, Clone, Default, Parser)]
#[command(
    name = "meshtable-agent",
    version,
    about = "Reports a router's health and traffic to a meshtable controller over MQTT"
)]
pub struct Cli {
    /// TOML config file (see deploy/agent/meshtable-agent.toml)
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Broker URL, mqtt://host[:port] or mqtt://user:password@host[:port] [default: mqtt://127.0.0.1:1883]
    #[arg(long, value_name = "URL")]
    pub mqtt_url: Option<String>,
    /// Network (tenant) id, 1-64 of [a-z0-9_-] [default: default]
    #[arg(long, value_name = "ID")]
    pub network: Option<String>,
    /// Node id, 1-64 of [a-z0-9_-] [default: primary MAC as 12 hex digits]
    #[arg(long, value_name = "ID")]
    pub node_id: Option<String>,
    /// Telemetry interval, e.g. 60s, 5m [default: 60s]
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub interval: Option<Duration>,
    /// Reports kept while the broker is unreachable; the oldest is dropped beyond [default: 1000]
    #[arg(long, value_name = "N")]
    pub queue_capacity: Option<usize>,
    /// Directory of the spool of unacknowledged reports [default: <state-dir>/spool]
    #[arg(long, value_name = "DIR")]
    pub spool_dir: Option<PathBuf>,
    /// Bytes the spool may hold; the oldest report is dropped beyond [default: 1048576]
    #[arg(long, value_name = "BYTES")]
    pub spool_max_bytes: Option<u64>,
    /// Limit on spool writes for a --spool-dir on flash, <bytes>/h or <bytes>/d (e.g. 256k/d); beyond it reports stay in RAM [default: off]
    #[arg(long, value_name = "BYTES/PERIOD")]
    pub spool_write_budget: Option<String>,
    /// Reports per second sent from the spool after a reconnect [default: 5]
    #[arg(long, value_name = "N")]
    pub spool_drain_rate: Option<u32>,
    /// Print one {"hello":...,"telemetry":...} as JSON and exit, without a broker
    #[arg(long)]
    pub once: bool,
    /// Send telemetry as v2 compact reports (about 12 KiB/h instead of 115 for a mesh router); needs a controller of this version or later; --compact=false for older ones [default: true]
    #[arg(long, value_name = "BOOL", num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub compact: Option<bool>,
    /// Root of the proc filesystem [default: /proc]
    #[arg(long, value_name = "DIR")]
    pub proc_root: Option<PathBuf>,
    /// Directory for the telemetry sequence of this boot; keep it on tmpfs, one per agent [default: /tmp/meshtable-agent]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Log filter, e.g. info or meshtable_agent=debug [default: RUST_LOG, else info]
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
    /// babeld's local socket: a unix path (babeld `local-path`) or host:port (`-G`); off to not ask babeld [default: /var/run/babeld.sock]
    #[arg(long, value_name = "SOCKET")]
    pub babeld_socket: Option<String>,
    /// The per-network salt for client ids, written by `enroll`; without it only client counts are reported [default: /etc/meshtable/salt]
    #[arg(long, value_name = "FILE")]
    pub salt_file: Option<PathBuf>,
    /// dnsmasq's DHCP lease file [default: /tmp/dhcp.leases]
    #[arg(long, value_name = "FILE")]
    pub dnsmasq_leases: Option<PathBuf>,
    /// odhcpd's lease (state) file [default: /tmp/hosts/odhcpd]
    #[arg(long, value_name = "FILE")]
    pub odhcpd_leases: Option<PathBuf>,
    /// Directory of this router's identity (key, broker login, salt), written by `enroll`; when it holds one, its network, node id and login are used and every report is signed [default: /etc/meshtable]
    #[arg(long, value_name = "DIR")]
    pub identity_dir: Option<PathBuf>,
    /// PEM file of the CA(s) the broker's certificate must chain to; needed for mqtts:// (an agent built with --features tls)
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate (chain) presented to an mqtts:// broker that requires one; with --client-key-file
    #[arg(long, value_name = "FILE")]
    pub client_cert_file: Option<PathBuf>,
    /// PEM private key of --client-cert-file
    #[arg(long, value_name = "FILE")]
    pub client_key_file: Option<PathBuf>,
    /// A subcommand instead of running: `enroll`.
    #[command(subcommand)]
    pub command: Option<AgentCommand>,
}

/// The agent's subcommands.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum AgentCommand {
    /// Enroll this router with a controller: make its key pair, register the public key with a
    /// one-time token, and keep the network, node id, salt and broker login it gets back.
    Enroll {
        /// The one-time enrollment token (from `meshtable enroll-token create`)
        #[arg(
            long,
            value_name = "TOKEN",
            env = "MESHTABLE_ENROLL_TOKEN",
            hide_env_values = true
        )]
        token: String,
        /// The controller's URL, http://host[:port], or https://host[:port] (an agent built with --features tls)
        #[arg(long, value_name = "URL")]
        controller: String,
        /// For an https:// controller: PEM file of the CA its certificate must chain to [default: the config's ca_file]
        #[arg(long, value_name = "FILE")]
        ca_file: Option<PathBuf>,
        /// The hostname to register [default: this machine's]
        #[arg(long, value_name = "NAME")]
        hostname: Option<String>,
    },
}

/// The TOML file. Keys are the flags' names with `_` for `-`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// See [`Cli::mqtt_url`].
    pub mqtt_url: Option<String>,
    /// See [`Cli::network`].
    pub network: Option<String>,
    /// See [`Cli::node_id`].
    pub node_id: Option<String>,
    /// See [`Cli::interval`].
    #[serde(default, with = "humantime_serde")]
    pub interval: Option<Duration>,
    /// See [`Cli::queue_capacity`].
    pub queue_capacity: Option<usize>,
    /// See [`Cli::spool_dir`].
    pub spool_dir: Option<PathBuf>,
    /// See [`Cli::spool_max_bytes`].
    pub spool_max_bytes: Option<u64>,
    /// See [`Cli::spool_write_budget`].
    pub spool_write_budget: Option<String>,
    /// See [`Cli::spool_drain_rate`].
    pub spool_drain_rate: Option<u32>,
    /// See [`Cli::compact`].
    pub compact: Option<bool>,
    /// See [`Cli::proc_root`].
    pub proc_root: Option<PathBuf>,
    /// See [`Cli::state_dir`].
    pub state_dir: Option<PathBuf>,
    /// See [`Cli::log`].
    pub log: Option<String>,
    /// See [`Cli::babeld_socket`].
    pub babeld_socket: Option<String>,
    /// See [`Cli::salt_file`].
    pub salt_file: Option<PathBuf>,
    /// See [`Cli::dnsmasq_leases`].
    pub dnsmasq_leases: Option<PathBuf>,
    /// See [`Cli::odhcpd_leases`].
    pub odhcpd_leases: Option<PathBuf>,
    /// See [`Cli::identity_dir`].
    pub identity_dir: Option<PathBuf>,
    /// See [`Cli::ca_file`].
    pub ca_file: Option<PathBuf>,
    /// See [`Cli::client_cert_file`].
    pub client_cert_file: Option<PathBuf>,
    /// See [`Cli::client_key_file`].
    pub client_key_file: Option<PathBuf>,
    /// Where the router stands; announced in the hello.
    pub location: Option<Location>,
}

/// Where the broker is.
pub type Broker = BrokerUrl;

/// The PEM files of MQTT over TLS (see `crate::tls`, in the build with the
/// `tls` feature); only their paths here: they are read when the agent
/// starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The CA certificate(s) the broker's certificate must chain to.
    pub ca_file: PathBuf,
    /// The client certificate and key, for a broker that requires one.
    pub client: Option<ClientCertFiles>,
}

/// A client certificate (chain) and its private key, as PEM files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertFiles {
    /// The certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// Its private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// Whether this build speaks MQTT over TLS (the `tls` feature).
pub const TLS_BUILT: bool = cfg!(feature = "tls");

/// The TLS files for `broker`: required (a CA file at least) for
/// `mqtts://`, refused for `mqtt://`.
fn tls_files(
    broker: &Broker,
    ca_file: Option<PathBuf>,
    client_cert_file: Option<PathBuf>,
    client_key_file: Option<PathBuf>,
) -> Result<Option<TlsFiles>, ConfigError> {
    let client = match (client_cert_file, client_key_file) {
        (Some(cert_file), Some(key_file)) => Some(ClientCertFiles {
            cert_file,
            key_file,
        }),
        (None, None) => None,
        _ => return Err(ConfigError::ClientCertPair),
    };
    if !broker.tls {
        return match (&ca_file, &client) {
            (None, None) => Ok(None),
            (Some(_), _) => Err(ConfigError::TlsFilesWithoutTls("--ca-file")),
            (None, Some(_)) => Err(ConfigError::TlsFilesWithoutTls("--client-cert-file")),
        };
    }
    let ca_file = ca_file.ok_or(ConfigError::NoCaFile)?;
    Ok(Some(TlsFiles { ca_file, client }))
}

/// The validated configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// The broker.
    pub broker: Broker,
    /// The TLS files, exactly when the broker is `mqtts://`.
    pub tls: Option<TlsFiles>,
    /// Network id (valid).
    pub network: String,
    /// Node id (valid), or `None` to derive it from the primary MAC.
    pub node_id: Option<String>,
    /// Telemetry interval.
    pub interval: Duration,
    /// Queue capacity, in reports: the spool holds at most this many.
    pub queue_capacity: usize,
    /// The spool directory (see [`crate::spool`]).
    pub spool_dir: PathBuf,
    /// Bytes the spool may hold.
    pub spool_max_bytes: u64,
    /// Write budget of the spool directory, when it is on flash.
    pub spool_write_budget: Option<WriteBudget>,
    /// Reports per second drained from the spool.
    pub spool_drain_rate: u32,
    /// Send telemetry as v2 compact reports.
    pub compact: bool,
    /// Print one report and exit.
    pub once: bool,
    /// Root of the proc filesystem.
    pub proc_root: PathBuf,
    /// Where the telemetry sequence of this boot is kept (see [`crate::state`]);
    /// checked when the agent starts, not here. `--once` does not use it.
    pub state_dir: PathBuf,
    /// Log filter, when set.
    pub log: Option<String>,
    /// babeld's socket, lease files and client-id salt.
    pub mesh: MeshSources,
    /// The identity directory (see [`crate::enroll`]).
    pub identity_dir: PathBuf,
    /// Where the router stands.
    pub location: Option<Location>,
}

/// The mesh collectors' sources: each given path over its default;
/// `babeld_socket = "off"` (or empty) does not ask babeld.
fn mesh_sources(
    babeld: Option<String>,
    salt_file: Option<PathBuf>,
    dnsmasq_leases: Option<PathBuf>,
    odhcpd_leases: Option<PathBuf>,
) -> MeshSources {
    let d = MeshSources::default();
    MeshSources {
        babeld: match babeld.as_deref().map(str::trim) {
            None => d.babeld,
            Some("off" | "") => None,
            Some(s) => Some(BabelSocket::parse(s)),
        },
        salt_file: salt_file.unwrap_or(d.salt_file),
        dnsmasq_leases: dnsmasq_leases.unwrap_or(d.dnsmasq_leases),
        odhcpd_leases: odhcpd_leases.unwrap_or(d.odhcpd_leases),
    }
}

/// Parses `mqtt://[user:password@]host[:port]`, or `mqtts://` in the
/// build with the `tls` feature (see [`BrokerUrl::parse`]); a build
/// without it refuses `mqtts://` with [`ConfigError::TlsNotBuilt`].
pub fn parse_mqtt_url(url: &str) -> Result<Broker, ConfigError> {
    let broker = BrokerUrl::parse(url).map_err(|e| ConfigError::MqttUrl {
        url: e.url,
        reason: e.reason.to_owned(),
    })?;
    if broker.tls && !TLS_BUILT {
        return Err(ConfigError::TlsNotBuilt);
    }
    Ok(broker)
}

/// Reads and parses a TOML config file.
pub fn read_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
        path: path.to_owned(),
        error,
    })?;
    parse_file(&text).map_err(|message| ConfigError::Parse {
        path: path.to_owned(),
        message,
    })
}

/// Parses the text of a TOML config file.
pub fn parse_file(text: &str) -> Result<FileConfig, String> {
    toml::from_str(text).map_err(|e| e.to_string().trim_end().to_owned())
}

impl Config {
    /// Loads the file named by `--config` (if any) and merges the flags over it.
    pub fn load(cli: Cli) -> Result<Config, ConfigError> {
        let file = match &cli.config {
            Some(path) => read_file(path)?,
            None => FileConfig::default(),
        };
        Config::merge(cli, file)
    }

    /// Merges flags over the file over defaults, and validates the result.
    pub fn merge(cli: Cli, file: FileConfig) -> Result<Config, ConfigError> {
        let mqtt_url = cli
            .mqtt_url
            .or(file.mqtt_url)
            .unwrap_or_else(|| DEFAULT_MQTT_URL.to_owned());
        let broker = parse_mqtt_url(&mqtt_url)?;
        let tls = tls_files(
            &broker,
            cli.ca_file.or(file.ca_file),
            cli.client_cert_file.or(file.client_cert_file),
            cli.client_key_file.or(file.client_key_file),
        )?;
        let network = cli
            .network
            .or(file.network)
            .unwrap_or_else(|| DEFAULT_NETWORK.to_owned());
        validate_id(&network).map_err(ConfigError::Network)?;
        let node_id = cli.node_id.or(file.node_id);
        if let Some(node) = &node_id {
            validate_id(node).map_err(ConfigError::NodeId)?;
        }
        let interval = cli.interval.or(file.interval).unwrap_or(DEFAULT_INTERVAL);
        if !(MIN_INTERVAL..=MAX_INTERVAL).contains(&interval) {
            return Err(ConfigError::Interval(
                humantime::format_duration(interval).to_string(),
            ));
        }
        let queue_capacity = cli
            .queue_capacity
            .or(file.queue_capacity)
            .unwrap_or(DEFAULT_QUEUE_CAPACITY);
        if !(1..=MAX_QUEUE_CAPACITY).contains(&queue_capacity) {
            return Err(ConfigError::QueueCapacity(queue_capacity));
        }
        let spool_max_bytes = cli
            .spool_max_bytes
            .or(file.spool_max_bytes)
            .unwrap_or(DEFAULT_SPOOL_MAX_BYTES);
        if !SPOOL_MAX_BYTES_RANGE.contains(&spool_max_bytes) {
            return Err(ConfigError::SpoolMaxBytes(spool_max_bytes));
        }
        let budget = cli.spool_write_budget.or(file.spool_write_budget);
        let spool_write_budget = match &budget {
            Some(value) => {
                parse_write_budget(value).map_err(|reason| ConfigError::SpoolWriteBudget {
                    value: value.clone(),
                    reason,
                })?
            }
            None => None,
        };
        let spool_drain_rate = cli
            .spool_drain_rate
            .or(file.spool_drain_rate)
            .unwrap_or(DEFAULT_SPOOL_DRAIN_RATE);
        if !(1..=MAX_SPOOL_DRAIN_RATE).contains(&spool_drain_rate) {
            return Err(ConfigError::SpoolDrainRate(spool_drain_rate));
        }
        let identity_dir = cli
            .identity_dir
            .or(file.identity_dir)
            .unwrap_or_else(|| crate::enroll::DEFAULT_IDENTITY_DIR.into());
        let state_dir = cli
            .state_dir
            .or(file.state_dir)
            .unwrap_or_else(|| DEFAULT_STATE_DIR.into());
        let spool_dir = cli
            .spool_dir
            .or(file.spool_dir)
            .unwrap_or_else(|| state_dir.join(DEFAULT_SPOOL_SUBDIR));
        if let Some(loc) = &file.location {
            let ok = (-90.0..=90.0).contains(&loc.latitude)
                && (-180.0..=180.0).contains(&loc.longitude)
                && loc.altitude.is_none_or(f64::is_finite);
            if !ok {
                return Err(ConfigError::Location);
            }
        }
        Ok(Config {
            broker,
            tls,
            network,
            node_id,
            interval,
            queue_capacity,
            spool_dir,
            spool_max_bytes,
            spool_write_budget,
            spool_drain_rate,
            compact: cli.compact.or(file.compact).unwrap_or(true),
            once: cli.once,
            proc_root: cli
                .proc_root
                .or(file.proc_root)
                .unwrap_or_else(|| "/proc".into()),
            state_dir,
            log: cli.log.or(file.log),
            mesh: mesh_sources(
                cli.babeld_socket.or(file.babeld_socket),
                cli.salt_file
                    .or(file.salt_file)
                    .or_else(|| Some(identity_dir.join(crate::enroll::SALT_FILE))),
                cli.dnsmasq_leases.or(file.dnsmasq_leases),
                cli.odhcpd_leases.or(file.odhcpd_leases),
            ),
            location: file.location,
            identity_dir,
        })
    }

    /// The interval in milliseconds, as announced in the hello.
    pub fn interval_ms(&self) -> u32 {
        u32::try_from(self.interval.as_millis()).unwrap_or(u32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn broker(host: &str, port: u16) -> Broker {
        Broker {
            host: host.to_owned(),
            port,
            credentials: None,
            tls: false,
        }
    }

    #[test]
    fn mqtt_url_errors_name_the_flag() {
        // The grammar itself is tested in meshtable-proto.
        let e = parse_mqtt_url("mqtts://").unwrap_err().to_string();
        assert!(e.starts_with("invalid --mqtt-url \"mqtts://\": "), "{e}");
        assert_eq!(parse_mqtt_url("mqtt://h:1").unwrap(), broker("h", 1));
    }

    /// Without the `tls` feature, mqtts:// is refused whatever else is
    /// given, with an error that says how to get TLS; the URL (it may hold
    /// a password) is not repeated.
    #[cfg(not(feature = "tls"))]
    #[test]
    fn mqtts_needs_the_tls_build() {
        for cli in [
            Cli {
                mqtt_url: Some("mqtts://u:secret@host:8883".into()),
                ..Cli::default()
            },
            Cli {
                mqtt_url: Some("mqtts://host".into()),
                ca_file: Some("/etc/meshtable/ca.pem".into()),
                ..Cli::default()
            },
        ] {
            let e = Config::merge(cli, FileConfig::default())
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("this agent was built without TLS; rebuild with --features tls"),
                "{e}"
            );
            assert!(!e.contains("secret"), "{e}");
        }
    }

    /// With the `tls` feature, mqtts:// takes a CA file, and a client
    /// certificate with its key (from flags or the file).
    #[cfg(feature = "tls")]
    #[test]
    fn mqtts_takes_the_tls_files() {
        let file = parse_file(
            "mqtt_url = \"mqtts://broker.example\"\nca_file = \"/etc/meshtable/ca.pem\"\n\
             client_cert_file = \"/etc/meshtable/node.crt\"\n\
             client_key_file = \"/etc/meshtable/node-tls.key\"\n",
        )
        .unwrap();
        let c = Config::merge(Cli::default(), file.clone()).unwrap();
        assert!(c.broker.tls);
        assert_eq!(
            (c.broker.host.as_str(), c.broker.port),
            ("broker.example", 8883)
        );
        assert_eq!(
            c.tls,
            Some(TlsFiles {
                ca_file: "/etc/meshtable/ca.pem".into(),
                client: Some(ClientCertFiles {
                    cert_file: "/etc/meshtable/node.crt".into(),
                    key_file: "/etc/meshtable/node-tls.key".into(),
                }),
            })
        );
        let cli =
            Cli::try_parse_from(["meshtable-agent", "--ca-file", "/tmp/other-ca.pem"]).unwrap();
        let c = Config::merge(cli, file).unwrap();
        assert_eq!(c.tls.unwrap().ca_file, PathBuf::from("/tmp/other-ca.pem"));
        let e = Config::merge(
            Cli {
                mqtt_url: Some("mqtts://host".into()),
                ..Cli::default()
            },
            FileConfig::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("needs --ca-file"), "{e}");
    }

    #[test]
    fn flags_over_file_over_defaults() {
        let file = parse_file(
            "mqtt_url = \"mqtt://file:1\"\nnetwork = \"bremen\"\ninterval = \"5m\"\n\
             queue_capacity = 10\nstate_dir = \"/var/run/meshtable-agent\"\n\
             [location]\nlatitude = 53.07\nlongitude = 8.8\n",
        )
        .unwrap();
        assert_eq!(
            file.state_dir,
            Some(PathBuf::from("/var/run/meshtable-agent"))
        );
        let cli = Cli {
            network: Some("leipzig".to_owned()),
            interval: Some(Duration::from_secs(30)),
            ..Cli::default()
        };
        let c = Config::merge(cli, file.clone()).unwrap();
        assert_eq!(c.broker, broker("file", 1));
        assert_eq!(c.network, "leipzig");
        assert_eq!(c.interval, Duration::from_secs(30));
        assert_eq!(c.interval_ms(), 30_000);
        assert_eq!(c.queue_capacity, 10);
        assert_eq!(c.node_id, None);
        assert_eq!(c.location.as_ref().map(|l| l.latitude), Some(53.07));
        assert_eq!(c.state_dir, PathBuf::from("/var/run/meshtable-agent"));
        let flag = Cli {
            state_dir: Some("/run/agent-a".into()),
            ..Cli::default()
        };
        let c = Config::merge(flag, file).unwrap();
        assert_eq!(c.state_dir, PathBuf::from("/run/agent-a"));

        let d = Config::merge(Cli::default(), FileConfig::default()).unwrap();
        assert_eq!(d.broker, broker("127.0.0.1", 1883));
        assert_eq!(
            (d.network.as_str(), d.interval, d.queue_capacity),
            ("default", DEFAULT_INTERVAL, DEFAULT_QUEUE_CAPACITY)
        );
        assert_eq!(d.proc_root, PathBuf::from("/proc"));
        assert_eq!(d.state_dir, PathBuf::from("/tmp/meshtable-agent"));
    }

    /// The example config documents the defaults: every key it sets has the
    /// default value, the state directory's among them.
    #[test]
    fn example_config_shows_the_defaults() {
        let file = parse_file(include_str!("../../deploy/agent/meshtable-agent.toml")).unwrap();
        assert_eq!(file.state_dir, Some(PathBuf::from(DEFAULT_STATE_DIR)));
        assert_eq!(
            Config::merge(Cli::default(), file).unwrap(),
            Config::merge(Cli::default(), FileConfig::default()).unwrap()
        );
    }

    #[test]
    fn refusals() {
        let cases: [(Cli, &str); 7] = [
            (
                Cli {
                    network: Some("Bad Net".into()),
                    ..Cli::default()
                },
                "invalid --network",
            ),
            (
                Cli {
                    node_id: Some("AA:BB".into()),
                    ..Cli::default()
                },
                "invalid --node-id",
            ),
            (
                Cli {
                    interval: Some(Duration::from_millis(50)),
                    ..Cli::default()
                },
                "invalid --interval",
            ),
            (
                Cli {
                    interval: Some(Duration::from_secs(90_000)),
                    ..Cli::default()
                },
                "invalid --interval",
            ),
            (
                Cli {
                    queue_capacity: Some(0),
                    ..Cli::default()
                },
                "invalid --queue-capacity",
            ),
            (
                Cli {
                    ca_file: Some("/etc/ca.pem".into()),
                    ..Cli::default()
                },
                "--ca-file is set but --mqtt-url is not mqtts://",
            ),
            (
                Cli {
                    client_key_file: Some("/etc/key.pem".into()),
                    ..Cli::default()
                },
                "--client-cert-file and --client-key-file go together",
            ),
        ];
        for (cli, want) in cases {
            let e = Config::merge(cli, FileConfig::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
        assert!(
            parse_file("unknown_key = 1\n")
                .unwrap_err()
                .contains("unknown_key")
        );
        assert!(parse_file("interval = \"soon\"\n").is_err());
        let far = parse_file("[location]\nlatitude = 91.0\nlongitude = 0.0\n").unwrap();
        assert!(matches!(
            Config::merge(Cli::default(), far),
            Err(ConfigError::Location)
        ));
    }

    #[test]
    fn write_budgets_as_data() {
        let h = Duration::from_secs(3600);
        let d = Duration::from_secs(86_400);
        let budget = |bytes, per| Ok(Some(WriteBudget { bytes, per }));
        let cases: [(&str, Result<Option<WriteBudget>, ()>); 10] = [
            ("65536/h", budget(65_536, h)),
            ("256k/d", budget(256 * 1024, d)),
            ("4M/d", budget(4 * 1024 * 1024, d)),
            ("off", Ok(None)),
            ("", Ok(None)),
            ("0/h", Err(())),
            ("65536", Err(())),
            ("65536/w", Err(())),
            ("many/h", Err(())),
            ("-5/h", Err(())),
        ];
        for (text, want) in cases {
            assert_eq!(parse_write_budget(text).map_err(|_| ()), want, "{text:?}");
        }
    }

    #[test]
    fn spool_flags() {
        let d = Config::merge(Cli::default(), FileConfig::default()).unwrap();
        assert_eq!(d.spool_dir, PathBuf::from("/tmp/meshtable-agent/spool"));
        assert_eq!(
            (d.spool_max_bytes, d.spool_write_budget, d.spool_drain_rate),
            (1024 * 1024, None, 5)
        );
        // The default follows the state directory; a flag wins over the file.
        let file = parse_file(
            "state_dir = \"/run/a\"\nspool_write_budget = \"1m/d\"\nspool_drain_rate = 2\n",
        )
        .unwrap();
        let c = Config::merge(Cli::default(), file.clone()).unwrap();
        assert_eq!(c.spool_dir, PathBuf::from("/run/a/spool"));
        assert_eq!(c.spool_drain_rate, 2);
        assert_eq!(c.spool_write_budget.unwrap().bytes, 1024 * 1024);
        let cli = Cli::try_parse_from([
            "meshtable-agent",
            "--spool-dir",
            "/overlay/spool",
            "--spool-max-bytes",
            "65536",
            "--spool-drain-rate",
            "20",
            "--spool-write-budget",
            "off",
        ])
        .unwrap();
        let c = Config::merge(cli, file).unwrap();
        assert_eq!(c.spool_dir, PathBuf::from("/overlay/spool"));
        assert_eq!(
            (c.spool_max_bytes, c.spool_write_budget, c.spool_drain_rate),
            (65_536, None, 20)
        );
        let refused: [(Cli, &str); 4] = [
            (
                Cli {
                    spool_max_bytes: Some(100),
                    ..Cli::default()
                },
                "invalid --spool-max-bytes 100",
            ),
            (
                Cli {
                    spool_drain_rate: Some(0),
                    ..Cli::default()
                },
                "invalid --spool-drain-rate 0",
            ),
            (
                Cli {
                    spool_drain_rate: Some(5000),
                    ..Cli::default()
                },
                "invalid --spool-drain-rate 5000",
            ),
            (
                Cli {
                    spool_write_budget: Some("lots".into()),
                    ..Cli::default()
                },
                "invalid --spool-write-budget \"lots\"",
            ),
        ];
        for (cli, want) in refused {
            let e = Config::merge(cli, FileConfig::default())
                .unwrap_err()
                .to_string();
            assert!(e.contains(want), "{e} lacks {want}");
        }
    }

    #[test]
    fn compact_is_the_default_and_can_be_turned_off() {
        // (command-line flags, file setting, expected)
        let cases: [(&[&str], Option<bool>, bool); 6] = [
            (&[], None, true),
            (&["--compact"], None, true),
            (&["--compact=false"], None, false),
            (&["--compact=true"], Some(false), true),
            (&[], Some(false), false),
            (&["--compact=false"], Some(true), false),
        ];
        for (flags, file, want) in cases {
            let mut args = vec!["meshtable-agent"];
            args.extend_from_slice(flags);
            let cli = Cli::try_parse_from(args).unwrap();
            let config = FileConfig {
                compact: file,
                ..FileConfig::default()
            };
            let c = Config::merge(cli, config).unwrap();
            assert_eq!(c.compact, want, "{flags:?} {file:?}");
        }
    }

    #[test]
    fn cli_flags_parse() {
        let cli = Cli::try_parse_from([
            "meshtable-agent",
            "--interval",
            "1m 30s",
            "--queue-capacity",
            "5",
            "--once",
            "--node-id",
            "n1",
            "--state-dir",
            "/run/meshtable",
        ])
        .unwrap();
        assert_eq!(cli.interval, Some(Duration::from_secs(90)));
        assert_eq!(cli.state_dir, Some(PathBuf::from("/run/meshtable")));
        assert_eq!((cli.queue_capacity, cli.once), (Some(5), true));
        assert!(Cli::try_parse_from(["meshtable-agent", "--interval", "often"]).is_err());
    }

    #[test]
    fn mesh_sources_flags_over_file_over_defaults() {
        let d = Config::merge(Cli::default(), FileConfig::default()).unwrap();
        let defaults = MeshSources::default();
        assert_eq!(
            (&d.mesh.dnsmasq_leases, &d.mesh.odhcpd_leases),
            (&defaults.dnsmasq_leases, &defaults.odhcpd_leases)
        );
        assert_eq!(d.mesh.salt_file, d.identity_dir.join("salt"));
        assert_eq!(
            d.mesh.babeld,
            Some(BabelSocket::Unix("/var/run/babeld.sock".into()))
        );
        let file = parse_file(
            "babeld_socket = \"[::1]:33123\"\nsalt_file = \"/etc/s\"\ndnsmasq_leases = \"/tmp/l\"\n",
        )
        .unwrap();
        let c = Config::merge(Cli::default(), file.clone()).unwrap();
        assert_eq!(c.mesh.babeld, Some(BabelSocket::Tcp("[::1]:33123".into())));
        assert_eq!(c.mesh.salt_file, PathBuf::from("/etc/s"));
        assert_eq!(c.mesh.dnsmasq_leases, PathBuf::from("/tmp/l"));
        assert_eq!(c.mesh.odhcpd_leases, PathBuf::from("/tmp/hosts/odhcpd"));
        let cli = Cli::try_parse_from([
            "meshtable-agent",
            "--babeld-socket",
            "off",
            "--odhcpd-leases",
            "/tmp/o",
        ])
        .unwrap();
        let c = Config::merge(cli, file).unwrap();
        assert_eq!(c.mesh.babeld, None);
        assert_eq!(c.mesh.odhcpd_leases, PathBuf::from("/tmp/o"));
        assert_eq!(c.mesh.salt_file, PathBuf::from("/etc/s"));
    }
}
