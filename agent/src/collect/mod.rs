//! Collect: everything a report says about the router, read from the kernel
//! (`/proc`, rtnetlink, generic netlink, `uname`, `statvfs`), a few release
//! and lease files, and babeld's local socket.
//!
//! The mesh collectors ([`mesh`]) never stop a report: a missing driver,
//! module, daemon or file gives an empty part (debug log), and malformed
//! input is skipped with a warning.

pub mod babeld;
pub mod batadv;
pub mod board;
pub mod clients;
pub mod genl;
pub mod mesh;
pub mod netlink;
pub mod nl80211;
pub mod proc;
pub mod route;
pub mod system;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use meshtable_proto::{Hello, InterfaceInfo, Location, MAX_INTERFACES, Telemetry, VERSION};
use tracing::warn;

use self::board::BoardPaths;
use self::mesh::MeshSources;
use self::netlink::{Link, NetlinkError};
use self::proc::ProcError;
use self::system::{SystemError, SystemPaths};

/// Why a report could not be collected.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// A `/proc` file.
    #[error(transparent)]
    Proc(#[from] ProcError),
    /// The interface dump.
    #[error(transparent)]
    Netlink(#[from] NetlinkError),
    /// `uname` or `statvfs`.
    #[error(transparent)]
    System(#[from] SystemError),
    /// No interface has a MAC address to derive the node id from.
    #[error("no network interface has a MAC address to derive the node id from; set --node-id")]
    NoMac,
}

/// Where the collector reads from, and the fixed parts of every report.
#[derive(Debug, Clone)]
pub struct Collector {
    /// Root of the proc filesystem (`/proc`).
    pub proc_root: PathBuf,
    /// Release files and the root filesystem.
    pub system: SystemPaths,
    /// `/sys/class/net`, consulted only to tell wireless devices apart.
    pub sys_class_net: PathBuf,
    /// The node id reports carry.
    pub node: String,
    /// The telemetry interval announced in the hello, milliseconds.
    pub interval_ms: u32,
    /// Where the router is, when configured.
    pub location: Option<Location>,
    /// Firmware release and board name files.
    pub board: BoardPaths,
    /// babeld's socket, the lease files and the client-id salt.
    pub mesh: MeshSources,
}

fn wireless_probe(sys_class_net: &std::path::Path) -> impl Fn(&str) -> bool + '_ {
    move |name| netlink::is_wireless_sysfs(sys_class_net, name)
}

fn log_skipped(what: &str, skipped: &[String]) {
    for reason in skipped {
        warn!(dump = what, reason = %reason, "skipped an unparsable netlink message");
    }
}

/// Reads the interfaces with their counters.
fn read_links(sys_class_net: &std::path::Path) -> Result<Vec<Link>, NetlinkError> {
    let probe = wireless_probe(sys_class_net);
    let (mut links, skipped) = netlink::links(&probe)?;
    log_skipped("links", &skipped);
    if links.len() > MAX_INTERFACES {
        warn!(
            interfaces = links.len(),
            limit = MAX_INTERFACES,
            "too many interfaces, reporting the first ones"
        );
        links.truncate(MAX_INTERFACES);
    }
    Ok(links)
}

/// The default node id: the primary interface's MAC as 12 lowercase hex
/// digits (see [`netlink::primary`]).
pub fn default_node_id(sys_class_net: &std::path::Path) -> Result<String, CollectError> {
    let links = read_links(sys_class_net)?;
    let mac = netlink::primary(&links)
        .and_then(|l| l.mac)
        .ok_or(CollectError::NoMac)?;
    Ok(mac.iter().map(|b| format!("{b:02x}")).collect())
}

/// Wall-clock time in Unix milliseconds (0 before 1970: a router without RTC).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

impl Collector {
    /// A collector reading the real system, for `node`.
    pub fn new(proc_root: PathBuf, node: String, interval_ms: u32) -> Collector {
        Collector {
            proc_root,
            system: SystemPaths::default(),
            sys_class_net: "/sys/class/net".into(),
            node,
            interval_ms,
            location: None,
            board: BoardPaths::default(),
            mesh: MeshSources::default(),
        }
    }

    /// Describes the router: hostname, releases, interfaces with addresses.
    pub fn hello(&self) -> Result<Hello, CollectError> {
        let uname = system::uname()?;
        let links = read_links(&self.sys_class_net)?;
        let (addresses, skipped) = netlink::addresses()?;
        log_skipped("addresses", &skipped);
        let interfaces = links
            .iter()
            .map(|l| InterfaceInfo {
                name: l.name.clone(),
                mac: l.mac.as_ref().map(netlink::format_mac),
                mtu: l.mtu,
                addresses: addresses
                    .iter()
                    .filter(|a| a.index == l.index)
                    .take(MAX_INTERFACES)
                    .map(|a| a.cidr.clone())
                    .collect(),
                kind: l.kind,
            })
            .collect();
        Ok(Hello {
            v: VERSION,
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
            hostname: uname.hostname,
            model: system::read_model(&self.system),
            os_release: system::read_os_release(&self.system),
            kernel: uname.kernel,
            interfaces,
            location: self.location.clone(),
            interval_ms: self.interval_ms,
            board: board::read_board(&self.board),
            firmware: board::read_firmware(&self.board),
        })
    }

    /// Collects one telemetry report with sequence number `seq`, stating that
    /// the agent's queue has dropped `dropped` reports so far.
    pub fn telemetry(&self, seq: u64, dropped: u64) -> Result<Telemetry, CollectError> {
        let p = proc::read_snapshot(&self.proc_root)?;
        let fs = system::statvfs(&self.system.rootfs)?;
        let links = read_links(&self.sys_class_net)?;
        let m = mesh::collect(&self.mesh, &links);
        Ok(Telemetry {
            v: VERSION,
            node: self.node.clone(),
            boot_id: p.boot_id,
            seq,
            time_ms: now_ms(),
            uptime_ms: p.uptime_ms,
            load: p.load,
            cpu: p.cpu,
            mem_total: p.mem_total,
            mem_available: p.mem_available,
            rootfs_size: fs.size,
            rootfs_free: fs.free,
            interfaces: links.into_iter().map(|l| l.counters).collect(),
            dropped,
            backfill: false,
            radios: m.radios,
            stations: m.stations,
            neighbours: m.neighbours,
            routes: m.routes,
            clients: m.clients,
            gateway: m.gateway,
        })
    }
}
