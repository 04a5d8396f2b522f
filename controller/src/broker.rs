//! The embedded MQTT broker (rumqttd), started when no `--mqtt-url` is given.
//!
//! The controller does not read from the broker's internals: its ingest
//! connects over TCP like it would to Mosquitto, so there is one ingest path.
//! rumqttd runs its router and its listener on threads of their own that live
//! as long as the process.

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use rumqttd::{ConnectionSettings, RouterConfig, ServerSettings};
use tokio::sync::oneshot;

use crate::registry::Registry;

/// Largest MQTT payload the embedded broker accepts. Larger than the wire
/// format's limit ([`meshtable_proto::MAX_PAYLOAD`]) so that an oversized
/// report reaches ingest, is refused there and shows up in the counters,
/// instead of silently costing the sender its connection.
pub const MAX_BROKER_PAYLOAD: usize = 2 * meshtable_proto::MAX_PAYLOAD;

/// Segments of the embedded broker's in-memory log per subscription: the
/// log drops one at a time, so more segments lose less at once.
pub const SEGMENTS: usize = 8;

/// Most concurrent MQTT connections: a fleet of thousands of routers plus
/// controllers and tools.
pub const MAX_CONNECTIONS: usize = 10_000;

/// Where rumqttd's router logs a subscriber's read cursor jumping past
/// messages its in-memory log no longer holds.
const CURSOR_JUMP_TARGET: &str = "rumqttd::router::routing";

/// Messages the embedded broker dropped for ingest's subscription (see
/// [`LossCounter`]). One embedded broker per process.
static MESSAGES_LOST: AtomicU64 = AtomicU64::new(0);

/// Messages the embedded broker has dropped, since the process started, for
/// subscribers to ingest's topic filter (the controller's ingest) that fell
/// further behind than its in-memory log holds (`--mqtt-buffer`). The
/// broker had acknowledged them to their publishers. Subscribers to other
/// filters have logs of their own and are not counted.
pub fn messages_lost() -> u64 {
    MESSAGES_LOST.load(Ordering::Relaxed)
}

/// A tracing layer that counts what the embedded broker drops, into
/// [`messages_lost`].
///
/// rumqttd keeps each subscription's messages in a bounded in-memory log and
/// acknowledges a publish once it is appended; when a subscriber falls
/// further behind than the log holds, the oldest segment goes and the
/// subscriber's read cursor jumps past it. rumqttd reports that only as a
/// warning with both cursors (its alert carries no count), so this layer
/// reads the number of messages skipped off that event (cursors are
/// (segment, absolute offset)), when it concerns ingest's filter.
#[derive(Debug, Clone, Copy, Default)]
pub struct LossCounter;

impl LossCounter {
    /// The events the layer needs: rumqttd's router warnings.
    pub fn targets() -> tracing_subscriber::filter::Targets {
        tracing_subscriber::filter::Targets::new()
            .with_target(CURSOR_JUMP_TARGET, tracing::Level::WARN)
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for LossCounter {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if event.metadata().target() != CURSOR_JUMP_TARGET {
            return;
        }
        let mut cursors = Cursors::default();
        event.record(&mut cursors);
        if let (Some(from), Some(to), true) = (cursors.request, cursors.start, cursors.ingest) {
            MESSAGES_LOST.fetch_add(to.saturating_sub(from), Ordering::Relaxed);
        }
    }
}

/// The offsets of a cursor jump event's `request_cursor` (where the
/// subscriber was) and `start_cursor` (where the log now starts), and
/// whether its message (`error`: "... on FILTER") names ingest's filter.
#[derive(Default)]
struct Cursors {
    request: Option<u64>,
    start: Option<u64>,
    ingest: bool,
}

impl tracing::field::Visit for Cursors {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "error" {
            self.ingest = value
                .rsplit_once(" on ")
                .is_some_and(|(_, filter)| filter == meshtable_proto::Topic::filter(None));
        } else {
            self.record_debug(field, &value);
        }
    }

    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        let slot = match field.name() {
            "request_cursor" => &mut self.request,
            "start_cursor" => &mut self.start,
            "error" => return self.record_str(field, format!("{value:?}").trim_matches('"')),
            _ => return,
        };
        *slot = cursor_offset(&format!("{value:?}"));
    }
}

/// The offset of a cursor as rumqttd formats it: `(segment, offset)`.
fn cursor_offset(text: &str) -> Option<u64> {
    let (_, offset) = text.strip_prefix('(')?.strip_suffix(')')?.split_once(',')?;
    offset.trim().parse().ok()
}

/// Why the embedded broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// Another process listens on the address.
    #[error("--mqtt-listen {0} is already in use")]
    AddrInUse(SocketAddr),
    /// The address cannot be listened on for another reason.
    #[error("cannot listen on --mqtt-listen {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The error.
        source: io::Error,
    },
    /// The broker's thread could not be started.
    #[error("cannot start the embedded broker: {0}")]
    Thread(io::Error),
}

/// Checks that `addr` is free for the broker and returns the address it
/// will listen on: `addr` itself, or with port 0 a free port chosen now.
///
/// rumqttd binds its listener itself, so there is a short window between
/// this check and its bind; a port taken in that window makes the broker log
/// an error and the ingest connection keep retrying.
pub fn reserve(addr: SocketAddr) -> Result<SocketAddr, BrokerError> {
    match TcpListener::bind(addr) {
        Ok(l) => l
            .local_addr()
            .map_err(|source| BrokerError::Bind { addr, source }),
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => Err(BrokerError::AddrInUse(addr)),
        Err(source) => Err(BrokerError::Bind { addr, source }),
    }
}

/// rumqttd's configuration for one plain MQTT 3.1.1 listener on `addr`,
/// open to clients without a login.
pub fn broker_config(addr: SocketAddr) -> rumqttd::Config {
    broker_config_with_auth(addr, None, crate::config::DEFAULT_MQTT_BUFFER_MIB)
}

/// rumqttd's configuration for one plain MQTT 3.1.1 listener on `addr`.
/// With a registry, every client must log in: as the controller, or as an
/// enrolled node that is not revoked (see [`Registry::check_login`]).
/// `buffer_mib`: the in-memory log each subscription keeps of messages not
/// yet read, in [`SEGMENTS`] segments; a subscriber further behind loses
/// the oldest segment (counted by [`LossCounter`]).
pub fn broker_config_with_auth(
    addr: SocketAddr,
    auth: Option<Arc<Registry>>,
    buffer_mib: u32,
) -> rumqttd::Config {
    let mut connections = ConnectionSettings {
        // Time a new TCP connection gets to send its CONNECT packet.
        connection_timeout_ms: 10_000,
        max_payload_size: MAX_BROKER_PAYLOAD,
        max_inflight_count: 100,
        auth: None,
        external_auth: None,
        // A publish to a topic nobody subscribes to is dropped (retained ones
        // are kept), instead of growing a log per topic.
        dynamic_filters: false,
    };
    if let Some(registry) = auth {
        connections.set_auth_handler(move |_client_id, user: String, password: String| {
            let ok = registry.check_login(&user, &password);
            if !ok {
                tracing::warn!(
                    user = %user.chars().take(64).flat_map(char::escape_default).collect::<String>(),
                    "embedded broker refused a login"
                );
            }
            std::future::ready(ok)
        });
    }
    let server = ServerSettings {
        name: "meshtable-v4".to_owned(),
        listen: addr,
        tls: None,
        // No pause between accepts: a whole fleet reconnects at once after
        // a restart.
        next_connection_delay_ms: 0,
        connections,
    };
    let router = RouterConfig {
        max_connections: MAX_CONNECTIONS,
        max_outgoing_packet_count: 200,
        // In-memory log per subscription filter: a consumer further behind
        // than that loses the oldest segment.
        max_segment_size: ((buffer_mib as usize).saturating_mul(1024 * 1024) / SEGMENTS).max(1024),
        max_segment_count: SEGMENTS,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    rumqttd::Config {
        id: 0,
        router,
        v4: Some(HashMap::from([("1".to_owned(), server)])),
        ..rumqttd::Config::default()
    }
}

/// A running embedded broker.
#[derive(Debug)]
pub struct EmbeddedBroker {
    addr: SocketAddr,
    exited: oneshot::Receiver<()>,
}

impl EmbeddedBroker {
    /// Starts rumqttd on `addr` (a concrete address, see [`reserve`]).
    /// Clients, the ingest connection first, retry until it listens.
    pub fn start(addr: SocketAddr) -> Result<EmbeddedBroker, BrokerError> {
        EmbeddedBroker::start_with_auth(addr, None, crate::config::DEFAULT_MQTT_BUFFER_MIB)
    }

    /// [`EmbeddedBroker::start`], checking every login against `auth` when
    /// given, with `buffer_mib` of log (see [`broker_config_with_auth`]).
    pub fn start_with_auth(
        addr: SocketAddr,
        auth: Option<Arc<Registry>>,
        buffer_mib: u32,
    ) -> Result<EmbeddedBroker, BrokerError> {
        let config = broker_config_with_auth(addr, auth, buffer_mib);
        let (tx, exited) = oneshot::channel();
        std::thread::Builder::new()
            .name("meshtable-broker".to_owned())
            .spawn(move || {
                let mut broker = rumqttd::Broker::new(config);
                // Returns only when the listener thread ends, which it does
                // only when it cannot bind.
                if let Err(e) = broker.start() {
                    tracing::error!(error = %e, "embedded broker failed");
                }
                let _ = tx.send(());
            })
            .map_err(BrokerError::Thread)?;
        tracing::info!(listen = %addr, "embedded mqtt broker started");
        Ok(EmbeddedBroker { addr, exited })
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resolves if the broker stops (it only does when it fails).
    pub async fn exited(&mut self) {
        if (&mut self.exited).await.is_err() {
            // The thread ended without saying so: it panicked.
            tracing::error!("embedded broker thread ended");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layer counts the messages a cursor jump on ingest's filter
    /// skipped, as rumqttd's router logs it, and ignores other filters.
    #[test]
    fn loss_counter_reads_jumps_on_the_ingest_filter() {
        use tracing_subscriber::layer::SubscriberExt;

        let before = messages_lost();
        let subscriber = tracing_subscriber::registry().with(LossCounter);
        tracing::subscriber::with_default(subscriber, || {
            let (from, to) = ((8u64, 187_261u64), (9u64, 208_602u64));
            let filter = meshtable_proto::Topic::filter(None);
            let error = format!("Read cursor start jumped from {from:?} to {to:?} on {filter}");
            tracing::warn!(target: "rumqttd::router::routing", request_cursor = ?from, start_cursor = ?to, error);
            let error = format!("Read cursor start jumped from {from:?} to {to:?} on #");
            tracing::warn!(target: "rumqttd::router::routing", request_cursor = ?from, start_cursor = ?to, error);
            let error = format!("Read cursor start jumped from {from:?} to {to:?} on {filter}");
            tracing::warn!(target: "meshtable::elsewhere", request_cursor = ?from, start_cursor = ?to, error);
        });
        assert_eq!(messages_lost() - before, 208_602 - 187_261);
    }

    #[test]
    fn cursor_offsets_as_rumqttd_formats_them() {
        assert_eq!(cursor_offset("(9, 208602)"), Some(208602));
        assert_eq!(cursor_offset("(0,0)"), Some(0));
        assert_eq!(cursor_offset("9, 208602"), None);
        assert_eq!(cursor_offset("(9)"), None);
    }

    #[test]
    fn reserve_names_the_flag_when_busy() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let e = reserve(addr).unwrap_err().to_string();
        assert_eq!(e, format!("--mqtt-listen {addr} is already in use"));
    }

    #[test]
    fn reserve_picks_a_port_for_zero() {
        let addr = reserve("127.0.0.1:0".parse().unwrap()).unwrap();
        assert_ne!(addr.port(), 0);
    }

    #[test]
    fn config_lets_oversized_reports_through_to_ingest() {
        let c = broker_config("127.0.0.1:1883".parse().unwrap());
        let v4 = c.v4.unwrap();
        let s = v4.values().next().unwrap();
        assert!(s.connections.max_payload_size > meshtable_proto::MAX_PAYLOAD);
        assert!(c.router.max_connections >= 2_000);
    }
}
