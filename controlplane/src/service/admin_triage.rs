//! Alert triage: the `TriageAlert` RPC of `vigil.admin.v1.AdminService`,
//! and the same write for the dashboard's HTTP handlers ([`triage_alert`]).
//! A step and its audit entry are one raft entry (`audited.v1`); the apply
//! refuses an unknown or pruned alert, a step the alert's state does not
//! allow and an assignee who is not an enabled user.

use tonic::{Request, Response, Status};
use vigil_domain::{AlertTriage, TriageAction, TriageEntry};
use vigil_proto::admin::v1 as pb;

use super::admin_service::{now_unix_nanos, write_audited_on, AdminServiceImpl};
use super::Caller;
use crate::node::ControlPlaneNode;
use crate::raft_types::{Command, CommandResult};

/// Why a triage step did not happen.
#[derive(Debug, thiserror::Error)]
pub enum TriageWriteError {
    /// Bad input (an empty or too long comment, a bad assignee name):
    /// nothing was proposed.
    #[error("{0}")]
    Invalid(String),
    /// No such alert (never stored, or removed by retention).
    #[error("{0}")]
    NotFound(String),
    /// The alert's state does not allow the step, or the assignee is not
    /// an enabled user.
    #[error("{0}")]
    Refused(String),
    /// The write did not commit (no leader, no majority, disk reserve).
    #[error(transparent)]
    Write(#[from] crate::node::WriteError),
    #[error("{0}")]
    Internal(String),
}

impl From<TriageWriteError> for Status {
    fn from(e: TriageWriteError) -> Self {
        match e {
            TriageWriteError::Invalid(m) => Status::invalid_argument(m),
            TriageWriteError::NotFound(m) => Status::not_found(m),
            TriageWriteError::Refused(m) => Status::failed_precondition(m),
            TriageWriteError::Write(e) => e.into(),
            TriageWriteError::Internal(m) => Status::internal(m),
        }
    }
}

/// The audit entry's detail of a step (a comment verbatim: it is at most
/// 4 KiB, and exporters escape it).
fn detail(action: &TriageAction) -> String {
    match action {
        TriageAction::Ack => "ack".into(),
        TriageAction::Assign { to } => format!("assign to {to}"),
        TriageAction::Comment { text } => format!("comment: {text}"),
        TriageAction::Resolve => "resolve".into(),
        TriageAction::Reopen => "reopen".into(),
    }
}

/// Takes one triage step on alert `index` as `actor` (a dashboard user's
/// name, or an operator's identity), audited in the same raft entry.
/// Works on any node: the write is forwarded to the leader.
pub async fn triage_alert(
    node: &ControlPlaneNode,
    actor: &str,
    index: u64,
    action: TriageAction,
) -> Result<AlertTriage, TriageWriteError> {
    action
        .check()
        .map_err(|e| TriageWriteError::Invalid(e.to_string()))?;
    if actor.trim().is_empty() {
        return Err(TriageWriteError::Invalid("actor: must not be empty".into()));
    }
    let audit_detail = detail(&action);
    let result = write_audited_on(
        node,
        Command::TriageAlert {
            index,
            actor: actor.to_string(),
            action,
            at_unix_nanos: now_unix_nanos(),
        },
        actor.to_string(),
        "alert.triage",
        format!("alert {index}"),
        audit_detail,
    )
    .await?;
    match result {
        CommandResult::Triage(triage) => Ok(*triage),
        CommandResult::NotFound { reason } => Err(TriageWriteError::NotFound(reason)),
        CommandResult::Refused { reason } => Err(TriageWriteError::Refused(reason)),
        other => Err(TriageWriteError::Internal(format!(
            "triaging alert {index}: unexpected result {other:?}"
        ))),
    }
}

/// A request's action, checked.
fn action_of(req: &pb::TriageAlertRequest) -> Result<TriageAction, Status> {
    let action = match req.action.as_str() {
        "ack" => TriageAction::Ack,
        "assign" => TriageAction::Assign {
            to: req.assignee.clone(),
        },
        "comment" => TriageAction::Comment {
            text: req.comment.clone(),
        },
        "resolve" => TriageAction::Resolve,
        "reopen" => TriageAction::Reopen,
        other => {
            return Err(Status::invalid_argument(format!(
                "action: {:?} is not ack, assign, comment, resolve or reopen",
                other.chars().take(64).collect::<String>()
            )))
        }
    };
    action
        .check()
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok(action)
}

/// A triage record as the API sends it.
pub(super) fn to_wire(t: AlertTriage) -> pb::AlertTriage {
    pb::AlertTriage {
        alert_index: t.alert_index,
        state: t.state.as_str().into(),
        assignee: t.assignee.unwrap_or_default(),
        history: t.history.into_iter().map(entry_to_wire).collect(),
        history_total: t.history_total,
    }
}

fn entry_to_wire(e: TriageEntry) -> pb::TriageEntry {
    let verb = e.action.verb().to_string();
    let (assignee, comment) = match e.action {
        TriageAction::Assign { to } => (to, String::new()),
        TriageAction::Comment { text } => (String::new(), text),
        _ => (String::new(), String::new()),
    };
    pb::TriageEntry {
        at_unix_nanos: e.at_unix_nanos,
        actor: e.actor,
        action: verb,
        assignee,
        comment,
    }
}

impl AdminServiceImpl {
    pub(super) async fn triage_alert_rpc(
        &self,
        req: Request<pb::TriageAlertRequest>,
    ) -> Result<Response<pb::TriageAlertResponse>, Status> {
        let caller = Caller::of(&req);
        let req = req.into_inner();
        let action = action_of(&req)?;
        let triage = triage_alert(&self.node, &caller.actor(), req.index, action).await?;
        Ok(Response::new(pb::TriageAlertResponse {
            triage: Some(to_wire(triage)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(action: &str, assignee: &str, comment: &str) -> pb::TriageAlertRequest {
        pb::TriageAlertRequest {
            index: 1,
            action: action.into(),
            assignee: assignee.into(),
            comment: comment.into(),
        }
    }

    #[test]
    fn requests_become_checked_actions() {
        assert_eq!(action_of(&req("ack", "", "")).unwrap(), TriageAction::Ack);
        assert_eq!(
            action_of(&req("assign", "bob", "")).unwrap(),
            TriageAction::Assign { to: "bob".into() }
        );
        let e = action_of(&req("delete", "", "")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
        assert!(e.message().contains("ack, assign"), "{e:?}");
        let e = action_of(&req("comment", "", &"x".repeat(4097))).unwrap_err();
        assert!(e.message().contains("4097 bytes"), "{e:?}");
        let e = action_of(&req("assign", "Bad Name", "")).unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn entries_go_out_with_their_text_verbatim() {
        let mut t = AlertTriage::new(5);
        t.apply(TriageEntry {
            at_unix_nanos: 1,
            actor: "ann".into(),
            action: TriageAction::Comment {
                text: "<script>x</script>".into(),
            },
        })
        .unwrap();
        let wire = to_wire(t);
        assert_eq!(wire.state, "open");
        assert_eq!(wire.history[0].action, "comment");
        assert_eq!(wire.history[0].comment, "<script>x</script>");
    }
}
