//! Failed web logins per user name, for rate limiting.

use std::sync::Mutex;

/// Failed logins per user name in a sliding window: past the limit, logins for that name
/// answer 429 until the window has passed, so a password cannot be guessed at Argon2 speed.
#[derive(Default)]
pub struct LoginLimiter(Mutex<std::collections::HashMap<String, Vec<i64>>>);

impl LoginLimiter {
    pub const MAX_FAILURES: usize = 5;
    pub const WINDOW_MS: i64 = 15 * 60_000;

    pub fn is_blocked(&self, name: &str, now_ms: i64) -> bool {
        let mut map = self.0.lock().expect("login lock");
        let failures = map.entry(name.to_string()).or_default();
        failures.retain(|t| now_ms - t < Self::WINDOW_MS);
        failures.len() >= Self::MAX_FAILURES
    }

    pub fn record_failure(&self, name: &str, now_ms: i64) {
        let mut map = self.0.lock().expect("login lock");
        // Bounded: forget everything if an attacker sprays names.
        if map.len() > 100_000 {
            map.clear();
        }
        map.entry(name.to_string()).or_default().push(now_ms);
    }

    pub fn clear(&self, name: &str) {
        self.0.lock().expect("login lock").remove(name);
    }
}
