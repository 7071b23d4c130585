//! This node's share of the cluster networks: the leader's network map and the tasks that run
//! here, turned into a kernel data plane (see `essaim_network`).
//!
//! ```text
//!  leader's NetworkMap ──┐
//!                        ├─> node_plan (pure) ──> DataPlane::reconcile ──> bridges, VXLAN, veths
//!  local tasks' netns ───┘
//! ```
//!
//! The node makes a network only while one of its tasks is on it, and removes it with the
//! last one. Each change (a new map, a task attached or gone) reconciles the whole plan: what
//! failed once is tried again at the next change, and every few seconds while tasks are on.
//!
//! The overlay needs the node's own IPv4 address, the host of its advertised address, as the
//! source of its VXLAN packets. A node that advertises a loopback address (the embedded
//! cluster, most tests) shares its network namespace with its siblings on the same machine:
//! their data planes would undo each other's, so such a node runs no overlay, and its tasks
//! run in its own network namespace, as before there were cluster networks.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use essaim_core::model::{NetworkAttachment, ObjectId};
use essaim_core::netmap::{MappedNetwork, NetworkMap};
use essaim_network::{DataPlane, Ipv4Net, LocalEndpoint, NetworkPlan, NodePlan, RemoteEndpoint};
use tokio::sync::{watch, Mutex};

use crate::dns::NameServers;
use crate::{mesh, nft, vip};

/// How long a task waits for its networks to appear in the node's map: the leader sends the
/// map before the task, so only a lost race waits at all.
const MAP_WAIT: Duration = Duration::from_secs(5);
/// How often the plan is made again while tasks are on networks, to mend what failed or what
/// someone else changed.
const RECONCILE_PERIOD: Duration = Duration::from_secs(5);

/// The network namespace of a local task, and its addresses, in the order of its networks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LocalAttachment {
    pub netns: PathBuf,
    pub networks: Vec<NetworkAttachment>,
    /// The index of the interface of its first network (`eth0` unless the runtime gave the
    /// task an interface of its own first, a Docker bridge for published ports). Only a task
    /// whose first network is `eth0` routes through it by default.
    pub first_interface: usize,
}

impl LocalAttachment {
    /// A namespace that is on its networks only.
    pub fn new(netns: PathBuf, networks: Vec<NetworkAttachment>) -> Self {
        LocalAttachment {
            netns,
            networks,
            first_interface: 0,
        }
    }
}

pub struct Overlay {
    map: watch::Sender<Option<NetworkMap>>,
    /// The name servers of the networks the node has tasks on.
    names: NameServers,
    /// Whether VIPs are balanced here (nftables is installed).
    vips: bool,
    /// Taken for each reconcile, so that two never interleave.
    local: Mutex<Local>,
}

#[derive(Default)]
struct Local {
    tasks: BTreeMap<ObjectId, LocalAttachment>,
    /// Made at the first task on a network.
    plane: Option<DataPlane>,
    /// The VIP rules each task's namespace holds, as last written there.
    vip_rules: BTreeMap<ObjectId, String>,
    /// The routing mesh's rules of the node's namespace, as last written there.
    mesh_rules: Option<String>,
}

/// Whether tasks of this node can be put on cluster networks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Availability {
    Yes(Ipv4Addr),
    /// Why not; the tasks run in the node's own namespace.
    No(String),
}

impl Overlay {
    pub fn new() -> Arc<Overlay> {
        let map = watch::channel(None).0;
        let vips = nft::available();
        if !vips {
            tracing::warn!(
                "nft is not installed: service names resolve to their tasks, not to VIPs"
            );
        }
        let overlay = Arc::new(Overlay {
            names: NameServers::new(map.subscribe(), vips),
            vips,
            map,
            local: Mutex::new(Local::default()),
        });
        tokio::spawn(mend(Arc::downgrade(&overlay)));
        overlay
    }

    /// The leader's latest map for this node: tasks waiting for it see it at once, and the
    /// kernel follows in the background.
    pub fn set_map(self: &Arc<Self>, map: NetworkMap) {
        let changed = self.map.send_if_modified(|current| {
            if current.as_ref() == Some(&map) {
                return false;
            }
            *current = Some(map);
            true
        });
        if changed {
            let overlay = self.clone();
            // Each reconcile reads the latest map: their order does not matter.
            tokio::spawn(async move { overlay.reconcile_logged().await });
        }
    }

    /// Whether this node runs an overlay, waiting for its first map if need be.
    pub async fn availability(&self) -> Availability {
        let mut map = self.map.subscribe();
        let first = tokio::time::timeout(MAP_WAIT, map.wait_for(Option::is_some)).await;
        let node_ip = match first {
            Ok(Ok(map)) => map.as_ref().and_then(|m| m.node_ip),
            _ => return Availability::No("no network map from the leader yet".into()),
        };
        match node_ip {
            Some(ip) if usable(ip) => Availability::Yes(ip),
            Some(ip) => Availability::No(format!(
                "the node advertises the loopback address {ip}: nodes on one machine's loopback share a network namespace"
            )),
            None => Availability::No("the node does not advertise an IPv4 address".into()),
        }
    }

    /// Whether this node puts `task` on its cluster networks: it has some, and the node runs
    /// an overlay (else the runtime runs it as before there were cluster networks).
    pub async fn takes(&self, task: &essaim_core::model::Task) -> bool {
        if task.networks.is_empty() {
            return false;
        }
        match self.availability().await {
            Availability::Yes(_) => true,
            Availability::No(why) => {
                tracing::debug!(task = %task.id, "task not put on its cluster networks: {why}");
                false
            }
        }
    }

    /// The name server of a task on `networks`: the gateway of its first network that has
    /// names (the ingress network, first for services on the mesh, has none), else of its
    /// first.
    pub fn name_server(&self, networks: &[NetworkAttachment]) -> Option<Ipv4Addr> {
        let map = self.map.borrow();
        let map = map.as_ref()?;
        let known: Vec<_> = networks
            .iter()
            .filter_map(|n| map.network(&n.network_id))
            .collect();
        known
            .iter()
            .find(|n| !n.ingress)
            .or(known.first())
            .map(|n| n.gateway)
    }

    /// Waits until the node's map has all of `networks`: the leader sends the map before the
    /// task, so only a lost race waits at all.
    ///
    /// # Errors
    /// The map did not have them within a few seconds.
    pub async fn until_known(&self, networks: &[NetworkAttachment]) -> Result<(), String> {
        let mut map = self.map.subscribe();
        let has_all = |map: &Option<NetworkMap>| {
            map.as_ref()
                .is_some_and(|m| networks.iter().all(|n| m.network(&n.network_id).is_some()))
        };
        if tokio::time::timeout(MAP_WAIT, map.wait_for(has_all))
            .await
            .is_err()
        {
            let names: Vec<&str> = networks.iter().map(|n| n.network.as_str()).collect();
            return Err(format!(
                "the leader did not tell this node of network(s) {} within {MAP_WAIT:?}",
                names.join(", ")
            ));
        }
        Ok(())
    }

    /// Puts a task's namespace on its networks, once the node's map has them all.
    ///
    /// # Errors
    /// The map never had them, or the kernel refused: the task is detached again.
    pub async fn attach(&self, task_id: &str, attachment: LocalAttachment) -> Result<(), String> {
        self.until_known(&attachment.networks).await?;
        let mut local = self.local.lock().await;
        local.tasks.insert(task_id.to_string(), attachment);
        if let Err(error) = self.reconcile(&mut local).await {
            local.tasks.remove(task_id);
            drop(local);
            self.reconcile_logged().await;
            return Err(format!("cannot attach the task to its networks: {error}"));
        }
        Ok(())
    }

    /// Takes back a task that was on its networks before the agent restarted: its interfaces
    /// are still there and stay, so its connections live on. The next reconcile (at the
    /// node's first map) plans them with the rest.
    pub async fn adopt(&self, task_id: &str, attachment: LocalAttachment) {
        let mut local = self.local.lock().await;
        local.tasks.insert(task_id.to_string(), attachment);
    }

    /// Takes a task off its networks (its veth goes with its namespace anyway); the node's
    /// last task on a network takes the network's devices with it.
    pub async fn detach(&self, task_id: &str) {
        let mut local = self.local.lock().await;
        if local.tasks.remove(task_id).is_some() {
            if let Err(error) = self.reconcile(&mut local).await {
                tracing::warn!(task = task_id, %error, "data plane not cleaned up yet");
            }
        }
    }

    /// Takes the node out of the cluster networks, as it leaves the swarm (its tasks have
    /// stopped): the routing mesh's devices and rules go, and nothing is made again.
    pub async fn leave(&self) {
        self.map.send_replace(None);
        let mut local = self.local.lock().await;
        if let Some(plane) = local.plane.take() {
            if let Err(error) = plane.remove_all().await {
                tracing::warn!(%error, "cluster network devices left behind");
            }
        }
        if local.mesh_rules.take().is_some() {
            let script = mesh::ruleset(&mesh::MeshPlan::default());
            let removed = tokio::task::spawn_blocking(move || nft::apply(None, &script))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            if let Err(error) = removed {
                tracing::warn!("routing mesh rules left behind: {error}");
            }
        }
    }

    async fn reconcile_logged(&self) {
        let mut local = self.local.lock().await;
        if let Err(error) = self.reconcile(&mut local).await {
            tracing::warn!(%error, "data plane not as planned; retrying");
        }
    }

    async fn reconcile(&self, local: &mut Local) -> Result<(), String> {
        let (plan, vip_rules, mesh_rules) = {
            let map = self.map.borrow();
            let Some(map) = map.as_ref() else {
                return Ok(());
            };
            // A node without an overlay never touches the kernel; one with an overlay makes
            // its data plane at its first map, which clears what a previous life left.
            if local.plane.is_none() && !has_overlay(map) {
                return Ok(());
            }
            let vip_rules: Vec<(ObjectId, PathBuf, String)> = if self.vips {
                local
                    .tasks
                    .iter()
                    .map(|(id, a)| {
                        let rules = vip::ruleset(&vip::balanced(map, &a.networks));
                        (id.clone(), a.netns.clone(), rules)
                    })
                    .filter(|(id, _, rules)| local.vip_rules.get(id) != Some(rules))
                    .collect()
            } else {
                Vec::new()
            };
            let mesh_rules = self
                .vips
                .then(|| mesh::ruleset(&mesh::plan(map)))
                .filter(|rules| local.mesh_rules.as_ref() != Some(rules));
            (node_plan(map, &local.tasks), vip_rules, mesh_rules)
        };
        let plane = match &local.plane {
            Some(plane) => plane,
            None => local
                .plane
                .insert(DataPlane::new().map_err(|e| e.to_string())?),
        };
        let reconciled = plane.reconcile(&plan).await;
        // Each network's name server listens on its gateway address, once that is there.
        let served: Vec<(ObjectId, Ipv4Addr)> = plan
            .networks
            .iter()
            .map(|n| (n.network_id.clone(), n.gateway))
            .collect();
        self.names.serve(&served);
        let report = reconciled.map_err(|e| e.to_string())?;
        local.vip_rules.retain(|id, _| local.tasks.contains_key(id));
        for (task_id, netns, rules) in vip_rules {
            let script = rules.clone();
            let applied = tokio::task::spawn_blocking(move || nft::apply(Some(&netns), &script))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            match applied {
                Ok(()) => {
                    local.vip_rules.insert(task_id, rules);
                }
                // Tried again at the next reconcile; the task's other traffic is unaffected.
                Err(error) => tracing::warn!(task = %task_id, "VIP rules not in place: {error}"),
            }
        }
        if let Some(rules) = mesh_rules {
            let script = rules.clone();
            let applied = tokio::task::spawn_blocking(move || nft::apply(None, &script))
                .await
                .unwrap_or_else(|e| Err(e.to_string()));
            match applied {
                Ok(()) => local.mesh_rules = Some(rules),
                Err(error) => tracing::warn!("routing mesh rules not in place: {error}"),
            }
        }
        if !report.is_empty() {
            tracing::debug!(changes = report.applied.len(), "data plane reconciled");
        }
        Ok(())
    }
}

fn usable(node_ip: Ipv4Addr) -> bool {
    !node_ip.is_loopback() && !node_ip.is_unspecified()
}

fn has_overlay(map: &NetworkMap) -> bool {
    map.node_ip.is_some_and(usable)
}

/// Reconciles now and then while tasks are on networks; ends with the overlay.
async fn mend(overlay: std::sync::Weak<Overlay>) {
    loop {
        tokio::time::sleep(RECONCILE_PERIOD).await;
        let Some(overlay) = overlay.upgrade() else {
            return;
        };
        let in_mesh = overlay
            .map
            .borrow()
            .as_ref()
            .is_some_and(|m| m.mesh.is_some());
        let busy = in_mesh || !overlay.local.lock().await.tasks.is_empty();
        if busy {
            overlay.reconcile_logged().await;
        }
    }
}

/// What the kernel of this node must hold: each network that a local task is on, with its
/// local tasks' endpoints and the other nodes' tasks as remote endpoints; and the ingress
/// network whenever the node is in the routing mesh, with its own address there and the
/// other nodes' as remote endpoints too.
pub fn node_plan(map: &NetworkMap, tasks: &BTreeMap<ObjectId, LocalAttachment>) -> NodePlan {
    let mut networks: BTreeMap<&str, NetworkPlan> = BTreeMap::new();
    for (task_id, attachment) in tasks {
        for (index, on) in attachment.networks.iter().enumerate() {
            let Some(mapped) = map.network(&on.network_id) else {
                continue;
            };
            let network = networks
                .entry(&mapped.id)
                .or_insert_with(|| network_plan(map, mapped));
            network.local_endpoints.push(LocalEndpoint {
                key: task_id.clone(),
                address: on.address,
                netns: attachment.netns.clone(),
                ifname: format!("eth{}", attachment.first_interface + index),
                default_route: attachment.first_interface + index == 0,
            });
        }
    }
    if let Some(mesh) = &map.mesh {
        if let Some(mapped) = map.network(&mesh.network_id) {
            let network = networks
                .entry(&mapped.id)
                .or_insert_with(|| network_plan(map, mapped));
            network.node_address = Some(mesh.node_address);
            network.remote_nodes = mesh
                .nodes
                .iter()
                .filter_map(|node| {
                    Some(RemoteEndpoint {
                        address: node.address,
                        node_underlay_ip: node.node_ip?,
                    })
                })
                .collect();
        }
    }
    NodePlan {
        underlay_ip: map.node_ip.unwrap_or(Ipv4Addr::UNSPECIFIED),
        networks: networks.into_values().collect(),
    }
}

/// A mapped network with the other nodes' tasks, and no local endpoint yet.
fn network_plan(map: &NetworkMap, mapped: &MappedNetwork) -> NetworkPlan {
    let subnet = Ipv4Net::new(mapped.subnet.address(), mapped.subnet.prefix()).unwrap_or_default();
    let mut network = NetworkPlan::new(mapped.id.clone(), mapped.vxlan_id, subnet);
    network.gateway = mapped.gateway;
    network.routed = mapped.ingress;
    network.remote_endpoints = mapped
        .endpoints
        .iter()
        .filter(|e| e.node_id != map.node_id)
        .filter_map(|e| {
            Some(RemoteEndpoint {
                address: e.address,
                node_underlay_ip: e.node_ip?,
            })
        })
        .collect();
    network
}

#[cfg(test)]
mod tests;
