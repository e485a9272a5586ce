//! Users of the dashboard: the `PutUser`, `RemoveUser` and `ListUsers`
//! RPCs of `vigil.admin.v1.AdminService`, and the same writes for the
//! dashboard's HTTP handlers ([`put_user`], [`remove_user`]), plus the
//! password hashing both use ([`hash_password`], [`verify_password`]).
//!
//! Architecture invariant: a raw password never enters a raft entry, an
//! audit entry or a log line: this node hashes it (argon2id, default
//! parameters, a random salt) before proposing, and only the PHC string is
//! replicated.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use tonic::{Request, Response, Status};
use vigil_domain::{UserRecord, UserRole};
use vigil_proto::admin::v1 as pb;

use super::admin_service::{now_unix_nanos, write_audited_on, AdminServiceImpl};
use super::Caller;
use crate::node::ControlPlaneNode;
use crate::raft_types::{Command, CommandResult};

/// A change to one user: `None` fields stay as they are (a new user needs
/// a role and a password).
#[derive(Debug, Clone, Default)]
pub struct UserChange {
    pub name: String,
    pub role: Option<UserRole>,
    /// The raw password; hashed here, never stored or logged.
    pub password: Option<String>,
    pub disabled: Option<bool>,
    /// Only add: [`UserWriteError::Exists`] when the user exists.
    pub create_only: bool,
}

/// Why a user write did not happen.
#[derive(Debug, thiserror::Error)]
pub enum UserWriteError {
    /// Bad input (name, password length): nothing was proposed.
    #[error("{0}")]
    Invalid(String),
    /// No such user (removing, or changing one that does not exist).
    #[error("{0}")]
    NotFound(String),
    /// `create_only` and the user exists.
    #[error("{0}")]
    Exists(String),
    /// Refused by the replicated state (the last enabled admin).
    #[error("{0}")]
    Refused(String),
    /// The write did not commit (no leader, no majority, disk reserve).
    #[error(transparent)]
    Write(#[from] crate::node::WriteError),
    #[error("{0}")]
    Internal(String),
}

impl From<UserWriteError> for Status {
    fn from(e: UserWriteError) -> Self {
        match e {
            UserWriteError::Invalid(m) => Status::invalid_argument(m),
            UserWriteError::NotFound(m) => Status::not_found(m),
            UserWriteError::Exists(m) => Status::already_exists(m),
            UserWriteError::Refused(m) => Status::failed_precondition(m),
            UserWriteError::Write(e) => e.into(),
            UserWriteError::Internal(m) => Status::internal(m),
        }
    }
}

/// An argon2id PHC string of `password` (default parameters, a random
/// salt). CPU-bound for tens of milliseconds: call it off the async
/// workers (`spawn_blocking`), as [`put_user`] does.
pub fn hash_password(password: &str) -> Result<String, UserWriteError> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| UserWriteError::Internal(format!("hashing the password: {e}")))
}

/// Whether `password` is the user's (false for a disabled user or a hash
/// that cannot be read). CPU-bound like [`hash_password`].
pub fn verify_password(user: &UserRecord, password: &str) -> bool {
    if user.disabled {
        return false;
    }
    let Ok(hash) = PasswordHash::new(&user.password_hash) else {
        return false;
    };
    Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
}

/// Adds a user or changes one, as `actor` (named in the audit entry, which
/// is part of the same raft entry). Works on any node: the write is
/// forwarded to the leader. The password is checked and hashed here.
pub async fn put_user(
    node: &ControlPlaneNode,
    actor: &str,
    change: UserChange,
) -> Result<UserRecord, UserWriteError> {
    vigil_domain::check_user_name(&change.name)
        .map_err(|e| UserWriteError::Invalid(e.to_string()))?;
    let password_hash = match change.password {
        Some(password) => {
            vigil_domain::check_password(&password)
                .map_err(|e| UserWriteError::Invalid(e.to_string()))?;
            Some(
                tokio::task::spawn_blocking(move || hash_password(&password))
                    .await
                    .map_err(|e| UserWriteError::Internal(e.to_string()))??,
            )
        }
        None => None,
    };
    let existed = node
        .state
        .user(&change.name)
        .map_err(|e| UserWriteError::Internal(e.to_string()))?
        .is_some();
    let mut said = Vec::new();
    if let Some(role) = change.role {
        said.push(format!("role {role}"));
    }
    if password_hash.is_some() {
        said.push("password set".to_string());
    }
    match change.disabled {
        Some(true) => said.push("disabled".into()),
        Some(false) => said.push("enabled".into()),
        None => {}
    }
    let name = change.name.clone();
    let result = write_audited_on(
        node,
        Command::PutUser {
            name: change.name,
            role: change.role,
            password_hash,
            disabled: change.disabled,
            at_unix_nanos: now_unix_nanos(),
            create_only: change.create_only,
        },
        actor.to_string(),
        if existed {
            "user.update"
        } else {
            "user.create"
        },
        format!("user {name}"),
        said.join("; "),
    )
    .await?;
    match result {
        CommandResult::User(user) => {
            tracing::info!(user = %name, role = %user.role, disabled = user.disabled, "user written");
            Ok(*user)
        }
        CommandResult::NotFound { reason } => Err(UserWriteError::NotFound(reason)),
        CommandResult::Refused { reason } if reason.ends_with(crate::store::USER_EXISTS) => {
            Err(UserWriteError::Exists(reason))
        }
        CommandResult::Refused { reason } => Err(UserWriteError::Refused(reason)),
        other => Err(UserWriteError::Internal(format!(
            "putting user {name}: unexpected result {other:?}"
        ))),
    }
}

/// Removes a user, as `actor` (audited in the same raft entry).
pub async fn remove_user(
    node: &ControlPlaneNode,
    actor: &str,
    name: &str,
) -> Result<(), UserWriteError> {
    vigil_domain::check_user_name(name).map_err(|e| UserWriteError::Invalid(e.to_string()))?;
    let result = write_audited_on(
        node,
        Command::RemoveUser {
            name: name.to_string(),
        },
        actor.to_string(),
        "user.remove",
        format!("user {name}"),
        String::new(),
    )
    .await?;
    match result {
        CommandResult::User(_) => {
            tracing::info!(user = %name, "user removed");
            Ok(())
        }
        CommandResult::NotFound { reason } => Err(UserWriteError::NotFound(reason)),
        CommandResult::Refused { reason } => Err(UserWriteError::Refused(reason)),
        other => Err(UserWriteError::Internal(format!(
            "removing user {name}: unexpected result {other:?}"
        ))),
    }
}

/// A user as the API lists it: no hash.
fn listed(user: UserRecord) -> pb::User {
    pb::User {
        name: user.name,
        role: user.role.as_str().to_string(),
        created_at_unix_nanos: user.created_at_unix_nanos,
        disabled: user.disabled,
    }
}

impl AdminServiceImpl {
    pub(super) async fn put_user_rpc(
        &self,
        req: Request<pb::PutUserRequest>,
    ) -> Result<Response<pb::PutUserResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let role = match req.role.as_str() {
            "" => None,
            r => Some(
                r.parse::<UserRole>()
                    .map_err(|e| Status::invalid_argument(e.to_string()))?,
            ),
        };
        let user = put_user(
            &self.node,
            &caller.actor(),
            UserChange {
                name: req.name,
                role,
                password: req.password,
                disabled: req.disabled,
                create_only: req.create_only,
            },
        )
        .await?;
        Ok(Response::new(pb::PutUserResponse {
            user: Some(listed(user)),
        }))
    }

    pub(super) async fn remove_user_rpc(
        &self,
        req: Request<pb::RemoveUserRequest>,
    ) -> Result<Response<pb::RemoveUserResponse>, Status> {
        let caller = Caller::of(&req);
        let name = req.into_inner().name;
        remove_user(&self.node, &caller.actor(), &name).await?;
        Ok(Response::new(pb::RemoveUserResponse {}))
    }

    pub(super) async fn list_users_rpc(
        &self,
        _req: Request<pb::ListUsersRequest>,
    ) -> Result<Response<pb::ListUsersResponse>, Status> {
        // A current answer, whichever node asked (linearizable).
        self.node.ensure_fresh().await?;
        let users = self
            .node
            .state
            .users()
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::ListUsersResponse {
            users: users.into_iter().map(listed).collect(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash_password("correct horse battery").unwrap();
        let b = hash_password("correct horse battery").unwrap();
        assert!(a.starts_with("$argon2id$v=19$"), "{a}");
        assert_ne!(a, b, "a random salt each time");
        assert!(!a.contains("correct horse"));
        let mut user = UserRecord {
            name: "alice".into(),
            role: UserRole::Analyst,
            password_hash: a,
            created_at_unix_nanos: 1,
            disabled: false,
        };
        assert!(verify_password(&user, "correct horse battery"));
        assert!(!verify_password(&user, "correct horse batterY"));
        user.disabled = true;
        assert!(!verify_password(&user, "correct horse battery"));
        user.disabled = false;
        user.password_hash = "not a hash".into();
        assert!(!verify_password(&user, "correct horse battery"));
    }
}
