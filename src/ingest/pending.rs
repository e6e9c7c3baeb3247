//! The in-memory view of the spool: which device-minutes hold acknowledged frames not yet encoded.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use crate::clock::minute_start_ms;

/// A scheduling hint rebuilt from the spool directory at start-up; the spool files are the truth.
#[derive(Debug, Default)]
pub struct Pending {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    minutes: BTreeMap<String, BTreeSet<i64>>,
    frames: usize,
}

impl Pending {
    pub fn add(&self, device_id: &str, capture_ms: i64) {
        let mut inner = self.inner.lock().expect("pending lock");
        inner.minutes.entry(device_id.to_string()).or_default().insert(minute_start_ms(capture_ms));
        inner.frames += 1;
    }

    /// Marks a minute for (re-)encoding without a new frame (e.g. its carry frame changed).
    pub fn add_minute(&self, device_id: &str, minute_ms: i64) {
        let mut inner = self.inner.lock().expect("pending lock");
        inner.minutes.entry(device_id.to_string()).or_default().insert(minute_ms);
    }

    /// Frames acknowledged but not yet in a segment.
    pub fn frame_count(&self) -> usize {
        self.inner.lock().expect("pending lock").frames
    }

    /// `n` spool frames reached a durable segment.
    pub fn frames_encoded(&self, n: usize) {
        let mut inner = self.inner.lock().expect("pending lock");
        inner.frames = inner.frames.saturating_sub(n);
    }

    /// Removes and returns, per device not in `busy`, the minutes that started before `cutoff_minute_ms`.
    pub fn take_due(&self, cutoff_minute_ms: i64, busy: &BTreeSet<String>) -> Vec<(String, Vec<i64>)> {
        let mut inner = self.inner.lock().expect("pending lock");
        let mut out = Vec::new();
        inner.minutes.retain(|device, minutes| {
            if busy.contains(device) {
                return true;
            }
            let later = minutes.split_off(&cutoff_minute_ms);
            let due = std::mem::replace(minutes, later);
            if !due.is_empty() {
                out.push((device.clone(), due.into_iter().collect()));
            }
            !minutes.is_empty()
        });
        out
    }

    /// True when some minute is due at `cutoff_minute_ms`.
    pub fn has_due(&self, cutoff_minute_ms: i64) -> bool {
        let inner = self.inner.lock().expect("pending lock");
        inner.minutes.values().any(|m| m.first().is_some_and(|first| *first < cutoff_minute_ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takes_only_due_minutes_of_idle_devices() {
        let p = Pending::default();
        p.add("a", 60_000 + 5);
        p.add("a", 120_000 + 5);
        p.add("b", 60_000 + 7);
        let busy: BTreeSet<String> = ["b".to_string()].into();
        assert_eq!(p.take_due(120_000, &busy), vec![("a".to_string(), vec![60_000])]);
        assert!(p.has_due(120_000), "b is still due");
        assert_eq!(p.frame_count(), 3);
        assert_eq!(p.take_due(180_000, &BTreeSet::new()).len(), 2);
        assert!(!p.has_due(i64::MAX));
    }
}
