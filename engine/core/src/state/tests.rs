use std::collections::BTreeMap;

use super::*;
use crate::model::{Availability, ServiceMode, ServiceSpec, TaskSpec, TaskState, TaskStatus};
use crate::testing::{cluster, token};
use crate::time::Timestamp;

fn node(id: &str, hostname: &str) -> Node {
    crate::testing::node(id, hostname)
}

fn service(id: &str, name: &str) -> Service {
    Service {
        id: id.to_string(),
        version: 0,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        spec: ServiceSpec {
            name: name.to_string(),
            labels: BTreeMap::new(),
            mode: ServiceMode::Replicated { replicas: 1 },
            task: TaskSpec {
                image: "sleep".to_string(),
                ..Default::default()
            },
            ports: vec![],
            update_config: Default::default(),
            rollback_config: Default::default(),
            endpoint_mode: Default::default(),
        },
        previous_spec: None,
        update_status: None,
        virtual_ips: Vec::new(),
    }
}

fn task(id: &str, service_id: &str) -> Task {
    Task {
        id: id.to_string(),
        version: 0,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        service_id: service_id.to_string(),
        service_name: "svc".to_string(),
        slot: Some(1),
        node_id: None,
        spec: TaskSpec::default(),
        ports: Vec::new(),
        networks: Vec::new(),
        service_version: 1,
        desired_state: TaskState::Running,
        status: TaskStatus {
            state: TaskState::New,
            timestamp: Timestamp(0),
            message: String::new(),
            error: None,
            exit_code: None,
            ports: Vec::new(),
            address: None,
        },
    }
}

fn status(state: TaskState) -> TaskStatus {
    TaskStatus {
        state,
        timestamp: Timestamp(1),
        message: String::new(),
        error: None,
        exit_code: None,
        ports: Vec::new(),
        address: None,
    }
}

/// Applies one command at `index` and returns its result.
fn apply(state: &mut ClusterState, index: u64, command: Command) -> Result<u64, StateError> {
    let mut events = Vec::new();
    state
        .apply(
            index,
            &Request::one(Timestamp(index * 10), command),
            &mut events,
        )
        .single()
}

#[test]
fn apply_stamps_version_and_time_from_the_entry() {
    let mut state = ClusterState::default();
    assert_eq!(
        apply(
            &mut state,
            3,
            Command::AddNode {
                node: node("n1", "m1")
            }
        ),
        Ok(3)
    );
    let stored = state.node("m1").expect("node added");
    assert_eq!(stored.version, 3);
    assert_eq!(stored.created_at, Timestamp(30));
}

#[test]
fn update_with_a_stale_version_is_refused_and_changes_nothing() {
    let mut state = ClusterState::default();
    apply(
        &mut state,
        1,
        Command::AddNode {
            node: node("n1", "m1"),
        },
    )
    .expect("add");
    let mut spec = state.node("n1").expect("node").spec.clone();
    spec.availability = Availability::Drain;
    let first = Command::UpdateNodeSpec {
        id: "n1".to_string(),
        expected_version: Some(1),
        spec: spec.clone(),
    };
    assert_eq!(apply(&mut state, 2, first.clone()), Ok(2));

    // A second writer that also read version 1 loses.
    spec.availability = Availability::Pause;
    let stale = Command::UpdateNodeSpec {
        id: "n1".to_string(),
        expected_version: Some(1),
        spec,
    };
    let err = apply(&mut state, 3, stale).expect_err("stale version");
    assert!(err.is_retryable());
    assert!(matches!(
        err,
        StateError::VersionConflict {
            expected: 1,
            actual: 2,
            ..
        }
    ));
    assert_eq!(
        state.node("n1").expect("node").spec.availability,
        Availability::Drain
    );
}

#[test]
fn a_batch_applies_each_command_on_its_own() {
    let mut state = ClusterState::default();
    let mut events = Vec::new();
    let request = Request::new(
        Timestamp(5),
        vec![
            Command::AddNode {
                node: node("n1", "a"),
            },
            Command::AddNode {
                node: node("n1", "dup"),
            },
            Command::AddNode {
                node: node("n2", "b"),
            },
        ],
    );
    let response = state.apply(9, &request, &mut events);
    assert_eq!(response.results.len(), 3);
    assert_eq!(response.results[0], Ok(9));
    assert!(matches!(
        response.results[1],
        Err(StateError::AlreadyExists { .. })
    ));
    assert_eq!(response.results[2], Ok(9));
    assert_eq!(state.nodes().count(), 2);
    // Events come in the order of the commands that succeeded.
    let ids: Vec<_> = events
        .iter()
        .map(|e| match &e.change {
            Change::Node(n) => n.id.clone(),
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(ids, ["n1", "n2"]);
}

#[test]
fn a_batch_of_thousands_of_assignments_is_one_entry() {
    let mut state = ClusterState::default();
    apply(
        &mut state,
        1,
        Command::AddNode {
            node: node("n1", "a"),
        },
    )
    .expect("node");
    apply(
        &mut state,
        2,
        Command::CreateService {
            service: service("s1", "web"),
        },
    )
    .expect("svc");
    let creates = (0..5000)
        .map(|i| Command::CreateTask {
            task: task(&format!("t{i}"), "s1"),
        })
        .collect();
    let mut events = Vec::new();
    state.apply(3, &Request::new(Timestamp(3), creates), &mut events);
    let assigns = (0..5000)
        .map(|i| Command::AssignTask {
            id: format!("t{i}"),
            node_id: "n1".to_string(),
        })
        .collect();
    let response = state.apply(4, &Request::new(Timestamp(4), assigns), &mut events);
    assert!(response.results.iter().all(|r| r.is_ok()));
    assert_eq!(state.tasks_on_node("n1").count(), 5000);
    assert_eq!(state.tasks_of_service("s1").count(), 5000);
    assert_eq!(events.len(), 10_000);
}

#[test]
fn task_states_only_move_forward() {
    let mut state = ClusterState::default();
    apply(
        &mut state,
        1,
        Command::CreateService {
            service: service("s1", "web"),
        },
    )
    .expect("svc");
    apply(
        &mut state,
        2,
        Command::CreateTask {
            task: task("t1", "s1"),
        },
    )
    .expect("task");
    let to = |s| Command::UpdateTaskStatus {
        id: "t1".to_string(),
        status: status(s),
    };
    assert!(apply(&mut state, 3, to(TaskState::Running)).is_ok());
    let err = apply(&mut state, 4, to(TaskState::Pending)).expect_err("regression");
    assert!(matches!(err, StateError::StateRegression { .. }));
    assert!(apply(&mut state, 5, to(TaskState::Failed)).is_ok());
    assert_eq!(
        state.task_by_id("t1").expect("task").status.state,
        TaskState::Failed
    );
}

#[test]
fn a_task_needs_its_service_and_its_node() {
    let mut state = ClusterState::default();
    let err = apply(
        &mut state,
        1,
        Command::CreateTask {
            task: task("t1", "nope"),
        },
    );
    assert!(matches!(
        err,
        Err(StateError::NotFound {
            kind: Kind::Service,
            ..
        })
    ));
    apply(
        &mut state,
        2,
        Command::CreateService {
            service: service("s1", "web"),
        },
    )
    .expect("svc");
    apply(
        &mut state,
        3,
        Command::CreateTask {
            task: task("t1", "s1"),
        },
    )
    .expect("task");
    let err = apply(
        &mut state,
        4,
        Command::AssignTask {
            id: "t1".to_string(),
            node_id: "ghost".to_string(),
        },
    );
    assert!(matches!(
        err,
        Err(StateError::NotFound {
            kind: Kind::Node,
            ..
        })
    ));
}

#[test]
fn service_names_are_unique_and_free_again_after_removal() {
    let mut state = ClusterState::default();
    apply(
        &mut state,
        1,
        Command::CreateService {
            service: service("s1", "web"),
        },
    )
    .expect("svc");
    let dup = apply(
        &mut state,
        2,
        Command::CreateService {
            service: service("s2", "web"),
        },
    );
    assert!(matches!(dup, Err(StateError::AlreadyExists { .. })));
    apply(
        &mut state,
        3,
        Command::RemoveService {
            id: "s1".to_string(),
            expected_version: Some(1),
        },
    )
    .expect("rm");
    assert!(apply(
        &mut state,
        4,
        Command::CreateService {
            service: service("s2", "web")
        }
    )
    .is_ok());
    assert_eq!(state.service("web").expect("by name").id, "s2");
}

#[test]
fn lookups_take_names_ids_and_unambiguous_prefixes() {
    let mut state = ClusterState::default();
    apply(
        &mut state,
        1,
        Command::AddNode {
            node: node("abc123", "m1"),
        },
    )
    .expect("n");
    apply(
        &mut state,
        2,
        Command::AddNode {
            node: node("abd456", "m2"),
        },
    )
    .expect("n");
    assert_eq!(state.node("m2").expect("hostname").id, "abd456");
    assert_eq!(state.node("abc").expect("prefix").id, "abc123");
    assert!(matches!(
        state.node("ab"),
        Err(LookupError::Ambiguous { .. })
    ));
    assert!(matches!(
        state.node("zz"),
        Err(LookupError::NotFound { .. })
    ));
    let message = state.node("ab").expect_err("ambiguous").to_string();
    assert!(
        message.contains("m1") && message.contains("m2"),
        "{message}"
    );
}

#[test]
fn a_mistyped_name_is_answered_with_the_closest_one() {
    let mut state = ClusterState::default();
    for (index, command) in [
        Command::AddNode {
            node: node("n1", "worker-1"),
        },
        Command::CreateService {
            service: service("s1", "web"),
        },
        Command::CreateService {
            service: service("s2", "db"),
        },
    ]
    .into_iter()
    .enumerate()
    {
        apply(&mut state, index as u64 + 1, command).expect("applied");
    }
    assert_eq!(
        state.service("webb").expect_err("typo").to_string(),
        "service \"webb\" not found; did you mean \"web\"?"
    );
    assert_eq!(
        state.node("worker-2").expect_err("typo").to_string(),
        "node \"worker-2\" not found; did you mean \"worker-1\"?"
    );
    // Nothing close: the message says no more than before.
    assert_eq!(
        state.service("cache").expect_err("unknown").to_string(),
        "service \"cache\" not found"
    );
    assert!(matches!(
        state.node("db"),
        Err(LookupError::NotFound {
            suggestion: None,
            ..
        })
    ));
}

#[test]
fn snapshot_round_trip_keeps_everything_and_rebuilds_indexes() {
    let mut state = ClusterState::default();
    apply(&mut state, 1, Command::CreateCluster { cluster: cluster() }).expect("cluster");
    apply(
        &mut state,
        2,
        Command::AddNode {
            node: node("n1", "m1"),
        },
    )
    .expect("node");
    apply(
        &mut state,
        3,
        Command::CreateService {
            service: service("s1", "web"),
        },
    )
    .expect("svc");
    apply(
        &mut state,
        4,
        Command::CreateTask {
            task: task("t1", "s1"),
        },
    )
    .expect("task");
    apply(
        &mut state,
        5,
        Command::AssignTask {
            id: "t1".to_string(),
            node_id: "n1".to_string(),
        },
    )
    .expect("assign");

    let bytes = serde_json::to_vec(&state).expect("serialize");
    let mut restored: ClusterState = serde_json::from_slice(&bytes).expect("deserialize");
    restored.rebuild_indexes();
    assert_eq!(restored, state);
    assert_eq!(restored.service("web").expect("by name").id, "s1");
    assert_eq!(restored.tasks_on_node("n1").count(), 1);
    assert_eq!(restored.tasks_of_service("s1").count(), 1);
}

#[test]
fn cluster_is_created_once() {
    let mut state = ClusterState::default();
    apply(&mut state, 1, Command::CreateCluster { cluster: cluster() }).expect("first");
    let again = apply(&mut state, 2, Command::CreateCluster { cluster: cluster() });
    assert!(matches!(again, Err(StateError::AlreadyExists { .. })));
    apply(
        &mut state,
        3,
        Command::SetJoinToken {
            role: Role::Worker,
            token: token("w2"),
        },
    )
    .expect("rotate");
    let c = state.cluster.as_ref().expect("cluster");
    assert_eq!(c.join_tokens.worker, token("w2"));
    assert_eq!(c.version, 3);
}

#[test]
fn removed_nodes_are_remembered_and_survive_a_snapshot() {
    let mut state = ClusterState::default();
    apply(
        &mut state,
        1,
        Command::AddNode {
            node: node("n1", "w1"),
        },
    )
    .expect("add");
    apply(
        &mut state,
        2,
        Command::RemoveNode {
            id: "n1".to_string(),
            expected_version: None,
        },
    )
    .expect("rm");
    assert!(state.is_removed("n1"));
    let bytes = serde_json::to_vec(&state).expect("serialize");
    let restored: ClusterState = serde_json::from_slice(&bytes).expect("deserialize");
    assert!(restored.is_removed("n1"));
}

#[test]
fn a_task_can_be_confirmed_on_its_own_node_but_not_moved() {
    let mut state = ClusterState::default();
    apply(
        &mut state,
        1,
        Command::AddNode {
            node: node("n1", "a"),
        },
    )
    .expect("n1");
    apply(
        &mut state,
        2,
        Command::AddNode {
            node: node("n2", "b"),
        },
    )
    .expect("n2");
    apply(
        &mut state,
        3,
        Command::CreateService {
            service: service("s1", "web"),
        },
    )
    .expect("svc");
    let mut global = task("t1", "s1");
    global.slot = None;
    global.node_id = Some("n1".to_string());
    apply(&mut state, 4, Command::CreateTask { task: global }).expect("task");
    let assign = |node: &str| Command::AssignTask {
        id: "t1".to_string(),
        node_id: node.to_string(),
    };
    assert!(apply(&mut state, 5, assign("n1")).is_ok());
    assert!(matches!(
        apply(&mut state, 6, assign("n2")),
        Err(StateError::Invalid(_))
    ));
    assert_eq!(state.tasks_on_node("n1").count(), 1);
    assert_eq!(state.tasks_on_node("n2").count(), 0);
}

#[test]
fn an_update_that_starts_a_rollout_sets_its_status_and_a_scale_leaves_it() {
    use crate::model::{UpdateConfig, UpdateState, UpdateStatus};
    let mut state = ClusterState::default();
    apply(
        &mut state,
        1,
        Command::CreateService {
            service: service("s1", "web"),
        },
    )
    .expect("created");
    let mut spec = state.service("web").expect("web").spec.clone();
    spec.task.image = "sleep:2".to_string();
    let status = UpdateStatus::start(
        UpdateState::Updating,
        Timestamp(20),
        &UpdateConfig::default(),
        1,
        "",
    );
    apply(
        &mut state,
        2,
        Command::UpdateService {
            id: "s1".to_string(),
            expected_version: Some(1),
            spec: spec.clone(),
            update_status: Some(status.clone()),
        },
    )
    .expect("updated");
    let web = state.service("web").expect("web");
    assert_eq!(web.update_status.as_ref(), Some(&status));
    assert_eq!(
        web.previous_spec.as_ref().map(|s| s.task.image.as_str()),
        Some("sleep")
    );
    // A change that runs the same tasks (a scale) leaves the status as it is.
    spec.mode = ServiceMode::Replicated { replicas: 3 };
    apply(
        &mut state,
        3,
        Command::UpdateService {
            id: "s1".to_string(),
            expected_version: None,
            spec,
            update_status: None,
        },
    )
    .expect("scaled");
    assert_eq!(
        state.service("web").expect("web").update_status.as_ref(),
        Some(&status)
    );
}

#[test]
fn an_update_status_is_set_only_over_the_one_it_was_decided_on() {
    use crate::model::{UpdateConfig, UpdateState, UpdateStatus};
    let mut state = ClusterState::default();
    apply(
        &mut state,
        1,
        Command::CreateService {
            service: service("s1", "web"),
        },
    )
    .expect("created");
    let first = UpdateStatus::start(
        UpdateState::Updating,
        Timestamp(5),
        &UpdateConfig::default(),
        1,
        "",
    );
    apply(
        &mut state,
        2,
        Command::SetUpdateStatus {
            service_id: "s1".to_string(),
            expected: None,
            status: first.clone(),
        },
    )
    .expect("set over none");
    let mut done = first.clone();
    done.state = UpdateState::Completed;
    // Decided on a read from before the update started: refused, and retryable.
    let stale = apply(
        &mut state,
        3,
        Command::SetUpdateStatus {
            service_id: "s1".to_string(),
            expected: None,
            status: done.clone(),
        },
    )
    .expect_err("stale");
    assert!(stale.is_retryable(), "{stale}");
    assert_eq!(
        state.service("web").expect("web").update_status.as_ref(),
        Some(&first)
    );
    assert_eq!(
        apply(
            &mut state,
            4,
            Command::SetUpdateStatus {
                service_id: "s1".to_string(),
                expected: Some(first),
                status: done.clone(),
            },
        ),
        Ok(4)
    );
    let web = state.service("web").expect("web");
    assert_eq!(web.update_status, Some(done));
    assert_eq!(web.version, 4);
}

fn stored_file(id: &str, kind: crate::model::FileKind, name: &str) -> StoredFile {
    StoredFile {
        id: id.to_string(),
        version: 0,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        kind,
        spec: crate::model::FileSpec {
            name: name.to_string(),
            labels: BTreeMap::new(),
        },
        data: crate::model::FileData::Plain(b"x".to_vec()),
        size: 1,
    }
}

#[test]
fn a_secret_in_use_stays_and_a_service_names_only_existing_ones() {
    use crate::model::{FileKind, FileReference};
    let mut state = ClusterState::default();
    let create = |id: &str, kind, name: &str| Command::CreateFile {
        file: stored_file(id, kind, name),
    };
    apply(&mut state, 1, create("s1", FileKind::Secret, "db_pw")).expect("secret");
    // A config may share a secret's name, as in Swarm; a second secret may not.
    apply(&mut state, 2, create("c1", FileKind::Config, "db_pw")).expect("config");
    let taken = apply(&mut state, 3, create("s2", FileKind::Secret, "db_pw"));
    assert!(
        matches!(taken, Err(StateError::AlreadyExists { .. })),
        "{taken:?}"
    );

    let mut web = service("svc1", "web");
    web.spec.task.secrets = vec![FileReference::parse("db_pw").expect("ref")];
    web.spec.task.configs = vec![FileReference::parse("nginx").expect("ref")];
    let missing = apply(
        &mut state,
        4,
        Command::CreateService {
            service: web.clone(),
        },
    );
    assert_eq!(
        missing,
        Err(StateError::NotFound {
            kind: Kind::Config,
            id: "nginx".to_string()
        })
    );
    web.spec.task.configs.clear();
    apply(&mut state, 5, Command::CreateService { service: web }).expect("service");

    let refused = apply(
        &mut state,
        6,
        Command::RemoveFile {
            kind: FileKind::Secret,
            id: "s1".to_string(),
        },
    );
    assert_eq!(
        refused.expect_err("in use").to_string(),
        "secret db_pw is in use by service web"
    );
    // The config of the same name is not in use, and goes.
    apply(
        &mut state,
        7,
        Command::RemoveFile {
            kind: FileKind::Config,
            id: "c1".to_string(),
        },
    )
    .expect("config removed");
    apply(
        &mut state,
        8,
        Command::RemoveService {
            id: "svc1".to_string(),
            expected_version: None,
        },
    )
    .expect("service removed");
    apply(
        &mut state,
        9,
        Command::RemoveFile {
            kind: FileKind::Secret,
            id: "s1".to_string(),
        },
    )
    .expect("secret removed once unused");
    assert!(state.file_by_name(FileKind::Secret, "db_pw").is_none());

    // The name index comes back with a snapshot.
    apply(&mut state, 10, create("s3", FileKind::Secret, "api_key")).expect("secret");
    let mut restored: ClusterState =
        serde_json::from_str(&serde_json::to_string(&state).expect("json")).expect("back");
    restored.rebuild_indexes();
    assert_eq!(
        restored
            .file(FileKind::Secret, "api_key")
            .map(|f| f.id.clone()),
        Ok("s3".to_string())
    );
}
