//! The blob store as an S3-compatible bucket (`store = s3://BUCKET/PREFIX`), through the
//! `object_store` crate's S3 client.
//!
//! The `Store` trait is synchronous and always called from blocking threads (encoder workers,
//! the retention thread, `spawn_blocking`, the CLI), so each `S3Store` owns a small tokio runtime
//! of its own: a call spawns its request there and waits on a channel. Nothing runs on (or
//! blocks) the HTTP server's tokio workers, and a caller without any runtime (the CLI, a test)
//! works the same.
//!
//! Mapping: `put_new` = PUT with `If-None-Match: *` (a 412 means the key exists); `put_cache` =
//! PUT; `get` = GET; `exists` = HEAD; `delete` = DELETE (idempotent in S3); `list` =
//! ListObjectsV2, paginated by the client. Every request has a connect timeout and a request
//! timeout and is retried a bounded number of times (server errors, throttling, connection
//! failures); what still fails is `StoreError::Unavailable` (the caller answers 503), except
//! answers that retrying cannot change (403, a missing bucket): `StoreError::Refused`.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::TryStreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder};
use object_store::path::Path;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload, RetryConfig};

use super::{Created, ObjectMeta, Result, Store, StoreError};
use crate::config::S3Config;

/// Bounds on one store call. A PNG upload is at most `max_body_bytes` (32 MiB), a segment a few
/// MiB: 30 s per request is generous on a LAN and bounded when the store hangs.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Retries of a failed request (connection refused, 5xx, 429): 0.1 s, 0.2 s, 0.4 s apart.
const MAX_RETRIES: usize = 3;
const RETRY_WINDOW: Duration = Duration::from_secs(10);
/// The longest one `Store` call may take, retries included (a listing has many pages).
const CALL_DEADLINE: Duration = Duration::from_secs(120);

/// Blobs in an S3 bucket under a key prefix.
pub struct S3Store {
    client: Arc<AmazonS3>,
    bucket: String,
    /// Empty or ending with `/`.
    prefix: String,
    /// Dropped with `shutdown_background` (a runtime may not be dropped inside another one).
    runtime: Option<tokio::runtime::Runtime>,
    /// Whether the store refuses a PUT with `If-None-Match: *` on an existing key (AWS S3,
    /// MinIO, R2 do; Garage 2.5 ignores the header and overwrites, as measured at open). Without
    /// it, `put_new` looks with HEAD first.
    conditional_create: std::sync::atomic::AtomicBool,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "S3Store(s3://{}/{})", self.bucket, self.prefix)
    }
}

impl S3Store {
    /// A store on `bucket` under `prefix` (empty or ending with `/`). Endpoint, region and
    /// credentials: the `s3_*` config keys where set, else the standard `AWS_*` variables
    /// (`AWS_ENDPOINT_URL`, `AWS_REGION`, `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, …). With an
    /// endpoint, requests are path-style, and a plain `http://` endpoint is accepted as given.
    pub fn open(bucket: &str, prefix: &str, config: &S3Config) -> std::result::Result<Self, String> {
        let mut builder = AmazonS3Builder::from_env();
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let set = |value: &str| Some(value.to_string()).filter(|v| !v.is_empty());
        if let Some(region) = set(&config.region).or_else(|| var("AWS_REGION")) {
            builder = builder.with_region(region);
        }
        if let Some(id) = set(&config.access_key_id) {
            builder = builder.with_access_key_id(id);
        }
        if let Some(secret) = set(&config.secret_access_key) {
            builder = builder.with_secret_access_key(secret);
        }
        let endpoint = set(&config.endpoint).or_else(|| var("AWS_ENDPOINT_URL_S3")).or_else(|| var("AWS_ENDPOINT_URL"));
        if let Some(endpoint) = &endpoint {
            builder = builder.with_endpoint(endpoint).with_virtual_hosted_style_request(false);
        }
        Self::build(builder, bucket, prefix, endpoint.as_deref())
    }

    /// A store with explicit settings (tests, the copy tool).
    pub fn new(endpoint: &str, region: &str, access_key_id: &str, secret_access_key: &str, bucket: &str, prefix: &str) -> std::result::Result<Self, String> {
        let builder = AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_virtual_hosted_style_request(false)
            .with_region(region)
            .with_access_key_id(access_key_id)
            .with_secret_access_key(secret_access_key);
        Self::build(builder, bucket, prefix, Some(endpoint))
    }

    fn build(builder: AmazonS3Builder, bucket: &str, prefix: &str, endpoint: Option<&str>) -> std::result::Result<Self, String> {
        let plain_http = endpoint.is_some_and(|e| e.starts_with("http://"));
        let options = ClientOptions::new()
            .with_allow_http(plain_http)
            .with_connect_timeout(CONNECT_TIMEOUT)
            .with_timeout(REQUEST_TIMEOUT);
        let retry = RetryConfig {
            backoff: BackoffConfig { init_backoff: Duration::from_millis(100), max_backoff: Duration::from_secs(2), base: 2.0 },
            max_retries: MAX_RETRIES,
            retry_timeout: RETRY_WINDOW,
        };
        let client = builder
            .with_bucket_name(bucket)
            .with_client_options(options)
            .with_retry(retry)
            .build()
            .map_err(|e| e.to_string())?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("s3-io")
            .enable_all()
            .build()
            .map_err(|e| format!("cannot start the S3 client's runtime: {e}"))?;
        let prefix = match prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        let store = Self {
            client: Arc::new(client),
            bucket: bucket.to_string(),
            prefix,
            runtime: Some(runtime),
            conditional_create: std::sync::atomic::AtomicBool::new(false),
        };
        store.probe_conditional_create();
        Ok(store)
    }

    /// Finds out whether the store honours `If-None-Match: *` on PUT: writes a probe key twice.
    /// Any failure (the store unreachable at start-up) leaves the safe answer, "no": `put_new`
    /// then asks HEAD before its PUT.
    fn probe_conditional_create(&self) {
        let key = format!("probe/{:016x}", rand::random::<u64>());
        let outcome = self.put_conditionally(&key, b"1").and_then(|first| Ok((first, self.put_conditionally(&key, b"2")?)));
        let _ = self.delete(&key);
        let honoured = matches!(outcome, Ok((Created::New, Created::AlreadyExists)));
        match &outcome {
            Ok(_) => tracing::info!(store = ?self, honoured, "probed conditional PUT (If-None-Match: *)"),
            Err(e) => tracing::warn!(store = ?self, error = %e, "cannot probe conditional PUT; put_new will look with HEAD first"),
        }
        self.conditional_create.store(honoured, std::sync::atomic::Ordering::Relaxed);
    }

    /// Whether this store refuses to overwrite a key on a conditional PUT (see `probe_conditional_create`).
    pub fn honours_conditional_put(&self) -> bool {
        self.conditional_create.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// PUT with `If-None-Match: *`: `AlreadyExists` when the store answers 412.
    fn put_conditionally(&self, key: &str, bytes: &[u8]) -> Result<Created> {
        let path = self.path(key)?;
        let client = self.client.clone();
        let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
        let k = key.to_string();
        self.run(key, async move {
            let opts = PutOptions { mode: PutMode::Create, ..PutOptions::default() };
            match client.put_opts(&path, payload, opts).await {
                Ok(_) => Ok(Created::New),
                Err(object_store::Error::AlreadyExists { .. }) => Ok(Created::AlreadyExists),
                Err(e) => Err(classify(&k, e)),
            }
        })
    }

    /// Runs `fut` on this store's runtime and waits for it, at most `CALL_DEADLINE`.
    fn run<T: Send + 'static>(&self, key: &str, fut: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        let runtime = self.runtime.as_ref().expect("the runtime lives as long as the store");
        runtime.spawn(async move {
            let out = match tokio::time::timeout(CALL_DEADLINE, fut).await {
                Ok(out) => out,
                Err(_) => Err(StoreError::Unavailable { key: String::new(), message: format!("no answer within {CALL_DEADLINE:?}") }),
            };
            let _ = tx.send(out);
        });
        match rx.recv() {
            Ok(Err(StoreError::Unavailable { key: k, message })) if k.is_empty() => Err(StoreError::Unavailable { key: key.to_string(), message }),
            Ok(out) => out,
            Err(_) => Err(StoreError::Unavailable { key: key.to_string(), message: "the S3 client's task ended without an answer".into() }),
        }
    }

    /// The object path of `key`. Keys come from `crate::layout`; they are checked anyway, as the
    /// local store checks them: no empty part, no `.` or `..`.
    fn path(&self, key: &str) -> Result<Path> {
        let ok = !key.is_empty()
            && !key.starts_with('/')
            && key.split('/').all(|part| !part.is_empty() && part != "." && part != "..");
        let bad = || StoreError::Io {
            key: key.to_string(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, format!("bad store key {key:?}")),
        };
        if !ok {
            return Err(bad());
        }
        Path::parse(format!("{}{key}", self.prefix)).map_err(|_| bad())
    }
}

impl Drop for S3Store {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// Sorts an `object_store` error into not-found, exists, transient (`Unavailable`) or for good
/// (`Refused`).
fn classify(key: &str, e: object_store::Error) -> StoreError {
    use object_store::Error as E;
    let refused = |e: &E| StoreError::Refused { key: key.to_string(), message: e.to_string() };
    match &e {
        E::PermissionDenied { .. } | E::Unauthenticated { .. } | E::InvalidPath { .. } | E::NotSupported { .. } | E::NotImplemented { .. } => {
            refused(&e)
        }
        E::NotFound { .. } => StoreError::Refused { key: key.to_string(), message: format!("not found where it must exist (is the bucket there?): {e}") },
        _ => match http_status(&e) {
            // A 4xx other than timeout/throttling will answer the same on a retry.
            Some(status) if (400..500).contains(&status) && status != 408 && status != 429 => refused(&e),
            _ => StoreError::Unavailable { key: key.to_string(), message: e.to_string() },
        },
    }
}

/// The HTTP status the store answered, if it answered one: `None` for a transport failure
/// (refused, reset, timed out). object_store keeps the status in a type it does not export, so
/// it is read from the error's text ("non-2xx status code: 400 …").
fn http_status(e: &object_store::Error) -> Option<u16> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    while let Some(s) = source {
        if s.downcast_ref::<object_store::client::HttpError>().is_some() {
            return None;
        }
        source = s.source();
    }
    let text = e.to_string();
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

impl Store for S3Store {
    /// Durable once the PUT completed: the store acknowledges a PUT only once it holds the
    /// object (Garage: on a quorum of nodes, fsynced with `data_fsync`/`metadata_fsync`;
    /// docs/scale-out.md). Where the store ignores `If-None-Match` (Garage), a HEAD first keeps an
    /// existing key from being overwritten; two writers racing on one key between HEAD and PUT
    /// both succeed there and the later bytes win. Segment keys carry a random nonce and init
    /// keys are content hashes, so only a spool key could race: two different images for one
    /// device and capture time, on two nodes within milliseconds (docs/scale-out.md).
    fn put_new(&self, key: &str, bytes: &[u8]) -> Result<Created> {
        if !self.honours_conditional_put() && self.exists(key)? {
            return Ok(Created::AlreadyExists);
        }
        self.put_conditionally(key, bytes)
    }

    fn put_cache(&self, key: &str, bytes: &[u8]) -> Result<()> {
        let path = self.path(key)?;
        let client = self.client.clone();
        let payload = PutPayload::from(Bytes::copy_from_slice(bytes));
        let k = key.to_string();
        self.run(key, async move { client.put(&path, payload).await.map(|_| ()).map_err(|e| classify(&k, e)) })
    }

    fn get(&self, key: &str) -> Result<Option<Vec<u8>>> {
        let path = self.path(key)?;
        let client = self.client.clone();
        let k = key.to_string();
        self.run(key, async move {
            let result = match client.get(&path).await {
                Ok(r) => r,
                Err(object_store::Error::NotFound { .. }) => return Ok(None),
                Err(e) => return Err(classify(&k, e)),
            };
            match result.bytes().await {
                Ok(b) => Ok(Some(b.to_vec())),
                Err(e) => Err(classify(&k, e)),
            }
        })
    }

    fn exists(&self, key: &str) -> Result<bool> {
        let path = self.path(key)?;
        let client = self.client.clone();
        let k = key.to_string();
        self.run(key, async move {
            match client.head(&path).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(classify(&k, e)),
            }
        })
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = self.path(key)?;
        let client = self.client.clone();
        let k = key.to_string();
        self.run(key, async move {
            match client.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(classify(&k, e)),
            }
        })
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>> {
        let folder = prefix.trim_end_matches('/');
        let path = self.path(folder)?;
        let client = self.client.clone();
        let strip = self.prefix.clone();
        let k = prefix.to_string();
        self.run(prefix, async move {
            let metas: Vec<object_store::ObjectMeta> = client.list(Some(&path)).try_collect().await.map_err(|e| classify(&k, e))?;
            Ok(metas
                .into_iter()
                .filter_map(|m| {
                    let key = m.location.as_ref().strip_prefix(strip.as_str())?.to_string();
                    let modified = SystemTime::UNIX_EPOCH
                        + Duration::from_millis(u64::try_from(m.last_modified.timestamp_millis()).unwrap_or(0));
                    Some(ObjectMeta { key, bytes: m.size, modified })
                })
                .collect())
        })
    }
}
