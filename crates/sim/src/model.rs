//! The running state of one simulated router: a boot, its clock, load,
//! memory, CPU time and interface counters, advanced tick by tick and turned
//! into telemetry. Deterministic for a seed; no IO.
//!
//! Counters are cumulative within a boot and never decrease; a reboot starts
//! them, the uptime and the report sequence again from zero under a new boot
//! id, as on a real router.

use std::f64::consts::PI;
use std::sync::Arc;

use meshtable_proto::{CpuTimes, InterfaceCounters, Telemetry, VERSION};

use crate::profile::{NodeProfile, Role};
use crate::rng::Rng;

/// Kernel clock ticks per second (`USER_HZ`).
pub const USER_HZ: f64 = 100.0;

/// Mean size of a protocol-chatter packet, bytes.
const BACKGROUND_PACKET: f64 = 150.0;

/// Mean of [`day_factor`] over a day, for the counters of a boot that began
/// before the simulation.
const MEAN_DAY_FACTOR: f64 = 0.625;

/// How busy the clients are at a local solar time: lowest at 04:00 (a quarter
/// of the peak), highest at 16:00.
pub fn day_factor(local_ms: i64) -> f64 {
    let hour = local_ms.rem_euclid(86_400_000) as f64 / 3_600_000.0;
    0.25 + 0.75 * (0.5 - 0.5 * (2.0 * PI * (hour - 4.0) / 24.0).cos())
}

#[derive(Debug, Clone, Default)]
struct Counters {
    rx_bytes: f64,
    tx_bytes: f64,
    rx_packets: f64,
    tx_packets: f64,
}

/// One simulated router's state.
#[derive(Debug, Clone)]
pub struct NodeModel {
    profile: Arc<NodeProfile>,
    rng: Rng,
    boot_id: String,
    seq: u64,
    uptime_ms: u64,
    load: [f64; 3],
    mem_available: f64,
    /// user, nice, system, idle, iowait, irq, softirq, steal.
    cpu: [f64; 8],
    counters: Vec<Counters>,
}

impl NodeModel {
    /// The router as it is when the simulation starts: in the boot the
    /// snapshot reports, with counters grown at its mean rates over that uptime.
    pub fn new(profile: Arc<NodeProfile>, seed: u64) -> NodeModel {
        let mut rng = Rng::derive(seed, &profile.node_id, "model");
        let boot_id = rng.uuid();
        let uptime_ms = profile.start_uptime_ms;
        let up_s = uptime_ms as f64 / 1000.0;
        let counters = profile
            .interfaces
            .iter()
            .map(|i| {
                let spread = rng.range(0.7, 1.3);
                let bg_rx = i.background_rx * up_s * spread;
                let bg_tx = i.background_tx * up_s * spread;
                let cl_rx = i.client_rx * MEAN_DAY_FACTOR * up_s * spread;
                let cl_tx = i.client_tx * MEAN_DAY_FACTOR * up_s * spread;
                Counters {
                    rx_bytes: (bg_rx + cl_rx).floor(),
                    tx_bytes: (bg_tx + cl_tx).floor(),
                    rx_packets: (bg_rx / BACKGROUND_PACKET + cl_rx / i.client_rx_packet).floor(),
                    tx_packets: (bg_tx / BACKGROUND_PACKET + cl_tx / i.client_tx_packet).floor(),
                }
            })
            .collect();
        let load = profile.load;
        let mut model = NodeModel {
            mem_available: profile.mem_total as f64 * (1.0 - profile.mem_usage),
            profile,
            rng,
            boot_id,
            seq: 0,
            uptime_ms,
            load: [load; 3],
            cpu: [0.0; 8],
            counters,
        };
        let mean_bytes = model.mean_bytes_per_s();
        model.add_cpu(up_s, load, mean_bytes);
        model
    }

    /// A new boot: new boot id, uptime, counters and sequence from zero.
    pub fn reboot(&mut self) {
        self.boot_id = self.rng.uuid();
        self.seq = 0;
        self.uptime_ms = 0;
        self.cpu = [0.0; 8];
        for c in &mut self.counters {
            *c = Counters::default();
        }
        // Booting is busy work.
        let load = self.profile.load;
        self.load = [load + 0.8, load + 0.3, load + 0.1];
        self.mem_available = self.profile.mem_total as f64 * (1.0 - self.profile.mem_usage * 0.8);
    }

    /// The profile this router was built from.
    pub fn profile(&self) -> &NodeProfile {
        &self.profile
    }

    /// The current boot's id.
    pub fn boot_id(&self) -> &str {
        &self.boot_id
    }

    /// The sequence number the next report gets.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// Time since boot, milliseconds.
    pub fn uptime_ms(&self) -> u64 {
        self.uptime_ms
    }

    /// Lets `dt_ms` milliseconds pass, ending at wall-clock time `wall_ms`
    /// (which sets the time of day the clients' traffic follows).
    pub fn advance(&mut self, dt_ms: u64, wall_ms: i64) {
        if dt_ms == 0 {
            return;
        }
        let dt = dt_ms as f64 / 1000.0;
        self.uptime_ms = self.uptime_ms.saturating_add(dt_ms);
        let profile = Arc::clone(&self.profile);

        // Clients' traffic: the time of day, and a shared burstiness so that
        // what leaves the bridge arrives on the uplink in the same tick.
        let day = day_factor(wall_ms + profile.solar_offset_ms);
        let burst = self.rng.log_range(0.4, 2.2);
        let mut total = 0.0;
        for (c, i) in self.counters.iter_mut().zip(&profile.interfaces) {
            let chatter = self.rng.range(0.7, 1.3);
            let bg_rx = i.background_rx * chatter * dt;
            let bg_tx = i.background_tx * chatter * dt;
            let cl_rx = i.client_rx * day * burst * dt;
            let cl_tx = i.client_tx * day * burst * dt;
            c.rx_bytes += bg_rx + cl_rx;
            c.tx_bytes += bg_tx + cl_tx;
            c.rx_packets += bg_rx / BACKGROUND_PACKET + cl_rx / i.client_rx_packet;
            c.tx_packets += bg_tx / BACKGROUND_PACKET + cl_tx / i.client_tx_packet;
            if i.role != Role::ClientRadio {
                total += bg_rx + bg_tx + cl_rx + cl_tx;
            }
        }

        // Load: an Ornstein-Uhlenbeck walk around the snapshot's load, a bit
        // higher when the clients are busy; 5 and 15 minute averages follow.
        let mean = profile.load * (0.7 + 0.5 * day);
        let sigma = 0.3 * profile.load + 0.03;
        let keep = (-dt / 60.0).exp();
        let noise = self.rng.range(-1.0, 1.0) * 3f64.sqrt();
        let load1 =
            mean + (self.load[0] - mean) * keep + sigma * (1.0 - keep * keep).sqrt() * noise;
        self.load[0] = load1.max(0.0);
        for (k, tau) in [(1, 300.0), (2, 900.0)] {
            let a = 1.0 - (-dt / tau).exp();
            self.load[k] += (self.load[0] - self.load[k]) * a;
        }

        // Memory: wanders around the snapshot's usage.
        let total_mem = profile.mem_total as f64;
        let target = total_mem * (1.0 - profile.mem_usage);
        let keep = (-dt / 600.0).exp();
        let noise = self.rng.range(-1.0, 1.0) * 0.015 * total_mem;
        self.mem_available = (target + (self.mem_available - target) * keep + noise)
            .clamp(0.02 * total_mem, 0.98 * total_mem);

        let load = self.load[0];
        self.add_cpu(dt, load, total / dt);
    }

    /// Mean bytes per second through all interfaces but the client radio
    /// (which the bridge already counts).
    fn mean_bytes_per_s(&self) -> f64 {
        self.profile
            .interfaces
            .iter()
            .filter(|i| i.role != Role::ClientRadio)
            .map(|i| {
                i.background_rx + i.background_tx + (i.client_rx + i.client_tx) * MEAN_DAY_FACTOR
            })
            .sum()
    }

    /// Spends `dt` seconds of CPU time: busy with the load and with moving
    /// `bytes_per_s` (softirq), the rest idle.
    fn add_cpu(&mut self, dt: f64, load: f64, bytes_per_s: f64) {
        let p = &self.profile;
        let cpus = f64::from(p.nproc);
        let ticks = dt * USER_HZ * cpus;
        // A small MIPS router saturates at some 6 MB/s; a server at 60 MB/s per CPU.
        let capacity = if p.server { 60e6 } else { 6e6 } * cpus;
        let busy = (0.015 + 0.5 * load / cpus + bytes_per_s / capacity).clamp(0.0, 0.97);
        let traffic = (bytes_per_s / capacity).min(busy);
        let rest = busy - traffic;
        let iowait = if p.server { 0.05 } else { 0.01 };
        // user, nice, system, idle, iowait, irq, softirq, steal
        let shares = [
            rest * 0.45,
            0.0,
            rest * 0.35 + traffic * 0.2,
            1.0 - busy,
            rest * iowait,
            traffic * 0.05,
            rest * (0.2 - iowait) + traffic * 0.75,
            0.0,
        ];
        for (acc, share) in self.cpu.iter_mut().zip(shares) {
            *acc += ticks * share;
        }
    }

    /// The report for now (`wall_ms`, Unix milliseconds); `dropped` is what
    /// the router's queue has dropped. Takes the next sequence number.
    pub fn report(&mut self, wall_ms: u64, dropped: u64) -> Telemetry {
        let p = &self.profile;
        let c = |v: f64| v as u64;
        let interfaces = self
            .counters
            .iter()
            .zip(&p.interfaces)
            .map(|(k, i)| InterfaceCounters {
                name: i.info.name.clone(),
                rx_bytes: c(k.rx_bytes),
                tx_bytes: c(k.tx_bytes),
                rx_packets: c(k.rx_packets),
                tx_packets: c(k.tx_packets),
                rx_errors: 0,
                tx_errors: c(k.tx_packets * i.tx_error_share),
                rx_dropped: c(k.rx_packets * i.rx_drop_share),
                tx_dropped: 0,
            })
            .collect();
        let rootfs_free = (p.rootfs_size as f64 * (1.0 - p.rootfs_usage)) as u64;
        let t = Telemetry {
            v: VERSION,
            node: p.node_id.clone(),
            boot_id: self.boot_id.clone(),
            seq: self.seq,
            time_ms: wall_ms,
            uptime_ms: self.uptime_ms,
            load: self.load.map(|l| (l * 100.0).round() as f32 / 100.0),
            cpu: CpuTimes {
                user: c(self.cpu[0]),
                nice: c(self.cpu[1]),
                system: c(self.cpu[2]),
                idle: c(self.cpu[3]),
                iowait: c(self.cpu[4]),
                irq: c(self.cpu[5]),
                softirq: c(self.cpu[6]),
                steal: c(self.cpu[7]),
            },
            mem_total: p.mem_total,
            mem_available: (self.mem_available as u64).min(p.mem_total),
            rootfs_size: p.rootfs_size,
            rootfs_free: rootfs_free.min(p.rootfs_size),
            interfaces,
            dropped,
            backfill: false,
            neighbours: p.neighbours.clone(),
            gateway: p.gateway.clone(),
            clients: p.mesh_clients.clone(),
            ..Telemetry::default()
        };
        self.seq += 1;
        t
    }
}
