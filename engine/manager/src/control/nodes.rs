//! `node ls`, `inspect`, `update` (availability, role, labels) and `rm`, as the leader
//! answers them.

use std::time::Duration;

use essaim_api::control::{ManagerStatus, NodeView, Reachability};
use essaim_api::{ControlError, ControlReply};
use essaim_core::model::{Availability, NodeState, Role};
use essaim_core::Command;

use crate::liveness::down_after;
use crate::swarm::Swarm;

/// How long `node promote` or `demote` waits for the Raft membership to follow.
const ROLE_CHANGE_WAIT: Duration = Duration::from_secs(10);

/// # Errors
/// No quorum.
pub async fn list(swarm: &Swarm) -> Result<ControlReply, ControlError> {
    swarm.replica.linearize().await?;
    Ok(ControlReply::Nodes(node_views(swarm)))
}

/// # Errors
/// Unknown node, or no quorum.
pub async fn inspect(swarm: &Swarm, node: &str) -> Result<ControlReply, ControlError> {
    swarm.replica.linearize().await?;
    let id = swarm.replica.state().node(node)?.id.clone();
    node_views(swarm)
        .into_iter()
        .find(|v| v.node.id == id)
        .map(ControlReply::Node)
        .ok_or_else(|| ControlError::NotFound(format!("node {node:?} not found")))
}

/// Changes a node's availability, role or labels. Without `expected_version`, a change made
/// meanwhile by someone else is merged with rather than refused.
///
/// # Errors
/// Unknown node or label, a demotion that would cost the quorum, or a conflict.
pub async fn update(
    swarm: &Swarm,
    node: &str,
    expected_version: Option<u64>,
    availability: Option<Availability>,
    role: Option<Role>,
    label_add: std::collections::BTreeMap<String, String>,
    label_rm: Vec<String>,
) -> Result<ControlReply, ControlError> {
    swarm.replica.before_write().await?;
    // Without a version from the caller, a change made meanwhile by someone else is
    // merged with rather than refused: read again and apply the same edit.
    let mut attempts_left = if expected_version.is_none() { 20 } else { 0 };
    let (id, raft_id, spec, old_role) = loop {
        let (id, raft_id, mut spec, version) = {
            let state = swarm.replica.state();
            let found = state.node(node)?;
            (
                found.id.clone(),
                found.raft_id,
                found.spec.clone(),
                found.version,
            )
        };
        let old_role = spec.role;
        if let Some(availability) = availability {
            spec.availability = availability;
        }
        if let Some(role) = role {
            spec.role = role;
        }
        for key in &label_rm {
            if spec.labels.remove(key).is_none() {
                return Err(ControlError::InvalidArgument(format!(
                    "--label-rm {key}: node {node} has no label {key:?}"
                )));
            }
        }
        spec.labels
            .extend(label_add.iter().map(|(k, v)| (k.clone(), v.clone())));
        if old_role == Role::Manager && spec.role == Role::Worker {
            swarm
                .membership
                .check_quorum_without(raft_id, &format!("demote {node}"), false)?;
        }
        let written = swarm
            .replica
            .write_one(Command::UpdateNodeSpec {
                id: id.clone(),
                expected_version: Some(expected_version.unwrap_or(version)),
                spec: spec.clone(),
            })
            .await;
        match written {
            Ok(_) => break (id, raft_id, spec, old_role),
            Err(ControlError::Conflict(_)) if attempts_left > 0 => attempts_left -= 1,
            Err(e) => return Err(e),
        }
    };
    if old_role != spec.role {
        wait_for_role(swarm, raft_id, spec.role).await;
    }
    node_views(swarm)
        .into_iter()
        .find(|v| v.node.id == id)
        .map(ControlReply::Node)
        .ok_or_else(|| ControlError::NotFound(format!("node {node:?} was removed meanwhile")))
}

/// # Errors
/// Unknown node, a manager, or a node not down (without `force`).
pub async fn remove(swarm: &Swarm, node: &str, force: bool) -> Result<ControlReply, ControlError> {
    swarm.replica.before_write().await?;
    let found = swarm.replica.state().node(node)?.clone();
    if found.spec.role == Role::Manager || swarm.replica.voters().contains(&found.raft_id) {
        return Err(ControlError::FailedPrecondition(format!(
            "node {node} is a manager: demote it first (essaim node demote {node})"
        )));
    }
    if found.status.state != NodeState::Down && !force {
        return Err(ControlError::FailedPrecondition(format!(
            "node {node} is not down and can't be removed; stop it or make it leave \
             first, or use --force"
        )));
    }
    swarm
        .replica
        .write_one(Command::RemoveNode {
            id: found.id,
            expected_version: Some(found.version),
        })
        .await?;
    Ok(ControlReply::Done)
}

/// Waits, for a while, until the Raft membership reflects a promotion or demotion, so the
/// command returns once the change is real. The leader's duties finish it regardless.
async fn wait_for_role(swarm: &Swarm, raft_id: u64, role: Role) {
    swarm.liveness().wake();
    let deadline = tokio::time::Instant::now() + ROLE_CHANGE_WAIT;
    while tokio::time::Instant::now() < deadline {
        let is_voter = swarm.replica.voters().contains(&raft_id);
        if is_voter == (role == Role::Manager) {
            return;
        }
        if role == Role::Worker {
            // Demotion needs no heartbeat from the node: do it now.
            if let Err(e) = swarm
                .membership
                .voters
                .reconcile(&swarm.replica, swarm.liveness())
                .await
            {
                tracing::warn!("demotion deferred: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every node with its manager status, as `node ls` shows them.
pub fn node_views(swarm: &Swarm) -> Vec<NodeView> {
    let voters = swarm.replica.voters();
    let leader_id = swarm.replica.raft().metrics().borrow().current_leader;
    let state = swarm.replica.state();
    let window = down_after(&state);
    state
        .nodes()
        .map(|node| {
            let manager_status = voters.contains(&node.raft_id).then(|| {
                let leader = Some(node.raft_id) == leader_id;
                let reachable = leader || swarm.liveness().is_alive(&node.id, window);
                ManagerStatus {
                    leader,
                    reachability: if reachable {
                        Reachability::Reachable
                    } else {
                        Reachability::Unreachable
                    },
                    addr: node.description.addr.clone(),
                }
            });
            NodeView {
                node: node.clone(),
                manager_status,
            }
        })
        .collect()
}
