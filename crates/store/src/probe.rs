//! Counts for benchmarks and tests that check what ingest stored: how many
//! samples, and which report keys.

use sea_orm::{ConnectionTrait, Statement, Value};

use crate::{Store, StoreError};

/// A stored report's key: (node, boot_id, seq).
pub type ReportKey = (String, String, i64);

impl Store {
    /// Telemetry samples stored, over all networks.
    pub async fn sample_count(&self) -> Result<u64, StoreError> {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                self.db.get_database_backend(),
                "SELECT COUNT(*) AS n FROM sample",
            ))
            .await?;
        let n: i64 = match row {
            Some(r) => r.try_get("", "n")?,
            None => 0,
        };
        Ok(u64::try_from(n).unwrap_or(0))
    }

    /// The largest sample id (0 when there is none): it grows with every
    /// sample stored, and reading it costs one index probe, so a benchmark
    /// can poll it while ingest runs.
    pub async fn last_sample_id(&self) -> Result<i64, StoreError> {
        let row = self
            .db
            .query_one_raw(Statement::from_string(
                self.db.get_database_backend(),
                "SELECT COALESCE(MAX(id), 0) AS n FROM sample",
            ))
            .await?;
        Ok(match row {
            Some(r) => r.try_get("", "n")?,
            None => 0,
        })
    }

    /// The key of every sample stored for `network`, one entry per row (a
    /// key stored twice would appear twice), sorted.
    pub async fn sample_keys(&self, network: &str) -> Result<Vec<ReportKey>, StoreError> {
        let backend = self.db.get_database_backend();
        let p = match backend {
            sea_orm::DbBackend::Postgres => "$1",
            _ => "?",
        };
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "SELECT n.node AS node, s.boot_id AS boot_id, s.seq AS seq \
                     FROM sample s JOIN node n ON n.id = s.node_id \
                     WHERE n.network = {p} ORDER BY n.node, s.boot_id, s.seq"
                ),
                [Value::from(network.to_owned())],
            ))
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("", "node")?,
                    r.try_get("", "boot_id")?,
                    r.try_get("", "seq")?,
                ))
            })
            .collect()
    }
}
