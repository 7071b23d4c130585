//! End-to-end tests of orchestration on real daemons, through the control API: services get
//! their tasks created and placed on nodes, scale, wait with a reason, and go away whole.
//! (Workers do not run tasks yet: these tests stop at placement.)

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{bail, Result};
use essaim_api::control::TaskView;
use essaim_api::{ControlError, ControlReply, ControlRequest};
use essaim_core::model::{ServiceMode, ServiceSpec, TaskSpec, TaskState};
use essaim_tests::{row, wait_for, Cluster, Daemon};

const SETTLE: Duration = Duration::from_secs(20);

fn spec(name: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        name: name.to_string(),
        labels: Default::default(),
        mode: ServiceMode::Replicated { replicas },
        task: TaskSpec {
            image: "sleep".to_string(),
            args: vec!["3600".to_string()],
            ..Default::default()
        },
        ports: vec![],
    }
}

fn tasks(manager: &Daemon, service: &str) -> Result<Vec<TaskView>> {
    match manager.control(&ControlRequest::TaskList {
        service: Some(service.to_string()),
        node: None,
    })? {
        ControlReply::Tasks(tasks) => Ok(tasks),
        other => bail!("unexpected reply {other:?}"),
    }
}

fn live(tasks: &[TaskView]) -> Vec<&TaskView> {
    tasks
        .iter()
        .filter(|t| t.task.desired_state == TaskState::Running)
        .collect()
}

fn ready_cluster() -> Result<Cluster> {
    let cluster = Cluster::start(1, 2)?;
    cluster.wait_for_nodes("m1", "three ready nodes", SETTLE, |nodes| {
        nodes.len() == 3 && nodes.iter().all(|n| n["status"]["state"] == "ready")
    })?;
    Ok(cluster)
}

#[test]
fn a_service_gets_its_tasks_placed_evenly_and_scales() -> Result<()> {
    let cluster = ready_cluster()?;
    let m1 = cluster.node("m1");
    m1.control(&ControlRequest::ServiceCreate {
        spec: spec("web", 6),
    })?;
    let placed = wait_for("6 tasks assigned", SETTLE, || {
        let tasks = tasks(m1, "web")?;
        let assigned = live(&tasks)
            .iter()
            .filter(|t| t.task.status.state == TaskState::Assigned)
            .count();
        Ok((assigned == 6).then_some(tasks))
    })?;
    let mut per_node: BTreeMap<String, usize> = BTreeMap::new();
    for task in live(&placed) {
        *per_node
            .entry(task.node_hostname.clone().unwrap_or_default())
            .or_default() += 1;
    }
    assert_eq!(
        per_node.values().copied().collect::<Vec<_>>(),
        [2, 2, 2],
        "{per_node:?}"
    );
    let mut names: Vec<String> = live(&placed).iter().map(|t| t.name.clone()).collect();
    names.sort();
    assert_eq!(
        names,
        ["web.1", "web.2", "web.3", "web.4", "web.5", "web.6"]
    );

    m1.control(&ControlRequest::ServiceScale {
        service: "web".to_string(),
        replicas: 2,
    })?;
    wait_for("2 live tasks", SETTLE, || {
        Ok((live(&tasks(m1, "web")?).len() == 2).then_some(()))
    })?;
    let ControlReply::Service(view) = m1.control(&ControlRequest::ServiceInspect {
        service: "web".to_string(),
    })?
    else {
        bail!("no service view");
    };
    assert_eq!(view.desired, 2);

    m1.control(&ControlRequest::ServiceRemove {
        service: "web".to_string(),
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
fn a_task_that_cannot_be_placed_waits_with_a_reason() -> Result<()> {
    let cluster = ready_cluster()?;
    let m1 = cluster.node("m1");
    let mut constrained = spec("db", 1);
    constrained.task.constraints = vec!["node.labels.disk==ssd".to_string()];
    m1.control(&ControlRequest::ServiceCreate { spec: constrained })?;
    let reason = wait_for("a reason to wait", SETTLE, || {
        let tasks = tasks(m1, "db")?;
        Ok(tasks
            .first()
            .filter(|t| t.task.status.message.contains("no suitable node"))
            .map(|t| t.task.status.message.clone()))
    })?;
    assert!(
        reason.contains("3 fail constraint node.labels.disk==ssd"),
        "{reason}"
    );

    // Label a node: the task goes there.
    m1.ok(&["node", "update", "--label-add", "disk=ssd", "w2"])?;
    let placed = wait_for("the task placed", SETTLE, || {
        let tasks = tasks(m1, "db")?;
        Ok(tasks
            .into_iter()
            .find(|t| t.task.status.state == TaskState::Assigned))
    })?;
    assert_eq!(placed.node_hostname.as_deref(), Some("w2"));
    Ok(())
}

#[test]
fn bad_specs_are_refused_whole_naming_the_flag() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    let mut bad = spec("web", 1);
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
        spec: spec("web", 1),
    })?;
    let dup = m1.control(&ControlRequest::ServiceCreate {
        spec: spec("web", 1),
    });
    assert!(matches!(dup, Err(ControlError::Conflict(_))), "{dup:?}");
    // Nodes still fine.
    assert!(row(&cluster.node_list("m1")?, "m1").is_some());
    Ok(())
}
