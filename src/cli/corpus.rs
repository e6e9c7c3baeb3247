//! Corpora for the benchmarks and the player tests: a directory of real screenshots (with an
//! optional manifest of capture times), or synthetic ones.

use std::collections::BTreeMap;
use std::path::Path;

use super::synth::screenshot;
use crate::media::png::encode_rgb;

/// One screenshot of a corpus.
pub struct CorpusFrame {
    pub capture_ms: i64,
    pub png: Vec<u8>,
}

/// Loads `*.png` from `dir` in name order. Capture times come from `manifest.tsv` (`name<TAB>capture_ms`)
/// when present, else one every 10 s.
pub fn load_dir(dir: &Path) -> std::io::Result<Vec<CorpusFrame>> {
    let manifest: BTreeMap<String, i64> = std::fs::read_to_string(dir.join("manifest.tsv"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (name, t) = l.split_once('\t')?;
            Some((name.to_string(), t.trim().parse().ok()?))
        })
        .collect();
    let mut names: Vec<String> = std::fs::read_dir(dir)?
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.ends_with(".png"))
        .collect();
    names.sort();
    let start = 1_764_151_200_000i64;
    names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            Ok(CorpusFrame {
                capture_ms: manifest.get(n).copied().unwrap_or(start + i as i64 * 10_000),
                png: std::fs::read(dir.join(n))?,
            })
        })
        .collect()
}

/// `n` synthetic screenshots at `width`×`height`, one every 10 s, with idle stretches
/// (identical frames) and scrolling text.
pub fn synthetic(width: u32, height: u32, n: usize) -> Vec<CorpusFrame> {
    let start = 1_764_151_200_000i64;
    let mut step = 0u64;
    (0..n)
        .map(|i| {
            // Every 6th frame repeats the previous picture (idle); the clock still ticks otherwise.
            if i % 6 != 5 {
                step += 1;
            }
            let t = start + i as i64 * 10_000;
            CorpusFrame { capture_ms: t, png: encode_rgb(&screenshot(width, height, start + step as i64 * 10_000, step, 2)) }
        })
        .collect()
}
