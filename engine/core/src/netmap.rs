//! What a node must know of the cluster networks to serve its tasks: for each network one of
//! its tasks is on, where every other task of that network lives (for the VXLAN forwarding
//! and neighbour entries), and which names resolve to what (for the DNS and the virtual IPs).
//! Pure: the leader's dispatcher computes it from the state and sends it to each node when it
//! changes; the node's data plane turns it into kernel state.
//!
//! A node hears only of the networks it has a task on: a network's endpoints are none of the
//! business of a node without one. The ingress network is the exception: every node with an
//! address on it hears of it, since every node takes connections on the ingress ports (the
//! routing mesh) and forwards them to the service's tasks wherever they run.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::Ipv4Addr;

use serde::{Deserialize, Serialize};

use crate::event::{Change, Event};
use crate::model::{EndpointMode, Ipv4Subnet, NodeState, ObjectId, PortConfig, Task, TaskState};
use crate::state::{AddressHolder, ClusterState};

/// One node's view of the cluster networks it has tasks on, by network id.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkMap {
    /// The node this map is for, and its own address: the source of its VXLAN packets.
    pub node_id: ObjectId,
    pub node_ip: Option<Ipv4Addr>,
    pub networks: Vec<MappedNetwork>,
    /// The routing mesh, once the cluster has an ingress network and this node an address on
    /// it; that network is then one of `networks`.
    #[serde(default)]
    pub mesh: Option<Mesh>,
    /// Every port the services of the cluster publish: a node opens the ingress ones, and the
    /// host ones of its own tasks that run on networks (in a namespace of their own).
    #[serde(default)]
    pub published: Vec<PublishedPort>,
}

/// What a node needs to take part in the routing mesh.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mesh {
    pub network_id: ObjectId,
    /// This node's own address on the ingress network: the source of the connections it
    /// sends to another node's task, so that the answers come back through it.
    pub node_address: Ipv4Addr,
    /// The other nodes' addresses on the ingress network, and where their VXLAN packets go.
    pub nodes: Vec<MeshNode>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeshNode {
    pub node_id: ObjectId,
    pub address: Ipv4Addr,
    pub node_ip: Option<Ipv4Addr>,
}

/// A port a service publishes.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishedPort {
    pub service_id: ObjectId,
    pub port: PortConfig,
}

/// A network with everything on it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MappedNetwork {
    pub id: ObjectId,
    pub name: String,
    pub vxlan_id: u32,
    pub subnet: Ipv4Subnet,
    pub gateway: Ipv4Addr,
    /// The routing mesh's network.
    #[serde(default)]
    pub ingress: bool,
    /// Every placed task with an address on the network, by address.
    pub endpoints: Vec<Endpoint>,
    /// Every service on the network, by name.
    pub services: Vec<ServiceName>,
}

/// A task's address on a network, and where the task is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub task_id: ObjectId,
    pub service_id: ObjectId,
    pub address: Ipv4Addr,
    pub node_id: ObjectId,
    /// The node's own address (the host of its advertised cluster address), where the VXLAN
    /// packets for this endpoint go; `None` when the node advertises a name, not an IPv4
    /// address.
    pub node_ip: Option<Ipv4Addr>,
    /// Running, meant to run, on a node that is not down: the DNS answers with it, and the
    /// virtual IP and the mesh send new connections to it. A task that is starting or
    /// stopping is reachable but not serving.
    pub serving: bool,
}

/// The names a service answers to on a network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceName {
    pub service_id: ObjectId,
    pub name: String,
    /// Other names of the service on this network (`--network name=N,alias=A`).
    pub aliases: Vec<String>,
    pub endpoint_mode: EndpointMode,
    /// In vip mode, once allocated.
    pub virtual_ip: Option<Ipv4Addr>,
}

impl NetworkMap {
    /// The network with this id, if the node has a task on it.
    pub fn network(&self, id: &str) -> Option<&MappedNetwork> {
        self.networks.iter().find(|n| n.id == id)
    }
}

/// Every network's map, computed once from a state, for the maps of many nodes.
#[derive(Debug, Default)]
pub struct NetworkMaps {
    networks: BTreeMap<ObjectId, MappedNetwork>,
    /// The networks each node has a task on, and the ingress network for every node with an
    /// address on it.
    by_node: HashMap<ObjectId, BTreeSet<ObjectId>>,
    node_ips: HashMap<ObjectId, Option<Ipv4Addr>>,
    /// The ingress network's id, and each node's address on it.
    ingress: Option<(ObjectId, BTreeMap<ObjectId, Ipv4Addr>)>,
    published: Vec<PublishedPort>,
}

impl NetworkMaps {
    pub fn of(state: &ClusterState) -> NetworkMaps {
        let mut maps = NetworkMaps {
            node_ips: state
                .nodes()
                .map(|n| (n.id.clone(), host_ip(&n.description.addr)))
                .collect(),
            ..NetworkMaps::default()
        };
        let down: HashSet<&str> = state
            .nodes()
            .filter(|n| n.status.state == NodeState::Down)
            .map(|n| n.id.as_str())
            .collect();
        if let Some(ingress) = state.ingress_network() {
            let addresses: BTreeMap<ObjectId, Ipv4Addr> = state
                .nodes()
                .filter_map(|n| {
                    let held = n.ingress.as_ref().filter(|i| i.network_id == ingress.id)?;
                    Some((n.id.clone(), held.address))
                })
                .collect();
            for node_id in addresses.keys() {
                maps.by_node
                    .entry(node_id.clone())
                    .or_default()
                    .insert(ingress.id.clone());
            }
            maps.ingress = Some((ingress.id.clone(), addresses));
        }
        for service in state.services() {
            for port in &service.spec.ports {
                maps.published.push(PublishedPort {
                    service_id: service.id.clone(),
                    port: *port,
                });
            }
        }
        for network in state.networks() {
            let mut endpoints: Vec<Endpoint> = state
                .address_holders(&network.id)
                .filter_map(|(address, holder)| match holder {
                    AddressHolder::Task(id) => Some((address, state.task_by_id(id)?)),
                    _ => None,
                })
                .filter_map(|(address, task)| endpoint(&maps.node_ips, &down, task, address))
                .collect();
            endpoints.sort_by_key(|e| e.address);
            for endpoint in &endpoints {
                maps.by_node
                    .entry(endpoint.node_id.clone())
                    .or_default()
                    .insert(network.id.clone());
            }
            maps.networks.insert(
                network.id.clone(),
                MappedNetwork {
                    id: network.id.clone(),
                    name: network.spec.name.clone(),
                    vxlan_id: network.allocation.vxlan_id,
                    subnet: network.allocation.subnet,
                    gateway: network.allocation.gateway,
                    ingress: network.spec.ingress,
                    endpoints,
                    services: Vec::new(),
                },
            );
        }
        for service in state.services() {
            for attachment in &service.spec.task.networks {
                let Ok(network) = state.network(&attachment.target) else {
                    continue;
                };
                let Some(mapped) = maps.networks.get_mut(&network.id) else {
                    continue;
                };
                // The ingress network carries the mesh's connections only: no names there.
                if network.spec.ingress {
                    continue;
                }
                mapped.services.push(ServiceName {
                    service_id: service.id.clone(),
                    name: service.spec.name.clone(),
                    aliases: attachment.aliases.clone(),
                    endpoint_mode: service.spec.endpoint_mode,
                    virtual_ip: service
                        .virtual_ips
                        .iter()
                        .find(|vip| vip.network_id == network.id)
                        .map(|vip| vip.address),
                });
            }
        }
        for mapped in maps.networks.values_mut() {
            mapped.services.sort_by(|a, b| a.name.cmp(&b.name));
        }
        maps
    }

    /// What `node_id` must know: the networks it has a task on.
    pub fn for_node(&self, node_id: &str) -> NetworkMap {
        let networks = self
            .by_node
            .get(node_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.networks.get(id).cloned())
            .collect();
        let mesh = self.ingress.as_ref().and_then(|(network_id, addresses)| {
            Some(Mesh {
                network_id: network_id.clone(),
                node_address: *addresses.get(node_id)?,
                nodes: addresses
                    .iter()
                    .filter(|(other, _)| other.as_str() != node_id)
                    .map(|(other, address)| MeshNode {
                        node_id: other.clone(),
                        address: *address,
                        node_ip: self.node_ips.get(other).copied().flatten(),
                    })
                    .collect(),
            })
        });
        NetworkMap {
            node_id: node_id.to_string(),
            node_ip: self.node_ips.get(node_id).copied().flatten(),
            networks,
            mesh,
            published: self.published.clone(),
        }
    }
}

/// The task as an endpoint, once it is placed and until it has stopped.
fn endpoint(
    node_ips: &HashMap<ObjectId, Option<Ipv4Addr>>,
    down: &HashSet<&str>,
    task: &Task,
    address: Ipv4Addr,
) -> Option<Endpoint> {
    let node_id = task.node_id.as_ref()?;
    if task.status.state.is_terminal() {
        return None;
    }
    Some(Endpoint {
        task_id: task.id.clone(),
        service_id: task.service_id.clone(),
        address,
        node_id: node_id.clone(),
        node_ip: node_ips.get(node_id).copied().flatten(),
        serving: task.status.state == TaskState::Running
            && task.desired_state == TaskState::Running
            && !down.contains(node_id.as_str()),
    })
}

/// The IPv4 address of `host:port`, if the host is one.
fn host_ip(addr: &str) -> Option<Ipv4Addr> {
    let host = addr.rsplit_once(':').map_or(addr, |(host, _)| host);
    host.parse().ok()
}

/// Whether a batch of changes may change some node's network map: only then are the maps
/// worth computing again. A task without networks, the bulk of the changes of a large
/// cluster, never does. (A removed task gave its addresses back when it stopped, which was a
/// change of its own.)
pub fn may_change_maps(batch: &[Event]) -> bool {
    batch.iter().any(|event| match &event.change {
        Change::Task(task) => !task.networks.is_empty(),
        Change::Service(service) => {
            !service.spec.task.networks.is_empty() || !service.spec.ports.is_empty()
        }
        Change::Network(_) | Change::NetworkRemoved { .. } | Change::ServiceRemoved { .. } => true,
        Change::Node(_) | Change::NodeRemoved { .. } => true,
        _ => false,
    })
}

#[cfg(test)]
mod tests;
