//! The control API, typed. The shell sends a [`ControlRequest`] to its node's local socket; the
//! node answers what concerns itself (info, init, join, leave) and change notifications, and
//! passes the rest to the Raft leader, unchanged, over the cluster port.

use std::collections::BTreeMap;
use std::time::Duration;

use essaim_core::model::{
    base64_bytes, AddressPool, Availability, Checkpoint, Cluster, ClusterConfig, FileKind,
    FileSpec, Network, NetworkSpec, Node, ObjectId, Role, Service, ServiceSpec, Task, TaskState,
};
use essaim_core::Timestamp;
use serde::{Deserialize, Serialize};

use crate::error::ControlError;
use crate::pb;

// Externally tagged (`{"service_update": {...}}`), serde's default: an internally tagged enum
// is decoded by buffering the whole request first, a tenth of the leader's time under load.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// A request is built once and sent; boxing the spec would only add noise.
#[allow(clippy::large_enum_variant)]
pub enum ControlRequest {
    // ----- answered by the node the shell talks to -----
    /// The node's own view of itself and its swarm.
    Info,
    /// Make this node the first manager of a new cluster.
    SwarmInit {
        advertise_addr: Option<String>,
        /// `--default-addr-pool` and `--default-addr-pool-mask-length`; `None`: Swarm's
        /// 10.0.0.0/8 in /24s.
        #[serde(default)]
        address_pool: Option<AddressPool>,
    },
    /// Join the cluster of the manager at `remote_addr`, as the token says (worker or manager).
    SwarmJoin {
        token: String,
        remote_addr: String,
        advertise_addr: Option<String>,
    },
    /// Leave the cluster; `force` skips the quorum check and leaves even when the cluster
    /// cannot be told.
    SwarmLeave {
        force: bool,
    },

    // ----- answered by the manager the shell talks to, from its own applied state -----
    /// Long-polls for a change: answered with [`ControlReply::Changed`] once this manager has
    /// applied a log entry past `after_index`, or when `timeout_ms` ran out (at most
    /// [`MAX_WAIT_CHANGE`]), whichever comes first. An `after_index` below the applied index
    /// (0, say) is answered at once: that is how a caller learns the index to wait from.
    ///
    /// Every manager applies the same log, so the manager the shell talks to answers without
    /// asking the leader; what changed is then read as usual. Indexes are this manager's
    /// progress through the log: one from another manager may be ahead of it, and is waited
    /// for as any other.
    WaitChange {
        after_index: u64,
        timeout_ms: u64,
    },

    // ----- answered by the leader -----
    /// The join token for `role`, after rotating it when `rotate` is set.
    JoinToken {
        role: Role,
        rotate: bool,
    },
    SwarmInspect,
    NodeList,
    NodeInspect {
        node: String,
    },
    /// Changes a node's spec. `role` promotes or demotes it.
    NodeUpdate {
        node: String,
        /// The version the caller read; the update is refused if the node changed since.
        expected_version: Option<u64>,
        availability: Option<Availability>,
        role: Option<Role>,
        label_add: BTreeMap<String, String>,
        label_rm: Vec<String>,
    },
    NodeRemove {
        node: String,
        force: bool,
    },
    /// Changes cluster settings; `None` leaves a setting as it is.
    SwarmUpdate {
        cert_expiry_ms: Option<u64>,
        heartbeat_period_ms: Option<u64>,
        task_history_limit: Option<u32>,
    },
    /// Signs an operator's certificate request: a client bundle for `essaim -H tcp://`.
    IssueClientCert {
        name: String,
        csr_pem: String,
    },
    /// Starts replacing the cluster CA; nodes move to the new one while both are trusted.
    RotateCa,
    /// Creates a service; its tasks are placed by the leader's orchestrator and scheduler.
    ServiceCreate {
        spec: ServiceSpec,
    },
    ServiceList,
    ServiceInspect {
        service: String,
    },
    /// Sets the number of replicas of a replicated service.
    ServiceScale {
        service: String,
        replicas: u64,
    },
    /// Replaces a service's spec, as `service update` edits it. The mode and the name cannot
    /// change. A spec that differs in what tasks run (task spec or ports, `--force` included)
    /// starts a rolling update with the new spec's `update_config`: the service's
    /// `update_status` becomes `updating`, replacing any update under way (the new spec
    /// wins, as in Swarm). Any other change (replicas, labels, the configs) leaves the update
    /// status as it is.
    ServiceUpdate {
        service: String,
        /// The version the caller read; the update is refused if the service changed since.
        expected_version: Option<u64>,
        spec: ServiceSpec,
    },
    /// Goes back to the previous spec (which becomes the previous spec in turn), rolled out
    /// with that spec's `rollback_config`: `update_status` becomes `rollback_started`.
    /// Refused (failed precondition) when the service has no previous spec.
    ServiceRollback {
        service: String,
        /// The version the caller read; the rollback is refused if the service changed since.
        expected_version: Option<u64>,
    },
    /// Goes on with a paused update (`paused` becomes `updating`) or rollback
    /// (`rollback_paused` becomes `rollback_started`), up to the next checkpoint:
    /// `pause_after` more tasks counted from those already updated, or to the end when
    /// `None`. Refused (failed precondition) when nothing is paused.
    ServiceUpdateContinue {
        service: String,
        pause_after: Option<Checkpoint>,
    },
    ServiceRemove {
        service: String,
    },
    /// The tasks of a service, or of a node, or all.
    TaskList {
        service: Option<String>,
        node: Option<String>,
    },
    /// Takes the cluster-wide lock `name` for `holder`, for `ttl_ms` (1 s to 1 h) by the
    /// leader's clock: answered with [`ControlReply::Lock`], `acquired` false and the current
    /// holder named when another holder's lease is live. Taking a lock one holds extends it.
    LockAcquire {
        name: String,
        holder: String,
        ttl_ms: u64,
    },
    /// Extends `holder`'s lease on `name` to `ttl_ms` from now; refused (naming the holder)
    /// once another holder took the lock, and when nobody holds it.
    LockRenew {
        name: String,
        holder: String,
        ttl_ms: u64,
    },
    /// Frees the lock `name`; refused, naming the holder, for anyone but its holder.
    LockRelease {
        name: String,
        holder: String,
    },
    /// Every lease the cluster keeps, expired ones included until taken again.
    LockList,
    /// Creates a cluster network, with a subnet and a VXLAN id the leader allocates.
    NetworkCreate {
        spec: NetworkSpec,
    },
    NetworkList,
    NetworkInspect {
        network: String,
    },
    /// Refused (failed precondition, naming them) while services or tasks use it.
    NetworkRemove {
        network: String,
    },
    /// `secret create` / `config create`: the leader seals a secret's data before it is
    /// written.
    FileCreate {
        kind: FileKind,
        spec: FileSpec,
        #[serde(with = "base64_bytes")]
        data: Vec<u8>,
    },
    FileList {
        kind: FileKind,
    },
    FileInspect {
        kind: FileKind,
        name: String,
    },
    /// Refused (failed precondition, naming them) while services use it.
    FileRemove {
        kind: FileKind,
        name: String,
    },
}

/// The longest a [`ControlRequest::WaitChange`] waits; a longer `timeout_ms` is cut to it.
pub const MAX_WAIT_CHANGE: Duration = Duration::from_secs(30);

/// `service logs`: the output of a service's tasks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceLogs {
    pub service: String,
    /// The last lines of each task (0: all each node kept).
    pub tail: u64,
    /// Keep streaming new lines until the caller hangs up.
    pub follow: bool,
}

/// One piece of a `service logs` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogEvent {
    /// Lines of one task, named as `service ps` names it (`web.1`), on the node that runs it.
    Lines {
        task: String,
        node: String,
        lines: Vec<String>,
    },
    /// A node that runs tasks of the service could not be asked for their output.
    Unreachable { node: String, reason: String },
}

impl ControlRequest {
    /// True for the requests that only read: asking one again changes nothing.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            ControlRequest::SwarmInspect
                | ControlRequest::NodeList
                | ControlRequest::NodeInspect { .. }
                | ControlRequest::ServiceList
                | ControlRequest::ServiceInspect { .. }
                | ControlRequest::TaskList { .. }
                | ControlRequest::LockList
                | ControlRequest::NetworkList
                | ControlRequest::NetworkInspect { .. }
                | ControlRequest::FileList { .. }
                | ControlRequest::FileInspect { .. }
        )
    }

    /// True for the requests the node the shell talks to answers itself.
    pub fn is_local(&self) -> bool {
        matches!(
            self,
            ControlRequest::Info
                | ControlRequest::SwarmInit { .. }
                | ControlRequest::SwarmJoin { .. }
                | ControlRequest::SwarmLeave { .. }
        )
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[allow(clippy::large_enum_variant)]
pub enum ControlReply {
    Info(NodeInfo),
    Initialized {
        node_id: ObjectId,
        cluster_id: ObjectId,
        worker_token: String,
        manager_addr: String,
    },
    Joined {
        node_id: ObjectId,
        role: Role,
    },
    JoinToken {
        role: Role,
        token: String,
        manager_addr: String,
    },
    Swarm(SwarmView),
    Nodes(Vec<NodeView>),
    Node(NodeView),
    Service(ServiceView),
    Services(Vec<ServiceView>),
    Tasks(Vec<TaskView>),
    Network(NetworkView),
    Networks(Vec<NetworkView>),
    File(FileView),
    Files(Vec<FileView>),
    /// The answer to [`ControlRequest::LockAcquire`] and [`ControlRequest::LockRenew`].
    Lock(LockView),
    Locks(Vec<LockView>),
    ClientCert {
        certificate_pem: String,
        roots_pem: String,
        /// A manager address the bundle can be used against.
        manager_addr: String,
    },
    /// The answer to [`ControlRequest::WaitChange`]: the index of the last log entry the
    /// manager had applied when it answered. Greater than `after_index` when something was
    /// applied since; not greater when the wait timed out with nothing new.
    Changed {
        index: u64,
    },
    Done,
}

/// A service as `service ls` and `service inspect` show it: the service's fields and the
/// view's side by side in one object, as Docker's inspect shows a service.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ServiceViewFields")]
pub struct ServiceView {
    #[serde(flatten)]
    pub service: Service,
    /// Tasks whose observed state is running.
    pub running: u64,
    /// Tasks wanted: the replicas, or the eligible nodes of a global service (for a job, the
    /// completions wanted).
    pub desired: u64,
    /// A job's completions so far, of its current spec; 0 for other services.
    #[serde(default)]
    pub completed: u64,
    /// The tasks meant to run, counted by observed state: how far a deployment has got.
    #[serde(default)]
    pub live_by_state: BTreeMap<TaskState, u64>,
    /// Why fewer tasks run than wanted, from the latest task that failed, was rejected or
    /// waits for a node (`rejected: image "x" not found`); `None` when nothing is wrong.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
}

/// How a [`ServiceView`] is read: every field of the one object at once. serde reads a
/// `flatten`ed struct by buffering the whole object first and reading it again, which made
/// decoding the reply most of a client's time under a write load. The struct literal in
/// `from` fails to compile when a field is added to [`Service`] and not here.
#[derive(Deserialize)]
struct ServiceViewFields {
    id: ObjectId,
    version: u64,
    created_at: Timestamp,
    updated_at: Timestamp,
    spec: ServiceSpec,
    previous_spec: Option<ServiceSpec>,
    #[serde(default)]
    update_status: Option<essaim_core::model::UpdateStatus>,
    #[serde(default)]
    virtual_ips: Vec<essaim_core::model::VirtualIp>,
    running: u64,
    desired: u64,
    #[serde(default)]
    completed: u64,
    #[serde(default)]
    live_by_state: BTreeMap<TaskState, u64>,
    #[serde(default)]
    problem: Option<String>,
}

impl From<ServiceViewFields> for ServiceView {
    fn from(fields: ServiceViewFields) -> ServiceView {
        ServiceView {
            service: Service {
                id: fields.id,
                version: fields.version,
                created_at: fields.created_at,
                updated_at: fields.updated_at,
                spec: fields.spec,
                previous_spec: fields.previous_spec,
                update_status: fields.update_status,
                virtual_ips: fields.virtual_ips,
            },
            running: fields.running,
            desired: fields.desired,
            completed: fields.completed,
            live_by_state: fields.live_by_state,
            problem: fields.problem,
        }
    }
}

/// A network as `network ls` and `network inspect` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkView {
    #[serde(flatten)]
    pub network: Network,
    /// The services whose tasks join it, by name.
    pub services: Vec<String>,
    /// The tasks that hold an address on it now.
    pub tasks: u64,
    /// The addresses nobody holds.
    pub free_addresses: u64,
}

/// A secret or config as `secret ls` and `inspect` show it: never a secret's data.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileView {
    pub id: ObjectId,
    pub kind: FileKind,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub spec: FileSpec,
    /// The data's length in bytes.
    pub size: u64,
    /// A config's data; `None` for a secret.
    #[serde(default, with = "optional_data")]
    pub data: Option<Vec<u8>>,
    /// The services that use it, by name.
    pub services: Vec<String>,
}

/// A config's data as base64, or nothing.
mod optional_data {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    #[derive(Serialize, Deserialize)]
    struct Data(#[serde(with = "essaim_core::model::base64_bytes")] Vec<u8>);

    pub fn serialize<S: Serializer>(data: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        data.as_ref().map(|d| Data(d.clone())).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Ok(Option::<Data>::deserialize(d)?.map(|Data(data)| data))
    }
}

/// A task as `service ps` shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskView {
    #[serde(flatten)]
    pub task: Task,
    /// `web.1` for slot 1 of service web; `web.<node id>` for a global service.
    pub name: String,
    pub node_hostname: Option<String>,
    /// What the task used when its node last sampled it, while it runs. The leader keeps the
    /// samples in memory only: absent for a task that does not run, for a runtime that does
    /// not sample (sim), and for a period or two after the task starts or leadership moves.
    #[serde(default)]
    pub usage: Option<TaskUsage>,
}

/// A running task's CPU and memory, as its node sampled them. Soft state, never in the Raft
/// log: scripts read it to scale by load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskUsage {
    /// The CPU time the task used per second since the previous sample, in thousandths of a
    /// core: 1000 is one core fully busy, 2500 two and a half cores.
    pub cpu_millicores: u64,
    /// Memory in use: a container's usage less its inactive page cache; the resident set of a
    /// process runtime task's process group.
    pub memory_bytes: u64,
    /// When the node took the sample, by the node's clock.
    pub sampled_at: essaim_core::Timestamp,
}

impl TaskUsage {
    /// The task's entry in a session report.
    pub fn to_wire(&self, task_id: &str) -> pb::TaskUsage {
        pb::TaskUsage {
            task_id: task_id.to_string(),
            cpu_millicores: self.cpu_millicores,
            memory_bytes: self.memory_bytes,
            sampled_at_ms: self.sampled_at.0,
        }
    }

    /// An entry of a session report, with the task it is about.
    pub fn from_wire(wire: &pb::TaskUsage) -> (ObjectId, TaskUsage) {
        (
            wire.task_id.clone(),
            TaskUsage {
                cpu_millicores: wire.cpu_millicores,
                memory_bytes: wire.memory_bytes,
                sampled_at: essaim_core::Timestamp(wire.sampled_at_ms),
            },
        )
    }
}

/// A cluster-wide lock, as a caller that asked for it, or a listing, sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockView {
    pub name: String,
    /// The holder of the lease: the caller when `acquired`, else whoever holds it.
    pub holder: String,
    /// True if the caller holds the lock now. In [`ControlReply::Locks`], which has no
    /// caller: true while the lease has not expired.
    pub acquired: bool,
    /// Milliseconds until the lease expires, by the leader's clock when it answered; 0 once
    /// expired. The caller's own clock adds the reply's travel time: renew well before.
    pub expires_in_ms: u64,
}

/// The cluster as `swarm inspect` shows it: settings and the CA certificate, never the CA key
/// or anything token secrets derive from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SwarmView {
    pub id: ObjectId,
    pub version: u64,
    pub created_at: essaim_core::Timestamp,
    pub updated_at: essaim_core::Timestamp,
    pub config: ClusterConfig,
    /// SHA-256 of the CA certificate, hex.
    pub ca_fingerprint: String,
    pub ca_cert_pem: String,
    /// The stage of a CA rotation under way, if any.
    pub ca_rotation: Option<String>,
    /// Where networks' subnets come from (`swarm init --default-addr-pool`).
    #[serde(default)]
    pub address_pool: AddressPool,
}

impl SwarmView {
    pub fn of(cluster: &Cluster) -> SwarmView {
        let ca_fingerprint = crate::tls::certs_from_pem(&cluster.root_ca.cert_pem)
            .ok()
            .and_then(|certs| certs.first().map(|c| crate::tls::fingerprint(c)))
            .unwrap_or_default();
        SwarmView {
            id: cluster.id.clone(),
            version: cluster.version,
            created_at: cluster.created_at,
            updated_at: cluster.updated_at,
            config: cluster.config.clone(),
            ca_fingerprint,
            ca_cert_pem: cluster.root_ca.cert_pem.clone(),
            ca_rotation: cluster.ca_rotation.as_ref().map(|r| r.stage().to_string()),
            address_pool: cluster.address_pool.clone(),
        }
    }
}

/// Whether the node belongs to a swarm.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LocalSwarmState {
    Inactive,
    Active,
}

/// A node's view of itself, answered without asking the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: Option<ObjectId>,
    pub hostname: String,
    pub addr: String,
    pub swarm: LocalSwarmState,
    pub cluster_id: Option<ObjectId>,
    /// True when this node is a voting member of the Raft group.
    pub is_manager: bool,
    /// The leader's node ID, when this node is a manager and one is known.
    pub leader_id: Option<ObjectId>,
    /// The node certificate's role and expiry (seconds since the epoch), once it has one.
    pub cert_role: Option<String>,
    pub cert_not_after: Option<i64>,
}

/// A node as `node ls` and `node inspect` show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeView {
    #[serde(flatten)]
    pub node: Node,
    /// Present for managers.
    pub manager_status: Option<ManagerStatus>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManagerStatus {
    pub leader: bool,
    pub reachability: Reachability,
    pub addr: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reachability {
    Reachable,
    Unreachable,
}

impl ManagerStatus {
    /// The MANAGER STATUS column of `node ls`.
    pub fn label(&self) -> &'static str {
        match (self.leader, self.reachability) {
            (true, _) => "Leader",
            (false, Reachability::Reachable) => "Reachable",
            (false, Reachability::Unreachable) => "Unreachable",
        }
    }
}

/// Encodes a request or reply for the wire.
///
/// # Errors
/// Only if the value cannot be serialized, which would be a bug.
pub fn encode<T: Serialize>(value: &T) -> Result<pb::ControlMessage, ControlError> {
    serde_json::to_vec(value)
        .map(|json| pb::ControlMessage { json })
        .map_err(|e| ControlError::Internal(format!("cannot encode control message: {e}")))
}

/// Decodes a request or reply from the wire.
///
/// # Errors
/// A message that is not a valid request or reply of this version of essaim.
pub fn decode<T: for<'de> Deserialize<'de>>(
    message: &pb::ControlMessage,
) -> Result<T, ControlError> {
    serde_json::from_slice(&message.json).map_err(|e| {
        ControlError::InvalidArgument(format!(
            "malformed control message (is the other side the same essaim version?): {e}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_cross_the_wire_unchanged() {
        let request = ControlRequest::NodeUpdate {
            node: "m1".into(),
            expected_version: Some(4),
            availability: Some(Availability::Drain),
            role: None,
            label_add: BTreeMap::from([("zone".into(), "a".into())]),
            label_rm: vec!["old".into()],
        };
        let wire = encode(&request).expect("encode");
        assert_eq!(decode::<ControlRequest>(&wire).expect("decode"), request);
    }

    #[test]
    fn rollback_and_continue_cross_the_wire_with_their_checkpoint() {
        for request in [
            ControlRequest::ServiceRollback {
                service: "web".into(),
                expected_version: Some(7),
            },
            ControlRequest::ServiceUpdateContinue {
                service: "web".into(),
                pause_after: Some(Checkpoint::Percent(50)),
            },
            ControlRequest::ServiceUpdateContinue {
                service: "web".into(),
                pause_after: None,
            },
        ] {
            let wire = encode(&request).expect("encode");
            assert_eq!(decode::<ControlRequest>(&wire).expect("decode"), request);
        }
        let wire = encode(&ControlRequest::ServiceUpdateContinue {
            service: "web".into(),
            pause_after: Some(Checkpoint::Tasks(2)),
        })
        .expect("encode");
        let json = String::from_utf8(wire.json).expect("utf-8");
        assert!(json.contains(r#""pause_after":"2""#), "{json}");
    }

    #[test]
    fn a_service_view_is_one_flat_object_and_crosses_the_wire_unchanged() {
        use essaim_core::model::{ServiceMode, TaskSpec, VirtualIp};
        let mut service = essaim_core::testing::service(
            ServiceMode::Replicated { replicas: 3 },
            TaskSpec {
                image: "nginx".into(),
                ..Default::default()
            },
        );
        service.spec.labels = BTreeMap::from([("tier".into(), "front".into())]);
        service.previous_spec = Some(service.spec.clone());
        service.virtual_ips = vec![VirtualIp {
            network_id: "n1".into(),
            network: "front".into(),
            address: "10.0.1.2".parse().expect("address"),
        }];
        let view = ServiceView {
            service,
            running: 2,
            desired: 3,
            completed: 0,
            live_by_state: BTreeMap::from([(TaskState::Running, 2), (TaskState::Pending, 1)]),
            problem: Some("rejected: image not found".into()),
        };
        let wire = encode(&ControlReply::Service(view.clone())).expect("encode");
        let json: serde_json::Value = serde_json::from_slice(&wire.json).expect("json");
        let object = &json["service"];
        assert_eq!(object["id"], "s1");
        assert_eq!(object["running"], 2);
        assert_eq!(object["spec"]["name"], "web");
        assert_eq!(
            decode::<ControlReply>(&wire).expect("decode"),
            ControlReply::Service(view)
        );
    }

    #[test]
    fn every_reply_shape_crosses_the_wire() {
        for reply in [
            ControlReply::Nodes(vec![]),
            ControlReply::Changed { index: 42 },
            ControlReply::Lock(LockView {
                name: "nightly".into(),
                holder: "m1/4242".into(),
                acquired: false,
                expires_in_ms: 900,
            }),
            ControlReply::Done,
        ] {
            let wire = encode(&reply).expect("encode");
            assert_eq!(decode::<ControlReply>(&wire).expect("decode"), reply);
        }
    }

    #[test]
    fn task_usage_crosses_the_session_unchanged_and_old_views_have_none() {
        let usage = TaskUsage {
            cpu_millicores: 1_250,
            memory_bytes: 64 << 20,
            sampled_at: essaim_core::Timestamp(1_700_000_000_000),
        };
        assert_eq!(
            TaskUsage::from_wire(&usage.to_wire("t1")),
            ("t1".to_string(), usage)
        );
        // A task view from a manager that knows nothing of usage still reads.
        let view = TaskView {
            task: Task {
                id: "t1".into(),
                version: 1,
                created_at: Default::default(),
                updated_at: Default::default(),
                service_id: "s1".into(),
                service_name: "web".into(),
                slot: Some(1),
                node_id: Some("n1".into()),
                spec: Default::default(),
                ports: Vec::new(),
                networks: Vec::new(),
                service_version: 1,
                desired_state: TaskState::Running,
                status: essaim_core::model::TaskStatus::new(
                    TaskState::Running,
                    Default::default(),
                    "started",
                ),
            },
            name: "web.1".into(),
            node_hostname: None,
            usage: Some(usage),
        };
        let mut json = serde_json::to_value(&view).expect("encode");
        assert_eq!(json["usage"]["cpu_millicores"], 1_250);
        json.as_object_mut().expect("an object").remove("usage");
        let old: TaskView = serde_json::from_value(json).expect("decode");
        assert_eq!(old.usage, None);
    }

    #[test]
    fn a_garbled_message_is_an_invalid_argument() {
        let wire = pb::ControlMessage {
            json: b"{not json".to_vec(),
        };
        assert!(matches!(
            decode::<ControlRequest>(&wire),
            Err(ControlError::InvalidArgument(_))
        ));
    }
}
