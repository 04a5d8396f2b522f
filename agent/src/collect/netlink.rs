//! Interfaces, their counters and addresses, from the kernel over rtnetlink:
//! one `RTM_GETLINK` dump (with `IFLA_STATS64`) and one `RTM_GETADDR` dump on
//! a synchronous netlink socket. No `/sys` counters, no external commands.
//!
//! The socket code ([`dump`]) only moves bytes; turning the kernel's messages
//! into [`Link`]s ([`parse_dump`], [`link_from_message`], [`classify`]) is pure
//! and tested on recorded bytes.

use std::net::IpAddr;
use std::path::Path;

use meshtable_proto::{InterfaceCounters, InterfaceKind};
use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_DUMP_INTR, NLM_F_REQUEST, NetlinkBuffer, NetlinkHeader, NetlinkMessage,
    NetlinkPayload,
};
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::address::{AddressAttribute, AddressMessage};
use netlink_packet_route::link::{LinkAttribute, LinkInfo, LinkMessage};
use netlink_sys::protocols::NETLINK_ROUTE;
use netlink_sys::{Socket, SocketAddr};

/// Why the kernel's interface list could not be had.
#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    /// Opening, sending on or receiving from the netlink socket failed.
    #[error("netlink socket: {0}")]
    Socket(std::io::Error),
    /// The kernel answered the request with an error.
    #[error("kernel refused the netlink request: {0}")]
    Kernel(std::io::Error),
    /// The reply is not well-formed netlink.
    #[error("malformed netlink reply: {0}")]
    Malformed(String),
    /// The dump was interrupted by changes every time it was tried.
    #[error("netlink dump kept being interrupted by interface changes")]
    Interrupted,
}

/// ARPHRD (link layer) types the classification looks at (`<linux/if_arp.h>`).
mod arphrd {
    pub const ETHER: u16 = 1;
    pub const PPP: u16 = 512;
    pub const TUNNEL: u16 = 768;
    pub const TUNNEL6: u16 = 769;
    pub const LOOPBACK: u16 = 772;
    pub const SIT: u16 = 776;
    pub const IPGRE: u16 = 778;
    pub const IEEE80211: u16 = 801;
    pub const IEEE80211_PRISM: u16 = 802;
    pub const IEEE80211_RADIOTAP: u16 = 803;
    pub const IP6GRE: u16 = 823;
    pub const NONE: u16 = 0xfffe;
}

/// One network interface as the kernel describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    /// Interface index.
    pub index: u32,
    /// Interface name.
    pub name: String,
    /// Hardware address, when it is a real MAC (six bytes, not zero, not
    /// multicast).
    pub mac: Option<[u8; 6]>,
    /// MTU.
    pub mtu: u32,
    /// `IFLA_LINKINFO` kind (`veth`, `bridge`...); `None` for hardware
    /// devices, which have no link ops.
    pub link_kind: Option<String>,
    /// What sort of interface it is.
    pub kind: InterfaceKind,
    /// Cumulative counters (`IFLA_STATS64`, else the 32-bit `IFLA_STATS`).
    pub counters: InterfaceCounters,
}

impl Link {
    /// A hardware device (Ethernet port, radio, DSA switch port) rather than
    /// a software one (veth, bridge, VLAN, tunnel...).
    pub fn is_physical(&self) -> bool {
        self.kind != InterfaceKind::Loopback
            && matches!(self.link_kind.as_deref(), None | Some("dsa"))
    }
}

/// An address of an interface, in CIDR notation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// Index of the interface it belongs to.
    pub index: u32,
    /// `192.0.2.1/24`, `fe80::1/64`.
    pub cidr: String,
}

/// Formats a MAC address as `aa:bb:cc:dd:ee:ff`.
pub fn format_mac(mac: &[u8; 6]) -> String {
    let mut s = String::with_capacity(17);
    for (i, b) in mac.iter().enumerate() {
        if i > 0 {
            s.push(':');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// A hardware address is a real MAC when it has six bytes, is not all zero
/// and is not a group (multicast or broadcast) address.
pub fn real_mac(addr: &[u8]) -> Option<[u8; 6]> {
    let mac: [u8; 6] = addr.try_into().ok()?;
    (mac != [0; 6] && mac[0] & 1 == 0).then_some(mac)
}

/// The sort of an interface from its `IFLA_LINKINFO` kind, its ARPHRD type,
/// and whether it is a wireless device (has a `phy80211`).
pub fn classify(link_kind: Option<&str>, arphrd: u16, wireless: bool) -> InterfaceKind {
    use InterfaceKind as K;
    if arphrd == arphrd::LOOPBACK {
        return K::Loopback;
    }
    if wireless
        || matches!(
            arphrd,
            arphrd::IEEE80211 | arphrd::IEEE80211_PRISM | arphrd::IEEE80211_RADIOTAP
        )
        || link_kind == Some("virt_wifi")
    {
        return K::Wireless;
    }
    match link_kind {
        Some("bridge") => K::Bridge,
        Some("vlan") => K::Vlan,
        Some(
            "wireguard" | "gre" | "gretap" | "ip6gre" | "ip6gretap" | "ipip" | "ip6tnl" | "sit"
            | "vti" | "vti6" | "vxlan" | "geneve" | "tun" | "xfrm" | "l2tp" | "erspan"
            | "ip6erspan" | "bareudp" | "amt" | "gtp",
        ) => K::Tunnel,
        Some(
            "veth" | "dummy" | "macvlan" | "macvtap" | "ipvlan" | "ipvtap" | "batadv" | "bond"
            | "team" | "ifb" | "vrf" | "netkit" | "nlmon" | "hsr" | "macsec",
        ) => K::Virtual,
        Some("dsa") => K::Ethernet,
        Some(_) => K::Other,
        None => match arphrd {
            arphrd::ETHER => K::Ethernet,
            arphrd::TUNNEL
            | arphrd::TUNNEL6
            | arphrd::SIT
            | arphrd::IPGRE
            | arphrd::IP6GRE
            | arphrd::NONE => K::Tunnel,
            arphrd::PPP => K::Other,
            _ => K::Other,
        },
    }
}

/// Whether `/sys/class/net/<name>` belongs to a cfg80211 wireless device.
/// (Only the kind comes from here; names and counters come from netlink.)
pub fn is_wireless_sysfs(sys_class_net: &Path, name: &str) -> bool {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return false;
    }
    let dir = sys_class_net.join(name);
    dir.join("phy80211").exists() || dir.join("wireless").exists()
}

/// Builds a [`Link`] from one `RTM_NEWLINK` message. Messages without a name
/// are skipped (`None`).
pub fn link_from_message(msg: &LinkMessage, wireless: &dyn Fn(&str) -> bool) -> Option<Link> {
    let mut name = None;
    let mut mac = None;
    let mut mtu = 0;
    let mut link_kind = None;
    let mut stats64 = None;
    let mut stats32 = None;
    for attr in &msg.attributes {
        match attr {
            LinkAttribute::IfName(n) => name = Some(n.clone()),
            LinkAttribute::Address(a) => mac = real_mac(a),
            LinkAttribute::Mtu(m) => mtu = *m,
            LinkAttribute::LinkInfo(infos) => {
                link_kind = infos.iter().find_map(|i| match i {
                    LinkInfo::Kind(k) => Some(k.to_string()),
                    _ => None,
                });
            }
            LinkAttribute::Stats64(s) => stats64 = Some(*s),
            LinkAttribute::Stats(s) => stats32 = Some(*s),
            _ => {}
        }
    }
    let name = name?;
    let arphrd = u16::from(msg.header.link_layer_type);
    let kind = classify(link_kind.as_deref(), arphrd, wireless(&name));
    let counters = match (stats64, stats32) {
        (Some(s), _) => InterfaceCounters {
            name: name.clone(),
            rx_bytes: s.rx_bytes,
            tx_bytes: s.tx_bytes,
            rx_packets: s.rx_packets,
            tx_packets: s.tx_packets,
            rx_errors: s.rx_errors,
            tx_errors: s.tx_errors,
            rx_dropped: s.rx_dropped,
            tx_dropped: s.tx_dropped,
        },
        (None, Some(s)) => InterfaceCounters {
            name: name.clone(),
            rx_bytes: s.rx_bytes.into(),
            tx_bytes: s.tx_bytes.into(),
            rx_packets: s.rx_packets.into(),
            tx_packets: s.tx_packets.into(),
            rx_errors: s.rx_errors.into(),
            tx_errors: s.tx_errors.into(),
            rx_dropped: s.rx_dropped.into(),
            tx_dropped: s.tx_dropped.into(),
        },
        (None, None) => InterfaceCounters {
            name: name.clone(),
            ..InterfaceCounters::default()
        },
    };
    Some(Link {
        index: msg.header.index,
        name,
        mac,
        mtu,
        link_kind,
        kind,
        counters,
    })
}

/// Builds an [`Address`] from one `RTM_NEWADDR` message: `IFA_LOCAL` when
/// present (on point-to-point links `IFA_ADDRESS` is the peer), else
/// `IFA_ADDRESS`.
pub fn address_from_message(msg: &AddressMessage) -> Option<Address> {
    let mut local = None;
    let mut address = None;
    for attr in &msg.attributes {
        match attr {
            AddressAttribute::Local(ip) => local = Some(*ip),
            AddressAttribute::Address(ip) => address = Some(*ip),
            _ => {}
        }
    }
    let ip: IpAddr = local.or(address)?;
    Some(Address {
        index: msg.header.index,
        cidr: format!("{ip}/{}", msg.header.prefix_len),
    })
}

/// What one recorded or received dump contained.
#[derive(Debug, Default)]
pub struct Dump {
    /// The messages, in the kernel's order.
    pub messages: Vec<RouteNetlinkMessage>,
    /// The kernel flagged the dump as inconsistent (`NLM_F_DUMP_INTR`).
    pub interrupted: bool,
    /// The `NLMSG_DONE` message was seen.
    pub done: bool,
    /// Messages that did not parse and were skipped, with why.
    pub skipped: Vec<String>,
}

/// Parses the datagrams of a dump reply (each may hold several netlink
/// messages) into `dump`. A message that does not parse is skipped and noted,
/// so one odd interface cannot hide the others.
pub fn parse_dump(datagram: &[u8], dump: &mut Dump) -> Result<(), NetlinkError> {
    let mut offset = 0;
    while offset < datagram.len() && !dump.done {
        let bytes = &datagram[offset..];
        let buf = NetlinkBuffer::new_checked(bytes)
            .map_err(|e| NetlinkError::Malformed(e.to_string()))?;
        let len = buf.length() as usize;
        if buf.flags() & NLM_F_DUMP_INTR != 0 {
            dump.interrupted = true;
        }
        match NetlinkMessage::<RouteNetlinkMessage>::deserialize(&bytes[..len]) {
            Ok(msg) => match msg.payload {
                NetlinkPayload::Done(_) => dump.done = true,
                NetlinkPayload::Error(e) => {
                    if let Some(code) = e.code {
                        return Err(NetlinkError::Kernel(std::io::Error::from_raw_os_error(
                            -code.get(),
                        )));
                    }
                }
                NetlinkPayload::InnerMessage(m) => dump.messages.push(m),
                NetlinkPayload::Noop | NetlinkPayload::Overrun(_) => {}
                _ => {}
            },
            Err(e) => dump
                .skipped
                .push(format!("message type {}: {e}", buf.message_type())),
        }
        // Messages are aligned to four bytes.
        offset += (len + 3) & !3;
    }
    Ok(())
}

/// Sends one dump request on a fresh socket and collects the reply.
pub fn dump(request: RouteNetlinkMessage) -> Result<Dump, NetlinkError> {
    for _ in 0..3 {
        let d = dump_once(request.clone())?;
        if !d.interrupted {
            return Ok(d);
        }
    }
    Err(NetlinkError::Interrupted)
}

fn dump_once(request: RouteNetlinkMessage) -> Result<Dump, NetlinkError> {
    let mut socket = Socket::new(NETLINK_ROUTE).map_err(NetlinkError::Socket)?;
    socket.bind_auto().map_err(NetlinkError::Socket)?;
    socket
        .connect(&SocketAddr::new(0, 0))
        .map_err(NetlinkError::Socket)?;

    let mut header = NetlinkHeader::default();
    header.flags = NLM_F_DUMP | NLM_F_REQUEST;
    header.sequence_number = 1;
    let mut packet = NetlinkMessage::new(header, NetlinkPayload::from(request));
    packet.finalize();
    let mut buf = vec![0; packet.buffer_len()];
    packet.serialize(&mut buf);
    socket.send(&buf, 0).map_err(NetlinkError::Socket)?;

    let mut dump = Dump::default();
    while !dump.done {
        let (datagram, _) = socket.recv_from_full().map_err(NetlinkError::Socket)?;
        if datagram.is_empty() {
            return Err(NetlinkError::Malformed("empty datagram".to_owned()));
        }
        parse_dump(&datagram, &mut dump)?;
    }
    Ok(dump)
}

/// Interfaces with their counters, in ifindex order.
pub fn links(wireless: &dyn Fn(&str) -> bool) -> Result<(Vec<Link>, Vec<String>), NetlinkError> {
    let d = dump(RouteNetlinkMessage::GetLink(LinkMessage::default()))?;
    let mut links: Vec<Link> = d
        .messages
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewLink(l) => link_from_message(l, wireless),
            _ => None,
        })
        .collect();
    links.sort_by_key(|l| l.index);
    Ok((links, d.skipped))
}

/// Every address of every interface.
pub fn addresses() -> Result<(Vec<Address>, Vec<String>), NetlinkError> {
    let d = dump(RouteNetlinkMessage::GetAddress(AddressMessage::default()))?;
    let addrs = d
        .messages
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewAddress(a) => address_from_message(a),
            _ => None,
        })
        .collect();
    Ok((addrs, d.skipped))
}

/// The interface whose MAC becomes the node id: among interfaces with a real
/// MAC, hardware devices before software ones (veth, bridge...), then the
/// lowest ifindex.
pub fn primary(links: &[Link]) -> Option<&Link> {
    links
        .iter()
        .filter(|l| l.mac.is_some() && l.kind != InterfaceKind::Loopback)
        .min_by_key(|l| (!l.is_physical(), l.index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classification() {
        use InterfaceKind as K;
        let e = arphrd::ETHER;
        let cases = [
            (None, arphrd::LOOPBACK, false, K::Loopback),
            (None, e, false, K::Ethernet),
            (None, e, true, K::Wireless),
            (None, arphrd::IEEE80211_RADIOTAP, false, K::Wireless),
            (Some("bridge"), e, false, K::Bridge),
            (Some("vlan"), e, false, K::Vlan),
            (Some("wireguard"), arphrd::NONE, false, K::Tunnel),
            (Some("gre"), arphrd::IPGRE, false, K::Tunnel),
            (None, arphrd::NONE, false, K::Tunnel),
            (None, arphrd::SIT, false, K::Tunnel),
            (Some("veth"), e, false, K::Virtual),
            (Some("batadv"), e, false, K::Virtual),
            (Some("dsa"), e, false, K::Ethernet),
            (Some("something_new"), e, false, K::Other),
            (None, arphrd::PPP, false, K::Other),
        ];
        for (link_kind, arphrd, wireless, want) in cases {
            assert_eq!(
                classify(link_kind, arphrd, wireless),
                want,
                "{link_kind:?} {arphrd} {wireless}"
            );
        }
    }

    #[test]
    fn macs() {
        assert_eq!(
            real_mac(&[0x02, 0xfc, 0, 0, 0, 1]),
            Some([0x02, 0xfc, 0, 0, 0, 1])
        );
        assert_eq!(real_mac(&[0; 6]), None);
        assert_eq!(real_mac(&[0xff; 6]), None);
        assert_eq!(real_mac(&[0x01, 0, 0x5e, 0, 0, 1]), None);
        assert_eq!(real_mac(&[10, 0, 0, 1]), None);
        assert_eq!(
            format_mac(&[0x02, 0xfc, 0, 0xab, 0, 1]),
            "02:fc:00:ab:00:01"
        );
    }

    fn link(index: u32, kind: InterfaceKind, link_kind: Option<&str>, mac: u8) -> Link {
        Link {
            index,
            name: format!("if{index}"),
            mac: (mac != 0).then_some([2, 0, 0, 0, 0, mac]),
            mtu: 1500,
            link_kind: link_kind.map(str::to_owned),
            kind,
            counters: InterfaceCounters::default(),
        }
    }

    #[test]
    fn primary_prefers_hardware_then_lowest_index() {
        use InterfaceKind as K;
        let cases: [(Vec<Link>, Option<u32>); 5] = [
            (
                vec![
                    link(1, K::Loopback, None, 0),
                    link(2, K::Virtual, Some("ifb"), 2),
                    link(4, K::Ethernet, None, 4),
                    link(3, K::Wireless, None, 3),
                ],
                Some(3),
            ),
            (
                vec![
                    link(5, K::Virtual, Some("veth"), 5),
                    link(3, K::Bridge, Some("bridge"), 3),
                ],
                Some(3),
            ),
            (
                vec![
                    link(2, K::Ethernet, None, 0),
                    link(9, K::Virtual, Some("veth"), 9),
                ],
                Some(9),
            ),
            (vec![link(1, K::Loopback, None, 1)], None),
            (vec![], None),
        ];
        for (links, want) in cases {
            assert_eq!(primary(&links).map(|l| l.index), want, "{links:?}");
        }
    }

    #[test]
    fn live_dump_has_loopback() {
        let (links, skipped) = links(&|_| false).unwrap();
        assert!(skipped.is_empty(), "{skipped:?}");
        let lo = links.iter().find(|l| l.name == "lo").expect("lo listed");
        assert_eq!(
            (lo.kind, lo.mac, lo.index),
            (InterfaceKind::Loopback, None, 1)
        );
        let (addrs, _) = addresses().unwrap();
        assert!(
            addrs
                .iter()
                .any(|a| a.index == 1 && a.cidr == "127.0.0.1/8"),
            "{addrs:?}"
        );
    }
}
