//! The worker agent: one session with the leader's dispatcher, one supervisor per task.
//!
//! The leader sends the node's tasks; the agent starts those assigned to it, stops those the
//! managers no longer want, and reports every change of state. Reports wait in a queue while no
//! session is up; a new session starts with the complete task set, which the agent checks its
//! own view against, so a report lost with a leader is sent again.
//!
//! At each heartbeat the agent also samples what its running tasks use (CPU, memory), and
//! sends the result with the next heartbeat: sampling never holds a heartbeat back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use essaim_api::pb::{self, SessionAssignments, SessionReport};
use essaim_api::tls::TlsState;
use essaim_api::transport::{self, ClientTls};
use essaim_core::model::{ObjectId, Task, TaskFileData, TaskReport, TaskState, TaskStatus};
use essaim_core::netmap::NetworkMap;
use essaim_core::Timestamp;
use futures::future::BoxFuture;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::executor::{Executor, LogStream};
use crate::generic::GenericUnitsHeld;
use crate::task_files::TaskFiles;

/// The report period until the leader says otherwise.
const DEFAULT_PERIOD: Duration = Duration::from_millis(500);
/// Pause before following a redirect, so a confused pair of managers cannot make us spin.
const REDIRECT_PAUSE: Duration = Duration::from_millis(20);
/// Pauses between failed attempts to reach a leader: short at first, to find a new leader
/// fast, then longer, so that many nodes do not hammer managers that are down.
const RETRY_FIRST: Duration = Duration::from_millis(50);
const RETRY_MAX: Duration = Duration::from_secs(1);
/// How often the agent asks its runtime whether it can run tasks, and how many failed checks
/// in a row make it unavailable.
const RUNTIME_CHECK: Duration = Duration::from_secs(1);
const RUNTIME_CHECKS_FAILED: u32 = 3;
/// Status reports sent in one message at most.
const REPORT_BATCH: usize = 1_000;
/// The longest a usage sample may take; the runtimes bound each of their calls well within.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(5);

/// What a worker agent needs from its node.
pub struct WorkerSetup {
    pub node_id: ObjectId,
    /// The node's hostname, for `{{.Node.Hostname}}` (see [`essaim_core::template`]).
    pub hostname: String,
    /// The node's certificate, which names it to the leader.
    pub tls: Arc<TlsState>,
    /// The managers to try when no leader is known; asked again at every reconnection.
    pub managers: Arc<dyn Fn() -> Vec<String> + Send + Sync>,
    pub executor: Arc<dyn Executor>,
    /// The secrets and configs of the node's tasks (see [`crate::task_files`]).
    pub task_files: Arc<TaskFiles>,
    /// The node's generic resources, and which of them its tasks hold.
    pub generic_resources: Arc<GenericUnitsHeld>,
}

pub struct Worker {
    setup: WorkerSetup,
    tasks: Mutex<HashMap<ObjectId, LocalTask>>,
    reports: mpsc::UnboundedSender<TaskReport>,
    session: Mutex<Option<JoinHandle<()>>>,
    /// Why the runtime cannot run tasks now, told to the leader with every report.
    runtime_problem: watch::Sender<Option<String>>,
}

/// A task this node runs or ran, until the managers forget it.
struct LocalTask {
    /// The last status this node reported.
    status: TaskStatus,
    stop: watch::Sender<bool>,
    supervisor: Option<JoinHandle<()>>,
}

/// Why a session ended.
enum SessionEnd {
    /// The manager is not the leader, and said who is.
    Redirect(String),
    Lost(String),
}

impl Worker {
    /// Starts the agent: it adopts what the runtime still runs, then connects to the leader.
    pub fn start(setup: WorkerSetup) -> Arc<Worker> {
        let (reports, queued) = mpsc::unbounded_channel();
        let worker = Arc::new(Worker {
            setup,
            tasks: Mutex::new(HashMap::new()),
            reports,
            session: Mutex::new(None),
            runtime_problem: watch::channel(None).0,
        });
        let agent = worker.clone();
        let session = tokio::spawn(async move {
            agent.adopt().await;
            tokio::join!(agent.clone().watch_runtime(), agent.run(queued));
        });
        *worker.session.lock() = Some(session);
        worker
    }

    /// Asks the runtime, every second, whether it can run tasks, and keeps the answer for the
    /// reports: a node whose engine is gone is handled as down by the leader.
    async fn watch_runtime(self: Arc<Self>) {
        // A busy engine may miss one ping: only several in a row count.
        let mut failed_in_a_row = 0u32;
        loop {
            let problem = match self.setup.executor.check().await {
                Ok(()) => {
                    failed_in_a_row = 0;
                    None
                }
                Err(reason) => {
                    failed_in_a_row += 1;
                    if failed_in_a_row < RUNTIME_CHECKS_FAILED {
                        tokio::time::sleep(RUNTIME_CHECK).await;
                        continue;
                    }
                    Some(reason)
                }
            };
            let changed = *self.runtime_problem.borrow() != problem;
            if changed {
                match &problem {
                    Some(reason) => tracing::warn!("the runtime cannot run tasks: {reason}"),
                    None => tracing::info!("the runtime can run tasks"),
                }
                self.runtime_problem.send_replace(problem);
            }
            tokio::time::sleep(RUNTIME_CHECK).await;
        }
    }

    fn runtime_report(&self) -> String {
        self.runtime_problem.borrow().clone().unwrap_or_default()
    }

    pub fn runtime(&self) -> &'static str {
        self.setup.executor.name()
    }

    /// Ends the session and stops every task, each within its grace period.
    pub async fn shutdown(&self) {
        if let Some(session) = self.session.lock().take() {
            session.abort();
        }
        let supervisors: Vec<JoinHandle<()>> = {
            let mut tasks = self.table();
            tasks
                .values_mut()
                .filter_map(|task| {
                    let _ = task.stop.send(true);
                    task.supervisor.take()
                })
                .collect()
        };
        for supervisor in supervisors {
            let _ = supervisor.await;
        }
    }

    /// Stops every task, then takes the node off the cluster networks: `swarm leave`.
    pub async fn leave(&self) {
        self.shutdown().await;
        self.setup.executor.leave_networks().await;
        self.setup.task_files.remove_all();
    }

    /// The output of a task of this node.
    pub fn logs(&self, task_id: &str, tail: usize, follow: bool) -> Option<LogStream> {
        self.setup.executor.logs(task_id, tail, follow)
    }

    fn table(&self) -> parking_lot::MutexGuard<'_, HashMap<ObjectId, LocalTask>> {
        self.tasks.lock()
    }

    async fn adopt(self: &Arc<Self>) {
        for task_id in self.setup.executor.adopt(&self.setup.node_id).await {
            tracing::info!(task = %task_id, "adopting a task that survived the agent's restart");
            let (stop, stopped) = watch::channel(false);
            let status = TaskStatus::new(TaskState::Running, now(), "adopted");
            let supervisor = tokio::spawn(self.clone().supervise(None, task_id.clone(), stopped));
            self.table().insert(
                task_id,
                LocalTask {
                    status,
                    stop,
                    supervisor: Some(supervisor),
                },
            );
        }
    }

    async fn run(self: Arc<Self>, mut queued: mpsc::UnboundedReceiver<TaskReport>) {
        let mut redirect: Option<String> = None;
        // Failed attempts in a row: each goes to the next manager, the likely leader first.
        let mut attempt = 0usize;
        let mut retry = RETRY_FIRST;
        loop {
            let addr = match redirect.take() {
                Some(addr) => addr,
                None => {
                    let managers = (self.setup.managers)();
                    if managers.is_empty() {
                        tokio::time::sleep(RETRY_MAX).await;
                        continue;
                    }
                    managers[attempt % managers.len()].clone()
                }
            };
            let began = Instant::now();
            match self.session(&addr, &mut queued).await {
                SessionEnd::Redirect(leader) => {
                    redirect = Some(leader);
                    tokio::time::sleep(REDIRECT_PAUSE).await;
                }
                SessionEnd::Lost(why) => {
                    tracing::debug!(%addr, "no session with the leader: {why}");
                    // A session that lasted was not a failure to connect: start over quickly,
                    // from the likely leader.
                    if began.elapsed() > RETRY_MAX {
                        retry = RETRY_FIRST;
                        attempt = 0;
                    } else {
                        attempt += 1;
                    }
                    tokio::time::sleep(retry).await;
                    retry = (retry * 2).min(RETRY_MAX);
                }
            }
        }
    }

    async fn session(
        self: &Arc<Self>,
        addr: &str,
        queued: &mut mpsc::UnboundedReceiver<TaskReport>,
    ) -> SessionEnd {
        let channel =
            match transport::cluster_channel(addr, ClientTls::Node(self.setup.tls.clone())) {
                Ok(channel) => channel,
                Err(e) => return SessionEnd::Lost(e.to_string()),
            };
        let (outbound, outbound_queue) = mpsc::channel::<SessionReport>(64);
        let mut inbound = match transport::dispatcher_client(channel)
            .session(ReceiverStream::new(outbound_queue))
            .await
        {
            Ok(response) => response.into_inner(),
            Err(status) => return end_of(&status),
        };
        tracing::debug!(%addr, "session with the leader open");
        let mut period = DEFAULT_PERIOD;
        let mut heartbeat = tokio::time::interval(period);
        let mut full_set: Option<Vec<Task>> = None;
        // The usage sample under way, and the last one taken, to go with the next heartbeat.
        let mut sampling: Option<BoxFuture<'static, Vec<pb::TaskUsage>>> = None;
        let mut sampled: Vec<pb::TaskUsage> = Vec::new();
        loop {
            tokio::select! {
                message = inbound.message() => match message {
                    Ok(Some(message)) => {
                        if message.heartbeat_period_ms > 0
                            && message.heartbeat_period_ms != period.as_millis() as u64
                        {
                            period = Duration::from_millis(message.heartbeat_period_ms);
                            heartbeat = tokio::time::interval(period);
                        }
                        if let Err(e) = self.receive(message, &mut full_set) {
                            return SessionEnd::Lost(format!("bad message from the leader: {e}"));
                        }
                    }
                    Ok(None) => return SessionEnd::Lost("the leader ended the session".into()),
                    Err(status) => return end_of(&status),
                },
                Some(first) = queued.recv() => {
                    let mut batch = vec![first];
                    while batch.len() < REPORT_BATCH {
                        match queued.try_recv() {
                            Ok(report) => batch.push(report),
                            Err(_) => break,
                        }
                    }
                    let report = match serde_json::to_vec(&batch) {
                        Ok(json) => SessionReport {
                            reports_json: json,
                            runtime_unavailable: self.runtime_report(),
                            usage: Vec::new(),
                        },
                        Err(e) => return SessionEnd::Lost(format!("cannot encode reports: {e}")),
                    };
                    // Reports lost with the session are sent again after the next full set.
                    if outbound.send(report).await.is_err() {
                        return SessionEnd::Lost("the session closed".into());
                    }
                }
                _ = heartbeat.tick() => {
                    // Only a heartbeat: when reports are waiting to go, the leader hears from
                    // us anyway.
                    let beat = SessionReport {
                        reports_json: Vec::new(),
                        runtime_unavailable: self.runtime_report(),
                        usage: std::mem::take(&mut sampled),
                    };
                    if let Err(mpsc::error::TrySendError::Closed(_)) = outbound.try_send(beat)
                    {
                        return SessionEnd::Lost("the session closed".into());
                    }
                    // One sample at a time: a slow one skips beats rather than pile up.
                    if sampling.is_none() {
                        sampling = Some(self.sample());
                    }
                }
                usage = async { sampling.as_mut().expect("guarded by the condition").await },
                    if sampling.is_some() =>
                {
                    sampling = None;
                    sampled = usage;
                }
            }
        }
    }

    /// What the tasks that run here use now, as the runtime tells it within `SAMPLE_TIMEOUT`.
    fn sample(&self) -> BoxFuture<'static, Vec<pb::TaskUsage>> {
        let running: Vec<ObjectId> = self
            .table()
            .iter()
            .filter(|(_, task)| task.status.state == TaskState::Running)
            .map(|(id, _)| id.clone())
            .collect();
        let executor = self.setup.executor.clone();
        Box::pin(async move {
            if running.is_empty() {
                return Vec::new();
            }
            match tokio::time::timeout(SAMPLE_TIMEOUT, executor.usage(&running)).await {
                Ok(usage) => usage
                    .iter()
                    .map(|(task_id, usage)| usage.to_wire(task_id))
                    .collect(),
                Err(_) => {
                    tracing::debug!("no usage sample: the runtime took over {SAMPLE_TIMEOUT:?}");
                    Vec::new()
                }
            }
        })
    }

    /// Takes in one message of the leader's.
    fn receive(
        self: &Arc<Self>,
        message: SessionAssignments,
        full_set: &mut Option<Vec<Task>>,
    ) -> Result<(), serde_json::Error> {
        // The map comes before the tasks that need it.
        if !message.network_map_json.is_empty() {
            let map: NetworkMap = serde_json::from_slice(&message.network_map_json)?;
            self.setup.executor.network_map(map);
        }
        // So do the secrets and configs.
        if !message.files_json.is_empty() {
            let files: Vec<TaskFileData> = serde_json::from_slice(&message.files_json)?;
            self.setup.task_files.replace(files);
        }
        let tasks: Vec<Task> = if message.tasks_json.is_empty() {
            Vec::new()
        } else {
            serde_json::from_slice(&message.tasks_json)?
        };
        if message.full || full_set.is_some() {
            let set = full_set.get_or_insert_with(Vec::new);
            set.extend(tasks);
            if !message.more {
                if let Some(set) = full_set.take() {
                    self.resync(set);
                }
            }
        } else {
            for task in &tasks {
                self.apply(task, false);
            }
        }
        for task_id in &message.removed {
            self.forget(task_id);
        }
        Ok(())
    }

    /// The leader's complete view of this node's tasks: what it lacks is forgotten, and what
    /// it has is checked against this node's own view.
    fn resync(self: &Arc<Self>, tasks: Vec<Task>) {
        let known: HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
        let gone: Vec<ObjectId> = self
            .table()
            .keys()
            .filter(|id| !known.contains(id.as_str()))
            .cloned()
            .collect();
        for task_id in gone {
            self.forget(&task_id);
        }
        for task in &tasks {
            self.apply(task, true);
        }
    }

    /// Acts on one task as the managers see it. `resync` compares statuses too, to send again
    /// what the managers missed.
    fn apply(self: &Arc<Self>, task: &Task, resync: bool) {
        let wanted = task.desired_state == TaskState::Running;
        let mut tasks = self.table();
        if let Some(local) = tasks.get(&task.id) {
            if !wanted {
                let _ = local.stop.send(true);
            }
            if resync && local.status.state > task.status.state {
                let _ = self.reports.send(TaskReport {
                    task_id: task.id.clone(),
                    status: local.status.clone(),
                });
            }
            return;
        }
        let state = task.status.state;
        if wanted && state >= TaskState::Assigned && state < TaskState::Running {
            let (stop, stopped) = watch::channel(false);
            let supervisor = tokio::spawn(self.clone().supervise(
                Some(task.clone()),
                task.id.clone(),
                stopped,
            ));
            tasks.insert(
                task.id.clone(),
                LocalTask {
                    status: task.status.clone(),
                    stop,
                    supervisor: Some(supervisor),
                },
            );
        } else if state >= TaskState::Assigned && !state.is_terminal() {
            // The managers think it runs here, and it does not: this node restarted, or the
            // task never reached it before it was stopped.
            drop(tasks);
            let status = if wanted {
                failed(
                    "the task was lost: its node restarted while it ran".to_string(),
                    None,
                )
            } else {
                TaskStatus::new(TaskState::Shutdown, now(), "not running on this node")
            };
            let _ = self.reports.send(TaskReport {
                task_id: task.id.clone(),
                status,
            });
        }
    }

    /// The managers forgot the task: stop it if it runs, then forget it and its output.
    fn forget(&self, task_id: &str) {
        let Some(mut local) = self.table().remove(task_id) else {
            return;
        };
        let _ = local.stop.send(true);
        let executor = self.setup.executor.clone();
        let task_files = self.setup.task_files.clone();
        let generic_resources = self.setup.generic_resources.clone();
        let task_id = task_id.to_string();
        tokio::spawn(async move {
            if let Some(supervisor) = local.supervisor.take() {
                let _ = supervisor.await;
            }
            executor.remove(&task_id).await;
            task_files.remove(&task_id);
            generic_resources.release(&task_id);
        });
    }

    fn report(&self, task_id: &str, status: TaskStatus) {
        if let Some(local) = self.table().get_mut(task_id) {
            local.status = status.clone();
        }
        tracing::debug!(task = task_id, state = %status.state, "{}", status.message);
        let _ = self.reports.send(TaskReport {
            task_id: task_id.to_string(),
            status,
        });
    }

    /// What a task held on the node goes once it has ended: its files, its generic units.
    fn ended(&self, task_id: &str) {
        self.setup.task_files.remove(task_id);
        self.setup.generic_resources.release(task_id);
    }

    /// `task` with Swarm's placeholders filled in for it on this node: in `--hostname`, the
    /// `--env` values and the `--mount` sources.
    fn fill_placeholders(&self, task: &Task) -> Result<Task, String> {
        use essaim_core::template::{expand, TemplateValues};
        let values = TemplateValues {
            service_id: task.service_id.clone(),
            service_name: task.service_name.clone(),
            task_id: task.id.clone(),
            task_name: task.name(&task.service_name),
            task_slot: task.slot.map(|slot| slot.to_string()).unwrap_or_default(),
            node_id: self.setup.node_id.clone(),
            node_hostname: self.setup.hostname.clone(),
            node_os: std::env::consts::OS.to_string(),
            node_arch: std::env::consts::ARCH.to_string(),
        };
        let mut task = task.clone();
        let spec = &mut task.spec;
        spec.container.hostname =
            expand(&spec.container.hostname, &values).map_err(|e| format!("--hostname: {e}"))?;
        for value in spec.env.values_mut() {
            *value = expand(value, &values).map_err(|e| format!("--env: {e}"))?;
        }
        for mount in &mut spec.mounts {
            mount.source = expand(&mount.source, &values).map_err(|e| format!("--mount: {e}"))?;
        }
        Ok(task)
    }

    /// Runs one task from start (unless `task` is `None`: adopted, already running) to end.
    async fn supervise(
        self: Arc<Self>,
        task: Option<Task>,
        task_id: ObjectId,
        mut stopped: watch::Receiver<bool>,
    ) {
        let executor = self.setup.executor.clone();
        let grace = task.as_ref().map_or(Duration::from_secs(10), stop_grace);
        if let Some(task) = &task {
            let stop_first = *stopped.borrow();
            if stop_first {
                self.report(&task_id, shutdown("stopped before it started"));
                return;
            }
            let task = match self.fill_placeholders(task) {
                Ok(task) => task,
                Err(message) => {
                    let mut status = TaskStatus::new(TaskState::Rejected, now(), "rejected");
                    status.error = Some(message);
                    self.report(&task_id, status);
                    return;
                }
            };
            let mut task = task;
            let started = match self.setup.generic_resources.take(&task) {
                Ok(env) => {
                    task.spec.env.extend(env);
                    match self.setup.task_files.write(&task) {
                        Ok(()) => executor.start(&task).await,
                        Err(error) => Err(error),
                    }
                }
                Err(error) => Err(error),
            };
            match started {
                Ok(started) => {
                    let mut status = TaskStatus::new(TaskState::Running, now(), "started");
                    status.ports = started.ports;
                    status.address = started.address;
                    self.report(&task_id, status);
                }
                Err(error) => {
                    let state = if error.rejected {
                        TaskState::Rejected
                    } else {
                        TaskState::Failed
                    };
                    let mut status = TaskStatus::new(state, now(), error.message.clone());
                    status.error = Some(error.message);
                    self.ended(&task_id);
                    self.report(&task_id, status);
                    return;
                }
            }
        }
        let ended = tokio::select! {
            exit = executor.wait(&task_id) => Some(exit),
            _ = stopped.wait_for(|stop| *stop) => None,
        };
        match ended {
            Some(exit) => {
                let status = if exit.code == 0 {
                    let mut status = TaskStatus::new(TaskState::Complete, now(), "finished");
                    status.exit_code = Some(0);
                    status
                } else {
                    failed(exit.message, Some(exit.code))
                };
                self.ended(&task_id);
                self.report(&task_id, status);
            }
            None => {
                // The leader's maps stopped sending new connections to the task when it was
                // told to stop: the other nodes get a moment to write them before it stops
                // taking them, so that no client meets a closed port.
                if task.as_ref().is_some_and(|t| !t.networks.is_empty()) {
                    tokio::select! {
                        () = tokio::time::sleep(DRAIN) => {}
                        _ = executor.wait(&task_id) => {}
                    }
                }
                executor.stop(&task_id, grace).await;
                self.ended(&task_id);
                self.report(&task_id, shutdown("stopped"));
            }
        }
    }
}

/// What a refused or broken session means: go to the leader it names, or try again.
fn end_of(status: &tonic::Status) -> SessionEnd {
    match status
        .metadata()
        .get(transport::LEADER_METADATA)
        .and_then(|v| v.to_str().ok())
        .filter(|addr| !addr.is_empty())
    {
        Some(leader) => SessionEnd::Redirect(leader.to_string()),
        None => SessionEnd::Lost(status.message().to_string()),
    }
}

/// How long a task on networks keeps serving after it was told to stop, before its SIGTERM.
const DRAIN: Duration = Duration::from_secs(1);

fn stop_grace(task: &Task) -> Duration {
    Duration::from_millis(task.spec.stop_grace_period_ms)
}

fn shutdown(message: &str) -> TaskStatus {
    TaskStatus::new(TaskState::Shutdown, now(), message)
}

fn failed(message: String, exit_code: Option<i32>) -> TaskStatus {
    let mut status = TaskStatus::new(TaskState::Failed, now(), message.clone());
    status.error = Some(message);
    status.exit_code = exit_code;
    status
}

/// The time by this node's clock.
pub(crate) fn now() -> Timestamp {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    Timestamp(millis)
}
