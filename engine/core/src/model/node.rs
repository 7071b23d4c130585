//! Nodes: the machines of the cluster, managers and workers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{word_enum, ObjectId};
use crate::time::Timestamp;

word_enum! {
    /// What a node does in the cluster. Managers hold the Raft log; every node runs tasks.
    Role { Worker = "worker", Manager = "manager" }
}

word_enum! {
    /// Whether the scheduler may place tasks on a node.
    Availability {
        /// Gets new tasks.
        Active = "active",
        /// Keeps its tasks, gets no new ones.
        Pause = "pause",
        /// Gets no tasks; its tasks are moved away.
        Drain = "drain",
    }
}

word_enum! {
    /// The node's health as the leader sees it through heartbeats.
    NodeState {
        Unknown = "unknown",
        Ready = "ready",
        Down = "down",
    }
}

/// A word that is not one of an enum's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseEnumError {
    pub what: &'static str,
    pub given: String,
    pub expected: &'static [&'static str],
}

impl std::fmt::Display for ParseEnumError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "invalid {} {:?}: expected one of {}",
            self.what.to_ascii_lowercase(),
            self.given,
            self.expected.join(", ")
        )
    }
}

impl std::error::Error for ParseEnumError {}

/// What operators decide about a node.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpec {
    /// The desired role; Raft membership follows it.
    pub role: Role,
    pub availability: Availability,
    pub labels: BTreeMap<String, String>,
}

/// What the node says about itself when it joins.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeDescription {
    pub hostname: String,
    /// The address other nodes reach this node's cluster port at.
    pub addr: String,
    pub os: String,
    pub arch: String,
    /// What the node can give tasks; 0 means unknown (nothing is reserved against it).
    #[serde(default)]
    pub resources: NodeResources,
    /// How the node runs tasks: process, sim (and docker).
    #[serde(default)]
    pub runtime: String,
}

/// [`NodeDescription::runtime`] of a node that runs tasks as local processes.
pub const PROCESS_RUNTIME: &str = "process";

/// A node's capacity, as it reported it when it joined.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeResources {
    /// CPUs in billionths, as Docker counts them.
    pub nano_cpus: u64,
    pub memory_bytes: u64,
    /// `essaimd --generic-resource`: how many of each kind (see [`super::GenericResources`]).
    #[serde(default)]
    pub generic: std::collections::BTreeMap<String, u64>,
}

/// The node's health, written by the leader when it changes (not on every heartbeat).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub state: NodeState,
    pub message: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    pub id: ObjectId,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The node's identity in Raft, chosen with its ID when it joins, so that a manager's Raft
    /// membership and its node record always name the same machine.
    pub raft_id: u64,
    pub spec: NodeSpec,
    pub description: NodeDescription,
    pub status: NodeStatus,
    /// The node's address on the ingress network, given by the leader once that network
    /// exists: the routing mesh sends the connections it forwards to other nodes from it.
    #[serde(default)]
    pub ingress: Option<super::IngressAddress>,
}
