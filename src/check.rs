//! Compares the store with the index: orphan blobs, missing blobs, stale temp files; optionally repairs.

use std::collections::HashSet;

use crate::index::Index;
use crate::layout::{INIT_PREFIX, SEGMENTS_PREFIX, SPOOL_PREFIX};
use crate::store::Store;

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

#[derive(Debug, Default, serde::Serialize, PartialEq, Eq)]
pub struct Report {
    pub segments: usize,
    pub inits: usize,
    pub spool_files: usize,
    /// Segment or init blobs that no row names (a crash between write and commit).
    pub orphan_files: Vec<String>,
    /// Rows whose blob is missing: footage lost outside screentape's control.
    pub missing_files: Vec<String>,
    /// Blobs on the garbage list still stored.
    pub garbage_files: Vec<String>,
    pub temp_files: usize,
    pub repaired: bool,
}

impl Report {
    pub fn is_consistent(&self) -> bool {
        self.orphan_files.is_empty() && self.missing_files.is_empty() && self.garbage_files.is_empty()
    }
}

/// Walks the store and the index. With `repair`, deletes orphans, garbage and temp files
/// (never a blob a row names). Blocking; safe while a server runs, except that a segment being
/// written at that very moment is reported (and with `repair` removed) as an orphan, which its
/// writer then notices as a failed commit and redoes.
pub fn check(store: &dyn Store, index: &dyn Index, repair: bool) -> Result<Report, CheckError> {
    let segments = index.all_segments()?;
    let inits = index.all_inits()?;
    let known: HashSet<String> = segments.iter().map(|s| s.file.clone()).chain(inits.iter().map(|i| i.file.clone())).collect();
    let garbage: HashSet<String> = index.garbage()?.into_iter().collect();
    let mut report = Report { segments: segments.len(), inits: inits.len(), repaired: repair, ..Report::default() };

    let mut stored = HashSet::new();
    for prefix in [SEGMENTS_PREFIX, INIT_PREFIX] {
        for meta in store.list(prefix)? {
            if garbage.contains(&meta.key) {
                report.garbage_files.push(meta.key.clone());
            } else if !known.contains(&meta.key) {
                report.orphan_files.push(meta.key.clone());
            }
            stored.insert(meta.key);
        }
    }
    report.missing_files = known.into_iter().filter(|k| !stored.contains(k)).collect();
    report.spool_files = store.list(SPOOL_PREFIX)?.len();
    let tmp: Vec<String> = store.list(crate::store::TMP_PREFIX)?.into_iter().map(|m| m.key).collect();
    report.temp_files = tmp.len();

    if repair {
        let files: Vec<String> = report.orphan_files.iter().chain(&report.garbage_files).chain(&tmp).cloned().collect();
        crate::garbage::collect(store, index, &files);
    }
    report.orphan_files.sort();
    report.missing_files.sort();
    report.garbage_files.sort();
    Ok(report)
}
