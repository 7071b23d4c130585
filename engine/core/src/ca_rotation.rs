//! A CA rotation's stages, and when the leader may take the next: first every node that is not
//! down learns to trust the new CA (then it starts signing), then every such node holds a
//! certificate it signed (then the old CA is dropped). Fingerprints come in from the caller:
//! core has no cryptography.

use crate::liveness::Liveness;
use crate::model::{CaRotation, NodeState};
use crate::state::ClusterState;

/// What the leader does next in a CA rotation under way.
#[derive(Debug, PartialEq, Eq)]
pub enum RotationStep {
    /// Nodes not down that have not caught up yet, by hostname.
    Wait { lagging: Vec<String> },
    /// Every live node trusts the new CA: it signs from now on (trusting -> reissuing).
    StartSigning,
    /// Every live node holds a certificate of the new CA: the old one goes (reissuing -> done).
    Complete,
}

/// The next step of the rotation under way; `None` when there is none. `wanted_roots` is the
/// fingerprint of the cluster's trusted roots, `signing` that of the CA that signs now.
pub fn rotation_step(
    state: &ClusterState,
    liveness: &Liveness,
    wanted_roots: &str,
    signing: &str,
) -> Option<RotationStep> {
    let rotation = state.cluster.as_ref()?.ca_rotation.as_ref()?;
    let default_trust = Default::default();
    let lagging: Vec<String> = state
        .nodes()
        .filter(|n| n.status.state != NodeState::Down)
        .filter(|n| {
            let trust = liveness.trust(&n.id).unwrap_or(&default_trust);
            let trusts_new = trust.roots_fingerprint == wanted_roots;
            match rotation {
                CaRotation::Trusting { .. } => !trusts_new,
                CaRotation::Reissuing { .. } => !trusts_new || trust.issuer_fingerprint != signing,
            }
        })
        .map(|n| n.description.hostname.clone())
        .collect();
    Some(if !lagging.is_empty() {
        RotationStep::Wait { lagging }
    } else {
        match rotation {
            CaRotation::Trusting { .. } => RotationStep::StartSigning,
            CaRotation::Reissuing { .. } => RotationStep::Complete,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::liveness::NodeTrust;
    use crate::model::{NodeStatus, RootCa};
    use crate::testing::{cluster, node, state_with};

    fn trust(roots: &str, issuer: &str) -> NodeTrust {
        NodeTrust {
            roots_fingerprint: roots.to_string(),
            issuer_fingerprint: issuer.to_string(),
        }
    }

    fn rotating(rotation: CaRotation) -> ClusterState {
        let mut cluster = cluster();
        cluster.ca_rotation = Some(rotation);
        let mut down = node("n3", "gone");
        down.status = NodeStatus {
            state: NodeState::Down,
            message: "heartbeat failure".to_string(),
        };
        state_with(
            Some(cluster),
            vec![node("n1", "one"), node("n2", "two"), down],
        )
    }

    #[test]
    fn no_rotation_no_step() {
        let state = state_with(Some(cluster()), vec![node("n1", "one")]);
        assert_eq!(rotation_step(&state, &Liveness::default(), "r", "s"), None);
    }

    #[test]
    fn signing_starts_once_every_live_node_trusts_the_new_ca() {
        let state = rotating(CaRotation::Trusting {
            next: RootCa {
                cert_pem: "next".to_string(),
                key_pem: "key".to_string(),
            },
        });
        let mut heard = Liveness::default();
        heard.record_trust("n1", trust("both", "old"));
        heard.record_trust("n2", trust("old-only", "old"));
        assert_eq!(
            rotation_step(&state, &heard, "both", "old"),
            Some(RotationStep::Wait {
                lagging: vec!["two".to_string()]
            })
        );
        // The down node does not hold the rotation back.
        heard.record_trust("n2", trust("both", "old"));
        assert_eq!(
            rotation_step(&state, &heard, "both", "old"),
            Some(RotationStep::StartSigning)
        );
    }

    #[test]
    fn the_rotation_completes_once_every_live_node_holds_a_new_certificate() {
        let state = rotating(CaRotation::Reissuing {
            previous_cert_pem: "old".to_string(),
        });
        let mut heard = Liveness::default();
        heard.record_trust("n1", trust("both", "new"));
        heard.record_trust("n2", trust("both", "old"));
        assert_eq!(
            rotation_step(&state, &heard, "both", "new"),
            Some(RotationStep::Wait {
                lagging: vec!["two".to_string()]
            })
        );
        heard.record_trust("n2", trust("both", "new"));
        assert_eq!(
            rotation_step(&state, &heard, "both", "new"),
            Some(RotationStep::Complete)
        );
    }
}
