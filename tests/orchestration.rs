//! End-to-end tests of orchestration on real daemons with the process runtime: services get
//! their tasks placed and run as real processes, keep their replica count through scaling,
//! failures, lost nodes, drains and leader changes, and go away whole.
//!
//! Each task of these tests writes its PID to a file named after its task ID, so a test sees
//! which processes really run, not only what the managers believe.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Result};
use essaim_api::control::{TaskUsage, TaskView};
use essaim_api::{ControlError, ControlReply, ControlRequest};
use essaim_core::model::{RestartCondition, ServiceMode, ServiceSpec, TaskSpec, TaskState};
use essaim_tests::{row, running, wait_for, Cluster, Daemon};

const SETTLE: Duration = Duration::from_secs(20);

/// Where the tasks of a test leave their PIDs.
struct Probe {
    dir: PathBuf,
}

impl Probe {
    fn new(cluster: &Cluster) -> Result<Probe> {
        let dir = cluster.root().join("probe");
        std::fs::create_dir_all(&dir)?;
        Ok(Probe { dir })
    }

    /// A service whose tasks record their PID, then sleep.
    fn spec(&self, name: &str, replicas: u64) -> ServiceSpec {
        ServiceSpec {
            name: name.to_string(),
            labels: Default::default(),
            mode: ServiceMode::Replicated { replicas },
            task: TaskSpec {
                image: "sh".to_string(),
                args: vec![
                    "-c".to_string(),
                    format!(
                        "echo $$ > {}/$ESSAIM_TASK_ID; exec sleep 3600",
                        self.dir.display()
                    ),
                ],
                stop_grace_period_ms: 1_000,
                ..Default::default()
            },
            ports: vec![],
            update_config: Default::default(),
            rollback_config: Default::default(),
            endpoint_mode: Default::default(),
        }
    }

    /// The IDs of the tasks whose process is alive now.
    fn alive(&self) -> Result<BTreeSet<String>> {
        let mut alive = BTreeSet::new();
        for entry in std::fs::read_dir(&self.dir)? {
            let entry = entry?;
            let pid = std::fs::read_to_string(entry.path())?;
            if process_alive(pid.trim()) {
                alive.insert(entry.file_name().to_string_lossy().into_owned());
            }
        }
        Ok(alive)
    }
}

/// True when the process runs (a zombie, dead but not yet reaped, does not count).
fn process_alive(pid: &str) -> bool {
    std::fs::read_to_string(Path::new("/proc").join(pid).join("stat"))
        .ok()
        .and_then(|stat| {
            // The state follows the command name, which is in parentheses.
            let after = stat.rsplit_once(')')?.1;
            after.split_whitespace().next().map(|s| s != "Z")
        })
        .unwrap_or(false)
}

fn ids(tasks: &[&TaskView]) -> BTreeSet<String> {
    tasks.iter().map(|t| t.task.id.clone()).collect()
}

fn per_node(tasks: &[&TaskView]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for task in tasks {
        *counts
            .entry(task.node_hostname.clone().unwrap_or_default())
            .or_default() += 1;
    }
    counts
}

/// Waits until exactly `count` tasks of `service` run, in distinct slots (or on distinct
/// nodes, for a global service), each as a live
/// process, and no other process of the test is alive. Returns the running tasks.
fn converged(
    manager: &Daemon,
    probe: &Probe,
    service: &str,
    count: usize,
) -> Result<Vec<TaskView>> {
    wait_for(
        &format!("{count} running tasks of {service}, and as many live processes"),
        SETTLE,
        || {
            let tasks = manager.tasks(service)?;
            let running = running(&tasks);
            // Distinct slots, or distinct nodes for a global service.
            let slots: BTreeSet<(Option<u64>, Option<String>)> = running
                .iter()
                .map(|t| match t.task.slot {
                    Some(slot) => (Some(slot), None),
                    None => (None, t.task.node_id.clone()),
                })
                .collect();
            let alive = probe.alive()?;
            let ok = running.len() == count && slots.len() == count && alive == ids(&running);
            Ok(ok.then(|| running.into_iter().cloned().collect()))
        },
    )
}

fn ready_cluster(managers: usize, workers: usize) -> Result<Cluster> {
    let cluster = Cluster::start(managers, workers)?;
    let total = managers + workers;
    cluster.wait_for_nodes("m1", "every node ready", SETTLE, |nodes| {
        nodes.len() == total && nodes.iter().all(|n| n["status"]["state"] == "ready")
    })?;
    Ok(cluster)
}

/// One manager and two workers running `web`, six tasks of it.
fn six_web_tasks_on_three_nodes() -> Result<(Cluster, Probe, Vec<TaskView>)> {
    let cluster = ready_cluster(1, 2)?;
    let probe = Probe::new(&cluster)?;
    let m1 = cluster.node("m1");
    m1.control(&ControlRequest::ServiceCreate {
        spec: probe.spec("web", 6),
    })?;
    let running = converged(m1, &probe, "web", 6)?;
    Ok((cluster, probe, running))
}

fn scale(manager: &Daemon, service: &str, replicas: u64) -> Result<()> {
    manager.control(&ControlRequest::ServiceScale {
        service: service.to_string(),
        replicas,
    })?;
    Ok(())
}

#[test]
fn tasks_run_as_processes_spread_evenly_and_follow_scaling() -> Result<()> {
    let (cluster, probe, running) = six_web_tasks_on_three_nodes()?;
    let m1 = cluster.node("m1");
    let refs: Vec<&TaskView> = running.iter().collect();
    assert_eq!(
        per_node(&refs).values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{:?}",
        per_node(&refs)
    );
    let mut names: Vec<String> = running.iter().map(|t| t.name.clone()).collect();
    names.sort();
    assert_eq!(
        names,
        ["web.1", "web.2", "web.3", "web.4", "web.5", "web.6"]
    );

    scale(m1, "web", 2)?;
    let running = converged(m1, &probe, "web", 2)?;
    let mut slots: Vec<u64> = running.iter().filter_map(|t| t.task.slot).collect();
    slots.sort();
    assert_eq!(slots, [1, 2], "scaling down keeps the lowest slots");
    let ControlReply::Service(view) = m1.control(&ControlRequest::ServiceInspect {
        service: "web".to_string(),
    })?
    else {
        bail!("no service view");
    };
    assert_eq!((view.running, view.desired), (2, 2));

    // Removing the service stops every process it had.
    m1.control(&ControlRequest::ServiceRemove {
        service: "web".to_string(),
    })?;
    wait_for("no process left", SETTLE, || {
        Ok(probe.alive()?.is_empty().then_some(()))
    })?;
    assert!(matches!(
        m1.control(&ControlRequest::ServiceInspect {
            service: "web".to_string()
        }),
        Err(ControlError::NotFound(_))
    ));
    Ok(())
}

#[test]
fn a_killed_worker_s_tasks_run_again_elsewhere() -> Result<()> {
    let (mut cluster, probe, _) = six_web_tasks_on_three_nodes()?;

    cluster.node_mut("w1").kill9();
    let running = converged(cluster.node("m1"), &probe, "web", 6)?;
    let refs: Vec<&TaskView> = running.iter().collect();
    assert!(
        !per_node(&refs).contains_key("w1"),
        "tasks still counted on the dead node: {:?}",
        per_node(&refs)
    );
    let nodes = cluster.node_list("m1")?;
    assert_eq!(
        row(&nodes, "w1").map(|n| n["status"]["state"].clone()),
        Some("down".into())
    );
    Ok(())
}

#[test]
fn a_node_that_comes_back_stops_its_stale_tasks() -> Result<()> {
    let (cluster, probe, _) = six_web_tasks_on_three_nodes()?;
    let m1 = cluster.node("m1");
    let before: Vec<TaskView> = m1.tasks("web")?;
    let on_w1: BTreeSet<String> = running(&before)
        .iter()
        .filter(|t| t.node_hostname.as_deref() == Some("w1"))
        .map(|t| t.task.id.clone())
        .collect();
    assert!(!on_w1.is_empty());

    // Cut off, w1 is marked down and its tasks start elsewhere, while its own processes
    // still run.
    cluster.node("w1").freeze();
    wait_for("replacements for w1's tasks", SETTLE, || {
        let tasks = m1.tasks("web")?;
        let running = running(&tasks);
        let elsewhere = running
            .iter()
            .filter(|t| t.node_hostname.as_deref() != Some("w1"))
            .count();
        Ok((elsewhere == 6).then_some(()))
    })?;
    assert!(on_w1.is_subset(&probe.alive()?), "w1's processes ran on");

    // Back, it stops them instead of running them twice.
    cluster.node("w1").thaw();
    converged(m1, &probe, "web", 6)?;
    let alive = probe.alive()?;
    assert!(
        alive.is_disjoint(&on_w1),
        "stale tasks still run: {alive:?}"
    );
    Ok(())
}

#[test]
fn drain_moves_tasks_away_and_pause_stops_new_placements() -> Result<()> {
    let (cluster, probe, _) = six_web_tasks_on_three_nodes()?;
    let m1 = cluster.node("m1");

    m1.ok(&["node", "update", "--availability", "drain", "w1"])?;
    let running = converged(m1, &probe, "web", 6)?;
    let refs: Vec<&TaskView> = running.iter().collect();
    assert_eq!(per_node(&refs).get("w1"), None, "{:?}", per_node(&refs));

    m1.ok(&["node", "update", "--availability", "pause", "w2"])?;
    let on_w2_before = per_node(&refs).get("w2").copied().unwrap_or(0);
    scale(m1, "web", 9)?;
    let running = converged(m1, &probe, "web", 9)?;
    let refs: Vec<&TaskView> = running.iter().collect();
    let counts = per_node(&refs);
    assert_eq!(counts.get("w1"), None, "{counts:?}");
    assert_eq!(
        counts.get("w2").copied().unwrap_or(0),
        on_w2_before,
        "a paused node keeps its tasks and gets no new ones: {counts:?}"
    );

    // Active again, w1 takes new tasks.
    m1.ok(&["node", "update", "--availability", "active", "w1"])?;
    scale(m1, "web", 12)?;
    let running = converged(m1, &probe, "web", 12)?;
    let refs: Vec<&TaskView> = running.iter().collect();
    assert!(per_node(&refs).get("w1").copied().unwrap_or(0) > 0);
    Ok(())
}

#[test]
fn failing_tasks_restart_after_the_delay_up_to_the_max_attempts() -> Result<()> {
    let cluster = ready_cluster(1, 0)?;
    let m1 = cluster.node("m1");
    let mut spec = Probe::new(&cluster)?.spec("crash", 1);
    spec.task.args = vec!["-c".to_string(), "exit 3".to_string()];
    spec.task.restart_policy.delay_ms = 300;
    spec.task.restart_policy.max_attempts = 2;
    m1.control(&ControlRequest::ServiceCreate { spec })?;

    let failed = wait_for("three failed tasks", SETTLE, || {
        let tasks = m1.tasks("crash")?;
        let failed: Vec<TaskView> = tasks
            .into_iter()
            .filter(|t| t.task.status.state == TaskState::Failed)
            .collect();
        Ok((failed.len() == 3).then_some(failed))
    })?;
    for task in &failed {
        assert_eq!(task.task.status.exit_code, Some(3));
        assert_eq!(task.task.slot, Some(1));
    }
    let mut created: Vec<u64> = failed.iter().map(|t| t.task.created_at.0).collect();
    created.sort();
    for pair in created.windows(2) {
        assert!(
            pair[1] - pair[0] >= 300,
            "restarted sooner than the delay: {created:?}"
        );
    }
    // The first task and two restarts: no more, however long we look. Twice the restart
    // delay is when a fourth would have come.
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(m1.tasks("crash")?.len(), 3);

    // on-failure does not restart a task that succeeded.
    let mut spec = Probe::new(&cluster)?.spec("once", 1);
    spec.task.args = vec!["-c".to_string(), "exit 0".to_string()];
    spec.task.restart_policy.condition = RestartCondition::OnFailure;
    spec.task.restart_policy.delay_ms = 100;
    m1.control(&ControlRequest::ServiceCreate { spec })?;
    wait_for("the task complete", SETTLE, || {
        let tasks = m1.tasks("once")?;
        Ok(tasks
            .iter()
            .any(|t| t.task.status.state == TaskState::Complete)
            .then_some(()))
    })?;
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(m1.tasks("once")?.len(), 1);
    Ok(())
}

#[test]
fn task_history_is_bounded_per_slot() -> Result<()> {
    let cluster = ready_cluster(1, 0)?;
    let m1 = cluster.node("m1");
    m1.ok(&["swarm", "update", "--task-history-limit", "2"])?;
    let mut spec = Probe::new(&cluster)?.spec("crash", 1);
    spec.task.args = vec!["-c".to_string(), "exit 1".to_string()];
    spec.task.restart_policy.delay_ms = 50;
    m1.control(&ControlRequest::ServiceCreate { spec })?;
    let mut seen = BTreeSet::new();
    wait_for("six tasks come and go", SETTLE, || {
        let tasks = m1.tasks("crash")?;
        let dead = tasks
            .iter()
            .filter(|t| {
                t.task.desired_state != TaskState::Running && t.task.status.state.is_terminal()
            })
            .count();
        if dead > 2 {
            bail!("{dead} dead tasks kept, more than the limit of 2");
        }
        seen.extend(tasks.iter().map(|t| t.task.id.clone()));
        Ok((seen.len() >= 6).then_some(()))
    })?;
    Ok(())
}

#[test]
fn a_global_service_follows_nodes_as_they_join_and_drain() -> Result<()> {
    let mut cluster = ready_cluster(1, 1)?;
    let probe = Probe::new(&cluster)?;
    let mut spec = probe.spec("agent", 0);
    spec.mode = ServiceMode::Global;
    cluster
        .node("m1")
        .control(&ControlRequest::ServiceCreate { spec })?;
    let on_nodes = |cluster: &Cluster, count: usize| -> Result<BTreeMap<String, usize>> {
        let running = converged(cluster.node("m1"), &probe, "agent", count)?;
        let refs: Vec<&TaskView> = running.iter().collect();
        Ok(per_node(&refs))
    };
    assert_eq!(on_nodes(&cluster, 2)?.len(), 2);

    cluster.add_worker("w2")?;
    let counts = on_nodes(&cluster, 3)?;
    assert_eq!(counts.get("w2"), Some(&1), "{counts:?}");

    cluster
        .node("m1")
        .ok(&["node", "update", "--availability", "drain", "w1"])?;
    let counts = on_nodes(&cluster, 2)?;
    assert_eq!(counts.get("w1"), None, "{counts:?}");
    Ok(())
}

#[test]
fn constraints_spread_and_max_per_node_shape_placement() -> Result<()> {
    let cluster = ready_cluster(1, 2)?;
    let probe = Probe::new(&cluster)?;
    let m1 = cluster.node("m1");
    m1.ok(&["node", "update", "--label-add", "zone=a", "m1"])?;
    m1.ok(&["node", "update", "--label-add", "zone=a", "w1"])?;
    m1.ok(&["node", "update", "--label-add", "zone=b", "w2"])?;

    // Spread over zones: half the tasks in b, though b has one node of three.
    let mut spread = probe.spec("spread", 4);
    spread.task.spread = vec!["node.labels.zone".to_string()];
    m1.control(&ControlRequest::ServiceCreate { spec: spread })?;
    let spread_tasks = converged(m1, &probe, "spread", 4)?;
    let refs: Vec<&TaskView> = spread_tasks.iter().collect();
    assert_eq!(per_node(&refs).get("w2"), Some(&2), "{:?}", per_node(&refs));
    m1.control(&ControlRequest::ServiceRemove {
        service: "spread".to_string(),
    })?;

    // A constraint keeps tasks in zone a; one per node leaves the third waiting, saying why.
    let mut limited = probe.spec("limited", 3);
    limited.task.constraints = vec!["node.labels.zone==a".to_string()];
    limited.task.max_replicas_per_node = 1;
    m1.control(&ControlRequest::ServiceCreate { spec: limited })?;
    let waiting = wait_for("two running, one waiting with a reason", SETTLE, || {
        let tasks = m1.tasks("limited")?;
        let pending: Vec<&TaskView> = tasks
            .iter()
            .filter(|t| t.task.status.state == TaskState::Pending)
            .filter(|t| t.task.status.message.contains("no suitable node"))
            .collect();
        let ok = running(&tasks).len() == 2 && pending.len() == 1;
        Ok(ok.then(|| pending[0].task.status.message.clone()))
    })?;
    assert!(
        waiting.contains("1 fails constraint node.labels.zone==a"),
        "{waiting}"
    );
    assert!(
        waiting.contains("2 at max replicas per node (1)"),
        "{waiting}"
    );
    let tasks = m1.tasks("limited")?;
    let refs = running(&tasks);
    assert!(!per_node(&refs).contains_key("w2"), "{:?}", per_node(&refs));
    Ok(())
}

#[test]
fn a_task_that_cannot_be_placed_waits_with_a_reason() -> Result<()> {
    let cluster = ready_cluster(1, 2)?;
    let probe = Probe::new(&cluster)?;
    let m1 = cluster.node("m1");
    let mut constrained = probe.spec("db", 1);
    constrained.task.constraints = vec!["node.labels.disk==ssd".to_string()];
    m1.control(&ControlRequest::ServiceCreate { spec: constrained })?;
    let reason = wait_for("a reason to wait", SETTLE, || {
        let tasks = m1.tasks("db")?;
        Ok(tasks
            .first()
            .filter(|t| t.task.status.message.contains("no suitable node"))
            .map(|t| t.task.status.message.clone()))
    })?;
    assert!(
        reason.contains("3 fail constraint node.labels.disk==ssd"),
        "{reason}"
    );

    // Label a node: the task goes there and runs.
    m1.ok(&["node", "update", "--label-add", "disk=ssd", "w2"])?;
    let running = converged(m1, &probe, "db", 1)?;
    assert_eq!(running[0].node_hostname.as_deref(), Some("w2"));
    Ok(())
}

#[test]
fn a_program_that_does_not_exist_is_rejected_with_the_reason() -> Result<()> {
    let cluster = ready_cluster(1, 0)?;
    let m1 = cluster.node("m1");
    let mut spec = Probe::new(&cluster)?.spec("ghost", 1);
    spec.task.image = "no-such-program-anywhere".to_string();
    m1.control(&ControlRequest::ServiceCreate { spec })?;
    let message = wait_for("the task rejected", SETTLE, || {
        let tasks = m1.tasks("ghost")?;
        Ok(tasks
            .into_iter()
            .find(|t| t.task.status.state == TaskState::Rejected)
            .map(|t| t.task.status.message))
    })?;
    assert_eq!(
        message,
        "program \"no-such-program-anywhere\" not found in PATH on node m1"
    );
    Ok(())
}

#[test]
fn running_tasks_report_their_cpu_and_memory_with_the_heartbeats() -> Result<()> {
    let cluster = ready_cluster(1, 1)?;
    let m1 = cluster.node("m1");
    // The busy task reports over a worker's session, the sleeping one over the leader's own.
    for (name, role, image, args) in [
        ("busy", "worker", "sh", &["-c", "while :; do :; done"][..]),
        ("idle", "manager", "sleep", &["600"][..]),
    ] {
        let mut spec = Probe::new(&cluster)?.spec(name, 1);
        spec.task.image = image.to_string();
        spec.task.args = args.iter().map(|a| a.to_string()).collect();
        spec.task.constraints = vec![format!("node.role=={role}")];
        m1.control(&ControlRequest::ServiceCreate { spec })?;
    }
    let usage = |service: &str| -> Result<Option<TaskUsage>> {
        let tasks = m1.tasks(service)?;
        Ok(running(&tasks).first().and_then(|t| t.usage))
    };
    let busy = wait_for("the busy task at over 300 millicores", SETTLE, || {
        Ok(usage("busy")?.filter(|u| u.cpu_millicores > 300))
    })?;
    assert!(busy.memory_bytes > 0, "{busy:?}");
    let idle = wait_for("a sample of the sleeping task", SETTLE, || usage("idle"))?;
    assert!(idle.cpu_millicores < 200, "{idle:?}");
    assert!(idle.memory_bytes > 0, "{idle:?}");

    // A task that ends takes its usage with it.
    scale(m1, "busy", 0)?;
    let gone = wait_for("the busy task stopped", SETTLE, || {
        let tasks = m1.tasks("busy")?;
        Ok(tasks
            .iter()
            .all(|t| t.task.status.state.is_terminal())
            .then_some(tasks))
    })?;
    assert!(gone.iter().all(|t| t.usage.is_none()), "{gone:?}");
    Ok(())
}

#[test]
fn a_leader_change_moves_no_task_and_workers_follow_the_new_leader() -> Result<()> {
    let mut cluster = ready_cluster(3, 2)?;
    let probe = Probe::new(&cluster)?;
    let mut spec = probe.spec("web", 4);
    spec.task.constraints = vec!["node.role==worker".to_string()];
    cluster
        .node("m1")
        .control(&ControlRequest::ServiceCreate { spec })?;
    let before = ids(&converged(cluster.node("m1"), &probe, "web", 4)?
        .iter()
        .collect::<Vec<_>>());

    let leader = cluster.leader("m1")?;
    cluster.node_mut(&leader).kill9();
    let survivor = if leader == "m1" { "m2" } else { "m1" };
    wait_for("a new leader", SETTLE, || {
        Ok(cluster.leader(survivor).ok().filter(|l| *l != leader))
    })?;
    // Longer than a node takes to be marked down: had the workers not reached the new leader,
    // their tasks would be moving by now.
    cluster.wait_for_nodes(survivor, "the old leader down", SETTLE, |nodes| {
        row(nodes, &leader).is_some_and(|n| n["status"]["state"] == "down")
    })?;
    let after = ids(&converged(cluster.node(survivor), &probe, "web", 4)?
        .iter()
        .collect::<Vec<_>>());
    assert_eq!(before, after, "tasks moved because of the election");

    // The workers report to the new leader: a new task gets to run.
    scale(cluster.node(survivor), "web", 5)?;
    converged(cluster.node(survivor), &probe, "web", 5)?;
    Ok(())
}

#[test]
fn a_leader_killed_during_a_scale_leaves_exactly_the_replicas_asked_for() -> Result<()> {
    let mut cluster = ready_cluster(3, 1)?;
    let probe = Probe::new(&cluster)?;
    let mut spec = probe.spec("web", 4);
    spec.task.constraints = vec!["node.role==worker".to_string()];
    cluster
        .node("m1")
        .control(&ControlRequest::ServiceCreate { spec })?;
    converged(cluster.node("m1"), &probe, "web", 4)?;

    let leader = cluster.leader("m1")?;
    scale(cluster.node(&leader), "web", 10)?;
    cluster.node_mut(&leader).kill9();
    let survivor = if leader == "m1" { "m2" } else { "m1" };
    converged(cluster.node(survivor), &probe, "web", 10)?;
    Ok(())
}

#[test]
fn bad_specs_are_refused_whole_naming_the_flag() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    let probe = Probe::new(&cluster)?;
    let mut bad = probe.spec("web", 1);
    bad.task.constraints = vec!["node.labels.zone=a".to_string()];
    let err = m1
        .control(&ControlRequest::ServiceCreate { spec: bad })
        .expect_err("bad constraint");
    assert!(matches!(err, ControlError::InvalidArgument(_)));
    assert!(err.to_string().starts_with("--constraint:"), "{err}");
    let ControlReply::Services(services) = m1.control(&ControlRequest::ServiceList)? else {
        bail!("no list");
    };
    assert!(services.is_empty(), "a refused service was created");
    // Names are unique.
    m1.control(&ControlRequest::ServiceCreate {
        spec: probe.spec("web", 1),
    })?;
    let dup = m1.control(&ControlRequest::ServiceCreate {
        spec: probe.spec("web", 1),
    });
    assert!(matches!(dup, Err(ControlError::Conflict(_))), "{dup:?}");
    Ok(())
}

#[test]
fn service_logs_come_from_every_node_and_name_the_missing_ones() -> Result<()> {
    let mut cluster = ready_cluster(1, 1)?;
    let probe = Probe::new(&cluster)?;
    let mut spec = probe.spec("talk", 2);
    spec.task.args = vec![
        "-c".to_string(),
        format!(
            "echo $$ > {}/$ESSAIM_TASK_ID; echo hello from $ESSAIM_TASK_SLOT; exec sleep 3600",
            probe.dir.display()
        ),
    ];
    cluster
        .node("m1")
        .control(&ControlRequest::ServiceCreate { spec })?;
    let running = converged(cluster.node("m1"), &probe, "talk", 2)?;
    let mut expected: Vec<String> = running
        .iter()
        .map(|t| {
            format!(
                "{}@{} | hello from {}",
                t.name,
                t.node_hostname.clone().unwrap_or_default(),
                t.task.slot.unwrap_or_default()
            )
        })
        .collect();
    expected.sort();
    let mut lines: Vec<String> = cluster
        .node("m1")
        .ok(&["service", "logs", "talk"])?
        .lines()
        .map(str::to_string)
        .collect();
    lines.sort();
    assert_eq!(lines, expected);

    // A node that cannot be asked is named, and the command says it is incomplete.
    cluster.node_mut("w1").kill9();
    let output = cluster.node("m1").essaim(&["service", "logs", "talk"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the output of the tasks on node w1 is missing"),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&output.stdout).contains("@m1 | hello from"));
    Ok(())
}
