//! The one integration-test binary: real server, real SQLite, real ffmpeg, real HTTP.

mod support;
mod pngs;
mod pipeline;
mod errors;
mod access;
mod crash;
mod browser;
mod player;
