//! Viewing endpoints: extract, call one `Playback` method on a blocking thread, shape the answer.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{blocking, files, ApiError, AppState, Viewer, VisibleDevice};
use crate::clock::parse_time_ms;
use crate::index::DeviceInfo;
use crate::playback::Rendition;

/// 200 while serving; `status` says `degraded` when background work keeps failing.
pub async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    let encoder = (state.encoder_health)();
    let status = if encoder.is_degraded() { "degraded" } else { "ok" };
    Json(serde_json::json!({ "status": status, "encoder": encoder, "pending_frames": state.pending.frame_count() }))
}

pub async fn metrics(State(state): State<AppState>, _viewer: Viewer) -> Response {
    state.metrics.set_failing_compactions((state.encoder_health)().failing_compactions);
    let text = state.metrics.render(state.pending.frame_count());
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], text).into_response()
}

pub async fn devices(State(state): State<AppState>, Viewer(user): Viewer) -> Result<Json<Vec<DeviceInfo>>, ApiError> {
    let playback = state.playback.clone();
    Ok(Json(blocking(move || Ok(playback.devices(&user)?)).await?))
}

fn playlist_response(text: String) -> Response {
    ([(header::CONTENT_TYPE, "application/vnd.apple.mpegurl"), (header::CACHE_CONTROL, "no-store")], text).into_response()
}

pub async fn multivariant(State(state): State<AppState>, VisibleDevice(device): VisibleDevice) -> Result<Response, ApiError> {
    let playback = state.playback.clone();
    Ok(playlist_response(blocking(move || Ok(playback.multivariant(&device)?)).await?))
}

async fn media(state: AppState, device: crate::playback::VisibleDevice, rendition: Rendition) -> Result<Response, ApiError> {
    let playback = state.playback.clone();
    Ok(playlist_response(blocking(move || Ok(playback.media_playlist(&device, rendition)?)).await?))
}

pub async fn media_playlist(State(state): State<AppState>, VisibleDevice(device): VisibleDevice) -> Result<Response, ApiError> {
    media(state, device, Rendition::Stored).await
}

/// The 4:2:0 variant's media playlist: the same entries, URIs of transcoded segments.
pub async fn media_playlist_420(State(state): State<AppState>, VisibleDevice(device): VisibleDevice) -> Result<Response, ApiError> {
    media(state, device, Rendition::Chroma420).await
}

/// `"{n}.{ext}"` → n
fn numbered(file: &str, ext: &str) -> Result<i64, ApiError> {
    file.strip_suffix(ext).and_then(|n| n.parse().ok()).ok_or(ApiError::NotFound)
}

/// `{n}.m4s`: media segment n of the device, in `rendition`, with Range support.
async fn segment_of(state: AppState, device: crate::playback::VisibleDevice, file: &str, headers: &HeaderMap, rendition: Rendition) -> Result<Response, ApiError> {
    let id = numbered(file, ".m4s")?;
    let playback = state.playback.clone();
    let bytes = blocking(move || Ok(playback.segment(&device, id, rendition)?)).await?;
    files::immutable(bytes, "video/iso.segment", headers)
}

/// `{n}.mp4`: init segment n of the device's segments, in `rendition`, with Range support.
async fn init_of(state: AppState, device: crate::playback::VisibleDevice, file: &str, headers: &HeaderMap, rendition: Rendition) -> Result<Response, ApiError> {
    let id = numbered(file, ".mp4")?;
    let playback = state.playback.clone();
    let bytes = blocking(move || Ok(playback.init(&device, id, rendition)?)).await?;
    files::immutable(bytes, "video/mp4", headers)
}

pub async fn segment(
    State(state): State<AppState>,
    VisibleDevice(device): VisibleDevice,
    Path((_, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    segment_of(state, device, &file, &headers, Rendition::Stored).await
}

pub async fn segment_420(
    State(state): State<AppState>,
    VisibleDevice(device): VisibleDevice,
    Path((_, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    segment_of(state, device, &file, &headers, Rendition::Chroma420).await
}

pub async fn init(
    State(state): State<AppState>,
    VisibleDevice(device): VisibleDevice,
    Path((_, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    init_of(state, device, &file, &headers, Rendition::Stored).await
}

pub async fn init_420(
    State(state): State<AppState>,
    VisibleDevice(device): VisibleDevice,
    Path((_, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    init_of(state, device, &file, &headers, Rendition::Chroma420).await
}

/// Gap entries are never meant to be fetched.
pub async fn gap(Viewer(_): Viewer) -> ApiError {
    ApiError::NotFound
}

fn time_param(q: &HashMap<String, String>, key: &str) -> Result<Option<i64>, ApiError> {
    match q.get(key) {
        None => Ok(None),
        Some(v) => parse_time_ms(v)
            .map(Some)
            .ok_or_else(|| ApiError::BadRequest("bad_time", format!("`{key}` must be unix milliseconds or RFC 3339"))),
    }
}

fn required_time(q: &HashMap<String, String>, key: &str) -> Result<i64, ApiError> {
    time_param(q, key)?.ok_or_else(|| ApiError::BadRequest("bad_time", format!("`{key}` is required")))
}

pub async fn timeline(
    State(state): State<AppState>,
    VisibleDevice(device): VisibleDevice,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<crate::playback::Timeline>, ApiError> {
    let (from, to) = (time_param(&q, "from")?, time_param(&q, "to")?);
    let playback = state.playback.clone();
    Ok(Json(blocking(move || Ok(playback.timeline(&device, from, to)?)).await?))
}

pub async fn frame_png(
    State(state): State<AppState>,
    VisibleDevice(device): VisibleDevice,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let t = required_time(&q, "t")?;
    let playback = state.playback.clone();
    let frame = blocking(move || Ok(playback.frame(&device, t)?)).await?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=60"));
    headers.insert("x-frame-time", HeaderValue::from(frame.pts_ms));
    Ok((StatusCode::OK, headers, frame.png).into_response())
}

pub async fn thumb_png(
    State(state): State<AppState>,
    VisibleDevice(device): VisibleDevice,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let t = required_time(&q, "t")?;
    let playback = state.playback.clone();
    let png = blocking(move || Ok(playback.thumbnail(&device, t)?)).await?;
    // Segment ids change when a minute is re-encoded or compacted, so a short cache is safe.
    Ok(([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "private, max-age=300")], png.as_ref().clone()).into_response())
}

pub async fn export_mp4(
    State(state): State<AppState>,
    VisibleDevice(device): VisibleDevice,
    Query(q): Query<HashMap<String, String>>,
    request: HeaderMap,
) -> Result<Response, ApiError> {
    let (from, to) = (required_time(&q, "from")?, required_time(&q, "to")?);
    // `chroma=420`: "plays everywhere" (H.264 High 4:2:0); the default is the exact stored 4:4:4.
    let (rendition, suffix) = match q.get("chroma").map(String::as_str) {
        None | Some("444") => (Rendition::Stored, ""),
        Some("420") => (Rendition::Chroma420, "-420"),
        Some(_) => return Err(ApiError::BadRequest("bad_chroma", "`chroma` must be 444 or 420".into())),
    };
    let id = device.id.clone();
    let playback = state.playback.clone();
    let export = blocking(move || Ok(playback.export(&device, from, to, rendition)?)).await?;
    let disposition = format!("attachment; filename=\"screentape-{id}-{}{suffix}.mp4\"", export.start_ms);
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(ApiError::internal)?);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    headers.insert("x-export-start", HeaderValue::from(export.start_ms));
    // Range too, so that a `<video src>` pointed at an export can seek in it.
    files::with_range(export.bytes, headers, &request)
}

/// `storyboard?hour=H`: which capture each tile of that hour's sprite shows, and the sprite's URL.
pub async fn storyboard(
    State(state): State<AppState>,
    VisibleDevice(device): VisibleDevice,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let hour = required_time(&q, "hour")?;
    let playback = state.playback.clone();
    let board = blocking(move || Ok(playback.storyboard(&device, hour)?)).await?;
    // The current hour grows: a fresh answer each time (the sprite URL changes with the footage).
    Ok(([(header::CACHE_CONTROL, "no-store")], Json(board)).into_response())
}

/// `storyboard/{HOUR-VERSION}.jpg`: the sprite; its name changes whenever its content would.
pub async fn storyboard_sprite(
    State(state): State<AppState>,
    VisibleDevice(device): VisibleDevice,
    Path((_, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let name = file.strip_suffix(".jpg").ok_or(ApiError::NotFound)?.to_string();
    let playback = state.playback.clone();
    let jpeg = blocking(move || Ok(playback.storyboard_sprite(&device, &name)?)).await?;
    files::immutable(jpeg, "image/jpeg", &headers)
}
