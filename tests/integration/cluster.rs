//! Scale-out: several nodes sharing one PostgreSQL index and one store share the work safely.
//! Real PostgreSQL (a throwaway cluster per test), the real binary for the fault tests, and a
//! shared store: Garage (a real distributed S3 store) for the kill test, a `file://` directory
//! elsewhere.
//!
//! - the lease and pending-row contract, alike in SQLite and PostgreSQL, fence included;
//! - a frame uploaded through one node is encoded by another; a login on one node is a login on
//!   every node; every node serves the same playlist;
//! - kill -9 of a random node at random moments (20 trials, seed printed): nothing acknowledged
//!   is lost, each capture is in exactly one committed segment, every node agrees;
//! - PostgreSQL crashed and restarted under load: 503 + Retry-After while it is down, nothing
//!   acknowledged lost, service resumes by itself.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::{Rng, SeedableRng};
use screentape::clock::{Clock, SystemClock, MINUTE_MS};
use screentape::index::lease::{device_lease, fenced};
use screentape::index::{Index, IndexError, SharedIndex};
use screentape::store::{LocalStore, SharedStore};
use screentape::media::png::encode_rgb;
use screentape::media::{ffmpeg, psnr_rgb};
use sha2::{Digest, Sha256};

use crate::garage::{Garage, BUCKET};
use crate::postgres::{segment, Postgres};
use crate::support::{shot, upload_recording_ack, Server, T0};
use crate::synth::screenshot;

const BIN: &str = env!("CARGO_BIN_EXE_screentape");

/// The contract of leases, the fence and pending rows, every answer written down.
fn exercise_leases(index: &dyn Index) -> Vec<String> {
    let mut log = Vec::new();
    let mut note = |what: &str, v: &dyn std::fmt::Debug| log.push(format!("{what}: {v:?}"));
    index.create_device("d1", "one", None, &[1; 32], 0).unwrap();
    let name = device_lease("d1");
    let a = index.try_lease(&name, "node-a", 60_000).unwrap().expect("a free lease is granted");
    note("b while a holds", &index.try_lease(&name, "node-b", 60_000).unwrap());
    note("a renews", &index.renew_lease(&a, 60_000).unwrap());
    // a stalls: its lease runs out (a negative length is "already expired", no waiting) ...
    assert!(index.renew_lease(&a, -1).unwrap());
    let b = index.try_lease(&name, "node-b", 60_000).unwrap().expect("an expired lease is taken over");
    note("token grew", &(b.token > a.token));
    note("a cannot renew", &index.renew_lease(&a, 60_000).unwrap());
    // ... and wakes up to commit: refused, its blob listed as garbage; b's commit goes through.
    let stale = fenced(Some(&a), || index.replace_block("d1", (60_000, 60_000), &[segment(60_000, "segments/a", 3, &[60_001])], 1));
    note("stale commit", &stale.map_err(|e| matches!(e, IndexError::LeaseLost(_))));
    note("loser's blob is garbage", &index.garbage().unwrap());
    let fresh = fenced(Some(&b), || index.replace_block("d1", (60_000, 60_000), &[segment(60_000, "segments/b", 3, &[60_001])], 2));
    note("fresh commit", &fresh.map(|(ids, old)| (ids.len(), old)));
    note("segments", &index.all_segments().unwrap().iter().map(|s| s.file.clone()).collect::<Vec<_>>());
    // Released: free at once, and a later holder gets a larger token still.
    index.release_lease(&b).unwrap();
    // The renewal thread may renew a lease its job has just released: that must not bring it
    // back to life (it did, holding the device for a whole TTL with nobody working on it).
    assert!(!index.renew_lease(&b, 60_000).unwrap(), "a released lease cannot be renewed");
    let c = index.try_lease(&name, "node-c", 60_000).unwrap().expect("a released lease is free");
    note("tokens only grow", &(c.token > b.token));
    index.release_lease(&a).unwrap(); // a stale release changes nothing
    note("c still holds", &index.try_lease(&name, "node-a", 60_000).unwrap());

    // Pending rows: the cluster's list of work.
    for t in [120_001, 120_500, 180_200] {
        index.add_pending("d1", t).unwrap();
    }
    index.add_pending("d1", 120_001).unwrap(); // a retry changes nothing
    index.add_pending("d2", 60_700).unwrap();
    note("count", &index.pending_count().unwrap());
    // d1 is held by c: only d2's minute is offered.
    let due = index.due_pending(240_000, 100).unwrap();
    note("due while d1 is held", &due.iter().map(|d| (d.device_id.clone(), d.minute_ms)).collect::<Vec<_>>());
    index.release_lease(&c).unwrap();
    let due = index.due_pending(180_000, 100).unwrap();
    note("due before 180000", &due.iter().map(|d| (d.device_id.clone(), d.minute_ms)).collect::<Vec<_>>());
    let d1 = due.iter().find(|d| d.device_id == "d1").unwrap().clone();
    // A capture of the same minute arrives while it is encoded: it stays pending.
    index.add_pending("d1", 120_900).unwrap();
    index.done_pending("d1", d1.minute_ms, d1.max_seq).unwrap();
    note("after done", &index.due_pending(180_000, 100).unwrap().iter().map(|d| (d.device_id.clone(), d.minute_ms)).collect::<Vec<_>>());
    note("count after done", &index.pending_count().unwrap());
    note("forgotten", &index.forget_pending_before(120_000).unwrap());
    note("count after forget", &index.pending_count().unwrap());
    log
}

#[test]
fn leases_fence_and_pending_rows_answer_alike_in_sqlite_and_postgresql() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = exercise_leases(screentape::index::open_sqlite(&dir.path().join("i.sqlite3")).unwrap().as_ref());
    let postgres = exercise_leases(screentape::index::open_postgres(&pg.url).unwrap().as_ref());
    assert_eq!(sqlite, postgres);
    let line = |prefix: &str| sqlite.iter().find(|l| l.starts_with(prefix)).cloned().unwrap();
    assert_eq!(line("b while a holds"), "b while a holds: None");
    assert_eq!(line("stale commit"), "stale commit: Err(true)");
    assert_eq!(line("loser's blob is garbage"), "loser's blob is garbage: [\"segments/a\"]");
    assert_eq!(line("segments"), "segments: [\"segments/b\"]");
    assert_eq!(line("c still holds"), "c still holds: None");
    assert_eq!(line("due while d1 is held"), "due while d1 is held: [(\"d2\", 60000)]");
    assert_eq!(line("due before 180000"), "due before 180000: [(\"d2\", 60000), (\"d1\", 120000)]");
    assert_eq!(line("after done"), "after done: [(\"d2\", 60000), (\"d1\", 120000)]", "the late capture keeps its minute due");
    assert_eq!(line("count after done"), "count after done: 3");
    assert_eq!(line("count after forget"), "count after forget: 2");
}

/// Two in-process nodes on one PostgreSQL and one store: an upload through node 1 is encoded
/// by node 2; a login on node 1 is valid on node 2; both serve the same playlist and bytes.
#[test]
fn any_node_encodes_and_answers_what_another_node_took_in() {
    let pg = Postgres::start();
    let shared = tempfile::tempdir().unwrap();
    let (store_dir, url) = (shared.path().join("store"), pg.url.clone());
    // Each node its own data dir (scratch), one shared store directory, one database.
    let node = |store_dir: PathBuf, url: String| {
        Server::start_with(move |c| {
            c.index = url;
            c.store = format!("file://{}", store_dir.display());
            c.segment_grace = Duration::ZERO;
            c.compact.span = Duration::ZERO;
        })
    };
    let one = node(store_dir.clone(), url.clone());
    let two = node(store_dir, url);
    // Accounts made through either node are the cluster's.
    let ann = two.add_user("ann", false);
    let (device, token) = one.add_device("laptop", Some("ann"));
    let mut originals = BTreeMap::new();
    for k in 0..5 {
        let t = T0 + 1_000 + k * 7_000;
        let (png, img) = shot(320, 180, t, k as u64);
        assert_eq!(one.upload(&token, t, &png).status(), 201);
        originals.insert(t, img);
    }
    // Node 2's clock passes the minute: it finds the work in the index and encodes it.
    two.advance_and_encode(T0 + 2 * MINUTE_MS);
    let frames = two.app.index.frames_between(&device, 0, i64::MAX).unwrap();
    assert_eq!(frames.iter().map(|f| f.capture_ms).collect::<Vec<_>>(), originals.keys().copied().collect::<Vec<_>>());
    assert_eq!(two.app.index.pending_count().unwrap(), 0, "the minute's pending rows are done");

    // A web login on node 1; its cookie works on node 2.
    let login = one
        .client
        .post(one.url("/api/v1/login"))
        .header("content-type", "application/json")
        .body(serde_json::json!({ "user": "ann", "password": ann.password }).to_string())
        .send()
        .unwrap();
    assert_eq!(login.status(), 200);
    let cookie = login.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let me = two.client.get(two.url("/api/v1/me")).header("cookie", &cookie).send().unwrap();
    assert_eq!(me.status(), 200, "a session made on node 1 is valid on node 2");
    assert!(me.text().unwrap().contains("ann"));

    // The same playlist and the same segment bytes from both nodes, decoding to the originals.
    let playlist = |s: &Server| s.client.get(s.url(&format!("/api/v1/devices/{device}/media.m3u8"))).header("cookie", &cookie).send().unwrap().text().unwrap();
    let (p1, p2) = (playlist(&one), playlist(&two));
    assert_eq!(p1, p2);
    let uris: Vec<&str> = p1.lines().filter(|l| l.ends_with(".m4s")).collect();
    assert!(!uris.is_empty(), "{p1}");
    for uri in uris {
        let get = |s: &Server| s.client.get(s.url(&format!("/api/v1/devices/{device}/{uri}"))).header("cookie", &cookie).send().unwrap().bytes().unwrap();
        assert_eq!(get(&one), get(&two));
    }
    for seg in one.app.index.all_segments().unwrap() {
        let init = one.app.store.get(&one.app.index.init(seg.init_id).unwrap().unwrap().file).unwrap().unwrap();
        let media = one.app.store.get(&seg.file).unwrap().unwrap();
        for (pts, yuv) in ffmpeg::decode_segment(&init, &media).unwrap() {
            if let Some(img) = originals.get(&pts) {
                let db = psnr_rgb(&ffmpeg::yuv_to_rgb(&yuv).unwrap(), img);
                assert!(db >= 45.0, "capture {pts}: {db:.2} dB");
            }
        }
    }
}

// ---- the real binary, several nodes, faults ----

/// The nodes' shared blob store.
enum Blobs {
    /// `store = file:///DIR`: a directory every node sees (NFS in production).
    Dir(PathBuf),
    /// `store = s3://screentape/cluster/` on a Garage cluster.
    Garage(Garage),
}

impl Blobs {
    fn env(&self) -> Vec<(&'static str, String)> {
        match self {
            Blobs::Dir(dir) => vec![("SCREENTAPE_STORE", format!("file://{}", dir.display()))],
            Blobs::Garage(g) => {
                let mut env = g.env();
                env.push(("SCREENTAPE_STORE", format!("s3://{BUCKET}/cluster")));
                env
            }
        }
    }

    /// A client on the same blobs, to look at what the nodes stored.
    fn open(&self) -> SharedStore {
        match self {
            Blobs::Dir(dir) => Arc::new(LocalStore::open(dir).unwrap()),
            Blobs::Garage(g) => Arc::new(g.store("cluster/")),
        }
    }
}

struct Cluster {
    pg: Postgres,
    blobs: Blobs,
    shared: tempfile::TempDir,
    nodes: Vec<Option<Child>>,
    urls: Arc<Mutex<Vec<String>>>,
    devices: Vec<(String, String)>,
    viewer: String,
}

impl Cluster {
    fn start(n: usize, devices: usize, garage: bool) -> Self {
        let pg = Postgres::start();
        let shared = tempfile::tempdir().unwrap();
        let blobs = if garage { Blobs::Garage(Garage::start()) } else { Blobs::Dir(shared.path().join("store")) };
        let mut cluster = Cluster { pg, blobs, shared, nodes: Vec::new(), urls: Arc::default(), devices: Vec::new(), viewer: String::new() };
        // `device add` / `user add` on any node's command line act on the whole cluster.
        for d in 0..devices {
            let out = cluster.admin(&["device", "add", &format!("agent-{d}"), "--json"]);
            cluster.devices.push((out["device"].as_str().unwrap().to_string(), out["token"].as_str().unwrap().to_string()));
        }
        cluster.viewer = cluster.admin(&["user", "add", "ops", "--admin", "--json"])["token"].as_str().unwrap().to_string();
        for i in 0..n {
            let (child, url) = cluster.spawn(i);
            cluster.nodes.push(Some(child));
            cluster.urls.lock().unwrap().push(url);
        }
        cluster
    }

    /// Node `i`'s own data dir: scratch only.
    fn data_dir(&self, i: usize) -> PathBuf {
        self.shared.path().join(format!("node{i}"))
    }

    fn admin(&self, args: &[&str]) -> serde_json::Value {
        let mut cmd = Command::new(BIN);
        cmd.arg("--data-dir").arg(self.data_dir(0)).args(args).env("SCREENTAPE_INDEX", &self.pg.url);
        for (k, v) in self.blobs.env() {
            cmd.env(k, v);
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn spawn(&self, i: usize) -> (Child, String) {
        let mut env = self.blobs.env();
        env.extend([
            ("SCREENTAPE_INDEX", self.pg.url.clone()),
            ("SCREENTAPE_SEGMENT_GRACE", "0s".to_string()),
            ("SCREENTAPE_ENCODE_WORKERS", "1".to_string()),
            ("SCREENTAPE_LEASE_TTL", "2s".to_string()),
        ]);
        crate::support::spawn_binary(&self.data_dir(i), &env)
    }

    fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].take() {
            child.kill().expect("kill -9");
            child.wait().unwrap();
        }
    }

    fn restart(&mut self, i: usize) {
        let (child, url) = self.spawn(i);
        self.nodes[i] = Some(child);
        self.urls.lock().unwrap()[i] = url;
    }

    fn index(&self) -> SharedIndex {
        screentape::index::open_postgres(&self.pg.url).unwrap()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill(i);
        }
    }
}

/// What the agents had acknowledged: (device, capture) → PNG bytes.
type Acked = Arc<Mutex<BTreeMap<(usize, i64), Vec<u8>>>>;

/// Agents uploading round-robin to every node until `stop`: each capture goes to the next node;
/// a node that does not answer (killed) or answers 503 gets the same capture again, or the next
/// node does, as a real agent keeps a capture until it is acknowledged.
struct Agents {
    acked: Acked,
    refused_503: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Agents {
    fn start(cluster: &Cluster, base: i64, per_device: usize) -> Self {
        let acked: Acked = Arc::default();
        let refused_503 = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        for (d, (_, token)) in cluster.devices.iter().enumerate() {
            let next = Arc::new(std::sync::atomic::AtomicI64::new(0));
            for a in 0..per_device {
                let (urls, token, acked, refused_503, stop, next) =
                    (cluster.urls.clone(), token.clone(), acked.clone(), refused_503.clone(), stop.clone(), next.clone());
                threads.push(std::thread::spawn(move || {
                    let client = reqwest::blocking::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
                    let mut node = d + a;
                    while !stop.load(Ordering::SeqCst) {
                        let k = next.fetch_add(1, Ordering::SeqCst);
                        // A capture every 2 s per device, uploaded as fast as a paced agent does
                        // (each minute is due at once and re-encoded as late frames come).
                        let t = base + k * 2_000;
                        if t >= base + 12 * MINUTE_MS {
                            break;
                        }
                        let png = encode_rgb(&screenshot(240, 136, t, k as u64 + d as u64 * 1000, 5));
                        // Until acknowledged (or the test stops): the next node each try.
                        loop {
                            node += 1;
                            let url = {
                                let urls = urls.lock().unwrap();
                                urls[node % urls.len()].clone()
                            };
                            match upload_recording_ack(&client, &url, &token, t, &png, &acked, (d, t)) {
                                Ok(r) if r.status().is_success() => {
                                    // Pacing (load shape, not synchronisation): ~30 uploads/s per agent.
                                    std::thread::sleep(Duration::from_millis(30));
                                    break;
                                }
                                Ok(r) if r.status() == 503 => {
                                    assert!(r.headers().contains_key("retry-after"), "503 without Retry-After");
                                    refused_503.fetch_add(1, Ordering::SeqCst);
                                    // Back off a little (sampling the outage, not synchronising on it).
                                    std::thread::sleep(Duration::from_millis(50));
                                }
                                Ok(r) => panic!("unexpected status {}: {}", r.status(), r.text().unwrap_or_default()),
                                Err(_) => std::thread::sleep(Duration::from_millis(10)), // killed under us: not acknowledged
                            }
                            if stop.load(Ordering::SeqCst) {
                                return;
                            }
                        }
                    }
                }));
            }
        }
        Self { acked, refused_503, stop, threads }
    }

    fn stop(self) -> (BTreeMap<(usize, i64), Vec<u8>>, usize) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            t.join().unwrap();
        }
        let acked = self.acked.lock().unwrap().clone();
        (acked, self.refused_503.load(Ordering::SeqCst))
    }
}

/// Waits (bounded) until every acknowledged capture is encoded and nothing is pending, then
/// checks: nothing lost, each capture in exactly one committed segment whose stored bytes hold
/// it at >= 45 dB, no two segments of a device overlapping, and every node serving the same
/// playlists. Returns the worst PSNR.
fn converge_and_check(cluster: &Cluster, acked: &BTreeMap<(usize, i64), Vec<u8>>) -> f64 {
    let (index, store) = (cluster.index(), cluster.blobs.open());
    let by = Instant::now() + Duration::from_secs(180);
    let missing = || -> usize {
        let mut missing = 0;
        for (d, (device, _)) in cluster.devices.iter().enumerate() {
            let stored: BTreeMap<i64, [u8; 32]> = index.frames_between(device, 0, i64::MAX).unwrap().iter().map(|f| (f.capture_ms, f.sha256)).collect();
            for ((_, t), png) in acked.range((d, i64::MIN)..(d + 1, i64::MIN)) {
                if stored.get(t) != Some(&Sha256::digest(png).into()) {
                    missing += 1;
                }
            }
        }
        missing
    };
    loop {
        let (m, p) = (missing(), index.pending_count().unwrap());
        if m == 0 && p == 0 {
            break;
        }
        assert!(Instant::now() < by, "180 s after the load: {m} acknowledged captures not encoded, {p} pending rows");
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut worst = f64::INFINITY;
    for (d, (device, _)) in cluster.devices.iter().enumerate() {
        let segments = index.segments_between(device, 0, i64::MAX).unwrap();
        for w in segments.windows(2) {
            assert!(w[0].end_ms <= w[1].start_ms, "segments overlap: {:?} and {:?}", w[0], w[1]);
        }
        let mut seen: BTreeMap<i64, usize> = BTreeMap::new();
        for seg in &segments {
            let captures = index.captures_of_segment(seg.id).unwrap();
            let read = |key: &str| store.get(key).unwrap().unwrap_or_else(|| panic!("{key} is missing from the store"));
            let init = read(&index.init(seg.init_id).unwrap().unwrap().file);
            let decoded: BTreeMap<i64, _> = ffmpeg::decode_segment(&init, &read(&seg.file)).unwrap().into_iter().collect();
            for ft in seg.frame_times(captures.iter().map(|c| c.capture_ms)) {
                let Some(capture_ms) = ft.capture_ms else { continue };
                *seen.entry(capture_ms).or_default() += 1;
                let yuv = decoded.get(&ft.pts_ms).unwrap_or_else(|| panic!("capture {capture_ms} is not in its segment's bytes"));
                if let Some(png) = acked.get(&(d, capture_ms)) {
                    let original = screentape::media::png::decode_rgb(png, 8192).unwrap();
                    worst = worst.min(psnr_rgb(&ffmpeg::yuv_to_rgb(yuv).unwrap(), &original));
                }
            }
        }
        assert!(seen.values().all(|n| *n == 1), "a capture in two segments");
        // Every node serves the same playlist.
        let client = reqwest::blocking::Client::new();
        let urls = cluster.urls.lock().unwrap().clone();
        let playlists: Vec<String> = urls
            .iter()
            .map(|u| client.get(format!("{u}/api/v1/devices/{device}/media.m3u8")).bearer_auth(&cluster.viewer).send().unwrap().text().unwrap())
            .collect();
        assert!(playlists.iter().all(|p| *p == playlists[0]), "nodes disagree on {device}'s playlist");
        assert!(playlists[0].contains(".m4s"));
    }
    assert!(worst >= 45.0, "worst decoded capture {worst:.2} dB");
    worst
}

fn seed() -> u64 {
    std::env::var("SCREENTAPE_CLUSTER_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random)
}

/// Trials of kill -9 (`SCREENTAPE_CLUSTER_TRIALS`, default 20; scripts/faults runs more).
fn trials() -> usize {
    std::env::var("SCREENTAPE_CLUSTER_TRIALS").ok().and_then(|s| s.parse().ok()).unwrap_or(20)
}

#[test]
fn kill_9_of_random_nodes_loses_nothing_and_every_node_agrees() {
    let seed = seed();
    eprintln!("cluster kill test: seed {seed} (SCREENTAPE_CLUSTER_SEED={seed} repeats it)");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::start(3, 3, true);
    // Captures from 20 minutes ago: every minute is due at once, encoded and re-encoded (late
    // frames) while uploads go on, and the oldest block gets compacted meanwhile.
    let base = SystemClock.now_ms() / MINUTE_MS * MINUTE_MS - 20 * MINUTE_MS;
    let agents = Agents::start(&cluster, base, 2);
    let trials = trials();
    for trial in 0..trials {
        std::thread::sleep(Duration::from_millis(rng.gen_range(200..1_500)));
        let victim = rng.gen_range(0..3);
        cluster.kill(victim);
        // Down for a while: the others take its uploads and, once its leases expire, its work.
        std::thread::sleep(Duration::from_millis(rng.gen_range(0..800)));
        cluster.restart(victim);
        eprintln!("trial {trial}: killed node {victim}; {} acknowledged so far", agents.acked.lock().unwrap().len());
    }
    std::thread::sleep(Duration::from_millis(500));
    let (acked, _) = agents.stop();
    assert!(acked.len() >= 100, "too little load to mean anything: {}", acked.len());
    let worst = converge_and_check(&cluster, &acked);
    // No orphan a start-up could not tell from another node's commit in flight is lost track
    // of: `check --repair` (all nodes stopped) cleans them, after which all is consistent.
    for i in 0..3 {
        cluster.kill(i);
    }
    let report = cluster.admin(&["check", "--json", "--repair"]);
    assert_eq!(report["missing_files"], serde_json::json!([]), "{report}");
    let report = cluster.admin(&["check", "--json"]);
    for key in ["orphan_files", "missing_files", "garbage_files"] {
        assert_eq!(report[key], serde_json::json!([]), "check: {report}");
    }
    eprintln!(
        "faults: cluster: seed {seed}, {trials} kill -9 trials of random nodes out of 3 under round-robin uploads: {} captures \
         acknowledged, 0 lost, each in exactly one committed segment, worst PSNR {worst:.2} dB, every node serves the same playlists",
        acked.len()
    );
}

#[test]
fn postgresql_restarted_under_load_answers_503_then_resumes_by_itself() {
    let cluster = Cluster::start(3, 1, false);
    let base = SystemClock.now_ms() / MINUTE_MS * MINUTE_MS - 10 * MINUTE_MS;
    let agents = Agents::start(&cluster, base, 2);
    let acked_count = || agents.acked.lock().unwrap().len();
    let by = Instant::now() + Duration::from_secs(30);
    while acked_count() < 30 {
        assert!(Instant::now() < by, "no load");
        std::thread::sleep(Duration::from_millis(50));
    }
    cluster.pg.stop_immediately();
    let before = acked_count();
    // While it is down: uploads are refused with 503 + Retry-After (the agents count them).
    let by = Instant::now() + Duration::from_secs(30);
    while agents.refused_503.load(Ordering::SeqCst) < 10 {
        assert!(Instant::now() < by, "no 503 while the index is down");
        std::thread::sleep(Duration::from_millis(50));
    }
    let during = acked_count();
    cluster.pg.start_again();
    // Service resumes by itself: the same nodes acknowledge again.
    let by = Instant::now() + Duration::from_secs(30);
    while acked_count() < during + 30 {
        assert!(Instant::now() < by, "uploads did not resume after PostgreSQL came back");
        std::thread::sleep(Duration::from_millis(50));
    }
    let (acked, refused) = agents.stop();
    let worst = converge_and_check(&cluster, &acked);
    eprintln!(
        "faults: cluster: PostgreSQL crashed (immediate stop) and restarted under load: {refused} uploads answered 503 + Retry-After \
         while it was down ({} acknowledged in that time), {} acknowledged in all, 0 lost, worst PSNR {worst:.2} dB, resumed without restarting a node",
        during - before,
        acked.len()
    );
}
