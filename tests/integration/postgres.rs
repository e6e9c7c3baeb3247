//! The index in a real PostgreSQL: Debian's `postgresql`, a throwaway cluster per test (initdb in
//! a temp dir, a free loopback port, run as the unprivileged `postgres` user). The same
//! scenarios as the single-box tests run with `index = postgres://…`, and the index contract
//! gives the same answers as SQLite.

use std::process::Command;

use screentape::index::{Index, NewSegment, User};

use crate::engines;
use crate::support::{Server, T0};

/// A running throwaway PostgreSQL cluster (the bench's, `src/cli/engines.rs`, with fsync off),
/// stopped (immediately) and removed on drop; a failure is a panic.
pub struct Postgres(engines::Postgres);

impl Postgres {
    pub fn start() -> Self {
        Self(engines::Postgres::start(false).expect("a throwaway PostgreSQL (is Debian's postgresql installed? scripts/setup --postgres)"))
    }

    /// A crash of the database: `pg_ctl -m immediate stop` (no shutdown checkpoint).
    pub fn stop_immediately(&self) {
        self.0.stop_immediately().expect("PostgreSQL stopped");
    }

    /// Starts the same cluster again on the same port (crash recovery replays its WAL).
    pub fn start_again(&self) {
        self.0.start_again().expect("PostgreSQL started again");
    }
}

impl std::ops::Deref for Postgres {
    type Target = engines::Postgres;

    fn deref(&self) -> &engines::Postgres {
        &self.0
    }
}

/// A one-minute segment row for the index contract tests (here and in cluster.rs).
pub(crate) fn segment(start_ms: i64, file: &str, init: u8, captures: &[i64]) -> NewSegment {
    NewSegment {
        start_ms,
        end_ms: start_ms + 60_000,
        carry_ms: None,
        init_sha256: [init; 32],
        init_file: format!("init/{init}.mp4"),
        init_bytes: 10,
        file: file.into(),
        bytes: 100,
        codec: "avc1.F40028".into(),
        width: 1920,
        height: 1080,
        frame_count: captures.len() as i64,
        captures: captures.iter().map(|c| (*c, [*c as u8; 32])).collect(),
    }
}

/// A day in the life of an index, every answer written down.
fn exercise(index: &dyn Index) -> Vec<String> {
    let mut log = Vec::new();
    let mut note = |what: &str, v: &dyn std::fmt::Debug| log.push(format!("{what}: {v:?}"));
    let ann = index.create_user("ann", false, &[1; 32], "hash-a", 1).unwrap();
    let root = index.create_user("root", true, &[2; 32], "hash-r", 2).unwrap();
    note("dup user", &index.create_user("ann", true, &[3; 32], "x", 3).map_err(|e| e.to_string()));
    index.create_device("d1", "laptop", Some("ann"), &[4; 32], 5).unwrap();
    index.create_device("d2", "desk", None, &[5; 32], 6).unwrap();
    note("unknown owner", &index.create_device("d3", "x", Some("nobody"), &[6; 32], 7).map_err(|e| e.to_string()));
    let ann_user = User { id: ann, name: "ann".into(), is_admin: false };
    let root_user = User { id: root, name: "root".into(), is_admin: true };
    note("by token", &index.user_by_token_hash(&[1; 32]).unwrap());
    note("by name", &index.user_by_name("root").unwrap());
    index.create_session(&[9; 32], ann, 1_000).unwrap();
    note("session live", &index.user_by_session(&[9; 32], 999).unwrap());
    note("session expired", &index.user_by_session(&[9; 32], 1_000).unwrap());
    note("device by token", &index.device_by_token_hash(&[5; 32]).unwrap());
    note("ann sees", &index.can_view(&ann_user, "d1").unwrap());
    note("ann does not see", &index.can_view(&ann_user, "d2").unwrap());
    note("root sees", &index.can_view(&root_user, "d2").unwrap());
    note("device by name", &index.device_id_by_name("desk").unwrap());
    note("device ids", &index.device_ids().unwrap());

    let (ids, old) = index.replace_block("d1", (60_000, 60_000), &[segment(60_000, "s/a", 7, &[60_001, 70_000])], 10).unwrap();
    note("first block", &(ids.len(), old));
    let (_, old) = index.replace_block("d1", (60_000, 60_000), &[segment(60_000, "s/b", 7, &[60_001, 65_000, 70_000])], 11).unwrap();
    note("replaced", &old);
    index.replace_block("d1", (120_000, 60_000), &[segment(120_000, "s/c", 8, &[120_500])], 12).unwrap();
    index.replace_block("d2", (120_000, 60_000), &[segment(120_000, "s/d", 8, &[125_000])], 13).unwrap();
    let frames = index.frames_between("d1", 0, i64::MAX).unwrap();
    note("frames", &frames);
    note("sha", &index.frame_sha256("d1", 65_000).unwrap());
    note("encoded at", &index.frames_encoded_at("d1", 0, i64::MAX).unwrap());
    note("last before", &index.last_frame_before("d1", 120_000).unwrap());
    let segments = index.segments_between("d1", 0, i64::MAX).unwrap();
    note("segments", &segments);
    note("captures of segment", &index.captures_of_segment(segments[0].id).unwrap());
    note("segment", &index.segment(segments[1].id).unwrap());
    note("first with init", &index.first_segment_with_init("d1", segments[1].init_id).unwrap().map(|s| s.file));
    note("uses init", &index.device_uses_init("d2", segments[0].init_id).unwrap());
    note("init", &index.init(segments[0].init_id).unwrap());
    note("all inits", &index.all_inits().unwrap());
    note("block of", &index.block_of("d1", 120_000).unwrap());
    note("uncompacted", &index.uncompacted_before(180_000).unwrap());
    note("visible to ann", &index.devices_visible_to(&ann_user).unwrap());
    note("visible to root", &index.devices_visible_to(&root_user).unwrap());
    note("budget fits", &index.budget_cutoff(10_000).unwrap());
    note("budget cut", &index.budget_cutoff(220).unwrap());
    let mut garbage = index.garbage().unwrap();
    garbage.sort();
    note("garbage", &garbage);
    let mut expired = index.expire_before(120_000).unwrap();
    expired.sort();
    note("expired", &expired);
    index.forget_garbage(&expired).unwrap();
    note("garbage after", &index.garbage().unwrap());
    note("all segments", &index.all_segments().unwrap().iter().map(|s| s.file.clone()).collect::<Vec<_>>());
    note("sessions deleted", &index.delete_expired_sessions(2_000).unwrap());
    index.delete_session(&[9; 32]).unwrap();
    log
}

#[test]
fn the_index_answers_alike_in_sqlite_and_postgresql() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let sqlite = exercise(screentape::index::open_sqlite(&dir.path().join("i.sqlite3")).unwrap().as_ref());
    let postgres = exercise(screentape::index::open_postgres(&pg.url).unwrap().as_ref());
    for (a, b) in sqlite.iter().zip(&postgres) {
        assert_eq!(a, b);
    }
    assert_eq!(sqlite.len(), postgres.len());
    // And what they agree on is right.
    let line = |prefix: &str| sqlite.iter().find(|l| l.starts_with(prefix)).cloned().unwrap();
    assert!(line("dup user").contains("already exists"), "{}", line("dup user"));
    assert_eq!(line("replaced"), "replaced: [\"s/a\"]");
    assert_eq!(line("budget cut"), "budget cut: Some(120000)", "two newest segments + inits = 220 B fit");
    assert!(line("expired").contains("s/b") && !line("expired").contains("s/c"), "{}", line("expired"));
    // Opening again migrates nothing and keeps the rows (two nodes starting share one schema).
    let again = screentape::index::open_postgres(&pg.url).unwrap();
    assert_eq!(again.device_ids().unwrap(), vec!["d1".to_string(), "d2".to_string()]);
}

#[test]
fn the_single_box_scenarios_run_with_the_index_in_postgresql() {
    let pg = Postgres::start();
    crate::pipeline::exact_frames_on_an_absolute_timeline(Server::start_with(|c| c.index = pg.url.clone()));
    let pg2 = Postgres::start();
    crate::access::viewers_see_only_their_devices(Server::start_with(|c| c.index = pg2.url.clone()));
    // `screentape migrate` and the admin commands act on the same database as the server.
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_screentape");
    let out = Command::new(bin).arg("--data-dir").arg(dir.path()).arg("migrate").env("SCREENTAPE_INDEX", &pg2.url).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(bin).arg("--data-dir").arg(dir.path()).args(["device", "add", "remote", "--json"]).env("SCREENTAPE_INDEX", &pg2.url).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let index = screentape::index::open_postgres(&pg2.url).unwrap();
    assert!(index.device_id_by_name("remote").unwrap().is_some(), "the CLI wrote to PostgreSQL");
    assert!(!dir.path().join("index.sqlite3").exists(), "and not to a SQLite file");
    let _ = T0;
}

/// `systemctl stop` on a cluster node: SIGTERM ends it with status 0. Before, dropping the
/// PostgreSQL client inside the async runtime panicked ("Cannot start a runtime from within a
/// runtime") and the node exited 101.
#[test]
fn sigterm_stops_a_node_on_postgresql_cleanly() {
    let pg = Postgres::start();
    let dir = tempfile::tempdir().unwrap();
    let (mut child, url) = crate::support::spawn_binary(dir.path(), &[("SCREENTAPE_INDEX", pg.url.clone())]);
    let health = reqwest::blocking::get(format!("{url}/healthz")).unwrap();
    assert_eq!(health.status(), 200);
    assert!(Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap().success());
    // wait() returns when the process has exited; a hang here is the test harness's timeout.
    let exit = child.wait().unwrap();
    assert_eq!(exit.code(), Some(0), "a clean exit after SIGTERM with the index in PostgreSQL: {exit:?}");
}
