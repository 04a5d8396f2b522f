//! Decoder behaviour on good, bad and future input, as data.

use meshtable_proto::{
    DecodeError, Encoding, Kind, MAX_PAYLOAD, Report, State, Telemetry, decode, encode_cbor,
    examples,
};

fn reason(payload: &[u8]) -> &'static str {
    match decode::<Telemetry>(payload) {
        Ok(_) => "ok",
        Err(e) => e.reason(),
    }
}

#[test]
fn rejects_bad_payloads_by_reason() {
    let good = encode_cbor(&examples::telemetry_v1());
    let json = meshtable_proto::encode_json(&examples::telemetry_v1());
    let mut v2 = examples::telemetry_v1();
    v2.v = 2;
    let mut bad_mem = examples::telemetry_v1();
    bad_mem.mem_available = bad_mem.mem_total + 1;
    let mut nul = examples::telemetry_v1();
    nul.boot_id.push('\0');
    let mut trailing = good.clone();
    trailing.push(0);
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("cbor", good.clone(), "ok"),
        ("json", json.clone(), "ok"),
        ("empty", vec![], "empty"),
        ("oversized", vec![b' '; MAX_PAYLOAD + 1], "oversized"),
        ("garbage", b"\x00\x01garbage".to_vec(), "malformed"),
        ("text", b"hello world".to_vec(), "malformed"),
        (
            "truncated cbor",
            good[..good.len() / 2].to_vec(),
            "truncated",
        ),
        (
            "truncated json",
            json[..json.len() / 2].to_vec(),
            "truncated",
        ),
        ("trailing bytes", trailing, "malformed"),
        ("v2 cbor", encode_cbor(&v2), "unknown_version"),
        (
            "v2 json",
            br#"{"v":2,"future":true}"#.to_vec(),
            "unknown_version",
        ),
        ("no version", br#"{"node":"x"}"#.to_vec(), "malformed"),
        ("wrong type", br#"{"v":1,"node":5}"#.to_vec(), "malformed"),
        ("rule broken", encode_cbor(&bad_mem), "invalid"),
        ("nul in text", encode_cbor(&nul), "invalid"),
    ];
    for (name, payload, want) in cases {
        assert_eq!(reason(&payload), want, "{name}");
    }
}

#[test]
fn unknown_fields_are_skipped() {
    // A newer v1 writer may add keys; older readers must skip them.
    let mut json: serde_json::Value =
        serde_json::from_slice(&meshtable_proto::encode_json(&examples::telemetry_v1())).unwrap();
    json["wireless"] = serde_json::json!({"radios": []});
    let (t, enc) = decode::<Telemetry>(&serde_json::to_vec(&json).unwrap()).unwrap();
    assert_eq!(enc, Encoding::Json);
    assert_eq!(t, examples::telemetry_v1());

    // The same in CBOR: append key 99 to the map.
    let mut bytes = encode_cbor(&examples::telemetry_v1());
    assert_eq!(bytes[0], 0xae, "telemetry is a 14-entry map");
    bytes[0] = 0xaf;
    bytes.extend_from_slice(&[0x18, 99, 0x63, b'n', b'e', b'w']);
    assert_eq!(
        decode::<Telemetry>(&bytes).unwrap().0,
        examples::telemetry_v1()
    );
}

#[test]
fn hand_written_json_decodes() {
    let payload = br#"{"v":1,"node":"node1","boot_id":"b1","seq":0,"time_ms":1764000000000,
        "uptime_ms":1000,"load":[0.1,0.1,0.1],"cpu":{"user":1,"nice":0,"system":1,"idle":10},
        "mem_total":1000,"mem_available":500,"rootfs_size":100,"rootfs_free":50}"#;
    let (r, _) = Report::decode(Kind::Telemetry, payload).unwrap();
    let Report::Telemetry(t) = r else {
        panic!("not telemetry")
    };
    assert_eq!(t.node, "node1");
    assert!(t.interfaces.is_empty());
    let (s, _) = decode::<State>(br#"{"v":1,"status":"offline"}"#).unwrap();
    assert_eq!(s, examples::state_offline_v1());
}

#[test]
fn error_messages_are_lowercase_without_trailing_punctuation() {
    let errors = [
        DecodeError::Empty,
        DecodeError::Oversized { size: 2, max: 1 },
        DecodeError::UnsupportedVersion(9),
    ];
    for e in errors {
        let s = e.to_string();
        assert!(s.chars().next().unwrap().is_lowercase(), "{s}");
        assert!(!s.ends_with('.'), "{s}");
    }
}

/// Prints the encoded sizes reported in the walking-skeleton note; asserts the
/// compact encoding is actually the smaller one.
#[test]
fn encoded_sizes() {
    let t = examples::telemetry_v1();
    let cbor = encode_cbor(&t).len();
    let json = meshtable_proto::encode_json(&t).len();
    println!("telemetry with 5 interfaces: cbor {cbor} bytes, json {json} bytes");
    assert!(cbor * 2 < json, "cbor {cbor} json {json}");
}

/// The issue-3 additions (keys 15-20) are checked like the rest: limits and
/// rules broken are `invalid`, never a crash.
#[test]
fn mesh_parts_are_validated() {
    use meshtable_proto::{
        Clients, Gateway, MAX_NEIGHBOURS, MAX_RADIOS, MAX_STATIONS, Neighbour, Radio, encode_json,
    };
    let good = examples::telemetry_mesh_v1();
    let mut cases: Vec<(&str, Telemetry, &str)> = vec![("all parts", good.clone(), "ok")];
    let mut t = good.clone();
    t.stations[0].client_id = Some("c1".to_owned());
    cases.push(("station with mac and client id", t, "invalid"));
    let mut t = good.clone();
    t.stations = vec![
        meshtable_proto::Station {
            ifname: "w".to_owned(),
            ..Default::default()
        };
        MAX_STATIONS + 1
    ];
    cases.push(("too many stations", t, "invalid"));
    let mut t = good.clone();
    t.radios = vec![Radio::default(); MAX_RADIOS + 1];
    cases.push(("too many radios", t, "invalid"));
    let mut t = good.clone();
    t.radios[0].ifname.clear();
    cases.push(("radio without ifname", t, "invalid"));
    let mut t = good.clone();
    t.radios[1].ssid = Some("mesh\u{7}".to_owned());
    cases.push(("control character in ssid", t, "invalid"));
    let mut t = good.clone();
    t.neighbours = vec![Neighbour::default(); MAX_NEIGHBOURS + 1];
    cases.push(("too many neighbours", t, "invalid"));
    let mut t = good.clone();
    t.neighbours[2].address.clear();
    cases.push(("neighbour without address", t, "invalid"));
    let mut t = good.clone();
    t.routes[0].prefix = "x".repeat(meshtable_proto::MAX_TEXT + 1);
    cases.push(("long route prefix", t, "invalid"));
    let mut t = good.clone();
    t.clients = Some(Clients {
        ids: vec![String::new()],
        ..Clients::default()
    });
    cases.push(("empty client id", t, "invalid"));
    let mut t = good.clone();
    t.gateway = Some(Gateway::default());
    cases.push(("gateway without uplink", t, "invalid"));
    for (name, t, want) in cases {
        assert_eq!(reason(&encode_cbor(&t)), want, "{name} (cbor)");
        // The list-limit cases are too big for JSON, where the size limit
        // refuses them first.
        let json = encode_json(&t);
        if json.len() <= MAX_PAYLOAD {
            assert_eq!(reason(&json), want, "{name} (json)");
        }
    }
}

/// Unset additions are not written: a report without them has the bytes of
/// the committed v1 report, and each part is its own key.
#[test]
fn mesh_parts_are_absent_when_unset() {
    let plain = encode_cbor(&examples::telemetry_v1());
    assert_eq!(plain[0], 0xae, "14 entries, no keys 15-20");
    let full = encode_cbor(&examples::telemetry_mesh_v1());
    assert_eq!(full[0], 0xb4, "20 entries: keys 15-20 added");
    let hello = encode_cbor(&examples::hello_firmware_v1());
    assert_eq!(hello[0], 0xab, "11 entries: keys 9 and 10 added");
    let json: serde_json::Value =
        serde_json::from_slice(&meshtable_proto::encode_json(&examples::telemetry_mesh_v1()))
            .unwrap();
    assert_eq!(json["radios"][1]["mode"], "mesh_point");
    assert_eq!(json["neighbours"][0]["protocol"], "babel");
    assert!(
        json["stations"][5].get("mac").is_none(),
        "a client has no mac"
    );
}
