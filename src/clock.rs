//! Time source: the only caller of `SystemTime::now`, plus a manual clock for tests.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};


/// Wall-clock time in unix milliseconds. Retention and the encode scheduler only ever
/// ask this trait, so tests can move time by hand.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> i64;
}

pub type SharedClock = Arc<dyn Clock>;

#[derive(Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to.
#[derive(Debug)]
pub struct ManualClock(AtomicI64);

impl ManualClock {
    pub fn new(now_ms: i64) -> Arc<Self> {
        Arc::new(Self(AtomicI64::new(now_ms)))
    }
    pub fn set_ms(&self, now_ms: i64) {
        self.0.store(now_ms, Ordering::SeqCst);
    }
    pub fn advance_ms(&self, delta_ms: i64) {
        self.0.fetch_add(delta_ms, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.0.load(Ordering::SeqCst)
    }
}

pub const MINUTE_MS: i64 = 60_000;

/// Start of the minute holding `t_ms` (floor, also for negative times).
pub fn minute_start_ms(t_ms: i64) -> i64 {
    t_ms.div_euclid(MINUTE_MS) * MINUTE_MS
}

/// RFC 3339 in UTC with milliseconds, e.g. `2026-11-26T10:00:07.250Z`.
pub fn format_rfc3339_ms(t_ms: i64) -> String {
    let t = jiff::Timestamp::from_millisecond(t_ms.max(0)).unwrap_or(jiff::Timestamp::UNIX_EPOCH);
    t.strftime("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

/// Parses a time given as unix milliseconds or RFC 3339 with `Z` or a numeric offset (as
/// docs/api.md allows in headers and queries). None for anything else, never a panic.
pub fn parse_time_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    // Both forms are ASCII and short; refusing anything else bounds the work on hostile input.
    if text.is_empty() || text.len() > 64 || !text.is_ascii() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<i64>().ok().filter(|ms| *ms < 1 << 50);
    }
    // jiff parses RFC 3339 (and its ISO 8601 relatives); RFC 3339 offsets stop at 23:59.
    if let Some(offset) = text.get(text.len().saturating_sub(6)..).filter(|o| o.starts_with(['+', '-']) && text.contains('T')) {
        if offset.get(1..3).and_then(|h| h.parse::<u8>().ok()).is_none_or(|h| h > 23) {
            return None;
        }
    }
    let t: jiff::Timestamp = text.parse().ok()?;
    Some(t.as_millisecond()).filter(|ms| *ms >= 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_forms() {
        assert_eq!(parse_time_ms("1764151207250"), Some(1_764_151_207_250));
        assert_eq!(parse_time_ms("2025-11-26T10:00:07.250Z"), Some(1_764_151_207_250));
        assert_eq!(parse_time_ms("2025-11-26T10:00:07Z"), Some(1_764_151_207_000));
        assert_eq!(parse_time_ms("2025-11-26T12:00:07.250+02:00"), Some(1_764_151_207_250));
        assert_eq!(parse_time_ms("2025-11-26T05:30:07.250-04:30"), Some(1_764_151_207_250));
        assert_eq!(parse_time_ms("2025-11-26T10:00:07+25:00"), None);
        assert_eq!(parse_time_ms("2025-13-26T10:00:07Z"), None);
        assert_eq!(parse_time_ms(""), None);
        assert_eq!(parse_time_ms("-5"), None);
        assert_eq!(parse_time_ms("yesterday"), None);
        assert_eq!(parse_time_ms("99999999999999999999999"), None);
        assert_eq!(format_rfc3339_ms(1_764_151_207_250), "2025-11-26T10:00:07.250Z");
    }

    /// Found by fuzz/fuzz_targets/capture_time.rs: a multi-byte character where the offset's
    /// sign would be made the parser slice inside it and panic (reachable through `?t=`).
    #[test]
    fn regression_non_ascii_time_does_not_panic() {
        for text in ["7Ν174:8", "2025-11-26T10:00:07.250+0Ν:00", "ΝΝΝΝΝΝΝΝ", "2025-11-26T10:00:07.2é+02:00"] {
            assert_eq!(parse_time_ms(text), None, "{text}");
        }
    }

    #[test]
    fn minute_floor() {
        assert_eq!(minute_start_ms(1_764_151_207_250), 1_764_151_200_000);
        assert_eq!(minute_start_ms(60_000), 60_000);
        assert_eq!(minute_start_ms(-1), -60_000);
    }
}
