//! Serving stored immutable files with Range support and long-lived cache headers.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// A byte range requested by `Range: bytes=…` (one range; multi-range requests get the whole file).
fn parse_range(value: &str, len: u64) -> Result<Option<(u64, u64)>, ApiError> {
    let Some(spec) = value.trim().strip_prefix("bytes=") else { return Ok(None) };
    if spec.contains(',') {
        return Ok(None);
    }
    let (a, b) = spec.split_once('-').ok_or(ApiError::RangeNotSatisfiable(len))?;
    let (a, b) = (a.trim(), b.trim());
    let range = match (a.is_empty(), b.is_empty()) {
        (true, false) => {
            let n: u64 = b.parse().map_err(|_| ApiError::RangeNotSatisfiable(len))?;
            (len.saturating_sub(n), len.checked_sub(1).ok_or(ApiError::RangeNotSatisfiable(len))?)
        }
        (false, _) => {
            let start: u64 = a.parse().map_err(|_| ApiError::RangeNotSatisfiable(len))?;
            let end = if b.is_empty() { len.saturating_sub(1) } else { b.parse::<u64>().map_err(|_| ApiError::RangeNotSatisfiable(len))?.min(len.saturating_sub(1)) };
            (start, end)
        }
        (true, true) => return Err(ApiError::RangeNotSatisfiable(len)),
    };
    if range.0 > range.1 || range.0 >= len {
        return Err(ApiError::RangeNotSatisfiable(len));
    }
    Ok(Some(range))
}

/// Answers with `bytes` (a whole stored file), honouring a Range header.
pub fn immutable(bytes: Vec<u8>, content_type: &'static str, request: &HeaderMap) -> Result<Response, ApiError> {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Segment and init URLs change whenever their content does, so they never go stale.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=31536000, immutable"));
    with_range(bytes, headers, request)
}

/// Answers with `bytes` (a whole file, assembled before the answer starts) and `headers`,
/// honouring a Range header: a `<video src>` seeks in a file by Range requests.
pub fn with_range(bytes: Vec<u8>, mut headers: HeaderMap, request: &HeaderMap) -> Result<Response, ApiError> {
    let len = bytes.len() as u64;
    let range = match request.get(header::RANGE).and_then(|v| v.to_str().ok()) {
        Some(v) => parse_range(v, len)?,
        None => None,
    };
    headers.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    Ok(match range {
        None => (StatusCode::OK, headers, Body::from(bytes)).into_response(),
        Some((start, end)) => {
            let value = format!("bytes {start}-{end}/{len}");
            headers.insert(header::CONTENT_RANGE, HeaderValue::from_str(&value).map_err(ApiError::internal)?);
            let part = bytes[start as usize..=end as usize].to_vec();
            (StatusCode::PARTIAL_CONTENT, headers, Body::from(part)).into_response()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100).unwrap(), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100).unwrap(), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100).unwrap(), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100).unwrap(), Some((50, 99)));
        assert!(parse_range("bytes=100-", 100).is_err());
        assert!(parse_range("bytes=x-y", 100).is_err());
        assert_eq!(parse_range("items=1-2", 100).unwrap(), None);
    }
}
