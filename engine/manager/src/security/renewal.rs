//! Certificates that keep fitting what the cluster says of their node: the leader signs
//! renewals with the cluster's current CA, and every node asks for one when its certificate
//! no longer fits (after a promotion or demotion, past half its lifetime, or when the cluster
//! moved to a new CA).

use std::sync::Arc;
use std::time::Duration;

use essaim_api::pb::{HeartbeatResponse, RenewRequest, RenewResponse};
use essaim_api::tls::{self, CertRole, Credentials, TlsState};
use essaim_api::transport;
use essaim_api::ControlError;
use essaim_core::model::Role;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::identity::credentials;
use crate::liveness::trust_of;
use crate::replica::{initialized, Replica};
use crate::security::ca;

/// The pause after a failed renewal.
const RENEWAL_RETRY: Duration = Duration::from_secs(2);

/// The certificate role of a node role.
pub fn cert_role(role: Role) -> CertRole {
    match role {
        Role::Manager => CertRole::Manager,
        Role::Worker => CertRole::Worker,
    }
}

/// Signs a new certificate for a node, with the role the cluster state gives it now. The
/// leader answers this.
///
/// # Errors
/// The node is unknown, or its request is malformed.
pub async fn sign(
    replica: &Replica,
    node_id: &str,
    csr_pem: &str,
) -> Result<RenewResponse, ControlError> {
    replica.linearize().await?;
    let (role, cluster) = {
        let state = replica.state();
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
        // A worker just promoted needs the key that seals secrets to be a manager.
        data_key: if role == Role::Manager {
            replica.data_key().export().unwrap_or_default()
        } else {
            Vec::new()
        },
    })
}

/// What the cluster says this node's certificate should be.
struct Wanted<'a> {
    role: &'a str,
    cert_expiry_ms: u64,
    signing_ca: &'a str,
    trusted_roots: &'a str,
}

/// A node's side: asks for a new certificate when its own no longer fits.
pub struct Renewal {
    replica: Arc<Replica>,
    tls: Arc<TlsState>,
    /// After a failed attempt, the next one waits, so a refusing leader is not hammered.
    not_before: Option<Instant>,
}

impl Renewal {
    pub fn new(replica: Arc<Replica>, tls: Arc<TlsState>) -> Renewal {
        Renewal {
            replica,
            tls,
            not_before: None,
        }
    }

    fn due(&self) -> bool {
        self.not_before.is_none_or(|t| Instant::now() >= t)
    }

    /// Why the certificate should be renewed, if it should.
    fn reason(&self, wanted: &Wanted) -> Option<String> {
        let identity = self.tls.identity()?;
        let wanted_role = match wanted.role.parse::<Role>() {
            Ok(role) => cert_role(role),
            Err(_) => return None,
        };
        if identity.role != wanted_role {
            return Some(format!(
                "role changed from {} to {}",
                identity.role.as_str(),
                wanted_role.as_str()
            ));
        }
        let now = self.replica.clock().unix_secs();
        let lifetime = (wanted.cert_expiry_ms / 1000) as i64;
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
        let trust = trust_of(&self.tls);
        if !wanted.trusted_roots.is_empty() && trust.roots_fingerprint != wanted.trusted_roots {
            return Some("the cluster's trusted CAs changed".to_string());
        }
        if !wanted.signing_ca.is_empty() && trust.issuer_fingerprint != wanted.signing_ca {
            return Some("the cluster signs with a new CA".to_string());
        }
        None
    }

    fn settle(&mut self, result: Result<(String, String, String, Vec<u8>), String>) {
        match result.and_then(|(cert_pem, key_pem, roots_pem, data_key)| {
            if !data_key.is_empty() {
                self.replica
                    .data_key()
                    .install(&data_key)
                    .map_err(|e| e.to_string())?;
            }
            credentials::install(
                self.replica.data_dir(),
                &self.tls,
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

    /// Renews through the leader, on `channel`, when the leader's heartbeat answer says the
    /// certificate no longer fits.
    pub async fn renew_if_needed(&mut self, channel: Option<Channel>, reply: &HeartbeatResponse) {
        if !self.due() {
            return;
        }
        let Some(why) = self.reason(&Wanted {
            role: &reply.role,
            cert_expiry_ms: reply.cert_expiry_ms,
            signing_ca: &reply.signing_ca_fingerprint,
            trusted_roots: &reply.trusted_roots_fingerprint,
        }) else {
            return;
        };
        tracing::info!("renewing this node's certificate: {why}");
        let result = async {
            let (key_pem, csr_pem) = ca::new_key_and_request().map_err(|e| e.to_string())?;
            let channel = channel.ok_or_else(|| "no connection to the leader".to_string())?;
            let reply = transport::membership_client(channel)
                .renew(RenewRequest { csr_pem })
                .await
                .map_err(|s| s.message().to_string())?
                .into_inner();
            Ok((
                reply.certificate_pem,
                key_pem,
                reply.roots_pem,
                reply.data_key,
            ))
        }
        .await;
        self.settle(result);
    }

    /// The leader signs its own certificate: it holds the CA.
    pub async fn renew_own_if_needed(&mut self) {
        if !self.due() {
            return;
        }
        let (role, cert_expiry_ms, signing_ca, trusted_roots) = {
            let state = self.replica.state();
            let (Some(cluster), Some(node)) = (
                state.cluster.as_ref(),
                state.node_by_id(self.replica.node_id()),
            ) else {
                return;
            };
            (
                node.spec.role.to_string(),
                cluster.config.cert_expiry_ms,
                signing_fingerprint(cluster),
                tls::roots_fingerprint(&cluster.trusted_roots_pem()),
            )
        };
        let Some(why) = self.reason(&Wanted {
            role: &role,
            cert_expiry_ms,
            signing_ca: &signing_ca,
            trusted_roots: &trusted_roots,
        }) else {
            return;
        };
        tracing::info!("renewing the leader's own certificate: {why}");
        let result = async {
            let (key_pem, csr_pem) = ca::new_key_and_request().map_err(|e| e.to_string())?;
            let reply = sign(&self.replica, self.replica.node_id(), &csr_pem)
                .await
                .map_err(|e| e.to_string())?;
            // The leader has the data key already.
            Ok((reply.certificate_pem, key_pem, reply.roots_pem, Vec::new()))
        }
        .await;
        self.settle(result);
    }
}

/// The fingerprint of the CA the cluster signs with now.
pub fn signing_fingerprint(cluster: &essaim_core::model::Cluster) -> String {
    tls::certs_from_pem(&cluster.root_ca.cert_pem)
        .ok()
        .and_then(|c| c.first().map(|c| tls::fingerprint(c)))
        .unwrap_or_default()
}
