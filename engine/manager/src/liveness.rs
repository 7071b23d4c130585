//! What the leader has heard from each node during its term: heartbeats, task session
//! reports, what each node trusts and whether its runtime runs. Memory only, never in Raft: a
//! new leader starts afresh, with a grace period so that an election alone marks no node down.
//! The decisions drawn from it are `essaim_core::liveness`'s.

use std::time::Duration;

use essaim_api::tls::{CertRole, TlsState};
use essaim_core::liveness::{self, Millis, NodeTrust};
use essaim_core::ClusterState;
use parking_lot::Mutex;
use tokio::sync::Notify;

use crate::clock::Clock;

pub struct Liveness {
    heard: Mutex<liveness::Liveness>,
    clock: Clock,
    /// Wakes the leader's node duties early: a node came back, a role changed, a CA rotation
    /// started.
    wake: Notify,
}

impl Liveness {
    pub fn new(clock: Clock) -> Liveness {
        Liveness {
            heard: Mutex::new(liveness::Liveness::default()),
            clock,
            wake: Notify::new(),
        }
    }

    /// A fresh term of leadership: what was heard before is someone else's business.
    pub fn start_term(&self) {
        self.heard.lock().start_leading(self.clock.millis());
    }

    pub fn now(&self) -> Millis {
        self.clock.millis()
    }

    /// The node spoke: a heartbeat, a task report, a join.
    pub fn record(&self, node: &str) {
        self.heard.lock().record(node, self.clock.millis());
    }

    /// A heartbeat, with the role of the certificate it came with: a promoted node becomes a
    /// voter only once it holds a manager certificate, or other managers would refuse it.
    pub fn record_heartbeat(&self, node: &str, cert_role: CertRole) {
        self.heard.lock().record_heartbeat(
            node,
            self.clock.millis(),
            cert_role == CertRole::Manager,
        );
    }

    /// What a node said of its runtime: `problem` is empty when it can run tasks.
    pub fn record_runtime(&self, node: &str, problem: &str) {
        self.heard.lock().record_runtime(node, problem);
    }

    pub fn record_trust(&self, node: &str, trust: NodeTrust) {
        self.heard.lock().record_trust(node, trust);
    }

    /// Forgets a node that left, so its last heartbeat cannot make it look alive.
    pub fn forget(&self, node: &str) {
        self.heard.lock().forget(node);
    }

    /// True when the node reported within `window`, or leadership is younger than that.
    pub fn is_alive(&self, node: &str, window: Duration) -> bool {
        self.heard
            .lock()
            .is_alive(node, millis(window), self.clock.millis())
    }

    /// True when the node itself reported within `window` (the grace period does not count).
    pub fn has_reported(&self, node: &str, window: Duration) -> bool {
        self.heard
            .lock()
            .has_reported(node, millis(window), self.clock.millis())
    }

    /// Decides from what was heard, under the lock: keep `decide` short.
    pub fn read<T>(&self, decide: impl FnOnce(&liveness::Liveness) -> T) -> T {
        decide(&self.heard.lock())
    }

    pub fn wake(&self) {
        self.wake.notify_one();
    }

    pub async fn woken(&self) {
        self.wake.notified().await;
    }
}

/// The silence after which a node counts as down, from the cluster's settings.
pub fn down_after(state: &ClusterState) -> Duration {
    let config = state
        .cluster
        .as_ref()
        .map(|c| c.config.clone())
        .unwrap_or_default();
    Duration::from_millis(config.node_down_after_ms())
}

/// What this node trusts, and which CA signed its certificate.
pub fn trust_of(tls: &TlsState) -> NodeTrust {
    tls.credentials()
        .map(|c| NodeTrust {
            roots_fingerprint: c.roots_fingerprint(),
            issuer_fingerprint: c.issuer_fingerprint().unwrap_or_default(),
        })
        .unwrap_or_default()
}

pub fn millis(window: Duration) -> Millis {
    u64::try_from(window.as_millis()).unwrap_or(u64::MAX)
}
