//! Service discovery: a name server on each network's gateway address on every node with a
//! task there, the resolver of that network's tasks.
//!
//! - `tasks.SERVICE` gives the addresses of the service's serving tasks (running and meant to
//!   run) on the network the query came in on;
//! - `SERVICE` (or one of its aliases there) gives its VIP in vip mode (see [`crate::vip`]),
//!   and its tasks' addresses in dnsrr mode, or where this node cannot balance VIPs;
//! - any other name is relayed to the node's own resolver (`/etc/resolv.conf`).
//!
//! A query is answered from the node's latest network map, so a name resolves only for tasks
//! that share a network with the service (any of the asking task's networks, see
//! [`resolve_for`]), and the answers follow the tasks as soon as the
//! leader's map says they changed. Answers carry a TTL of 0.
//!
//! Only what resolvers need is read and written ([`wire`]): A queries of one question over
//! UDP; a name of ours asked for another type gets an empty answer.

pub mod wire;

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use essaim_core::model::EndpointMode;
use essaim_core::model::ObjectId;
use essaim_core::netmap::{NetworkMap, ServiceName};
use parking_lot::Mutex;
use tokio::net::UdpSocket;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use wire::{Query, RCODE_NO_ERROR, RCODE_SERVER_FAILURE, TYPE_A, TYPE_ANY};

pub const DNS_PORT: u16 = 53;
/// How long a relayed query may wait for the node's resolver.
const RELAY_TIMEOUT: Duration = Duration::from_secs(2);

/// The name servers of this node, one per network it has a task on.
pub struct NameServers {
    map: watch::Receiver<Option<NetworkMap>>,
    /// Whether this node balances VIPs: only then does a vip-mode name give its VIP.
    vips: bool,
    running: Mutex<HashMap<ObjectId, (Ipv4Addr, JoinHandle<()>)>>,
}

impl NameServers {
    pub fn new(map: watch::Receiver<Option<NetworkMap>>, vips: bool) -> NameServers {
        NameServers {
            map,
            vips,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// Serves exactly the networks given, by id with their gateway address, which must be on
    /// one of this namespace's devices. A server that cannot start now is tried again at the
    /// next call.
    pub fn serve(&self, networks: &[(ObjectId, Ipv4Addr)]) {
        let mut running = self.running.lock();
        running.retain(|id, (gateway, server)| {
            let keep = networks.iter().any(|(n, g)| n == id && g == gateway);
            if !keep {
                server.abort();
            }
            keep
        });
        for (id, gateway) in networks {
            if running.contains_key(id) {
                continue;
            }
            let address = SocketAddr::from((*gateway, DNS_PORT));
            let socket = match std::net::UdpSocket::bind(address)
                .and_then(|socket| {
                    socket.set_nonblocking(true)?;
                    Ok(socket)
                })
                .and_then(UdpSocket::from_std)
            {
                Ok(socket) => socket,
                Err(error) => {
                    tracing::warn!(network = %id, %address, %error, "no name server yet");
                    continue;
                }
            };
            tracing::debug!(network = %id, %address, "name server up");
            let server = tokio::spawn(serve(
                Arc::new(socket),
                id.clone(),
                self.map.clone(),
                self.vips,
                upstream(),
            ));
            running.insert(id.clone(), (*gateway, server));
        }
    }
}

impl Drop for NameServers {
    fn drop(&mut self) {
        for (_, (_, server)) in self.running.lock().drain() {
            server.abort();
        }
    }
}

async fn serve(
    socket: Arc<UdpSocket>,
    network_id: ObjectId,
    map: watch::Receiver<Option<NetworkMap>>,
    vips: bool,
    upstream: Option<SocketAddr>,
) {
    let mut buffer = vec![0u8; 4096];
    loop {
        let (length, client) = match socket.recv_from(&mut buffer).await {
            Ok(received) => received,
            Err(error) => {
                tracing::debug!(%error, "name server receive failed");
                continue;
            }
        };
        let message = &buffer[..length];
        let Some(query) = wire::parse_query(message) else {
            continue;
        };
        let asker = match client.ip() {
            IpAddr::V4(address) => Some(address),
            IpAddr::V6(_) => None,
        };
        let found = map
            .borrow()
            .as_ref()
            .and_then(|map| resolve_for(map, &network_id, asker, &query.name, vips));
        match found {
            Some(mut addresses) => {
                let addresses = if matches!(query.qtype, TYPE_A | TYPE_ANY) {
                    // Each query gets another first address, for clients that take the first.
                    if !addresses.is_empty() {
                        let turn = usize::from(query.id) % addresses.len();
                        addresses.rotate_left(turn);
                    }
                    addresses
                } else {
                    Vec::new()
                };
                let out = wire::answer(&query, message, &addresses, RCODE_NO_ERROR);
                let _ = socket.send_to(&out, client).await;
            }
            None => {
                // Relayed on a task of its own: a slow resolver holds no other query back.
                tokio::spawn(relay(
                    socket.clone(),
                    client,
                    query,
                    message.to_vec(),
                    upstream,
                ));
            }
        }
    }
}

/// The addresses `name` stands for to the task at `asker` on `network_id`: a name of that
/// network first, then one of the task's other networks (in the map's order), as Docker's
/// resolver answers a container on several networks. A stack's front on `frontend` and
/// `backend` asks the server of its first network for `api`, which is on `backend` only.
pub fn resolve_for(
    map: &NetworkMap,
    network_id: &str,
    asker: Option<Ipv4Addr>,
    name: &str,
    vips: bool,
) -> Option<Vec<Ipv4Addr>> {
    if let Some(found) = resolve(map, network_id, name, vips) {
        return Some(found);
    }
    let asker = asker?;
    let task_id = &map
        .network(network_id)?
        .endpoints
        .iter()
        .find(|e| e.address == asker)?
        .task_id;
    map.networks
        .iter()
        .filter(|n| n.id != network_id && !n.ingress)
        .filter(|n| n.endpoints.iter().any(|e| &e.task_id == task_id))
        .find_map(|n| resolve(map, &n.id, name, vips))
}

/// The addresses a name of the network `network_id` stands for; `None` when it is not one of
/// the network's names. With `vips`, a vip-mode service's own name gives its VIP.
pub fn resolve(
    map: &NetworkMap,
    network_id: &str,
    name: &str,
    vips: bool,
) -> Option<Vec<Ipv4Addr>> {
    let network = map.network(network_id)?;
    let (tasks, service_name) = match name.strip_prefix("tasks.") {
        Some(service_name) => (true, service_name),
        None => (false, name),
    };
    let named: Vec<&ServiceName> = network
        .services
        .iter()
        .filter(|s| s.name == service_name || s.aliases.iter().any(|a| a == service_name))
        .collect();
    if named.is_empty() {
        return None;
    }
    if !tasks && vips {
        let vips: Vec<Ipv4Addr> = named
            .iter()
            .filter(|s| s.endpoint_mode == EndpointMode::Vip)
            .filter_map(|s| s.virtual_ip)
            .collect();
        if !vips.is_empty() {
            return Some(vips);
        }
    }
    let services: Vec<&ObjectId> = named.iter().map(|s| &s.service_id).collect();
    Some(
        network
            .endpoints
            .iter()
            .filter(|e| e.serving && services.contains(&&e.service_id))
            .map(|e| e.address)
            .collect(),
    )
}

async fn relay(
    socket: Arc<UdpSocket>,
    client: SocketAddr,
    query: Query,
    message: Vec<u8>,
    upstream: Option<SocketAddr>,
) {
    let relayed = async {
        let upstream = upstream?;
        let local: SocketAddr = match upstream.ip() {
            IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
            IpAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
        };
        let outbound = UdpSocket::bind(local).await.ok()?;
        outbound.send_to(&message, upstream).await.ok()?;
        let mut buffer = vec![0u8; 4096];
        let (length, _) = tokio::time::timeout(RELAY_TIMEOUT, outbound.recv_from(&mut buffer))
            .await
            .ok()?
            .ok()?;
        buffer.truncate(length);
        Some(buffer)
    };
    let out = match relayed.await {
        Some(out) => out,
        None => wire::answer(&query, &message, &[], RCODE_SERVER_FAILURE),
    };
    let _ = socket.send_to(&out, client).await;
}

/// The node's own resolver: the first name server of `/etc/resolv.conf`.
fn upstream() -> Option<SocketAddr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf").ok()?;
    conf.lines().find_map(|line| {
        let address = line.trim().strip_prefix("nameserver")?.trim();
        let ip: IpAddr = address.parse().ok()?;
        Some(SocketAddr::new(ip, DNS_PORT))
    })
}

/// What a task on networks finds in its `/etc/resolv.conf`: the name server of its first
/// network, and no search domains, so that `web` is asked as `web`.
pub fn resolv_conf(name_server: Ipv4Addr) -> String {
    format!("# made by essaim for this task\nnameserver {name_server}\noptions ndots:0\n")
}

#[cfg(test)]
mod tests;
