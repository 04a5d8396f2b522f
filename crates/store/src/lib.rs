//! meshtable's storage: what the controller knows about networks, nodes and
//! their telemetry, in SQLite or PostgreSQL through sea-orm.
//!
//! Only this crate and `meshtable-migrations` know SQL or sea-orm: everything
//! else goes through [`Store`] and the plain types it returns. Both backends
//! behave the same; the tests run every case on both.
//!
//! # Schema
//!
//! Defined by the append-only migrations in `meshtable-migrations`, which
//! [`Store::connect`] applies. Times are Unix milliseconds (`BIGINT`); wire
//! counters are u64 and stored as `BIGINT`, saturating at `i64::MAX`.
//!
//! | table | key | what |
//! |---|---|---|
//! | `network` | `id` | every network id seen, with `first_seen_ms` |
//! | `node` | `id` (serial); unique `(network, node)` | the latest hello (`hello` as proto JSON, `hostname`, `model`, `interval_ms`), `status` (`online`/`offline`), `status_since_ms`, `first_seen_ms`, `last_seen_ms` |
//! | `sample` | `id` (serial); unique `(node_id, boot_id, seq)`; index `(node_id, t_ms)` | one telemetry report: `t_ms` (series time), `time_ms` (router clock), `received_ms`, `clock_ok`, `uptime_ms`, loads, CPU ticks, memory, rootfs, `dropped`, the derived `cpu_busy_ratio`, and `interfaces`: the 8 counters of each interface with the derived `rx_bps`, `tx_bps`, as one JSON array (see `ifaces`) |
//! | `telemetry_base` | `(network, node)` | the node's last full telemetry report (`report`, CBOR; `boot_id`, `seq`, `updated_ms`), the base of the compact report after it when the controller restarts (see `meshtable::reassemble`) |
//!
//! A node and its network are created by the first message of any kind.
//! Telemetry is deduplicated by the unique `(node_id, boot_id, seq)` index and
//! `INSERT ... ON CONFLICT DO NOTHING`, so two deliveries of one report, even
//! on two controllers at once, store it once.
//!
//! # Derived values
//!
//! Computed once, when a report is stored, against the previous stored sample
//! of the same node and boot (the largest `seq` below this one, one indexed
//! lookup): `rx_bps`/`tx_bps` = counter delta × 8 / uptime delta in seconds,
//! and `cpu_busy_ratio` = (Δtotal − Δidle − Δiowait) / Δtotal over the CPU
//! ticks. A new boot, a counter that went down, an interface the previous
//! sample lacks, or an uptime that did not advance give no value (`null`);
//! never a negative one.
//!
//! A sample's series time is the router's clock when it passes the checks
//! of [`clock`] (plausible, and near the reception time for a live report),
//! else derived from the boot's anchor (see [`clock`]); `clock_ok` records
//! which.
//!
//! History (5-minute and hourly rollups, resolution picking) is in
//! [`rollup`], retention in [`retention`].

pub mod accounts;
pub mod aggregate;
pub mod alerts;
pub mod audit;
mod base;
mod batch;
pub mod clock;
mod derive;
mod entity;
mod error;
pub mod fleet;
mod ifaces;
pub mod link_reference;
pub mod liveness;
mod metric;
mod nodes;
mod preregister;
mod probe;
mod read;
pub mod registry;
pub mod retention;
pub mod rollup;
pub mod sites;
pub mod time;
pub mod topology;
mod types;
mod unnest;
mod write;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use meshtable_migrations::{Migrator, MigratorTrait};
use sea_orm::sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr, RuntimeErr};

pub use base::{InterfaceRow, TelemetryBase};
pub use batch::{Content, Incoming, Outcome};
pub use clock::ClockStatus;
pub use error::StoreError;
pub use metric::Metric;
pub use probe::ReportKey;
pub use retention::RetentionReport;
pub use rollup::{HistoryPolicy, ReconcileReport, Resolution, Series, SeriesPoint};
pub use types::{
    Backend, InterfaceSample, NetworkSummary, NodeDetail, NodeStatus, NodeSummary, Point, Recorded,
    Sample,
};

/// How long a SQLite writer waits for another's lock before failing.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Which connections of a SQLite file [`sqlite_file_options`] sets up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum SqliteRole {
    /// The pool: reads, and the few writes outside a batch.
    Pool,
    /// The one connection write transactions begin on (see `Store::writer`).
    Writer,
}

/// The options of connections to a SQLite file: at most `max` connections,
/// WAL journal, `synchronous=FULL`, a busy timeout, foreign keys.
fn sqlite_file_options(opts: &mut ConnectOptions, max: u32, explicit_mode: bool, role: SqliteRole) {
    opts.max_connections(max).map_sqlx_sqlite_opts(move |o| {
        let o = o
            .journal_mode(SqliteJournalMode::Wal)
            // A commit reaches the disk before it returns: ingest acks a
            // report once its batch committed, and the broker then forgets
            // it, so it must outlast a power cut too. (`NORMAL` syncs the
            // WAL only at checkpoints.) Under load that is one sync per
            // batch, as PostgreSQL does by default.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(SQLITE_BUSY_TIMEOUT)
            .foreign_keys(true)
            // Statement journals of multi-row inserts in memory, not in
            // temporary files.
            .pragma("temp_store", "memory")
            // A commit checkpoints only past this; `Store::checkpoint` does
            // it beside the writer. One threshold for every connection: a
            // lower one on the pool would make any API write that commits
            // during a flood copy the writer's WAL in its request.
            .pragma("wal_autocheckpoint", SQLITE_WAL_AUTOCHECKPOINT);
        let o = match role {
            SqliteRole::Pool => o,
            SqliteRole::Writer => o
                // A batch's changed pages stay in memory until it commits,
                // instead of going to the WAL early when they outgrow the
                // page cache (and again when changed once more). A batch's
                // size is capped (`meshtable::ingest::BATCH_MAX_BYTES`).
                .pragma("cache_spill", "off")
                // Rows a statement may return before the connection's
                // thread waits for them to be read: a batch's inserts return
                // a row per sample, and with SQLite's default of 50 the
                // thread stopped every 50 rows to let the batch catch up.
                .row_buffer_size(SQLITE_WRITER_ROW_BUFFER),
        };
        if explicit_mode {
            o
        } else {
            o.create_if_missing(true)
        }
    });
}

/// Rows a write statement returns before the writer's thread waits for
/// them to be read: more than a batch (`meshtable::ingest::BATCH_MAX`).
const SQLITE_WRITER_ROW_BUFFER: usize = 16_384;

/// WAL pages (~128 MiB; SQLite's default is 1000) after which a commit
/// checkpoints. Under a continuous flood the WAL grows to this: SQLite
/// starts a WAL over only in a write transaction that began with all of it
/// copied, and ingest begins the next batch right after a commit, before
/// [`Store::checkpoint`] could copy it. That checkpoint has then copied
/// most of the WAL, so the writer's own has little left to do. At 8000
/// pages the writer checkpointed four times as often, and ingest was
/// slower.
const SQLITE_WAL_AUTOCHECKPOINT: &str = "32000";

/// Connections to a SQLite file: WAL lets readers run beside the one writer.
const SQLITE_FILE_CONNECTIONS: u32 = 4;

/// The database behind the controller. Cheap to clone (a connection pool).
#[derive(Clone, Debug)]
pub struct Store {
    db: DatabaseConnection,
    /// Where write transactions begin: on a SQLite file, a connection of its
    /// own, so that its page cache stays warm (the pool hands out its
    /// connections in turn, and each finds its cache stale after another
    /// wrote); otherwise the pool.
    writer: DatabaseConnection,
    backend: Backend,
    /// Tolerance between a live report's clock and its reception (see [`clock`]).
    clock_max_skew_ms: i64,
    /// Each node's latest committed sample, what the next report's rates
    /// derive from (see [`batch::PrevCache`]).
    prev_cache: std::sync::Arc<std::sync::Mutex<batch::PrevCache>>,
    /// (network, node) keys whose node row the batch writer has read: it
    /// does not insert them again (see `Store::record_batch`).
    known_nodes: std::sync::Arc<std::sync::Mutex<std::collections::HashSet<(String, String)>>>,
}

/// What a [`Store::checkpoint`] found and did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WalCheckpoint {
    /// Another checkpoint was running: this one did nothing.
    pub busy: bool,
    /// Pages in the WAL.
    pub wal_pages: i64,
    /// Pages of the WAL now in the database file (all of them unless a
    /// reader still needs older ones, or the writer committed meanwhile).
    pub copied_pages: i64,
}

/// Where a `sqlite:` URL points.
#[derive(Debug, PartialEq, Eq)]
enum SqliteTarget {
    Memory,
    File {
        path: PathBuf,
        /// The URL sets `mode=` itself; otherwise `rwc` is implied.
        explicit_mode: bool,
    },
}

fn sqlite_target(url: &str) -> SqliteTarget {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    let (db, params) = rest.split_once('?').unwrap_or((rest, ""));
    let params: Vec<(&str, &str)> = params
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .collect();
    if db == ":memory:" || params.contains(&("mode", "memory")) {
        return SqliteTarget::Memory;
    }
    SqliteTarget::File {
        path: PathBuf::from(db),
        explicit_mode: params.iter().any(|(k, _)| *k == "mode"),
    }
}

fn create_parent_dir(path: &Path) -> Result<(), StoreError> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => {
            std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
                path: dir.to_owned(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// Opens the pool. Processes opening one new SQLite file at the same moment
/// can find it locked while another switches it to WAL (SQLite reports that
/// at once instead of waiting): try again shortly.
async fn connect_pool(
    opts: ConnectOptions,
    backend: Backend,
) -> Result<DatabaseConnection, StoreError> {
    const ATTEMPTS: u32 = 10;
    let mut attempt = 1;
    loop {
        match Database::connect(opts.clone()).await {
            Ok(db) => return Ok(db),
            Err(e) if backend == Backend::Sqlite && is_sqlite_busy(&e) && attempt < ATTEMPTS => {
                tracing::debug!(attempt, error = %e, "sqlite database busy, retrying");
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
                attempt += 1;
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// SQLITE_BUSY and its extended codes (BUSY_RECOVERY, BUSY_SNAPSHOT, BUSY_TIMEOUT).
fn is_sqlite_busy(e: &DbErr) -> bool {
    let (DbErr::Conn(RuntimeErr::SqlxError(e))
    | DbErr::Exec(RuntimeErr::SqlxError(e))
    | DbErr::Query(RuntimeErr::SqlxError(e))) = e
    else {
        return false;
    };
    e.as_database_error()
        .and_then(|d| d.code())
        .and_then(|c| c.parse::<i32>().ok())
        .is_some_and(|c| c & 0xff == 5)
}

/// Applies pending migrations. Several controllers starting at once on one
/// database race to migrate it: each step is one transaction, so a loser
/// fails cleanly and finds the work done when it looks again.
async fn migrate(db: &DatabaseConnection) -> Result<(), StoreError> {
    const ATTEMPTS: u32 = 5;
    let mut attempt = 1;
    loop {
        let Err(e) = Migrator::up(db, None).await else {
            return Ok(());
        };
        if let Ok(pending) = Migrator::get_pending_migrations(db).await
            && pending.is_empty()
        {
            tracing::debug!(error = %e, "database migrated concurrently by another process");
            return Ok(());
        }
        if attempt == ATTEMPTS {
            return Err(StoreError::Migration(e));
        }
        tracing::warn!(attempt, error = %e, "database migration failed, retrying");
        tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
        attempt += 1;
    }
}

impl Store {
    /// Connects and applies all pending migrations.
    ///
    /// - `sqlite://path` or `sqlite:path` (`sqlite:///abs/path` for an absolute
    ///   one): the file and its parent directories are created if missing
    ///   (`mode=rwc` is implied unless the URL sets a mode); WAL journal,
    ///   `synchronous=FULL`, a busy timeout, foreign keys, statement
    ///   journals in memory, a checkpoint after a commit only past 32000
    ///   WAL pages (see [`Store::checkpoint`]); write transactions begin on
    ///   a connection of their own.
    /// - `sqlite::memory:`: a private in-memory database, on one connection
    ///   that is never recycled.
    /// - `postgres://...` or `postgresql://...`.
    pub async fn connect(url: &str) -> Result<Store, StoreError> {
        let mut opts = ConnectOptions::new(url);
        opts.sqlx_logging(false);
        // SQLite files: the writes' own connection (see `Store::writer`).
        let mut writer_opts = None;
        let backend = if url.starts_with("sqlite:") {
            // Reject what sqlx would reject, before touching the file system.
            SqliteConnectOptions::from_str(url)
                .map_err(|e| StoreError::InvalidUrl(e.to_string()))?;
            match sqlite_target(url) {
                SqliteTarget::Memory => {
                    // Every connection would see its own empty database, and
                    // it vanishes with its last connection: keep exactly one.
                    opts.max_connections(1)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None)
                        .map_sqlx_sqlite_opts(|o| o.busy_timeout(SQLITE_BUSY_TIMEOUT));
                }
                SqliteTarget::File {
                    path,
                    explicit_mode,
                } => {
                    create_parent_dir(&path)?;
                    sqlite_file_options(
                        &mut opts,
                        SQLITE_FILE_CONNECTIONS,
                        explicit_mode,
                        SqliteRole::Pool,
                    );
                    let mut w = ConnectOptions::new(url);
                    w.sqlx_logging(false)
                        .min_connections(1)
                        .idle_timeout(None)
                        .max_lifetime(None);
                    sqlite_file_options(&mut w, 1, explicit_mode, SqliteRole::Writer);
                    writer_opts = Some(w);
                }
            }
            Backend::Sqlite
        } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres
        } else {
            return Err(StoreError::InvalidUrl(
                "expected sqlite://path, sqlite::memory: or postgres://...".to_owned(),
            ));
        };
        let db = connect_pool(opts, backend).await?;
        migrate(&db).await?;
        let writer = match writer_opts {
            Some(w) => connect_pool(w, backend).await?,
            None => db.clone(),
        };
        tracing::debug!(backend = ?backend, "database ready");
        Ok(Store {
            db,
            writer,
            backend,
            clock_max_skew_ms: clock::DEFAULT_MAX_SKEW_MS,
            prev_cache: Default::default(),
            known_nodes: Default::default(),
        })
    }

    /// This store with another tolerance between a live report's clock and
    /// its reception time (default [`clock::DEFAULT_MAX_SKEW_MS`], five
    /// minutes); see [`clock`].
    pub fn with_clock_max_skew_ms(mut self, ms: i64) -> Store {
        self.clock_max_skew_ms = ms.max(0);
        self
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Checks that the database answers (for health checks).
    pub async fn ping(&self) -> Result<(), StoreError> {
        Ok(self.db.ping().await?)
    }

    /// On a SQLite file, copies the pages the WAL holds into the database
    /// file, beside the writer and without waiting for it (a passive
    /// checkpoint); a write transaction that begins after it starts the WAL
    /// over. Called every moment or so, it keeps that work off ingest's
    /// commits: a commit checkpoints only when the WAL grew past
    /// [`SQLITE_WAL_AUTOCHECKPOINT`] pages. `None` on other databases.
    pub async fn checkpoint(&self) -> Result<Option<WalCheckpoint>, StoreError> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        let row = self
            .db
            .query_one_raw(sea_orm::Statement::from_string(
                sea_orm::DbBackend::Sqlite,
                "PRAGMA wal_checkpoint(PASSIVE)",
            ))
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let (busy, wal_pages, copied_pages): (i64, i64, i64) = (
            row.try_get_by_index(0)?,
            row.try_get_by_index(1)?,
            row.try_get_by_index(2)?,
        );
        // -1: not in WAL mode (an in-memory database).
        if wal_pages < 0 {
            return Ok(None);
        }
        Ok(Some(WalCheckpoint {
            busy: busy != 0,
            wal_pages,
            copied_pages,
        }))
    }

    /// Closes the connection pool, waiting for connections in use. Clones of
    /// this store fail afterwards.
    pub async fn close(self) -> Result<(), StoreError> {
        // The writer may be the pool itself: closing a pool twice is harmless.
        self.writer.close().await?;
        Ok(self.db.close().await?)
    }
}

#[cfg(test)]
mod tests {
    use sea_orm::{ConnectionTrait, Statement};

    use super::*;

    /// `PRAGMA name` on `conn`, as a number.
    async fn pragma(conn: &impl ConnectionTrait, name: &str) -> i64 {
        let row = conn
            .query_one_raw(Statement::from_string(
                sea_orm::DbBackend::Sqlite,
                format!("PRAGMA {name}"),
            ))
            .await
            .unwrap()
            .unwrap();
        row.try_get_by_index(0).unwrap()
    }

    /// Every connection to a SQLite file, the writer's too, syncs each
    /// commit to the disk (`synchronous=FULL`, 2): an acked report must
    /// outlast a power cut, not only a crash of the controller.
    #[tokio::test]
    async fn sqlite_commits_reach_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        let store = Store::connect(&url).await.unwrap();
        assert_eq!(pragma(&store.db, "synchronous").await, 2);
        let txn = store.begin_write().await.unwrap();
        assert_eq!(pragma(&txn, "synchronous").await, 2);
        txn.rollback().await.unwrap();
        store.close().await.unwrap();
    }

    #[test]
    fn sqlite_targets() {
        #[track_caller]
        fn check(url: &str, expect: SqliteTarget) {
            assert_eq!(sqlite_target(url), expect, "{url}");
        }
        let file = |p: &str, explicit_mode| SqliteTarget::File {
            path: PathBuf::from(p),
            explicit_mode,
        };
        check("sqlite::memory:", SqliteTarget::Memory);
        check("sqlite://:memory:", SqliteTarget::Memory);
        check("sqlite://?mode=memory", SqliteTarget::Memory);
        check("sqlite://data/m.db", file("data/m.db", false));
        check("sqlite:data/m.db", file("data/m.db", false));
        check("sqlite://./data/m.db", file("./data/m.db", false));
        check("sqlite:///var/lib/m.db", file("/var/lib/m.db", false));
        check(
            "sqlite:///var/lib/m.db?mode=rwc",
            file("/var/lib/m.db", true),
        );
        check("sqlite://m.db?mode=ro", file("m.db", true));
    }
}
