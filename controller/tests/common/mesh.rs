//! Mesh reports for the web tests: hellos with interfaces, batman-adv and
//! babel neighbours, and telemetry carrying them. Included by path.

use anyhow::Result;
use meshtable_proto::{
    Gateway, Hello, InterfaceInfo, InterfaceKind, MeshProtocol, Neighbour, Station, Telemetry,
};

/// An interface of a hello: `(name, mac, addresses, kind)`.
pub type Iface<'a> = (&'a str, &'a str, &'a [&'a str], InterfaceKind);

/// A hello of `hostname` with these interfaces.
pub fn hello(hostname: &str, ifaces: &[Iface<'_>]) -> Hello {
    Hello {
        agent_version: "test".to_owned(),
        hostname: hostname.to_owned(),
        interval_ms: 60_000,
        interfaces: ifaces
            .iter()
            .map(|(name, mac, addresses, kind)| InterfaceInfo {
                name: (*name).to_owned(),
                mac: Some((*mac).to_owned()),
                mtu: 1500,
                addresses: addresses.iter().map(|a| (*a).to_owned()).collect(),
                kind: *kind,
            })
            .collect(),
        ..Hello::default()
    }
}

/// A batman-adv neighbour on wlan0 heard at `(tq, signal dBm)`, with the
/// mesh-peer station that carries the signal.
pub fn batman(peer: &str, tq: u8, signal: i16) -> (Neighbour, Station) {
    (
        Neighbour {
            protocol: MeshProtocol::BatmanAdv,
            ifname: "wlan0".to_owned(),
            address: peer.to_owned(),
            tq: Some(tq),
            ..Neighbour::default()
        },
        Station {
            ifname: "wlan0".to_owned(),
            mac: Some(peer.to_owned()),
            mesh: true,
            signal_dbm: Some(signal),
            ..Station::default()
        },
    )
}

/// A babel neighbour on eth1 at `cost`.
pub fn babel(address: &str, cost: u32) -> Neighbour {
    Neighbour {
        protocol: MeshProtocol::Babel,
        ifname: "eth1".to_owned(),
        address: address.to_owned(),
        rxcost: Some(cost),
        txcost: Some(cost),
        cost: Some(cost),
        ..Neighbour::default()
    }
}

/// Telemetry of `node` at `now` with these neighbours and gateway.
pub fn report(
    node: &str,
    now: i64,
    batman: &[(Neighbour, Station)],
    babel: &[Neighbour],
    gateway: Option<Gateway>,
) -> Result<Telemetry> {
    Ok(Telemetry {
        node: node.to_owned(),
        boot_id: "boot-1".to_owned(),
        seq: 1,
        time_ms: u64::try_from(now)?,
        uptime_ms: 1_000_000,
        mem_total: 1000,
        mem_available: 500,
        rootfs_size: 1000,
        rootfs_free: 500,
        neighbours: batman
            .iter()
            .map(|(n, _)| n.clone())
            .chain(babel.iter().cloned())
            .collect(),
        stations: batman.iter().map(|(_, s)| s.clone()).collect(),
        gateway,
        ..Telemetry::default()
    })
}
