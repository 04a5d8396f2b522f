//! Interface counters and the interface list on the live kernel: a veth pair
//! in a fresh network namespace carries a known amount of traffic, and the
//! real `meshtable-agent --once`, run inside the namespace, must report
//! exactly the kernel's counters (`ip -j -s -s link`) and exactly that
//! traffic.
//!
//! The layout keeps every packet accounted for: IPv6 is off (no DAD, router
//! solicitations or MLD), `va` and `vb` are in different subnets, and a
//! permanent neighbour entry sends datagrams for 198.51.100.3 out of `va` to
//! `vb`'s MAC without ARP. `vb` receives them and, not forwarding, drops them
//! silently. So `va` sends exactly N frames and `vb` receives exactly N, and
//! nothing else moves.

use std::fs::File;
use std::net::UdpSocket;
use std::process::{Command, Output};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;

const VA_MAC: &str = "02:00:5e:10:00:0a";
const VB_MAC: &str = "02:00:5e:10:00:0b";
const DATAGRAMS: u64 = 25;
const PAYLOAD: usize = 1000;
/// Ethernet (14) + IPv4 (20) + UDP (8) headers.
const HEADERS: u64 = 42;

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0]).args(&args[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// A network namespace that is deleted, with its veth pair, when dropped.
struct Netns(String);

impl Netns {
    fn new() -> Netns {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let name = format!("mtagent-{}-{nanos}", std::process::id());
        run(&["ip", "netns", "add", &name]);
        Netns(name)
    }

    fn exec(&self, args: &[&str]) -> Output {
        let mut full = vec!["ip", "netns", "exec", &self.0];
        full.extend_from_slice(args);
        run(&full)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// Sends the datagrams from a thread that has entered the namespace.
fn send_datagrams(ns: &str) {
    let ns = ns.to_owned();
    std::thread::spawn(move || {
        let f = File::open(format!("/var/run/netns/{ns}")).unwrap();
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let s = UdpSocket::bind("198.51.100.1:0").unwrap();
        let payload = [0x5a_u8; PAYLOAD];
        for _ in 0..DATAGRAMS {
            assert_eq!(s.send_to(&payload, "198.51.100.3:9").unwrap(), PAYLOAD);
        }
    })
    .join()
    .unwrap();
}

fn by_name<'a>(list: &'a Value, key: &str, name: &str) -> &'a Value {
    list.as_array()
        .unwrap()
        .iter()
        .find(|i| i[key] == name)
        .unwrap_or_else(|| panic!("{name} not in {list}"))
}

#[test]
fn veth_counters_match_the_kernel() {
    if !is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test as root (CAP_NET_ADMIN)"
        );
        println!("skipped: needs root (CAP_NET_ADMIN)");
        return;
    }
    let ns = Netns::new();
    // sysctls of the namespace (no procps needed: /proc/sys/net is per namespace).
    for (key, value) in [
        ("ipv6/conf/all/disable_ipv6", 1),
        ("ipv6/conf/default/disable_ipv6", 1),
        ("ipv4/ip_forward", 0),
    ] {
        ns.exec(&["sh", "-c", &format!("echo {value} > /proc/sys/net/{key}")]);
    }
    ns.exec(&[
        "ip", "link", "add", "va", "address", VA_MAC, "type", "veth", "peer", "name", "vb",
        "address", VB_MAC,
    ]);
    ns.exec(&["ip", "addr", "add", "198.51.100.1/25", "dev", "va"]);
    ns.exec(&["ip", "addr", "add", "198.51.100.129/25", "dev", "vb"]);
    ns.exec(&["ip", "link", "set", "va", "up"]);
    ns.exec(&["ip", "link", "set", "vb", "up"]);
    ns.exec(&[
        "ip",
        "neigh",
        "add",
        "198.51.100.3",
        "lladdr",
        VB_MAC,
        "dev",
        "va",
        "nud",
        "permanent",
    ]);
    send_datagrams(&ns.0);

    let once = ns.exec(&[env!("CARGO_BIN_EXE_meshtable-agent"), "--once"]);
    let agent: Value = serde_json::from_slice(&once.stdout).unwrap();
    let kernel_out = ns.exec(&["ip", "-j", "-s", "-s", "link", "show"]);
    let kernel: Value = serde_json::from_slice(&kernel_out.stdout).unwrap();

    let frame_bytes = DATAGRAMS * (PAYLOAD as u64 + HEADERS);
    // (interface, rx packets, rx bytes, tx packets, tx bytes) we caused.
    let want = [
        ("va", 0, 0, DATAGRAMS, frame_bytes),
        ("vb", DATAGRAMS, frame_bytes, 0, 0),
    ];
    let counters = &agent["telemetry"]["interfaces"];
    for (name, rx_packets, rx_bytes, tx_packets, tx_bytes) in want {
        let a = by_name(counters, "name", name);
        let k = &by_name(&kernel, "ifname", name)["stats64"];
        for (dir, field) in [
            ("rx", "bytes"),
            ("rx", "packets"),
            ("rx", "errors"),
            ("rx", "dropped"),
            ("tx", "bytes"),
            ("tx", "packets"),
            ("tx", "errors"),
            ("tx", "dropped"),
        ] {
            assert_eq!(
                a[format!("{dir}_{field}")],
                k[dir][field],
                "{name} {dir}_{field}: agent vs kernel"
            );
        }
        assert_eq!(
            (
                &a["rx_packets"],
                &a["rx_bytes"],
                &a["tx_packets"],
                &a["tx_bytes"]
            ),
            (
                &Value::from(rx_packets),
                &Value::from(rx_bytes),
                &Value::from(tx_packets),
                &Value::from(tx_bytes)
            ),
            "{name}: traffic other than the {DATAGRAMS} datagrams"
        );
    }

    // The hello describes the pair as the kernel does.
    let hello = &agent["hello"]["interfaces"];
    let va = by_name(hello, "name", "va");
    assert_eq!(va["mac"], VA_MAC);
    assert_eq!(va["kind"], "virtual");
    assert_eq!(va["mtu"], 1500);
    assert_eq!(va["addresses"], serde_json::json!(["198.51.100.1/25"]));
    assert_eq!(
        by_name(hello, "name", "vb")["addresses"],
        serde_json::json!(["198.51.100.129/25"])
    );
    assert_eq!(by_name(hello, "name", "lo")["kind"], "loopback");
    assert!(by_name(hello, "name", "lo").get("mac").is_none());

    // The default node id is the MAC of the veth end with the lower ifindex
    // (no hardware interface in the namespace).
    let first = ["va", "vb"]
        .into_iter()
        .min_by_key(|n| by_name(&kernel, "ifname", n)["ifindex"].as_u64().unwrap())
        .unwrap();
    let mac = by_name(&kernel, "ifname", first)["address"]
        .as_str()
        .unwrap()
        .replace(':', "");
    assert_eq!(agent["telemetry"]["node"], mac.as_str());
}
