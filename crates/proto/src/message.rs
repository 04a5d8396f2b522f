//! The versioned messages and their two encodings.
//!
//! Every message is a map whose key 0 (`"v"` in JSON) is the message version.
//! In CBOR the keys are small integers (the `#[n(..)]` indices below); in JSON
//! they are the field names. Decoders skip keys they do not know, so a field
//! added under a new index is invisible to older readers; a change older
//! readers must not misread gets a new version number instead.

use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::mesh::{Clients, Firmware, Gateway, Neighbour, Radio, Route, Station};

/// The message version this crate writes.
pub const VERSION: u16 = 1;

/// The versions this crate reads: 1 for every message, 2 for compact
/// telemetry ([`crate::CompactTelemetry`], read through a
/// [`crate::Reassembler`]).
pub const SUPPORTED_VERSIONS: &[u16] = &[1, 2];

/// Largest payload accepted by [`crate::decode`], in bytes.
pub const MAX_PAYLOAD: usize = 64 * 1024;

/// Most interfaces one hello or telemetry message may list.
pub const MAX_INTERFACES: usize = 256;

/// Longest free-text field (hostname, model, release...), in bytes.
pub const MAX_TEXT: usize = 256;

/// Retained description of a router, published at every (re)connect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Hello {
    /// Message version.
    #[n(0)]
    pub v: u16,
    /// Version of the agent that wrote this.
    #[n(1)]
    pub agent_version: String,
    /// The router's hostname.
    #[n(2)]
    pub hostname: String,
    /// Hardware model or board name; empty when unknown.
    #[n(3)]
    #[serde(default)]
    pub model: String,
    /// Operating system or firmware release (`PRETTY_NAME`, OpenWrt release...).
    #[n(4)]
    #[serde(default)]
    pub os_release: String,
    /// Kernel release (`uname -r`).
    #[n(5)]
    #[serde(default)]
    pub kernel: String,
    /// The router's network interfaces.
    #[n(6)]
    #[serde(default)]
    pub interfaces: Vec<InterfaceInfo>,
    /// Where the router is, when configured.
    #[n(7)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<Location>,
    /// How often the agent sends telemetry, in milliseconds. The controller
    /// declares a node offline after three missed intervals.
    #[n(8)]
    pub interval_ms: u32,
    /// Board name (`/tmp/sysinfo/board_name`: `tplink,cpe510-v1`), when
    /// known. Added within v1 (key 9): absent when `None`.
    #[n(9)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub board: Option<String>,
    /// The firmware release, when known. Added within v1 (key 10): absent
    /// when `None`.
    #[n(10)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub firmware: Option<Firmware>,
}

impl Default for Hello {
    /// An empty hello of the current [`VERSION`], for struct update syntax.
    fn default() -> Hello {
        Hello {
            v: VERSION,
            agent_version: String::new(),
            hostname: String::new(),
            model: String::new(),
            os_release: String::new(),
            kernel: String::new(),
            interfaces: Vec::new(),
            location: None,
            interval_ms: 0,
            board: None,
            firmware: None,
        }
    }
}

/// One network interface as described in [`Hello`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct InterfaceInfo {
    /// Interface name (`eth0`, `br-lan`...).
    #[n(0)]
    pub name: String,
    /// Hardware address as `aa:bb:cc:dd:ee:ff`, when it has one.
    #[n(1)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Maximum transmission unit.
    #[n(2)]
    #[serde(default)]
    pub mtu: u32,
    /// Addresses in CIDR notation (`192.0.2.1/24`, `fe80::1/64`).
    #[n(3)]
    #[serde(default)]
    pub addresses: Vec<String>,
    /// What sort of interface it is.
    #[n(4)]
    #[serde(default)]
    pub kind: InterfaceKind,
}

/// The sort of a network interface.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
#[cbor(index_only)]
pub enum InterfaceKind {
    /// Not known, or none of the others.
    #[default]
    #[n(0)]
    Other,
    /// Wired Ethernet.
    #[n(1)]
    Ethernet,
    /// A wireless radio interface.
    #[n(2)]
    Wireless,
    /// A bridge.
    #[n(3)]
    Bridge,
    /// The loopback interface.
    #[n(4)]
    Loopback,
    /// A VLAN on top of another interface.
    #[n(5)]
    Vlan,
    /// A tunnel (WireGuard, GRE, VPN...).
    #[n(6)]
    Tunnel,
    /// A virtual Ethernet device (veth, macvlan, dummy...).
    #[n(7)]
    Virtual,
}

/// A geographic position (WGS 84).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Location {
    /// Degrees north.
    #[n(0)]
    pub latitude: f64,
    /// Degrees east.
    #[n(1)]
    pub longitude: f64,
    /// Metres above sea level, when known.
    #[n(2)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub altitude: Option<f64>,
}

/// Retained online/offline state. The offline one is the agent's MQTT last will.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct State {
    /// Message version.
    #[n(0)]
    pub v: u16,
    /// Whether the node is up.
    #[n(1)]
    pub status: Status,
    /// Wall-clock time the state was written, Unix milliseconds; absent in the
    /// last will, whose time is not known when it is registered.
    #[n(2)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_ms: Option<u64>,
}

/// A node's reachability as the node itself (or its last will) reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
#[cbor(index_only)]
pub enum Status {
    /// Connected and reporting.
    #[n(0)]
    Online,
    /// Disconnected, cleanly or not.
    #[n(1)]
    Offline,
}

/// Periodic telemetry: cumulative counters and instantaneous gauges.
///
/// Counters are cumulative since boot; the controller derives rates from the
/// deltas between consecutive samples of the same boot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Telemetry {
    /// Message version.
    #[n(0)]
    pub v: u16,
    /// The node id; must equal the node level of the topic.
    #[n(1)]
    pub node: String,
    /// Identifies one boot of the router (Linux `/proc/sys/kernel/random/boot_id`).
    #[n(2)]
    pub boot_id: String,
    /// Sequence number: 0 for the first report of a boot, growing by one per
    /// report, and continued across agent restarts within the boot (the agent
    /// keeps it in its state directory). `(node, boot_id, seq)` identifies a
    /// report.
    #[n(3)]
    pub seq: u64,
    /// Router wall-clock time, Unix milliseconds. Routers without a real-time
    /// clock report 1970 until NTP answers.
    #[n(4)]
    pub time_ms: u64,
    /// Time since boot, milliseconds.
    #[n(5)]
    pub uptime_ms: u64,
    /// Load averages over 1, 5 and 15 minutes.
    #[n(6)]
    pub load: [f32; 3],
    /// Cumulative CPU time since boot, split by state.
    #[n(7)]
    pub cpu: CpuTimes,
    /// Total usable memory, bytes.
    #[n(8)]
    pub mem_total: u64,
    /// Memory available for new work without swapping (`MemAvailable`), bytes.
    #[n(9)]
    pub mem_available: u64,
    /// Size of the root filesystem, bytes.
    #[n(10)]
    pub rootfs_size: u64,
    /// Space on the root filesystem available to unprivileged users, bytes.
    #[n(11)]
    pub rootfs_free: u64,
    /// Per-interface counters.
    #[n(12)]
    #[serde(default)]
    pub interfaces: Vec<InterfaceCounters>,
    /// Reports the agent's bounded spool has dropped since the spool was
    /// created (the spool drops the oldest report when the broker is
    /// unreachable for longer than it can hold). The count is kept in the
    /// spool directory, so it survives agent restarts and never goes down
    /// while that directory lives, except that an agent with a spool write
    /// budget (flash) persists it only when it stops cleanly: after a crash
    /// it may count lower, missing the drops since its last clean stop.
    #[n(13)]
    #[serde(default)]
    pub dropped: u64,
    /// Whether this report is backfill: it was not sent when it was
    /// collected but waited in the agent's spool across a broker outage or an
    /// agent restart, so it describes the past, and the controller must not
    /// alert on it. Absent means `false`, and `false` is never written, so
    /// live reports keep their size and older readers see nothing new.
    #[n(14)]
    #[cbor(skip_if = "is_false")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub backfill: bool,
    /// Wireless interfaces (key 15, added within v1; absent when empty).
    #[n(15)]
    #[cbor(skip_if = "Vec::is_empty")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub radios: Vec<Radio>,
    /// Associated stations and mesh peers of the radios (key 16, added
    /// within v1; absent when empty).
    #[n(16)]
    #[cbor(skip_if = "Vec::is_empty")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stations: Vec<Station>,
    /// Mesh neighbours seen by babeld or batman-adv (key 17, added within
    /// v1; absent when empty).
    #[n(17)]
    #[cbor(skip_if = "Vec::is_empty")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbours: Vec<Neighbour>,
    /// Routes installed by the mesh routing daemon (key 18, added within v1;
    /// absent when empty).
    #[n(18)]
    #[cbor(skip_if = "Vec::is_empty")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// Client counts (key 19, added within v1; absent when `None`).
    #[n(19)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clients: Option<Clients>,
    /// The default route and uplink (key 20, added within v1; absent when
    /// `None`).
    #[n(20)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<Gateway>,
}

impl Default for Telemetry {
    /// An empty report of the current [`VERSION`], for struct update syntax.
    fn default() -> Telemetry {
        Telemetry {
            v: VERSION,
            node: String::new(),
            boot_id: String::new(),
            seq: 0,
            time_ms: 0,
            uptime_ms: 0,
            load: [0.0; 3],
            cpu: CpuTimes::default(),
            mem_total: 0,
            mem_available: 0,
            rootfs_size: 0,
            rootfs_free: 0,
            interfaces: Vec::new(),
            dropped: 0,
            backfill: false,
            radios: Vec::new(),
            stations: Vec::new(),
            neighbours: Vec::new(),
            routes: Vec::new(),
            clients: None,
            gateway: None,
        }
    }
}

/// Serialization predicate: `false` fields are left out of the message.
fn is_false(b: &bool) -> bool {
    !*b
}

/// Cumulative CPU time since boot, in clock ticks (`USER_HZ`, 100 per second
/// on Linux), summed over all CPUs, as in the first line of `/proc/stat`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct CpuTimes {
    /// Normal processes in user mode.
    #[n(0)]
    pub user: u64,
    /// Niced processes in user mode.
    #[n(1)]
    pub nice: u64,
    /// Kernel mode.
    #[n(2)]
    pub system: u64,
    /// Idle.
    #[n(3)]
    pub idle: u64,
    /// Waiting for I/O.
    #[n(4)]
    #[serde(default)]
    pub iowait: u64,
    /// Servicing interrupts.
    #[n(5)]
    #[serde(default)]
    pub irq: u64,
    /// Servicing softirqs.
    #[n(6)]
    #[serde(default)]
    pub softirq: u64,
    /// Stolen by the hypervisor.
    #[n(7)]
    #[serde(default)]
    pub steal: u64,
}

/// Cumulative counters of one interface (the kernel's 64-bit link statistics).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct InterfaceCounters {
    /// Interface name.
    #[n(0)]
    pub name: String,
    /// Bytes received.
    #[n(1)]
    pub rx_bytes: u64,
    /// Bytes sent.
    #[n(2)]
    pub tx_bytes: u64,
    /// Packets received.
    #[n(3)]
    pub rx_packets: u64,
    /// Packets sent.
    #[n(4)]
    pub tx_packets: u64,
    /// Receive errors.
    #[n(5)]
    #[serde(default)]
    pub rx_errors: u64,
    /// Transmit errors.
    #[n(6)]
    #[serde(default)]
    pub tx_errors: u64,
    /// Received packets dropped.
    #[n(7)]
    #[serde(default)]
    pub rx_dropped: u64,
    /// Packets dropped before sending.
    #[n(8)]
    #[serde(default)]
    pub tx_dropped: u64,
}
