//! The heartbeat every member sends to the leader, so the leader knows it is alive. Workers
//! find the leader through the managers they know; managers know it from Raft.
//!
//! The leader's answer also says what the node's certificate should be (role, lifetime,
//! signing CA); the agent renews it when the certificate no longer fits: after a promotion or
//! demotion, past half its lifetime, or when the cluster moved to a new CA.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use essaim_api::pb::{HeartbeatRequest, HeartbeatResponse, RenewRequest};
use essaim_api::tls::Credentials;
use essaim_api::transport::{self, ClientTls};
use essaim_core::model::Role;
use tonic::transport::Channel;

use crate::identity::credentials;
use crate::swarm::{Leader, Swarm};

/// The period used until the leader says otherwise.
const DEFAULT_PERIOD: Duration = Duration::from_millis(500);
/// Pause before following a redirect, so a confused pair of managers cannot make us spin.
const REDIRECT_PAUSE: Duration = Duration::from_millis(50);

pub async fn run(swarm: Arc<Swarm>) {
    let mut period = DEFAULT_PERIOD;
    // The manager that last accepted our heartbeat, or that we were redirected to.
    let mut target: Option<String> = None;
    let mut next_manager = 0usize;
    let mut channels = Channels::default();
    let mut warned_removed = false;
    let mut warned_refused = false;
    let mut warned_expired = false;
    let mut renewal = Renewal::default();
    loop {
        let leader = swarm.leader();
        if leader == Leader::Me {
            swarm.sessions.record(swarm.node_id(), Instant::now());
            renewal.renew_own_if_needed(&swarm).await;
            period = Duration::from_millis(
                swarm
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
                let managers = swarm.manager_addrs();
                if managers.is_empty() {
                    tokio::time::sleep(period).await;
                    continue;
                }
                next_manager = (next_manager + 1) % managers.len();
                managers[next_manager].clone()
            }
        };
        match send(&mut channels, &swarm, &addr, period).await {
            Ok(reply) if reply.accepted => {
                warned_removed = false;
                warned_refused = false;
                renewal
                    .renew_if_needed(&swarm, &mut channels, &addr, &reply)
                    .await;
                target = Some(addr);
                if reply.period_ms > 0 {
                    period = Duration::from_millis(reply.period_ms);
                }
                swarm.set_manager_addrs(reply.manager_addrs);
            }
            Ok(reply) => {
                target = (!reply.leader_addr.is_empty()).then_some(reply.leader_addr);
                tokio::time::sleep(REDIRECT_PAUSE).await;
                continue;
            }
            Err(status) if status.code() == tonic::Code::NotFound => {
                if !warned_removed {
                    tracing::warn!("the leader does not know this node: {}", status.message());
                    warned_removed = true;
                }
                target = None;
            }
            Err(status) => {
                match essaim_api::ControlError::from(status) {
                    // The manager refuses our certificate: say why, once, where the
                    // operator looks.
                    essaim_api::ControlError::PermissionDenied(why) if !warned_refused => {
                        tracing::error!(%addr, "the manager refuses this node: {why}");
                        warned_refused = true;
                    }
                    other => tracing::debug!(%addr, "heartbeat failed: {other}"),
                }
                warn_if_expired(&swarm, &mut warned_expired);
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
    swarm: &Swarm,
    addr: &str,
    timeout: Duration,
) -> Result<HeartbeatResponse, tonic::Status> {
    let generation = swarm.tls.generation();
    if channels.generation != generation {
        *channels = Channels {
            generation,
            by_addr: HashMap::new(),
        };
    }
    let channel = match channels.by_addr.get(addr) {
        Some(channel) => channel.clone(),
        None => {
            let channel = transport::cluster_channel(addr, ClientTls::Node(swarm.tls.clone()))
                .map_err(|e| tonic::Status::invalid_argument(e.to_string()))?;
            channels.by_addr.insert(addr.to_string(), channel.clone());
            channel
        }
    };
    let trust = crate::health::NodeTrust::of(&swarm.tls);
    let mut request = tonic::Request::new(HeartbeatRequest {
        node_id: swarm.node_id().clone(),
        roots_fingerprint: trust.roots_fingerprint,
        cert_issuer_fingerprint: trust.issuer_fingerprint,
    });
    request.set_timeout(timeout);
    transport::membership_client(channel)
        .heartbeat(request)
        .await
        .map(|r| r.into_inner())
}

/// Says, once, that the node's certificate has expired: it cannot be renewed any more (renewal
/// needs a valid certificate), so the node must join again.
fn warn_if_expired(swarm: &Swarm, warned: &mut bool) {
    let Some(identity) = swarm.tls.identity() else {
        return;
    };
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if identity.not_after < now && !*warned {
        tracing::error!(
            "this node's certificate expired while it could not renew it: make the node leave \
             ('essaim swarm leave --force') and join again with a token"
        );
        *warned = true;
    }
}

/// Keeps the node's certificate fitting what the cluster says of the node.
#[derive(Default)]
struct Renewal {
    /// After a failed attempt, the next one waits, so a refusing leader is not hammered.
    not_before: Option<Instant>,
}

/// The pause after a failed renewal.
const RENEWAL_RETRY: Duration = Duration::from_secs(2);

impl Renewal {
    fn due(&self) -> bool {
        self.not_before.is_none_or(|t| Instant::now() >= t)
    }

    /// Why the certificate should be renewed, if it should.
    fn reason(
        swarm: &Swarm,
        role: &str,
        cert_expiry_ms: u64,
        signing_ca: &str,
        trusted_roots: &str,
    ) -> Option<String> {
        let identity = swarm.tls.identity()?;
        let wanted = match role.parse::<Role>() {
            Ok(role) => crate::leader::cert_role(role),
            Err(_) => return None,
        };
        if identity.role != wanted {
            return Some(format!(
                "role changed from {} to {}",
                identity.role.as_str(),
                wanted.as_str()
            ));
        }
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs() as i64)
            .unwrap_or(0);
        let lifetime = (cert_expiry_ms / 1000) as i64;
        let remaining = identity.not_after - now;
        if remaining < lifetime / 2 {
            return Some(format!("expires in {remaining}s"));
        }
        // After `swarm update --cert-expiry` shortened the lifetime, no certificate may outlive
        // the new policy (a minute of slack covers the signing clock skew).
        if remaining > lifetime + 60 {
            return Some(format!(
                "valid for {remaining}s, longer than the cluster allows now ({lifetime}s)"
            ));
        }
        let trust = crate::health::NodeTrust::of(&swarm.tls);
        if !trusted_roots.is_empty() && trust.roots_fingerprint != trusted_roots {
            return Some("the cluster's trusted CAs changed".to_string());
        }
        if !signing_ca.is_empty() && trust.issuer_fingerprint != signing_ca {
            return Some("the cluster signs with a new CA".to_string());
        }
        None
    }

    fn settle(&mut self, swarm: &Swarm, result: Result<(String, String, String), String>) {
        match result.and_then(|(cert_pem, key_pem, roots_pem)| {
            credentials::install(
                swarm.data_dir(),
                &swarm.tls,
                Credentials {
                    cert_pem,
                    key_pem,
                    roots_pem,
                },
            )
            .map_err(|e| e.to_string())
        }) {
            Ok(()) => {
                self.not_before = None;
                tracing::info!("certificate renewed");
            }
            Err(e) => {
                self.not_before = Some(Instant::now() + RENEWAL_RETRY);
                tracing::warn!("certificate renewal failed: {e}");
            }
        }
    }

    async fn renew_if_needed(
        &mut self,
        swarm: &Swarm,
        channels: &mut Channels,
        addr: &str,
        reply: &HeartbeatResponse,
    ) {
        if !self.due() {
            return;
        }
        let Some(why) = Self::reason(
            swarm,
            &reply.role,
            reply.cert_expiry_ms,
            &reply.signing_ca_fingerprint,
            &reply.trusted_roots_fingerprint,
        ) else {
            return;
        };
        tracing::info!("renewing this node's certificate: {why}");
        let result = async {
            let (key_pem, csr_pem) = crate::ca::new_key_and_request().map_err(|e| e.to_string())?;
            let channel = channels
                .by_addr
                .get(addr)
                .cloned()
                .ok_or_else(|| "no connection to the leader".to_string())?;
            let reply = transport::membership_client(channel)
                .renew(RenewRequest { csr_pem })
                .await
                .map_err(|s| s.message().to_string())?
                .into_inner();
            Ok((reply.certificate_pem, key_pem, reply.roots_pem))
        }
        .await;
        self.settle(swarm, result);
    }

    /// The leader signs its own certificate: it holds the CA.
    async fn renew_own_if_needed(&mut self, swarm: &Swarm) {
        if !self.due() {
            return;
        }
        let (role, cert_expiry_ms, signing_ca, trusted) = {
            let state = swarm.state();
            let (Some(cluster), Some(node)) =
                (state.cluster.as_ref(), state.node_by_id(swarm.node_id()))
            else {
                return;
            };
            let signing_ca = essaim_api::tls::certs_from_pem(&cluster.root_ca.cert_pem)
                .ok()
                .and_then(|c| c.first().map(|c| essaim_api::tls::fingerprint(c)))
                .unwrap_or_default();
            (
                node.spec.role.to_string(),
                cluster.config.cert_expiry_ms,
                signing_ca,
                essaim_api::tls::roots_fingerprint(&cluster.trusted_roots_pem()),
            )
        };
        let Some(why) = Self::reason(swarm, &role, cert_expiry_ms, &signing_ca, &trusted) else {
            return;
        };
        tracing::info!("renewing the leader's own certificate: {why}");
        let result = async {
            let (key_pem, csr_pem) = crate::ca::new_key_and_request().map_err(|e| e.to_string())?;
            let reply = crate::leader::renew(swarm, swarm.node_id(), &csr_pem)
                .await
                .map_err(|e| e.to_string())?;
            Ok((reply.certificate_pem, key_pem, reply.roots_pem))
        }
        .await;
        self.settle(swarm, result);
    }
}
