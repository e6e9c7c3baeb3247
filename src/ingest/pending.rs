//! The in-memory view of the spool: which acknowledged frames are not yet encoded, and which
//! device-minutes need an encode. Uploads wake the scheduler through it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use crate::clock::minute_start_ms;

/// A scheduling hint rebuilt from the spool at start-up; the spool files are the truth.
/// The count of waiting frames is the size of a set of (device, capture) keys, never a counter
/// that a missed decrement could leave too high.
///
/// In a cluster (`Pending::cluster`) the index's `pending_frames` rows are the list of work every
/// node shares: uploads only wake this node's scheduler, the frame count is the cluster's (as
/// last polled), and only this node's own re-encode hints are kept here.
#[derive(Debug, Default)]
pub struct Pending {
    inner: Mutex<Inner>,
    work: Condvar,
    cluster: bool,
}

#[derive(Debug, Default)]
struct Inner {
    /// Per device: acknowledged captures not yet in a segment.
    frames: BTreeMap<String, BTreeSet<i64>>,
    frame_count: usize,
    /// Per device: minutes to (re-)encode.
    minutes: BTreeMap<String, BTreeSet<i64>>,
    /// Set by `notify`, cleared by `wait_for_work`.
    woken: bool,
    /// Cluster mode: pending captures in the index, as last polled.
    cluster_frames: usize,
}

impl Pending {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The data is a set of hints that stays consistent at every step: a panic elsewhere
        // while holding the lock leaves nothing half-done, so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The pending set of a node in a cluster: the index holds the frames, this only wakes.
    pub fn cluster() -> Self {
        Self { cluster: true, ..Self::default() }
    }

    pub fn is_cluster(&self) -> bool {
        self.cluster
    }

    /// Cluster mode: how many captures wait in the index (the scheduler polls it).
    pub fn set_cluster_frames(&self, count: usize) {
        self.lock().cluster_frames = count;
    }

    /// A newly acknowledged frame: it waits for its minute's encode.
    pub fn add(&self, device_id: &str, capture_ms: i64) {
        if self.cluster {
            // The index row is the record; count it until the next poll, and wake.
            self.lock().cluster_frames += 1;
            self.notify();
            return;
        }
        let mut inner = self.lock();
        if inner.frames.entry(device_id.to_string()).or_default().insert(capture_ms) {
            inner.frame_count += 1;
        }
        inner.minutes.entry(device_id.to_string()).or_default().insert(minute_start_ms(capture_ms));
        drop(inner);
        self.notify();
    }

    /// Marks a minute for (re-)encoding without a new frame (e.g. its carry frame changed).
    pub fn add_minute(&self, device_id: &str, minute_ms: i64) {
        self.lock().minutes.entry(device_id.to_string()).or_default().insert(minute_ms);
    }

    /// Frames acknowledged but not yet in a segment.
    pub fn frame_count(&self) -> usize {
        let inner = self.lock();
        if self.cluster {
            inner.cluster_frames
        } else {
            inner.frame_count
        }
    }

    /// These captures of a device reached a durable segment (or were set aside): no longer pending.
    pub fn done(&self, device_id: &str, captures: impl IntoIterator<Item = i64>) {
        let mut inner = self.lock();
        let Inner { frames, frame_count, .. } = &mut *inner;
        if let Some(set) = frames.get_mut(device_id) {
            for c in captures {
                if set.remove(&c) {
                    *frame_count -= 1;
                }
            }
            if set.is_empty() {
                frames.remove(device_id);
            }
        }
    }

    /// Forgets every pending capture older than `before_ms`: retention removed it, no encode
    /// will ever take it. Returns how many were forgotten.
    pub fn forget_before(&self, before_ms: i64) -> usize {
        let mut inner = self.lock();
        let Inner { frames, frame_count, .. } = &mut *inner;
        let mut forgotten = 0;
        frames.retain(|_, set| {
            let kept = set.split_off(&before_ms);
            forgotten += set.len();
            *set = kept;
            !set.is_empty()
        });
        *frame_count -= forgotten;
        forgotten
    }

    /// Removes and returns, per device not in `busy`, the minutes that started before `cutoff_minute_ms`.
    pub fn take_due(&self, cutoff_minute_ms: i64, busy: &BTreeSet<String>) -> Vec<(String, Vec<i64>)> {
        let mut inner = self.lock();
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
        self.lock().minutes.values().any(|m| m.first().is_some_and(|first| *first < cutoff_minute_ms))
    }

    /// Wakes whoever waits in `wait_for_work` (the scheduler).
    pub fn notify(&self) {
        self.lock().woken = true;
        self.work.notify_all();
    }

    /// Waits until `notify` is called or `timeout` passes.
    pub fn wait_for_work(&self, timeout: Duration) {
        let inner = self.lock();
        let (mut inner, _) = self.work.wait_timeout_while(inner, timeout, |i| !i.woken).unwrap_or_else(PoisonError::into_inner);
        inner.woken = false;
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

    /// Regression: frames that retention removed before their encode stayed counted forever,
    /// and past `spool_max_frames` every device got 503 until a restart.
    #[test]
    fn expired_and_encoded_frames_leave_the_count() {
        let p = Pending::default();
        for t in [1_000, 2_000, 3_000, 90_000] {
            p.add("a", t);
        }
        p.add("a", 1_000); // the same frame again changes nothing
        p.add("b", 2_500);
        assert_eq!(p.frame_count(), 5);
        assert_eq!(p.forget_before(2_600), 3);
        assert_eq!(p.frame_count(), 2);
        p.done("a", [90_000, 123]);
        assert_eq!(p.frame_count(), 1, "only a's 3 000 ms frame is left");
        p.done("a", [3_000]);
        assert_eq!(p.frame_count(), 0);
    }

    #[test]
    fn a_cluster_node_counts_the_clusters_frames_and_keeps_only_hints() {
        let p = Pending::cluster();
        p.add("a", 60_005);
        p.add("a", 60_006);
        assert_eq!(p.frame_count(), 2, "counted until the next poll");
        assert!(!p.has_due(i64::MAX), "the index holds the frames' minutes");
        p.set_cluster_frames(40);
        assert_eq!(p.frame_count(), 40);
        p.add_minute("a", 120_000);
        assert_eq!(p.take_due(180_000, &BTreeSet::new()), vec![("a".to_string(), vec![120_000])]);
    }
}
