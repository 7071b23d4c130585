//! The cluster object's requests: `swarm inspect`, `swarm update`, `swarm join-token`,
//! `swarm ca --rotate` and client certificates, as the leader answers them.

use std::time::Duration;

use essaim_api::control::SwarmView;
use essaim_api::tls::CertRole;
use essaim_api::{ControlError, ControlReply};
use essaim_core::model::{CaRotation, Role};
use essaim_core::Command;

use crate::replica::initialized;
use crate::security::ca;
use crate::swarm::Swarm;

/// The shortest certificate lifetime `swarm update --cert-expiry` accepts.
const MIN_CERT_EXPIRY: Duration = Duration::from_secs(4);

/// # Errors
/// No quorum, or no cluster yet.
pub async fn inspect(swarm: &Swarm) -> Result<ControlReply, ControlError> {
    swarm.replica.linearize().await?;
    let view = SwarmView::of(initialized(&swarm.replica.state())?);
    Ok(ControlReply::Swarm(view))
}

/// # Errors
/// A setting out of range, no quorum, or a conflict.
pub async fn update(
    swarm: &Swarm,
    cert_expiry_ms: Option<u64>,
    heartbeat_period_ms: Option<u64>,
    task_history_limit: Option<u32>,
) -> Result<ControlReply, ControlError> {
    swarm.replica.linearize().await?;
    let (mut config, version) = {
        let state = swarm.replica.state();
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
        .replica
        .write_one(Command::UpdateClusterConfig {
            expected_version: Some(version),
            config,
        })
        .await?;
    let view = SwarmView::of(initialized(&swarm.replica.state())?);
    Ok(ControlReply::Swarm(view))
}

/// Starts a CA rotation; the leader's node duties take it through its stages.
///
/// # Errors
/// A rotation already under way, no quorum, or a conflict.
pub async fn rotate_ca(swarm: &Swarm) -> Result<ControlReply, ControlError> {
    swarm.replica.linearize().await?;
    let (cluster_id, version, root_ca, join_tokens) = {
        let state = swarm.replica.state();
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
        .replica
        .write_one(Command::UpdateCa {
            expected_version: Some(version),
            root_ca,
            ca_rotation: Some(CaRotation::Trusting { next }),
            join_tokens,
        })
        .await?;
    tracing::info!("CA rotation started: nodes learn to trust the new CA");
    swarm.liveness().wake();
    let view = SwarmView::of(initialized(&swarm.replica.state())?);
    Ok(ControlReply::Swarm(view))
}

/// # Errors
/// A bad name or request, or no quorum.
pub async fn issue_client_cert(
    swarm: &Swarm,
    name: String,
    csr_pem: String,
) -> Result<ControlReply, ControlError> {
    if name.trim().is_empty() || name.contains(['/', '\\', '\n']) {
        return Err(ControlError::InvalidArgument(format!(
            "invalid client name {name:?}: use letters, digits, dots and dashes"
        )));
    }
    swarm.replica.linearize().await?;
    let cluster = initialized(&swarm.replica.state())?.clone();
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
        manager_addr: swarm.replica.addr.clone(),
    })
}

pub async fn join_token(
    swarm: &Swarm,
    role: Role,
    rotate: bool,
) -> Result<ControlReply, ControlError> {
    swarm.replica.linearize().await?;
    let (root_ca, mut record) = {
        let state = swarm.replica.state();
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
            .replica
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
        manager_addr: swarm.replica.addr.clone(),
    })
}
