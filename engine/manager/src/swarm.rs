//! A node's membership in a swarm, while it lasts, and the one place where its parts are built
//! and its loops started and stopped. Created by `swarm init` or `swarm join` (or at start-up
//! from `swarm.json`), ended by `swarm leave`.
//!
//! Every member runs its worker, its heartbeats and the election watch for as long as it is
//! in the swarm. The leader's loops (node duties, orchestration, the dispatcher's router and
//! status writer) run for one term of leadership: started when this node becomes leader,
//! stopped when it steps down, so that none of them asks who leads (swarmkit's
//! `becomeLeader`/`becomeFollower`).
//!
//! ```text
//!             Raft metrics: this node leads?
//!                  | yes                        | no longer
//!                  v                            v
//!   LeaderTerm::start: liveness afresh,     drop the LeaderTerm: its loops are
//!   dispatcher term, spawn the loops        aborted, every task session closed
//! ```

use std::path::Path;
use std::sync::Arc;

use essaim_api::tls::TlsState;
use essaim_worker::generic::GenericUnitsHeld;
use essaim_worker::task_files::TaskFiles;
use essaim_worker::{Executor, Worker, WorkerSetup};
use parking_lot::Mutex;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::dispatcher::{self, Dispatcher};
use crate::forward::Peers;
use crate::identity::{credentials, SwarmFile};
use crate::liveness::Liveness;
use crate::membership::heartbeats::{self, HeartbeatSender};
use crate::membership::managers::KnownManagers;
use crate::membership::{duties, voters::Voters, Membership};
use crate::orchestration;
use crate::replica::raft::RaftTimings;
use crate::replica::{election, raft_db_path, Leader, Replica};
use crate::security::authz::Authz;

pub struct Swarm {
    pub replica: Arc<Replica>,
    pub membership: Arc<Membership>,
    pub dispatcher: Arc<Dispatcher>,
    pub authz: Authz,
    /// Channels to the other managers, for passing requests to the leader.
    pub peers: Peers,
    pub managers: Arc<KnownManagers>,
    /// This node's certificate and trusted roots.
    pub tls: Arc<TlsState>,
    /// This node's own worker agent: managers run tasks too.
    worker: Arc<Worker>,
    /// What every member runs while in the swarm, the leadership follower included (which
    /// holds the current term's loops and stops them when it is stopped).
    loops: Mutex<Vec<JoinHandle<()>>>,
}

/// Where a swarm is opened: this node's place, and what it runs tasks and keeps time with.
pub struct Setting<'a> {
    pub data_dir: &'a Path,
    pub addr: String,
    pub hostname: String,
    pub timings: RaftTimings,
    pub tls: Arc<TlsState>,
    pub executor: Arc<dyn Executor>,
    pub clock: Clock,
    /// What the node's worker hands out of its generic resources.
    pub generic_resources: essaim_core::model::GenericResources,
}

impl Swarm {
    /// Opens this node's replica and starts the member's loops, and the leader's as soon as it
    /// leads.
    ///
    /// # Errors
    /// The storage cannot be opened or Raft refuses its configuration.
    pub async fn open(setting: Setting<'_>, identity: SwarmFile) -> anyhow::Result<Arc<Swarm>> {
        let Setting {
            data_dir,
            addr,
            hostname,
            timings,
            tls,
            executor,
            clock,
            generic_resources,
        } = setting;
        let replica = Replica::open(
            data_dir,
            identity,
            addr,
            hostname.clone(),
            timings,
            tls.clone(),
            clock,
        )
        .await?;
        let liveness = Arc::new(Liveness::new(clock));
        let managers = Arc::new(KnownManagers::new(replica.clone()));
        let session_targets = managers.clone();
        let worker = Worker::start(WorkerSetup {
            node_id: replica.node_id().clone(),
            task_files: Arc::new(TaskFiles::new(data_dir, &hostname)),
            generic_resources: Arc::new(GenericUnitsHeld::new(generic_resources)),
            hostname,
            tls: tls.clone(),
            managers: Arc::new(move || session_targets.leader_first()),
            executor,
        });
        let swarm = Arc::new(Swarm {
            membership: Arc::new(Membership {
                replica: replica.clone(),
                liveness: liveness.clone(),
                voters: Voters::default(),
            }),
            dispatcher: Arc::new(Dispatcher::new(replica.clone(), liveness)),
            authz: Authz::new(replica.clone(), tls.clone()),
            peers: Peers::new(tls.clone()),
            managers: managers.clone(),
            tls: tls.clone(),
            worker,
            loops: Mutex::new(Vec::new()),
            replica: replica.clone(),
        });
        let member_loops = [
            tokio::spawn(election::watch(replica.clone())),
            tokio::spawn(heartbeats::run(HeartbeatSender {
                replica,
                tls,
                managers,
            })),
            tokio::spawn(follow_leadership(swarm.leader_parts())),
        ];
        swarm.loops.lock().extend(member_loops);
        Ok(swarm)
    }

    fn leader_parts(&self) -> LeaderParts {
        LeaderParts {
            membership: self.membership.clone(),
            dispatcher: self.dispatcher.clone(),
            tls: self.tls.clone(),
        }
    }

    /// Stops the node's tasks, every loop and Raft. The storage stays on disk.
    pub async fn shutdown(&self) {
        self.worker.shutdown().await;
        for task in self.loops.lock().drain(..) {
            task.abort();
        }
        self.replica.shutdown().await;
    }

    /// Stops everything and deletes the node's swarm state and credentials, as `swarm leave`
    /// does.
    ///
    /// # Errors
    /// The files cannot be removed.
    pub async fn destroy(&self) -> std::io::Result<()> {
        self.worker.leave().await;
        self.shutdown().await;
        self.tls.clear();
        let data_dir = self.replica.data_dir();
        credentials::remove(data_dir)?;
        for path in [SwarmFile::path(data_dir), raft_db_path(data_dir)] {
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

    pub fn liveness(&self) -> &Arc<Liveness> {
        &self.membership.liveness
    }
}

/// What a term of leadership works with.
struct LeaderParts {
    membership: Arc<Membership>,
    dispatcher: Arc<Dispatcher>,
    tls: Arc<TlsState>,
}

/// The leader's loops of one term. Dropping it ends the term.
struct LeaderTerm {
    loops: Vec<JoinHandle<()>>,
    dispatcher: Arc<Dispatcher>,
}

impl LeaderTerm {
    fn start(parts: &LeaderParts) -> LeaderTerm {
        tracing::info!("this node is now the leader");
        let replica = &parts.membership.replica;
        parts.membership.liveness.start_term();
        let term = parts.dispatcher.start_term();
        LeaderTerm {
            loops: vec![
                tokio::spawn(duties::run(parts.membership.clone(), parts.tls.clone())),
                tokio::spawn(orchestration::run(replica.clone())),
                tokio::spawn(dispatcher::route(parts.dispatcher.clone(), term.events)),
                tokio::spawn(dispatcher::reports::write(replica.clone(), term.reports)),
            ],
            dispatcher: parts.dispatcher.clone(),
        }
    }
}

impl Drop for LeaderTerm {
    fn drop(&mut self) {
        for task in &self.loops {
            task.abort();
        }
        // The nodes' reports not yet written are sent again to the next leader, after its
        // full set.
        self.dispatcher.end_term();
    }
}

/// Starts a term when this node becomes leader and ends it when it steps down; ends the
/// current one when it is stopped itself.
async fn follow_leadership(parts: LeaderParts) {
    let replica = parts.membership.replica.clone();
    let mut metrics = replica.raft().metrics();
    let mut term: Option<LeaderTerm> = None;
    loop {
        let leads = replica.leader() == Leader::Me;
        if leads && term.is_none() {
            term = Some(LeaderTerm::start(&parts));
        } else if !leads && term.is_some() {
            tracing::info!("this node no longer leads");
            term = None;
        }
        if metrics.changed().await.is_err() {
            // Raft stopped.
            return;
        }
    }
}
