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
        ]
    }
}

#[cfg(test)]
mod tests {
    use sea_orm_migration::sea_orm::{ConnectionTrait, Database};

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

    /// The same on PostgreSQL, whose steps carry SQL of their own, in a
    /// database of its own, when `MESHTABLE_TEST_DATABASE_URL` names a
    /// server (as `.ci/run` does).
    #[tokio::test]
    async fn up_down_up_postgres() -> Result<(), DbErr> {
        let Ok(admin_url) = std::env::var("MESHTABLE_TEST_DATABASE_URL") else {
            return Ok(());
        };
        let admin = Database::connect(admin_url.as_str()).await?;
        let name = format!("meshtable_migrations_{}", std::process::id());
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
        let result = up_down_up_on(&url).await;
        admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await?;
        result
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
