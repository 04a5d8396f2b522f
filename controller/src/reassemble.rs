//! Telemetry reassembly: ingest decodes every telemetry message, full (v1)
//! or compact (v2), through one [`Reassembler`] keyed by the topic's
//! `network/node`, after the registry checked its signature.
//!
//! ```text
//! Registry::decode_with --> Reassembly::decode_inner --> full Telemetry
//!                              | v2 without its predecessor
//!                              v
//!                           first miss of the node since start:
//!                           load the node's base from the store, retry
//!                              | still missing
//!                              v
//!                           seq <= newest seq known: a redelivery, already
//!                           stored (duplicate); else refused `missing_base`
//! ```
//!
//! Restarts: [`Store::record_batch`] stores every node's last full report
//! as its base (`telemetry_base`) in the batch's own transaction, which
//! commits before ingest acknowledges the batch. So the stored base is a
//! committed report, and the messages after it are either committed too or
//! still unacknowledged, which the broker delivers again after the restart:
//! each is then the base's successor (decoded) or at or below it (a
//! duplicate).

use std::collections::{HashMap, HashSet};

use meshtable_proto::{DecodeError, Kind, Reassembler, Report, Telemetry, Topic};
use meshtable_store::Store;
use tracing::{debug, warn};

use crate::ingest::{Decoded, decode};
use crate::metrics::Metrics;
use crate::registry::Registry;

/// The reassembler's key of a topic's node.
fn key_of(topic: &Topic) -> String {
    format!("{}/{}", topic.network, topic.node)
}

/// What happened to a compact report that found no predecessor.
enum Miss {
    /// It decoded, or failed for another reason.
    None,
    /// The node's base has not been read from the store yet: the message
    /// inside its envelope, to decode again once it has.
    NeedBase(Topic, Vec<u8>),
    /// A redelivery of a report already stored.
    Duplicate(Topic),
}

/// Ingest's telemetry decoder state: the [`Reassembler`] and what it needs
/// to recover after a restart.
#[derive(Debug, Default)]
pub struct Reassembly {
    reassembler: Reassembler,
    /// `(boot_id, seq)` of the newest report of each node.
    newest: HashMap<String, (String, u64)>,
    /// Nodes whose base was read from the store (or found missing there).
    looked_up: HashSet<String>,
}

impl Reassembly {
    /// An empty reassembly.
    pub fn new() -> Reassembly {
        Reassembly::default()
    }

    /// Verifies a message with `registry` and decodes it, telemetry through
    /// the reassembler (reading the node's base from `store` at its first
    /// miss). `None` when it is a redelivered compact report already
    /// stored: counted as a duplicate, nothing to store, to acknowledge.
    pub async fn decode(
        &mut self,
        registry: &Registry,
        store: &Store,
        metrics: &Metrics,
        topic: &str,
        payload: &[u8],
    ) -> Option<Decoded> {
        let mut miss = Miss::None;
        let decoded = registry
            .decode_with(topic, payload, |t, p| self.decode_inner(t, p, &mut miss))
            .await;
        let decoded = match miss {
            Miss::None => decoded,
            Miss::NeedBase(parsed, inner) => {
                self.load_base(store, &parsed).await;
                let mut again = Miss::None;
                let d = self.decode_inner(topic, &inner, &mut again);
                if let Miss::Duplicate(parsed) = again {
                    return self.duplicate(metrics, &parsed);
                }
                d
            }
            Miss::Duplicate(parsed) => return self.duplicate(metrics, &parsed),
        };
        Some(decoded)
    }

    fn duplicate(&self, metrics: &Metrics, topic: &Topic) -> Option<Decoded> {
        metrics.duplicate();
        debug!(network = %topic.network, node = %topic.node, "redelivered compact telemetry");
        None
    }

    /// Decodes a verified message; telemetry through the reassembler.
    fn decode_inner(&mut self, topic: &str, payload: &[u8], miss: &mut Miss) -> Decoded {
        let parsed = match Topic::parse(topic) {
            Ok(t) if t.kind == Kind::Telemetry => t,
            _ => return decode(topic, payload),
        };
        let key = key_of(&parsed);
        match self.reassembler.decode(&key, payload) {
            Ok((t, _)) if t.node != parsed.node => Decoded::Rejected {
                reason: "node_mismatch",
                detail: format!(
                    "telemetry names node {:?}",
                    t.node.chars().take(80).collect::<String>()
                ),
            },
            Ok((t, _)) => {
                self.note(&key, &t);
                Decoded::Report(parsed, Box::new(Report::Telemetry(t)))
            }
            Err(e @ DecodeError::MissingBase(seq)) => {
                if !self.looked_up.contains(&key) {
                    *miss = Miss::NeedBase(parsed, payload.to_vec());
                } else if self
                    .newest
                    .get(&key)
                    .is_some_and(|(_, newest)| seq <= *newest)
                {
                    // Its base is gone, but a report at or after it was
                    // decoded: it was stored, or is in a batch that commits
                    // before this message is acknowledged.
                    *miss = Miss::Duplicate(parsed);
                }
                Decoded::Rejected {
                    reason: e.reason(),
                    detail: e.to_string(),
                }
            }
            Err(e) => Decoded::Rejected {
                reason: e.reason(),
                detail: e.to_string(),
            },
        }
    }

    /// Remembers the newest report of a node.
    fn note(&mut self, key: &str, t: &Telemetry) {
        match self.newest.get_mut(key) {
            Some((boot, seq)) if *boot == t.boot_id => *seq = (*seq).max(t.seq),
            Some(newest) => *newest = (t.boot_id.clone(), t.seq),
            None => {
                self.newest
                    .insert(key.to_owned(), (t.boot_id.clone(), t.seq));
            }
        }
    }

    /// Reads a node's base from the store into the reassembler. A store
    /// error leaves the node to be looked up again at its next miss.
    async fn load_base(&mut self, store: &Store, topic: &Topic) {
        let key = key_of(topic);
        match store.telemetry_base(&topic.network, &topic.node).await {
            Ok(Some(base)) => {
                self.looked_up.insert(key.clone());
                match self.reassembler.decode(&key, &base.report) {
                    Ok((t, _)) => {
                        if !self.newest.contains_key(&key) {
                            self.note(&key, &t);
                        }
                        debug!(network = %topic.network, node = %topic.node, seq = t.seq, "telemetry base loaded");
                    }
                    Err(e) => {
                        warn!(network = %topic.network, node = %topic.node, error = %e, "stored telemetry base unusable");
                    }
                }
            }
            Ok(None) => {
                self.looked_up.insert(key);
            }
            Err(e) => {
                warn!(network = %topic.network, node = %topic.node, error = %e, "cannot read the telemetry base");
            }
        }
    }

    /// Forgets a node (when it is removed).
    pub fn forget(&mut self, network: &str, node: &str) {
        let key = format!("{network}/{node}");
        self.reassembler.forget(&key);
        self.newest.remove(&key);
        self.looked_up.remove(&key);
    }
}
