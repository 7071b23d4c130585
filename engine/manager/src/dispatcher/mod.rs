//! The leader's side of the worker sessions: it sends each node its tasks and commits what
//! the nodes report.
//!
//! ```text
//!  committed changes ──> route: the tasks of each connected node ──> its session stream
//!                           (with the network map and the secrets and configs they need)
//!  session reports ──> liveness (memory only)
//!                  ├─> tasks' CPU and memory (Usages, memory only)
//!                  └─> status batch ──> one Raft write for many reports
//! ```
//!
//! A session lives only as long as this node's term of leadership: the term starts the router
//! and the status writer, and when it ends every session is closed and the nodes reconnect to
//! the new leader, which starts each with a full task set.
//!
//! - [`reports`]: the nodes' reports read and committed, many in one write.
//! - [`usage`]: the CPU and memory each running task uses, as its node last sampled them.

pub mod reports;
pub mod usage;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use essaim_api::pb::{SessionAssignments, SessionReport};
use essaim_api::ControlError;
use essaim_core::event::{Change, Event};
use essaim_core::model::{FileKind, ObjectId, RegistryAuth, Task, TaskFileData, TaskState};

use crate::data_key::DataKey;
use essaim_core::netmap::{may_change_maps, NetworkMap, NetworkMaps};
use std::collections::BTreeSet;
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use crate::liveness::Liveness;
use crate::replica::Replica;
use reports::NodeReports;
use usage::Usages;

/// Tasks per message: a node with many tasks gets its full set in several messages.
const TASKS_PER_MESSAGE: usize = 1_000;
/// Messages a session may have waiting; a node that falls further behind is disconnected
/// and starts again from a full set.
const SESSION_BACKLOG: usize = 256;

/// What a node acts on: whether the task is its to start, and whether it should run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Sent {
    assigned: bool,
    desired_state: TaskState,
}

impl Sent {
    fn of(task: &Task) -> Sent {
        Sent {
            assigned: task.status.state >= TaskState::Assigned,
            desired_state: task.desired_state,
        }
    }
}

pub type AssignmentStream = ReceiverStream<Result<SessionAssignments, Status>>;
type Outbound = mpsc::Sender<Result<SessionAssignments, Status>>;

pub struct Dispatcher {
    replica: Arc<Replica>,
    liveness: Arc<Liveness>,
    /// The open sessions; `None` outside a term of leadership, when none may open.
    sessions: Mutex<Option<HashMap<ObjectId, Session>>>,
    next_session: AtomicU64,
    /// To this term's status writer.
    reports: Mutex<Option<mpsc::UnboundedSender<NodeReports>>>,
    /// What the running tasks use, as their nodes' sessions last said.
    pub usage: Usages,
}

/// What a term of leadership gives the dispatcher's two loops.
pub struct Term {
    pub events: tokio::sync::broadcast::Receiver<Arc<Vec<Event>>>,
    pub reports: mpsc::UnboundedReceiver<NodeReports>,
}

struct Session {
    id: u64,
    outbound: Outbound,
    /// What the node was last told of each task: it hears of a task again only when that
    /// changes, not at each of its own reports.
    sent: HashMap<ObjectId, Sent>,
    /// The network map the node was last sent.
    network_map: NetworkMap,
    /// The secrets and configs the node was last sent, by kind and name.
    files: NodeFiles,
}

/// The secrets and configs a node's live tasks use.
type NodeFiles = BTreeSet<(FileKind, String)>;

/// What the node's tasks that are assigned and not yet ended use: a node holds a secret only
/// while it has such a task.
fn files_needed(state: &essaim_core::ClusterState, node_id: &str) -> NodeFiles {
    state
        .tasks_on_node(node_id)
        .filter(|t| t.status.state >= TaskState::Assigned && !t.status.state.is_terminal())
        .flat_map(|t| {
            FileKind::ALL.iter().flat_map(move |kind| {
                t.spec
                    .files(*kind)
                    .iter()
                    .map(move |r| (*kind, r.source.clone()))
            })
        })
        .collect()
}

fn uses_files(task: &Task) -> bool {
    !task.spec.secrets.is_empty() || !task.spec.configs.is_empty()
}

impl Dispatcher {
    pub fn new(replica: Arc<Replica>, liveness: Arc<Liveness>) -> Dispatcher {
        Dispatcher {
            replica,
            liveness,
            sessions: Mutex::new(None),
            next_session: AtomicU64::new(1),
            reports: Mutex::new(None),
            usage: Usages::default(),
        }
    }

    /// Opens a term of leadership: sessions may open from now on. The router's subscription
    /// to the commits is taken here, before any session can read its full set, so that no
    /// commit falls between a session's full set and the router.
    pub fn start_term(&self) -> Term {
        let events = self.replica.shared().subscribe();
        let (reports, queued) = mpsc::unbounded_channel();
        *self.reports.lock() = Some(reports);
        *self.sessions.lock() = Some(HashMap::new());
        Term {
            events,
            reports: queued,
        }
    }

    /// Ends the term: every session closes, and none opens until the next term.
    pub fn end_term(&self) {
        self.close_all("this node no longer leads");
        *self.sessions.lock() = None;
        *self.reports.lock() = None;
    }

    /// Opens a node's session: its full task set first, then changes as they commit. A
    /// session the node had before is closed.
    ///
    /// # Errors
    /// The node is not in the cluster state.
    pub fn open(
        self: &Arc<Self>,
        node_id: &str,
        inbound: Streaming<SessionReport>,
    ) -> Result<AssignmentStream, ControlError> {
        let id = self.next_session.fetch_add(1, Ordering::Relaxed);
        let receiver = {
            // The full set is read and the session registered under the sessions lock, which
            // the router holds to route a commit: every commit after the read reaches the
            // session, and one before it only repeats what the full set says.
            let mut guard = self.sessions.lock();
            let Some(sessions) = guard.as_mut() else {
                return Err(ControlError::Unavailable(
                    "this manager is not leading yet; retry".into(),
                ));
            };
            let state = self.replica.state();
            if state.node_by_id(node_id).is_none() {
                return Err(ControlError::PermissionDenied(format!(
                    "node {node_id} is not in the swarm"
                )));
            }
            let tasks: Vec<&Task> = state.tasks_on_node(node_id).collect();
            let sent = tasks.iter().map(|t| (t.id.clone(), Sent::of(t))).collect();
            // The map goes first: a task on a network starts only once its node knows it.
            let network_map = NetworkMaps::of(&state).for_node(node_id);
            let files = files_needed(&state, node_id);
            let mut messages = vec![map_message(&network_map)];
            if !files.is_empty() {
                messages.push(self.files_message(&state, node_id, &files));
            }
            messages.extend(full_set(
                self.replica.data_key(),
                &tasks,
                heartbeat_period_ms(&state),
            ));
            let (outbound, receiver) = mpsc::channel(SESSION_BACKLOG.max(messages.len() + 1));
            for message in messages {
                // Cannot fail: the channel was made large enough.
                let _ = outbound.try_send(Ok(message));
            }
            let session = Session {
                id,
                outbound,
                sent,
                network_map,
                files,
            };
            sessions.insert(node_id.to_string(), session);
            receiver
        };
        self.liveness.record(node_id);
        tracing::debug!(node = node_id, session = id, "task session open");
        tokio::spawn(reports::read(
            self.clone(),
            node_id.to_string(),
            id,
            inbound,
        ));
        Ok(ReceiverStream::new(receiver))
    }

    /// Ends a node's session, unless a newer one replaced it.
    fn close(&self, node_id: &str, session: u64) {
        let mut guard = self.sessions.lock();
        let Some(sessions) = guard.as_mut() else {
            return;
        };
        if sessions.get(node_id).is_some_and(|s| s.id == session) {
            sessions.remove(node_id);
            self.usage.forget_node(node_id);
        }
    }

    fn close_all(&self, why: &str) {
        let mut guard = self.sessions.lock();
        if let Some(sessions) = guard.as_mut().filter(|s| !s.is_empty()) {
            tracing::info!(
                sessions = sessions.len(),
                "closing the task sessions: {why}"
            );
            sessions.clear();
        }
        self.usage.clear();
    }

    /// Sends the committed changes to the nodes they concern.
    fn route(&self, batch: &[Event]) {
        self.usage.prune(batch);
        let mut guard = self.sessions.lock();
        let Some(sessions) = guard.as_mut().filter(|s| !s.is_empty()) else {
            return;
        };
        // The task as the batch leaves it: one entry may change a task several times.
        let mut latest: HashMap<&str, &Task> = HashMap::new();
        let mut removed: Vec<(&str, &str)> = Vec::new();
        let mut period = None;
        for event in batch {
            match &event.change {
                Change::Task(task) => {
                    latest.insert(&task.id, task);
                }
                Change::TaskRemoved {
                    id,
                    node_id: Some(node),
                } => {
                    latest.remove(id.as_str());
                    removed.push((node, id));
                }
                Change::NodeRemoved { id } => {
                    sessions.remove(id);
                }
                Change::Cluster(cluster) => period = Some(cluster.config.heartbeat_period_ms),
                _ => {}
            }
        }
        // Nodes whose tasks that use secrets or configs changed: their set may have too.
        let files_may_change: BTreeSet<&str> = latest
            .values()
            .filter(|t| uses_files(t))
            .filter_map(|t| t.node_id.as_deref())
            .collect();
        let mut changed: HashMap<&str, (Vec<&Task>, Vec<String>)> = HashMap::new();
        for task in latest.into_values() {
            let Some(node) = task.node_id.as_deref() else {
                continue;
            };
            let Some(session) = sessions.get_mut(node) else {
                continue;
            };
            let now = Sent::of(task);
            if session.sent.insert(task.id.clone(), now) != Some(now) {
                changed.entry(node).or_default().0.push(task);
            }
        }
        for (node, id) in removed {
            if let Some(session) = sessions.get_mut(node) {
                session.sent.remove(id);
                changed.entry(node).or_default().1.push(id.to_string());
            }
        }
        let mut too_slow = Vec::new();
        if may_change_maps(batch) {
            // Before the tasks, so that a task on a network finds it on its node.
            let maps = NetworkMaps::of(&self.replica.state());
            for (node, session) in sessions.iter_mut() {
                let map = maps.for_node(node);
                if map != session.network_map {
                    if session.outbound.try_send(Ok(map_message(&map))).is_err() {
                        too_slow.push(node.clone());
                    }
                    session.network_map = map;
                }
            }
        }
        if !files_may_change.is_empty() {
            // Before the tasks, so that a task finds its files on its node.
            let state = self.replica.state();
            for node in files_may_change {
                let Some(session) = sessions.get_mut(node) else {
                    continue;
                };
                let files = files_needed(&state, node);
                if files != session.files {
                    let message = self.files_message(&state, node, &files);
                    if session.outbound.try_send(Ok(message)).is_err() {
                        too_slow.push(node.to_string());
                    }
                    session.files = files;
                }
            }
        }
        for (node, (tasks, removed)) in changed {
            let Some(session) = sessions.get(node) else {
                continue;
            };
            for message in changes(self.replica.data_key(), &tasks, removed) {
                if session.outbound.try_send(Ok(message)).is_err() {
                    too_slow.push(node.to_string());
                    break;
                }
            }
        }
        if let Some(period) = period {
            for (node, session) in sessions.iter() {
                let message = SessionAssignments {
                    heartbeat_period_ms: period,
                    ..Default::default()
                };
                if session.outbound.try_send(Ok(message)).is_err() {
                    too_slow.push(node.clone());
                }
            }
        }
        for node in too_slow {
            tracing::warn!(%node, "node fell behind its task session: it will start over");
            sessions.remove(&node);
        }
    }
}

impl Dispatcher {
    /// The secrets and configs a node needs, opened: the complete set, which replaces what
    /// the node held. Only over the node's session, which is mutual TLS.
    fn files_message(
        &self,
        state: &essaim_core::ClusterState,
        node_id: &str,
        files: &NodeFiles,
    ) -> SessionAssignments {
        let opened: Vec<TaskFileData> = files
            .iter()
            .filter_map(|(kind, name)| {
                let file = state.file_by_name(*kind, name)?;
                match self.replica.data_key().open(&file.id, &file.data) {
                    Ok(data) => Some(TaskFileData {
                        kind: *kind,
                        name: name.clone(),
                        data,
                    }),
                    Err(e) => {
                        // The node rejects the tasks that need it, saying which is missing.
                        tracing::error!(node = node_id, %kind, %name, "cannot send {kind}: {e}");
                        None
                    }
                }
            })
            .collect();
        SessionAssignments {
            // Serializing plain data structures cannot fail.
            files_json: serde_json::to_vec(&opened).unwrap_or_default(),
            ..Default::default()
        }
    }
}

/// The node's tasks, cut into messages.
fn full_set(key: &DataKey, tasks: &[&Task], heartbeat_period_ms: u64) -> Vec<SessionAssignments> {
    let chunks: Vec<&[&Task]> = if tasks.is_empty() {
        vec![&[]]
    } else {
        tasks.chunks(TASKS_PER_MESSAGE).collect()
    };
    let last = chunks.len() - 1;
    chunks
        .into_iter()
        .enumerate()
        .map(|(i, chunk)| SessionAssignments {
            full: i == 0,
            tasks_json: encode(key, chunk),
            removed: Vec::new(),
            heartbeat_period_ms,
            more: i < last,
            ..Default::default()
        })
        .collect()
}

fn changes(key: &DataKey, tasks: &[&Task], removed: Vec<String>) -> Vec<SessionAssignments> {
    let mut messages: Vec<SessionAssignments> = tasks
        .chunks(TASKS_PER_MESSAGE)
        .map(|chunk| SessionAssignments {
            tasks_json: encode(key, chunk),
            ..Default::default()
        })
        .collect();
    if !removed.is_empty() {
        messages.push(SessionAssignments {
            removed,
            ..Default::default()
        });
    }
    messages
}

fn map_message(map: &NetworkMap) -> SessionAssignments {
    SessionAssignments {
        // Serializing plain data structures cannot fail.
        network_map_json: serde_json::to_vec(map).unwrap_or_default(),
        ..Default::default()
    }
}

fn encode(key: &DataKey, tasks: &[&Task]) -> Vec<u8> {
    if tasks.is_empty() {
        return Vec::new();
    }
    // Serializing plain data structures cannot fail.
    if tasks.iter().all(|t| t.spec.registry_auth.is_none()) {
        return serde_json::to_vec(tasks).unwrap_or_default();
    }
    let opened: Vec<Task> = tasks
        .iter()
        .map(|t| with_registry_auth_opened(key, t))
        .collect();
    serde_json::to_vec(&opened).unwrap_or_default()
}

/// The task as its node gets it: registry credentials opened, for its engine to pull with.
/// Only over the node's session, which is mutual TLS, and only to the node the task is on.
fn with_registry_auth_opened(key: &DataKey, task: &Task) -> Task {
    let mut task = task.clone();
    if let Some(auth) = task.spec.registry_auth.take() {
        match key.open_registry_auth(&task.service_name, &auth) {
            Some(credentials) => {
                task.spec.registry_auth = Some(RegistryAuth::Given(credentials));
            }
            None => tracing::error!(
                task = %task.id,
                "the service's registry credentials do not open with this manager's data key"
            ),
        }
    }
    task
}

fn heartbeat_period_ms(state: &essaim_core::ClusterState) -> u64 {
    state
        .cluster
        .as_ref()
        .map_or(500, |c| c.config.heartbeat_period_ms)
}

/// The leader's routing loop, for one term: every commit to the sessions it concerns.
pub async fn route(
    dispatcher: Arc<Dispatcher>,
    mut events: tokio::sync::broadcast::Receiver<Arc<Vec<Event>>>,
) {
    loop {
        match events.recv().await {
            Ok(batch) => crate::clock::timed("routing", || dispatcher.route(&batch)),
            Err(RecvError::Lagged(_)) => {
                // Missed changes cannot be routed: every node starts over from a full set.
                dispatcher.close_all("the router fell behind the commits");
            }
            Err(RecvError::Closed) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use essaim_core::model::{TaskSpec, TaskStatus};
    use essaim_core::Timestamp;

    fn task(id: usize, state: TaskState, desired_state: TaskState) -> Task {
        Task {
            id: format!("t{id}"),
            version: 1,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            service_id: "svc".to_string(),
            service_name: "svc".to_string(),
            slot: Some(id as u64),
            node_id: Some("n1".to_string()),
            spec: TaskSpec::default(),
            ports: Vec::new(),
            networks: Vec::new(),
            service_version: 1,
            desired_state,
            status: TaskStatus::new(state, Timestamp(0), ""),
        }
    }

    #[test]
    fn a_large_full_set_comes_in_chunks_marked_as_one_set() {
        let tasks: Vec<Task> = (0..TASKS_PER_MESSAGE * 2 + 1)
            .map(|i| task(i, TaskState::Assigned, TaskState::Running))
            .collect();
        let refs: Vec<&Task> = tasks.iter().collect();
        let dir = tempfile::tempdir().expect("dir");
        let key = DataKey::load(dir.path()).expect("key");
        let messages = full_set(&key, &refs, 500);
        assert_eq!(messages.len(), 3);
        assert!(messages[0].full && messages[0].more);
        assert!(!messages[1].full && messages[1].more);
        assert!(!messages[2].full && !messages[2].more);
        let sent: usize = messages
            .iter()
            .map(|m| {
                serde_json::from_slice::<Vec<Task>>(&m.tasks_json)
                    .expect("tasks")
                    .len()
            })
            .sum();
        assert_eq!(sent, tasks.len());
        // A node with no tasks still learns that it has none.
        let empty = full_set(&key, &[], 500);
        assert_eq!(empty.len(), 1);
        assert!(empty[0].full && !empty[0].more && empty[0].tasks_json.is_empty());
    }

    #[test]
    fn a_node_hears_of_a_task_again_only_when_it_must_act() {
        let pending = Sent::of(&task(1, TaskState::Pending, TaskState::Running));
        let assigned = Sent::of(&task(1, TaskState::Assigned, TaskState::Running));
        let running = Sent::of(&task(1, TaskState::Running, TaskState::Running));
        let stopping = Sent::of(&task(1, TaskState::Running, TaskState::Shutdown));
        assert_ne!(pending, assigned, "assignment starts the task");
        assert_eq!(assigned, running, "its own report is no news to the node");
        assert_ne!(running, stopping, "a shutdown stops it");
    }
}
