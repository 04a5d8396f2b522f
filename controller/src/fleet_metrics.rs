//! The fleet's aggregates on `/metrics`, per network and per site, and the
//! optional per-node series under a cardinality cap.
//!
//! Everything here is read from the store at scrape time
//! ([`FleetDetail::read`]) and set by [`FleetMetrics::set`] in the same
//! critical section as the encoding (see [`crate::metrics::Metrics::render`]).
//! Rates are summed over every interface but `lo` of each node's latest
//! sample, in bytes per second (Prometheus base unit; the store keeps bits).

use std::collections::{BTreeMap, BTreeSet, HashSet};

use meshtable_store::fleet::{FleetLinks, FleetNode};
use meshtable_store::{NodeStatus, Store, StoreError};
use prometheus::{GaugeVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry};

/// Default of `metrics_max_series`: per-node series emitted at most.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// What the per-node series need from the store, beside the node counts
/// [`crate::metrics::FleetSnapshot`] already has.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FleetDetail {
    /// Every node, by network then node id.
    pub nodes: Vec<FleetNode>,
    /// `(network, node)` of every node a maintenance window covers now.
    pub in_maintenance: HashSet<(String, String)>,
    /// Link counts by network and reporter's site.
    pub links: Vec<FleetLinks>,
    /// `(network, site)` of every site, so empty sites show zeros.
    pub sites: Vec<(String, String)>,
}

impl FleetDetail {
    /// Reads the fleet: one query for the nodes, one for the links, one for
    /// the sites and one per network for its maintenance windows.
    pub async fn read(store: &Store, now_ms: i64) -> Result<FleetDetail, StoreError> {
        let nodes = store.fleet_nodes().await?;
        let networks: BTreeSet<String> =
            store.networks().await?.into_iter().map(|n| n.id).collect();
        let mut in_maintenance = HashSet::new();
        for network in &networks {
            for node in store.maintenance_nodes(network, now_ms).await? {
                in_maintenance.insert((network.clone(), node));
            }
        }
        Ok(FleetDetail {
            nodes,
            in_maintenance,
            links: store.fleet_links().await?,
            sites: store.fleet_sites().await?,
        })
    }
}

/// Per-node series settings: off by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PerNode {
    /// Whether per-node series are exported at all.
    pub enabled: bool,
    /// At most this many per-node series; nodes beyond are left out and
    /// counted in `meshtable_metrics_node_series_capped`.
    pub max_series: usize,
}

impl Default for PerNode {
    fn default() -> PerNode {
        PerNode {
            enabled: false,
            max_series: DEFAULT_MAX_SERIES,
        }
    }
}

/// Aggregates over a group of nodes (a network or a site).
#[derive(Debug, Default)]
struct Sums {
    online: u64,
    offline: u64,
    flapping: u64,
    maintenance: u64,
    clients: u64,
    rx_bps: f64,
    tx_bps: f64,
    dropped: u64,
    links_up: u64,
    links_down: u64,
}

impl Sums {
    fn add(&mut self, n: &FleetNode, in_maintenance: bool) {
        match n.status {
            NodeStatus::Online => self.online += 1,
            NodeStatus::Offline => self.offline += 1,
        }
        self.flapping += u64::from(n.flapping);
        self.maintenance += u64::from(in_maintenance);
        self.clients += n.clients.unwrap_or(0);
        self.rx_bps += n.rx_bps.unwrap_or(0.0);
        self.tx_bps += n.tx_bps.unwrap_or(0.0);
        self.dropped = self.dropped.saturating_add(n.dropped);
    }
}

fn int(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The fleet metric families, registered on the controller's registry.
#[derive(Debug)]
pub struct FleetMetrics {
    pub(crate) per_node: PerNode,
    net_flapping: IntGaugeVec,
    net_maintenance: IntGaugeVec,
    net_clients: IntGaugeVec,
    net_rx: GaugeVec,
    net_tx: GaugeVec,
    net_links: IntGaugeVec,
    site_nodes: IntGaugeVec,
    site_flapping: IntGaugeVec,
    site_maintenance: IntGaugeVec,
    site_clients: IntGaugeVec,
    site_rx: GaugeVec,
    site_tx: GaugeVec,
    site_links: IntGaugeVec,
    site_dropped: IntCounterVec,
    node_up: IntGaugeVec,
    node_load1: GaugeVec,
    node_rx: GaugeVec,
    node_tx: GaugeVec,
    node_clients: IntGaugeVec,
    node_series: IntGauge,
    node_series_capped: IntGauge,
}

fn igauge(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<IntGaugeVec, prometheus::Error> {
    let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

fn fgauge(
    registry: &Registry,
    name: &str,
    help: &str,
    labels: &[&str],
) -> Result<GaugeVec, prometheus::Error> {
    let g = GaugeVec::new(Opts::new(name, help), labels)?;
    registry.register(Box::new(g.clone()))?;
    Ok(g)
}

const NET: &[&str] = &["network"];
const SITE: &[&str] = &["network", "site"];
const NODE: &[&str] = &["network", "node"];

impl FleetMetrics {
    /// Registers every fleet family on `registry`.
    pub fn register(
        registry: &Registry,
        per_node: PerNode,
    ) -> Result<FleetMetrics, prometheus::Error> {
        let site_dropped = IntCounterVec::new(
            Opts::new(
                "meshtable_site_agent_reports_dropped_total",
                "Reports dropped by the agents' bounded queues, summed over the latest report of each node of the site.",
            ),
            SITE,
        )?;
        registry.register(Box::new(site_dropped.clone()))?;
        let node_series = IntGauge::new(
            "meshtable_metrics_node_series",
            "Per-node series in this scrape (0 unless metrics_per_node is on).",
        )?;
        registry.register(Box::new(node_series.clone()))?;
        let node_series_capped = IntGauge::new(
            "meshtable_metrics_node_series_capped",
            "Per-node series left out of this scrape because metrics_max_series was reached.",
        )?;
        registry.register(Box::new(node_series_capped.clone()))?;
        Ok(FleetMetrics {
            per_node,
            net_flapping: igauge(
                registry,
                "meshtable_network_nodes_flapping",
                "Nodes flapping now, by network.",
                NET,
            )?,
            net_maintenance: igauge(
                registry,
                "meshtable_network_nodes_in_maintenance",
                "Nodes a maintenance window covers now, by network.",
                NET,
            )?,
            net_clients: igauge(
                registry,
                "meshtable_network_clients",
                "Clients of each node's latest report, summed by network.",
                NET,
            )?,
            net_rx: fgauge(
                registry,
                "meshtable_network_receive_bytes_per_second",
                "Receive rate of each node's latest sample over all interfaces but lo, summed by network.",
                NET,
            )?,
            net_tx: fgauge(
                registry,
                "meshtable_network_transmit_bytes_per_second",
                "Transmit rate of each node's latest sample over all interfaces but lo, summed by network.",
                NET,
            )?,
            net_links: igauge(
                registry,
                "meshtable_network_links",
                "Mesh links as reported by the nodes (once per reporting end), by network and state (up, down).",
                &["network", "state"],
            )?,
            site_nodes: igauge(
                registry,
                "meshtable_site_nodes",
                "Nodes by network, site and status (online, offline).",
                &["network", "site", "status"],
            )?,
            site_flapping: igauge(
                registry,
                "meshtable_site_nodes_flapping",
                "Nodes flapping now, by site.",
                SITE,
            )?,
            site_maintenance: igauge(
                registry,
                "meshtable_site_nodes_in_maintenance",
                "Nodes a maintenance window covers now, by site.",
                SITE,
            )?,
            site_clients: igauge(
                registry,
                "meshtable_site_clients",
                "Clients of each node's latest report, summed by site.",
                SITE,
            )?,
            site_rx: fgauge(
                registry,
                "meshtable_site_receive_bytes_per_second",
                "Receive rate over all interfaces but lo, summed by site.",
                SITE,
            )?,
            site_tx: fgauge(
                registry,
                "meshtable_site_transmit_bytes_per_second",
                "Transmit rate over all interfaces but lo, summed by site.",
                SITE,
            )?,
            site_links: igauge(
                registry,
                "meshtable_site_links",
                "Mesh links reported by the site's nodes, by state (up, down).",
                &["network", "site", "state"],
            )?,
            site_dropped,
            node_up: igauge(
                registry,
                "meshtable_node_up",
                "1 when the node is online, 0 when offline (metrics_per_node only).",
                NODE,
            )?,
            node_load1: fgauge(
                registry,
                "meshtable_node_load1",
                "1-minute load of the node's latest sample (metrics_per_node only).",
                NODE,
            )?,
            node_rx: fgauge(
                registry,
                "meshtable_node_receive_bytes_per_second",
                "Receive rate of the node's latest sample over all interfaces but lo (metrics_per_node only).",
                NODE,
            )?,
            node_tx: fgauge(
                registry,
                "meshtable_node_transmit_bytes_per_second",
                "Transmit rate of the node's latest sample over all interfaces but lo (metrics_per_node only).",
                NODE,
            )?,
            node_clients: igauge(
                registry,
                "meshtable_node_clients",
                "Clients of the node's latest report (metrics_per_node only).",
                NODE,
            )?,
            node_series,
            node_series_capped,
        })
    }

    /// Replaces every fleet series with those of `detail`; `networks` lists
    /// every network so that one without nodes still shows zeros.
    pub fn set(&self, networks: &BTreeSet<&str>, detail: &FleetDetail) {
        let mut nets: BTreeMap<&str, Sums> =
            networks.iter().map(|n| (*n, Sums::default())).collect();
        let mut sites: BTreeMap<(&str, &str), Sums> = detail
            .sites
            .iter()
            .map(|(n, s)| ((n.as_str(), s.as_str()), Sums::default()))
            .collect();
        for n in &detail.nodes {
            let maint = detail
                .in_maintenance
                .contains(&(n.network.clone(), n.node.clone()));
            nets.entry(n.network.as_str()).or_default().add(n, maint);
            if let Some(site) = &n.site {
                sites
                    .entry((n.network.as_str(), site.as_str()))
                    .or_default()
                    .add(n, maint);
            }
        }
        for l in &detail.links {
            let net = nets.entry(l.network.as_str()).or_default();
            net.links_up += l.up;
            net.links_down += l.down;
            if let Some(site) = &l.site {
                let s = sites
                    .entry((l.network.as_str(), site.as_str()))
                    .or_default();
                s.links_up += l.up;
                s.links_down += l.down;
            }
        }
        for v in [
            &self.net_flapping,
            &self.net_maintenance,
            &self.net_clients,
            &self.net_links,
        ] {
            v.reset();
        }
        for v in [
            &self.site_nodes,
            &self.site_flapping,
            &self.site_maintenance,
            &self.site_clients,
            &self.site_links,
        ] {
            v.reset();
        }
        for v in [&self.net_rx, &self.net_tx, &self.site_rx, &self.site_tx] {
            v.reset();
        }
        self.site_dropped.reset();
        for (network, s) in &nets {
            let l = [*network];
            self.net_flapping.with_label_values(&l).set(int(s.flapping));
            self.net_maintenance
                .with_label_values(&l)
                .set(int(s.maintenance));
            self.net_clients.with_label_values(&l).set(int(s.clients));
            self.net_rx.with_label_values(&l).set(s.rx_bps / 8.0);
            self.net_tx.with_label_values(&l).set(s.tx_bps / 8.0);
            self.net_links
                .with_label_values(&[*network, "up"])
                .set(int(s.links_up));
            self.net_links
                .with_label_values(&[*network, "down"])
                .set(int(s.links_down));
        }
        for ((network, site), s) in &sites {
            let l = [*network, *site];
            self.site_nodes
                .with_label_values(&[*network, *site, "online"])
                .set(int(s.online));
            self.site_nodes
                .with_label_values(&[*network, *site, "offline"])
                .set(int(s.offline));
            self.site_flapping
                .with_label_values(&l)
                .set(int(s.flapping));
            self.site_maintenance
                .with_label_values(&l)
                .set(int(s.maintenance));
            self.site_clients.with_label_values(&l).set(int(s.clients));
            self.site_rx.with_label_values(&l).set(s.rx_bps / 8.0);
            self.site_tx.with_label_values(&l).set(s.tx_bps / 8.0);
            self.site_links
                .with_label_values(&[*network, *site, "up"])
                .set(int(s.links_up));
            self.site_links
                .with_label_values(&[*network, *site, "down"])
                .set(int(s.links_down));
            self.site_dropped.with_label_values(&l).inc_by(s.dropped);
        }
        self.set_per_node(&detail.nodes);
    }

    /// The per-node series, in node order, until the cap: a node's series
    /// go in whole or not at all, and every node after the first left out
    /// is left out too.
    fn set_per_node(&self, nodes: &[FleetNode]) {
        for v in [&self.node_up, &self.node_clients] {
            v.reset();
        }
        for v in [&self.node_load1, &self.node_rx, &self.node_tx] {
            v.reset();
        }
        let (mut emitted, mut capped) = (0usize, 0usize);
        if self.per_node.enabled {
            for n in nodes {
                let k = 1
                    + usize::from(n.load1.is_some())
                    + usize::from(n.rx_bps.is_some())
                    + usize::from(n.tx_bps.is_some())
                    + usize::from(n.clients.is_some());
                if capped > 0 || emitted + k > self.per_node.max_series {
                    capped += k;
                    continue;
                }
                emitted += k;
                let l = [n.network.as_str(), n.node.as_str()];
                self.node_up
                    .with_label_values(&l)
                    .set(i64::from(n.status == NodeStatus::Online));
                if let Some(v) = n.load1 {
                    self.node_load1.with_label_values(&l).set(v);
                }
                if let Some(v) = n.rx_bps {
                    self.node_rx.with_label_values(&l).set(v / 8.0);
                }
                if let Some(v) = n.tx_bps {
                    self.node_tx.with_label_values(&l).set(v / 8.0);
                }
                if let Some(v) = n.clients {
                    self.node_clients.with_label_values(&l).set(int(v));
                }
            }
        }
        self.node_series
            .set(i64::try_from(emitted).unwrap_or(i64::MAX));
        self.node_series_capped
            .set(i64::try_from(capped).unwrap_or(i64::MAX));
    }
}
