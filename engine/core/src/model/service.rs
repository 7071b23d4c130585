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
    /// User networks the task joins (`--network`); none: the service's own network. Tasks on
    /// one network reach each other's services by name.
    pub networks: Vec<String>,
    /// `--health-*`: `None` keeps what the image says; `Some` with an empty test disables it.
    pub healthcheck: Option<HealthCheck>,
}

/// How the task's container is checked for health, as Docker's HEALTHCHECK says it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthCheck {
    /// Docker's form: `["CMD-SHELL", command]` (`--health-cmd`), `["NONE"]`
    /// (`--no-healthcheck`), or empty to keep the image's test with the durations below.
    pub test: Vec<String>,
    /// 0 for a duration or for retries means Docker's default (30 s, 30 s, 0 s, 3).
    pub interval_ms: u64,
    pub timeout_ms: u64,
    pub start_period_ms: u64,
    pub retries: u64,
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

/// What is wrong with a service spec, and in which field (named as the command line flag).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{field}: {message}")]
pub struct SpecError {
    pub field: String,
    pub message: String,
}

fn spec_error(field: &str, message: impl Into<String>) -> SpecError {
    SpecError {
        field: field.to_string(),
        message: message.into(),
    }
}

impl ServiceSpec {
    /// Checks everything that can be checked without the cluster, so that a bad spec is
    /// refused whole before anything is written.
    ///
    /// # Errors
    /// The first problem found, naming its field.
    pub fn validate(&self) -> Result<(), SpecError> {
        validate_name(&self.name)?;
        if self.task.image.trim().is_empty() {
            return Err(spec_error("IMAGE", "an image (or program) is required"));
        }
        for key in self.task.env.keys() {
            if key.is_empty() || key.contains('=') {
                return Err(spec_error(
                    "--env",
                    format!("invalid variable name {key:?}: expected KEY=VALUE"),
                ));
            }
        }
        for constraint in &self.task.constraints {
            crate::scheduler::Constraint::parse(constraint)
                .map_err(|e| spec_error("--constraint", e.to_string()))?;
        }
        for path in &self.task.spread {
            crate::scheduler::Field::parse_spread(path)
                .map_err(|e| spec_error("--placement-pref", e.to_string()))?;
        }
        let resources = &self.task.resources;
        if resources.limit_memory_bytes > 0
            && resources.reserve_memory_bytes > resources.limit_memory_bytes
        {
            return Err(spec_error(
                "--reserve-memory",
                "the reservation is larger than --limit-memory",
            ));
        }
        if resources.limit_nano_cpus > 0 && resources.reserve_nano_cpus > resources.limit_nano_cpus
        {
            return Err(spec_error(
                "--reserve-cpu",
                "the reservation is larger than --limit-cpu",
            ));
        }
        let mut published = std::collections::BTreeSet::new();
        for port in &self.ports {
            if port.target == 0 {
                return Err(spec_error("--publish", "the target port must not be 0"));
            }
            if port.published != 0 && !published.insert(port.published) {
                return Err(spec_error(
                    "--publish",
                    format!("port {} is published twice", port.published),
                ));
            }
        }
        Ok(())
    }
}

/// Service names are DNS-friendly, as Docker's: a letter or digit first, then letters,
/// digits, `_`, `.` or `-`, at most 63 characters.
fn validate_name(name: &str) -> Result<(), SpecError> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
    if !first_ok || !rest_ok || name.len() > 63 {
        return Err(spec_error(
            "--name",
            format!(
                "invalid service name {name:?}: use letters, digits, '_', '.' and '-', starting \
                 with a letter or digit, at most 63 characters"
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "web".to_string(),
            labels: BTreeMap::new(),
            mode: ServiceMode::Replicated { replicas: 3 },
            task: TaskSpec {
                image: "nginx".to_string(),
                ..Default::default()
            },
            ports: vec![],
        }
    }

    #[test]
    fn a_plain_spec_is_valid() {
        assert_eq!(spec().validate(), Ok(()));
    }

    #[test]
    fn each_problem_names_its_flag() {
        let mut bad = spec();
        bad.name = "-web".to_string();
        assert_eq!(bad.validate().unwrap_err().field, "--name");

        let mut bad = spec();
        bad.task.image = " ".to_string();
        assert_eq!(bad.validate().unwrap_err().field, "IMAGE");

        let mut bad = spec();
        bad.task.spread = vec!["node.zone".to_string()];
        assert_eq!(bad.validate().unwrap_err().field, "--placement-pref");

        let mut bad = spec();
        bad.task.constraints = vec!["node.labels.zone=a".to_string()];
        let err = bad.validate().unwrap_err();
        assert_eq!(err.field, "--constraint");
        assert!(err.message.contains("column"), "{err}");

        let mut bad = spec();
        bad.task.resources.limit_memory_bytes = 100;
        bad.task.resources.reserve_memory_bytes = 200;
        assert_eq!(bad.validate().unwrap_err().field, "--reserve-memory");

        let mut bad = spec();
        bad.ports = vec![
            PortConfig {
                published: 8080,
                target: 80,
            },
            PortConfig {
                published: 8080,
                target: 81,
            },
        ];
        let err = bad.validate().unwrap_err();
        assert_eq!(err.to_string(), "--publish: port 8080 is published twice");
    }
}
