use super::*;
use crate::command::Command;
use crate::model::{TaskState, TaskStatus};
use crate::testing::StateLog;
use crate::Timestamp;

/// Three nodes, two networks; `web` (2 replicas) on `front`, `db` (1) on `front` and `back`.
fn cluster() -> StateLog {
    let mut log = StateLog::new();
    log.node("n1", "192.168.1.1");
    log.node("n2", "192.168.1.2");
    log.node("n3", "names-are-not-ips");
    log.network("front", None).expect("front");
    log.network("back", None).expect("back");
    log.service("web", 2, &["front"]);
    log.service("db", 1, &["front", "back"]);
    log.place("web-1", "n1", TaskState::Running);
    log.place("web-2", "n2", TaskState::Starting);
    log.place("db-1", "n3", TaskState::Running);
    log
}

fn names(network: &MappedNetwork) -> Vec<&str> {
    network.services.iter().map(|s| s.name.as_str()).collect()
}

#[test]
fn a_node_hears_of_the_networks_it_has_tasks_on_with_every_endpoint_there() {
    let log = cluster();
    let maps = NetworkMaps::of(&log.state);

    let n1 = maps.for_node("n1");
    assert_eq!(n1.networks.len(), 1, "n1 has no task on back: {n1:?}");
    let front = &n1.networks[0];
    assert_eq!(front.name, "front");
    assert_eq!(names(front), ["db", "web"]);
    let endpoints: Vec<(&str, &str, Option<Ipv4Addr>, bool)> = front
        .endpoints
        .iter()
        .map(|e| (e.task_id.as_str(), e.node_id.as_str(), e.node_ip, e.serving))
        .collect();
    assert_eq!(endpoints.len(), 3, "{endpoints:?}");
    let n1_ip = Some(Ipv4Addr::new(192, 168, 1, 1));
    let n2_ip = Some(Ipv4Addr::new(192, 168, 1, 2));
    assert!(endpoints.contains(&("web-1", "n1", n1_ip, true)));
    // Starting: reachable, but no new connections yet.
    assert!(endpoints.contains(&("web-2", "n2", n2_ip, false)));
    // A node advertising a host name has no address to send VXLAN packets to.
    assert!(endpoints.contains(&("db-1", "n3", None, true)));
    // The endpoints' addresses are the tasks' own.
    let web1 = log.task("web-1");
    let mapped = front.endpoints.iter().find(|e| e.task_id == "web-1");
    assert_eq!(mapped.map(|e| e.address), Some(web1.networks[0].address));

    let n3 = maps.for_node("n3");
    let mut on_n3: Vec<&str> = n3.networks.iter().map(|n| n.name.as_str()).collect();
    on_n3.sort();
    assert_eq!(on_n3, ["back", "front"]);
    assert_eq!(n1.node_ip, n1_ip, "n1 knows its own underlay address");
    assert!(maps.for_node("nobody").networks.is_empty());
}

#[test]
fn a_vip_service_is_named_with_its_address_on_each_network() {
    let log = cluster();
    let maps = NetworkMaps::of(&log.state);
    let db = log.state.service("db").expect("db");
    let n3 = maps.for_node("n3");
    assert_eq!(n3.networks.len(), 2);
    for network in &n3.networks {
        let named = network
            .services
            .iter()
            .find(|s| s.name == "db")
            .expect("db on both networks");
        let vip = db
            .virtual_ips
            .iter()
            .find(|v| v.network_id == network.id)
            .map(|v| v.address);
        assert!(vip.is_some());
        assert_eq!(named.virtual_ip, vip);
        assert_eq!(named.endpoint_mode, EndpointMode::Vip);
    }
}

#[test]
fn a_stopped_task_leaves_the_map_and_its_node_hears_of_no_network() {
    let mut log = cluster();
    log.apply(vec![Command::UpdateTaskStatus {
        id: "web-2".into(),
        status: TaskStatus::new(TaskState::Failed, Timestamp(99), "exit 1"),
    }])
    .expect("failed");
    let maps = NetworkMaps::of(&log.state);
    assert!(maps.for_node("n2").networks.is_empty());
    let front = maps.for_node("n1").networks.remove(0);
    assert!(
        front.endpoints.iter().all(|e| e.task_id != "web-2"),
        "{front:?}"
    );
}

#[test]
fn only_changes_that_touch_networks_cost_a_new_map() {
    let log = cluster();
    let event = |change| Event { index: 1, change };
    assert!(may_change_maps(&[event(Change::Task(
        log.task("web-1").clone()
    ))]));
    let mut plain = log.task("web-1").clone();
    plain.networks.clear();
    assert!(!may_change_maps(&[event(Change::Task(plain))]));
}

#[test]
fn every_node_hears_of_the_mesh_with_the_other_nodes_addresses_and_every_published_port() {
    let mut log = cluster();
    log.ingress();
    log.pass();
    let ingress = log.state.ingress_network().expect("ingress").clone();
    let address = |log: &StateLog, node: &str| {
        let held = log.state.node_by_id(node).and_then(|n| n.ingress.clone());
        held.map(|i| (i.network_id, i.address))
    };
    let (network_id, n1_address) = address(&log, "n1").expect("n1 has an ingress address");
    assert_eq!(network_id, ingress.id);
    assert!(ingress.allocation.subnet.is_host(n1_address));
    assert_ne!(
        address(&log, "n1"),
        address(&log, "n2"),
        "each node its own address"
    );

    let mut web = log.state.service("web").expect("web").clone();
    web.spec.ports = vec![PortConfig::tcp(8080, 80)];
    crate::allocator::ports::join_ingress(&mut web.spec);
    log.apply(vec![Command::UpdateService {
        id: web.id.clone(),
        expected_version: None,
        spec: web.spec.clone(),
        update_status: None,
    }])
    .expect("web publishes");
    let maps = NetworkMaps::of(&log.state);
    // n3 runs no task of web, and still takes part in the mesh.
    let n3 = maps.for_node("n3");
    let mesh = n3.mesh.as_ref().expect("n3 is in the mesh");
    assert_eq!(mesh.network_id, ingress.id);
    assert_eq!(
        Some((ingress.id.clone(), mesh.node_address)),
        address(&log, "n3")
    );
    let others: Vec<&str> = mesh.nodes.iter().map(|n| n.node_id.as_str()).collect();
    assert_eq!(others, ["n1", "n2"]);
    assert!(n3.network(&ingress.id).is_some());
    assert!(
        n3.network(&ingress.id).unwrap().services.is_empty(),
        "no names on the ingress network"
    );
    assert_eq!(
        n3.published,
        [PublishedPort {
            service_id: web.id.clone(),
            port: PortConfig::tcp(8080, 80),
        }]
    );
}

#[test]
fn the_tasks_of_a_down_node_serve_no_more() {
    let mut log = cluster();
    let mut n1 = log.state.node_by_id("n1").expect("n1").status.clone();
    n1.state = crate::model::NodeState::Down;
    log.apply(vec![Command::SetNodeStatus {
        id: "n1".into(),
        status: n1,
    }])
    .expect("n1 down");
    let maps = NetworkMaps::of(&log.state);
    let front = maps.for_node("n2").networks.remove(0);
    let web1 = front.endpoints.iter().find(|e| e.task_id == "web-1");
    assert_eq!(web1.map(|e| e.serving), Some(false));
}
