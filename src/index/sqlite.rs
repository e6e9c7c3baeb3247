//! The SQLite index (the default): WAL, synchronous=FULL, a small connection pool, migrations.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Transaction};

use super::lease::{current_fence, DueMinute, Lease};
use super::schema;
use super::{DeviceInfo, DeviceRecord, FrameRow, Index, IndexError, Init, NewSegment, Result, Segment, User, UserRecord};

/// A handle on the index file with a small pool of connections. Cheap to clone.
#[derive(Clone)]
pub struct SqliteIndex {
    path: PathBuf,
    pool: Arc<Mutex<Vec<Connection>>>,
}

const SEGMENT_COLUMNS: &str =
    "id, device_id, minute_ms, start_ms, end_ms, carry_ms, init_id, file, bytes, codec, width, height, frame_count, span_ms";

fn segment_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Segment> {
    Ok(Segment {
        id: r.get(0)?,
        device_id: r.get(1)?,
        minute_ms: r.get(2)?,
        start_ms: r.get(3)?,
        end_ms: r.get(4)?,
        carry_ms: r.get(5)?,
        init_id: r.get(6)?,
        file: r.get(7)?,
        bytes: r.get(8)?,
        codec: r.get(9)?,
        width: r.get(10)?,
        height: r.get(11)?,
        frame_count: r.get(12)?,
        span_ms: r.get(13)?,
    })
}

/// The database's clock in ms (lease expiry is judged by one clock, not each node's).
const NOW_MS: &str = "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)";

/// In a fenced commit: the lease must still carry the job's token.
fn fence_holds(tx: &Transaction<'_>, fence: &Lease) -> Result<()> {
    let token: Option<i64> = tx.query_row("SELECT token FROM leases WHERE name = ? AND holder = ?", params![fence.name, fence.holder], |r| r.get(0)).optional()?;
    if token == Some(fence.token) {
        Ok(())
    } else {
        Err(IndexError::LeaseLost(fence.name.clone()))
    }
}

fn frame_from_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<FrameRow> {
    Ok(FrameRow { capture_ms: r.get(0)?, sha256: r.get(1)?, segment_id: r.get(2)? })
}


impl SqliteIndex {
    /// Opens (creating if needed) the index and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self> {
        let index = Self { path: path.to_path_buf(), pool: Arc::default() };
        let mut conn = index.connect()?;
        migrate(&mut conn)?;
        index.pool.lock().expect("pool lock").push(conn);
        Ok(index)
    }

    fn connect(&self) -> Result<Connection> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(Duration::from_secs(10))?;
        // WAL for concurrent readers; FULL so a commit is on disk before spool files are removed.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        Ok(conn)
    }

    /// Runs `f` on a pooled connection.
    pub fn with<T>(&self, f: impl FnOnce(&mut Connection) -> Result<T>) -> Result<T> {
        let conn = self.pool.lock().expect("pool lock").pop();
        let mut conn = match conn {
            Some(c) => c,
            None => self.connect()?,
        };
        let out = f(&mut conn);
        let mut pool = self.pool.lock().expect("pool lock");
        if pool.len() < 8 {
            pool.push(conn);
        }
        out
    }

    fn tx<T>(&self, f: impl FnOnce(&Transaction<'_>) -> Result<T>) -> Result<T> {
        self.with(|c| {
            let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = f(&tx)?;
            tx.commit()?;
            Ok(out)
        })
    }
}

impl Index for SqliteIndex {
    // ---- accounts ----

    fn create_user(&self, name: &str, is_admin: bool, token_hash: &[u8], password_hash: &str, now_ms: i64) -> Result<i64> {
        self.tx(|tx| {
            if tx.query_row("SELECT 1 FROM users WHERE name = ?", [name], |_| Ok(())).optional()?.is_some() {
                return Err(IndexError::Exists(format!("user {name}")));
            }
            tx.execute(
                "INSERT INTO users (name, is_admin, token_hash, password_hash, created_ms) VALUES (?, ?, ?, ?, ?)",
                params![name, is_admin, token_hash, password_hash, now_ms],
            )?;
            Ok(tx.last_insert_rowid())
        })
    }

    fn user_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<User>> {
        self.with(|c| {
            Ok(c.query_row("SELECT id, name, is_admin FROM users WHERE token_hash = ?", [token_hash], |r| {
                Ok(User { id: r.get(0)?, name: r.get(1)?, is_admin: r.get(2)? })
            })
            .optional()?)
        })
    }

    /// The user and its password hash, for the web login.
    fn user_by_name(&self, name: &str) -> Result<Option<(User, String)>> {
        self.with(|c| {
            Ok(c.query_row("SELECT id, name, is_admin, password_hash FROM users WHERE name = ?", [name], |r| {
                Ok((User { id: r.get(0)?, name: r.get(1)?, is_admin: r.get(2)? }, r.get(3)?))
            })
            .optional()?)
        })
    }

    fn create_session(&self, token_hash: &[u8], user_id: i64, expires_ms: i64) -> Result<()> {
        self.with(|c| {
            c.execute("INSERT INTO sessions (token_hash, user_id, expires_ms) VALUES (?, ?, ?)", params![token_hash, user_id, expires_ms])?;
            Ok(())
        })
    }

    fn user_by_session(&self, token_hash: &[u8], now_ms: i64) -> Result<Option<User>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT u.id, u.name, u.is_admin FROM sessions s JOIN users u ON u.id = s.user_id
                 WHERE s.token_hash = ? AND s.expires_ms > ?",
                params![token_hash, now_ms],
                |r| Ok(User { id: r.get(0)?, name: r.get(1)?, is_admin: r.get(2)? }),
            )
            .optional()?)
        })
    }

    fn delete_session(&self, token_hash: &[u8]) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM sessions WHERE token_hash = ?", [token_hash])?;
            Ok(())
        })
    }

    fn create_device(&self, id: &str, name: &str, owner: Option<&str>, token_hash: &[u8], now_ms: i64) -> Result<()> {
        self.tx(|tx| {
            let owner_id: Option<i64> = match owner {
                None => None,
                Some(o) => Some(
                    tx.query_row("SELECT id FROM users WHERE name = ?", [o], |r| r.get(0))
                        .optional()?
                        .ok_or_else(|| IndexError::NotFound(format!("user {o}")))?,
                ),
            };
            tx.execute(
                "INSERT INTO devices (id, name, owner_id, token_hash, created_ms) VALUES (?, ?, ?, ?, ?)",
                params![id, name, owner_id, token_hash, now_ms],
            )?;
            Ok(())
        })
    }

    fn device_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<String>> {
        self.with(|c| Ok(c.query_row("SELECT id FROM devices WHERE token_hash = ?", [token_hash], |r| r.get(0)).optional()?))
    }

    /// Devices `user` may view: its own, or all for an admin.
    fn devices_visible_to(&self, user: &User) -> Result<Vec<DeviceInfo>> {
        self.with(|c| {
            let mut st = c.prepare(
                "SELECT d.id, d.name, u.name,
                        (SELECT MAX(capture_ms) FROM frames f WHERE f.device_id = d.id),
                        (SELECT COALESCE(SUM(bytes), 0) FROM segments s WHERE s.device_id = d.id),
                        (SELECT COUNT(*) FROM segments s WHERE s.device_id = d.id)
                 FROM devices d LEFT JOIN users u ON u.id = d.owner_id
                 WHERE ?1 OR d.owner_id = ?2 ORDER BY d.name, d.id",
            )?;
            let rows = st.query_map(params![user.is_admin, user.id], |r| {
                Ok(DeviceInfo {
                    id: r.get(0)?,
                    name: r.get(1)?,
                    owner: r.get(2)?,
                    last_capture_ms: r.get(3)?,
                    segment_bytes: r.get(4)?,
                    segments: r.get(5)?,
                })
            })?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn can_view(&self, user: &User, device_id: &str) -> Result<bool> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT 1 FROM devices WHERE id = ?1 AND (?2 OR owner_id = ?3)",
                params![device_id, user.is_admin, user.id],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
        })
    }

    fn device_id_by_name(&self, name: &str) -> Result<Option<String>> {
        self.with(|c| Ok(c.query_row("SELECT id FROM devices WHERE name = ? ORDER BY created_ms LIMIT 1", [name], |r| r.get(0)).optional()?))
    }

    fn accounts(&self) -> Result<(Vec<UserRecord>, Vec<DeviceRecord>)> {
        self.with(|c| {
            let mut st = c.prepare("SELECT name, is_admin, token_hash, password_hash, created_ms FROM users ORDER BY name")?;
            let users = st
                .query_map([], |r| {
                    Ok(UserRecord { name: r.get(0)?, is_admin: r.get(1)?, token_hash: r.get(2)?, password_hash: r.get(3)?, created_ms: r.get(4)? })
                })?
                .collect::<rusqlite::Result<_>>()?;
            let mut st = c.prepare(
                "SELECT d.id, d.name, u.name, d.token_hash, d.created_ms FROM devices d LEFT JOIN users u ON u.id = d.owner_id ORDER BY d.id",
            )?;
            let devices = st
                .query_map([], |r| {
                    Ok(DeviceRecord { id: r.get(0)?, name: r.get(1)?, owner: r.get(2)?, token_hash: r.get(3)?, created_ms: r.get(4)? })
                })?
                .collect::<rusqlite::Result<_>>()?;
            Ok((users, devices))
        })
    }

    fn device_ids(&self) -> Result<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT id FROM devices ORDER BY id")?;
            let rows = st.query_map([], |r| r.get(0))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    // ---- frames and segments ----

    fn frame_sha256(&self, device_id: &str, capture_ms: i64) -> Result<Option<[u8; 32]>> {
        self.with(|c| {
            Ok(c.query_row("SELECT sha256 FROM frames WHERE device_id = ? AND capture_ms = ?", params![device_id, capture_ms], |r| r.get(0))
                .optional()?)
        })
    }

    fn frames_encoded_at(&self, device_id: &str, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, i64, bool)>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT f.capture_ms, s.created_ms, s.span_ms > 60000 FROM frames f JOIN segments s ON s.id = f.segment_id
                 WHERE f.device_id = ? AND f.capture_ms >= ? AND f.capture_ms < ? ORDER BY f.capture_ms",
            )?;
            let rows = st.query_map(params![device_id, from_ms, to_ms], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Encoded captures in `[from_ms, to_ms)`, oldest first.
    fn frames_between(&self, device_id: &str, from_ms: i64, to_ms: i64) -> Result<Vec<FrameRow>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT capture_ms, sha256, segment_id FROM frames
                 WHERE device_id = ? AND capture_ms >= ? AND capture_ms < ? ORDER BY capture_ms",
            )?;
            let rows = st.query_map(params![device_id, from_ms, to_ms], frame_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// The latest encoded capture before `before_ms`.
    fn last_frame_before(&self, device_id: &str, before_ms: i64) -> Result<Option<FrameRow>> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT capture_ms, sha256, segment_id FROM frames
                 WHERE device_id = ? AND capture_ms < ? ORDER BY capture_ms DESC LIMIT 1",
                params![device_id, before_ms],
                frame_from_row,
            )
            .optional()?)
        })
    }

    fn segment(&self, id: i64) -> Result<Option<Segment>> {
        self.with(|c| {
            Ok(c.query_row(&format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE id = ?"), [id], segment_from_row).optional()?)
        })
    }

    /// The device's oldest segment that uses this init.
    fn first_segment_with_init(&self, device_id: &str, init_id: i64) -> Result<Option<Segment>> {
        self.with(|c| {
            Ok(c.query_row(
                &format!("SELECT {SEGMENT_COLUMNS} FROM segments WHERE device_id = ? AND init_id = ? ORDER BY start_ms LIMIT 1"),
                params![device_id, init_id],
                segment_from_row,
            )
            .optional()?)
        })
    }

    /// Whether one of the device's segments uses this init.
    fn device_uses_init(&self, device_id: &str, init_id: i64) -> Result<bool> {
        self.with(|c| {
            Ok(c.query_row("SELECT 1 FROM segments WHERE device_id = ? AND init_id = ? LIMIT 1", params![device_id, init_id], |_| Ok(()))
                .optional()?
                .is_some())
        })
    }

    fn init(&self, id: i64) -> Result<Option<Init>> {
        self.with(|c| {
            Ok(c.query_row("SELECT id, file, bytes FROM inits WHERE id = ?", [id], |r| {
                Ok(Init { id: r.get(0)?, file: r.get(1)?, bytes: r.get(2)? })
            })
            .optional()?)
        })
    }

    /// Segments of a device that overlap `[from_ms, to_ms)`, in time order.
    fn segments_between(&self, device_id: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Segment>> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT {SEGMENT_COLUMNS} FROM segments
                 WHERE device_id = ? AND end_ms > ? AND start_ms < ? ORDER BY start_ms"
            ))?;
            let rows = st.query_map(params![device_id, from_ms, to_ms], segment_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn all_segments(&self) -> Result<Vec<Segment>> {
        self.with(|c| {
            let mut st = c.prepare(&format!("SELECT {SEGMENT_COLUMNS} FROM segments ORDER BY device_id, start_ms"))?;
            let rows = st.query_map([], segment_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn all_inits(&self) -> Result<Vec<Init>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT id, file, bytes FROM inits ORDER BY id")?;
            let rows = st.query_map([], |r| Ok(Init { id: r.get(0)?, file: r.get(1)?, bytes: r.get(2)? }))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// The block `[start_ms, start_ms + span_ms)` a minute of a device belongs to: its compacted
    /// block if one covers it, else the minute itself.
    fn block_of(&self, device_id: &str, minute_ms: i64) -> Result<(i64, i64)> {
        self.with(|c| {
            Ok(c.query_row(
                "SELECT minute_ms, span_ms FROM segments
                 WHERE device_id = ? AND span_ms > 60000 AND minute_ms <= ? AND minute_ms + span_ms > ? LIMIT 1",
                params![device_id, minute_ms, minute_ms],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()?
            .unwrap_or((minute_ms, 60_000)))
        })
    }

    /// Per device, the oldest one-minute segment's minute that started before `before_ms`
    /// (the candidates for compaction), oldest first.
    fn uncompacted_before(&self, before_ms: i64) -> Result<Vec<(String, i64)>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT device_id, MIN(minute_ms) FROM segments WHERE span_ms = 60000 AND minute_ms < ?
                 GROUP BY device_id ORDER BY 2",
            )?;
            let rows = st.query_map([before_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    /// Replaces everything stored for one device's block `[start_ms, start_ms + span_ms)` (a
    /// minute, or a compaction span) with `new` in one transaction. The files of the replaced
    /// segments go to the garbage list (unlinked by the caller).
    /// Returns the new segment ids and the replaced segments' files.
    fn replace_block(
        &self,
        device_id: &str,
        (start_ms, span_ms): (i64, i64),
        new: &[NewSegment],
        now_ms: i64,
    ) -> Result<(Vec<i64>, Vec<String>)> {
        let fence = current_fence();
        let out = self.tx(|tx| {
            if let Some(fence) = &fence {
                fence_holds(tx, fence)?;
            }
            let old: Vec<(i64, String)> = {
                let mut st = tx.prepare("SELECT id, file FROM segments WHERE device_id = ? AND minute_ms >= ? AND minute_ms < ?")?;
                let rows = st.query_map(params![device_id, start_ms, start_ms + span_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
                rows.collect::<rusqlite::Result<_>>()?
            };
            for (id, file) in &old {
                tx.execute("DELETE FROM frames WHERE segment_id = ?", [id])?;
                tx.execute("DELETE FROM segments WHERE id = ?", [id])?;
                tx.execute("INSERT OR IGNORE INTO garbage (file) VALUES (?)", [file])?;
            }
            let mut ids = Vec::with_capacity(new.len());
            for seg in new {
                tx.execute(
                    "INSERT OR IGNORE INTO inits (sha256, file, bytes) VALUES (?, ?, ?)",
                    params![seg.init_sha256, seg.init_file, seg.init_bytes],
                )?;
                // An init that was garbage (all its segments expired) is alive again.
                tx.execute("DELETE FROM garbage WHERE file = ?", [&seg.init_file])?;
                let init_id: i64 = tx.query_row("SELECT id FROM inits WHERE sha256 = ?", [seg.init_sha256], |r| r.get(0))?;
                tx.execute(
                    "INSERT INTO segments (device_id, minute_ms, start_ms, end_ms, carry_ms, init_id, file, bytes, codec,
                                           width, height, frame_count, created_ms, span_ms)
                     VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    params![
                        device_id, start_ms, seg.start_ms, seg.end_ms, seg.carry_ms, init_id, seg.file, seg.bytes,
                        seg.codec, seg.width, seg.height, seg.frame_count, now_ms, span_ms
                    ],
                )?;
                let id = tx.last_insert_rowid();
                let mut ins = tx.prepare_cached("INSERT INTO frames (device_id, capture_ms, sha256, segment_id) VALUES (?, ?, ?, ?)")?;
                for (capture_ms, sha) in &seg.captures {
                    ins.execute(params![device_id, capture_ms, sha, id])?;
                }
                ids.push(id);
            }
            Ok((ids, old.into_iter().map(|(_, f)| f).collect()))
        });
        if let Err(IndexError::LeaseLost(_)) = &out {
            // The loser's segment blobs go with the next garbage collection (inits are shared by
            // content and stay: a row may name the same one).
            self.tx(|tx| {
                for seg in new {
                    tx.execute("INSERT OR IGNORE INTO garbage (file) VALUES (?)", [&seg.file])?;
                }
                Ok(())
            })?;
        }
        out
    }

    /// Deletes every segment that ended at or before `cutoff_ms` (rows first; files go to the
    /// garbage list), and inits no segment uses any more. Returns the files to unlink.
    fn expire_before(&self, cutoff_ms: i64) -> Result<Vec<String>> {
        self.tx(|tx| {
            tx.execute(
                "DELETE FROM frames WHERE segment_id IN (SELECT id FROM segments WHERE end_ms <= ?)",
                [cutoff_ms],
            )?;
            tx.execute("INSERT OR IGNORE INTO garbage (file) SELECT file FROM segments WHERE end_ms <= ?", [cutoff_ms])?;
            tx.execute("DELETE FROM segments WHERE end_ms <= ?", [cutoff_ms])?;
            tx.execute("DELETE FROM activity WHERE minute_ms + 60000 <= ?", [cutoff_ms])?;
            tx.execute(
                "INSERT OR IGNORE INTO garbage (file)
                 SELECT file FROM inits WHERE id NOT IN (SELECT DISTINCT init_id FROM segments)",
                [],
            )?;
            tx.execute("DELETE FROM inits WHERE id NOT IN (SELECT DISTINCT init_id FROM segments)", [])?;
            let mut st = tx.prepare("SELECT file FROM garbage")?;
            let files = st.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            Ok(files)
        })
    }

    /// The end time at or before which segments must go for the rest to fit in `max_bytes`
    /// (segments and inits together), oldest first across devices; None when they already fit.
    fn budget_cutoff(&self, max_bytes: u64) -> Result<Option<i64>> {
        self.with(|c| {
            let inits: i64 = c.query_row("SELECT COALESCE(SUM(bytes), 0) FROM inits", [], |r| r.get(0))?;
            let mut st = c.prepare("SELECT end_ms, bytes FROM segments ORDER BY end_ms DESC")?;
            let mut rows = st.query([])?;
            let mut kept = inits.max(0) as u64;
            while let Some(r) = rows.next()? {
                let (end_ms, bytes): (i64, i64) = (r.get(0)?, r.get(1)?);
                kept += bytes.max(0) as u64;
                if kept > max_bytes {
                    return Ok(Some(end_ms));
                }
            }
            Ok(None)
        })
    }

    /// Files whose rows are gone but which may still be on disk.
    fn garbage(&self) -> Result<Vec<String>> {
        self.with(|c| {
            let mut st = c.prepare("SELECT file FROM garbage")?;
            let files = st.query_map([], |r| r.get(0))?.collect::<rusqlite::Result<_>>()?;
            Ok(files)
        })
    }

    /// Forgets garbage entries whose files are gone.
    fn forget_garbage(&self, files: &[String]) -> Result<()> {
        self.tx(|tx| {
            let mut st = tx.prepare_cached("DELETE FROM garbage WHERE file = ?")?;
            for f in files {
                st.execute([f])?;
            }
            Ok(())
        })
    }

    fn delete_expired_sessions(&self, now_ms: i64) -> Result<usize> {
        self.with(|c| Ok(c.execute("DELETE FROM sessions WHERE expires_ms <= ?", [now_ms])?))
    }

    fn put_activity(&self, device_id: &str, minutes: &[(i64, i64)], overwrite: bool) -> Result<()> {
        let sql = if overwrite {
            "INSERT OR REPLACE INTO activity (device_id, minute_ms, bytes) VALUES (?, ?, ?)"
        } else {
            "INSERT OR IGNORE INTO activity (device_id, minute_ms, bytes) VALUES (?, ?, ?)"
        };
        self.tx(|tx| {
            let mut st = tx.prepare_cached(sql)?;
            for (minute_ms, bytes) in minutes {
                st.execute(params![device_id, minute_ms, bytes])?;
            }
            Ok(())
        })
    }

    fn activity_between(&self, device_id: &str, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, i64)>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT minute_ms, bytes FROM activity WHERE device_id = ? AND minute_ms >= ? AND minute_ms < ? ORDER BY minute_ms",
            )?;
            let rows = st.query_map(params![device_id, from_ms, to_ms], |r| Ok((r.get(0)?, r.get(1)?)))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn captures_of_segment(&self, segment_id: i64) -> Result<Vec<FrameRow>> {
        self.with(|c| {
            let mut st = c.prepare_cached(
                "SELECT capture_ms, sha256, segment_id FROM frames WHERE segment_id = ? ORDER BY capture_ms",
            )?;
            let rows = st.query_map([segment_id], frame_from_row)?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    // ---- sharing work (one node: every lease is granted unless this node holds it) ----

    fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<Option<Lease>> {
        self.tx(|tx| {
            let token: i64 = tx.query_row("SELECT COALESCE(MAX(token), 0) + 1 FROM leases", [], |r| r.get(0))?;
            let changed = tx.execute(
                &format!(
                    "INSERT INTO leases (name, holder, token, expires_ms) VALUES (?1, ?2, ?3, {NOW_MS} + ?4)
                     ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, token = excluded.token, expires_ms = excluded.expires_ms
                     WHERE leases.expires_ms < {NOW_MS}"
                ),
                params![name, holder, token, ttl_ms],
            )?;
            Ok((changed == 1).then(|| Lease { name: name.to_string(), holder: holder.to_string(), token }))
        })
    }

    fn renew_lease(&self, lease: &Lease, ttl_ms: i64) -> Result<bool> {
        self.with(|c| {
            Ok(c.execute(
                &format!("UPDATE leases SET expires_ms = {NOW_MS} + ? WHERE name = ? AND holder = ? AND token = ?"),
                params![ttl_ms, lease.name, lease.holder, lease.token],
            )? == 1)
        })
    }

    fn release_lease(&self, lease: &Lease) -> Result<()> {
        self.with(|c| {
            c.execute("UPDATE leases SET expires_ms = 0, holder = '' WHERE name = ? AND holder = ? AND token = ?", params![lease.name, lease.holder, lease.token])?;
            Ok(())
        })
    }

    fn add_pending(&self, device_id: &str, capture_ms: i64) -> Result<()> {
        self.with(|c| {
            c.execute(
                "INSERT OR IGNORE INTO pending_frames (device_id, capture_ms, minute_ms) VALUES (?, ?, ?)",
                params![device_id, capture_ms, crate::clock::minute_start_ms(capture_ms)],
            )?;
            Ok(())
        })
    }

    fn due_pending(&self, before_ms: i64, limit: i64) -> Result<Vec<DueMinute>> {
        self.with(|c| {
            let mut st = c.prepare_cached(&format!(
                "SELECT p.device_id, p.minute_ms, MAX(p.seq) FROM pending_frames p
                 WHERE p.minute_ms < ?1 AND NOT EXISTS
                     (SELECT 1 FROM leases l WHERE l.name = 'device/' || p.device_id AND l.expires_ms >= {NOW_MS})
                 GROUP BY p.device_id, p.minute_ms ORDER BY p.minute_ms, p.device_id LIMIT ?2"
            ))?;
            let rows = st.query_map(params![before_ms, limit], |r| Ok(DueMinute { device_id: r.get(0)?, minute_ms: r.get(1)?, max_seq: r.get(2)? }))?;
            Ok(rows.collect::<rusqlite::Result<_>>()?)
        })
    }

    fn done_pending(&self, device_id: &str, minute_ms: i64, max_seq: i64) -> Result<()> {
        self.with(|c| {
            c.execute("DELETE FROM pending_frames WHERE device_id = ? AND minute_ms = ? AND seq <= ?", params![device_id, minute_ms, max_seq])?;
            Ok(())
        })
    }

    fn pending_count(&self) -> Result<i64> {
        self.with(|c| Ok(c.query_row("SELECT COUNT(*) FROM pending_frames", [], |r| r.get(0))?))
    }

    fn forget_pending_before(&self, before_ms: i64) -> Result<usize> {
        self.with(|c| Ok(c.execute("DELETE FROM pending_frames WHERE capture_ms < ?", [before_ms])?))
    }
}

fn migrate(conn: &mut Connection) -> Result<()> {
    let version: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    let known = schema::MIGRATIONS.len() as i64;
    if version > known {
        return Err(IndexError::TooNew { found: version, known });
    }
    for (n, sql) in schema::MIGRATIONS.iter().enumerate().skip(version as usize) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", n as i64 + 1)?;
        tx.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(start_ms: i64, file: &str, captures: &[i64]) -> NewSegment {
        NewSegment {
            start_ms,
            end_ms: start_ms + 60_000,
            carry_ms: None,
            init_sha256: [7; 32],
            init_file: "init/x.mp4".into(),
            init_bytes: 10,
            file: file.into(),
            bytes: 100,
            codec: "avc1.F40028".into(),
            width: 4,
            height: 4,
            frame_count: captures.len() as i64,
            captures: captures.iter().map(|c| (*c, [1; 32])).collect(),
        }
    }

    #[test]
    fn replace_minute_and_expire_on_a_real_file() {
        let dir = tempfile::tempdir().unwrap();
        let index = SqliteIndex::open(&dir.path().join("i.sqlite3")).unwrap();
        index.create_device("d1", "laptop", None, b"hash", 0).unwrap();
        let (ids, old) = index.replace_block("d1", (60_000, 60_000), &[seg(60_000, "s/a", &[60_001, 70_000])], 1).unwrap();
        assert_eq!((ids.len(), old.len()), (1, 0));
        let (_, old) = index.replace_block("d1", (60_000, 60_000), &[seg(60_000, "s/b", &[60_001, 65_000, 70_000])], 2).unwrap();
        assert_eq!(old, vec!["s/a".to_string()], "the replaced file goes to garbage");
        assert_eq!(index.frames_between("d1", 0, i64::MAX).unwrap().len(), 3);
        assert_eq!(index.garbage().unwrap(), vec!["s/a".to_string()]);
        let files = index.expire_before(120_000).unwrap();
        assert!(files.contains(&"s/b".to_string()) && files.contains(&"init/x.mp4".to_string()));
        assert!(index.frames_between("d1", 0, i64::MAX).unwrap().is_empty());
        assert!(index.all_inits().unwrap().is_empty());
        // Reopening keeps the schema version and data.
        drop(index);
        let index = SqliteIndex::open(&dir.path().join("i.sqlite3")).unwrap();
        assert_eq!(index.device_ids().unwrap(), vec!["d1".to_string()]);
    }
}
