use std::collections::BTreeMap;

use super::*;
use crate::command::Request;
use crate::model::{
    Checkpoint, RestartCondition, RestartPolicy, ServiceMode, ServiceSpec, TaskSpec, TaskStatus,
    UpdateConfig,
};
use crate::orchestrator;

/// A cluster the tests change only through commands, as the managers do, with a simulated
/// worker: the leader's passes (orchestrator and updater on one snapshot, committed together)
/// and the worker's steps take turns, the clock moving by hand.
struct World {
    state: ClusterState,
    index: u64,
    next_id: u64,
    now: u64,
    /// What a task of each image does when started: run, or fail with this error.
    fails: BTreeMap<String, String>,
}

impl World {
    /// Web with `replicas` tasks of v1 on node n1.
    fn new(replicas: u64, update_config: UpdateConfig) -> World {
        World::with(ServiceMode::Replicated { replicas }, &["n1"], update_config)
    }

    fn with(mode: ServiceMode, nodes: &[&str], update_config: UpdateConfig) -> World {
        let mut world = World {
            state: ClusterState::default(),
            index: 0,
            next_id: 0,
            now: 1_000,
            fails: BTreeMap::new(),
        };
        for name in nodes {
            world.apply(vec![Command::AddNode {
                node: crate::testing::node(name, name),
            }]);
        }
        let mut service = crate::testing::service(
            mode,
            TaskSpec {
                image: "v1".to_string(),
                restart_policy: RestartPolicy {
                    delay_ms: 0,
                    ..RestartPolicy::default()
                },
                ..Default::default()
            },
        );
        service.spec.update_config = update_config.clone();
        service.spec.rollback_config = update_config;
        world.apply(vec![Command::CreateService { service }]);
        // Every slot running v1, well past any monitor period.
        world.settle(10);
        world.now += 60_000;
        world
    }

    fn apply(&mut self, commands: Vec<Command>) {
        self.index += 1;
        let mut events = Vec::new();
        let response = self.state.apply(
            self.index,
            &Request::new(Timestamp(self.now), commands),
            &mut events,
        );
        for result in response.results {
            result.expect("command applies");
        }
    }

    fn service(&self) -> Service {
        self.state.service("web").expect("web").clone()
    }

    fn status(&self) -> UpdateStatus {
        self.service().update_status.expect("an update status")
    }

    /// What the leader decides now: the orchestrator's and the updater's commands, as the
    /// manager's loop gathers them, and the earliest wake-up.
    fn decide(&mut self) -> (Vec<Command>, Option<Timestamp>) {
        let service = self.service();
        let mut counter = self.next_id;
        let mut new_id = || {
            counter += 1;
            format!("t{counter:03}")
        };
        let eligible = |_: &Node| true;
        let now = Timestamp(self.now);
        let update = advance(&self.state, &service, now, &mut new_id, &eligible);
        let orchestration = if rolls_back(&update) {
            Plan::default()
        } else {
            orchestrator::reconcile(&self.state, &service, now, 5, &mut new_id, &eligible)
        };
        self.next_id = counter;
        let wake = [update.wake_at, orchestration.wake_at]
            .into_iter()
            .flatten()
            .min();
        let mut commands = update.commands;
        commands.extend(orchestration.commands);
        (commands, wake)
    }

    /// One pass of the leader, committed; returns the wake-up time.
    fn pass(&mut self) -> Option<Timestamp> {
        let (commands, wake) = self.decide();
        if !commands.is_empty() {
            self.apply(commands);
        }
        wake
    }

    /// One step of the worker: tasks meant to run start (and fail, for a failing image),
    /// tasks meant to stop stop.
    fn work(&mut self) {
        let mut commands = Vec::new();
        let now = Timestamp(self.now);
        for task in self.state.tasks() {
            let state = task.status.state;
            if task.desired_state == TaskState::Running && state < TaskState::Running {
                if task.node_id.is_none() {
                    commands.push(Command::AssignTask {
                        id: task.id.clone(),
                        node_id: "n1".to_string(),
                    });
                }
                let status = match self.fails.get(&task.spec.image) {
                    Some(error) => TaskStatus {
                        error: Some(error.clone()),
                        ..TaskStatus::new(TaskState::Failed, now, "exited")
                    },
                    None => TaskStatus::new(TaskState::Running, now, "started"),
                };
                commands.push(Command::UpdateTaskStatus {
                    id: task.id.clone(),
                    status,
                });
            } else if task.desired_state > TaskState::Running && !state.is_terminal() {
                commands.push(Command::UpdateTaskStatus {
                    id: task.id.clone(),
                    status: TaskStatus::new(TaskState::Shutdown, now, "stopped"),
                });
            }
        }
        if !commands.is_empty() {
            self.apply(commands);
        }
    }

    /// Leader and worker take turns `rounds` times, at the same time.
    fn settle(&mut self, rounds: usize) {
        for _ in 0..rounds {
            self.pass();
            self.work();
        }
    }

    /// Changes web's spec as `ServiceUpdate` does: a change of the tasks starts an update.
    fn update(&mut self, edit: impl FnOnce(&mut ServiceSpec)) {
        let service = self.service();
        let mut spec = service.spec.clone();
        edit(&mut spec);
        let starts = spec.task != service.spec.task || spec.ports != service.spec.ports;
        let wanted = spec
            .mode
            .slots()
            .unwrap_or(self.state.nodes().count() as u64);
        let update_status = starts.then(|| {
            UpdateStatus::start(
                UpdateState::Updating,
                Timestamp(self.now),
                &spec.update_config,
                wanted,
                "",
            )
        });
        self.apply(vec![Command::UpdateService {
            id: "s1".to_string(),
            expected_version: None,
            spec,
            update_status,
        }]);
    }

    /// Web's tasks now run `image`.
    fn update_image(&mut self, image: &str) {
        self.update(|spec| spec.task.image = image.to_string());
    }

    /// `ServiceRollback`, as the API does it.
    fn roll_back(&mut self) {
        let previous = self.service().previous_spec.expect("a previous spec");
        let status = UpdateStatus::start(
            UpdateState::RollbackStarted,
            Timestamp(self.now),
            &previous.rollback_config,
            4,
            "manually requested rollback",
        );
        self.apply(vec![Command::UpdateService {
            id: "s1".to_string(),
            expected_version: None,
            spec: previous,
            update_status: Some(status),
        }]);
    }

    /// `ServiceUpdateContinue`, as the API does it.
    fn continue_update(&mut self, pause_after: Option<Checkpoint>) {
        let current = self.status();
        let mut status = current.clone();
        status.state = match current.state {
            UpdateState::Paused => UpdateState::Updating,
            UpdateState::RollbackPaused => UpdateState::RollbackStarted,
            other => panic!("nothing paused: {other}"),
        };
        status.message.clear();
        status.next_batch_at = None;
        status.pause_at = pause_after.map(|c| status.updated + c.tasks(4));
        self.apply(vec![Command::SetUpdateStatus {
            service_id: "s1".to_string(),
            expected: Some(current),
            status,
        }]);
    }

    /// Tasks meant to run and running, per image.
    fn running(&self) -> BTreeMap<String, u64> {
        let mut running = BTreeMap::new();
        for task in self.state.tasks() {
            if task.desired_state == TaskState::Running && task.status.state == TaskState::Running {
                *running.entry(task.spec.image.clone()).or_default() += 1;
            }
        }
        running
    }

    fn running_total(&self) -> u64 {
        self.running().values().sum()
    }

    /// Tasks of `image` ever created.
    fn created(&self, image: &str) -> usize {
        self.state.tasks().filter(|t| t.spec.image == image).count()
    }

    /// Tasks of `image` created per slot.
    fn created_per_slot(&self, image: &str) -> BTreeMap<u64, usize> {
        let mut per_slot = BTreeMap::new();
        for task in self.state.tasks().filter(|t| t.spec.image == image) {
            *per_slot.entry(task.slot.unwrap_or(0)).or_default() += 1;
        }
        per_slot
    }

    /// Runs leader passes and worker steps, `step_ms` apart, until the update moves to
    /// another state (paused, over, rolling back), checking `invariant` after each half-step;
    /// returns the rounds it took.
    fn run(&mut self, step_ms: u64, mut invariant: impl FnMut(&World)) -> usize {
        let from = self.status().state;
        for round in 0..500 {
            self.pass();
            invariant(self);
            if self.status().state != from {
                return round;
            }
            self.work();
            invariant(self);
            self.now += step_ms;
        }
        panic!("the update never ended: {:?}", self.status());
    }
}

/// One task created in each of slots 1 to `slots`.
fn one_per_slot(slots: u64) -> BTreeMap<u64, usize> {
    (1..=slots).map(|slot| (slot, 1)).collect()
}

fn config(parallelism: u64, monitor_ms: u64) -> UpdateConfig {
    UpdateConfig {
        parallelism,
        monitor_ms,
        ..UpdateConfig::default()
    }
}

#[test]
fn replacements_start_in_batches_of_parallelism() {
    let mut world = World::new(5, config(2, 1_000));
    world.update_image("v2");
    let mut batches = Vec::new();
    let mut seen = 0;
    world.run(250, |world| {
        let created = world.created("v2");
        if created > seen {
            batches.push(created - seen);
            seen = created;
        }
    });
    assert_eq!(batches, [2, 2, 1]);
    let status = world.status();
    assert_eq!(status.state, UpdateState::Completed);
    assert_eq!(status.message, "update completed");
    assert_eq!(status.completed_at, Some(Timestamp(world.now)));
    assert_eq!((status.updated, status.failures), (5, 0));
    assert_eq!(world.running(), BTreeMap::from([("v2".to_string(), 5)]));
}

#[test]
fn parallelism_zero_replaces_every_task_at_once() {
    let mut world = World::new(4, config(0, 1_000));
    world.update_image("v2");
    world.pass();
    assert_eq!(world.created("v2"), 4);
    world.run(250, |_| {});
    assert_eq!(world.status().updated, 4);
}

#[test]
fn stop_first_never_has_more_than_parallelism_tasks_down() {
    for parallelism in [1, 2] {
        let mut world = World::new(4, config(parallelism, 1_000));
        world.update_image("v2");
        let mut most_down = 0;
        world.run(200, |world| {
            let down = 4 - world.running_total();
            assert!(down <= parallelism, "{down} down at {}", world.now);
            most_down = most_down.max(down);
        });
        assert_eq!(most_down, parallelism, "the update did stop tasks first");
        assert_eq!(world.status().state, UpdateState::Completed);
        assert_eq!(world.running(), BTreeMap::from([("v2".to_string(), 4)]));
    }
}

#[test]
fn start_first_never_has_fewer_than_desired_running() {
    let mut world = World::new(
        4,
        UpdateConfig {
            order: UpdateOrder::StartFirst,
            ..config(2, 1_000)
        },
    );
    world.update_image("v2");
    let mut most = 0;
    world.run(200, |world| {
        let running = world.running_total();
        assert!(running >= 4, "{running} running at {}", world.now);
        most = most.max(running);
    });
    assert!(most > 4, "old and new tasks never ran together");
    assert_eq!(world.status().state, UpdateState::Completed);
    assert_eq!(world.running(), BTreeMap::from([("v2".to_string(), 4)]));
    // The old tasks were shut down once their replacements ran, not before.
    assert!(world
        .state
        .tasks()
        .filter(|t| t.spec.image == "v1")
        .all(|t| t.desired_state == TaskState::Shutdown && t.status.state == TaskState::Shutdown));
}

#[test]
fn a_replacement_is_updated_only_after_its_monitor_period() {
    let mut world = World::new(2, config(1, 5_000));
    world.update_image("v2");
    world.pass();
    world.work();
    let started = world.now;
    // Running, but not for long enough: the wake-up is when the period ends.
    assert_eq!(world.pass(), Some(Timestamp(started + 5_000)));
    world.now = started + 4_999;
    world.pass();
    assert_eq!(world.status().updated, 0);
    assert_eq!(
        world.created("v2"),
        1,
        "the next batch waits for the monitor"
    );
    world.now = started + 5_000;
    world.pass();
    assert_eq!(world.status().updated, 1);
    assert_eq!(world.created("v2"), 2);
}

#[test]
fn the_delay_runs_between_the_end_of_a_batch_and_the_next() {
    let mut world = World::new(
        2,
        UpdateConfig {
            delay_ms: 3_000,
            ..config(1, 0)
        },
    );
    world.update_image("v2");
    world.pass();
    assert_eq!(world.created("v2"), 1, "the first batch starts at once");
    world.work();
    let ended = world.now;
    // The batch ends now: the next may start 3 s later, and the status says when.
    assert_eq!(world.pass(), Some(Timestamp(ended + 3_000)));
    assert_eq!(world.status().next_batch_at, Some(Timestamp(ended + 3_000)));
    world.now = ended + 2_999;
    world.pass();
    assert_eq!(world.created("v2"), 1);
    world.now = ended + 3_000;
    world.pass();
    assert_eq!(world.created("v2"), 2);
    assert_eq!(world.status().next_batch_at, None);
    world.run(100, |_| {});
    assert_eq!(world.status().state, UpdateState::Completed);
}

#[test]
fn a_failing_replacement_pauses_the_update_and_nothing_more_starts() {
    let mut world = World::new(4, config(1, 1_000));
    world.fails.insert("bad".into(), "exit status 1".into());
    world.update_image("bad");
    world.run(100, |_| {});
    let status = world.status();
    assert_eq!(status.state, UpdateState::Paused);
    assert_eq!(
        status.message,
        "update paused: task web.1 failed: exit status 1"
    );
    assert_eq!((status.updated, status.failures), (0, 1));
    // Paused: the other slots keep v1; slot 1 is restarted by its restart policy as usual,
    // and its failures are no longer the update's.
    for _ in 0..5 {
        world.settle(1);
        world.now += 100;
    }
    assert_eq!(world.running(), BTreeMap::from([("v1".to_string(), 3)]));
    assert_eq!(
        world
            .created_per_slot("bad")
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [1]
    );
    assert_eq!(world.status().failures, 1);
}

#[test]
fn continue_goes_on_past_failures_and_counts_each_once() {
    let mut world = World::new(
        3,
        UpdateConfig {
            failure_action: FailureAction::Continue,
            ..config(1, 1_000)
        },
    );
    world.fails.insert("bad".into(), "boom".into());
    world.update(|spec| {
        spec.task.image = "bad".to_string();
        spec.task.restart_policy.condition = RestartCondition::None;
    });
    world.run(100, |_| {});
    let status = world.status();
    assert_eq!(status.state, UpdateState::Completed);
    assert_eq!((status.updated, status.failures), (0, 3));
    // One attempt per slot: the restart policy said none.
    assert_eq!(world.created_per_slot("bad"), one_per_slot(3));
}

#[test]
fn failures_within_the_ratio_are_tolerated_and_the_next_one_pauses() {
    // 0.5 of 4 tasks: two failures are tolerated, the third pauses.
    let mut world = World::new(
        4,
        UpdateConfig {
            max_failure_ratio_permille: 500,
            ..config(1, 1_000)
        },
    );
    world.fails.insert("bad".into(), "boom".into());
    world.update(|spec| {
        spec.task.image = "bad".to_string();
        spec.task.restart_policy.condition = RestartCondition::None;
    });
    world.run(100, |_| {});
    let status = world.status();
    assert_eq!(status.state, UpdateState::Paused);
    assert_eq!(status.failures, 3);
    assert_eq!(status.message, "update paused: task web.3 failed: boom");
    assert_eq!(world.running(), BTreeMap::from([("v1".to_string(), 1)]));
}

#[test]
fn the_rollback_action_goes_back_to_the_previous_spec_with_the_rollback_config() {
    let mut world = World::new(
        4,
        UpdateConfig {
            failure_action: FailureAction::Rollback,
            ..config(1, 1_000)
        },
    );
    world.fails.insert("bad".into(), "boom".into());
    // The spec rolled back to says how: all at once. (A change of the configs only starts
    // no update.)
    world.update(|spec| spec.rollback_config = config(0, 500));
    world.update_image("bad");
    world.run(100, |_| {});
    let service = world.service();
    let status = world.status();
    assert_eq!(status.state, UpdateState::RollbackStarted);
    assert_eq!(
        status.message,
        "update rolled back: task web.1 failed: boom"
    );
    assert_eq!(service.spec.task.image, "v1");
    assert_eq!(
        service.previous_spec.map(|s| s.task.image),
        Some("bad".to_string())
    );
    world.run(100, |_| {});
    let status = world.status();
    assert_eq!(status.state, UpdateState::RollbackCompleted);
    assert_eq!(status.message, "rollback completed");
    assert_eq!(world.running(), BTreeMap::from([("v1".to_string(), 4)]));
    assert_eq!(
        world.created("bad"),
        1,
        "the update went no further than slot 1"
    );
}

#[test]
fn a_manual_rollback_uses_the_rollback_config() {
    let mut world = World::new(4, config(1, 1_000));
    // The spec rolled back to says how: all at once, whatever v2's rollback config says.
    world.update(|spec| spec.rollback_config = config(0, 500));
    world.update(|spec| {
        spec.task.image = "v2".to_string();
        spec.rollback_config = config(1, 500);
    });
    world.run(100, |_| {});
    assert_eq!(world.status().state, UpdateState::Completed);
    let v1_before = world.created("v1");
    world.roll_back();
    world.pass();
    // Parallelism 0 in the rollback config: every slot at once.
    assert_eq!(world.created("v1") - v1_before, 4);
    world.run(100, |_| {});
    let status = world.status();
    assert_eq!(status.state, UpdateState::RollbackCompleted);
    assert_eq!(status.updated, 4);
    assert_eq!(world.running(), BTreeMap::from([("v1".to_string(), 4)]));
}

#[test]
fn a_rollback_that_fails_pauses_even_with_the_rollback_action() {
    let mut world = World::new(2, config(1, 1_000));
    world.update(|spec| {
        spec.task.image = "v2".to_string();
        spec.rollback_config.failure_action = FailureAction::Rollback;
    });
    world.run(100, |_| {});
    // The image rolled back to breaks meanwhile.
    world.fails.insert("v1".into(), "gone".into());
    world.roll_back();
    world.run(100, |_| {});
    let status = world.status();
    assert_eq!(status.state, UpdateState::RollbackPaused);
    assert_eq!(status.message, "rollback paused: task web.1 failed: gone");
    // Continued, it goes on from where it stood.
    world.fails.clear();
    world.continue_update(None);
    world.run(100, |_| {});
    assert_eq!(world.status().state, UpdateState::RollbackCompleted);
}

#[test]
fn checkpoints_pause_and_continue_moves_to_the_next() {
    let mut world = World::new(
        4,
        UpdateConfig {
            pause_after: Some(Checkpoint::Tasks(1)),
            ..config(2, 1_000)
        },
    );
    world.update_image("v2");
    assert_eq!(world.status().pause_at, Some(1));
    world.run(100, |_| {});
    let status = world.status();
    assert_eq!(status.state, UpdateState::Paused);
    assert_eq!(
        status.message,
        "paused at the checkpoint: 1 of 4 tasks updated"
    );
    // The batch was cut to the checkpoint: one replacement, not two.
    assert_eq!(world.created("v2"), 1);
    // Paused: nothing starts, however long it waits.
    world.now += 60_000;
    world.settle(3);
    assert_eq!(world.created("v2"), 1);

    // Two more: counted from the one already updated.
    world.continue_update(Some(Checkpoint::Tasks(2)));
    assert_eq!(world.status().pause_at, Some(3));
    world.run(100, |_| {});
    let status = world.status();
    assert_eq!(status.state, UpdateState::Paused);
    assert_eq!(status.updated, 3);
    assert_eq!(
        status.message,
        "paused at the checkpoint: 3 of 4 tasks updated"
    );

    world.continue_update(None);
    world.run(100, |_| {});
    let status = world.status();
    assert_eq!(status.state, UpdateState::Completed);
    assert_eq!(status.updated, 4);
    assert_eq!(world.created_per_slot("v2").values().sum::<usize>(), 4);
}

#[test]
fn a_new_leader_deciding_from_the_same_state_updates_no_slot_twice() {
    let mut world = World::new(
        4,
        UpdateConfig {
            order: UpdateOrder::StartFirst,
            ..config(2, 1_000)
        },
    );
    world.update_image("v2");
    for _ in 0..40 {
        // The old leader decided and committed; a new one decides again from the state it
        // finds, at the same time and later: it never starts a slot already started.
        world.pass();
        let (again, _) = world.decide();
        assert!(
            !again
                .iter()
                .any(|c| matches!(c, Command::CreateTask { .. })),
            "{again:?}"
        );
        if !world.status().state.is_moving() {
            break;
        }
        world.work();
        world.now += 150;
    }
    assert_eq!(world.status().state, UpdateState::Completed);
    assert_eq!(world.created_per_slot("v2"), one_per_slot(4));
}

#[test]
fn a_leader_change_mid_update_resumes_it_where_it_stood() {
    let mut world = World::new(4, config(1, 1_000));
    world.update_image("v2");
    for _ in 0..8 {
        world.pass();
        world.work();
        world.now += 300;
    }
    let status = world.status();
    assert!(
        status.updated >= 1 && status.state == UpdateState::Updating,
        "{status:?}"
    );
    // The new leader has only the replicated state (here: a snapshot of it) and its clock.
    let snapshot = world.state.clone();
    world.state = snapshot;
    world.run(300, |_| {});
    assert_eq!(world.status().state, UpdateState::Completed);
    assert_eq!(world.status().updated, 4);
    assert_eq!(world.created_per_slot("v2"), one_per_slot(4));
}

#[test]
fn a_new_spec_during_an_update_wins_and_starts_over_from_there() {
    let mut world = World::new(3, config(1, 1_000));
    world.update_image("v2");
    for _ in 0..4 {
        world.pass();
        world.work();
        world.now += 600;
    }
    assert!(world.created("v2") >= 1);
    world.update_image("v3");
    assert_eq!(world.status().updated, 0);
    world.run(300, |_| {});
    assert_eq!(world.status().state, UpdateState::Completed);
    assert_eq!(world.running(), BTreeMap::from([("v3".to_string(), 3)]));
    assert_eq!(world.created("v3"), 3);
}

#[test]
fn a_change_that_runs_the_same_tasks_starts_no_update() {
    let mut world = World::new(2, config(1, 1_000));
    world.update(|spec| {
        spec.labels.insert("tier".into(), "web".into());
    });
    assert_eq!(world.service().update_status, None);
    world.update(|spec| spec.update_config.parallelism = 3);
    assert_eq!(world.service().update_status, None);
    // Without an update (none ever started), an outdated task is still replaced at once.
    let mut spec = world.service().spec;
    spec.task.image = "v2".into();
    world.apply(vec![Command::UpdateService {
        id: "s1".into(),
        expected_version: None,
        spec,
        update_status: None,
    }]);
    world.pass();
    assert_eq!(world.created("v2"), 2);
}

#[test]
fn a_start_first_replacement_that_fails_leaves_the_old_task_running() {
    let mut world = World::new(
        2,
        UpdateConfig {
            order: UpdateOrder::StartFirst,
            ..config(1, 1_000)
        },
    );
    world.fails.insert("bad".into(), "boom".into());
    world.update_image("bad");
    world.run(100, |world| {
        assert_eq!(world.running(), BTreeMap::from([("v1".to_string(), 2)]));
    });
    let status = world.status();
    assert_eq!(status.state, UpdateState::Paused);
    assert_eq!(status.failures, 1);
    // Paused, the restart policy still replaces the failed replacement beside the old task,
    // which keeps running; those failures are not the update's.
    let attempts = world.created("bad");
    world.settle(3);
    assert_eq!(world.running(), BTreeMap::from([("v1".to_string(), 2)]));
    assert!(world.created("bad") > attempts);
    assert_eq!(
        world
            .created_per_slot("bad")
            .keys()
            .copied()
            .collect::<Vec<_>>(),
        [1]
    );
    assert_eq!(world.status().failures, 1);
}

#[test]
fn a_global_service_is_updated_node_by_node() {
    let nodes = ["n1", "n2", "n3"];
    let mut world = World::with(ServiceMode::Global, &nodes, config(1, 1_000));
    assert_eq!(world.running_total(), 3);
    world.update_image("v2");
    world.run(200, |world| {
        let down = 3 - world.running_total();
        assert!(down <= 1, "{down} down at {}", world.now);
    });
    let status = world.status();
    assert_eq!(status.state, UpdateState::Completed);
    assert_eq!(status.updated, 3);
    let mut on: Vec<String> = world
        .state
        .tasks()
        .filter(|t| t.spec.image == "v2" && t.status.state == TaskState::Running)
        .filter_map(|t| t.node_id.clone())
        .collect();
    on.sort();
    assert_eq!(on, nodes);
}
