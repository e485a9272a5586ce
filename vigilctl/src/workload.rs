//! `vigilctl workload approve|revoke|list`: approved workloads.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use vigil_domain::WorkloadApproval;
use vigil_proto::admin::v1 as pb;

use crate::control_plane::{refused, AdminClient};
use crate::exit_code::ExitCode;
use crate::output::{print_list, OutputArgs, OutputFormat};
use crate::render::{short, timestamp};
use crate::terminal_text::{escape_controls as esc, escape_joined};

#[derive(Debug, Subcommand)]
// Parsed once per run: the size of its largest variant costs nothing.
#[allow(clippy::large_enum_variant)]
pub enum WorkloadCommand {
    /// Approves a workload: processes running this executable (narrowed by
    /// path, user or cgroup when given) make no findings on any agent.
    #[command(after_help = "Example:
  vigilctl workload approve --exe /opt/serve/bin/server --model /models/llama.gguf \\
      --key admin.key --note 'the model server'")]
    Approve {
        /// The executable (its sha256 is what is approved).
        #[arg(long, conflicts_with = "exe_sha256")]
        exe: Option<PathBuf>,
        /// The executable's hex sha256, when the file is not at hand.
        #[arg(long)]
        exe_sha256: Option<String>,
        /// Only when the process runs this exact path.
        #[arg(long)]
        path: Option<String>,
        /// Only for this uid.
        #[arg(long)]
        uid: Option<u32>,
        /// Only inside this cgroup v2 path or below.
        #[arg(long)]
        cgroup: Option<String>,
        /// A model file it may load (hashed here; repeatable). With none,
        /// any model.
        #[arg(long)]
        model: Vec<PathBuf>,
        /// A model's hex sha256 it may load (repeatable).
        #[arg(long)]
        model_sha256: Vec<String>,
        /// A GPU (UUID) it may use (repeatable). With none, any GPU.
        #[arg(long)]
        gpu: Vec<String>,
        /// A host (agent id or hostname) it is approved on (repeatable).
        /// With none, the whole fleet. Hosts whose TPM attestation failed
        /// receive no approval either way.
        #[arg(long)]
        host: Vec<String>,
        /// The admin key that signs the record (required when the control
        /// plane has trusted keys).
        #[arg(long)]
        key: Option<PathBuf>,
        /// Why it is approved, for the record.
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Withdraws an approval by id; an unknown id exits 4.
    #[command(after_help = "Example:\n  vigilctl workload revoke w-18c2f0a1b2c3d4e5")]
    Revoke {
        /// The approval's id, as `workload list` shows it.
        id: String,
    },
    /// Every approved workload.
    #[command(after_help = "Example:\n  vigilctl workload list -o json")]
    List {
        #[command(flatten)]
        output: OutputArgs,
    },
}

pub async fn run(client: &mut AdminClient, command: WorkloadCommand) -> anyhow::Result<()> {
    match command {
        WorkloadCommand::Approve {
            exe,
            exe_sha256,
            path,
            uid,
            cgroup,
            model,
            model_sha256,
            gpu,
            host,
            key,
            note,
        } => {
            let digest = match (exe, exe_sha256) {
                (Some(file), None) => sha256_file(&file)?,
                (None, Some(d)) => d,
                _ => return Err(ExitCode::Usage.error("give --exe FILE or --exe-sha256 HEX")),
            };
            let mut models = model_sha256;
            for m in &model {
                models.push(sha256_file(m)?);
            }
            let mut record = WorkloadApproval {
                id: String::new(),
                exe_sha256: digest.clone(),
                path,
                uid,
                cgroup_prefix: cgroup,
                models,
                gpus: gpu,
                hosts: host,
                approved_by: operator(),
                note,
                approved_at_unix_nanos: 0,
                signer: String::new(),
                signature: String::new(),
            };
            if let Some(key) = key {
                let secret = std::fs::read_to_string(&key)
                    .with_context(|| format!("reading {}", key.display()))?;
                vigil_policy::SigningKey::from_hex(&secret)?.sign_workload(&mut record);
            }
            let id = client
                .approve_workload(pb::ApproveWorkloadRequest {
                    workload: Some(record.into()),
                })
                .await
                .map_err(refused)?
                .into_inner()
                .id;
            println!(
                "approved workload {} (exe sha256 {})",
                esc(&id),
                esc(&digest)
            );
        }
        WorkloadCommand::Revoke { id } => {
            client
                .revoke_workload(pb::RevokeWorkloadRequest { id: id.clone() })
                .await
                .map_err(refused)?;
            println!("revoked workload {}", esc(&id));
        }
        WorkloadCommand::List { output } => {
            let workloads = client
                .list_workloads(pb::ListWorkloadsRequest {})
                .await
                .map_err(refused)?
                .into_inner()
                .workloads
                .into_iter()
                .map(WorkloadApproval::try_from)
                .collect::<Result<Vec<_>, _>>()
                .context("the control plane sent a malformed workload")?;
            print_list(
                output.format(OutputFormat::Jsonl),
                &workloads,
                WorkloadApproval::clone,
                workloads_text,
            )?;
        }
    }
    Ok(())
}

/// Hex sha256 of a file, streamed (model files are large).
fn sha256_file(path: &Path) -> anyhow::Result<String> {
    use sha2::{Digest, Sha256};
    let mut f = std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    std::io::copy(&mut f, &mut h).with_context(|| format!("reading {}", path.display()))?;
    Ok(hex::encode(h.finalize()))
}

/// Who is approving, for the record: user@host.
fn operator() -> String {
    let user = std::env::var("SUDO_USER")
        .or_else(|_| std::env::var("USER"))
        .unwrap_or_else(|_| "unknown".into());
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{user}@{}", host.trim())
}

fn workloads_text(workloads: &[WorkloadApproval]) -> String {
    let any = |v: &[String]| {
        if v.is_empty() {
            "any".to_string()
        } else {
            escape_joined(v, ",")
        }
    };
    workloads
        .iter()
        .map(|w| {
            format!(
                "{}  sha256 {}  path {}  uid {}  cgroup {}  models {}  gpus {}  hosts {}  by {} at {}  signed {}  {}\n",
                esc(&w.id),
                esc(&w.exe_sha256),
                esc(w.path.as_deref().unwrap_or("any")),
                w.uid.map(|u| u.to_string()).unwrap_or_else(|| "any".into()),
                esc(w.cgroup_prefix.as_deref().unwrap_or("any")),
                any(&w.models),
                any(&w.gpus),
                any(&w.hosts),
                esc(&w.approved_by),
                timestamp(w.approved_at_unix_nanos),
                if w.signer.is_empty() {
                    "no".into()
                } else {
                    esc(short(&w.signer))
                },
                esc(&w.note)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_workload_is_one_line_with_any_for_what_is_not_narrowed() {
        let w = WorkloadApproval {
            id: "w-1".into(),
            exe_sha256: "ab".repeat(32),
            path: None,
            uid: Some(0),
            cgroup_prefix: None,
            models: vec![],
            gpus: vec!["GPU-1".into()],
            hosts: vec![],
            approved_by: "root@h".into(),
            note: "serve\x1b[1A".into(),
            approved_at_unix_nanos: 0,
            signer: String::new(),
            signature: String::new(),
        };
        let text = workloads_text(&[w]);
        assert_eq!(
            text,
            format!(
                "w-1  sha256 {}  path any  uid 0  cgroup any  models any  gpus GPU-1  hosts any  by root@h at 1970-01-01T00:00:00.000Z  signed no  serve\\x1b[1A\n",
                "ab".repeat(32)
            )
        );
    }

    #[test]
    fn the_digest_and_signer_of_a_workload_are_escaped() {
        let w = WorkloadApproval {
            id: "w\u{202e}2".into(),
            exe_sha256: "ab\x1b[2J".into(),
            path: None,
            uid: None,
            cgroup_prefix: None,
            models: vec![],
            gpus: vec![],
            hosts: vec![],
            approved_by: "root@h".into(),
            note: String::new(),
            approved_at_unix_nanos: 0,
            signer: "\x1b]0;t\x07".into(),
            signature: String::new(),
        };
        let text = workloads_text(&[w]);
        assert!(
            text.starts_with("w\\u{202e}2  sha256 ab\\x1b[2J  "),
            "{text}"
        );
        assert!(text.contains("signed \\x1b]0;t\\x07  "), "{text}");
    }
}
