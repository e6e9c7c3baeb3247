//! The demo device (`serve --demo`): generated screenshots fed through the real ingest path, so a
//! newcomer sees footage at once. Part of the binary, not of the server library.

use std::sync::Arc;
use std::time::Duration;

use screentape::app::App;
use screentape::auth;
use screentape::clock::MINUTE_MS;

use super::synth::screenshot;

pub const DEMO_DEVICE_NAME: &str = "demo";
const STEP_MS: i64 = 10_000;
const BACKFILL_MS: i64 = 10 * MINUTE_MS;

/// Ensures the demo device exists, backfills the last ten minutes, then adds a frame every 10 s
/// until the app stops. Returns the device id. Blocking; run on its own thread.
pub fn run(app: Arc<App>) {
    let device_id = match ensure_device(&app) {
        Ok(id) => id,
        Err(e) => {
            tracing::error!(error = %e, "demo device unavailable");
            return;
        }
    };
    let now = app.clock.now_ms();
    let mut t = (now - BACKFILL_MS) / STEP_MS * STEP_MS;
    while !app.stopping() {
        if t <= app.clock.now_ms() {
            let step = (t / STEP_MS) as u64;
            let png = screentape::media::png::encode_rgb(&screenshot(1280, 720, t, step, 1));
            if let Err(e) = app.ingest.accept(&device_id, t, &png) {
                tracing::warn!(error = %e, "demo frame refused");
            }
            t += STEP_MS;
        } else {
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

fn ensure_device(app: &App) -> Result<String, screentape::index::IndexError> {
    if let Some(id) = app.index.device_id_by_name(DEMO_DEVICE_NAME)? {
        return Ok(id);
    }
    let id = auth::new_device_id();
    // Its token is never shown: the demo feeds frames in-process.
    let (_, hash) = auth::new_token(auth::DEVICE_TOKEN_PREFIX);
    app.index.create_device(&id, DEMO_DEVICE_NAME, None, &hash, app.clock.now_ms())?;
    Ok(id)
}
