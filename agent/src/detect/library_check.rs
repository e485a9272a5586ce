//! Executable files mapped under names that say nothing, judged by their
//! ELF content (`vigil_detection::identify_runtime_library`) once per file
//! version, with the verdict written back to the kernel so that only the
//! mappings of AI runtimes leave it again.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;

use vigil_detection::{identify_runtime_library, RuntimeLibraryBudget};

use crate::sensors::LibraryVerdicts;

/// Bytes one check may read: a real library's dynamic section, hash table
/// and strings are found within 64 KiB; a crafted file stops here.
const CHECK_BYTES: u64 = 256 << 10;
/// File versions remembered; past this the memory is cleared (the kernel
/// keeps its own verdicts, so a forgotten one costs a second check).
const REMEMBERED: usize = 4096;

/// A file version: device, inode, change time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
struct Version {
    dev: u64,
    ino: u64,
    ctime: (i64, i64),
}

/// The runtime a file version is, and how it was known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identified {
    pub runtime: String,
    pub evidence: String,
}

#[derive(Debug, Default)]
pub struct LibraryChecks {
    verdicts: Option<LibraryVerdicts>,
    judged: HashMap<Version, Option<Identified>>,
}

impl LibraryChecks {
    pub fn new(verdicts: Option<LibraryVerdicts>) -> Self {
        Self {
            verdicts,
            judged: HashMap::new(),
        }
    }

    /// What the opened file is, by its content (None: not an AI runtime,
    /// or not a readable ELF file), remembered and told to the kernel.
    pub fn judge(&mut self, file: &std::fs::File, meta: &std::fs::Metadata) -> Option<Identified> {
        let version = Version {
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        };
        if let Some(known) = self.judged.get(&version) {
            return known.clone();
        }
        let budget = RuntimeLibraryBudget {
            max_bytes: CHECK_BYTES,
        };
        let found = match identify_runtime_library(file, &budget) {
            Ok(found) => found.map(|id| Identified {
                runtime: id.runtime.to_string(),
                evidence: id.evidence,
            }),
            Err(e) => {
                tracing::debug!(error = %e, "executable mapping not identified");
                None
            }
        };
        if let Some(verdicts) = &self.verdicts {
            if let Err(e) = verdicts.record(meta, found.is_some()) {
                tracing::warn!(error = %e, "recording a library verdict in the kernel");
            }
        }
        if self.judged.len() >= REMEMBERED {
            self.judged.clear();
        }
        self.judged.insert(version, found.clone());
        found
    }
}
