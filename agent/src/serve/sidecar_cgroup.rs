//! A sidecar's cgroup: `<cgroup2>/vigil/sidecars/<name>`, with the
//! memory limit (no swap) and CPU limit of the record it serves. The
//! sidecar is placed in it before it executes, so everything it does is
//! counted and limited there; after it dies, the OOM-kill counter tells
//! an OOM kill apart.
//!
//! With cgroup v2's memory controller (`memory.max`, `memory.swap.max`,
//! `cpu.max`, `memory.events`). On a hybrid host, where memory and cpu
//! are cgroup v1 hierarchies and v2 holds no controller, the v2 cgroup
//! still names the sidecar (the approval's prefix, `cgroup.kill`,
//! `cgroup.events`) and the limits live in v1 cgroups of the same name
//! below the agent's own (`memory.limit_in_bytes` and
//! `memory.memsw.limit_in_bytes`, `cpu.cfs_quota_us`,
//! `memory.oom_control`).

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The cgroup under the agent's own (`<cgroup2>/vigil`) that holds every
/// sidecar's: one parent, so one approval prefix covers them all.
pub const SIDECARS_CGROUP: &str = "vigil/sidecars";
/// The v1 cgroups' parent, below the agent's own v1 cgroup.
const V1_SIDECARS: &str = "vigil-sidecars";
/// The CPU period in microseconds: 1000 millicores is one period.
const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    pub memory_max_bytes: u64,
    /// 0: unlimited.
    pub cpu_millicores: u32,
}

impl Limits {
    /// The CPU quota per period in microseconds (None: unlimited). At
    /// least 1 ms, the kernel's minimum.
    pub fn cpu_quota_us(&self) -> Option<u64> {
        (self.cpu_millicores != 0)
            .then(|| (self.cpu_millicores as u64 * CPU_PERIOD_US / 1000).max(1000))
    }

    /// `cpu.max`'s content: "QUOTA PERIOD", or "max PERIOD".
    pub fn cpu_max(&self) -> String {
        match self.cpu_quota_us() {
            Some(q) => format!("{q} {CPU_PERIOD_US}"),
            None => format!("max {CPU_PERIOD_US}"),
        }
    }
}

/// Where the limits are set.
#[derive(Debug, Clone)]
enum Limiter {
    /// cgroup v2 controllers, in the sidecar's v2 cgroup.
    V2,
    /// cgroup v1 hierarchies: the parents of the sidecars' memory and
    /// (when mounted) cpu cgroups.
    V1 {
        memory: PathBuf,
        cpu: Option<PathBuf>,
    },
}

/// Where sidecar cgroups go, once it is set up.
#[derive(Debug, Clone)]
pub struct SidecarCgroups {
    parent: PathBuf,
    limiter: Limiter,
}

impl SidecarCgroups {
    /// Makes `<mount>/vigil/sidecars` and the way its children get
    /// memory and cpu limits: v2 controllers enabled on the way down, or
    /// on a hybrid host the v1 memory and cpu hierarchies.
    pub fn prepare(mount: &Path) -> Result<SidecarCgroups, String> {
        let vigil = mount.join("vigil");
        let parent = mount.join(SIDECARS_CGROUP);
        std::fs::create_dir_all(&parent)
            .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        let available = std::fs::read_to_string(mount.join("cgroup.controllers"))
            .map_err(|e| format!("reading {}/cgroup.controllers: {e}", mount.display()))?;
        let limiter = if available.split_whitespace().any(|c| c == "memory") {
            for dir in [mount, vigil.as_path(), parent.as_path()] {
                enable_controllers(dir)?;
            }
            Limiter::V2
        } else {
            let mounts = std::fs::read_to_string("/proc/self/mounts")
                .map_err(|e| format!("reading /proc/self/mounts: {e}"))?;
            let own = std::fs::read_to_string("/proc/self/cgroup")
                .map_err(|e| format!("reading /proc/self/cgroup: {e}"))?;
            let v1 = |controller: &str| -> Option<PathBuf> {
                let root = v1_mount(&mounts, controller)?;
                let at = v1_path(&own, controller).unwrap_or_else(|| "/".into());
                Some(root.join(at.trim_start_matches('/')).join(V1_SIDECARS))
            };
            let memory = v1(Controller::Memory.as_str()).ok_or_else(|| {
                format!(
                    "{}: cgroup v2 has no memory controller and no cgroup v1 memory hierarchy is mounted: sidecars could not be limited",
                    mount.display()
                )
            })?;
            std::fs::create_dir_all(&memory)
                .map_err(|e| format!("creating {}: {e}", memory.display()))?;
            let cpu = v1(Controller::Cpu.as_str()).and_then(|cpu| match std::fs::create_dir_all(&cpu) {
                Ok(()) => Some(cpu),
                Err(e) => {
                    tracing::warn!(cgroup = %cpu.display(), error = %e, "sidecars run without a CPU limit");
                    None
                }
            });
            tracing::info!(memory = %memory.display(), cpu = ?cpu, "hybrid cgroups: sidecar limits in cgroup v1");
            Limiter::V1 { memory, cpu }
        };
        Ok(SidecarCgroups { parent, limiter })
    }

    /// The cgroup path of the sidecars' parent as /proc/PID/cgroup shows
    /// it (`/vigil/sidecars`): the approval's prefix.
    pub fn prefix(&self) -> String {
        format!("/{SIDECARS_CGROUP}")
    }

    /// The sidecar's (v2) cgroup directory.
    pub fn dir(&self, name: &str) -> PathBuf {
        self.parent.join(name)
    }

    /// The cgroup of the sidecar of `name`, whether or not it exists.
    pub fn of(&self, name: &str) -> SidecarCgroup {
        SidecarCgroup {
            dir: self.dir(name),
            v1: match &self.limiter {
                Limiter::V2 => None,
                Limiter::V1 { memory, cpu } => Some(V1Cgroups {
                    memory: memory.join(name),
                    cpu: cpu.as_ref().map(|c| c.join(name)),
                }),
            },
        }
    }

    /// The cgroup for the sidecar of `name`, made (or emptied, when one is
    /// left from an earlier agent) with `limits` set.
    pub fn create(&self, name: &str, limits: &Limits) -> Result<SidecarCgroup, String> {
        vigil_domain::check_model_name(name)?;
        let cgroup = self.of(name);
        let mut dirs = vec![cgroup.dir.clone()];
        if let Some(v1) = &cgroup.v1 {
            dirs.push(v1.memory.clone());
            dirs.extend(v1.cpu.clone());
        }
        for dir in &dirs {
            match std::fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let meta = std::fs::symlink_metadata(dir)
                        .map_err(|e| format!("{}: {e}", dir.display()))?;
                    if !meta.is_dir() {
                        return Err(format!("{}: not a cgroup directory", dir.display()));
                    }
                }
                Err(e) => return Err(format!("creating {}: {e}", dir.display())),
            }
        }
        if cgroup.is_populated() {
            tracing::warn!(cgroup = %cgroup.dir.display(), "killing what an earlier sidecar left in its cgroup");
            cgroup.kill_all();
            cgroup.wait_empty(Duration::from_secs(5));
        }
        cgroup.set_limits(limits)?;
        Ok(cgroup)
    }
}

#[derive(Debug, Clone, Copy)]
enum Controller {
    Memory,
    Cpu,
}

impl Controller {
    fn as_str(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Cpu => "cpu",
        }
    }
}

/// Where the v1 hierarchy holding `controller` is mounted, from
/// /proc/self/mounts (`cgroup /sys/fs/cgroup/memory cgroup rw,memory 0 0`).
fn v1_mount(mounts: &str, controller: &str) -> Option<PathBuf> {
    mounts.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() >= 4 && f[2] == "cgroup" && f[3].split(',').any(|o| o == controller))
            .then(|| PathBuf::from(f[1]))
    })
}

/// This process's cgroup in the v1 hierarchy of `controller`, from
/// /proc/self/cgroup (`4:memory:/system.slice/vigil-agent.service`).
fn v1_path(cgroup: &str, controller: &str) -> Option<String> {
    cgroup.lines().find_map(|l| {
        let mut parts = l.splitn(3, ':');
        let (_, controllers, path) = (parts.next()?, parts.next()?, parts.next()?);
        controllers
            .split(',')
            .any(|c| c == controller)
            .then(|| path.to_string())
    })
}

/// Adds the memory and cpu controllers to a cgroup's children. Without
/// memory the sidecars cannot be limited (an error); without cpu they run
/// without a CPU limit (logged).
fn enable_controllers(dir: &Path) -> Result<(), String> {
    let available = std::fs::read_to_string(dir.join("cgroup.controllers"))
        .map_err(|e| format!("reading {}/cgroup.controllers: {e}", dir.display()))?;
    let enabled = std::fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap_or_default();
    for controller in [Controller::Memory, Controller::Cpu] {
        let name = controller.as_str();
        if enabled.split_whitespace().any(|c| c == name) {
            continue;
        }
        let result = if available.split_whitespace().any(|c| c == name) {
            std::fs::write(dir.join("cgroup.subtree_control"), format!("+{name}")).map_err(|e| {
                format!(
                    "enabling the {name} controller in {}/cgroup.subtree_control: {e}",
                    dir.display()
                )
            })
        } else {
            Err(format!(
                "{}: the {name} controller is not available",
                dir.display()
            ))
        };
        match (result, controller) {
            (Ok(()), _) => {}
            (Err(e), Controller::Cpu) => {
                tracing::warn!(error = %e, "sidecars run without a CPU limit")
            }
            (Err(e), Controller::Memory) => return Err(e),
        }
    }
    Ok(())
}

#[derive(Debug, Clone)]
struct V1Cgroups {
    memory: PathBuf,
    cpu: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct SidecarCgroup {
    /// The v2 cgroup (identity, kill, populated).
    dir: PathBuf,
    /// On a hybrid host, the v1 cgroups holding the limits.
    v1: Option<V1Cgroups>,
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    std::fs::write(dir.join(file), value)
        .map_err(|e| format!("writing {value:?} to {}/{file}: {e}", dir.display()))
}

impl SidecarCgroup {
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Sets the memory limit (swap off: a sidecar over its limit is
    /// killed, never swapped) and the CPU limit.
    pub fn set_limits(&self, limits: &Limits) -> Result<(), String> {
        let memory = limits.memory_max_bytes.to_string();
        match &self.v1 {
            None => {
                write(&self.dir, "memory.max", &memory)?;
                // Absent without swap accounting: nothing to turn off then.
                if self.dir.join("memory.swap.max").exists() {
                    write(&self.dir, "memory.swap.max", "0")?;
                }
                if self.dir.join("cpu.max").exists() {
                    write(&self.dir, "cpu.max", &limits.cpu_max())?;
                }
            }
            Some(v1) => {
                // memsw (memory + swap) may never be below the memory
                // limit: which goes first depends on the way it moves.
                let memsw = v1.memory.join("memory.memsw.limit_in_bytes").exists();
                match write(&v1.memory, "memory.limit_in_bytes", &memory) {
                    Ok(()) => {}
                    // Raised above the old memsw limit: that one first.
                    Err(_) if memsw => {
                        write(&v1.memory, "memory.memsw.limit_in_bytes", &memory)?;
                        write(&v1.memory, "memory.limit_in_bytes", &memory)?;
                    }
                    Err(e) => return Err(e),
                }
                if memsw {
                    write(&v1.memory, "memory.memsw.limit_in_bytes", &memory)?;
                } else {
                    write(&v1.memory, "memory.swappiness", "0")?;
                }
                if let Some(cpu) = &v1.cpu {
                    write(cpu, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                    let quota = limits
                        .cpu_quota_us()
                        .map_or("-1".to_string(), |q| q.to_string());
                    write(cpu, "cpu.cfs_quota_us", &quota)?;
                }
            }
        }
        Ok(())
    }

    /// The memory limit in force, as its file says.
    pub fn memory_limit(&self) -> String {
        let (dir, file) = match &self.v1 {
            None => (&self.dir, "memory.max"),
            Some(v1) => (&v1.memory, "memory.limit_in_bytes"),
        };
        std::fs::read_to_string(dir.join(file))
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }

    /// Every `cgroup.procs` the sidecar must be in, open for writing: the
    /// child writes "0" to each between fork and exec to move itself in.
    pub fn procs_for_writing(&self) -> std::io::Result<Vec<std::fs::File>> {
        let mut dirs = vec![self.dir.as_path()];
        if let Some(v1) = &self.v1 {
            dirs.push(&v1.memory);
            if let Some(cpu) = &v1.cpu {
                dirs.push(cpu);
            }
        }
        dirs.into_iter()
            .map(|d| {
                std::fs::OpenOptions::new()
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
                    .open(d.join("cgroup.procs"))
            })
            .collect()
    }

    /// The OOM kills counted so far (`oom_kill` of memory.events, or of
    /// memory.oom_control in v1).
    pub fn oom_kills(&self) -> u64 {
        let file = match &self.v1 {
            None => self.dir.join("memory.events"),
            Some(v1) => v1.memory.join("memory.oom_control"),
        };
        std::fs::read_to_string(file)
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

    /// Kills what is left and removes the cgroup (and its v1 twins).
    pub fn remove(&self) -> Result<(), String> {
        if self.is_populated() {
            self.kill_all();
            self.wait_empty(Duration::from_secs(5));
        }
        let mut dirs = vec![self.dir.clone()];
        if let Some(v1) = &self.v1 {
            dirs.push(v1.memory.clone());
            dirs.extend(v1.cpu.clone());
        }
        for dir in dirs {
            match std::fs::remove_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("removing {}: {e}", dir.display())),
            }
        }
        Ok(())
    }
}

/// `oom_kill N` from memory.events (v2) or memory.oom_control (v1).
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
    fn oom_kills_are_read_from_memory_events_or_oom_control() {
        let events = "low 0\nhigh 0\nmax 12\noom 3\noom_kill 2\noom_group_kill 0\n";
        assert_eq!(oom_kill_count(events), Some(2));
        assert_eq!(oom_kill_count("oom 1\n"), None);
        assert_eq!(oom_kill_count("oom_kill x\n"), None);
        assert_eq!(oom_kill_count("oom_group_kill 4\noom_kill 7"), Some(7));
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 5\n";
        assert_eq!(oom_kill_count(v1), Some(5));
    }

    #[test]
    fn cpu_limits_follow_millicores() {
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
        assert_eq!(l(0).cpu_quota_us(), None);
        assert_eq!(l(2000).cpu_quota_us(), Some(200_000));
    }

    #[test]
    fn v1_hierarchies_are_found_by_controller() {
        let mounts = "tmpfs /sys/fs/cgroup tmpfs rw 0 0\n\
                      cgroup /sys/fs/cgroup/cpu,cpuacct cgroup rw,relatime,cpu,cpuacct 0 0\n\
                      cgroup /sys/fs/cgroup/memory cgroup rw,relatime,memory 0 0\n\
                      cgroup2 /sys/fs/cgroup/unified cgroup2 rw,relatime 0 0\n";
        assert_eq!(
            v1_mount(mounts, "memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            v1_mount(mounts, "cpu"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(v1_mount(mounts, "pids"), None);
        let own = "9:name=systemd:/\n4:memory:/system.slice/vigil-agent.service\n1:cpu,cpuacct:/x\n0::/\n";
        assert_eq!(
            v1_path(own, "memory").as_deref(),
            Some("/system.slice/vigil-agent.service")
        );
        assert_eq!(v1_path(own, "cpu").as_deref(), Some("/x"));
        assert_eq!(v1_path(own, "pids"), None);
    }

    #[test]
    fn a_bad_name_makes_no_cgroup() {
        let cgroups = SidecarCgroups {
            parent: "/nonexistent/vigil/sidecars".into(),
            limiter: Limiter::V2,
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
