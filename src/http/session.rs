//! The web login: username + password → an HttpOnly, SameSite=Strict session cookie.

use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::{blocking, cookie_value, ApiError, AppState, Viewer, SESSION_COOKIE};
use crate::auth;

const SESSION_MS: i64 = 7 * 24 * 3_600_000;

#[derive(serde::Deserialize)]
pub struct Login {
    user: String,
    password: String,
}

/// JSON only: a cross-site form cannot send `application/json` without a CORS preflight,
/// which this server never grants, so login is not CSRF-able.
pub async fn login(State(app): State<AppState>, headers: HeaderMap, body: axum::body::Bytes) -> Result<Response, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let form: Login = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("bad_login", "expected JSON {\"user\": \"…\", \"password\": \"…\"}".into()))?;
    let index = app.index.clone();
    let now_ms = app.clock.now_ms();
    if app.login_failures.is_blocked(&form.user, now_ms) {
        return Err(ApiError::TooManyRequests);
    }
    let attempted = form.user.clone();
    let result = blocking(move || {
        let found = index.user_by_name(&form.user)?;
        // Verify against a dummy hash when the user is unknown, so timing does not reveal names.
        let (user, stored) = match found {
            Some((u, h)) => (Some(u), h),
            None => (None, DUMMY_HASH.to_string()),
        };
        let ok = auth::verify_password(&form.password, &stored);
        let user = user.filter(|_| ok).ok_or(ApiError::Unauthorized)?;
        let (token, hash) = auth::new_token(auth::SESSION_TOKEN_PREFIX);
        index.create_session(&hash, user.id, now_ms + SESSION_MS)?;
        Ok((token, user.name, user.is_admin))
    })
    .await;
    let (token, name, is_admin) = match result {
        Err(ApiError::Unauthorized) => {
            app.login_failures.record_failure(&attempted, now_ms);
            return Err(ApiError::Unauthorized);
        }
        other => other?,
    };
    app.login_failures.clear(&attempted);
    // screentape does not terminate TLS; behind a TLS proxy the cookie must not travel in clear.
    let over_tls = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let secure = if over_tls { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}", SESSION_MS / 1000);
    let mut response = Json(serde_json::json!({ "user": name, "admin": is_admin })).into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(ApiError::internal)?);
    Ok(response)
}

pub async fn logout(State(app): State<AppState>, headers: HeaderMap) -> Result<Response, ApiError> {
    if let Some(token) = cookie_value(&headers, SESSION_COOKIE) {
        let hash = auth::hash_token(&token);
        let index = app.index.clone();
        blocking(move || Ok(index.delete_session(&hash)?)).await?;
    }
    let clear = format!("{SESSION_COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0");
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, clear)]).into_response())
}

pub async fn me(Viewer(user): Viewer) -> Json<serde_json::Value> {
    Json(serde_json::json!({ "user": user.name, "admin": user.is_admin }))
}

/// An Argon2id hash of a random password nobody knows.
const DUMMY_HASH: &str = "$argon2id$v=19$m=19456,t=2,p=1$c2NyZWVudGFwZWR1bW15$0m0nR9gKkq2m5wGm1q0oJb8S3z7z0oF3m9lq9m7p8bE";
