//! The mesh a simulated router reports: its batman-adv neighbours with the
//! snapshot's link qualities, its default route, and its client counts.
//!
//! Every snapshot link `source -> target` becomes a neighbour of the source
//! (TQ `source_tq × 255`) and one of the target (TQ `target_tq × 255`),
//! addressed by the far end's interface MAC from the link, as batman-adv
//! reports them, on the local interface whose MAC the link names (else the
//! interface for the link's kind: `mesh0`, `mesh-vpn` or `eth0`). The
//! originator is the far node's primary MAC. Links to nodes that were
//! offline in the snapshot are left out, and the best neighbour per
//! originator is the one with the highest TQ. A gateway (uplink server)
//! routes out of `eth0`; a router whose snapshot next hop is one of its
//! neighbours routes via that neighbour's interface MAC.

use std::collections::HashMap;

use meshtable_proto::{Clients, Gateway, MeshProtocol, Neighbour};

use crate::profile::{NodeProfile, Role};
use crate::snapshot::{LinkKind, Snapshot};

/// Most neighbours one simulated router reports (a Bremen gateway has 160).
pub const MAX_NEIGHBOURS: usize = 256;

fn tq(q: f64) -> u8 {
    (q.clamp(0.0, 1.0) * 255.0).round() as u8
}

/// The local interface a link runs over.
fn local_ifname(p: &NodeProfile, addr: Option<&str>, kind: LinkKind) -> Option<String> {
    if let Some(a) = addr
        && let Some(i) = p.interfaces.iter().find(|i| {
            i.info
                .mac
                .as_deref()
                .is_some_and(|m| m.eq_ignore_ascii_case(a))
        })
    {
        return Some(i.info.name.clone());
    }
    let role = match kind {
        LinkKind::Wifi => Role::MeshRadio,
        LinkKind::Vpn => Role::Vpn,
        LinkKind::Other => Role::Ethernet,
    };
    p.interfaces
        .iter()
        .find(|i| i.role == role)
        .map(|i| i.info.name.clone())
}

/// Fills in the neighbours, gateway and clients of every profile of a
/// fleet built from `snapshot` (in snapshot order).
pub fn attach(snapshot: &Snapshot, profiles: &mut [NodeProfile]) {
    let index: HashMap<&str, usize> = snapshot
        .nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.node_id.as_str(), i))
        .collect();
    let by_mac: HashMap<String, usize> = snapshot
        .nodes
        .iter()
        .enumerate()
        .filter_map(|(i, n)| Some((n.mac.as_deref()?.to_ascii_lowercase(), i)))
        .collect();
    // (node index) -> [(neighbour index, neighbour entry)]
    let mut found: Vec<Vec<(usize, Neighbour)>> = vec![Vec::new(); profiles.len()];
    for l in &snapshot.links {
        let (Some(&s), Some(&t)) = (index.get(l.source.as_str()), index.get(l.target.as_str()))
        else {
            continue;
        };
        if s == t || s >= profiles.len() || t >= profiles.len() {
            continue;
        }
        let ends = [
            (
                s,
                t,
                l.source_addr.as_deref(),
                l.target_addr.as_deref(),
                l.source_tq,
            ),
            (
                t,
                s,
                l.target_addr.as_deref(),
                l.source_addr.as_deref(),
                l.target_tq,
            ),
        ];
        for (me, far, my_addr, far_addr, q) in ends {
            if !snapshot.nodes[far].is_online {
                continue;
            }
            let Some(ifname) = local_ifname(&profiles[me], my_addr, l.kind) else {
                continue;
            };
            let originator = snapshot.nodes[far]
                .mac
                .as_deref()
                .map(str::to_ascii_lowercase);
            let Some(address) = far_addr
                .map(str::to_ascii_lowercase)
                .or_else(|| originator.clone())
            else {
                continue;
            };
            found[me].push((
                far,
                Neighbour {
                    protocol: MeshProtocol::BatmanAdv,
                    ifname,
                    address,
                    tq: Some(tq(q)),
                    originator,
                    ..Neighbour::default()
                },
            ));
        }
    }
    for (i, (p, mut ns)) in profiles.iter_mut().zip(found).enumerate() {
        let node = &snapshot.nodes[i];
        ns.sort_by(|a, b| {
            (a.0, std::cmp::Reverse(a.1.tq), &a.1.ifname, &a.1.address).cmp(&(
                b.0,
                std::cmp::Reverse(b.1.tq),
                &b.1.ifname,
                &b.1.address,
            ))
        });
        ns.dedup_by(|a, b| a.1.ifname == b.1.ifname && a.1.address == b.1.address);
        let mut best_seen = Vec::new();
        for (far, n) in &mut ns {
            if !best_seen.contains(far) {
                n.best = true;
                best_seen.push(*far);
            }
        }
        ns.truncate(MAX_NEIGHBOURS);
        p.gateway = if p.server || node.is_gateway {
            let uplink = p
                .interfaces
                .iter()
                .find(|i| i.role == Role::Ethernet)
                .map(|i| i.info.name.clone());
            uplink.map(|ifname| Gateway { via: None, ifname })
        } else {
            node.gateway_nexthop
                .as_deref()
                .and_then(|h| {
                    index
                        .get(h)
                        .copied()
                        .or_else(|| by_mac.get(&h.to_ascii_lowercase()).copied())
                })
                .and_then(|hop| ns.iter().find(|(far, n)| *far == hop && n.best))
                .map(|(_, n)| Gateway {
                    via: Some(n.address.clone()),
                    ifname: n.ifname.clone(),
                })
        };
        p.neighbours = ns.into_iter().map(|(_, n)| n).collect();
        p.mesh_clients = (!p.server).then(|| Clients {
            total: node.clients,
            wifi_24: node.clients_wifi24,
            wifi_5: node.clients_wifi5,
            other: node.clients_other,
            ids: Vec::new(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::fleet;

    #[test]
    fn neighbours_carry_the_snapshot_tq() {
        let s = Snapshot::leipzig();
        let f = fleet(&s, 1);
        let ids: HashMap<&str, usize> = f
            .iter()
            .enumerate()
            .map(|(i, p)| (p.node_id.as_str(), i))
            .collect();
        let mut checked = 0;
        for l in &s.links {
            let (Some(&src), Some(&dst)) = (ids.get(l.source.as_str()), ids.get(l.target.as_str()))
            else {
                continue;
            };
            if !s.nodes[dst].is_online {
                continue;
            }
            let Some(addr) = l.target_addr.as_deref() else {
                continue;
            };
            let n = f[src]
                .neighbours
                .iter()
                .find(|n| n.address == addr)
                .expect("every link to an online node is a neighbour");
            assert_eq!(n.tq, Some(tq(l.source_tq)), "{l:?}");
            assert_eq!(n.protocol, MeshProtocol::BatmanAdv);
            checked += 1;
        }
        assert!(checked > 300, "{checked}");
        // One best neighbour per originator.
        for p in &f {
            let mut best: Vec<&str> = p
                .neighbours
                .iter()
                .filter(|n| n.best)
                .filter_map(|n| n.originator.as_deref())
                .collect();
            let all = best.len();
            best.sort_unstable();
            best.dedup();
            assert_eq!(best.len(), all, "{}", p.node_id);
        }
    }

    #[test]
    fn gateways_and_clients() {
        let s = Snapshot::bremen();
        let f = fleet(&s, 1);
        let servers = f.iter().filter(|p| p.server).count();
        assert!(servers > 0);
        for p in f.iter().filter(|p| p.server) {
            let g = p.gateway.as_ref().expect("a server routes out");
            assert!(g.via.is_none() && g.ifname == "eth0");
            assert!(p.mesh_clients.is_none());
        }
        let routed = f
            .iter()
            .filter(|p| p.gateway.as_ref().is_some_and(|g| g.via.is_some()))
            .count();
        assert!(routed > 700, "{routed}");
        let (node, p) = s.nodes.iter().zip(&f).find(|(_, p)| !p.server).unwrap();
        assert_eq!(p.mesh_clients.as_ref().map(|c| c.total), Some(node.clients));
        assert!(f.iter().all(|p| p.neighbours.len() <= MAX_NEIGHBOURS));
    }
}
