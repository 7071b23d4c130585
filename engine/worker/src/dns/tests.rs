use super::*;
use essaim_core::model::{EndpointMode, Ipv4Subnet};
use essaim_core::netmap::{Endpoint, MappedNetwork, ServiceName};

fn endpoint(task: &str, service: &str, last: u8, serving: bool) -> Endpoint {
    Endpoint {
        task_id: task.into(),
        service_id: service.into(),
        address: Ipv4Addr::new(10, 0, 1, last),
        node_id: "n2".into(),
        node_ip: Some(Ipv4Addr::new(192, 168, 5, 2)),
        serving,
    }
}

fn name(service: &str, name: &str, aliases: &[&str], mode: EndpointMode) -> ServiceName {
    ServiceName {
        service_id: service.into(),
        name: name.into(),
        aliases: aliases.iter().map(|a| a.to_string()).collect(),
        endpoint_mode: mode,
        virtual_ip: Some(Ipv4Addr::new(10, 0, 1, 100)),
    }
}

fn map() -> NetworkMap {
    NetworkMap {
        node_id: "n1".into(),
        node_ip: Some(Ipv4Addr::new(192, 168, 5, 1)),
        mesh: None,
        published: Vec::new(),
        networks: vec![MappedNetwork {
            id: "front".into(),
            name: "front".into(),
            vxlan_id: 4096,
            subnet: Ipv4Subnet::containing(Ipv4Addr::new(10, 0, 1, 0), 24),
            gateway: Ipv4Addr::new(10, 0, 1, 1),
            ingress: false,
            endpoints: vec![
                endpoint("w1", "web-id", 2, true),
                endpoint("w2", "web-id", 3, true),
                endpoint("w3", "web-id", 4, false),
                endpoint("d1", "db-id", 5, true),
            ],
            services: vec![
                name("db-id", "db", &["database"], EndpointMode::Dnsrr),
                name("web-id", "web", &[], EndpointMode::Vip),
            ],
        }],
    }
}

fn ip(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, 1, last)
}

#[test]
fn a_service_and_its_tasks_resolve_to_the_serving_tasks_only() {
    assert_eq!(
        resolve(&map(), "front", "web", false),
        Some(vec![ip(2), ip(3)])
    );
    assert_eq!(
        resolve(&map(), "front", "tasks.web", false),
        Some(vec![ip(2), ip(3)])
    );
    assert_eq!(resolve(&map(), "front", "db", false), Some(vec![ip(5)]));
}

#[test]
fn with_vips_a_vip_service_gives_its_vip_and_tasks_dot_its_tasks() {
    assert_eq!(resolve(&map(), "front", "web", true), Some(vec![ip(100)]));
    assert_eq!(
        resolve(&map(), "front", "tasks.web", true),
        Some(vec![ip(2), ip(3)])
    );
    assert_eq!(
        resolve(&map(), "front", "db", true),
        Some(vec![ip(5)]),
        "dnsrr"
    );
}

#[test]
fn an_alias_resolves_like_the_name() {
    assert_eq!(
        resolve(&map(), "front", "database", false),
        Some(vec![ip(5)])
    );
    assert_eq!(
        resolve(&map(), "front", "tasks.database", false),
        Some(vec![ip(5)])
    );
}

#[test]
fn names_of_other_networks_and_strangers_are_not_ours() {
    assert_eq!(resolve(&map(), "back", "web", false), None);
    assert_eq!(resolve(&map(), "front", "example.com", false), None);
    assert_eq!(resolve(&map(), "front", "tasks.nothing", false), None);
}

#[test]
fn a_service_with_no_serving_task_is_known_but_empty() {
    let mut stopped = map();
    for endpoint in &mut stopped.networks[0].endpoints {
        endpoint.serving = false;
    }
    assert_eq!(resolve(&stopped, "front", "web", false), Some(vec![]));
}

#[test]
fn a_task_s_resolv_conf_names_the_network_s_server_and_no_search_domain() {
    let conf = resolv_conf(Ipv4Addr::new(10, 0, 1, 1));
    assert!(conf.contains("nameserver 10.0.1.1\n"));
    assert!(!conf.contains("search"));
}

/// `front` and `back`: the web task `w1` is on both, `d1` on `front` only; `api` is on `back`.
fn two_networks() -> NetworkMap {
    let mut map = map();
    let back = |last| Ipv4Addr::new(10, 0, 2, last);
    map.networks.push(MappedNetwork {
        id: "back".into(),
        name: "back".into(),
        vxlan_id: 4097,
        subnet: Ipv4Subnet::containing(back(0), 24),
        gateway: back(1),
        ingress: false,
        endpoints: vec![
            Endpoint {
                address: back(2),
                ..endpoint("w1", "web-id", 0, true)
            },
            Endpoint {
                address: back(3),
                ..endpoint("a1", "api-id", 0, true)
            },
        ],
        services: vec![ServiceName {
            virtual_ip: Some(back(100)),
            ..name("api-id", "api", &[], EndpointMode::Vip)
        }],
    });
    map
}

#[test]
fn a_task_on_two_networks_resolves_the_names_of_both_from_either_server() {
    let map = two_networks();
    let web_task = Some(ip(2));
    let api = Some(vec![Ipv4Addr::new(10, 0, 2, 3)]);
    assert_eq!(resolve_for(&map, "front", web_task, "api", false), api);
    assert_eq!(
        resolve_for(&map, "front", web_task, "api", true),
        Some(vec![Ipv4Addr::new(10, 0, 2, 100)])
    );
    // Asked on back, where web has no name, by the web task: web's name on front.
    assert_eq!(
        resolve_for(&map, "back", Some(Ipv4Addr::new(10, 0, 2, 2)), "web", false),
        Some(vec![ip(2), ip(3)])
    );
}

#[test]
fn a_task_on_one_network_does_not_resolve_the_names_of_another() {
    let map = two_networks();
    let db_task = Some(ip(5));
    assert_eq!(resolve_for(&map, "front", db_task, "api", false), None);
    assert_eq!(resolve_for(&map, "front", None, "api", false), None);
    // An address that is no task of this network (a stranger) gets nothing more either.
    assert_eq!(resolve_for(&map, "front", Some(ip(77)), "api", false), None);
}
