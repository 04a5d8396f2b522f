//! The agent links no server code, and no TLS stack unless built with the
//! `tls` feature (DESIGN.md invariant): `cargo tree -p meshtable-agent -e
//! normal` must not list any of [`FORBIDDEN`]; with `--features tls` it may
//! list rustls (with ring), but still no server code, no OpenSSL, no
//! native-tls and no aws-lc.

use std::process::Command;

const FORBIDDEN: &[&str] = &[
    "sea-orm",
    "sqlx",
    "axum",
    "ssh2",
    "rustls",
    "openssl",
    "native-tls",
    // The PEM loader (crates/pem) comes with the `tls` feature only.
    "meshtable-pem",
];

/// With `--features tls`: the server crates and the TLS stacks that need
/// C libraries (`openssl-probe`, which only looks for certificate
/// directories, is allowed).
const FORBIDDEN_WITH_TLS: &[&str] = &[
    "sea-orm",
    "sqlx",
    "axum",
    "ssh2",
    "openssl-sys",
    "native-tls",
    "aws-lc",
];

/// The crates `cargo tree` lists for the agent's normal dependencies, with
/// `extra` arguments.
fn tree(extra: &[&str]) -> Vec<String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "tree",
            "-p",
            "meshtable-agent",
            "-e",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .args(extra)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crates: Vec<String> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    // The listing is real: it has the agent's own dependencies.
    for must in ["meshtable-proto", "rumqttc", "netlink-packet-route"] {
        assert!(
            crates.iter().any(|c| c == must),
            "{must} missing from:\n{stdout}"
        );
    }
    crates
}

fn bad<'a>(crates: &'a [String], forbidden: &[&str]) -> Vec<&'a str> {
    crates
        .iter()
        .map(String::as_str)
        .filter(|c| forbidden.iter().any(|f| c.contains(f)))
        .collect()
}

#[test]
fn agent_links_no_server_or_tls_crates() {
    let crates = tree(&[]);
    let bad = bad(&crates, FORBIDDEN);
    assert!(bad.is_empty(), "the agent links {bad:?}");
}

#[test]
fn the_tls_build_adds_rustls_and_no_server_crates() {
    let crates = tree(&["--features", "tls"]);
    for must in ["rustls", "ring", "meshtable-pem"] {
        assert!(
            crates.iter().any(|c| c == must),
            "{must} missing: {crates:?}"
        );
    }
    let bad = bad(&crates, FORBIDDEN_WITH_TLS);
    assert!(bad.is_empty(), "the tls agent links {bad:?}");
}
