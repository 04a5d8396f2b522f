//! The meshtable wire format, shared by the agent, the controller and the
//! simulator. No IO lives here.
//!
//! # Topics
//!
//! `meshtable/v1/{network}/{node}/{kind}` where `network` and `node` are
//! 1-64 characters of `[a-z0-9_-]` and `kind` is one of:
//!
//! | kind | message | retained | QoS | sent |
//! |---|---|---|---|---|
//! | `hello` | [`Hello`] | yes | 1 | at every (re)connect |
//! | `state` | [`State`] | yes | 1 | `online` at connect; `offline` is the last will |
//! | `telemetry` | [`Telemetry`] (v1), or [`CompactTelemetry`] (v2) | no | 1 | every interval |
//!
//! # Encodings
//!
//! Agents send compact CBOR (RFC 8949): every message is a map with small
//! integer keys, key 0 being the version. JSON with the same schema and the
//! field names as keys is accepted too, so that `mosquitto_pub` can publish a
//! report by hand. Readers tell the two apart by the first byte (see [`sniff`]).
//!
//! ## Schema, version 1
//!
//! `Hello`: 0 `v`, 1 `agent_version`, 2 `hostname`, 3 `model`, 4 `os_release`,
//! 5 `kernel`, 6 `interfaces` (list of `InterfaceInfo`), 7 `location`
//! (optional), 8 `interval_ms`, 9 `board` (optional), 10 `firmware`
//! (optional `Firmware`; keys 9-10 added within v1).
//!
//! `Firmware`: 0 `distribution`, 1 `release`, 2 `revision` (optional),
//! 3 `target` (optional).
//!
//! `InterfaceInfo`: 0 `name`, 1 `mac` (optional), 2 `mtu`, 3 `addresses`
//! (CIDR strings), 4 `kind` (CBOR: 0 other, 1 ethernet, 2 wireless, 3 bridge,
//! 4 loopback, 5 vlan, 6 tunnel, 7 virtual; JSON: the name).
//!
//! `Location`: 0 `latitude`, 1 `longitude`, 2 `altitude` (optional).
//!
//! `State`: 0 `v`, 1 `status` (CBOR: 0 online, 1 offline; JSON: the name),
//! 2 `time_ms` (optional).
//!
//! `Telemetry`: 0 `v`, 1 `node`, 2 `boot_id`, 3 `seq`, 4 `time_ms`,
//! 5 `uptime_ms`, 6 `load` (three floats), 7 `cpu` (`CpuTimes`), 8 `mem_total`,
//! 9 `mem_available`, 10 `rootfs_size`, 11 `rootfs_free`, 12 `interfaces`
//! (list of `InterfaceCounters`), 13 `dropped` (reports the agent's spool
//! dropped since the spool was created), 14 `backfill` (optional, absent
//! means `false` and `false` is never written: `true` marks a report the
//! agent replayed from its spool after an outage or a restart, old data the
//! controller must not alert on; added within v1, see Compatibility),
//! 15 `radios` (list of `Radio`), 16 `stations` (list of `Station`),
//! 17 `neighbours` (list of `Neighbour`), 18 `routes` (list of `Route`),
//! 19 `clients` (optional `Clients`), 20 `gateway` (optional `Gateway`).
//! Keys 15-20 were added within v1 and are absent when empty.
//!
//! `CpuTimes`: 0 `user`, 1 `nice`, 2 `system`, 3 `idle`, 4 `iowait`, 5 `irq`,
//! 6 `softirq`, 7 `steal` (clock ticks).
//!
//! `InterfaceCounters`: 0 `name`, 1 `rx_bytes`, 2 `tx_bytes`, 3 `rx_packets`,
//! 4 `tx_packets`, 5 `rx_errors`, 6 `tx_errors`, 7 `rx_dropped`, 8 `tx_dropped`.
//!
//! `Radio`: 0 `ifname`, 1 `ssid`, 2 `mode` (CBOR: 0 other, 1 ap, 2 mesh_point,
//! 3 adhoc, 4 station, 5 monitor; JSON: the name), 3 `frequency_mhz`,
//! 4 `channel`, 5 `width_mhz`, 6 `tx_power_mbm`, 7 `noise_dbm`, 8 `active_ms`,
//! 9 `busy_ms` (all but 0, 2 and 3 optional; 8 and 9 cumulative).
//!
//! `Station`: 0 `ifname`, 1 `mac` (mesh peers and the uplink AP only, never a
//! client), 2 `client_id` (keyed hash, clients only; never both 1 and 2),
//! 3 `mesh` (absent means `false`), 4 `signal_dbm`, 5 `signal_avg_dbm`,
//! 6 `tx_bitrate_100kbps`, 7 `rx_bitrate_100kbps` (4-7 optional), 8 `rx_bytes`,
//! 9 `tx_bytes`, 10 `tx_retries`, 11 `tx_failed`, 12 `inactive_ms` (8-12 absent
//! in CBOR when zero).
//!
//! `Neighbour`: 0 `protocol` (CBOR: 0 babel, 1 batman_adv; JSON: the name),
//! 1 `ifname`, 2 `address` (babel: the neighbour's link-local IPv6 address;
//! batman-adv: the neighbour interface's MAC), 3 `rxcost`, 4 `txcost`,
//! 5 `cost`, 6 `tq` (0-255), 7 `best` (absent means `false`), 8 `originator`
//! (3-6 and 8 optional). The controller joins the far end to a node by
//! matching `address` against the interface addresses (IP part) and MACs in
//! the hellos of the same network.
//!
//! `Route`: 0 `protocol`, 1 `prefix` (CIDR), 2 `via` (optional), 3 `ifname`
//! (optional), 4 `metric`, 5 `installed` (absent means `false`).
//!
//! `Clients`: 0 `total`, 1 `wifi_24`, 2 `wifi_5`, 3 `other`, 4 `ids` (keyed
//! hashes; absent when empty).
//!
//! `Gateway`: 0 `via` (optional), 1 `ifname` (the uplink).
//!
//! Limits: text fields at most [`MAX_TEXT`] bytes without control characters;
//! at most [`MAX_INTERFACES`] interfaces (and addresses per interface),
//! [`MAX_RADIOS`] radios, [`MAX_STATIONS`] stations, [`MAX_NEIGHBOURS`]
//! neighbours, [`MAX_ROUTES`] routes and [`MAX_CLIENT_IDS`] client ids;
//! station, radio, neighbour and gateway interface names, neighbour addresses,
//! route prefixes and client ids are not empty. A message breaking one is
//! refused as `invalid`.
//!
//! ## Schema, version 2: compact telemetry
//!
//! Version 2 is [`CompactTelemetry`] alone, on the telemetry topic: a report
//! as its difference from the report before it (`seq - 1` of the same boot),
//! about 150 bytes where the full v1 report of a mesh router is 1.9 KB. Its
//! layout is in the [`compact`] module. Agents write it by default (a
//! controller must read it: see Compatibility), and always write the full v1 report
//! for the first report of a connection, at least every
//! [`CompactPolicy::full_every`] reports, and when more than numbers and
//! list members changed. Readers decode v1 and v2 telemetry with a
//! [`Reassembler`], which returns complete v1 [`Telemetry`] values with
//! absolute counters; a v2 report without its predecessor is refused as
//! `missing_base`. [`decode`] refuses v2 as an unknown version. Hello and
//! state stay version 1.
//!
//! A JSON telemetry report by hand:
//!
//! ```text
//! mosquitto_pub -t meshtable/v1/demo/node1/telemetry -m '{"v":1,"node":"node1",
//!   "boot_id":"b1","seq":0,"time_ms":1764000000000,"uptime_ms":1000,
//!   "load":[0.1,0.1,0.1],"cpu":{"user":1,"nice":0,"system":1,"idle":10},
//!   "mem_total":1000,"mem_available":500,"rootfs_size":100,"rootfs_free":50}'
//! ```
//!
//! # Signed reports
//!
//! An enrolled node wraps every message it publishes (hello, state, its
//! last will, telemetry, replays from its spool) in a signed envelope, see
//! [`sign`]: a CBOR array `[1, signer, payload, signature]` whose ed25519 signature
//! covers `"meshtable-sig-v1" 0x00 u16_be(len(topic)) topic payload`, so a
//! report cannot be replayed under another topic. The payload inside is the
//! message exactly as above. Readers tell an envelope by its first byte
//! (`0x84`); the controller verifies it against the key the node enrolled
//! with, and accepts bare messages only from networks set to accept unsigned
//! reports. The golden envelope, signed with a fixed test key, is
//! `tests/golden-sign/v1/telemetry.signed.cbor`.
//!
//! # Compatibility
//!
//! Golden vectors of every version live in `tests/golden/v{N}/` and are decoded
//! by every later build, so agents of an older version keep working; this
//! build must write the vectors of every version it still writes byte for
//! byte. Committed vectors are never rewritten.
//!
//! When a change stays within a version, and when it needs a new one:
//!
//! - Readers skip keys they do not know (CBOR and JSON alike). So a new
//!   optional field under a new key, whose absence means what older writers
//!   meant, stays in the same version: older readers ignore it, newer readers
//!   decode older messages with the default. Write it only when it differs
//!   from the default, so that messages that do not use it keep their bytes.
//!   Its vectors are added to the version's directory beside the old ones.
//!   (`Telemetry::backfill`, key 14, was added to v1 this way.)
//! - A key's number, type or meaning never changes within a version, a
//!   required field is never added, and a key is never reused. Any change of
//!   that kind, or one an older reader would misread by skipping the new key,
//!   is a new version: [`SUPPORTED_VERSIONS`] grows, and a new
//!   `tests/golden/v{N}/` directory holds its vectors. (Compact telemetry
//!   became version 2 this way, [`COMPACT_VERSION`]: it is a different
//!   message, whose numbers are differences that a v1 reader must not take
//!   for counters. [`VERSION`], what hello, state and full telemetry are
//!   written as, stays 1, and each message type decodes only its own
//!   versions, [`Message::VERSIONS`].)
//!
//! Additions within v1 so far: `Telemetry::backfill` (key 14); for issue 3,
//! `Hello::board` and `Hello::firmware` (keys 9-10) and the telemetry keys
//! 15-20.
//!
//! Compact telemetry and controller versions: the agent sends v2 compact
//! telemetry by default (`--compact`, default on since this version), which
//! only a controller of this version or later reads; an older controller
//! refuses every compact report as `unknown_version` and keeps only the full
//! ones (one in 120). Upgrade the controller first, or run the agents with
//! `--compact=false` until it is. The controller keeps each node's last
//! full report in its database (table `telemetry_base`), so a restart of
//! the controller does not refuse the compact reports that follow.

mod broker;
mod codec;
pub mod compact;
pub mod examples;
mod mesh;
mod message;
pub mod sign;
mod topic;

pub use broker::{BrokerUrl, BrokerUrlError, DEFAULT_MQTT_PORT, DEFAULT_MQTTS_PORT};
pub use codec::{
    DecodeError, Encoding, Message, Report, decode, encode, encode_cbor, encode_json, sniff,
};
pub use compact::{COMPACT_VERSION, CompactPolicy, CompactTelemetry, Compactor, Reassembler};
pub use mesh::{
    Clients, Firmware, Gateway, MAX_CLIENT_IDS, MAX_NEIGHBOURS, MAX_RADIOS, MAX_ROUTES,
    MAX_STATIONS, MeshProtocol, Neighbour, Radio, RadioMode, Route, Station,
};
pub use message::{
    CpuTimes, Hello, InterfaceCounters, InterfaceInfo, InterfaceKind, Location, MAX_INTERFACES,
    MAX_PAYLOAD, MAX_TEXT, SUPPORTED_VERSIONS, State, Status, Telemetry, VERSION,
};
pub use topic::{Kind, MAX_ID_LEN, TOPIC_ROOT, TOPIC_VERSION, Topic, TopicError, validate_id};
