//! Signed envelopes: the golden vector (a telemetry report signed with a
//! fixed test key) must keep verifying forever, and this build must write it
//! byte for byte (ed25519 signatures are deterministic).
//!
//! `MESHTABLE_BLESS=1 cargo test -p meshtable-proto --test sign` writes the
//! vector when it does not exist yet (never over an existing one).

use std::path::PathBuf;

use meshtable_proto::sign::{self, Opened, SignError, SigningKey};
use meshtable_proto::{Kind, Report, Topic, encode_cbor, examples};

/// The fixed test key: seed bytes 0, 1, ..., 31. Never a real node's key.
fn test_key() -> SigningKey {
    let mut seed = [0u8; 32];
    for (i, b) in seed.iter_mut().enumerate() {
        *b = u8::try_from(i).unwrap();
    }
    SigningKey::from_bytes(&seed)
}

const TOPIC: &str = "meshtable/v1/leipzig/1a3671205872/telemetry";

/// The public key of [`test_key`], as the registry stores it.
const TEST_PUBLIC_KEY: &str = "03a107bff3ce10be1d70dd18e74bc09967e4d6309ba50d5f1ddc8664125531b8";

fn golden_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/golden-sign/v1/telemetry.signed.cbor")
}

#[test]
fn golden_signed_telemetry() {
    let key = test_key();
    assert_eq!(
        sign::to_hex(key.verifying_key().as_bytes()),
        TEST_PUBLIC_KEY
    );
    let topic = Topic::parse(TOPIC).unwrap();
    let payload = encode_cbor(&examples::telemetry_v1());
    let sealed = sign::seal(&key, "1a3671205872", TOPIC, &payload);
    let path = golden_path();
    if !path.exists() && std::env::var_os("MESHTABLE_BLESS").is_some() {
        std::fs::write(&path, &sealed).unwrap();
    }
    let golden = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        sealed, golden,
        "this build no longer writes the golden envelope"
    );

    // Verifies with the key from its hex form, and holds the v1 report.
    let vk = sign::verifying_key_from_hex(TEST_PUBLIC_KEY).unwrap();
    let inner = sign::open_verified(&vk, TOPIC, &golden).unwrap();
    assert_eq!(inner, &payload[..]);
    let (report, _) = Report::decode(topic.kind, inner).unwrap();
    assert_eq!(report, Report::Telemetry(examples::telemetry_v1()));
}

#[test]
fn signature_binds_the_topic() {
    let key = test_key();
    let vk = key.verifying_key();
    let payload = encode_cbor(&examples::state_online_v1());
    let sealed = sign::seal(&key, "n1", "meshtable/v1/a/n1/state", &payload);
    for (topic, ok) in [
        ("meshtable/v1/a/n1/state", true),
        ("meshtable/v1/a/n2/state", false),
        ("meshtable/v1/b/n1/state", false),
        ("meshtable/v1/a/n1/hello", false),
        ("meshtable/v1/a/n1/state/", false),
    ] {
        assert_eq!(
            sign::open_verified(&vk, topic, &sealed).is_ok(),
            ok,
            "{topic}"
        );
    }
    assert_eq!(Kind::State.as_str(), "state");
}

#[test]
fn bare_messages_open_as_unsigned() {
    let payload = encode_cbor(&examples::hello_v1());
    assert_eq!(sign::open(&payload), Ok(Opened::Unsigned(&payload[..])));
    assert_eq!(
        sign::open_verified(&test_key().verifying_key(), TOPIC, &payload),
        Err(SignError::BadSignature)
    );
}

/// Flipping any single byte of the envelope never yields a verified
/// message other than the original: it is refused, or (a flip inside the
/// CBOR framing that still parses) still verifies the same bytes.
#[test]
fn every_single_byte_flip_is_refused() {
    let key = test_key();
    let vk = key.verifying_key();
    let payload = encode_cbor(&examples::telemetry_v1());
    let sealed = sign::seal(&key, "1a3671205872", TOPIC, &payload);
    for i in 0..sealed.len() {
        let mut bad = sealed.clone();
        bad[i] ^= 0x01;
        match sign::open_verified(&vk, TOPIC, &bad) {
            Err(_) => {}
            Ok(inner) => assert_eq!(inner, &payload[..], "byte {i} changed the message"),
        }
    }
}
