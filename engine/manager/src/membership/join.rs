//! What the leader does when nodes come and go: a join admitted by its token, a leave, a
//! heartbeat recorded and answered. Every other manager passes joins and leaves here
//! unchanged; heartbeats that reach a follower are told where the leader is.

use essaim_api::pb::{HeartbeatResponse, JoinRequest, JoinResponse};
use essaim_api::tls::{self, CertRole};
use essaim_api::ControlError;
use essaim_core::liveness::NodeTrust;
use essaim_core::model::{
    Availability, Node, NodeDescription, NodeSpec, NodeState, NodeStatus, Role,
};
use essaim_core::Command;

use crate::identity::{new_object_id, new_raft_id, RaftId};
use crate::membership::{voters, Membership};
use crate::replica::initialized;
use crate::security::ca;
use crate::security::renewal::{cert_role, signing_fingerprint};
use crate::security::tokens::{same_secret, JoinToken};

impl Membership {
    /// Admits a node that shows a valid token, and signs its certificate request.
    ///
    /// # Errors
    /// A malformed token, a token for another cluster, a wrong (perhaps rotated) secret, or a bad
    /// certificate request.
    pub async fn join(&self, request: JoinRequest) -> Result<JoinResponse, ControlError> {
        let presented = JoinToken::parse(&request.token)?;
        // The token is checked before anything costs a round trip to the other managers: guessing
        // secrets must stay cheap for us. The write below goes through Raft all the same.
        let (cluster, role) = {
            let state = self.replica.state();
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
            ingress: None,
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
                    generic: generic_counts(&request.generic_resources)?,
                },
                runtime: request.runtime,
            },
            status: NodeStatus {
                state: NodeState::Unknown,
                message: "joining".into(),
            },
        };
        self.replica
            .write_one(Command::AddNode { node: node.clone() })
            .await?;
        // The node just spoke to us: its heartbeats get their full window to start.
        self.liveness.record(&node.id);
        tracing::info!(node = %node.id, hostname = %node.description.hostname, %role, "node joined");
        let mut manager_addrs = self.replica.manager_addrs_from_state();
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
            // Over this TLS session only: a manager needs it to seal and open secrets.
            data_key: if role == Role::Manager {
                self.replica.data_key().export().unwrap_or_default()
            } else {
                Vec::new()
            },
        })
    }

    /// A node leaves: a worker is marked down; a manager also leaves the Raft vote.
    ///
    /// # Errors
    /// The node is unknown, or its leaving would cost the managers their quorum (unless `force`).
    pub async fn leave(&self, node_id: &str, force: bool) -> Result<(), ControlError> {
        self.replica.linearize().await?;
        let node = self.replica.state().node(node_id)?.clone();
        let is_manager =
            node.spec.role == Role::Manager || self.replica.voters().contains(&node.raft_id);
        if is_manager && !force {
            self.check_quorum_without(
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
        self.liveness.forget(&node.id);
        for result in self.replica.write(commands).await?.results {
            result?;
        }
        if is_manager {
            self.voters.reconcile(&self.replica, &self.liveness).await?;
        }
        Ok(())
    }

    /// Records a heartbeat, and tells the node what its certificate should say.
    ///
    /// # Errors
    /// The node is not (or no longer) part of the swarm.
    pub fn heartbeat(
        &self,
        node_id: &str,
        cert: CertRole,
        trust: NodeTrust,
    ) -> Result<HeartbeatResponse, ControlError> {
        let (needs_attention, period_ms, role, cert_expiry_ms, signing_ca_fingerprint, trusted) = {
            let state = self.replica.state();
            let node = state.node_by_id(node_id).ok_or_else(|| {
                ControlError::NotFound(format!(
                    "node {node_id} is not part of this swarm (it was removed); make it leave \
                     with 'essaim swarm leave --force' and join again"
                ))
            })?;
            let attention = node.status.state != NodeState::Ready
                || (node.spec.role == Role::Manager)
                    != self.replica.voters().contains(&node.raft_id);
            let cluster = initialized(&state)?;
            let signing_ca = signing_fingerprint(cluster);
            (
                attention,
                cluster.config.heartbeat_period_ms,
                node.spec.role,
                cluster.config.cert_expiry_ms,
                signing_ca,
                tls::roots_fingerprint(&cluster.trusted_roots_pem()),
            )
        };
        self.liveness.record_heartbeat(node_id, cert);
        self.liveness.record_trust(node_id, trust);
        if needs_attention {
            self.liveness.wake();
        }
        Ok(HeartbeatResponse {
            accepted: true,
            leader_addr: self.replica.addr.clone(),
            manager_addrs: self.replica.manager_addrs_from_state(),
            period_ms,
            role: role.to_string(),
            cert_expiry_ms,
            signing_ca_fingerprint,
            trusted_roots_fingerprint: trusted,
        })
    }

    /// Refuses to take a manager out of the vote when the managers left would not make a
    /// quorum among themselves.
    ///
    /// # Errors
    /// The removal would leave the cluster without quorum, or without managers at all.
    pub fn check_quorum_without(
        &self,
        leaving: RaftId,
        action: &str,
        force_available: bool,
    ) -> Result<(), ControlError> {
        voters::check_quorum_without(
            &self.replica,
            &self.liveness,
            leaving,
            action,
            force_available,
        )
    }
}

/// `KIND=COUNT` entries of a join request.
fn generic_counts(
    entries: &[String],
) -> Result<std::collections::BTreeMap<String, u64>, ControlError> {
    entries
        .iter()
        .map(|entry| {
            let parsed = entry.split_once('=').and_then(|(kind, count)| {
                essaim_core::model::check_generic_kind(kind).ok()?;
                Some((kind.to_string(), count.parse::<u64>().ok()?))
            });
            parsed.ok_or_else(|| {
                ControlError::InvalidArgument(format!(
                    "generic resource {entry:?}: expected KIND=COUNT"
                ))
            })
        })
        .collect()
}
