//! The one interface between the agent and a runtime. A runtime knows tasks by ID only: the
//! agent decides when a task starts and stops, the runtime does the work and says how it ended.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use essaim_api::control::TaskUsage;
use essaim_core::model::{PortConfig, Task};
use essaim_core::netmap::NetworkMap;
use futures::stream::BoxStream;

/// A runtime's asynchronous answer. Boxed, so that the runtime can be chosen at start-up.
pub type ExecFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A task's workload is up.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Started {
    /// The node ports its target ports were published on.
    pub ports: Vec<PortConfig>,
    /// Its address on its network, when it has one of its own (a container's IP).
    pub address: Option<String>,
}

/// Why a task could not start.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StartError {
    /// True when this node cannot run the task at all (no such program or image): the task is
    /// REJECTED rather than FAILED.
    pub rejected: bool,
    pub message: String,
}

impl StartError {
    pub fn rejected(message: impl Into<String>) -> Self {
        StartError {
            rejected: true,
            message: message.into(),
        }
    }

    pub fn failed(message: impl Into<String>) -> Self {
        StartError {
            rejected: false,
            message: message.into(),
        }
    }
}

/// How a workload ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Exit {
    /// The exit code; a process killed by signal N counts as 128 + N, as shells say.
    pub code: i32,
    pub message: String,
}

/// Lines of a task's output.
pub type LogStream = BoxStream<'static, String>;

/// Runs tasks on this node. Every method takes the task ID the agent started it with.
pub trait Executor: Send + Sync + 'static {
    /// The runtime's name, as the node reports it when it joins (`node inspect` shows it).
    fn name(&self) -> &'static str;

    /// Creates and starts the task's workload; returns once it runs.
    fn start<'a>(&'a self, task: &'a Task) -> ExecFuture<'a, Result<Started, StartError>>;

    /// Resolves when the workload ends (at once if it already has).
    fn wait<'a>(&'a self, task_id: &'a str) -> ExecFuture<'a, Exit>;

    /// Asks the workload to stop, and forces it after `grace`. Resolves once it has stopped.
    fn stop<'a>(&'a self, task_id: &'a str, grace: Duration) -> ExecFuture<'a, ()>;

    /// Forgets a stopped task and whatever it kept (its output).
    fn remove<'a>(&'a self, task_id: &'a str) -> ExecFuture<'a, ()>;

    /// The task's output: the last `tail` lines kept (all of them for 0), then with `follow`
    /// new lines until the task ends. `None` for a task this runtime does not know.
    fn logs(&self, task_id: &str, tail: usize, follow: bool) -> Option<LogStream>;

    /// The tasks of node `node_id` whose workloads survived a restart of its agent, to be
    /// supervised again rather than started twice.
    fn adopt<'a>(&'a self, node_id: &'a str) -> ExecFuture<'a, Vec<String>>;

    /// What the running tasks among `task_ids` use now, for those it can tell. The CPU figure
    /// is over the time since the task's previous sample (or the engine's own pair), so a
    /// task may be missing from its first sample. Each answer is bounded in time, so a slow
    /// engine cannot hold the agent back. A runtime that does not sample (sim) tells nothing.
    fn usage<'a>(&'a self, _task_ids: &'a [String]) -> ExecFuture<'a, HashMap<String, TaskUsage>> {
        Box::pin(async { HashMap::new() })
    }

    /// The leader's latest map of the cluster networks this node has tasks on. A runtime
    /// that puts tasks on networks keeps it; the others ignore it.
    fn network_map(&self, _map: NetworkMap) {}

    /// Takes the node off the cluster networks as it leaves the swarm, once its tasks have
    /// stopped: what the runtime made in the kernel for them goes.
    fn leave_networks(&self) -> ExecFuture<'_, ()> {
        Box::pin(async {})
    }

    /// Whether the runtime can run tasks now; the reason when it cannot (an engine gone).
    fn check(&self) -> ExecFuture<'_, Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// Which runtime a node uses, as `essaimd --runtime` says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Runtime {
    /// Each task is an OS process: IMAGE is the program, ARGs its arguments.
    Process,
    /// Each task is a container on the machine's Docker engine.
    Docker,
    /// No OS work: tasks run after `start_delay`, for scale tests.
    Sim { start_delay: Duration },
}

impl Runtime {
    pub fn name(&self) -> &'static str {
        match self {
            Runtime::Process => essaim_core::model::PROCESS_RUNTIME,
            Runtime::Docker => "docker",
            Runtime::Sim { .. } => "sim",
        }
    }

    /// The runtime's executor, for the node named `node_name` (used in error messages), whose
    /// data directory is `data_dir` (the process runtime keeps its volumes there).
    ///
    /// # Errors
    /// The Docker engine does not answer.
    pub async fn executor(
        &self,
        node_name: &str,
        data_dir: &std::path::Path,
    ) -> anyhow::Result<Arc<dyn Executor>> {
        Ok(match self {
            Runtime::Process => Arc::new(
                crate::process::ProcessExecutor::new(node_name)
                    .with_volumes(data_dir.join("volumes"))
                    .with_task_files(crate::task_files::root_for(data_dir)),
            ),
            Runtime::Docker => {
                Arc::new(crate::docker::DockerExecutor::connect(node_name, data_dir).await?)
            }
            Runtime::Sim { start_delay } => Arc::new(crate::sim::SimExecutor::new(*start_delay)),
        })
    }
}
