//! The agent process guard, and `meshtable-agent --once`.

use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::controller::{isolate_env, read_log};
use crate::{binaries, tail};

/// How long `meshtable-agent --once` may take.
const ONCE_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `meshtable-agent`, killed (SIGKILL) on drop.
///
/// Its standard output and error go to files in a temporary directory; the
/// tail is printed when the test panics.
#[derive(Debug)]
pub struct Agent {
    child: Option<Child>,
    dir: TempDir,
    network: String,
    node: String,
}

impl Agent {
    /// Starts `meshtable-agent --mqtt-url URL --network NET --node-id NODE
    /// --interval INTERVAL --state-dir STATE_DIR`.
    ///
    /// `state_dir` keeps the node's telemetry sequence across agent restarts
    /// within a boot: give a restarted agent the same one, and every agent
    /// that runs at the same time its own (the agent locks it).
    ///
    /// # Panics
    ///
    /// When the process cannot be started.
    pub fn start(
        mqtt_url: &str,
        network: &str,
        node: &str,
        interval: &str,
        state_dir: &Path,
    ) -> Agent {
        Agent::start_with(mqtt_url, network, node, interval, state_dir, &[])
    }

    /// Like [`Agent::start`], with extra command-line arguments (e.g.
    /// `--identity-dir DIR` for an enrolled agent).
    ///
    /// # Panics
    ///
    /// As [`Agent::start`].
    pub fn start_with(
        mqtt_url: &str,
        network: &str,
        node: &str,
        interval: &str,
        state_dir: &Path,
        extra_args: &[&str],
    ) -> Agent {
        let bin = &binaries().agent;
        let dir = tempfile::Builder::new()
            .prefix("meshtable-e2e-agent-")
            .tempdir()
            .expect("create a temporary directory");
        let mut cmd = Command::new(bin);
        cmd.args(["--mqtt-url", mqtt_url])
            .args(["--network", network])
            .args(["--node-id", node])
            .args(["--interval", interval])
            .arg("--state-dir")
            .arg(state_dir)
            .args(extra_args);
        isolate_env(&mut cmd);
        cmd.stdin(Stdio::null())
            .stdout(File::create(dir.path().join("agent.stdout.log")).expect("create a log file"))
            .stderr(File::create(dir.path().join("agent.stderr.log")).expect("create a log file"));
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        Agent {
            child: Some(child),
            dir,
            network: network.to_owned(),
            node: node.to_owned(),
        }
    }

    /// The network the agent reports to.
    pub fn network(&self) -> &str {
        &self.network
    }

    /// The agent's node id.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The process id.
    ///
    /// # Panics
    ///
    /// After [`Agent::kill`].
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("the agent is running").id()
    }

    /// Kills the agent with SIGKILL (no clean disconnect: the broker must
    /// publish its last will) and reaps it.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The agent may have exited on its own; assert_running reports that.
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Freezes the agent (SIGSTOP): its connection stays open, so no last
    /// will is published, and it stops reporting.
    pub fn pause(&self) {
        self.signal("STOP");
    }

    /// Lets a paused agent go on (SIGCONT).
    pub fn resume(&self) {
        self.signal("CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().to_string();
        let status = Command::new("kill")
            .args(["-s", sig, &pid])
            .status()
            .unwrap_or_else(|e| panic!("cannot run kill -s {sig} {pid}: {e}"));
        assert!(status.success(), "kill -s {sig} {pid} failed: {status}");
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

    /// Everything the agent logged so far.
    pub fn stderr(&self) -> String {
        read_log(&self.dir.path().join("agent.stderr.log"))
    }

    /// The last lines of the agent's logs, for panic messages.
    pub fn log_tail(&self) -> String {
        format!(
            "--- agent {} stdout ---\n{}\n--- agent {} stderr ---\n{}",
            self.node,
            tail(&read_log(&self.dir.path().join("agent.stdout.log")), 10),
            self.node,
            tail(&self.stderr(), 30)
        )
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let had_child = self.child.is_some();
        self.kill();
        if had_child && thread::panicking() {
            eprintln!("{}", self.log_tail());
        }
    }
}

/// Runs `meshtable-agent --once ARGS` and returns what it prints,
/// `{"hello": Hello, "telemetry": Telemetry}`.
///
/// # Panics
///
/// When it fails, takes longer than 30 s, or prints something else.
pub fn agent_once(args: &[&str]) -> Value {
    let bin = &binaries().agent;
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let stdout = dir.path().join("stdout");
    let stderr = dir.path().join("stderr");
    let mut cmd = Command::new(bin);
    cmd.arg("--once").args(args);
    isolate_env(&mut cmd);
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).expect("create a log file"))
        .stderr(File::create(&stderr).expect("create a log file"))
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("poll meshtable-agent --once") {
            break status;
        }
        if start.elapsed() > ONCE_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "meshtable-agent --once {args:?} did not finish in {ONCE_TIMEOUT:?}:\n{}",
                tail(&read_log(&stderr), 30)
            );
        }
        thread::sleep(crate::POLL);
    };
    let out = read_log(&stdout);
    assert!(
        status.success(),
        "meshtable-agent --once {args:?} failed ({status}):\n{out}\n{}",
        tail(&read_log(&stderr), 30)
    );
    serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("meshtable-agent --once {args:?} printed no JSON ({e}):\n{out}"))
}
