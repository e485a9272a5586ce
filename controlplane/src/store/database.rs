use super::{ReadError, SledLogStore, SledStateMachine, StateReader};

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
