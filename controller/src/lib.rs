//! meshtable controller: keeps the registry of a community mesh's routers,
//! notices which are down, stores their history, and shows it.
//!
//! The pipeline, one module per subsystem:
//!
//! ```text
//! config --> broker (embedded rumqttd, or an external one)
//!        --> ingest (MQTT client -> decode -> store, ack after commit)
//!        --> liveness (periodic sweep: silent nodes go offline)
//!        --> api (JSON) + web (HTML) + metrics (Prometheus), over axum
//! serve: builds all of it from a Config, with its listeners passed in
//! demo:  serve + an in-process simulated fleet
//! ```
//!
//! What is absent: no SQL here (only `meshtable-store` knows it), no wire
//! format details (only `meshtable-proto` knows them), and no second ingest
//! path: the embedded broker is consumed over MQTT like an external one.

pub mod alerts;
pub mod api;
pub mod auth;
pub mod broker;
pub mod config;
pub mod demo;
pub mod enroll;
pub mod fleet_metrics;
pub mod history;
pub mod ingest;
pub mod liveness;
pub mod metrics;
pub mod mosquitto;
pub mod periodic;
pub mod reassemble;
pub mod registry;
pub mod serve;
pub mod tls;
pub mod topology;
pub mod trust_cli;
pub mod web;
/// The status page, `GET /networks/{network}/status`: open alerts, new
/// and recently lost nodes, as HTML tables.
pub mod web_status;
/// The topology page, `GET /networks/{network}/topology`: gateways, links
/// worst first, isolated nodes, as HTML tables.
pub mod web_topology;

use config::{Cli, Command, Config, ConfigError, DemoConfig};

/// Why the `meshtable` command failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The controller failed.
    #[error(transparent)]
    Serve(#[from] serve::ServeError),
    /// The demo failed.
    #[error(transparent)]
    Demo(#[from] demo::DemoError),
    /// A node-registry command failed.
    #[error(transparent)]
    Trust(#[from] trust_cli::TrustCliError),
    /// A `user` or `token` command failed.
    #[error(transparent)]
    Accounts(#[from] auth::cli::CliError),
    /// The async runtime could not start.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
}

/// Sets up logging to stderr with `filter` (`EnvFilter` syntax, checked by
/// [`Config::resolve`]). Does nothing if a subscriber is already set.
pub fn init_tracing(filter: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::util::SubscriberInitExt;

    let _ = subscriber(filter, std::io::stderr, std::io::stderr().is_terminal()).try_init();
}

/// The log subscriber: `filter` (`EnvFilter` syntax), formatted to `writer`,
/// and [`broker::LossCounter`] beside it.
///
/// When the user's filter did not name rumqttd ([`config::log_filter`] then
/// added [`config::BROKER_LOG_FILTER`]), events the embedded broker logs
/// about single clients are left out too: it logs every client
/// disconnection, a router losing power as much as a clean shutdown, as an
/// error, which would bury the controller's own log.
pub fn subscriber<W>(filter: &str, writer: W, ansi: bool) -> impl tracing::Subscriber + Send + Sync
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    use tracing_subscriber::filter::{DynFilterFn, FilterExt};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::{EnvFilter, Layer, fmt};

    let quiet_links = filter.ends_with(&format!(",{}", config::BROKER_LOG_FILTER));
    let env_filter =
        EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new(config::DEFAULT_LOG));
    let links = DynFilterFn::new(move |meta, ctx| {
        if !quiet_links || !meta.is_event() || !meta.target().starts_with("rumqttd") {
            return true;
        }
        // Per-client noise: anything in a connection's task, and what the
        // router logs while handling one client's events. Naming rumqttd in
        // the filter (`--log info,rumqttd=warn`) shows all of it.
        !ctx.lookup_current().is_some_and(|span| {
            span.name() == "[>] incoming" || span.scope().any(|s| s.name() == "remote_link")
        })
    });
    let layer = fmt::layer()
        .with_writer(writer)
        .with_ansi(ansi)
        .with_filter(env_filter.and(links));
    // The embedded broker's losses are counted whatever the log shows.
    let losses = broker::LossCounter.with_filter(broker::LossCounter::targets());
    tracing_subscriber::registry().with(layer).with(losses)
}

fn runtime() -> Result<tokio::runtime::Runtime, Error> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(Error::Runtime)
}

/// Runs a parsed command line: reads and checks the configuration, then
/// serves (or runs the demo) until SIGINT or SIGTERM.
pub fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Serve(args) => {
            let config = Config::load(&args)?;
            init_tracing(&config.log);
            runtime()?.block_on(serve::serve(config, serve::shutdown_signal()))?;
        }
        Command::Demo(args) => {
            let demo = DemoConfig::load(&args)?;
            init_tracing(&demo.controller.log);
            runtime()?.block_on(demo::run(demo, serve::shutdown_signal()))?;
        }
        Command::Network(cmd) => trust_cli::network(cmd)?,
        Command::EnrollToken(cmd) => trust_cli::enroll_token(cmd)?,
        Command::Node(cmd) => trust_cli::node(cmd)?,
        Command::Mosquitto(cmd) => trust_cli::mosquitto(cmd)?,
        Command::User(args) => {
            init_tracing("warn");
            runtime()?.block_on(auth::cli::user(args))?;
        }
        Command::Token(args) => {
            init_tracing("warn");
            runtime()?.block_on(auth::cli::token(args))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn log_with(filter: &str) -> String {
        let buf = Buf::default();
        let out = buf.clone();
        let sub = subscriber(filter, move || buf.clone(), false);
        tracing::subscriber::with_default(sub, || {
            tracing::error!(target: "rumqttd::server::broker", "server error");
            let span = tracing::error_span!(target: "rumqttd::server::broker", "remote_link");
            span.in_scope(|| tracing::error!(target: "rumqttd::server::broker", "router-drop"));
            let router = tracing::error_span!(target: "rumqttd::router::routing", "[>] incoming");
            router.in_scope(|| {
                tracing::error!(target: "rumqttd::router::routing", "no-connection");
                let ack = tracing::info_span!(target: "rumqttd::router::routing", "puback");
                ack.in_scope(|| tracing::error!(target: "rumqttd::router::routing", "ooo ack"));
            });
            tracing::info!(target: "rumqttd::server::broker", "accept");
            tracing::info!(target: "meshtable::serve", "ours");
        });
        String::from_utf8(out.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn broker_client_noise_is_left_out() {
        let log = log_with(&config::log_filter("info"));
        assert!(log.contains("server error"), "{log}");
        assert!(log.contains("ours"), "{log}");
        assert!(!log.contains("router-drop"), "{log}");
        assert!(!log.contains("no-connection"), "{log}");
        assert!(!log.contains("ooo ack"), "{log}");
        assert!(!log.contains("accept"), "{log}");

        let log = log_with("info");
        assert!(
            log.contains("router-drop") && log.contains("accept"),
            "{log}"
        );
    }
}
