//! The web login: username + password → an HttpOnly, SameSite=Strict session cookie.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::security::LoginLimiter;
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
///
/// Throttled per client address and user name (security.rs), so wrong passwords slow only whoever
/// sends them; at most one Argon2 check per core runs at once.
pub async fn login(
    State(app): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(';').next().unwrap_or("").trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        return Err(ApiError::UnsupportedMediaType);
    }
    let form: Login = serde_json::from_slice(&body)
        .map_err(|_| ApiError::BadRequest("bad_login", "expected JSON {\"user\": \"…\", \"password\": \"…\"}".into()))?;
    let now_ms = app.clock.now_ms();
    let attempt = match app.login_failures.begin(peer.ip(), &form.user, now_ms) {
        Ok(attempt) => attempt,
        Err(wait_ms) => return Ok(too_many_requests(wait_ms)),
    };
    let Some(slot) = app.login_failures.verify_slot(LoginLimiter::VERIFY_SLOT_WAIT).await else {
        app.login_failures.refund(attempt);
        return Err(ApiError::Overloaded);
    };
    let index = app.index.clone();
    let result = blocking(move || {
        let _slot = slot;
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
        Ok(found) => {
            app.login_failures.succeeded(attempt);
            found
        }
        // The attempt stays counted.
        Err(ApiError::Unauthorized) => return Err(ApiError::Unauthorized),
        Err(other) => {
            app.login_failures.refund(attempt);
            return Err(other);
        }
    };
    // screentape does not terminate TLS; behind a TLS proxy the cookie must not travel in clear.
    let over_tls = headers.get("x-forwarded-proto").and_then(|v| v.to_str().ok()).is_some_and(|p| p.eq_ignore_ascii_case("https"));
    let secure = if over_tls { "; Secure" } else { "" };
    let cookie = format!("{SESSION_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}{secure}", SESSION_MS / 1000);
    let mut response = Json(serde_json::json!({ "user": name, "admin": is_admin })).into_response();
    response.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&cookie).map_err(ApiError::internal)?);
    Ok(response)
}

/// 429 with the client's own wait in `Retry-After` (whole seconds, rounded up).
fn too_many_requests(wait_ms: i64) -> Response {
    let mut response = ApiError::TooManyRequests.into_response();
    let seconds = (wait_ms + 999) / 1000;
    response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(seconds.max(1)));
    response
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

#[cfg(test)]
mod tests {
    /// An unknown name must cost a full Argon2 check, or the answer's timing tells which names exist.
    #[test]
    fn the_dummy_hash_is_a_real_argon2id_hash() {
        let parsed = argon2::password_hash::PasswordHash::new(super::DUMMY_HASH).expect("the dummy hash parses");
        assert_eq!(parsed.algorithm.as_str(), "argon2id");
        let params = argon2::Params::try_from(&parsed).expect("params");
        let default = argon2::Params::default();
        assert_eq!((params.m_cost(), params.t_cost(), params.p_cost()), (default.m_cost(), default.t_cost(), default.p_cost()));
    }
}
