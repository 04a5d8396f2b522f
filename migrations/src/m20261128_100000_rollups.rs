//! History: rollups of the samples (5-minute and hourly), the reconcile
//! watermark, the buckets to recompute after late samples, the per-boot clock
//! anchors, and an index on the series time for scans across nodes.
//!
//! - `rollup`: one row per (node, resolution, metric, interface, bucket):
//!   the count, min, avg, max and p95 of the metric's values in the bucket.
//!   `res_s` is 300 or 3600; `interface` is `''` for node metrics. No
//!   foreign key to `node`: on PostgreSQL its check would take a key-share
//!   lock on the node row, which ingest holds `FOR UPDATE` while it waits
//!   for the watermark the reconcile step holds (a deadlock); retention
//!   removes what a deleted node leaves.
//! - `rollup_state`: named watermarks; `rollup` = every hour before
//!   `watermark_ms` is rolled up (`NULL` until the first reconcile).
//! - `rollup_dirty`: (node, hour) whose rollups a late sample made stale.
//! - `boot_anchor`: per (node, boot), the wall-clock time of the boot
//!   (`anchor_ms` = trusted time − uptime) and where it was learned.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, double, double_null, integer, text,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Node {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum Sample {
    Table,
    TMs,
}

#[derive(DeriveIden)]
enum Rollup {
    Table,
    NodeId,
    ResS,
    Metric,
    Interface,
    BucketMs,
    N,
    #[sea_orm(iden = "v_min")]
    VMin,
    #[sea_orm(iden = "v_avg")]
    VAvg,
    #[sea_orm(iden = "v_max")]
    VMax,
    #[sea_orm(iden = "v_p95")]
    VP95,
}

#[derive(DeriveIden)]
enum RollupState {
    Table,
    Name,
    WatermarkMs,
}

#[derive(DeriveIden)]
enum RollupDirty {
    Table,
    NodeId,
    BucketMs,
}

#[derive(DeriveIden)]
enum BootAnchor {
    Table,
    NodeId,
    BootId,
    AnchorMs,
    Source,
    SkewMs,
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
                    .table(Rollup::Table)
                    .col(big_integer(Rollup::NodeId))
                    .col(integer(Rollup::ResS))
                    .col(text(Rollup::Metric))
                    .col(text(Rollup::Interface))
                    .col(big_integer(Rollup::BucketMs))
                    .col(big_integer(Rollup::N))
                    .col(double(Rollup::VMin))
                    .col(double(Rollup::VAvg))
                    .col(double(Rollup::VMax))
                    .col(double_null(Rollup::VP95))
                    .primary_key(
                        Index::create()
                            .col(Rollup::NodeId)
                            .col(Rollup::ResS)
                            .col(Rollup::Metric)
                            .col(Rollup::Interface)
                            .col(Rollup::BucketMs),
                    )
                    .to_owned(),
            )
            .await?;
        // Retention deletes by bucket across nodes.
        manager
            .create_index(
                Index::create()
                    .name("ix_rollup_bucket")
                    .table(Rollup::Table)
                    .col(Rollup::BucketMs)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RollupState::Table)
                    .col(text(RollupState::Name).primary_key())
                    .col(big_integer_null(RollupState::WatermarkMs))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::insert()
                    .into_table(RollupState::Table)
                    .columns([RollupState::Name, RollupState::WatermarkMs])
                    .values_panic(["rollup".into(), Option::<i64>::None.into()])
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(RollupDirty::Table)
                    .col(big_integer(RollupDirty::NodeId))
                    .col(big_integer(RollupDirty::BucketMs))
                    .primary_key(
                        Index::create()
                            .col(RollupDirty::NodeId)
                            .col(RollupDirty::BucketMs),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_rollup_dirty_node")
                            .from(RollupDirty::Table, RollupDirty::NodeId)
                            .to(Node::Table, Node::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(BootAnchor::Table)
                    .col(big_integer(BootAnchor::NodeId))
                    .col(text(BootAnchor::BootId))
                    .col(big_integer(BootAnchor::AnchorMs))
                    .col(text(BootAnchor::Source))
                    .col(big_integer_null(BootAnchor::SkewMs))
                    .col(big_integer(BootAnchor::UpdatedMs))
                    .primary_key(
                        Index::create()
                            .col(BootAnchor::NodeId)
                            .col(BootAnchor::BootId),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_boot_anchor_node")
                            .from(BootAnchor::Table, BootAnchor::NodeId)
                            .to(Node::Table, Node::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_boot_anchor_updated")
                    .table(BootAnchor::Table)
                    .col(BootAnchor::UpdatedMs)
                    .to_owned(),
            )
            .await?;

        // The rollup reconcile and raw retention scan by time across nodes.
        manager
            .create_index(
                Index::create()
                    .name("ix_sample_t")
                    .table(Sample::Table)
                    .col(Sample::TMs)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_index(
                Index::drop()
                    .name("ix_sample_t")
                    .table(Sample::Table)
                    .to_owned(),
            )
            .await?;
        for table in [
            BootAnchor::Table.into_iden(),
            RollupDirty::Table.into_iden(),
            RollupState::Table.into_iden(),
            Rollup::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
