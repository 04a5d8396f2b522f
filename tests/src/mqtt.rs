//! A plain MQTT client (rumqttc) for hand-made messages, retained-message
//! checks, and cleaning up after tests on a shared broker.

use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use rumqttc::{Client, Event, MqttOptions, Packet, QoS};

/// How long connecting, acknowledgements and deliveries may take.
const MQTT_TIMEOUT: Duration = Duration::from_secs(10);

/// Packets up to this size may be sent and received (the controller must
/// see a payload above `MAX_PAYLOAD` to reject it as oversized).
const MAX_PACKET: usize = 1024 * 1024;

/// A message received on a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    /// The topic it was published to.
    pub topic: String,
    /// The payload.
    pub payload: Vec<u8>,
    /// Whether the broker delivered it as a retained message.
    pub retain: bool,
}

/// A connected MQTT client with a clean session, QoS 1.
///
/// A thread drives the connection; [`MqttClient::flush`] waits until the
/// broker has acknowledged everything published.
pub struct MqttClient {
    client: Client,
    events: Receiver<Result<Event, String>>,
    published: usize,
    acked: usize,
    subscribed: usize,
    received: Vec<Received>,
    url: String,
}

impl std::fmt::Debug for MqttClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MqttClient")
            .field("url", &self.url)
            .field("published", &self.published)
            .field("acked", &self.acked)
            .finish_non_exhaustive()
    }
}

impl MqttClient {
    /// Connects to `mqtt://host:port` as `client_id` and waits for the
    /// broker's ConnAck.
    ///
    /// # Panics
    ///
    /// When the broker does not accept the connection in time.
    pub fn connect(mqtt_url: &str, client_id: &str) -> MqttClient {
        MqttClient::try_connect(mqtt_url, client_id)
            .unwrap_or_else(|e| panic!("cannot connect to {mqtt_url} as {client_id}: {e}"))
    }

    /// Like [`MqttClient::connect`], returning what went wrong.
    pub fn try_connect(mqtt_url: &str, client_id: &str) -> Result<MqttClient, String> {
        MqttClient::try_connect_as(mqtt_url, client_id, None)
    }

    /// Like [`MqttClient::try_connect`], logging in as `login` (user, password).
    pub fn try_connect_as(
        mqtt_url: &str,
        client_id: &str,
        login: Option<(&str, &str)>,
    ) -> Result<MqttClient, String> {
        let (host, port) = crate::urls::host_port(mqtt_url, 1883)?;
        let mut opts = MqttOptions::new(client_id, host, port);
        opts.set_keep_alive(Duration::from_secs(30))
            .set_clean_session(true)
            .set_max_packet_size(MAX_PACKET, MAX_PACKET);
        if let Some((user, password)) = login {
            opts.set_credentials(user, password);
        }
        let (client, mut connection) = Client::new(opts, 64);
        let (tx, events) = mpsc::channel();
        thread::spawn(move || {
            for event in connection.iter() {
                let failed = event.is_err();
                if tx.send(event.map_err(|e| e.to_string())).is_err() {
                    break;
                }
                if failed {
                    // rumqttc reconnects on the next poll without a pause.
                    thread::sleep(Duration::from_millis(200));
                }
            }
        });
        let mut mqtt = MqttClient {
            client,
            events,
            published: 0,
            acked: 0,
            subscribed: 0,
            received: Vec::new(),
            url: mqtt_url.to_owned(),
        };
        mqtt.drive_until(|_, event| {
            matches!(event, Event::Incoming(Packet::ConnAck(_))).then_some(())
        })
        .map_err(|e| format!("no ConnAck: {e}"))?;
        Ok(mqtt)
    }

    /// Handles events until `done` says so, or fails on a connection error
    /// or after [`MQTT_TIMEOUT`].
    fn drive_until(
        &mut self,
        mut done: impl FnMut(&MqttClient, &Event) -> Option<()>,
    ) -> Result<(), String> {
        let deadline = Instant::now() + MQTT_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let event = match self.events.recv_timeout(left) {
                Ok(Ok(event)) => event,
                Ok(Err(e)) => return Err(format!("connection error: {e}")),
                Err(RecvTimeoutError::Timeout) => {
                    return Err(format!("timed out after {MQTT_TIMEOUT:?}"));
                }
                Err(RecvTimeoutError::Disconnected) => return Err("connection closed".to_owned()),
            };
            match &event {
                Event::Incoming(Packet::PubAck(_)) => self.acked += 1,
                Event::Incoming(Packet::SubAck(_)) => self.subscribed += 1,
                Event::Incoming(Packet::Publish(p)) => self.received.push(Received {
                    topic: p.topic.clone(),
                    payload: p.payload.to_vec(),
                    retain: p.retain,
                }),
                _ => {}
            }
            if done(self, &event).is_some() {
                return Ok(());
            }
        }
    }

    /// Publishes `payload` to `topic`, QoS 1, not retained.
    ///
    /// # Panics
    ///
    /// When the client refuses the request (an invalid topic).
    pub fn publish(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.send(topic, payload.into(), false);
    }

    /// Publishes `payload` to `topic`, QoS 1, retained.
    ///
    /// # Panics
    ///
    /// When the client refuses the request (an invalid topic).
    pub fn publish_retained(&mut self, topic: &str, payload: impl Into<Vec<u8>>) {
        self.send(topic, payload.into(), true);
    }

    fn send(&mut self, topic: &str, payload: Vec<u8>, retain: bool) {
        self.client
            .publish(topic, QoS::AtLeastOnce, retain, payload)
            .unwrap_or_else(|e| panic!("cannot publish to {topic}: {e}"));
        self.published += 1;
    }

    /// Waits until the broker has acknowledged every publish so far.
    ///
    /// # Panics
    ///
    /// When the connection fails (a broker closes it when it refuses a
    /// packet) or the acknowledgements do not arrive in time.
    pub fn flush(&mut self) {
        if self.acked >= self.published {
            return;
        }
        let published = self.published;
        if let Err(e) = self.drive_until(|m, _| (m.acked >= published).then_some(())) {
            panic!(
                "{}: {} of {published} publishes acknowledged: {e}",
                self.url, self.acked
            );
        }
    }

    /// Subscribes to `filter` with QoS 1 and waits for the SubAck.
    ///
    /// # Panics
    ///
    /// When the broker does not acknowledge the subscription in time.
    pub fn subscribe(&mut self, filter: &str) {
        self.client
            .subscribe(filter, QoS::AtLeastOnce)
            .unwrap_or_else(|e| panic!("cannot subscribe to {filter}: {e}"));
        let want = self.subscribed + 1;
        if let Err(e) = self.drive_until(|m, _| (m.subscribed >= want).then_some(())) {
            panic!(
                "{}: subscription to {filter} not acknowledged: {e}",
                self.url
            );
        }
    }

    /// Waits up to `timeout` for a message on `topic` (one received earlier
    /// counts too) and returns it.
    pub fn wait_message(&mut self, topic: &str, timeout: Duration) -> Option<Received> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(i) = self.received.iter().position(|r| r.topic == topic) {
                return Some(self.received.remove(i));
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            match self.events.recv_timeout(left) {
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => self.received.push(Received {
                    topic: p.topic.clone(),
                    payload: p.payload.to_vec(),
                    retain: p.retain,
                }),
                Ok(Ok(Event::Incoming(Packet::PubAck(_)))) => self.acked += 1,
                Ok(Ok(_)) => {}
                Ok(Err(e)) => panic!("{}: connection error: {e}", self.url),
                Err(_) => return None,
            }
        }
    }

    /// Disconnects cleanly and waits (briefly) for the connection to close.
    pub fn disconnect(self) {
        // A broker that already closed the connection makes this fail; the
        // session is clean either way.
        let _ = self.client.disconnect();
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.events.recv_timeout(left) {
                Ok(Ok(Event::Outgoing(rumqttc::Outgoing::Disconnect))) | Ok(Err(_)) | Err(_) => {
                    break;
                }
                Ok(Ok(_)) => {}
            }
        }
    }
}

/// Deletes the broker's session of `client_id` (connects with a clean session
/// and disconnects). Used on a shared broker after a test, so persistent
/// sessions of unique client ids do not pile up there. Failures are printed,
/// not raised: this runs in `Drop`.
pub fn purge_session(mqtt_url: &str, client_id: &str) {
    match MqttClient::try_connect(mqtt_url, client_id) {
        Ok(c) => c.disconnect(),
        Err(e) => eprintln!("warning: cannot purge the MQTT session of {client_id}: {e}"),
    }
}

/// Deletes the retained messages (hello and state) of `node` in `network`
/// from a shared broker. Failures are printed, not raised.
pub fn clear_retained(mqtt_url: &str, network: &str, node: &str) {
    let id = crate::unique("e2e-cleanup");
    let mut c = match MqttClient::try_connect(mqtt_url, &id) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("warning: cannot clear retained messages of {network}/{node}: {e}");
            return;
        }
    };
    for kind in ["hello", "state"] {
        c.publish_retained(&format!("meshtable/v1/{network}/{node}/{kind}"), Vec::new());
    }
    if let Err(e) = c.drive_until(|m, _| (m.acked >= m.published).then_some(())) {
        eprintln!("warning: clearing retained messages of {network}/{node}: {e}");
    }
    c.disconnect();
}

/// Cleans up after an agent on a shared broker when dropped: deletes the
/// node's retained hello and state and the agent's persistent session
/// (client id `meshtable-<network>-<node>`). Does nothing for the embedded
/// broker, which goes away with its controller.
#[derive(Debug)]
pub struct SharedBrokerCleanup {
    url: Option<String>,
    network: String,
    node: String,
}

impl SharedBrokerCleanup {
    /// Arms the cleanup for `node` in `network` on `backend`'s broker.
    pub fn new(backend: &crate::Backend, network: &str, node: &str) -> SharedBrokerCleanup {
        SharedBrokerCleanup {
            url: backend.mqtt_url().map(str::to_owned),
            network: network.to_owned(),
            node: node.to_owned(),
        }
    }
}

impl Drop for SharedBrokerCleanup {
    fn drop(&mut self) {
        if let Some(url) = &self.url {
            purge_session(url, &format!("meshtable-{}-{}", self.network, self.node));
            clear_retained(url, &self.network, &self.node);
        }
    }
}
