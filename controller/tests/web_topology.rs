//! The topology page, `GET /networks/{network}/topology`, on the whole
//! controller in-process (embedded broker; SQLite, and PostgreSQL when
//! `MESHTABLE_TEST_DATABASE_URL` is set), fed real CBOR hellos and reports
//! with mesh neighbours over MQTT: the page shows each link with both ends
//! and the quality each end reports, marks the gateway, lists the isolated
//! node, flags a link under its reference, escapes a hostile hostname,
//! answers callers without `ReadNodes` as the JSON topology does, and never
//! shows another network's nodes.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use meshtable::alerts::engine;
use meshtable::auth::{self, TokenScope};
use meshtable::ingest::now_ms;
use meshtable::serve::Controller;
use serde_json::{Value, json};

#[path = "common/databases.rs"]
mod databases;
#[path = "common/mesh.rs"]
mod mesh;
#[path = "common/publish.rs"]
mod publish;

use mesh::{NORTH, SOUTH, X_WLAN, Y_WLAN, start_quiet, two_networks};
use publish::publish_all;
#[path = "../../crates/store/tests/common/pg_url.rs"]
mod pg_url;
#[path = "common/start.rs"]
mod start;

const HOSTILE: &str = "<script>alert(1)</script>";

struct Harness {
    controller: Controller,
    /// Does not follow redirects: the login redirect is a status to check.
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start(database_url: &str) -> Result<Harness> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        let controller = start_quiet(dir.path(), Some(database_url)).await?;
        Ok(Harness {
            controller,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()?,
            _dir: dir,
        })
    }

    fn mqtt_addr(&self) -> Result<SocketAddr> {
        Ok(self
            .controller
            .mqtt_url()
            .trim_start_matches("mqtt://")
            .parse()?)
    }

    /// A token of a new account `name` with `role` in `network` (none: no
    /// role anywhere).
    async fn token_of(&self, name: &str, role: Option<(&str, &str)>) -> Result<String> {
        let store = self.controller.store();
        let (account, _) = auth::add_user(store, name, None, false).await?;
        if let Some((network, role)) = role {
            store
                .grant_role(account.id, network, role, now_ms())
                .await?;
        }
        let t = auth::issue_token(
            store,
            &account,
            &TokenScope::default(),
            Duration::from_secs(3600),
            "web-topology-test",
        )
        .await?;
        Ok(t.token.expose().to_owned())
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.controller.http_url());
        let mut r = self.http.request(method, &url);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    async fn get(&self, path: &str, token: Option<&str>) -> Result<(u16, String)> {
        self.call(reqwest::Method::GET, path, token, None).await
    }
}

/// The nodes of both networks: `(id, hostname)`; north-a's hostname is
/// hostile.
const NORTH_NODES: [(&str, &str); 4] = [
    ("north-gw", "gw-north"),
    ("north-a", HOSTILE),
    ("north-b", "b-north"),
    ("north-c", "c-lonely"),
];
const SOUTH_NODES: [(&str, &str); 2] = [("south-x", "secret-x"), ("south-y", "secret-y")];

/// Waits until the JSON topology of `network` has `links` directions and
/// `uplinks` gateways.
async fn wait_graph(
    h: &Harness,
    admin: &str,
    network: &str,
    links: usize,
    uplinks: usize,
) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = h
            .get(&format!("/api/v1/networks/{network}/topology"), Some(admin))
            .await?;
        ensure!(status == 200, "{status} {body}");
        let g: Value = serde_json::from_str(&body)?;
        let got_links = g["links"].as_array().map_or(0, Vec::len);
        let got_uplinks = g["nodes"].as_array().map_or(0, |n| {
            n.iter()
                .filter(|n| n["properties"]["uplink"] == json!(true))
                .count()
        });
        if got_links == links && got_uplinks == uplinks {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{network}: {got_links} links, {got_uplinks} uplinks: {g}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The part of `html` from heading `from` to the next `<h2>` (or the end).
fn section<'a>(html: &'a str, from: &str) -> &'a str {
    let Some(start) = html.find(&format!("<h2>{from}</h2>")) else {
        return "";
    };
    let rest = &html[start + 4..];
    let end = rest.find("<h2>").unwrap_or(rest.len());
    &rest[..end]
}

/// The table rows of `html`.
fn rows(html: &str) -> Vec<&str> {
    html.split("<tr>").skip(1).collect()
}

/// The cells of a row.
fn cells(row: &str) -> Vec<&str> {
    row.split("<td").skip(1).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_topology_page() -> Result<()> {
    databases::on_each_database("webtopo", |url| async move { topology_page_on(&url).await }).await
}

async fn topology_page_on(url: &str) -> Result<()> {
    let h = Harness::start(url).await?;
    let admin = auth::superadmin_token(h.controller.store(), "tests")
        .await?
        .expose()
        .to_owned();
    let operator = h.token_of("north-op", Some((NORTH, "operator"))).await?;
    let funder = h.token_of("north-funder", Some((NORTH, "funder"))).await?;
    let stranger = h.token_of("south-viewer", Some((SOUTH, "viewer"))).await?;

    let now = now_ms();
    publish_all(
        h.mqtt_addr()?,
        two_networks(now, NORTH_NODES, SOUTH_NODES, |_| {})?,
    )
    .await?;
    wait_graph(&h, &admin, NORTH, 4, 1).await?;
    wait_graph(&h, &admin, SOUTH, 2, 0).await?;

    let page_path = format!("/networks/{NORTH}/topology");
    let (status, html) = h.get(&page_path, Some(&operator)).await?;
    ensure!(status == 200, "{status} {html}");
    println!("topology page: {} bytes", html.len());

    // Escaped, never raw.
    ensure!(!html.contains("<script"), "{html}");
    ensure!(
        html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"),
        "{html}"
    );
    ensure!(
        html.contains(r#"<meta http-equiv="refresh" content="30">"#),
        "{html}"
    );
    // Counts.
    ensure!(
        html.contains("4 nodes (4 online), 2 links up, 0 down"),
        "{html}"
    );

    // The gateway, serving north-a; no other node in that table.
    let gateways = section(&html, "Gateways");
    let gw_rows = rows(gateways);
    ensure!(gw_rows.len() == 2, "header and one gateway: {gateways}");
    ensure!(
        gw_rows[1].contains(r#"<a href="/api/v1/nodes/north-gw?network=north">gw-north</a>"#)
            && gw_rows[1].contains("<td>1</td>")
            && gw_rows[1].contains(">eth0<"),
        "{gateways}"
    );
    ensure!(!gateways.contains("alert(1)"), "{gateways}");

    // Links: both ends, each with the quality it reports.
    let links = section(&html, "Links");
    let link_rows = rows(links);
    ensure!(link_rows.len() == 3, "header and two links: {links}");
    let find = |a: &str, b: &str| {
        link_rows
            .iter()
            .find(|r| r.contains(a) && r.contains(b))
            .map(|r| cells(r))
    };
    let wifi = find("gw-north", "alert(1)").context("the gateway's wifi link")?;
    ensure!(wifi.len() == 4, "{wifi:?}");
    let (gw_end, a_end) = if wifi[0].contains("gw-north") {
        (wifi[0], wifi[1])
    } else {
        (wifi[1], wifi[0])
    };
    ensure!(gw_end.contains("TQ 230 · -58 dBm"), "{gw_end}");
    ensure!(a_end.contains("TQ 200 · -63 dBm"), "{a_end}");
    ensure!(
        wifi[2].contains("up") && wifi[2].contains("since "),
        "{}",
        wifi[2]
    );
    ensure!(wifi[3].contains("batman-adv"), "{}", wifi[3]);
    let wired = find("b-north", "alert(1)").context("the babel link")?;
    let (a_end, b_end) = if wired[0].contains("b-north") {
        (wired[1], wired[0])
    } else {
        (wired[0], wired[1])
    };
    ensure!(a_end.contains("cost 256"), "{a_end}");
    ensure!(b_end.contains("cost 320"), "{b_end}");
    ensure!(wired[3].contains("babel"), "{}", wired[3]);
    // Worst first: babel 256/320 is 0.8 at worst, TQ 200/255 is 0.78.
    ensure!(
        link_rows[1].contains("gw-north") && link_rows[2].contains("b-north"),
        "{links}"
    );

    // The node without a link.
    let isolated = section(&html, "Isolated");
    ensure!(rows(isolated).len() == 2, "{isolated}");
    ensure!(isolated.contains("c-lonely"), "{isolated}");
    ensure!(!isolated.contains("gw-north"), "{isolated}");

    // Nothing of the other network.
    for leak in ["south", "secret-x", "secret-y", X_WLAN, Y_WLAN] {
        ensure!(!html.contains(leak), "{leak} in {html}");
    }
    // And the other network's page shows only its own.
    let (status, south) = h
        .get(&format!("/networks/{SOUTH}/topology"), Some(&admin))
        .await?;
    ensure!(status == 200, "{status} {south}");
    ensure!(
        south.contains("secret-x") && south.contains("secret-y"),
        "{south}"
    );
    for leak in ["north-", "gw-north", "alert(1)", "c-lonely"] {
        ensure!(!south.contains(leak), "{leak} in {south}");
    }

    // The network page links here.
    let (status, net_page) = h
        .get(&format!("/networks/{NORTH}"), Some(&operator))
        .await?;
    ensure!(status == 200, "{status}");
    ensure!(
        net_page.contains(r#"<a href="/networks/north/topology">Topology</a>"#),
        "{net_page}"
    );

    // Callers without ReadNodes: the same status as the JSON topology.
    let json_path = format!("/api/v1/networks/{NORTH}/topology");
    for (who, token, want) in [
        ("no role in the network", Some(stranger.as_str()), 404),
        ("funder", Some(funder.as_str()), 403),
    ] {
        let (page_status, body) = h.get(&page_path, token).await?;
        let (json_status, _) = h.get(&json_path, token).await?;
        ensure!(
            page_status == json_status && page_status == want,
            "{who}: page {page_status}, JSON {json_status}, want {want}"
        );
        for leak in ["gw-north", "alert(1)", "north-a", "c-lonely"] {
            ensure!(!body.contains(leak), "{who}: {leak} in {body}");
        }
    }
    // A missing network is 404 even to a superadmin, as in JSON.
    for path in [
        "/networks/nowhere/topology",
        "/api/v1/networks/nowhere/topology",
    ] {
        let (status, _) = h.get(path, Some(&admin)).await?;
        ensure!(status == 404, "{path}: {status}");
    }
    // Nobody: the login page, as the other pages.
    let (status, _) = h.get(&page_path, None).await?;
    ensure!(status == 303, "anonymous: {status}");

    // A link under its reference is flagged, and listed first.
    let (status, body) = h
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/networks/{NORTH}/alert-settings"),
            Some(&admin),
            Some(json!({"rules": {"link_hold_seconds": 0}})),
        )
        .await?;
    ensure!(status == 200, "{status} {body}");
    let (status, body) = h
        .call(
            reqwest::Method::PUT,
            &format!("/api/v1/networks/{NORTH}/links/north-a/north-gw/reference"),
            Some(&admin),
            Some(json!({"signal_dbm": -40})),
        )
        .await?;
    ensure!(status == 200, "{status} {body}");
    let store = h.controller.store();
    engine::evaluate_network(store, NORTH, now_ms()).await?;
    engine::evaluate_network(store, NORTH, now_ms() + 1000).await?;
    let (status, html) = h.get(&page_path, Some(&operator)).await?;
    ensure!(status == 200, "{status} {html}");
    ensure!(html.contains("1 under reference"), "{html}");
    let links = section(&html, "Links");
    let link_rows = rows(links);
    ensure!(link_rows.len() == 3, "{links}");
    let first = cells(link_rows[1]);
    let a_end = first
        .iter()
        .find(|c| c.contains("alert(1)"))
        .context("north-a's end")?;
    ensure!(
        a_end.contains("under reference") && a_end.contains("23 dB under"),
        "{a_end}"
    );
    ensure!(first.iter().any(|c| c.contains("gw-north")), "{first:?}");
    ensure!(!link_rows[2].contains("under reference"), "{links}");

    h.controller.shutdown().await;
    Ok(())
}
