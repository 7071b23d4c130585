//! What the leader does with the service requests of the control API: create, list,
//! inspect, update, roll back, continue a paused update, scale and remove services, and list
//! tasks. Specs are checked whole before anything is written; the orchestration loop (and its
//! updater) does the rest.

use essaim_api::control::{ServiceView, TaskView};
use essaim_api::{ControlError, ControlReply};
use essaim_core::is_current;
use essaim_core::model::{
    Checkpoint, Service, ServiceMode, ServiceSpec, Task, TaskState, UpdateState, UpdateStatus,
};
use essaim_core::orchestrator::{wanted_tasks, NEW_TASK_MESSAGE};
use essaim_core::{allocator, ClusterState, Command};

use crate::identity::new_object_id;
use crate::swarm::Swarm;

/// # Errors
/// An invalid spec (naming the flag at fault), or a name already taken.
pub async fn create(swarm: &Swarm, mut spec: ServiceSpec) -> Result<ControlReply, ControlError> {
    spec.validate()
        .map_err(|e| ControlError::InvalidArgument(e.to_string()))?;
    swarm.replica.before_write().await?;
    join_mesh(swarm, &mut spec).await?;
    swarm
        .replica
        .data_key()
        .seal_registry_auth(&mut spec, None)?;
    {
        let state = swarm.replica.state();
        allocator::check_room(&state, &spec, None)?;
        allocator::ports::assign(&state, None, &mut spec)?;
    }
    let service = Service {
        id: new_object_id(),
        version: 0,
        created_at: Default::default(),
        updated_at: Default::default(),
        spec,
        previous_spec: None,
        update_status: None,
        virtual_ips: Vec::new(),
    };
    let id = service.id.clone();
    swarm
        .replica
        .write_one(Command::CreateService { service })
        .await?;
    tracing::info!(service = %id, "service created");
    written(swarm, &id)
}

/// Puts a service that publishes an ingress port on the ingress network, made first if the
/// cluster has none yet; takes one that publishes none off it.
async fn join_mesh(swarm: &Swarm, spec: &mut ServiceSpec) -> Result<(), ControlError> {
    if allocator::ports::uses_mesh(spec) {
        super::networks::ensure_ingress(swarm).await?;
    }
    allocator::ports::join_ingress(spec);
    Ok(())
}

/// # Errors
/// No quorum.
pub async fn list(swarm: &Swarm) -> Result<ControlReply, ControlError> {
    swarm.replica.linearize().await?;
    let state = swarm.replica.state();
    Ok(ControlReply::Services(
        state.services().map(|s| view(&state, s)).collect(),
    ))
}

/// # Errors
/// Unknown service, or no quorum.
pub async fn inspect(swarm: &Swarm, name: &str) -> Result<ControlReply, ControlError> {
    swarm.replica.linearize().await?;
    written(swarm, name)
}

/// The service as this leader's state has it. After a write of ours that is current: a write
/// returns once applied here, so no further confirmation round is needed.
fn written(swarm: &Swarm, id: &str) -> Result<ControlReply, ControlError> {
    let state = swarm.replica.state();
    let service = state.service(id)?;
    Ok(ControlReply::Service(view(&state, service)))
}

/// # Errors
/// Unknown or global service, or it changed meanwhile.
pub async fn scale(swarm: &Swarm, name: &str, replicas: u64) -> Result<ControlReply, ControlError> {
    swarm.replica.before_write().await?;
    let (id, version, mut spec) = {
        let state = swarm.replica.state();
        let service = state.service(name)?;
        (service.id.clone(), service.version, service.spec.clone())
    };
    match spec.mode {
        ServiceMode::Replicated { .. } => {}
        ServiceMode::Global | ServiceMode::GlobalJob => {
            return Err(ControlError::InvalidArgument(format!(
                "service {name} is {}: it runs one task per node and cannot be scaled",
                spec.mode.word()
            )))
        }
        ServiceMode::ReplicatedJob { .. } => {
            return Err(ControlError::InvalidArgument(format!(
                "service {name} is a job: change its completions with service update \
                 --replicas, which runs the job again"
            )))
        }
    }
    spec.mode = ServiceMode::Replicated { replicas };
    {
        let state = swarm.replica.state();
        allocator::check_room(&state, &spec, state.service_by_id(&id))?;
    }
    swarm
        .replica
        .write_one(Command::UpdateService {
            id: id.clone(),
            expected_version: Some(version),
            spec,
            update_status: None,
        })
        .await?;
    written(swarm, &id)
}

/// Replaces the spec of a service with `spec`, as `service update` edited it; the state
/// machine keeps the spec it replaces for a rollback. A change of what the tasks run starts a
/// rolling update (replacing one under way); the updater carries it out.
///
/// # Errors
/// Unknown service, an invalid spec (naming the flag at fault), a change of mode or name, or
/// the service changed since the caller read it at `expected_version`.
pub async fn update(
    swarm: &Swarm,
    name: &str,
    expected_version: Option<u64>,
    mut spec: ServiceSpec,
) -> Result<ControlReply, ControlError> {
    swarm.replica.before_write().await?;
    join_mesh(swarm, &mut spec).await?;
    let (id, version, update_status) = {
        let state = swarm.replica.state();
        let service = state.service(name)?;
        swarm
            .replica
            .data_key()
            .seal_registry_auth(&mut spec, Some(&service.spec))?;
        check_update(service, &spec)?;
        allocator::check_room(&state, &spec, Some(service))?;
        allocator::ports::assign(&state, Some(&service.id), &mut spec)?;
        // A job has no rolling update: a new spec runs the job again (see the orchestrator).
        let rolls = service.spec.changes_tasks(&spec) && !spec.mode.is_job();
        let update_status = rolls.then(|| {
            UpdateStatus::start(
                UpdateState::Updating,
                swarm.replica.clock().now(),
                &spec.update_config,
                wanted_tasks(&state, &spec),
                "",
            )
        });
        (service.id.clone(), service.version, update_status)
    };
    let starts_update = update_status.is_some();
    swarm
        .replica
        .write_one(Command::UpdateService {
            id: id.clone(),
            expected_version: Some(expected_version.unwrap_or(version)),
            spec,
            update_status,
        })
        .await?;
    tracing::info!(service = %id, rolling_update = starts_update, "service updated");
    written(swarm, &id)
}

/// Goes back to the previous spec, rolled out with its rollback config.
///
/// # Errors
/// Unknown service, no previous spec, or the service changed since the caller read it at
/// `expected_version`.
pub async fn rollback(
    swarm: &Swarm,
    name: &str,
    expected_version: Option<u64>,
) -> Result<ControlReply, ControlError> {
    swarm.replica.before_write().await?;
    let (id, version, previous, status) = {
        let state = swarm.replica.state();
        let service = state.service(name)?;
        let Some(previous) = service.previous_spec.clone() else {
            return Err(ControlError::FailedPrecondition(format!(
                "service {} has no previous spec to roll back to",
                service.spec.name
            )));
        };
        let status = UpdateStatus::start(
            UpdateState::RollbackStarted,
            swarm.replica.clock().now(),
            &previous.rollback_config,
            wanted_tasks(&state, &previous),
            "manually requested rollback",
        );
        (service.id.clone(), service.version, previous, status)
    };
    swarm
        .replica
        .write_one(Command::UpdateService {
            id: id.clone(),
            expected_version: Some(expected_version.unwrap_or(version)),
            spec: previous,
            update_status: Some(status),
        })
        .await?;
    tracing::info!(service = %id, "service rollback started");
    written(swarm, &id)
}

/// Goes on with a paused update or rollback, up to the next checkpoint (`pause_after` more
/// updated tasks) or to the end.
///
/// # Errors
/// Unknown service, an invalid checkpoint, nothing paused, or the update moved meanwhile.
pub async fn continue_update(
    swarm: &Swarm,
    name: &str,
    pause_after: Option<Checkpoint>,
) -> Result<ControlReply, ControlError> {
    if let Some(checkpoint) = pause_after {
        checkpoint
            .check()
            .map_err(|e| ControlError::InvalidArgument(format!("pause_after: {e}")))?;
    }
    swarm.replica.linearize().await?;
    let (id, current, status) = {
        let state = swarm.replica.state();
        let service = state.service(name)?;
        let current = service.update_status.clone();
        let resumed = current.as_ref().and_then(|s| match s.state {
            UpdateState::Paused => Some(UpdateState::Updating),
            UpdateState::RollbackPaused => Some(UpdateState::RollbackStarted),
            _ => None,
        });
        let (Some(mut status), Some(resumed)) = (current.clone(), resumed) else {
            let what = current.as_ref().map_or_else(
                || "it has had no update".to_string(),
                |s| format!("its update is {}", s.state),
            );
            return Err(ControlError::FailedPrecondition(format!(
                "service {} has no paused update to continue ({what})",
                service.spec.name
            )));
        };
        status.state = resumed;
        status.message = String::new();
        status.next_batch_at = None;
        let wanted = wanted_tasks(&state, &service.spec);
        status.pause_at = pause_after.map(|c| status.updated + c.tasks(wanted));
        (service.id.clone(), current, status)
    };
    swarm
        .replica
        .write_one(Command::SetUpdateStatus {
            service_id: id.clone(),
            expected: current,
            status,
        })
        .await?;
    tracing::info!(service = %id, "paused update continued");
    written(swarm, &id)
}

/// What an update may not do to `current`: carry an invalid spec, change the mode (the slots
/// of a replicated service and the nodes of a global one do not map onto each other), or
/// rename the service.
fn check_update(current: &Service, spec: &ServiceSpec) -> Result<(), ControlError> {
    spec.validate()
        .map_err(|e| ControlError::InvalidArgument(e.to_string()))?;
    let name = &current.spec.name;
    let (from, to) = (current.spec.mode.word(), spec.mode.word());
    if from != to {
        return Err(ControlError::InvalidArgument(format!(
            "cannot change the mode of service {name} from {from} to {to}; remove and create \
             it again"
        )));
    }
    if spec.name != *name {
        return Err(ControlError::InvalidArgument(format!(
            "cannot rename service {name} to {:?}; remove and create it again",
            spec.name
        )));
    }
    Ok(())
}

/// Removes the service and its tasks in one write.
///
/// # Errors
/// Unknown service, or it changed meanwhile.
pub async fn remove(swarm: &Swarm, name: &str) -> Result<ControlReply, ControlError> {
    swarm.replica.before_write().await?;
    // The service goes last: if it changed meanwhile, its tasks are gone but it stays, and
    // the orchestrator simply makes new ones.
    let commands: Vec<Command> = {
        let state = swarm.replica.state();
        let service = state.service(name)?;
        state
            .tasks_of_service(&service.id)
            .map(|t| Command::RemoveTask { id: t.id.clone() })
            .chain(std::iter::once(Command::RemoveService {
                id: service.id.clone(),
                expected_version: Some(service.version),
            }))
            .collect()
    };
    for result in swarm.replica.write(commands).await?.results {
        match result {
            // A task the orchestrator forgot meanwhile is gone already, as wanted.
            Err(essaim_core::StateError::NotFound {
                kind: essaim_core::model::Kind::Task,
                ..
            }) => {}
            other => {
                other?;
            }
        }
    }
    Ok(ControlReply::Done)
}

/// # Errors
/// Unknown service or node, or no quorum.
pub async fn tasks(
    swarm: &Swarm,
    service: Option<&str>,
    node: Option<&str>,
) -> Result<ControlReply, ControlError> {
    swarm.replica.linearize().await?;
    let state = swarm.replica.state();
    let service_id = service
        .map(|name| state.service(name).map(|s| s.id.clone()))
        .transpose()?;
    let node_id = node
        .map(|name| state.node(name).map(|n| n.id.clone()))
        .transpose()?;
    let views = state
        .tasks()
        .filter(|t| service_id.as_ref().is_none_or(|id| &t.service_id == id))
        .filter(|t| node_id.is_none() || t.node_id == node_id)
        .map(|task| {
            let name = task_name(&state, task);
            TaskView {
                task: task.clone(),
                name,
                node_hostname: task
                    .node_id
                    .as_ref()
                    .and_then(|id| state.node_by_id(id))
                    .map(|n| n.description.hostname.clone()),
                usage: swarm.dispatcher.usage.of(task),
            }
        })
        .collect();
    Ok(ControlReply::Tasks(views))
}

/// A task's name as users see it: `web.1` in a slot, `web.NODE` for a global service.
pub fn task_name(state: &ClusterState, task: &Task) -> String {
    let service_name = state
        .service_by_id(&task.service_id)
        .map_or(task.service_id.as_str(), |s| s.spec.name.as_str());
    task.name(service_name)
}

fn view(state: &ClusterState, service: &Service) -> ServiceView {
    let mut running = 0;
    let mut completed = std::collections::BTreeSet::new();
    let mut live_by_state = std::collections::BTreeMap::new();
    for task in state.tasks_of_service(&service.id) {
        if counts_as_running(task.status.state, task.desired_state) {
            running += 1;
        }
        // A job's places done: one completion of the current spec each.
        if service.spec.mode.is_job()
            && task.status.state == TaskState::Complete
            && essaim_core::is_current(task, service)
        {
            completed.insert((task.slot, task.node_id.clone()));
        }
        if task.desired_state == TaskState::Running {
            *live_by_state.entry(task.status.state).or_insert(0) += 1;
        }
    }
    let desired = wanted_tasks(state, &service.spec);
    let completed = completed.len() as u64;
    let problem = (running + completed < desired)
        .then(|| problem(state, service))
        .flatten();
    ServiceView {
        service: service.clone(),
        running,
        desired,
        completed,
        live_by_state,
        problem,
    }
}

/// Why a service short of tasks is so, in a few words: the latest of its tasks (running its
/// current spec, in a slot it still wants) that failed, was rejected, or waits for a node,
/// with its error. A failing service may have no live task at all while its restart delay
/// runs: this is what says why.
fn problem(state: &ClusterState, service: &Service) -> Option<String> {
    state
        .tasks_of_service(&service.id)
        .filter(|t| t.desired_state != TaskState::Remove && is_current(t, service))
        .filter(|t| {
            matches!(t.status.state, TaskState::Failed | TaskState::Rejected)
                || (t.status.state == TaskState::Pending
                    && !t.status.message.is_empty()
                    && t.status.message != NEW_TASK_MESSAGE)
        })
        .max_by_key(|t| (t.status.timestamp, t.created_at))
        .map(|t| {
            let why = t.status.error.as_deref().unwrap_or(&t.status.message);
            format!("{}: {why}", t.status.state.as_str())
        })
}

/// Whether a task counts in the "running" of `service ls`: it runs and is meant to stay so. A
/// task being shut down (by an update, a scale-down or a drain) still runs for its grace
/// period but no longer counts towards the replicas.
fn counts_as_running(state: TaskState, desired_state: TaskState) -> bool {
    state == TaskState::Running && desired_state == TaskState::Running
}

#[cfg(test)]
mod tests {
    use essaim_core::model::TaskSpec;

    use super::*;

    fn service(mode: ServiceMode) -> Service {
        Service {
            id: "svc1".to_string(),
            version: 7,
            created_at: Default::default(),
            updated_at: Default::default(),
            spec: ServiceSpec {
                name: "web".to_string(),
                labels: Default::default(),
                mode,
                task: TaskSpec {
                    image: "nginx".to_string(),
                    ..TaskSpec::default()
                },
                ports: vec![],
                update_config: Default::default(),
                rollback_config: Default::default(),
                endpoint_mode: Default::default(),
            },
            previous_spec: None,
            update_status: None,
            virtual_ips: Vec::new(),
        }
    }

    #[test]
    fn an_update_may_change_the_task_and_the_replicas() {
        let current = service(ServiceMode::Replicated { replicas: 3 });
        let mut spec = current.spec.clone();
        spec.task.image = "nginx:2".to_string();
        spec.mode = ServiceMode::Replicated { replicas: 5 };
        assert_eq!(check_update(&current, &spec), Ok(()));
    }

    #[test]
    fn an_update_may_not_change_the_mode() {
        let current = service(ServiceMode::Replicated { replicas: 3 });
        let mut spec = current.spec.clone();
        spec.mode = ServiceMode::Global;
        let error = check_update(&current, &spec).expect_err("mode change");
        assert_eq!(
            error.to_string(),
            "cannot change the mode of service web from replicated to global; remove and \
             create it again"
        );
        let current = service(ServiceMode::Global);
        let mut spec = current.spec.clone();
        spec.mode = ServiceMode::Replicated { replicas: 1 };
        let error = check_update(&current, &spec).expect_err("mode change");
        assert!(
            error.to_string().contains("from global to replicated"),
            "{error}"
        );
    }

    #[test]
    fn an_update_may_not_rename_the_service() {
        let current = service(ServiceMode::Global);
        let mut spec = current.spec.clone();
        spec.name = "api".to_string();
        let error = check_update(&current, &spec).expect_err("rename");
        assert!(matches!(error, ControlError::InvalidArgument(_)));
        assert!(
            error.to_string().contains("cannot rename service web"),
            "{error}"
        );
    }

    #[test]
    fn an_invalid_spec_names_the_flag_at_fault() {
        let current = service(ServiceMode::Replicated { replicas: 1 });
        let mut spec = current.spec.clone();
        spec.task.constraints = vec!["node.labels.zone=a".to_string()];
        let error = check_update(&current, &spec).expect_err("bad constraint");
        assert!(matches!(error, ControlError::InvalidArgument(_)));
        assert!(error.to_string().starts_with("--constraint: "), "{error}");
    }

    #[test]
    fn a_task_being_shut_down_does_not_count_as_running() {
        assert!(counts_as_running(TaskState::Running, TaskState::Running));
        assert!(!counts_as_running(TaskState::Running, TaskState::Shutdown));
        assert!(!counts_as_running(TaskState::Running, TaskState::Remove));
        assert!(!counts_as_running(TaskState::Starting, TaskState::Running));
    }
}
