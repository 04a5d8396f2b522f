//! Link references for the `link_degraded` alert rule.
//!
//! - `link_reference`: per link direction (`link.id`), the known-good
//!   quality the rule compares against: the operator's (`signal_dbm`, `tq`,
//!   `cost`, who set it and when) and the learned one (`learned_*`, the
//!   median of the hourly samples of the last 7 days, from how many hours,
//!   and when it was computed). Either part may be empty.
//! - `link_quality_hour`: one sample of a link direction's quality per hour
//!   (the first the alert engine sees in that hour), kept 7 days: what the
//!   learned reference is computed from.
//!
//! Both follow their link: deleting a link (or its node) deletes them.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, double_null, integer, integer_null, text_null,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Link {
    Table,
    Id,
}

#[derive(DeriveIden)]
enum LinkReference {
    Table,
    LinkId,
    SignalDbm,
    Tq,
    Cost,
    SetBy,
    SetMs,
    LearnedSignalDbm,
    LearnedTq,
    LearnedCost,
    LearnedHours,
    LearnedMs,
}

#[derive(DeriveIden)]
enum LinkQualityHour {
    Table,
    LinkId,
    HourMs,
    SignalDbm,
    Tq,
    Cost,
}

// The trait's signatures elide SchemaManager's lifetime; async_trait needs them to match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(LinkReference::Table)
                .col(big_integer(LinkReference::LinkId).primary_key())
                .col(double_null(LinkReference::SignalDbm))
                .col(double_null(LinkReference::Tq))
                .col(double_null(LinkReference::Cost))
                .col(text_null(LinkReference::SetBy))
                .col(big_integer_null(LinkReference::SetMs))
                .col(double_null(LinkReference::LearnedSignalDbm))
                .col(double_null(LinkReference::LearnedTq))
                .col(double_null(LinkReference::LearnedCost))
                .col(integer(LinkReference::LearnedHours).default(0))
                .col(big_integer_null(LinkReference::LearnedMs))
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_link_reference_link")
                        .from(LinkReference::Table, LinkReference::LinkId)
                        .to(Link::Table, Link::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(LinkQualityHour::Table)
                .col(big_integer(LinkQualityHour::LinkId))
                .col(big_integer(LinkQualityHour::HourMs))
                .col(integer_null(LinkQualityHour::SignalDbm))
                .col(integer_null(LinkQualityHour::Tq))
                .col(big_integer_null(LinkQualityHour::Cost))
                .primary_key(
                    Index::create()
                        .col(LinkQualityHour::LinkId)
                        .col(LinkQualityHour::HourMs),
                )
                .foreign_key(
                    ForeignKey::create()
                        .name("fk_link_quality_hour_link")
                        .from(LinkQualityHour::Table, LinkQualityHour::LinkId)
                        .to(Link::Table, Link::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(LinkQualityHour::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(LinkReference::Table).to_owned())
            .await
    }
}
