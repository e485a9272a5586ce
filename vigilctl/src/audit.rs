//! `vigilctl audit list|verify`: the tamper-evident audit log.

use anyhow::Context;
use clap::Subcommand;
use serde_json::json;
use vigil_domain::AuditEntry;
use vigil_proto::admin::v1 as pb;

use crate::control_plane::{refused, AdminClient};
use crate::exit_code::ExitCode;
use crate::output::{print_list, print_one, OutputArgs, OutputFormat};
use crate::render::{short, timestamp};
use crate::terminal_text::escape_controls as esc;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Audit entries, oldest first.
    #[command(
        after_help = "Examples:\n  vigilctl audit list\n  vigilctl audit list --after 40 -o jsonl"
    )]
    List {
        /// Only entries after this index.
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Recomputes the hash chain from the first entry; a broken chain exits 5.
    #[command(
        after_help = "Example:\n  vigilctl audit verify || echo 'the audit log was changed'"
    )]
    Verify {
        #[command(flatten)]
        output: OutputArgs,
    },
}

pub async fn run(client: &mut AdminClient, command: AuditCommand) -> anyhow::Result<()> {
    match command {
        AuditCommand::List { after, output } => {
            let entries = client
                .list_audit(pb::ListAuditRequest {
                    after_index: after,
                    limit: 10_000,
                })
                .await
                .map_err(refused)?
                .into_inner()
                .entries
                .into_iter()
                .map(AuditEntry::try_from)
                .collect::<Result<Vec<_>, _>>()
                .context("the control plane sent a malformed audit entry")?;
            print_list(
                output.format(OutputFormat::Jsonl),
                &entries,
                AuditEntry::clone,
                audit_text,
            )
        }
        AuditCommand::Verify { output } => {
            let r = client
                .verify_audit(pb::VerifyAuditRequest {})
                .await
                .map_err(refused)?
                .into_inner();
            let intact = r.error.is_empty();
            let json = json!({"entries": r.entries, "intact": intact, "error": r.error});
            print_one(output.format(OutputFormat::Json), json, || {
                if intact {
                    format!("audit chain intact: {} entries\n", r.entries)
                } else {
                    String::new()
                }
            })?;
            if intact {
                Ok(())
            } else {
                Err(ExitCode::VerificationFailed
                    .error(format!("audit chain BROKEN: {}", esc(&r.error))))
            }
        }
    }
}

fn audit_text(entries: &[AuditEntry]) -> String {
    entries
        .iter()
        .map(|e| {
            format!(
                "#{:<5} {} {:<18} {} by {}: {}\n",
                e.index,
                timestamp(e.at_unix_nanos),
                esc(&e.action),
                esc(&e.subject),
                esc(short(&e.actor)),
                esc(&e.detail)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_print_one_line_each_with_host_text_escaped() {
        let e = AuditEntry {
            index: 7,
            at_unix_nanos: 0,
            actor: "agent-1\x1b[8m".into(),
            action: "enforce.kill".into(),
            subject: "pid 9 on h".into(),
            detail: "exe /tmp/x\rok".into(),
            prev_hash: String::new(),
            hash: String::new(),
        };
        assert_eq!(
            audit_text(std::slice::from_ref(&e)),
            "#7     1970-01-01T00:00:00.000Z enforce.kill       pid 9 on h by agent-1\\x1b[8m: exe /tmp/x\\rok\n"
        );
        let v = serde_json::to_value(&e).unwrap();
        for key in [
            "index",
            "at_unix_nanos",
            "actor",
            "action",
            "subject",
            "detail",
            "prev_hash",
            "hash",
        ] {
            assert!(v.get(key).is_some(), "{key}");
        }
    }
}
