//! People and their rights: accounts, per-network roles, web sessions, API
//! tokens, and the audit log.
//!
//! Secrets are never stored: passwords as argon2 PHC strings, session ids
//! and API tokens as SHA-256 hex digests. Roles name a network without a
//! foreign key, so that a network's rows can be granted before its first
//! node reports and survive its nodes.

use sea_orm_migration::prelude::*;
use sea_orm_migration::schema::{
    big_integer, big_integer_null, big_pk_auto, boolean, text, text_null,
};

#[derive(DeriveMigrationName)]
pub struct Migration;

#[derive(DeriveIden)]
enum Account {
    Table,
    Id,
    Name,
    PasswordHash,
    Superadmin,
    CreatedMs,
}

#[derive(DeriveIden)]
enum UserRole {
    Table,
    UserId,
    Network,
    Role,
    CreatedMs,
}

#[derive(DeriveIden)]
enum WebSession {
    Table,
    IdHash,
    UserId,
    CreatedMs,
    ExpiresMs,
}

#[derive(DeriveIden)]
enum ApiToken {
    Table,
    Id,
    UserId,
    Prefix,
    Hash,
    Label,
    Network,
    Role,
    CreatedMs,
    ExpiresMs,
    RevokedMs,
}

#[derive(DeriveIden)]
enum Audit {
    Table,
    Id,
    TMs,
    Actor,
    Network,
    Action,
    Target,
    Outcome,
    Source,
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
                    .table(Account::Table)
                    .col(big_pk_auto(Account::Id))
                    .col(text(Account::Name).unique_key())
                    .col(text(Account::PasswordHash))
                    .col(boolean(Account::Superadmin))
                    .col(big_integer(Account::CreatedMs))
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(UserRole::Table)
                    .col(big_integer(UserRole::UserId))
                    .col(text(UserRole::Network))
                    .col(text(UserRole::Role))
                    .col(big_integer(UserRole::CreatedMs))
                    .primary_key(Index::create().col(UserRole::UserId).col(UserRole::Network))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_user_role_account")
                            .from(UserRole::Table, UserRole::UserId)
                            .to(Account::Table, Account::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(WebSession::Table)
                    .col(text(WebSession::IdHash).primary_key())
                    .col(big_integer(WebSession::UserId))
                    .col(big_integer(WebSession::CreatedMs))
                    .col(big_integer(WebSession::ExpiresMs))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_web_session_account")
                            .from(WebSession::Table, WebSession::UserId)
                            .to(Account::Table, Account::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(ApiToken::Table)
                    .col(big_pk_auto(ApiToken::Id))
                    .col(big_integer(ApiToken::UserId))
                    .col(text(ApiToken::Prefix))
                    .col(text(ApiToken::Hash).unique_key())
                    .col(text(ApiToken::Label))
                    .col(text_null(ApiToken::Network))
                    .col(text_null(ApiToken::Role))
                    .col(big_integer(ApiToken::CreatedMs))
                    .col(big_integer(ApiToken::ExpiresMs))
                    .col(big_integer_null(ApiToken::RevokedMs))
                    .foreign_key(
                        ForeignKey::create()
                            .name("fk_api_token_account")
                            .from(ApiToken::Table, ApiToken::UserId)
                            .to(Account::Table, Account::Id)
                            .on_delete(ForeignKeyAction::Cascade),
                    )
                    .to_owned(),
            )
            .await?;

        manager
            .create_table(
                Table::create()
                    .table(Audit::Table)
                    .col(big_pk_auto(Audit::Id))
                    .col(big_integer(Audit::TMs))
                    .col(text(Audit::Actor))
                    .col(text_null(Audit::Network))
                    .col(text(Audit::Action))
                    .col(text(Audit::Target))
                    .col(text(Audit::Outcome))
                    .col(text_null(Audit::Source))
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .name("ix_audit_network_id")
                    .table(Audit::Table)
                    .col(Audit::Network)
                    .col(Audit::Id)
                    .to_owned(),
            )
            .await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        for table in [
            Audit::Table.into_iden(),
            ApiToken::Table.into_iden(),
            WebSession::Table.into_iden(),
            UserRole::Table.into_iden(),
            Account::Table.into_iden(),
        ] {
            manager
                .drop_table(Table::drop().table(table).to_owned())
                .await?;
        }
        Ok(())
    }
}
