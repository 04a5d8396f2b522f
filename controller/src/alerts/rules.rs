//! The alert rules: pure functions from what the store knows about a
//! network's nodes ([`NodeFacts`]) at a time to the conditions that hold.
//!
//! Noise control lives here too: nodes in maintenance are skipped, flapping
//! nodes never raise `node_offline` (flap damping), a site where most nodes
//! are down raises one `site_down` instead of one alert per node, and the
//! store hands over live samples only, so backfilled data never fires.

use std::collections::BTreeMap;

use meshtable_store::alerts::{Condition, NodeFacts};
use serde::{Deserialize, Serialize};

/// A node has not been heard from for longer than `offline_minutes`.
pub const NODE_OFFLINE: &str = "node_offline";
/// More than `site_down_percent` of a site's nodes are offline.
pub const SITE_DOWN: &str = "site_down";
/// Available memory below `memory_min_percent` of the total.
pub const MEMORY_LOW: &str = "memory_low";
/// Free root filesystem below `disk_min_percent` of its size.
pub const DISK_LOW: &str = "disk_low";
/// 5-minute load average above `load5_max`.
pub const LOAD_HIGH: &str = "load_high";
/// At least `reboots_per_hour` boots within the last hour.
pub const REBOOTS: &str = "reboots";
/// The uplink's rx or tx rate above `uplink_percent` of its capacity in
/// each of the last `uplink_samples` live samples.
pub const UPLINK_SATURATED: &str = "uplink_saturated";

/// A network's rule settings (the `rules` object of the alert settings);
/// every key is optional and defaults as documented.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Rules {
    /// Minutes without a message before `node_offline` (default 10).
    pub offline_minutes: u32,
    /// `memory_low` below this share of memory available, % (default 10).
    pub memory_min_percent: f64,
    /// `disk_low` below this share of the root filesystem free, % (default 10).
    pub disk_min_percent: f64,
    /// `load_high` above this 5-minute load average (default 4).
    pub load5_max: f64,
    /// Tolerance window of the memory, disk and load rules: the condition
    /// must hold this long before it fires, seconds (default 300).
    pub hold_seconds: u32,
    /// `reboots` at this many boots within an hour (default 3).
    pub reboots_per_hour: u32,
    /// Uplink capacity, bits/s; `null` (the default) disables `uplink_saturated`.
    pub uplink_capacity_bps: Option<f64>,
    /// `uplink_saturated` above this share of the capacity, % (default 80).
    pub uplink_percent: f64,
    /// ... in this many consecutive live samples (default 3).
    pub uplink_samples: u32,
    /// `site_down` when more than this share of a site's nodes is offline, % (default 50).
    pub site_down_percent: f64,
    /// ... and the site has at least this many nodes (default 2).
    pub site_min_nodes: u32,
    /// A sample received more than this long after its time is backfill
    /// and never fires, seconds (default 300).
    pub backfill_lag_seconds: u32,
}

impl Default for Rules {
    fn default() -> Rules {
        Rules {
            offline_minutes: 10,
            memory_min_percent: 10.0,
            disk_min_percent: 10.0,
            load5_max: 4.0,
            hold_seconds: 300,
            reboots_per_hour: 3,
            uplink_capacity_bps: None,
            uplink_percent: 80.0,
            uplink_samples: 3,
            site_down_percent: 50.0,
            site_min_nodes: 2,
            backfill_lag_seconds: 300,
        }
    }
}

impl Rules {
    /// Checks the values: finite, non-negative, percentages within 0..=100.
    pub fn check(&self) -> Result<(), String> {
        let pct = [
            ("memory_min_percent", self.memory_min_percent),
            ("disk_min_percent", self.disk_min_percent),
            ("uplink_percent", self.uplink_percent),
            ("site_down_percent", self.site_down_percent),
        ];
        for (k, v) in pct {
            if !(v.is_finite() && (0.0..=100.0).contains(&v)) {
                return Err(format!("{k}: expected 0 to 100"));
            }
        }
        if !(self.load5_max.is_finite() && self.load5_max >= 0.0) {
            return Err("load5_max: expected a number >= 0".to_owned());
        }
        if let Some(c) = self.uplink_capacity_bps
            && !(c.is_finite() && c > 0.0)
        {
            return Err("uplink_capacity_bps: expected a number > 0".to_owned());
        }
        if self.offline_minutes == 0 || self.uplink_samples == 0 || self.reboots_per_hour < 2 {
            return Err(
                "offline_minutes and uplink_samples must be >= 1, reboots_per_hour >= 2".to_owned(),
            );
        }
        Ok(())
    }

    /// `offline_minutes` in ms.
    pub fn offline_ms(&self) -> i64 {
        i64::from(self.offline_minutes) * 60_000
    }
}

fn name(n: &NodeFacts) -> &str {
    n.hostname.as_deref().unwrap_or(&n.node)
}

fn cond(
    rule: &str,
    subject: &str,
    site: Option<&String>,
    message: String,
    value: Option<f64>,
    hold_ms: i64,
) -> Condition {
    Condition {
        rule: rule.to_owned(),
        subject: subject.to_owned(),
        site: site.cloned(),
        message,
        value,
        hold_ms,
    }
}

/// The conditions that hold for a network's nodes at `now_ms`, in a stable
/// order (by rule, then subject).
pub fn evaluate(nodes: &[NodeFacts], rules: &Rules, now_ms: i64) -> Vec<Condition> {
    let offline_ms = rules.offline_ms();
    let hold_ms = i64::from(rules.hold_seconds) * 1000;
    let mut out = Vec::new();
    // Per site: (nodes not in maintenance, offline ones).
    let mut sites: BTreeMap<&str, (u32, Vec<&NodeFacts>)> = BTreeMap::new();
    let mut offline: Vec<&NodeFacts> = Vec::new();
    for n in nodes.iter().filter(|n| !n.in_maintenance) {
        let silent_ms = now_ms.saturating_sub(n.last_seen_ms);
        let is_offline = silent_ms > offline_ms;
        if let Some(s) = &n.site {
            let e = sites.entry(s.as_str()).or_default();
            e.0 += 1;
            if is_offline {
                e.1.push(n);
            }
        }
        if is_offline {
            // Flap damping: a flapping node's outages are the flapping.
            if !n.flapping {
                offline.push(n);
            }
            continue;
        }
        if let Some(s) = &n.latest
            && now_ms.saturating_sub(s.t_ms) <= offline_ms
        {
            if s.mem_total > 0 {
                let pct = s.mem_available as f64 * 100.0 / s.mem_total as f64;
                if pct < rules.memory_min_percent {
                    out.push(cond(
                        MEMORY_LOW,
                        &n.node,
                        n.site.as_ref(),
                        format!("{}: {pct:.1} % memory available", name(n)),
                        Some(pct),
                        hold_ms,
                    ));
                }
            }
            if s.rootfs_size > 0 {
                let pct = s.rootfs_free as f64 * 100.0 / s.rootfs_size as f64;
                if pct < rules.disk_min_percent {
                    out.push(cond(
                        DISK_LOW,
                        &n.node,
                        n.site.as_ref(),
                        format!("{}: {pct:.1} % of the root filesystem free", name(n)),
                        Some(pct),
                        hold_ms,
                    ));
                }
            }
            if s.load5 > rules.load5_max {
                out.push(cond(
                    LOAD_HIGH,
                    &n.node,
                    n.site.as_ref(),
                    format!("{}: load {:.2} over 5 minutes", name(n), s.load5),
                    Some(s.load5),
                    hold_ms,
                ));
            }
        }
        if n.boots_last_hour >= rules.reboots_per_hour {
            out.push(cond(
                REBOOTS,
                &n.node,
                n.site.as_ref(),
                format!("{}: {} boots within an hour", name(n), n.boots_last_hour),
                Some(f64::from(n.boots_last_hour)),
                0,
            ));
        }
        if let (Some(cap), Some(ifname)) = (rules.uplink_capacity_bps, &n.uplink) {
            let k = rules.uplink_samples as usize;
            let limit = cap * rules.uplink_percent / 100.0;
            let recent = &n.uplink_rates[..n.uplink_rates.len().min(k)];
            if recent.len() == k && recent.iter().all(|(rx, tx)| rx.max(*tx) > limit) {
                let peak = recent
                    .iter()
                    .map(|(rx, tx)| rx.max(*tx))
                    .fold(0.0, f64::max);
                out.push(cond(
                    UPLINK_SATURATED,
                    &format!("{}/{ifname}", n.node),
                    n.site.as_ref(),
                    format!(
                        "{}: uplink {ifname} above {:.0} % of {cap} bit/s for {k} samples",
                        name(n),
                        rules.uplink_percent
                    ),
                    Some(peak),
                    0,
                ));
            }
        }
    }
    // One alert for a site where most nodes are down, instead of one per node.
    let mut down_sites: Vec<&str> = Vec::new();
    for (site, (total, down)) in &sites {
        let share = f64::from(u32::try_from(down.len()).unwrap_or(u32::MAX)) * 100.0
            / f64::from((*total).max(1));
        if *total >= rules.site_min_nodes && share > rules.site_down_percent {
            down_sites.push(site);
            let site_owned = (*site).to_owned();
            out.push(cond(
                SITE_DOWN,
                site,
                Some(&site_owned),
                format!("site {site}: {} of {total} nodes down", down.len()),
                Some(share),
                0,
            ));
        }
    }
    for n in offline {
        if n.site.as_deref().is_some_and(|s| down_sites.contains(&s)) {
            continue;
        }
        let minutes = now_ms.saturating_sub(n.last_seen_ms) / 60_000;
        out.push(cond(
            NODE_OFFLINE,
            &n.node,
            n.site.as_ref(),
            format!("{}: offline for {minutes} min", name(n)),
            None,
            0,
        ));
    }
    out.sort_by(|a, b| (&a.rule, &a.subject).cmp(&(&b.rule, &b.subject)));
    out
}
