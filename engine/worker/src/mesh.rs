//! The routing mesh: a port published in ingress mode opens on every node, and each new
//! connection (each UDP flow) to it goes to one serving task of the service, on any node,
//! chosen at random. A host-mode port of a task that runs in a namespace of its own opens on
//! its node only, straight to that task.
//!
//! All of it is in the kernel of the node's own network namespace, in one nftables table
//! `ip essaim-mesh`, written whole and replaced in one transaction when the map changes:
//!
//! ```text
//!  client ──> node:8080 ─ prerouting/output: dnat to a task's ingress address:80 ─┐
//!                                                                                 │
//!      task on this node <── es-br (no source NAT: the task sees the client) ─────┤
//!      task on another node <── es-br, VXLAN (source NAT to this node's own ──────┘
//!                                    ingress address, so that answers come back here)
//! ```
//!
//! Connection tracking keeps each connection on its task and undoes both translations on the
//! answers. The client's address is kept whenever the task chosen runs on the node that took
//! the connection, and always with `policy=local`, which only sends to the node's own tasks.
//! A task that connects to a published port of its own node is translated too (hairpin), or
//! the answer would bypass the node.

use std::fmt::Write as _;
use std::net::Ipv4Addr;

use essaim_core::model::{Protocol, PublishMode, TrafficPolicy};
use essaim_core::netmap::{MappedNetwork, NetworkMap, PublishedPort};
use essaim_network::plan::bridge_name;

/// The table essaim owns in the node's namespace.
pub const TABLE: &str = "essaim-mesh";

/// What the node's mesh table must hold.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct MeshPlan {
    /// The node's side of the ingress network, when it is in the mesh.
    pub ingress: Option<IngressSide>,
    pub ports: Vec<OpenPort>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IngressSide {
    /// The ingress network's bridge on this node.
    pub bridge: String,
    pub subnet: String,
    /// The node's own address there: the source of what it sends to other nodes' tasks.
    pub node_address: Ipv4Addr,
    /// This node's tasks' addresses there: connections sent to them keep their source.
    pub local_tasks: Vec<Ipv4Addr>,
}

/// A port the node opens, and where its new connections go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OpenPort {
    pub published: u16,
    pub protocol: Protocol,
    pub target: u16,
    /// The tasks' addresses; none: the port refuses (nothing listens on the node).
    pub backends: Vec<Ipv4Addr>,
}

/// What the node opens, from its network map.
pub fn plan(map: &NetworkMap) -> MeshPlan {
    let ingress_network = map
        .mesh
        .as_ref()
        .and_then(|mesh| Some((mesh, map.network(&mesh.network_id)?)));
    let mut ports = Vec::new();
    for published in &map.published {
        let port = published.port;
        if port.published == 0 {
            continue;
        }
        let backends = match port.mode {
            PublishMode::Ingress => {
                let Some((_, network)) = ingress_network else {
                    continue;
                };
                let local_only = port.policy == TrafficPolicy::Local;
                serving(network, published, |node| {
                    !local_only || node == map.node_id
                })
            }
            // Only where the service has a task: at its ingress address when it has one (the
            // network its answers leave through), else on another of its networks. A task on
            // no network listens on the node itself.
            PublishMode::Host => {
                let ingress = ingress_network.map(|(_, network)| network);
                let others = map.networks.iter().filter(|n| !n.ingress);
                let local = ingress
                    .into_iter()
                    .chain(others)
                    .map(|n| serving(n, published, |node| node == map.node_id))
                    .find(|found| !found.is_empty());
                match local {
                    Some(backends) => backends,
                    None => continue,
                }
            }
        };
        ports.push(OpenPort {
            published: port.published,
            protocol: port.protocol,
            target: port.target,
            backends,
        });
    }
    ports.sort_by_key(|p| (p.published, p.protocol == Protocol::Udp));
    let ingress = ingress_network.map(|(mesh, network)| IngressSide {
        bridge: bridge_name(network.vxlan_id),
        subnet: network.subnet.to_string(),
        node_address: mesh.node_address,
        local_tasks: network
            .endpoints
            .iter()
            .filter(|e| e.node_id == map.node_id)
            .map(|e| e.address)
            .collect(),
    });
    MeshPlan { ingress, ports }
}

/// The serving tasks of the port's service on `network`, on the nodes `on` accepts.
fn serving(
    network: &MappedNetwork,
    published: &PublishedPort,
    on: impl Fn(&str) -> bool,
) -> Vec<Ipv4Addr> {
    let mut backends: Vec<Ipv4Addr> = network
        .endpoints
        .iter()
        .filter(|e| e.serving && e.service_id == published.service_id && on(&e.node_id))
        .map(|e| e.address)
        .collect();
    backends.sort();
    backends
}

/// The nftables script that makes the node's namespace hold exactly `plan`; with nothing to
/// hold, it removes the table.
pub fn ruleset(plan: &MeshPlan) -> String {
    // Declaring the table first makes the delete succeed when it is not there yet.
    let mut script = format!("table ip {TABLE}\ndelete table ip {TABLE}\n");
    if plan.ingress.is_none() && plan.ports.is_empty() {
        return script;
    }
    let _ = writeln!(script, "table ip {TABLE} {{");
    // Only what is addressed to this node; a loopback destination cannot be sent elsewhere.
    for (chain, hook) in [("prerouting", "prerouting"), ("output", "output")] {
        let _ = writeln!(
            script,
            "\tchain {chain} {{\n\t\ttype nat hook {hook} priority -100; policy accept;\n\t\tip daddr != 127.0.0.0/8 fib daddr type local jump published\n\t}}"
        );
    }
    script.push_str("\tchain published {\n");
    for port in plan.ports.iter().filter(|p| !p.backends.is_empty()) {
        let _ = writeln!(
            script,
            "\t\t{} dport {} goto {}",
            port.protocol,
            port.published,
            port_chain(port)
        );
    }
    script.push_str("\t}\n");
    for port in plan.ports.iter().filter(|p| !p.backends.is_empty()) {
        let chain = port_chain(port);
        let choices: Vec<String> = (0..port.backends.len())
            .map(|i| format!("{i} : goto {chain}-{i}"))
            .collect();
        let _ = writeln!(
            script,
            "\tchain {chain} {{\n\t\tnumgen random mod {} vmap {{ {} }}\n\t}}",
            port.backends.len(),
            choices.join(", ")
        );
        for (i, backend) in port.backends.iter().enumerate() {
            let _ = writeln!(
                script,
                "\tchain {chain}-{i} {{\n\t\tmeta l4proto {} dnat to {backend}:{}\n\t}}",
                port.protocol, port.target
            );
        }
    }
    if let Some(ingress) = &plan.ingress {
        let IngressSide {
            bridge,
            subnet,
            node_address,
            local_tasks,
        } = ingress;
        script.push_str(
            "\tchain postrouting {\n\t\ttype nat hook postrouting priority 100; policy accept;\n",
        );
        // To another node's task: from this node's own address, so that its answers come back
        // here, where the connection is tracked.
        let remote = if local_tasks.is_empty() {
            String::new()
        } else {
            let local: Vec<String> = local_tasks.iter().map(ToString::to_string).collect();
            format!("ip daddr != {{ {} }} ", local.join(", "))
        };
        let _ = writeln!(
            script,
            "\t\toifname \"{bridge}\" ct status dnat {remote}snat to {node_address}"
        );
        // From a task on the ingress network itself (hairpin).
        let _ = writeln!(
            script,
            "\t\toifname \"{bridge}\" ct status dnat ip saddr {subnet} snat to {node_address}"
        );
        script.push_str("\t}\n");
        // The node routes what comes in on the ingress bridge for the mesh's connections only:
        // tasks on the ingress network reach nothing else through it. What the bridge only
        // switches between its ports (seen here too where br_netfilter is loaded, as Docker
        // does) goes out where it came in, and is left alone.
        let routed_out = format!("iifname \"{bridge}\" oifname != \"{bridge}\"");
        let _ = writeln!(
            script,
            "\tchain forward {{\n\t\ttype filter hook forward priority 0; policy accept;\n\t\t{routed_out} ct status dnat accept\n\t\t{routed_out} ct state related accept\n\t\t{routed_out} drop\n\t}}"
        );
    }
    script.push_str("}\n");
    script
}

/// `p-tcp-8080`.
fn port_chain(port: &OpenPort) -> String {
    format!("p-{}-{}", port.protocol, port.published)
}

#[cfg(test)]
mod tests;
