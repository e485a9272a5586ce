//! What the agent found in executable files mapped under names that say
//! nothing, written back to the kernel's `LIBRARY_VERDICTS` by file
//! version: the kernel then keeps later mappings of a plain library to
//! itself and sends every mapping of an AI runtime (see `vigil_event.h`).

use std::os::unix::fs::MetadataExt;
use std::sync::{Arc, Mutex};

use aya::maps::{HashMap as BpfHashMap, MapData, MapError};

use super::event_layout::{RawLibraryKey, RawLibraryVerdict, LIBRARY_AI_RUNTIME, LIBRARY_PLAIN};

/// A handle on the kernel's verdict table, shared by the sensor that
/// loaded it and the detector that judges files.
#[derive(Clone)]
pub struct LibraryVerdicts {
    map: Arc<Mutex<BpfHashMap<MapData, RawLibraryKey, RawLibraryVerdict>>>,
}

impl std::fmt::Debug for LibraryVerdicts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LibraryVerdicts")
    }
}

impl LibraryVerdicts {
    pub fn new(map: BpfHashMap<MapData, RawLibraryKey, RawLibraryVerdict>) -> Self {
        Self {
            map: Arc::new(Mutex::new(map)),
        }
    }

    /// Records the verdict on the file version `meta` describes (as read
    /// by the agent: a file changed since has another change time, and
    /// the kernel sends its next mapping again).
    /// `kernel` is the file as the kernel named it in its record, where
    /// known (overlayfs: stat gives another device than the kernel's).
    pub fn record(
        &self,
        meta: &std::fs::Metadata,
        kernel: Option<super::FileIdentity>,
        ai_runtime: bool,
    ) -> Result<(), MapError> {
        let (mut key, verdict) = entry(meta, ai_runtime);
        if let Some(id) = kernel {
            key.dev = kernel_dev(id.dev);
            key.ino = id.ino;
        }
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        map.insert(key, verdict, 0)
    }
}

/// stat's dev_t back to the kernel's own encoding (major << 20 | minor).
fn kernel_dev(dev: u64) -> u32 {
    (libc::major(dev) << 20) | (libc::minor(dev) & 0xf_ffff)
}

/// The kernel's key and verdict for a file version.
fn entry(meta: &std::fs::Metadata, ai_runtime: bool) -> (RawLibraryKey, RawLibraryVerdict) {
    (
        RawLibraryKey {
            ino: meta.ino(),
            dev: kernel_dev(meta.dev()),
            pad: 0,
        },
        RawLibraryVerdict {
            ctime_sec: meta.ctime(),
            ctime_nsec: meta.ctime_nsec() as u32,
            state: if ai_runtime {
                LIBRARY_AI_RUNTIME
            } else {
                LIBRARY_PLAIN
            },
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::FileIdentity;

    #[test]
    fn the_key_is_the_kernels_encoding_of_the_file() {
        let meta = std::fs::metadata("/proc/self/exe").unwrap();
        let (key, verdict) = entry(&meta, true);
        // Decoded as the sensors decode the kernel's dev_t, it is stat's.
        let back = FileIdentity::from_kernel(u64::from(key.dev), key.ino).unwrap();
        assert_eq!(back, FileIdentity::of(&meta));
        assert_eq!(verdict.state, LIBRARY_AI_RUNTIME);
        assert_eq!(verdict.ctime_sec, meta.ctime());
        assert_eq!(entry(&meta, false).1.state, LIBRARY_PLAIN);
    }
}
