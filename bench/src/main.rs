//! vigil-bench: measures the sensors' cost and the agent's detection path
//! against baselines taken side by side in the same run (this host is a
//! noisy shared VM: only ratios from one run mean anything).
//!
//! Conditions, rotated each round: nothing attached; empty BPF programs on
//! the same hooks (the floor any tracepoint costs); the real agent; and, when
//! installed, bpftrace doing the same tracing with per-event output. Then
//! the detection latency and footprint, the agent under a flood of model
//! opens (`flood_bench`), GPU polls and policy evaluation.
//! Writes `bench/results.json` and `BENCHMARKS.md`; `VIGIL_BENCH_ONLY=gpu`, `ingest`,
//! `policy`, `latency`, `flood` or `transport` runs one section and only
//! prints its figures; `cluster`, `dashboard`, `models`, `attestation`, `sidecar`, `siem` or `siem-otlp` runs one and merges its
//! figures into both files.

mod attestation_bench;
mod cluster_bench;
mod dashboard_bench;
mod flood_bench;
mod gpu_polls;
mod ingest_bench;
mod model_bench;
mod policy_bench;
mod report;
mod sidecar_bench;
mod siem_backlog;
mod siem_bench;
mod siem_otlp_bench;
mod storm;
mod transport_bench;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use aya::programs::TracePoint;
use report::{Figure, Report};
use vigil_integration::{free_port, log_number, Agent, ControlPlane, Daemon};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Condition {
    Nothing,
    Empty,
    Agent,
    /// The agent with the content checks of reads, libraries and streams
    /// off (their hooks detached): the sensors before issue #27's checks.
    AgentNoReadChecks,
    Bpftrace,
}

impl Condition {
    fn name(self) -> &'static str {
        match self {
            Condition::Nothing => "nothing attached",
            Condition::Empty => "empty programs",
            Condition::Agent => "vigil-agent",
            Condition::AgentNoReadChecks => "vigil-agent without content checks",
            Condition::Bpftrace => "bpftrace printing every event",
        }
    }
}

/// What every section of the bench shares. The control plane and agents
/// are the test harness's (`vigil-integration`): release binaries from
/// `$VIGIL_BIN_DIR`, else `$VIGIL_ROOT/target/release`.
struct Settings {
    rt: tokio::runtime::Runtime,
    empty_object: PathBuf,
    rounds: usize,
    storm: Duration,
    exec_threads: usize,
    open_threads: usize,
    bpftrace: Option<PathBuf>,
    work: tempfile::TempDir,
}

/// Whatever a condition keeps attached; detaches on drop (processes get
/// SIGTERM, so they detach as they would in production).
enum Attached {
    Nothing,
    Empty(#[allow(dead_code)] aya::Ebpf),
    Agent(Agent),
    Bpftrace(Daemon),
}

impl Attached {
    /// The agent's pid, under the agent condition.
    fn agent_pid(&self) -> Option<u32> {
        match self {
            Attached::Agent(agent) => Some(agent.daemon.id()),
            _ => None,
        }
    }
}

impl Drop for Attached {
    fn drop(&mut self) {
        match self {
            Attached::Agent(agent) => {
                agent.daemon.terminate();
            }
            Attached::Bpftrace(daemon) => {
                daemon.terminate();
            }
            Attached::Nothing | Attached::Empty(_) => {}
        }
    }
}

fn attach(c: Condition, s: &Settings, cp: &str, round: usize) -> anyhow::Result<Attached> {
    Ok(match c {
        Condition::Nothing => Attached::Nothing,
        Condition::Empty => {
            let mut ebpf = aya::Ebpf::load_file(&s.empty_object)
                .with_context(|| format!("loading {}", s.empty_object.display()))?;
            for (prog, cat, name) in [
                ("empty_exec", "sched", "sched_process_exec"),
                ("empty_exit", "sched", "sched_process_exit"),
                ("empty_openat", "syscalls", "sys_enter_openat"),
                ("empty_openat2", "syscalls", "sys_enter_openat2"),
                ("empty_open", "syscalls", "sys_enter_open"),
                ("empty_creat", "syscalls", "sys_enter_creat"),
                ("empty_openat_ret", "syscalls", "sys_exit_openat"),
                ("empty_openat2_ret", "syscalls", "sys_exit_openat2"),
                ("empty_open_ret", "syscalls", "sys_exit_open"),
                ("empty_creat_ret", "syscalls", "sys_exit_creat"),
                ("empty_mmap", "syscalls", "sys_enter_mmap"),
                ("empty_inet_state", "sock", "inet_sock_set_state"),
                ("empty_connect", "syscalls", "sys_enter_connect"),
                ("empty_sendto", "syscalls", "sys_enter_sendto"),
                ("empty_sendmsg", "syscalls", "sys_enter_sendmsg"),
                ("empty_sendmmsg", "syscalls", "sys_enter_sendmmsg"),
                ("empty_read", "syscalls", "sys_enter_read"),
                ("empty_read_ret", "syscalls", "sys_exit_read"),
                ("empty_pread", "syscalls", "sys_enter_pread64"),
                ("empty_pread_ret", "syscalls", "sys_exit_pread64"),
                ("empty_dup", "syscalls", "sys_enter_dup"),
                ("empty_dup_ret", "syscalls", "sys_exit_dup"),
                ("empty_dup2", "syscalls", "sys_enter_dup2"),
                ("empty_dup3", "syscalls", "sys_enter_dup3"),
                ("empty_write", "syscalls", "sys_enter_write"),
                ("empty_writev", "syscalls", "sys_enter_writev"),
                ("empty_write_ret", "syscalls", "sys_exit_write"),
                ("empty_sendto_ret", "syscalls", "sys_exit_sendto"),
                ("empty_sendmsg_ret", "syscalls", "sys_exit_sendmsg"),
                ("empty_sendmmsg_ret", "syscalls", "sys_exit_sendmmsg"),
                ("empty_connect_ret", "syscalls", "sys_exit_connect"),
            ] {
                let tp: &mut TracePoint = ebpf.program_mut(prog).context(prog)?.try_into()?;
                tp.load()?;
                tp.attach(cat, name)?;
            }
            Attached::Empty(ebpf)
        }
        Condition::Agent => Attached::Agent(start_agent(s, cp, &format!("round{round}"))?),
        Condition::AgentNoReadChecks => Attached::Agent(start_agent_with(
            s,
            cp,
            &format!("noread{round}"),
            &[
                "--content-read-checks",
                "false",
                "--library-content-checks",
                "false",
                "--stream-checks",
                "false",
            ],
        )?),
        Condition::Bpftrace => {
            let script = r#"tracepoint:syscalls:sys_enter_openat { printf("%d %s\n", pid, str(args->filename)); }
tracepoint:sched:sched_process_exec { printf("%d %s\n", pid, str(args->filename)); }
tracepoint:sched:sched_process_exit { printf("%d exit\n", pid); }"#;
            let mut cmd = Command::new(s.bpftrace.as_ref().context("bpftrace")?);
            cmd.arg("-e").arg(script).stderr(Stdio::null());
            let daemon =
                Daemon::spawn(cmd, "bpftrace", "Attaching", Duration::from_secs(60), None)?;
            std::thread::sleep(Duration::from_millis(500));
            Attached::Bpftrace(daemon)
        }
    })
}

/// The agent under test, on eBPF sensors, logging to `agent-<tag>.log` in
/// the work directory.
fn start_agent(s: &Settings, cp: &str, tag: &str) -> anyhow::Result<Agent> {
    start_agent_with(s, cp, tag, &[])
}

fn start_agent_with(s: &Settings, cp: &str, tag: &str, extra: &[&str]) -> anyhow::Result<Agent> {
    let dir = s.work.path().join(format!("agent-{tag}"));
    Ok(s.rt.block_on(Agent::try_start(&dir, cp, BENCH_AGENT, extra, &[]))?)
}

/// CPU time (user + system) of a process, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = after
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    // After the comm: state is not numeric, so utime and stime are f[10], f[11].
    let ticks = f.get(10).copied().unwrap_or(0) + f.get(11).copied().unwrap_or(0);
    // SAFETY: sysconf has no preconditions.
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn rss_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map(|kib| kib / 1024.0)
        .unwrap_or(0.0)
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() {
        return 0.0;
    }
    v[v.len() / 2]
}

/// The id every agent of the bench registers under.
const BENCH_AGENT: &str = "bench-agent";

/// A control plane trusting `trusted_policy_key`, data in `cp/` of the
/// work directory (log `cp.log`), once raft has a leader.
fn start_control_plane(s: &Settings, trusted_policy_key: &str) -> anyhow::Result<ControlPlane> {
    let cp = ControlPlane::try_start(
        &s.work.path().join("cp"),
        free_port(),
        &["--trusted-policy-key", trusted_policy_key],
    )?;
    s.rt.block_on(cp.try_wait_leader())?;
    Ok(cp)
}

/// The bench agent's (emitted, dropped) ring buffer records.
fn agent_counters(s: &Settings, cp: &ControlPlane) -> anyhow::Result<(u64, u64)> {
    let agent =
        s.rt.block_on(cp.agent_summary(BENCH_AGENT))?
            .context("bench agent not registered")?;
    let k = agent.counters.unwrap_or_default();
    Ok((k.emitted, k.dropped))
}

/// The storms' files: a 64-byte text file opened (and watched for its
/// first read) in the open storm, and a 16 MiB file of text read in 4 KiB
/// reads in the read storm; both in the page cache.
fn storm_files(s: &Settings) -> anyhow::Result<(String, String)> {
    let target = s.work.path().join("plain.txt");
    std::fs::write(&target, [b'x'; 64])?;
    let big = s.work.path().join("big.txt");
    std::fs::write(&big, vec![b'y'; 16 << 20])?;
    let path = |p: PathBuf| -> anyhow::Result<String> {
        Ok(p.to_str().context("utf-8 path")?.to_string())
    };
    Ok((path(target)?, path(big)?))
}

fn storm_rounds(
    s: &Settings,
    cp: &ControlPlane,
    conditions: &[Condition],
    report: &mut Report,
) -> anyhow::Result<()> {
    let (target, big) = storm_files(s)?;
    let mut open: Vec<Vec<f64>> = vec![Vec::new(); conditions.len()];
    let mut exec: Vec<Vec<f64>> = vec![Vec::new(); conditions.len()];
    let mut read: Vec<Vec<f64>> = vec![Vec::new(); conditions.len()];
    let mut write: Vec<Vec<f64>> = vec![Vec::new(); conditions.len()];
    let (mut emitted, mut dropped) = (0u64, 0u64);
    let (mut agent_cpu, mut agent_wall) = (0.0, 0.0);
    for round in 0..s.rounds {
        for k in 0..conditions.len() {
            let i = (k + round) % conditions.len();
            let c = conditions[i];
            let attached = attach(c, s, &cp.endpoint(), round)?;
            std::thread::sleep(Duration::from_millis(300));
            let pid = attached.agent_pid();
            let cpu0 = pid.map(cpu_seconds).unwrap_or(0.0);
            let t0 = Instant::now();
            let o = storm::open_storm(&target, s.open_threads, s.storm);
            let e = storm::exec_storm(s.exec_threads, s.storm);
            let r = storm::read_storm(&big, s.open_threads, s.storm);
            let w = storm::write_storm(s.open_threads, s.storm);
            if let Some(pid) = pid {
                agent_cpu += cpu_seconds(pid) - cpu0;
                agent_wall += t0.elapsed().as_secs_f64();
                std::thread::sleep(Duration::from_millis(2500));
                let (em, dr) = agent_counters(s, cp)?;
                emitted += em;
                dropped += dr;
            }
            eprintln!(
                "round {round} {:<32} open {o:>10.0}/s  exec {e:>7.0}/s  read {r:>10.0}/s  write {w:>10.0}/s",
                c.name()
            );
            open[i].push(o);
            exec[i].push(e);
            read[i].push(r);
            write[i].push(w);
            drop(attached);
        }
    }
    let med = |v: &mut Vec<Vec<f64>>, c: Condition| {
        let i = conditions.iter().position(|x| *x == c).unwrap();
        median(&mut v[i])
    };
    let (on, oe, oa) = (
        med(&mut open, Condition::Nothing),
        med(&mut open, Condition::Empty),
        med(&mut open, Condition::Agent),
    );
    let (en, ee, ea) = (
        med(&mut exec, Condition::Nothing),
        med(&mut exec, Condition::Empty),
        med(&mut exec, Condition::Agent),
    );
    let cmd = "make bench";
    report.push(
        Figure::ratio("open storm: agent / empty programs", oa, oe, "opens/s", cmd).goal(0.98),
    );
    if conditions.contains(&Condition::AgentNoReadChecks) {
        let (rn, re, ra, rb) = (
            med(&mut read, Condition::Nothing),
            med(&mut read, Condition::Empty),
            med(&mut read, Condition::Agent),
            med(&mut read, Condition::AgentNoReadChecks),
        );
        let (ob, eb) = (
            med(&mut open, Condition::AgentNoReadChecks),
            med(&mut exec, Condition::AgentNoReadChecks),
        );
        let (wn, we, wa, wb) = (
            med(&mut write, Condition::Nothing),
            med(&mut write, Condition::Empty),
            med(&mut write, Condition::Agent),
            med(&mut write, Condition::AgentNoReadChecks),
        );
        report.push(Figure::ratio(
            "write storm (64-byte writes): agent / empty programs",
            wa,
            we,
            "writes/s",
            cmd,
        ));
        report.push(Figure::ratio(
            "write storm (64-byte writes): agent / nothing attached",
            wa,
            wn,
            "writes/s",
            cmd,
        ));
        report.push(Figure::ratio(
            "write storm (64-byte writes): agent without content checks (before) / nothing attached",
            wb,
            wn,
            "writes/s",
            cmd,
        ));
        report.push(
            Figure::ratio(
                "read storm (4 KiB reads): agent / empty programs",
                ra,
                re,
                "reads/s",
                cmd,
            )
            .goal(0.95),
        );
        report.push(Figure::ratio(
            "read storm (4 KiB reads): agent / nothing attached",
            ra,
            rn,
            "reads/s",
            cmd,
        ));
        report.push(Figure::ratio(
            "read storm (4 KiB reads): empty programs / nothing attached",
            re,
            rn,
            "reads/s",
            cmd,
        ));
        report.push(Figure::ratio(
            "read storm (4 KiB reads): agent without content checks (before) / nothing attached",
            rb,
            rn,
            "reads/s",
            cmd,
        ));
        report.push(Figure::ratio(
            "open storm: agent without content checks (before) / empty programs",
            ob,
            oe,
            "opens/s",
            cmd,
        ));
        report.push(Figure::ratio(
            "open storm: agent / agent without content checks (cost of watching opens)",
            oa,
            ob,
            "opens/s",
            cmd,
        ));
        report.push(Figure::ratio(
            "exec storm: agent without content checks (before) / empty programs",
            eb,
            ee,
            "execs/s",
            cmd,
        ));
    }
    report.push(Figure::ratio(
        "open storm: agent / nothing attached",
        oa,
        on,
        "opens/s",
        cmd,
    ));
    report.push(Figure::ratio(
        "open storm: empty programs / nothing attached",
        oe,
        on,
        "opens/s",
        cmd,
    ));
    report.push(
        Figure::ratio("exec storm: agent / empty programs", ea, ee, "execs/s", cmd).goal(0.98),
    );
    report.push(Figure::ratio(
        "exec storm: agent / nothing attached",
        ea,
        en,
        "execs/s",
        cmd,
    ));
    report.push(Figure::ratio(
        "exec storm: empty programs / nothing attached",
        ee,
        en,
        "execs/s",
        cmd,
    ));
    if conditions.contains(&Condition::Bpftrace) {
        let (ob, eb) = (
            med(&mut open, Condition::Bpftrace),
            med(&mut exec, Condition::Bpftrace),
        );
        report.push(Figure::ratio(
            "open storm: bpftrace printing / nothing attached",
            ob,
            on,
            "opens/s",
            cmd,
        ));
        report.push(Figure::ratio(
            "open storm: agent / bpftrace printing",
            oa,
            ob,
            "opens/s",
            cmd,
        ));
        report.push(Figure::ratio(
            "exec storm: bpftrace printing / nothing attached",
            eb,
            en,
            "execs/s",
            cmd,
        ));
        report.push(Figure::ratio(
            "exec storm: agent / bpftrace printing",
            ea,
            eb,
            "execs/s",
            cmd,
        ));
    }
    report.push(
        Figure::ratio(
            "ring buffer drops during storms (dropped / emitted)",
            dropped as f64,
            emitted as f64,
            "records",
            cmd,
        )
        .goal_max(0.0),
    );
    report.push(Figure::ratio(
        "agent CPU during storms (share of one core)",
        agent_cpu,
        agent_wall,
        "cpu-s / s",
        cmd,
    ));
    Ok(())
}

/// Per-call run time of the loaded programs whose names start with
/// `prefix`: name → (total ns, calls).
fn program_stats(prefix: &str) -> std::collections::BTreeMap<String, (u64, u64)> {
    aya::programs::loaded_programs()
        .filter_map(Result::ok)
        .filter_map(|p| {
            let name = p.name_as_str()?.to_string();
            name.starts_with(prefix)
                .then(|| (name, (p.run_time().as_nanos() as u64, p.run_count())))
        })
        .collect()
}

/// What each sensor program costs per call, against an empty program on
/// the same hook, under the same storms (kernel BPF run-time statistics).
fn program_costs(s: &Settings, cp: &ControlPlane, report: &mut Report) -> anyhow::Result<()> {
    let _stats =
        aya::sys::enable_stats(aya::sys::Stats::RunTime).context("enabling BPF run-time stats")?;
    let (target, big) = storm_files(s)?;
    let storms = || {
        storm::open_storm(&target, s.open_threads, s.storm);
        storm::read_storm(&big, s.open_threads, s.storm);
        storm::write_storm(s.open_threads, s.storm);
        storm::exec_storm(s.exec_threads, s.storm);
        storm::send_storm(s.open_threads, s.storm);
    };
    let per_call = |stats: &std::collections::BTreeMap<String, (u64, u64)>, name: &str| {
        stats
            .get(name)
            .map(|(ns, n)| if *n == 0 { 0.0 } else { *ns as f64 / *n as f64 })
            .unwrap_or(0.0)
    };
    let empty = attach(Condition::Empty, s, &cp.endpoint(), 0)?;
    storms();
    let empty_stats = program_stats("empty_");
    drop(empty);
    let agent = attach(Condition::Agent, s, &cp.endpoint(), 99)?;
    storms();
    let agent_stats = program_stats("vigil_");
    drop(agent);
    for (hook, ours, theirs) in [
        ("sys_enter_openat", "vigil_openat", "empty_openat"),
        // Kernel program names are cut to 15 characters.
        ("sys_exit_openat", "vigil_openat_re", "empty_openat_re"),
        ("sched_process_exec", "vigil_exec", "empty_exec"),
        ("sched_process_exit", "vigil_exit", "empty_exit"),
        ("sys_enter_sendto", "vigil_sendto", "empty_sendto"),
        ("sys_enter_read", "vigil_read", "empty_read"),
        ("sys_exit_read", "vigil_read_ret", "empty_read_ret"),
        ("sys_enter_write", "vigil_write", "empty_write"),
        ("sys_exit_write", "vigil_write_ret", "empty_write_ret"),
        ("sys_enter_mmap", "vigil_mmap", "empty_mmap"),
    ] {
        report.push(Figure::ratio(
            &format!("{hook} program cost per call: agent / empty program"),
            per_call(&agent_stats, ours),
            per_call(&empty_stats, theirs),
            "ns/call",
            "make bench",
        ));
    }
    Ok(())
}

fn percentile(h: &hdrhistogram::Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64
}

fn latency_and_footprint(
    s: &Settings,
    cp: &ControlPlane,
    report: &mut Report,
) -> anyhow::Result<()> {
    // The probes are hundreds of distinct model files opened by this one
    // process: past the per-process cap (a flood defence) they would be
    // counted, not reported, and there would be nothing to time.
    let mut agent = start_agent_with(
        s,
        &cp.endpoint(),
        "latency",
        &["--max-findings-per-signal", "1000000"],
    )?;
    let pid = agent.daemon.id();
    // Idle footprint.
    std::thread::sleep(Duration::from_secs(2));
    let (c0, t0) = (cpu_seconds(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(10));
    let idle_cpu = (cpu_seconds(pid) - c0) / t0.elapsed().as_secs_f64();
    let idle_rss = rss_mib(pid, "VmRSS:");
    report.push(
        Figure::ratio(
            "agent CPU idle (share of one core) / 2% goal",
            idle_cpu * 100.0,
            2.0,
            "% of a core",
            "make bench",
        )
        .goal_max(1.0),
    );
    report.push(
        Figure::ratio(
            "agent RSS idle / 40 MB goal",
            idle_rss,
            40.0,
            "MiB",
            "make bench",
        )
        .goal_max(1.0),
    );

    // Probes: opens of distinct model files, idle and during an exec storm.
    let dir = s.work.path().join("latency");
    std::fs::create_dir_all(&dir)?;
    let probes = 300;
    let probe = |tag: &str| -> anyhow::Result<()> {
        for i in 0..probes {
            std::fs::File::create(dir.join(format!("{tag}-{i}.onnx")))?;
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(())
    };
    // First sight: the first finding of a binary the agent has never seen
    // waits for its sha256 (this bench binary is large). Measured on its
    // own, then the steady state.
    std::fs::File::create(dir.join("first-sight.onnx"))?;
    std::thread::sleep(Duration::from_secs(1));
    probe("idle")?;
    let storm = std::thread::spawn({
        let threads = s.exec_threads;
        move || storm::exec_storm(threads, Duration::from_secs(3))
    });
    std::thread::sleep(Duration::from_millis(200));
    probe("storm")?;
    let _ = storm.join();
    let peak_rss = rss_mib(pid, "VmHWM:");
    report.push(
        Figure::ratio(
            "agent peak RSS over the run / 40 MB goal",
            peak_rss,
            40.0,
            "MiB",
            "make bench",
        )
        .goal_max(1.0),
    );

    // Agent-side latency (syscall → finding spooled) from its log.
    std::thread::sleep(Duration::from_secs(3));
    let log = std::fs::read_to_string(&agent.log)?;
    let me = std::process::id();
    // Two points per finding: held by the spool (`spooled_us`, sled's
    // cache: what the one-loop agent before issue #18 logged as its
    // latency) and on disk (`latency_us`, after the flush issue #19 put
    // before the log line).
    let mut idle = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut busy = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut idle_spooled = hdrhistogram::Histogram::<u64>::new(3)?;
    let mut busy_spooled = hdrhistogram::Histogram::<u64>::new(3)?;
    for line in log
        .lines()
        .filter(|l| l.contains(" finding") && l.contains(&format!("pid={me} ")))
    {
        let (Some(us), Some(spooled)) = (
            log_number(line, "latency_us="),
            log_number(line, "spooled_us="),
        ) else {
            continue;
        };
        if line.contains("/latency/idle-") {
            idle.record(us)?;
            idle_spooled.record(spooled)?;
        } else if line.contains("/latency/storm-") {
            busy.record(us)?;
            busy_spooled.record(spooled)?;
        }
    }
    let first_sight = log
        .lines()
        .find(|l| l.contains(" finding") && l.contains("/latency/first-sight.onnx"))
        .and_then(|l| log_number(l, "latency_us="))
        .context("no finding for the first-sight probe")?;
    let exe_mib = std::fs::metadata(std::env::current_exe()?)?.len() as f64 / (1 << 20) as f64;
    report.push(Figure::ratio(
        &format!("first finding of a never-seen {exe_mib:.0} MiB binary (waits for its sha256) / 5 ms goal"),
        first_sight as f64 / 1000.0,
        5.0,
        "ms",
        "make bench",
    ));
    if idle.len() < probes as u64 / 2 || busy.len() < probes as u64 / 2 {
        bail!(
            "too few findings in the agent log: idle {} storm {}",
            idle.len(),
            busy.len()
        );
    }
    for (name, h, point) in [
        ("idle", &idle, "finding on disk"),
        ("during exec storm", &busy, "finding on disk"),
        (
            "idle",
            &idle_spooled,
            "finding in the spool, before its flush",
        ),
        (
            "during exec storm",
            &busy_spooled,
            "finding in the spool, before its flush",
        ),
    ] {
        for (q, label) in [(0.5, "p50"), (0.99, "p99")] {
            report.push(
                Figure::ratio(
                    &format!("detection latency {label} {name}, syscall → {point} / 5 ms goal"),
                    percentile(h, q) / 1000.0,
                    5.0,
                    "ms",
                    "make bench",
                )
                .goal_max(1.0),
            );
        }
    }
    // End to end: syscall → alert received by the control plane.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut e2e = hdrhistogram::Histogram::<u64>::new(3)?;
    loop {
        let all = s.rt.block_on(cp.try_alerts())?;
        let mine: Vec<_> = all
            .iter()
            .filter_map(|a| a.finding.as_ref().map(|f| (a.received_at_unix_nanos, f)))
            .filter(|(_, f)| {
                f.file
                    .as_ref()
                    .is_some_and(|o| o.path.contains("/latency/"))
                    && f.process.as_ref().is_some_and(|p| p.pid == me)
            })
            .collect();
        if mine.len() >= 2 * probes || Instant::now() > deadline {
            for (recv, f) in mine {
                e2e.record(((recv - f.observed_at_unix_nanos).max(0) / 1000) as u64)?;
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    report.push(
        Figure::ratio(
            "end-to-end p50, syscall → alert at control plane / 1 s goal",
            percentile(&e2e, 0.5) / 1000.0,
            1000.0,
            "ms",
            "make bench",
        )
        .goal_max(1.0),
    );
    report.push(
        Figure::ratio(
            "end-to-end p99, syscall → alert at control plane / 1 s goal",
            percentile(&e2e, 0.99) / 1000.0,
            1000.0,
            "ms",
            "make bench",
        )
        .goal_max(1.0),
    );
    agent.daemon.terminate();
    Ok(())
}

fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

fn main() -> anyhow::Result<()> {
    let root = PathBuf::from(std::env::var("VIGIL_ROOT").unwrap_or_else(|_| ".".into()));
    let env_num = |k: &str, d: u64| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let s = Settings {
        rt: tokio::runtime::Runtime::new()?,
        empty_object: root.join("bench/out/empty.bpf.o"),
        rounds: env_num("VIGIL_BENCH_ROUNDS", 5) as usize,
        storm: Duration::from_millis(env_num("VIGIL_BENCH_STORM_MS", 2000)),
        exec_threads: 2,
        open_threads: 1,
        bpftrace: which("bpftrace"),
        work: tempfile::tempdir()?,
    };
    // `VIGIL_BENCH_ONLY=gpu`: only the GPU polling figures, printed, no
    // files written (for working on the poller).
    if std::env::var("VIGIL_BENCH_ONLY").as_deref() == Ok("gpu") {
        return gpu_polls::gpu_polls(&root, s.work.path(), &mut Report::default());
    }
    // `VIGIL_BENCH_ONLY=attestation`: only the attestation figures,
    // merged into the results.
    if std::env::var("VIGIL_BENCH_ONLY").as_deref() == Ok("attestation") {
        let mut report = Report::default();
        attestation_bench::attestation(&s.rt, s.work.path(), &mut report)?;
        sidecar_bench::sidecar(&s.rt, s.work.path(), &mut report)?;
        return report.merge(&root);
    }
    // `VIGIL_BENCH_ONLY=sidecar`: only the inference sidecar's figures,
    // merged into the results.
    if std::env::var("VIGIL_BENCH_ONLY").as_deref() == Ok("sidecar") {
        let mut report = Report::default();
        sidecar_bench::sidecar(&s.rt, s.work.path(), &mut report)?;
        return report.merge(&root);
    }
    // `VIGIL_BENCH_ONLY=siem`: only the SIEM export figures, merged into
    // the results.
    if std::env::var("VIGIL_BENCH_ONLY").as_deref() == Ok("siem") {
        let mut report = Report::default();
        siem_bench::siem(&s, &mut report)?;
        return report.merge(&root);
    }
    // `VIGIL_BENCH_ONLY=siem-otlp`: only the OTLP forwarder's figures,
    // merged into the results.
    if std::env::var("VIGIL_BENCH_ONLY").as_deref() == Ok("siem-otlp") {
        let mut report = Report::default();
        siem_otlp_bench::siem_otlp(&s, &mut report)?;
        return report.merge(&root);
    }
    // `VIGIL_BENCH_ONLY=models`: only the model-inspection figures, merged
    // into the results.
    if std::env::var("VIGIL_BENCH_ONLY").as_deref() == Ok("models") {
        let mut report = Report::default();
        model_bench::models(&root, s.work.path(), &mut report)?;
        return report.merge(&root);
    }
    // `VIGIL_BENCH_ONLY=dashboard`: only the dashboard's pages at 2,000
    // hosts and 1,000,000 findings, merged into the results.
    if std::env::var("VIGIL_BENCH_ONLY").as_deref() == Ok("dashboard") {
        let mut report = Report::default();
        dashboard_bench::dashboard(&s, &mut report)?;
        return report.merge(&root);
    }
    let policy_key = vigil_policy::SigningKey::generate();
    let cp = start_control_plane(&s, &policy_key.public_hex())?;
    // `VIGIL_BENCH_ONLY=policy`: only the policy figures, printed.
    if std::env::var("VIGIL_BENCH_ONLY").as_deref() == Ok("policy") {
        let mut report = Report::default();
        policy_bench::rule_evaluation(&root, &mut report)?;
        return s.rt.block_on(policy_bench::propagation(
            &cp.endpoint(),
            &root,
            &policy_key,
            &mut report,
        ));
    }
    // `VIGIL_BENCH_ONLY=latency`: only the latency and footprint figures,
    // merged into the results.
    if std::env::var("VIGIL_BENCH_ONLY").as_deref() == Ok("latency") {
        let mut report = Report::default();
        latency_and_footprint(&s, &cp, &mut report)?;
        return report.merge(&root);
    }
    // `VIGIL_BENCH_ONLY=transport`: only mutual TLS against plaintext.
    if std::env::var("VIGIL_BENCH_ONLY").as_deref() == Ok("transport") {
        return transport_bench::transport(&s, &mut Report::default());
    }
    // `VIGIL_BENCH_ONLY=ingest`: only many agents, shared entries or not.
    if std::env::var("VIGIL_BENCH_ONLY").as_deref() == Ok("ingest") {
        return ingest_bench::ingest(&s, &mut Report::default());
    }
    // `VIGIL_BENCH_ONLY=cluster`: only the 3-node cluster figures.
    if std::env::var("VIGIL_BENCH_ONLY").as_deref() == Ok("cluster") {
        let mut report = Report::default();
        cluster_bench::cluster(&s, &mut report)?;
        return report.merge(&root);
    }
    // `VIGIL_BENCH_ONLY=flood`: only the flood figures, printed.
    if std::env::var("VIGIL_BENCH_ONLY").as_deref() == Ok("flood") {
        return flood_bench::flood(&s, &cp, &mut Report::default());
    }
    let mut conditions = vec![
        Condition::Nothing,
        Condition::Empty,
        Condition::Agent,
        Condition::AgentNoReadChecks,
    ];
    // `VIGIL_BENCH_ONLY=storms`: only the sensor storms and per-program
    // costs, merged into the results.
    if std::env::var("VIGIL_BENCH_ONLY").as_deref() == Ok("storms") {
        let mut report = Report::default();
        storm_rounds(&s, &cp, &conditions, &mut report)?;
        program_costs(&s, &cp, &mut report)?;
        return report.merge(&root);
    }
    if s.bpftrace.is_some() {
        conditions.push(Condition::Bpftrace);
    }
    let mut report = Report::default();
    storm_rounds(&s, &cp, &conditions, &mut report)?;
    program_costs(&s, &cp, &mut report)?;
    latency_and_footprint(&s, &cp, &mut report)?;
    flood_bench::flood(&s, &cp, &mut report)?;
    transport_bench::transport(&s, &mut report)?;
    ingest_bench::ingest(&s, &mut report)?;
    cluster_bench::cluster(&s, &mut report)?;
    dashboard_bench::dashboard(&s, &mut report)?;
    gpu_polls::gpu_polls(&root, s.work.path(), &mut report)?;
    model_bench::models(&root, s.work.path(), &mut report)?;
    attestation_bench::attestation(&s.rt, s.work.path(), &mut report)?;
    siem_bench::siem(&s, &mut report)?;
    siem_otlp_bench::siem_otlp(&s, &mut report)?;
    policy_bench::rule_evaluation(&root, &mut report)?;
    s.rt.block_on(policy_bench::propagation(
        &cp.endpoint(),
        &root,
        &policy_key,
        &mut report,
    ))?;
    report.write(
        &root,
        &conditions.iter().map(|c| c.name()).collect::<Vec<_>>(),
        s.rounds,
        s.storm,
    )?;
    Ok(())
}
