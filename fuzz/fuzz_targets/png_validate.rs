//! Fuzzes upload validation: never panics, and whatever it accepts decodes to the size it claims
//! (an acknowledged frame must be encodable later).
#![no_main]

use libfuzzer_sys::fuzz_target;
use screentape::ingest::png::{decode_rgb, probe, validate};

fuzz_target!(|data: &[u8]| {
    // Small limits keep each run fast; the logic does not depend on them.
    let max = 256;
    let probed = probe(data, max);
    if let Ok((w, h)) = validate(data, max) {
        assert_eq!(probed, Ok((w, h)));
        let image = decode_rgb(data, max).expect("validated PNG must decode");
        assert_eq!((image.width, image.height), (w, h));
        assert_eq!(image.data.len(), w as usize * h as usize * 3);
    }
});
