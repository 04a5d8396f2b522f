//! Encode: the agent's topics, client id and payloads, on top of
//! `meshtable-proto` (CBOR on the wire, JSON for `--once`).

use meshtable_proto::{
    CompactPolicy, Compactor, Hello, Kind, State, Status, Telemetry, Topic, TopicError, VERSION,
};
use serde::Serialize;

/// The three topics of one node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    /// `meshtable/v1/{network}/{node}/hello`
    pub hello: String,
    /// `meshtable/v1/{network}/{node}/state`
    pub state: String,
    /// `meshtable/v1/{network}/{node}/telemetry`
    pub telemetry: String,
}

impl Topics {
    /// The topics of `node` in `network`; both ids are validated.
    pub fn new(network: &str, node: &str) -> Result<Topics, TopicError> {
        let topic = |kind| Topic::new(network, node, kind).map(|t| t.to_string());
        Ok(Topics {
            hello: topic(Kind::Hello)?,
            state: topic(Kind::State)?,
            telemetry: topic(Kind::Telemetry)?,
        })
    }
}

/// The fixed MQTT client id of a node: `meshtable-<network>-<node>`. Being
/// fixed is what makes the broker keep the session (clean session off).
pub fn client_id(network: &str, node: &str) -> String {
    format!("meshtable-{network}-{node}")
}

/// The online state published at every connect.
pub fn online(time_ms: u64) -> Vec<u8> {
    meshtable_proto::encode_cbor(&State {
        v: VERSION,
        status: Status::Online,
        time_ms: Some(time_ms),
    })
}

/// The offline state published at a clean shutdown (with its time), and
/// registered as the last will (without: its time is unknown when registered).
pub fn offline(time_ms: Option<u64>) -> Vec<u8> {
    meshtable_proto::encode_cbor(&State {
        v: VERSION,
        status: Status::Offline,
        time_ms,
    })
}

/// The spooled report `payload` (CBOR telemetry) marked as backfill. A
/// payload that does not decode (which its checksum makes all but
/// impossible) is returned as it is, for the controller to judge.
pub fn mark_backfill(payload: Vec<u8>) -> Vec<u8> {
    match meshtable_proto::decode::<Telemetry>(&payload) {
        Ok((mut t, _)) => {
            t.backfill = true;
            meshtable_proto::encode_cbor(&t)
        }
        Err(e) => {
            tracing::warn!(error = %e, "spooled report does not decode, sent unmarked");
            payload
        }
    }
}

/// Turns spooled reports (full v1 CBOR) into the payloads sent: marks
/// replays as backfill and, with compaction on, writes each report as a v2
/// compact report against the one sent before it on the same connection
/// (see [`meshtable_proto::Compactor`]; the controller must decode v2 with a
/// [`meshtable_proto::Reassembler`]).
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    compactor: Option<Compactor>,
}

impl Outgoing {
    /// Full reports only (`None`), or compact ones with `policy`.
    pub fn new(compact: Option<CompactPolicy>) -> Outgoing {
        Outgoing {
            compactor: compact.map(Compactor::new),
        }
    }

    /// Forgets the report sent before: call when a connection is lost, as
    /// the next connection's first report must be full.
    pub fn reset(&mut self) {
        if let Some(c) = &mut self.compactor {
            c.reset();
        }
    }

    /// The payload for one spooled report, in sending order.
    pub fn payload(&mut self, spooled: Vec<u8>, backfill: bool) -> Vec<u8> {
        let Some(compactor) = &mut self.compactor else {
            return if backfill {
                mark_backfill(spooled)
            } else {
                spooled
            };
        };
        match meshtable_proto::decode::<Telemetry>(&spooled) {
            Ok((mut t, _)) => {
                t.backfill |= backfill;
                compactor.encode(&t)
            }
            Err(e) => {
                tracing::warn!(error = %e, "spooled report does not decode, sent as it is");
                compactor.reset();
                spooled
            }
        }
    }
}

/// What `--once` prints: one hello and one telemetry report.
#[derive(Debug, Serialize)]
pub struct Once<'a> {
    /// The hello the agent would publish at connect.
    pub hello: &'a Hello,
    /// The first telemetry report (`seq` 0).
    pub telemetry: &'a Telemetry,
}

/// `{"hello":...,"telemetry":...}` as one line of JSON.
pub fn once_json(hello: &Hello, telemetry: &Telemetry) -> String {
    // Both types serialize infallibly (string keys, finite floats).
    serde_json::to_string(&Once { hello, telemetry }).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshtable_proto::{Report, examples};

    #[test]
    fn topics_and_client_id() {
        let t = Topics::new("leipzig", "02fc00000001").unwrap();
        assert_eq!(t.hello, "meshtable/v1/leipzig/02fc00000001/hello");
        assert_eq!(t.state, "meshtable/v1/leipzig/02fc00000001/state");
        assert_eq!(t.telemetry, "meshtable/v1/leipzig/02fc00000001/telemetry");
        assert!(Topics::new("Leipzig", "x").is_err());
        assert!(Topics::new("leipzig", "a/b").is_err());
        assert_eq!(
            client_id("leipzig", "02fc00000001"),
            "meshtable-leipzig-02fc00000001"
        );
    }

    #[test]
    fn states_decode() {
        for (payload, status, time) in [
            (online(5), Status::Online, Some(5)),
            (offline(None), Status::Offline, None),
            (offline(Some(7)), Status::Offline, Some(7)),
        ] {
            let (r, _) = Report::decode(Kind::State, &payload).unwrap();
            let Report::State(s) = r else {
                panic!("not a state")
            };
            assert_eq!((s.status, s.time_ms), (status, time));
        }
    }

    #[test]
    fn backfill_marking() {
        let live = meshtable_proto::encode_cbor(&examples::telemetry_v1());
        let (r, _) = Report::decode(Kind::Telemetry, &mark_backfill(live.clone())).unwrap();
        let Report::Telemetry(t) = r else {
            panic!("not telemetry")
        };
        assert_eq!(
            t,
            Telemetry {
                backfill: true,
                ..examples::telemetry_v1()
            }
        );
        // Not a report: left alone.
        assert_eq!(mark_backfill(b"junk".to_vec()), b"junk");
    }

    #[test]
    fn outgoing_payloads() {
        let mut sim = examples::MeshRouterSim::new(7);
        let reports: Vec<Telemetry> = std::iter::once(sim.report().clone())
            .chain((0..30).map(|_| sim.step().clone()))
            .collect();
        let spooled: Vec<Vec<u8>> = reports.iter().map(meshtable_proto::encode_cbor).collect();
        // Compaction off: the spooled bytes, or marked backfill.
        let mut plain = Outgoing::new(None);
        assert_eq!(plain.payload(spooled[0].clone(), false), spooled[0]);
        let (t, _) =
            meshtable_proto::decode::<Telemetry>(&plain.payload(spooled[1].clone(), true)).unwrap();
        assert!(t.backfill);
        // Compaction on: the controller's reassembler gets every report back,
        // across a lost connection, with replays marked backfill.
        let mut out = Outgoing::new(Some(CompactPolicy {
            full_every: 0,
            detail_every: 1,
        }));
        let mut controller = meshtable_proto::Reassembler::new();
        let mut bytes = 0;
        for (i, (t, p)) in reports.iter().zip(&spooled).enumerate() {
            if i == 10 {
                out.reset();
            }
            let backfill = (10..13).contains(&i);
            let payload = out.payload(p.clone(), backfill);
            bytes += payload.len();
            let (got, _) = controller.decode("n", &payload).unwrap();
            assert_eq!(
                got,
                Telemetry {
                    backfill,
                    ..t.clone()
                },
                "report {i}"
            );
        }
        let full: usize = spooled.iter().map(Vec::len).sum();
        assert!(bytes * 4 < full, "{bytes} of {full} bytes");
        // Junk passes through, and the next report is full again.
        assert_eq!(out.payload(b"junk".to_vec(), false), b"junk");
        assert_eq!(out.payload(spooled[5].clone(), false), spooled[5]);
    }

    #[test]
    fn once_shape() {
        let v: serde_json::Value =
            serde_json::from_str(&once_json(&examples::hello_v1(), &examples::telemetry_v1()))
                .unwrap();
        let obj = v.as_object().unwrap();
        assert_eq!(obj.keys().collect::<Vec<_>>(), ["hello", "telemetry"]);
        assert_eq!(v["telemetry"]["node"], "1a3671205872");
        assert_eq!(v["hello"]["interfaces"][0]["kind"], "ethernet");
    }
}
