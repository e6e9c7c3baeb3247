//! The `screentape` command line: parse, set up tracing, dispatch. anyhow lives only here.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};

use screentape::app::{self, App};
use screentape::auth;
use screentape::clock::{Clock, SystemClock};
use screentape::config::{Config, Layer};
use screentape::index::Index;
use screentape::layout::Layout;

#[derive(Parser)]
#[command(name = "screentape", version, about = "Screenshots in, a scrubbable day of video out")]
struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args)]
struct Global {
    /// TOML config file (keys as in docs/config.md)
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Data directory [default: ./screentape-data]
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server
    Serve {
        /// Address to listen on [default: 127.0.0.1:8080]
        #[arg(long)]
        listen: Option<String>,
        /// Feed a demo device with generated screenshots
        #[arg(long)]
        demo: bool,
    },
    /// Manage upload devices
    Device {
        #[command(subcommand)]
        action: DeviceAction,
    },
    /// Manage viewers
    User {
        #[command(subcommand)]
        action: UserAction,
    },
    /// Measure the real pipeline (see scripts/bench)
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
    /// Compare the data dir with the index; with --repair remove orphans
    Check {
        #[arg(long)]
        repair: bool,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
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
}

#[derive(Subcommand)]
enum DeviceAction {
    /// Register a device; prints its id and upload token
    Add {
        name: String,
        #[arg(long)]
        owner: Option<String>,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum UserAction {
    /// Create a viewer; prints a viewer token and a password for the web login
    Add {
        name: String,
        #[arg(long)]
        admin: bool,
        #[arg(long)]
        json: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "screentape=info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();

    let mut cli_layer = Layer::new();
    if let Some(dir) = &cli.global.data_dir {
        cli_layer.insert("data_dir".into(), dir.to_string_lossy().into_owned());
    }
    if let Command::Serve { listen, demo } = &cli.command {
        if let Some(l) = listen {
            cli_layer.insert("listen".into(), l.clone());
        }
        if *demo {
            cli_layer.insert("demo".into(), "true".into());
        }
    }
    let config = Config::load(cli.global.config.as_deref(), &Config::env_layer(), &cli_layer)?;

    match cli.command {
        Command::Serve { .. } => serve(config),
        Command::Device { action: DeviceAction::Add { name, owner, json } } => {
            check_name(&name)?;
            let index = open_index(&config)?;
            let id = auth::new_device_id();
            let (token, hash) = auth::new_token(auth::DEVICE_TOKEN_PREFIX);
            index.create_device(&id, &name, owner.as_deref(), &hash, SystemClock.now_ms())?;
            if json {
                println!("{}", serde_json::json!({ "device": id, "name": name, "token": token }));
            } else {
                println!("device {name}\n  id:    {id}\n  token: {token}\n(the token is shown once; it can only upload frames)");
            }
            Ok(())
        }
        Command::User { action: UserAction::Add { name, admin, json } } => {
            check_name(&name)?;
            let index = open_index(&config)?;
            let (token, hash) = auth::new_token(auth::VIEWER_TOKEN_PREFIX);
            let password = auth::new_password();
            index.create_user(&name, admin, &hash, &auth::hash_password(&password), SystemClock.now_ms())?;
            if json {
                println!("{}", serde_json::json!({ "user": name, "token": token, "password": password, "admin": admin }));
            } else {
                println!("user {name}{}\n  password: {password}\n  token:    {token}\n(shown once)", if admin { " (admin)" } else { "" });
            }
            Ok(())
        }
        Command::Bench { what } => bench(config, what),
        Command::Check { repair, json } => {
            let index = open_index(&config)?;
            let report = screentape::check::check(&Layout::new(&config.data_dir), &index, repair)?;
            if json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                println!(
                    "segments {}  inits {}  spool files {}  temp files {}\norphan files {:?}\nmissing files {:?}\ngarbage files {:?}\n{}",
                    report.segments,
                    report.inits,
                    report.spool_files,
                    report.temp_files,
                    report.orphan_files,
                    report.missing_files,
                    report.garbage_files,
                    if report.is_consistent() { "consistent" } else if repair { "repaired what could be" } else { "INCONSISTENT" }
                );
            }
            if !report.missing_files.is_empty() {
                bail!("{} indexed files are missing", report.missing_files.len());
            }
            Ok(())
        }
    }
}

/// Names are shown in the UI and logs only (never used in paths), but keep them sane.
fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        bail!("a name must be 1 to 64 printable characters");
    }
    Ok(())
}

fn parse_size(size: &str) -> anyhow::Result<(u32, u32)> {
    let (w, h) = size.split_once('x').context("size is WIDTHxHEIGHT")?;
    Ok((w.parse()?, h.parse()?))
}

fn print_pipeline(corpus: &[screentape::bench::CorpusFrame], dir: &Option<PathBuf>, size: &str, reports: &[screentape::bench::PipelineReport]) {
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

fn bench(config: Config, what: BenchWhat) -> anyhow::Result<()> {
    use screentape::bench;
    match what {
        BenchWhat::Pipeline { dir, size, frames, profile, json } => {
            let load = || -> anyhow::Result<Vec<bench::CorpusFrame>> {
                Ok(match &dir {
                    Some(d) => bench::load_dir(d).with_context(|| format!("reading {}", d.display()))?,
                    None => {
                        let (w, h) = parse_size(&size)?;
                        bench::synthetic(w, h, frames)
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
                .map(|s| bench::Profile::parse(s, &config).map_err(|e| anyhow::anyhow!("{e}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            if profiles.len() == 1 {
                // One profile: run it here (its peak memory is this process's).
                let corpus = load()?;
                let r = bench::run_pipeline(&corpus, &profiles[0]).map_err(|e| anyhow::anyhow!("{e}"))?;
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
                let r: bench::PipelineReport = serde_json::from_slice(&out.stdout).context("child report")?;
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
            let corpus = bench::load_dir(&dir).with_context(|| format!("reading {}", dir.display()))?;
            let st = bench::corpus_stats(&corpus).map_err(|e| anyhow::anyhow!("{e}"))?;
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
        BenchWhat::Load { devices, rounds, rate, size, json } => {
            let (w, h) = parse_size(&size)?;
            let corpus = bench::synthetic(w, h, 12);
            let r = bench::run_load(&config, devices, rounds, rate, &corpus).map_err(|e| anyhow::anyhow!("{e}"))?;
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

fn open_index(config: &Config) -> anyhow::Result<Index> {
    let layout = Layout::new(&config.data_dir);
    std::fs::create_dir_all(layout.root()).with_context(|| format!("creating {}", layout.root().display()))?;
    Ok(Index::open(&layout.index())?)
}

fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let demo = config.demo;
        let app = tokio::task::spawn_blocking(move || App::open(config, Arc::new(SystemClock))).await??;
        if demo {
            let a = app.clone();
            app.adopt_thread(std::thread::Builder::new().name("demo".into()).spawn(move || screentape::demo::run(a))?);
        }
        // A plain line on stdout, so scripts and tests can find the port when listening on :0.
        println!("listening on http://{}", listener.local_addr()?);
        app::serve(app, listener, async {
            let _ = tokio::signal::ctrl_c().await;
            tracing::info!("shutting down");
        })
        .await?;
        Ok(())
    })
}
