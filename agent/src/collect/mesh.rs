//! The mesh part of a report: radios and stations (nl80211), neighbours and
//! routes (babeld, batman-adv), clients (stations and DHCP leases, as keyed
//! hashes) and the uplink (default route).
//!
//! [`collect`] runs every source and never fails: each source that is
//! missing gives nothing (debug log), each that errs is logged and left
//! out. [`assemble`] turns what the sources found into the wire's types and
//! is pure, so the whole path from kernel messages to report is tested on
//! fixtures (`agent/tests/mesh_collect.rs`).

use std::collections::HashMap;
use std::path::PathBuf;

use meshtable_proto::{
    Clients, Gateway, MAX_CLIENT_IDS, MAX_NEIGHBOURS, MAX_RADIOS, MAX_ROUTES, MAX_STATIONS,
    Neighbour, Radio, RadioMode, Route, Station,
};
use tracing::{debug, warn};

use super::babeld::{self, BabelError, BabelSocket};
use super::clients::{self, Salt, WifiClient};
use super::netlink::{Link, format_mac};
use super::nl80211::{self, Peer, Wireless};
use super::{batadv, route};

/// babeld's default socket: configure babeld with
/// `local-path /var/run/babeld.sock` (read-only is enough for `dump`).
pub const DEFAULT_BABELD_SOCKET: &str = "/var/run/babeld.sock";
/// The salt file `meshtable-agent enroll` writes.
pub const DEFAULT_SALT_FILE: &str = "/etc/meshtable/salt";
/// dnsmasq's lease file on OpenWrt.
pub const DEFAULT_DNSMASQ_LEASES: &str = "/tmp/dhcp.leases";
/// odhcpd's state file on OpenWrt (`option leasefile` in `/etc/config/dhcp`).
pub const DEFAULT_ODHCPD_LEASES: &str = "/tmp/hosts/odhcpd";

/// Where the mesh collectors read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeshSources {
    /// babeld's local socket; `None` to not ask babeld.
    pub babeld: Option<BabelSocket>,
    /// The per-network salt for client ids.
    pub salt_file: PathBuf,
    /// dnsmasq lease file.
    pub dnsmasq_leases: PathBuf,
    /// odhcpd state file.
    pub odhcpd_leases: PathBuf,
}

impl Default for MeshSources {
    fn default() -> Self {
        MeshSources {
            babeld: Some(BabelSocket::parse(DEFAULT_BABELD_SOCKET)),
            salt_file: DEFAULT_SALT_FILE.into(),
            dnsmasq_leases: DEFAULT_DNSMASQ_LEASES.into(),
            odhcpd_leases: DEFAULT_ODHCPD_LEASES.into(),
        }
    }
}

/// The mesh part of one report, in the wire's types.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Mesh {
    /// Telemetry key 15.
    pub radios: Vec<Radio>,
    /// Telemetry key 16.
    pub stations: Vec<Station>,
    /// Telemetry key 17.
    pub neighbours: Vec<Neighbour>,
    /// Telemetry key 18: installed routes only.
    pub routes: Vec<Route>,
    /// Telemetry key 19.
    pub clients: Option<Clients>,
    /// Telemetry key 20.
    pub gateway: Option<Gateway>,
}

/// What the sources found, before it is put in the wire's types.
#[derive(Debug, Clone, Default)]
pub struct Found {
    /// nl80211 interfaces, surveys and stations.
    pub wireless: Wireless,
    /// Neighbours from babeld and batman-adv.
    pub neighbours: Vec<Neighbour>,
    /// Routes from babeld and batman-adv, installed or not.
    pub routes: Vec<Route>,
    /// MACs of DHCP leases.
    pub leases: Vec<[u8; 6]>,
    /// Whether any lease file was there (clients are reported then, even
    /// when there are none).
    pub lease_files: bool,
    /// The uplink.
    pub gateway: Option<Gateway>,
}

fn cap<T>(mut v: Vec<T>, limit: usize, what: &str) -> Vec<T> {
    if v.len() > limit {
        warn!(
            what,
            found = v.len(),
            limit,
            "too many, reporting the first ones"
        );
        v.truncate(limit);
    }
    v
}

/// Turns what the sources found into the wire's types. Client MACs become
/// ids (with `salt`) or nothing (without); only mesh peers and the uplink
/// AP keep their MAC.
pub fn assemble(found: Found, salt: Option<&Salt>) -> Mesh {
    let w = &found.wireless;
    let by_index: HashMap<u32, &nl80211::Interface> =
        w.interfaces.iter().map(|i| (i.ifindex, i)).collect();
    let radios = w
        .interfaces
        .iter()
        .map(|i| {
            let survey = w.surveys.iter().find(|s| s.ifindex == i.ifindex);
            let freq = i
                .frequency_mhz
                .or_else(|| survey.and_then(|s| s.frequency_mhz))
                .unwrap_or(0);
            Radio {
                ifname: i.ifname.clone(),
                ssid: i.ssid.clone(),
                mode: nl80211::mode(i.iftype),
                frequency_mhz: freq,
                channel: nl80211::channel(freq),
                width_mhz: i.width.and_then(nl80211::width_mhz),
                tx_power_mbm: i.tx_power_mbm,
                noise_dbm: survey.and_then(|s| s.noise_dbm).map(i16::from),
                active_ms: survey.and_then(|s| s.active_ms),
                busy_ms: survey.and_then(|s| s.busy_ms),
            }
        })
        .collect();
    let mut stations = Vec::new();
    let mut wifi_clients = Vec::new();
    for s in &w.stations {
        let iface = by_index.get(&s.ifindex);
        let kind = iface.map_or(Peer::Client, |i| nl80211::peer_kind(i.iftype));
        if kind == Peer::Client {
            wifi_clients.push(WifiClient {
                mac: s.mac,
                band_24: iface
                    .and_then(|i| i.frequency_mhz)
                    .is_some_and(nl80211::is_24ghz),
            });
        }
        stations.push(Station {
            ifname: iface.map(|i| i.ifname.clone()).unwrap_or_default(),
            mac: (kind != Peer::Client).then(|| format_mac(&s.mac)),
            client_id: match (kind, salt) {
                (Peer::Client, Some(salt)) => Some(salt.client_id(&s.mac)),
                _ => None,
            },
            mesh: kind == Peer::Mesh,
            signal_dbm: s.signal_dbm.map(i16::from),
            signal_avg_dbm: s.signal_avg_dbm.map(i16::from),
            tx_bitrate_100kbps: s.tx_bitrate_100kbps,
            rx_bitrate_100kbps: s.rx_bitrate_100kbps,
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
            tx_retries: s.tx_retries,
            tx_failed: s.tx_failed,
            inactive_ms: s.inactive_ms,
        });
    }
    let has_ap = w
        .interfaces
        .iter()
        .any(|i| nl80211::mode(i.iftype) == RadioMode::Ap);
    let clients = (has_ap || found.lease_files || !wifi_clients.is_empty())
        .then(|| clients::count(&wifi_clients, &found.leases, salt, MAX_CLIENT_IDS));
    Mesh {
        radios: cap(radios, MAX_RADIOS, "radios"),
        stations: cap(stations, MAX_STATIONS, "stations"),
        neighbours: cap(found.neighbours, MAX_NEIGHBOURS, "neighbours"),
        routes: cap(
            found.routes.into_iter().filter(|r| r.installed).collect(),
            MAX_ROUTES,
            "routes",
        ),
        clients,
        gateway: found.gateway,
    }
}

/// Runs every source. `links` (the rtnetlink interface dump of the same
/// report) names interfaces and finds the batman-adv mesh interfaces.
pub fn collect(sources: &MeshSources, links: &[Link]) -> Mesh {
    let names: HashMap<u32, String> = links.iter().map(|l| (l.index, l.name.clone())).collect();
    let ifname = |i: u32| names.get(&i).cloned();
    let mut found = Found::default();

    match nl80211::collect() {
        Ok(w) => found.wireless = w,
        Err(e) => warn!(error = %e, "nl80211 collection failed"),
    }

    if let Some(socket) = &sources.babeld {
        match babeld::dump(socket) {
            Ok(d) => {
                found.neighbours.extend(d.neighbours);
                found.routes.extend(d.routes);
            }
            Err(e @ BabelError::NotRunning { .. }) => debug!(error = %e, "no babeld"),
            Err(e) => warn!(error = %e, "babeld dump failed"),
        }
    }

    let meshes: Vec<u32> = links
        .iter()
        .filter(|l| l.link_kind.as_deref() == Some("batadv"))
        .map(|l| l.index)
        .collect();
    match batadv::collect(&meshes, &ifname) {
        Ok((n, r)) => {
            found.neighbours.extend(n);
            found.routes.extend(r);
        }
        Err(e) => warn!(error = %e, "batman-adv collection failed"),
    }

    for (path, parse) in [
        (
            &sources.dnsmasq_leases,
            clients::parse_dnsmasq as fn(&str) -> (Vec<[u8; 6]>, usize),
        ),
        (&sources.odhcpd_leases, clients::parse_odhcpd),
    ] {
        if path.exists() {
            found.lease_files = true;
            found.leases.extend(clients::read_leases(path, parse));
        } else {
            debug!(path = %path.display(), "no lease file");
        }
    }

    match route::gateway(&ifname) {
        Ok(g) => found.gateway = g,
        Err(e) => warn!(error = %e, "route dump failed"),
    }

    let salt = Salt::read(&sources.salt_file);
    assemble(found, salt.as_ref())
}
