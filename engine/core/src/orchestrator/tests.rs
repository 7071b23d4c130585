use std::collections::BTreeMap;

use super::*;
use crate::command::Request;
use crate::model::{RestartPolicy, ServiceSpec, TaskSpec};

/// A cluster state that the tests change only through commands, as the managers do.
struct World {
    state: ClusterState,
    index: u64,
    next_id: u64,
}

impl World {
    fn new(nodes: &[&str]) -> World {
        let mut world = World {
            state: ClusterState::default(),
            index: 0,
            next_id: 0,
        };
        for name in nodes {
            world.apply(Timestamp(0), vec![Command::AddNode { node: node(name) }]);
        }
        world
    }

    fn apply(&mut self, now: Timestamp, commands: Vec<Command>) {
        self.index += 1;
        let mut events = Vec::new();
        let response = self
            .state
            .apply(self.index, &Request::new(now, commands), &mut events);
        for result in response.results {
            result.expect("command applies");
        }
    }

    fn add_service(&mut self, service: Service) {
        self.apply(Timestamp(0), vec![Command::CreateService { service }]);
    }

    /// One pass of the orchestrator, its decisions committed; returns the wake-up time.
    fn reconcile(&mut self, now: u64) -> Option<Timestamp> {
        let service = self.state.service("web").expect("service").clone();
        let mut counter = self.next_id;
        let plan = reconcile(
            &self.state,
            &service,
            Timestamp(now),
            3,
            &mut || {
                counter += 1;
                format!("t{counter:03}")
            },
            &|node: &Node| node.spec.availability == Availability::Active,
        );
        self.next_id = counter;
        self.apply(Timestamp(now), plan.commands);
        plan.wake_at
    }

    fn live(&self) -> BTreeMap<u64, String> {
        self.state
            .tasks()
            .filter(|t| t.desired_state == TaskState::Running)
            .map(|t| (t.slot.unwrap_or(0), t.id.clone()))
            .collect()
    }

    fn set_state(&mut self, task: &str, state: TaskState, now: u64) {
        self.apply(
            Timestamp(now),
            vec![Command::UpdateTaskStatus {
                id: task.to_string(),
                status: TaskStatus {
                    state,
                    timestamp: Timestamp(now),
                    message: String::new(),
                    error: None,
                    exit_code: None,
                    ports: Vec::new(),
                    address: None,
                },
            }],
        );
    }

    /// Changes web's spec with `edit`, at `now`.
    fn update(&mut self, now: u64, edit: impl FnOnce(&mut ServiceSpec)) {
        let mut spec = self.state.service("web").expect("svc").spec.clone();
        edit(&mut spec);
        self.apply(
            Timestamp(now),
            vec![Command::UpdateService {
                id: "s1".to_string(),
                expected_version: None,
                spec,
                update_status: None,
            }],
        );
    }

    fn assign(&mut self, task: &str, node: &str) {
        self.apply(
            Timestamp(0),
            vec![Command::AssignTask {
                id: task.to_string(),
                node_id: node.to_string(),
            }],
        );
    }
}

fn node(id: &str) -> Node {
    crate::testing::node(id, id)
}

fn service(mode: ServiceMode, restart_policy: RestartPolicy) -> Service {
    crate::testing::service(
        mode,
        TaskSpec {
            image: "sleep".to_string(),
            restart_policy,
            ..Default::default()
        },
    )
}

fn replicated(replicas: u64) -> Service {
    service(
        ServiceMode::Replicated { replicas },
        RestartPolicy::default(),
    )
}

#[test]
fn a_new_service_gets_one_pending_task_per_slot() {
    let mut world = World::new(&["n1"]);
    world.add_service(replicated(3));
    assert_eq!(world.reconcile(0), None);
    let live = world.live();
    assert_eq!(live.keys().copied().collect::<Vec<_>>(), [1, 2, 3]);
    assert!(world
        .state
        .tasks()
        .all(|t| t.status.state == TaskState::Pending && t.node_id.is_none()));
    // Nothing more to do on the next pass.
    let before = world.live();
    world.reconcile(1);
    assert_eq!(world.live(), before);
}

#[test]
fn scaling_down_shuts_down_the_highest_slots() {
    let mut world = World::new(&["n1"]);
    world.add_service(replicated(5));
    world.reconcile(0);
    let ids: Vec<String> = world.state.tasks().map(|t| t.id.clone()).collect();
    for id in &ids {
        world.assign(id, "n1");
        world.set_state(id, TaskState::Running, 0);
    }
    world.update(1, |spec| {
        spec.mode = ServiceMode::Replicated { replicas: 2 }
    });
    world.reconcile(2);
    assert_eq!(world.live().keys().copied().collect::<Vec<_>>(), [1, 2]);

    // The tasks scaled away are stopped for removal, then forgotten once their node says
    // they stopped: nothing of slots 3 to 5 is kept.
    let removed: Vec<String> = world
        .state
        .tasks()
        .filter(|t| t.desired_state == TaskState::Remove)
        .map(|t| t.id.clone())
        .collect();
    assert_eq!(removed.len(), 3);
    for id in &removed {
        world.set_state(id, TaskState::Shutdown, 3);
    }
    world.reconcile(4);
    let slots: Vec<u64> = world.state.tasks().filter_map(|t| t.slot).collect();
    assert_eq!(slots.iter().max(), Some(&2), "{slots:?}");
}

#[test]
fn tasks_scaled_away_before_they_reach_a_node_are_forgotten_at_once() {
    let mut world = World::new(&["n1"]);
    world.add_service(replicated(3));
    world.reconcile(0);
    world.update(1, |spec| {
        spec.mode = ServiceMode::Replicated { replicas: 1 }
    });
    world.reconcile(2);
    let slots: Vec<u64> = world.state.tasks().filter_map(|t| t.slot).collect();
    assert_eq!(slots, vec![1]);
}

#[test]
fn a_failed_task_is_replaced_in_its_slot_after_the_restart_delay() {
    let mut world = World::new(&["n1"]);
    world.add_service(replicated(1));
    world.reconcile(0);
    let first = world.live()[&1].clone();
    world.assign(&first, "n1");
    world.set_state(&first, TaskState::Running, 100);
    world.set_state(&first, TaskState::Failed, 1_000);

    // The default delay is 5 s: nothing yet, but a wake-up when it ends.
    assert_eq!(world.reconcile(1_000), Some(Timestamp(6_000)));
    assert!(world.live().is_empty());
    assert_eq!(world.reconcile(5_999), Some(Timestamp(6_000)));
    assert_eq!(world.reconcile(6_000), None);
    let second = world.live()[&1].clone();
    assert_ne!(second, first);
    // The failed task stays as history of slot 1.
    let history = world.state.task_by_id(&first).expect("kept");
    assert_eq!(history.desired_state, TaskState::Shutdown);
    assert_eq!(history.slot, Some(1));
}

#[test]
fn restart_conditions_on_failure_and_none() {
    for (condition, end, restarted) in [
        (RestartCondition::OnFailure, TaskState::Complete, false),
        (RestartCondition::OnFailure, TaskState::Failed, true),
        (RestartCondition::None, TaskState::Failed, false),
        (RestartCondition::Any, TaskState::Complete, true),
    ] {
        let mut world = World::new(&["n1"]);
        let policy = RestartPolicy {
            condition,
            delay_ms: 0,
            ..RestartPolicy::default()
        };
        world.add_service(service(ServiceMode::Replicated { replicas: 1 }, policy));
        world.reconcile(0);
        let first = world.live()[&1].clone();
        world.set_state(&first, end, 10);
        world.reconcile(10);
        assert_eq!(
            !world.live().is_empty(),
            restarted,
            "{condition:?} after {end:?}"
        );
    }
}

#[test]
fn restarts_stop_after_max_attempts_within_the_window() {
    let mut world = World::new(&["n1"]);
    let policy = RestartPolicy {
        condition: RestartCondition::Any,
        delay_ms: 0,
        max_attempts: 2,
        window_ms: 60_000,
    };
    world.add_service(service(ServiceMode::Replicated { replicas: 1 }, policy));
    let mut now = 0;
    world.reconcile(now);
    // The first task and two restarts fail; no third restart.
    for _ in 0..3 {
        let task = world.live()[&1].clone();
        now += 1_000;
        world.set_state(&task, TaskState::Failed, now);
        world.reconcile(now);
    }
    assert!(world.live().is_empty());
    // Once the window has moved past the earlier attempts, restarts resume.
    now += 60_000;
    world.reconcile(now);
    assert_eq!(world.live().len(), 1);
}

#[test]
fn tasks_on_a_down_or_drained_node_are_replaced_at_once() {
    for lost in ["down", "drain"] {
        let mut world = World::new(&["n1", "n2"]);
        world.add_service(replicated(1));
        world.reconcile(0);
        let task = world.live()[&1].clone();
        world.assign(&task, "n1");
        world.set_state(&task, TaskState::Running, 10);
        let mut n1 = world.state.node_by_id("n1").expect("n1").clone();
        let command = if lost == "down" {
            n1.status.state = NodeState::Down;
            Command::SetNodeStatus {
                id: "n1".to_string(),
                status: n1.status,
            }
        } else {
            n1.spec.availability = Availability::Drain;
            Command::UpdateNodeSpec {
                id: "n1".to_string(),
                expected_version: None,
                spec: n1.spec,
            }
        };
        world.apply(Timestamp(20), vec![command]);
        // No restart delay: the task did not fail, its node went away.
        assert_eq!(world.reconcile(20), None);
        let replacement = world.live()[&1].clone();
        assert_ne!(replacement, task, "{lost}");
        assert_eq!(
            world.state.task_by_id(&task).expect("old").desired_state,
            TaskState::Shutdown
        );
    }
}

#[test]
fn a_new_task_spec_replaces_the_tasks() {
    let mut world = World::new(&["n1"]);
    world.add_service(replicated(2));
    world.reconcile(0);
    let before = world.live();
    world.update(5, |spec| spec.task.image = "other".to_string());
    world.reconcile(5);
    let after = world.live();
    assert_eq!(after.len(), 2);
    for slot in [1, 2] {
        assert_ne!(after[&slot], before[&slot]);
        let task = world.state.task_by_id(&after[&slot]).expect("new");
        assert_eq!(task.spec.image, "other");
    }
}

#[test]
fn history_beyond_the_limit_is_forgotten_oldest_first() {
    let mut world = World::new(&["n1"]);
    let policy = RestartPolicy {
        delay_ms: 0,
        ..RestartPolicy::default()
    };
    world.add_service(service(ServiceMode::Replicated { replicas: 1 }, policy));
    world.reconcile(0);
    let mut dead = Vec::new();
    for now in 1..=6 {
        let task = world.live()[&1].clone();
        world.set_state(&task, TaskState::Failed, now * 10);
        dead.push(task);
        world.reconcile(now * 10);
        // One more pass: the reaper sees the shut-down tasks as history.
        world.reconcile(now * 10 + 1);
    }
    let slot_tasks: Vec<&str> = world
        .state
        .tasks_of_service("s1")
        .filter(|t| t.desired_state == TaskState::Shutdown)
        .map(|t| t.id.as_str())
        .collect();
    // The limit in these tests is 3: the three newest dead tasks are kept.
    assert_eq!(slot_tasks.len(), 3, "{slot_tasks:?}");
    for old in &dead[..3] {
        assert!(world.state.task_by_id(old).is_none(), "{old} kept");
    }
}

#[test]
fn a_global_service_runs_one_task_on_each_eligible_node() {
    let mut world = World::new(&["n1", "n2", "n3"]);
    world.add_service(service(ServiceMode::Global, RestartPolicy::default()));
    world.reconcile(0);
    let mut on: Vec<String> = world
        .state
        .tasks()
        .filter_map(|t| t.node_id.clone())
        .collect();
    on.sort();
    assert_eq!(on, ["n1", "n2", "n3"]);

    // A node joins: it gets a task. A node is drained: its task is shut down, not moved.
    world.apply(Timestamp(1), vec![Command::AddNode { node: node("n4") }]);
    let mut n2 = world.state.node_by_id("n2").expect("n2").clone();
    n2.spec.availability = Availability::Drain;
    world.apply(
        Timestamp(1),
        vec![Command::UpdateNodeSpec {
            id: "n2".to_string(),
            expected_version: None,
            spec: n2.spec,
        }],
    );
    world.reconcile(2);
    let mut live_on: Vec<String> = world
        .state
        .tasks()
        .filter(|t| t.desired_state == TaskState::Running)
        .filter_map(|t| t.node_id.clone())
        .collect();
    live_on.sort();
    assert_eq!(live_on, ["n1", "n3", "n4"]);
}

#[test]
fn a_global_service_wants_a_task_on_each_node_the_scheduler_accepts() {
    let mut world = World::new(&[]);
    let in_zone = |id: &str| {
        let mut n = node(id);
        n.spec.labels.insert("zone".to_string(), "a".to_string());
        n
    };
    let mut drained = in_zone("n2");
    drained.spec.availability = Availability::Drain;
    let mut down = in_zone("n4");
    down.status.state = NodeState::Down;
    let nodes = vec![in_zone("n1"), drained, node("n3"), down];
    world.apply(
        Timestamp(0),
        nodes
            .into_iter()
            .map(|node| Command::AddNode { node })
            .collect(),
    );
    let mut global = service(ServiceMode::Global, RestartPolicy::default());
    global.spec.task.constraints = vec!["node.labels.zone==a".to_string()];

    // Only n1 is ready, active and in zone a: what `service ls` shows as desired is what the
    // orchestrator creates.
    assert_eq!(wanted_tasks(&world.state, &global.spec), 1);
    let mut id = 0;
    let plan = reconcile(
        &world.state,
        &global,
        Timestamp(0),
        3,
        &mut || {
            id += 1;
            format!("t{id}")
        },
        &|n: &Node| crate::scheduler::accepts(n, &global.spec.task),
    );
    let created: Vec<Option<String>> = plan
        .commands
        .iter()
        .filter_map(|c| match c {
            Command::CreateTask { task } => Some(task.node_id.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(created, [Some("n1".to_string())]);

    assert_eq!(wanted_tasks(&world.state, &replicated(7).spec), 7);
}

fn job(completions: u64, max_concurrent: u64) -> Service {
    service(
        ServiceMode::ReplicatedJob {
            completions,
            max_concurrent,
        },
        RestartPolicy {
            condition: RestartCondition::OnFailure,
            delay_ms: 0,
            ..RestartPolicy::default()
        },
    )
}

/// Moves every live task that is still pending onto n1, running.
fn run_pending(world: &mut World, now: u64) -> Vec<String> {
    let pending: Vec<String> = world
        .state
        .tasks()
        .filter(|t| t.desired_state == TaskState::Running && t.status.state == TaskState::Pending)
        .map(|t| t.id.clone())
        .collect();
    for id in &pending {
        world.assign(id, "n1");
        world.set_state(id, TaskState::Running, now);
    }
    pending
}

fn completed(world: &World) -> usize {
    world
        .state
        .tasks()
        .filter(|t| t.status.state == TaskState::Complete)
        .count()
}

#[test]
fn a_job_runs_its_completions_at_most_max_concurrent_at_once_and_stops() {
    let mut world = World::new(&["n1"]);
    world.add_service(job(5, 2));
    world.reconcile(0);
    assert_eq!(world.live().keys().copied().collect::<Vec<_>>(), [1, 2]);
    let mut most_at_once = 0;
    for step in 1..10 {
        let running = run_pending(&mut world, step);
        most_at_once = most_at_once.max(
            world
                .state
                .tasks()
                .filter(|t| t.status.state == TaskState::Running)
                .count(),
        );
        for id in running {
            world.set_state(&id, TaskState::Complete, step);
        }
        world.reconcile(step);
    }
    assert_eq!(most_at_once, 2);
    assert_eq!(completed(&world), 5);
    assert!(world.live().is_empty(), "a completed job runs nothing");
    // Nothing more on another pass: completions are not restarted.
    world.reconcile(20);
    assert_eq!(world.state.tasks().count(), 5);
}

#[test]
fn a_failed_job_task_is_retried_and_an_update_runs_the_job_again() {
    let mut world = World::new(&["n1"]);
    world.add_service(job(1, 0));
    world.reconcile(0);
    let first = run_pending(&mut world, 1);
    world.set_state(&first[0], TaskState::Failed, 2);
    world.reconcile(3);
    let retry = run_pending(&mut world, 4);
    assert_eq!(retry.len(), 1, "a failure is retried (on-failure)");
    world.set_state(&retry[0], TaskState::Complete, 5);
    world.reconcile(6);
    assert!(world.live().is_empty());
    // `service update --force`: the same job again.
    world.update(7, |spec| spec.task.force_update += 1);
    world.reconcile(8);
    assert_eq!(
        run_pending(&mut world, 9).len(),
        1,
        "runs again after an update"
    );
}

#[test]
fn a_global_job_runs_once_on_every_node() {
    let mut world = World::new(&["n1", "n2"]);
    world.add_service(service(ServiceMode::GlobalJob, RestartPolicy::default()));
    world.reconcile(0);
    let tasks: Vec<(String, Option<String>)> = world
        .state
        .tasks()
        .map(|t| (t.id.clone(), t.node_id.clone()))
        .collect();
    assert_eq!(tasks.len(), 2, "{tasks:?}");
    for (id, _) in &tasks {
        world.set_state(id, TaskState::Running, 1);
        world.set_state(id, TaskState::Complete, 2);
    }
    world.reconcile(3);
    assert_eq!(world.state.tasks().count(), 2, "not run again");
}
