//! The row seam: accounts, segments, encoded captures and the garbage list, as one trait.
//! Knows nothing of HTTP, blobs or ffmpeg; sqlite.rs is today's implementation.

pub mod lease;
mod postgres;
mod schema;
mod sqlite;

pub use lease::{DueMinute, Lease};
pub use postgres::PostgresIndex;
pub use sqlite::SqliteIndex;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("sqlite: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("postgres: {0}")]
    Postgres(String),
    #[error("the index was written by a newer screentape (schema {found}, this build knows {known})")]
    TooNew { found: i64, known: i64 },
    #[error("{0} already exists")]
    Exists(String),
    #[error("{0} not found")]
    NotFound(String),
    /// The database cannot be reached (down, restarting, connection lost): retry later.
    #[error("the index is unavailable: {0}")]
    Unavailable(String),
    /// A fenced commit found its lease taken over by another node: nothing was committed.
    #[error("lease {0} was taken over by another node; the commit was refused")]
    LeaseLost(String),
}

pub type Result<T> = std::result::Result<T, IndexError>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: i64,
    pub name: String,
    pub is_admin: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DeviceInfo {
    pub id: String,
    pub name: String,
    pub owner: Option<String>,
    pub last_capture_ms: Option<i64>,
    pub segment_bytes: i64,
    pub segments: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Segment {
    pub id: i64,
    pub device_id: String,
    pub minute_ms: i64,
    pub start_ms: i64,
    pub end_ms: i64,
    pub carry_ms: Option<i64>,
    pub init_id: i64,
    pub file: String,
    pub bytes: i64,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub frame_count: i64,
    /// Length of the block this segment was encoded in (one minute until compacted).
    pub span_ms: i64,
}

/// One frame of a stored segment: when it is presented, and which capture it shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameTime {
    pub pts_ms: i64,
    /// None for the carry: the device's latest earlier capture, repeated at the segment's start.
    pub capture_ms: Option<i64>,
}

impl Segment {
    /// The frames of this segment in decode order, given its captures (oldest first, from
    /// `Index::captures_of_segment`): the carry if it has one, presented from the segment's
    /// start, then every capture at its own time; without a carry the first capture is
    /// presented from the segment's start. The one place this mapping is written down.
    pub fn frame_times(&self, captures: impl IntoIterator<Item = i64>) -> Vec<FrameTime> {
        let mut out: Vec<FrameTime> = self.carry_ms.map(|_| FrameTime { pts_ms: self.start_ms, capture_ms: None }).into_iter().collect();
        for (i, capture_ms) in captures.into_iter().enumerate() {
            let pts_ms = if i == 0 && self.carry_ms.is_none() { self.start_ms } else { capture_ms };
            out.push(FrameTime { pts_ms, capture_ms: Some(capture_ms) });
        }
        out
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Init {
    pub id: i64,
    pub file: String,
    pub bytes: i64,
}

/// A segment to insert for a minute, with the captures it holds.
#[derive(Debug, Clone)]
pub struct NewSegment {
    pub start_ms: i64,
    pub end_ms: i64,
    pub carry_ms: Option<i64>,
    pub init_sha256: [u8; 32],
    pub init_file: String,
    pub init_bytes: i64,
    pub file: String,
    pub bytes: i64,
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub frame_count: i64,
    /// (capture_ms, sha256 of the uploaded PNG)
    pub captures: Vec<(i64, [u8; 32])>,
}

/// A user as stored, secrets as their hashes (for copying an index: `import-data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    pub name: String,
    pub is_admin: bool,
    pub token_hash: Vec<u8>,
    pub password_hash: String,
    pub created_ms: i64,
}

/// A device as stored, its token as its hash (for copying an index: `import-data`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceRecord {
    pub id: String,
    pub name: String,
    pub owner: Option<String>,
    pub token_hash: Vec<u8>,
    pub created_ms: i64,
}

/// An encoded capture.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRow {
    pub capture_ms: i64,
    pub sha256: [u8; 32],
    pub segment_id: i64,
}


/// The row seam: accounts, segments, encoded captures and the garbage list.
/// Implementations: SQLite (the default). Every method blocks: call from a blocking thread.
/// Each method is one transaction; none spans two calls.
pub trait Index: Send + Sync {
    fn create_user(&self, name: &str, is_admin: bool, token_hash: &[u8], password_hash: &str, now_ms: i64) -> Result<i64>;
    fn user_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<User>>;
    /// The user and its password hash, for the web login.
    fn user_by_name(&self, name: &str) -> Result<Option<(User, String)>>;
    fn create_session(&self, token_hash: &[u8], user_id: i64, expires_ms: i64) -> Result<()>;
    fn user_by_session(&self, token_hash: &[u8], now_ms: i64) -> Result<Option<User>>;
    fn delete_session(&self, token_hash: &[u8]) -> Result<()>;
    fn create_device(&self, id: &str, name: &str, owner: Option<&str>, token_hash: &[u8], now_ms: i64) -> Result<()>;
    fn device_by_token_hash(&self, token_hash: &[u8]) -> Result<Option<String>>;
    /// Devices `user` may view: its own, or all for an admin.
    fn devices_visible_to(&self, user: &User) -> Result<Vec<DeviceInfo>>;
    fn can_view(&self, user: &User, device_id: &str) -> Result<bool>;
    fn device_id_by_name(&self, name: &str) -> Result<Option<String>>;
    fn device_ids(&self) -> Result<Vec<String>>;
    fn frame_sha256(&self, device_id: &str, capture_ms: i64) -> Result<Option<[u8; 32]>>;
    /// Encoded captures in `[from_ms, to_ms)`, oldest first, each with when its segment was
    /// written and whether that is a compacted one: `(capture_ms, written_ms, compacted)`.
    /// One query for a whole spool listing (releasing originals, start-up recovery).
    fn frames_encoded_at(&self, device_id: &str, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, i64, bool)>>;
    /// Encoded captures in `[from_ms, to_ms)`, oldest first.
    fn frames_between(&self, device_id: &str, from_ms: i64, to_ms: i64) -> Result<Vec<FrameRow>>;
    /// The latest encoded capture before `before_ms`.
    fn last_frame_before(&self, device_id: &str, before_ms: i64) -> Result<Option<FrameRow>>;
    fn segment(&self, id: i64) -> Result<Option<Segment>>;
    /// The device's oldest segment that uses this init.
    fn first_segment_with_init(&self, device_id: &str, init_id: i64) -> Result<Option<Segment>>;
    /// Whether one of the device's segments uses this init.
    fn device_uses_init(&self, device_id: &str, init_id: i64) -> Result<bool>;
    fn init(&self, id: i64) -> Result<Option<Init>>;
    /// Segments of a device that overlap `[from_ms, to_ms)`, in time order.
    fn segments_between(&self, device_id: &str, from_ms: i64, to_ms: i64) -> Result<Vec<Segment>>;
    fn all_segments(&self) -> Result<Vec<Segment>>;
    fn all_inits(&self) -> Result<Vec<Init>>;
    /// The block `[start_ms, start_ms + span_ms)` a minute of a device belongs to: its compacted
    /// block if one covers it, else the minute itself.
    fn block_of(&self, device_id: &str, minute_ms: i64) -> Result<(i64, i64)>;
    /// Per device, the oldest one-minute segment's minute that started before `before_ms`
    /// (the candidates for compaction), oldest first.
    fn uncompacted_before(&self, before_ms: i64) -> Result<Vec<(String, i64)>>;
    /// Replaces everything stored for one device's block `[start_ms, start_ms + span_ms)` (a
    /// minute, or a compaction span) with `new` in one transaction. The files of the replaced
    /// segments go to the garbage list (unlinked by the caller).
    /// Returns the new segment ids and the replaced segments' files.
    fn replace_block(&self, device_id: &str, block: (i64, i64), new: &[NewSegment], now_ms: i64) -> Result<(Vec<i64>, Vec<String>)>;
    /// Deletes every segment that ended at or before `cutoff_ms` (rows first; files go to the
    /// garbage list), and inits no segment uses any more. Returns the files to unlink.
    fn expire_before(&self, cutoff_ms: i64) -> Result<Vec<String>>;
    /// The end time at or before which segments must go for the rest to fit in `max_bytes`
    /// (segments and inits together), oldest first across devices; None when they already fit.
    fn budget_cutoff(&self, max_bytes: u64) -> Result<Option<i64>>;
    /// Files whose rows are gone but which may still be on disk.
    fn garbage(&self) -> Result<Vec<String>>;
    /// Forgets garbage entries whose files are gone.
    fn forget_garbage(&self, files: &[String]) -> Result<()>;
    fn delete_expired_sessions(&self, now_ms: i64) -> Result<usize>;
    /// Records how much the screen changed in some minutes of a device (bytes of inter frames per
    /// minute start); `overwrite` false keeps values already there (a compaction keeps the
    /// one-minute encode's measure). Values expire with `expire_before`.
    fn put_activity(&self, device_id: &str, minutes: &[(i64, i64)], overwrite: bool) -> Result<()>;
    /// (minute start, bytes) of the device's minutes starting in `[from_ms, to_ms)`, oldest first.
    fn activity_between(&self, device_id: &str, from_ms: i64, to_ms: i64) -> Result<Vec<(i64, i64)>>;
    /// The captures stored in one segment, oldest first.
    fn captures_of_segment(&self, segment_id: i64) -> Result<Vec<FrameRow>>;

    // ---- sharing work between nodes (lease.rs); a single SQLite node gets the same answers ----

    /// Claims lease `name` for `ttl_ms` if nobody holds it or its holder let it expire; the
    /// database's clock decides. Returns the lease with a new, larger token, or None.
    fn try_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> Result<Option<Lease>>;
    /// Extends a held lease; false when it was taken over (its token changed).
    fn renew_lease(&self, lease: &Lease, ttl_ms: i64) -> Result<bool>;
    /// Lets a lease go at once (its row and token stay, so tokens only grow).
    fn release_lease(&self, lease: &Lease) -> Result<()>;
    /// Records an acknowledged capture as waiting for its minute's encode (cluster mode: every
    /// node finds it here). Idempotent.
    fn add_pending(&self, device_id: &str, capture_ms: i64) -> Result<()>;
    /// Minutes that started before `before_ms` with pending captures, of devices whose lease
    /// nobody holds, oldest first, at most `limit`.
    fn due_pending(&self, before_ms: i64, limit: i64) -> Result<Vec<DueMinute>>;
    /// The minute's pending rows up to `max_seq` are encoded (or set aside): forget them.
    fn done_pending(&self, device_id: &str, minute_ms: i64, max_seq: i64) -> Result<()>;
    /// How many captures wait for an encode, cluster-wide.
    fn pending_count(&self) -> Result<i64>;
    /// Forgets pending captures older than `before_ms` (past the retention window).
    fn forget_pending_before(&self, before_ms: i64) -> Result<usize>;
    /// Every user and device with their hashes, by name / id (the copy tool, `import-data`).
    fn accounts(&self) -> Result<(Vec<UserRecord>, Vec<DeviceRecord>)>;
}

pub type SharedIndex = std::sync::Arc<dyn Index>;

/// Connects to the PostgreSQL index at `url` and brings its schema up to date.
pub fn open_postgres(url: &str) -> Result<SharedIndex> {
    Ok(std::sync::Arc::new(postgres::PostgresIndex::open(url)?))
}

/// Opens (creating if needed) the SQLite index at `path` and brings its schema up to date.
pub fn open_sqlite(path: &std::path::Path) -> Result<SharedIndex> {
    Ok(std::sync::Arc::new(sqlite::SqliteIndex::open(path)?))
}
