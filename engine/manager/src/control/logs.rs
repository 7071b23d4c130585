//! `service logs`: the leader asks every node that runs tasks of the service for their output
//! (the Worker service on its cluster port) and merges the answers as they come. A node that
//! cannot be asked is named in the answer rather than failing it.

use std::collections::BTreeMap;

use essaim_api::control::{LogEvent, ServiceLogs};
use essaim_api::pb::LogsRequest;
use essaim_api::tls::CertRole;
use essaim_api::transport::ClientTls;
use essaim_api::{transport, ControlError};
use essaim_core::model::{ObjectId, Role};
use futures::StreamExt;

use crate::control::services::task_name;
use crate::forward::{LogEvents, Peers};
use crate::swarm::Swarm;

/// The tasks of one node, by ID, with their names.
struct NodeTasks {
    hostname: String,
    addr: String,
    role: Role,
    tasks: BTreeMap<ObjectId, String>,
}

/// The merged output of the service's tasks.
///
/// # Errors
/// No such service, or no quorum to read it.
pub async fn service_logs(swarm: &Swarm, request: ServiceLogs) -> Result<LogEvents, ControlError> {
    swarm.replica.linearize().await?;
    let by_node: BTreeMap<ObjectId, NodeTasks> = {
        let state = swarm.replica.state();
        let service = state.service(&request.service)?;
        let mut by_node: BTreeMap<ObjectId, NodeTasks> = BTreeMap::new();
        for task in state.tasks_of_service(&service.id) {
            let Some(node_id) = &task.node_id else {
                continue;
            };
            let Some(node) = state.node_by_id(node_id) else {
                continue;
            };
            by_node
                .entry(node_id.clone())
                .or_insert_with(|| NodeTasks {
                    hostname: node.description.hostname.clone(),
                    addr: node.description.addr.clone(),
                    role: node.spec.role,
                    tasks: BTreeMap::new(),
                })
                .tasks
                .insert(task.id.clone(), task_name(&state, task));
        }
        by_node
    };
    let tail = usize::try_from(request.tail).unwrap_or(usize::MAX);
    let mut streams: Vec<LogEvents> = Vec::new();
    for (node_id, tasks) in by_node {
        if node_id == *swarm.replica.node_id() {
            streams.push(own_logs(swarm, tasks, tail, request.follow));
        } else {
            streams.push(remote_logs(
                &swarm.peers,
                tasks,
                request.tail,
                request.follow,
            ));
        }
    }
    Ok(futures::stream::select_all(streams).boxed())
}

/// This node's own tasks, from its worker agent.
fn own_logs(swarm: &Swarm, node: NodeTasks, tail: usize, follow: bool) -> LogEvents {
    let streams = node.tasks.into_iter().filter_map(|(task_id, name)| {
        let hostname = node.hostname.clone();
        let lines = swarm.worker().logs(&task_id, tail, follow)?;
        Some(
            lines
                .ready_chunks(256)
                .map(move |lines| LogEvent::Lines {
                    task: name.clone(),
                    node: hostname.clone(),
                    lines,
                })
                .boxed(),
        )
    });
    futures::stream::select_all(streams).boxed()
}

/// Another node's tasks, through its Worker service.
fn remote_logs(peers: &Peers, tasks: NodeTasks, tail: u64, follow: bool) -> LogEvents {
    let channel = match tasks.role {
        Role::Manager => peers.channel(&tasks.addr),
        Role::Worker => transport::node_channel(
            &tasks.addr,
            ClientTls::Node(peers.tls().clone()),
            CertRole::Worker,
        ),
    };
    let unreachable = |hostname: &str, reason: String| LogEvent::Unreachable {
        node: hostname.to_string(),
        reason,
    };
    let request = LogsRequest {
        task_ids: tasks.tasks.keys().cloned().collect(),
        tail,
        follow,
    };
    futures::stream::once(async move {
        let answer = match channel {
            Ok(channel) => transport::worker_client(channel)
                .logs(request)
                .await
                .map_err(|status| ControlError::from(status).to_string()),
            Err(e) => Err(e.to_string()),
        };
        match answer {
            Err(reason) => futures::stream::iter([unreachable(&tasks.hostname, reason)]).boxed(),
            Ok(response) => {
                let hostname = tasks.hostname.clone();
                response
                    .into_inner()
                    .map(move |message| match message {
                        Ok(message) => LogEvent::Lines {
                            task: tasks
                                .tasks
                                .get(&message.task_id)
                                .cloned()
                                .unwrap_or(message.task_id),
                            node: hostname.clone(),
                            lines: message.lines,
                        },
                        Err(status) => unreachable(&hostname, status.message().to_string()),
                    })
                    .boxed()
            }
        }
    })
    .flatten()
    .boxed()
}
