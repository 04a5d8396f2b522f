//! Golden vectors: the committed bytes of every message version must keep
//! decoding to the same values, forever, and this build must write the
//! vectors of every version it still writes byte for byte (v1: hello, state
//! and full telemetry; v2: compact telemetry, decoded against its base).
//!
//! Layout: `tests/golden/v{N}/{stem}.{cbor,json}`, one directory per message
//! version. [`VECTORS`] says what every file decodes to; a file it does not
//! list fails the test, so no committed vector goes unchecked. Files of a
//! directory are never rewritten once committed: an additive change within a
//! version (a new optional key, see the crate docs) adds files; a breaking
//! change gets a new version and a new directory.
//!
//! `MESHTABLE_BLESS=1 cargo test -p meshtable-proto --test golden` writes the
//! listed files that do not exist yet (never an existing one).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use meshtable_proto::{
    CompactTelemetry, Encoding, Kind, Reassembler, Report, Telemetry, decode, encode, examples,
};

/// (version directory, file stem, topic kind, the value the files hold).
type Vector = (&'static str, &'static str, Kind, fn() -> Report);

const VECTORS: &[Vector] = &[
    ("v1", "hello", Kind::Hello, || {
        Report::Hello(examples::hello_v1())
    }),
    ("v1", "state-online", Kind::State, || {
        Report::State(examples::state_online_v1())
    }),
    ("v1", "state-offline", Kind::State, || {
        Report::State(examples::state_offline_v1())
    }),
    ("v1", "telemetry", Kind::Telemetry, || {
        Report::Telemetry(examples::telemetry_v1())
    }),
    // Added with key 14 (`backfill`): still v1, older readers skip the key.
    ("v1", "telemetry-backfill", Kind::Telemetry, || {
        Report::Telemetry(examples::telemetry_backfill_v1())
    }),
    // Added with keys 9-10 (`board`, `firmware`): still v1.
    ("v1", "hello-firmware", Kind::Hello, || {
        Report::Hello(examples::hello_firmware_v1())
    }),
    // Added with keys 15-20 (radios, stations, neighbours, routes, clients,
    // gateway): still v1.
    ("v1", "telemetry-mesh", Kind::Telemetry, || {
        Report::Telemetry(examples::telemetry_mesh_v1())
    }),
];

/// Version 2 is compact telemetry only, decoded against the report before
/// it: (directory, stem, the value, its base, what they make together).
type CompactVector = (
    &'static str,
    &'static str,
    fn() -> CompactTelemetry,
    fn() -> Telemetry,
    fn() -> Telemetry,
);

const COMPACT_VECTORS: &[CompactVector] = &[(
    "v2",
    "telemetry-compact",
    examples::telemetry_compact_v2,
    examples::telemetry_mesh_v1,
    examples::telemetry_mesh_next_v1,
)];

const EXTENSIONS: [(Encoding, &str); 2] = [(Encoding::Cbor, "cbor"), (Encoding::Json, "json")];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden")
}

/// The version directories, oldest first (`v2` before `v10`).
fn versions() -> Vec<(u16, String)> {
    let mut dirs: Vec<(u16, String)> = std::fs::read_dir(root())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .map(|name| {
            let n = name
                .strip_prefix('v')
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("tests/golden/{name} is not a v{{N}} directory"));
            (n, name)
        })
        .collect();
    dirs.sort();
    assert!(!dirs.is_empty(), "no golden directories");
    dirs
}

fn encode_report(report: &Report, encoding: Encoding) -> Vec<u8> {
    match report {
        Report::Hello(m) => encode(m, encoding),
        Report::State(m) => encode(m, encoding),
        Report::Telemetry(m) => encode(m, encoding),
    }
}

fn vector(dir: &str, file: &str) -> Option<&'static Vector> {
    let (stem, _) = file.rsplit_once('.')?;
    VECTORS.iter().find(|(d, s, ..)| *d == dir && *s == stem)
}

fn files(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect()
}

/// Every file of every version decodes to its listed value, in the
/// encoding its extension names.
#[test]
fn every_version_still_decodes() {
    let mut checked = 0;
    for (_, dir) in versions() {
        for file in files(&root().join(&dir)) {
            if let Some((.., value, base, made)) = COMPACT_VECTORS
                .iter()
                .find(|(d, s, ..)| *d == dir && file.rsplit_once('.').map(|(s, _)| s) == Some(s))
            {
                let bytes = std::fs::read(root().join(&dir).join(&file)).unwrap();
                let (got, _) = decode::<CompactTelemetry>(&bytes)
                    .unwrap_or_else(|e| panic!("{dir}/{file} no longer decodes: {e}"));
                assert_eq!(got, value(), "{dir}/{file}");
                let mut r = Reassembler::new();
                r.decode("n", &encode(&base(), Encoding::Cbor)).unwrap();
                assert_eq!(r.decode("n", &bytes).unwrap().0, made(), "{dir}/{file}");
                checked += 1;
                continue;
            }
            let (_, _, kind, value) = vector(&dir, &file)
                .unwrap_or_else(|| panic!("{dir}/{file} is not listed in VECTORS"));
            let (want_enc, _) = EXTENSIONS
                .iter()
                .find(|(_, ext)| file.ends_with(&format!(".{ext}")))
                .unwrap_or_else(|| panic!("{dir}/{file}: not .cbor or .json"));
            let bytes = std::fs::read(root().join(&dir).join(&file)).unwrap();
            let (got, enc) = Report::decode(*kind, &bytes)
                .unwrap_or_else(|e| panic!("{dir}/{file} no longer decodes: {e}"));
            assert_eq!(enc, *want_enc, "{dir}/{file}");
            assert_eq!(got, value(), "{dir}/{file} decodes to a different value");
            checked += 1;
        }
    }
    assert!(checked >= 14, "only {checked} golden files found");
}

/// Every listed vector has both files, and this build writes them exactly
/// as committed: v1 is what it still writes for hello, state and full
/// telemetry, v2 its compact telemetry.
#[test]
fn this_build_writes_the_newest_version_as_committed() {
    let bless = std::env::var_os("MESHTABLE_BLESS").is_some();
    for (dir, stem, value, ..) in COMPACT_VECTORS {
        for (enc, ext) in EXTENSIONS {
            let path = root().join(dir).join(format!("{stem}.{ext}"));
            let bytes = encode(&value(), enc);
            if bless && !path.exists() {
                std::fs::write(&path, &bytes).unwrap();
            }
            let stored = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (bless to create)", path.display()));
            assert_eq!(bytes, stored, "{dir}/{stem}.{ext}: written differently");
        }
    }
    for (dir, stem, _, value) in VECTORS {
        for (enc, ext) in EXTENSIONS {
            let path = root().join(dir).join(format!("{stem}.{ext}"));
            let bytes = encode_report(&value(), enc);
            if bless && !path.exists() {
                std::fs::write(&path, &bytes).unwrap();
            }
            let stored = std::fs::read(&path)
                .unwrap_or_else(|e| panic!("{}: {e} (bless to create)", path.display()));
            // Hello, state and full telemetry are still written as v1.
            assert_eq!(
                bytes, stored,
                "{dir}/{stem}.{ext}: this build encodes {dir} differently"
            );
        }
    }
}

/// A backfill report of the current writer is decoded by the rules older v1
/// readers follow (unknown keys skipped): only the new key differs.
#[test]
fn backfill_is_an_optional_v1_key() {
    let live = examples::telemetry_v1();
    let backfill = examples::telemetry_backfill_v1();
    for enc in [Encoding::Cbor, Encoding::Json] {
        let live_bytes = encode(&live, enc);
        let bytes = encode(&backfill, enc);
        // `false` is not written: a live report is the committed v1 bytes.
        let committed = std::fs::read(root().join("v1").join(match enc {
            Encoding::Cbor => "telemetry.cbor",
            Encoding::Json => "telemetry.json",
        }))
        .unwrap();
        assert_eq!(live_bytes, committed);
        let (decoded, _) = decode::<meshtable_proto::Telemetry>(&bytes).unwrap();
        assert!(decoded.backfill);
        assert_eq!(decoded.v, 1);
    }
    let json: serde_json::Value =
        serde_json::from_slice(&encode(&backfill, Encoding::Json)).unwrap();
    assert_eq!(json["backfill"], true);
    let cbor = encode(&backfill, Encoding::Cbor);
    assert_eq!(cbor[0], 0xaf, "15 map entries: key 14 added");
    assert_eq!(&cbor[cbor.len() - 2..], [0x0e, 0xf5], "key 14: true");
}
