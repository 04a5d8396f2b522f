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

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
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

#[derive(Clone)]
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

/// The in-memory registry. Share it behind an `Arc`.
pub struct Registry {
    store: Store,
    snapshot: RwLock<Arc<Snapshot>>,
    last_miss_reload: Mutex<Option<Instant>>,
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
        let r = Registry {
            store,
            snapshot: RwLock::new(Arc::new(Snapshot::default())),
            last_miss_reload: Mutex::new(None),
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
        *self
            .snapshot
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(snap);
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
        }
    }

    /// Reloads after a miss, at most once per [`MISS_RELOAD_INTERVAL`].
    /// Returns whether it reloaded.
    async fn reload_on_miss(&self) -> bool {
        {
            let mut last = self
                .last_miss_reload
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let now = Instant::now();
            if last.is_some_and(|t| now.duration_since(t) < MISS_RELOAD_INTERVAL) {
                return false;
            }
            *last = Some(now);
        }
        match self.reload().await {
            Ok(()) => true,
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
        let misses = |s: &Snapshot| {
            !s.networks.contains_key(&parsed.network)
                || signer.is_some_and(|n| !s.nodes.contains_key(n))
        };
        if misses(&snap) && self.reload_on_miss().await {
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
