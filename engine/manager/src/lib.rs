//! The manager side of essaim, and the node runtime every `essaimd` runs: Raft storage and
//! network, the control API, joining and leaving, heartbeats and the leader's duties.
//!
//! # Layout
//! - [`raft`]: type configuration, durable log store (redb), state machine, gRPC network.
//! - [`node`]: the node: answers requests about itself, passes the rest to the leader.
//! - [`swarm`]: a node's membership while it lasts: Raft instance, applied state, quorum-aware
//!   writes and reads.
//! - [`leader`]: what the leader does with control requests, joins and heartbeats.
//! - [`health`]: the leader's duties: node up/down from heartbeats, Raft membership from roles.
//! - [`orchestration`]: the leader's loop that keeps services' tasks created and placed.
//! - [`dispatcher`]: the leader's side of the nodes' task sessions: tasks out, status in.
//! - [`usage`]: the CPU and memory each running task uses, as its node last sampled them.
//! - [`sim_nodes`]: many simulated worker nodes in one process, for scale tests.
//! - [`services_api`]: the leader's answers to service and task requests.
//! - [`locks_api`]: the leader's answers to lock requests: cluster-wide leases.
//! - [`logs`]: `service logs`, gathered from every node that runs the service's tasks.
//! - [`agent`]: the heartbeat every member sends to the leader.
//! - [`election`]: our leader failure detector, quicker and steadier than openraft 0.9's timer.
//! - [`services`]: the gRPC services on the cluster port and the local socket.
//! - [`authz`]: who may call what on the cluster port, by certificate and cluster state.
//! - [`ca`]: the cluster CA: certificates from requests, join tokens derived from the CA key.
//! - [`identity`]: the node's IDs and swarm file; ID generation.
//! - [`tokens`]: join tokens.

pub mod agent;
pub mod authz;
pub mod ca;
pub mod dispatcher;
pub mod election;
pub mod health;
pub mod identity;
pub mod leader;
pub mod locks_api;
pub mod logs;
pub mod node;
pub mod orchestration;
pub mod raft;
pub mod services;
pub mod services_api;
pub mod sim_nodes;
pub mod swarm;
pub mod tokens;
pub mod usage;

pub use node::{Node, NodeConfig};
