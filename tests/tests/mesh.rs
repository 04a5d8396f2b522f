//! The mesh testbed: four routers in network namespaces, meshed by veth
//! pairs in a chain (1-2, 2-3, 3-4) with one cross link (2-4), each running
//! Debian's babeld and a meshtable-agent reporting to one controller.
//!
//! The controller must learn exactly the links babeld sees, with their
//! costs: the truth is taken from each babeld's own `dump` over its local
//! socket (read here, by the test, independently of the agent), and
//! compared with the controller's NetJSON topology
//! (`GET /api/v1/networks/{network}/topology`): one link per direction,
//! source the reporting node, target the node whose interface has the
//! neighbour's link-local address, cost babeld's cost.
//!
//! Each namespace also has an uplink veth to the host, through which a TCP
//! relay carries the agent's connection to the broker on loopback (see
//! `NetnsLink` and `Relay` in the harness). babeld runs on the mesh
//! interfaces only.
//!
//! Needs root and babeld (Debian package `babeld`, installed by
//! `.ci/run`); without them it prints "skipped mesh testbed: ..." and
//! passes.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use meshtable_proto::BrokerUrl;
use meshtable_tests::{
    Backend, Controller, NetnsAgent, NetnsLink, Relay, netns_unavailable, unique, wait_for,
};

/// Routers in the testbed.
const NODES: usize = 4;
/// The mesh links: a chain and one cross link.
const LINKS: [(usize, usize); 4] = [(0, 1), (1, 2), (2, 3), (1, 3)];
/// How long babeld and the controller may take to agree.
const CONVERGE: Duration = Duration::from_secs(120);

fn skip() -> bool {
    let why = netns_unavailable().or_else(|| {
        (!Path::new("/usr/sbin/babeld").exists())
            .then(|| "babeld is not installed (apt-get install babeld)".to_owned())
    });
    match why {
        Some(why) => {
            println!("skipped mesh testbed: {why}");
            true
        }
        None => false,
    }
}

#[test]
fn mesh_embedded_sqlite() {
    if skip() {
        return;
    }
    testbed(&Backend::embedded());
}

#[test]
fn mesh_service_mosquitto_postgres() {
    if skip() {
        return;
    }
    let Some(backend) = Backend::service() else {
        return;
    };
    testbed(&backend);
}

fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run ip");
    assert!(
        out.status.success(),
        "ip {} failed: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

fn broker_addr(mqtt_url: &str) -> SocketAddr {
    let b = BrokerUrl::parse(mqtt_url).expect("the controller's broker URL parses");
    (b.host.as_str(), b.port)
        .to_socket_addrs()
        .expect("resolve the broker")
        .next()
        .expect("the broker has an address")
}

/// babeld in one namespace, killed on drop.
struct Babeld {
    pid_file: PathBuf,
    socket: PathBuf,
    log: PathBuf,
}

impl Babeld {
    fn start(ns: &str, dir: &Path, i: usize, ifaces: &[String]) -> Babeld {
        let b = Babeld {
            pid_file: dir.join(format!("babeld{i}.pid")),
            socket: dir.join(format!("babeld{i}.sock")),
            log: dir.join(format!("babeld{i}.log")),
        };
        let state = dir.join(format!("babeld{i}.state"));
        let local = format!("local-path {}", b.socket.display());
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns, "babeld", "-D"])
            .arg("-I")
            .arg(&b.pid_file)
            .arg("-S")
            .arg(&state)
            .arg("-L")
            .arg(&b.log)
            .args(["-C", &local])
            .args(["-C", "redistribute local ip 10.96.0.0/24"])
            .args(["-C", "redistribute local deny"])
            .args(["-h", "1", "-H", "1"])
            .args(ifaces);
        let out = cmd.stdin(Stdio::null()).output().expect("run babeld");
        assert!(
            out.status.success(),
            "babeld in {ns} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        b
    }

    /// babeld's neighbours, from its own dump: (address, interface, cost).
    /// Unreachable neighbours (cost 65535) are not links.
    fn neighbours(&self) -> Result<Vec<(String, String, u32)>, String> {
        let text = babel_dump(&self.socket).map_err(|e| format!("babeld dump: {e}"))?;
        Ok(text
            .lines()
            .filter(|l| l.starts_with("add neighbour "))
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                let get = |k: &str| w.iter().position(|x| *x == k).and_then(|p| w.get(p + 1));
                Some((
                    get("address")?.to_string(),
                    get("if")?.to_string(),
                    get("cost")?.parse().ok()?,
                ))
            })
            .filter(|(_, _, cost)| *cost < 0xffff)
            .collect())
    }
}

impl Drop for Babeld {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.pid_file) {
            let _ = Command::new("kill").arg(pid.trim()).status();
        }
        if std::thread::panicking() {
            eprintln!(
                "--- {} ---\n{}",
                self.log.display(),
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
        }
    }
}

/// `dump` over babeld's unix socket (its path is reachable from any network
/// namespace): the text between the greeting's `ok` and the dump's `ok`.
fn babel_dump(socket: &Path) -> std::io::Result<String> {
    let s = UnixStream::connect(socket)?;
    s.set_read_timeout(Some(Duration::from_secs(2)))?;
    let mut r = BufReader::new(s);
    let mut line = String::new();
    let mut read_to_ok = |r: &mut BufReader<UnixStream>| -> std::io::Result<String> {
        let mut text = String::new();
        loop {
            line.clear();
            if r.read_line(&mut line)? == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            if line.trim_end() == "ok" {
                return Ok(text);
            }
            text.push_str(&line);
        }
    };
    read_to_ok(&mut r)?;
    r.get_mut().write_all(b"dump\n")?;
    read_to_ok(&mut r)
}

/// The link-local addresses of namespace `ns`'s interfaces: (address,
/// interface).
fn link_locals(ns: &str) -> Vec<(String, String)> {
    let out = Command::new("ip")
        .args(["-n", ns, "-6", "-o", "addr", "show", "scope", "link"])
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let ifname = w.get(1)?.to_string();
            let addr = w
                .iter()
                .position(|x| *x == "inet6")
                .and_then(|p| w.get(p + 1))?;
            Some((addr.split('/').next()?.to_owned(), ifname))
        })
        .collect()
}

/// A directed link: (source node, target node, source interface, cost).
type Link = (String, String, String, u64);

fn testbed(backend: &Backend) {
    let ctl = Controller::start(backend);
    let net = unique("mesh");
    ctl.add_network(&net, true);
    let nodes: Vec<String> = (0..NODES).map(|i| unique(&format!("node{i}"))).collect();
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let uplinks: Vec<NetnsLink> = (0..NODES).map(|_| NetnsLink::create()).collect();
    let ns = |i: usize| uplinks[i].name().to_owned();

    // The mesh: veth pairs between the namespaces, named mIJ (in I, to J).
    let mut ifaces: Vec<Vec<String>> = vec![Vec::new(); NODES];
    let tag = std::process::id() & 0xfff;
    for (a, b) in LINKS {
        let (ia, ib) = (format!("m{a}{b}x{tag:x}"), format!("m{b}{a}x{tag:x}"));
        ip(&[
            "link",
            "add",
            &ia,
            "netns",
            &ns(a),
            "type",
            "veth",
            "peer",
            "name",
            &ib,
            "netns",
            &ns(b),
        ]);
        ip(&["-n", &ns(a), "link", "set", &ia, "up"]);
        ip(&["-n", &ns(b), "link", "set", &ib, "up"]);
        ifaces[a].push(ia);
        ifaces[b].push(ib);
    }
    for (i, _) in nodes.iter().enumerate() {
        let lo = format!("10.96.0.{}/32", i + 1);
        ip(&["-n", &ns(i), "addr", "add", &lo, "dev", "lo"]);
    }
    // babeld needs the link-local addresses (IPv6 DAD done) to start.
    wait_for(
        "link-local addresses on every mesh interface",
        CONVERGE,
        || {
            let missing: Vec<String> = (0..NODES)
                .flat_map(|i| {
                    let have = link_locals(&ns(i));
                    ifaces[i]
                        .iter()
                        .filter(|f| !have.iter().any(|(_, n)| n == *f))
                        .cloned()
                        .collect::<Vec<_>>()
                })
                .collect();
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("none yet on {missing:?}"))
            }
        },
    );
    let babelds: Vec<Babeld> = (0..NODES)
        .map(|i| Babeld::start(&ns(i), dir.path(), i, &ifaces[i]))
        .collect();

    let broker = broker_addr(ctl.mqtt_url());
    let relays: Vec<Relay> = uplinks
        .iter()
        .map(|l| Relay::start(SocketAddr::new(l.host_addr().into(), 0), broker))
        .collect();
    let mut agents: Vec<NetnsAgent> = (0..NODES)
        .map(|i| {
            let url = format!("mqtt://{}", relays[i].addr());
            let state = dir.path().join(format!("state{i}"));
            let socket = babelds[i].socket.to_string_lossy().into_owned();
            let none = dir.path().join("none").to_string_lossy().into_owned();
            NetnsAgent::start(
                &uplinks[i],
                &[
                    "--mqtt-url",
                    &url,
                    "--network",
                    &net,
                    "--node-id",
                    &nodes[i],
                    "--interval",
                    "1s",
                    "--state-dir",
                    &state.to_string_lossy(),
                    "--babeld-socket",
                    &socket,
                    "--salt-file",
                    &none,
                    "--dnsmasq-leases",
                    &none,
                    "--odhcpd-leases",
                    &none,
                ],
            )
        })
        .collect();

    // What babeld sees, as directed links between nodes.
    let owners: Vec<Vec<(String, String)>> = (0..NODES).map(|i| link_locals(&ns(i))).collect();
    let owner = |addr: &str| {
        (0..NODES)
            .find(|&j| owners[j].iter().any(|(a, _)| a == addr))
            .map(|j| nodes[j].clone())
    };
    let babel_links = || -> Result<BTreeSet<Link>, String> {
        let mut set = BTreeSet::new();
        for (i, b) in babelds.iter().enumerate() {
            for (addr, ifname, cost) in b.neighbours()? {
                let target = owner(&addr).ok_or(format!("{addr} is no node's"))?;
                set.insert((nodes[i].clone(), target, ifname, u64::from(cost)));
            }
        }
        Ok(set)
    };
    let want_pairs: BTreeSet<(String, String)> = LINKS
        .iter()
        .flat_map(|&(a, b)| {
            [
                (nodes[a].clone(), nodes[b].clone()),
                (nodes[b].clone(), nodes[a].clone()),
            ]
        })
        .collect();

    let path = format!("/api/v1/networks/{net}/topology");
    let agreed = wait_for(
        "the controller's topology to equal babeld's links",
        CONVERGE,
        || {
            for a in &mut agents {
                a.assert_running();
            }
            let truth = babel_links()?;
            let pairs: BTreeSet<(String, String)> =
                truth.iter().map(|l| (l.0.clone(), l.1.clone())).collect();
            if pairs != want_pairs {
                return Err(format!("babeld has not converged: {truth:?}"));
            }
            let (status, body) = ctl.try_get(&path)?;
            if status != 200 {
                return Err(format!("GET {path}: {status} {body}"));
            }
            let v: serde_json::Value =
                serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
            let got: BTreeSet<Link> = v["links"]
                .as_array()
                .ok_or(format!("no links array: {v}"))?
                .iter()
                .map(|l| {
                    (
                        l["source"].as_str().unwrap_or("?").to_owned(),
                        l["target"].as_str().unwrap_or("?").to_owned(),
                        l["properties"]["ifname"].as_str().unwrap_or("?").to_owned(),
                        l["cost"].as_f64().map_or(u64::MAX, |c| c as u64),
                    )
                })
                .collect();
            if got == truth {
                Ok((v, truth))
            } else {
                Err(format!("controller {got:?}\n  babeld {truth:?}"))
            }
        },
    );
    let (v, truth) = agreed;
    assert_eq!(v["type"], "NetworkGraph");
    assert_eq!(v["protocol"], "babel");
    assert_eq!(
        truth.len(),
        2 * LINKS.len(),
        "each link seen from both ends"
    );
    for n in &nodes {
        assert!(
            v["nodes"]
                .as_array()
                .expect("nodes")
                .iter()
                .any(|x| x["id"] == *n),
            "{n} is a node of the graph: {v}"
        );
    }
    for l in v["links"].as_array().expect("links") {
        assert_eq!(l["properties"]["protocol"], "babel");
        let cost = l["cost"].as_f64().expect("a cost");
        assert_eq!(
            l["properties"]["babel_cost"].as_f64(),
            Some(cost),
            "the cost is babeld's: {l}"
        );
    }
    drop(agents);
}
