//! `vigilctl inventory list|export`: every AI runtime, model file and AI
//! endpoint the fleet reported, approved or not.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Subcommand, ValueEnum};
use vigil_domain::{InventoryItem, InventoryKind};
use vigil_proto::admin::v1 as pb;

use crate::control_plane::{refused, AdminClient};
use crate::output::{print_list, OutputArgs, OutputFormat};
use crate::render::{short, timestamp};
use crate::terminal_text::{escape_controls as esc, escape_joined};

#[derive(Debug, Subcommand)]
pub enum InventoryCommand {
    /// The inventory, by kind and key: what it is, where and when it was
    /// seen, its digests and whether a workload approves it.
    #[command(after_help = "Examples:
  vigilctl inventory list --kind model
  vigilctl inventory list -o jsonl | jq 'select(.approved | not)'")]
    List {
        /// Only this kind.
        #[arg(long, value_enum)]
        kind: Option<KindArg>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// The whole inventory as CSV or a CycloneDX 1.6 ML-BOM (JSON), to a
    /// file or standard output.
    #[command(
        after_help = "Example:\n  vigilctl inventory export --format cyclonedx --out fleet.cdx.json"
    )]
    Export {
        /// csv (one row per item, a header line first) or cyclonedx (a
        /// CycloneDX 1.6 ML-BOM in JSON).
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Write here instead of standard output.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum KindArg {
    Runtime,
    Model,
    Endpoint,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ExportFormat {
    Csv,
    Cyclonedx,
}

pub async fn run(client: &mut AdminClient, command: InventoryCommand) -> anyhow::Result<()> {
    match command {
        InventoryCommand::List { kind, output } => {
            let kind = kind.map(|k| match k {
                KindArg::Runtime => InventoryKind::Runtime,
                KindArg::Model => InventoryKind::Model,
                KindArg::Endpoint => InventoryKind::Endpoint,
            });
            let (items, refused_sightings) = list(client, kind).await?;
            print_list(
                output.format(OutputFormat::Jsonl),
                &items,
                InventoryItem::clone,
                inventory_text,
            )?;
            if refused_sightings > 0 {
                eprintln!(
                    "vigilctl: the inventory is full: {refused_sightings} sightings of new items were not stored"
                );
            }
        }
        InventoryCommand::Export { format, out } => {
            let format = match format {
                ExportFormat::Csv => pb::InventoryFormat::Csv,
                ExportFormat::Cyclonedx => pb::InventoryFormat::CyclonedxJson,
            };
            let mut stream = client
                .export_inventory(pb::ExportInventoryRequest {
                    format: format.into(),
                })
                .await
                .map_err(refused)?
                .into_inner();
            let mut document = Vec::new();
            while let Some(chunk) = stream.message().await.map_err(refused)? {
                document.extend_from_slice(&chunk.data);
            }
            match out {
                Some(path) => std::fs::write(&path, &document)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => std::io::stdout().write_all(&document)?,
            }
        }
    }
    Ok(())
}

/// Every item, a page at a time, and the sightings refused for lack of room.
async fn list(
    client: &mut AdminClient,
    kind: Option<InventoryKind>,
) -> anyhow::Result<(Vec<InventoryItem>, u64)> {
    let mut items = Vec::new();
    let (mut after_kind, mut after_key) = (0, String::new());
    loop {
        let page = client
            .list_inventory(pb::ListInventoryRequest {
                kind: vigil_proto::inventory_kind_to_wire(kind).into(),
                after_kind,
                after_key: after_key.clone(),
                limit: 0,
            })
            .await
            .map_err(refused)?
            .into_inner();
        for item in page.items {
            items.push(
                InventoryItem::try_from(item)
                    .context("the control plane sent a malformed inventory item")?,
            );
        }
        if !page.more {
            return Ok((items, page.refused_sightings));
        }
        (after_kind, after_key) = (page.next_after_kind, page.next_after_key);
    }
}

fn inventory_text(items: &[InventoryItem]) -> String {
    items
        .iter()
        .map(|i| {
            let mut line = format!(
                "{:<8} {}  {}  seen {}x on {} host(s) {}..{}",
                i.kind.map_or("?", InventoryKind::as_str),
                if i.approved { "approved" } else { "UNAPPROVED" },
                esc(&i.name),
                i.sightings,
                if i.unnamed_host_sightings > 0 {
                    format!("{}+", i.hosts.len())
                } else {
                    i.hosts.len().to_string()
                },
                if i.sightings == 0 {
                    "-".into()
                } else {
                    timestamp(i.first_seen_unix_nanos)
                },
                if i.sightings == 0 {
                    "-".into()
                } else {
                    timestamp(i.last_seen_unix_nanos)
                },
            );
            if let Some(d) = i.sha256() {
                line.push_str(&format!("  sha256={}", esc(short(d))));
            }
            if let Some(m) = i.model.as_deref() {
                if !m.structure_fingerprint.is_empty() {
                    line.push_str(&format!(
                        "  structure={}",
                        esc(short(&m.structure_fingerprint))
                    ));
                }
                line.push_str(&format!("  risk={}", m.risk.as_str()));
                if !m.dangerous_imports.is_empty() {
                    line.push_str(&format!(
                        "  imports=[{}]",
                        escape_joined(&m.dangerous_imports, ",")
                    ));
                }
            }
            if !i.hosts.is_empty() {
                line.push_str(&format!("  hosts={}", escape_joined(&i.hosts, ",")));
                if i.unnamed_host_sightings > 0 {
                    line.push_str(&format!(
                        "(+{} sightings elsewhere)",
                        i.unnamed_host_sightings
                    ));
                }
            }
            line.push('\n');
            line
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_item_is_one_line_with_its_digests_and_host_text_escaped() {
        let item = InventoryItem {
            kind: Some(InventoryKind::Model),
            key: format!("sha256:{}", "ab".repeat(32)),
            name: "llama\x1b[2J (gguf)".into(),
            model: Some(Box::new(vigil_domain::ModelIdentity {
                structure_fingerprint: "cd".repeat(32),
                risk: vigil_domain::ModelRisk::Dangerous,
                dangerous_imports: vec!["posix.system".into()],
                ..Default::default()
            })),
            hosts: vec!["h1\n".into()],
            sightings: 2,
            first_seen_unix_nanos: 1_000_000_000,
            last_seen_unix_nanos: 2_000_000_000,
            ..Default::default()
        };
        let text = inventory_text(&[item]);
        assert_eq!(text.lines().count(), 1);
        assert!(!text.contains('\x1b'));
        assert!(text.starts_with("model    UNAPPROVED  llama\\x1b[2J (gguf)  seen 2x on 1 host(s)"));
        assert!(text.contains(&format!("sha256={}", "ab".repeat(8))));
        assert!(text.contains(&format!("structure={}", "cd".repeat(8))));
        assert!(text.contains("risk=dangerous  imports=[posix.system]  hosts=h1\\n"));
    }
}
