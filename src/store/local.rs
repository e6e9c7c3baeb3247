//! The blob store as a local directory: keys are relative paths under the data dir.

use std::path::{Path, PathBuf};

use super::{fsutil, Created, ObjectMeta, Result, Store, StoreError};

/// Blobs as files under `root`. Writes go to `root/tmp` first, then are linked into place and
/// fsynced with their directory (docs/durability.md).
#[derive(Debug, Clone)]
pub struct LocalStore {
    root: PathBuf,
    tmp: PathBuf,
}

/// Temp files of half-done writes; emptied at start-up by `check --repair`.
pub const TMP_PREFIX: &str = "tmp/";

impl LocalStore {
    /// A store rooted at `root` (created durably if needed).
    pub fn open(root: &Path) -> std::io::Result<Self> {
        let tmp = root.join("tmp");
        fsutil::create_dir_durably(&tmp)?;
        Ok(Self { root: root.to_path_buf(), tmp })
    }

    /// The file behind `key`. Keys come from `crate::layout` (never from a request), and are
    /// checked anyway: no absolute path, no `..`.
    fn path(&self, key: &str) -> std::io::Result<PathBuf> {
        let ok = !key.is_empty()
            && !key.starts_with('/')
            && key.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
        if !ok {
            return Err(std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad store key {key:?}")));
        }
        Ok(self.root.join(key))
    }
}

impl Store for LocalStore {
    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<Created> {
        let path = self.path(key).map_err(|e| StoreError::io(key, e))?;
        // A stat spares a retried upload the temp write and fsync; the link below still decides.
        if path.try_exists().map_err(|e| StoreError::io(key, e))? {
            return Ok(Created::AlreadyExists);
        }
        match fsutil::write_new_durably(&self.tmp, &path, bytes).map_err(|e| StoreError::io(key, e))? {
            fsutil::Created::New => Ok(Created::New),
            fsutil::Created::AlreadyExists => Ok(Created::AlreadyExists),
        }
    }

    fn put_cache(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(key).map_err(|e| StoreError::io(key, e))?;
        fsutil::write_replacing(&self.tmp, &path, bytes).map_err(|e| StoreError::io(key, e))
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(key).map_err(|e| StoreError::io(key, e))?;
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::io(key, e)),
        }
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path(key).map_err(|e| StoreError::io(key, e))?;
        path.try_exists().map_err(|e| StoreError::io(key, e))
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key).map_err(|e| StoreError::io(key, e))?;
        fsutil::remove_if_exists(&path).map_err(|e| StoreError::io(key, e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let dir = self.path(prefix.trim_end_matches('/')).map_err(|e| StoreError::io(prefix, e))?;
        let mut out = Vec::new();
        walk(&self.root, &dir, &mut out).map_err(|e| StoreError::io(prefix, e))?;
        Ok(out)
    }
}

/// Files under `dir`, keyed by their path relative to `root` with forward slashes.
fn walk(root: &Path, dir: &Path, out: &mut Vec<ObjectMeta>) -> std::io::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let entry = entry?;
        let path = entry.path();
        let file_type = match entry.file_type() {
            Ok(t) => t,
            // Removed between the listing and the look: not there any more.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if file_type.is_dir() {
            walk(root, &path, out)?;
        } else if file_type.is_file() {
            let Ok(meta) = entry.metadata() else { continue };
            let Ok(rel) = path.strip_prefix(root) else { continue };
            let Some(key) = rel.to_str() else { continue };
            out.push(ObjectMeta {
                key: key.replace('\\', "/"),
                bytes: meta.len(),
                modified: meta.modified().unwrap_or(std::time::SystemTime::UNIX_EPOCH),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_immutable_listable_and_confined_to_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let store = LocalStore::open(dir.path()).unwrap();
        assert_eq!(store.put_new("spool/d1/5.png", b"one").unwrap(), Created::New);
        assert_eq!(store.put_new("spool/d1/5.png", b"two").unwrap(), Created::AlreadyExists);
        assert_eq!(store.get("spool/d1/5.png").unwrap().unwrap(), b"one");
        store.put_cache("cache/x/s1.m4s", b"c1").unwrap();
        store.put_cache("cache/x/s1.m4s", b"c2").unwrap();
        assert_eq!(store.get("cache/x/s1.m4s").unwrap().unwrap(), b"c2");
        let keys: Vec<String> = store.list("spool/").unwrap().into_iter().map(|m| m.key).collect();
        assert_eq!(keys, vec!["spool/d1/5.png".to_string()]);
        assert!(store.list("nothing/").unwrap().is_empty());
        store.delete("spool/d1/5.png").unwrap();
        store.delete("spool/d1/5.png").unwrap();
        assert_eq!(store.get("spool/d1/5.png").unwrap(), None);
        for bad in ["../x", "/etc/passwd", "a//b", "a/./b", ""] {
            assert!(store.get(bad).is_err(), "{bad}");
        }
        assert!(store.list(TMP_PREFIX).unwrap().is_empty(), "temp files are cleaned up");
    }
}
