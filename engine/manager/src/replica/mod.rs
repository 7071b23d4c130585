//! A node's membership in a swarm, while it lasts: its Raft instance, the applied state, and
//! the background work every member does. Created by `swarm init` or `swarm join` (or at
//! start-up from `swarm.json`), ended by `swarm leave`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use essaim_api::tls::TlsState;
use essaim_api::ControlError;
use essaim_core::model::ObjectId;
use essaim_core::{Command, Request, Response, Timestamp};
use openraft::error::{CheckIsLeaderError, ClientWriteError, RaftError};
use openraft::{ServerState, StoredMembership};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::dispatcher::Dispatcher;
use crate::health::Sessions;
use crate::identity::SwarmFile;
use crate::raft::log_store::LogStore;
use crate::raft::network::Network;
use crate::raft::state_machine::{SharedState, StateGuard, StateMachine};
use crate::raft::{self, LeaderContact, Raft, RaftId, RaftTimings};
use essaim_worker::{Executor, Worker, WorkerSetup};

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
/// Entries of one `write_many` in flight at once: Raft commits them together.
const ENTRIES_IN_FLIGHT: usize = 8;

pub struct Swarm {
    pub identity: SwarmFile,
    /// This node's own cluster address, as other nodes reach it.
    pub addr: String,
    pub hostname: String,
    data_dir: PathBuf,
    raft: Raft,
    shared: Arc<SharedState>,
    timings: RaftTimings,
    /// Managers known to this node, for a worker's heartbeats; refreshed by every heartbeat.
    manager_addrs: RwLock<Vec<String>>,
    /// Heartbeats seen by this node while it leads.
    pub sessions: Sessions,
    /// The task sessions of the nodes, while this node leads.
    pub dispatcher: Dispatcher,
    /// This node's own worker agent: managers run tasks too.
    worker: Arc<Worker>,
    /// Wakes the leader's duties early (a node came back, a role changed).
    pub wake: Notify,
    /// Membership changes one at a time: openraft refuses overlapping ones.
    pub membership_lock: tokio::sync::Mutex<()>,
    background: Mutex<Vec<JoinHandle<()>>>,
    /// When a leader last spoke to this node, for the election watch.
    leader_contact: Arc<LeaderContact>,
    /// Linearizable reads in progress, to share confirmation rounds.
    reads: ReadRounds,
    /// This node's certificate and trusted roots.
    pub tls: Arc<TlsState>,
    /// The fingerprints of the CAs the cluster trusts, for the cluster version they were read
    /// at: every call checks its caller's issuer against them.
    trusted_cas: Mutex<(u64, Vec<String>)>,
    /// Set when the swarm shuts down, so that change waiters answer at once instead of holding
    /// the servers' graceful shutdown (or a `swarm leave`) for their whole timeout.
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

impl Swarm {
    /// Opens this node's Raft instance and storage and starts its background work.
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
        executor: Arc<dyn Executor>,
    ) -> anyhow::Result<Arc<Swarm>> {
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
        let raft = Raft::new(
            identity.raft_id,
            config,
            Network { tls: tls.clone() },
            log,
            machine,
        )
        .await?;
        let swarm = Arc::new_cyclic(|me: &std::sync::Weak<Swarm>| {
            let me = me.clone();
            let worker = Worker::start(WorkerSetup {
                node_id: identity.node_id.clone(),
                tls: tls.clone(),
                managers: Arc::new(move || {
                    me.upgrade()
                        .map(|swarm| swarm.session_targets())
                        .unwrap_or_default()
                }),
                executor,
            });
            Swarm {
                worker,
                dispatcher: Dispatcher::default(),
                manager_addrs: RwLock::new(identity.manager_addrs.clone()),
                identity,
                addr,
                hostname,
                data_dir: data_dir.to_path_buf(),
                raft,
                shared,
                timings,
                sessions: Sessions::default(),
                wake: Notify::new(),
                membership_lock: tokio::sync::Mutex::new(()),
                background: Mutex::new(Vec::new()),
                leader_contact: Arc::new(LeaderContact::default()),
                reads: ReadRounds::default(),
                tls,
                trusted_cas: Mutex::new((u64::MAX, Vec::new())),
                stopping: tokio::sync::watch::Sender::new(false),
            }
        });
        let duties = tokio::spawn(crate::health::run(swarm.clone()));
        let heartbeats = tokio::spawn(crate::agent::run(swarm.clone()));
        let elections = tokio::spawn(crate::election::watch(swarm.clone()));
        let orchestration = tokio::spawn(crate::orchestration::run(swarm.clone()));
        let routing = tokio::spawn(crate::dispatcher::route(swarm.clone()));
        let reports = tokio::spawn(crate::dispatcher::write_reports(swarm.clone()));
        swarm.background().extend([
            duties,
            heartbeats,
            elections,
            orchestration,
            routing,
            reports,
        ]);
        Ok(swarm)
    }

    fn background(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.background.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Stops the node's tasks, the background work and Raft. The storage stays on disk.
    pub async fn shutdown(&self) {
        self.stopping.send_replace(true);
        self.worker.shutdown().await;
        for task in self.background().drain(..) {
            task.abort();
        }
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!("raft did not shut down cleanly: {e}");
        }
    }

    /// Stops everything and deletes the node's swarm state and credentials, as `swarm leave`
    /// does.
    ///
    /// # Errors
    /// The files cannot be removed.
    pub async fn destroy(&self) -> std::io::Result<()> {
        self.shutdown().await;
        self.tls.clear();
        crate::identity::credentials::remove(&self.data_dir)?;
        for path in [
            SwarmFile::path(&self.data_dir),
            raft_db_path(&self.data_dir),
        ] {
            match std::fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }

    pub fn worker(&self) -> &Arc<Worker> {
        &self.worker
    }

    /// Where this node's worker agent looks for the leader: the leader first when known,
    /// then every manager this node knows.
    fn session_targets(&self) -> Vec<String> {
        let mut targets = match self.leader() {
            Leader::Me => vec![self.addr.clone()],
            Leader::Other { addr, .. } => vec![addr],
            Leader::Unknown => Vec::new(),
        };
        for addr in self.manager_addrs() {
            if !targets.contains(&addr) {
                targets.push(addr);
            }
        }
        targets
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    pub fn raft(&self) -> &Raft {
        &self.raft
    }

    /// True when the cluster trusts the CA with this fingerprint now. Before this node knows
    /// the cluster (a manager that just joined), its own trusted roots decide.
    pub fn cluster_trusts(&self, issuer: &str) -> bool {
        let (version, roots_pem) = {
            let state = self.state();
            match state.cluster.as_ref() {
                Some(cluster) => (cluster.version, cluster.trusted_roots_pem()),
                None => return self.tls.trusts(issuer),
            }
        };
        let mut cache = self.trusted_cas.lock().unwrap_or_else(|p| p.into_inner());
        if cache.0 != version {
            let fingerprints = essaim_api::tls::certs_from_pem(&roots_pem)
                .map(|certs| {
                    certs
                        .iter()
                        .map(|c| essaim_api::tls::fingerprint(c))
                        .collect()
                })
                .unwrap_or_default();
            *cache = (version, fingerprints);
        }
        cache.1.iter().any(|f| f == issuer)
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

    pub fn manager_addrs(&self) -> Vec<String> {
        self.manager_addrs
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Remembers the managers a heartbeat told us about, on disk too, so a restarted worker
    /// still finds its cluster after the managers it joined through are gone.
    pub fn set_manager_addrs(&self, addrs: Vec<String>) {
        if addrs.is_empty() || addrs == self.manager_addrs() {
            return;
        }
        *self
            .manager_addrs
            .write()
            .unwrap_or_else(|p| p.into_inner()) = addrs.clone();
        let mut file = self.identity.clone();
        file.manager_addrs = addrs;
        if let Err(e) = file.save(&self.data_dir) {
            tracing::warn!("cannot save the manager list: {e}");
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
        self.check_quorum_contact()?;
        let request = Request::new(now(), commands);
        match tokio::time::timeout(QUORUM_TIMEOUT, self.raft.client_write(request)).await {
            Err(_) => Err(self.no_quorum(
                "the change was not confirmed in time (it may still be committed once the \
                 managers can agree again: check before retrying)",
            )),
            Ok(Ok(reply)) => Ok(reply.data),
            Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Err(
                ControlError::Unavailable("leadership changed during the write; retry".into()),
            ),
            Ok(Err(e)) => Err(ControlError::Internal(format!("raft write failed: {e}"))),
        }
    }

    /// Writes many independent commands, in order, as several entries. Each command gets
    /// its own result as always (ignored here); a failure can leave the later entries
    /// unwritten, so callers must be able to pick up after a partial write.
    ///
    /// # Errors
    /// As [`Swarm::write`], for the first entry that failed.
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
    /// As [`Swarm::write`], or the state machine's refusal of the command.
    pub async fn write_one(&self, command: Command) -> Result<u64, ControlError> {
        Ok(self.write(vec![command]).await?.single()?)
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
            let (last_round, succeeded) = *self
                .reads
                .completed
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            if succeeded && last_round > arrived_after {
                return Ok(());
            }
            let round = self.reads.started.fetch_add(1, SeqCst) + 1;
            let attempt =
                tokio::time::timeout(READ_ROUND_LIMIT, self.raft.ensure_linearizable()).await;
            *self
                .reads
                .completed
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = (round, matches!(attempt, Ok(Ok(_))));
            match attempt {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(RaftError::APIError(CheckIsLeaderError::ForwardToLeader(_)))) => {
                    return Err(ControlError::Unavailable(
                        "leadership changed during the read; retry".into(),
                    ))
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

pub fn raft_db_path(data_dir: &Path) -> PathBuf {
    data_dir.join("raft.redb")
}

/// The wall clock, read once per proposal by the leader.
pub fn now() -> Timestamp {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    Timestamp(u64::try_from(millis).unwrap_or(u64::MAX))
}
