//! Recording received messages, many in one transaction.
//!
//! [`Store::record_batch`] is the one write path for hello, state and
//! telemetry messages; `record_hello`, `record_state` and `record_telemetry`
//! are batches of one. A batch has the effect of applying its items one by
//! one in order, each in its own transaction, but commits once and writes
//! with a handful of multi-row statements whatever its size:
//!
//! 1. insert the networks and nodes it names (`ON CONFLICT DO NOTHING`, with
//!    each new row as its first item would create it), sorted by key;
//! 2. read those node rows (on PostgreSQL `FOR UPDATE`, in key order, so
//!    that concurrent writers of the same nodes wait instead of losing
//!    updates; SQLite's write transaction excludes other writers anyway);
//! 3. look up, for every distinct telemetry key (node, boot, seq), whether
//!    it is stored and which stored sample of its boot precedes it (two
//!    index probes per run of close seqs of a boot), then read those
//!    previous samples (from memory where it holds them);
//! 4. replay the items in order in memory: node liveness and hello, dedupe
//!    (against the database and the earlier items), and rates against the
//!    previous sample of the boot, stored or earlier in the batch;
//! 5. write the new samples, each with its interfaces (multi-row inserts,
//!    sent while step 4 goes on: see `SampleInserts`), and the changed
//!    nodes.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;

use meshtable_proto::{Clients, Hello, Message, Report, Status, Telemetry};
use sea_orm::{
    ActiveValue::{NotSet, Set},
    ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, DbErr, EntityTrait, ModelTrait,
    QueryFilter, QueryResult, Statement, Value,
};

use crate::clock::{Anchors, Placement};
use crate::derive::{Ticks, bps, cpu_busy_ratio, sat, widen};
use crate::entity::{network, node, sample};
use crate::ifaces::{self, Iface};
use crate::write::clean;
use crate::{Backend, NodeStatus, Store, StoreError};

/// Bind parameters per statement: below SQLite's limit (32766) and
/// PostgreSQL's (65535); larger batches are written in several statements.
pub(crate) const MAX_PARAMS: usize = 30_000;

/// One received message to record with [`Store::record_batch`].
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    /// The network id (the topic's network level).
    pub network: &'a str,
    /// The node id (the topic's node level).
    pub node: &'a str,
    /// What the message says.
    pub content: Content<'a>,
    /// When the controller received it (controller clock), Unix ms.
    pub received_ms: i64,
}

/// The decoded content of an [`Incoming`] message.
#[derive(Debug, Clone, Copy)]
pub enum Content<'a> {
    /// A hello: stored as the node's latest, node online.
    Hello(&'a Hello),
    /// A state message: the node's status.
    State(Status),
    /// A telemetry report: a sample, node online.
    Telemetry(&'a Telemetry),
}

impl<'a> Incoming<'a> {
    /// A message with a decoded report.
    pub fn new(network: &'a str, node: &'a str, report: &'a Report, received_ms: i64) -> Self {
        let content = match report {
            Report::Hello(h) => Content::Hello(h),
            Report::State(s) => Content::State(s.status),
            Report::Telemetry(t) => Content::Telemetry(t),
        };
        Incoming {
            network,
            node,
            content,
            received_ms,
        }
    }
}

/// What recording one [`Incoming`] message did.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Recorded: a hello or state applied, or a telemetry report stored.
    Inserted,
    /// A telemetry report whose (network, node, boot_id, seq) was stored
    /// before, or earlier in the same batch; nothing changed.
    Duplicate,
    /// The message breaks the wire format's rules; nothing changed. Retrying
    /// cannot help.
    Invalid(String),
}

/// What a hello sets on its node.
struct HelloFields {
    hostname: Option<String>,
    model: Option<String>,
    json: String,
    interval_ms: Option<i64>,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| clean(s))
}

/// A valid item, ready to replay.
struct Item<'a> {
    /// Index into the batch's node keys.
    node: usize,
    received_ms: i64,
    kind: ItemKind<'a>,
}

enum ItemKind<'a> {
    Hello(HelloFields),
    State(NodeStatus),
    Telemetry(&'a Telemetry),
}

impl ItemKind<'_> {
    fn status(&self) -> NodeStatus {
        match self {
            ItemKind::Hello(_) | ItemKind::Telemetry(_) => NodeStatus::Online,
            ItemKind::State(s) => *s,
        }
    }
}

fn prepare<'a>(incoming: &Incoming<'a>, keys: &mut NodeKeys) -> Result<Item<'a>, String> {
    let kind = match incoming.content {
        Content::Hello(hello) => {
            let json = serde_json::to_string(hello)
                .map_err(|e| format!("hello does not serialize: {e}"))?;
            ItemKind::Hello(HelloFields {
                hostname: non_empty(&hello.hostname),
                model: non_empty(&hello.model),
                json,
                interval_ms: (hello.interval_ms > 0).then_some(i64::from(hello.interval_ms)),
            })
        }
        Content::State(s) => ItemKind::State(s.into()),
        Content::Telemetry(t) => {
            t.validate().map_err(|e| e.to_string())?;
            ItemKind::Telemetry(t)
        }
    };
    let node = keys.index(
        incoming.network,
        incoming.node,
        incoming.received_ms,
        kind.status(),
    );
    Ok(Item {
        node,
        received_ms: incoming.received_ms,
        kind,
    })
}

/// The distinct (network, node) pairs of a batch, in order of first
/// appearance, with the row their first item would create.
#[derive(Default)]
struct NodeKeys {
    index: HashMap<(String, String), usize>,
    /// (network, node, received_ms, status) of the first item.
    first: Vec<(String, String, i64, NodeStatus)>,
}

impl NodeKeys {
    fn index(&mut self, network: &str, node: &str, received_ms: i64, status: NodeStatus) -> usize {
        let key = (clean(network), clean(node));
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.first.len();
        self.first
            .push((key.0.clone(), key.1.clone(), received_ms, status));
        self.index.insert(key, i);
        i
    }
}

/// A node row being replayed.
struct NodeState {
    row: node::Model,
    changed: bool,
    /// A hello changed the hello's columns (written only then).
    hello: bool,
    /// Status changes (time, new status), for the state history.
    transitions: Vec<(i64, NodeStatus)>,
}

impl NodeState {
    /// What one message does to its node: seen (`last_seen` only moves
    /// forward), the status (`status_since` moves only when it changes), and
    /// the hello's fields.
    fn touch(&mut self, received_ms: i64, status: NodeStatus, hello: Option<&HelloFields>) {
        let row = &mut self.row;
        if row.last_seen_ms < received_ms {
            row.last_seen_ms = received_ms;
        }
        if row.status != status.as_str() {
            row.status_since_ms = received_ms;
            row.status = status.as_str().to_owned();
            self.transitions.push((received_ms, status));
        }
        if let Some(h) = hello {
            self.hello = true;
            row.hostname.clone_from(&h.hostname);
            row.model.clone_from(&h.model);
            row.hello = Some(h.json.clone());
            row.interval_ms = h.interval_ms;
        }
        self.changed = true;
    }
}

/// Identifies a report: (node id, boot id, seq).
type SampleKey = (i64, String, i64);

/// What rates are derived from: a sample stored or earlier in the batch.
#[derive(Clone, Debug)]
struct PrevSample {
    seq: i64,
    uptime_ms: i64,
    ticks: Ticks,
    /// Interface name -> (rx_bytes, tx_bytes).
    ifaces: HashMap<String, (i64, i64)>,
}

/// Each node's latest committed sample by node id, as (sample id, what
/// rates derive from): the next report of the node finds its predecessor
/// here instead of reading it back. Only consulted for the sample id the
/// database names as the predecessor (a stored sample never changes), and
/// filled after commit, so it never holds a sample that is not stored.
#[derive(Debug, Default)]
pub(crate) struct PrevCache {
    /// Sample id -> what rates derive from.
    by_id: HashMap<i64, PrevSample>,
    /// Node id -> the sample id it holds for that node.
    by_node: HashMap<i64, i64>,
}

/// Node keys [`Store`] remembers having seen a row of at most; beyond, it
/// starts over.
pub(crate) const KNOWN_NODES_MAX: usize = 1_000_000;

/// Nodes whose latest sample the cache keeps at most; beyond, it starts over.
const PREV_CACHE_MAX: usize = 100_000;

/// Most seqs apart two keys of one boot may lie and still be probed together
/// (see `Store::lookup_keys`): a probe reads the stored samples between
/// them, so a wider gap starts a new run instead.
const RUN_GAP: i64 = 64;

/// What the database holds for one telemetry key of the batch.
#[derive(Default)]
struct KeyLookup {
    /// Uptime of the stored sample with this very key.
    stored_uptime: Option<i64>,
    /// Id of the stored sample of the same boot with the largest seq below.
    prev_id: Option<i64>,
}

/// A sample to insert.
struct NewSample {
    /// Position in the batch.
    item: usize,
    key: SampleKey,
    row: sample::ActiveModel,
}

/// New samples per insert statement: some 25,000 parameters, below
/// [`MAX_PARAMS`].
const INSERT_CHUNK: usize = 800;

/// A statement in flight, with the rows it returns.
type InFlight<'t> = Pin<Box<dyn Future<Output = Result<Vec<QueryResult>, DbErr>> + Send + 't>>;

/// Step 5's sample inserts, sent while step 4 replays the batch: each
/// [`INSERT_CHUNK`] new samples go to the database in one statement, which
/// runs there (on SQLite's thread, or in PostgreSQL's server) while the
/// replay goes on here. A statement's returned ids are read before the next
/// one goes. The samples go in batch order, so their ids ascend with it.
///
/// A statement in flight holds the transaction: nothing else may use it
/// until [`SampleInserts::finish`] returned.
struct SampleInserts<'t> {
    txn: &'t DatabaseTransaction,
    backend: Backend,
    /// How many of the batch's new samples went into statements.
    sent: usize,
    in_flight: Option<InFlight<'t>>,
    /// The id of every sample stored, by key.
    ids: HashMap<SampleKey, i64>,
}

impl<'t> SampleInserts<'t> {
    /// Inserts in `txn` of up to `keys` samples.
    fn new(txn: &'t DatabaseTransaction, backend: Backend, keys: usize) -> Self {
        SampleInserts {
            txn,
            backend,
            sent: 0,
            in_flight: None,
            ids: HashMap::with_capacity(keys),
        }
    }

    /// Sends the samples of `all` not sent yet, once there are at least
    /// `min` of them.
    async fn send(&mut self, all: &[NewSample], min: usize) -> Result<(), StoreError> {
        let rows = &all[self.sent..];
        if rows.len() < min.max(1) {
            return Ok(());
        }
        let rows: Vec<sample::ActiveModel> = rows.iter().map(|s| s.row.clone()).collect();
        let suffix = "ON CONFLICT (node_id, boot_id, seq) DO NOTHING \
                      RETURNING id, node_id, boot_id, seq";
        // PostgreSQL: one UNNEST statement (see `crate::unnest`); else multi-row inserts.
        let unnest = match self.backend {
            Backend::Postgres => crate::unnest::insert_statement(&rows, suffix),
            Backend::Sqlite => None,
        };
        let statements = match unnest {
            Some(statement) => vec![statement],
            None => values_statements(self.txn.get_database_backend(), &rows, suffix)?,
        };
        self.sent = all.len();
        let txn = self.txn;
        for statement in statements {
            self.wait().await?;
            let mut query: InFlight<'t> = Box::pin(txn.query_all_raw(statement));
            // Polled once here, the statement reaches the database now.
            match poll_once(&mut query).await {
                Some(rows) => self.read(rows?)?,
                None => self.in_flight = Some(query),
            }
        }
        Ok(())
    }

    /// Waits for the statement in flight, if any, and reads its rows.
    async fn wait(&mut self) -> Result<(), StoreError> {
        if let Some(query) = self.in_flight.take() {
            let rows = query.await?;
            self.read(rows)?;
        }
        Ok(())
    }

    fn read(&mut self, rows: Vec<QueryResult>) -> Result<(), StoreError> {
        for row in rows {
            let key: SampleKey = (
                row.try_get("", "node_id")?,
                row.try_get("", "boot_id")?,
                row.try_get("", "seq")?,
            );
            self.ids.insert(key, row.try_get("", "id")?);
        }
        Ok(())
    }

    /// Sends the rest of `all`, the batch's new samples, and waits for
    /// every statement. A sample that a concurrent writer stored meanwhile
    /// becomes a duplicate. Returns the ids of those stored.
    async fn finish(
        mut self,
        all: &[NewSample],
        outcomes: &mut [Outcome],
    ) -> Result<HashMap<SampleKey, i64>, StoreError> {
        self.send(all, 1).await?;
        self.wait().await?;
        for s in all.iter().filter(|s| !self.ids.contains_key(&s.key)) {
            tracing::warn!(
                node_id = s.key.0,
                boot_id = %s.key.1,
                seq = s.key.2,
                "report stored concurrently by another writer, dropped as duplicate"
            );
            outcomes[s.item] = Outcome::Duplicate;
        }
        Ok(self.ids)
    }
}

/// Polls `future` once: its output if that is ready, else `None` (and the
/// caller's task is woken when it progresses).
async fn poll_once<F: Future + Unpin>(future: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| {
        Poll::Ready(match Pin::new(&mut *future).poll(cx) {
            Poll::Ready(output) => Some(output),
            Poll::Pending => None,
        })
    })
    .await
}

impl Store {
    /// Records received messages in one transaction, with the same effect as
    /// recording them one by one in order (see `record_hello`,
    /// `record_state` and `record_telemetry`): telemetry is deduplicated on
    /// (network, node, boot_id, seq), also within the batch; rates are
    /// derived from the previous sample of the same boot, which may be an
    /// earlier item. Returns one [`Outcome`] per item, in order.
    ///
    /// An invalid item changes nothing and does not fail the batch. An
    /// error fails the whole batch: nothing of it is stored.
    pub async fn record_batch(&self, items: &[Incoming<'_>]) -> Result<Vec<Outcome>, StoreError> {
        let mut keys = NodeKeys::default();
        let prepared: Vec<Result<Item<'_>, String>> =
            items.iter().map(|i| prepare(i, &mut keys)).collect();
        if keys.first.is_empty() {
            return Ok(prepared
                .into_iter()
                .map(|p| match p {
                    Ok(_) => Outcome::Inserted,
                    Err(e) => Outcome::Invalid(e),
                })
                .collect());
        }

        let txn = self.begin_write().await?;
        let mut nodes = self.upsert_nodes(&txn, &keys).await?;

        // Every distinct telemetry key, in order of first appearance.
        let mut tele_keys: Vec<SampleKey> = Vec::new();
        let mut seen_keys: HashSet<SampleKey> = HashSet::new();
        for item in prepared.iter().flatten() {
            if let ItemKind::Telemetry(t) = item.kind {
                let key = (nodes[item.node].row.id, clean(&t.boot_id), sat(t.seq));
                if seen_keys.insert(key.clone()) {
                    tele_keys.push(key);
                }
            }
        }
        let lookups = self.lookup_keys(&txn, &tele_keys).await?;
        let prev_ids: Vec<i64> = {
            let mut ids: Vec<i64> = lookups.values().filter_map(|l| l.prev_id).collect();
            ids.sort_unstable();
            ids.dedup();
            ids
        };
        let stored_prev = self.prev_samples(&txn, &prev_ids).await?;
        let boots: Vec<(i64, String)> = {
            let mut b: Vec<(i64, String)> =
                tele_keys.iter().map(|(n, b, _)| (*n, b.clone())).collect();
            b.sort_unstable();
            b.dedup();
            b
        };
        let mut anchors = Anchors::load(&txn, &boots).await?;
        // (node id, series time) of every new sample, for the rollups.
        let mut placed: Vec<(i64, i64)> = Vec::new();
        // (position, mesh parts) of every new sample, for the topology.
        let mut mesh: Vec<(usize, crate::topology::MeshReport<'_>)> = Vec::new();

        // Replay in order.
        let mut outcomes = Vec::with_capacity(items.len());
        // Samples of this batch by (node, boot), by seq.
        let mut batch_samples: HashMap<(i64, String), BTreeMap<i64, PrevSample>> = HashMap::new();
        let mut new_samples: Vec<NewSample> = Vec::new();
        let mut inserts = SampleInserts::new(&txn, self.backend, tele_keys.len());
        for (i, p) in prepared.iter().enumerate() {
            let item = match p {
                Ok(item) => item,
                Err(e) => {
                    outcomes.push(Outcome::Invalid(e.clone()));
                    continue;
                }
            };
            let state = &mut nodes[item.node];
            match &item.kind {
                ItemKind::Hello(h) => state.touch(item.received_ms, NodeStatus::Online, Some(h)),
                ItemKind::State(s) => state.touch(item.received_ms, *s, None),
                ItemKind::Telemetry(t) => {
                    let node_id = state.row.id;
                    let boot_id = clean(&t.boot_id);
                    let seq = sat(t.seq);
                    let uptime_ms = sat(t.uptime_ms);
                    let key = (node_id, boot_id.clone(), seq);
                    let lookup = lookups.get(&key);
                    let group = batch_samples.entry((node_id, boot_id.clone())).or_default();
                    let existing = group
                        .get(&seq)
                        .map(|s| s.uptime_ms)
                        .or_else(|| lookup.and_then(|l| l.stored_uptime));
                    if let Some(stored_uptime) = existing {
                        if stored_uptime != uptime_ms {
                            // Not a redelivery: another report under the same key,
                            // as when an agent restarts (seq from 0) without a reboot.
                            tracing::warn!(
                                network = %state.row.network,
                                node = %state.row.node,
                                boot_id = %boot_id,
                                seq,
                                "report key reused by a different report, dropped as duplicate"
                            );
                        }
                        outcomes.push(Outcome::Duplicate);
                        continue;
                    }
                    state.touch(item.received_ms, NodeStatus::Online, None);
                    let from_db = lookup
                        .and_then(|l| l.prev_id)
                        .and_then(|id| stored_prev.get(&id));
                    let from_batch = group.range(..seq).next_back().map(|(_, s)| s);
                    let prev = match (from_db, from_batch) {
                        (Some(d), Some(b)) => Some(if b.seq > d.seq { b } else { d }),
                        (d, b) => d.or(b),
                    };
                    let at = anchors.place(
                        node_id,
                        &boot_id,
                        t,
                        item.received_ms,
                        self.clock_max_skew_ms,
                    );
                    placed.push((node_id, at.t_ms));
                    mesh.push((
                        i,
                        crate::topology::mesh_report(node_id, t, at.t_ms, item.received_ms),
                    ));
                    let (new, this) =
                        new_sample(i, node_id, boot_id, t, item.received_ms, at, prev);
                    group.insert(seq, this);
                    new_samples.push(new);
                    outcomes.push(Outcome::Inserted);
                    inserts.send(&new_samples, INSERT_CHUNK).await?;
                }
            }
            if !matches!(item.kind, ItemKind::Telemetry(_)) {
                outcomes.push(Outcome::Inserted);
            }
        }

        // First: until the last insert is done, it holds the transaction.
        let ids = inserts.finish(&new_samples, &mut outcomes).await?;
        anchors.save(&txn).await?;
        crate::rollup::mark_dirty(&txn, &placed).await?;
        self.update_nodes(&txn, &nodes).await?;
        let transitions: Vec<(i64, i64, &str)> = nodes
            .iter()
            .flat_map(|n| {
                n.transitions
                    .iter()
                    .map(|&(t, s)| (n.row.id, t, s.as_str()))
            })
            .collect();
        crate::liveness::record_states(&txn, &transitions).await?;
        let mesh: Vec<_> = mesh
            .into_iter()
            .filter(|(i, _)| outcomes[*i] == Outcome::Inserted)
            .map(|(_, m)| m)
            .collect();
        crate::topology::record_reports(&txn, &mesh).await?;
        // Each node's last telemetry, the base the controller's reassembly
        // of compact reports resumes from after a restart (`crate::base`).
        // Only reports stored now: a redelivered one of an earlier boot
        // would set the base back to that boot.
        let bases: Vec<(&str, &str, &Telemetry)> = items
            .iter()
            .zip(&outcomes)
            .filter_map(|(incoming, outcome)| match (incoming.content, outcome) {
                (Content::Telemetry(t), Outcome::Inserted) => {
                    Some((incoming.network, incoming.node, t))
                }
                _ => None,
            })
            .collect();
        let now_ms = items.iter().map(|i| i.received_ms).max().unwrap_or(0);
        crate::base::save_bases(&txn, &bases, now_ms).await?;
        txn.commit().await?;
        self.remember_prev(&batch_samples, &ids);
        Ok(outcomes)
    }

    /// Steps 1 and 2: creates missing networks and nodes, then reads (and on
    /// PostgreSQL locks) the batch's node rows. Returns them by key index.
    ///
    /// Nodes this store saw a row of before are not inserted again: the
    /// insert would find them and do nothing. One that went meanwhile (a
    /// node deleted by an admin) is missing from the read, and inserted then.
    async fn upsert_nodes(
        &self,
        txn: &DatabaseTransaction,
        keys: &NodeKeys,
    ) -> Result<Vec<NodeState>, StoreError> {
        // Sorted, so that concurrent batches take the same locks in the same order.
        let mut order: Vec<usize> = (0..keys.first.len()).collect();
        order.sort_by(|&a, &b| {
            let (ka, kb) = (&keys.first[a], &keys.first[b]);
            (&ka.0, &ka.1).cmp(&(&kb.0, &kb.1))
        });
        let unknown: Vec<usize> = {
            let known = self.known_nodes.lock().unwrap_or_else(|e| e.into_inner());
            order
                .iter()
                .copied()
                .filter(|&i| {
                    let (net, node, _, _) = &keys.first[i];
                    !known.contains(&(net.clone(), node.clone()))
                })
                .collect()
        };
        self.insert_nodes(txn, keys, &unknown).await?;
        let mut rows = self.select_nodes(txn, keys, &order).await?;
        if rows.len() < order.len() {
            let gone: Vec<usize> = order
                .iter()
                .copied()
                .filter(|&i| {
                    let (net, node, _, _) = &keys.first[i];
                    !rows.contains_key(&(net.clone(), node.clone()))
                })
                .collect();
            self.insert_nodes(txn, keys, &gone).await?;
            rows.extend(self.select_nodes(txn, keys, &gone).await?);
        }
        {
            let mut known = self.known_nodes.lock().unwrap_or_else(|e| e.into_inner());
            if known.len() > KNOWN_NODES_MAX {
                known.clear();
            }
            known.extend(rows.keys().cloned());
        }
        keys.first
            .iter()
            .map(|(net, node, _, _)| {
                rows.remove(&(net.clone(), node.clone()))
                    .map(|row| NodeState {
                        row,
                        changed: false,
                        hello: false,
                        transitions: Vec::new(),
                    })
                    .ok_or_else(|| {
                        StoreError::Database(sea_orm::DbErr::RecordNotFound(format!(
                            "node {net}/{node} vanished"
                        )))
                    })
            })
            .collect()
    }

    /// Inserts the networks and nodes of `keys.first[i]` for `i` in `order`
    /// (sorted by key) that do not exist, each as its first item would
    /// create it.
    async fn insert_nodes(
        &self,
        txn: &DatabaseTransaction,
        keys: &NodeKeys,
        order: &[usize],
    ) -> Result<(), StoreError> {
        if order.is_empty() {
            return Ok(());
        }
        // The network's first item is the first item of any of its nodes
        // (keys are numbered in order of first appearance).
        let mut first_of: BTreeMap<&str, usize> = BTreeMap::new();
        for &i in order {
            let net = keys.first[i].0.as_str();
            let first = first_of.entry(net).or_insert(i);
            *first = (*first).min(i);
        }
        let networks: Vec<network::ActiveModel> = first_of
            .into_iter()
            .map(|(net, i)| network::ActiveModel {
                id: Set(net.to_owned()),
                first_seen_ms: Set(keys.first[i].2),
            })
            .collect();
        for chunk in chunked(networks, 2) {
            network::Entity::insert_many(chunk)
                .on_conflict_do_nothing()
                .exec_without_returning(txn)
                .await?;
        }

        let new_nodes: Vec<node::ActiveModel> = order
            .iter()
            .map(|&i| {
                let (net, node, received_ms, status) = &keys.first[i];
                node::ActiveModel {
                    id: NotSet,
                    network: Set(net.clone()),
                    node: Set(node.clone()),
                    hostname: Set(None),
                    model: Set(None),
                    hello: Set(None),
                    interval_ms: Set(None),
                    status: Set(status.as_str().to_owned()),
                    status_since_ms: Set(*received_ms),
                    first_seen_ms: Set(*received_ms),
                    last_seen_ms: Set(*received_ms),
                }
            })
            .collect();
        for chunk in chunked(new_nodes, 10) {
            node::Entity::insert_many(chunk)
                .on_conflict_do_nothing_on([node::Column::Network, node::Column::Node])
                .exec_without_returning(txn)
                .await?;
        }

        Ok(())
    }

    /// Reads (and on PostgreSQL locks, in key order) the node rows of
    /// `keys.first[i]` for `i` in `order`, by (network, node).
    async fn select_nodes(
        &self,
        txn: &DatabaseTransaction,
        keys: &NodeKeys,
        order: &[usize],
    ) -> Result<HashMap<(String, String), node::Model>, StoreError> {
        let backend = txn.get_database_backend();
        let mut rows: HashMap<(String, String), node::Model> = HashMap::new();
        for chunk in order.chunks(MAX_PARAMS / 2) {
            let (source, values) = row_source(
                backend,
                chunk
                    .iter()
                    .map(|&i| {
                        let (net, node, _, _) = &keys.first[i];
                        vec![Value::from(net.clone()), Value::from(node.clone())]
                    })
                    .collect(),
            );
            let lock = match self.backend {
                Backend::Postgres => " FOR UPDATE OF n",
                Backend::Sqlite => "",
            };
            let sql = format!(
                "WITH k(network, node) AS ({source}) \
                 SELECT n.* FROM node n JOIN k ON n.network = k.network AND n.node = k.node \
                 ORDER BY n.network, n.node{lock}"
            );
            let found = node::Entity::find()
                .from_raw_sql(Statement::from_sql_and_values(backend, sql, values))
                .all(txn)
                .await?;
            for row in found {
                rows.insert((row.network.clone(), row.node.clone()), row);
            }
        }
        Ok(rows)
    }

    /// Step 3: for each telemetry key, whether it is stored, and the stored
    /// sample of the same boot with the largest seq below it.
    ///
    /// A backlog brings many reports of each boot in one batch (a node's
    /// spool after an outage, or a controller catching up), mostly with
    /// consecutive seqs. So the keys are probed by *run*: the keys of one
    /// boot whose seqs lie at most [`RUN_GAP`] apart. Each run costs two
    /// index probes whatever its length: the stored samples with a seq in
    /// the run's range, and the stored sample just below the range.
    async fn lookup_keys(
        &self,
        txn: &DatabaseTransaction,
        keys: &[SampleKey],
    ) -> Result<HashMap<SampleKey, KeyLookup>, StoreError> {
        let backend = txn.get_database_backend();
        let mut sorted: Vec<&SampleKey> = keys.iter().collect();
        sorted.sort_unstable();
        // (node id, boot id, lowest seq, highest seq), and each key's run.
        let mut runs: Vec<(i64, &str, i64, i64)> = Vec::new();
        let mut run_of: Vec<(&SampleKey, usize)> = Vec::with_capacity(sorted.len());
        for key in sorted {
            let (node_id, boot_id, seq) = key;
            match runs.last_mut() {
                Some(run) if run.0 == *node_id && run.1 == boot_id && seq - run.3 <= RUN_GAP => {
                    run.3 = *seq;
                }
                _ => runs.push((*node_id, boot_id, *seq, *seq)),
            }
            run_of.push((key, runs.len() - 1));
        }

        // Per run: its stored samples by seq (sample id, uptime), and the id
        // of the stored sample below it. Each row names its run by number.
        let mut stored: Vec<BTreeMap<i64, (i64, i64)>> = vec![BTreeMap::new(); runs.len()];
        let mut below: Vec<Option<i64>> = vec![None; runs.len()];
        for (offset, chunk) in (0i64..)
            .step_by(MAX_PARAMS / 5)
            .zip(runs.chunks(MAX_PARAMS / 5))
        {
            let (source, values) = row_source(
                backend,
                chunk
                    .iter()
                    .zip(offset..)
                    .map(|(&(node_id, boot_id, lo, hi), run)| {
                        vec![
                            Value::from(run),
                            Value::from(node_id),
                            Value::from(boot_id.to_owned()),
                            Value::from(lo),
                            Value::from(hi),
                        ]
                    })
                    .collect(),
            );
            let sql = format!(
                "WITH r(run, node_id, boot_id, lo, hi) AS ({source}) \
                 SELECT 0 AS below, r.run, s.seq, s.id, s.uptime_ms \
                 FROM r JOIN sample s ON s.node_id = r.node_id AND s.boot_id = r.boot_id \
                   AND s.seq BETWEEN r.lo AND r.hi \
                 UNION ALL \
                 SELECT 1, r.run, r.lo, \
                 (SELECT s.id FROM sample s \
                   WHERE s.node_id = r.node_id AND s.boot_id = r.boot_id AND s.seq < r.lo \
                   ORDER BY s.seq DESC LIMIT 1), NULL \
                 FROM r"
            );
            let rows = txn
                .query_all_raw(Statement::from_sql_and_values(backend, sql, values))
                .await?;
            for row in rows {
                // A run number this statement bound: always in range.
                let run = usize::try_from(row.try_get::<i64>("", "run")?).unwrap_or(usize::MAX);
                let id: Option<i64> = row.try_get("", "id")?;
                let uptime: Option<i64> = row.try_get("", "uptime_ms")?;
                match (row.try_get::<i32>("", "below")?, id, uptime) {
                    (0, Some(id), Some(uptime)) => {
                        if let Some(samples) = stored.get_mut(run) {
                            samples.insert(row.try_get("", "seq")?, (id, uptime));
                        }
                    }
                    (1, id, _) => {
                        if let Some(slot) = below.get_mut(run) {
                            *slot = id;
                        }
                    }
                    _ => {}
                }
            }
        }

        let mut out = HashMap::with_capacity(keys.len());
        for (key, run) in run_of {
            let seq = key.2;
            let lookup = KeyLookup {
                stored_uptime: stored[run].get(&seq).map(|&(_, uptime)| uptime),
                prev_id: stored[run]
                    .range(..seq)
                    .next_back()
                    .map(|(_, &(id, _))| id)
                    .or(below[run]),
            };
            out.insert(key.clone(), lookup);
        }
        Ok(out)
    }

    /// Step 3b: the stored predecessors `ids` of the batch's samples, from
    /// the [`PrevCache`] where it holds that very sample, else read back.
    async fn prev_samples(
        &self,
        txn: &DatabaseTransaction,
        ids: &[i64],
    ) -> Result<HashMap<i64, PrevSample>, StoreError> {
        let mut out = HashMap::with_capacity(ids.len());
        let mut missing = Vec::new();
        {
            let cache = self.prev_cache.lock().unwrap_or_else(|e| e.into_inner());
            for id in ids {
                match cache.by_id.get(id) {
                    Some(p) => {
                        out.insert(*id, p.clone());
                    }
                    None => missing.push(*id),
                }
            }
        }
        out.extend(load_samples(txn, &missing).await?);
        Ok(out)
    }

    /// After commit: keeps each node's newest sample of the batch in the
    /// [`PrevCache`].
    fn remember_prev(
        &self,
        batch_samples: &HashMap<(i64, String), BTreeMap<i64, PrevSample>>,
        ids: &HashMap<SampleKey, i64>,
    ) {
        let mut cache = self.prev_cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.by_node.len() > PREV_CACHE_MAX {
            *cache = PrevCache::default();
        }
        for ((node_id, boot_id), samples) in batch_samples {
            let Some((seq, prev)) = samples.iter().next_back() else {
                continue;
            };
            if let Some(&id) = ids.get(&(*node_id, boot_id.clone(), *seq)) {
                if let Some(old) = cache.by_node.insert(*node_id, id) {
                    cache.by_id.remove(&old);
                }
                cache.by_id.insert(id, prev.clone());
            }
        }
    }

    /// Step 5: writes the replayed state of every node a valid item
    /// touched: its liveness, and the hello's columns where a hello came.
    async fn update_nodes(
        &self,
        txn: &DatabaseTransaction,
        nodes: &[NodeState],
    ) -> Result<(), StoreError> {
        for with_hello in [false, true] {
            let columns = node_updates(with_hello);
            let mut names = vec![sea_orm::Iden::to_string(&node::Column::Id)];
            names.extend(columns.iter().map(sea_orm::Iden::to_string));
            let rows: Vec<Vec<Value>> = nodes
                .iter()
                .filter(|n| n.changed && n.hello == with_hello)
                .map(|n| {
                    let mut row = vec![Value::from(n.row.id)];
                    row.extend(columns.iter().map(|c| n.row.get(*c)));
                    row
                })
                .collect();
            update_rows(txn, "node", names, rows).await?;
        }
        Ok(())
    }
}

/// Sets the columns `names[1..]` of the rows of `table` whose key column
/// `names[0]` matches, one row of values (key first) per row to update, with
/// as few statements as the rows allow: one `UPDATE ... FROM UNNEST(...)` on
/// PostgreSQL (see `crate::unnest`), one `UPDATE ... FROM (VALUES ...)` per
/// chunk of [`MAX_PARAMS`] values elsewhere. Every row has the same number
/// of values as `names`.
pub(crate) async fn update_rows(
    txn: &DatabaseTransaction,
    table: &str,
    names: Vec<String>,
    rows: Vec<Vec<Value>>,
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let backend = txn.get_database_backend();
    if backend == DbBackend::Postgres
        && let Some(statement) = crate::unnest::update_statement(table, names.clone(), rows.clone())
    {
        txn.execute_raw(statement).await?;
        return Ok(());
    }
    let key = &names[0];
    for chunk in chunked(rows, names.len()) {
        let (tuples, values) = values_list(backend, chunk);
        let sql = format!(
            "WITH v({}) AS (VALUES {tuples}) UPDATE \"{table}\" SET {} FROM v WHERE \"{table}\".{key} = v.{key}",
            names.join(", "),
            names[1..]
                .iter()
                .map(|n| format!("{n} = v.{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        txn.execute_raw(Statement::from_sql_and_values(backend, sql, values))
            .await?;
    }
    Ok(())
}

/// The node columns a batch writes back: liveness, and with a hello its
/// columns too.
fn node_updates(with_hello: bool) -> Vec<node::Column> {
    let mut columns = vec![
        node::Column::Status,
        node::Column::StatusSinceMs,
        node::Column::LastSeenMs,
    ];
    if with_hello {
        columns.extend([
            node::Column::Hostname,
            node::Column::Model,
            node::Column::Hello,
            node::Column::IntervalMs,
        ]);
    }
    columns
}

/// Reads stored samples, with their interfaces, by id.
async fn load_samples(
    txn: &DatabaseTransaction,
    ids: &[i64],
) -> Result<HashMap<i64, PrevSample>, StoreError> {
    let mut out = HashMap::with_capacity(ids.len());
    for chunk in ids.chunks(MAX_PARAMS) {
        let samples = sample::Entity::find()
            .filter(sample::Column::Id.is_in(chunk.iter().copied()))
            .all(txn)
            .await?;
        for p in samples {
            let ifaces = ifaces::decode(p.id, &p.interfaces)?
                .into_iter()
                .map(|i| (i.name, (i.rx_bytes, i.tx_bytes)))
                .collect();
            out.insert(
                p.id,
                PrevSample {
                    seq: p.seq,
                    uptime_ms: p.uptime_ms,
                    ticks: Ticks {
                        all: [
                            p.cpu_user,
                            p.cpu_nice,
                            p.cpu_system,
                            p.cpu_idle,
                            p.cpu_iowait,
                            p.cpu_irq,
                            p.cpu_softirq,
                            p.cpu_steal,
                        ],
                    },
                    ifaces,
                },
            );
        }
    }
    Ok(out)
}

/// The rows of a new sample, with rates against `prev`, and what a later
/// sample of the batch derives its rates from.
fn new_sample(
    item: usize,
    node_id: i64,
    boot_id: String,
    t: &Telemetry,
    received_ms: i64,
    at: Placement,
    prev: Option<&PrevSample>,
) -> (NewSample, PrevSample) {
    let (t_ms, clock_ok) = (at.t_ms, at.clock_ok);
    let seq = sat(t.seq);
    let uptime_ms = sat(t.uptime_ms);
    let ticks = Ticks::from_proto(&t.cpu);
    let cpu_busy = prev.and_then(|p| {
        if uptime_ms > p.uptime_ms {
            cpu_busy_ratio(&p.ticks, &ticks)
        } else {
            None
        }
    });
    // When one report lists an interface twice, the first entry counts.
    let mut seen = HashSet::new();
    let mut stored = Vec::with_capacity(t.interfaces.len());
    let mut counters = HashMap::with_capacity(t.interfaces.len());
    for i in &t.interfaces {
        let name = clean(&i.name);
        if !seen.insert(name.clone()) {
            continue;
        }
        let (rx, tx) = (sat(i.rx_bytes), sat(i.tx_bytes));
        let (rx_bps, tx_bps) = match prev.and_then(|p| Some((p.uptime_ms, p.ifaces.get(&name)?))) {
            Some((pu, &(prx, ptx))) => (bps(prx, rx, pu, uptime_ms), bps(ptx, tx, pu, uptime_ms)),
            None => (None, None),
        };
        counters.insert(name.clone(), (rx, tx));
        stored.push(Iface {
            name,
            rx_bytes: rx,
            tx_bytes: tx,
            rx_packets: sat(i.rx_packets),
            tx_packets: sat(i.tx_packets),
            rx_errors: sat(i.rx_errors),
            tx_errors: sat(i.tx_errors),
            rx_dropped: sat(i.rx_dropped),
            tx_dropped: sat(i.tx_dropped),
            rx_bps,
            tx_bps,
        });
    }
    stored.sort_unstable_by(|a, b| a.name.cmp(&b.name));
    let clients = |count: fn(&Clients) -> u32| {
        t.clients
            .as_ref()
            .map(|c| i32::try_from(count(c)).unwrap_or(i32::MAX))
    };

    let row = sample::ActiveModel {
        id: NotSet,
        node_id: Set(node_id),
        boot_id: Set(boot_id.clone()),
        seq: Set(seq),
        t_ms: Set(t_ms),
        time_ms: Set(sat(t.time_ms)),
        received_ms: Set(received_ms),
        clock_ok: Set(clock_ok),
        uptime_ms: Set(uptime_ms),
        load1: Set(widen(t.load[0])),
        load5: Set(widen(t.load[1])),
        load15: Set(widen(t.load[2])),
        cpu_user: Set(ticks.all[0]),
        cpu_nice: Set(ticks.all[1]),
        cpu_system: Set(ticks.all[2]),
        cpu_idle: Set(ticks.all[3]),
        cpu_iowait: Set(ticks.all[4]),
        cpu_irq: Set(ticks.all[5]),
        cpu_softirq: Set(ticks.all[6]),
        cpu_steal: Set(ticks.all[7]),
        mem_total: Set(sat(t.mem_total)),
        mem_available: Set(sat(t.mem_available)),
        rootfs_size: Set(sat(t.rootfs_size)),
        rootfs_free: Set(sat(t.rootfs_free)),
        dropped: Set(sat(t.dropped)),
        cpu_busy_ratio: Set(cpu_busy),
        interfaces: Set(ifaces::encode(&stored)),
        clients_total: Set(clients(|c| c.total)),
        clients_wifi24: Set(clients(|c| c.wifi_24)),
        clients_wifi5: Set(clients(|c| c.wifi_5)),
        clients_other: Set(clients(|c| c.other)),
    };
    (
        NewSample {
            item,
            key: (node_id, boot_id, seq),
            row,
        },
        PrevSample {
            seq,
            uptime_ms,
            ticks,
            ifaces: counters,
        },
    )
}

/// `INSERT INTO table (...) VALUES (...), (...) suffix` for `rows`, in as
/// many statements of at most [`MAX_PARAMS`] parameters as it takes. Written
/// here rather than by sea-query's builder: a batch inserts thousands of
/// rows, and building them value by value through it cost more CPU than
/// the database spent storing them.
fn values_statements<A>(
    backend: DbBackend,
    rows: &[A],
    suffix: &str,
) -> Result<Vec<Statement>, StoreError>
where
    A: sea_orm::ActiveModelTrait,
{
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let (names, rows) = crate::unnest::rows_of(rows).ok_or_else(|| {
        StoreError::Invalid("rows of one insert set different columns".to_owned())
    })?;
    let table = sea_orm::Iden::to_string(&<A::Entity as Default>::default());
    let columns = names
        .iter()
        .map(|n| format!("\"{n}\""))
        .collect::<Vec<_>>()
        .join(", ");
    Ok(chunked(rows, names.len())
        .into_iter()
        .map(|chunk| {
            let (tuples, values) = values_list(backend, chunk);
            let mut sql = format!("INSERT INTO \"{table}\" ({columns}) VALUES {tuples}");
            if !suffix.is_empty() {
                sql.push(' ');
                sql.push_str(suffix);
            }
            Statement::from_sql_and_values(backend, sql, values)
        })
        .collect())
}

/// Splits rows into statements of at most [`MAX_PARAMS`] parameters.
fn chunked<T>(rows: Vec<T>, columns: usize) -> Vec<Vec<T>> {
    let per = (MAX_PARAMS / columns).max(1);
    let mut out = Vec::with_capacity(rows.len().div_ceil(per));
    let mut rows = rows.into_iter().peekable();
    while rows.peek().is_some() {
        out.push(rows.by_ref().take(per).collect());
    }
    out
}

/// `(p1, p2), (p3, p4), ...`: the bind placeholders of a `VALUES` list of
/// `rows` (each of the same width), with their values in order.
pub(crate) fn values_list(
    backend: DbBackend,
    rows: impl IntoIterator<Item = Vec<Value>>,
) -> (String, Vec<Value>) {
    let mut sql = String::new();
    let mut values = Vec::new();
    for (r, row) in rows.into_iter().enumerate() {
        sql.push_str(if r == 0 { "(" } else { ", (" });
        for (c, v) in row.into_iter().enumerate() {
            if c > 0 {
                sql.push_str(", ");
            }
            values.push(v);
            sql.push_str(&placeholder(backend, values.len()));
        }
        sql.push(')');
    }
    (sql, values)
}

/// `rows` as the row source of a hand-written statement (`WITH k(...) AS
/// ({source})`, `INSERT INTO t (...) {source}`): one array per column on
/// PostgreSQL (see [`crate::unnest::select_source`]), else, and for rows
/// that cannot be bound as arrays, `VALUES (...), (...)`.
pub(crate) fn row_source(backend: DbBackend, rows: Vec<Vec<Value>>) -> (String, Vec<Value>) {
    let rows = match backend {
        DbBackend::Postgres => match crate::unnest::select_source(rows) {
            Ok(source) => return source,
            Err(rows) => rows,
        },
        _ => rows,
    };
    let (tuples, values) = values_list(backend, rows);
    (format!("VALUES {tuples}"), values)
}

/// The `n`th (from 1) bind parameter in a hand-written statement.
pub(crate) fn placeholder(backend: DbBackend, n: usize) -> String {
    match backend {
        DbBackend::Postgres => format!("${n}"),
        _ => "?".to_owned(),
    }
}
