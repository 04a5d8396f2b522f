//! Example messages: the golden vectors' contents, and realistic payloads for
//! size measurements and tests in other crates.

use crate::message::{
    CpuTimes, Hello, InterfaceCounters, InterfaceInfo, InterfaceKind, Location, State, Status,
    Telemetry,
};

/// The interfaces of a typical dual-radio mesh router: five of them.
const IFACES: [(&str, InterfaceKind); 5] = [
    ("eth0", InterfaceKind::Ethernet),
    ("br-lan", InterfaceKind::Bridge),
    ("wlan0", InterfaceKind::Wireless),
    ("wlan1", InterfaceKind::Wireless),
    ("wg0", InterfaceKind::Tunnel),
];

/// A version 1 hello of a router with five interfaces.
pub fn hello_v1() -> Hello {
    Hello {
        v: 1,
        agent_version: "0.1.0".to_owned(),
        hostname: "leipzig-0001".to_owned(),
        model: "TP-Link CPE510 v1.1".to_owned(),
        os_release: "OpenWrt 23.05.3".to_owned(),
        kernel: "5.15.150".to_owned(),
        interfaces: IFACES
            .iter()
            .enumerate()
            .map(|(i, (name, kind))| InterfaceInfo {
                name: (*name).to_owned(),
                mac: (*kind != InterfaceKind::Tunnel).then(|| format!("1a:36:71:20:58:7{i}")),
                mtu: if *kind == InterfaceKind::Tunnel {
                    1420
                } else {
                    1500
                },
                addresses: match *name {
                    "br-lan" => vec!["10.0.0.1/24".to_owned(), "fdef:ffc0:7030::1/64".to_owned()],
                    _ => vec![],
                },
                kind: *kind,
            })
            .collect(),
        location: Some(Location {
            latitude: 51.3149,
            longitude: 12.2762,
            altitude: None,
        }),
        interval_ms: 60_000,
    }
}

/// A version 1 online state.
pub fn state_online_v1() -> State {
    State {
        v: 1,
        status: Status::Online,
        time_ms: Some(1_764_000_000_000),
    }
}

/// A version 1 offline state, as registered for the last will.
pub fn state_offline_v1() -> State {
    State {
        v: 1,
        status: Status::Offline,
        time_ms: None,
    }
}

/// A version 1 telemetry report of a router with five interfaces that has been
/// up for about twelve days, with realistic counter magnitudes.
pub fn telemetry_v1() -> Telemetry {
    Telemetry {
        v: 1,
        node: "1a3671205872".to_owned(),
        boot_id: "3f1c2a4e-8d7b-4c1e-9a55-0b6f2d9e7c10".to_owned(),
        seq: 17_280,
        time_ms: 1_764_000_000_000,
        uptime_ms: 1_036_800_000,
        load: [0.07, 0.12, 0.09],
        cpu: CpuTimes {
            user: 1_523_411,
            nice: 0,
            system: 2_210_876,
            idle: 98_311_240,
            iowait: 1_204,
            irq: 0,
            softirq: 402_118,
            steal: 0,
        },
        mem_total: 61_440_000,
        mem_available: 30_474_240,
        rootfs_size: 3_932_160,
        rootfs_free: 3_604_480,
        interfaces: IFACES
            .iter()
            .enumerate()
            .map(|(i, (name, _))| {
                let k = i as u64 + 1;
                InterfaceCounters {
                    name: (*name).to_owned(),
                    rx_bytes: 48_213_554_112 / k,
                    tx_bytes: 9_118_332_401 / k,
                    rx_packets: 61_004_117 / k,
                    tx_packets: 23_871_402 / k,
                    rx_errors: 3 * (k - 1),
                    tx_errors: 0,
                    rx_dropped: 1_207 / k,
                    tx_dropped: 12 / k,
                }
            })
            .collect(),
        dropped: 0,
        backfill: false,
    }
}

/// The v1 telemetry report of [`telemetry_v1`] as an agent replays it from
/// its spool: marked `backfill` (key 14), with a drop count.
pub fn telemetry_backfill_v1() -> Telemetry {
    Telemetry {
        seq: 17_281,
        dropped: 3,
        backfill: true,
        ..telemetry_v1()
    }
}
