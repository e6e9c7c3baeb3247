//! What runs when: due minutes first, compaction only in spare encoder time, one job per device
//! at a time, on worker threads at low priority. A failing or panicking job never stops the others.

use std::collections::{BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use super::{EncodeError, Encoder};
use crate::clock::{SharedClock, MINUTE_MS};
use crate::config::Config;
use crate::index::SharedIndex;
use crate::ingest::Pending;
use crate::metrics::{EncoderHealth, JobKind, Metrics};

/// What the workers run: the encoder in production; the scheduler's own tests use a stand-in.
pub trait JobRunner: Send + Sync {
    fn encode_minute(&self, device_id: &str, minute_ms: i64) -> Result<(), EncodeError>;
    fn compact(&self, device_id: &str, block_ms: i64) -> Result<(), EncodeError>;
}

impl JobRunner for Encoder {
    fn encode_minute(&self, device_id: &str, minute_ms: i64) -> Result<(), EncodeError> {
        let outcome = Encoder::encode_minute(self, device_id, minute_ms)?;
        tracing::debug!(device_id, minute_ms, ?outcome, "minute encoded");
        Ok(())
    }
    fn compact(&self, device_id: &str, block_ms: i64) -> Result<(), EncodeError> {
        let outcome = Encoder::compact(self, device_id, block_ms)?;
        tracing::debug!(device_id, block_ms, ?outcome, "block compacted");
        Ok(())
    }
}

/// A batch of due minutes of one device, encoded in time order by one worker, or one
/// compaction block of that device.
struct Job {
    device_id: String,
    minutes: Vec<i64>,
    compact: Option<i64>,
}

/// How long a block whose compaction failed, or a device whose job panicked, waits before it is tried again.
const RETRY_AFTER: Duration = Duration::from_secs(60);

struct Shared {
    runner: Arc<dyn JobRunner>,
    pending: Arc<Pending>,
    index: SharedIndex,
    clock: SharedClock,
    metrics: Arc<Metrics>,
    grace_ms: i64,
    compact_span_ms: i64,
    compact_after_ms: i64,
    /// Compaction blocks that failed, when they may be tried again, and how often they failed in a row.
    compact_backoff: Mutex<HashMap<(String, i64), (Instant, u32)>>,
    /// Devices whose job panicked, and when they may run again.
    device_backoff: Mutex<HashMap<String, Instant>>,
    busy: Mutex<BTreeSet<String>>,
    idle: Condvar,
    stop: AtomicBool,
}

/// Locks a scheduler lock. The data behind each is consistent at every step and a panicking job
/// never holds one (jobs run outside them), so a poisoned lock is recovered, not propagated.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Takes a device out of the busy set when its job ends, however it ends.
struct BusyGuard<'a> {
    shared: &'a Shared,
    device_id: &'a str,
}

impl Drop for BusyGuard<'_> {
    fn drop(&mut self) {
        lock(&self.shared.busy).remove(self.device_id);
        self.shared.idle.notify_all();
    }
}

/// The running scheduler and worker threads. Dropping it without `shutdown` leaves them running.
pub struct Scheduler {
    shared: Arc<Shared>,
    tx: Mutex<Option<Sender<Job>>>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl Scheduler {
    pub fn start(
        config: &Config,
        runner: Arc<dyn JobRunner>,
        pending: Arc<Pending>,
        index: SharedIndex,
        clock: SharedClock,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        let (tx, rx) = bounded::<Job>(config.encoder.queue);
        let shared = Arc::new(Shared {
            runner,
            pending,
            index,
            clock,
            metrics,
            grace_ms: config.segment_grace.as_millis() as i64,
            compact_span_ms: if config.compact.enabled() { config.compact.span.as_millis() as i64 } else { 0 },
            compact_after_ms: config.compact.after.as_millis() as i64,
            compact_backoff: Mutex::default(),
            device_backoff: Mutex::default(),
            busy: Mutex::default(),
            idle: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let scheduler = Arc::new(Self { shared: shared.clone(), tx: Mutex::new(Some(tx)), threads: Mutex::default() });
        let mut threads = Vec::new();
        for n in 0..config.encoder.workers {
            let (shared, rx) = (shared.clone(), rx.clone());
            threads.push(
                std::thread::Builder::new()
                    .name(format!("encode-{n}"))
                    .spawn(move || worker_loop(&shared, &rx))
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
                        let pending = s.shared.pending.clone();
                        drop(s);
                        pending.wait_for_work(Duration::from_secs(1));
                    }
                })
                .expect("spawn scheduler thread"),
        );
        *lock(&scheduler.threads) = threads;
        scheduler
    }

    /// Asks the scheduler to look for due work now rather than at its next tick.
    pub fn wake(&self) {
        self.shared.pending.notify();
    }

    /// Failing compactions and held-back devices, for /healthz and /metrics.
    pub fn health(&self) -> EncoderHealth {
        let now = Instant::now();
        let backoff = lock(&self.shared.compact_backoff);
        EncoderHealth {
            failing_compactions: backoff.len(),
            worst_compaction_streak: backoff.values().map(|(_, n)| *n).max().unwrap_or(0),
            devices_in_backoff: lock(&self.shared.device_backoff).values().filter(|until| **until > now).count(),
        }
    }

    fn due_cutoff(&self) -> i64 {
        // Minute M is due once now >= M + 60 s + grace.
        self.shared.clock.now_ms() - MINUTE_MS - self.shared.grace_ms + 1
    }

    /// Per device, its oldest block due for compaction (none waiting after a failure).
    fn compaction_candidates(&self) -> Vec<(String, i64)> {
        let span = self.shared.compact_span_ms;
        if span <= MINUTE_MS {
            return Vec::new();
        }
        let candidates = match self.shared.index.uncompacted_before(self.compact_cutoff()) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot list compaction candidates");
                return Vec::new();
            }
        };
        let now = Instant::now();
        let backoff = lock(&self.shared.compact_backoff);
        candidates
            .into_iter()
            .map(|(device_id, minute_ms)| (device_id, minute_ms - minute_ms.rem_euclid(span)))
            .filter(|key| backoff.get(key).is_none_or(|(until, _)| *until <= now))
            .collect()
    }

    /// Blocks that start before this are due for compaction (their end is `compact_after` old).
    fn compact_cutoff(&self) -> i64 {
        let span = self.shared.compact_span_ms;
        let t = self.shared.clock.now_ms() - self.shared.compact_after_ms;
        t - t.rem_euclid(span.max(1))
    }

    /// Queues every due minute of every idle device; then, while the queue has room, the oldest
    /// due compaction block of each idle device. Returns how many jobs it queued.
    fn pass(&self) -> usize {
        let Some(tx) = lock(&self.tx).clone() else { return 0 };
        let mut queued = 0;
        let mut busy = lock(&self.shared.busy);
        // Devices held back after a panic count as busy until their time is up.
        let now = Instant::now();
        let mut held: BTreeSet<String> = busy.clone();
        lock(&self.shared.device_backoff).retain(|device, until| {
            let waiting = *until > now;
            if waiting {
                held.insert(device.clone());
            }
            waiting
        });
        let pending = &self.shared.pending;
        for (device_id, minutes) in pending.take_due(self.due_cutoff(), &held) {
            match tx.try_send(Job { device_id: device_id.clone(), minutes, compact: None }) {
                Ok(()) => {
                    held.insert(device_id.clone());
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
        let span = self.shared.compact_span_ms;
        if span > MINUTE_MS && tx.len() * 2 < tx.capacity().unwrap_or(1) {
            for (device_id, block) in self.compaction_candidates() {
                if held.contains(&device_id) || tx.len() * 2 >= tx.capacity().unwrap_or(1) {
                    continue;
                }
                if tx.try_send(Job { device_id: device_id.clone(), minutes: Vec::new(), compact: Some(block) }).is_ok() {
                    held.insert(device_id.clone());
                    busy.insert(device_id);
                    queued += 1;
                }
            }
        }
        queued
    }

    /// Encodes everything due now and returns once it is indexed (for tests, the benchmark and
    /// `check`). Blocking: call from a blocking thread.
    pub fn run_due_now(&self) {
        // Bounded: a minute that keeps failing stays due (it is retried at every tick).
        for _ in 0..1000 {
            let queued = self.pass();
            let mut busy = lock(&self.shared.busy);
            while !busy.is_empty() {
                busy = self.shared.idle.wait(busy).unwrap_or_else(PoisonError::into_inner);
            }
            drop(busy);
            // A pass may find nothing because the scheduler thread had taken the work: look again.
            if queued == 0 && !self.shared.pending.has_due(self.due_cutoff()) && self.compaction_candidates().is_empty() {
                return;
            }
        }
    }

    /// Stops taking work, lets the workers finish the jobs in hand, and joins the threads.
    /// Jobs still queued are dropped: their frames stay in the spool and are found again at
    /// the next start. Blocking.
    pub fn shutdown(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        lock(&self.tx).take();
        self.wake();
        let threads = std::mem::take(&mut *lock(&self.threads));
        for t in threads {
            let _ = t.join();
        }
    }
}

/// Niceness of encoder threads: acknowledging an upload is latency work, encoding is batch work,
/// so on a small box the uploads get the CPU first.
const ENCODER_NICE: i32 = 10;

fn worker_loop(shared: &Shared, rx: &Receiver<Job>) {
    // On Linux a thread id names the thread itself, so this lowers only this worker.
    if let Err(e) = rustix::process::setpriority_process(Some(rustix::thread::gettid()), ENCODER_NICE) {
        tracing::debug!(error = %e, "cannot lower the encoder thread's priority");
    }
    while let Ok(job) = rx.recv() {
        if shared.stop.load(Ordering::SeqCst) {
            // Shutting down: leave queued work for the next start (the spool holds it).
            lock(&shared.busy).remove(&job.device_id);
            shared.idle.notify_all();
            continue;
        }
        let _busy = BusyGuard { shared, device_id: &job.device_id };
        let failed = match catch_unwind(AssertUnwindSafe(|| run_job(shared, &job))) {
            Ok(failed) => failed,
            Err(panic) => {
                let what = panic
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| panic.downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let kind = if job.compact.is_some() { JobKind::Compaction } else { JobKind::Minute };
                shared.metrics.encode_failed(kind, true);
                tracing::error!(device_id = %job.device_id, panic = %what, "an encode job panicked; the device waits a minute, others go on");
                lock(&shared.device_backoff).insert(job.device_id.clone(), Instant::now() + RETRY_AFTER);
                for &m in &job.minutes {
                    shared.pending.add_minute(&job.device_id, m);
                }
                true
            }
        };
        drop(_busy);
        // After a failure, wait for the next tick instead of retrying at once.
        if !failed && !shared.stop.load(Ordering::SeqCst) {
            shared.pending.notify();
        }
    }
}

/// Runs one job; returns whether anything failed.
fn run_job(shared: &Shared, job: &Job) -> bool {
    let mut failed = false;
    if let Some(block_ms) = job.compact {
        let started = Instant::now();
        let result = shared.runner.compact(&job.device_id, block_ms);
        shared.metrics.compact_seconds.observe(started.elapsed().as_secs_f64());
        let key = (job.device_id.clone(), block_ms);
        match result {
            Ok(()) => {
                shared.metrics.blocks_compacted.inc();
                lock(&shared.compact_backoff).remove(&key);
            }
            Err(e) => {
                shared.metrics.encode_failed(JobKind::Compaction, false);
                let mut backoff = lock(&shared.compact_backoff);
                let streak = backoff.get(&key).map_or(0, |(_, n)| *n) + 1;
                tracing::error!(device_id = %job.device_id, block_ms, streak, error = %e, "compaction failed; will retry in a minute");
                backoff.insert(key, (Instant::now() + RETRY_AFTER, streak));
                failed = true;
            }
        }
    }
    for &minute_ms in &job.minutes {
        let started = Instant::now();
        let result = shared.runner.encode_minute(&job.device_id, minute_ms);
        shared.metrics.encode_seconds.observe(started.elapsed().as_secs_f64());
        if let Err(e) = result {
            shared.metrics.encode_failed(JobKind::Minute, false);
            tracing::error!(device_id = %job.device_id, minute_ms, error = %e, "encode failed; will retry");
            shared.pending.add_minute(&job.device_id, minute_ms);
            failed = true;
        }
    }
    failed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    /// Records what ran; panics on one device's jobs.
    #[derive(Default)]
    struct Runner {
        ran: Mutex<Vec<(String, i64)>>,
    }

    impl JobRunner for Runner {
        fn encode_minute(&self, device_id: &str, minute_ms: i64) -> Result<(), EncodeError> {
            if device_id == "bad" {
                panic!("a bug in an encode");
            }
            lock(&self.ran).push((device_id.to_string(), minute_ms));
            Ok(())
        }
        fn compact(&self, device_id: &str, _: i64) -> Result<(), EncodeError> {
            if device_id == "bad" {
                return Err(EncodeError::Inconsistent(7));
            }
            Ok(())
        }
    }

    fn scheduler(config: &Config, clock: Arc<ManualClock>) -> (tempfile::TempDir, Arc<Scheduler>, Arc<Pending>, Arc<Metrics>, Arc<Runner>, SharedIndex) {
        let dir = tempfile::tempdir().unwrap();
        let index = crate::index::open_sqlite(&dir.path().join("i.sqlite3")).unwrap();
        let (pending, metrics, runner) = (Arc::new(Pending::default()), Arc::new(Metrics::new()), Arc::new(Runner::default()));
        let scheduler = Scheduler::start(config, runner.clone(), pending.clone(), index.clone(), clock, metrics.clone());
        (dir, scheduler, pending, metrics, runner, index)
    }

    /// A compaction that keeps failing shows in /metrics and in the health detail, and waits a
    /// minute between tries instead of spinning.
    #[test]
    fn a_failing_compaction_is_counted_shown_and_backed_off() {
        let mut config = Config::default();
        config.encoder.workers = 1;
        let clock = ManualClock::new(100 * MINUTE_MS);
        let (_dir, scheduler, _pending, metrics, _runner, index) = scheduler(&config, clock);
        // One one-minute segment of device "bad", long due for compaction.
        index.create_device("bad", "bad", None, b"h", 0).unwrap();
        let seg = crate::index::NewSegment {
            start_ms: MINUTE_MS,
            end_ms: 2 * MINUTE_MS,
            carry_ms: None,
            init_sha256: [1; 32],
            init_file: "init/x.mp4".into(),
            init_bytes: 1,
            file: "segments/bad/1.m4s".into(),
            bytes: 1,
            codec: "avc1.F40028".into(),
            width: 16,
            height: 16,
            frame_count: 1,
            captures: vec![(MINUTE_MS + 5, [2; 32])],
        };
        index.replace_block("bad", (MINUTE_MS, MINUTE_MS), &[seg], 0).unwrap();
        scheduler.run_due_now();
        scheduler.run_due_now();
        let health = scheduler.health();
        assert_eq!((health.failing_compactions, health.worst_compaction_streak), (1, 1), "tried once, then waits: {health:?}");
        assert!(health.is_degraded());
        assert!(metrics.render(0).contains("screentape_encode_failures_total{job=\"compaction\",cause=\"error\"} 1"));
        scheduler.shutdown();
    }

    /// Regression: a panic in an encode job left the device `busy` forever and poisoned the
    /// scheduler's locks, so nothing was encoded any more.
    #[test]
    fn a_panicking_job_is_counted_and_every_other_device_keeps_being_served() {
        let mut config = Config::default();
        config.encoder.workers = 1;
        config.compact.span = Duration::ZERO;
        let (_dir, scheduler, pending, metrics, runner, _) = scheduler(&config, ManualClock::new(10 * MINUTE_MS));
        pending.add("bad", MINUTE_MS + 5);
        pending.add("good", MINUTE_MS + 7);
        scheduler.run_due_now();
        pending.add("good", 2 * MINUTE_MS + 7);
        scheduler.run_due_now();
        assert_eq!(*lock(&runner.ran), vec![("good".to_string(), MINUTE_MS), ("good".to_string(), 2 * MINUTE_MS)]);
        assert!(lock(&scheduler.shared.busy).is_empty(), "no device is left busy");
        assert_eq!(scheduler.health().devices_in_backoff, 1);
        assert!(metrics.render(0).contains("screentape_encode_failures_total{job=\"minute\",cause=\"panic\"} 1"), "{}", metrics.render(0));
        scheduler.shutdown();
    }
}
