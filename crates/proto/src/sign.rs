//! Signed envelopes: a report signed by its node's ed25519 key, bound to the
//! topic it is published on. No IO: keys come in as bytes.
//!
//! # Envelope, version 1
//!
//! A CBOR array of four items (so its first byte is `0x84`, never a CBOR
//! map `0xa0..=0xbf` nor JSON `{`, see [`crate::sniff`]):
//!
//! ```text
//! [ 1,                  envelope version (unsigned integer)
//!   signer,             text: the node id whose key signed (1-64 of [a-z0-9_-])
//!   payload,            byte string: the message exactly as it would be sent unsigned
//!   signature ]         byte string: 64 bytes, ed25519 (RFC 8032, pure)
//! ```
//!
//! The signer names the key, so that a report a node signed but published
//! on another node's topic is told apart from a forgery.
//!
//! The signature covers the topic as well as the payload, so that a report
//! signed for one topic cannot be replayed under another (another kind, node
//! or network):
//!
//! ```text
//! signed bytes = "meshtable-sig-v1" 0x00 u16_be(len(topic)) topic payload
//! ```
//!
//! A replay of the same report on its own topic is the dedupe key's
//! business (telemetry is stored once per `(node, boot_id, seq)`); a replayed
//! retained `hello` or `state` restates something the node once said.
//!
//! Keys travel as 64 lowercase hex digits ([`to_hex`], [`verifying_key_from_hex`]).

use ed25519_dalek::{Signature, Signer};

pub use ed25519_dalek::{SigningKey, VerifyingKey};

/// The envelope version this crate writes and reads.
pub const ENVELOPE_VERSION: u64 = 1;

/// The first byte of a version 1 envelope (a CBOR array of four items).
pub const ENVELOPE_TAG: u8 = 0x84;

/// Domain separation for the signed bytes.
const CONTEXT: &[u8] = b"meshtable-sig-v1\0";

/// Bytes an envelope adds around its payload, at most: array header, the
/// version, the signer (up to 64 bytes with a 2-byte header), two
/// byte-string headers (payload up to 65 535 bytes) and the signature.
pub const ENVELOPE_OVERHEAD: usize = 1 + 1 + 2 + crate::MAX_ID_LEN + 3 + 2 + 64;

/// Why an envelope or a key was refused. [`SignError::reason`] gives the
/// counter label.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    /// Starts like an envelope but is not a well-formed one.
    #[error("malformed signed envelope: {0}")]
    Malformed(String),
    /// An envelope version this crate does not read.
    #[error("unsupported envelope version {0}")]
    UnsupportedVersion(u64),
    /// The signature does not verify for this key, topic and payload.
    #[error("signature does not verify")]
    BadSignature,
    /// A key is not 64 hex digits of a valid ed25519 key.
    #[error("invalid ed25519 key")]
    BadKey,
}

impl SignError {
    /// A short, stable label for metrics (`reason="..."`).
    pub fn reason(&self) -> &'static str {
        match self {
            SignError::Malformed(_) | SignError::UnsupportedVersion(_) => "bad_envelope",
            SignError::BadSignature => "bad_signature",
            SignError::BadKey => "bad_key",
        }
    }
}

/// A payload as it came off the wire: signed or not.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opened<'a> {
    /// A version 1 envelope, not yet verified.
    Signed {
        /// The node id that signed, as the envelope says (checked by [`verify`]
        /// only through the key it selects).
        signer: &'a str,
        /// The message inside.
        payload: &'a [u8],
        /// The 64-byte signature.
        signature: [u8; 64],
    },
    /// Not an envelope: the message itself, unsigned.
    Unsigned(&'a [u8]),
}

impl<'a> Opened<'a> {
    /// The message, whether signed or not.
    pub fn payload(&self) -> &'a [u8] {
        match self {
            Opened::Signed { payload, .. } => payload,
            Opened::Unsigned(payload) => payload,
        }
    }
}

/// The bytes an envelope's signature covers.
pub fn signed_bytes(topic: &str, payload: &[u8]) -> Vec<u8> {
    let len = u16::try_from(topic.len()).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(CONTEXT.len() + 2 + topic.len() + payload.len());
    out.extend_from_slice(CONTEXT);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(topic.as_bytes());
    out.extend_from_slice(payload);
    out
}

/// Signs `payload` for `topic` with `signer`'s key and wraps both in a
/// version 1 envelope.
pub fn seal(key: &SigningKey, signer: &str, topic: &str, payload: &[u8]) -> Vec<u8> {
    let signature = key.sign(&signed_bytes(topic, payload));
    let mut out = Vec::with_capacity(payload.len() + ENVELOPE_OVERHEAD);
    let mut e = minicbor::Encoder::new(&mut out);
    // Writing into a Vec cannot fail.
    let _ = e
        .array(4)
        .and_then(|e| e.u64(ENVELOPE_VERSION))
        .and_then(|e| e.str(signer))
        .and_then(|e| e.bytes(payload))
        .and_then(|e| e.bytes(&signature.to_bytes()));
    out
}

/// Tells a signed envelope from a bare message, and takes the envelope
/// apart. Does not verify: see [`verify`]. Never panics, whatever the input.
pub fn open(bytes: &[u8]) -> Result<Opened<'_>, SignError> {
    if bytes.first() != Some(&ENVELOPE_TAG) {
        return Ok(Opened::Unsigned(bytes));
    }
    let malformed = |e: minicbor::decode::Error| SignError::Malformed(e.to_string());
    let mut d = minicbor::Decoder::new(bytes);
    if d.array().map_err(malformed)? != Some(4) {
        return Err(SignError::Malformed("expected an array of 4".to_owned()));
    }
    let version = d.u64().map_err(malformed)?;
    if version != ENVELOPE_VERSION {
        return Err(SignError::UnsupportedVersion(version));
    }
    let signer = d.str().map_err(malformed)?;
    crate::validate_id(signer)
        .map_err(|_| SignError::Malformed("signer is not a valid node id".to_owned()))?;
    let payload = d.bytes().map_err(malformed)?;
    let signature: [u8; 64] = d
        .bytes()
        .map_err(malformed)?
        .try_into()
        .map_err(|_| SignError::Malformed("signature is not 64 bytes".to_owned()))?;
    if d.position() != bytes.len() {
        return Err(SignError::Malformed(
            "trailing bytes after the envelope".to_owned(),
        ));
    }
    Ok(Opened::Signed {
        signer,
        payload,
        signature,
    })
}

/// Checks that `signature` is `key`'s over `topic` and `payload` (strict
/// verification: no malleable or small-order signatures).
pub fn verify(
    key: &VerifyingKey,
    topic: &str,
    payload: &[u8],
    signature: &[u8; 64],
) -> Result<(), SignError> {
    let signature = Signature::from_bytes(signature);
    key.verify_strict(&signed_bytes(topic, payload), &signature)
        .map_err(|_| SignError::BadSignature)
}

/// Opens an envelope and verifies it: the message inside when the
/// signature is `key`'s for `topic`.
pub fn open_verified<'a>(
    key: &VerifyingKey,
    topic: &str,
    bytes: &'a [u8],
) -> Result<&'a [u8], SignError> {
    match open(bytes)? {
        Opened::Signed {
            payload, signature, ..
        } => {
            verify(key, topic, payload, &signature)?;
            Ok(payload)
        }
        Opened::Unsigned(_) => Err(SignError::BadSignature),
    }
}

/// Lowercase hex of `bytes`.
pub fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0xf)]));
    }
    s
}

/// Reads exactly 32 bytes from 64 hex digits (either case; surrounding
/// white space ignored).
pub fn key_bytes_from_hex(text: &str) -> Result<[u8; 32], SignError> {
    let text = text.trim().as_bytes();
    if text.len() != 64 {
        return Err(SignError::BadKey);
    }
    let digit = |c: u8| -> Result<u8, SignError> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(SignError::BadKey),
        }
    };
    let mut out = [0u8; 32];
    for (i, pair) in text.chunks_exact(2).enumerate() {
        out[i] = (digit(pair[0])? << 4) | digit(pair[1])?;
    }
    Ok(out)
}

/// A public key from 64 hex digits.
pub fn verifying_key_from_hex(text: &str) -> Result<VerifyingKey, SignError> {
    VerifyingKey::from_bytes(&key_bytes_from_hex(text)?).map_err(|_| SignError::BadKey)
}

/// A private key from the 64 hex digits of its 32-byte seed.
pub fn signing_key_from_hex(text: &str) -> Result<SigningKey, SignError> {
    Ok(SigningKey::from_bytes(&key_bytes_from_hex(text)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    #[test]
    fn seal_open_verify() {
        let k = key(1);
        let topic = "meshtable/v1/net/n1/telemetry";
        let sealed = seal(&k, "n1", topic, b"\xa1\x00\x01");
        assert_eq!(sealed[0], ENVELOPE_TAG);
        assert_eq!(sealed.len(), 1 + 1 + 3 + 1 + 3 + 2 + 64);
        let vk = k.verifying_key();
        assert_eq!(open_verified(&vk, topic, &sealed), Ok(&b"\xa1\x00\x01"[..]));
        // Another topic, another key, a flipped payload bit: refused.
        let other = "meshtable/v1/net/n2/telemetry";
        assert_eq!(
            open_verified(&vk, other, &sealed),
            Err(SignError::BadSignature)
        );
        assert_eq!(
            open_verified(&key(2).verifying_key(), topic, &sealed),
            Err(SignError::BadSignature)
        );
        let mut flipped = sealed.clone();
        flipped[8] ^= 1;
        assert_eq!(
            open_verified(&vk, topic, &flipped),
            Err(SignError::BadSignature)
        );
    }

    #[test]
    fn open_cases() {
        let sealed = seal(&key(3), "n3", "t", b"x");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (b"{\"v\":1}".to_vec(), "unsigned"),
            (vec![0xa1, 0, 1], "unsigned"),
            (vec![], "unsigned"),
            (sealed.clone(), "signed"),
            (sealed[..sealed.len() - 1].to_vec(), "bad_envelope"),
            ([&sealed[..], &[0]].concat(), "bad_envelope"),
            (vec![0x84, 0x02, 0x61, b'a', 0x40, 0x40], "bad_envelope"),
            (
                vec![0x84, 0x01, 0x61, b'a', 0x41, 0x00, 0x41, 0x00],
                "bad_envelope",
            ),
            (vec![0x84, 0x01, 0x61, b'A', 0x40, 0x58, 64], "bad_envelope"),
            (vec![0x84], "bad_envelope"),
            (vec![0x83, 0x01, 0x40, 0x40], "unsigned"),
        ];
        for (bytes, want) in cases {
            let got = match open(&bytes) {
                Ok(Opened::Signed { .. }) => "signed",
                Ok(Opened::Unsigned(_)) => "unsigned",
                Err(e) => e.reason(),
            };
            assert_eq!(got, want, "{bytes:02x?}");
        }
    }

    #[test]
    fn hex_keys() {
        let k = key(9);
        let hex = to_hex(k.verifying_key().as_bytes());
        assert_eq!(hex.len(), 64);
        assert_eq!(verifying_key_from_hex(&hex), Ok(k.verifying_key()));
        assert_eq!(
            signing_key_from_hex(&to_hex(&k.to_bytes()))
                .unwrap()
                .to_bytes(),
            k.to_bytes()
        );
        assert_eq!(key_bytes_from_hex("zz"), Err(SignError::BadKey));
        assert_eq!(key_bytes_from_hex(&"g".repeat(64)), Err(SignError::BadKey));
    }
}
