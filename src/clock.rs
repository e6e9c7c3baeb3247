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
    let t = UNIX_EPOCH + std::time::Duration::from_millis(t_ms.max(0) as u64);
    humantime::format_rfc3339_millis(t).to_string()
}

/// Parses a time given as unix milliseconds or RFC 3339 (as API.md allows in headers and queries).
pub fn parse_time_ms(text: &str) -> Option<i64> {
    let text = text.trim();
    // Both forms are ASCII; refusing anything else also keeps the byte slicing below on char boundaries.
    if text.is_empty() || text.len() > 64 || !text.is_ascii() {
        return None;
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse::<i64>().ok().filter(|ms| *ms < 1 << 50);
    }
    // RFC 3339 allows a numeric offset (`+02:00`); humantime takes only UTC, so apply it here.
    let (base, offset_ms) = match text.len().checked_sub(6).map(|at| text.split_at(at)) {
        Some((base, off)) if base.contains('T') && (off.starts_with('+') || off.starts_with('-')) && off.as_bytes()[3] == b':' => {
            let hours: i64 = off[1..3].parse().ok()?;
            let minutes: i64 = off[4..6].parse().ok()?;
            if hours > 23 || minutes > 59 {
                return None;
            }
            let sign = if off.starts_with('-') { -1 } else { 1 };
            (base, sign * (hours * 60 + minutes) * 60_000)
        }
        _ => (text, 0),
    };
    let t = humantime::parse_rfc3339_weak(base.trim_end_matches(['Z', 'z'])).ok()?;
    let ms = i64::try_from(t.duration_since(UNIX_EPOCH).ok()?.as_millis()).ok()?;
    Some(ms - offset_ms)
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
