//! What the store returns: plain values with the JSON shapes the HTTP API
//! serves as they are.

use meshtable_proto::{CpuTimes, Hello, InterfaceCounters};
use serde::{Deserialize, Serialize};

use crate::time::rfc3339_ms;

/// Which database a [`crate::Store`] is connected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// A SQLite file or in-memory database.
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Whether a telemetry report was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Recorded {
    /// Stored now.
    Inserted,
    /// A report with the same (network, node, boot_id, seq) was stored before;
    /// nothing changed.
    Duplicate,
}

/// A node's liveness as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeStatus {
    /// Reporting.
    Online,
    /// Said it went offline, its last will arrived, or it missed its intervals.
    Offline,
}

impl NodeStatus {
    /// Both statuses, online first.
    pub const ALL: [NodeStatus; 2] = [NodeStatus::Online, NodeStatus::Offline];

    /// `"online"` or `"offline"`, as in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            NodeStatus::Online => "online",
            NodeStatus::Offline => "offline",
        }
    }

    /// Reads the stored form; anything but `online` is offline.
    pub(crate) fn from_db(s: &str) -> NodeStatus {
        if s == "online" {
            NodeStatus::Online
        } else {
            NodeStatus::Offline
        }
    }
}

impl std::fmt::Display for NodeStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<meshtable_proto::Status> for NodeStatus {
    fn from(s: meshtable_proto::Status) -> NodeStatus {
        match s {
            meshtable_proto::Status::Online => NodeStatus::Online,
            meshtable_proto::Status::Offline => NodeStatus::Offline,
        }
    }
}

/// A network and how many of its nodes are up.
///
/// JSON: `{"id","nodes","online","offline"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSummary {
    /// The network id (the topic's network level).
    pub id: String,
    /// Nodes known in the network.
    pub nodes: u64,
    /// Of those, online.
    pub online: u64,
    /// Of those, offline.
    pub offline: u64,
}

/// A node as listed.
///
/// JSON: `{"network","node","hostname","model","status","status_since","first_seen","last_seen"}`,
/// times as RFC 3339 strings; `hostname` and `model` are `null` until a hello
/// names them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSummary {
    /// The network id.
    pub network: String,
    /// The node id (the topic's node level).
    pub node: String,
    /// Hostname from the latest hello; `None` before any hello or when empty.
    pub hostname: Option<String>,
    /// Hardware model from the latest hello; `None` before any hello or when empty.
    pub model: Option<String>,
    /// Online or offline.
    pub status: NodeStatus,
    /// When the status last changed (controller clock), Unix ms.
    #[serde(rename = "status_since", with = "rfc3339_ms")]
    pub status_since_ms: i64,
    /// When the first message of the node arrived (controller clock), Unix ms.
    #[serde(rename = "first_seen", with = "rfc3339_ms")]
    pub first_seen_ms: i64,
    /// When the latest message of any kind arrived (controller clock), Unix ms.
    #[serde(rename = "last_seen", with = "rfc3339_ms")]
    pub last_seen_ms: i64,
}

/// A node with its latest hello and latest sample.
///
/// JSON: [`NodeSummary`]'s fields, plus `"hello"` (the hello as proto JSON, or
/// `null`), `"latest"` (a [`Sample`] or `null`) and `"clock"` (a
/// [`crate::ClockStatus`] or `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NodeDetail {
    /// The listing fields.
    #[serde(flatten)]
    pub summary: NodeSummary,
    /// The latest hello, if any arrived.
    pub hello: Option<Hello>,
    /// The sample with the latest time, if any.
    pub latest: Option<Sample>,
    /// The clock of the latest sample's boot: skew, flag and boot anchor
    /// (see [`crate::clock`]); `None` before a report anchored the boot.
    #[serde(default)]
    pub clock: Option<crate::ClockStatus>,
}

/// One stored telemetry report.
///
/// JSON: `{"boot_id","seq","time","received","uptime_ms","clock_ok","load","cpu",
/// "mem_total","mem_available","rootfs_size","rootfs_free","dropped","interfaces"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    /// The boot the report belongs to.
    pub boot_id: String,
    /// The report's sequence number within the agent run.
    pub seq: u64,
    /// The sample's time as series use it: the router's clock when plausible
    /// (see `clock_ok`), else the time it was received. Unix ms.
    #[serde(rename = "time", with = "rfc3339_ms")]
    pub time_ms: i64,
    /// When the controller received it (controller clock), Unix ms.
    #[serde(rename = "received", with = "rfc3339_ms")]
    pub received_ms: i64,
    /// Time since boot, ms.
    pub uptime_ms: u64,
    /// Whether `time` is the router's clock (after 2020 and at most five
    /// minutes ahead of the controller) rather than the reception time.
    pub clock_ok: bool,
    /// Load averages over 1, 5 and 15 minutes.
    pub load: [f64; 3],
    /// Cumulative CPU ticks since boot.
    pub cpu: CpuTimes,
    /// Total usable memory, bytes.
    pub mem_total: u64,
    /// Available memory, bytes.
    pub mem_available: u64,
    /// Root filesystem size, bytes.
    pub rootfs_size: u64,
    /// Root filesystem free space, bytes.
    pub rootfs_free: u64,
    /// Reports the agent's queue had dropped since it started.
    pub dropped: u64,
    /// Per-interface counters and rates, by name.
    pub interfaces: Vec<InterfaceSample>,
}

/// The counters of one interface in a sample, with rates.
///
/// JSON: the proto `InterfaceCounters` fields, plus `"rx_bps"` and `"tx_bps"`
/// (bits per second since the previous sample of the same boot, or `null`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InterfaceSample {
    /// Name and cumulative counters.
    #[serde(flatten)]
    pub counters: InterfaceCounters,
    /// Bits per second received; `None` for the first sample of a boot, after
    /// a counter reset, or when the previous sample lacks the interface.
    pub rx_bps: Option<f64>,
    /// Bits per second sent; `None` as for `rx_bps`.
    pub tx_bps: Option<f64>,
}

/// One point of a series.
///
/// JSON: `{"t": <unix ms>, "v": <f64>}`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The sample time, Unix ms.
    pub t: i64,
    /// The value.
    pub v: f64,
}
