//! Bad input next to good input: every kind of bad message is counted once
//! under its reason and logged (without its payload), the good messages
//! around it are stored, and the controller stays healthy.

use std::thread;
use std::time::Duration;

use meshtable_proto::{MAX_PAYLOAD, Report, Telemetry, Topic, encode_cbor, encode_json};
use meshtable_tests::json::{array_at, f64_at, str_at, time_at, u64_at};
use meshtable_tests::{Backend, Controller, MqttClient, now_ms, unique, wait_for};

/// Appears only inside a rejected payload: it must never reach the logs.
const PAYLOAD_MARKER: &str = "e2e-payload-marker-7f3a";

#[test]
fn embedded_sqlite() {
    bad_input(&Backend::embedded());
}

#[test]
fn service_mosquitto_postgres() {
    let Some(backend) = Backend::service() else {
        return;
    };
    bad_input(&backend);
}

/// One bad message: where it goes, what it carries, and the reason the
/// controller must count it under.
struct Case {
    reason: &'static str,
    topic: String,
    payload: Vec<u8>,
}

/// A valid report of the hand-made node `node`: interface counters grow by
/// 1000 bytes per report, one second apart.
fn telemetry(node: &str, seq: u64) -> Telemetry {
    let mut t = meshtable_proto::examples::telemetry_v1();
    t.node = node.to_owned();
    t.boot_id = "e2e-boot".to_owned();
    t.seq = seq;
    t.time_ms = u64::try_from(now_ms()).unwrap();
    t.uptime_ms = 1_000_000 + seq * 1_000;
    for i in &mut t.interfaces {
        i.rx_bytes += seq * 1_000;
        i.tx_bytes += seq * 500;
    }
    t
}

fn cases(net: &str) -> Vec<Case> {
    let topic = |node: &str, kind: &str| format!("meshtable/v1/{net}/{node}/{kind}");
    let cbor = encode_cbor(&telemetry("n-truncated", 0));
    // No version this build knows (2 is the compact telemetry form).
    let mut unknown = telemetry("n-version", 0);
    unknown.v = 99;
    let mut invalid = telemetry("n-invalid", 0);
    invalid.mem_available = invalid.mem_total + 1;
    let mut garbage = vec![0x00, 0xff];
    garbage.extend_from_slice(PAYLOAD_MARKER.as_bytes());
    vec![
        Case {
            reason: "empty",
            topic: topic("n-empty", "telemetry"),
            payload: Vec::new(),
        },
        Case {
            reason: "oversized",
            topic: topic("n-oversized", "telemetry"),
            payload: vec![0xa1; MAX_PAYLOAD + 1],
        },
        Case {
            reason: "truncated",
            topic: topic("n-truncated", "telemetry"),
            payload: cbor[..cbor.len() / 2].to_vec(),
        },
        Case {
            reason: "malformed",
            topic: topic("n-garbage", "telemetry"),
            payload: garbage,
        },
        Case {
            reason: "unknown_version",
            topic: topic("n-version", "telemetry"),
            payload: encode_cbor(&unknown),
        },
        Case {
            reason: "invalid",
            topic: topic("n-invalid", "telemetry"),
            payload: encode_cbor(&invalid),
        },
        Case {
            reason: "node_mismatch",
            topic: topic("n-mismatch", "telemetry"),
            payload: encode_cbor(&telemetry("someone-else", 0)),
        },
        Case {
            reason: "topic",
            topic: topic("n-topic", "bogus"),
            payload: encode_cbor(&telemetry("n-topic", 0)),
        },
    ]
}

/// The wire format itself refuses each case for the expected reason, so the
/// cases test the controller and not the test's idea of the format.
fn check_cases_locally(cases: &[Case]) {
    for c in cases {
        let got = match Topic::parse(&c.topic) {
            Err(_) => "topic",
            Ok(t) => match Report::decode(t.kind, &c.payload) {
                Err(e) => e.reason(),
                Ok((Report::Telemetry(r), _)) if r.node != t.node => "node_mismatch",
                Ok(_) => "accepted",
            },
        };
        assert_eq!(got, c.reason, "case {} on {}", c.reason, c.topic);
    }
}

fn bad_input(backend: &Backend) {
    let mut ctl = Controller::start(backend);
    let net = unique("e2e-bad");
    ctl.add_network(&net, true);
    let good = "good";
    let good_topic = format!("meshtable/v1/{net}/{good}/telemetry");
    let cases = cases(&net);
    check_cases_locally(&cases);

    let mut mqtt = MqttClient::connect(ctl.mqtt_url(), &unique("e2e-publisher"));
    // A first good report, seen through the API, proves the controller's
    // subscription is in place.
    mqtt.publish(&good_topic, encode_cbor(&telemetry(good, 0)));
    mqtt.flush();
    wait_for("the first good report", Duration::from_secs(15), || {
        latest_seq(&ctl, &net, good)
            .filter(|s| *s == 0)
            .ok_or_else(|| "not yet".to_owned())
    });
    let rejected = |ctl: &Controller| -> Vec<f64> {
        let samples = ctl.metrics();
        cases
            .iter()
            .map(|c| {
                meshtable_tests::find_metric(
                    &samples,
                    "meshtable_ingest_rejected_total",
                    &[("reason", c.reason)],
                )
                .unwrap_or_else(|| {
                    panic!(
                        "no meshtable_ingest_rejected_total{{reason=\"{}\"}}",
                        c.reason
                    )
                })
            })
            .collect()
    };
    let base = rejected(&ctl);
    let telemetry_base = ctl
        .metric("meshtable_ingest_messages_total", &[("kind", "telemetry")])
        .expect("meshtable_ingest_messages_total{kind=\"telemetry\"}");
    if !backend.is_shared() {
        assert!(
            base.iter().all(|v| *v == 0.0),
            "rejections before any bad input: {base:?}"
        );
        assert_eq!(telemetry_base, 1.0);
    }

    // The bad batch, with good reports in the middle (JSON) and at the end.
    let (first, second) = cases.split_at(cases.len() / 2);
    for c in first {
        mqtt.publish(&c.topic, c.payload.clone());
    }
    mqtt.publish(&good_topic, encode_json(&telemetry(good, 1)));
    for c in second {
        mqtt.publish(&c.topic, c.payload.clone());
    }
    let last = telemetry(good, 2);
    mqtt.publish(&good_topic, encode_cbor(&last));
    mqtt.flush();

    wait_for("the last good report", Duration::from_secs(15), || {
        ctl.assert_running();
        latest_seq(&ctl, &net, good)
            .filter(|s| *s == 2)
            .ok_or_else(|| format!("latest seq {:?}", latest_seq(&ctl, &net, good)))
    });
    let load1 = ctl.series(&net, good, "load1", None, now_ms() - 600_000);
    assert_eq!(
        load1.len(),
        3,
        "all three good reports are stored: {load1:?}"
    );
    wait_for("every rejection counted", Duration::from_secs(10), || {
        let now = rejected(&ctl);
        let missing: Vec<&str> = cases
            .iter()
            .zip(now.iter().zip(&base))
            .filter(|(_, (n, b))| *n - *b < 1.0)
            .map(|(c, _)| c.reason)
            .collect();
        if missing.is_empty() {
            Ok(())
        } else {
            Err(format!("not yet counted: {missing:?}"))
        }
    });
    // Nothing is counted twice, even a little later (a message that is not
    // acknowledged would come again).
    thread::sleep(Duration::from_secs(1));
    let now = rejected(&ctl);
    for (c, (n, b)) in cases.iter().zip(now.iter().zip(&base)) {
        assert_eq!(
            n - b,
            1.0,
            "meshtable_ingest_rejected_total{{reason=\"{}\"}}",
            c.reason
        );
    }
    if !backend.is_shared() {
        assert_eq!(
            ctl.metric("meshtable_ingest_messages_total", &[("kind", "telemetry")]),
            Some(telemetry_base + 2.0),
            "the two good reports of the batch, and nothing else, are stored"
        );
    }

    // The stored report is the one sent, rates included.
    let detail = ctl.node_detail(&net, good);
    let latest = &detail["latest"];
    assert_eq!(str_at(latest, "/boot_id"), last.boot_id);
    assert_eq!(u64_at(latest, "/mem_total"), last.mem_total);
    assert_eq!(u64_at(latest, "/uptime_ms"), last.uptime_ms);
    assert_eq!(
        time_at(latest, "/time"),
        i64::try_from(last.time_ms).unwrap()
    );
    let ifaces = array_at(latest, "/interfaces");
    assert_eq!(ifaces.len(), last.interfaces.len(), "{latest}");
    for sent in &last.interfaces {
        let got = ifaces
            .iter()
            .find(|i| i["name"] == sent.name.as_str())
            .unwrap_or_else(|| panic!("no interface {} in {latest}", sent.name));
        assert_eq!(u64_at(got, "/rx_bytes"), sent.rx_bytes);
        assert_eq!(u64_at(got, "/tx_packets"), sent.tx_packets);
        // 1000 bytes (rx) and 500 bytes (tx) more than one second earlier.
        assert_eq!(f64_at(got, "/rx_bps"), 8_000.0, "{got}");
        assert_eq!(f64_at(got, "/tx_bps"), 4_000.0, "{got}");
    }

    // Rejected messages leave no node behind.
    let nodes: Vec<String> = ctl
        .nodes(&net)
        .iter()
        .map(|n| str_at(n, "/node").to_owned())
        .collect();
    assert_eq!(nodes, [good], "only the good node exists in {net}");

    // Each rejection is logged with its topic and reason, never its payload.
    let log = ctl.stderr();
    for c in &cases {
        let reason_plain = format!("reason={}", c.reason);
        let reason_quoted = format!("reason=\"{}\"", c.reason);
        assert!(
            log.lines().any(|l| {
                l.contains("WARN")
                    && l.contains(&c.topic)
                    && (l.contains(&reason_plain) || l.contains(&reason_quoted))
            }),
            "no WARN line with topic {} and reason {} in the controller log:\n{}",
            c.topic,
            c.reason,
            meshtable_tests::tail(&log, 40)
        );
    }
    assert!(
        !log.contains(PAYLOAD_MARKER),
        "a rejected payload reached the log:\n{log}"
    );

    // Still healthy, still ingesting.
    ctl.assert_healthy();
    let fourth = encode_cbor(&telemetry(good, 3));
    mqtt.publish(&good_topic, fourth.clone());
    mqtt.flush();
    wait_for(
        "a good report after the bad ones",
        Duration::from_secs(10),
        || {
            latest_seq(&ctl, &net, good)
                .filter(|s| *s == 3)
                .ok_or_else(|| "not yet".to_owned())
        },
    );

    // The same report again, as a broker redelivers it: stored once, counted
    // as a duplicate, and changing nothing else: a redelivery after a
    // controller restart says nothing about whether the node is alive now, so
    // it must neither move last_seen nor bring the node back online.
    let seen = ctl
        .node_summary(&net, good)
        .map(|n| time_at(&n, "/last_seen"))
        .expect("the good node is listed");
    let dups = ctl
        .metric("meshtable_ingest_duplicates_total", &[])
        .expect("meshtable_ingest_duplicates_total");
    thread::sleep(Duration::from_millis(50));
    mqtt.publish(&good_topic, fourth);
    mqtt.flush();
    wait_for("the duplicate counted", Duration::from_secs(10), || {
        let now = ctl.metric("meshtable_ingest_duplicates_total", &[]);
        if now >= Some(dups + 1.0) {
            Ok(())
        } else {
            Err(format!(
                "meshtable_ingest_duplicates_total {now:?}, was {dups}"
            ))
        }
    });
    if !backend.is_shared() {
        assert_eq!(
            ctl.metric("meshtable_ingest_duplicates_total", &[]),
            Some(dups + 1.0)
        );
    }
    let load1 = ctl.series(&net, good, "load1", None, now_ms() - 600_000);
    assert_eq!(load1.len(), 4, "the duplicate is stored once: {load1:?}");
    let summary = ctl
        .node_summary(&net, good)
        .expect("the good node is listed");
    assert_eq!(
        time_at(&summary, "/last_seen"),
        seen,
        "a duplicate report moved last_seen: {summary}"
    );
    mqtt.disconnect();
}

/// The seq of the node's latest sample, if the node and a sample exist.
fn latest_seq(ctl: &Controller, net: &str, node: &str) -> Option<u64> {
    let (status, body) = ctl.get_json_status(&format!("/api/v1/nodes/{node}?network={net}"));
    if status == 404 {
        return None;
    }
    assert_eq!(status, 200, "{body}");
    body["latest"]["seq"].as_u64()
}
