//! The Raft log on disk, in redb: entries, the vote and the purge point survive kill -9. An
//! append is reported flushed only after redb's commit has fsynced it, so an acknowledged write
//! is on disk on every manager that counted towards its quorum.
//!
//! Writes go to one writer thread, in order. `append` hands its entries over and returns at
//! once (they are readable from memory until they are on disk), so the leader sends them to the
//! followers while its own fsync runs, as the Raft thesis suggests (10.2.1): a write waits for
//! the slower of two fsyncs instead of their sum. Writes that queue up while one commits go
//! into the next transaction together, with one fsync.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::ops::RangeBounds;
use std::sync::{mpsc, Arc};

use openraft::storage::{LogFlushed, LogState, RaftLogStorage};
use openraft::{AnyError, RaftLogReader, StorageIOError};
use parking_lot::Mutex;
use redb::{Database, Durability, ReadableTable, TableDefinition};
use serde::{de::DeserializeOwned, Serialize};
use tokio::sync::oneshot;

use super::{codec, Entry, LogId, StorageError, TypeConfig, Vote};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("raft_meta");

const VOTE: &str = "vote";
const COMMITTED: &str = "committed";
const LAST_PURGED: &str = "last_purged";

/// How many queued writes one transaction takes at most.
const WRITES_PER_TRANSACTION: usize = 64;

/// The log store. Cloning it is cheap and gives another handle on the same log.
#[derive(Clone)]
pub struct LogStore {
    db: Arc<Database>,
    /// Entries handed to the writer and not yet on disk, by index.
    unflushed: Arc<Mutex<BTreeMap<u64, Entry>>>,
    writer: mpsc::Sender<Write>,
}

type Done = oneshot::Sender<Result<(), AnyError>>;

/// One change for the writer thread.
enum Write {
    Entries {
        entries: Vec<Entry>,
        flushed: LogFlushed<TypeConfig>,
    },
    Meta {
        key: &'static str,
        bytes: Vec<u8>,
        /// Not durable: on disk with the next durable transaction.
        durable: bool,
        done: Option<Done>,
    },
    /// Removes the entries from this index on.
    Truncate { from: u64, done: Done },
    /// Removes the entries up to this one, and records it as the purge point.
    Purge { upto: LogId, done: Done },
}

impl Write {
    fn durable(&self) -> bool {
        !matches!(self, Write::Meta { durable: false, .. })
    }
}

/// A storage failure, as openraft wants it.
fn failure(e: impl std::fmt::Display) -> AnyError {
    AnyError::error(e.to_string())
}

fn writer_gone() -> AnyError {
    AnyError::error("the Raft log's writer has stopped")
}

impl LogStore {
    /// Opens the log in `db`, creating its tables on first use, and starts its writer thread
    /// (which ends when the last handle is dropped).
    ///
    /// # Errors
    /// The database cannot be written.
    pub fn open(db: Arc<Database>) -> Result<LogStore, AnyError> {
        let txn = db.begin_write().map_err(failure)?;
        txn.open_table(LOG).map_err(failure)?;
        txn.open_table(META).map_err(failure)?;
        txn.commit().map_err(failure)?;
        let unflushed = Arc::new(Mutex::new(BTreeMap::new()));
        let (writer, queue) = mpsc::channel();
        let thread_db = db.clone();
        let thread_unflushed = unflushed.clone();
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || write_in_order(&thread_db, &thread_unflushed, &queue))
            .map_err(failure)?;
        Ok(LogStore {
            db,
            unflushed,
            writer,
        })
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
        let bytes = codec::encode(&uncommitted).map_err(failure)?;
        let txn = self.db.begin_write().map_err(failure)?;
        txn.open_table(META)
            .map_err(failure)?
            .insert(VOTE, bytes.as_slice())
            .map_err(failure)?;
        txn.commit().map_err(failure)
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, AnyError> {
        let txn = self.db.begin_read().map_err(failure)?;
        let table = txn.open_table(META).map_err(failure)?;
        match table.get(key).map_err(failure)? {
            Some(bytes) => codec::decode(bytes.value()).map(Some).map_err(failure),
            None => Ok(None),
        }
    }

    /// Hands `write` to the writer thread and waits for its transaction to commit.
    async fn write_and_wait(&self, write: impl FnOnce(Done) -> Write) -> Result<(), AnyError> {
        let (done, committed) = oneshot::channel();
        self.writer.send(write(done)).map_err(|_| writer_gone())?;
        committed.await.map_err(|_| writer_gone())?
    }

    async fn write_meta_durably<T: Serialize>(
        &self,
        key: &'static str,
        value: &T,
    ) -> Result<(), AnyError> {
        let bytes = codec::encode(value).map_err(failure)?;
        self.write_and_wait(|done| Write::Meta {
            key,
            bytes,
            durable: true,
            done: Some(done),
        })
        .await
    }

    fn last_entry_id(&self) -> Result<Option<LogId>, AnyError> {
        if let Some((_, entry)) = self.unflushed.lock().last_key_value() {
            return Ok(Some(entry.log_id));
        }
        let txn = self.db.begin_read().map_err(failure)?;
        let table = txn.open_table(LOG).map_err(failure)?;
        let last = table.last().map_err(failure)?;
        let entry: Option<Entry> = match last {
            Some((_, bytes)) => Some(codec::decode(bytes.value()).map_err(failure)?),
            None => None,
        };
        Ok(entry.map(|e| e.log_id))
    }
}

/// The writer thread: takes the queued writes in order, as many as wait, into one transaction.
fn write_in_order(
    db: &Database,
    unflushed: &Mutex<BTreeMap<u64, Entry>>,
    queue: &mpsc::Receiver<Write>,
) {
    while let Ok(first) = queue.recv() {
        let mut batch = vec![first];
        while batch.len() < WRITES_PER_TRANSACTION {
            match queue.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let outcome = commit(db, &batch);
        if outcome.is_ok() {
            // On disk now: read from there. An index truncated and appended again meanwhile
            // holds a newer entry, which stays.
            let mut unflushed = unflushed.lock();
            for write in &batch {
                if let Write::Entries { entries, .. } = write {
                    for entry in entries {
                        if unflushed.get(&entry.log_id.index).map(|e| e.log_id)
                            == Some(entry.log_id)
                        {
                            unflushed.remove(&entry.log_id.index);
                        }
                    }
                }
            }
        }
        for write in batch {
            let result = outcome.clone().map_err(AnyError::error);
            match write {
                Write::Entries { flushed, .. } => {
                    flushed
                        .log_io_completed(result.map_err(|e| std::io::Error::other(e.to_string())));
                }
                Write::Meta { done, .. } => {
                    if let Some(done) = done {
                        let _ = done.send(result);
                    } else if let Err(e) = result {
                        tracing::warn!("cannot save the Raft log's committed index: {e}");
                    }
                }
                Write::Truncate { done, .. } | Write::Purge { done, .. } => {
                    let _ = done.send(result);
                }
            }
        }
    }
}

/// Commits `batch` as one transaction: durable (fsynced) unless it holds only hints.
fn commit(db: &Database, batch: &[Write]) -> Result<(), String> {
    let write = || -> Result<(), AnyError> {
        let mut txn = db.begin_write().map_err(failure)?;
        if !batch.iter().any(Write::durable) {
            txn.set_durability(Durability::None);
        }
        {
            let mut log = txn.open_table(LOG).map_err(failure)?;
            let mut meta = txn.open_table(META).map_err(failure)?;
            for write in batch {
                match write {
                    Write::Entries { entries, .. } => {
                        for entry in entries {
                            let bytes = codec::encode(entry).map_err(failure)?;
                            log.insert(entry.log_id.index, bytes.as_slice())
                                .map_err(failure)?;
                        }
                    }
                    Write::Meta { key, bytes, .. } => {
                        meta.insert(*key, bytes.as_slice()).map_err(failure)?;
                    }
                    Write::Truncate { from, .. } => {
                        log.retain_in(*from.., |_, _| false).map_err(failure)?;
                    }
                    Write::Purge { upto, .. } => {
                        // The purge point and the removal land in one transaction, so a crash
                        // between them cannot leave a log that starts later than it says.
                        let bytes = codec::encode(upto).map_err(failure)?;
                        meta.insert(LAST_PURGED, bytes.as_slice())
                            .map_err(failure)?;
                        log.retain_in(..=upto.index, |_, _| false)
                            .map_err(failure)?;
                    }
                }
            }
        }
        // Durability::Immediate (redb's default): the commit returns after fsync.
        txn.commit().map_err(failure)
    };
    write().map_err(|e| e.to_string())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        // The entries not on disk yet are taken first: one that reaches the disk between the
        // two reads is then found in one of them, never in neither.
        let unflushed: Vec<Entry> = self
            .unflushed
            .lock()
            .range(range.clone())
            .map(|(_, entry)| entry.clone())
            .collect();
        let read = || -> Result<Vec<Entry>, AnyError> {
            let txn = self.db.begin_read().map_err(failure)?;
            let table = txn.open_table(LOG).map_err(failure)?;
            let mut entries = BTreeMap::new();
            for item in table.range(range).map_err(failure)? {
                let (index, bytes) = item.map_err(failure)?;
                entries.insert(
                    index.value(),
                    codec::decode(bytes.value()).map_err(failure)?,
                );
            }
            entries.extend(unflushed.into_iter().map(|e| (e.log_id.index, e)));
            Ok(entries.into_values().collect())
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
        self.write_meta_durably(VOTE, vote)
            .await
            .map_err(|e| StorageIOError::write_vote(e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.read_meta(VOTE)
            .map_err(|e| StorageIOError::read_vote(e).into())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // A hint for the replay after a restart, written without an fsync of its own: it
        // reaches the disk with the next append. A node starts as a follower (see
        // `forget_leadership`), so a hint behind the truth only delays its replay until a
        // leader tells it the commit index; nothing is served from it.
        let bytes = codec::encode(&committed).map_err(|e| StorageIOError::write(failure(e)))?;
        self.writer
            .send(Write::Meta {
                key: COMMITTED,
                bytes,
                durable: false,
                done: None,
            })
            .map_err(|_| StorageIOError::write(writer_gone()).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        let committed: Option<Option<LogId>> =
            self.read_meta(COMMITTED).map_err(StorageIOError::read)?;
        Ok(committed.flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        flushed: LogFlushed<TypeConfig>,
    ) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        // Readable from memory as soon as this returns, as openraft requires.
        self.unflushed
            .lock()
            .extend(entries.iter().map(|e| (e.log_id.index, e.clone())));
        self.writer
            .send(Write::Entries { entries, flushed })
            .map_err(|_| StorageIOError::write_logs(writer_gone()).into())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let from = log_id.index;
        self.unflushed.lock().retain(|index, _| *index < from);
        self.write_and_wait(|done| Write::Truncate { from, done })
            .await
            .map_err(|e| StorageIOError::write_logs(e).into())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.unflushed
            .lock()
            .retain(|index, _| *index > log_id.index);
        self.write_and_wait(|done| Write::Purge { upto: log_id, done })
            .await
            .map_err(|e| StorageIOError::write_logs(e).into())
    }
}
