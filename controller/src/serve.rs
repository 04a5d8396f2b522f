//! Serving: every subsystem built from a [`Config`], with its listeners
//! passed in, so that tests start the whole controller in-process on port 0.
//!
//! ```text
//! Config -> Listeners::bind -> Controller::start: store, broker, ingest
//!        (port checks)                            liveness, HTTP
//! ```

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meshtable_store::{Store, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{error, info, warn};

use crate::api::{self, AppState};
use crate::broker::{self, BrokerError, EmbeddedBroker};
use crate::config::{Broker, Config, redact_url};
use crate::history;
use crate::ingest::{self, Ingest, IngestError};
use crate::liveness;
use crate::metrics::{Metrics, MetricsError};
use crate::registry::Registry;

/// The ingest connection's user name at the embedded broker.
pub const INGEST_USER: &str = "meshtable-controller";

/// How long shutdown waits for ingest to store and ack what it holds.
pub const INGEST_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How long shutdown waits for open HTTP requests.
pub const HTTP_SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// How often a SQLite database's WAL is copied into its file beside
/// ingest's writer ([`Store::checkpoint`]). Ingest under a flood commits a
/// few batches a second; more checkpoints would copy a page changed by
/// each of them more often.
pub const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// Runs [`Store::checkpoint`] every `interval` until `stop` turns true.
async fn checkpoints(store: Store, interval: Duration, stop: watch::Receiver<bool>) {
    let mut every = crate::periodic::Every::new(interval, stop);
    while every.tick().await {
        match store.checkpoint().await {
            Ok(Some(c)) => tracing::trace!(
                busy = c.busy,
                wal_pages = c.wal_pages,
                copied_pages = c.copied_pages,
                "WAL checkpoint"
            ),
            Ok(None) => return,
            Err(e) => warn!(error = %e, "WAL checkpoint failed"),
        }
    }
}

/// Why the controller could not start or stopped on its own.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Another process listens on the HTTP address.
    #[error("--listen {0} is already in use")]
    ListenInUse(SocketAddr),
    /// The HTTP address cannot be listened on for another reason.
    #[error("cannot listen on --listen {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// The embedded broker could not start.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The database could not be opened or migrated.
    #[error("cannot open the database {url}: {source}")]
    Store {
        /// The URL, password hidden.
        url: String,
        /// The error.
        source: StoreError,
    },
    /// The metrics could not be registered.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// The node registry could not be read.
    #[error("cannot read the node registry: {0}")]
    Registry(meshtable_store::registry::RegistryError),
    /// Ingest could not subscribe.
    #[error(transparent)]
    Ingest(#[from] IngestError),
    /// The embedded broker stopped.
    #[error("the embedded mqtt broker stopped, see the log above")]
    BrokerStopped,
    /// An ingest task ended on its own (a bug: see the log).
    #[error("ingest stopped, see the log above")]
    IngestStopped,
    /// The bootstrap superadmin could not be created.
    #[error("cannot create the bootstrap superadmin: {0}")]
    Auth(#[from] crate::auth::AuthError),
    /// The HTTP server failed.
    #[error("http server failed: {0}")]
    Http(io::Error),
    /// The HTTPS certificate or key could not be loaded.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Mosquitto's password and ACL files could not be written.
    #[error(transparent)]
    Mosquitto(#[from] crate::mosquitto::MosquittoError),
}

/// The listening sockets, bound (HTTP) or checked (MQTT) before anything
/// else starts.
#[derive(Debug)]
pub struct Listeners {
    /// The HTTP listener.
    pub http: std::net::TcpListener,
    /// The embedded broker's address, checked free; `None` with an external broker.
    pub mqtt: Option<SocketAddr>,
}

/// Binds the HTTP listener on `addr`, naming `--listen` on failure.
pub fn bind_http(addr: SocketAddr) -> Result<std::net::TcpListener, ServeError> {
    let l = std::net::TcpListener::bind(addr).map_err(|source| {
        if source.kind() == io::ErrorKind::AddrInUse {
            ServeError::ListenInUse(addr)
        } else {
            ServeError::Listen { addr, source }
        }
    })?;
    l.set_nonblocking(true)
        .map_err(|source| ServeError::Listen { addr, source })?;
    Ok(l)
}

impl Listeners {
    /// Binds `--listen` and checks that `--mqtt-listen` is free (when the
    /// embedded broker is used).
    pub fn bind(config: &Config) -> Result<Listeners, ServeError> {
        let http = bind_http(config.listen)?;
        let mqtt = match &config.broker {
            Broker::Embedded { listen } => Some(broker::reserve(*listen)?),
            Broker::External { .. } => None,
        };
        Ok(Listeners { http, mqtt })
    }
}

/// A running controller.
#[derive(Debug)]
pub struct Controller {
    http_addr: SocketAddr,
    https: bool,
    mqtt_url: String,
    stop: watch::Sender<bool>,
    http: JoinHandle<io::Result<()>>,
    ingest: Ingest,
    liveness: JoinHandle<()>,
    history: JoinHandle<()>,
    broker: Option<EmbeddedBroker>,
    store: Store,
    /// The generated password of the bootstrap superadmin, on first start.
    bootstrap_password: Option<crate::auth::Secret>,
}

impl Controller {
    /// Opens the store, starts the embedded broker (if any), ingest, the
    /// liveness sweep and the HTTP server, and returns once ingest has
    /// subscribed.
    pub async fn start(config: &Config, listeners: Listeners) -> Result<Controller, ServeError> {
        let metrics = Arc::new(Metrics::new()?.with_per_node(config.metrics_per_node));
        let store = Store::connect(&config.database_url)
            .await
            .map_err(|source| ServeError::Store {
                url: redact_url(&config.database_url),
                source,
            })?
            .with_clock_max_skew_ms(
                i64::try_from(config.history.clock_max_skew.as_millis()).unwrap_or(i64::MAX),
            );
        info!(database = %redact_url(&config.database_url), backend = ?store.backend(), "database ready");
        let metrics_token = match &config.metrics_token_file {
            Some(path) => Some(crate::auth::read_metrics_token(path)?),
            None => None,
        };
        let bootstrap_password = crate::auth::bootstrap(&store).await?;

        // The node registry: networks and enrolled nodes, checked by ingest
        // and (unless anonymous clients are allowed) by the embedded broker,
        // where the ingest connection logs in with a password made now.
        let ingest_password = crate::auth::secret::random_hex256();
        let registry = Arc::new(
            Registry::load(store.clone())
                .await
                .map_err(ServeError::Registry)?
                .with_controller_login(INGEST_USER.to_owned(), ingest_password.clone()),
        );
        let broker_auth = (!config.mqtt_allow_anonymous).then(|| registry.clone());

        // The configuration with the broker's concrete address (port 0 resolved).
        let mut config = config.clone();
        let mut broker = None;
        if let (Broker::Embedded { listen }, Some(addr)) = (&mut config.broker, listeners.mqtt) {
            *listen = addr;
            broker = Some(EmbeddedBroker::start_with_auth(
                addr,
                broker_auth.clone(),
                config.mqtt_buffer_mib,
            )?);
        }
        let (stop, stop_rx) = watch::channel(false);

        let http_listener =
            tokio::net::TcpListener::from_std(listeners.http).map_err(|source| {
                ServeError::Listen {
                    addr: config.listen,
                    source,
                }
            })?;
        let http_addr = http_listener
            .local_addr()
            .map_err(|source| ServeError::Listen {
                addr: config.listen,
                source,
            })?;
        let state = AppState {
            store: store.clone(),
            metrics: metrics.clone(),
            auth: Arc::new(crate::auth::AuthState::default().with_metrics_token(metrics_token)),
            registry: registry.clone(),
            enroll_limiter: Arc::new(crate::enroll::limiter()),
            webhook_allow_private: config.alert_webhook_allow_private,
        };
        let mut http_stop = stop_rx.clone();
        let tls = match &config.tls {
            Some(f) => Some(crate::tls::server_config(&f.cert, &f.key)?),
            None => None,
        };
        let https = tls.is_some();
        let http = crate::tls::spawn_http(http_listener, tls, api::router(state), async move {
            let _ = http_stop.wait_for(|s| *s).await;
        })
        .map_err(ServeError::Http)?;
        info!(listen = %http_addr, https, "http server started");

        let filter = config.subscription_filter();
        info!(broker = %config.broker.display_url(), filter = %filter, client_id = %config.mqtt_client_id, "ingest starting");
        let mut options = ingest::mqtt_options(&config);
        if let Some(ca) = &config.mqtt_ca {
            options.set_transport(crate::tls::mqtt_transport(ca)?);
        }
        if broker.is_some() && broker_auth.is_some() {
            options.set_credentials(INGEST_USER, ingest_password);
        }
        registry
            .clone()
            .spawn_refresh(crate::registry::REFRESH_INTERVAL, stop_rx.clone());
        // Mosquitto's files, written before ingest connects (Mosquitto may
        // be waiting for them), then after every change of the registry.
        if let (
            Some(export),
            Broker::External {
                credentials: Some((user, password)),
                ..
            },
        ) = (&config.mosquitto, &config.broker)
        {
            crate::mosquitto::MosquittoSync::start(
                export.clone(),
                (user, password),
                registry.clone(),
                stop_rx.clone(),
            )
            .await?;
        }
        let alert_metrics = metrics.clone();
        let mut ingest = Ingest::start(
            options,
            filter,
            store.clone(),
            metrics,
            registry,
            stop_rx.clone(),
        );
        let subscribed = match broker.as_mut() {
            Some(b) => tokio::select! {
                r = ingest.subscribed() => r.map_err(ServeError::from),
                _ = b.exited() => Err(ServeError::BrokerStopped),
            },
            None => ingest.subscribed().await.map_err(ServeError::from),
        };
        let history = tokio::spawn(history::run(store.clone(), config.history, stop_rx.clone()));
        // Alerts: evaluated every `alert_interval`; the task ends with `stop`.
        tokio::spawn(crate::alerts::engine::run(
            store.clone(),
            alert_metrics,
            config.alert_interval,
            config.alert_webhook_allow_private,
            stop_rx.clone(),
        ));
        tokio::spawn(checkpoints(
            store.clone(),
            CHECKPOINT_INTERVAL,
            stop_rx.clone(),
        ));
        let liveness = tokio::spawn(liveness::run(
            store.clone(),
            config.sweep_interval,
            config.offline_after,
            config.flap,
            ingest.progress(),
            stop_rx,
        ));
        let controller = Controller {
            http_addr,
            https,
            mqtt_url: config.broker.display_url(),
            stop,
            http,
            ingest,
            liveness,
            history,
            broker,
            store,
            bootstrap_password,
        };
        if let Err(e) = subscribed {
            controller.shutdown().await;
            return Err(e);
        }
        Ok(controller)
    }

    /// The address the HTTP server listens on.
    pub fn http_addr(&self) -> SocketAddr {
        self.http_addr
    }

    /// `http://ADDR`, or `https://ADDR` when serving TLS.
    pub fn http_url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.http_addr)
    }

    /// `mqtt://ADDR` of the broker in use.
    pub fn mqtt_url(&self) -> &str {
        &self.mqtt_url
    }

    /// The line printed when the controller is ready.
    pub fn ready_line(&self) -> String {
        format!(
            "meshtable ready http={} mqtt={}",
            self.http_url(),
            self.mqtt_url
        )
    }

    /// The store the controller writes to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The password of the superadmin `admin` when this start created it
    /// (the first start on an empty database): to be shown once, never logged.
    pub fn bootstrap_password(&self) -> Option<&crate::auth::Secret> {
        self.bootstrap_password.as_ref()
    }

    /// The line that shows the bootstrap password, if this start made one.
    pub fn bootstrap_line(&self) -> Option<String> {
        self.bootstrap_password.as_ref().map(|p| {
            format!(
                "meshtable bootstrap user={} password={} (superadmin; shown once, change it with `meshtable user passwd {}`)",
                crate::auth::BOOTSTRAP_USER,
                p.expose(),
                crate::auth::BOOTSTRAP_USER
            )
        })
    }

    /// Runs until `shutdown` resolves (then shuts down cleanly) or a part
    /// fails on its own.
    pub async fn run_until(mut self, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
        let failure = {
            let broker = &mut self.broker;
            let http = &mut self.http;
            let ingest_ended = self.ingest.ended();
            let broker_exit = async move {
                match broker.as_mut() {
                    Some(b) => b.exited().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = shutdown => None,
                _ = broker_exit => Some(ServeError::BrokerStopped),
                _ = ingest_ended => Some(ServeError::IngestStopped),
                r = http => Some(match r {
                    Ok(Ok(())) => ServeError::Http(io::Error::other("stopped")),
                    Ok(Err(e)) => ServeError::Http(e),
                    Err(e) => ServeError::Http(io::Error::other(e)),
                }),
            }
        };
        if let Some(e) = &failure {
            error!(error = %e, "shutting down after a failure");
        }
        self.shutdown().await;
        failure.map_or(Ok(()), Err)
    }

    /// Stops everything: HTTP stops accepting, ingest stores and acks what
    /// it holds, the sweep ends, the database closes.
    pub async fn shutdown(self) {
        info!("shutting down");
        let _ = self.stop.send(true);
        self.ingest.shutdown(INGEST_SHUTDOWN_TIMEOUT).await;
        let _ = self.liveness.await;
        let _ = self.history.await;
        let http_abort = self.http.abort_handle();
        if !self.http.is_finished() {
            match tokio::time::timeout(HTTP_SHUTDOWN_TIMEOUT, self.http).await {
                Ok(_) => {}
                Err(_) => {
                    warn!("open http requests did not finish in time");
                    http_abort.abort();
                }
            }
        }
        if let Err(e) = self.store.close().await {
            warn!(error = %e, "closing the database failed");
        }
        // The embedded broker's threads end with the process.
        info!("stopped");
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                error!(error = %e, "cannot listen for sigterm");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => info!(signal = "SIGINT", "signal received"),
        _ = term => info!(signal = "SIGTERM", "signal received"),
    }
}

/// `meshtable serve`: binds, starts, prints the ready line to stdout and
/// runs until `shutdown` resolves.
pub async fn serve(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), ServeError> {
    let listeners = Listeners::bind(&config)?;
    let controller = Controller::start(&config, listeners).await?;
    if let Some(line) = controller.bootstrap_line() {
        println!("{line}");
    }
    println!("{}", controller.ready_line());
    controller.run_until(shutdown).await
}
