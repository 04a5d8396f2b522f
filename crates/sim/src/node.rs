//! One simulated router: a tokio task owning its MQTT connection (one
//! `rumqttc` client and event loop), its [`NodeModel`] and a small report
//! queue.
//!
//! The event loop's `poll` future is kept pinned across timer wake-ups and
//! only dropped when the router drops its connection, so no request is ever
//! lost to a cancelled poll.

use std::collections::VecDeque;
use std::pin::pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshtable_proto::sign::SigningKey;
use meshtable_proto::{Kind, State, Status, Telemetry, Topic, VERSION, encode_cbor};
use rumqttc::{AsyncClient, ConnectionError, Event, LastWill, MqttOptions, Outgoing, Packet, QoS};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until};
use tracing::debug;

use crate::model::NodeModel;
use crate::profile::NodeProfile;
use crate::rng::Rng;
use crate::{SimConfig, SimReport};

/// Capacity of each client's request channel to its event loop.
const REQUEST_CAPACITY: usize = 8;

/// Most QoS 1 publishes a client has unacknowledged.
const INFLIGHT: u16 = 8;

/// Telemetry a router hands to its client at once (the rest waits in its queue).
const MAX_TELEMETRY_IN_CLIENT: usize = 4;

/// Reports a router keeps while it cannot reach the broker; older ones are
/// dropped and counted in the telemetry's `dropped` field, like the agent's queue.
const QUEUE_CAPACITY: usize = 120;

/// How long a router waits for its `offline` state to be acknowledged before
/// it drops the connection anyway.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(3);

/// Longest reconnect backoff.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// Keep-alive of the simulated routers' connections.
const KEEP_ALIVE: Duration = Duration::from_secs(60);

/// Configuration and counters every router task shares.
pub(crate) struct Shared {
    host: String,
    port: u16,
    network: String,
    interval: Duration,
    churn: f64,
    seed: u64,
    sign: bool,
    connections: AtomicU64,
    connection_errors: AtomicU64,
    hellos: AtomicU64,
    states: AtomicU64,
    telemetry: AtomicU64,
    telemetry_dropped: AtomicU64,
    offline_abrupt: AtomicU64,
    offline_clean: AtomicU64,
    stopped: AtomicU64,
    reboots: AtomicU64,
    connected: AtomicI64,
    last_error: Mutex<String>,
}

impl Shared {
    pub(crate) fn new(cfg: &SimConfig, sign: bool) -> Shared {
        Shared {
            host: cfg
                .mqtt_host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned(),
            port: cfg.mqtt_port,
            network: cfg.network.clone(),
            interval: cfg.interval,
            churn: cfg.churn,
            seed: cfg.seed,
            sign,
            connections: AtomicU64::new(0),
            connection_errors: AtomicU64::new(0),
            hellos: AtomicU64::new(0),
            states: AtomicU64::new(0),
            telemetry: AtomicU64::new(0),
            telemetry_dropped: AtomicU64::new(0),
            offline_abrupt: AtomicU64::new(0),
            offline_clean: AtomicU64::new(0),
            stopped: AtomicU64::new(0),
            reboots: AtomicU64::new(0),
            connected: AtomicI64::new(0),
            last_error: Mutex::new(String::new()),
        }
    }

    pub(crate) fn report(&self, nodes: usize) -> SimReport {
        SimReport {
            nodes,
            connections: self.connections.load(Relaxed),
            connection_errors: self.connection_errors.load(Relaxed),
            hellos: self.hellos.load(Relaxed),
            states: self.states.load(Relaxed),
            telemetry: self.telemetry.load(Relaxed),
            telemetry_dropped: self.telemetry_dropped.load(Relaxed),
            offline_abrupt: self.offline_abrupt.load(Relaxed),
            offline_clean: self.offline_clean.load(Relaxed),
            stopped: self.stopped.load(Relaxed),
            reboots: self.reboots.load(Relaxed),
        }
    }

    /// Routers connected right now.
    pub(crate) fn connected(&self) -> i64 {
        self.connected.load(Relaxed)
    }

    pub(crate) fn last_error(&self) -> String {
        self.last_error
            .lock()
            .map(|e| e.clone())
            .unwrap_or_default()
    }
}

/// rumqttc resolves `format!("{host}:{port}")`, so an IPv6 literal needs brackets.
fn rumqttc_host(host: &str) -> String {
    if host.contains(':') {
        format!("[{host}]")
    } else {
        host.to_owned()
    }
}

/// Opens one MQTT connection (client id `meshtable-<network>-sim-probe`) and
/// closes it cleanly: the broker is there and accepts clients.
pub(crate) async fn probe(host: &str, port: u16, network: &str) -> Result<(), String> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let opts = MqttOptions::new(
        format!("meshtable-{network}-sim-probe"),
        rumqttc_host(host),
        port,
    );
    let (client, mut eventloop) = AsyncClient::new(opts, 2);
    let handshake = async {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => {
                    client.try_disconnect().map_err(|e| e.to_string())?;
                }
                Ok(Event::Outgoing(Outgoing::Disconnect)) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), handshake)
        .await
        .map_err(|_| "no connack within 10s".to_owned())?
}

fn wall_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

async fn sleep_opt(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Completes when the fleet is told to stop (or the sender is gone).
async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|stop| *stop).await;
}

/// What a publish was, to count it when the broker acknowledges it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Hello,
    Online,
    Offline,
    Telemetry,
}

/// Why a router went down, and for how long.
#[derive(Debug, Clone, Copy)]
enum Outage {
    /// Power cut: abrupt, back with a new boot.
    Power(Duration),
    /// Uplink lost: abrupt, the router stays up and queues its reports.
    Link(Duration),
    /// Clean reboot (upgrade): `offline`, DISCONNECT, back with a new boot.
    Reboot(Duration),
}

/// How a connection ended.
#[derive(Debug, Clone, Copy)]
enum End {
    Shutdown,
    Outage(Outage),
    /// A node offline in the snapshot announced itself and is gone for good.
    Vanish,
}

/// A clean disconnect in progress.
struct Leave {
    end: End,
    deadline: Instant,
}

/// One MQTT connection's bookkeeping.
struct Conn {
    shared: Arc<Shared>,
    client: AsyncClient,
    connected: bool,
    /// Publishes handed to the client, not yet written, in order.
    queued: VecDeque<Sent>,
    /// Publishes written, awaiting their PubAck.
    inflight: Vec<(u16, Sent)>,
    leaving: Option<Leave>,
    vanishing: bool,
    backoff_until: Option<Instant>,
    failures: u32,
}

impl Conn {
    fn set_connected(&mut self, connected: bool) {
        if connected != self.connected {
            self.connected = connected;
            self.shared
                .connected
                .fetch_add(if connected { 1 } else { -1 }, Relaxed);
        }
    }

    fn publish(&mut self, kind: Sent, topic: &str, payload: Vec<u8>, retain: bool) -> bool {
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => {
                self.queued.push_back(kind);
                true
            }
            Err(_) => false,
        }
    }
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.set_connected(false);
    }
}

/// One simulated router.
pub(crate) struct SimNode {
    shared: Arc<Shared>,
    model: NodeModel,
    hello: Vec<u8>,
    hello_topic: String,
    state_topic: String,
    telemetry_topic: String,
    queue: VecDeque<Telemetry>,
    /// The router's key when the fleet signs its reports.
    key: Option<SigningKey>,
    dropped: u64,
    rng: Rng,
    /// When the model was last advanced.
    last: Instant,
    /// When the next report is due; `None` until the first connect of a boot.
    next_tick: Option<Instant>,
}

impl SimNode {
    pub(crate) fn new(shared: Arc<Shared>, profile: Arc<NodeProfile>, seed: u64) -> SimNode {
        let topic = |kind| {
            Topic {
                network: shared.network.clone(),
                node: profile.node_id.clone(),
                kind,
            }
            .to_string()
        };
        let interval_ms = u32::try_from(shared.interval.as_millis()).unwrap_or(u32::MAX);
        let key = shared
            .sign
            .then(|| crate::node_key(shared.seed, &shared.network, &profile.node_id));
        SimNode {
            hello: encode_cbor(&profile.hello(interval_ms)),
            hello_topic: topic(Kind::Hello),
            state_topic: topic(Kind::State),
            telemetry_topic: topic(Kind::Telemetry),
            rng: Rng::derive(seed, &profile.node_id, "churn"),
            model: NodeModel::new(profile, seed),
            queue: VecDeque::new(),
            key,
            dropped: 0,
            last: Instant::now(),
            next_tick: None,
            shared,
        }
    }

    fn node_id(&self) -> &str {
        &self.model.profile().node_id
    }

    /// `payload` as published on `topic`: in a signed envelope when the
    /// fleet signs, else as it is.
    fn sealed(&self, topic: &str, payload: Vec<u8>) -> Vec<u8> {
        match &self.key {
            Some(key) => meshtable_proto::sign::seal(key, self.node_id(), topic, &payload),
            None => payload,
        }
    }

    fn options(&self) -> MqttOptions {
        let client_id = format!("meshtable-{}-{}", self.shared.network, self.node_id());
        let mut o = MqttOptions::new(client_id, rumqttc_host(&self.shared.host), self.shared.port);
        o.set_keep_alive(KEEP_ALIVE)
            .set_clean_session(true)
            .set_inflight(INFLIGHT)
            .set_last_will(LastWill::new(
                self.state_topic.clone(),
                self.sealed(
                    &self.state_topic,
                    encode_cbor(&State {
                        v: VERSION,
                        status: Status::Offline,
                        time_ms: None,
                    }),
                ),
                QoS::AtLeastOnce,
                true,
            ));
        o
    }

    /// Sleeps `d`; false when told to stop first.
    async fn wait(d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
        tokio::select! {
            () = tokio::time::sleep(d) => true,
            () = stopped(shutdown) => false,
        }
    }

    /// The router's life: connect, report, go down now and then, until told to stop.
    pub(crate) async fn run(mut self, start_delay: Duration, mut shutdown: watch::Receiver<bool>) {
        if !Self::wait(start_delay, &mut shutdown).await {
            return;
        }
        self.last = Instant::now();
        loop {
            let end = self.session(&mut shutdown).await;
            debug!(node = %self.node_id(), end = ?end, "connection ended");
            match end {
                End::Shutdown | End::Vanish => return,
                End::Outage(Outage::Link(d)) => {
                    if !self.link_down(d, &mut shutdown).await {
                        return;
                    }
                }
                End::Outage(Outage::Power(d) | Outage::Reboot(d)) => {
                    if !Self::wait(d, &mut shutdown).await {
                        return;
                    }
                    self.model.reboot();
                    self.queue.clear();
                    self.dropped = 0;
                    self.last = Instant::now();
                    self.next_tick = None;
                    self.shared.reboots.fetch_add(1, Relaxed);
                }
            }
        }
    }

    /// The uplink is down for `d`: the router keeps measuring and queueing.
    async fn link_down(&mut self, d: Duration, shutdown: &mut watch::Receiver<bool>) -> bool {
        let until = Instant::now() + d;
        loop {
            let tick_at = self.next_tick;
            tokio::select! {
                () = sleep_until(until) => return true,
                () = sleep_opt(tick_at), if tick_at.is_some() => self.tick(),
                () = stopped(shutdown) => return false,
            }
        }
    }

    /// Advances the model to now and queues a report.
    fn tick(&mut self) {
        let now = Instant::now();
        let dt = now.saturating_duration_since(self.last);
        self.last = now;
        let wall = wall_ms();
        self.model.advance(
            dt.as_millis() as u64,
            i64::try_from(wall).unwrap_or(i64::MAX),
        );
        let report = self.model.report(wall, self.dropped);
        self.queue.push_back(report);
        if self.queue.len() > QUEUE_CAPACITY {
            self.queue.pop_front();
            self.dropped += 1;
            self.shared.telemetry_dropped.fetch_add(1, Relaxed);
        }
        let interval = self.shared.interval;
        let next = self.next_tick.unwrap_or(now) + interval;
        self.next_tick = Some(if next <= now { now + interval } else { next });
    }

    /// Hands queued reports to the client while it has room.
    fn flush(&mut self, conn: &mut Conn) {
        if !conn.connected || conn.leaving.is_some() || conn.vanishing {
            return;
        }
        while let Some(report) = self.queue.front() {
            let in_client = conn
                .queued
                .iter()
                .chain(conn.inflight.iter().map(|(_, k)| k))
                .filter(|k| **k == Sent::Telemetry)
                .count();
            if in_client >= MAX_TELEMETRY_IN_CLIENT {
                break;
            }
            let payload = self.sealed(&self.telemetry_topic, encode_cbor(report));
            if !conn.publish(Sent::Telemetry, &self.telemetry_topic, payload, false) {
                break;
            }
            self.queue.pop_front();
        }
    }

    /// Whether churn takes the router down now, and how.
    fn roll_churn(&mut self) -> Option<Outage> {
        let churn = self.shared.churn;
        if churn <= 0.0 || !self.rng.chance(churn) {
            return None;
        }
        let interval = self.shared.interval;
        let r = self.rng.unit();
        let intervals = |rng: &mut Rng, lo, hi| interval.saturating_mul(rng.int(lo, hi) as u32);
        Some(if r < 0.5 {
            Outage::Power(intervals(&mut self.rng, 6, 60))
        } else if r < 0.8 {
            Outage::Link(intervals(&mut self.rng, 3, 20))
        } else {
            Outage::Reboot(intervals(&mut self.rng, 6, 18))
        })
    }

    /// Starts a clean disconnect: `offline` first, DISCONNECT once it is
    /// acknowledged. Returns the end at once when there is nobody to tell.
    fn leave(&mut self, conn: &mut Conn, end: End) -> Option<End> {
        if !conn.connected {
            return Some(end);
        }
        let offline = self.sealed(
            &self.state_topic,
            encode_cbor(&State {
                v: VERSION,
                status: Status::Offline,
                time_ms: Some(wall_ms()),
            }),
        );
        if !conn.publish(Sent::Offline, &self.state_topic, offline, true) {
            return Some(end);
        }
        conn.leaving = Some(Leave {
            end,
            deadline: Instant::now() + LEAVE_TIMEOUT,
        });
        None
    }

    /// One MQTT connection, from connect to its end.
    async fn session(&mut self, shutdown: &mut watch::Receiver<bool>) -> End {
        let (client, mut eventloop) = rumqttc::AsyncClient::new(self.options(), REQUEST_CAPACITY);
        let mut conn = Conn {
            shared: Arc::clone(&self.shared),
            client,
            connected: false,
            queued: VecDeque::new(),
            inflight: Vec::new(),
            leaving: None,
            vanishing: false,
            backoff_until: None,
            failures: 0,
        };
        loop {
            let mut poll = pin!(eventloop.poll());
            let event = loop {
                let tick_at = self.next_tick.filter(|_| conn.leaving.is_none());
                let backoff = conn.backoff_until;
                let give_up = conn.leaving.as_ref().map(|l| l.deadline);
                tokio::select! {
                    event = &mut poll, if backoff.is_none() => break event,
                    () = sleep_opt(backoff), if backoff.is_some() => conn.backoff_until = None,
                    () = sleep_opt(tick_at), if tick_at.is_some() => {
                        self.tick();
                        if conn.connected && !conn.vanishing && conn.leaving.is_none() {
                            match self.roll_churn() {
                                Some(o @ (Outage::Power(_) | Outage::Link(_))) => {
                                    // Drop the connection without DISCONNECT: the broker
                                    // notices the closed socket and fires the will.
                                    self.shared.offline_abrupt.fetch_add(1, Relaxed);
                                    return End::Outage(o);
                                }
                                Some(o @ Outage::Reboot(_)) => {
                                    if let Some(end) = self.leave(&mut conn, End::Outage(o)) {
                                        return end;
                                    }
                                }
                                None => {}
                            }
                        }
                        self.flush(&mut conn);
                    }
                    () = sleep_opt(give_up), if give_up.is_some() => {
                        if let Some(leave) = conn.leaving.take() {
                            debug!(node = %self.node_id(), "offline state not acknowledged in time");
                            return leave.end;
                        }
                    }
                    () = stopped(shutdown), if conn.leaving.is_none() => {
                        if let Some(end) = self.leave(&mut conn, End::Shutdown) {
                            return end;
                        }
                    }
                }
            };
            if let Some(end) = self.handle(&mut conn, event) {
                return end;
            }
        }
    }

    /// Reacts to one event of the connection; `Some` ends it.
    fn handle(&mut self, conn: &mut Conn, event: Result<Event, ConnectionError>) -> Option<End> {
        match event {
            Ok(Event::Incoming(Packet::ConnAck(_))) => {
                conn.set_connected(true);
                conn.failures = 0;
                self.shared.connections.fetch_add(1, Relaxed);
                let online = self.sealed(
                    &self.state_topic,
                    encode_cbor(&State {
                        v: VERSION,
                        status: Status::Online,
                        time_ms: Some(wall_ms()),
                    }),
                );
                let hello_topic = self.hello_topic.clone();
                let state_topic = self.state_topic.clone();
                let hello = self.sealed(&hello_topic, self.hello.clone());
                conn.publish(Sent::Hello, &hello_topic, hello, true);
                conn.publish(Sent::Online, &state_topic, online, true);
                if self.model.profile().online {
                    if self.next_tick.is_none() {
                        // The first report right away, so the node shows up at once.
                        self.tick();
                    }
                    self.flush(conn);
                } else {
                    conn.vanishing = true;
                }
                None
            }
            Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                if let Some(kind) = conn.queued.pop_front() {
                    conn.inflight.push((pkid, kind));
                }
                None
            }
            Ok(Event::Incoming(Packet::PubAck(ack))) => {
                let pos = conn.inflight.iter().position(|(p, _)| *p == ack.pkid)?;
                let (_, kind) = conn.inflight.swap_remove(pos);
                let counter = match kind {
                    Sent::Hello => &self.shared.hellos,
                    Sent::Online | Sent::Offline => &self.shared.states,
                    Sent::Telemetry => &self.shared.telemetry,
                };
                counter.fetch_add(1, Relaxed);
                if kind == Sent::Offline {
                    match conn.leaving.as_ref().map(|l| l.end) {
                        Some(End::Shutdown) => self.shared.stopped.fetch_add(1, Relaxed),
                        _ => self.shared.offline_clean.fetch_add(1, Relaxed),
                    };
                    if conn.client.try_disconnect().is_err() {
                        return conn.leaving.take().map(|l| l.end);
                    }
                }
                if conn.vanishing && conn.queued.is_empty() && conn.inflight.is_empty() {
                    // Announced; now vanish without DISCONNECT so the will marks it offline.
                    self.shared.offline_abrupt.fetch_add(1, Relaxed);
                    return Some(End::Vanish);
                }
                self.flush(conn);
                None
            }
            Ok(Event::Outgoing(Outgoing::Disconnect)) => conn.leaving.take().map(|l| l.end),
            Ok(_) => None,
            Err(e) => {
                conn.set_connected(false);
                conn.queued.clear();
                conn.inflight.clear();
                if let Some(leave) = conn.leaving.take() {
                    return Some(leave.end);
                }
                self.shared.connection_errors.fetch_add(1, Relaxed);
                if let Ok(mut last) = self.shared.last_error.lock() {
                    *last = e.to_string();
                }
                conn.failures = conn.failures.saturating_add(1);
                let base = Duration::from_millis(500)
                    .saturating_mul(1 << conn.failures.min(6))
                    .min(MAX_BACKOFF);
                let backoff = base.mul_f64(self.rng.range(0.5, 1.5));
                debug!(node = %self.node_id(), error = %e, backoff = ?backoff, "broker connection failed");
                conn.backoff_until = Some(Instant::now() + backoff);
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_hosts_get_brackets() {
        assert_eq!(rumqttc_host("127.0.0.1"), "127.0.0.1");
        assert_eq!(rumqttc_host("broker.example"), "broker.example");
        assert_eq!(rumqttc_host("::1"), "[::1]");
    }
}
