//! The fleet at one instant, one row per node, for `/metrics`: status,
//! flapping, site, the latest sample's load, rates and dropped counter, and
//! the latest client count; plus link states and the sites of each network.

use crate::ifaces::{self, Iface};
use crate::nodes::LATEST_SAMPLE_ID;
use crate::{NodeStatus, Store, StoreError};

/// One node as `/metrics` sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetNode {
    /// The network id.
    pub network: String,
    /// The node id.
    pub node: String,
    /// The node's site, if assigned.
    pub site: Option<String>,
    /// Online or offline.
    pub status: NodeStatus,
    /// Whether the node is flapping now.
    pub flapping: bool,
    /// 1-minute load of the latest sample.
    pub load1: Option<f64>,
    /// Bits/s received over all interfaces but `lo` in the latest sample
    /// (`None` before a sample with rates).
    pub rx_bps: Option<f64>,
    /// Bits/s sent over all interfaces but `lo` in the latest sample.
    pub tx_bps: Option<f64>,
    /// Clients of the latest report that counted them.
    pub clients: Option<u64>,
    /// The agent's dropped-reports counter in the latest sample.
    pub dropped: u64,
}

/// Mesh links as reported by the nodes of one network (a link seen from
/// both ends counts once per end), by the reporter's site.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetLinks {
    /// The network id.
    pub network: String,
    /// The reporting node's site, if assigned.
    pub site: Option<String>,
    /// Links up.
    pub up: u64,
    /// Links down.
    pub down: u64,
}

fn nodes_sql() -> String {
    format!(
        "SELECT n.network, n.node, n.site_id, n.status, \
  n.flapping_since_ms, s.load1, s.dropped, \
  s.id AS sample_id, s.interfaces, \
  s.clients_total AS clients \
FROM node n LEFT JOIN sample s ON s.id = {LATEST_SAMPLE_ID} \
ORDER BY n.network, n.node"
    )
}

const LINKS_SQL: &str = "SELECT n.network, n.site_id, \
  SUM(CASE WHEN l.up THEN 1 ELSE 0 END) AS up, SUM(CASE WHEN l.up THEN 0 ELSE 1 END) AS down \
FROM link l JOIN node n ON n.id = l.node_id GROUP BY n.network, n.site_id ORDER BY n.network, n.site_id";

const SITES_SQL: &str = "SELECT network, site FROM site ORDER BY network, site";

/// The sums of the rates of a sample's interfaces but loopback, each `None`
/// when no interface has that rate.
fn rates(ifaces: &[Iface]) -> (Option<f64>, Option<f64>) {
    let sum = |rate: fn(&Iface) -> Option<f64>| {
        ifaces
            .iter()
            .filter(|i| i.name != "lo")
            .filter_map(rate)
            .reduce(|a, b| a + b)
    };
    (sum(|i| i.rx_bps), sum(|i| i.tx_bps))
}

fn unsat(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl Store {
    /// Every node with its latest figures, by network then node id. Two
    /// subqueries per node, each on an index.
    pub async fn fleet_nodes(&self) -> Result<Vec<FleetNode>, StoreError> {
        let rows = self.raw_rows(nodes_sql(), Vec::new()).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let status: String = row.try_get("", "status")?;
            let flapping: Option<i64> = row.try_get("", "flapping_since_ms")?;
            let dropped: Option<i64> = row.try_get("", "dropped")?;
            let clients: Option<i32> = row.try_get("", "clients")?;
            let sample_id: Option<i64> = row.try_get("", "sample_id")?;
            let interfaces: Option<String> = row.try_get("", "interfaces")?;
            let (rx_bps, tx_bps) = match (sample_id, interfaces) {
                (Some(id), Some(json)) => rates(&ifaces::decode(id, &json)?),
                _ => (None, None),
            };
            out.push(FleetNode {
                network: row.try_get("", "network")?,
                node: row.try_get("", "node")?,
                site: row.try_get("", "site_id")?,
                status: NodeStatus::from_db(&status),
                flapping: flapping.is_some(),
                load1: row.try_get("", "load1")?,
                rx_bps,
                tx_bps,
                clients: clients.map(|c| u64::try_from(c).unwrap_or(0)),
                dropped: unsat(dropped.unwrap_or(0)),
            });
        }
        Ok(out)
    }

    /// Link counts by network and reporter's site.
    pub async fn fleet_links(&self) -> Result<Vec<FleetLinks>, StoreError> {
        let rows = self.raw_rows(LINKS_SQL.to_owned(), Vec::new()).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let up: Option<i64> = row.try_get("", "up")?;
            let down: Option<i64> = row.try_get("", "down")?;
            out.push(FleetLinks {
                network: row.try_get("", "network")?,
                site: row.try_get("", "site_id")?,
                up: unsat(up.unwrap_or(0)),
                down: unsat(down.unwrap_or(0)),
            });
        }
        Ok(out)
    }

    /// `(network, site)` for every site, by network then site.
    pub async fn fleet_sites(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = self.raw_rows(SITES_SQL.to_owned(), Vec::new()).await?;
        rows.into_iter()
            .map(|row| Ok((row.try_get("", "network")?, row.try_get("", "site")?)))
            .collect()
    }
}
