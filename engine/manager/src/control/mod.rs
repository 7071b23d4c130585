//! What the leader does with the requests that need the whole cluster: control API calls,
//! joins and heartbeats. Every other manager passes these here unchanged.

use std::time::{Duration, Instant};

use essaim_api::control::{ManagerStatus, NodeView, Reachability, SwarmView};
use essaim_api::pb::{HeartbeatResponse, JoinRequest, JoinResponse, RenewResponse};
use essaim_api::tls::{self, CertRole};
use essaim_api::{ControlError, ControlReply, ControlRequest};
use essaim_core::model::{
    Availability, CaRotation, Cluster, Node, NodeDescription, NodeSpec, NodeState, NodeStatus, Role,
};
use essaim_core::{ClusterState, Command};

use crate::health::{self, check_quorum_without, down_after, NodeTrust};
use crate::identity::{new_object_id, new_raft_id};
use crate::swarm::Swarm;
use crate::tokens::{same_secret, JoinToken};
use crate::{ca, locks_api, services_api};

/// How long `node promote` or `demote` waits for the Raft membership to follow.
const ROLE_CHANGE_WAIT: Duration = Duration::from_secs(10);
/// The shortest certificate lifetime `swarm update --cert-expiry` accepts.
const MIN_CERT_EXPIRY: Duration = Duration::from_secs(4);

/// Answers a control request that needs the cluster. This node must be the leader.
///
/// # Errors
/// Whatever makes the request impossible, in words the user can act on.
pub async fn handle(swarm: &Swarm, request: ControlRequest) -> Result<ControlReply, ControlError> {
    match request {
        ControlRequest::JoinToken { role, rotate } => join_token(swarm, role, rotate).await,
        ControlRequest::SwarmInspect => {
            swarm.linearize().await?;
            let view = swarm.state().cluster.as_ref().map(SwarmView::of);
            view.map(ControlReply::Swarm).ok_or_else(|| {
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
            // Without a version from the caller, a change made meanwhile by someone else is
            // merged with rather than refused: read again and apply the same edit.
            let mut attempts_left = if expected_version.is_none() { 20 } else { 0 };
            let (id, raft_id, spec, old_role) = loop {
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
                spec.labels
                    .extend(label_add.iter().map(|(k, v)| (k.clone(), v.clone())));
                if old_role == Role::Manager && spec.role == Role::Worker {
                    check_quorum_without(swarm, raft_id, &format!("demote {node}"), false)?;
                }
                let written = swarm
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
        ControlRequest::SwarmUpdate {
            cert_expiry_ms,
            heartbeat_period_ms,
            task_history_limit,
        } => {
            swarm.linearize().await?;
            let (mut config, version) = {
                let state = swarm.state();
                let cluster = initialized(&state)?;
                (cluster.config.clone(), cluster.version)
            };
            if let Some(ms) = cert_expiry_ms {
                if ms < MIN_CERT_EXPIRY.as_millis() as u64 {
                    return Err(ControlError::InvalidArgument(format!(
                        "--cert-expiry must be at least {}s: nodes renew at half the lifetime",
                        MIN_CERT_EXPIRY.as_secs()
                    )));
                }
                config.cert_expiry_ms = ms;
            }
            if let Some(ms) = heartbeat_period_ms {
                if ms == 0 {
                    return Err(ControlError::InvalidArgument(
                        "--dispatcher-heartbeat must be longer than 0".into(),
                    ));
                }
                config.heartbeat_period_ms = ms;
            }
            if let Some(limit) = task_history_limit {
                config.task_history_limit = limit;
            }
            swarm
                .write_one(Command::UpdateClusterConfig {
                    expected_version: Some(version),
                    config,
                })
                .await?;
            let view = swarm.state().cluster.as_ref().map(SwarmView::of);
            view.map(ControlReply::Swarm).ok_or_else(|| {
                ControlError::FailedPrecondition("the swarm is not initialized".into())
            })
        }
        ControlRequest::RotateCa => {
            swarm.linearize().await?;
            let (cluster_id, version, root_ca, join_tokens) = {
                let state = swarm.state();
                let cluster = initialized(&state)?;
                if let Some(rotation) = &cluster.ca_rotation {
                    return Err(ControlError::FailedPrecondition(format!(
                        "a CA rotation is already under way ({}); wait for it to finish",
                        rotation.stage()
                    )));
                }
                (
                    cluster.id.clone(),
                    cluster.version,
                    cluster.root_ca.clone(),
                    cluster.join_tokens.clone(),
                )
            };
            let next = ca::create_root(&cluster_id)?;
            swarm
                .write_one(Command::UpdateCa {
                    expected_version: Some(version),
                    root_ca,
                    ca_rotation: Some(CaRotation::Trusting { next }),
                    join_tokens,
                })
                .await?;
            tracing::info!("CA rotation started: nodes learn to trust the new CA");
            swarm.wake.notify_one();
            let view = swarm.state().cluster.as_ref().map(SwarmView::of);
            view.map(ControlReply::Swarm).ok_or_else(|| {
                ControlError::FailedPrecondition("the swarm is not initialized".into())
            })
        }
        ControlRequest::IssueClientCert { name, csr_pem } => {
            if name.trim().is_empty() || name.contains(['/', '\\', '\n']) {
                return Err(ControlError::InvalidArgument(format!(
                    "invalid client name {name:?}: use letters, digits, dots and dashes"
                )));
            }
            swarm.linearize().await?;
            let cluster = initialized(&swarm.state())?.clone();
            let (certificate_pem, trusted) = ca::issue(
                &cluster,
                &csr_pem,
                &format!("client-{name}"),
                CertRole::Client,
            )?;
            tracing::info!(client = %name, "client certificate issued");
            Ok(ControlReply::ClientCert {
                certificate_pem,
                roots_pem: trusted,
                manager_addr: swarm.addr.clone(),
            })
        }
        ControlRequest::ServiceCreate { spec } => services_api::create(swarm, spec).await,
        ControlRequest::ServiceList => services_api::list(swarm).await,
        ControlRequest::ServiceInspect { service } => services_api::inspect(swarm, &service).await,
        ControlRequest::ServiceScale { service, replicas } => {
            services_api::scale(swarm, &service, replicas).await
        }
        ControlRequest::ServiceUpdate {
            service,
            expected_version,
            spec,
        } => services_api::update(swarm, &service, expected_version, spec).await,
        ControlRequest::ServiceRollback {
            service,
            expected_version,
        } => services_api::rollback(swarm, &service, expected_version).await,
        ControlRequest::ServiceUpdateContinue {
            service,
            pause_after,
        } => services_api::continue_update(swarm, &service, pause_after).await,
        ControlRequest::ServiceRemove { service } => services_api::remove(swarm, &service).await,
        ControlRequest::TaskList { service, node } => {
            services_api::tasks(swarm, service.as_deref(), node.as_deref()).await
        }
        ControlRequest::LockAcquire {
            name,
            holder,
            ttl_ms,
        } => locks_api::acquire(swarm, name, holder, ttl_ms).await,
        ControlRequest::LockRenew {
            name,
            holder,
            ttl_ms,
        } => locks_api::renew(swarm, name, holder, ttl_ms).await,
        ControlRequest::LockRelease { name, holder } => {
            locks_api::release(swarm, name, holder).await
        }
        ControlRequest::LockList => locks_api::list(swarm).await,
        ControlRequest::Info
        | ControlRequest::SwarmInit { .. }
        | ControlRequest::SwarmJoin { .. }
        | ControlRequest::SwarmLeave { .. }
        | ControlRequest::WaitChange { .. } => Err(ControlError::InvalidArgument(
            "this request is answered by the node itself, not the leader".into(),
        )),
    }
}

fn initialized(state: &ClusterState) -> Result<&Cluster, ControlError> {
    state
        .cluster
        .as_ref()
        .ok_or_else(|| ControlError::FailedPrecondition("the swarm is not initialized".into()))
}

async fn join_token(swarm: &Swarm, role: Role, rotate: bool) -> Result<ControlReply, ControlError> {
    swarm.linearize().await?;
    let (root_ca, mut record) = {
        let state = swarm.state();
        let cluster = initialized(&state)?;
        let record = match role {
            Role::Worker => cluster.join_tokens.worker.clone(),
            Role::Manager => cluster.join_tokens.manager.clone(),
        };
        (cluster.root_ca.clone(), record)
    };
    if rotate {
        record = ca::new_token(&root_ca, role)?;
        swarm
            .write_one(Command::SetJoinToken {
                role,
                token: record.clone(),
            })
            .await?;
        tracing::info!(%role, "join token rotated");
    }
    Ok(ControlReply::JoinToken {
        role,
        token: ca::join_token(&root_ca, role, &record)?,
        manager_addr: swarm.addr.clone(),
    })
}

/// A node leaves: a worker is marked down; a manager also leaves the Raft vote.
///
/// # Errors
/// The node is unknown, or its leaving would cost the managers their quorum (unless `force`).
pub async fn leave(swarm: &Swarm, node_id: &str, force: bool) -> Result<(), ControlError> {
    swarm.linearize().await?;
    let node = swarm.state().node(node_id)?.clone();
    let is_manager = node.spec.role == Role::Manager || swarm.voters().contains(&node.raft_id);
    if is_manager && !force {
        check_quorum_without(
            swarm,
            node.raft_id,
            &format!("let manager {} leave", node.description.hostname),
            true,
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
    Ok(())
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

/// Admits a node that shows a valid token, and signs its certificate request.
///
/// # Errors
/// A malformed token, a token for another cluster, a wrong (perhaps rotated) secret, or a bad
/// certificate request.
pub async fn join(swarm: &Swarm, request: JoinRequest) -> Result<JoinResponse, ControlError> {
    let presented = JoinToken::parse(&request.token)?;
    // The token is checked before anything costs a round trip to the other managers: guessing
    // secrets must stay cheap for us. The write below goes through Raft all the same.
    let (cluster, role) = {
        let state = swarm.state();
        let cluster = initialized(&state)?;
        if presented.digest != ca::token_digest(&cluster.root_ca)? {
            tracing::warn!(hostname = %request.hostname, addr = %request.addr, "join refused: token for another cluster");
            return Err(ControlError::PermissionDenied(
                "this join token belongs to another cluster; get the token from a manager of \
                 the cluster you want to join ('essaim swarm join-token worker')"
                    .into(),
            ));
        }
        let presented_hash = ca::secret_hash(&presented.secret);
        let role = if same_secret(&presented_hash, &cluster.join_tokens.worker.secret_sha256) {
            Role::Worker
        } else if same_secret(&presented_hash, &cluster.join_tokens.manager.secret_sha256) {
            Role::Manager
        } else {
            tracing::warn!(hostname = %request.hostname, addr = %request.addr, "join refused: invalid or rotated token");
            return Err(ControlError::PermissionDenied(
                "invalid join token: it matches neither the current worker nor manager token \
                 (it may have been rotated); ask a manager for the current one"
                    .into(),
            ));
        };
        (cluster.clone(), role)
    };
    if request.addr.parse::<std::net::SocketAddr>().is_err() {
        return Err(ControlError::InvalidArgument(format!(
            "invalid advertise address {:?}: expected IP:PORT",
            request.addr
        )));
    }
    let node_id = new_object_id();
    let (certificate_pem, trusted) =
        ca::issue(&cluster, &request.csr_pem, &node_id, cert_role(role))?;
    let node = Node {
        id: node_id,
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
            resources: essaim_core::model::NodeResources {
                nano_cpus: request.nano_cpus,
                memory_bytes: request.memory_bytes,
            },
            runtime: request.runtime,
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
        cluster_id: cluster.id,
        node_id: node.id,
        raft_id: node.raft_id,
        role: role.to_string(),
        manager_addrs,
        certificate_pem,
        roots_pem: trusted,
    })
}

/// The certificate role of a node role.
pub fn cert_role(role: Role) -> CertRole {
    match role {
        Role::Manager => CertRole::Manager,
        Role::Worker => CertRole::Worker,
    }
}

/// Signs a new certificate for a node, with the role the cluster state gives it now.
///
/// # Errors
/// The node is unknown, or its request is malformed.
pub async fn renew(
    swarm: &Swarm,
    node_id: &str,
    csr_pem: &str,
) -> Result<RenewResponse, ControlError> {
    swarm.linearize().await?;
    let (role, cluster) = {
        let state = swarm.state();
        let cluster = initialized(&state)?.clone();
        let node = state
            .node_by_id(node_id)
            .ok_or_else(|| ControlError::NotFound(format!("node {node_id} not found")))?;
        (node.spec.role, cluster)
    };
    let (certificate_pem, trusted) = ca::issue(&cluster, csr_pem, node_id, cert_role(role))?;
    tracing::info!(node = %node_id, %role, "certificate renewed");
    Ok(RenewResponse {
        certificate_pem,
        roots_pem: trusted,
    })
}

/// Records a heartbeat, and tells the node what its certificate should say.
///
/// # Errors
/// The node is not (or no longer) part of the swarm.
pub fn heartbeat(
    swarm: &Swarm,
    node_id: &str,
    cert: CertRole,
    trust: NodeTrust,
) -> Result<HeartbeatResponse, ControlError> {
    let (needs_attention, period_ms, role, cert_expiry_ms, signing_ca_fingerprint, trusted) = {
        let state = swarm.state();
        let node = state.node_by_id(node_id).ok_or_else(|| {
            ControlError::NotFound(format!(
                "node {node_id} is not part of this swarm (it was removed); make it leave \
                 with 'essaim swarm leave --force' and join again"
            ))
        })?;
        let attention = node.status.state != NodeState::Ready
            || (node.spec.role == Role::Manager) != swarm.voters().contains(&node.raft_id);
        let cluster = initialized(&state)?;
        let signing_ca = tls::certs_from_pem(&cluster.root_ca.cert_pem)
            .ok()
            .and_then(|certs| certs.first().map(|c| tls::fingerprint(c)))
            .unwrap_or_default();
        (
            attention,
            cluster.config.heartbeat_period_ms,
            node.spec.role,
            cluster.config.cert_expiry_ms,
            signing_ca,
            tls::roots_fingerprint(&cluster.trusted_roots_pem()),
        )
    };
    swarm
        .sessions
        .record_heartbeat(node_id, Instant::now(), cert);
    swarm.sessions.record_trust(node_id, trust);
    if needs_attention {
        swarm.wake.notify_one();
    }
    Ok(HeartbeatResponse {
        accepted: true,
        leader_addr: swarm.addr.clone(),
        manager_addrs: swarm.manager_addrs_from_state(),
        period_ms,
        role: role.to_string(),
        cert_expiry_ms,
        signing_ca_fingerprint,
        trusted_roots_fingerprint: trusted,
    })
}
