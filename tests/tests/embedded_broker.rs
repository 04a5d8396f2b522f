//! The embedded broker's limit, made visible (issue 4): rumqttd acknowledges
//! a publish once it is in its in-memory log (`--mqtt-buffer`) and drops
//! the oldest part of that log when the controller's ingest falls further
//! behind. A flood far faster than ingest must then show every acknowledged
//! report either stored or counted in `meshtable_broker_messages_lost_total`,
//! with an error in the log, never gone without a trace.

use std::time::Duration;

use meshtable_sim::flood::{self, FloodConfig};
use meshtable_tests::{Backend, Controller, unique, wait_for};

/// The broker's log, in MiB: about 3,300 of the flood's reports (some 320
/// bytes each with their topic).
const BUFFER_MIB: &str = "1";

/// Reports published, at the broker's speed: several times what its log
/// holds.
const REPORTS: u64 = 40_000;

#[test]
fn what_the_embedded_broker_drops_is_counted() {
    if Backend::service().is_some() {
        eprintln!(
            "skipped in the service suite: it tests the embedded broker, which the default suite runs"
        );
        return;
    }
    let controller = Controller::start_with(&Backend::embedded(), &["--mqtt-buffer", BUFFER_MIB]);
    let network = unique("burst");
    controller.add_network(&network, true);
    let (host, port) = meshtable_sim::parse_mqtt_url(controller.mqtt_url()).expect("broker url");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let published = rt
        .block_on(flood::flood(FloodConfig {
            mqtt_host: host,
            mqtt_port: port,
            network,
            reports: REPORTS,
            nodes: 500,
            boot: unique("b"),
            connections: 4,
            inflight: 100,
            rate: None,
            gate: None,
        }))
        .expect("flood the embedded broker");
    assert_eq!(
        published.acked, REPORTS,
        "the broker acknowledged every report"
    );

    let counts = || {
        let stored = controller
            .metric("meshtable_ingest_messages_total", &[("kind", "telemetry")])
            .unwrap_or(0.0);
        let lost = controller
            .metric("meshtable_broker_messages_lost_total", &[])
            .unwrap_or(0.0);
        (stored as u64, lost as u64)
    };
    wait_for(
        "every acknowledged report stored or counted as lost",
        Duration::from_secs(300),
        || {
            let (stored, lost) = counts();
            if stored + lost >= REPORTS {
                Ok(())
            } else {
                Err(format!(
                    "{stored} stored + {lost} lost of {REPORTS}\n{}",
                    controller.log_tail()
                ))
            }
        },
    );
    // Nothing more arrives: the sum is exact, not an overshoot.
    std::thread::sleep(Duration::from_secs(2));
    let (stored, lost) = counts();
    assert!(
        lost > 0,
        "the flood did not overflow the broker's log ({stored} stored): it tests nothing"
    );
    assert_eq!(
        stored + lost,
        REPORTS,
        "{stored} stored + {lost} counted as lost"
    );
    assert!(
        controller
            .stderr()
            .contains("the embedded broker dropped reports it had acknowledged"),
        "no error in the log:\n{}",
        controller.log_tail()
    );
}
