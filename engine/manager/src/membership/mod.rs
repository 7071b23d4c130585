//! The nodes of the swarm as the leader keeps them: who joins and leaves, who is alive, who
//! votes; and the heartbeat every member sends.
//!
//! - [`join`]: joins, leaves and heartbeats, as the leader answers them.
//! - [`duties`]: the leader's loop over the nodes: status, voters, CA rotation.
//! - [`voters`]: the Raft voters kept in line with the managers.
//! - [`heartbeats`]: the heartbeat every member sends to the leader.
//! - [`managers`]: the managers this node knows.

use std::sync::Arc;

use crate::liveness::Liveness;
use crate::replica::Replica;

pub mod duties;
pub mod heartbeats;
pub mod join;
pub mod managers;
pub mod voters;

/// The leader's side of membership: the replica to write to, what was heard from the nodes,
/// and the voters' one-at-a-time changes.
pub struct Membership {
    pub replica: Arc<Replica>,
    pub liveness: Arc<Liveness>,
    pub voters: voters::Voters,
}
