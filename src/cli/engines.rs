//! Throwaway engines on loopback for `screentape bench cluster` and the integration tests, which
//! compile this same file: a PostgreSQL cluster (Debian's server binaries, `initdb` in a temp dir
//! as the unprivileged `postgres` user, a free loopback port) and a Garage cluster (a real,
//! distributed S3-compatible store: 1 node, or 3 with `replication_factor = 3`, a bucket and a
//! key made ready). Both are stopped (PostgreSQL immediately, Garage killed) on drop.
//!
//! Errors are values (the bench reports them; the tests `.expect()` them). Only `screentape::`
//! paths are named, so the file means the same in the binary and in the test crate.
//!
//! The Garage binary: `$SCREENTAPE_GARAGE`, else /var/cache/screentape/garage/bin/garage, else
//! ~/.cache/screentape/garage/bin/garage (`scripts/setup --garage` puts it there).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use screentape::store::{S3Store, Store};

pub const REGION: &str = "garage";
pub const BUCKET: &str = "screentape";

/// Runs `cmd` to completion; its stdout, or an error with its output.
fn run(what: &str, cmd: &mut Command) -> Result<String> {
    let out = cmd.output().with_context(|| format!("{what}: could not start"))?;
    if !out.status.success() {
        bail!("{what} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Polls `ready` every 50 ms until it holds, at most `limit`.
pub fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) -> Result<()> {
    let start = Instant::now();
    while !ready() {
        if start.elapsed() > limit {
            bail!("{what}: not within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// A running throwaway PostgreSQL cluster; stopped (immediately) and removed on drop.
pub struct Postgres {
    dir: tempfile::TempDir,
    bin: PathBuf,
    options: String,
    pub url: String,
}

impl Postgres {
    /// A new cluster with one database, `screentape`, owned by the user `screentape`. `fsync`:
    /// durable as in production (what the bench measures), or off (quicker, for the tests).
    pub fn start(fsync: bool) -> Result<Self> {
        // The newest installed server, e.g. /usr/lib/postgresql/15/bin.
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .context("PostgreSQL server binaries under /usr/lib/postgresql (scripts/setup --postgres installs them)")?
            .filter_map(|e| Some(e.ok()?.path().join("bin")))
            .filter(|p| p.join("initdb").exists())
            .max()
            .context("an initdb under /usr/lib/postgresql/*/bin")?;
        let dir = tempfile::tempdir()?;
        let password = format!("pw{:016x}", rand::random::<u64>());
        std::fs::write(dir.path().join("pw"), &password)?;
        // initdb refuses to run as root: the cluster belongs to the `postgres` user.
        run("chown", Command::new("chown").arg("-R").arg("postgres:postgres").arg(dir.path()))?;
        let as_postgres = |program: &str| {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(bin.join(program));
            c
        };
        let data = dir.path().join("data");
        run("initdb", as_postgres("initdb").arg("-D").arg(&data).args(["-U", "screentape", "-A", "scram-sha-256", "--pwfile"]).arg(dir.path().join("pw")))?;
        let port = free_port()?;
        let mut options = format!("-p {port} -k {} -c listen_addresses=127.0.0.1", dir.path().display());
        if !fsync {
            options.push_str(" -c fsync=off");
        }
        // Stopped by Drop from here on, also if createdb fails.
        let cluster = Self { dir, bin, options, url: format!("postgres://screentape:{password}@127.0.0.1:{port}/screentape") };
        cluster.start_again()?;
        run(
            "createdb",
            Command::new(cluster.bin.join("createdb")).args(["-h", "127.0.0.1", "-p", &port.to_string(), "-U", "screentape", "screentape"]).env("PGPASSWORD", &password),
        )?;
        Ok(cluster)
    }

    fn pg_ctl(&self) -> Command {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(self.bin.join("pg_ctl")).arg("-D").arg(self.dir.path().join("data"));
        c
    }

    /// Starts the cluster (again: on the same port, crash recovery replays its WAL).
    pub fn start_again(&self) -> Result<()> {
        run("pg_ctl start", self.pg_ctl().arg("-l").arg(self.dir.path().join("log")).args(["-w", "-o", &self.options, "start"])).map(drop)
    }

    /// A number the database answers to `sql`.
    pub fn count(&self, sql: &str) -> Result<i64> {
        let mut client = postgres::Client::connect(&self.url, postgres::NoTls)?;
        Ok(client.query_one(sql, &[])?.get(0))
    }

    /// Rows inserted, updated and deleted in screentape's tables so far.
    pub fn rows_written(&self) -> Result<i64> {
        self.count("SELECT coalesce(sum(n_tup_ins + n_tup_upd + n_tup_del), 0)::bigint FROM pg_stat_user_tables")
    }

    /// Bytes on disk of screentape's tables with their indexes and TOAST.
    pub fn table_bytes(&self) -> Result<i64> {
        self.count("SELECT coalesce(sum(pg_total_relation_size(relid)), 0)::bigint FROM pg_stat_user_tables")
    }
}

// A fault for the tests: the bench never takes its database away.
#[allow(dead_code)]
impl Postgres {
    /// A crash of the database: `pg_ctl -m immediate stop` (no shutdown checkpoint).
    pub fn stop_immediately(&self) -> Result<()> {
        run("pg_ctl stop", self.pg_ctl().args(["-m", "immediate", "stop"])).map(drop)
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.pg_ctl().args(["-m", "immediate", "stop"]).output();
    }
}

/// The Garage binary: the first of the places it is looked for that holds one.
fn garage_binary() -> Result<PathBuf> {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("SCREENTAPE_GARAGE") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(PathBuf::from("/var/cache/screentape/garage/bin/garage"));
    if let Ok(home) = std::env::var("HOME") {
        candidates.push(Path::new(&home).join(".cache/screentape/garage/bin/garage"));
    }
    match candidates.iter().find(|p| p.is_file()) {
        Some(p) => Ok(p.clone()),
        None => bail!(
            "no Garage binary (looked at {}): run `scripts/setup --garage` (cargo install garage --version 2.5.0 --locked, ~35 min once per machine) or set SCREENTAPE_GARAGE",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    }
}

struct Node {
    config: PathBuf,
    rpc_port: u16,
    admin_port: u16,
    child: Option<Child>,
}

/// A running Garage cluster with a bucket and a key; every node is killed on drop.
pub struct Garage {
    _dir: tempfile::TempDir,
    bin: PathBuf,
    nodes: Vec<Node>,
    /// The S3 endpoint of the first node (any node serves the whole cluster).
    pub endpoint: String,
    pub endpoints: Vec<String>,
    pub key_id: String,
    pub secret: String,
}

impl Garage {
    /// `n` nodes on loopback, replication factor `n` (1 or 3).
    pub fn start_nodes(n: usize) -> Result<Self> {
        let bin = garage_binary()?;
        let dir = tempfile::tempdir()?;
        let secret_hex: String = (0..4).map(|_| format!("{:016x}", rand::random::<u64>())).collect();
        let mut nodes = Vec::new();
        let mut endpoints = Vec::new();
        for i in 0..n {
            let (rpc_port, s3_port, admin_port) = (free_port()?, free_port()?, free_port()?);
            let root = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&root)?;
            let config = root.join("garage.toml");
            std::fs::write(
                &config,
                format!(
                    "metadata_dir = \"{root}/meta\"\ndata_dir = \"{root}/data\"\ndb_engine = \"sqlite\"\n\
                     replication_factor = {n}\nmetadata_fsync = true\ndata_fsync = true\n\
                     rpc_bind_addr = \"127.0.0.1:{rpc_port}\"\nrpc_public_addr = \"127.0.0.1:{rpc_port}\"\n\
                     rpc_secret = \"{secret_hex}\"\n\
                     [s3_api]\ns3_region = \"{REGION}\"\napi_bind_addr = \"127.0.0.1:{s3_port}\"\nroot_domain = \".s3.garage.localhost\"\n\
                     [admin]\napi_bind_addr = \"127.0.0.1:{admin_port}\"\nadmin_token = \"{secret_hex}\"\n",
                    root = root.display()
                ),
            )?;
            endpoints.push(format!("http://127.0.0.1:{s3_port}"));
            nodes.push(Node { config, rpc_port, admin_port, child: None });
        }
        let key_id = format!("GK{:012x}{:012x}", rand::random::<u64>() >> 16, rand::random::<u64>() >> 16);
        let secret: String = (0..4).map(|_| format!("{:016x}", rand::random::<u64>())).collect();
        // Killed by Drop from here on, also if forming the cluster fails.
        let mut garage = Self { _dir: dir, bin, nodes, endpoint: endpoints[0].clone(), endpoints, key_id, secret };
        garage.spawn_all()?;
        garage.form_cluster()?;
        Ok(garage)
    }

    /// Runs a garage admin command against node `config`; its stdout.
    fn garage(&self, config: &Path, args: &[&str]) -> Result<String> {
        run(&format!("garage {args:?}"), Command::new(&self.bin).arg("-c").arg(config).args(args))
    }

    fn spawn_all(&mut self) -> Result<()> {
        for i in 0..self.nodes.len() {
            self.spawn_node(i)?;
        }
        // `status` answers once the node's RPC is up.
        for node in &self.nodes {
            wait_for("Garage RPC up", Duration::from_secs(30), || self.garage(&node.config, &["status"]).is_ok())?;
        }
        Ok(())
    }

    fn spawn_node(&mut self, i: usize) -> Result<()> {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(node.config.with_file_name("log"))?;
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .with_context(|| format!("start garage {}", self.bin.display()))?;
        node.child = Some(child);
        Ok(())
    }

    /// Connects the nodes, assigns the layout, makes the bucket and the key.
    fn form_cluster(&self) -> Result<()> {
        let first = &self.nodes[0].config;
        let mut ids = Vec::new();
        for node in &self.nodes {
            ids.push(self.garage(&node.config, &["node", "id", "-q"])?.trim().split('@').next().unwrap_or_default().to_string());
        }
        for (node, id) in self.nodes.iter().zip(&ids).skip(1) {
            self.garage(first, &["node", "connect", &format!("{id}@127.0.0.1:{}", node.rpc_port)])?;
        }
        for id in &ids {
            self.garage(first, &["layout", "assign", "-z", "dc1", "-c", "1G", id])?;
        }
        self.garage(first, &["layout", "apply", "--version", "1"])?;
        self.garage(first, &["bucket", "create", BUCKET])?;
        self.garage(first, &["key", "import", "--yes", "-n", "screentape", &self.key_id, &self.secret])?;
        self.garage(first, &["bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "screentape"])?;
        self.wait_until_serving()
    }

    /// Waits until every node's S3 endpoint answers a HEAD on the bucket.
    fn wait_until_serving(&self) -> Result<()> {
        for endpoint in &self.endpoints {
            self.wait_serving(endpoint)?;
        }
        Ok(())
    }

    fn wait_serving(&self, endpoint: &str) -> Result<()> {
        let store = self.store_at(endpoint, "")?;
        wait_for("Garage S3 serving", Duration::from_secs(30), || store.exists("probe/ready").is_ok())
    }

    /// The standard variables a screentape node reads, pointing at this cluster.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ENDPOINT_URL", self.endpoint.clone()),
            ("AWS_REGION", REGION.to_string()),
            ("AWS_ACCESS_KEY_ID", self.key_id.clone()),
            ("AWS_SECRET_ACCESS_KEY", self.secret.clone()),
        ]
    }

    /// An S3 client on the bucket under `prefix`, talking to `endpoint` (one node's).
    pub fn store_at(&self, endpoint: &str, prefix: &str) -> Result<S3Store> {
        S3Store::new(endpoint, REGION, &self.key_id, &self.secret, BUCKET, prefix).map_err(anyhow::Error::msg)
    }

    /// S3 requests served so far by the live nodes, by API endpoint (`PutObject`, `GetObject`,
    /// `HeadObject`, `DeleteObject`, `ListObjectsV2`, …), from Garage's metrics.
    pub fn s3_requests(&self) -> Result<BTreeMap<String, u64>> {
        let mut out = BTreeMap::new();
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", node.admin_port))?;
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")?;
            let mut text = String::new();
            s.read_to_string(&mut text)?;
            if !text.starts_with("HTTP/1.1 200") && !text.contains("api_s3_request_counter") {
                bail!("Garage metrics: {}", text.lines().next().unwrap_or_default());
            }
            for line in text.lines().filter(|l| l.starts_with("api_s3_request_counter{")) {
                let Some((labels, value)) = line.rsplit_once(' ') else { continue };
                let endpoint = labels.split("api_endpoint=\"").nth(1).and_then(|r| r.split('"').next()).unwrap_or(labels);
                *out.entry(endpoint.to_string()).or_insert(0) += value.parse::<f64>().unwrap_or(0.0) as u64;
            }
        }
        Ok(out)
    }

    /// Kills every node (SIGKILL): the store becomes unreachable.
    pub fn stop(&mut self) {
        for i in 0..self.nodes.len() {
            self.kill_node(i);
        }
    }

    /// Kills node `i` alone (SIGKILL); the others go on.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

// Faults for the tests: the bench never takes its store away.
#[allow(dead_code)]
impl Garage {
    /// Starts node `i` again on its data and ports.
    pub fn start_node(&mut self, i: usize) -> Result<()> {
        self.kill_node(i);
        self.spawn_node(i)?;
        self.wait_serving(&self.endpoints[i])
    }

    /// Starts the nodes again on the same data and ports, and waits until S3 answers.
    pub fn restart(&mut self) -> Result<()> {
        self.stop();
        self.spawn_all()?;
        self.wait_until_serving()
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
