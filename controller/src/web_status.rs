//! The status page, `GET /networks/{network}/status`: what needs an
//! operator's eyes, as plain HTML tables for a phone over a slow link, in
//! the manner of meshviewer's "new nodes" and "lost nodes" lists.
//!
//! It shows, from the same store calls as the JSON API:
//!
//! - the open alerts (`meshtable_store::Store::alerts`, as
//!   `GET /api/v1/networks/{network}/alerts`): rule and message, subject
//!   (a node links to the node, a site to the site), state (firing, or
//!   acknowledged and by whom), since when; firing first, then
//!   acknowledged, newest first within each;
//! - the new nodes, first seen within [`DEFAULT_NEW_DAYS`] days
//!   (`Store::new_nodes`, as `GET .../nodes/new`), newest first;
//! - the recently lost nodes, offline for more than [`DEFAULT_LOST_MIN`]
//!   and less than [`DEFAULT_LOST_MAX`] (`Store::lost_nodes`, as
//!   `GET .../nodes/lost`), most recently lost first.
//!
//! Each list shows at most [`LIST_CAP`] rows and then says how many more
//! there are, linking to the JSON, so that a network of 10,000 nodes still
//! has a small page.
//!
//! Authorisation is the topology page's: `ReadNodes` in the network; 404
//! for an unknown network and one the caller has no role in alike, 403 for
//! a role without `ReadNodes` (a funder), and the login page for nobody.
//! Every value from the store is escaped by maud.

use axum::extract::{Path, State};
use axum::response::{Html, IntoResponse, Response};
use maud::{Markup, html};
use meshtable_store::alerts::{Alert, AlertState};
use meshtable_store::liveness::NodeLiveness;
use meshtable_store::time::format_rfc3339_ms;

use crate::alerts::rules::SITE_DOWN;
use crate::api::AppState;
use crate::auth::{Action, Caller};
use crate::ingest::now_ms;
use crate::liveness::{DEFAULT_LOST_MAX, DEFAULT_LOST_MIN, DEFAULT_NEW_DAYS, ms};
use crate::web::{Viewer, ago, denied, layout, store_failed};

/// Most rows a list of the page shows.
pub const LIST_CAP: usize = 100;

/// `GET /networks/{network}/status` (see the module documentation).
pub async fn page(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
) -> Response {
    // As the JSON lists: ReadNodes, then 404 for a network that does not exist.
    if let Err(e) = caller
        .authorize_existing(&s.store, &network, Action::ReadNodes)
        .await
    {
        return denied(&e);
    }
    let now = now_ms();
    let alerts = match s.store.alerts(&network, false, false).await {
        Ok(a) => a,
        Err(e) => return store_failed(&e),
    };
    // As `new_nodes` with the default `days`.
    let since = now.saturating_sub(i64::from(DEFAULT_NEW_DAYS) * 24 * 3_600_000);
    let new = match s.store.new_nodes(&network, since, now).await {
        Ok(n) => n,
        Err(e) => return store_failed(&e),
    };
    // As `lost_nodes` with the default `min` and `max`.
    let lost = match s
        .store
        .lost_nodes(&network, now, ms(DEFAULT_LOST_MIN), ms(DEFAULT_LOST_MAX))
        .await
    {
        Ok(n) => n,
        Err(e) => return store_failed(&e),
    };
    Html(status_page(&network, &alerts, &new, &lost, now, Viewer::of(&caller)).into_string())
        .into_response()
}

/// The open alerts in the page's order: firing, then acknowledged; newest
/// (latest `since`) first within each. Pending and resolved ones are left
/// out.
pub fn open_alerts(alerts: &[Alert]) -> Vec<&Alert> {
    let rank = |a: &Alert| match a.state {
        AlertState::Firing => 0,
        _ => 1,
    };
    let mut open: Vec<&Alert> = alerts
        .iter()
        .filter(|a| matches!(a.state, AlertState::Firing | AlertState::Acknowledged))
        .collect();
    open.sort_by(|a, b| {
        rank(a)
            .cmp(&rank(b))
            .then(b.since_ms.cmp(&a.since_ms))
            .then(b.id.cmp(&a.id))
    });
    open
}

/// An alert's subject, linking to the node it is about (`node`,
/// `node/ifname`, `node/ifname->target`), or to the site for `site_down`.
fn subject_link(network: &str, a: &Alert) -> Markup {
    let href = if a.rule == SITE_DOWN {
        format!("/api/v1/networks/{network}/sites/{}", a.subject)
    } else {
        let node = a.subject.split('/').next().unwrap_or(&a.subject);
        format!("/api/v1/nodes/{node}?network={network}")
    };
    html! { a href=(href) { (a.subject) } }
}

/// A node: its hostname linking to the node, its id under it (as on the
/// network page); without a hostname the id is the link.
fn node_cell(n: &NodeLiveness) -> Markup {
    let hostname = n.hostname.as_deref().filter(|h| !h.is_empty());
    html! {
        td {
            a href=(format!("/api/v1/nodes/{}?network={}", n.node, n.network)) {
                (hostname.unwrap_or(&n.node))
            }
            @if hostname.is_some() {
                small { (n.node) }
            }
        }
    }
}

/// "and N more" under a list cut at [`LIST_CAP`], linking to the whole
/// list as JSON.
fn more_line(total: usize, json: &str) -> Markup {
    html! {
        @if total > LIST_CAP {
            p.muted {
                "and " (total - LIST_CAP) " more: "
                a href=(json) { "all (JSON)" }
            }
        }
    }
}

/// The status page of `network` (see the module documentation), as seen
/// at `now_ms`: `alerts` as the store lists them, `new` and `lost` as the
/// store orders them.
pub fn status_page(
    network: &str,
    alerts: &[Alert],
    new: &[NodeLiveness],
    lost: &[NodeLiveness],
    now_ms: i64,
    viewer: Option<Viewer<'_>>,
) -> Markup {
    let net = network;
    let open = open_alerts(alerts);
    let firing = open
        .iter()
        .filter(|a| a.state == AlertState::Firing)
        .count();
    let body = html! {
        h1 { (net) ": status" }
        p {
            @if firing > 0 { span.offline { (firing) " firing" } } @else { "0 firing" }
            ", " (open.len() - firing) " acknowledged, "
            (new.len()) " new, " (lost.len()) " lost. "
            a href=(format!("/networks/{net}")) { "Nodes" } " · "
            a href=(format!("/networks/{net}/topology")) { "Topology" }
        }
        h2 { "Open alerts" }
        @if open.is_empty() {
            p.muted { "No open alerts." }
        } @else {
            div.wrap {
                table {
                    thead {
                        tr { th { "alert" } th { "subject" } th { "state" } th { "since" } }
                    }
                    tbody {
                        @for a in open.iter().take(LIST_CAP) {
                            tr {
                                td { (a.rule) small { (a.message) } }
                                td { (subject_link(net, a)) }
                                @match a.state {
                                    AlertState::Firing => td.offline { "firing" },
                                    _ => td {
                                        "acknowledged"
                                        @if let Some(who) = &a.acked_by {
                                            small { "by " (who) }
                                        }
                                        @if let Some(t) = a.acked_ms {
                                            small title=(format_rfc3339_ms(t)) { (ago(now_ms, t)) }
                                        }
                                    },
                                }
                                td title=(format_rfc3339_ms(a.since_ms)) { (ago(now_ms, a.since_ms)) }
                            }
                        }
                    }
                }
            }
            (more_line(open.len(), &format!("/api/v1/networks/{net}/alerts")))
        }
        h2 { "New nodes" }
        p.muted { small { "First seen within the last " (DEFAULT_NEW_DAYS) " days, newest first." } }
        @if new.is_empty() {
            p.muted { "No new nodes." }
        } @else {
            div.wrap {
                table {
                    thead {
                        tr { th { "node" } th { "first seen" } th { "status" } }
                    }
                    tbody {
                        @for n in new.iter().take(LIST_CAP) {
                            tr {
                                (node_cell(n))
                                td title=(format_rfc3339_ms(n.first_seen_ms)) { (ago(now_ms, n.first_seen_ms)) }
                                td class=(n.status.as_str()) { (n.state.as_str()) }
                            }
                        }
                    }
                }
            }
            (more_line(new.len(), &format!("/api/v1/networks/{net}/nodes/new")))
        }
        h2 { "Recently lost" }
        p.muted {
            small {
                "Offline for more than " (humantime::format_duration(DEFAULT_LOST_MIN))
                " and less than " (humantime::format_duration(DEFAULT_LOST_MAX))
                ", most recently lost first."
            }
        }
        @if lost.is_empty() {
            p.muted { "No recently lost nodes." }
        } @else {
            div.wrap {
                table {
                    thead {
                        tr { th { "node" } th { "last seen" } th.wide { "offline since" } }
                    }
                    tbody {
                        @for n in lost.iter().take(LIST_CAP) {
                            tr {
                                (node_cell(n))
                                td.offline title=(format_rfc3339_ms(n.last_seen_ms)) { (ago(now_ms, n.last_seen_ms)) }
                                td.wide { (format_rfc3339_ms(n.status_since_ms)) }
                            }
                        }
                    }
                }
            }
            (more_line(lost.len(), &format!("/api/v1/networks/{net}/nodes/lost")))
        }
    };
    layout(
        &format!("{net} status · meshtable"),
        true,
        body,
        now_ms,
        viewer,
    )
}

#[cfg(test)]
mod tests {
    use meshtable_store::NodeStatus;
    use meshtable_store::liveness::NodeState;

    use super::*;

    const NOW: i64 = 1_000_000_000_000;
    const MIN: i64 = 60_000;

    fn alert(id: i64, rule: &str, subject: &str, state: AlertState, age_ms: i64) -> Alert {
        Alert {
            id,
            network: "net".to_owned(),
            rule: rule.to_owned(),
            subject: subject.to_owned(),
            site: None,
            state,
            message: format!("message {id}"),
            value: None,
            since_ms: NOW - age_ms,
            fired_ms: Some(NOW - age_ms),
            acked_ms: None,
            acked_by: None,
            resolved_ms: None,
        }
    }

    fn node(id: &str, hostname: Option<&str>, status: NodeStatus, age_ms: i64) -> NodeLiveness {
        NodeLiveness {
            network: "net".to_owned(),
            node: id.to_owned(),
            hostname: hostname.map(str::to_owned),
            site: None,
            status,
            state: match status {
                NodeStatus::Online => NodeState::Online,
                NodeStatus::Offline => NodeState::Offline,
            },
            status_since_ms: NOW - age_ms,
            flapping_since_ms: None,
            in_maintenance: false,
            first_seen_ms: NOW - age_ms,
            last_seen_ms: NOW - age_ms,
        }
    }

    /// The text between heading `h2` and the next heading (or the end).
    fn section<'a>(html: &'a str, h2: &str) -> &'a str {
        let start = html
            .find(&format!("<h2>{h2}</h2>"))
            .unwrap_or_else(|| panic!("no {h2}: {html}"));
        let rest = &html[start + h2.len() + 9..];
        &rest[..rest.find("<h2>").unwrap_or(rest.len())]
    }

    #[test]
    fn empty_network() {
        let html = status_page("net", &[], &[], &[], NOW, None).into_string();
        assert!(
            html.contains("<p>0 firing, 0 acknowledged, 0 new, 0 lost. "),
            "{html}"
        );
        assert!(
            section(&html, "Open alerts").contains("No open alerts."),
            "{html}"
        );
        assert!(
            section(&html, "New nodes").contains("No new nodes."),
            "{html}"
        );
        assert!(
            section(&html, "Recently lost").contains("No recently lost nodes."),
            "{html}"
        );
        assert!(!html.contains("<table"), "{html}");
        assert!(
            html.contains("Offline for more than 10m and less than 14days"),
            "{html}"
        );
        // The way back to the other pages of the network.
        assert!(
            html.contains(r#"<a href="/networks/net">Nodes</a>"#),
            "{html}"
        );
        assert!(
            html.contains(r#"<a href="/networks/net/topology">Topology</a>"#),
            "{html}"
        );
        assert!(html.contains(r#"<meta http-equiv="refresh" content="30">"#));
    }

    #[test]
    fn alerts_firing_first_then_acknowledged_newest_first() {
        let acked = Alert {
            acked_ms: Some(NOW - 2 * MIN),
            acked_by: Some("north-op".to_owned()),
            ..alert(1, "memory_low", "b", AlertState::Acknowledged, MIN)
        };
        let alerts = [
            acked,
            alert(2, "node_offline", "old", AlertState::Firing, 3 * 3_600_000),
            alert(3, "node_offline", "new", AlertState::Firing, 5 * MIN),
            alert(4, "reboots", "pending", AlertState::Pending, MIN),
            alert(5, "reboots", "resolved", AlertState::Resolved, MIN),
            alert(
                6,
                "site_down",
                "village",
                AlertState::Acknowledged,
                2 * 86_400_000,
            ),
            alert(
                7,
                "link_degraded",
                "a/wlan0->gw",
                AlertState::Firing,
                30 * MIN,
            ),
        ];
        let order: Vec<i64> = open_alerts(&alerts).iter().map(|a| a.id).collect();
        assert_eq!(order, [3, 7, 2, 1, 6]);

        let html = status_page("net", &alerts, &[], &[], NOW, None).into_string();
        let open = section(&html, "Open alerts");
        let pos = |s: &str| open.find(s).unwrap_or_else(|| panic!("no {s}: {open}"));
        assert!(pos("message 3") < pos("message 7"), "{open}");
        assert!(pos("message 7") < pos("message 2"), "{open}");
        assert!(pos("message 2") < pos("message 1"), "{open}");
        assert!(pos("message 1") < pos("message 6"), "{open}");
        assert!(!open.contains("message 4") && !open.contains("message 5"));
        assert!(
            html.contains(r#"<span class="offline">3 firing</span>, 2 acknowledged"#),
            "{html}"
        );
        // A firing row, whole: rule and message, the node, state, since.
        assert!(
            open.contains(concat!(
                r#"<tr><td>node_offline<small>message 3</small></td>"#,
                r#"<td><a href="/api/v1/nodes/new?network=net">new</a></td>"#,
                r#"<td class="offline">firing</td>"#,
                r#"<td title="2001-09-09T01:41:40.000Z">5 min ago</td></tr>"#
            )),
            "{open}"
        );
        // Acknowledged: by whom and when.
        assert!(
            open.contains(
                r#"<td>acknowledged<small>by north-op</small><small title="2001-09-09T01:44:40.000Z">2 min ago</small></td>"#
            ),
            "{open}"
        );
        // A link's alert links to its reporting node, a site's to the site.
        assert!(
            open.contains(r#"<a href="/api/v1/nodes/a?network=net">a/wlan0-&gt;gw</a>"#),
            "{open}"
        );
        assert!(
            open.contains(r#"<a href="/api/v1/networks/net/sites/village">village</a>"#),
            "{open}"
        );
        assert!(
            open.contains("2 d ago") && open.contains("3 h ago"),
            "{open}"
        );
        assert!(!open.contains("more"), "{open}");
    }

    #[test]
    fn hostile_values_are_escaped() {
        let alerts = [Alert {
            message: "<script>alert(1)</script> & \"q\"".to_owned(),
            acked_by: Some("<b>eve</b>".to_owned()),
            ..alert(1, "<i>rule</i>", "n1", AlertState::Acknowledged, MIN)
        }];
        let new = [node(
            "n1",
            Some("<img src=x onerror=alert(1)>"),
            NodeStatus::Online,
            MIN,
        )];
        let lost = [node(
            "n2",
            Some("a'b\"c<d>"),
            NodeStatus::Offline,
            3_600_000,
        )];
        let html = status_page("net", &alerts, &new, &lost, NOW, None).into_string();
        for raw in ["<script", "<img", "<b>eve", "<i>rule", "<d>"] {
            assert!(!html.contains(raw), "{raw}: {html}");
        }
        for escaped in [
            "&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;q&quot;",
            "by &lt;b&gt;eve&lt;/b&gt;",
            "&lt;i&gt;rule&lt;/i&gt;",
            r#"<a href="/api/v1/nodes/n1?network=net">&lt;img src=x onerror=alert(1)&gt;</a><small>n1</small>"#,
            "a'b&quot;c&lt;d&gt;",
        ] {
            assert!(html.contains(escaped), "{escaped}: {html}");
        }
    }

    #[test]
    fn new_and_lost_nodes_in_the_given_order() {
        let new = [
            node("n-new", Some("fresh"), NodeStatus::Online, 2 * MIN),
            node("n-older", None, NodeStatus::Offline, 3 * 86_400_000),
        ];
        let lost = [
            node("l-1", Some("lost-recently"), NodeStatus::Offline, 20 * MIN),
            node(
                "l-2",
                Some("lost-long-ago"),
                NodeStatus::Offline,
                5 * 86_400_000,
            ),
        ];
        let html = status_page("net", &[], &new, &lost, NOW, None).into_string();
        let new_s = section(&html, "New nodes");
        assert!(
            new_s.contains(concat!(
                r#"<tr><td><a href="/api/v1/nodes/n-new?network=net">fresh</a><small>n-new</small></td>"#,
                r#"<td title="2001-09-09T01:44:40.000Z">2 min ago</td><td class="online">online</td></tr>"#
            )),
            "{new_s}"
        );
        // Without a hostname the id is the link; an offline new node says so.
        assert!(
            new_s.contains(r#"<a href="/api/v1/nodes/n-older?network=net">n-older</a></td>"#),
            "{new_s}"
        );
        assert!(
            new_s.contains(r#"<td class="offline">offline</td>"#),
            "{new_s}"
        );
        assert!(new_s.find("fresh") < new_s.find("n-older"), "{new_s}");
        let lost_s = section(&html, "Recently lost");
        assert!(
            lost_s.find("lost-recently").expect("l-1") < lost_s.find("lost-long-ago").expect("l-2"),
            "{lost_s}"
        );
        assert!(
            lost_s.contains(
                r#"<td class="offline" title="2001-09-09T01:26:40.000Z">20 min ago</td>"#
            ),
            "{lost_s}"
        );
        assert!(lost_s.contains("5 d ago"), "{lost_s}");
        assert!(
            section(&html, "Open alerts").contains("No open alerts."),
            "{html}"
        );
        assert!(
            html.contains("0 firing, 0 acknowledged, 2 new, 2 lost."),
            "{html}"
        );
    }

    #[test]
    fn long_lists_are_cut_with_a_more_line() {
        let many = |prefix: &str, n: usize, status: NodeStatus| -> Vec<NodeLiveness> {
            (0..n)
                .map(|i| {
                    node(
                        &format!("{prefix}{i:05}"),
                        Some(&format!("ffhb-gemeinde-haus-{i}")),
                        status,
                        i64::try_from(i).unwrap_or_default() * 1000 + 20 * MIN,
                    )
                })
                .collect()
        };
        let new = many("n", 10_000, NodeStatus::Online);
        let lost = many("l", LIST_CAP + 1, NodeStatus::Offline);
        let alerts: Vec<Alert> = (0..250)
            .map(|i| alert(i, "node_offline", &format!("x{i}"), AlertState::Firing, MIN))
            .collect();
        let html = status_page("net", &alerts, &new, &lost, NOW, None).into_string();
        let rows = |s: &str| s.matches("<tr><td>").count();
        let (a, n, l) = (
            section(&html, "Open alerts"),
            section(&html, "New nodes"),
            section(&html, "Recently lost"),
        );
        assert_eq!((rows(a), rows(n), rows(l)), (LIST_CAP, LIST_CAP, LIST_CAP));
        assert!(
            a.contains(r#"<p class="muted">and 150 more: <a href="/api/v1/networks/net/alerts">all (JSON)</a></p>"#),
            "{a}"
        );
        assert!(
            n.contains(r#"and 9900 more: <a href="/api/v1/networks/net/nodes/new">all (JSON)</a>"#),
            "{n}"
        );
        assert!(
            l.contains(r#"and 1 more: <a href="/api/v1/networks/net/nodes/lost">all (JSON)</a>"#),
            "{l}"
        );
        // The first rows are shown, not the last.
        assert!(n.contains(">n00099<") && !n.contains(">n00100<"), "{n}");
        // Counts are of the whole lists.
        assert!(html.contains("250 firing</span>, 0 acknowledged, 10000 new, 101 lost."));
        // A 10,000-node network's page stays small.
        println!("status page {} bytes", html.len());
        assert!(html.len() < 80_000, "{} bytes", html.len());
    }
}
