//! Wiring: open the store and the index, recover the spool, start the encoder and retention
//! threads, build the HTTP state, serve until shutdown. The only module that knows them all.

use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock::SharedClock;
use crate::config::Config;
use crate::encode::{Encoder, Scheduler};
use crate::http::{Http, LoginLimiter};
use crate::index::SharedIndex;
use crate::ingest::{Ingest, Pending};
use crate::layout::Layout;
use crate::metrics::Metrics;
use crate::playback::Playback;
use crate::retention::{Retention, RetentionError, Sweep};
use crate::store::SharedStore;

#[derive(Debug, thiserror::Error)]
pub enum AppError {
    #[error("cannot prepare data dir {path}: {source}")]
    DataDir { path: std::path::PathBuf, source: std::io::Error },
    #[error(transparent)]
    Store(#[from] crate::store::OpenError),
    #[error(transparent)]
    Index(#[from] crate::index::IndexError),
    #[error(transparent)]
    Check(#[from] crate::check::CheckError),
    #[error(transparent)]
    Ingest(#[from] crate::ingest::IngestError),
}

/// The running product: everything a request handler, a test or a benchmark needs.
pub struct App {
    pub config: Config,
    pub layout: Layout,
    pub store: SharedStore,
    pub index: SharedIndex,
    pub clock: SharedClock,
    pub pending: Arc<Pending>,
    pub ingest: Ingest,
    pub scheduler: Arc<Scheduler>,
    pub metrics: Arc<Metrics>,
    pub playback: Arc<Playback>,
    pub http: Arc<Http>,
    stop: Arc<AtomicBool>,
    threads: Mutex<Vec<JoinHandle<()>>>,
}

/// Opens the store and the index the config names: by default both in the data dir (a directory
/// of blobs, SQLite); `store = s3://…` or `file:///…` and `index = postgres://…` put them in
/// shared engines, and the data dir is then the node's scratch. Opening the index brings its
/// schema up to date.
pub fn open_storage(config: &Config) -> Result<(Layout, SharedStore, SharedIndex), AppError> {
    let layout = Layout::new(&config.data_dir);
    std::fs::create_dir_all(layout.root()).map_err(|source| AppError::DataDir { path: layout.root().to_path_buf(), source })?;
    let store = crate::store::open(&config.store_location(), layout.root(), &config.s3)?;
    if !config.store.is_empty() && config.index.is_empty() {
        tracing::warn!(
            store = %config.store,
            "the store is shared but the index is SQLite in this node's data dir: run a single node, or set `index = postgres://…`"
        );
    }
    let index = if config.index.is_empty() {
        crate::index::open_sqlite(&layout.index())?
    } else {
        crate::index::open_postgres(&config.index)?
    };
    Ok((layout, store, index))
}

impl App {
    /// Opens the data dir, recovers from whatever state a crash left, and starts the background threads.
    /// Blocking.
    pub fn open(config: Config, clock: SharedClock) -> Result<Arc<Self>, AppError> {
        crate::media::ffmpeg::init_libav();
        let (layout, store, index) = open_storage(&config)?;
        // In a cluster (the index in PostgreSQL) other nodes work on the same store: a segment
        // another node has written but not yet committed looks like an orphan, so a start-up
        // removes only listed garbage there; orphans are left to `screentape check --repair`.
        let in_cluster = !config.index.is_empty();
        let report = crate::check::check(store.as_ref(), index.as_ref(), !in_cluster)?;
        if in_cluster {
            crate::garbage::collect(store.as_ref(), index.as_ref(), &report.garbage_files);
        }
        if !report.orphan_files.is_empty() || !report.missing_files.is_empty() {
            tracing::warn!(orphans = report.orphan_files.len(), missing = ?report.missing_files, repaired = !in_cluster, "start-up check");
        }
        let pending = Arc::new(if in_cluster { Pending::cluster() } else { Pending::default() });
        let expired_before_ms = clock.now_ms() - config.retention.as_millis() as i64;
        let recovered = crate::ingest::recover(store.as_ref(), index.as_ref(), &pending, expired_before_ms)?;
        tracing::info!(recovered, "spool recovered");

        let metrics = Arc::new(Metrics::new());
        let encoder = Arc::new(Encoder::new(&config, store.clone(), index.clone(), clock.clone(), pending.clone(), metrics.clone()));
        let scheduler = Scheduler::start(&config, encoder, pending.clone(), index.clone(), clock.clone(), metrics.clone());
        let ingest = Ingest::new(&config, store.clone(), index.clone(), clock.clone(), pending.clone());
        let playback = Arc::new(Playback::new(&config, index.clone(), store.clone(), clock.clone(), pending.clone()));
        let stop = Arc::new(AtomicBool::new(false));
        let retention = retention(&config, &clock, &store, &index, &pending, &metrics, &playback, scheduler.node());
        let stop2 = stop.clone();
        let retention_thread = std::thread::Builder::new()
            .name("retention".into())
            .spawn(move || retention.run(Duration::from_secs(15), stop2))
            .map_err(|source| AppError::DataDir { path: layout.root().to_path_buf(), source })?;
        let health_of = scheduler.clone();
        let http = Arc::new(Http {
            index: index.clone(),
            clock: clock.clone(),
            ingest: ingest.clone(),
            playback: playback.clone(),
            pending: pending.clone(),
            metrics: metrics.clone(),
            encoder_health: Box::new(move || health_of.health()),
            upload_slots: Arc::new(tokio::sync::Semaphore::new(2 * std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2))),
            max_body_bytes: config.max_body_bytes,
            request_timeout: config.request_timeout,
            login_failures: LoginLimiter::default(),
        });
        Ok(Arc::new(Self {
            config,
            layout,
            store,
            index,
            clock,
            pending,
            ingest,
            scheduler,
            metrics,
            playback,
            http,
            stop,
            threads: Mutex::new(vec![retention_thread]),
        }))
    }

    /// Encodes every minute that is due by the clock and waits until it is indexed. Blocking.
    pub fn run_due_now(&self) {
        self.scheduler.run_due_now();
    }

    /// One retention sweep now. Blocking.
    pub fn retention_sweep(&self) -> Result<Sweep, RetentionError> {
        self.retention_for(&self.config).sweep()
    }

    /// Retention as `config` sets it, on this app's parts (tests try other budgets with it).
    pub fn retention_for(&self, config: &Config) -> Retention {
        retention(config, &self.clock, &self.store, &self.index, &self.pending, &self.metrics, &self.playback, self.scheduler.node())
    }

    /// Registers a background thread to be joined at shutdown (the demo feeder).
    pub fn adopt_thread(&self, handle: JoinHandle<()>) {
        self.threads.lock().unwrap_or_else(PoisonError::into_inner).push(handle);
    }

    pub fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }

    /// Stops background threads after their current work. Blocking.
    pub fn shutdown(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.scheduler.shutdown();
        for t in std::mem::take(&mut *self.threads.lock().unwrap_or_else(PoisonError::into_inner)) {
            let _ = t.join();
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn retention(
    config: &Config,
    clock: &SharedClock,
    store: &SharedStore,
    index: &SharedIndex,
    pending: &Arc<Pending>,
    metrics: &Arc<Metrics>,
    playback: &Arc<Playback>,
    node: Option<String>,
) -> Retention {
    let playback = playback.clone();
    Retention {
        retention_ms: config.retention.as_millis() as i64,
        max_bytes: config.max_bytes,
        keep_originals_ms: crate::ingest::keep_windows(config),
        clock: clock.clone(),
        store: store.clone(),
        index: index.clone(),
        pending: pending.clone(),
        metrics: metrics.clone(),
        sweep_caches: Box::new(move || playback.sweep_caches()),
        lease: node.map(|n| (n, config.lease_ttl.as_millis() as i64)),
    }
}

/// Serves HTTP on `listener` until `shutdown` resolves, lets requests in flight finish (uploads
/// in flight are acknowledged or refused, never cut), then stops the background threads.
pub async fn serve(
    app: Arc<App>,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    // Logins are throttled per client address (http/security.rs), so the router needs the peer.
    let service = crate::http::router(app.http.clone()).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let result = axum::serve(listener, service).with_graceful_shutdown(shutdown).await;
    // The last reference is dropped on a blocking thread too: the PostgreSQL client blocks on
    // its own runtime when dropped, which panics inside this one.
    let _ = tokio::task::spawn_blocking(move || {
        app.shutdown();
        drop(app);
    })
    .await;
    result
}
