//! `vigilctl model inspect FILE`: the report the agent makes of a model
//! file it sees (format, architecture, size, quantization, fingerprints,
//! and for pickles every import and its risk), made here for a file on
//! disk. Nothing is loaded or unpickled; the control plane is not asked.
//! The approved-inference subcommands (register, approve, revoke,
//! rollback, list) are in `model_governance.rs`.

use std::io::Read;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde::Serialize;
use sha2::{Digest, Sha256};
use vigil_modelinspect::{Budget, ModelReport, Risk};

use crate::exit_code::ExitCode;
use crate::output::{print_one, OutputArgs, OutputFormat};
use crate::terminal_text::escape_controls;

#[derive(Subcommand)]
pub enum ModelCommand {
    /// Reads a model file's header (never its weights) and prints what it
    /// is and how dangerous it is to load. Exits 5 when it runs code on load.
    #[command(
        after_help = "Example:\n  vigilctl model inspect ~/Downloads/pytorch_model.bin --json"
    )]
    Inspect(InspectArgs),
    /// Hashes a model file, uploads it to the control plane's model store,
    /// signs its record with an admin key and registers it (not yet
    /// served: approve it).
    #[command(after_help = "Example:
  vigilctl model register resnet 2 ./resnet-v2.onnx --key admin.key \\
      --host gpu-node-7 --memory-max 512MiB --cpu-millicores 2000 \\
      --listen unix:/run/vigil/resnet.sock --note 'retrained on March data'")]
    Register(crate::model_governance::RegisterArgs),
    /// Approves a registered version: agents serve the newest approved
    /// version (and fall back to the older ones).
    #[command(
        after_help = "Example:\n  vigilctl model approve resnet 2 --reason 'passed evaluation'"
    )]
    Approve(crate::model_governance::VersionArgs),
    /// Revokes a version for good: no agent serves it again.
    #[command(
        after_help = "Example:\n  vigilctl model revoke resnet 2 --reason 'leaks training data'"
    )]
    Revoke(crate::model_governance::VersionArgs),
    /// Serves an earlier approved version on purpose (pinned until a newer
    /// version is approved).
    #[command(
        after_help = "Example:\n  vigilctl model rollback resnet 1 --reason 'v2 misclassifies'"
    )]
    Rollback(crate::model_governance::VersionArgs),
    /// Every registered model version, its state, and which serves.
    #[command(after_help = "Example:\n  vigilctl model list --name resnet --json")]
    List(crate::model_governance::ListArgs),
}

#[derive(Args)]
pub struct InspectArgs {
    /// The model file (GGUF, safetensors, ONNX, PyTorch zip or pickle, TFLite).
    file: std::path::PathBuf,
    /// Most bytes of header to read.
    #[arg(long, default_value_t = Budget::default().max_bytes)]
    max_header_bytes: u64,
    #[command(flatten)]
    output: OutputArgs,
}

#[derive(Serialize)]
struct Inspected<'a> {
    path: String,
    sha256: String,
    #[serde(flatten)]
    report: &'a ModelReport,
}

pub async fn run(
    target: &crate::control_plane::ControlPlaneArgs,
    command: ModelCommand,
) -> anyhow::Result<()> {
    use crate::control_plane::connect;
    use crate::model_governance as governance;
    match command {
        ModelCommand::Inspect(args) => inspect(args),
        ModelCommand::Register(args) => {
            governance::register(&mut connect(target).await?, args).await
        }
        ModelCommand::Approve(args) => governance::approve(&mut connect(target).await?, args).await,
        ModelCommand::Revoke(args) => governance::revoke(&mut connect(target).await?, args).await,
        ModelCommand::Rollback(args) => {
            governance::rollback(&mut connect(target).await?, args).await
        }
        ModelCommand::List(args) => governance::list(&mut connect(target).await?, args).await,
    }
}

fn inspect(args: InspectArgs) -> anyhow::Result<()> {
    let path = &args.file;
    let open = || std::fs::File::open(path).with_context(|| format!("opening {}", path.display()));
    let name = path.file_name().and_then(|n| n.to_str());
    let budget = Budget {
        max_bytes: args.max_header_bytes,
        ..Budget::default()
    };
    let report = vigil_modelinspect::inspect(open()?, budget, name)
        .map_err(|e| ExitCode::Failure.error(format!("{}: {e}", path.display())))?;
    let sha256 = sha256_of(open()?).with_context(|| format!("reading {}", path.display()))?;
    let out = Inspected {
        path: path.display().to_string(),
        sha256,
        report: &report,
    };
    print_one(args.output.format(OutputFormat::Json), &out, || table(&out))?;
    if report.risk == Risk::Dangerous {
        return Err(ExitCode::VerificationFailed.error(format!(
            "{} runs code when loaded: {}",
            escape_controls(&path.display().to_string()),
            reasons_line(&report.risk_reasons)
        )));
    }
    Ok(())
}

/// Reasons shown in the one-line verdict; the rest are in the report.
const REASONS_SHOWN: usize = 8;

/// The reasons on one line: each escaped (a pickle names its imports, and
/// a name may hold a newline or an escape sequence), the first few only.
fn reasons_line(reasons: &[String]) -> String {
    let mut line: Vec<String> = reasons
        .iter()
        .take(REASONS_SHOWN)
        .map(|r| escape_controls(r).into_owned())
        .collect();
    if reasons.len() > REASONS_SHOWN {
        line.push(format!("{} more", reasons.len() - REASONS_SHOWN));
    }
    line.join("; ")
}

fn sha256_of(mut file: std::fs::File) -> std::io::Result<String> {
    let mut h = Sha256::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hex::encode(h.finalize()));
        }
        h.update(&buf[..n]);
    }
}

/// The report for people: one "key: value" line each, file-supplied text
/// escaped.
fn table(i: &Inspected) -> String {
    let r = i.report;
    let mut rows: Vec<(&str, String)> = vec![
        ("path", i.path.clone()),
        (
            "format",
            format!("{} {}", r.format.as_str(), r.format_version),
        ),
        ("architecture", r.architecture.clone()),
        ("name", r.name.clone()),
        ("size", r.size_label.clone()),
        ("parameters", r.parameters.to_string()),
        ("quantization", r.quantization.clone()),
        ("tensors", r.tensor_count.to_string()),
        (
            "dtypes",
            r.dtypes.iter().cloned().collect::<Vec<_>>().join(","),
        ),
        (
            "context length",
            r.context_length.map(|c| c.to_string()).unwrap_or_default(),
        ),
        ("sha256", i.sha256.clone()),
        ("structure", r.structure_fingerprint.clone()),
        ("risk", r.risk.as_str().to_string()),
    ];
    for reason in &r.risk_reasons {
        rows.push(("  because", reason.clone()));
    }
    if let Some(o) = &r.onnx {
        rows.push((
            "producer",
            format!("{} {}", o.producer_name, o.producer_version),
        ));
        let opsets: Vec<String> = o.opsets.iter().map(|(d, v)| format!("{d}:{v}")).collect();
        rows.push(("opsets", opsets.join(",")));
        for (n, t) in &o.inputs {
            rows.push(("input", format!("{n} {t}")));
        }
        for (n, t) in &o.outputs {
            rows.push(("output", format!("{n} {t}")));
        }
    }
    if let Some(p) = &r.pickle {
        rows.push(("pickle imports", p.imports.len().to_string()));
        for imp in &p.imports {
            rows.push((
                "  import",
                format!(
                    "{}.{} ({:?}) in {}",
                    imp.module, imp.name, imp.class, imp.at
                ),
            ));
        }
    }
    let keys: Vec<&String> = r.metadata.keys().take(40).collect();
    for k in keys {
        rows.push(("  meta", format!("{k} = {}", r.metadata[k])));
    }
    if r.metadata.len() > 40 {
        rows.push((
            "  meta",
            format!("... {} more (-o json)", r.metadata.len() - 40),
        ));
    }
    rows.into_iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("{k:<15} {}\n", escape_controls(&v)))
        .collect()
}
