//! The issue-3 additions to v1: firmware in the hello; radios, stations,
//! mesh neighbours, routes, clients and the gateway in telemetry.
//!
//! All of them travel under new optional keys of the v1 messages and are left
//! out when they hold their default (empty list, `None`, `false`, zero
//! counter), so reports that do not use them keep their v1 bytes, and older
//! readers skip them.

use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

/// Most radios one telemetry report may list.
pub const MAX_RADIOS: usize = 64;

/// Most stations (associated clients, mesh peers, the uplink AP) one
/// telemetry report may list.
pub const MAX_STATIONS: usize = 1024;

/// Most mesh neighbours one telemetry report may list.
pub const MAX_NEIGHBOURS: usize = 1024;

/// Most routes one telemetry report may list.
pub const MAX_ROUTES: usize = 4096;

/// Most client ids one telemetry report may list.
pub const MAX_CLIENT_IDS: usize = 4096;

pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

pub(crate) fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

pub(crate) fn is_zero_u32(n: &u32) -> bool {
    *n == 0
}

/// The firmware a router runs, from `/etc/openwrt_release` where present.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Firmware {
    /// Distribution (`DISTRIB_ID`: `OpenWrt`, `Gluon`...).
    #[n(0)]
    #[serde(default)]
    pub distribution: String,
    /// Release (`DISTRIB_RELEASE`: `23.05.3`).
    #[n(1)]
    #[serde(default)]
    pub release: String,
    /// Source revision (`DISTRIB_REVISION`: `r23809-234f1a2efa`), when known.
    #[n(2)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revision: Option<String>,
    /// Build target (`DISTRIB_TARGET`: `ath79/generic`), when known.
    #[n(3)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// What a radio interface is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
#[cbor(index_only)]
pub enum RadioMode {
    /// Not known, or none of the others.
    #[default]
    #[n(0)]
    Other,
    /// Access point.
    #[n(1)]
    Ap,
    /// 802.11s mesh point.
    #[n(2)]
    MeshPoint,
    /// Ad-hoc (IBSS).
    #[n(3)]
    Adhoc,
    /// Station (client of another access point).
    #[n(4)]
    Station,
    /// Monitor.
    #[n(5)]
    Monitor,
}

/// One wireless interface (nl80211 `GET_INTERFACE` and `GET_SURVEY`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Radio {
    /// Interface name (`wlan0`, `mesh0`...).
    #[n(0)]
    pub ifname: String,
    /// SSID (or mesh id), when it has one.
    #[n(1)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssid: Option<String>,
    /// Operating mode.
    #[n(2)]
    #[serde(default)]
    pub mode: RadioMode,
    /// Centre frequency of the control channel, MHz; 0 when not operating.
    #[n(3)]
    #[serde(default)]
    pub frequency_mhz: u32,
    /// Channel number, when known.
    #[n(4)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub channel: Option<u16>,
    /// Channel width, MHz (20, 40, 80, 160...), when known.
    #[n(5)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub width_mhz: Option<u16>,
    /// Transmit power, mBm (hundredths of dBm), when known.
    #[n(6)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_power_mbm: Option<i32>,
    /// Noise floor of the operating channel, dBm, when the driver reports it.
    #[n(7)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_dbm: Option<i16>,
    /// Cumulative time the radio was on the operating channel, ms (survey
    /// "active time"), when the driver reports it.
    #[n(8)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_ms: Option<u64>,
    /// Cumulative time the channel was sensed busy, ms (survey "busy time"),
    /// when the driver reports it. Busy over active is the channel load.
    #[n(9)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub busy_ms: Option<u64>,
}

/// One associated station or mesh peer of a radio (nl80211 `GET_STATION`).
///
/// A client is identified only by `client_id`, a keyed hash: a raw client
/// MAC never leaves the router. `mac` is for mesh peers and the uplink AP.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Station {
    /// The local radio interface it is associated with.
    #[n(0)]
    pub ifname: String,
    /// The peer's MAC (`aa:bb:cc:dd:ee:ff`): mesh peers and the uplink AP
    /// only, never a client.
    #[n(1)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mac: Option<String>,
    /// Keyed hash of a client's MAC with the network's salt: clients only.
    #[n(2)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Whether this is a mesh peer (absent means `false`).
    #[n(3)]
    #[cbor(skip_if = "is_false")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub mesh: bool,
    /// Signal of the last received frame, dBm.
    #[n(4)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_dbm: Option<i16>,
    /// Average signal, dBm.
    #[n(5)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal_avg_dbm: Option<i16>,
    /// Transmit bitrate to the peer, units of 100 kbit/s.
    #[n(6)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tx_bitrate_100kbps: Option<u32>,
    /// Receive bitrate from the peer, units of 100 kbit/s.
    #[n(7)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rx_bitrate_100kbps: Option<u32>,
    /// Bytes received from the peer (cumulative while associated).
    #[n(8)]
    #[cbor(skip_if = "is_zero_u64")]
    #[serde(default)]
    pub rx_bytes: u64,
    /// Bytes sent to the peer (cumulative while associated).
    #[n(9)]
    #[cbor(skip_if = "is_zero_u64")]
    #[serde(default)]
    pub tx_bytes: u64,
    /// Transmit retries (cumulative while associated).
    #[n(10)]
    #[cbor(skip_if = "is_zero_u32")]
    #[serde(default)]
    pub tx_retries: u32,
    /// Failed transmissions (cumulative while associated).
    #[n(11)]
    #[cbor(skip_if = "is_zero_u32")]
    #[serde(default)]
    pub tx_failed: u32,
    /// Time since the last activity from the peer, ms.
    #[n(12)]
    #[cbor(skip_if = "is_zero_u32")]
    #[serde(default)]
    pub inactive_ms: u32,
}

/// A mesh routing protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, Encode, Decode)]
#[serde(rename_all = "snake_case")]
#[cbor(index_only)]
pub enum MeshProtocol {
    /// babeld.
    #[default]
    #[n(0)]
    Babel,
    /// batman-adv.
    #[n(1)]
    BatmanAdv,
}

/// One mesh neighbour (a link seen by the routing daemon).
///
/// The controller joins the far end to a node by matching `address` against
/// the addresses (IP part of the CIDR) or `mac` of the interfaces in the
/// hellos of the same network.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Neighbour {
    /// Which daemon reported it.
    #[n(0)]
    #[serde(default)]
    pub protocol: MeshProtocol,
    /// The local interface of the link.
    #[n(1)]
    pub ifname: String,
    /// The far end: babel, the neighbour's link-local IPv6 address;
    /// batman-adv, the neighbour interface's MAC.
    #[n(2)]
    pub address: String,
    /// babel: cost of receiving from the neighbour.
    #[n(3)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rxcost: Option<u32>,
    /// babel: cost of sending to the neighbour, as it reports it.
    #[n(4)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txcost: Option<u32>,
    /// babel: the link cost babeld uses.
    #[n(5)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost: Option<u32>,
    /// batman-adv: transmit quality, 0-255.
    #[n(6)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tq: Option<u8>,
    /// batman-adv: whether this neighbour is the best next hop towards
    /// `originator` (absent means `false`).
    #[n(7)]
    #[cbor(skip_if = "is_false")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub best: bool,
    /// batman-adv: the originator (primary MAC) the neighbour belongs to.
    #[n(8)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub originator: Option<String>,
}

/// One route of a mesh routing daemon (babeld's installed routes).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Route {
    /// Which daemon reported it.
    #[n(0)]
    #[serde(default)]
    pub protocol: MeshProtocol,
    /// Destination prefix in CIDR notation.
    #[n(1)]
    pub prefix: String,
    /// Next hop address, when there is one.
    #[n(2)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Outgoing interface, when known.
    #[n(3)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ifname: Option<String>,
    /// Route metric.
    #[n(4)]
    #[serde(default)]
    pub metric: u32,
    /// Whether the daemon installed it in the kernel (absent means `false`).
    #[n(5)]
    #[cbor(skip_if = "is_false")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub installed: bool,
}

/// Client counts: associated wifi stations and DHCP leases.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Clients {
    /// All clients.
    #[n(0)]
    #[serde(default)]
    pub total: u32,
    /// Clients on 2.4 GHz wifi.
    #[n(1)]
    #[serde(default)]
    pub wifi_24: u32,
    /// Clients on 5 GHz wifi.
    #[n(2)]
    #[serde(default)]
    pub wifi_5: u32,
    /// Other clients (wired, or known from a DHCP lease only).
    #[n(3)]
    #[serde(default)]
    pub other: u32,
    /// Keyed hashes of the clients' MACs, for counting unique users; empty
    /// when the agent has no salt.
    #[n(4)]
    #[cbor(skip_if = "Vec::is_empty")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
}

/// The router's default route.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct Gateway {
    /// The next hop, when the route has one.
    #[n(0)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The uplink interface.
    #[n(1)]
    pub ifname: String,
}
