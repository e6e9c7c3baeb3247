//! Deterministic synthetic screenshots with real rendered text, for the demo, tests and benchmarks.

use font8x8::UnicodeFonts;

use crate::clock::format_rfc3339_ms;
use crate::media::png::RgbImage;

/// Draws `text` with the 8×8 bitmap font (1-pixel strokes) at (x, y), scaled by `scale`.
pub fn draw_text(img: &mut RgbImage, x: i64, y: i64, text: &str, rgb: [u8; 3], scale: i64) {
    let mut cx = x;
    for ch in text.chars() {
        if let Some(glyph) = font8x8::BASIC_FONTS.get(ch) {
            for (row, bits) in glyph.iter().enumerate() {
                for col in 0..8 {
                    if bits & (1 << col) != 0 {
                        fill_rect(img, cx + col * scale, y + row as i64 * scale, scale, scale, rgb);
                    }
                }
            }
        }
        cx += 8 * scale;
    }
}

pub fn fill_rect(img: &mut RgbImage, x: i64, y: i64, w: i64, h: i64, rgb: [u8; 3]) {
    let (iw, ih) = (img.width as i64, img.height as i64);
    for yy in y.max(0)..(y + h).min(ih) {
        for xx in x.max(0)..(x + w).min(iw) {
            let at = ((yy * iw + xx) * 3) as usize;
            img.data[at..at + 3].copy_from_slice(&rgb);
        }
    }
}

const WORDS: &[&str] = &[
    "screentape", "segment", "keyframe", "minute", "retention", "durable", "fsync", "playlist", "device",
    "capture", "timeline", "encoder", "rust", "sqlite", "browser", "frame", "index", "spool", "upload",
];

/// A desktop-like screenshot: a window with a title bar, paragraphs of small black text that
/// scroll with `step`, coloured one-pixel text, and a taskbar clock showing `capture_ms`.
pub fn screenshot(width: u32, height: u32, capture_ms: i64, step: u64, seed: u64) -> RgbImage {
    let mut img = RgbImage { width, height, data: vec![0; (width * height * 3) as usize] };
    let (w, h) = (width as i64, height as i64);
    fill_rect(&mut img, 0, 0, w, h, [236, 240, 244]);
    // window
    fill_rect(&mut img, 8, 8, w - 16, h - 40, [255, 255, 255]);
    fill_rect(&mut img, 8, 8, w - 16, 18, [52, 101, 164]);
    draw_text(&mut img, 14, 13, &format!("notes-{seed}.txt - editor"), [255, 255, 255], 1);
    // a sidebar of file names
    let sidebar = (w / 6).clamp(0, 220);
    fill_rect(&mut img, 8, 26, sidebar, h - 58, [245, 246, 248]);
    for i in 0..((h - 80) / 18).max(0) {
        let name = WORDS[(i as usize * 7 + seed as usize) % WORDS.len()];
        let colour = if i as u64 == step % 9 { [0, 90, 220] } else { [60, 60, 60] };
        draw_text(&mut img, 16, 36 + i * 18, &format!("{name}.rs"), colour, 1);
    }
    // paragraphs of small text that scroll with `step`, with blank lines between paragraphs
    let line_h = 16;
    let text_x = sidebar + 24;
    let chars = ((w - text_x - 24) / 8).max(0) as usize;
    for i in 0..((h - 80) / line_h).max(0) {
        let n = (i as u64 + step + seed * 7) as usize;
        if n % 6 == 5 {
            continue;
        }
        let count = 4 + (n * 13) % 9;
        let text: Vec<&str> = (0..count).map(|k| WORDS[(n * 31 + k * 17 + (n * k) % 5) % WORDS.len()]).collect();
        let mut line = format!("{n:05} {}", text.join(" "));
        line.truncate(chars);
        let colour = match n % 7 {
            0 => [200, 0, 0],
            3 => [0, 90, 220],
            5 => [0, 140, 60],
            _ => [20, 20, 20],
        };
        draw_text(&mut img, text_x, 34 + i * line_h, &line, colour, 1);
    }
    // taskbar with a clock that changes every capture
    fill_rect(&mut img, 0, h - 28, w, 28, [30, 30, 38]);
    let clock = format_rfc3339_ms(capture_ms);
    draw_text(&mut img, (w - 8 * clock.len() as i64 - 8).max(0), h - 18, &clock, [255, 220, 0], 1);
    draw_text(&mut img, 8, h - 18, &format!("frame {step}"), [120, 220, 255], 1);
    img
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_changes_with_time() {
        let a = screenshot(320, 200, 1_000, 1, 3);
        assert_eq!(a, screenshot(320, 200, 1_000, 1, 3));
        assert_ne!(a, screenshot(320, 200, 11_000, 2, 3));
        assert!(a.data.chunks(3).any(|p| p == [200, 0, 0]), "has red 1-px text");
    }
}
