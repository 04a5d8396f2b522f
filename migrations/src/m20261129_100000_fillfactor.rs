//! Room for in-place updates of the rows ingest rewrites with every report.
//!
//! Every batch updates each reporting node's `node` row (liveness), its
//! `telemetry_base` (the last full report, for compact telemetry) and its
//! `boot_anchor`. PostgreSQL can update a row on its own page without
//! touching indexes that do not cover the changed columns (a heap-only
//! tuple update) only when the page has free space, and tables fill their
//! pages completely by default. A fill factor of 70 leaves 30 % of each page
//! for those updates. PostgreSQL only: SQLite updates rows in place anyway.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The tables, and the fill factor they get.
const TABLES: [&str; 3] = ["node", "telemetry_base", "boot_anchor"];
const FILLFACTOR: u32 = 70;

// The trait's signatures elide SchemaManager's lifetime; async_trait needs them to match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set(manager, Some(FILLFACTOR)).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        set(manager, None).await
    }
}

async fn set(manager: &SchemaManager<'_>, fillfactor: Option<u32>) -> Result<(), DbErr> {
    if manager.get_database_backend() != DbBackend::Postgres {
        return Ok(());
    }
    let db = manager.get_connection();
    for table in TABLES {
        let sql = match fillfactor {
            Some(f) => format!("ALTER TABLE \"{table}\" SET (fillfactor = {f})"),
            None => format!("ALTER TABLE \"{table}\" RESET (fillfactor)"),
        };
        db.execute_unprepared(&sql).await?;
    }
    Ok(())
}
