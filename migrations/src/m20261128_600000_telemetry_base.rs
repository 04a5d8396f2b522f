//! The last full telemetry report of every node, so that a restarted
//! controller can apply a compact (v2) report to its predecessor instead of
//! refusing it until the node next sends a full report.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{big_integer, binary, text};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum TelemetryBase {
    Table,
    Network,
    Node,
    BootId,
    Seq,
    Report,
    UpdatedMs,
}

// The trait's signatures elide SchemaManager's lifetime; async_trait needs them to match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(TelemetryBase::Table)
                    .if_not_exists()
                    .col(text(TelemetryBase::Network))
                    .col(text(TelemetryBase::Node))
                    .col(text(TelemetryBase::BootId))
                    .col(big_integer(TelemetryBase::Seq))
                    .col(binary(TelemetryBase::Report))
                    .col(big_integer(TelemetryBase::UpdatedMs))
                    .primary_key(
                        Index::create()
                            .col(TelemetryBase::Network)
                            .col(TelemetryBase::Node),
                    )
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(TelemetryBase::Table).to_owned())
            .await
    }
}
