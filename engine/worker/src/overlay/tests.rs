use super::*;
use essaim_core::model::Ipv4Subnet;
use essaim_core::netmap::{Endpoint, MappedNetwork};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn endpoint(task: &str, address: &str, node: &str, node_ip: Option<&str>) -> Endpoint {
    Endpoint {
        task_id: task.into(),
        service_id: "web".into(),
        address: ip(address),
        node_id: node.into(),
        node_ip: node_ip.map(ip),
        serving: true,
    }
}

fn network(id: &str, vxlan_id: u32, third: u8, endpoints: Vec<Endpoint>) -> MappedNetwork {
    MappedNetwork {
        id: id.into(),
        name: format!("{id}-name"),
        vxlan_id,
        subnet: Ipv4Subnet::containing(Ipv4Addr::new(10, 0, third, 0), 24),
        gateway: Ipv4Addr::new(10, 0, third, 1),
        ingress: false,
        endpoints,
        services: Vec::new(),
    }
}

fn on(network_id: &str, address: &str) -> NetworkAttachment {
    NetworkAttachment {
        network_id: network_id.into(),
        network: format!("{network_id}-name"),
        address: ip(address),
        aliases: Vec::new(),
    }
}

fn map() -> NetworkMap {
    NetworkMap {
        node_id: "n1".into(),
        node_ip: Some(ip("192.168.5.1")),
        mesh: None,
        published: Vec::new(),
        networks: vec![
            network(
                "front",
                4096,
                1,
                vec![
                    endpoint("a", "10.0.1.2", "n1", Some("192.168.5.1")),
                    endpoint("b", "10.0.1.3", "n2", Some("192.168.5.2")),
                    endpoint("c", "10.0.1.4", "n3", None),
                ],
            ),
            network(
                "back",
                4097,
                2,
                vec![
                    endpoint("a", "10.0.2.2", "n1", Some("192.168.5.1")),
                    endpoint("d", "10.0.2.3", "n2", Some("192.168.5.2")),
                ],
            ),
        ],
    }
}

#[test]
fn a_local_task_gets_an_endpoint_per_network_and_its_first_network_routes() {
    let mut tasks = BTreeMap::new();
    tasks.insert(
        "a".to_string(),
        LocalAttachment::new(
            "/proc/1/fd/7".into(),
            vec![on("back", "10.0.2.2"), on("front", "10.0.1.2")],
        ),
    );
    let plan = node_plan(&map(), &tasks);
    assert_eq!(plan.underlay_ip, ip("192.168.5.1"));
    assert_eq!(plan.networks.len(), 2);
    let back = plan
        .networks
        .iter()
        .find(|n| n.network_id == "back")
        .unwrap();
    assert_eq!(back.vxlan_id, 4097);
    assert_eq!(back.gateway, ip("10.0.2.1"));
    assert_eq!(back.local_endpoints.len(), 1);
    assert_eq!(back.local_endpoints[0].ifname, "eth0");
    assert!(back.local_endpoints[0].default_route);
    let front = plan
        .networks
        .iter()
        .find(|n| n.network_id == "front")
        .unwrap();
    assert_eq!(front.local_endpoints[0].ifname, "eth1");
    assert!(!front.local_endpoints[0].default_route);
    assert_eq!(front.local_endpoints[0].address, ip("10.0.1.2"));
}

#[test]
fn a_task_with_an_interface_of_its_own_first_has_its_networks_after_it_and_no_default_route() {
    let mut tasks = BTreeMap::new();
    let mut attachment =
        LocalAttachment::new("/proc/42/ns/net".into(), vec![on("front", "10.0.1.2")]);
    attachment.first_interface = 1;
    tasks.insert("a".to_string(), attachment);
    let plan = node_plan(&map(), &tasks);
    let endpoint = &plan.networks[0].local_endpoints[0];
    assert_eq!(endpoint.ifname, "eth1");
    assert!(!endpoint.default_route, "eth0 keeps the default route");
}

#[test]
fn other_nodes_tasks_are_remote_endpoints_and_those_without_an_address_are_left_out() {
    let mut tasks = BTreeMap::new();
    tasks.insert(
        "a".to_string(),
        LocalAttachment::new("/proc/1/fd/7".into(), vec![on("front", "10.0.1.2")]),
    );
    let plan = node_plan(&map(), &tasks);
    assert_eq!(plan.networks.len(), 1, "no task here is on back");
    assert_eq!(
        plan.networks[0].remote_endpoints,
        vec![RemoteEndpoint {
            address: ip("10.0.1.3"),
            node_underlay_ip: ip("192.168.5.2"),
        }]
    );
}

#[test]
fn no_local_task_means_no_network_and_an_unknown_network_waits() {
    assert!(node_plan(&map(), &BTreeMap::new()).networks.is_empty());
    let mut tasks = BTreeMap::new();
    tasks.insert(
        "z".to_string(),
        LocalAttachment::new("/proc/1/fd/9".into(), vec![on("elsewhere", "10.0.9.2")]),
    );
    assert!(node_plan(&map(), &tasks).networks.is_empty());
}

#[test]
fn loopback_nodes_run_no_overlay() {
    let mut loopback = map();
    loopback.node_ip = Some(ip("127.0.0.2"));
    assert!(!has_overlay(&loopback));
    loopback.node_ip = None;
    assert!(!has_overlay(&loopback));
    assert!(has_overlay(&map()));
}
