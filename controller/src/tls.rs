//! TLS with rustls (ring provider): HTTPS for the controller's HTTP
//! listener, and the client side of MQTT over TLS to an external broker
//! (`--mqtt-url mqtts://...` with `--mqtt-ca FILE`: the broker's
//! certificate must chain to a CA of that file and name the URL's host).
//! Certificates and keys come from PEM files.
//!
//! HTTPS: `tls_cert` (the certificate chain, leaf first) and `tls_key` (its
//! PKCS#8, PKCS#1 or SEC1 private key). Handshakes run off the accept loop,
//! each bounded by [`HANDSHAKE_TIMEOUT`] and at most
//! [`MAX_HANDSHAKES`] at once, so a client that opens a connection and
//! says nothing holds up nobody; a failed handshake is logged at debug
//! level and counted nowhere else (it is the client's problem).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;
use tracing::{debug, warn};

/// Time a client gets to complete the TLS handshake.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Most TLS handshakes in progress at once; further connections wait.
pub const MAX_HANDSHAKES: usize = 256;

/// The PEM loaders, shared with the agent (`crates/pem`).
pub use meshtable_pem::{PemError, load_certs, load_key};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read, or holds no certificate or no key (the
    /// message names the file and never quotes it).
    #[error(transparent)]
    Pem(#[from] PemError),
    /// A CA certificate was refused.
    #[error("{path}: bad CA certificate: {source}")]
    BadCa {
        /// The file.
        path: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
    /// rustls refused the certificate and key (e.g. they do not match).
    #[error("certificate {cert} with key {key}: {source}")]
    Config {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The server configuration of the HTTPS listener: HTTP/1.1 with the
/// certificate chain in `cert` and the key in `key`.
pub fn server_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let config_err = |source| TlsError::Config {
        cert: cert.to_owned(),
        key: key.to_owned(),
        source,
    };
    let mut config = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(config_err)?
        .with_no_client_auth()
        .with_single_cert(load_certs(cert)?, load_key(key)?)
        .map_err(config_err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A client configuration that trusts exactly the CA certificates in `ca`
/// (a PEM file), for MQTT over TLS to a broker.
pub fn client_config(ca: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: ca.to_owned(),
            source,
        })?;
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::BadCa {
            path: ca.to_owned(),
            source,
        })?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The MQTT transport for a broker over TLS whose certificate chains to a
/// CA of the PEM file `ca`.
pub fn mqtt_transport(ca: &Path) -> Result<rumqttc::Transport, TlsError> {
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(client_config(ca)?),
    ))
}

/// A listener handing out connections whose TLS handshake succeeded. A
/// task accepts TCP connections and runs the handshakes; it ends when the
/// listener is dropped.
#[derive(Debug)]
pub struct TlsListener {
    local: SocketAddr,
    rx: mpsc::Receiver<(TlsStream<TcpStream>, SocketAddr)>,
    task: JoinHandle<()>,
}

impl TlsListener {
    /// Serves TLS with `config` on `listener`.
    pub fn new(listener: TcpListener, config: Arc<ServerConfig>) -> io::Result<TlsListener> {
        let local = listener.local_addr()?;
        let (tx, rx) = mpsc::channel(64);
        let acceptor = TlsAcceptor::from(config);
        let task = tokio::spawn(accept_loop(listener, acceptor, tx));
        Ok(TlsListener { local, rx, task })
    }
}

impl Drop for TlsListener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    tx: mpsc::Sender<(TlsStream<TcpStream>, SocketAddr)>,
) {
    let slots = Arc::new(Semaphore::new(MAX_HANDSHAKES));
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: wait, as axum does.
                warn!(error = %e, "https: accept failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let tx = tx.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send((tls, peer)).await;
                }
                Ok(Err(e)) => debug!(peer = %peer, error = %e, "https: handshake failed"),
                Err(_) => debug!(peer = %peer, "https: handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.rx.recv().await {
            Some(c) => c,
            // The accept task ended (it only does when aborted): no more
            // connections.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Serves `app` on `listener`, over TLS when `tls` is given, until
/// `shutdown` completes; the handlers see the client's address
/// (`ConnectInfo<SocketAddr>`) either way.
pub fn spawn_http(
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<JoinHandle<io::Result<()>>> {
    let service = app.into_make_service_with_connect_info::<SocketAddr>();
    Ok(match tls {
        None => tokio::spawn(async move {
            axum::serve(listener, service)
                .with_graceful_shutdown(shutdown)
                .await
        }),
        Some(config) => {
            // `tap_io` only to get axum's `ConnectInfo<SocketAddr>` for a
            // listener of our own.
            let listener = TlsListener::new(listener, config)?.tap_io(|_| {});
            tokio::spawn(async move {
                axum::serve(listener, service)
                    .with_graceful_shutdown(shutdown)
                    .await
            })
        }
    })
}
