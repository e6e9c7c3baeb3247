//! `screentape bench cluster`: the scale-out figures on this box with real engines. A throwaway
//! PostgreSQL (Debian's server binaries, run as the `postgres` user in a temp dir on a free
//! loopback port), a one-node Garage (a real S3 store), then 1 and 3 `screentape serve` nodes
//! sharing them (`store = s3://…`, `index = postgres://…`, each node its own data dir). Simulated
//! agents upload round-robin across the nodes with capture times 10 s apart (minutes of captures,
//! so that minutes close and get encoded), back to back, and the bench waits until every frame
//! is in a segment. Measured per run: uploads/s and latency, each node's CPU (utime + stime from
//! /proc/PID/stat), PostgreSQL rows written (pg_stat_user_tables n_tup_ins + upd + del) and
//! object-store requests (Garage's `api_s3_request_counter`), per frame and scaled to a
//! device-day of one capture every 10 s (8,640 frames).

use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use screentape::auth;
use screentape::clock::{Clock, SystemClock};
use screentape::config::Config;

use super::corpus::synthetic;
use super::engines::{wait_for, Garage, Postgres, BUCKET};

/// Frames of one device in a day at one capture every 10 s.
const FRAMES_PER_DEVICE_DAY: f64 = 8640.0;

/// utime + stime of a live process, in seconds.
fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) in parentheses.
    let rest = stat.rsplit_once(')').context("/proc/PID/stat")?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((f[11].parse::<f64>()? + f[12].parse::<f64>()?) / ticks)
}

/// Figures of one cluster run.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterReport {
    pub nodes: usize,
    pub devices: usize,
    pub uploads: usize,
    pub errors: usize,
    pub upload_wall_s: f64,
    pub uploads_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Seconds from the last upload until every frame was in a segment.
    pub drain_s: f64,
    pub frames_in_segments: i64,
    pub node_cpu_s: Vec<f64>,
    pub cpu_s_per_frame: f64,
    pub pg_rows: i64,
    pub pg_rows_per_frame: f64,
    pub s3_requests: u64,
    pub s3_requests_per_frame: f64,
    pub pg_bytes: i64,
    pub pg_bytes_per_frame: f64,
    pub stored_bytes: i64,
    pub stored_bytes_per_frame: f64,
}

/// One run: fresh engines, `nodes` servers, `devices` agents × `rounds` captures 10 s apart.
pub fn run_cluster(base: &Config, nodes: usize, devices: usize, rounds: usize) -> Result<ClusterReport> {
    // Durable as in production (fsync on): the rows and their cost are what is measured.
    let pg = Postgres::start(true)?;
    let garage = Garage::start_nodes(1)?;
    let scratch = tempfile::tempdir()?;
    let now = SystemClock.now_ms();
    let mut tokens = Vec::new();
    {
        let index = screentape::index::open_postgres(&pg.url)?;
        for i in 0..devices {
            let (token, hash) = auth::new_token(auth::DEVICE_TOKEN_PREFIX);
            index.create_device(&auth::new_device_id(), &format!("agent-{i}"), None, &hash, now)?;
            tokens.push(token);
        }
    }
    let rows_before = pg.rows_written()?;
    let pg_bytes_before = pg.table_bytes()?;
    // S3 requests served so far (all API endpoints).
    let s3_total = || garage.s3_requests().map(|by_endpoint| by_endpoint.values().sum::<u64>());
    let s3_before = s3_total()?;
    let mut children = Vec::new();
    let mut addrs = Vec::new();
    for i in 0..nodes {
        let mut cmd = Command::new(std::env::current_exe()?);
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(scratch.path().join(format!("node{i}")))
            .env("SCREENTAPE_INDEX", &pg.url)
            .env("SCREENTAPE_ENCODE_WORKERS", base.encoder.workers.to_string())
            .env("SCREENTAPE_CRF", base.encoder.crf.to_string())
            .env("SCREENTAPE_PRESET", &base.encoder.preset)
            .env("SCREENTAPE_X264_PARAMS", &base.encoder.x264_params)
            .env("RUST_LOG", "screentape=warn")
            .stdout(Stdio::piped());
        for (k, v) in garage.env() {
            cmd.env(k, v);
        }
        cmd.env("SCREENTAPE_STORE", format!("s3://{BUCKET}/bench"));
        let mut child = cmd.spawn()?;
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().context("no stdout")?).read_line(&mut line)?;
        let addr: std::net::SocketAddr = line.trim().trim_start_matches("listening on http://").parse().with_context(|| format!("node {i} said {line:?}"))?;
        children.push(child);
        addrs.push(addr);
    }
    let cpu_before: Vec<f64> = children.iter().map(|c| cpu_seconds(c.id())).collect::<Result<_>>()?;
    let corpus = synthetic(1920, 1080, 12);
    let pngs: Arc<Vec<Vec<u8>>> = Arc::new(corpus.into_iter().map(|f| f.png).collect());
    // Captures 10 s apart, all in the past (whole minutes, closed as soon as they are uploaded
    // past), the devices staggered within the 10 s.
    let first_capture = (now - (rounds as i64 * 10_000 + 120_000)) / 60_000 * 60_000;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let started = Instant::now();
    let latencies = rt.block_on(async move {
        let mut handles = Vec::new();
        for (d, token) in tokens.into_iter().enumerate() {
            let (pngs, addrs) = (pngs.clone(), addrs.clone());
            handles.push(tokio::spawn(async move {
                let mut out = Vec::new();
                let mut streams: Vec<Option<tokio::net::TcpStream>> = (0..addrs.len()).map(|_| None).collect();
                for r in 0..rounds {
                    // Round-robin across the nodes, upload by upload.
                    let n = (d + r) % addrs.len();
                    let capture = first_capture + r as i64 * 10_000 + (d as i64 * 10_000) / devices as i64;
                    let png = &pngs[(d * 7 + r) % pngs.len()];
                    let t0 = Instant::now();
                    if streams[n].is_none() {
                        streams[n] = tokio::net::TcpStream::connect(addrs[n]).await.ok();
                    }
                    let ok = match streams[n].as_mut() {
                        Some(s) => super::bench::post(s, addrs[n], &token, capture, png).await,
                        None => false,
                    };
                    if !ok {
                        streams[n] = None;
                    }
                    out.push((t0.elapsed().as_secs_f64() * 1000.0, ok));
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
    let upload_wall_s = started.elapsed().as_secs_f64();
    let errors = latencies.iter().filter(|(_, ok)| !ok).count();
    let acked = (latencies.len() - errors) as i64;
    // Every acknowledged frame encoded into a segment (any node may encode any device's minute).
    let drain = Instant::now();
    let mut frames_in_segments = 0;
    let drained = wait_for("all frames in segments", Duration::from_secs(600), || {
        frames_in_segments = pg.count("SELECT count(*) FROM frames").unwrap_or(0);
        frames_in_segments >= acked && pg.count("SELECT count(*) FROM pending_frames").unwrap_or(1) == 0
    });
    let drain_s = drain.elapsed().as_secs_f64();
    if let Err(e) = drained {
        eprintln!("warning: {e} ({frames_in_segments} of {acked} frames in segments)");
    }
    let node_cpu_s: Vec<f64> = children.iter().zip(&cpu_before).map(|(c, b)| cpu_seconds(c.id()).map(|a| a - b)).collect::<Result<_>>()?;
    // Stop the nodes (SIGTERM, graceful) so that their PostgreSQL sessions end and flush their
    // statistics before pg_stat_user_tables is read.
    for c in &mut children {
        let _ = rustix::process::kill_process(rustix::process::Pid::from_raw(c.id() as i32).context("pid")?, rustix::process::Signal::TERM);
    }
    for c in &mut children {
        let _ = c.wait();
    }
    let s3_requests = s3_total()? - s3_before;
    // Backends flush their statistics as they exit; a new session sees them once they are gone.
    let mut pg_rows = 0;
    wait_for("PostgreSQL sessions of the nodes closed", Duration::from_secs(30), || {
        pg.count("SELECT count(*) FROM pg_stat_activity WHERE datname = 'screentape' AND pid <> pg_backend_pid()").is_ok_and(|n| n == 0)
    })?;
    pg_rows += pg.rows_written()? - rows_before;
    let pg_bytes = pg.table_bytes()? - pg_bytes_before;
    let stored_bytes = pg.count("SELECT (coalesce((SELECT sum(bytes) FROM segments), 0) + coalesce((SELECT sum(bytes) FROM inits), 0))::bigint")?;
    let mut ms: Vec<f64> = latencies.iter().map(|(m, _)| *m).collect();
    ms.sort_by(f64::total_cmp);
    let pct = |p: f64| ms.get(((ms.len() as f64 - 1.0) * p).round() as usize).copied().unwrap_or(0.0);
    let frames = frames_in_segments.max(1) as f64;
    Ok(ClusterReport {
        nodes,
        devices,
        uploads: latencies.len(),
        errors,
        upload_wall_s,
        uploads_per_s: acked as f64 / upload_wall_s,
        p50_ms: pct(0.50),
        p99_ms: pct(0.99),
        drain_s,
        frames_in_segments,
        cpu_s_per_frame: node_cpu_s.iter().sum::<f64>() / frames,
        node_cpu_s,
        pg_rows,
        pg_rows_per_frame: pg_rows as f64 / frames,
        s3_requests,
        s3_requests_per_frame: s3_requests as f64 / frames,
        pg_bytes,
        pg_bytes_per_frame: pg_bytes as f64 / frames,
        stored_bytes,
        stored_bytes_per_frame: stored_bytes as f64 / frames,
    })
}

/// `screentape bench cluster`: runs each node count in turn and prints one table.
pub fn command(config: &Config, nodes: &[usize], devices: usize, rounds: usize, json: bool) -> Result<()> {
    let mut reports = Vec::new();
    for &n in nodes {
        eprintln!("cluster bench: {n} node(s), {devices} devices × {rounds} captures…");
        let r = run_cluster(config, n, devices, rounds)?;
        if json {
            println!("{}", serde_json::to_string(&r)?);
        }
        reports.push(r);
    }
    if json {
        return Ok(());
    }
    println!(
        "{devices} devices × {rounds} captures 10 s apart ({} simulated minutes), 1920x1080 synthetic PNGs, uploads back to back round-robin over the nodes",
        rounds / 6
    );
    println!("| nodes | uploads (failed) | uploads/s | p50 ms | p99 ms | drain s | CPU s per node | CPU s/frame (all nodes) | PG rows/frame | PG rows/device-day | PG table B/frame | S3 req/frame | S3 req/device-day | stored B/frame |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for r in &reports {
        println!(
            "| {} | {} ({}) | {:.1} | {:.0} | {:.0} | {:.1} | {} | {:.4} | {:.2} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} |",
            r.nodes,
            r.uploads,
            r.errors,
            r.uploads_per_s,
            r.p50_ms,
            r.p99_ms,
            r.drain_s,
            r.node_cpu_s.iter().map(|c| format!("{c:.1}")).collect::<Vec<_>>().join(" / "),
            r.cpu_s_per_frame,
            r.pg_rows_per_frame,
            r.pg_rows_per_frame * FRAMES_PER_DEVICE_DAY,
            r.pg_bytes_per_frame,
            r.s3_requests_per_frame,
            r.s3_requests_per_frame * FRAMES_PER_DEVICE_DAY,
            r.stored_bytes_per_frame
        );
    }
    Ok(())
}
