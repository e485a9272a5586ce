//! Whether a sidecar's death while it loads a version is that version's
//! fault (pure). `vigil-sidecar`'s exit statuses say some causes: 3, the
//! ONNX Runtime library would not load, and 5, it cannot listen (a port
//! or socket path someone else holds), are the host's, never the
//! version's: restarted with backoff, never counted. An OOM kill counts
//! only when it happens again on a retry (two in a row loading that
//! version): the first may be anyone's doing (requests an attacker sent
//! to the sidecar while it loaded). Any other death counts; three in a row
//! fail the version. A load the sidecar confirmed starts the count anew.

use std::collections::BTreeMap;

/// `vigil-sidecar`'s exit status when ONNX Runtime's library does not load.
pub const EXIT_RUNTIME_LIBRARY: i32 = 3;
/// `vigil-sidecar`'s exit status when it cannot listen.
pub const EXIT_CANNOT_LISTEN: i32 = 5;

/// Deaths in a row while loading one version before it is at fault.
pub const DEATHS_TO_FAIL: u32 = 3;
/// OOM kills in a row while loading one version before it is at fault.
pub const OOMS_TO_FAIL: u32 = 2;

/// Why a sidecar ended, as far as it matters to the version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeathCause {
    /// Exit 5: its listen address is taken (or its socket path refused).
    CannotListen,
    /// Exit 3: the ONNX Runtime library did not load.
    RuntimeLibrary,
    /// The cgroup's `oom_kill` went up.
    OutOfMemory,
    /// Anything else (a crash, a signal).
    Other,
}

impl DeathCause {
    /// From the exit status (`None`: killed by a signal, or not known) and
    /// whether the cgroup saw an OOM kill.
    pub fn of(exit_code: Option<i32>, oom: bool) -> DeathCause {
        if oom {
            return DeathCause::OutOfMemory;
        }
        match exit_code {
            Some(EXIT_CANNOT_LISTEN) => DeathCause::CannotListen,
            Some(EXIT_RUNTIME_LIBRARY) => DeathCause::RuntimeLibrary,
            _ => DeathCause::Other,
        }
    }

    /// Whether the model being loaded may be to blame at all.
    pub fn may_be_the_versions(self) -> bool {
        matches!(self, DeathCause::OutOfMemory | DeathCause::Other)
    }
}

/// What follows a death during a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Restart the sidecar (after the backoff) and load it again.
    Restart,
    /// The version is at fault: this is why.
    VersionFailed(String),
}

#[derive(Debug, Default, Clone, Copy)]
struct Streak {
    deaths: u32,
    ooms: u32,
}

/// Deaths in a row while loading each digest.
#[derive(Debug, Default)]
pub struct LoadDeaths {
    streaks: BTreeMap<String, Streak>,
}

impl LoadDeaths {
    /// The sidecar ended (`why`, in words) while loading `digest`, before
    /// it said it loaded it.
    pub fn died_loading(&mut self, digest: &str, cause: DeathCause, why: &str) -> Verdict {
        if !cause.may_be_the_versions() {
            return Verdict::Restart;
        }
        let streak = self.streaks.entry(digest.to_string()).or_default();
        streak.deaths += 1;
        if cause == DeathCause::OutOfMemory {
            streak.ooms += 1;
        }
        let verdict = if streak.ooms >= OOMS_TO_FAIL {
            Verdict::VersionFailed(format!(
                "the sidecar was OOM-killed loading it {} times in a row, the last: {why}",
                streak.ooms
            ))
        } else if streak.deaths >= DEATHS_TO_FAIL {
            Verdict::VersionFailed(format!(
                "the sidecar died loading it {} times in a row, the last: {why}",
                streak.deaths
            ))
        } else {
            return Verdict::Restart;
        };
        self.streaks.remove(digest);
        verdict
    }

    /// The sidecar said it loaded `digest` (or died after it did): the
    /// count starts anew.
    pub fn loaded(&mut self, digest: &str) {
        self.streaks.remove(digest);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_from_exit_statuses() {
        assert_eq!(DeathCause::of(Some(5), false), DeathCause::CannotListen);
        assert_eq!(DeathCause::of(Some(3), false), DeathCause::RuntimeLibrary);
        assert_eq!(DeathCause::of(Some(4), false), DeathCause::Other);
        assert_eq!(DeathCause::of(None, false), DeathCause::Other);
        // The cgroup's OOM count wins over whatever status the kill left.
        assert_eq!(DeathCause::of(None, true), DeathCause::OutOfMemory);
        assert_eq!(DeathCause::of(Some(5), true), DeathCause::OutOfMemory);
    }

    #[test]
    fn a_taken_port_or_a_missing_runtime_never_fails_the_version() {
        let mut d = LoadDeaths::default();
        for _ in 0..20 {
            assert_eq!(
                d.died_loading("a", DeathCause::CannotListen, "exited with status 5"),
                Verdict::Restart
            );
            assert_eq!(
                d.died_loading("a", DeathCause::RuntimeLibrary, "exited with status 3"),
                Verdict::Restart
            );
        }
        // Nor do they count towards the crashes that do.
        assert_eq!(
            d.died_loading("a", DeathCause::Other, "x"),
            Verdict::Restart
        );
        assert_eq!(
            d.died_loading("a", DeathCause::Other, "x"),
            Verdict::Restart
        );
        assert!(matches!(
            d.died_loading("a", DeathCause::Other, "signal 11"),
            Verdict::VersionFailed(w) if w.contains("3 times in a row") && w.contains("signal 11")
        ));
    }

    #[test]
    fn one_oom_kill_is_retried_and_a_second_in_a_row_fails_the_version() {
        let mut d = LoadDeaths::default();
        assert_eq!(
            d.died_loading("a", DeathCause::OutOfMemory, "oom"),
            Verdict::Restart
        );
        assert!(matches!(
            d.died_loading("a", DeathCause::OutOfMemory, "oom again"),
            Verdict::VersionFailed(w) if w.contains("OOM-killed loading it 2 times")
        ));
        // Counted anew after the failure, and per digest.
        assert_eq!(
            d.died_loading("a", DeathCause::OutOfMemory, "oom"),
            Verdict::Restart
        );
        assert_eq!(
            d.died_loading("b", DeathCause::OutOfMemory, "oom"),
            Verdict::Restart
        );
        // A confirmed load in between: the next OOM is a first again.
        d.loaded("a");
        assert_eq!(
            d.died_loading("a", DeathCause::OutOfMemory, "oom"),
            Verdict::Restart
        );
        // A listen failure between two OOMs leaves the streak as it was.
        assert_eq!(
            d.died_loading("a", DeathCause::CannotListen, "status 5"),
            Verdict::Restart
        );
        assert!(matches!(
            d.died_loading("a", DeathCause::OutOfMemory, "oom"),
            Verdict::VersionFailed(_)
        ));
    }

    #[test]
    fn an_oom_and_two_crashes_are_three_deaths() {
        let mut d = LoadDeaths::default();
        assert_eq!(
            d.died_loading("a", DeathCause::OutOfMemory, "oom"),
            Verdict::Restart
        );
        assert_eq!(
            d.died_loading("a", DeathCause::Other, "x"),
            Verdict::Restart
        );
        assert!(matches!(
            d.died_loading("a", DeathCause::Other, "x"),
            Verdict::VersionFailed(w) if w.contains("3 times")
        ));
    }
}
