//! The web player's files, embedded in the binary so one binary is the whole product.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use super::ApiError;

const INDEX_HTML: &str = include_str!("../../player/index.html");
const APP_JS: &str = include_str!("../../player/app.js");
const FRAMES_JS: &str = include_str!("../../player/frames.js");
const STYLE_CSS: &str = include_str!("../../player/style.css");
const FAVICON_SVG: &str = include_str!("../../player/favicon.svg");
/// hls.js, pinned: version and sha256 in player/vendor/hls.VERSION (checked by a test).
const HLS_JS: &str = include_str!("../../player/vendor/hls.min.js");

pub async fn index() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], INDEX_HTML).into_response()
}

pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (body, content_type) = match file.as_str() {
        "app.js" => (APP_JS, "text/javascript; charset=utf-8"),
        "frames.js" => (FRAMES_JS, "text/javascript; charset=utf-8"),
        "style.css" => (STYLE_CSS, "text/css; charset=utf-8"),
        "favicon.svg" => (FAVICON_SVG, "image/svg+xml"),
        "hls.min.js" => (HLS_JS, "text/javascript; charset=utf-8"),
        _ => return Err(ApiError::NotFound),
    };
    Ok(([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response())
}
