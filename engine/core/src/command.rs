//! Commands: the changes one Raft entry carries. A [`Request`] batches many commands (the
//! scheduler commits thousands of assignments in one entry); each command is applied on its
//! own, all or nothing, and gets its own result.

use serde::{Deserialize, Serialize};

use crate::error::StateError;
use crate::model::{
    CaRotation, Cluster, ClusterConfig, FileKind, IngressAddress, JoinTokens, Network,
    NetworkAttachment, Node, NodeSpec, NodeStatus, ObjectId, Role, RootCa, Service, ServiceSpec,
    StoredFile, Task, TaskState, TaskStatus, TokenRecord, UpdateStatus, VirtualIp,
};
use crate::time::Timestamp;

/// One Raft entry's worth of changes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// When the leader proposed the entry; every manager stamps objects with this same time.
    pub time: Timestamp,
    pub commands: Vec<Command>,
}

impl Request {
    pub fn new(time: Timestamp, commands: Vec<Command>) -> Self {
        Request { time, commands }
    }

    pub fn one(time: Timestamp, command: Command) -> Self {
        Request {
            time,
            commands: vec![command],
        }
    }
}

/// One result per command of the request, in order: the version the command gave its object.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Response {
    pub results: Vec<Result<u64, StateError>>,
}

impl Response {
    /// The result of a single-command request.
    ///
    /// # Errors
    /// The command's own refusal.
    pub fn single(self) -> Result<u64, StateError> {
        self.results
            .into_iter()
            .next()
            .unwrap_or_else(|| Err(StateError::Invalid("empty response".to_string())))
    }
}

/// A change to the cluster state. `expected_version`, where present, makes the change
/// conditional on the object being unchanged since the caller read it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// Variants are built once and moved, never copied around: boxing would only add noise.
#[allow(clippy::large_enum_variant)]
pub enum Command {
    CreateCluster {
        cluster: Cluster,
    },
    UpdateClusterConfig {
        expected_version: Option<u64>,
        config: ClusterConfig,
    },
    SetJoinToken {
        role: Role,
        token: TokenRecord,
    },
    /// Moves a CA rotation on: the signing CA, the rotation stage and the join tokens (whose
    /// secrets derive from the CA key) change together.
    UpdateCa {
        expected_version: Option<u64>,
        root_ca: RootCa,
        ca_rotation: Option<CaRotation>,
        join_tokens: JoinTokens,
    },
    AddNode {
        node: Node,
    },
    UpdateNodeSpec {
        id: ObjectId,
        expected_version: Option<u64>,
        spec: NodeSpec,
    },
    /// Health as seen by the leader; last writer wins.
    SetNodeStatus {
        id: ObjectId,
        status: NodeStatus,
    },
    RemoveNode {
        id: ObjectId,
        expected_version: Option<u64>,
    },
    CreateService {
        service: Service,
    },
    /// Replaces the spec; the one it replaces becomes the previous spec (for a rollback).
    UpdateService {
        id: ObjectId,
        expected_version: Option<u64>,
        spec: ServiceSpec,
        /// Set with the spec when the change starts an update or a rollback; `None` leaves
        /// the update status as it is (a change that runs the same tasks).
        #[serde(default)]
        update_status: Option<UpdateStatus>,
    },
    /// The allocator's choice of a service's virtual IPs, one per network of its spec in vip
    /// mode; replaces those it had.
    SetVirtualIps {
        service_id: ObjectId,
        virtual_ips: Vec<VirtualIp>,
    },
    /// The allocator's choice of a node's address on the ingress network (`None` takes it
    /// back); replaces the one it had.
    SetNodeIngress {
        node_id: ObjectId,
        ingress: Option<IngressAddress>,
    },
    /// The updater's progress, or a paused update continued. Refused with
    /// [`StateError::UpdateStatusChanged`] unless the status is still `expected`, so that a
    /// decision taken on an older read never overwrites a newer update's status.
    SetUpdateStatus {
        service_id: ObjectId,
        expected: Option<UpdateStatus>,
        status: UpdateStatus,
    },
    RemoveService {
        id: ObjectId,
        expected_version: Option<u64>,
    },
    CreateTask {
        task: Task,
    },
    /// Gives a task that waited for them its addresses on its networks.
    AttachTask {
        id: ObjectId,
        networks: Vec<NetworkAttachment>,
    },
    /// Places a task on a node, and moves it to ASSIGNED.
    AssignTask {
        id: ObjectId,
        node_id: ObjectId,
    },
    /// A worker's report, or a manager's verdict; refused if it would move the state back.
    UpdateTaskStatus {
        id: ObjectId,
        status: TaskStatus,
    },
    SetTaskDesiredState {
        id: ObjectId,
        desired_state: TaskState,
    },
    RemoveTask {
        id: ObjectId,
    },
    /// Takes the lock `name` for `holder` until `ttl_ms` after the entry's time, when nobody
    /// holds it, its lease has expired, or `holder` holds it already (which extends the lease).
    /// Refused with [`StateError::LockHeld`] while another holder's lease is live.
    AcquireLock {
        name: String,
        holder: String,
        ttl_ms: u64,
    },
    /// Extends `holder`'s lease on `name` to `ttl_ms` after the entry's time, even if it has
    /// expired, as long as nobody else took the lock meanwhile.
    RenewLock {
        name: String,
        holder: String,
        ttl_ms: u64,
    },
    /// A network with its allocation; refused if its name, subnet or VXLAN id is taken.
    CreateNetwork {
        network: Network,
    },
    /// Refused while a service names the network or a task or virtual IP holds an address
    /// on it.
    RemoveNetwork {
        id: ObjectId,
    },
    /// A secret (its data sealed by the leader) or a config; refused if its kind has the name.
    CreateFile {
        file: StoredFile,
    },
    /// Refused while a service uses the secret or config.
    RemoveFile {
        kind: FileKind,
        id: ObjectId,
    },
    /// Frees the lock `name`; only its holder may.
    ReleaseLock {
        name: String,
        holder: String,
    },
}
