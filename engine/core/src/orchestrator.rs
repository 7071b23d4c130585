//! What a service needs now: which tasks to create, which to shut down, which old ones to
//! forget. Pure decisions over a snapshot of the state and the time now; the manager's loop
//! commits the commands and calls again when woken (a change, or the time given in
//! [`Plan::wake_at`], when a restart delay runs out).
//!
//! A task is never restarted in place: its replacement is a new task in the same slot (or on
//! the same node, for a global service), and the old one stays as history.
//!
//! While a rolling update is under way (updating, rolling back, or paused in either), tasks
//! that run an older spec are left to the [`crate::updater`], which replaces them in batches;
//! a slot being updated start-first then has its old task and the replacement alive together
//! until the replacement runs. Lost nodes, ended tasks and the restart policy stay the
//! orchestrator's in every case.

use std::collections::BTreeMap;

use crate::command::Command;
use crate::model::{
    is_current, Availability, Node, NodeState, ObjectId, RestartCondition, Service, ServiceMode,
    ServiceSpec, Task, TaskState, TaskStatus,
};
use crate::state::ClusterState;
use crate::time::Timestamp;

/// The orchestrator's decision for one service.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub commands: Vec<Command>,
    /// When to look at the service again even if nothing changes: a restart delay ends then.
    pub wake_at: Option<Timestamp>,
}

impl Plan {
    pub(crate) fn wake(&mut self, at: Timestamp) {
        self.wake_at = Some(self.wake_at.map_or(at, |t| t.min(at)));
    }
}

/// Where the tasks of a slot (replicated) or of a node (global) are grouped.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Place {
    Slot(u64),
    Node(ObjectId),
}

/// The tasks of `service` by place, oldest first in each.
pub(crate) fn places_of<'a>(
    state: &'a ClusterState,
    service: &Service,
) -> BTreeMap<Place, Vec<&'a Task>> {
    let mut places: BTreeMap<Place, Vec<&Task>> = BTreeMap::new();
    for task in state.tasks_of_service(&service.id) {
        let place = match (task.slot, &task.node_id) {
            (Some(slot), _) => Place::Slot(slot),
            (None, Some(node)) => Place::Node(node.clone()),
            // A global task not yet on a node cannot be told apart: leave it to the reaper.
            (None, None) => continue,
        };
        places.entry(place).or_default().push(task);
    }
    for tasks in places.values_mut() {
        tasks.sort_by_key(|t| (t.created_at, t.id.clone()));
    }
    places
}

/// The places a service with `spec` wants a task in: its slots, or the nodes it may use.
pub(crate) fn wanted_places(
    state: &ClusterState,
    spec: &ServiceSpec,
    eligible: &dyn Fn(&Node) -> bool,
) -> Vec<Place> {
    match spec.mode.slots() {
        Some(slots) => (1..=slots).map(Place::Slot).collect(),
        None => state
            .nodes()
            .filter(|n| eligible(n))
            .map(|n| Place::Node(n.id.clone()))
            .collect(),
    }
}

/// The status message of a task the scheduler has not looked at yet. Not a problem: once the
/// scheduler finds no node, it says why instead.
pub const NEW_TASK_MESSAGE: &str = "waiting to be scheduled";

/// How many tasks `spec` wants: its replicas, or the nodes a global service may use. The
/// count of [`wanted_places`] with the scheduler's filters as `eligible`, which is what the
/// manager passes to [`reconcile`] and [`crate::updater::advance`].
pub fn wanted_tasks(state: &ClusterState, spec: &ServiceSpec) -> u64 {
    match spec.mode.slots() {
        // Counted, not listed: the slots are 1..=replicas.
        Some(slots) => slots,
        None => {
            let eligible = |n: &Node| crate::scheduler::accepts(n, &spec.task);
            wanted_places(state, spec, &eligible).len() as u64
        }
    }
}

/// Decides what `service` needs now. `new_id` gives IDs for the tasks to create;
/// `eligible` says whether a global service may run on a node (the scheduler's filters).
pub fn reconcile(
    state: &ClusterState,
    service: &Service,
    now: Timestamp,
    history_limit: u32,
    new_id: &mut dyn FnMut() -> ObjectId,
    eligible: &dyn Fn(&Node) -> bool,
) -> Plan {
    let mut plan = Plan::default();
    let places = places_of(state, service);
    let wanted = wanted_places(state, &service.spec, eligible);

    // Places no longer wanted. Slots scaled away: their tasks are stopped for removal, then
    // forgotten once stopped, history and all (as Swarm does), and the node removes what they
    // left (a container); a task that never reached a node is forgotten at once. A node a
    // global service may not use now (drained, paused, down, constraints): its task is shut
    // down and its history kept, for the node may be back.
    let wanted_set: std::collections::BTreeSet<&Place> = wanted.iter().collect();
    for (place, tasks) in &places {
        if wanted_set.contains(place) {
            continue;
        }
        for task in tasks {
            match place {
                Place::Slot(_) => {
                    let never_placed = task.status.state < TaskState::Assigned;
                    if task.status.state.is_terminal() || never_placed {
                        plan.commands.push(Command::RemoveTask {
                            id: task.id.clone(),
                        });
                    } else if task.desired_state < TaskState::Remove {
                        plan.commands.push(Command::SetTaskDesiredState {
                            id: task.id.clone(),
                            desired_state: TaskState::Remove,
                        });
                    }
                }
                Place::Node(_) => {
                    if task.desired_state == TaskState::Running {
                        plan.commands.push(shut_down(task));
                    }
                }
            }
        }
    }

    if service.spec.mode.is_job() {
        reconcile_job(state, service, &wanted, &places, now, new_id, &mut plan);
        for place in &wanted {
            let tasks = places.get(place).map(Vec::as_slice).unwrap_or(&[]);
            reap(tasks, history_limit, &mut plan);
        }
        return plan;
    }
    let updating = service
        .update_status
        .as_ref()
        .is_some_and(|s| s.state.is_under_way());
    for place in &wanted {
        let tasks = places.get(place).map(Vec::as_slice).unwrap_or(&[]);
        if updating {
            keep_place_while_updating(state, service, place, tasks, now, new_id, &mut plan);
        } else {
            keep_place(state, service, place, tasks, now, new_id, &mut plan);
        }
        reap(tasks, history_limit, &mut plan);
    }
    plan
}

/// One slot or node: keeps exactly one live task there, as the restart policy allows.
fn keep_place(
    state: &ClusterState,
    service: &Service,
    place: &Place,
    tasks: &[&Task],
    now: Timestamp,
    new_id: &mut dyn FnMut() -> ObjectId,
    plan: &mut Plan,
) {
    let mut live: Vec<&Task> = tasks
        .iter()
        .copied()
        .filter(|t| t.desired_state == TaskState::Running)
        .collect();
    // Only the newest may stay; an older duplicate is a leftover of an interrupted decision.
    while live.len() > 1 {
        let older = live.remove(0);
        plan.commands.push(shut_down(older));
    }
    if let Some(task) = live.first() {
        let node_lost = on_lost_node(state, task);
        let outdated = !is_current(task, service);
        let ended = task.status.state.is_terminal();
        if !(node_lost || outdated || ended) {
            return;
        }
        plan.commands.push(shut_down(task));
        // A lost node or a new spec is not the task's failure: replace it at once.
        if node_lost || outdated {
            plan.commands.push(create(service, place, now, new_id));
            return;
        }
    }
    // No live task: start one unless the restart policy says otherwise.
    match restart_decision(service, tasks, now) {
        Restart::Now => plan.commands.push(create(service, place, now, new_id)),
        Restart::At(at) => plan.wake(at),
        Restart::Never => {}
    }
}

/// A job: each wanted place runs the current spec until a task completes (exits 0); a
/// failure is retried as the restart policy says; a replicated job has at most
/// `max_concurrent` places at work at once, the lowest slots first. An update (a new spec,
/// `--force` included) is no rolling update for a job: the tasks of the old spec stop, and
/// every place runs again.
fn reconcile_job(
    state: &ClusterState,
    service: &Service,
    wanted: &[Place],
    places: &BTreeMap<Place, Vec<&Task>>,
    now: Timestamp,
    new_id: &mut dyn FnMut() -> ObjectId,
    plan: &mut Plan,
) {
    let current = |task: &&Task| is_current(task, service);
    let tasks_of = |place: &Place| places.get(place).map(Vec::as_slice).unwrap_or(&[]);
    let at_work = |task: &Task| {
        task.desired_state == TaskState::Running
            && !task.status.state.is_terminal()
            && is_current(task, service)
            && !on_lost_node(state, task)
    };
    let mut busy = wanted
        .iter()
        .filter(|place| tasks_of(place).iter().any(|t| at_work(t)))
        .count() as u64;
    let limit = match service.spec.mode {
        ServiceMode::ReplicatedJob { max_concurrent, .. } if max_concurrent > 0 => max_concurrent,
        _ => u64::MAX,
    };
    for place in wanted {
        let tasks = tasks_of(place);
        let mut working = false;
        for task in tasks
            .iter()
            .filter(|t| t.desired_state == TaskState::Running)
        {
            if at_work(task) && !working {
                working = true;
                continue;
            }
            // Ended (completed or failed), outdated, lost, or a duplicate.
            plan.commands.push(shut_down(task));
        }
        let done = tasks
            .iter()
            .any(|t| current(t) && t.status.state == TaskState::Complete);
        if working || done {
            continue;
        }
        // The place's history under the current spec: an update starts it afresh.
        let history: Vec<&Task> = tasks.iter().copied().filter(current).collect();
        let lost_last = history.last().is_some_and(|t| on_lost_node(state, t));
        let decision = if lost_last {
            Restart::Now
        } else {
            restart_decision(service, &history, now)
        };
        match decision {
            Restart::Now if busy < limit => {
                plan.commands.push(create(service, place, now, new_id));
                busy += 1;
            }
            // Its turn comes when a place at work completes: that change wakes the loop.
            Restart::Now => {}
            Restart::At(at) => plan.wake(at),
            Restart::Never => {}
        }
    }
}

/// One slot or node while a rolling update is under way: tasks of an older spec are the
/// updater's to replace, so a slot may hold an old task and its replacement (start-first);
/// the old one goes once the replacement runs. A replacement that ended is replaced per the
/// restart policy, the old task (if still there) running meanwhile.
fn keep_place_while_updating(
    state: &ClusterState,
    service: &Service,
    place: &Place,
    tasks: &[&Task],
    now: Timestamp,
    new_id: &mut dyn FnMut() -> ObjectId,
    plan: &mut Plan,
) {
    let live: Vec<&Task> = tasks
        .iter()
        .copied()
        .filter(|t| t.desired_state == TaskState::Running)
        .collect();
    let newest_current = live.iter().rev().find(|t| is_current(t, service));
    let newest_old = live.iter().rev().find(|t| !is_current(t, service));
    // Older duplicates on either side are leftovers of an interrupted decision.
    for task in &live {
        let keep = [newest_current, newest_old]
            .iter()
            .any(|kept| kept.is_some_and(|k| k.id == task.id));
        if !keep {
            plan.commands.push(shut_down(task));
        }
    }
    let mut current = newest_current.copied();
    let mut old = newest_old.copied();
    if let (Some(replacement), Some(previous)) = (current, old) {
        if replacement.status.state == TaskState::Running {
            plan.commands.push(shut_down(previous));
            old = None;
        }
    }
    let mut lost_one = false;
    for slot in [&mut current, &mut old] {
        let Some(task) = *slot else { continue };
        let node_lost = on_lost_node(state, task);
        if node_lost || task.status.state.is_terminal() {
            plan.commands.push(shut_down(task));
            lost_one |= node_lost;
            *slot = None;
        }
    }
    if current.is_some() {
        return;
    }
    // The newest task of the place runs the current spec: a replacement that ended. It is
    // replaced as the restart policy says, whether or not the old task still runs.
    let replacement_ended = tasks.last().is_some_and(|t| is_current(t, service));
    if old.is_some() && !replacement_ended {
        // Outdated: the updater's to replace, in its batch.
        return;
    }
    if lost_one {
        // A lost node is not the task's failure: replace it at once.
        plan.commands.push(create(service, place, now, new_id));
        return;
    }
    match restart_decision(service, tasks, now) {
        Restart::Now => plan.commands.push(create(service, place, now, new_id)),
        Restart::At(at) => plan.wake(at),
        Restart::Never => {}
    }
}

/// True when `task` is on a node it may not stay on (down, drained, gone).
pub(crate) fn on_lost_node(state: &ClusterState, task: &Task) -> bool {
    task.node_id
        .as_deref()
        .is_some_and(|node| !node_can_keep_tasks(state, node))
}

/// True when tasks may stay on the node: it is known, up, and not drained.
fn node_can_keep_tasks(state: &ClusterState, node_id: &str) -> bool {
    state.node_by_id(node_id).is_some_and(|node| {
        node.status.state != NodeState::Down && node.spec.availability != Availability::Drain
    })
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Restart {
    Now,
    At(Timestamp),
    Never,
}

/// Whether the slot (or node) gets a new task, per the restart policy, given its history.
pub(crate) fn restart_decision(service: &Service, tasks: &[&Task], now: Timestamp) -> Restart {
    let Some(last) = tasks.last() else {
        // Never had a task: the first one starts now.
        return Restart::Now;
    };
    let policy = service.spec.task.restart_policy;
    // A task shut down by a manager (scale down, node lost, update) was not a failure of its
    // own: a place that is wanted again simply gets a task.
    let stopped_by_us = last.status.state == TaskState::Shutdown
        || (last.desired_state > TaskState::Running && !last.status.state.is_terminal());
    if !stopped_by_us {
        let failed = matches!(last.status.state, TaskState::Failed | TaskState::Rejected);
        match policy.condition {
            RestartCondition::None => return Restart::Never,
            RestartCondition::OnFailure if !failed => return Restart::Never,
            _ => {}
        }
        if policy.max_attempts > 0 {
            let window_start = if policy.window_ms == 0 {
                Timestamp(0)
            } else {
                Timestamp(now.0.saturating_sub(policy.window_ms))
            };
            // Every task after the first in the window is a restart attempt.
            let in_window = tasks
                .iter()
                .filter(|t| t.created_at >= window_start)
                .count() as u64;
            if in_window.saturating_sub(1) >= policy.max_attempts {
                return Restart::Never;
            }
        }
    }
    let ended_at = last.status.timestamp;
    let ready_at = Timestamp(ended_at.0.saturating_add(policy.delay_ms));
    if stopped_by_us || now >= ready_at {
        Restart::Now
    } else {
        Restart::At(ready_at)
    }
}

/// Forgets the oldest dead tasks of a place beyond the history limit.
fn reap(tasks: &[&Task], history_limit: u32, plan: &mut Plan) {
    let dead: Vec<&&Task> = tasks
        .iter()
        .filter(|t| t.desired_state > TaskState::Running && t.status.state.is_terminal())
        .collect();
    let excess = dead.len().saturating_sub(history_limit as usize);
    for task in dead.into_iter().take(excess) {
        plan.commands.push(Command::RemoveTask {
            id: task.id.clone(),
        });
    }
}

pub(crate) fn shut_down(task: &Task) -> Command {
    Command::SetTaskDesiredState {
        id: task.id.clone(),
        desired_state: TaskState::Shutdown,
    }
}

pub(crate) fn create(
    service: &Service,
    place: &Place,
    now: Timestamp,
    new_id: &mut dyn FnMut() -> ObjectId,
) -> Command {
    let (slot, node_id) = match place {
        Place::Slot(slot) => (Some(*slot), None),
        Place::Node(node) => (None, Some(node.clone())),
    };
    Command::CreateTask {
        task: Task {
            id: new_id(),
            version: 0,
            created_at: now,
            updated_at: now,
            service_id: service.id.clone(),
            service_name: service.spec.name.clone(),
            slot,
            node_id,
            spec: service.spec.task.clone(),
            ports: service.spec.ports.clone(),
            networks: Vec::new(),
            service_version: service.version,
            desired_state: TaskState::Running,
            status: TaskStatus {
                state: TaskState::Pending,
                timestamp: now,
                message: NEW_TASK_MESSAGE.to_string(),
                error: None,
                exit_code: None,
                ports: Vec::new(),
                address: None,
            },
        },
    }
}

#[cfg(test)]
mod tests;
