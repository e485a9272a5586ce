//! Turns sensor events into findings: the built-in rule, evaluated with the
//! process context, and the evidence a SOC needs (resolved paths, exe digest).

use vigil_domain::{Finding, ModelFileOpenRule, MODEL_SNIFF_BYTES};

use crate::clock::boot_ns_to_unix_nanos;
use crate::exe_digest::ExeDigestCache;
use crate::process_table::ProcessTable;
use crate::procfs::Procfs;
use crate::sensors::{PathMatch, SensorEvent};

pub struct Detector {
    self_pid: u32,
    rule: ModelFileOpenRule,
    digests: ExeDigestCache,
    procfs: Procfs,
}

impl Detector {
    /// `self_pid` is the agent's own process, whose events are ignored.
    pub fn new(rule: ModelFileOpenRule, procfs: Procfs, self_pid: u32) -> Self {
        Self {
            self_pid,
            rule,
            digests: ExeDigestCache::new(4096),
            procfs,
        }
    }

    /// Applies one event to the table and returns the finding it makes, if any.
    pub fn on_event(&mut self, ev: &SensorEvent, table: &mut ProcessTable) -> Option<Finding> {
        match ev {
            SensorEvent::Exec {
                ctx,
                filename,
                argv,
            } => {
                table.observe_exec(ctx, filename, argv);
                None
            }
            SensorEvent::Exit { ctx, .. } => {
                table.observe_exit(ctx.pid);
                None
            }
            SensorEvent::Open {
                ctx,
                dfd,
                matched: PathMatch::ModelFile,
                path,
                ..
            } => {
                // The agent's own reads (content checks) must never feed back;
                // the kernel already drops them, this guards the user side.
                if ctx.pid == self.self_pid {
                    return None;
                }
                let path = self.procfs.resolve_path(ctx.pid, *dfd, path);
                if !vigil_domain::is_model_file_path(&path) {
                    return None;
                }
                let mut process = table.resolve(ctx, &self.procfs);
                // While the process lives, /proc names the binary the kernel
                // really runs (symlinks resolved) and lets us hash it.
                if let Some(exe) = self.procfs.exe(ctx.pid) {
                    process.exe = exe;
                }
                process.exe_sha256 = self
                    .digests
                    .digest(&self.procfs.exe_handle(ctx.pid))
                    .unwrap_or_default();
                let head = read_head(&path);
                self.rule.evaluate(
                    &process,
                    &path,
                    head.as_deref(),
                    boot_ns_to_unix_nanos(ctx.ktime_boot_ns),
                )
            }
            SensorEvent::Open { .. } => None,
        }
    }
}

/// The first bytes of a file, for content checks; None when unreadable.
fn read_head(path: &str) -> Option<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::with_capacity(MODEL_SNIFF_BYTES);
    std::fs::File::open(path)
        .ok()?
        .take(MODEL_SNIFF_BYTES as u64)
        .read_to_end(&mut buf)
        .ok()?;
    Some(buf)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sensors::EventContext;
    use vigil_domain::ApprovedWorkloads;

    fn open(pid: u32, path: &str) -> SensorEvent {
        SensorEvent::Open {
            ctx: EventContext {
                ktime_boot_ns: crate::clock::boot_now_ns(),
                cgroup_id: 0,
                mnt_ns: 0,
                tid: pid,
                pid,
                ppid: 1,
                uid: 0,
                gid: 0,
                comm: "t".into(),
            },
            dfd: libc::AT_FDCWD,
            flags: 0,
            matched: PathMatch::ModelFile,
            path: path.into(),
        }
    }

    #[test]
    fn an_open_of_a_model_file_by_this_process_is_a_finding_with_its_digest() {
        let mut d = Detector::new(ModelFileOpenRule::default(), Procfs::default(), 0);
        let mut t = ProcessTable::new(100);
        let me = std::process::id();
        let f = d.on_event(&open(me, "/tmp/m/model.onnx"), &mut t).unwrap();
        assert_eq!(f.process.pid, me);
        assert_eq!(f.process.exe_sha256.len(), 64);
        assert!(f.process.exe.contains("vigil_agent"));
        assert_eq!(f.file.unwrap().path, "/tmp/m/model.onnx");
        let now = crate::clock::unix_now_nanos();
        assert!((now - f.observed_at_unix_nanos).abs() < 5_000_000_000);
    }

    #[test]
    fn an_approved_binary_makes_no_finding() {
        let me = std::process::id();
        let digest = crate::exe_digest::sha256_file(&Procfs::default().exe_handle(me)).unwrap();
        let rule = ModelFileOpenRule::new(ApprovedWorkloads::new([digest]));
        let mut d = Detector::new(rule, Procfs::default(), 0);
        let mut t = ProcessTable::new(100);
        assert!(d.on_event(&open(me, "/tmp/m/model.onnx"), &mut t).is_none());
    }

    #[test]
    fn the_agents_own_opens_are_ignored() {
        let me = std::process::id();
        let mut d = Detector::new(ModelFileOpenRule::default(), Procfs::default(), me);
        let mut t = ProcessTable::new(100);
        assert!(d.on_event(&open(me, "/tmp/m/model.onnx"), &mut t).is_none());
    }

    #[test]
    fn relative_paths_are_resolved_before_the_rule_sees_them() {
        let mut d = Detector::new(ModelFileOpenRule::default(), Procfs::default(), 0);
        let mut t = ProcessTable::new(100);
        let me = std::process::id();
        let f = d.on_event(&open(me, "w.gguf"), &mut t).unwrap();
        let cwd = std::env::current_dir().unwrap();
        assert_eq!(f.file.unwrap().path, cwd.join("w.gguf").to_string_lossy());
    }
}
