//! Snapshots as files beside the store, written and read as streams: a
//! snapshot of a state with a million alerts never sits in memory whole,
//! neither where it is built and sent nor where it is received and
//! installed.
//!
//! Format: the key/value pairs of tree `sm.v1` in key order, each a u32
//! big-endian length and the key's bytes, then the same for the value.
//!
//! Files in the snapshot directory: `snapshot-<index>-<nanos>.snap` (built
//! or installed; the current one is named in tree `sm.v1.snapshot`),
//! `building-*` and `receiving-*` (in progress; removed at start), and
//! `installing.snap` (being installed: the install resumes at start).
//!
//! Architecture invariant: an install replaces the state in bounded
//! batches behind a marker (`meta/installing`, holding the snapshot's
//! meta, removed only once the snapshot is recorded as current); a node
//! that crashes part way finishes the install from `installing.snap` when
//! it starts again, before its start-up check, so it never serves a state
//! that is half one snapshot and half its own; while the marker is there
//! a running node refuses every caller whose certificate it would have to
//! check (UNAVAILABLE), since the revocations may be half installed.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

/// Removals and inserts per sled batch while installing.
const INSTALL_BATCH_RECORDS: usize = 10_000;
/// Bytes per sled batch while installing.
const INSTALL_BATCH_BYTES: usize = 8 << 20;

/// The marker of an install in progress, in `sm.v1`.
pub const INSTALLING: &[u8] = b"meta/installing";
pub const INSTALLING_FILE: &str = "installing.snap";

#[derive(Debug, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {why}")]
    Format { path: PathBuf, why: String },
    #[error("state storage: {0}")]
    Storage(#[from] sled::Error),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotFileError + '_ {
    move |source| SnapshotFileError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Creates (truncating) `path` readable and writable by the owner only:
/// a snapshot holds the whole replicated state.
pub fn create_private(path: &Path) -> std::io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
}

/// Writes every pair of `tree` to `path` and syncs it; returns its size.
pub fn write_tree(tree: &sled::Tree, path: &Path) -> Result<u64, SnapshotFileError> {
    let file = create_private(path).map_err(io(path))?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let mut size = 0u64;
    for kv in tree.iter() {
        let (k, v) = kv?;
        for part in [&k[..], &v[..]] {
            let len = u32::try_from(part.len()).map_err(|_| SnapshotFileError::Format {
                path: path.to_path_buf(),
                why: format!("a record of {} bytes is too large", part.len()),
            })?;
            out.write_all(&len.to_be_bytes()).map_err(io(path))?;
            out.write_all(part).map_err(io(path))?;
            size += 4 + part.len() as u64;
        }
    }
    let file = out.into_inner().map_err(|e| SnapshotFileError::Io {
        path: path.to_path_buf(),
        source: e.into_error(),
    })?;
    file.sync_all().map_err(io(path))?;
    Ok(size)
}

/// Key/value pairs of `sm.v1`.
pub type Records = Vec<(Vec<u8>, Vec<u8>)>;

/// The pairs of a snapshot read from `reader`, one at a time; an error
/// names the byte offset where the data broke.
pub struct SnapshotRecords<R> {
    reader: R,
    at: u64,
}

impl<R: Read> SnapshotRecords<R> {
    pub fn new(reader: R) -> Self {
        Self { reader, at: 0 }
    }

    /// Reads one length-prefixed part; Ok(None) at a clean end.
    fn part(&mut self, first: bool) -> Result<Option<Vec<u8>>, String> {
        let mut len = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            match self.reader.read(&mut len[got..]) {
                Ok(0) if got == 0 && first => return Ok(None),
                Ok(0) => return Err(format!("snapshot truncated at byte {}", self.at)),
                Ok(n) => got += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("reading at byte {}: {e}", self.at)),
            }
        }
        let len = u32::from_be_bytes(len) as usize;
        let mut body = Vec::new();
        let read = (&mut self.reader)
            .take(len as u64)
            .read_to_end(&mut body)
            .map_err(|e| format!("reading at byte {}: {e}", self.at))?;
        if read < len {
            return Err(format!(
                "snapshot record at byte {} runs past the end",
                self.at
            ));
        }
        self.at += 4 + len as u64;
        Ok(Some(body))
    }
}

impl<R: Read> Iterator for SnapshotRecords<R> {
    type Item = Result<(Vec<u8>, Vec<u8>), String>;

    fn next(&mut self) -> Option<Self::Item> {
        let key = match self.part(true) {
            Ok(Some(k)) => k,
            Ok(None) => return None,
            Err(e) => return Some(Err(e)),
        };
        Some(match self.part(false) {
            Ok(Some(v)) => Ok((key, v)),
            Ok(None) => Err(format!("snapshot truncated at byte {}", self.at)),
            Err(e) => Err(e),
        })
    }
}

fn records_in(path: &Path) -> Result<SnapshotRecords<BufReader<File>>, SnapshotFileError> {
    let file = File::open(path).map_err(io(path))?;
    Ok(SnapshotRecords::new(BufReader::with_capacity(
        1 << 20,
        file,
    )))
}

/// Reads the whole snapshot in `path`: an error names where it broke.
pub fn verify(path: &Path) -> Result<(), SnapshotFileError> {
    for record in records_in(path)? {
        record.map_err(|why| SnapshotFileError::Format {
            path: path.to_path_buf(),
            why,
        })?;
    }
    Ok(())
}

/// Replaces the content of `tree` with the snapshot in `path` (checked
/// with [`verify`] first: a bad file would leave the state half
/// replaced), in bounded batches; `keep` are keys left alone until `last` (the final batch,
/// which also removes the [`INSTALLING`] marker) sets them. Syncs.
pub fn install_into(
    tree: &sled::Tree,
    path: &Path,
    keep: &[&[u8]],
    last: Records,
) -> Result<(), SnapshotFileError> {
    // Check the whole file first: a bad snapshot leaves the state as it was.
    let open = || -> Result<SnapshotRecords<BufReader<File>>, SnapshotFileError> {
        let file = File::open(path).map_err(io(path))?;
        Ok(SnapshotRecords::new(BufReader::with_capacity(
            1 << 20,
            file,
        )))
    };
    for record in open()? {
        record.map_err(|why| SnapshotFileError::Format {
            path: path.to_path_buf(),
            why,
        })?;
    }
    let kept = |k: &[u8]| k == INSTALLING || keep.contains(&k);
    let mut batch = sled::Batch::default();
    let (mut records, mut bytes) = (0usize, 0usize);
    let flush_if_full = |batch: &mut sled::Batch,
                         records: &mut usize,
                         bytes: &mut usize|
     -> Result<(), SnapshotFileError> {
        if *records >= INSTALL_BATCH_RECORDS || *bytes >= INSTALL_BATCH_BYTES {
            tree.apply_batch(std::mem::take(batch))?;
            (*records, *bytes) = (0, 0);
        }
        Ok(())
    };
    for k in tree.iter().keys() {
        let k = k?;
        if kept(&k) {
            continue;
        }
        bytes += k.len();
        records += 1;
        batch.remove(k);
        flush_if_full(&mut batch, &mut records, &mut bytes)?;
    }
    tree.apply_batch(std::mem::take(&mut batch))?;
    (records, bytes) = (0, 0);
    for record in records_in(path)? {
        let (k, v) = record.map_err(|why| SnapshotFileError::Format {
            path: path.to_path_buf(),
            why,
        })?;
        if kept(&k) {
            continue;
        }
        bytes += k.len() + v.len();
        records += 1;
        batch.insert(k, v);
        flush_if_full(&mut batch, &mut records, &mut bytes)?;
    }
    for (k, v) in last {
        batch.insert(k, v);
    }
    tree.apply_batch(batch)?;
    tree.flush()?;
    Ok(())
}

/// Syncs directory `dir` (a rename in it is durable after this).
pub fn sync_dir(dir: &Path) -> Result<(), SnapshotFileError> {
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))
}

/// Removes snapshot files other than `current` and, with `in_progress`
/// (at start only), what an earlier run left in progress (`building-*`,
/// `receiving-*`).
pub fn remove_stale(dir: &Path, current: Option<&str>, in_progress: bool) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let stale = (in_progress
            && (name.starts_with("building-") || name.starts_with("receiving-")))
            || (name.starts_with("snapshot-") && Some(name.as_ref()) != current);
        if stale {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}
