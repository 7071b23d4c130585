//! The replica: this node's Raft instance and the state it applied, at the bottom of the
//! manager. Writes go through Raft on the leader; reads are of the applied state, or
//! linearizable (confirmed with a quorum first). Every loop and handler above is built on it.
//!
//! - [`raft`]: type configuration, durable log store (redb), state machine, gRPC network.
//! - [`election`]: our leader failure detector, quicker and steadier than openraft 0.9's timer.
//! - [`group_commit`]: concurrent small writes in one entry, one fsync for all.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use essaim_api::tls::TlsState;
use essaim_api::ControlError;
use essaim_core::model::{Cluster, ObjectId};
use essaim_core::{ClusterState, Command, Response};
use openraft::error::{CheckIsLeaderError, RaftError};
use openraft::{ServerState, StoredMembership};

use crate::clock::Clock;
use crate::identity::SwarmFile;
use raft::log_store::LogStore;
use raft::network::Network;
use raft::state_machine::{SharedState, StateGuard, StateMachine};
use raft::{LeaderContact, Raft, RaftId, RaftTimings};

pub mod election;
pub mod group_commit;
pub mod raft;

/// How long a write or a linearizable read may wait for a quorum before it is reported as
/// "no quorum" rather than left hanging.
pub const QUORUM_TIMEOUT: Duration = Duration::from_secs(3);
/// Commands per Raft entry when a control loop writes many: entries stay small enough for a
/// follower to take a few of them within one heartbeat interval, which openraft gives each
/// AppendEntries call before it counts the follower as unreachable.
const COMMANDS_PER_ENTRY: usize = 500;
/// The longest one confirmation round may take before it is tried again.
const READ_ROUND_LIMIT: Duration = Duration::from_millis(500);
/// Pause between two attempts to confirm leadership for a read.
const LINEARIZE_RETRY: Duration = Duration::from_millis(10);
/// Writes of fewer commands than this share entries with other callers' (see
/// [`group_commit`]); larger ones are entries of their own.
const GROUP_COMMIT_MAX: usize = 64;
/// Entries of one `write_many` in flight at once: Raft commits them together.
const ENTRIES_IN_FLIGHT: usize = 8;

/// This node's copy of the cluster state and its voice in Raft: the applied state, writes,
/// linearizable reads, and who leads and votes. It knows nothing of the loops built on it.
pub struct Replica {
    pub identity: SwarmFile,
    /// This node's own cluster address, as other nodes reach it.
    pub addr: String,
    pub hostname: String,
    data_dir: PathBuf,
    /// The key that seals secrets, on a manager.
    data_key: crate::data_key::DataKey,
    raft: Raft,
    /// Where the small writes wait for the next entry.
    group_commit: group_commit::GroupCommit,
    shared: Arc<SharedState>,
    timings: RaftTimings,
    clock: Clock,
    /// When a leader last spoke to this node, for the election watch.
    leader_contact: Arc<LeaderContact>,
    /// Linearizable reads in progress, to share confirmation rounds.
    reads: ReadRounds,
    /// Set when the replica shuts down, so that change waiters answer at once instead of
    /// holding the servers' graceful shutdown (or a `swarm leave`) for their whole timeout.
    stopping: tokio::sync::watch::Sender<bool>,
}

/// Confirmation rounds of linearizable reads: how many started, the last one's number and
/// outcome, and the lock that lets one run at a time.
#[derive(Default)]
struct ReadRounds {
    started: std::sync::atomic::AtomicU64,
    completed: Mutex<(u64, bool)>,
    lock: tokio::sync::Mutex<()>,
}

/// Where the leader is, from this node's point of view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leader {
    Me,
    Other { raft_id: RaftId, addr: String },
    Unknown,
}

impl Replica {
    /// Opens this node's Raft instance and storage.
    ///
    /// # Errors
    /// The storage cannot be opened or Raft refuses its configuration.
    pub async fn open(
        data_dir: &Path,
        identity: SwarmFile,
        addr: String,
        hostname: String,
        timings: RaftTimings,
        tls: Arc<TlsState>,
        clock: Clock,
    ) -> anyhow::Result<Arc<Replica>> {
        let db = Arc::new(redb::Database::create(raft_db_path(data_dir))?);
        // It holds the CA key: owner only, whatever the umask.
        std::fs::set_permissions(
            raft_db_path(data_dir),
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )?;
        let log = LogStore::open(db.clone()).map_err(|e| anyhow::anyhow!("{e}"))?;
        log.forget_leadership()
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let machine = StateMachine::open(db).map_err(|e| anyhow::anyhow!("{e}"))?;
        let shared = machine.shared();
        let config = raft::config(&timings)?;
        let raft = Raft::new(identity.raft_id, config, Network::new(tls), log, machine).await?;
        Ok(Arc::new(Replica {
            identity,
            addr,
            hostname,
            data_dir: data_dir.to_path_buf(),
            data_key: crate::data_key::DataKey::load(data_dir)?,
            group_commit: group_commit::GroupCommit::start(raft.clone(), clock),
            raft,
            shared,
            timings,
            clock,
            leader_contact: Arc::new(LeaderContact::default()),
            reads: ReadRounds::default(),
            stopping: tokio::sync::watch::Sender::new(false),
        }))
    }

    /// Stops Raft, and answers every change waiter. The storage stays on disk.
    pub async fn shutdown(&self) {
        self.stopping.send_replace(true);
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft did not shut down cleanly: {e}");
        }
    }

    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The key that seals secrets in the log; empty on a worker.
    pub fn data_key(&self) -> &crate::data_key::DataKey {
        &self.data_key
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    pub fn leader_contact(&self) -> &Arc<LeaderContact> {
        &self.leader_contact
    }

    pub fn timings(&self) -> &RaftTimings {
        &self.timings
    }

    pub fn node_id(&self) -> &ObjectId {
        &self.identity.node_id
    }

    /// The applied state, without asking the leader: may lag behind it.
    pub fn state(&self) -> StateGuard<'_> {
        self.shared.read()
    }

    /// The state to read at length; see [`SharedState::copy`].
    pub fn state_copy(&self) -> ClusterState {
        self.shared.copy()
    }

    pub fn shared(&self) -> &Arc<SharedState> {
        &self.shared
    }

    /// Waits until this node has applied a log entry past `after_index`, or `timeout` ran out,
    /// or the swarm shuts down; returns the applied index then. No quorum is needed: the
    /// answer is this node's own progress through the log, which every manager applies.
    pub async fn wait_applied(&self, after_index: u64, timeout: Duration) -> u64 {
        // Both watches look at their current value first: a change applied before this call
        // answers at once, and none applied meanwhile is missed.
        let mut applied = self.shared.watch_applied();
        let mut stopping = self.stopping.subscribe();
        let _ = tokio::time::timeout(timeout, async {
            tokio::select! {
                _ = applied.wait_for(|index| *index > after_index) => {}
                _ = stopping.wait_for(|stop| *stop) => {}
            }
        })
        .await;
        self.shared.applied_index()
    }

    pub fn membership(&self) -> Arc<StoredMembership<RaftId, openraft::BasicNode>> {
        self.raft.metrics().borrow().membership_config.clone()
    }

    pub fn voters(&self) -> BTreeSet<RaftId> {
        self.membership().voter_ids().collect()
    }

    /// True when this node votes in Raft, which is what makes it a manager.
    pub fn is_voter(&self) -> bool {
        self.voters().contains(&self.identity.raft_id)
    }

    pub fn leader(&self) -> Leader {
        let metrics = self.raft.metrics().borrow().clone();
        match metrics.current_leader {
            Some(id) if id == self.identity.raft_id => {
                if metrics.state == ServerState::Leader {
                    Leader::Me
                } else {
                    Leader::Unknown
                }
            }
            Some(id) => match metrics.membership_config.membership().get_node(&id) {
                Some(node) => Leader::Other {
                    raft_id: id,
                    addr: node.addr.clone(),
                },
                None => Leader::Unknown,
            },
            None => Leader::Unknown,
        }
    }

    /// The managers' addresses according to the applied state.
    pub fn manager_addrs_from_state(&self) -> Vec<String> {
        let voters = self.voters();
        self.state()
            .nodes()
            .filter(|n| voters.contains(&n.raft_id))
            .map(|n| n.description.addr.clone())
            .collect()
    }

    /// How long a follower may hear nothing from a leader before it says that it is cut off
    /// from the other managers, rather than that an election is under way: several election
    /// timeouts (a busy leader's heartbeats come late, not this late).
    pub fn cut_off_after(&self) -> Duration {
        4 * self.timings.election_max
    }

    /// How long this manager, not leading, has heard nothing from a leader: `None` before it
    /// has heard from one since it started.
    pub fn leader_silence(&self) -> Option<Duration> {
        self.leader_contact
            .leader
            .last()
            .map(|heard| heard.elapsed())
    }

    /// Waits until this manager has heard nothing from a leader for [`Self::cut_off_after`],
    /// counting from `since` if it never heard from one; returns the silence.
    pub async fn cut_off(&self, since: tokio::time::Instant) -> Duration {
        let limit = self.cut_off_after();
        loop {
            let heard = self.leader_contact.leader.last().unwrap_or(since);
            let silent = heard.elapsed();
            if silent >= limit {
                return silent;
            }
            tokio::time::sleep(limit - silent).await;
        }
    }

    /// The error of a manager that has heard nothing from a leader for `silent`: it cannot
    /// reach a majority, whether the others are down or its network is cut.
    pub fn cut_off_error(&self, silent: Duration, outcome_unknown: bool) -> ControlError {
        let managers = self.voters().len();
        let unknown = if outcome_unknown {
            "; the change was on its way to the leader and may or may not have been made: \
             check before retrying"
        } else {
            ""
        };
        ControlError::NoQuorum(format!(
            "this manager has heard nothing from a leader for {:.1} s: it cannot reach a \
             majority of the {managers} managers (its network may be cut, or they are down); \
             run the command on another manager, or check this one's network{unknown}",
            silent.as_secs_f64()
        ))
    }

    /// An error that says the cluster has no quorum, with what this node knows.
    pub fn no_quorum(&self, what: &str) -> ControlError {
        let managers = self.voters().len();
        ControlError::NoQuorum(format!(
            "{what}: fewer than a majority of the {managers} managers are reachable, so the \
             cluster cannot agree on changes; bring managers back (or, as a last resort, \
             rebuild the cluster from a surviving manager)"
        ))
    }

    /// Commits `commands` as one Raft entry, on this node, which must be the leader.
    ///
    /// # Errors
    /// No quorum within [`QUORUM_TIMEOUT`], leadership lost, or Raft stopped.
    pub async fn write(&self, commands: Vec<Command>) -> Result<Response, ControlError> {
        use group_commit::Outcome;
        self.check_quorum_contact()?;
        // A control loop's large write is an entry of its own already.
        let outcome = if commands.len() >= GROUP_COMMIT_MAX {
            group_commit::commit(&self.raft, &self.clock, commands).await
        } else {
            self.group_commit.write(commands).await
        };
        match outcome {
            Outcome::Written(results) => Ok(Response { results }),
            Outcome::TimedOut => Err(self.no_quorum(
                "the change was not confirmed in time (it may still be committed once the \
                 managers can agree again: check before retrying)",
            )),
            Outcome::NotLeader => Err(ControlError::Unavailable(
                "leadership changed during the write; retry".into(),
            )),
            Outcome::Failed(e) => Err(ControlError::Internal(format!("raft write failed: {e}"))),
        }
    }

    /// Writes many independent commands, in order, as several entries. Each command gets
    /// its own result as always (ignored here); a failure can leave the later entries
    /// unwritten, so callers must be able to pick up after a partial write.
    ///
    /// # Errors
    /// As [`Replica::write`], for the first entry that failed.
    pub async fn write_many(&self, commands: Vec<Command>) -> Result<(), ControlError> {
        use futures::{StreamExt, TryStreamExt};
        let mut commands = commands.into_iter().peekable();
        let mut entries = Vec::new();
        while commands.peek().is_some() {
            entries.push(
                commands
                    .by_ref()
                    .take(COMMANDS_PER_ENTRY)
                    .collect::<Vec<_>>(),
            );
        }
        // `buffered` starts the writes in order, so they are proposed in order.
        futures::stream::iter(entries)
            .map(|entry| self.write(entry))
            .buffered(ENTRIES_IN_FLIGHT)
            .try_for_each(|_| async { Ok(()) })
            .await
    }

    /// Commits one command and returns its result.
    ///
    /// # Errors
    /// As [`Replica::write`], or the state machine's refusal of the command.
    pub async fn write_one(&self, command: Command) -> Result<u64, ControlError> {
        Ok(self.write(vec![command]).await?.single()?)
    }

    /// Makes this leader's state fit to base a change on. No confirmation round: a change is
    /// proven by its own commit through a quorum (a deposed leader's never commits), and the
    /// state machine checks it again against the state it applies to (versions, names,
    /// addresses). Only a leader that has not yet applied an entry of its own term, one just
    /// elected that may still miss commits of the term before, confirms with a linearizable
    /// read first.
    ///
    /// # Errors
    /// As [`Replica::linearize`], when it must confirm; no quorum contact for a while.
    pub async fn before_write(&self) -> Result<(), ControlError> {
        let caught_up = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            metrics.current_leader == Some(self.identity.raft_id)
                && metrics
                    .last_applied
                    .is_some_and(|applied| applied.leader_id.term == metrics.current_term)
        };
        if caught_up {
            self.check_quorum_contact()
        } else {
            self.linearize().await
        }
    }

    /// Waits until this leader has confirmed its leadership with a quorum and applied
    /// everything committed before, so that a read sees every acknowledged write.
    ///
    /// # Errors
    /// No quorum within [`QUORUM_TIMEOUT`], or leadership lost.
    pub async fn linearize(&self) -> Result<(), ControlError> {
        use std::sync::atomic::Ordering::SeqCst;
        // Concurrent reads share confirmation rounds: each round asks every follower, and a
        // round per read would flood them under load. A round serves every read that arrived
        // before it started. Rounds are short, so a round stuck on a lost leader holds the
        // others back for a moment only.
        let deadline = tokio::time::Instant::now() + QUORUM_TIMEOUT;
        let arrived_after = self.reads.started.load(SeqCst);
        loop {
            self.check_quorum_contact()?;
            let Ok(one_round_at_a_time) =
                tokio::time::timeout_at(deadline, self.reads.lock.lock()).await
            else {
                return Err(self.no_quorum("cannot confirm the latest state"));
            };
            let (last_round, succeeded) = *self.reads.completed.lock();
            if succeeded && last_round > arrived_after {
                return Ok(());
            }
            let round = self.reads.started.fetch_add(1, SeqCst) + 1;
            let attempt =
                tokio::time::timeout(READ_ROUND_LIMIT, self.raft.ensure_linearizable()).await;
            *self.reads.completed.lock() = (round, matches!(attempt, Ok(Ok(_))));
            match attempt {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                    return Err(ControlError::Unavailable(LEADERSHIP_MOVED_BEFORE.into()))
                }
                // A round may miss its heartbeat interval when the managers are busy
                // replicating large entries: that is load, not loss, so ask again.
                Err(_) | Ok(Err(RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(_)))) => {
                    if tokio::time::Instant::now() >= deadline {
                        return Err(self.no_quorum("cannot confirm the latest state"));
                    }
                }
                Ok(Err(e)) => return Err(ControlError::Internal(format!("raft read failed: {e}"))),
            }
            drop(one_round_at_a_time);
            tokio::time::sleep(LINEARIZE_RETRY).await;
        }
    }

    /// Fails fast when the leader has not heard from a quorum for several election timeouts:
    /// waiting would only end in the same answer later.
    fn check_quorum_contact(&self) -> Result<(), ControlError> {
        let silent_for = self.raft.metrics().borrow().millis_since_quorum_ack;
        let limit = 4 * self.timings.election_max.as_millis();
        match silent_for {
            Some(ms) if u128::from(ms) > limit => {
                Err(self.no_quorum("the leader has lost contact with the other managers"))
            }
            _ => Ok(()),
        }
    }
}

/// What [`Replica::linearize`] says when this node turns out not to lead: nothing was read
/// or written yet, so the request may be sent again, to the new leader, whatever it asks.
pub const LEADERSHIP_MOVED_BEFORE: &str = "leadership changed during the read; retry";

/// The cluster object, which `swarm init` writes first.
///
/// # Errors
/// The swarm is not initialized yet.
pub fn initialized(state: &essaim_core::ClusterState) -> Result<&Cluster, ControlError> {
    state
        .cluster
        .as_ref()
        .ok_or_else(|| ControlError::FailedPrecondition("the swarm is not initialized".into()))
}

pub fn raft_db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("raft.redb")
}
