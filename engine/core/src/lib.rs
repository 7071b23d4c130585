//! The heart of essaim: the cluster model, the replicated state machine that every manager
//! applies in Raft log order, and (as the project grows) the pure decision logic of the control
//! loops. Nothing here touches sockets, files or clocks: time comes in with each request, so the
//! whole crate is deterministic and unit-tested fast.
//!
//! # Layout
//! - [`model`]: nodes, services, tasks, networks and the cluster object, with their specs and states;
//!   the leases of cluster-wide locks.
//! - [`command`]: the changes a Raft entry carries, batched into one [`command::Request`].
//! - [`state`]: [`state::ClusterState`], which applies requests, enforces versions, the
//!   forward-only task states and the lock rules, and answers lookups by name, ID or ID prefix.
//! - [`event`]: the change events a commit produces, in commit order, for watchers.
//! - [`error`]: what can go wrong when applying or looking up.
//! - [`suggest`]: "did you mean": the known name closest to a mistyped one.
//! - [`time`]: timestamps and durations as they travel in the model.
//! - [`units`]: memory sizes, CPUs, ports and KEY=VALUE pairs as users type them.
//! - [`orchestrator`]: what a service needs now: tasks to create, replace or shut down.
//! - [`scheduler`]: where tasks go: node filters, constraints, spread, and why a task waits.
//! - [`updater`]: rolling updates and rollbacks: which outdated tasks to replace now, in
//!   batches, and where the update stands.
//! - [`liveness`]: what the leader heard from each node, and the node status changes that
//!   follow (down after a silence, ready on a report).
//! - [`voters`]: the Raft voters kept in line with the managers, and the quorum check.
//! - [`allocator`]: networks' subnets and VXLAN ids, task addresses and services' virtual
//!   IPs.
//! - [`ca_rotation`]: a CA rotation's stages, and when the next may start.

pub mod allocator;
pub mod ca_rotation;
pub mod command;
pub mod error;
pub mod event;
pub mod liveness;
pub mod model;
pub mod netmap;
pub mod orchestrator;
pub mod scheduler;
pub mod state;
pub mod suggest;
pub mod template;
pub mod time;
pub mod units;
pub mod updater;
pub mod voters;

#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use command::{Command, Request, Response};
pub use error::{LookupError, StateError};
pub use event::{Change, Event};
pub use model::is_current;
pub use state::ClusterState;
pub use time::Timestamp;
