//! The worker side of a node: every node, manager or worker, runs tasks.
//!
//! ```text
//!  leader's dispatcher ──assignments──> agent ──start/stop──> executor (docker | process | sim)
//!                      <──status reports──     <──exits───
//! ```
//!
//! # Layout
//! - [`agent`]: one session with the leader, one supervisor per task.
//! - [`executor`]: the one trait every runtime implements, and the choice of runtime.
//! - [`docker`]: tasks as containers on the machine's Docker engine.
//! - [`process`]: tasks as OS processes; [`cgroups`], their resource limits.
//! - [`sim`]: simulated tasks, for scale tests.
//! - [`dns`]: the name server of each network on the node, for its tasks.
//! - [`vip`]: each service's virtual IP, balanced in the namespace of the task that connects.
//! - [`mesh`]: the routing mesh: published ports open on the node, balanced over the tasks.
//! - [`nft`]: the rules of both, written into a namespace.
//! - [`overlay`]: the node's share of the cluster networks, made in the kernel for its tasks.
//! - [`generic`]: the node's generic resources (GPUs...), handed to its tasks.
//! - [`task_files`]: the secrets and configs of the node's tasks, in memory and as files.
//! - [`logs`]: the output kept of each task.
//! - [`machine`]: the CPUs and memory a node reports.

pub mod accounts;
pub mod agent;
pub mod cgroups;
pub mod dns;
pub mod docker;
pub mod executor;
pub mod generic;
pub mod logs;
pub mod machine;
pub mod mesh;
pub mod mounts;
pub mod nft;
pub mod overlay;
pub mod process;
pub mod sim;
pub mod task_files;
pub mod vip;

pub use agent::{Worker, WorkerSetup};
pub use executor::{Executor, Runtime};

/// What the unit tests of the runtimes' neighbours build their tasks from.
#[cfg(test)]
pub(crate) mod testing {
    use essaim_core::model::{Task, TaskState, TaskStatus};
    use essaim_core::Timestamp;

    /// An assigned task `id` of service `web`, slot 1, on node `n1`, with an empty spec.
    pub fn task(id: &str) -> Task {
        Task {
            id: id.into(),
            version: 1,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            service_id: "s1".into(),
            service_name: "web".into(),
            slot: Some(1),
            node_id: Some("n1".into()),
            spec: Default::default(),
            ports: Vec::new(),
            networks: Vec::new(),
            service_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Assigned, Timestamp(0), ""),
        }
    }
}
