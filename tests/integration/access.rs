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

/// A client whose connections come from `ip` (all of 127.0.0.0/8 is loopback on Linux).
fn client_from(ip: [u8; 4]) -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .local_address(std::net::IpAddr::from(ip))
        .timeout(std::time::Duration::from_secs(60))
        .build()
        .unwrap()
}

fn login_from(s: &Server, client: &reqwest::blocking::Client, user: &str, password: &str) -> reqwest::blocking::Response {
    client
        .post(s.url("/api/v1/login"))
        .header("content-type", "application/json")
        .body(serde_json::json!({ "user": user, "password": password }).to_string())
        .send()
        .unwrap()
}

fn retry_after(r: &reqwest::blocking::Response) -> i64 {
    r.headers().get("retry-after").unwrap_or_else(|| panic!("429 without Retry-After")).to_str().unwrap().parse().unwrap()
}

/// Regression (defect 10): five wrong passwords for a name from anyone made that name answer 429
/// for 15 minutes, so anyone could lock a user out.
#[test]
fn regression_wrong_passwords_from_one_client_do_not_lock_the_user_out() {
    let s = Server::start();
    let ann = s.add_user("ann", false);
    let (attacker, user) = (client_from([127, 0, 0, 2]), client_from([127, 0, 0, 3]));
    for i in 0..5 {
        // A forged X-Forwarded-For does not make the attacker someone else.
        let r = attacker
            .post(s.url("/api/v1/login"))
            .header("content-type", "application/json")
            .header("x-forwarded-for", format!("10.9.8.{i}"))
            .body(serde_json::json!({ "user": "ann", "password": "guess" }).to_string())
            .send()
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let blocked = login_from(&s, &attacker, "ann", &ann.password);
    assert_eq!(blocked.status(), 429, "the guessing client waits, even with the right password");
    assert_eq!(login_from(&s, &user, "ann", &ann.password).status(), 200, "ann, from elsewhere, gets in");
    assert_eq!(retry_after(&blocked), 1, "the wait so far is one second");
    assert_eq!(login_from(&s, &attacker, "ann", "guess").status(), 429, "ann's login does not end the attacker's wait");

    // Each further failure doubles the attacker's wait; the clock is moved, not slept on.
    let mut waits = Vec::new();
    for _ in 0..5 {
        let r = login_from(&s, &attacker, "ann", "guess");
        assert_eq!(r.status(), 429);
        let wait = retry_after(&r);
        waits.push(wait);
        s.clock.advance_ms(wait * 1000 - 1);
        assert_eq!(login_from(&s, &attacker, "ann", "guess").status(), 429, "not before Retry-After");
        s.clock.advance_ms(1);
        assert_eq!(login_from(&s, &attacker, "ann", "guess").status(), 401, "a guess once the wait is over");
    }
    assert_eq!(waits, vec![1, 2, 4, 8, 16]);
    assert_eq!(login_from(&s, &user, "ann", &ann.password).status(), 200, "ann still gets in");
    // The attacker's own address, for another name, is not held.
    let _bob = s.add_user("bob", false);
    assert_eq!(login_from(&s, &attacker, "bob", "guess").status(), 401);
    // An hour of quiet and the attacker starts over (and so would ann on a shared address).
    s.clock.advance_ms(61 * 60_000);
    assert_eq!(login_from(&s, &attacker, "ann", &ann.password).status(), 200);
}

#[test]
fn spraying_names_from_one_client_meets_a_budget_across_names() {
    let s = Server::start();
    let ann = s.add_user("ann", false);
    let (sprayer, user) = (client_from([127, 0, 0, 4]), client_from([127, 0, 0, 5]));
    // Every name tried fewer times than the per-name limit.
    for i in 0..30 {
        assert_eq!(login_from(&s, &sprayer, &format!("user{}", i / 2), "guess").status(), 401, "attempt {i}");
    }
    let r = login_from(&s, &sprayer, "ann", &ann.password);
    assert_eq!(r.status(), 429, "a fresh name from the same client waits too");
    assert_eq!(retry_after(&r), 1);
    assert_eq!(login_from(&s, &user, "ann", &ann.password).status(), 200, "other clients do not");
}

/// Regression (defect 11): no answer carried security headers, so any site could frame the player.
#[test]
fn every_answer_carries_the_security_headers() {
    let s = Server::start();
    let ann = s.add_user("ann", false);
    let page = s.client.get(s.url("/")).send().unwrap();
    let html = page.headers().clone();
    assert!(page.text().unwrap().contains(r#"<link rel="icon" href="/player/favicon.svg""#), "the player links its icon");
    let answers = [
        ("the player page", html),
        ("an API answer", s.get(&ann.token, "/api/v1/devices").send().unwrap().headers().clone()),
        ("a 401", s.client.get(s.url("/api/v1/devices")).send().unwrap().headers().clone()),
        ("a 404", s.client.get(s.url("/no/such/page")).send().unwrap().headers().clone()),
        ("the icon", s.client.get(s.url("/player/favicon.svg")).send().unwrap().headers().clone()),
    ];
    for (what, headers) in &answers {
        let header = |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string()).unwrap_or_default();
        let csp = header("content-security-policy");
        for directive in ["default-src 'self'", "script-src 'self'", "style-src 'self'", "frame-ancestors 'none'", "object-src 'none'", "base-uri 'none'"] {
            assert!(csp.split(';').any(|d| d.trim() == directive), "{what}: CSP lacks {directive}: {csp:?}");
        }
        assert!(!csp.contains("unsafe-"), "{what}: {csp}");
        assert_eq!(header("x-frame-options"), "DENY", "{what}");
        assert_eq!(header("x-content-type-options"), "nosniff", "{what}");
        assert_eq!(header("referrer-policy"), "no-referrer", "{what}");
    }
    assert_eq!(answers[4].1["content-type"], "image/svg+xml", "the icon is served, not a 404");
}
