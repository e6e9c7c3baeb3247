//! The binary's commands beyond the server library: serving with signal handling, admin
//! commands, the demo feeder, the benchmarks and their synthetic corpus.

pub mod bench;
pub mod bench_cluster;
pub mod copy;
pub mod corpus;
pub mod demo;
pub mod engines;
pub mod synth;

use std::sync::Arc;

use anyhow::{bail, Context};

use screentape::app::{self, App};
use screentape::auth;
use screentape::clock::{Clock, SystemClock};
use screentape::config::Config;

/// Serves until SIGINT or SIGTERM: then stops accepting, lets requests in flight finish
/// (uploads are acknowledged or refused, never cut), lets encoder workers finish the job in
/// hand, and returns (exit 0).
pub fn serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let demo = config.demo;
        let app = tokio::task::spawn_blocking(move || App::open(config, Arc::new(SystemClock))).await??;
        if demo {
            let a = app.clone();
            app.adopt_thread(std::thread::Builder::new().name("demo".into()).spawn(move || demo::run(a))?);
        }
        // A plain line on stdout, so scripts and tests can find the port when listening on :0.
        println!("listening on http://{}", listener.local_addr()?);
        let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        app::serve(app, listener, async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
                _ = terminate.recv() => tracing::info!("terminated; shutting down"),
            }
        })
        .await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Names are shown in the UI and logs only (never used in keys or paths), but keep them sane.
fn check_name(name: &str) -> anyhow::Result<()> {
    if name.is_empty() || name.chars().count() > 64 || name.chars().any(char::is_control) {
        bail!("a name must be 1 to 64 printable characters");
    }
    Ok(())
}

/// `device add`: registers a device; its token is printed once and stored only as a hash.
pub fn add_device(config: &Config, name: &str, owner: Option<&str>, json: bool) -> anyhow::Result<()> {
    check_name(name)?;
    let (_, _, index) = app::open_storage(config)?;
    let id = auth::new_device_id();
    let (token, hash) = auth::new_token(auth::DEVICE_TOKEN_PREFIX);
    index.create_device(&id, name, owner, &hash, SystemClock.now_ms())?;
    if json {
        println!("{}", serde_json::json!({ "device": id, "name": name, "token": token }));
    } else {
        println!("device {name}\n  id:    {id}\n  token: {token}\n(the token is shown once; it can only upload frames)");
    }
    Ok(())
}

/// `user add`: creates a viewer; its token and password are printed once and stored only as hashes.
pub fn add_user(config: &Config, name: &str, admin: bool, json: bool) -> anyhow::Result<()> {
    check_name(name)?;
    let (_, _, index) = app::open_storage(config)?;
    let (token, hash) = auth::new_token(auth::VIEWER_TOKEN_PREFIX);
    let password = auth::new_password();
    index.create_user(name, admin, &hash, &auth::hash_password(&password), SystemClock.now_ms())?;
    if json {
        println!("{}", serde_json::json!({ "user": name, "token": token, "password": password, "admin": admin }));
    } else {
        println!("user {name}{}\n  password: {password}\n  token:    {token}\n(shown once)", if admin { " (admin)" } else { "" });
    }
    Ok(())
}

/// `check [--repair] [--json]`: compares the store with the index.
pub fn check(config: &Config, repair: bool, json: bool) -> anyhow::Result<()> {
    let (_, store, index) = app::open_storage(config)?;
    let report = screentape::check::check(store.as_ref(), index.as_ref(), repair)?;
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

/// `migrate`: opening the index brings its schema up to date; say which index that was.
pub fn migrate(config: &Config) -> anyhow::Result<()> {
    app::open_storage(config)?;
    let which = if config.index.is_empty() { "SQLite in the data dir" } else { "PostgreSQL" };
    println!("the index ({which}) is up to date");
    Ok(())
}
