//! Secrets: random tokens stored as SHA-256, passwords stored as Argon2id, session tokens.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use rand::distributions::{Alphanumeric, DistString};
use rand::RngCore;
use sha2::{Digest, Sha256};

/// Prefixes say what a token is for, so a leaked one is recognisable in logs and scanners.
pub const DEVICE_TOKEN_PREFIX: &str = "stdev_";
pub const VIEWER_TOKEN_PREFIX: &str = "stview_";
pub const SESSION_TOKEN_PREFIX: &str = "stsess_";

/// A new random token (192 bits) with `prefix`, and the hash to store.
pub fn new_token(prefix: &str) -> (String, [u8; 32]) {
    let mut raw = [0u8; 24];
    rand::thread_rng().fill_bytes(&mut raw);
    let token = format!("{prefix}{}", hex::encode(raw));
    let hash = hash_token(&token);
    (token, hash)
}

/// Tokens carry 192 random bits, so a fast hash suffices; lookups are by hash, never by the token.
pub fn hash_token(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

pub fn new_password() -> String {
    Alphanumeric.sample_string(&mut rand::thread_rng(), 20)
}

pub fn new_device_id() -> String {
    let mut raw = [0u8; 8];
    rand::thread_rng().fill_bytes(&mut raw);
    hex::encode(raw)
}

pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut argon2::password_hash::rand_core::OsRng);
    Argon2::default().hash_password(password.as_bytes(), &salt).expect("argon2 with default params").to_string()
}

/// Checks a password against its stored hash (Argon2's own comparison is constant-time).
pub fn verify_password(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|h| Argon2::default().verify_password(password.as_bytes(), &h).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_and_passwords() {
        let (t, h) = new_token(DEVICE_TOKEN_PREFIX);
        assert!(t.starts_with("stdev_") && t.len() == 6 + 48);
        assert_eq!(hash_token(&t), h);
        let pw = new_password();
        let stored = hash_password(&pw);
        assert!(stored.starts_with("$argon2id$"));
        assert!(verify_password(&pw, &stored));
        assert!(!verify_password("wrong", &stored));
        assert!(!verify_password(&pw, "not a hash"));
    }
}
