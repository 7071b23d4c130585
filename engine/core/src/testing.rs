//! Builders shared by the crate's unit tests.

use crate::model::{
    Availability, Node, NodeDescription, NodeSpec, NodeState, NodeStatus, Role, Service,
    ServiceMode, ServiceSpec, TaskSpec,
};
use crate::time::Timestamp;

/// A ready, active worker named `hostname`, on linux/x86_64, with no labels and unknown
/// resources.
pub fn node(id: &str, hostname: &str) -> Node {
    Node {
        id: id.to_string(),
        version: 0,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        raft_id: 1,
        spec: NodeSpec {
            role: Role::Worker,
            availability: Availability::Active,
            labels: Default::default(),
        },
        description: NodeDescription {
            hostname: hostname.to_string(),
            addr: "127.0.0.1:4001".to_string(),
            os: "linux".to_string(),
            arch: "x86_64".to_string(),
            resources: Default::default(),
            runtime: String::new(),
        },
        status: NodeStatus {
            state: NodeState::Ready,
            message: String::new(),
        },
    }
}

/// Service `s1`, named `web`, running `task` as `mode` says, with the default update configs
/// and no update yet.
pub fn service(mode: ServiceMode, task: TaskSpec) -> Service {
    Service {
        id: "s1".to_string(),
        version: 0,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        spec: ServiceSpec {
            name: "web".to_string(),
            labels: Default::default(),
            mode,
            task,
            ports: vec![],
            update_config: Default::default(),
            rollback_config: Default::default(),
            endpoint_mode: Default::default(),
        },
        previous_spec: None,
        update_status: None,
        virtual_ips: Vec::new(),
    }
}

/// A cluster object with placeholder CA and tokens.
pub fn cluster() -> crate::model::Cluster {
    use crate::model::{Cluster, ClusterConfig, JoinTokens, RootCa};
    Cluster {
        id: "c1".to_string(),
        version: 0,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        config: ClusterConfig::default(),
        join_tokens: JoinTokens {
            worker: token("w"),
            manager: token("m"),
        },
        root_ca: RootCa {
            cert_pem: "cert".to_string(),
            key_pem: "key".to_string(),
        },
        ca_rotation: None,
        address_pool: Default::default(),
    }
}

/// A join token record for `nonce`, its hash a placeholder.
pub fn token(nonce: &str) -> crate::model::TokenRecord {
    crate::model::TokenRecord {
        nonce: nonce.to_string(),
        secret_sha256: format!("hash-of-{nonce}"),
    }
}

/// The state after `cluster` (if any) and `nodes` were added, in that order.
pub fn state_with(cluster: Option<crate::model::Cluster>, nodes: Vec<Node>) -> crate::ClusterState {
    use crate::command::{Command, Request};
    let mut state = crate::ClusterState::default();
    let commands = cluster
        .map(|cluster| Command::CreateCluster { cluster })
        .into_iter()
        .chain(nodes.into_iter().map(|node| Command::AddNode { node }));
    for (index, command) in commands.enumerate() {
        let mut events = Vec::new();
        let index = index as u64 + 1;
        let result = state
            .apply(index, &Request::one(Timestamp(index), command), &mut events)
            .single();
        assert!(result.is_ok(), "test state: {result:?}");
    }
    state
}

/// Task `id` of `service` in `slot`, pending, as the orchestrator creates it.
pub fn task(id: &str, service: &Service, slot: u64) -> crate::model::Task {
    use crate::model::{Task, TaskState, TaskStatus};
    Task {
        id: id.to_string(),
        version: 0,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        service_id: service.id.clone(),
        service_name: service.spec.name.clone(),
        slot: Some(slot),
        node_id: None,
        spec: service.spec.task.clone(),
        ports: service.spec.ports.clone(),
        networks: Vec::new(),
        service_version: service.version,
        desired_state: TaskState::Running,
        status: TaskStatus::new(TaskState::Pending, Timestamp(0), "waiting to be scheduled"),
    }
}
