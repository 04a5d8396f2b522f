//! The end-to-end test harness of meshtable.
//!
//! The tests in `tests/tests/` start the real `meshtable` controller and the
//! real `meshtable-agent` as processes, against either the embedded broker
//! and SQLite (always) or an external Mosquitto and PostgreSQL (when
//! `MESHTABLE_TEST_MQTT_URL` and `MESHTABLE_TEST_DATABASE_URL` are set).
//!
//! What lives here:
//!
//! - [`binaries`]: builds both binaries once per test process and finds them;
//! - [`Backend`]: the broker and database a test runs against, with a fresh
//!   PostgreSQL database per test;
//! - [`Controller`] and [`Agent`]: process guards that capture logs to files
//!   and kill their process on drop;
//! - [`MqttClient`]: a plain MQTT client for hand-made (and malformed) messages;
//! - [`links`]: the kernel's view of this machine's interfaces and counters;
//! - [`NetnsLink`], [`Relay`] and [`NetnsAgent`]: an agent in a network
//!   namespace whose link a test can take down;
//! - [`wait_until`]: the bounded poller every wait goes through.
//!
//! Every wait is bounded and panics with a message that says what it waited
//! for, what it last saw, and the tail of the processes' logs.

mod agent;
mod backend;
mod binaries;
mod controller;
pub mod json;
mod kernel;
mod metrics;
mod mqtt;
mod netns;
mod urls;

use std::net::TcpListener;
use std::sync::atomic::{AtomicU32, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

pub use agent::{Agent, agent_once};
pub use backend::{Backend, PgDatabase};
pub use binaries::{Binaries, binaries};
pub use controller::{Controller, isolate_env};
pub use kernel::{Link, boot_id, hostname, links};
pub use metrics::{Sample as MetricSample, find as find_metric, parse_metrics};
pub use mqtt::{MqttClient, Received, SharedBrokerCleanup, clear_retained, purge_session};
pub use netns::{NETNS_TCP_RETRIES2, NetnsAgent, NetnsLink, Relay, netns_unavailable};

/// How often [`wait_until`] polls.
pub const POLL: Duration = Duration::from_millis(100);

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The port is released before it is returned, so another process may take
/// it in between; [`Controller::start`] retries with new ports when its
/// process reports a port in use.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0 to find a free port");
    listener
        .local_addr()
        .expect("local address of a bound listener")
        .port()
}

/// A name unique to this test run: `prefix` followed by a dash and lowercase
/// hex digits, valid as a meshtable network or node id, an MQTT client id and
/// a PostgreSQL identifier (when `prefix` is).
pub fn unique(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    format!("{prefix}-{:x}{nanos:08x}{n:x}", std::process::id())
}

/// Milliseconds since the Unix epoch, by this machine's clock.
pub fn now_ms() -> i64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("the clock is after 1970");
    i64::try_from(d.as_millis()).expect("time fits in i64 milliseconds")
}

/// Parses an RFC 3339 timestamp as the API writes it into Unix milliseconds.
///
/// # Panics
///
/// If `s` is not an RFC 3339 timestamp; `what` names it in the message.
pub fn rfc3339_ms(what: &str, s: &str) -> i64 {
    let t = humantime::parse_rfc3339(s)
        .unwrap_or_else(|e| panic!("{what}: {s:?} is not an RFC 3339 UTC timestamp: {e}"));
    let ms = t
        .duration_since(UNIX_EPOCH)
        .unwrap_or_else(|_| panic!("{what}: {s:?} is before 1970"))
        .as_millis();
    i64::try_from(ms).unwrap_or_else(|_| panic!("{what}: {s:?} is out of range"))
}

/// Polls `probe` every [`POLL`] until it returns `Some`, and returns that.
///
/// # Panics
///
/// After `timeout` without a `Some`, naming `what` it waited for.
pub fn wait_until<T>(what: &str, timeout: Duration, mut probe: impl FnMut() -> Option<T>) -> T {
    wait_for(what, timeout, || probe().ok_or_else(String::new))
}

/// Like [`wait_until`], but the probe explains each miss (`Err(what it saw)`),
/// and the last explanation goes into the panic message.
///
/// # Panics
///
/// After `timeout` without an `Ok`.
pub fn wait_for<T>(what: &str, timeout: Duration, probe: impl FnMut() -> Result<T, String>) -> T {
    match poll(timeout, probe) {
        Ok(v) => v,
        Err(last) if last.is_empty() => panic!("timed out after {timeout:?} waiting for {what}"),
        Err(last) => {
            panic!("timed out after {timeout:?} waiting for {what}; last seen: {last}")
        }
    }
}

/// Polls `probe` every [`POLL`] until it returns `Ok`, for at most `timeout`;
/// `Err` is the probe's last explanation. For checks that are collected
/// rather than fatal at once.
pub fn poll<T>(
    timeout: Duration,
    mut probe: impl FnMut() -> Result<T, String>,
) -> Result<T, String> {
    let start = Instant::now();
    loop {
        let last = match probe() {
            Ok(v) => return Ok(v),
            Err(seen) => seen,
        };
        if start.elapsed() >= timeout {
            return Err(last);
        }
        thread::sleep(POLL);
    }
}

/// The last `lines` lines of `text`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unique_names_are_valid_ids() {
        let a = unique("e2e");
        let b = unique("e2e");
        assert_ne!(a, b);
        meshtable_proto::validate_id(&a).unwrap();
        assert!(a.len() <= 40, "{a}");
    }

    #[test]
    fn parses_api_timestamps() {
        assert_eq!(
            rfc3339_ms("t", "2026-11-28T15:40:00.123Z"),
            1_795_880_400_123
        );
    }

    #[test]
    fn tails() {
        assert_eq!(tail("a\nb\nc", 2), "b\nc");
        assert_eq!(tail("a", 5), "a");
    }

    #[test]
    #[should_panic(expected = "waiting for nothing; last seen: still nothing")]
    fn wait_for_is_bounded() {
        wait_for("nothing", Duration::from_millis(250), || {
            Err::<(), _>("still nothing".to_owned())
        });
    }
}
