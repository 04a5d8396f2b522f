//! meshtable's database schema, as append-only, timestamp-named
//! [sea-orm-migration](sea_orm_migration) steps.
//!
//! A step, once released, is never edited: a schema change is a new file
//! `mYYYYMMDD_NNNNNN_what.rs`, added at the end of [`Migrator::migrations`].
//! Steps use the schema builder, so the same step runs on SQLite and
//! PostgreSQL, except where a feature has no builder form (fill factors,
//! triggers): such a step writes PostgreSQL's SQL.
//!
//! Only this crate and `meshtable-store` know the schema; `meshtable-store`
//! runs [`Migrator::up`] when it connects.

pub use sea_orm_migration::MigratorTrait;
use sea_orm_migration::prelude::*;

mod m20261128_000001_create_tables;
mod m20261128_100000_rollups;
mod m20261128_300000_node_trust;
mod m20261128_400000_accounts;
mod m20261128_500000_topology_liveness;
mod m20261128_600000_telemetry_base;
mod m20261128_700000_alerts;
mod m20261128_800000_link_reference;
mod m20261129_100000_fillfactor;
mod m20261129_200000_lean_ingest_tables;
mod m20261130_100000_interfaces_in_sample;
mod m20261201_100000_clients_in_sample;

/// Every migration step, oldest first.
#[derive(Debug, Clone, Copy, Default)]
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20261128_000001_create_tables::Migration),
            Box::new(m20261128_100000_rollups::Migration),
            Box::new(m20261128_300000_node_trust::Migration),
            Box::new(m20261128_400000_accounts::Migration),
            Box::new(m20261128_500000_topology_liveness::Migration),
            Box::new(m20261128_600000_telemetry_base::Migration),
            Box::new(m20261128_700000_alerts::Migration),
            Box::new(m20261128_800000_link_reference::Migration),
            Box::new(m20261129_100000_fillfactor::Migration),
            Box::new(m20261129_200000_lean_ingest_tables::Migration),
            Box::new(m20261130_100000_interfaces_in_sample::Migration),
            Box::new(m20261201_100000_clients_in_sample::Migration),
        ]
    }
}

#[cfg(test)]
mod tests {
    use sea_orm_migration::sea_orm::{ConnectionTrait, Database, DatabaseConnection, Statement};

    use super::*;

    #[test]
    fn steps_are_timestamp_named_and_in_order() {
        let names: Vec<String> = Migrator::migrations()
            .iter()
            .map(|m| m.name().to_owned())
            .collect();
        for name in &names {
            let b = name.as_bytes();
            let ok = b.len() > 17
                && b[0] == b'm'
                && b[1..9].iter().all(u8::is_ascii_digit)
                && b[9] == b'_'
                && b[10..16].iter().all(u8::is_ascii_digit)
                && b[16] == b'_'
                && b[17..]
                    .iter()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'_');
            assert!(ok, "{name} is not named mYYYYMMDD_NNNNNN_what");
        }
        assert!(
            names.windows(2).all(|w| w[0] < w[1]),
            "steps out of order: {names:?}"
        );
    }

    #[tokio::test]
    async fn up_down_up() -> Result<(), DbErr> {
        up_down_up_on("sqlite::memory:").await
    }

    /// The same on PostgreSQL, whose steps carry SQL of their own (see
    /// [`on_postgres`]).
    #[tokio::test]
    async fn up_down_up_postgres() -> Result<(), DbErr> {
        on_postgres("meshtable_migrations", |url| async move {
            up_down_up_on(&url).await
        })
        .await
    }

    #[tokio::test]
    async fn interfaces_move_into_their_sample_and_back() -> Result<(), DbErr> {
        interfaces_move_on("sqlite::memory:").await
    }

    /// The same on PostgreSQL (see [`on_postgres`]).
    #[tokio::test]
    async fn interfaces_move_into_their_sample_and_back_postgres() -> Result<(), DbErr> {
        on_postgres("meshtable_migrations_ifaces", |url| async move {
            interfaces_move_on(&url).await
        })
        .await
    }

    /// Runs `test` on a database of its own (`{prefix}_{pid}`, dropped
    /// afterwards) when `MESHTABLE_TEST_DATABASE_URL` names a PostgreSQL
    /// server (as `.ci/run` does); else does nothing.
    async fn on_postgres<F, Fut>(prefix: &str, test: F) -> Result<(), DbErr>
    where
        F: FnOnce(String) -> Fut,
        Fut: std::future::Future<Output = Result<(), DbErr>>,
    {
        let Ok(admin_url) = std::env::var("MESHTABLE_TEST_DATABASE_URL") else {
            return Ok(());
        };
        let admin = Database::connect(admin_url.as_str()).await?;
        let name = format!("{prefix}_{}", std::process::id());
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
            .await?;
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await?;
        let url = match admin_url.rsplit_once('/') {
            Some((server, _)) => format!("{server}/{name}"),
            None => return Err(DbErr::Custom(format!("no database in {admin_url}"))),
        };
        let result = test(url).await;
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        result
    }

    /// A node `a` of network `n` with two samples (ids 1 and 2, seq 1 and 2,
    /// boot `b`), as the steps before the interfaces and clients moves store them.
    const TWO_SAMPLES: &str = "INSERT INTO network (id, first_seen_ms) VALUES ('n', 1); \
        INSERT INTO node (network, node, status, status_since_ms, first_seen_ms, last_seen_ms) \
          VALUES ('n', 'a', 'online', 1, 1, 1); \
        INSERT INTO sample (node_id, boot_id, seq, t_ms, time_ms, received_ms, clock_ok, \
          uptime_ms, load1, load5, load15, cpu_user, cpu_nice, cpu_system, cpu_idle, \
          cpu_iowait, cpu_irq, cpu_softirq, cpu_steal, mem_total, mem_available, \
          rootfs_size, rootfs_free, dropped) VALUES \
          (1, 'b', 1, 1, 1, 1, true, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0), \
          (1, 'b', 2, 2, 2, 2, true, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0);";

    /// Runs the steps before `name`; returns how many steps from `name` on
    /// `down` has to undo to go back there.
    async fn up_to(db: &DatabaseConnection, name: &str) -> Result<u32, DbErr> {
        let steps = Migrator::migrations();
        let step = steps
            .iter()
            .position(|m| m.name() == name)
            .expect("the step");
        let count = |n: usize| <u32 as std::convert::TryFrom<usize>>::try_from(n).expect("few");
        Migrator::up(db, Some(count(step))).await?;
        Ok(count(steps.len() - step))
    }

    /// Rows stored before `m20261130_100000_interfaces_in_sample` end up in
    /// `sample.interfaces`, sorted by name, and `down` brings them back.
    async fn interfaces_move_on(url: &str) -> Result<(), DbErr> {
        let db = Database::connect(url).await?;
        let down = up_to(&db, "m20261130_100000_interfaces_in_sample").await?;
        db.execute_unprepared(&format!(
            "{TWO_SAMPLES} \
             INSERT INTO interface_sample (sample_id, name, rx_bytes, tx_bytes, rx_packets, \
               tx_packets, rx_errors, tx_errors, rx_dropped, tx_dropped, rx_bps, tx_bps) VALUES \
               (2, 'wlan0', 10, 20, 3, 4, 5, 6, 7, 8, 1234.5, NULL), \
               (2, 'br-lan', 9223372036854775807, 0, 0, 0, 0, 0, 0, 0, NULL, 8000);"
        ))
        .await?;
        Migrator::up(&db, None).await?;
        let stored: Vec<String> = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT interfaces FROM sample ORDER BY id",
            ))
            .await?
            .iter()
            .map(|r| r.try_get::<String>("", "interfaces"))
            .collect::<Result<_, _>>()?;
        // Decoded as the store reads it (PostgreSQL writes 8000.0 as 8000).
        type Iface = (
            String,
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            i64,
            Option<f64>,
            Option<f64>,
        );
        let parsed: Vec<Vec<Iface>> = stored
            .iter()
            .map(|s| serde_json::from_str(s).expect("valid JSON"))
            .collect();
        let name = |s: &str| s.to_owned();
        assert_eq!(
            parsed,
            vec![
                vec![],
                vec![
                    (
                        name("br-lan"),
                        i64::MAX,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        0,
                        None,
                        Some(8000.0)
                    ),
                    (name("wlan0"), 10, 20, 3, 4, 5, 6, 7, 8, Some(1234.5), None),
                ]
            ]
        );
        Migrator::down(&db, Some(down)).await?;
        let back = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT sample_id, name, rx_bytes, tx_dropped, rx_bps, tx_bps \
                 FROM interface_sample ORDER BY sample_id, name",
            ))
            .await?;
        type Row = (i64, String, i64, i64, Option<f64>, Option<f64>);
        let rows: Vec<Row> = back
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("", "sample_id")?,
                    r.try_get("", "name")?,
                    r.try_get("", "rx_bytes")?,
                    r.try_get("", "tx_dropped")?,
                    r.try_get("", "rx_bps")?,
                    r.try_get("", "tx_bps")?,
                ))
            })
            .collect::<Result<_, DbErr>>()?;
        assert_eq!(
            rows,
            vec![
                (2, "br-lan".to_owned(), i64::MAX, 0, None, Some(8000.0)),
                (2, "wlan0".to_owned(), 10, 8, Some(1234.5), None),
            ]
        );
        db.close().await?;
        Ok(())
    }

    #[tokio::test]
    async fn client_counts_move_into_their_sample_and_back() -> Result<(), DbErr> {
        clients_move_on("sqlite::memory:").await
    }

    /// The same on PostgreSQL (see [`on_postgres`]).
    #[tokio::test]
    async fn client_counts_move_into_their_sample_and_back_postgres() -> Result<(), DbErr> {
        on_postgres("meshtable_migrations_clients", |url| async move {
            clients_move_on(&url).await
        })
        .await
    }

    /// Counts stored before `m20261201_100000_clients_in_sample` end up in
    /// their sample's row; counts of a sample that is gone are dropped; and
    /// `down` brings back the rows of the samples that have counts.
    async fn clients_move_on(url: &str) -> Result<(), DbErr> {
        let db = Database::connect(url).await?;
        let down = up_to(&db, "m20261201_100000_clients_in_sample").await?;
        db.execute_unprepared(&format!(
            "{TWO_SAMPLES} \
             INSERT INTO client_count (node_id, boot_id, seq, t_ms, total, wifi24, wifi5, other) \
               VALUES (1, 'b', 2, 2, 12, 7, 4, 1), (1, 'b', 0, 0, 99, 99, 0, 0);"
        ))
        .await?;
        Migrator::up(&db, None).await?;
        type Counts = (i64, Option<i32>, Option<i32>, Option<i32>, Option<i32>);
        let stored: Vec<Counts> = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT seq, clients_total, clients_wifi24, clients_wifi5, clients_other \
                 FROM sample ORDER BY seq",
            ))
            .await?
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("", "seq")?,
                    r.try_get("", "clients_total")?,
                    r.try_get("", "clients_wifi24")?,
                    r.try_get("", "clients_wifi5")?,
                    r.try_get("", "clients_other")?,
                ))
            })
            .collect::<Result<_, DbErr>>()?;
        assert_eq!(
            stored,
            vec![
                (1, None, None, None, None),
                (2, Some(12), Some(7), Some(4), Some(1))
            ]
        );
        Migrator::down(&db, Some(down)).await?;
        let back = db
            .query_all_raw(Statement::from_string(
                db.get_database_backend(),
                "SELECT seq, t_ms, total, wifi24, wifi5, other FROM client_count ORDER BY seq",
            ))
            .await?;
        type Row = (i64, i64, i32, i32, i32, i32);
        let rows: Vec<Row> = back
            .iter()
            .map(|r| {
                Ok((
                    r.try_get("", "seq")?,
                    r.try_get("", "t_ms")?,
                    r.try_get("", "total")?,
                    r.try_get("", "wifi24")?,
                    r.try_get("", "wifi5")?,
                    r.try_get("", "other")?,
                ))
            })
            .collect::<Result<_, DbErr>>()?;
        assert_eq!(rows, vec![(2, 2, 12, 7, 4, 1)]);
        db.close().await?;
        Ok(())
    }

    async fn up_down_up_on(url: &str) -> Result<(), DbErr> {
        let db = Database::connect(url).await?;
        let all = Migrator::migrations().len();
        Migrator::up(&db, None).await?;
        assert_eq!(Migrator::get_applied_migrations(&db).await?.len(), all);
        assert!(Migrator::get_pending_migrations(&db).await?.is_empty());
        // Up again is a no-op.
        Migrator::up(&db, None).await?;
        Migrator::down(&db, None).await?;
        assert_eq!(Migrator::get_pending_migrations(&db).await?.len(), all);
        Migrator::up(&db, None).await?;
        assert!(Migrator::get_pending_migrations(&db).await?.is_empty());
        db.close().await?;
        Ok(())
    }
}
