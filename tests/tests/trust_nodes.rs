//! Node identity end to end, over the real binaries: a real agent enrolls
//! with a one-time token and reports signed; the token does not work twice
//! nor after it expired; a forged report, an unsigned one, one on another
//! node's topic and one for an unknown network are refused and counted;
//! revoking the node stops its reports at once. The embedded broker refuses
//! clients without a login, and a wrong password.

use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::Duration;

use meshtable_proto::sign::{self, SigningKey};
use meshtable_proto::{Telemetry, encode_cbor, examples};
use meshtable_tests::json::u64_at;
use meshtable_tests::{Agent, Backend, Controller, MqttClient, binaries, unique, wait_for};

#[test]
fn embedded_sqlite() {
    scenario(&Backend::embedded());
}

#[test]
fn service_mosquitto_postgres() {
    let Some(backend) = Backend::service() else {
        return;
    };
    scenario(&backend);
}

/// Runs `meshtable-agent enroll`; `Ok(stdout)` or `Err(stderr)`.
fn enroll(ctl: &Controller, token: &str, dir: &Path) -> Result<String, String> {
    let out = Command::new(&binaries().agent)
        .arg("--identity-dir")
        .arg(dir)
        .args(["enroll", "--token", token, "--controller", ctl.base_url()])
        .args(["--hostname", "roof-1"])
        .env_remove("MESHTABLE_ENROLL_TOKEN")
        .output()
        .expect("run meshtable-agent enroll");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// `key = "value"` of a TOML file the agent wrote.
fn toml_value(text: &str, key: &str) -> String {
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(" = ")?;
            (k == key).then(|| v.trim_matches('"').to_owned())
        })
        .unwrap_or_else(|| panic!("no {key} in identity"))
}

fn rejected(ctl: &Controller, reason: &str) -> f64 {
    ctl.metric("meshtable_ingest_rejected_total", &[("reason", reason)])
        .unwrap_or(0.0)
}

fn latest_seq(ctl: &Controller, net: &str, node: &str) -> Option<u64> {
    let (status, d) = ctl.get_json_status(&format!("/api/v1/nodes/{node}?network={net}"));
    (status == 200 && d.pointer("/latest/seq").is_some()).then(|| u64_at(&d, "/latest/seq"))
}

fn telemetry(node: &str, seq: u64) -> Vec<u8> {
    encode_cbor(&Telemetry {
        node: node.to_owned(),
        seq,
        boot_id: "forged-boot".to_owned(),
        ..examples::telemetry_v1()
    })
}

fn scenario(backend: &Backend) {
    let ctl = Controller::start_with(backend, &["--mqtt-allow-anonymous=false"]);
    let net = unique("trust");
    ctl.add_network(&net, false);
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let identity = dir.path().join("identity");

    // 1. Enroll with a token; the private key is the router's alone (0600).
    let token = ctl.enroll_token(&net, "1h");
    assert!(token.starts_with("mte_") && token.len() == 68, "{token:?}");
    let out = enroll(&ctl, &token, &identity).unwrap_or_else(|e| panic!("enroll failed: {e}"));
    assert!(out.contains(&format!("network {net}")), "{out}");
    {
        use std::os::unix::fs::PermissionsExt;
        for (file, mode) in [
            ("node.key", 0o600),
            ("identity.toml", 0o600),
            ("salt", 0o600),
        ] {
            let m = std::fs::metadata(identity.join(file))
                .unwrap_or_else(|e| panic!("{file}: {e}"))
                .permissions()
                .mode();
            assert_eq!(m & 0o777, mode, "{file}");
        }
    }
    let id_text = std::fs::read_to_string(identity.join("identity.toml")).unwrap();
    let node = toml_value(&id_text, "node");
    let password = toml_value(&id_text, "mqtt_password");
    assert_eq!(toml_value(&id_text, "network"), net);

    // 2. The token works once; an expired one not at all.
    let again = enroll(&ctl, &token, &dir.path().join("second")).unwrap_err();
    assert!(again.contains("unknown, used or expired"), "{again}");
    let short = ctl.enroll_token(&net, "1s");
    thread::sleep(Duration::from_millis(1500));
    let late = enroll(&ctl, &short, &dir.path().join("late")).unwrap_err();
    assert!(late.contains("unknown, used or expired"), "{late}");

    // 3. The enrolled agent reports, signed, and is stored.
    let state = tempfile::tempdir().unwrap();
    let id_arg = identity.to_str().unwrap().to_owned();
    let mut agent = Agent::start_with(
        ctl.mqtt_url(),
        "ignored",
        "ignored",
        "1s",
        state.path(),
        &["--identity-dir", &id_arg],
    );
    let first = wait_for("signed reports stored", Duration::from_secs(30), || {
        latest_seq(&ctl, &net, &node)
            .filter(|s| *s >= 2)
            .ok_or_else(|| format!("not yet:\n{}", agent.log_tail()))
    });
    assert!(
        agent.stderr().contains("reports are signed"),
        "{}",
        agent.log_tail()
    );

    // 4. Forgeries, each refused and counted under its reason.
    let key_hex = std::fs::read_to_string(identity.join("node.key")).unwrap();
    let key = sign::signing_key_from_hex(&key_hex).unwrap();
    let wrong = SigningKey::from_bytes(&[42; 32]);
    let login = (!backend.is_shared()).then_some((node.as_str(), password.as_str()));
    let mut mqtt = MqttClient::try_connect_as(ctl.mqtt_url(), &unique("trust-forger"), login)
        .unwrap_or_else(|e| panic!("connect with the node's login: {e}"));
    let own = format!("meshtable/v1/{net}/{node}/telemetry");
    let other_node = unique("other");
    let other = format!("meshtable/v1/{net}/{other_node}/telemetry");
    let ghost = format!("meshtable/v1/{}/{node}/telemetry", unique("ghost"));
    let cases: Vec<(&str, String, Vec<u8>)> = vec![
        (
            "bad_signature",
            own.clone(),
            sign::seal(&wrong, &node, &own, &telemetry(&node, 9_000)),
        ),
        ("unsigned", own.clone(), telemetry(&node, 9_001)),
        (
            "foreign_topic",
            other.clone(),
            sign::seal(&key, &node, &other, &telemetry(&other_node, 9_002)),
        ),
        (
            "unknown_network",
            ghost.clone(),
            sign::seal(&key, &node, &ghost, &telemetry(&node, 9_003)),
        ),
    ];
    for (reason, topic, payload) in &cases {
        let before = rejected(&ctl, reason);
        mqtt.publish(topic, payload.clone());
        mqtt.flush();
        wait_for(
            &format!("{reason} counted"),
            Duration::from_secs(20),
            || {
                let now = rejected(&ctl, reason);
                (now >= before + 1.0).then_some(()).ok_or(format!("{now}"))
            },
        );
    }
    // None of them was stored.
    let (status, _) = ctl.get_json_status(&format!("/api/v1/nodes/{other_node}?network={net}"));
    assert_eq!(status, 404);
    assert!(latest_seq(&ctl, &net, &node).unwrap() < 9_000);

    // 5. The embedded broker wants a login, and the right password.
    if !backend.is_shared() {
        let anon = MqttClient::try_connect(ctl.mqtt_url(), &unique("trust-anon"));
        assert!(anon.is_err(), "an anonymous client was let in");
        let bad = MqttClient::try_connect_as(
            ctl.mqtt_url(),
            &unique("trust-bad"),
            Some((&node, "wrong-password")),
        );
        assert!(bad.is_err(), "a wrong password was let in");
    }

    // 6. Revoking stops the reports at once.
    let url = format!(
        "{}/api/v1/networks/{net}/nodes/{node}/revoke",
        ctl.base_url()
    );
    let resp = ureq::post(&url)
        .header("Authorization", &format!("Bearer {}", ctl.admin_token()))
        .send_empty()
        .expect("revoke");
    assert_eq!(resp.status().as_u16(), 204);
    let at_revoke = latest_seq(&ctl, &net, &node).unwrap();
    assert!(at_revoke >= first);
    let revoked_before = rejected(&ctl, "revoked");
    wait_for(
        "reports of the revoked node refused",
        Duration::from_secs(20),
        || {
            let n = rejected(&ctl, "revoked");
            (n >= revoked_before + 3.0)
                .then_some(())
                .ok_or(format!("{n}"))
        },
    );
    let after = latest_seq(&ctl, &net, &node).unwrap();
    // At most the report that was in flight while the revocation was made.
    assert!(
        after <= at_revoke + 1,
        "stored {at_revoke} -> {after} after revoking"
    );
    agent.assert_running();

    // Nothing secret in the logs.
    let logs = format!("{}{}{}", ctl.stderr(), ctl.stdout(), agent.stderr());
    for secret in [token.as_str(), password.as_str(), key_hex.trim()] {
        assert!(!logs.contains(secret), "a secret is in the logs");
    }
    drop(mqtt);
}

/// Enrolls routers `a` and `b` into `net` with `meshtable-agent enroll`,
/// their identities in `dir/a` and `dir/b`: (node id, MQTT password) each.
fn enroll_two(ctl: &Controller, net: &str, dir: &Path) -> Vec<(String, String)> {
    ["a", "b"]
        .into_iter()
        .map(|name| {
            let id_dir = dir.join(name);
            let token = ctl.enroll_token(net, "1h");
            enroll(ctl, &token, &id_dir).unwrap_or_else(|e| panic!("enroll {name}: {e}"));
            let text = std::fs::read_to_string(id_dir.join("identity.toml")).unwrap();
            (
                toml_value(&text, "node"),
                toml_value(&text, "mqtt_password"),
            )
        })
        .collect()
}

/// A `mosquitto` process, killed on drop.
struct Mosquitto(std::process::Child);

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `meshtable mosquitto export` against the real Mosquitto: a router may
/// publish its own topics and nothing else, and a wrong password or no
/// login is refused.
#[test]
fn mosquitto_acl() {
    let bin = Path::new("/usr/sbin/mosquitto");
    if !bin.exists() {
        eprintln!(
            "skipped mosquitto_acl: /usr/sbin/mosquitto is not installed (apt-get install mosquitto)"
        );
        return;
    }
    let ctl = Controller::start(&Backend::embedded());
    let net = unique("acl");
    ctl.add_network(&net, false);
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let nodes = enroll_two(&ctl, &net, dir.path());
    let passwd = dir.path().join("meshtable.passwd");
    let acl = dir.path().join("meshtable.acl");
    let controller_password = "controller-secret-pw";
    ctl.cli(&[
        "mosquitto",
        "export",
        "--passwd",
        passwd.to_str().unwrap(),
        "--acl",
        acl.to_str().unwrap(),
        "--mqtt-url",
        &format!("mqtt://meshtable-controller:{controller_password}@127.0.0.1:1"),
    ]);
    let port = meshtable_tests::free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nlistener {port} 127.0.0.1\nallow_anonymous false\n\
             password_file {}\nacl_file {}\npersistence false\n\
             # run as whoever starts it (root in CI would switch to the mosquitto user)\nuser {}\n",
            passwd.display(),
            acl.display(),
            std::env::var("USER").unwrap_or_else(|_| "root".to_owned()),
        ),
    )
    .unwrap();
    let log = std::fs::File::create(dir.path().join("mosquitto.log")).unwrap();
    let _mosquitto = Mosquitto(
        Command::new(bin)
            .arg("-c")
            .arg(&conf)
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("start mosquitto"),
    );
    let url = format!("mqtt://127.0.0.1:{port}");
    let mut reader = wait_for(
        "mosquitto accepts the controller",
        Duration::from_secs(20),
        || {
            MqttClient::try_connect_as(
                &url,
                &unique("acl-controller"),
                Some(("meshtable-controller", controller_password)),
            )
            .map_err(|e| {
                format!(
                    "{e}\n{}",
                    std::fs::read_to_string(dir.path().join("mosquitto.log")).unwrap_or_default()
                )
            })
        },
    );
    reader.subscribe("meshtable/v1/#");

    let (a, a_pw) = (&nodes[0].0, &nodes[0].1);
    let b = &nodes[1].0;
    let mut node_a = MqttClient::try_connect_as(&url, &unique("acl-a"), Some((a, a_pw)))
        .unwrap_or_else(|e| panic!("node a cannot log in: {e}"));
    let own = format!("meshtable/v1/{net}/{a}/telemetry");
    let foreign = format!("meshtable/v1/{net}/{b}/telemetry");
    node_a.publish(&own, b"first".to_vec());
    node_a.publish(&foreign, b"forbidden".to_vec());
    node_a.publish(&own, b"last".to_vec());
    node_a.flush();
    // Messages of one connection arrive in order: once "last" is here, the
    // forbidden one would have been too.
    let first = reader
        .wait_message(&own, Duration::from_secs(20))
        .expect("node a's own topic reaches the controller");
    assert_eq!(first.payload, b"first");
    let last = reader
        .wait_message(&own, Duration::from_secs(20))
        .expect("node a's second report reaches the controller");
    assert_eq!(last.payload, b"last");
    assert!(
        reader.wait_message(&foreign, Duration::ZERO).is_none(),
        "node a published on node b's topic"
    );

    assert!(
        MqttClient::try_connect_as(&url, &unique("acl-bad"), Some((a, "wrong-password"))).is_err(),
        "a wrong password was accepted"
    );
    assert!(
        MqttClient::try_connect(&url, &unique("acl-anon")).is_err(),
        "an anonymous client was accepted"
    );
}

/// A Mosquitto started with `-d` (it writes its `pid_file` only then),
/// ended by the process id in that file on drop. `cancel` stops a start
/// that has not happened yet.
struct DaemonMosquitto {
    pid_file: std::path::PathBuf,
    cancel: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Drop for DaemonMosquitto {
    fn drop(&mut self) {
        self.cancel.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(pid) = std::fs::read_to_string(&self.pid_file)
            .ok()
            .and_then(|t| t.trim().parse::<u32>().ok())
            .filter(|p| *p > 1)
        {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
    }
}

/// `meshtable serve --mosquitto-export-dir --mosquitto-pid-file` with the
/// real Mosquitto: the controller writes the files at start (Mosquitto
/// starts on them), and on every enrollment and revocation rewrites them and
/// sends SIGHUP. An enrolled router's agent reports through Mosquitto at
/// once; once revoked (API, or the command line seen by the registry
/// refresh) its login is refused, while other routers still log in.
#[test]
fn mosquitto_follows_enroll_and_revoke() {
    use std::os::unix::fs::PermissionsExt as _;
    let bin = Path::new("/usr/sbin/mosquitto");
    if !bin.exists() {
        eprintln!(
            "skipped mosquitto_follows_enroll_and_revoke: /usr/sbin/mosquitto is not installed \
             (apt-get install mosquitto)"
        );
        return;
    }
    let dir = tempfile::tempdir().expect("create a temporary directory");
    let export = dir.path().join("export");
    std::fs::create_dir(&export).unwrap();
    let passwd = export.join("meshtable.passwd");
    let acl = export.join("meshtable.acl");
    let pid_file = dir.path().join("mosquitto.pid");
    let log = dir.path().join("mosquitto.log");
    let port = meshtable_tests::free_port();
    let conf = dir.path().join("mosquitto.conf");
    std::fs::write(
        &conf,
        format!(
            "per_listener_settings false\nlistener {port} 127.0.0.1\nallow_anonymous false\n\
             password_file {}\nacl_file {}\npid_file {}\npersistence false\nlog_dest file {}\n\
             # run as whoever starts it (root in CI would switch to the mosquitto user)\nuser {}\n",
            passwd.display(),
            acl.display(),
            pid_file.display(),
            log.display(),
            std::env::var("USER").unwrap_or_else(|_| "root".to_owned()),
        ),
    )
    .unwrap();
    let guard = DaemonMosquitto {
        pid_file: pid_file.clone(),
        cancel: std::sync::Arc::default(),
    };
    // Mosquitto needs the files the controller writes when it starts, and
    // the controller is ready only once it subscribed at Mosquitto. (Built
    // first, so that the wait below is the controller's start only.)
    let _ = binaries();
    let starter = {
        let (passwd, cancel) = (passwd.clone(), guard.cancel.clone());
        thread::spawn(move || {
            for _ in 0..600 {
                if cancel.load(std::sync::atomic::Ordering::SeqCst) {
                    return Err("cancelled".to_owned());
                }
                if passwd.exists() {
                    let out = Command::new(bin)
                        .arg("-c")
                        .arg(&conf)
                        .arg("-d")
                        .output()
                        .map_err(|e| e.to_string())?;
                    return if out.status.success() {
                        Ok(())
                    } else {
                        Err(String::from_utf8_lossy(&out.stderr).into_owned())
                    };
                }
                thread::sleep(Duration::from_millis(100));
            }
            Err("the controller wrote no password file".to_owned())
        })
    };
    let controller_password = "controller-sync-secret";
    let broker = format!("mqtt://127.0.0.1:{port}");
    let backend = Backend::with_broker(&format!(
        "mqtt://meshtable-controller:{controller_password}@127.0.0.1:{port}"
    ));
    let ctl = Controller::start_with(
        &backend,
        &[
            "--mosquitto-export-dir",
            export.to_str().unwrap(),
            "--mosquitto-pid-file",
            pid_file.to_str().unwrap(),
        ],
    );
    starter
        .join()
        .expect("the mosquitto starter")
        .unwrap_or_else(|e| panic!("mosquitto did not start: {e}"));
    let mode = std::fs::metadata(&passwd).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "password file mode");
    let text = std::fs::read_to_string(&passwd).unwrap();
    assert!(text.starts_with("meshtable-controller:$7$101$"), "{text}");
    assert!(!text.contains(controller_password));

    let net = unique("sync");
    ctl.add_network(&net, false);
    let nodes = enroll_two(&ctl, &net, dir.path());
    let (a, a_pw) = (&nodes[0].0, &nodes[0].1);
    let (b, b_pw) = (&nodes[1].0, &nodes[1].1);
    let a_dir = dir.path().join("a");
    let login = |who: &str, user: &str, pw: &str| {
        MqttClient::try_connect_as(&broker, &unique(who), Some((user, pw))).map(|c| c.disconnect())
    };
    let log_of = || std::fs::read_to_string(&log).unwrap_or_default();

    // 1. Enrolled: the router logs in without any manual export, and its
    // agent's signed reports reach the controller through Mosquitto.
    wait_for("node a logs in", Duration::from_secs(20), || {
        login("sync-a", a, a_pw).map_err(|e| format!("{e}\n{}", log_of()))
    });
    let state = tempfile::tempdir().unwrap();
    let a_arg = a_dir.to_str().unwrap().to_owned();
    let mut agent = Agent::start_with(
        &broker,
        "ignored",
        "ignored",
        "1s",
        state.path(),
        &["--identity-dir", &a_arg],
    );
    wait_for(
        "node a's reports stored through mosquitto",
        Duration::from_secs(30),
        || {
            latest_seq(&ctl, &net, a)
                .filter(|s| *s >= 2)
                .ok_or_else(|| format!("not yet:\n{}\n{}", agent.log_tail(), ctl.log_tail()))
        },
    );

    // 2. Revoked through the API: its login is refused, b's still works.
    let url = format!("{}/api/v1/networks/{net}/nodes/{a}/revoke", ctl.base_url());
    let resp = ureq::post(&url)
        .header("Authorization", &format!("Bearer {}", ctl.admin_token()))
        .send_empty()
        .expect("revoke");
    assert_eq!(resp.status().as_u16(), 204);
    wait_for(
        "node a's login refused after the revocation",
        Duration::from_secs(20),
        || match login("sync-a2", a, a_pw) {
            Ok(()) => Err("still accepted".to_owned()),
            Err(_) => Ok(()),
        },
    );
    login("sync-b", b, b_pw).unwrap_or_else(|e| panic!("node b refused: {e}\n{}", log_of()));
    agent.assert_running();

    // 3. Revoked from the command line (another process): the registry
    // refresh notices, and the files follow.
    ctl.cli(&["node", "revoke", "--network", &net, b]);
    wait_for(
        "node b's login refused after the command-line revocation",
        Duration::from_secs(30),
        || match login("sync-b2", b, b_pw) {
            Ok(()) => Err("still accepted".to_owned()),
            Err(_) => Ok(()),
        },
    );
    let text = std::fs::read_to_string(&passwd).unwrap();
    let rules = std::fs::read_to_string(&acl).unwrap();
    for node in [a, b] {
        assert!(!text.contains(node.as_str()), "{node} in the password file");
        assert!(!rules.contains(node.as_str()), "{node} in the acl file");
    }
    // The controller itself still reads: it is subscribed (ready above) and
    // its login stays.
    login("sync-ctl", "meshtable-controller", controller_password)
        .unwrap_or_else(|e| panic!("the controller's login refused: {e}"));
    assert!(
        log_of().matches("Reloading config").count() >= 3,
        "{}",
        log_of()
    );

    // Nothing secret in the controller's logs.
    let logs = format!("{}{}", ctl.stderr(), ctl.stdout());
    for secret in [controller_password, a_pw.as_str(), b_pw.as_str()] {
        assert!(!logs.contains(secret), "a secret is in the logs");
    }
    drop(agent);
    drop(ctl);
    drop(guard);
}
