//! Who may call what on the cluster port. TLS has already checked that a certificate comes
//! from this cluster's CA; here the certificate's role and the cluster state decide:
//!
//! | call | allowed to |
//! | --- | --- |
//! | Raft | managers: a manager certificate, of a node that is not removed nor demoted |
//! | Control (Call, Logs) | managers as above, and operators' client certificates |
//! | Membership.Heartbeat, Renew, Leave | any member node, for itself only |
//! | Dispatcher.Session | any member node, for its own tasks only |
//! | Worker.Logs | managers |
//! | Membership.Join | anyone: the join token is the credential |
//!
//! A node the local state does not know yet (a manager that has just joined, before this
//! node applied its record) is judged by its certificate alone.

use std::sync::Arc;

use essaim_api::tls::{CertRole, PeerIdentity, PeerInfo, TlsState};
use essaim_api::ControlError;
use essaim_core::model::Role;
use parking_lot::Mutex;

use crate::replica::Replica;

/// The checks on callers, against this node's replica of the cluster state.
pub struct Authz {
    replica: Arc<Replica>,
    tls: Arc<TlsState>,
    /// The fingerprints of the CAs the cluster trusts, for the cluster version they were read
    /// at: every call checks its caller's issuer against them.
    trusted_cas: Mutex<(u64, Vec<String>)>,
}

/// A check on the request head, before tonic reads the message: a caller without the right
/// kind of certificate is refused before it can make us buffer a large body. The full checks
/// against the cluster state still run in the handlers.
pub fn gate(
    allowed: &'static [CertRole],
    what: &'static str,
) -> impl tonic::service::Interceptor + Clone {
    move |request: tonic::Request<()>| -> Result<tonic::Request<()>, tonic::Status> {
        match caller(&request) {
            None => Err(required(what).into()),
            Some(identity) if !allowed.contains(&identity.role) => Err(refuse(
                &identity,
                what,
                &format!(
                    "a {} certificate cannot make this call",
                    identity.role.as_str()
                ),
            )
            .into()),
            Some(_) => Ok(request),
        }
    }
}

/// The verified identity of the caller, if it showed a certificate.
pub fn caller<T>(request: &tonic::Request<T>) -> Option<PeerIdentity> {
    request
        .extensions()
        .get::<PeerInfo>()
        .and_then(|peer| peer.identity.clone())
}

fn refuse(identity: &PeerIdentity, what: &str, why: &str) -> ControlError {
    tracing::warn!(node = %identity.node_id, role = identity.role.as_str(), "refused {what}: {why}");
    ControlError::PermissionDenied(format!("{what} refused: {why}"))
}

fn required(what: &str) -> ControlError {
    tracing::warn!("refused {what}: no client certificate");
    ControlError::Unauthenticated(format!(
        "{what} needs a certificate from this cluster: join the swarm first (essaim swarm join), \
         or use a client bundle (essaim swarm ca issue-client)"
    ))
}

impl Authz {
    pub fn new(replica: Arc<Replica>, tls: Arc<TlsState>) -> Authz {
        Authz {
            replica,
            tls,
            trusted_cas: Mutex::new((u64::MAX, Vec::new())),
        }
    }

    /// True when the cluster trusts the CA with this fingerprint now. Before this node knows
    /// the cluster (a manager that just joined), its own trusted roots decide.
    pub fn cluster_trusts(&self, issuer: &str) -> bool {
        let (version, roots_pem) = {
            let state = self.replica.state();
            match state.cluster.as_ref() {
                Some(cluster) => (cluster.version, cluster.trusted_roots_pem()),
                None => return self.tls.trusts(issuer),
            }
        };
        let mut cache = self.trusted_cas.lock();
        if cache.0 != version {
            let fingerprints = essaim_api::tls::certs_from_pem(&roots_pem)
                .map(|certs| {
                    certs
                        .iter()
                        .map(|c| essaim_api::tls::fingerprint(c))
                        .collect()
                })
                .unwrap_or_default();
            *cache = (version, fingerprints);
        }
        cache.1.iter().any(|f| f == issuer)
    }

    /// Refuses, on every call, a certificate that has expired since its connection was opened, or
    /// whose CA the cluster no longer trusts (after a CA rotation): TLS checked both only once,
    /// at the handshake.
    fn check_current(&self, identity: &PeerIdentity, what: &str) -> Result<(), ControlError> {
        if identity.not_after < self.replica.clock().unix_secs() {
            return Err(refuse(identity, what, "expired certificate"));
        }
        let trusted = identity
            .issuer_fingerprint
            .as_deref()
            .is_some_and(|issuer| self.cluster_trusts(issuer));
        if !trusted {
            return Err(refuse(
                identity,
                what,
                "certificate from a CA this cluster no longer trusts (the CA was rotated): get a new \
                 one (a client bundle with 'essaim swarm ca issue-client')",
            ));
        }
        Ok(())
    }

    /// Refuses a certificate of a node that `node rm` removed.
    fn check_not_removed(&self, identity: &PeerIdentity, what: &str) -> Result<(), ControlError> {
        self.check_current(identity, what)?;
        if self.replica.state().is_removed(&identity.node_id) {
            return Err(refuse(
                identity,
                what,
                &format!(
                    "node {} was removed from the swarm; its certificate is no longer valid (make it \
                     leave with 'essaim swarm leave --force' and join again)",
                    identity.node_id
                ),
            ));
        }
        Ok(())
    }

    /// A manager, by certificate and by the cluster state.
    ///
    /// # Errors
    /// No certificate, a worker or client certificate, or a removed or demoted node.
    pub fn require_manager(
        &self,
        identity: Option<PeerIdentity>,
        what: &str,
    ) -> Result<PeerIdentity, ControlError> {
        let identity = identity.ok_or_else(|| required(what))?;
        if identity.role != CertRole::Manager {
            return Err(refuse(
                &identity,
                what,
                &format!(
                    "a {} certificate cannot make this call",
                    identity.role.as_str()
                ),
            ));
        }
        self.check_not_removed(&identity, what)?;
        let demoted = self
            .replica
            .state()
            .node_by_id(&identity.node_id)
            .is_some_and(|n| n.spec.role != Role::Manager);
        if demoted {
            return Err(refuse(&identity, what, "the node is no longer a manager"));
        }
        Ok(identity)
    }

    /// A manager, or an operator with a client certificate.
    ///
    /// # Errors
    /// As [`Authz::require_manager`], with client certificates allowed.
    pub fn require_operator(
        &self,
        identity: Option<PeerIdentity>,
        what: &str,
    ) -> Result<PeerIdentity, ControlError> {
        match identity {
            Some(identity) if identity.role == CertRole::Client => {
                self.check_current(&identity, what)?;
                Ok(identity)
            }
            other => self.require_manager(other, what),
        }
    }

    /// A node of the swarm, worker or manager, speaking for itself.
    ///
    /// # Errors
    /// No certificate, a client certificate, or a removed node.
    pub fn require_member(
        &self,
        identity: Option<PeerIdentity>,
        what: &str,
    ) -> Result<PeerIdentity, ControlError> {
        let identity = identity.ok_or_else(|| required(what))?;
        if identity.role == CertRole::Client {
            return Err(refuse(
                &identity,
                what,
                "a client certificate is not a node",
            ));
        }
        self.check_not_removed(&identity, what)?;
        Ok(identity)
    }
}
