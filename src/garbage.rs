//! Unlinks files whose index rows are gone, then takes them off the garbage list.

use crate::fsutil;
use crate::index::Index;
use crate::layout::Layout;

/// Deletes `files` (relative names); those that could not be deleted stay listed for a later try.
/// Returns how many are gone.
pub fn collect(layout: &Layout, index: &Index, files: &[String]) -> usize {
    let mut gone = Vec::with_capacity(files.len());
    for rel in files {
        match fsutil::remove_if_exists(&layout.resolve(rel)) {
            Ok(()) => gone.push(rel.clone()),
            Err(e) => tracing::warn!(file = %rel, error = %e, "cannot delete; kept on the garbage list"),
        }
    }
    if let Err(e) = index.forget_garbage(&gone) {
        tracing::warn!(error = %e, "cannot update the garbage list");
    }
    gone.len()
}
