//! `vigilctl user add|list|remove|set`: the dashboard's users (admin).
//!
//! A password is read from standard input (`--password-stdin`, its first
//! line) or, for `add` without it, generated here (20 characters) and
//! printed once; it goes to the control plane over the connection, which
//! hashes it (argon2id) and keeps only the hash.

use std::io::{BufRead, Read};

use anyhow::Context;
use clap::Subcommand;
use serde::Serialize;
use vigil_domain::UserRole;
use vigil_proto::admin::v1 as pb;

use crate::control_plane::{refused, AdminClient};
use crate::exit_code::ExitCode;
use crate::output::{print_list, OutputArgs, OutputFormat};
use crate::render::timestamp;
use crate::terminal_text::escape_controls as esc;

/// The length of a generated password.
const GENERATED_PASSWORD_CHARS: usize = 20;

#[derive(Debug, Subcommand)]
pub enum UserCommand {
    /// Adds a user; without --password-stdin a 20-character password is
    /// generated and printed once. An existing name exits with an error.
    #[command(after_help = "Examples:
  vigilctl user add alice --role analyst
  printf '%s\\n' \"$PASSWORD\" | vigilctl user add bob --role viewer --password-stdin")]
    Add {
        /// The user's name: 1 to 64 characters of a-z, 0-9, '.', '_', '-'.
        name: String,
        /// What the user may do: viewer (read), analyst (also triage
        /// alerts), admin (also manage users).
        #[arg(long, value_parser = parse_role)]
        role: UserRole,
        /// Read the password (at least 12 characters) from standard input's
        /// first line instead of generating one.
        #[arg(long)]
        password_stdin: bool,
    },
    /// Every user: name, role, enabled or not, created when (no hashes).
    #[command(after_help = "Example:\n  vigilctl user list -o json")]
    List {
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Removes a user; an unknown name exits 4; the last enabled admin is
    /// refused.
    #[command(after_help = "Example:\n  vigilctl user remove alice")]
    Remove {
        /// The user's name.
        name: String,
    },
    /// Changes a user's role, password or whether it may log in.
    #[command(after_help = "Examples:
  vigilctl user set alice --role admin
  vigilctl user set bob --disable
  printf '%s\\n' \"$PASSWORD\" | vigilctl user set bob --password-stdin")]
    Set {
        /// The user's name.
        name: String,
        /// The new role: viewer, analyst or admin.
        #[arg(long, value_parser = parse_role)]
        role: Option<UserRole>,
        /// The user may no longer log in.
        #[arg(long, conflicts_with = "enable")]
        disable: bool,
        /// The user may log in again.
        #[arg(long)]
        enable: bool,
        /// Read a new password (at least 12 characters) from standard
        /// input's first line.
        #[arg(long)]
        password_stdin: bool,
    },
}

fn parse_role(s: &str) -> Result<UserRole, String> {
    s.parse::<UserRole>().map_err(|e| e.to_string())
}

/// A user as listed in JSON.
#[derive(Debug, Serialize)]
struct ListedUser {
    name: String,
    role: String,
    disabled: bool,
    created_at_unix_nanos: i64,
}

impl From<&pb::User> for ListedUser {
    fn from(u: &pb::User) -> Self {
        ListedUser {
            name: u.name.clone(),
            role: u.role.clone(),
            disabled: u.disabled,
            created_at_unix_nanos: u.created_at_unix_nanos,
        }
    }
}

pub async fn run(client: &mut AdminClient, command: UserCommand) -> anyhow::Result<()> {
    match command {
        UserCommand::Add {
            name,
            role,
            password_stdin,
        } => {
            check_name(&name)?;
            let (password, generated) = if password_stdin {
                (read_password(std::io::stdin().lock())?, false)
            } else {
                (generate_password()?, true)
            };
            client
                .put_user(pb::PutUserRequest {
                    name: name.clone(),
                    role: role.as_str().into(),
                    password: Some(password.clone()),
                    disabled: None,
                    create_only: true,
                })
                .await
                .map_err(refused)?;
            println!("added user {} ({role})", esc(&name));
            if generated {
                println!("password (shown once): {password}");
            }
        }
        UserCommand::List { output } => {
            let users = client
                .list_users(pb::ListUsersRequest {})
                .await
                .map_err(refused)?
                .into_inner()
                .users;
            print_list(
                output.format(OutputFormat::Json),
                &users,
                |u: &pb::User| ListedUser::from(u),
                |u: &[pb::User]| users_text(u),
            )?;
        }
        UserCommand::Remove { name } => {
            check_name(&name)?;
            client
                .remove_user(pb::RemoveUserRequest { name: name.clone() })
                .await
                .map_err(refused)?;
            println!("removed user {}", esc(&name));
        }
        UserCommand::Set {
            name,
            role,
            disable,
            enable,
            password_stdin,
        } => {
            check_name(&name)?;
            let disabled = match (disable, enable) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            if role.is_none() && disabled.is_none() && !password_stdin {
                return Err(ExitCode::Usage.error(
                    "nothing to change: give --role, --disable, --enable or --password-stdin",
                ));
            }
            let password = if password_stdin {
                Some(read_password(std::io::stdin().lock())?)
            } else {
                None
            };
            let user = client
                .put_user(pb::PutUserRequest {
                    name: name.clone(),
                    role: role.map(|r| r.as_str().to_string()).unwrap_or_default(),
                    password,
                    disabled,
                    create_only: false,
                })
                .await
                .map_err(refused)?
                .into_inner()
                .user
                .unwrap_or_default();
            println!(
                "user {}: {}, {}",
                esc(&user.name),
                esc(&user.role),
                if user.disabled { "disabled" } else { "enabled" }
            );
        }
    }
    Ok(())
}

fn check_name(name: &str) -> anyhow::Result<()> {
    vigil_domain::check_user_name(name).map_err(|e| ExitCode::Usage.error(e.to_string()))
}

/// The first line of `input`, without its line end, checked for length
/// (the error never shows it).
fn read_password(mut input: impl BufRead) -> anyhow::Result<String> {
    let mut line = String::new();
    input
        .read_line(&mut line)
        .context("reading the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    vigil_domain::check_password(&password).map_err(|e| ExitCode::Usage.error(e.to_string()))?;
    Ok(password)
}

/// A password of [`GENERATED_PASSWORD_CHARS`] letters and digits from the
/// kernel's random source (unbiased: bytes past the last whole alphabet
/// are drawn again).
fn generate_password() -> anyhow::Result<String> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let limit = 256 - 256 % ALPHABET.len();
    let mut random = std::fs::File::open("/dev/urandom").context("opening /dev/urandom")?;
    let mut out = String::with_capacity(GENERATED_PASSWORD_CHARS);
    let mut buf = [0u8; 64];
    while out.len() < GENERATED_PASSWORD_CHARS {
        random
            .read_exact(&mut buf)
            .context("reading /dev/urandom")?;
        for b in buf {
            if usize::from(b) < limit && out.len() < GENERATED_PASSWORD_CHARS {
                out.push(char::from(ALPHABET[usize::from(b) % ALPHABET.len()]));
            }
        }
    }
    Ok(out)
}

fn users_text(users: &[pb::User]) -> String {
    users
        .iter()
        .map(|u| {
            format!(
                "{}  {}  {}  created {}\n",
                esc(&u.name),
                esc(&u.role),
                if u.disabled { "disabled" } else { "enabled" },
                timestamp(u.created_at_unix_nanos)
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: UserCommand,
    }

    fn parse(args: &[&str]) -> Result<UserCommand, clap::Error> {
        Cli::try_parse_from(std::iter::once("user").chain(args.iter().copied())).map(|c| c.command)
    }

    #[test]
    fn the_commands_parse() {
        assert!(matches!(
            parse(&["add", "alice", "--role", "analyst"]).unwrap(),
            UserCommand::Add { name, role: UserRole::Analyst, password_stdin: false } if name == "alice"
        ));
        assert!(matches!(
            parse(&["add", "bob", "--role", "admin", "--password-stdin"]).unwrap(),
            UserCommand::Add {
                role: UserRole::Admin,
                password_stdin: true,
                ..
            }
        ));
        assert!(matches!(
            parse(&["set", "bob", "--role", "viewer", "--disable"]).unwrap(),
            UserCommand::Set {
                role: Some(UserRole::Viewer),
                disable: true,
                enable: false,
                ..
            }
        ));
        assert!(matches!(
            parse(&["remove", "bob"]).unwrap(),
            UserCommand::Remove { name } if name == "bob"
        ));
        assert!(matches!(
            parse(&["list", "-o", "json"]).unwrap(),
            UserCommand::List { .. }
        ));
    }

    #[test]
    fn bad_roles_and_flag_mixes_are_usage_errors() {
        let e = parse(&["add", "alice", "--role", "root"]).err().unwrap();
        assert!(e.to_string().contains("viewer, analyst or admin"), "{e}");
        assert!(parse(&["add", "alice"]).is_err(), "a role is required");
        assert!(parse(&["set", "a", "--disable", "--enable"]).is_err());
    }

    #[test]
    fn a_password_is_the_first_line_and_a_short_one_is_refused_unshown() {
        let p = read_password(&b"a long enough password\nmore\n"[..]).unwrap();
        assert_eq!(p, "a long enough password");
        let p = read_password(&b"windows line end!\r\n"[..]).unwrap();
        assert_eq!(p, "windows line end!");
        let e = read_password(&b"short-one\n"[..]).unwrap_err();
        assert!(!format!("{e:#}").contains("short-one"), "{e:#}");
    }

    #[test]
    fn generated_passwords_are_twenty_alphanumerics_and_differ() {
        let a = generate_password().unwrap();
        let b = generate_password().unwrap();
        assert_eq!(a.len(), GENERATED_PASSWORD_CHARS);
        assert!(a.bytes().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
        assert!(vigil_domain::check_password(&a).is_ok());
    }

    #[test]
    fn the_list_escapes_names_and_shows_no_hash() {
        let text = users_text(&[pb::User {
            name: "a\x1b[2J".into(),
            role: "admin".into(),
            created_at_unix_nanos: 0,
            disabled: true,
        }]);
        assert_eq!(
            text,
            "a\\x1b[2J  admin  disabled  created 1970-01-01T00:00:00.000Z\n"
        );
    }
}
