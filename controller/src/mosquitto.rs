//! Mosquitto's password and ACL files, written from the node registry
//! (`meshtable mosquitto export`), and the password hash they share with the
//! embedded broker.
//!
//! Passwords are stored in Mosquitto 2's `mosquitto_passwd` format:
//! `$7$<iterations>$<base64 salt>$<base64 hash>`, PBKDF2-HMAC-SHA512 over a
//! 12-byte salt giving 64 bytes. The controller keeps only that string, so
//! the export copies it and no password is ever in the clear after the
//! node received it.
//!
//! The ACL gives every enrolled, unrevoked node write access to its own
//! topics (`meshtable/v1/{network}/{node}/#`) and nothing else, and the
//! controller's own user read access to `meshtable/v1/#`. See
//! `deploy/mosquitto/README.md`.

use std::fmt::Write as _;
use std::path::Path;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use meshtable_store::registry::NodeKey;
use rand::RngCore;
use sha2::Sha512;

/// PBKDF2 iterations of new hashes: `mosquitto_passwd`'s default.
pub const ITERATIONS: u32 = 101;

/// Salt length of `mosquitto_passwd`.
pub const SALT_LEN: usize = 12;

/// Hash length (SHA-512).
pub const HASH_LEN: usize = 64;

/// Most iterations accepted when checking a stored hash (a bound on the
/// work an odd entry can cause per login).
pub const MAX_ITERATIONS: u32 = 1_000_000;

/// Why an export failed.
#[derive(Debug, thiserror::Error)]
pub enum MosquittoError {
    /// A file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
    /// The controller's login cannot go into the files.
    #[error(
        "invalid controller user name {0:?}: it must not contain ':', spaces or control characters"
    )]
    ControllerUser(String),
}

/// Hashes `password` with `salt` into a `$7$` string.
pub fn hash_password_with(password: &str, salt: &[u8], iterations: u32) -> String {
    let mut out = [0u8; HASH_LEN];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), salt, iterations, &mut out);
    format!(
        "$7${iterations}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(out)
    )
}

/// Hashes `password` with a fresh random salt.
pub fn hash_password(password: &str) -> String {
    let mut salt = [0u8; SALT_LEN];
    rand::rng().fill_bytes(&mut salt);
    hash_password_with(password, &salt, ITERATIONS)
}

/// Checks `password` against a `$7$` string, in constant time over the
/// hash. Anything that does not parse is a refusal.
pub fn verify_password(stored: &str, password: &str) -> bool {
    let mut parts = stored.split('$');
    let (Some(""), Some("7"), Some(iter), Some(salt), Some(hash), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return false;
    };
    let Ok(iterations) = iter.parse::<u32>() else {
        return false;
    };
    if iterations == 0 || iterations > MAX_ITERATIONS {
        return false;
    }
    let (Ok(salt), Ok(want)) = (STANDARD.decode(salt), STANDARD.decode(hash)) else {
        return false;
    };
    if want.len() != HASH_LEN {
        return false;
    }
    let mut got = [0u8; HASH_LEN];
    pbkdf2::pbkdf2_hmac::<Sha512>(password.as_bytes(), &salt, iterations, &mut got);
    got.iter().zip(&want).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0
}

/// The password file: the controller's user, then one line per enrolled,
/// unrevoked node.
pub fn password_file(controller: (&str, &str), nodes: &[NodeKey]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}:{}", controller.0, controller.1);
    for n in nodes.iter().filter(|n| n.revoked_ms.is_none()) {
        let _ = writeln!(out, "{}:{}", n.node, n.mqtt_password_hash);
    }
    out
}

/// The ACL file: the controller reads `meshtable/v1/#`; each node writes its
/// own topics only. Anonymous clients and anyone else get nothing.
pub fn acl_file(controller_user: &str, nodes: &[NodeKey]) -> String {
    let mut out = String::from(
        "# Written by `meshtable mosquitto export`: do not edit, export again.\n\
         # Users without a block below (and anonymous clients) may do nothing.\n\n",
    );
    let _ = writeln!(out, "user {controller_user}\ntopic read meshtable/v1/#\n");
    for n in nodes.iter().filter(|n| n.revoked_ms.is_none()) {
        let _ = writeln!(
            out,
            "user {}\ntopic write meshtable/v1/{}/{}/#\n",
            n.node, n.network, n.node
        );
    }
    out
}

/// Checks a user name for the files: no `:`, white space or control characters.
pub fn check_user(user: &str) -> Result<(), MosquittoError> {
    if user.is_empty()
        || user
            .chars()
            .any(|c| c == ':' || c.is_whitespace() || c.is_control())
    {
        return Err(MosquittoError::ControllerUser(user.to_owned()));
    }
    Ok(())
}

/// Writes `text` to `path` with mode 0600 (it holds password hashes), via a
/// temporary file and a rename so Mosquitto never reads half a file.
pub fn write_private(path: &Path, text: &str) -> Result<(), MosquittoError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| MosquittoError::Write {
        path: path.display().to_string(),
        source,
    };
    let tmp = path.with_extension("tmp-meshtable");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A line `mosquitto_passwd -b` 2.0.11 wrote for alice / secret.
    const MOSQUITTO_LINE: &str = "$7$101$3BJT0BZWGbjnFvjD$i6U8btWhinhJONqxBQTKNquXyEqUlfMk/EMGbvfUw8wb+L9XE/E2/sRTa8s0neFytazvmm3jF9LZaXcnGeNpaw==";

    #[test]
    fn reads_what_mosquitto_passwd_writes() {
        assert!(verify_password(MOSQUITTO_LINE, "secret"));
        assert!(!verify_password(MOSQUITTO_LINE, "Secret"));
        let salt = STANDARD.decode("3BJT0BZWGbjnFvjD").unwrap();
        assert_eq!(hash_password_with("secret", &salt, 101), MOSQUITTO_LINE);
    }

    #[test]
    fn own_hashes_verify_and_junk_is_refused() {
        let h = hash_password("pw");
        assert!(verify_password(&h, "pw"));
        assert!(!verify_password(&h, "pw2"));
        for junk in [
            "",
            "$7$",
            "$6$101$abc$def",
            "$7$0$AAAA$AAAA",
            "$7$x$AAAA$AAAA",
            "plain",
        ] {
            assert!(!verify_password(junk, "pw"), "{junk}");
        }
    }

    #[test]
    fn files_list_unrevoked_nodes_only() {
        let node = |id: &str, revoked: Option<i64>| NodeKey {
            node: id.to_owned(),
            network: "net".to_owned(),
            public_key: String::new(),
            mqtt_password_hash: format!("$7$101$s${id}"),
            hostname: None,
            site: None,
            enrolled_ms: 0,
            revoked_ms: revoked,
        };
        let nodes = [node("a", None), node("r", Some(1))];
        let p = password_file(("ctl", "$7$h"), &nodes);
        assert_eq!(p, "ctl:$7$h\na:$7$101$s$a\n");
        let acl = acl_file("ctl", &nodes);
        assert!(acl.contains("user ctl\ntopic read meshtable/v1/#\n"));
        assert!(acl.contains("user a\ntopic write meshtable/v1/net/a/#\n"));
        assert!(!acl.contains("user r"));
        assert!(check_user("ctl").is_ok());
        assert!(check_user("a:b").is_err());
    }
}
