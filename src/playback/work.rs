//! Bounds on expensive viewing work: a fixed number of slots with a bounded wait, and one
//! computation per key at a time (a second asker waits for the first and then finds its result).

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// At most `capacity` holders at once; a caller that cannot get a slot within `wait` is refused,
/// so a burst of requests turns into quick 503s instead of a queue of minutes of CPU.
pub struct Slots {
    free: Mutex<usize>,
    freed: Condvar,
    wait: Duration,
}

/// A held slot; released on drop (also when the work panics).
pub struct Slot<'a>(&'a Slots);

impl Drop for Slot<'_> {
    fn drop(&mut self) {
        *lock(&self.0.free) += 1;
        self.0.freed.notify_one();
    }
}

impl Slots {
    pub fn new(capacity: usize, wait: Duration) -> Self {
        Self { free: Mutex::new(capacity.max(1)), freed: Condvar::new(), wait }
    }

    /// A slot, or None when none came free in time. Blocking.
    pub fn acquire(&self) -> Option<Slot<'_>> {
        let deadline = Instant::now() + self.wait;
        let mut free = lock(&self.free);
        while *free == 0 {
            let left = deadline.checked_duration_since(Instant::now())?;
            free = self.freed.wait_timeout(free, left).unwrap_or_else(PoisonError::into_inner).0;
        }
        *free -= 1;
        Some(Slot(self))
    }
}

/// One lock per key, created on demand and dropped when nobody holds or waits for it: work on
/// one key is serialised, work on different keys runs in parallel.
pub struct KeyedLocks<K> {
    locks: Mutex<HashMap<K, Arc<Mutex<()>>>>,
}

impl<K: Hash + Eq + Clone> Default for KeyedLocks<K> {
    fn default() -> Self {
        Self { locks: Mutex::new(HashMap::new()) }
    }
}

impl<K: Hash + Eq + Clone> KeyedLocks<K> {
    /// Runs `f` while holding `key`'s lock. Blocking.
    pub fn with<T>(&self, key: &K, f: impl FnOnce() -> T) -> T {
        let entry = lock(&self.locks).entry(key.clone()).or_default().clone();
        let out = {
            let _held = lock(&entry);
            f()
        };
        let mut locks = lock(&self.locks);
        // Two references: the map's and ours. Anyone else waiting holds a third.
        if Arc::strong_count(&entry) == 2 {
            locks.remove(key);
        }
        out
    }

    /// True when no key has a lock alive (held or waited for).
    #[cfg(test)]
    fn is_empty(&self) -> bool {
        lock(&self.locks).is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn slots_refuse_past_capacity_and_come_back() {
        let slots = Slots::new(2, Duration::from_millis(20));
        let (a, b) = (slots.acquire().unwrap(), slots.acquire().unwrap());
        assert!(slots.acquire().is_none(), "a third waits 20 ms, then is refused");
        drop(a);
        assert!(slots.acquire().is_some());
        drop(b);
    }

    #[test]
    fn one_computation_per_key_at_a_time_and_no_lock_left_behind() {
        let locks = Arc::new(KeyedLocks::<u32>::default());
        let (running, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (locks, running, most) = (locks.clone(), running.clone(), most.clone());
                std::thread::spawn(move || {
                    locks.with(&7, || {
                        let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                        most.fetch_max(now, Ordering::SeqCst);
                        std::thread::yield_now();
                        running.fetch_sub(1, Ordering::SeqCst);
                    })
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(most.load(Ordering::SeqCst), 1);
        assert!(locks.is_empty());
    }
}
