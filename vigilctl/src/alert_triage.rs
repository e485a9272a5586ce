//! `vigilctl alerts ack|assign|comment|resolve|reopen INDEX`: triage steps
//! on one alert (analyst), each audited by the control plane.

use clap::Subcommand;
use vigil_proto::admin::v1 as pb;

use crate::control_plane::{refused, AdminClient};
use crate::render::timestamp;
use crate::terminal_text::escape_controls as esc;

#[derive(Debug, Subcommand)]
pub enum TriageCommand {
    /// Acknowledges an open alert.
    #[command(after_help = "Example:\n  vigilctl alerts ack 42")]
    Ack {
        /// The alert's index, as `vigilctl alerts` shows it.
        index: u64,
    },
    /// Assigns an alert to a dashboard user.
    #[command(after_help = "Example:\n  vigilctl alerts assign 42 alice")]
    Assign {
        /// The alert's index.
        index: u64,
        /// The user's name (vigilctl user list).
        user: String,
    },
    /// Adds a comment (at most 4096 bytes) to an alert's history.
    #[command(
        after_help = "Example:\n  vigilctl alerts comment 42 'the team's notebook; asked them'"
    )]
    Comment {
        /// The alert's index.
        index: u64,
        /// The comment.
        text: String,
    },
    /// Resolves an alert.
    #[command(after_help = "Example:\n  vigilctl alerts resolve 42")]
    Resolve {
        /// The alert's index.
        index: u64,
    },
    /// Opens a resolved alert again.
    #[command(after_help = "Example:\n  vigilctl alerts reopen 42")]
    Reopen {
        /// The alert's index.
        index: u64,
    },
}

impl TriageCommand {
    /// The request this command sends.
    pub fn request(self) -> pb::TriageAlertRequest {
        let (index, action, assignee, comment) = match self {
            TriageCommand::Ack { index } => (index, "ack", String::new(), String::new()),
            TriageCommand::Assign { index, user } => (index, "assign", user, String::new()),
            TriageCommand::Comment { index, text } => (index, "comment", String::new(), text),
            TriageCommand::Resolve { index } => (index, "resolve", String::new(), String::new()),
            TriageCommand::Reopen { index } => (index, "reopen", String::new(), String::new()),
        };
        pb::TriageAlertRequest {
            index,
            action: action.into(),
            assignee,
            comment,
        }
    }
}

pub async fn run(client: &mut AdminClient, command: TriageCommand) -> anyhow::Result<()> {
    let triage = client
        .triage_alert(command.request())
        .await
        .map_err(refused)?
        .into_inner()
        .triage
        .unwrap_or_default();
    print!("{}", triage_text(&triage));
    Ok(())
}

/// The alert's state, assignee and last step.
fn triage_text(t: &pb::AlertTriage) -> String {
    let last = t
        .history
        .last()
        .map(|e| {
            format!(
                "; last: {} by {} at {}",
                esc(&e.action),
                esc(&e.actor),
                timestamp(e.at_unix_nanos)
            )
        })
        .unwrap_or_default();
    format!(
        "alert {}: {}, assigned to {}{last}\n",
        t.alert_index,
        esc(&t.state),
        if t.assignee.is_empty() {
            "no one".to_string()
        } else {
            esc(&t.assignee).to_string()
        }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_become_requests() {
        let r = TriageCommand::Assign {
            index: 4,
            user: "bob".into(),
        }
        .request();
        assert_eq!(
            (r.index, r.action.as_str(), r.assignee.as_str()),
            (4, "assign", "bob")
        );
        let r = TriageCommand::Comment {
            index: 5,
            text: "<b>hi</b>".into(),
        }
        .request();
        assert_eq!(
            (r.action.as_str(), r.comment.as_str()),
            ("comment", "<b>hi</b>")
        );
        assert_eq!(
            TriageCommand::Reopen { index: 1 }.request().action,
            "reopen"
        );
    }

    #[test]
    fn the_answer_is_one_escaped_line() {
        let t = pb::AlertTriage {
            alert_index: 3,
            state: "acknowledged".into(),
            assignee: "bob\x1b[2J".into(),
            history: vec![pb::TriageEntry {
                at_unix_nanos: 0,
                actor: "ann".into(),
                action: "assign".into(),
                assignee: "bob".into(),
                comment: String::new(),
            }],
            history_total: 1,
        };
        assert_eq!(
            triage_text(&t),
            "alert 3: acknowledged, assigned to bob\\x1b[2J; last: assign by ann at 1970-01-01T00:00:00.000Z\n"
        );
    }
}
