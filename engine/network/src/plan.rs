//! What a node's kernel should hold for its overlay networks, and the changes that get it there: pure logic, no I/O.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

pub use ipnet::Ipv4Net;

/// Every device essaim creates starts with this; nothing else is ever removed.
pub const PREFIX: &str = "es-";
/// IANA's VXLAN port.
pub const VXLAN_PORT: u16 = 4789;
/// MTU of the VXLAN device and of both ends of every veth: an underlay MTU of 1500 less the 50
/// bytes of outer Ethernet, IPv4, UDP and VXLAN headers. Equal everywhere so that the bridge,
/// whose MTU is the smallest of its ports', never drops a frame a task was allowed to send.
pub const OVERLAY_MTU: u32 = 1450;

/// Everything one node's network namespace should hold for the overlay networks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodePlan {
    /// This node's address on the underlay: the VXLAN devices' source address.
    pub underlay_ip: Ipv4Addr,
    pub networks: Vec<NetworkPlan>,
}

/// One cluster network as this node sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetworkPlan {
    /// The cluster's network id; its first 12 characters name the network on devices.
    pub network_id: String,
    /// VXLAN network identifier, 4096 and up; also names the bridge and the VXLAN device.
    pub vxlan_id: u32,
    pub subnet: Ipv4Net,
    /// Held by the bridge on every node, so that tasks reach their own node there.
    pub gateway: Ipv4Addr,
    pub local_endpoints: Vec<LocalEndpoint>,
    pub remote_endpoints: Vec<RemoteEndpoint>,
    /// The other nodes' own addresses on the network (the ingress network's), held by their
    /// bridges.
    pub remote_nodes: Vec<RemoteEndpoint>,
    /// The node's own address on the network besides the gateway (the routing mesh's source
    /// address on the ingress network), held as a /32 on the bridge.
    pub node_address: Option<Ipv4Addr>,
    /// Whether the node routes what comes in on the bridge (the ingress network: answers go
    /// back to the mesh's clients). Other networks are closed: their tasks reach each other
    /// only.
    pub routed: bool,
}

/// A task on this node attached to the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalEndpoint {
    /// The task id; with the network it names the host end of the veth pair.
    pub key: String,
    pub address: Ipv4Addr,
    /// The task's network namespace, as a path: `/proc/<pid>/ns/net` or `/run/netns/<name>`.
    pub netns: PathBuf,
    /// The interface name inside the task: `eth0` for its first network, `eth1`...
    pub ifname: String,
    /// Whether the task's default route goes through this network's gateway (first network only).
    pub default_route: bool,
}

/// A task on another node attached to the network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteEndpoint {
    pub address: Ipv4Addr,
    pub node_underlay_ip: Ipv4Addr,
}

impl NetworkPlan {
    /// A network with no endpoints yet, its gateway the subnet's first address.
    pub fn new(network_id: impl Into<String>, vxlan_id: u32, subnet: Ipv4Net) -> Self {
        let subnet = subnet.trunc();
        let gateway = subnet.hosts().next().unwrap_or(subnet.network());
        NetworkPlan {
            network_id: network_id.into(),
            vxlan_id,
            subnet,
            gateway,
            local_endpoints: Vec::new(),
            remote_endpoints: Vec::new(),
            remote_nodes: Vec::new(),
            node_address: None,
            routed: false,
        }
    }

    /// The first 12 characters of the network id.
    pub fn short_id(&self) -> &str {
        match self.network_id.char_indices().nth(12) {
            Some((end, _)) => &self.network_id[..end],
            None => &self.network_id,
        }
    }

    fn gateway_net(&self) -> Ipv4Net {
        Ipv4Net::new(self.gateway, self.subnet.prefix_len())
            .expect("the prefix length comes from a valid subnet")
    }
}

/// `es-br-<vxlan id>`.
pub fn bridge_name(vxlan_id: u32) -> String {
    format!("{PREFIX}br-{vxlan_id}")
}

/// `es-vx-<vxlan id>`.
pub fn vxlan_name(vxlan_id: u32) -> String {
    format!("{PREFIX}vx-{vxlan_id}")
}

/// `es-<8 hex digits>`, from the network's short id and the task id: stable across restarts and
/// Rust versions (FNV-1a), short enough for the kernel's 15-byte names.
pub fn endpoint_name(network_short_id: &str, key: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in network_short_id
        .bytes()
        .chain(std::iter::once(b'/'))
        .chain(key.bytes())
    {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    format!("{PREFIX}{hash:08x}")
}

/// The MAC of the endpoint holding `addr`: `02:42:a:b:c:d`, Docker's convention.
pub fn mac_for(addr: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = addr.octets();
    [0x02, 0x42, a, b, c, d]
}

/// The MAC of this node's bridges: fixed, so the gateway's MAC that tasks cache does not change
/// as ports come and go (a bridge with a random MAC takes its smallest port's). `06:42` keeps it
/// locally administered and apart from the endpoints' `02:42`.
pub fn bridge_mac(underlay_ip: Ipv4Addr) -> [u8; 6] {
    let [a, b, c, d] = underlay_ip.octets();
    [0x06, 0x42, a, b, c, d]
}

/// What the node's kernel holds, as far as the overlay is concerned.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KernelState {
    /// Every link of the namespace by name, foreign ones included.
    pub links: BTreeMap<String, Link>,
    /// Static forwarding entries on the `es-` VXLAN devices.
    pub fdb: BTreeSet<FdbEntry>,
    /// Permanent neighbour entries on the `es-` VXLAN devices.
    pub neighbours: BTreeSet<NeighbourEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Link {
    pub kind: LinkKind,
    /// The bridge this link is a port of.
    pub master: Option<String>,
    pub up: bool,
    /// On an endpoint's host end, what it was configured with (see [`EndpointSpec::alias`]).
    pub alias: Option<String>,
    pub addresses: Vec<Ipv4Net>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LinkKind {
    Bridge,
    Vxlan(Vxlan),
    Veth,
    Other(String),
}

/// The VXLAN settings essaim cares about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Vxlan {
    pub id: u32,
    pub local: Option<Ipv4Addr>,
    pub port: u16,
    pub learning: bool,
    /// The kernel answers ARP from the device's neighbour table.
    pub proxy: bool,
}

impl Vxlan {
    fn wanted(id: u32, local: Ipv4Addr) -> Self {
        Vxlan {
            id,
            local: Some(local),
            port: VXLAN_PORT,
            learning: false,
            proxy: true,
        }
    }
}

/// `bridge fdb add <mac> dev <device> dst <dst> self permanent`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct FdbEntry {
    pub device: String,
    pub mac: [u8; 6],
    pub dst: Ipv4Addr,
}

/// `ip neigh add <address> lladdr <mac> dev <device> nud permanent`.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct NeighbourEntry {
    pub device: String,
    pub address: Ipv4Addr,
    pub mac: [u8; 6],
}

/// One kernel operation. [`diff`] orders them: removals first, top-down (endpoints, entries,
/// addresses, VXLAN devices, bridges), then creations bottom-up (bridges, addresses, VXLAN
/// devices, entries, endpoints).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// Deletes an `es-` link; a veth takes its peer along, a VXLAN device its entries.
    RemoveLink {
        name: String,
    },
    RemoveFdb(FdbEntry),
    RemoveNeighbour(NeighbourEntry),
    RemoveAddress {
        device: String,
        address: Ipv4Net,
    },
    /// A bridge, up, with a fixed MAC and the network's short id as its alias; the node
    /// routes what comes in on it only if `routed`.
    CreateBridge {
        name: String,
        mac: [u8; 6],
        alias: String,
        routed: bool,
    },
    SetUp {
        name: String,
    },
    AddAddress {
        device: String,
        address: Ipv4Net,
    },
    /// A VXLAN device enslaved to `bridge`, up.
    CreateVxlan {
        name: String,
        bridge: String,
        vxlan: Vxlan,
    },
    AddFdb(FdbEntry),
    AddNeighbour(NeighbourEntry),
    CreateEndpoint(EndpointSpec),
}

/// A veth pair for a local task, everything it is configured with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndpointSpec {
    /// The host end, enslaved to `bridge`.
    pub host_name: String,
    pub bridge: String,
    pub netns: PathBuf,
    /// The task's end, inside `netns`.
    pub ifname: String,
    pub mac: [u8; 6],
    /// The task's address with the subnet's prefix length.
    pub address: Ipv4Net,
    /// The default route's next hop, where the task's default route goes through this network.
    pub gateway: Option<Ipv4Addr>,
    /// Set on the host end, with the link brought up, as the last step: an endpoint whose host
    /// end is down or carries another alias is half-made or stale, and is made again. The task's
    /// end cannot be seen from the node's namespace; the alias stands for it.
    pub alias: String,
}

impl EndpointSpec {
    fn new(network: &NetworkPlan, endpoint: &LocalEndpoint) -> Self {
        let address = Ipv4Net::new(endpoint.address, network.subnet.prefix_len())
            .expect("the prefix length comes from a valid subnet");
        let gateway = endpoint.default_route.then_some(network.gateway);
        let route = match gateway {
            Some(gateway) => format!(" via {gateway}"),
            None => String::new(),
        };
        EndpointSpec {
            host_name: endpoint_name(network.short_id(), &endpoint.key),
            bridge: bridge_name(network.vxlan_id),
            netns: endpoint.netns.clone(),
            ifname: endpoint.ifname.clone(),
            mac: mac_for(endpoint.address),
            address,
            gateway,
            alias: format!(
                "essaim {} {address}{route} in {}",
                endpoint.ifname,
                endpoint.netns.display()
            ),
        }
    }
}

fn owned(name: &str) -> bool {
    name.starts_with(PREFIX)
}

/// Changes in the order they must be applied.
#[derive(Default)]
struct Ordered {
    remove_endpoints: Vec<Change>,
    remove_entries: Vec<Change>,
    remove_addresses: Vec<Change>,
    remove_vxlans: Vec<Change>,
    remove_bridges: Vec<Change>,
    create_bridges: Vec<Change>,
    addresses: Vec<Change>,
    create_vxlans: Vec<Change>,
    add_entries: Vec<Change>,
    create_endpoints: Vec<Change>,
}

impl Ordered {
    fn remove_link(&mut self, name: &str, kind: &LinkKind) {
        let change = Change::RemoveLink {
            name: name.to_string(),
        };
        match kind {
            LinkKind::Bridge => self.remove_bridges.push(change),
            LinkKind::Vxlan(_) => self.remove_vxlans.push(change),
            LinkKind::Veth | LinkKind::Other(_) => self.remove_endpoints.push(change),
        }
    }

    fn into_vec(self) -> Vec<Change> {
        [
            self.remove_endpoints,
            self.remove_entries,
            self.remove_addresses,
            self.remove_vxlans,
            self.remove_bridges,
            self.create_bridges,
            self.addresses,
            self.create_vxlans,
            self.add_entries,
            self.create_endpoints,
        ]
        .into_iter()
        .flatten()
        .collect()
    }
}

/// The kernel operations that turn `present` into what `wanted` describes.
///
/// A device whose kind or settings differ is removed and made again, with what depends on it (a
/// VXLAN device's entries, a bridge's ports); one that is only down is brought up. Only `es-`
/// devices are ever removed, and entries and addresses only on them.
pub fn diff(wanted: &NodePlan, present: &KernelState) -> Vec<Change> {
    let mut out = Ordered::default();
    let mut claimed: BTreeSet<String> = BTreeSet::new();
    let mut kept_vxlans: BTreeSet<String> = BTreeSet::new();
    let mut wanted_fdb: BTreeSet<FdbEntry> = BTreeSet::new();
    let mut wanted_neighbours: BTreeSet<NeighbourEntry> = BTreeSet::new();

    for network in &wanted.networks {
        let bridge = bridge_name(network.vxlan_id);
        let vxlan = vxlan_name(network.vxlan_id);
        claimed.insert(bridge.clone());
        claimed.insert(vxlan.clone());

        // The bridge, and the gateway on it.
        let bridge_kept = match present.links.get(&bridge) {
            Some(link) if link.kind == LinkKind::Bridge => {
                if !link.up {
                    out.create_bridges.push(Change::SetUp {
                        name: bridge.clone(),
                    });
                }
                true
            }
            Some(link) => {
                out.remove_link(&bridge, &link.kind);
                false
            }
            None => false,
        };
        if !bridge_kept {
            out.create_bridges.push(Change::CreateBridge {
                name: bridge.clone(),
                mac: bridge_mac(wanted.underlay_ip),
                alias: format!("essaim network {}", network.short_id()),
                routed: network.routed,
            });
        }
        let mut wanted_addresses = vec![network.gateway_net()];
        wanted_addresses.extend(
            network
                .node_address
                .map(|a| Ipv4Net::new(a, 32).expect("32 is a valid prefix length")),
        );
        let present_addresses = match present.links.get(&bridge) {
            Some(link) if bridge_kept => link.addresses.as_slice(),
            _ => &[],
        };
        for address in present_addresses
            .iter()
            .filter(|a| !wanted_addresses.contains(a))
        {
            out.remove_addresses.push(Change::RemoveAddress {
                device: bridge.clone(),
                address: *address,
            });
        }
        for address in wanted_addresses
            .into_iter()
            .filter(|a| !present_addresses.contains(a))
        {
            out.addresses.push(Change::AddAddress {
                device: bridge.clone(),
                address,
            });
        }

        // The VXLAN device; its entries go with it when it is made again.
        let settings = Vxlan::wanted(network.vxlan_id, wanted.underlay_ip);
        let vxlan_kept = match present.links.get(&vxlan) {
            Some(link)
                if bridge_kept
                    && link.kind == LinkKind::Vxlan(settings.clone())
                    && link.master.as_deref() == Some(bridge.as_str()) =>
            {
                if !link.up {
                    out.create_vxlans.push(Change::SetUp {
                        name: vxlan.clone(),
                    });
                }
                true
            }
            Some(link) => {
                out.remove_link(&vxlan, &link.kind);
                false
            }
            None => false,
        };
        if vxlan_kept {
            kept_vxlans.insert(vxlan.clone());
        } else {
            out.create_vxlans.push(Change::CreateVxlan {
                name: vxlan.clone(),
                bridge: bridge.clone(),
                vxlan: settings,
            });
        }
        let tasks = network
            .remote_endpoints
            .iter()
            .map(|remote| (remote, mac_for(remote.address)));
        // A node's own address is on its bridge, which answers to the bridge's MAC.
        let nodes = network
            .remote_nodes
            .iter()
            .map(|remote| (remote, bridge_mac(remote.node_underlay_ip)));
        for (remote, mac) in tasks.chain(nodes) {
            wanted_fdb.insert(FdbEntry {
                device: vxlan.clone(),
                mac,
                dst: remote.node_underlay_ip,
            });
            wanted_neighbours.insert(NeighbourEntry {
                device: vxlan.clone(),
                address: remote.address,
                mac,
            });
        }

        // The local endpoints.
        for endpoint in &network.local_endpoints {
            let spec = EndpointSpec::new(network, endpoint);
            claimed.insert(spec.host_name.clone());
            let kept = match present.links.get(&spec.host_name) {
                Some(link)
                    if bridge_kept
                        && link.kind == LinkKind::Veth
                        && link.master.as_deref() == Some(bridge.as_str())
                        && link.up
                        && link.alias.as_deref() == Some(spec.alias.as_str()) =>
                {
                    true
                }
                Some(link) => {
                    out.remove_link(&spec.host_name, &link.kind);
                    false
                }
                None => false,
            };
            if !kept {
                out.create_endpoints.push(Change::CreateEndpoint(spec));
            }
        }
    }

    // Entries: those of a VXLAN device made again are gone with it.
    for entry in present
        .fdb
        .iter()
        .filter(|e| kept_vxlans.contains(&e.device) && !wanted_fdb.contains(*e))
    {
        out.remove_entries.push(Change::RemoveFdb(entry.clone()));
    }
    for entry in present
        .neighbours
        .iter()
        .filter(|e| kept_vxlans.contains(&e.device) && !wanted_neighbours.contains(*e))
    {
        out.remove_entries
            .push(Change::RemoveNeighbour(entry.clone()));
    }
    for entry in wanted_fdb
        .into_iter()
        .filter(|e| !kept_vxlans.contains(&e.device) || !present.fdb.contains(e))
    {
        out.add_entries.push(Change::AddFdb(entry));
    }
    for entry in wanted_neighbours
        .into_iter()
        .filter(|e| !kept_vxlans.contains(&e.device) || !present.neighbours.contains(e))
    {
        out.add_entries.push(Change::AddNeighbour(entry));
    }

    // Whatever of ours no network wants.
    for (name, link) in &present.links {
        if owned(name) && !claimed.contains(name) {
            out.remove_link(name, &link.kind);
        }
    }
    out.into_vec()
}

impl KernelState {
    /// What the kernel does for `change`: the model that unit tests and simulated nodes use.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::RemoveLink { name } => {
                self.links.remove(name);
                self.fdb.retain(|e| e.device != *name);
                self.neighbours.retain(|e| e.device != *name);
                for link in self.links.values_mut() {
                    if link.master.as_deref() == Some(name.as_str()) {
                        link.master = None;
                    }
                }
            }
            Change::RemoveFdb(entry) => {
                self.fdb.remove(entry);
            }
            Change::RemoveNeighbour(entry) => {
                self.neighbours.remove(entry);
            }
            Change::RemoveAddress { device, address } => {
                if let Some(link) = self.links.get_mut(device) {
                    link.addresses.retain(|a| a != address);
                }
            }
            Change::CreateBridge { name, alias, .. } => {
                self.links.insert(
                    name.clone(),
                    Link {
                        kind: LinkKind::Bridge,
                        master: None,
                        up: true,
                        alias: Some(alias.clone()),
                        addresses: Vec::new(),
                    },
                );
            }
            Change::SetUp { name } => {
                if let Some(link) = self.links.get_mut(name) {
                    link.up = true;
                }
            }
            Change::AddAddress { device, address } => {
                if let Some(link) = self.links.get_mut(device) {
                    link.addresses.push(*address);
                }
            }
            Change::CreateVxlan {
                name,
                bridge,
                vxlan,
            } => {
                self.links.insert(
                    name.clone(),
                    Link {
                        kind: LinkKind::Vxlan(vxlan.clone()),
                        master: Some(bridge.clone()),
                        up: true,
                        alias: None,
                        addresses: Vec::new(),
                    },
                );
            }
            Change::AddFdb(entry) => {
                self.fdb.insert(entry.clone());
            }
            Change::AddNeighbour(entry) => {
                self.neighbours.insert(entry.clone());
            }
            Change::CreateEndpoint(spec) => {
                self.links.insert(
                    spec.host_name.clone(),
                    Link {
                        kind: LinkKind::Veth,
                        master: Some(spec.bridge.clone()),
                        up: true,
                        alias: Some(spec.alias.clone()),
                        addresses: Vec::new(),
                    },
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H1: Ipv4Addr = Ipv4Addr::new(192, 168, 250, 1);
    const H2: Ipv4Addr = Ipv4Addr::new(192, 168, 250, 2);

    fn network(vxlan_id: u32, third: u8) -> NetworkPlan {
        let subnet = Ipv4Net::new(Ipv4Addr::new(10, 0, third, 0), 24).unwrap();
        let mut network =
            NetworkPlan::new(format!("net{vxlan_id}abcdefghijklmnop"), vxlan_id, subnet);
        network.local_endpoints.push(LocalEndpoint {
            key: format!("task-a-{vxlan_id}"),
            address: Ipv4Addr::new(10, 0, third, 2),
            netns: PathBuf::from("/run/netns/task-a"),
            ifname: "eth0".into(),
            default_route: true,
        });
        network.remote_endpoints.push(RemoteEndpoint {
            address: Ipv4Addr::new(10, 0, third, 3),
            node_underlay_ip: H2,
        });
        network.remote_endpoints.push(RemoteEndpoint {
            address: Ipv4Addr::new(10, 0, third, 4),
            node_underlay_ip: H2,
        });
        network
    }

    fn plan() -> NodePlan {
        NodePlan {
            underlay_ip: H1,
            networks: vec![network(4100, 1), network(4101, 2)],
        }
    }

    fn applied(mut state: KernelState, changes: &[Change]) -> KernelState {
        for change in changes {
            state.apply(change);
        }
        state
    }

    fn foreign(state: &mut KernelState) {
        for (name, kind) in [
            ("eth0", LinkKind::Other("device".into())),
            ("docker0", LinkKind::Bridge),
            ("vxlan7", LinkKind::Vxlan(Vxlan::wanted(7, H1))),
        ] {
            state.links.insert(
                name.into(),
                Link {
                    kind,
                    master: None,
                    up: true,
                    alias: None,
                    addresses: vec![],
                },
            );
        }
    }

    #[test]
    fn empty_to_full_plan_creates_everything_once_bottom_up() {
        let changes = diff(&plan(), &KernelState::default());
        let count = |f: fn(&Change) -> bool| changes.iter().filter(|c| f(c)).count();
        assert_eq!(count(|c| matches!(c, Change::CreateBridge { .. })), 2);
        assert_eq!(count(|c| matches!(c, Change::AddAddress { .. })), 2);
        assert_eq!(count(|c| matches!(c, Change::CreateVxlan { .. })), 2);
        assert_eq!(count(|c| matches!(c, Change::AddFdb(_))), 4);
        assert_eq!(count(|c| matches!(c, Change::AddNeighbour(_))), 4);
        assert_eq!(count(|c| matches!(c, Change::CreateEndpoint(_))), 2);
        assert_eq!(changes.len(), 16);

        let rank = |c: &Change| match c {
            Change::CreateBridge { .. } => 0,
            Change::AddAddress { .. } => 1,
            Change::CreateVxlan { .. } => 2,
            Change::AddFdb(_) | Change::AddNeighbour(_) => 3,
            Change::CreateEndpoint(_) => 4,
            other => panic!("unexpected {other:?}"),
        };
        assert!(changes.windows(2).all(|w| rank(&w[0]) <= rank(&w[1])));

        let Some(Change::CreateVxlan {
            name,
            bridge,
            vxlan,
        }) = changes
            .iter()
            .find(|c| matches!(c, Change::CreateVxlan { .. }))
        else {
            unreachable!()
        };
        assert_eq!(
            (name.as_str(), bridge.as_str()),
            ("es-vx-4100", "es-br-4100")
        );
        assert_eq!(*vxlan, Vxlan::wanted(4100, H1));
        assert!(changes.contains(&Change::AddAddress {
            device: "es-br-4100".into(),
            address: "10.0.1.1/24".parse().unwrap(),
        }));
        assert!(changes.contains(&Change::AddNeighbour(NeighbourEntry {
            device: "es-vx-4100".into(),
            address: Ipv4Addr::new(10, 0, 1, 3),
            mac: [0x02, 0x42, 10, 0, 1, 3],
        })));
    }

    #[test]
    fn the_same_plan_on_what_it_produced_changes_nothing() {
        let mut start = KernelState::default();
        foreign(&mut start);
        let state = applied(start, &diff(&plan(), &KernelState::default()));
        assert_eq!(diff(&plan(), &state), vec![]);
    }

    #[test]
    fn a_removed_remote_endpoint_removes_exactly_its_fdb_and_neighbour_entries() {
        let state = applied(
            KernelState::default(),
            &diff(&plan(), &KernelState::default()),
        );
        let mut smaller = plan();
        let gone = smaller.networks[1].remote_endpoints.remove(0);
        let changes = diff(&smaller, &state);
        let mac = mac_for(gone.address);
        assert_eq!(
            changes,
            vec![
                Change::RemoveFdb(FdbEntry {
                    device: "es-vx-4101".into(),
                    mac,
                    dst: H2
                }),
                Change::RemoveNeighbour(NeighbourEntry {
                    device: "es-vx-4101".into(),
                    address: gone.address,
                    mac
                }),
            ]
        );
        assert_eq!(diff(&smaller, &applied(state, &changes)), vec![]);
    }

    #[test]
    fn a_removed_network_removes_its_devices_top_down() {
        let state = applied(
            KernelState::default(),
            &diff(&plan(), &KernelState::default()),
        );
        let mut smaller = plan();
        let gone = smaller.networks.remove(1);
        let changes = diff(&smaller, &state);
        assert_eq!(
            changes,
            vec![
                Change::RemoveLink {
                    name: endpoint_name(gone.short_id(), &gone.local_endpoints[0].key)
                },
                Change::RemoveLink {
                    name: "es-vx-4101".into()
                },
                Change::RemoveLink {
                    name: "es-br-4101".into()
                },
            ]
        );
        assert_eq!(diff(&smaller, &applied(state, &changes)), vec![]);
    }

    #[test]
    fn foreign_links_are_never_removed() {
        let mut state = applied(
            KernelState::default(),
            &diff(&plan(), &KernelState::default()),
        );
        foreign(&mut state);
        let empty = NodePlan {
            underlay_ip: H1,
            networks: vec![],
        };
        let changes = diff(&empty, &state);
        assert_eq!(changes.len(), 6, "{changes:?}");
        for change in &changes {
            let Change::RemoveLink { name } = change else {
                panic!("unexpected {change:?}");
            };
            assert!(name.starts_with(PREFIX), "{name}");
        }
        let left = applied(state, &changes);
        let names: Vec<&str> = left.links.keys().map(String::as_str).collect();
        assert_eq!(names, ["docker0", "eth0", "vxlan7"]);
    }

    #[test]
    fn a_changed_underlay_address_makes_the_vxlan_device_and_its_entries_again() {
        let state = applied(
            KernelState::default(),
            &diff(&plan(), &KernelState::default()),
        );
        let mut moved = plan();
        moved.underlay_ip = Ipv4Addr::new(192, 168, 250, 9);
        moved.networks.truncate(1);
        let changes = diff(&moved, &state);
        assert!(changes.contains(&Change::RemoveLink {
            name: "es-vx-4100".into()
        }));
        assert!(!changes
            .iter()
            .any(|c| matches!(c, Change::RemoveFdb(_) | Change::RemoveNeighbour(_))));
        assert_eq!(
            changes
                .iter()
                .filter(|c| matches!(c, Change::AddFdb(_) | Change::AddNeighbour(_)))
                .count(),
            4
        );
        assert_eq!(diff(&moved, &applied(state, &changes)), vec![]);
    }

    #[test]
    fn a_half_made_endpoint_is_made_again() {
        let mut state = applied(
            KernelState::default(),
            &diff(&plan(), &KernelState::default()),
        );
        let name = endpoint_name(plan().networks[0].short_id(), "task-a-4100");
        state.links.get_mut(&name).unwrap().up = false;
        let changes = diff(&plan(), &state);
        assert!(matches!(
            changes.as_slice(),
            [Change::RemoveLink { name: removed }, Change::CreateEndpoint(spec)]
                if *removed == name && spec.host_name == name
        ));
    }

    #[test]
    fn names_fit_the_kernel_and_macs_follow_docker() {
        let name = endpoint_name("0123456789ab", "task-with-a-long-id");
        assert_eq!(name.len(), 11);
        assert_eq!(name, endpoint_name("0123456789ab", "task-with-a-long-id"));
        assert_ne!(name, endpoint_name("0123456789ac", "task-with-a-long-id"));
        assert!(bridge_name(16_777_215).len() <= 15);
        assert_eq!(
            mac_for(Ipv4Addr::new(10, 0, 1, 2)),
            [0x02, 0x42, 0x0a, 0x00, 0x01, 0x02]
        );
        let network = NetworkPlan::new("abcdefghijklmnopq", 4096, "10.0.1.7/24".parse().unwrap());
        assert_eq!(network.gateway, Ipv4Addr::new(10, 0, 1, 1));
        assert_eq!(network.short_id(), "abcdefghijkl");
    }

    #[test]
    fn the_ingress_network_holds_the_node_s_address_and_reaches_the_other_nodes_bridges() {
        let mut network = network(4100, 1);
        network.node_address = Some(Ipv4Addr::new(10, 0, 1, 200));
        network.routed = true;
        network.remote_nodes.push(RemoteEndpoint {
            address: Ipv4Addr::new(10, 0, 1, 201),
            node_underlay_ip: H2,
        });
        let wanted = NodePlan {
            underlay_ip: H1,
            networks: vec![network],
        };
        let changes = diff(&wanted, &KernelState::default());
        assert!(changes.contains(&Change::AddAddress {
            device: bridge_name(4100),
            address: "10.0.1.200/32".parse().unwrap(),
        }));
        assert!(changes
            .iter()
            .any(|c| matches!(c, Change::CreateBridge { routed: true, .. })));
        // Another node's address answers with that node's bridge MAC, not a task's.
        let mac = bridge_mac(H2);
        assert!(changes.contains(&Change::AddNeighbour(NeighbourEntry {
            device: vxlan_name(4100),
            address: Ipv4Addr::new(10, 0, 1, 201),
            mac,
        })));
        assert!(changes.contains(&Change::AddFdb(FdbEntry {
            device: vxlan_name(4100),
            mac,
            dst: H2,
        })));
        let after = applied(KernelState::default(), &changes);
        assert!(
            diff(&wanted, &after).is_empty(),
            "a second pass changes nothing"
        );
    }
}
