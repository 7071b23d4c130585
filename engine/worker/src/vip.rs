//! Virtual IPs: a connection to a service's VIP goes to one of its serving tasks, chosen at
//! random per connection.
//!
//! As Swarm does with IPVS in each container's namespace, the choice is made in the network
//! namespace of the task that connects: an nftables table `ip essaim` there rewrites the
//! destination of a new connection to a VIP (nat output hook), and connection tracking keeps
//! the rest of that connection, and its answers, on the same task. Nothing is needed on the
//! path between (no ARP for the VIP, no hairpin, no address translation on the nodes), and a
//! task that stops serving gets no new connections while those it has go on. A VIP with no
//! serving task refuses connections at once.
//!
//! The table is written whole and replaced in one transaction by `nft -f -` (as kube-proxy's
//! nftables mode does), only when what the task should see changed.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use essaim_core::model::{EndpointMode, NetworkAttachment};
use essaim_core::netmap::NetworkMap;

/// The table essaim owns in each task's namespace.
pub const TABLE: &str = "essaim";

/// One VIP and the tasks behind it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Balanced {
    pub vip: Ipv4Addr,
    pub backends: Vec<Ipv4Addr>,
}

/// The VIPs a task on `networks` reaches: every vip-mode service of those networks.
pub fn balanced(map: &NetworkMap, networks: &[NetworkAttachment]) -> Vec<Balanced> {
    let mut found = Vec::new();
    for attachment in networks {
        let Some(network) = map.network(&attachment.network_id) else {
            continue;
        };
        for service in &network.services {
            let (EndpointMode::Vip, Some(vip)) = (service.endpoint_mode, service.virtual_ip) else {
                continue;
            };
            let mut backends: Vec<Ipv4Addr> = network
                .endpoints
                .iter()
                .filter(|e| e.serving && e.service_id == service.service_id)
                .map(|e| e.address)
                .collect();
            backends.sort();
            found.push(Balanced { vip, backends });
        }
    }
    found.sort_by_key(|b| b.vip);
    found
}

/// The nftables script that makes a task's namespace hold exactly `balanced`.
pub fn ruleset(balanced: &[Balanced]) -> String {
    // Declaring the table first makes the delete succeed when it is not there yet.
    let mut script = format!("table ip {TABLE}\ndelete table ip {TABLE}\ntable ip {TABLE} {{\n");
    script.push_str("\tchain vips {\n\t\ttype nat hook output priority -100; policy accept;\n");
    for Balanced { vip, backends } in balanced.iter().filter(|b| !b.backends.is_empty()) {
        let choices: Vec<String> = backends
            .iter()
            .enumerate()
            .map(|(i, backend)| format!("{i} : {backend}"))
            .collect();
        let _ = writeln!(
            script,
            "\t\tip daddr {vip} dnat to numgen random mod {} map {{ {} }}",
            backends.len(),
            choices.join(", ")
        );
    }
    script.push_str("\t}\n");
    let idle: Vec<String> = balanced
        .iter()
        .filter(|b| b.backends.is_empty())
        .map(|b| b.vip.to_string())
        .collect();
    if !idle.is_empty() {
        script.push_str("\tchain idle {\n\t\ttype filter hook output priority 0; policy accept;\n");
        let _ = writeln!(
            script,
            "\t\tip daddr {{ {} }} meta l4proto tcp reject with tcp reset",
            idle.join(", ")
        );
        let _ = writeln!(script, "\t\tip daddr {{ {} }} reject", idle.join(", "));
        script.push_str("\t}\n");
    }
    script.push_str("}\n");
    script
}

#[cfg(test)]
mod tests {
    use super::*;
    use essaim_core::model::Ipv4Subnet;
    use essaim_core::netmap::{Endpoint, MappedNetwork, ServiceName};

    fn ip(last: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 0, 1, last)
    }

    fn map() -> NetworkMap {
        let endpoint = |service: &str, last: u8, serving: bool| Endpoint {
            task_id: format!("t{last}"),
            service_id: service.into(),
            address: ip(last),
            node_id: "n2".into(),
            node_ip: None,
            serving,
        };
        let name = |service: &str, mode: EndpointMode, vip: u8| ServiceName {
            service_id: service.into(),
            name: service.into(),
            aliases: vec![],
            endpoint_mode: mode,
            virtual_ip: Some(ip(vip)),
        };
        NetworkMap {
            node_id: "n1".into(),
            node_ip: None,
            mesh: None,
            published: Vec::new(),
            networks: vec![MappedNetwork {
                id: "front".into(),
                name: "front".into(),
                vxlan_id: 4096,
                subnet: Ipv4Subnet::containing(ip(0), 24),
                gateway: ip(1),
                ingress: false,
                endpoints: vec![
                    endpoint("web", 4, true),
                    endpoint("web", 3, true),
                    endpoint("web", 5, false),
                    endpoint("rr", 6, true),
                ],
                services: vec![
                    name("web", EndpointMode::Vip, 100),
                    name("rr", EndpointMode::Dnsrr, 101),
                    name("idle", EndpointMode::Vip, 102),
                ],
            }],
        }
    }

    fn on_front() -> Vec<NetworkAttachment> {
        vec![NetworkAttachment {
            network_id: "front".into(),
            network: "front".into(),
            address: ip(9),
            aliases: vec![],
        }]
    }

    #[test]
    fn a_vip_is_balanced_over_its_serving_tasks_and_dnsrr_has_none() {
        assert_eq!(
            balanced(&map(), &on_front()),
            vec![
                Balanced {
                    vip: ip(100),
                    backends: vec![ip(3), ip(4)],
                },
                Balanced {
                    vip: ip(102),
                    backends: vec![],
                },
            ]
        );
        assert_eq!(balanced(&map(), &[]), vec![]);
    }

    #[test]
    fn the_ruleset_replaces_the_table_and_refuses_vips_without_tasks() {
        let script = ruleset(&balanced(&map(), &on_front()));
        assert!(script.starts_with("table ip essaim\ndelete table ip essaim\n"));
        assert!(script.contains(
            "ip daddr 10.0.1.100 dnat to numgen random mod 2 map { 0 : 10.0.1.3, 1 : 10.0.1.4 }"
        ));
        assert!(script.contains("ip daddr { 10.0.1.102 } reject"));
        assert!(!script.contains("10.0.1.101"), "dnsrr has no VIP rule");
    }
}
