//! The whole controller in-process: embedded broker and SQLite in a temp
//! dir on free ports, fed real CBOR messages by a real MQTT client, checked
//! through its HTTP API and /metrics.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use meshtable::config::{Config, Layer};
use meshtable::ingest::now_ms;
use meshtable::serve::{Controller, Listeners};
use meshtable_proto::{Hello, Telemetry, encode_cbor, examples};
use serde_json::Value;

#[path = "common/publish.rs"]
mod publish;
#[path = "common/start.rs"]
mod start;

use publish::publish_all;
use start::start_controller;

const NET: &str = "testnet";
const NODE: &str = "node1";

struct Harness {
    controller: Controller,
    http: reqwest::Client,
    _dir: tempfile::TempDir,
}

impl Harness {
    async fn start() -> Result<Harness> {
        let dir = tempfile::tempdir()?;
        let layer = Layer {
            listen: Some("127.0.0.1:0".parse()?),
            mqtt_listen: Some("127.0.0.1:0".parse()?),
            data_dir: Some(dir.path().to_owned()),
            sweep_interval: Some(Duration::from_millis(200)),
            // The test publisher has no login.
            mqtt_allow_anonymous: Some(true),
            ..Layer::default()
        };
        let config = Config::resolve(&layer, None)?;
        let listeners = Listeners::bind(&config)?;
        let controller = tokio::time::timeout(
            Duration::from_secs(30),
            Controller::start(&config, listeners),
        )
        .await
        .context("controller did not get ready")??;
        Harness::with(controller, dir).await
    }

    /// A harness over a running controller whose HTTP client authenticates
    /// as the bootstrap superadmin with a fresh API token.
    async fn with(controller: Controller, dir: tempfile::TempDir) -> Result<Harness> {
        // Networks exist before their reports; the test publishes unsigned.
        match meshtable::enroll::add_network(controller.store(), NET, true).await {
            Ok(()) | Err(meshtable::api::ApiError::Conflict(_)) => {}
            Err(e) => bail!("cannot create network {NET}: {e}"),
        }
        // reqwest is built without a default TLS provider: name one, once.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let token = meshtable::auth::superadmin_token(controller.store(), "tests").await?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", token.expose()).parse()?,
        );
        Ok(Harness {
            controller,
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()?,
            _dir: dir,
        })
    }

    fn mqtt_addr(&self) -> Result<SocketAddr> {
        let url = self.controller.mqtt_url();
        Ok(url.trim_start_matches("mqtt://").parse()?)
    }

    async fn get(&self, path: &str) -> Result<(u16, String)> {
        let url = format!("{}{path}", self.controller.http_url());
        let r = self.http.get(&url).send().await?;
        Ok((r.status().as_u16(), r.text().await?))
    }

    async fn json(&self, path: &str) -> Result<Value> {
        let (status, body) = self.get(path).await?;
        ensure!(status == 200, "GET {path}: {status} {body}");
        Ok(serde_json::from_str(&body)?)
    }

    async fn metric(&self, series: &str) -> Result<f64> {
        let (_, text) = self.get("/metrics").await?;
        metric_value(&text, series).with_context(|| format!("no series {series} in:\n{text}"))
    }

    /// Waits until `series` has value `want`.
    async fn wait_metric(&self, series: &str, want: f64) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.metric(series).await?;
            if got == want {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("{series} is {got}, want {want}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn metric_value(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn topic(node: &str, kind: &str) -> String {
    format!("meshtable/v1/{NET}/{node}/{kind}")
}

fn hello() -> Hello {
    Hello {
        hostname: "<script>router one</script>".to_owned(),
        ..examples::hello_v1()
    }
}

/// A report `seq` of `node`, 10 s of uptime and traffic after the previous one.
fn telemetry(node: &str, seq: u64, now: i64) -> Telemetry {
    let mut t = examples::telemetry_v1();
    t.node = node.to_owned();
    t.seq = seq;
    t.boot_id = "boot-1".to_owned();
    t.time_ms = u64::try_from(now).unwrap() - (3 - seq) * 10_000;
    t.uptime_ms = 1_000_000 + seq * 10_000;
    for (i, iface) in t.interfaces.iter_mut().enumerate() {
        let k = i as u64 + 1;
        iface.rx_bytes = 1_000_000 * k + seq * 125_000 * k; // 100 kbit/s * k
        iface.tx_bytes = 500_000 + seq * 12_500;
    }
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingests_reports_and_serves_them() -> Result<()> {
    let h = Harness::start().await?;
    let now = now_ms();
    let t1 = encode_cbor(&telemetry(NODE, 1, now));
    let t2 = encode_cbor(&telemetry(NODE, 2, now));
    let mut v9 = telemetry(NODE, 3, now);
    v9.v = 9;
    let wrong_node = telemetry("node2", 3, now);
    let messages = vec![
        (topic(NODE, "hello"), encode_cbor(&hello()), true),
        (
            topic(NODE, "state"),
            encode_cbor(&examples::state_online_v1()),
            true,
        ),
        (topic(NODE, "telemetry"), t1.clone(), false),
        // Bad input in between must not disturb what follows.
        (topic(NODE, "telemetry"), b"garbage\xff".to_vec(), false),
        (topic(NODE, "telemetry"), t1[..t1.len() - 7].to_vec(), false),
        (topic(NODE, "telemetry"), vec![0xa1; 70 * 1024], false),
        (topic(NODE, "telemetry"), encode_cbor(&v9), false),
        (topic(NODE, "telemetry"), encode_cbor(&wrong_node), false),
        (topic(NODE, "telemetry"), Vec::new(), false),
        (
            format!("meshtable/v1/{NET}/{NODE}/bogus"),
            t1.clone(),
            false,
        ),
        ("meshtable/v1/Bad_Net/node1/telemetry".to_owned(), t1, false),
        (topic(NODE, "telemetry"), t2.clone(), false),
        // Delivered twice: stored once.
        (topic(NODE, "telemetry"), t2, false),
    ];
    publish_all(h.mqtt_addr()?, messages).await?;

    // Every message is accounted for.
    h.wait_metric("meshtable_ingest_duplicates_total", 1.0)
        .await?;
    let expect = [
        (r#"meshtable_ingest_messages_total{kind="hello"}"#, 1.0),
        (r#"meshtable_ingest_messages_total{kind="state"}"#, 1.0),
        (r#"meshtable_ingest_messages_total{kind="telemetry"}"#, 2.0),
        (
            r#"meshtable_ingest_rejected_total{reason="malformed"}"#,
            1.0,
        ),
        (
            r#"meshtable_ingest_rejected_total{reason="truncated"}"#,
            1.0,
        ),
        (
            r#"meshtable_ingest_rejected_total{reason="oversized"}"#,
            1.0,
        ),
        (
            r#"meshtable_ingest_rejected_total{reason="unknown_version"}"#,
            1.0,
        ),
        (
            r#"meshtable_ingest_rejected_total{reason="node_mismatch"}"#,
            1.0,
        ),
        (r#"meshtable_ingest_rejected_total{reason="empty"}"#, 1.0),
        (r#"meshtable_ingest_rejected_total{reason="topic"}"#, 2.0),
        (r#"meshtable_ingest_rejected_total{reason="invalid"}"#, 0.0),
        ("meshtable_ingest_store_errors_total", 0.0),
        ("meshtable_ingest_queue_dropped_total", 0.0),
        (r#"meshtable_nodes{network="testnet",status="online"}"#, 1.0),
        (
            r#"meshtable_nodes{network="testnet",status="offline"}"#,
            0.0,
        ),
        (
            r#"meshtable_agent_reports_dropped_total{network="testnet"}"#,
            0.0,
        ),
    ];
    for (series, want) in expect {
        assert_eq!(h.metric(series).await?, want, "{series}");
    }

    // The API shows the node online, with its hello and latest sample.
    let networks = h.json("/api/v1/networks").await?;
    assert_eq!(
        networks,
        serde_json::json!({"networks": [{"id": NET, "nodes": 1, "online": 1, "offline": 0}]})
    );
    let nodes = h.json("/api/v1/nodes?network=testnet").await?;
    assert_eq!(nodes["nodes"].as_array().map(Vec::len), Some(1));
    let d = h.json(&format!("/api/v1/nodes/{NODE}")).await?;
    assert_eq!(d["network"], NET);
    assert_eq!(d["status"], "online");
    assert_eq!(d["hostname"], "<script>router one</script>");
    assert_eq!(d["hello"]["interval_ms"], 60_000);
    let latest = &d["latest"];
    assert_eq!(latest["seq"], 2);
    assert_eq!(latest["clock_ok"], true);
    let eth0 = latest["interfaces"]
        .as_array()
        .and_then(|a| a.iter().find(|i| i["name"] == "eth0"))
        .context("no eth0 in the latest sample")?;
    assert_eq!(eth0["rx_bytes"], 1_250_000);
    let rx_bps = eth0["rx_bps"].as_f64().context("rx_bps is not a number")?;
    assert!((rx_bps - 100_000.0).abs() < 1e-6, "rx_bps {rx_bps}");

    // The duplicate was stored once: two samples in the series.
    let s = h
        .json(&format!("/api/v1/nodes/{NODE}/series?metric=load1"))
        .await?;
    assert_eq!(s["metric"], "load1");
    assert_eq!(s["resolution"], "raw", "an hour comes from raw samples");
    assert_eq!(s["interface"], Value::Null);
    assert_eq!(s["points"].as_array().map(Vec::len), Some(2), "{s}");
    let s = h
        .json(&format!(
            "/api/v1/nodes/{NODE}/series?metric=rx_bps&interface=eth0&network={NET}"
        ))
        .await?;
    assert_eq!(s["interface"], "eth0");
    assert_eq!(s["points"].as_array().map(Vec::len), Some(1), "{s}");

    // Errors are JSON with the right status.
    let errors = [
        ("/api/v1/nodes/nobody", 404),
        ("/api/v1/nodes/node1?network=elsewhere", 404),
        ("/api/v1/nodes/NODE1", 400),
        ("/api/v1/nodes?network=Bad!", 400),
        ("/api/v1/nodes?sort=asc", 400),
        ("/api/v1/nodes/node1/series", 400),
        ("/api/v1/nodes/node1/series?metric=rx_bps", 400),
        ("/api/v1/nodes/node1/series?metric=load1&from=soon", 400),
        ("/api/v1/nope", 404),
    ];
    for (path, status) in errors {
        let (got, body) = h.get(path).await?;
        assert_eq!(got, status, "{path}: {body}");
        let v: Value = serde_json::from_str(&body).with_context(|| format!("{path}: {body}"))?;
        assert!(v["error"].is_string(), "{path}: {body}");
    }

    let (status, body) = h.get("/healthz").await?;
    assert_eq!((status, body.trim()), (200, "ok"));

    // The front page lists the network with its counts and a link, and no
    // node rows.
    let (status, html) = h.get("/").await?;
    assert_eq!(status, 200);
    assert!(
        html.contains(
            r#"<a href="/networks/testnet">testnet</a></td><td>1</td><td>1</td><td>0</td>"#
        ),
        "{html}"
    );
    assert!(!html.contains(NODE), "{html}");
    assert!(!html.contains("router one"), "{html}");

    // The network page lists the node, hostname escaped and linked to its JSON.
    let (status, html) = h.get(&format!("/networks/{NET}")).await?;
    assert_eq!(status, 200);
    assert!(
        html.contains(&format!(
            r#"<a href="/api/v1/nodes/{NODE}?network={NET}">&lt;script&gt;router one&lt;/script&gt;</a><small>{NODE}</small>"#
        )),
        "{html}"
    );
    assert!(!html.contains("<script"), "{html}");

    // Bad and unknown networks are small HTML pages.
    for (path, status) in [
        ("/networks/Bad!", 400),
        ("/networks/TESTNET", 400),
        ("/networks/nowhere", 404),
    ] {
        let (got, html) = h.get(path).await?;
        assert_eq!(got, status, "{path}: {html}");
        assert!(html.starts_with("<!DOCTYPE html>"), "{path}: {html}");
        assert!(html.contains(&format!("<h1>{status} ")), "{path}: {html}");
        assert!(html.len() < 2_000, "{path}: {html}");
    }

    // The last will marks it offline.
    publish_all(
        h.mqtt_addr()?,
        vec![(
            topic(NODE, "state"),
            encode_cbor(&examples::state_offline_v1()),
            true,
        )],
    )
    .await?;
    h.wait_metric(
        r#"meshtable_nodes{network="testnet",status="offline"}"#,
        1.0,
    )
    .await?;
    let d = h.json(&format!("/api/v1/nodes/{NODE}")).await?;
    assert_eq!(d["status"], "offline");

    // A second node comes online: the offline one is listed first, and the
    // front page highlights the offline count.
    publish_all(
        h.mqtt_addr()?,
        vec![(topic("node2", "hello"), encode_cbor(&hello()), true)],
    )
    .await?;
    h.wait_metric(r#"meshtable_nodes{network="testnet",status="online"}"#, 1.0)
        .await?;
    let (status, html) = h.get(&format!("/networks/{NET}")).await?;
    assert_eq!(status, 200);
    let node1 = html.find("<small>node1</small>").context("no node1")?;
    let node2 = html.find("<small>node2</small>").context("no node2")?;
    assert!(node1 < node2, "{html}");
    let (_, html) = h.get("/").await?;
    assert!(
        html.contains(r#"<td>2</td><td>1</td><td class="offline">1</td>"#),
        "{html}"
    );

    h.controller.shutdown().await;
    Ok(())
}

/// Finds promtool on PATH.
fn promtool() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join("promtool"))
        .find(|p| p.is_file())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool() -> Result<()> {
    let Some(promtool) = promtool() else {
        if std::env::var_os("CI").is_some() {
            bail!("promtool is missing (Debian package prometheus); CI must have it");
        }
        println!("skipped: promtool not found (apt-get install prometheus)");
        return Ok(());
    };
    let h = Harness::start().await?;
    publish_all(
        h.mqtt_addr()?,
        vec![
            (topic(NODE, "hello"), encode_cbor(&hello()), true),
            (topic(NODE, "telemetry"), b"junk".to_vec(), false),
        ],
    )
    .await?;
    h.wait_metric(
        r#"meshtable_ingest_rejected_total{reason="malformed"}"#,
        1.0,
    )
    .await?;
    let (_, text) = h.get("/metrics").await?;
    assert!(text.contains("meshtable_nodes{"), "{text}");
    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    {
        use std::io::Write;
        let mut stdin = child.stdin.take().context("no stdin")?;
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "promtool check metrics:\n{report}\n{text}"
    );
    assert!(report.trim().is_empty(), "promtool lints:\n{report}");
    h.controller.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn busy_ports_name_their_flag() -> Result<()> {
    let taken = TcpListener::bind("127.0.0.1:0")?;
    let addr = taken.local_addr()?;
    let dir = tempfile::tempdir()?;
    let cases = [
        (
            Layer {
                listen: Some(addr),
                mqtt_listen: Some("127.0.0.1:0".parse()?),
                data_dir: Some(dir.path().to_owned()),
                ..Layer::default()
            },
            format!("--listen {addr} is already in use"),
        ),
        (
            Layer {
                listen: Some("127.0.0.1:0".parse()?),
                mqtt_listen: Some(addr),
                data_dir: Some(dir.path().to_owned()),
                ..Layer::default()
            },
            format!("--mqtt-listen {addr} is already in use"),
        ),
    ];
    for (layer, want) in cases {
        let config = Config::resolve(&layer, None)?;
        let err = Listeners::bind(&config).err().context("bind succeeded")?;
        assert_eq!(err.to_string(), want);
    }
    Ok(())
}

/// A TCP proxy in front of the broker whose connections can be cut.
struct Proxy {
    addr: SocketAddr,
    open: tokio::sync::watch::Sender<bool>,
    conns: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Proxy {
    async fn start(upstream: SocketAddr) -> Result<Proxy> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (open, open_rx) = tokio::sync::watch::channel(true);
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let list = conns.clone();
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*open_rx.borrow() {
                    continue; // dropped: connection closed at once
                }
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                list.lock().unwrap().push(task.abort_handle());
            }
        });
        Ok(Proxy { addr, open, conns })
    }

    /// Drops every connection and refuses new ones until [`Proxy::restore`].
    fn cut(&self) {
        self.open.send_replace(false);
        for c in self.conns.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.open.send_replace(true);
    }
}

/// The ingest connection breaks; reports published meanwhile wait in the
/// broker's session for the controller and arrive after it reconnects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_and_gets_what_it_missed() -> Result<()> {
    let broker_addr = meshtable::broker::reserve("127.0.0.1:0".parse()?)?;
    let _broker = meshtable::broker::EmbeddedBroker::start(broker_addr)?;
    let proxy = Proxy::start(broker_addr).await?;
    let dir = tempfile::tempdir()?;
    let layer = Layer {
        listen: Some("127.0.0.1:0".parse()?),
        mqtt_url: Some(format!("mqtt://{}", proxy.addr)),
        mqtt_share_group: Some(String::new()),
        data_dir: Some(dir.path().to_owned()),
        ..Layer::default()
    };
    let controller = start_controller(&layer).await?;
    let h = Harness::with(controller, dir).await?;
    let now = now_ms();
    let series = r#"meshtable_ingest_messages_total{kind="telemetry"}"#;

    publish_all(
        broker_addr,
        vec![(
            topic(NODE, "telemetry"),
            encode_cbor(&telemetry(NODE, 1, now)),
            false,
        )],
    )
    .await?;
    h.wait_metric(series, 1.0).await?;

    proxy.cut();
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish_all(
        broker_addr,
        vec![(
            topic(NODE, "telemetry"),
            encode_cbor(&telemetry(NODE, 2, now)),
            false,
        )],
    )
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(h.metric(series).await?, 1.0, "stored while cut off");
    proxy.restore();
    h.wait_metric(series, 2.0).await?;

    // And it goes on as before.
    publish_all(
        broker_addr,
        vec![(
            topic(NODE, "telemetry"),
            encode_cbor(&telemetry(NODE, 3, now)),
            false,
        )],
    )
    .await?;
    h.wait_metric(series, 3.0).await?;
    let d = h.json(&format!("/api/v1/nodes/{NODE}")).await?;
    assert_eq!(d["latest"]["seq"], 3);
    assert_eq!(h.metric("meshtable_ingest_duplicates_total").await?, 0.0);
    h.controller.shutdown().await;
    Ok(())
}

/// Starts a controller on an external broker (`broker`), with its database
/// and client id fixed so that a second one can take over from the first.
async fn controller_on(broker: SocketAddr, dir: &std::path::Path) -> Result<Controller> {
    let layer = Layer {
        listen: Some("127.0.0.1:0".parse()?),
        mqtt_url: Some(format!("mqtt://{broker}")),
        mqtt_share_group: Some(String::new()),
        mqtt_client_id: Some("takeover-test".to_owned()),
        data_dir: Some(dir.to_owned()),
        ..Layer::default()
    };
    start_controller(&layer).await
}

/// When the database fails, a report is counted as a store error, retried,
/// and not acknowledged: the next controller on the same session gets it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_errors_lose_no_report() -> Result<()> {
    let broker_addr = meshtable::broker::reserve("127.0.0.1:0".parse()?)?;
    let _broker = meshtable::broker::EmbeddedBroker::start(broker_addr)?;
    let dir = tempfile::tempdir()?;
    let now = now_ms();
    let telemetry_series = r#"meshtable_ingest_messages_total{kind="telemetry"}"#;

    let first = Harness::with(
        controller_on(broker_addr, dir.path()).await?,
        tempfile::tempdir()?,
    )
    .await?;
    let report = |seq| {
        (
            topic(NODE, "telemetry"),
            encode_cbor(&telemetry(NODE, seq, now)),
            false,
        )
    };
    publish_all(broker_addr, vec![report(1)]).await?;
    first.wait_metric(telemetry_series, 1.0).await?;

    // The database goes away under the running controller.
    first.controller.store().clone().close().await?;
    publish_all(broker_addr, vec![report(2)]).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    while first.metric("meshtable_ingest_store_errors_total").await? < 2.0 {
        ensure!(Instant::now() < deadline, "no store errors counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(first.metric(telemetry_series).await?, 1.0);
    first.controller.shutdown().await;

    // A controller with a working database takes over the session.
    let second = Harness::with(
        controller_on(broker_addr, dir.path()).await?,
        tempfile::tempdir()?,
    )
    .await?;
    second.wait_metric(telemetry_series, 1.0).await?;
    let d = second.json(&format!("/api/v1/nodes/{NODE}")).await?;
    assert_eq!(d["latest"]["seq"], 2);
    let s = second
        .json(&format!("/api/v1/nodes/{NODE}/series?metric=load1"))
        .await?;
    assert_eq!(s["points"].as_array().map(Vec::len), Some(2), "{s}");
    second.controller.shutdown().await;
    Ok(())
}

/// Every stored report is acknowledged to the broker, in order (the
/// embedded broker stops delivering at a missing ack): a second controller
/// taking over the session after a clean shutdown is given none of them
/// again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acked_reports_are_not_delivered_again() -> Result<()> {
    const REPORTS: u64 = 300;
    let broker_addr = meshtable::broker::reserve("127.0.0.1:0".parse()?)?;
    let _broker = meshtable::broker::EmbeddedBroker::start(broker_addr)?;
    let dir = tempfile::tempdir()?;
    let now = now_ms();
    let telemetry_series = r#"meshtable_ingest_messages_total{kind="telemetry"}"#;
    // Reports 10 s apart, the last one now.
    let reports = |seqs: std::ops::Range<u64>| {
        seqs.map(|seq| {
            let mut t = telemetry(NODE, 1, now);
            t.seq = seq;
            t.time_ms = u64::try_from(now).unwrap() - (REPORTS + 1 - seq) * 10_000;
            t.uptime_ms = 1_000_000 + seq * 10_000;
            (topic(NODE, "telemetry"), encode_cbor(&t), false)
        })
        .collect::<Vec<_>>()
    };

    let first = Harness::with(
        controller_on(broker_addr, dir.path()).await?,
        tempfile::tempdir()?,
    )
    .await?;
    publish_all(broker_addr, reports(1..REPORTS + 1)).await?;
    first.wait_metric(telemetry_series, REPORTS as f64).await?;
    first.controller.shutdown().await;

    let second = Harness::with(
        controller_on(broker_addr, dir.path()).await?,
        tempfile::tempdir()?,
    )
    .await?;
    // Published after the takeover, so it arrives after anything the
    // broker still held for the session.
    publish_all(broker_addr, reports(REPORTS + 1..REPORTS + 2)).await?;
    second.wait_metric(telemetry_series, 1.0).await?;
    assert_eq!(
        second.metric("meshtable_ingest_duplicates_total").await?,
        0.0,
        "reports the first controller stored came again"
    );
    assert_eq!(second.controller.store().sample_count().await?, REPORTS + 1);
    second.controller.shutdown().await;
    Ok(())
}
