//! The `/proc` parsers on captured files, as data: every directory under
//! `tests/fixtures/proc/` is a proc root whose `expected.json` says what the
//! agent must read from it.

use std::path::{Path, PathBuf};
use std::process::Command;

use meshtable_agent::collect::proc::{ProcSnapshot, read_snapshot};

fn fixtures() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proc");
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    assert!(dirs.len() >= 3, "fixtures missing under {}", root.display());
    dirs
}

fn expected(dir: &Path) -> ProcSnapshot {
    let text = std::fs::read_to_string(dir.join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

#[test]
fn each_fixture_parses_to_its_expected_snapshot() {
    for dir in fixtures() {
        let got = read_snapshot(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        assert_eq!(got, expected(&dir), "{}", dir.display());
    }
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let e = read_snapshot(dir.path()).unwrap_err().to_string();
    assert!(e.contains("meminfo"), "{e}");
}

/// The binary reads the same files through `--proc-root`, and what it reads
/// ends up in the telemetry report it prints.
#[test]
fn once_reports_what_the_proc_root_says() {
    for dir in fixtures() {
        let out = Command::new(env!("CARGO_BIN_EXE_meshtable-agent"))
            .args(["--once", "--node-id", "fixture", "--proc-root"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            dir.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let t = &v["telemetry"];
        let want = expected(&dir);
        assert_eq!(t["node"], "fixture");
        assert_eq!(t["seq"], 0);
        assert_eq!(t["dropped"], 0);
        assert_eq!(t["boot_id"], want.boot_id.as_str());
        assert_eq!(t["uptime_ms"], want.uptime_ms);
        assert_eq!(t["mem_total"], want.mem_total);
        assert_eq!(t["mem_available"], want.mem_available);
        assert_eq!(t["cpu"], serde_json::to_value(&want.cpu).unwrap());
        let load: [f32; 3] = serde_json::from_value(t["load"].clone()).unwrap();
        assert_eq!(load, want.load);
    }
}
