//! The `screentape` command line: parse, set up tracing, dispatch to cli/. anyhow lives only in the binary.

mod cli;

use std::io::IsTerminal;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

// cli/synth.rs names pictures and times as `crate::media`/`crate::clock`, so that the same file
// also serves the library's unit tests; these imports make those paths resolve here.
use screentape::{clock, media};
use screentape::config::{Config, Layer};

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
        what: cli::bench::BenchWhat,
    },
    /// Create or upgrade the index schema (SQLite or PostgreSQL, as `index` says) and exit
    Migrate,
    /// Copy a single-box data dir (SQLite + blobs) into the store and index the config names
    /// (a cluster: `store = s3://…`, `index = postgres://…`); safe to run again
    ImportData {
        /// The single-box data dir to copy from (its server stopped)
        #[arg(long)]
        from: PathBuf,
        #[arg(long)]
        json: bool,
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
    tune_allocator();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "screentape=info,tower_http=warn".into()),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
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
        Command::Serve { .. } => cli::serve(config),
        Command::Device { action: DeviceAction::Add { name, owner, json } } => cli::add_device(&config, &name, owner.as_deref(), json),
        Command::User { action: UserAction::Add { name, admin, json } } => cli::add_user(&config, &name, admin, json),
        Command::Bench { what } => cli::bench::command(config, what),
        Command::Check { repair, json } => cli::check(&config, repair, json),
        Command::Migrate => cli::migrate(&config),
        Command::ImportData { from, json } => cli::copy::import_data(&config, &from, json),
    }
}

/// libav allocates multi-megabyte frame buffers. glibc's dynamic mmap threshold would start
/// serving those from the heap after the first free, where fragmentation keeps them resident:
/// a fixed threshold returns them to the OS (measured: 326 -> 204 MiB peak for the server under
/// 200 devices at 1080p; docs/performance.md). Other C libraries need nothing here.
#[cfg(target_env = "gnu")]
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: mallopt only sets a glibc allocator parameter; it is thread-safe and takes no pointers.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
    }
}

#[cfg(not(target_env = "gnu"))]
fn tune_allocator() {}
