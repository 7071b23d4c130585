//! Rolling updates: which outdated slots (or nodes) get the service's current spec now, batch
//! by batch, and where the update stands. A pure decision over a snapshot of the state and the
//! time now, like [`crate::orchestrator::reconcile`]: the manager's loop commits the commands
//! and calls again when woken (a change, or [`Plan::wake_at`]: a monitor period or a delay
//! ends). Everything it goes by is in the Raft state (the tasks, and the service's
//! [`UpdateStatus`]), so a new leader picks an update up where it stood.
//!
//! ```text
//!   ServiceUpdate ------------> updating -----------------> completed
//!   (the tasks change)          |     ^
//!               checkpoint,     |     | ServiceUpdateContinue
//!               failure: pause  v     |
//!                               paused
//!
//!   ServiceRollback, or ------> rollback_started ---------> rollback_completed
//!   failure: rollback           |     ^
//!               checkpoint,     |     | ServiceUpdateContinue
//!               failure         v     |
//!                               rollback_paused
//! ```
//!
//! A slot is *outdated* while its live task runs an older spec and the update has not yet
//! started a replacement there. Each batch starts `parallelism` of them (0: all): stop-first
//! shuts the old task down as the replacement is created, start-first leaves it running until
//! the replacement runs (the orchestrator then shuts it down). A replacement is *updated* once
//! it has been RUNNING (healthy, when it has a check) for the monitor period; the next batch
//! starts when nothing is in flight and the delay has passed. A replacement of this update
//! that ends while desired running is a failure, counted once: the orchestrator shuts it down
//! in the same write, and replaces it per the restart policy.

use crate::command::Command;
use crate::model::{
    is_current, FailureAction, Node, ObjectId, Service, Task, TaskState, UpdateConfig, UpdateOrder,
    UpdateState, UpdateStatus,
};
use crate::orchestrator::{
    create, on_lost_node, places_of, restart_decision, shut_down, wanted_places, Place, Plan,
    Restart,
};
use crate::state::ClusterState;
use crate::time::Timestamp;

/// Carries `service`'s update (or rollback) one step on, if one is moving: updating or
/// rolling back, not paused or over. `new_id` gives IDs for the tasks to create; `eligible`
/// says whether a global service may run on a node (the scheduler's filters).
pub fn advance(
    state: &ClusterState,
    service: &Service,
    now: Timestamp,
    new_id: &mut dyn FnMut() -> ObjectId,
    eligible: &dyn Fn(&Node) -> bool,
) -> Plan {
    let mut plan = Plan::default();
    let Some(status) = service.update_status.as_ref() else {
        return plan;
    };
    if !status.state.is_moving() {
        return plan;
    }
    let rollback = status.state.is_rollback();
    let config = if rollback {
        &service.spec.rollback_config
    } else {
        &service.spec.update_config
    };

    let places = places_of(state, service);
    let wanted = wanted_places(state, &service.spec, eligible);
    let mut survey = Survey::default();
    for place in &wanted {
        let tasks = places.get(place).map(Vec::as_slice).unwrap_or(&[]);
        survey.look_at(state, service, status, config, place, tasks, now);
    }

    let mut next = status.clone();
    next.failures += survey.failed.len() as u64;
    next.updated = next.updated.max(survey.updated);
    let wanted_count = wanted.len() as u64;
    let decided = decide(
        service,
        config,
        rollback,
        &mut next,
        &survey,
        wanted_count,
        now,
    );
    if let Decision::RollBack(command) = decided {
        // The rollback replaces the status whole: nothing else of this pass matters.
        plan.commands.push(*command);
        return plan;
    }
    if next != *status {
        plan.commands.push(Command::SetUpdateStatus {
            service_id: service.id.clone(),
            expected: Some(status.clone()),
            status: next.clone(),
        });
    }
    if let Decision::StartBatch(size) = decided {
        for (place, old) in survey.outdated.iter().take(size) {
            if config.order == UpdateOrder::StopFirst {
                plan.commands.push(shut_down(old));
            }
            plan.commands.push(create(service, place, now, new_id));
        }
    }
    if let Some(at) = survey.wake_at {
        plan.wake(at);
    }
    if let (Decision::Wait, Some(at)) = (&decided, next.next_batch_at) {
        plan.wake(at);
    }
    plan
}

/// True when `plan` (from [`advance`]) rolls the service back: its spec changes, so what the
/// orchestrator decided on the same read (a restart of the failed task, with the spec being
/// left) should wait for the next pass.
pub fn rolls_back(plan: &Plan) -> bool {
    plan.commands
        .iter()
        .any(|c| matches!(c, Command::UpdateService { .. }))
}

/// What the update does after this look at the slots.
#[derive(Debug)]
enum Decision {
    /// Nothing to start now: tasks are in flight, the delay runs, or the update paused or
    /// ended (the status says which).
    Wait,
    /// Start this many of the outdated slots, in order.
    StartBatch(usize),
    /// Go back to the previous spec: the one command to write.
    RollBack(Box<Command>),
}

/// Moves `next` (the status as it will be written) on, and says what to start.
fn decide(
    service: &Service,
    config: &UpdateConfig,
    rollback: bool,
    next: &mut UpdateStatus,
    survey: &Survey<'_>,
    wanted: u64,
    now: Timestamp,
) -> Decision {
    let what = if rollback { "rollback" } else { "update" };
    // Failures beyond the ratio, acted upon as they happen: a continued update does not
    // pause again for the failures it was continued after.
    let over_ratio = next.failures.saturating_mul(1000)
        > config.max_failure_ratio_permille.saturating_mul(wanted);
    if let (Some(failed), true) = (survey.failed.first(), over_ratio) {
        let why = format!(
            "task {} failed: {}",
            failed.name(&service.spec.name),
            failure_text(failed)
        );
        let action = match config.failure_action {
            // A rollback that fails has nothing further to go back to.
            FailureAction::Rollback if rollback => FailureAction::Pause,
            action => action,
        };
        match (action, &service.previous_spec) {
            (FailureAction::Continue, _) => {}
            (FailureAction::Rollback, Some(previous)) => {
                // The nodes the failing spec may use: near enough for a checkpoint.
                let wanted = previous.mode.slots().unwrap_or(wanted);
                return Decision::RollBack(Box::new(Command::UpdateService {
                    id: service.id.clone(),
                    expected_version: Some(service.version),
                    spec: previous.clone(),
                    update_status: Some(UpdateStatus::start(
                        UpdateState::RollbackStarted,
                        now,
                        &previous.rollback_config,
                        wanted,
                        format!("update rolled back: {why}"),
                    )),
                }));
            }
            (FailureAction::Rollback, None) => {
                pause(
                    next,
                    rollback,
                    format!("{what} paused: {why} (no previous spec to roll back to)"),
                );
                return Decision::Wait;
            }
            (FailureAction::Pause, _) => {
                pause(next, rollback, format!("{what} paused: {why}"));
                return Decision::Wait;
            }
        }
    }

    if survey.outdated.is_empty() && survey.in_flight == 0 {
        next.state = if rollback {
            UpdateState::RollbackCompleted
        } else {
            UpdateState::Completed
        };
        next.completed_at = Some(now);
        next.message = format!("{what} completed");
        next.next_batch_at = None;
        return Decision::Wait;
    }

    let left_to_checkpoint = next.pause_at.map(|at| at.saturating_sub(next.updated));
    if left_to_checkpoint == Some(0) && !survey.outdated.is_empty() {
        pause(
            next,
            rollback,
            format!(
                "paused at the checkpoint: {} of {wanted} tasks updated",
                next.updated
            ),
        );
        return Decision::Wait;
    }

    if survey.in_flight > 0 || survey.outdated.is_empty() {
        return Decision::Wait;
    }
    // The previous batch is over (every slot's replacement updated or failed): the delay runs
    // from now, once, and is kept in the status so that a new leader waits no less.
    let after_a_batch = next.updated > 0 || next.failures > 0;
    if config.delay_ms > 0 && after_a_batch {
        match next.next_batch_at {
            None => {
                next.next_batch_at = Some(Timestamp(now.0.saturating_add(config.delay_ms)));
                return Decision::Wait;
            }
            Some(at) if now < at => return Decision::Wait,
            Some(_) => next.next_batch_at = None,
        }
    }
    let mut size = match config.parallelism {
        0 => survey.outdated.len(),
        n => usize::try_from(n).unwrap_or(usize::MAX),
    };
    if let Some(left) = left_to_checkpoint {
        size = size.min(usize::try_from(left).unwrap_or(usize::MAX));
    }
    Decision::StartBatch(size)
}

fn pause(next: &mut UpdateStatus, rollback: bool, message: String) {
    next.state = if rollback {
        UpdateState::RollbackPaused
    } else {
        UpdateState::Paused
    };
    next.message = message;
    next.next_batch_at = None;
}

/// Why a task failed, as its node said it.
fn failure_text(task: &Task) -> String {
    let status = &task.status;
    match status.error.as_deref() {
        Some(error) if !error.is_empty() => error.to_string(),
        _ if !status.message.is_empty() => status.message.clone(),
        _ => status.state.to_string(),
    }
}

/// The slots (or nodes) of a service, as the update sees them.
#[derive(Default)]
struct Survey<'a> {
    /// Slots still on an older spec that this update has not touched, in order, with their
    /// live task.
    outdated: Vec<(Place, &'a Task)>,
    /// Slots being replaced: a replacement not yet updated, or a slot waiting for a task.
    in_flight: u64,
    /// Slots whose replacement from this update has passed its monitor period.
    updated: u64,
    /// Replacements of this update that ended while still wanted: failures seen now, each
    /// once (the orchestrator shuts them down in the same write).
    failed: Vec<&'a Task>,
    /// When a monitor period ends.
    wake_at: Option<Timestamp>,
}

impl<'a> Survey<'a> {
    #[allow(clippy::too_many_arguments)]
    fn look_at(
        &mut self,
        state: &ClusterState,
        service: &Service,
        status: &UpdateStatus,
        config: &UpdateConfig,
        place: &Place,
        tasks: &[&'a Task],
        now: Timestamp,
    ) {
        let live = || {
            tasks
                .iter()
                .rev()
                .copied()
                .filter(|t| t.desired_state == TaskState::Running)
        };
        let replacement = live().find(|t| is_current(t, service));
        let old = live().find(|t| !is_current(t, service));
        // Tasks of the current spec created since the update started are its replacements.
        let of_this_update = |t: &Task| t.created_at >= status.started_at;
        let started_here = tasks
            .iter()
            .any(|t| is_current(t, service) && of_this_update(t));

        if let Some(task) = replacement {
            if !of_this_update(task) {
                // Ran the spec before the update started: nothing to replace (an old task
                // beside it is the orchestrator's to shut down).
                if old.is_some() {
                    self.in_flight += 1;
                }
                return;
            }
            if task.status.state.is_terminal() {
                self.failed.push(task);
                self.after_failure(service, config, tasks, now);
                return;
            }
            let running_since = task.status.timestamp;
            let monitored_until = Timestamp(running_since.0.saturating_add(config.monitor_ms));
            if task.status.state == TaskState::Running && now >= monitored_until {
                if old.is_some() {
                    // Start-first: the old task is being shut down.
                    self.in_flight += 1;
                } else {
                    self.updated += 1;
                }
                return;
            }
            self.in_flight += 1;
            if task.status.state == TaskState::Running {
                self.wake(monitored_until);
            }
            return;
        }
        if started_here {
            // This update's replacement ended and was shut down: the restart policy brings
            // another, or gave up.
            self.after_failure(service, config, tasks, now);
            return;
        }
        match old {
            Some(task) => {
                if on_lost_node(state, task) || task.status.state.is_terminal() {
                    // The orchestrator replaces it now, with the current spec.
                    self.in_flight += 1;
                } else {
                    self.outdated.push((place.clone(), task));
                }
            }
            None => {
                // No task: the orchestrator starts one (with the current spec), unless the
                // restart policy gave up on the slot.
                if restart_decision(service, tasks, now) != Restart::Never {
                    self.in_flight += 1;
                }
            }
        }
    }

    /// A slot whose replacement failed: in flight while the restart policy brings another
    /// (it may yet pass), unless the update goes on regardless (`continue`) or the policy
    /// gave up.
    fn after_failure(
        &mut self,
        service: &Service,
        config: &UpdateConfig,
        tasks: &[&Task],
        now: Timestamp,
    ) {
        let goes_on = config.failure_action == FailureAction::Continue;
        if !goes_on && restart_decision(service, tasks, now) != Restart::Never {
            self.in_flight += 1;
        }
    }

    fn wake(&mut self, at: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(at, |t| t.min(at)));
    }
}

#[cfg(test)]
mod tests;
