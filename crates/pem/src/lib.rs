//! Certificates and private keys from PEM files, for the agent's TLS
//! (feature `tls`) and the controller's HTTPS and MQTT over TLS.
//!
//! Every error names the file and never quotes it: the PEM parser's own
//! reason is left out, since it can repeat a line of the file, and that
//! line can be part of a private key.

use std::io;
use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why certificates or a key could not be read from a PEM file.
#[derive(Debug, thiserror::Error)]
pub enum PemError {
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
}

fn read(path: &Path) -> Result<Vec<u8>, PemError> {
    std::fs::read(path).map_err(|source| PemError::Read {
        path: path.to_owned(),
        source,
    })
}

/// The certificates of a PEM file, in file order (other PEM sections are
/// skipped); at least one.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let pem = read(path)?;
    let certs: Vec<_> = CertificateDer::pem_slice_iter(&pem)
        .filter_map(Result::ok)
        .collect();
    if certs.is_empty() {
        return Err(PemError::NoCertificate(path.to_owned()));
    }
    Ok(certs)
}

/// The first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, PemError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|_| PemError::NoKey(path.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file named `name` in `dir` holding `text`.
    fn file(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    #[test]
    fn loads_what_is_there_and_names_the_file_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let a = rcgen::generate_simple_self_signed(vec!["a.test".to_owned()]).unwrap();
        let b = rcgen::generate_simple_self_signed(vec!["b.test".to_owned()]).unwrap();
        let key_pem = a.signing_key.serialize_pem();
        // Two certificates with a key between them: both, in order.
        let chain = file(
            dir.path(),
            "chain.pem",
            &format!("{}{key_pem}{}", a.cert.pem(), b.cert.pem()),
        );
        let certs = load_certs(&chain).unwrap();
        assert_eq!(certs.len(), 2);
        assert_eq!(certs[0].as_ref(), a.cert.der().as_ref());
        assert_eq!(certs[1].as_ref(), b.cert.der().as_ref());
        // The key after a certificate.
        let key = load_key(&chain).unwrap();
        assert_eq!(key.secret_der(), a.signing_key.serialize_der().as_slice());

        // Each case: the file, which loader, and the whole message.
        let key_file = file(dir.path(), "only.key", &key_pem);
        let cert_file = file(dir.path(), "only.pem", &a.cert.pem());
        // A key-like line the parser would quote in its own error.
        let broken_body = "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg";
        let broken = file(
            dir.path(),
            "broken.key",
            &format!("-----BEGIN PRIVATE KEY-----\n{broken_body}\n"),
        );
        let missing = dir.path().join("missing.pem");
        let d = dir.path().display();
        let cases: [(&Path, bool, String); 5] = [
            (
                &key_file,
                true,
                format!("{d}/only.key: no PEM certificate found"),
            ),
            (
                &cert_file,
                false,
                format!("{d}/only.pem: no PEM private key found (PKCS#8, PKCS#1 or SEC1)"),
            ),
            (
                &broken,
                false,
                format!("{d}/broken.key: no PEM private key found (PKCS#8, PKCS#1 or SEC1)"),
            ),
            (
                &missing,
                true,
                format!("cannot read {d}/missing.pem: No such file or directory (os error 2)"),
            ),
            (
                &missing,
                false,
                format!("cannot read {d}/missing.pem: No such file or directory (os error 2)"),
            ),
        ];
        for (path, certs, want) in cases {
            let e = if certs {
                load_certs(path).unwrap_err()
            } else {
                load_key(path).unwrap_err()
            };
            assert_eq!(e.to_string(), want);
            assert!(!format!("{e:?}").contains(broken_body), "{e:?}");
        }
    }
}
