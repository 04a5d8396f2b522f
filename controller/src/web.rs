//! The web page: `GET /`, server-rendered HTML for a phone on a slow link.
//!
//! One page, no JavaScript, a little inline CSS, refreshed every 30 seconds.
//! Every value from the store is escaped by maud.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, html};
use meshtable_store::time::format_rfc3339_ms;
use meshtable_store::{NetworkSummary, NodeStatus, NodeSummary, StoreError};
use tracing::error;

use crate::api::AppState;
use crate::ingest::now_ms;

const CSS: &str = "\
body{font-family:system-ui,sans-serif;margin:0 auto;padding:0 .6em;max-width:60em;color:#222;background:#fff}\
h1{font-size:1.3em}h2{font-size:1.1em;margin-top:1.4em}\
table{border-collapse:collapse;width:100%;font-size:.9em}\
th,td{text-align:left;padding:.3em .4em;border-bottom:1px solid #ddd;vertical-align:top}\
th{background:#f4f4f4}\
.online{color:#11672c}.offline{color:#a8071a;font-weight:bold}\
.muted{color:#777}.wrap{overflow-x:auto}\
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

fn status_class(s: NodeStatus) -> &'static str {
    s.as_str()
}

/// The page for these networks and nodes, as seen at `now_ms`.
pub fn page(networks: &[NetworkSummary], nodes: &[NodeSummary], now_ms: i64) -> Markup {
    let sections: Vec<(&NetworkSummary, Vec<&NodeSummary>)> = networks
        .iter()
        .map(|net| {
            let mut list: Vec<&NodeSummary> =
                nodes.iter().filter(|n| n.network == net.id).collect();
            // Down first: that is what an operator looks for.
            list.sort_by(|a, b| b.status.cmp(&a.status).then(a.node.cmp(&b.node)));
            (net, list)
        })
        .collect();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta http-equiv="refresh" content="30";
                title { "meshtable" }
                style { (CSS) }
            }
            body {
                h1 { "meshtable" }
                @if networks.is_empty() {
                    p { "No network has reported yet. Nodes appear here once their agents connect." }
                }
                @for (net, list) in &sections {
                    h2 id=(format!("net-{}", net.id)) {
                        (net.id) " "
                        span.muted { "(" (net.online) " online, " (net.offline) " offline)" }
                    }
                    div.wrap {
                        table {
                            thead {
                                tr {
                                    th { "node" }
                                    th { "status" }
                                    th { "last seen" }
                                    th { "hostname" }
                                    th.wide { "model" }
                                }
                            }
                            tbody {
                                @for n in list {
                                    tr {
                                        td {
                                            a href=(format!("/api/v1/nodes/{}?network={}", n.node, n.network)) { (n.node) }
                                        }
                                        td class=(status_class(n.status)) title=(format!("since {}", format_rfc3339_ms(n.status_since_ms))) {
                                            (n.status.as_str())
                                        }
                                        td title=(format_rfc3339_ms(n.last_seen_ms)) { (ago(now_ms, n.last_seen_ms)) }
                                        td { (n.hostname.as_deref().unwrap_or("")) }
                                        td.wide { (n.model.as_deref().unwrap_or("")) }
                                    }
                                }
                            }
                        }
                    }
                }
                p.muted {
                    "Updated " (format_rfc3339_ms(now_ms)) ". "
                    a href="/api/v1/networks" { "API" } " · " a href="/metrics" { "metrics" }
                }
            }
        }
    }
}

async fn load(s: &AppState) -> Result<(Vec<NetworkSummary>, Vec<NodeSummary>), StoreError> {
    Ok((s.store.networks().await?, s.store.nodes(None).await?))
}

/// `GET /`.
pub async fn index(State(s): State<AppState>) -> Response {
    match load(&s).await {
        Ok((networks, nodes)) => {
            Html(page(&networks, &nodes, now_ms()).into_string()).into_response()
        }
        Err(e) => {
            error!(error = %e, "web page: cannot read the store");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Html("<!DOCTYPE html><title>meshtable</title><p>The database is unavailable; see the controller's log.</p>"),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            assert_eq!(
                ago(1_000_000_000_000, 1_000_000_000_000 - age),
                want,
                "{age}"
            );
        }
    }

    fn node(network: &str, id: &str, hostname: &str, status: NodeStatus) -> NodeSummary {
        NodeSummary {
            network: network.to_owned(),
            node: id.to_owned(),
            hostname: Some(hostname.to_owned()),
            model: Some("TP-Link \"CPE\" & <co>".to_owned()),
            status,
            status_since_ms: 0,
            first_seen_ms: 0,
            last_seen_ms: 1_000_000_000_000 - 180_000,
        }
    }

    #[test]
    fn escapes_everything_from_the_store() {
        let networks = [NetworkSummary {
            id: "net".to_owned(),
            nodes: 2,
            online: 1,
            offline: 1,
        }];
        let nodes = [
            node("net", "n1", "<script>alert(1)</script>", NodeStatus::Online),
            node("net", "n2", "a'b\"c", NodeStatus::Offline),
        ];
        let html = page(&networks, &nodes, 1_000_000_000_000).into_string();
        assert!(!html.contains("<script>"), "{html}");
        assert!(
            html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
            "{html}"
        );
        assert!(
            html.contains("TP-Link &quot;CPE&quot; &amp; &lt;co&gt;"),
            "{html}"
        );
        assert!(html.contains("3 min ago"));
        assert!(html.contains(r#"<meta http-equiv="refresh" content="30">"#));
        assert!(html.contains(r#"name="viewport""#));
        // Offline nodes come first.
        assert!(html.find(">n2<").unwrap() < html.find(">n1<").unwrap());
    }

    #[test]
    fn empty_fleet() {
        let html = page(&[], &[], 0).into_string();
        assert!(html.contains("No network has reported yet"));
    }
}
