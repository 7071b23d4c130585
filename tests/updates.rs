//! End-to-end tests of rolling updates on real daemons with the process runtime: an update
//! replaces tasks batch by batch as its config says (stop-first never takes more than
//! `parallelism` tasks down, start-first never leaves fewer than the desired count running), a
//! failing release pauses or rolls back, checkpoints stop a phased rollout until it is
//! continued, and a new leader finishes an update the old one started.
//!
//! Tasks are `sleep` processes: the old spec sleeps `OLD`, the new one `NEW` seconds, so a
//! task's spec says which release it runs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use anyhow::{bail, Result};
use essaim_api::control::{ServiceView, TaskView};
use essaim_api::{ControlError, ControlReply, ControlRequest};
use essaim_core::model::{
    Checkpoint, FailureAction, ServiceMode, ServiceSpec, TaskSpec, UpdateConfig, UpdateOrder,
    UpdateState,
};
use essaim_tests::{running, wait_for, Cluster, Daemon};

const SETTLE: Duration = Duration::from_secs(30);
/// An update of four tasks, each monitored for a second, with room for a slow machine.
const UPDATE: Duration = Duration::from_secs(60);
const OLD: &str = "3600";
const NEW: &str = "3601";

/// `replicas` tasks sleeping `seconds`, each watched for a second once updated.
fn spec(name: &str, replicas: u64, seconds: &str) -> ServiceSpec {
    ServiceSpec {
        name: name.to_string(),
        labels: Default::default(),
        mode: ServiceMode::Replicated { replicas },
        task: TaskSpec {
            image: "sleep".to_string(),
            args: vec![seconds.to_string()],
            stop_grace_period_ms: 1_000,
            ..Default::default()
        },
        ports: vec![],
        update_config: UpdateConfig {
            monitor_ms: 1_000,
            ..UpdateConfig::default()
        },
        rollback_config: UpdateConfig {
            monitor_ms: 1_000,
            ..UpdateConfig::default()
        },
        endpoint_mode: Default::default(),
    }
}

fn ready_cluster(managers: usize, workers: usize) -> Result<Cluster> {
    let cluster = Cluster::start(managers, workers)?;
    let total = managers + workers;
    cluster.wait_for_nodes("m1", "every node ready", SETTLE, |nodes| {
        nodes.len() == total && nodes.iter().all(|n| n["status"]["state"] == "ready")
    })?;
    Ok(cluster)
}

fn inspect(daemon: &Daemon, service: &str) -> Result<ServiceView> {
    match daemon.control(&ControlRequest::ServiceInspect {
        service: service.to_string(),
    })? {
        ControlReply::Service(view) => Ok(view),
        other => bail!("unexpected reply {other:?}"),
    }
}

fn reply_view(reply: ControlReply) -> Result<ServiceView> {
    match reply {
        ControlReply::Service(view) => Ok(view),
        other => bail!("unexpected reply {other:?}"),
    }
}

/// Creates `spec` and waits until all its tasks run.
fn create(daemon: &Daemon, spec: ServiceSpec) -> Result<()> {
    let name = spec.name.clone();
    let ServiceMode::Replicated { replicas } = spec.mode else {
        bail!("replicated services only");
    };
    daemon.control(&ControlRequest::ServiceCreate { spec })?;
    wait_for(
        &format!("{replicas} running tasks of {name}"),
        SETTLE,
        || Ok((running(&daemon.tasks(&name)?).len() as u64 == replicas).then_some(())),
    )
}

/// Sends `ServiceUpdate` with the service's spec as `edit` changes it.
fn update(
    daemon: &Daemon,
    service: &str,
    edit: impl FnOnce(&mut ServiceSpec),
) -> Result<ServiceView> {
    let mut spec = inspect(daemon, service)?.service.spec;
    edit(&mut spec);
    reply_view(daemon.control(&ControlRequest::ServiceUpdate {
        service: service.to_string(),
        expected_version: None,
        spec,
    })?)
}

/// The release a task runs: its sleep's argument.
fn release(task: &TaskView) -> &str {
    task.task.spec.args.first().map_or("", String::as_str)
}

/// The running tasks of `service`, by release.
fn running_by_release(tasks: &[TaskView]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for task in running(tasks) {
        *counts.entry(release(task).to_string()).or_default() += 1;
    }
    counts
}

/// Waits until the update of `service` is in `state`, calling `observe` with every task list
/// sampled meanwhile, and with the update states seen. Returns the service then.
fn wait_for_update(
    daemon: &Daemon,
    service: &str,
    state: UpdateState,
    timeout: Duration,
    mut observe: impl FnMut(&[TaskView]),
) -> Result<(ServiceView, Vec<UpdateState>)> {
    let mut seen: Vec<UpdateState> = Vec::new();
    let view = wait_for(
        &format!("the update of {service} to be {state}"),
        timeout,
        || {
            let tasks = daemon.tasks(service)?;
            observe(&tasks);
            let view = inspect(daemon, service)?;
            let Some(status) = &view.service.update_status else {
                return Ok(None);
            };
            if seen.last() != Some(&status.state) {
                seen.push(status.state);
            }
            Ok((status.state == state).then_some(view))
        },
    )?;
    Ok((view, seen))
}

/// Tasks of `release` ever created per slot (the history keeps the last five per slot).
fn created_per_slot(tasks: &[TaskView], of_release: &str) -> BTreeMap<u64, usize> {
    let mut per_slot = BTreeMap::new();
    for task in tasks.iter().filter(|t| release(t) == of_release) {
        *per_slot.entry(task.task.slot.unwrap_or(0)).or_default() += 1;
    }
    per_slot
}

fn one_per_slot(slots: u64) -> BTreeMap<u64, usize> {
    (1..=slots).map(|slot| (slot, 1)).collect()
}

#[test]
fn stop_first_takes_at_most_parallelism_tasks_down_and_completes() -> Result<()> {
    let cluster = ready_cluster(1, 1)?;
    let m1 = cluster.node("m1");
    create(m1, spec("web", 4, OLD))?;

    let started = update(m1, "web", |spec| spec.task.args = vec![NEW.to_string()])?;
    let status = started.service.update_status.expect("the update started");
    assert_eq!(status.state, UpdateState::Updating);
    assert_eq!((status.updated, status.failures), (0, 0));

    // Each slot is down from its old task's shutdown until the replacement runs: a window
    // the samples may or may not catch, but never two at once.
    let (view, seen) = wait_for_update(m1, "web", UpdateState::Completed, UPDATE, |tasks| {
        let down = 4usize.saturating_sub(running(tasks).len());
        assert!(down <= 1, "{down} tasks down at once: {tasks:#?}");
    })?;
    assert_eq!(seen, [UpdateState::Updating, UpdateState::Completed]);
    let status = view.service.update_status.expect("a status");
    assert_eq!((status.updated, status.failures), (4, 0));
    assert_eq!(status.message, "update completed");
    assert!(status.completed_at >= Some(status.started_at));
    let tasks = m1.tasks("web")?;
    assert_eq!(
        running_by_release(&tasks),
        BTreeMap::from([(NEW.to_string(), 4)])
    );
    assert_eq!(created_per_slot(&tasks, NEW), one_per_slot(4));
    Ok(())
}

#[test]
fn start_first_keeps_the_desired_count_running() -> Result<()> {
    let cluster = ready_cluster(1, 1)?;
    let m1 = cluster.node("m1");
    let mut web = spec("web", 4, OLD);
    web.update_config.order = UpdateOrder::StartFirst;
    create(m1, web)?;

    update(m1, "web", |spec| spec.task.args = vec![NEW.to_string()])?;
    let mut fewest = usize::MAX;
    wait_for_update(m1, "web", UpdateState::Completed, UPDATE, |tasks| {
        let up = running(tasks).len();
        assert!(up >= 4, "only {up} tasks running: {tasks:#?}");
        fewest = fewest.min(up);
    })?;
    assert_eq!(fewest, 4);
    let tasks = m1.tasks("web")?;
    assert_eq!(
        running_by_release(&tasks),
        BTreeMap::from([(NEW.to_string(), 4)])
    );
    Ok(())
}

#[test]
fn a_failing_release_pauses_or_rolls_back_as_the_failure_action_says() -> Result<()> {
    let cluster = ready_cluster(1, 1)?;
    let m1 = cluster.node("m1");
    let to_false = |spec: &mut ServiceSpec| {
        spec.task.image = "false".to_string();
        spec.task.args.clear();
    };

    // Pause (the default): the first failure stops the update, naming the task.
    create(m1, spec("web", 4, OLD))?;
    update(m1, "web", to_false)?;
    let (view, _) = wait_for_update(m1, "web", UpdateState::Paused, UPDATE, |_| {})?;
    let status = view.service.update_status.expect("a status");
    assert_eq!(
        status.message,
        "update paused: task web.1 failed: exited with code 1"
    );
    assert_eq!(status.failures, 1);
    // Nothing else was touched: the other three slots still run the old release.
    let tasks = m1.tasks("web")?;
    assert_eq!(
        running_by_release(&tasks),
        BTreeMap::from([(OLD.to_string(), 3)])
    );
    let touched: BTreeSet<u64> = tasks
        .iter()
        .filter(|t| t.task.spec.image == "false")
        .filter_map(|t| t.task.slot)
        .collect();
    assert_eq!(touched, BTreeSet::from([1]));

    // Rollback: back to the previous spec, with the rollback config, to the end.
    let mut api = spec("api", 4, OLD);
    api.update_config.failure_action = FailureAction::Rollback;
    create(m1, api)?;
    update(m1, "api", to_false)?;
    let (view, seen) = wait_for_update(m1, "api", UpdateState::RollbackCompleted, UPDATE, |_| {})?;
    assert!(seen.contains(&UpdateState::RollbackStarted), "{seen:?}");
    assert_eq!(view.service.spec.task.image, "sleep");
    assert_eq!(
        view.service.previous_spec.map(|s| s.task.image),
        Some("false".to_string())
    );
    let status = view.service.update_status.expect("a status");
    assert_eq!(status.message, "rollback completed");
    let tasks = m1.tasks("api")?;
    assert_eq!(
        running_by_release(&tasks),
        BTreeMap::from([(OLD.to_string(), 4)])
    );
    assert!(
        tasks
            .iter()
            .filter(|t| t.task.spec.image == "false")
            .count()
            <= 2,
        "the failing release went further than the slot that failed: {tasks:#?}"
    );
    Ok(())
}

#[test]
fn a_checkpoint_pauses_the_rollout_until_it_is_continued() -> Result<()> {
    let cluster = ready_cluster(1, 1)?;
    let m1 = cluster.node("m1");
    let mut web = spec("web", 4, OLD);
    web.update_config.pause_after = Some(Checkpoint::Tasks(1));
    create(m1, web)?;

    let started = update(m1, "web", |spec| spec.task.args = vec![NEW.to_string()])?;
    assert_eq!(
        started.service.update_status.and_then(|s| s.pause_at),
        Some(1)
    );
    let (view, _) = wait_for_update(m1, "web", UpdateState::Paused, UPDATE, |_| {})?;
    let status = view.service.update_status.expect("a status");
    assert_eq!(status.updated, 1);
    assert_eq!(
        status.message,
        "paused at the checkpoint: 1 of 4 tasks updated"
    );
    let tasks = m1.tasks("web")?;
    assert_eq!(
        running_by_release(&tasks),
        BTreeMap::from([(NEW.to_string(), 1), (OLD.to_string(), 3)])
    );

    let continued = reply_view(m1.control(&ControlRequest::ServiceUpdateContinue {
        service: "web".to_string(),
        pause_after: None,
    })?)?;
    let status = continued.service.update_status.expect("a status");
    assert_eq!(
        (status.state, status.pause_at),
        (UpdateState::Updating, None)
    );
    let (view, _) = wait_for_update(m1, "web", UpdateState::Completed, UPDATE, |_| {})?;
    assert_eq!(view.service.update_status.map(|s| s.updated), Some(4));
    let tasks = m1.tasks("web")?;
    assert_eq!(
        running_by_release(&tasks),
        BTreeMap::from([(NEW.to_string(), 4)])
    );
    assert_eq!(created_per_slot(&tasks, NEW), one_per_slot(4));

    // And back again, by request: the previous spec, with its rollback config.
    let rolled = reply_view(m1.control(&ControlRequest::ServiceRollback {
        service: "web".to_string(),
        expected_version: None,
    })?)?;
    let status = rolled.service.update_status.expect("a status");
    assert_eq!(status.state, UpdateState::RollbackStarted);
    assert_eq!(status.message, "manually requested rollback");
    wait_for_update(m1, "web", UpdateState::RollbackCompleted, UPDATE, |_| {})?;
    let tasks = m1.tasks("web")?;
    assert_eq!(
        running_by_release(&tasks),
        BTreeMap::from([(OLD.to_string(), 4)])
    );
    Ok(())
}

#[test]
fn a_new_leader_finishes_the_update_and_updates_no_slot_twice() -> Result<()> {
    let mut cluster = ready_cluster(3, 1)?;
    let mut web = spec("web", 4, OLD);
    // On the worker only: the leader's death must not take tasks with it.
    web.task.constraints = vec!["node.role==worker".to_string()];
    create(cluster.node("m1"), web)?;

    let leader = cluster.leader("m1")?;
    update(cluster.node(&leader), "web", |spec| {
        spec.task.args = vec![NEW.to_string()];
    })?;
    // Killed with the update under way: some slots done, others not yet.
    wait_for("a first task updated", UPDATE, || {
        let status = inspect(cluster.node(&leader), "web")?.service.update_status;
        Ok(status.filter(|s| s.updated >= 1).map(|_| ()))
    })?;
    cluster.node_mut(&leader).kill9();
    let survivor = if leader == "m1" { "m2" } else { "m1" };
    let (view, _) = wait_for_update(
        cluster.node(survivor),
        "web",
        UpdateState::Completed,
        UPDATE,
        |_| {},
    )?;
    assert_ne!(cluster.leader(survivor)?, leader);
    assert_eq!(view.service.update_status.map(|s| s.updated), Some(4));
    let tasks = cluster.node(survivor).tasks("web")?;
    assert_eq!(
        running_by_release(&tasks),
        BTreeMap::from([(NEW.to_string(), 4)])
    );
    assert_eq!(
        created_per_slot(&tasks, NEW),
        one_per_slot(4),
        "a slot was updated twice, or skipped: {tasks:#?}"
    );
    Ok(())
}

#[test]
fn bad_update_requests_get_clear_errors_and_change_nothing() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    m1.control(&ControlRequest::ServiceCreate {
        spec: spec("web", 0, OLD),
    })?;

    let err = m1
        .control(&ControlRequest::ServiceRollback {
            service: "web".to_string(),
            expected_version: None,
        })
        .expect_err("nothing to roll back to");
    assert!(
        matches!(err, ControlError::FailedPrecondition(_)),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "service web has no previous spec to roll back to"
    );

    let err = m1
        .control(&ControlRequest::ServiceUpdateContinue {
            service: "web".to_string(),
            pause_after: None,
        })
        .expect_err("nothing paused");
    assert!(
        matches!(err, ControlError::FailedPrecondition(_)),
        "{err:?}"
    );
    assert!(
        err.to_string()
            .starts_with("service web has no paused update to continue"),
        "{err}"
    );

    let mut bad = inspect(m1, "web")?.service.spec;
    bad.update_config.max_failure_ratio_permille = 1_500;
    let err = m1
        .control(&ControlRequest::ServiceUpdate {
            service: "web".to_string(),
            expected_version: None,
            spec: bad,
        })
        .expect_err("ratio above 1");
    assert!(matches!(err, ControlError::InvalidArgument(_)), "{err:?}");
    assert_eq!(
        err.to_string(),
        "update_config.max_failure_ratio: 1.5 is outside 0-1"
    );
    assert_eq!(inspect(m1, "web")?.service.previous_spec, None);

    // An update (of no task: no replicas) completes, and then there is nothing to continue.
    update(m1, "web", |spec| spec.task.args = vec![NEW.to_string()])?;
    wait_for_update(m1, "web", UpdateState::Completed, SETTLE, |_| {})?;
    let err = m1
        .control(&ControlRequest::ServiceUpdateContinue {
            service: "web".to_string(),
            pause_after: None,
        })
        .expect_err("nothing paused");
    assert_eq!(
        err.to_string(),
        "service web has no paused update to continue (its update is completed)"
    );
    Ok(())
}
