//! Compares the disk with the index: orphan files, missing files, stale temp files; optionally repairs.

use std::collections::HashSet;
use std::path::Path;

use crate::index::Index;
use crate::layout::Layout;

#[derive(Debug, Default, serde::Serialize, PartialEq, Eq)]
pub struct Report {
    pub segments: usize,
    pub inits: usize,
    pub spool_files: usize,
    /// Segment or init files on disk that no row names (a crash between write and commit).
    pub orphan_files: Vec<String>,
    /// Rows whose file is missing: footage lost outside screentape's control.
    pub missing_files: Vec<String>,
    /// Files on the garbage list still on disk.
    pub garbage_files: Vec<String>,
    pub temp_files: usize,
    pub repaired: bool,
}

impl Report {
    pub fn is_consistent(&self) -> bool {
        self.orphan_files.is_empty() && self.missing_files.is_empty() && self.garbage_files.is_empty()
    }
}

/// Walks the data dir and the index. With `repair`, deletes orphans, garbage and temp files
/// (never a file a row names). Blocking; safe while a server runs, except that a segment being
/// written at that very moment is reported (and with `repair` removed) as an orphan, which its
/// writer then notices as a failed commit and redoes.
pub fn check(layout: &Layout, index: &Index, repair: bool) -> Result<Report, crate::index::IndexError> {
    let segments = index.all_segments()?;
    let inits = index.all_inits()?;
    let known: HashSet<String> = segments.iter().map(|s| s.file.clone()).chain(inits.iter().map(|i| i.file.clone())).collect();
    let garbage: HashSet<String> = index.garbage()?.into_iter().collect();
    let mut report = Report { segments: segments.len(), inits: inits.len(), repaired: repair, ..Report::default() };

    for rel in &known {
        if !layout.resolve(rel).exists() {
            report.missing_files.push(rel.clone());
        }
    }
    let mut on_disk = Vec::new();
    list_files(layout.root(), &layout.segments_root(), &mut on_disk);
    list_files(layout.root(), &layout.init_root(), &mut on_disk);
    for rel in on_disk {
        if garbage.contains(&rel) {
            report.garbage_files.push(rel);
        } else if !known.contains(&rel) {
            report.orphan_files.push(rel);
        }
    }
    let mut spool = Vec::new();
    list_files(layout.root(), &layout.spool_root(), &mut spool);
    report.spool_files = spool.len();
    let mut tmp = Vec::new();
    list_files(layout.root(), &layout.tmp_dir(), &mut tmp);
    report.temp_files = tmp.len();

    if repair {
        let files: Vec<String> = report.orphan_files.iter().chain(&report.garbage_files).chain(&tmp).cloned().collect();
        crate::garbage::collect(layout, index, &files);
    }
    report.orphan_files.sort();
    report.missing_files.sort();
    report.garbage_files.sort();
    Ok(report)
}

/// Files under `dir`, as paths relative to `root` with forward slashes.
fn list_files(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        match e.file_type() {
            Ok(t) if t.is_dir() => list_files(root, &path, out),
            Ok(t) if t.is_file() => {
                if let Ok(rel) = path.strip_prefix(root) {
                    out.push(rel.to_string_lossy().replace('\\', "/"));
                }
            }
            _ => {}
        }
    }
}
