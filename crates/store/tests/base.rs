//! The persisted telemetry base on both backends: the last full report of
//! each node, kept for the controller's reassembly of compact reports after
//! a restart; never set back by a redelivered older report.

mod common;

use anyhow::Result;
use common::each_backend;
use meshtable_proto::{Reassembler, Telemetry, decode, examples};

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
        store
            .save_telemetry_bases(
                &[("net", "a", &a5), ("net", "a", &a4), ("net", "b", &b1)],
                T0,
            )
            .await?;
        let base = store.telemetry_base("net", "a").await?.expect("a's base");
        assert_eq!((base.boot_id.as_str(), base.seq), ("b1", 5));
        let (t, _) = decode::<Telemetry>(&base.report)?;
        assert_eq!(t, a5, "the stored report is the full report");

        // Each case: what is saved next, and the base it leaves.
        let cases: [(Telemetry, (&str, u64)); 4] = [
            // A redelivered older report of the same boot does not set it back.
            (report("a", "b1", 3), ("b1", 5)),
            (report("a", "b1", 5), ("b1", 5)),
            (report("a", "b1", 6), ("b1", 6)),
            // A new boot replaces it, whatever its seq.
            (report("a", "b2", 0), ("b2", 0)),
        ];
        for (t, want) in cases {
            store
                .save_telemetry_bases(&[("net", "a", &t)], T0 + 1)
                .await?;
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
