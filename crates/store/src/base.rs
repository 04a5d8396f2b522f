//! The last full telemetry report of every node (table `telemetry_base`),
//! for the controller's reassembly of compact (v2) reports after a restart.
//!
//! [`Store::record_batch`] writes the base of each node's last telemetry
//! report in the batch's own transaction, so the stored base is always a
//! committed report, and every report after it is either stored with it or
//! still unacknowledged (the broker delivers it again).

use std::collections::HashMap;

use meshtable_proto::{Telemetry, encode_cbor};
use sea_orm::{ConnectionTrait, Statement, Value};

use crate::batch::placeholder;
use crate::ifaces;
use crate::{Store, StoreError};

/// One interface of one stored sample, as [`Store::interface_rows`] reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct InterfaceRow {
    /// The sample's boot id.
    pub boot_id: String,
    /// The sample's seq.
    pub seq: i64,
    /// The sample's uptime, ms.
    pub uptime_ms: i64,
    /// The interface.
    pub name: String,
    /// Received bytes (cumulative).
    pub rx_bytes: i64,
    /// Sent bytes (cumulative).
    pub tx_bytes: i64,
    /// Received packets (cumulative).
    pub rx_packets: i64,
    /// Derived receive rate, bits per second.
    pub rx_bps: Option<f64>,
    /// Derived send rate, bits per second.
    pub tx_bps: Option<f64>,
}

/// A node's stored base: the CBOR of its last full report and its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TelemetryBase {
    /// The report's boot id.
    pub boot_id: String,
    /// The report's sequence number.
    pub seq: u64,
    /// The full v1 report, CBOR.
    pub report: Vec<u8>,
}

/// Remembers each node's last full report, one `(network, node, report)`
/// per entry, on a connection or in a transaction: [`Store::record_batch`]
/// calls it in its own, with the batch's accepted telemetry reports. For a
/// node named twice, the later entry wins unless it is of the same boot
/// with a smaller seq. A stored base is replaced by one of another boot or
/// a larger seq only, so a redelivered older report never sets it back.
pub(crate) async fn save_bases(
    conn: &impl ConnectionTrait,
    bases: &[(&str, &str, &Telemetry)],
    now_ms: i64,
) -> Result<(), StoreError> {
    // One row per node: PostgreSQL refuses an upsert touching a row twice.
    let mut rows: Vec<(&str, &str, &Telemetry)> = Vec::new();
    let mut index: HashMap<(&str, &str), usize> = HashMap::new();
    for &(network, node, t) in bases {
        match index.get(&(network, node)) {
            Some(&i) => {
                let r = &mut rows[i];
                if r.2.boot_id != t.boot_id || r.2.seq < t.seq {
                    r.2 = t;
                }
            }
            None => {
                index.insert((network, node), rows.len());
                rows.push((network, node, t));
            }
        }
    }
    let backend = conn.get_database_backend();
    // 6 values a row; stay far below SQLite's parameter limit.
    for chunk in rows.chunks(1000) {
        let (source, values) = crate::batch::row_source(
            backend,
            chunk
                .iter()
                .map(|(network, node, t)| {
                    vec![
                        Value::from((*network).to_owned()),
                        Value::from((*node).to_owned()),
                        Value::from(t.boot_id.clone()),
                        Value::from(i64::try_from(t.seq).unwrap_or(i64::MAX)),
                        Value::from(encode_cbor(*t)),
                        Value::from(now_ms),
                    ]
                })
                .collect(),
        );
        let sql = format!(
            "INSERT INTO telemetry_base (network, node, boot_id, seq, report, updated_ms) \
             {source} ON CONFLICT (network, node) DO UPDATE SET \
             boot_id = excluded.boot_id, seq = excluded.seq, report = excluded.report, \
             updated_ms = excluded.updated_ms \
             WHERE telemetry_base.boot_id <> excluded.boot_id \
             OR telemetry_base.seq < excluded.seq"
        );
        conn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
    }
    Ok(())
}

impl Store {
    /// The stored base of a node, if any.
    pub async fn telemetry_base(
        &self,
        network: &str,
        node: &str,
    ) -> Result<Option<TelemetryBase>, StoreError> {
        let backend = self.db.get_database_backend();
        let row = self
            .db
            .query_one_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "SELECT boot_id, seq, report FROM telemetry_base \
                     WHERE network = {} AND node = {}",
                    placeholder(backend, 1),
                    placeholder(backend, 2)
                ),
                [
                    Value::from(network.to_owned()),
                    Value::from(node.to_owned()),
                ],
            ))
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let seq: i64 = row.try_get("", "seq")?;
        Ok(Some(TelemetryBase {
            boot_id: row.try_get("", "boot_id")?,
            seq: u64::try_from(seq).unwrap_or(0),
            report: row.try_get("", "report")?,
        }))
    }

    /// Forgets a node's base (when the node is removed).
    pub async fn forget_telemetry_base(&self, network: &str, node: &str) -> Result<(), StoreError> {
        let backend = self.db.get_database_backend();
        self.db
            .execute_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "DELETE FROM telemetry_base WHERE network = {} AND node = {}",
                    placeholder(backend, 1),
                    placeholder(backend, 2)
                ),
                [
                    Value::from(network.to_owned()),
                    Value::from(node.to_owned()),
                ],
            ))
            .await?;
        Ok(())
    }

    /// Every stored interface row of a node, by boot, seq and name: for
    /// tests and benchmarks that check what ingest stored.
    pub async fn interface_rows(
        &self,
        network: &str,
        node: &str,
    ) -> Result<Vec<InterfaceRow>, StoreError> {
        let backend = self.db.get_database_backend();
        let rows = self
            .db
            .query_all_raw(Statement::from_sql_and_values(
                backend,
                format!(
                    "SELECT s.id AS id, s.boot_id AS boot_id, s.seq AS seq, \
                     s.uptime_ms AS uptime_ms, s.interfaces AS interfaces \
                     FROM sample s JOIN node n ON n.id = s.node_id \
                     WHERE n.network = {} AND n.node = {} ORDER BY s.boot_id, s.seq",
                    placeholder(backend, 1),
                    placeholder(backend, 2)
                ),
                [
                    Value::from(network.to_owned()),
                    Value::from(node.to_owned()),
                ],
            ))
            .await?;
        let mut out = Vec::new();
        for r in &rows {
            let (boot_id, seq, uptime_ms): (String, i64, i64) = (
                r.try_get("", "boot_id")?,
                r.try_get("", "seq")?,
                r.try_get("", "uptime_ms")?,
            );
            let json: String = r.try_get("", "interfaces")?;
            for i in ifaces::decode(r.try_get("", "id")?, &json)? {
                out.push(InterfaceRow {
                    boot_id: boot_id.clone(),
                    seq,
                    uptime_ms,
                    name: i.name,
                    rx_bytes: i.rx_bytes,
                    tx_bytes: i.tx_bytes,
                    rx_packets: i.rx_packets,
                    rx_bps: i.rx_bps,
                    tx_bps: i.tx_bps,
                });
            }
        }
        Ok(out)
    }
}
