//! One `Config` type, layered defaults < file < env (`SCREENTAPE_<KEY>`) < CLI, then validated.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("unknown config key `{0}`")]
    UnknownKey(String),
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
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
    /// x264 (default) or av1 (libaom, 4:4:4; `preset` is then its cpu-used, 0-8).
    pub codec: crate::media::ffmpeg::Codec,
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
                // high-contrast blocks (text) a screenshot must keep; see docs/codecs.md.
                x264_params: "aq-mode=0:psy=0:force-cfr=1".into(),
                x264_threads: 1,
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
                codec: crate::media::ffmpeg::Codec::X264,
                // Chosen on the real-app corpus (docs/storage.md): long-range motion search for
                // scrolling, eight references for windows switched back to, no deblocking of
                // text edges, uniform quantisation. 13.7x at >= 48.4 dB on 1080p.
                crf: 22.0,
                preset: "medium".into(),
                x264_params: "aq-mode=0:psy=0:force-cfr=1:me=umh:merange=128:ref=8:rc-lookahead=10:no-deblock=1".into(),
            },
            demo: false,
        }
    }
}

/// Every key a file, the environment or the CLI may set, in the file's spelling.
pub const KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "retention",
    "max_bytes",
    "segment_grace",
    "carry_max_age",
    "max_future",
    "keep_originals",
    "max_body_bytes",
    "max_dimension",
    "spool_max_frames",
    "request_timeout",
    "crf",
    "preset",
    "x264_params",
    "x264_threads",
    "encode_workers",
    "encode_queue",
    "variant_cache_bytes",
    "compact_span",
    "compact_after",
    "compact_max_frames",
    "compact_codec",
    "compact_crf",
    "compact_preset",
    "compact_x264_params",
    "demo",
];

/// Key/value pairs from one layer, as text.
pub type Layer = BTreeMap<String, String>;

impl Config {
    /// Builds the config from its layers: defaults < file < env < CLI.
    pub fn load(file: Option<&Path>, env: &Layer, cli: &Layer) -> Result<Self, ConfigError> {
        let mut cfg = Config::default();
        if let Some(path) = file {
            cfg.apply(&read_file_layer(path)?)?;
        }
        cfg.apply(env)?;
        cfg.apply(cli)?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// The `SCREENTAPE_<KEY>` variables of this process.
    pub fn env_layer() -> Layer {
        KEYS.iter()
            .filter_map(|k| {
                let var = format!("SCREENTAPE_{}", k.to_ascii_uppercase());
                std::env::var(var).ok().map(|v| (k.to_string(), v))
            })
            .collect()
    }

    pub fn apply(&mut self, layer: &Layer) -> Result<(), ConfigError> {
        for (key, value) in layer {
            self.set(key, value)?;
        }
        Ok(())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<(), ConfigError> {
        let bad = |message: String| ConfigError::Invalid { key: key.to_string(), message };
        let duration = |v: &str| humantime::parse_duration(v).map_err(|e| bad(e.to_string()));
        let number = |v: &str| v.trim().parse::<u64>().map_err(|e| bad(e.to_string()));
        match key {
            "listen" => self.listen = value.parse().map_err(|e: std::net::AddrParseError| bad(e.to_string()))?,
            "data_dir" => self.data_dir = PathBuf::from(value),
            "retention" => self.retention = duration(value)?,
            "max_bytes" => self.max_bytes = number(value)?,
            "segment_grace" => self.segment_grace = duration(value)?,
            "carry_max_age" => self.carry_max_age = duration(value)?,
            "max_future" => self.max_future = duration(value)?,
            "keep_originals" => self.keep_originals = duration(value)?,
            "request_timeout" => self.request_timeout = duration(value)?,
            "max_body_bytes" => self.max_body_bytes = number(value)? as usize,
            "max_dimension" => self.max_dimension = number(value)?.min(u32::MAX as u64) as u32,
            "spool_max_frames" => self.spool_max_frames = number(value)? as usize,
            "crf" => self.encoder.crf = value.trim().parse().map_err(|e: std::num::ParseFloatError| bad(e.to_string()))?,
            "preset" => self.encoder.preset = value.trim().to_string(),
            "x264_params" => self.encoder.x264_params = value.trim().to_string(),
            "x264_threads" => self.encoder.x264_threads = number(value)? as u32,
            "encode_workers" => self.encoder.workers = number(value)? as usize,
            "encode_queue" => self.encoder.queue = number(value)? as usize,
            "variant_cache_bytes" => self.variant_cache_bytes = number(value)?,
            "compact_span" => self.compact.span = if value.trim() == "0" { Duration::ZERO } else { duration(value)? },
            "compact_after" => self.compact.after = duration(value)?,
            "compact_max_frames" => self.compact.max_frames = number(value)? as usize,
            "compact_codec" => self.compact.codec = value.parse().map_err(bad)?,
            "compact_crf" => self.compact.crf = value.trim().parse().map_err(|e: std::num::ParseFloatError| bad(e.to_string()))?,
            "compact_preset" => self.compact.preset = value.trim().to_string(),
            "compact_x264_params" => self.compact.x264_params = value.trim().to_string(),
            "demo" => self.demo = matches!(value.trim(), "1" | "true" | "yes" | "on"),
            other => return Err(ConfigError::UnknownKey(other.to_string())),
        }
        Ok(())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, message: &str| {
            Err(ConfigError::Invalid { key: key.into(), message: message.into() })
        };
        const PRESETS: &[&str] = &[
            "ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow", "placebo",
        ];
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
        if !(0.0..=51.0).contains(&self.compact.crf) {
            return bad("compact_crf", "must be between 0 and 51");
        }
        match self.compact.codec {
            crate::media::ffmpeg::Codec::X264 if !PRESETS.contains(&self.compact.preset.as_str()) => {
                return bad("compact_preset", "must be an x264 preset name such as veryfast or medium");
            }
            crate::media::ffmpeg::Codec::Av1 if !matches!(self.compact.preset.parse::<u8>(), Ok(0..=8)) => {
                return bad("compact_preset", "with compact_codec = av1, the libaom cpu-used: 0 (slowest) to 8");
            }
            _ => {}
        }
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

fn read_file_layer(path: &Path) -> Result<Layer, ConfigError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| ConfigError::Read { path: path.to_path_buf(), source })?;
    let table: toml::Table = text
        .parse()
        .map_err(|e: toml::de::Error| ConfigError::Parse { path: path.to_path_buf(), message: e.to_string() })?;
    table
        .into_iter()
        .map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s,
                other => other.to_string(),
            };
            Ok((k, text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(pairs: &[(&str, &str)]) -> Layer {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
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
        assert!(matches!(Config::load(None, &layer(&[("nope", "1")]), &Layer::new()), Err(ConfigError::UnknownKey(_))));
        assert!(Config::load(None, &layer(&[("preset", "warp")]), &Layer::new()).is_err());
        assert!(Config::load(None, &layer(&[("retention", "10s")]), &Layer::new()).is_err());
    }
}
