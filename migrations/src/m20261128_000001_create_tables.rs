//! The first schema: networks, nodes, telemetry samples and their per-interface
//! counters.
//!
//! Times are Unix milliseconds in `BIGINT` columns; counters are `BIGINT`
//! (the u64 wire values saturate at `i64::MAX`).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, big_pk_auto, boolean, double, double_null, text, text_null,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Network {
    Table,
    Id,
    FirstSeenMs,
}

#[derive(DeriveIden)]
enum Node {
    Table,
    Id,
    Network,
    /// The node id from the topic: the column `node`.
    #[sea_orm(iden = "node")]
    Ident,
    Hostname,
    Model,
    Hello,
    IntervalMs,
    Status,
    StatusSinceMs,
    FirstSeenMs,
    LastSeenMs,
}

#[derive(DeriveIden)]
enum Sample {
    Table,
    Id,
    NodeId,
    BootId,
    Seq,
    TMs,
    TimeMs,
    ReceivedMs,
    ClockOk,
    UptimeMs,
    Load1,
    Load5,
    Load15,
    CpuUser,
    CpuNice,
    CpuSystem,
    CpuIdle,
    CpuIowait,
    CpuIrq,
    CpuSoftirq,
    CpuSteal,
    MemTotal,
    MemAvailable,
    RootfsSize,
    RootfsFree,
    Dropped,
    CpuBusyRatio,
}

#[derive(DeriveIden)]
enum InterfaceSample {
    Table,
    SampleId,
    Name,
    RxBytes,
    TxBytes,
    RxPackets,
    TxPackets,
    RxErrors,
    TxErrors,
    RxDropped,
    TxDropped,
    RxBps,
    TxBps,
}

// The trait's signatures elide SchemaManager's lifetime; async_trait needs them to match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    /// All or nothing, on SQLite too (its DDL is transactional).
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(Network::Table)
                    .col(text(Network::Id).primary_key())
                    .col(big_integer(Network::FirstSeenMs))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Node::Table)
                    .col(big_pk_auto(Node::Id))
                    .col(text(Node::Network))
                    .col(text(Node::Ident))
                    .col(text_null(Node::Hostname))
                    .col(text_null(Node::Model))
                    .col(text_null(Node::Hello))
                    .col(big_integer_null(Node::IntervalMs))
                    .col(text(Node::Status))
                    .col(big_integer(Node::StatusSinceMs))
                    .col(big_integer(Node::FirstSeenMs))
                    .col(big_integer(Node::LastSeenMs))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_node_network")
                            .from(Node::Table, Node::Network)
                            .to(Network::Table, Network::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ux_node_network_node")
                    .table(Node::Table)
                    .col(Node::Network)
                    .col(Node::Ident)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Node ids are looked up without their network too (`find_node`).
        manager
            .create_index(
                Index::create()
                    .name("ix_node_node")
                    .table(Node::Table)
                    .col(Node::Ident)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Sample::Table)
                    .col(big_pk_auto(Sample::Id))
                    .col(big_integer(Sample::NodeId))
                    .col(text(Sample::BootId))
                    .col(big_integer(Sample::Seq))
                    .col(big_integer(Sample::TMs))
                    .col(big_integer(Sample::TimeMs))
                    .col(big_integer(Sample::ReceivedMs))
                    .col(boolean(Sample::ClockOk))
                    .col(big_integer(Sample::UptimeMs))
                    .col(double(Sample::Load1))
                    .col(double(Sample::Load5))
                    .col(double(Sample::Load15))
                    .col(big_integer(Sample::CpuUser))
                    .col(big_integer(Sample::CpuNice))
                    .col(big_integer(Sample::CpuSystem))
                    .col(big_integer(Sample::CpuIdle))
                    .col(big_integer(Sample::CpuIowait))
                    .col(big_integer(Sample::CpuIrq))
                    .col(big_integer(Sample::CpuSoftirq))
                    .col(big_integer(Sample::CpuSteal))
                    .col(big_integer(Sample::MemTotal))
                    .col(big_integer(Sample::MemAvailable))
                    .col(big_integer(Sample::RootfsSize))
                    .col(big_integer(Sample::RootfsFree))
                    .col(big_integer(Sample::Dropped))
                    .col(double_null(Sample::CpuBusyRatio))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_sample_node")
                            .from(Sample::Table, Sample::NodeId)
                            .to(Node::Table, Node::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        // Identifies a report: the dedupe key (insert ... on conflict do nothing),
        // and the lookup of the previous sample of a boot for rates.
        manager
            .create_index(
                Index::create()
                    .name("ux_sample_node_boot_seq")
                    .table(Sample::Table)
                    .col(Sample::NodeId)
                    .col(Sample::BootId)
                    .col(Sample::Seq)
                    .unique()
                    .to_owned(),
            )
            .await?;
        // Series and the latest sample of a node.
        manager
            .create_index(
                Index::create()
                    .name("ix_sample_node_t")
                    .table(Sample::Table)
                    .col(Sample::NodeId)
                    .col(Sample::TMs)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(InterfaceSample::Table)
                    .col(big_integer(InterfaceSample::SampleId))
                    .col(text(InterfaceSample::Name))
                    .col(big_integer(InterfaceSample::RxBytes))
                    .col(big_integer(InterfaceSample::TxBytes))
                    .col(big_integer(InterfaceSample::RxPackets))
                    .col(big_integer(InterfaceSample::TxPackets))
                    .col(big_integer(InterfaceSample::RxErrors))
                    .col(big_integer(InterfaceSample::TxErrors))
                    .col(big_integer(InterfaceSample::RxDropped))
                    .col(big_integer(InterfaceSample::TxDropped))
                    .col(double_null(InterfaceSample::RxBps))
                    .col(double_null(InterfaceSample::TxBps))
                    .primary_key(
                        Index::create()
                            .col(InterfaceSample::SampleId)
                            .col(InterfaceSample::Name),
                    )
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_interface_sample_sample")
                            .from(InterfaceSample::Table, InterfaceSample::SampleId)
                            .to(Sample::Table, Sample::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            InterfaceSample::Table.into_iden(),
            Sample::Table.into_iden(),
            Node::Table.into_iden(),
            Network::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
