//! Golden vectors: the committed bytes of every message version must keep
//! decoding to the same values, and this build must still write v1 the same
//! way. Regenerate (only for a new version's directory) with
//! `MESHTABLE_BLESS=1 cargo test -p meshtable-proto --test golden`.

use std::path::PathBuf;

use meshtable_proto::{Encoding, Message, decode, encode, examples};

fn golden(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/v1")
        .join(name)
}

fn check<M: Message + PartialEq + std::fmt::Debug>(stem: &str, msg: M) {
    for (enc, ext) in [(Encoding::Cbor, "cbor"), (Encoding::Json, "json")] {
        let path = golden(&format!("{stem}.{ext}"));
        let bytes = encode(&msg, enc);
        if std::env::var_os("MESHTABLE_BLESS").is_some() {
            std::fs::write(&path, &bytes).unwrap();
        }
        let stored = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (bless to create)", path.display()));
        let (decoded, got_enc) = decode::<M>(&stored).unwrap();
        assert_eq!(got_enc, enc, "{stem}.{ext}");
        assert_eq!(decoded, msg, "{stem}.{ext} decodes to a different value");
        assert_eq!(
            bytes, stored,
            "{stem}.{ext}: this build encodes v1 differently"
        );
    }
}

#[test]
fn hello_v1() {
    check("hello", examples::hello_v1());
}

#[test]
fn state_v1() {
    check("state-online", examples::state_online_v1());
    check("state-offline", examples::state_offline_v1());
}

#[test]
fn telemetry_v1() {
    check("telemetry", examples::telemetry_v1());
}
