//! Secrets: generating them, hashing them for storage, checking them.
//!
//! - Passwords: argon2id PHC strings (salted, deliberately slow).
//! - Session ids and API tokens: 256 random bits; stored as the SHA-256 of
//!   the secret, which is enough for a secret with that much entropy and
//!   lets a request find its row with one indexed lookup.
//! - CSRF tokens: derived from the session id, so they need no storage and
//!   nobody without the session cookie can compute one.
//!
//! None of these types print their secret in `Debug`.

use std::fmt;

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use rand::Rng;
use rand::distr::Alphanumeric;
use sha2::{Digest, Sha256};

/// The visible start of every API token.
pub const TOKEN_PREFIX: &str = "mt_";

/// How many characters of a token (after [`TOKEN_PREFIX`]) are kept visible
/// in listings and the audit log.
pub const TOKEN_VISIBLE: usize = 8;

/// Length of generated passwords (alphanumeric: about 119 bits).
pub const GENERATED_PASSWORD_LEN: usize = 20;

/// A secret string that never shows itself in `Debug` or `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret.
    pub fn new(s: impl Into<String>) -> Secret {
        Secret(s.into())
    }

    /// The secret itself, to hand to the one person who may see it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(..)")
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use fmt::Write;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// SHA-256 of `s`, as lowercase hex: how session ids and tokens are stored.
pub fn sha256_hex(s: &str) -> String {
    hex(&Sha256::digest(s.as_bytes()))
}

/// 256 random bits as 64 hex characters (a CSPRNG seeded by the OS).
pub fn random_hex256() -> String {
    hex(&rand::random::<[u8; 32]>())
}

/// A new random password of [`GENERATED_PASSWORD_LEN`] letters and digits.
pub fn generate_password() -> Secret {
    Secret(
        rand::rng()
            .sample_iter(Alphanumeric)
            .take(GENERATED_PASSWORD_LEN)
            .map(char::from)
            .collect(),
    )
}

/// A new API token: `mt_` followed by 64 hex characters.
pub fn generate_token() -> Secret {
    Secret(format!("{TOKEN_PREFIX}{}", random_hex256()))
}

/// The visible part of a token (`mt_` and the first [`TOKEN_VISIBLE`]
/// characters), safe to list and log.
pub fn token_prefix(token: &str) -> String {
    token
        .chars()
        .take(TOKEN_PREFIX.len() + TOKEN_VISIBLE)
        .collect()
}

/// Whether `s` has the shape of an API token.
pub fn looks_like_token(s: &str) -> bool {
    s.strip_prefix(TOKEN_PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Why a password could not be hashed.
#[derive(Debug, thiserror::Error)]
#[error("cannot hash the password: {0}")]
pub struct HashError(String);

/// The argon2id PHC string of `password`, with a random salt.
pub fn hash_password(password: &str) -> Result<String, HashError> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
        .map_err(|e| HashError(e.to_string()))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| HashError(e.to_string()))
}

/// A valid hash of a password nobody knows, checked against when the login
/// name does not exist, so that both cases take as long.
pub fn dummy_hash() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| hash_password(&random_hex256()).unwrap_or_default())
}

/// Whether `password` matches the PHC string `hash` (false for a hash that
/// does not parse).
pub fn verify_password(password: &str, hash: &str) -> bool {
    PasswordHash::new(hash)
        .map(|h| {
            Argon2::default()
                .verify_password(password.as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// The CSRF token of the session whose cookie value is `session_id`.
pub fn csrf_token(session_id: &str) -> String {
    sha256_hex(&format!("meshtable-csrf\0{session_id}"))
}

/// Compares two strings in time independent of where they differ.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("correct horsE", &h));
        assert!(!verify_password("x", "not a hash"));
        assert_ne!(h, hash_password("correct horse").unwrap(), "salted");
        assert!(!verify_password("", dummy_hash()));
    }

    #[test]
    fn tokens_have_their_shape() {
        let t = generate_token();
        assert!(looks_like_token(t.expose()), "{}", t.expose());
        assert_eq!(token_prefix(t.expose()).len(), 11);
        assert!(!looks_like_token("mt_xyz"));
        assert_eq!(format!("{t:?}"), "Secret(..)");
        assert_ne!(generate_token(), t);
        let p = generate_password();
        assert_eq!(p.expose().len(), GENERATED_PASSWORD_LEN);
        assert!(p.expose().chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn hashes_and_comparisons() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
        assert_ne!(csrf_token("a"), csrf_token("b"));
        assert_eq!(csrf_token("a").len(), 64);
    }
}
