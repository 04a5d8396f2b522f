//! The mesh of the web tests: two networks as hellos and one report per
//! node, with batman-adv and babel neighbours and a gateway. Included by
//! path.

use std::path::Path;
use std::time::Duration;

use anyhow::Result;
use meshtable::config::Layer;
use meshtable::serve::Controller;
use meshtable_proto::{
    Gateway, Hello, InterfaceInfo, InterfaceKind, MeshProtocol, Neighbour, Station, Telemetry,
    encode_cbor,
};

/// The network [`two_networks`] builds with four nodes.
pub const NORTH: &str = "north";
/// The network [`two_networks`] builds with two nodes.
pub const SOUTH: &str = "south";

const GW_WLAN: &str = "02:00:00:00:01:01";
const GW_ETH: &str = "02:00:00:00:01:02";
const A_WLAN: &str = "02:00:00:00:0a:01";
const A_ETH1: &str = "02:00:00:00:0a:02";
const B_ETH1: &str = "02:00:00:00:0b:02";
const C_WLAN: &str = "02:00:00:00:0c:01";
/// The wlan0 MAC address of south's first node.
pub const X_WLAN: &str = "02:00:00:00:f1:01";
/// The wlan0 MAC address of south's second node.
pub const Y_WLAN: &str = "02:00:00:00:f2:01";

/// A controller (embedded broker, anonymous publishers; SQLite in `dir`
/// unless `database_url`) with [`NORTH`] and [`SOUTH`] created, whose
/// background jobs (liveness sweep, alerts, history) do not run during a
/// test: the test looks, or evaluates, at times of its choosing.
pub async fn start_quiet(dir: &Path, database_url: Option<&str>) -> Result<Controller> {
    let layer = Layer {
        listen: Some("127.0.0.1:0".parse()?),
        mqtt_listen: Some("127.0.0.1:0".parse()?),
        data_dir: Some(dir.to_owned()),
        database_url: database_url.map(str::to_owned),
        // The test publisher has no login.
        mqtt_allow_anonymous: Some(true),
        sweep_interval: Some(Duration::from_secs(3600)),
        alert_interval: Some(Duration::from_secs(3600)),
        history_interval: Some(Duration::from_secs(3600)),
        ..Layer::default()
    };
    let controller = crate::start::start_controller(&layer).await?;
    for n in [NORTH, SOUTH] {
        meshtable::enroll::add_network(controller.store(), n, true)
            .await
            .map_err(|e| anyhow::anyhow!("cannot create network {n}: {e}"))?;
    }
    Ok(controller)
}

/// Both networks at `now`, as `(topic, payload, retained)`: a retained hello
/// per node, then one report per node, which `tweak` may change first.
/// Nodes are `(id, hostname)`.
///
/// north: `gw` (uplink on eth0) -- batman-adv wlan0 -- `a` (default route
/// via the gateway) -- babel eth1 (joined by address) -- `b`; `c` alone.
/// south: `x` -- batman-adv -- `y`.
pub fn two_networks(
    now: i64,
    [gw, a, b, c]: [(&str, &str); 4],
    [x, y]: [(&str, &str); 2],
    tweak: impl Fn(&mut Telemetry),
) -> Result<Vec<(String, Vec<u8>, bool)>> {
    use InterfaceKind::{Ethernet, Wireless};
    let topic = |net: &str, node: &str, kind: &str| format!("meshtable/v1/{net}/{node}/{kind}");
    let hellos = [
        (
            NORTH,
            gw,
            vec![
                ("wlan0", GW_WLAN, &["10.1.0.1/16"][..], Wireless),
                ("eth0", GW_ETH, &["192.0.2.10/24"], Ethernet),
            ],
        ),
        (
            NORTH,
            a,
            vec![
                ("wlan0", A_WLAN, &["10.1.0.2/16"][..], Wireless),
                ("eth1", A_ETH1, &["fd00::a/64"], Ethernet),
            ],
        ),
        (
            NORTH,
            b,
            vec![("eth1", B_ETH1, &["fd00::b/64"][..], Ethernet)],
        ),
        (NORTH, c, vec![("wlan0", C_WLAN, &[][..], Wireless)]),
        (SOUTH, x, vec![("wlan0", X_WLAN, &[][..], Wireless)]),
        (SOUTH, y, vec![("wlan0", Y_WLAN, &[][..], Wireless)]),
    ];
    let gateway = |via: &str, ifname: &str| {
        Some(Gateway {
            via: Some(via.to_owned()),
            ifname: ifname.to_owned(),
        })
    };
    let reports = [
        (
            NORTH,
            report(
                gw.0,
                now,
                &[batman(A_WLAN, 230, -58)],
                &[],
                gateway("192.0.2.1", "eth0"),
            )?,
        ),
        (
            NORTH,
            report(
                a.0,
                now,
                &[batman(GW_WLAN, 200, -63)],
                &[babel("fd00::b", 256)],
                gateway("10.1.0.1", "wlan0"),
            )?,
        ),
        (
            NORTH,
            report(b.0, now, &[], &[babel("fd00::a", 320)], None)?,
        ),
        (NORTH, report(c.0, now, &[], &[], None)?),
        (
            SOUTH,
            report(x.0, now, &[batman(Y_WLAN, 150, -80)], &[], None)?,
        ),
        (
            SOUTH,
            report(y.0, now, &[batman(X_WLAN, 140, -81)], &[], None)?,
        ),
    ];
    let mut out = Vec::new();
    for (net, (id, hostname), ifaces) in hellos {
        out.push((
            topic(net, id, "hello"),
            encode_cbor(&hello(hostname, &ifaces)),
            true,
        ));
    }
    for (net, mut t) in reports {
        tweak(&mut t);
        out.push((topic(net, &t.node, "telemetry"), encode_cbor(&t), false));
    }
    Ok(out)
}

/// An interface of a hello: `(name, mac, addresses, kind)`.
type Iface<'a> = (&'a str, &'a str, &'a [&'a str], InterfaceKind);

/// A hello of `hostname` with these interfaces.
fn hello(hostname: &str, ifaces: &[Iface<'_>]) -> Hello {
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
fn batman(peer: &str, tq: u8, signal: i16) -> (Neighbour, Station) {
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
fn babel(address: &str, cost: u32) -> Neighbour {
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
fn report(
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
