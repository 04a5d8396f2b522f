//! MQTT over TLS (`mqtts://`), in the build with the `tls` feature only:
//! rustls with the ring provider, certificates and keys from PEM files.
//!
//! The broker's certificate must chain to a CA of `ca_file` and name the
//! host of `--mqtt-url` (a DNS name, or an IP address in the certificate's
//! IP SANs); the system's trust store is not used. With `client_cert_file`
//! and `client_key_file` the agent also presents a client certificate, for
//! a broker that requires one (Mosquitto's `require_certificate true`).
//!
//! Every file is read once, when the agent starts: a missing or unreadable
//! file, or one without a certificate or a key, stops the start with an
//! error naming the file. Key material is never logged, nor put in an
//! error message.

use std::path::PathBuf;
use std::sync::Arc;

use rustls::{ClientConfig, RootCertStore};

use crate::config::TlsFiles;

/// The PEM loaders, shared with the controller (`crates/pem`).
pub use meshtable_pem::{PemError, load_certs, load_key};

/// Why the TLS configuration could not be built from its files.
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
    /// rustls refused the client certificate and key (e.g. they do not
    /// match).
    #[error("client certificate {cert} with key {key}: {source}")]
    ClientCert {
        /// The certificate file.
        cert: PathBuf,
        /// The key file.
        key: PathBuf,
        /// rustls' reason.
        source: rustls::Error,
    },
}

/// The rustls client configuration of `files`: trusts exactly the CA
/// certificates of `ca_file`, and presents the client certificate when
/// one is given.
pub fn client_config(files: &TlsFiles) -> Result<Arc<ClientConfig>, TlsError> {
    let ca = &files.ca_file;
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|source| TlsError::BadCa {
            path: ca.clone(),
            source,
        })?;
    }
    let builder =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|source| TlsError::BadCa {
                path: ca.clone(),
                source,
            })?
            .with_root_certificates(roots);
    let config = match &files.client {
        None => builder.with_no_client_auth(),
        Some(client) => {
            let chain = load_certs(&client.cert_file)?;
            let key = load_key(&client.key_file)?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|source| TlsError::ClientCert {
                    cert: client.cert_file.clone(),
                    key: client.key_file.clone(),
                    source,
                })?
        }
    };
    Ok(Arc::new(config))
}

/// The MQTT transport for `files`: TLS, the server name taken by rumqttc
/// from the broker's host.
pub fn transport(files: &TlsFiles) -> Result<rumqttc::Transport, TlsError> {
    Ok(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(client_config(files)?),
    ))
}
