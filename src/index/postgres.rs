//! The index in PostgreSQL, for a cluster of nodes sharing one database: the same trait and the
//! same rows as SQLite, one transaction per method, a small pool of blocking clients.
//! Every method blocks (the `postgres` crate drives tokio-postgres on its own runtime): call it
//! from a blocking thread, as every caller of `Index` does.

use std::sync::{Arc, Mutex, PoisonError};

use postgres::error::SqlState;
use postgres::{Client, NoTls, Row, Transaction};

use super::lease::{current_fence, DueMinute, Lease};
use super::{DeviceInfo, DeviceRecord, FrameRow, Index, IndexError, Init, NewSegment, Result, Segment, User, UserRecord};

/// Migration N brings the schema from version N to N+1 (recorded in `schema_version`). Never
/// edit a released one; append. Version 1 is SQLite's migrations 1 and 2 together, version 2
/// its migration 3 (leases and pending frames).
const MIGRATIONS: &[&str] = &[r#"
CREATE TABLE users (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name          TEXT NOT NULL UNIQUE,
    is_admin      BOOLEAN NOT NULL,
    token_hash    BYTEA NOT NULL UNIQUE,
    password_hash TEXT NOT NULL,
    created_ms    BIGINT NOT NULL
);
CREATE TABLE devices (
    id          TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    owner_id    BIGINT REFERENCES users(id),
    token_hash  BYTEA NOT NULL UNIQUE,
    created_ms  BIGINT NOT NULL
);
CREATE TABLE sessions (
    token_hash  BYTEA PRIMARY KEY,
    user_id     BIGINT NOT NULL REFERENCES users(id),
    expires_ms  BIGINT NOT NULL
);
-- Identity columns never reuse an id: ids are part of URLs served with immutable cache headers.
CREATE TABLE inits (
    id      BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    sha256  BYTEA NOT NULL UNIQUE,
    file    TEXT NOT NULL,
    bytes   BIGINT NOT NULL
);
CREATE TABLE segments (
    id           BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id    TEXT NOT NULL REFERENCES devices(id),
    minute_ms    BIGINT NOT NULL,
    start_ms     BIGINT NOT NULL,
    end_ms       BIGINT NOT NULL,
    carry_ms     BIGINT,
    init_id      BIGINT NOT NULL REFERENCES inits(id),
    file         TEXT NOT NULL UNIQUE,
    bytes        BIGINT NOT NULL,
    codec        TEXT NOT NULL,
    width        BIGINT NOT NULL,
    height       BIGINT NOT NULL,
    frame_count  BIGINT NOT NULL,
    created_ms   BIGINT NOT NULL,
    span_ms      BIGINT NOT NULL DEFAULT 60000
);
CREATE INDEX segments_by_device_time ON segments(device_id, start_ms);
CREATE INDEX segments_by_end ON segments(end_ms);
CREATE INDEX segments_by_span ON segments(span_ms, minute_ms);
CREATE TABLE frames (
    device_id   TEXT NOT NULL,
    capture_ms  BIGINT NOT NULL,
    sha256      BYTEA NOT NULL,
    segment_id  BIGINT NOT NULL REFERENCES segments(id),
    PRIMARY KEY (device_id, capture_ms)
);
CREATE INDEX frames_by_segment ON frames(segment_id);
CREATE TABLE garbage (
    file TEXT PRIMARY KEY
);
"#,
    r#"
-- Sharing work between nodes (docs/scale-out-work.md). One row per lease name ("device/ID",
-- "retention"); a released lease keeps its row and tokens come from one sequence, so a token
-- is never handed out twice.
CREATE TABLE leases (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    token       BIGINT NOT NULL,
    expires_ms  BIGINT NOT NULL
);
CREATE SEQUENCE lease_tokens;
-- Acknowledged captures waiting for their minute's encode: the cluster's list of work.
CREATE TABLE pending_frames (
    seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    device_id   TEXT NOT NULL,
    capture_ms  BIGINT NOT NULL,
    minute_ms   BIGINT NOT NULL,
    UNIQUE (device_id, capture_ms)
);
CREATE INDEX pending_by_minute ON pending_frames(minute_ms);
"#,
    r#"
-- How much the screen changed per device-minute (bytes of the inter frames as first encoded).
CREATE TABLE activity (
    device_id  TEXT NOT NULL,
    minute_ms  BIGINT NOT NULL,
    bytes      BIGINT NOT NULL,
    PRIMARY KEY (device_id, minute_ms)
);
"#];

/// The database's clock in ms: every node judges lease expiry by this one clock.
const NOW_MS: &str = "(EXTRACT(EPOCH FROM clock_timestamp()) * 1000)::BIGINT";

const SEGMENT_COLUMNS: &str =
    "id, device_id, minute_ms, start_ms, end_ms, carry_ms, init_id, file, bytes, codec, width, height, frame_count, span_ms";

impl From<postgres::Error> for IndexError {
    fn from(e: postgres::Error) -> Self {
        // No SQL state: the connection failed or broke (the server is down or restarting).
        // These states: the server is shutting down, starting up or crashed.
        let unavailable = e.is_closed()
            || match e.code() {
                None => true,
                Some(code) => [SqlState::ADMIN_SHUTDOWN, SqlState::CRASH_SHUTDOWN, SqlState::CANNOT_CONNECT_NOW, SqlState::CONNECTION_FAILURE]
                    .contains(code),
            };
        if unavailable {
            IndexError::Unavailable(e.to_string())
        } else {
            IndexError::Postgres(e.to_string())
        }
    }
}

fn segment_from_row(r: &Row) -> Result<Segment> {
    Ok(Segment {
        id: r.try_get(0)?,
        device_id: r.try_get(1)?,
        minute_ms: r.try_get(2)?,
        start_ms: r.try_get(3)?,
        end_ms: r.try_get(4)?,
        carry_ms: r.try_get(5)?,
        init_id: r.try_get(6)?,
        file: r.try_get(7)?,
        bytes: r.try_get(8)?,
        codec: r.try_get(9)?,
        width: dimension(r.try_get(10)?)?,
        height: dimension(r.try_get(11)?)?,
        frame_count: r.try_get(12)?,
        span_ms: r.try_get(13)?,
    })
}

fn dimension(v: i64) -> Result<u32> {
    u32::try_from(v).map_err(|_| IndexError::Postgres(format!("a stored dimension is out of range: {v}")))
}

fn sha(v: Vec<u8>) -> Result<[u8; 32]> {
    v.try_into().map_err(|_| IndexError::Postgres("a stored SHA-256 is not 32 bytes".into()))
}

fn frame_from_row(r: &Row) -> Result<FrameRow> {
    Ok(FrameRow { capture_ms: r.try_get(0)?, sha256: sha(r.try_get(1)?)?, segment_id: r.try_get(2)? })
}

fn user_from_row(r: &Row) -> Result<User> {
    Ok(User { id: r.try_get(0)?, name: r.try_get(1)?, is_admin: r.try_get(2)? })
}

fn rows<T>(rows: Vec<Row>, f: impl Fn(&Row) -> Result<T>) -> Result<Vec<T>> {
    rows.iter().map(f).collect()
}

/// A pool of clients connected to one PostgreSQL database. Cheap to clone.
#[derive(Clone)]
pub struct PostgresIndex {
    url: String,
    pool: Arc<Mutex<Vec<Client>>>,
}

impl PostgresIndex {
    /// Connects to `url` (`postgres://USER:PASSWORD@HOST:PORT/DB`) and brings the schema up to
    /// date (each migration in its own transaction, one node at a time).
    pub fn open(url: &str) -> Result<Self> {
        let index = Self { url: url.to_string(), pool: Arc::default() };
        let mut client = index.connect()?;
        migrate(&mut client)?;
        index.pool.lock().unwrap_or_else(PoisonError::into_inner).push(client);
        Ok(index)
    }

    fn connect(&self) -> Result<Client> {
        // Plain TCP: the database is on the nodes' private network (docs/scale-out.md). A bounded
        // connect: while the database is unreachable, requests answer 503 instead of hanging.
        let mut config: postgres::Config = self.url.parse()?;
        config.connect_timeout(std::time::Duration::from_secs(5));
        Ok(config.connect(NoTls)?)
    }

    /// Runs `f` on a pooled client; a client whose connection broke is not put back.
    fn with<T>(&self, f: impl FnOnce(&mut Client) -> Result<T>) -> Result<T> {
        let pooled = self.pool.lock().unwrap_or_else(PoisonError::into_inner).pop();
        let mut client = match pooled {
            Some(c) if !c.is_closed() => c,
            _ => self.connect()?,
        };
        let out = f(&mut client);
        if !client.is_closed() {
            let mut pool = self.pool.lock().unwrap_or_else(PoisonError::into_inner);
            if pool.len() < 8 {
                pool.push(client);
            }
        }
        out
    }

    fn tx<T>(&self, f: impl FnOnce(&mut Transaction<'_>) -> Result<T>) -> Result<T> {
        self.with(|c| {
            let mut tx = c.transaction()?;
            let out = f(&mut tx)?;
            tx.commit()?;
            Ok(out)
        })
    }

    fn opt<T>(&self, sql: &str, params: &[&(dyn postgres::types::ToSql + Sync)], f: impl FnOnce(&Row) -> Result<T>) -> Result<Option<T>> {
        self.with(|c| c.query_opt(sql, params)?.as_ref().map(f).transpose())
    }
}

fn migrate(client: &mut Client) -> Result<()> {
    let mut tx = client.transaction()?;
    // One node migrates at a time; the others wait here, then find nothing left to do.
    tx.execute("SELECT pg_advisory_xact_lock(7316720101)", &[])?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")?;
    let version: i64 = match tx.query_opt("SELECT version FROM schema_version", &[])? {
        Some(r) => r.try_get(0)?,
        None => {
            tx.execute("INSERT INTO schema_version (version) VALUES (0)", &[])?;
            0
        }
    };
    let known = MIGRATIONS.len() as i64;
    if version > known {
        return Err(IndexError::TooNew { found: version, known });
    }
    for (n, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql)?;
        tx.execute("UPDATE schema_version SET version = $1", &[&(n as i64 + 1)])?;
    }
    tx.commit()?;
    Ok(())
}

impl Index for PostgresIndex {
    fn create_user(&self, name: &str, is_admin: bool, token_hash: &[u8], password_hash: &str, now_ms: i64) -> Result<i64> {
        let inserted = self.with(|c| {
            Ok(c.query_one(
                "INSERT INTO users (name, is_admin, token_hash, password_hash, created_ms) VALUES ($1, $2, $3, $4, $5) RETURNING id",
                &[&name, &is_admin, &token_hash, &password_hash, &now_ms],
            ))
        })?;
        match inserted {
            Ok(row) => Ok(row.try_get(0)?),
            Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => Err(IndexError::Exists(format!("user {name}"))),
            Err(e) => Err(e.into()),
        }
    }

    fn user_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<User>> {
        self.opt("SELECT id, name, is_admin FROM users WHERE token_hash = $1", &[&token_hash], user_from_row)
    }

    fn user_by_name(&self, name: &str) -> Result<Option<(User, String)>> {
        self.opt("SELECT id, name, is_admin, password_hash FROM users WHERE name = $1", &[&name], |r| Ok((user_from_row(r)?, r.try_get(3)?)))
    }

    fn create_session(&self, token_hash: &[u8], user_id: i64, expires_ms: i64) -> Result<()> {
        self.with(|c| {
            c.execute("INSERT INTO sessions (token_hash, user_id, expires_ms) VALUES ($1, $2, $3)", &[&token_hash, &user_id, &expires_ms])?;
            Ok(())
        })
    }

    fn user_by_session(&self, token_hash: &[u8], now_ms: i64) -> Result<Option<User>> {
        self.opt(
            "SELECT u.id, u.name, u.is_admin FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.token_hash = $1 AND s.expires_ms > $2",
            &[&token_hash, &now_ms],
            user_from_row,
        )
    }

    fn delete_session(&self, token_hash: &[u8]) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM sessions WHERE token_hash = $1", &[&token_hash])?;
            Ok(())
        })
    }

    fn create_device(&self, id: &str, name: &str, owner: Option<&str>, token_hash: &[u8], now_ms: i64) -> Result<()> {
        self.tx(|tx| {
            let owner_id: Option<i64> = match owner {
                None => None,
                Some(o) => Some(
                    tx.query_opt("SELECT id FROM users WHERE name = $1", &[&o])?
                        .ok_or_else(|| IndexError::NotFound(format!("user {o}")))?
                        .try_get(0)?,
                ),
            };
            tx.execute(
                "INSERT INTO devices (id, name, owner_id, token_hash, created_ms) VALUES ($1, $2, $3, $4, $5)",
                &[&id, &name, &owner_id, &token_hash, &now_ms],
            )?;
            Ok(())
        })
    }

    fn device_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<String>> {
        self.opt("SELECT id FROM devices WHERE token_hash = $1", &[&token_hash], |r| Ok(r.try_get(0)?))
    }

    fn devices_visible_to(&self, user: &User) -> Result<Vec<DeviceInfo>> {
        self.with(|c| {
            rows(
                c.query(
                    "SELECT d.id, d.name, u.name,
                            (SELECT MAX(capture_ms) FROM frames f WHERE f.device_id = d.id),
                            (SELECT COALESCE(SUM(bytes), 0)::BIGINT FROM segments s WHERE s.device_id = d.id),
                            (SELECT COUNT(*) FROM segments s WHERE s.device_id = d.id)
                     FROM devices d LEFT JOIN users u ON u.id = d.owner_id
                     WHERE $1 OR d.owner_id = $2 ORDER BY d.name, d.id",
                    &[&user.is_admin, &user.id],
                )?,
                |r| {
                    Ok(DeviceInfo {
                        id: r.try_get(0)?,
                        name: r.try_get(1)?,
                        owner: r.try_get(2)?,
                        last_capture_ms: r.try_get(3)?,
                        segment_bytes: r.try_get(4)?,
                        segments: r.try_get(5)?,
                    })
                },
            )
        })
    }

    fn can_view(&self, user: &User, device_id: &str) -> Result<bool> {
        Ok(self
            .opt("SELECT 1 FROM devices WHERE id = $1 AND ($2 OR owner_id = $3)", &[&device_id, &user.is_admin, &user.id], |_| Ok(()))?
            .is_some())
    }

    fn device_id_by_name(&self, name: &str) -> Result<Option<String>> {
        self.opt("SELECT id FROM devices WHERE name = $1 ORDER BY created_ms LIMIT 1", &[&name], |r| Ok(r.try_get(0)?))
    }

    fn accounts(&self) -> Result<(Vec<UserRecord>, Vec<DeviceRecord>)> {
        self.with(|c| {
            let users = rows(c.query("SELECT name, is_admin, token_hash, password_hash, created_ms FROM users ORDER BY name", &[])?, |r| {
                Ok(UserRecord {
                    name: r.try_get(0)?,
                    is_admin: r.try_get(1)?,
                    token_hash: r.try_get(2)?,
                    password_hash: r.try_get(3)?,
                    created_ms: r.try_get(4)?,
                })
            })?;
            let devices = rows(
                c.query(
                    "SELECT d.id, d.name, u.name, d.token_hash, d.created_ms FROM devices d LEFT JOIN users u ON u.id = d.owner_id ORDER BY d.id",
                    &[],
                )?,
                |r| {
                    Ok(DeviceRecord {
                        id: r.try_get(0)?,
                        name: r.try_get(1)?,
                        owner: r.try_get(2)?,
                        token_hash: r.try_get(3)?,
                        created_ms: r.try_get(4)?,
                    })
                },
            )?;
            Ok((users, devices))
        })
    }

    fn device_ids(&self) -> Result<Vec<String>> {
        self.with(|c| rows(c.query("SELECT id FROM devices ORDER BY id", &[])?, |r| Ok(r.try_get(0)?)))
    }

    fn frame_sha256(&self, device_id: &str, capture_ms: i64) -> Result<Option<[u8; 32]>> {
        self.opt("SELECT sha256 FROM frames WHERE device_id = $1 AND capture_ms = $2", &[&device_id, &capture_ms], |r| sha(r.try_get(0)?))
    }

    fn frames_encoded_at(&self, device_id: &str, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, i64, bool)>> {
        self.with(|c| {
            rows(
                c.query(
                    "SELECT f.capture_ms, s.created_ms, s.span_ms > 60000 FROM frames f JOIN segments s ON s.id = f.segment_id
                     WHERE f.device_id = $1 AND f.capture_ms >= $2 AND f.capture_ms < $3 ORDER BY f.capture_ms",
                    &[&device_id, &from_ms, &to_ms],
                )?,
                |r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)),
            )
        })
    }

    fn frames_between(&self, device_id: &str, from_ms: i64, to_ms: i64) -> Result<Vec<FrameRow>> {
        self.with(|c| {
            rows(
                c.query(
                    "SELECT capture_ms, sha256, segment_id FROM frames
                     WHERE device_id = $1 AND capture_ms >= $2 AND capture_ms < $3 ORDER BY capture_ms",
                    &[&device_id, &from_ms, &to_ms],
                )?,
                frame_from_row,
            )
        })
    }

    fn last_frame_before(&self, device_id: &str, before_ms: i64) -> Result<Option<FrameRow>> {
        self.opt(
            "SELECT capture_ms, sha256, segment_id FROM frames WHERE device_id = $1 AND capture_ms < $2 ORDER BY capture_ms DESC LIMIT 1",
            &[&device_id, &before_ms],
            frame_from_row,
        )
    }

    fn segment(&self, id: i64) -> Result<Option<Segment>> {
        self.opt(&format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE id = $1"), &[&id], segment_from_row)
    }

    fn first_segment_with_init(&self, device_id: &str, init_id: i64) -> Result<Option<Segment>> {
        self.opt(
            &format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE device_id = $1 AND init_id = $2 ORDER BY start_ms LIMIT 1"),
            &[&device_id, &init_id],
            segment_from_row,
        )
    }

    fn device_uses_init(&self, device_id: &str, init_id: i64) -> Result<bool> {
        Ok(self.opt("SELECT 1 FROM segments WHERE device_id = $1 AND init_id = $2 LIMIT 1", &[&device_id, &init_id], |_| Ok(()))?.is_some())
    }

    fn init(&self, id: i64) -> Result<Option<Init>> {
        self.opt("SELECT id, file, bytes FROM inits WHERE id = $1", &[&id], |r| Ok(Init { id: r.try_get(0)?, file: r.try_get(1)?, bytes: r.try_get(2)? }))
    }

    fn segments_between(&self, device_id: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Segment>> {
        self.with(|c| {
            rows(
                c.query(
                    &format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE device_id = $1 AND end_ms > $2 AND start_ms < $3 ORDER BY start_ms"),
                    &[&device_id, &from_ms, &to_ms],
                )?,
                segment_from_row,
            )
        })
    }

    fn all_segments(&self) -> Result<Vec<Segment>> {
        self.with(|c| rows(c.query(&format!("SELECT {SEGMENT_COLUMNS} FROM segments ORDER BY device_id, start_ms"), &[])?, segment_from_row))
    }

    fn all_inits(&self) -> Result<Vec<Init>> {
        self.with(|c| {
            rows(c.query("SELECT id, file, bytes FROM inits ORDER BY id", &[])?, |r| {
                Ok(Init { id: r.try_get(0)?, file: r.try_get(1)?, bytes: r.try_get(2)? })
            })
        })
    }

    fn block_of(&self, device_id: &str, minute_ms: i64) -> Result<(i64, i64)> {
        Ok(self
            .opt(
                "SELECT minute_ms, span_ms FROM segments
                 WHERE device_id = $1 AND span_ms > 60000 AND minute_ms <= $2 AND minute_ms + span_ms > $2 LIMIT 1",
                &[&device_id, &minute_ms],
                |r| Ok((r.try_get(0)?, r.try_get(1)?)),
            )?
            .unwrap_or((minute_ms, 60_000)))
    }

    fn uncompacted_before(&self, before_ms: i64) -> Result<Vec<(String, i64)>> {
        self.with(|c| {
            rows(
                c.query(
                    "SELECT device_id, MIN(minute_ms) FROM segments WHERE span_ms = 60000 AND minute_ms < $1 GROUP BY device_id ORDER BY 2",
                    &[&before_ms],
                )?,
                |r| Ok((r.try_get(0)?, r.try_get(1)?)),
            )
        })
    }

    fn replace_block(&self, device_id: &str, (start_ms, span_ms): (i64, i64), new: &[NewSegment], now_ms: i64) -> Result<(Vec<i64>, Vec<String>)> {
        let fence = current_fence();
        let out = self.tx(|tx| {
            if let Some(fence) = &fence {
                // Compare-and-set: the row lock makes a take-over wait for this commit (and then
                // see it), or this commit see the take-over's new token and refuse.
                let token: Option<i64> = tx
                    .query_opt("SELECT token FROM leases WHERE name = $1 AND holder = $2 FOR UPDATE", &[&fence.name, &fence.holder])?
                    .map(|r| r.try_get(0))
                    .transpose()?;
                if token != Some(fence.token) {
                    return Err(IndexError::LeaseLost(fence.name.clone()));
                }
            }
            let old: Vec<(i64, String)> = rows(
                tx.query(
                    "SELECT id, file FROM segments WHERE device_id = $1 AND minute_ms >= $2 AND minute_ms < $3",
                    &[&device_id, &start_ms, &(start_ms + span_ms)],
                )?,
                |r| Ok((r.try_get(0)?, r.try_get(1)?)),
            )?;
            for (id, file) in &old {
                tx.execute("DELETE FROM frames WHERE segment_id = $1", &[id])?;
                tx.execute("DELETE FROM segments WHERE id = $1", &[id])?;
                tx.execute("INSERT INTO garbage (file) VALUES ($1) ON CONFLICT DO NOTHING", &[file])?;
            }
            let mut ids = Vec::with_capacity(new.len());
            for seg in new {
                let init_sha = seg.init_sha256.as_slice();
                tx.execute(
                    "INSERT INTO inits (sha256, file, bytes) VALUES ($1, $2, $3) ON CONFLICT (sha256) DO NOTHING",
                    &[&init_sha, &seg.init_file, &seg.init_bytes],
                )?;
                // An init that was garbage (all its segments expired) is alive again.
                tx.execute("DELETE FROM garbage WHERE file = $1", &[&seg.init_file])?;
                let init_id: i64 = tx.query_one("SELECT id FROM inits WHERE sha256 = $1", &[&init_sha])?.try_get(0)?;
                let (width, height) = (i64::from(seg.width), i64::from(seg.height));
                let id: i64 = tx
                    .query_one(
                        "INSERT INTO segments (device_id, minute_ms, start_ms, end_ms, carry_ms, init_id, file, bytes, codec,
                                               width, height, frame_count, created_ms, span_ms)
                         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING id",
                        &[
                            &device_id, &start_ms, &seg.start_ms, &seg.end_ms, &seg.carry_ms, &init_id, &seg.file, &seg.bytes, &seg.codec,
                            &width, &height, &seg.frame_count, &now_ms, &span_ms,
                        ],
                    )?
                    .try_get(0)?;
                let insert = tx.prepare("INSERT INTO frames (device_id, capture_ms, sha256, segment_id) VALUES ($1, $2, $3, $4)")?;
                for (capture_ms, sha) in &seg.captures {
                    tx.execute(&insert, &[&device_id, capture_ms, &sha.as_slice(), &id])?;
                }
                ids.push(id);
            }
            Ok((ids, old.into_iter().map(|(_, f)| f).collect()))
        });
        if let Err(IndexError::LeaseLost(_)) = &out {
            // The loser's segment blobs go with the next garbage collection (inits are shared by
            // content and stay: a row may name the same one).
            let files: Vec<&str> = new.iter().map(|s| s.file.as_str()).collect();
            self.with(|c| {
                c.execute("INSERT INTO garbage (file) SELECT unnest($1::TEXT[]) ON CONFLICT DO NOTHING", &[&files])?;
                Ok(())
            })?;
        }
        out
    }

    fn expire_before(&self, cutoff_ms: i64) -> Result<Vec<String>> {
        self.tx(|tx| {
            tx.execute("DELETE FROM frames WHERE segment_id IN (SELECT id FROM segments WHERE end_ms <= $1)", &[&cutoff_ms])?;
            tx.execute("INSERT INTO garbage (file) SELECT file FROM segments WHERE end_ms <= $1 ON CONFLICT DO NOTHING", &[&cutoff_ms])?;
            tx.execute("DELETE FROM segments WHERE end_ms <= $1", &[&cutoff_ms])?;
            tx.execute("DELETE FROM activity WHERE minute_ms + 60000 <= $1", &[&cutoff_ms])?;
            tx.execute(
                "INSERT INTO garbage (file) SELECT file FROM inits WHERE id NOT IN (SELECT DISTINCT init_id FROM segments) ON CONFLICT DO NOTHING",
                &[],
            )?;
            tx.execute("DELETE FROM inits WHERE id NOT IN (SELECT DISTINCT init_id FROM segments)", &[])?;
            rows(tx.query("SELECT file FROM garbage", &[])?, |r| Ok(r.try_get(0)?))
        })
    }

    fn budget_cutoff(&self, max_bytes: u64) -> Result<Option<i64>> {
        let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
        // Newest first, the running total of segment bytes plus every init: the first segment
        // whose running total passes the budget ends where the cut goes (as SQLite's scan does).
        self.opt(
            "SELECT end_ms FROM (
                 SELECT end_ms, id, (SUM(bytes) OVER (ORDER BY end_ms DESC, id DESC ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW))::BIGINT AS kept
                 FROM segments) t
             WHERE kept + (SELECT COALESCE(SUM(bytes), 0)::BIGINT FROM inits) > $1::BIGINT
             ORDER BY end_ms DESC, id DESC LIMIT 1",
            &[&max_bytes],
            |r| Ok(r.try_get(0)?),
        )
    }

    fn garbage(&self) -> Result<Vec<String>> {
        self.with(|c| rows(c.query("SELECT file FROM garbage", &[])?, |r| Ok(r.try_get(0)?)))
    }

    fn forget_garbage(&self, files: &[String]) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM garbage WHERE file = ANY($1)", &[&files])?;
            Ok(())
        })
    }

    fn delete_expired_sessions(&self, now_ms: i64) -> Result<usize> {
        self.with(|c| Ok(c.execute("DELETE FROM sessions WHERE expires_ms <= $1", &[&now_ms])? as usize))
    }

    fn put_activity(&self, device_id: &str, minutes: &[(i64, i64)], overwrite: bool) -> Result<()> {
        let sql = if overwrite {
            "INSERT INTO activity (device_id, minute_ms, bytes) VALUES ($1, $2, $3)
             ON CONFLICT (device_id, minute_ms) DO UPDATE SET bytes = EXCLUDED.bytes"
        } else {
            "INSERT INTO activity (device_id, minute_ms, bytes) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING"
        };
        self.tx(|tx| {
            let st = tx.prepare(sql)?;
            for (minute_ms, bytes) in minutes {
                tx.execute(&st, &[&device_id, minute_ms, bytes])?;
            }
            Ok(())
        })
    }

    fn activity_between(&self, device_id: &str, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, i64)>> {
        self.with(|c| {
            rows(
                c.query(
                    "SELECT minute_ms, bytes FROM activity WHERE device_id = $1 AND minute_ms >= $2 AND minute_ms < $3 ORDER BY minute_ms",
                    &[&device_id, &from_ms, &to_ms],
                )?,
                |r| Ok((r.try_get(0)?, r.try_get(1)?)),
            )
        })
    }

    fn captures_of_segment(&self, segment_id: i64) -> Result<Vec<FrameRow>> {
        self.with(|c| {
            rows(
                c.query("SELECT capture_ms, sha256, segment_id FROM frames WHERE segment_id = $1 ORDER BY capture_ms", &[&segment_id])?,
                frame_from_row,
            )
        })
    }

    fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<Option<Lease>> {
        self.opt(
            &format!(
                "INSERT INTO leases (name, holder, token, expires_ms) VALUES ($1, $2, nextval('lease_tokens'), {NOW_MS} + $3)
                 ON CONFLICT (name) DO UPDATE SET holder = EXCLUDED.holder, token = EXCLUDED.token, expires_ms = EXCLUDED.expires_ms
                 WHERE leases.expires_ms < {NOW_MS}
                 RETURNING token"
            ),
            &[&name, &holder, &ttl_ms],
            |r| Ok(Lease { name: name.to_string(), holder: holder.to_string(), token: r.try_get(0)? }),
        )
    }

    fn renew_lease(&self, lease: &Lease, ttl_ms: i64) -> Result<bool> {
        self.with(|c| {
            Ok(c.execute(
                &format!("UPDATE leases SET expires_ms = {NOW_MS} + $1 WHERE name = $2 AND holder = $3 AND token = $4"),
                &[&ttl_ms, &lease.name, &lease.holder, &lease.token],
            )? == 1)
        })
    }

    fn release_lease(&self, lease: &Lease) -> Result<()> {
        self.with(|c| {
            c.execute("UPDATE leases SET expires_ms = 0, holder = '' WHERE name = $1 AND holder = $2 AND token = $3", &[&lease.name, &lease.holder, &lease.token])?;
            Ok(())
        })
    }

    fn add_pending(&self, device_id: &str, capture_ms: i64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT INTO pending_frames (device_id, capture_ms, minute_ms) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                &[&device_id, &capture_ms, &crate::clock::minute_start_ms(capture_ms)],
            )?;
            Ok(())
        })
    }

    fn due_pending(&self, before_ms: i64, limit: i64) -> Result<Vec<DueMinute>> {
        self.with(|c| {
            rows(
                c.query(
                    &format!(
                        "SELECT p.device_id, p.minute_ms, MAX(p.seq) FROM pending_frames p
                         WHERE p.minute_ms < $1 AND NOT EXISTS
                             (SELECT 1 FROM leases l WHERE l.name = 'device/' || p.device_id AND l.expires_ms >= {NOW_MS})
                         GROUP BY p.device_id, p.minute_ms ORDER BY p.minute_ms, p.device_id LIMIT $2"
                    ),
                    &[&before_ms, &limit],
                )?,
                |r| Ok(DueMinute { device_id: r.try_get(0)?, minute_ms: r.try_get(1)?, max_seq: r.try_get(2)? }),
            )
        })
    }

    fn done_pending(&self, device_id: &str, minute_ms: i64, max_seq: i64) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM pending_frames WHERE device_id = $1 AND minute_ms = $2 AND seq <= $3", &[&device_id, &minute_ms, &max_seq])?;
            Ok(())
        })
    }

    fn pending_count(&self) -> Result<i64> {
        self.with(|c| Ok(c.query_one("SELECT COUNT(*) FROM pending_frames", &[])?.try_get(0)?))
    }

    fn forget_pending_before(&self, before_ms: i64) -> Result<usize> {
        self.with(|c| Ok(c.execute("DELETE FROM pending_frames WHERE capture_ms < $1", &[&before_ms])? as usize))
    }
}
