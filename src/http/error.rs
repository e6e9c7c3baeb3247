//! The single table from every error to an HTTP status and a stable JSON error code.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::ingest::IngestError;
use crate::media::mp4::Mp4Error;
use crate::media::png::PngError;
use crate::playback::PlaybackError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("missing or invalid credentials")]
    Unauthorized,
    #[error("not found")]
    NotFound,
    #[error("{1}")]
    BadRequest(&'static str, String),
    #[error("a different image is already stored for this device at this capture time")]
    Conflict,
    #[error("{1}")]
    TooLarge(&'static str, String),
    #[error("the body must be a PNG image (Content-Type: image/png)")]
    UnsupportedMediaType,
    #[error("{1}")]
    Unprocessable(&'static str, String),
    #[error("the requested range cannot be served")]
    RangeNotSatisfiable(u64),
    #[error("too many requests; retry later")]
    TooManyRequests,
    #[error("the server is overloaded; retry later")]
    Overloaded,
    #[error("the server's disk is full")]
    DiskFull,
    /// A storage engine (the object store, or the index in PostgreSQL) cannot be reached for
    /// now: retry later.
    #[error("storage is unavailable for now; retry later")]
    Unavailable(String),
    /// The cause is logged once here; the client only sees "internal error".
    #[error("internal error")]
    Internal(String),
}

impl ApiError {
    fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(code, _) => (StatusCode::BAD_REQUEST, code),
            ApiError::Conflict => (StatusCode::CONFLICT, "conflict"),
            ApiError::TooLarge(code, _) => (StatusCode::PAYLOAD_TOO_LARGE, code),
            ApiError::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::Unprocessable(code, _) => (StatusCode::UNPROCESSABLE_ENTITY, code),
            ApiError::RangeNotSatisfiable(_) => (StatusCode::RANGE_NOT_SATISFIABLE, "range_not_satisfiable"),
            ApiError::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, "too_many_requests"),
            ApiError::Overloaded => (StatusCode::SERVICE_UNAVAILABLE, "overloaded"),
            ApiError::DiskFull => (StatusCode::INSUFFICIENT_STORAGE, "disk_full"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::Png(PngError::NotPng) => ApiError::UnsupportedMediaType,
            IngestError::Png(e @ PngError::BadHeader) | IngestError::Png(e @ PngError::Undecodable(_)) => {
                ApiError::BadRequest("bad_png", e.to_string())
            }
            IngestError::Png(e @ PngError::TooLarge { .. }) => ApiError::TooLarge("image_too_large", e.to_string()),
            IngestError::Conflict => ApiError::Conflict,
            IngestError::TooOld => ApiError::Unprocessable("capture_too_old", IngestError::TooOld.to_string()),
            IngestError::TooFarInFuture => ApiError::Unprocessable("capture_in_future", IngestError::TooFarInFuture.to_string()),
            IngestError::Overloaded => ApiError::Overloaded,
            IngestError::DiskFull => ApiError::DiskFull,
            IngestError::Store(e) if e.is_unavailable() => ApiError::Unavailable(e.to_string()),
            IngestError::Store(e) => ApiError::internal(e),
            IngestError::Index(e) => e.into(),
        }
    }
}

impl From<PlaybackError> for ApiError {
    fn from(e: PlaybackError) -> Self {
        match e {
            PlaybackError::NotFound => ApiError::NotFound,
            PlaybackError::BadRequest(code, message) => ApiError::BadRequest(code, message),
            PlaybackError::Unprocessable(code, message) => ApiError::Unprocessable(code, message),
            PlaybackError::Busy => ApiError::Overloaded,
            PlaybackError::Index(e @ crate::index::IndexError::Unavailable(_)) => e.into(),
            PlaybackError::Store(e) if e.is_unavailable() => ApiError::Unavailable(e.to_string()),
            PlaybackError::Export(e @ Mp4Error::MixedCodecs { .. }) => ApiError::Unprocessable("export_mixed_codecs", e.to_string()),
            PlaybackError::Export(e @ Mp4Error::FormatChange(_)) => ApiError::Unprocessable("export_format_change", e.to_string()),
            e @ (PlaybackError::Export(Mp4Error::Malformed(_)) | PlaybackError::Index(_) | PlaybackError::Store(_) | PlaybackError::Media(_)) => {
                ApiError::internal(e)
            }
        }
    }
}

impl From<crate::index::IndexError> for ApiError {
    fn from(e: crate::index::IndexError) -> Self {
        match e {
            crate::index::IndexError::Unavailable(cause) => ApiError::Unavailable(cause),
            e => ApiError::internal(e),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let ApiError::Internal(cause) = &self {
            tracing::error!(%cause, "internal error");
        }
        if let ApiError::Unavailable(cause) = &self {
            tracing::warn!(%cause, "storage unavailable");
        }
        let body = Json(serde_json::json!({ "error": code, "message": self.to_string() }));
        let mut response = (status, body).into_response();
        let headers = response.headers_mut();
        match &self {
            ApiError::Overloaded | ApiError::Unavailable(_) => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
            }
            ApiError::TooManyRequests => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from_static("10"));
            }
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RangeNotSatisfiable(len) => {
                if let Ok(v) = HeaderValue::from_str(&format!("bytes */{len}")) {
                    headers.insert(header::CONTENT_RANGE, v);
                }
            }
            _ => {}
        }
        response
    }
}
