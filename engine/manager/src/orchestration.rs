//! The leader's orchestration loop: wires the pure decisions of `essaim_core::orchestrator`
//! and `essaim_core::scheduler` to the store. It wakes on every committed change, when a
//! restart delay runs out, and once a second in any case; it acts only while this node
//! leads.
//!
//! ```text
//!  committed changes ──> orchestrator: tasks to create / shut down / forget ──> one write
//!                   └──> scheduler: pending tasks to nodes, or why they wait ──> one write
//! ```

use std::sync::Arc;
use std::time::Duration;

use essaim_api::ControlError;
use essaim_core::model::{TaskState, TaskStatus};
use essaim_core::scheduler::{self, Placement};
use essaim_core::{orchestrator, Command, Timestamp};

use crate::identity::new_object_id;
use crate::swarm::{now, Leader, Swarm};

/// The longest the loop sleeps when nothing happens.
const IDLE: Duration = Duration::from_secs(1);

pub async fn run(swarm: Arc<Swarm>) {
    let mut changes = swarm.shared().subscribe();
    let mut wake_at: Option<Timestamp> = None;
    loop {
        let sleep = wake_at
            .map(|at| Duration::from_millis(at.0.saturating_sub(now().0)))
            .unwrap_or(IDLE)
            .min(IDLE);
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            received = changes.recv() => {
                if let Err(tokio::sync::broadcast::error::RecvError::Closed) = received {
                    return;
                }
            }
        }
        if swarm.leader() != Leader::Me {
            continue;
        }
        match orchestrate(&swarm).await {
            Ok(next) => wake_at = next,
            Err(e) => tracing::debug!("orchestration deferred: {e}"),
        }
        if let Err(e) = schedule(&swarm).await {
            tracing::debug!("scheduling deferred: {e}");
        }
    }
}

/// Brings every service's tasks in line with its spec. Returns when to look again.
async fn orchestrate(swarm: &Swarm) -> Result<Option<Timestamp>, ControlError> {
    let time = now();
    let (commands, wake_at) = {
        let state = swarm.state();
        let history_limit = state
            .cluster
            .as_ref()
            .map(|c| c.config.task_history_limit)
            .unwrap_or(5);
        let mut commands = Vec::new();
        let mut wake_at: Option<Timestamp> = None;
        for service in state.services() {
            let plan = orchestrator::reconcile(
                &state,
                service,
                time,
                history_limit,
                &mut new_object_id,
                &|node| scheduler::accepts(node, &service.spec.task),
            );
            commands.extend(plan.commands);
            if let Some(at) = plan.wake_at {
                wake_at = Some(wake_at.map_or(at, |w: Timestamp| w.min(at)));
            }
        }
        (commands, wake_at)
    };
    if !commands.is_empty() {
        swarm.write_many(commands).await?;
    }
    Ok(wake_at)
}

/// Places pending tasks, or records why they wait.
async fn schedule(swarm: &Swarm) -> Result<(), ControlError> {
    let time = now();
    let commands: Vec<Command> = {
        let state = swarm.state();
        let pending: Vec<_> = state
            .tasks()
            .filter(|t| {
                t.status.state == TaskState::Pending && t.desired_state == TaskState::Running
            })
            .collect();
        if pending.is_empty() {
            return Ok(());
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
    };
    if !commands.is_empty() {
        swarm.write_many(commands).await?;
    }
    Ok(())
}
