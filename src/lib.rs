//! screentape: durable screenshot uploads → one fMP4 segment per device-minute → SQLite index → HLS.
// Unsafe code is denied everywhere; media/ffmpeg.rs alone allows it, with a SAFETY note per block.
#![deny(unsafe_code)]

pub mod clock;
pub mod config;
pub mod fsutil;
pub mod index;
pub mod ingest;
pub mod layout;
pub mod media;
pub mod synth;
pub mod encode;
pub mod metrics;
pub mod auth;
pub mod hls;
pub mod check;
pub mod retention;
pub mod garbage;
pub mod app;
pub mod demo;
pub mod http;
pub mod bench;
pub mod variant;
