//! Clients: wifi stations associated with the router's access points, and
//! DHCP leases (dnsmasq's `/tmp/dhcp.leases`, odhcpd's state file), counted
//! once per MAC as 2.4 GHz wifi, 5 GHz-and-up wifi, or other (a lease whose
//! MAC is not an associated station).
//!
//! A client's MAC never leaves the router: it is turned into an id, a keyed
//! hash (HMAC-SHA256 with the per-network salt the controller hands out at
//! enrollment, truncated to 16 hex digits), and without a salt only counts
//! are reported.

use std::collections::HashSet;
use std::path::Path;

use hmac::{Hmac, Mac};
use meshtable_proto::Clients;
use sha2::Sha256;
use tracing::{debug, warn};

/// Hex digits of a client id (64 bits: unique enough to count the clients
/// of a network, short on the wire).
pub const ID_HEX_LEN: usize = 16;

/// The per-network salt for client ids. Its bytes never appear in logs or
/// `Debug` output.
#[derive(Clone)]
pub struct Salt(Vec<u8>);

impl std::fmt::Debug for Salt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Salt(..)")
    }
}

impl Salt {
    /// A salt from its bytes; `None` when empty.
    pub fn new(bytes: Vec<u8>) -> Option<Salt> {
        (!bytes.is_empty()).then_some(Salt(bytes))
    }

    /// Reads the salt file: its content with surrounding whitespace
    /// trimmed (the enroll command writes it as text). A missing or empty
    /// file means no salt (counts only), logged at debug level.
    pub fn read(path: &Path) -> Option<Salt> {
        match std::fs::read(path) {
            Ok(bytes) => {
                let salt = Salt::new(bytes.trim_ascii().to_vec());
                if salt.is_none() {
                    debug!(path = %path.display(), "empty salt file: client counts only");
                }
                salt
            }
            Err(e) => {
                debug!(path = %path.display(), error = %e, "no salt file: client counts only");
                None
            }
        }
    }

    /// The client id of `mac`: HMAC-SHA256 keyed with the salt over the six
    /// MAC bytes, the first [`ID_HEX_LEN`] hex digits.
    pub fn client_id(&self, mac: &[u8; 6]) -> String {
        // HMAC takes a key of any length.
        let mut h = <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("hmac takes any key");
        h.update(mac);
        let out = h.finalize().into_bytes();
        let mut s = String::with_capacity(ID_HEX_LEN);
        for b in out.iter().take(ID_HEX_LEN / 2) {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }
}

/// Parses a MAC written as six colon- or dash-separated hex groups (one or
/// two digits each, as `ether_ntoa` writes them) or as twelve hex digits.
pub fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    if text.len() == 12 && !text.contains([':', '-']) {
        for (i, b) in mac.iter_mut().enumerate() {
            *b = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        return Some(mac);
    }
    let mut groups = text.split([':', '-']);
    for b in &mut mac {
        let g = groups.next()?;
        if g.is_empty() || g.len() > 2 {
            return None;
        }
        *b = u8::from_str_radix(g, 16).ok()?;
    }
    groups.next().is_none().then_some(mac)
}

/// The MACs in a dnsmasq lease file: `<expiry> <mac> <ip> <hostname>
/// <client-id>` per IPv4 lease. After the `duid` line come DHCPv6 leases,
/// whose second field is an IAID, not a MAC: they are skipped. Returns the
/// MACs and how many lines were malformed.
pub fn parse_dnsmasq(text: &str) -> (Vec<[u8; 6]>, usize) {
    let mut macs = Vec::new();
    let mut malformed = 0;
    let mut v6 = false;
    for line in text.lines() {
        let fields: Vec<&str> = line.split_ascii_whitespace().collect();
        match fields.as_slice() {
            [] => {}
            ["duid", ..] => v6 = true,
            [_, _] | [_] => malformed += 1,
            [expiry, id, ..] => {
                if expiry.parse::<u64>().is_err() {
                    malformed += 1;
                } else if v6 {
                    // IAID; no MAC to count.
                } else if let Some(mac) = parse_mac(id) {
                    macs.push(mac);
                } else if !id.contains([':', '-']) && id.parse::<u64>().is_ok() {
                    // A v6 lease of a file without a `duid` line.
                } else if id.len() > 17 {
                    // A non-Ethernet hardware address (`<type>-<hex>`).
                } else {
                    malformed += 1;
                }
            }
        }
    }
    (macs, malformed)
}

/// The MAC inside a DHCPv6 DUID in hex, for the two DUID types built from
/// one: DUID-LLT (type 1, hardware type 1: `00010001` + 4 bytes of time +
/// MAC) and DUID-LL (type 3: `00030001` + MAC).
fn duid_mac(duid: &str) -> Option<[u8; 6]> {
    match (duid.len(), duid.get(..8)?) {
        (28, "00010001") => parse_mac(duid.get(16..)?),
        (20, "00030001") => parse_mac(duid.get(8..)?),
        _ => None,
    }
}

/// The MACs in odhcpd's state file: lease lines start with `# ` and read
/// `# <iface> <hwaddr or DUID> <"ipv4" or IAID> <hostname> <valid> ...`.
/// IPv4 leases carry the MAC (hex, or as `ether_ntoa` writes it); DHCPv6
/// leases carry a DUID, whose MAC is taken when the DUID is built from one.
/// Other lines (the hosts entries) are ignored.
pub fn parse_odhcpd(text: &str) -> (Vec<[u8; 6]>, usize) {
    let mut macs = Vec::new();
    let mut malformed = 0;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("# ") else {
            continue;
        };
        let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
        match fields.as_slice() {
            [_iface, hw, "ipv4", _, ..] => match parse_mac(hw) {
                Some(mac) => macs.push(mac),
                None => malformed += 1,
            },
            [_iface, duid, _iaid, _, ..] => {
                if let Some(mac) = duid_mac(duid) {
                    macs.push(mac);
                } else if !duid.bytes().all(|b| b.is_ascii_hexdigit()) {
                    malformed += 1;
                }
            }
            _ => malformed += 1,
        }
    }
    (macs, malformed)
}

/// Reads a lease file with `parse`. A missing file gives nothing (debug
/// log); malformed lines are skipped and logged.
pub fn read_leases(path: &Path, parse: fn(&str) -> (Vec<[u8; 6]>, usize)) -> Vec<[u8; 6]> {
    match std::fs::read(path) {
        Ok(bytes) => {
            let (macs, malformed) = parse(&String::from_utf8_lossy(&bytes));
            if malformed > 0 {
                warn!(path = %path.display(), malformed, "skipped malformed lease lines");
            }
            macs
        }
        Err(e) => {
            debug!(path = %path.display(), error = %e, "no lease file");
            Vec::new()
        }
    }
}

/// A wifi client: its MAC and whether its radio is on 2.4 GHz.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WifiClient {
    /// The station's MAC.
    pub mac: [u8; 6],
    /// On a 2.4 GHz radio (else 5 GHz or above).
    pub band_24: bool,
}

/// Counts clients: every MAC once, a wifi station by its band, a lease
/// whose MAC is not an associated station as other. With a salt, `ids` holds
/// the client id of every counted MAC (sorted, at most `max_ids`).
pub fn count(
    wifi: &[WifiClient],
    leases: &[[u8; 6]],
    salt: Option<&Salt>,
    max_ids: usize,
) -> Clients {
    let mut seen: HashSet<[u8; 6]> = HashSet::new();
    let mut c = Clients::default();
    for w in wifi {
        if seen.insert(w.mac) {
            if w.band_24 {
                c.wifi_24 += 1;
            } else {
                c.wifi_5 += 1;
            }
        }
    }
    for mac in leases {
        if seen.insert(*mac) {
            c.other += 1;
        }
    }
    c.total = c.wifi_24 + c.wifi_5 + c.other;
    if let Some(salt) = salt {
        let mut ids: Vec<String> = seen.iter().map(|m| salt.client_id(m)).collect();
        ids.sort();
        ids.truncate(max_ids);
        c.ids = ids;
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        let m = Some([0x02, 0xab, 0x0c, 0, 0x1d, 0xff]);
        assert_eq!(parse_mac("02:ab:0c:00:1d:ff"), m);
        assert_eq!(parse_mac("2:ab:c:0:1d:ff"), m);
        assert_eq!(parse_mac("02-AB-0C-00-1D-FF"), m);
        assert_eq!(parse_mac("02ab0c001dff"), m);
        assert_eq!(parse_mac("02:ab:0c:00:1d"), None);
        assert_eq!(parse_mac("02:ab:0c:00:1d:ff:00"), None);
        assert_eq!(parse_mac("02:ab:0c:00:1d:fg"), None);
        assert_eq!(parse_mac("123"), None);
    }

    #[test]
    fn ids_are_keyed_and_short() {
        let a = Salt::new(b"network-a".to_vec()).unwrap();
        let b = Salt::new(b"network-b".to_vec()).unwrap();
        let mac = [2, 0, 0, 0, 0, 1];
        assert_eq!(a.client_id(&mac).len(), ID_HEX_LEN);
        assert_eq!(a.client_id(&mac), a.client_id(&mac));
        assert_ne!(a.client_id(&mac), b.client_id(&mac));
        assert_ne!(a.client_id(&mac), a.client_id(&[2, 0, 0, 0, 0, 2]));
        assert_eq!(format!("{a:?}"), "Salt(..)");
        assert!(Salt::new(Vec::new()).is_none());
    }

    /// The keyed hash is standard HMAC-SHA256: RFC 4231 test case 2.
    #[test]
    fn hmac_is_rfc_4231() {
        let mut h = <Hmac<Sha256> as Mac>::new_from_slice(b"Jefe").unwrap();
        h.update(b"what do ya want for nothing?");
        let out = h.finalize().into_bytes();
        let hex: String = out.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn counting_each_mac_once() {
        let w = |n: u8, band_24| WifiClient {
            mac: [2, 0, 0, 0, 0, n],
            band_24,
        };
        let wifi = [w(1, true), w(2, false), w(3, false), w(1, true)];
        let leases = [[2, 0, 0, 0, 0, 2], [2, 0, 0, 0, 0, 9], [2, 0, 0, 0, 0, 9]];
        let c = count(&wifi, &leases, None, 100);
        assert_eq!(
            (c.total, c.wifi_24, c.wifi_5, c.other, c.ids.len()),
            (4, 1, 2, 1, 0)
        );
        let salt = Salt::new(b"s".to_vec()).unwrap();
        let c = count(&wifi, &leases, Some(&salt), 100);
        assert_eq!(c.ids.len(), 4);
        assert!(c.ids.windows(2).all(|p| p[0] < p[1]));
        assert_eq!(count(&wifi, &leases, Some(&salt), 2).ids.len(), 2);
    }
}
