//! Tests that reopen a sled database they just dropped, as a restarted
//! agent would.

/// Opens the sled database in `dir` just dropped: sled's flusher thread
/// may hold the directory's lock for a moment after the last handle goes
/// (a process that exits releases it at once; a test reopening in-process
/// waits, up to 5 s).
pub fn reopen_sled(dir: &std::path::Path) -> sled::Db {
    for _ in 0..250 {
        if let Ok(db) = sled::open(dir) {
            return db;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    sled::open(dir).expect("reopening sled")
}
