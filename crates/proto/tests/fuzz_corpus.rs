//! The corpus the fuzzers found (`fuzz/run.sh`), kept as regression tests:
//! every input of `tests/fuzz/{target}/` is decoded again and must not
//! panic, and must be classified (decoded, or refused for the same reason)
//! as `tests/fuzz/{target}/expected.txt` records.
//!
//! `fuzz/run.sh` rewrites the inputs and, through
//! `MESHTABLE_BLESS=1 cargo test -p meshtable-proto --test fuzz_corpus`, the
//! expectations; without it an input missing from `expected.txt`, or an
//! entry without its input, fails the test.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use meshtable_proto::sign::{Opened, SigningKey, open, open_verified};
use meshtable_proto::{DecodeError, Encoding, Kind, Reassembler, Report, encode_cbor, examples};

/// The topic the fuzz target's fixed key signs for.
const TOPIC: &str = "meshtable/v1/net/node1/telemetry";

fn dir(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fuzz")
        .join(target)
}

/// Replays every input of `target` through `classify` and compares with
/// (or, blessing, writes) `expected.txt`.
fn replay(target: &str, min_inputs: usize, classify: impl Fn(&[u8]) -> String) {
    let dir = dir(target);
    let expected_path = dir.join("expected.txt");
    let mut got = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        if name == "expected.txt" {
            continue;
        }
        let bytes = std::fs::read(&path).unwrap();
        got.insert(name, classify(&bytes));
    }
    assert!(
        got.len() >= min_inputs,
        "{target}: only {} inputs in {}",
        got.len(),
        dir.display()
    );
    let text: String = got.iter().map(|(k, v)| format!("{k} {v}\n")).collect();
    if std::env::var_os("MESHTABLE_BLESS").is_some() {
        std::fs::write(&expected_path, &text).unwrap();
        return;
    }
    let stored = std::fs::read_to_string(&expected_path)
        .unwrap_or_else(|e| panic!("{}: {e} (run fuzz/run.sh)", expected_path.display()));
    let want: BTreeMap<String, String> = stored
        .lines()
        .filter_map(|l| l.split_once(' '))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    for (name, class) in &got {
        assert_eq!(
            Some(class),
            want.get(name),
            "{target}/{name}: classified differently (or not recorded)"
        );
    }
    for name in want.keys() {
        assert!(
            got.contains_key(name),
            "{target}/{name}: recorded, input missing"
        );
    }
}

fn label(r: Result<Encoding, DecodeError>) -> String {
    match r {
        Ok(Encoding::Cbor) => "cbor".to_owned(),
        Ok(Encoding::Json) => "json".to_owned(),
        Err(e) => e.reason().to_owned(),
    }
}

/// How each decoder takes `data`: per topic kind, then through a
/// reassembler holding the example mesh report (the golden v2 report's base).
fn classify_report(data: &[u8]) -> String {
    let mut out = Vec::new();
    for kind in [Kind::Hello, Kind::State, Kind::Telemetry] {
        let r = Report::decode(kind, data).map(|(report, encoding)| {
            // What decodes encodes and decodes again.
            let cbor = match &report {
                Report::Hello(m) => encode_cbor(m),
                Report::State(m) => encode_cbor(m),
                Report::Telemetry(m) => encode_cbor(m),
            };
            assert!(Report::decode(kind, &cbor).is_ok(), "{kind} re-encoding");
            encoding
        });
        out.push(format!("{kind}={}", label(r)));
    }
    let mut r = Reassembler::new();
    r.decode("net/base", &encode_cbor(&examples::telemetry_mesh_v1()))
        .unwrap();
    let first = r.decode("net/base", data).map(|(_, e)| e);
    let again = r.decode("net/base", data).map(|(_, e)| e);
    out.push(format!("reassembled={},{}", label(first), label(again)));
    out.join(" ")
}

/// How `open` and `open_verified` (the fuzz target's fixed key) take `data`.
fn classify_envelope(data: &[u8]) -> String {
    let public = SigningKey::from_bytes(&[7; 32]).verifying_key();
    let opened = match open(data) {
        Ok(Opened::Signed { .. }) => "signed".to_owned(),
        Ok(Opened::Unsigned(p)) => {
            assert_eq!(p, data);
            "unsigned".to_owned()
        }
        Err(e) => e.reason().to_owned(),
    };
    let verified = match open_verified(&public, TOPIC, data) {
        Ok(_) => "verified",
        Err(e) => e.reason(),
    };
    format!("open={opened} verify={verified}")
}

#[test]
fn report_decoder_corpus() {
    replay("report_decode", 10, classify_report);
}

#[test]
fn signed_envelope_corpus() {
    replay("sign_verify", 5, classify_envelope);
}

/// The golden vectors are in the corpus's seeds; they still decode.
#[test]
fn classifier_knows_a_good_report() {
    let t = encode_cbor(&examples::telemetry_v1());
    assert_eq!(
        classify_report(&t),
        "hello=malformed state=malformed telemetry=cbor reassembled=cbor,cbor"
    );
}
