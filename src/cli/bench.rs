//! Benchmarks of the real pipeline (`screentape bench`): storage and quality per codec profile,
//! corpus statistics, and upload latency under load. Part of the binary, not of the server library.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use screentape::app::App;
use screentape::auth;
use screentape::clock::{ManualClock, MINUTE_MS};
use screentape::config::{CompactConfig, Config, EncoderConfig};
use screentape::media::png::decode_rgb;
use screentape::media::{ffmpeg, psnr_rgb, ssim_rgb};

use super::corpus::{load_dir, synthetic, CorpusFrame};



use anyhow::Context;
use clap::Subcommand;


/// A codec profile to compare: the one-minute (hot) settings and the compaction (cold) tier.
#[derive(Debug, Clone)]
pub struct Profile {
    pub name: String,
    pub encoder: EncoderConfig,
    pub compact: CompactConfig,
}

impl Profile {
    /// Parses `key=value,key=value` over `base` (keys: crf, preset, params for one-minute
    /// segments; span, after, max_frames, ccrf, cpreset, cparams for compaction; span=0 turns it off;
    /// floor, the quality floor in dB, 0 = off),
    /// or the short form `crf:preset[:x264-params]` (one-minute segments only).
    pub fn parse(spec: &str, base: &Config) -> Result<Self, String> {
        let mut encoder = base.encoder.clone();
        let mut compact = base.compact.clone();
        let number = |k: &str, v: &str| v.parse::<f32>().map_err(|_| format!("{k}: not a number: {v}"));
        if !spec.contains('=') {
            let mut parts = spec.splitn(3, ':');
            encoder.crf = number("crf", parts.next().unwrap_or(""))?;
            encoder.preset = parts.next().ok_or("profile: crf:preset[:params]")?.to_string();
            encoder.x264_params = parts.next().unwrap_or("").to_string();
            compact.span = Duration::ZERO;
        } else {
            for pair in spec.split(',') {
                let (k, v) = pair.split_once('=').ok_or_else(|| format!("profile: {pair} is not key=value"))?;
                let duration = |v: &str| {
                    if v == "0" { Ok(Duration::ZERO) } else { humantime::parse_duration(v).map_err(|e| format!("{k}: {e}")) }
                };
                match k.trim() {
                    "crf" => encoder.crf = number(k, v)?,
                    "preset" => encoder.preset = v.to_string(),
                    "params" => encoder.x264_params = v.to_string(),
                    "span" => compact.span = duration(v)?,
                    "after" => compact.after = duration(v)?,
                    "max_frames" => compact.max_frames = v.parse().map_err(|_| format!("max_frames: {v}"))?,
                    "ccrf" => compact.crf = number(k, v)?,
                    "cpreset" => compact.preset = v.to_string(),
                    "cparams" => compact.x264_params = v.to_string(),
                    "ccodec" => compact.codec = v.parse()?,
                    "floor" => encoder.floor_db = number(k, v)?,
                    other => return Err(format!("profile: unknown key {other}")),
                }
            }
        }
        // A cold codec chosen here without its preset or options gets that codec's defaults, as
        // the config does (x264 options handed to libaom fail every compaction).
        if compact.codec != base.compact.codec {
            let defaults = screentape::config::compact_defaults(compact.codec);
            let has = |key: &str| spec.split(',').any(|pair| pair.split_once('=').is_some_and(|(k, _)| k.trim() == key));
            if !has("cpreset") {
                compact.preset = defaults.preset.to_string();
            }
            if !has("cparams") {
                compact.x264_params = defaults.params.to_string();
            }
        }
        let mut check = base.clone();
        check.encoder = encoder.clone();
        check.compact = compact.clone();
        check.validate().map_err(|e| e.to_string())?;
        Ok(Self { name: spec.to_string(), encoder, compact })
    }
}

/// The figures of one profile on one corpus.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct PipelineReport {
    pub profile: String,
    pub frames: usize,
    pub png_bytes: u64,
    /// Stored after the one-minute encode (what the newest footage costs).
    pub hot_bytes: u64,
    /// Stored in the end (after compaction when the profile compacts): what a day costs.
    pub stored_bytes: u64,
    pub hot_ratio: f64,
    pub ratio: f64,
    pub psnr_mean_db: f64,
    pub psnr_min_db: f64,
    pub worst_capture_ms: i64,
    pub ssim_mean: f64,
    pub ssim_min: f64,
    /// Captures found in the stored footage and compared (must equal `frames`).
    pub frames_checked: usize,
    /// Most frames in one segment (a seek decodes up to this many).
    pub max_segment_frames: i64,
    pub ingest_cpu_s_per_frame: f64,
    pub encode_cpu_s_per_frame: f64,
    pub compact_cpu_s_per_frame: f64,
    pub pipeline_cpu_s_per_frame: f64,
    pub peak_rss_mib: f64,
}

/// CPU seconds this process has used (user + system), from /proc.
pub fn process_cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // fields after the command: state is [0], utime [11], stime [12]; clock ticks are 100/s on Linux.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident memory of this process in MiB, from /proc.
pub fn peak_rss_mib() -> f64 {
    peak_rss_mib_of("self")
}

/// Peak resident memory of process `pid` ("self" for this one) in MiB, from /proc.
fn peak_rss_mib_of(pid: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// Runs the real pipeline (ingest → PNG decode → colour conversion → encode → mux → index) on
/// `corpus` with `profile`, then decodes every stored segment and compares each capture with its PNG.
pub fn run_pipeline(corpus: &[CorpusFrame], profile: &Profile) -> Result<PipelineReport, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let first = corpus.first().ok_or("empty corpus")?.capture_ms;
    let last = corpus.last().ok_or("empty corpus")?.capture_ms;
    let clock = ManualClock::new(first);
    let mut config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
    config.encoder = profile.encoder.clone();
    config.encoder.workers = 1; // one worker: CPU per frame is not blurred by parallel encodes
    config.retention = Duration::from_secs(7 * 24 * 3600);
    config.spool_max_frames = usize::MAX;
    // Phases kept apart: every upload first (the clock stands still, so nothing is due), then
    // every minute as one-minute segments, then (a second start-up with the profile's
    // compaction) every block compacted. Originals stay in the spool in between.
    config.max_future = Duration::from_secs(7 * 24 * 3600);
    config.keep_originals = Duration::from_secs(7 * 24 * 3600);
    config.compact.span = Duration::ZERO;
    let mut cold_config = config.clone();
    cold_config.compact = profile.compact.clone();
    let app = App::open(config, clock.clone())?;
    let (device, hash) = (auth::new_device_id(), auth::new_token(auth::DEVICE_TOKEN_PREFIX).1);
    app.index.create_device(&device, "bench", None, &hash, first)?;

    let cpu0 = process_cpu_seconds();
    for f in corpus {
        app.ingest.accept(&device, f.capture_ms, &f.png)?;
    }
    let cpu1 = process_cpu_seconds();
    clock.set_ms(last + 2 * MINUTE_MS);
    app.run_due_now();
    let cpu2 = process_cpu_seconds();
    let stored = |app: &App| -> Result<u64, screentape::index::IndexError> {
        Ok(app.index.all_segments()?.iter().map(|s| s.bytes as u64).sum::<u64>()
            + app.index.all_inits()?.iter().map(|i| i.bytes as u64).sum::<u64>())
    };
    let hot_bytes = stored(&app)?;
    let app = if profile.compact.enabled() {
        app.shutdown();
        let span = profile.compact.span.as_millis() as i64;
        clock.set_ms(last + profile.compact.after.as_millis() as i64 + 2 * span + 2 * MINUTE_MS);
        let app = App::open(cold_config, clock.clone())?;
        app.run_due_now();
        app
    } else {
        app
    };
    let cpu3 = process_cpu_seconds();
    // The pipeline's peak; the check below decodes whole segments and would dominate it.
    let pipeline_peak_rss_mib = peak_rss_mib();

    let segments = app.index.all_segments()?;
    let stored_bytes = stored(&app)?;
    let originals: BTreeMap<i64, &CorpusFrame> = corpus.iter().map(|f| (f.capture_ms, f)).collect();
    let (mut sum, mut n, mut min, mut worst) = (0.0, 0usize, f64::INFINITY, 0i64);
    let (mut ssim_sum, mut ssim_min) = (0.0, f64::INFINITY);
    for seg in &segments {
        let init = app.store.get(&app.index.init(seg.init_id)?.ok_or("init")?.file)?.ok_or("init blob")?;
        let media = app.store.get(&seg.file)?.ok_or("segment blob")?;
        let captures = app.index.captures_of_segment(seg.id)?;
        let times = seg.frame_times(captures.iter().map(|f| f.capture_ms));
        let decoded = ffmpeg::decode_segment(&init, &media)?;
        if decoded.len() != times.len() {
            return Err(format!("segment {} holds {} frames for {} captures", seg.id, decoded.len(), captures.len()).into());
        }
        for (pts, (_, yuv)) in times.iter().zip(decoded).filter_map(|(t, d)| Some((t.capture_ms?, d))) {
            if let Some(orig) = originals.get(&pts) {
                let (decoded, original) = (ffmpeg::yuv_to_rgb(&yuv)?, decode_rgb(&orig.png, 16384)?);
                let p = psnr_rgb(&decoded, &original).min(99.0);
                let q = ssim_rgb(&decoded, &original);
                sum += p;
                ssim_sum += q;
                ssim_min = ssim_min.min(q);
                n += 1;
                if p < min {
                    min = p;
                    worst = pts;
                }
            }
        }
    }
    app.shutdown();
    let png_bytes: u64 = corpus.iter().map(|f| f.png.len() as u64).sum();
    let frames = corpus.len();
    Ok(PipelineReport {
        profile: profile.name.clone(),
        frames,
        png_bytes,
        hot_bytes,
        stored_bytes,
        hot_ratio: png_bytes as f64 / hot_bytes.max(1) as f64,
        ratio: png_bytes as f64 / stored_bytes.max(1) as f64,
        psnr_mean_db: sum / n.max(1) as f64,
        psnr_min_db: min,
        worst_capture_ms: worst,
        ssim_mean: ssim_sum / n.max(1) as f64,
        ssim_min,
        frames_checked: n,
        max_segment_frames: segments.iter().map(|s| s.frame_count).max().unwrap_or(0),
        ingest_cpu_s_per_frame: (cpu1 - cpu0) / frames as f64,
        encode_cpu_s_per_frame: (cpu2 - cpu1) / frames as f64,
        compact_cpu_s_per_frame: (cpu3 - cpu2) / frames as f64,
        pipeline_cpu_s_per_frame: (cpu3 - cpu0) / frames as f64,
        peak_rss_mib: pipeline_peak_rss_mib,
    })
}

/// How alike consecutive screenshots of a corpus are.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CorpusStats {
    pub frames: usize,
    pub width: u32,
    pub height: u32,
    pub mean_png_bytes: f64,
    pub pairs: usize,
    /// Consecutive pairs that are pixel-identical.
    pub identical: usize,
    /// Pairs where fewer than 0.1 % of pixels differ.
    pub nearly_identical: usize,
    pub changed: usize,
    /// Median share of pixels that differ in the changed pairs.
    pub changed_median_share: f64,
}

pub fn corpus_stats(corpus: &[CorpusFrame]) -> Result<CorpusStats, Box<dyn std::error::Error>> {
    let mut prev: Option<screentape::media::png::RgbImage> = None;
    let (mut identical, mut near, mut changed, mut shares) = (0, 0, 0, Vec::new());
    let (mut width, mut height) = (0, 0);
    for f in corpus {
        let img = decode_rgb(&f.png, 16384)?;
        (width, height) = (img.width, img.height);
        if let Some(p) = &prev {
            if (p.width, p.height) != (img.width, img.height) {
                changed += 1;
            } else {
                let differ = p.data.chunks_exact(3).zip(img.data.chunks_exact(3)).filter(|(a, b)| a != b).count();
                let share = differ as f64 / (img.width as f64 * img.height as f64);
                if differ == 0 {
                    identical += 1;
                } else if share < 0.001 {
                    near += 1;
                } else {
                    changed += 1;
                    shares.push(share);
                }
            }
        }
        prev = Some(img);
    }
    shares.sort_by(f64::total_cmp);
    Ok(CorpusStats {
        frames: corpus.len(),
        width,
        height,
        mean_png_bytes: corpus.iter().map(|f| f.png.len() as f64).sum::<f64>() / corpus.len().max(1) as f64,
        pairs: corpus.len().saturating_sub(1),
        identical,
        nearly_identical: near,
        changed,
        changed_median_share: shares.get(shares.len() / 2).copied().unwrap_or(0.0),
    })
}

/// Figures of the upload load test.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    pub devices: usize,
    pub uploads: usize,
    pub errors: usize,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub peak_rss_mib: f64,
    pub wall_s: f64,
    /// Frames acknowledged but not yet encoded when the uploads stopped (the open minute and
    /// the grace period are expected here; more means the encoders fell behind).
    pub backlog_frames: usize,
    /// Share of the encoder workers' time spent encoding during the load (< 1 keeps up).
    pub encoder_busy: f64,
    pub frames_encoded: u64,
}

/// `devices` simulated agents upload `rounds` screenshots each over loopback HTTP, paced so that
/// all devices together send `rate_per_s` uploads a second (200 devices at one per 10 s = 20/s).
/// The server encodes concurrently with the real clock.
pub fn run_load(
    base: &Config,
    devices: usize,
    rounds: usize,
    rate_per_s: f64,
    corpus: &[CorpusFrame],
) -> Result<LoadReport, Box<dyn std::error::Error>> {
    use std::io::BufRead;
    let dir = tempfile::tempdir()?;
    let now = screentape::clock::Clock::now_ms(&screentape::clock::SystemClock);
    let mut tokens = Vec::new();
    {
        let index = screentape::index::open_sqlite(&screentape::layout::Layout::new(dir.path()).index())?;
        for i in 0..devices {
            let (token, hash) = auth::new_token(auth::DEVICE_TOKEN_PREFIX);
            index.create_device(&auth::new_device_id(), &format!("dev{i}"), None, &hash, now)?;
            tokens.push(token);
        }
    }
    // The real server binary in its own process, so its memory is measured alone.
    let mut server = std::process::Command::new(std::env::current_exe()?)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .env("SCREENTAPE_ENCODE_WORKERS", base.encoder.workers.to_string())
        .env("SCREENTAPE_CRF", base.encoder.crf.to_string())
        .env("SCREENTAPE_PRESET", &base.encoder.preset)
        .env("SCREENTAPE_X264_PARAMS", &base.encoder.x264_params)
        .env("RUST_LOG", "screentape=warn")
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let mut line = String::new();
    std::io::BufReader::new(server.stdout.take().ok_or("no stdout")?).read_line(&mut line)?;
    let addr: std::net::SocketAddr = line.trim().trim_start_matches("listening on http://").parse()?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let pngs: Arc<Vec<Vec<u8>>> = Arc::new(corpus.iter().map(|f| f.png.clone()).collect());
    let started = Instant::now();
    let latencies = rt.block_on(async move {
        let mut handles = Vec::new();
        let interval = Duration::from_secs_f64(devices as f64 / rate_per_s);
        for (d, token) in tokens.into_iter().enumerate() {
            let pngs = pngs.clone();
            handles.push(tokio::spawn(async move {
                let offset = interval.mul_f64(d as f64 / devices as f64);
                tokio::time::sleep(offset).await;
                let mut out = Vec::new();
                let mut stream = tokio::net::TcpStream::connect(addr).await.ok();
                for r in 0..rounds {
                    let png = &pngs[(d * 7 + r) % pngs.len()];
                    // Like a real agent: the capture time is the time of sending.
                    let capture = screentape::clock::Clock::now_ms(&screentape::clock::SystemClock);
                    let t0 = Instant::now();
                    let ok = match stream.as_mut() {
                        Some(s) => post(s, addr, &token, capture, png).await,
                        None => false,
                    };
                    out.push((t0.elapsed().as_secs_f64() * 1000.0, ok));
                    if !ok {
                        stream = tokio::net::TcpStream::connect(addr).await.ok();
                    }
                    tokio::time::sleep(interval.saturating_sub(t0.elapsed())).await;
                }
                out
            }));
        }
        let mut all = Vec::new();
        for h in handles {
            all.extend(h.await.unwrap_or_default());
        }
        all
    });
    let wall_s = started.elapsed().as_secs_f64();
    let server_rss_mib = peak_rss_mib_of(&server.id().to_string());
    let metrics = rt.block_on(scrape_metrics(addr, dir.path())).unwrap_or_default();
    let metric = |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok()).unwrap_or(0.0);
    let backlog_frames = metric("screentape_pending_frames ") as usize;
    let encoder_busy = (metric("screentape_encode_seconds_sum ") + metric("screentape_compact_seconds_sum ")) / (wall_s * base.encoder.workers as f64);
    let frames_encoded = metric("screentape_frames_encoded_total ") as u64;
    let _ = server.kill();
    let _ = server.wait();
    let errors = latencies.iter().filter(|(_, ok)| !ok).count();
    let mut ms: Vec<f64> = latencies.iter().map(|(m, _)| *m).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms.get(((ms.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
    Ok(LoadReport {
        devices,
        uploads: ms.len(),
        errors,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        max_ms: ms.last().copied().unwrap_or(0.0),
        peak_rss_mib: server_rss_mib,
        wall_s,
        backlog_frames,
        encoder_busy,
        frames_encoded,
    })
}

/// One HTTP/1.1 upload on a kept-alive connection; true on a 2xx.
pub(crate) async fn post(stream: &mut tokio::net::TcpStream, addr: std::net::SocketAddr, token: &str, capture_ms: i64, png: &[u8]) -> bool {
    use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
    let head = format!(
        "POST /api/v1/frames HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Type: image/png\r\nX-Capture-Time: {capture_ms}\r\nContent-Length: {}\r\n\r\n",
        png.len()
    );
    if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(png).await.is_err() {
        return false;
    }
    let mut reader = BufReader::new(stream);
    let mut status = String::new();
    if reader.read_line(&mut status).await.is_err() {
        return false;
    }
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.is_err() || line == "\r\n" || line.is_empty() {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap_or(0);
        }
    }
    let mut body = vec![0; len];
    if reader.read_exact(&mut body).await.is_err() {
        return false;
    }
    status.split_whitespace().nth(1).is_some_and(|c| c.starts_with('2'))
}

/// Reads /metrics with a throwaway viewer made for the purpose.
async fn scrape_metrics(addr: std::net::SocketAddr, data_dir: &Path) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (token, hash) = auth::new_token(auth::VIEWER_TOKEN_PREFIX);
    let index = screentape::index::open_sqlite(&screentape::layout::Layout::new(data_dir).index()).ok()?;
    index.create_user(&format!("bench-{}", auth::new_device_id()), true, &hash, "-", 0).ok()?;
    let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.ok()?;
    let mut out = String::new();
    stream.read_to_string(&mut out).await.ok()?;
    Some(out)
}

// ---- the command line of `screentape bench` ----

#[derive(Subcommand)]
pub enum BenchWhat {
    /// How alike consecutive screenshots of a corpus directory are
    Corpus {
        #[arg(long)]
        dir: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Storage, quality and CPU per codec profile on a corpus
    Pipeline {
        /// Directory of PNG screenshots (with an optional manifest.tsv of capture times)
        #[arg(long)]
        dir: Option<PathBuf>,
        /// Generate a synthetic corpus of this size instead, e.g. 1920x1080
        #[arg(long, default_value = "1920x1080")]
        size: String,
        /// Frames of the synthetic corpus
        #[arg(long, default_value_t = 60)]
        frames: usize,
        /// Profiles to compare: `key=value,...` (crf, preset, params; span, after, max_frames,
        /// ccrf, cpreset, cparams for compaction) or `crf:preset[:x264-params]`; default: the configured one
        #[arg(long)]
        profile: Vec<String>,
        #[arg(long)]
        json: bool,
    },
    /// Upload latency and server memory under many devices on loopback
    Load {
        #[arg(long, default_value_t = 200)]
        devices: usize,
        #[arg(long, default_value_t = 6)]
        rounds: usize,
        /// Uploads per second, all devices together (200 devices every 10 s = 20)
        #[arg(long, default_value_t = 20.0)]
        rate: f64,
        #[arg(long, default_value = "1920x1080")]
        size: String,
        #[arg(long)]
        json: bool,
    },
    /// Uploads/s, latency, CPU per frame, PostgreSQL rows and S3 requests with 1 and 3 real
    /// nodes on a throwaway PostgreSQL and Garage (docs/scale-out.md, capacity)
    Cluster {
        /// Node counts to run in turn, each on fresh engines
        #[arg(long, value_delimiter = ',', default_value = "1,3")]
        nodes: Vec<usize>,
        #[arg(long, default_value_t = 4)]
        devices: usize,
        /// Captures per device, 10 s apart
        #[arg(long, default_value_t = 36)]
        rounds: usize,
        #[arg(long)]
        json: bool,
    },
}

fn parse_size(size: &str) -> anyhow::Result<(u32, u32)> {
    let (w, h) = size.split_once('x').context("size is WIDTHxHEIGHT")?;
    Ok((w.parse()?, h.parse()?))
}

fn print_pipeline(corpus: &[CorpusFrame], dir: &Option<PathBuf>, size: &str, reports: &[PipelineReport]) {
    println!(
        "corpus: {} frames, {} bytes of PNG ({})",
        corpus.len(),
        corpus.iter().map(|f| f.png.len()).sum::<usize>(),
        dir.as_ref().map_or(format!("synthetic {size}"), |d| d.display().to_string())
    );
    for r in reports {
        println!("{}", r.profile);
        println!(
            "    stored {:>11} B  ratio {:>5.2}x (1-min {:>5.2}x)  PSNR mean {:>5.2} min {:>5.2} dB (worst at {})  SSIM mean {:.4} min {:.4}  checked {}/{}  max frames/segment {}",
            r.stored_bytes, r.ratio, r.hot_ratio, r.psnr_mean_db, r.psnr_min_db, r.worst_capture_ms, r.ssim_mean, r.ssim_min, r.frames_checked, r.frames, r.max_segment_frames
        );
        println!(
            "    CPU s/frame: ingest {:.4} encode {:.4} compact {:.4} total {:.4}  peak RSS {:.0} MiB",
            r.ingest_cpu_s_per_frame, r.encode_cpu_s_per_frame, r.compact_cpu_s_per_frame, r.pipeline_cpu_s_per_frame, r.peak_rss_mib
        );
    }
}

/// `screentape bench …`
pub fn command(config: Config, what: BenchWhat) -> anyhow::Result<()> {
    match what {
        BenchWhat::Pipeline { dir, size, frames, profile, json } => {
            let load = || -> anyhow::Result<Vec<CorpusFrame>> {
                Ok(match &dir {
                    Some(d) => load_dir(d).with_context(|| format!("reading {}", d.display()))?,
                    None => {
                        let (w, h) = parse_size(&size)?;
                        synthetic(w, h, frames)
                    }
                })
            };
            let specs = if profile.is_empty() {
                vec![format!(
                    "crf={},preset={},params={},span={},after={},max_frames={},ccodec={},ccrf={},cpreset={},cparams={}",
                    config.encoder.crf,
                    config.encoder.preset,
                    config.encoder.x264_params,
                    if config.compact.enabled() { humantime::format_duration(config.compact.span).to_string() } else { "0".into() },
                    humantime::format_duration(config.compact.after),
                    config.compact.max_frames,
                    config.compact.codec,
                    config.compact.crf,
                    config.compact.preset,
                    config.compact.x264_params
                )]
            } else {
                profile
            };
            let profiles = specs
                .iter()
                .map(|s| Profile::parse(s, &config).map_err(|e| anyhow::anyhow!("{e}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if profiles.len() == 1 {
                // One profile: run it here (its peak memory is this process's).
                let corpus = load()?;
                let r = run_pipeline(&corpus, &profiles[0]).map_err(|e| anyhow::anyhow!("{e}"))?;
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    print_pipeline(&corpus, &dir, &size, &[r]);
                }
                return Ok(());
            }
            // Several: each in its own process, so that peak memory is measured per profile.
            let mut reports = Vec::new();
            for spec in &specs {
                let mut cmd = std::process::Command::new(std::env::current_exe()?);
                cmd.args(["bench", "pipeline", "--json", "--profile", spec]);
                match &dir {
                    Some(d) => cmd.arg("--dir").arg(d),
                    None => cmd.args(["--size", &size, "--frames", &frames.to_string()]),
                };
                let out = cmd.stderr(std::process::Stdio::inherit()).output()?;
                anyhow::ensure!(out.status.success(), "profile {spec} failed");
                let r: PipelineReport = serde_json::from_slice(&out.stdout).context("child report")?;
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                } else {
                    eprintln!("done: {spec}");
                }
                reports.push(r);
            }
            if !json {
                print_pipeline(&load()?, &dir, &size, &reports);
            }
            Ok(())
        }
        BenchWhat::Corpus { dir, json } => {
            let corpus = load_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
            let st = corpus_stats(&corpus).map_err(|e| anyhow::anyhow!("{e}"))?;
            if json {
                println!("{}", serde_json::to_string(&st)?);
            } else {
                let pct = |n: usize| 100.0 * n as f64 / st.pairs.max(1) as f64;
                println!(
                    "{} frames {}x{}, mean PNG {:.0} KB; consecutive pairs: {} identical ({:.0} %), {} nearly identical <0.1 % pixels ({:.0} %), {} changed ({:.0} %, median {:.1} % of pixels)",
                    st.frames, st.width, st.height, st.mean_png_bytes / 1000.0, st.identical, pct(st.identical),
                    st.nearly_identical, pct(st.nearly_identical), st.changed, pct(st.changed), 100.0 * st.changed_median_share
                );
            }
            Ok(())
        }
        BenchWhat::Cluster { nodes, devices, rounds, json } => super::bench_cluster::command(&config, &nodes, devices, rounds, json),
        BenchWhat::Load { devices, rounds, rate, size, json } => {
            let (w, h) = parse_size(&size)?;
            let corpus = synthetic(w, h, 12);
            let r = run_load(&config, devices, rounds, rate, &corpus).map_err(|e| anyhow::anyhow!("{e}"))?;
            if json {
                println!("{}", serde_json::to_string(&r)?);
            } else {
                println!(
                    "{} devices, {} uploads ({} failed) in {:.1} s: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms; server peak RSS {:.0} MiB; \
                     encoders busy {:.0}%, {} frames encoded, {} waiting at the end",
                    r.devices, r.uploads, r.errors, r.wall_s, r.p50_ms, r.p99_ms, r.max_ms, r.peak_rss_mib, r.encoder_busy * 100.0, r.frames_encoded, r.backlog_frames
                );
            }
            Ok(())
        }
    }
}

