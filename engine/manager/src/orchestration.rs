//! The leader's orchestration loop: wires the pure decisions of `essaim_core::updater`,
//! `essaim_core::orchestrator` and `essaim_core::scheduler` to the store. It wakes on every
//! committed change, when a restart delay, a monitor period or an update delay runs out, and
//! once a second in any case. It runs for one term of leadership.
//!
//! ```text
//!  committed changes ──> updater: outdated tasks to replace, update status ──┐
//!                   ├──> orchestrator: tasks to create / shut down / forget ──┤
//!                   ├──> allocator: virtual IPs, new tasks' addresses ────────┴─> one write
//!                   └──> scheduler: pending tasks with their addresses to nodes,
//!                                   or why they wait ──────────────────────────> one write
//! ```

use std::sync::Arc;
use std::time::Duration;

use essaim_api::ControlError;
use essaim_core::event::{Change, Event};
use essaim_core::model::{TaskState, TaskStatus};
use essaim_core::scheduler::{self, Placement};
use essaim_core::{allocator, orchestrator, updater, ClusterState, Command, Timestamp};
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
    loop {
        let sleep = wake_at
            .map(|at| Duration::from_millis(at.0.saturating_sub(replica.clock().now().0)))
            .unwrap_or(IDLE)
            .min(IDLE);
        let mut attention = tokio::select! {
            _ = tokio::time::sleep(sleep) => true,
            received = changes.recv() => match received {
                Ok(batch) => needs_attention(&batch, &replica),
                Err(RecvError::Lagged(_)) => true,
                Err(RecvError::Closed) => return,
            },
        };
        // Everything committed meanwhile is looked at in one pass.
        loop {
            match changes.try_recv() {
                Ok(batch) => attention |= needs_attention(&batch, &replica),
                Err(TryRecvError::Lagged(_)) => attention = true,
                Err(TryRecvError::Empty) => break,
                Err(TryRecvError::Closed) => return,
            }
        }
        if !attention {
            continue;
        }
        match orchestrate(&replica).await {
            Ok(next) => wake_at = next,
            Err(e) => tracing::debug!("orchestration deferred: {e}"),
        }
        if let Err(e) = schedule(&replica).await {
            tracing::debug!("scheduling deferred: {e}");
        }
    }
}

/// Whether a commit can call for orchestration or scheduling. A task that got going (assigned,
/// starting, running) calls for neither, at scale those reports are most of the commits,
/// except for a service under a rolling update: its replacement running may let its old task
/// go (start-first) and starts its monitor period.
fn needs_attention(batch: &[Event], replica: &Replica) -> bool {
    let mut running = Vec::new();
    let attention = batch.iter().any(|event| match &event.change {
        Change::Task(task) => {
            if task.status.state == TaskState::Running && task.desired_state == TaskState::Running {
                running.push(task.service_id.as_str());
            }
            task.status.state == TaskState::Pending
                || task.status.state.is_terminal()
                || task.desired_state != TaskState::Running
        }
        // Scripts renew their locks every few seconds; no task depends on them.
        Change::Lock { .. } | Change::LockRemoved { .. } => false,
        _ => true,
    });
    attention || (!running.is_empty() && any_updating(&replica.state(), &running))
}

/// True if one of these services is under a rolling update.
fn any_updating(state: &ClusterState, service_ids: &[&str]) -> bool {
    service_ids.iter().any(|id| {
        state
            .service_by_id(id)
            .and_then(|s| s.update_status.as_ref())
            .is_some_and(|status| status.state.is_under_way())
    })
}

/// Brings every service's tasks in line with its spec. Returns when to look again.
async fn orchestrate(replica: &Arc<Replica>) -> Result<Option<Timestamp>, ControlError> {
    let planner = replica.clone();
    // A pass over a large cluster takes a while: off the async threads, which Raft needs.
    let (commands, wake_at) =
        tokio::task::spawn_blocking(move || timed("orchestration pass", || plan(&planner)))
            .await
            .map_err(|e| ControlError::Internal(format!("orchestration pass failed: {e}")))?;
    if !commands.is_empty() {
        replica.write_many(commands).await?;
    }
    Ok(wake_at)
}

/// What every service needs now, and when to look again.
fn plan(replica: &Replica) -> (Vec<Command>, Option<Timestamp>) {
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
        for service in state.services() {
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
