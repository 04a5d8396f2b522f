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

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ClientConfig, RootCertStore};

use crate::config::TlsFiles;

/// Why the TLS configuration could not be built from its files.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        source: io::Error,
    },
    /// A PEM file holds no certificate.
    #[error("{0}: no PEM certificate found")]
    NoCertificate(PathBuf),
    /// A PEM file holds no private key (the parser's reason is left out:
    /// it could quote the file).
    #[error("{0}: no PEM private key found (PKCS#8, PKCS#1 or SEC1)")]
    NoKey(PathBuf),
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

fn read(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file (other PEM sections are skipped).
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(TlsError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// The first private key of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| TlsError::NoKey(path.to_owned()))
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
