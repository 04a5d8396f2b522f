//! Node identity: networks created by an admin (and whether they accept
//! unsigned reports), enrollment tokens, and the keys and broker credentials
//! of enrolled nodes.
//!
//! This module never sees a secret in the clear: tokens arrive as SHA-256
//! hex digests, MQTT passwords as Mosquitto `$7$` PBKDF2 strings. The
//! per-network client salt is the one secret it holds: it is handed to the
//! network's enrolled nodes and never shown in `Debug` output.
//!
//! | table | key | what |
//! |---|---|---|
//! | `network` | `id` | plus `accept_unsigned` and `client_salt` (migration 300000) |
//! | `enroll_token` | `id`; unique `token_hash` | `network`, `site`, `created_ms`, `expires_ms`, `used_ms`, `node` (who used it) |
//! | `node_key` | `node` (unique across networks: the MQTT user name) | `network`, `public_key` (hex, unique), `mqtt_password_hash`, `hostname`, `site`, `enrolled_ms`, `revoked_ms` |

use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, DbErr, EntityTrait, QueryFilter, QueryOrder, SqlErr, TransactionTrait,
};

use crate::{Store, StoreError};

pub(crate) mod network_trust {
    //! `network` with the columns of migration 300000.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "network")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub id: String,
        pub first_seen_ms: i64,
        pub accept_unsigned: bool,
        pub client_salt: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod enroll_token {
    //! `enroll_token`: a single-use enrollment token, by its hash.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "enroll_token")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub token_hash: String,
        pub network: String,
        pub site: Option<String>,
        pub created_ms: i64,
        pub expires_ms: i64,
        pub used_ms: Option<i64>,
        pub node: Option<String>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

pub(crate) mod node_key {
    //! `node_key`: an enrolled node's public key and broker credential.
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
    #[sea_orm(table_name = "node_key")]
    pub struct Model {
        #[sea_orm(primary_key, auto_increment = false)]
        pub node: String,
        pub network: String,
        pub public_key: String,
        pub mqtt_password_hash: String,
        pub hostname: Option<String>,
        pub site: Option<String>,
        pub enrolled_ms: i64,
        pub revoked_ms: Option<i64>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// Why a registry operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// The database failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// `network add` for a network that exists.
    #[error("network {0} exists already")]
    NetworkExists(String),
    /// The network does not exist.
    #[error("no network {0}")]
    UnknownNetwork(String),
    /// No token has this hash.
    #[error("unknown enrollment token")]
    TokenUnknown,
    /// The token was used before.
    #[error("enrollment token already used")]
    TokenUsed,
    /// The token expired.
    #[error("enrollment token expired")]
    TokenExpired,
    /// Another node enrolled with this key or under this node id.
    #[error("node id or public key already enrolled")]
    AlreadyEnrolled,
    /// No enrolled node of that id in that network.
    #[error("no enrolled node {node} in network {network}")]
    UnknownNode {
        /// The network.
        network: String,
        /// The node.
        node: String,
    },
}

impl From<DbErr> for RegistryError {
    fn from(e: DbErr) -> Self {
        RegistryError::Store(StoreError::Database(e))
    }
}

/// A network's trust settings.
#[derive(Clone, PartialEq, Eq)]
pub struct NetworkTrust {
    /// The network id.
    pub id: String,
    /// Whether reports without a signature are accepted (gradual migration).
    pub accept_unsigned: bool,
    /// The salt for hashing client MACs, handed to enrolled nodes (secret).
    pub client_salt: Option<String>,
}

impl std::fmt::Debug for NetworkTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NetworkTrust")
            .field("id", &self.id)
            .field("accept_unsigned", &self.accept_unsigned)
            .field(
                "client_salt",
                &self.client_salt.as_ref().map(|_| "<hidden>"),
            )
            .finish()
    }
}

/// A new enrollment token, by its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEnrollToken<'a> {
    /// SHA-256 of the token, lowercase hex.
    pub token_hash: &'a str,
    /// The network the token enrolls into.
    pub network: &'a str,
    /// The site the node will belong to, if any.
    pub site: Option<&'a str>,
    /// When it was created.
    pub created_ms: i64,
    /// When it stops working.
    pub expires_ms: i64,
}

/// An enrollment token as listed (never the token itself).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct EnrollTokenInfo {
    /// Its row id.
    pub id: i64,
    /// The network.
    pub network: String,
    /// The site, if any.
    pub site: Option<String>,
    /// When it was created.
    pub created_ms: i64,
    /// When it expires.
    pub expires_ms: i64,
    /// When it was used, if it was.
    pub used_ms: Option<i64>,
    /// The node that used it.
    pub node: Option<String>,
}

/// What an enrolling node registers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewNodeKey<'a> {
    /// The node id the controller chose (unique across networks).
    pub node: &'a str,
    /// The ed25519 public key, 64 hex digits.
    pub public_key: &'a str,
    /// The MQTT password as a Mosquitto `$7$` PBKDF2 string.
    pub mqtt_password_hash: &'a str,
    /// The router's hostname, as it said.
    pub hostname: Option<&'a str>,
}

/// The outcome of a successful enrollment.
#[derive(Clone, PartialEq, Eq)]
pub struct Enrolled {
    /// The network the node now belongs to.
    pub network: String,
    /// The site, if the token named one.
    pub site: Option<String>,
    /// The node id.
    pub node: String,
    /// The network's client salt (secret).
    pub client_salt: Option<String>,
}

impl std::fmt::Debug for Enrolled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enrolled")
            .field("network", &self.network)
            .field("site", &self.site)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// An enrolled node's identity.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct NodeKey {
    /// The node id (and MQTT user name).
    pub node: String,
    /// Its network.
    pub network: String,
    /// The ed25519 public key, 64 hex digits.
    pub public_key: String,
    /// The MQTT password hash (Mosquitto `$7$` PBKDF2; not a secret by itself).
    #[serde(skip)]
    pub mqtt_password_hash: String,
    /// The hostname it enrolled with.
    pub hostname: Option<String>,
    /// The site of its token.
    pub site: Option<String>,
    /// When it enrolled.
    pub enrolled_ms: i64,
    /// When it was revoked, if it was.
    pub revoked_ms: Option<i64>,
}

impl From<node_key::Model> for NodeKey {
    fn from(m: node_key::Model) -> Self {
        NodeKey {
            node: m.node,
            network: m.network,
            public_key: m.public_key,
            mqtt_password_hash: m.mqtt_password_hash,
            hostname: m.hostname,
            site: m.site,
            enrolled_ms: m.enrolled_ms,
            revoked_ms: m.revoked_ms,
        }
    }
}

fn is_unique_violation(e: &DbErr) -> bool {
    matches!(e.sql_err(), Some(SqlErr::UniqueConstraintViolation(_)))
}

impl Store {
    /// Creates a network. `client_salt` is the secret for client MAC hashes.
    pub async fn add_network(
        &self,
        id: &str,
        accept_unsigned: bool,
        client_salt: &str,
        now_ms: i64,
    ) -> Result<(), RegistryError> {
        let row = network_trust::ActiveModel {
            id: Set(id.to_owned()),
            first_seen_ms: Set(now_ms),
            accept_unsigned: Set(accept_unsigned),
            client_salt: Set(Some(client_salt.to_owned())),
        };
        let inserted = network_trust::Entity::insert(row)
            .on_conflict(
                OnConflict::column(network_trust::Column::Id)
                    .do_nothing()
                    .to_owned(),
            )
            .exec_without_returning(&self.db)
            .await?;
        if inserted == 0 {
            return Err(RegistryError::NetworkExists(id.to_owned()));
        }
        Ok(())
    }

    /// Sets whether a network accepts unsigned reports.
    pub async fn set_accept_unsigned(
        &self,
        network: &str,
        accept_unsigned: bool,
    ) -> Result<(), RegistryError> {
        let r = network_trust::Entity::update_many()
            .col_expr(
                network_trust::Column::AcceptUnsigned,
                Expr::value(accept_unsigned),
            )
            .filter(network_trust::Column::Id.eq(network))
            .exec(&self.db)
            .await?;
        if r.rows_affected == 0 {
            return Err(RegistryError::UnknownNetwork(network.to_owned()));
        }
        Ok(())
    }

    /// Every network with its trust settings, by id.
    pub async fn network_trust(&self) -> Result<Vec<NetworkTrust>, RegistryError> {
        Ok(network_trust::Entity::find()
            .order_by_asc(network_trust::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| NetworkTrust {
                id: m.id,
                accept_unsigned: m.accept_unsigned,
                client_salt: m.client_salt,
            })
            .collect())
    }

    /// Stores a new enrollment token (by its hash) for an existing network.
    pub async fn create_enroll_token(&self, t: &NewEnrollToken<'_>) -> Result<i64, RegistryError> {
        if network_trust::Entity::find_by_id(t.network)
            .one(&self.db)
            .await?
            .is_none()
        {
            return Err(RegistryError::UnknownNetwork(t.network.to_owned()));
        }
        let row = enroll_token::ActiveModel {
            id: NotSet,
            token_hash: Set(t.token_hash.to_owned()),
            network: Set(t.network.to_owned()),
            site: Set(t.site.map(str::to_owned)),
            created_ms: Set(t.created_ms),
            expires_ms: Set(t.expires_ms),
            used_ms: Set(None),
            node: Set(None),
        };
        Ok(enroll_token::Entity::insert(row)
            .exec(&self.db)
            .await?
            .last_insert_id)
    }

    /// The enrollment tokens of a network, newest first.
    pub async fn enroll_tokens(
        &self,
        network: &str,
    ) -> Result<Vec<EnrollTokenInfo>, RegistryError> {
        Ok(enroll_token::Entity::find()
            .filter(enroll_token::Column::Network.eq(network))
            .order_by_desc(enroll_token::Column::Id)
            .all(&self.db)
            .await?
            .into_iter()
            .map(|m| EnrollTokenInfo {
                id: m.id,
                network: m.network,
                site: m.site,
                created_ms: m.created_ms,
                expires_ms: m.expires_ms,
                used_ms: m.used_ms,
                node: m.node,
            })
            .collect())
    }

    /// Uses a token and registers the node, in one transaction: the token is
    /// marked used by a conditional update (unused and unexpired), so two
    /// enrollments racing with one token cannot both succeed, on any number
    /// of controllers.
    pub async fn enroll(
        &self,
        token_hash: &str,
        node: &NewNodeKey<'_>,
        now_ms: i64,
    ) -> Result<Enrolled, RegistryError> {
        let txn = self.db.begin().await?;
        let used = enroll_token::Entity::update_many()
            .col_expr(enroll_token::Column::UsedMs, Expr::value(now_ms))
            .col_expr(enroll_token::Column::Node, Expr::value(node.node))
            .filter(enroll_token::Column::TokenHash.eq(token_hash))
            .filter(enroll_token::Column::UsedMs.is_null())
            .filter(enroll_token::Column::ExpiresMs.gt(now_ms))
            .exec(&txn)
            .await?;
        let token = enroll_token::Entity::find()
            .filter(enroll_token::Column::TokenHash.eq(token_hash))
            .one(&txn)
            .await?;
        let token = match (used.rows_affected, token) {
            (1, Some(t)) => t,
            (_, None) => return Err(RegistryError::TokenUnknown),
            (_, Some(t)) if t.used_ms.is_some() => return Err(RegistryError::TokenUsed),
            (_, Some(_)) => return Err(RegistryError::TokenExpired),
        };
        let row = node_key::ActiveModel {
            node: Set(node.node.to_owned()),
            network: Set(token.network.clone()),
            public_key: Set(node.public_key.to_owned()),
            mqtt_password_hash: Set(node.mqtt_password_hash.to_owned()),
            hostname: Set(node.hostname.map(|h| h.chars().take(255).collect())),
            site: Set(token.site.clone()),
            enrolled_ms: Set(now_ms),
            revoked_ms: Set(None),
        };
        if let Err(e) = node_key::Entity::insert(row)
            .exec_without_returning(&txn)
            .await
        {
            return Err(if is_unique_violation(&e) {
                RegistryError::AlreadyEnrolled
            } else {
                e.into()
            });
        }
        let salt = network_trust::Entity::find_by_id(token.network.as_str())
            .one(&txn)
            .await?
            .and_then(|n| n.client_salt);
        txn.commit().await?;
        Ok(Enrolled {
            network: token.network,
            site: token.site,
            node: node.node.to_owned(),
            client_salt: salt,
        })
    }

    /// Every enrolled node, revoked ones included, by network and node.
    pub async fn node_keys(&self) -> Result<Vec<NodeKey>, RegistryError> {
        Ok(node_key::Entity::find()
            .order_by_asc(node_key::Column::Network)
            .order_by_asc(node_key::Column::Node)
            .all(&self.db)
            .await?
            .into_iter()
            .map(NodeKey::from)
            .collect())
    }

    /// One enrolled node, by its id (unique across networks).
    pub async fn node_key(&self, node: &str) -> Result<Option<NodeKey>, RegistryError> {
        Ok(node_key::Entity::find_by_id(node)
            .one(&self.db)
            .await?
            .map(NodeKey::from))
    }

    /// Revokes an enrolled node: its reports and its broker login stop being
    /// accepted. Revoking a revoked node keeps the first time.
    pub async fn revoke_node(
        &self,
        network: &str,
        node: &str,
        now_ms: i64,
    ) -> Result<(), RegistryError> {
        let found = node_key::Entity::find_by_id(node)
            .filter(node_key::Column::Network.eq(network))
            .one(&self.db)
            .await?;
        if found.is_none() {
            return Err(RegistryError::UnknownNode {
                network: network.to_owned(),
                node: node.to_owned(),
            });
        }
        node_key::Entity::update_many()
            .col_expr(node_key::Column::RevokedMs, Expr::value(now_ms))
            .filter(node_key::Column::Node.eq(node))
            .filter(node_key::Column::RevokedMs.is_null())
            .exec(&self.db)
            .await?;
        Ok(())
    }

    /// Revokes an unused enrollment token of `network` by making it expire
    /// at `now_ms` (a conditional update: a token used at the same moment
    /// stays used). `None`: no such token in that network; `Some(false)`:
    /// it was used or had expired already, nothing changed.
    pub async fn revoke_enroll_token(
        &self,
        network: &str,
        id: i64,
        now_ms: i64,
    ) -> Result<Option<bool>, RegistryError> {
        let res = enroll_token::Entity::update_many()
            .col_expr(enroll_token::Column::ExpiresMs, Expr::value(now_ms))
            .filter(enroll_token::Column::Id.eq(id))
            .filter(enroll_token::Column::Network.eq(network))
            .filter(enroll_token::Column::UsedMs.is_null())
            .filter(enroll_token::Column::ExpiresMs.gt(now_ms))
            .exec(&self.db)
            .await?;
        if res.rows_affected > 0 {
            return Ok(Some(true));
        }
        let exists = enroll_token::Entity::find_by_id(id)
            .filter(enroll_token::Column::Network.eq(network))
            .one(&self.db)
            .await?
            .is_some();
        Ok(exists.then_some(false))
    }
}
