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

use essaim_api::tls::{CertRole, PeerIdentity, PeerInfo};
use tonic::Status;

use crate::swarm::Swarm;
use essaim_core::model::Role;

/// A check on the request head, before tonic reads the message: a caller without the right
/// kind of certificate is refused before it can make us buffer a large body. The full checks
/// against the cluster state still run in the handlers.
pub fn gate(
    allowed: &'static [CertRole],
    what: &'static str,
) -> impl tonic::service::Interceptor + Clone {
    move |request: tonic::Request<()>| -> Result<tonic::Request<()>, Status> {
        match caller(&request) {
            None => Err(required(what)),
            Some(identity) if !allowed.contains(&identity.role) => Err(refuse(
                &identity,
                what,
                &format!(
                    "a {} certificate cannot make this call",
                    identity.role.as_str()
                ),
            )),
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

fn refuse(identity: &PeerIdentity, what: &str, why: &str) -> Status {
    tracing::warn!(node = %identity.node_id, role = identity.role.as_str(), "refused {what}: {why}");
    Status::permission_denied(format!("{what} refused: {why}"))
}

fn required(what: &str) -> Status {
    tracing::warn!("refused {what}: no client certificate");
    Status::unauthenticated(format!(
        "{what} needs a certificate from this cluster: join the swarm first (essaim swarm join), \
         or use a client bundle (essaim swarm ca issue-client)"
    ))
}

/// Refuses, on every call, a certificate that has expired since its connection was opened, or
/// whose CA the cluster no longer trusts (after a CA rotation): TLS checked both only once,
/// at the handshake.
fn check_current(swarm: &Swarm, identity: &PeerIdentity, what: &str) -> Result<(), Status> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    if identity.not_after < now {
        return Err(refuse(identity, what, "expired certificate"));
    }
    let trusted = identity
        .issuer_fingerprint
        .as_deref()
        .is_some_and(|issuer| swarm.cluster_trusts(issuer));
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
fn check_not_removed(swarm: &Swarm, identity: &PeerIdentity, what: &str) -> Result<(), Status> {
    check_current(swarm, identity, what)?;
    if swarm.state().is_removed(&identity.node_id) {
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
    swarm: &Swarm,
    identity: Option<PeerIdentity>,
    what: &str,
) -> Result<PeerIdentity, Status> {
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
    check_not_removed(swarm, &identity, what)?;
    let demoted = swarm
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
/// As [`require_manager`], with client certificates allowed.
pub fn require_operator(
    swarm: &Swarm,
    identity: Option<PeerIdentity>,
    what: &str,
) -> Result<PeerIdentity, Status> {
    match identity {
        Some(identity) if identity.role == CertRole::Client => {
            check_current(swarm, &identity, what)?;
            Ok(identity)
        }
        other => require_manager(swarm, other, what),
    }
}

/// A node of the swarm, worker or manager, speaking for itself.
///
/// # Errors
/// No certificate, a client certificate, or a removed node.
pub fn require_member(
    swarm: &Swarm,
    identity: Option<PeerIdentity>,
    what: &str,
) -> Result<PeerIdentity, Status> {
    let identity = identity.ok_or_else(|| required(what))?;
    if identity.role == CertRole::Client {
        return Err(refuse(
            &identity,
            what,
            "a client certificate is not a node",
        ));
    }
    check_not_removed(swarm, &identity, what)?;
    Ok(identity)
}
