//! This machine as the kernel sees it: what the agent's reports must match.

use std::collections::BTreeMap;
use std::fs;
use std::process::{Command, Stdio};

use serde_json::Value;

/// One network interface from `ip -j -s link`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Hardware address, when the link has one (`aa:bb:cc:dd:ee:ff`).
    pub mac: Option<String>,
    /// Maximum transmission unit.
    pub mtu: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets received.
    pub rx_packets: u64,
    /// Packets sent.
    pub tx_packets: u64,
}

/// Every interface of this network namespace, by name, with its 64-bit
/// counters, as `ip -j -s link show` prints them.
///
/// # Panics
///
/// When `ip` (Debian package iproute2) is missing or prints something else.
pub fn links() -> BTreeMap<String, Link> {
    let out = Command::new("ip")
        .args(["-j", "-s", "link", "show"])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip -j -s link show` (install iproute2): {e}"));
    assert!(
        out.status.success(),
        "`ip -j -s link show` failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: Value = serde_json::from_slice(&out.stdout).expect("`ip -j` prints JSON");
    parse_links(&json)
}

fn parse_links(json: &Value) -> BTreeMap<String, Link> {
    let entries = json.as_array().expect("`ip -j link` prints an array");
    entries
        .iter()
        .map(|e| {
            let name = e["ifname"].as_str().expect("every link has an ifname");
            let stat = |dir: &str, what: &str| {
                e["stats64"][dir][what]
                    .as_u64()
                    .unwrap_or_else(|| panic!("{name}: no stats64.{dir}.{what} in {e}"))
            };
            let mac = e["address"]
                .as_str()
                .filter(|_| e["link_type"] == "ether")
                .map(str::to_owned);
            let link = Link {
                mac,
                mtu: e["mtu"].as_u64().unwrap_or_default(),
                rx_bytes: stat("rx", "bytes"),
                tx_bytes: stat("tx", "bytes"),
                rx_packets: stat("rx", "packets"),
                tx_packets: stat("tx", "packets"),
            };
            (name.to_owned(), link)
        })
        .collect()
}

/// This boot's id, `/proc/sys/kernel/random/boot_id`.
pub fn boot_id() -> String {
    read_trimmed("/proc/sys/kernel/random/boot_id")
}

/// This machine's hostname, `/proc/sys/kernel/hostname`.
pub fn hostname() -> String {
    read_trimmed("/proc/sys/kernel/hostname")
}

fn read_trimmed(path: &str) -> String {
    fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
        .trim()
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ip_json() {
        let json = serde_json::json!([
            {"ifname": "lo", "link_type": "loopback", "address": "00:00:00:00:00:00",
             "stats64": {"rx": {"bytes": 10, "packets": 1}, "tx": {"bytes": 10, "packets": 1}}},
            {"ifname": "eth0", "link_type": "ether", "address": "02:42:ac:11:00:02", "mtu": 1500,
             "stats64": {"rx": {"bytes": 7, "packets": 2}, "tx": {"bytes": 5, "packets": 3}}}
        ]);
        let links = parse_links(&json);
        assert_eq!(links["lo"].mac, None);
        assert_eq!(links["eth0"].mac.as_deref(), Some("02:42:ac:11:00:02"));
        assert_eq!(links["eth0"].tx_packets, 3);
        assert_eq!(links["eth0"].mtu, 1500);
    }

    #[test]
    fn reads_this_machine() {
        let links = links();
        assert!(links.contains_key("lo"), "{links:?}");
        assert_eq!(boot_id().len(), 36);
        assert!(!hostname().is_empty());
    }
}
