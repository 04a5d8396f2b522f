//! The broker and database a test runs against.
//!
//! [`Backend::embedded`] is the controller's own broker and an SQLite file in
//! its data directory. [`Backend::service`] is the external Mosquitto and
//! PostgreSQL named by `MESHTABLE_TEST_MQTT_URL` and
//! `MESHTABLE_TEST_DATABASE_URL`; each such backend gets a database of its own
//! (`meshtable_e2e_...`, created with `psql` and dropped on drop), and tests
//! isolate themselves on the shared broker with unique network names, client
//! ids and share groups.

use std::env;
use std::io::{ErrorKind, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::urls::{host_port, with_database};

/// Names the external broker of the service suite.
pub const MQTT_URL_VAR: &str = "MESHTABLE_TEST_MQTT_URL";
/// Names the PostgreSQL server (and an existing database to connect to) of
/// the service suite.
pub const DATABASE_URL_VAR: &str = "MESHTABLE_TEST_DATABASE_URL";

/// How long to wait for a service to answer before calling it unreachable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a test's controller gets its broker and database.
#[derive(Debug)]
pub struct Backend {
    name: &'static str,
    mqtt_url: Option<String>,
    database: Option<PgDatabase>,
}

impl Backend {
    /// The embedded broker and SQLite: no flags, the controller's defaults.
    pub fn embedded() -> Backend {
        Backend {
            name: "embedded broker + sqlite",
            mqtt_url: None,
            database: None,
        }
    }

    /// An external broker the test started itself (a private Mosquitto)
    /// and the controller's SQLite: `--mqtt-url mqtt_url`.
    pub fn with_broker(mqtt_url: &str) -> Backend {
        Backend {
            name: "own mosquitto + sqlite",
            mqtt_url: Some(mqtt_url.to_owned()),
            database: None,
        }
    }

    /// Mosquitto and PostgreSQL from the environment, with a fresh database.
    ///
    /// Returns `None` (after printing why) when either variable is unset, so
    /// the caller can pass as skipped.
    ///
    /// # Panics
    ///
    /// When both are set but the broker or the database server does not
    /// answer, or the database cannot be created.
    pub fn service() -> Option<Backend> {
        let mqtt = env::var(MQTT_URL_VAR).ok().filter(|v| !v.is_empty());
        let db = env::var(DATABASE_URL_VAR).ok().filter(|v| !v.is_empty());
        let (Some(mqtt), Some(db)) = (mqtt, db) else {
            // Straight to the process's stderr, past the test harness's
            // capture, so that a skip is never silent.
            let _ = writeln!(
                std::io::stderr(),
                "skipped service suite: set {MQTT_URL_VAR} and {DATABASE_URL_VAR}"
            );
            return None;
        };
        check_broker(&mqtt);
        let database = PgDatabase::create(&db);
        Some(Backend {
            name: "mosquitto + postgresql",
            mqtt_url: Some(mqtt),
            database: Some(database),
        })
    }

    /// A short description for messages.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The external broker's URL, if any (`--mqtt-url`).
    pub fn mqtt_url(&self) -> Option<&str> {
        self.mqtt_url.as_deref()
    }

    /// The external database's URL, if any (`--database-url`).
    pub fn database_url(&self) -> Option<&str> {
        self.database.as_ref().map(|d| d.url.as_str())
    }

    /// Whether the broker is shared with other tests (and other people), so
    /// that counters may start above zero and retained messages are left.
    pub fn is_shared(&self) -> bool {
        self.mqtt_url.is_some()
    }
}

/// Panics unless a TCP connection to the broker of `url` succeeds.
fn check_broker(url: &str) {
    let (host, port) = host_port(url, 1883).unwrap_or_else(|e| panic!("{MQTT_URL_VAR}: {e}"));
    let addrs: Vec<_> = (host.as_str(), port)
        .to_socket_addrs()
        .unwrap_or_else(|e| panic!("{MQTT_URL_VAR}={url}: cannot resolve {host}: {e}"))
        .collect();
    let mut last = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(_) => return,
            Err(e) => last = Some(e),
        }
    }
    panic!(
        "{MQTT_URL_VAR}={url} is set but the broker is unreachable ({}); start Mosquitto or unset \
         the variable",
        last.map_or_else(|| "no address".to_owned(), |e| e.to_string())
    );
}

/// A PostgreSQL database created for one test and dropped (with `FORCE`) when
/// this is dropped.
#[derive(Debug)]
pub struct PgDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl PgDatabase {
    /// Creates `meshtable_e2e_<unique>` on the server of `admin_url`, an
    /// existing database to connect to.
    ///
    /// # Panics
    ///
    /// When `psql` is missing, the server does not answer, or the database
    /// cannot be created.
    pub fn create(admin_url: &str) -> PgDatabase {
        assert!(
            admin_url.starts_with("postgres://") || admin_url.starts_with("postgresql://"),
            "{DATABASE_URL_VAR}={admin_url}: use postgres://user@host:port/database"
        );
        if let Err(e) = psql(admin_url, "SELECT 1") {
            panic!(
                "{DATABASE_URL_VAR}={admin_url} is set but PostgreSQL is unreachable: {e}; start \
                 it or unset the variable"
            );
        }
        let name = crate::unique("meshtable_e2e").replace('-', "_");
        psql(admin_url, &format!("CREATE DATABASE \"{name}\""))
            .unwrap_or_else(|e| panic!("cannot create database {name}: {e}"));
        let url =
            with_database(admin_url, &name).unwrap_or_else(|e| panic!("{DATABASE_URL_VAR}: {e}"));
        PgDatabase {
            admin_url: admin_url.to_owned(),
            name,
            url,
        }
    }

    /// The new database's URL.
    pub fn url(&self) -> &str {
        &self.url
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
        if let Err(e) = psql(&self.admin_url, &sql) {
            eprintln!("warning: cannot drop test database {}: {e}", self.name);
        }
    }
}

/// Runs one SQL statement with `psql`; `Err` carries what went wrong.
fn psql(url: &str, sql: &str) -> Result<(), String> {
    let out = Command::new("psql")
        .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", url, "-c", sql])
        .env("PGCONNECT_TIMEOUT", CONNECT_TIMEOUT.as_secs().to_string())
        .stdin(Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == ErrorKind::NotFound {
                "psql is not installed (Debian package postgresql-client)".to_owned()
            } else {
                format!("cannot run psql: {e}")
            }
        })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "psql {sql:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}
