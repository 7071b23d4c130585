//! What the leader heard from each node during its term, and the node status changes that
//! follow from it. Times are monotonic milliseconds from any origin the caller chooses (the
//! leader's clock), so the rules run on virtual time in tests.
//!
//! The rules: a node is down after a silence of `window` (a fresh leader gives every node the
//! window from when it took office, so an election alone marks no node down); it is ready
//! again only on a report actually received (so a node that left stays down); and a node that
//! reports while its runtime cannot run tasks is down all the same, ready again only once it
//! says its runtime runs.

use std::collections::HashMap;

use crate::command::Command;
use crate::model::{Node, NodeState, NodeStatus, ObjectId};
use crate::state::ClusterState;

/// Monotonic milliseconds, from any origin the caller chooses (the leader's clock).
pub type Millis = u64;

/// How a node's status message begins while its runtime cannot run tasks.
pub const RUNTIME_UNAVAILABLE: &str = "runtime unavailable";

/// What a node trusts, and which CA signed its certificate (fingerprints).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeTrust {
    pub roots_fingerprint: String,
    pub issuer_fingerprint: String,
}

/// What a node said of its runtime in its last report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RuntimeWord {
    Runs,
    /// It cannot run tasks, for this reason (its Docker engine is gone, say).
    Unavailable(String),
}

/// What the leader heard from each node during its term (memory only, never in Raft).
#[derive(Clone, Debug, Default)]
pub struct Liveness {
    last_seen: HashMap<ObjectId, Millis>,
    /// Whether each node last called with a manager certificate: a promoted node becomes a
    /// voter only once it holds one, or the other managers would refuse it.
    holds_manager_cert: HashMap<ObjectId, bool>,
    /// What each node last said it trusts and which CA signed its certificate: a CA rotation
    /// moves on only when every live node has caught up.
    trust: HashMap<ObjectId, NodeTrust>,
    /// What each node last said of its runtime this term. A node down for its runtime leaves
    /// that state only once it said it runs again, which a new leader has not heard yet.
    runtimes: HashMap<ObjectId, RuntimeWord>,
    /// When this term of leadership began: nodes not heard from yet are given until then plus
    /// the window.
    leading_since: Option<Millis>,
}

impl Liveness {
    /// A fresh term: what was heard before is forgotten, and the grace period starts at `at`.
    pub fn start_leading(&mut self, at: Millis) {
        *self = Liveness {
            leading_since: Some(at),
            ..Liveness::default()
        };
    }

    /// The node spoke at `at`: a heartbeat, a task report, a join.
    pub fn record(&mut self, node: &str, at: Millis) {
        self.last_seen.insert(node.to_string(), at);
    }

    /// A heartbeat at `at`, and whether the certificate it came with is a manager's.
    pub fn record_heartbeat(&mut self, node: &str, at: Millis, holds_manager_cert: bool) {
        self.record(node, at);
        self.holds_manager_cert
            .insert(node.to_string(), holds_manager_cert);
    }

    /// What a node said of its runtime: `problem` is empty when it can run tasks.
    pub fn record_runtime(&mut self, node: &str, problem: &str) {
        let word = if problem.is_empty() {
            RuntimeWord::Runs
        } else {
            RuntimeWord::Unavailable(problem.to_string())
        };
        self.runtimes.insert(node.to_string(), word);
    }

    pub fn record_trust(&mut self, node: &str, trust: NodeTrust) {
        self.trust.insert(node.to_string(), trust);
    }

    pub fn trust(&self, node: &str) -> Option<&NodeTrust> {
        self.trust.get(node)
    }

    pub fn holds_manager_cert(&self, node: &str) -> bool {
        self.holds_manager_cert.get(node).copied().unwrap_or(false)
    }

    pub fn runtime(&self, node: &str) -> Option<&RuntimeWord> {
        self.runtimes.get(node)
    }

    /// Forgets a node that left, so its last heartbeat cannot make it look alive.
    pub fn forget(&mut self, node: &str) {
        self.last_seen.remove(node);
        self.holds_manager_cert.remove(node);
        self.trust.remove(node);
        self.runtimes.remove(node);
    }

    /// True when the node reported within `window`, or the term is younger than that.
    pub fn is_alive(&self, node: &str, window: Millis, now: Millis) -> bool {
        let since = self.last_seen.get(node).copied().or(self.leading_since);
        since.is_some_and(|t| now.saturating_sub(t) <= window)
    }

    /// True when the node itself reported within `window` (the grace period does not count).
    pub fn has_reported(&self, node: &str, window: Millis, now: Millis) -> bool {
        self.last_seen
            .get(node)
            .is_some_and(|t| now.saturating_sub(*t) <= window)
    }

    /// The first moment the node no longer counts as alive, if it stays silent.
    fn down_at(&self, node: &str, window: Millis) -> Option<Millis> {
        let since = self.last_seen.get(node).copied().or(self.leading_since)?;
        Some(since.saturating_add(window).saturating_add(1))
    }
}

/// The node status changes, and when to look again.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct StatusPlan {
    /// `SetNodeStatus` commands, for the nodes whose status changes now.
    pub commands: Vec<Command>,
    /// The earliest moment a node that is Ready or Unknown once `commands` are applied would
    /// count as down, if nothing more is heard from it; `None` when there is no such node.
    pub wake_at: Option<Millis>,
}

/// Marks nodes down or ready as their reports stop or resume. The caller records the leader's
/// own node as heard before it asks.
pub fn node_statuses(
    state: &ClusterState,
    liveness: &Liveness,
    window: Millis,
    now: Millis,
) -> StatusPlan {
    let mut plan = StatusPlan::default();
    for node in state.nodes() {
        let change = status_change(node, liveness, window, now);
        // A node that stays or becomes down needs no wake-up: only a report brings it back.
        let state_after = change.as_ref().map_or(node.status.state, |s| s.state);
        if state_after != NodeState::Down {
            if let Some(at) = liveness.down_at(&node.id, window).filter(|at| *at > now) {
                plan.wake_at = Some(plan.wake_at.map_or(at, |w| w.min(at)));
            }
        }
        if let Some(status) = change {
            plan.commands.push(Command::SetNodeStatus {
                id: node.id.clone(),
                status,
            });
        }
    }
    plan
}

/// The status `node` moves to now, if it changes.
fn status_change(
    node: &Node,
    liveness: &Liveness,
    window: Millis,
    now: Millis,
) -> Option<NodeStatus> {
    let reported = liveness.has_reported(&node.id, window, now);
    let alive = liveness.is_alive(&node.id, window, now);
    // What the node said of its runtime counts only while it reports.
    let runtime = liveness.runtime(&node.id).filter(|_| reported);
    let runtime_problem = match runtime {
        Some(RuntimeWord::Unavailable(problem)) => Some(problem),
        _ => None,
    };
    match (node.status.state, reported, alive, runtime_problem) {
        // A node that reports, but whose runtime cannot run tasks, is down all the same: its
        // tasks are replaced elsewhere, and the message says why.
        (_, _, _, Some(problem)) => {
            let message = format!("{RUNTIME_UNAVAILABLE}: {problem}");
            if node.status.state == NodeState::Down && node.status.message == message {
                return None;
            }
            Some(NodeStatus {
                state: NodeState::Down,
                message,
            })
        }
        // Down only after the silence (an election's grace included).
        (NodeState::Ready, _, false, None) | (NodeState::Unknown, false, false, None) => {
            Some(NodeStatus {
                state: NodeState::Down,
                message: format!("heartbeat failure: no report for {window} ms"),
            })
        }
        // Down for its runtime: ready only once the node said it runs again.
        (NodeState::Down, true, _, None)
            if node.status.message.starts_with(RUNTIME_UNAVAILABLE)
                && runtime != Some(&RuntimeWord::Runs) =>
        {
            None
        }
        // Ready only on a report actually received, so a node that left stays down.
        (NodeState::Down | NodeState::Unknown, true, _, None) => Some(NodeStatus {
            state: NodeState::Ready,
            message: String::new(),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{node, state_with};

    const WINDOW: Millis = 1_000;

    fn status_of(plan: &StatusPlan, id: &str) -> Option<NodeStatus> {
        plan.commands.iter().find_map(|c| match c {
            Command::SetNodeStatus { id: i, status } if i == id => Some(status.clone()),
            _ => None,
        })
    }

    fn with_status(id: &str, state: NodeState, message: &str) -> crate::model::Node {
        let mut n = node(id, &format!("host-{id}"));
        n.status = NodeStatus {
            state,
            message: message.to_string(),
        };
        n
    }

    #[test]
    fn a_silent_node_goes_down_after_the_window_and_not_before() {
        let state = state_with(None, vec![with_status("n1", NodeState::Ready, "")]);
        let mut heard = Liveness::default();
        heard.start_leading(0);
        heard.record("n1", 500);
        assert_eq!(
            node_statuses(&state, &heard, WINDOW, 1_500).commands,
            vec![]
        );
        let plan = node_statuses(&state, &heard, WINDOW, 1_501);
        let down = status_of(&plan, "n1").expect("down");
        assert_eq!(down.state, NodeState::Down);
        assert_eq!(down.message, "heartbeat failure: no report for 1000 ms");
    }

    #[test]
    fn the_wake_up_is_the_first_moment_a_node_would_go_down() {
        let state = state_with(
            None,
            vec![
                with_status("n1", NodeState::Ready, ""),
                with_status("n2", NodeState::Unknown, ""),
                // Down and never heard: only a report brings it back, so no wake-up for it,
                // though the term's grace would end first (at 1_001).
                with_status("n3", NodeState::Down, "node left"),
            ],
        );
        let mut heard = Liveness::default();
        heard.start_leading(0);
        heard.record("n1", 300);
        heard.record("n2", 700);
        let plan = node_statuses(&state, &heard, WINDOW, 800);
        assert_eq!(plan.wake_at, Some(1_301));
        assert!(node_statuses(&state, &heard, WINDOW, 1_301)
            .commands
            .iter()
            .any(|c| matches!(c, Command::SetNodeStatus { id, .. } if id == "n1")));
    }

    #[test]
    fn a_node_made_ready_now_is_looked_at_again_and_a_node_made_down_is_not() {
        let state = state_with(
            None,
            vec![
                with_status("n1", NodeState::Down, "node left"),
                with_status("n2", NodeState::Ready, ""),
            ],
        );
        let mut heard = Liveness::default();
        heard.start_leading(0);
        heard.record("n1", 2_000);
        // n2 is silent past the grace: it goes down now; n1 came back and is ready now.
        let plan = node_statuses(&state, &heard, WINDOW, 2_100);
        assert_eq!(plan.commands.len(), 2, "{:?}", plan.commands);
        assert_eq!(plan.wake_at, Some(3_001));

        heard.record_runtime("n1", "docker is gone");
        let plan = node_statuses(&state, &heard, WINDOW, 2_100);
        assert_eq!(
            plan.wake_at, None,
            "every node is down once this plan is applied"
        );
    }

    #[test]
    fn a_new_leader_gives_unheard_nodes_the_window_before_marking_them_down() {
        let state = state_with(None, vec![with_status("n1", NodeState::Ready, "")]);
        let mut heard = Liveness::default();
        heard.record("n1", 0);
        // The term starts much later: what an earlier term heard is gone, the grace begins.
        heard.start_leading(10_000);
        assert!(node_statuses(&state, &heard, WINDOW, 10_900)
            .commands
            .is_empty());
        assert!(status_of(&node_statuses(&state, &heard, WINDOW, 11_001), "n1").is_some());
    }

    #[test]
    fn a_down_node_is_ready_again_only_on_a_real_report() {
        let state = state_with(None, vec![with_status("n1", NodeState::Down, "node left")]);
        let mut heard = Liveness::default();
        heard.start_leading(0);
        // Within the grace period, but never heard: stays down.
        assert!(node_statuses(&state, &heard, WINDOW, 10)
            .commands
            .is_empty());
        heard.record("n1", 20);
        let ready = status_of(&node_statuses(&state, &heard, WINDOW, 30), "n1").expect("ready");
        assert_eq!(ready.state, NodeState::Ready);
        assert_eq!(ready.message, "");
    }

    #[test]
    fn a_node_whose_runtime_cannot_run_tasks_is_down_until_it_says_it_runs() {
        let state = state_with(None, vec![with_status("n1", NodeState::Ready, "")]);
        let mut heard = Liveness::default();
        heard.start_leading(0);
        heard.record("n1", 10);
        heard.record_runtime("n1", "docker is gone");
        let down = status_of(&node_statuses(&state, &heard, WINDOW, 20), "n1").expect("down");
        assert_eq!(down.state, NodeState::Down);
        assert_eq!(down.message, "runtime unavailable: docker is gone");

        // Written: the same word again is no news.
        let state = state_with(
            None,
            vec![with_status("n1", NodeState::Down, &down.message)],
        );
        assert!(node_statuses(&state, &heard, WINDOW, 30)
            .commands
            .is_empty());
        // Heard, but its runtime still unavailable in the last word: stays down. A report
        // without a runtime word (a new leader) does not make it ready either.
        let mut new_leader = Liveness::default();
        new_leader.start_leading(0);
        new_leader.record("n1", 40);
        assert!(node_statuses(&state, &new_leader, WINDOW, 50)
            .commands
            .is_empty());
        heard.record_runtime("n1", "");
        heard.record("n1", 60);
        let ready = status_of(&node_statuses(&state, &heard, WINDOW, 70), "n1").expect("ready");
        assert_eq!(ready.state, NodeState::Ready);
    }

    #[test]
    fn a_forgotten_node_no_longer_looks_alive() {
        let mut heard = Liveness::default();
        heard.record_heartbeat("n1", 100, true);
        assert!(heard.has_reported("n1", WINDOW, 200));
        assert!(heard.holds_manager_cert("n1"));
        heard.forget("n1");
        assert!(!heard.has_reported("n1", WINDOW, 200));
        assert!(!heard.is_alive("n1", WINDOW, 200));
        assert!(!heard.holds_manager_cert("n1"));
    }
}
