//! Compact telemetry: message version 2, the difference from the report
//! before it.
//!
//! A full v1 [`Telemetry`] of a mesh router (5 interfaces, 2 radios, 10
//! stations, 6 neighbours) is about 1.9 KB in CBOR, some 115 KB an hour at a
//! 60 s interval. A [`CompactTelemetry`] carries, instead of every value, how
//! each number changed since the report before it (`seq - 1` of the same
//! boot), and nothing for what did not change: about 150 bytes.
//!
//! # Wire form (version 2, `telemetry` topic)
//!
//! A CBOR map (JSON with the field names works too, for debugging):
//! 0 `v` (2), 1 `seq`, 2 `core`, 3 `load`, 4 `interfaces`, 5 `radios`,
//! 6 `stations`, 7 `neighbours`, 8 `routes`, 9 `clients` (each a byte string
//! of packed numbers, absent when nothing changed), 10 `client_ids_removed`
//! (packed increasing indexes), 11 `client_ids_added` (text list, appended),
//! 12 `radios_full`, 15 `neighbours_full`, 16 `routes_full` (the whole list
//! as in v1, sent when its membership or a name, address or flag changed),
//! 13 `stations_removed` (packed increasing indexes), 14 `stations_added`
//! (v1 `Station` list, appended; a station whose name, address, flag or set
//! of known numbers changed is removed and added), 17 `backfill` (absent
//! means `false`). Removals and additions apply before the numbers, whose
//! indexes refer to the list after them.
//!
//! Numbers are packed as LEB128 varints; differences are zigzag-encoded
//! first (0, -1, 1, -2... become 0, 1, 2, 3...).
//!
//! - `core`: differences of uptime_ms, then the clock skew (time_ms
//!   difference minus uptime_ms difference), cpu user, system, idle,
//!   softirq, mem_available, cpu nice, iowait, irq, steal, rootfs_free,
//!   dropped, mem_total, rootfs_size; trailing zeros left out.
//! - `load`: the three load averages in hundredths, absolute (not zigzag).
//! - lists (`interfaces`, `radios`...): entries `index * 16 + count`,
//!   `d1..dcount` for the elements that changed, `index` into the list and
//!   the differences of the element's numbers in the order below, trailing
//!   zeros left out. An `Option` number that is absent in the previous
//!   report is not among them (a change of presence resends the list).
//!   - interface: the eight counters in v1 order;
//!   - radio: active_ms, busy_ms, noise_dbm, frequency_mhz, channel,
//!     width_mhz, tx_power_mbm;
//!   - station: signal_dbm, signal_avg_dbm, tx_bitrate, rx_bitrate,
//!     rx_bytes, tx_bytes, tx_retries, tx_failed, inactive_ms;
//!   - neighbour: rxcost, txcost, cost, tq;
//!   - route: metric.
//! - `clients`: differences of total, wifi_24, wifi_5, other.
//!
//! # Decoding
//!
//! A compact report is meaningless alone: [`Reassembler`] keeps the last
//! reports of every node, takes v1 and v2 payloads alike and returns each
//! as the complete [`Telemetry`] with absolute counters, the same value the
//! agent would have sent in full (see [`Compactor`] for the one exception,
//! held client stations). A v2 report whose previous report it does not
//! have is refused as [`DecodeError::MissingBase`]. [`crate::decode`] refuses
//! v2 telemetry as an unknown version: it has no previous report.
//!
//! # Encoding
//!
//! [`Compactor`] mirrors what the reassembler will hold and writes v2 only
//! when the previous report went out on the same connection; otherwise, and
//! when a name, the interface list, the clients or gateway presence, or the
//! gateway changed, it writes the full v1 report.

use std::collections::HashMap;

use minicbor::{Decode, Encode};
use serde::{Deserialize, Serialize};

use crate::codec::{DecodeError, Encoding, Message, decode, encode_cbor};
use crate::mesh::{Neighbour, Radio, Route, Station, is_false};
use crate::message::{InterfaceCounters, Telemetry};
use crate::topic::Kind;

/// The message version of [`CompactTelemetry`].
pub const COMPACT_VERSION: u16 = 2;

/// A telemetry report as its difference from the report before it
/// (version 2). See the module documentation for the layout.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, Encode, Decode)]
#[cbor(map)]
pub struct CompactTelemetry {
    /// Message version: 2.
    #[n(0)]
    pub v: u16,
    /// Sequence number; the previous report of the same boot is `seq - 1`.
    #[n(1)]
    pub seq: u64,
    /// Packed differences of the scalar fields.
    #[n(2)]
    #[cbor(with = "minicbor::bytes", skip_if = "Vec::is_empty")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub core: Vec<u8>,
    /// The load averages in hundredths, packed.
    #[n(3)]
    #[cbor(with = "minicbor::bytes", skip_if = "Vec::is_empty")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub load: Vec<u8>,
    /// Changed interface counters, packed entries.
    #[n(4)]
    #[cbor(with = "minicbor::bytes", skip_if = "Vec::is_empty")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub interfaces: Vec<u8>,
    /// Changed radio numbers, packed entries.
    #[n(5)]
    #[cbor(with = "minicbor::bytes", skip_if = "Vec::is_empty")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub radios: Vec<u8>,
    /// Changed station numbers, packed entries.
    #[n(6)]
    #[cbor(with = "minicbor::bytes", skip_if = "Vec::is_empty")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stations: Vec<u8>,
    /// Changed neighbour numbers, packed entries.
    #[n(7)]
    #[cbor(with = "minicbor::bytes", skip_if = "Vec::is_empty")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub neighbours: Vec<u8>,
    /// Changed route metrics, packed entries.
    #[n(8)]
    #[cbor(with = "minicbor::bytes", skip_if = "Vec::is_empty")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<u8>,
    /// Packed differences of the client counts.
    #[n(9)]
    #[cbor(with = "minicbor::bytes", skip_if = "Vec::is_empty")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub clients: Vec<u8>,
    /// Client ids gone since the previous report: packed indexes into its
    /// list, increasing.
    #[n(10)]
    #[cbor(with = "minicbor::bytes", skip_if = "Vec::is_empty")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_ids_removed: Vec<u8>,
    /// Client ids new since the previous report, appended to the list.
    #[n(11)]
    #[cbor(skip_if = "Vec::is_empty")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_ids_added: Vec<String>,
    /// The whole radio list, when more than its numbers changed.
    #[n(12)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub radios_full: Option<Vec<Radio>>,
    /// Stations gone since the previous report: packed indexes into its
    /// list, increasing.
    #[n(13)]
    #[cbor(with = "minicbor::bytes", skip_if = "Vec::is_empty")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stations_removed: Vec<u8>,
    /// Stations new since the previous report (or whose name, address,
    /// flag or set of known numbers changed), appended to the list.
    #[n(14)]
    #[cbor(skip_if = "Vec::is_empty")]
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stations_added: Vec<Station>,
    /// The whole neighbour list, when more than its numbers changed.
    #[n(15)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub neighbours_full: Option<Vec<Neighbour>>,
    /// The whole route list, when more than its metrics changed.
    #[n(16)]
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes_full: Option<Vec<Route>>,
    /// Whether this report is backfill (see [`Telemetry::backfill`]).
    #[n(17)]
    #[cbor(skip_if = "is_false")]
    #[serde(default, skip_serializing_if = "is_false")]
    pub backfill: bool,
}

impl Message for CompactTelemetry {
    const KIND: Kind = Kind::Telemetry;
    const VERSIONS: &'static [u16] = &[COMPACT_VERSION];

    fn version(&self) -> u16 {
        self.v
    }

    /// The numbers are checked when they are applied ([`Reassembler`]); the
    /// full lists are checked with the report they make.
    fn validate(&self) -> Result<(), DecodeError> {
        Ok(())
    }
}

// ---- packing -------------------------------------------------------------

fn put_varint(out: &mut Vec<u8>, mut n: u64) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

fn zigzag(d: i64) -> u64 {
    ((d << 1) ^ (d >> 63)) as u64
}

fn unzigzag(n: u64) -> i64 {
    ((n >> 1) as i64) ^ -((n & 1) as i64)
}

/// Reads packed numbers; every failure is a malformed message.
struct Unpack<'a> {
    bytes: &'a [u8],
    what: &'static str,
}

impl Unpack<'_> {
    fn done(&self) -> bool {
        self.bytes.is_empty()
    }

    fn varint(&mut self) -> Result<u64, DecodeError> {
        let mut n: u64 = 0;
        for (i, &b) in self.bytes.iter().enumerate().take(10) {
            let part = u64::from(b & 0x7f);
            if i == 9 && part > 1 {
                break;
            }
            n |= part << (7 * i);
            if b & 0x80 == 0 {
                self.bytes = &self.bytes[i + 1..];
                return Ok(n);
            }
        }
        Err(DecodeError::Malformed(format!(
            "bad number in {}",
            self.what
        )))
    }

    fn diff(&mut self) -> Result<i64, DecodeError> {
        self.varint().map(unzigzag)
    }
}

fn pack_diffs(out: &mut Vec<u8>, diffs: &[i64]) {
    let n = diffs.iter().rposition(|&d| d != 0).map_or(0, |i| i + 1);
    put_varint(out, n as u64);
    for &d in &diffs[..n] {
        put_varint(out, zigzag(d));
    }
}

fn unpack_diffs(u: &mut Unpack<'_>, max: usize) -> Result<Vec<i64>, DecodeError> {
    let n = u.varint()?;
    if n > max as u64 {
        return Err(DecodeError::Invalid(format!(
            "{n} numbers in a {} entry, at most {max}",
            u.what
        )));
    }
    (0..n).map(|_| u.diff()).collect()
}

// ---- numbers of each part -------------------------------------------------

/// A number of a report, widened so that every difference is exact.
type Num = i128;

/// The part of a list element that is numbers, and the rest (its skeleton).
trait Numbers: Clone {
    /// What to call it in errors.
    const WHAT: &'static str;
    /// The numbers, in wire order (present `Option`s only).
    fn numbers(&self) -> Vec<Num>;
    /// Writes the numbers back; `None` when one does not fit its field.
    fn set_numbers(&mut self, n: &[Num]) -> Option<()>;
    /// Whether everything but the numbers is equal.
    fn same_skeleton(&self, other: &Self) -> bool;
}

fn fit<T: TryFrom<Num>>(n: Num) -> Option<T> {
    T::try_from(n).ok()
}

/// Pushes the present options' values.
macro_rules! opts {
    ($v:ident, $($f:expr),*) => {{ $( if let Some(x) = $f { $v.push(Num::from(x)); } )* }};
}

/// Writes the present options back, in the same order.
macro_rules! set_opts {
    ($it:ident, $($f:expr),*) => {{ $( if let Some(x) = $f.as_mut() { *x = fit($it.next()?)?; } )* }};
}

impl Numbers for InterfaceCounters {
    const WHAT: &'static str = "interface";
    fn numbers(&self) -> Vec<Num> {
        [
            self.rx_bytes,
            self.tx_bytes,
            self.rx_packets,
            self.tx_packets,
            self.rx_errors,
            self.tx_errors,
            self.rx_dropped,
            self.tx_dropped,
        ]
        .map(Num::from)
        .to_vec()
    }
    fn set_numbers(&mut self, n: &[Num]) -> Option<()> {
        let mut it = n.iter().copied();
        for f in [
            &mut self.rx_bytes,
            &mut self.tx_bytes,
            &mut self.rx_packets,
            &mut self.tx_packets,
            &mut self.rx_errors,
            &mut self.tx_errors,
            &mut self.rx_dropped,
            &mut self.tx_dropped,
        ] {
            *f = fit(it.next()?)?;
        }
        Some(())
    }
    fn same_skeleton(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Numbers for Radio {
    const WHAT: &'static str = "radio";
    fn numbers(&self) -> Vec<Num> {
        let mut v = Vec::new();
        opts!(v, self.active_ms, self.busy_ms, self.noise_dbm);
        v.push(Num::from(self.frequency_mhz));
        opts!(v, self.channel, self.width_mhz, self.tx_power_mbm);
        v
    }
    fn set_numbers(&mut self, n: &[Num]) -> Option<()> {
        let mut it = n.iter().copied();
        set_opts!(it, self.active_ms, self.busy_ms, self.noise_dbm);
        self.frequency_mhz = fit(it.next()?)?;
        set_opts!(it, self.channel, self.width_mhz, self.tx_power_mbm);
        Some(())
    }
    fn same_skeleton(&self, o: &Self) -> bool {
        self.ifname == o.ifname
            && self.ssid == o.ssid
            && self.mode == o.mode
            && self.channel.is_some() == o.channel.is_some()
            && self.width_mhz.is_some() == o.width_mhz.is_some()
            && self.tx_power_mbm.is_some() == o.tx_power_mbm.is_some()
            && self.noise_dbm.is_some() == o.noise_dbm.is_some()
            && self.active_ms.is_some() == o.active_ms.is_some()
            && self.busy_ms.is_some() == o.busy_ms.is_some()
    }
}

impl Numbers for Station {
    const WHAT: &'static str = "station";
    fn numbers(&self) -> Vec<Num> {
        let mut v = Vec::new();
        opts!(
            v,
            self.signal_dbm,
            self.signal_avg_dbm,
            self.tx_bitrate_100kbps,
            self.rx_bitrate_100kbps
        );
        v.extend([self.rx_bytes, self.tx_bytes].map(Num::from));
        v.extend([self.tx_retries, self.tx_failed, self.inactive_ms].map(Num::from));
        v
    }
    fn set_numbers(&mut self, n: &[Num]) -> Option<()> {
        let mut it = n.iter().copied();
        set_opts!(
            it,
            self.signal_dbm,
            self.signal_avg_dbm,
            self.tx_bitrate_100kbps,
            self.rx_bitrate_100kbps
        );
        self.rx_bytes = fit(it.next()?)?;
        self.tx_bytes = fit(it.next()?)?;
        self.tx_retries = fit(it.next()?)?;
        self.tx_failed = fit(it.next()?)?;
        self.inactive_ms = fit(it.next()?)?;
        Some(())
    }
    fn same_skeleton(&self, o: &Self) -> bool {
        self.ifname == o.ifname
            && self.mac == o.mac
            && self.client_id == o.client_id
            && self.mesh == o.mesh
            && self.signal_dbm.is_some() == o.signal_dbm.is_some()
            && self.signal_avg_dbm.is_some() == o.signal_avg_dbm.is_some()
            && self.tx_bitrate_100kbps.is_some() == o.tx_bitrate_100kbps.is_some()
            && self.rx_bitrate_100kbps.is_some() == o.rx_bitrate_100kbps.is_some()
    }
}

impl Numbers for Neighbour {
    const WHAT: &'static str = "neighbour";
    fn numbers(&self) -> Vec<Num> {
        let mut v = Vec::new();
        opts!(v, self.rxcost, self.txcost, self.cost, self.tq);
        v
    }
    fn set_numbers(&mut self, n: &[Num]) -> Option<()> {
        let mut it = n.iter().copied();
        set_opts!(it, self.rxcost, self.txcost, self.cost, self.tq);
        Some(())
    }
    fn same_skeleton(&self, o: &Self) -> bool {
        self.protocol == o.protocol
            && self.ifname == o.ifname
            && self.address == o.address
            && self.best == o.best
            && self.originator == o.originator
            && self.rxcost.is_some() == o.rxcost.is_some()
            && self.txcost.is_some() == o.txcost.is_some()
            && self.cost.is_some() == o.cost.is_some()
            && self.tq.is_some() == o.tq.is_some()
    }
}

impl Numbers for Route {
    const WHAT: &'static str = "route";
    fn numbers(&self) -> Vec<Num> {
        vec![Num::from(self.metric)]
    }
    fn set_numbers(&mut self, n: &[Num]) -> Option<()> {
        self.metric = fit(*n.first()?)?;
        Some(())
    }
    fn same_skeleton(&self, o: &Self) -> bool {
        self.protocol == o.protocol
            && self.prefix == o.prefix
            && self.via == o.via
            && self.ifname == o.ifname
            && self.installed == o.installed
    }
}

/// The scalar numbers of a report, in `core` wire order, with time_ms last
/// (it travels as the skew against uptime).
fn core_numbers(t: &Telemetry) -> Vec<Num> {
    let c = &t.cpu;
    [
        t.uptime_ms,
        c.user,
        c.system,
        c.idle,
        c.softirq,
        t.mem_available,
        c.nice,
        c.iowait,
        c.irq,
        c.steal,
        t.rootfs_free,
        t.dropped,
        t.mem_total,
        t.rootfs_size,
        t.time_ms,
    ]
    .map(Num::from)
    .to_vec()
}

fn set_core(t: &mut Telemetry, n: &[Num]) -> Option<()> {
    let mut it = n.iter().copied();
    let c = &mut t.cpu;
    for f in [
        &mut t.uptime_ms,
        &mut c.user,
        &mut c.system,
        &mut c.idle,
        &mut c.softirq,
        &mut t.mem_available,
        &mut c.nice,
        &mut c.iowait,
        &mut c.irq,
        &mut c.steal,
        &mut t.rootfs_free,
        &mut t.dropped,
        &mut t.mem_total,
        &mut t.rootfs_size,
        &mut t.time_ms,
    ] {
        *f = fit(it.next()?)?;
    }
    Some(())
}

/// Core differences in wire order: uptime, skew, then the rest.
fn core_diffs(base: &Telemetry, t: &Telemetry) -> Option<Vec<i64>> {
    let (b, n) = (core_numbers(base), core_numbers(t));
    let d: Vec<Num> = n.iter().zip(&b).map(|(n, b)| n - b).collect();
    let last = d.len() - 1;
    let skew = d[last] - d[0];
    let mut out = vec![d[0], skew];
    out.extend_from_slice(&d[1..last]);
    out.into_iter().map(fit).collect()
}

fn apply_core(t: &mut Telemetry, diffs: &[i64]) -> Option<()> {
    let mut n = core_numbers(t);
    let last = n.len() - 1;
    let get = |i: usize| Num::from(diffs.get(i).copied().unwrap_or(0));
    n[0] += get(0);
    n[last] += get(0) + get(1);
    for (i, v) in n[1..last].iter_mut().enumerate() {
        *v += get(i + 2);
    }
    set_core(t, &n)
}

fn client_numbers(t: &Telemetry) -> Vec<Num> {
    t.clients.as_ref().map_or_else(Vec::new, |c| {
        [c.total, c.wifi_24, c.wifi_5, c.other]
            .map(Num::from)
            .to_vec()
    })
}

/// Load averages as hundredths, when exactly so.
fn load_hundredths(load: &[f32; 3]) -> Option<[u64; 3]> {
    let mut out = [0; 3];
    for (o, &l) in out.iter_mut().zip(load) {
        let h = (f64::from(l) * 100.0).round();
        if !(0.0..16_000_000.0).contains(&h) || (h as f32) / 100.0 != l {
            return None;
        }
        *o = h as u64;
    }
    Some(out)
}

fn diffs_of(base: &[Num], new: &[Num]) -> Option<Vec<i64>> {
    new.iter().zip(base).map(|(n, b)| fit(n - b)).collect()
}

/// Packs the changed elements of a list whose skeletons are unchanged;
/// `keep(i, diffs)` may zero differences the policy holds back.
fn pack_list<T: Numbers>(
    base: &[T],
    new: &[T],
    mut keep: impl FnMut(usize, &T, &mut Vec<i64>),
) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for (i, (b, n)) in base.iter().zip(new).enumerate() {
        let mut d = diffs_of(&b.numbers(), &n.numbers())?;
        keep(i, n, &mut d);
        let n = d.iter().rposition(|&d| d != 0).map_or(0, |i| i + 1);
        if n > 0 {
            // Index and count share one number: index * 16 + count.
            put_varint(&mut out, (i as u64) << 4 | n as u64);
            for &d in &d[..n] {
                put_varint(&mut out, zigzag(d));
            }
        }
    }
    Some(out)
}

fn same_skeletons<T: Numbers>(a: &[T], b: &[T]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(a, b)| a.same_skeleton(b))
}

fn apply_list<T: Numbers>(list: &mut [T], packed: &[u8]) -> Result<(), DecodeError> {
    let mut u = Unpack {
        bytes: packed,
        what: T::WHAT,
    };
    while !u.done() {
        let head = u.varint()?;
        let i = usize::try_from(head >> 4)
            .ok()
            .filter(|&i| i < list.len())
            .ok_or_else(|| {
                DecodeError::Invalid(format!("{} index {} out of range", T::WHAT, head >> 4))
            })?;
        let mut n = list[i].numbers();
        let count = (head & 15) as usize;
        if count > n.len() {
            return Err(DecodeError::Invalid(format!(
                "{count} numbers in a {} entry, at most {}",
                T::WHAT,
                n.len()
            )));
        }
        for n in &mut n[..count] {
            *n += Num::from(u.diff()?);
        }
        list[i]
            .set_numbers(&n)
            .ok_or_else(|| DecodeError::Invalid(format!("{} number out of range", T::WHAT)))?;
    }
    Ok(())
}

/// How `new` comes from `base` by removing some elements and appending
/// others, the order kept: the removed indexes (packed) and the appended.
fn members<T: Clone>(base: &[T], new: &[T], same: impl Fn(&T, &T) -> bool) -> (Vec<u8>, Vec<T>) {
    let mut removed = Vec::new();
    let mut j = 0;
    for (i, b) in base.iter().enumerate() {
        if j < new.len() && same(b, &new[j]) {
            j += 1;
        } else {
            put_varint(&mut removed, i as u64);
        }
    }
    (removed, new[j..].to_vec())
}

/// Applies [`members`]' edit to a list.
fn edit_members<T: Clone>(
    list: &mut Vec<T>,
    removed: &[u8],
    added: &[T],
    what: &'static str,
) -> Result<(), DecodeError> {
    let mut u = Unpack {
        bytes: removed,
        what,
    };
    let mut gone = Vec::new();
    while !u.done() {
        let i = u.varint()?;
        let ok = usize::try_from(i)
            .ok()
            .filter(|&i| i < list.len() && gone.last().is_none_or(|&l| l < i));
        gone.push(ok.ok_or_else(|| {
            DecodeError::Invalid(format!("{what} index {i} out of order or range"))
        })?);
    }
    for i in gone.into_iter().rev() {
        list.remove(i);
    }
    list.extend_from_slice(added);
    Ok(())
}

/// Applies a compact report to the report before it.
fn apply(base: &Telemetry, c: &CompactTelemetry) -> Result<Telemetry, DecodeError> {
    let mut t = base.clone();
    t.seq = c.seq;
    t.backfill = c.backfill;
    let mut u = Unpack {
        bytes: &c.core,
        what: "core",
    };
    let core = unpack_diffs(&mut u, 15)?;
    if !u.done() {
        return Err(DecodeError::Malformed("trailing bytes in core".to_owned()));
    }
    apply_core(&mut t, &core)
        .ok_or_else(|| DecodeError::Invalid("core number out of range".to_owned()))?;
    if !c.load.is_empty() {
        let mut u = Unpack {
            bytes: &c.load,
            what: "load",
        };
        for l in &mut t.load {
            *l = u.varint()? as f32 / 100.0;
        }
        if !u.done() {
            return Err(DecodeError::Malformed("trailing bytes in load".to_owned()));
        }
    }
    apply_list(&mut t.interfaces, &c.interfaces)?;
    if let Some(r) = &c.radios_full {
        t.radios = r.clone();
    }
    apply_list(&mut t.radios, &c.radios)?;
    edit_members(
        &mut t.stations,
        &c.stations_removed,
        &c.stations_added,
        "station",
    )?;
    apply_list(&mut t.stations, &c.stations)?;
    if let Some(n) = &c.neighbours_full {
        t.neighbours = n.clone();
    }
    apply_list(&mut t.neighbours, &c.neighbours)?;
    if let Some(r) = &c.routes_full {
        t.routes = r.clone();
    }
    apply_list(&mut t.routes, &c.routes)?;
    let ids_changed = !c.client_ids_removed.is_empty() || !c.client_ids_added.is_empty();
    if !c.clients.is_empty() || ids_changed {
        let clients = t
            .clients
            .as_mut()
            .ok_or_else(|| DecodeError::Invalid("client counts without clients".to_owned()))?;
        let mut u = Unpack {
            bytes: &c.clients,
            what: "clients",
        };
        if !c.clients.is_empty() {
            let d = unpack_diffs(&mut u, 4)?;
            for (f, d) in [
                &mut clients.total,
                &mut clients.wifi_24,
                &mut clients.wifi_5,
                &mut clients.other,
            ]
            .into_iter()
            .zip(d)
            {
                *f = fit(Num::from(*f) + Num::from(d))
                    .ok_or_else(|| DecodeError::Invalid("client count out of range".to_owned()))?;
            }
        }
        edit_members(
            &mut clients.ids,
            &c.client_ids_removed,
            &c.client_ids_added,
            "client id",
        )?;
    }
    t.validate()?;
    Ok(t)
}

// ---- encoder --------------------------------------------------------------

/// When the [`Compactor`] sends what in full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompactPolicy {
    /// Send the full v1 report at least every this many reports (0: only
    /// when needed), so a controller that lost its state (a restart with an
    /// external broker keeping the session) recovers.
    pub full_every: u32,
    /// Send the client stations' numbers every this many reports (0 or 1:
    /// every report). In between they are held: the controller keeps their
    /// last values. Mesh peers' signals and every other number are sent in
    /// every report; a station arriving or leaving is sent at once.
    pub detail_every: u32,
}

impl Default for CompactPolicy {
    fn default() -> CompactPolicy {
        CompactPolicy {
            full_every: 120,
            detail_every: 15,
        }
    }
}

/// The agent's side: turns each report into the smallest payload the
/// [`Reassembler`] turns back into it.
#[derive(Debug, Clone, Default)]
pub struct Compactor {
    policy: CompactPolicy,
    /// What the reassembler holds after the last payload: the last report
    /// as decoded (client stations possibly held).
    mirror: Option<Telemetry>,
    since_full: u32,
    since_detail: u32,
}

impl Compactor {
    /// A compactor with `policy`; the first report it writes is full.
    pub fn new(policy: CompactPolicy) -> Compactor {
        Compactor {
            policy,
            ..Compactor::default()
        }
    }

    /// Forgets the previous report: call at every (re)connect, since the
    /// next payload's predecessor may not have reached the controller.
    pub fn reset(&mut self) {
        self.mirror = None;
    }

    /// The payload for `t`: a v2 compact report when the previous report
    /// was the one just before it, else the full v1 report (CBOR).
    pub fn encode(&mut self, t: &Telemetry) -> Vec<u8> {
        let due = self.policy.full_every != 0 && self.since_full >= self.policy.full_every;
        let compact = match self.mirror.take() {
            Some(base) if !due => self.compact(&base, t),
            _ => None,
        };
        match compact {
            Some((c, decoded)) => {
                self.since_full += 1;
                self.mirror = Some(decoded);
                encode_cbor(&c)
            }
            None => {
                self.since_full = 1;
                self.since_detail = 1;
                self.mirror = Some(t.clone());
                encode_cbor(t)
            }
        }
    }

    /// The compact form of `t` against `base`, and what it decodes to;
    /// `None` when only the full report can say it.
    fn compact(
        &mut self,
        base: &Telemetry,
        t: &Telemetry,
    ) -> Option<(CompactTelemetry, Telemetry)> {
        if t.seq != base.seq.checked_add(1)?
            || t.node != base.node
            || t.boot_id != base.boot_id
            || t.v != base.v
            || !same_skeletons(&base.interfaces, &t.interfaces)
            || t.gateway != base.gateway
            || t.clients.is_some() != base.clients.is_some()
        {
            return None;
        }
        let detail = self.policy.detail_every <= 1 || self.since_detail >= self.policy.detail_every;
        let mut c = CompactTelemetry {
            v: COMPACT_VERSION,
            seq: t.seq,
            backfill: t.backfill,
            ..CompactTelemetry::default()
        };
        let mut core = Vec::new();
        pack_diffs(&mut core, &core_diffs(base, t)?);
        c.core = core;
        if t.load != base.load {
            for h in load_hundredths(&t.load)? {
                put_varint(&mut c.load, h);
            }
        }
        c.interfaces = pack_list(&base.interfaces, &t.interfaces, |_, _, _| {})?;
        (c.radios_full, c.radios) = list_part(&base.radios, &t.radios, |_, _, _| {})?;
        // Client stations are held between details; mesh peers and the
        // uplink (a station with a MAC) send their signals every time.
        let (removed, added) = members(&base.stations, &t.stations, Station::same_skeleton);
        let kept = base
            .stations
            .iter()
            .enumerate()
            .filter(|(i, _)| !unpacked_contains(&removed, *i));
        let mid: Vec<Station> = kept.map(|(_, s)| s.clone()).chain(added.clone()).collect();
        (c.stations_removed, c.stations_added) = (removed, added);
        c.stations = pack_list(&mid, &t.stations, |_, s, d| {
            if detail {
                return;
            }
            let keep = if s.client_id.is_none() {
                usize::from(s.signal_dbm.is_some()) + usize::from(s.signal_avg_dbm.is_some())
            } else {
                0
            };
            d[keep..].iter_mut().for_each(|x| *x = 0);
        })?;
        (c.neighbours_full, c.neighbours) =
            list_part(&base.neighbours, &t.neighbours, |_, _, _| {})?;
        (c.routes_full, c.routes) = list_part(&base.routes, &t.routes, |_, _, _| {})?;
        if let (Some(b), Some(n)) = (&base.clients, &t.clients) {
            let d = diffs_of(&client_numbers(base), &client_numbers(t))?;
            if d.iter().any(|&x| x != 0) {
                pack_diffs(&mut c.clients, &d);
            }
            (c.client_ids_removed, c.client_ids_added) = members(&b.ids, &n.ids, String::eq);
        }
        let decoded = apply(base, &c).ok()?;
        // Everything comes back exactly, but for the numbers of held
        // stations.
        let mut check = decoded.clone();
        if !detail {
            if !same_skeletons(&check.stations, &t.stations) {
                return None;
            }
            check.stations.clone_from(&t.stations);
        }
        if check != *t {
            return None;
        }
        if detail {
            self.since_detail = 1;
        } else {
            self.since_detail += 1;
        }
        Some((c, decoded))
    }
}

/// Whether the packed indexes hold `i`.
fn unpacked_contains(packed: &[u8], i: usize) -> bool {
    let mut u = Unpack {
        bytes: packed,
        what: "",
    };
    while let Ok(n) = u.varint() {
        if n == i as u64 {
            return true;
        }
    }
    false
}

/// The numbers of a list when only they changed, else the whole list.
type ListPart<T> = (Option<Vec<T>>, Vec<u8>);

fn list_part<T: Numbers>(
    base: &[T],
    new: &[T],
    keep: impl FnMut(usize, &T, &mut Vec<i64>),
) -> Option<ListPart<T>> {
    if same_skeletons(base, new) {
        Some((None, pack_list(base, new, keep)?))
    } else {
        Some((Some(new.to_vec()), Vec::new()))
    }
}

// ---- decoder --------------------------------------------------------------

/// The last reports of one node.
#[derive(Debug, Clone, Default)]
struct Bases {
    last: Option<Telemetry>,
    before: Option<Telemetry>,
}

/// The controller's side: decodes v1 and v2 telemetry of many nodes into
/// complete [`Telemetry`] values, keeping the last two reports of each node
/// (two, so that a report delivered twice still finds its predecessor).
#[derive(Debug, Clone, Default)]
pub struct Reassembler {
    nodes: HashMap<String, Bases>,
}

impl Reassembler {
    /// An empty reassembler.
    pub fn new() -> Reassembler {
        Reassembler::default()
    }

    /// Decodes a telemetry payload published by the node `key` (any stable
    /// key: the topic's `network/node`). v1 reports are decoded as by
    /// [`decode`] and remembered; v2 reports are applied to the remembered
    /// report `seq - 1` of the node.
    pub fn decode(
        &mut self,
        key: &str,
        payload: &[u8],
    ) -> Result<(Telemetry, Encoding), DecodeError> {
        let (t, encoding) = match decode::<Telemetry>(payload) {
            Err(DecodeError::UnsupportedVersion(COMPACT_VERSION)) => {
                let (c, encoding) = decode::<CompactTelemetry>(payload)?;
                let bases = self.nodes.get(key);
                let base = bases
                    .into_iter()
                    .flat_map(|b| [&b.last, &b.before])
                    .flatten()
                    .find(|b| b.seq.checked_add(1) == Some(c.seq))
                    .ok_or(DecodeError::MissingBase(c.seq))?;
                (apply(base, &c)?, encoding)
            }
            other => other?,
        };
        let bases = self.nodes.entry(key.to_owned()).or_default();
        let newer = bases
            .last
            .as_ref()
            .is_none_or(|l| l.boot_id != t.boot_id || l.seq < t.seq);
        if newer {
            bases.before = bases.last.replace(t.clone());
        }
        Ok((t, encoding))
    }

    /// Forgets a node (when it is removed).
    pub fn forget(&mut self, key: &str) {
        self.nodes.remove(key);
    }

    /// How many nodes it remembers.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether it remembers no node.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }
}
