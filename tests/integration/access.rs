//! Who sees what: viewers only their devices, device tokens nothing, secrets hashed at rest.

use crate::support::{shot, Server, T0};

#[test]
fn a_viewer_sees_only_its_devices_and_a_device_token_sees_nothing() {
    let s = Server::start();
    let ann = s.add_user("ann", false);
    let bob = s.add_user("bob", false);
    let admin = s.add_user("root", true);
    let (ann_dev, ann_tok) = s.add_device("ann-laptop", Some("ann"));
    let (bob_dev, bob_tok) = s.add_device("bob-laptop", Some("bob"));
    s.clock.set_ms(T0 + 60_000);
    for tok in [&ann_tok, &bob_tok] {
        let (png, _) = shot(160, 100, T0 + 5, 0);
        assert_eq!(s.upload(tok, T0 + 5, &png).status(), 201);
    }
    s.advance_and_encode(T0 + 80_000);

    let list = |tok: &str| -> Vec<String> {
        let v: serde_json::Value = s.get(tok, "/api/v1/devices").send().unwrap().json().unwrap();
        v.as_array().unwrap().iter().map(|d| d["id"].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(list(&ann.token), vec![ann_dev.clone()]);
    assert_eq!(list(&bob.token), vec![bob_dev.clone()]);
    assert_eq!(list(&admin.token).len(), 2);

    let bob_seg = s.app.index.segments_between(&bob_dev, 0, i64::MAX).unwrap()[0].clone();
    let paths = |dev: &str| {
        vec![
            format!("/api/v1/devices/{dev}/playlist.m3u8"),
            format!("/api/v1/devices/{dev}/media.m3u8"),
            format!("/api/v1/devices/{dev}/timeline"),
            format!("/api/v1/devices/{dev}/segments/{}.m4s", bob_seg.id),
            format!("/api/v1/devices/{dev}/init/{}.mp4", bob_seg.init_id),
            format!("/api/v1/devices/{dev}/media420.m3u8"),
            format!("/api/v1/devices/{dev}/segments420/{}.m4s", bob_seg.id),
            format!("/api/v1/devices/{dev}/init420/{}.mp4", bob_seg.init_id),
            format!("/api/v1/devices/{dev}/frame.png?t={}", T0 + 10),
            format!("/api/v1/devices/{dev}/thumb.png?t={}", T0 + 10),
            format!("/api/v1/devices/{dev}/export.mp4?from={T0}&to={}", T0 + 60_000),
        ]
    };
    for path in paths(&bob_dev) {
        assert_eq!(s.get(&ann.token, &path).send().unwrap().status(), 404, "another user's {path}");
        assert_eq!(s.client.get(s.url(&path)).send().unwrap().status(), 401, "no credentials {path}");
        assert_eq!(s.get(&bob_tok, &path).send().unwrap().status(), 401, "device token {path}");
        assert_eq!(s.get(&bob.token, &path).send().unwrap().status(), 200, "owner {path}");
        assert_eq!(s.get(&admin.token, &path).send().unwrap().status(), 200, "admin {path}");
    }
    // A guessed URL of bob's segment under ann's device id.
    for path in paths(&ann_dev).into_iter().filter(|p| p.contains("/segments") || p.contains("/init")) {
        let status = s.get(&ann.token, &path).send().unwrap().status();
        if path.contains("/segments") {
            assert_eq!(status, 404, "{path}");
        }
    }
    assert_eq!(s.client.get(s.url("/metrics")).send().unwrap().status(), 401);
}

#[test]
fn web_login_sets_a_safe_session_cookie_and_logout_ends_it() {
    let s = Server::start();
    let ann = s.add_user("ann", false);
    let login = |user: &str, password: &str| {
        s.client
            .post(s.url("/api/v1/login"))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "user": user, "password": password }).to_string())
            .send()
            .unwrap()
    };
    assert_eq!(login("ann", "wrong").status(), 401);
    assert_eq!(login("nobody", &ann.password).status(), 401);
    let form = s.client.post(s.url("/api/v1/login")).header("content-type", "application/x-www-form-urlencoded").body("user=ann").send().unwrap();
    assert_eq!(form.status(), 415, "no form posts: CSRF-safe");
    let r = login("ann", &ann.password);
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"), "{cookie}");
    assert!(!cookie.contains("Secure"), "plain HTTP: no Secure flag, or the browser would drop it");
    let pair = cookie.split(';').next().unwrap().to_string();
    let behind_tls = s
        .client
        .post(s.url("/api/v1/login"))
        .header("content-type", "application/json")
        .header("x-forwarded-proto", "https")
        .body(serde_json::json!({ "user": "ann", "password": ann.password }).to_string())
        .send()
        .unwrap();
    assert!(behind_tls.headers()["set-cookie"].to_str().unwrap().contains("; Secure"), "Secure behind a TLS proxy");
    let me = s.client.get(s.url("/api/v1/me")).header("cookie", &pair).send().unwrap();
    assert_eq!(me.status(), 200);
    assert_eq!(me.json::<serde_json::Value>().unwrap()["user"], "ann");
    s.client.post(s.url("/api/v1/logout")).header("cookie", &pair).send().unwrap();
    assert_eq!(s.client.get(s.url("/api/v1/me")).header("cookie", &pair).send().unwrap().status(), 401);
}

#[test]
fn secrets_are_hashed_at_rest() {
    let s = Server::start();
    let ann = s.add_user("ann", false);
    let (_, token) = s.add_device("laptop", Some("ann"));
    // Checkpoint the WAL so everything is in the main file, then look for the secrets in both.
    rusqlite::Connection::open(s.app.layout.index()).unwrap().execute_batch("PRAGMA wal_checkpoint(TRUNCATE)").unwrap();
    let mut bytes = std::fs::read(s.app.layout.index()).unwrap();
    bytes.extend(std::fs::read(s.app.layout.index().with_extension("sqlite3-wal")).unwrap_or_default());
    for secret in [&ann.token, &ann.password, &token] {
        assert!(!bytes.windows(secret.len()).any(|w| w == secret.as_bytes()), "a secret is stored in clear");
    }
}

#[test]
fn repeated_wrong_passwords_are_rate_limited_per_user() {
    let s = Server::start();
    let ann = s.add_user("ann", false);
    let login = |password: &str| {
        s.client
            .post(s.url("/api/v1/login"))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "user": "ann", "password": password }).to_string())
            .send()
            .unwrap()
    };
    for _ in 0..5 {
        assert_eq!(login("guess").status(), 401);
    }
    let blocked = login(&ann.password);
    assert_eq!(blocked.status(), 429, "even the right password waits once the limit is hit");
    assert!(blocked.headers().contains_key("retry-after"));
    s.clock.advance_ms(16 * 60_000);
    assert_eq!(login(&ann.password).status(), 200, "the window passes");
}
