use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use super::*;
use crate::command::{Command, Request};
use crate::model::{Availability, Resources, Service, ServiceMode, ServiceSpec, TaskStatus};
use crate::time::Timestamp;

const GIB: u64 = 1 << 30;
const CPU: u64 = 1_000_000_000;

fn node(id: &str) -> Node {
    crate::testing::node(id, &format!("host-{id}"))
}

fn labelled(id: &str, key: &str, value: &str) -> Node {
    let mut n = node(id);
    n.spec.labels.insert(key.to_string(), value.to_string());
    n
}

fn with_memory(mut n: Node, memory_bytes: u64) -> Node {
    n.description.resources.memory_bytes = memory_bytes;
    n
}

fn task(id: &str, service_id: &str, spec: &TaskSpec) -> Task {
    Task {
        id: id.to_string(),
        version: 0,
        created_at: Timestamp(0),
        updated_at: Timestamp(0),
        service_id: service_id.to_string(),
        service_name: "svc".to_string(),
        slot: Some(1),
        node_id: None,
        spec: spec.clone(),
        ports: Vec::new(),
        networks: Vec::new(),
        service_version: 1,
        desired_state: TaskState::Running,
        status: TaskStatus {
            state: TaskState::Pending,
            timestamp: Timestamp(0),
            message: String::new(),
            error: None,
            exit_code: None,
            ports: Vec::new(),
            address: None,
        },
    }
}

/// A task already running on `node_id`.
fn running(id: &str, service_id: &str, spec: &TaskSpec, node_id: &str) -> Task {
    let mut t = task(id, service_id, spec);
    t.node_id = Some(node_id.to_string());
    t.status.state = TaskState::Running;
    t
}

/// `count` pending tasks of `service_id`, named `{service_id}-{i}`.
fn pending(service_id: &str, spec: &TaskSpec, count: usize) -> Vec<Task> {
    (0..count)
        .map(|i| task(&format!("{service_id}-{i:06}"), service_id, spec))
        .collect()
}

/// A cluster with these nodes and existing tasks (their services are created as needed).
fn cluster(nodes: Vec<Node>, tasks: Vec<Task>) -> ClusterState {
    let mut commands: Vec<Command> = nodes
        .into_iter()
        .map(|node| Command::AddNode { node })
        .collect();
    let mut services: Vec<&str> = tasks.iter().map(|t| t.service_id.as_str()).collect();
    services.sort_unstable();
    services.dedup();
    for id in services {
        commands.push(Command::CreateService {
            service: Service {
                id: id.to_string(),
                version: 0,
                created_at: Timestamp(0),
                updated_at: Timestamp(0),
                spec: ServiceSpec {
                    name: id.to_string(),
                    labels: BTreeMap::new(),
                    mode: ServiceMode::Replicated { replicas: 1 },
                    task: TaskSpec::default(),
                    ports: vec![],
                    update_config: Default::default(),
                    rollback_config: Default::default(),
                    endpoint_mode: Default::default(),
                },
                previous_spec: None,
                update_status: None,
                virtual_ips: Vec::new(),
            },
        });
    }
    commands.extend(
        tasks
            .iter()
            .map(|t| Command::CreateTask { task: t.clone() }),
    );
    let mut state = ClusterState::default();
    let response = state.apply(1, &Request::new(Timestamp(10), commands), &mut Vec::new());
    assert!(response.results.iter().all(Result::is_ok), "{response:?}");
    state
}

fn run(state: &ClusterState, tasks: &[Task]) -> Vec<Placement> {
    let refs: Vec<&Task> = tasks.iter().collect();
    let placements = schedule(state, &refs);
    assert_eq!(placements.len(), tasks.len());
    for (placement, task) in placements.iter().zip(tasks) {
        assert_eq!(
            placement.task_id(),
            task.id,
            "placements keep the input order"
        );
    }
    placements
}

/// Assigned tasks per node ID.
fn per_node(placements: &[Placement]) -> BTreeMap<&str, usize> {
    let mut counts = BTreeMap::new();
    for placement in placements {
        if let Placement::Assign { node_id, .. } = placement {
            *counts.entry(node_id.as_str()).or_default() += 1;
        }
    }
    counts
}

fn nodes_of(placements: &[Placement]) -> Vec<&str> {
    placements
        .iter()
        .map(|placement| match placement {
            Placement::Assign { node_id, .. } => node_id.as_str(),
            Placement::Wait { .. } => "-",
        })
        .collect()
}

fn waits(placements: &[Placement]) -> Vec<&str> {
    placements
        .iter()
        .filter_map(|placement| match placement {
            Placement::Wait { reason, .. } => Some(reason.as_str()),
            Placement::Assign { .. } => None,
        })
        .collect()
}

#[test]
fn a_task_goes_to_the_node_with_fewest_tasks_of_its_service_then_fewest_overall() {
    let spec = TaskSpec::default();
    let state = cluster(
        vec![node("n1"), node("n2"), node("n3")],
        vec![
            running("web-a", "web", &spec, "n1"),
            running("db-a", "db", &spec, "n2"),
            running("db-b", "db", &spec, "n2"),
            running("db-c", "db", &spec, "n3"),
        ],
    );
    // n2 and n3 have no web task; n3 has fewer tasks overall. Then n2, then ID order.
    let placements = run(&state, &pending("web", &spec, 4));
    assert_eq!(nodes_of(&placements), ["n3", "n2", "n1", "n3"]);
}

#[test]
fn stopped_tasks_do_not_count() {
    let spec = TaskSpec::default();
    let mut failed = running("web-a", "web", &spec, "n1");
    failed.status.state = TaskState::Failed;
    let mut shut_down = running("web-b", "web", &spec, "n1");
    shut_down.desired_state = TaskState::Shutdown;
    let state = cluster(
        vec![node("n1"), node("n2")],
        vec![failed, shut_down, running("db-a", "db", &spec, "n2")],
    );
    assert_eq!(nodes_of(&run(&state, &pending("web", &spec, 1))), ["n1"]);
}

#[test]
fn ten_tasks_on_three_nodes_spread_four_three_three() {
    let spec = TaskSpec::default();
    let state = cluster(vec![node("n1"), node("n2"), node("n3")], vec![]);
    let placements = run(&state, &pending("web", &spec, 10));
    assert_eq!(
        per_node(&placements),
        BTreeMap::from([("n1", 4), ("n2", 3), ("n3", 3)])
    );
}

#[test]
fn spread_balances_zones_before_nodes() {
    let spec = TaskSpec {
        spread: vec!["node.labels.zone".to_string()],
        ..Default::default()
    };
    let state = cluster(
        vec![
            labelled("n1", "zone", "a"),
            labelled("n2", "zone", "b"),
            labelled("n3", "zone", "b"),
        ],
        vec![],
    );
    let placements = run(&state, &pending("web", &spec, 6));
    assert_eq!(
        per_node(&placements),
        BTreeMap::from([("n1", 3), ("n2", 2), ("n3", 1)])
    );
}

#[test]
fn nodes_without_the_spread_label_form_their_own_group() {
    let spec = TaskSpec {
        spread: vec!["node.labels.zone".to_string()],
        ..Default::default()
    };
    let state = cluster(
        vec![
            labelled("n1", "zone", "a"),
            labelled("n2", "zone", "a"),
            node("n3"),
            node("n4"),
        ],
        vec![],
    );
    let placements = run(&state, &pending("web", &spec, 4));
    assert_eq!(
        per_node(&placements),
        BTreeMap::from([("n1", 1), ("n2", 1), ("n3", 1), ("n4", 1)])
    );
    // The labelled group comes first on a tie.
    assert_eq!(nodes_of(&placements)[0], "n1");
}

#[test]
fn several_spread_preferences_nest() {
    let spec = TaskSpec {
        spread: vec![
            "node.labels.zone".to_string(),
            "node.labels.rack".to_string(),
        ],
        ..Default::default()
    };
    let rack = |mut n: Node, rack: &str| {
        n.spec.labels.insert("rack".to_string(), rack.to_string());
        n
    };
    // Zone a: racks r1 (n1, n2, n3) and r2 (n4). Zone b: rack r1 (n5).
    let state = cluster(
        vec![
            rack(labelled("n1", "zone", "a"), "r1"),
            rack(labelled("n2", "zone", "a"), "r1"),
            rack(labelled("n3", "zone", "a"), "r1"),
            rack(labelled("n4", "zone", "a"), "r2"),
            rack(labelled("n5", "zone", "b"), "r1"),
        ],
        vec![],
    );
    let placements = run(&state, &pending("web", &spec, 8));
    // 4 per zone; in zone a, 2 per rack.
    assert_eq!(
        per_node(&placements),
        BTreeMap::from([("n1", 1), ("n2", 1), ("n4", 2), ("n5", 4)])
    );
}

#[test]
fn existing_tasks_count_towards_the_spread() {
    let spec = TaskSpec {
        spread: vec!["node.labels.zone".to_string()],
        ..Default::default()
    };
    let state = cluster(
        vec![labelled("n1", "zone", "a"), labelled("n2", "zone", "b")],
        vec![
            running("web-a", "web", &spec, "n1"),
            running("web-b", "web", &spec, "n1"),
        ],
    );
    let placements = run(&state, &pending("web", &spec, 3));
    assert_eq!(nodes_of(&placements), ["n2", "n2", "n1"]);
}

#[test]
fn drained_paused_and_down_nodes_get_nothing() {
    let spec = TaskSpec::default();
    let mut drained = node("n1");
    drained.spec.availability = Availability::Drain;
    let mut paused = node("n2");
    paused.spec.availability = Availability::Pause;
    let mut down = node("n3");
    down.status.state = NodeState::Down;
    let mut unknown = node("n4");
    unknown.status.state = NodeState::Unknown;
    let state = cluster(vec![drained, paused, down, unknown, node("n5")], vec![]);
    let placements = run(&state, &pending("web", &spec, 3));
    assert_eq!(nodes_of(&placements), ["n5", "n5", "n5"]);

    let state = cluster(
        state
            .nodes()
            .filter(|n| n.id != "n5")
            .cloned()
            .collect::<Vec<_>>(),
        vec![],
    );
    assert_eq!(
        waits(&run(&state, &pending("web", &spec, 1))),
        ["no suitable node: 1 drained, 1 paused, 1 down, 1 not ready"]
    );
}

#[test]
fn constraints_filter_nodes() {
    let spec = TaskSpec {
        constraints: vec![
            "node.labels.zone==a".to_string(),
            "node.hostname!=host-n2".to_string(),
        ],
        ..Default::default()
    };
    let state = cluster(
        vec![
            labelled("n1", "zone", "a"),
            labelled("n2", "zone", "a"),
            labelled("n3", "zone", "b"),
            labelled("n4", "zone", "a"),
        ],
        vec![],
    );
    assert_eq!(
        per_node(&run(&state, &pending("web", &spec, 4))),
        BTreeMap::from([("n1", 2), ("n4", 2)])
    );
}

#[test]
fn an_unreadable_constraint_makes_the_task_wait_with_the_parse_error() {
    let spec = TaskSpec {
        constraints: vec!["node.labels.zone=a".to_string()],
        ..Default::default()
    };
    let state = cluster(vec![node("n1")], vec![]);
    assert_eq!(
        waits(&run(&state, &pending("web", &spec, 2))),
        [
            r#"invalid constraint "node.labels.zone=a" at column 17: expected == or !="#,
            r#"invalid constraint "node.labels.zone=a" at column 17: expected == or !="#
        ]
    );
}

#[test]
fn a_swarm_without_nodes_says_so() {
    let state = cluster(vec![], vec![]);
    assert_eq!(
        waits(&run(&state, &pending("web", &TaskSpec::default(), 1))),
        ["no suitable node: the swarm has no nodes"]
    );
}

#[test]
fn tasks_move_on_when_memory_runs_out_then_wait_saying_what_is_missing() {
    let spec = TaskSpec {
        resources: Resources {
            reserve_memory_bytes: GIB,
            ..Default::default()
        },
        ..Default::default()
    };
    let other = TaskSpec {
        resources: Resources {
            reserve_memory_bytes: GIB / 2,
            ..Default::default()
        },
        ..Default::default()
    };
    // n1 has 4 GiB, n2 2.5 GiB of which 0.5 is taken; n3 did not say (never short).
    let state = cluster(
        vec![
            with_memory(node("n1"), 4 * GIB),
            with_memory(node("n2"), 5 * GIB / 2),
        ],
        vec![running("db-a", "db", &other, "n2")],
    );
    let placements = run(&state, &pending("web", &spec, 7));
    assert_eq!(
        nodes_of(&placements),
        ["n1", "n2", "n1", "n2", "n1", "n1", "-"]
    );
    assert_eq!(
        waits(&placements),
        ["no suitable node: 2 lack 1 GiB memory"]
    );

    let state = cluster(vec![with_memory(node("n1"), 4 * GIB), node("n3")], vec![]);
    let placements = run(&state, &pending("web", &spec, 12));
    assert_eq!(
        per_node(&placements),
        BTreeMap::from([("n1", 4), ("n3", 8)])
    );
}

#[test]
fn cpu_shortage_reads_as_a_decimal() {
    let spec = TaskSpec {
        resources: Resources {
            reserve_nano_cpus: 3 * CPU / 2,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut small = node("n1");
    small.description.resources.nano_cpus = CPU;
    let state = cluster(vec![small], vec![]);
    assert_eq!(
        waits(&run(&state, &pending("web", &spec, 1))),
        ["no suitable node: 1 lacks 0.5 CPUs"]
    );
}

#[test]
fn max_replicas_per_node_caps_each_node() {
    let spec = TaskSpec {
        max_replicas_per_node: 2,
        ..Default::default()
    };
    let state = cluster(
        vec![node("n1"), node("n2")],
        vec![running("web-a", "web", &spec, "n1")],
    );
    let placements = run(&state, &pending("web", &spec, 4));
    assert_eq!(nodes_of(&placements), ["n2", "n1", "n2", "-"]);
    assert_eq!(
        waits(&placements),
        ["no suitable node: 2 at max replicas per node (2)"]
    );
}

#[test]
fn the_wait_reason_counts_each_node_once_by_the_first_filter_it_fails() {
    let spec = TaskSpec {
        constraints: vec!["node.labels.zone==b".to_string()],
        max_replicas_per_node: 2,
        resources: Resources {
            reserve_memory_bytes: 2 * GIB,
            ..Default::default()
        },
        ..Default::default()
    };
    let mut drained1 = labelled("d1", "zone", "b");
    drained1.spec.availability = Availability::Drain;
    // Drained and down: counted as down only.
    let mut down = labelled("d2", "zone", "b");
    down.spec.availability = Availability::Drain;
    down.status.state = NodeState::Down;
    let mut drained2 = labelled("d3", "zone", "a");
    drained2.spec.availability = Availability::Drain;
    let mut paused = labelled("p1", "zone", "b");
    paused.spec.availability = Availability::Pause;
    // Fails the constraint and has no memory: counted for the constraint.
    let wrong_zone = with_memory(labelled("c1", "zone", "a"), GIB);
    let full = with_memory(labelled("m1", "zone", "b"), 2 * GIB);
    let state = cluster(
        vec![
            drained1,
            down,
            drained2,
            paused,
            wrong_zone,
            labelled("c2", "zone", "a"),
            node("c3"),
            full,
            labelled("r1", "zone", "b"),
        ],
        vec![
            running("db-a", "db", &spec, "m1"),
            running("web-a", "web", &spec, "r1"),
            running("web-b", "web", &spec, "r1"),
        ],
    );
    let placements = run(&state, &pending("web", &spec, 2));
    let reason = "no suitable node: 2 drained, 1 paused, 1 down, 1 lacks 2 GiB memory, \
                  3 fail constraint node.labels.zone==b, 1 at max replicas per node (2)";
    assert_eq!(waits(&placements), [reason, reason]);
}

#[test]
fn options_only_a_container_applies_keep_tasks_off_process_nodes_and_say_so() {
    let spec = TaskSpec {
        container: crate::model::ContainerOptions {
            hostname: "web".to_string(),
            cap_add: vec!["NET_ADMIN".to_string()],
            // The process runtime applies these.
            user: "app".to_string(),
            workdir: "/srv".to_string(),
            ..Default::default()
        },
        ..Default::default()
    };
    let process = |id: &str| {
        let mut n = node(id);
        n.description.runtime = PROCESS_RUNTIME.to_string();
        n
    };
    let state = cluster(vec![process("p1"), process("p2")], vec![]);
    let placements = run(&state, &pending("web", &spec, 1));
    assert_eq!(
        waits(&placements),
        ["no suitable node: 2 run tasks as processes, which cannot apply --hostname, --cap-add"]
    );
    let mut docker = node("d1");
    docker.description.runtime = "docker".to_string();
    let state = cluster(vec![process("p1"), docker], vec![]);
    assert_eq!(
        nodes_of(&run(&state, &pending("web", &spec, 2))),
        ["d1", "d1"]
    );
    // What the process runtime applies goes anywhere.
    let plain = TaskSpec {
        container: crate::model::ContainerOptions {
            hostname: String::new(),
            cap_add: Vec::new(),
            ..spec.container.clone()
        },
        ..Default::default()
    };
    let state = cluster(vec![process("p1")], vec![]);
    assert_eq!(nodes_of(&run(&state, &pending("web", &plain, 1))), ["p1"]);
}

#[test]
fn the_same_input_gives_the_same_placements() {
    let spec = TaskSpec {
        spread: vec!["node.labels.zone".to_string()],
        ..Default::default()
    };
    let nodes: Vec<Node> = (0..20)
        .map(|i| labelled(&format!("n{i:02}"), "zone", ["a", "b", "c"][i % 3]))
        .collect();
    let state = cluster(nodes, vec![running("web-a", "web", &spec, "n07")]);
    let mut tasks = pending("web", &spec, 50);
    tasks.extend(pending("db", &TaskSpec::default(), 30));
    let first = run(&state, &tasks);
    assert_eq!(first, run(&state, &tasks));
    assert_eq!(first, run(&state.clone(), &tasks));
}

#[test]
fn earlier_groups_count_for_later_ones() {
    let state = cluster(vec![node("n1"), node("n2")], vec![]);
    let old = TaskSpec {
        image: "web:1".to_string(),
        ..Default::default()
    };
    let new = TaskSpec {
        image: "web:2".to_string(),
        ..Default::default()
    };
    // Two specs of one service (mid-update) and another service: all share the nodes.
    let tasks = vec![
        task("a", "web", &old),
        task("b", "web", &new),
        task("c", "db", &TaskSpec::default()),
        task("d", "web", &old),
    ];
    let placements = run(&state, &tasks);
    assert_eq!(nodes_of(&placements), ["n1", "n1", "n2", "n2"]);
}

#[test]
fn a_task_that_names_its_node_goes_there_or_waits_saying_why() {
    let spec = TaskSpec::default();
    let mut drained = node("n2");
    drained.spec.availability = Availability::Drain;
    let state = cluster(vec![node("n1"), drained], vec![]);
    let mut on_n1 = task("g1", "agent", &spec);
    on_n1.slot = None;
    on_n1.node_id = Some("n1".to_string());
    let mut on_n2 = on_n1.clone();
    on_n2.id = "g2".to_string();
    on_n2.node_id = Some("n2".to_string());
    let mut gone = on_n1.clone();
    gone.id = "g3".to_string();
    gone.node_id = Some("n9".to_string());
    let placements = run(&state, &[on_n1, on_n2, gone]);
    assert_eq!(nodes_of(&placements), ["n1", "-", "-"]);
    assert_eq!(
        waits(&placements),
        [
            "node host-n2 (n2) cannot take the task: drained",
            "node n9 is no longer in the swarm"
        ]
    );
    assert!(accepts(state.node_by_id("n1").expect("n1"), &spec));
    assert!(!accepts(state.node_by_id("n2").expect("n2"), &spec));
}

/// 100,000 tasks over 1,000 nodes: the scheduler must not scan every node per task.
#[test]
fn a_hundred_thousand_tasks_spread_evenly_over_a_thousand_nodes() {
    let spec = TaskSpec {
        image: "web".to_string(),
        ..Default::default()
    };
    let state = cluster(
        (0..1000).map(|i| node(&format!("n{i:04}"))).collect(),
        vec![],
    );
    let tasks = pending("web", &spec, 100_000);
    let refs: Vec<&Task> = tasks.iter().collect();

    let started = Instant::now();
    let placements = schedule(&state, &refs);
    let elapsed = started.elapsed();
    println!("placed 100,000 tasks over 1,000 nodes in {elapsed:?}");

    let mut counts: HashMap<&str, usize> = HashMap::new();
    for placement in &placements {
        match placement {
            Placement::Assign { node_id, .. } => *counts.entry(node_id).or_default() += 1,
            Placement::Wait { reason, .. } => panic!("a task waits: {reason}"),
        }
    }
    assert_eq!(counts.len(), 1000);
    let max = counts.values().max().copied().unwrap_or(0);
    let min = counts.values().min().copied().unwrap_or(0);
    assert!(max - min <= 1, "uneven spread: {min}..{max}");
}

#[test]
fn two_tasks_publishing_one_host_port_never_share_a_node_and_the_third_says_why() {
    let spec = TaskSpec::default();
    let host_8080 = PortConfig {
        mode: PublishMode::Host,
        ..PortConfig::tcp(8080, 80)
    };
    // Another service already holds 8080 on n1; UDP 8080 and ingress ports are no conflict.
    let mut holder = running("other-a", "other", &spec, "n1");
    holder.ports = vec![host_8080];
    let state = cluster(
        vec![node("n1"), node("n2"), node("n3")],
        vec![holder.clone()],
    );
    let mut tasks = pending("web", &spec, 3);
    for task in &mut tasks {
        task.ports = vec![host_8080];
    }
    let placements = run(&state, &tasks);
    assert_eq!(nodes_of(&placements), ["n2", "n3", "-"]);
    assert_eq!(
        waits(&placements),
        ["no suitable node: 3 have host port 8080/tcp in use"]
    );

    let mut udp = pending("dns", &spec, 1);
    udp[0].ports = vec![PortConfig {
        protocol: Protocol::Udp,
        ..host_8080
    }];
    let mut ingress = pending("api", &spec, 1);
    ingress[0].ports = vec![PortConfig::tcp(8080, 80)];
    let only_n1 = cluster(vec![node("n1")], vec![holder]);
    for tasks in [udp, ingress] {
        assert_eq!(
            nodes_of(&run(&only_n1, &tasks)),
            ["n1"],
            "{:?}",
            tasks[0].ports
        );
    }
}

#[test]
fn generic_resources_place_tasks_only_where_enough_are_free() {
    let gpu = TaskSpec {
        resources: Resources {
            generic: BTreeMap::from([("gpu".to_string(), 1)]),
            ..Default::default()
        },
        ..Default::default()
    };
    let with_gpus = |mut n: Node, count: u64| {
        n.description
            .resources
            .generic
            .insert("gpu".to_string(), count);
        n
    };
    // n1 has two GPUs, one held already; n2 has one; n3 declared none.
    let state = cluster(
        vec![
            with_gpus(node("n1"), 2),
            with_gpus(node("n2"), 1),
            node("n3"),
        ],
        vec![running("train-a", "train", &gpu, "n1")],
    );
    let placements = run(&state, &pending("web", &gpu, 3));
    assert_eq!(
        per_node(&placements),
        BTreeMap::from([("n1", 1), ("n2", 1)])
    );
    assert_eq!(
        waits(&placements),
        ["no suitable node: 3 lack generic resource gpu"],
        "the third waits: every node's GPUs are taken, or it has none"
    );
}
