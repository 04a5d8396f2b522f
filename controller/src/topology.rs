//! The mesh topology over HTTP, in the formats existing tools read.
//!
//! | endpoint | role action | what |
//! |---|---|---|
//! | `GET /api/v1/networks/{network}/topology[?all=true]` | `ReadNodes` | NetJSON NetworkGraph |
//! | `GET /api/v1/networks/{network}/meshviewer.json` | `ReadNodes` | meshviewer/yanic "ffrgb" JSON |
//! | `GET /api/v1/networks/{network}/links[?all=true]` | `ReadNodes` | link directions with quality, up/down |
//! | `GET /api/v1/networks/{network}/links/{id}/events` | `ReadNodes` | a link's up/down history |
//!
//! # NetJSON
//!
//! One NetJSON link per *direction*, as its source reports it: `source` is
//! the reporting node, `target` the node its neighbour address joined to (or
//! the bare address, added as a node with `"unknown": true`, when it joined
//! none). `cost` is babel's link cost (`cost`, else `rxcost`), or for
//! batman-adv `255 / tq` (1 for a perfect link, growing as quality falls);
//! `properties` carry `protocol`, `ifname`, `target_ifname`, `rxcost`,
//! `txcost`, `tq`, `signal_dbm`, `best`, `up` and `up_since`. `protocol` is
//! `babel` or `batman-adv` when every link is of that protocol, else
//! `meshtable`; `metric` likewise `babel`, `tq` or `mixed`. By default only
//! the links up are listed; `?all=true` adds those down.
//!
//! # meshviewer
//!
//! The document yanic writes and meshviewer (and the simulator's snapshot
//! reader) reads: `{timestamp, nodes: [...], links: [...]}` with the node
//! fields `node_id`, `hostname`, `mac`, `addresses`, `location`, `model`,
//! `firmware{base,release}`, `is_online`, `is_gateway` (an uplink node),
//! `clients*`, `loadavg`, `memory_usage`, `rootfs_usage`, `uptime` (boot
//! time), `firstseen`, `lastseen`, `gateway`, `gateway_nexthop`, and one
//! link per pair of directions with `source_tq`/`target_tq` in 0..1 (batman-adv
//! `tq / 255`; babel `256 / rxcost`, at most 1; 0 for a direction not
//! reported), `type` (`wifi`, `vpn` or `other`, from the interface kind) and
//! the two interface MACs.

use std::collections::{BTreeMap, HashMap, HashSet};

use axum::extract::{Path, RawQuery, State};
use axum::routing::get;
use axum::{Json, Router};
use meshtable_proto::{InterfaceKind, MeshProtocol};
use meshtable_store::time::format_rfc3339_ms;
use meshtable_store::topology::{Graph, GraphNode, LinkEvent, LinkView};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::api::{ApiError, AppState, parse_query};
use crate::auth::{Action, Caller};
use crate::ingest::now_ms;

/// The routes of this module.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/api/v1/networks/{network}/topology", get(topology))
        .route(
            "/api/v1/networks/{network}/meshviewer.json",
            get(meshviewer),
        )
        .route("/api/v1/networks/{network}/links", get(links))
        .route(
            "/api/v1/networks/{network}/links/{id}/events",
            get(link_events),
        )
}

/// `GET /api/v1/nodes/{node}`: the node's detail (listing fields, hello
/// with board and firmware, latest sample, clock) and its mesh parts
/// (radios, stations, neighbours, gateway, uplink, clients, site, state,
/// `in_maintenance`), in one object.
#[derive(Debug, Serialize)]
pub struct NodeDetailBody {
    /// The store's node detail.
    #[serde(flatten)]
    pub detail: meshtable_store::NodeDetail,
    /// The mesh parts.
    #[serde(flatten)]
    pub mesh: meshtable_store::topology::NodeMesh,
}

/// `?all=true|false`, default false.
pub fn parse_all(raw: Option<&str>) -> Result<bool, ApiError> {
    let mut q = parse_query(raw, &["all"])?;
    match q.remove("all").as_deref() {
        None | Some("false") => Ok(false),
        Some("true") => Ok(true),
        Some(other) => Err(ApiError::BadRequest(format!(
            "all: expected true or false, not {:?}",
            other.chars().take(16).collect::<String>()
        ))),
    }
}

/// The network's graph, or 404 (for unknown networks and those the caller
/// has no role in alike).
async fn graph(s: &AppState, caller: &Caller, network: &str, all: bool) -> Result<Graph, ApiError> {
    caller.authorize(network, Action::ReadNodes)?;
    s.store
        .topology(network, all)
        .await?
        .ok_or_else(|| ApiError::unknown_network(network))
}

async fn topology(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    let all = parse_all(raw.as_deref())?;
    let g = graph(&s, &caller, &network, all).await?;
    Ok(Json(netjson(&g)))
}

async fn meshviewer(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Value>, ApiError> {
    parse_query(raw.as_deref(), &[])?;
    let g = graph(&s, &caller, &network, false).await?;
    Ok(Json(meshviewer_json(&g, now_ms())))
}

#[derive(Serialize)]
struct LinksBody {
    network: String,
    links: Vec<LinkView>,
}

async fn links(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<LinksBody>, ApiError> {
    let all = parse_all(raw.as_deref())?;
    let g = graph(&s, &caller, &network, all).await?;
    Ok(Json(LinksBody {
        network: g.network,
        links: g.links,
    }))
}

#[derive(Serialize)]
struct EventsBody {
    network: String,
    link: i64,
    events: Vec<LinkEvent>,
}

async fn link_events(
    State(s): State<AppState>,
    caller: Caller,
    Path((network, id)): Path<(String, String)>,
    RawQuery(raw): RawQuery,
) -> Result<Json<EventsBody>, ApiError> {
    parse_query(raw.as_deref(), &[])?;
    caller.authorize(&network, Action::ReadNodes)?;
    let link: i64 = id
        .parse()
        .map_err(|_| ApiError::BadRequest("link id: not a number".to_owned()))?;
    let events =
        s.store.link_events(&network, link).await?.ok_or_else(|| {
            ApiError::NotFound(format!("unknown link {link} in network {network}"))
        })?;
    Ok(Json(EventsBody {
        network,
        link,
        events,
    }))
}

/// The NetJSON cost of a link direction (lower is better).
pub fn netjson_cost(l: &LinkView) -> f64 {
    match l.protocol {
        MeshProtocol::Babel => l.cost.or(l.rxcost).map_or(1.0, f64::from),
        MeshProtocol::BatmanAdv => l.tq.map_or(1.0, |tq| 255.0 / f64::from(tq.max(1))),
    }
}

fn protocol_name(p: MeshProtocol) -> &'static str {
    match p {
        MeshProtocol::Babel => "babel",
        MeshProtocol::BatmanAdv => "batman-adv",
    }
}

/// The graph as a NetJSON NetworkGraph (see the module documentation).
pub fn netjson(g: &Graph) -> Value {
    let protocols: HashSet<&'static str> =
        g.links.iter().map(|l| protocol_name(l.protocol)).collect();
    let (protocol, metric) = match protocols.iter().next() {
        Some(&p) if protocols.len() == 1 => (p, if p == "babel" { "babel" } else { "tq" }),
        Some(_) => ("meshtable", "mixed"),
        None => ("meshtable", "babel"),
    };
    let mut nodes: Vec<Value> = g.nodes.iter().map(netjson_node).collect();
    let known: HashSet<&str> = g.nodes.iter().map(|n| n.node.as_str()).collect();
    let mut unknown: BTreeMap<&str, ()> = BTreeMap::new();
    let links: Vec<Value> = g
        .links
        .iter()
        .map(|l| {
            let target = match &l.target.node {
                Some(n) => n.as_str(),
                None => {
                    unknown.insert(l.target.address.as_str(), ());
                    l.target.address.as_str()
                }
            };
            let mut p = Map::new();
            p.insert("protocol".into(), json!(protocol_name(l.protocol)));
            p.insert("link".into(), json!(l.id));
            p.insert("ifname".into(), json!(l.source_ifname));
            p.insert("target_ifname".into(), json!(l.target.ifname));
            p.insert("target_address".into(), json!(l.target.address));
            for (k, v) in [
                ("rxcost", l.rxcost),
                ("txcost", l.txcost),
                ("babel_cost", l.cost),
            ] {
                if let Some(v) = v {
                    p.insert(k.into(), json!(v));
                }
            }
            if let Some(tq) = l.tq {
                p.insert("tq".into(), json!(tq));
                p.insert("best".into(), json!(l.best));
            }
            if let Some(s) = l.signal_dbm {
                p.insert("signal_dbm".into(), json!(s));
            }
            p.insert("up".into(), json!(l.up));
            p.insert("up_since".into(), json!(format_rfc3339_ms(l.up_since_ms)));
            json!({
                "source": l.source,
                "target": target,
                "cost": netjson_cost(l),
                "properties": p,
            })
        })
        .collect();
    for address in unknown.keys() {
        if !known.contains(address) {
            nodes.push(json!({
                "id": address,
                "label": address,
                "properties": {"unknown": true},
            }));
        }
    }
    json!({
        "type": "NetworkGraph",
        "protocol": protocol,
        "version": env!("CARGO_PKG_VERSION"),
        "metric": metric,
        "topology_id": g.network,
        "label": g.network,
        "nodes": nodes,
        "links": links,
    })
}

fn netjson_node(n: &GraphNode) -> Value {
    let mut p = Map::new();
    if let Some(h) = &n.hostname {
        p.insert("hostname".into(), json!(h));
    }
    p.insert("status".into(), json!(n.status.as_str()));
    p.insert("state".into(), json!(n.state.as_str()));
    p.insert("uplink".into(), json!(n.uplink));
    if let Some(s) = &n.site {
        p.insert("site".into(), json!(s));
    }
    if let Some(h) = &n.gateway_nexthop {
        p.insert("gateway_nexthop".into(), json!(h));
    }
    if let Some(h) = &n.gateway_node {
        p.insert("gateway".into(), json!(h));
    }
    if !n.macs.is_empty() {
        p.insert("macs".into(), json!(n.macs));
    }
    if let Some(l) = &n.location {
        p.insert(
            "location".into(),
            json!({"lat": l.latitude, "lng": l.longitude}),
        );
    }
    if let Some(c) = &n.clients {
        p.insert("clients".into(), json!(c.total));
    }
    json!({
        "id": n.node,
        "label": n.hostname.as_deref().unwrap_or(&n.node),
        "local_addresses": n.addresses,
        "properties": p,
    })
}

/// A time as yanic writes it: `2020-03-03T13:26:09+0000`.
pub fn yanic_time(ms: i64) -> String {
    let s = format_rfc3339_ms(ms);
    match s.get(..19) {
        Some(head) if s.len() == 24 => format!("{head}+0000"),
        _ => s,
    }
}

/// Link quality 0..1 of one direction, as meshviewer shows it.
pub fn meshviewer_tq(l: &LinkView) -> f64 {
    match l.protocol {
        MeshProtocol::BatmanAdv => l.tq.map_or(0.0, |tq| f64::from(tq) / 255.0),
        MeshProtocol::Babel => l
            .rxcost
            .or(l.cost)
            .map_or(0.0, |c| (256.0 / f64::from(c.max(1))).min(1.0)),
    }
}

/// The graph as a meshviewer "ffrgb" document (see the module documentation).
pub fn meshviewer_json(g: &Graph, now_ms: i64) -> Value {
    // Interface name -> (kind, mac) per node.
    let ifaces: HashMap<&str, HashMap<&str, (InterfaceKind, Option<&str>)>> = g
        .nodes
        .iter()
        .map(|n| {
            (
                n.node.as_str(),
                n.interfaces
                    .iter()
                    .map(|i| (i.name.as_str(), (i.kind, i.mac.as_deref())))
                    .collect(),
            )
        })
        .collect();
    let nodes: Vec<Value> = g.nodes.iter().map(meshviewer_node).collect();

    // Pair the two directions of each link: key = the two ends, ordered.
    type End<'a> = (&'a str, &'a str);
    type Directions<'a> = (Option<&'a LinkView>, Option<&'a LinkView>);
    let mut pairs: BTreeMap<(End<'_>, End<'_>), Directions<'_>> = BTreeMap::new();
    for l in &g.links {
        let Some(tn) = &l.target.node else {
            continue;
        };
        // A far end joined by its originator only has no known interface.
        let ti = l.target.ifname.as_deref().unwrap_or_default();
        let a: End<'_> = (l.source.as_str(), l.source_ifname.as_str());
        let b: End<'_> = (tn.as_str(), ti);
        if a.0 == b.0 {
            continue;
        }
        if a < b {
            pairs.entry((a, b)).or_default().0.get_or_insert(l);
        } else {
            pairs.entry((b, a)).or_default().1.get_or_insert(l);
        }
    }
    let links: Vec<Value> = pairs
        .iter()
        .map(|(((sn, si), (tn, ti)), (fwd, back))| {
            let info = |n: &str, i: &str| ifaces.get(n).and_then(|m| m.get(i)).copied();
            let (skind, smac) = info(sn, si).unwrap_or((InterfaceKind::Other, None));
            let (tkind, tmac) = info(tn, ti).unwrap_or((InterfaceKind::Other, None));
            let kind = if skind == InterfaceKind::Wireless || tkind == InterfaceKind::Wireless {
                "wifi"
            } else if skind == InterfaceKind::Tunnel || tkind == InterfaceKind::Tunnel {
                "vpn"
            } else {
                "other"
            };
            let tq = |l: &Option<&LinkView>| l.map_or(0.0, meshviewer_tq);
            let mut o = Map::new();
            o.insert("type".into(), json!(kind));
            o.insert("source".into(), json!(sn));
            o.insert("target".into(), json!(tn));
            o.insert("source_tq".into(), json!(tq(fwd)));
            o.insert("target_tq".into(), json!(tq(back)));
            // The interface's MAC, else the address the other end reported.
            fn reported(l: Option<&LinkView>) -> Option<&str> {
                l.filter(|l| l.protocol == MeshProtocol::BatmanAdv)
                    .map(|l| l.target.address.as_str())
            }
            if let Some(m) = smac.or_else(|| reported(*back)) {
                o.insert("source_addr".into(), json!(m.to_ascii_lowercase()));
            }
            if let Some(m) = tmac.or_else(|| reported(*fwd)) {
                o.insert("target_addr".into(), json!(m.to_ascii_lowercase()));
            }
            Value::Object(o)
        })
        .collect();
    json!({
        "timestamp": yanic_time(now_ms),
        "nodes": nodes,
        "links": links,
    })
}

fn meshviewer_node(n: &GraphNode) -> Value {
    let mut o = Map::new();
    o.insert("node_id".into(), json!(n.node));
    o.insert(
        "hostname".into(),
        json!(n.hostname.as_deref().unwrap_or(&n.node)),
    );
    if let Some(m) = n.macs.first() {
        o.insert("mac".into(), json!(m));
    }
    o.insert("addresses".into(), json!(n.addresses));
    if let Some(l) = &n.location {
        o.insert(
            "location".into(),
            json!({"latitude": l.latitude, "longitude": l.longitude}),
        );
    }
    if let Some(m) = &n.model {
        o.insert("model".into(), json!(m));
    }
    let mut fw = Map::new();
    if let Some(f) = &n.firmware {
        fw.insert("base".into(), json!(f.distribution));
        fw.insert("release".into(), json!(f.release));
    }
    o.insert("firmware".into(), Value::Object(fw));
    o.insert(
        "is_online".into(),
        json!(n.status == meshtable_store::NodeStatus::Online),
    );
    o.insert("is_gateway".into(), json!(n.uplink));
    let c = n.clients.clone().unwrap_or_default();
    o.insert("clients".into(), json!(c.total));
    o.insert("clients_wifi24".into(), json!(c.wifi_24));
    o.insert("clients_wifi5".into(), json!(c.wifi_5));
    o.insert("clients_other".into(), json!(c.other));
    if let Some(g) = &n.gauges {
        o.insert("loadavg".into(), json!(g.load1));
        if let Some(m) = g.memory_usage {
            o.insert("memory_usage".into(), json!(m));
        }
        if let Some(r) = g.rootfs_usage {
            o.insert("rootfs_usage".into(), json!(r));
        }
        o.insert("uptime".into(), json!(yanic_time(g.boot_ms)));
    }
    o.insert("firstseen".into(), json!(yanic_time(n.first_seen_ms)));
    o.insert("lastseen".into(), json!(yanic_time(n.last_seen_ms)));
    if let Some(s) = &n.site {
        o.insert("domain".into(), json!(s));
    }
    if let Some(g) = &n.gateway_node {
        o.insert("gateway".into(), json!(g));
    }
    if let Some(h) = &n.gateway_nexthop {
        o.insert("gateway_nexthop".into(), json!(h));
    }
    Value::Object(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yanic_times() {
        assert_eq!(yanic_time(1_583_241_969_000), "2020-03-03T13:26:09+0000");
        assert_eq!(
            meshtable_sim::snapshot::parse_time_ms(&yanic_time(1_583_241_969_000)),
            Some(1_583_241_969_000)
        );
    }

    #[test]
    fn all_flag() {
        assert!(!parse_all(None).unwrap());
        assert!(parse_all(Some("all=true")).unwrap());
        assert!(!parse_all(Some("all=false")).unwrap());
        assert!(parse_all(Some("all=yes")).is_err());
        assert!(parse_all(Some("x=1")).is_err());
    }
}
