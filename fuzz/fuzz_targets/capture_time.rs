//! Fuzzes the capture-time parser (header and query strings): never panics; digits round-trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use screentape::clock::parse_time_ms;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Some(ms) = parse_time_ms(text) {
            if text.trim().bytes().all(|b| b.is_ascii_digit()) {
                assert_eq!(text.trim().parse::<i64>().ok(), Some(ms));
            }
        }
    }
});
