//! A sidecar's cgroup: `<cgroup2>/vigil/sidecars/<name>`, with the
//! memory (`memory.max`, no swap) and CPU (`cpu.max`) limits of the
//! record it serves. The sidecar is placed in it before it executes, so
//! everything it does is counted and limited there; after it dies,
//! `memory.events` tells an OOM kill apart.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cgroup under the agent's own (`<cgroup2>/vigil`) that holds every
/// sidecar's: one parent, so one approval prefix covers them all.
pub const SIDECARS_CGROUP: &str = "vigil/sidecars";
/// cpu.max's period in microseconds: 1000 millicores is one period.
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub memory_max_bytes: u64,
    /// 0: unlimited.
    pub cpu_millicores: u32,
}

impl Limits {
    /// `cpu.max`'s content: "QUOTA PERIOD", or "max PERIOD".
    pub fn cpu_max(&self) -> String {
        if self.cpu_millicores == 0 {
            format!("max {CPU_PERIOD_US}")
        } else {
            // At least 1 ms of CPU per period (the kernel's minimum).
            let quota = (self.cpu_millicores as u64 * CPU_PERIOD_US / 1000).max(1000);
            format!("{quota} {CPU_PERIOD_US}")
        }
    }
}

/// Where sidecar cgroups go, once it is set up.
#[derive(Debug, Clone)]
pub struct SidecarCgroups {
    mount: PathBuf,
    parent: PathBuf,
}

impl SidecarCgroups {
    /// Makes `<mount>/vigil/sidecars` and lets its children have memory and
    /// cpu limits (both controllers enabled on the way down).
    pub fn prepare(mount: &Path) -> Result<SidecarCgroups, String> {
        let vigil = mount.join("vigil");
        let parent = mount.join(SIDECARS_CGROUP);
        std::fs::create_dir_all(&parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        for dir in [mount, vigil.as_path(), parent.as_path()] {
            enable_controllers(dir)?;
        }
        Ok(SidecarCgroups {
            mount: mount.to_path_buf(),
            parent,
        })
    }

    /// The cgroup path of the sidecars' parent as /proc/PID/cgroup shows
    /// it (`/vigil/sidecars`): the approval's prefix.
    pub fn prefix(&self) -> String {
        format!("/{SIDECARS_CGROUP}")
    }

    pub fn dir(&self, name: &str) -> PathBuf {
        self.parent.join(name)
    }

    /// The cgroup for the sidecar of `name`, made (or emptied, when one is
    /// left from an earlier agent) with `limits` set.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<SidecarCgroup, String> {
        vigil_domain::check_model_name(name)?;
        let dir = self.dir(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let meta = std::fs::symlink_metadata(&dir)
                    .map_err(|e| format!("{}: {e}", dir.display()))?;
                if !meta.is_dir() {
                    return Err(format!("{}: not a cgroup directory", dir.display()));
                }
                let left = SidecarCgroup { dir: dir.clone() };
                if left.is_populated() {
                    tracing::warn!(cgroup = %dir.display(), "killing what an earlier sidecar left in its cgroup");
                    left.kill_all();
                    left.wait_empty(Duration::from_secs(5));
                }
            }
            Err(e) => return Err(format!("creating {}: {e}", dir.display())),
        }
        let cgroup = SidecarCgroup { dir };
        cgroup.set_limits(limits)?;
        Ok(cgroup)
    }

    pub fn mount(&self) -> &Path {
        &self.mount
    }
}

/// Adds the memory and cpu controllers to a cgroup's children. Without
/// memory the sidecars cannot be limited (an error); without cpu they run
/// without a CPU limit (logged).
fn enable_controllers(dir: &Path) -> Result<(), String> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers"))
        .map_err(|e| format!("reading {}/cgroup.controllers: {e}", dir.display()))?;
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for controller in ["memory", "cpu"] {
        if enabled.split_whitespace().any(|c| c == controller) {
            continue;
        }
        let enabled = if available.split_whitespace().any(|c| c == controller) {
            std::fs::write(dir.join("cgroup.subtree_control"), format!("+{controller}")).map_err(
                |e| {
                    format!(
                        "enabling the {controller} controller in {}/cgroup.subtree_control: {e}",
                        dir.display()
                    )
                },
            )
        } else {
            Err(format!(
                "{}: the {controller} controller is not available",
                dir.display()
            ))
        };
        match enabled {
            Ok(()) => {}
            Err(e) if controller == "cpu" => {
                tracing::warn!(error = %e, "sidecars run without a CPU limit")
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
pub struct SidecarCgroup {
    dir: PathBuf,
}

impl SidecarCgroup {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets memory.max, memory.swap.max (0: a sidecar over its limit is
    /// killed, never swapped) and cpu.max.
    pub fn set_limits(&self, limits: &Limits) -> Result<(), String> {
        let write = |file: &str, value: String| {
            std::fs::write(self.dir.join(file), &value)
                .map_err(|e| format!("writing {value:?} to {}/{file}: {e}", self.dir.display()))
        };
        write("memory.max", limits.memory_max_bytes.to_string())?;
        // Absent without swap accounting: nothing to turn off then.
        if self.dir.join("memory.swap.max").exists() {
            write("memory.swap.max", "0".into())?;
        }
        if self.dir.join("cpu.max").exists() {
            write("cpu.max", limits.cpu_max())?;
        }
        Ok(())
    }

    /// `cgroup.procs`, open for writing: the child writes "0" to it
    /// between fork and exec to move itself in.
    pub fn procs_for_writing(&self) -> std::io::Result<std::fs::File> {
        std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(self.dir.join("cgroup.procs"))
    }

    /// The OOM kills counted so far (`memory.events`' `oom_kill`).
    pub fn oom_kills(&self) -> u64 {
        std::fs::read_to_string(self.dir.join("memory.events"))
            .ok()
            .and_then(|s| oom_kill_count(&s))
            .unwrap_or(0)
    }

    /// Whether any process is in it.
    pub fn is_populated(&self) -> bool {
        std::fs::read_to_string(self.dir.join("cgroup.events"))
            .map(|s| s.lines().any(|l| l.trim() == "populated 1"))
            .unwrap_or(false)
    }

    /// SIGKILLs every process in it (`cgroup.kill`).
    pub fn kill_all(&self) {
        if let Err(e) = std::fs::write(self.dir.join("cgroup.kill"), "1") {
            tracing::warn!(cgroup = %self.dir.display(), error = %e, "cgroup.kill failed");
        }
    }

    /// Waits (blocking, polling) until no process is left, at most `max`.
    pub fn wait_empty(&self, max: Duration) -> bool {
        let until = std::time::Instant::now() + max;
        while self.is_populated() {
            if std::time::Instant::now() >= until {
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        true
    }

    /// Kills what is left and removes the cgroup.
    pub fn remove(&self) -> Result<(), String> {
        if self.is_populated() {
            self.kill_all();
            self.wait_empty(Duration::from_secs(5));
        }
        match std::fs::remove_dir(&self.dir) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", self.dir.display())),
        }
    }
}

/// `oom_kill N` from a memory.events file.
pub fn oom_kill_count(events: &str) -> Option<u64> {
    events.lines().find_map(|l| {
        let (key, value) = l.split_once(' ')?;
        (key == "oom_kill").then(|| value.trim().parse().ok())?
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_kills_are_read_from_memory_events() {
        let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(events), Some(2));
        assert_eq!(oom_kill_count("oom 1\n"), None);
        assert_eq!(oom_kill_count("oom_kill x\n"), None);
        assert_eq!(oom_kill_count("oom_group_kill 4\noom_kill 7"), Some(7));
    }

    #[test]
    fn cpu_max_follows_millicores() {
        let l = |m| Limits {
            memory_max_bytes: 1,
            cpu_millicores: m,
        };
        assert_eq!(l(0).cpu_max(), "max 100000");
        assert_eq!(l(1000).cpu_max(), "100000 100000");
        assert_eq!(l(1500).cpu_max(), "150000 100000");
        assert_eq!(l(250).cpu_max(), "25000 100000");
        // Below the kernel's 1 ms minimum quota: the minimum.
        assert_eq!(l(1).cpu_max(), "1000 100000");
    }

    #[test]
    fn a_bad_name_makes_no_cgroup() {
        let cgroups = SidecarCgroups {
            mount: "/nonexistent".into(),
            parent: "/nonexistent/vigil/sidecars".into(),
        };
        let limits = Limits {
            memory_max_bytes: 1,
            cpu_millicores: 0,
        };
        for bad in ["..", "../x", "a/b", ""] {
            assert!(cgroups.create(bad, &limits).is_err(), "{bad}");
        }
    }
}
