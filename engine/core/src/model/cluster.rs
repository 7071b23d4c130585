//! The cluster object: identity, settings and join tokens, one per cluster.

use serde::{Deserialize, Serialize};

use super::ObjectId;
use crate::time::Timestamp;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Cluster {
    pub id: ObjectId,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub config: ClusterConfig,
    pub join_tokens: JoinTokens,
}

/// Settings that `swarm update` changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterConfig {
    /// How often nodes report to the leader. A node is down after
    /// `heartbeat_misses_before_down` periods without a report.
    pub heartbeat_period_ms: u64,
    pub heartbeat_misses_before_down: u32,
    /// Dead tasks kept per slot (or per node, for global services).
    pub task_history_limit: u32,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        // Faster than Swarm's 5 s x 3: a lost node is noticed in 1.5 s.
        ClusterConfig {
            heartbeat_period_ms: 500,
            heartbeat_misses_before_down: 3,
            task_history_limit: 5,
        }
    }
}

impl ClusterConfig {
    /// How long a node may stay silent before it is marked down.
    pub fn node_down_after_ms(&self) -> u64 {
        self.heartbeat_period_ms
            .saturating_mul(u64::from(self.heartbeat_misses_before_down))
    }
}

/// The tokens that admit new nodes, one per role. Rotating one makes the old value useless at
/// once.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTokens {
    pub worker: String,
    pub manager: String,
}
