//! The nodes' reports: read from each session, and committed by the term's status writer,
//! many in one Raft write. Each report also says the node is alive.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use essaim_api::pb::SessionReport;
use essaim_core::model::{ObjectId, TaskReport, TaskStatus};
use essaim_core::Command;
use tokio::sync::mpsc;
use tonic::Streaming;

use super::Dispatcher;
use crate::replica::Replica;

/// Pause before retrying a status write that failed.
const WRITE_RETRY: Duration = Duration::from_millis(100);

/// A node's reports, with the node that sent them.
pub type NodeReports = (ObjectId, Vec<TaskReport>);

/// Reads a node's reports until its session ends: each one says the node is alive, and the
/// status changes in it go to the batch writer.
pub(super) async fn read(
    dispatcher: Arc<Dispatcher>,
    node_id: ObjectId,
    session: u64,
    mut inbound: Streaming<SessionReport>,
) {
    loop {
        match inbound.message().await {
            Ok(Some(report)) => {
                dispatcher.liveness.record(&node_id);
                dispatcher
                    .liveness
                    .record_runtime(&node_id, &report.runtime_unavailable);
                if !report.usage.is_empty() {
                    let state = dispatcher.replica.state();
                    dispatcher.usage.record(&state, &node_id, &report.usage);
                }
                if report.reports_json.is_empty() {
                    continue;
                }
                match serde_json::from_slice::<Vec<TaskReport>>(&report.reports_json) {
                    Ok(reports) => {
                        // Outside a term nobody writes them: the node sends them again to the
                        // next leader, after its full set.
                        if let Some(writer) = dispatcher.reports.lock().as_ref() {
                            let _ = writer.send((node_id.clone(), reports));
                        }
                    }
                    Err(e) => {
                        tracing::warn!(node = %node_id, "unreadable task report: {e}");
                        break;
                    }
                }
            }
            Ok(None) => break,
            Err(status) => {
                tracing::debug!(node = %node_id, "task session broken: {}", status.message());
                break;
            }
        }
    }
    tracing::debug!(node = %node_id, session, "task session closed");
    dispatcher.close(&node_id, session);
}

/// The leader's status writer: commits the nodes' reports, many in one Raft write. Reports
/// that arrive while a write is under way go in the next one.
pub async fn write(replica: Arc<Replica>, mut queue: mpsc::UnboundedReceiver<NodeReports>) {
    // The latest report of each task, with the node that sent it.
    let mut pending: HashMap<ObjectId, (ObjectId, TaskStatus)> = HashMap::new();
    loop {
        if pending.is_empty() {
            let Some((node, reports)) = queue.recv().await else {
                return;
            };
            take(&mut pending, node, reports);
        }
        while let Ok((node, reports)) = queue.try_recv() {
            take(&mut pending, node, reports);
        }
        let commands = status_commands(&replica, &mut pending);
        if commands.is_empty() {
            continue;
        }
        let count = commands.len();
        match replica.write_many(commands).await {
            Ok(_) => {
                tracing::trace!(count, "task reports committed");
                pending.clear();
            }
            Err(e) => {
                tracing::debug!(count, "task reports not committed yet: {e}");
                tokio::time::sleep(WRITE_RETRY).await;
            }
        }
    }
}

fn take(
    pending: &mut HashMap<ObjectId, (ObjectId, TaskStatus)>,
    node: ObjectId,
    reports: Vec<TaskReport>,
) {
    for report in reports {
        pending.insert(report.task_id, (node.clone(), report.status));
    }
}

/// The reports worth writing, as commands; `pending` keeps those to try again (all of them,
/// until a write succeeds, which empties it).
fn status_commands(
    replica: &Replica,
    pending: &mut HashMap<ObjectId, (ObjectId, TaskStatus)>,
) -> Vec<Command> {
    let state = replica.state();
    pending.retain(|task_id, (node, status)| {
        state.task_by_id(task_id).is_some_and(|task| {
            // A node speaks only for its own tasks, and only of news.
            task.node_id.as_deref() == Some(node.as_str())
                && (status.state > task.status.state
                    || (status.state == task.status.state && status.message != task.status.message))
        })
    });
    pending
        .iter()
        .map(|(task_id, (_, status))| Command::UpdateTaskStatus {
            id: task_id.clone(),
            status: status.clone(),
        })
        .collect()
}
