//! What each running task uses (CPU, memory), as its node last sampled it: soft state, in the
//! leader's memory only, never in the Raft log.
//!
//! ```text
//!  session report (usage entries) ──> record: only for tasks the state places on that node
//!  committed changes ──> prune: tasks that ended or went, nodes that went down or away
//!  session closed, leadership lost ──> forget
//!  TaskList ──> of(task): the latest sample, while the task runs on the node that sent it
//! ```
//!
//! A new leader knows nothing until the nodes' next samples reach it, a heartbeat period or
//! two after their sessions open.

use parking_lot::Mutex;
use std::collections::HashMap;

use essaim_api::control::TaskUsage;
use essaim_api::pb;
use essaim_core::event::{Change, Event};
use essaim_core::model::{NodeState, ObjectId, Task, TaskState};
use essaim_core::ClusterState;

#[derive(Default)]
pub struct Usages {
    /// Task ID to the node that sent the sample, and the sample.
    latest: Mutex<HashMap<ObjectId, (ObjectId, TaskUsage)>>,
}

impl Usages {
    fn latest(&self) -> parking_lot::MutexGuard<'_, HashMap<ObjectId, (ObjectId, TaskUsage)>> {
        self.latest.lock()
    }

    /// Takes in the samples `node` sent, of the tasks `state` says run there; the others
    /// (ended, moved, unknown) are dropped.
    ///
    /// # Caveats
    /// Call it with the state's read guard held, so that no change can be applied and pruned
    /// between the check and the insertion: an entry of a task that just ended would stay.
    pub fn record(&self, state: &ClusterState, node: &str, samples: &[pb::TaskUsage]) {
        if samples.is_empty() {
            return;
        }
        let mut latest = self.latest();
        for sample in samples {
            let (task_id, usage) = TaskUsage::from_wire(sample);
            let runs_there = state
                .task_by_id(&task_id)
                .is_some_and(|task| runs_on(task, node));
            if runs_there {
                latest.insert(task_id, (node.to_string(), usage));
            }
        }
    }

    /// The task's latest sample, if it runs on the node that took it.
    pub fn of(&self, task: &Task) -> Option<TaskUsage> {
        let latest = self.latest();
        let (node, usage) = latest.get(&task.id)?;
        runs_on(task, node).then_some(*usage)
    }

    /// Forgets what a batch of committed changes ended.
    pub fn prune(&self, batch: &[Event]) {
        let mut latest = self.latest();
        if latest.is_empty() {
            return;
        }
        for event in batch {
            match &event.change {
                Change::Task(task) if task.status.state != TaskState::Running => {
                    latest.remove(&task.id);
                }
                Change::TaskRemoved { id, .. } => {
                    latest.remove(id);
                }
                Change::Node(node) if node.status.state == NodeState::Down => {
                    latest.retain(|_, (from, _)| *from != node.id);
                }
                Change::NodeRemoved { id } => latest.retain(|_, (from, _)| from != id),
                _ => {}
            }
        }
    }

    /// Forgets the samples of a node whose session ended.
    pub fn forget_node(&self, node: &str) {
        self.latest().retain(|_, (from, _)| from != node);
    }

    pub fn clear(&self) {
        self.latest().clear();
    }
}

fn runs_on(task: &Task, node: &str) -> bool {
    task.node_id.as_deref() == Some(node) && task.status.state == TaskState::Running
}

#[cfg(test)]
mod tests {
    use super::*;
    use essaim_core::model::{Service, ServiceMode, ServiceSpec, TaskSpec, TaskStatus};
    use essaim_core::{Command, Request, Timestamp};

    fn task(id: &str, node: &str, state: TaskState) -> Task {
        Task {
            id: id.to_string(),
            version: 1,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            service_id: "svc".to_string(),
            service_name: "svc".to_string(),
            slot: Some(1),
            node_id: Some(node.to_string()),
            spec: TaskSpec::default(),
            ports: Vec::new(),
            networks: Vec::new(),
            service_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus::new(state, Timestamp(0), ""),
        }
    }

    /// A state with service `svc` and these tasks of it, each as given.
    fn state_with(tasks: &[Task]) -> ClusterState {
        let service = Service {
            id: "svc".to_string(),
            version: 0,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            spec: ServiceSpec {
                name: "svc".to_string(),
                labels: Default::default(),
                mode: ServiceMode::Replicated { replicas: 1 },
                task: TaskSpec::default(),
                ports: Vec::new(),
                update_config: Default::default(),
                rollback_config: Default::default(),
                endpoint_mode: Default::default(),
            },
            previous_spec: None,
            update_status: None,
            virtual_ips: Vec::new(),
        };
        let commands = std::iter::once(Command::CreateService { service })
            .chain(
                tasks
                    .iter()
                    .map(|task| Command::CreateTask { task: task.clone() }),
            )
            .collect();
        let mut state = ClusterState::default();
        let response = state.apply(1, &Request::new(Timestamp(1), commands), &mut Vec::new());
        assert!(response.results.iter().all(Result::is_ok), "{response:?}");
        state
    }

    fn sample(task_id: &str, cpu_millicores: u64) -> pb::TaskUsage {
        TaskUsage {
            cpu_millicores,
            memory_bytes: 1 << 20,
            sampled_at: Timestamp(1),
        }
        .to_wire(task_id)
    }

    fn event(change: Change) -> Event {
        Event { index: 1, change }
    }

    #[test]
    fn a_node_speaks_only_for_the_running_tasks_the_state_gives_it() {
        let state = state_with(&[
            task("t1", "n1", TaskState::Running),
            task("t2", "n2", TaskState::Running),
            task("t3", "n1", TaskState::Complete),
        ]);
        let usages = Usages::default();
        usages.record(
            &state,
            "n1",
            &[
                sample("t1", 900),
                sample("t2", 5),
                sample("t3", 5),
                sample("t9", 5),
            ],
        );
        let cpu = |id: &str| {
            let task = state.task_by_id(id).expect("task");
            usages.of(task).map(|u| u.cpu_millicores)
        };
        assert_eq!(cpu("t1"), Some(900));
        assert_eq!(cpu("t2"), None, "t2 runs on another node");
        assert_eq!(cpu("t3"), None, "t3 ended");
    }

    #[test]
    fn samples_go_when_their_task_ends_or_their_node_goes() {
        let state = state_with(&[
            task("t1", "n1", TaskState::Running),
            task("t2", "n1", TaskState::Running),
            task("t3", "n2", TaskState::Running),
            task("t4", "n3", TaskState::Running),
        ]);
        let usages = Usages::default();
        usages.record(&state, "n1", &[sample("t1", 1), sample("t2", 1)]);
        usages.record(&state, "n2", &[sample("t3", 1)]);
        usages.record(&state, "n3", &[sample("t4", 1)]);
        usages.prune(&[
            event(Change::Task(task("t1", "n1", TaskState::Failed))),
            event(Change::NodeRemoved { id: "n2".into() }),
        ]);
        let has = |id: &str| usages.of(state.task_by_id(id).expect("task")).is_some();
        assert!(!has("t1") && has("t2") && !has("t3") && has("t4"));
        usages.forget_node("n1");
        assert!(!has("t2") && has("t4"));
        usages.clear();
        assert!(!has("t4"));
    }
}
