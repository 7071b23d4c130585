//! What can go wrong in the state machine. These errors travel back to the client inside Raft
//! responses, so they are plain data.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::model::{Kind, TaskState};
use crate::time::Timestamp;

/// A command the state machine refused. Nothing of the refused command was applied.
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum StateError {
    #[error("{kind} {id} not found")]
    NotFound { kind: Kind, id: String },

    /// Someone else changed the object since the caller read it; read again and retry.
    #[error("{kind} {id} changed meanwhile (read at version {expected}, now at {actual}): read it again and retry")]
    VersionConflict {
        kind: Kind,
        id: String,
        expected: u64,
        actual: u64,
    },

    #[error("{kind} {name:?} already exists")]
    AlreadyExists { kind: Kind, name: String },

    #[error("task {id} cannot move back from {from} to {to}")]
    StateRegression {
        id: String,
        from: TaskState,
        to: TaskState,
    },

    #[error("{0}")]
    Invalid(String),

    /// The service's update status is no longer the one the change was decided on: another
    /// update started, or the update moved on. Read again and decide again.
    #[error("the update status of service {id} changed meanwhile: read it again and retry")]
    UpdateStatusChanged { id: String },

    /// The lock belongs to another holder (its lease may have expired, for a renewal or a
    /// release: only the holder may do either).
    #[error("lock {name:?} is held by {holder:?}")]
    LockHeld {
        name: String,
        holder: String,
        /// When the holder's lease ends, by the leader's clock.
        expires_at: Timestamp,
    },

    /// A network that services or tasks still use cannot go.
    #[error("network {network} is in use by {}", users.join(", "))]
    NetworkInUse { network: String, users: Vec<String> },

    /// A secret or config that services use cannot go.
    #[error("{kind} {name} is in use by service {}", services.join(", "))]
    FileInUse {
        kind: crate::model::FileKind,
        name: String,
        services: Vec<String>,
    },

    /// Renewing or releasing a lock that nobody holds.
    #[error("lock {name:?} is not held by anyone: it was released, or never acquired")]
    LockNotHeld { name: String },
}

impl StateError {
    /// True when retrying after a fresh read may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StateError::VersionConflict { .. } | StateError::UpdateStatusChanged { .. }
        )
    }
}

/// A name, ID or ID prefix that does not pick exactly one object.
#[derive(Clone, Debug, Error, PartialEq, Eq, Serialize, Deserialize)]
pub enum LookupError {
    /// Nothing answers to the name. `suggestion` is a known name close to it, as
    /// [`crate::suggest::closest`] picks it: most likely a typo for it.
    #[error("{kind} {name:?} not found{}", did_you_mean(.suggestion))]
    NotFound {
        kind: Kind,
        name: String,
        suggestion: Option<String>,
    },
    #[error("{kind} name {name:?} is ambiguous: it matches {} ({})", .matches.len(), .matches.join(", "))]
    Ambiguous {
        kind: Kind,
        name: String,
        matches: Vec<String>,
    },
}

/// The end of a "not found" message: `; did you mean "web"?`, or nothing.
fn did_you_mean(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|name| format!("; did you mean {name:?}?"))
        .unwrap_or_default()
}
