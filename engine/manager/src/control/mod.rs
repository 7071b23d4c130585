//! The control API as the leader answers it: the router, and a module per noun. Every other
//! manager passes these requests here unchanged (`crate::forward`).
//!
//! - [`nodes`]: `node ls`, `inspect`, `update`, `rm`.
//! - [`cluster`]: `swarm inspect`, `update`, `join-token`, `ca`; client certificates.
//! - [`services`]: services and their tasks.
//! - [`networks`]: cluster networks: create (the leader allocates), list, inspect, remove.
//! - [`files`]: secrets (sealed here) and configs: create, list, inspect, remove.
//! - [`locks`]: cluster-wide leases for scripts.
//! - [`logs`]: `service logs`, gathered from every node that runs the service's tasks.

use essaim_api::{ControlError, ControlReply, ControlRequest};

use crate::swarm::Swarm;

pub mod cluster;
pub mod files;
pub mod locks;
pub mod logs;
pub mod networks;
pub mod nodes;
pub mod services;

/// Answers a control request that needs the cluster. This node must be the leader.
///
/// # Errors
/// Whatever makes the request impossible, in words the user can act on.
pub async fn handle(swarm: &Swarm, request: ControlRequest) -> Result<ControlReply, ControlError> {
    match request {
        ControlRequest::JoinToken { role, rotate } => {
            cluster::join_token(swarm, role, rotate).await
        }
        ControlRequest::SwarmInspect => cluster::inspect(swarm).await,
        ControlRequest::SwarmUpdate {
            cert_expiry_ms,
            heartbeat_period_ms,
            task_history_limit,
        } => {
            cluster::update(
                swarm,
                cert_expiry_ms,
                heartbeat_period_ms,
                task_history_limit,
            )
            .await
        }
        ControlRequest::RotateCa => cluster::rotate_ca(swarm).await,
        ControlRequest::IssueClientCert { name, csr_pem } => {
            cluster::issue_client_cert(swarm, name, csr_pem).await
        }
        ControlRequest::NodeList => nodes::list(swarm).await,
        ControlRequest::NodeInspect { node } => nodes::inspect(swarm, &node).await,
        ControlRequest::NodeUpdate {
            node,
            expected_version,
            availability,
            role,
            label_add,
            label_rm,
        } => {
            nodes::update(
                swarm,
                &node,
                expected_version,
                availability,
                role,
                label_add,
                label_rm,
            )
            .await
        }
        ControlRequest::NodeRemove { node, force } => nodes::remove(swarm, &node, force).await,
        ControlRequest::ServiceCreate { spec } => services::create(swarm, spec).await,
        ControlRequest::ServiceList => services::list(swarm).await,
        ControlRequest::ServiceInspect { service } => services::inspect(swarm, &service).await,
        ControlRequest::ServiceScale { service, replicas } => {
            services::scale(swarm, &service, replicas).await
        }
        ControlRequest::ServiceUpdate {
            service,
            expected_version,
            spec,
        } => services::update(swarm, &service, expected_version, spec).await,
        ControlRequest::ServiceRollback {
            service,
            expected_version,
        } => services::rollback(swarm, &service, expected_version).await,
        ControlRequest::ServiceUpdateContinue {
            service,
            pause_after,
        } => services::continue_update(swarm, &service, pause_after).await,
        ControlRequest::ServiceRemove { service } => services::remove(swarm, &service).await,
        ControlRequest::TaskList { service, node } => {
            services::tasks(swarm, service.as_deref(), node.as_deref()).await
        }
        ControlRequest::LockAcquire {
            name,
            holder,
            ttl_ms,
        } => locks::acquire(swarm, name, holder, ttl_ms).await,
        ControlRequest::LockRenew {
            name,
            holder,
            ttl_ms,
        } => locks::renew(swarm, name, holder, ttl_ms).await,
        ControlRequest::LockRelease { name, holder } => locks::release(swarm, name, holder).await,
        ControlRequest::LockList => locks::list(swarm).await,
        ControlRequest::NetworkCreate { spec } => networks::create(swarm, spec).await,
        ControlRequest::NetworkList => networks::list(swarm).await,
        ControlRequest::NetworkInspect { network } => networks::inspect(swarm, &network).await,
        ControlRequest::NetworkRemove { network } => networks::remove(swarm, &network).await,
        ControlRequest::FileCreate { kind, spec, data } => {
            files::create(swarm, kind, spec, data).await
        }
        ControlRequest::FileList { kind } => files::list(swarm, kind).await,
        ControlRequest::FileInspect { kind, name } => files::inspect(swarm, kind, &name).await,
        ControlRequest::FileRemove { kind, name } => files::remove(swarm, kind, &name).await,
        ControlRequest::Info
        | ControlRequest::SwarmInit { .. }
        | ControlRequest::SwarmJoin { .. }
        | ControlRequest::SwarmLeave { .. }
        | ControlRequest::WaitChange { .. } => Err(ControlError::InvalidArgument(
            "this request is answered by the node itself, not the leader".into(),
        )),
    }
}
