//! Tasks: one running instance of a service, in a slot (replicated) or on a node (global).
//! A task is never restarted in place: a replacement is a new task in the same slot.

use serde::{Deserialize, Serialize};

use super::{word_enum, NetworkAttachment, ObjectId, PortConfig, TaskSpec};
use crate::time::Timestamp;

word_enum! {
    /// Task states, in the only order they may be reached: an observed state never moves back.
    TaskState {
        New = "new",
        Pending = "pending",
        Assigned = "assigned",
        Accepted = "accepted",
        Preparing = "preparing",
        Ready = "ready",
        Starting = "starting",
        Running = "running",
        Complete = "complete",
        Shutdown = "shutdown",
        Failed = "failed",
        Rejected = "rejected",
        Remove = "remove",
        Orphaned = "orphaned",
    }
}

impl TaskState {
    /// Position in the forward-only order.
    pub fn rank(self) -> usize {
        Self::ALL.iter().position(|s| *s == self).unwrap_or(0)
    }

    /// True once the task has stopped for good.
    pub fn is_terminal(self) -> bool {
        self.rank() >= TaskState::Complete.rank()
    }
}

impl PartialOrd for TaskState {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for TaskState {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.rank().cmp(&other.rank())
    }
}

/// What the worker last reported, or what the managers decided before a worker saw the task.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskStatus {
    pub state: TaskState,
    pub timestamp: Timestamp,
    pub message: String,
    pub error: Option<String>,
    pub exit_code: Option<i32>,
    /// The node ports the task's target ports were published on, once it runs.
    #[serde(default)]
    pub ports: Vec<PortConfig>,
    /// The task's address on its network (a container's IP), once it runs, for the routing
    /// mesh to reach its target ports.
    #[serde(default)]
    pub address: Option<String>,
}

impl TaskStatus {
    pub fn new(state: TaskState, timestamp: Timestamp, message: impl Into<String>) -> Self {
        TaskStatus {
            state,
            timestamp,
            message: message.into(),
            error: None,
            exit_code: None,
            ports: Vec::new(),
            address: None,
        }
    }
}

/// A worker's word on one of its tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskReport {
    pub task_id: ObjectId,
    pub status: TaskStatus,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Task {
    pub id: ObjectId,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub service_id: ObjectId,
    /// The service's name, for the names the worker gives things (containers, DNS aliases).
    pub service_name: String,
    /// 1..=replicas for replicated services, `None` for global ones.
    pub slot: Option<u64>,
    pub node_id: Option<ObjectId>,
    /// The spec the task was created from: later service updates replace the task instead.
    pub spec: TaskSpec,
    /// The service's ports when the task was created: the worker publishes them.
    #[serde(default)]
    pub ports: Vec<PortConfig>,
    /// The task's addresses on its networks, in the order of `spec.networks`; allocated by
    /// the leader before the task is scheduled.
    #[serde(default)]
    pub networks: Vec<NetworkAttachment>,
    /// The service version whose spec this task runs.
    pub service_version: u64,
    /// Set by managers: running, shutdown or remove.
    pub desired_state: TaskState,
    pub status: TaskStatus,
}

impl Task {
    /// The task's name as users see it: `web.1` in a slot, `web.<node id>` for a global
    /// service (`service_name` alone before a global task has its node).
    pub fn name(&self, service_name: &str) -> String {
        match (self.slot, &self.node_id) {
            (Some(slot), _) => format!("{service_name}.{slot}"),
            (None, Some(node)) => format!("{service_name}.{node}"),
            (None, None) => service_name.to_string(),
        }
    }
}
