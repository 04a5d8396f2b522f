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
use meshtable::alerts::notify::Webhooks;
use meshtable::alerts::rules::{self, Rules};
use meshtable::alerts::target;
use meshtable::config::Layer;
use meshtable::serve::Controller;
use meshtable_proto::{
    Gateway, Hello, InterfaceCounters, InterfaceInfo, InterfaceKind, MeshProtocol, Neighbour,
    Station, Telemetry,
};
use meshtable_store::alerts::{
    LinkFacts, LinkQuality, NetworkFacts, NodeFacts, SampleFacts, UplinkInterval,
};
use meshtable_store::{Incoming, NodeStatus, Store};
use serde_json::{Value, json};

#[path = "common/databases.rs"]
mod databases;
#[path = "../../crates/store/tests/common/pg_url.rs"]
mod pg_url;
#[path = "common/start.rs"]
mod start;

use start::start_controller;

use databases::on_each_database;

const MIN: i64 = 60_000;
const NOW: i64 = 1_900_000_000_000;
/// The end of the latest closed 5-minute interval at `NOW`.
const END: i64 = NOW - NOW % (5 * MIN);

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
        uplink_intervals: Vec::new(),
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

/// An uplink `wan` whose latest closed intervals, newest first, had these
/// p95 rates `(rx, tx)` and live reports.
fn uplink(mut n: NodeFacts, p95: &[(f64, f64)]) -> NodeFacts {
    n.uplink = Some("wan".to_owned());
    n.uplink_intervals = p95
        .iter()
        .zip(1..)
        .map(|(&(rx, tx), i)| UplinkInterval {
            start_ms: END - i * 5 * MIN,
            rx_p95: Some(rx),
            tx_p95: Some(tx),
            live: true,
        })
        .collect();
    n
}

fn with_interval(mut n: NodeFacts, i: usize, f: impl FnOnce(&mut UplinkInterval)) -> NodeFacts {
    if let Some(iv) = n.uplink_intervals.get_mut(i) {
        f(iv);
    }
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
            "uplink p95 above 80 % in 3 intervals",
            vec![uplink(node("a"), &[(90e6, 1e6), (1e6, 85e6), (81e6, 0.0)])],
            capped.clone(),
            vec![(rules::UPLINK_SATURATED, "a/wan")],
        ),
        (
            "uplink p95 above 80 % in 2 of 3 intervals",
            vec![uplink(node("a"), &[(90e6, 1e6), (1e6, 85e6), (70e6, 0.0)])],
            capped.clone(),
            vec![],
        ),
        (
            "uplink p95 at exactly 80 % is not above",
            vec![uplink(node("a"), &[(90e6, 1e6), (1e6, 85e6), (80e6, 0.0)])],
            capped.clone(),
            vec![],
        ),
        (
            "uplink with only 2 intervals",
            vec![uplink(node("a"), &[(90e6, 1e6), (1e6, 85e6)])],
            capped.clone(),
            vec![],
        ),
        (
            "uplink: an interval of backfill only never counts",
            vec![with_interval(
                uplink(node("a"), &[(90e6, 1e6), (1e6, 85e6), (81e6, 0.0)]),
                1,
                |iv| iv.live = false,
            )],
            capped.clone(),
            vec![],
        ),
        (
            "uplink: a gap (the newest interval missing)",
            vec![with_interval(
                uplink(node("a"), &[(90e6, 1e6), (1e6, 85e6), (81e6, 0.0)]),
                0,
                |iv| iv.start_ms -= 15 * MIN,
            )],
            capped.clone(),
            vec![],
        ),
        (
            "uplink: tx only",
            vec![with_interval(
                uplink(node("a"), &[(0.0, 90e6), (0.0, 85e6), (0.0, 81e6)]),
                2,
                |iv| iv.rx_p95 = None,
            )],
            capped.clone(),
            vec![(rules::UPLINK_SATURATED, "a/wan")],
        ),
        (
            "uplink: 4 intervals wanted, 3 known",
            vec![uplink(node("a"), &[(90e6, 1e6), (1e6, 85e6), (81e6, 0.0)])],
            Rules {
                uplink_intervals: 4,
                ..capped.clone()
            },
            vec![],
        ),
        (
            "uplink: 2 intervals wanted, the third below",
            vec![uplink(node("a"), &[(90e6, 1e6), (1e6, 85e6), (1e6, 0.0)])],
            Rules {
                uplink_intervals: 2,
                ..capped.clone()
            },
            vec![(rules::UPLINK_SATURATED, "a/wan")],
        ),
        (
            "no capacity configured",
            vec![uplink(node("a"), &[(90e6, 1e6), (1e6, 85e6), (81e6, 0.0)])],
            d.clone(),
            vec![],
        ),
    ];
    let mut failures = String::new();
    for (name, nodes, rules, want) in &cases {
        let facts = NetworkFacts {
            nodes: nodes.clone(),
            links: Vec::new(),
        };
        let got: Vec<(String, String)> = rules::evaluate(&facts, rules, NOW)
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

/// A link direction `from/wlan0 -> to` reported a minute ago.
fn link(
    from: &str,
    to: &str,
    signal: Option<f64>,
    tq: Option<f64>,
    cost: Option<f64>,
) -> LinkFacts {
    LinkFacts {
        id: 1,
        source: from.to_owned(),
        source_ifname: "wlan0".to_owned(),
        target: to.to_owned(),
        target_is_node: true,
        last_seen_ms: NOW - MIN,
        quality: LinkQuality {
            signal_dbm: signal,
            tq,
            cost,
        },
        operator: None,
        learned: None,
    }
}

fn signal_ref(signal: f64) -> Option<LinkQuality> {
    Some(LinkQuality {
        signal_dbm: Some(signal),
        ..LinkQuality::default()
    })
}

fn operator(mut l: LinkFacts, q: Option<LinkQuality>) -> LinkFacts {
    l.operator = q;
    l
}

fn learned(mut l: LinkFacts, q: Option<LinkQuality>) -> LinkFacts {
    l.learned = q;
    l
}

/// `link_degraded`: signal and quality against the operator's or the
/// learned reference, and the noise controls.
#[test]
fn link_rules_table() {
    let d = Rules::default();
    let ab = || vec![node("a"), node("b")];
    const AB: &str = "a/wlan0->b";
    type Case = (&'static str, NetworkFacts, Rules, Vec<&'static str>);
    let facts = |nodes: Vec<NodeFacts>, links: Vec<LinkFacts>| NetworkFacts { nodes, links };
    let weak = || operator(link("a", "b", Some(-75.0), None, None), signal_ref(-64.0));
    let cases: Vec<Case> = vec![
        (
            "no reference",
            facts(
                ab(),
                vec![link("a", "b", Some(-90.0), Some(10.0), Some(900.0))],
            ),
            d.clone(),
            vec![],
        ),
        (
            "signal 11 dB under the operator's reference",
            facts(ab(), vec![weak()]),
            d.clone(),
            vec![AB],
        ),
        (
            "signal 10 dB under is not more than 10",
            facts(
                ab(),
                vec![operator(
                    link("a", "b", Some(-74.0), None, None),
                    signal_ref(-64.0),
                )],
            ),
            d.clone(),
            vec![],
        ),
        (
            "a custom drop of 20 dB",
            facts(ab(), vec![weak()]),
            Rules {
                link_drop_db: 20.0,
                ..d.clone()
            },
            vec![],
        ),
        (
            "the learned reference when the operator set none",
            facts(
                ab(),
                vec![learned(
                    link("a", "b", Some(-75.0), None, None),
                    signal_ref(-60.0),
                )],
            ),
            d.clone(),
            vec![AB],
        ),
        (
            "learned references off",
            facts(
                ab(),
                vec![learned(
                    link("a", "b", Some(-75.0), None, None),
                    signal_ref(-60.0),
                )],
            ),
            Rules {
                link_learned: false,
                ..d.clone()
            },
            vec![],
        ),
        (
            "the operator's reference wins over the learned one",
            facts(
                ab(),
                vec![learned(
                    operator(link("a", "b", Some(-75.0), None, None), signal_ref(-70.0)),
                    signal_ref(-60.0),
                )],
            ),
            d.clone(),
            vec![],
        ),
        (
            "a learned TQ fills what the operator left out",
            facts(
                ab(),
                vec![learned(
                    operator(
                        link("a", "b", Some(-66.0), Some(150.0), None),
                        signal_ref(-64.0),
                    ),
                    Some(LinkQuality {
                        tq: Some(230.0),
                        ..LinkQuality::default()
                    }),
                )],
            ),
            d.clone(),
            vec![AB],
        ),
        (
            "TQ 150 of 230 (65 %)",
            facts(
                ab(),
                vec![operator(
                    link("a", "b", None, Some(150.0), None),
                    Some(LinkQuality {
                        tq: Some(230.0),
                        ..LinkQuality::default()
                    }),
                )],
            ),
            d.clone(),
            vec![AB],
        ),
        (
            "TQ 170 of 230 (74 %)",
            facts(
                ab(),
                vec![operator(
                    link("a", "b", None, Some(170.0), None),
                    Some(LinkQuality {
                        tq: Some(230.0),
                        ..LinkQuality::default()
                    }),
                )],
            ),
            d.clone(),
            vec![],
        ),
        (
            "babel cost 400 against 256 (64 %)",
            facts(
                ab(),
                vec![operator(
                    link("a", "b", None, None, Some(400.0)),
                    Some(LinkQuality {
                        cost: Some(256.0),
                        ..LinkQuality::default()
                    }),
                )],
            ),
            d.clone(),
            vec![AB],
        ),
        (
            "babel cost 300 against 256 (85 %)",
            facts(
                ab(),
                vec![operator(
                    link("a", "b", None, None, Some(300.0)),
                    Some(LinkQuality {
                        cost: Some(256.0),
                        ..LinkQuality::default()
                    }),
                )],
            ),
            d.clone(),
            vec![],
        ),
        (
            "the reporter in maintenance",
            facts(
                vec![
                    NodeFacts {
                        in_maintenance: true,
                        ..node("a")
                    },
                    node("b"),
                ],
                vec![weak()],
            ),
            d.clone(),
            vec![],
        ),
        (
            "the far end flapping",
            facts(
                vec![
                    node("a"),
                    NodeFacts {
                        flapping: true,
                        ..node("b")
                    },
                ],
                vec![weak()],
            ),
            d.clone(),
            vec![],
        ),
        (
            "the far end offline",
            facts(vec![node("a"), offline("b", 30)], vec![weak()]),
            d.clone(),
            vec![rules::NODE_OFFLINE],
        ),
        (
            "the reporter offline",
            facts(vec![offline("a", 30), node("b")], vec![weak()]),
            d.clone(),
            vec![rules::NODE_OFFLINE],
        ),
        (
            "not reported for 11 minutes",
            facts(
                ab(),
                vec![LinkFacts {
                    last_seen_ms: NOW - 11 * MIN,
                    ..weak()
                }],
            ),
            d.clone(),
            vec![],
        ),
        (
            "a far end known by its address only",
            facts(
                ab(),
                vec![LinkFacts {
                    target: "02:00:00:00:0b:01".to_owned(),
                    target_is_node: false,
                    ..weak()
                }],
            ),
            d.clone(),
            vec!["a/wlan0->02:00:00:00:0b:01"],
        ),
        (
            "two directions of one pair, one alert each",
            facts(
                ab(),
                vec![
                    weak(),
                    operator(link("b", "a", Some(-80.0), None, None), signal_ref(-63.0)),
                ],
            ),
            d.clone(),
            vec![AB, "b/wlan0->a"],
        ),
        (
            "two protocols on one interface to one neighbour: one alert",
            facts(ab(), vec![weak(), LinkFacts { id: 2, ..weak() }]),
            d.clone(),
            vec![AB],
        ),
    ];
    let mut failures = String::new();
    for (name, facts, rules, want) in &cases {
        let got: Vec<String> = rules::evaluate(facts, rules, NOW)
            .into_iter()
            .map(|c| {
                if c.rule == rules::LINK_DEGRADED {
                    c.subject
                } else {
                    c.rule
                }
            })
            .collect();
        if got != *want {
            let _ = writeln!(failures, "{name}: got {got:?}, want {want:?}");
        }
    }
    assert!(failures.is_empty(), "{failures}");

    // The tolerance window, the value and the message of one condition.
    let c = rules::evaluate(&facts(ab(), vec![weak()]), &d, NOW);
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0].hold_ms, 600_000);
    assert_eq!(c[0].value, Some(11.0));
    assert!(
        c[0].message.contains("11 dB under its reference -64 dBm"),
        "{}",
        c[0].message
    );
}

/// Stored settings of an older version (`uplink_samples`) still parse, as
/// the number of intervals.
#[test]
fn rules_keep_the_old_uplink_key() -> Result<()> {
    let old: Rules = serde_json::from_str(r#"{"uplink_samples": 4}"#)?;
    ensure!(old.uplink_intervals == 4, "{old:?}");
    let json = serde_json::to_value(&old)?;
    ensure!(
        json["uplink_intervals"] == 4 && json.get("uplink_samples").is_none(),
        "{json}"
    );
    Ok(())
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
        (
            "uplink_intervals",
            Rules {
                uplink_intervals: 0,
                ..Rules::default()
            },
        ),
        (
            "uplink_intervals",
            Rules {
                uplink_intervals: 289,
                ..Rules::default()
            },
        ),
        (
            "link_drop_db",
            Rules {
                link_drop_db: -3.0,
                ..Rules::default()
            },
        ),
        (
            "link_quality_drop_percent",
            Rules {
                link_quality_drop_percent: 101.0,
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

struct Harness {
    controller: Controller,
    http: reqwest::Client,
}

const NET: &str = "village";

impl Harness {
    /// A controller whose alert webhooks may go to internal addresses: the
    /// tests' receivers listen on 127.0.0.1.
    async fn start(database_url: &str) -> Result<Harness> {
        Harness::start_with(database_url, true).await
    }

    /// A controller with `alert_webhook_allow_private = allow_private`.
    async fn start_with(database_url: &str, allow_private: bool) -> Result<Harness> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let dir = tempfile::tempdir()?;
        let layer = Layer {
            listen: Some("127.0.0.1:0".parse()?),
            mqtt_listen: Some("127.0.0.1:0".parse()?),
            data_dir: Some(dir.path().to_owned()),
            database_url: Some(database_url.to_owned()),
            // The background evaluation first runs an hour after the start,
            // so not during the test: the test evaluates at chosen times.
            // (The liveness sweep and the history job run once at the start,
            // then not again within the test.)
            sweep_interval: Some(Duration::from_secs(3600)),
            alert_interval: Some(Duration::from_secs(3600)),
            history_interval: Some(Duration::from_secs(3600)),
            alert_webhook_allow_private: Some(allow_private),
            ..Layer::default()
        };
        let controller = start_controller(&layer).await?;
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
        // The newest (highest id) of that rule and subject.
        list.iter()
            .filter(|a| a.1 == rule && a.2 == subject)
            .max_by_key(|a| a.0)
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
    on_each_database("alerts", |url| async move { lifecycle_on(&url).await }).await
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

    /// The delivered messages, in the order the server received them.
    ///
    /// Not by file name: Python's Maildir names a message
    /// `SECONDS.M{microseconds}P{pid}Q{counter}.host` with the microseconds
    /// not zero-padded, so two messages within one second can sort the
    /// wrong way round by name ("M99000" after "M100000"): the digest sent
    /// second was once read as the first one. The `Q` counter is the
    /// server process's delivery order.
    fn messages(&self) -> Result<Vec<String>> {
        let dir = self.maildir.path().join("mail/new");
        let mut out = Vec::new();
        if dir.exists() {
            let mut paths: Vec<(u64, std::path::PathBuf)> = Vec::new();
            for e in std::fs::read_dir(dir)? {
                let path = e?.path();
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .context("maildir file name")?;
                paths.push((maildir_order(name)?, path));
            }
            paths.sort();
            for (_, p) in paths {
                out.push(std::fs::read_to_string(p)?);
            }
        }
        Ok(out)
    }
}

/// The delivery counter `Q` of a Maildir file name made by Python's
/// `mailbox.Maildir` (`SECONDS.M{us}P{pid}Q{counter}.host`).
fn maildir_order(name: &str) -> Result<u64> {
    let unique = name.split('.').nth(1).unwrap_or("");
    let q = unique
        .rsplit_once('Q')
        .and_then(|(_, q)| q.parse().ok())
        .with_context(|| format!("maildir name without a Q counter: {name}"))?;
    Ok(q)
}

/// The order of Maildir names is their delivery counter, not their text.
#[test]
fn maildir_names_order_by_counter() -> Result<()> {
    let first = "1764363602.M99876P4242Q7.host";
    let second = "1764363602.M100234P4242Q8.host";
    ensure!(second < first, "by text the second sorts first");
    ensure!(maildir_order(first)? < maildir_order(second)?);
    ensure!(maildir_order("1764363602.M1P1Q12.h.example")? == 12);
    ensure!(maildir_order("junk").is_err());
    Ok(())
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
    let smtp = &smtp;
    on_each_database("alerts", |url| async move { delivery_on(&url, smtp).await }).await
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
    // in one evaluation, and go out as one digest per channel. t1 is on a
    // 5-minute boundary: the uplink's last three intervals are closed.
    let t1 = {
        let t = meshtable::ingest::now_ms() - 38 * MIN;
        t - t % (5 * MIN)
    };
    let t0 = t1 - 12 * MIN;
    report(&s, "a", "b1", 1, t0, t0, 500).await?;
    report(&s, "b", "b1", 1, t0, t0, 500).await?;
    // The receivers are on 127.0.0.1: internal addresses allowed.
    let http = Webhooks::new(true)?;
    let mut bytes = 0u64;
    for seq in 1..=16u64 {
        // One sample a minute from t1 - 16 min to t1 - 1 min, each 1 Mbit/s
        // more on the uplink (the first of a boot has no rate): the p95 of
        // each of the last three intervals is the full capacity, above 80 %.
        let t = t1 - (17 - i64::try_from(seq)?) * MIN;
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

/// Webhooks to internal addresses, without `alert_webhook_allow_private`:
/// refused when saved (400, nothing stored) and when delivered (counted,
/// the digest kept for the next evaluation), both by the check of the URL
/// and by the client's own resolver; allowed with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_webhooks_are_refused() -> Result<()> {
    on_each_database(
        "alerts",
        |url| async move { internal_webhooks_on(&url).await },
    )
    .await
}

async fn internal_webhooks_on(url: &str) -> Result<()> {
    let (hook, got) = webhook_receiver().await?;
    let h = Harness::start_with(url, false).await?;
    let s = h.store().clone();
    let path = format!("/api/v1/networks/{NET}/alert-settings");

    // Saving: each internal address is refused with the reason, and
    // nothing is stored.
    for internal in [
        format!("http://{hook}/hook"),
        format!("http://localhost:{}/hook", hook.port()),
        "http://[::1]:8080/hook".to_owned(),
        "http://[::ffff:127.0.0.1]/hook".to_owned(),
        "http://10.20.30.40/hook".to_owned(),
        "http://192.168.1.1/hook".to_owned(),
        "http://169.254.169.254/latest/meta-data".to_owned(),
        "http://[fd00::1]/hook".to_owned(),
        "http://[fe80::1]/hook".to_owned(),
        "http://0.0.0.0/hook".to_owned(),
        "http://239.1.2.3/hook".to_owned(),
    ] {
        let (st, v) = h
            .send(
                reqwest::Method::PUT,
                &path,
                Some(json!({"webhook_url": internal})),
            )
            .await?;
        let error = v["error"].as_str().unwrap_or_default();
        ensure!(
            st == 400
                && error.starts_with("webhook_url: ")
                && error.contains("is an internal address")
                && error.contains("alert_webhook_allow_private"),
            "{internal}: {st} {v}"
        );
        ensure!(
            s.alert_settings(NET).await?.webhook_url.is_none(),
            "{internal} stored"
        );
    }
    // A name that does not resolve is refused too, with its reason.
    let (st, v) = h
        .send(
            reqwest::Method::PUT,
            &path,
            Some(json!({"webhook_url": "https://hooks.example.invalid/x"})),
        )
        .await?;
    ensure!(
        st == 400
            && v["error"]
                .as_str()
                .unwrap_or_default()
                .contains("does not resolve"),
        "{st} {v}"
    );
    // A public address is saved (nothing connects to it here).
    let public = "https://192.0.2.10/hook";
    let (st, v) = h
        .send(
            reqwest::Method::PUT,
            &path,
            Some(json!({"webhook_url": public})),
        )
        .await?;
    ensure!(st == 200, "{public}: {st} {v}");
    ensure!(
        s.alert_settings(NET).await?.webhook_url.as_deref() == Some(public),
        "public URL stored"
    );

    // Delivering: stored URLs that are internal now, as they look in the
    // store when saved before the check existed or, for a name, before its
    // DNS changed. An IP literal (the check before sending catches it: the
    // resolver never sees literals), then a name.
    let t1 = {
        let t = meshtable::ingest::now_ms() - 38 * MIN;
        t - t % (5 * MIN)
    };
    report(&s, "a", "b1", 1, t1 - 12 * MIN, t1 - 12 * MIN, 500).await?;
    let metrics = meshtable::metrics::Metrics::new()?;
    let counted = |m: &meshtable::metrics::Metrics| -> Result<(String, String)> {
        let text = m.render(None)?;
        let line = |name: &str| {
            text.lines()
                .filter(|l| l.starts_with(name))
                .collect::<Vec<_>>()
                .join(" ")
        };
        Ok((
            line("meshtable_alerts_webhook_refused_total"),
            line("meshtable_alerts_delivery_failures_total"),
        ))
    };
    let strict = Webhooks::new(false)?;
    let stored = [
        format!("http://{hook}/hook"),
        format!("http://localhost:{}/hook", hook.port()),
    ];
    for (i, url) in stored.iter().enumerate() {
        let mut settings = s.alert_settings(NET).await?;
        settings.webhook_url = Some(url.clone());
        settings.digest_ms = 0;
        s.set_alert_settings(NET, &settings).await?;
        engine::tick(&s, &metrics, &strict, t1 + i64::try_from(i)? * MIN).await?;
        let (refused, failures) = counted(&metrics)?;
        ensure!(
            refused == format!("meshtable_alerts_webhook_refused_total {}", i + 1),
            "{url}: {refused}"
        );
        ensure!(
            failures.contains(&format!(r#"channel="webhook"}} {}"#, i + 1)),
            "{url}: {failures}"
        );
        ensure!(got.lock().unwrap().is_empty(), "{url}: nothing was sent");
        let kept = s.pending_notices(NET).await?;
        ensure!(
            kept.iter()
                .any(|n| n.alert.subject == "a" && n.event.as_str() == "firing"),
            "{url}: a firing, kept: {kept:?}"
        );
    }

    // The client's own resolver refuses the name too (the check before
    // it aside), while a client that allows internal addresses gets
    // through to the same receiver.
    let direct = format!("http://localhost:{}/hook", hook.port());
    let e = strict
        .client()
        .post(&direct)
        .json(&json!({}))
        .send()
        .await
        .expect_err("the guarded client refuses localhost");
    ensure!(
        matches!(
            target::refusal_in(&e),
            Some(target::TargetError::Internal { .. })
        ),
        "{e:?}"
    );
    let allowed = Webhooks::new(true)?;
    let r = allowed
        .client()
        .post(&direct)
        .json(&json!({}))
        .send()
        .await?;
    ensure!(r.status().is_success(), "{}", r.status());
    got.lock().unwrap().clear();

    // With internal addresses allowed, the kept digest goes out.
    engine::tick(&s, &metrics, &allowed, t1 + 2 * MIN).await?;
    ensure!(s.pending_notices(NET).await?.is_empty(), "delivered");
    let bodies = got.lock().unwrap().clone();
    ensure!(
        bodies.len() == 1 && bodies[0]["alerts"][0]["alert"]["subject"] == "a",
        "{bodies:?}"
    );
    let (refused, _) = counted(&metrics)?;
    ensure!(
        refused == "meshtable_alerts_webhook_refused_total 2",
        "{refused}"
    );
    h.controller.shutdown().await;
    Ok(())
}

const A_MAC: &str = "02:00:00:00:0a:01";
const B_MAC: &str = "02:00:00:00:0b:01";

/// A hello with one radio `wlan0` of MAC `mac`.
fn mesh_hello(mac: &str) -> Hello {
    Hello {
        agent_version: "test".to_owned(),
        hostname: "h".to_owned(),
        interval_ms: 60_000,
        interfaces: vec![InterfaceInfo {
            name: "wlan0".to_owned(),
            mac: Some(mac.to_owned()),
            mtu: 1500,
            addresses: Vec::new(),
            kind: InterfaceKind::Wireless,
        }],
        ..Hello::default()
    }
}

/// A live report of `node` in `network` at `t`; with `link`, it hears
/// `peer` (a batman-adv neighbour on wlan0) at `(signal dBm, TQ)`.
async fn mesh_report(
    store: &Store,
    network: &str,
    node: &str,
    seq: u64,
    t: i64,
    link: Option<(&str, i16, u8)>,
) -> Result<()> {
    let mut tm = Telemetry {
        node: node.to_owned(),
        boot_id: "b1".to_owned(),
        seq,
        time_ms: u64::try_from(t)?,
        uptime_ms: 100_000 + seq * 60_000,
        mem_total: 1000,
        mem_available: 500,
        rootfs_size: 1000,
        rootfs_free: 500,
        ..Telemetry::default()
    };
    if let Some((peer, signal, tq)) = link {
        tm.neighbours = vec![Neighbour {
            protocol: MeshProtocol::BatmanAdv,
            ifname: "wlan0".to_owned(),
            address: peer.to_owned(),
            tq: Some(tq),
            ..Neighbour::default()
        }];
        tm.stations = vec![Station {
            ifname: "wlan0".to_owned(),
            mac: Some(peer.to_owned()),
            mesh: true,
            signal_dbm: Some(signal),
            ..Station::default()
        }];
    }
    let out = store
        .record_batch(&[Incoming {
            network,
            node,
            content: meshtable_store::Content::Telemetry(&tm),
            received_ms: t,
        }])
        .await?;
    ensure!(out.len() == 1, "one outcome: {out:?}");
    Ok(())
}

/// `link_degraded` end to end: a reference set through the API, a weaker
/// signal reported (pending, firing, resolved), the reference cleared, then
/// a reference learned from a day of hourly samples; references and alerts
/// stay in their network.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn link_degraded() -> Result<()> {
    on_each_database("alerts", |url| async move { link_degraded_on(&url).await }).await
}

async fn link_degraded_on(url: &str) -> Result<()> {
    const OTHER: &str = "other";
    let h = Harness::start(url).await?;
    let s = h.store().clone();
    meshtable::enroll::add_network(&s, OTHER, true)
        .await
        .map_err(|e| anyhow::anyhow!("add network: {e}"))?;
    // Every time from the next full hour on: later than any liveness sweep
    // of this run, which therefore never marks these links down.
    let h0 = {
        let now = meshtable::ingest::now_ms();
        now - now % (60 * MIN) + 60 * MIN
    };
    for net in [NET, OTHER] {
        s.record_hello(net, "a", &mesh_hello(A_MAC), h0).await?;
        s.record_hello(net, "b", &mesh_hello(B_MAC), h0).await?;
    }
    let mut seq = 0u64;
    // a hears b at `signal` in both networks, b reports too.
    let mut step = |t: i64, signal: i16| {
        seq += 1;
        let s = s.clone();
        let n = seq;
        async move {
            for net in [NET, OTHER] {
                mesh_report(&s, net, "a", n, t, Some((B_MAC, signal, 230))).await?;
                mesh_report(&s, net, "b", n, t, None).await?;
            }
            anyhow::Ok(())
        }
    };
    let t1 = h0 + MIN;
    step(t1, -60).await?;

    let path = |net: &str, from: &str, to: &str| {
        format!("/api/v1/networks/{net}/links/{from}/{to}/reference")
    };
    let (st, v) = h
        .send(reqwest::Method::GET, &path(NET, "a", "b"), None)
        .await?;
    ensure!(
        st == 200
            && v["links"][0]["quality"]["signal_dbm"] == -60.0
            && v["links"][0]["quality"]["tq"] == 230.0
            && v["links"][0]["operator"].is_null()
            && v["links"][0]["target"]["node"] == "b",
        "{st} {v}"
    );
    // Requests and their status: (method, path, body, want).
    let put = reqwest::Method::PUT;
    for (method, p, body, want) in [
        (
            put.clone(),
            path(NET, "a", "b"),
            json!({"signal_dbm": -60}),
            200,
        ),
        (
            put.clone(),
            path("nowhere", "a", "b"),
            json!({"signal_dbm": -60}),
            404,
        ),
        (
            put.clone(),
            path(NET, "a", "zz"),
            json!({"signal_dbm": -60}),
            404,
        ),
        (
            put.clone(),
            path(NET, "b", "a"),
            json!({"signal_dbm": -60}),
            404,
        ),
        (put.clone(), path(NET, "a", "b"), json!({}), 400),
        (
            put.clone(),
            path(NET, "a", "b"),
            json!({"signal_dbm": 3}),
            400,
        ),
        (put.clone(), path(NET, "a", "b"), json!({"quality": 1}), 400),
        (
            reqwest::Method::GET,
            path("nowhere", "a", "b"),
            Value::Null,
            404,
        ),
    ] {
        let body = (!body.is_null()).then_some(body);
        let (st, v) = h.send(method.clone(), &p, body.clone()).await?;
        ensure!(st == want, "{method} {p} {body:?}: {st} {v}, want {want}");
    }
    // The reference is the village's: the other network's a -> b has none.
    let (st, v) = h
        .send(reqwest::Method::GET, &path(NET, "a", "b"), None)
        .await?;
    ensure!(
        st == 200
            && v["links"][0]["operator"]["signal_dbm"] == -60.0
            && v["links"][0]["set_by"].is_string(),
        "{v}"
    );
    let (st, v) = h
        .send(reqwest::Method::GET, &path(OTHER, "a", "b"), None)
        .await?;
    ensure!(st == 200 && v["links"][0]["operator"].is_null(), "{st} {v}");

    let eval = |t: i64| {
        let s = s.clone();
        async move {
            engine::evaluate_network(&s, NET, t).await?;
            engine::evaluate_network(&s, OTHER, t).await?;
            anyhow::Ok(())
        }
    };
    const SUBJECT: &str = "a/wlan0->b";
    let link_state = |list: &[(i64, String, String, String)]| {
        Harness::state_of(list, rules::LINK_DEGRADED, SUBJECT).map(|a| a.1)
    };
    eval(t1).await?;
    ensure!(h.alerts().await?.is_empty(), "{:?}", h.alerts().await?);

    // 15 dB weaker: pending for the tolerance window, then firing.
    let t2 = t1 + 2 * MIN;
    step(t2, -75).await?;
    eval(t2).await?;
    ensure!(
        link_state(&h.alerts().await?) == Some("pending".to_owned()),
        "{:?}",
        h.alerts().await?
    );
    let t3 = t2 + 11 * MIN;
    step(t3, -75).await?;
    eval(t3).await?;
    let list = h.alerts().await?;
    ensure!(link_state(&list) == Some("firing".to_owned()), "{list:?}");
    let (_, v) = h
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/networks/{NET}/alerts"),
            None,
        )
        .await?;
    let alert = &v["alerts"][0];
    ensure!(
        alert["value"] == 15.0
            && alert["message"]
                .as_str()
                .is_some_and(|m| m.contains("-75 dBm")),
        "{alert}"
    );
    // The other network saw the same signals, without a reference.
    ensure!(
        s.alerts(OTHER, true, true).await?.is_empty(),
        "other network: {:?}",
        s.alerts(OTHER, true, true).await?
    );

    // Back to -62 dBm: resolved.
    let t4 = t3 + 2 * MIN;
    step(t4, -62).await?;
    eval(t4).await?;
    ensure!(
        link_state(&h.alerts().await?) == Some("resolved".to_owned()),
        "{:?}",
        h.alerts().await?
    );
    let (st, v) = h
        .send(reqwest::Method::DELETE, &path(NET, "a", "b"), None)
        .await?;
    ensure!(st == 200 && v["links"][0]["operator"].is_null(), "{st} {v}");

    // A day of hourly samples at -60 dBm: the first evaluation of each hour
    // takes one (the hour of t1 has its sample already).
    for hour in 1..24 {
        let t = h0 + hour * 60 * MIN + MIN;
        step(t, -60).await?;
        eval(t).await?;
        let (_, v) = h
            .send(reqwest::Method::GET, &path(NET, "a", "b"), None)
            .await?;
        let l = &v["links"][0];
        ensure!(l["learned_hours"] == hour + 1, "hour {hour}: {l}");
        let want_learned = hour + 1 >= 24;
        ensure!(
            l["learned"].is_null() != want_learned,
            "hour {hour}: learned only from 24 hourly samples on: {l}"
        );
    }
    let (_, v) = h
        .send(reqwest::Method::GET, &path(NET, "a", "b"), None)
        .await?;
    ensure!(
        v["links"][0]["learned"]["signal_dbm"] == -60.0 && v["links"][0]["learned"]["tq"] == 230.0,
        "{v}"
    );
    // 12 dB under the learned reference, held: fires again, in both
    // networks this time (each learned its own).
    let t5 = h0 + 23 * 60 * MIN + 5 * MIN;
    step(t5, -72).await?;
    eval(t5).await?;
    let t6 = t5 + 11 * MIN;
    step(t6, -72).await?;
    eval(t6).await?;
    ensure!(
        link_state(&h.alerts().await?) == Some("firing".to_owned()),
        "{:?}",
        h.alerts().await?
    );
    let other: Vec<_> = s
        .alerts(OTHER, false, false)
        .await?
        .into_iter()
        .map(|a| (a.rule, a.subject))
        .collect();
    ensure!(
        other == vec![(rules::LINK_DEGRADED.to_owned(), SUBJECT.to_owned())],
        "{other:?}"
    );
    h.controller.shutdown().await;
    Ok(())
}

/// One report of `node` with its uplink `wan` at `bytes` received in
/// total, at `t`, received at `received` (later than `t`: backfill).
async fn uplink_report(
    store: &Store,
    node: &str,
    seq: u64,
    t: i64,
    received: i64,
    bytes: u64,
) -> Result<()> {
    let tm = Telemetry {
        node: node.to_owned(),
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
        backfill: received - t > 60_000,
        ..Telemetry::default()
    };
    store
        .record_batch(&[Incoming {
            network: NET,
            node,
            content: meshtable_store::Content::Telemetry(&tm),
            received_ms: received,
        }])
        .await?;
    Ok(())
}

/// `uplink_saturated` on the 5-minute p95 end to end: the same alert
/// whether the intervals come from the samples or from the rollups, an
/// interval of backfill never counts, and the alert resolves when the
/// newest interval is below the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uplink_p95() -> Result<()> {
    on_each_database("alerts", |url| async move { uplink_p95_on(&url).await }).await
}

async fn uplink_p95_on(url: &str) -> Result<()> {
    let h = Harness::start(url).await?;
    let s = h.store().clone();
    let (st, v) = h
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/networks/{NET}/alert-settings"),
            Some(json!({"rules": {"uplink_capacity_bps": 1000000.0, "uplink_intervals": 3}})),
        )
        .await?;
    ensure!(st == 200 && v["rules"]["uplink_intervals"] == 3, "{st} {v}");
    // An hour well in the past; samples a minute apart from +14 to +44 min,
    // 1 Mbit/s on the uplink (its capacity) unless said otherwise.
    let hour = {
        let t = meshtable::ingest::now_ms() - 3 * 60 * MIN;
        t - t % (60 * MIN)
    };
    let mbit_minute = 60 * 1_000_000 / 8;
    // (node, rate in Mbit/s at minute m, received this much later)
    type Plan = (&'static str, fn(i64) -> f64, i64);
    let plans: [Plan; 3] = [
        // One sample at 0.1 Mbit/s in [30, 35): the p95 of its 5 is still
        // the capacity (an "every sample above" rule would not fire).
        ("sat", |m| if m == 32 { 0.1 } else { 1.0 }, 0),
        // Half the capacity in [35, 40).
        ("calm", |m| if (35..40).contains(&m) { 0.5 } else { 1.0 }, 0),
        // Saturated, but every report backfilled two hours late.
        ("late", |_| 1.0, 120 * MIN),
    ];
    let mut last: Vec<(u64, u64)> = Vec::new();
    for (node, rate, delay) in plans {
        let mut bytes = 0u64;
        let mut seq = 0u64;
        for m in 14..=44 {
            seq += 1;
            if m > 14 {
                bytes += (rate(m) * mbit_minute as f64) as u64;
            }
            let t = hour + m * MIN;
            uplink_report(&s, node, seq, t, t + delay, bytes).await?;
        }
        last.push((seq, bytes));
    }
    let t1 = hour + 45 * MIN;
    let sat = |list: &[(i64, String, String, String)], node: &str| {
        Harness::state_of(list, rules::UPLINK_SATURATED, &format!("{node}/wan")).map(|a| a.1)
    };
    let changes = engine::evaluate_network(&s, NET, t1).await?;
    let list = h.alerts().await?;
    ensure!(
        changes.len() == 1 && sat(&list, "sat") == Some("firing".to_owned()),
        "{changes:?} {list:?}"
    );
    ensure!(
        sat(&list, "calm").is_none() && sat(&list, "late").is_none(),
        "{list:?}"
    );
    // Roll the hour up: the same intervals from the rollups change nothing.
    s.reconcile_rollups(
        hour + 2 * 60 * MIN,
        &meshtable_store::rollup::HistoryPolicy::default(),
        100,
    )
    .await?;
    ensure!(
        s.rollup_watermark().await?.is_some_and(|w| w > t1),
        "hour rolled up"
    );
    let changes = engine::evaluate_network(&s, NET, t1).await?;
    ensure!(
        changes.is_empty(),
        "rollups agree with samples: {changes:?}"
    );
    let (_, v) = h
        .send(
            reqwest::Method::GET,
            &format!("/api/v1/networks/{NET}/alerts"),
            None,
        )
        .await?;
    ensure!(v["alerts"][0]["value"] == 1_000_000.0, "{v}");

    // The next interval at 0.1 Mbit/s (stored after the rollup: the hour is
    // dirty and read from the samples again): resolved.
    let (seq, mut bytes) = last[0];
    for (i, m) in (45..=49).enumerate() {
        bytes += mbit_minute / 10;
        let t = hour + m * MIN;
        uplink_report(&s, "sat", seq + 1 + i as u64, t, t, bytes).await?;
    }
    let changes = engine::evaluate_network(&s, NET, hour + 50 * MIN).await?;
    let list = h.alerts().await?;
    ensure!(
        changes.len() == 1 && sat(&list, "sat") == Some("resolved".to_owned()),
        "{changes:?} {list:?}"
    );
    h.controller.shutdown().await;
    Ok(())
}
