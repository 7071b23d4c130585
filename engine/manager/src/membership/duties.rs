//! The leader's loop over the nodes, started when this node becomes leader and stopped when
//! it steps down: nodes marked down or ready as their heartbeats stop or resume, the Raft
//! voters kept in line with the managers, and a CA rotation taken from stage to stage.
//!
//! ```text
//!  node heartbeats and reports --> Liveness (memory)
//!                                      |  every tick, or woken early
//!                                      v
//!           node status changes, batched into one Raft write
//!           role != membership  ->  add_learner + change_membership
//!           CA rotation: next stage once every live node caught up
//! ```

use std::sync::Arc;
use std::time::Duration;

use essaim_api::tls::TlsState;
use essaim_api::ControlError;
use essaim_core::liveness::node_statuses;
use essaim_core::model::NodeState;
use essaim_core::Command;

use crate::liveness::{down_after, millis, Liveness};
use crate::membership::Membership;
use crate::replica::Replica;
use crate::security::rotation;

/// How often the leader looks at its nodes when nothing wakes it earlier.
const TICK: Duration = Duration::from_millis(100);

/// The loop, for one term of leadership. `tls` is this node's own: its trust counts in a CA
/// rotation like every other node's.
pub async fn run(membership: Arc<Membership>, tls: Arc<TlsState>) {
    let Membership {
        replica,
        liveness,
        voters,
    } = &*membership;
    loop {
        if let Err(e) = update_node_statuses(replica, liveness).await {
            tracing::debug!("node status update deferred: {e}");
        }
        if let Err(e) = voters.reconcile(replica, liveness).await {
            tracing::warn!("manager membership change deferred: {e}");
        }
        if let Err(e) = rotation::advance(replica, liveness, &tls).await {
            tracing::warn!("CA rotation step deferred: {e}");
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = liveness.woken() => {}
        }
    }
}

/// Marks nodes down or ready as their heartbeats stop or resume, in one write.
async fn update_node_statuses(replica: &Replica, liveness: &Liveness) -> Result<(), ControlError> {
    // The leader hears itself.
    liveness.record(replica.node_id());
    let changes = {
        let state = replica.state();
        let window = millis(down_after(&state));
        let plan = liveness.read(|heard| node_statuses(&state, heard, window, liveness.now()));
        for command in &plan.commands {
            if let Command::SetNodeStatus { id, status } = command {
                let hostname = state
                    .node_by_id(id.as_str())
                    .map(|n| n.description.hostname.clone())
                    .unwrap_or_default();
                if status.state == NodeState::Down {
                    tracing::warn!(node = %id, %hostname, "node is down: {}", status.message);
                } else {
                    tracing::info!(node = %id, %hostname, "node is ready");
                }
            }
        }
        plan.commands
    };
    if !changes.is_empty() {
        replica.write(changes).await?;
    }
    Ok(())
}
