//! screentape: durable screenshot uploads → fMP4 segments per device-minute, compacted into
//! long-GOP blocks → an index → HLS, frames and exports. docs/architecture.md maps the modules.
// Unsafe code is denied everywhere; media/ffmpeg.rs alone allows it, with a SAFETY note per block.
#![deny(unsafe_code)]

// Leaves: no imports from the crate beyond each other's types.
pub mod clock;
pub mod config;
pub mod hls;
pub mod layout;
pub mod media;
pub mod metrics;
// The two storage seams.
pub mod index;
pub mod store;
// Shared pieces of the data path.
pub mod auth;
pub mod garbage;
pub mod ingest;
// The subsystems: none imports another.
pub mod check;
pub mod encode;
pub mod playback;
pub mod retention;
pub mod http;
// Wiring.
pub mod app;

/// The synthetic screenshots of the benchmark and demo (src/cli/synth.rs), for unit tests.
#[cfg(test)]
#[path = "cli/synth.rs"]
mod synth;
