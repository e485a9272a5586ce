use super::durability_check::{check_store, DamagedStore};
use super::{ReadError, SledLogStore, SledStateMachine, StateReader};

/// sled's page cache (its default is 1 GiB, which a node with a million
/// alerts fills).
const STORE_CACHE_BYTES: u64 = 256 << 20;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("opening the raft store in {dir}")]
    Open { dir: String, source: ReadError },
    #[error("the raft store in {dir} is damaged")]
    Damaged { dir: String, source: DamagedStore },
}

/// Opens the stores of the node whose data directory is `data_dir` (sled
/// in `data_dir/raft`, snapshot files in `data_dir/snapshots.v1`) after
/// checking them (`durability_check.rs`).
pub fn open_checked(
    data_dir: &std::path::Path,
) -> Result<(SledLogStore, SledStateMachine, StateReader), OpenError> {
    let dir = data_dir.join("raft");
    let shown = dir.display().to_string();
    let db = sled::Config::new()
        .path(&dir)
        .mode(sled::Mode::HighThroughput)
        .cache_capacity(STORE_CACHE_BYTES)
        .open()
        .map_err(|e| OpenError::Open {
            dir: shown.clone(),
            source: e.into(),
        })?;
    // A snapshot install a crash cut off is finished first: until then the
    // state is half old, half snapshot, and the check would refuse it.
    let snapshot_dir = data_dir.join("snapshots.v1");
    if snapshot_dir.exists() {
        crate::store::state_machine::finish_interrupted_install(&db, &snapshot_dir).map_err(
            |e| OpenError::Open {
                dir: shown.clone(),
                source: ReadError::Snapshot(e.to_string()),
            },
        )?;
    }
    check_store(&db, data_dir).map_err(|source| OpenError::Damaged {
        dir: shown.clone(),
        source,
    })?;
    let open = |source: ReadError| OpenError::Open {
        dir: shown.clone(),
        source,
    };
    let log = SledLogStore::open(&db).map_err(|e| open(e.into()))?;
    let (sm, reader) = SledStateMachine::open(&db, &snapshot_dir).map_err(open)?;
    Ok((log, sm, reader))
}

/// Opens (creating) the sled database at `dir` and both raft stores on it
/// (snapshot files in `dir/snapshots.v1`).
pub fn open_stores(
    dir: &std::path::Path,
) -> Result<(SledLogStore, SledStateMachine, StateReader), ReadError> {
    let db = sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
        .cache_capacity(STORE_CACHE_BYTES)
        .open()?;
    let log = SledLogStore::open(&db)?;
    let (sm, reader) = SledStateMachine::open(&db, &dir.join("snapshots.v1"))?;
    Ok((log, sm, reader))
}
