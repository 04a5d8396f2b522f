//! The OpenWrt packaging in `deploy/openwrt/`: its shell scripts pass
//! shellcheck, the init script's UCI-to-TOML mapping gives configurations
//! the real agent accepts (or refuses by name), under dash and under busybox
//! ash (OpenWrt's shell), and nothing the agent links needs 64-bit atomics,
//! which 32-bit MIPS lacks.
//!
//! A missing tool (shellcheck, busybox, nightly with rust-src) makes its
//! part print "skipped ..." instead; `.ci/run` installs shellcheck and
//! busybox.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use meshtable_tests::binaries;

fn root() -> PathBuf {
    binaries().workspace_root.clone()
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs `cmd` in the workspace root; panics with its output unless it
/// succeeds; returns its standard output.
fn run(what: &str, cmd: &mut Command) -> String {
    let out = cmd
        .current_dir(root())
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn openwrt_scripts_pass_shellcheck() {
    if !have("shellcheck") {
        eprintln!("skipped shellcheck: not installed (apt-get install shellcheck)");
        return;
    }
    let scripts = [
        "deploy/openwrt/files/meshtable-agent.init",
        "deploy/openwrt/cross-build.sh",
        "deploy/openwrt/check-atomics.sh",
        "deploy/openwrt/test/uci-toml.sh",
        "deploy/openwrt/test/uci-functions.sh",
        "agent/bench/footprint.sh",
    ];
    for s in scripts {
        assert!(root().join(s).is_file(), "{s} is missing");
    }
    run(
        "shellcheck",
        Command::new("shellcheck").arg("-x").args(scripts),
    );
}

#[test]
fn uci_config_maps_onto_the_agent_config() {
    let agent = &binaries().agent;
    let script = Path::new("deploy/openwrt/test/uci-toml.sh");
    let mut shells: Vec<Vec<&str>> = vec![vec!["sh"]];
    if have("busybox") {
        shells.push(vec!["busybox", "sh"]);
    } else {
        eprintln!("skipped the busybox ash run: busybox not installed (apt-get install busybox)");
    }
    for shell in shells {
        let out = run(
            &format!("{} {}", shell.join(" "), script.display()),
            Command::new(shell[0])
                .args(&shell[1..])
                .arg(script)
                .arg(agent),
        );
        assert!(out.contains(" passed, 0 failed"), "{shell:?}: {out}");
        assert!(!out.contains("FAIL"), "{shell:?}: {out}");
    }
}

#[test]
fn agent_links_no_64_bit_atomics() {
    // check-atomics.sh runs `cargo +nightly`: the toolchain of this test's
    // cargo must not leak into it.
    let out = run(
        "deploy/openwrt/check-atomics.sh",
        Command::new("deploy/openwrt/check-atomics.sh")
            .env_remove("RUSTUP_TOOLCHAIN")
            .env_remove("RUSTC")
            .env_remove("CARGO")
            .env_remove("CARGO_TARGET_DIR"),
    );
    eprintln!("{out}");
    assert!(out.contains("ok: every use is gated"), "{out}");
}
