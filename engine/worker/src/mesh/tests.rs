use super::*;
use essaim_core::model::{Ipv4Subnet, PortConfig};
use essaim_core::netmap::{Endpoint, Mesh, MeshNode};

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

fn endpoint(service: &str, address: &str, node: &str, serving: bool) -> Endpoint {
    Endpoint {
        task_id: format!("{service}-{address}"),
        service_id: service.into(),
        address: ip(address),
        node_id: node.into(),
        node_ip: None,
        serving,
    }
}

fn network(id: &str, third: u8, ingress: bool, endpoints: Vec<Endpoint>) -> MappedNetwork {
    MappedNetwork {
        id: id.into(),
        name: id.into(),
        vxlan_id: 4096 + u32::from(third),
        subnet: Ipv4Subnet::containing(Ipv4Addr::new(10, 0, third, 0), 24),
        gateway: Ipv4Addr::new(10, 0, third, 1),
        ingress,
        endpoints,
        services: Vec::new(),
    }
}

fn published(service: &str, port: PortConfig) -> PublishedPort {
    PublishedPort {
        service_id: service.into(),
        port,
    }
}

/// n1's map: web (3 tasks, one on n1, one starting on n3) publishes 8080 on the mesh, api
/// 9090 with policy=local, db a host port 5432 from its task on n1's `back` network.
fn map() -> NetworkMap {
    NetworkMap {
        node_id: "n1".into(),
        node_ip: Some(ip("192.168.5.1")),
        networks: vec![
            network(
                "ingress",
                0,
                true,
                vec![
                    endpoint("web", "10.0.0.5", "n1", true),
                    endpoint("web", "10.0.0.6", "n2", true),
                    endpoint("web", "10.0.0.7", "n3", false),
                    endpoint("api", "10.0.0.8", "n2", true),
                ],
            ),
            network(
                "back",
                1,
                false,
                vec![endpoint("db", "10.0.1.4", "n1", true)],
            ),
        ],
        mesh: Some(Mesh {
            network_id: "ingress".into(),
            node_address: ip("10.0.0.2"),
            nodes: vec![MeshNode {
                node_id: "n2".into(),
                address: ip("10.0.0.3"),
                node_ip: Some(ip("192.168.5.2")),
            }],
        }),
        published: vec![
            published("web", PortConfig::tcp(8080, 80)),
            published(
                "api",
                PortConfig {
                    policy: TrafficPolicy::Local,
                    ..PortConfig::tcp(9090, 90)
                },
            ),
            published(
                "db",
                PortConfig {
                    mode: PublishMode::Host,
                    ..PortConfig::tcp(5432, 5432)
                },
            ),
            published(
                "web",
                PortConfig {
                    mode: PublishMode::Host,
                    ..PortConfig::tcp(8443, 443)
                },
            ),
            published(
                "elsewhere",
                PortConfig {
                    mode: PublishMode::Host,
                    ..PortConfig::tcp(6000, 6000)
                },
            ),
        ],
    }
}

#[test]
fn an_ingress_port_goes_to_every_serving_task_and_policy_local_to_this_node_s_only() {
    let plan = plan(&map());
    let port = |published: u16| plan.ports.iter().find(|p| p.published == published);
    let web = port(8080).expect("8080 open");
    assert_eq!(
        web.backends,
        [ip("10.0.0.5"), ip("10.0.0.6")],
        "not the starting one"
    );
    assert_eq!(web.target, 80);
    let api = port(9090).expect("9090 open");
    assert!(api.backends.is_empty(), "api has no task on n1: {api:?}");
    let db = port(5432).expect("db's host port opens where its task runs");
    assert_eq!(db.backends, [ip("10.0.1.4")]);
    assert!(port(6000).is_none(), "no task of that service here");
    let web_host = port(8443).expect("web's host port opens on n1");
    assert_eq!(
        web_host.backends,
        [ip("10.0.0.5")],
        "at its ingress address"
    );
    let ingress = plan.ingress.expect("n1 is in the mesh");
    assert_eq!(ingress.node_address, ip("10.0.0.2"));
    assert_eq!(ingress.local_tasks, [ip("10.0.0.5")]);
    assert_eq!(ingress.bridge, "es-br-4096");
}

#[test]
fn the_ruleset_balances_at_random_and_translates_the_source_only_towards_other_nodes() {
    let script = ruleset(&plan(&map()));
    assert!(script.starts_with("table ip essaim-mesh\ndelete table ip essaim-mesh\n"));
    assert!(script.contains("tcp dport 8080 goto p-tcp-8080"));
    assert!(script
        .contains("numgen random mod 2 vmap { 0 : goto p-tcp-8080-0, 1 : goto p-tcp-8080-1 }"));
    assert!(script.contains("meta l4proto tcp dnat to 10.0.0.5:80"));
    assert!(script.contains("dnat to 10.0.0.6:80"));
    assert!(
        !script.contains("dport 9090"),
        "no task to send to: refused"
    );
    assert!(script.contains(
        "oifname \"es-br-4096\" ct status dnat ip daddr != { 10.0.0.5 } snat to 10.0.0.2"
    ));
    assert!(script.contains("ct status dnat ip saddr 10.0.0.0/24 snat to 10.0.0.2"));
    assert!(script.contains("iifname \"es-br-4096\" oifname != \"es-br-4096\" drop"));
}

#[test]
fn a_node_outside_the_mesh_with_nothing_published_removes_the_table() {
    let map = NetworkMap {
        node_id: "n1".into(),
        ..NetworkMap::default()
    };
    assert_eq!(
        ruleset(&plan(&map)),
        "table ip essaim-mesh\ndelete table ip essaim-mesh\n"
    );
}
