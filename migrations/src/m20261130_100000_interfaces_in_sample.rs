//! A report's interfaces move into its `sample` row.
//!
//! `interface_sample` held one row per interface per report: five rows, each
//! with its primary-key entry, for a typical router's one `sample` row, and
//! the larger part of what ingest wrote. The interfaces are now one JSON
//! column, `sample.interfaces`: an array with one positional array per
//! interface, sorted by name,
//! `[name, rx_bytes, tx_bytes, rx_packets, tx_packets, rx_errors, tx_errors,
//! rx_dropped, tx_dropped, rx_bps, tx_bps]` (`meshtable-store`'s `ifaces`
//! module reads and writes it). Every reader already worked per sample.
//!
//! The stored rows are carried over (and back by `down`). Raw SQL: the JSON
//! functions differ between SQLite and PostgreSQL and have no builder form.

use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::DbBackend;

#[derive(DeriveMigrationName)]
pub struct Migration;

const ADD_COLUMN: &str =
    r#"ALTER TABLE "sample" ADD COLUMN "interfaces" TEXT NOT NULL DEFAULT '[]'"#;

const SQLITE_UP: [&str; 3] = [
    ADD_COLUMN,
    r#"UPDATE "sample" SET "interfaces" = (
        SELECT json_group_array(json_array(i."name", i."rx_bytes", i."tx_bytes",
            i."rx_packets", i."tx_packets", i."rx_errors", i."tx_errors",
            i."rx_dropped", i."tx_dropped", i."rx_bps", i."tx_bps"))
        FROM (SELECT * FROM "interface_sample" WHERE "sample_id" = "sample"."id" ORDER BY "name") i)
      WHERE "id" IN (SELECT "sample_id" FROM "interface_sample")"#,
    r#"DROP TABLE "interface_sample""#,
];

const POSTGRES_UP: [&str; 5] = [
    ADD_COLUMN,
    r#"UPDATE "sample" s SET "interfaces" = i.j FROM (
        SELECT "sample_id", json_agg(json_build_array("name", "rx_bytes", "tx_bytes",
            "rx_packets", "tx_packets", "rx_errors", "tx_errors",
            "rx_dropped", "tx_dropped", "rx_bps", "tx_bps") ORDER BY "name")::text AS j
        FROM "interface_sample" GROUP BY "sample_id") i
      WHERE s."id" = i."sample_id""#,
    r#"DROP TRIGGER "sample_deletes_interfaces" ON "sample""#,
    r#"DROP FUNCTION "sample_deletes_interfaces"()"#,
    r#"DROP TABLE "interface_sample""#,
];

/// The table as the steps before this one left it (on SQLite with its
/// foreign key, on PostgreSQL with the trigger that replaced it).
const CREATE_TABLE: &str = r#"CREATE TABLE "interface_sample" (
    "sample_id" BIGINT NOT NULL, "name" TEXT NOT NULL,
    "rx_bytes" BIGINT NOT NULL, "tx_bytes" BIGINT NOT NULL,
    "rx_packets" BIGINT NOT NULL, "tx_packets" BIGINT NOT NULL,
    "rx_errors" BIGINT NOT NULL, "tx_errors" BIGINT NOT NULL,
    "rx_dropped" BIGINT NOT NULL, "tx_dropped" BIGINT NOT NULL,
    "rx_bps" DOUBLE PRECISION NULL, "tx_bps" DOUBLE PRECISION NULL,
    PRIMARY KEY ("sample_id", "name")"#;

const INSERT_ROWS: &str = r#"INSERT INTO "interface_sample" ("sample_id", "name",
    "rx_bytes", "tx_bytes", "rx_packets", "tx_packets", "rx_errors", "tx_errors",
    "rx_dropped", "tx_dropped", "rx_bps", "tx_bps")"#;

const DROP_COLUMN: &str = r#"ALTER TABLE "sample" DROP COLUMN "interfaces""#;

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
        } else {
            for sql in SQLITE_UP {
                db.execute_unprepared(sql).await?;
            }
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        if manager.get_database_backend() == DbBackend::Postgres {
            let fill = format!(
                "{INSERT_ROWS} SELECT s.\"id\", j->>0, (j->>1)::bigint, (j->>2)::bigint, \
                 (j->>3)::bigint, (j->>4)::bigint, (j->>5)::bigint, (j->>6)::bigint, \
                 (j->>7)::bigint, (j->>8)::bigint, (j->>9)::double precision, \
                 (j->>10)::double precision \
                 FROM \"sample\" s, json_array_elements(s.\"interfaces\"::json) j"
            );
            for sql in [
                format!("{CREATE_TABLE})"),
                fill,
                r#"CREATE FUNCTION "sample_deletes_interfaces"() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN DELETE FROM "interface_sample" WHERE "sample_id" IN (SELECT "id" FROM gone); RETURN NULL; END $$"#.to_owned(),
                r#"CREATE TRIGGER "sample_deletes_interfaces" AFTER DELETE ON "sample" REFERENCING OLD TABLE AS gone FOR EACH STATEMENT EXECUTE FUNCTION "sample_deletes_interfaces"()"#.to_owned(),
                DROP_COLUMN.to_owned(),
            ] {
                db.execute_unprepared(&sql).await?;
            }
        } else {
            let fill = format!(
                "{INSERT_ROWS} SELECT s.\"id\", json_extract(j.value, '$[0]'), \
                 json_extract(j.value, '$[1]'), json_extract(j.value, '$[2]'), \
                 json_extract(j.value, '$[3]'), json_extract(j.value, '$[4]'), \
                 json_extract(j.value, '$[5]'), json_extract(j.value, '$[6]'), \
                 json_extract(j.value, '$[7]'), json_extract(j.value, '$[8]'), \
                 json_extract(j.value, '$[9]'), json_extract(j.value, '$[10]') \
                 FROM \"sample\" s, json_each(s.\"interfaces\") j"
            );
            for sql in [
                format!(
                    "{CREATE_TABLE}, CONSTRAINT \"fk_interface_sample_sample\" \
                     FOREIGN KEY (\"sample_id\") REFERENCES \"sample\" (\"id\") ON DELETE CASCADE)"
                ),
                fill,
                DROP_COLUMN.to_owned(),
            ] {
                db.execute_unprepared(&sql).await?;
            }
        }
        Ok(())
    }
}
