//! Configuration: one [`Config`] from flags, environment and a TOML file.
//!
//! Every setting comes from the first of these that has it: a command-line
//! flag (`--listen`), an environment variable (`MESHTABLE_LISTEN`), a key of
//! the TOML file named by `--config` / `MESHTABLE_CONFIG` (`listen = "..."`),
//! and the built-in default. Each source is parsed into a [`Layer`] of
//! optional values; [`Layer::or`] stacks them and [`Config::resolve`] checks
//! the result. All of this happens before any port is bound, so a bad setting
//! is reported before anything starts.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use meshtable_store::liveness::FlapPolicy;
use serde::Deserialize;

/// Default HTTP listen address.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default listen address of the embedded MQTT broker.
pub const DEFAULT_MQTT_LISTEN: &str = "127.0.0.1:1883";
/// Default MQTT client id of the controller's ingest connection.
pub const DEFAULT_CLIENT_ID: &str = "meshtable-controller";
/// Default shared-subscription group on external brokers.
pub const DEFAULT_SHARE_GROUP: &str = "meshtable";
/// Default data directory.
pub const DEFAULT_DATA_DIR: &str = "./meshtable-data";
/// Default number of missed report intervals before a node counts as offline.
pub const DEFAULT_OFFLINE_AFTER: u32 = 3;

/// Default `--mqtt-buffer`, in MiB.
pub const DEFAULT_MQTT_BUFFER_MIB: u32 = 64;

/// Largest `--mqtt-buffer`, in MiB: rumqttd holds it all in memory.
pub const MAX_MQTT_BUFFER_MIB: u32 = 16 * 1024;
/// Default period of the liveness sweep.
pub const DEFAULT_SWEEP_INTERVAL: Duration = Duration::from_secs(5);
/// Default period of the alert evaluation. Rules are stated in minutes and
/// reports come every minute; each evaluation reads the whole network (its
/// graph, latest samples, uplink intervals), so it runs less often than the
/// liveness sweep.
pub const DEFAULT_ALERT_INTERVAL: Duration = Duration::from_secs(30);
/// Default raw sample retention (history).
pub const DEFAULT_RAW_RETENTION: Duration = Duration::from_secs(14 * 86_400);
/// Default rollup retention (history).
pub const DEFAULT_ROLLUP_RETENTION: Duration = Duration::from_secs(400 * 86_400);
/// Default period of the history job (rollup reconcile and retention).
pub const DEFAULT_HISTORY_INTERVAL: Duration = Duration::from_secs(60);
/// Default tolerance between a live report's clock and its reception time.
pub const DEFAULT_CLOCK_MAX_SKEW: Duration = Duration::from_secs(300);
/// Default log filter when neither `--log` nor `RUST_LOG` is set.
pub const DEFAULT_LOG: &str = "info";
/// Default report interval of simulated routers.
pub const DEFAULT_SIM_INTERVAL: Duration = meshtable_sim::DEFAULT_INTERVAL;
/// Default churn of the simulated fleet: the probability, per online router
/// and interval, that it goes down (for a while).
pub const DEFAULT_SIM_CHURN: f64 = meshtable_sim::DEFAULT_CHURN;
/// Default seed of the simulator's random choices.
pub const DEFAULT_SIM_SEED: u64 = 1;
/// Prefix of every environment variable the controller reads.
pub const ENV_PREFIX: &str = "MESHTABLE_";

/// Why the configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// An environment variable has a value that does not parse.
    #[error("invalid value {value:?} in environment variable {var}: {reason}")]
    Env {
        /// The variable.
        var: String,
        /// Its value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The configuration file could not be read.
    #[error("cannot read config file {path}: {source}")]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The configuration file is not valid TOML of the expected shape.
    #[error("invalid config file {path}: {reason}")]
    ParseFile {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        reason: String,
    },
    /// A setting has a value that parses but is not acceptable.
    #[error("invalid {flag} {value:?}: {reason}")]
    Invalid {
        /// The flag naming the setting (its environment variable and file key
        /// follow from it).
        flag: &'static str,
        /// The value.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// Which fleet snapshot the demo simulates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum SimNetwork {
    /// The Freifunk Leipzig snapshot (279 nodes).
    Leipzig,
    /// The Freifunk Bremen snapshot (891 nodes).
    Bremen,
}

impl SimNetwork {
    /// The network id the simulated routers report under.
    pub fn as_str(self) -> &'static str {
        match self {
            SimNetwork::Leipzig => "leipzig",
            SimNetwork::Bremen => "bremen",
        }
    }
}

impl fmt::Display for SimNetwork {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for SimNetwork {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "leipzig" => Ok(SimNetwork::Leipzig),
            "bremen" => Ok(SimNetwork::Bremen),
            other => Err(format!("unknown network {other:?}: use leipzig or bremen")),
        }
    }
}

/// The command line of the `meshtable` binary.
#[derive(Debug, Parser)]
#[command(
    name = "meshtable",
    version,
    about = "meshtable controller: monitors the routers of community mesh networks",
    after_help = "Every flag can also be set with the environment variable MESHTABLE_<FLAG> \
                  (MESHTABLE_MQTT_URL for --mqtt-url) or as a key of the TOML file given with \
                  --config (mqtt_url = \"...\"); flags win over the environment, which wins over \
                  the file."
)]
pub struct Cli {
    /// What to run.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the controller: ingest, liveness, API, web UI and metrics.
    Serve(ServeArgs),
    /// Run the controller with its embedded broker, SQLite in a fresh temporary
    /// directory (unless --data-dir or --database-url is given) and a simulated
    /// fleet of routers; busy default ports are replaced by free ones.
    Demo(DemoArgs),
    /// Accounts and roles: `user add NAME`, `user grant USER NETWORK ROLE`.
    User(crate::auth::cli::UserArgs),
    /// API tokens for scripts: `token create --user NAME`, `token revoke ID`.
    Token(crate::auth::cli::TokenArgs),
    /// Networks (tenants): `network add <id> [--accept-unsigned]`.
    #[command(subcommand)]
    Network(crate::trust_cli::NetworkCommand),
    /// Enrollment tokens for routers: `enroll-token create --network N`.
    #[command(subcommand)]
    EnrollToken(crate::trust_cli::EnrollTokenCommand),
    /// Enrolled nodes: `node revoke --network N <node>`.
    #[command(subcommand)]
    Node(crate::trust_cli::NodeCommand),
    /// Mosquitto files from the registry: `mosquitto export --passwd FILE --acl FILE`.
    #[command(subcommand)]
    Mosquitto(crate::trust_cli::MosquittoCommand),
}

/// Flags of `meshtable serve` (and of `meshtable demo`).
#[derive(Debug, Clone, Default, Args)]
pub struct ServeArgs {
    /// TOML configuration file (env MESHTABLE_CONFIG).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// HTTP listen address for the API, web UI and /metrics [default: 127.0.0.1:8080].
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<SocketAddr>,
    /// Listen address of the embedded MQTT broker, used when --mqtt-url is not given
    /// [default: 127.0.0.1:1883].
    #[arg(long, value_name = "ADDR")]
    pub mqtt_listen: Option<SocketAddr>,
    /// External MQTT broker, mqtt://host:port or mqtt://user:password@host:port; no embedded
    /// broker is started.
    #[arg(long, value_name = "URL")]
    pub mqtt_url: Option<String>,
    /// MQTT client id of the ingest connection [default: meshtable-controller].
    #[arg(long, value_name = "ID")]
    pub mqtt_client_id: Option<String>,
    /// Shared-subscription group on an external broker; empty for a plain subscription
    /// [default: meshtable].
    #[arg(long, value_name = "GROUP")]
    pub mqtt_share_group: Option<String>,
    /// Database: sqlite://PATH or postgres://... [default: sqlite://DATA_DIR/meshtable.db].
    #[arg(long, value_name = "URL")]
    pub database_url: Option<String>,
    /// Directory for the SQLite database [default: ./meshtable-data].
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Missed report intervals after which a node counts as offline [default: 3].
    #[arg(long, value_name = "N")]
    pub offline_after: Option<u32>,
    /// How often the liveness sweep runs, e.g. 5s or 1m [default: 5s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub sweep_interval: Option<Duration>,
    /// How often alert rules are evaluated, e.g. 30s or 1m [default: 30s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub alert_interval: Option<Duration>,
    /// Status changes within --flap-window that make a node flapping [default: 4].
    #[arg(long, value_name = "N")]
    pub flap_transitions: Option<u32>,
    /// The window status changes are counted in for flapping [default: 30m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub flap_window: Option<Duration>,
    /// How long a flapping node must keep its status to be stable again [default: 30m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub flap_quiet: Option<Duration>,
    /// Log filter in RUST_LOG syntax, e.g. info or meshtable=debug [default: RUST_LOG, else info].
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
    /// Let clients without a login use the embedded broker (agents that are not enrolled, in
    /// networks that accept unsigned reports); otherwise only enrolled nodes and the controller
    /// may connect [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub mqtt_allow_anonymous: Option<bool>,
    /// Memory the embedded broker keeps for messages ingest has not read yet, in MiB; when
    /// ingest falls further behind, the broker drops the oldest (counted in
    /// meshtable_broker_messages_lost_total) [default: 64].
    #[arg(long, value_name = "MIB")]
    pub mqtt_buffer: Option<u32>,
    /// File holding a bearer token that /metrics then requires (`Authorization: Bearer ...`);
    /// without it /metrics answers loopback clients only.
    #[arg(long, value_name = "FILE")]
    pub metrics_token_file: Option<PathBuf>,
    /// CA certificate (PEM) the external broker's certificate must chain to; needed with
    /// --mqtt-url mqtts://.
    #[arg(long, value_name = "FILE")]
    pub mqtt_ca: Option<PathBuf>,
    /// Serve HTTPS: PEM certificate chain, leaf first (with --tls-key).
    #[arg(long, value_name = "FILE")]
    pub tls_cert: Option<PathBuf>,
    /// Serve HTTPS: PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE")]
    pub tls_key: Option<PathBuf>,
    /// Export per-node series on /metrics (meshtable_node_*) [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub metrics_per_node: Option<bool>,
    /// At most this many per-node series on /metrics; nodes beyond are left out and
    /// counted [default: 10000].
    #[arg(long, value_name = "N")]
    pub metrics_max_series: Option<usize>,
    /// How long raw samples are kept, e.g. 14d [default: 14d].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub raw_retention: Option<Duration>,
    /// How long 5-minute and hourly rollups are kept [default: 400d].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub rollup_retention: Option<Duration>,
    /// How often rollups are brought up to date and retention runs [default: 1m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub history_interval: Option<Duration>,
    /// A live report whose clock is further than this from its reception time is flagged
    /// and placed by its boot's anchor [default: 5m].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub clock_max_skew: Option<Duration>,
    /// With Mosquitto: keep meshtable.passwd and meshtable.acl in this directory equal to the
    /// node registry, rewritten at start and on every enrollment and revocation (needs
    /// --mqtt-url with the controller's user and password; see deploy/mosquitto).
    #[arg(long, value_name = "DIR")]
    pub mosquitto_export_dir: Option<PathBuf>,
    /// Mosquitto's pid_file: it gets SIGHUP after every rewrite, to read the files again.
    #[arg(long, value_name = "FILE")]
    pub mosquitto_pid_file: Option<PathBuf>,
    /// Let alert webhooks go to internal addresses: loopback, private, link-local,
    /// unique-local, unspecified, multicast (refused otherwise, when saved and when
    /// delivered) [default: false].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub alert_webhook_allow_private: Option<bool>,
}

/// Flags of `meshtable demo`: those of `serve` plus the simulator's.
#[derive(Debug, Clone, Default, Args)]
pub struct DemoArgs {
    /// The controller's flags.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// Which community mesh to simulate [default: leipzig].
    #[arg(long, value_name = "NETWORK")]
    pub sim_network: Option<SimNetwork>,
    /// Report interval of the simulated routers [default: 10s].
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub sim_interval: Option<Duration>,
    /// Churn: probability, per online router and interval, that it goes down for a while,
    /// 0 to 1 [default: 0.002].
    #[arg(long, value_name = "PROBABILITY")]
    pub sim_churn: Option<f64>,
    /// Seed of the simulator's random choices [default: 1].
    #[arg(long, value_name = "SEED")]
    pub sim_seed: Option<u64>,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

/// One source of settings: every field is optional, `None` meaning "this
/// source does not say". Also the shape of the TOML file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// `--listen`.
    pub listen: Option<SocketAddr>,
    /// `--mqtt-listen`.
    pub mqtt_listen: Option<SocketAddr>,
    /// `--mqtt-url`; empty means "no external broker".
    pub mqtt_url: Option<String>,
    /// `--mqtt-client-id`.
    pub mqtt_client_id: Option<String>,
    /// `--mqtt-share-group`.
    pub mqtt_share_group: Option<String>,
    /// `--database-url`.
    pub database_url: Option<String>,
    /// `--data-dir`.
    pub data_dir: Option<PathBuf>,
    /// `--offline-after`.
    pub offline_after: Option<u32>,
    /// `--sweep-interval`.
    #[serde(default, with = "humantime_serde")]
    pub sweep_interval: Option<Duration>,
    /// `--alert-interval`.
    #[serde(default, with = "humantime_serde")]
    pub alert_interval: Option<Duration>,
    /// `--flap-transitions`.
    pub flap_transitions: Option<u32>,
    /// `--flap-window`.
    #[serde(default, with = "humantime_serde")]
    pub flap_window: Option<Duration>,
    /// `--flap-quiet`.
    #[serde(default, with = "humantime_serde")]
    pub flap_quiet: Option<Duration>,
    /// `--log`.
    pub log: Option<String>,
    /// `--mqtt-allow-anonymous`.
    pub mqtt_allow_anonymous: Option<bool>,
    /// `--mqtt-buffer`.
    pub mqtt_buffer: Option<u32>,
    /// `--metrics-token-file`.
    pub metrics_token_file: Option<PathBuf>,
    /// `--mqtt-ca`.
    pub mqtt_ca: Option<PathBuf>,
    /// `--tls-cert`.
    pub tls_cert: Option<PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<PathBuf>,
    /// `--metrics-per-node`.
    pub metrics_per_node: Option<bool>,
    /// `--metrics-max-series`.
    pub metrics_max_series: Option<usize>,
    /// `--sim-network` (demo).
    pub sim_network: Option<SimNetwork>,
    /// `--sim-interval` (demo).
    #[serde(default, with = "humantime_serde")]
    pub sim_interval: Option<Duration>,
    /// `--sim-churn` (demo).
    pub sim_churn: Option<f64>,
    /// `--sim-seed` (demo).
    pub sim_seed: Option<u64>,
    /// `--raw-retention`.
    #[serde(default, with = "humantime_serde")]
    pub raw_retention: Option<Duration>,
    /// `--rollup-retention`.
    #[serde(default, with = "humantime_serde")]
    pub rollup_retention: Option<Duration>,
    /// `--history-interval`.
    #[serde(default, with = "humantime_serde")]
    pub history_interval: Option<Duration>,
    /// `--clock-max-skew`.
    #[serde(default, with = "humantime_serde")]
    pub clock_max_skew: Option<Duration>,
    /// `--mosquitto-export-dir`.
    pub mosquitto_export_dir: Option<PathBuf>,
    /// `--mosquitto-pid-file`.
    pub mosquitto_pid_file: Option<PathBuf>,
    /// `--alert-webhook-allow-private`.
    pub alert_webhook_allow_private: Option<bool>,
}

macro_rules! or_fields {
    ($a:ident, $b:ident, $($f:ident),*) => {
        Layer { $($f: $a.$f.or($b.$f)),* }
    };
}

impl Layer {
    /// Field by field, this layer's value if it has one, else `lower`'s.
    pub fn or(self, lower: Layer) -> Layer {
        or_fields!(
            self,
            lower,
            listen,
            mqtt_listen,
            mqtt_url,
            mqtt_client_id,
            mqtt_share_group,
            database_url,
            data_dir,
            offline_after,
            sweep_interval,
            alert_interval,
            flap_transitions,
            flap_window,
            flap_quiet,
            log,
            mqtt_allow_anonymous,
            mqtt_buffer,
            metrics_token_file,
            mqtt_ca,
            tls_cert,
            tls_key,
            metrics_per_node,
            metrics_max_series,
            sim_network,
            sim_interval,
            sim_churn,
            sim_seed,
            raw_retention,
            rollup_retention,
            history_interval,
            clock_max_skew,
            mosquitto_export_dir,
            mosquitto_pid_file,
            alert_webhook_allow_private
        )
    }

    /// The layer of the command-line flags of `serve`.
    pub fn from_serve_args(args: &ServeArgs) -> Layer {
        Layer {
            listen: args.listen,
            mqtt_listen: args.mqtt_listen,
            mqtt_url: args.mqtt_url.clone(),
            mqtt_client_id: args.mqtt_client_id.clone(),
            mqtt_share_group: args.mqtt_share_group.clone(),
            database_url: args.database_url.clone(),
            data_dir: args.data_dir.clone(),
            offline_after: args.offline_after,
            sweep_interval: args.sweep_interval,
            alert_interval: args.alert_interval,
            flap_transitions: args.flap_transitions,
            flap_window: args.flap_window,
            flap_quiet: args.flap_quiet,
            log: args.log.clone(),
            mqtt_allow_anonymous: args.mqtt_allow_anonymous,
            mqtt_buffer: args.mqtt_buffer,
            metrics_token_file: args.metrics_token_file.clone(),
            mqtt_ca: args.mqtt_ca.clone(),
            tls_cert: args.tls_cert.clone(),
            tls_key: args.tls_key.clone(),
            metrics_per_node: args.metrics_per_node,
            metrics_max_series: args.metrics_max_series,
            raw_retention: args.raw_retention,
            rollup_retention: args.rollup_retention,
            history_interval: args.history_interval,
            clock_max_skew: args.clock_max_skew,
            mosquitto_export_dir: args.mosquitto_export_dir.clone(),
            mosquitto_pid_file: args.mosquitto_pid_file.clone(),
            alert_webhook_allow_private: args.alert_webhook_allow_private,
            ..Layer::default()
        }
    }

    /// The layer of the command-line flags of `demo`.
    pub fn from_demo_args(args: &DemoArgs) -> Layer {
        Layer {
            sim_network: args.sim_network,
            sim_interval: args.sim_interval,
            sim_churn: args.sim_churn,
            sim_seed: args.sim_seed,
            ..Layer::from_serve_args(&args.serve)
        }
    }

    /// The layer of the `MESHTABLE_*` environment variables, read through
    /// `lookup` (`std::env::var` in the binary, a map in tests).
    pub fn from_env(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Layer, ConfigError> {
        fn var<T>(
            lookup: &dyn Fn(&str) -> Option<String>,
            name: &str,
            parse: impl Fn(&str) -> Result<T, String>,
        ) -> Result<Option<T>, ConfigError> {
            let var = format!("{ENV_PREFIX}{name}");
            match lookup(&var) {
                None => Ok(None),
                Some(value) => match parse(&value) {
                    Ok(v) => Ok(Some(v)),
                    Err(reason) => Err(ConfigError::Env { var, value, reason }),
                },
            }
        }
        fn parsed<T: FromStr>(s: &str) -> Result<T, String>
        where
            T::Err: fmt::Display,
        {
            s.trim().parse::<T>().map_err(|e| e.to_string())
        }
        fn string(s: &str) -> Result<String, String> {
            Ok(s.to_owned())
        }
        Ok(Layer {
            listen: var(lookup, "LISTEN", parsed)?,
            mqtt_listen: var(lookup, "MQTT_LISTEN", parsed)?,
            mqtt_url: var(lookup, "MQTT_URL", string)?,
            mqtt_client_id: var(lookup, "MQTT_CLIENT_ID", string)?,
            mqtt_share_group: var(lookup, "MQTT_SHARE_GROUP", string)?,
            database_url: var(lookup, "DATABASE_URL", string)?,
            data_dir: var(lookup, "DATA_DIR", |s| Ok(PathBuf::from(s)))?,
            offline_after: var(lookup, "OFFLINE_AFTER", parsed)?,
            sweep_interval: var(lookup, "SWEEP_INTERVAL", parse_duration)?,
            alert_interval: var(lookup, "ALERT_INTERVAL", parse_duration)?,
            flap_transitions: var(lookup, "FLAP_TRANSITIONS", parsed)?,
            flap_window: var(lookup, "FLAP_WINDOW", parse_duration)?,
            flap_quiet: var(lookup, "FLAP_QUIET", parse_duration)?,
            log: var(lookup, "LOG", string)?,
            mqtt_allow_anonymous: var(lookup, "MQTT_ALLOW_ANONYMOUS", parsed)?,
            mqtt_buffer: var(lookup, "MQTT_BUFFER", parsed)?,
            metrics_token_file: var(lookup, "METRICS_TOKEN_FILE", |s| Ok(PathBuf::from(s)))?,
            mqtt_ca: var(lookup, "MQTT_CA", |s| Ok(PathBuf::from(s)))?,
            tls_cert: var(lookup, "TLS_CERT", |s| Ok(PathBuf::from(s)))?,
            tls_key: var(lookup, "TLS_KEY", |s| Ok(PathBuf::from(s)))?,
            metrics_per_node: var(lookup, "METRICS_PER_NODE", parsed)?,
            metrics_max_series: var(lookup, "METRICS_MAX_SERIES", parsed)?,
            sim_network: var(lookup, "SIM_NETWORK", parsed)?,
            sim_interval: var(lookup, "SIM_INTERVAL", parse_duration)?,
            sim_churn: var(lookup, "SIM_CHURN", parsed)?,
            sim_seed: var(lookup, "SIM_SEED", parsed)?,
            raw_retention: var(lookup, "RAW_RETENTION", parse_duration)?,
            rollup_retention: var(lookup, "ROLLUP_RETENTION", parse_duration)?,
            history_interval: var(lookup, "HISTORY_INTERVAL", parse_duration)?,
            clock_max_skew: var(lookup, "CLOCK_MAX_SKEW", parse_duration)?,
            mosquitto_export_dir: var(lookup, "MOSQUITTO_EXPORT_DIR", |s| Ok(PathBuf::from(s)))?,
            mosquitto_pid_file: var(lookup, "MOSQUITTO_PID_FILE", |s| Ok(PathBuf::from(s)))?,
            alert_webhook_allow_private: var(lookup, "ALERT_WEBHOOK_ALLOW_PRIVATE", parsed)?,
        })
    }

    /// The layer of a TOML document (the contents of `--config FILE`).
    pub fn from_toml(text: &str, path: &Path) -> Result<Layer, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::ParseFile {
            path: path.to_owned(),
            reason: e.to_string().trim_end().to_owned(),
        })
    }

    /// Reads and parses the TOML file at `path`.
    pub fn from_file(path: &Path) -> Result<Layer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::ReadFile {
            path: path.to_owned(),
            source,
        })?;
        Layer::from_toml(&text, path)
    }
}

/// Where the controller's ingest connection gets its messages from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Broker {
    /// The embedded rumqttd broker, listening on this address.
    Embedded {
        /// `--mqtt-listen`.
        listen: SocketAddr,
    },
    /// An external broker (Mosquitto, EMQX...).
    External {
        /// Host name or address.
        host: String,
        /// TCP port.
        port: u16,
        /// User name and password from the URL, if any.
        credentials: Option<(String, String)>,
    },
}

impl Broker {
    /// Parses and checks an external broker's URL: `mqtt://` or `tcp://`
    /// (or `mqtts://`, `ssl://` for TLS, see [`Broker::url_is_tls`]), a
    /// host, an optional port (1883, 8883 with TLS), optional credentials,
    /// nothing else.
    pub fn parse_url(raw: &str) -> Result<Broker, String> {
        let url = url::Url::parse(raw).map_err(|e| e.to_string())?;
        let default_port = match url.scheme() {
            "mqtt" | "tcp" => 1883,
            "mqtts" | "ssl" => 8883,
            other => {
                return Err(format!(
                    "unsupported scheme {other:?}: use mqtt://host:port"
                ));
            }
        };
        let host = match url.host() {
            Some(url::Host::Ipv6(a)) => a.to_string(),
            Some(h) => h.to_string(),
            None => return Err("no host: use mqtt://host:port".to_owned()),
        };
        if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some() {
            return Err("no path, query or fragment allowed: use mqtt://host:port".to_owned());
        }
        let credentials = match url.username() {
            "" => None,
            user => Some((
                decode_userinfo(user),
                decode_userinfo(url.password().unwrap_or_default()),
            )),
        };
        Ok(Broker::External {
            host,
            port: url.port().unwrap_or(default_port),
            credentials,
        })
    }

    /// Whether an external broker's URL asks for TLS (`mqtts://`, `ssl://`).
    pub fn url_is_tls(raw: &str) -> bool {
        let scheme = raw.trim().split_once("://").map(|(s, _)| s);
        matches!(scheme, Some("mqtts" | "ssl"))
    }

    /// `mqtt://host:port`, without credentials: for logs and the ready line.
    pub fn display_url(&self) -> String {
        match self {
            Broker::Embedded { listen } => format!("mqtt://{listen}"),
            Broker::External { host, port, .. } if host.contains(':') => {
                format!("mqtt://[{host}]:{port}")
            }
            Broker::External { host, port, .. } => format!("mqtt://{host}:{port}"),
        }
    }
}

fn decode_userinfo(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The flapping settings of a layer, defaults filled in and checked.
fn flap_policy(layer: &Layer) -> Result<FlapPolicy, ConfigError> {
    let d = FlapPolicy::default();
    let ms = |v: Duration| i64::try_from(v.as_millis()).unwrap_or(i64::MAX);
    let fmt = |v: Duration| humantime::format_duration(v).to_string();
    let transitions = layer.flap_transitions.unwrap_or(d.transitions);
    if transitions < 2 {
        return Err(invalid(
            "--flap-transitions",
            transitions,
            "must be at least 2",
        ));
    }
    let window = layer.flap_window.map_or(d.window_ms, ms);
    if let Some(w) = layer.flap_window
        && w < Duration::from_secs(1)
    {
        return Err(invalid("--flap-window", fmt(w), "must be at least 1s"));
    }
    let quiet = layer.flap_quiet.map_or(d.quiet_ms, ms);
    if let Some(q) = layer.flap_quiet
        && q < Duration::from_secs(1)
    {
        return Err(invalid("--flap-quiet", fmt(q), "must be at least 1s"));
    }
    Ok(FlapPolicy {
        transitions,
        window_ms: window,
        quiet_ms: quiet,
    })
}

/// The controller's settings, complete and checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// HTTP listen address.
    pub listen: SocketAddr,
    /// The broker the ingest connection uses.
    pub broker: Broker,
    /// MQTT client id of the ingest connection.
    pub mqtt_client_id: String,
    /// Shared-subscription group on external brokers; empty for a plain subscription.
    pub mqtt_share_group: String,
    /// Database URL.
    pub database_url: String,
    /// Data directory.
    pub data_dir: PathBuf,
    /// Missed report intervals after which a node counts as offline.
    pub offline_after: u32,
    /// Period of the liveness sweep.
    pub sweep_interval: Duration,
    /// Period of the alert evaluation.
    pub alert_interval: Duration,
    /// When a node counts as flapping, and when it is stable again.
    pub flap: FlapPolicy,
    /// Log filter (tracing-subscriber `EnvFilter` syntax).
    pub log: String,
    /// The embedded broker lets clients without a login connect.
    pub mqtt_allow_anonymous: bool,
    /// The embedded broker's memory for messages ingest has not read yet,
    /// in MiB (see [`crate::broker::broker_config_with_auth`]).
    pub mqtt_buffer_mib: u32,
    /// `/metrics` requires the bearer token in this file (read at start).
    pub metrics_token_file: Option<PathBuf>,
    /// HTTPS: the certificate chain and key files (read at start); plain
    /// HTTP without.
    pub tls: Option<TlsFiles>,
    /// MQTT over TLS to the external broker (`mqtts://`), trusting the CA
    /// certificates in this file (read at start).
    pub mqtt_ca: Option<PathBuf>,
    /// Per-node series on `/metrics` and their cap.
    pub metrics_per_node: crate::fleet_metrics::PerNode,
    /// History: retention, the history job's period, clock tolerance.
    pub history: HistoryConfig,
    /// Mosquitto's files kept equal to the registry, if asked.
    pub mosquitto: Option<crate::mosquitto::ExportConfig>,
    /// Alert webhooks may go to internal addresses (see
    /// [`crate::alerts::target`]).
    pub alert_webhook_allow_private: bool,
}

/// The history settings of [`Config`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistoryConfig {
    /// How long raw samples are kept.
    pub raw_retention: Duration,
    /// How long rollups are kept.
    pub rollup_retention: Duration,
    /// Period of the history job.
    pub interval: Duration,
    /// Tolerance between a live report's clock and its reception time.
    pub clock_max_skew: Duration,
}

impl Default for HistoryConfig {
    fn default() -> Self {
        HistoryConfig {
            raw_retention: DEFAULT_RAW_RETENTION,
            rollup_retention: DEFAULT_ROLLUP_RETENTION,
            interval: DEFAULT_HISTORY_INTERVAL,
            clock_max_skew: DEFAULT_CLOCK_MAX_SKEW,
        }
    }
}

impl HistoryConfig {
    fn resolve(layer: &Layer) -> Result<HistoryConfig, ConfigError> {
        let d = HistoryConfig::default();
        let c = HistoryConfig {
            raw_retention: layer.raw_retention.unwrap_or(d.raw_retention),
            rollup_retention: layer.rollup_retention.unwrap_or(d.rollup_retention),
            interval: layer.history_interval.unwrap_or(d.interval),
            clock_max_skew: layer.clock_max_skew.unwrap_or(d.clock_max_skew),
        };
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        if c.raw_retention < Duration::from_secs(3600) {
            return Err(invalid(
                "--raw-retention",
                fmt(c.raw_retention),
                "must be at least 1h",
            ));
        }
        if c.rollup_retention < c.raw_retention {
            return Err(invalid(
                "--rollup-retention",
                fmt(c.rollup_retention),
                "must be at least --raw-retention",
            ));
        }
        if c.interval < Duration::from_millis(10) || c.interval > Duration::from_secs(3600) {
            return Err(invalid(
                "--history-interval",
                fmt(c.interval),
                "must be between 10ms and 1h",
            ));
        }
        if c.clock_max_skew < Duration::from_secs(1) {
            return Err(invalid(
                "--clock-max-skew",
                fmt(c.clock_max_skew),
                "must be at least 1s",
            ));
        }
        Ok(c)
    }
}

/// `--mqtt-ca`: given exactly when `--mqtt-url` is `mqtts://`.
fn mqtt_ca(layer: &Layer) -> Result<Option<PathBuf>, ConfigError> {
    let url = layer.mqtt_url.as_deref().map(str::trim).unwrap_or_default();
    let tls = Broker::url_is_tls(url);
    match &layer.mqtt_ca {
        Some(ca) if !tls => Err(invalid(
            "--mqtt-ca",
            ca.display(),
            "only for an external broker over TLS: --mqtt-url mqtts://host:port",
        )),
        None if tls => Err(invalid(
            "--mqtt-url",
            url,
            "mqtts:// needs --mqtt-ca FILE, the CA the broker's certificate chains to",
        )),
        ca => Ok(ca.clone()),
    }
}

/// `--mosquitto-export-dir` and `--mosquitto-pid-file`: the export needs
/// an external broker and the controller's login at it (its line in the
/// password file).
fn mosquitto_export(
    layer: &Layer,
    broker: &Broker,
) -> Result<Option<crate::mosquitto::ExportConfig>, ConfigError> {
    let Some(dir) = &layer.mosquitto_export_dir else {
        return match &layer.mosquitto_pid_file {
            Some(p) => Err(invalid(
                "--mosquitto-pid-file",
                p.display(),
                "give --mosquitto-export-dir with it",
            )),
            None => Ok(None),
        };
    };
    if dir.as_os_str().is_empty() {
        return Err(invalid("--mosquitto-export-dir", "", "must not be empty"));
    }
    match broker {
        Broker::External {
            credentials: Some((user, _)),
            ..
        } => {
            crate::mosquitto::check_user(user)
                .map_err(|e| invalid("--mqtt-url", user, e.to_string()))?;
        }
        _ => {
            return Err(invalid(
                "--mosquitto-export-dir",
                dir.display(),
                "needs Mosquitto with the controller's login: --mqtt-url mqtt://USER:PASSWORD@host:port",
            ));
        }
    }
    Ok(Some(crate::mosquitto::ExportConfig {
        dir: dir.clone(),
        pid_file: layer.mosquitto_pid_file.clone(),
    }))
}

/// The certificate and key of the HTTPS listener (see [`crate::tls`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain, leaf first.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

impl TlsFiles {
    fn resolve(layer: &Layer) -> Result<Option<TlsFiles>, ConfigError> {
        match (&layer.tls_cert, &layer.tls_key) {
            (None, None) => Ok(None),
            (Some(cert), Some(key)) => Ok(Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            })),
            (Some(cert), None) => Err(invalid(
                "--tls-cert",
                cert.display(),
                "give --tls-key with it",
            )),
            (None, Some(key)) => Err(invalid(
                "--tls-key",
                key.display(),
                "give --tls-cert with it",
            )),
        }
    }
}

/// A background job's period `value` of `flag`: between 10 ms and 1 h.
fn period(flag: &'static str, value: Duration) -> Result<Duration, ConfigError> {
    if value < Duration::from_millis(10) || value > Duration::from_secs(3600) {
        return Err(invalid(
            flag,
            humantime::format_duration(value),
            "must be between 10ms and 1h",
        ));
    }
    Ok(value)
}

fn invalid(flag: &'static str, value: impl fmt::Display, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

/// Checks an MQTT client id or share group: no wildcards, no level separator.
fn mqtt_name(flag: &'static str, value: &str, allow_empty: bool) -> Result<(), ConfigError> {
    if value.is_empty() && !allow_empty {
        return Err(invalid(flag, value, "must not be empty"));
    }
    if value.len() > 256 {
        return Err(invalid(flag, value, "longer than 256 bytes"));
    }
    if value
        .chars()
        .any(|c| matches!(c, '/' | '+' | '#') || c.is_control() || c.is_whitespace())
    {
        return Err(invalid(
            flag,
            value,
            "must not contain '/', '+', '#', spaces or control characters",
        ));
    }
    Ok(())
}

impl Config {
    /// Builds the configuration from the merged layers (flags, then
    /// environment, then file; see [`Layer::or`]). `rust_log` is the value of
    /// `RUST_LOG`, used when no layer sets `log`.
    pub fn resolve(layer: &Layer, rust_log: Option<&str>) -> Result<Config, ConfigError> {
        let listen = layer
            .listen
            .unwrap_or_else(|| DEFAULT_LISTEN.parse().expect("valid default"));
        let mqtt_listen = layer
            .mqtt_listen
            .unwrap_or_else(|| DEFAULT_MQTT_LISTEN.parse().expect("valid default"));
        let broker = match layer.mqtt_url.as_deref().map(str::trim) {
            None | Some("") => Broker::Embedded {
                listen: mqtt_listen,
            },
            Some(raw) => Broker::parse_url(raw).map_err(|r| invalid("--mqtt-url", raw, r))?,
        };
        if let Broker::Embedded { listen: m } = &broker
            && m.port() != 0
            && *m == listen
        {
            return Err(invalid(
                "--mqtt-listen",
                m,
                "is the same address as --listen",
            ));
        }

        let mqtt_client_id = layer
            .mqtt_client_id
            .clone()
            .unwrap_or_else(|| DEFAULT_CLIENT_ID.to_owned());
        mqtt_name("--mqtt-client-id", &mqtt_client_id, false)?;
        let mqtt_share_group = layer
            .mqtt_share_group
            .clone()
            .unwrap_or_else(|| DEFAULT_SHARE_GROUP.to_owned());
        mqtt_name("--mqtt-share-group", &mqtt_share_group, true)?;

        let data_dir = layer
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR));
        if data_dir.as_os_str().is_empty() {
            return Err(invalid("--data-dir", "", "must not be empty"));
        }
        let database_url = match &layer.database_url {
            Some(url) => url.trim().to_owned(),
            None => sqlite_url(&data_dir),
        };
        let known = ["sqlite:", "postgres://", "postgresql://"];
        if !known.iter().any(|p| database_url.starts_with(p)) {
            return Err(invalid(
                "--database-url",
                redact_url(&database_url),
                "use sqlite://PATH, sqlite::memory: or postgres://user@host/db",
            ));
        }

        let offline_after = layer.offline_after.unwrap_or(DEFAULT_OFFLINE_AFTER);
        if offline_after == 0 {
            return Err(invalid("--offline-after", 0, "must be at least 1"));
        }
        let sweep_interval = period(
            "--sweep-interval",
            layer.sweep_interval.unwrap_or(DEFAULT_SWEEP_INTERVAL),
        )?;
        let alert_interval = period(
            "--alert-interval",
            layer.alert_interval.unwrap_or(DEFAULT_ALERT_INTERVAL),
        )?;

        let flap = flap_policy(layer)?;
        let mqtt_buffer_mib = layer.mqtt_buffer.unwrap_or(DEFAULT_MQTT_BUFFER_MIB);
        if !(1..=MAX_MQTT_BUFFER_MIB).contains(&mqtt_buffer_mib) {
            return Err(invalid(
                "--mqtt-buffer",
                mqtt_buffer_mib,
                format!("must be 1 to {MAX_MQTT_BUFFER_MIB} (MiB)"),
            ));
        }

        let log = layer
            .log
            .clone()
            .or_else(|| rust_log.map(str::to_owned))
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| DEFAULT_LOG.to_owned());
        let log = log_filter(&log);
        tracing_subscriber::EnvFilter::try_new(&log)
            .map_err(|e| invalid("--log", &log, e.to_string()))?;

        Ok(Config {
            listen,
            mqtt_client_id,
            mqtt_share_group,
            database_url,
            data_dir,
            offline_after,
            sweep_interval,
            alert_interval,
            flap,
            log,
            mqtt_allow_anonymous: layer.mqtt_allow_anonymous.unwrap_or(false),
            mqtt_buffer_mib,
            metrics_token_file: layer.metrics_token_file.clone(),
            tls: TlsFiles::resolve(layer)?,
            mqtt_ca: mqtt_ca(layer)?,
            metrics_per_node: crate::fleet_metrics::PerNode {
                enabled: layer.metrics_per_node.unwrap_or(false),
                max_series: layer
                    .metrics_max_series
                    .unwrap_or(crate::fleet_metrics::DEFAULT_MAX_SERIES),
            },
            history: HistoryConfig::resolve(layer)?,
            mosquitto: mosquitto_export(layer, &broker)?,
            alert_webhook_allow_private: layer.alert_webhook_allow_private.unwrap_or(false),
            broker,
        })
    }

    /// Reads every source: `args` (flags), the process environment, the file
    /// named by `--config` or `MESHTABLE_CONFIG`, and `RUST_LOG`.
    pub fn load(args: &ServeArgs) -> Result<Config, ConfigError> {
        let layer = load_layers(Layer::from_serve_args(args), args.config.as_deref())?;
        Config::resolve(&layer, std::env::var("RUST_LOG").ok().as_deref())
    }

    /// The filter for the subscription on this configuration's broker: a
    /// shared subscription on external brokers when a group is set, else the
    /// plain filter.
    pub fn subscription_filter(&self) -> String {
        let plain = meshtable_proto::Topic::filter(None);
        match &self.broker {
            Broker::External { .. } if !self.mqtt_share_group.is_empty() => {
                format!("$share/{}/{plain}", self.mqtt_share_group)
            }
            _ => plain,
        }
    }
}

/// Stacks flags over the environment over the config file (named by the
/// flag, else by `MESHTABLE_CONFIG`).
fn load_layers(flags: Layer, config_flag: Option<&Path>) -> Result<Layer, ConfigError> {
    let lookup = |name: &str| std::env::var(name).ok();
    let env = Layer::from_env(&lookup)?;
    let path = config_flag.map(Path::to_owned).or_else(|| {
        lookup("MESHTABLE_CONFIG")
            .filter(|s| !s.is_empty())
            .map(PathBuf::from)
    });
    let file = match path {
        Some(p) => Layer::from_file(&p)?,
        None => Layer::default(),
    };
    Ok(flags.or(env).or(file))
}

/// `sqlite://<dir>/meshtable.db`.
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("meshtable.db").display())
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        _ => url.to_owned(),
    }
}

/// What a log filter that says nothing about rumqttd gets added: the
/// embedded broker logs every connection at info level. (Its clients'
/// disconnections, which it logs as errors, are left out by
/// [`crate::init_tracing`] in that case too.)
pub const BROKER_LOG_FILTER: &str = "rumqttd=warn";

/// Adds [`BROKER_LOG_FILTER`] to a log filter that says nothing about rumqttd.
pub fn log_filter(filter: &str) -> String {
    if filter.contains("rumqttd") {
        filter.to_owned()
    } else {
        format!("{filter},{BROKER_LOG_FILTER}")
    }
}

/// Settings of the demo's simulated fleet.
#[derive(Debug, Clone, PartialEq)]
pub struct SimSettings {
    /// Which snapshot to simulate.
    pub network: SimNetwork,
    /// Report interval of every simulated router.
    pub interval: Duration,
    /// Probability, per online router and interval, that it goes down for a while.
    pub churn: f64,
    /// Seed of the simulator's random choices.
    pub seed: u64,
}

/// Configuration of `meshtable demo`.
#[derive(Debug, Clone, PartialEq)]
pub struct DemoConfig {
    /// The controller's configuration. Its broker is always the embedded one.
    pub controller: Config,
    /// The simulator's settings.
    pub sim: SimSettings,
    /// Whether the data directory (and so the database) was chosen by the
    /// user; if not the demo uses a fresh temporary directory.
    pub data_dir_given: bool,
    /// Whether the user chose `--listen`; if not, a busy default port is
    /// replaced by a free one.
    pub listen_given: bool,
    /// Whether the user chose `--mqtt-listen`.
    pub mqtt_listen_given: bool,
}

impl DemoConfig {
    /// Builds the demo configuration from merged layers, like [`Config::resolve`].
    pub fn resolve(layer: &Layer, rust_log: Option<&str>) -> Result<DemoConfig, ConfigError> {
        if let Some(url) = layer.mqtt_url.as_deref().filter(|u| !u.trim().is_empty()) {
            return Err(invalid(
                "--mqtt-url",
                url,
                "the demo always runs the embedded broker: leave --mqtt-url out",
            ));
        }
        let controller = Config::resolve(layer, rust_log)?;
        let network = layer.sim_network.unwrap_or(SimNetwork::Leipzig);
        let interval = layer.sim_interval.unwrap_or(DEFAULT_SIM_INTERVAL);
        if interval < Duration::from_millis(100) {
            return Err(invalid(
                "--sim-interval",
                humantime::format_duration(interval),
                "must be at least 100ms",
            ));
        }
        let churn = layer.sim_churn.unwrap_or(DEFAULT_SIM_CHURN);
        if !(0.0..=1.0).contains(&churn) {
            return Err(invalid("--sim-churn", churn, "must be between 0 and 1"));
        }
        Ok(DemoConfig {
            controller,
            sim: SimSettings {
                network,
                interval,
                churn,
                seed: layer.sim_seed.unwrap_or(DEFAULT_SIM_SEED),
            },
            data_dir_given: layer.data_dir.is_some() || layer.database_url.is_some(),
            listen_given: layer.listen.is_some(),
            mqtt_listen_given: layer.mqtt_listen.is_some(),
        })
    }

    /// Reads every source, like [`Config::load`].
    pub fn load(args: &DemoArgs) -> Result<DemoConfig, ConfigError> {
        let layer = load_layers(Layer::from_demo_args(args), args.serve.config.as_deref())?;
        DemoConfig::resolve(&layer, std::env::var("RUST_LOG").ok().as_deref())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(vars: &[(&str, &str)]) -> Result<Layer, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        Layer::from_env(&move |k: &str| map.get(k).cloned())
    }

    fn flags(args: &[&str]) -> Layer {
        let cli = Cli::try_parse_from(["meshtable", "serve"].iter().chain(args)).unwrap();
        match cli.command {
            Command::Serve(a) => Layer::from_serve_args(&a),
            _ => unreachable!(),
        }
    }

    fn file(text: &str) -> Layer {
        Layer::from_toml(text, Path::new("test.toml")).unwrap()
    }

    /// (flags, environment, file, expected `listen`).
    type PrecedenceCase<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a str, &'a str);

    /// Checks which source wins for `listen`.
    #[test]
    fn precedence() {
        let cases: &[PrecedenceCase<'_>] = &[
            (&[], &[], "", "127.0.0.1:8080"),
            (&[], &[], "listen = \"0.0.0.0:1\"", "0.0.0.0:1"),
            (
                &[],
                &[("MESHTABLE_LISTEN", "0.0.0.0:2")],
                "listen = \"0.0.0.0:1\"",
                "0.0.0.0:2",
            ),
            (
                &["--listen", "0.0.0.0:3"],
                &[("MESHTABLE_LISTEN", "0.0.0.0:2")],
                "listen = \"0.0.0.0:1\"",
                "0.0.0.0:3",
            ),
            (&["--listen", "0.0.0.0:3"], &[], "", "0.0.0.0:3"),
        ];
        for (f, e, t, want) in cases {
            let layer = flags(f).or(env(e).unwrap()).or(file(t));
            let config = Config::resolve(&layer, None).unwrap();
            assert_eq!(config.listen.to_string(), *want, "{f:?} {e:?} {t:?}");
        }
    }

    #[test]
    fn defaults() {
        let c = Config::resolve(&Layer::default(), None).unwrap();
        assert_eq!(
            c,
            Config {
                listen: "127.0.0.1:8080".parse().unwrap(),
                broker: Broker::Embedded {
                    listen: "127.0.0.1:1883".parse().unwrap()
                },
                mqtt_client_id: "meshtable-controller".to_owned(),
                mqtt_share_group: "meshtable".to_owned(),
                database_url: "sqlite://./meshtable-data/meshtable.db".to_owned(),
                data_dir: PathBuf::from("./meshtable-data"),
                offline_after: 3,
                sweep_interval: Duration::from_secs(5),
                alert_interval: Duration::from_secs(30),
                flap: FlapPolicy::default(),
                log: "info,rumqttd=warn".to_owned(),
                mqtt_allow_anonymous: false,
                mqtt_buffer_mib: 64,
                metrics_token_file: None,
                tls: None,
                mqtt_ca: None,
                metrics_per_node: crate::fleet_metrics::PerNode::default(),
                history: HistoryConfig::default(),
                mosquitto: None,
                alert_webhook_allow_private: false,
            }
        );
        assert_eq!(c.subscription_filter(), "meshtable/v1/+/+/+");
    }

    #[test]
    fn every_setting_from_each_source() {
        let from_flags = flags(&[
            "--listen=0.0.0.0:80",
            "--mqtt-listen=0.0.0.0:81",
            "--mqtt-url=mqtt://broker:1884",
            "--mqtt-client-id=c1",
            "--mqtt-share-group=g1",
            "--database-url=postgres://u@h/db",
            "--data-dir=/d",
            "--offline-after=5",
            "--sweep-interval=2s",
            "--alert-interval=1m",
            "--log=debug",
        ]);
        let from_env = env(&[
            ("MESHTABLE_LISTEN", "0.0.0.0:80"),
            ("MESHTABLE_MQTT_LISTEN", "0.0.0.0:81"),
            ("MESHTABLE_MQTT_URL", "mqtt://broker:1884"),
            ("MESHTABLE_MQTT_CLIENT_ID", "c1"),
            ("MESHTABLE_MQTT_SHARE_GROUP", "g1"),
            ("MESHTABLE_DATABASE_URL", "postgres://u@h/db"),
            ("MESHTABLE_DATA_DIR", "/d"),
            ("MESHTABLE_OFFLINE_AFTER", "5"),
            ("MESHTABLE_SWEEP_INTERVAL", "2s"),
            ("MESHTABLE_ALERT_INTERVAL", "1m"),
            ("MESHTABLE_LOG", "debug"),
        ])
        .unwrap();
        let from_file = file(
            r#"
            listen = "0.0.0.0:80"
            mqtt_listen = "0.0.0.0:81"
            mqtt_url = "mqtt://broker:1884"
            mqtt_client_id = "c1"
            mqtt_share_group = "g1"
            database_url = "postgres://u@h/db"
            data_dir = "/d"
            offline_after = 5
            sweep_interval = "2s"
            alert_interval = "1m"
            log = "debug"
            "#,
        );
        assert_eq!(from_flags, from_env);
        assert_eq!(from_flags, from_file);
        let c = Config::resolve(&from_file, None).unwrap();
        assert_eq!(
            c.broker,
            Broker::External {
                host: "broker".to_owned(),
                port: 1884,
                credentials: None
            }
        );
        assert_eq!(c.subscription_filter(), "$share/g1/meshtable/v1/+/+/+");
        assert_eq!(c.log, "debug,rumqttd=warn");
    }

    #[test]
    fn share_group_empty_means_plain() {
        let layer = flags(&["--mqtt-url", "mqtt://b", "--mqtt-share-group", ""]);
        let c = Config::resolve(&layer, None).unwrap();
        assert_eq!(c.subscription_filter(), "meshtable/v1/+/+/+");
    }

    #[test]
    fn mqtt_buffer_from_each_source_and_bounded() {
        let default = Config::resolve(&Layer::default(), None).unwrap();
        assert_eq!(default.mqtt_buffer_mib, DEFAULT_MQTT_BUFFER_MIB);
        let from_flags = flags(&["--mqtt-buffer", "512"]);
        assert_eq!(
            from_flags,
            env(&[("MESHTABLE_MQTT_BUFFER", "512")]).unwrap()
        );
        assert_eq!(from_flags, file("mqtt_buffer = 512"));
        let c = Config::resolve(&from_flags, None).unwrap();
        assert_eq!(c.mqtt_buffer_mib, 512);
        for bad in ["0", "16385"] {
            let e = Config::resolve(&flags(&["--mqtt-buffer", bad]), None)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("--mqtt-buffer") && e.contains("1 to 16384"),
                "{e}"
            );
        }
    }

    #[test]
    fn database_url_follows_data_dir() {
        let c = Config::resolve(&flags(&["--data-dir", "/var/lib/mt"]), None).unwrap();
        assert_eq!(c.database_url, "sqlite:///var/lib/mt/meshtable.db");
    }

    #[test]
    fn log_sources() {
        let cases: &[(&[&str], Option<&str>, &str)] = &[
            (&[], None, "info,rumqttd=warn"),
            (&[], Some("debug"), "debug,rumqttd=warn"),
            (&["--log", "warn"], Some("debug"), "warn,rumqttd=warn"),
            (&["--log", "info,rumqttd=debug"], None, "info,rumqttd=debug"),
        ];
        for (f, rust_log, want) in cases {
            let c = Config::resolve(&flags(f), *rust_log).unwrap();
            assert_eq!(c.log, *want, "{f:?} {rust_log:?}");
        }
    }

    #[test]
    fn broker_urls() {
        let cases = [
            ("mqtt://localhost", Ok(("localhost", 1883, None))),
            ("tcp://10.0.0.1:1884", Ok(("10.0.0.1", 1884, None))),
            ("mqtt://[::1]:1885", Ok(("::1", 1885, None))),
            (
                "mqtt://user:p%40ss@broker:1883",
                Ok(("broker", 1883, Some(("user", "p@ss")))),
            ),
            ("mqtts://broker", Ok(("broker", 8883, None))),
            ("ssl://broker:9883", Ok(("broker", 9883, None))),
            ("http://broker", Err("scheme")),
            ("mqtt://broker/path", Err("path")),
            ("mqtt://broker?x=1", Err("query")),
            ("broker:1883", Err("scheme")),
            ("not a url", Err("relative URL")),
        ];
        for (raw, want) in cases {
            match (Broker::parse_url(raw), want) {
                (
                    Ok(Broker::External {
                        host,
                        port,
                        credentials,
                    }),
                    Ok((h, p, c)),
                ) => {
                    assert_eq!((host.as_str(), port), (h, p), "{raw}");
                    let c = c.map(|(u, p): (&str, &str)| (u.to_owned(), p.to_owned()));
                    assert_eq!(credentials, c, "{raw}");
                }
                (Err(e), Err(part)) => assert!(e.contains(part), "{raw}: {e}"),
                (got, _) => panic!("{raw}: unexpected {got:?}"),
            }
        }
        let b = Broker::parse_url("mqtt://u:secret@[::1]:1").unwrap();
        assert_eq!(b.display_url(), "mqtt://[::1]:1");
    }

    /// Invalid settings, each with the flag the error must name.
    #[test]
    fn validation() {
        let cases: &[(&[&str], &str)] = &[
            (&["--offline-after", "0"], "invalid --offline-after"),
            (&["--sweep-interval", "1ms"], "invalid --sweep-interval"),
            (&["--sweep-interval", "2h"], "invalid --sweep-interval"),
            (&["--alert-interval", "1ms"], "invalid --alert-interval"),
            (&["--alert-interval", "2h"], "invalid --alert-interval"),
            (&["--mqtt-url", "http://x"], "invalid --mqtt-url"),
            (&["--mqtt-client-id", ""], "invalid --mqtt-client-id"),
            (&["--mqtt-client-id", "a/b"], "invalid --mqtt-client-id"),
            (&["--mqtt-share-group", "g+"], "invalid --mqtt-share-group"),
            (&["--database-url", "mysql://x"], "invalid --database-url"),
            (&["--log", "info,=[x"], "invalid --log"),
            (
                &["--listen", "127.0.0.1:9", "--mqtt-listen", "127.0.0.1:9"],
                "invalid --mqtt-listen",
            ),
        ];
        for (f, want) in cases {
            let err = Config::resolve(&flags(f), None).unwrap_err().to_string();
            assert!(err.starts_with(want), "{f:?}: {err}");
        }
        let empty_dir = Layer {
            data_dir: Some(PathBuf::new()),
            ..Layer::default()
        };
        let err = Config::resolve(&empty_dir, None).unwrap_err().to_string();
        assert!(err.starts_with("invalid --data-dir"), "{err}");
    }

    #[test]
    fn unparsable_sources_name_themselves() {
        let e = env(&[("MESHTABLE_OFFLINE_AFTER", "many")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MESHTABLE_OFFLINE_AFTER"), "{e}");
        let e = env(&[("MESHTABLE_SWEEP_INTERVAL", "soon")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MESHTABLE_SWEEP_INTERVAL"), "{e}");

        let e = Layer::from_toml("lissen = \"x\"", Path::new("m.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("m.toml") && e.contains("lissen"), "{e}");
        let e = Layer::from_toml("offline_after = \"3\"", Path::new("m.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("offline_after"), "{e}");

        let e = Cli::try_parse_from(["meshtable", "serve", "--listen", "nowhere"])
            .unwrap_err()
            .to_string();
        assert!(e.contains("--listen"), "{e}");
    }

    #[test]
    fn demo_settings() {
        let cli = Cli::try_parse_from([
            "meshtable",
            "demo",
            "--sim-network",
            "bremen",
            "--sim-interval",
            "2s",
            "--sim-churn",
            "0.5",
            "--listen",
            "127.0.0.1:0",
        ])
        .unwrap();
        let Command::Demo(args) = cli.command else {
            panic!("not demo")
        };
        let layer = Layer::from_demo_args(&args).or(env(&[("MESHTABLE_SIM_SEED", "7")]).unwrap());
        let d = DemoConfig::resolve(&layer, None).unwrap();
        assert_eq!(
            d.sim,
            SimSettings {
                network: SimNetwork::Bremen,
                interval: Duration::from_secs(2),
                churn: 0.5,
                seed: 7
            }
        );
        assert!(d.listen_given && !d.mqtt_listen_given && !d.data_dir_given);

        let cases: &[(Layer, &str)] = &[
            (
                Layer {
                    sim_churn: Some(1.5),
                    ..Layer::default()
                },
                "invalid --sim-churn",
            ),
            (
                Layer {
                    sim_interval: Some(Duration::from_millis(1)),
                    ..Layer::default()
                },
                "invalid --sim-interval",
            ),
            (
                Layer {
                    mqtt_url: Some("mqtt://x".to_owned()),
                    ..Layer::default()
                },
                "invalid --mqtt-url",
            ),
        ];
        for (layer, want) in cases {
            let e = DemoConfig::resolve(layer, None).unwrap_err().to_string();
            assert!(e.starts_with(want), "{e}");
        }
        let e = env(&[("MESHTABLE_SIM_NETWORK", "paris")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MESHTABLE_SIM_NETWORK"), "{e}");
    }

    #[test]
    fn mosquitto_export_settings() {
        let ok = Config::resolve(
            &flags(&[
                "--mqtt-url=mqtt://ctl:pw@broker:1883",
                "--mosquitto-export-dir=/etc/mosquitto/meshtable",
                "--mosquitto-pid-file=/run/mosquitto.pid",
            ]),
            None,
        )
        .unwrap();
        assert_eq!(
            ok.mosquitto,
            Some(crate::mosquitto::ExportConfig {
                dir: PathBuf::from("/etc/mosquitto/meshtable"),
                pid_file: Some(PathBuf::from("/run/mosquitto.pid")),
            })
        );
        let from_env = env(&[
            ("MESHTABLE_MOSQUITTO_EXPORT_DIR", "/etc/mosquitto/meshtable"),
            ("MESHTABLE_MOSQUITTO_PID_FILE", "/run/mosquitto.pid"),
        ])
        .unwrap();
        let from_file = file(
            "mosquitto_export_dir = \"/etc/mosquitto/meshtable\"\n\
             mosquitto_pid_file = \"/run/mosquitto.pid\"\n",
        );
        assert_eq!(from_env, from_file);
        let cases: &[(&[&str], &str)] = &[
            // The embedded broker has no files to write.
            (&["--mosquitto-export-dir=/d"], "--mosquitto-export-dir"),
            // The controller's own line needs its password.
            (
                &["--mqtt-url=mqtt://broker", "--mosquitto-export-dir=/d"],
                "--mosquitto-export-dir",
            ),
            (
                &[
                    "--mqtt-url=mqtt://a%3Ab:pw@broker",
                    "--mosquitto-export-dir=/d",
                ],
                "--mqtt-url",
            ),
            (&["--mosquitto-pid-file=/p"], "--mosquitto-pid-file"),
        ];
        for (args, flag) in cases {
            let e = Config::resolve(&flags(args), None).unwrap_err().to_string();
            assert!(e.contains(flag), "{args:?}: {e}");
        }
    }

    #[test]
    fn alert_webhook_allow_private_from_each_source() {
        let off = Config::resolve(&Layer::default(), None).unwrap();
        assert!(!off.alert_webhook_allow_private, "off by default");
        for layer in [
            flags(&["--alert-webhook-allow-private"]),
            flags(&["--alert-webhook-allow-private=true"]),
            env(&[("MESHTABLE_ALERT_WEBHOOK_ALLOW_PRIVATE", "true")]).unwrap(),
            file("alert_webhook_allow_private = true"),
        ] {
            let c = Config::resolve(&layer, None).unwrap();
            assert!(c.alert_webhook_allow_private, "{layer:?}");
        }
        // A flag saying false wins over a file saying true.
        let layer = flags(&["--alert-webhook-allow-private=false"])
            .or(file("alert_webhook_allow_private = true"));
        assert!(
            !Config::resolve(&layer, None)
                .unwrap()
                .alert_webhook_allow_private
        );
        let e = env(&[("MESHTABLE_ALERT_WEBHOOK_ALLOW_PRIVATE", "maybe")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("MESHTABLE_ALERT_WEBHOOK_ALLOW_PRIVATE"), "{e}");
    }

    #[test]
    fn example_config_file_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/meshtable.toml");
        let layer = Layer::from_file(&path).unwrap();
        Config::resolve(&layer, None).unwrap();
        DemoConfig::resolve(&layer, None).unwrap();
    }

    #[test]
    fn history_settings() {
        let from_flags = flags(&[
            "--raw-retention=7d",
            "--rollup-retention=2years",
            "--history-interval=30s",
            "--clock-max-skew=90s",
        ]);
        let from_env = env(&[
            ("MESHTABLE_RAW_RETENTION", "7d"),
            ("MESHTABLE_ROLLUP_RETENTION", "2years"),
            ("MESHTABLE_HISTORY_INTERVAL", "30s"),
            ("MESHTABLE_CLOCK_MAX_SKEW", "90s"),
        ])
        .unwrap();
        let from_file = file(
            r#"
            raw_retention = "7d"
            rollup_retention = "2years"
            history_interval = "30s"
            clock_max_skew = "90s"
            "#,
        );
        assert_eq!(from_flags, from_env);
        assert_eq!(from_flags, from_file);
        let h = Config::resolve(&from_file, None).unwrap().history;
        assert_eq!(h.raw_retention, Duration::from_secs(7 * 86_400));
        assert_eq!(h.interval, Duration::from_secs(30));
        assert_eq!(h.clock_max_skew, Duration::from_secs(90));
        let bad: &[(&[&str], &str)] = &[
            (&["--raw-retention=10m"], "--raw-retention"),
            (
                &["--raw-retention=30d", "--rollup-retention=20d"],
                "--rollup-retention",
            ),
            (&["--history-interval=2h"], "--history-interval"),
            (&["--clock-max-skew=0s"], "--clock-max-skew"),
        ];
        for (f, flag) in bad {
            let e = Config::resolve(&flags(f), None).unwrap_err().to_string();
            assert!(e.contains(flag), "{f:?}: {e}");
        }
    }
}
