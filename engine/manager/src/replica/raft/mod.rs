//! Raft for essaim: the type configuration, the durable log store, the state machine that
//! applies our commands, and the gRPC network between managers.

pub mod log_store;
pub mod network;
pub mod state_machine;

use std::io::Cursor;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use essaim_core::{Request, Response};
use openraft::{BasicNode, Config, SnapshotPolicy};

openraft::declare_raft_types!(
    /// Our Raft types: entries carry [`Request`] batches, managers are addressed by their
    /// cluster port.
    pub TypeConfig:
        D = Request,
        R = Response,
        NodeId = u64,
        Node = BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type Raft = openraft::Raft<TypeConfig>;
pub use crate::identity::RaftId;
pub type StorageError = openraft::StorageError<RaftId>;
pub type LogId = openraft::LogId<RaftId>;
pub type Vote = openraft::Vote<RaftId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type StoredMembership = openraft::StoredMembership<RaftId, BasicNode>;
pub type SnapshotMeta = openraft::SnapshotMeta<RaftId, BasicNode>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;

/// Raft timings. Elections must be quick to heal fast, yet slow enough that a loaded
/// two-core machine does not mistake its own delays for a dead leader.
#[derive(Clone, Debug)]
pub struct RaftTimings {
    pub heartbeat: Duration,
    pub election_min: Duration,
    pub election_max: Duration,
    /// A snapshot is taken every this many entries; it bounds the log on disk and the replay
    /// at start-up.
    pub snapshot_interval: u64,
}

impl Default for RaftTimings {
    fn default() -> Self {
        RaftTimings {
            heartbeat: Duration::from_millis(50),
            election_min: Duration::from_millis(150),
            election_max: Duration::from_millis(225),
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
        }
    }
}

/// When this node last heard from a leader (an AppendEntries call, heartbeats included), and
/// from candidates: the inputs of our own failure detector (see `super::election`).
#[derive(Default)]
pub struct LeaderContact {
    /// The leader's last word; `None` until a leader has been heard from since this process
    /// started.
    pub leader: Moment,
    /// A candidate whose log is ahead of ours asked for our vote: it can win, and we cannot.
    pub better_candidate: Moment,
    /// A candidate whose log is behind ours asked for our vote: it cannot win, and it took a
    /// term that our own campaign may have needed.
    pub worse_candidate: Moment,
    /// We gave our vote to another manager.
    pub vote_granted: Moment,
}

/// The last time something happened, if it has.
#[derive(Default)]
pub struct Moment(Mutex<Option<Instant>>);

impl Moment {
    /// It happens now.
    pub fn mark(&self) {
        *self.0.lock() = Some(Instant::now());
    }

    pub fn last(&self) -> Option<Instant> {
        *self.0.lock()
    }
}

/// How many entries already in a snapshot stay in the log as well, so that a briefly lagging
/// manager catches up from the log rather than by a whole snapshot.
const MAX_LOGS_KEPT_IN_SNAPSHOT: u64 = 1000;
pub const DEFAULT_SNAPSHOT_INTERVAL: u64 = 5000;
const MAX_ENTRIES_PER_APPEND: u64 = 8;

/// The openraft configuration every manager runs with.
///
/// # Errors
/// Timings that openraft rejects (an election timeout not above the heartbeat).
pub fn config(timings: &RaftTimings) -> anyhow::Result<Arc<Config>> {
    let config = Config {
        cluster_name: "essaim".to_string(),
        heartbeat_interval: millis(timings.heartbeat),
        election_timeout_min: millis(timings.election_min),
        election_timeout_max: millis(timings.election_max),
        snapshot_policy: SnapshotPolicy::LogsSinceLast(timings.snapshot_interval),
        max_in_snapshot_log_to_keep: MAX_LOGS_KEPT_IN_SNAPSHOT.min(timings.snapshot_interval / 2),
        install_snapshot_timeout: 10_000,
        // Few entries per AppendEntries: openraft gives each call one heartbeat interval,
        // and entries can hold hundreds of commands.
        max_payload_entries: MAX_ENTRIES_PER_APPEND,
        ..Default::default()
    };
    Ok(Arc::new(config.validate()?))
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The one binary encoding of what Raft stores and sends: compact and fast, for log entries of
/// thousands of commands.
pub mod codec {
    use serde::{de::DeserializeOwned, Serialize};

    /// # Errors
    /// Only for values serde cannot represent, which would be a bug.
    pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, bincode::Error> {
        bincode::serialize(value)
    }

    /// # Errors
    /// Bytes that are not an encoding of `T`.
    pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, bincode::Error> {
        bincode::deserialize(bytes)
    }
}
