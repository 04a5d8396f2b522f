//! The topology page, `GET /networks/{network}/topology`: the mesh as plain
//! HTML tables for an operator on a phone over a slow link, in the manner
//! of meshviewer's list view and LibreMesh's lime-app.
//!
//! It shows, from the same store call as the JSON topology
//! (`meshtable_store::Store::topology`, links up and down):
//!
//! - counts: nodes (online), links up, links down, links under their
//!   reference;
//! - the gateways (uplink nodes), with how many nodes route through each;
//! - the links, one row per link: both directions of a link (the same
//!   interfaces and protocol, reported by each end) are paired, and each
//!   end shows the quality *it* reports (batman-adv TQ, babel cost, wifi
//!   signal). A direction with an open `link_degraded` alert is flagged
//!   "under reference". Worst first: under reference, then down (most
//!   recently lost first), then by the lower quality of the two
//!   directions (a direction not reported counts as the worst);
//! - the nodes without any link up ("isolated").
//!
//! Authorisation is the JSON topology's: `ReadNodes` in the network; 404
//! for an unknown network and one the caller has no role in alike, 403 for
//! a role without `ReadNodes` (a funder), and the login page for nobody.
//! Every value from the store is escaped by maud.

use std::collections::{HashMap, HashSet};

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use meshtable_proto::MeshProtocol;
use meshtable_store::NodeStatus;
use meshtable_store::alerts::Alert;
use meshtable_store::time::format_rfc3339_ms;
use meshtable_store::topology::{Graph, GraphNode, LinkView};

use crate::alerts::rules::link_subject;
use crate::api::{ApiError, AppState};
use crate::auth::{Action, Caller};
use crate::ingest::now_ms;
use crate::topology::meshviewer_tq;
use crate::web::{Viewer, ago, denied, layout, store_failed};

/// The rule whose open alerts flag a link direction as under its reference.
const LINK_DEGRADED: &str = "link_degraded";

/// `GET /networks/{network}/topology` (see the module documentation).
pub async fn page(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
) -> Response {
    // As the JSON topology: ReadNodes, then the graph or 404.
    if let Err(e) = caller.authorize(&network, Action::ReadNodes) {
        return denied(&e);
    }
    let graph = match s.store.topology(&network, true).await {
        Ok(Some(g)) => g,
        Ok(None) => return denied(&ApiError::unknown_network(&network)),
        Err(e) => return store_failed(&e),
    };
    // Open alerts need ReadNodes too (`GET .../alerts`).
    let alerts = match s.store.alerts(&graph.network, false, false).await {
        Ok(a) => a,
        Err(e) => return store_failed(&e),
    };
    let degraded = degraded_directions(&alerts);
    Html(topology_page(&graph, &degraded, now_ms(), Viewer::of(&caller)).into_string())
        .into_response()
}

/// The open `link_degraded` alerts by subject (`source/ifname->target`),
/// with their messages.
pub fn degraded_directions(alerts: &[Alert]) -> HashMap<String, String> {
    alerts
        .iter()
        .filter(|a| a.rule == LINK_DEGRADED)
        .map(|a| (a.subject.clone(), a.message.clone()))
        .collect()
}

/// The subject a `link_degraded` alert of this direction carries.
fn subject(l: &LinkView) -> String {
    link_subject(
        &l.source,
        &l.source_ifname,
        l.target.node.as_deref().unwrap_or(&l.target.address),
    )
}

/// One link: the direction `a` reports, and the one `b` reports when
/// reported.
struct Row<'a> {
    ab: &'a LinkView,
    ba: Option<&'a LinkView>,
}

impl<'a> Row<'a> {
    fn directions(&self) -> impl Iterator<Item = &'a LinkView> {
        std::iter::once(self.ab).chain(self.ba)
    }

    fn up(&self) -> bool {
        self.directions().any(|l| l.up)
    }

    /// Up: since when every direction up has been up. Down: the latest report.
    fn since_ms(&self) -> i64 {
        if self.up() {
            self.directions()
                .filter(|l| l.up)
                .map(|l| l.up_since_ms)
                .max()
                .unwrap_or_default()
        } else {
            self.directions()
                .map(|l| l.last_seen_ms)
                .max()
                .unwrap_or_default()
        }
    }

    /// The lower quality of the two directions, 0..1; a direction not
    /// reported, or down, is 0.
    fn quality(&self) -> f64 {
        let q = |l: Option<&LinkView>| l.filter(|l| l.up).map_or(0.0, meshviewer_tq);
        q(Some(self.ab)).min(q(self.ba))
    }
}

/// Whether `m` is the reverse direction of `l`: same protocol, the ends
/// swapped, the interfaces matching where known.
fn reverse_of(l: &LinkView, m: &LinkView) -> bool {
    let compatible = |known: Option<&str>, ifname: &str| known.is_none_or(|k| k == ifname);
    l.protocol == m.protocol
        && l.target.node.as_deref() == Some(m.source.as_str())
        && m.target.node.as_deref() == Some(l.source.as_str())
        && compatible(l.target.ifname.as_deref(), &m.source_ifname)
        && compatible(m.target.ifname.as_deref(), &l.source_ifname)
}

/// Pairs the graph's link directions into links: first by exact
/// interfaces, then where an interface of the far end is unknown.
fn pair(links: &[LinkView]) -> Vec<Row<'_>> {
    // (source, far node) -> indices of its directions.
    let mut by_ends: HashMap<(&str, &str), Vec<usize>> = HashMap::new();
    for (i, l) in links.iter().enumerate() {
        if let Some(t) = &l.target.node {
            by_ends
                .entry((l.source.as_str(), t.as_str()))
                .or_default()
                .push(i);
        }
    }
    let exact = |l: &LinkView, m: &LinkView| {
        l.target.ifname.as_deref() == Some(m.source_ifname.as_str())
            && m.target.ifname.as_deref() == Some(l.source_ifname.as_str())
    };
    let mut partner: Vec<Option<usize>> = vec![None; links.len()];
    for strict in [true, false] {
        for (i, l) in links.iter().enumerate() {
            let Some(t) = &l.target.node else {
                continue;
            };
            if partner[i].is_some() || *t == l.source {
                continue;
            }
            let found = by_ends
                .get(&(t.as_str(), l.source.as_str()))
                .into_iter()
                .flatten()
                .copied()
                .find(|&j| {
                    j != i
                        && partner[j].is_none()
                        && reverse_of(l, &links[j])
                        && (!strict || exact(l, &links[j]))
                });
            if let Some(j) = found {
                partner[i] = Some(j);
                partner[j] = Some(i);
            }
        }
    }
    let mut rows = Vec::new();
    for (i, l) in links.iter().enumerate() {
        match partner[i] {
            Some(j) if j < i => {}
            Some(j) => rows.push(Row {
                ab: l,
                ba: Some(&links[j]),
            }),
            None => rows.push(Row { ab: l, ba: None }),
        }
    }
    rows
}

fn protocol_name(p: MeshProtocol) -> &'static str {
    match p {
        MeshProtocol::Babel => "babel",
        MeshProtocol::BatmanAdv => "batman-adv",
    }
}

/// A direction's quality as its reporter sees it: `TQ 230`, `cost 256`,
/// and the wifi signal when known.
fn quality_text(l: &LinkView) -> String {
    let mut parts = Vec::new();
    match l.protocol {
        MeshProtocol::BatmanAdv => {
            if let Some(tq) = l.tq {
                parts.push(format!("TQ {tq}"));
            }
        }
        MeshProtocol::Babel => {
            if let Some(c) = l.cost.or(l.rxcost) {
                parts.push(format!("cost {c}"));
            }
        }
    }
    if let Some(s) = l.signal_dbm {
        parts.push(format!("{s} dBm"));
    }
    if parts.is_empty() {
        "no quality reported".to_owned()
    } else {
        parts.join(" · ")
    }
}

/// A node's name: its hostname, else its id.
fn label<'a>(nodes: &HashMap<&str, &'a GraphNode>, id: &'a str) -> &'a str {
    nodes
        .get(id)
        .and_then(|n| n.hostname.as_deref())
        .filter(|h| !h.is_empty())
        .unwrap_or(id)
}

/// A node, linking to its detail (as on the network page).
fn node_link(network: &str, nodes: &HashMap<&str, &GraphNode>, id: &str) -> Markup {
    html! {
        a href=(format!("/api/v1/nodes/{id}?network={network}")) { (label(nodes, id)) }
    }
}

/// One end of a link row: the node (or the bare address of a far end
/// joined to no node), its interface, and the direction it reports.
fn end_cell(
    network: &str,
    nodes: &HashMap<&str, &GraphNode>,
    node: Option<&str>,
    address: &str,
    ifname: Option<&str>,
    reported: Option<&LinkView>,
    degraded: &HashMap<String, String>,
) -> Markup {
    let flag = reported.and_then(|l| degraded.get(&subject(l)));
    html! {
        td {
            @match node {
                Some(id) => (node_link(network, nodes, id)),
                None => span.muted title="joined to no node of the network" { (address) },
            }
            @if let Some(i) = ifname {
                small.wide { (i) }
            }
            @match reported {
                Some(l) => {
                    small {
                        (quality_text(l))
                        @if !l.up {
                            " " span.offline { "(down)" }
                        }
                    }
                    @if let Some(why) = flag {
                        small.offline title=(why) { "under reference" }
                    }
                }
                None => small { "not reported" },
            }
        }
    }
}

/// The topology page of `g` (see the module documentation), as seen at
/// `now_ms`; `degraded` holds the subjects of the open `link_degraded`
/// alerts with their messages.
pub fn topology_page(
    g: &Graph,
    degraded: &HashMap<String, String>,
    now_ms: i64,
    viewer: Option<Viewer<'_>>,
) -> Markup {
    let net = g.network.as_str();
    let nodes: HashMap<&str, &GraphNode> = g.nodes.iter().map(|n| (n.node.as_str(), n)).collect();
    let mut rows = pair(&g.links);
    let is_degraded = |r: &Row<'_>| {
        r.directions()
            .any(|l| l.up && degraded.contains_key(&subject(l)))
    };
    // Worst first: under reference, down (recently lost first), lowest quality.
    rows.sort_by(|a, b| {
        is_degraded(b)
            .cmp(&is_degraded(a))
            .then(a.up().cmp(&b.up()))
            .then_with(|| {
                if a.up() {
                    a.quality().total_cmp(&b.quality())
                } else {
                    b.since_ms().cmp(&a.since_ms())
                }
            })
            .then_with(|| a.ab.id.cmp(&b.ab.id))
    });
    let links_up = rows.iter().filter(|r| r.up()).count();
    let links_down = rows.len() - links_up;
    let under = rows.iter().filter(|r| is_degraded(r)).count();
    let online = g
        .nodes
        .iter()
        .filter(|n| n.status == NodeStatus::Online)
        .count();

    let mut gateways: Vec<&GraphNode> = g.nodes.iter().filter(|n| n.uplink).collect();
    gateways.sort_by(|a, b| b.status.cmp(&a.status).then(a.node.cmp(&b.node)));
    let mut served: HashMap<&str, usize> = HashMap::new();
    for n in &g.nodes {
        if let Some(gw) = &n.gateway_node
            && *gw != n.node
        {
            *served.entry(gw.as_str()).or_default() += 1;
        }
    }
    let linked: HashSet<&str> = g
        .links
        .iter()
        .filter(|l| l.up)
        .flat_map(|l| std::iter::once(l.source.as_str()).chain(l.target.node.as_deref()))
        .collect();
    let mut isolated: Vec<&GraphNode> = g
        .nodes
        .iter()
        .filter(|n| !linked.contains(n.node.as_str()))
        .collect();
    isolated.sort_by(|a, b| b.status.cmp(&a.status).then(a.node.cmp(&b.node)));

    let body = html! {
        h1 { (net) ": topology" }
        p {
            (g.nodes.len()) " nodes (" (online) " online), "
            (links_up) " links up, "
            @if links_down > 0 { span.offline { (links_down) " down" } } @else { "0 down" }
            @if under > 0 { ", " span.offline { (under) " under reference" } }
            ". "
            a href=(format!("/networks/{net}")) { "Nodes" } " · "
            a href=(format!("/networks/{net}/status")) { "Status" }
        }
        h2 { "Gateways" }
        @if gateways.is_empty() {
            p.muted { "No node reports an uplink." }
        } @else {
            div.wrap {
                table {
                    thead {
                        tr { th { "gateway" } th { "status" } th title="nodes whose traffic leaves through it" { "nodes" } th.wide { "uplink" } }
                    }
                    tbody {
                        @for n in &gateways {
                            tr {
                                td {
                                    (node_link(net, &nodes, &n.node))
                                    small.wide { (n.node) }
                                }
                                td class=(n.status.as_str()) title=(format!("last seen {}", format_rfc3339_ms(n.last_seen_ms))) {
                                    (n.status.as_str())
                                }
                                td { (served.get(n.node.as_str()).copied().unwrap_or(0)) }
                                td.wide { (n.gateway.as_ref().map(|gw| gw.ifname.as_str()).unwrap_or("")) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Links" }
        @if rows.is_empty() {
            p.muted { "No node has reported a mesh neighbour yet." }
        } @else {
            p.muted {
                small {
                    "Each end shows what it reports: batman-adv TQ (0-255, higher is better), "
                    "babel cost (256 a perfect hop, lower is better), wifi signal."
                }
            }
            div.wrap {
                table {
                    thead {
                        tr { th { "end A" } th { "end B" } th { "state" } th.wide { "protocol" } }
                    }
                    tbody {
                        @for r in &rows {
                            @let l = r.ab;
                            tr {
                                (end_cell(net, &nodes, Some(&l.source), &l.source, Some(&l.source_ifname), Some(l), degraded))
                                (end_cell(net, &nodes, l.target.node.as_deref(), &l.target.address, l.target.ifname.as_deref(), r.ba, degraded))
                                @if r.up() {
                                    td.online title=(format!("up since {}", format_rfc3339_ms(r.since_ms()))) {
                                        "up" small { "since " (ago(now_ms, r.since_ms())) }
                                    }
                                } @else {
                                    td.offline title=(format!("last reported {}", format_rfc3339_ms(r.since_ms()))) {
                                        "down" small { "last seen " (ago(now_ms, r.since_ms())) }
                                    }
                                }
                                td.wide { (protocol_name(l.protocol)) }
                            }
                        }
                    }
                }
            }
        }
        h2 { "Isolated" }
        @if isolated.is_empty() {
            p.muted { "Every node has a link up." }
        } @else {
            div.wrap {
                table {
                    thead {
                        tr { th { "node" } th { "status" } th { "last seen" } }
                    }
                    tbody {
                        @for n in &isolated {
                            tr {
                                td {
                                    (node_link(net, &nodes, &n.node))
                                    small.wide { (n.node) }
                                }
                                td class=(n.status.as_str()) { (n.status.as_str()) }
                                td title=(format_rfc3339_ms(n.last_seen_ms)) { (ago(now_ms, n.last_seen_ms)) }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(
        &format!("{net} topology · meshtable"),
        true,
        body,
        now_ms,
        viewer,
    )
}

#[cfg(test)]
mod tests {
    use meshtable_store::topology::LinkEnd;

    use super::*;

    const NOW: i64 = 1_000_000_000_000;

    fn dir(id: i64, from: &str, from_if: &str, to: Option<&str>, to_if: Option<&str>) -> LinkView {
        LinkView {
            id,
            source: from.to_owned(),
            source_ifname: from_if.to_owned(),
            target: LinkEnd {
                node: to.map(str::to_owned),
                ifname: to_if.map(str::to_owned),
                address: format!("addr-{id}"),
            },
            protocol: MeshProtocol::BatmanAdv,
            rxcost: None,
            txcost: None,
            cost: None,
            tq: Some(200),
            best: false,
            signal_dbm: None,
            up: true,
            up_since_ms: NOW - 3_600_000,
            first_seen_ms: NOW - 7_200_000,
            last_seen_ms: NOW - 10_000,
        }
    }

    fn ids(rows: &[Row<'_>]) -> Vec<(i64, Option<i64>)> {
        rows.iter().map(|r| (r.ab.id, r.ba.map(|l| l.id))).collect()
    }

    #[test]
    fn directions_pair_into_links() {
        let links = [
            // a-b over wlan0 both ways, and over eth0 with b's end unknown.
            dir(1, "a", "eth0", Some("b"), None),
            dir(2, "a", "wlan0", Some("b"), Some("wlan0")),
            dir(3, "b", "eth0", Some("a"), Some("eth0")),
            dir(4, "b", "wlan0", Some("a"), Some("wlan0")),
            // c hears an address joined to no node, and itself.
            dir(5, "c", "wlan0", None, None),
            dir(6, "c", "wlan0", Some("c"), Some("wlan1")),
            // d hears a over a protocol a does not report.
            LinkView {
                protocol: MeshProtocol::Babel,
                ..dir(7, "d", "wlan0", Some("a"), Some("wlan0"))
            },
        ];
        assert_eq!(
            ids(&pair(&links)),
            [(1, Some(3)), (2, Some(4)), (5, None), (6, None), (7, None)]
        );
    }

    fn node(id: &str, hostname: Option<&str>) -> GraphNode {
        GraphNode {
            node: id.to_owned(),
            hostname: hostname.map(str::to_owned),
            model: None,
            board: None,
            firmware: None,
            site: None,
            location: None,
            status: NodeStatus::Online,
            state: meshtable_store::liveness::NodeState::Online,
            interfaces: Vec::new(),
            macs: Vec::new(),
            addresses: Vec::new(),
            first_seen_ms: NOW - 86_400_000,
            last_seen_ms: NOW - 10_000,
            flapping_since_ms: None,
            gateway: None,
            uplink: false,
            gateway_nexthop: None,
            gateway_node: None,
            clients: None,
            gauges: None,
        }
    }

    #[test]
    fn down_links_come_before_weak_ones_and_half_links_show_it() {
        let weak = LinkView {
            tq: Some(90),
            ..dir(1, "a", "wlan0", Some("b"), Some("wlan0"))
        };
        let down = LinkView {
            up: false,
            last_seen_ms: NOW - 7_200_000,
            ..dir(2, "a", "wlan1", None, None)
        };
        let g = Graph {
            network: "net".to_owned(),
            nodes: vec![node("a", Some("A & <b>")), node("b", None), node("c", None)],
            links: vec![weak, down],
        };
        let html = topology_page(&g, &HashMap::new(), NOW, None).into_string();
        assert!(
            html.contains("3 nodes (3 online), 1 links up, <span class=\"offline\">1 down</span>"),
            "{html}"
        );
        let down_at = html.find("last seen 2 h ago").expect("the down link");
        let weak_at = html.find("TQ 90").expect("the weak link");
        assert!(down_at < weak_at, "{html}");
        // b does not report a -> b: a half link.
        assert!(html.contains("<small>not reported</small>"), "{html}");
        assert!(html.contains("A &amp; &lt;b&gt;"), "{html}");
        assert!(html.contains("addr-2"), "{html}");
        // c has no link; a's only link up is to b.
        let isolated = &html[html.find("<h2>Isolated</h2>").expect("isolated")..];
        assert!(
            isolated.contains(">c</a>") && !isolated.contains(">b</a>"),
            "{isolated}"
        );
        assert!(html.contains("No node reports an uplink."), "{html}");
    }
}
