//! People: accounts, their roles per network, web sessions and API tokens.
//!
//! This module stores what the controller's `auth` module decides; it never
//! sees a secret. Passwords arrive as argon2 PHC strings, session ids and
//! API tokens as SHA-256 hex digests, so a stolen database gives no way in.
//! Roles are plain strings here (`admin`, `operator`...): their meaning is
//! the controller's.

use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, DbErr, EntityTrait, PaginatorTrait, QueryFilter, QueryOrder, SqlErr,
};

use crate::write::clean;
use crate::{Store, StoreError};

pub(crate) mod account {
    //! `account`: one row per person (`user` is reserved in PostgreSQL).
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "account")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        pub password_hash: String,
        pub superadmin: bool,
        pub created_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod user_role {
    //! `user_role`: (account, network) -> role.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "user_role")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub user_id: i64,
        #[sea_orm(primary_key, auto_increment = false)]
        pub network: String,
        pub role: String,
        pub created_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod web_session {
    //! `web_session`: a logged-in browser, by the hash of its cookie.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "web_session")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id_hash: String,
        pub user_id: i64,
        pub created_ms: i64,
        pub expires_ms: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod api_token {
    //! `api_token`: a script's credential, by the hash of its secret.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "api_token")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub user_id: i64,
        pub prefix: String,
        pub hash: String,
        pub label: String,
        pub network: Option<String>,
        pub role: Option<String>,
        pub created_ms: i64,
        pub expires_ms: i64,
        pub revoked_ms: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A person who can log in. Carries no secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// Row id.
    pub id: i64,
    /// Login name.
    pub name: String,
    /// May do everything on this controller, in every network.
    pub superadmin: bool,
    /// When it was created, Unix ms.
    pub created_ms: i64,
}

impl From<account::Model> for Account {
    fn from(m: account::Model) -> Account {
        Account {
            id: m.id,
            name: m.name,
            superadmin: m.superadmin,
            created_ms: m.created_ms,
        }
    }
}

/// An account with its password hash, for checking a login. The hash is
/// left out of `Debug`.
#[derive(Clone)]
pub struct Credentials {
    /// The account.
    pub account: Account,
    /// The argon2 PHC string.
    pub password_hash: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("account", &self.account)
            .finish_non_exhaustive()
    }
}

/// A role held by someone in a network.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    /// The account's login name.
    pub user: String,
    /// The network.
    pub network: String,
    /// The role's name.
    pub role: String,
}

/// An API token to store: everything but the secret.
#[derive(Debug, Clone)]
pub struct NewToken<'a> {
    /// Whose token it is.
    pub user_id: i64,
    /// The visible start of the token, to recognise it in listings.
    pub prefix: &'a str,
    /// SHA-256 hex of the whole token.
    pub hash: &'a str,
    /// What the owner calls it.
    pub label: &'a str,
    /// Only this network, if set.
    pub network: Option<&'a str>,
    /// At most this role, if set.
    pub role: Option<&'a str>,
    /// Now, Unix ms.
    pub created_ms: i64,
    /// When it stops working, Unix ms.
    pub expires_ms: i64,
}

/// A stored API token (never its secret nor its hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// Row id, used to revoke it.
    pub id: i64,
    /// The owner's account id.
    pub user_id: i64,
    /// The visible start of the token.
    pub prefix: String,
    /// What the owner calls it.
    pub label: String,
    /// Only this network, if set.
    pub network: Option<String>,
    /// At most this role, if set.
    pub role: Option<String>,
    /// Created, Unix ms.
    pub created_ms: i64,
    /// Expires, Unix ms.
    pub expires_ms: i64,
    /// Revoked, Unix ms.
    pub revoked_ms: Option<i64>,
}

impl From<api_token::Model> for TokenInfo {
    fn from(m: api_token::Model) -> TokenInfo {
        TokenInfo {
            id: m.id,
            user_id: m.user_id,
            prefix: m.prefix,
            label: m.label,
            network: m.network,
            role: m.role,
            created_ms: m.created_ms,
            expires_ms: m.expires_ms,
            revoked_ms: m.revoked_ms,
        }
    }
}

fn is_unique_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

impl Store {
    /// How many accounts exist.
    pub async fn account_count(&self) -> Result<u64, StoreError> {
        Ok(account::Entity::find().count(&self.db).await?)
    }

    /// Creates an account; `None` when the name is taken.
    pub async fn create_account(
        &self,
        name: &str,
        password_hash: &str,
        superadmin: bool,
        now_ms: i64,
    ) -> Result<Option<Account>, StoreError> {
        let row = account::ActiveModel {
            id: NotSet,
            name: Set(clean(name)),
            password_hash: Set(password_hash.to_owned()),
            superadmin: Set(superadmin),
            created_ms: Set(now_ms),
        };
        match account::Entity::insert(row).exec(&self.db).await {
            Ok(r) => Ok(Some(Account {
                id: r.last_insert_id,
                name: name.to_owned(),
                superadmin,
                created_ms: now_ms,
            })),
            Err(e) if is_unique_violation(&e) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    /// The account named `name`, with its password hash.
    pub async fn credentials(&self, name: &str) -> Result<Option<Credentials>, StoreError> {
        Ok(account::Entity::find()
            .filter(account::Column::Name.eq(clean(name)))
            .one(&self.db)
            .await?
            .map(|m| Credentials {
                password_hash: m.password_hash.clone(),
                account: m.into(),
            }))
    }

    /// The account with row id `id`.
    pub async fn account(&self, id: i64) -> Result<Option<Account>, StoreError> {
        Ok(account::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(Account::from))
    }

    /// Replaces an account's password hash; `false` if there is no such account.
    pub async fn set_password_hash(
        &self,
        user_id: i64,
        password_hash: &str,
    ) -> Result<bool, StoreError> {
        let r = account::Entity::update_many()
            .col_expr(account::Column::PasswordHash, Expr::val(password_hash))
            .filter(account::Column::Id.eq(user_id))
            .exec(&self.db)
            .await?;
        Ok(r.rows_affected == 1)
    }

    /// Gives `user_id` the role `role` in `network`, replacing the one it had.
    pub async fn grant_role(
        &self,
        user_id: i64,
        network: &str,
        role: &str,
        now_ms: i64,
    ) -> Result<(), StoreError> {
        let txn = self.begin_write().await?;
        user_role::Entity::delete_many()
            .filter(user_role::Column::UserId.eq(user_id))
            .filter(user_role::Column::Network.eq(clean(network)))
            .exec(&txn)
            .await?;
        user_role::Entity::insert(user_role::ActiveModel {
            user_id: Set(user_id),
            network: Set(clean(network)),
            role: Set(role.to_owned()),
            created_ms: Set(now_ms),
        })
        .exec(&txn)
        .await?;
        txn.commit().await?;
        Ok(())
    }

    /// Takes `user_id`'s role in `network` away; `false` if it had none.
    pub async fn revoke_role(&self, user_id: i64, network: &str) -> Result<bool, StoreError> {
        let r = user_role::Entity::delete_many()
            .filter(user_role::Column::UserId.eq(user_id))
            .filter(user_role::Column::Network.eq(clean(network)))
            .exec(&self.db)
            .await?;
        Ok(r.rows_affected > 0)
    }

    /// Every (network, role) of `user_id`, by network.
    pub async fn roles_of(&self, user_id: i64) -> Result<Vec<(String, String)>, StoreError> {
        Ok(user_role::Entity::find()
            .filter(user_role::Column::UserId.eq(user_id))
            .order_by_asc(user_role::Column::Network)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|r| (r.network, r.role))
            .collect())
    }

    /// Everyone with a role in `network`, by login name.
    pub async fn grants_in(&self, network: &str) -> Result<Vec<Grant>, StoreError> {
        let roles = user_role::Entity::find()
            .filter(user_role::Column::Network.eq(clean(network)))
            .all(&self.db)
            .await?;
        let mut out = Vec::with_capacity(roles.len());
        for r in roles {
            if let Some(a) = account::Entity::find_by_id(r.user_id).one(&self.db).await? {
                out.push(Grant {
                    user: a.name,
                    network: r.network,
                    role: r.role,
                });
            }
        }
        out.sort_by(|a, b| a.user.cmp(&b.user));
        Ok(out)
    }

    /// Stores a web session (by the hash of its id) and drops expired ones.
    pub async fn create_session(
        &self,
        id_hash: &str,
        user_id: i64,
        now_ms: i64,
        expires_ms: i64,
    ) -> Result<(), StoreError> {
        web_session::Entity::delete_many()
            .filter(web_session::Column::ExpiresMs.lte(now_ms))
            .exec(&self.db)
            .await?;
        web_session::Entity::insert(web_session::ActiveModel {
            id_hash: Set(id_hash.to_owned()),
            user_id: Set(user_id),
            created_ms: Set(now_ms),
            expires_ms: Set(expires_ms),
        })
        .exec(&self.db)
        .await?;
        Ok(())
    }

    /// The account of an unexpired session.
    pub async fn session_account(
        &self,
        id_hash: &str,
        now_ms: i64,
    ) -> Result<Option<Account>, StoreError> {
        let Some(s) = web_session::Entity::find_by_id(id_hash.to_owned())
            .filter(web_session::Column::ExpiresMs.gt(now_ms))
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        self.account(s.user_id).await
    }

    /// Ends a session; `false` if there was none.
    pub async fn delete_session(&self, id_hash: &str) -> Result<bool, StoreError> {
        let r = web_session::Entity::delete_many()
            .filter(web_session::Column::IdHash.eq(id_hash))
            .exec(&self.db)
            .await?;
        Ok(r.rows_affected > 0)
    }

    /// Stores an API token; returns its row id.
    pub async fn create_token(&self, t: &NewToken<'_>) -> Result<i64, StoreError> {
        let r = api_token::Entity::insert(api_token::ActiveModel {
            id: NotSet,
            user_id: Set(t.user_id),
            prefix: Set(clean(t.prefix)),
            hash: Set(t.hash.to_owned()),
            label: Set(clean(t.label)),
            network: Set(t.network.map(clean)),
            role: Set(t.role.map(str::to_owned)),
            created_ms: Set(t.created_ms),
            expires_ms: Set(t.expires_ms),
            revoked_ms: Set(None),
        })
        .exec(&self.db)
        .await?;
        Ok(r.last_insert_id)
    }

    /// The token with this hash and its owner, if it is neither expired nor
    /// revoked at `now_ms`.
    pub async fn valid_token(
        &self,
        hash: &str,
        now_ms: i64,
    ) -> Result<Option<(TokenInfo, Account)>, StoreError> {
        let Some(t) = api_token::Entity::find()
            .filter(api_token::Column::Hash.eq(hash))
            .filter(api_token::Column::ExpiresMs.gt(now_ms))
            .filter(api_token::Column::RevokedMs.is_null())
            .one(&self.db)
            .await?
        else {
            return Ok(None);
        };
        Ok(self
            .account(t.user_id)
            .await?
            .map(|a| (TokenInfo::from(t), a)))
    }

    /// The tokens of `user_id` (all users' with `None`), newest first.
    pub async fn tokens(&self, user_id: Option<i64>) -> Result<Vec<TokenInfo>, StoreError> {
        let mut q = api_token::Entity::find();
        if let Some(u) = user_id {
            q = q.filter(api_token::Column::UserId.eq(u));
        }
        Ok(q.order_by_desc(api_token::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(TokenInfo::from)
            .collect())
    }

    /// The token with row id `id`.
    pub async fn token(&self, id: i64) -> Result<Option<TokenInfo>, StoreError> {
        Ok(api_token::Entity::find_by_id(id)
            .one(&self.db)
            .await?
            .map(TokenInfo::from))
    }

    /// Revokes token `id` at `now_ms`; `false` if it does not exist or was
    /// revoked before.
    pub async fn revoke_token(&self, id: i64, now_ms: i64) -> Result<bool, StoreError> {
        let r = api_token::Entity::update_many()
            .col_expr(api_token::Column::RevokedMs, Expr::val(now_ms))
            .filter(api_token::Column::Id.eq(id))
            .filter(api_token::Column::RevokedMs.is_null())
            .exec(&self.db)
            .await?;
        Ok(r.rows_affected == 1)
    }
}

impl Store {
    /// Whether a network with this id exists (has a row in `network`).
    pub async fn network_known(&self, network: &str) -> Result<bool, StoreError> {
        Ok(crate::entity::network::Entity::find_by_id(clean(network))
            .one(&self.db)
            .await?
            .is_some())
    }
}
