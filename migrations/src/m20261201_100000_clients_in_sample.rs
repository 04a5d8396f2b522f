//! A report's client counts move into its `sample` row.
//!
//! `client_count` held one row per telemetry report under the sample's own
//! key (node, boot, seq), with a second index on (node, time): ingest wrote
//! a row and two index entries beside every sample for four numbers, and
//! retention never deleted them, so the table grew without bound. The
//! counts are now four nullable columns of `sample` (NULL: the report
//! carried no counts), kept and deleted with their sample.
//!
//! Stored counts are carried over (and back by `down`). Counts whose sample
//! retention already deleted are not: they are the rows retention should
//! have taken with it.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, integer, integer_null, text};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Sample {
    Table,
    ClientsTotal,
    ClientsWifi24,
    ClientsWifi5,
    ClientsOther,
}

#[derive(DeriveIden)]
enum ClientCount {
    Table,
    NodeId,
    BootId,
    Seq,
    TMs,
    Total,
    Wifi24,
    Wifi5,
    Other,
}

#[derive(DeriveIden)]
enum Node {
    Table,
    Id,
}

/// The new columns, in the order of [`ClientCount`]'s counts.
const COLUMNS: [Sample; 4] = [
    Sample::ClientsTotal,
    Sample::ClientsWifi24,
    Sample::ClientsWifi5,
    Sample::ClientsOther,
];

/// The same statement on both databases (SQLite has `UPDATE ... FROM`
/// since 3.33).
const FILL_SAMPLES: &str = r#"UPDATE "sample" SET "clients_total" = c."total",
    "clients_wifi24" = c."wifi24", "clients_wifi5" = c."wifi5", "clients_other" = c."other"
    FROM "client_count" c WHERE c."node_id" = "sample"."node_id"
    AND c."boot_id" = "sample"."boot_id" AND c."seq" = "sample"."seq""#;

const FILL_TABLE: &str = r#"INSERT INTO "client_count" ("node_id", "boot_id", "seq", "t_ms",
    "total", "wifi24", "wifi5", "other")
    SELECT "node_id", "boot_id", "seq", "t_ms", "clients_total", "clients_wifi24",
    "clients_wifi5", "clients_other" FROM "sample" WHERE "clients_total" IS NOT NULL"#;

// The trait's signatures elide SchemaManager's lifetime; async_trait needs them to match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // SQLite adds one column per ALTER TABLE.
        for column in COLUMNS {
            manager
                .alter_table(
                    Table::alter()
                        .table(Sample::Table)
                        .add_column(integer_null(column))
                        .to_owned(),
                )
                .await?;
        }
        manager
            .get_connection()
            .execute_unprepared(FILL_SAMPLES)
            .await?;
        manager
            .drop_table(Table::drop().table(ClientCount::Table).to_owned())
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The table as `m20261128_500000_topology_liveness` created it.
        manager
            .create_table(
                Table::create()
                    .table(ClientCount::Table)
                    .col(big_integer(ClientCount::NodeId))
                    .col(text(ClientCount::BootId))
                    .col(big_integer(ClientCount::Seq))
                    .col(big_integer(ClientCount::TMs))
                    .col(integer(ClientCount::Total))
                    .col(integer(ClientCount::Wifi24))
                    .col(integer(ClientCount::Wifi5))
                    .col(integer(ClientCount::Other))
                    .primary_key(
                        Index::create()
                            .col(ClientCount::NodeId)
                            .col(ClientCount::BootId)
                            .col(ClientCount::Seq),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_client_count_node")
                            .from(ClientCount::Table, ClientCount::NodeId)
                            .to(Node::Table, Node::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_client_count_node_t")
                    .table(ClientCount::Table)
                    .col(ClientCount::NodeId)
                    .col(ClientCount::TMs)
                    .to_owned(),
            )
            .await?;
        manager
            .get_connection()
            .execute_unprepared(FILL_TABLE)
            .await?;
        for column in COLUMNS {
            manager
                .alter_table(
                    Table::alter()
                        .table(Sample::Table)
                        .drop_column(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }
}
