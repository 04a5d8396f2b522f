//! Signed envelopes: opening and verifying any bytes must give `Ok` or a
//! `SignError`, never a panic, and only the real key's signature verifies.
#![no_main]

use libfuzzer_sys::fuzz_target;
use meshtable_proto::sign::{
    Opened, SigningKey, key_bytes_from_hex, open, open_verified, seal, verify,
    verifying_key_from_hex,
};

/// The topic the fixed key signs for.
const TOPIC: &str = "meshtable/v1/net/node1/telemetry";

fuzz_target!(|data: &[u8]| {
    let key = SigningKey::from_bytes(&[7; 32]);
    let public = key.verifying_key();

    match open(data) {
        Ok(Opened::Signed {
            signer,
            payload,
            signature,
        }) => {
            meshtable_proto::validate_id(signer).expect("open checks the signer");
            let _ = verify(&public, TOPIC, payload, &signature);
            // Any signature also checked under a key made from the input.
            if let Ok(k) = meshtable_proto::sign::VerifyingKey::from_bytes(
                &signature[..32].try_into().expect("32 bytes"),
            ) {
                let _ = verify(&k, TOPIC, payload, &signature);
            }
        }
        Ok(Opened::Unsigned(p)) => assert_eq!(p, data),
        Err(_) => {}
    }
    let _ = open_verified(&public, TOPIC, data);

    // Sealing the input verifies under its own topic only.
    let signed = seal(&key, "node1", TOPIC, data);
    assert_eq!(open_verified(&public, TOPIC, &signed), Ok(data));
    assert!(open_verified(&public, "meshtable/v1/net/node2/telemetry", &signed).is_err());

    // Keys from text.
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = key_bytes_from_hex(text);
        let _ = verifying_key_from_hex(text);
    }
});
