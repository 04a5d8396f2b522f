//! The mesh as the nodes report it: each report's neighbours, radios,
//! stations, clients and gateway, and the graph joined from them.
//!
//! # Stored
//!
//! - `link`: one row per (reporting node, protocol, interface, neighbour
//!   address): one *direction* of a link, with its quality as the reporter
//!   sees it (babel rxcost/txcost/cost, batman-adv TQ, and the wifi signal
//!   when a mesh-peer station on the same interface has the neighbour's MAC).
//!   A link is *up* while it is reported; [`Store::sweep_links`] marks it
//!   down when its reporter has not reported it for `missed` intervals.
//!   Every change is kept in `link_event`.
//! - `node_mesh`: the latest radios, stations (client ids left out) and
//!   gateway of each node.
//!
//! A report's client counts are kept in its `sample` row.
//! Backfilled reports (replayed from an agent's spool) describe the past:
//! they do not touch links or the latest radios.
//!
//! # Joining
//!
//! [`Store::topology`] joins a link's far end to a node by matching the
//! neighbour's address against the interfaces in the latest hello of every
//! node of the same network: the interface MACs, the IP part of the
//! addresses (IPv6 compared in canonical form), and for batman-adv the
//! originator. A babel neighbour's link-local address built from a MAC
//! (EUI-64) also matches that MAC. A far end that matches no node stays
//! unresolved and is shown by its address.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::IpAddr;

use meshtable_proto::{
    Clients, Firmware, Gateway, Hello, InterfaceInfo, Location, MeshProtocol, Neighbour, Radio,
    Station, Telemetry,
};
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseTransaction, EntityTrait, ModelTrait, QueryFilter,
    QueryOrder, QuerySelect, Value,
};
use serde::{Deserialize, Serialize};

use crate::entity::{link, link_event, node, node_mesh};
use crate::liveness::{NodeState, opt_rfc3339_ms};
use crate::nodes::{LATEST_SAMPLE_ID, NetworkNodes};
use crate::time::rfc3339_ms;
use crate::write::clean;
use crate::{NodeStatus, Store, StoreError};

/// Rows per insert statement (well below both backends' parameter limits).
const INSERT_CHUNK: usize = 1_000;

/// One stored telemetry report whose mesh parts are to be recorded.
pub(crate) struct MeshReport<'a> {
    pub node_id: i64,
    /// The sample's series time.
    pub t_ms: i64,
    /// Controller clock at reception.
    pub received_ms: i64,
    pub telemetry: &'a Telemetry,
}

fn protocol_str(p: MeshProtocol) -> &'static str {
    match p {
        MeshProtocol::Babel => "babel",
        MeshProtocol::BatmanAdv => "batman_adv",
    }
}

fn protocol_from(s: &str) -> MeshProtocol {
    if s == "batman_adv" {
        MeshProtocol::BatmanAdv
    } else {
        MeshProtocol::Babel
    }
}

/// An address as compared: a MAC or an IP in canonical lowercase form, the
/// CIDR prefix length and an IPv6 zone dropped.
pub fn normalize_address(s: &str) -> String {
    let s = s.trim();
    let s = s.split('/').next().unwrap_or(s);
    let s = s.split('%').next().unwrap_or(s);
    match s.parse::<IpAddr>() {
        Ok(ip) => ip.to_string(),
        Err(_) => s.to_ascii_lowercase(),
    }
}

/// The MAC an EUI-64 IPv6 address (`fe80::xxxx:xxff:fexx:xxxx`) was built from.
pub fn eui64_mac(address: &str) -> Option<String> {
    let IpAddr::V6(ip) = normalize_address(address).parse::<IpAddr>().ok()? else {
        return None;
    };
    let o = ip.octets();
    if o[11] != 0xff || o[12] != 0xfe {
        return None;
    }
    let mac = [o[8] ^ 0x02, o[9], o[10], o[13], o[14], o[15]];
    Some(
        mac.iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

/// The wifi signal of the mesh peer behind a neighbour, if a station of
/// the same interface has its MAC.
fn peer_signal(t: &Telemetry, n: &Neighbour, address: &str) -> Option<i32> {
    let mac = match n.protocol {
        MeshProtocol::BatmanAdv => Some(address.to_owned()),
        MeshProtocol::Babel => eui64_mac(address),
    }?;
    t.stations
        .iter()
        .find(|s| {
            s.ifname == n.ifname
                && s.mac
                    .as_deref()
                    .is_some_and(|m| normalize_address(m) == mac)
        })
        .and_then(|s| s.signal_avg_dbm.or(s.signal_dbm))
        .map(i32::from)
}

fn opt_i64(v: Option<u32>) -> Option<i64> {
    v.map(i64::from)
}

/// Stations as stored: without client identifiers.
fn stored_stations(stations: &[Station]) -> Vec<Station> {
    stations
        .iter()
        .map(|s| Station {
            client_id: None,
            ..s.clone()
        })
        .collect()
}

/// Records the mesh parts of stored reports, in batch order (see the
/// module documentation). Called by `record_batch` in its transaction.
pub(crate) async fn record_reports(
    txn: &DatabaseTransaction,
    reports: &[MeshReport<'_>],
) -> Result<(), StoreError> {
    let live: Vec<&MeshReport<'_>> = reports.iter().filter(|r| !r.telemetry.backfill).collect();
    if live.is_empty() {
        return Ok(());
    }
    record_latest(txn, &live).await?;
    record_links(txn, &live).await
}

fn chunks<T>(rows: Vec<T>) -> Vec<Vec<T>> {
    let mut out = Vec::new();
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        out.push(rows.by_ref().take(INSERT_CHUNK).collect());
    }
    out
}

/// The latest radios, stations and gateway per node: the newest report of
/// the batch, unless a newer one is stored.
async fn record_latest(
    txn: &DatabaseTransaction,
    live: &[&MeshReport<'_>],
) -> Result<(), StoreError> {
    let mut newest: BTreeMap<i64, &MeshReport<'_>> = BTreeMap::new();
    for r in live {
        match newest.get(&r.node_id) {
            Some(prev) if prev.t_ms > r.t_ms => {}
            _ => {
                newest.insert(r.node_id, r);
            }
        }
    }
    let stored: HashMap<i64, i64> = node_mesh::Entity::find()
        .select_only()
        .column(node_mesh::Column::NodeId)
        .column(node_mesh::Column::TMs)
        .filter(node_mesh::Column::NodeId.is_in(newest.keys().copied()))
        .into_tuple::<(i64, i64)>()
        .all(txn)
        .await?
        .into_iter()
        .collect();
    let mut rows = Vec::new();
    let mut cleared = Vec::new();
    for (&node_id, r) in &newest {
        if stored.get(&node_id).is_some_and(|&t| t > r.t_ms) {
            continue;
        }
        let t = r.telemetry;
        if t.radios.is_empty() && t.stations.is_empty() && t.gateway.is_none() {
            if stored.contains_key(&node_id) {
                cleared.push(node_id);
            }
            continue;
        }
        rows.push(node_mesh::ActiveModel {
            node_id: Set(node_id),
            t_ms: Set(r.t_ms),
            radios: Set(to_json(&t.radios)?),
            stations: Set(to_json(&stored_stations(&t.stations))?),
            gateway: Set(match &t.gateway {
                Some(g) => Some(to_json(g)?),
                None => None,
            }),
        });
    }
    if !cleared.is_empty() {
        node_mesh::Entity::delete_many()
            .filter(node_mesh::Column::NodeId.is_in(cleared))
            .exec(txn)
            .await?;
    }
    for chunk in chunks(rows) {
        node_mesh::Entity::insert_many(chunk)
            .on_conflict(
                OnConflict::column(node_mesh::Column::NodeId)
                    .update_columns([
                        node_mesh::Column::TMs,
                        node_mesh::Column::Radios,
                        node_mesh::Column::Stations,
                        node_mesh::Column::Gateway,
                    ])
                    .to_owned(),
            )
            .exec_without_returning(txn)
            .await?;
    }
    Ok(())
}

/// A value as stored in a JSON column.
fn to_json<T: Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Invalid(format!("does not serialize: {e}")))
}

/// Identifies one direction of a link: (node id, protocol, ifname, address).
type LinkKey = (i64, String, String, String);

/// Upserts the reported neighbours: new links are inserted up, links that
/// were down come up, and quality and `last_seen` follow the reports.
async fn record_links(
    txn: &DatabaseTransaction,
    live: &[&MeshReport<'_>],
) -> Result<(), StoreError> {
    let node_ids: Vec<i64> = {
        let mut ids: Vec<i64> = live
            .iter()
            .filter(|r| !r.telemetry.neighbours.is_empty())
            .map(|r| r.node_id)
            .collect();
        ids.sort_unstable();
        ids.dedup();
        ids
    };
    if node_ids.is_empty() {
        return Ok(());
    }
    let mut existing: HashMap<LinkKey, (link::Model, bool)> = HashMap::new();
    for chunk in node_ids.chunks(INSERT_CHUNK) {
        for row in link::Entity::find()
            .filter(link::Column::NodeId.is_in(chunk.iter().copied()))
            .all(txn)
            .await?
        {
            let key = (
                row.node_id,
                row.protocol.clone(),
                row.ifname.clone(),
                row.address.clone(),
            );
            existing.insert(key, (row, false));
        }
    }
    // New links in batch order, and events of existing links.
    let mut new_links: Vec<(LinkKey, link::Model)> = Vec::new();
    let mut new_index: HashMap<LinkKey, usize> = HashMap::new();
    let mut events: Vec<(i64, i64, bool)> = Vec::new();
    for r in live {
        let t = r.telemetry;
        let mut seen: HashSet<LinkKey> = HashSet::new();
        for n in &t.neighbours {
            let address = clean(&normalize_address(&n.address));
            let key: LinkKey = (
                r.node_id,
                protocol_str(n.protocol).to_owned(),
                clean(&n.ifname),
                address.clone(),
            );
            // When one report lists a neighbour twice, the first entry counts.
            if !seen.insert(key.clone()) {
                continue;
            }
            let signal = peer_signal(t, n, &address);
            let apply = |row: &mut link::Model| {
                row.originator = n
                    .originator
                    .as_deref()
                    .map(|o| clean(&normalize_address(o)));
                row.rxcost = opt_i64(n.rxcost);
                row.txcost = opt_i64(n.txcost);
                row.cost = opt_i64(n.cost);
                row.tq = n.tq.map(i32::from);
                row.best = n.best;
                row.signal_dbm = signal;
            };
            if let Some((row, dirty)) = existing.get_mut(&key) {
                if r.received_ms < row.last_seen_ms {
                    continue;
                }
                apply(row);
                row.last_seen_ms = r.received_ms;
                if !row.up {
                    row.up = true;
                    row.up_since_ms = r.received_ms;
                    events.push((row.id, r.received_ms, true));
                }
                *dirty = true;
            } else if let Some(&i) = new_index.get(&key) {
                let row = &mut new_links[i].1;
                if r.received_ms >= row.last_seen_ms {
                    apply(row);
                    row.last_seen_ms = r.received_ms;
                }
            } else {
                let mut row = link::Model {
                    id: 0,
                    node_id: r.node_id,
                    protocol: key.1.clone(),
                    ifname: key.2.clone(),
                    address: key.3.clone(),
                    originator: None,
                    rxcost: None,
                    txcost: None,
                    cost: None,
                    tq: None,
                    best: false,
                    signal_dbm: None,
                    first_seen_ms: r.received_ms,
                    last_seen_ms: r.received_ms,
                    up: true,
                    up_since_ms: r.received_ms,
                };
                apply(&mut row);
                new_index.insert(key.clone(), new_links.len());
                new_links.push((key, row));
            }
        }
    }

    // Every changed link in one statement (or a few).
    let columns = [
        link::Column::Id,
        link::Column::Originator,
        link::Column::Rxcost,
        link::Column::Txcost,
        link::Column::Cost,
        link::Column::Tq,
        link::Column::Best,
        link::Column::SignalDbm,
        link::Column::LastSeenMs,
        link::Column::Up,
        link::Column::UpSinceMs,
    ];
    let names = columns.iter().map(sea_orm::Iden::to_string).collect();
    let mut changed: Vec<&link::Model> = existing
        .values()
        .filter(|(_, dirty)| *dirty)
        .map(|(row, _)| row)
        .collect();
    // In id order, so that concurrent writers lock rows in the same order.
    changed.sort_by_key(|row| row.id);
    let rows: Vec<Vec<Value>> = changed
        .into_iter()
        .map(|row| columns.iter().map(|c| row.get(*c)).collect())
        .collect();
    crate::batch::update_rows(txn, "link", names, rows).await?;

    if !new_links.is_empty() {
        let first_seen: HashMap<LinkKey, i64> = new_links
            .iter()
            .map(|(k, r)| (k.clone(), r.first_seen_ms))
            .collect();
        let models: Vec<link::ActiveModel> = new_links
            .into_iter()
            .map(|(_, r)| link::ActiveModel {
                id: NotSet,
                node_id: Set(r.node_id),
                protocol: Set(r.protocol),
                ifname: Set(r.ifname),
                address: Set(r.address),
                originator: Set(r.originator),
                rxcost: Set(r.rxcost),
                txcost: Set(r.txcost),
                cost: Set(r.cost),
                tq: Set(r.tq),
                best: Set(r.best),
                signal_dbm: Set(r.signal_dbm),
                first_seen_ms: Set(r.first_seen_ms),
                last_seen_ms: Set(r.last_seen_ms),
                up: Set(r.up),
                up_since_ms: Set(r.up_since_ms),
            })
            .collect();
        for chunk in chunks(models) {
            link::Entity::insert_many(chunk)
                .on_conflict_do_nothing_on([
                    link::Column::NodeId,
                    link::Column::Protocol,
                    link::Column::Ifname,
                    link::Column::Address,
                ])
                .exec_without_returning(txn)
                .await?;
        }
        // Their ids, for the "up" events.
        for chunk in node_ids.chunks(INSERT_CHUNK) {
            for row in link::Entity::find()
                .filter(link::Column::NodeId.is_in(chunk.iter().copied()))
                .all(txn)
                .await?
            {
                let key = (row.node_id, row.protocol, row.ifname, row.address);
                if let Some(&t) = first_seen.get(&key)
                    && row.first_seen_ms == t
                {
                    events.push((row.id, t, true));
                }
            }
        }
    }
    record_link_events(txn, &events).await
}

async fn record_link_events<C: ConnectionTrait>(
    db: &C,
    events: &[(i64, i64, bool)],
) -> Result<(), StoreError> {
    let rows: Vec<link_event::ActiveModel> = events
        .iter()
        .map(|&(link_id, t_ms, up)| link_event::ActiveModel {
            id: NotSet,
            link_id: Set(link_id),
            t_ms: Set(t_ms),
            up: Set(up),
        })
        .collect();
    for chunk in chunks(rows) {
        link_event::Entity::insert_many(chunk)
            .exec_without_returning(db)
            .await?;
    }
    Ok(())
}

/// One end of a link in the graph.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEnd {
    /// The node id, when the address joined to a node of the network.
    pub node: Option<String>,
    /// That node's interface carrying the address, when known.
    pub ifname: Option<String>,
    /// The address as reported (MAC or IP).
    pub address: String,
}

/// One direction of a link, as its source reports it.
///
/// JSON: `{"source","source_ifname","target":{"node","ifname","address"},
/// "protocol","rxcost","txcost","cost","tq","best","signal_dbm","up",
/// "up_since","first_seen","last_seen"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkView {
    /// The link's row id.
    pub id: i64,
    /// The reporting node.
    pub source: String,
    /// The reporter's interface.
    pub source_ifname: String,
    /// The far end.
    pub target: LinkEnd,
    /// The routing protocol that reported it.
    pub protocol: MeshProtocol,
    /// babel: cost of receiving from the neighbour.
    pub rxcost: Option<u32>,
    /// babel: cost of sending to the neighbour.
    pub txcost: Option<u32>,
    /// babel: the link cost babeld uses.
    pub cost: Option<u32>,
    /// batman-adv: transmit quality 0-255.
    pub tq: Option<u8>,
    /// batman-adv: best next hop towards its originator.
    pub best: bool,
    /// Wifi signal of the mesh peer, dBm, when known.
    pub signal_dbm: Option<i32>,
    /// Whether the link is up.
    pub up: bool,
    /// When it last came up (or was first seen), Unix ms.
    #[serde(rename = "up_since", with = "rfc3339_ms")]
    pub up_since_ms: i64,
    /// First report, Unix ms.
    #[serde(rename = "first_seen", with = "rfc3339_ms")]
    pub first_seen_ms: i64,
    /// Latest report, Unix ms.
    #[serde(rename = "last_seen", with = "rfc3339_ms")]
    pub last_seen_ms: i64,
}

/// A link going up or down.
///
/// JSON: `{"time","up"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinkEvent {
    /// When, Unix ms.
    #[serde(rename = "time", with = "rfc3339_ms")]
    pub t_ms: i64,
    /// Up (`true`) or down.
    pub up: bool,
}

/// The latest gauges of a node, for maps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct NodeGauges {
    /// Series time of the sample, Unix ms.
    #[serde(rename = "time", with = "rfc3339_ms")]
    pub t_ms: i64,
    /// One-minute load average.
    pub load1: f64,
    /// Used share of memory, 0..1.
    pub memory_usage: Option<f64>,
    /// Used share of the root filesystem, 0..1.
    pub rootfs_usage: Option<f64>,
    /// Boot time (sample time minus uptime), Unix ms.
    #[serde(rename = "boot", with = "rfc3339_ms")]
    pub boot_ms: i64,
}

/// A node of the graph.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphNode {
    /// The node id.
    pub node: String,
    /// Hostname from the latest hello.
    pub hostname: Option<String>,
    /// Hardware model from the latest hello.
    pub model: Option<String>,
    /// Board name from the latest hello.
    pub board: Option<String>,
    /// Firmware from the latest hello.
    pub firmware: Option<Firmware>,
    /// The site the node belongs to.
    pub site: Option<String>,
    /// Where it is, from the latest hello.
    pub location: Option<Location>,
    /// Online or offline.
    pub status: NodeStatus,
    /// Online, offline or flapping.
    pub state: NodeState,
    /// Its interfaces, from the latest hello.
    pub interfaces: Vec<InterfaceInfo>,
    /// Its interfaces' MACs (lowercase), in hello order, without duplicates.
    pub macs: Vec<String>,
    /// Its interfaces' IP addresses (canonical, no prefix), in hello order.
    pub addresses: Vec<String>,
    /// First message, Unix ms.
    #[serde(rename = "first_seen", with = "rfc3339_ms")]
    pub first_seen_ms: i64,
    /// Latest message, Unix ms.
    #[serde(rename = "last_seen", with = "rfc3339_ms")]
    pub last_seen_ms: i64,
    /// Since when it is flapping.
    #[serde(rename = "flapping_since", with = "opt_rfc3339_ms")]
    pub flapping_since_ms: Option<i64>,
    /// Its default route, as last reported.
    pub gateway: Option<Gateway>,
    /// Whether it is an uplink: its default route leaves through an
    /// interface that is not a mesh link, not via another node of the network.
    pub uplink: bool,
    /// The node its default route goes through, when that is a node of the network.
    pub gateway_nexthop: Option<String>,
    /// The uplink node its traffic leaves through (following next hops).
    pub gateway_node: Option<String>,
    /// Client counts of its latest report, if that report had them.
    pub clients: Option<Clients>,
    /// Latest gauges.
    pub gauges: Option<NodeGauges>,
}

/// The mesh graph of a network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Graph {
    /// The network id.
    pub network: String,
    /// Every node of the network, by id.
    pub nodes: Vec<GraphNode>,
    /// Link directions (only those up, unless asked for all), by source,
    /// then interface, then address.
    pub links: Vec<LinkView>,
}

/// The mesh parts of a node's detail.
///
/// JSON: `{"site","state","flapping_since","in_maintenance","radios",
/// "stations","neighbours","gateway","uplink","clients"}`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct NodeMesh {
    /// The site the node belongs to.
    pub site: Option<String>,
    /// Online, offline or flapping.
    pub state: Option<NodeState>,
    /// Since when it is flapping.
    #[serde(rename = "flapping_since", with = "opt_rfc3339_ms", default)]
    pub flapping_since_ms: Option<i64>,
    /// Whether a maintenance window covers it now.
    pub in_maintenance: bool,
    /// The latest radios.
    pub radios: Vec<Radio>,
    /// The latest stations (mesh peers and uplink; client ids left out).
    pub stations: Vec<Station>,
    /// Its links (up and down), as it reports them, far ends joined.
    pub neighbours: Vec<LinkView>,
    /// Its default route.
    pub gateway: Option<Gateway>,
    /// Whether it is an uplink node.
    pub uplink: bool,
    /// Client counts of its latest report, if that report had them.
    pub clients: Option<Clients>,
}

/// What a node's interfaces answer to.
#[derive(Default)]
struct AddressIndex {
    /// Normalized address or MAC -> (node, ifname).
    by_address: HashMap<String, (String, String)>,
    /// Node -> its interface names.
    ifnames: HashMap<String, HashSet<String>>,
}

impl AddressIndex {
    fn add(&mut self, node: &str, hello: &Hello) {
        for i in &hello.interfaces {
            self.ifnames
                .entry(node.to_owned())
                .or_default()
                .insert(i.name.clone());
            let mut keys = Vec::new();
            if let Some(mac) = &i.mac {
                keys.push(normalize_address(mac));
            }
            for a in &i.addresses {
                keys.push(normalize_address(a));
            }
            for k in keys {
                if k.is_empty() || k == "00:00:00:00:00:00" {
                    continue;
                }
                // Link-local and loopback addresses repeat across nodes;
                // the first node keeps them.
                self.by_address
                    .entry(k)
                    .or_insert_with(|| (node.to_owned(), i.name.clone()));
            }
        }
    }

    fn resolve(&self, protocol: MeshProtocol, address: &str, originator: Option<&str>) -> LinkEnd {
        let found = self
            .by_address
            .get(address)
            .or_else(|| {
                (protocol == MeshProtocol::Babel)
                    .then(|| eui64_mac(address))
                    .flatten()
                    .and_then(|m| self.by_address.get(&m))
            })
            .map(|(n, i)| (n.clone(), Some(i.clone())))
            .or_else(|| {
                originator
                    .and_then(|o| self.by_address.get(o))
                    .map(|(n, _)| (n.clone(), None))
            });
        LinkEnd {
            node: found.as_ref().map(|(n, _)| n.clone()),
            ifname: found.and_then(|(_, i)| i),
            address: address.to_owned(),
        }
    }
}

fn parse_json<T: serde::de::DeserializeOwned>(json: &str, what: &str) -> Option<T> {
    serde_json::from_str(json)
        .inspect_err(|e| tracing::warn!(what, error = %e, "stored json does not parse"))
        .ok()
}

fn link_view(row: link::Model, source: String, index: &AddressIndex) -> LinkView {
    let protocol = protocol_from(&row.protocol);
    let target = index.resolve(protocol, &row.address, row.originator.as_deref());
    let u32_of = |v: Option<i64>| v.and_then(|v| u32::try_from(v).ok());
    LinkView {
        id: row.id,
        source,
        source_ifname: row.ifname,
        target,
        protocol,
        rxcost: u32_of(row.rxcost),
        txcost: u32_of(row.txcost),
        cost: u32_of(row.cost),
        tq: row.tq.and_then(|v| u8::try_from(v).ok()),
        best: row.best,
        signal_dbm: row.signal_dbm,
        up: row.up,
        up_since_ms: row.up_since_ms,
        first_seen_ms: row.first_seen_ms,
        last_seen_ms: row.last_seen_ms,
    }
}

impl Store {
    /// Marks down every up link whose reporter has not reported it since
    /// `now_ms - missed * interval` (the reporter's hello interval, or
    /// `default_interval_ms`), and records the event. Returns how many went
    /// down. Idempotent; a link reported meanwhile is left alone.
    pub async fn sweep_links(
        &self,
        now_ms: i64,
        missed: u32,
        default_interval_ms: i64,
    ) -> Result<u64, StoreError> {
        let txn = self.begin_write().await?;
        let up: Vec<(i64, i64, i64)> = link::Entity::find()
            .select_only()
            .column(link::Column::Id)
            .column(link::Column::NodeId)
            .column(link::Column::LastSeenMs)
            .filter(link::Column::Up.eq(true))
            .into_tuple()
            .all(&txn)
            .await?;
        if up.is_empty() {
            txn.commit().await?;
            return Ok(0);
        }
        let mut node_ids: Vec<i64> = up.iter().map(|&(_, n, _)| n).collect();
        node_ids.sort_unstable();
        node_ids.dedup();
        let mut intervals: HashMap<i64, Option<i64>> = HashMap::new();
        for chunk in node_ids.chunks(INSERT_CHUNK) {
            let rows: Vec<(i64, Option<i64>)> = node::Entity::find()
                .select_only()
                .column(node::Column::Id)
                .column(node::Column::IntervalMs)
                .filter(node::Column::Id.is_in(chunk.iter().copied()))
                .into_tuple()
                .all(&txn)
                .await?;
            intervals.extend(rows);
        }
        let mut events = Vec::new();
        for (id, node_id, last_seen_ms) in up {
            let interval = intervals
                .get(&node_id)
                .copied()
                .flatten()
                .unwrap_or(default_interval_ms)
                .max(0);
            let deadline = now_ms.saturating_sub(interval.saturating_mul(i64::from(missed)));
            if last_seen_ms >= deadline {
                continue;
            }
            let res = link::Entity::update_many()
                .col_expr(link::Column::Up, Expr::val(false))
                .filter(link::Column::Id.eq(id))
                .filter(link::Column::Up.eq(true))
                .filter(link::Column::LastSeenMs.eq(last_seen_ms))
                .exec(&txn)
                .await?;
            if res.rows_affected == 1 {
                events.push((id, now_ms, false));
            }
        }
        record_link_events(&txn, &events).await?;
        txn.commit().await?;
        Ok(events.len() as u64)
    }

    /// The up/down history of one link of a network, oldest first.
    pub async fn link_events(
        &self,
        network: &str,
        link_id: i64,
    ) -> Result<Option<Vec<LinkEvent>>, StoreError> {
        let Some(row) = link::Entity::find_by_id(link_id).one(&self.db).await? else {
            return Ok(None);
        };
        let in_network = node::Entity::find_by_id(row.node_id)
            .filter(node::Column::Network.eq(clean(network)))
            .one(&self.db)
            .await?
            .is_some();
        if !in_network {
            return Ok(None);
        }
        let rows = link_event::Entity::find()
            .filter(link_event::Column::LinkId.eq(link_id))
            .order_by_asc(link_event::Column::TMs)
            .order_by_asc(link_event::Column::Id)
            .all(&self.db)
            .await?;
        Ok(Some(
            rows.into_iter()
                .map(|e| LinkEvent {
                    t_ms: e.t_ms,
                    up: e.up,
                })
                .collect(),
        ))
    }

    /// The mesh graph of a network: every node with its latest hello
    /// fields, gateway, clients and gauges, and the link directions (only
    /// the links up unless `all`), far ends joined (see the module
    /// documentation). `None` for an unknown network.
    pub async fn topology(&self, network: &str, all: bool) -> Result<Option<Graph>, StoreError> {
        self.graph(network, all, true).await
    }

    /// [`Store::topology`], with the clients and gauges only when `stats`.
    pub(crate) async fn graph(
        &self,
        network: &str,
        all: bool,
        stats: bool,
    ) -> Result<Option<Graph>, StoreError> {
        let network = clean(network);
        if crate::entity::network::Entity::find_by_id(network.clone())
            .one(&self.db)
            .await?
            .is_none()
        {
            return Ok(None);
        }
        let NetworkNodes { nodes, extra } = self.network_nodes(&network).await?;
        let ids: Vec<i64> = nodes.iter().map(|n| n.id).collect();
        let names: HashMap<i64, String> = nodes.iter().map(|n| (n.id, n.node.clone())).collect();

        let mut index = AddressIndex::default();
        let mut hellos: HashMap<i64, Hello> = HashMap::new();
        for n in &nodes {
            if let Some(h) = n
                .hello
                .as_deref()
                .and_then(|j| parse_json::<Hello>(j, "hello"))
            {
                index.add(&n.node, &h);
                hellos.insert(n.id, h);
            }
        }
        let mut meshes: HashMap<i64, node_mesh::Model> = HashMap::new();
        let mut links: Vec<link::Model> = Vec::new();
        for chunk in ids.chunks(INSERT_CHUNK) {
            meshes.extend(
                node_mesh::Entity::find()
                    .filter(node_mesh::Column::NodeId.is_in(chunk.iter().copied()))
                    .all(&self.db)
                    .await?
                    .into_iter()
                    .map(|m| (m.node_id, m)),
            );
            let mut q =
                link::Entity::find().filter(link::Column::NodeId.is_in(chunk.iter().copied()));
            if !all {
                q = q.filter(link::Column::Up.eq(true));
            }
            links.extend(q.all(&self.db).await?);
        }
        let latest = if stats {
            self.latest_samples(&network, None).await?
        } else {
            HashMap::new()
        };

        let mut views: Vec<LinkView> = links
            .into_iter()
            .filter_map(|l| {
                let source = names.get(&l.node_id)?.clone();
                Some(link_view(l, source, &index))
            })
            .collect();
        views.sort_by(|a, b| {
            (&a.source, &a.source_ifname, &a.target.address, a.id).cmp(&(
                &b.source,
                &b.source_ifname,
                &b.target.address,
                b.id,
            ))
        });

        // Mesh interfaces per node: those its links run over.
        let mut mesh_ifaces: HashMap<&str, HashSet<&str>> = HashMap::new();
        for v in &views {
            mesh_ifaces
                .entry(v.source.as_str())
                .or_default()
                .insert(v.source_ifname.as_str());
        }
        let gateways: HashMap<i64, Gateway> = meshes
            .iter()
            .filter_map(|(&id, m)| {
                let g = m.gateway.as_deref()?;
                Some((id, parse_json::<Gateway>(g, "gateway")?))
            })
            .collect();
        // Next hop and uplink of every node.
        let mut nexthop: HashMap<String, String> = HashMap::new();
        let mut uplinks: HashSet<String> = HashSet::new();
        for n in &nodes {
            let Some(g) = gateways.get(&n.id) else {
                continue;
            };
            let via = g.via.as_deref().map(normalize_address).and_then(|v| {
                index
                    .by_address
                    .get(&v)
                    .filter(|(node, _)| *node != n.node)
                    .map(|(node, _)| node.clone())
            });
            match via {
                Some(hop) => {
                    nexthop.insert(n.node.clone(), hop);
                }
                None => {
                    let meshy = mesh_ifaces
                        .get(n.node.as_str())
                        .is_some_and(|s| s.contains(g.ifname.as_str()));
                    if !meshy {
                        uplinks.insert(n.node.clone());
                    }
                }
            }
        }
        let gateway_node = |start: &str| -> Option<String> {
            let mut at = start.to_owned();
            for _ in 0..64 {
                if uplinks.contains(&at) {
                    return Some(at);
                }
                at = nexthop.get(&at)?.clone();
            }
            None
        };

        let graph_nodes = nodes
            .into_iter()
            .map(|n| {
                let e = extra.get(&n.id);
                let hello = hellos.remove(&n.id);
                let mut macs: Vec<String> = Vec::new();
                let mut addresses: Vec<String> = Vec::new();
                if let Some(h) = &hello {
                    for i in &h.interfaces {
                        if let Some(m) = &i.mac {
                            let m = normalize_address(m);
                            if m != "00:00:00:00:00:00" && !macs.contains(&m) {
                                macs.push(m);
                            }
                        }
                        for a in &i.addresses {
                            let a = normalize_address(a);
                            if !addresses.contains(&a) {
                                addresses.push(a);
                            }
                        }
                    }
                }
                let status = NodeStatus::from_db(&n.status);
                let flapping_since_ms = e.and_then(|e| e.flapping_since_ms);
                GraphNode {
                    hostname: n.hostname,
                    model: n.model,
                    board: hello.as_ref().and_then(|h| h.board.clone()),
                    firmware: hello.as_ref().and_then(|h| h.firmware.clone()),
                    site: e.and_then(|e| e.site_id.clone()),
                    location: hello.as_ref().and_then(|h| h.location.clone()),
                    interfaces: hello.map(|h| h.interfaces).unwrap_or_default(),
                    status,
                    state: match (flapping_since_ms.is_some(), status) {
                        (true, _) => NodeState::Flapping,
                        (false, NodeStatus::Online) => NodeState::Online,
                        (false, NodeStatus::Offline) => NodeState::Offline,
                    },
                    macs,
                    addresses,
                    first_seen_ms: n.first_seen_ms,
                    last_seen_ms: n.last_seen_ms,
                    flapping_since_ms,
                    gateway: gateways.get(&n.id).cloned(),
                    uplink: uplinks.contains(&n.node),
                    gateway_nexthop: nexthop.get(&n.node).cloned(),
                    gateway_node: gateway_node(&n.node),
                    clients: latest.get(&n.id).and_then(|l| l.clients.clone()),
                    gauges: latest.get(&n.id).map(|l| l.gauges),
                    node: n.node,
                }
            })
            .collect();
        Ok(Some(Graph {
            network,
            nodes: graph_nodes,
            links: views,
        }))
    }

    /// The mesh parts of one node's detail; `None` for an unknown node.
    pub async fn node_mesh(
        &self,
        network: &str,
        node: &str,
        now_ms: i64,
    ) -> Result<Option<NodeMesh>, StoreError> {
        let Some(graph) = self.graph(network, true, false).await? else {
            return Ok(None);
        };
        let Some(g) = graph.nodes.iter().find(|n| n.node == clean(node)) else {
            return Ok(None);
        };
        let Some(id) = self.node_id(network, node).await? else {
            return Ok(None);
        };
        let mesh = node_mesh::Entity::find_by_id(id).one(&self.db).await?;
        let (radios, stations) = match &mesh {
            Some(m) => (
                parse_json::<Vec<Radio>>(&m.radios, "radios").unwrap_or_default(),
                parse_json::<Vec<Station>>(&m.stations, "stations").unwrap_or_default(),
            ),
            None => (Vec::new(), Vec::new()),
        };
        Ok(Some(NodeMesh {
            site: g.site.clone(),
            state: Some(g.state),
            flapping_since_ms: g.flapping_since_ms,
            in_maintenance: self.in_maintenance(network, node, now_ms).await?,
            radios,
            stations,
            neighbours: graph
                .links
                .iter()
                .filter(|l| l.source == g.node)
                .cloned()
                .collect(),
            gateway: g.gateway.clone(),
            uplink: g.uplink,
            clients: self
                .latest_samples(network, Some(id))
                .await?
                .remove(&id)
                .and_then(|l| l.clients),
        }))
    }

    /// The gauges and client counts (when it had them) of each node's latest
    /// report, for the nodes of a network (`only`: one node id). One
    /// statement (one indexed lookup per node).
    async fn latest_samples(
        &self,
        network: &str,
        only: Option<i64>,
    ) -> Result<HashMap<i64, LatestSample>, StoreError> {
        let mut values: Vec<Value> = vec![network.into()];
        let mut sql = format!(
            "SELECT s.node_id, s.t_ms, s.load1, s.mem_total, s.mem_available, s.rootfs_size, \
             s.rootfs_free, s.uptime_ms, s.clients_total, s.clients_wifi24, s.clients_wifi5, \
             s.clients_other FROM sample s JOIN node n ON s.node_id = n.id \
             WHERE n.network = {} AND s.id = {LATEST_SAMPLE_ID}",
            self.sql_param(1)
        );
        if let Some(id) = only {
            sql.push_str(&format!(" AND n.id = {}", self.sql_param(2)));
            values.push(id.into());
        }
        let rows = self.raw_rows(sql, values).await?;
        let ratio = |free: i64, whole: i64| {
            (whole > 0).then(|| (1.0 - free as f64 / whole as f64).clamp(0.0, 1.0))
        };
        let count = |v: i32| u32::try_from(v).unwrap_or(0);
        let mut out = HashMap::new();
        for row in rows {
            let t_ms: i64 = row.try_get("", "t_ms")?;
            let uptime: i64 = row.try_get("", "uptime_ms")?;
            let clients = match row.try_get::<Option<i32>>("", "clients_total")? {
                Some(total) => Some(Clients {
                    total: count(total),
                    wifi_24: count(row.try_get("", "clients_wifi24")?),
                    wifi_5: count(row.try_get("", "clients_wifi5")?),
                    other: count(row.try_get("", "clients_other")?),
                    ids: Vec::new(),
                }),
                None => None,
            };
            let gauges = NodeGauges {
                t_ms,
                load1: row.try_get("", "load1")?,
                memory_usage: ratio(
                    row.try_get("", "mem_available")?,
                    row.try_get("", "mem_total")?,
                ),
                rootfs_usage: ratio(
                    row.try_get("", "rootfs_free")?,
                    row.try_get("", "rootfs_size")?,
                ),
                boot_ms: t_ms.saturating_sub(uptime),
            };
            out.insert(
                row.try_get::<i64>("", "node_id")?,
                LatestSample { gauges, clients },
            );
        }
        Ok(out)
    }
}

/// What the graph shows of a node's latest report.
struct LatestSample {
    gauges: NodeGauges,
    clients: Option<Clients>,
}

/// The reports of a batch to hand to [`record_reports`]: (node id, series
/// time, reception time, report).
pub(crate) fn mesh_report(
    node_id: i64,
    t: &Telemetry,
    t_ms: i64,
    received_ms: i64,
) -> MeshReport<'_> {
    MeshReport {
        node_id,
        t_ms,
        received_ms,
        telemetry: t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_normalize() {
        let cases = [
            ("fe80::1/64", "fe80::1"),
            ("FE80:0:0::A%wlan0", "fe80::a"),
            ("10.0.0.1/24", "10.0.0.1"),
            ("AA:BB:CC:DD:EE:FF", "aa:bb:cc:dd:ee:ff"),
            (" 2001:db8::1 ", "2001:db8::1"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize_address(input), want, "{input}");
        }
    }

    #[test]
    fn eui64() {
        assert_eq!(
            eui64_mac("fe80::a8bb:ccff:fedd:eeff").as_deref(),
            Some("aa:bb:cc:dd:ee:ff")
        );
        assert_eq!(
            eui64_mac("fe80::200:ff:fe00:1/64").as_deref(),
            Some("00:00:00:00:00:01")
        );
        assert_eq!(eui64_mac("fe80::1"), None);
        assert_eq!(eui64_mac("aa:bb:cc:dd:ee:ff"), None);
    }
}
