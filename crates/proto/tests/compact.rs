//! Compact telemetry (v2): what the compactor writes, the reassembler turns
//! back into the reports the agent collected.

use meshtable_proto::examples::{self, MeshRouterSim};
use meshtable_proto::{
    CompactPolicy, CompactTelemetry, Compactor, DecodeError, Reassembler, Telemetry, decode,
    encode_cbor,
};

/// The report without what the compactor may hold between details: the
/// stations' numbers, but for the signals of mesh peers and the uplink.
fn without_held(t: &Telemetry) -> Telemetry {
    let mut t = t.clone();
    for s in &mut t.stations {
        let signals = s.client_id.is_none();
        *s = meshtable_proto::Station {
            ifname: s.ifname.clone(),
            mac: s.mac.clone(),
            client_id: s.client_id.clone(),
            mesh: s.mesh,
            signal_dbm: s.signal_dbm.filter(|_| signals),
            signal_avg_dbm: s.signal_avg_dbm.filter(|_| signals),
            ..Default::default()
        };
    }
    t
}

#[test]
fn a_day_of_reports_comes_back_exactly() {
    let policy = CompactPolicy::default();
    let mut sim = MeshRouterSim::new(1);
    let mut enc = Compactor::new(policy);
    let mut dec = Reassembler::new();
    let (mut full, mut compact, mut exact) = (0, 0, 0);
    for step in 0..1440 {
        let t = if step == 0 {
            sim.report().clone()
        } else {
            sim.step().clone()
        };
        let payload = enc.encode(&t);
        match payload[2] {
            0x02 => compact += 1,
            _ => full += 1,
        }
        let (got, _) = dec.decode("net/node", &payload).unwrap();
        assert_eq!(without_held(&got), without_held(&t), "step {step}");
        if got == t {
            exact += 1;
        }
    }
    // One full report every two hours; every 15th report brings the
    // stations' numbers up to date.
    assert_eq!(full, 12, "full reports");
    assert_eq!(compact, 1428);
    assert!(exact >= 96, "{exact} exact");
}

#[test]
fn compact_reports_need_their_predecessor() {
    let mut sim = MeshRouterSim::new(2);
    let mut enc = Compactor::new(CompactPolicy::default());
    let first = enc.encode(&sim.report().clone());
    let second = enc.encode(&sim.step().clone());
    let third = enc.encode(&sim.step().clone());
    let mut dec = Reassembler::new();
    assert_eq!(
        dec.decode("n", &second).unwrap_err(),
        DecodeError::MissingBase(17_281)
    );
    assert_eq!(
        dec.decode("n", &second).unwrap_err().reason(),
        "missing_base"
    );
    dec.decode("n", &first).unwrap();
    // Another node's reports are not a base.
    assert!(dec.decode("m", &second).is_err());
    let (a, _) = dec.decode("n", &second).unwrap();
    let (b, _) = dec.decode("n", &third).unwrap();
    // The newest delivered twice (QoS 1): decodes to the same report again.
    assert_eq!(dec.decode("n", &third).unwrap().0, b);
    // Older ones are stored already; their predecessor is gone.
    assert_eq!(
        dec.decode("n", &second).unwrap_err(),
        DecodeError::MissingBase(a.seq)
    );
    // A plain decoder refuses v2: it needs the predecessor.
    assert_eq!(
        decode::<Telemetry>(&second).unwrap_err().reason(),
        "unknown_version"
    );
    // After a reset the compactor starts over with a full report.
    enc.reset();
    let t = sim.step().clone();
    assert_eq!(enc.encode(&t), encode_cbor(&t));
}

#[test]
fn bad_compact_reports_are_refused() {
    let mut sim = MeshRouterSim::new(3);
    let mut enc = Compactor::new(CompactPolicy::default());
    let first = enc.encode(&sim.report().clone());
    let second = enc.encode(&sim.step().clone());
    let (c, _) = decode::<CompactTelemetry>(&second).unwrap();
    let cases: Vec<(&str, CompactTelemetry, &str)> = vec![
        (
            "interface index out of range",
            CompactTelemetry {
                interfaces: vec![9, 1, 2],
                ..c.clone()
            },
            "invalid",
        ),
        (
            "too many numbers",
            CompactTelemetry {
                interfaces: vec![0, 9, 1, 1, 1, 1, 1, 1, 1, 1, 1],
                ..c.clone()
            },
            "invalid",
        ),
        (
            "unterminated number",
            CompactTelemetry {
                core: vec![1, 0x80],
                ..c.clone()
            },
            "malformed",
        ),
        (
            "counter below zero",
            CompactTelemetry {
                interfaces: vec![0, 1, 0x7f],
                ..c.clone()
            },
            "ok",
        ),
        (
            "memory above total",
            CompactTelemetry {
                // mem_available (the 7th number) up by mem_total.
                core: vec![7, 0, 0, 0, 0, 0, 0, 0x80, 0x80, 0xcc, 0x3a],
                ..c.clone()
            },
            "invalid",
        ),
        (
            "empty client id added",
            CompactTelemetry {
                client_ids_added: vec![String::new()],
                ..c.clone()
            },
            "invalid",
        ),
        (
            "stations removed out of order",
            CompactTelemetry {
                stations_removed: vec![2, 1],
                ..c.clone()
            },
            "invalid",
        ),
        (
            "station removed out of range",
            CompactTelemetry {
                stations_removed: vec![10],
                ..c.clone()
            },
            "invalid",
        ),
    ];
    for (name, bad, want) in cases {
        let mut dec = Reassembler::new();
        dec.decode("n", &first).unwrap();
        let got = match dec.decode("n", &encode_cbor(&bad)) {
            Ok(_) => "ok",
            Err(e) => e.reason(),
        };
        assert_eq!(got, want, "{name}");
    }
}

/// Sizes over one simulated hour at 60 s: printed, for the record.
#[test]
fn compact_sizes() {
    let mut sim = MeshRouterSim::new(4);
    let mut enc = Compactor::new(CompactPolicy::default());
    let (mut full_bytes, mut compact_bytes) = (0, 0);
    let mut sizes = Vec::new();
    for step in 0..60 {
        let t = if step == 0 {
            sim.report().clone()
        } else {
            sim.step().clone()
        };
        full_bytes += encode_cbor(&t).len();
        let p = enc.encode(&t);
        sizes.push(p.len());
        compact_bytes += p.len();
    }
    sizes.sort_unstable();
    println!(
        "one hour: full cbor {full_bytes} B, compact {compact_bytes} B \
         (median {} B, the first, full, {} B)",
        sizes[30],
        encode_cbor(&examples::telemetry_mesh_v1()).len()
    );
    assert!(compact_bytes * 5 < full_bytes);
}

/// Damaged compact reports are refused or decoded, never a panic: every
/// truncation and 40 random single-byte changes of an hour's worth of them,
/// each applied to the right predecessor.
#[test]
fn damaged_compact_reports_never_panic() {
    let mut sim = MeshRouterSim::new(5);
    let mut enc = Compactor::new(CompactPolicy::default());
    let mut good = Reassembler::new();
    good.decode("n", &enc.encode(&sim.report().clone()))
        .unwrap();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let (mut refused, mut decoded) = (0, 0);
    for _ in 0..60 {
        let payload = enc.encode(&sim.step().clone());
        let mut damaged: Vec<Vec<u8>> = (0..payload.len()).map(|n| payload[..n].to_vec()).collect();
        for _ in 0..40 {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let mut p = payload.clone();
            let i = (state % p.len() as u64) as usize;
            p[i] = (state >> 32) as u8;
            damaged.push(p);
        }
        for p in damaged {
            match good.clone().decode("n", &p) {
                Ok(_) => decoded += 1,
                Err(_) => refused += 1,
            }
        }
        good.decode("n", &payload).unwrap();
    }
    assert!(
        refused > 1000 && decoded > 0,
        "{refused} refused, {decoded} decoded"
    );
}
