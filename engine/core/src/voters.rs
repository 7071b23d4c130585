//! Who votes in Raft: the nodes whose role is manager. The plan that brings the voters in line
//! with the roles (join as manager, promote, demote, leave), and the check that refuses to take
//! a manager out of the vote when the others would lose their quorum.

use std::collections::BTreeSet;

use crate::liveness::{Liveness, Millis};
use crate::model::Role;
use crate::state::ClusterState;

/// How the Raft voters should change so that they are the nodes whose role is manager.
#[derive(Debug, PartialEq, Eq)]
pub struct VoterPlan {
    /// Managers not voting yet that reported within the window and hold a manager
    /// certificate: `(raft_id, addr)`. Each must catch up with the log before it votes.
    pub add: Vec<(u64, String)>,
    /// The current voters that stay.
    pub keep: BTreeSet<u64>,
    /// The current voters demoted or gone.
    pub remove: Vec<u64>,
}

/// What [`voter_plan`] decided. Refusal is apart from "nothing to do" so that the caller can
/// say so loudly: it means a bug elsewhere.
#[derive(Debug, PartialEq, Eq)]
pub enum VoterChange {
    /// Nothing to do now: no voter is demoted or gone and no manager is ready to join (one
    /// not heard from or without a manager certificate waits), or the cluster object does not
    /// exist yet.
    None,
    /// A change would leave no manager at all: a bug elsewhere, not an intent, so refused.
    RefusedNoManagerLeft,
    Change(VoterPlan),
}

/// The change that brings `voters` (the current Raft voters, by Raft ID) in line with the
/// nodes whose role is manager, from what was heard within `window` before `now`.
pub fn voter_plan(
    state: &ClusterState,
    voters: &BTreeSet<u64>,
    liveness: &Liveness,
    window: Millis,
    now: Millis,
) -> VoterChange {
    // Until `swarm init` has written the cluster, the first manager's own node record may not
    // exist yet: nothing to reconcile.
    if state.cluster.is_none() {
        return VoterChange::None;
    }
    let wanted: BTreeSet<u64> = state
        .nodes()
        .filter(|n| n.spec.role == Role::Manager)
        .map(|n| n.raft_id)
        .collect();
    let add: Vec<(u64, String)> = state
        .nodes()
        .filter(|n| n.spec.role == Role::Manager && !voters.contains(&n.raft_id))
        .filter(|n| liveness.has_reported(&n.id, window, now))
        .filter(|n| liveness.holds_manager_cert(&n.id))
        .map(|n| (n.raft_id, n.description.addr.clone()))
        .collect();
    let remove: Vec<u64> = voters.difference(&wanted).copied().collect();
    if add.is_empty() && remove.is_empty() {
        return VoterChange::None;
    }
    let keep: BTreeSet<u64> = voters.intersection(&wanted).copied().collect();
    if keep.is_empty() && add.is_empty() {
        return VoterChange::RefusedNoManagerLeft;
    }
    VoterChange::Change(VoterPlan { add, keep, remove })
}

/// Refuses to take voter `leaving` out of the vote when the managers left would not make a
/// quorum among themselves. `this_node` is the leader's own node, which is always reachable.
///
/// # Errors
/// The words for the user: the last manager, or too few reachable managers left.
#[allow(clippy::too_many_arguments)]
pub fn check_quorum_without(
    state: &ClusterState,
    voters: &BTreeSet<u64>,
    leaving: u64,
    this_node: &str,
    liveness: &Liveness,
    window: Millis,
    now: Millis,
    action: &str,
    force_available: bool,
) -> Result<(), String> {
    let force_hint = if force_available {
        "; use --force to ignore this"
    } else {
        ""
    };
    if !voters.contains(&leaving) {
        return Ok(());
    }
    let remaining: Vec<u64> = voters.iter().copied().filter(|v| *v != leaving).collect();
    if remaining.is_empty() {
        return Err(format!(
            "cannot {action}: it is the last manager, and removing it would erase the swarm's \
             state{force_hint}"
        ));
    }
    let reachable = remaining
        .iter()
        .filter(|raft_id| {
            state.nodes().any(|n| {
                n.raft_id == **raft_id
                    && (n.id == this_node || liveness.has_reported(&n.id, window, now))
            })
        })
        .count();
    let quorum = remaining.len() / 2 + 1;
    if reachable < quorum {
        return Err(format!(
            "cannot {action}: only {reachable} of the {} remaining managers are reachable, \
             fewer than the {quorum} needed for quorum; bring managers back first{force_hint}",
            remaining.len()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Node;
    use crate::testing::{cluster, node, state_with};

    const WINDOW: Millis = 1_000;

    fn manager(id: &str, raft_id: u64) -> Node {
        let mut n = node(id, &format!("host-{id}"));
        n.raft_id = raft_id;
        n.spec.role = Role::Manager;
        n.description.addr = format!("127.0.0.{raft_id}:4242");
        n
    }

    fn worker(id: &str, raft_id: u64) -> Node {
        let mut n = manager(id, raft_id);
        n.spec.role = Role::Worker;
        n
    }

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_promoted_node_is_added_only_once_it_reports_with_a_manager_certificate() {
        let state = state_with(Some(cluster()), vec![manager("m1", 1), manager("m2", 2)]);
        let mut heard = Liveness::default();
        heard.start_leading(0);
        // Not heard yet (the grace period does not count), then heard with a worker's
        // certificate: not added.
        assert_eq!(
            voter_plan(&state, &set(&[1]), &heard, WINDOW, 10),
            VoterChange::None
        );
        heard.record_heartbeat("m2", 20, false);
        assert_eq!(
            voter_plan(&state, &set(&[1]), &heard, WINDOW, 30),
            VoterChange::None
        );
        heard.record_heartbeat("m2", 40, true);
        assert_eq!(
            voter_plan(&state, &set(&[1]), &heard, WINDOW, 50),
            VoterChange::Change(VoterPlan {
                add: vec![(2, "127.0.0.2:4242".to_string())],
                keep: set(&[1]),
                remove: vec![],
            })
        );
    }

    #[test]
    fn a_demoted_or_removed_manager_leaves_the_vote() {
        // m2 was demoted; voter 3's node is gone from the state.
        let state = state_with(Some(cluster()), vec![manager("m1", 1), worker("m2", 2)]);
        let heard = Liveness::default();
        assert_eq!(
            voter_plan(&state, &set(&[1, 2, 3]), &heard, WINDOW, 0),
            VoterChange::Change(VoterPlan {
                add: vec![],
                keep: set(&[1]),
                remove: vec![2, 3],
            })
        );
    }

    #[test]
    fn nothing_changes_when_aligned_or_before_the_cluster_exists() {
        let aligned = state_with(Some(cluster()), vec![manager("m1", 1)]);
        let heard = Liveness::default();
        assert_eq!(
            voter_plan(&aligned, &set(&[1]), &heard, WINDOW, 0),
            VoterChange::None
        );
        let no_cluster = state_with(None, vec![worker("m1", 1)]);
        assert_eq!(
            voter_plan(&no_cluster, &set(&[1]), &heard, WINDOW, 0),
            VoterChange::None
        );
    }

    #[test]
    fn a_change_that_leaves_no_manager_is_refused() {
        let state = state_with(Some(cluster()), vec![worker("m1", 1)]);
        let heard = Liveness::default();
        assert_eq!(
            voter_plan(&state, &set(&[1]), &heard, WINDOW, 0),
            VoterChange::RefusedNoManagerLeft
        );
    }

    #[test]
    fn the_last_manager_cannot_leave() {
        let state = state_with(Some(cluster()), vec![manager("m1", 1)]);
        let refused = check_quorum_without(
            &state,
            &set(&[1]),
            1,
            "m1",
            &Liveness::default(),
            WINDOW,
            0,
            "let manager host-m1 leave",
            true,
        )
        .expect_err("refused");
        assert_eq!(
            refused,
            "cannot let manager host-m1 leave: it is the last manager, and removing it would \
             erase the swarm's state; use --force to ignore this"
        );
    }

    #[test]
    fn a_manager_cannot_leave_when_too_few_of_the_others_are_reachable() {
        let state = state_with(
            Some(cluster()),
            vec![manager("m1", 1), manager("m2", 2), manager("m3", 3)],
        );
        let mut heard = Liveness::default();
        heard.start_leading(0);
        // m1 leads and demotes m2; m3 is silent: 1 of the 2 left is reachable, 2 are needed.
        let refused = check_quorum_without(
            &state,
            &set(&[1, 2, 3]),
            2,
            "m1",
            &heard,
            WINDOW,
            100,
            "demote m2",
            false,
        )
        .expect_err("refused");
        assert_eq!(
            refused,
            "cannot demote m2: only 1 of the 2 remaining managers are reachable, fewer than the \
             2 needed for quorum; bring managers back first"
        );
        heard.record("m3", 50);
        assert_eq!(
            check_quorum_without(
                &state,
                &set(&[1, 2, 3]),
                2,
                "m1",
                &heard,
                WINDOW,
                100,
                "demote m2",
                false
            ),
            Ok(())
        );
    }
}
