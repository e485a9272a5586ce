use super::durability_check::{check_store, DamagedStore};
use super::{ReadError, SledLogStore, SledStateMachine, StateReader};

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("opening the raft store in {dir}")]
    Open { dir: String, source: ReadError },
    #[error("the raft store in {dir} is damaged")]
    Damaged { dir: String, source: DamagedStore },
}

/// Opens the stores of the node whose data directory is `data_dir` (sled
/// in `data_dir/raft`) after checking them (`durability_check.rs`).
pub fn open_checked(
    data_dir: &std::path::Path,
) -> Result<(SledLogStore, SledStateMachine, StateReader), OpenError> {
    let dir = data_dir.join("raft");
    let shown = dir.display().to_string();
    let db = sled::Config::new()
        .path(&dir)
        .mode(sled::Mode::HighThroughput)
        .open()
        .map_err(|e| OpenError::Open {
            dir: shown.clone(),
            source: e.into(),
        })?;
    check_store(&db, data_dir).map_err(|source| OpenError::Damaged {
        dir: shown.clone(),
        source,
    })?;
    let open = |source: ReadError| OpenError::Open {
        dir: shown.clone(),
        source,
    };
    let log = SledLogStore::open(&db).map_err(|e| open(e.into()))?;
    let (sm, reader) = SledStateMachine::open(&db).map_err(open)?;
    Ok((log, sm, reader))
}

/// Opens (creating) the sled database at `dir` and both raft stores on it.
pub fn open_stores(
    dir: &std::path::Path,
) -> Result<(SledLogStore, SledStateMachine, StateReader), ReadError> {
    let db = sled::Config::new()
        .path(dir)
        .mode(sled::Mode::HighThroughput)
        .open()?;
    let log = SledLogStore::open(&db)?;
    let (sm, reader) = SledStateMachine::open(&db)?;
    Ok((log, sm, reader))
}
