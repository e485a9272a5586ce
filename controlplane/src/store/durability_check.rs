//! What a node checks of its data directory before it serves: a damaged
//! node refuses to start with a clear error instead of serving (or, worse,
//! starting a new cluster of its own over a store sled could not read).
//!
//! - Every record of the raft log, its metadata and the replicated state
//!   is read (sled verifies each read), and every log entry decodes.
//! - The state machine has applied no entry past the end of the log.
//! - The cluster id the directory was made for (`cluster_id`, a file beside
//!   the store, written once the cluster has one) is the one in the
//!   replicated state, and a directory that belonged to a cluster still
//!   holds a raft state (sled recovers a torn or damaged file by dropping
//!   what follows the damage, which can leave it empty).

use std::path::{Path, PathBuf};

use openraft::Entry;

use crate::raft_types::{LogId, TypeConfig};

/// The file naming the cluster a data directory belongs to.
pub const CLUSTER_ID_FILE: &str = "cluster_id";
/// The file holding an index the state machine had applied (written every
/// few seconds): a store that comes back without it lost writes.
pub const APPLIED_FLOOR_FILE: &str = "applied_floor";

#[derive(Debug, thiserror::Error)]
pub enum DamagedStore {
    #[error("{tree}: record {key} cannot be read: {why}")]
    Unreadable {
        tree: String,
        key: String,
        why: String,
    },
    #[error("the state machine applied entry {applied} but the log ends at {last}: the log lost entries")]
    AppliedPastLog { applied: u64, last: u64 },
    #[error("{file} says this directory belongs to cluster {expected}, but its raft store is empty: the store was lost or damaged (restore the directory, or remove this node from the cluster and add it again with an empty one)")]
    EmptyStore { file: PathBuf, expected: String },
    #[error("{file} says cluster {file_id}, the replicated state says cluster {state_id}: this directory does not belong here")]
    OtherCluster {
        file: PathBuf,
        file_id: String,
        state_id: String,
    },
    #[error("{file} says cluster {expected}, but the replicated state has no cluster id: the state was lost or damaged (restore the directory, or remove this node from the cluster and add it again with an empty one)")]
    StateLost { file: PathBuf, expected: String },
    #[error("the store ends at entry {last} but entry {floor} was applied before ({file}): it lost writes (restore the directory, or remove this node from the cluster and add it again with an empty one)")]
    LostWrites {
        file: PathBuf,
        floor: u64,
        last: u64,
    },
    #[error("reading {file}: {why}")]
    ClusterIdFile { file: PathBuf, why: String },
}

fn hex_key(k: &[u8]) -> String {
    if k.iter().all(|b| b.is_ascii_graphic()) {
        String::from_utf8_lossy(k).into_owned()
    } else {
        format!("0x{}", hex::encode(k))
    }
}

/// Reads every record of every tree of `db`; checks the log against the
/// state machine and the cluster id against `data_dir`'s file.
pub fn check_store(db: &sled::Db, data_dir: &Path) -> Result<(), DamagedStore> {
    let unreadable = |tree: &str, key: &[u8], why: String| DamagedStore::Unreadable {
        tree: tree.to_string(),
        key: hex_key(key),
        why,
    };
    let mut last_log: Option<u64> = None;
    let mut entries = 0u64;
    for name in db.tree_names() {
        let tree = db
            .open_tree(&name)
            .map_err(|e| unreadable(&String::from_utf8_lossy(&name), b"", e.to_string()))?;
        let tree_name = String::from_utf8_lossy(&name).into_owned();
        for kv in tree.iter() {
            let (k, v) = kv.map_err(|e| unreadable(&tree_name, b"?", e.to_string()))?;
            if tree_name == "raft.v1.log" {
                let entry: Entry<TypeConfig> = serde_json::from_slice(&v)
                    .map_err(|e| unreadable(&tree_name, &k, format!("not a log entry: {e}")))?;
                last_log = Some(entry.log_id.index);
                entries += 1;
            }
        }
    }
    let meta = db
        .open_tree("raft.v1.meta")
        .map_err(|e| unreadable("raft.v1.meta", b"", e.to_string()))?;
    let read_meta = |k: &[u8]| -> Result<Option<serde_json::Value>, DamagedStore> {
        match meta.get(k) {
            Ok(None) => Ok(None),
            Ok(Some(v)) => serde_json::from_slice(&v)
                .map(Some)
                .map_err(|e| unreadable("raft.v1.meta", k, e.to_string())),
            Err(e) => Err(unreadable("raft.v1.meta", k, e.to_string())),
        }
    };
    let vote = read_meta(b"vote")?;
    let last_purged: Option<LogId> = read_meta(b"last_purged")?
        .and_then(|v| serde_json::from_value::<Option<LogId>>(v).ok())
        .flatten();
    let sm = db
        .open_tree("sm.v1")
        .map_err(|e| unreadable("sm.v1", b"", e.to_string()))?;
    let applied: Option<LogId> = match sm.get(b"meta/last_applied") {
        Ok(Some(v)) => serde_json::from_slice::<Option<LogId>>(&v)
            .map_err(|e| unreadable("sm.v1", b"meta/last_applied", e.to_string()))?,
        Ok(None) => None,
        Err(e) => return Err(unreadable("sm.v1", b"meta/last_applied", e.to_string())),
    };
    let cluster_id: Option<String> = match sm.get(b"meta/cluster_id") {
        Ok(Some(v)) => Some(
            serde_json::from_slice(&v)
                .map_err(|e| unreadable("sm.v1", b"meta/cluster_id", e.to_string()))?,
        ),
        Ok(None) => None,
        Err(e) => return Err(unreadable("sm.v1", b"meta/cluster_id", e.to_string())),
    };
    // The log may be purged up to a snapshot the state machine holds.
    let last = last_log.or(last_purged.map(|l| l.index)).unwrap_or(0);
    if let Some(applied) = applied {
        if applied.index > last {
            return Err(DamagedStore::AppliedPastLog {
                applied: applied.index,
                last,
            });
        }
    }
    let initialised = vote.is_some() || entries > 0 || last_purged.is_some();
    let file = data_dir.join(CLUSTER_ID_FILE);
    match std::fs::read_to_string(&file) {
        Ok(text) => {
            let expected = text.trim().to_string();
            if !initialised {
                return Err(DamagedStore::EmptyStore { file, expected });
            }
            match &cluster_id {
                Some(state_id) if *state_id != expected => {
                    return Err(DamagedStore::OtherCluster {
                        file,
                        file_id: expected,
                        state_id: state_id.clone(),
                    });
                }
                Some(_) => {}
                // The file is written only once the state has the id.
                None => return Err(DamagedStore::StateLost { file, expected }),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(DamagedStore::ClusterIdFile {
                file,
                why: e.to_string(),
            })
        }
    }
    let floor_file = data_dir.join(APPLIED_FLOOR_FILE);
    if let Ok(text) = std::fs::read_to_string(&floor_file) {
        let floor: u64 = text.trim().parse().unwrap_or(0);
        let reached = last.max(applied.map_or(0, |l| l.index));
        if reached < floor {
            return Err(DamagedStore::LostWrites {
                file: floor_file,
                floor,
                last: reached,
            });
        }
    }
    Ok(())
}

/// Records that entry `index` was applied (after the state machine has
/// flushed it), for the next start's check.
pub fn write_applied_floor(data_dir: &Path, index: u64) -> std::io::Result<()> {
    replace_small_file(data_dir, APPLIED_FLOOR_FILE, &index.to_string())
}

/// Writes `data_dir`'s cluster id file (once the cluster has an id).
pub fn write_cluster_id(data_dir: &Path, id: &str) -> std::io::Result<()> {
    replace_small_file(data_dir, CLUSTER_ID_FILE, id)
}

/// Replaces `data_dir/name` with `text` and a newline (written, synced,
/// renamed into place, the directory synced).
fn replace_small_file(data_dir: &Path, name: &str, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let file = data_dir.join(name);
    let tmp = data_dir.join(format!(".{name}.new"));
    let _ = std::fs::remove_file(&tmp);
    // Made anew (never through a planted symlink), readable by the node
    // alone.
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(format!("{text}\n").as_bytes())?;
    f.sync_all()?;
    std::fs::rename(&tmp, &file)?;
    std::fs::File::open(data_dir)?.sync_all()
}
