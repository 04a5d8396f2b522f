//! TLS with a local CA generated here (rcgen). HTTPS on the controller's
//! HTTP listener: a client trusting the CA gets answers, one that does not,
//! or speaks plain HTTP, gets none; a key that does not match its
//! certificate stops the start. MQTT over TLS: the controller's ingest
//! connects to a real Mosquitto with a TLS listener (`mqtts://` and
//! `--mqtt-ca`), and a client trusting another CA is refused.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use meshtable::config::{Config, Layer};
use meshtable::serve::{Controller, Listeners, ServeError};
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair, KeyUsagePurpose,
};

/// A CA and a server certificate for `localhost` and 127.0.0.1 it signed,
/// as PEM files in a temporary directory.
struct TestCa {
    dir: tempfile::TempDir,
    ca_pem: String,
}

impl TestCa {
    fn new() -> Result<TestCa> {
        let dir = tempfile::tempdir()?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(DnType::CommonName, "meshtable test CA");
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

        let key = KeyPair::generate()?;
        let mut params = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "meshtable test server");
        let cert = params.signed_by(&key, &ca)?;

        std::fs::write(dir.path().join("ca.pem"), ca.pem())?;
        std::fs::write(dir.path().join("server.pem"), cert.pem())?;
        std::fs::write(dir.path().join("server.key"), key.serialize_pem())?;
        // Another CA, which signed nothing here.
        let mut other = CertificateParams::new(Vec::<String>::new())?;
        other.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let other = CertifiedIssuer::self_signed(other, KeyPair::generate()?)?;
        std::fs::write(dir.path().join("other-ca.pem"), other.pem())?;
        // A key of nobody's certificate.
        std::fs::write(
            dir.path().join("other.key"),
            KeyPair::generate()?.serialize_pem(),
        )?;
        Ok(TestCa {
            ca_pem: ca.pem(),
            dir,
        })
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

async fn start(data: &Path, cert: PathBuf, key: PathBuf) -> Result<Controller, ServeError> {
    let layer = Layer {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        mqtt_listen: Some("127.0.0.1:0".parse().unwrap()),
        data_dir: Some(data.to_owned()),
        tls_cert: Some(cert),
        tls_key: Some(key),
        ..Layer::default()
    };
    let config = Config::resolve(&layer, None).expect("valid config");
    let listeners = Listeners::bind(&config)?;
    tokio::time::timeout(
        Duration::from_secs(30),
        Controller::start(&config, listeners),
    )
    .await
    .expect("controller starts in time")
}

fn client(ca_pem: Option<&str>) -> Result<reqwest::Client> {
    // reqwest is built without a default TLS provider: name one, once.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut b = reqwest::Client::builder()
        .use_rustls_tls()
        .timeout(Duration::from_secs(10));
    if let Some(pem) = ca_pem {
        b = b.add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes())?);
    }
    Ok(b.build()?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_with_a_generated_ca() -> Result<()> {
    let ca = TestCa::new()?;
    let data = tempfile::tempdir()?;
    let controller = start(data.path(), ca.path("server.pem"), ca.path("server.key")).await?;
    let url = controller.http_url();
    assert!(url.starts_with("https://127.0.0.1:"), "{url}");

    let r = client(Some(&ca.ca_pem))?
        .get(format!("{url}/healthz"))
        .send()
        .await
        .context("GET /healthz over https")?;
    assert_eq!(r.status(), 200);
    // By name as well as by address: the certificate holds both.
    let port = controller.http_addr().port();
    let r = client(Some(&ca.ca_pem))?
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await?;
    assert_eq!(r.status(), 200);

    // A client that does not trust the CA refuses the server.
    let e = client(None)?
        .get(format!("{url}/healthz"))
        .send()
        .await
        .expect_err("an unknown CA is refused");
    assert!(e.is_connect(), "{e:?}");
    // Plain HTTP on the HTTPS port gets no answer.
    let plain = url.replacen("https://", "http://", 1);
    assert!(
        client(None)?
            .get(format!("{plain}/healthz"))
            .send()
            .await
            .is_err()
    );
    // ... and the listener still serves after those failed handshakes.
    let r = client(Some(&ca.ca_pem))?
        .get(format!("{url}/healthz"))
        .send()
        .await?;
    assert_eq!(r.status(), 200);

    controller.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_that_does_not_match_stops_the_start() -> Result<()> {
    let ca = TestCa::new()?;
    let data = tempfile::tempdir()?;
    let e = start(data.path(), ca.path("server.pem"), ca.path("other.key"))
        .await
        .expect_err("mismatched key");
    assert!(matches!(e, ServeError::Tls(_)), "{e:?}");
    let e = start(data.path(), ca.path("server.pem"), ca.path("missing.key"))
        .await
        .expect_err("missing key");
    assert!(e.to_string().contains("missing.key"), "{e}");
    // A key file given as the certificate: no certificate in it.
    let e = start(data.path(), ca.path("server.key"), ca.path("server.key"))
        .await
        .expect_err("no certificate");
    assert!(e.to_string().contains("no PEM certificate"), "{e}");
    Ok(())
}

#[test]
fn cert_and_key_go_together() {
    for (cert, key, flag) in [
        (Some("c.pem"), None, "--tls-cert"),
        (None, Some("k.pem"), "--tls-key"),
    ] {
        let layer = Layer {
            tls_cert: cert.map(PathBuf::from),
            tls_key: key.map(PathBuf::from),
            ..Layer::default()
        };
        let e = Config::resolve(&layer, None).unwrap_err().to_string();
        assert!(e.contains(flag), "{e}");
    }
    let layer = Layer::from_toml(
        "tls_cert = \"c.pem\"\ntls_key = \"k.pem\"\n",
        Path::new("t"),
    )
    .unwrap();
    let config = Config::resolve(&layer, None).unwrap();
    let tls = config.tls.expect("tls files");
    assert_eq!(
        (tls.cert, tls.key),
        (PathBuf::from("c.pem"), PathBuf::from("k.pem"))
    );
}

/// Mosquitto with one TLS listener on a free port, using the CA's server
/// certificate; killed on drop.
struct Mosquitto {
    child: std::process::Child,
    port: u16,
}

impl Mosquitto {
    fn start(ca: &TestCa) -> Result<Mosquitto> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf = ca.path("mosquitto.conf");
        std::fs::write(
            &conf,
            format!(
                "listener {port} 127.0.0.1\nallow_anonymous true\n\
                 cafile {}\ncertfile {}\nkeyfile {}\n",
                ca.path("ca.pem").display(),
                ca.path("server.pem").display(),
                ca.path("server.key").display(),
            ),
        )?;
        let child = std::process::Command::new("mosquitto")
            .arg("-c")
            .arg(&conf)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("mosquitto is installed")?;
        let m = Mosquitto { child, port };
        for _ in 0..200 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(m);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("mosquitto does not listen on {port}")
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls a client's event loop until it is connected, or its first error.
async fn connect(ca: &Path, port: u16) -> Result<(), rumqttc::ConnectionError> {
    let mut o = rumqttc::MqttOptions::new("tls-probe", "localhost", port);
    o.set_transport(meshtable::tls::mqtt_transport(ca).expect("ca loads"));
    let (_client, mut events) = rumqttc::AsyncClient::new(o, 4);
    loop {
        if let rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)) = events.poll().await? {
            return Ok(());
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_over_tls_to_mosquitto() -> Result<()> {
    let ca = TestCa::new()?;
    let broker = Mosquitto::start(&ca)?;

    // A client trusting the CA connects; one trusting another CA does not.
    connect(&ca.path("ca.pem"), broker.port).await?;
    let e = connect(&ca.path("other-ca.pem"), broker.port)
        .await
        .expect_err("a broker certificate of an unknown CA is refused");
    assert!(matches!(e, rumqttc::ConnectionError::Tls(_)), "{e:?}");

    // The controller's ingest: start returns once it has subscribed, over TLS.
    let data = tempfile::tempdir()?;
    let layer = Layer {
        listen: Some("127.0.0.1:0".parse()?),
        data_dir: Some(data.path().to_owned()),
        mqtt_url: Some(format!("mqtts://localhost:{}", broker.port)),
        mqtt_ca: Some(ca.path("ca.pem")),
        ..Layer::default()
    };
    let config = Config::resolve(&layer, None)?;
    let listeners = Listeners::bind(&config)?;
    let controller = tokio::time::timeout(
        Duration::from_secs(30),
        Controller::start(&config, listeners),
    )
    .await
    .context("controller did not subscribe over tls")??;
    controller.shutdown().await;

    // mqtts:// without a CA, and a CA without mqtts://, are refused.
    let no_ca = Layer {
        mqtt_ca: None,
        ..layer.clone()
    };
    let e = Config::resolve(&no_ca, None).unwrap_err().to_string();
    assert!(e.contains("--mqtt-ca"), "{e}");
    let plain = Layer {
        mqtt_url: Some(format!("mqtt://localhost:{}", broker.port)),
        ..layer
    };
    let e = Config::resolve(&plain, None).unwrap_err().to_string();
    assert!(e.contains("mqtts://"), "{e}");
    Ok(())
}
