//! Alerts: the rules as a table of cases (pure), then the whole controller
//! in-process (real SQLite, and PostgreSQL when `MESHTABLE_TEST_DATABASE_URL`
//! is set): tolerance windows, backfill, the firing → acknowledged →
//! resolved lifecycle over the API, idempotent evaluation, and digest
//! delivery to a real HTTP receiver and a real SMTP server (aiosmtpd).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use meshtable::alerts::engine;
use meshtable::alerts::rules::{self, Rules};
use meshtable::config::{Config, Layer};
use meshtable::serve::{Controller, Listeners};
use meshtable_proto::{Gateway, InterfaceCounters, Telemetry};
use meshtable_store::alerts::{NodeFacts, SampleFacts};
use meshtable_store::{Incoming, NodeStatus, Store};
use serde_json::{Value, json};

#[path = "../../crates/store/tests/common/pg_url.rs"]
mod pg_url;

const MIN: i64 = 60_000;
const NOW: i64 = 1_900_000_000_000;

fn node(id: &str) -> NodeFacts {
    NodeFacts {
        node: id.to_owned(),
        hostname: None,
        site: None,
        status: NodeStatus::Online,
        last_seen_ms: NOW - MIN,
        flapping: false,
        in_maintenance: false,
        latest: Some(SampleFacts {
            t_ms: NOW - MIN,
            mem_total: 1000,
            mem_available: 500,
            rootfs_size: 1000,
            rootfs_free: 500,
            load5: 0.5,
        }),
        boots_last_hour: 1,
        uplink: None,
        uplink_rates: Vec::new(),
    }
}

fn offline(id: &str, minutes: i64) -> NodeFacts {
    NodeFacts {
        status: NodeStatus::Offline,
        last_seen_ms: NOW - minutes * MIN,
        latest: None,
        ..node(id)
    }
}

fn in_site(mut n: NodeFacts, site: &str) -> NodeFacts {
    n.site = Some(site.to_owned());
    n
}

fn with_sample(mut n: NodeFacts, f: impl FnOnce(&mut SampleFacts)) -> NodeFacts {
    if let Some(s) = n.latest.as_mut() {
        f(s);
    }
    n
}

fn uplink(mut n: NodeFacts, rates: &[(f64, f64)]) -> NodeFacts {
    n.uplink = Some("wan".to_owned());
    n.uplink_rates = rates.to_vec();
    n
}

/// Each rule, its threshold on both sides, and the noise controls.
#[test]
fn rules_table() {
    let capped = Rules {
        uplink_capacity_bps: Some(100e6),
        ..Rules::default()
    };
    let d = Rules::default();
    type Case = (
        &'static str,
        Vec<NodeFacts>,
        Rules,
        Vec<(&'static str, &'static str)>,
    );
    let cases: Vec<Case> = vec![
        ("healthy", vec![node("a")], d.clone(), vec![]),
        (
            "offline 11 min",
            vec![offline("a", 11)],
            d.clone(),
            vec![(rules::NODE_OFFLINE, "a")],
        ),
        ("offline 9 min", vec![offline("a", 9)], d.clone(), vec![]),
        (
            "offline after a custom 30 min",
            vec![offline("a", 20)],
            Rules {
                offline_minutes: 30,
                ..d.clone()
            },
            vec![],
        ),
        (
            "flapping never fires offline",
            vec![NodeFacts {
                flapping: true,
                ..offline("a", 60)
            }],
            d.clone(),
            vec![],
        ),
        (
            "maintenance silences",
            vec![NodeFacts {
                in_maintenance: true,
                ..offline("a", 60)
            }],
            d.clone(),
            vec![],
        ),
        (
            "most of a site down: one site alert",
            vec![
                in_site(offline("a", 30), "school"),
                in_site(offline("b", 30), "school"),
                in_site(node("c"), "school"),
                offline("d", 30),
            ],
            d.clone(),
            vec![(rules::NODE_OFFLINE, "d"), (rules::SITE_DOWN, "school")],
        ),
        (
            "a third of a site down: node alerts",
            vec![
                in_site(offline("a", 30), "school"),
                in_site(node("b"), "school"),
                in_site(node("c"), "school"),
            ],
            d.clone(),
            vec![(rules::NODE_OFFLINE, "a")],
        ),
        (
            "a site in maintenance does not count",
            vec![
                NodeFacts {
                    in_maintenance: true,
                    ..in_site(offline("a", 30), "school")
                },
                NodeFacts {
                    in_maintenance: true,
                    ..in_site(offline("b", 30), "school")
                },
                in_site(node("c"), "school"),
            ],
            d.clone(),
            vec![],
        ),
        (
            "memory 5 %",
            vec![with_sample(node("a"), |s| s.mem_available = 50)],
            d.clone(),
            vec![(rules::MEMORY_LOW, "a")],
        ),
        (
            "memory 10 % is not below 10 %",
            vec![with_sample(node("a"), |s| s.mem_available = 100)],
            d.clone(),
            vec![],
        ),
        (
            "disk 2 %",
            vec![with_sample(node("a"), |s| s.rootfs_free = 20)],
            d.clone(),
            vec![(rules::DISK_LOW, "a")],
        ),
        (
            "load 6",
            vec![with_sample(node("a"), |s| s.load5 = 6.0)],
            d.clone(),
            vec![(rules::LOAD_HIGH, "a")],
        ),
        (
            "a stale sample fires nothing",
            vec![with_sample(node("a"), |s| {
                s.load5 = 6.0;
                s.t_ms = NOW - 30 * MIN;
            })],
            d.clone(),
            vec![],
        ),
        (
            "3 boots in an hour",
            vec![NodeFacts {
                boots_last_hour: 3,
                ..node("a")
            }],
            d.clone(),
            vec![(rules::REBOOTS, "a")],
        ),
        (
            "2 boots in an hour",
            vec![NodeFacts {
                boots_last_hour: 2,
                ..node("a")
            }],
            d.clone(),
            vec![],
        ),
        (
            "uplink above 80 % for 3 samples",
            vec![uplink(node("a"), &[(90e6, 1e6), (1e6, 85e6), (81e6, 0.0)])],
            capped.clone(),
            vec![(rules::UPLINK_SATURATED, "a/wan")],
        ),
        (
            "uplink above 80 % for 2 of 3 samples",
            vec![uplink(node("a"), &[(90e6, 1e6), (1e6, 85e6), (70e6, 0.0)])],
            capped.clone(),
            vec![],
        ),
        (
            "uplink with only 2 samples",
            vec![uplink(node("a"), &[(90e6, 1e6), (1e6, 85e6)])],
            capped.clone(),
            vec![],
        ),
        (
            "no capacity configured",
            vec![uplink(node("a"), &[(90e6, 1e6), (1e6, 85e6), (81e6, 0.0)])],
            d.clone(),
            vec![],
        ),
    ];
    let mut failures = String::new();
    for (name, facts, rules, want) in &cases {
        let got: Vec<(String, String)> = rules::evaluate(facts, rules, NOW)
            .into_iter()
            .map(|c| (c.rule, c.subject))
            .collect();
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(r, s)| ((*r).to_owned(), (*s).to_owned()))
            .collect();
        if got != want {
            let _ = writeln!(failures, "{name}: got {got:?}, want {want:?}");
        }
    }
    assert!(failures.is_empty(), "{failures}");
}

/// Bad rule settings are refused with the key named.
#[test]
fn rules_check() {
    let bad = [
        (
            "memory_min_percent",
            Rules {
                memory_min_percent: 120.0,
                ..Rules::default()
            },
        ),
        (
            "load5_max",
            Rules {
                load5_max: f64::NAN,
                ..Rules::default()
            },
        ),
        (
            "uplink_capacity_bps",
            Rules {
                uplink_capacity_bps: Some(0.0),
                ..Rules::default()
            },
        ),
        (
            "offline_minutes",
            Rules {
                offline_minutes: 0,
                ..Rules::default()
            },
        ),
    ];
    for (key, r) in bad {
        let e = r.check().expect_err(key);
        assert!(e.contains(key), "{key}: {e}");
    }
    assert_eq!(Rules::default().check(), Ok(()));
}

struct Db {
    url: String,
    pg: Option<(String, String)>,
    _dir: tempfile::TempDir,
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some((admin, name)) = &self.pg {
            let _ = Command::new("psql")
                .args([
                    admin.as_str(),
                    "-q",
                    "-c",
                    &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"),
                ])
                .output();
        }
    }
}

fn databases() -> Result<Vec<Db>> {
    let dir = tempfile::tempdir()?;
    let mut out = vec![Db {
        url: format!("sqlite://{}/meshtable.db", dir.path().display()),
        pg: None,
        _dir: dir,
    }];
    match std::env::var("MESHTABLE_TEST_DATABASE_URL") {
        Ok(admin) if !admin.is_empty() => {
            let name = format!("meshtable_alerts_{:016x}", rand::random::<u64>());
            let o = Command::new("psql")
                .args([
                    admin.as_str(),
                    "-v",
                    "ON_ERROR_STOP=1",
                    "-q",
                    "-c",
                    &format!("CREATE DATABASE {name}"),
                ])
                .output()
                .context("run psql")?;
            ensure!(
                o.status.success(),
                "create database: {}",
                String::from_utf8_lossy(&o.stderr)
            );
            out.push(Db {
                url: pg_url::with_database(&admin, &name),
                pg: Some((admin.clone(), name)),
                _dir: tempfile::tempdir()?,
            });
        }
        _ => eprintln!("alerts: MESHTABLE_TEST_DATABASE_URL not set, PostgreSQL variant skipped"),
    }
    Ok(out)
}

struct Harness {
    controller: Controller,
    http: reqwest::Client,
}

const NET: &str = "village";

impl Harness {
    async fn start(database_url: &str) -> Result<Harness> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        let layer = Layer {
            listen: Some("127.0.0.1:0".parse()?),
            mqtt_listen: Some("127.0.0.1:0".parse()?),
            data_dir: Some(dir.path().to_owned()),
            database_url: Some(database_url.to_owned()),
            // The background evaluation first runs an hour after the start,
            // so not during the test: the test evaluates at chosen times.
            sweep_interval: Some(Duration::from_secs(3600)),
            ..Layer::default()
        };
        let config = Config::resolve(&layer, None)?;
        let controller = tokio::time::timeout(
            Duration::from_secs(30),
            Controller::start(&config, Listeners::bind(&config)?),
        )
        .await
        .context("controller did not get ready")??;
        meshtable::enroll::add_network(controller.store(), NET, true)
            .await
            .map_err(|e| anyhow::anyhow!("add network: {e}"))?;
        let token = meshtable::auth::superadmin_token(controller.store(), "alerts").await?;
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {}", token.expose()).parse()?,
        );
        std::mem::forget(dir);
        Ok(Harness {
            controller,
            http: reqwest::Client::builder()
                .default_headers(headers)
                .build()?,
        })
    }

    fn store(&self) -> &Store {
        self.controller.store()
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<(u16, Value)> {
        let mut r = self
            .http
            .request(method, format!("{}{path}", self.controller.http_url()));
        if let Some(b) = body {
            r = r.json(&b);
        }
        let r = r.send().await?;
        let status = r.status().as_u16();
        let text = r.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    /// `(id, rule, subject, state)` of the network's alerts (`?state=all`).
    async fn alerts(&self) -> Result<Vec<(i64, String, String, String)>> {
        let (status, v) = self
            .send(
                reqwest::Method::GET,
                &format!("/api/v1/networks/{NET}/alerts?state=all"),
                None,
            )
            .await?;
        ensure!(status == 200, "list alerts: {status} {v}");
        let mut out: Vec<_> = v["alerts"]
            .as_array()
            .context("alerts")?
            .iter()
            .map(|a| {
                (
                    a["id"].as_i64().unwrap_or(0),
                    a["rule"].as_str().unwrap_or("").to_owned(),
                    a["subject"].as_str().unwrap_or("").to_owned(),
                    a["state"].as_str().unwrap_or("").to_owned(),
                )
            })
            .collect();
        out.sort_by(|a, b| (&a.1, &a.2).cmp(&(&b.1, &b.2)));
        Ok(out)
    }

    fn state_of(
        list: &[(i64, String, String, String)],
        rule: &str,
        subject: &str,
    ) -> Option<(i64, String)> {
        list.iter()
            .rev()
            .find(|a| a.1 == rule && a.2 == subject)
            .map(|a| (a.0, a.3.clone()))
    }
}

/// One live (or backfilled) report of `node` at `t`, received at `received`.
async fn report(
    store: &Store,
    node: &str,
    boot: &str,
    seq: u64,
    t: i64,
    received: i64,
    mem_available: u64,
) -> Result<()> {
    let tm = Telemetry {
        node: node.to_owned(),
        boot_id: boot.to_owned(),
        seq,
        time_ms: u64::try_from(t)?,
        uptime_ms: 100_000 + seq * 60_000,
        mem_total: 1000,
        mem_available,
        rootfs_size: 1000,
        rootfs_free: 500,
        backfill: received - t > 60_000,
        ..Telemetry::default()
    };
    let out = store
        .record_batch(&[Incoming {
            network: NET,
            node,
            content: meshtable_store::Content::Telemetry(&tm),
            received_ms: received,
        }])
        .await?;
    ensure!(out.len() == 1, "one outcome: {out:?}");
    Ok(())
}

/// Tolerance window, backfill, offline, lifecycle over the API, idempotence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lifecycle() -> Result<()> {
    for db in databases()? {
        lifecycle_on(&db.url)
            .await
            .with_context(|| format!("on {}", db.url.split(':').next().unwrap_or("")))?;
    }
    Ok(())
}

async fn lifecycle_on(url: &str) -> Result<()> {
    let h = Harness::start(url).await?;
    let s = h.store().clone();
    let t0 = meshtable::ingest::now_ms() - 50 * MIN;
    // "low" runs out of memory (5 %); "late" sent the same, but as backfill
    // an hour late; "gone" reports once and falls silent.
    report(&s, "low", "b1", 1, t0, t0, 50).await?;
    report(&s, "late", "b1", 1, t0 - 60 * MIN, t0, 50).await?;
    report(&s, "gone", "b1", 1, t0, t0, 500).await?;

    // Step: (offset min, which node reports what, want (rule, subject, state)).
    let changes = engine::evaluate_network(&s, NET, t0).await?;
    ensure!(changes.is_empty(), "nothing fires at once: {changes:?}");
    let list = h.alerts().await?;
    ensure!(
        list.iter()
            .map(|a| (a.1.as_str(), a.2.as_str(), a.3.as_str()))
            .collect::<Vec<_>>()
            == vec![(rules::MEMORY_LOW, "low", "pending")],
        "pending within the tolerance window, backfill never: {list:?}"
    );
    let (st, v) = h
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/networks/{NET}/alerts"),
            None,
        )
        .await?;
    ensure!(
        st == 200 && v["alerts"].as_array().is_some_and(Vec::is_empty),
        "pending is not listed as open: {v}"
    );

    // Still low 6 minutes later: the tolerance window (5 min) has passed.
    let t1 = t0 + 6 * MIN;
    report(&s, "low", "b1", 2, t1, t1, 50).await?;
    report(&s, "gone", "b1", 2, t0 + MIN, t0 + MIN, 500).await?;
    let changes = engine::evaluate_network(&s, NET, t1).await?;
    ensure!(
        changes.len() == 1,
        "memory_low fires: {changes:?} {:?}",
        h.alerts().await?
    );
    ensure!(
        engine::evaluate_network(&s, NET, t1).await?.is_empty(),
        "idempotent"
    );
    let list = h.alerts().await?;
    let (id, state) = Harness::state_of(&list, rules::MEMORY_LOW, "low").context("memory alert")?;
    ensure!(state == "firing", "{list:?}");

    // Ack: the table of (alert id, want status).
    let ack = |id: String| format!("/api/v1/networks/{NET}/alerts/{id}/ack");
    for (target, want) in [
        (id.to_string(), 200),
        (id.to_string(), 409),
        ("999999".to_owned(), 404),
        ("x".to_owned(), 404),
    ] {
        let (st, v) = h
            .send(reqwest::Method::POST, &ack(target.clone()), None)
            .await?;
        ensure!(st == want, "ack {target}: {st} {v}, want {want}");
        if st == 200 {
            ensure!(
                v["state"] == "acknowledged" && v["acked_by"].is_string(),
                "{v}"
            );
        }
    }
    let (st, _) = h
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/networks/nowhere/alerts/{id}/ack"),
            None,
        )
        .await?;
    ensure!(st == 404, "unknown network: {st}");

    // "gone" last spoke at t0+1min: offline after 10 minutes of silence.
    let t2 = t0 + 12 * MIN;
    report(&s, "low", "b1", 3, t2, t2, 500).await?;
    engine::evaluate_network(&s, NET, t2).await?;
    let list = h.alerts().await?;
    ensure!(
        Harness::state_of(&list, rules::NODE_OFFLINE, "gone").map(|a| a.1)
            == Some("firing".to_owned()),
        "{list:?}"
    );
    ensure!(
        Harness::state_of(&list, rules::MEMORY_LOW, "low").map(|a| a.1)
            == Some("resolved".to_owned()),
        "memory recovered: {list:?}"
    );
    ensure!(
        Harness::state_of(&list, rules::MEMORY_LOW, "late").is_none(),
        "backfill never fires: {list:?}"
    );

    // Maintenance silences "gone": its alert resolves.
    let (st, v) = h
        .send(
            reqwest::Method::POST,
            &format!("/api/v1/networks/{NET}/maintenance"),
            Some(json!({"node": "gone", "start": t0 - 60 * MIN, "end": t0 + 24 * 60 * MIN})),
        )
        .await?;
    ensure!(st == 201 || st == 200, "maintenance: {st} {v}");
    engine::evaluate_network(&s, NET, t2 + MIN).await?;
    let list = h.alerts().await?;
    ensure!(
        Harness::state_of(&list, rules::NODE_OFFLINE, "gone").map(|a| a.1)
            == Some("resolved".to_owned()),
        "{list:?}"
    );
    h.controller.shutdown().await;
    Ok(())
}

/// A webhook receiver: every body POSTed to it.
async fn webhook_receiver() -> Result<(SocketAddr, Arc<Mutex<Vec<Value>>>)> {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let g = got.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(v): axum::Json<Value>| {
            let g = g.clone();
            async move {
                g.lock().unwrap().push(v);
                "ok"
            }
        }),
    );
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = l.local_addr()?;
    tokio::spawn(async move { axum::serve(l, app).await });
    Ok((addr, got))
}

/// aiosmtpd, delivering into a Maildir.
struct Smtp {
    child: Child,
    port: u16,
    maildir: tempfile::TempDir,
}

impl Smtp {
    fn start() -> Result<Smtp> {
        // The first Python that has aiosmtpd (pyenv's, or Debian's python3-aiosmtpd).
        let python = ["python3", "/usr/bin/python3"]
            .into_iter()
            .find(|p| {
                Command::new(p)
                    .args(["-c", "import aiosmtpd"])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success())
            })
            .context(
                "python3 aiosmtpd is missing: apt-get install python3-aiosmtpd \
                 (or pip install aiosmtpd); .ci/run installs it",
            )?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let maildir = tempfile::tempdir()?;
        let child = Command::new(python)
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(maildir.path().join("mail"))
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .context("start aiosmtpd")?;
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(Smtp {
                    child,
                    port,
                    maildir,
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bail!("aiosmtpd did not listen on {port}")
    }

    fn messages(&self) -> Result<Vec<String>> {
        let dir = self.maildir.path().join("mail/new");
        let mut out = Vec::new();
        if dir.exists() {
            let mut paths: Vec<_> = std::fs::read_dir(dir)?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .collect();
            paths.sort();
            for p in paths {
                out.push(std::fs::read_to_string(p)?);
            }
        }
        Ok(out)
    }
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Digest batching to a real webhook receiver and a real SMTP server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivery() -> Result<()> {
    let smtp = Smtp::start()?;
    for db in databases()? {
        delivery_on(&db.url, &smtp)
            .await
            .with_context(|| format!("on {}", db.url.split(':').next().unwrap_or("")))?;
    }
    Ok(())
}

async fn delivery_on(url: &str, smtp: &Smtp) -> Result<()> {
    let before = smtp.messages()?.len();
    let (hook, got) = webhook_receiver().await?;
    let h = Harness::start(url).await?;
    let s = h.store().clone();
    let settings = json!({
        "webhook_url": format!("http://{hook}/hook"),
        "email_to": ["noc@village.example"],
        "email_from": "meshtable <alerts@village.example>",
        "smtp_server": format!("127.0.0.1:{}", smtp.port),
        "digest_seconds": 600,
        "rules": {"uplink_capacity_bps": 1000000.0}
    });
    let path = format!("/api/v1/networks/{NET}/alert-settings");
    let (st, v) = h.send(reqwest::Method::PUT, &path, Some(settings)).await?;
    ensure!(st == 200, "settings: {st} {v}");
    for (body, want) in [
        (json!({"webhook_url": "ftp://x"}), 400),
        (json!({"email_to": ["not an address"]}), 400),
        (json!({"rules": {"memory_min_percent": 300}}), 400),
        (json!({"rules": {"no_such_rule": 1}}), 400),
    ] {
        let (st, v) = h
            .send(reqwest::Method::PUT, &path, Some(body.clone()))
            .await?;
        ensure!(st == want, "{body}: {st} {v}");
    }
    let (st, v) = h.send(reqwest::Method::GET, &path, None).await?;
    ensure!(
        st == 200 && v["digest_seconds"] == 600 && v["rules"]["offline_minutes"] == 10,
        "{v}"
    );

    // Two nodes go silent and one saturates its uplink: three alerts fire
    // in one evaluation, and go out as one digest per channel.
    let t0 = meshtable::ingest::now_ms() - 50 * MIN;
    report(&s, "a", "b1", 1, t0, t0, 500).await?;
    report(&s, "b", "b1", 1, t0, t0, 500).await?;
    let http = reqwest::Client::new();
    let t1 = t0 + 12 * MIN;
    let mut bytes = 0u64;
    for seq in 1..=4u64 {
        // One sample a minute up to t1, each 1 Mbit/s more on the uplink:
        // the full capacity, above 80 % of it.
        let t = t1 - (5 - i64::try_from(seq)?) * MIN;
        bytes += 60 * 1_000_000 / 8;
        let tm = Telemetry {
            node: "up".to_owned(),
            boot_id: "b1".to_owned(),
            seq,
            time_ms: u64::try_from(t)?,
            uptime_ms: seq * 60_000,
            mem_total: 1000,
            mem_available: 500,
            rootfs_size: 1000,
            rootfs_free: 500,
            interfaces: vec![InterfaceCounters {
                name: "wan".to_owned(),
                rx_bytes: bytes,
                ..InterfaceCounters::default()
            }],
            gateway: Some(Gateway {
                via: None,
                ifname: "wan".to_owned(),
            }),
            ..Telemetry::default()
        };
        s.record_batch(&[Incoming {
            network: NET,
            node: "up",
            content: meshtable_store::Content::Telemetry(&tm),
            received_ms: t,
        }])
        .await?;
    }
    let changes = engine::evaluate_network(&s, NET, t1).await?;
    ensure!(
        changes.len() == 3,
        "a, b offline and up saturated: {changes:?}"
    );
    ensure!(
        engine::deliver_network(&s, &http, NET, t1).await? == 3,
        "one digest of 3"
    );
    ensure!(
        engine::deliver_network(&s, &http, NET, t1).await? == 0,
        "nothing twice"
    );

    // A change 1 minute later waits for the digest interval.
    report(&s, "a", "b1", 2, t1 + MIN, t1 + MIN, 500).await?;
    let changes = engine::evaluate_network(&s, NET, t1 + MIN).await?;
    ensure!(changes.len() == 1, "a resolved: {changes:?}");
    ensure!(
        engine::deliver_network(&s, &http, NET, t1 + MIN).await? == 0,
        "within the digest interval"
    );
    ensure!(
        engine::deliver_network(&s, &http, NET, t1 + 11 * MIN).await? == 1,
        "after the digest interval"
    );

    let bodies = got.lock().unwrap().clone();
    ensure!(bodies.len() == 2, "two webhook posts: {bodies:?}");
    let summary = |b: &Value| -> Vec<(String, String, String)> {
        let mut v: Vec<_> = b["alerts"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|i| {
                        (
                            i["event"].as_str().unwrap_or("").to_owned(),
                            i["alert"]["rule"].as_str().unwrap_or("").to_owned(),
                            i["alert"]["subject"].as_str().unwrap_or("").to_owned(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort();
        v
    };
    let s3 = |a: &str, b: &str, c: &str| (a.to_owned(), b.to_owned(), c.to_owned());
    ensure!(bodies[0]["network"] == NET, "{}", bodies[0]);
    ensure!(
        summary(&bodies[0])
            == vec![
                s3("firing", rules::NODE_OFFLINE, "a"),
                s3("firing", rules::NODE_OFFLINE, "b"),
                s3("firing", rules::UPLINK_SATURATED, "up/wan")
            ],
        "{}",
        bodies[0]
    );
    ensure!(
        summary(&bodies[1]) == vec![s3("resolved", rules::NODE_OFFLINE, "a")],
        "{}",
        bodies[1]
    );

    let mails = smtp.messages()?;
    ensure!(
        mails.len() == before + 2,
        "two e-mails: {}",
        mails.len() - before
    );
    let first = &mails[before];
    for want in [
        "noc@village.example",
        "alerts@village.example",
        "3 alert changes, 3 firing",
        "node_offline a:",
        "uplink_saturated up/wan",
    ] {
        ensure!(first.contains(want), "e-mail lacks {want:?}:\n{first}");
    }
    ensure!(
        mails[before + 1].contains("RESOLVED"),
        "{}",
        mails[before + 1]
    );

    // A webhook that is not there: the digest stays undelivered, the
    // failure is counted, and it goes out once the webhook is back.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let (st, v) = h
        .send(
            reqwest::Method::PUT,
            &path,
            Some(json!({"webhook_url": format!("http://{dead}/hook"), "digest_seconds": 0})),
        )
        .await?;
    ensure!(st == 200, "{v}");
    report(&s, "b", "b1", 2, t1 + 20 * MIN, t1 + 20 * MIN, 500).await?;
    let metrics = meshtable::metrics::Metrics::new()?;
    let failures = |m: &meshtable::metrics::Metrics| -> Result<String> {
        Ok(m.render(None)?
            .lines()
            .filter(|l| l.starts_with("meshtable_alerts_delivery_failures_total"))
            .collect::<Vec<_>>()
            .join(" "))
    };
    engine::tick(&s, &metrics, &http, t1 + 20 * MIN).await?;
    let text = failures(&metrics)?;
    ensure!(
        text.contains(r#"channel="webhook"} 1"#) && text.contains(r#"channel="email"} 0"#),
        "{text}"
    );
    let kept = s.pending_notices(NET).await?;
    ensure!(
        kept.iter()
            .any(|n| n.alert.subject == "b" && n.event.as_str() == "resolved"),
        "b resolved, kept: {kept:?}"
    );
    let (st, v) = h
        .send(
            reqwest::Method::PUT,
            &path,
            Some(json!({"webhook_url": format!("http://{hook}/hook"), "digest_seconds": 0})),
        )
        .await?;
    ensure!(st == 200, "{v}");
    engine::tick(&s, &metrics, &http, t1 + 21 * MIN).await?;
    ensure!(
        s.pending_notices(NET).await?.is_empty(),
        "delivered on retry"
    );
    let last = got.lock().unwrap().last().cloned().unwrap_or_default();
    ensure!(
        summary(&last).len() == kept.len()
            && summary(&last).contains(&s3("resolved", rules::NODE_OFFLINE, "b")),
        "{last}"
    );
    h.controller.shutdown().await;
    Ok(())
}
