//! The leader's part in a CA rotation: it moves the rotation to its next stage once every node
//! that is not down has caught up (all trust the new CA: it starts signing; all hold a
//! certificate it signed: the old CA is dropped). `essaim_core::ca_rotation` decides; this
//! writes the decision.

use essaim_api::tls::{self, TlsState};
use essaim_api::ControlError;
use essaim_core::ca_rotation::{rotation_step, RotationStep};
use essaim_core::model::{CaRotation, JoinTokens, Role};
use essaim_core::Command;

use crate::liveness::{trust_of, Liveness};
use crate::replica::Replica;
use crate::security::ca;
use crate::security::renewal::signing_fingerprint;

/// Takes the rotation one stage further when the nodes allow it.
///
/// # Errors
/// The write failed; the next tick tries again.
pub async fn advance(
    replica: &Replica,
    liveness: &Liveness,
    tls: &TlsState,
) -> Result<(), ControlError> {
    liveness.record_trust(replica.node_id(), trust_of(tls));
    let (cluster, step) = {
        let state = replica.state();
        let Some(cluster) = state.cluster.clone() else {
            return Ok(());
        };
        let wanted_roots = tls::roots_fingerprint(&cluster.trusted_roots_pem());
        let signing = signing_fingerprint(&cluster);
        let step = liveness.read(|heard| rotation_step(&state, heard, &wanted_roots, &signing));
        (cluster, step)
    };
    let (root_ca, ca_rotation, join_tokens) = match (step, cluster.ca_rotation.as_ref()) {
        (None, _) | (_, None) => return Ok(()),
        (Some(RotationStep::Wait { lagging }), _) => {
            tracing::debug!(?lagging, "CA rotation waiting for nodes");
            return Ok(());
        }
        (Some(RotationStep::StartSigning), Some(CaRotation::Trusting { next })) => {
            tracing::info!("CA rotation: every node trusts the new CA; it signs from now on");
            let tokens = JoinTokens {
                worker: ca::new_token(next, Role::Worker)?,
                manager: ca::new_token(next, Role::Manager)?,
            };
            (
                next.clone(),
                Some(CaRotation::Reissuing {
                    previous_cert_pem: cluster.root_ca.cert_pem.clone(),
                }),
                tokens,
            )
        }
        (Some(RotationStep::Complete), Some(CaRotation::Reissuing { .. })) => {
            tracing::info!("CA rotation complete: every node holds a certificate of the new CA");
            (cluster.root_ca.clone(), None, cluster.join_tokens.clone())
        }
        // A step that does not fit the stage would be a bug in the decision: do nothing.
        (Some(_), Some(_)) => return Ok(()),
    };
    replica
        .write_one(Command::UpdateCa {
            expected_version: Some(cluster.version),
            root_ca,
            ca_rotation,
            join_tokens,
        })
        .await?;
    Ok(())
}
