//! The netlink side: reads a namespace's links and entries into a [`KernelState`] and applies
//! [`Change`]s to it.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io;
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use nix::errno::Errno;
use rtnetlink::packet_route::address::AddressAttribute;
use rtnetlink::packet_route::link::{
    InfoData, InfoKind, InfoVeth, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use rtnetlink::packet_route::neighbour::{
    NeighbourAddress, NeighbourAttribute, NeighbourFlags, NeighbourMessage, NeighbourState,
};
use rtnetlink::packet_route::AddressFamily;
use rtnetlink::{
    AddressMessageBuilder, Handle, LinkBridge, LinkUnspec, LinkVeth, LinkVxlan, RouteMessageBuilder,
};

use crate::netns::{self, NetnsError};
use crate::plan::{
    Change, EndpointSpec, FdbEntry, KernelState, Link, LinkKind, NeighbourEntry, Vxlan,
    OVERLAY_MTU, PREFIX,
};

#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// No netlink socket: fatal for this data plane.
    #[error("cannot open a netlink socket{}: {source}", in_netns(.netns))]
    Connect {
        netns: Option<PathBuf>,
        #[source]
        source: io::Error,
    },
    /// A request the kernel refused; retryable with the next reconcile.
    #[error("{op} {device} failed: {source}")]
    Netlink {
        op: &'static str,
        device: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("{op} {device} failed: {source}")]
    Netns {
        op: &'static str,
        device: String,
        #[source]
        source: NetnsError,
    },
    #[error("cannot write {path}: {source}")]
    Sysctl {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn in_netns(netns: &Option<PathBuf>) -> String {
    match netns {
        Some(path) => format!(" in {}", path.display()),
        None => String::new(),
    }
}

fn netlink(op: &'static str, device: &str) -> impl FnOnce(rtnetlink::Error) -> KernelError {
    let device = device.to_string();
    move |source| KernelError::Netlink { op, device, source }
}

/// Whether the kernel said the thing to remove is gone already.
fn is_missing(error: &rtnetlink::Error) -> bool {
    match error {
        rtnetlink::Error::NetlinkError(message) => {
            let errno = -message.raw_code();
            errno == Errno::ENODEV as i32 || errno == Errno::ENOENT as i32
        }
        _ => false,
    }
}

/// A netlink connection bound to one network namespace.
#[derive(Clone, Debug)]
pub struct Kernel {
    handle: Handle,
    /// The namespace the connection is in, when not the caller's: sysctls are set from there.
    netns: Option<PathBuf>,
}

impl Kernel {
    /// A connection in the caller's network namespace.
    ///
    /// # Errors
    /// When no netlink socket can be opened.
    ///
    /// # Caveats
    /// Must be called inside a tokio runtime, which then drives the connection.
    pub fn connect() -> Result<Self, KernelError> {
        let (connection, handle, _) =
            rtnetlink::new_connection().map_err(|source| KernelError::Connect {
                netns: None,
                source,
            })?;
        tokio::spawn(connection);
        Ok(Kernel {
            handle,
            netns: None,
        })
    }

    /// A connection in the network namespace at `path`: its socket is opened on a thread that
    /// entered the namespace, and a socket keeps the namespace it was made in.
    ///
    /// # Errors
    /// When the namespace cannot be entered or no socket opened there.
    ///
    /// # Caveats
    /// Must be called inside a tokio runtime; blocks for the time it takes to start a thread.
    pub fn connect_in(path: &Path) -> Result<Self, KernelError> {
        let failed = |source| KernelError::Connect {
            netns: Some(path.to_path_buf()),
            source,
        };
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| failed(io::Error::other(e.to_string())))?;
        let connected = netns::run_in(path, move || {
            // The socket registers with the caller's runtime, which then drives it.
            let _entered = runtime.enter();
            rtnetlink::new_connection()
        })
        .map_err(|e| failed(io::Error::new(e.kind(), e.to_string())))?;
        let (connection, handle, _) = connected.map_err(failed)?;
        tokio::spawn(connection);
        Ok(Kernel {
            handle,
            netns: Some(path.to_path_buf()),
        })
    }

    /// Reads the namespace's links, their IPv4 addresses, and the static entries of the `es-`
    /// VXLAN devices.
    ///
    /// # Errors
    /// When a dump fails.
    pub async fn observe(&self) -> Result<KernelState, KernelError> {
        struct Raw {
            name: String,
            master: Option<u32>,
            link: Link,
        }
        let mut raw: BTreeMap<u32, Raw> = BTreeMap::new();
        let mut links = self.handle.link().get().execute();
        while let Some(message) = links
            .try_next()
            .await
            .map_err(netlink("list links", "in the namespace"))?
        {
            let mut name = None;
            let mut master = None;
            let mut alias = None;
            let mut kind = LinkKind::Other(String::new());
            for attribute in &message.attributes {
                match attribute {
                    LinkAttribute::IfName(n) => name = Some(n.clone()),
                    LinkAttribute::Controller(index) => master = Some(*index),
                    LinkAttribute::IfAlias(a) => alias = Some(a.clone()),
                    LinkAttribute::LinkInfo(infos) => kind = link_kind(infos),
                    _ => {}
                }
            }
            let Some(name) = name else { continue };
            raw.insert(
                message.header.index,
                Raw {
                    name,
                    master,
                    link: Link {
                        kind,
                        master: None,
                        up: message.header.flags.contains(LinkFlags::Up),
                        alias,
                        addresses: Vec::new(),
                    },
                },
            );
        }

        let mut addresses = self.handle.address().get().execute();
        while let Some(message) = addresses
            .try_next()
            .await
            .map_err(netlink("list addresses", "in the namespace"))?
        {
            if message.header.family != AddressFamily::Inet {
                continue;
            }
            let local = message.attributes.iter().find_map(|a| match a {
                AddressAttribute::Local(IpAddr::V4(ip)) => Some(*ip),
                _ => None,
            });
            let address = local.or_else(|| {
                message.attributes.iter().find_map(|a| match a {
                    AddressAttribute::Address(IpAddr::V4(ip)) => Some(*ip),
                    _ => None,
                })
            });
            let (Some(address), Some(owner)) = (address, raw.get_mut(&message.header.index)) else {
                continue;
            };
            if let Ok(net) = ipnet::Ipv4Net::new(address, message.header.prefix_len) {
                owner.link.addresses.push(net);
            }
        }

        let names: HashMap<u32, String> = raw.iter().map(|(i, r)| (*i, r.name.clone())).collect();
        // Entries are read on our VXLAN devices only: the rest are not ours.
        let vxlans: HashMap<u32, String> = raw
            .iter()
            .filter(|(_, r)| {
                r.name.starts_with(PREFIX) && matches!(r.link.kind, LinkKind::Vxlan(_))
            })
            .map(|(index, r)| (*index, r.name.clone()))
            .collect();
        let mut state = KernelState::default();
        for (_, r) in raw {
            let mut link = r.link;
            link.master = r.master.and_then(|index| names.get(&index).cloned());
            state.links.insert(r.name, link);
        }

        for (device, message) in self
            .entries_on(&vxlans, AddressFamily::Inet, "list neighbours")
            .await?
        {
            // Only what was put there: the kernel's own entries come and go.
            if message.header.state != NeighbourState::Permanent {
                continue;
            }
            if let (Some(address), Some(mac)) = (destination(&message), lladdr(&message)) {
                state.neighbours.insert(NeighbourEntry {
                    device,
                    address,
                    mac,
                });
            }
        }
        for (device, message) in self
            .entries_on(&vxlans, AddressFamily::Bridge, "list fdb entries")
            .await?
        {
            // The bridge's own entries for the port carry no destination and the controller flag.
            if message.header.flags.contains(NeighbourFlags::Controller) {
                continue;
            }
            if let (Some(dst), Some(mac)) = (destination(&message), lladdr(&message)) {
                state.fdb.insert(FdbEntry { device, mac, dst });
            }
        }
        Ok(state)
    }

    /// The neighbour-table entries of `family` (IPv4 neighbours, or the bridge family's FDB) on
    /// the devices named in `devices`, by index, each with its device's name.
    async fn entries_on(
        &self,
        devices: &HashMap<u32, String>,
        family: AddressFamily,
        op: &'static str,
    ) -> Result<Vec<(String, NeighbourMessage)>, KernelError> {
        let mut dump = self
            .handle
            .neighbours()
            .get()
            .set_address_family(family)
            .execute();
        let mut entries = Vec::new();
        while let Some(message) = dump
            .try_next()
            .await
            .map_err(netlink(op, "in the namespace"))?
        {
            if let Some(device) = devices.get(&message.header.ifindex) {
                entries.push((device.clone(), message));
            }
        }
        Ok(entries)
    }

    /// Makes the namespace route what comes in on `device`, or not.
    async fn forwarding_from(&self, device: &str, on: bool) -> Result<(), KernelError> {
        let sysctl = PathBuf::from(format!("/proc/sys/net/ipv4/conf/{device}/forwarding"));
        let write = {
            let sysctl = sysctl.clone();
            move || std::fs::write(&sysctl, if on { "1" } else { "0" })
        };
        let written = match &self.netns {
            None => tokio::task::spawn_blocking(write)
                .await
                .unwrap_or_else(|e| Err(io::Error::other(e.to_string()))),
            Some(path) => {
                let path = path.clone();
                tokio::task::spawn_blocking(move || netns::run_in(&path, write))
                    .await
                    .unwrap_or_else(|e| Ok(Err(io::Error::other(e.to_string()))))
                    .unwrap_or_else(|e| Err(io::Error::new(e.kind(), e.to_string())))
            }
        };
        written.map_err(|source| KernelError::Sysctl {
            path: sysctl,
            source,
        })
    }

    /// Applies one change.
    ///
    /// # Errors
    /// The kernel's refusal, with the operation and the device. Removing what is gone already
    /// succeeds.
    pub async fn apply(&self, change: &Change) -> Result<(), KernelError> {
        match change {
            Change::RemoveLink { name } => {
                let message = LinkUnspec::new_with_name(name).build();
                match self.handle.link().del_with_message(message).execute().await {
                    Err(error) if !is_missing(&error) => Err(netlink("remove link", name)(error)),
                    _ => Ok(()),
                }
            }
            Change::RemoveFdb(entry) => {
                let op = "remove fdb entry on";
                let index = self.index_of(&entry.device, op).await?;
                let mut message = NeighbourMessage::default();
                message.header.family = AddressFamily::Bridge;
                message.header.ifindex = index;
                message.header.flags = NeighbourFlags::Own;
                message.attributes = vec![
                    NeighbourAttribute::LinkLayerAddress(entry.mac.to_vec()),
                    NeighbourAttribute::Destination(NeighbourAddress::Inet(entry.dst)),
                ];
                match self.handle.neighbours().del(message).execute().await {
                    Err(error) if !is_missing(&error) => Err(netlink(op, &entry.device)(error)),
                    _ => Ok(()),
                }
            }
            Change::RemoveNeighbour(entry) => {
                let op = "remove neighbour on";
                let index = self.index_of(&entry.device, op).await?;
                let mut message = NeighbourMessage::default();
                message.header.family = AddressFamily::Inet;
                message.header.ifindex = index;
                message.attributes = vec![NeighbourAttribute::Destination(NeighbourAddress::Inet(
                    entry.address,
                ))];
                match self.handle.neighbours().del(message).execute().await {
                    Err(error) if !is_missing(&error) => Err(netlink(op, &entry.device)(error)),
                    _ => Ok(()),
                }
            }
            Change::RemoveAddress { device, address } => {
                let op = "remove address from";
                let index = self.index_of(device, op).await?;
                let message = AddressMessageBuilder::<Ipv4Addr>::new()
                    .index(index)
                    .address(address.addr(), address.prefix_len())
                    .build();
                match self.handle.address().del(message).execute().await {
                    Err(error) if !is_missing(&error) => Err(netlink(op, device)(error)),
                    _ => Ok(()),
                }
            }
            Change::CreateBridge {
                name,
                mac,
                alias,
                routed,
            } => {
                let op = "create bridge";
                self.handle
                    .link()
                    .add(LinkBridge::new(name).address(mac.to_vec()).build())
                    .execute()
                    .await
                    .map_err(netlink(op, name))?;
                // The kernel takes an alias on changes only, not on creation.
                self.set(name, op, |link| link.alias(alias.clone())).await?;
                // Tasks reach each other inside their network only: nothing that comes in on
                // the bridge is routed on to another network (or anywhere else), even on a
                // machine that forwards. The ingress network's answers go back to clients.
                self.forwarding_from(name, *routed).await
            }
            Change::SetUp { name } => self.set(name, "bring up", |link| link.up()).await,
            Change::AddAddress { device, address } => {
                let op = "add address to";
                let index = self.index_of(device, op).await?;
                self.handle
                    .address()
                    .add(index, IpAddr::V4(address.addr()), address.prefix_len())
                    .replace()
                    .execute()
                    .await
                    .map_err(netlink(op, device))
            }
            Change::CreateVxlan {
                name,
                bridge,
                vxlan,
            } => {
                let op = "create vxlan";
                let master = self.index_of(bridge, op).await?;
                let mut builder = LinkVxlan::new(name, vxlan.id)
                    .port(vxlan.port)
                    .learning(vxlan.learning)
                    .proxy(vxlan.proxy)
                    .mtu(OVERLAY_MTU)
                    .controller(master)
                    .up();
                if let Some(local) = vxlan.local {
                    builder = builder.local(local);
                }
                self.handle
                    .link()
                    .add(builder.build())
                    .execute()
                    .await
                    .map_err(netlink(op, name))
            }
            Change::AddFdb(entry) => {
                let op = "add fdb entry on";
                let index = self.index_of(&entry.device, op).await?;
                // `self`: without it the kernel puts the entry in the bridge the device is a
                // port of, not in the VXLAN device.
                self.handle
                    .neighbours()
                    .add_bridge(index, &entry.mac)
                    .flags(NeighbourFlags::Own)
                    .destination(IpAddr::V4(entry.dst))
                    .replace()
                    .execute()
                    .await
                    .map_err(netlink(op, &entry.device))
            }
            Change::AddNeighbour(entry) => {
                let op = "add neighbour on";
                let index = self.index_of(&entry.device, op).await?;
                self.handle
                    .neighbours()
                    .add(index, IpAddr::V4(entry.address))
                    .link_layer_address(&entry.mac)
                    .replace()
                    .execute()
                    .await
                    .map_err(netlink(op, &entry.device))
            }
            Change::CreateEndpoint(spec) => self.create_endpoint(spec).await,
        }
    }

    /// Makes the veth pair with the task's end already in its namespace, configures that end
    /// from inside, and only then brings the host end up with its alias: the mark that the
    /// endpoint is complete (see [`EndpointSpec::alias`]).
    async fn create_endpoint(&self, spec: &EndpointSpec) -> Result<(), KernelError> {
        let op = "create endpoint";
        let namespace = File::open(&spec.netns).map_err(|e| KernelError::Netns {
            op,
            device: spec.host_name.clone(),
            source: NetnsError::Io {
                op: "open",
                path: spec.netns.clone(),
                source: e,
            },
        })?;
        let master = self.index_of(&spec.bridge, op).await?;
        let peer = LinkUnspec::new_with_name(&spec.ifname)
            .address(spec.mac.to_vec())
            .mtu(OVERLAY_MTU)
            .setns_by_fd(namespace.as_raw_fd())
            .build();
        let pair = LinkVeth::new(&spec.host_name, &spec.ifname)
            .set_info_data(InfoData::Veth(InfoVeth::Peer(peer)))
            .mtu(OVERLAY_MTU)
            .controller(master)
            .build();
        self.handle
            .link()
            .add(pair)
            .execute()
            .await
            .map_err(netlink(op, &spec.host_name))?;
        drop(namespace);

        let inside = Kernel::connect_in(&spec.netns)?;
        inside.configure_task_end(spec).await?;
        self.set(&spec.host_name, op, |link| {
            link.alias(spec.alias.clone()).up()
        })
        .await
    }

    /// Inside the task's namespace: address, up, `lo` up, default route.
    async fn configure_task_end(&self, spec: &EndpointSpec) -> Result<(), KernelError> {
        let op = "configure task interface";
        let index = self.index_of(&spec.ifname, op).await?;
        self.handle
            .address()
            .add(
                index,
                IpAddr::V4(spec.address.addr()),
                spec.address.prefix_len(),
            )
            .replace()
            .execute()
            .await
            .map_err(netlink(op, &spec.ifname))?;
        self.set(&spec.ifname, op, |link| link.up()).await?;
        self.set("lo", op, |link| link.up()).await?;
        if let Some(gateway) = spec.gateway {
            let route = RouteMessageBuilder::<Ipv4Addr>::new()
                .gateway(gateway)
                .output_interface(index)
                .build();
            self.handle
                .route()
                .add(route)
                .replace()
                .execute()
                .await
                .map_err(netlink("add default route via", &spec.ifname))?;
        }
        Ok(())
    }

    async fn set(
        &self,
        name: &str,
        op: &'static str,
        change: impl FnOnce(
            rtnetlink::LinkMessageBuilder<LinkUnspec>,
        ) -> rtnetlink::LinkMessageBuilder<LinkUnspec>,
    ) -> Result<(), KernelError> {
        let index = self.index_of(name, op).await?;
        self.handle
            .link()
            .set(change(LinkUnspec::new_with_index(index)).build())
            .execute()
            .await
            .map_err(netlink(op, name))
    }

    async fn index_of(&self, name: &str, op: &'static str) -> Result<u32, KernelError> {
        let found: Option<LinkMessage> = self
            .handle
            .link()
            .get()
            .match_name(name.to_string())
            .execute()
            .try_next()
            .await
            .map_err(netlink(op, name))?;
        match found {
            Some(message) => Ok(message.header.index),
            None => Err(KernelError::Netlink {
                op,
                device: name.to_string(),
                source: rtnetlink::Error::RequestFailed,
            }),
        }
    }
}

fn link_kind(infos: &[LinkInfo]) -> LinkKind {
    let mut kind = LinkKind::Other(String::new());
    for info in infos {
        match info {
            LinkInfo::Kind(InfoKind::Bridge) => kind = LinkKind::Bridge,
            LinkInfo::Kind(InfoKind::Veth) => kind = LinkKind::Veth,
            // The data may come first; a bare kind must not wipe what it said.
            LinkInfo::Kind(InfoKind::Vxlan) if !matches!(kind, LinkKind::Vxlan(_)) => {
                kind = LinkKind::Vxlan(vxlan_settings(&[]));
            }
            LinkInfo::Kind(InfoKind::Vxlan) => {}
            LinkInfo::Kind(other) => kind = LinkKind::Other(other.to_string()),
            LinkInfo::Data(InfoData::Vxlan(data)) => kind = LinkKind::Vxlan(vxlan_settings(data)),
            _ => {}
        }
    }
    kind
}

fn vxlan_settings(data: &[InfoVxlan]) -> Vxlan {
    let mut vxlan = Vxlan {
        id: 0,
        local: None,
        port: 0,
        learning: true,
        proxy: false,
    };
    for info in data {
        match info {
            InfoVxlan::Id(id) => vxlan.id = *id,
            InfoVxlan::Local(local) => vxlan.local = Some(*local),
            InfoVxlan::Port(port) => vxlan.port = *port,
            InfoVxlan::Learning(learning) => vxlan.learning = *learning,
            InfoVxlan::Proxy(proxy) => vxlan.proxy = *proxy,
            _ => {}
        }
    }
    vxlan
}

/// An IPv4 destination; in bridge-family messages the crate leaves it as raw bytes.
fn destination(message: &NeighbourMessage) -> Option<Ipv4Addr> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(*ip),
        NeighbourAttribute::Destination(NeighbourAddress::Other(bytes)) => {
            <[u8; 4]>::try_from(bytes.as_slice())
                .ok()
                .map(Ipv4Addr::from)
        }
        _ => None,
    })
}

fn lladdr(message: &NeighbourMessage) -> Option<[u8; 6]> {
    message.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::LinkLayerAddress(bytes) => <[u8; 6]>::try_from(bytes.as_slice()).ok(),
        _ => None,
    })
}
