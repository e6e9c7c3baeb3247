//! One `Config` type, layered defaults < file < env (`SCREENTAPE_<KEY>`) < CLI, then validated.
//!
//! Every layer is read as TOML values (the file as written; the environment and the CLI as
//! strings) and each entry is deserialized on its own through serde, so a bad key or value is an
//! error naming that key and where it came from, never a silent default. The layers are merged
//! first and laid over the defaults once, so the config knows what was set explicitly: the
//! compaction preset and encoder options default per `compact_codec`.
//!
//! Why serde with `toml` and `humantime` (already dependencies) rather than figment or
//! humantime-serde: the environment and CLI layers arrive as strings (`Layer`) while a file may be
//! typed (`crf = 20` or `crf = "20"`), so each field needs a "typed or text" visitor either way
//! (`value` below); `compact_span = 0`, a bare number, must stay a duration, which humantime-serde
//! refuses; and the merge is a map insert. Figment would bring its own value model and a larger
//! dependency tree for that.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::media::ffmpeg::Codec;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unknown config key `{key}` in {origin}{hint} (the keys are listed in docs/config.md)")]
    UnknownKey { key: String, origin: String, hint: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

impl ConfigError {
    /// The key an error is about, if any.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::UnknownKey { key, .. } | ConfigError::Invalid { key, .. } => Some(key),
            ConfigError::Read { .. } | ConfigError::Parse { .. } => None,
        }
    }
}

/// Codec settings of the default x264 High 4:4:4 profile.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    /// x264 constant rate factor: lower is better quality and more bytes.
    pub crf: f32,
    /// x264 preset name (ultrafast … veryslow).
    pub preset: String,
    /// Extra libx264 options (`key=value:key=value`).
    pub x264_params: String,
    /// Threads one x264 encode may use (1 = most CPU-efficient; workers give parallelism).
    pub x264_threads: u32,
    /// The quality floor, both tiers: every frame is decoded as it is encoded and compared with
    /// its picture; a segment whose worst frame is under this RGB PSNR (dB) is encoded again
    /// at a lower crf. 0 turns the check off.
    pub floor_db: f32,
    /// Encoder worker threads.
    pub workers: usize,
    /// Jobs waiting for a worker before the scheduler stops queueing more.
    pub queue: usize,
}

/// Compaction: once a span of `span` (aligned on the clock) ended `after` ago, its one-minute
/// segments are re-encoded from the original PNGs into segments of at most `max_frames` frames,
/// one keyframe each (docs/storage.md). The originals stay in the spool until then.
#[derive(Debug, Clone, PartialEq)]
pub struct CompactConfig {
    /// Length of a compacted block (a whole number of minutes dividing an hour; 0 = no compaction).
    pub span: Duration,
    /// Age of a block's end before it is compacted.
    pub after: Duration,
    /// Most frames in one compacted segment: a seek decodes at most this many.
    pub max_frames: usize,
    /// x264 (default) or av1 (libaom, 4:4:4; `preset` is then its cpu-used, 0-8, and
    /// `x264_params` its aom-params). `preset` and `x264_params` default per codec.
    pub codec: Codec,
    pub crf: f32,
    pub preset: String,
    pub x264_params: String,
}

impl CompactConfig {
    pub fn enabled(&self) -> bool {
        !self.span.is_zero()
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Footage older than this is deleted.
    pub retention: Duration,
    /// Besides age: when stored footage exceeds this many bytes, the oldest goes first (0 = no budget).
    pub max_bytes: u64,
    /// A minute is encoded once wall-clock time passes its end plus this.
    pub segment_grace: Duration,
    /// A minute whose first capture is after :00 starts with the device's previous capture if it is at most this old.
    pub carry_max_age: Duration,
    /// Original PNGs stay in the spool this long after their minute is encoded, so late frames
    /// re-encode the minute from originals instead of from decoded video (no generation loss).
    pub keep_originals: Duration,
    /// Captures further in the future than this are refused (422).
    pub max_future: Duration,
    /// Largest accepted upload body.
    pub max_body_bytes: usize,
    /// Largest accepted width and height (each).
    pub max_dimension: u32,
    /// Acknowledged-but-unencoded frames beyond which uploads get 503.
    pub spool_max_frames: usize,
    /// Time a request may take (body upload included) before it is cut off.
    pub request_timeout: Duration,
    pub encoder: EncoderConfig,
    /// Most bytes of cached 4:2:0 transcodes (for browsers without 4:4:4).
    pub variant_cache_bytes: u64,
    /// The cold tier: older minutes re-encoded into long-GOP segments.
    pub compact: CompactConfig,
    /// Feed a built-in demo device with generated screenshots.
    pub demo: bool,
    /// Where the index lives: empty for SQLite in the data dir (the default), or
    /// `postgres://USER:PASSWORD@HOST:PORT/DB` for a PostgreSQL database shared by several nodes.
    pub index: String,
    /// In a cluster: how long a node's claim on a device's work (or on the retention sweep)
    /// lasts without renewal; a dead node's work is taken over after this.
    pub lease_ttl: Duration,
    /// Where blobs live: empty for the data dir (the default), `s3://BUCKET/PREFIX` for an
    /// S3-compatible bucket (endpoint and credentials from the `AWS_*` variables), or
    /// `file:///ABS/PATH` for a directory shared by several nodes.
    pub store: String,
    /// The S3 endpoint and credentials; each unset one comes from its standard `AWS_*` variable.
    pub s3: S3Config,
}

/// `s3_*` keys: set in a file, they win over the standard `AWS_*` variables (which stay the
/// usual way to give them). Empty = not set.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct S3Config {
    /// `AWS_ENDPOINT_URL`, e.g. `http://10.0.0.5:3900` (path-style requests; plain http accepted).
    pub endpoint: String,
    /// `AWS_REGION`.
    pub region: String,
    /// `AWS_ACCESS_KEY_ID`.
    pub access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub secret_access_key: String,
}

impl std::fmt::Debug for S3Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &if self.secret_access_key.is_empty() { "" } else { "(set)" })
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid literal"),
            data_dir: PathBuf::from("./screentape-data"),
            retention: Duration::from_secs(24 * 3600),
            max_bytes: 0,
            segment_grace: Duration::from_secs(15),
            carry_max_age: Duration::from_secs(60),
            max_future: Duration::from_secs(300),
            keep_originals: Duration::from_secs(600),
            max_body_bytes: 32 << 20,
            max_dimension: 8192,
            spool_max_frames: 50_000,
            request_timeout: Duration::from_secs(60),
            encoder: EncoderConfig {
                crf: 20.0,
                preset: "veryfast".into(),
                // Uniform quantisation: AQ and psy-rd move bits away from exactly the
                // high-contrast blocks (text) a screenshot must keep; see docs/performance.md.
                x264_params: "aq-mode=0:psy=0:force-cfr=1".into(),
                x264_threads: 1,
                floor_db: 45.0,
                // One x264 4:4:4 1080p encoder holds ~135 MiB; half the cores keeps uploads fast
                // and memory bounded (docs/performance.md).
                workers: (cores / 2).max(1),
                queue: cores * 4,
            },
            variant_cache_bytes: 2 << 30,
            compact: CompactConfig {
                span: Duration::from_secs(600),
                after: Duration::from_secs(600),
                max_frames: 90,
                codec: Codec::X264,
                // With the x264 defaults below: 13.7x at >= 48.4 dB on 1080p (docs/storage.md).
                crf: 22.0,
                preset: compact_defaults(Codec::X264).preset.into(),
                x264_params: compact_defaults(Codec::X264).params.into(),
            },
            demo: false,
            index: String::new(),
            lease_ttl: Duration::from_secs(30),
            store: String::new(),
            s3: S3Config::default(),
        }
    }
}

/// Where the blobs live, as the `store` key names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// The node's own data dir (the default, `store` empty).
    DataDir,
    /// `s3://BUCKET/PREFIX`: `prefix` is empty or ends with `/`.
    S3 { bucket: String, prefix: String },
    /// `file:///ABS/PATH`: a directory, possibly shared by several nodes (NFS).
    Dir(PathBuf),
}

impl StoreLocation {
    pub fn parse(spec: &str) -> Result<Self, String> {
        if spec.is_empty() {
            return Ok(StoreLocation::DataDir);
        }
        if let Some(rest) = spec.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            // S3 bucket names: 3-63 of lower-case letters, digits, dots and hyphens.
            let bucket_ok = (3..=63).contains(&bucket.len())
                && bucket.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-');
            if !bucket_ok {
                return Err(format!("bucket {bucket:?} in s3://BUCKET/PREFIX must be 3-63 lower-case letters, digits, dots or hyphens"));
            }
            let prefix = prefix.trim_matches('/');
            let prefix_ok = prefix.is_empty()
                || prefix.split('/').all(|part| {
                    !part.is_empty() && part != "." && part != ".." && part.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                });
            if !prefix_ok {
                return Err(format!("prefix {prefix:?} in s3://BUCKET/PREFIX must be /-separated names of letters, digits, - _ ."));
            }
            let prefix = if prefix.is_empty() { String::new() } else { format!("{prefix}/") };
            return Ok(StoreLocation::S3 { bucket: bucket.to_string(), prefix });
        }
        if let Some(path) = spec.strip_prefix("file://") {
            if !path.starts_with('/') {
                return Err("file://PATH needs an absolute path: file:///srv/screentape".into());
            }
            return Ok(StoreLocation::Dir(PathBuf::from(path)));
        }
        Err("must be empty (the data dir), s3://BUCKET/PREFIX or file:///ABSOLUTE/PATH".into())
    }
}

impl Config {
    /// Where blobs live (validated by `load`).
    pub fn store_location(&self) -> StoreLocation {
        StoreLocation::parse(&self.store).unwrap_or(StoreLocation::DataDir)
    }
}

/// The compaction settings that depend on the codec: what `compact_preset` and
/// `compact_x264_params` are when not set.
pub struct CompactDefaults {
    pub preset: &'static str,
    pub params: &'static str,
}

/// The defaults of `codec`'s compaction preset and options.
pub fn compact_defaults(codec: Codec) -> CompactDefaults {
    match codec {
        // Chosen on the real-app corpus (docs/storage.md): long-range motion search for
        // scrolling, eight references for windows switched back to, no deblocking of
        // text edges, uniform quantisation. 13.7x at >= 48.4 dB on 1080p.
        Codec::X264 => CompactDefaults {
            preset: "medium",
            params: "aq-mode=0:psy=0:force-cfr=1:me=umh:merange=128:ref=8:rc-lookahead=10:no-deblock=1",
        },
        // cpu-used 6 is the AV1 profile measured in docs/storage.md; its screen-content tools are
        // set by the encoder itself (media::ffmpeg), and libaom refuses x264 option names.
        Codec::Av1 => CompactDefaults { preset: "6", params: "" },
    }
}

/// libx264 options that libaom does not know (each checked against libaom-av1's aom-params: it
/// refuses them, so every encode would fail). `aq-mode` and `tune` exist in both.
const X264_ONLY_OPTIONS: &[&str] = &[
    "psy", "psy-rd", "force-cfr", "me", "merange", "me-range", "mvrange", "ref", "frameref", "rc-lookahead",
    "no-deblock", "deblock", "subme", "trellis", "8x8dct", "bframes", "b-adapt", "b-pyramid", "weightb", "weightp",
    "direct", "mixed-refs", "fast-pskip", "dct-decimate", "keyint", "min-keyint", "scenecut", "cabac", "no-cabac",
    "partitions", "mbtree", "no-mbtree", "qcomp", "ipratio", "pbratio", "aq-strength", "nr", "deadzone-inter",
    "deadzone-intra", "open-gop", "qpmin", "qpmax", "qpstep", "vbv-maxrate", "vbv-bufsize", "chroma-qp-offset",
    "threads",
];

/// Declares every key once: the `Raw` layer struct serde fills, `KEYS`, and how a set value
/// lands in `Config`.
macro_rules! keys {
    ($($key:ident: $ty:ty => $($field:ident).+;)*) => {
        /// The keys set by one or more layers, typed. Missing = not set (the default stays).
        #[derive(Debug, Default, Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Raw {
            $(#[serde(default)] $key: Option<$ty>,)*
        }

        /// Every key a file, the environment or the CLI may set, in the file's spelling.
        pub const KEYS: &[&str] = &[$(stringify!($key)),*];

        impl Raw {
            /// `later`'s keys win.
            fn merge(&mut self, later: Raw) {
                $(if later.$key.is_some() { self.$key = later.$key; })*
            }

            /// Sets the keys this layer has; the others keep `cfg`'s values.
            fn set_fields(self, cfg: &mut Config) {
                $(if let Some(v) = self.$key { cfg.$($field).+ = v.0; })*
            }
        }
    };
}

keys! {
    listen: value::Parsed<SocketAddr> => listen;
    data_dir: value::Parsed<PathBuf> => data_dir;
    retention: value::Dur => retention;
    max_bytes: value::Int<u64> => max_bytes;
    segment_grace: value::Dur => segment_grace;
    carry_max_age: value::Dur => carry_max_age;
    max_future: value::Dur => max_future;
    keep_originals: value::Dur => keep_originals;
    max_body_bytes: value::Int<usize> => max_body_bytes;
    max_dimension: value::Int<u32> => max_dimension;
    spool_max_frames: value::Int<usize> => spool_max_frames;
    request_timeout: value::Dur => request_timeout;
    crf: value::Float => encoder.crf;
    preset: value::Word => encoder.preset;
    x264_params: value::Word => encoder.x264_params;
    x264_threads: value::Int<u32> => encoder.x264_threads;
    floor_db: value::Float => encoder.floor_db;
    encode_workers: value::Int<usize> => encoder.workers;
    encode_queue: value::Int<usize> => encoder.queue;
    variant_cache_bytes: value::Int<u64> => variant_cache_bytes;
    compact_span: value::Dur => compact.span;
    compact_after: value::Dur => compact.after;
    compact_max_frames: value::Int<usize> => compact.max_frames;
    compact_codec: value::Parsed<Codec> => compact.codec;
    compact_crf: value::Float => compact.crf;
    compact_preset: value::Word => compact.preset;
    compact_x264_params: value::Word => compact.x264_params;
    demo: value::Flag => demo;
    index: value::Word => index;
    lease_ttl: value::Dur => lease_ttl;
    store: value::Word => store;
    s3_endpoint: value::Word => s3.endpoint;
    s3_region: value::Word => s3.region;
    s3_access_key_id: value::Word => s3.access_key_id;
    s3_secret_access_key: value::Word => s3.secret_access_key;
}

/// Key/value pairs from one layer, as text.
pub type Layer = BTreeMap<String, String>;

impl Raw {
    /// Reads one layer's entries. Each is deserialized alone, so an error is about that key.
    fn read(entries: impl IntoIterator<Item = (String, toml::Value)>, origin: impl Fn(&str) -> String) -> Result<Raw, ConfigError> {
        let mut raw = Raw::default();
        for (key, value) in entries {
            if !KEYS.contains(&key.as_str()) {
                let hint = did_you_mean(&key).map(|k| format!(" (did you mean `{k}`?)")).unwrap_or_default();
                return Err(ConfigError::UnknownKey { origin: origin(&key), key, hint });
            }
            let one = toml::Table::from_iter([(key.clone(), value)]);
            let entry = Raw::deserialize(toml::Value::Table(one)).map_err(|e| ConfigError::Invalid {
                message: format!("{} (in {})", e.message(), origin(&key)),
                key,
            })?;
            raw.merge(entry);
        }
        Ok(raw)
    }

    fn from_file(path: &Path) -> Result<Raw, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
        let table: toml::Table =
            text.parse().map_err(|e: toml::de::Error| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
        Raw::read(table, |_| path.display().to_string())
    }

    fn from_layer(layer: &Layer, origin: impl Fn(&str) -> String) -> Result<Raw, ConfigError> {
        Raw::read(layer.iter().map(|(k, v)| (k.clone(), toml::Value::String(v.clone()))), origin)
    }

    /// Lays these keys over `cfg`. A codec set here without its preset or options brings that
    /// codec's defaults for them, where `cfg` still had the previous codec's defaults.
    fn lay_over(self, cfg: &mut Config) {
        let codec_before = cfg.compact.codec;
        let (preset_set, params_set) = (self.compact_preset.is_some(), self.compact_x264_params.is_some());
        self.set_fields(cfg);
        let (before, now) = (compact_defaults(codec_before), compact_defaults(cfg.compact.codec));
        if !preset_set && cfg.compact.preset == before.preset {
            cfg.compact.preset = now.preset.into();
        }
        if !params_set && cfg.compact.x264_params == before.params {
            cfg.compact.x264_params = now.params.into();
        }
    }
}

fn env_var(key: &str) -> String {
    format!("SCREENTAPE_{}", key.to_ascii_uppercase())
}

/// The known key closest to a misspelt one (at most two edits away).
fn did_you_mean(key: &str) -> Option<&'static str> {
    fn distance(a: &str, b: &str) -> usize {
        let b: Vec<char> = b.chars().collect();
        let mut row: Vec<usize> = (0..=b.len()).collect();
        for (i, ca) in a.chars().enumerate() {
            let mut diag = row[0];
            row[0] = i + 1;
            for (j, cb) in b.iter().enumerate() {
                let up = row[j + 1];
                row[j + 1] = (diag + usize::from(ca != *cb)).min(row[j] + 1).min(up + 1);
                diag = up;
            }
        }
        row[b.len()]
    }
    let key = key.to_ascii_lowercase().replace('-', "_");
    KEYS.iter().map(|k| (distance(&key, k), *k)).filter(|(d, _)| *d <= 2).min().map(|(_, k)| k)
}

impl Config {
    /// Builds the config from its layers: defaults < file < env < CLI.
    pub fn load(file: Option<&Path>, env: &Layer, cli: &Layer) -> Result<Self, ConfigError> {
        let mut raw = match file {
            Some(path) => Raw::from_file(path)?,
            None => Raw::default(),
        };
        raw.merge(Raw::from_layer(env, env_var)?);
        raw.merge(Raw::from_layer(cli, |_| "the command line".into())?);
        let mut cfg = Config::default();
        raw.lay_over(&mut cfg);
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `SCREENTAPE_<KEY>` variables of this process, for known keys only (other
    /// `SCREENTAPE_*` variables, such as the tests' own, are not config).
    pub fn env_layer() -> Layer {
        KEYS.iter().filter_map(|k| std::env::var(env_var(k)).ok().map(|v| (k.to_string(), v))).collect()
    }

    /// Lays one layer over this config (not validated: call `validate`).
    pub fn apply(&mut self, layer: &Layer) -> Result<(), ConfigError> {
        Raw::from_layer(layer, |_| "a config layer".into())?.lay_over(self);
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Invalid { key: key.into(), message: message.into() })
        };
        const PRESETS: &[&str] = &[
            "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
        ];
        if !(self.index.is_empty() || self.index.starts_with("postgres://") || self.index.starts_with("postgresql://")) {
            return bad("index", "must be empty (SQLite in the data dir) or postgres://USER:PASSWORD@HOST:PORT/DB");
        }
        if self.lease_ttl < Duration::from_secs(1) {
            return bad("lease_ttl", "must be at least 1s");
        }
        if let Err(message) = StoreLocation::parse(&self.store) {
            return bad("store", &message);
        }
        if !(self.s3.endpoint.is_empty() || self.s3.endpoint.starts_with("http://") || self.s3.endpoint.starts_with("https://")) {
            return bad("s3_endpoint", "must be an http:// or https:// URL");
        }
        if self.retention < Duration::from_secs(120) {
            return bad("retention", "must be at least 2m");
        }
        if self.segment_grace > Duration::from_secs(3600) {
            return bad("segment_grace", "must be at most 1h");
        }
        if !(0.0..=51.0).contains(&self.encoder.crf) {
            return bad("crf", "must be between 0 and 51");
        }
        if !PRESETS.contains(&self.encoder.preset.as_str()) {
            return bad("preset", "must be an x264 preset name such as veryfast or medium");
        }
        check_params("x264_params", &self.encoder.x264_params, Codec::X264)?;
        if !(0.0..=60.0).contains(&self.encoder.floor_db) {
            return bad("floor_db", "must be between 0 (off) and 60");
        }
        match self.compact.codec {
            Codec::X264 => {
                if !(0.0..=51.0).contains(&self.compact.crf) {
                    return bad("compact_crf", "must be between 0 and 51");
                }
                if !PRESETS.contains(&self.compact.preset.as_str()) {
                    return bad("compact_preset", "must be an x264 preset name such as veryfast or medium");
                }
            }
            Codec::Av1 => {
                if !(0.0..=63.0).contains(&self.compact.crf) {
                    return bad("compact_crf", "with compact_codec = av1, the libaom crf: 0 to 63");
                }
                if !matches!(self.compact.preset.parse::<u8>(), Ok(0..=8)) {
                    return bad("compact_preset", "with compact_codec = av1, the libaom cpu-used: 0 (slowest) to 8");
                }
            }
        }
        check_params("compact_x264_params", &self.compact.x264_params, self.compact.codec)?;
        let span_s = self.compact.span.as_secs();
        if self.compact.enabled() && (span_s % 60 != 0 || span_s < 120 || 3600 % span_s != 0 || self.compact.span.subsec_nanos() != 0) {
            return bad("compact_span", "must be 0 (off) or whole minutes dividing an hour, at least 2m (2m, 5m, 10m, 15m, 20m, 30m, 1h)");
        }
        if self.compact.max_frames < 2 {
            return bad("compact_max_frames", "must be at least 2");
        }
        if self.encoder.workers == 0 || self.encoder.queue == 0 || self.encoder.x264_threads == 0 {
            return bad("encode_workers", "workers, queue and x264_threads must be at least 1");
        }
        if self.max_dimension < 16 || self.max_dimension > 16384 {
            return bad("max_dimension", "must be between 16 and 16384");
        }
        if self.max_body_bytes < 1024 {
            return bad("max_body_bytes", "must be at least 1024");
        }
        Ok(())
    }
}

/// Encoder options as libav takes them: `key=value:key=value` (a bare `key` fails the encoder's
/// open). With av1 they go to libaom, which fails on every x264 option name.
fn check_params(key: &str, params: &str, codec: Codec) -> Result<(), ConfigError> {
    let bad = |message: String| Err(ConfigError::Invalid { key: key.into(), message });
    if params.is_empty() {
        return Ok(());
    }
    for item in params.split(':') {
        let Some((name, _)) = item.split_once('=') else {
            return bad(format!("`{item}` is not key=value (options are `key=value:key=value`, e.g. `no-deblock=1`)"));
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return bad(format!("`{item}` is not key=value with an option name"));
        }
        if codec == Codec::Av1 && X264_ONLY_OPTIONS.contains(&name) {
            return bad(format!(
                "`{name}` is an x264 option, but with compact_codec = av1 these are libaom options (aom-params, \
                 e.g. `enable-cdef=0`); leave it unset for the av1 default (none)"
            ));
        }
    }
    Ok(())
}

/// Values as serde reads them from any layer: typed TOML, or text (the environment and the CLI
/// are text, and files have always accepted quoted numbers). Anything else is an error; nothing
/// falls back to a default or is clamped.
mod value {
    use std::fmt;
    use std::marker::PhantomData;
    use std::str::FromStr;
    use std::time::Duration;

    use serde::de::{self, Deserialize, Deserializer, Unexpected, Visitor};

    /// A whole number in the target type's range: an integer or a decimal string.
    #[derive(Debug)]
    pub struct Int<T>(pub T);

    macro_rules! int {
        ($($t:ty),*) => {$(
            impl<'de> Deserialize<'de> for Int<$t> {
                fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                    struct V;
                    impl Visitor<'_> for V {
                        type Value = $t;
                        fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                            write!(f, "a whole number from 0 to {}", <$t>::MAX)
                        }
                        fn visit_u64<E: de::Error>(self, v: u64) -> Result<$t, E> {
                            <$t>::try_from(v).map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
                        }
                        fn visit_i64<E: de::Error>(self, v: i64) -> Result<$t, E> {
                            <$t>::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))
                        }
                        fn visit_str<E: de::Error>(self, v: &str) -> Result<$t, E> {
                            v.trim().parse().map_err(|_| E::invalid_value(Unexpected::Str(v), &self))
                        }
                    }
                    d.deserialize_any(V).map(Int)
                }
            }
        )*};
    }
    int!(u32, u64, usize);

    /// A number: float, integer or a decimal string.
    #[derive(Debug)]
    pub struct Float(pub f32);

    impl<'de> Deserialize<'de> for Float {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = f32;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a number")
                }
                fn visit_f64<E: de::Error>(self, v: f64) -> Result<f32, E> {
                    if v.is_finite() {
                        Ok(v as f32)
                    } else {
                        Err(E::invalid_value(Unexpected::Float(v), &self))
                    }
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<f32, E> {
                    Ok(v as f32)
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<f32, E> {
                    Ok(v as f32)
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<f32, E> {
                    match v.trim().parse::<f64>() {
                        Ok(n) => self.visit_f64(n),
                        Err(_) => Err(E::invalid_value(Unexpected::Str(v), &self)),
                    }
                }
            }
            d.deserialize_any(V).map(Float)
        }
    }

    /// A boolean, or its spelling as text: true/false, 1/0, yes/no, on/off.
    #[derive(Debug)]
    pub struct Flag(pub bool);

    impl<'de> Deserialize<'de> for Flag {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = bool;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("true or false (or 1/0, yes/no, on/off)")
                }
                fn visit_bool<E: de::Error>(self, v: bool) -> Result<bool, E> {
                    Ok(v)
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<bool, E> {
                    match v {
                        0 | 1 => Ok(v == 1),
                        _ => Err(E::invalid_value(Unexpected::Signed(v), &self)),
                    }
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<bool, E> {
                    match v.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" | "on" => Ok(true),
                        "false" | "0" | "no" | "off" => Ok(false),
                        _ => Err(E::invalid_value(Unexpected::Str(v), &self)),
                    }
                }
            }
            d.deserialize_any(V).map(Flag)
        }
    }

    /// A duration in humantime syntax (`15s`, `10m`, `24h`, `1h 30m`), or `0` (also unquoted).
    #[derive(Debug)]
    pub struct Dur(pub Duration);

    impl<'de> Deserialize<'de> for Dur {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = Duration;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a duration with its unit, such as \"15s\", \"10m\" or \"24h\" (or 0)")
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
                    match v {
                        0 => Ok(Duration::ZERO),
                        _ => Err(E::invalid_value(Unexpected::Signed(v), &self)),
                    }
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
                    match v {
                        0 => Ok(Duration::ZERO),
                        _ => Err(E::invalid_value(Unexpected::Unsigned(v), &self)),
                    }
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                    humantime::parse_duration(v.trim())
                        .map_err(|e| E::custom(format_args!("invalid duration {v:?}: {e} (e.g. \"15s\", \"10m\", \"24h\")")))
                }
            }
            d.deserialize_any(V).map(Dur)
        }
    }

    /// A string, trimmed; an integer is taken as its digits (`compact_preset = 6`).
    #[derive(Debug)]
    pub struct Word(pub String);

    impl<'de> Deserialize<'de> for Word {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V;
            impl Visitor<'_> for V {
                type Value = String;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
                    Ok(v.trim().to_string())
                }
                fn visit_i64<E: de::Error>(self, v: i64) -> Result<String, E> {
                    Ok(v.to_string())
                }
                fn visit_u64<E: de::Error>(self, v: u64) -> Result<String, E> {
                    Ok(v.to_string())
                }
            }
            d.deserialize_any(V).map(Word)
        }
    }

    /// Text parsed by the type's `FromStr` (an address, a codec name).
    #[derive(Debug)]
    pub struct Parsed<T>(pub T);

    impl<'de, T: FromStr> Deserialize<'de> for Parsed<T>
    where
        T::Err: fmt::Display,
    {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            struct V<T>(PhantomData<T>);
            impl<T: FromStr> Visitor<'_> for V<T>
            where
                T::Err: fmt::Display,
            {
                type Value = T;
                fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                    f.write_str("a string")
                }
                fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
                    v.trim().parse().map_err(|e| E::custom(format_args!("invalid value {v:?}: {e}")))
                }
            }
            d.deserialize_any(V(PhantomData)).map(Parsed)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(pairs: &[(&str, &str)]) -> Layer {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    fn from_file(text: &str) -> Result<Config, ConfigError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, text).unwrap();
        Config::load(Some(&file), &Layer::new(), &Layer::new())
    }

    /// The error and its text, which must name `key`.
    fn err_naming(result: Result<Config, ConfigError>, key: &str) -> String {
        let e = result.expect_err("an error");
        let text = e.to_string();
        assert_eq!(e.key(), Some(key), "{text}");
        assert!(text.contains(&format!("`{key}`")), "the message names `{key}`: {text}");
        text
    }

    #[test]
    fn layers_apply_in_order_defaults_file_env_cli() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "retention = \"12h\"\ncrf = 20\nsegment_grace = \"5s\"\n").unwrap();
        let env = layer(&[("crf", "22"), ("segment_grace", "7s")]);
        let cli = layer(&[("segment_grace", "9s")]);
        let cfg = Config::load(Some(&file), &env, &cli).unwrap();
        assert_eq!(cfg.retention, Duration::from_secs(12 * 3600), "file beats default");
        assert_eq!(cfg.encoder.crf, 22.0, "env beats file");
        assert_eq!(cfg.segment_grace, Duration::from_secs(9), "cli beats env");
        assert_eq!(cfg.max_dimension, 8192, "default kept");
    }

    #[test]
    fn rejects_unknown_and_invalid() {
        assert!(matches!(Config::load(None, &layer(&[("nope", "1")]), &Layer::new()), Err(ConfigError::UnknownKey { .. })));
        assert!(Config::load(None, &layer(&[("preset", "warp")]), &Layer::new()).is_err());
        assert!(Config::load(None, &layer(&[("retention", "10s")]), &Layer::new()).is_err());
    }

    #[test]
    fn store_names_the_data_dir_a_bucket_or_a_directory() {
        assert_eq!(Config::default().store_location(), StoreLocation::DataDir);
        let s3 = |spec: &str| Config::load(None, &layer(&[("store", spec)]), &Layer::new()).map(|c| c.store_location());
        assert_eq!(s3("s3://screentape").unwrap(), StoreLocation::S3 { bucket: "screentape".into(), prefix: String::new() });
        assert_eq!(s3("s3://screentape/").unwrap(), StoreLocation::S3 { bucket: "screentape".into(), prefix: String::new() });
        assert_eq!(s3("s3://st-1/prod/a/").unwrap(), StoreLocation::S3 { bucket: "st-1".into(), prefix: "prod/a/".into() });
        assert_eq!(s3("file:///srv/blobs").unwrap(), StoreLocation::Dir(PathBuf::from("/srv/blobs")));
        for bad in ["s3://", "s3://Upper", "s3://b", "s3://bucket/a//b", "s3://bucket/../x", "file://rel/path", "/srv/blobs", "gs://x"] {
            assert!(err_naming(Config::load(None, &layer(&[("store", bad)]), &Layer::new()), "store").contains("store"), "{bad}");
        }
    }

    #[test]
    fn every_key_reads_from_a_file_typed_or_quoted_and_from_text() {
        let typed = "listen = \"0.0.0.0:9000\"\ndata_dir = \"/srv/st\"\nretention = \"48h\"\nmax_bytes = 1000000\n\
                     segment_grace = \"5s\"\ncarry_max_age = \"2m\"\nmax_future = \"1m\"\nkeep_originals = \"0\"\n\
                     max_body_bytes = 4096\nmax_dimension = 4096\nspool_max_frames = 10\nrequest_timeout = \"30s\"\n\
                     crf = 18.5\npreset = \"fast\"\nx264_params = \"aq-mode=0\"\nx264_threads = 2\nencode_workers = 3\n\
                     encode_queue = 4\nvariant_cache_bytes = 5000\ncompact_span = 0\ncompact_after = \"1h\"\n\
                     compact_max_frames = 30\ncompact_codec = \"av1\"\ncompact_crf = 40\ncompact_preset = 4\n\
                     compact_x264_params = \"enable-cdef=0\"\ndemo = true\n";
        let cfg = from_file(typed).unwrap();
        assert_eq!(cfg.listen, "0.0.0.0:9000".parse().unwrap());
        assert_eq!(cfg.data_dir, PathBuf::from("/srv/st"));
        assert_eq!((cfg.max_bytes, cfg.max_body_bytes, cfg.max_dimension, cfg.spool_max_frames), (1_000_000, 4096, 4096, 10));
        assert_eq!(cfg.keep_originals, Duration::ZERO);
        assert_eq!((cfg.encoder.crf, cfg.encoder.preset.as_str(), cfg.encoder.x264_threads), (18.5, "fast", 2));
        assert_eq!((cfg.encoder.workers, cfg.encoder.queue, cfg.variant_cache_bytes), (3, 4, 5000));
        assert!(!cfg.compact.enabled());
        assert_eq!((cfg.compact.codec, cfg.compact.crf, cfg.compact.preset.as_str()), (Codec::Av1, 40.0, "4"));
        assert_eq!(cfg.compact.x264_params, "enable-cdef=0");
        assert!(cfg.demo);
        // The same keys as strings, as files have always accepted and env/CLI always are.
        let quoted = from_file("crf = \"20\"\nmax_dimension = \"4096\"\ndemo = \"true\"\ncompact_span = \"0\"\n").unwrap();
        assert_eq!((quoted.encoder.crf, quoted.max_dimension, quoted.demo), (20.0, 4096, true));
        assert!(!quoted.compact.enabled());
        let text: Layer = KEYS.iter().map(|k| (k.to_string(), String::new())).collect();
        for key in KEYS {
            // Every key is known to every layer (an empty value may be invalid, never unknown).
            let r = Config::load(None, &text.iter().filter(|(k, _)| k == key).map(|(k, v)| (k.clone(), v.clone())).collect(), &Layer::new());
            assert!(!matches!(r, Err(ConfigError::UnknownKey { .. })), "{key}");
        }
        let env = layer(&[("demo", "true"), ("compact_span", "0"), ("max_dimension", " 2048 "), ("crf", "19.5")]);
        let cfg = Config::load(None, &env, &Layer::new()).unwrap();
        assert_eq!((cfg.demo, cfg.compact.enabled(), cfg.max_dimension, cfg.encoder.crf), (true, false, 2048, 19.5));
    }

    #[test]
    fn an_unknown_key_in_the_file_is_an_error_naming_it() {
        let text = err_naming(from_file("retension = \"12h\"\n"), "retension");
        assert!(text.contains("c.toml") && text.contains("did you mean `retention`"), "{text}");
        assert!(matches!(from_file("[encoder]\ncrf = 20\n"), Err(ConfigError::UnknownKey { key, .. }) if key == "encoder"));
    }

    #[test]
    fn regression_a_misspelt_boolean_is_an_error_not_false() {
        // Was: anything but 1/true/yes/on silently meant false.
        let text = err_naming(from_file("demo = \"ture\"\n"), "demo");
        assert!(text.contains("ture"), "{text}");
        err_naming(from_file("demo = 2\n"), "demo");
        err_naming(Config::load(None, &Layer::new(), &layer(&[("demo", "maybe")])), "demo");
        assert!(!from_file("demo = \"off\"\n").unwrap().demo);
    }

    #[test]
    fn regression_out_of_range_numbers_are_errors_not_clamped_or_wrapped() {
        // Was: x264_threads wrapped silently (2^32 + 1 became 1); max_dimension was clamped to
        // u32::MAX, which only its range check then caught.
        err_naming(from_file("max_dimension = 99999999999\n"), "max_dimension");
        err_naming(from_file("max_dimension = \"99999999999\"\n"), "max_dimension");
        err_naming(from_file("max_dimension = 20000\n"), "max_dimension");
        err_naming(from_file("x264_threads = 4294967297\n"), "x264_threads");
        err_naming(from_file("max_bytes = -1\n"), "max_bytes");
        err_naming(from_file("crf = \"twenty\"\n"), "crf");
        err_naming(from_file("retention = 3600\n"), "retention");
        err_naming(from_file("listen = \"localhost\"\n"), "listen");
        err_naming(from_file("compact_codec = \"vp9\"\n"), "compact_codec");
    }

    #[test]
    fn a_bad_environment_value_is_an_error_naming_the_key_and_variable() {
        let text = err_naming(Config::load(None, &layer(&[("spool_max_frames", "lots")]), &Layer::new()), "spool_max_frames");
        assert!(text.contains("SCREENTAPE_SPOOL_MAX_FRAMES"), "{text}");
        let text = err_naming(Config::load(None, &layer(&[("segment_grace", "15")]), &Layer::new()), "segment_grace");
        assert!(text.contains("SCREENTAPE_SEGMENT_GRACE"), "{text}");
    }

    #[test]
    fn env_layer_reads_only_known_keys() {
        // Names no other test uses (std serialises its own environment access).
        std::env::set_var("SCREENTAPE_COMPACT_MAX_FRAMES", "45");
        std::env::set_var("SCREENTAPE_NOT_A_KEY_FOR_THIS_TEST", "x");
        let env = Config::env_layer();
        std::env::remove_var("SCREENTAPE_COMPACT_MAX_FRAMES");
        std::env::remove_var("SCREENTAPE_NOT_A_KEY_FOR_THIS_TEST");
        assert_eq!(env.get("compact_max_frames").map(String::as_str), Some("45"));
        assert!(env.keys().all(|k| KEYS.contains(&k.as_str())), "{env:?}");
    }

    #[test]
    fn regression_defect_9_av1_compaction_gets_av1_defaults_not_x264_options() {
        // Was: compact_codec = av1 kept the x264 preset ("medium", refused) and x264-params
        // (handed to libaom, which fails every compaction).
        let cfg = from_file("compact_codec = \"av1\"\n").unwrap();
        assert_eq!(cfg.compact.codec, Codec::Av1);
        assert_eq!(cfg.compact.preset, compact_defaults(Codec::Av1).preset);
        assert_eq!(cfg.compact.x264_params, "", "no x264 options for libaom");
        // From any layer; and explicit settings stay.
        let cfg = Config::load(None, &layer(&[("compact_codec", "av1")]), &layer(&[("compact_preset", "3")])).unwrap();
        assert_eq!((cfg.compact.preset.as_str(), cfg.compact.x264_params.as_str()), ("3", ""));
        let cfg = from_file("compact_codec = \"av1\"\ncompact_x264_params = \"enable-cdef=0:sharpness=2\"\n").unwrap();
        assert_eq!(cfg.compact.x264_params, "enable-cdef=0:sharpness=2");
        // x264 keeps its own defaults.
        let cfg = Config::load(None, &Layer::new(), &Layer::new()).unwrap();
        assert_eq!(cfg.compact, Config::default().compact);
        // `apply` over a config follows the codec too (the tests' way of setting it).
        let mut cfg = Config::default();
        cfg.apply(&layer(&[("compact_codec", "av1")])).unwrap();
        assert_eq!((cfg.compact.preset.as_str(), cfg.compact.x264_params.as_str()), ("6", ""));
        cfg.validate().unwrap();
    }

    #[test]
    fn regression_defect_9_x264_options_with_av1_fail_validation_naming_the_key() {
        let x264_default = compact_defaults(Codec::X264).params;
        // The defect's path: a valid av1 preset with the x264 options handed on to libaom.
        err_naming(from_file(&format!("compact_codec = \"av1\"\ncompact_preset = \"6\"\ncompact_x264_params = \"{x264_default}\"\n")), "compact_x264_params");
        let text = err_naming(from_file(&format!("compact_codec = \"av1\"\ncompact_x264_params = \"{x264_default}\"\n")), "compact_x264_params");
        assert!(text.contains("`psy`"), "{text}");
        err_naming(from_file("compact_codec = \"av1\"\ncompact_x264_params = \"enable-cdef=0:merange=16\"\n"), "compact_x264_params");
        err_naming(from_file("compact_codec = \"av1\"\ncompact_preset = \"medium\"\n"), "compact_preset");
        err_naming(from_file("compact_codec = \"av1\"\ncompact_crf = 64\n"), "compact_crf");
        assert_eq!(from_file("compact_codec = \"av1\"\ncompact_crf = 63\n").unwrap().compact.crf, 63.0);
        // Option syntax libav refuses at open (bare keys), for either codec.
        err_naming(from_file("compact_x264_params = \"no-deblock\"\n"), "compact_x264_params");
        err_naming(from_file("x264_params = \"aq-mode=0:psy\"\n"), "x264_params");
        // The x264 default is fine for x264.
        let mut cfg = Config::default();
        cfg.compact.x264_params = x264_default.into();
        cfg.validate().unwrap();
    }
}
