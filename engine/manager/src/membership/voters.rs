//! The leader's duties towards nodes: it tracks heartbeats in memory (never in Raft), marks a
//! silent node down and a returning one ready, and keeps the Raft membership in line with the
//! nodes' roles (join as manager, promote, demote, leave).
//!
//! ```text
//!  node agents --heartbeat--> leader: Sessions (memory)
//!                                 |  every tick, or woken early
//!                                 v
//!               node status changes, batched into one Raft write
//!               role != membership  ->  add_learner + change_membership
//! ```

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use essaim_api::tls;
use essaim_api::tls::CertRole;
use essaim_api::ControlError;
use essaim_core::model::{CaRotation, JoinTokens, NodeState, NodeStatus, ObjectId, Role};
use essaim_core::Command;
use openraft::BasicNode;

use crate::raft::RaftId;
use crate::swarm::{Leader, Swarm};

/// How a node's status begins while its runtime cannot run tasks.
const RUNTIME_UNAVAILABLE: &str = "runtime unavailable";
/// How often the leader looks at its nodes when nothing wakes it earlier.
const TICK: Duration = Duration::from_millis(100);
/// How long adding a manager may take to copy the log to it before the attempt is given up
/// (and tried again on a later tick).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(15);

/// What a node trusts, and which CA signed its certificate.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeTrust {
    pub roots_fingerprint: String,
    pub issuer_fingerprint: String,
}

impl NodeTrust {
    /// This node's own.
    pub fn of(tls: &essaim_api::tls::TlsState) -> NodeTrust {
        tls.credentials()
            .map(|c| NodeTrust {
                roots_fingerprint: c.roots_fingerprint(),
                issuer_fingerprint: c.issuer_fingerprint().unwrap_or_default(),
            })
            .unwrap_or_default()
    }
}

/// What a node said of its runtime in its last report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeWord {
    Runs,
    /// It cannot run tasks, for this reason (its Docker engine is gone, say).
    Unavailable(String),
}

/// Heartbeats seen while this node leads.
#[derive(Default)]
pub struct Sessions {
    inner: Mutex<SessionTable>,
}

#[derive(Default)]
struct SessionTable {
    last_seen: HashMap<ObjectId, Instant>,
    /// The role in the certificate each node last called with: a promoted node becomes a
    /// voter only once it holds a manager certificate, or other managers would refuse it.
    cert_roles: HashMap<ObjectId, CertRole>,
    /// What each node last said it trusts and which CA signed its certificate: a CA rotation
    /// moves on only when every live node has caught up.
    trust: HashMap<ObjectId, NodeTrust>,
    /// What each node last said of its runtime, since this node leads. A node whose runtime
    /// cannot run tasks counts as down; one down for that leaves it only once it said it runs
    /// again (a new leader has not heard it yet).
    runtimes: HashMap<ObjectId, RuntimeWord>,
    /// When this node last became leader: nodes it has not heard from yet are given until
    /// then plus the down delay, so an election alone never marks nodes down.
    leading_since: Option<Instant>,
}

impl Sessions {
    fn table(&self) -> std::sync::MutexGuard<'_, SessionTable> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn record(&self, node: &str, at: Instant) {
        self.table().last_seen.insert(node.to_string(), at);
    }

    /// Records a heartbeat and the role of the certificate it came with.
    pub fn record_heartbeat(&self, node: &str, at: Instant, cert_role: CertRole) {
        let mut table = self.table();
        table.last_seen.insert(node.to_string(), at);
        table.cert_roles.insert(node.to_string(), cert_role);
    }

    /// Records what a node said of its runtime: `problem` is empty when it can run tasks.
    pub fn record_runtime(&self, node: &str, problem: &str) {
        let word = if problem.is_empty() {
            RuntimeWord::Runs
        } else {
            RuntimeWord::Unavailable(problem.to_string())
        };
        self.table().runtimes.insert(node.to_string(), word);
    }

    pub fn runtime(&self, node: &str) -> Option<RuntimeWord> {
        self.table().runtimes.get(node).cloned()
    }

    pub fn record_trust(&self, node: &str, trust: NodeTrust) {
        self.table().trust.insert(node.to_string(), trust);
    }

    pub fn trust(&self, node: &str) -> Option<NodeTrust> {
        self.table().trust.get(node).cloned()
    }

    pub fn cert_role(&self, node: &str) -> Option<CertRole> {
        self.table().cert_roles.get(node).copied()
    }

    /// Forgets a node that left, so its last heartbeat cannot make it look alive.
    pub fn forget(&self, node: &str) {
        let mut table = self.table();
        table.last_seen.remove(node);
        table.cert_roles.remove(node);
        table.trust.remove(node);
        table.runtimes.remove(node);
    }

    /// Starts a fresh term of leadership: earlier sightings are someone else's business.
    fn start_leading(&self, at: Instant) {
        let mut table = self.table();
        table.last_seen.clear();
        table.cert_roles.clear();
        table.trust.clear();
        table.runtimes.clear();
        table.leading_since = Some(at);
    }

    /// True when the node reported within `window`, or leadership is younger than that.
    pub fn is_alive(&self, node: &str, window: Duration, now: Instant) -> bool {
        let table = self.table();
        let since = table.last_seen.get(node).copied().or(table.leading_since);
        since.is_some_and(|t| now.saturating_duration_since(t) <= window)
    }

    /// True when the node itself reported within `window` (the grace period does not count).
    pub fn has_reported(&self, node: &str, window: Duration, now: Instant) -> bool {
        self.table()
            .last_seen
            .get(node)
            .is_some_and(|t| now.saturating_duration_since(*t) <= window)
    }
}

/// The leader's loop. Runs on every member and acts only while this node leads.
pub async fn run(swarm: Arc<Swarm>) {
    let mut leading = false;
    loop {
        let is_leader = swarm.leader() == Leader::Me;
        if is_leader && !leading {
            tracing::info!("this node is now the leader");
            swarm.sessions.start_leading(Instant::now());
        }
        leading = is_leader;
        if leading {
            if let Err(e) = update_node_statuses(&swarm).await {
                tracing::debug!("node status update deferred: {e}");
            }
            if let Err(e) = reconcile_membership(&swarm).await {
                tracing::warn!("manager membership change deferred: {e}");
            }
            if let Err(e) = advance_ca_rotation(&swarm).await {
                tracing::warn!("CA rotation step deferred: {e}");
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(TICK) => {}
            _ = swarm.wake.notified() => {}
        }
    }
}

/// The silence after which a node counts as down, from the cluster's settings.
pub fn down_after(swarm: &Swarm) -> Duration {
    let config = swarm
        .state()
        .cluster
        .as_ref()
        .map(|c| c.config.clone())
        .unwrap_or_default();
    Duration::from_millis(config.node_down_after_ms())
}

/// Marks nodes down or ready as their heartbeats stop or resume, in one write.
async fn update_node_statuses(swarm: &Swarm) -> Result<(), ControlError> {
    let window = down_after(swarm);
    let now = Instant::now();
    swarm.sessions.record(swarm.node_id(), now);
    let changes: Vec<Command> = swarm
        .state()
        .nodes()
        .filter_map(|node| {
            // Down only after the silence (an election's grace included); ready only on a
            // heartbeat actually received, so a node that left stays down.
            let reported = swarm.sessions.has_reported(&node.id, window, now);
            let alive = swarm.sessions.is_alive(&node.id, window, now);
            // A node that reports, but whose runtime cannot run tasks, is down all the same:
            // its tasks are replaced elsewhere, and the reason says why.
            let runtime = swarm.sessions.runtime(&node.id).filter(|_| reported);
            let runtime_problem = match &runtime {
                Some(RuntimeWord::Unavailable(problem)) => Some(problem),
                _ => None,
            };
            let (state, message) = match (node.status.state, reported, alive, runtime_problem) {
                (_, _, _, Some(problem)) => {
                    let message = format!("{RUNTIME_UNAVAILABLE}: {problem}");
                    if node.status.state == NodeState::Down && node.status.message == message {
                        return None;
                    }
                    (NodeState::Down, message)
                }
                (NodeState::Ready, _, false, None) | (NodeState::Unknown, false, false, None) => (
                    NodeState::Down,
                    format!("heartbeat failure: no report for {} ms", window.as_millis()),
                ),
                // Down for its runtime: ready only once the node said it runs again.
                (NodeState::Down, true, _, None)
                    if node.status.message.starts_with(RUNTIME_UNAVAILABLE)
                        && runtime != Some(RuntimeWord::Runs) =>
                {
                    return None
                }
                (NodeState::Down | NodeState::Unknown, true, _, None) => {
                    (NodeState::Ready, String::new())
                }
                _ => return None,
            };
            if state == NodeState::Down {
                tracing::warn!(node = %node.id, hostname = %node.description.hostname, "node is down: {message}");
            } else {
                tracing::info!(node = %node.id, hostname = %node.description.hostname, "node is ready");
            }
            Some(Command::SetNodeStatus {
                id: node.id.clone(),
                status: NodeStatus { state, message },
            })
        })
        .collect();
    if !changes.is_empty() {
        swarm.write(changes).await?;
    }
    Ok(())
}

/// Moves a CA rotation to its next stage once every node that is not down has caught up: all
/// trust the new CA (then it starts signing), then all hold a certificate it signed (then the
/// old CA is dropped).
async fn advance_ca_rotation(swarm: &Swarm) -> Result<(), ControlError> {
    swarm
        .sessions
        .record_trust(swarm.node_id(), NodeTrust::of(&swarm.tls));
    let (cluster, lagging) = {
        let state = swarm.state();
        let Some(cluster) = state.cluster.clone() else {
            return Ok(());
        };
        let Some(rotation) = &cluster.ca_rotation else {
            return Ok(());
        };
        let wanted_roots = tls::roots_fingerprint(&cluster.trusted_roots_pem());
        let signing = tls::certs_from_pem(&cluster.root_ca.cert_pem)
            .ok()
            .and_then(|c| c.first().map(|c| tls::fingerprint(c)))
            .unwrap_or_default();
        let lagging: Vec<String> = state
            .nodes()
            .filter(|n| n.status.state != NodeState::Down)
            .filter(|n| {
                let trust = swarm.sessions.trust(&n.id).unwrap_or_default();
                match rotation {
                    CaRotation::Trusting { .. } => trust.roots_fingerprint != wanted_roots,
                    CaRotation::Reissuing { .. } => {
                        trust.roots_fingerprint != wanted_roots
                            || trust.issuer_fingerprint != signing
                    }
                }
            })
            .map(|n| n.description.hostname.clone())
            .collect();
        (cluster, lagging)
    };
    if !lagging.is_empty() {
        tracing::debug!(?lagging, "CA rotation waiting for nodes");
        return Ok(());
    }
    let (root_ca, ca_rotation, join_tokens) = match &cluster.ca_rotation {
        Some(CaRotation::Trusting { next }) => {
            tracing::info!("CA rotation: every node trusts the new CA; it signs from now on");
            let tokens = JoinTokens {
                worker: crate::ca::new_token(next, Role::Worker)?,
                manager: crate::ca::new_token(next, Role::Manager)?,
            };
            (
                next.clone(),
                Some(CaRotation::Reissuing {
                    previous_cert_pem: cluster.root_ca.cert_pem.clone(),
                }),
                tokens,
            )
        }
        Some(CaRotation::Reissuing { .. }) => {
            tracing::info!("CA rotation complete: every node holds a certificate of the new CA");
            (cluster.root_ca.clone(), None, cluster.join_tokens.clone())
        }
        None => return Ok(()),
    };
    swarm
        .write_one(Command::UpdateCa {
            expected_version: Some(cluster.version),
            root_ca,
            ca_rotation,
            join_tokens,
        })
        .await?;
    Ok(())
}

/// Brings the Raft voters in line with the nodes whose role is manager: adds the ones that
/// are alive (after copying the log to them), removes the ones demoted or gone.
///
/// # Errors
/// Raft refused or timed out; the next tick tries again.
pub async fn reconcile_membership(swarm: &Swarm) -> Result<(), ControlError> {
    let _one_at_a_time = swarm.membership_lock.lock().await;
    if swarm.leader() != Leader::Me {
        return Ok(());
    }
    let window = down_after(swarm);
    let now = Instant::now();
    let voters = swarm.voters();
    let (wanted, to_add) = {
        let state = swarm.state();
        // Until `swarm init` has written the cluster, there is nothing to reconcile, and the
        // first manager's own node record may not exist yet.
        if state.cluster.is_none() {
            return Ok(());
        }
        let wanted: BTreeSet<RaftId> = state
            .nodes()
            .filter(|n| n.spec.role == Role::Manager)
            .map(|n| n.raft_id)
            .collect();
        let to_add: Vec<(RaftId, String)> = state
            .nodes()
            .filter(|n| n.spec.role == Role::Manager && !voters.contains(&n.raft_id))
            .filter(|n| swarm.sessions.has_reported(&n.id, window, now))
            .filter(|n| swarm.sessions.cert_role(&n.id) == Some(CertRole::Manager))
            .map(|n| (n.raft_id, n.description.addr.clone()))
            .collect();
        (wanted, to_add)
    };
    let to_remove: Vec<RaftId> = voters.difference(&wanted).copied().collect();
    if to_add.is_empty() && to_remove.is_empty() {
        return Ok(());
    }
    let mut new_voters: BTreeSet<RaftId> = voters.intersection(&wanted).copied().collect();
    if new_voters.is_empty() && to_add.is_empty() {
        // Never vote every manager out: that would be a bug elsewhere, not an intent.
        tracing::error!(
            ?voters,
            "refusing a membership change that leaves no manager"
        );
        return Ok(());
    }
    for (raft_id, addr) in to_add {
        tracing::info!(raft_id, %addr, "adding a manager: copying the log to it");
        let added = tokio::time::timeout(
            CATCH_UP_TIMEOUT,
            swarm
                .raft()
                .add_learner(raft_id, BasicNode::new(addr.clone()), true),
        )
        .await;
        match added {
            Ok(Ok(_)) => {
                new_voters.insert(raft_id);
            }
            Ok(Err(e)) => tracing::warn!(raft_id, %addr, "cannot add manager yet: {e}"),
            Err(_) => tracing::warn!(raft_id, %addr, "manager did not catch up in time"),
        }
    }
    if new_voters == voters {
        return Ok(());
    }
    tracing::info!(?voters, ?new_voters, "changing the managers");
    match tokio::time::timeout(
        CATCH_UP_TIMEOUT,
        swarm.raft().change_membership(new_voters, false),
    )
    .await
    {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(ControlError::Unavailable(format!(
            "changing the managers failed: {e}"
        ))),
        Err(_) => Err(swarm.no_quorum("changing the managers timed out")),
    }
}

/// Refuses to take a manager out of the vote when the managers left would not make a
/// quorum among themselves.
///
/// # Errors
/// The removal would leave the cluster without quorum, or without managers at all.
pub fn check_quorum_without(
    swarm: &Swarm,
    leaving: RaftId,
    action: &str,
    force_available: bool,
) -> Result<(), ControlError> {
    let force_hint = if force_available {
        "; use --force to ignore this"
    } else {
        ""
    };
    let voters = swarm.voters();
    if !voters.contains(&leaving) {
        return Ok(());
    }
    let remaining: Vec<RaftId> = voters.iter().copied().filter(|v| *v != leaving).collect();
    if remaining.is_empty() {
        return Err(ControlError::FailedPrecondition(format!(
            "cannot {action}: it is the last manager, and removing it would erase the swarm's \
             state{force_hint}"
        )));
    }
    let window = down_after(swarm);
    let now = Instant::now();
    let reachable = {
        let state = swarm.state();
        remaining
            .iter()
            .filter(|raft_id| {
                state.nodes().any(|n| {
                    n.raft_id == **raft_id
                        && (n.id == *swarm.node_id()
                            || swarm.sessions.has_reported(&n.id, window, now))
                })
            })
            .count()
    };
    let quorum = remaining.len() / 2 + 1;
    if reachable < quorum {
        return Err(ControlError::FailedPrecondition(format!(
            "cannot {action}: only {reachable} of the {} remaining managers are reachable, \
             fewer than the {quorum} needed for quorum; bring managers back first{force_hint}",
            remaining.len()
        )));
    }
    Ok(())
}
