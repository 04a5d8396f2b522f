//! A sample's interfaces, kept in the sample's own row.
//!
//! `sample.interfaces` holds every interface of the report as one JSON
//! array, one positional array per interface, sorted by name:
//!
//! ```json
//! [["br-lan", rx_bytes, tx_bytes, rx_packets, tx_packets,
//!   rx_errors, tx_errors, rx_dropped, tx_dropped, rx_bps, tx_bps], ...]
//! ```
//!
//! Counters are integers (saturated to `i64`, as every stored counter);
//! `rx_bps` and `tx_bps` are the rates derived at ingest, `null` where none
//! could be derived. One row per report instead of one per interface more
//! than halves the rows ingest writes; every reader decodes here.

use serde::{Deserialize, Serialize};

use crate::StoreError;

/// One interface of a stored sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "Packed", into = "Packed")]
pub(crate) struct Iface {
    pub(crate) name: String,
    pub(crate) rx_bytes: i64,
    pub(crate) tx_bytes: i64,
    pub(crate) rx_packets: i64,
    pub(crate) tx_packets: i64,
    pub(crate) rx_errors: i64,
    pub(crate) tx_errors: i64,
    pub(crate) rx_dropped: i64,
    pub(crate) tx_dropped: i64,
    /// Bits per second received since the previous sample of the boot.
    pub(crate) rx_bps: Option<f64>,
    /// Bits per second sent since the previous sample of the boot.
    pub(crate) tx_bps: Option<f64>,
}

/// [`Iface`] as stored: a positional array.
type Packed = (
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    Option<f64>,
    Option<f64>,
);

impl From<Packed> for Iface {
    fn from(p: Packed) -> Self {
        Iface {
            name: p.0,
            rx_bytes: p.1,
            tx_bytes: p.2,
            rx_packets: p.3,
            tx_packets: p.4,
            rx_errors: p.5,
            tx_errors: p.6,
            rx_dropped: p.7,
            tx_dropped: p.8,
            rx_bps: p.9,
            tx_bps: p.10,
        }
    }
}

impl From<Iface> for Packed {
    fn from(i: Iface) -> Self {
        (
            i.name,
            i.rx_bytes,
            i.tx_bytes,
            i.rx_packets,
            i.tx_packets,
            i.rx_errors,
            i.tx_errors,
            i.rx_dropped,
            i.tx_dropped,
            i.rx_bps,
            i.tx_bps,
        )
    }
}

/// `ifaces` as stored in `sample.interfaces`. A rate that is not finite is
/// stored as `null` (JSON has no NaN).
pub(crate) fn encode(ifaces: &[Iface]) -> String {
    // A Vec of plain numbers and strings always serializes.
    serde_json::to_string(ifaces).unwrap_or_else(|_| "[]".to_owned())
}

/// The interfaces stored in `sample.interfaces` of sample `id`.
pub(crate) fn decode(id: i64, json: &str) -> Result<Vec<Iface>, StoreError> {
    serde_json::from_str(json).map_err(|e| {
        StoreError::Database(sea_orm::DbErr::Json(format!(
            "sample {id}: stored interfaces do not decode: {e}"
        )))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iface(name: &str, rx_bps: Option<f64>) -> Iface {
        Iface {
            name: name.to_owned(),
            rx_bytes: i64::MAX,
            tx_bytes: 2,
            rx_packets: 3,
            tx_packets: 4,
            rx_errors: 5,
            tx_errors: 6,
            rx_dropped: 7,
            tx_dropped: 8,
            rx_bps,
            tx_bps: None,
        }
    }

    #[test]
    fn round_trips_as_positional_arrays() {
        let ifaces = vec![iface("br-lan", Some(1234.5)), iface("wlan\"0", None)];
        let json = encode(&ifaces);
        assert_eq!(
            json,
            format!(
                "[[\"br-lan\",{m},2,3,4,5,6,7,8,1234.5,null],[\"wlan\\\"0\",{m},2,3,4,5,6,7,8,null,null]]",
                m = i64::MAX
            )
        );
        assert_eq!(decode(1, &json).unwrap(), ifaces);
        assert_eq!(decode(1, "[]").unwrap(), Vec::new());
    }

    #[test]
    fn a_rate_that_is_not_finite_is_stored_as_null() {
        let json = encode(&[iface("eth0", Some(f64::NAN))]);
        assert_eq!(decode(1, &json).unwrap()[0].rx_bps, None);
    }

    #[test]
    fn what_does_not_decode_is_a_clear_error() {
        let err = decode(42, "[[\"eth0\",1]]").unwrap_err().to_string();
        assert!(err.contains("sample 42"), "{err}");
        assert!(err.contains("interfaces do not decode"), "{err}");
    }
}
