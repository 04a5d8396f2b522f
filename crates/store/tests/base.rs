//! The persisted telemetry base on both backends: the last full report of
//! each node, kept for the controller's reassembly of compact reports after
//! a restart; never set back by a redelivered older report. Bases are
//! written only by `record_batch`, in the batch's transaction, so the test
//! goes through it.

mod common;

use anyhow::Result;
use common::each_backend;
use meshtable_proto::{Reassembler, Telemetry, decode, examples};
use meshtable_store::{Content, Incoming, Outcome, Store};

const T0: i64 = 1_800_000_000_000;

fn report(node: &str, boot: &str, seq: u64) -> Telemetry {
    let mut t = Telemetry {
        node: node.to_owned(),
        boot_id: boot.to_owned(),
        seq,
        ..examples::telemetry_v1()
    };
    t.uptime_ms += seq * 1_000;
    t.time_ms += seq * 1_000;
    t
}

/// Records `reports` (network, node, report) as one batch, the ingest
/// path, and returns the outcomes.
async fn record(
    store: &Store,
    reports: &[(&str, &str, &Telemetry)],
    received_ms: i64,
) -> Result<Vec<Outcome>> {
    let items: Vec<Incoming<'_>> = reports
        .iter()
        .map(|&(network, node, t)| Incoming {
            network,
            node,
            content: Content::Telemetry(t),
            received_ms,
        })
        .collect();
    Ok(store.record_batch(&items).await?)
}

#[tokio::test]
async fn last_report_per_node_survives_and_never_goes_back() -> Result<()> {
    each_backend("telemetry base", |store| async move {
        assert_eq!(store.telemetry_base("net", "a").await?, None);

        // One batch naming a node twice, out of order: the larger seq wins.
        let (a5, a4, b1) = (
            report("a", "b1", 5),
            report("a", "b1", 4),
            report("b", "x", 1),
        );
        let outcomes = record(
            &store,
            &[("net", "a", &a5), ("net", "a", &a4), ("net", "b", &b1)],
            T0,
        )
        .await?;
        assert_eq!(outcomes, vec![Outcome::Inserted; 3]);
        let base = store.telemetry_base("net", "a").await?.expect("a's base");
        assert_eq!((base.boot_id.as_str(), base.seq), ("b1", 5));
        let (t, _) = decode::<Telemetry>(&base.report)?;
        assert_eq!(t, a5, "the stored report is the full report");

        // Each case: what is recorded next, how, and the base it leaves.
        let cases: [(Telemetry, Outcome, (&str, u64)); 5] = [
            // A late older report of the same boot is stored as a sample but
            // does not set the base back, nor does a redelivery.
            (report("a", "b1", 3), Outcome::Inserted, ("b1", 5)),
            (report("a", "b1", 5), Outcome::Duplicate, ("b1", 5)),
            (report("a", "b1", 6), Outcome::Inserted, ("b1", 6)),
            // A new boot replaces it, whatever its seq.
            (report("a", "b2", 0), Outcome::Inserted, ("b2", 0)),
            // A redelivery from the earlier boot does not set it back.
            (report("a", "b1", 6), Outcome::Duplicate, ("b2", 0)),
        ];
        for (t, outcome, want) in cases {
            let outcomes = record(&store, &[("net", "a", &t)], T0 + 1).await?;
            assert_eq!(outcomes, [outcome], "{}/{}", t.boot_id, t.seq);
            let base = store.telemetry_base("net", "a").await?.expect("a's base");
            assert_eq!(
                (base.boot_id.as_str(), base.seq),
                want,
                "after {}/{}",
                t.boot_id,
                t.seq
            );
        }
        // Other nodes and networks are apart.
        assert_eq!(
            store.telemetry_base("net", "b").await?.map(|b| b.seq),
            Some(1)
        );
        assert_eq!(store.telemetry_base("other", "a").await?, None);

        // A fresh reassembler seeded with the stored base decodes the
        // compact report that follows it, as one that never restarted would.
        let next = report("b", "x", 2);
        let mut compactor = meshtable_proto::Compactor::new(Default::default());
        compactor.encode(&b1);
        let payload = compactor.encode(&next);
        assert!(
            payload.len() < meshtable_proto::encode_cbor(&next).len() / 2,
            "compact"
        );
        let mut fresh = Reassembler::new();
        assert!(fresh.decode("net/b", &payload).is_err(), "no base yet");
        let base = store.telemetry_base("net", "b").await?.expect("b's base");
        fresh.decode("net/b", &base.report)?;
        assert_eq!(fresh.decode("net/b", &payload)?.0, next);

        store.forget_telemetry_base("net", "b").await?;
        assert_eq!(store.telemetry_base("net", "b").await?, None);
        Ok(())
    })
    .await
}
