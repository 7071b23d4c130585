//! What the leader does with the requests that need the whole cluster: control API calls,
//! joins and heartbeats. Every other manager passes these here unchanged.

use std::time::{Duration, Instant};

use essaim_api::control::{ManagerStatus, NodeView, Reachability};
use essaim_api::pb::{HeartbeatResponse, JoinRequest, JoinResponse};
use essaim_api::{ControlError, ControlReply, ControlRequest};
use essaim_core::model::{
    Availability, Node, NodeDescription, NodeSpec, NodeState, NodeStatus, Role,
};
use essaim_core::Command;

use crate::health::{self, check_quorum_without, down_after};
use crate::identity::{new_object_id, new_raft_id};
use crate::swarm::Swarm;
use crate::tokens::{cluster_digest, same_secret, JoinToken};

/// How long `node promote` or `demote` waits for the Raft membership to follow.
const ROLE_CHANGE_WAIT: Duration = Duration::from_secs(10);

/// Answers a control request that needs the cluster. This node must be the leader.
///
/// # Errors
/// Whatever makes the request impossible, in words the user can act on.
pub async fn handle(swarm: &Swarm, request: ControlRequest) -> Result<ControlReply, ControlError> {
    match request {
        ControlRequest::JoinToken { role, rotate } => join_token(swarm, role, rotate).await,
        ControlRequest::SwarmInspect => {
            swarm.linearize().await?;
            let cluster = swarm.state().cluster.clone();
            cluster.map(ControlReply::Swarm).ok_or_else(|| {
                ControlError::FailedPrecondition("the swarm is not initialized".into())
            })
        }
        ControlRequest::NodeList => {
            swarm.linearize().await?;
            Ok(ControlReply::Nodes(node_views(swarm)))
        }
        ControlRequest::NodeInspect { node } => {
            swarm.linearize().await?;
            let id = swarm.state().node(&node)?.id.clone();
            node_views(swarm)
                .into_iter()
                .find(|v| v.node.id == id)
                .map(ControlReply::Node)
                .ok_or_else(|| ControlError::NotFound(format!("node {node:?} not found")))
        }
        ControlRequest::NodeUpdate {
            node,
            expected_version,
            availability,
            role,
            label_add,
            label_rm,
        } => {
            swarm.linearize().await?;
            let (id, raft_id, mut spec, version) = {
                let state = swarm.state();
                let found = state.node(&node)?;
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
            spec.labels.extend(label_add);
            if old_role == Role::Manager && spec.role == Role::Worker {
                check_quorum_without(swarm, raft_id, &format!("demote {node}"))?;
            }
            swarm
                .write_one(Command::UpdateNodeSpec {
                    id: id.clone(),
                    expected_version: Some(expected_version.unwrap_or(version)),
                    spec: spec.clone(),
                })
                .await?;
            if old_role != spec.role {
                wait_for_role(swarm, raft_id, spec.role).await;
            }
            node_views(swarm)
                .into_iter()
                .find(|v| v.node.id == id)
                .map(ControlReply::Node)
                .ok_or_else(|| {
                    ControlError::NotFound(format!("node {node:?} was removed meanwhile"))
                })
        }
        ControlRequest::NodeRemove { node, force } => {
            swarm.linearize().await?;
            let found = swarm.state().node(&node)?.clone();
            if found.spec.role == Role::Manager || swarm.voters().contains(&found.raft_id) {
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
                .write_one(Command::RemoveNode {
                    id: found.id,
                    expected_version: Some(found.version),
                })
                .await?;
            Ok(ControlReply::Done)
        }
        ControlRequest::NodeLeave { node_id, force } => leave(swarm, &node_id, force).await,
        ControlRequest::Info
        | ControlRequest::SwarmInit { .. }
        | ControlRequest::SwarmJoin { .. }
        | ControlRequest::SwarmLeave { .. } => Err(ControlError::InvalidArgument(
            "this request is answered by the node itself, not the leader".into(),
        )),
    }
}

async fn join_token(swarm: &Swarm, role: Role, rotate: bool) -> Result<ControlReply, ControlError> {
    swarm.linearize().await?;
    let (cluster_id, mut token) = {
        let state = swarm.state();
        let cluster = state.cluster.as_ref().ok_or_else(|| {
            ControlError::FailedPrecondition("the swarm is not initialized".into())
        })?;
        let token = match role {
            Role::Worker => cluster.join_tokens.worker.clone(),
            Role::Manager => cluster.join_tokens.manager.clone(),
        };
        (cluster.id.clone(), token)
    };
    if rotate {
        token = JoinToken::generate(&cluster_digest(&cluster_id));
        swarm
            .write_one(Command::SetJoinToken {
                role,
                token: token.clone(),
            })
            .await?;
        tracing::info!(%role, "join token rotated");
    }
    Ok(ControlReply::JoinToken {
        role,
        token,
        manager_addr: swarm.addr.clone(),
    })
}

/// A node leaves: a worker is marked down; a manager also leaves the Raft vote.
async fn leave(swarm: &Swarm, node_id: &str, force: bool) -> Result<ControlReply, ControlError> {
    swarm.linearize().await?;
    let node = swarm.state().node(node_id)?.clone();
    let is_manager = node.spec.role == Role::Manager || swarm.voters().contains(&node.raft_id);
    if is_manager && !force {
        check_quorum_without(
            swarm,
            node.raft_id,
            &format!("let manager {} leave", node.description.hostname),
        )?;
    }
    let mut commands = vec![Command::SetNodeStatus {
        id: node.id.clone(),
        status: NodeStatus {
            state: NodeState::Down,
            message: "node left the swarm".into(),
        },
    }];
    if is_manager {
        let mut spec = node.spec.clone();
        spec.role = Role::Worker;
        commands.push(Command::UpdateNodeSpec {
            id: node.id.clone(),
            expected_version: None,
            spec,
        });
    }
    swarm.sessions.forget(&node.id);
    for result in swarm.write(commands).await?.results {
        result?;
    }
    if is_manager {
        health::reconcile_membership(swarm).await?;
    }
    Ok(ControlReply::Done)
}

/// Waits, for a while, until the Raft membership reflects a promotion or demotion, so the
/// command returns once the change is real. The leader's duties finish it regardless.
async fn wait_for_role(swarm: &Swarm, raft_id: u64, role: Role) {
    swarm.wake.notify_one();
    let deadline = Instant::now() + ROLE_CHANGE_WAIT;
    while Instant::now() < deadline {
        let is_voter = swarm.voters().contains(&raft_id);
        if is_voter == (role == Role::Manager) {
            return;
        }
        if role == Role::Worker {
            // Demotion needs no heartbeat from the node: do it now.
            if let Err(e) = health::reconcile_membership(swarm).await {
                tracing::warn!("demotion deferred: {e}");
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every node with its manager status, as `node ls` shows them.
pub fn node_views(swarm: &Swarm) -> Vec<NodeView> {
    let voters = swarm.voters();
    let leader_id = swarm.raft().metrics().borrow().current_leader;
    let window = down_after(swarm);
    let now = Instant::now();
    let state = swarm.state();
    state
        .nodes()
        .map(|node| {
            let manager_status = voters.contains(&node.raft_id).then(|| {
                let leader = Some(node.raft_id) == leader_id;
                let reachable = leader || swarm.sessions.is_alive(&node.id, window, now);
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

/// Admits a node that shows a valid token.
///
/// # Errors
/// A malformed token, a token for another cluster, or a wrong (perhaps rotated) secret.
pub async fn join(swarm: &Swarm, request: JoinRequest) -> Result<JoinResponse, ControlError> {
    let presented = JoinToken::parse(&request.token)?;
    swarm.linearize().await?;
    let (cluster_id, role) = {
        let state = swarm.state();
        let cluster = state.cluster.as_ref().ok_or_else(|| {
            ControlError::FailedPrecondition("the swarm is not initialized".into())
        })?;
        if presented.digest != cluster_digest(&cluster.id) {
            tracing::warn!(hostname = %request.hostname, addr = %request.addr, "join refused: token for another cluster");
            return Err(ControlError::PermissionDenied(
                "this join token belongs to another cluster; get the token from a manager of \
                 the cluster you want to join ('essaim swarm join-token worker')"
                    .into(),
            ));
        }
        let secret_of = |token: &str| {
            JoinToken::parse(token)
                .map(|t| t.secret)
                .unwrap_or_default()
        };
        let role = if same_secret(&presented.secret, &secret_of(&cluster.join_tokens.worker)) {
            Role::Worker
        } else if same_secret(&presented.secret, &secret_of(&cluster.join_tokens.manager)) {
            Role::Manager
        } else {
            tracing::warn!(hostname = %request.hostname, addr = %request.addr, "join refused: invalid or rotated token");
            return Err(ControlError::PermissionDenied(
                "invalid join token: it matches neither the current worker nor manager token \
                 (it may have been rotated); ask a manager for the current one"
                    .into(),
            ));
        };
        (cluster.id.clone(), role)
    };
    if request.addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(ControlError::InvalidArgument(format!(
            "invalid advertise address {:?}: expected IP:PORT",
            request.addr
        )));
    }
    let node = Node {
        id: new_object_id(),
        version: 0,
        created_at: Default::default(),
        updated_at: Default::default(),
        raft_id: new_raft_id(),
        spec: NodeSpec {
            role,
            availability: Availability::Active,
            labels: Default::default(),
        },
        description: NodeDescription {
            hostname: request.hostname,
            addr: request.addr,
            os: request.os,
            arch: request.arch,
        },
        status: NodeStatus {
            state: NodeState::Unknown,
            message: "joining".into(),
        },
    };
    swarm
        .write_one(Command::AddNode { node: node.clone() })
        .await?;
    // The node just spoke to us: its heartbeats get their full window to start.
    swarm.sessions.record(&node.id, Instant::now());
    tracing::info!(node = %node.id, hostname = %node.description.hostname, %role, "node joined");
    let mut manager_addrs = swarm.manager_addrs_from_state();
    if role == Role::Manager {
        manager_addrs.push(node.description.addr.clone());
    }
    Ok(JoinResponse {
        cluster_id,
        node_id: node.id,
        raft_id: node.raft_id,
        role: role.to_string(),
        manager_addrs,
    })
}

/// Records a heartbeat.
///
/// # Errors
/// The node is not (or no longer) part of the swarm.
pub fn heartbeat(swarm: &Swarm, node_id: &str) -> Result<HeartbeatResponse, ControlError> {
    let (needs_attention, period_ms) = {
        let state = swarm.state();
        let node = state.node_by_id(node_id).ok_or_else(|| {
            ControlError::NotFound(format!(
                "node {node_id} is not part of this swarm (it was removed); make it leave \
                 with 'essaim swarm leave --force' and join again"
            ))
        })?;
        let attention = node.status.state != NodeState::Ready
            || (node.spec.role == Role::Manager) != swarm.voters().contains(&node.raft_id);
        let period = state
            .cluster
            .as_ref()
            .map(|c| c.config.heartbeat_period_ms)
            .unwrap_or(500);
        (attention, period)
    };
    swarm.sessions.record(node_id, Instant::now());
    if needs_attention {
        swarm.wake.notify_one();
    }
    Ok(HeartbeatResponse {
        accepted: true,
        leader_addr: swarm.addr.clone(),
        manager_addrs: swarm.manager_addrs_from_state(),
        period_ms,
    })
}
