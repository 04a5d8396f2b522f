//! Crash safety of ingest (issue 4): `kill -9` the controller while a
//! publisher floods the broker, start it again with the same persistent
//! sessions and database, and the database must end up holding exactly the
//! reports the broker acknowledged to the publisher (QoS 1 PUBACK): none
//! lost, none stored twice, checked by count and by the unique key
//! (node, boot_id, seq).
//!
//! This runs in the service suite (Mosquitto and PostgreSQL). On the embedded
//! broker it is not meaningful: that broker lives inside the controller
//! process, so `kill -9` takes the messages it held with it, by design.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use meshtable_sim::flood::{self, FloodConfig, flood_boot_id, flood_node};
use meshtable_store::Store;
use meshtable_tests::{
    Backend, binaries, free_port, isolate_env, purge_session, tail, unique, wait_for,
};

/// Reports published during the test.
const REPORTS: u64 = 6_000;
/// Nodes they are spread over.
const NODES: u32 = 60;
/// Publish rate: slow enough that what queues at the broker while the
/// controller is down stays far below Mosquitto's `max_queued_messages`
/// (1000 by default, per session), which would drop the rest.
const RATE: f64 = 500.0;
/// Reports stored before the kill.
const KILL_AFTER: u64 = 1_000;

/// A controller process started by hand (not through the harness), so that
/// a restart reuses its client id, share group, database and data directory.
struct Proc {
    child: Child,
    log: std::path::PathBuf,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn log_tail(&self) -> String {
        tail(&std::fs::read_to_string(&self.log).unwrap_or_default(), 30)
    }
}

fn start(
    dir: &Path,
    run: u32,
    mqtt_url: &str,
    database_url: &str,
    client_id: &str,
    group: &str,
) -> Proc {
    let stdout = dir.join(format!("controller-{run}.stdout.log"));
    let log = dir.join(format!("controller-{run}.stderr.log"));
    let mut cmd = Command::new(&binaries().controller);
    cmd.arg("serve")
        .args(["--listen", &format!("127.0.0.1:{}", free_port())])
        .args(["--mqtt-url", mqtt_url])
        .args(["--database-url", database_url])
        .arg("--data-dir")
        .arg(dir.join("data"))
        .args(["--mqtt-client-id", client_id])
        .args(["--mqtt-share-group", group]);
    isolate_env(&mut cmd);
    let child = cmd
        .stdin(Stdio::null())
        .stdout(File::create(&stdout).expect("create the stdout log"))
        .stderr(File::create(&log).expect("create the stderr log"))
        .spawn()
        .expect("start meshtable serve");
    let mut p = Proc { child, log };
    wait_for(
        "the controller's ready line",
        Duration::from_secs(60),
        || {
            if let Some(status) = p.child.try_wait().expect("poll the controller") {
                panic!("controller exited ({status}):\n{}", p.log_tail());
            }
            let out = std::fs::read_to_string(&stdout).unwrap_or_default();
            if out.lines().any(|l| l.starts_with("meshtable ready ")) {
                Ok(())
            } else {
                Err(p.log_tail())
            }
        },
    );
    p
}

/// Creates the network, accepting unsigned reports, where the controller
/// no longer creates networks itself.
fn add_network(database_url: &str, network: &str) {
    let bin = &binaries().controller;
    let help = Command::new(bin)
        .args(["network", "--help"])
        .output()
        .expect("run meshtable network --help");
    if !help.status.success() {
        return;
    }
    let out = Command::new(bin)
        .args(["network", "add", network, "--accept-unsigned"])
        .args(["--database-url", database_url])
        .output()
        .expect("run meshtable network add");
    assert!(
        out.status.success(),
        "meshtable network add failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn kill_9_while_publishing_loses_nothing_and_stores_nothing_twice() {
    let Some(backend) = Backend::service() else {
        eprintln!(
            "skipped on the embedded broker: it runs inside the controller, so kill -9 loses \
             what it held by design; crash safety is tested against Mosquitto"
        );
        return;
    };
    let mqtt_url = backend.mqtt_url().expect("service broker").to_owned();
    let database_url = backend.database_url().expect("service database").to_owned();
    let network = unique("crash");
    let client_id = unique("crash-controller");
    let group = unique("crash-group");
    let boot = unique("b");
    let dir = tempfile::tempdir().expect("temporary directory");
    add_network(&database_url, &network);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let store = rt
        .block_on(Store::connect(&database_url))
        .expect("connect to the test database");
    let count = || rt.block_on(store.sample_count()).expect("count samples");

    let mut controller = start(dir.path(), 1, &mqtt_url, &database_url, &client_id, &group);
    let (host, port) = meshtable_sim::parse_mqtt_url(&mqtt_url).expect("broker url");
    let publisher = rt.spawn(flood::flood(FloodConfig {
        mqtt_host: host,
        mqtt_port: port,
        network: network.clone(),
        reports: REPORTS,
        nodes: NODES,
        boot: boot.clone(),
        connections: 2,
        inflight: 20,
        rate: Some(RATE),
        gate: None,
    }));

    wait_for(
        "reports stored before the kill",
        Duration::from_secs(60),
        || {
            let n = count();
            if n >= KILL_AFTER {
                Ok(())
            } else {
                Err(format!("{n} stored\n{}", controller.log_tail()))
            }
        },
    );
    // SIGKILL: no shutdown, no flush, acks in flight are lost.
    controller.child.kill().expect("kill -9 the controller");
    controller.child.wait().expect("reap the controller");
    let at_kill = count();
    let killed_at = Instant::now();
    std::thread::sleep(Duration::from_millis(300));
    let controller = start(dir.path(), 2, &mqtt_url, &database_url, &client_id, &group);
    eprintln!(
        "killed with {at_kill} of {REPORTS} reports stored; restarted after {} ms",
        killed_at.elapsed().as_millis()
    );

    let published = rt
        .block_on(publisher)
        .expect("publisher task")
        .expect("publisher");
    assert_eq!(
        published.acked, REPORTS,
        "the broker acknowledged {} of {REPORTS} publishes",
        published.acked
    );
    assert!(
        at_kill < REPORTS,
        "the kill came after the flood ended ({at_kill} stored): it tests nothing"
    );

    // Drain: every acknowledged report arrives, then nothing more for a while.
    wait_for(
        "every published report stored",
        Duration::from_secs(90),
        || {
            let n = count();
            if n >= REPORTS {
                Ok(())
            } else {
                Err(format!(
                    "{n} of {REPORTS} stored\n{}",
                    controller.log_tail()
                ))
            }
        },
    );
    std::thread::sleep(Duration::from_secs(2));

    let keys = rt
        .block_on(store.sample_keys(&network))
        .expect("read the stored keys");
    let unique_keys: BTreeSet<(String, String, i64)> = keys.iter().cloned().collect();
    assert_eq!(unique_keys.len(), keys.len(), "a report was stored twice");
    let expected: BTreeSet<(String, String, i64)> = (0..REPORTS)
        .map(|i| {
            let n = u32::try_from(i % u64::from(NODES)).expect("node index");
            (
                flood_node(n),
                flood_boot_id(&boot, n),
                i64::try_from(i / u64::from(NODES)).expect("seq"),
            )
        })
        .collect();
    let missing: Vec<_> = expected.difference(&unique_keys).take(5).collect();
    let extra: Vec<_> = unique_keys.difference(&expected).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "stored {} reports, published {REPORTS}: missing (first 5) {missing:?}, unexpected {extra:?}",
        keys.len()
    );
    assert_eq!(keys.len() as u64, REPORTS);
    assert_eq!(count(), REPORTS, "samples outside the test network");

    drop(controller);
    for k in 0..4 {
        let id = if k == 0 {
            client_id.clone()
        } else {
            format!("{client_id}-{k}")
        };
        purge_session(&mqtt_url, &id);
    }
    rt.block_on(store.close()).expect("close the store");
}
