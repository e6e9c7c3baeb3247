//! Wiring: open the index, recover the spool, start the encoder and retention threads, serve HTTP.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::encode::{MinuteEncoder, Scheduler};
use crate::index::Index;
use crate::ingest::{Ingest, Pending};
use crate::layout::Layout;
use crate::media::ffmpeg::EncodeSettings;
use crate::metrics::Metrics;
use crate::retention::{Retention, Sweep};

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot prepare data dir {path}: {source}")]
    DataDir { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
}

/// The running product: everything a request handler or a test needs.
pub struct App {
    pub config: Config,
    pub layout: Layout,
    pub index: Index,
    pub clock: SharedClock,
    pub pending: Arc<Pending>,
    pub ingest: Ingest,
    pub scheduler: Arc<Scheduler>,
    pub metrics: Arc<Metrics>,
    /// Uploads being read and stored at once. Bounds memory (bodies, decode buffers, blocking
    /// threads); an upload that waits too long for a slot gets 503.
    pub upload_slots: Arc<tokio::sync::Semaphore>,
    /// Timeline previews by segment id.
    pub thumbs: ThumbCache,
    /// Failed web logins per client and user name, for rate limiting; the password-check slots.
    pub login_failures: crate::http::LoginLimiter,
    /// The 4:2:0 variant, transcoded on demand.
    pub variants: crate::variant::Variants,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

impl App {
    /// Opens the data dir, recovers from whatever state a crash left, and starts the background threads.
    /// Blocking.
    pub fn open(config: Config, clock: SharedClock) -> Result<Arc<Self>, AppError> {
        crate::media::ffmpeg::init_libav();
        let layout = Layout::new(&config.data_dir);
        for dir in [layout.root().to_path_buf(), layout.spool_root(), layout.tmp_dir(), layout.segments_root(), layout.init_root()] {
            std::fs::create_dir_all(&dir).map_err(|source| AppError::DataDir { path: dir.clone(), source })?;
        }
        let index = Index::open(&layout.index())?;
        let report = crate::check::check(&layout, &index, true)?;
        if !report.orphan_files.is_empty() || !report.missing_files.is_empty() {
            tracing::warn!(orphans = report.orphan_files.len(), missing = ?report.missing_files, "start-up check repaired the data dir");
        }
        let pending = Arc::new(Pending::default());
        let expired_before_ms = clock.now_ms() - config.retention.as_millis() as i64;
        let recovered = recover_spool(&layout, &index, &pending, expired_before_ms)?;
        tracing::info!(recovered, "spool recovered");

        let metrics = Arc::new(Metrics::default());
        let minute = MinuteEncoder {
            layout: layout.clone(),
            index: index.clone(),
            clock: clock.clone(),
            pending: pending.clone(),
            metrics: metrics.clone(),
            settings: EncodeSettings {
                crf: config.encoder.crf,
                preset: config.encoder.preset.clone(),
                threads: config.encoder.x264_threads,
                params: config.encoder.x264_params.clone(),
                chroma420: false,
                codec: crate::media::ffmpeg::Codec::X264,
            },
            cold_settings: EncodeSettings {
                crf: config.compact.crf,
                preset: config.compact.preset.clone(),
                threads: config.encoder.x264_threads,
                params: config.compact.x264_params.clone(),
                chroma420: false,
                codec: config.compact.codec,
            },
            compact_span_ms: config.compact.span.as_millis() as i64,
            compact_max_frames: config.compact.max_frames,
            retention_ms: config.retention.as_millis() as i64,
            carry_max_age_ms: config.carry_max_age.as_millis() as i64,
            keep_originals_ms: crate::ingest::keep_windows(&config),
            max_dimension: config.max_dimension,
        };
        let scheduler = Scheduler::start(&config, minute);
        let ingest = Ingest::new(&config, layout.clone(), index.clone(), clock.clone(), pending.clone());
        let stop = Arc::new(AtomicBool::new(false));
        let retention = Retention::new(&config, clock.clone(), layout.clone(), index.clone(), metrics.clone());
        let stop2 = stop.clone();
        let retention_thread = std::thread::Builder::new()
            .name("retention".into())
            .spawn(move || retention.run(Duration::from_secs(15), stop2))
            .expect("spawn retention thread");
        let variants = crate::variant::Variants::new(layout.clone(), index.clone(), config.encoder.crf, config.variant_cache_bytes);
        Ok(Arc::new(Self {
            config,
            layout,
            index,
            clock,
            pending,
            ingest,
            scheduler,
            metrics,
            upload_slots: Arc::new(tokio::sync::Semaphore::new(
                2 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            )),
            thumbs: ThumbCache::default(),
            login_failures: crate::http::LoginLimiter::default(),
            variants,
            stop,
            threads: Mutex::new(vec![retention_thread]),
        }))
    }

    /// Encodes every minute that is due by the clock and waits until it is indexed. Blocking.
    pub fn run_due_now(&self) {
        self.scheduler.run_due_now();
    }

    /// One retention sweep now. Blocking.
    pub fn retention_sweep(&self) -> Result<Sweep, crate::index::IndexError> {
        Retention::new(&self.config, self.clock.clone(), self.layout.clone(), self.index.clone(), self.metrics.clone()).sweep()
    }

    /// Registers a background thread to be joined at shutdown (the demo feeder).
    pub fn adopt_thread(&self, handle: JoinHandle<()>) {
        self.threads.lock().expect("threads lock").push(handle);
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Stops background threads after their current work. Blocking.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.scheduler.shutdown();
        for t in std::mem::take(&mut *self.threads.lock().expect("threads lock")) {
            let _ = t.join();
        }
    }
}

/// Encoded previews by segment id, and their insertion order.
type ThumbMap = (std::collections::HashMap<(i64, i64), Arc<Vec<u8>>>, std::collections::VecDeque<(i64, i64)>);

/// A bounded map of encoded previews; the oldest insert goes first.
#[derive(Default)]
pub struct ThumbCache(Mutex<ThumbMap>);

impl ThumbCache {
    /// The preview of (segment id, minute start).
    pub fn get(&self, key: (i64, i64)) -> Option<Arc<Vec<u8>>> {
        self.0.lock().expect("thumb lock").0.get(&key).cloned()
    }

    pub fn put(&self, key: (i64, i64), png: Arc<Vec<u8>>, capacity: usize) {
        let mut guard = self.0.lock().expect("thumb lock");
        let (map, order) = &mut *guard;
        if map.insert(key, png).is_none() {
            order.push_back(key);
        }
        while order.len() > capacity {
            if let Some(old) = order.pop_front() {
                map.remove(&old);
            }
        }
    }
}

/// Rebuilds the pending set from the spool directory: every spool file not yet in the index.
/// Files captured before `expired_before_ms` are past retention: removed, never re-queued.
fn recover_spool(layout: &Layout, index: &Index, pending: &Pending, expired_before_ms: i64) -> Result<usize, AppError> {
    let mut recovered = 0;
    let Ok(devices) = std::fs::read_dir(layout.spool_root()) else { return Ok(0) };
    for dev in devices.flatten() {
        let Some(device_id) = dev.file_name().to_str().map(str::to_string) else { continue };
        if !Layout::is_device_id(&device_id) {
            continue;
        }
        let Ok(files) = std::fs::read_dir(dev.path()) else { continue };
        for f in files.flatten() {
            let Some(capture_ms) = f.file_name().to_str().and_then(Layout::parse_spool_name) else { continue };
            if capture_ms < expired_before_ms {
                if let Err(e) = crate::fsutil::remove_if_exists(&f.path()) {
                    tracing::warn!(error = %e, "cannot remove an expired spool file");
                }
                continue;
            }
            // A file already in the index is a kept carry picture, or one whose release a crash
            // interrupted; the device's next encode releases it.
            if index.frame_sha256(&device_id, capture_ms)?.is_none() {
                pending.add(&device_id, capture_ms);
                recovered += 1;
            }
        }
    }
    Ok(recovered)
}

/// Serves HTTP on `listener` until `shutdown` resolves; then stops the background threads.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = crate::http::router(app.clone());
    // The peer address keys the login throttle.
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, service).with_graceful_shutdown(shutdown).await;
    let app2 = app.clone();
    let _ = tokio::task::spawn_blocking(move || app2.shutdown()).await;
    result
}
