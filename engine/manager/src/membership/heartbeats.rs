//! The heartbeat every member sends to the leader, so the leader knows it is alive. Workers
//! find the leader through the managers they know; managers know it from Raft.
//!
//! The leader's answer also says what the node's certificate should be (role, lifetime,
//! signing CA); the sender has it renewed when it no longer fits (`security::renewal`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use essaim_api::pb::{HeartbeatRequest, HeartbeatResponse};
use essaim_api::tls::TlsState;
use essaim_api::transport::{self, ClientTls};
use essaim_api::ControlError;
use tonic::transport::Channel;

use crate::liveness::trust_of;
use crate::membership::managers::KnownManagers;
use crate::replica::{Leader, Replica};
use crate::security::renewal::Renewal;

/// What the heartbeat sender works with.
pub struct HeartbeatSender {
    pub replica: Arc<Replica>,
    pub tls: Arc<TlsState>,
    pub managers: Arc<KnownManagers>,
}

/// The period used until the leader says otherwise.
const DEFAULT_PERIOD: Duration = Duration::from_millis(500);
/// Pause before following a redirect, so a confused pair of managers cannot make us spin.
const REDIRECT_PAUSE: Duration = Duration::from_millis(50);

/// Runs for as long as the node is in the swarm.
pub async fn run(sender: HeartbeatSender) {
    let HeartbeatSender {
        replica,
        tls,
        managers,
    } = sender;
    let mut period = DEFAULT_PERIOD;
    // The manager that last accepted our heartbeat, or that we were redirected to.
    let mut target: Option<String> = None;
    let mut next_manager = 0usize;
    let mut channels = Channels::default();
    let mut warned_removed = false;
    let mut warned_refused = false;
    let mut warned_expired = false;
    let mut renewal = Renewal::new(replica.clone(), tls.clone());
    loop {
        let leader = replica.leader();
        // The leader hears itself (its node duties record it); it only keeps its own
        // certificate fitting.
        if leader == Leader::Me {
            renewal.renew_own_if_needed().await;
            period = Duration::from_millis(
                replica
                    .state()
                    .cluster
                    .as_ref()
                    .map(|c| c.config.heartbeat_period_ms)
                    .unwrap_or(500),
            );
            tokio::time::sleep(period).await;
            continue;
        }
        let addr = match (&leader, &target) {
            (Leader::Other { addr, .. }, _) => addr.clone(),
            (_, Some(addr)) => addr.clone(),
            _ => {
                let known = managers.addrs();
                if known.is_empty() {
                    tokio::time::sleep(period).await;
                    continue;
                }
                next_manager = (next_manager + 1) % known.len();
                known[next_manager].clone()
            }
        };
        match send(&mut channels, &replica, &tls, &addr, period).await {
            Ok(reply) if reply.accepted => {
                warned_removed = false;
                warned_refused = false;
                renewal
                    .renew_if_needed(channels.by_addr.get(&addr).cloned(), &reply)
                    .await;
                target = Some(addr);
                if reply.period_ms > 0 {
                    period = Duration::from_millis(reply.period_ms);
                }
                managers.set(reply.manager_addrs);
            }
            Ok(reply) => {
                target = (!reply.leader_addr.is_empty()).then_some(reply.leader_addr);
                tokio::time::sleep(REDIRECT_PAUSE).await;
                continue;
            }
            Err(ControlError::NotFound(why)) => {
                if !warned_removed {
                    tracing::warn!("the leader does not know this node: {why}");
                    warned_removed = true;
                }
                target = None;
            }
            Err(error) => {
                match error {
                    // The manager refuses our certificate: say why, once, where the
                    // operator looks.
                    ControlError::PermissionDenied(why) if !warned_refused => {
                        tracing::error!(%addr, "the manager refuses this node: {why}");
                        warned_refused = true;
                    }
                    other => tracing::debug!(%addr, "heartbeat failed: {other}"),
                }
                warn_if_expired(&replica, &tls, &mut warned_expired);
                target = None;
            }
        }
        tokio::time::sleep(period).await;
    }
}

/// Channels to managers, made under one TLS generation: after a renewal, new connections
/// carry the new certificate, so the leader sees the node's new role.
#[derive(Default)]
struct Channels {
    generation: u64,
    by_addr: HashMap<String, Channel>,
}

async fn send(
    channels: &mut Channels,
    replica: &Replica,
    tls: &Arc<TlsState>,
    addr: &str,
    timeout: Duration,
) -> Result<HeartbeatResponse, ControlError> {
    let generation = tls.generation();
    if channels.generation != generation {
        *channels = Channels {
            generation,
            by_addr: HashMap::new(),
        };
    }
    let channel = match channels.by_addr.get(addr) {
        Some(channel) => channel.clone(),
        None => {
            let channel = transport::cluster_channel(addr, ClientTls::Node(tls.clone()))?;
            channels.by_addr.insert(addr.to_string(), channel.clone());
            channel
        }
    };
    let trust = trust_of(tls);
    let mut request = tonic::Request::new(HeartbeatRequest {
        node_id: replica.node_id().clone(),
        roots_fingerprint: trust.roots_fingerprint,
        cert_issuer_fingerprint: trust.issuer_fingerprint,
    });
    request.set_timeout(timeout);
    transport::membership_client(channel)
        .heartbeat(request)
        .await
        .map(|r| r.into_inner())
        .map_err(ControlError::from)
}

/// Says, once, that the node's certificate has expired: it cannot be renewed any more (renewal
/// needs a valid certificate), so the node must join again.
fn warn_if_expired(replica: &Replica, tls: &TlsState, warned: &mut bool) {
    let Some(identity) = tls.identity() else {
        return;
    };
    if identity.not_after < replica.clock().unix_secs() && !*warned {
        tracing::error!(
            "this node's certificate expired while it could not renew it: make the node leave \
             ('essaim swarm leave --force') and join again with a token"
        );
        *warned = true;
    }
}
