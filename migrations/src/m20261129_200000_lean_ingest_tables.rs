//! Less work per stored report in the tables ingest writes with every one.
//!
//! - On PostgreSQL, `interface_sample` loses its foreign key to `sample`,
//!   and `sample` its foreign key to `node`. Each was checked for every row
//!   inserted (an index lookup and a row lock on the referenced row), but
//!   ingest inserts interface rows only with the sample it has just
//!   inserted, and samples only for nodes whose rows its batch holds
//!   locked. What the keys did on deletion, taking a node's samples and a
//!   sample's interfaces with them, statement triggers on `node` and
//!   `sample` now do: they cost only when rows are deleted.
//! - `boot_anchor` loses its index on `updated_ms`. Every report rewrote
//!   that index entry; on PostgreSQL the indexed column also kept the update
//!   from staying on its page (a heap-only tuple update). Only retention,
//!   once a day, filters on the column, over one row per node and boot.
//!
//! SQLite keeps its foreign keys: a check there is a rowid lookup, measured
//! as no cost, and dropping one would mean rebuilding the table.
//!
//! Raw SQL on PostgreSQL: triggers have no schema-builder form.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const POSTGRES_UP: [&str; 6] = [
    r#"ALTER TABLE "interface_sample" DROP CONSTRAINT "fk_interface_sample_sample""#,
    r#"CREATE FUNCTION "sample_deletes_interfaces"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN DELETE FROM "interface_sample" WHERE "sample_id" IN (SELECT "id" FROM gone); RETURN NULL; END $$"#,
    r#"CREATE TRIGGER "sample_deletes_interfaces" AFTER DELETE ON "sample" REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION "sample_deletes_interfaces"()"#,
    r#"ALTER TABLE "sample" DROP CONSTRAINT "fk_sample_node""#,
    r#"CREATE FUNCTION "node_deletes_samples"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN DELETE FROM "sample" WHERE "node_id" IN (SELECT "id" FROM gone); RETURN NULL; END $$"#,
    r#"CREATE TRIGGER "node_deletes_samples" AFTER DELETE ON "node" REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION "node_deletes_samples"()"#,
];

const POSTGRES_DOWN: [&str; 6] = [
    r#"DROP TRIGGER "node_deletes_samples" ON "node""#,
    r#"DROP FUNCTION "node_deletes_samples"()"#,
    r#"ALTER TABLE "sample" ADD CONSTRAINT "fk_sample_node" FOREIGN KEY ("node_id") REFERENCES "node" ("id") ON DELETE CASCADE"#,
    r#"DROP TRIGGER "sample_deletes_interfaces" ON "sample""#,
    r#"DROP FUNCTION "sample_deletes_interfaces"()"#,
    r#"ALTER TABLE "interface_sample" ADD CONSTRAINT "fk_interface_sample_sample" FOREIGN KEY ("sample_id") REFERENCES "sample" ("id") ON DELETE CASCADE"#,
];

// The trait's signatures elide SchemaManager's lifetime; async_trait needs them to match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("ix_boot_anchor_updated")
                    .table(BootAnchor::Table)
                    .to_owned(),
            )
            .await?;
        if manager.get_database_backend() == DbBackend::Postgres {
            for sql in POSTGRES_UP {
                manager.get_connection().execute_unprepared(sql).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        if manager.get_database_backend() == DbBackend::Postgres {
            for sql in POSTGRES_DOWN {
                manager.get_connection().execute_unprepared(sql).await?;
            }
        }
        manager
            .create_index(
                Index::create()
                    .name("ix_boot_anchor_updated")
                    .table(BootAnchor::Table)
                    .col(BootAnchor::UpdatedMs)
                    .to_owned(),
            )
            .await
    }
}

#[derive(DeriveIden)]
enum BootAnchor {
    Table,
    UpdatedMs,
}
