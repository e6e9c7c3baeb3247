//! Thin axum handlers: authentication, upload, viewing, the player's files; errors in error.rs.

mod error;
mod files;
mod player;
mod security;
mod session;
mod upload;
mod view;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRequestParts, MatchedPath};
use axum::http::request::Parts;
use axum::http::{header, Request};
use axum::routing::{get, post};
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use security::LoginLimiter;

use crate::app::App;
use crate::auth;
use crate::index::User;

pub const SESSION_COOKIE: &str = "screentape_session";

pub fn router(app: Arc<App>) -> Router {
    let timeout = app.config.request_timeout;
    Router::new()
        .route("/", get(player::index))
        .route("/player/{file}", get(player::asset))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/metrics", get(view::metrics))
        .route("/api/v1/frames", post(upload::upload))
        .route("/api/v1/login", post(session::login))
        .route("/api/v1/logout", post(session::logout))
        .route("/api/v1/me", get(session::me))
        .route("/api/v1/devices", get(view::devices))
        .route("/api/v1/devices/{id}/playlist.m3u8", get(view::multivariant))
        .route("/api/v1/devices/{id}/media.m3u8", get(view::media_playlist))
        .route("/api/v1/devices/{id}/media420.m3u8", get(view::media_playlist_420))
        .route("/api/v1/devices/{id}/segments420/{file}", get(view::segment_420))
        .route("/api/v1/devices/{id}/init420/{file}", get(view::init_420))
        .route("/api/v1/devices/{id}/timeline", get(view::timeline))
        .route("/api/v1/devices/{id}/segments/{file}", get(view::segment))
        .route("/api/v1/devices/{id}/init/{file}", get(view::init))
        .route("/api/v1/devices/{id}/gap/{file}", get(view::gap))
        .route("/api/v1/devices/{id}/frame.png", get(view::frame_png))
        .route("/api/v1/devices/{id}/export.mp4", get(view::export_mp4))
        .route("/api/v1/devices/{id}/thumb.png", get(view::thumb_png))
        .fallback(|| async { ApiError::NotFound })
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, timeout.max(Duration::from_secs(1))))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            // The route template, not the raw path: no tokens or ids in span names.
            let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
            tracing::info_span!("request", method = %req.method(), route)
        }))
        .layer(axum::middleware::map_response(security::set_headers))
        .with_state(app)
}

/// Runs blocking work (SQLite, files, libav) off the tokio workers.
pub async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T, ApiError> + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(ApiError::internal)?
}

fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty() && t.len() <= 256)
}

fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    cookie_in(&parts.headers, name)
}

pub fn cookie_value(headers: &axum::http::HeaderMap, name: &str) -> Option<String> {
    cookie_in(headers, name).map(str::to_string)
}

fn cookie_in<'a>(headers: &'a axum::http::HeaderMap, name: &str) -> Option<&'a str> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v).filter(|v| !v.is_empty() && v.len() <= 256)
    })
}

/// A person allowed to view: by viewer token (Bearer) or by the web login's session cookie.
pub struct Viewer(pub User);

impl FromRequestParts<Arc<App>> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let index = app.index.clone();
        let user = if let Some(token) = bearer(parts) {
            let hash = auth::hash_token(token);
            blocking(move || Ok(index.user_by_token_hash(&hash)?)).await?
        } else if let Some(token) = cookie(parts, SESSION_COOKIE) {
            let hash = auth::hash_token(token);
            let now_ms = app.clock.now_ms();
            blocking(move || Ok(index.user_by_session(&hash, now_ms)?)).await?
        } else {
            None
        };
        user.map(Viewer).ok_or(ApiError::Unauthorized)
    }
}

/// An uploading agent, by its device token.
pub struct Device(pub String);

impl FromRequestParts<Arc<App>> for Device {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<App>) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        let hash = auth::hash_token(token);
        let index = app.index.clone();
        blocking(move || Ok(index.device_by_token_hash(&hash)?)).await?.map(Device).ok_or(ApiError::Unauthorized)
    }
}
