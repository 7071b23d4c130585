//! What the leader does with the service requests of the control API: create, list,
//! inspect, scale and remove services, and list tasks. Specs are checked whole before
//! anything is written; the orchestration loop does the rest.

use essaim_api::control::{ServiceView, TaskView};
use essaim_api::{ControlError, ControlReply};
use essaim_core::model::{Service, ServiceMode, ServiceSpec, TaskState};
use essaim_core::scheduler;
use essaim_core::{ClusterState, Command};

use crate::identity::new_object_id;
use crate::swarm::Swarm;

/// # Errors
/// An invalid spec (naming the flag at fault), or a name already taken.
pub async fn create(swarm: &Swarm, spec: ServiceSpec) -> Result<ControlReply, ControlError> {
    spec.validate()
        .map_err(|e| ControlError::InvalidArgument(e.to_string()))?;
    swarm.linearize().await?;
    let service = Service {
        id: new_object_id(),
        version: 0,
        created_at: Default::default(),
        updated_at: Default::default(),
        spec,
        previous_spec: None,
    };
    let id = service.id.clone();
    swarm.write_one(Command::CreateService { service }).await?;
    tracing::info!(service = %id, "service created");
    inspect(swarm, &id).await
}

/// # Errors
/// No quorum.
pub async fn list(swarm: &Swarm) -> Result<ControlReply, ControlError> {
    swarm.linearize().await?;
    let state = swarm.state();
    Ok(ControlReply::Services(
        state.services().map(|s| view(&state, s)).collect(),
    ))
}

/// # Errors
/// Unknown service, or no quorum.
pub async fn inspect(swarm: &Swarm, name: &str) -> Result<ControlReply, ControlError> {
    swarm.linearize().await?;
    let state = swarm.state();
    let service = state.service(name)?;
    Ok(ControlReply::Service(view(&state, service)))
}

/// # Errors
/// Unknown or global service, or it changed meanwhile.
pub async fn scale(swarm: &Swarm, name: &str, replicas: u64) -> Result<ControlReply, ControlError> {
    swarm.linearize().await?;
    let (id, version, mut spec) = {
        let state = swarm.state();
        let service = state.service(name)?;
        (service.id.clone(), service.version, service.spec.clone())
    };
    if spec.mode == ServiceMode::Global {
        return Err(ControlError::InvalidArgument(format!(
            "service {name} is global: it runs one task per node and cannot be scaled"
        )));
    }
    spec.mode = ServiceMode::Replicated { replicas };
    swarm
        .write_one(Command::UpdateService {
            id: id.clone(),
            expected_version: Some(version),
            spec,
        })
        .await?;
    inspect(swarm, &id).await
}

/// Removes the service and its tasks in one write.
///
/// # Errors
/// Unknown service, or it changed meanwhile.
pub async fn remove(swarm: &Swarm, name: &str) -> Result<ControlReply, ControlError> {
    swarm.linearize().await?;
    // The service goes last: if it changed meanwhile, its tasks are gone but it stays, and
    // the orchestrator simply makes new ones.
    let commands: Vec<Command> = {
        let state = swarm.state();
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
    for result in swarm.write(commands).await?.results {
        result?;
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
    swarm.linearize().await?;
    let state = swarm.state();
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
            let service_name = state
                .service_by_id(&task.service_id)
                .map(|s| s.spec.name.clone())
                .unwrap_or_else(|| task.service_id.clone());
            let name = match (task.slot, &task.node_id) {
                (Some(slot), _) => format!("{service_name}.{slot}"),
                (None, Some(node)) => format!("{service_name}.{node}"),
                (None, None) => service_name,
            };
            TaskView {
                task: task.clone(),
                name,
                node_hostname: task
                    .node_id
                    .as_ref()
                    .and_then(|id| state.node_by_id(id))
                    .map(|n| n.description.hostname.clone()),
            }
        })
        .collect();
    Ok(ControlReply::Tasks(views))
}

fn view(state: &ClusterState, service: &Service) -> ServiceView {
    let running = state
        .tasks_of_service(&service.id)
        .filter(|t| t.status.state == TaskState::Running)
        .count() as u64;
    let desired = match service.spec.mode {
        ServiceMode::Replicated { replicas } => replicas,
        ServiceMode::Global => state
            .nodes()
            .filter(|n| scheduler::accepts(n, &service.spec.task))
            .count() as u64,
    };
    ServiceView {
        service: service.clone(),
        running,
        desired,
    }
}
