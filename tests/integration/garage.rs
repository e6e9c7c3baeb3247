//! A throwaway Garage cluster (a real, distributed S3-compatible store) on free loopback ports
//! in a temp dir: 1 node, or 3 nodes with `replication_factor = 3`. A bucket and a key are made
//! ready; the nodes are killed on drop. `stop` / `restart` take the store away and bring it back
//! (same data, same ports) for the failure tests.
//!
//! The binary: `$SCREENTAPE_GARAGE`, else /var/cache/screentape/garage/bin/garage, else
//! ~/.cache/screentape/garage/bin/garage (`scripts/setup --garage` puts it there).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use screentape::store::{S3Store, Store};

pub const REGION: &str = "garage";
pub const BUCKET: &str = "screentape";

struct Node {
    config: PathBuf,
    rpc_port: u16,
    admin_port: u16,
    child: Option<Child>,
}

/// A running Garage cluster; every node is killed on drop.
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

/// The Garage binary the tests use, or a panic saying how to get one.
pub fn binary() -> PathBuf {
    let mut candidates = Vec::new();
    if let Ok(p) = std::env::var("SCREENTAPE_GARAGE") {
        candidates.push(PathBuf::from(p));
    }
    candidates.push(PathBuf::from("/var/cache/screentape/garage/bin/garage"));
    if let Ok(home) = std::env::var("HOME") {
        candidates.push(Path::new(&home).join(".cache/screentape/garage/bin/garage"));
    }
    candidates.iter().find(|p| p.is_file()).cloned().unwrap_or_else(|| {
        panic!(
            "no Garage binary (looked at {}): run `scripts/setup --garage` (cargo install garage --version 2.5.0 --locked, ~35 min once per machine) or set SCREENTAPE_GARAGE",
            candidates.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
        )
    })
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Runs a garage admin command against `config`; its stdout, or a panic with its output.
fn garage(bin: &Path, config: &Path, args: &[&str]) -> String {
    let out = Command::new(bin).arg("-c").arg(config).args(args).output().unwrap_or_else(|e| panic!("garage {args:?}: {e}"));
    assert!(out.status.success(), "garage {args:?} failed: {}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Polls `ready` every 50 ms until it holds, at most `limit`.
fn wait_for(what: &str, limit: Duration, mut ready: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ready() {
        assert!(start.elapsed() < limit, "Garage: {what} not within {limit:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Garage {
    /// One node, replication factor 1.
    pub fn start() -> Self {
        Self::start_nodes(1)
    }

    /// `n` nodes on loopback, replication factor `n` (1 or 3).
    pub fn start_nodes(n: usize) -> Self {
        let bin = binary();
        let dir = tempfile::tempdir().unwrap();
        let secret_hex: String = (0..4).map(|_| format!("{:016x}", rand::random::<u64>())).collect();
        let mut nodes = Vec::new();
        let mut endpoints = Vec::new();
        for i in 0..n {
            let (rpc_port, s3_port, admin_port) = (free_port(), free_port(), free_port());
            let root = dir.path().join(format!("node{i}"));
            std::fs::create_dir_all(&root).unwrap();
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
            )
            .unwrap();
            endpoints.push(format!("http://127.0.0.1:{s3_port}"));
            nodes.push(Node { config, rpc_port, admin_port, child: None });
        }
        let key_id = format!("GK{:012x}{:012x}", rand::random::<u64>() >> 16, rand::random::<u64>() >> 16);
        let secret: String = (0..4).map(|_| format!("{:016x}", rand::random::<u64>())).collect();
        let mut garage = Self { _dir: dir, bin, nodes, endpoint: endpoints[0].clone(), endpoints, key_id, secret };
        garage.spawn_all();
        garage.form_cluster();
        garage
    }

    fn spawn_all(&mut self) {
        for i in 0..self.nodes.len() {
            self.spawn_node(i);
        }
        // `status` answers once the node's RPC is up.
        for node in &self.nodes {
            wait_for("RPC up", Duration::from_secs(30), || {
                Command::new(&self.bin).arg("-c").arg(&node.config).arg("status").output().is_ok_and(|o| o.status.success())
            });
        }
    }

    fn spawn_node(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let log = std::fs::OpenOptions::new().create(true).append(true).open(node.config.with_file_name("log")).unwrap();
        let child = Command::new(&self.bin)
            .arg("-c")
            .arg(&node.config)
            .arg("server")
            .env("RUST_LOG", "garage=warn")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("start garage {}: {e}", self.bin.display()));
        node.child = Some(child);
    }

    /// Kills node `i` alone (SIGKILL); the others go on.
    pub fn kill_node(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts node `i` again on its data and ports.
    pub fn start_node(&mut self, i: usize) {
        self.kill_node(i);
        self.spawn_node(i);
        let store = self.store_at(&self.endpoints[i].clone(), "");
        wait_for("S3 serving", Duration::from_secs(30), || store.exists("probe/ready").is_ok());
    }

    /// Connects the nodes, assigns the layout, makes the bucket and the key.
    fn form_cluster(&self) {
        let first = &self.nodes[0].config;
        let ids: Vec<String> = self
            .nodes
            .iter()
            .map(|n| garage(&self.bin, &n.config, &["node", "id", "-q"]).trim().split('@').next().unwrap().to_string())
            .collect();
        for (node, id) in self.nodes.iter().zip(&ids).skip(1) {
            garage(&self.bin, first, &["node", "connect", &format!("{id}@127.0.0.1:{}", node.rpc_port)]);
        }
        for id in &ids {
            garage(&self.bin, first, &["layout", "assign", "-z", "dc1", "-c", "1G", id]);
        }
        garage(&self.bin, first, &["layout", "apply", "--version", "1"]);
        garage(&self.bin, first, &["bucket", "create", BUCKET]);
        garage(&self.bin, first, &["key", "import", "--yes", "-n", "screentape", &self.key_id, &self.secret]);
        garage(&self.bin, first, &["bucket", "allow", "--read", "--write", "--owner", BUCKET, "--key", "screentape"]);
        self.wait_until_serving();
    }

    /// Waits until every node's S3 endpoint answers a HEAD on the bucket.
    fn wait_until_serving(&self) {
        for endpoint in &self.endpoints {
            let store = self.store_at(endpoint, "");
            wait_for("S3 serving", Duration::from_secs(30), || store.exists("probe/ready").is_ok());
        }
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

    /// An S3 client on the bucket under `prefix` (to look at what a node stored).
    pub fn store(&self, prefix: &str) -> S3Store {
        self.store_at(&self.endpoint, prefix)
    }

    /// An S3 client talking to node `i`'s endpoint.
    pub fn store_at(&self, endpoint: &str, prefix: &str) -> S3Store {
        S3Store::new(endpoint, REGION, &self.key_id, &self.secret, BUCKET, prefix).expect("S3 client")
    }

    /// S3 requests served so far by the cluster's nodes, by API endpoint (`PutObject`,
    /// `GetObject`, `HeadObject`, `DeleteObject`, `ListObjectsV2`, …), from Garage's metrics.
    pub fn s3_requests(&self) -> std::collections::BTreeMap<String, u64> {
        let mut out = std::collections::BTreeMap::new();
        for node in self.nodes.iter().filter(|n| n.child.is_some()) {
            let text = reqwest::blocking::get(format!("http://127.0.0.1:{}/metrics", node.admin_port)).unwrap().text().unwrap();
            for line in text.lines().filter(|l| l.starts_with("api_s3_request_counter{")) {
                let Some((labels, value)) = line.rsplit_once(' ') else { continue };
                let Some(endpoint) = labels.split("api_endpoint=\"").nth(1).and_then(|r| r.split('"').next()) else { continue };
                *out.entry(endpoint.to_string()).or_insert(0) += value.parse::<f64>().unwrap_or(0.0) as u64;
            }
        }
        out
    }

    /// Kills every node (SIGKILL): the store becomes unreachable.
    pub fn stop(&mut self) {
        for node in &mut self.nodes {
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }

    /// Starts the nodes again on the same data and ports, and waits until S3 answers.
    pub fn restart(&mut self) {
        self.stop();
        self.spawn_all();
        self.wait_until_serving();
    }
}

impl Drop for Garage {
    fn drop(&mut self) {
        self.stop();
    }
}
