//! Mosquitto's password and ACL files, written from the node registry
//! (`meshtable mosquitto export` once, or `meshtable serve
//! --mosquitto-export-dir` on every change: [`MosquittoSync`]), and the
//! password hash they share with the embedded broker.
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
//!
//! ```text
//! start, enroll, revoke, a change seen by the registry refresh
//!   --> Registry::changes --> MosquittoSync: write meshtable.passwd and
//!       meshtable.acl (temporary file + rename, 0600) --> SIGHUP to the
//!       pid in --mosquitto-pid-file (Mosquitto reads both files again and
//!       drops clients whose login no longer holds)
//! ```

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use meshtable_store::registry::NodeKey;
use rand::RngCore;
use sha2::Sha512;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::registry::{BrokerCredential, Registry};

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
    /// The pid file does not name a Mosquitto process.
    #[error("cannot tell mosquitto to reload: {path}: {reason}")]
    PidFile {
        /// The pid file.
        path: String,
        /// What is wrong.
        reason: String,
    },
    /// The signal could not be sent.
    #[error("cannot send SIGHUP to mosquitto (pid {pid}): {source}")]
    Signal {
        /// The process id.
        pid: i32,
        /// The error.
        source: nix::errno::Errno,
    },
    /// The writing task failed.
    #[error("the export task failed: {0}")]
    Task(String),
}

/// The password file [`MosquittoSync`] writes in its directory.
pub const PASSWD_FILE: &str = "meshtable.passwd";

/// The ACL file [`MosquittoSync`] writes in its directory.
pub const ACL_FILE: &str = "meshtable.acl";

/// How long enrollment and revocation wait for [`MosquittoSync`] before
/// they answer anyway.
pub const SYNC_WAIT: Duration = Duration::from_secs(5);

/// How soon a failed export is tried again.
pub const RETRY_INTERVAL: Duration = Duration::from_secs(5);

/// `--mosquitto-export-dir` and `--mosquitto-pid-file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportConfig {
    /// The directory of [`PASSWD_FILE`] and [`ACL_FILE`].
    pub dir: PathBuf,
    /// Mosquitto's `pid_file`: it gets SIGHUP after every export. Without
    /// it, something else must reload Mosquitto (see deploy/mosquitto).
    pub pid_file: Option<PathBuf>,
}

impl ExportConfig {
    /// The password file's path.
    pub fn passwd(&self) -> PathBuf {
        self.dir.join(PASSWD_FILE)
    }

    /// The ACL file's path.
    pub fn acl(&self) -> PathBuf {
        self.dir.join(ACL_FILE)
    }
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

/// Enrolled, unrevoked nodes of a registry listing, as the broker sees them.
fn credentials(nodes: &[NodeKey]) -> Vec<BrokerCredential> {
    nodes
        .iter()
        .filter(|n| n.revoked_ms.is_none())
        .map(|n| BrokerCredential {
            node: n.node.clone(),
            network: n.network.clone(),
            password_hash: n.mqtt_password_hash.clone(),
        })
        .collect()
}

/// The password file: the controller's user, then one line per enrolled,
/// unrevoked node.
pub fn password_file(controller: (&str, &str), nodes: &[NodeKey]) -> String {
    password_file_of(controller, &credentials(nodes))
}

/// [`password_file`] of credentials (revoked nodes already left out).
pub fn password_file_of(controller: (&str, &str), nodes: &[BrokerCredential]) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}:{}", controller.0, controller.1);
    for n in nodes {
        let _ = writeln!(out, "{}:{}", n.node, n.password_hash);
    }
    out
}

/// The ACL file: the controller reads `meshtable/v1/#`; each node writes its
/// own topics only. Anonymous clients and anyone else get nothing.
pub fn acl_file(controller_user: &str, nodes: &[NodeKey]) -> String {
    acl_file_of(controller_user, &credentials(nodes))
}

/// [`acl_file`] of credentials (revoked nodes already left out).
pub fn acl_file_of(controller_user: &str, nodes: &[BrokerCredential]) -> String {
    let mut out = String::from(
        "# Written by meshtable (`meshtable mosquitto export`, or `meshtable serve\n\
         # --mosquitto-export-dir` on every change): do not edit.\n\
         # Users without a block below (and anonymous clients) may do nothing.\n\n",
    );
    let _ = writeln!(out, "user {controller_user}\ntopic read meshtable/v1/#\n");
    for n in nodes {
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
/// new temporary file beside it (`<name>.tmp-meshtable`) and a rename, so
/// Mosquitto never reads half a file; the directory is synced after.
pub fn write_private(path: &Path, text: &str) -> Result<(), MosquittoError> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let err = |source| MosquittoError::Write {
        path: path.display().to_string(),
        source,
    };
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp-meshtable");
    let tmp = path.with_file_name(tmp_name);
    // A leftover of a crash may have other permissions: never reuse it.
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(err(e)),
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)?;
    std::fs::rename(&tmp, path).map_err(err)?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Sends SIGHUP to the Mosquitto whose process id is in `pid_file`, so it
/// reads its password and ACL files again. Refuses a pid file that names
/// no process, process 1 or below, or (where `/proc` tells) a process that
/// is not `mosquitto`: a stale pid file must not signal a stranger.
/// Returns the process id.
pub fn signal_reload(pid_file: &Path) -> Result<i32, MosquittoError> {
    let bad = |reason: String| MosquittoError::PidFile {
        path: pid_file.display().to_string(),
        reason,
    };
    let text = std::fs::read_to_string(pid_file).map_err(|e| bad(e.to_string()))?;
    let pid = text
        .trim()
        .parse::<i32>()
        .ok()
        .filter(|p| *p > 1)
        .ok_or_else(|| bad("no process id in it".to_owned()))?;
    match std::fs::read_to_string(format!("/proc/{pid}/comm")) {
        Ok(comm) if !comm.trim().starts_with("mosquitto") => {
            return Err(bad(format!(
                "process {pid} is {:?}, not mosquitto (a stale pid file?)",
                comm.trim()
            )));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && Path::new("/proc/self").exists() => {
            return Err(bad(format!("no process {pid} (mosquitto is not running?)")));
        }
        _ => {}
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGHUP,
    )
    .map_err(|source| MosquittoError::Signal { pid, source })?;
    Ok(pid)
}

/// Keeps Mosquitto's files equal to the registry: writes them at start and
/// after every change of [`Registry::changes`], then signals Mosquitto.
/// Only hashes go into the files; nothing secret is logged.
pub struct MosquittoSync {
    config: ExportConfig,
    controller_user: String,
    controller_hash: String,
    registry: Arc<Registry>,
    exported: watch::Sender<u64>,
}

impl std::fmt::Debug for MosquittoSync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MosquittoSync")
            .field("config", &self.config)
            .field("controller_user", &self.controller_user)
            .finish_non_exhaustive()
    }
}

impl MosquittoSync {
    /// Writes the files once (an error here is the caller's: the
    /// directory is wrong), signals Mosquitto (an error is only logged: it
    /// may not run yet and reads the files when it starts), attaches to
    /// `registry` so that [`Registry::broker_synced`] waits for it, and
    /// follows the registry's changes until `stop` turns true. `controller`
    /// is the controller's own broker login (user, password): its line in
    /// the password file is hashed from it.
    pub async fn start(
        config: ExportConfig,
        controller: (&str, &str),
        registry: Arc<Registry>,
        mut stop: watch::Receiver<bool>,
    ) -> Result<JoinHandle<()>, MosquittoError> {
        check_user(controller.0)?;
        let mut changes = registry.changes();
        let version = *changes.borrow_and_update();
        let sync = Arc::new(MosquittoSync {
            config,
            controller_user: controller.0.to_owned(),
            controller_hash: hash_password(controller.1),
            registry: registry.clone(),
            exported: watch::channel(version).0,
        });
        sync.clone().write_files(version).await?;
        sync.reload_broker();
        registry.attach_broker_export(sync.exported.subscribe());
        Ok(tokio::spawn(async move {
            let mut failed = false;
            loop {
                tokio::select! {
                    r = changes.changed() => if r.is_err() { return },
                    r = stop.changed() => if r.is_err() || *stop.borrow() { return },
                    () = tokio::time::sleep(RETRY_INTERVAL), if failed => {}
                }
                let version = *changes.borrow_and_update();
                match sync.clone().write_files(version).await {
                    Ok(()) => {
                        failed = false;
                        sync.reload_broker();
                    }
                    Err(e) => {
                        failed = true;
                        warn!(error = %e, retry_in = ?RETRY_INTERVAL, "cannot write the mosquitto files");
                    }
                }
                // Also after a failure: waiters should not hang on it.
                sync.exported.send_replace(version);
            }
        }))
    }

    /// Writes both files from the registry as it is now (at `version` or
    /// later).
    async fn write_files(self: Arc<Self>, version: u64) -> Result<(), MosquittoError> {
        tokio::task::spawn_blocking(move || {
            let nodes = self.registry.broker_credentials();
            let user = self.controller_user.as_str();
            write_private(&self.config.acl(), &acl_file_of(user, &nodes))?;
            write_private(
                &self.config.passwd(),
                &password_file_of((user, &self.controller_hash), &nodes),
            )?;
            info!(
                dir = %self.config.dir.display(),
                nodes = nodes.len(),
                version,
                "mosquitto password and acl files written"
            );
            Ok(())
        })
        .await
        .map_err(|e| MosquittoError::Task(e.to_string()))?
    }

    /// Signals Mosquitto, if a pid file is configured; logs the outcome.
    fn reload_broker(&self) {
        let Some(pid_file) = &self.config.pid_file else {
            return;
        };
        match signal_reload(pid_file) {
            Ok(pid) => info!(pid, "mosquitto told to reload (SIGHUP)"),
            Err(e) => warn!(error = %e, "mosquitto not reloaded"),
        }
    }
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
    fn write_private_replaces_atomically_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(PASSWD_FILE);
        // A leftover temporary file, world-readable, is not reused.
        let tmp = dir.path().join("meshtable.passwd.tmp-meshtable");
        std::fs::write(&tmp, "old").unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, "a:b\n").unwrap();
        write_private(&path, "c:d\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "c:d\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!tmp.exists());
        let err = write_private(&dir.path().join("no/such/dir/f"), "x").unwrap_err();
        assert!(err.to_string().contains("no/such/dir"), "{err}");
    }

    /// A pid file that does not name a live Mosquitto signals nobody.
    #[test]
    fn signal_refuses_what_is_not_mosquitto() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("mosquitto.pid");
        let err = signal_reload(&pid_file).unwrap_err();
        assert!(matches!(err, MosquittoError::PidFile { .. }), "{err}");
        for junk in ["", "abc", "0", "1", "-1", "-5"] {
            std::fs::write(&pid_file, junk).unwrap();
            let err = signal_reload(&pid_file).unwrap_err();
            assert!(err.to_string().contains("no process id"), "{junk:?}: {err}");
        }
        // A live process that is not mosquitto (a stale pid file): left
        // alone. This very test process: a spawned child keeps the forking
        // thread's name, "mosquitto::test...", until the kernel renames it
        // late in exec, after spawn() has returned (seen once in CI); and a
        // SIGHUP sent here would end the test run.
        std::fs::write(&pid_file, format!("{}\n", std::process::id())).unwrap();
        let err = signal_reload(&pid_file).unwrap_err();
        assert!(err.to_string().contains("not mosquitto"), "{err}");
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
