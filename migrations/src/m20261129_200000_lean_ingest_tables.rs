//! Less work per stored report in the tables ingest writes with every one.
//!
//! - `interface_sample` loses its foreign key to `sample`. The key was
//!   checked for each of a report's interface rows (on PostgreSQL a lookup
//!   and a row lock on the sample each time), but ingest inserts interface
//!   rows only with the sample it has just inserted. What the key did on
//!   deletion, taking a sample's interfaces with it, a trigger on `sample`
//!   now does: it costs only when samples are deleted.
//! - On PostgreSQL, `sample` loses its foreign key to `node` the same way,
//!   for the same reason: a trigger on `node` deletes a removed node's
//!   samples. (A batch holds its nodes' rows locked while it inserts their
//!   samples, so a node cannot go between the two. SQLite's check is a
//!   cheap rowid lookup, and dropping it would mean rebuilding the table.)
//! - `boot_anchor` loses its index on `updated_ms`. Every report rewrote
//!   that index entry; on PostgreSQL the indexed column also kept the update
//!   from staying on its page (a heap-only tuple update). Only retention,
//!   once a day, filters on the column, over one row per node and boot.
//! - On SQLite, `interface_sample`, `boot_anchor` and `telemetry_base` are
//!   rebuilt `WITHOUT ROWID`: a row is stored once, in its primary key's
//!   b-tree, instead of in the table and again in the key's index.
//!
//! Raw SQL: triggers and `WITHOUT ROWID` have no schema-builder form.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

/// The rebuilt SQLite tables, each with its new and its old definition.
const SQLITE_TABLES: [(&str, &str, &str); 3] = [
    (
        "interface_sample",
        r#"CREATE TABLE "interface_sample" ( "sample_id" integer NOT NULL, "name" text NOT NULL, "rx_bytes" integer NOT NULL, "tx_bytes" integer NOT NULL, "rx_packets" integer NOT NULL, "tx_packets" integer NOT NULL, "rx_errors" integer NOT NULL, "tx_errors" integer NOT NULL, "rx_dropped" integer NOT NULL, "tx_dropped" integer NOT NULL, "rx_bps" double NULL, "tx_bps" double NULL, PRIMARY KEY ("sample_id", "name") ) WITHOUT ROWID"#,
        r#"CREATE TABLE "interface_sample" ( "sample_id" integer NOT NULL, "name" text NOT NULL, "rx_bytes" integer NOT NULL, "tx_bytes" integer NOT NULL, "rx_packets" integer NOT NULL, "tx_packets" integer NOT NULL, "rx_errors" integer NOT NULL, "tx_errors" integer NOT NULL, "rx_dropped" integer NOT NULL, "tx_dropped" integer NOT NULL, "rx_bps" double NULL, "tx_bps" double NULL, PRIMARY KEY ("sample_id", "name"), FOREIGN KEY ("sample_id") REFERENCES "sample" ("id") ON DELETE CASCADE )"#,
    ),
    (
        "boot_anchor",
        r#"CREATE TABLE "boot_anchor" ( "node_id" integer NOT NULL, "boot_id" text NOT NULL, "anchor_ms" integer NOT NULL, "source" text NOT NULL, "skew_ms" integer NULL, "updated_ms" integer NOT NULL, PRIMARY KEY ("node_id", "boot_id"), FOREIGN KEY ("node_id") REFERENCES "node" ("id") ON DELETE CASCADE ) WITHOUT ROWID"#,
        r#"CREATE TABLE "boot_anchor" ( "node_id" integer NOT NULL, "boot_id" text NOT NULL, "anchor_ms" integer NOT NULL, "source" text NOT NULL, "skew_ms" integer NULL, "updated_ms" integer NOT NULL, PRIMARY KEY ("node_id", "boot_id"), FOREIGN KEY ("node_id") REFERENCES "node" ("id") ON DELETE CASCADE )"#,
    ),
    (
        "telemetry_base",
        r#"CREATE TABLE "telemetry_base" ( "network" text NOT NULL, "node" text NOT NULL, "boot_id" text NOT NULL, "seq" integer NOT NULL, "report" blob NOT NULL, "updated_ms" integer NOT NULL, PRIMARY KEY ("network", "node") ) WITHOUT ROWID"#,
        r#"CREATE TABLE "telemetry_base" ( "network" text NOT NULL, "node" text NOT NULL, "boot_id" text NOT NULL, "seq" integer NOT NULL, "report" blob NOT NULL, "updated_ms" integer NOT NULL, PRIMARY KEY ("network", "node") )"#,
    ),
];

const SQLITE_TRIGGER: &str = r#"CREATE TRIGGER "sample_deletes_interfaces" AFTER DELETE ON "sample" BEGIN DELETE FROM "interface_sample" WHERE "sample_id" = OLD."id"; END"#;

const POSTGRES_UP: [&str; 7] = [
    r#"ALTER TABLE "interface_sample" DROP CONSTRAINT "fk_interface_sample_sample""#,
    r#"ALTER TABLE "sample" DROP CONSTRAINT "fk_sample_node""#,
    r#"CREATE FUNCTION "node_deletes_samples"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN DELETE FROM "sample" WHERE "node_id" IN (SELECT "id" FROM gone); RETURN NULL; END $$"#,
    r#"CREATE TRIGGER "node_deletes_samples" AFTER DELETE ON "node" REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION "node_deletes_samples"()"#,
    r#"CREATE FUNCTION "sample_deletes_interfaces"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN DELETE FROM "interface_sample" WHERE "sample_id" IN (SELECT "id" FROM gone); RETURN NULL; END $$"#,
    r#"CREATE TRIGGER "sample_deletes_interfaces" AFTER DELETE ON "sample" REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION "sample_deletes_interfaces"()"#,
    r#"DROP INDEX "ix_boot_anchor_updated""#,
];

const POSTGRES_DOWN: [&str; 7] = [
    r#"DROP TRIGGER "sample_deletes_interfaces" ON "sample""#,
    r#"DROP FUNCTION "sample_deletes_interfaces"()"#,
    r#"DROP TRIGGER "node_deletes_samples" ON "node""#,
    r#"DROP FUNCTION "node_deletes_samples"()"#,
    r#"ALTER TABLE "sample" ADD CONSTRAINT "fk_sample_node" FOREIGN KEY ("node_id") REFERENCES "node" ("id") ON DELETE CASCADE"#,
    r#"ALTER TABLE "interface_sample" ADD CONSTRAINT "fk_interface_sample_sample" FOREIGN KEY ("sample_id") REFERENCES "sample" ("id") ON DELETE CASCADE"#,
    r#"CREATE INDEX "ix_boot_anchor_updated" ON "boot_anchor" ("updated_ms")"#,
];

// The trait's signatures elide SchemaManager's lifetime; async_trait needs them to match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Postgres {
            for sql in POSTGRES_UP {
                db.execute_unprepared(sql).await?;
            }
            return Ok(());
        }
        db.execute_unprepared(r#"DROP INDEX "ix_boot_anchor_updated""#)
            .await?;
        for (table, new, _) in SQLITE_TABLES {
            rebuild(manager, table, new).await?;
        }
        db.execute_unprepared(SQLITE_TRIGGER).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Postgres {
            for sql in POSTGRES_DOWN {
                db.execute_unprepared(sql).await?;
            }
            return Ok(());
        }
        db.execute_unprepared(r#"DROP TRIGGER "sample_deletes_interfaces""#)
            .await?;
        for (table, _, old) in SQLITE_TABLES {
            rebuild(manager, table, old).await?;
        }
        db.execute_unprepared(
            r#"CREATE INDEX "ix_boot_anchor_updated" ON "boot_anchor" ("updated_ms")"#,
        )
        .await?;
        Ok(())
    }
}

/// Rebuilds SQLite table `table` as `create` defines it (a `CREATE TABLE`
/// of the same name and columns), keeping its rows.
async fn rebuild(manager: &SchemaManager<'_>, table: &str, create: &str) -> Result<(), DbErr> {
    let db = manager.get_connection();
    let old = format!("{table}_old");
    db.execute_unprepared(&format!(r#"ALTER TABLE "{table}" RENAME TO "{old}""#))
        .await?;
    db.execute_unprepared(create).await?;
    db.execute_unprepared(&format!(r#"INSERT INTO "{table}" SELECT * FROM "{old}""#))
        .await?;
    db.execute_unprepared(&format!(r#"DROP TABLE "{old}""#))
        .await?;
    Ok(())
}
