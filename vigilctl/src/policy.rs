//! `vigilctl policy`: policy as code. check, test, keygen and sign work on
//! files here; push, list, diff and rollback ask the control plane.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Subcommand;
use vigil_domain::PolicySummary;
use vigil_proto::admin::v1 as pb;

use crate::control_plane::{self, refused, AdminClient};
use crate::exit_code::ExitCode;
use crate::output::{print_list, OutputArgs, OutputFormat};
use crate::policy_files;
use crate::render::{short, timestamp};
use crate::terminal_text::{escape_controls as esc, escape_lines};

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Parses, type-checks and compiles a policy directory; errors as
    /// file:line:col, and exit code 5 when there are any.
    #[command(after_help = "Example:\n  vigilctl policy check policies/default")]
    Check {
        /// The policy directory (every .yaml/.yml file below it).
        dir: PathBuf,
    },
    /// Replays recorded events (JSON lines from `vigil-agent --record-events`)
    /// against a policy directory and prints which rule each one fires.
    #[command(
        after_help = "Example:\n  vigilctl policy test policies/default --events /var/lib/vigil/events.jsonl"
    )]
    Test {
        /// The policy directory.
        dir: PathBuf,
        /// The recorded events, one JSON finding per line.
        #[arg(long)]
        events: PathBuf,
    },
    /// Writes a new ed25519 signing key (hex secret) to FILE and prints its public key.
    #[command(after_help = "Example:\n  vigilctl policy keygen --out admin.key")]
    Keygen {
        /// Where to write the secret key (must not exist; written mode 0600).
        #[arg(long)]
        out: PathBuf,
    },
    /// Checks a policy directory and signs it into a versioned bundle.
    #[command(
        after_help = "Example:\n  vigilctl policy sign policies/default --key admin.key --version 4 --out v4.json"
    )]
    Sign {
        /// The policy directory.
        dir: PathBuf,
        /// The admin secret key (from `policy keygen`).
        #[arg(long)]
        key: PathBuf,
        /// The bundle's version: higher than every version pushed before.
        #[arg(long)]
        version: u64,
        /// Where to write the signed bundle (JSON).
        #[arg(long)]
        out: PathBuf,
    },
    /// Pushes a signed bundle: the control plane verifies it, commits it
    /// through raft, and every agent receives it. A refused bundle exits 5.
    #[command(
        after_help = "Example:\n  vigilctl policy push v4.json --note 'allow the new model server'"
    )]
    Push {
        /// The signed bundle (from `policy sign`).
        bundle: PathBuf,
        /// Why, for the audit log.
        #[arg(long, default_value = "push")]
        note: String,
    },
    /// Every version pushed, the active one marked with `*`.
    #[command(after_help = "Example:\n  vigilctl policy list -o json")]
    List {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// What changed between two versions, file by file.
    #[command(after_help = "Example:\n  vigilctl policy diff 3 4")]
    Diff {
        /// The older version.
        from: u64,
        /// The newer version.
        to: u64,
    },
    /// Makes an earlier version's rules active again, as a new version
    /// signed with KEY (versions only grow; the note records the rollback).
    #[command(after_help = "Example:\n  vigilctl policy rollback 3 --key admin.key")]
    Rollback {
        /// The version whose rules become active again.
        version: u64,
        /// The admin secret key that signs the new version.
        #[arg(long)]
        key: PathBuf,
    },
}

pub async fn run(
    endpoint: &crate::control_plane::ControlPlaneArgs,
    command: PolicyCommand,
) -> anyhow::Result<()> {
    match command {
        PolicyCommand::Check { dir } => check(&dir),
        PolicyCommand::Test { dir, events } => test(&dir, &events),
        PolicyCommand::Keygen { out } => keygen(&out),
        PolicyCommand::Sign {
            dir,
            key,
            version,
            out,
        } => sign(&dir, &key, version, &out),
        PolicyCommand::Push { bundle, note } => {
            push_file(&mut control_plane::connect(endpoint).await?, &bundle, note).await
        }
        PolicyCommand::List { output } => {
            print_policies(&mut control_plane::connect(endpoint).await?, output).await
        }
        PolicyCommand::Diff { from, to } => {
            diff(&mut control_plane::connect(endpoint).await?, from, to).await
        }
        PolicyCommand::Rollback { version, key } => {
            rollback(&mut control_plane::connect(endpoint).await?, version, &key).await
        }
    }
}

fn check(dir: &Path) -> anyhow::Result<()> {
    let (files, set) = policy_files::check_dir(dir)?;
    println!(
        "{}: ok ({} files, {} rules, {} lists)",
        dir.display(),
        files.len(),
        set.rule_ids().len(),
        set.lists().len()
    );
    Ok(())
}

fn test(dir: &Path, events: &Path) -> anyhow::Result<()> {
    let (_, set) = policy_files::check_dir(dir)?;
    let text =
        std::fs::read_to_string(events).with_context(|| format!("reading {}", events.display()))?;
    let host = vigil_policy::HostFacts::default();
    let mut fired: BTreeMap<String, u64> = Default::default();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let finding: vigil_domain::Finding = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not a recorded event", events.display(), i + 1))?;
        let verdict = match set.evaluate(&finding, None, &host) {
            Some(d) => {
                *fired.entry(d.rule_id.clone()).or_default() += 1;
                format!(
                    "{} {} {}{}",
                    d.rule_id,
                    d.severity,
                    d.action.as_str(),
                    if d.dry_run { " (dry run)" } else { "" }
                )
            }
            None => {
                *fired.entry("(allowed: no rule)".into()).or_default() += 1;
                "allowed: no rule fires".to_string()
            }
        };
        println!(
            "{}:{}: {} pid {} {} {} -> {verdict}",
            events.display(),
            i + 1,
            finding.signal,
            finding.process.pid,
            esc(finding.process.name()),
            esc(&finding.object())
        );
    }
    for (rule, n) in fired {
        println!("{n:>8}  {rule}");
    }
    Ok(())
}

fn keygen(out: &Path) -> anyhow::Result<()> {
    let key = vigil_policy::SigningKey::generate();
    write_private(out, &key.secret_hex())?;
    println!("{}", key.public_hex());
    Ok(())
}

fn read_key(path: &Path) -> anyhow::Result<vigil_policy::SigningKey> {
    let secret =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    vigil_policy::SigningKey::from_hex(&secret).with_context(|| format!("{}", path.display()))
}

fn sign(dir: &Path, key: &Path, version: u64, out: &Path) -> anyhow::Result<()> {
    let (files, _) = policy_files::check_dir(dir)?;
    let bundle = read_key(key)?.sign(version, files);
    std::fs::write(out, bundle.to_json()).with_context(|| format!("writing {}", out.display()))?;
    println!(
        "{}: version {} signed by {} ({} files, digest {})",
        out.display(),
        bundle.version,
        bundle.signer,
        bundle.files.len(),
        bundle.digest()
    );
    Ok(())
}

/// Writes a secret readable by its owner only.
fn write_private(path: &Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist)", path.display()))?;
    writeln!(f, "{secret}")?;
    Ok(())
}

/// A push the control plane refused for its signature or its rules
/// exits `VerificationFailed`.
fn push_refused(status: tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::InvalidArgument | tonic::Code::PermissionDenied => {
            ExitCode::VerificationFailed.error(status.message().to_string())
        }
        _ => refused(status),
    }
}

async fn push(client: &mut AdminClient, bundle: Vec<u8>, note: String) -> anyhow::Result<u64> {
    Ok(client
        .push_policy(pb::PushPolicyRequest { bundle, note })
        .await
        .map_err(push_refused)?
        .into_inner()
        .version)
}

async fn list(client: &mut AdminClient) -> anyhow::Result<Vec<PolicySummary>> {
    Ok(client
        .list_policies(pb::ListPoliciesRequest {})
        .await
        .map_err(refused)?
        .into_inner()
        .policies
        .into_iter()
        .map(Into::into)
        .collect())
}

async fn fetch_bundle(
    client: &mut AdminClient,
    version: u64,
) -> anyhow::Result<vigil_policy::Bundle> {
    let bytes = client
        .get_policy(pb::GetPolicyRequest { version })
        .await
        .map_err(refused)?
        .into_inner()
        .bundle;
    vigil_policy::Bundle::from_json(&bytes).with_context(|| format!("version {version} as stored"))
}

async fn push_file(client: &mut AdminClient, bundle: &Path, note: String) -> anyhow::Result<()> {
    let bytes = std::fs::read(bundle).with_context(|| format!("reading {}", bundle.display()))?;
    let version = push(client, bytes, note).await?;
    println!("policy version {version} is active");
    Ok(())
}

async fn print_policies(client: &mut AdminClient, output: OutputArgs) -> anyhow::Result<()> {
    let policies = list(client).await?;
    print_list(
        output.format(OutputFormat::Json),
        &policies,
        PolicySummary::clone,
        policies_text,
    )
}

async fn diff(client: &mut AdminClient, from: u64, to: u64) -> anyhow::Result<()> {
    let a = fetch_bundle(client, from).await?;
    let b = fetch_bundle(client, to).await?;
    print!("{}", policy_diff(from, &a.files, to, &b.files));
    Ok(())
}

async fn rollback(client: &mut AdminClient, version: u64, key: &Path) -> anyhow::Result<()> {
    let old = fetch_bundle(client, version).await?;
    let newest = list(client)
        .await?
        .iter()
        .map(|p| p.version)
        .max()
        .unwrap_or(0);
    let bundle = read_key(key)?.sign(newest + 1, old.files);
    let v = push(client, bundle.to_json(), format!("rollback to {version}")).await?;
    println!("policy version {v} is active: the rules of version {version}");
    Ok(())
}

fn policies_text(policies: &[PolicySummary]) -> String {
    policies
        .iter()
        .map(|p| {
            format!(
                "{} v{:<5} {}  {} rules  digest {}  signer {}…  {}\n",
                if p.active { "*" } else { " " },
                p.version,
                timestamp(p.pushed_at_unix_nanos),
                p.rules,
                esc(&p.digest),
                esc(short(&p.signer)),
                esc(&p.note)
            )
        })
        .collect()
}

/// A unified diff of two versions' files.
pub fn policy_diff(
    from: u64,
    a: &BTreeMap<String, String>,
    to: u64,
    b: &BTreeMap<String, String>,
) -> String {
    let out = vigil_policy::bundle_diff(from, a, to, b);
    // The files come from the control plane's store, unverified here.
    escape_lines(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_active_version_is_marked_and_the_note_shown() {
        let p = PolicySummary {
            version: 3,
            signer: "ab".repeat(32),
            digest: "d".into(),
            pushed_at_unix_nanos: 0,
            note: "rollback to 1".into(),
            active: true,
            rules: 4,
        };
        let text = policies_text(&[p]);
        assert!(text.starts_with("* v3 "), "{text}");
        assert!(
            text.ends_with("signer abababababababab…  rollback to 1\n"),
            "{text}"
        );
    }

    #[test]
    fn diffs_name_the_versions_and_same_rules_say_so() {
        let a: BTreeMap<String, String> = [("r.yaml".into(), "action: freeze\n".into())].into();
        let b: BTreeMap<String, String> = [("r.yaml".into(), "action: kill\n".into())].into();
        let d = policy_diff(2, &a, 3, &b);
        assert!(
            d.contains("-action: freeze") && d.contains("+action: kill"),
            "{d}"
        );
        assert!(d.contains("v2/r.yaml") && d.contains("v3/r.yaml"), "{d}");
        assert_eq!(policy_diff(1, &a, 2, &a), "v1 and v2 have the same rules\n");
    }

    #[test]
    fn diffs_escape_what_the_stored_files_hold() {
        let a: BTreeMap<String, String> = [("r\x1b]0;x\x07.yaml".into(), "a: 1\n".into())].into();
        let b: BTreeMap<String, String> = [(
            "r\x1b]0;x\x07.yaml".into(),
            "a: 2\x1b[2J\r\u{202e}\n".into(),
        )]
        .into();
        let d = policy_diff(1, &a, 2, &b);
        assert!(
            !d.contains('\x1b') && !d.contains('\r') && !d.contains('\u{202e}'),
            "{d:?}"
        );
        // `similar` breaks lines at CR too; each part is escaped.
        assert!(d.contains("+a: 2\\x1b[2J\\r+\\u{202e}\n"), "{d}");
        assert!(d.contains("v2/r\\x1b]0;x\\x07.yaml"), "{d}");
    }

    #[test]
    fn the_digest_and_signer_of_a_listed_policy_are_escaped() {
        let p = PolicySummary {
            version: 1,
            signer: "\u{202e}\x1b[8m".into(),
            digest: "d\x1b[2J".into(),
            pushed_at_unix_nanos: 0,
            note: "n\u{200b}".into(),
            active: false,
            rules: 1,
        };
        let text = policies_text(&[p]);
        assert!(
            text.contains("digest d\\x1b[2J  signer \\u{202e}\\x1b[8m…  n\\u{200b}\n"),
            "{text}"
        );
    }
}
