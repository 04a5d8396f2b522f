//! The node registry in memory: which networks exist and accept unsigned
//! reports, and every enrolled node's public key, network, broker password
//! hash and revocation. Ingest verifies every report against it before it
//! decodes one; the embedded broker checks logins against it.
//!
//! ```text
//! MQTT message --> Registry::decode: topic --> network exists?
//!                    --> envelope? --> signer enrolled, not revoked, signature good,
//!                                      topic is the signer's own
//!                    --> bare: the network accepts unsigned and the topic's node
//!                              is not enrolled
//!                    --> ingest::decode of the message inside
//! ```
//!
//! Freshness: the registry is a snapshot of the store, read at start, after
//! every change this controller makes (enrollment, revocation, network add),
//! every [`REFRESH_INTERVAL`], and when a report names a network or signer
//! the snapshot does not know (at most once per [`MISS_RELOAD_INTERVAL`]).
//! So a revocation stops reports at once on the controller that made it,
//! and within [`REFRESH_INTERVAL`] on the other replicas and after a
//! `meshtable node revoke` from the command line.
//!
//! Floods: a network or signer that a reload has just confirmed unknown is
//! remembered for [`NEGATIVE_TTL`] (at most [`NEGATIVE_CAPACITY`] names),
//! so a misconfigured or hostile router that keeps reporting for it costs
//! no further reload; every one of its messages is still refused and
//! counted by ingest. [`Registry::log_rejected`] logs a refusal at most once
//! per [`REJECT_LOG_INTERVAL`] per (reason, network, node), with the number
//! of refusals it left out. Time comes from a clock the tests can drive
//! ([`Registry::with_clock`]).
//!
//! Changes: every reload that changes the broker's view of the nodes (who
//! is enrolled, their password hash, revocation) and every
//! [`Registry::mark_revoked`] bumps a version ([`Registry::changes`]); the
//! Mosquitto export ([`crate::mosquitto::MosquittoSync`]) follows it, and
//! [`Registry::broker_synced`] waits for it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use meshtable_proto::Topic;
use meshtable_proto::sign::{self, Opened, VerifyingKey};
use meshtable_store::Store;
use meshtable_store::registry::RegistryError;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::{debug, warn};

use crate::ingest::{Decoded, decode};

/// How often the snapshot is read again from the store, to learn what other
/// controllers (or the command line) changed.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(5);

/// Least time between two reloads caused by an unknown network or signer,
/// so that a flood of reports for unknown networks costs one query a second.
pub const MISS_RELOAD_INTERVAL: Duration = Duration::from_secs(1);

/// How long a network or signer that a reload confirmed unknown is refused
/// without another reload. A name created meanwhile is still learnt by the
/// periodic refresh ([`REFRESH_INTERVAL`]), or at once when it is created
/// through this controller.
pub const NEGATIVE_TTL: Duration = Duration::from_secs(30);

/// Most names kept in the negative cache; beyond, a miss costs a reload
/// again (still at most one per [`MISS_RELOAD_INTERVAL`]).
pub const NEGATIVE_CAPACITY: usize = 4096;

/// A refused report is logged at most once per this period per (reason,
/// network, node); the line after the period says how many were left out.
pub const REJECT_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Most (reason, network, node) keys the rejection log tracks; refusals
/// beyond share one key.
pub const REJECT_LOG_CAPACITY: usize = 4096;

/// Every `reason` label this module gives `meshtable_ingest_rejected_total`.
pub const REJECT_REASONS: [&str; 8] = [
    "unknown_network",
    "unsigned",
    "bad_envelope",
    "bad_signature",
    "unknown_node",
    "revoked",
    "foreign_topic",
    "wrong_network",
];

#[derive(Clone, PartialEq)]
struct NodeEntry {
    network: String,
    key: Option<VerifyingKey>,
    revoked: bool,
    password_hash: String,
}

#[derive(Default)]
struct Snapshot {
    /// Network id -> accepts unsigned reports.
    networks: HashMap<String, bool>,
    /// Node id -> entry (node ids of enrolled nodes are unique across networks).
    nodes: HashMap<String, NodeEntry>,
}

impl Snapshot {
    /// Whether the broker's view of the nodes (enrolled, password hash,
    /// revoked) is the same in both.
    fn same_credentials(&self, other: &Snapshot) -> bool {
        self.nodes.len() == other.nodes.len()
            && self.nodes.iter().all(|(id, a)| {
                other.nodes.get(id).is_some_and(|b| {
                    a.network == b.network
                        && a.password_hash == b.password_hash
                        && a.revoked == b.revoked
                })
            })
    }

    /// The first name of a message this snapshot does not know: its
    /// network, else its signer.
    fn missing(&self, network: &str, signer: Option<&str>) -> Option<Miss> {
        if !self.networks.contains_key(network) {
            return Some(Miss::Network(network.to_owned()));
        }
        signer
            .filter(|s| !self.nodes.contains_key(*s))
            .map(|s| Miss::Signer(s.to_owned()))
    }
}

/// A name a message carried that the registry does not know.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Miss {
    Network(String),
    Signer(String),
}

/// The miss-reload limit and the negative cache.
#[derive(Default)]
struct MissState {
    last_reload: Option<Instant>,
    /// Name -> refused without a reload until then.
    negative: HashMap<Miss, Instant>,
}

impl MissState {
    fn is_known_unknown(&self, miss: &Miss, now: Instant) -> bool {
        self.negative.get(miss).is_some_and(|until| now < *until)
    }

    fn remember(&mut self, miss: Miss, now: Instant) {
        if self.negative.len() >= NEGATIVE_CAPACITY && !self.negative.contains_key(&miss) {
            self.negative.retain(|_, until| now < *until);
            if self.negative.len() >= NEGATIVE_CAPACITY {
                return;
            }
        }
        self.negative.insert(miss, now + NEGATIVE_TTL);
    }
}

/// Where the registry's time comes from (tests drive it).
pub type Clock = Arc<dyn Fn() -> Instant + Send + Sync>;

/// One enrolled, unrevoked node as the broker sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerCredential {
    /// The node id, its broker user name.
    pub node: String,
    /// Its network.
    pub network: String,
    /// Its password as a Mosquitto `$7$` hash.
    pub password_hash: String,
}

/// The in-memory registry. Share it behind an `Arc`.
pub struct Registry {
    store: Store,
    snapshot: RwLock<Arc<Snapshot>>,
    misses: Mutex<MissState>,
    clock: Clock,
    reloads: AtomicU64,
    reject_log: RejectLog,
    /// Bumped when the broker's view of the nodes changes.
    changes: watch::Sender<u64>,
    /// The version an attached broker export has written.
    broker_export: OnceLock<watch::Receiver<u64>>,
    /// The controller's own broker login for the embedded broker (user, password).
    controller_login: Option<(String, String)>,
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.current();
        f.debug_struct("Registry")
            .field("networks", &s.networks.len())
            .field("nodes", &s.nodes.len())
            .finish_non_exhaustive()
    }
}

/// Why a message was refused by the registry.
fn reject(reason: &'static str, detail: impl Into<String>) -> Decoded {
    Decoded::Rejected {
        reason,
        detail: detail.into(),
    }
}

impl Registry {
    /// Reads the registry from the store.
    pub async fn load(store: Store) -> Result<Registry, RegistryError> {
        let clock: Clock = Arc::new(Instant::now);
        let r = Registry {
            store,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            misses: Mutex::new(MissState::default()),
            reject_log: RejectLog::new(clock.clone()),
            clock,
            reloads: AtomicU64::new(0),
            changes: watch::channel(0).0,
            broker_export: OnceLock::new(),
            controller_login: None,
        };
        r.reload().await?;
        Ok(r)
    }

    /// Sets the controller's own login at the embedded broker.
    pub fn with_controller_login(mut self, user: String, password: String) -> Registry {
        self.controller_login = Some((user, password));
        self
    }

    /// Takes time from `clock` instead of [`Instant::now`] (tests).
    pub fn with_clock(mut self, clock: Clock) -> Registry {
        self.reject_log = RejectLog::new(clock.clone());
        self.clock = clock;
        self
    }

    /// How many times the registry was read from the store.
    pub fn reload_count(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// The version of the broker's view of the nodes: it changes whenever a
    /// node is enrolled, changes password or is revoked.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Every enrolled, unrevoked node as the broker sees it, by node id.
    pub fn broker_credentials(&self) -> Vec<BrokerCredential> {
        let snap = self.current();
        let mut out: Vec<BrokerCredential> = snap
            .nodes
            .iter()
            .filter(|(_, e)| !e.revoked)
            .map(|(id, e)| BrokerCredential {
                node: id.clone(),
                network: e.network.clone(),
                password_hash: e.password_hash.clone(),
            })
            .collect();
        out.sort_by(|a, b| a.node.cmp(&b.node));
        out
    }

    /// Attaches a broker export that reports the version of
    /// [`Registry::changes`] it wrote last (only the first is kept).
    pub fn attach_broker_export(&self, exported: watch::Receiver<u64>) {
        let _ = self.broker_export.set(exported);
    }

    /// Waits, at most `timeout`, until the attached broker export has
    /// written the registry as it is now; at once `true` without one.
    /// Enrollment and revocation answer after it, so a new router can log
    /// in to Mosquitto at once and a revoked one cannot.
    pub async fn broker_synced(&self, timeout: Duration) -> bool {
        let Some(rx) = self.broker_export.get() else {
            return true;
        };
        let want = *self.changes.borrow();
        let mut rx = rx.clone();
        matches!(
            tokio::time::timeout(timeout, rx.wait_for(|v| *v >= want)).await,
            Ok(Ok(_))
        )
    }

    /// Logs a refused report: at most once per [`REJECT_LOG_INTERVAL`] per
    /// (reason, network, node), saying how many it left out since the
    /// last line. Count every refusal separately (ingest does).
    pub fn log_rejected(&self, topic: &str, reason: &'static str, detail: &str) {
        let key = match Topic::parse(topic) {
            Ok(t) => format!("{reason}/{}/{}", t.network, t.node),
            Err(_) => reason.to_owned(),
        };
        match self.reject_log.decide(&key) {
            LogDecision::Log { suppressed } => warn!(
                topic = %escape_topic(topic),
                reason,
                error = %detail,
                suppressed,
                "report rejected"
            ),
            LogDecision::Suppress => {
                debug!(topic = %escape_topic(topic), reason, "report rejected")
            }
        }
    }

    /// The store behind it.
    pub fn store(&self) -> &Store {
        &self.store
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Reads networks and nodes from the store again.
    pub async fn reload(&self) -> Result<(), RegistryError> {
        self.reloads.fetch_add(1, Ordering::Relaxed);
        let networks = self.store.network_trust().await?;
        let keys = self.store.node_keys().await?;
        let mut snap = Snapshot::default();
        for n in networks {
            snap.networks.insert(n.id, n.accept_unsigned);
        }
        for k in keys {
            let key = sign::verifying_key_from_hex(&k.public_key).ok();
            if key.is_none() {
                warn!(node = %k.node, "enrolled node has an unusable public key");
            }
            snap.nodes.insert(
                k.node,
                NodeEntry {
                    network: k.network,
                    key,
                    revoked: k.revoked_ms.is_some(),
                    password_hash: k.mqtt_password_hash,
                },
            );
        }
        let changed = {
            let mut guard = self
                .snapshot
                .write()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let changed = !guard.same_credentials(&snap);
            *guard = Arc::new(snap);
            changed
        };
        if changed {
            self.changes.send_modify(|v| *v += 1);
        }
        Ok(())
    }

    /// Marks a node revoked in memory at once (the store is changed by the
    /// caller); the next reload confirms it.
    pub fn mark_revoked(&self, node: &str) {
        let mut guard = self
            .snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if guard.nodes.get(node).is_some_and(|n| !n.revoked) {
            let mut nodes = guard.nodes.clone();
            if let Some(n) = nodes.get_mut(node) {
                n.revoked = true;
            }
            *guard = Arc::new(Snapshot {
                networks: guard.networks.clone(),
                nodes,
            });
            drop(guard);
            self.changes.send_modify(|v| *v += 1);
        }
    }

    /// Reloads after a miss, unless a reload confirmed `miss` unknown
    /// within [`NEGATIVE_TTL`], and at most once per
    /// [`MISS_RELOAD_INTERVAL`]. A name still unknown after the reload is
    /// remembered. Returns whether it reloaded.
    async fn reload_on_miss(&self, miss: &Miss, network: &str, signer: Option<&str>) -> bool {
        {
            let mut m = self
                .misses
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = (self.clock)();
            if m.is_known_unknown(miss, now)
                || m.last_reload
                    .is_some_and(|t| now.saturating_duration_since(t) < MISS_RELOAD_INTERVAL)
            {
                return false;
            }
            m.last_reload = Some(now);
        }
        match self.reload().await {
            Ok(()) => {
                if let Some(still) = self.current().missing(network, signer) {
                    let now = (self.clock)();
                    self.misses
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .remember(still, now);
                }
                true
            }
            Err(e) => {
                warn!(error = %e, "cannot reload the node registry");
                false
            }
        }
    }

    /// Checks a message against the registry, then decodes the message
    /// inside ([`crate::ingest::decode`]). Never panics, whatever the input.
    pub async fn decode(&self, topic: &str, payload: &[u8]) -> Decoded {
        self.decode_with(topic, payload, decode).await
    }

    /// [`Registry::decode`], the message inside decoded by `decode` (ingest
    /// passes its telemetry reassembler, see [`crate::reassemble`]).
    pub async fn decode_with(
        &self,
        topic: &str,
        payload: &[u8],
        decode: impl FnOnce(&str, &[u8]) -> Decoded,
    ) -> Decoded {
        let parsed = match Topic::parse(topic) {
            Ok(t) => t,
            // ingest's decode names the topic's fault.
            Err(_) => return decode(topic, payload),
        };
        let opened = match sign::open(payload) {
            Ok(o) => o,
            Err(e) => return reject(e.reason(), e.to_string()),
        };
        let mut snap = self.current();
        let signer = match opened {
            Opened::Signed { signer, .. } => Some(signer),
            Opened::Unsigned(_) => None,
        };
        if let Some(miss) = snap.missing(&parsed.network, signer)
            && self.reload_on_miss(&miss, &parsed.network, signer).await
        {
            snap = self.current();
        }
        match check(&snap, &parsed, topic, opened) {
            Ok(inner) => decode(topic, inner),
            Err(rejected) => rejected,
        }
    }

    /// Whether `user` may log in to the embedded broker with `password`:
    /// the controller's own login, or an enrolled, unrevoked node's. Reads
    /// the snapshot only (it runs on the broker's threads): a node enrolled
    /// through another controller can log in after the next refresh.
    pub fn check_login(&self, user: &str, password: &str) -> bool {
        if let Some((u, p)) = &self.controller_login
            && u == user
        {
            return constant_time_eq(p.as_bytes(), password.as_bytes());
        }
        let snap = self.current();
        let Some(entry) = snap.nodes.get(user) else {
            debug!(user = %escape(user), "broker login of an unknown user refused");
            return false;
        };
        if entry.revoked {
            debug!(node = %user, "broker login of a revoked node refused");
            return false;
        }
        crate::mosquitto::verify_password(&entry.password_hash, password)
    }

    /// Re-reads the registry every `every` until `stop` turns true.
    pub fn spawn_refresh(
        self: Arc<Self>,
        every: Duration,
        mut stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(e) = self.reload().await {
                            warn!(error = %e, "cannot refresh the node registry");
                        }
                    }
                    r = stop.changed() => {
                        if r.is_err() || *stop.borrow() {
                            return;
                        }
                    }
                }
            }
        })
    }
}

/// The registry's rules for one message; `Ok` with the message inside.
fn check<'a>(
    snap: &Snapshot,
    topic: &Topic,
    raw_topic: &str,
    opened: Opened<'a>,
) -> Result<&'a [u8], Decoded> {
    let Some(&accept_unsigned) = snap.networks.get(&topic.network) else {
        return Err(reject(
            "unknown_network",
            format!(
                "no network {}: create it with meshtable network add",
                topic.network
            ),
        ));
    };
    match opened {
        Opened::Unsigned(inner) => {
            let enrolled_here = snap
                .nodes
                .get(&topic.node)
                .is_some_and(|n| n.network == topic.network);
            if enrolled_here {
                Err(reject("unsigned", "unsigned report for an enrolled node"))
            } else if accept_unsigned {
                Ok(inner)
            } else {
                Err(reject(
                    "unsigned",
                    "unsigned report in a network that accepts signed reports only",
                ))
            }
        }
        Opened::Signed {
            signer,
            payload,
            signature,
        } => {
            let Some(entry) = snap.nodes.get(signer) else {
                return Err(reject(
                    "unknown_node",
                    format!("signed by {signer}, which is not enrolled"),
                ));
            };
            let Some(key) = &entry.key else {
                return Err(reject(
                    "bad_signature",
                    format!("{signer} has no usable key"),
                ));
            };
            if let Err(e) = sign::verify(key, raw_topic, payload, &signature) {
                return Err(reject(
                    e.reason(),
                    format!("claims to be signed by {signer}"),
                ));
            }
            if entry.revoked {
                return Err(reject("revoked", format!("{signer} is revoked")));
            }
            if entry.network != topic.network {
                return Err(reject(
                    "wrong_network",
                    format!(
                        "{signer} of network {} published in another network",
                        entry.network
                    ),
                ));
            }
            if signer != topic.node {
                return Err(reject(
                    "foreign_topic",
                    format!("{signer} published on the topic of another node"),
                ));
            }
            Ok(payload)
        }
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// A user name for a log line: at most 64 characters, escaped.
fn escape(s: &str) -> String {
    s.chars().take(64).flat_map(char::escape_default).collect()
}

/// A topic for a log line: at most 200 characters, escaped.
fn escape_topic(s: &str) -> String {
    s.chars().take(200).flat_map(char::escape_default).collect()
}

/// What [`RejectLog::decide`] says about one refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogDecision {
    /// Log it, saying how many refusals of its key were left out before.
    Log {
        /// Refusals of the key not logged since its last line.
        suppressed: u64,
    },
    /// Leave it out (it is counted for the next line).
    Suppress,
}

/// Per-key log rate limit: one line per key per [`REJECT_LOG_INTERVAL`],
/// keys bounded by [`REJECT_LOG_CAPACITY`] (keys beyond share one).
pub struct RejectLog {
    clock: Clock,
    windows: Mutex<HashMap<String, LogWindow>>,
}

struct LogWindow {
    started: Instant,
    suppressed: u64,
}

/// The key that refusals share once [`REJECT_LOG_CAPACITY`] keys are taken.
const OVERFLOW_KEY: &str = "*";

impl RejectLog {
    /// A rate limit on `clock`.
    pub fn new(clock: Clock) -> RejectLog {
        RejectLog {
            clock,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Whether to log a refusal of `key` now.
    pub fn decide(&self, key: &str) -> LogDecision {
        let now = (self.clock)();
        let mut w = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut key = key;
        if !w.contains_key(key) && w.len() >= REJECT_LOG_CAPACITY {
            // Windows that ended can go (with their count, under this pressure).
            w.retain(|_, v| now.saturating_duration_since(v.started) < REJECT_LOG_INTERVAL);
            if w.len() >= REJECT_LOG_CAPACITY {
                key = OVERFLOW_KEY;
            }
        }
        match w.get_mut(key) {
            None => {
                w.insert(
                    key.to_owned(),
                    LogWindow {
                        started: now,
                        suppressed: 0,
                    },
                );
                LogDecision::Log { suppressed: 0 }
            }
            Some(v) if now.saturating_duration_since(v.started) >= REJECT_LOG_INTERVAL => {
                let suppressed = std::mem::take(&mut v.suppressed);
                v.started = now;
                LogDecision::Log { suppressed }
            }
            Some(v) => {
                v.suppressed += 1;
                LogDecision::Suppress
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use meshtable_proto::sign::SigningKey;
    use meshtable_proto::{encode_cbor, examples};

    use super::*;

    fn snapshot() -> Snapshot {
        let mut s = Snapshot::default();
        s.networks.insert("open".to_owned(), true);
        s.networks.insert("closed".to_owned(), false);
        for (node, net, seed, revoked) in [
            ("a", "closed", 1u8, false),
            ("b", "closed", 2, false),
            ("r", "closed", 3, true),
            ("o", "open", 4, false),
        ] {
            s.nodes.insert(
                node.to_owned(),
                NodeEntry {
                    network: net.to_owned(),
                    key: Some(SigningKey::from_bytes(&[seed; 32]).verifying_key()),
                    revoked,
                    password_hash: String::new(),
                },
            );
        }
        s
    }

    fn outcome(snap: &Snapshot, topic: &str, bytes: &[u8]) -> &'static str {
        let t = Topic::parse(topic).unwrap();
        match sign::open(bytes) {
            Err(e) => e.reason(),
            Ok(o) => match check(snap, &t, topic, o) {
                Ok(_) => "ok",
                Err(Decoded::Rejected { reason, .. }) => reason,
                Err(Decoded::Report(..)) => "report",
            },
        }
    }

    /// A clock the test moves by hand, and its hand.
    fn manual_clock() -> (Clock, Arc<Mutex<Duration>>) {
        let base = Instant::now();
        let offset = Arc::new(Mutex::new(Duration::ZERO));
        let o = offset.clone();
        (Arc::new(move || base + *o.lock().unwrap()), offset)
    }

    fn advance(hand: &Mutex<Duration>, by: Duration) {
        *hand.lock().unwrap() += by;
    }

    fn reason(d: &Decoded) -> &'static str {
        match d {
            Decoded::Report(..) => "ok",
            Decoded::Rejected { reason, .. } => reason,
        }
    }

    async fn store_with(networks: &[(&str, bool)]) -> Store {
        let store = Store::connect("sqlite::memory:").await.unwrap();
        for (id, unsigned) in networks {
            store.add_network(id, *unsigned, "salt", 0).await.unwrap();
        }
        store
    }

    /// Enrolls `node` (key from `seed`) in `network` through the store.
    async fn enroll_in_store(store: &Store, network: &str, node: &str, seed: u8) {
        let token_hash = format!("{node}-token");
        store
            .create_enroll_token(&meshtable_store::registry::NewEnrollToken {
                token_hash: &token_hash,
                network,
                site: None,
                created_ms: 0,
                expires_ms: i64::MAX,
            })
            .await
            .unwrap();
        let key = SigningKey::from_bytes(&[seed; 32]).verifying_key();
        store
            .enroll(
                &token_hash,
                &meshtable_store::registry::NewNodeKey {
                    node,
                    public_key: &sign::to_hex(key.as_bytes()),
                    mqtt_password_hash: &format!("$7$101$c2FsdA==${node}"),
                    hostname: None,
                },
                1,
            )
            .await
            .unwrap();
    }

    /// A flood for an unknown network or signer costs one reload per
    /// name and [`NEGATIVE_TTL`], however many messages and however the
    /// miss limit allows; every message is still refused.
    #[tokio::test]
    async fn negative_cache_spares_reloads_in_a_flood() {
        let store = store_with(&[("net", false)]).await;
        let (clock, hand) = manual_clock();
        let registry = Registry::load(store.clone())
            .await
            .unwrap()
            .with_clock(clock);
        assert_eq!(registry.reload_count(), 1);
        let state = encode_cbor(&examples::state_online_v1());
        let flood = |topic: String, payload: Vec<u8>, want: &'static str| {
            let registry = &registry;
            async move {
                for _ in 0..500 {
                    assert_eq!(reason(&registry.decode(&topic, &payload).await), want);
                }
            }
        };
        let ghost = "meshtable/v1/ghost/n1/state".to_owned();

        // The first message reloads once; the rest of the flood does not.
        flood(ghost.clone(), state.clone(), "unknown_network").await;
        assert_eq!(registry.reload_count(), 2);
        // Past the miss limit, within the negative cache: still none.
        advance(&hand, MISS_RELOAD_INTERVAL * 2);
        flood(ghost.clone(), state.clone(), "unknown_network").await;
        assert_eq!(registry.reload_count(), 2);

        // Another name is another miss: one reload, then cached too.
        flood(
            "meshtable/v1/ghost2/n1/state".to_owned(),
            state.clone(),
            "unknown_network",
        )
        .await;
        assert_eq!(registry.reload_count(), 3);

        // An unknown signer in a known network, likewise.
        advance(&hand, MISS_RELOAD_INTERVAL * 2);
        let topic = "meshtable/v1/net/zz/state".to_owned();
        let forged = sign::seal(&SigningKey::from_bytes(&[9; 32]), "zz", &topic, &state);
        flood(topic, forged, "unknown_node").await;
        assert_eq!(registry.reload_count(), 4);

        // Once the entry expires, the name costs one reload again.
        advance(&hand, NEGATIVE_TTL);
        flood(ghost.clone(), state.clone(), "unknown_network").await;
        assert_eq!(registry.reload_count(), 5);

        // A network created meanwhile (elsewhere) is learnt by the
        // periodic refresh, whatever the cache says.
        store.add_network("ghost", true, "salt", 0).await.unwrap();
        assert_eq!(
            reason(&registry.decode(&ghost, &state).await),
            "unknown_network"
        );
        registry.reload().await.unwrap();
        assert_eq!(reason(&registry.decode(&ghost, &state).await), "ok");
    }

    /// The miss limit still holds for names never seen: one reload per
    /// [`MISS_RELOAD_INTERVAL`] however many new names arrive.
    #[tokio::test]
    async fn new_names_share_the_miss_limit() {
        let store = store_with(&[]).await;
        let (clock, hand) = manual_clock();
        let registry = Registry::load(store).await.unwrap().with_clock(clock);
        let state = encode_cbor(&examples::state_online_v1());
        for i in 0..200 {
            let topic = format!("meshtable/v1/ghost{i}/n1/state");
            assert_eq!(
                reason(&registry.decode(&topic, &state).await),
                "unknown_network"
            );
        }
        assert_eq!(registry.reload_count(), 2);
        advance(&hand, MISS_RELOAD_INTERVAL);
        let _ = registry.decode("meshtable/v1/other/n1/state", &state).await;
        assert_eq!(registry.reload_count(), 3);
    }

    #[test]
    fn topics_in_logs_are_escaped_and_short() {
        assert_eq!(escape_topic("a\nb"), "a\\nb");
        assert_eq!(escape_topic(&"x".repeat(500)).len(), 200);
    }

    #[test]
    fn rejection_log_once_per_interval_per_key() {
        let (clock, hand) = manual_clock();
        let log = RejectLog::new(clock);
        assert_eq!(log.decide("a"), LogDecision::Log { suppressed: 0 });
        for _ in 0..99 {
            assert_eq!(log.decide("a"), LogDecision::Suppress);
        }
        assert_eq!(log.decide("b"), LogDecision::Log { suppressed: 0 });
        advance(&hand, REJECT_LOG_INTERVAL - Duration::from_secs(1));
        assert_eq!(log.decide("a"), LogDecision::Suppress);
        advance(&hand, Duration::from_secs(1));
        assert_eq!(log.decide("a"), LogDecision::Log { suppressed: 100 });
        assert_eq!(log.decide("a"), LogDecision::Suppress);
        advance(&hand, REJECT_LOG_INTERVAL);
        assert_eq!(log.decide("a"), LogDecision::Log { suppressed: 1 });
        assert_eq!(log.decide("b"), LogDecision::Log { suppressed: 0 });
    }

    /// Keys are bounded: beyond the capacity, new keys share one window
    /// until old windows end.
    #[test]
    fn rejection_log_keys_are_bounded() {
        let (clock, hand) = manual_clock();
        let log = RejectLog::new(clock);
        for i in 0..REJECT_LOG_CAPACITY {
            assert_eq!(
                log.decide(&format!("k{i}")),
                LogDecision::Log { suppressed: 0 }
            );
        }
        assert_eq!(log.decide("new1"), LogDecision::Log { suppressed: 0 });
        assert_eq!(log.decide("new2"), LogDecision::Suppress);
        assert!(log.windows.lock().unwrap().len() <= REJECT_LOG_CAPACITY + 1);
        advance(&hand, REJECT_LOG_INTERVAL);
        assert_eq!(log.decide("new3"), LogDecision::Log { suppressed: 0 });
        assert!(log.windows.lock().unwrap().len() <= 2);
    }

    /// The change version moves with the broker's view of the nodes only,
    /// and the credentials leave revoked nodes out.
    #[tokio::test]
    async fn changes_follow_credentials() {
        let store = store_with(&[("net", false)]).await;
        let registry = Registry::load(store.clone()).await.unwrap();
        let changes = registry.changes();
        let v0 = *changes.borrow();
        assert!(registry.broker_credentials().is_empty());
        registry.reload().await.unwrap();
        assert_eq!(*changes.borrow(), v0, "nothing changed");

        enroll_in_store(&store, "net", "aa", 1).await;
        enroll_in_store(&store, "net", "bb", 2).await;
        registry.reload().await.unwrap();
        let v1 = *changes.borrow();
        assert!(v1 > v0);
        let nodes: Vec<String> = registry
            .broker_credentials()
            .into_iter()
            .map(|c| c.node)
            .collect();
        assert_eq!(nodes, ["aa", "bb"]);
        store.add_network("other", true, "salt", 0).await.unwrap();
        registry.reload().await.unwrap();
        assert_eq!(*changes.borrow(), v1, "a network is not a credential");

        registry.mark_revoked("aa");
        let v2 = *changes.borrow();
        assert!(v2 > v1);
        assert_eq!(registry.broker_credentials()[0].node, "bb");
        registry.mark_revoked("aa");
        assert_eq!(*changes.borrow(), v2, "revoked twice is one change");

        // Without an export nothing is waited for; with one, its version.
        assert!(registry.broker_synced(Duration::ZERO).await);
        let (tx, rx) = watch::channel(v2 - 1);
        registry.attach_broker_export(rx);
        assert!(!registry.broker_synced(Duration::ZERO).await);
        tx.send(v2).unwrap();
        assert!(registry.broker_synced(Duration::ZERO).await);
    }

    #[test]
    fn rules_as_data() {
        let snap = snapshot();
        let msg = encode_cbor(&examples::state_online_v1());
        let seal = |seed: u8, signer: &str, topic: &str| {
            sign::seal(&SigningKey::from_bytes(&[seed; 32]), signer, topic, &msg)
        };
        let t = |net: &str, node: &str| format!("meshtable/v1/{net}/{node}/state");
        let cases: Vec<(String, Vec<u8>, &str)> = vec![
            (t("closed", "a"), seal(1, "a", &t("closed", "a")), "ok"),
            (
                t("nope", "a"),
                seal(1, "a", &t("nope", "a")),
                "unknown_network",
            ),
            (t("closed", "x"), msg.clone(), "unsigned"),
            (t("open", "x"), msg.clone(), "ok"),
            // An enrolled node's topic takes signed reports only.
            (t("open", "o"), msg.clone(), "unsigned"),
            (
                t("closed", "a"),
                seal(2, "a", &t("closed", "a")),
                "bad_signature",
            ),
            (
                t("closed", "a"),
                seal(9, "z", &t("closed", "a")),
                "unknown_node",
            ),
            (t("closed", "r"), seal(3, "r", &t("closed", "r")), "revoked"),
            (
                t("closed", "b"),
                seal(1, "a", &t("closed", "b")),
                "foreign_topic",
            ),
            (
                t("open", "a"),
                seal(1, "a", &t("open", "a")),
                "wrong_network",
            ),
            // Signed for one topic, published on another.
            (
                t("closed", "b"),
                seal(1, "a", &t("closed", "a")),
                "bad_signature",
            ),
            (t("closed", "a"), vec![0x84, 0x01], "bad_envelope"),
        ];
        for (topic, bytes, want) in cases {
            assert_eq!(outcome(&snap, &topic, &bytes), want, "{topic}");
        }
        for reason in ["ok", "report"] {
            assert!(!REJECT_REASONS.contains(&reason));
        }
    }
}
