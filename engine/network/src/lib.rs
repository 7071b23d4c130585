//! The per-node data plane of essaim's overlay networks, made in the Linux kernel through
//! netlink: a bridge and a VXLAN device per network, a veth pair per local task, and static
//! forwarding and neighbour entries for the tasks on other nodes.
//!
//! # Design
//!
//! Each cluster network has an id (its first 12 characters name it on devices), a VXLAN id
//! (4096 and up), an IPv4 subnet such as `10.0.1.0/24`, and a gateway, the subnet's first
//! address (`10.0.1.1`).
//!
//! On every node with a task on the network, in the node's own network namespace:
//!
//! ```text
//!   task netns            node netns                                      other nodes
//!  +----------+      +-------------------------------------+
//!  | eth0     |veth  | es-<8 hex> --+                       |
//!  | 10.0.1.2 |------|              +-- es-br-<vxlan id> ---+-- es-vx-<vxlan id> == UDP 4789 ==>
//!  +----------+      |              |   10.0.1.1/24        |   fdb:   MAC -> node's underlay IP
//!                    |  (more tasks)+                       |   neigh: task IP -> MAC
//!                    +-------------------------------------+
//! ```
//!
//! - A bridge `es-br-<vxlan id>`, up, holding the gateway address (gateway/prefix), so that
//!   tasks reach their node there (a DNS server will listen on it).
//! - A VXLAN device `es-vx-<vxlan id>`: that VNI, UDP port 4789, `local` the node's underlay
//!   IPv4, no learning, `proxy` on so that the kernel answers ARP from its neighbour table, no
//!   multicast group; a port of the bridge, up.
//! - Every task endpoint has an IPv4 address in the subnet and a MAC derived from it,
//!   `02:42:a:b:c:d` (Docker's convention). A local endpoint is a veth pair: the host end
//!   `es-<8 hex digits of the network and task id>` is a port of the bridge, up; the other end is
//!   in the task's network namespace (given as a path, `/proc/<pid>/ns/net` or
//!   `/run/netns/<name>`), named as the caller says (`eth0`, `eth1` for a second network...),
//!   with the MAC and the address/prefix, up, with `lo` up too, and a default route via the
//!   gateway where the caller says so (the first network only).
//! - A remote endpoint (a task on another node) is a static FDB entry on the VXLAN device (MAC
//!   to the remote node's underlay IP, `self permanent`) and a permanent neighbour entry on it
//!   (task IP to MAC). No multicast, no learning: nothing floods between nodes.
//! - Everything essaim creates starts with `es-`; other devices are never touched.
//!
//! A [`DataPlane`] reconciles: it reads what the kernel holds ([`KernelState`]), computes the
//! [`Change`]s to the wanted [`NodePlan`] with the pure [`diff`], and applies them.
//!
//! # Layout
//!
//! - [`plan`]: the wanted state, the observed state, and the diff between them; pure.
//! - [`kernel`]: the netlink side: observe a namespace, apply a change.
//! - [`netns`]: named network namespaces as `ip netns` makes them, and code run inside one.

pub mod kernel;
pub mod netns;
pub mod plan;

use std::path::Path;

pub use kernel::{Kernel, KernelError};
pub use plan::{
    diff, mac_for, Change, Ipv4Net, KernelState, LocalEndpoint, NetworkPlan, NodePlan,
    RemoteEndpoint,
};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The kernel could not be reached or read: nothing was changed.
    #[error(transparent)]
    Kernel(#[from] KernelError),
    /// Some changes failed; the others were applied. Retryable: the next reconcile observes
    /// again and retries what is still missing.
    #[error("{} of {} changes failed, first: {}", .failed.len(), .failed.len() + .applied.len(), first(.failed))]
    Apply {
        applied: Vec<Change>,
        failed: Vec<(Change, KernelError)>,
    },
}

fn first(failed: &[(Change, KernelError)]) -> String {
    failed
        .first()
        .map(|(_, error)| error.to_string())
        .unwrap_or_default()
}

/// What a reconcile did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Report {
    /// In the order applied.
    pub applied: Vec<Change>,
}

impl Report {
    /// Whether the kernel already held the plan.
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty()
    }
}

/// The overlay data plane of one node's network namespace.
#[derive(Clone, Debug)]
pub struct DataPlane {
    kernel: Kernel,
}

impl DataPlane {
    /// The data plane of the caller's network namespace (the daemon's own).
    ///
    /// # Errors
    /// When no netlink socket can be opened.
    ///
    /// # Caveats
    /// Must be called inside a tokio runtime.
    pub fn new() -> Result<Self, Error> {
        Ok(DataPlane {
            kernel: Kernel::connect()?,
        })
    }

    /// The data plane of the network namespace at `path`, for tests and nodes simulated in
    /// namespaces.
    ///
    /// # Errors
    /// When the namespace cannot be entered or no netlink socket opened there.
    ///
    /// # Caveats
    /// Must be called inside a tokio runtime. The data plane holds the namespace while it lives.
    pub fn in_namespace(path: &Path) -> Result<Self, Error> {
        Ok(DataPlane {
            kernel: Kernel::connect_in(path)?,
        })
    }

    /// What the kernel holds now.
    ///
    /// # Errors
    /// When a netlink dump fails.
    pub async fn observe(&self) -> Result<KernelState, Error> {
        Ok(self.kernel.observe().await?)
    }

    /// Makes the kernel hold `plan`: observe, diff, apply. Every change is tried even when an
    /// earlier one failed, so that one broken endpoint does not hold back the others.
    ///
    /// # Errors
    /// [`Error::Kernel`] when the kernel cannot be read; [`Error::Apply`] when some changes
    /// failed.
    pub async fn reconcile(&self, plan: &NodePlan) -> Result<Report, Error> {
        let present = self.kernel.observe().await?;
        let changes = diff(plan, &present);
        let mut applied = Vec::new();
        let mut failed = Vec::new();
        for change in changes {
            match self.kernel.apply(&change).await {
                Ok(()) => {
                    tracing::debug!(?change, "applied");
                    applied.push(change);
                }
                Err(error) => {
                    tracing::warn!(%error, "data plane change failed");
                    failed.push((change, error));
                }
            }
        }
        if failed.is_empty() {
            Ok(Report { applied })
        } else {
            Err(Error::Apply { applied, failed })
        }
    }

    /// Deletes every `es-` device of the namespace, for leaving the swarm. Task ends of veth pairs
    /// go with their host ends.
    ///
    /// # Errors
    /// As [`DataPlane::reconcile`].
    pub async fn remove_all(&self) -> Result<Report, Error> {
        let nothing = NodePlan {
            underlay_ip: std::net::Ipv4Addr::UNSPECIFIED,
            networks: Vec::new(),
        };
        self.reconcile(&nothing).await
    }
}
