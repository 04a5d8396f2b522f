//! The metrics a series can be asked for.

use crate::StoreError;

/// A metric of one node over time (see [`crate::Store::series`]).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Metric {
    /// Load average over 1 minute.
    Load1,
    /// Load average over 5 minutes.
    Load5,
    /// Load average over 15 minutes.
    Load15,
    /// `1 - mem_available / mem_total`.
    MemUsedRatio,
    /// `1 - rootfs_free / rootfs_size`.
    RootfsUsedRatio,
    /// Share of CPU ticks neither idle nor waiting for I/O between consecutive
    /// samples of one boot.
    CpuBusyRatio,
    /// Bits per second received on the named interface.
    RxBps(String),
    /// Bits per second sent on the named interface.
    TxBps(String),
}

impl Metric {
    /// Every metric name [`Metric::parse`] accepts.
    pub const NAMES: [&'static str; 8] = [
        "load1",
        "load5",
        "load15",
        "mem_used_ratio",
        "rootfs_used_ratio",
        "cpu_busy_ratio",
        "rx_bps",
        "tx_bps",
    ];

    /// Parses a metric name and, for `rx_bps` and `tx_bps`, the interface it
    /// needs. An empty interface counts as none; the other metrics ignore it.
    pub fn parse(metric: &str, interface: Option<&str>) -> Result<Metric, StoreError> {
        let interface = interface.filter(|i| !i.is_empty());
        let need_interface = |f: fn(String) -> Metric| match interface {
            Some(i) => Ok(f(i.to_owned())),
            None => Err(StoreError::BadQuery(format!(
                "metric {metric} needs an interface"
            ))),
        };
        match metric {
            "load1" => Ok(Metric::Load1),
            "load5" => Ok(Metric::Load5),
            "load15" => Ok(Metric::Load15),
            "mem_used_ratio" => Ok(Metric::MemUsedRatio),
            "rootfs_used_ratio" => Ok(Metric::RootfsUsedRatio),
            "cpu_busy_ratio" => Ok(Metric::CpuBusyRatio),
            "rx_bps" => need_interface(Metric::RxBps),
            "tx_bps" => need_interface(Metric::TxBps),
            _ => Err(StoreError::BadQuery(format!(
                "unknown metric {metric:?}, expected one of {}",
                Metric::NAMES.join(", ")
            ))),
        }
    }

    /// The metric's name, as [`Metric::parse`] takes it.
    pub fn name(&self) -> &'static str {
        match self {
            Metric::Load1 => "load1",
            Metric::Load5 => "load5",
            Metric::Load15 => "load15",
            Metric::MemUsedRatio => "mem_used_ratio",
            Metric::RootfsUsedRatio => "rootfs_used_ratio",
            Metric::CpuBusyRatio => "cpu_busy_ratio",
            Metric::RxBps(_) => "rx_bps",
            Metric::TxBps(_) => "tx_bps",
        }
    }

    /// The interface of `rx_bps` and `tx_bps`; `None` for the others.
    pub fn interface(&self) -> Option<&str> {
        match self {
            Metric::RxBps(i) | Metric::TxBps(i) => Some(i),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse() {
        #[track_caller]
        fn check(metric: &str, interface: Option<&str>, expect: Result<Metric, &str>) {
            match (Metric::parse(metric, interface), expect) {
                (Ok(got), Ok(want)) => {
                    assert_eq!(got, want);
                    assert_eq!(got.name(), metric);
                }
                (Err(StoreError::BadQuery(got)), Err(want)) => assert_eq!(got, want),
                (got, want) => panic!("{metric} {interface:?}: got {got:?}, want {want:?}"),
            }
        }
        check("load1", None, Ok(Metric::Load1));
        check("load5", None, Ok(Metric::Load5));
        check("load15", Some("eth0"), Ok(Metric::Load15));
        check("mem_used_ratio", None, Ok(Metric::MemUsedRatio));
        check("rootfs_used_ratio", None, Ok(Metric::RootfsUsedRatio));
        check("cpu_busy_ratio", None, Ok(Metric::CpuBusyRatio));
        check("rx_bps", Some("eth0"), Ok(Metric::RxBps("eth0".into())));
        check("tx_bps", Some("wg0"), Ok(Metric::TxBps("wg0".into())));
        check("rx_bps", None, Err("metric rx_bps needs an interface"));
        check("tx_bps", Some(""), Err("metric tx_bps needs an interface"));
        check(
            "load2",
            None,
            Err(
                "unknown metric \"load2\", expected one of load1, load5, load15, \
                 mem_used_ratio, rootfs_used_ratio, cpu_busy_ratio, rx_bps, tx_bps",
            ),
        );
        check(
            "",
            None,
            Err(
                "unknown metric \"\", expected one of load1, load5, load15, \
                 mem_used_ratio, rootfs_used_ratio, cpu_busy_ratio, rx_bps, tx_bps",
            ),
        );
    }

    #[test]
    fn names_round_trip() {
        for name in Metric::NAMES {
            let m = Metric::parse(name, Some("eth0")).unwrap();
            assert_eq!(m.name(), name);
            assert_eq!(m.interface().is_some(), name.ends_with("_bps"));
        }
    }
}
