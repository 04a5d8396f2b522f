//! The state directory as the binary uses it, without a broker: an unusable
//! `--state-dir` stops the agent before it connects, with an error naming
//! the flag; a directory already in use by a running agent is refused; and
//! `--once` leaves the state directory alone.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_meshtable-agent");

/// A broker address where nothing listens: the agent keeps retrying.
const NOWHERE: &str = "mqtt://127.0.0.1:1";

/// Runs the agent against no broker, expecting it to exit by itself.
fn run_to_exit(state_dir: &Path) -> Output {
    let mut child = Command::new(BIN)
        .args(["--mqtt-url", NOWHERE, "--node-id", "n1", "--state-dir"])
        .arg(state_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "the agent did not exit on its own:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn an_unusable_state_dir_is_a_clear_startup_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    for dir in [file.join("state"), file.clone()] {
        let out = run_to_exit(&dir);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: {stderr}", dir.display());
        let want = format!("error: cannot use --state-dir {}: ", dir.display());
        assert!(stderr.contains(&want), "{stderr} lacks {want:?}");
        // It stopped before trying the broker.
        assert!(!stderr.contains("broker"), "{stderr}");
    }
}

#[test]
fn a_state_dir_in_use_is_refused_and_once_leaves_it_alone() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state");
    let mut first = Command::new(BIN)
        .args(["--mqtt-url", NOWHERE, "--node-id", "n1", "--interval", "1s"])
        .arg("--state-dir")
        .arg(&dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Without a broker the agent still collects, and reserves each seq.
    let seq_file = dir.join("seq");
    let deadline = Instant::now() + Duration::from_secs(10);
    let next = loop {
        let text = std::fs::read_to_string(&seq_file).unwrap_or_default();
        let next = text
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok());
        if let Some(n) = next.filter(|n| *n >= 2) {
            break n;
        }
        assert!(Instant::now() < deadline, "seq file: {text:?}");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(next >= 2);

    let out = run_to_exit(&dir);
    let _ = first.kill();
    let _ = first.wait();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("another meshtable-agent is using it"),
        "{stderr}"
    );
    assert!(stderr.contains("--state-dir"), "{stderr}");

    // --once publishes nothing, so it neither reads nor advances the file.
    let before = std::fs::read_to_string(&seq_file).unwrap();
    let other = tmp.path().join("never-created");
    for state_dir in [&dir, &other] {
        let out = Command::new(BIN)
            .args(["--once", "--node-id", "n1", "--state-dir"])
            .arg(state_dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(json["telemetry"]["seq"], 0, "{json}");
    }
    assert_eq!(std::fs::read_to_string(&seq_file).unwrap(), before);
    assert!(!other.exists(), "--once created {}", other.display());
}
