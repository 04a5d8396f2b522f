//! Building the real binaries once per test process.
//!
//! The test binary runs `cargo build -p meshtable -p meshtable-agent --bins`
//! itself. That does not deadlock under `cargo test`: cargo holds the build
//! directory's lock only while it compiles, and releases it before it runs
//! the test binaries. While another cargo builds in the same target
//! directory, the nested build waits for it ("Blocking waiting for file
//! lock"), like any build would.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// The two binaries under test and where the workspace is.
#[derive(Debug)]
pub struct Binaries {
    /// `target/debug/meshtable`, the controller.
    pub controller: PathBuf,
    /// `target/debug/meshtable-agent`, the agent.
    pub agent: PathBuf,
    /// The workspace root (where the root `Cargo.toml` is).
    pub workspace_root: PathBuf,
}

/// Builds the controller and the agent (once per process) and returns where
/// they are.
///
/// Cargo is `$CARGO` (set by `cargo test`), else `cargo` from `PATH`; the
/// target directory is the one `cargo metadata` reports, which honours
/// `CARGO_TARGET_DIR` and cargo's configuration.
///
/// # Panics
///
/// If cargo fails, with its output.
pub fn binaries() -> &'static Binaries {
    // A failed build is kept too: every test of the process reports it,
    // without building again.
    static BINARIES: OnceLock<Result<Binaries, String>> = OnceLock::new();
    match BINARIES.get_or_init(build) {
        Ok(b) => b,
        Err(e) => panic!("{e}"),
    }
}

fn cargo() -> OsString {
    env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo"))
}

fn build() -> Result<Binaries, String> {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .join("Cargo.toml");
    let metadata = run(Command::new(cargo())
        .args([
            "metadata",
            "--format-version",
            "1",
            "--no-deps",
            "--manifest-path",
        ])
        .arg(&manifest))?;
    let metadata: serde_json::Value = serde_json::from_slice(&metadata)
        .map_err(|e| format!("cargo metadata printed no JSON: {e}"))?;
    let path_of = |key: &str| {
        metadata[key]
            .as_str()
            .map(PathBuf::from)
            .ok_or_else(|| format!("cargo metadata has no {key}"))
    };
    let workspace_root = path_of("workspace_root")?;
    let mut out_dir = path_of("target_directory")?;
    if let Some(triple) = env::var_os("CARGO_BUILD_TARGET") {
        out_dir.push(triple);
    }
    out_dir.push("debug");

    run(Command::new(cargo())
        .args([
            "build",
            "-p",
            "meshtable",
            "-p",
            "meshtable-agent",
            "--bins",
            "--manifest-path",
        ])
        .arg(&manifest))?;

    let binaries = Binaries {
        controller: out_dir.join("meshtable"),
        agent: out_dir.join("meshtable-agent"),
        workspace_root,
    };
    for bin in [&binaries.controller, &binaries.agent] {
        if !bin.is_file() {
            return Err(format!(
                "cargo built the binaries but {} does not exist",
                bin.display()
            ));
        }
    }
    Ok(binaries)
}

/// Runs a cargo command to completion and returns its stdout.
fn run(cmd: &mut Command) -> Result<Vec<u8>, String> {
    let shown = format!("{cmd:?}");
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {shown}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{shown} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}
