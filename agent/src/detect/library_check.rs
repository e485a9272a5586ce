//! Executable files mapped under names that say nothing, judged by their
//! ELF content (`vigil_detection::identify_runtime_library`) once per file
//! version, with the verdict written back to the kernel so that only the
//! mappings of AI runtimes leave it again.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::time::Instant;

use vigil_detection::{identify_runtime_library, RuntimeLibraryBudget};

use crate::sensors::{FileIdentity, LibraryVerdicts};

/// Bytes one check may read: a real library's dynamic section, hash table
/// and strings are found within 64 KiB (libc: 2 KiB; onnxruntime's wheel:
/// under 64 KiB); a crafted file stops here.
const CHECK_BYTES: u64 = 64 << 10;
/// New file versions one user may have checked per second, and in a burst:
/// a user who makes executable files faster (a flood to hold up the
/// detector) has the rest go unchecked, logged, until the bucket refills.
const CHECKS_PER_SEC_PER_UID: f64 = 20.0;
const CHECK_BURST_PER_UID: f64 = 200.0;
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

/// What a file's content says it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Judgement {
    /// An AI runtime, by its symbols or soname.
    Runtime(Identified),
    /// An ELF file read in full measure that is no AI runtime.
    Plain,
    /// Not read (not ELF, cut short, over budget, or the user's checks
    /// spent): the content says nothing.
    Unknown,
}

#[derive(Debug, Default)]
pub struct LibraryChecks {
    verdicts: Option<LibraryVerdicts>,
    judged: HashMap<Version, Judgement>,
    /// Checks each uid may still make now, and when that was worked out.
    budgets: HashMap<u32, (f64, Instant)>,
    /// Checks refused for a spent budget, since the agent started.
    refused: u64,
}

impl LibraryChecks {
    pub fn new(verdicts: Option<LibraryVerdicts>) -> Self {
        Self {
            verdicts,
            ..Default::default()
        }
    }

    /// What the opened file is, by its content (None: not an AI runtime,
    /// or not a readable ELF file), remembered and told to the kernel
    /// (under `kernel`, the file as the kernel names it, where known: on
    /// overlayfs stat's device is another). `uid` pays for a new check.
    pub fn judge(
        &mut self,
        file: &std::fs::File,
        meta: &std::fs::Metadata,
        kernel: Option<FileIdentity>,
        uid: u32,
    ) -> Judgement {
        let version = Version {
            dev: meta.dev(),
            ino: meta.ino(),
            ctime: (meta.ctime(), meta.ctime_nsec()),
        };
        if let Some(known) = self.judged.get(&version).cloned() {
            // The kernel may have lost its copy (LRU): told again.
            self.tell_kernel(meta, kernel, &known);
            return known;
        }
        if !self.admit(uid) {
            self.refused += 1;
            if self.refused.is_power_of_two() {
                tracing::warn!(
                    uid,
                    refused = self.refused,
                    "executable files made faster than they can be checked: this one is not"
                );
            }
            return Judgement::Unknown;
        }
        let budget = RuntimeLibraryBudget {
            max_bytes: CHECK_BYTES,
        };
        let found = match identify_runtime_library(file, &budget) {
            Ok(Some(id)) => Judgement::Runtime(Identified {
                runtime: id.runtime.to_string(),
                evidence: id.evidence,
            }),
            Ok(None) => Judgement::Plain,
            Err(e) => {
                tracing::debug!(error = %e, "executable mapping not identified");
                Judgement::Unknown
            }
        };
        self.tell_kernel(meta, kernel, &found);
        if self.judged.len() >= REMEMBERED {
            self.judged.clear();
        }
        self.judged.insert(version, found.clone());
        found
    }

    fn tell_kernel(&self, meta: &std::fs::Metadata, kernel: Option<FileIdentity>, j: &Judgement) {
        // An unread file stays unjudged in the kernel: its next mapping
        // comes again.
        if *j == Judgement::Unknown {
            return;
        }
        if let Some(verdicts) = &self.verdicts {
            if let Err(e) = verdicts.record(meta, kernel, matches!(j, Judgement::Runtime(_))) {
                tracing::warn!(error = %e, "recording a library verdict in the kernel");
            }
        }
    }

    /// Takes one check from `uid`'s bucket, if it has one.
    fn admit(&mut self, uid: u32) -> bool {
        let now = Instant::now();
        if self.budgets.len() >= REMEMBERED && !self.budgets.contains_key(&uid) {
            self.budgets.clear();
        }
        let (tokens, at) = self
            .budgets
            .entry(uid)
            .or_insert((CHECK_BURST_PER_UID, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * CHECKS_PER_SEC_PER_UID)
            .min(CHECK_BURST_PER_UID);
        *at = now;
        if *tokens < 1.0 {
            return false;
        }
        *tokens -= 1.0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_user_making_executables_faster_than_they_are_checked_runs_out_of_checks() {
        let mut checks = LibraryChecks::default();
        let admitted = (0..1000).filter(|_| checks.admit(1000)).count();
        assert!(
            (200..=210).contains(&admitted),
            "the burst, and what refilled meanwhile: {admitted}"
        );
        // Another user's checks are their own.
        assert!(checks.admit(0));
    }

    #[test]
    fn a_file_version_is_judged_once_and_an_ordinary_library_is_not_a_runtime() {
        let mut checks = LibraryChecks::default();
        let exe = std::fs::File::open("/proc/self/exe").unwrap();
        let meta = exe.metadata().unwrap();
        assert_eq!(checks.judge(&exe, &meta, None, 0), Judgement::Plain);
        assert_eq!(checks.judged.len(), 1);
        // Remembered: no second check is paid for.
        let before = checks.budgets[&0].0;
        assert_eq!(checks.judge(&exe, &meta, None, 0), Judgement::Plain);
        assert!(checks.budgets[&0].0 >= before);
    }
}
