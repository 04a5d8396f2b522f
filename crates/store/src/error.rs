//! The store's error type.

use std::path::PathBuf;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused or failed a statement, or is unreachable.
    #[error("database error: {0}")]
    Database(#[from] sea_orm::DbErr),
    /// Applying the schema migrations failed.
    #[error("database migration failed: {0}")]
    Migration(#[source] sea_orm::DbErr),
    /// The database URL is neither `sqlite:` nor `postgres://`, or does not parse.
    #[error("invalid database url: {0}")]
    InvalidUrl(String),
    /// The directory for a SQLite database file could not be created.
    #[error("cannot create database directory {}: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A query parameter is wrong: unknown metric, missing interface, bad time.
    /// An HTTP API answers this with 400 and the message.
    #[error("{0}")]
    BadQuery(String),
    /// A report breaks the wire format's rules (see `meshtable_proto::Message::validate`).
    #[error("invalid report: {0}")]
    Invalid(String),
}
