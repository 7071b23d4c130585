//! The state machine: applies committed entries to the in-memory [`ClusterState`], publishes
//! their change events in commit order, and saves and loads snapshots in redb. After a restart
//! the state comes back from the last snapshot, and openraft replays the committed log after it.

use std::io::Cursor;
use std::sync::Arc;

use parking_lot::{RwLock, RwLockReadGuard};

use essaim_core::{ClusterState, Event, Response};
use openraft::storage::RaftStateMachine;
use openraft::{AnyError, EntryPayload, RaftSnapshotBuilder, StorageIOError};
use redb::{Database, TableDefinition};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use super::{
    codec, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};

const SNAPSHOT: TableDefinition<&str, &[u8]> = TableDefinition::new("snapshot");
const SNAPSHOT_META: &str = "meta";
const SNAPSHOT_DATA: &str = "data";

/// How many event batches a slow subscriber may fall behind before it is told it lagged.
const EVENT_BACKLOG: usize = 4096;

/// The applied state and the change feed, shared between the state machine (the only writer)
/// and every reader on this manager.
pub struct SharedState {
    applied: RwLock<Applied>,
    events: broadcast::Sender<Arc<Vec<Event>>>,
    /// The last applied index, published once the state shows it. Unlike `events` it moves
    /// with every entry, those that change no object too (blank and membership entries), and
    /// a late subscriber sees where it stands without a race.
    index: watch::Sender<u64>,
}

#[derive(Default, Serialize, Deserialize)]
struct Applied {
    last_applied: Option<LogId>,
    last_membership: StoredMembership,
    state: ClusterState,
}

impl SharedState {
    fn new() -> Arc<SharedState> {
        Arc::new(SharedState {
            applied: RwLock::new(Applied::default()),
            events: broadcast::channel(EVENT_BACKLOG).0,
            index: watch::Sender::new(0),
        })
    }

    /// The state as of the last applied entry. Hold the guard briefly: the state machine waits
    /// for it.
    pub fn read(&self) -> StateGuard<'_> {
        StateGuard(self.applied.read())
    }

    /// A copy of the state as of the last applied entry, for a long read (a pass over the
    /// whole cluster): it costs a few pointers, and the state machine goes on applying while
    /// it is read. Changes made after it copy only what they change.
    pub fn copy(&self) -> ClusterState {
        self.applied.read().state.clone()
    }

    /// Change events from now on, one batch per applied group of entries, in commit order.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<Vec<Event>>> {
        self.events.subscribe()
    }

    /// The log index of the last applied entry.
    pub fn applied_index(&self) -> u64 {
        self.read().0.last_applied.map(|id| id.index).unwrap_or(0)
    }

    /// The last applied index, now and as it moves: every entry applied from now on shows,
    /// whether it changed an object or not. The current value counts as seen, so
    /// `wait_for(|index| *index > after)` looks at it first and misses nothing.
    pub fn watch_applied(&self) -> watch::Receiver<u64> {
        self.index.subscribe()
    }

    /// Tells the index watchers where the state stands, once its lock is released.
    fn publish_index(&self) {
        let index = self.applied_index();
        self.index.send_if_modified(|published| {
            let moved = *published != index;
            *published = index;
            moved
        });
    }
}

/// Read access to the applied [`ClusterState`].
pub struct StateGuard<'a>(RwLockReadGuard<'a, Applied>);

impl std::ops::Deref for StateGuard<'_> {
    type Target = ClusterState;
    fn deref(&self) -> &ClusterState {
        &self.0.state
    }
}

/// The state machine handed to openraft. Cloning gives another handle on the same state.
#[derive(Clone)]
pub struct StateMachine {
    db: Arc<Database>,
    shared: Arc<SharedState>,
}

fn failure(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

impl StateMachine {
    /// Opens the state machine, restoring the last snapshot saved in `db`.
    ///
    /// # Errors
    /// The database cannot be read, or holds a snapshot this version cannot decode.
    pub fn open(db: Arc<Database>) -> Result<StateMachine, AnyError> {
        let txn = db.begin_write().map_err(failure)?;
        txn.open_table(SNAPSHOT).map_err(failure)?;
        txn.commit().map_err(failure)?;
        let machine = StateMachine {
            db,
            shared: SharedState::new(),
        };
        if let Some((_, data)) = machine.load_snapshot()? {
            machine.restore(&data)?;
        }
        machine.shared.publish_index();
        Ok(machine)
    }

    pub fn shared(&self) -> Arc<SharedState> {
        self.shared.clone()
    }

    fn write_guard(&self) -> parking_lot::RwLockWriteGuard<'_, Applied> {
        self.shared.applied.write()
    }

    fn restore(&self, data: &[u8]) -> Result<(), AnyError> {
        let mut applied: Applied = codec::decode(data).map_err(failure)?;
        applied.state.rebuild_indexes();
        *self.write_guard() = applied;
        Ok(())
    }

    fn load_snapshot(&self) -> Result<Option<(SnapshotMeta, Vec<u8>)>, AnyError> {
        let txn = self.db.begin_read().map_err(failure)?;
        let table = txn.open_table(SNAPSHOT).map_err(failure)?;
        let meta = table.get(SNAPSHOT_META).map_err(failure)?;
        let data = table.get(SNAPSHOT_DATA).map_err(failure)?;
        match (meta, data) {
            (Some(meta), Some(data)) => {
                let meta: SnapshotMeta = codec::decode(meta.value()).map_err(failure)?;
                Ok(Some((meta, data.value().to_vec())))
            }
            _ => Ok(None),
        }
    }

    fn save_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), AnyError> {
        let meta_bytes = codec::encode(meta).map_err(failure)?;
        let txn = self.db.begin_write().map_err(failure)?;
        {
            let mut table = txn.open_table(SNAPSHOT).map_err(failure)?;
            table
                .insert(SNAPSHOT_META, meta_bytes.as_slice())
                .map_err(failure)?;
            table.insert(SNAPSHOT_DATA, data).map_err(failure)?;
        }
        txn.commit().map_err(failure)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        // Encode under the read lock, so the snapshot is exactly the state at last_applied.
        let (data, last_applied, last_membership) = {
            let applied = self.shared.applied.read();
            let data = codec::encode(&*applied)
                .map_err(|e| StorageIOError::write_snapshot(None, failure(e)))?;
            (data, applied.last_applied, applied.last_membership.clone())
        };
        let snapshot_id = match last_applied {
            Some(id) => format!("{}-{}", id.leader_id, id.index),
            None => "empty".to_string(),
        };
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership,
            snapshot_id,
        };
        self.save_snapshot(&meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = self.shared.applied.read();
        Ok((applied.last_applied, applied.last_membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Response>, StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let mut responses = Vec::new();
        let mut events = Vec::new();
        {
            let mut applied = self.write_guard();
            for entry in entries {
                applied.last_applied = Some(entry.log_id);
                let response = match entry.payload {
                    EntryPayload::Blank => Response::default(),
                    EntryPayload::Normal(request) => {
                        applied
                            .state
                            .apply(entry.log_id.index, &request, &mut events)
                    }
                    EntryPayload::Membership(membership) => {
                        applied.last_membership =
                            StoredMembership::new(Some(entry.log_id), membership);
                        Response::default()
                    }
                };
                responses.push(response);
            }
        }
        if !events.is_empty() {
            // Nobody listening is fine: control loops subscribe only on the leader.
            let _ = self.shared.events.send(Arc::new(events));
        }
        self.shared.publish_index();
        Ok(responses)
    }

    async fn get_snapshot_builder(&mut self) -> StateMachine {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        self.restore(&data)
            .map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), e))?;
        {
            // The snapshot's own metadata is authoritative for where it stands.
            let mut applied = self.write_guard();
            applied.last_applied = meta.last_log_id;
            applied.last_membership = meta.last_membership.clone();
        }
        self.shared.publish_index();
        self.save_snapshot(meta, &data)
            .map_err(|e| StorageIOError::write_snapshot(Some(meta.signature()), e))?;
        tracing::info!(
            up_to = meta.last_log_id.map(|id| id.index).unwrap_or(0),
            bytes = data.len(),
            "installed a snapshot from the leader"
        );
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let loaded = self
            .load_snapshot()
            .map_err(|e| StorageIOError::read_snapshot(None, e))?;
        Ok(loaded.map(|(meta, data)| Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use essaim_core::model::{
        Availability, Node, NodeDescription, NodeSpec, NodeState, NodeStatus, Role,
    };
    use essaim_core::{Change, Command, Request, Timestamp};
    use openraft::{CommittedLeaderId, Entry, LogId};

    use super::*;

    fn node(id: &str) -> Node {
        Node {
            id: id.to_string(),
            version: 0,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            raft_id: 1,
            ingress: None,
            spec: NodeSpec {
                role: Role::Worker,
                availability: Availability::Active,
                labels: Default::default(),
            },
            description: NodeDescription::default(),
            status: NodeStatus {
                state: NodeState::Ready,
                message: String::new(),
            },
        }
    }

    fn entry(index: u64, id: &str) -> Entry<TypeConfig> {
        Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
            payload: EntryPayload::Normal(Request::one(
                Timestamp(index),
                Command::AddNode { node: node(id) },
            )),
        }
    }

    #[tokio::test]
    async fn subscribers_get_change_events_in_commit_order() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Arc::new(redb::Database::create(dir.path().join("raft.redb")).expect("db"));
        let mut machine = StateMachine::open(db).expect("open");
        let mut events = machine.shared().subscribe();
        machine
            .apply(vec![entry(1, "a"), entry(2, "b")])
            .await
            .expect("apply");
        machine.apply(vec![entry(3, "c")]).await.expect("apply");
        let mut seen = Vec::new();
        for _ in 0..2 {
            let batch = events.recv().await.expect("a batch");
            for event in batch.iter() {
                let Change::Node(node) = &event.change else {
                    panic!("unexpected {:?}", event.change);
                };
                seen.push((event.index, node.id.clone()));
            }
        }
        assert_eq!(
            seen,
            [
                (1, "a".to_string()),
                (2, "b".to_string()),
                (3, "c".to_string())
            ]
        );
        assert_eq!(machine.shared().applied_index(), 3);
    }

    #[tokio::test]
    async fn a_lease_survives_a_restart_from_a_snapshot() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Arc::new(redb::Database::create(dir.path().join("raft.redb")).expect("db"));
        let mut machine = StateMachine::open(db.clone()).expect("open");
        let acquire = Entry {
            log_id: LogId::new(CommittedLeaderId::new(1, 1), 1),
            payload: EntryPayload::Normal(Request::one(
                Timestamp(1000),
                Command::AcquireLock {
                    name: "nightly".to_string(),
                    holder: "a".to_string(),
                    ttl_ms: 5000,
                },
            )),
        };
        machine.apply(vec![acquire]).await.expect("apply");
        machine.build_snapshot().await.expect("snapshot");
        drop(machine);
        // The snapshot is bincode, like the log: the lease table must round-trip through it.
        let restored = StateMachine::open(db).expect("reopen");
        let shared = restored.shared();
        let state = shared.read();
        let lease = state.lock("nightly").expect("the lease is back");
        assert_eq!(lease.holder, "a");
        assert_eq!(lease.expires_at, Timestamp(6000));
    }

    #[test]
    fn update_configs_and_statuses_round_trip_through_bincode() {
        use essaim_core::model::{
            Checkpoint, FailureAction, Service, ServiceMode, ServiceSpec, UpdateConfig,
            UpdateOrder, UpdateState, UpdateStatus,
        };
        let config = UpdateConfig {
            parallelism: 2,
            delay_ms: 10,
            monitor_ms: 1_000,
            failure_action: FailureAction::Rollback,
            max_failure_ratio_permille: 250,
            order: UpdateOrder::StartFirst,
            pause_after: Some(Checkpoint::Percent(50)),
        };
        let spec = ServiceSpec {
            name: "web".to_string(),
            labels: Default::default(),
            mode: ServiceMode::Replicated { replicas: 4 },
            task: Default::default(),
            ports: Vec::new(),
            update_config: config.clone(),
            rollback_config: UpdateConfig {
                pause_after: Some(Checkpoint::Tasks(1)),
                ..config.clone()
            },
            endpoint_mode: Default::default(),
        };
        let mut status =
            UpdateStatus::start(UpdateState::RollbackPaused, Timestamp(3), &config, 4, "why");
        status.next_batch_at = Some(Timestamp(9));
        let service = Service {
            id: "s1".to_string(),
            version: 1,
            created_at: Timestamp(1),
            updated_at: Timestamp(2),
            spec: spec.clone(),
            previous_spec: Some(spec),
            update_status: Some(status.clone()),
            virtual_ips: Vec::new(),
        };
        let request = Request::new(
            Timestamp(5),
            vec![
                Command::CreateService {
                    service: service.clone(),
                },
                Command::SetUpdateStatus {
                    service_id: "s1".to_string(),
                    expected: None,
                    status,
                },
            ],
        );
        let bytes = crate::replica::raft::codec::encode(&request).expect("encode");
        let back: Request = crate::replica::raft::codec::decode(&bytes).expect("decode");
        assert_eq!(back, request);
    }

    #[tokio::test]
    async fn index_watchers_see_every_entry_even_one_that_changes_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Arc::new(redb::Database::create(dir.path().join("raft.redb")).expect("db"));
        let mut machine = StateMachine::open(db).expect("open");
        machine.apply(vec![entry(1, "a")]).await.expect("apply");
        // Subscribed after entry 1: it is seen as where things stand, not missed.
        let mut index = machine.shared().watch_applied();
        assert_eq!(*index.borrow(), 1);
        let blank = Entry {
            log_id: LogId::new(CommittedLeaderId::new(2, 1), 2),
            payload: EntryPayload::Blank,
        };
        machine.apply(vec![blank]).await.expect("apply");
        let seen = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            index.wait_for(|index| *index > 1),
        )
        .await
        .expect("a blank entry wakes the watchers")
        .map(|index| *index)
        .expect("the state machine is alive");
        assert_eq!(seen, 2);
    }
}
