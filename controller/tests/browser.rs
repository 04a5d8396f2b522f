//! The web UI in a real browser: Debian's headless Chromium driven over
//! WebDriver (chromedriver, started here on a free port), against the whole
//! controller in-process (embedded broker, SQLite) fed real CBOR hellos and
//! reports over MQTT.
//!
//! One browser session checks, as an operator of one network would see it:
//! logging in through the form (a wrong password first), the index listing
//! the network, the network page listing the nodes as online, the topology
//! page's gateway, links (with each end's quality) and isolated node, every
//! link of that page opening (no login, no error), the status page (an open
//! alert the alert engine raised, the new nodes, no lost node) and its
//! links, refusal of another network's pages, logging out, and, at a phone's
//! 360x740 window, that no page scrolls sideways. The pages promise no
//! JavaScript: every page is checked to carry no script at all.
//!
//! Without /usr/bin/chromedriver the test says it skipped and passes, unless
//! `MESHTABLE_TEST_BROWSER=1` (CI), where that is a failure.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use meshtable::alerts::engine::evaluate_network;
use meshtable::auth::{self, Secret};
use meshtable::ingest::now_ms;
use meshtable::serve::Controller;
use meshtable_store::NodeStatus;
use serde_json::json;

#[path = "common/mesh.rs"]
mod mesh;
#[path = "common/publish.rs"]
mod publish;
#[path = "common/start.rs"]
mod start;

use mesh::{NORTH, SOUTH, start_quiet, two_networks};
use publish::publish_all;

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
/// Set to 1 where the browser must be there (CI).
const REQUIRE_VAR: &str = "MESHTABLE_TEST_BROWSER";

const NORTH_USER: &str = "north-op";

/// North's nodes: `(id, hostname)`. The long hostname is a real Freifunk
/// style name, the width a phone has to cope with.
const NORTH_NODES: [(&str, &str); 4] = [
    ("north-gw", "gw-north"),
    ("north-a", "ffhb-gemeindehaus-kirchweg-12-dach-nordost"),
    ("north-b", "b-north"),
    ("north-c", "c-lonely"),
];
const SOUTH_NODES: [(&str, &str); 2] = [("south-x", "secret-x"), ("south-y", "secret-y")];

/// chromedriver as a child process on a free loopback port, killed on drop.
struct Driver {
    child: Child,
    url: String,
}

impl Driver {
    /// Starts chromedriver and waits until it accepts connections.
    fn start() -> Result<Driver> {
        // A free port: bound by us, released for chromedriver.
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("cannot start {CHROMEDRIVER}"))?;
        let mut driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = driver.child.try_wait()? {
                bail!("chromedriver exited: {status}");
            }
            if Instant::now() > deadline {
                bail!("chromedriver does not listen on {addr}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(driver)
    }

    /// A new headless Chromium session, its window `width` x `height`.
    async fn session(&self, width: u32, height: u32) -> Result<Client> {
        let caps = serde_json::from_value(json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                // We run as root: no sandbox. /dev/shm may be small in containers.
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    format!("--window-size={width},{height}"),
                ],
            },
        }))?;
        Ok(ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&self.url)
            .await?)
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `network` has `nodes` nodes, all online, and `links` link
/// directions up.
async fn wait_ingested(c: &Controller, network: &str, nodes: usize, links: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = c.store().nodes(Some(network)).await?;
        let online = got
            .iter()
            .filter(|n| n.status == NodeStatus::Online)
            .count();
        let up = c
            .store()
            .topology(network, true)
            .await?
            .map_or(0, |g| g.links.iter().filter(|l| l.up).count());
        if online == nodes && got.len() == nodes && up == links {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "{network}: {online}/{} nodes online, {up} links up",
                got.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Evaluates north's alerts as the alert engine does: `north-b`, short of
/// memory, is pending at once and fires after the rule's tolerance window
/// (5 minutes, evaluated ahead of the clock); nothing else holds.
async fn raise_memory_alert(c: &Controller) -> Result<()> {
    let t = now_ms();
    let pending = evaluate_network(c.store(), NORTH, t).await?;
    ensure!(pending.is_empty(), "{pending:?}");
    let fired = evaluate_network(c.store(), NORTH, t + 6 * 60_000).await?;
    ensure!(
        fired.len() == 1 && fired[0].rule == "memory_low" && fired[0].subject == "north-b",
        "{fired:?}"
    );
    Ok(())
}

/// A user `name` with `password` and the operator role in `network`.
async fn add_operator(c: &Controller, name: &str, password: &str, network: &str) -> Result<()> {
    let (account, _) = auth::add_user(
        c.store(),
        name,
        Some(&Secret::new(password.to_owned())),
        false,
    )
    .await?;
    c.store()
        .grant_role(account.id, network, "operator", now_ms())
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_ui_in_a_browser() -> Result<()> {
    if !Path::new(CHROMEDRIVER).exists() {
        ensure!(
            std::env::var(REQUIRE_VAR).as_deref() != Ok("1"),
            "{CHROMEDRIVER} is missing and {REQUIRE_VAR}=1: install chromium and chromium-driver"
        );
        println!(
            "skipped: no {CHROMEDRIVER} (apt-get install chromium chromium-driver; \
             {REQUIRE_VAR}=1 makes this a failure)"
        );
        return Ok(());
    }
    let started = Instant::now();
    let dir = tempfile::tempdir()?;
    let controller = start_quiet(dir.path(), None).await?;
    let password = format!("pw-{:016x}", rand::random::<u64>());
    add_operator(&controller, NORTH_USER, &password, NORTH).await?;
    let mqtt: SocketAddr = controller
        .mqtt_url()
        .trim_start_matches("mqtt://")
        .parse()?;
    // north-b short of memory (5 %): the status page's open alert.
    let mesh = two_networks(now_ms(), NORTH_NODES, SOUTH_NODES, |t| {
        if t.node == NORTH_NODES[2].0 {
            t.mem_available = 50;
        }
    })?;
    publish_all(mqtt, mesh).await?;
    wait_ingested(&controller, NORTH, 4, 4).await?;
    wait_ingested(&controller, SOUTH, 2, 2).await?;
    raise_memory_alert(&controller).await?;

    let driver = Driver::start()?;
    let client = driver.session(1280, 900).await?;
    let ui = Ui {
        client: &client,
        base: controller.http_url().to_owned(),
    };
    // Close the browser whatever the checks found: killing chromedriver
    // alone would leave Chromium running.
    let checked = ui.check_all(&password).await;
    let closed = client.close().await;
    drop(driver);
    controller.shutdown().await;
    checked?;
    closed?;
    println!("browser checks passed in {:?}", started.elapsed());
    Ok(())
}

/// The browser session on the controller at `base`.
struct Ui<'a> {
    client: &'a Client,
    base: String,
}

impl Ui<'_> {
    async fn check_all(&self, password: &str) -> Result<()> {
        self.login(password).await?;
        self.network_page().await?;
        self.topology_page().await?;
        self.links_work("/networks/north/topology").await?;
        self.status_page().await?;
        self.links_work("/networks/north/status").await?;
        self.tenancy().await?;
        self.phone().await?;
        self.logout().await?;
        Ok(())
    }

    async fn goto(&self, path: &str) -> Result<()> {
        self.client.goto(&format!("{}{path}", self.base)).await?;
        self.no_script(path).await
    }

    /// Clicks what `locator` finds and waits for the page it leads to: a
    /// click that submits a form or follows a link may return before the
    /// browser has left the page it was on.
    async fn click_through(&self, locator: Locator<'_>) -> Result<()> {
        let old = self.client.find(Locator::Css("html")).await?;
        self.client.find(locator).await?.click().await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let gone = match old.tag_name().await {
                Err(e) if e.is_stale_element_reference() => true,
                Err(e) => return Err(e.into()),
                Ok(_) => false,
            };
            let loaded = gone
                && self
                    .client
                    .execute("return document.readyState;", Vec::new())
                    .await?
                    == json!("complete");
            if loaded {
                return Ok(());
            }
            ensure!(Instant::now() < deadline, "the click led nowhere");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The path of the page the browser shows.
    async fn path(&self) -> Result<String> {
        Ok(self.client.current_url().await?.path().to_owned())
    }

    /// The serialised DOM of the page the browser shows.
    async fn dom(&self) -> Result<String> {
        Ok(self.client.source().await?)
    }

    async fn text(&self, css: &str) -> Result<String> {
        Ok(self.client.find(Locator::Css(css)).await?.text().await?)
    }

    /// The rows of the table under heading `h2` (the first table of the
    /// page when `None`), each as its cells' rendered texts.
    async fn rows(&self, h2: Option<&str>) -> Result<Vec<Vec<String>>> {
        let table = match h2 {
            None => self.client.find(Locator::Css("table")).await?,
            Some(h) => {
                self.client
                    .find(Locator::XPath(&format!(
                        "//h2[normalize-space()='{h}']/following-sibling::div[1]//table"
                    )))
                    .await?
            }
        };
        let mut rows = Vec::new();
        for tr in table.find_all(Locator::Css("tbody tr")).await? {
            let mut cells = Vec::new();
            for td in tr.find_all(Locator::Css("td")).await? {
                cells.push(td.text().await?);
            }
            rows.push(cells);
        }
        Ok(rows)
    }

    /// The pages promise no JavaScript; a script would be one to check for
    /// errors. None, and no inline handler either.
    async fn no_script(&self, path: &str) -> Result<()> {
        let found = self
            .client
            .execute(
                "return document.scripts.length + \
                 Array.from(document.querySelectorAll('*')).filter(e => \
                   Array.from(e.attributes).some(a => a.name.startsWith('on'))).length;",
                Vec::new(),
            )
            .await?;
        ensure!(
            found == json!(0),
            "{path}: {found} scripts or inline handlers"
        );
        Ok(())
    }

    /// Types `user` and `password` into the login form and submits it.
    async fn submit_login(&self, user: &str, password: &str) -> Result<()> {
        self.goto("/login").await?;
        self.client
            .find(Locator::Css("input[name=user]"))
            .await?
            .send_keys(user)
            .await?;
        self.client
            .find(Locator::Css("input[name=password]"))
            .await?
            .send_keys(password)
            .await?;
        self.click_through(Locator::Css("form[action='/login'] button[type=submit]"))
            .await?;
        self.no_script("after login").await
    }

    /// 1. Nobody is sent to the login page; a wrong password shows an error
    ///    and no network; the right one lands on the index listing north.
    async fn login(&self, password: &str) -> Result<()> {
        self.goto("/").await?;
        ensure!(self.path().await? == "/login", "anonymous at /");

        self.submit_login(NORTH_USER, "not-the-password").await?;
        let error = self.text("p.offline").await?;
        ensure!(error == "Wrong user name or password.", "{error}");
        let dom = self.dom().await?;
        ensure!(
            !dom.contains("/networks/") && !dom.contains("Logged in as"),
            "{dom}"
        );

        self.submit_login(NORTH_USER, password).await?;
        ensure!(
            self.path().await? == "/",
            "after login: {}",
            self.path().await?
        );
        let rows = self.rows(None).await?;
        ensure!(
            rows == [vec!["north", "4", "4", "0"]],
            "index rows: {rows:?}"
        );
        let link = self
            .client
            .find(Locator::LinkText(NORTH))
            .await?
            .attr("href")
            .await?;
        ensure!(link.as_deref() == Some("/networks/north"), "{link:?}");
        let footer = self.text("form[action='/logout']").await?;
        ensure!(
            footer.contains(&format!("Logged in as {NORTH_USER}")),
            "{footer}"
        );
        ensure!(!self.dom().await?.contains(SOUTH), "index shows south");
        Ok(())
    }

    /// 2. Clicking north on the index shows its four nodes, each with its
    ///    hostname, its id under it, and online.
    async fn network_page(&self) -> Result<()> {
        self.goto("/").await?;
        self.click_through(Locator::LinkText(NORTH)).await?;
        ensure!(
            self.path().await? == "/networks/north",
            "{}",
            self.path().await?
        );
        let heading = self.text("h1").await?;
        ensure!(heading == "north (4 online, 0 offline)", "{heading}");
        let rows = self.client.find_all(Locator::Css("table tbody tr")).await?;
        ensure!(rows.len() == NORTH_NODES.len(), "{} rows", rows.len());
        // Down first, then by id: all online, so by id.
        let mut want = NORTH_NODES;
        want.sort_unstable();
        for (tr, (id, hostname)) in rows.iter().zip(want) {
            let link = tr.find(Locator::Css("td a")).await?;
            let small = tr.find(Locator::Css("td small")).await?;
            let status = tr.find(Locator::Css("td:nth-child(2)")).await?;
            ensure!(link.text().await? == hostname, "{:?}", link.text().await?);
            ensure!(
                link.attr("href").await?.as_deref()
                    == Some(format!("/api/v1/nodes/{id}?network=north").as_str()),
                "{id}: {:?}",
                link.attr("href").await?
            );
            ensure!(small.text().await? == id, "{:?}", small.text().await?);
            ensure!(small.is_displayed().await?, "{id} not displayed");
            ensure!(
                status.text().await? == "online",
                "{id}: {:?}",
                status.text().await?
            );
            ensure!(
                status.attr("class").await?.as_deref() == Some("online"),
                "{id}: {:?}",
                status.attr("class").await?
            );
        }
        Ok(())
    }

    /// 3. The topology page, reached by its link: counts, the gateway
    ///    serving one node, both links with each end's quality, the
    ///    isolated node.
    async fn topology_page(&self) -> Result<()> {
        self.click_through(Locator::LinkText("Topology")).await?;
        ensure!(
            self.path().await? == "/networks/north/topology",
            "{}",
            self.path().await?
        );
        let summary = self.text("h1 + p").await?;
        ensure!(
            summary.starts_with("4 nodes (4 online), 2 links up, 0 down."),
            "{summary}"
        );
        let [gw, a, b, c] = NORTH_NODES;
        let gateways = self.rows(Some("Gateways")).await?;
        ensure!(gateways.len() == 1, "{gateways:?}");
        ensure!(
            gateways[0][0].starts_with(gw.1) && gateways[0][1] == "online" && gateways[0][2] == "1",
            "{gateways:?}"
        );
        let links = self.rows(Some("Links")).await?;
        ensure!(links.len() == 2, "{links:?}");
        let find = |x: &str, y: &str| {
            links
                .iter()
                .find(|r| r.len() == 4 && r[..2].iter().any(|e| e.starts_with(x)))
                .filter(|r| r[..2].iter().any(|e| e.starts_with(y)))
                .with_context(|| format!("no link {x} - {y}: {links:?}"))
        };
        let wifi = find(gw.1, a.1)?;
        let end = |r: &[String], who: &str| {
            r[..2]
                .iter()
                .find(|e| e.starts_with(who))
                .cloned()
                .unwrap_or_default()
        };
        ensure!(end(wifi, gw.1).contains("TQ 230 · -58 dBm"), "{wifi:?}");
        ensure!(end(wifi, a.1).contains("TQ 200 · -63 dBm"), "{wifi:?}");
        ensure!(wifi[2].starts_with("up"), "{wifi:?}");
        ensure!(wifi[3] == "batman-adv", "{wifi:?}");
        let wired = find(b.1, a.1)?;
        ensure!(end(wired, a.1).contains("cost 256"), "{wired:?}");
        ensure!(end(wired, b.1).contains("cost 320"), "{wired:?}");
        ensure!(wired[3] == "babel", "{wired:?}");
        let isolated = self.rows(Some("Isolated")).await?;
        ensure!(
            isolated.len() == 1 && isolated[0][0].starts_with(c.1) && isolated[0][1] == "online",
            "{isolated:?}"
        );
        // Each node name links to the node.
        let href = self
            .client
            .find(Locator::LinkText(c.1))
            .await?
            .attr("href")
            .await?;
        ensure!(
            href.as_deref() == Some("/api/v1/nodes/north-c?network=north"),
            "{href:?}"
        );
        Ok(())
    }

    /// 3b. The status page, reached by its link from the topology page (the
    ///     network page links to it too): north-b's memory alert firing, all
    ///     four nodes new (each with its hostname, id and status), none
    ///     lost.
    async fn status_page(&self) -> Result<()> {
        self.goto("/networks/north").await?;
        let from_nodes = self.client.find(Locator::LinkText("Status")).await?;
        ensure!(
            from_nodes.attr("href").await?.as_deref() == Some("/networks/north/status"),
            "{:?}",
            from_nodes.attr("href").await?
        );
        self.goto("/networks/north/topology").await?;
        self.click_through(Locator::LinkText("Status")).await?;
        ensure!(
            self.path().await? == "/networks/north/status",
            "{}",
            self.path().await?
        );
        let heading = self.text("h1").await?;
        ensure!(heading == "north: status", "{heading}");
        let summary = self.text("h1 + p").await?;
        ensure!(
            summary.starts_with("1 firing, 0 acknowledged, 4 new, 0 lost."),
            "{summary}"
        );
        let alerts = self.rows(Some("Open alerts")).await?;
        ensure!(alerts.len() == 1 && alerts[0].len() == 4, "{alerts:?}");
        let [gw, a, b, c] = NORTH_NODES;
        let row = &alerts[0];
        ensure!(
            row[0].starts_with("memory_low")
                && row[0].contains(&format!("{}: 5.0 % memory available", b.1))
                && row[1] == b.0
                && row[2] == "firing"
                && (row[3] == "just now" || row[3].ends_with(" s ago")),
            "{row:?}"
        );
        let subject = self
            .client
            .find(Locator::LinkText(b.0))
            .await?
            .attr("href")
            .await?;
        ensure!(
            subject.as_deref() == Some("/api/v1/nodes/north-b?network=north"),
            "{subject:?}"
        );
        let new = self.rows(Some("New nodes")).await?;
        ensure!(new.len() == NORTH_NODES.len(), "{new:?}");
        for (id, hostname) in [gw, a, b, c] {
            ensure!(
                new.iter().any(|r| r.len() == 3
                    && r[0] == format!("{hostname}\n{id}")
                    && (r[1] == "just now" || r[1].ends_with(" s ago"))
                    && r[2] == "online"),
                "{id} not new: {new:?}"
            );
        }
        // After the heading: what the list holds, then the list or this.
        let lost = self
            .client
            .find(Locator::XPath(
                "//h2[normalize-space()='Recently lost']/following-sibling::p[2]",
            ))
            .await?
            .text()
            .await?;
        ensure!(lost == "No recently lost nodes.", "{lost}");
        let tables = self.client.find_all(Locator::Css("table")).await?;
        ensure!(tables.len() == 2, "{} tables", tables.len());
        Ok(())
    }

    /// Every link of the page at `path` (node links, the nodes page, the
    /// footer's API and metrics) opens, for this session, neither the login
    /// page nor an error page.
    async fn links_work(&self, path: &str) -> Result<()> {
        self.goto(path).await?;
        let mut hrefs = Vec::new();
        for a in self.client.find_all(Locator::Css("a[href]")).await? {
            if let Some(h) = a.attr("href").await? {
                hrefs.push(h);
            }
        }
        hrefs.sort();
        hrefs.dedup();
        ensure!(hrefs.len() >= 8, "{path}: links {hrefs:?}");
        for href in hrefs {
            ensure!(href.starts_with('/'), "{path}: link {href} leaves the site");
            self.client.goto(&format!("{}{href}", self.base)).await?;
            ensure!(
                self.path().await? != "/login",
                "{path}: {href} wants a login"
            );
            let body = self.text("body").await?;
            let error = body
                .split_whitespace()
                .next()
                .is_some_and(|w| w.len() == 3 && w.bytes().all(|b| b.is_ascii_digit()));
            ensure!(!body.is_empty() && !error, "{path}: {href}: {body}");
            ensure!(!body.contains("\"error\""), "{path}: {href}: {body}");
        }
        Ok(())
    }

    /// 6. North's operator at south's pages: refused, nothing of south.
    async fn tenancy(&self) -> Result<()> {
        for path in [
            "/networks/south",
            "/networks/south/topology",
            "/networks/south/status",
        ] {
            self.goto(path).await?;
            let heading = self.text("h1").await?;
            ensure!(heading == "404 Not Found", "{path}: {heading}");
            let dom = self.dom().await?;
            for (id, hostname) in SOUTH_NODES {
                ensure!(
                    !dom.contains(id) && !dom.contains(hostname),
                    "{path} shows {id}: {dom}"
                );
            }
        }
        Ok(())
    }

    /// 4. At a phone's 360x740 window no page scrolls sideways, and the
    ///    columns marked wide are hidden.
    async fn phone(&self) -> Result<()> {
        self.client.set_window_size(360, 740).await?;
        for path in [
            "/",
            "/networks/north",
            "/networks/north/topology",
            "/networks/north/status",
        ] {
            self.goto(path).await?;
            self.no_horizontal_overflow(path).await?;
        }
        // The network page's model column gives way on a phone.
        self.goto("/networks/north").await?;
        let model = self.client.find(Locator::Css("th.wide")).await?;
        ensure!(
            !model.is_displayed().await?,
            "model column shown on a phone"
        );
        Ok(())
    }

    async fn no_horizontal_overflow(&self, path: &str) -> Result<()> {
        let m = self
            .client
            .execute(
                "const d = document.documentElement; \
                 return [window.innerWidth, d.scrollWidth, d.clientWidth];",
                Vec::new(),
            )
            .await?;
        let m: Vec<u64> = serde_json::from_value(m)?;
        let [inner, scroll, client] = m[..] else {
            bail!("{path}: {m:?}")
        };
        // Else the window did not shrink and the check proves nothing.
        ensure!(inner <= 360, "{path}: viewport {inner} px wide");
        ensure!(
            scroll <= client,
            "{path}: the page is {scroll} px wide in a {client} px viewport"
        );
        Ok(())
    }

    /// The logout button ends the session: the login page (no overflow on
    /// the phone either), and / sends there again.
    async fn logout(&self) -> Result<()> {
        self.goto("/").await?;
        self.click_through(Locator::Css("form[action='/logout'] button"))
            .await?;
        ensure!(self.path().await? == "/login", "{}", self.path().await?);
        self.no_script("/login").await?;
        self.no_horizontal_overflow("/login").await?;
        self.goto("/").await?;
        ensure!(self.path().await? == "/login", "after logout at /");
        Ok(())
    }
}
