//! Node identity: networks are created by an admin and say whether they
//! accept unsigned reports; enrollment tokens (stored as hashes) and the
//! keys and broker credentials of enrolled nodes.
//!
//! Networks that exist before this step were created by the reports of
//! agents that could not sign: they keep accepting unsigned reports. New
//! networks do not, unless an admin says so.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, big_pk_auto, boolean, text, text_null,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Network {
    Table,
    Id,
    AcceptUnsigned,
    ClientSalt,
}

#[derive(DeriveIden)]
enum EnrollToken {
    Table,
    Id,
    TokenHash,
    Network,
    Site,
    CreatedMs,
    ExpiresMs,
    UsedMs,
    Node,
}

#[derive(DeriveIden)]
enum NodeKey {
    Table,
    Node,
    Network,
    PublicKey,
    MqttPasswordHash,
    Hostname,
    Site,
    EnrolledMs,
    RevokedMs,
}

// The trait's signatures elide SchemaManager's lifetime; async_trait needs them to match.
#[allow(elided_lifetimes_in_paths)]
#[async_trait::async_trait]
impl MigrationTrait for Migration {
    fn use_transaction(&self) -> Option<bool> {
        Some(true)
    }

    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // One column per statement: SQLite alters one thing at a time.
        manager
            .alter_table(
                Table::alter()
                    .table(Network::Table)
                    .add_column(boolean(Network::AcceptUnsigned).default(false))
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Network::Table)
                    .add_column(text_null(Network::ClientSalt))
                    .to_owned(),
            )
            .await?;
        manager
            .exec_stmt(
                Query::update()
                    .table(Network::Table)
                    .value(Network::AcceptUnsigned, true)
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(EnrollToken::Table)
                    .col(big_pk_auto(EnrollToken::Id))
                    .col(text(EnrollToken::TokenHash).unique_key())
                    .col(text(EnrollToken::Network))
                    .col(text_null(EnrollToken::Site))
                    .col(big_integer(EnrollToken::CreatedMs))
                    .col(big_integer(EnrollToken::ExpiresMs))
                    .col(big_integer_null(EnrollToken::UsedMs))
                    .col(text_null(EnrollToken::Node))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_enroll_token_network")
                            .from(EnrollToken::Table, EnrollToken::Network)
                            .to(Network::Table, Network::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(NodeKey::Table)
                    .col(text(NodeKey::Node).primary_key())
                    .col(text(NodeKey::Network))
                    .col(text(NodeKey::PublicKey).unique_key())
                    .col(text(NodeKey::MqttPasswordHash))
                    .col(text_null(NodeKey::Hostname))
                    .col(text_null(NodeKey::Site))
                    .col(big_integer(NodeKey::EnrolledMs))
                    .col(big_integer_null(NodeKey::RevokedMs))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_node_key_network")
                            .from(NodeKey::Table, NodeKey::Network)
                            .to(Network::Table, Network::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_node_key_network")
                    .table(NodeKey::Table)
                    .col(NodeKey::Network)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(NodeKey::Table).to_owned())
            .await?;
        manager
            .drop_table(Table::drop().table(EnrollToken::Table).to_owned())
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Network::Table)
                    .drop_column(Network::ClientSalt)
                    .to_owned(),
            )
            .await?;
        manager
            .alter_table(
                Table::alter()
                    .table(Network::Table)
                    .drop_column(Network::AcceptUnsigned)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }
}
