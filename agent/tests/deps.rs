//! The agent links no server code and no TLS stack (DESIGN.md invariant):
//! `cargo tree -p meshtable-agent -e normal` must not list any of these.

use std::process::Command;

const FORBIDDEN: &[&str] = &[
    "sea-orm",
    "sqlx",
    "axum",
    "ssh2",
    "rustls",
    "openssl",
    "native-tls",
];

#[test]
fn agent_links_no_server_or_tls_crates() {
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
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let crates: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // The listing is real: it has the agent's own dependencies.
    for must in ["meshtable-proto", "rumqttc", "netlink-packet-route"] {
        assert!(crates.contains(&must), "{must} missing from:\n{stdout}");
    }
    let bad: Vec<&str> = crates
        .iter()
        .copied()
        .filter(|c| FORBIDDEN.iter().any(|f| c.contains(f)))
        .collect();
    assert!(bad.is_empty(), "the agent links {bad:?}");
}
