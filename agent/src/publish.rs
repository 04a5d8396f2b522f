//! Publish: the MQTT driver. One task owns the rumqttc event loop, the
//! report spool and the collection timer.
//!
//! # Session
//!
//! Fixed client id `meshtable-<network>-<node>`, clean session off, QoS 1.
//! The last will is the offline [`meshtable_proto::State`], retained, on the
//! node's state topic. At every CONNACK the agent publishes its hello and the
//! online state (both retained), then the spooled reports.
//!
//! # Delivery
//!
//! Every report is appended to the [`Spool`] (on disk, see [`crate::spool`])
//! and leaves it only when the broker's PUBACK for it arrives, or when the
//! full spool drops it (counted). At most [`WINDOW`] reports are in flight at
//! once; the rest wait. Reports are sent in spool order, at most
//! `--spool-drain-rate` per second (a burst of that many at once), so a
//! village link that just came back is not flooded by the backlog; at the
//! usual one report per interval the limit is never reached.
//!
//! # Backfill
//!
//! A report goes out live (`backfill` absent) only on its first attempt: when
//! it was collected while connected (or while the first connection of the
//! run was being made) and is sent on that same connection. Every other
//! sending, of a report collected during an outage, one resent
//! after a lost connection, or one read back from the spool after a restart,
//! is marked `backfill: true` (the payload is decoded and encoded again with
//! the flag), so the controller never alerts on old data.
//! With `--compact`, each report leaves as a v2 compact report against the
//! one sent before it on the same connection ([`encode::Outgoing`]); the
//! first report of every connection, and any report that does not follow
//! the one before, leave in full (v1), so the controller always has the
//! predecessor a compact report needs.
//! To know which PUBACK belongs to which report, the driver notes the order
//! in which it hands publishes to the client: rumqttc writes them in that
//! order and reports each with `Outgoing::Publish(pkid)`, which binds the
//! packet id to the report; `Incoming::PubAck(pkid)` then retires it.
//!
//! # Reconnects: what rumqttc does, and what the agent does instead
//!
//! When a connection fails, rumqttc moves every unacknowledged publish, and
//! every request still in the client channel, into `EventLoop::pending`. On
//! the next connect it replays that list when the broker says the session
//! is present, and silently discards it when not (so, after a broker restart
//! without persistence, those reports would be lost).
//!
//! The agent's spool already holds every unacknowledged report, so the
//! driver empties `pending` (and any buffered collision) right after each
//! connection error, having first applied the PUBACKs rumqttc had buffered,
//! and marks all spooled reports unsent. After the next CONNACK it sends the
//! hello, the online state and then the spool from its oldest report, each
//! exactly once per connection. Thus nothing is lost whatever the broker
//! kept, nothing is queued twice inside the client, and a stale online state
//! or hello from the old connection is never replayed after the fresh one.
//! A report whose PUBACK was lost with the connection is sent again: that is
//! QoS 1's at-least-once, and the controller stores `(node, boot_id, seq)`
//! once.
//!
//! Failed connections are retried after [`Backoff`] (1 s doubling to 60 s,
//! +-50 % jitter), reset at every CONNACK. Collection continues meanwhile.
//!
//! # Sequence numbers
//!
//! Each report's `seq` comes from the [`SeqStore`], which writes the next
//! number to the state directory before the report is spooled (see
//! [`crate::state`]). A report whose number cannot be persisted is not
//! spooled, so no later run of the agent can send the same `(boot_id, seq)`.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::pin;
use std::time::Duration;

use meshtable_proto::MAX_PAYLOAD;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, Incoming, LastWill, MqttOptions, Outgoing, QoS,
};
use tokio::time::{Instant, MissedTickBehavior};
use tracing::{debug, info, warn};

use crate::backoff::Backoff;
use crate::collect::{Collector, now_ms};
use crate::config::Broker;
use crate::encode::{self, Topics};
use crate::spool::Spool;
use crate::state::SeqStore;

/// Reports in flight (handed to the client, not yet acknowledged) at most.
pub const WINDOW: usize = 10;

/// rumqttc's in-flight limit: the window plus hello, online and offline, with
/// room to spare so that packet ids never collide.
const INFLIGHT: u16 = 32;

/// How long a clean shutdown waits for the broker.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// Why publishing could not start.
#[derive(Debug, thiserror::Error)]
pub enum PublishError {
    /// The network or node id is not valid on a topic.
    #[error("invalid topic: {0}")]
    Topic(meshtable_proto::TopicError),
    /// The TLS files could not be used (`mqtts://`).
    #[cfg(feature = "tls")]
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// `mqtts://`, or TLS files, in a build without the `tls` feature.
    #[error("this agent was built without TLS; rebuild with --features tls")]
    TlsNotBuilt,
    /// The broker is `mqtts://` but no TLS files were given, or the other
    /// way round.
    #[error("mqtts:// and the TLS files (--ca-file) go together")]
    TlsMismatch,
}

/// What the publisher needs to know.
#[derive(Debug, Clone)]
pub struct PublishConfig {
    /// The broker.
    pub broker: Broker,
    /// The TLS files: given exactly when the broker is `mqtts://`.
    pub tls: Option<crate::config::TlsFiles>,
    /// Network id.
    pub network: String,
    /// Node id.
    pub node: String,
    /// Telemetry interval.
    pub interval: Duration,
    /// Reports per second sent from the spool, at most.
    pub drain_rate: u32,
    /// Signs every message (hello, state, the last will, telemetry and
    /// replays) when the router is enrolled.
    pub signer: Option<crate::enroll::Signer>,
    /// Sends telemetry as v2 compact reports with this policy (see
    /// [`encode::Outgoing`]); `None`, full v1 reports.
    pub compact: Option<meshtable_proto::CompactPolicy>,
}

/// Paces the spool's drain: at most `rate` reports per second, in bursts of
/// up to `rate` (a generic cell rate algorithm: `tat` is when the bucket
/// would be empty again).
#[derive(Debug, Clone)]
pub struct Drain {
    interval: Duration,
    burst: Duration,
    tat: Instant,
}

impl Drain {
    /// A pacer for `rate` reports per second (at least one).
    pub fn new(rate: u32, now: Instant) -> Drain {
        let rate = rate.max(1);
        let interval = Duration::from_secs(1) / rate;
        Drain {
            interval,
            burst: interval * (rate - 1),
            tat: now,
        }
    }

    /// Takes a slot at `now`, or says when the next one is free.
    pub fn take(&mut self, now: Instant) -> Result<(), Instant> {
        let tat = self.tat.max(now);
        if tat > now + self.burst {
            return Err(tat.checked_sub(self.burst).unwrap_or(now));
        }
        self.tat = tat + self.interval;
        Ok(())
    }
}

/// What a publish handed to the client was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tag {
    Hello,
    Online,
    Offline,
    /// A spooled report, by spool record id.
    Report(u64),
}

struct Driver {
    client: AsyncClient,
    signer: Option<crate::enroll::Signer>,
    topics: Topics,
    collector: Collector,
    spool: Spool,
    seqs: SeqStore,
    drain: Drain,
    /// When the drain has a slot again, if reports wait for one.
    wake: Option<Instant>,
    connected: bool,
    /// A connection was lost (or could not be made) and none made since:
    /// reports collected now wait for the broker, and are backfill.
    outage: bool,
    /// Handed to the client, not yet written (no `Outgoing::Publish` seen).
    unwritten: VecDeque<Tag>,
    /// Written with this packet id, waiting for the PUBACK.
    unacked: Vec<(u16, Tag)>,
    last_hello: Option<Vec<u8>>,
    offline_acked: bool,
    backoff: Backoff,
    /// Turns spooled reports into payloads (backfill, compaction).
    outgoing: encode::Outgoing,
}

/// The transport to the broker: TCP, or TLS (read from its files now).
fn transport(cfg: &PublishConfig) -> Result<rumqttc::Transport, PublishError> {
    match (&cfg.tls, cfg.broker.tls) {
        (None, false) => Ok(rumqttc::Transport::Tcp),
        #[cfg(feature = "tls")]
        (Some(files), true) => Ok(crate::tls::transport(files)?),
        #[cfg(not(feature = "tls"))]
        (Some(_), true) => Err(PublishError::TlsNotBuilt),
        _ => Err(PublishError::TlsMismatch),
    }
}

fn mqtt_options(cfg: &PublishConfig, topics: &Topics) -> Result<MqttOptions, PublishError> {
    let mut o = MqttOptions::new(
        encode::client_id(&cfg.network, &cfg.node),
        cfg.broker.host.clone(),
        cfg.broker.port,
    );
    o.set_clean_session(false)
        .set_keep_alive(Duration::from_secs(30))
        .set_inflight(INFLIGHT)
        .set_max_packet_size(16 * 1024, MAX_PAYLOAD + 1024)
        .set_last_will(LastWill::new(
            topics.state.clone(),
            match &cfg.signer {
                Some(s) => s.seal(&topics.state, &encode::offline(None)),
                None => encode::offline(None),
            },
            QoS::AtLeastOnce,
            true,
        ));
    if let Some((user, password)) = &cfg.broker.credentials {
        o.set_credentials(user.clone(), password.clone());
    }
    o.set_transport(transport(cfg)?);
    Ok(o)
}

/// Runs the agent against the broker until `shutdown` completes, then
/// publishes the offline state and disconnects.
pub async fn run(
    cfg: PublishConfig,
    collector: Collector,
    seqs: SeqStore,
    spool: Spool,
    shutdown: impl Future<Output = ()>,
) -> Result<(), PublishError> {
    let topics = Topics::new(&cfg.network, &cfg.node).map_err(PublishError::Topic)?;
    // The channel holds at most the window plus a few control requests.
    let (client, mut eventloop) = AsyncClient::new(mqtt_options(&cfg, &topics)?, WINDOW + 8);
    let mut driver = Driver {
        outgoing: encode::Outgoing::new(cfg.compact),
        client,
        signer: cfg.signer.clone(),
        topics,
        collector,
        spool,
        seqs,
        drain: Drain::new(cfg.drain_rate, Instant::now()),
        wake: None,
        connected: false,
        outage: false,
        unwritten: VecDeque::new(),
        unacked: Vec::new(),
        last_hello: None,
        offline_acked: false,
        backoff: Backoff::default(),
    };
    info!(
        broker = %format_args!("{}:{}", cfg.broker.host, cfg.broker.port),
        tls = cfg.broker.tls,
        network = %cfg.network,
        node = %cfg.node,
        interval = ?cfg.interval,
        seq = driver.seqs.next(),
        spool_dir = %driver.spool.dir().display(),
        spooled = driver.spool.len(),
        "agent started"
    );

    let mut ticker = tokio::time::interval(cfg.interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut shutdown = pin!(shutdown);
    let mut delay: Option<Duration> = None;
    loop {
        // The poll future lives until it completes, so rumqttc is never
        // cancelled halfway through writing a packet; ticks are handled
        // beside it.
        let result = {
            let poll = async {
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
                eventloop.poll().await
            };
            let mut poll = pin!(poll);
            loop {
                let wake = driver.wake;
                let far = Instant::now() + Duration::from_secs(3600);
                tokio::select! {
                    r = &mut poll => break Some(r),
                    _ = ticker.tick() => driver.collect(),
                    () = tokio::time::sleep_until(wake.unwrap_or(far)), if wake.is_some() => {
                        driver.wake = None;
                        driver.submit();
                    }
                    () = &mut shutdown => break None,
                }
            }
        };
        delay = None;
        match result {
            Some(Ok(event)) => driver.on_event(event, &mut eventloop),
            Some(Err(e)) => delay = Some(driver.on_error(e, &mut eventloop)),
            None => break,
        }
    }
    driver.shutdown(&mut eventloop).await;
    driver.spool.close();
    Ok(())
}

impl Driver {
    /// Collects one report and spools it, once its sequence number is
    /// persisted (write-ahead: a crash after this point cannot reuse it).
    fn collect(&mut self) {
        let mut telemetry = match self.collector.telemetry(self.seqs.next(), 0) {
            Ok(t) => t,
            Err(e) => {
                warn!(error = %e, "cannot collect a report");
                return;
            }
        };
        let seq = match self.seqs.reserve() {
            Ok(seq) => seq,
            Err(e) => {
                warn!(
                    error = %e,
                    seq = telemetry.seq,
                    "cannot persist the sequence number, report not sent"
                );
                return;
            }
        };
        debug_assert_eq!(seq, telemetry.seq);
        let appended = self.spool.append_with(!self.outage, |dropped| {
            telemetry.dropped = dropped;
            meshtable_proto::encode_cbor(&telemetry)
        });
        debug!(
            seq,
            id = appended.id,
            persisted = appended.persisted,
            spooled = self.spool.len(),
            spool_bytes = self.spool.bytes(),
            "report spooled"
        );
        for id in appended.evicted {
            warn!(
                id,
                dropped = self.spool.stats().dropped,
                "spool full, dropped the oldest report"
            );
        }
        self.submit();
    }

    fn publish(&mut self, tag: Tag, topic: &str, retain: bool, payload: Vec<u8>) -> bool {
        let payload = match &self.signer {
            Some(s) => s.seal(topic, &payload),
            None => payload,
        };
        match self
            .client
            .try_publish(topic, QoS::AtLeastOnce, retain, payload)
        {
            Ok(()) => {
                self.unwritten.push_back(tag);
                true
            }
            Err(e) => {
                warn!(error = %e, ?tag, "cannot hand a publish to the mqtt client");
                false
            }
        }
    }

    /// Hands spooled reports to the client, up to the window and the drain
    /// rate; when the rate holds them back, sets when to try again.
    fn submit(&mut self) {
        if !self.connected {
            return;
        }
        while self.spool.in_flight() < WINDOW && self.spool.has_unsent() && self.wake.is_none() {
            if let Err(at) = self.drain.take(Instant::now()) {
                self.wake = Some(at);
                break;
            }
            let Some(out) = self.spool.take_next() else {
                break;
            };
            let payload = self.outgoing.payload(out.payload, out.backfill);
            let topic = self.topics.telemetry.clone();
            if !self.publish(Tag::Report(out.id), &topic, false, payload) {
                // The client's channel is full: try again at the next PUBACK.
                self.spool.unsend(out.id);
                break;
            }
        }
    }

    fn on_connack(&mut self, session_present: bool, eventloop: &mut EventLoop) {
        self.connected = true;
        self.outage = false;
        self.backoff.reset();
        // Nothing of the old connection is replayed by rumqttc (see module docs).
        eventloop.pending.clear();
        info!(
            session_present,
            spooled = self.spool.len(),
            "connected to the broker"
        );
        match self.collector.hello() {
            Ok(h) => self.last_hello = Some(meshtable_proto::encode_cbor(&h)),
            Err(e) => warn!(error = %e, "cannot describe the router, sending the last hello"),
        }
        if let Some(hello) = self.last_hello.clone() {
            let topic = self.topics.hello.clone();
            self.publish(Tag::Hello, &topic, true, hello);
        }
        let topic = self.topics.state.clone();
        self.publish(Tag::Online, &topic, true, encode::online(now_ms()));
        self.submit();
    }

    fn on_puback(&mut self, pkid: u16) {
        let Some(i) = self.unacked.iter().position(|(p, _)| *p == pkid) else {
            debug!(pkid, "puback for an unknown packet id");
            return;
        };
        let (_, tag) = self.unacked.swap_remove(i);
        match tag {
            Tag::Report(id) => {
                if self.spool.ack(id) {
                    debug!(id, spooled = self.spool.len(), "report acknowledged");
                }
                self.submit();
            }
            Tag::Offline => self.offline_acked = true,
            Tag::Hello | Tag::Online => debug!(?tag, "acknowledged"),
        }
    }

    fn on_event(&mut self, event: Event, eventloop: &mut EventLoop) {
        match event {
            Event::Incoming(Incoming::ConnAck(ack)) => {
                self.on_connack(ack.session_present, eventloop)
            }
            Event::Incoming(Incoming::PubAck(ack)) => self.on_puback(ack.pkid),
            Event::Outgoing(Outgoing::Publish(pkid)) => match self.unwritten.pop_front() {
                Some(tag) => self.unacked.push((pkid, tag)),
                None => warn!(pkid, "publish written that the agent did not hand over"),
            },
            _ => {}
        }
    }

    /// Handles a failed poll; returns how long to wait before the next try.
    fn on_error(&mut self, error: ConnectionError, eventloop: &mut EventLoop) -> Duration {
        let was_connected = self.connected;
        self.connected = false;
        self.outage = true;
        // PUBACKs rumqttc read before the failure still count.
        let buffered: Vec<Event> = eventloop.state.events.drain(..).collect();
        for event in buffered {
            self.on_event(event, eventloop);
        }
        eventloop.pending.clear();
        eventloop.state.collision = None;
        self.unwritten.clear();
        self.unacked.clear();
        self.spool.unsend_all();
        // The next connection's first report is sent in full.
        self.outgoing.reset();
        self.wake = None;
        let retry = self.backoff.next_delay();
        if is_tls_error(&error) {
            // The broker's certificate was refused (another CA, another
            // host name), or the broker refused ours: say where to look.
            warn!(
                error = %error,
                spooled = self.spool.len(),
                retry_in = ?retry,
                "tls handshake with the broker failed: check --ca-file, the host of --mqtt-url and the client certificate"
            );
        } else if was_connected {
            warn!(error = %error, spooled = self.spool.len(), retry_in = ?retry, "lost the broker connection");
        } else {
            warn!(error = %error, spooled = self.spool.len(), retry_in = ?retry, "cannot connect to the broker");
        }
        retry
    }

    /// Publishes the offline state, waits for its PUBACK, and disconnects.
    async fn shutdown(&mut self, eventloop: &mut EventLoop) {
        if !self.connected {
            info!(
                spooled = self.spool.len(),
                "shutting down while disconnected"
            );
            return;
        }
        let topic = self.topics.state.clone();
        self.publish(Tag::Offline, &topic, true, encode::offline(Some(now_ms())));
        let deadline = Instant::now() + SHUTDOWN_TIMEOUT;
        let mut disconnecting = false;
        loop {
            let event = tokio::select! {
                r = eventloop.poll() => r,
                _ = tokio::time::sleep_until(deadline) => {
                    warn!("broker did not confirm the shutdown in time");
                    return;
                }
            };
            match event {
                Ok(Event::Outgoing(Outgoing::Disconnect)) => break,
                Ok(event) => self.on_event(event, eventloop),
                Err(e) => {
                    warn!(error = %e, "connection failed during shutdown");
                    return;
                }
            }
            if self.offline_acked && !disconnecting {
                disconnecting = true;
                if let Err(e) = self.client.try_disconnect() {
                    warn!(error = %e, "cannot disconnect");
                    return;
                }
            }
        }
        info!(
            spooled = self.spool.len(),
            "published offline state and disconnected"
        );
    }
}

/// Whether a connection failed in the TLS layer: in the handshake, or on
/// an alert the broker sent after it (TLS 1.3's `CertificateRequired`
/// arrives with the first read, wrapped in rumqttc's state and decoding
/// errors): a [`rustls::Error`] anywhere in the chain of sources.
#[cfg(feature = "tls")]
fn is_tls_error(error: &ConnectionError) -> bool {
    if matches!(error, ConnectionError::Tls(_)) {
        return true;
    }
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = next {
        // An io::Error's source is its inner error's source: look at the
        // inner error itself.
        let inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        if e.is::<rustls::Error>() || inner.is_some_and(|i| i.is::<rustls::Error>()) {
            return true;
        }
        next = e.source();
    }
    false
}

/// Whether a connection failed in the TLS layer: never without TLS.
#[cfg(not(feature = "tls"))]
fn is_tls_error(_: &ConnectionError) -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (milliseconds since start, slot taken, or when the next one is free)
    #[test]
    fn drain_paces_after_a_burst() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut d = Drain::new(5, t0);
        let steps: [(u64, Result<(), u64>); 9] = [
            (0, Ok(())),
            (0, Ok(())),
            (0, Ok(())),
            (0, Ok(())),
            (0, Ok(())),
            (0, Err(200)),
            (199, Err(200)),
            (200, Ok(())),
            (200, Err(400)),
        ];
        for (i, (now, want)) in steps.into_iter().enumerate() {
            assert_eq!(d.take(at(now)), want.map_err(at), "step {i}");
        }
        // After a quiet second the burst is back.
        for _ in 0..5 {
            assert_eq!(d.take(at(1400)), Ok(()));
        }
        assert!(d.take(at(1400)).is_err());
    }
}
