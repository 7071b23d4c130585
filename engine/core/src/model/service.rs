//! Services: what users ask the cluster to run, and how.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{word_enum, ObjectId};
use crate::time::Timestamp;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    pub id: ObjectId,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub spec: ServiceSpec,
    /// The spec before the last update, for `service rollback`.
    pub previous_spec: Option<ServiceSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub mode: ServiceMode,
    pub task: TaskSpec,
    pub ports: Vec<PortConfig>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    /// `replicas` tasks, in slots 1..=replicas.
    Replicated { replicas: u64 },
    /// One task on every eligible node.
    Global,
}

/// What every task of a service runs. A change here replaces the tasks.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    pub image: String,
    pub args: Vec<String>,
    pub env: BTreeMap<String, String>,
    pub resources: Resources,
    pub restart_policy: RestartPolicy,
    /// Placement constraints, as typed: `node.labels.zone==a`.
    pub constraints: Vec<String>,
    /// Spread preferences: the label paths (`node.labels.zone`) to spread over.
    pub spread: Vec<String>,
    /// 0 means no limit.
    pub max_replicas_per_node: u64,
    pub stop_grace_period_ms: u64,
    /// Bumped by `service update --force` to redeploy with no other change.
    pub force_update: u64,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPUs in billionths, as Docker counts them (1.5 CPUs = 1_500_000_000).
    pub reserve_nano_cpus: u64,
    pub reserve_memory_bytes: u64,
    pub limit_nano_cpus: u64,
    pub limit_memory_bytes: u64,
}

word_enum! {
    /// When a task that stopped is replaced.
    RestartCondition { Any = "any", OnFailure = "on-failure", None = "none" }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    pub delay_ms: u64,
    /// 0 means unlimited.
    pub max_attempts: u64,
    /// The window in which attempts are counted; 0 means for ever.
    pub window_ms: u64,
}

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy {
            condition: RestartCondition::Any,
            delay_ms: 5_000,
            max_attempts: 0,
            window_ms: 0,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortConfig {
    /// 0 asks for a port chosen by the cluster.
    pub published: u16,
    pub target: u16,
}
