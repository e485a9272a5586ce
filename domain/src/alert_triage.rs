//! Alert triage: analysts acknowledge, assign, comment on, resolve and
//! reopen alerts; each step is kept in the alert's history (the newest
//! [`MAX_TRIAGE_HISTORY`], with the count of every step).
//!
//! Texts here (comments, actors) are stored verbatim: escaping is the
//! business of whoever renders them.

use serde::{Deserialize, Serialize};

/// The longest comment, in bytes.
pub const MAX_TRIAGE_COMMENT: usize = 4096;
/// The most history entries kept per alert (the oldest go first).
pub const MAX_TRIAGE_HISTORY: usize = 256;

/// Where an alert stands. An alert never triaged is `Open`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriageState {
    #[default]
    Open,
    Acknowledged,
    Resolved,
}

impl TriageState {
    pub fn as_str(self) -> &'static str {
        match self {
            TriageState::Open => "open",
            TriageState::Acknowledged => "acknowledged",
            TriageState::Resolved => "resolved",
        }
    }
}

/// One triage step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TriageAction {
    /// Open → acknowledged.
    Ack,
    /// Gives the alert to a user (any state but resolved).
    Assign { to: String },
    /// A note, in any state.
    Comment { text: String },
    /// Open or acknowledged → resolved.
    Resolve,
    /// Resolved → open.
    Reopen,
}

impl TriageAction {
    /// The step's name: ack, assign, comment, resolve, reopen.
    pub fn verb(&self) -> &'static str {
        match self {
            TriageAction::Ack => "ack",
            TriageAction::Assign { .. } => "assign",
            TriageAction::Comment { .. } => "comment",
            TriageAction::Resolve => "resolve",
            TriageAction::Reopen => "reopen",
        }
    }

    /// Checks what the step carries (a comment's size, an assignee's
    /// name), before any state is looked at.
    pub fn check(&self) -> Result<(), TriageError> {
        match self {
            TriageAction::Comment { text } if text.trim().is_empty() => {
                Err(TriageError::EmptyComment)
            }
            TriageAction::Comment { text } if text.len() > MAX_TRIAGE_COMMENT => {
                Err(TriageError::CommentTooLong(text.len()))
            }
            TriageAction::Assign { to } => {
                crate::check_user_name(to).map_err(|e| TriageError::Assignee(e.to_string()))
            }
            _ => Ok(()),
        }
    }
}

/// One step as recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TriageEntry {
    pub at_unix_nanos: i64,
    /// Who took the step (a dashboard user, or an operator's identity).
    pub actor: String,
    pub action: TriageAction,
}

/// An alert's triage: its state, assignee and history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertTriage {
    pub alert_index: u64,
    pub state: TriageState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub assignee: Option<String>,
    /// The newest [`MAX_TRIAGE_HISTORY`] steps, oldest first.
    pub history: Vec<TriageEntry>,
    /// Every step ever taken (more than `history` holds once it is full).
    pub history_total: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TriageError {
    #[error("comment: must not be empty")]
    EmptyComment,
    #[error("comment: {0} bytes, more than the {MAX_TRIAGE_COMMENT} taken")]
    CommentTooLong(usize),
    #[error("assignee: {0}")]
    Assignee(String),
    #[error("alert {index} is {state} already", state = state.as_str())]
    Already { index: u64, state: TriageState },
    #[error("alert {index} is resolved: reopen it first")]
    Resolved { index: u64 },
    #[error("alert {index} is not resolved ({state}): nothing to reopen", state = state.as_str())]
    NotResolved { index: u64, state: TriageState },
    #[error("actor: must not be empty")]
    NoActor,
}

impl AlertTriage {
    /// An alert no one triaged yet.
    pub fn new(alert_index: u64) -> Self {
        AlertTriage {
            alert_index,
            state: TriageState::Open,
            assignee: None,
            history: Vec::new(),
            history_total: 0,
        }
    }

    /// Takes one step, or says why it does not apply (nothing changes
    /// then).
    pub fn apply(&mut self, entry: TriageEntry) -> Result<(), TriageError> {
        entry.action.check()?;
        if entry.actor.trim().is_empty() {
            return Err(TriageError::NoActor);
        }
        let index = self.alert_index;
        match (&entry.action, self.state) {
            (TriageAction::Ack, TriageState::Open) => self.state = TriageState::Acknowledged,
            (TriageAction::Ack, state @ TriageState::Acknowledged) => {
                return Err(TriageError::Already { index, state })
            }
            (TriageAction::Ack | TriageAction::Assign { .. }, TriageState::Resolved) => {
                return Err(TriageError::Resolved { index })
            }
            (TriageAction::Assign { to }, _) => self.assignee = Some(to.clone()),
            (TriageAction::Comment { .. }, _) => {}
            (TriageAction::Resolve, TriageState::Open | TriageState::Acknowledged) => {
                self.state = TriageState::Resolved
            }
            (TriageAction::Resolve, state @ TriageState::Resolved) => {
                return Err(TriageError::Already { index, state })
            }
            (TriageAction::Reopen, TriageState::Resolved) => self.state = TriageState::Open,
            (TriageAction::Reopen, state) => return Err(TriageError::NotResolved { index, state }),
        }
        self.history.push(entry);
        if self.history.len() > MAX_TRIAGE_HISTORY {
            let extra = self.history.len() - MAX_TRIAGE_HISTORY;
            self.history.drain(..extra);
        }
        self.history_total += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(action: TriageAction) -> TriageEntry {
        TriageEntry {
            at_unix_nanos: 1,
            actor: "ann".into(),
            action,
        }
    }

    #[test]
    fn steps_move_the_state_and_are_recorded() {
        let mut t = AlertTriage::new(7);
        t.apply(step(TriageAction::Ack)).unwrap();
        assert_eq!(t.state, TriageState::Acknowledged);
        t.apply(step(TriageAction::Assign { to: "bob".into() }))
            .unwrap();
        assert_eq!(t.assignee.as_deref(), Some("bob"));
        t.apply(step(TriageAction::Comment {
            text: "<script>alert(1)</script>".into(),
        }))
        .unwrap();
        t.apply(step(TriageAction::Resolve)).unwrap();
        assert_eq!(t.state, TriageState::Resolved);
        t.apply(step(TriageAction::Reopen)).unwrap();
        assert_eq!(t.state, TriageState::Open);
        t.apply(step(TriageAction::Resolve)).unwrap();
        assert_eq!(t.history_total, 6);
        assert_eq!(t.history.len(), 6);
        assert_eq!(
            t.history[2].action,
            TriageAction::Comment {
                text: "<script>alert(1)</script>".into()
            },
            "verbatim"
        );
    }

    #[test]
    fn steps_the_state_does_not_allow_are_refused_and_change_nothing() {
        let mut t = AlertTriage::new(3);
        let e = t.apply(step(TriageAction::Reopen)).unwrap_err();
        assert_eq!(
            e.to_string(),
            "alert 3 is not resolved (open): nothing to reopen"
        );
        t.apply(step(TriageAction::Ack)).unwrap();
        let e = t.apply(step(TriageAction::Ack)).unwrap_err();
        assert_eq!(e.to_string(), "alert 3 is acknowledged already");
        t.apply(step(TriageAction::Resolve)).unwrap();
        let before = t.clone();
        for action in [
            TriageAction::Ack,
            TriageAction::Resolve,
            TriageAction::Assign { to: "bob".into() },
        ] {
            assert!(t.apply(step(action)).is_err());
        }
        assert_eq!(t, before);
    }

    #[test]
    fn comments_are_bounded_and_assignees_named() {
        let mut t = AlertTriage::new(1);
        let long = "x".repeat(MAX_TRIAGE_COMMENT + 1);
        assert_eq!(
            t.apply(step(TriageAction::Comment { text: long })),
            Err(TriageError::CommentTooLong(MAX_TRIAGE_COMMENT + 1))
        );
        let max = "é".repeat(MAX_TRIAGE_COMMENT / 2);
        t.apply(step(TriageAction::Comment { text: max })).unwrap();
        assert_eq!(
            t.apply(step(TriageAction::Comment { text: " ".into() })),
            Err(TriageError::EmptyComment)
        );
        assert!(matches!(
            t.apply(step(TriageAction::Assign {
                to: "Bad Name".into()
            })),
            Err(TriageError::Assignee(_))
        ));
        let mut nobody = step(TriageAction::Ack);
        nobody.actor = String::new();
        assert_eq!(t.apply(nobody), Err(TriageError::NoActor));
        assert_eq!(t.history_total, 1);
    }

    #[test]
    fn the_history_keeps_the_newest_and_counts_all() {
        let mut t = AlertTriage::new(1);
        for n in 0..MAX_TRIAGE_HISTORY + 10 {
            t.apply(step(TriageAction::Comment {
                text: format!("note {n}"),
            }))
            .unwrap();
        }
        assert_eq!(t.history.len(), MAX_TRIAGE_HISTORY);
        assert_eq!(t.history_total, (MAX_TRIAGE_HISTORY + 10) as u64);
        assert_eq!(
            t.history[0].action,
            TriageAction::Comment {
                text: "note 10".into()
            }
        );
    }

    #[test]
    fn actions_serialise_snake_case() {
        assert_eq!(
            serde_json::to_string(&TriageAction::Assign { to: "a".into() }).unwrap(),
            r#"{"assign":{"to":"a"}}"#
        );
        assert_eq!(
            serde_json::to_string(&TriageAction::Ack).unwrap(),
            r#""ack""#
        );
        assert_eq!(
            serde_json::to_string(&TriageState::Acknowledged).unwrap(),
            r#""acknowledged""#
        );
    }
}
