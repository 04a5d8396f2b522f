//! The web pages, server-rendered HTML for a phone on a slow link:
//! `GET /` lists the networks the person has a role in, with their node
//! counts, and `GET /networks/{network}` lists one network's nodes, down
//! first (to a funder: the counts only). `GET /login` and `POST /login`,
//! `POST /logout` open and close the session.
//!
//! No JavaScript, a little inline CSS, refreshed every 30 seconds.
//! Every value from the store is escaped by maud. Every form carries a CSRF
//! token: the session's for `POST /logout`, and for `POST /login` a random
//! one also set in a short-lived cookie (double submit).

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use maud::{DOCTYPE, Markup, html};
use meshtable_proto::validate_id;
use meshtable_store::time::format_rfc3339_ms;
use meshtable_store::{NetworkSummary, NodeSummary, StoreError};
use tracing::error;

use crate::api::{ApiError, AppState};
use crate::auth::api::{clear_session_cookie, login_session, logout_session, session_cookie};
use crate::auth::secret::{Secret, constant_time_eq, random_hex256};
use crate::auth::{Action, Caller, LOGIN_COOKIE, SESSION_COOKIE};
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

/// Who is looking at a page: the login name and the session's CSRF token
/// (for the logout form).
#[derive(Debug, Clone, Copy)]
pub struct Viewer<'a> {
    /// Login name.
    pub user: &'a str,
    /// The session's CSRF token; `None` for a token caller (no logout form).
    pub csrf: Option<&'a str>,
}

impl<'a> Viewer<'a> {
    /// The viewer of a logged-in caller.
    pub fn of(caller: &'a Caller) -> Option<Viewer<'a>> {
        caller.user_name().map(|user| Viewer {
            user,
            csrf: caller.csrf_token(),
        })
    }
}

/// The frame of every page: head, refresh, heading, `body`, footer with
/// the viewer and a logout button.
pub(crate) fn layout(
    title: &str,
    refresh: bool,
    body: Markup,
    now_ms: i64,
    viewer: Option<Viewer<'_>>,
) -> Markup {
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
                @if let Some(v) = viewer {
                    form.muted method="post" action="/logout" {
                        "Logged in as " (v.user) ". "
                        @if let Some(csrf) = v.csrf {
                            input type="hidden" name="csrf" value=(csrf);
                            button type="submit" { "Log out" }
                        }
                    }
                }
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
pub fn index_page(networks: &[NetworkSummary], now_ms: i64, viewer: Option<Viewer<'_>>) -> Markup {
    let body = html! {
        h1 { "meshtable" }
        @if networks.is_empty() {
            p { "No network of yours has reported yet. Nodes appear here once their agents connect." }
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
    layout("meshtable", true, body, now_ms, viewer)
}

/// The page of one network to someone who may see aggregates only: counts,
/// no node.
pub fn network_summary_page(
    net: &NetworkSummary,
    now_ms: i64,
    viewer: Option<Viewer<'_>>,
) -> Markup {
    let body = html! {
        h1 { (net.id) }
        p { (net.nodes) " nodes: " (net.online) " online, " (net.offline) " offline." }
        p.muted {
            "Aggregates: "
            a href=(format!("/api/v1/networks/{}/summary", net.id)) { "summary (JSON)" }
        }
    };
    layout(
        &format!("{} · meshtable", net.id),
        true,
        body,
        now_ms,
        viewer,
    )
}

/// The page of one network: its nodes, down first, as seen at `now_ms`.
pub fn network_page(
    net: &NetworkSummary,
    nodes: &[NodeSummary],
    now_ms: i64,
    viewer: Option<Viewer<'_>>,
) -> Markup {
    let mut list: Vec<&NodeSummary> = nodes.iter().filter(|n| n.network == net.id).collect();
    // Down first: that is what an operator looks for.
    list.sort_by(|a, b| b.status.cmp(&a.status).then(a.node.cmp(&b.node)));
    let body = html! {
        h1 {
            (net.id) " "
            span.muted { "(" (net.online) " online, " (net.offline) " offline)" }
        }
        p {
            a href=(format!("/networks/{}/topology", net.id)) { "Topology" } " · "
            a href=(format!("/networks/{}/status", net.id)) { "Status" }
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
    layout(
        &format!("{} · meshtable", net.id),
        true,
        body,
        now_ms,
        viewer,
    )
}

/// A small page for an error: `status` with `message`.
fn error_page(status: StatusCode, message: &str) -> Response {
    let body = html! {
        h1 { (status.as_u16()) " " (status.canonical_reason().unwrap_or("error")) }
        p { (message) }
    };
    (
        status,
        Html(layout("meshtable", false, body, now_ms(), None).into_string()),
    )
        .into_response()
}

/// An API error as a page; 401 sends the browser to the login page.
pub(crate) fn denied(e: &ApiError) -> Response {
    match e {
        ApiError::Unauthorized(_) => Redirect::to("/login").into_response(),
        ApiError::Store(e) => store_failed(e),
        e => error_page(e.status(), &e.to_string()),
    }
}

/// The login page, with `error` above the form if set. Sets the login CSRF
/// cookie the form's hidden field repeats.
pub fn login_page(csrf: &str, error: Option<&str>) -> Markup {
    let body = html! {
        h1 { "meshtable: log in" }
        @if let Some(e) = error {
            p.offline { (e) }
        }
        form method="post" action="/login" {
            input type="hidden" name="csrf" value=(csrf);
            p { label { "User " input type="text" name="user" autocomplete="username" required; } }
            p { label { "Password " input type="password" name="password" autocomplete="current-password" required; } }
            p { button type="submit" { "Log in" } }
        }
    };
    layout("meshtable: log in", false, body, now_ms(), None)
}

fn login_response(status: StatusCode, error: Option<&str>, secure: bool) -> Response {
    let csrf = random_hex256();
    let mut resp = (status, Html(login_page(&csrf, error).into_string())).into_response();
    let cookie = format!(
        "{LOGIN_COOKIE}={csrf}; Path=/login; HttpOnly; SameSite=Strict; Max-Age=3600{}",
        if secure { "; Secure" } else { "" }
    );
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

fn cookie_value<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

fn form_field(body: &Bytes, name: &str) -> Option<String> {
    url::form_urlencoded::parse(body)
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

/// `GET /login`.
pub async fn login_form(State(s): State<AppState>, caller: Caller) -> Response {
    if caller.is_authenticated() {
        return Redirect::to("/").into_response();
    }
    login_response(StatusCode::OK, None, s.auth.secure_cookies)
}

/// `POST /login`: checks the form's CSRF token against its cookie, then the
/// password (rate limited); on success sets the session cookie and goes to `/`.
pub async fn login_submit(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let secure = s.auth.secure_cookies;
    let form_csrf = form_field(&body, "csrf").unwrap_or_default();
    let csrf_ok = cookie_value(&headers, LOGIN_COOKIE)
        .is_some_and(|c| !c.is_empty() && constant_time_eq(c, &form_csrf));
    if !csrf_ok {
        return login_response(
            StatusCode::FORBIDDEN,
            Some("The form expired or was not sent from this page: please try again."),
            secure,
        );
    }
    let user = form_field(&body, "user").unwrap_or_default();
    let password = Secret::new(form_field(&body, "password").unwrap_or_default());
    match login_session(&s, caller.source(), &user, &password).await {
        Ok(session) => {
            let mut resp = Redirect::to("/").into_response();
            let headers = resp.headers_mut();
            for cookie in [
                session_cookie(session.id.expose(), &s.auth),
                format!("{LOGIN_COOKIE}=; Path=/login; HttpOnly; SameSite=Strict; Max-Age=0"),
            ] {
                if let Ok(v) = HeaderValue::from_str(&cookie) {
                    headers.append(header::SET_COOKIE, v);
                }
            }
            resp
        }
        Err(ApiError::Store(e)) => store_failed(&e),
        Err(e @ ApiError::TooManyRequests(_)) => {
            login_response(StatusCode::TOO_MANY_REQUESTS, Some(&e.to_string()), secure)
        }
        Err(_) => login_response(
            StatusCode::UNAUTHORIZED,
            Some("Wrong user name or password."),
            secure,
        ),
    }
}

/// `POST /logout`: needs the session's CSRF token in the form.
pub async fn logout(
    State(s): State<AppState>,
    caller: Caller,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let token = form_field(&body, "csrf").unwrap_or_default();
    let caller = match caller.with_form_csrf(&token) {
        Ok(c) => c,
        Err(e) => return denied(&e),
    };
    if let Err(e) = caller.require_user() {
        return denied(&e);
    }
    if let Err(e) = logout_session(&s, &caller, cookie_value(&headers, SESSION_COOKIE)).await {
        return denied(&e);
    }
    let mut resp = Redirect::to("/login").into_response();
    if let Ok(v) = HeaderValue::from_str(&clear_session_cookie(&s.auth)) {
        resp.headers_mut().insert(header::SET_COOKIE, v);
    }
    resp
}

/// A store error as a 503 page, logged.
pub(crate) fn store_failed(e: &StoreError) -> Response {
    error!(error = %e, "web page: cannot read the store");
    error_page(
        StatusCode::SERVICE_UNAVAILABLE,
        "The database is unavailable; see the controller's log.",
    )
}

/// `GET /`: the login page for nobody, else the caller's networks.
pub async fn index(State(s): State<AppState>, caller: Caller) -> Response {
    if let Err(e) = caller.require_user() {
        return denied(&e);
    }
    match s.store.networks().await {
        Ok(mut networks) => {
            networks.retain(|n| caller.sees(&n.id));
            Html(index_page(&networks, now_ms(), Viewer::of(&caller)).into_string()).into_response()
        }
        Err(e) => store_failed(&e),
    }
}

/// `GET /networks/{network}`: 400 for an invalid id, 404 for an unknown one
/// or one the caller has no role in; counts only for a funder.
pub async fn network(
    State(s): State<AppState>,
    caller: Caller,
    Path(network): Path<String>,
) -> Response {
    if let Err(e) = caller.require_user() {
        return denied(&e);
    }
    if let Err(e) = validate_id(&network) {
        return error_page(StatusCode::BAD_REQUEST, &format!("network: {e}"));
    }
    if let Err(e) = caller.authorize(&network, Action::ReadAggregates) {
        return denied(&e);
    }
    let networks = match s.store.networks().await {
        Ok(n) => n,
        Err(e) => return store_failed(&e),
    };
    // A network without nodes yet (just created, or being onboarded) has
    // a page too, with zeros, for those with a role in it.
    let empty;
    let net = match networks.iter().find(|n| n.id == network) {
        Some(n) => n,
        None => match s.store.network_known(&network).await {
            Ok(true) => {
                empty = NetworkSummary {
                    id: network.clone(),
                    nodes: 0,
                    online: 0,
                    offline: 0,
                };
                &empty
            }
            Ok(false) => return denied(&ApiError::unknown_network(&network)),
            Err(e) => return store_failed(&e),
        },
    };
    let viewer = Viewer::of(&caller);
    if !caller.can(&network, Action::ReadNodes) {
        return Html(network_summary_page(net, now_ms(), viewer).into_string()).into_response();
    }
    match s.store.nodes(Some(&network)).await {
        Ok(nodes) => {
            Html(network_page(net, &nodes, now_ms(), viewer).into_string()).into_response()
        }
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
        let html = network_page(&net("net", 2, 1), &nodes, NOW, None).into_string();
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
        let html =
            index_page(&[net("bremen", 880, 11), net("leipzig", 5, 0)], NOW, None).into_string();
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
        let html = index_page(&[], 0, None).into_string();
        assert!(html.contains("No network of yours has reported yet"));
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
        let page = network_page(&net("bremen", 280, 20), &nodes, NOW, None).into_string();
        let index = index_page(&[net("bremen", 280, 20)], NOW, None).into_string();
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
