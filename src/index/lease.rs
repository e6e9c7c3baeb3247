//! Sharing work between nodes: leases (a row per name with a holder, a fencing token and an
//! expiry) and the fence that makes an encode's commit a compare-and-set on its lease.
//!
//! A node claims `device/ID` before it encodes anything of that device (its due minutes, or one
//! compaction block) and `retention` before a sweep; it renews what it holds while the work
//! runs and releases it at the end. A lease whose holder died expires and is taken over with a
//! new token. Tokens only grow (a released lease keeps its row), so a stalled holder that wakes
//! up after a take-over can never commit: `replace_block` checks the token in its transaction.

use std::cell::RefCell;

/// A lease this node holds: what, who, and the token its commits are fenced by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub token: i64,
}

/// The lease name of a device's encoding work (minutes and compaction blocks alike: one job per
/// device at a time across the cluster, as inside one node).
pub fn device_lease(device_id: &str) -> String {
    format!("device/{device_id}")
}

/// The lease name of the retention sweep (one node sweeps at a time).
pub const RETENTION_LEASE: &str = "retention";

/// A minute with pending (uploaded, not yet encoded) captures in the index: the cluster's list
/// of work. `max_seq` is the newest pending row seen; once the minute is encoded, the rows up to
/// it are done (a capture uploaded later has a larger one and stays pending).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueMinute {
    pub device_id: String,
    pub minute_ms: i64,
    pub max_seq: i64,
}

thread_local! {
    static FENCE: RefCell<Option<Lease>> = const { RefCell::new(None) };
}

/// Runs `f` with `lease` as this thread's fence: every `replace_block` it makes commits only if
/// the lease still has this token (the job runner's interface stays `encode_minute(device,
/// minute)`; the fence rides with the worker thread). Restored however `f` ends.
pub fn fenced<T>(lease: Option<&Lease>, f: impl FnOnce() -> T) -> T {
    struct Restore(Option<Lease>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            FENCE.with(|fence| *fence.borrow_mut() = previous);
        }
    }
    let previous = FENCE.with(|fence| std::mem::replace(&mut *fence.borrow_mut(), lease.cloned()));
    let _restore = Restore(previous);
    f()
}

/// The fence of the job running on this thread, if any.
pub(crate) fn current_fence() -> Option<Lease> {
    FENCE.with(|fence| fence.borrow().clone())
}

/// A name for this node in lease rows: host, process and start time, unique across restarts.
pub fn node_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "node".into());
    format!("{host}-{}-{:x}", std::process::id(), rand::random::<u32>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fence_is_scoped_to_the_job() {
        let lease = Lease { name: "device/a".into(), holder: "n".into(), token: 7 };
        assert_eq!(current_fence(), None);
        let inner = fenced(Some(&lease), || {
            let nested = fenced(None, current_fence);
            (current_fence(), nested)
        });
        assert_eq!(inner, (Some(lease), None));
        assert_eq!(current_fence(), None);
        let caught = std::panic::catch_unwind(|| fenced(Some(&Lease { name: "x".into(), holder: "n".into(), token: 1 }), || panic!("job")));
        assert!(caught.is_err());
        assert_eq!(current_fence(), None, "a panicking job leaves no fence behind");
    }
}
