//! batman-adv neighbours and originators over generic netlink (family
//! `batadv`): per batman-adv mesh interface one `BATADV_CMD_GET_NEIGHBORS`
//! and one `BATADV_CMD_GET_ORIGINATORS` dump, each with
//! `BATADV_ATTR_MESH_IFINDEX`.
//!
//! Numbers are those of `include/uapi/linux/batman_adv.h` (`enum
//! batadv_nl_commands`, `enum batadv_nl_attrs`). With B.A.T.M.A.N. IV each
//! originator entry carries the TQ via one next hop, and the best next hop
//! has `BATADV_ATTR_FLAG_BEST`; a neighbour's own link TQ is the entry whose
//! originator is the neighbour itself. With B.A.T.M.A.N. V entries carry
//! `BATADV_ATTR_THROUGHPUT` (kbit/s) instead of a TQ.
//!
//! Parsing is pure ([`parse_entry`], [`build`]); [`collect`] does the I/O.
//! Without the `batadv` family (module not loaded) it returns nothing.

use std::collections::HashMap;

use meshtable_proto::{MeshProtocol, Neighbour, Route};
use tracing::{debug, warn};

use super::genl::{Genl, GenlError, Message, attrs, put_attr};
use super::netlink::format_mac;

/// `BATADV_NL_NAME`.
pub const FAMILY: &str = "batadv";
/// The family version batctl sends.
const VERSION: u8 = 1;

/// Commands (`enum batadv_nl_commands`).
pub mod cmd {
    /// `BATADV_CMD_GET_ORIGINATORS`.
    pub const GET_ORIGINATORS: u8 = 8;
    /// `BATADV_CMD_GET_NEIGHBORS`.
    pub const GET_NEIGHBORS: u8 = 9;
}

/// Attributes (`enum batadv_nl_attrs`).
pub mod attr {
    /// `BATADV_ATTR_MESH_IFINDEX` (u32).
    pub const MESH_IFINDEX: u16 = 3;
    /// `BATADV_ATTR_HARD_IFINDEX` (u32).
    pub const HARD_IFINDEX: u16 = 6;
    /// `BATADV_ATTR_HARD_IFNAME` (string).
    pub const HARD_IFNAME: u16 = 7;
    /// `BATADV_ATTR_ORIG_ADDRESS` (6 bytes).
    pub const ORIG_ADDRESS: u16 = 9;
    /// `BATADV_ATTR_FLAG_BEST` (flag).
    pub const FLAG_BEST: u16 = 22;
    /// `BATADV_ATTR_LAST_SEEN_MSECS` (u32).
    pub const LAST_SEEN_MSECS: u16 = 23;
    /// `BATADV_ATTR_NEIGH_ADDRESS` (6 bytes).
    pub const NEIGH_ADDRESS: u16 = 24;
    /// `BATADV_ATTR_TQ` (u8, 0-255).
    pub const TQ: u16 = 25;
    /// `BATADV_ATTR_THROUGHPUT` (u32, kbit/s).
    pub const THROUGHPUT: u16 = 26;
}

/// One entry of a neighbour or originator dump.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Entry {
    /// The originator (originator dumps only).
    pub originator: Option<[u8; 6]>,
    /// The neighbour (next hop) MAC.
    pub neighbour: [u8; 6],
    /// The hard interface the neighbour is heard on.
    pub hard_ifindex: Option<u32>,
    /// Its name, when the kernel sends it.
    pub hard_ifname: Option<String>,
    /// Transmit quality (B.A.T.M.A.N. IV), 0-255.
    pub tq: Option<u8>,
    /// Estimated throughput (B.A.T.M.A.N. V), kbit/s.
    pub throughput_kbps: Option<u32>,
    /// The best next hop towards the originator.
    pub best: bool,
    /// Milliseconds since last seen.
    pub last_seen_ms: Option<u32>,
}

/// Parses one message of either dump. An entry without
/// `BATADV_ATTR_NEIGH_ADDRESS` is malformed.
pub fn parse_entry(payload: &[u8]) -> Result<Entry, GenlError> {
    let mut e = Entry::default();
    let mut neighbour = None;
    for a in attrs(payload)? {
        match a.kind {
            attr::ORIG_ADDRESS => e.originator = a.mac(),
            attr::NEIGH_ADDRESS => neighbour = a.mac(),
            attr::HARD_IFINDEX => e.hard_ifindex = a.u32(),
            attr::HARD_IFNAME => e.hard_ifname = Some(a.text()).filter(|s| !s.is_empty()),
            attr::TQ => e.tq = a.u8(),
            attr::THROUGHPUT => e.throughput_kbps = a.u32(),
            attr::FLAG_BEST => e.best = true,
            attr::LAST_SEEN_MSECS => e.last_seen_ms = a.u32(),
            _ => {}
        }
    }
    e.neighbour = neighbour.ok_or(GenlError::Malformed(
        "entry without BATADV_ATTR_NEIGH_ADDRESS",
    ))?;
    Ok(e)
}

/// Parses the messages of a dump, skipping (and logging) malformed ones.
/// Returns the entries and how many were skipped.
pub fn parse_dump(what: &str, messages: &[Message]) -> (Vec<Entry>, usize) {
    let mut out = Vec::new();
    let mut skipped = 0;
    for m in messages {
        match parse_entry(&m.payload) {
            Ok(e) => out.push(e),
            Err(e) => {
                skipped += 1;
                warn!(dump = what, error = %e, "skipped a malformed batman-adv message");
            }
        }
    }
    (out, skipped)
}

/// Builds the report's neighbours and routes from the two dumps of one mesh
/// interface. `ifname` names hard interfaces by index.
///
/// - One [`Neighbour`] per neighbour entry: `address` is the neighbour's
///   interface MAC; `tq` and `originator` come from the originator entry
///   that reaches that neighbour through itself (its own originator, when
///   its originator address is its interface MAC), else from the entry
///   with the best TQ through it; `best` says that entry is the best route;
///   `cost` carries the B.A.T.M.A.N. V throughput in kbit/s when there is
///   no TQ.
/// - One [`Route`] per originator with a best next hop: `prefix` is the
///   originator MAC, `via` the next hop MAC, `metric` the TQ (or the
///   throughput in kbit/s), `installed` true.
pub fn build(
    neighbours: &[Entry],
    originators: &[Entry],
    ifname: &dyn Fn(u32) -> Option<String>,
) -> (Vec<Neighbour>, Vec<Route>) {
    let name = |e: &Entry| {
        e.hard_ifname
            .clone()
            .or_else(|| e.hard_ifindex.and_then(ifname))
            .unwrap_or_default()
    };
    let mut out = Vec::new();
    for n in neighbours {
        let via_n = originators
            .iter()
            .filter(|o| o.neighbour == n.neighbour && o.hard_ifindex == n.hard_ifindex);
        let own = via_n
            .clone()
            .find(|o| o.originator == Some(n.neighbour))
            .or_else(|| via_n.max_by_key(|o| o.tq.unwrap_or(0)));
        out.push(Neighbour {
            protocol: MeshProtocol::BatmanAdv,
            ifname: name(n),
            address: format_mac(&n.neighbour),
            rxcost: None,
            txcost: None,
            cost: n
                .throughput_kbps
                .filter(|_| own.and_then(|o| o.tq).is_none()),
            tq: own.and_then(|o| o.tq),
            best: own.is_some_and(|o| o.best),
            originator: own.and_then(|o| o.originator).map(|m| format_mac(&m)),
        });
    }
    let mut routes: HashMap<[u8; 6], Route> = HashMap::new();
    for o in originators.iter().filter(|o| o.best) {
        let Some(orig) = o.originator else { continue };
        routes.entry(orig).or_insert_with(|| Route {
            protocol: MeshProtocol::BatmanAdv,
            prefix: format_mac(&orig),
            via: Some(format_mac(&o.neighbour)),
            ifname: Some(name(o)).filter(|n| !n.is_empty()),
            metric: o.tq.map(u32::from).or(o.throughput_kbps).unwrap_or(0),
            installed: true,
        });
    }
    let mut routes: Vec<Route> = routes.into_values().collect();
    routes.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    (out, routes)
}

/// Reads neighbours and originators of every batman-adv mesh interface in
/// `meshes` (ifindex). No `batadv` family gives an empty result; a mesh
/// interface whose dump fails is left out (debug log).
pub fn collect(
    meshes: &[u32],
    ifname: &dyn Fn(u32) -> Option<String>,
) -> Result<(Vec<Neighbour>, Vec<Route>), GenlError> {
    let mut neighbours = Vec::new();
    let mut routes = Vec::new();
    if meshes.is_empty() {
        return Ok((neighbours, routes));
    }
    let mut g = Genl::open()?;
    let Some(family) = g.family(FAMILY)? else {
        debug!("no batadv family: batman-adv is not loaded");
        return Ok((neighbours, routes));
    };
    for &mesh in meshes {
        let mut req = Vec::new();
        put_attr(&mut req, attr::MESH_IFINDEX, &mesh.to_ne_bytes());
        let dumps = g
            .dump(family, cmd::GET_NEIGHBORS, VERSION, &req)
            .and_then(|n| Ok((n, g.dump(family, cmd::GET_ORIGINATORS, VERSION, &req)?)));
        match dumps {
            Ok((n, o)) => {
                let (n, _) = parse_dump("batadv neighbours", &n);
                let (o, _) = parse_dump("batadv originators", &o);
                let (mut ns, mut rs) = build(&n, &o, ifname);
                neighbours.append(&mut ns);
                routes.append(&mut rs);
            }
            Err(e) => debug!(mesh_ifindex = mesh, error = %e, "batman-adv dump failed"),
        }
    }
    Ok((neighbours, routes))
}
