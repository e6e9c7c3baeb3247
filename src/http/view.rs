//! Viewing endpoints: device list, playlists, timeline, segments, exact frames, MP4 export.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{blocking, files, ApiError, Viewer};
use crate::app::App;
use crate::clock::{parse_time_ms, MINUTE_MS};
use crate::hls::{self, Entry};
use crate::index::{DeviceInfo, Segment};
use crate::ingest::png::encode_rgb;
use crate::media::{ffmpeg, mp4};

/// Longest range one export may cover.
const MAX_EXPORT_MS: i64 = 6 * 3_600_000;

pub async fn metrics(State(app): State<Arc<App>>, _viewer: Viewer) -> Response {
    let text = app.metrics.render(app.pending.frame_count());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], text).into_response()
}

pub async fn devices(State(app): State<Arc<App>>, Viewer(user): Viewer) -> Result<Json<Vec<DeviceInfo>>, ApiError> {
    let index = app.index.clone();
    Ok(Json(blocking(move || Ok(index.devices_visible_to(&user)?)).await?))
}

/// 404 unless `user` may see `device_id` (an unknown device and a foreign one look the same).
async fn visible(app: &Arc<App>, user: crate::index::User, device_id: &str) -> Result<(), ApiError> {
    let index = app.index.clone();
    let id = device_id.to_string();
    if blocking(move || Ok(index.can_view(&user, &id)?)).await? {
        Ok(())
    } else {
        Err(ApiError::NotFound)
    }
}

/// The device's segments in the retention window, oldest first.
async fn window_segments(app: &Arc<App>, device_id: &str) -> Result<Vec<Segment>, ApiError> {
    let now = app.clock.now_ms();
    let from = now - app.config.retention.as_millis() as i64;
    let (index, id) = (app.index.clone(), device_id.to_string());
    blocking(move || Ok(index.segments_between(&id, from, i64::MAX)?)).await
}

fn playlist_response(text: String) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/vnd.apple.mpegurl"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        text,
    )
        .into_response()
}

pub async fn multivariant(State(app): State<Arc<App>>, Viewer(user): Viewer, Path(id): Path<String>) -> Result<Response, ApiError> {
    visible(&app, user, &id).await?;
    let segments = window_segments(&app, &id).await?;
    let latest = segments.last();
    // CODECS names the highest level in the window, so the browser checks what it will really get.
    let codec = segments.iter().map(|s| s.codec.as_str()).max().unwrap_or("avc1.F40028");
    let (width, height) = latest.map_or((1920, 1080), |s| (s.width, s.height));
    let bandwidth = segments
        .iter()
        .map(|s| (s.bytes as u64 * 8 * 1000) / (s.end_ms - s.start_ms).max(1) as u64)
        .max()
        .unwrap_or(100_000)
        .max(1_000);
    // High 4:4:4 first (what Chromium plays); High 4:2:0, transcoded on demand, for the rest.
    let codec_420 = crate::variant::codec_420(codec);
    let variants = [
        hls::Variant { codec, bandwidth, uri: "media.m3u8" },
        hls::Variant { codec: &codec_420, bandwidth: bandwidth / 2, uri: "media420.m3u8" },
    ];
    Ok(playlist_response(hls::multivariant_playlist(width, height, &variants)))
}

/// The 4:2:0 variant's media playlist: the same entries, URIs of transcoded segments.
pub async fn media_playlist_420(State(app): State<Arc<App>>, Viewer(user): Viewer, Path(id): Path<String>) -> Result<Response, ApiError> {
    visible(&app, user, &id).await?;
    let entries: Vec<Entry> = entries(&window_segments(&app, &id).await?)
        .into_iter()
        .map(|e| match e {
            Entry::Segment { start_ms, end_ms, uri, init_uri } => Entry::Segment {
                start_ms,
                end_ms,
                uri: uri.replacen("segments/", "segments420/", 1),
                init_uri: init_uri.replacen("init/", "init420/", 1),
            },
            gap => gap,
        })
        .collect();
    Ok(playlist_response(hls::media_playlist(&entries)))
}

pub async fn segment_420(
    State(app): State<Arc<App>>,
    Viewer(user): Viewer,
    Path((id, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve_segment(app, user, id, &file, &headers, |app, seg| Ok(app.variants.segment(seg)?)).await
}

pub async fn init_420(
    State(app): State<Arc<App>>,
    Viewer(user): Viewer,
    Path((id, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    // The variant finds a segment of this device with that init, or answers 404.
    serve_init(app, user, id, &file, &headers, |app, device_id, init_id| Ok(app.variants.init(device_id, init_id)?)).await
}

pub async fn media_playlist(State(app): State<Arc<App>>, Viewer(user): Viewer, Path(id): Path<String>) -> Result<Response, ApiError> {
    visible(&app, user, &id).await?;
    let entries = entries(&window_segments(&app, &id).await?);
    Ok(playlist_response(hls::media_playlist(&entries)))
}

fn entries(segments: &[Segment]) -> Vec<Entry> {
    hls::with_gaps(
        segments
            .iter()
            .map(|s| Entry::Segment {
                start_ms: s.start_ms,
                end_ms: s.end_ms,
                uri: format!("segments/{}.m4s", s.id),
                init_uri: format!("init/{}.mp4", s.init_id),
            })
            .collect(),
    )
}

#[derive(serde::Serialize)]
pub struct Span {
    start_ms: i64,
    end_ms: i64,
}

#[derive(serde::Serialize)]
pub struct Timeline {
    device: String,
    from_ms: i64,
    to_ms: i64,
    /// Media time 0 of the playlist (its first entry's start), for mapping player time to wall clock.
    media_start_ms: Option<i64>,
    /// End of the last encoded minute: the live edge.
    live_edge_ms: Option<i64>,
    /// Every encoded capture time in the range, oldest first.
    captures: Vec<i64>,
    /// Stretches with footage.
    recorded: Vec<Span>,
    /// Stretches inside the range without footage (device offline).
    gaps: Vec<Span>,
    /// Frames received but not yet encoded (they appear within about a minute).
    pending_frames: usize,
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
    State(app): State<Arc<App>>,
    Viewer(user): Viewer,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Timeline>, ApiError> {
    visible(&app, user, &id).await?;
    let now = app.clock.now_ms();
    let window_start = now - app.config.retention.as_millis() as i64;
    let from = time_param(&q, "from")?.unwrap_or(window_start).max(window_start);
    let to = time_param(&q, "to")?.unwrap_or(now + MINUTE_MS);
    if to < from {
        return Err(ApiError::BadRequest("bad_range", "`to` is before `from`".into()));
    }
    let segments = window_segments(&app, &id).await?;
    let (index, dev) = (app.index.clone(), id.clone());
    let captures = blocking(move || Ok(index.frames_between(&dev, from, to)?)).await?;
    let mut recorded: Vec<Span> = Vec::new();
    for s in segments.iter().filter(|s| s.end_ms > from && s.start_ms < to) {
        match recorded.last_mut() {
            Some(last) if last.end_ms == s.start_ms => last.end_ms = s.end_ms,
            _ => recorded.push(Span { start_ms: s.start_ms, end_ms: s.end_ms }),
        }
    }
    let gaps = recorded.windows(2).map(|w| Span { start_ms: w[0].end_ms, end_ms: w[1].start_ms }).collect();
    Ok(Json(Timeline {
        device: id,
        from_ms: from,
        to_ms: to,
        media_start_ms: segments.first().map(|s| s.start_ms),
        live_edge_ms: segments.last().map(|s| s.end_ms),
        captures: captures.iter().map(|f| f.capture_ms).collect(),
        recorded,
        gaps,
        pending_frames: app.pending.frame_count(),
    }))
}

/// `"{n}.{ext}"` → n
fn numbered(file: &str, ext: &str) -> Result<i64, ApiError> {
    file.strip_suffix(ext).and_then(|n| n.parse().ok()).ok_or(ApiError::NotFound)
}

pub async fn segment(
    State(app): State<Arc<App>>,
    Viewer(user): Viewer,
    Path((id, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve_segment(app, user, id, &file, &headers, |app, seg| read_stored(app, &seg.file)).await
}

/// `{n}.m4s` of the device's segment n, as `bytes_of` makes it (stored, or transcoded); another
/// device's segment id is a 404.
async fn serve_segment(
    app: Arc<App>,
    user: crate::index::User,
    id: String,
    file: &str,
    headers: &HeaderMap,
    bytes_of: fn(&App, &Segment) -> Result<Vec<u8>, ApiError>,
) -> Result<Response, ApiError> {
    visible(&app, user, &id).await?;
    let seg_id = numbered(file, ".m4s")?;
    let bytes = blocking(move || {
        let seg = app.index.segment(seg_id)?.filter(|s| s.device_id == id).ok_or(ApiError::NotFound)?;
        bytes_of(&app, &seg)
    })
    .await?;
    files::immutable(bytes, "video/iso.segment", headers)
}

pub async fn init(
    State(app): State<Arc<App>>,
    Viewer(user): Viewer,
    Path((id, file)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    serve_init(app, user, id, &file, &headers, |app, device_id, init_id| {
        // Only an init that one of this device's segments uses.
        if !app.index.device_uses_init(device_id, init_id)? {
            return Err(ApiError::NotFound);
        }
        let init = app.index.init(init_id)?.ok_or(ApiError::NotFound)?;
        read_stored(app, &init.file)
    })
    .await
}

/// `{n}.mp4`, the init segment n of the device's segments, as `bytes_of` makes it.
async fn serve_init(
    app: Arc<App>,
    user: crate::index::User,
    id: String,
    file: &str,
    headers: &HeaderMap,
    bytes_of: fn(&App, &str, i64) -> Result<Vec<u8>, ApiError>,
) -> Result<Response, ApiError> {
    visible(&app, user, &id).await?;
    let init_id = numbered(file, ".mp4")?;
    let bytes = blocking(move || bytes_of(&app, &id, init_id)).await?;
    files::immutable(bytes, "video/mp4", headers)
}

/// Gap entries are never meant to be fetched.
pub async fn gap(Viewer(_): Viewer) -> ApiError {
    ApiError::NotFound
}

/// Reads a stored file; one removed by retention in the meantime is a clean 404.
fn read_stored(app: &App, rel: &str) -> Result<Vec<u8>, ApiError> {
    std::fs::read(app.layout.resolve(rel)).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => ApiError::NotFound,
        _ => ApiError::internal(e),
    })
}

fn init_file(app: &App, seg: &Segment) -> Result<Vec<u8>, ApiError> {
    let init = app.index.init(seg.init_id)?.ok_or(ApiError::NotFound)?;
    read_stored(app, &init.file)
}

fn segment_files(app: &App, seg: &Segment) -> Result<(Vec<u8>, Vec<u8>), ApiError> {
    Ok((init_file(app, seg)?, read_stored(app, &seg.file)?))
}

/// The device's segment covering `t`, or 404 (a gap, or outside the footage).
fn segment_at(app: &App, device_id: &str, t: i64) -> Result<Segment, ApiError> {
    app.index.segments_between(device_id, t, t + 1)?.into_iter().next().ok_or(ApiError::NotFound)
}

pub async fn frame_png(
    State(app): State<Arc<App>>,
    Viewer(user): Viewer,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    visible(&app, user, &id).await?;
    let t = required_time(&q, "t")?;
    let app2 = app.clone();
    let (pts, png) = blocking(move || {
        let seg = segment_at(&app2, &id, t)?;
        let (init, media) = segment_files(&app2, &seg)?;
        let (pts, yuv) = ffmpeg::decode_frame_at(&init, &media, t).map_err(ApiError::internal)?.ok_or(ApiError::NotFound)?;
        let rgb = ffmpeg::yuv_to_rgb(&yuv).map_err(ApiError::internal)?;
        Ok((pts, encode_rgb(&rgb)))
    })
    .await?;
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("image/png"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=60"));
    headers.insert("x-frame-time", HeaderValue::from(pts));
    Ok((StatusCode::OK, headers, png).into_response())
}

/// Width of timeline previews.
const THUMB_WIDTH: u32 = 240;
/// Previews kept in memory (~20 KB each).
const THUMB_CACHE: usize = 2048;

/// A small preview of the minute holding `t` (the frame on screen at its start), cached per
/// segment and minute. A compacted segment spans several minutes: one decoding pass makes the
/// previews of all of them.
pub async fn thumb_png(
    State(app): State<Arc<App>>,
    Viewer(user): Viewer,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    visible(&app, user, &id).await?;
    let t = required_time(&q, "t")?;
    let app2 = app.clone();
    let png = blocking(move || {
        let seg = segment_at(&app2, &id, t)?;
        let minute_of = |t: i64| (t.div_euclid(MINUTE_MS) * MINUTE_MS).max(seg.start_ms);
        let key = (seg.id, minute_of(t));
        if let Some(png) = app2.thumbs.get(key) {
            return Ok(png);
        }
        let (init, media) = segment_files(&app2, &seg)?;
        let minutes: Vec<i64> = std::iter::successors(Some(seg.start_ms), |m| Some(m.div_euclid(MINUTE_MS) * MINUTE_MS + MINUTE_MS))
            .take_while(|m| *m < seg.end_ms)
            .collect();
        let mut wanted = None;
        ffmpeg::frames_on_screen_at(&init, &media, &minutes, |minute, _, yuv| {
            let png = Arc::new(encode_rgb(&ffmpeg::thumbnail(yuv, THUMB_WIDTH)?));
            if minute == key.1 {
                wanted = Some(png.clone());
            }
            app2.thumbs.put((seg.id, minute), png, THUMB_CACHE);
            Ok(())
        })
        .map_err(ApiError::internal)?;
        wanted.ok_or(ApiError::NotFound)
    })
    .await?;
    // Segment ids change when a minute is re-encoded or compacted, so a short cache is safe.
    Ok(([(header::CONTENT_TYPE, "image/png"), (header::CACHE_CONTROL, "private, max-age=300")], png.as_ref().clone()).into_response())
}

pub async fn export_mp4(
    State(app): State<Arc<App>>,
    Viewer(user): Viewer,
    Path(id): Path<String>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    visible(&app, user, &id).await?;
    let (from, to) = (required_time(&q, "from")?, required_time(&q, "to")?);
    if to <= from {
        return Err(ApiError::BadRequest("bad_range", "`to` must be after `from`".into()));
    }
    if to - from > MAX_EXPORT_MS {
        return Err(ApiError::Unprocessable("range_too_long", "an export covers at most 6 hours".into()));
    }
    let app2 = app.clone();
    let dev = id.clone();
    // Everything is read before the first byte is sent: retention running meanwhile can only
    // make this a clean 404, never a truncated 200.
    let (body, first_ms) = blocking(move || {
        let segments = app2.index.segments_between(&dev, from, to)?;
        let first_ms = segments.first().ok_or(ApiError::NotFound)?.start_ms;
        // Every segment, whatever its init (compacted blocks and resolution changes have their
        // own): the export joins them into one track (mp4::Export), or refuses with a 422.
        let mut inits: Vec<(i64, Vec<u8>)> = Vec::new();
        for seg in &segments {
            if !inits.iter().any(|(id, _)| *id == seg.init_id) {
                inits.push((seg.init_id, init_file(&app2, seg)?));
            }
        }
        let init_bytes: Vec<&[u8]> = inits.iter().map(|(_, bytes)| bytes.as_slice()).collect();
        let mut export = mp4::Export::new(&init_bytes, first_ms)?;
        // One stored segment in memory at a time beside the output.
        for seg in &segments {
            let index = inits.iter().position(|(id, _)| *id == seg.init_id).ok_or_else(|| ApiError::internal("init not read"))?;
            export.push(index, &read_stored(&app2, &seg.file)?)?;
        }
        Ok((export.finish()?, first_ms))
    })
    .await?;
    let disposition = format!("attachment; filename=\"screentape-{id}-{first_ms}.mp4\"");
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp4"));
    headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(&disposition).map_err(ApiError::internal)?);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, no-cache"));
    headers.insert("x-export-start", HeaderValue::from(first_ms));
    Ok((StatusCode::OK, headers, Body::from(body)).into_response())
}
