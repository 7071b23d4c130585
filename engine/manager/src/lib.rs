//! The manager side of essaim, and the node runtime every `essaimd` runs. Its modules, from
//! the bottom up (each uses only those above it in this list; `scripts/check-import-cycles.py`
//! keeps it so):
//!
//! - [`clock`]: the one clock the manager reads time from.
//! - [`identity`]: the node's IDs and swarm file, its credentials on disk; ID generation.
//! - [`data_key`]: the managers' key that seals secrets before they reach the Raft log.
//! - [`replica`]: Raft (storage, network, election watch) and the applied state: writes,
//!   linearizable reads, who leads and who votes.
//! - [`forward`]: the one path of a request to the leader.
//! - [`liveness`]: what the leader heard from each node during its term.
//! - [`security`]: authorization of every call, the CA and its rotation, join tokens,
//!   certificate renewal.
//! - [`membership`]: joins, leaves, heartbeats, node status, the Raft voters.
//! - [`dispatcher`]: the nodes' task sessions: tasks out, status and usage in.
//! - [`orchestration`]: the leader's loop that keeps services' tasks created and placed.
//! - [`swarm`]: the wiring: builds the parts of a node's membership, runs the member's loops
//!   always and the leader's for each term of leadership.
//! - [`control`]: the control API as the leader answers it.
//! - [`node`]: the node: answers requests about itself, passes the rest to the leader.
//! - [`servers`]: the gRPC services on the cluster port and the local socket.
//! - [`sim_nodes`]: many simulated worker nodes in one process, for scale tests.

pub mod clock;
pub mod control;
pub mod data_key;
pub mod dispatcher;
pub mod forward;
pub mod identity;
pub mod liveness;
pub mod membership;
pub mod node;
pub mod orchestration;
pub mod replica;
pub mod security;
pub mod servers;
pub mod sim_nodes;
pub mod swarm;

pub use node::{Node, NodeConfig};
