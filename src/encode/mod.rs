//! Turns spooled frames into segments: the minute scheduler, the worker pool and one minute's encode.

pub mod plan;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};
use sha2::{Digest, Sha256};

use crate::clock::{SharedClock, MINUTE_MS};
use crate::config::Config;
use crate::fsutil;
use crate::index::{FrameRow, Index, NewSegment, Segment};
use crate::ingest::png::{decode_rgb, probe, PngError};
use crate::ingest::Pending;
use crate::layout::Layout;
use crate::media::ffmpeg::{decode_segment, encode_segment, EncodeSettings};
use crate::media::{MediaError, Picture};
use crate::metrics::Metrics;
use plan::{plan_block, Source};

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
    #[error("stored segment {0} does not match its index rows")]
    Inconsistent(i64),
}

/// Everything one minute's encode needs; shared by the workers.
pub struct MinuteEncoder {
    pub layout: Layout,
    pub index: Index,
    pub clock: SharedClock,
    pub pending: Arc<Pending>,
    pub metrics: Arc<Metrics>,
    pub settings: EncodeSettings,
    /// Settings of compacted (cold) segments.
    pub cold_settings: EncodeSettings,
    /// Compaction span in ms (0 = off) and the most frames in one compacted segment.
    pub compact_span_ms: i64,
    pub compact_max_frames: usize,
    pub carry_max_age_ms: i64,
    pub retention_ms: i64,
    /// How long originals stay after their (compacted, one-minute) segment is written.
    pub keep_originals_ms: (i64, i64),
    pub max_dimension: u32,
}

/// A frame's pixels: the original PNG in the spool, or a frame of a segment we wrote before.
#[derive(Debug, Clone)]
enum FrameSource {
    Spool { sha256: [u8; 32], bytes: Vec<u8>, was_encoded: bool },
    Segment { sha256: [u8; 32], segment_id: i64 },
}

impl FrameSource {
    fn sha256(&self) -> [u8; 32] {
        match self {
            FrameSource::Spool { sha256, .. } | FrameSource::Segment { sha256, .. } => *sha256,
        }
    }
}

/// What a minute's encode produced.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MinuteOutcome {
    pub segments: usize,
    pub frames: usize,
    pub new_spool_frames: usize,
}

impl MinuteEncoder {
    /// Encodes (or re-encodes) everything known for `device_id`'s minute starting at `minute_ms`:
    /// the minute itself, or the whole compacted block that holds it (a late frame).
    pub fn encode_minute(&self, device_id: &str, minute_ms: i64) -> Result<MinuteOutcome, EncodeError> {
        let block = self.index.block_of(device_id, minute_ms)?;
        self.encode_block(device_id, block)
    }

    /// Re-encodes the compaction span starting at `block_ms` into long-GOP segments.
    pub fn compact(&self, device_id: &str, block_ms: i64) -> Result<MinuteOutcome, EncodeError> {
        if self.compact_span_ms <= MINUTE_MS {
            return Ok(MinuteOutcome::default());
        }
        self.encode_block(device_id, (block_ms, self.compact_span_ms))
    }

    /// Encodes everything known for the block `[minute_ms, minute_ms + span_ms)` (a minute, or a
    /// compaction span), replaces the block's segments atomically, then removes spool files that are now safe.
    fn encode_block(&self, device_id: &str, (minute_ms, span_ms): (i64, i64)) -> Result<MinuteOutcome, EncodeError> {
        let minute_end = minute_ms + span_ms;
        let cold = span_ms > MINUTE_MS;
        let (settings, max_frames) = if cold { (&self.cold_settings, self.compact_max_frames) } else { (&self.settings, usize::MAX) };
        let spool = crate::ingest::spool_captures(&self.layout, device_id)?;
        // Nothing older than the retention window is encoded again (retention may have just
        // deleted it; a compaction or late frame must not bring it back).
        let expired_before = self.clock.now_ms() - self.retention_ms;
        let kept_from = expired_before.max(minute_ms);
        let encoded = self.index.frames_between(device_id, kept_from, minute_end)?;

        // Every capture of the minute; the original PNG wins over a decoded frame.
        let mut sources: std::collections::BTreeMap<i64, FrameSource> = encoded
            .iter()
            .map(|f| (f.capture_ms, FrameSource::Segment { sha256: f.sha256, segment_id: f.segment_id }))
            .collect();
        for &capture_ms in spool.range(kept_from..minute_end.max(kept_from)) {
            if let Some(src) = self.read_spool(device_id, capture_ms, sources.contains_key(&capture_ms))? {
                sources.insert(capture_ms, src);
            }
        }
        if sources.is_empty() {
            return Ok(MinuteOutcome::default());
        }

        // The carry candidate: the latest capture before this minute, spooled or encoded.
        let spooled_before = spool.range(..minute_ms).next_back().copied();
        let encoded_before = self.index.last_frame_before(device_id, minute_ms)?;
        let carry = match (spooled_before, encoded_before) {
            (Some(s), Some(e)) if e.capture_ms > s => Some((e.capture_ms, FrameSource::Segment { sha256: e.sha256, segment_id: e.segment_id })),
            (Some(s), _) => self.read_spool(device_id, s, true)?.map(|src| (s, src)),
            (None, Some(e)) => Some((e.capture_ms, FrameSource::Segment { sha256: e.sha256, segment_id: e.segment_id })),
            (None, None) => None,
        }
        .filter(|(capture_ms, _)| minute_ms - capture_ms <= self.carry_max_age_ms && *capture_ms >= expired_before);

        let mut pictures = PictureLoader::new(self);
        let mut captures = Vec::with_capacity(sources.len());
        // Per capture, beside `captures`: the upload's hash, and whether it is newly out of the spool.
        let mut hashes: Vec<([u8; 32], bool)> = Vec::with_capacity(sources.len());
        for (capture_ms, src) in sources {
            let hash = (src.sha256(), matches!(src, FrameSource::Spool { was_encoded: false, .. }));
            match pictures.load(device_id, capture_ms, src) {
                Ok(dims) => {
                    captures.push((capture_ms, dims));
                    hashes.push(hash);
                }
                Err(e) => {
                    // Only a spool file can be undecodable here (it was decoded at upload):
                    // keep it aside for an operator rather than deleting or looping on it.
                    tracing::error!(device_id, capture_ms, error = %e, "spool frame cannot be decoded; quarantined");
                    self.quarantine(device_id, capture_ms)?;
                }
            }
        }
        let carry = match carry {
            Some((carry_ms, src)) => pictures.load(device_id, carry_ms, src).ok().map(|dims| (carry_ms, dims)),
            None => None,
        };
        if captures.is_empty() {
            return Ok(MinuteOutcome::default());
        }

        let plan = plan_block((minute_ms, minute_end), &captures, carry, self.carry_max_age_ms, max_frames);
        let mut new_segments = Vec::with_capacity(plan.len());
        for planned in &plan {
            let fragment_index = (planned.start_ms / MINUTE_MS) as u32;
            let source_of = |source: &Source| match source {
                Source::Carry => carry.expect("planned only with a carry").0,
                Source::Capture(i) => captures[*i].0,
            };
            let pts: Vec<i64> = planned.frames.iter().map(|(pts, _)| *pts).collect();
            let dims = match planned.frames[0].1 {
                Source::Carry => carry.expect("planned only with a carry").1,
                Source::Capture(i) => captures[i].1,
            };
            let encoded = encode_segment(settings, dims, &pts, planned.end_ms, fragment_index, |i| {
                pictures.take(source_of(&planned.frames[i].1))
            });
            let encoded = match encoded {
                Ok(e) => e,
                Err(e) => {
                    // A spool file that no longer decodes (it did at upload): set it aside, retry the minute.
                    if let Some(bad) = pictures.failed.take() {
                        tracing::error!(device_id, capture_ms = bad, error = %e, "spool frame cannot be decoded; quarantined");
                        self.quarantine(device_id, bad)?;
                    }
                    return Err(e.into());
                }
            };
            let init_sha: [u8; 32] = Sha256::digest(&encoded.init).into();
            let init_rel = Layout::init_rel(&hex::encode(init_sha));
            let tmp = self.layout.tmp_dir();
            fsutil::write_new_durably(&tmp, &self.layout.resolve(&init_rel), &encoded.init)?;
            let seg_rel = Layout::segment_rel(device_id, minute_ms, rand::random());
            fsutil::write_new_durably(&tmp, &self.layout.resolve(&seg_rel), &encoded.media)?;
            let (width, height) = dims;
            new_segments.push(NewSegment {
                start_ms: planned.start_ms,
                end_ms: planned.end_ms,
                carry_ms: planned.has_carry().then(|| carry.expect("planned only with a carry").0),
                init_sha256: init_sha,
                init_file: init_rel,
                init_bytes: encoded.init.len() as i64,
                file: seg_rel,
                bytes: encoded.media.len() as i64,
                codec: encoded.codec,
                width,
                height,
                frame_count: pts.len() as i64,
                captures: planned
                    .frames
                    .iter()
                    .filter_map(|(_, s)| match s {
                        Source::Capture(i) => Some((captures[*i].0, hashes[*i].0)),
                        Source::Carry => None,
                    })
                    .collect(),
            });
        }

        // Retention may have moved on while this encoded: a segment already past the window is not committed.
        let expired_before = self.clock.now_ms() - self.retention_ms;
        let (new_segments, late): (Vec<NewSegment>, Vec<NewSegment>) = new_segments.into_iter().partition(|s| s.end_ms > expired_before);
        for seg in &late {
            fsutil::remove_if_exists(&self.layout.resolve(&seg.file))?;
        }
        // The commit point: from here the block is served from the new segments.
        let (_, replaced) = self.index.replace_block(device_id, (minute_ms, span_ms), &new_segments, self.clock.now_ms())?;
        let removed = crate::garbage::collect(&self.layout, &self.index, &replaced);
        Metrics::add(&self.metrics.files_expired, removed as u64);

        let new_spool_frames = hashes.iter().filter(|(_, newly_spooled)| *newly_spooled).count();
        self.pending.frames_encoded(new_spool_frames);
        let release = crate::ingest::Release::at(self.clock.now_ms(), self.keep_originals_ms);
        crate::ingest::release_spool(&self.layout, &self.index, device_id, release)?;
        self.recheck_next_block(device_id, minute_end, captures.last().expect("not empty").0)?;

        let outcome = MinuteOutcome { segments: new_segments.len(), frames: captures.len(), new_spool_frames };
        Metrics::add(&self.metrics.frames_encoded, plan.iter().map(|p| p.frames.len() as u64).sum());
        Metrics::add(&self.metrics.segments_written, new_segments.len() as u64);
        Metrics::add(&self.metrics.segment_bytes_written, new_segments.iter().map(|s| s.bytes as u64).sum());
        Ok(outcome)
    }

    fn read_spool(&self, device_id: &str, capture_ms: i64, was_encoded: bool) -> Result<Option<FrameSource>, EncodeError> {
        match std::fs::read(self.layout.spool_file(device_id, capture_ms)) {
            Ok(bytes) => Ok(Some(FrameSource::Spool { sha256: Sha256::digest(&bytes).into(), bytes, was_encoded })),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn quarantine(&self, device_id: &str, capture_ms: i64) -> std::io::Result<()> {
        let dir = self.layout.quarantine_dir();
        std::fs::create_dir_all(&dir)?;
        std::fs::rename(self.layout.spool_file(device_id, capture_ms), dir.join(format!("{device_id}-{capture_ms}.png")))?;
        self.pending.frames_encoded(1);
        Ok(())
    }

    /// If the block starting at `next` was encoded with a carry that is no longer the latest
    /// earlier capture (a late frame arrived), queue it for re-encoding.
    fn recheck_next_block(&self, device_id: &str, next: i64, last_capture_ms: i64) -> Result<(), EncodeError> {
        let first_next = self.index.segments_between(device_id, next, next + 1)?.into_iter().next();
        if let Some(Segment { carry_ms: Some(carry_ms), minute_ms: m, .. }) = first_next {
            if m == next && carry_ms != last_capture_ms {
                self.pending.add_minute(device_id, next);
            }
        }
        Ok(())
    }
}

/// Hands out the pictures one minute needs, one at a time: spool PNGs are decoded when the
/// encoder asks for them; a stored segment is decoded at most once, only for the frames it must give.
struct PictureLoader<'a> {
    enc: &'a MinuteEncoder,
    png: HashMap<i64, Vec<u8>>,
    decoded: HashMap<i64, Picture>,
    segments_done: BTreeSet<i64>,
    /// The spool capture whose PNG failed to decode, if any.
    failed: Option<i64>,
}

impl<'a> PictureLoader<'a> {
    fn new(enc: &'a MinuteEncoder) -> Self {
        Self { enc, png: HashMap::new(), decoded: HashMap::new(), segments_done: BTreeSet::new(), failed: None }
    }

    /// Takes a frame's source and returns its size, without decoding a spool PNG.
    fn load(&mut self, device_id: &str, capture_ms: i64, src: FrameSource) -> Result<(u32, u32), EncodeError> {
        match src {
            FrameSource::Spool { bytes, .. } => {
                let dims = probe(&bytes, self.enc.max_dimension)
                    .map_err(|e: PngError| EncodeError::Io(std::io::Error::other(e.to_string())))?;
                self.png.insert(capture_ms, bytes);
                Ok(dims)
            }
            FrameSource::Segment { segment_id, .. } => {
                self.decode_into_cache(device_id, segment_id)?;
                self.decoded.get(&capture_ms).map(|p| p.dimensions()).ok_or(EncodeError::Inconsistent(segment_id))
            }
        }
    }

    /// Decodes a stored segment and files its frames under their capture times.
    fn decode_into_cache(&mut self, device_id: &str, segment_id: i64) -> Result<(), EncodeError> {
        if !self.segments_done.insert(segment_id) {
            return Ok(());
        }
        let index = &self.enc.index;
        let seg = index.segment(segment_id)?.ok_or(EncodeError::Inconsistent(segment_id))?;
        let init = index.init(seg.init_id)?.ok_or(EncodeError::Inconsistent(segment_id))?;
        let init_bytes = std::fs::read(self.enc.layout.resolve(&init.file))?;
        let media_bytes = std::fs::read(self.enc.layout.resolve(&seg.file))?;
        let frames = decode_segment(&init_bytes, &media_bytes)?;
        let captures: Vec<FrameRow> = index
            .frames_between(device_id, seg.start_ms, seg.end_ms)?
            .into_iter()
            .filter(|f| f.segment_id == segment_id)
            .collect();
        let skip = usize::from(seg.carry_ms.is_some());
        if frames.len() != captures.len() + skip {
            return Err(EncodeError::Inconsistent(segment_id));
        }
        for (row, (_, yuv)) in captures.iter().zip(frames.into_iter().skip(skip)) {
            self.decoded.entry(row.capture_ms).or_insert(Picture::Yuv(yuv));
        }
        Ok(())
    }

    /// The picture of `capture_ms`; each is handed out once (the plan uses every capture once).
    fn take(&mut self, capture_ms: i64) -> Result<Picture, MediaError> {
        if let Some(png) = self.png.remove(&capture_ms) {
            return decode_rgb(&png, self.enc.max_dimension).map(Picture::Rgb).map_err(|e| {
                self.failed = Some(capture_ms);
                MediaError::Source(e.to_string())
            });
        }
        self.decoded.remove(&capture_ms).ok_or_else(|| MediaError::Source(format!("no picture for capture {capture_ms}")))
    }
}

/// A batch of due minutes of one device, encoded in time order by one worker, or one
/// compaction span of that device.
struct Job {
    device_id: String,
    minutes: Vec<i64>,
    compact: Option<i64>,
}

struct Shared {
    minute: MinuteEncoder,
    grace_ms: i64,
    compact_after_ms: i64,
    /// Compaction blocks that failed, and when they may be tried again.
    compact_backoff: Mutex<HashMap<(String, i64), Instant>>,
    busy: Mutex<BTreeSet<String>>,
    idle: Condvar,
    wake: Mutex<bool>,
    wake_cv: Condvar,
    stop: AtomicBool,
}

/// The running scheduler and worker threads. Dropping it without `shutdown` leaves them running.
pub struct Scheduler {
    shared: Arc<Shared>,
    tx: Mutex<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Scheduler {
    pub fn start(config: &Config, minute: MinuteEncoder) -> Arc<Self> {
        let (tx, rx) = bounded::<Job>(config.encoder.queue);
        let shared = Arc::new(Shared {
            minute,
            grace_ms: config.segment_grace.as_millis() as i64,
            compact_after_ms: config.compact.after.as_millis() as i64,
            compact_backoff: Mutex::default(),
            busy: Mutex::default(),
            idle: Condvar::new(),
            wake: Mutex::new(false),
            wake_cv: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let scheduler = Arc::new(Self { shared: shared.clone(), tx: Mutex::new(Some(tx)), threads: Mutex::default() });
        let mut threads = Vec::new();
        for n in 0..config.encoder.workers {
            let (shared, rx, me) = (shared.clone(), rx.clone(), Arc::downgrade(&scheduler));
            threads.push(
                std::thread::Builder::new()
                    .name(format!("encode-{n}"))
                    .spawn(move || worker_loop(&shared, &rx, &me))
                    .expect("spawn encoder thread"),
            );
        }
        let me = Arc::downgrade(&scheduler);
        threads.push(
            std::thread::Builder::new()
                .name("scheduler".into())
                .spawn(move || {
                    while let Some(s) = me.upgrade() {
                        if s.shared.stop.load(Ordering::SeqCst) {
                            break;
                        }
                        s.pass();
                        let shared = s.shared.clone();
                        drop(s);
                        let woken = shared.wake.lock().expect("wake lock");
                        let mut woken = shared.wake_cv.wait_timeout(woken, Duration::from_secs(1)).expect("wake lock").0;
                        *woken = false;
                    }
                })
                .expect("spawn scheduler thread"),
        );
        *scheduler.threads.lock().expect("threads lock") = threads;
        scheduler
    }

    /// Asks the scheduler to look for due minutes now rather than at its next tick.
    pub fn wake(&self) {
        *self.shared.wake.lock().expect("wake lock") = true;
        self.shared.wake_cv.notify_all();
    }

    fn due_cutoff(&self) -> i64 {
        // Minute M is due once now >= M + 60 s + grace.
        self.shared.minute.clock.now_ms() - MINUTE_MS - self.shared.grace_ms + 1
    }

    /// Per device, its oldest block due for compaction (none in backoff after a failure).
    fn compaction_candidates(&self) -> Vec<(String, i64)> {
        let span = self.shared.minute.compact_span_ms;
        if span <= MINUTE_MS {
            return Vec::new();
        }
        let candidates = match self.shared.minute.index.uncompacted_before(self.compact_cutoff()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot list compaction candidates");
                return Vec::new();
            }
        };
        let now = Instant::now();
        let mut backoff = self.shared.compact_backoff.lock().expect("backoff lock");
        backoff.retain(|_, until| *until > now);
        candidates
            .into_iter()
            .map(|(device_id, minute_ms)| (device_id, minute_ms - minute_ms.rem_euclid(span)))
            .filter(|(device_id, block)| !backoff.contains_key(&(device_id.clone(), *block)))
            .collect()
    }

    /// Blocks that start before this are due for compaction (their end is `compact_after` old).
    fn compact_cutoff(&self) -> i64 {
        let span = self.shared.minute.compact_span_ms;
        let t = self.shared.minute.clock.now_ms() - self.shared.compact_after_ms;
        t - t.rem_euclid(span.max(1))
    }

    /// Queues every due minute of every idle device; then, while the queue has room, the oldest
    /// due compaction block of each idle device. Returns how many jobs it queued.
    fn pass(&self) -> usize {
        let tx = match self.tx.lock().expect("tx lock").clone() {
            Some(tx) => tx,
            None => return 0,
        };
        let mut queued = 0;
        let mut busy = self.shared.busy.lock().expect("busy lock");
        let pending = &self.shared.minute.pending;
        for (device_id, minutes) in pending.take_due(self.due_cutoff(), &busy) {
            match tx.try_send(Job { device_id: device_id.clone(), minutes, compact: None }) {
                Ok(()) => {
                    busy.insert(device_id);
                    queued += 1;
                }
                Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                    for m in job.minutes {
                        pending.add_minute(&job.device_id, m);
                    }
                }
            }
        }
        // Compaction is background work: only into a queue at most half full, never ahead of minutes.
        let span = self.shared.minute.compact_span_ms;
        if span > MINUTE_MS && tx.len() * 2 < tx.capacity().unwrap_or(1) {
            for (device_id, block) in self.compaction_candidates() {
                if busy.contains(&device_id) || tx.len() * 2 >= tx.capacity().unwrap_or(1) {
                    continue;
                }
                if tx.try_send(Job { device_id: device_id.clone(), minutes: Vec::new(), compact: Some(block) }).is_ok() {
                    busy.insert(device_id);
                    queued += 1;
                }
            }
        }
        queued
    }

    /// Encodes everything due now and returns once it is indexed (for tests and `check`).
    /// Blocking: call from a blocking thread.
    pub fn run_due_now(&self) {
        // Bounded: a minute that keeps failing stays due (it is retried at every tick).
        for _ in 0..1000 {
            let queued = self.pass();
            let mut busy = self.shared.busy.lock().expect("busy lock");
            while !busy.is_empty() {
                busy = self.shared.idle.wait(busy).expect("busy lock");
            }
            drop(busy);
            // A pass may find nothing because the scheduler thread had taken the work: look again.
            if queued == 0 && !self.shared.minute.pending.has_due(self.due_cutoff()) && self.compaction_candidates().is_empty() {
                return;
            }
        }
    }

    /// Stops the threads after the jobs in hand; blocking.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.tx.lock().expect("tx lock").take();
        self.wake();
        let threads = std::mem::take(&mut *self.threads.lock().expect("threads lock"));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Niceness of encoder threads: acknowledging an upload is latency work, encoding is batch work,
/// so on a small box the uploads get the CPU first.
const ENCODER_NICE: i32 = 10;

fn worker_loop(shared: &Shared, rx: &Receiver<Job>, scheduler: &std::sync::Weak<Scheduler>) {
    // On Linux a thread id names the thread itself, so this lowers only this worker.
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), ENCODER_NICE) {
        tracing::debug!(error = %e, "cannot lower the encoder thread's priority");
    }
    while let Ok(job) = rx.recv() {
        let mut failed = false;
        if let Some(block_ms) = job.compact {
            let started = Instant::now();
            let result = shared.minute.compact(&job.device_id, block_ms);
            Metrics::add(&shared.minute.metrics.compact_micros, started.elapsed().as_micros() as u64);
            match result {
                Ok(outcome) => {
                    Metrics::add(&shared.minute.metrics.blocks_compacted, 1);
                    tracing::debug!(device_id = %job.device_id, block_ms, ?outcome, "block compacted");
                }
                Err(e) => {
                    Metrics::add(&shared.minute.metrics.encode_errors, 1);
                    tracing::error!(device_id = %job.device_id, block_ms, error = %e, "compaction failed; will retry in a minute");
                    let until = Instant::now() + Duration::from_secs(60);
                    shared.compact_backoff.lock().expect("backoff lock").insert((job.device_id.clone(), block_ms), until);
                    failed = true;
                }
            }
        }
        for &minute_ms in &job.minutes {
            let started = Instant::now();
            let result = shared.minute.encode_minute(&job.device_id, minute_ms);
            Metrics::add(&shared.minute.metrics.encode_micros, started.elapsed().as_micros() as u64);
            match result {
                Ok(outcome) => tracing::debug!(device_id = %job.device_id, minute_ms, ?outcome, "minute encoded"),
                Err(e) => {
                    Metrics::add(&shared.minute.metrics.encode_errors, 1);
                    tracing::error!(device_id = %job.device_id, minute_ms, error = %e, "encode failed; will retry");
                    shared.minute.pending.add_minute(&job.device_id, minute_ms);
                    failed = true;
                }
            }
        }
        let mut busy = shared.busy.lock().expect("busy lock");
        busy.remove(&job.device_id);
        shared.idle.notify_all();
        drop(busy);
        // After a failure, wait for the next tick instead of retrying at once.
        if let Some(s) = scheduler.upgrade() {
            if !failed && !shared.stop.load(Ordering::SeqCst) {
                s.wake();
            }
        }
    }
}
