//! Deletes blobs whose index rows are gone, then takes them off the garbage list.

use crate::index::Index;
use crate::store::Store;

/// Deletes `keys`; those that could not be deleted stay listed for a later try.
/// Returns how many are gone.
pub fn collect(store: &dyn Store, index: &dyn Index, keys: &[String]) -> usize {
    let mut gone = Vec::with_capacity(keys.len());
    for key in keys {
        match store.delete(key) {
            Ok(()) => gone.push(key.clone()),
            Err(e) => tracing::warn!(key = %key, error = %e, "cannot delete; kept on the garbage list"),
        }
    }
    if let Err(e) = index.forget_garbage(&gone) {
        tracing::warn!(error = %e, "cannot update the garbage list");
    }
    gone.len()
}
