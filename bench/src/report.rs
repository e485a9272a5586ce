//! Benchmark figures: `bench/results.json` (one object per figure) and
//! `BENCHMARKS.md`.

use std::path::Path;
use std::time::Duration;

use serde_json::json;

pub struct Figure {
    pub name: String,
    pub value: f64,
    pub unit: String,
    pub baseline: f64,
    pub ratio: f64,
    pub command: String,
    /// The ratio this figure aims at, and whether higher is better.
    pub goal: Option<(f64, bool)>,
}

impl Figure {
    pub fn ratio(name: &str, value: f64, baseline: f64, unit: &str, command: &str) -> Self {
        Figure {
            name: name.to_string(),
            value,
            unit: unit.to_string(),
            baseline,
            ratio: if baseline != 0.0 {
                value / baseline
            } else {
                0.0
            },
            command: command.to_string(),
            goal: None,
        }
    }

    /// Goal: ratio at least `g`.
    pub fn goal(mut self, g: f64) -> Self {
        self.goal = Some((g, true));
        self
    }

    /// Goal: ratio at most `g`.
    pub fn goal_max(mut self, g: f64) -> Self {
        self.goal = Some((g, false));
        self
    }

    /// Its row in the table of `BENCHMARKS.md`.
    fn row(&self) -> String {
        let goal = match self.goal {
            Some((g, true)) => format!("≥ {g} ({})", self.verdict()),
            Some((g, false)) => format!("≤ {g} ({})", self.verdict()),
            None => String::new(),
        };
        format!(
            "| {} | {:.3} | {} | {:.3} | {:.3} | {} |",
            self.name, self.value, self.unit, self.baseline, self.ratio, goal
        )
    }

    fn verdict(&self) -> &'static str {
        match self.goal {
            None => "",
            Some((g, true)) if self.ratio >= g => "met",
            Some((g, false)) if self.ratio <= g => "met",
            Some(_) => "NOT met",
        }
    }
}

#[derive(Default)]
pub struct Report {
    figures: Vec<Figure>,
}

impl Report {
    pub fn push(&mut self, f: Figure) {
        eprintln!(
            "{:<80} {:>12.3} {:<12} baseline {:>12.3} ratio {:.3} {}",
            f.name,
            f.value,
            f.unit,
            f.baseline,
            f.ratio,
            f.verdict()
        );
        self.figures.push(f);
    }

    /// For a partial run (`VIGIL_BENCH_ONLY=cluster`): this run's figures
    /// replace those of the same name in `bench/results.json` and in the
    /// table of `BENCHMARKS.md` (new ones go at the table's end); the rest
    /// stays from the last full run.
    pub fn merge(&self, root: &Path) -> anyhow::Result<()> {
        let path = root.join("bench/results.json");
        let mut all: Vec<serde_json::Value> = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        let md_path = root.join("BENCHMARKS.md");
        let md = std::fs::read_to_string(&md_path).unwrap_or_default();
        let mut lines: Vec<String> = md.lines().map(str::to_string).collect();
        for f in &self.figures {
            let value = json!({"name": f.name, "value": f.value, "unit": f.unit,
                "baseline": f.baseline, "ratio": f.ratio, "command": f.command});
            match all.iter_mut().find(|v| v["name"] == f.name.as_str()) {
                Some(old) => *old = value,
                None => all.push(value),
            }
            let row = f.row();
            let prefix = format!("| {} |", f.name);
            match lines.iter().position(|l| l.starts_with(&prefix)) {
                Some(i) => lines[i] = row,
                None => {
                    let last = lines
                        .iter()
                        .rposition(|l| l.starts_with("| "))
                        .unwrap_or(lines.len().saturating_sub(1));
                    lines.insert(last + 1, row);
                }
            }
        }
        std::fs::write(&path, serde_json::to_string_pretty(&all)? + "\n")?;
        std::fs::write(&md_path, lines.join("\n") + "\n")?;
        Ok(())
    }

    pub fn write(
        &self,
        root: &Path,
        conditions: &[&str],
        rounds: usize,
        storm: Duration,
    ) -> anyhow::Result<()> {
        let json: Vec<_> = self
            .figures
            .iter()
            .map(|f| {
                json!({"name": f.name, "value": f.value, "unit": f.unit, "baseline": f.baseline,
                       "ratio": f.ratio, "command": f.command})
            })
            .collect();
        std::fs::create_dir_all(root.join("bench"))?;
        std::fs::write(
            root.join("bench/results.json"),
            serde_json::to_string_pretty(&json)? + "\n",
        )?;

        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_default();
        let mut md = String::new();
        md.push_str("# Benchmarks\n\n");
        md.push_str("Generated by `make bench` (`bench/src/main.rs`); do not edit by hand. ");
        md.push_str("This host is a noisy shared VM, so every figure is a ratio against a baseline measured in the same run: ");
        md.push_str("storm conditions are rotated round by round and the median of the rounds is reported.\n\n");
        md.push_str(&format!(
            "- host: {} CPUs ({cpu}), kernel {}\n- conditions: {}\n- rounds: {rounds}, each storm {:.1} s (open storm: 1 thread of openat+close; exec storm: 2 threads of fork+exec+wait of /bin/true)\n- latency probes: one first-sight probe (the first finding of a binary the agent has not hashed yet), then 300 opens of distinct `.onnx` files 5 ms apart, idle, then 300 during an exec storm\n\n",
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
            kernel.trim(),
            conditions.join(", "),
            storm.as_secs_f64()
        ));
        md.push_str(
            "| figure | value | unit | baseline | ratio | goal |\n|---|---:|---|---:|---:|---|\n",
        );
        for f in &self.figures {
            md.push_str(&f.row());
            md.push('\n');
        }
        md.push_str("\nThe design's measurements on this machine (bpftrace): open storm 0.78 with a count-only program, 0.76 with an in-kernel path filter, 0.20 printing every open; exec storm 0.95 printing every exec. Any syscall tracepoint puts every syscall on the slow path, so `empty programs / nothing attached` is the floor the sensors cannot beat with tracepoints; the agent's own cost is `agent / empty programs`.\n");
        let extra = root.join("bench/NOTES.md");
        if let Ok(notes) = std::fs::read_to_string(extra) {
            md.push('\n');
            md.push_str(&notes);
        }
        std::fs::write(root.join("BENCHMARKS.md"), md)?;
        Ok(())
    }
}
