//! Meshviewer snapshots (the "ffrgb" schema written by the yanic collector):
//! the real community meshes the simulator replays.

use std::collections::HashSet;

use serde::Deserialize;

use crate::SimError;

const LEIPZIG: &str = include_str!("../data/leipzig-meshviewer.json");
const BREMEN: &str = include_str!("../data/bremen-meshviewer.json");

/// The names of the embedded snapshots, for [`Snapshot::builtin`] and help texts.
pub const BUILTIN: [&str; 2] = ["leipzig", "bremen"];

/// A meshviewer snapshot: every node of one community mesh and the links
/// between them.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct Snapshot {
    /// When the snapshot was taken (`2020-03-03T14:26:09+0100`).
    #[serde(default)]
    pub timestamp: Option<String>,
    /// The nodes, online and offline.
    pub nodes: Vec<SnapshotNode>,
    /// The mesh links between nodes (kept for topology work; the simulator
    /// takes the interface MAC addresses of its mesh interfaces from them).
    #[serde(default)]
    pub links: Vec<SnapshotLink>,
}

/// One node of a snapshot. Fields the collector did not know are absent.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SnapshotNode {
    /// The node id (usually the primary MAC as 12 hex digits); the simulator
    /// uses it as the meshtable node id.
    pub node_id: String,
    /// Hostname.
    #[serde(default)]
    pub hostname: String,
    /// Primary MAC address.
    #[serde(default)]
    pub mac: Option<String>,
    /// IPv6 addresses, without prefix length.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Where the node is (coarsened).
    #[serde(default)]
    pub location: Option<SnapshotLocation>,
    /// Hardware model as the firmware names it.
    #[serde(default)]
    pub model: Option<String>,
    /// Firmware: Gluon base and community release.
    #[serde(default)]
    pub firmware: Firmware,
    /// Whether the collector reached the node when the snapshot was taken.
    #[serde(default)]
    pub is_online: bool,
    /// Whether the node is a gateway (an uplink server).
    #[serde(default)]
    pub is_gateway: bool,
    /// Connected clients, all radios and wired.
    #[serde(default)]
    pub clients: u32,
    /// Clients on 2.4 GHz.
    #[serde(default)]
    pub clients_wifi24: u32,
    /// Clients on 5 GHz.
    #[serde(default)]
    pub clients_wifi5: u32,
    /// Wired and other clients.
    #[serde(default)]
    pub clients_other: u32,
    /// One-minute load average.
    #[serde(default)]
    pub loadavg: Option<f64>,
    /// Used share of memory, 0..1.
    #[serde(default)]
    pub memory_usage: Option<f64>,
    /// Used share of the root filesystem, 0..1.
    #[serde(default)]
    pub rootfs_usage: Option<f64>,
    /// Boot time (the meshviewer field is called `uptime` but holds a time stamp).
    #[serde(default)]
    pub uptime: Option<String>,
    /// Number of CPUs; 0 when unknown.
    #[serde(default)]
    pub nproc: Option<u32>,
    /// First time the collector saw the node.
    #[serde(default)]
    pub firstseen: Option<String>,
    /// Last time the collector saw the node.
    #[serde(default)]
    pub lastseen: Option<String>,
    /// The community's domain (segment) the node belongs to.
    #[serde(default)]
    pub domain: Option<String>,
    /// The next hop towards its gateway: a node id (Bremen) or a MAC.
    #[serde(default)]
    pub gateway_nexthop: Option<String>,
}

/// A node's position; some collectors write an empty object for "unknown".
#[derive(Debug, Clone, Copy, Default, PartialEq, Deserialize)]
pub struct SnapshotLocation {
    /// Degrees north.
    #[serde(default)]
    pub latitude: Option<f64>,
    /// Degrees east.
    #[serde(default)]
    pub longitude: Option<f64>,
}

/// A node's firmware; both parts are absent for nodes without node information.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
pub struct Firmware {
    /// Gluon base (`gluon-v2018.2.3`) or distribution (`Debian`).
    #[serde(default)]
    pub base: Option<String>,
    /// Community release (`1.2.3`, `2019.1.1+bremen3`).
    #[serde(default)]
    pub release: Option<String>,
}

/// A mesh link between two nodes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct SnapshotLink {
    /// One end's node id.
    pub source: String,
    /// The other end's node id.
    pub target: String,
    /// Transmit quality from the source, 0..1.
    #[serde(default)]
    pub source_tq: f64,
    /// Transmit quality from the target, 0..1.
    #[serde(default)]
    pub target_tq: f64,
    /// What carries the link.
    #[serde(rename = "type", default)]
    pub kind: LinkKind,
    /// MAC address of the source's interface.
    #[serde(default)]
    pub source_addr: Option<String>,
    /// MAC address of the target's interface.
    #[serde(default)]
    pub target_addr: Option<String>,
}

/// What carries a mesh link.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LinkKind {
    /// 802.11s or ad-hoc mesh between radios.
    Wifi,
    /// A VPN tunnel (fastd, WireGuard) to a gateway.
    Vpn,
    /// Anything else: mesh on LAN/WAN cables, unknown types.
    #[default]
    #[serde(other)]
    Other,
}

impl Snapshot {
    /// Freifunk Leipzig, March 2020: 279 nodes, 347 links.
    pub fn leipzig() -> Snapshot {
        Snapshot::parse(LEIPZIG).expect("the embedded leipzig snapshot parses (tested)")
    }

    /// Freifunk Bremen, May 2020: 891 nodes, 1395 links.
    pub fn bremen() -> Snapshot {
        Snapshot::parse(BREMEN).expect("the embedded bremen snapshot parses (tested)")
    }

    /// An embedded snapshot by name (`leipzig`, `bremen`).
    pub fn builtin(name: &str) -> Option<Snapshot> {
        match name {
            "leipzig" => Some(Snapshot::leipzig()),
            "bremen" => Some(Snapshot::bremen()),
            _ => None,
        }
    }

    /// An embedded snapshot by name, or else a meshviewer.json file at that path.
    pub fn load(name_or_path: &str) -> Result<Snapshot, SimError> {
        if let Some(snapshot) = Snapshot::builtin(name_or_path) {
            return Ok(snapshot);
        }
        let json = std::fs::read_to_string(name_or_path).map_err(|source| SimError::Read {
            path: name_or_path.to_owned(),
            source,
        })?;
        Snapshot::parse(&json)
    }

    /// Parses a meshviewer.json document and checks that every node id is
    /// usable as a meshtable node id and unique.
    pub fn parse(json: &str) -> Result<Snapshot, SimError> {
        let snapshot: Snapshot = serde_json::from_str(json).map_err(SimError::Parse)?;
        let mut seen = HashSet::with_capacity(snapshot.nodes.len());
        for node in &snapshot.nodes {
            meshtable_proto::validate_id(&node.node_id)
                .map_err(|e| SimError::Snapshot(format!("node id {:?}: {e}", node.node_id)))?;
            if !seen.insert(node.node_id.as_str()) {
                return Err(SimError::Snapshot(format!(
                    "node id {} appears twice",
                    node.node_id
                )));
            }
        }
        Ok(snapshot)
    }

    /// Keeps the first `n` nodes and the links between them.
    pub fn truncate(&mut self, n: usize) {
        self.nodes.truncate(n);
        let kept: HashSet<&str> = self.nodes.iter().map(|n| n.node_id.as_str()).collect();
        self.links
            .retain(|l| kept.contains(l.source.as_str()) && kept.contains(l.target.as_str()));
    }

    /// Grows the snapshot to `n` nodes, all online, for load tests: the
    /// nodes are copied in turn, copy `k` of a node taking the node id
    /// `<id>-r<k>` and the hostname `<hostname>-r<k>` (copies have no links).
    /// Keeps the first `n` nodes when there are more.
    pub fn replicate(&mut self, n: usize) {
        if self.nodes.len() >= n {
            self.truncate(n);
        }
        let originals = self.nodes.len();
        for node in &mut self.nodes {
            node.is_online = true;
        }
        if originals == 0 {
            return;
        }
        for i in originals..n {
            let mut node = self.nodes[i % originals].clone();
            let k = i / originals;
            node.node_id = format!("{}-r{k}", node.node_id);
            node.hostname = format!("{}-r{k}", node.hostname);
            self.nodes.push(node);
        }
    }

    /// How many nodes were online when the snapshot was taken.
    pub fn online(&self) -> usize {
        self.nodes.iter().filter(|n| n.is_online).count()
    }

    /// The snapshot time as Unix milliseconds, when present and readable.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.timestamp.as_deref().and_then(parse_time_ms)
    }
}

/// Parses the time stamps meshviewer writes, `2020-03-03T14:26:09+0100`, as
/// well as RFC 3339 (`...+01:00`, `...Z`, fractional seconds), into Unix
/// milliseconds.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 19 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |from: usize, to: usize| -> Option<i64> {
        let part = s.get(from..to)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (year, month, day) = (num(0, 4)?, num(5, 7)?, num(8, 10)?);
    let (hour, minute, second) = (num(11, 13)?, num(14, 16)?, num(17, 19)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    if second > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut millis = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        let ms: String = frac[..digits].chars().chain("00".chars()).take(3).collect();
        millis = ms.parse::<i64>().ok()?;
        rest = &frac[digits..];
    }
    let offset_s = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let digits: String = rest[1..].chars().filter(|c| *c != ':').collect();
            if digits.len() != 4 || !digits.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            let h: i64 = digits[..2].parse().ok()?;
            let m: i64 = digits[2..].parse().ok()?;
            sign * (h * 3600 + m * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_s;
    Some(secs * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's
/// `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_snapshots() {
        let cases = [
            (Snapshot::leipzig(), 279, 347, 208),
            (Snapshot::bremen(), 891, 1395, 833),
        ];
        for (snapshot, nodes, links, online) in cases {
            assert_eq!(snapshot.nodes.len(), nodes);
            assert_eq!(snapshot.links.len(), links);
            assert_eq!(snapshot.online(), online);
            assert!(snapshot.timestamp_ms().is_some());
        }
    }

    #[test]
    fn link_kinds() {
        let count = |s: &Snapshot, k: LinkKind| s.links.iter().filter(|l| l.kind == k).count();
        let b = Snapshot::bremen();
        assert_eq!(
            (
                count(&b, LinkKind::Wifi),
                count(&b, LinkKind::Vpn),
                count(&b, LinkKind::Other)
            ),
            (606, 575, 214)
        );
        let l = Snapshot::leipzig();
        assert_eq!(
            (
                count(&l, LinkKind::Wifi),
                count(&l, LinkKind::Vpn),
                count(&l, LinkKind::Other)
            ),
            (309, 0, 38)
        );
    }

    #[test]
    fn first_node_fields() {
        let s = Snapshot::leipzig();
        let n = &s.nodes[0];
        assert_eq!(n.node_id, "1a3671205872");
        assert_eq!(n.hostname, "leipzig-0001");
        assert_eq!(n.mac.as_deref(), Some("1a:36:71:20:58:72"));
        assert_eq!(n.model.as_deref(), Some("TP-Link CPE510 v1.1"));
        assert_eq!(n.firmware.base.as_deref(), Some("gluon-v2018.2.3"));
        assert_eq!(n.firmware.release.as_deref(), Some("1.2.3"));
        assert_eq!(n.nproc, Some(1));
        assert_eq!(n.loadavg, Some(0.07));
        assert!(n.is_online);
        assert_eq!(
            n.location,
            Some(SnapshotLocation {
                latitude: Some(51.3149),
                longitude: Some(12.2762)
            })
        );
        assert_eq!(n.addresses.len(), 2);
    }

    #[test]
    fn parse_rejects() {
        let cases = [
            ("not json", "parse"),
            (r#"{"nodes":[{"node_id":"Bad Id"}]}"#, "snapshot"),
            (r#"{"nodes":[{"node_id":"a"},{"node_id":"a"}]}"#, "snapshot"),
            (r#"{"nodes":[{"node_id":"a"}],"links":[]}"#, "ok"),
            (
                r#"{"nodes":[],"links":[{"source":"a","target":"b","type":"tunnel"}]}"#,
                "ok",
            ),
        ];
        for (json, want) in cases {
            let got = match Snapshot::parse(json) {
                Ok(_) => "ok",
                Err(SimError::Parse(_)) => "parse",
                Err(SimError::Snapshot(_)) => "snapshot",
                Err(e) => panic!("unexpected error {e}"),
            };
            assert_eq!(got, want, "{json}");
        }
        let s = Snapshot::parse(
            r#"{"nodes":[],"links":[{"source":"a","target":"b","type":"tunnel"}]}"#,
        )
        .unwrap();
        assert_eq!(s.links[0].kind, LinkKind::Other);
    }

    #[test]
    fn truncate_keeps_inner_links() {
        let mut s = Snapshot::bremen();
        s.truncate(100);
        assert_eq!(s.nodes.len(), 100);
        let ids: HashSet<&str> = s.nodes.iter().map(|n| n.node_id.as_str()).collect();
        assert!(
            s.links
                .iter()
                .all(|l| ids.contains(l.source.as_str()) && ids.contains(l.target.as_str()))
        );
        assert!(s.links.len() < 1395);
    }

    #[test]
    fn times() {
        let cases = [
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2020-03-03T14:26:09+0100", Some(1_583_241_969_000)),
            ("2020-03-03T13:26:09+00:00", Some(1_583_241_969_000)),
            ("2020-03-03T13:26:09.5Z", Some(1_583_241_969_500)),
            ("2020-05-13T13:11:52+0200", Some(1_589_368_312_000)),
            ("2000-02-29T00:00:00-0130", Some(951_787_800_000)),
            ("2020-03-03", None),
            ("2020-13-03T14:26:09Z", None),
            ("2020-03-03T14:26:09", None),
            ("2020-03-03T14:26:09+01", None),
            ("garbage-garbage-garbage", None),
        ];
        for (s, want) in cases {
            assert_eq!(parse_time_ms(s), want, "{s}");
        }
    }
}
