//! Alerts: `alert` (one row per condition of a rule on a subject, with its
//! lifecycle), `alert_event` (every lifecycle change, with whether it was
//! notified) and `alert_settings` (per-network delivery and rule settings).

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, big_pk_auto, boolean, double_null, text, text_null,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Alert {
    Table,
    Id,
    Network,
    Rule,
    Subject,
    Site,
    State,
    Message,
    Value,
    SinceMs,
    FiredMs,
    AckedMs,
    AckedBy,
    ResolvedMs,
}

#[derive(DeriveIden)]
enum AlertEvent {
    Table,
    Id,
    AlertId,
    Network,
    TMs,
    Event,
    Notified,
}

#[derive(DeriveIden)]
enum AlertSettings {
    Table,
    Network,
    WebhookUrl,
    EmailTo,
    EmailFrom,
    SmtpServer,
    DigestMs,
    Rules,
    LastDigestMs,
}

#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.create_table(
            Table::create()
                .table(Alert::Table)
                .if_not_exists()
                .col(big_pk_auto(Alert::Id))
                .col(text(Alert::Network))
                .col(text(Alert::Rule))
                .col(text(Alert::Subject))
                .col(text_null(Alert::Site))
                .col(text(Alert::State))
                .col(text(Alert::Message))
                .col(double_null(Alert::Value))
                .col(big_integer(Alert::SinceMs))
                .col(big_integer_null(Alert::FiredMs))
                .col(big_integer_null(Alert::AckedMs))
                .col(text_null(Alert::AckedBy))
                .col(big_integer_null(Alert::ResolvedMs))
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("alert_network_state")
                .table(Alert::Table)
                .col(Alert::Network)
                .col(Alert::State)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(AlertEvent::Table)
                .if_not_exists()
                .col(big_pk_auto(AlertEvent::Id))
                .col(big_integer(AlertEvent::AlertId))
                .col(text(AlertEvent::Network))
                .col(big_integer(AlertEvent::TMs))
                .col(text(AlertEvent::Event))
                .col(boolean(AlertEvent::Notified))
                .foreign_key(
                    ForeignKey::create()
                        .name("alert_event_alert")
                        .from(AlertEvent::Table, AlertEvent::AlertId)
                        .to(Alert::Table, Alert::Id)
                        .on_delete(ForeignKeyAction::Cascade),
                )
                .to_owned(),
        )
        .await?;
        m.create_index(
            Index::create()
                .name("alert_event_network_notified")
                .table(AlertEvent::Table)
                .col(AlertEvent::Network)
                .col(AlertEvent::Notified)
                .to_owned(),
        )
        .await?;
        m.create_table(
            Table::create()
                .table(AlertSettings::Table)
                .if_not_exists()
                .col(text(AlertSettings::Network).primary_key())
                .col(text_null(AlertSettings::WebhookUrl))
                .col(text_null(AlertSettings::EmailTo))
                .col(text_null(AlertSettings::EmailFrom))
                .col(text_null(AlertSettings::SmtpServer))
                .col(big_integer(AlertSettings::DigestMs))
                .col(text_null(AlertSettings::Rules))
                .col(big_integer(AlertSettings::LastDigestMs))
                .to_owned(),
        )
        .await
    }

    async fn down(&self, m: &SchemaManager) -> Result<(), DbErr> {
        m.drop_table(Table::drop().table(AlertSettings::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(AlertEvent::Table).to_owned())
            .await?;
        m.drop_table(Table::drop().table(Alert::Table).to_owned())
            .await
    }
}
