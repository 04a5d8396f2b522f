//! The report decoder: every topic kind, and the compact (v2) telemetry
//! reassembler. Any input must give `Ok` or a `DecodeError`, never a panic;
//! a decoded report must encode and decode again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtable_proto::{
    Kind, Reassembler, Report, Telemetry, decode, encode_cbor, encode_json, examples,
};

fuzz_target!(|data: &[u8]| {
    for kind in [Kind::Hello, Kind::State, Kind::Telemetry] {
        if let Ok((report, _)) = Report::decode(kind, data) {
            let (cbor, json) = match &report {
                Report::Hello(m) => (encode_cbor(m), encode_json(m)),
                Report::State(m) => (encode_cbor(m), encode_json(m)),
                Report::Telemetry(m) => (encode_cbor(m), encode_json(m)),
            };
            Report::decode(kind, &cbor).expect("a decoded report re-encodes as cbor");
            Report::decode(kind, &json).expect("a decoded report re-encodes as json");
        }
    }

    // The reassembler, holding bases a compact report can apply to (the
    // examples' mesh report is the base of the golden v2 report).
    let mut r = Reassembler::new();
    let base = encode_cbor(&examples::telemetry_mesh_v1());
    r.decode("net/base", &base).expect("example decodes");
    for key in ["net/base", "net/other"] {
        if let Ok((t, _)) = r.decode(key, data) {
            decode::<Telemetry>(&encode_cbor(&t)).expect("a reassembled report re-encodes");
        }
    }
    // A second delivery of the same report must not panic either.
    let _ = r.decode("net/base", data);

    // Several payloads in a row for one node: u16 little-endian length
    // prefixes, so a v1 base followed by v2 reports can be found.
    let mut r = Reassembler::new();
    let mut rest = data;
    while rest.len() >= 2 {
        let len = usize::from(u16::from_le_bytes([rest[0], rest[1]])).min(rest.len() - 2);
        let _ = r.decode("net/seq", &rest[2..2 + len]);
        rest = &rest[2 + len..];
    }
});
