//! The leader's orchestration loop: wires the pure decisions of `essaim_core::updater`,
//! `essaim_core::orchestrator` and `essaim_core::scheduler` to the store. It wakes on every
//! committed change, when a restart delay, a monitor period or an update delay runs out, and
//! once a second in any case. A commit about one service's spec or tasks is looked at for
//! that service only; anything else (a node, a network, a timer, the second's pass) for every
//! service. It runs for one term of leadership.
//!
//! ```text
//!  committed changes ──> updater: outdated tasks to replace, update status ──┐
//!                   ├──> orchestrator: tasks to create / shut down / forget ──┤
//!                   ├──> allocator: virtual IPs, new tasks' addresses ────────┴─> one write
//!                   └──> scheduler: pending tasks with their addresses to nodes,
//!                                   or why they wait ──────────────────────────> one write
//! ```

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use essaim_api::ControlError;
use essaim_core::event::{Change, Event};
use essaim_core::model::{ObjectId, TaskState, TaskStatus};
use essaim_core::scheduler::{self, Placement};
use essaim_core::{allocator, orchestrator, updater, Command, Timestamp};
use tokio::sync::broadcast::error::{RecvError, TryRecvError};

use crate::clock::timed;
use crate::identity::new_object_id;
use crate::replica::Replica;
/// The longest the loop sleeps when nothing happens.
const IDLE: Duration = Duration::from_secs(1);

pub async fn run(replica: Arc<Replica>) {
    let mut changes = replica.shared().subscribe();
    // A new term looks at everything at once.
    let mut wake_at: Option<Timestamp> = Some(replica.clock().now());
    let mut last_full_pass = tokio::time::Instant::now();
    loop {
        let sleep = wake_at
            .map(|at| Duration::from_millis(at.0.saturating_sub(replica.clock().now().0)))
            .unwrap_or(IDLE)
            .min(IDLE.saturating_sub(last_full_pass.elapsed()));
        let mut focus = tokio::select! {
            _ = tokio::time::sleep(sleep) => Focus::Everything,
            received = changes.recv() => match received {
                Ok(batch) => focus_on(&batch, &replica),
                Err(RecvError::Lagged(_)) => Focus::Everything,
                Err(RecvError::Closed) => return,
            },
        };
        // Everything committed meanwhile is looked at in one pass.
        loop {
            match changes.try_recv() {
                Ok(batch) => focus.add(focus_on(&batch, &replica)),
                Err(TryRecvError::Lagged(_)) => focus = Focus::Everything,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return,
            }
        }
        // A restart delay or a monitor period that ran out, and once a second in any case,
        // whatever else keeps the loop busy: a pass over everything.
        let due = wake_at.is_some_and(|at| at <= replica.clock().now());
        if due || last_full_pass.elapsed() >= IDLE {
            focus = Focus::Everything;
        }
        if focus.is_nothing() {
            continue;
        }
        let full = matches!(focus, Focus::Everything);
        if full {
            last_full_pass = tokio::time::Instant::now();
        }
        match orchestrate(&replica, focus).await {
            Ok(next) if full => wake_at = next,
            // A pass over some services says nothing of the others' wake-ups: keep the
            // earliest (one no longer needed costs a pass, no more).
            Ok(next) => wake_at = earliest(wake_at, next),
            Err(e) => tracing::debug!("orchestration deferred: {e}"),
        }
        if let Err(e) = schedule(&replica).await {
            tracing::debug!("scheduling deferred: {e}");
        }
    }
}

fn earliest(a: Option<Timestamp>, b: Option<Timestamp>) -> Option<Timestamp> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The services an orchestration pass must look at.
#[derive(Debug, PartialEq, Eq)]
enum Focus {
    Everything,
    /// Only these (none: no pass at all). A commit about one service's own objects (its spec,
    /// its tasks) changes what no other service needs.
    Services(BTreeSet<ObjectId>),
}

impl Focus {
    fn nothing() -> Focus {
        Focus::Services(BTreeSet::new())
    }

    fn is_nothing(&self) -> bool {
        matches!(self, Focus::Services(ids) if ids.is_empty())
    }

    fn add(&mut self, other: Focus) {
        match (self, other) {
            (Focus::Everything, _) => {}
            (this, Focus::Everything) => *this = Focus::Everything,
            (Focus::Services(ids), Focus::Services(more)) => ids.extend(more),
        }
    }

    fn service(&mut self, id: &str) {
        if let Focus::Services(ids) = self {
            ids.insert(id.to_string());
        }
    }
}

/// What a commit calls for. A task that got going (assigned, starting, running) calls for
/// nothing: at scale those reports are most of the commits, except for a service under a
/// rolling update, whose replacement running may let its old task go (start-first) and starts
/// its monitor period. A service's spec or a task's end concerns its service only; nodes,
/// networks, secrets and the cluster's settings may concern any.
fn focus_of(batch: &[Event], is_updating: impl Fn(&str) -> bool) -> Focus {
    let mut focus = Focus::nothing();
    let mut running = Vec::new();
    for event in batch {
        match &event.change {
            Change::Task(task) => {
                if task.status.state == TaskState::Running
                    && task.desired_state == TaskState::Running
                {
                    running.push(task.service_id.as_str());
                }
                if task.status.state == TaskState::Pending
                    || task.status.state.is_terminal()
                    || task.desired_state != TaskState::Running
                {
                    focus.service(&task.service_id);
                }
            }
            Change::Service(service) => focus.service(&service.id),
            // Scripts renew their locks every few seconds; no task depends on them.
            Change::Lock { .. } | Change::LockRemoved { .. } => {}
            _ => return Focus::Everything,
        }
    }
    for id in running {
        if is_updating(id) {
            focus.service(id);
        }
    }
    focus
}

/// The services of `batch` that call for a pass, as [`focus_of`] says.
fn focus_on(batch: &[Event], replica: &Replica) -> Focus {
    focus_of(batch, |service_id| {
        replica
            .state()
            .service_by_id(service_id)
            .and_then(|s| s.update_status.as_ref())
            .is_some_and(|status| status.state.is_under_way())
    })
}

/// Brings the tasks of the services in `focus` in line with their specs. Returns when to
/// look again.
async fn orchestrate(
    replica: &Arc<Replica>,
    focus: Focus,
) -> Result<Option<Timestamp>, ControlError> {
    let planner = replica.clone();
    // A pass over a large cluster takes a while: off the async threads, which Raft needs.
    let (commands, wake_at) =
        tokio::task::spawn_blocking(move || timed("orchestration pass", || plan(&planner, &focus)))
            .await
            .map_err(|e| ControlError::Internal(format!("orchestration pass failed: {e}")))?;
    if !commands.is_empty() {
        replica.write_many(commands).await?;
    }
    Ok(wake_at)
}

/// What the services in `focus` need now, and when to look again.
fn plan(replica: &Replica, focus: &Focus) -> (Vec<Command>, Option<Timestamp>) {
    let time = replica.clock().now();
    {
        let state = replica.state_copy();
        let history_limit = state
            .cluster
            .as_ref()
            .map(|c| c.config.task_history_limit)
            .unwrap_or(5);
        let mut commands = Vec::new();
        let mut wake_at: Option<Timestamp> = None;
        let services: Vec<_> = match focus {
            Focus::Everything => state.services().collect(),
            Focus::Services(ids) => ids
                .iter()
                .filter_map(|id| state.service_by_id(id))
                .collect(),
        };
        for service in services {
            let eligible = |node: &_| scheduler::accepts(node, &service.spec.task);
            let update = updater::advance(&state, service, time, &mut new_object_id, &eligible);
            // A rollback changes the spec: the orchestrator decides on the new one next pass
            // rather than restart the failed task with the spec being left.
            let plans = if updater::rolls_back(&update) {
                vec![update]
            } else {
                let orchestration = orchestrator::reconcile(
                    &state,
                    service,
                    time,
                    history_limit,
                    &mut new_object_id,
                    &eligible,
                );
                vec![update, orchestration]
            };
            for plan in plans {
                commands.extend(plan.commands);
                if let Some(at) = plan.wake_at {
                    wake_at = Some(wake_at.map_or(at, |w: Timestamp| w.min(at)));
                }
            }
        }
        allocator::allocate(&state, time, &mut commands);
        (commands, wake_at)
    }
}

/// Places pending tasks, or records why they wait.
async fn schedule(replica: &Arc<Replica>) -> Result<(), ControlError> {
    let planner = replica.clone();
    let commands =
        tokio::task::spawn_blocking(move || timed("scheduling pass", || placements(&planner)))
            .await
            .map_err(|e| ControlError::Internal(format!("scheduling pass failed: {e}")))?;
    if !commands.is_empty() {
        replica.write_many(commands).await?;
    }
    Ok(())
}

/// The placements of the pending tasks, and the reasons of those that must wait.
fn placements(replica: &Replica) -> Vec<Command> {
    let time = replica.clock().now();
    let state = replica.state_copy();
    {
        let pending: Vec<_> = state
            .tasks()
            .filter(|t| {
                t.status.state == TaskState::Pending
                    && t.desired_state == TaskState::Running
                    // A task waits for its addresses, saying why, before it waits for a node.
                    && !allocator::needs_addresses(t)
            })
            .collect();
        if pending.is_empty() {
            return Vec::new();
        }
        scheduler::schedule(&state, &pending)
            .into_iter()
            .filter_map(|placement| match placement {
                Placement::Assign { task_id, node_id } => Some(Command::AssignTask {
                    id: task_id,
                    node_id,
                }),
                Placement::Wait { task_id, reason } => {
                    // Write a reason only when it changed: waiting is not news.
                    let unchanged = state
                        .task_by_id(&task_id)
                        .is_some_and(|t| t.status.message == reason);
                    (!unchanged).then(|| Command::UpdateTaskStatus {
                        id: task_id,
                        status: TaskStatus::new(TaskState::Pending, time, reason),
                    })
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use essaim_core::model::{Service, ServiceMode, Task, TaskSpec};
    use essaim_core::testing;

    use super::*;

    fn service(id: &str) -> Service {
        let mut service =
            testing::service(ServiceMode::Replicated { replicas: 1 }, TaskSpec::default());
        service.id = id.into();
        service
    }

    fn task(service_id: &str, state: TaskState) -> Task {
        let mut task = testing::task(&format!("{service_id}-task"), &service(service_id), 1);
        task.status.state = state;
        task
    }

    fn events(changes: Vec<Change>) -> Vec<Event> {
        changes
            .into_iter()
            .enumerate()
            .map(|(index, change)| Event {
                index: index as u64,
                change,
            })
            .collect()
    }

    fn services(ids: &[&str]) -> Focus {
        Focus::Services(ids.iter().map(|id| id.to_string()).collect())
    }

    #[test]
    fn a_service_change_or_a_task_that_ended_concerns_its_service_only() {
        let batch = events(vec![
            Change::Service(service("web")),
            Change::Task(task("db", TaskState::Failed)),
            Change::Task(task("cache", TaskState::Running)),
        ]);
        assert_eq!(focus_of(&batch, |_| false), services(&["db", "web"]));
    }

    #[test]
    fn a_task_running_concerns_its_service_only_while_it_updates() {
        let batch = events(vec![Change::Task(task("web", TaskState::Running))]);
        assert!(focus_of(&batch, |_| false).is_nothing());
        assert_eq!(focus_of(&batch, |id| id == "web"), services(&["web"]));
    }

    #[test]
    fn a_node_or_a_removed_service_concerns_every_service_and_a_lock_none() {
        for change in [
            Change::NodeRemoved { id: "n1".into() },
            Change::ServiceRemoved { id: "web".into() },
        ] {
            let batch = events(vec![Change::Service(service("web")), change]);
            assert_eq!(focus_of(&batch, |_| false), Focus::Everything);
        }
        let lock = events(vec![Change::LockRemoved {
            name: "nightly".into(),
        }]);
        assert!(focus_of(&lock, |_| false).is_nothing());
    }

    #[test]
    fn focuses_add_up_and_everything_absorbs_the_rest() {
        let mut focus = services(&["web"]);
        focus.add(services(&["db"]));
        assert_eq!(focus, services(&["db", "web"]));
        focus.add(Focus::Everything);
        focus.add(services(&["cache"]));
        assert_eq!(focus, Focus::Everything);
        assert_eq!(
            earliest(Some(Timestamp(5)), Some(Timestamp(3))),
            Some(Timestamp(3))
        );
        assert_eq!(earliest(None, Some(Timestamp(3))), Some(Timestamp(3)));
        assert_eq!(earliest(Some(Timestamp(5)), None), Some(Timestamp(5)));
    }
}
