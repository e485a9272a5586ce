//! `vigilctl model register|approve|revoke|rollback|list`: the models the
//! fleet may serve. `register` hashes the file, uploads it (1 MiB chunks)
//! to the control plane's model store, signs the record with an admin key
//! and registers it; the others change a version's state or list them.

use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use tokio::io::AsyncReadExt;
use vigil_domain::{ActiveModel, ModelRecord, ModelState, MODEL_FORMAT_ONNX};
use vigil_proto::admin::v1 as pb;

use crate::control_plane::{refused, AdminClient};
use crate::exit_code::ExitCode;
use crate::output::{print_list, OutputArgs, OutputFormat};
use crate::render::{short, timestamp};
use crate::terminal_text::{escape_controls as esc, escape_joined};

/// One upload chunk's bytes (the control plane takes at most 4 MiB a
/// message).
const CHUNK: usize = 1 << 20;

#[derive(Debug, Args)]
pub struct RegisterArgs {
    /// The model's name: 1 to 64 of a-z 0-9 . _ - starting with a letter or digit.
    name: String,
    /// Its version, 1 and up (a new file needs a new version).
    version: u64,
    /// The model file (ONNX).
    file: PathBuf,
    /// The admin key that signs the record (`vigilctl policy keygen`); its
    /// public half must be one of the control plane's --trusted-policy-key.
    #[arg(long)]
    key: PathBuf,
    /// An agent id it may be served on (repeatable; its certificate's
    /// identity: a hostname is only what an agent says of itself).
    /// With none, every host.
    #[arg(long)]
    host: Vec<String>,
    /// Its sidecar's memory limit: bytes, or with KiB, MiB, GiB (0: the agent's default).
    #[arg(long, value_parser = parse_bytes, default_value = "0")]
    memory_max: u64,
    /// Its sidecar's CPU limit in millicores (1000 = one core; 0: unlimited).
    #[arg(long, default_value_t = 0)]
    cpu_millicores: u32,
    /// Where its sidecar listens: tcp:HOST:PORT or unix:PATH (empty: the agent's default).
    #[arg(long, default_value = "")]
    listen: String,
    /// Why it is registered, for the audit log.
    #[arg(long, default_value = "")]
    note: String,
}

#[derive(Debug, Args)]
pub struct VersionArgs {
    /// The model's name.
    name: String,
    /// The version.
    version: u64,
    /// Why, for the record and the audit log.
    #[arg(long, default_value = "")]
    reason: String,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// Only this model.
    #[arg(long)]
    name: Option<String>,
    #[command(flatten)]
    output: OutputArgs,
}

/// `512MiB`, `2GiB`, `64KiB`, `1048576` → bytes.
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 512MiB, 2GiB, 1048576)"))?;
    let mul: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        other => return Err(format!("{other:?} is not a size unit (B, KiB, MiB, GiB)")),
    };
    n.checked_mul(mul)
        .ok_or_else(|| format!("{s:?} is too large"))
}

/// Hex sha256 and size of a file, streamed.
async fn digest_of(path: &Path) -> anyhow::Result<(String, u64)> {
    use sha2::{Digest, Sha256};
    let mut f = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut size = 0u64;
    loop {
        let n = f
            .read(&mut buf)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            return Ok((hex::encode(h.finalize()), size));
        }
        h.update(&buf[..n]);
        size += n as u64;
    }
}

/// Uploads `path` (its digest and size said first), 1 MiB at a time.
async fn upload(
    client: &mut AdminClient,
    path: &Path,
    sha256: &str,
    size: u64,
) -> anyhow::Result<pb::UploadModelResponse> {
    let (tx, rx) = tokio::sync::mpsc::channel(2);
    let mut file = tokio::fs::File::open(path)
        .await
        .with_context(|| format!("reading {}", path.display()))?;
    let (sha, shown) = (sha256.to_string(), path.display().to_string());
    let reader = tokio::spawn(async move {
        let mut first = true;
        loop {
            let mut data = vec![0u8; CHUNK];
            let mut filled = 0;
            while filled < CHUNK {
                let n = file
                    .read(&mut data[filled..])
                    .await
                    .with_context(|| format!("reading {shown}"))?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            data.truncate(filled);
            if filled == 0 && !first {
                return anyhow::Ok(());
            }
            let chunk = pb::UploadModelChunk {
                data,
                sha256: if first { sha.clone() } else { String::new() },
                size: if first { size } else { 0 },
            };
            first = false;
            if tx.send(chunk).await.is_err() || filled < CHUNK {
                return Ok(());
            }
        }
    });
    let answer = client
        .upload_model(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
    reader.await.context("the upload's reader")??;
    Ok(answer.map_err(refused)?.into_inner())
}

pub async fn register(client: &mut AdminClient, args: RegisterArgs) -> anyhow::Result<()> {
    vigil_domain::check_model_name(&args.name).map_err(|e| ExitCode::Usage.error(e))?;
    let secret = std::fs::read_to_string(&args.key)
        .with_context(|| format!("reading {}", args.key.display()))?;
    let key = vigil_policy::SigningKey::from_hex(&secret)
        .map_err(|e| ExitCode::Usage.error(format!("{}: {e}", args.key.display())))?;
    let (sha256, size) = digest_of(&args.file).await?;
    let mut record = ModelRecord {
        name: args.name.clone(),
        version: args.version,
        sha256: sha256.clone(),
        size,
        format: MODEL_FORMAT_ONNX.into(),
        hosts: args.host,
        memory_max_bytes: args.memory_max,
        cpu_millicores: args.cpu_millicores,
        listen: args.listen,
        ..Default::default()
    };
    record
        .check()
        .map_err(|e| ExitCode::Usage.error(e.to_string()))?;
    key.sign_model(&mut record);
    let uploaded = upload(client, &args.file, &sha256, size).await?;
    let registered = client
        .register_model(pb::RegisterModelRequest {
            record: Some(record.into()),
            note: args.note,
        })
        .await
        .map_err(refused)?
        .into_inner();
    let record = registered
        .record
        .map(ModelRecord::try_from)
        .transpose()
        .context("the control plane sent a malformed record")?;
    println!(
        "registered model {} version {} (sha256 {sha256}, {size} bytes; {}); approve it with `vigilctl model approve {} {}`",
        esc(&args.name),
        args.version,
        if uploaded.already_stored {
            "the file was stored already"
        } else {
            "uploaded"
        },
        esc(&args.name),
        args.version
    );
    if let Some(r) = record.filter(|r| r.state != ModelState::Registered) {
        println!("  it is {} already", r.state);
    }
    Ok(())
}

fn version_request(args: &VersionArgs) -> anyhow::Result<pb::ModelVersionRequest> {
    vigil_domain::check_model_name(&args.name).map_err(|e| ExitCode::Usage.error(e))?;
    Ok(pb::ModelVersionRequest {
        name: args.name.clone(),
        version: args.version,
        reason: args.reason.clone(),
    })
}

pub async fn approve(client: &mut AdminClient, args: VersionArgs) -> anyhow::Result<()> {
    client
        .approve_model(version_request(&args)?)
        .await
        .map_err(refused)?;
    println!(
        "approved model {} version {}",
        esc(&args.name),
        args.version
    );
    Ok(())
}

pub async fn revoke(client: &mut AdminClient, args: VersionArgs) -> anyhow::Result<()> {
    client
        .revoke_model(version_request(&args)?)
        .await
        .map_err(refused)?;
    println!(
        "revoked model {} version {}: it is never served again",
        esc(&args.name),
        args.version
    );
    Ok(())
}

pub async fn rollback(client: &mut AdminClient, args: VersionArgs) -> anyhow::Result<()> {
    client
        .rollback_model(version_request(&args)?)
        .await
        .map_err(refused)?;
    println!(
        "model {} serves version {} (pinned until a newer version is approved)",
        esc(&args.name),
        args.version
    );
    Ok(())
}

/// A record as `list` prints it, with whether its version is the active one.
#[derive(Debug, Clone, Serialize)]
struct Listed {
    #[serde(flatten)]
    record: ModelRecord,
    active: bool,
    pinned: bool,
}

pub async fn list(client: &mut AdminClient, args: ListArgs) -> anyhow::Result<()> {
    let answer = client
        .list_models(pb::ListModelsRequest {
            name: args.name.unwrap_or_default(),
        })
        .await
        .map_err(refused)?
        .into_inner();
    let active: Vec<ActiveModel> = answer.active.into_iter().map(Into::into).collect();
    let listed = answer
        .models
        .into_iter()
        .map(|r| {
            let record = ModelRecord::try_from(r)?;
            let a = active
                .iter()
                .find(|a| a.name == record.name && a.version == record.version);
            Ok(Listed {
                active: a.is_some(),
                pinned: a.is_some_and(|a| a.pinned),
                record,
            })
        })
        .collect::<Result<Vec<_>, vigil_proto::WireError>>()
        .context("the control plane sent a malformed model record")?;
    print_list(
        args.output.format(OutputFormat::Json),
        &listed,
        Listed::clone,
        models_text,
    )
}

fn models_text(models: &[Listed]) -> String {
    if models.is_empty() {
        return "no model is registered\n".into();
    }
    let mut out = String::from(
        "NAME  VERSION  STATE  SERVING  SHA256  SIZE  HOSTS  SIGNER  REGISTERED  CHANGED\n",
    );
    for m in models {
        let r = &m.record;
        let serving = match (m.active, m.pinned) {
            (true, true) => "active (pinned)",
            (true, false) => "active",
            (false, _) if r.state == ModelState::Approved => "fallback",
            _ => "-",
        };
        out.push_str(&format!(
            "{}  {}  {}  {}  {}  {}  {}  {}  {} by {}  {}{}\n",
            esc(&r.name),
            r.version,
            r.state,
            serving,
            esc(short(&r.sha256)),
            r.size,
            if r.hosts.is_empty() {
                "all".into()
            } else {
                escape_joined(&r.hosts, ",")
            },
            esc(short(&r.signer)),
            timestamp(r.registered_at_unix_nanos),
            esc(&r.registered_by),
            esc(&r.changed_by),
            if r.reason.is_empty() {
                String::new()
            } else {
                format!(": {}", esc(&r.reason))
            }
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_take_binary_units() {
        assert_eq!(parse_bytes("512MiB"), Ok(512 << 20));
        assert_eq!(parse_bytes("2GiB"), Ok(2 << 30));
        assert_eq!(parse_bytes("64K"), Ok(64 << 10));
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("0"), Ok(0));
        for bad in ["", "MiB", "1.5GiB", "3TB", "-1", "99999999999999999999GiB"] {
            assert!(parse_bytes(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_list_says_which_version_serves_and_escapes_what_hosts_named() {
        let record = |version: u64, state: ModelState| ModelRecord {
            name: "m".into(),
            version,
            sha256: "ab".repeat(32),
            size: 10,
            format: "onnx".into(),
            hosts: vec!["h\x1b[2J".into()],
            signer: "cd".repeat(32),
            state,
            registered_by: "alice".into(),
            changed_by: "bob".into(),
            reason: "why\n".into(),
            ..Default::default()
        };
        let text = models_text(&[
            Listed {
                record: record(2, ModelState::Approved),
                active: true,
                pinned: true,
            },
            Listed {
                record: record(1, ModelState::Approved),
                active: false,
                pinned: false,
            },
            Listed {
                record: record(3, ModelState::Revoked),
                active: false,
                pinned: false,
            },
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert!(
            lines[1]
                .starts_with("m  2  approved  active (pinned)  abababababababab  10  h\\x1b[2J  "),
            "{}",
            lines[1]
        );
        assert!(lines[1].ends_with("by alice  bob: why\\n"), "{}", lines[1]);
        assert!(
            lines[2].starts_with("m  1  approved  fallback  "),
            "{}",
            lines[2]
        );
        assert!(lines[3].starts_with("m  3  revoked  -  "), "{}", lines[3]);
        assert_eq!(models_text(&[]), "no model is registered\n");
    }
}
