//! Flood mode: publish N distinct telemetry reports as fast as the broker
//! accepts them, and a plain subscriber that counts a flow (the ceiling an
//! MQTT consumer can reach on this broker, for the ingest benchmark).
//!
//! Report `i` (from 0) belongs to node `i % nodes` (id `flood` followed by
//! six digits), with boot id `<boot>-<node>` and `seq = i / nodes`, so that
//! every report of a run has its own `(node, boot_id, seq)` and the reports
//! of each node come in seq order with growing counters. Publishing is spread
//! over a few MQTT connections (client ids `meshtable-flood-<network>-<c>`),
//! QoS 1, each with a window of unacknowledged publishes; a report counts as
//! published when the broker acknowledged it (PUBACK).
//!
//! A flood can be gated (see [`FloodConfig::gate`]): report `i` is sent only
//! once the gate allows more than `i` reports, so that a benchmark can keep
//! the reports a slow consumer has not yet taken below the broker's
//! per-client queue limit (Mosquitto drops beyond `max_queued_messages`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshtable_proto::{InterfaceCounters, Kind, Telemetry, Topic, encode_cbor, examples};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::watch;

use crate::SimError;

/// Publishing connections by default.
pub const DEFAULT_CONNECTIONS: usize = 4;

/// Unacknowledged publishes per connection by default.
pub const DEFAULT_INFLIGHT: u16 = 100;

/// How to flood a broker.
#[derive(Debug, Clone)]
pub struct FloodConfig {
    /// MQTT broker host name or address.
    pub mqtt_host: String,
    /// MQTT broker port.
    pub mqtt_port: u16,
    /// The meshtable network the reports are published to.
    pub network: String,
    /// Reports to publish.
    pub reports: u64,
    /// Distinct nodes the reports are spread over (at least 1).
    pub nodes: u32,
    /// Boot id prefix: a run with another prefix publishes other reports.
    pub boot: String,
    /// Publishing connections (at least 1).
    pub connections: usize,
    /// Unacknowledged publishes per connection (at least 1).
    pub inflight: u16,
    /// At most this many reports per second over all connections (`None`:
    /// as fast as the broker accepts them).
    pub rate: Option<f64>,
    /// When set, report `i` waits until the gate's value exceeds `i`.
    pub gate: Option<watch::Receiver<u64>>,
}

/// What a flood did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FloodReport {
    /// Reports the broker acknowledged.
    pub acked: u64,
    /// From the first publish to the last acknowledgement.
    pub elapsed: Duration,
}

impl FloodReport {
    /// Acknowledged reports per second.
    pub fn rate(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// The node id of node `n` of a flood.
pub fn flood_node(n: u32) -> String {
    format!("flood{n:06}")
}

/// The boot id of node `n` of a flood with boot prefix `boot`.
pub fn flood_boot_id(boot: &str, n: u32) -> String {
    format!("{boot}-{n}")
}

/// Report `i` of a flood: its node, and the encoded telemetry.
pub fn flood_report(network: &str, boot: &str, nodes: u32, i: u64) -> (Topic, Vec<u8>) {
    let nodes = u64::from(nodes.max(1));
    let n = u32::try_from(i % nodes).unwrap_or(u32::MAX);
    let seq = i / nodes;
    let node = flood_node(n);
    let base = examples::telemetry_v1();
    let time_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let t = Telemetry {
        node: node.clone(),
        boot_id: flood_boot_id(boot, n),
        seq,
        time_ms,
        uptime_ms: 60_000 * (seq + 1),
        interfaces: base
            .interfaces
            .iter()
            .enumerate()
            .map(|(k, iface)| InterfaceCounters {
                rx_bytes: 1_000_000 * (seq + 1) * (k as u64 + 1),
                tx_bytes: 250_000 * (seq + 1),
                rx_packets: 1_000 * (seq + 1),
                tx_packets: 400 * (seq + 1),
                ..iface.clone()
            })
            .collect(),
        ..base
    };
    let topic = Topic {
        network: network.to_owned(),
        node,
        kind: Kind::Telemetry,
    };
    (topic, encode_cbor(&t))
}

fn check(cfg: &FloodConfig) -> Result<(), SimError> {
    let bad = |m: &str| Err(SimError::Config(m.to_owned()));
    if let Err(e) = meshtable_proto::validate_id(&cfg.network) {
        return Err(SimError::Config(format!("network: {e}")));
    }
    if cfg.nodes == 0 || cfg.connections == 0 || cfg.inflight == 0 {
        return bad("flood nodes, connections and inflight must be at least 1");
    }
    if cfg.boot.is_empty() || cfg.boot.len() > 40 {
        return bad("flood boot prefix must be 1-40 characters");
    }
    if let Some(r) = cfg.rate
        && !(r.is_finite() && r > 0.0)
    {
        return bad("flood rate must be positive");
    }
    Ok(())
}

fn broker_error(cfg: &FloodConfig, reason: impl ToString) -> SimError {
    SimError::Broker {
        addr: format!("{}:{}", cfg.mqtt_host, cfg.mqtt_port),
        reason: reason.to_string(),
    }
}

fn rumqttc_host(host: &str) -> String {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Publishes the flood and returns when the broker acknowledged every
/// report. Fails when a connection breaks: a flood is a measurement, and a
/// lost connection would make its count wrong.
pub async fn flood(cfg: FloodConfig) -> Result<FloodReport, SimError> {
    check(&cfg)?;
    let acked = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..cfg.connections {
        let cfg = cfg.clone();
        let acked = acked.clone();
        tasks.spawn(async move { connection(cfg, c, start, acked).await });
    }
    let mut first_error = None;
    let mut last_ack = start;
    while let Some(done) = tasks.join_next().await {
        match done {
            Ok(Ok(at)) => last_ack = last_ack.max(at),
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(SimError::Task(e.to_string()));
            }
        }
        if first_error.is_some() {
            tasks.abort_all();
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(FloodReport {
        acked: acked.load(Ordering::Relaxed),
        elapsed: last_ack.duration_since(start),
    })
}

/// One publishing connection: reports `c, c + C, c + 2C, ...`. Returns when
/// the last of them was acknowledged.
async fn connection(
    cfg: FloodConfig,
    c: usize,
    start: Instant,
    acked: Arc<AtomicU64>,
) -> Result<Instant, SimError> {
    let mut opts = MqttOptions::new(
        format!("meshtable-flood-{}-{c}", cfg.network),
        rumqttc_host(&cfg.mqtt_host),
        cfg.mqtt_port,
    );
    opts.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(cfg.inflight);
    let (client, mut eventloop) = AsyncClient::new(opts, usize::from(cfg.inflight).max(16));
    let connections = cfg.connections as u64;
    let mine: u64 = (cfg.reports + connections - 1 - c as u64) / connections;
    let publisher = {
        let cfg = cfg.clone();
        let client = client.clone();
        async move {
            let mut gate = cfg.gate.clone();
            let per_connection = cfg.rate.map(|r| r / connections as f64);
            let mut sent: u64 = 0;
            let mut i = c as u64;
            while i < cfg.reports {
                if let Some(g) = gate.as_mut() {
                    g.wait_for(|allowed| *allowed > i)
                        .await
                        .map_err(|_| "flood gate closed".to_owned())?;
                }
                if let Some(rate) = per_connection {
                    let due = start + Duration::from_secs_f64(sent as f64 / rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let (topic, payload) = flood_report(&cfg.network, &cfg.boot, cfg.nodes, i);
                client
                    .publish(topic.to_string(), QoS::AtLeastOnce, false, payload)
                    .await
                    .map_err(|e| e.to_string())?;
                sent += 1;
                i += connections;
            }
            Ok::<(), String>(())
        }
    };
    let publisher = tokio::spawn(publisher);
    let mut mine_acked = 0u64;
    let mut last = Instant::now();
    let result = loop {
        if mine_acked == mine {
            break Ok(last);
        }
        match eventloop.poll().await {
            Ok(Event::Incoming(Packet::PubAck(_))) => {
                mine_acked += 1;
                acked.fetch_add(1, Ordering::Relaxed);
                last = Instant::now();
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => {
                break Err(broker_error(&cfg, "disconnected"));
            }
            Ok(_) => {}
            Err(e) => break Err(broker_error(&cfg, e)),
        }
    };
    publisher.abort();
    if result.is_ok() {
        let _ = client.try_disconnect();
        // Let the DISCONNECT go out.
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_) => return,
                    Ok(_) => {}
                }
            }
        })
        .await;
    }
    result
}

/// What a [`count`] subscriber saw.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CountReport {
    /// Messages received.
    pub received: u64,
    /// From subscribing (or `since`) to the last message received.
    pub elapsed: Duration,
}

impl CountReport {
    /// Messages received per second.
    pub fn rate(&self) -> f64 {
        self.received as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// What a [`count`] subscriber listens to.
#[derive(Debug, Clone)]
pub struct CountConfig {
    /// MQTT broker host name or address.
    pub mqtt_host: String,
    /// MQTT broker port.
    pub mqtt_port: u16,
    /// Its client id.
    pub client_id: String,
    /// The subscription filter.
    pub filter: String,
    /// Stop after this many messages.
    pub expect: u64,
    /// Stop when no message came for this long.
    pub idle: Duration,
}

/// A plain MQTT subscriber (clean session, QoS 1, acknowledging at once)
/// counting the messages on a filter. Signals `ready` once subscribed,
/// then counts until `expect` messages arrived or none came for `idle`.
/// `elapsed` is measured from the instant in `since` when it is set by the
/// time counting ends (the moment the flow started), else from the
/// subscription.
pub async fn count(
    cfg: CountConfig,
    ready: tokio::sync::oneshot::Sender<()>,
    since: watch::Receiver<Option<Instant>>,
) -> Result<CountReport, SimError> {
    let CountConfig {
        mqtt_host,
        mqtt_port,
        client_id,
        filter,
        expect,
        idle,
    } = cfg;
    let err = |reason: String| SimError::Broker {
        addr: format!("{mqtt_host}:{mqtt_port}"),
        reason,
    };
    let mut opts = MqttOptions::new(client_id, rumqttc_host(&mqtt_host), mqtt_port);
    opts.set_clean_session(true)
        .set_keep_alive(Duration::from_secs(30))
        .set_max_packet_size(1024 * 1024, 64 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 64);
    client
        .subscribe(filter.as_str(), QoS::AtLeastOnce)
        .await
        .map_err(|e| err(e.to_string()))?;
    let mut ready = Some(ready);
    let mut subscribed_at = Instant::now();
    let mut received = 0u64;
    let mut last = subscribed_at;
    loop {
        if received >= expect {
            break;
        }
        let wait = if ready.is_some() {
            Duration::from_secs(10)
        } else {
            idle
        };
        match tokio::time::timeout(wait, eventloop.poll()).await {
            Err(_) if ready.is_some() => return Err(err("no suback within 10s".to_owned())),
            Err(_) => break,
            Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => {
                subscribed_at = Instant::now();
                last = subscribed_at;
                if let Some(r) = ready.take() {
                    let _ = r.send(());
                }
            }
            Ok(Ok(Event::Incoming(Packet::Publish(_)))) => {
                received += 1;
                last = Instant::now();
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(err(e.to_string())),
        }
    }
    let from = since.borrow().unwrap_or(subscribed_at);
    let _ = client.try_disconnect();
    Ok(CountReport {
        received,
        elapsed: last.saturating_duration_since(from),
    })
}
