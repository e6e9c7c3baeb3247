//! The cluster configuration on real engines: every blob in S3 (a throwaway Garage), the index in
//! PostgreSQL. The single-box scenarios run unchanged on it; the store answers the `Store`
//! contract as the local directory does; a `201` means the PNG is in the bucket; and an object
//! store outage answers 503 with Retry-After, loses nothing acknowledged, and heals by itself.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use screentape::clock::{Clock, SystemClock};
use screentape::config::S3Config;
use screentape::store::{Created, LocalStore, Store};

use crate::garage::{Garage, BUCKET, REGION};
use crate::postgres::Postgres;
use crate::support::{shot, spawn_binary, Server};

const BIN: &str = env!("CARGO_BIN_EXE_screentape");

fn s3_config(garage: &Garage) -> S3Config {
    S3Config {
        endpoint: garage.endpoint.clone(),
        region: REGION.into(),
        access_key_id: garage.key_id.clone(),
        secret_access_key: garage.secret.clone(),
    }
}

/// An in-process server with every blob under `s3://screentape/PREFIX/` and the index in `pg`.
fn cluster_server(garage: &Garage, pg: &Postgres, prefix: &str, tweak: impl FnOnce(&mut screentape::config::Config)) -> Server {
    Server::start_with(|c| {
        c.store = format!("s3://{BUCKET}/{prefix}");
        c.s3 = s3_config(garage);
        c.index = pg.url.clone();
        tweak(c);
    })
}

/// Every file under `dir`.
fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The `Store` contract, every answer written down.
fn exercise(store: &dyn Store) -> Vec<String> {
    let mut log = Vec::new();
    let mut note = |what: &str, v: &dyn std::fmt::Debug| log.push(format!("{what}: {v:?}"));
    note("put_new", &store.put_new("spool/d1/5.png", b"one").unwrap());
    note("put_new again, other bytes", &store.put_new("spool/d1/5.png", b"two").unwrap());
    note("get keeps the first", &store.get("spool/d1/5.png").unwrap());
    note("exists", &store.exists("spool/d1/5.png").unwrap());
    note("exists missing", &store.exists("spool/d1/6.png").unwrap());
    note("get missing", &store.get("spool/d1/6.png").unwrap());
    store.put_cache("cache/h264-420/s1.m4s", b"c1").unwrap();
    store.put_cache("cache/h264-420/s1.m4s", b"c22").unwrap();
    note("put_cache overwrites", &store.get("cache/h264-420/s1.m4s").unwrap());
    store.put_new("segments/d1/60000-00000000000000aa.m4s", &[7u8; 3000]).unwrap();
    store.put_new("spool/d2/1.png", b"x").unwrap();
    store.put_new("spoolx/1.png", b"not under spool/").unwrap();
    let listed = |prefix: &str| {
        let mut v: Vec<(String, u64)> = store.list(prefix).unwrap().into_iter().map(|m| (m.key, m.bytes)).collect();
        v.sort();
        v
    };
    note("list spool/", &listed("spool/"));
    note("list segments/", &listed("segments/"));
    note("list cache/", &listed("cache/"));
    note("list nothing/", &listed("nothing/"));
    let now = std::time::SystemTime::now();
    let modified = store.list("segments/").unwrap()[0].modified;
    note("modified is about now", &(now.duration_since(modified).unwrap_or_default() < Duration::from_secs(600)));
    // More keys than one listing page (S3 pages hold 1000).
    std::thread::scope(|scope| {
        for t in 0..6 {
            scope.spawn(move || {
                for i in (t..1005).step_by(6) {
                    assert_eq!(store.put_new(&format!("many/k{i:04}"), b"m").unwrap(), Created::New);
                }
            });
        }
    });
    let many = listed("many/");
    note("list past one page", &(many.len(), many.first().cloned(), many.last().cloned()));
    store.delete("spool/d1/5.png").unwrap();
    store.delete("spool/d1/5.png").unwrap();
    note("deleted twice", &(store.get("spool/d1/5.png").unwrap(), store.exists("spool/d1/5.png").unwrap()));
    note("put_new after delete", &store.put_new("spool/d1/5.png", b"three").unwrap());
    for bad in ["../x", "/etc/passwd", "a//b", "a/./b", ""] {
        note(&format!("bad key {bad:?}"), &store.get(bad).is_err());
    }
    log
}

#[test]
fn a_directory_and_garage_answer_the_store_contract_alike() {
    let garage = Garage::start();
    let dir = tempfile::tempdir().unwrap();
    let local = exercise(&LocalStore::open(dir.path()).unwrap());
    let s3_store = garage.store("contract/");
    let s3 = exercise(&s3_store);
    for (a, b) in local.iter().zip(&s3) {
        assert_eq!(a, b, "local vs S3");
    }
    assert_eq!(local.len(), s3.len());
    // And what they agree on is right.
    let line = |prefix: &str| local.iter().find(|l| l.starts_with(prefix)).cloned().unwrap();
    assert_eq!(line("put_new again"), "put_new again, other bytes: AlreadyExists");
    assert_eq!(line("get keeps the first"), format!("get keeps the first: {:?}", Some(b"one".to_vec())));
    assert!(line("list spool/").contains("spool/d2/1.png") && !line("list spool/").contains("spoolx"), "{}", line("list spool/"));
    assert!(line("list past one page").starts_with("list past one page: (1005,"), "{}", line("list past one page"));
    // The prefix confines a store: another prefix sees none of it, the bucket root sees it under the prefix.
    assert!(garage.store("other/").list("spool/").unwrap().is_empty());
    assert!(garage.store("").list("contract/spool/").unwrap().iter().any(|m| m.key == "contract/spool/d2/1.png"));
    // Measured: Garage 2.5 ignores If-None-Match on PUT, so put_new looks with HEAD first there.
    eprintln!("garage honours If-None-Match on PUT: {}", s3_store.honours_conditional_put());
}

#[test]
fn three_garage_nodes_keep_every_blob_with_one_node_down() {
    let started = Instant::now();
    let mut garage = Garage::start_nodes(3);
    eprintln!("garage: 3-node cluster (replication_factor 3) ready in {:?}", started.elapsed());
    let contract = exercise(&garage.store("three/"));
    assert!(contract.iter().any(|l| l == "put_new again, other bytes: AlreadyExists"), "{contract:?}");
    // Write through node 0 with node 2 killed (quorum 2 of 3): acknowledged, and readable through
    // node 1 and, once back, node 2.
    garage.kill_node(2);
    let via0 = garage.store_at(&garage.endpoints[0].clone(), "three/");
    assert_eq!(via0.put_new("segments/d/1-0.m4s", &[9u8; 70_000]).unwrap(), Created::New);
    let via1 = garage.store_at(&garage.endpoints[1].clone(), "three/");
    assert_eq!(via1.get("segments/d/1-0.m4s").unwrap().map(|b| b.len()), Some(70_000));
    garage.start_node(2);
    let via2 = garage.store_at(&garage.endpoints[2].clone(), "three/");
    assert_eq!(via2.get("segments/d/1-0.m4s").unwrap().map(|b| b.len()), Some(70_000));
    // A screentape node on the 3-node store: the whole pipeline scenario.
    let pg = Postgres::start();
    crate::pipeline::exact_frames_on_an_absolute_timeline(cluster_server(&garage, &pg, "three-pipeline", |_| {}));
}

#[test]
fn the_single_box_scenarios_run_on_s3_and_postgresql() {
    let garage = Garage::start();
    let pg = Postgres::start();
    let s = cluster_server(&garage, &pg, "pipeline", |_| {});
    let data_dir = s.app.config.data_dir.clone();
    crate::pipeline::exact_frames_on_an_absolute_timeline(s);
    // Every blob went to the bucket, and the node's data dir holds nothing that matters.
    let bucket = garage.store("pipeline/");
    for prefix in ["spool/", "segments/", "init/"] {
        assert!(!bucket.list(prefix).unwrap().is_empty(), "{prefix} in the bucket");
    }
    assert_eq!(files_under(&data_dir), Vec::<std::path::PathBuf>::new(), "nothing in the node's data dir");

    let pg2 = Postgres::start();
    crate::access::viewers_see_only_their_devices(cluster_server(&garage, &pg2, "access", |_| {}));
    let pg3 = Postgres::start();
    crate::errors::upload_errors_answer_as_documented(cluster_server(&garage, &pg3, "errors", |c| c.max_body_bytes = 1 << 20));
}

#[test]
fn a_shared_directory_store_holds_every_blob_and_the_node_dir_nothing() {
    let pg = Postgres::start();
    let shared = tempfile::tempdir().unwrap();
    let s = Server::start_with(|c| {
        c.store = format!("file://{}", shared.path().display());
        c.index = pg.url.clone();
    });
    let data_dir = s.app.config.data_dir.clone();
    crate::pipeline::exact_frames_on_an_absolute_timeline(s);
    for folder in ["spool", "segments", "init"] {
        assert!(!files_under(&shared.path().join(folder)).is_empty(), "{folder}/ in the shared directory");
    }
    assert_eq!(files_under(&data_dir), Vec::<std::path::PathBuf>::new(), "nothing in the node's data dir");
}

/// hls.js in headless Chromium plays footage whose segments the node streams from Garage:
/// seeks, steps, fast play and gaps show the right frames (the single-box player checks).
#[test]
fn the_player_plays_segments_streamed_from_garage() {
    let garage = Garage::start();
    let pg = Postgres::start();
    crate::player::player_checks(&cluster_server(&garage, &pg, "player", |_| {}));
}

/// Runs the real binary's admin command with `env`; its JSON answer.
fn admin(data_dir: &std::path::Path, env: &[(&str, String)], args: &[&str]) -> serde_json::Value {
    let out = Command::new(BIN).arg("--data-dir").arg(data_dir).args(args).envs(env.iter().map(|(k, v)| (*k, v))).output().unwrap();
    assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap()
}

fn upload(client: &reqwest::blocking::Client, url: &str, token: &str, capture_ms: i64, png: &[u8]) -> reqwest::blocking::Response {
    crate::support::post_frame(client, url, token, capture_ms, png).unwrap()
}

/// Polls `f` every 100 ms until it returns Some, at most `limit`.
fn poll<T>(what: &str, limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_201_means_stored_in_garage_and_an_outage_answers_503_then_heals_by_itself() {
    let mut garage = Garage::start();
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("scratch");
    let mut env = garage.env();
    env.extend([
        ("SCREENTAPE_STORE", format!("s3://{BUCKET}/node")),
        ("SCREENTAPE_INDEX", pg.url.clone()),
        ("SCREENTAPE_SEGMENT_GRACE", "0s".into()),
        ("SCREENTAPE_KEEP_ORIGINALS", "1h".into()),
        ("SCREENTAPE_ENCODE_WORKERS", "1".into()),
    ]);
    let dev = admin(&data_dir, &env, &["device", "add", "cam", "--json"]);
    let (device, token) = (dev["device"].as_str().unwrap().to_string(), dev["token"].as_str().unwrap().to_string());
    let viewer = admin(&data_dir, &env, &["user", "add", "boss", "--admin", "--json"])["token"].as_str().unwrap().to_string();
    let (mut child, url) = spawn_binary(&data_dir, &env);
    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let bucket = garage.store("node/");

    // Captures in a minute that is already over: due for encoding at once.
    let base = SystemClock.now_ms() / 60_000 * 60_000 - 3 * 60_000;
    let mut acked: BTreeMap<i64, Vec<u8>> = BTreeMap::new();
    for i in 0..6 {
        let t = base + i * 5_000;
        let (png, _) = shot(320, 200, t, i as u64);
        let r = upload(&client, &url, &token, t, &png);
        assert_eq!(r.status(), 201);
        // Acknowledged means in the bucket, whole, by the time the 201 arrives.
        let stored = bucket.get(&screentape::layout::spool_key(&device, t)).unwrap();
        assert_eq!(stored.as_deref(), Some(&png[..]), "the PNG is in Garage when the 201 arrives");
        acked.insert(t, png);
    }
    let timeline = |from: i64| -> serde_json::Value {
        client
            .get(format!("{url}/api/v1/devices/{device}/timeline?from={from}&to={}", base + 10 * 60_000))
            .bearer_auth(&viewer)
            .send()
            .unwrap()
            .json()
            .unwrap()
    };
    let encoded = |t: &serde_json::Value| t["captures"].as_array().map(|c| c.iter().filter_map(|x| x.as_i64()).collect::<Vec<_>>()).unwrap_or_default();
    poll("the first minute encoded", Duration::from_secs(60), || (encoded(&timeline(base)).len() == 6).then_some(()));
    let playlist = client.get(format!("{url}/api/v1/devices/{device}/playlist.m3u8")).bearer_auth(&viewer).send().unwrap().text().unwrap();
    let media_uri = playlist.lines().find(|l| !l.starts_with('#') && !l.is_empty()).unwrap().to_string();
    let media = client.get(format!("{url}/api/v1/devices/{device}/{media_uri}")).bearer_auth(&viewer).send().unwrap().text().unwrap();
    let segment_uri = media.lines().find(|l| !l.starts_with('#') && !l.is_empty()).unwrap().to_string();
    let segment_url = format!("{url}/api/v1/devices/{device}/{segment_uri}");
    let whole = client.get(&segment_url).bearer_auth(&viewer).send().unwrap();
    assert_eq!(whole.status(), 200);
    let whole = whole.bytes().unwrap();
    let ranged = client.get(&segment_url).bearer_auth(&viewer).header("range", "bytes=10-109").send().unwrap();
    assert_eq!(ranged.status(), 206, "segments answer Range requests from the object store");
    assert_eq!(&ranged.bytes().unwrap()[..], &whole[10..110]);

    // The store goes away: uploads answer 503 + Retry-After (not acknowledged), viewers 503.
    garage.stop();
    let mut refused = Vec::new();
    for i in 0..4 {
        let t = base + 60_000 + i * 5_000;
        let (png, _) = shot(320, 200, t, 100 + i as u64);
        let started = Instant::now();
        let r = upload(&client, &url, &token, t, &png);
        assert_eq!(r.status(), 503, "upload while the store is down");
        assert!(started.elapsed() < Duration::from_secs(30), "answered in bounded time: {:?}", started.elapsed());
        assert_eq!(r.headers()["retry-after"], "5");
        assert_eq!(r.json::<serde_json::Value>().unwrap()["error"], "unavailable");
        refused.push((t, png));
    }
    let r = client.get(&segment_url).bearer_auth(&viewer).send().unwrap();
    assert_eq!(r.status(), 503, "a segment while the store is down is a 503, never a short 200");
    assert!(r.headers().contains_key("retry-after"));
    let r = client.get(format!("{url}/api/v1/devices/{device}/frame.png?t={}", base + 1)).bearer_auth(&viewer).send().unwrap();
    assert_eq!(r.status(), 503, "frame.png while the store is down");
    assert_eq!(client.get(format!("{url}/healthz")).send().unwrap().status(), 200, "the node itself stays up");
    let r = client.get(format!("{url}/api/v1/devices/{device}/{media_uri}")).bearer_auth(&viewer).send().unwrap();
    assert_eq!(r.status(), 200, "playlists come from the index and keep working");

    // The store comes back: the same node, untouched, takes uploads again (agents retry after
    // Retry-After), and every acknowledged frame ends up encoded.
    garage.restart();
    for (t, png) in refused {
        let r = poll("an upload after the store came back", Duration::from_secs(30), || {
            let r = upload(&client, &url, &token, t, &png);
            (r.status() != 503).then_some(r)
        });
        assert_eq!(r.status(), 201);
        assert_eq!(bucket.get(&screentape::layout::spool_key(&device, t)).unwrap().as_deref(), Some(&png[..]));
        acked.insert(t, png);
    }
    let want: Vec<i64> = acked.keys().copied().collect();
    poll("every acknowledged capture encoded", Duration::from_secs(90), || (encoded(&timeline(base)) == want).then_some(()));
    let r = client.get(&segment_url).bearer_auth(&viewer).send().unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().unwrap(), whole, "the segment is served again, whole");
    for (t, png) in &acked {
        let r = client.get(format!("{url}/api/v1/devices/{device}/frame.png?t={t}")).bearer_auth(&viewer).send().unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["x-frame-time"], t.to_string().as_str());
        let shown = screentape::media::png::decode_rgb(&r.bytes().unwrap(), 8192).unwrap();
        let original = screentape::media::png::decode_rgb(png, 8192).unwrap();
        assert!(screentape::media::psnr_rgb(&shown, &original) >= 45.0, "frame at {t}");
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(files_under(&data_dir).is_empty(), "the node's scratch dir holds nothing: {:?}", files_under(&data_dir));
}

/// `after - before`, per S3 API endpoint, without the zeros.
fn delta(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after.iter().map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0))).filter(|(_, v)| *v > 0).collect()
}

/// S3 requests per upload, per encoded minute, per compacted block and per retention sweep, as
/// Garage counts them, for one device capturing every 10 s (the capacity figures of
/// docs/scale-out.md come from this output). The bounds guard against a regression that would
/// multiply requests.
#[test]
fn s3_requests_per_upload_minute_block_and_sweep_are_bounded() {
    const MIN: i64 = 60_000;
    let garage = Garage::start();
    let pg = Postgres::start();
    let s = cluster_server(&garage, &pg, "requests", |c| {
        c.max_future = Duration::from_secs(3600);
        c.compact.after = Duration::from_secs(3600);
    });
    let (_device, token) = s.add_device("cam", None);
    let t0 = crate::support::T0;
    let minutes = 30;
    let uploads = minutes * 6;
    let pngs: Vec<(i64, Vec<u8>)> = (0..uploads).map(|i| (t0 + i * 10_000, shot(640, 360, t0 + i * 10_000, i as u64).0)).collect();

    let c0 = garage.s3_requests();
    for (t, png) in &pngs {
        assert_eq!(s.upload(&token, *t, png).status(), 201);
    }
    let c1 = garage.s3_requests();
    s.advance_and_encode(t0 + minutes * MIN + 15_000);
    let c2 = garage.s3_requests();
    s.advance_and_encode(t0 + minutes * MIN + 2 * 3_600_000);
    let c3 = garage.s3_requests();
    // Originals are released `keep_originals` (10 min) after their block is compacted.
    s.clock.set_ms(t0 + minutes * MIN + 2 * 3_600_000 + 11 * MIN);
    s.app.retention_sweep().unwrap();
    let c4 = garage.s3_requests();
    s.app.retention_sweep().unwrap();
    let c5 = garage.s3_requests();

    let (ingest, encode, compact, sweep, idle) = (delta(&c0, &c1), delta(&c1, &c2), delta(&c2, &c3), delta(&c3, &c4), delta(&c4, &c5));
    let total = |m: &BTreeMap<String, u64>| m.values().sum::<u64>();
    eprintln!("s3 requests: {uploads} uploads (1 device, every 10 s, 640x360): {ingest:?} = {:.2} per upload", total(&ingest) as f64 / uploads as f64);
    eprintln!("s3 requests: encoding {minutes} minutes: {encode:?} = {:.2} per minute", total(&encode) as f64 / minutes as f64);
    eprintln!("s3 requests: compacting {} blocks of 10 min: {compact:?} = {:.2} per block", minutes / 10, total(&compact) as f64 / (minutes / 10) as f64);
    eprintln!("s3 requests: the retention sweep releasing the {uploads} originals: {sweep:?}");
    eprintln!("s3 requests: an idle retention sweep (one node): {idle:?}");
    let stored: u64 = ["spool/", "segments/", "init/"].iter().map(|p| garage.store("requests/").list(p).unwrap().iter().map(|m| m.bytes).sum::<u64>()).sum();
    eprintln!("s3 bytes stored after compaction and release: {stored} for {minutes} minutes");
    // A HEAD (Garage ignores If-None-Match, see above) and the PUT; ingest no longer looks first.
    assert!(total(&ingest) <= 2 * uploads as u64, "at most 2 requests per upload: {ingest:?}");
    assert!(total(&encode) <= 20 * minutes as u64, "at most 20 requests per encoded minute: {encode:?}");
    assert!(total(&idle) <= 10, "an idle sweep lists, it does not walk every blob: {idle:?}");
}

/// `import-data`: a single-box data dir (SQLite + blobs) moves into S3 + PostgreSQL; run twice,
/// the second run copies nothing; the cluster then serves the same footage to the same tokens,
/// and the frames still waiting in the spool are encoded there.
#[test]
fn import_data_moves_a_single_box_into_the_cluster_and_is_idempotent() {
    const MIN: i64 = 60_000;
    let t0 = crate::support::T0;
    let garage = Garage::start();
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let box_dir = dir.path().join("box");
    let (device, device_token, viewer, originals, timeline_before) = {
        let s = Server::start_with(|c| c.data_dir = box_dir.clone());
        let viewer = s.add_user("ann", false);
        let (device, token) = s.add_device("laptop", Some("ann"));
        s.add_user("root", true);
        let mut originals = BTreeMap::new();
        s.clock.set_ms(t0 + 3 * MIN + 30_000);
        for i in 0..8 {
            let t = t0 + i * 28_000; // minutes 0..3; the last capture (minute 3) is not due yet
            let (png, img) = shot(480, 270, t, i as u64);
            assert_eq!(s.upload(&token, t, &png).status(), 201);
            originals.insert(t, img);
        }
        s.advance_and_encode(t0 + 3 * MIN + 30_000);
        let tl: serde_json::Value = s.get(&viewer.token, &format!("/api/v1/devices/{device}/timeline?from={t0}&to={}", t0 + 4 * MIN)).send().unwrap().json().unwrap();
        (device, token, viewer, originals, tl)
    };
    assert_eq!(timeline_before["captures"].as_array().unwrap().len(), 7, "minutes 0-2 encoded, minute 3 still in the spool");

    let mut env = garage.env();
    env.extend([("SCREENTAPE_STORE", format!("s3://{BUCKET}/imported")), ("SCREENTAPE_INDEX", pg.url.clone())]);
    let scratch = dir.path().join("scratch");
    let import = || {
        let out = Command::new(BIN)
            .arg("--data-dir")
            .arg(&scratch)
            .args(["import-data", "--json", "--from"])
            .arg(&box_dir)
            .envs(env.iter().map(|(k, v)| (*k, v)))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let first = import();
    assert_eq!((first["users"].as_u64(), first["devices"].as_u64(), first["blocks"].as_u64()), (Some(2), Some(1), Some(3)), "{first}");
    assert_eq!(first["spool_files"], 8, "every original (kept ones and the unencoded minute): {first}");
    let second = import();
    assert_eq!(
        (second["users"].as_u64(), second["devices"].as_u64(), second["blocks"].as_u64(), second["blobs"].as_u64()),
        (Some(0), Some(0), Some(0), Some(0)),
        "a second run copies nothing: {second}"
    );
    assert_eq!(second["blocks_present"], 3);

    // The cluster serves the same footage to the same tokens, and encodes the spooled minute.
    let s = cluster_server(&garage, &pg, "imported", |_| {});
    s.clock.set_ms(t0 + 3 * MIN + 30_000);
    let tl: serde_json::Value = s.get(&viewer.token, &format!("/api/v1/devices/{device}/timeline?from={t0}&to={}", t0 + 4 * MIN)).send().unwrap().json().unwrap();
    assert_eq!(tl["captures"], timeline_before["captures"], "the same captures, through the same viewer token");
    s.advance_and_encode(t0 + 4 * MIN + 15_000);
    let tl: serde_json::Value = s.get(&viewer.token, &format!("/api/v1/devices/{device}/timeline?from={t0}&to={}", t0 + 4 * MIN)).send().unwrap().json().unwrap();
    let captures: Vec<i64> = tl["captures"].as_array().unwrap().iter().map(|c| c.as_i64().unwrap()).collect();
    assert_eq!(captures, originals.keys().copied().collect::<Vec<_>>(), "the spooled minute is encoded in the cluster");
    for (t, original) in &originals {
        let r = s.get(&viewer.token, &format!("/api/v1/devices/{device}/frame.png?t={t}")).send().unwrap();
        assert_eq!(r.status(), 200);
        let shown = screentape::media::png::decode_rgb(&r.bytes().unwrap(), 8192).unwrap();
        assert!(screentape::media::psnr_rgb(&shown, original) >= 45.0, "frame at {t}");
    }
    let (png, _) = shot(480, 270, t0 + 4 * MIN + 20_000, 99);
    assert_eq!(s.upload(&device_token, t0 + 4 * MIN + 20_000, &png).status(), 201, "the device token works in the cluster");
}
