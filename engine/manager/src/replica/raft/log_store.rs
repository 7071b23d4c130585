//! The Raft log on disk, in redb: entries, the vote and the purge point survive kill -9. An
//! append is reported flushed only after redb's commit has fsynced it, so an acknowledged write
//! is on disk on every manager that counted towards its quorum.

use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, RaftLogReader, StorageIOError};
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};

use super::{codec, Entry, LogId, StorageError, TypeConfig, Vote};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// The log store. Cloning it is cheap and gives another handle on the same database.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
}

/// A storage failure, as openraft wants it.
fn failure(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

impl LogStore {
    /// Opens the log in `db`, creating its tables on first use.
    ///
    /// # Errors
    /// The database cannot be written.
    pub fn open(db: Arc<Database>) -> Result<LogStore, AnyError> {
        let txn = db.begin_write().map_err(failure)?;
        txn.open_table(LOG).map_err(failure)?;
        txn.open_table(META).map_err(failure)?;
        txn.commit().map_err(failure)?;
        Ok(LogStore { db })
    }

    /// Before Raft starts: turns a saved committed vote into an uncommitted one for the same
    /// term and candidate.
    ///
    /// openraft 0.9 restores a node whose saved vote is committed for itself as leader of that
    /// old term, with no election. A leader killed and restarted then leads nobody, campaigns
    /// later with a stale log, and delays the cluster's next elections. Uncommitted, the vote
    /// keeps its term and candidate (no second vote in that term is possible), and the node
    /// starts as a follower like any other.
    ///
    /// # Errors
    /// The vote cannot be read or written.
    pub fn forget_leadership(&self) -> Result<(), AnyError> {
        let Some(vote) = self.read_meta::<Vote>(VOTE)? else {
            return Ok(());
        };
        if !vote.is_committed() {
            return Ok(());
        }
        let candidate = vote.leader_id().voted_for().unwrap_or_default();
        let uncommitted = Vote::new(vote.leader_id().term, candidate);
        self.write_meta(VOTE, &uncommitted, Durability::Immediate)
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AnyError> {
        let txn = self.db.begin_read().map_err(failure)?;
        let table = txn.open_table(META).map_err(failure)?;
        match table.get(key).map_err(failure)? {
            Some(bytes) => codec::decode(bytes.value()).map(Some).map_err(failure),
            None => Ok(None),
        }
    }

    fn write_meta<T: Serialize>(
        &self,
        key: &str,
        value: &T,
        durability: Durability,
    ) -> Result<(), AnyError> {
        let bytes = codec::encode(value).map_err(failure)?;
        let mut txn = self.db.begin_write().map_err(failure)?;
        txn.set_durability(durability);
        {
            let mut table = txn.open_table(META).map_err(failure)?;
            table.insert(key, bytes.as_slice()).map_err(failure)?;
        }
        txn.commit().map_err(failure)
    }

    /// [`LogStore::write_meta`], on the blocking pool: the commit waits for fsync, and an
    /// async worker thread must not (there are only two on a small machine).
    async fn write_meta_durably<T: Serialize + Send + 'static>(
        &self,
        key: &'static str,
        value: T,
    ) -> Result<(), AnyError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || store.write_meta(key, &value, Durability::Immediate))
            .await
            .map_err(failure)?
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, AnyError> {
        let txn = self.db.begin_read().map_err(failure)?;
        let table = txn.open_table(LOG).map_err(failure)?;
        let last = table.last().map_err(failure)?;
        let entry: Option<Entry> = match last {
            Some((_, bytes)) => Some(codec::decode(bytes.value()).map_err(failure)?),
            None => None,
        };
        Ok(entry.map(|e| e.log_id))
    }

    fn write_entries(db: &Database, entries: Vec<Entry>) -> Result<(), AnyError> {
        let txn = db.begin_write().map_err(failure)?;
        {
            let mut table = txn.open_table(LOG).map_err(failure)?;
            for entry in &entries {
                let bytes = codec::encode(entry).map_err(failure)?;
                table
                    .insert(entry.log_id.index, bytes.as_slice())
                    .map_err(failure)?;
            }
        }
        // Durability::Immediate (redb's default): the commit returns after fsync.
        txn.commit().map_err(failure)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let read = || -> Result<Vec<Entry>, AnyError> {
            let txn = self.db.begin_read().map_err(failure)?;
            let table = txn.open_table(LOG).map_err(failure)?;
            let mut entries = Vec::new();
            for item in table.range(range).map_err(failure)? {
                let (_, bytes) = item.map_err(failure)?;
                entries.push(codec::decode(bytes.value()).map_err(failure)?);
            }
            Ok(entries)
        };
        read().map_err(|e| StorageIOError::read_logs(e).into())
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogStore;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self
            .read_meta(LAST_PURGED)
            .map_err(StorageIOError::read_logs)?;
        let last = self.last_entry_id().map_err(StorageIOError::read_logs)?;
        Ok(LogState {
            last_purged_log_id: last_purged,
            last_log_id: last.or(last_purged),
        })
    }

    async fn get_log_reader(&mut self) -> LogStore {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.write_meta_durably(VOTE, *vote)
            .await
            .map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(VOTE)
            .map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Durable, although it looks like a mere replay hint: openraft 0.9 restores a restarted
        // leader without committing a new entry, and then serves linearizable reads from this
        // value. openraft saves it before applying (and so acknowledging) the entries, so
        // once on disk no acknowledged write is above it. A lazily written hint let a read
        // after kill -9 miss an acknowledged write (see the full-restart end-to-end test).
        self.write_meta_durably(COMMITTED, committed)
            .await
            .map_err(|e| StorageIOError::write(e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed: Option<Option<LogId>> =
            self.read_meta(COMMITTED).map_err(StorageIOError::read)?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let db = self.db.clone();
        // redb blocks on fsync: keep it off the async workers.
        let written = tokio::task::spawn_blocking(move || LogStore::write_entries(&db, entries))
            .await
            .map_err(failure)
            .and_then(|r| r);
        match written {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let remove = || -> Result<(), AnyError> {
            let txn = self.db.begin_write().map_err(failure)?;
            {
                let mut table = txn.open_table(LOG).map_err(failure)?;
                table
                    .retain_in(log_id.index.., |_, _| false)
                    .map_err(failure)?;
            }
            txn.commit().map_err(failure)
        };
        remove().map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let remove = || -> Result<(), AnyError> {
            let bytes = codec::encode(&log_id).map_err(failure)?;
            let txn = self.db.begin_write().map_err(failure)?;
            {
                // The purge point and the removal land in one transaction, so a crash between
                // them cannot leave a log that starts later than it says.
                let mut meta = txn.open_table(META).map_err(failure)?;
                meta.insert(LAST_PURGED, bytes.as_slice())
                    .map_err(failure)?;
                let mut table = txn.open_table(LOG).map_err(failure)?;
                table
                    .retain_in(..=log_id.index, |_, _| false)
                    .map_err(failure)?;
            }
            txn.commit().map_err(failure)
        };
        remove().map_err(|e| StorageIOError::write_logs(e).into())
    }
}
