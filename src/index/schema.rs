//! Schema migrations, applied in order and recorded in `PRAGMA user_version`.

/// Migration N brings the schema from version N to N+1. Never edit a released one; append.
pub const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    is_admin      INTEGER NOT NULL,
    token_hash    BLOB NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_ms    INTEGER NOT NULL
);
CREATE TABLE devices (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    owner_id    INTEGER REFERENCES users(id),
    token_hash  BLOB NOT NULL UNIQUE,
    created_ms  INTEGER NOT NULL
);
CREATE TABLE sessions (
    token_hash  BLOB PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    expires_ms  INTEGER NOT NULL
);
-- AUTOINCREMENT: ids are part of URLs served with immutable cache headers, so never reuse one.
CREATE TABLE inits (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    sha256  BLOB NOT NULL UNIQUE,
    file    TEXT NOT NULL,
    bytes   INTEGER NOT NULL
);
-- One row per media segment; a minute has one, or more when the resolution changes inside it.
CREATE TABLE segments (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id    TEXT NOT NULL REFERENCES devices(id),
    minute_ms    INTEGER NOT NULL,
    start_ms     INTEGER NOT NULL,
    end_ms       INTEGER NOT NULL,
    carry_ms     INTEGER,          -- capture shown from start_ms that belongs to an earlier minute
    init_id      INTEGER NOT NULL REFERENCES inits(id),
    file         TEXT NOT NULL UNIQUE,
    bytes        INTEGER NOT NULL,
    codec        TEXT NOT NULL,
    width        INTEGER NOT NULL,
    height       INTEGER NOT NULL,
    frame_count  INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL
);
CREATE INDEX segments_by_device_time ON segments(device_id, start_ms);
CREATE INDEX segments_by_end ON segments(end_ms);
-- Every encoded capture. Frames still in the spool are not here.
CREATE TABLE frames (
    device_id   TEXT NOT NULL,
    capture_ms  INTEGER NOT NULL,
    sha256      BLOB NOT NULL,
    segment_id  INTEGER NOT NULL REFERENCES segments(id),
    PRIMARY KEY (device_id, capture_ms)
) WITHOUT ROWID;
CREATE INDEX frames_by_segment ON frames(segment_id);
-- Files whose rows are gone, to be unlinked (and then forgotten) by whoever gets there first.
CREATE TABLE garbage (
    file TEXT PRIMARY KEY
);
"#,
    r#"
-- The block a segment was encoded in: [minute_ms, minute_ms + span_ms). One minute for fresh
-- footage; a compaction span (e.g. 10 minutes, one keyframe per segment) once compacted.
ALTER TABLE segments ADD COLUMN span_ms INTEGER NOT NULL DEFAULT 60000;
CREATE INDEX segments_by_span ON segments(span_ms, minute_ms);
"#,
    r#"
-- Sharing work between nodes (docs/scale-out-work.md). One row per lease name ("device/ID",
-- "retention"); a released lease keeps its row, so fencing tokens only grow.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    token       INTEGER NOT NULL,
    expires_ms  INTEGER NOT NULL
);
-- Acknowledged captures waiting for their minute's encode, written in cluster mode (a single
-- node keeps this list in memory, rebuilt from the spool at start-up). `seq` orders them: an
-- encode forgets the rows it had seen, never one that arrived while it ran.
CREATE TABLE pending_frames (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   TEXT NOT NULL,
    capture_ms  INTEGER NOT NULL,
    minute_ms   INTEGER NOT NULL,
    UNIQUE (device_id, capture_ms)
);
CREATE INDEX pending_by_minute ON pending_frames(minute_ms);
"#,
    r#"
-- How much the screen changed per device-minute: the bytes of the H.264 inter frames of that
-- minute as first encoded (one-minute settings). Kept through compaction; expires with its minute.
CREATE TABLE activity (
    device_id  TEXT NOT NULL,
    minute_ms  INTEGER NOT NULL,
    bytes      INTEGER NOT NULL,
    PRIMARY KEY (device_id, minute_ms)
) WITHOUT ROWID;
"#];
