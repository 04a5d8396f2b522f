//! Reads that several store modules share: every node of a network with
//! its site and flapping columns, the latest sample of a node in
//! hand-written SQL, and running such statements with their bind
//! parameters on either backend.

use std::collections::HashMap;

use sea_orm::{
    ColumnTrait, ConnectionTrait, EntityTrait, QueryFilter, QueryOrder, QueryResult, Statement,
    Value,
};

use crate::entity::{node, node_extra};
use crate::{Store, StoreError};

/// SQL: the id of the latest sample (by series time, then row id) of the
/// node aliased `n`; one lookup on the `(node_id, t_ms)` index.
pub(crate) const LATEST_SAMPLE_ID: &str = "(SELECT s2.id FROM sample s2 WHERE s2.node_id = n.id \
     ORDER BY s2.t_ms DESC, s2.id DESC LIMIT 1)";

/// Every node of a network: the `node` rows by node id, and their site and
/// flapping columns by row id.
pub(crate) struct NetworkNodes {
    /// The rows, by node id.
    pub(crate) nodes: Vec<node::Model>,
    /// Row id -> site and flapping columns.
    pub(crate) extra: HashMap<i64, node_extra::Model>,
}

impl Store {
    /// Every node of `network` (a cleaned id), by node id, with its site
    /// and flapping columns.
    pub(crate) async fn network_nodes(&self, network: &str) -> Result<NetworkNodes, StoreError> {
        let nodes = node::Entity::find()
            .filter(node::Column::Network.eq(network))
            .order_by_asc(node::Column::Node)
            .all(&self.db)
            .await?;
        let extra = node_extra::Entity::find()
            .filter(node_extra::Column::Network.eq(network))
            .all(&self.db)
            .await?
            .into_iter()
            .map(|e| (e.id, e))
            .collect();
        Ok(NetworkNodes { nodes, extra })
    }

    /// The `n`th (from 1) bind parameter of a hand-written statement on
    /// this store's backend: `$n` on PostgreSQL, `?` on SQLite.
    pub(crate) fn sql_param(&self, n: usize) -> String {
        crate::batch::placeholder(self.db.get_database_backend(), n)
    }

    /// The rows of a hand-written statement whose parameters come from
    /// [`Store::sql_param`].
    pub(crate) async fn raw_rows(
        &self,
        sql: String,
        values: Vec<Value>,
    ) -> Result<Vec<QueryResult>, StoreError> {
        let backend = self.db.get_database_backend();
        Ok(self
            .db
            .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?)
    }
}
