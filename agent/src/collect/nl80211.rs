//! Wireless radios and stations from nl80211 over generic netlink: one
//! `NL80211_CMD_GET_INTERFACE` dump, then per wireless interface a
//! `NL80211_CMD_GET_SURVEY` dump (noise, channel active and busy time) and a
//! `NL80211_CMD_GET_STATION` dump (associated stations and mesh peers).
//!
//! Numbers are those of `include/uapi/linux/nl80211.h` (enums
//! `nl80211_commands`, `nl80211_attrs`, `nl80211_iftype`,
//! `nl80211_sta_info`, `nl80211_rate_info`, `nl80211_survey_info`,
//! `nl80211_chan_width`). Parsing is pure ([`parse_interface`],
//! [`parse_station`], [`parse_survey`]); [`collect`] does the I/O. Without
//! the `nl80211` family (no wireless driver loaded) it returns nothing.

use meshtable_proto::RadioMode;
use tracing::{debug, warn};

use super::genl::{Attr, Genl, GenlError, Message, attrs, put_attr};

/// Commands (`enum nl80211_commands`).
pub mod cmd {
    /// `NL80211_CMD_GET_INTERFACE`.
    pub const GET_INTERFACE: u8 = 5;
    /// `NL80211_CMD_NEW_INTERFACE`: the answer to `GET_INTERFACE`.
    pub const NEW_INTERFACE: u8 = 7;
    /// `NL80211_CMD_GET_STATION`.
    pub const GET_STATION: u8 = 17;
    /// `NL80211_CMD_NEW_STATION`: the answer to `GET_STATION`.
    pub const NEW_STATION: u8 = 19;
    /// `NL80211_CMD_GET_SURVEY`.
    pub const GET_SURVEY: u8 = 50;
    /// `NL80211_CMD_NEW_SURVEY_RESULTS`: the answer to `GET_SURVEY`.
    pub const NEW_SURVEY_RESULTS: u8 = 51;
}

/// Top-level attributes (`enum nl80211_attrs`).
pub mod attr {
    /// `NL80211_ATTR_WIPHY` (u32).
    pub const WIPHY: u16 = 1;
    /// `NL80211_ATTR_IFINDEX` (u32).
    pub const IFINDEX: u16 = 3;
    /// `NL80211_ATTR_IFNAME` (string).
    pub const IFNAME: u16 = 4;
    /// `NL80211_ATTR_IFTYPE` (u32, `enum nl80211_iftype`).
    pub const IFTYPE: u16 = 5;
    /// `NL80211_ATTR_MAC` (6 bytes).
    pub const MAC: u16 = 6;
    /// `NL80211_ATTR_STA_INFO` (nested, `enum nl80211_sta_info`).
    pub const STA_INFO: u16 = 21;
    /// `NL80211_ATTR_WIPHY_FREQ` (u32, MHz).
    pub const WIPHY_FREQ: u16 = 38;
    /// `NL80211_ATTR_SSID` (bytes).
    pub const SSID: u16 = 52;
    /// `NL80211_ATTR_SURVEY_INFO` (nested, `enum nl80211_survey_info`).
    pub const SURVEY_INFO: u16 = 84;
    /// `NL80211_ATTR_WIPHY_TX_POWER_LEVEL` (u32, mBm).
    pub const WIPHY_TX_POWER_LEVEL: u16 = 98;
    /// `NL80211_ATTR_CHANNEL_WIDTH` (u32, `enum nl80211_chan_width`).
    pub const CHANNEL_WIDTH: u16 = 159;
    /// `NL80211_ATTR_CENTER_FREQ1` (u32, MHz).
    pub const CENTER_FREQ1: u16 = 160;
}

/// Interface types (`enum nl80211_iftype`).
pub mod iftype {
    /// `NL80211_IFTYPE_ADHOC`.
    pub const ADHOC: u32 = 1;
    /// `NL80211_IFTYPE_STATION`.
    pub const STATION: u32 = 2;
    /// `NL80211_IFTYPE_AP`.
    pub const AP: u32 = 3;
    /// `NL80211_IFTYPE_AP_VLAN`.
    pub const AP_VLAN: u32 = 4;
    /// `NL80211_IFTYPE_MONITOR`.
    pub const MONITOR: u32 = 6;
    /// `NL80211_IFTYPE_MESH_POINT`.
    pub const MESH_POINT: u32 = 7;
    /// `NL80211_IFTYPE_P2P_CLIENT`.
    pub const P2P_CLIENT: u32 = 8;
    /// `NL80211_IFTYPE_P2P_GO`.
    pub const P2P_GO: u32 = 9;
}

/// Station info attributes (`enum nl80211_sta_info`).
pub mod sta {
    /// `NL80211_STA_INFO_INACTIVE_TIME` (u32, ms).
    pub const INACTIVE_TIME: u16 = 1;
    /// `NL80211_STA_INFO_RX_BYTES` (u32).
    pub const RX_BYTES: u16 = 2;
    /// `NL80211_STA_INFO_TX_BYTES` (u32).
    pub const TX_BYTES: u16 = 3;
    /// `NL80211_STA_INFO_SIGNAL` (s8 as u8, dBm).
    pub const SIGNAL: u16 = 7;
    /// `NL80211_STA_INFO_TX_BITRATE` (nested, `enum nl80211_rate_info`).
    pub const TX_BITRATE: u16 = 8;
    /// `NL80211_STA_INFO_TX_RETRIES` (u32).
    pub const TX_RETRIES: u16 = 11;
    /// `NL80211_STA_INFO_TX_FAILED` (u32).
    pub const TX_FAILED: u16 = 12;
    /// `NL80211_STA_INFO_SIGNAL_AVG` (s8 as u8, dBm).
    pub const SIGNAL_AVG: u16 = 13;
    /// `NL80211_STA_INFO_RX_BITRATE` (nested, `enum nl80211_rate_info`).
    pub const RX_BITRATE: u16 = 14;
    /// `NL80211_STA_INFO_RX_BYTES64` (u64).
    pub const RX_BYTES64: u16 = 23;
    /// `NL80211_STA_INFO_TX_BYTES64` (u64).
    pub const TX_BYTES64: u16 = 24;
}

/// Rate info attributes (`enum nl80211_rate_info`).
pub mod rate {
    /// `NL80211_RATE_INFO_BITRATE` (u16, 100 kbit/s).
    pub const BITRATE: u16 = 1;
    /// `NL80211_RATE_INFO_BITRATE32` (u32, 100 kbit/s).
    pub const BITRATE32: u16 = 5;
}

/// Survey info attributes (`enum nl80211_survey_info`).
pub mod survey {
    /// `NL80211_SURVEY_INFO_FREQUENCY` (u32, MHz).
    pub const FREQUENCY: u16 = 1;
    /// `NL80211_SURVEY_INFO_NOISE` (s8 as u8, dBm).
    pub const NOISE: u16 = 2;
    /// `NL80211_SURVEY_INFO_IN_USE` (flag).
    pub const IN_USE: u16 = 3;
    /// `NL80211_SURVEY_INFO_TIME` (u64, ms the radio was on the channel).
    pub const TIME: u16 = 4;
    /// `NL80211_SURVEY_INFO_TIME_BUSY` (u64, ms the channel was busy).
    pub const TIME_BUSY: u16 = 5;
}

/// A wireless interface (`NL80211_CMD_NEW_INTERFACE`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Interface {
    /// Interface index.
    pub ifindex: u32,
    /// Interface name.
    pub ifname: String,
    /// The wiphy (radio) it belongs to.
    pub wiphy: Option<u32>,
    /// `enum nl80211_iftype`.
    pub iftype: u32,
    /// The interface's own MAC.
    pub mac: Option<[u8; 6]>,
    /// The SSID (AP, station) or mesh id, when set.
    pub ssid: Option<String>,
    /// Control channel frequency, MHz.
    pub frequency_mhz: Option<u32>,
    /// `enum nl80211_chan_width`.
    pub width: Option<u32>,
    /// Transmit power, mBm (1/100 dBm).
    pub tx_power_mbm: Option<i32>,
}

/// An associated station or mesh peer (`NL80211_CMD_NEW_STATION`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StationInfo {
    /// The interface it is associated with.
    pub ifindex: u32,
    /// Its MAC address.
    pub mac: [u8; 6],
    /// Signal of the last frame, dBm.
    pub signal_dbm: Option<i8>,
    /// Average signal, dBm.
    pub signal_avg_dbm: Option<i8>,
    /// Current transmit rate, 100 kbit/s.
    pub tx_bitrate_100kbps: Option<u32>,
    /// Rate of the last received frame, 100 kbit/s.
    pub rx_bitrate_100kbps: Option<u32>,
    /// Bytes received from it.
    pub rx_bytes: u64,
    /// Bytes sent to it.
    pub tx_bytes: u64,
    /// Transmit retries.
    pub tx_retries: u32,
    /// Transmissions that failed.
    pub tx_failed: u32,
    /// Milliseconds since it was last heard.
    pub inactive_ms: u32,
}

/// One channel of a survey (`NL80211_CMD_NEW_SURVEY_RESULTS`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SurveyInfo {
    /// The interface surveyed.
    pub ifindex: u32,
    /// The channel, MHz.
    pub frequency_mhz: Option<u32>,
    /// Noise floor, dBm.
    pub noise_dbm: Option<i8>,
    /// The channel the radio is on.
    pub in_use: bool,
    /// Milliseconds the radio spent on the channel.
    pub active_ms: Option<u64>,
    /// Milliseconds the channel was sensed busy.
    pub busy_ms: Option<u64>,
}

fn top(msg: &[u8]) -> Result<Vec<Attr<'_>>, GenlError> {
    attrs(msg)
}

/// Parses a `NL80211_CMD_NEW_INTERFACE` message's attributes. A message
/// without an interface index or name is malformed.
pub fn parse_interface(payload: &[u8]) -> Result<Interface, GenlError> {
    let mut i = Interface::default();
    let mut ifindex = None;
    for a in top(payload)? {
        match a.kind {
            attr::IFINDEX => ifindex = a.u32(),
            attr::IFNAME => i.ifname = a.text(),
            attr::WIPHY => i.wiphy = a.u32(),
            attr::IFTYPE => i.iftype = a.u32().unwrap_or(0),
            attr::MAC => i.mac = a.mac(),
            attr::SSID => {
                i.ssid =
                    Some(String::from_utf8_lossy(a.value).into_owned()).filter(|s| !s.is_empty())
            }
            attr::WIPHY_FREQ => i.frequency_mhz = a.u32(),
            attr::CHANNEL_WIDTH => i.width = a.u32(),
            attr::WIPHY_TX_POWER_LEVEL => i.tx_power_mbm = a.u32().map(|v| v as i32),
            _ => {}
        }
    }
    i.ifindex = ifindex.ok_or(GenlError::Malformed(
        "interface without NL80211_ATTR_IFINDEX",
    ))?;
    if i.ifname.is_empty() {
        return Err(GenlError::Malformed(
            "interface without NL80211_ATTR_IFNAME",
        ));
    }
    Ok(i)
}

fn bitrate(a: &Attr<'_>) -> Result<Option<u32>, GenlError> {
    let mut r16 = None;
    let mut r32 = None;
    for n in a.nested()? {
        match n.kind {
            rate::BITRATE => r16 = n.u16().map(u32::from),
            rate::BITRATE32 => r32 = n.u32(),
            _ => {}
        }
    }
    // BITRATE32 is the exact one; BITRATE is capped at 6.5535 Gbit/s.
    Ok(r32.or(r16).filter(|r| *r > 0))
}

/// Parses a `NL80211_CMD_NEW_STATION` message's attributes. A message
/// without the station's MAC or `NL80211_ATTR_STA_INFO` is malformed.
pub fn parse_station(payload: &[u8]) -> Result<StationInfo, GenlError> {
    let mut s = StationInfo::default();
    let mut mac = None;
    let mut info = None;
    for a in top(payload)? {
        match a.kind {
            attr::IFINDEX => s.ifindex = a.u32().unwrap_or(0),
            attr::MAC => mac = a.mac(),
            attr::STA_INFO => info = Some(a),
            _ => {}
        }
    }
    s.mac = mac.ok_or(GenlError::Malformed("station without NL80211_ATTR_MAC"))?;
    let info = info.ok_or(GenlError::Malformed(
        "station without NL80211_ATTR_STA_INFO",
    ))?;
    let (mut rx32, mut tx32, mut rx64, mut tx64) = (None, None, None, None);
    for a in info.nested()? {
        match a.kind {
            sta::INACTIVE_TIME => s.inactive_ms = a.u32().unwrap_or(0),
            sta::RX_BYTES => rx32 = a.u32(),
            sta::TX_BYTES => tx32 = a.u32(),
            sta::RX_BYTES64 => rx64 = a.u64(),
            sta::TX_BYTES64 => tx64 = a.u64(),
            sta::SIGNAL => s.signal_dbm = a.i8(),
            sta::SIGNAL_AVG => s.signal_avg_dbm = a.i8(),
            sta::TX_BITRATE => s.tx_bitrate_100kbps = bitrate(&a)?,
            sta::RX_BITRATE => s.rx_bitrate_100kbps = bitrate(&a)?,
            sta::TX_RETRIES => s.tx_retries = a.u32().unwrap_or(0),
            sta::TX_FAILED => s.tx_failed = a.u32().unwrap_or(0),
            _ => {}
        }
    }
    // The 64-bit counters when the kernel sends them (it sends both).
    s.rx_bytes = rx64.or(rx32.map(u64::from)).unwrap_or(0);
    s.tx_bytes = tx64.or(tx32.map(u64::from)).unwrap_or(0);
    Ok(s)
}

/// Parses a `NL80211_CMD_NEW_SURVEY_RESULTS` message's attributes.
pub fn parse_survey(payload: &[u8]) -> Result<SurveyInfo, GenlError> {
    let mut s = SurveyInfo::default();
    let mut info = None;
    for a in top(payload)? {
        match a.kind {
            attr::IFINDEX => s.ifindex = a.u32().unwrap_or(0),
            attr::SURVEY_INFO => info = Some(a),
            _ => {}
        }
    }
    let info = info.ok_or(GenlError::Malformed(
        "survey without NL80211_ATTR_SURVEY_INFO",
    ))?;
    for a in info.nested()? {
        match a.kind {
            survey::FREQUENCY => s.frequency_mhz = a.u32(),
            survey::NOISE => s.noise_dbm = a.i8(),
            survey::IN_USE => s.in_use = true,
            survey::TIME => s.active_ms = a.u64(),
            survey::TIME_BUSY => s.busy_ms = a.u64(),
            _ => {}
        }
    }
    Ok(s)
}

/// The channel number of a frequency (IEEE 802.11 channel numbering, as
/// `iw` computes it): 2.4 GHz, 5 GHz (and 4.9 GHz), 6 GHz and 60 GHz.
pub fn channel(frequency_mhz: u32) -> Option<u16> {
    let f = frequency_mhz;
    let ch = match f {
        2484 => 14,
        2412..=2472 => (f - 2407) / 5,
        5955..=7115 => (f - 5950) / 5,
        5935 => 2,
        4910..=4980 => (f - 4000) / 5,
        5000..=5925 => (f - 5000) / 5,
        58320..=70200 => (f - 56160) / 2160,
        _ => return None,
    };
    u16::try_from(ch).ok()
}

/// The channel width in MHz of an `enum nl80211_chan_width` value
/// (`NL80211_CHAN_WIDTH_80P80` counts as 160).
pub fn width_mhz(width: u32) -> Option<u16> {
    Some(match width {
        0 | 1 => 20, // 20_NOHT, 20
        2 => 40,
        3 => 80,
        4 | 5 => 160, // 80P80, 160
        6 => 5,
        7 => 10,
        8 => 1,
        9 => 2,
        10 => 4,
        11 => 8,
        12 => 16,
        13 => 320,
        _ => return None,
    })
}

/// The wire's mode of an `enum nl80211_iftype` value.
pub fn mode(iftype: u32) -> RadioMode {
    match iftype {
        iftype::AP | iftype::AP_VLAN | iftype::P2P_GO => RadioMode::Ap,
        iftype::MESH_POINT => RadioMode::MeshPoint,
        iftype::ADHOC => RadioMode::Adhoc,
        iftype::STATION | iftype::P2P_CLIENT => RadioMode::Station,
        iftype::MONITOR => RadioMode::Monitor,
        _ => RadioMode::Other,
    }
}

/// What a station on an interface of this type is to the router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peer {
    /// A mesh peer (802.11s mesh point, or ad-hoc/IBSS as batman-adv
    /// meshes use it): its MAC identifies a router and may be reported.
    Mesh,
    /// The access point a station-mode interface is associated with (the
    /// uplink): a router's MAC, reported.
    Uplink,
    /// A client of an access point: its MAC never leaves the router.
    Client,
}

/// How the stations of an interface of type `iftype` are reported.
/// Anything not known to be a mesh peer or an uplink is a client.
pub fn peer_kind(iftype: u32) -> Peer {
    match iftype {
        iftype::MESH_POINT | iftype::ADHOC => Peer::Mesh,
        iftype::STATION | iftype::P2P_CLIENT => Peer::Uplink,
        _ => Peer::Client,
    }
}

/// Whether a frequency is in the 2.4 GHz band.
pub fn is_24ghz(frequency_mhz: u32) -> bool {
    (2400..2500).contains(&frequency_mhz)
}

/// Everything one collection found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wireless {
    /// The wireless interfaces.
    pub interfaces: Vec<Interface>,
    /// The in-use channel of each interface that reported a survey.
    pub surveys: Vec<SurveyInfo>,
    /// Stations and peers of every interface.
    pub stations: Vec<StationInfo>,
}

/// Parses the messages of the three dumps, skipping (and logging) each one
/// that does not parse. Returns how many were skipped.
pub fn parse_dumps(
    interfaces: &[Message],
    surveys: &[Message],
    stations: &[Message],
    out: &mut Wireless,
) -> usize {
    let mut skipped = 0;
    for m in interfaces.iter().filter(|m| m.cmd == cmd::NEW_INTERFACE) {
        match parse_interface(&m.payload) {
            Ok(i) => out.interfaces.push(i),
            Err(e) => {
                skipped += 1;
                warn!(dump = "nl80211 interfaces", error = %e, "skipped a malformed message");
            }
        }
    }
    for m in surveys.iter().filter(|m| m.cmd == cmd::NEW_SURVEY_RESULTS) {
        match parse_survey(&m.payload) {
            // Only the channel in use describes the radio now.
            Ok(s) if s.in_use => out.surveys.push(s),
            Ok(_) => {}
            Err(e) => {
                skipped += 1;
                warn!(dump = "nl80211 survey", error = %e, "skipped a malformed message");
            }
        }
    }
    for m in stations.iter().filter(|m| m.cmd == cmd::NEW_STATION) {
        match parse_station(&m.payload) {
            Ok(s) => out.stations.push(s),
            Err(e) => {
                skipped += 1;
                warn!(dump = "nl80211 stations", error = %e, "skipped a malformed message");
            }
        }
    }
    skipped
}

fn ifindex_attr(ifindex: u32) -> Vec<u8> {
    let mut a = Vec::new();
    put_attr(&mut a, attr::IFINDEX, &ifindex.to_ne_bytes());
    a
}

/// Reads the radios and stations from the kernel. No `nl80211` family (no
/// wireless driver) gives an empty result; an interface whose survey or
/// station dump fails is reported without them.
pub fn collect() -> Result<Wireless, GenlError> {
    let mut out = Wireless::default();
    let mut g = Genl::open()?;
    let Some(family) = g.family("nl80211")? else {
        debug!("no nl80211 family: no wireless driver loaded");
        return Ok(out);
    };
    let ifaces = g.dump(family, cmd::GET_INTERFACE, 0, &[])?;
    let mut wireless = Wireless::default();
    parse_dumps(&ifaces, &[], &[], &mut wireless);
    let mut surveys = Vec::new();
    let mut stations = Vec::new();
    for i in &wireless.interfaces {
        let req = ifindex_attr(i.ifindex);
        match g.dump(family, cmd::GET_SURVEY, 0, &req) {
            Ok(m) => surveys.extend(m),
            Err(e) => debug!(ifname = %i.ifname, error = %e, "no survey"),
        }
        match g.dump(family, cmd::GET_STATION, 0, &req) {
            Ok(m) => stations.extend(m),
            Err(e) => debug!(ifname = %i.ifname, error = %e, "no station dump"),
        }
    }
    out.interfaces = wireless.interfaces;
    parse_dumps(&[], &surveys, &stations, &mut out);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_and_widths() {
        for (f, ch) in [
            (2412, Some(1)),
            (2437, Some(6)),
            (2472, Some(13)),
            (2484, Some(14)),
            (5180, Some(36)),
            (5500, Some(100)),
            (5825, Some(165)),
            (5955, Some(1)),
            (6115, Some(33)),
            (58320, Some(1)),
            (900, None),
        ] {
            assert_eq!(channel(f), ch, "{f}");
        }
        assert_eq!(width_mhz(0), Some(20));
        assert_eq!(width_mhz(3), Some(80));
        assert_eq!(width_mhz(13), Some(320));
        assert_eq!(width_mhz(99), None);
        assert!(is_24ghz(2462) && !is_24ghz(5180));
        assert_eq!(mode(iftype::MESH_POINT), RadioMode::MeshPoint);
        assert_eq!(peer_kind(iftype::AP), Peer::Client);
        assert_eq!(peer_kind(99), Peer::Client);
    }
}
