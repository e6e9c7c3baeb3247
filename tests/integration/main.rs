//! The one integration-test binary: real server, real SQLite, real ffmpeg, real HTTP.

// The synthetic screenshots and the corpus loader of the benchmark live in the binary
// (src/cli/); the tests compile the same files. They name pictures and times as
// `crate::media` / `crate::clock`, which these imports provide.
use screentape::{clock, media};
#[path = "../../src/cli/synth.rs"]
mod synth;
#[allow(dead_code)] // the tests use the loader, not the synthetic corpus
#[path = "../../src/cli/corpus.rs"]
mod corpus;
// The throwaway PostgreSQL and Garage of `screentape bench cluster`: the same file again.
#[allow(dead_code)] // the tests do not read the bench's figures (rows written, table bytes)
#[path = "../../src/cli/engines.rs"]
mod engines;

mod support;
mod pngs;
mod pipeline;
mod errors;
mod access;
mod crash;
mod robustness;
mod postgres;
mod cluster;
mod browser;
mod player;
mod garage;
mod s3;
mod viewer;
