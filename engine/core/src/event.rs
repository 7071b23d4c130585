//! Change events: what each commit changed, delivered to subscribers in commit order.

use serde::{Deserialize, Serialize};

use crate::model::{Cluster, Lease, Network, Node, ObjectId, Service, StoredFile, Task};

/// One change, with the Raft log index of the entry that made it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub index: u64,
    pub change: Change,
}

/// The object as it is after the change, or the ID of the object that went away.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
// Variants are built once and moved, never copied around: boxing would only add noise.
#[allow(clippy::large_enum_variant)]
pub enum Change {
    Cluster(Cluster),
    Node(Node),
    NodeRemoved {
        id: ObjectId,
    },
    Service(Service),
    ServiceRemoved {
        id: ObjectId,
    },
    Task(Task),
    /// A task forgotten, with the node it was on, whose agent may forget it too.
    TaskRemoved {
        id: ObjectId,
        node_id: Option<ObjectId>,
    },
    Network(Network),
    NetworkRemoved {
        id: ObjectId,
    },
    /// A secret or config created (a secret's data sealed).
    File(StoredFile),
    FileRemoved {
        id: ObjectId,
    },
    /// A lock taken, renewed or passed to another holder.
    Lock {
        name: String,
        lease: Lease,
    },
    /// A lock released, or an expired lease forgotten.
    LockRemoved {
        name: String,
    },
}
