//! Bandwidth per node-hour (issue 3): bytes on the wire, MQTT framing
//! included, of a router with 5 interfaces, 2 radios, 10 stations and 6 babel
//! neighbours reporting every 60 s, for three encodings measured in the same
//! run: v1 JSON, v1 CBOR (full reports) and v2 compact CBOR (what
//! [`meshtable_agent::encode::Outgoing`] sends with compaction on).
//!
//! Each run connects a real rumqttc client, set up as the agent sets it up
//! (MQTT 3.1.1, fixed client id, clean session off, QoS 1, the offline last
//! will), through a TCP relay that counts the bytes of each direction, to a
//! real broker. It publishes the hello and the online state, then
//! [`HOURS`] hours of telemetry from [`MeshRouterSim`] one report after the
//! other, each once its PUBACK is in, with the reports' time simulated: no
//! sleeping. A second client, subscribed on the broker directly, decodes every
//! report as the controller would (v2 through a
//! [`meshtable_proto::Reassembler`]) and checks it against what was sent.
//!
//! Keepalive pings cannot show in simulated time; rumqttc sends one every
//! `keep_alive` (30 s in the agent) whatever the traffic, 2 bytes each way
//! with its 2-byte answer, so they are added by count and printed apart.
//!
//! Usage: `cargo run -p meshtable-agent --example bandwidth -- [host:port] [runs]`
//! (default 127.0.0.1:1883, 5 runs; each figure is the median of the runs,
//! each run a different simulation seed). `agent/bench/bandwidth.sh` runs it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use meshtable_agent::encode::{self, Outgoing, Topics};
use meshtable_proto::examples::{self, MeshRouterSim};
use meshtable_proto::{CompactPolicy, Encoding, Kind, Reassembler, Report, Telemetry};
use rumqttc::{AsyncClient, Event, EventLoop, Incoming, LastWill, MqttOptions, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Simulated hours per run: two, so that a run holds exactly one of the
/// compact form's full reports (one every 120 reports by default).
const HOURS: usize = 2;
/// Report interval, seconds.
const INTERVAL_S: usize = 60;
/// The agent's MQTT keepalive, seconds.
const KEEP_ALIVE_S: usize = 30;
/// The target, bytes per node-hour.
const TARGET: usize = 12 * 1024;

/// Bytes relayed client to broker (`up`) and back (`down`).
#[derive(Clone, Default)]
struct Counters {
    up: Arc<AtomicUsize>,
    down: Arc<AtomicUsize>,
}

impl Counters {
    fn get(&self) -> (usize, usize) {
        (
            self.up.load(Ordering::SeqCst),
            self.down.load(Ordering::SeqCst),
        )
    }
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    count: Arc<AtomicUsize>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                count.fetch_add(n, Ordering::SeqCst);
                if to.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown().await;
}

/// A byte-counting TCP relay to `broker`; returns its port.
async fn relay(broker: String, counters: Counters) -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&broker).await else {
                continue;
            };
            let (cr, cw) = client.into_split();
            let (sr, sw) = server.into_split();
            tokio::spawn(pump(cr, sw, counters.up.clone()));
            tokio::spawn(pump(sr, cw, counters.down.clone()));
        }
    });
    Ok(port)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Form {
    Json,
    Cbor,
    Compact,
}

impl Form {
    fn label(self) -> &'static str {
        match self {
            Form::Json => "JSON, full (v1)",
            Form::Cbor => "CBOR, full (v1)",
            Form::Compact => "CBOR, compact (v2)",
        }
    }
}

/// Polls `eventloop` until `n` PUBACKs have come in.
async fn acks(eventloop: &mut EventLoop, mut n: usize) -> anyhow::Result<()> {
    while n > 0 {
        match tokio::time::timeout(Duration::from_secs(10), eventloop.poll()).await {
            Ok(Ok(Event::Incoming(Incoming::PubAck(_)))) => n -= 1,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => bail!("publisher connection: {e}"),
            Err(_) => bail!("no puback within 10 s"),
        }
    }
    Ok(())
}

/// The report as the controller may hold it: the stations' numbers but
/// the mesh peers' signals may lag between the compact form's details.
fn comparable(t: &Telemetry) -> Telemetry {
    let mut t = t.clone();
    for s in &mut t.stations {
        s.rx_bytes = 0;
        s.tx_bytes = 0;
        s.tx_retries = 0;
        s.tx_failed = 0;
        s.inactive_ms = 0;
        s.tx_bitrate_100kbps = None;
        s.rx_bitrate_100kbps = None;
        if s.client_id.is_some() {
            s.signal_dbm = None;
            s.signal_avg_dbm = None;
        }
    }
    t
}

/// What one run measured, bytes.
struct Run {
    payload: usize,
    up: usize,
    down: usize,
    setup_up: usize,
    setup_down: usize,
}

async fn run(broker: &str, form: Form, seed: u64) -> anyhow::Result<Run> {
    let counters = Counters::default();
    let port = relay(broker.to_owned(), counters.clone()).await?;
    let (host, broker_port) = broker.rsplit_once(':').context("broker is host:port")?;
    let broker_port: u16 = broker_port.parse()?;
    let node = format!("bw{seed}{}", form as u8);
    let network = "bench";
    let topics = Topics::new(network, &node)?;

    // The controller's side: subscribed on the broker directly.
    let mut sub_opts = MqttOptions::new(format!("bench-sub-{node}"), host, broker_port);
    sub_opts.set_max_packet_size(64 * 1024, 64 * 1024);
    let (sub, mut sub_loop) = AsyncClient::new(sub_opts, 256);
    sub.subscribe(&topics.telemetry, QoS::AtLeastOnce).await?;
    loop {
        if let Event::Incoming(Incoming::SubAck(_)) = sub_loop.poll().await? {
            break;
        }
    }
    let received = tokio::spawn(async move {
        let mut out = Vec::new();
        while out.len() < HOURS * 3600 / INTERVAL_S {
            match tokio::time::timeout(Duration::from_secs(20), sub_loop.poll()).await {
                Ok(Ok(Event::Incoming(Incoming::Publish(p)))) => out.push(p.payload.to_vec()),
                Ok(Ok(_)) => {}
                _ => break,
            }
        }
        out
    });

    // The agent's side, set up as publish.rs sets it up, through the relay.
    let mut opts = MqttOptions::new(encode::client_id(network, &node), "127.0.0.1", port);
    opts.set_clean_session(false)
        .set_keep_alive(Duration::from_secs(KEEP_ALIVE_S as u64))
        .set_max_packet_size(16 * 1024, 64 * 1024)
        .set_last_will(LastWill::new(
            &topics.state,
            encode::offline(None),
            QoS::AtLeastOnce,
            true,
        ));
    let (client, mut eventloop) = AsyncClient::new(opts, 16);
    loop {
        if let Event::Incoming(Incoming::ConnAck(_)) = eventloop.poll().await? {
            break;
        }
    }
    let mut hello = examples::hello_firmware_v1();
    hello.hostname = node.clone();
    client
        .publish(
            &topics.hello,
            QoS::AtLeastOnce,
            true,
            meshtable_proto::encode_cbor(&hello),
        )
        .await?;
    client
        .publish(
            &topics.state,
            QoS::AtLeastOnce,
            true,
            encode::online(1_764_000_000_000),
        )
        .await?;
    acks(&mut eventloop, 2).await?;
    let (setup_up, setup_down) = counters.get();

    let mut sim = MeshRouterSim::new(seed);
    let mut outgoing = Outgoing::new(Some(CompactPolicy::default()));
    let mut sent = Vec::new();
    let mut payload_bytes = 0;
    for i in 0..HOURS * 3600 / INTERVAL_S {
        let mut t = if i == 0 {
            sim.report().clone()
        } else {
            sim.step().clone()
        };
        t.node = node.clone();
        let payload = match form {
            Form::Json => meshtable_proto::encode_json(&t),
            Form::Cbor => meshtable_proto::encode_cbor(&t),
            Form::Compact => outgoing.payload(meshtable_proto::encode_cbor(&t), false),
        };
        payload_bytes += payload.len();
        client
            .publish(&topics.telemetry, QoS::AtLeastOnce, false, payload)
            .await?;
        acks(&mut eventloop, 1).await?;
        sent.push(t);
    }
    let (up, down) = counters.get();
    // Leave nothing behind: clear the retained messages, end the session.
    client
        .publish(&topics.hello, QoS::AtLeastOnce, true, Vec::new())
        .await?;
    client
        .publish(&topics.state, QoS::AtLeastOnce, true, Vec::new())
        .await?;
    acks(&mut eventloop, 2).await?;
    client.disconnect().await?;
    let _ = tokio::time::timeout(Duration::from_secs(2), eventloop.poll()).await;

    // Everything arrived and decodes to what was sent.
    let got = received.await?;
    if got.len() != sent.len() {
        bail!(
            "{form:?}: the subscriber got {} of {} reports",
            got.len(),
            sent.len()
        );
    }
    let mut controller = Reassembler::new();
    for (payload, t) in got.iter().zip(&sent) {
        let decoded = match form {
            Form::Compact => controller.decode(&node, payload)?.0,
            _ => match Report::decode(Kind::Telemetry, payload)? {
                (Report::Telemetry(d), enc) => {
                    let want = if form == Form::Json {
                        Encoding::Json
                    } else {
                        Encoding::Cbor
                    };
                    if enc != want {
                        bail!("{form:?}: decoded as {enc:?}");
                    }
                    d
                }
                _ => bail!("not telemetry"),
            },
        };
        let exact = form != Form::Compact;
        let same = if exact {
            decoded == *t
        } else {
            comparable(&decoded) == comparable(t)
        };
        if !same {
            bail!("{form:?}: report {} decodes differently", t.seq);
        }
    }
    Ok(Run {
        payload: payload_bytes / HOURS,
        up: (up - setup_up) / HOURS,
        down: (down - setup_down) / HOURS,
        setup_up,
        setup_down,
    })
}

fn median(mut v: Vec<usize>) -> usize {
    v.sort_unstable();
    v[v.len() / 2]
}

fn kib(b: usize) -> String {
    format!("{:.1}", b as f64 / 1024.0)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let broker = args.next().unwrap_or_else(|| "127.0.0.1:1883".to_owned());
    let runs: u64 = args.next().map(|r| r.parse()).transpose()?.unwrap_or(5);
    let pings = 3600 / KEEP_ALIVE_S;
    let ping_bytes = pings * 2;
    let full = examples::telemetry_mesh_v1();
    println!(
        "bandwidth per node-hour at a {INTERVAL_S} s interval: {} interfaces, {} radios, \
         {} stations, {} babel neighbours, {} routes",
        full.interfaces.len(),
        full.radios.len(),
        full.stations.len(),
        full.neighbours.len(),
        full.routes.len()
    );
    println!(
        "MQTT 3.1.1, QoS 1, rumqttc through a byte-counting TCP relay to {broker}; \
         {HOURS} simulated hours per run, median of {runs} runs (seeds 1..={runs})"
    );
    println!(
        "{:<20} {:>12} {:>12} {:>12} {:>14} {:>10}",
        "encoding", "payload B/h", "up B/h", "down B/h", "up+down KiB/h", "<= 12 KiB"
    );
    let mut setup = Vec::new();
    for form in [Form::Json, Form::Cbor, Form::Compact] {
        let mut results = Vec::new();
        for seed in 1..=runs {
            results.push(run(&broker, form, seed).await?);
        }
        let payload = median(results.iter().map(|r| r.payload).collect());
        let up = median(results.iter().map(|r| r.up).collect()) + ping_bytes;
        let down = median(results.iter().map(|r| r.down).collect()) + ping_bytes;
        setup.push((
            form,
            median(results.iter().map(|r| r.setup_up).collect()),
            median(results.iter().map(|r| r.setup_down).collect()),
        ));
        println!(
            "{:<20} {:>12} {:>12} {:>12} {:>14} {:>10}",
            form.label(),
            payload,
            up,
            down,
            kib(up + down),
            if up + down <= TARGET { "met" } else { "MISSED" }
        );
    }
    println!(
        "up and down include {pings} keepalive pings an hour (rumqttc pings every \
         {KEEP_ALIVE_S} s whatever the traffic): {ping_bytes} B each way, counted, not measured"
    );
    for (form, up, down) in setup {
        println!(
            "once per connection ({}): CONNECT, hello and online state {up} B up, \
             {down} B down",
            form.label()
        );
    }
    println!(
        "for comparison, as quoted in issue 3 (not measured here): \
         Gluon respondd about 40 KiB/h, OpenWISP monitoring about 100 KiB/h"
    );
    Ok(())
}
