//! The default route, which names the uplink: one `RTM_GETROUTE` dump over
//! rtnetlink; of the unicast default routes (prefix length 0) in the main
//! table, the one with the lowest metric (IPv4 before IPv6 on a tie) gives
//! the gateway address and the outgoing interface.

use std::net::IpAddr;

use meshtable_proto::Gateway;
use netlink_packet_route::RouteNetlinkMessage;
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteType,
};

use super::netlink::{self, NetlinkError};

/// `RT_TABLE_MAIN`.
const MAIN: u32 = RouteHeader::RT_TABLE_MAIN as u32;

/// A default route as the kernel lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultRoute {
    /// The gateway, when the route has one (not on point-to-point links).
    pub gateway: Option<IpAddr>,
    /// The outgoing interface index.
    pub oif: Option<u32>,
    /// The route's metric (`RTA_PRIORITY`), 0 when absent.
    pub metric: u32,
    /// IPv6 rather than IPv4.
    pub ipv6: bool,
}

fn ip(a: &RouteAddress) -> Option<IpAddr> {
    match a {
        RouteAddress::Inet(v4) => Some(IpAddr::V4(*v4)),
        RouteAddress::Inet6(v6) => Some(IpAddr::V6(*v6)),
        _ => None,
    }
}

/// The default route in one `RTM_NEWROUTE` message, if it is one: unicast,
/// prefix length 0, main table. A multipath route gives its first hop.
pub fn default_route(msg: &RouteMessage) -> Option<DefaultRoute> {
    let h = &msg.header;
    if h.destination_prefix_length != 0 || h.kind != RouteType::Unicast {
        return None;
    }
    let mut table = u32::from(h.table);
    let mut r = DefaultRoute {
        gateway: None,
        oif: None,
        metric: 0,
        ipv6: matches!(h.address_family, netlink_packet_route::AddressFamily::Inet6),
    };
    for a in &msg.attributes {
        match a {
            RouteAttribute::Table(t) => table = *t,
            RouteAttribute::Gateway(g) => r.gateway = ip(g),
            RouteAttribute::Oif(i) => r.oif = Some(*i),
            RouteAttribute::Priority(p) => r.metric = *p,
            RouteAttribute::MultiPath(hops) => {
                if let Some(hop) = hops.first() {
                    r.oif = r.oif.or(Some(hop.interface_index));
                    r.gateway = r.gateway.or_else(|| {
                        hop.attributes.iter().find_map(|a| match a {
                            RouteAttribute::Gateway(g) => ip(g),
                            _ => None,
                        })
                    });
                }
            }
            _ => {}
        }
    }
    (table == MAIN).then_some(r)
}

/// The uplink among `routes`: the lowest metric, IPv4 first on a tie, and
/// its interface named by `ifname`. A route whose interface has no name is
/// passed over.
pub fn pick(routes: &[DefaultRoute], ifname: &dyn Fn(u32) -> Option<String>) -> Option<Gateway> {
    let mut sorted: Vec<&DefaultRoute> = routes.iter().collect();
    sorted.sort_by_key(|r| (r.metric, r.ipv6));
    sorted.into_iter().find_map(|r| {
        Some(Gateway {
            via: r.gateway.map(|g| g.to_string()),
            ifname: r.oif.and_then(ifname)?,
        })
    })
}

/// Reads the routing table and picks the uplink; `None` without a default
/// route.
pub fn gateway(ifname: &dyn Fn(u32) -> Option<String>) -> Result<Option<Gateway>, NetlinkError> {
    let d = netlink::dump(RouteNetlinkMessage::GetRoute(RouteMessage::default()))?;
    let routes: Vec<DefaultRoute> = d
        .messages
        .iter()
        .filter_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => default_route(r),
            _ => None,
        })
        .collect();
    Ok(pick(&routes, ifname))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(metric: u32, ipv6: bool, oif: u32, gw: &str) -> DefaultRoute {
        DefaultRoute {
            gateway: gw.parse().ok(),
            oif: Some(oif),
            metric,
            ipv6,
        }
    }

    #[test]
    fn lowest_metric_wins_ipv4_on_ties() {
        let name = |i: u32| (i != 9).then(|| format!("if{i}"));
        let routes = [
            r(10, false, 2, "192.0.2.1"),
            r(0, true, 3, "fe80::1"),
            r(0, false, 4, "198.51.100.1"),
            r(0, false, 9, "203.0.113.1"),
        ];
        let g = pick(&routes, &name).unwrap();
        assert_eq!(
            (g.via.as_deref(), g.ifname.as_str()),
            (Some("198.51.100.1"), "if4")
        );
        let g = pick(&routes[..2], &name).unwrap();
        assert_eq!(g.ifname, "if3");
        assert_eq!(pick(&[], &name), None);
        let ptp = [r(0, false, 5, "")];
        assert_eq!(pick(&ptp, &name).unwrap().via, None);
    }
}
