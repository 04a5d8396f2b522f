//! Publishing test messages to the controller's broker. Included by path.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};

/// Publishes every message `(topic, payload, retain)` at QoS 1 on one
/// connection, in order, and waits for the broker's acks.
pub async fn publish_all(broker: SocketAddr, messages: Vec<(String, Vec<u8>, bool)>) -> Result<()> {
    let mut opts = MqttOptions::new("test-publisher", broker.ip().to_string(), broker.port());
    opts.set_max_packet_size(1024 * 1024, 1024 * 1024);
    let (client, mut eventloop) = AsyncClient::new(opts, 100);
    let n = messages.len();
    tokio::spawn(async move {
        for (topic, payload, retain) in messages {
            client
                .publish(topic, QoS::AtLeastOnce, retain, payload)
                .await
                .unwrap();
        }
    });
    let mut acks = 0;
    tokio::time::timeout(Duration::from_secs(20), async {
        while acks < n {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => acks += 1,
                Ok(Event::Outgoing(Outgoing::Disconnect)) => bail!("disconnected"),
                Ok(_) => {}
                Err(e) => bail!("publisher connection failed: {e}"),
            }
        }
        Ok(())
    })
    .await
    .context("broker did not ack every publish")??;
    Ok(())
}
