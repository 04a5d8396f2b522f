//! Times: the store keeps Unix milliseconds; JSON shows them as RFC 3339
//! strings with milliseconds in UTC (`2026-11-28T15:40:00.123Z`).

use chrono::{DateTime, SecondsFormat, Utc};

use crate::StoreError;

/// Formats Unix milliseconds as RFC 3339 with milliseconds in UTC. Times
/// beyond chrono's range (about ±262,000 years) are clamped to it.
pub fn format_rfc3339_ms(ms: i64) -> String {
    let t = DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or(if ms < 0 {
        DateTime::<Utc>::MIN_UTC
    } else {
        DateTime::<Utc>::MAX_UTC
    });
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Parses an RFC 3339 time (any offset, any fraction) to Unix milliseconds.
pub fn parse_rfc3339_ms(s: &str) -> Result<i64, StoreError> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.timestamp_millis())
        .map_err(|e| StoreError::BadQuery(format!("invalid time {s:?}: {e}")))
}

/// `#[serde(with = "meshtable_store::time::rfc3339_ms")]` for an `i64` of
/// Unix milliseconds.
pub mod rfc3339_ms {
    use serde::{Deserialize, Deserializer, Serializer};

    /// Serializes Unix milliseconds as an RFC 3339 string.
    pub fn serialize<S: Serializer>(ms: &i64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_rfc3339_ms(*ms))
    }

    /// Deserializes an RFC 3339 string to Unix milliseconds.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<i64, D::Error> {
        let s = String::deserialize(d)?;
        super::parse_rfc3339_ms(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_and_parses() {
        let check = |ms: i64, expect: &str| {
            assert_eq!(format_rfc3339_ms(ms), expect);
            assert_eq!(parse_rfc3339_ms(expect).unwrap(), ms);
        };
        check(0, "1970-01-01T00:00:00.000Z");
        check(1_764_344_400_123, "2025-11-28T15:40:00.123Z");
        check(-1, "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn parses_offsets_and_rejects_garbage() {
        assert_eq!(
            parse_rfc3339_ms("2025-11-28T16:40:00.123+01:00").unwrap(),
            1_764_344_400_123
        );
        assert_eq!(
            parse_rfc3339_ms("2025-11-28T15:40:00Z").unwrap(),
            1_764_344_400_000
        );
        assert!(matches!(
            parse_rfc3339_ms("yesterday"),
            Err(StoreError::BadQuery(_))
        ));
    }

    #[test]
    fn clamps_out_of_range() {
        assert!(format_rfc3339_ms(i64::MAX).starts_with("+262"));
        assert!(format_rfc3339_ms(i64::MIN).starts_with("-262"));
    }
}
