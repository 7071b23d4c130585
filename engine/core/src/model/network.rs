//! Cluster networks: overlay networks that span the nodes, and what the leader allocated for
//! them (a subnet, a VXLAN id, an address per task attachment, a virtual IP per service).

use std::collections::BTreeMap;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::{word_enum, ObjectId};
use crate::time::Timestamp;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Network {
    pub id: ObjectId,
    pub version: u64,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub spec: NetworkSpec,
    /// Chosen by the leader when the network is created; never changes afterwards.
    pub allocation: NetworkAllocation,
}

word_enum! {
    /// How a network's tasks are connected. Overlay is the only cluster driver: a VXLAN
    /// segment over the nodes' own addresses.
    #[derive(Default)]
    NetworkDriver {
        #[default]
        Overlay = "overlay",
    }
}

/// What `network create` asks for.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkSpec {
    pub name: String,
    #[serde(default)]
    pub driver: NetworkDriver,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// `--subnet`; `None`: the next free one of the cluster's address pool.
    #[serde(default)]
    pub subnet: Option<Ipv4Subnet>,
    /// `--gateway`; `None`: the subnet's first address.
    #[serde(default)]
    pub gateway: Option<Ipv4Addr>,
    /// `--attachable`: standalone containers may join it too (kept for Docker's sake; essaim
    /// runs services only).
    #[serde(default)]
    pub attachable: bool,
    /// The routing mesh's network (`ingress`): the leader makes it for the first service that
    /// publishes an ingress port and puts every such service on it; every node has an address
    /// on it, the source of the connections it forwards to another node's task.
    #[serde(default)]
    pub ingress: bool,
}

/// The name of the routing mesh's network, as in Swarm.
pub const INGRESS_NETWORK: &str = "ingress";

/// A node's own address on the ingress network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IngressAddress {
    pub network_id: ObjectId,
    pub address: Ipv4Addr,
}

/// What the leader chose for a network.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAllocation {
    pub subnet: Ipv4Subnet,
    pub gateway: Ipv4Addr,
    /// The VXLAN network identifier of the network's segment: 4096 and up, as Swarm's.
    pub vxlan_id: u32,
}

/// The address pool networks' subnets come from: `swarm init --default-addr-pool`, cut into
/// subnets of `mask_length` bits (`--default-addr-pool-mask-length`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddressPool {
    pub pools: Vec<Ipv4Subnet>,
    pub mask_length: u8,
}

impl Default for AddressPool {
    /// Swarm's default: 10.0.0.0/8 in /24s.
    fn default() -> Self {
        AddressPool {
            pools: vec![Ipv4Subnet {
                address: Ipv4Addr::new(10, 0, 0, 0),
                prefix: 8,
            }],
            mask_length: 24,
        }
    }
}

impl AddressPool {
    /// The longest mask a pool may be cut into: a /29 leaves five addresses for tasks.
    pub const LONGEST_MASK: u8 = 29;

    /// Checks a pool as `swarm init` takes it.
    ///
    /// # Errors
    /// What is wrong, naming the flag.
    pub fn validate(&self) -> Result<(), String> {
        if self.pools.is_empty() {
            return Err("--default-addr-pool: at least one pool is needed".to_string());
        }
        if self.mask_length > Self::LONGEST_MASK {
            return Err(format!(
                "--default-addr-pool-mask-length: {} leaves too few addresses for tasks; at most {}",
                self.mask_length,
                Self::LONGEST_MASK
            ));
        }
        for (i, pool) in self.pools.iter().enumerate() {
            if pool.prefix > self.mask_length {
                return Err(format!(
                    "--default-addr-pool-mask-length: {} is shorter than pool {pool}'s own /{}",
                    self.mask_length, pool.prefix
                ));
            }
            if let Some(other) = self.pools[..i].iter().find(|o| o.overlaps(pool)) {
                return Err(format!("--default-addr-pool: {pool} overlaps {other}"));
            }
        }
        Ok(())
    }
}

/// A task's place on one network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachment {
    pub network_id: ObjectId,
    /// The network's name, for the names other tasks resolve.
    pub network: String,
    pub address: Ipv4Addr,
    /// Other names the task's service answers to on this network (`--network name=N,alias=A`).
    #[serde(default)]
    pub aliases: Vec<String>,
}

/// A network a service's tasks join, as `--network` says it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkAttachmentConfig {
    /// The network's name.
    pub target: String,
    #[serde(default)]
    pub aliases: Vec<String>,
}

word_enum! {
    /// How a service's name resolves: to one virtual IP that balances connections over its
    /// tasks, or to the tasks' own addresses (DNS round robin).
    #[derive(Default)]
    EndpointMode {
        #[default]
        Vip = "vip",
        Dnsrr = "dnsrr",
    }
}

/// A service's virtual IP on one of its networks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualIp {
    pub network_id: ObjectId,
    /// The network's name, for the names the DNS answers.
    pub network: String,
    pub address: Ipv4Addr,
}

/// An IPv4 subnet, `10.0.1.0/24`: the address has no bits past the prefix.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Ipv4Subnet {
    address: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Subnet {
    /// The subnet of `prefix` bits that holds `address`.
    pub fn containing(address: Ipv4Addr, prefix: u8) -> Ipv4Subnet {
        let prefix = prefix.min(32);
        Ipv4Subnet {
            address: Ipv4Addr::from(u32::from(address) & mask(prefix)),
            prefix,
        }
    }

    pub fn address(&self) -> Ipv4Addr {
        self.address
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn first(&self) -> u32 {
        u32::from(self.address)
    }

    fn last(&self) -> u32 {
        self.first() | !mask(self.prefix)
    }

    pub fn contains(&self, address: Ipv4Addr) -> bool {
        u32::from(address) & mask(self.prefix) == self.first()
    }

    /// True for an address a host may have here: not the network or broadcast address.
    pub fn is_host(&self, address: Ipv4Addr) -> bool {
        let value = u32::from(address);
        self.contains(address)
            && (self.prefix >= 31 || (value != self.first() && value != self.last()))
    }

    pub fn overlaps(&self, other: &Ipv4Subnet) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }

    /// True when `other` lies wholly inside this subnet.
    pub fn covers(&self, other: &Ipv4Subnet) -> bool {
        self.prefix <= other.prefix && self.contains(other.address)
    }

    /// The addresses a host may have: all but the network and broadcast addresses.
    pub fn hosts(&self) -> impl Iterator<Item = Ipv4Addr> {
        let (first, last) = if self.prefix >= 31 {
            (self.first(), self.last())
        } else {
            (self.first() + 1, self.last() - 1)
        };
        (first..=last).map(Ipv4Addr::from)
    }

    /// How many host addresses the subnet has.
    pub fn host_count(&self) -> u64 {
        let size = 1u64 << (32 - u32::from(self.prefix));
        if self.prefix >= 31 {
            size
        } else {
            size - 2
        }
    }

    /// The subnets of `prefix` bits inside this one, in address order.
    pub fn subnets(&self, prefix: u8) -> impl Iterator<Item = Ipv4Subnet> {
        let step = if prefix >= 32 {
            1u64
        } else {
            1u64 << (32 - u32::from(prefix))
        };
        let (first, last) = (u64::from(self.first()), u64::from(self.last()));
        let count = if prefix < self.prefix {
            0
        } else {
            (last - first + 1) / step
        };
        (0..count).map(move |i| Ipv4Subnet {
            address: Ipv4Addr::from((first + i * step) as u32),
            prefix,
        })
    }
}

fn mask(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    }
}

impl fmt::Display for Ipv4Subnet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.address, self.prefix)
    }
}

impl FromStr for Ipv4Subnet {
    type Err = String;

    /// Reads `10.0.1.0/24`. An address with bits past the prefix is refused, naming the
    /// subnet meant, as a typo is likelier than intent.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (address, prefix) = text.split_once('/').ok_or_else(|| {
            format!("{text:?} is not a subnet: expected ADDRESS/BITS, as 10.0.1.0/24")
        })?;
        let address: Ipv4Addr = address
            .parse()
            .map_err(|_| format!("{text:?} is not a subnet: {address:?} is not an IPv4 address"))?;
        let prefix: u8 =
            prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| {
                format!("{text:?} is not a subnet: the prefix must be 0 to 32 bits")
            })?;
        let subnet = Ipv4Subnet::containing(address, prefix);
        if subnet.address != address {
            return Err(format!(
                "{text:?} has bits set past its /{prefix} prefix: did you mean {subnet}?"
            ));
        }
        Ok(subnet)
    }
}

impl Serialize for Ipv4Subnet {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Ipv4Subnet {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn subnet(text: &str) -> Ipv4Subnet {
        text.parse().expect("subnet")
    }

    #[test]
    fn a_subnet_reads_and_prints_as_typed_and_refuses_stray_bits() {
        assert_eq!(subnet("10.0.1.0/24").to_string(), "10.0.1.0/24");
        let error = "10.0.1.5/24".parse::<Ipv4Subnet>().expect_err("stray bits");
        assert!(error.contains("did you mean 10.0.1.0/24"), "{error}");
        assert!("10.0.1.0".parse::<Ipv4Subnet>().is_err());
        assert!("10.0.1.0/33".parse::<Ipv4Subnet>().is_err());
        assert!("10.0.300.0/24".parse::<Ipv4Subnet>().is_err());
    }

    #[test]
    fn overlap_and_cover_follow_the_address_ranges() {
        let pool = subnet("10.0.0.0/8");
        assert!(pool.covers(&subnet("10.3.0.0/16")));
        assert!(!subnet("10.3.0.0/16").covers(&pool));
        assert!(pool.overlaps(&subnet("10.3.0.0/16")));
        assert!(!subnet("10.0.1.0/24").overlaps(&subnet("10.0.2.0/24")));
        assert!(!pool.covers(&subnet("192.168.0.0/24")));
    }

    #[test]
    fn hosts_leave_out_the_network_and_broadcast_addresses() {
        let small = subnet("10.0.1.0/29");
        let hosts: Vec<_> = small.hosts().collect();
        assert_eq!(hosts.first(), Some(&Ipv4Addr::new(10, 0, 1, 1)));
        assert_eq!(hosts.last(), Some(&Ipv4Addr::new(10, 0, 1, 6)));
        assert_eq!(hosts.len() as u64, small.host_count());
        assert!(small.hosts().all(|a| small.is_host(a)));
        assert!(!small.is_host(Ipv4Addr::new(10, 0, 1, 0)));
        assert!(!small.is_host(Ipv4Addr::new(10, 0, 1, 7)));
        assert!(!small.is_host(Ipv4Addr::new(10, 0, 2, 1)));
        assert_eq!(subnet("10.0.0.0/24").host_count(), 254);
    }

    #[test]
    fn a_pool_is_cut_into_subnets_in_order() {
        let cuts: Vec<_> = subnet("10.0.0.0/22").subnets(24).collect();
        assert_eq!(
            cuts.iter().map(ToString::to_string).collect::<Vec<_>>(),
            ["10.0.0.0/24", "10.0.1.0/24", "10.0.2.0/24", "10.0.3.0/24"]
        );
        assert_eq!(subnet("10.0.0.0/8").subnets(24).count(), 65_536);
        assert_eq!(subnet("10.0.0.0/24").subnets(16).count(), 0);
    }

    #[test]
    fn a_pool_names_the_flag_at_fault() {
        let mut pool = AddressPool::default();
        assert_eq!(pool.validate(), Ok(()));
        pool.mask_length = 30;
        assert!(pool
            .validate()
            .expect_err("too long")
            .starts_with("--default-addr-pool-mask-length"));
        pool.mask_length = 24;
        pool.pools.push(subnet("10.1.0.0/16"));
        let error = pool.validate().expect_err("overlap");
        assert!(error.contains("10.1.0.0/16 overlaps 10.0.0.0/8"), "{error}");
    }
}
