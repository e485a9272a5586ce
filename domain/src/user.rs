//! Dashboard and API users: a name, a role and a password hash, kept in
//! the replicated state (`user/<name>`).
//!
//! Architecture invariant: a raw password never enters a record, a raft
//! entry or a log line: the node that takes the admin call hashes it
//! (argon2id, a PHC string) and only the hash is stored.

use serde::{Deserialize, Serialize};

/// The longest user name, in bytes (all ASCII).
pub const MAX_USER_NAME: usize = 64;
/// The shortest password taken, in characters.
pub const MIN_PASSWORD_CHARS: usize = 12;
/// The longest password taken, in bytes (argon2 takes any length; this
/// bounds what a request makes the node hash).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// What a user may do: viewers read, analysts also triage alerts, admins
/// also manage users and everything else.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UserRole {
    Viewer,
    Analyst,
    Admin,
}

impl UserRole {
    pub fn as_str(self) -> &'static str {
        match self {
            UserRole::Viewer => "viewer",
            UserRole::Analyst => "analyst",
            UserRole::Admin => "admin",
        }
    }

    /// Whether this role may do what `needed` may (roles are ordered).
    pub fn allows(self, needed: UserRole) -> bool {
        self >= needed
    }
}

impl std::fmt::Display for UserRole {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for UserRole {
    type Err = UserError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "viewer" => Ok(UserRole::Viewer),
            "analyst" => Ok(UserRole::Analyst),
            "admin" => Ok(UserRole::Admin),
            other => Err(UserError::Role(other.to_string())),
        }
    }
}

/// One user as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserRecord {
    pub name: String,
    pub role: UserRole,
    /// An argon2id PHC string (`$argon2id$v=19$...`), never the password.
    pub password_hash: String,
    pub created_at_unix_nanos: i64,
    #[serde(default)]
    pub disabled: bool,
}

impl UserRecord {
    /// An admin that can log in.
    pub fn is_enabled_admin(&self) -> bool {
        self.role == UserRole::Admin && !self.disabled
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("user name {0:?}: must be 1 to 64 characters of a-z, 0-9, '.', '_' and '-'")]
    Name(String),
    #[error("role {0:?}: must be viewer, analyst or admin")]
    Role(String),
    #[error("password: must be at least {MIN_PASSWORD_CHARS} characters (it has {0})")]
    PasswordTooShort(usize),
    #[error("password: must be at most {MAX_PASSWORD_BYTES} bytes (it has {0})")]
    PasswordTooLong(usize),
}

/// Checks a user name: 1 to [`MAX_USER_NAME`] characters of `[a-z0-9._-]`.
pub fn check_user_name(name: &str) -> Result<(), UserError> {
    let ok = !name.is_empty()
        && name.len() <= MAX_USER_NAME
        && name.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-')
        });
    if ok {
        Ok(())
    } else {
        Err(UserError::Name(name.chars().take(80).collect()))
    }
}

/// Checks a new password's length (never its text in an error).
pub fn check_password(password: &str) -> Result<(), UserError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(UserError::PasswordTooShort(chars));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(UserError::PasswordTooLong(password.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        for good in ["a", "alice", "bob.smith", "ops_1", "x-y", &"a".repeat(64)] {
            assert_eq!(check_user_name(good), Ok(()), "{good}");
        }
        for bad in [
            "",
            "Alice",
            "a b",
            "a/b",
            "é",
            "a\n",
            &"a".repeat(65),
            "<script>",
        ] {
            let e = check_user_name(bad).unwrap_err();
            assert!(e.to_string().contains("a-z, 0-9"), "{e}");
        }
    }

    #[test]
    fn roles_parse_order_and_serialise_snake_case() {
        assert_eq!("analyst".parse::<UserRole>(), Ok(UserRole::Analyst));
        assert!("root".parse::<UserRole>().is_err());
        assert!(UserRole::Admin.allows(UserRole::Analyst));
        assert!(!UserRole::Viewer.allows(UserRole::Analyst));
        assert_eq!(
            serde_json::to_string(&UserRole::Admin).unwrap(),
            "\"admin\""
        );
    }

    #[test]
    fn passwords_are_checked_without_echoing_them() {
        let e = check_password("short-pw").unwrap_err();
        assert!(!e.to_string().contains("short-pw"), "{e}");
        assert!(check_password("twelve chars").is_ok());
        assert!(check_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)).is_err());
    }
}
