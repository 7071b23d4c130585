//! Builders shared by the unit tests: this crate's, and other crates' through the `testing`
//! feature (as a dev-dependency).

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
        ingress: None,
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

mod state_log {
    use super::{cluster, node, service, task};
    use crate::allocator::{allocate, allocate_network, AllocError};
    use crate::command::{Command, Request};
    use crate::error::StateError;
    use crate::model::{
        Network, NetworkAttachmentConfig, NetworkSpec, Service, ServiceMode, Task, TaskSpec,
        TaskState, TaskStatus,
    };
    use crate::state::ClusterState;
    use crate::time::Timestamp;

    /// A cluster state grown entry by entry as a log would, with Swarm's default address pool:
    /// for the tests of what the leader decides about networks.
    pub struct StateLog {
        pub state: ClusterState,
        pub index: u64,
    }

    // Not a Default: a new log already holds the cluster object.
    #[allow(clippy::new_without_default)]
    impl StateLog {
        pub fn new() -> Self {
            let mut log = StateLog {
                state: ClusterState::default(),
                index: 0,
            };
            log.apply(vec![Command::CreateCluster { cluster: cluster() }])
                .expect("cluster");
            log
        }

        pub fn apply(&mut self, commands: Vec<Command>) -> Result<(), StateError> {
            self.index += 1;
            let response = self.state.apply(
                self.index,
                &Request::new(Timestamp(self.index), commands),
                &mut Vec::new(),
            );
            response.results.into_iter().try_for_each(|r| r.map(|_| ()))
        }

        pub fn network(&mut self, name: &str, subnet: Option<&str>) -> Result<Network, AllocError> {
            self.network_with(NetworkSpec {
                name: name.to_string(),
                subnet: subnet.map(|s| s.parse().expect("subnet")),
                ..NetworkSpec::default()
            })
        }

        /// The routing mesh's network, `ingress`.
        pub fn ingress(&mut self) -> Network {
            self.network_with(NetworkSpec {
                name: crate::model::INGRESS_NETWORK.to_string(),
                ingress: true,
                ..NetworkSpec::default()
            })
            .expect("ingress")
        }

        fn network_with(&mut self, spec: NetworkSpec) -> Result<Network, AllocError> {
            let name = spec.name.clone();
            let allocation = allocate_network(&self.state, &spec)?;
            let network = Network {
                id: format!("net-{name}"),
                version: 0,
                created_at: Timestamp(0),
                updated_at: Timestamp(0),
                spec,
                allocation,
            };
            self.apply(vec![Command::CreateNetwork {
                network: network.clone(),
            }])
            .expect("network applies");
            Ok(network)
        }

        /// A service `name` of `replicas` on `networks`, created with its tasks (one per slot)
        /// as an orchestration pass would, and allocated.
        pub fn service(&mut self, name: &str, replicas: u64, networks: &[&str]) -> Service {
            let mut service = service(
                ServiceMode::Replicated { replicas },
                TaskSpec {
                    image: "web".to_string(),
                    networks: networks
                        .iter()
                        .map(|n| NetworkAttachmentConfig {
                            target: n.to_string(),
                            aliases: vec![],
                        })
                        .collect(),
                    ..TaskSpec::default()
                },
            );
            service.id = format!("svc-{name}");
            service.spec.name = name.to_string();
            self.apply(vec![Command::CreateService {
                service: service.clone(),
            }])
            .expect("service applies");
            let mut commands: Vec<Command> = (1..=replicas)
                .map(|slot| Command::CreateTask {
                    task: task(&format!("{name}-{slot}"), &service, slot),
                })
                .collect();
            allocate(&self.state, Timestamp(self.index), &mut commands);
            self.apply(commands).expect("tasks apply");
            self.state
                .service_by_id(&service.id)
                .expect("service")
                .clone()
        }

        pub fn task(&self, id: &str) -> &Task {
            self.state.task_by_id(id).expect("task")
        }

        pub fn pass(&mut self) {
            let mut commands = Vec::new();
            allocate(&self.state, Timestamp(self.index), &mut commands);
            self.apply(commands).expect("allocation applies");
        }

        /// Adds a ready worker `id` whose cluster address is `ip:4242`.
        pub fn node(&mut self, id: &str, ip: &str) {
            let mut node = node(id, id);
            node.description.addr = format!("{ip}:4242");
            self.apply(vec![Command::AddNode { node }])
                .expect("node applies");
        }

        /// Places task `id` on `node_id` and has it report `state`.
        pub fn place(&mut self, id: &str, node_id: &str, state: TaskState) {
            self.apply(vec![
                Command::AssignTask {
                    id: id.to_string(),
                    node_id: node_id.to_string(),
                },
                Command::UpdateTaskStatus {
                    id: id.to_string(),
                    status: TaskStatus::new(state, Timestamp(self.index), ""),
                },
            ])
            .expect("placement applies");
        }
    }
}
pub use state_log::StateLog;
