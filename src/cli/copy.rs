//! `screentape import-data --from DIR`: moves a single-box data dir (SQLite + blob directory)
//! into the store and index the config names (a cluster: `store = s3://…`, `index =
//! postgres://…`). Idempotent: what the target already holds identically is skipped, so an
//! interrupted copy is finished by running it again; what it holds differently is an error,
//! never overwritten.
//!
//! Order, as everywhere in screentape: blobs first, rows after (a segment's row is committed
//! only once its blobs are in the target store), so a copy killed at any moment leaves at worst
//! orphan blobs (which `check --repair` removes), never a row without its bytes.
//! Copied: users and devices (with their token and password hashes, so every token and
//! password keeps working), every segment and init with its captures, the spool (acknowledged
//! uploads not yet encoded, and kept originals) and quarantined uploads. Not copied: sessions
//! (viewers log in again), the garbage list and the 4:2:0 variant cache (made again on demand).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

use screentape::app;
use screentape::clock::{Clock, SystemClock};
use screentape::config::{Config, StoreLocation};
use screentape::index::{NewSegment, Segment};
use screentape::layout::{Layout, SPOOL_PREFIX};
use screentape::store::{Created, LocalStore, Store};

/// What one run did.
#[derive(Debug, Default, serde::Serialize)]
pub struct Copied {
    pub users: usize,
    pub users_present: usize,
    pub devices: usize,
    pub devices_present: usize,
    pub blocks: usize,
    pub blocks_present: usize,
    pub segments: usize,
    pub blobs: usize,
    pub blobs_present: usize,
    pub spool_files: usize,
}

pub fn import_data(config: &Config, from: &Path, json: bool) -> anyhow::Result<()> {
    let copied = run(config, from)?;
    if json {
        println!("{}", serde_json::to_string(&copied)?);
    } else {
        println!(
            "copied {} users, {} devices, {} blocks ({} segments), {} blobs, {} spool files\nalready there: {} users, {} devices, {} blocks, {} blobs",
            copied.users,
            copied.devices,
            copied.blocks,
            copied.segments,
            copied.blobs,
            copied.spool_files,
            copied.users_present,
            copied.devices_present,
            copied.blocks_present,
            copied.blobs_present
        );
    }
    Ok(())
}

fn run(config: &Config, from: &Path) -> anyhow::Result<Copied> {
    let source_layout = Layout::new(from);
    if !source_layout.index().is_file() {
        bail!("{} has no {}: not a screentape data dir", from.display(), screentape::layout::INDEX_FILE);
    }
    let same_dir = |a: &Path| a.canonicalize().ok() == from.canonicalize().ok();
    match config.store_location() {
        StoreLocation::DataDir if same_dir(&config.data_dir) => bail!("the target is the source itself: set `store` and `index` to the cluster's"),
        StoreLocation::Dir(d) if same_dir(&d) => bail!("the target store is the source dir itself"),
        _ => {}
    }
    let src_store = LocalStore::open(from).with_context(|| format!("opening {}", from.display()))?;
    let src_index = screentape::index::open_sqlite(&source_layout.index())?;
    let (_, dst_store, dst_index) = app::open_storage(config)?;
    let (dst_store, dst_index) = (dst_store.as_ref(), dst_index.as_ref());
    let mut copied = Copied::default();
    let now = SystemClock.now_ms();

    // Accounts: users before the devices they own.
    let (users, devices) = src_index.accounts()?;
    for u in &users {
        match dst_index.create_user(&u.name, u.is_admin, &u.token_hash, &u.password_hash, u.created_ms) {
            Ok(_) => copied.users += 1,
            Err(screentape::index::IndexError::Exists(_)) => copied.users_present += 1,
            Err(e) => return Err(e.into()),
        }
    }
    let present: BTreeSet<String> = dst_index.device_ids()?.into_iter().collect();
    for d in &devices {
        if present.contains(&d.id) {
            copied.devices_present += 1;
        } else {
            dst_index.create_device(&d.id, &d.name, d.owner.as_deref(), &d.token_hash, d.created_ms)?;
            copied.devices += 1;
        }
    }

    // Footage, block by block: blobs, then the block's rows in one transaction.
    let mut blocks: BTreeMap<(String, i64, i64), Vec<Segment>> = BTreeMap::new();
    for seg in src_index.all_segments()? {
        let (start, span) = src_index.block_of(&seg.device_id, seg.minute_ms)?;
        blocks.entry((seg.device_id.clone(), start, span)).or_default().push(seg);
    }
    let mut init_sha: BTreeMap<i64, ([u8; 32], String, i64)> = BTreeMap::new();
    for ((device, start, span), segments) in &blocks {
        let want: BTreeSet<&str> = segments.iter().map(|s| s.file.as_str()).collect();
        let there = dst_index.segments_between(device, *start, start + span)?;
        let there_files: BTreeSet<&str> = there.iter().map(|s| s.file.as_str()).collect();
        if there_files == want {
            copied.blocks_present += 1;
            continue;
        }
        if !there.is_empty() {
            bail!("the target already holds other footage for device {device} at {start} (+{span} ms): not overwritten");
        }
        let mut new = Vec::new();
        for seg in segments {
            if !init_sha.contains_key(&seg.init_id) {
                let init = src_index.init(seg.init_id)?.with_context(|| format!("init {} of segment {}", seg.init_id, seg.id))?;
                let bytes = src_store.get(&init.file)?.with_context(|| format!("the source lacks {}", init.file))?;
                let sha: [u8; 32] = Sha256::digest(&bytes).into();
                copy_blob(dst_store, &init.file, &bytes, &mut copied)?;
                init_sha.insert(seg.init_id, (sha, init.file, init.bytes));
            }
            let bytes = src_store.get(&seg.file)?.with_context(|| format!("the source lacks {}", seg.file))?;
            copy_blob(dst_store, &seg.file, &bytes, &mut copied)?;
            let (init_sha256, init_file, init_bytes) = init_sha[&seg.init_id].clone();
            new.push(NewSegment {
                start_ms: seg.start_ms,
                end_ms: seg.end_ms,
                carry_ms: seg.carry_ms,
                init_sha256,
                init_file,
                init_bytes,
                file: seg.file.clone(),
                bytes: seg.bytes,
                codec: seg.codec.clone(),
                width: seg.width,
                height: seg.height,
                frame_count: seg.frame_count,
                captures: src_index.captures_of_segment(seg.id)?.into_iter().map(|f| (f.capture_ms, f.sha256)).collect(),
            });
        }
        let (_, replaced) = dst_index.replace_block(device, (*start, *span), &new, now)?;
        debug_assert!(replaced.is_empty());
        copied.blocks += 1;
        copied.segments += new.len();
    }

    // Acknowledged uploads not yet encoded, kept originals, quarantined uploads: the nodes find
    // the spool at start-up (spool recovery) and encode what is due.
    for prefix in [SPOOL_PREFIX, "quarantine/"] {
        for meta in src_store.list(prefix)? {
            let Some(bytes) = src_store.get(&meta.key)? else { continue };
            let before = copied.blobs;
            copy_blob(dst_store, &meta.key, &bytes, &mut copied)?;
            copied.spool_files += copied.blobs - before;
        }
    }
    Ok(copied)
}

/// Stores `bytes` under `key` in the target; a key already there must hold the same bytes.
fn copy_blob(store: &dyn Store, key: &str, bytes: &[u8], copied: &mut Copied) -> anyhow::Result<()> {
    match store.put_new(key, bytes)? {
        Created::New => copied.blobs += 1,
        Created::AlreadyExists => {
            let there = store.get(key)?.unwrap_or_default();
            if Sha256::digest(&there) != Sha256::digest(bytes) {
                bail!("the target store holds different bytes under {key}: not overwritten");
            }
            copied.blobs_present += 1;
        }
    }
    Ok(())
}
