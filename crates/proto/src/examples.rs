//! Example messages: the golden vectors' contents, and realistic payloads for
//! size measurements and tests in other crates.

use crate::compact::{CompactPolicy, CompactTelemetry, Compactor};
use crate::mesh::{
    Clients, Firmware, Gateway, MeshProtocol, Neighbour, Radio, RadioMode, Route, Station,
};
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
        board: None,
        firmware: None,
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
        ..Telemetry::default()
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

/// The hello of [`hello_v1`] with the board name (key 9) and the firmware
/// release (key 10), as an OpenWrt router reports them.
pub fn hello_firmware_v1() -> Hello {
    Hello {
        board: Some("tplink,cpe510-v1".to_owned()),
        firmware: Some(Firmware {
            distribution: "OpenWrt".to_owned(),
            release: "23.05.3".to_owned(),
            revision: Some("r23809-234f1a2efa".to_owned()),
            target: Some("ath79/generic".to_owned()),
        }),
        ..hello_v1()
    }
}

/// The radios of the dual-radio router of [`hello_v1`]: an AP on 2.4 GHz and
/// a mesh point on 5 GHz.
pub fn radios() -> Vec<Radio> {
    vec![
        Radio {
            ifname: "wlan0".to_owned(),
            ssid: Some("leipzig.freifunk.net".to_owned()),
            mode: RadioMode::Ap,
            frequency_mhz: 2437,
            channel: Some(6),
            width_mhz: Some(20),
            tx_power_mbm: Some(2000),
            noise_dbm: Some(-95),
            active_ms: Some(1_036_512_004),
            busy_ms: Some(311_204_877),
        },
        Radio {
            ifname: "wlan1".to_owned(),
            ssid: Some("ffl-mesh".to_owned()),
            mode: RadioMode::MeshPoint,
            frequency_mhz: 5180,
            channel: Some(36),
            width_mhz: Some(80),
            tx_power_mbm: Some(2300),
            noise_dbm: Some(-102),
            active_ms: Some(1_036_498_113),
            busy_ms: Some(98_114_562),
        },
    ]
}

/// `n` stations: the first three mesh peers on `wlan1`, the rest clients
/// on `wlan0` (hashed ids, never a MAC).
pub fn stations(n: usize) -> Vec<Station> {
    (0..n)
        .map(|i| {
            let mesh = i < 3;
            let k = i as u64 + 1;
            Station {
                ifname: if mesh { "wlan1" } else { "wlan0" }.to_owned(),
                mac: mesh.then(|| format!("02:ca:ff:ee:00:{i:02x}")),
                client_id: (!mesh).then(|| format!("c{:015x}", 0x5eed_0000_u64 * k)),
                mesh,
                signal_dbm: Some(-48 - 3 * i as i16),
                signal_avg_dbm: Some(-50 - 3 * i as i16),
                tx_bitrate_100kbps: Some(if mesh { 8667 } else { 722 }),
                rx_bitrate_100kbps: Some(if mesh { 7800 } else { 650 }),
                rx_bytes: 2_113_874_112 / k,
                tx_bytes: 9_801_332_017 / k,
                tx_retries: 91_207 / k as u32,
                tx_failed: 312 / k as u32,
                inactive_ms: 10 * k as u32,
            }
        })
        .collect()
}

/// `n` babel neighbours, one per mesh station of [`stations`] and the rest
/// over the `wg0` tunnel.
pub fn neighbours(n: usize) -> Vec<Neighbour> {
    (0..n)
        .map(|i| Neighbour {
            protocol: MeshProtocol::Babel,
            ifname: if i < 3 { "wlan1" } else { "wg0" }.to_owned(),
            address: format!("fe80::ca:ffff:feee:{i:x}"),
            rxcost: Some(256 + 16 * i as u32),
            txcost: Some(256 + 8 * i as u32),
            cost: Some(256 + 24 * i as u32),
            ..Neighbour::default()
        })
        .collect()
}

/// A version 1 telemetry report of [`telemetry_v1`] with everything issue 3
/// added (keys 15-20): two radios, ten stations, six babel neighbours, their
/// routes, client counts and the gateway.
pub fn telemetry_mesh_v1() -> Telemetry {
    Telemetry {
        radios: radios(),
        stations: stations(10),
        neighbours: neighbours(6),
        routes: (0..6)
            .map(|i| Route {
                protocol: MeshProtocol::Babel,
                prefix: format!("10.0.{}.0/24", i + 1),
                via: Some(format!("fe80::ca:ffff:feee:{i:x}")),
                ifname: Some(if i < 3 { "wlan1" } else { "wg0" }.to_owned()),
                metric: 256 + 24 * i,
                installed: true,
            })
            .chain(std::iter::once(Route {
                protocol: MeshProtocol::Babel,
                prefix: "0.0.0.0/0".to_owned(),
                via: Some("fe80::ca:ffff:feee:3".to_owned()),
                ifname: Some("wg0".to_owned()),
                metric: 400,
                installed: true,
            }))
            .collect(),
        clients: Some(Clients {
            total: 9,
            wifi_24: 7,
            wifi_5: 0,
            other: 2,
            ids: stations(10)
                .into_iter()
                .filter_map(|s| s.client_id)
                .collect(),
        }),
        gateway: Some(Gateway {
            via: Some("10.31.0.1".to_owned()),
            ifname: "wg0".to_owned(),
        }),
        ..telemetry_v1()
    }
}

/// A deterministic simulation of the mesh router of [`telemetry_mesh_v1`]
/// reporting every 60 s: realistic traffic (a few Mbit/s at the peaks, half
/// a Mbit/s on average), CPU and memory, radio airtime, station signals that
/// wander by a dB or two, a mesh link cost that changes now and then, and a
/// client arriving or leaving about twice an hour. For size measurements of
/// the encodings; no clock is involved.
#[derive(Debug, Clone)]
pub struct MeshRouterSim {
    t: Telemetry,
    rng: u64,
    next_client: u64,
}

impl MeshRouterSim {
    /// The simulation, starting from [`telemetry_mesh_v1`], seeded.
    pub fn new(seed: u64) -> MeshRouterSim {
        MeshRouterSim {
            t: telemetry_mesh_v1(),
            rng: seed ^ 0x9e37_79b9_7f4a_7c15,
            next_client: 10,
        }
    }

    /// The report of the current step.
    pub fn report(&self) -> &Telemetry {
        &self.t
    }

    fn next_u64(&mut self) -> u64 {
        // splitmix64
        self.rng = self.rng.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// True with probability `p`.
    fn chance(&mut self, p: f64) -> bool {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64 <= p
    }

    fn wander(&mut self, v: i16, lo: i16, hi: i16) -> i16 {
        (v + self.range(0, 4) as i16 - 2).clamp(lo, hi)
    }

    /// Advances one interval (60 s) and returns the new report.
    pub fn step(&mut self) -> &Telemetry {
        // Per-minute traffic in bytes (rx, tx) of eth0, br-lan, wlan0, wlan1, wg0.
        const TRAFFIC: [(u64, u64); 5] = [
            (3_000_000, 800_000),
            (700_000, 2_600_000),
            (600_000, 2_400_000),
            (1_500_000, 1_200_000),
            (2_500_000, 700_000),
        ];
        let up = self.range(59_990, 60_010);
        let skew = self.range(0, 6);
        let t = &mut self.t;
        t.seq += 1;
        t.uptime_ms += up;
        t.time_ms += up + skew - 3;
        let busy = self.range(20, 180);
        let (user, system, softirq, iowait) = (
            busy,
            self.range(40, 120),
            self.range(10, 60),
            self.range(0, 2),
        );
        let load: Vec<f32> = (0..3).map(|_| self.range(2, 40) as f32 / 100.0).collect();
        let mem = self.range(0, 40) * 4096;
        let mut counters = Vec::new();
        for (rx, tx) in TRAFFIC {
            let f = self.range(20, 180);
            let (rxb, txb) = (rx * f / 100, tx * f / 100);
            let drop = u64::from(self.chance(0.1));
            counters.push([rxb, txb, rxb / 600 + 3, txb / 600 + 3, 0, 0, drop, 0]);
        }
        let t = &mut self.t;
        t.cpu.user += user;
        t.cpu.system += system;
        t.cpu.softirq += softirq;
        t.cpu.iowait += iowait;
        t.cpu.idle += 6_000 - user - system - softirq - iowait;
        t.load = [load[0], load[1], load[2]];
        t.mem_available = (t.mem_available + mem).saturating_sub(80 * 4096);
        for (i, c) in t.interfaces.iter_mut().zip(counters) {
            i.rx_bytes += c[0];
            i.tx_bytes += c[1];
            i.rx_packets += c[2];
            i.tx_packets += c[3];
            i.rx_dropped += c[6];
        }
        for r in 0..self.t.radios.len() {
            let busy = self.range(6_000, 24_000);
            let noise_change = self.chance(0.2);
            let delta = self.range(0, 2) as i16 - 1;
            let radio = &mut self.t.radios[r];
            radio.active_ms = radio.active_ms.map(|a| a + up);
            radio.busy_ms = radio.busy_ms.map(|b| b + busy);
            if noise_change {
                radio.noise_dbm = radio.noise_dbm.map(|n| n + delta);
            }
        }
        for s in 0..self.t.stations.len() {
            let st = self.t.stations[s].clone();
            let signal = self.wander(st.signal_dbm.unwrap_or(-60), -90, -30);
            let avg = self.wander(st.signal_avg_dbm.unwrap_or(-60), -90, -30);
            let rates = self.chance(0.3);
            let (rx, tx) = (self.range(2_000, 400_000), self.range(10_000, 900_000));
            let retries = self.range(0, 40) as u32;
            let failed = u32::from(self.chance(0.05));
            let inactive = self.range(0, 3_000) as u32;
            let st = &mut self.t.stations[s];
            st.signal_dbm = Some(signal);
            st.signal_avg_dbm = Some(avg);
            if rates {
                let mesh = st.mesh;
                st.tx_bitrate_100kbps = st.tx_bitrate_100kbps.map(|r| {
                    if mesh {
                        [7800, 8667, 6500][(r as usize + s) % 3]
                    } else {
                        [722, 650, 585][(r as usize + s) % 3]
                    }
                });
            }
            st.rx_bytes += rx;
            st.tx_bytes += tx;
            st.tx_retries += retries;
            st.tx_failed += failed;
            st.inactive_ms = inactive;
        }
        // A wifi link's cost moves now and then, and the routes over it.
        if self.chance(0.15) {
            let i = self.range(0, 2) as usize;
            let cost = 256 + self.range(0, 8) as u32 * 16;
            let n = &mut self.t.neighbours[i];
            n.rxcost = Some(cost);
            n.cost = Some(cost);
            if let Some(r) = self.t.routes.get_mut(i) {
                r.metric = cost;
            }
        }
        // About twice an hour a client leaves or a new one arrives.
        if self.chance(1.0 / 30.0) {
            let clients = self.t.stations.iter().filter(|s| !s.mesh).count();
            if clients > 7 || (clients > 3 && self.chance(0.5)) {
                let i = self.t.stations.iter().rposition(|s| !s.mesh).unwrap_or(0);
                self.t.stations.remove(i);
            } else {
                let k = self.next_client;
                self.next_client += 1;
                let mut s = stations(k as usize + 1).pop().unwrap_or_default();
                s.rx_bytes = 0;
                s.tx_bytes = 0;
                s.tx_retries = 0;
                s.tx_failed = 0;
                self.t.stations.push(s);
            }
            let ids: Vec<String> = self
                .t
                .stations
                .iter()
                .filter_map(|s| s.client_id.clone())
                .collect();
            if let Some(c) = &mut self.t.clients {
                c.wifi_24 = ids.len() as u32;
                c.total = c.wifi_24 + c.other;
                c.ids = ids;
            }
        }
        &self.t
    }
}

/// The report after [`telemetry_mesh_v1`], one minute later
/// ([`MeshRouterSim`] seeded 0).
pub fn telemetry_mesh_next_v1() -> Telemetry {
    MeshRouterSim::new(0).step().clone()
}

/// [`telemetry_mesh_next_v1`] as a version 2 compact report against
/// [`telemetry_mesh_v1`], every number sent (no station held).
pub fn telemetry_compact_v2() -> CompactTelemetry {
    let mut c = Compactor::new(CompactPolicy {
        full_every: 0,
        detail_every: 1,
    });
    c.encode(&telemetry_mesh_v1());
    let bytes = c.encode(&telemetry_mesh_next_v1());
    crate::decode::<CompactTelemetry>(&bytes)
        .map(|(c, _)| c)
        .unwrap_or_default()
}
