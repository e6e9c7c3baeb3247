//! POST /api/v1/frames: authenticate the device, bound and read the body, hand it to ingest.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::Json;
use http_body_util::BodyExt;

use super::{blocking, ApiError, AppState, Device};
use crate::clock::parse_time_ms;
use crate::ingest::Accepted;
use crate::metrics::UploadOutcome;

/// How long an upload may wait for a free slot before it is told to retry later.
const UPLOAD_SLOT_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

#[derive(serde::Serialize)]
pub struct UploadResponse {
    device: String,
    capture_ms: i64,
}

pub async fn upload(
    State(app): State<AppState>,
    device: Result<Device, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<UploadResponse>), ApiError> {
    let started = std::time::Instant::now();
    let result = accept(&app, device, &headers, body).await;
    app.metrics.upload(match &result {
        Ok((StatusCode::CREATED, _)) => UploadOutcome::Stored,
        Ok(_) => UploadOutcome::Duplicate,
        Err(_) => UploadOutcome::Rejected,
    });
    app.metrics.upload_seconds.observe(started.elapsed().as_secs_f64());
    result
}

async fn accept(
    app: &Arc<super::Http>,
    device: Result<Device, ApiError>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<UploadResponse>), ApiError> {
    let Device(device_id) = device?;
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("image/png") {
        return Err(ApiError::UnsupportedMediaType);
    }
    let mut capture_headers = headers.get_all("x-capture-time").iter();
    let (first, second) = (capture_headers.next(), capture_headers.next());
    let capture_ms = match first {
        None => app.clock.now_ms(),
        Some(v) => v.to_str().ok().filter(|_| second.is_none()).and_then(parse_time_ms).ok_or_else(|| {
            ApiError::BadRequest(
                "bad_capture_time",
                "X-Capture-Time must be one unix-milliseconds or RFC 3339 time such as 2026-11-26T10:00:07.250Z".into(),
            )
        })?,
    };
    // Wait for a slot before reading the body, so waiting clients cost no memory (TCP backpressure).
    let _slot = tokio::time::timeout(UPLOAD_SLOT_WAIT, app.upload_slots.clone().acquire_owned())
        .await
        .map_err(|_| ApiError::Overloaded)?
        .map_err(ApiError::internal)?;
    let max = app.max_body_bytes;
    let too_large = || ApiError::TooLarge("body_too_large", format!("the body is larger than {max} bytes"));
    let declared = headers.get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let bytes = match http_body_util::Limited::new(body, max).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => return Err(too_large()),
        Err(e) => return Err(ApiError::BadRequest("bad_body", format!("the body could not be read: {e}"))),
    };
    let ingest = app.ingest.clone();
    let dev = device_id.clone();
    let accepted = blocking(move || Ok(ingest.accept(&dev, capture_ms, &bytes)?)).await?;
    // A stored frame wakes the encoder through the pending set: a late frame for a minute that
    // is already due gets encoded without waiting for a tick.
    let status = match accepted {
        Accepted::Stored => StatusCode::CREATED,
        Accepted::Duplicate => StatusCode::OK,
    };
    Ok((status, Json(UploadResponse { device: device_id, capture_ms })))
}
