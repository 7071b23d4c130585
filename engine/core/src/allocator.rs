//! The leader's allocator: a subnet and a VXLAN id per network, an address per task on each
//! of its networks, a virtual IP per service on each of its networks. Pure decisions over
//! the state; the state checks each choice again when it applies it, so an address is never
//! held twice. Addresses come back when a task ends or is forgotten, and when a service goes.
//!
//! ```text
//!  network create ──> allocate_network: subnet (pool or --subnet), gateway, VXLAN id
//!  service create ──> check_room: every --network exists and has room for the replicas
//!  service create/update ──> ports::assign: ingress ports left out get one of 30000-32767;
//!                            an ingress port is one service's in the whole cluster
//!  each orchestration pass ──> allocate: virtual IPs in line with the specs, an address
//!                               per node on the ingress network, addresses for new
//!                               tasks; a task without them waits, saying why
//! ```

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use thiserror::Error;

use crate::command::Command;
use crate::model::{
    EndpointMode, IngressAddress, Ipv4Subnet, Network, NetworkAllocation, NetworkAttachment,
    NetworkSpec, ObjectId, Service, ServiceSpec, Task, TaskState, TaskStatus, VirtualIp,
};
use crate::orchestrator::wanted_tasks;
use crate::state::ClusterState;
use crate::time::Timestamp;

/// The first VXLAN id networks get, as in Swarm; 0 to 4095 are left to VLAN-minded users.
pub const FIRST_VXLAN_ID: u32 = 4096;
/// The last VXLAN id: the identifier has 24 bits.
pub const LAST_VXLAN_ID: u32 = (1 << 24) - 1;

/// Why a network or a service's networks cannot be had; each names the flag at fault.
#[derive(Clone, Debug, Error, PartialEq, Eq)]
pub enum AllocError {
    #[error("--subnet {subnet} is outside the cluster's address pool {pools} (swarm init --default-addr-pool sets it)")]
    SubnetOutsidePool { subnet: Ipv4Subnet, pools: String },
    #[error("--subnet {subnet} overlaps network {network}'s subnet {other}")]
    SubnetOverlaps {
        subnet: Ipv4Subnet,
        network: String,
        other: Ipv4Subnet,
    },
    #[error("--subnet {subnet} is too small: a network needs at least 2 host addresses")]
    SubnetTooSmall { subnet: Ipv4Subnet },
    #[error("no free /{mask_length} subnet is left in the address pool {pools}: remove a network, or give one with --subnet")]
    PoolExhausted { pools: String, mask_length: u8 },
    #[error("--gateway {gateway} is not a host address of subnet {subnet}")]
    GatewayOutsideSubnet {
        gateway: Ipv4Addr,
        subnet: Ipv4Subnet,
    },
    #[error("--gateway needs --subnet")]
    GatewayWithoutSubnet,
    #[error("no free VXLAN id is left")]
    NoVxlanId,
    #[error("--network: network {name:?} not found{}", .suggestion.as_ref().map(|s| format!("; did you mean {s:?}?")).unwrap_or_default())]
    UnknownNetwork {
        name: String,
        suggestion: Option<String>,
    },
    #[error("--network {network} is given twice")]
    NetworkTwice { network: String },
    #[error("--publish: port {port} is already published by service {service}")]
    PortTaken { port: String, service: String },
    #[error("--publish: no free ingress port is left in {first}-{last}", first = crate::model::INGRESS_PORTS.start(), last = crate::model::INGRESS_PORTS.end())]
    NoFreePort,
    #[error("--replicas: network {network} ({subnet}) has room for {free} more addresses, and the service needs {needed}")]
    NoRoom {
        network: String,
        subnet: Ipv4Subnet,
        free: u64,
        needed: u64,
    },
}

/// What the leader gives a new network: the `--subnet` asked for (inside the pool, clear of
/// other networks) or the pool's first free cut; the `--gateway` or the subnet's first host;
/// the lowest free VXLAN id.
///
/// # Errors
/// What is wrong with the spec, naming its flag, or the pool or VXLAN ids being used up.
pub fn allocate_network(
    state: &ClusterState,
    spec: &NetworkSpec,
) -> Result<NetworkAllocation, AllocError> {
    let pool = state
        .cluster
        .as_ref()
        .map(|c| c.address_pool.clone())
        .unwrap_or_default();
    let pools = || {
        pool.pools
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let overlapping = |subnet: &Ipv4Subnet| {
        state
            .networks()
            .find(|n| n.allocation.subnet.overlaps(subnet))
    };
    let subnet = match spec.subnet {
        Some(subnet) => {
            if !pool.pools.iter().any(|p| p.covers(&subnet)) {
                return Err(AllocError::SubnetOutsidePool {
                    subnet,
                    pools: pools(),
                });
            }
            if subnet.host_count() < 2 {
                return Err(AllocError::SubnetTooSmall { subnet });
            }
            if let Some(other) = overlapping(&subnet) {
                return Err(AllocError::SubnetOverlaps {
                    subnet,
                    network: other.spec.name.clone(),
                    other: other.allocation.subnet,
                });
            }
            subnet
        }
        None => {
            if spec.gateway.is_some() {
                return Err(AllocError::GatewayWithoutSubnet);
            }
            pool.pools
                .iter()
                .flat_map(|p| p.subnets(pool.mask_length))
                .find(|cut| overlapping(cut).is_none())
                .ok_or_else(|| AllocError::PoolExhausted {
                    pools: pools(),
                    mask_length: pool.mask_length,
                })?
        }
    };
    let gateway = match spec.gateway {
        Some(gateway) if subnet.is_host(gateway) => gateway,
        Some(gateway) => return Err(AllocError::GatewayOutsideSubnet { gateway, subnet }),
        None => subnet
            .hosts()
            .next()
            .ok_or(AllocError::SubnetTooSmall { subnet })?,
    };
    let used: HashSet<u32> = state.networks().map(|n| n.allocation.vxlan_id).collect();
    let vxlan_id = (FIRST_VXLAN_ID..=LAST_VXLAN_ID)
        .find(|id| !used.contains(id))
        .ok_or(AllocError::NoVxlanId)?;
    Ok(NetworkAllocation {
        subnet,
        gateway,
        vxlan_id,
    })
}

/// Checks a service's networks as `service create` and `service update` give them: each
/// exists, none twice, and each has room for the tasks the spec wants (and its virtual IP)
/// beyond the addresses the service already holds there. `current` is the service as it is,
/// for an update.
///
/// # Errors
/// The network at fault, by name.
pub fn check_room(
    state: &ClusterState,
    spec: &ServiceSpec,
    current: Option<&Service>,
) -> Result<(), AllocError> {
    let wanted = wanted_tasks(state, spec);
    for (i, attachment) in spec.task.networks.iter().enumerate() {
        if spec.task.networks[..i]
            .iter()
            .any(|a| a.target == attachment.target)
        {
            return Err(AllocError::NetworkTwice {
                network: attachment.target.clone(),
            });
        }
        let network = state.network_by_name(&attachment.target).ok_or_else(|| {
            AllocError::UnknownNetwork {
                name: attachment.target.clone(),
                suggestion: crate::suggest::closest(
                    &attachment.target,
                    state.networks().map(|n| n.spec.name.as_str()),
                )
                .map(str::to_string),
            }
        })?;
        let held_by_service = current.map_or(0, |service| {
            let tasks = state
                .tasks_of_service(&service.id)
                .filter(|t| !t.status.state.is_terminal())
                .filter(|t| t.networks.iter().any(|a| a.network_id == network.id))
                .count() as u64;
            let vips = service
                .virtual_ips
                .iter()
                .filter(|v| v.network_id == network.id)
                .count() as u64;
            tasks + vips
        });
        let vip = u64::from(spec.endpoint_mode == EndpointMode::Vip && !network.spec.ingress);
        let needed = (wanted + vip).saturating_sub(held_by_service);
        let free = free_addresses(state, network);
        if needed > free {
            return Err(AllocError::NoRoom {
                network: network.spec.name.clone(),
                subnet: network.allocation.subnet,
                free,
                needed,
            });
        }
    }
    Ok(())
}

/// How many addresses of the network nobody holds.
pub fn free_addresses(state: &ClusterState, network: &Network) -> u64 {
    network
        .allocation
        .subnet
        .host_count()
        .saturating_sub(state.addresses_held(&network.id) as u64)
}

/// True for a task that must have addresses before it is scheduled, and has none yet.
pub fn needs_addresses(task: &Task) -> bool {
    !task.spec.networks.is_empty()
        && task.networks.is_empty()
        && !task.status.state.is_terminal()
        && task.desired_state == TaskState::Running
}

/// One allocation pass, over the commands an orchestration pass decided and the state they
/// apply to: the services' virtual IPs brought in line with their specs, addresses for the
/// tasks being created, and for the tasks that waited for them. A task that finds no room
/// is created (or stays) pending, saying which network is full.
pub fn allocate(state: &ClusterState, now: Timestamp, commands: &mut Vec<Command>) {
    let mut book = AddressBook::new(state);
    let mut more = Vec::new();
    for service in state.services() {
        let vips = book.virtual_ips(service);
        if vips != service.virtual_ips {
            more.push(Command::SetVirtualIps {
                service_id: service.id.clone(),
                virtual_ips: vips,
            });
        }
    }
    let ingress = state.ingress_network();
    for node in state.nodes() {
        let current = node
            .ingress
            .as_ref()
            .filter(|i| ingress.is_some_and(|n| n.id == i.network_id));
        if current.is_some() {
            continue;
        }
        let given = ingress.and_then(|network| {
            Some(IngressAddress {
                network_id: network.id.clone(),
                address: book.take(network)?,
            })
        });
        if given != node.ingress {
            more.push(Command::SetNodeIngress {
                node_id: node.id.clone(),
                ingress: given,
            });
        }
    }
    let mut created: HashSet<ObjectId> = HashSet::new();
    for command in commands.iter_mut() {
        if let Command::CreateTask { task } = command {
            created.insert(task.id.clone());
            if !needs_addresses(task) {
                continue;
            }
            match book.attachments(task) {
                Ok(networks) => task.networks = networks,
                Err(why) => task.status.message = why,
            }
        }
    }
    for task in state.tasks().filter(|t| needs_addresses(t)) {
        if created.contains(&task.id) {
            continue;
        }
        match book.attachments(task) {
            Ok(networks) => more.push(Command::AttachTask {
                id: task.id.clone(),
                networks,
            }),
            Err(why) if why != task.status.message => more.push(Command::UpdateTaskStatus {
                id: task.id.clone(),
                status: TaskStatus::new(TaskState::Pending, now, why),
            }),
            Err(_) => {}
        }
    }
    commands.extend(more);
}

/// The addresses taken during one pass, on top of those the state holds.
struct AddressBook<'a> {
    state: &'a ClusterState,
    taken: HashMap<ObjectId, HashSet<Ipv4Addr>>,
    /// Where the next search starts, per network: below it, everything is held.
    cursor: HashMap<ObjectId, u32>,
}

impl<'a> AddressBook<'a> {
    fn new(state: &'a ClusterState) -> Self {
        AddressBook {
            state,
            taken: HashMap::new(),
            cursor: HashMap::new(),
        }
    }

    /// The lowest free address of the network.
    fn take(&mut self, network: &Network) -> Option<Ipv4Addr> {
        let subnet = network.allocation.subnet;
        let start = self
            .cursor
            .get(&network.id)
            .copied()
            .unwrap_or_else(|| subnet.hosts().next().map_or(u32::MAX, u32::from));
        let taken = self.taken.entry(network.id.clone()).or_default();
        let found = subnet
            .hosts()
            .skip_while(|a| u32::from(*a) < start)
            .find(|a| self.state.address_holder(&network.id, *a).is_none() && !taken.contains(a))?;
        taken.insert(found);
        self.cursor
            .insert(network.id.clone(), u32::from(found).saturating_add(1));
        Some(found)
    }

    /// The virtual IPs the service should have: the ones it has on networks it still joins
    /// in vip mode, and a new one on each other such network.
    fn virtual_ips(&mut self, service: &Service) -> Vec<VirtualIp> {
        if service.spec.endpoint_mode != EndpointMode::Vip {
            return Vec::new();
        }
        let mut vips = Vec::new();
        for attachment in &service.spec.task.networks {
            let Some(network) = self.state.network_by_name(&attachment.target) else {
                continue;
            };
            // The mesh sends to task addresses: a service has no VIP on the ingress network.
            if network.spec.ingress {
                continue;
            }
            let kept = service
                .virtual_ips
                .iter()
                .find(|v| v.network_id == network.id)
                .cloned();
            let vip = kept.or_else(|| {
                self.take(network).map(|address| VirtualIp {
                    network_id: network.id.clone(),
                    network: network.spec.name.clone(),
                    address,
                })
            });
            vips.extend(vip);
        }
        vips
    }

    /// An address on each of the task's networks, or why it cannot have them all.
    fn attachments(&mut self, task: &Task) -> Result<Vec<NetworkAttachment>, String> {
        let mut networks = Vec::new();
        for config in &task.spec.networks {
            let network = self
                .state
                .network_by_name(&config.target)
                .ok_or_else(|| format!("network {} not found", config.target))?;
            let address = self.take(network).ok_or_else(|| {
                format!(
                    "no free address on network {} ({})",
                    network.spec.name, network.allocation.subnet
                )
            })?;
            networks.push(NetworkAttachment {
                network_id: network.id.clone(),
                network: network.spec.name.clone(),
                address,
                aliases: config.aliases.clone(),
            });
        }
        Ok(networks)
    }
}

pub mod ports;

#[cfg(test)]
mod tests;
