//! babeld's local interface and the default route on the live kernel: two
//! network namespaces joined by a veth pair, Debian's babeld in each (one
//! listening on a unix `local-path`, the other on the TCP port of `-G`),
//! and the agent's collector asking both. What the collector reports must
//! be exactly what the network is: one neighbour each, the peer's link-local
//! address on the veth, and the route to the peer's loopback address.
//!
//! Needs root (`ip netns`) and babeld (Debian package `babeld`); without
//! them it prints why and passes.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshtable_agent::collect::babeld::{self, BabelSocket};
use meshtable_proto::MeshProtocol;

fn skip_reason() -> Option<String> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let root = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        == Some("0");
    if !root {
        return Some("network namespaces need root".to_owned());
    }
    if !Path::new("/usr/sbin/babeld").exists() {
        return Some("babeld is not installed (apt-get install babeld)".to_owned());
    }
    None
}

fn run(args: &[&str]) -> Output {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Two namespaces, a veth pair, babeld in each; all torn down on drop.
struct Pair {
    ns: [String; 2],
    dir: tempfile::TempDir,
}

impl Pair {
    fn new() -> Pair {
        let tag = format!(
            "{:x}{:x}",
            std::process::id() & 0xfff,
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
                & 0xfff
        );
        let pair = Pair {
            ns: [format!("mtbab-a{tag}"), format!("mtbab-b{tag}")],
            dir: tempfile::tempdir().unwrap(),
        };
        let [a, b] = &pair.ns;
        run(&["ip", "netns", "add", a]);
        run(&["ip", "netns", "add", b]);
        let (va, vb) = (format!("bva{tag}"), format!("bvb{tag}"));
        run(&[
            "ip", "link", "add", &va, "netns", a, "type", "veth", "peer", "name", &vb, "netns", b,
        ]);
        for (ns, dev, lo) in [(a, &va, "10.97.0.1/32"), (b, &vb, "10.97.0.2/32")] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&["ip", "-n", ns, "addr", "add", lo, "dev", "lo"]);
            run(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        for (i, (ns, dev, local)) in [
            (
                a,
                &va,
                format!("local-path-readwrite {}", pair.sock().display()),
            ),
            (b, &vb, "local-port 33123".to_owned()),
        ]
        .into_iter()
        .enumerate()
        {
            let d = pair.dir.path();
            run(&[
                "ip",
                "netns",
                "exec",
                ns,
                "babeld",
                "-D",
                "-I",
                &d.join(format!("{i}.pid")).to_string_lossy(),
                "-S",
                &d.join(format!("{i}.state")).to_string_lossy(),
                "-L",
                &d.join(format!("{i}.log")).to_string_lossy(),
                "-C",
                &local,
                "-C",
                "redistribute local ip 10.97.0.0/24",
                "-C",
                "redistribute local deny",
                "-h",
                "1",
                "-H",
                "1",
                dev,
            ]);
        }
        pair
    }

    fn sock(&self) -> std::path::PathBuf {
        self.dir.path().join("a.sock")
    }

    /// Runs `f` inside namespace `i` (a thread that joined it).
    fn inside<T: Send + 'static>(&self, i: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/var/run/netns/{}", self.ns[i]);
        thread::spawn(move || {
            let fd = std::fs::File::open(&path).unwrap();
            nix::sched::setns(fd, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for i in 0..2 {
            if let Ok(pid) = std::fs::read_to_string(self.dir.path().join(format!("{i}.pid"))) {
                let _ = Command::new("kill").arg(pid.trim()).status();
            }
        }
        thread::sleep(Duration::from_millis(200));
        for ns in &self.ns {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// The link-local address of the only veth in namespace `ns`, once the
/// kernel has assigned it.
fn link_local(ns: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = run(&["ip", "-n", ns, "-6", "-o", "addr", "show", "scope", "link"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if let Some(addr) = text.split_whitespace().skip_while(|w| *w != "inet6").nth(1) {
            return addr.split('/').next().unwrap().to_owned();
        }
        assert!(Instant::now() < deadline, "no link-local address in {ns}");
        thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn babeld_over_unix_and_tcp_sockets() {
    if let Some(why) = skip_reason() {
        println!("skipped babeld live test: {why}");
        return;
    }
    let pair = Pair::new();
    let sockets = [BabelSocket::Unix(pair.sock()), BabelSocket::parse("33123")];
    let peers = [link_local(&pair.ns[1]), link_local(&pair.ns[0])];
    let routes = ["10.97.0.2/32", "10.97.0.1/32"];
    for i in 0..2 {
        let socket = sockets[i].clone();
        // babeld needs a few hellos (1 s apart) before the neighbour has a
        // cost and the route is installed.
        let deadline = Instant::now() + Duration::from_secs(30);
        let dump = loop {
            let s = socket.clone();
            let d = pair.inside(i, move || babeld::dump(&s));
            if let Ok(ok) = &d
                && ok.routes.iter().any(|r| r.installed)
                && ok
                    .neighbours
                    .iter()
                    .all(|n| n.cost.is_some_and(|c| c < 0xffff))
            {
                break d.unwrap();
            }
            assert!(
                Instant::now() < deadline,
                "babeld in {} never got its route: {d:?}",
                pair.ns[i]
            );
            thread::sleep(Duration::from_millis(300));
        };
        assert_eq!(dump.malformed, 0);
        assert_eq!(dump.neighbours.len(), 1, "{dump:?}");
        let n = &dump.neighbours[0];
        assert_eq!(n.protocol, MeshProtocol::Babel);
        assert_eq!(n.address, peers[i], "the peer's link-local address");
        assert!(n.ifname.starts_with("bv"), "{n:?}");
        assert!(n.rxcost.is_some() && n.txcost.is_some());
        let installed: Vec<_> = dump.routes.iter().filter(|r| r.installed).collect();
        assert_eq!(installed.len(), 1, "{dump:?}");
        assert_eq!(installed[0].prefix, routes[i]);
        assert_eq!(installed[0].via.as_deref(), Some(peers[i].as_str()));
        assert_eq!(installed[0].metric, n.cost.unwrap());
    }
    // Nobody listening: not running, not a panic.
    let gone = BabelSocket::parse("33124");
    let r = pair.inside(0, move || babeld::dump(&gone));
    assert!(
        matches!(r, Err(babeld::BabelError::NotRunning { .. })),
        "{r:?}"
    );
}

/// The default route on the live kernel: in namespace a, a default route
/// via the veth peer, with a worse one through another path; the collector
/// picks the lower metric and names its interface.
#[test]
fn default_route_names_the_uplink() {
    if let Some(why) = skip_reason() {
        println!("skipped default route live test: {why}");
        return;
    }
    let pair = Pair::new();
    let ns = &pair.ns[0];
    let dev = {
        let out = run(&["ip", "-n", ns, "-o", "link", "show", "type", "veth"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        text.split(": ")
            .nth(1)
            .unwrap()
            .split('@')
            .next()
            .unwrap()
            .to_owned()
    };
    run(&["ip", "-n", ns, "addr", "add", "192.0.2.1/24", "dev", &dev]);
    run(&[
        "ip",
        "-n",
        ns,
        "route",
        "add",
        "default",
        "via",
        "192.0.2.254",
        "metric",
        "50",
    ]);
    run(&[
        "ip", "-n", ns, "link", "add", "uplink9", "type", "veth", "peer", "name", "uplink9p",
    ]);
    run(&["ip", "-n", ns, "link", "set", "uplink9p", "up"]);
    run(&["ip", "-n", ns, "link", "set", "uplink9", "up"]);
    run(&[
        "ip",
        "-n",
        ns,
        "addr",
        "add",
        "198.51.100.2/24",
        "dev",
        "uplink9",
    ]);
    run(&[
        "ip",
        "-n",
        ns,
        "route",
        "add",
        "default",
        "via",
        "198.51.100.1",
        "metric",
        "10",
    ]);
    let g = pair.inside(0, || {
        let (links, _) = meshtable_agent::collect::netlink::links(&|_| false).unwrap();
        let name = move |i: u32| links.iter().find(|l| l.index == i).map(|l| l.name.clone());
        meshtable_agent::collect::route::gateway(&name).unwrap()
    });
    let g = g.expect("a default route");
    assert_eq!(
        (g.via.as_deref(), g.ifname.as_str()),
        (Some("198.51.100.1"), "uplink9")
    );
    run(&[
        "ip",
        "-n",
        ns,
        "route",
        "del",
        "default",
        "via",
        "198.51.100.1",
    ]);
    let g = pair.inside(0, || {
        let (links, _) = meshtable_agent::collect::netlink::links(&|_| false).unwrap();
        let name = move |i: u32| links.iter().find(|l| l.index == i).map(|l| l.name.clone());
        meshtable_agent::collect::route::gateway(&name).unwrap()
    });
    assert_eq!(
        g.map(|g| (g.via, g.ifname)),
        Some((Some("192.0.2.254".to_owned()), dev))
    );
}
