//! The web pages, server-rendered HTML for a phone on a slow link:
//! `GET /` lists the networks with their node counts, and
//! `GET /networks/{network}` lists one network's nodes, down first.
//!
//! No JavaScript, a little inline CSS, refreshed every 30 seconds.
//! Every value from the store is escaped by maud.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use meshtable_proto::validate_id;
use meshtable_store::time::format_rfc3339_ms;
use meshtable_store::{NetworkSummary, NodeSummary, StoreError};
use tracing::error;

use crate::api::AppState;
use crate::ingest::now_ms;

const CSS: &str = "\
body{font-family:system-ui,sans-serif;margin:0 auto;padding:0 .6em;max-width:60em;color:#222;background:#fff}\
h1{font-size:1.3em}\
table{border-collapse:collapse;width:100%;font-size:.9em}\
th,td{text-align:left;padding:.3em .4em;border-bottom:1px solid #ddd;vertical-align:top}\
th{background:#f4f4f4}\
.online{color:#11672c}.offline{color:#a8071a;font-weight:bold}\
.muted,small{color:#777}small{display:block}.wrap{overflow-x:auto}\
@media (max-width:40em){.wide{display:none}}";

/// How long ago `then_ms` was, for people: "just now", "42 s ago",
/// "3 min ago", "5 h ago", "2 d ago".
pub fn ago(now_ms: i64, then_ms: i64) -> String {
    let secs = now_ms.saturating_sub(then_ms) / 1000;
    match secs {
        i64::MIN..5 => "just now".to_owned(),
        5..60 => format!("{secs} s ago"),
        60..3600 => format!("{} min ago", secs / 60),
        3600..86_400 => format!("{} h ago", secs / 3600),
        _ => format!("{} d ago", secs / 86_400),
    }
}

/// The frame of every page: head, refresh, heading, `body`, footer.
fn layout(title: &str, refresh: bool, body: Markup, now_ms: i64) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                @if refresh {
                    meta http-equiv="refresh" content="30";
                }
                title { (title) }
                style { (CSS) }
            }
            body {
                (body)
                p.muted {
                    "Updated " (format_rfc3339_ms(now_ms)) ". "
                    a href="/" { "networks" } " · "
                    a href="/api/v1/networks" { "API" } " · " a href="/metrics" { "metrics" }
                }
            }
        }
    }
}

/// The front page: every network with its node counts, each linking to
/// its own page, as seen at `now_ms`.
pub fn index_page(networks: &[NetworkSummary], now_ms: i64) -> Markup {
    let body = html! {
        h1 { "meshtable" }
        @if networks.is_empty() {
            p { "No network has reported yet. Nodes appear here once their agents connect." }
        } @else {
            div.wrap {
                table {
                    thead {
                        tr { th { "network" } th { "nodes" } th { "online" } th { "offline" } }
                    }
                    tbody {
                        @for net in networks {
                            tr {
                                td { a href=(format!("/networks/{}", net.id)) { (net.id) } }
                                td { (net.nodes) }
                                td { (net.online) }
                                @if net.offline > 0 {
                                    td.offline { (net.offline) }
                                } @else {
                                    td { (net.offline) }
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    layout("meshtable", true, body, now_ms)
}

/// The page of one network: its nodes, down first, as seen at `now_ms`.
pub fn network_page(net: &NetworkSummary, nodes: &[NodeSummary], now_ms: i64) -> Markup {
    let mut list: Vec<&NodeSummary> = nodes.iter().filter(|n| n.network == net.id).collect();
    // Down first: that is what an operator looks for.
    list.sort_by(|a, b| b.status.cmp(&a.status).then(a.node.cmp(&b.node)));
    let body = html! {
        h1 {
            (net.id) " "
            span.muted { "(" (net.online) " online, " (net.offline) " offline)" }
        }
        div.wrap {
            table {
                thead {
                    tr { th { "node" } th { "status" } th { "last seen" } th.wide { "model" } }
                }
                tbody {
                    @for n in &list {
                        @let hostname = n.hostname.as_deref().filter(|h| !h.is_empty());
                        tr {
                            td {
                                a href=(format!("/api/v1/nodes/{}?network={}", n.node, n.network)) {
                                    (hostname.unwrap_or(&n.node))
                                }
                                @if hostname.is_some() {
                                    small { (n.node) }
                                }
                            }
                            td class=(n.status.as_str()) title=(format!("since {}", format_rfc3339_ms(n.status_since_ms))) {
                                (n.status.as_str())
                            }
                            td title=(format_rfc3339_ms(n.last_seen_ms)) { (ago(now_ms, n.last_seen_ms)) }
                            td.wide { (n.model.as_deref().unwrap_or("")) }
                        }
                    }
                }
            }
        }
    };
    layout(&format!("{} · meshtable", net.id), true, body, now_ms)
}

/// A small page for an error: `status` with `message`.
fn error_page(status: StatusCode, message: &str) -> Response {
    let body = html! {
        h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("error")) }
        p { (message) }
    };
    (
        status,
        Html(layout("meshtable", false, body, now_ms()).into_string()),
    )
        .into_response()
}

fn store_failed(e: &StoreError) -> Response {
    error!(error = %e, "web page: cannot read the store");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The database is unavailable; see the controller's log.",
    )
}

/// `GET /`.
pub async fn index(State(s): State<AppState>) -> Response {
    match s.store.networks().await {
        Ok(networks) => Html(index_page(&networks, now_ms()).into_string()).into_response(),
        Err(e) => store_failed(&e),
    }
}

/// `GET /networks/{network}`: 400 for an invalid id, 404 for an unknown one.
pub async fn network(State(s): State<AppState>, Path(network): Path<String>) -> Response {
    if let Err(e) = validate_id(&network) {
        return error_page(StatusCode::BAD_REQUEST, &format!("network: {e}"));
    }
    let networks = match s.store.networks().await {
        Ok(n) => n,
        Err(e) => return store_failed(&e),
    };
    let Some(net) = networks.iter().find(|n| n.id == network) else {
        return error_page(
            StatusCode::NOT_FOUND,
            &format!("No network {network} has reported."),
        );
    };
    match s.store.nodes(Some(&network)).await {
        Ok(nodes) => Html(network_page(net, &nodes, now_ms()).into_string()).into_response(),
        Err(e) => store_failed(&e),
    }
}

#[cfg(test)]
mod tests {
    use meshtable_store::NodeStatus;

    use super::*;

    const NOW: i64 = 1_000_000_000_000;

    #[test]
    fn relative_times() {
        let cases = [
            (0, "just now"),
            (-5_000, "just now"),
            (4_999, "just now"),
            (42_000, "42 s ago"),
            (60_000, "1 min ago"),
            (3 * 60_000 + 59_000, "3 min ago"),
            (2 * 3_600_000, "2 h ago"),
            (3 * 86_400_000, "3 d ago"),
        ];
        for (age, want) in cases {
            assert_eq!(ago(NOW, NOW - age), want, "{age}");
        }
    }

    fn node(network: &str, id: &str, hostname: Option<&str>, status: NodeStatus) -> NodeSummary {
        NodeSummary {
            network: network.to_owned(),
            node: id.to_owned(),
            hostname: hostname.map(str::to_owned),
            model: Some("TP-Link \"CPE\" & <co>".to_owned()),
            status,
            status_since_ms: 0,
            first_seen_ms: 0,
            last_seen_ms: NOW - 180_000,
        }
    }

    fn net(id: &str, online: u64, offline: u64) -> NetworkSummary {
        NetworkSummary {
            id: id.to_owned(),
            nodes: online + offline,
            online,
            offline,
        }
    }

    #[test]
    fn network_page_escapes_everything_from_the_store() {
        let nodes = [
            node(
                "net",
                "n1",
                Some("<script>alert(1)</script>"),
                NodeStatus::Online,
            ),
            node("net", "n2", Some("a'b\"c"), NodeStatus::Offline),
            node("net", "n3", None, NodeStatus::Online),
            node("other", "n4", Some("elsewhere"), NodeStatus::Online),
        ];
        let html = network_page(&net("net", 2, 1), &nodes, NOW).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(html.contains("a'b&quot;c"), "{html}");
        assert!(
            html.contains("TP-Link &quot;CPE&quot; &amp; &lt;co&gt;"),
            "{html}"
        );
        assert!(html.contains("3 min ago"));
        assert!(html.contains(r#"<meta http-equiv="refresh" content="30">"#));
        assert!(html.contains(r#"name="viewport""#));
        // The hostname is the link, the id a muted line under it; without a
        // hostname the id is the link.
        assert!(
            html.contains(
                r#"<a href="/api/v1/nodes/n1?network=net">&lt;script&gt;alert(1)&lt;/script&gt;</a><small>n1</small>"#
            ),
            "{html}"
        );
        assert!(
            html.contains(r#"<a href="/api/v1/nodes/n3?network=net">n3</a></td>"#),
            "{html}"
        );
        // Offline nodes come first, then by id.
        let pos = |id: &str| html.find(&format!(">{id}</small>")).unwrap();
        assert!(pos("n2") < pos("n1"), "{html}");
        assert!(html.find(">n3</a>").unwrap() > pos("n1"), "{html}");
        // Only this network's nodes.
        assert!(!html.contains("n4"), "{html}");
        assert!(!html.contains("<script"), "{html}");
    }

    #[test]
    fn index_lists_networks_only() {
        let html = index_page(&[net("bremen", 880, 11), net("leipzig", 5, 0)], NOW).into_string();
        assert!(
            html.contains(r#"<a href="/networks/bremen">bremen</a>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<a href="/networks/leipzig">leipzig</a>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<td>891</td><td>880</td><td class="offline">11</td>"#),
            "{html}"
        );
        // No offline highlight when nothing is down.
        assert!(html.contains("<td>5</td><td>5</td><td>0</td>"), "{html}");
        assert!(html.contains(r#"<meta http-equiv="refresh" content="30">"#));
        assert!(!html.contains("/api/v1/nodes/"), "{html}");
    }

    #[test]
    fn empty_fleet() {
        let html = index_page(&[], 0).into_string();
        assert!(html.contains("No network has reported yet"));
        assert!(!html.contains("<table"), "{html}");
    }

    #[test]
    fn pages_stay_small() {
        let nodes: Vec<NodeSummary> = (0..300)
            .map(|i| NodeSummary {
                network: "bremen".to_owned(),
                node: format!("c4e984{i:06x}"),
                hostname: Some(format!("ffhb-gemeinde-haus-{i}")),
                model: Some("TP-Link TL-WR841N/ND v9".to_owned()),
                status: if i % 15 == 0 {
                    NodeStatus::Offline
                } else {
                    NodeStatus::Online
                },
                status_since_ms: NOW - 86_400_000,
                first_seen_ms: NOW - 86_400_000,
                last_seen_ms: NOW - i * 1000,
            })
            .collect();
        let page = network_page(&net("bremen", 280, 20), &nodes, NOW).into_string();
        let index = index_page(&[net("bremen", 280, 20)], NOW).into_string();
        println!(
            "network page {} bytes, index {} bytes",
            page.len(),
            index.len()
        );
        // About 300 bytes a node; the old single page carried every node of
        // every network.
        assert!(page.len() < 300 * 320, "{} bytes", page.len());
        assert!(index.len() < 2_000, "{} bytes", index.len());
    }
}
