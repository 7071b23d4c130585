//! Services: what users ask the cluster to run, and how.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{
    word_enum, ContainerOptions, EndpointMode, FileKind, FileReference, Mount,
    NetworkAttachmentConfig, ObjectId, RegistryAuth, VirtualIp,
};
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
    /// Where the latest rolling update (or rollback) stands; `None` until the tasks' spec
    /// first changes. Written by the leader (the API and the updater) through Raft, so that a
    /// new leader resumes an update where it stood.
    #[serde(default)]
    pub update_status: Option<UpdateStatus>,
    /// The service's address on each of its networks, in vip mode; allocated by the leader.
    #[serde(default)]
    pub virtual_ips: Vec<VirtualIp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub mode: ServiceMode,
    pub task: TaskSpec,
    pub ports: Vec<PortConfig>,
    /// How a change of the task spec (or ports) rolls out.
    #[serde(default)]
    pub update_config: UpdateConfig,
    /// How a rollback rolls out: `service rollback`, or an update's failure action.
    #[serde(default)]
    pub rollback_config: UpdateConfig,
    /// `--endpoint-mode`: how the service's name resolves on its networks.
    #[serde(default)]
    pub endpoint_mode: EndpointMode,
}

impl ServiceSpec {
    /// True when a task made with `task` and `ports` runs what this spec asks for now.
    fn runs(&self, task: &TaskSpec, ports: &[PortConfig]) -> bool {
        self.task == *task && self.ports == ports
    }

    /// True when the tasks of this spec would not run as `to` says: a change to `to` replaces
    /// them (a rolling update).
    pub fn changes_tasks(&self, to: &ServiceSpec) -> bool {
        !to.runs(&self.task, &self.ports)
    }
}

/// True when `task` runs what its service's spec asks for now; an outdated task is replaced
/// by a rolling update. The one answer the orchestrator, the updater, the manager and the
/// shell's progress all use.
pub fn is_current(task: &super::Task, service: &Service) -> bool {
    service.spec.runs(&task.spec, &task.ports)
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ServiceMode {
    /// `replicas` tasks, in slots 1..=replicas.
    Replicated { replicas: u64 },
    /// One task on every eligible node.
    Global,
    /// A job: `completions` tasks run until each exits 0, in slots 1..=completions, at most
    /// `max_concurrent` at once (0: all at once). A task that completed is not run again,
    /// until an update (`--force` included) runs the job again.
    #[serde(rename = "replicated-job")]
    ReplicatedJob {
        completions: u64,
        max_concurrent: u64,
    },
    /// A job of one task on every eligible node.
    #[serde(rename = "global-job")]
    GlobalJob,
}

impl ServiceMode {
    /// A job's tasks run to completion, and are not restarted once they completed.
    pub fn is_job(self) -> bool {
        matches!(
            self,
            ServiceMode::ReplicatedJob { .. } | ServiceMode::GlobalJob
        )
    }

    /// Slots 1..=N, rather than one task per node.
    pub fn slots(self) -> Option<u64> {
        match self {
            ServiceMode::Replicated { replicas } => Some(replicas),
            ServiceMode::ReplicatedJob { completions, .. } => Some(completions),
            ServiceMode::Global | ServiceMode::GlobalJob => None,
        }
    }

    /// The word users type: `replicated`, `global`, `replicated-job`, `global-job`.
    pub fn word(self) -> &'static str {
        match self {
            ServiceMode::Replicated { .. } => "replicated",
            ServiceMode::Global => "global",
            ServiceMode::ReplicatedJob { .. } => "replicated-job",
            ServiceMode::GlobalJob => "global-job",
        }
    }
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
    /// The cluster networks the task joins (`--network`), in order: the first one carries its
    /// default route. Tasks on one network reach each other's services by name.
    pub networks: Vec<NetworkAttachmentConfig>,
    /// `--health-*`: `None` keeps what the image says; `Some` with an empty test disables it.
    pub healthcheck: Option<HealthCheck>,
    /// `--user`, `--workdir`, `--entrypoint`, `--hostname`, `--stop-signal`...
    pub container: ContainerOptions,
    /// `--mount`: binds, volumes and tmpfs, in order.
    pub mounts: Vec<Mount>,
    /// `--secret`: the secrets the task sees as files, under `/run/secrets` by default.
    pub secrets: Vec<FileReference>,
    /// `--config`: the configs the task sees as files, at `/NAME` by default.
    pub configs: Vec<FileReference>,
    /// `--with-registry-auth`: what the node pulls the image with; sealed in the state.
    pub registry_auth: Option<RegistryAuth>,
}

impl TaskSpec {
    /// The secrets or configs the task uses.
    pub fn files(&self, kind: FileKind) -> &[FileReference] {
        match kind {
            FileKind::Secret => &self.secrets,
            FileKind::Config => &self.configs,
        }
    }

    /// The options only a container runtime can apply, by flag (see
    /// [`ContainerOptions::container_only`]). Resource limits are not among them: the process
    /// runtime applies them through cgroups.
    pub fn container_only(&self) -> Vec<&'static str> {
        self.container.container_only()
    }
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
    /// `--health-start-interval`: how often checks run during the start period (Docker's
    /// `interval` when 0).
    pub start_interval_ms: u64,
}

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    /// CPUs in billionths, as Docker counts them (1.5 CPUs = 1_500_000_000).
    pub reserve_nano_cpus: u64,
    pub reserve_memory_bytes: u64,
    pub limit_nano_cpus: u64,
    pub limit_memory_bytes: u64,
    /// `--limit-pids`: processes and threads at most; 0 means no limit.
    pub limit_pids: u64,
    /// `--generic-resource KIND=N`: so many of each of the node's generic resources.
    pub generic: BTreeMap<String, u64>,
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
    /// 0 asks for a port chosen by the cluster: in ingress mode the leader picks one from
    /// [`INGRESS_PORTS`] when the service is created or updated; in host mode the node picks
    /// one when the task starts.
    pub published: u16,
    pub target: u16,
    #[serde(default)]
    pub protocol: Protocol,
    #[serde(default)]
    pub mode: PublishMode,
    /// Which tasks an ingress port sends a node's connections to.
    #[serde(default)]
    pub policy: TrafficPolicy,
}

impl PortConfig {
    /// A TCP port in ingress mode, Swarm's default.
    pub fn tcp(published: u16, target: u16) -> Self {
        PortConfig {
            published,
            target,
            protocol: Protocol::Tcp,
            mode: PublishMode::Ingress,
            policy: TrafficPolicy::Cluster,
        }
    }

    /// `published/protocol` (`8080/tcp`), as conflicts are reported.
    pub fn published_label(&self) -> String {
        format!("{}/{}", self.published, self.protocol)
    }
}

/// Where the cluster picks an ingress port left out (`-p 80`), as Swarm does.
pub const INGRESS_PORTS: std::ops::RangeInclusive<u16> = 30000..=32767;

word_enum! {
    /// The transport a published port carries.
    #[derive(Default)]
    Protocol {
        #[default]
        Tcp = "tcp",
        Udp = "udp",
    }
}

word_enum! {
    /// Where a published port opens. Ingress: on every node, balanced over every task of the
    /// service (the routing mesh). Host: only on the nodes that run a task, straight to it.
    #[derive(Default)]
    PublishMode {
        #[default]
        Ingress = "ingress",
        Host = "host",
    }
}

word_enum! {
    /// Which tasks a node sends the connections of an ingress port to (kube-proxy's
    /// `externalTrafficPolicy`). Cluster: any serving task of the service, on any node; the
    /// client's address is kept when the task chosen is on the node that took the
    /// connection. Local: only the node's own tasks (a node without one refuses), and the
    /// client's address is always kept.
    #[derive(Default)]
    TrafficPolicy {
        #[default]
        Cluster = "cluster",
        Local = "local",
    }
}

word_enum! {
    /// What the updater does when too many new tasks fail. During a rollback, `rollback`
    /// pauses it.
    #[derive(Default)]
    FailureAction {
        #[default]
        Pause = "pause",
        Continue = "continue",
        Rollback = "rollback",
    }
}

word_enum! {
    /// Whether a slot's old task stops before its replacement starts, or once it runs.
    #[derive(Default)]
    UpdateOrder {
        #[default]
        StopFirst = "stop-first",
        StartFirst = "start-first",
    }
}

/// How a change of the tasks rolls out (`--update-*`), or a rollback (`--rollback-*`). The
/// defaults are Swarm's.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateConfig {
    /// Tasks replaced at once; 0 replaces them all at once.
    pub parallelism: u64,
    /// The wait between the end of a batch and the start of the next.
    pub delay_ms: u64,
    /// How long a new task must stay running (and healthy, when it has a health check) to
    /// count as updated; a failure within it counts against the update.
    pub monitor_ms: u64,
    pub failure_action: FailureAction,
    /// The failures tolerated, as thousandths of the tasks wanted (0..=1000): 0 acts on the
    /// first failure.
    pub max_failure_ratio_permille: u64,
    pub order: UpdateOrder,
    /// Beyond Swarm, for phased rollouts: pause once this many tasks are updated, until
    /// `service update --continue`.
    pub pause_after: Option<Checkpoint>,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            parallelism: 1,
            delay_ms: 0,
            monitor_ms: 5_000,
            failure_action: FailureAction::Pause,
            max_failure_ratio_permille: 0,
            order: UpdateOrder::StopFirst,
            pause_after: None,
        }
    }
}

impl UpdateConfig {
    /// Checks the values a user can get wrong; `field` names the config (`update_config`).
    ///
    /// # Errors
    /// The first bad value, naming its field (`update_config.max_failure_ratio`).
    pub fn validate(&self, field: &str) -> Result<(), SpecError> {
        if self.max_failure_ratio_permille > 1000 {
            return Err(spec_error(
                &format!("{field}.max_failure_ratio"),
                format!(
                    "{} is outside 0-1",
                    crate::units::format_ratio_permille(self.max_failure_ratio_permille)
                ),
            ));
        }
        if let Some(checkpoint) = self.pause_after {
            checkpoint
                .check()
                .map_err(|message| spec_error(&format!("{field}.pause_after"), message))?;
        }
        Ok(())
    }
}

/// Where a phased rollout pauses: after a number of tasks (`3`), or a share of the tasks
/// wanted (`50%`, rounded up), counted from the tasks already updated when the update starts
/// or continues. Travels as the text users type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum Checkpoint {
    /// 1 or more tasks.
    Tasks(u64),
    /// 1 to 100 percent of the tasks wanted.
    Percent(u64),
}

impl Checkpoint {
    /// The number of tasks this checkpoint stands for when `wanted` tasks are wanted: a
    /// percentage rounds up, so that it is never 0.
    pub fn tasks(self, wanted: u64) -> u64 {
        match self {
            Checkpoint::Tasks(n) => n,
            Checkpoint::Percent(percent) => (wanted.saturating_mul(percent)).div_ceil(100).max(1),
        }
    }

    /// # Errors
    /// 0 tasks, or a percentage outside 1-100.
    pub fn check(self) -> Result<(), String> {
        match self {
            Checkpoint::Tasks(0) => Err(
                "0 tasks would pause before any task is updated: give 1 or more, or a \
                 percentage like 50%"
                    .to_string(),
            ),
            Checkpoint::Percent(percent) if !(1..=100).contains(&percent) => {
                Err(format!("{percent}% is outside 1-100%"))
            }
            _ => Ok(()),
        }
    }
}

impl std::fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Checkpoint::Tasks(n) => write!(f, "{n}"),
            Checkpoint::Percent(percent) => write!(f, "{percent}%"),
        }
    }
}

impl std::str::FromStr for Checkpoint {
    type Err = String;

    /// Reads `3` (tasks) or `50%` (of the tasks wanted).
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let (number, percent) = match trimmed.strip_suffix('%') {
            Some(number) => (number.trim_end(), true),
            None => (trimmed, false),
        };
        let value: u64 = number.parse().map_err(|_| {
            format!(
                "invalid checkpoint {text:?}: expected a number of tasks (3) or a percentage \
                 of the tasks (50%)"
            )
        })?;
        let checkpoint = if percent {
            Checkpoint::Percent(value)
        } else {
            Checkpoint::Tasks(value)
        };
        checkpoint
            .check()
            .map_err(|message| format!("invalid checkpoint {text:?}: {message}"))?;
        Ok(checkpoint)
    }
}

impl From<Checkpoint> for String {
    fn from(checkpoint: Checkpoint) -> String {
        checkpoint.to_string()
    }
}

impl TryFrom<String> for Checkpoint {
    type Error = String;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

word_enum! {
    /// Where a rolling update stands.
    UpdateState {
        /// Replacing tasks, batch by batch.
        Updating = "updating",
        /// Stopped by a failure or at a checkpoint: nothing new starts until it continues.
        Paused = "paused",
        Completed = "completed",
        /// Going back to the previous spec, with the rollback config.
        RollbackStarted = "rollback_started",
        RollbackPaused = "rollback_paused",
        RollbackCompleted = "rollback_completed",
    }
}

impl UpdateState {
    /// True while the update is not over: updating, rolling back, or paused in either. The
    /// orchestrator leaves outdated tasks to the updater meanwhile.
    pub fn is_under_way(self) -> bool {
        !matches!(
            self,
            UpdateState::Completed | UpdateState::RollbackCompleted
        )
    }

    /// True while the updater replaces tasks: updating or rolling back, not paused.
    pub fn is_moving(self) -> bool {
        matches!(self, UpdateState::Updating | UpdateState::RollbackStarted)
    }

    /// True for a rollback, whatever its stage.
    pub fn is_rollback(self) -> bool {
        matches!(
            self,
            UpdateState::RollbackStarted
                | UpdateState::RollbackPaused
                | UpdateState::RollbackCompleted
        )
    }
}

/// Where a service's latest update (or rollback) stands, as `service inspect` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpdateStatus {
    pub state: UpdateState,
    pub started_at: Timestamp,
    pub completed_at: Option<Timestamp>,
    /// Why it paused or rolled back, or "update completed" / "rollback completed".
    pub message: String,
    /// Tasks of the target spec that passed their monitor period.
    pub updated: u64,
    /// Tasks of the target spec that failed since `started_at`.
    pub failures: u64,
    /// The checkpoint as a number of updated tasks, resolved when the update starts or
    /// continues: the update pauses when `updated` reaches it.
    pub pause_at: Option<u64>,
    /// When the next batch may start (`delay_ms` after the previous one ended), while the
    /// updater waits for it: stored so that a new leader waits no less.
    pub next_batch_at: Option<Timestamp>,
}

impl UpdateStatus {
    /// A new update (`Updating`) or rollback (`RollbackStarted`) from `now`, with its first
    /// checkpoint resolved against the `wanted` tasks.
    pub fn start(
        state: UpdateState,
        now: Timestamp,
        config: &UpdateConfig,
        wanted: u64,
        message: impl Into<String>,
    ) -> UpdateStatus {
        UpdateStatus {
            state,
            started_at: now,
            completed_at: None,
            message: message.into(),
            updated: 0,
            failures: 0,
            pause_at: config.pause_after.map(|c| c.tasks(wanted)),
            next_batch_at: None,
        }
    }
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
        for (key, value) in &self.task.env {
            if key.is_empty() || key.contains('=') {
                return Err(spec_error(
                    "--env",
                    format!("invalid variable name {key:?}: expected KEY=VALUE"),
                ));
            }
            crate::template::check(value).map_err(|e| spec_error("--env", e))?;
        }
        for constraint in &self.task.constraints {
            crate::scheduler::Constraint::parse(constraint)
                .map_err(|e| spec_error("--constraint", e.to_string()))?;
        }
        for path in &self.task.spread {
            crate::scheduler::Field::parse_spread(path)
                .map_err(|e| spec_error("--placement-pref", e.to_string()))?;
        }
        self.task.container.validate()?;
        super::validate_mounts(&self.task.mounts)?;
        super::validate_file_references(FileKind::Secret, &self.task.secrets)?;
        super::validate_file_references(FileKind::Config, &self.task.configs)?;
        let resources = &self.task.resources;
        for (kind, count) in &resources.generic {
            super::check_generic_kind(kind).map_err(|e| spec_error("--generic-resource", e))?;
            if *count == 0 {
                return Err(spec_error(
                    "--generic-resource",
                    format!("{kind}=0 reserves nothing: give at least 1"),
                ));
            }
        }
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
        self.update_config.validate("update_config")?;
        self.rollback_config.validate("rollback_config")?;
        let mut published = std::collections::BTreeSet::new();
        for port in &self.ports {
            if port.target == 0 {
                return Err(spec_error("--publish", "the target port must not be 0"));
            }
            if port.published != 0 && !published.insert((port.published, port.protocol.as_str())) {
                return Err(spec_error(
                    "--publish",
                    format!("port {} is published twice", port.published_label()),
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

    #[test]
    fn a_change_of_ports_alone_replaces_the_tasks_and_a_change_of_replicas_does_not() {
        let from = spec();
        let mut published = spec();
        published.ports = vec![PortConfig::tcp(8080, 80)];
        assert!(from.changes_tasks(&published));
        let mut scaled = spec();
        scaled.mode = ServiceMode::Replicated { replicas: 9 };
        assert!(!from.changes_tasks(&scaled));
    }

    #[test]
    fn a_task_without_the_ports_its_service_now_publishes_is_not_current() {
        let mut service = crate::testing::service(ServiceMode::Global, spec().task);
        let task = crate::model::Task {
            id: "t1".to_string(),
            version: 1,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            service_id: service.id.clone(),
            service_name: "web".to_string(),
            slot: None,
            node_id: Some("n1".to_string()),
            spec: service.spec.task.clone(),
            ports: vec![],
            networks: Vec::new(),
            service_version: 1,
            desired_state: crate::model::TaskState::Running,
            status: crate::model::TaskStatus::new(
                crate::model::TaskState::Running,
                Timestamp(0),
                "",
            ),
        };
        assert!(is_current(&task, &service));
        service.spec.ports = vec![PortConfig::tcp(8080, 80)];
        assert!(!is_current(&task, &service), "only the ports differ");
    }

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
            update_config: UpdateConfig::default(),
            rollback_config: UpdateConfig::default(),
            endpoint_mode: Default::default(),
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
        bad.ports = vec![PortConfig::tcp(8080, 80), PortConfig::tcp(8080, 81)];
        let err = bad.validate().unwrap_err();
        assert_eq!(
            err.to_string(),
            "--publish: port 8080/tcp is published twice"
        );
        // One number may carry TCP and UDP.
        let mut both = spec();
        let mut udp = PortConfig::tcp(53, 53);
        udp.protocol = Protocol::Udp;
        both.ports = vec![PortConfig::tcp(53, 53), udp];
        assert_eq!(both.validate(), Ok(()));
    }

    #[test]
    fn update_configs_default_to_swarm_s() {
        let config = UpdateConfig::default();
        assert_eq!(config.parallelism, 1);
        assert_eq!(config.delay_ms, 0);
        assert_eq!(config.monitor_ms, 5_000);
        assert_eq!(config.failure_action, FailureAction::Pause);
        assert_eq!(config.max_failure_ratio_permille, 0);
        assert_eq!(config.order, UpdateOrder::StopFirst);
        assert_eq!(config.pause_after, None);
        // A spec from a client that knows nothing of updates gets the defaults.
        let mut json = serde_json::to_value(spec()).expect("encode");
        let object = json.as_object_mut().expect("an object");
        object.remove("update_config");
        object.remove("rollback_config");
        let old: ServiceSpec = serde_json::from_value(json).expect("decode");
        assert_eq!(old.update_config, UpdateConfig::default());
        assert_eq!(old.rollback_config, UpdateConfig::default());
    }

    #[test]
    fn update_words_read_and_print_as_users_type_them() {
        assert_eq!("rollback".parse(), Ok(FailureAction::Rollback));
        assert_eq!("start-first".parse(), Ok(UpdateOrder::StartFirst));
        assert_eq!(UpdateOrder::StopFirst.as_str(), "stop-first");
        assert_eq!(UpdateState::RollbackPaused.as_str(), "rollback_paused");
        let err = "explode".parse::<FailureAction>().unwrap_err();
        assert!(
            err.to_string()
                .ends_with("\"explode\": expected one of pause, continue, rollback"),
            "{err}"
        );
        assert_eq!(
            serde_json::to_string(&UpdateState::RollbackStarted).expect("encode"),
            "\"rollback_started\""
        );
    }

    #[test]
    fn checkpoints_are_tasks_or_a_share_of_them() {
        assert_eq!("3".parse(), Ok(Checkpoint::Tasks(3)));
        assert_eq!(" 50% ".parse(), Ok(Checkpoint::Percent(50)));
        assert_eq!(Checkpoint::Percent(50).to_string(), "50%");
        assert_eq!(Checkpoint::Tasks(3).to_string(), "3");
        assert!("0"
            .parse::<Checkpoint>()
            .unwrap_err()
            .contains("give 1 or more"));
        assert!("0%"
            .parse::<Checkpoint>()
            .unwrap_err()
            .contains("outside 1-100%"));
        assert!("101%".parse::<Checkpoint>().is_err());
        assert!("half".parse::<Checkpoint>().is_err());
        // A share rounds up: a canary of 1% of 10 tasks is one task, not none.
        assert_eq!(Checkpoint::Percent(1).tasks(10), 1);
        assert_eq!(Checkpoint::Percent(50).tasks(5), 3);
        assert_eq!(Checkpoint::Percent(100).tasks(4), 4);
        assert_eq!(Checkpoint::Tasks(2).tasks(4), 2);
        // On the wire, the text users type.
        let json = serde_json::to_string(&Some(Checkpoint::Percent(25))).expect("encode");
        assert_eq!(json, "\"25%\"");
        assert_eq!(
            serde_json::from_str::<Option<Checkpoint>>(&json).expect("decode"),
            Some(Checkpoint::Percent(25))
        );
        assert!(serde_json::from_str::<Checkpoint>("\"0%\"").is_err());
    }

    #[test]
    fn bad_update_configs_name_their_field() {
        let mut bad = spec();
        bad.update_config.max_failure_ratio_permille = 1_500;
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "update_config.max_failure_ratio: 1.5 is outside 0-1"
        );
        let mut bad = spec();
        bad.rollback_config.pause_after = Some(Checkpoint::Percent(0));
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "rollback_config.pause_after: 0% is outside 1-100%"
        );
        let mut bad = spec();
        bad.update_config.pause_after = Some(Checkpoint::Tasks(0));
        assert_eq!(
            bad.validate().unwrap_err().field,
            "update_config.pause_after"
        );
        let mut good = spec();
        good.update_config.max_failure_ratio_permille = 1_000;
        good.update_config.pause_after = Some(Checkpoint::Percent(100));
        assert_eq!(good.validate(), Ok(()));
    }

    #[test]
    fn an_update_starts_with_its_checkpoint_resolved() {
        let config = UpdateConfig {
            pause_after: Some(Checkpoint::Percent(25)),
            ..UpdateConfig::default()
        };
        let status = UpdateStatus::start(UpdateState::Updating, Timestamp(7), &config, 8, "");
        assert_eq!(status.pause_at, Some(2));
        assert_eq!((status.updated, status.failures), (0, 0));
        assert_eq!(status.started_at, Timestamp(7));
        assert!(status.state.is_moving() && status.state.is_under_way());
        assert!(!UpdateState::Completed.is_under_way());
        assert!(UpdateState::RollbackPaused.is_under_way() && !UpdateState::Paused.is_moving());
    }
}
