//! What runs when: due minutes first, compaction only in spare encoder time, one job per device
//! at a time, on worker threads at low priority. A failing or panicking job never stops the others.
//!
//! In a cluster (the index in PostgreSQL) the due minutes come from the index's pending rows as
//! well as from this node's own hints, and "one job per device at a time" holds across nodes:
//! a job runs only under the device's lease (renewed while it runs, released at its end), and
//! its commit is fenced by the lease's token (docs/scale-out-work.md).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender, TrySendError};

use super::{EncodeError, Encoder};
use crate::clock::{SharedClock, MINUTE_MS};
use crate::config::Config;
use crate::index::lease::{device_lease, fenced, node_name};
use crate::index::{IndexError, Lease, SharedIndex};
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
    /// In a cluster: the device's lease this job runs under.
    lease: Option<Lease>,
    /// In a cluster: per minute taken from the index, the newest pending row seen.
    seqs: BTreeMap<i64, i64>,
}

/// A node's part in a cluster: its name in lease rows, their length, and the leases it holds.
struct ClusterWork {
    holder: String,
    ttl_ms: i64,
    held: Mutex<HashMap<String, Lease>>,
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
    cluster: Option<ClusterWork>,
}

impl Shared {
    /// Claims a device's lease for a job (always "granted" outside a cluster).
    fn claim(&self, device_id: &str) -> Option<Option<Lease>> {
        let Some(c) = &self.cluster else { return Some(None) };
        match self.index.try_lease(&device_lease(device_id), &c.holder, c.ttl_ms) {
            Ok(Some(lease)) => {
                lock(&c.held).insert(lease.name.clone(), lease.clone());
                Some(Some(lease))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(device_id, error = %e, "cannot claim the device's lease");
                None
            }
        }
    }

    /// Lets a job's lease go (a failed release expires by itself).
    fn release(&self, lease: Option<&Lease>) {
        let (Some(c), Some(lease)) = (&self.cluster, lease) else { return };
        lock(&c.held).remove(&lease.name);
        if let Err(e) = self.index.release_lease(lease) {
            tracing::warn!(lease = %lease.name, error = %e, "cannot release a lease; it expires by itself");
        }
    }
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
        let in_cluster = pending.is_cluster();
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
            cluster: in_cluster.then(|| ClusterWork {
                holder: node_name(),
                ttl_ms: config.lease_ttl.as_millis() as i64,
                held: Mutex::default(),
            }),
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
        if shared.cluster.is_some() {
            let shared = shared.clone();
            threads.push(
                std::thread::Builder::new().name("leases".into()).spawn(move || renew_loop(&shared)).expect("spawn lease thread"),
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

    /// This node's name in lease rows (None outside a cluster).
    pub fn node(&self) -> Option<String> {
        self.shared.cluster.as_ref().map(|c| c.holder.clone())
    }

    /// In a cluster: the index's due minutes (of devices no node holds), per device, with the
    /// newest pending row seen per minute; also refreshes the cluster-wide pending count.
    fn cluster_due(&self, cutoff: i64) -> BTreeMap<String, BTreeMap<i64, i64>> {
        let mut out: BTreeMap<String, BTreeMap<i64, i64>> = BTreeMap::new();
        if self.shared.cluster.is_none() {
            return out;
        }
        match self.shared.index.pending_count() {
            Ok(n) => self.shared.pending.set_cluster_frames(usize::try_from(n).unwrap_or(0)),
            Err(e) => tracing::warn!(error = %e, "cannot count pending frames"),
        }
        match self.shared.index.due_pending(cutoff, 10_000) {
            Ok(due) => {
                for d in due {
                    out.entry(d.device_id).or_default().insert(d.minute_ms, d.max_seq);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot list due minutes"),
        }
        out
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
        let cutoff = self.due_cutoff();
        let mut from_index = self.cluster_due(cutoff);
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
        // Per device: this node's own due minutes (hints), and the index's (in a cluster).
        let mut due: BTreeMap<String, (Vec<i64>, BTreeMap<i64, i64>)> = BTreeMap::new();
        for (device_id, minutes) in pending.take_due(cutoff, &held) {
            due.entry(device_id).or_default().0 = minutes;
        }
        from_index.retain(|device_id, _| !held.contains(device_id));
        for (device_id, seqs) in from_index {
            due.entry(device_id).or_default().1 = seqs;
        }
        for (device_id, (local, seqs)) in due {
            let give_back = |minutes: &[i64]| {
                for &m in minutes {
                    pending.add_minute(&device_id, m);
                }
            };
            // Another node holds the device: its own hints wait; the index's minutes are its.
            let Some(lease) = self.shared.claim(&device_id) else {
                give_back(&local);
                continue;
            };
            let minutes: Vec<i64> = local.iter().chain(seqs.keys()).copied().collect::<BTreeSet<i64>>().into_iter().collect();
            match tx.try_send(Job { device_id: device_id.clone(), minutes, compact: None, lease, seqs }) {
                Ok(()) => {
                    held.insert(device_id.clone());
                    busy.insert(device_id);
                    queued += 1;
                }
                Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => {
                    give_back(&local);
                    self.shared.release(job.lease.as_ref());
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
                let Some(lease) = self.shared.claim(&device_id) else { continue };
                let job = Job { device_id: device_id.clone(), minutes: Vec::new(), compact: Some(block), lease, seqs: BTreeMap::new() };
                match tx.try_send(job) {
                    Ok(()) => {
                        held.insert(device_id.clone());
                        busy.insert(device_id);
                        queued += 1;
                    }
                    Err(TrySendError::Full(job) | TrySendError::Disconnected(job)) => self.shared.release(job.lease.as_ref()),
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
            // A pass may find nothing because the scheduler thread had taken the work: look again.
            // The busy lock is still held: a pass queues its jobs under it, so the scheduler
            // thread cannot take work between "nothing in hand" and "nothing due" (it did: the
            // index hides a leased device's minutes, and a job in flight looked like no work).
            if queued == 0
                && !self.shared.pending.has_due(self.due_cutoff())
                && self.cluster_due(self.due_cutoff()).is_empty()
                && self.compaction_candidates().is_empty()
            {
                return;
            }
            drop(busy);
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
            // Shutting down: leave queued work for the next start (the spool holds it) or, in a
            // cluster, for another node (the index holds it).
            shared.release(job.lease.as_ref());
            lock(&shared.busy).remove(&job.device_id);
            shared.idle.notify_all();
            continue;
        }
        let _busy = BusyGuard { shared, device_id: &job.device_id };
        let outcome = catch_unwind(AssertUnwindSafe(|| fenced(job.lease.as_ref(), || run_job(shared, &job))));
        finish_in_cluster(shared, &job, outcome.as_ref().ok());
        let failed = match outcome {
            Ok(failed_minutes) => failed_minutes.failed,
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

/// What failed in a job.
struct Failures {
    failed: bool,
    minutes: BTreeSet<i64>,
}

/// In a cluster, after a job: the index's pending rows of the minutes it encoded are done (up to
/// the newest it had seen; a capture that arrived meanwhile stays), and the lease goes.
/// A panicked job (`None`) leaves its rows for a retry.
fn finish_in_cluster(shared: &Shared, job: &Job, outcome: Option<&Failures>) {
    if shared.cluster.is_none() {
        return;
    }
    if let Some(failures) = outcome {
        for (&minute_ms, &max_seq) in &job.seqs {
            if failures.minutes.contains(&minute_ms) {
                continue;
            }
            if let Err(e) = shared.index.done_pending(&job.device_id, minute_ms, max_seq) {
                // The rows stay: the minute is encoded once more later (a replacement, not a copy).
                tracing::warn!(device_id = %job.device_id, minute_ms, error = %e, "cannot mark the minute done");
            }
        }
    }
    shared.release(job.lease.as_ref());
}

/// Renews this node's leases every third of their length until the scheduler stops.
fn renew_loop(shared: &Shared) {
    let Some(c) = &shared.cluster else { return };
    let every = Duration::from_millis((c.ttl_ms / 3).max(100) as u64);
    let mut last = Instant::now();
    while !shared.stop.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100).min(every));
        if last.elapsed() < every {
            continue;
        }
        last = Instant::now();
        let leases: Vec<Lease> = lock(&c.held).values().cloned().collect();
        for lease in leases {
            match shared.index.renew_lease(&lease, c.ttl_ms) {
                Ok(true) => {}
                // Its commit will be refused by the fence; the job's work is another node's now.
                // (Unless its job released it meanwhile: then nothing was lost and nothing is said.)
                Ok(false) if lock(&c.held).get(&lease.name).is_some_and(|held| held.token == lease.token) => {
                    tracing::warn!(lease = %lease.name, "a lease was taken over while its job ran")
                }
                Ok(false) => {}
                Err(e) => tracing::warn!(lease = %lease.name, error = %e, "cannot renew a lease"),
            }
        }
    }
}

/// Runs one job; returns what failed.
fn run_job(shared: &Shared, job: &Job) -> Failures {
    let mut failed = false;
    let mut failed_minutes = BTreeSet::new();
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
            failed = true;
            failed_minutes.insert(minute_ms);
            if matches!(e, EncodeError::Index(IndexError::LeaseLost(_))) {
                // Another node took the device over (this one stalled past its lease): the
                // minute is that node's now, and this encode's blobs are garbage.
                tracing::warn!(device_id = %job.device_id, minute_ms, "lease lost; the commit was refused");
                continue;
            }
            shared.metrics.encode_failed(JobKind::Minute, false);
            tracing::error!(device_id = %job.device_id, minute_ms, error = %e, "encode failed; will retry");
            shared.pending.add_minute(&job.device_id, minute_ms);
        }
    }
    Failures { failed, minutes: failed_minutes }
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
