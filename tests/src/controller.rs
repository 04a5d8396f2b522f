//! The controller process guard and its HTTP helpers.

use std::env;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;
use tempfile::TempDir;

use crate::backend::Backend;
use crate::metrics::{Sample, parse_metrics};
use crate::{binaries, tail, unique};

/// How long `meshtable serve` may take to answer `/healthz` and print its
/// ready line (migrations included).
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Timeout of one HTTP request to the controller.
const HTTP_TIMEOUT: Duration = Duration::from_secs(10);

/// How many times to start the controller when a port taken by someone else
/// between [`crate::free_port`] and the bind is the reason it exits.
const START_ATTEMPTS: usize = 3;

/// Lines of log shown in panic messages.
const LOG_TAIL: usize = 40;

/// A running `meshtable serve`, killed on drop.
///
/// Standard output and standard error go to `controller.stdout.log` and
/// `controller.stderr.log` in its temporary data directory; the directory is
/// kept (and its path printed) when the test panics.
#[derive(Debug)]
pub struct Controller {
    child: Option<Child>,
    dir: TempDir,
    http: ureq::Agent,
    base: String,
    mqtt_url: String,
    external_broker: bool,
    client_id: String,
    share_group: String,
    /// The flags naming the database, for `meshtable user`/`token` commands.
    db_args: Vec<String>,
    /// An API token of the bootstrap superadmin, sent with every request.
    token: Option<String>,
}

impl Controller {
    /// Starts `meshtable serve` on free ports against `backend` with a
    /// one-second sweep interval, and waits until it is ready.
    ///
    /// # Panics
    ///
    /// When it exits or is not ready in time, with the tail of its log.
    pub fn start(backend: &Backend) -> Controller {
        Controller::start_with(backend, &[])
    }

    /// Like [`Controller::start`], with extra command-line arguments.
    ///
    /// # Panics
    ///
    /// As [`Controller::start`].
    pub fn start_with(backend: &Backend, extra_args: &[&str]) -> Controller {
        let bin = &binaries().controller;
        let mut dir = tempfile::Builder::new()
            .prefix("meshtable-e2e-controller-")
            .tempdir()
            .expect("create a temporary data directory");
        let http: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(HTTP_TIMEOUT))
            .http_status_as_error(false)
            .proxy(None)
            .build()
            .into();
        let client_id = unique("e2e-controller");
        let share_group = unique("e2e-group");
        for attempt in 1..=START_ATTEMPTS {
            let http_port = crate::free_port();
            let mqtt_port = crate::free_port();
            let listen = format!("127.0.0.1:{http_port}");
            let mqtt_listen = format!("127.0.0.1:{mqtt_port}");
            let mut cmd = Command::new(bin);
            cmd.arg("serve")
                .args(["--listen", &listen])
                .args(["--mqtt-listen", &mqtt_listen])
                .arg("--data-dir")
                .arg(dir.path())
                .args(["--mqtt-client-id", &client_id])
                .args(["--mqtt-share-group", &share_group])
                .args(["--sweep-interval", "1s"]);
            if let Some(url) = backend.mqtt_url() {
                cmd.args(["--mqtt-url", url]);
            }
            if let Some(url) = backend.database_url() {
                cmd.args(["--database-url", url]);
            }
            // Agents of the tests are not enrolled unless a test enrolls
            // them: the embedded broker lets them in without a login unless
            // the test says otherwise (--mqtt-allow-anonymous=false).
            if !extra_args
                .iter()
                .any(|a| a.starts_with("--mqtt-allow-anonymous"))
            {
                cmd.arg("--mqtt-allow-anonymous");
            }
            cmd.args(extra_args);
            isolate_env(&mut cmd);
            let stdout = dir.path().join("controller.stdout.log");
            let stderr = dir.path().join("controller.stderr.log");
            cmd.stdin(Stdio::null())
                .stdout(File::create(&stdout).expect("create the stdout log"))
                .stderr(File::create(&stderr).expect("create the stderr log"));
            let child = cmd
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            let mut ctl = Controller {
                child: Some(child),
                dir,
                http: http.clone(),
                base: format!("http://{listen}"),
                mqtt_url: backend
                    .mqtt_url()
                    .map_or_else(|| format!("mqtt://{mqtt_listen}"), str::to_owned),
                external_broker: backend.mqtt_url().is_some(),
                client_id: client_id.clone(),
                share_group: share_group.clone(),
                db_args: Vec::new(),
                token: None,
            };
            ctl.db_args = db_args(ctl.dir.path(), backend);
            match ctl.wait_ready(backend) {
                Ok(()) => {
                    let token = ctl.cli(&["token", "create", "--user", "admin", "--label", "e2e"]);
                    ctl.token = Some(token.trim().to_owned());
                    return ctl;
                }
                Err(log) if attempt < START_ATTEMPTS && log.contains("already in use") => {
                    eprintln!("controller found a port taken, retrying: {}", tail(&log, 3));
                    // Take the directory back for the next attempt: the
                    // failed process has exited, nothing is left to kill.
                    ctl.child = None;
                    dir = ctl.take_dir();
                }
                Err(log) => panic!(
                    "meshtable serve exited before it was ready ({}):\n{}",
                    backend.name(),
                    tail(&log, LOG_TAIL)
                ),
            }
        }
        unreachable!("the last attempt returns or panics")
    }

    /// Waits for the ready line and `/healthz`. `Err` holds the log of a
    /// process that exited; a timeout panics.
    fn wait_ready(&mut self, backend: &Backend) -> Result<(), String> {
        let start = Instant::now();
        let mut healthy = false;
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("poll the controller process"))
            {
                return Err(format!("{status}\n{}{}", self.stdout(), self.stderr()));
            }
            if !healthy {
                healthy = matches!(self.try_get("/healthz"), Ok((200, _)));
            }
            let ready = self
                .stdout()
                .lines()
                .find(|l| l.starts_with("meshtable ready "))
                .map(str::to_owned);
            if let (true, Some(line)) = (healthy, ready) {
                let want_http = format!("http={}", self.base);
                assert!(
                    line.split_whitespace().any(|w| w == want_http),
                    "ready line {line:?} does not name {want_http}"
                );
                if !self.external_broker {
                    let want_mqtt = format!("mqtt={}", self.mqtt_url);
                    assert!(
                        line.split_whitespace().any(|w| w == want_mqtt),
                        "ready line {line:?} does not name {want_mqtt}"
                    );
                }
                return Ok(());
            }
            if start.elapsed() > READY_TIMEOUT {
                panic!(
                    "meshtable serve ({}) not ready after {READY_TIMEOUT:?} (healthz 200: \
                     {healthy}, ready line printed: false):\n{}",
                    backend.name(),
                    self.log_tail()
                );
            }
            thread::sleep(crate::POLL);
        }
    }

    fn take_dir(mut self) -> TempDir {
        self.child = None;
        // Replace the directory with a fresh one so that Drop has something
        // to clean; the caller keeps the original.
        let fresh = tempfile::tempdir().expect("create a temporary directory");
        std::mem::replace(&mut self.dir, fresh)
    }

    /// The base URL of the HTTP API, `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// The broker URL agents and publishers should use: the embedded
    /// broker's, or the external one's.
    pub fn mqtt_url(&self) -> &str {
        &self.mqtt_url
    }

    /// The controller's MQTT client id.
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The controller's share group.
    pub fn share_group(&self) -> &str {
        &self.share_group
    }

    /// The data directory (also where the logs are).
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of the standard error log.
    pub fn stderr_path(&self) -> PathBuf {
        self.dir.path().join("controller.stderr.log")
    }

    /// Everything the controller printed to standard output so far.
    pub fn stdout(&self) -> String {
        read_log(&self.dir.path().join("controller.stdout.log"))
    }

    /// Everything the controller logged to standard error so far, without
    /// terminal colour codes.
    pub fn stderr(&self) -> String {
        read_log(&self.stderr_path())
    }

    /// The last lines of both logs, for panic messages.
    pub fn log_tail(&self) -> String {
        format!(
            "--- controller stdout ---\n{}\n--- controller stderr (last {LOG_TAIL} lines) ---\n{}",
            tail(&self.stdout(), 5),
            tail(&self.stderr(), LOG_TAIL)
        )
    }

    /// Panics (with the log tail) unless the process is still running.
    pub fn assert_running(&mut self) {
        let status = self
            .child
            .as_mut()
            .and_then(|c| c.try_wait().expect("poll the controller process"));
        if let Some(status) = status {
            panic!("the controller exited ({status}):\n{}", self.log_tail());
        }
    }

    /// Runs `meshtable ARGS` against this controller's database (the
    /// `user` and `token` commands) and returns its standard output.
    ///
    /// # Panics
    ///
    /// When it fails, with its standard error.
    pub fn cli(&self, args: &[&str]) -> String {
        self.cli_with_stdin(args, None)
    }

    /// Like [`Controller::cli`], with `stdin` as standard input.
    ///
    /// # Panics
    ///
    /// As [`Controller::cli`].
    pub fn cli_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write as _;
        let bin = &binaries().controller;
        let mut cmd = Command::new(bin);
        cmd.args(args).args(&self.db_args);
        isolate_env(&mut cmd);
        cmd.stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .expect("write the command's standard input");
        }
        drop(child.stdin.take());
        let out = child
            .wait_with_output()
            .expect("wait for the meshtable command");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        // Kept with the controller's logs, so that the secrets check sees them.
        let log = self.dir.path().join("cli.stderr.log");
        if let Ok(mut f) = fs::OpenOptions::new().create(true).append(true).open(log) {
            let _ = f.write_all(stderr.as_bytes());
        }
        assert!(
            out.status.success(),
            "meshtable {} failed ({}):\n{stderr}",
            args.join(" "),
            out.status
        );
        stdout
    }

    /// Creates `network` through the running controller's API (`POST
    /// /api/v1/networks` as the bootstrap superadmin), so that its ingest
    /// knows the network before this returns: reports for a network that does
    /// not exist are refused. `accept_unsigned` lets agents that are not
    /// enrolled report to it.
    ///
    /// # Panics
    ///
    /// When the request fails or is refused.
    pub fn add_network(&self, network: &str, accept_unsigned: bool) {
        let url = format!("{}/api/v1/networks", self.base);
        let body = serde_json::json!({ "id": network, "accept_unsigned": accept_unsigned });
        let mut req = self
            .http
            .post(&url)
            .header("Content-Type", "application/json");
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let resp = req
            .send(body.to_string())
            .unwrap_or_else(|e| panic!("POST {url}: {e}"));
        let status = resp.status().as_u16();
        let text = resp.into_body().read_to_string().unwrap_or_default();
        assert_eq!(status, 201, "POST {url} for network {network}: {text}");
    }

    /// A new enrollment token for `network` valid for `ttl` (e.g. `1h`).
    ///
    /// # Panics
    ///
    /// When the command fails.
    pub fn enroll_token(&self, network: &str, ttl: &str) -> String {
        self.cli(&["enroll-token", "create", "--network", network, "--ttl", ttl])
            .trim()
            .to_owned()
    }

    /// The API token of the bootstrap superadmin the helpers send.
    pub fn admin_token(&self) -> &str {
        self.token.as_deref().unwrap_or_default()
    }

    /// `GET path` with `authorization` as the `Authorization` header (none
    /// with `None`): status and body, or the transport error.
    pub fn try_get_as(
        &self,
        path: &str,
        authorization: Option<&str>,
    ) -> Result<(u16, String), String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url);
        if let Some(a) = authorization {
            req = req.header("Authorization", a);
        }
        let resp = req.call().map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .read_to_string()
            .map_err(|e| format!("GET {url}: body: {e}"))?;
        Ok((status, body))
    }

    /// `GET path` as the bootstrap superadmin (once the controller is
    /// ready): status and body, or the transport error.
    pub fn try_get(&self, path: &str) -> Result<(u16, String), String> {
        let url = format!("{}{path}", self.base);
        let mut req = self.http.get(&url);
        if let Some(t) = &self.token {
            req = req.header("Authorization", &format!("Bearer {t}"));
        }
        let resp = req.call().map_err(|e| format!("GET {url}: {e}"))?;
        let status = resp.status().as_u16();
        let body = resp
            .into_body()
            .read_to_string()
            .map_err(|e| format!("GET {url}: body: {e}"))?;
        Ok((status, body))
    }

    /// `GET path`: status and body.
    ///
    /// # Panics
    ///
    /// When the request fails, with the log tail.
    pub fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("{e}\n{}", self.log_tail()))
    }

    /// `GET path` as JSON, which must answer 200.
    ///
    /// # Panics
    ///
    /// On another status or a body that is not JSON.
    pub fn get_json(&self, path: &str) -> Value {
        let (status, body) = self.get(path);
        assert_eq!(status, 200, "GET {path} answered {status}: {body}");
        serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("GET {path} answered invalid JSON ({e}): {body}"))
    }

    /// `GET path` as JSON with any status.
    ///
    /// # Panics
    ///
    /// When the body is not JSON.
    pub fn get_json_status(&self, path: &str) -> (u16, Value) {
        let (status, body) = self.get(path);
        let json = serde_json::from_str(&body).unwrap_or_else(|e| {
            panic!("GET {path} ({status}) answered invalid JSON ({e}): {body}")
        });
        (status, json)
    }

    /// The parsed `/metrics`.
    ///
    /// # Panics
    ///
    /// Unless `/metrics` answers 200 with the Prometheus text format.
    pub fn metrics(&self) -> Vec<Sample> {
        let (status, body) = self.get("/metrics");
        assert_eq!(status, 200, "GET /metrics answered {status}: {body}");
        parse_metrics(&body).unwrap_or_else(|e| panic!("GET /metrics: {e}\n{body}"))
    }

    /// The value of the metric `name` with exactly the labels `labels`.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        crate::metrics::find(&self.metrics(), name, labels)
    }

    /// `GET /healthz` must answer 200 `ok`.
    ///
    /// # Panics
    ///
    /// Otherwise.
    pub fn assert_healthy(&mut self) {
        self.assert_running();
        let (status, body) = self.get("/healthz");
        assert_eq!(
            (status, body.trim()),
            (200, "ok"),
            "GET /healthz\n{}",
            self.log_tail()
        );
    }

    /// The entry of `network` in `GET /api/v1/networks`, if listed.
    pub fn network(&self, network: &str) -> Option<Value> {
        let all = self.get_json("/api/v1/networks");
        all["networks"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /api/v1/networks has no networks array: {all}"))
            .iter()
            .find(|n| n["id"] == network)
            .cloned()
    }

    /// `GET /api/v1/nodes?network=NETWORK`: the node summaries.
    pub fn nodes(&self, network: &str) -> Vec<Value> {
        let all = self.get_json(&format!("/api/v1/nodes?network={network}"));
        all["nodes"]
            .as_array()
            .unwrap_or_else(|| panic!("GET /api/v1/nodes has no nodes array: {all}"))
            .clone()
    }

    /// The summary of `node` in `network`, if listed.
    pub fn node_summary(&self, network: &str, node: &str) -> Option<Value> {
        self.nodes(network).into_iter().find(|n| n["node"] == node)
    }

    /// `GET /api/v1/nodes/NODE?network=NETWORK`, which must answer 200.
    pub fn node_detail(&self, network: &str, node: &str) -> Value {
        self.get_json(&format!("/api/v1/nodes/{node}?network={network}"))
    }

    /// `GET /api/v1/nodes/NODE/series` of `metric` (and `interface`) from
    /// `from_ms` to now: the points as `(t, v)`.
    ///
    /// # Panics
    ///
    /// Unless it answers 200 with the documented shape (echoing the network,
    /// node, metric and interface asked for).
    pub fn series(
        &self,
        network: &str,
        node: &str,
        metric: &str,
        interface: Option<&str>,
        from_ms: i64,
    ) -> Vec<(i64, f64)> {
        let mut path =
            format!("/api/v1/nodes/{node}/series?network={network}&metric={metric}&from={from_ms}");
        if let Some(i) = interface {
            path.push_str(&format!("&interface={i}"));
        }
        let body = self.get_json(&path);
        assert_eq!(body["network"], network, "GET {path}: {body}");
        assert_eq!(body["node"], node, "GET {path}: {body}");
        assert_eq!(body["metric"], metric, "GET {path}: {body}");
        match interface {
            Some(i) => assert_eq!(body["interface"], i, "GET {path}: {body}"),
            None => assert!(body["interface"].is_null(), "GET {path}: {body}"),
        }
        body["points"]
            .as_array()
            .unwrap_or_else(|| panic!("GET {path}: no points array: {body}"))
            .iter()
            .map(|p| {
                let t = p["t"].as_i64();
                let v = p["v"].as_f64();
                match (t, v) {
                    (Some(t), Some(v)) => (t, v),
                    _ => panic!("GET {path}: point {p} is not {{\"t\": ms, \"v\": number}}"),
                }
            })
            .collect()
    }

    /// Kills the controller (SIGKILL, like [`Controller::kill`]) and starts
    /// it again on the same ports, data directory, database, MQTT client id
    /// and share group, with `extra_args`, and waits until it is ready.
    ///
    /// # Panics
    ///
    /// When the new process exits or is not ready in time.
    pub fn kill_and_restart(&mut self, backend: &Backend, extra_args: &[&str]) {
        self.kill();
        let listen = self.base.trim_start_matches("http://").to_owned();
        let mut cmd = Command::new(&binaries().controller);
        cmd.arg("serve")
            .args(["--listen", &listen])
            .arg("--data-dir")
            .arg(self.dir.path())
            .args(["--mqtt-client-id", &self.client_id])
            .args(["--mqtt-share-group", &self.share_group])
            .args(["--sweep-interval", "1s"]);
        if let Some(url) = backend.mqtt_url() {
            cmd.args(["--mqtt-url", url]);
        } else {
            cmd.args(["--mqtt-listen", self.mqtt_url.trim_start_matches("mqtt://")]);
        }
        if let Some(url) = backend.database_url() {
            cmd.args(["--database-url", url]);
        }
        if !extra_args
            .iter()
            .any(|a| a.starts_with("--mqtt-allow-anonymous"))
        {
            cmd.arg("--mqtt-allow-anonymous");
        }
        cmd.args(extra_args);
        isolate_env(&mut cmd);
        // Appended to: the logs of the first run stay readable.
        let open = |name: &str| {
            fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.dir.path().join(name))
                .expect("open a log file")
        };
        let stdout = open("controller.stdout.log");
        let stderr = open("controller.stderr.log");
        // The ready line of the first run must not count for this one.
        let ready_lines = self
            .stdout()
            .lines()
            .filter(|l| l.starts_with("meshtable ready "))
            .count();
        cmd.stdin(Stdio::null()).stdout(stdout).stderr(stderr);
        self.child = Some(cmd.spawn().expect("restart meshtable serve"));
        let start = Instant::now();
        loop {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().expect("poll the controller process"))
            {
                panic!(
                    "restarted controller exited ({status}):\n{}",
                    self.log_tail()
                );
            }
            let ready = self
                .stdout()
                .lines()
                .filter(|l| l.starts_with("meshtable ready "))
                .count()
                > ready_lines;
            if ready && matches!(self.try_get("/healthz"), Ok((200, _))) {
                return;
            }
            assert!(
                start.elapsed() < READY_TIMEOUT,
                "restarted controller not ready after {READY_TIMEOUT:?}:\n{}",
                self.log_tail()
            );
            thread::sleep(crate::POLL);
        }
    }

    /// Stops the controller now (SIGKILL) and waits for it to exit.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // The process may have exited already; then there is nothing to kill.
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        let had_child = self.child.is_some();
        self.kill();
        if !had_child {
            return;
        }
        if thread::panicking() {
            self.dir.disable_cleanup(true);
            eprintln!(
                "controller data and logs kept in {}\n{}",
                self.dir.path().display(),
                self.log_tail()
            );
        }
        if self.external_broker {
            // The controller's persistent session would otherwise collect
            // messages on the shared broker forever.
            crate::purge_session(&self.mqtt_url, &self.client_id);
        }
    }
}

/// The flags that name the database of a controller with data directory
/// `dir` on `backend`.
fn db_args(dir: &Path, backend: &Backend) -> Vec<String> {
    let mut args = vec!["--data-dir".to_owned(), dir.display().to_string()];
    if let Some(url) = backend.database_url() {
        args.extend(["--database-url".to_owned(), url.to_owned()]);
    }
    args
}

/// Keeps the developer's `MESHTABLE_*` settings (the controller reads its
/// flags from the environment too) away from the processes under test, and
/// gives them plain, readable logs.
pub fn isolate_env(cmd: &mut Command) {
    for (key, _) in env::vars_os() {
        if key.to_string_lossy().starts_with("MESHTABLE_") {
            cmd.env_remove(key);
        }
    }
    cmd.env("NO_COLOR", "1");
    if env::var_os("RUST_LOG").is_none() {
        cmd.env("RUST_LOG", "info");
    }
}

/// Reads a log file (lossily), without ANSI escape sequences.
pub(crate) fn read_log(path: &Path) -> String {
    let bytes = fs::read(path).unwrap_or_default();
    strip_ansi(&String::from_utf8_lossy(&bytes))
}

/// Removes ANSI CSI escape sequences (`ESC [ ... final byte`).
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::strip_ansi;

    #[test]
    fn strips_colours() {
        assert_eq!(
            strip_ansi("\u{1b}[3mreason\u{1b}[0m\u{1b}[2m=\u{1b}[0mtopic"),
            "reason=topic"
        );
        assert_eq!(strip_ansi("plain"), "plain");
    }
}
