//! Node keys registered by an admin or the demo without an enrollment
//! token: many at once, in one transaction, with no broker password (such
//! nodes publish signed reports through a broker that lets them in some
//! other way, e.g. the demo's anonymous embedded broker).

use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveValue::Set, EntityTrait, TransactionTrait};

use crate::Store;
use crate::registry::{RegistryError, node_key};

/// The broker password hash of a node registered here: no password
/// matches it (it is not a Mosquitto `$7$` string).
pub const NO_PASSWORD: &str = "!";

/// Rows per INSERT (8 values each, far below SQLite's parameter limit).
const CHUNK: usize = 500;

impl Store {
    /// Registers `(node, public key hex)` pairs in `network`, or replaces the
    /// network, key and hostname of nodes already registered (un-revoking
    /// them). The caller checks ids and keys; the network must exist.
    pub async fn register_node_keys(
        &self,
        network: &str,
        keys: &[(String, String)],
        now_ms: i64,
    ) -> Result<(), RegistryError> {
        let txn = self.db.begin().await?;
        for chunk in keys.chunks(CHUNK) {
            let rows = chunk.iter().map(|(node, key)| node_key::ActiveModel {
                node: Set(node.clone()),
                network: Set(network.to_owned()),
                public_key: Set(key.clone()),
                mqtt_password_hash: Set(NO_PASSWORD.to_owned()),
                hostname: Set(None),
                site: Set(None),
                enrolled_ms: Set(now_ms),
                revoked_ms: Set(None),
            });
            node_key::Entity::insert_many(rows)
                .on_conflict(
                    OnConflict::column(node_key::Column::Node)
                        .update_columns([
                            node_key::Column::Network,
                            node_key::Column::PublicKey,
                            node_key::Column::EnrolledMs,
                            node_key::Column::RevokedMs,
                        ])
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(())
    }
}
