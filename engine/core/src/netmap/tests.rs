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
