//! Durable writes: the one place that knows the order temp file → fsync → link/rename → fsync dir.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Whether the final name already existed when `write_new_durably` tried to create it.
#[derive(Debug, PartialEq, Eq)]
pub enum Created {
    New,
    AlreadyExists,
}

/// Writes `bytes` to `path` only if nothing is there yet, durably: the data and the
/// directory entry are both fsynced before this returns `Created::New`.
/// Uses a hard link from a temp file so concurrent writers of the same name never clobber.
pub fn write_new_durably(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<Created> {
    let dir = path.parent().ok_or_else(|| io::Error::other("path has no parent"))?;
    create_dir_durably(dir)?;
    let tmp = tempfile::Builder::new().prefix("w").tempfile_in(tmp_dir)?;
    write_and_sync(tmp.as_file(), bytes)?;
    let outcome = match fs::hard_link(tmp.path(), path) {
        Ok(()) => Created::New,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Created::AlreadyExists,
        Err(e) => return Err(e),
    };
    drop(tmp); // unlinks the temp name
    if outcome == Created::New {
        fsync_dir(dir)?;
    }
    Ok(outcome)
}

/// Writes `bytes` to `path`, replacing whatever is there, whole or not at all (temp → rename),
/// without fsync: for derived files that can be made again (caches).
pub fn write_replacing(tmp_dir: &Path, path: &Path, bytes: &[u8]) -> io::Result<()> {
    let dir = path.parent().ok_or_else(|| io::Error::other("path has no parent"))?;
    fs::create_dir_all(dir)?;
    let mut tmp = tempfile::Builder::new().prefix("c").tempfile_in(tmp_dir)?;
    tmp.write_all(bytes)?;
    tmp.persist(path).map_err(|e| e.error)?;
    Ok(())
}

/// Creates `dir` and any missing parents, fsyncing the parent of each directory it creates, so
/// that a file fsynced inside a new directory cannot vanish with that directory after a crash.
pub fn create_dir_durably(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    // The missing directories, deepest first.
    let mut missing = Vec::new();
    let mut at = Some(dir);
    while let Some(d) = at {
        if d.as_os_str().is_empty() || d.is_dir() {
            break;
        }
        missing.push(d);
        at = d.parent();
    }
    for d in missing.into_iter().rev() {
        match fs::create_dir(d) {
            Ok(()) => {}
            // Another writer made it meanwhile; its parent fsync is that writer's (or ours below).
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(e),
        }
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            fsync_dir(parent)?;
        }
    }
    Ok(())
}

fn write_and_sync(mut file: &File, bytes: &[u8]) -> io::Result<()> {
    file.write_all(bytes)?;
    file.sync_all()
}

pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    OpenOptions::new().read(true).open(dir)?.sync_all()
}

/// Removes a file; a file that is already gone counts as removed.
pub fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// True for the errors that mean "no space left" (answered as 507).
pub fn is_disk_full(e: &io::Error) -> bool {
    matches!(e.kind(), io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded)
        || e.raw_os_error() == Some(28)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_file_is_never_clobbered() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir_all(&tmp).unwrap();
        let p = dir.path().join("a/b.bin");
        assert_eq!(write_new_durably(&tmp, &p, b"one").unwrap(), Created::New);
        assert_eq!(write_new_durably(&tmp, &p, b"two").unwrap(), Created::AlreadyExists);
        assert_eq!(fs::read(&p).unwrap(), b"one");
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0, "temp files are cleaned up");
        write_replacing(&tmp, &p, b"three").unwrap();
        assert_eq!(fs::read(&p).unwrap(), b"three");
        create_dir_durably(&dir.path().join("x/y/z")).unwrap();
        assert!(dir.path().join("x/y/z").is_dir());
        create_dir_durably(&dir.path().join("x/y/z")).unwrap();
    }
}
