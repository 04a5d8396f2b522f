//! Ingest: MQTT -> decode -> store, acknowledged after commit.
//!
//! One path for the embedded and external brokers: a rumqttc client with a
//! fixed client id and a persistent session (`clean_session = false`),
//! subscribed at QoS 1, acknowledging by hand.
//!
//! ```text
//! event loop --(queue)--> decoder --(parts, by node)--> committer(s) --> Store
//!   polls rumqttc,          takes a batch,                stores its part in one
//!   never blocks            verifies, decodes,            transaction (retrying on
//!   (keepalive pings        splits it by node     acker   store errors)
//!   go on), writes          --(tickets, in order)-->  waits until every part of a
//!   the acks <--(acks, a batch at a time)------------ batch committed
//! ```
//!
//! The decoder takes up to [`BATCH_MAX`] messages (and [`BATCH_MAX_BYTES`])
//! at a time (what waits, plus what arrives within [`BATCH_LINGER`]) and
//! splits their reports by node among the committers: one on SQLite, which
//! has one writer anyway, [`POSTGRES_COMMITTERS`] on PostgreSQL, whose
//! transactions run side by side. A node's reports always go to the same
//! committer, so they are stored in the order they came. Each committer
//! records its part with one [`Store::record_batch`], which has the effect
//! of storing them one by one. Decoding, committing and acking run side by
//! side: while one batch commits, the next is decoded.
//!
//! Invariants:
//! - A message is acknowledged only after its batch committed (or once it is
//!   known to be bad: a refused message is counted, logged and acked with its
//!   batch, since no retry can make it good). A batch that fails is retried
//!   whole, and none of it is acked before it commits.
//! - Acks go out in the order messages arrived: the acker takes batches in
//!   order, waits for all of a batch's parts, and hands the batch's acks, in
//!   order, to the event loop, which writes them in one go; brokers
//!   (rumqttd) insist on in-order acks.
//! - A retained hello or state is recorded only when it is news (see
//!   [`retained_is_news`]), judged against the database once every earlier
//!   batch committed; so a retained message for a node that an earlier
//!   message of its own batch names starts a new batch.
//! - Nothing is dropped. When the channel is full the event loop parks
//!   messages in an overflow list and keeps polling; that list stays small
//!   because a broker sends no more unacknowledged QoS 1 messages than its
//!   in-flight window (100 for rumqttd, 20 for Mosquitto).
//! - An ack is sent on the connection the message came from: after a
//!   reconnect the broker delivers unacknowledged messages again, and an ack
//!   for the old connection would be out of order on the new one.

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use meshtable_proto::{Kind, Report, Topic};
use meshtable_store::{Incoming, Outcome, Store, StoreError};
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, MqttOptions, Packet, PubAck, PubRec, Publish,
    QoS, Request,
};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tracing::{debug, error, info, warn};

use crate::config::{Broker, Config};
use crate::metrics::Metrics;
use crate::reassemble::Reassembly;
use crate::registry::Registry;

/// Capacity of the channel between the event loop and the decoder: at
/// least the in-flight window `deploy/mosquitto/mosquitto.conf` gives the
/// controller (16000), so that the event loop never waits on the decoder.
pub const QUEUE_CAPACITY: usize = 16384;

/// Most messages in one batch: half the in-flight window the deployed
/// broker gives the controller, so that one batch fills while the other
/// commits. Per-batch and per-node work (begin, commit, reading and
/// writing each node's row, anchor and base) is shared by all of a batch's
/// reports, so a backlog (a controller catching up after a restart or an
/// outage) drains faster in large batches: 2000 against 500 measured 35 %
/// more reports/s on SQLite and 45 % on PostgreSQL, 8000 against 2000
/// another 22-34 % and 13-15 %, and 16000 no more than 8000
/// (`controller/bench/ingest.sh`, 1,000 nodes). A flood's backlog then
/// peaks at some 250 MiB of controller RSS, against 190 MiB with 2000.
pub const BATCH_MAX: usize = 8000;

/// Most payload bytes in one batch: a batch also ends once its messages
/// carry this much, so that [`BATCH_MAX`] reports of the largest size the
/// wire format allows (64 KiB) do not hold 512 MiB at once. 8000 typical
/// reports (about 2 KiB each) stay under it.
pub const BATCH_MAX_BYTES: usize = 16 * 1024 * 1024;

/// Batches of acks that wait for the event loop at most.
pub const ACK_BATCHES: usize = 2;

/// Decoded parts that wait for each committer at most.
pub const PIPELINE_DEPTH: usize = 1;

/// Committers on PostgreSQL (see the module documentation).
pub const POSTGRES_COMMITTERS: usize = 2;

/// How long the decoder waits for more messages after the first of a batch
/// (and longer while the previous batch is still being stored).
///
/// Short on purpose: a broker sends no more unacknowledged QoS 1 messages
/// than its in-flight window (100 for rumqttd, 20 for Mosquitto), and a
/// message is acked only after its batch commits, so under load the batch
/// is what arrived while the previous one was stored, and waiting longer
/// than that only idles the window. The linger gathers a burst the event loop is
/// still reading.
pub const BATCH_LINGER: Duration = Duration::from_millis(2);

/// Largest MQTT packet the ingest client reads. Far above the wire format's
/// payload limit: an oversized report must reach [`decode`] to be counted,
/// since a packet the client refuses breaks the connection, and the broker
/// would send it again after every reconnect.
pub const MAX_INCOMING_PACKET: usize = 1024 * 1024;

/// Keepalive of the ingest connection.
pub const KEEP_ALIVE: Duration = Duration::from_secs(30);

const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Why ingest could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The broker refused the subscription.
    #[error(
        "the broker refused the subscription to {filter}{hint}",
        hint = if filter.starts_with("$share/") {
            ": if it has no shared subscriptions, set --mqtt-share-group \"\""
        } else {
            ""
        }
    )]
    SubscriptionRefused {
        /// The filter.
        filter: String,
    },
    /// The ingest tasks ended before subscribing.
    #[error("ingest stopped before it subscribed")]
    Stopped,
}

/// Where ingest is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IngestStatus {
    /// Not yet connected and subscribed.
    Connecting,
    /// Subscribed at least once: messages flow.
    Subscribed,
    /// The broker refused the subscription.
    Refused,
}

/// The outcome of decoding one MQTT message.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A good report for the topic's node.
    Report(Topic, Box<Report>),
    /// A message to refuse.
    Rejected {
        /// The `reason` label (see [`crate::metrics::REJECT_REASONS`]).
        reason: &'static str,
        /// What was wrong, for the log.
        detail: String,
    },
}

/// Parses the topic and decodes the payload, checking that telemetry names
/// the topic's node. Never panics, whatever the input.
pub fn decode(topic: &str, payload: &[u8]) -> Decoded {
    let topic = match Topic::parse(topic) {
        Ok(t) => t,
        Err(e) => {
            return Decoded::Rejected {
                reason: "topic",
                detail: e.to_string(),
            };
        }
    };
    match Report::decode(topic.kind, payload) {
        Err(e) => Decoded::Rejected {
            reason: e.reason(),
            detail: e.to_string(),
        },
        Ok((Report::Telemetry(t), _)) if t.node != topic.node => Decoded::Rejected {
            reason: "node_mismatch",
            detail: format!(
                "telemetry names node {:?}",
                t.node.chars().take(80).collect::<String>()
            ),
        },
        Ok((report, _)) => Decoded::Report(topic, Box::new(report)),
    }
}

/// Whether a report the broker delivered from its retained store (because
/// ingest subscribed, not because the node just sent it) tells anything new.
///
/// Retained hello and state messages are the node's latest, which ingest
/// normally received when they were sent; recording them again would move
/// the node's `last_seen` to now, making a dead node look freshly seen. So a
/// retained copy is recorded only when the store does not know the node, or
/// knows another hello or status (it changed while this controller had no
/// session with the broker).
pub async fn retained_is_news(
    store: &Store,
    topic: &Topic,
    report: &Report,
) -> Result<bool, StoreError> {
    match report {
        Report::Hello(h) => Ok(store
            .node_detail(&topic.network, &topic.node)
            .await?
            .is_none_or(|d| d.hello.as_ref() != Some(h))),
        Report::State(st) => {
            let status = meshtable_store::NodeStatus::from(st.status);
            Ok(store
                .find_node(&topic.node, Some(&topic.network))
                .await?
                .first()
                .is_none_or(|n| n.status != status))
        }
        // Agents do not retain telemetry; a retained copy is deduplicated.
        Report::Telemetry(_) => Ok(true),
    }
}

/// Milliseconds since the Unix epoch, by the controller's clock.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// The client options of the ingest connection for `config`.
pub fn mqtt_options(config: &Config) -> MqttOptions {
    let (host, port, credentials) = match &config.broker {
        Broker::Embedded { listen } => {
            // A broker listening on all addresses is reached on loopback.
            let ip = if listen.ip().is_unspecified() {
                if listen.is_ipv4() {
                    std::net::Ipv4Addr::LOCALHOST.into()
                } else {
                    std::net::Ipv6Addr::LOCALHOST.into()
                }
            } else {
                listen.ip()
            };
            (ip.to_string(), listen.port(), None)
        }
        Broker::External {
            host,
            port,
            credentials,
        } => (host.clone(), *port, credentials.clone()),
    };
    let mut o = MqttOptions::new(config.mqtt_client_id.clone(), host, port);
    o.set_clean_session(false)
        .set_manual_acks(true)
        .set_keep_alive(KEEP_ALIVE)
        .set_max_packet_size(MAX_INCOMING_PACKET, 64 * 1024);
    if let Some((user, password)) = credentials {
        o.set_credentials(user, password);
    }
    o
}

/// How far ingest has got, for the liveness sweep: a node must not be
/// declared silent while its report waits in the queue.
#[derive(Debug, Default)]
pub struct Progress {
    /// Messages received and not yet handled.
    pending: AtomicUsize,
    /// Reception time of the first message of the oldest batch not acked.
    last_taken_ms: AtomicI64,
}

impl Progress {
    /// A time up to which every message received has been handled: `now_ms`
    /// when nothing waits, else no later than the reception time of the
    /// oldest waiting message (messages are handled in order).
    pub fn handled_until(&self, now_ms: i64) -> i64 {
        if self.pending.load(Ordering::SeqCst) == 0 {
            now_ms
        } else {
            now_ms.min(self.last_taken_ms.load(Ordering::SeqCst))
        }
    }

    /// Messages received and not yet handled.
    pub fn pending(&self) -> usize {
        self.pending.load(Ordering::SeqCst)
    }
}

/// Sets its flag when dropped: when a task ends, normally or by panic.
struct EndGuard(watch::Sender<bool>);

impl Drop for EndGuard {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

/// One received message on its way to the writer.
struct Item {
    publish: Publish,
    received_ms: i64,
    /// The connection's epoch (reconnect count) when it came.
    epoch: u64,
}

/// The running ingest pipeline.
#[derive(Debug)]
pub struct Ingest {
    client: AsyncClient,
    status: watch::Receiver<IngestStatus>,
    event_loop: JoinHandle<()>,
    /// The decoder, the committers and the acker, in the order they finish.
    writers: Vec<(&'static str, JoinHandle<()>)>,
    filter: String,
    progress: Arc<Progress>,
    ended: watch::Receiver<bool>,
}

impl Ingest {
    /// Starts the event loop, the decoder, the committers and the acker. They
    /// run until `stop` turns true and [`Ingest::shutdown`] is called.
    pub fn start(
        options: MqttOptions,
        filter: String,
        store: Store,
        metrics: Arc<Metrics>,
        registry: Arc<Registry>,
        stop: watch::Receiver<bool>,
    ) -> Ingest {
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (status_tx, status) = watch::channel(IngestStatus::Connecting);
        let progress = Arc::new(Progress {
            pending: AtomicUsize::new(0),
            last_taken_ms: AtomicI64::new(now_ms()),
        });
        let (ended_tx, ended) = watch::channel(false);
        let writer_guard = EndGuard(ended_tx.clone());
        let (client, eventloop) = AsyncClient::new(options, 64);
        let (acks_tx, acks) = mpsc::channel(ACK_BATCHES);
        let event_loop = tokio::spawn(
            EventLoopTask {
                eventloop,
                client: client.clone(),
                acks: Some(acks),
                tx: Some(tx.clone()),
                overflow: VecDeque::new(),
                epoch: 0,
                filter: filter.clone(),
                status: status_tx.clone(),
                stop: stop.clone(),
                progress: progress.clone(),
            }
            .run(EndGuard(ended_tx.clone())),
        );
        drop(tx);
        let committers = match store.backend() {
            meshtable_store::Backend::Sqlite => 1,
            meshtable_store::Backend::Postgres => POSTGRES_COMMITTERS,
        };
        let (committed_tx, committed) = watch::channel(0u64);
        let (tickets_tx, tickets) = mpsc::channel(committers * (PIPELINE_DEPTH + 1) + 1);
        let mut parts_tx = Vec::with_capacity(committers);
        let mut writers = Vec::with_capacity(committers + 2);
        let mut committer_tasks = Vec::with_capacity(committers);
        for _ in 0..committers {
            let (tx, parts) = mpsc::channel(PIPELINE_DEPTH);
            parts_tx.push(tx);
            committer_tasks.push((
                "committer",
                tokio::spawn(
                    Committer {
                        parts,
                        store: store.clone(),
                        metrics: metrics.clone(),
                        stop: stop.clone(),
                    }
                    .run(EndGuard(ended_tx.clone())),
                ),
            ));
        }
        writers.push((
            "decoder",
            tokio::spawn(
                Decoder {
                    rx,
                    store,
                    metrics,
                    registry,
                    held: None,
                    reassembly: Reassembly::new(),
                    parts: parts_tx,
                    tickets: tickets_tx,
                    sent: 0,
                    committed,
                }
                .run(EndGuard(ended_tx.clone())),
            ),
        ));
        writers.extend(committer_tasks);
        writers.push((
            "acker",
            tokio::spawn(
                Acker {
                    tickets,
                    acks: acks_tx,
                    progress: progress.clone(),
                    committed: committed_tx,
                    lost_seen: crate::broker::messages_lost(),
                }
                .run(writer_guard),
            ),
        ));
        Ingest {
            client,
            status,
            event_loop,
            writers,
            filter,
            progress,
            ended,
        }
    }

    /// How far ingest has got.
    pub fn progress(&self) -> Arc<Progress> {
        self.progress.clone()
    }

    /// Resolves when one of the ingest tasks ended: at shutdown, or when it
    /// failed.
    pub fn ended(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut ended = self.ended.clone();
        async move {
            let _ = ended.wait_for(|e| *e).await;
        }
    }

    /// Waits until the first subscription is in place.
    pub async fn subscribed(&mut self) -> Result<(), IngestError> {
        let status = self
            .status
            .wait_for(|s| *s != IngestStatus::Connecting)
            .await
            .map_err(|_| IngestError::Stopped)?;
        match *status {
            IngestStatus::Subscribed => Ok(()),
            _ => Err(IngestError::SubscriptionRefused {
                filter: self.filter.clone(),
            }),
        }
    }

    /// Finishes after `stop` turned true: the writer stores and acks what was
    /// queued, then the client disconnects. Gives up after `timeout`, leaving
    /// the rest unacknowledged for the broker to deliver again.
    pub async fn shutdown(self, timeout: Duration) {
        let Ingest {
            client,
            event_loop,
            writers,
            ..
        } = self;
        let mut aborts: Vec<_> = writers.iter().map(|(_, h)| h.abort_handle()).collect();
        aborts.push(event_loop.abort_handle());
        let finish = async {
            // The decoder ends when the event loop closes the queue, the
            // committers when the decoder is gone and their parts are
            // stored, the acker when every batch is acked.
            for (task, handle) in writers {
                if let Err(e) = handle.await {
                    error!(task, error = %e, "ingest writer failed");
                }
            }
            // Queued after the acker's last acks, which the event loop
            // writes first.
            let _ = client.disconnect().await;
            if let Err(e) = event_loop.await {
                error!(error = %e, "ingest event loop failed");
            }
        };
        if tokio::time::timeout(timeout, finish).await.is_err() {
            warn!("ingest did not finish in time, unacknowledged messages stay with the broker");
            for abort in aborts {
                abort.abort();
            }
        }
    }
}

struct EventLoopTask {
    eventloop: EventLoop,
    client: AsyncClient,
    /// The [`Acker`]'s acks, a batch at a time; `None` once it ended.
    acks: Option<mpsc::Receiver<Vec<Ack>>>,
    tx: Option<mpsc::Sender<Item>>,
    overflow: VecDeque<Item>,
    /// The connection's epoch: how many times it connected.
    epoch: u64,
    filter: String,
    status: watch::Sender<IngestStatus>,
    stop: watch::Receiver<bool>,
    progress: Arc<Progress>,
}

impl EventLoopTask {
    async fn run(mut self, _ended: EndGuard) {
        let mut backoff = BACKOFF_MIN;
        let mut failures: u32 = 0;
        let mut subscribed_once = false;
        let mut stopping = *self.stop.borrow();
        let mut overflow_warned = 0usize;
        let mut want_subscribe = false;
        loop {
            // Acks cancel a `poll` in progress, as `stop` does. Once
            // connected, that loses nothing: `poll` then waits only on
            // reads into rumqttc's buffer, on the request channel, and on
            // flushes of its write buffer, which all keep their place (this
            // client writes only the requests it takes and nothing for a
            // QoS 1 message). Acks wait while the client connects: they
            // belong to the connection that ended, and a connection attempt
            // is not to be cut short.
            let connected = self.eventloop.network.is_some();
            let event = tokio::select! {
                biased;
                _ = self.stop.changed(), if !stopping => {
                    stopping = true;
                    self.close_queue();
                    continue;
                }
                acks = recv_some(&mut self.acks), if connected => {
                    match acks {
                        Some(acks) => self.send_acks(acks).await,
                        None => self.acks = None,
                    }
                    continue;
                }
                event = self.eventloop.poll() => event,
            };
            match event {
                Ok(Event::Incoming(Packet::ConnAck(ack))) => {
                    self.epoch += 1;
                    info!(
                        session_present = ack.session_present,
                        epoch = self.epoch,
                        "mqtt connected"
                    );
                    failures = 0;
                    backoff = BACKOFF_MIN;
                    // Subscribe when the broker holds no session for us, and
                    // once per process so that the filter is the configured one.
                    if (!ack.session_present || !subscribed_once) && !stopping {
                        want_subscribe = true;
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(ack))) => {
                    let refused = ack
                        .return_codes
                        .iter()
                        .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure));
                    if refused {
                        error!(filter = %self.filter, "broker refused the subscription");
                        self.status.send_replace(IngestStatus::Refused);
                    } else {
                        info!(filter = %self.filter, "subscribed");
                        subscribed_once = true;
                        self.status.send_replace(IngestStatus::Subscribed);
                    }
                }
                Ok(Event::Incoming(Packet::Publish(publish))) => {
                    if stopping {
                        // Neither stored nor acked: the broker keeps it.
                        debug!(topic = %publish.topic, "message left to the broker at shutdown");
                    } else {
                        self.progress.pending.fetch_add(1, Ordering::SeqCst);
                        self.overflow.push_back(Item {
                            publish,
                            received_ms: now_ms(),
                            epoch: self.epoch,
                        });
                    }
                }
                Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect)) => {
                    debug!("mqtt disconnected");
                    return;
                }
                Ok(_) => {}
                Err(ConnectionError::RequestsDone) => return,
                Err(e) => {
                    failures += 1;
                    // The embedded broker may still be starting: stay quiet
                    // about the first attempts.
                    if subscribed_once || failures > 5 {
                        warn!(error = %e, retry_in = ?backoff, "mqtt connection failed");
                    } else {
                        debug!(error = %e, retry_in = ?backoff, "mqtt connection failed");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.stop.changed(), if !stopping => {
                            stopping = true;
                            self.close_queue();
                        }
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
            // Never wait on the request channel here: this task is the one
            // that empties it. When it is full, the subscription goes out
            // after the next event.
            if want_subscribe {
                match self.client.try_subscribe(&self.filter, QoS::AtLeastOnce) {
                    Ok(()) => want_subscribe = false,
                    Err(e) => {
                        debug!(error = %e, "subscription waits for room in the request queue")
                    }
                }
            }
            self.flush();
            if self.overflow.len() > overflow_warned + QUEUE_CAPACITY {
                overflow_warned = self.overflow.len();
                warn!(
                    waiting = self.overflow.len(),
                    "ingest is behind: messages wait for the store"
                );
            } else if self.overflow.is_empty() {
                overflow_warned = 0;
            }
        }
    }

    /// Writes a batch's acks to the connection and flushes them at once,
    /// where `AsyncClient::ack` would write and flush each on its own (one
    /// system call per ack for this process, and as many reads for the
    /// broker). Acks of an earlier connection are left out: the broker
    /// delivers their messages again, and an ack on this connection would
    /// be out of order. If the connection fails here, it is dropped, and
    /// the next `poll` connects again.
    async fn send_acks(&mut self, mut acks: Vec<Ack>) {
        let timeout = Duration::from_secs(self.eventloop.network_options.connection_timeout());
        let EventLoop { state, network, .. } = &mut self.eventloop;
        let Some(network) = network.as_mut() else {
            return;
        };
        let all = acks.len();
        acks.retain(|a| a.epoch == self.epoch);
        if acks.len() < all {
            debug!(
                stale = all - acks.len(),
                "not acking messages of an earlier connection"
            );
        }
        let written = async {
            for ack in &acks {
                if let Some(packet) = state.handle_outgoing_packet(ack.request())? {
                    network.write(packet).await?;
                }
            }
            network.flush().await
        };
        let failed = match tokio::time::timeout(timeout, written).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        warn!(error = %failed, "cannot send acks, reconnecting");
        self.eventloop.clean();
    }

    /// Moves waiting messages into the channel as far as it has room.
    fn flush(&mut self) {
        let Some(tx) = &self.tx else {
            return;
        };
        while let Some(item) = self.overflow.pop_front() {
            match tx.try_send(item) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(item)) => {
                    self.overflow.push_front(item);
                    return;
                }
                Err(mpsc::error::TrySendError::Closed(item)) => {
                    // The writer is gone (at shutdown, or it failed): what
                    // waits stays unacknowledged, for the broker to deliver
                    // again, and is not dropped here.
                    self.overflow.push_front(item);
                    return;
                }
            }
        }
    }

    /// At shutdown: hands what waits to the writer and closes the channel,
    /// so that the writer stores everything received so far, then ends.
    fn close_queue(&mut self) {
        if let Some(tx) = self.tx.take() {
            let rest: Vec<Item> = self.overflow.drain(..).collect();
            tokio::spawn(async move {
                for item in rest {
                    if tx.send(item).await.is_err() {
                        break;
                    }
                }
            });
        }
    }
}

/// A message the decoder took from the queue, decoded.
struct Taken {
    item: Item,
    /// The report to store, or `None` when there is nothing to store: the
    /// message was rejected (counted and logged when taken), or it is a
    /// retained copy of a report the store knows.
    report: Option<(Topic, Box<Report>)>,
}

/// A report to store: its topic, content and reception time.
type ToStore = (Topic, Box<Report>, i64);

/// One committer's share of a batch.
struct Part {
    reports: Vec<ToStore>,
    /// Sent once the part committed; dropped unsent when it never will.
    done: oneshot::Sender<()>,
}

/// A batch on its way to the acks.
struct Ticket {
    /// Its messages, in the order they came.
    items: Vec<Item>,
    /// One per part of the batch.
    parts: Vec<oneshot::Receiver<()>>,
}

/// The acknowledgement a message needs, and the connection it came on.
struct Ack {
    epoch: u64,
    pkid: u16,
    qos: QoS,
}

impl Ack {
    /// `None` for a QoS 0 message, which needs none.
    fn of(item: &Item) -> Option<Ack> {
        (item.publish.qos != QoS::AtMostOnce).then_some(Ack {
            epoch: item.epoch,
            pkid: item.publish.pkid,
            qos: item.publish.qos,
        })
    }

    fn request(&self) -> Request {
        match self.qos {
            QoS::ExactlyOnce => Request::PubRec(PubRec::new(self.pkid)),
            _ => Request::PubAck(PubAck::new(self.pkid)),
        }
    }
}

/// Receives from `rx`, or never once it is `None`.
async fn recv_some<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// Takes batches from the queue, verifies and decodes them, and hands their
/// parts to the [`Committer`]s and the batch to the [`Acker`].
struct Decoder {
    rx: mpsc::Receiver<Item>,
    store: Store,
    metrics: Arc<Metrics>,
    /// Verifies every message (network, signature, topic) before decoding.
    registry: Arc<Registry>,
    /// A message taken that starts the next batch.
    held: Option<Item>,
    /// Decodes telemetry, full or compact (see [`crate::reassemble`]).
    reassembly: Reassembly,
    /// One per committer.
    parts: Vec<mpsc::Sender<Part>>,
    tickets: mpsc::Sender<Ticket>,
    /// Batches handed over.
    sent: u64,
    /// Batches committed and acked.
    committed: watch::Receiver<u64>,
}

impl Decoder {
    async fn run(mut self, _ended: EndGuard) {
        loop {
            let first = match self.held.take() {
                Some(item) => item,
                None => match self.rx.recv().await {
                    Some(item) => item,
                    None => return,
                },
            };
            let batch = self.take_batch(first).await;
            if !self.hand_over(batch).await {
                // A committer or the acker gave up (shutdown with the store
                // failing): what was taken stays unacknowledged, with the broker.
                return;
            }
            self.sent += 1;
        }
    }

    /// Splits a batch by node among the committers, and hands it to the
    /// acker. False when one of them is gone.
    async fn hand_over(&mut self, batch: Vec<Taken>) -> bool {
        let n = self.parts.len();
        let mut shares: Vec<Vec<ToStore>> = (0..n).map(|_| Vec::new()).collect();
        let mut items = Vec::with_capacity(batch.len());
        for Taken { item, report } in batch {
            if let Some((topic, report)) = report {
                shares[committer_of(&topic, n)].push((topic, report, item.received_ms));
            }
            items.push(item);
        }
        let mut parts = Vec::new();
        for (k, reports) in shares.into_iter().enumerate() {
            if reports.is_empty() {
                continue;
            }
            let (done, rx) = oneshot::channel();
            if self.parts[k].send(Part { reports, done }).await.is_err() {
                return false;
            }
            parts.push(rx);
        }
        self.tickets.send(Ticket { items, parts }).await.is_ok()
    }

    /// Takes up to [`BATCH_MAX`] messages and [`BATCH_MAX_BYTES`] of
    /// payload: what waits, what arrives within [`BATCH_LINGER`] after the
    /// first, and what arrives while the previous batch is still being
    /// stored. A retained message for a node that an earlier message of the
    /// batch names ends the batch (it starts the next one): whether it is
    /// news depends on what the batch stores.
    async fn take_batch(&mut self, first: Item) -> Vec<Taken> {
        let deadline = tokio::time::Instant::now() + BATCH_LINGER;
        let mut nodes: HashSet<(String, String)> = HashSet::new();
        let mut batch = Vec::new();
        let mut bytes = 0;
        let mut next = Some(first);
        while let Some(item) = next.take() {
            let verified = self
                .reassembly
                .decode(
                    &self.registry,
                    &self.store,
                    &self.metrics,
                    &item.publish.topic,
                    &item.publish.payload,
                )
                .await;
            let report = match verified {
                // A redelivered compact report, stored before (counted).
                None => None,
                Some(Decoded::Rejected { reason, detail }) => {
                    self.metrics.rejected(reason);
                    self.registry
                        .log_rejected(&item.publish.topic, reason, &detail);
                    None
                }
                Some(Decoded::Report(topic, report)) => {
                    let key = (topic.network.clone(), topic.node.clone());
                    if item.publish.retain && !batch.is_empty() && nodes.contains(&key) {
                        self.held = Some(item);
                        break;
                    }
                    let news = !item.publish.retain || self.retained_is_news(&topic, &report).await;
                    if news {
                        nodes.insert(key);
                        Some((topic, report))
                    } else {
                        debug!(topic = %topic, "retained copy of a known report skipped");
                        None
                    }
                }
            };
            bytes += item.publish.payload.len();
            batch.push(Taken { item, report });
            if batch.len() >= BATCH_MAX || bytes >= BATCH_MAX_BYTES {
                break;
            }
            next = match self.rx.try_recv() {
                Ok(item) => Some(item),
                Err(mpsc::error::TryRecvError::Disconnected) => None,
                Err(mpsc::error::TryRecvError::Empty) => {
                    match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                        Ok(item) => item,
                        // Lingered: the batch is handed over once the
                        // previous one is through, and grows until then.
                        Err(_) => {
                            let sent = self.sent;
                            tokio::select! {
                                biased;
                                _ = self.committed.wait_for(|c| *c >= sent) => None,
                                item = self.rx.recv() => item,
                            }
                        }
                    }
                }
            };
        }
        batch
    }

    /// [`retained_is_news`], judged once every batch handed over before
    /// committed; on a store error, assumes it is.
    async fn retained_is_news(&mut self, topic: &Topic, report: &Report) -> bool {
        let sent = self.sent;
        // Err: the acker is gone, and this batch will not be stored.
        let _ = self.committed.wait_for(|c| *c >= sent).await;
        retained_is_news(&self.store, topic, report)
            .await
            .unwrap_or_else(|e| {
                warn!(topic = %topic, error = %e, "cannot compare a retained report, storing it");
                true
            })
    }
}

/// The committer that stores a node's reports, of `n`.
fn committer_of(topic: &Topic, n: usize) -> usize {
    use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
    let hash = BuildHasherDefault::<DefaultHasher>::default()
        .hash_one((topic.network.as_str(), topic.node.as_str()));
    usize::try_from(hash % n as u64).unwrap_or(0)
}

/// Stores parts of batches, one transaction each.
struct Committer {
    parts: mpsc::Receiver<Part>,
    store: Store,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
}

impl Committer {
    async fn run(mut self, _ended: EndGuard) {
        while let Some(part) = self.parts.recv().await {
            if !self.store_with_retry(&part.reports).await {
                // Shutting down with the store failing: leave this part and
                // the rest to the broker (the acker sees `done` dropped).
                warn!("store unavailable at shutdown, leaving queued messages unacknowledged");
                return;
            }
            let _ = part.done.send(());
        }
    }

    /// Stores the batch's reports with one [`Store::record_batch`], retrying
    /// the whole batch with backoff until it commits, and counts what each
    /// did. Returns false only when shutdown interrupts the retries.
    async fn store_with_retry(&mut self, reports: &[ToStore]) -> bool {
        let items: Vec<Incoming<'_>> = reports
            .iter()
            .map(|(topic, report, received_ms)| {
                Incoming::new(&topic.network, &topic.node, report, *received_ms)
            })
            .collect();
        let mut backoff = BACKOFF_MIN;
        loop {
            match self.store.record_batch(&items).await {
                Ok(outcomes) => {
                    for ((topic, report, _), outcome) in reports.iter().zip(outcomes) {
                        self.count(topic, report, outcome);
                    }
                    return true;
                }
                Err(e) => {
                    self.metrics.store_error();
                    error!(messages = items.len(), error = %e, retry_in = ?backoff, "cannot store reports");
                    if *self.stop.borrow() {
                        return false;
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.stop.changed() => {}
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }

    /// Counts and logs what storing one report did.
    fn count(&self, topic: &Topic, report: &Report, outcome: Outcome) {
        match outcome {
            Outcome::Inserted => {
                let kind = match report {
                    Report::Hello(_) => Kind::Hello,
                    Report::State(_) => Kind::State,
                    Report::Telemetry(_) => Kind::Telemetry,
                };
                self.metrics.stored(kind);
                debug!(network = %topic.network, node = %topic.node, kind = %kind, "report stored");
            }
            Outcome::Duplicate => {
                self.metrics.duplicate();
                debug!(network = %topic.network, node = %topic.node, "duplicate telemetry");
            }
            Outcome::Invalid(detail) => {
                // The store refuses the content itself: retrying cannot help.
                self.metrics.rejected("invalid");
                warn!(topic = %topic, reason = "invalid", error = %detail, "report rejected");
            }
        }
    }
}

/// Acks batches in the order they came, once all their parts committed.
struct Acker {
    tickets: mpsc::Receiver<Ticket>,
    /// To the [`EventLoopTask`], which writes the acks.
    acks: mpsc::Sender<Vec<Ack>>,
    progress: Arc<Progress>,
    /// Counts the batches acked, for the [`Decoder`].
    committed: watch::Sender<u64>,
    /// [`crate::broker::messages_lost`] when last logged.
    lost_seen: u64,
}

impl Acker {
    async fn run(mut self, _ended: EndGuard) {
        while let Some(ticket) = self.tickets.recv().await {
            // Every message before this batch's first is handled, and the
            // messages still waiting arrived after it.
            if let Some(first) = ticket.items.first() {
                self.progress
                    .last_taken_ms
                    .store(first.received_ms, Ordering::SeqCst);
            }
            for part in ticket.parts {
                if part.await.is_err() {
                    // A committer gave up at shutdown: this batch and the
                    // rest stay unacknowledged, with the broker.
                    return;
                }
            }
            let acks: Vec<Ack> = ticket.items.iter().filter_map(Ack::of).collect();
            if !acks.is_empty() && self.acks.send(acks).await.is_err() {
                // The event loop is gone: the broker keeps the messages.
                return;
            }
            self.progress
                .pending
                .fetch_sub(ticket.items.len(), Ordering::SeqCst);
            self.committed.send_modify(|c| *c += 1);
            let lost = crate::broker::messages_lost();
            if lost > self.lost_seen {
                error!(
                    lost = lost - self.lost_seen,
                    lost_total = lost,
                    "the embedded broker dropped reports it had acknowledged: ingest fell \
                     further behind than its in-memory log holds (raise --mqtt-buffer or use \
                     an external broker for such bursts, see README)"
                );
                self.lost_seen = lost;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use meshtable_proto::{Telemetry, encode_cbor, encode_json, examples};

    use super::*;

    /// A batch of large messages ends at [`BATCH_MAX_BYTES`], before
    /// [`BATCH_MAX`]; the rest starts the next one.
    #[tokio::test]
    async fn a_batch_ends_at_its_byte_cap() {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        let registry = Arc::new(Registry::load(store.clone()).await.unwrap());
        let (tx, rx) = mpsc::channel(QUEUE_CAPACITY);
        let (part, _parts) = mpsc::channel(1);
        let (tickets, _tickets) = mpsc::channel(1);
        let (_committed_tx, committed) = watch::channel(0);
        let mut decoder = Decoder {
            rx,
            store,
            metrics: Arc::new(Metrics::new().unwrap()),
            registry,
            held: None,
            reassembly: Reassembly::new(),
            parts: vec![part],
            tickets,
            sent: 0,
            committed,
        };
        let size = 64 * 1024;
        let fit = BATCH_MAX_BYTES / size;
        assert!(fit < BATCH_MAX);
        for i in 0..fit + 10 {
            let publish = Publish::new(
                format!("meshtable/v1/net/n{i}/telemetry"),
                QoS::AtLeastOnce,
                vec![0u8; size],
            );
            let item = Item {
                publish,
                received_ms: 0,
                epoch: 0,
            };
            tx.send(item).await.unwrap();
        }
        let first = decoder.rx.recv().await.unwrap();
        assert_eq!(decoder.take_batch(first).await.len(), fit);
        let first = decoder.rx.recv().await.unwrap();
        assert_eq!(decoder.take_batch(first).await.len(), 10);
    }

    fn telemetry(node: &str) -> Telemetry {
        Telemetry {
            node: node.to_owned(),
            ..examples::telemetry_v1()
        }
    }

    fn reason(topic: &str, payload: &[u8]) -> &'static str {
        match decode(topic, payload) {
            Decoded::Report(..) => "ok",
            Decoded::Rejected { reason, .. } => reason,
        }
    }

    #[test]
    fn decode_cases() {
        let t = encode_cbor(&telemetry("n1"));
        let hello = encode_cbor(&examples::hello_v1());
        let state = encode_json(&examples::state_offline_v1());
        let mut v9 = telemetry("n1");
        v9.v = 9;
        let mut bad_mem = telemetry("n1");
        bad_mem.mem_available = bad_mem.mem_total + 1;
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("meshtable/v1/net/n1/telemetry", t.clone(), "ok"),
            ("meshtable/v1/net/n1/hello", hello.clone(), "ok"),
            ("meshtable/v1/net/n1/state", state, "ok"),
            ("meshtable/v1/net/n2/telemetry", t.clone(), "node_mismatch"),
            ("meshtable/v1/net/n1/telemetry", vec![], "empty"),
            (
                "meshtable/v1/net/n1/telemetry",
                t[..t.len() / 2].to_vec(),
                "truncated",
            ),
            (
                "meshtable/v1/net/n1/telemetry",
                b"garbage".to_vec(),
                "malformed",
            ),
            (
                "meshtable/v1/net/n1/telemetry",
                vec![0xa1; 70_000],
                "oversized",
            ),
            (
                "meshtable/v1/net/n1/telemetry",
                encode_cbor(&v9),
                "unknown_version",
            ),
            (
                "meshtable/v1/net/n1/telemetry",
                encode_cbor(&bad_mem),
                "invalid",
            ),
            // A hello sent on the telemetry topic does not have its shape.
            ("meshtable/v1/net/n1/telemetry", hello, "malformed"),
            ("meshtable/v1/Net/n1/telemetry", t.clone(), "topic"),
            ("meshtable/v1/net/n1/bogus", t.clone(), "topic"),
            ("meshtable/v2/net/n1/telemetry", t.clone(), "topic"),
            ("other/v1/net/n1/telemetry", t, "topic"),
        ];
        for (topic, payload, want) in cases {
            assert_eq!(
                reason(topic, &payload),
                want,
                "{topic} {} bytes",
                payload.len()
            );
        }
    }

    #[test]
    fn options_are_persistent_with_manual_acks() {
        let layer = crate::config::Layer {
            mqtt_url: Some("mqtt://user:pw@broker:1884".to_owned()),
            mqtt_client_id: Some("c1".to_owned()),
            ..Default::default()
        };
        let config = Config::resolve(&layer, None).unwrap();
        let o = mqtt_options(&config);
        assert!(!o.clean_session());
        assert!(o.manual_acks());
        assert_eq!(o.client_id(), "c1");
        assert_eq!(o.broker_address(), ("broker".to_owned(), 1884));
        assert!(o.max_packet_size() > meshtable_proto::MAX_PAYLOAD);
        assert!(o.credentials().is_some());

        let embedded = Config::resolve(
            &crate::config::Layer {
                mqtt_listen: Some("0.0.0.0:1999".parse().unwrap()),
                ..Default::default()
            },
            None,
        )
        .unwrap();
        assert_eq!(
            mqtt_options(&embedded).broker_address(),
            ("127.0.0.1".to_owned(), 1999)
        );
    }

    #[test]
    fn progress_holds_the_sweep_back_while_reports_wait() {
        let now = 1_800_000_000_000;
        // (pending, reception time of the message taken last, expected)
        let cases = [
            (0, now - 5_000, now),
            (2, now - 5_000, now - 5_000),
            (1, now + 5_000, now),
        ];
        for (pending, taken, want) in cases {
            let p = Progress {
                pending: AtomicUsize::new(pending),
                last_taken_ms: AtomicI64::new(taken),
            };
            assert_eq!(p.handled_until(now), want, "{pending} {taken}");
        }
    }

    #[test]
    fn a_node_always_goes_to_one_committer_and_nodes_spread() {
        let topic =
            |node: &str| Topic::parse(&format!("meshtable/v1/net/{node}/telemetry")).unwrap();
        for n in [1, 2, 3] {
            let mut used = vec![0usize; n];
            for i in 0..300 {
                let t = topic(&format!("node{i}"));
                let k = committer_of(&t, n);
                assert_eq!(k, committer_of(&t, n), "{i}");
                used[k] += 1;
            }
            // 300 nodes: every committer gets a fair share (binomial, far
            // from the bound).
            assert!(used.iter().all(|&u| u >= 300 / n / 2), "{n}: {used:?}");
        }
    }

    #[test]
    fn refused_shared_subscription_explains_the_fix() {
        let e = IngestError::SubscriptionRefused {
            filter: "$share/g/meshtable/v1/+/+/+".to_owned(),
        };
        assert!(
            e.to_string().ends_with("set --mqtt-share-group \"\""),
            "{e}"
        );
        let e = IngestError::SubscriptionRefused {
            filter: "meshtable/v1/+/+/+".to_owned(),
        };
        assert_eq!(
            e.to_string(),
            "the broker refused the subscription to meshtable/v1/+/+/+"
        );
    }
}
