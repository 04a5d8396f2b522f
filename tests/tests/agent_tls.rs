//! The agent over MQTT over TLS (its `tls` feature, which this crate's
//! dev-dependency on meshtable-agent turns on): a real Mosquitto with two
//! TLS listeners, on certificates of a CA generated here with rcgen.
//!
//! - the agent publishes over `mqtts://` and a subscriber (over TLS too)
//!   receives its hello, online state, reports and offline state;
//! - with a client certificate, through a listener that requires one;
//! - a broker certificate of another CA, a host name the certificate does
//!   not hold, and a missing client certificate are refused, and the
//!   agent says so in its log;
//! - unusable files (missing, no certificate, no key, a key of another
//!   certificate) stop the start with an error naming the file and
//!   quoting no key.
//! - `meshtable-agent enroll` over `https://` (against a small rustls
//!   server here) checks the controller's certificate against `--ca-file`
//!   and its name.
//!
//! The agent runs in-process (`meshtable_agent::run`) on a thread of its
//! own, with its log captured: the binary under `target/debug` is shared
//! with the other end-to-end tests, which build it without the feature.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use meshtable_agent::config::{Cli, Config, FileConfig};
use meshtable_proto::{Report, Status, Topic};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, MqttOptions, QoS};

/// A client certificate file and its key file.
type ClientFiles = (PathBuf, PathBuf);

/// How long anything the tests wait for may take.
const PATIENCE: Duration = Duration::from_secs(30);

/// A CA and what it signed, and another CA, as PEM files:
///
/// | file | what |
/// |---|---|
/// | `ca.pem` | the CA |
/// | `server.pem`, `server.key` | the broker's certificate, for `localhost` only |
/// | `client.pem`, `client.key` | a client certificate for the agent |
/// | `other-ca.pem` | a CA that signed nothing here |
/// | `other.key` | a key of no certificate |
struct Pki {
    dir: tempfile::TempDir,
}

fn new_ca(name: &str) -> anyhow::Result<CertifiedIssuer<'static, KeyPair>> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    Ok(CertifiedIssuer::self_signed(params, KeyPair::generate()?)?)
}

impl Pki {
    fn new() -> anyhow::Result<Pki> {
        let dir = tempfile::tempdir()?;
        let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text);
        let ca = new_ca("meshtable test CA")?;
        write("ca.pem", ca.pem())?;

        // The broker's certificate names localhost, not 127.0.0.1: the
        // address is the wrong host name.
        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".into()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "meshtable test broker");
        write("server.pem", params.signed_by(&key, &ca)?.pem())?;
        write("server.key", key.serialize_pem())?;

        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params
            .distinguished_name
            .push(DnType::CommonName, "meshtable test node");
        write("client.pem", params.signed_by(&key, &ca)?.pem())?;
        write("client.key", key.serialize_pem())?;

        write("other-ca.pem", new_ca("another CA")?.pem())?;
        write("other.key", KeyPair::generate()?.serialize_pem())?;
        Ok(Pki { dir })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

/// Mosquitto with two TLS listeners on free ports, on the CA's broker
/// certificate: `port` verifies no client, `mtls_port` requires a client
/// certificate of the CA. Killed on drop.
struct Mosquitto {
    child: Child,
    port: u16,
    mtls_port: u16,
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

impl Mosquitto {
    fn start(pki: &Pki) -> anyhow::Result<Mosquitto> {
        let (port, mtls_port) = (free_port()?, free_port()?);
        let files = format!(
            "cafile {}\ncertfile {}\nkeyfile {}\n",
            pki.path("ca.pem").display(),
            pki.path("server.pem").display(),
            pki.path("server.key").display(),
        );
        let conf = pki.path("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "allow_anonymous true\n\
                 listener {port} 127.0.0.1\n{files}\
                 listener {mtls_port} 127.0.0.1\n{files}require_certificate true\n"
            ),
        )?;
        let child = Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| anyhow::anyhow!("cannot start mosquitto (is it installed?): {e}"))?;
        let m = Mosquitto {
            child,
            port,
            mtls_port,
        };
        let deadline = Instant::now() + PATIENCE;
        while Instant::now() < deadline {
            let up = |p| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
            if up(port) && up(mtls_port) {
                return Ok(m);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("mosquitto does not listen on {port} and {mtls_port}")
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The agent's log, captured.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Log {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// Waits until the log holds every one of `texts`.
    fn wait_for(&self, texts: &[&str]) {
        self.wait_until(&format!("{texts:?}"), |log| {
            texts.iter().all(|t| log.contains(t))
        });
    }

    /// Waits until `done` holds of the log (`what` describes it).
    fn wait_until(&self, what: &str, done: impl Fn(&str) -> bool) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let log = self.text();
            if done(&log) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "the agent's log lacks {what}:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// An agent running in-process on a thread of its own, stopped (as by
/// SIGTERM) by [`Agent::stop`] or on drop.
struct Agent {
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<Result<(), String>>>,
    log: Log,
    _dir: tempfile::TempDir,
}

/// The agent's configuration: `url`, these TLS files, a node and state of
/// its own, full (not compact) reports every 200 ms, nothing from babeld.
fn config(
    url: &str,
    node: &str,
    ca_file: Option<PathBuf>,
    client: Option<ClientFiles>,
    dir: &Path,
) -> Config {
    let (client_cert_file, client_key_file) = client.unzip();
    let cli = Cli {
        mqtt_url: Some(url.to_owned()),
        network: Some("tls-test".to_owned()),
        node_id: Some(node.to_owned()),
        interval: Some(Duration::from_millis(200)),
        compact: Some(false),
        state_dir: Some(dir.join("state")),
        identity_dir: Some(dir.join("identity")),
        salt_file: Some(dir.join("salt")),
        babeld_socket: Some("off".to_owned()),
        ca_file,
        client_cert_file,
        client_key_file,
        ..Cli::default()
    };
    Config::merge(cli, FileConfig::default()).expect("a valid config")
}

impl Agent {
    fn start(
        url: &str,
        node: &str,
        ca_file: Option<PathBuf>,
        client: Option<ClientFiles>,
    ) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        let config = config(url, node, ca_file, client, dir.path());
        let log = Log::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let writer = log.clone();
        let node = node.to_owned();
        let thread = std::thread::spawn(move || {
            let subscriber = tracing_subscriber::fmt()
                .with_writer(move || writer.clone())
                .with_ansi(false)
                .with_env_filter("meshtable_agent=info")
                .finish();
            let _guard = tracing::subscriber::set_default(subscriber);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            runtime
                .block_on(meshtable_agent::run(&config, &node, async {
                    let _ = stopped.await;
                }))
                .map_err(|e| e.to_string())
        });
        Agent {
            stop: Some(stop),
            thread: Some(thread),
            log,
            _dir: dir,
        }
    }

    /// Stops the agent and returns how its run ended.
    fn stop(mut self) -> Result<(), String> {
        self.finish()
    }

    fn finish(&mut self) -> Result<(), String> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        match self.thread.take() {
            Some(t) => t.join().expect("the agent's thread does not panic"),
            None => Ok(()),
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let result = self.finish();
        if std::thread::panicking() {
            eprintln!("--- agent ({result:?}) ---\n{}", self.log.text());
        }
    }
}

/// Connects a client over TLS with `ca` (and a client certificate) to
/// `localhost:port`, through the agent's own TLS setup.
fn tls_options(
    id: &str,
    host: &str,
    port: u16,
    ca: &Path,
    client: Option<ClientFiles>,
) -> MqttOptions {
    let files = meshtable_agent::config::TlsFiles {
        ca_file: ca.to_owned(),
        client: client.map(
            |(cert_file, key_file)| meshtable_agent::config::ClientCertFiles {
                cert_file,
                key_file,
            },
        ),
    };
    let mut o = MqttOptions::new(id, host, port);
    o.set_keep_alive(Duration::from_secs(5))
        .set_max_packet_size(128 * 1024, 128 * 1024)
        .set_transport(meshtable_agent::tls::transport(&files).expect("the test's TLS files load"));
    o
}

/// A subscriber to the test network, over TLS.
struct Subscriber {
    runtime: tokio::runtime::Runtime,
    _client: AsyncClient,
    eventloop: EventLoop,
}

impl Subscriber {
    fn new(pki: &Pki, port: u16) -> Subscriber {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let o = tls_options("tls-test-sub", "localhost", port, &pki.path("ca.pem"), None);
        let (client, eventloop) = runtime.block_on(async { AsyncClient::new(o, 16) });
        let mut s = Subscriber {
            runtime,
            _client: client.clone(),
            eventloop,
        };
        s.runtime
            .block_on(client.subscribe("meshtable/v1/tls-test/#", QoS::AtLeastOnce))
            .unwrap();
        s.next(|e| matches!(e, Event::Incoming(Incoming::SubAck(_))).then_some(()));
        s
    }

    /// Polls until `pick` takes an event.
    fn next<T>(&mut self, mut pick: impl FnMut(Event) -> Option<T>) -> T {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        let eventloop = &mut self.eventloop;
        self.runtime.block_on(async {
            loop {
                let e = tokio::time::timeout_at(deadline, eventloop.poll())
                    .await
                    .expect("the awaited message arrives in time")
                    .expect("the broker stays reachable");
                if let Some(t) = pick(e) {
                    return t;
                }
            }
        })
    }

    /// Waits for a message of `node` that `pick` takes.
    fn expect<T>(&mut self, node: &str, mut pick: impl FnMut(Report) -> Option<T>) -> T {
        self.next(|e| {
            let Event::Incoming(Incoming::Publish(p)) = e else {
                return None;
            };
            let topic = Topic::parse(&p.topic).expect("a meshtable topic");
            if topic.node != node || p.payload.is_empty() {
                return None;
            }
            let (report, _) = Report::decode(topic.kind, &p.payload).expect("a decodable report");
            pick(report)
        })
    }

    /// Waits for the hello, the online state and telemetry reports 0, 1
    /// and 2 of `node`.
    fn expect_reports(&mut self, node: &str) {
        self.expect(node, |r| matches!(r, Report::Hello(_)).then_some(()));
        self.expect(node, |r| match r {
            Report::State(s) if s.status == Status::Online => Some(()),
            _ => None,
        });
        let mut seqs = Vec::new();
        while seqs.len() < 3 {
            seqs.push(self.expect(node, |r| match r {
                Report::Telemetry(t) => Some(t.seq),
                _ => None,
            }));
        }
        assert_eq!(seqs, [0, 1, 2], "reports in order, each once");
    }

    fn expect_offline(&mut self, node: &str) {
        self.expect(node, |r| match r {
            Report::State(s) if s.status == Status::Offline => Some(()),
            _ => None,
        });
    }
}

#[test]
fn the_agent_reports_over_tls() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let broker = Mosquitto::start(&pki)?;
    let mut sub = Subscriber::new(&pki, broker.port);

    let url = format!("mqtts://localhost:{}", broker.port);
    let agent = Agent::start(&url, "tls-node", Some(pki.path("ca.pem")), None);
    sub.expect_reports("tls-node");
    agent.log.wait_for(&["tls=true", "connected to the broker"]);
    agent.stop().map_err(anyhow::Error::msg)?;
    // A clean shutdown over TLS: the offline state, acknowledged.
    sub.expect_offline("tls-node");
    Ok(())
}

#[test]
fn the_agent_presents_its_client_certificate() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let broker = Mosquitto::start(&pki)?;
    let mut sub = Subscriber::new(&pki, broker.port);

    let url = format!("mqtts://localhost:{}", broker.mtls_port);
    let client = (pki.path("client.pem"), pki.path("client.key"));
    let agent = Agent::start(&url, "mtls-node", Some(pki.path("ca.pem")), Some(client));
    sub.expect_reports("mtls-node");
    agent.stop().map_err(anyhow::Error::msg)?;
    sub.expect_offline("mtls-node");

    // Without one, the listener refuses the agent.
    let agent = Agent::start(&url, "no-cert-node", Some(pki.path("ca.pem")), None);
    // (The broker's alert arrives after the client's side of the
    // handshake: certificate_required with TLS 1.3.)
    agent.log.wait_for(&[
        "tls handshake with the broker failed",
        "received fatal alert",
    ]);
    agent.stop().map_err(anyhow::Error::msg)?;
    Ok(())
}

#[test]
fn a_broker_of_another_ca_or_another_name_is_refused() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    let broker = Mosquitto::start(&pki)?;

    // The agent trusts another CA: the broker's certificate is refused.
    let url = format!("mqtts://localhost:{}", broker.port);
    let agent = Agent::start(&url, "other-ca-node", Some(pki.path("other-ca.pem")), None);
    agent.log.wait_for(&[
        "tls handshake with the broker failed",
        "invalid peer certificate: UnknownIssuer",
    ]);
    assert!(!agent.log.text().contains("connected to the broker"));
    agent.stop().map_err(anyhow::Error::msg)?;

    // The right CA, but the certificate names localhost, not 127.0.0.1.
    let url = format!("mqtts://127.0.0.1:{}", broker.port);
    let agent = Agent::start(&url, "wrong-name-node", Some(pki.path("ca.pem")), None);
    agent.log.wait_until("a refusal for the host name", |log| {
        log.contains("tls handshake with the broker failed")
            && (log.contains("invalid peer certificate: NotValidForName")
                || log.contains("invalid peer certificate: certificate not valid for name"))
    });
    assert!(!agent.log.text().contains("connected to the broker"));
    agent.stop().map_err(anyhow::Error::msg)?;
    Ok(())
}

#[test]
fn unusable_tls_files_stop_the_start() -> anyhow::Result<()> {
    let pki = Pki::new()?;
    // No broker: every case stops before connecting.
    let url = "mqtts://localhost:1";
    let key = std::fs::read_to_string(pki.path("client.key"))?;
    let key_body = key.lines().nth(1).expect("a PEM body line");
    let cases: [(Option<PathBuf>, Option<ClientFiles>, String); 5] = [
        (
            Some(pki.path("missing-ca.pem")),
            None,
            format!("cannot read {}", pki.path("missing-ca.pem").display()),
        ),
        (
            Some(pki.path("client.key")),
            None,
            format!(
                "{}: no PEM certificate found",
                pki.path("client.key").display()
            ),
        ),
        (
            Some(pki.path("ca.pem")),
            Some((pki.path("client.pem"), pki.path("client.pem"))),
            format!(
                "{}: no PEM private key found",
                pki.path("client.pem").display()
            ),
        ),
        (
            Some(pki.path("ca.pem")),
            Some((pki.path("client.pem"), pki.path("other.key"))),
            format!(
                "client certificate {} with key {}",
                pki.path("client.pem").display(),
                pki.path("other.key").display()
            ),
        ),
        (
            Some(pki.path("ca.pem")),
            Some((pki.path("client.pem"), pki.path("missing.key"))),
            format!("cannot read {}", pki.path("missing.key").display()),
        ),
    ];
    for (ca, client, want) in cases {
        let agent = Agent::start(url, "bad-files-node", ca, client);
        let e = agent.stop().expect_err("the start fails");
        assert!(e.contains(&want), "{e:?} lacks {want:?}");
        assert!(!e.contains(key_body), "{e:?} quotes the key");
    }
    // The config itself wants a CA file for mqtts://.
    let dir = tempfile::tempdir()?;
    let cli = Cli {
        mqtt_url: Some(url.to_owned()),
        state_dir: Some(dir.path().join("state")),
        ..Cli::default()
    };
    let e = Config::merge(cli, FileConfig::default())
        .unwrap_err()
        .to_string();
    assert!(e.contains("needs --ca-file"), "{e}");
    Ok(())
}

/// A one-file HTTPS server (rustls) on the CA's `localhost` certificate,
/// answering every complete request with a fixed enrollment; the requests
/// it read come out of the channel. Its thread ends with the test process.
fn https_enroll_server(pki: &Pki) -> anyhow::Result<(u16, std::sync::mpsc::Receiver<String>)> {
    use std::io::{Read as _, Write as _};
    let certs = meshtable_agent::tls::load_certs(&pki.path("server.pem"))?;
    let key = meshtable_agent::tls::load_key(&pki.path("server.key"))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_no_client_auth()
    .with_single_cert(certs, key)?;
    let config = Arc::new(config);
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(tcp) = tcp else { continue };
            let Ok(conn) = rustls::ServerConnection::new(config.clone()) else {
                continue;
            };
            let mut tls = rustls::StreamOwned::new(conn, tcp);
            let mut request = Vec::new();
            let mut chunk = [0; 4096];
            // Until the headers and Content-Length bytes of body are in;
            // a refused handshake ends the connection with an error.
            let complete = loop {
                match tls.read(&mut chunk) {
                    Ok(0) | Err(_) => break false,
                    Ok(n) => request.extend_from_slice(&chunk[..n]),
                }
                let text = String::from_utf8_lossy(&request);
                if let Some((head, body)) = text.split_once("\r\n\r\n") {
                    let length = head
                        .lines()
                        .find_map(|l| l.strip_prefix("Content-Length: "))
                        .and_then(|v| v.trim().parse::<usize>().ok())
                        .unwrap_or(0);
                    if body.len() >= length {
                        break true;
                    }
                }
            };
            if !complete {
                continue;
            }
            let body = r#"{"network":"tls-test","node":"enrolled-node","site":null,"client_salt":"00112233445566778899aabbccddeeff","mqtt_username":"enrolled-node","mqtt_password":"broker-password"}"#;
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(answer.as_bytes());
            tls.conn.send_close_notify();
            let _ = tls.flush();
            let _ = tx.send(String::from_utf8_lossy(&request).into_owned());
        }
    });
    Ok((port, rx))
}

#[test]
fn enrollment_over_https_checks_the_controller_certificate() -> anyhow::Result<()> {
    use meshtable_agent::enroll::{EnrollRequest, enroll};
    let pki = Pki::new()?;
    let (port, requests) = https_enroll_server(&pki)?;
    let request = |dir: &Path, host: &str, ca: Option<PathBuf>| EnrollRequest {
        dir: dir.to_owned(),
        controller: format!("https://{host}:{port}"),
        token: "mte_test_token".to_owned(),
        hostname: Some("router-1".to_owned()),
        ca_file: ca,
    };

    // Another CA, and a name the certificate does not hold: refused
    // before the token is sent.
    let dir = tempfile::tempdir()?;
    let cases = [
        ("localhost", pki.path("other-ca.pem"), "UnknownIssuer"),
        ("127.0.0.1", pki.path("ca.pem"), "not valid for name"),
    ];
    for (host, ca, why) in cases {
        let e = enroll(&request(dir.path(), host, Some(ca)))
            .expect_err("refused")
            .to_string();
        assert!(e.contains("tls: invalid peer certificate"), "{e}");
        assert!(
            e.contains(why) || (why == "not valid for name" && e.contains("NotValidForName")),
            "{e} lacks {why}"
        );
    }
    // Without a CA file, https:// is refused outright.
    let e = enroll(&request(dir.path(), "localhost", None)).expect_err("no CA file");
    assert!(e.to_string().contains("needs --ca-file"), "{e}");

    // The right CA and name: enrolled, the identity written.
    let id = enroll(&request(dir.path(), "localhost", Some(pki.path("ca.pem"))))?;
    assert_eq!(
        (id.network.as_str(), id.node.as_str()),
        ("tls-test", "enrolled-node")
    );
    let sent = requests.recv_timeout(PATIENCE)?;
    assert!(
        sent.starts_with("POST /api/v1/enroll HTTP/1.1\r\n"),
        "{sent}"
    );
    assert!(sent.contains("\"token\":\"mte_test_token\""), "{sent}");
    // Only the successful exchange reached the server's request reader.
    assert!(requests.try_recv().is_err());
    let identity = std::fs::read_to_string(dir.path().join("identity.toml"))?;
    assert!(
        identity.contains("controller = \"https://localhost:"),
        "{identity}"
    );
    Ok(())
}
