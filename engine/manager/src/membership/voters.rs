//! The Raft voters kept in line with the nodes whose role is manager: join as manager,
//! promote, demote, leave. `essaim_core::voters` decides; this carries the plan out through
//! openraft, one membership change at a time.

use std::collections::BTreeSet;
use std::time::Duration;

use essaim_api::ControlError;
use essaim_core::voters::{voter_plan, VoterChange};
use openraft::BasicNode;

use crate::identity::RaftId;
use crate::liveness::{down_after, millis, Liveness};
use crate::replica::Replica;

/// How long adding a manager may take to copy the log to it before the attempt is given up
/// (and tried again on a later tick).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(15);

/// Changes the voters, one change at a time: openraft refuses overlapping ones.
#[derive(Default)]
pub struct Voters {
    one_at_a_time: tokio::sync::Mutex<()>,
}

impl Voters {
    /// Brings the Raft voters in line with the nodes whose role is manager: adds the ones that
    /// are alive (after copying the log to them), removes the ones demoted or gone.
    ///
    /// # Errors
    /// Raft refused or timed out; the next tick tries again.
    pub async fn reconcile(
        &self,
        replica: &Replica,
        liveness: &Liveness,
    ) -> Result<(), ControlError> {
        let _one_at_a_time = self.one_at_a_time.lock().await;
        let voters = replica.voters();
        let plan = {
            let state = replica.state();
            let window = millis(down_after(&state));
            liveness.read(|heard| voter_plan(&state, &voters, heard, window, liveness.now()))
        };
        let plan = match plan {
            VoterChange::None => return Ok(()),
            VoterChange::RefusedNoManagerLeft => {
                tracing::error!(
                    ?voters,
                    "refusing a membership change that leaves no manager"
                );
                return Ok(());
            }
            VoterChange::Change(plan) => plan,
        };
        let mut new_voters: BTreeSet<RaftId> = plan.keep;
        for (raft_id, addr) in plan.add {
            tracing::info!(raft_id, %addr, "adding a manager: copying the log to it");
            let added = tokio::time::timeout(
                CATCH_UP_TIMEOUT,
                replica
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
            replica.raft().change_membership(new_voters, false),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(ControlError::Unavailable(format!(
                "changing the managers failed: {e}"
            ))),
            Err(_) => Err(replica.no_quorum("changing the managers timed out")),
        }
    }
}

/// Refuses to take a manager out of the vote when the managers left would not make a
/// quorum among themselves.
///
/// # Errors
/// The removal would leave the cluster without quorum, or without managers at all.
pub fn check_quorum_without(
    replica: &Replica,
    liveness: &Liveness,
    leaving: RaftId,
    action: &str,
    force_available: bool,
) -> Result<(), ControlError> {
    let voters = replica.voters();
    let state = replica.state();
    let window = millis(down_after(&state));
    liveness
        .read(|heard| {
            essaim_core::voters::check_quorum_without(
                &state,
                &voters,
                leaving,
                replica.node_id(),
                heard,
                window,
                liveness.now(),
                action,
                force_available,
            )
        })
        .map_err(ControlError::FailedPrecondition)
}
