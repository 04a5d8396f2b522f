//! `/proc` readers: pure parsers over the files' text, and one function that
//! reads them all from a proc root.
//!
//! The parsers take the text of one file and never touch the file system, so
//! they are tested on captured files (`tests/fixtures/proc/`).

use std::path::{Path, PathBuf};

use meshtable_proto::CpuTimes;
use serde::{Deserialize, Serialize};

/// Why a `/proc` file could not be read or understood.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    /// The file could not be read.
    #[error("cannot read {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// What the OS said.
        error: std::io::Error,
    },
    /// The file's text is not in the format the kernel writes.
    #[error("cannot parse {file}: {reason}")]
    Parse {
        /// Which file (`uptime`, `meminfo`...).
        file: &'static str,
        /// What was wrong.
        reason: String,
    },
}

fn parse_error(file: &'static str, reason: impl Into<String>) -> ProcError {
    ProcError::Parse {
        file,
        reason: reason.into(),
    }
}

/// Everything the agent takes from `/proc` for one report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProcSnapshot {
    /// Time since boot, milliseconds (`/proc/uptime`).
    pub uptime_ms: u64,
    /// Load averages (`/proc/loadavg`).
    pub load: [f32; 3],
    /// Cumulative CPU time (first line of `/proc/stat`).
    pub cpu: CpuTimes,
    /// `MemTotal`, bytes.
    pub mem_total: u64,
    /// `MemAvailable` (or its estimate on kernels before 3.14), bytes.
    pub mem_available: u64,
    /// `/proc/sys/kernel/random/boot_id`.
    pub boot_id: String,
}

/// Memory figures from `/proc/meminfo`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemInfo {
    /// `MemTotal`.
    pub total: u64,
    /// `MemAvailable`; on kernels without it, `MemFree + Buffers + Cached`,
    /// never more than `total`.
    pub available: u64,
}

/// Parses a decimal number of seconds with an optional fraction (`"628.70"`)
/// into milliseconds, exactly (no floating point).
fn seconds_to_ms(text: &str) -> Option<u64> {
    let (secs, frac) = text.split_once('.').unwrap_or((text, ""));
    if secs.is_empty() || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let secs: u64 = secs.parse().ok()?;
    let mut ms = 0u64;
    for (i, digit) in frac.bytes().take(3).enumerate() {
        ms += u64::from(digit - b'0') * 10u64.pow(2 - i as u32);
    }
    secs.checked_mul(1000)?.checked_add(ms)
}

/// Parses `/proc/uptime` (`"628.70 971.31"`): the first field, in milliseconds.
pub fn parse_uptime(text: &str) -> Result<u64, ProcError> {
    let first = text
        .split_ascii_whitespace()
        .next()
        .ok_or_else(|| parse_error("uptime", "empty"))?;
    seconds_to_ms(first).ok_or_else(|| parse_error("uptime", format!("not seconds: {first:?}")))
}

/// Parses `/proc/loadavg` (`"1.53 0.64 0.30 3/163 11986"`): the three load averages.
pub fn parse_loadavg(text: &str) -> Result<[f32; 3], ProcError> {
    let mut fields = text.split_ascii_whitespace();
    let mut load = [0f32; 3];
    for slot in &mut load {
        let field = fields
            .next()
            .ok_or_else(|| parse_error("loadavg", "fewer than three fields"))?;
        let value: f32 = field
            .parse()
            .map_err(|_| parse_error("loadavg", format!("not a number: {field:?}")))?;
        if !value.is_finite() || value < 0.0 {
            return Err(parse_error("loadavg", format!("out of range: {field:?}")));
        }
        *slot = value;
    }
    Ok(load)
}

/// Parses the first line of `/proc/stat` (`"cpu  user nice system idle iowait
/// irq softirq steal guest guest_nice"`). Old kernels write fewer columns; the
/// missing ones are zero. At least `user nice system idle` must be there.
pub fn parse_stat(text: &str) -> Result<CpuTimes, ProcError> {
    let line = text
        .lines()
        .next()
        .ok_or_else(|| parse_error("stat", "empty"))?;
    let mut fields = line.split_ascii_whitespace();
    if fields.next() != Some("cpu") {
        return Err(parse_error(
            "stat",
            "first line does not start with \"cpu\"",
        ));
    }
    let mut values = [0u64; 8];
    let mut count = 0;
    for (slot, field) in values.iter_mut().zip(fields) {
        *slot = field
            .parse()
            .map_err(|_| parse_error("stat", format!("not a counter: {field:?}")))?;
        count += 1;
    }
    if count < 4 {
        return Err(parse_error(
            "stat",
            format!("{count} cpu columns, at least 4 expected"),
        ));
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = values;
    Ok(CpuTimes {
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
    })
}

/// Parses `/proc/meminfo` (`"MemTotal:       24683656 kB"` lines).
pub fn parse_meminfo(text: &str) -> Result<MemInfo, ProcError> {
    let mut total = None;
    let mut available = None;
    let (mut free, mut buffers, mut cached) = (None, None, None);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let slot = match key {
            "MemTotal" => &mut total,
            "MemAvailable" => &mut available,
            "MemFree" => &mut free,
            "Buffers" => &mut buffers,
            "Cached" => &mut cached,
            _ => continue,
        };
        let mut parts = rest.split_ascii_whitespace();
        let value: u64 = parts
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| parse_error("meminfo", format!("bad value for {key}")))?;
        let bytes = match parts.next() {
            Some("kB") => value.saturating_mul(1024),
            None => value,
            Some(unit) => {
                return Err(parse_error(
                    "meminfo",
                    format!("unknown unit {unit:?} for {key}"),
                ));
            }
        };
        *slot = Some(bytes);
    }
    let total = total.ok_or_else(|| parse_error("meminfo", "no MemTotal"))?;
    let available = match available {
        Some(a) => a,
        // Kernels before 3.14 have no MemAvailable: estimate it as `free` did.
        None => free
            .ok_or_else(|| parse_error("meminfo", "neither MemAvailable nor MemFree"))?
            .saturating_add(buffers.unwrap_or(0))
            .saturating_add(cached.unwrap_or(0)),
    };
    Ok(MemInfo {
        total,
        available: available.min(total),
    })
}

/// Parses `/proc/sys/kernel/random/boot_id`: one UUID line.
pub fn parse_boot_id(text: &str) -> Result<String, ProcError> {
    let id = text.trim();
    let ok = !id.is_empty()
        && id.len() <= meshtable_proto::MAX_TEXT
        && id.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-');
    if ok {
        Ok(id.to_owned())
    } else {
        Err(parse_error("boot_id", format!("not a UUID: {id:?}")))
    }
}

/// Reads the `/proc` files of one report from `root` (normally `/proc`).
pub fn read_snapshot(root: &Path) -> Result<ProcSnapshot, ProcError> {
    let read = |rel: &str| {
        let path = root.join(rel);
        std::fs::read_to_string(&path).map_err(|error| ProcError::Read { path, error })
    };
    let mem = parse_meminfo(&read("meminfo")?)?;
    Ok(ProcSnapshot {
        uptime_ms: parse_uptime(&read("uptime")?)?,
        load: parse_loadavg(&read("loadavg")?)?,
        cpu: parse_stat(&read("stat")?)?,
        mem_total: mem.total,
        mem_available: mem.available,
        boot_id: parse_boot_id(&read("sys/kernel/random/boot_id")?)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_is_exact() {
        let cases = [
            ("628.70 971.31\n", Some(628_700)),
            ("0.01 0.00\n", Some(10)),
            ("12 3\n", Some(12_000)),
            ("1.2345 0\n", Some(1_234)),
            ("", None),
            ("abc 1.0", None),
            ("-1.00 0", None),
            ("1.x 0", None),
        ];
        for (text, want) in cases {
            assert_eq!(parse_uptime(text).ok(), want, "{text:?}");
        }
    }

    #[test]
    fn loadavg() {
        assert_eq!(
            parse_loadavg("1.53 0.64 0.30 3/163 11986\n").unwrap(),
            [1.53, 0.64, 0.30]
        );
        for bad in [
            "",
            "1.0 2.0",
            "1.0 x 2.0 1/2 3",
            "nan 1 1 1/1 1",
            "-1 1 1 1/1 1",
        ] {
            assert!(parse_loadavg(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn stat_columns() {
        let ten = parse_stat("cpu  1 2 3 4 5 6 7 8 9 10\ncpu0 1 2 3 4 5 6 7 8 9 10\n").unwrap();
        assert_eq!(
            (
                ten.user,
                ten.nice,
                ten.system,
                ten.idle,
                ten.iowait,
                ten.irq,
                ten.softirq,
                ten.steal
            ),
            (1, 2, 3, 4, 5, 6, 7, 8)
        );
        // Linux 2.4 wrote four columns.
        let four = parse_stat("cpu  1 2 3 4\n").unwrap();
        assert_eq!((four.idle, four.iowait, four.steal), (4, 0, 0));
        for bad in [
            "",
            "cpu0 1 2 3 4",
            "cpu 1 2 3",
            "cpu 1 2 x 4",
            "intr 1 2 3 4",
        ] {
            assert!(parse_stat(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn meminfo_rules() {
        let m = parse_meminfo("MemTotal: 100 kB\nMemFree: 10 kB\nMemAvailable: 50 kB\n").unwrap();
        assert_eq!((m.total, m.available), (102_400, 51_200));
        // No MemAvailable: free + buffers + cached, capped at total.
        let m = parse_meminfo("MemTotal: 100 kB\nMemFree: 60 kB\nBuffers: 30 kB\nCached: 20 kB\n")
            .unwrap();
        assert_eq!((m.total, m.available), (102_400, 102_400));
        for bad in [
            "",
            "MemFree: 1 kB",
            "MemTotal: x kB",
            "MemTotal: 1 MB",
            "MemTotal: 5 kB",
        ] {
            assert!(parse_meminfo(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn boot_id() {
        assert_eq!(
            parse_boot_id("b7867b5c-f136-40be-bc1d-5de2fcacaa19\n").unwrap(),
            "b7867b5c-f136-40be-bc1d-5de2fcacaa19"
        );
        for bad in ["", "\n", "not a uuid", "b7867b5c f136"] {
            assert!(parse_boot_id(bad).is_err(), "{bad:?}");
        }
    }
}
