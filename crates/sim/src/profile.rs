//! What a simulated router is: its hardware, firmware, interfaces and traffic
//! habits, derived from one snapshot node (and the links that name its
//! interfaces) plus the fleet seed. Pure data, no IO.

use std::collections::{BTreeMap, BTreeSet};

use meshtable_proto::{
    Clients, Gateway, Hello, InterfaceInfo, InterfaceKind, Location, Neighbour, VERSION,
};

use crate::rng::Rng;
use crate::snapshot::{LinkKind, Snapshot, SnapshotNode, parse_time_ms};

/// The agent version simulated routers announce (the crate version, marked as simulated).
pub const AGENT_VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), "+sim");

/// Longest uptime a simulated router starts with. A few snapshot nodes claim
/// boot times years in the past; a router's counters then start very large.
pub const MAX_START_UPTIME_MS: u64 = 730 * 86_400_000;

const MIB: u64 = 1024 * 1024;

/// How a simulated router uses one of its interfaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `br-client`: the bridge the clients live on.
    ClientBridge,
    /// `client0`: the access-point radio clients associate with.
    ClientRadio,
    /// `mesh0`, `mesh1`: 802.11s mesh radios.
    MeshRadio,
    /// `eth0`: the cable (WAN, mesh on cable, or a server's uplink).
    Ethernet,
    /// `mesh-vpn`: the fastd tunnel to the gateways.
    Vpn,
}

/// One interface of a simulated router and its mean traffic, in bytes per second.
#[derive(Debug, Clone, PartialEq)]
pub struct InterfaceProfile {
    /// As announced in the hello.
    pub info: InterfaceInfo,
    /// How the router uses it.
    pub role: Role,
    /// Protocol chatter (batman-adv OGMs, neighbour discovery...), received.
    pub background_rx: f64,
    /// Protocol chatter, sent.
    pub background_tx: f64,
    /// The clients' traffic received at the busiest time of day.
    pub client_rx: f64,
    /// The clients' traffic sent at the busiest time of day.
    pub client_tx: f64,
    /// Mean size of a received client packet, bytes.
    pub client_rx_packet: f64,
    /// Mean size of a sent client packet, bytes.
    pub client_tx_packet: f64,
    /// Share of received packets the kernel drops (unknown protocols on bridges, ...).
    pub rx_drop_share: f64,
    /// Share of sent packets that fail (retries exhausted on radios).
    pub tx_error_share: f64,
}

/// Everything fixed about one simulated router.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeProfile {
    /// meshtable node id (the snapshot's `node_id`).
    pub node_id: String,
    /// Hostname.
    pub hostname: String,
    /// Hardware model; empty when the snapshot does not know it.
    pub model: String,
    /// `gluon-v2018.2.3 / 1.2.3`; empty when unknown.
    pub os_release: String,
    /// Kernel release that firmware shipped with; empty when unknown.
    pub kernel: String,
    /// Where the router is.
    pub location: Option<Location>,
    /// Whether the router was online in the snapshot.
    pub online: bool,
    /// An uplink server (Debian, virtual machine) rather than a router.
    pub server: bool,
    /// Whether the snapshot had node information for it (some Leipzig nodes
    /// only carry placeholder values, which are replaced by seeded ones).
    pub known: bool,
    /// CPUs.
    pub nproc: u32,
    /// `MemTotal`, bytes.
    pub mem_total: u64,
    /// Mean used share of memory.
    pub mem_usage: f64,
    /// Root (overlay) filesystem size, bytes.
    pub rootfs_size: u64,
    /// Used share of the root filesystem.
    pub rootfs_usage: f64,
    /// Mean one-minute load.
    pub load: f64,
    /// Uptime when the simulation starts, milliseconds.
    pub start_uptime_ms: u64,
    /// Connected clients.
    pub clients: u32,
    /// Offset of local solar time from UTC, milliseconds (from the longitude):
    /// traffic follows the day.
    pub solar_offset_ms: i64,
    /// The interfaces, in hello order.
    pub interfaces: Vec<InterfaceProfile>,
    /// Its batman-adv neighbours (see [`crate::mesh`]).
    pub neighbours: Vec<Neighbour>,
    /// Its default route (see [`crate::mesh`]).
    pub gateway: Option<Gateway>,
    /// Its client counts (routers only).
    pub mesh_clients: Option<Clients>,
}

/// Hardware facts by model: RAM and flash in MiB.
struct Hardware {
    ram_mib: u64,
    flash_mib: u64,
}

/// RAM and flash of the models found in the snapshots, matched by lowercase
/// substring, first match wins. Unknown models get 64 MiB RAM and 8 MiB flash.
const HARDWARE: &[(&str, u64, u64)] = &[
    ("wr1043n/nd v1", 32, 8),
    ("wr1043n v5", 64, 16),
    ("wr1043", 64, 8),
    ("wr841", 32, 4),
    ("841", 32, 4),
    ("wr741", 32, 4),
    ("wr740", 32, 4),
    ("wr940", 32, 4),
    ("wr941", 32, 4),
    ("wr710", 32, 8),
    ("wa850", 32, 4),
    ("wa860", 64, 8),
    ("wa801", 32, 4),
    ("wrt54g", 16, 4),
    ("archer c59", 64, 8),
    ("archer c60", 64, 8),
    ("archer c", 128, 16),
    ("wdr4900", 128, 16),
    ("wdr", 128, 8),
    ("wndr", 64, 8),
    ("cpe", 64, 8),
    ("unifi", 128, 16),
    ("fritz", 128, 32),
    ("erx", 256, 256),
    ("xw", 64, 8),
    ("nanostation", 32, 8),
    ("picostation", 32, 8),
    ("bullet", 32, 8),
    ("m2", 32, 8),
    ("m5", 32, 8),
    ("re450", 64, 8),
];

fn hardware(model: &str) -> Hardware {
    let m = model.to_ascii_lowercase();
    HARDWARE
        .iter()
        .find(|(pattern, _, _)| m.contains(pattern))
        .map(|&(_, ram_mib, flash_mib)| Hardware { ram_mib, flash_mib })
        .unwrap_or(Hardware {
            ram_mib: 64,
            flash_mib: 8,
        })
}

/// Servers: Debian gateways, virtual machines, thin clients.
fn is_server(node: &SnapshotNode, model: &str) -> bool {
    let m = model.to_ascii_lowercase();
    let base = node.firmware.base.as_deref().unwrap_or_default();
    base.eq_ignore_ascii_case("debian")
        || ["qemu", "futro", "server", "x86", "pc engines", "virtual"]
            .iter()
            .any(|p| m.contains(p))
}

/// The kernel a firmware base shipped with (approximately; for the hello).
fn kernel_for(base: &str, release: &str) -> &'static str {
    const KERNELS: &[(&str, &str)] = &[
        ("gluon-v2016", "3.18.44"),
        ("gluon-v2017", "4.4.153"),
        ("gluon-v2018.1", "4.4.140"),
        ("gluon-v2018", "4.9.164"),
        ("gluon-v2019", "4.14.171"),
        ("gluon-v2020", "4.14.195"),
        ("gluon-v2021", "5.4.143"),
        ("gluon-v2022", "5.10.146"),
        ("gluon-v2023", "5.15.137"),
    ];
    if base.eq_ignore_ascii_case("debian") {
        return if release.starts_with("10") {
            "4.19.0-8-amd64"
        } else if release.starts_with('9') {
            "4.9.0-12-amd64"
        } else {
            ""
        };
    }
    KERNELS
        .iter()
        .find(|(prefix, _)| base.starts_with(prefix))
        .map(|(_, k)| *k)
        .unwrap_or("")
}

fn parse_mac(mac: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = mac.split(':');
    for byte in &mut out {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

fn format_mac(b: [u8; 6]) -> String {
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    )
}

/// A locally administered MAC derived from the primary one, as Gluon derives
/// its interface addresses.
fn derived_mac(primary: Option<[u8; 6]>, node_id: &str, index: u8) -> String {
    let mut b = primary.unwrap_or_else(|| {
        let mut r = Rng::derive(0, node_id, "mac");
        let v = r.next_u64().to_be_bytes();
        [v[0], v[1], v[2], v[3], v[4], v[5]]
    });
    b[0] = (b[0] | 0x02) & 0xfe;
    b[5] = b[5].wrapping_add(index.wrapping_mul(17).wrapping_add(1));
    format_mac(b)
}

/// Interface MAC addresses the snapshot's links name, per node and link kind.
pub type LinkAddrs = BTreeMap<(String, LinkKind), BTreeSet<String>>;

/// Collects, for every node, the MAC addresses its links use per link kind.
pub fn link_addrs(snapshot: &Snapshot) -> LinkAddrs {
    let mut out = LinkAddrs::new();
    for l in &snapshot.links {
        for (node, addr) in [(&l.source, &l.source_addr), (&l.target, &l.target_addr)] {
            if let Some(addr) = addr.as_deref().filter(|a| parse_mac(a).is_some()) {
                out.entry((node.clone(), l.kind))
                    .or_default()
                    .insert(addr.to_ascii_lowercase());
            }
        }
    }
    out
}

/// The routers of a whole snapshot, in snapshot order.
pub fn fleet(snapshot: &Snapshot, seed: u64) -> Vec<NodeProfile> {
    let addrs = link_addrs(snapshot);
    let snapshot_ms = snapshot.timestamp_ms();
    let mut profiles: Vec<NodeProfile> = snapshot
        .nodes
        .iter()
        .map(|n| NodeProfile::new(n, snapshot_ms, &addrs, seed))
        .collect();
    crate::mesh::attach(snapshot, &mut profiles);
    profiles
}

fn clamp_share(v: Option<f64>) -> Option<f64> {
    v.filter(|v| v.is_finite()).map(|v| v.clamp(0.0, 1.0))
}

impl NodeProfile {
    /// Derives the router of one snapshot node. `snapshot_ms` is the
    /// snapshot's time (boot times are relative to it); `addrs` comes from
    /// [`link_addrs`].
    pub fn new(
        node: &SnapshotNode,
        snapshot_ms: Option<i64>,
        addrs: &LinkAddrs,
        seed: u64,
    ) -> NodeProfile {
        let mut rng = Rng::derive(seed, &node.node_id, "profile");
        let model = node
            .model
            .as_deref()
            .map(str::trim)
            .filter(|m| !m.is_empty() && !m.eq_ignore_ascii_case("none"))
            .unwrap_or_default()
            .to_owned();
        let base = node.firmware.base.as_deref().unwrap_or_default().trim();
        let release = node.firmware.release.as_deref().unwrap_or_default().trim();
        let os_release = match (base.is_empty(), release.is_empty()) {
            (false, false) => format!("{base} / {release}"),
            (false, true) => base.to_owned(),
            (true, false) => release.to_owned(),
            (true, true) => String::new(),
        };
        let kernel = kernel_for(base, release).to_owned();
        let server = is_server(node, &model);
        let known = !base.is_empty() || node.nproc.unwrap_or(0) > 0;

        let location = node.location.and_then(|l| {
            let (latitude, longitude) = (l.latitude?, l.longitude?);
            let ok = latitude.is_finite()
                && longitude.is_finite()
                && (-90.0..=90.0).contains(&latitude)
                && (-180.0..=180.0).contains(&longitude)
                && (latitude, longitude) != (0.0, 0.0);
            ok.then_some(Location {
                latitude,
                longitude,
                altitude: None,
            })
        });
        let solar_offset_ms = location
            .as_ref()
            .map(|l| (l.longitude / 15.0 * 3_600_000.0) as i64)
            .unwrap_or(0);

        let nproc = node.nproc.filter(|n| *n > 0).unwrap_or(1).min(256);
        let (mem_total, rootfs_size) = if server {
            let ram = if nproc > 1 { 4096 } else { 2048 };
            (ram * MIB - (ram * MIB) / 20, 16 * 1024 * MIB - 700 * MIB)
        } else {
            let hw = hardware(&model);
            let ram = hw.ram_mib * MIB;
            // The kernel keeps its code and reserved pages out of MemTotal.
            let mem_total = (ram - 3 * MIB - ram / 25) / 4096 * 4096;
            // The overlay is what the firmware image leaves of the flash.
            let rootfs = if hw.flash_mib <= 4 {
                576 * 1024
            } else if hw.flash_mib <= 32 {
                (hw.flash_mib * 1024 - 3_600) * 1024
            } else {
                hw.flash_mib * MIB * 4 / 5
            };
            (mem_total, rootfs)
        };

        let (load, mem_usage, rootfs_usage) = if known {
            (
                node.loadavg
                    .filter(|l| l.is_finite())
                    .unwrap_or(0.1)
                    .clamp(0.0, 64.0),
                clamp_share(node.memory_usage)
                    .unwrap_or(0.5)
                    .clamp(0.05, 0.97),
                clamp_share(node.rootfs_usage).unwrap_or(0.3),
            )
        } else {
            (
                rng.log_range(0.04, 0.6),
                rng.range(0.35, 0.75),
                rng.range(0.05, 0.45),
            )
        };

        let boot_ms = node.uptime.as_deref().and_then(parse_time_ms);
        let start_uptime_ms = match (known, snapshot_ms, boot_ms) {
            (true, Some(now), Some(boot)) if now >= boot => {
                u64::try_from(now - boot).unwrap_or(0).max(60_000)
            }
            _ => rng.int(86_400_000, 60 * 86_400_000),
        }
        .min(MAX_START_UPTIME_MS);

        let interfaces = interfaces(node, server, &model, addrs, &mut rng);
        NodeProfile {
            node_id: node.node_id.clone(),
            hostname: if node.hostname.trim().is_empty() {
                node.node_id.clone()
            } else {
                node.hostname.trim().to_owned()
            },
            model,
            os_release,
            kernel,
            location,
            online: node.is_online,
            server,
            known,
            nproc,
            mem_total,
            mem_usage,
            rootfs_size,
            rootfs_usage,
            load,
            start_uptime_ms,
            clients: node.clients,
            solar_offset_ms,
            interfaces,
            neighbours: Vec::new(),
            gateway: None,
            mesh_clients: None,
        }
    }

    /// The hello this router publishes at every connect.
    pub fn hello(&self, interval_ms: u32) -> Hello {
        Hello {
            v: VERSION,
            agent_version: AGENT_VERSION.to_owned(),
            hostname: self.hostname.clone(),
            model: self.model.clone(),
            os_release: self.os_release.clone(),
            kernel: self.kernel.clone(),
            interfaces: self.interfaces.iter().map(|i| i.info.clone()).collect(),
            location: self.location.clone(),
            interval_ms,
            ..Hello::default()
        }
    }
}

fn info(name: &str, kind: InterfaceKind, mac: Option<String>, mtu: u32) -> InterfaceInfo {
    InterfaceInfo {
        name: name.to_owned(),
        mac,
        mtu,
        addresses: Vec::new(),
        kind,
    }
}

/// An interface with only protocol chatter on it.
fn quiet(info: InterfaceInfo, role: Role, rx: f64, tx: f64) -> InterfaceProfile {
    InterfaceProfile {
        info,
        role,
        background_rx: rx,
        background_tx: tx,
        client_rx: 0.0,
        client_tx: 0.0,
        client_rx_packet: 900.0,
        client_tx_packet: 250.0,
        rx_drop_share: 0.0,
        tx_error_share: 0.0,
    }
}

fn interfaces(
    node: &SnapshotNode,
    server: bool,
    model: &str,
    addrs: &LinkAddrs,
    rng: &mut Rng,
) -> Vec<InterfaceProfile> {
    let primary = node.mac.as_deref().and_then(parse_mac);
    let id = node.node_id.as_str();
    let link_macs = |kind: LinkKind| -> Vec<String> {
        addrs
            .get(&(node.node_id.clone(), kind))
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    };
    let wifi_macs = link_macs(LinkKind::Wifi);
    let vpn_macs = link_macs(LinkKind::Vpn);
    let cable_macs = link_macs(LinkKind::Other);
    let eth_mac = cable_macs
        .first()
        .cloned()
        .unwrap_or_else(|| derived_mac(primary, id, 1));
    let vpn_mac = vpn_macs
        .first()
        .cloned()
        .unwrap_or_else(|| derived_mac(primary, id, 2));

    if server {
        // A gateway: the mesh's traffic arrives through the tunnels and
        // leaves on the uplink cable.
        let down = rng.log_range(150e3, 2.5e6);
        let up = down * rng.range(0.1, 0.3);
        let mut eth = quiet(
            info("eth0", InterfaceKind::Ethernet, Some(eth_mac), 1500),
            Role::Ethernet,
            rng.log_range(200.0, 2_000.0),
            rng.log_range(200.0, 2_000.0),
        );
        eth.client_rx = down;
        eth.client_tx = up;
        eth.client_rx_packet = 1_000.0;
        eth.client_tx_packet = 300.0;
        let mut vpn = quiet(
            info("mesh-vpn", InterfaceKind::Tunnel, Some(vpn_mac), 1406),
            Role::Vpn,
            rng.log_range(5e3, 40e3),
            rng.log_range(5e3, 40e3),
        );
        vpn.client_rx = up * 1.08;
        vpn.client_tx = down * 1.08;
        vpn.client_rx_packet = 300.0;
        vpn.client_tx_packet = 1_000.0;
        return vec![eth, vpn];
    }

    let wireless = !model.to_ascii_lowercase().contains("erx");
    let clients = f64::from(node.clients);
    let per_client_down = rng.log_range(3e3, 40e3);
    let down = clients * per_client_down;
    let up = down * rng.range(0.1, 0.35);
    let radio_clients = f64::from(node.clients_wifi24 + node.clients_wifi5);
    let radio_share = if node.clients == 0 {
        0.0
    } else {
        (radio_clients / clients).min(1.0)
    };

    let mut out = Vec::new();
    let mut bridge = quiet(
        InterfaceInfo {
            addresses: node
                .addresses
                .iter()
                .filter(|a| !a.is_empty())
                .map(|a| {
                    if a.contains('/') {
                        a.clone()
                    } else {
                        format!("{a}/64")
                    }
                })
                .collect(),
            ..info(
                "br-client",
                InterfaceKind::Bridge,
                node.mac.as_deref().map(str::to_ascii_lowercase),
                1500,
            )
        },
        Role::ClientBridge,
        rng.log_range(100.0, 800.0),
        rng.log_range(50.0, 400.0),
    );
    bridge.client_rx = up;
    bridge.client_tx = down;
    bridge.client_rx_packet = 250.0;
    bridge.client_tx_packet = 900.0;
    bridge.rx_drop_share = rng.range(0.001, 0.01);
    out.push(bridge);

    if wireless {
        let mut radio = quiet(
            info(
                "client0",
                InterfaceKind::Wireless,
                Some(derived_mac(primary, id, 3)),
                1500,
            ),
            Role::ClientRadio,
            rng.log_range(20.0, 200.0),
            rng.log_range(20.0, 200.0),
        );
        radio.client_rx = up * radio_share;
        radio.client_tx = down * radio_share;
        radio.client_rx_packet = 250.0;
        radio.client_tx_packet = 900.0;
        radio.tx_error_share = rng.range(1e-5, 1e-3);
        out.push(radio);

        let mesh_macs: Vec<Option<String>> = match wifi_macs.len() {
            0 => vec![Some(derived_mac(primary, id, 4))],
            _ => wifi_macs.iter().take(2).cloned().map(Some).collect(),
        };
        for (i, mac) in mesh_macs.into_iter().enumerate() {
            let name = format!("mesh{i}");
            let mut mesh = quiet(
                info(&name, InterfaceKind::Wireless, mac, 1532),
                Role::MeshRadio,
                rng.log_range(800.0, 4_000.0),
                rng.log_range(600.0, 3_000.0),
            );
            mesh.rx_drop_share = rng.range(1e-4, 1e-3);
            mesh.tx_error_share = rng.range(1e-4, 5e-3);
            out.push(mesh);
        }
    }

    out.push(quiet(
        info("eth0", InterfaceKind::Ethernet, Some(eth_mac), 1500),
        Role::Ethernet,
        rng.log_range(30.0, 300.0),
        rng.log_range(30.0, 300.0),
    ));

    if !vpn_macs.is_empty() {
        out.push(quiet(
            info("mesh-vpn", InterfaceKind::Tunnel, Some(vpn_mac), 1406),
            Role::Vpn,
            rng.log_range(600.0, 2_500.0),
            rng.log_range(200.0, 1_500.0),
        ));
    }

    // The clients' traffic reaches the internet over the tunnel, else over
    // the mesh radio, else over the cable; with a little encapsulation overhead.
    let uplink = [Role::Vpn, Role::MeshRadio, Role::Ethernet]
        .into_iter()
        .find_map(|role| out.iter().position(|i| i.role == role));
    if let Some(i) = uplink {
        let u = &mut out[i];
        u.client_rx = down * 1.08;
        u.client_tx = up * 1.08;
        u.client_rx_packet = 950.0;
        u.client_tx_packet = 300.0;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profiles(snapshot: &Snapshot, seed: u64) -> Vec<NodeProfile> {
        fleet(snapshot, seed)
    }

    #[test]
    fn first_leipzig_node() {
        let s = Snapshot::leipzig();
        let p = &profiles(&s, 1)[0];
        assert_eq!(p.node_id, "1a3671205872");
        assert_eq!(p.os_release, "gluon-v2018.2.3 / 1.2.3");
        assert_eq!(p.kernel, "4.9.164");
        assert_eq!(p.model, "TP-Link CPE510 v1.1");
        assert!(!p.server && p.known);
        assert_eq!(p.nproc, 1);
        assert_eq!(p.load, 0.07);
        // Booted 2020-02-22T22:25:15+0100, snapshot 2020-03-03T14:26:09+0100.
        assert_eq!(p.start_uptime_ms, 835_254_000);
        // A 64 MiB device.
        assert!(p.mem_total > 55 * MIB && p.mem_total < 64 * MIB);
        let names: Vec<&str> = p.interfaces.iter().map(|i| i.info.name.as_str()).collect();
        assert_eq!(names, ["br-client", "client0", "mesh0", "eth0"]);
        let bridge = &p.interfaces[0].info;
        assert_eq!(bridge.mac.as_deref(), Some("1a:36:71:20:58:72"));
        assert_eq!(
            bridge.addresses,
            [
                "fdef:ffc0:7030::98f7:2f3a:8b79:3483/64",
                "fe80::a181:95f4:4c6e:2225/64"
            ]
        );
        let hello = p.hello(10_000);
        assert_eq!(hello.interval_ms, 10_000);
        assert_eq!(hello.hostname, "leipzig-0001");
        assert!(hello.location.is_some());
        meshtable_proto::Message::validate(&hello).unwrap();
    }

    #[test]
    fn mesh_interfaces_carry_link_addresses() {
        let s = Snapshot::bremen();
        let addrs = link_addrs(&s);
        for p in profiles(&s, 3) {
            for i in &p.interfaces {
                let kind = match i.role {
                    Role::MeshRadio => LinkKind::Wifi,
                    Role::Vpn => LinkKind::Vpn,
                    _ => continue,
                };
                if let Some(known) = addrs.get(&(p.node_id.clone(), kind)) {
                    assert!(
                        known.contains(i.info.mac.as_deref().unwrap()),
                        "{} {}",
                        p.node_id,
                        i.info.name
                    );
                }
            }
        }
    }

    #[test]
    fn every_node_has_a_sane_profile() {
        for s in [Snapshot::leipzig(), Snapshot::bremen()] {
            for p in profiles(&s, 42) {
                meshtable_proto::Message::validate(&p.hello(60_000)).unwrap();
                assert!(p.mem_total >= 8 * MIB, "{}", p.node_id);
                assert!(p.rootfs_size > 0);
                assert!((0.0..=1.0).contains(&p.rootfs_usage));
                assert!(p.load.is_finite() && p.load >= 0.0);
                assert!(p.start_uptime_ms <= MAX_START_UPTIME_MS);
                assert!(p.interfaces.iter().any(|i| i.info.name == "eth0"));
                let names: BTreeSet<&str> =
                    p.interfaces.iter().map(|i| i.info.name.as_str()).collect();
                assert_eq!(names.len(), p.interfaces.len(), "unique names");
                for i in &p.interfaces {
                    for rate in [i.background_rx, i.background_tx, i.client_rx, i.client_tx] {
                        assert!(rate.is_finite() && rate >= 0.0);
                    }
                    if let Some(mac) = &i.info.mac {
                        assert!(parse_mac(mac).is_some(), "{mac}");
                    }
                }
            }
        }
    }

    #[test]
    fn placeholder_nodes_get_seeded_values() {
        let s = Snapshot::leipzig();
        let all = profiles(&s, 5);
        let unknown: Vec<&NodeProfile> = all.iter().filter(|p| !p.known).collect();
        assert_eq!(unknown.len(), 167);
        assert!(
            unknown
                .iter()
                .all(|p| p.load != 0.1337 && p.os_release.is_empty())
        );
        let again = profiles(&s, 5);
        assert_eq!(all, again, "deterministic for a seed");
        let other = profiles(&s, 6);
        assert_ne!(all, other);
    }

    #[test]
    fn servers_and_kernels() {
        let s = Snapshot::bremen();
        let all = profiles(&s, 1);
        let servers: Vec<&NodeProfile> = all.iter().filter(|p| p.server).collect();
        assert!(servers.len() >= 6, "{}", servers.len());
        assert!(servers.iter().all(|p| p.mem_total > 1024 * MIB));
        let cases = [
            ("gluon-v2019.1.1", "2019.1.1+bremen3", "4.14.171"),
            ("gluon-v2018.1", "1.1", "4.4.140"),
            ("Debian", "10", "4.19.0-8-amd64"),
            ("", "", ""),
        ];
        for (base, release, want) in cases {
            assert_eq!(kernel_for(base, release), want);
        }
    }

    #[test]
    fn macs() {
        assert_eq!(
            parse_mac("1a:36:71:20:58:72"),
            Some([0x1a, 0x36, 0x71, 0x20, 0x58, 0x72])
        );
        assert_eq!(parse_mac("1a:36:71:20:58"), None);
        assert_eq!(parse_mac("1a:36:71:20:58:72:00"), None);
        let d = derived_mac(parse_mac("1a:36:71:20:58:72"), "x", 1);
        assert_eq!(d, "1a:36:71:20:58:84");
        let d = derived_mac(None, "1a3671205872", 1);
        let b = parse_mac(&d).unwrap();
        assert_eq!(b[0] & 0x03, 0x02, "locally administered unicast");
    }
}
