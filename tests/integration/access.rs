//! Who sees what: viewers only their devices, device tokens nothing, secrets hashed at rest.

use crate::support::{shot, Server, T0};

#[test]
fn a_viewer_sees_only_its_devices_and_a_device_token_sees_nothing() {
    viewers_see_only_their_devices(Server::start());
}

/// Every viewing endpoint denies other users, device tokens and no credentials. Also run with
/// the index in PostgreSQL.
pub fn viewers_see_only_their_devices(s: Server) {
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

/// Every secret through the path that really makes it: the viewer token and password from the
/// `user add` CLI, the device token from `device add`, the session cookie from the server's login.
/// Each still works, yet none is anywhere in the database files, the WAL included.
#[test]
fn secrets_are_hashed_at_rest() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let cli = |args: &[&str]| -> serde_json::Value {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_screentape")).arg("--data-dir").arg(&data_dir).args(args).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let user = cli(&["user", "add", "ann", "--json"]);
    let device = cli(&["device", "add", "laptop", "--owner", "ann", "--json"]);
    let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_else(|| panic!("{k} in {v}")).to_string();
    let (viewer_token, password) = (text(&user, "token"), text(&user, "password"));
    let (device_id, device_token) = (text(&device, "device"), text(&device, "token"));

    // The server on that data dir (Server::start_in serves DIR/data).
    let s = Server::start_in(dir, |_| {});
    let login = |password: &str| {
        s.client
            .post(s.url("/api/v1/login"))
            .header("content-type", "application/json")
            .body(serde_json::json!({ "user": "ann", "password": password }).to_string())
            .send()
            .unwrap()
    };
    assert_eq!(login("not-the-password").status(), 401);
    let r = login(&password);
    assert_eq!(r.status(), 200, "the CLI's password logs in");
    let set_cookie = r.headers()["set-cookie"].to_str().unwrap().to_string();
    let pair = set_cookie.split(';').next().unwrap().to_string();
    let session = pair.split_once('=').unwrap().1.to_string();
    assert!(session.len() >= 32, "{set_cookie}");
    // Each secret works, so its hash is really what was stored.
    let me = s.client.get(s.url("/api/v1/me")).header("cookie", &pair).send().unwrap();
    assert_eq!(me.status(), 200, "the session cookie");
    let devices: serde_json::Value = s.get(&viewer_token, "/api/v1/devices").send().unwrap().json().unwrap();
    assert_eq!(devices[0]["id"], device_id.as_str(), "the viewer token");
    s.clock.set_ms(T0 + 60_000);
    let (png, _) = shot(160, 100, T0 + 5, 0);
    assert_eq!(s.upload(&device_token, T0 + 5, &png).status(), 201, "the device token");

    // Every byte of the database as the server left it: main file, WAL and shared memory.
    let index = s.app.layout.index();
    let mut bytes = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let mut path = index.clone().into_os_string();
        path.push(suffix);
        bytes.extend(std::fs::read(&path).unwrap_or_default());
    }
    // And every value of every table, as SQLite reads it (sees WAL frames not yet checkpointed).
    let db = rusqlite::Connection::open_with_flags(&index, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap();
    let tables: Vec<String> =
        db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").unwrap().query_map([], |r| r.get(0)).unwrap().map(Result::unwrap).collect();
    let mut values: Vec<Vec<u8>> = Vec::new();
    for table in &tables {
        let mut stmt = db.prepare(&format!("SELECT * FROM \"{table}\"")).unwrap();
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for i in 0..columns {
                values.push(match row.get_ref(i).unwrap() {
                    rusqlite::types::ValueRef::Text(t) | rusqlite::types::ValueRef::Blob(t) => t.to_vec(),
                    other => format!("{other:?}").into_bytes(),
                });
            }
        }
    }
    let contains = |hay: &[u8], needle: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    // The scan sees the rows (names are stored in clear).
    for seen in [&b"laptop"[..], device_id.as_bytes()] {
        assert!(contains(&bytes, seen) && values.iter().any(|v| v.as_slice() == seen), "the scan misses {:?}", String::from_utf8_lossy(seen));
    }
    // No secret, nor its random part without the prefix, in any value or anywhere in the files.
    for (what, secret) in [("viewer token", &viewer_token), ("password", &password), ("device token", &device_token), ("session cookie", &session)] {
        let random = secret.rsplit('_').next().unwrap();
        for needle in [secret.as_str(), random] {
            assert!(!contains(&bytes, needle.as_bytes()), "the {what} is in the database files in clear");
            assert!(!values.iter().any(|v| contains(v, needle.as_bytes())), "the {what} is in a table in clear");
        }
    }
    // What is stored instead: each token's SHA-256, the password's Argon2id hash.
    for token in [&viewer_token, &device_token, &session] {
        let hash = screentape::auth::hash_token(token);
        assert!(values.iter().any(|v| v.as_slice() == hash), "a token's hash is stored");
        assert!(contains(&bytes, &hash), "the files hold the hash");
    }
    assert!(
        values.iter().any(|v| std::str::from_utf8(v).is_ok_and(|h| h.starts_with("$argon2id$") && screentape::auth::verify_password(&password, h))),
        "the password is stored as its Argon2id hash"
    );
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
