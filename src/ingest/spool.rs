//! The spool's life cycle: what is in it, recovering the pending set at start-up, releasing
//! originals once they are safe in a segment, and removing what fell out of the window.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Config;
use crate::index::Index;
use crate::layout::{parse_spool_key, spool_key, spool_prefix, SPOOL_PREFIX};
use crate::store::{Store, StoreError};

use super::{IngestError, Pending};

/// Capture times of a device's spool files, oldest first.
pub fn spool_captures(store: &dyn Store, device_id: &str) -> Result<BTreeSet<i64>, StoreError> {
    Ok(store
        .list(&spool_prefix(device_id))?
        .iter()
        .filter_map(|m| parse_spool_key(&m.key))
        .filter(|(d, _)| *d == device_id)
        .map(|(_, ms)| ms)
        .collect())
}

/// Rebuilds the pending set from the spool: every spool file not yet in the index (in a
/// cluster: recorded as a pending row, so that any node encodes it; idempotent).
/// Files captured before `expired_before_ms` are past retention: removed, never re-queued.
/// Returns how many frames are pending.
pub fn recover(store: &dyn Store, index: &dyn Index, pending: &Pending, expired_before_ms: i64) -> Result<usize, IngestError> {
    let mut spooled: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for meta in store.list(SPOOL_PREFIX)? {
        let Some((device_id, capture_ms)) = parse_spool_key(&meta.key) else { continue };
        if capture_ms < expired_before_ms {
            store.delete(&meta.key)?;
            continue;
        }
        spooled.entry(device_id.to_string()).or_default().insert(capture_ms);
    }
    let mut recovered = 0;
    for (device_id, captures) in spooled {
        // A file already in the index is a kept original or carry picture, or one whose release
        // a crash interrupted; the device's next encode releases it. One query per device.
        let encoded = encoded_among(index, &device_id, &captures)?;
        for capture_ms in captures.into_iter().filter(|c| !encoded.contains_key(c)) {
            if pending.is_cluster() {
                // Uploaded (perhaps through a node that died before it recorded it): any node
                // encodes it once it is in the index.
                index.add_pending(&device_id, capture_ms)?;
            }
            pending.add(&device_id, capture_ms);
            recovered += 1;
        }
    }
    Ok(recovered)
}

/// Which of a device's spooled `captures` are encoded: capture → (written at, compacted).
fn encoded_among(index: &dyn Index, device_id: &str, captures: &BTreeSet<i64>) -> Result<BTreeMap<i64, (i64, bool)>, IngestError> {
    let (Some(first), Some(last)) = (captures.first(), captures.last()) else { return Ok(BTreeMap::new()) };
    Ok(index
        .frames_encoded_at(device_id, *first, last.saturating_add(1))?
        .into_iter()
        .filter(|(capture_ms, _, _)| captures.contains(capture_ms))
        .map(|(capture_ms, written, compacted)| (capture_ms, (written, compacted)))
        .collect())
}

/// When kept originals may go: frames in a compacted segment written before `compacted_before_ms`,
/// frames in a one-minute segment written before `minute_before_ms` (with compaction on, much
/// later: compaction re-encodes from the originals; a block compaction never reached still lets
/// its originals go eventually).
#[derive(Debug, Clone, Copy)]
pub struct Release {
    pub compacted_before_ms: i64,
    pub minute_before_ms: i64,
}

/// How long originals stay after their segment is written: (compacted, one-minute) in ms.
pub fn keep_windows(config: &Config) -> (i64, i64) {
    let keep = config.keep_originals.as_millis() as i64;
    let minute_keep = if config.compact.enabled() {
        keep + (config.compact.after + config.compact.span).as_millis() as i64 + 3_600_000
    } else {
        keep
    };
    (keep, minute_keep)
}

impl Release {
    pub fn at(now_ms: i64, (keep_compacted_ms, keep_minute_ms): (i64, i64)) -> Self {
        Self { compacted_before_ms: now_ms - keep_compacted_ms, minute_before_ms: now_ms - keep_minute_ms }
    }
}

/// Removes `device_id`'s spool files whose frames are durably in a segment old enough by
/// `release`, except the device's latest capture (the carry picture of its next minute).
/// Until then a late frame re-encodes its minute from these originals, without generation loss.
/// A file is only removed once the index holds its frame. Returns how many were removed.
pub fn release_spool(store: &dyn Store, index: &dyn Index, device_id: &str, release: Release) -> Result<usize, IngestError> {
    let latest = index.last_frame_before(device_id, i64::MAX)?.map(|f| f.capture_ms);
    let spooled = spool_captures(store, device_id)?;
    let encoded = encoded_among(index, device_id, &spooled)?;
    let mut removed = 0;
    for capture_ms in spooled {
        if Some(capture_ms) == latest {
            continue;
        }
        let release_it = match encoded.get(&capture_ms) {
            Some((at, true)) => *at < release.compacted_before_ms,
            Some((at, false)) => *at < release.minute_before_ms,
            None => false,
        };
        if release_it {
            store.delete(&spool_key(device_id, capture_ms))?;
            removed += 1;
        }
    }
    Ok(removed)
}

/// Removes every spool file captured before `before_ms` (kept originals, a device's carry
/// picture, a frame never encoded) and forgets those still pending: left behind, a restart would
/// take them for pending frames and bring expired footage back, and the pending count would
/// never come down. Returns how many files it removed.
pub fn remove_expired(store: &dyn Store, pending: &Pending, before_ms: i64) -> Result<usize, StoreError> {
    let mut removed = 0;
    for meta in store.list(SPOOL_PREFIX)? {
        if parse_spool_key(&meta.key).is_some_and(|(_, ms)| ms < before_ms) {
            store.delete(&meta.key)?;
            removed += 1;
        }
    }
    pending.forget_before(before_ms);
    Ok(removed)
}
