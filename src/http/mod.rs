//! Thin axum handlers: authentication, upload, viewing, the player's files; errors in error.rs.
//! Handlers extract, call one service method (ingest or playback) on a blocking thread, and map
//! the error; the domain work lives in those services.

mod error;
mod files;
mod player;
mod security;
mod session;
mod upload;
mod view;

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{FromRequestParts, MatchedPath, Path, Request, State};
use axum::http::header;
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use error::ApiError;
pub use security::LoginLimiter;

use crate::auth;
use crate::clock::SharedClock;
use crate::index::{SharedIndex, User};
use crate::ingest::{Ingest, Pending};
use crate::metrics::{EncoderHealth, Metrics};
use crate::playback::{Playback, VisibleDevice as Visible};

pub const SESSION_COOKIE: &str = "screentape_session";

/// What the handlers need: services and limits, never the wiring that made them.
pub struct Http {
    pub index: SharedIndex,
    pub clock: SharedClock,
    pub ingest: Ingest,
    pub playback: Arc<Playback>,
    pub pending: Arc<Pending>,
    pub metrics: Arc<Metrics>,
    /// The encoder's state for /healthz (failing compactions, held-back devices).
    pub encoder_health: Box<dyn Fn() -> EncoderHealth + Send + Sync>,
    /// Uploads being read and stored at once. Bounds memory (bodies, decode buffers, blocking
    /// threads); an upload that waits too long for a slot gets 503.
    pub upload_slots: Arc<tokio::sync::Semaphore>,
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// Failed web logins per client and user name, for rate limiting; the password-check slots.
    pub login_failures: LoginLimiter,
}

pub type AppState = Arc<Http>;

pub fn router(state: AppState) -> Router {
    let timeout = state.request_timeout;
    Router::new()
        .route("/", get(player::index))
        .route("/player/{file}", get(player::asset))
        .route("/healthz", get(view::health))
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
        .route("/api/v1/devices/{id}/storyboard", get(view::storyboard))
        .route("/api/v1/devices/{id}/storyboard/{file}", get(view::storyboard_sprite))
        .fallback(|| async { ApiError::NotFound })
        .layer(TimeoutLayer::with_status_code(axum::http::StatusCode::REQUEST_TIMEOUT, timeout.max(Duration::from_secs(1))))
        .layer(axum::middleware::from_fn_with_state(state.clone(), time_request))
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request<_>| {
            // The route template, not the raw path: no tokens or ids in span names.
            let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
            tracing::info_span!("request", method = %req.method(), route)
        }))
        // Outermost, so that every answer carries them, timeouts and errors included.
        .layer(axum::middleware::map_response(security::set_headers))
        .with_state(state)
}

/// Records each request's latency under its route template.
async fn time_request(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_owned();
    let started = Instant::now();
    let response = next.run(req).await;
    state.metrics.request(&route, started.elapsed().as_secs_f64());
    response
}

/// Runs blocking work (index, store, libav) off the tokio workers.
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

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let index = state.index.clone();
        let user = if let Some(token) = bearer(parts) {
            let hash = auth::hash_token(token);
            blocking(move || Ok(index.user_by_token_hash(&hash)?)).await?
        } else if let Some(token) = cookie(parts, SESSION_COOKIE) {
            let hash = auth::hash_token(token);
            let now_ms = state.clock.now_ms();
            blocking(move || Ok(index.user_by_session(&hash, now_ms)?)).await?
        } else {
            None
        };
        user.map(Viewer).ok_or(ApiError::Unauthorized)
    }
}

/// The `{id}` device of the path, seen by a viewer allowed to see it (else 401 or 404): the
/// preamble of every per-device handler, in one place.
pub struct VisibleDevice(pub Visible);

impl FromRequestParts<AppState> for VisibleDevice {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Viewer(user) = Viewer::from_request_parts(parts, state).await?;
        let Path(params) = Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::NotFound)?;
        let id = params.get("id").cloned().ok_or(ApiError::NotFound)?;
        let playback = state.playback.clone();
        blocking(move || Ok(playback.visible(&user, &id)?)).await.map(VisibleDevice)
    }
}

/// An uploading agent, by its device token.
pub struct Device(pub String);

impl FromRequestParts<AppState> for Device {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or(ApiError::Unauthorized)?;
        let hash = auth::hash_token(token);
        let index = state.index.clone();
        blocking(move || Ok(index.device_by_token_hash(&hash)?)).await?.map(Device).ok_or(ApiError::Unauthorized)
    }
}
