//! Network namespaces for tests that cut a router off the network: a
//! namespace joined to this host by a veth pair ([`NetnsLink`]), a TCP relay
//! from the host end of the pair to a broker on loopback ([`Relay`]), and an
//! agent process inside the namespace ([`NetnsAgent`]).
//!
//! All of it needs root (`ip netns add`); [`netns_unavailable`] says why a
//! test must skip.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use tempfile::TempDir;

use crate::controller::{isolate_env, read_log};
use crate::{binaries, tail};

/// TCP retransmissions before the kernel gives a connection up, inside the
/// namespace (`net.ipv4.tcp_retries2`, per namespace; the default 15 takes
/// about 15 minutes). With 3, a connection whose peer is gone fails after
/// about 3 s of unacknowledged data, so a test outage is noticed by the
/// agent as a router would notice a real one, only sooner.
pub const NETNS_TCP_RETRIES2: u32 = 3;

/// Why network-namespace tests cannot run here, or `None` when they can:
/// they need root and `ip` (Debian package iproute2).
pub fn netns_unavailable() -> Option<String> {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    if uid != "0" {
        return Some(format!(
            "network namespaces need root (effective uid {uid})"
        ));
    }
    match Command::new("ip")
        .arg("-V")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => None,
        _ => Some("`ip` is missing (install iproute2)".to_owned()),
    }
}

/// Runs `ip ARGS`; panics with its error output when it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run ip {args:?}: {e}"));
    assert!(
        out.status.success(),
        "ip {} failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// A network namespace joined to this host by a veth pair with a /30 on it:
/// `host_addr` on the host end, `ns_addr` on the namespace end, which is the
/// namespace's only way out. Deleted (with the pair) on drop.
#[derive(Debug)]
pub struct NetnsLink {
    name: String,
    host_if: String,
    ns_if: String,
    host_addr: Ipv4Addr,
    ns_addr: Ipv4Addr,
}

impl NetnsLink {
    /// Creates the namespace and the pair, both ends up, and sets
    /// [`NETNS_TCP_RETRIES2`] in the namespace.
    ///
    /// Names and the subnet (10.213.X.Y/30) are unique per process and call.
    ///
    /// # Panics
    ///
    /// When `ip` fails (not root, no veth support).
    pub fn create() -> NetnsLink {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        assert!(n < 64, "at most 64 namespaces per test process");
        let pid = std::process::id();
        // Interface names are at most 15 bytes.
        let tag = format!("{:x}{n:x}", pid & 0xffff);
        let third = u8::try_from(pid % 250).expect("below 250");
        let fourth = u8::try_from(n * 4).expect("below 256");
        let link = NetnsLink {
            name: format!("meshtable-{tag}"),
            host_if: format!("mth{tag}"),
            ns_if: format!("mtn{tag}"),
            host_addr: Ipv4Addr::new(10, 213, third, fourth + 1),
            ns_addr: Ipv4Addr::new(10, 213, third, fourth + 2),
        };
        // Left over from a killed run of a process with the same pid.
        let _ = Command::new("ip")
            .args(["netns", "del", &link.name])
            .stderr(Stdio::null())
            .status();
        let _ = Command::new("ip")
            .args(["link", "del", &link.host_if])
            .stderr(Stdio::null())
            .status();
        ip(&["netns", "add", &link.name]);
        ip(&[
            "link",
            "add",
            &link.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &link.ns_if,
            "netns",
            &link.name,
        ]);
        ip(&[
            "addr",
            "add",
            &format!("{}/30", link.host_addr),
            "dev",
            &link.host_if,
        ]);
        ip(&["link", "set", &link.host_if, "up"]);
        ip(&[
            "-n",
            &link.name,
            "addr",
            "add",
            &format!("{}/30", link.ns_addr),
            "dev",
            &link.ns_if,
        ]);
        ip(&["-n", &link.name, "link", "set", "lo", "up"]);
        ip(&["-n", &link.name, "link", "set", &link.ns_if, "up"]);
        let sysctl = format!("net.ipv4.tcp_retries2={NETNS_TCP_RETRIES2}");
        ip(&["netns", "exec", &link.name, "sysctl", "-q", "-w", &sysctl]);
        link
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The address of the host end.
    pub fn host_addr(&self) -> Ipv4Addr {
        self.host_addr
    }

    /// The address of the namespace end.
    pub fn ns_addr(&self) -> Ipv4Addr {
        self.ns_addr
    }

    /// Takes the namespace end of the pair down (`false`): the namespace
    /// has no route out and its connections stall; or brings it up again.
    pub fn set_up(&self, up: bool) {
        let state = if up { "up" } else { "down" };
        ip(&["-n", &self.name, "link", "set", &self.ns_if, state]);
    }

    /// `ip netns exec NAME program`, to run `program` inside the namespace
    /// (`ip` execs it: the child's pid is the program's).
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }
}

impl Drop for NetnsLink {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the pair, and with it
        // the host end.
        for args in [
            vec!["netns", "del", self.name.as_str()],
            vec!["link", "del", self.host_if.as_str()],
        ] {
            let _ = Command::new("ip")
                .args(&args)
                .stdin(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// A TCP relay from `listen` to `target`, so that a broker bound to
/// loopback is reachable from a namespace through the host end of its veth
/// pair. One connection at a time, as from one agent: a new connection
/// closes the ones before it (as a broker's session takeover would), so a
/// stale connection from before an outage never lingers. Stops on drop.
#[derive(Debug)]
pub struct Relay {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    accepted: Arc<AtomicU32>,
}

impl Relay {
    /// Listens on `listen` (port 0: any free port) and relays every
    /// connection to `target`.
    ///
    /// # Panics
    ///
    /// When `listen` cannot be bound.
    pub fn start(listen: SocketAddr, target: SocketAddr) -> Relay {
        let listener = TcpListener::bind(listen)
            .unwrap_or_else(|e| panic!("relay: cannot bind {listen}: {e}"));
        let addr = listener.local_addr().expect("local address of a listener");
        let stop = Arc::new(AtomicBool::new(false));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let accepted = Arc::new(AtomicU32::new(0));
        let (stop2, open2, accepted2) = (stop.clone(), open.clone(), accepted.clone());
        thread::spawn(move || {
            for client in listener.incoming() {
                if stop2.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(client) = client else { continue };
                accepted2.fetch_add(1, Ordering::SeqCst);
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                {
                    let mut open = open2.lock().expect("relay lock");
                    for s in open.drain(..) {
                        let _ = s.shutdown(Shutdown::Both);
                    }
                    for s in [&client, &server] {
                        if let Ok(s) = s.try_clone() {
                            open.push(s);
                        }
                    }
                }
                pipe(&client, &server);
                pipe(&server, &client);
            }
        });
        Relay {
            addr,
            stop,
            open,
            accepted,
        }
    }

    /// Where the relay listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u32 {
        self.accepted.load(Ordering::SeqCst)
    }
}

/// Copies `from` to `to` on a thread until either side closes, then shuts
/// both down.
fn pipe(from: &TcpStream, to: &TcpStream) {
    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
        return;
    };
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
    });
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        for s in self.open.lock().expect("relay lock").drain(..) {
            let _ = s.shutdown(Shutdown::Both);
        }
    }
}

/// A `meshtable-agent` running inside a [`NetnsLink`]'s namespace, killed
/// (SIGKILL) on drop. Its logs go to files in a temporary directory; the
/// tail is printed when the test panics.
#[derive(Debug)]
pub struct NetnsAgent {
    child: Option<Child>,
    dir: TempDir,
    runs: u32,
}

impl NetnsAgent {
    /// Starts `ip netns exec NS meshtable-agent ARGS`.
    ///
    /// # Panics
    ///
    /// When the process cannot be started.
    pub fn start(link: &NetnsLink, args: &[&str]) -> NetnsAgent {
        let dir = tempfile::Builder::new()
            .prefix("meshtable-netns-agent-")
            .tempdir()
            .expect("create a temporary directory");
        let mut agent = NetnsAgent {
            child: None,
            dir,
            runs: 0,
        };
        agent.restart(link, args);
        agent
    }

    /// Starts the agent again (after [`NetnsAgent::kill`]); the logs of
    /// every run go to the same files.
    ///
    /// # Panics
    ///
    /// When it is still running or cannot be started.
    pub fn restart(&mut self, link: &NetnsLink, args: &[&str]) {
        assert!(self.child.is_none(), "the agent is still running");
        let bin = &binaries().agent;
        let mut cmd = link.command(bin);
        cmd.args(args);
        isolate_env(&mut cmd);
        let log = |name: &str| -> io::Result<File> {
            File::options()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
        };
        cmd.stdin(Stdio::null())
            .stdout(log("agent.stdout.log").expect("open a log file"))
            .stderr(log("agent.stderr.log").expect("open a log file"));
        self.runs += 1;
        self.child =
            Some(cmd.spawn().unwrap_or_else(|e| {
                panic!("cannot start {} in {}: {e}", bin.display(), link.name)
            }));
    }

    /// Kills the agent with SIGKILL and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // It may have exited on its own; assert_running reports that.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Panics (with the log tail) unless the agent is still running.
    pub fn assert_running(&mut self) {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().expect("poll the agent process"));
        if let Some(status) = status {
            panic!("the agent exited ({status}):\n{}", self.log_tail());
        }
    }

    /// Everything the agent logged so far (all runs).
    pub fn stderr(&self) -> String {
        read_log(&self.dir.path().join("agent.stderr.log"))
    }

    /// The last lines of the agent's logs, for panic messages.
    pub fn log_tail(&self) -> String {
        format!(
            "--- netns agent ({} runs) stdout ---\n{}\n--- netns agent stderr ---\n{}",
            self.runs,
            tail(&read_log(&self.dir.path().join("agent.stdout.log")), 10),
            tail(&self.stderr(), 40)
        )
    }
}

impl Drop for NetnsAgent {
    fn drop(&mut self) {
        let had_child = self.child.is_some();
        self.kill();
        if had_child && thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}
