//! The network rules: names, subnets and VXLAN ids are never shared, an address has one holder
//! at a time (the gateway, a live task, or a service's virtual IP), and a network in use
//! cannot go. What the allocator chose is checked here again, so that no decision taken on an
//! older read ever hands an address out twice.

use std::net::Ipv4Addr;

use crate::error::{LookupError, StateError};
use crate::event::Change;
use crate::model::{
    IngressAddress, Kind, Network, NetworkAttachment, Node, ObjectId, Service, Task, VirtualIp,
};

use super::{pick_one, ClusterState, Indexes};

/// Who holds an address on a network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AddressHolder {
    Gateway,
    Task(ObjectId),
    /// A service's virtual IP.
    Service(ObjectId),
    /// A node's address on the ingress network.
    Node(ObjectId),
}

impl ClusterState {
    pub fn networks(&self) -> impl Iterator<Item = &Network> {
        self.networks.values()
    }

    pub fn network_by_id(&self, id: &str) -> Option<&Network> {
        self.networks.get(id)
    }

    /// The network named exactly `name`.
    pub fn network_by_name(&self, name: &str) -> Option<&Network> {
        self.index
            .network_by_name
            .get(name)
            .and_then(|id| self.networks.get(id))
    }

    /// Finds a network by name, full ID or unambiguous ID prefix.
    ///
    /// # Errors
    /// Not found, or an ID prefix shared by several networks.
    pub fn network(&self, name: &str) -> Result<&Network, LookupError> {
        if let Some(network) = self
            .network_by_name(name)
            .or_else(|| self.networks.get(name))
        {
            return Ok(network);
        }
        pick_one(
            Kind::Network,
            name,
            self.networks.values().filter(|n| n.id.starts_with(name)),
            |n| format!("{} ({})", n.id, n.spec.name),
            self.networks.values().map(|n| n.spec.name.as_str()),
        )
    }

    /// Who holds `address` on the network, if anyone.
    pub fn address_holder(&self, network_id: &str, address: Ipv4Addr) -> Option<&AddressHolder> {
        self.index.addresses.get(network_id)?.get(&address)
    }

    /// Every address held on the network, with its holder, in no order.
    pub fn address_holders<'a>(
        &'a self,
        network_id: &str,
    ) -> impl Iterator<Item = (Ipv4Addr, &'a AddressHolder)> + 'a {
        self.index
            .addresses
            .get(network_id)
            .into_iter()
            .flatten()
            .map(|(address, holder)| (*address, holder))
    }

    /// How many addresses of the network are held, the gateway's included.
    pub fn addresses_held(&self, network_id: &str) -> usize {
        self.index
            .addresses
            .get(network_id)
            .map_or(0, imbl::HashMap::len)
    }

    /// What keeps the network from going: the services that name it, and the tasks and
    /// virtual IPs that still hold addresses on it (of services removed meanwhile).
    pub fn network_users(&self, network: &Network) -> Vec<String> {
        let mut users: Vec<String> = self
            .services
            .values()
            .filter(|s| {
                s.spec
                    .task
                    .networks
                    .iter()
                    .any(|n| n.target == network.spec.name)
            })
            .map(|s| format!("service {}", s.spec.name))
            .collect();
        let mut tasks: Vec<String> = self
            .index
            .addresses
            .get(&network.id)
            .into_iter()
            .flatten()
            .filter_map(|(_, holder)| match holder {
                AddressHolder::Task(id) => self.tasks.get(id),
                _ => None,
            })
            .filter(|t| !self.services.contains_key(&t.service_id))
            .map(|t| format!("task {} (stopping)", t.name(&t.service_name)))
            .collect();
        tasks.sort();
        users.extend(tasks);
        users
    }

    pub(super) fn create_network(
        &mut self,
        network: Network,
        emit: &mut impl FnMut(Change),
    ) -> Result<(), StateError> {
        let taken = |kind_of: &str| StateError::AlreadyExists {
            kind: Kind::Network,
            name: kind_of.to_string(),
        };
        if self.networks.contains_key(&network.id) {
            return Err(taken(&network.id));
        }
        if self.index.network_by_name.contains_key(&network.spec.name) {
            return Err(taken(&network.spec.name));
        }
        let allocation = &network.allocation;
        for other in self.networks.values() {
            if other.allocation.subnet.overlaps(&allocation.subnet) {
                return Err(StateError::Invalid(format!(
                    "subnet {} overlaps network {}'s {}",
                    allocation.subnet, other.spec.name, other.allocation.subnet
                )));
            }
            if other.allocation.vxlan_id == allocation.vxlan_id {
                return Err(StateError::Invalid(format!(
                    "VXLAN id {} is network {}'s",
                    allocation.vxlan_id, other.spec.name
                )));
            }
        }
        if !allocation.subnet.is_host(allocation.gateway) {
            return Err(StateError::Invalid(format!(
                "gateway {} is not a host address of subnet {}",
                allocation.gateway, allocation.subnet
            )));
        }
        index_network(&mut self.index, &network);
        emit(Change::Network(network.clone()));
        self.networks.insert(network.id.clone(), network);
        Ok(())
    }

    pub(super) fn remove_network(
        &mut self,
        id: &str,
        emit: &mut impl FnMut(Change),
    ) -> Result<(), StateError> {
        let network = self.networks.get(id).ok_or_else(|| StateError::NotFound {
            kind: Kind::Network,
            id: id.to_string(),
        })?;
        let users = self.network_users(network);
        if !users.is_empty() {
            return Err(StateError::NetworkInUse {
                network: network.spec.name.clone(),
                users,
            });
        }
        let name = network.spec.name.clone();
        self.networks.remove(id);
        self.index.network_by_name.remove(&name);
        self.index.addresses.remove(id);
        emit(Change::NetworkRemoved { id: id.to_string() });
        Ok(())
    }

    /// Checks that every network a service names exists.
    pub(super) fn check_service_networks(&self, service: &Service) -> Result<(), StateError> {
        for attachment in &service.spec.task.networks {
            if !self.index.network_by_name.contains_key(&attachment.target) {
                return Err(StateError::NotFound {
                    kind: Kind::Network,
                    id: attachment.target.clone(),
                });
            }
        }
        Ok(())
    }

    /// Holds a live task's addresses, all or none.
    pub(super) fn hold_task_addresses(&mut self, task: &Task) -> Result<(), StateError> {
        let holder = AddressHolder::Task(task.id.clone());
        let wanted: Vec<(&str, Ipv4Addr)> = task
            .networks
            .iter()
            .map(|a: &NetworkAttachment| (a.network_id.as_str(), a.address))
            .collect();
        self.hold(&wanted, &holder)
    }

    pub(super) fn release_task_addresses(&mut self, task: &Task) {
        let holder = AddressHolder::Task(task.id.clone());
        for attachment in &task.networks {
            release(
                &mut self.index,
                &attachment.network_id,
                attachment.address,
                &holder,
            );
        }
    }

    /// Holds a service's virtual IPs in place of `previous`, all or none.
    pub(super) fn hold_virtual_ips(
        &mut self,
        service_id: &str,
        previous: &[VirtualIp],
        vips: &[VirtualIp],
    ) -> Result<(), StateError> {
        let holder = AddressHolder::Service(service_id.to_string());
        let wanted: Vec<(&str, Ipv4Addr)> = vips
            .iter()
            .map(|v| (v.network_id.as_str(), v.address))
            .collect();
        self.check_free(&wanted, &holder)?;
        self.release_virtual_ips(service_id, previous);
        self.hold(&wanted, &holder)
    }

    /// Holds a node's ingress address in place of the one it had.
    pub(super) fn set_node_ingress(
        &mut self,
        node_id: &str,
        ingress: Option<&IngressAddress>,
    ) -> Result<(), StateError> {
        let holder = AddressHolder::Node(node_id.to_string());
        let wanted: Vec<(&str, Ipv4Addr)> = ingress
            .iter()
            .map(|i| (i.network_id.as_str(), i.address))
            .collect();
        self.check_free(&wanted, &holder)?;
        self.release_node_ingress(node_id);
        self.hold(&wanted, &holder)
    }

    pub(super) fn release_node_ingress(&mut self, node_id: &str) {
        let holder = AddressHolder::Node(node_id.to_string());
        if let Some(ingress) = self.nodes.get(node_id).and_then(|n| n.ingress.clone()) {
            release(
                &mut self.index,
                &ingress.network_id,
                ingress.address,
                &holder,
            );
        }
    }

    /// The ingress network, if the cluster has one.
    pub fn ingress_network(&self) -> Option<&Network> {
        self.networks.values().find(|n| n.spec.ingress)
    }

    pub(super) fn release_virtual_ips(&mut self, service_id: &str, vips: &[VirtualIp]) {
        let holder = AddressHolder::Service(service_id.to_string());
        for vip in vips {
            release(&mut self.index, &vip.network_id, vip.address, &holder);
        }
    }

    fn check_free(
        &self,
        wanted: &[(&str, Ipv4Addr)],
        holder: &AddressHolder,
    ) -> Result<(), StateError> {
        for (i, (network_id, address)) in wanted.iter().enumerate() {
            let network = self
                .networks
                .get(network_id)
                .ok_or_else(|| StateError::NotFound {
                    kind: Kind::Network,
                    id: network_id.to_string(),
                })?;
            let subnet = network.allocation.subnet;
            if !subnet.is_host(*address) {
                return Err(StateError::Invalid(format!(
                    "address {address} is not a host address of network {}'s {subnet}",
                    network.spec.name
                )));
            }
            if wanted[..i].contains(&(*network_id, *address)) {
                return Err(StateError::Invalid(format!(
                    "address {address} on network {} is asked for twice",
                    network.spec.name
                )));
            }
            if self
                .address_holder(network_id, *address)
                .is_some_and(|other| other != holder)
            {
                return Err(StateError::Invalid(format!(
                    "address {address} on network {} is taken",
                    network.spec.name
                )));
            }
        }
        Ok(())
    }

    fn hold(
        &mut self,
        wanted: &[(&str, Ipv4Addr)],
        holder: &AddressHolder,
    ) -> Result<(), StateError> {
        self.check_free(wanted, holder)?;
        for (network_id, address) in wanted {
            self.index
                .addresses
                .entry(network_id.to_string())
                .or_default()
                .insert(*address, holder.clone());
        }
        Ok(())
    }
}

fn release(index: &mut Indexes, network_id: &str, address: Ipv4Addr, holder: &AddressHolder) {
    if let Some(held) = index.addresses.get_mut(network_id) {
        if held.get(&address) == Some(holder) {
            held.remove(&address);
        }
    }
}

pub(super) fn index_network(index: &mut Indexes, network: &Network) {
    index
        .network_by_name
        .insert(network.spec.name.clone(), network.id.clone());
    index
        .addresses
        .entry(network.id.clone())
        .or_default()
        .insert(network.allocation.gateway, AddressHolder::Gateway);
}

/// Re-holds, after a snapshot is loaded, what live tasks, services and nodes hold.
pub(super) fn index_addresses(
    index: &mut Indexes,
    tasks: &[&Task],
    services: &[&Service],
    nodes: &[&Node],
) {
    for node in nodes {
        if let Some(ingress) = &node.ingress {
            index
                .addresses
                .entry(ingress.network_id.clone())
                .or_default()
                .insert(ingress.address, AddressHolder::Node(node.id.clone()));
        }
    }
    for task in tasks.iter().filter(|t| !t.status.state.is_terminal()) {
        for attachment in &task.networks {
            index
                .addresses
                .entry(attachment.network_id.clone())
                .or_default()
                .insert(attachment.address, AddressHolder::Task(task.id.clone()));
        }
    }
    for service in services {
        for vip in &service.virtual_ips {
            index
                .addresses
                .entry(vip.network_id.clone())
                .or_default()
                .insert(vip.address, AddressHolder::Service(service.id.clone()));
        }
    }
}
