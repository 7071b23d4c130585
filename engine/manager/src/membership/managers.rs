//! The managers this node knows, for its heartbeats and task sessions: refreshed by every
//! heartbeat answer, and kept on disk so that a restarted worker still finds its cluster after
//! the managers it joined through are gone.

use std::sync::Arc;

use parking_lot::RwLock;

use crate::replica::{Leader, Replica};

pub struct KnownManagers {
    replica: Arc<Replica>,
    addrs: RwLock<Vec<String>>,
}

impl KnownManagers {
    pub fn new(replica: Arc<Replica>) -> KnownManagers {
        let addrs = RwLock::new(replica.identity.manager_addrs.clone());
        KnownManagers { replica, addrs }
    }

    pub fn addrs(&self) -> Vec<String> {
        self.addrs.read().clone()
    }

    /// Remembers the managers a heartbeat told us about, on disk too.
    pub fn set(&self, addrs: Vec<String>) {
        if addrs.is_empty() || addrs == self.addrs() {
            return;
        }
        *self.addrs.write() = addrs.clone();
        let mut file = self.replica.identity.clone();
        file.manager_addrs = addrs;
        if let Err(e) = file.save(self.replica.data_dir()) {
            tracing::warn!("cannot save the manager list: {e}");
        }
    }

    /// Where to look for the leader: the leader first when known, then every manager known.
    pub fn leader_first(&self) -> Vec<String> {
        let mut targets = match self.replica.leader() {
            Leader::Me => vec![self.replica.addr.clone()],
            Leader::Other { addr, .. } => vec![addr],
            Leader::Unknown => Vec::new(),
        };
        for addr in self.addrs() {
            if !targets.contains(&addr) {
                targets.push(addr);
            }
        }
        targets
    }
}
