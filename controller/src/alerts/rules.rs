//! The alert rules: pure functions from what the store knows about a
//! network's nodes ([`NodeFacts`]) at a time to the conditions that hold.
//!
//! Noise control lives here too: nodes in maintenance are skipped, flapping
//! nodes never raise `node_offline` (flap damping), a site where most nodes
//! are down raises one `site_down` instead of one alert per node, and the
//! store hands over live samples only, so backfilled data never fires.
//!
//! # Links
//!
//! `link_degraded` compares each link direction that is up (as its
//! reporter sees it, see `meshtable_store::topology`) with its reference:
//! the operator's (`PUT /api/v1/networks/{network}/links/{from}/{to}/reference`)
//! where set, else the learned one (the median of a week of hourly samples,
//! once there are 24; `meshtable_store::link_reference`). It fires when
//!
//! - the wifi signal is more than `link_drop_db` (10 dB, LibreMesh's
//!   mesh-wide check) under the reference signal, or
//! - the routing protocol's quality fell below `100 - link_quality_drop_percent`
//!   (70 %) of the reference: batman-adv TQ (0-255, higher is better) as
//!   `tq / reference`, babel cost (babeld's `cost`, else `rxcost`; lower is
//!   better, 256 a perfect wireless hop) as `reference / cost`,
//!
//! and that held for `link_hold_seconds` (600). Links that are down are the
//! topology's business (its link events), not this rule's; a link whose
//! reporter or far end is in maintenance, flapping or offline, or that was
//! not reported within `offline_minutes`, is skipped. The alert's value is
//! the signal drop in dB, else the quality left in % of the reference; its
//! subject is `source/ifname->target`.
//!
//! # Uplinks
//!
//! `uplink_saturated` reads the uplink's 5-minute intervals (the p95 of the
//! rx and tx rates, from the rollups): it fires when the larger p95 is above
//! `uplink_percent` of `uplink_capacity_bps` in each of the last
//! `uplink_intervals` closed intervals, and each of them holds a live
//! report (an interval filled only by backfill never counts).

use std::collections::{BTreeMap, HashMap};

use meshtable_store::alerts::{Condition, LinkFacts, LinkQuality, NetworkFacts, NodeFacts};
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
/// The uplink's rx or tx p95 above `uplink_percent` of its capacity in
/// each of the last `uplink_intervals` closed 5-minute intervals.
pub const UPLINK_SATURATED: &str = "uplink_saturated";
/// A link direction's signal or quality well below its reference (see the
/// module docs).
pub const LINK_DEGRADED: &str = "link_degraded";

/// Five minutes, ms: the length of an uplink interval.
const FIVE_MINUTES_MS: i64 = 300_000;
/// Most intervals `uplink_intervals` may ask for: a day.
pub const MAX_UPLINK_INTERVALS: u32 = 288;

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
    /// `uplink_saturated` when the p95 is above this share of the capacity,
    /// % (default 80).
    pub uplink_percent: f64,
    /// ... in this many consecutive closed 5-minute intervals (default 3,
    /// at most 288). Formerly `uplink_samples` (consecutive samples), still
    /// accepted under that name.
    #[serde(alias = "uplink_samples")]
    pub uplink_intervals: u32,
    /// `site_down` when more than this share of a site's nodes is offline, % (default 50).
    pub site_down_percent: f64,
    /// ... and the site has at least this many nodes (default 2).
    pub site_min_nodes: u32,
    /// A sample received more than this long after its time is backfill
    /// and never fires, seconds (default 300).
    pub backfill_lag_seconds: u32,
    /// `link_degraded` when the signal is more than this under the
    /// reference, dB (default 10).
    pub link_drop_db: f64,
    /// ... or the TQ or babel cost lost more than this share of the
    /// reference quality, % (default 30).
    pub link_quality_drop_percent: f64,
    /// Tolerance window of `link_degraded`, seconds (default 600).
    pub link_hold_seconds: u32,
    /// Whether learned references count (default true); off, only the
    /// references the operator set do.
    pub link_learned: bool,
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
            uplink_intervals: 3,
            site_down_percent: 50.0,
            site_min_nodes: 2,
            backfill_lag_seconds: 300,
            link_drop_db: 10.0,
            link_quality_drop_percent: 30.0,
            link_hold_seconds: 600,
            link_learned: true,
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
            ("link_quality_drop_percent", self.link_quality_drop_percent),
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
        if !(self.link_drop_db.is_finite() && self.link_drop_db > 0.0) {
            return Err("link_drop_db: expected a number > 0".to_owned());
        }
        if !(1..=MAX_UPLINK_INTERVALS).contains(&self.uplink_intervals) {
            return Err(format!(
                "uplink_intervals: expected 1 to {MAX_UPLINK_INTERVALS}"
            ));
        }
        if self.offline_minutes == 0 || self.reboots_per_hour < 2 {
            return Err("offline_minutes must be >= 1, reboots_per_hour >= 2".to_owned());
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

/// The conditions that hold for a network at `now_ms`, in a stable order
/// (by rule, then subject), one per (rule, subject).
pub fn evaluate(facts: &NetworkFacts, rules: &Rules, now_ms: i64) -> Vec<Condition> {
    let nodes = &facts.nodes;
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
        if let Some(c) = uplink_saturated(n, rules, now_ms) {
            out.push(c);
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
    out.extend(link_degraded(facts, rules, now_ms));
    out.sort_by(|a, b| (&a.rule, &a.subject).cmp(&(&b.rule, &b.subject)));
    // Two links may name the same subject (two protocols on one interface
    // to one neighbour): the first one counts.
    out.dedup_by(|b, a| a.rule == b.rule && a.subject == b.subject);
    out
}

/// `uplink_saturated` for one node: the last `uplink_intervals` closed
/// intervals all present, live and above the limit.
fn uplink_saturated(n: &NodeFacts, rules: &Rules, now_ms: i64) -> Option<Condition> {
    let cap = rules.uplink_capacity_bps?;
    let ifname = n.uplink.as_ref()?;
    let k = rules.uplink_intervals as usize;
    let limit = cap * rules.uplink_percent / 100.0;
    let end = now_ms.div_euclid(FIVE_MINUTES_MS) * FIVE_MINUTES_MS;
    let recent = n.uplink_intervals.get(..k)?;
    let mut peak: f64 = 0.0;
    for (i, iv) in recent.iter().enumerate() {
        let want_start = end - (i as i64 + 1) * FIVE_MINUTES_MS;
        let p95 = iv.rx_p95.unwrap_or(0.0).max(iv.tx_p95.unwrap_or(0.0));
        if iv.start_ms != want_start || !iv.live || p95 <= limit {
            return None;
        }
        peak = peak.max(p95);
    }
    Some(cond(
        UPLINK_SATURATED,
        &format!("{}/{ifname}", n.node),
        n.site.as_ref(),
        format!(
            "{}: uplink {ifname} p95 above {:.0} % of {cap} bit/s for {k} intervals of 5 min (peak {peak:.0} bit/s)",
            name(n),
            rules.uplink_percent
        ),
        Some(peak),
        0,
    ))
}

/// The reference a link is compared with: the operator's parts, the
/// learned ones for the rest (when learned references count).
pub fn effective_reference(l: &LinkFacts, rules: &Rules) -> LinkQuality {
    let op = l.operator.unwrap_or_default();
    let learned = if rules.link_learned {
        l.learned.unwrap_or_default()
    } else {
        LinkQuality::default()
    };
    LinkQuality {
        signal_dbm: op.signal_dbm.or(learned.signal_dbm),
        tq: op.tq.or(learned.tq),
        cost: op.cost.or(learned.cost),
    }
}

/// `link_degraded` for every link direction (see the module docs).
fn link_degraded(facts: &NetworkFacts, rules: &Rules, now_ms: i64) -> Vec<Condition> {
    let offline_ms = rules.offline_ms();
    let hold_ms = i64::from(rules.link_hold_seconds) * 1000;
    let nodes: HashMap<&str, &NodeFacts> =
        facts.nodes.iter().map(|n| (n.node.as_str(), n)).collect();
    let quiet = |n: &NodeFacts| {
        n.in_maintenance || n.flapping || now_ms.saturating_sub(n.last_seen_ms) > offline_ms
    };
    let keep = 1.0 - rules.link_quality_drop_percent / 100.0;
    let mut out = Vec::new();
    for l in &facts.links {
        let Some(src) = nodes.get(l.source.as_str()) else {
            continue;
        };
        let far_quiet = l.target_is_node && nodes.get(l.target.as_str()).is_some_and(|t| quiet(t));
        if quiet(src) || far_quiet || now_ms.saturating_sub(l.last_seen_ms) > offline_ms {
            continue;
        }
        let r = effective_reference(l, rules);
        let q = l.quality;
        let mut why: Vec<String> = Vec::new();
        let mut value = None;
        if let (Some(s), Some(rs)) = (q.signal_dbm, r.signal_dbm)
            && rs - s > rules.link_drop_db
        {
            why.push(format!(
                "signal {s:.0} dBm, {:.0} dB under its reference {rs:.0} dBm",
                rs - s
            ));
            value = Some(rs - s);
        }
        if let (Some(t), Some(rt)) = (q.tq, r.tq)
            && rt > 0.0
            && t / rt < keep
        {
            why.push(format!(
                "TQ {t:.0}, {:.0} % of its reference {rt:.0}",
                t * 100.0 / rt
            ));
            value = value.or(Some(t * 100.0 / rt));
        }
        if let (Some(c), Some(rc)) = (q.cost, r.cost)
            && c > 0.0
            && rc / c < keep
        {
            why.push(format!(
                "cost {c:.0}, {:.0} % of the quality of its reference {rc:.0}",
                rc * 100.0 / c
            ));
            value = value.or(Some(rc * 100.0 / c));
        }
        if why.is_empty() {
            continue;
        }
        let subject = link_subject(&l.source, &l.source_ifname, &l.target);
        out.push(cond(
            LINK_DEGRADED,
            &subject,
            src.site.as_ref(),
            format!(
                "link {} -> {} ({}): {}",
                name(src),
                l.target,
                l.source_ifname,
                why.join("; ")
            ),
            value,
            hold_ms,
        ));
    }
    out
}

/// The subject of a link direction's `link_degraded` alert:
/// `source/ifname->target`, the target being the far node's id, or its
/// address when it is joined to no node.
pub fn link_subject(source: &str, source_ifname: &str, target: &str) -> String {
    format!("{source}/{source_ifname}->{target}")
}
