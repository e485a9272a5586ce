//! Users in the replicated state: `user/<name>` → [`UserRecord`]
//! (`put_user.v1`, `remove_user.v1`).
//!
//! Architecture invariant: a stored record holds an argon2id hash, never a
//! password, and at least one enabled admin is kept once there is one
//! (the apply refuses a change that would leave none).

use vigil_domain::{UserRecord, UserRole};

use super::{
    decode, json, prefixed, sm_read_err, ReadError, SledStateMachine, StateReader, StorageError,
};
use crate::raft_types::CommandResult;

pub(super) const USER_PREFIX: &[u8] = b"user/";

fn user_key(name: &str) -> Vec<u8> {
    prefixed(USER_PREFIX, name.as_bytes())
}

/// What a `put_user.v1` asks.
pub(super) struct PutUser {
    pub name: String,
    pub role: Option<UserRole>,
    pub password_hash: Option<String>,
    pub disabled: Option<bool>,
    pub at_unix_nanos: i64,
    pub create_only: bool,
}

/// The end of the reason a `create_only` put of an existing user is
/// refused with.
pub const USER_EXISTS: &str = "already exists";

impl SledStateMachine {
    /// Every stored user but `except`, for the last-admin check (a few).
    fn enabled_admins_besides(&self, except: &str) -> Result<u64, StorageError> {
        let mut n = 0;
        for kv in self.tree.scan_prefix(USER_PREFIX) {
            let (_, v) = kv.map_err(sm_read_err)?;
            let user: UserRecord = serde_json::from_slice(&v).map_err(sm_read_err)?;
            if user.name != except && user.is_enabled_admin() {
                n += 1;
            }
        }
        Ok(n)
    }

    /// `put_user.v1`.
    pub(super) fn put_user(
        &self,
        batch: &mut sled::Batch,
        put: PutUser,
    ) -> Result<CommandResult, StorageError> {
        if let Err(e) = vigil_domain::check_user_name(&put.name) {
            return Ok(CommandResult::Refused {
                reason: e.to_string(),
            });
        }
        if put
            .password_hash
            .as_deref()
            .is_some_and(|h| !h.starts_with("$argon2id$"))
        {
            return Ok(CommandResult::Refused {
                reason: format!("user {}: the password hash is not argon2id", put.name),
            });
        }
        let k = user_key(&put.name);
        let before: Option<UserRecord> = self.get_json(&k)?;
        if put.create_only && before.is_some() {
            return Ok(CommandResult::Refused {
                reason: format!("user {} {USER_EXISTS}", put.name),
            });
        }
        let after = match before.clone() {
            Some(mut user) => {
                if let Some(role) = put.role {
                    user.role = role;
                }
                if let Some(hash) = put.password_hash {
                    user.password_hash = hash;
                }
                if let Some(disabled) = put.disabled {
                    user.disabled = disabled;
                }
                user
            }
            None => {
                let (Some(role), Some(password_hash)) = (put.role, put.password_hash) else {
                    return Ok(CommandResult::NotFound {
                        reason: format!(
                            "no user {}: a new user needs a role and a password",
                            put.name
                        ),
                    });
                };
                UserRecord {
                    name: put.name.clone(),
                    role,
                    password_hash,
                    created_at_unix_nanos: put.at_unix_nanos,
                    disabled: put.disabled.unwrap_or(false),
                }
            }
        };
        if before.as_ref().is_some_and(UserRecord::is_enabled_admin)
            && !after.is_enabled_admin()
            && self.enabled_admins_besides(&put.name)? == 0
        {
            return Ok(CommandResult::Refused {
                reason: format!(
                    "user {} is the last enabled admin: add or enable another admin first",
                    put.name
                ),
            });
        }
        batch.insert(k, json(&after)?);
        Ok(CommandResult::User(Box::new(after)))
    }

    /// `remove_user.v1`.
    pub(super) fn remove_user(
        &self,
        batch: &mut sled::Batch,
        name: &str,
    ) -> Result<CommandResult, StorageError> {
        let k = user_key(name);
        let Some(user) = self.get_json::<UserRecord>(&k)? else {
            return Ok(CommandResult::NotFound {
                reason: format!("no user {name}"),
            });
        };
        if user.is_enabled_admin() && self.enabled_admins_besides(name)? == 0 {
            return Ok(CommandResult::Refused {
                reason: format!(
                    "user {name} is the last enabled admin: add or enable another admin first"
                ),
            });
        }
        batch.remove(k);
        Ok(CommandResult::User(Box::new(user)))
    }
}

impl StateReader {
    /// The user `name`, if there is one.
    pub fn user(&self, name: &str) -> Result<Option<UserRecord>, ReadError> {
        let k = user_key(name);
        self.tree.get(&k)?.map(|v| decode(&k, &v)).transpose()
    }

    /// Every user, by name.
    pub fn users(&self) -> Result<Vec<UserRecord>, ReadError> {
        self.scan_between_entries(self.tree.scan_prefix(USER_PREFIX), usize::MAX)
    }

    /// Changes whenever a user is added, changed or removed (and when a
    /// snapshot is installed).
    pub fn watch_users(&self) -> tokio::sync::watch::Receiver<u64> {
        self.users_changed.clone()
    }
}
