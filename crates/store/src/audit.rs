//! The audit log: security-relevant actions, append-only.
//!
//! Written by the controller's `auth::audit` (logins, account, role and
//! token changes, enrollment and revocation of nodes), read by admins.
//! Entries hold names and outcomes, never a secret.

use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, EntityTrait, QueryFilter, QueryOrder, QuerySelect,
};
use serde::Serialize;

use crate::time::rfc3339_ms;
use crate::write::clean;
use crate::{Store, StoreError};

pub(crate) mod entity {
    //! `audit`: one row per recorded action.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "audit")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub t_ms: i64,
        pub actor: String,
        pub network: Option<String>,
        pub action: String,
        pub target: String,
        pub outcome: String,
        pub source: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Longest text kept in an audit field; longer values are cut.
const MAX_FIELD: usize = 256;

fn field(s: &str) -> String {
    clean(&s.chars().take(MAX_FIELD).collect::<String>())
}

/// One audit entry.
///
/// JSON: `{"id","time","actor","network","action","target","outcome","source"}`,
/// `time` in RFC 3339.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AuditEntry {
    /// Row id, increasing.
    pub id: i64,
    /// When, Unix ms.
    #[serde(rename = "time", serialize_with = "rfc3339_ms::serialize")]
    pub t_ms: i64,
    /// Who: a login name, `token:<prefix>`, `cli`, `system`, or the name
    /// someone tried to log in with.
    pub actor: String,
    /// The network concerned; `None` for controller-wide actions.
    pub network: Option<String>,
    /// What: `login`, `user.add`, `role.grant`, `token.create`...
    pub action: String,
    /// On what: a user, a token prefix, a node.
    pub target: String,
    /// `ok`, `failed`, `denied`...
    pub outcome: String,
    /// Where the request came from (an IP address), if known.
    pub source: Option<String>,
}

/// An audit entry to append.
#[derive(Debug, Clone, Copy)]
pub struct NewAuditEntry<'a> {
    /// When, Unix ms.
    pub t_ms: i64,
    /// Who.
    pub actor: &'a str,
    /// The network concerned, if any.
    pub network: Option<&'a str>,
    /// What.
    pub action: &'a str,
    /// On what.
    pub target: &'a str,
    /// How it ended.
    pub outcome: &'a str,
    /// From where.
    pub source: Option<&'a str>,
}

impl Store {
    /// Appends an entry to the audit log.
    pub async fn append_audit(&self, e: &NewAuditEntry<'_>) -> Result<(), StoreError> {
        entity::Entity::insert(entity::ActiveModel {
            id: NotSet,
            t_ms: Set(e.t_ms),
            actor: Set(field(e.actor)),
            network: Set(e.network.map(field)),
            action: Set(field(e.action)),
            target: Set(field(e.target)),
            outcome: Set(field(e.outcome)),
            source: Set(e.source.map(field)),
        })
        .exec(&self.db)
        .await?;
        Ok(())
    }

    /// The newest `limit` entries, newest first: of `network` only, or of
    /// the whole controller with `None`. Entries with an id below `before`
    /// only, when given (for paging).
    pub async fn audit_log(
        &self,
        network: Option<&str>,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let mut q = entity::Entity::find();
        if let Some(n) = network {
            q = q.filter(entity::Column::Network.eq(clean(n)));
        }
        if let Some(b) = before {
            q = q.filter(entity::Column::Id.lt(b));
        }
        Ok(q.order_by_desc(entity::Column::Id)
            .limit(limit)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| AuditEntry {
                id: m.id,
                t_ms: m.t_ms,
                actor: m.actor,
                network: m.network,
                action: m.action,
                target: m.target,
                outcome: m.outcome,
                source: m.source,
            })
            .collect())
    }
}
