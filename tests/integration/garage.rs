//! A throwaway Garage cluster (a real, distributed S3-compatible store) on free loopback ports
//! in a temp dir: 1 node, or 3 nodes with `replication_factor = 3`, as `screentape bench
//! cluster` starts it (`src/cli/engines.rs`, which says where the Garage binary is looked for).
//! A bucket and a key are made ready; the nodes are killed on drop. `stop` / `restart` and
//! `kill_node` / `start_node` take the store away and bring it back (same data, same ports) for
//! the failure tests.

use std::collections::BTreeMap;

use screentape::store::S3Store;

use crate::engines;
pub use crate::engines::{BUCKET, REGION};

/// A running Garage cluster (the bench's, `src/cli/engines.rs`); every node is killed on drop.
/// A failure is a panic.
pub struct Garage(engines::Garage);

impl Garage {
    /// One node, replication factor 1.
    pub fn start() -> Self {
        Self::start_nodes(1)
    }

    /// `n` nodes on loopback, replication factor `n` (1 or 3).
    pub fn start_nodes(n: usize) -> Self {
        Self(engines::Garage::start_nodes(n).expect("a throwaway Garage cluster"))
    }

    /// Starts node `i` again on its data and ports (after `kill_node(i)`).
    pub fn start_node(&mut self, i: usize) {
        self.0.start_node(i).expect("Garage node started again");
    }

    /// Starts the nodes again on the same data and ports (after `stop()`), and waits until S3 answers.
    pub fn restart(&mut self) {
        self.0.restart().expect("Garage started again");
    }

    /// An S3 client on the bucket under `prefix` (to look at what a node stored).
    pub fn store(&self, prefix: &str) -> S3Store {
        self.store_at(&self.endpoint, prefix)
    }

    /// An S3 client talking to one node's endpoint.
    pub fn store_at(&self, endpoint: &str, prefix: &str) -> S3Store {
        self.0.store_at(endpoint, prefix).expect("S3 client")
    }

    /// S3 requests served so far by the cluster's live nodes, by API endpoint.
    pub fn s3_requests(&self) -> BTreeMap<String, u64> {
        self.0.s3_requests().expect("Garage metrics")
    }
}

impl std::ops::Deref for Garage {
    type Target = engines::Garage;

    fn deref(&self) -> &engines::Garage {
        &self.0
    }
}

impl std::ops::DerefMut for Garage {
    fn deref_mut(&mut self) -> &mut engines::Garage {
        &mut self.0
    }
}
