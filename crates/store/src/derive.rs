//! Pure derivations from reports: rates and CPU busy ratio (the sample
//! time is `clock`'s).
//! No IO here; `write` feeds these from the previous stored sample.

use meshtable_proto::CpuTimes;

/// 2020-01-01T00:00:00Z: a router clock before this has not been set.
pub(crate) const CLOCK_MIN_MS: i64 = 1_577_836_800_000;

/// Wire counters are u64; the database stores i64, saturating.
pub(crate) fn sat(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// Bits per second between two readings of a cumulative byte counter, taken
/// at two uptimes (milliseconds) of the same boot. `None` when the counter
/// went down (reset or wrap) or the uptime did not advance; never negative.
pub(crate) fn bps(prev_bytes: i64, bytes: i64, prev_uptime_ms: i64, uptime_ms: i64) -> Option<f64> {
    let dt = i128::from(uptime_ms) - i128::from(prev_uptime_ms);
    let delta = i128::from(bytes) - i128::from(prev_bytes);
    if dt <= 0 || delta < 0 {
        return None;
    }
    Some((delta * 8) as f64 / (dt as f64 / 1000.0))
}

/// CPU tick counters as stored (saturated to i64).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct Ticks {
    pub(crate) all: [i64; 8],
}

impl Ticks {
    const IDLE: usize = 3;
    const IOWAIT: usize = 4;

    pub(crate) fn from_proto(c: &CpuTimes) -> Ticks {
        Ticks {
            all: [
                sat(c.user),
                sat(c.nice),
                sat(c.system),
                sat(c.idle),
                sat(c.iowait),
                sat(c.irq),
                sat(c.softirq),
                sat(c.steal),
            ],
        }
    }
}

/// The share of CPU ticks between two samples of one boot that were neither
/// idle nor waiting for I/O. `None` when a counter went down or no tick passed.
pub(crate) fn cpu_busy_ratio(prev: &Ticks, cur: &Ticks) -> Option<f64> {
    let mut delta = [0i128; 8];
    for (d, (p, c)) in delta.iter_mut().zip(prev.all.iter().zip(cur.all.iter())) {
        *d = i128::from(*c) - i128::from(*p);
        if *d < 0 {
            return None;
        }
    }
    let total: i128 = delta.iter().sum();
    if total == 0 {
        return None;
    }
    let busy = total - delta[Ticks::IDLE] - delta[Ticks::IOWAIT];
    Some(busy as f64 / total as f64)
}

/// `1 - part / whole`, for memory and filesystem use; `None` when `whole` is
/// not positive. Clamped to `0..=1`.
pub(crate) fn used_ratio(part_free: i64, whole: i64) -> Option<f64> {
    if whole <= 0 {
        return None;
    }
    Some((1.0 - part_free as f64 / whole as f64).clamp(0.0, 1.0))
}

/// A load average as the router sent it (f32), widened to the f64 of the
/// same shortest decimal form, so `0.07` stays `0.07` and not `0.0700000003`.
pub(crate) fn widen(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(f64::from(x))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        // (prev bytes, bytes, prev uptime, uptime) -> bps
        #[track_caller]
        fn check(input: (i64, i64, i64, i64), expect: Option<f64>) {
            let (pb, b, pu, u) = input;
            assert_eq!(bps(pb, b, pu, u), expect, "{input:?}");
        }
        // 1000 bytes in 1 s = 8000 bit/s.
        check((0, 1000, 0, 1000), Some(8000.0));
        check((5000, 6000, 60_000, 62_000), Some(4000.0));
        // No traffic is a rate of zero, not unknown.
        check((7, 7, 0, 60_000), Some(0.0));
        // Counter went down: reset or wrap.
        check((6000, 5000, 0, 1000), None);
        // Uptime did not advance, or went back.
        check((0, 1000, 5000, 5000), None);
        check((0, 1000, 5000, 4000), None);
        // Extremes do not overflow.
        check((0, i64::MAX, 0, 1), Some(i64::MAX as f64 * 8.0 * 1000.0));
        check((i64::MIN, i64::MAX, i64::MIN, i64::MAX), Some(8.0 * 1000.0));
    }

    #[test]
    fn cpu_busy() {
        fn t(user: i64, system: i64, idle: i64, iowait: i64) -> Ticks {
            Ticks {
                all: [user, 0, system, idle, iowait, 0, 0, 0],
            }
        }
        #[track_caller]
        fn check(prev: Ticks, cur: Ticks, expect: Option<f64>) {
            assert_eq!(cpu_busy_ratio(&prev, &cur), expect);
        }
        check(t(0, 0, 0, 0), t(25, 25, 50, 0), Some(0.5));
        // iowait counts as not busy.
        check(t(10, 10, 10, 10), t(20, 10, 20, 30), Some(0.25));
        check(t(10, 10, 10, 10), t(10, 10, 110, 10), Some(0.0));
        check(t(10, 10, 10, 10), t(60, 60, 10, 10), Some(1.0));
        // Nothing happened.
        check(t(10, 10, 10, 10), t(10, 10, 10, 10), None);
        // A counter went down.
        check(t(10, 10, 10, 10), t(100, 100, 9, 10), None);
        assert_eq!(
            Ticks::from_proto(&CpuTimes {
                user: u64::MAX,
                steal: 8,
                ..Default::default()
            })
            .all,
            [i64::MAX, 0, 0, 0, 0, 0, 0, 8]
        );
    }

    #[test]
    fn ratios_and_widening() {
        assert_eq!(used_ratio(250, 1000), Some(0.75));
        assert_eq!(used_ratio(1000, 1000), Some(0.0));
        assert_eq!(used_ratio(0, 0), None);
        assert_eq!(used_ratio(2000, 1000), Some(0.0));
        assert_eq!(widen(0.07), 0.07);
        assert_eq!(widen(1.5), 1.5);
        assert_eq!(sat(u64::MAX), i64::MAX);
        assert_eq!(sat(42), 42);
    }
}
