//! `vigilctl ca init|issue|show`: the fleet's certificate authority, kept
//! in a directory on the operator's machine (`ca.pem`, `ca.key` 0600).

use anyhow::Context;
use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use vigil_pki::{
    CertificateAuthority, CertificateInfo, Identity, LeafRequest, OperatorRole, TRUST_DOMAIN,
};

use vigil_domain::RevokedCertificate;
use vigil_proto::admin::v1 as pb;

use crate::control_plane::{connect, refused, ControlPlaneArgs};
use crate::exit_code::ExitCode;
use crate::output::{print_list, print_one, OutputArgs, OutputFormat};
use crate::render::timestamp;
use crate::terminal_text::escape_controls as esc;

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Creates the fleet's CA in a new directory: ca.pem (give it to every node, agent and
    /// operator) and ca.key (mode 0600: keep it off the fleet). Never overwrites.
    #[command(after_help = "Example:\n  vigilctl ca init --dir /root/vigil-ca")]
    Init {
        /// Directory to create the CA in (made 0700 if missing; must not hold a CA yet).
        #[arg(long)]
        dir: PathBuf,
        /// The CA's common name.
        #[arg(long, default_value = "vigil fleet CA")]
        name: String,
        /// Days the CA certificate is valid.
        #[arg(long, default_value_t = 3650)]
        days: u32,
    },
    /// Issues a certificate and key for one control-plane node, agent or operator.
    #[command(after_help = "Examples:\n  \
        vigilctl ca issue --ca-dir /root/vigil-ca --node cp1 --dns cp1.example --ip 10.0.0.5 --out /etc/vigil/tls\n  \
        vigilctl ca issue --ca-dir /root/vigil-ca --operator alice --role analyst --out ~/.vigil")]
    Issue(IssueArgs),
    /// Revokes a certificate on the control plane: every connection that
    /// presents it is refused from then on, and streams it opened end.
    #[command(after_help = "Examples:\n  \
        vigilctl ca revoke --cert /etc/vigil/tls/agent-host-7.pem --reason 'host decommissioned'\n  \
        vigilctl ca revoke --serial 5f3a...e1 --reason 'key leaked'")]
    Revoke {
        /// The certificate's serial in hex (`vigilctl ca show` prints it).
        #[arg(long, conflicts_with = "cert", required_unless_present = "cert")]
        serial: Option<String>,
        /// The certificate file itself (its serial and identity are read from it).
        #[arg(long)]
        cert: Option<PathBuf>,
        /// Why, for the audit log.
        #[arg(long)]
        reason: String,
    },
    /// The certificates the control plane has revoked.
    #[command(after_help = "Example:\n  vigilctl ca revoked -o json")]
    Revoked {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// What a certificate says: the identity it names, serial, validity, issuer.
    #[command(after_help = "Example:\n  vigilctl ca show /etc/vigil/tls/node-cp1.pem -o json")]
    Show {
        /// A PEM certificate file.
        file: PathBuf,
        #[command(flatten)]
        output: OutputArgs,
    },
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("who").required(true).args(["node", "agent", "operator"])))]
pub struct IssueArgs {
    /// The CA directory `ca init` made.
    #[arg(long)]
    ca_dir: PathBuf,
    /// A control-plane node with this id (its certificate serves TLS and dials peers).
    #[arg(long)]
    node: Option<String>,
    /// An agent with this id (agents normally enroll with a join token instead).
    #[arg(long)]
    agent: Option<String>,
    /// An operator with this name (needs --role).
    #[arg(long, requires = "role")]
    operator: Option<String>,
    /// The operator's role: viewer, analyst, admin or siem-reader.
    #[arg(long)]
    role: Option<String>,
    /// DNS names clients dial a node by (repeatable).
    #[arg(long = "dns")]
    dns_names: Vec<String>,
    /// IP addresses clients dial a node by (repeatable).
    #[arg(long = "ip")]
    ip_addresses: Vec<IpAddr>,
    /// Days the certificate is valid.
    #[arg(long, default_value_t = 90)]
    days: u32,
    /// Directory to write <kind>-<name>.pem and .key (0600) into; never overwrites.
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    output: OutputArgs,
}

pub async fn run(target: &ControlPlaneArgs, command: CaCommand) -> anyhow::Result<()> {
    match command {
        CaCommand::Revoke {
            serial,
            cert,
            reason,
        } => {
            let (serial, identity) = match (serial, cert) {
                (Some(serial), _) => (serial, String::new()),
                (None, Some(path)) => {
                    let pem = std::fs::read_to_string(&path)
                        .with_context(|| format!("reading {}", path.display()))?;
                    let info = CertificateInfo::from_pem(&pem).map_err(|e| {
                        ExitCode::VerificationFailed.error(format!("{}: {e}", path.display()))
                    })?;
                    let identity = info
                        .identity
                        .as_ref()
                        .map(ToString::to_string)
                        .unwrap_or_default();
                    (info.serial_hex, identity)
                }
                (None, None) => {
                    return Err(ExitCode::Usage.error("name the certificate: --serial or --cert"))
                }
            };
            connect(target)
                .await?
                .revoke_certificate(pb::RevokeCertificateRequest {
                    serial: serial.clone(),
                    identity,
                    reason,
                })
                .await
                .map_err(refused)?;
            println!("certificate {serial} revoked");
            Ok(())
        }
        CaCommand::Revoked { output } => {
            let revoked = connect(target)
                .await?
                .list_revoked_certificates(pb::ListRevokedCertificatesRequest {})
                .await
                .map_err(refused)?
                .into_inner()
                .certificates
                .into_iter()
                .map(RevokedCertificate::try_from)
                .collect::<Result<Vec<_>, _>>()
                .context("the control plane sent a malformed revocation")?;
            print_list(
                output.format(OutputFormat::Json),
                &revoked,
                |r| {
                    json!({
                        "serial": r.serial,
                        "identity": r.identity,
                        "reason": r.reason,
                        "revoked_by": r.revoked_by,
                        "revoked_at_unix_nanos": r.revoked_at_unix_nanos,
                    })
                },
                |all| {
                    let mut out = String::new();
                    for r in all {
                        out.push_str(&format!(
                            "{}  {}  by {}  {}: {}\n",
                            r.serial,
                            timestamp(r.revoked_at_unix_nanos),
                            esc(&r.revoked_by),
                            esc(&r.identity),
                            esc(&r.reason)
                        ));
                    }
                    out
                },
            )
        }
        CaCommand::Init { dir, name, days } => init(&dir, &name, days),
        CaCommand::Issue(args) => issue(args),
        CaCommand::Show { file, output } => {
            let pem = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let info = CertificateInfo::from_pem(&pem).map_err(|e| {
                ExitCode::VerificationFailed.error(format!("{}: {e}", file.display()))
            })?;
            show(&info, output.format(OutputFormat::Json))
        }
    }
}

fn init(dir: &Path, name: &str, days: u32) -> anyhow::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let ca = CertificateAuthority::init(name, time::OffsetDateTime::now_utc(), days)?;
    // The key first: a directory with a certificate and no key is a CA
    // nobody can use, one with a key and no certificate is retried.
    write_new(&dir.join(CA_KEY), ca.key_pem(), 0o600)?;
    write_new(&dir.join(CA_CERT), ca.cert_pem(), 0o644)?;
    println!(
        "CA created: {} (share) and {} (secret, 0600)",
        dir.join(CA_CERT).display(),
        dir.join(CA_KEY).display()
    );
    Ok(())
}

fn issue(args: IssueArgs) -> anyhow::Result<()> {
    let read = |f: &str| {
        let p = args.ca_dir.join(f);
        std::fs::read_to_string(&p).with_context(|| format!("reading {}", p.display()))
    };
    let ca = CertificateAuthority::from_pem(&read(CA_CERT)?, &read(CA_KEY)?)
        .with_context(|| format!("the CA in {}", args.ca_dir.display()))?;
    let (identity, file_stem) = match (&args.node, &args.agent, &args.operator) {
        (Some(id), _, _) => (Identity::node(id)?, format!("node-{id}")),
        (_, Some(id), _) => (Identity::agent(id)?, format!("agent-{id}")),
        (_, _, Some(name)) => {
            let role: OperatorRole = args.role.as_deref().unwrap_or_default().parse()?;
            (Identity::operator(role, name)?, format!("operator-{name}"))
        }
        _ => {
            return Err(ExitCode::Usage.error("name one of --node, --agent or --operator"));
        }
    };
    if !matches!(identity, Identity::Node { .. })
        && (!args.dns_names.is_empty() || !args.ip_addresses.is_empty())
    {
        return Err(
            ExitCode::Usage.error("--dns and --ip are for nodes only (only nodes serve TLS)")
        );
    }
    let mut request =
        LeafRequest::new(identity.clone(), time::OffsetDateTime::now_utc(), args.days);
    request.dns_names = args.dns_names.clone();
    request.ip_addresses = args.ip_addresses.clone();
    let issued = ca.issue(&request)?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let cert_path = args.out.join(format!("{file_stem}.pem"));
    let key_path = args.out.join(format!("{file_stem}.key"));
    write_new(&key_path, &issued.key_pem, 0o600)?;
    write_new(&cert_path, &issued.cert_pem, 0o644)?;
    let info = CertificateInfo::from_pem(&issued.cert_pem)?;
    show(&info, args.output.format(OutputFormat::Json))?;
    if args.output.format(OutputFormat::Json) == OutputFormat::Table {
        println!(
            "written: {} and {} (0600)",
            cert_path.display(),
            key_path.display()
        );
    }
    Ok(())
}

/// Writes a file that must not exist yet, with `mode` from the start.
fn write_new(path: &Path, contents: &str, mode: u32) -> anyhow::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .with_context(|| {
            format!(
                "creating {} (an existing file is never overwritten)",
                path.display()
            )
        })?;
    f.write_all(contents.as_bytes())
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", path.display()))
}

fn show(info: &CertificateInfo, format: OutputFormat) -> anyhow::Result<()> {
    let identity = info.identity.as_ref().ok();
    let json = json!({
        "identity": identity,
        "identity_uri": identity.map(Identity::uri),
        "identity_error": info.identity.as_ref().err().map(ToString::to_string),
        "subject": info.subject,
        "issuer": info.issuer,
        "serial": info.serial_hex,
        "not_before_unix": info.not_before_unix,
        "not_after_unix": info.not_after_unix,
        "is_ca": info.is_ca,
    });
    print_one(format, json, || {
        let who = match &info.identity {
            Ok(id) => format!("{id} ({})", id.uri()),
            Err(e) if info.is_ca => format!("a CA ({e}; trust domain {TRUST_DOMAIN})"),
            Err(e) => format!("none: {e}"),
        };
        format!(
            "identity  {}\nsubject   {}\nissuer    {}\nserial    {}\nvalid     {} .. {} (unix seconds)\nCA        {}\n",
            esc(&who),
            esc(&info.subject),
            esc(&info.issuer),
            info.serial_hex,
            info.not_before_unix,
            info.not_after_unix,
            info.is_ca
        )
    })
}
