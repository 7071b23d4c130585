//! The node: what `essaimd` runs. It answers requests about itself (info, init, join,
//! leave), passes cluster requests to the leader, and owns the node's current [`Swarm`].

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use essaim_api::control::{LocalSwarmState, NodeInfo, ServiceLogs, MAX_WAIT_CHANGE};
use essaim_api::pb::{JoinRequest, LeaveRequest};
use essaim_api::tls::{self, CertRole, Credentials, PeerIdentity, TlsState};
use essaim_api::transport::{self, ClientTls};
use essaim_api::{ControlError, ControlReply, ControlRequest};
use essaim_core::model::{
    AddressPool, Availability, Cluster, ClusterConfig, GenericResources, JoinTokens,
    Node as NodeRecord, NodeDescription, NodeSpec, NodeState, NodeStatus, Role, RootCa,
};
use essaim_core::Command;
use essaim_worker::{Executor, Runtime};
use openraft::BasicNode;
use parking_lot::RwLock;
use tokio::time::Instant;

use crate::clock::Clock;
use crate::control;
use crate::data_key::DataKey;
use crate::forward::{self, LogEvents, Route};
use crate::identity::{credentials, new_object_id, new_raft_id, SwarmFile};
use crate::replica::raft::{LeaderContact, Raft, RaftTimings};
use crate::replica::{raft_db_path, Leader, LEADERSHIP_MOVED_BEFORE};
use crate::security::ca;
use crate::security::tokens::JoinToken;
use crate::swarm::{Setting, Swarm};

/// How long `swarm join` waits for the manager it contacts.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new manager waits to be voted in before `swarm join` reports it pending.
const VOTER_WAIT: Duration = Duration::from_secs(30);

/// How long a request waits for a leader to be elected before it fails: a few election
/// timeouts.
const ELECTION_WAIT: Duration = Duration::from_secs(2);
/// How long it waits for news of a leader before it tries again all the same.
const ELECTION_POLL: Duration = Duration::from_millis(50);

/// Everything `essaimd` was told at start-up.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    /// The address other nodes reach this node's cluster port at.
    pub advertise_addr: String,
    pub hostname: String,
    pub raft_timings: RaftTimings,
    /// How this node runs tasks.
    pub runtime: Runtime,
    /// `--generic-resource`: what else this node has to give tasks (GPUs...).
    pub generic_resources: GenericResources,
    /// What the manager keeps time with: the system's, or tokio's paused time in tests.
    pub clock: Clock,
}

pub struct Node {
    config: NodeConfig,
    executor: Arc<dyn Executor>,
    swarm: RwLock<Option<Arc<Swarm>>>,
    /// One init, join or leave at a time.
    lifecycle: tokio::sync::Mutex<()>,
    /// This node's certificate and trusted roots; empty while it is in no swarm.
    tls: Arc<TlsState>,
}

impl Node {
    /// Starts the node, rejoining the swarm recorded in its data directory if any.
    ///
    /// # Errors
    /// The data directory cannot be used, or its swarm state cannot be opened.
    pub async fn start(config: NodeConfig) -> anyhow::Result<Arc<Node>> {
        std::fs::create_dir_all(&config.data_dir)?;
        restrict_to_owner(&config.data_dir)?;
        let tls = Arc::new(TlsState::default());
        // One executor for the node's life: it outlives a swarm left and another joined.
        let executor = config
            .runtime
            .executor(&config.hostname, &config.data_dir)
            .await?;
        let swarm = match SwarmFile::load(&config.data_dir)? {
            Some(identity) => {
                tracing::info!(node = %identity.node_id, cluster = %identity.cluster_id, "rejoining the swarm");
                let credentials = credentials::load(&config.data_dir)?.ok_or_else(|| {
                    anyhow::anyhow!(
                        "{} says this node is in a swarm, but its certificates are missing from {}",
                        SwarmFile::path(&config.data_dir).display(),
                        credentials::dir(&config.data_dir).display()
                    )
                })?;
                tls.install(credentials)?;
                Some(open_swarm(&config, identity, tls.clone(), executor.clone()).await?)
            }
            None => {
                tracing::info!(
                    "not part of a swarm yet: run 'essaim swarm init' or 'essaim swarm join'"
                );
                None
            }
        };
        Ok(Arc::new(Node {
            config,
            executor,
            swarm: RwLock::new(swarm),
            lifecycle: tokio::sync::Mutex::new(()),
            tls,
        }))
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn tls(&self) -> &Arc<TlsState> {
        &self.tls
    }

    pub fn swarm(&self) -> Option<Arc<Swarm>> {
        self.swarm.read().clone()
    }

    fn set_swarm(&self, swarm: Option<Arc<Swarm>>) {
        *self.swarm.write() = swarm;
    }

    /// The Raft instance, and where to note a leader's word, for a caller that may speak
    /// Raft.
    ///
    /// # Errors
    /// This node is in no swarm, or the caller is not a manager.
    pub fn raft_for(
        &self,
        caller: Option<PeerIdentity>,
    ) -> Result<(Raft, Arc<LeaderContact>), ControlError> {
        let swarm = self.in_swarm()?;
        swarm.authz.require_manager(caller, "raft")?;
        Ok((
            swarm.replica.raft().clone(),
            swarm.replica.leader_contact().clone(),
        ))
    }

    /// Stops the node's swarm work, keeping its state on disk.
    pub async fn shutdown(&self) {
        if let Some(swarm) = self.swarm() {
            swarm.shutdown().await;
        }
    }

    /// The current swarm.
    ///
    /// # Errors
    /// This node is in no swarm.
    pub fn in_swarm(&self) -> Result<Arc<Swarm>, ControlError> {
        self.swarm().ok_or_else(ControlError::not_in_swarm)
    }

    /// Answers a control request: requests about this node and change waits here, the rest on
    /// the leader. `forwarded` is set when another manager passed the request on already.
    ///
    /// # Errors
    /// What the node or the leader refused.
    pub async fn dispatch(
        &self,
        request: ControlRequest,
        local_socket: bool,
        forwarded: bool,
    ) -> Result<ControlReply, ControlError> {
        if request.is_local() {
            if !local_socket {
                return Err(ControlError::PermissionDenied(
                    "init, join, leave and info are only accepted on the node's local socket"
                        .into(),
                ));
            }
            return self.handle_local(request).await;
        }
        let swarm = self.in_swarm()?;
        if !swarm.replica.is_voter() {
            return Err(ControlError::FailedPrecondition(
                "this node is not a manager: workers cannot view or change the cluster state; \
                 run the command on a manager, or promote this node ('essaim node promote')"
                    .into(),
            ));
        }
        if let ControlRequest::WaitChange {
            after_index,
            timeout_ms,
        } = request
        {
            // Never forwarded: this manager's own applied state answers, and a wait of up to
            // MAX_WAIT_CHANGE must not hang on a hop to the leader.
            let timeout = Duration::from_millis(timeout_ms).min(MAX_WAIT_CHANGE);
            let index = swarm.replica.wait_applied(after_index, timeout).await;
            return Ok(ControlReply::Changed { index });
        }
        // During an election (no leader yet, or the one this node knew has moved) the request
        // waits for the new leader, for a moment, instead of failing: nothing was done with
        // it, so sending it again is safe. A read is also asked again when leadership changed
        // while it ran. A request passed on by another manager is that manager's to retry.
        // A manager that has heard nothing from a leader for several election timeouts is cut
        // off from the others (or they are down): it says so at once instead of waiting, and a
        // call it passed on is given up then, for a leader it cannot hear from would answer
        // late if ever (the connection can hang for as long as the network drops packets).
        let started = tokio::time::Instant::now();
        let deadline = started + ELECTION_WAIT;
        let mut raft_news = swarm.replica.raft().metrics();
        loop {
            let leader_before = raft_news.borrow_and_update().current_leader;
            let route = forward::route(&swarm.replica, forwarded);
            if !forwarded && !matches!(route, Ok(Route::Here)) {
                if let Some(silent) = swarm.replica.leader_silence() {
                    if silent >= swarm.replica.cut_off_after() {
                        return Err(swarm.replica.cut_off_error(silent, false));
                    }
                }
            }
            let (answer, nothing_done) = match route {
                Err(e) => (Err(e), true),
                Ok(Route::Here) => {
                    let answer = control::handle(&swarm, request.clone()).await;
                    // This node found it no longer leads before the request did anything (a
                    // change's first step reads the latest state).
                    let moved = matches!(&answer,
                        Err(ControlError::Unavailable(m)) if m == LEADERSHIP_MOVED_BEFORE);
                    (answer, moved)
                }
                Ok(Route::Leader(addr)) => {
                    let passed = tokio::select! {
                        passed = forward::call(&swarm.peers, &addr, &request) => passed,
                        silent = swarm.replica.cut_off(started) => {
                            return Err(swarm.replica.cut_off_error(silent, !request.is_read()));
                        }
                    };
                    (passed.answer, passed.nothing_done)
                }
            };
            let retry = match &answer {
                Err(ControlError::Unavailable(_) | ControlError::NoQuorum(_)) => {
                    nothing_done || request.is_read()
                }
                _ => false,
            };
            if forwarded || !retry || tokio::time::Instant::now() >= deadline {
                return answer;
            }
            // Again as soon as this node hears of a new leader (a dead one it still names
            // refuses at once), or after a moment.
            let _ = tokio::time::timeout(
                ELECTION_POLL,
                raft_news.wait_for(|m| m.current_leader != leader_before),
            )
            .await;
        }
    }

    /// `service logs`, answered by the leader: here, or passed on to it.
    ///
    /// # Errors
    /// As [`Node::dispatch`]; and no such service.
    pub async fn service_logs(
        &self,
        request: ServiceLogs,
        forwarded: bool,
    ) -> Result<LogEvents, ControlError> {
        let swarm = self.in_swarm()?;
        if !swarm.replica.is_voter() {
            return Err(ControlError::FailedPrecondition(
                "this node is not a manager: ask a manager for service logs".into(),
            ));
        }
        match forward::route(&swarm.replica, forwarded)? {
            Route::Here => control::logs::service_logs(&swarm, request).await,
            Route::Leader(addr) => forward::logs(&swarm.peers, &addr, &request).await,
        }
    }

    async fn handle_local(&self, request: ControlRequest) -> Result<ControlReply, ControlError> {
        match request {
            ControlRequest::Info => Ok(ControlReply::Info(self.info())),
            ControlRequest::SwarmInit {
                advertise_addr,
                address_pool,
            } => {
                self.init(advertise_addr, address_pool.unwrap_or_default())
                    .await
            }
            ControlRequest::SwarmJoin {
                token,
                remote_addr,
                advertise_addr,
            } => self.join(&token, &remote_addr, advertise_addr).await,
            ControlRequest::SwarmLeave { force } => self.leave(force).await,
            other => Err(ControlError::Internal(format!(
                "{other:?} is not a local request"
            ))),
        }
    }

    fn info(&self) -> NodeInfo {
        match self.swarm() {
            None => NodeInfo {
                node_id: None,
                hostname: self.config.hostname.clone(),
                addr: self.config.advertise_addr.clone(),
                swarm: LocalSwarmState::Inactive,
                cluster_id: None,
                is_manager: false,
                leader_id: None,
                cert_role: None,
                cert_not_after: None,
            },
            Some(swarm) => {
                let replica = &swarm.replica;
                let leader_raft_id = replica.raft().metrics().borrow().current_leader;
                let leader_id = leader_raft_id.and_then(|raft_id| {
                    replica
                        .state()
                        .nodes()
                        .find(|n| n.raft_id == raft_id)
                        .map(|n| n.id.clone())
                });
                NodeInfo {
                    node_id: Some(replica.node_id().clone()),
                    hostname: replica.hostname.clone(),
                    addr: replica.addr.clone(),
                    swarm: LocalSwarmState::Active,
                    cluster_id: Some(replica.identity.cluster_id.clone()),
                    is_manager: replica.is_voter(),
                    leader_id,
                    cert_role: self.tls.identity().map(|i| i.role.as_str().to_string()),
                    cert_not_after: self.tls.identity().map(|i| i.not_after),
                }
            }
        }
    }

    fn advertise(&self, requested: Option<String>) -> Result<String, ControlError> {
        let addr = requested.unwrap_or_else(|| self.config.advertise_addr.clone());
        addr.parse::<std::net::SocketAddr>()
            .map(|a| a.to_string())
            .map_err(|_| {
                ControlError::InvalidArgument(format!(
                    "--advertise-addr {addr:?}: expected IP:PORT, the address other nodes reach \
                     this node's cluster port at"
                ))
            })
    }

    fn refuse_if_in_swarm(&self) -> Result<(), ControlError> {
        if self.swarm().is_some() {
            return Err(ControlError::FailedPrecondition(
                "this node is already part of a swarm: run 'essaim swarm leave' to leave it \
                 before starting or joining another"
                    .into(),
            ));
        }
        Ok(())
    }

    async fn init(
        &self,
        advertise_addr: Option<String>,
        address_pool: AddressPool,
    ) -> Result<ControlReply, ControlError> {
        let _one_at_a_time = self.lifecycle.lock().await;
        self.refuse_if_in_swarm()?;
        address_pool
            .validate()
            .map_err(ControlError::InvalidArgument)?;
        let addr = self.advertise(advertise_addr)?;
        let identity = SwarmFile {
            node_id: new_object_id(),
            raft_id: new_raft_id(),
            cluster_id: new_object_id(),
            manager_addrs: vec![addr.clone()],
        };
        let root_ca = ca::create_root(&identity.cluster_id)?;
        let (key_pem, request) = ca::new_key_and_request()?;
        let cert_pem = ca::sign(
            &root_ca,
            &request,
            &identity.node_id,
            CertRole::Manager,
            &identity.cluster_id,
            Duration::from_millis(ClusterConfig::default().cert_expiry_ms),
        )?;
        self.install_credentials(Credentials {
            cert_pem,
            key_pem,
            roots_pem: root_ca.cert_pem.clone(),
        })?;
        // The key that seals secrets: made here, with the cluster, and never written to Raft.
        if let Err(e) = DataKey::load(&self.config.data_dir)
            .map_err(|e| ControlError::Internal(format!("cannot read the data key: {e}")))
            .and_then(|key| key.generate())
        {
            self.forget_swarm_files();
            return Err(e);
        }
        let swarm = match self.create_swarm(identity.clone(), addr.clone()).await {
            Ok(swarm) => swarm,
            Err(e) => {
                self.forget_swarm_files();
                return Err(e);
            }
        };
        let bootstrapped = bootstrap(
            &swarm,
            &identity,
            &addr,
            &self.config.hostname,
            root_ca,
            address_pool,
            &self.config.generic_resources,
        )
        .await;
        match bootstrapped {
            Ok(worker_token) => {
                self.set_swarm(Some(swarm));
                tracing::info!(node = %identity.node_id, cluster = %identity.cluster_id, "swarm initialized");
                Ok(ControlReply::Initialized {
                    node_id: identity.node_id,
                    cluster_id: identity.cluster_id,
                    worker_token,
                    manager_addr: addr,
                })
            }
            Err(e) => {
                // Leave nothing half-made behind: the node is back to no swarm at all.
                if let Err(cleanup) = swarm.destroy().await {
                    tracing::error!("cannot clean up after a failed init: {cleanup}");
                }
                Err(e)
            }
        }
    }

    /// Saves and installs the node's certificate, key and roots.
    fn install_credentials(&self, credentials: Credentials) -> Result<(), ControlError> {
        credentials::install(&self.config.data_dir, &self.tls, credentials)
    }

    /// Undoes a half-made init or join: no identity, no certificates, no Raft state.
    fn forget_swarm_files(&self) {
        self.tls.clear();
        let data_dir = &self.config.data_dir;
        let removed = credentials::remove(data_dir)
            .and_then(|()| remove_if_present(&SwarmFile::path(data_dir)))
            .and_then(|()| remove_if_present(&raft_db_path(data_dir)));
        if let Err(e) = removed {
            tracing::error!("cannot clean up after a failed init or join: {e}");
        }
    }

    /// Saves the identity and opens the swarm's Raft instance and background work.
    async fn create_swarm(
        &self,
        identity: SwarmFile,
        addr: String,
    ) -> Result<Arc<Swarm>, ControlError> {
        identity
            .save(&self.config.data_dir)
            .map_err(|e| ControlError::Internal(format!("cannot save swarm state: {e}")))?;
        let mut config = self.config.clone();
        config.advertise_addr = addr;
        open_swarm(&config, identity, self.tls.clone(), self.executor.clone())
            .await
            .map_err(|e| ControlError::Internal(format!("cannot start raft: {e}")))
    }

    async fn join(
        &self,
        token: &str,
        remote_addr: &str,
        advertise_addr: Option<String>,
    ) -> Result<ControlReply, ControlError> {
        let _one_at_a_time = self.lifecycle.lock().await;
        self.refuse_if_in_swarm()?;
        let pin = JoinToken::parse(token)?;
        let remote: std::net::SocketAddr = remote_addr.parse().map_err(|_| {
            ControlError::InvalidArgument(format!(
                "invalid manager address {remote_addr:?}: expected IP:PORT, as printed by \
                 'essaim swarm join-token' on a manager"
            ))
        })?;
        let addr = self.advertise(advertise_addr)?;
        // Trust nothing but a manager whose CA is the one the token names.
        let pinned = tls::pinned_client_config(&pin.digest)
            .map_err(|e| ControlError::Internal(e.to_string()))?;
        let channel =
            transport::cluster_channel(&remote.to_string(), ClientTls::Fixed(Arc::new(pinned)))?;
        let (key_pem, csr_pem) = ca::new_key_and_request()?;
        let resources = essaim_worker::machine::resources(&self.config.generic_resources);
        let mut request = tonic::Request::new(JoinRequest {
            token: token.trim().to_string(),
            hostname: self.config.hostname.clone(),
            addr: addr.clone(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            csr_pem,
            nano_cpus: resources.nano_cpus,
            memory_bytes: resources.memory_bytes,
            generic_resources: resources
                .generic
                .iter()
                .map(|(kind, count)| format!("{kind}={count}"))
                .collect(),
            runtime: self.executor.name().to_string(),
        });
        request.set_timeout(JOIN_TIMEOUT);
        let reply = transport::membership_client(channel)
            .join(request)
            .await
            .map_err(|status| join_failure(status, remote))?
            .into_inner();
        let role: Role = reply
            .role
            .parse()
            .map_err(|e| ControlError::Internal(format!("manager answered a bad role: {e}")))?;
        let identity = SwarmFile {
            node_id: reply.node_id.clone(),
            raft_id: reply.raft_id,
            cluster_id: reply.cluster_id,
            manager_addrs: if reply.manager_addrs.is_empty() {
                vec![remote.to_string()]
            } else {
                reply.manager_addrs
            },
        };
        self.install_credentials(Credentials {
            cert_pem: reply.certificate_pem,
            key_pem,
            roots_pem: reply.roots_pem,
        })?;
        if !reply.data_key.is_empty() {
            if let Err(e) = DataKey::load(&self.config.data_dir)
                .map_err(|e| ControlError::Internal(format!("cannot read the data key: {e}")))
                .and_then(|key| key.install(&reply.data_key))
            {
                self.forget_swarm_files();
                return Err(e);
            }
        }
        let swarm = match self.create_swarm(identity, addr).await {
            Ok(swarm) => swarm,
            Err(e) => {
                self.forget_swarm_files();
                return Err(e);
            }
        };
        self.set_swarm(Some(swarm.clone()));
        tracing::info!(node = %reply.node_id, %role, "joined the swarm");
        if role == Role::Manager {
            let deadline = Instant::now() + VOTER_WAIT;
            while !swarm.replica.is_voter() {
                if Instant::now() > deadline {
                    return Err(ControlError::Unavailable(
                        "joined, but the managers have not voted this node in yet; it will \
                         become a manager as soon as the leader can reach it"
                            .into(),
                    ));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(ControlReply::Joined {
            node_id: reply.node_id,
            role,
        })
    }

    async fn leave(&self, force: bool) -> Result<ControlReply, ControlError> {
        let _one_at_a_time = self.lifecycle.lock().await;
        let swarm = self.in_swarm()?;
        if swarm.replica.is_voter() && swarm.replica.voters().len() == 1 && !force {
            return Err(ControlError::FailedPrecondition(
                "this node is the swarm's last manager: leaving erases the swarm's state; use \
                 --force to leave anyway"
                    .into(),
            ));
        }
        match self.tell_leader_we_leave(&swarm, force).await {
            Ok(()) => {}
            Err(e) if force => tracing::warn!("leaving without telling the cluster: {e}"),
            Err(e) => return Err(e),
        }
        swarm
            .destroy()
            .await
            .map_err(|e| ControlError::Internal(format!("cannot remove swarm state: {e}")))?;
        self.set_swarm(None);
        tracing::info!("left the swarm");
        Ok(ControlReply::Done)
    }

    /// Tells the leader this node leaves, through the managers this node knows; any of them
    /// passes it on to the leader.
    async fn tell_leader_we_leave(&self, swarm: &Swarm, force: bool) -> Result<(), ControlError> {
        if swarm.replica.leader() == Leader::Me {
            return swarm.membership.leave(swarm.replica.node_id(), force).await;
        }
        let mut last = ControlError::Unavailable("no manager is known to this node".into());
        for addr in swarm.managers.leader_first() {
            let mut client = transport::membership_client(swarm.peers.channel(&addr)?);
            match client
                .leave(LeaveRequest { force })
                .await
                .map_err(ControlError::from)
            {
                Ok(_) => return Ok(()),
                // Only an unreachable manager sends us to the next one: a refusal is the
                // cluster's answer.
                Err(e @ (ControlError::Unavailable(_) | ControlError::NoQuorum(_))) => last = e,
                Err(refusal) => return Err(refusal),
            }
        }
        Err(last)
    }
}

/// What a failed join means for the user.
fn join_failure(status: tonic::Status, remote: std::net::SocketAddr) -> ControlError {
    let details = format!("{} {status:?}", status.message());
    if details.contains(tls::ROTATED_CA) {
        return ControlError::PermissionDenied(
            "this join token is from before the cluster rotated its CA: get the current one \
             with 'essaim swarm join-token worker' (or manager) on a manager"
                .into(),
        );
    }
    if details.contains(tls::WRONG_CA) {
        return ControlError::PermissionDenied(format!(
            "the manager at {remote} does not belong to the cluster this token is for (its CA \
             does not match the token's fingerprint): check the address and the token"
        ));
    }
    match ControlError::from(status) {
        ControlError::Unavailable(why) => {
            ControlError::Unavailable(format!("cannot reach a manager at {remote}: {why}"))
        }
        other => other,
    }
}

async fn open_swarm(
    config: &NodeConfig,
    identity: SwarmFile,
    tls: Arc<TlsState>,
    executor: Arc<dyn Executor>,
) -> anyhow::Result<Arc<Swarm>> {
    let setting = Setting {
        data_dir: &config.data_dir,
        addr: config.advertise_addr.clone(),
        hostname: config.hostname.clone(),
        timings: config.raft_timings.clone(),
        tls,
        executor,
        clock: config.clock,
        generic_resources: config.generic_resources.clone(),
    };
    Swarm::open(setting, identity).await
}

/// Makes a fresh swarm of one manager: Raft membership first, then the cluster object (with
/// its CA) and the node in one entry. Returns the worker join token.
async fn bootstrap(
    swarm: &Swarm,
    identity: &SwarmFile,
    addr: &str,
    hostname: &str,
    root_ca: RootCa,
    address_pool: AddressPool,
    generic: &GenericResources,
) -> Result<String, ControlError> {
    let members = BTreeMap::from([(identity.raft_id, BasicNode::new(addr))]);
    swarm
        .replica
        .raft()
        .initialize(members)
        .await
        .map_err(|e| ControlError::Internal(format!("cannot start raft: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while swarm.replica.leader() != Leader::Me {
        if Instant::now() > deadline {
            return Err(ControlError::Internal(
                "this node did not become leader of its own new swarm".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let tokens = JoinTokens {
        worker: ca::new_token(&root_ca, Role::Worker)?,
        manager: ca::new_token(&root_ca, Role::Manager)?,
    };
    let worker_token = ca::join_token(&root_ca, Role::Worker, &tokens.worker)?;
    let cluster = Cluster {
        id: identity.cluster_id.clone(),
        version: 0,
        created_at: Default::default(),
        updated_at: Default::default(),
        config: ClusterConfig::default(),
        join_tokens: tokens,
        root_ca,
        ca_rotation: None,
        address_pool,
    };
    let node = NodeRecord {
        id: identity.node_id.clone(),
        version: 0,
        created_at: Default::default(),
        updated_at: Default::default(),
        raft_id: identity.raft_id,
        ingress: None,
        spec: NodeSpec {
            role: Role::Manager,
            availability: Availability::Active,
            labels: Default::default(),
        },
        description: NodeDescription {
            hostname: hostname.to_string(),
            addr: addr.to_string(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
            resources: essaim_worker::machine::resources(generic),
            runtime: swarm.worker().runtime().to_string(),
        },
        status: NodeStatus {
            state: NodeState::Ready,
            message: String::new(),
        },
    };
    for result in swarm
        .replica
        .write(vec![
            Command::CreateCluster { cluster },
            Command::AddNode { node },
        ])
        .await?
        .results
    {
        result?;
    }
    Ok(worker_token)
}

fn remove_if_present(path: &std::path::Path) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// The data directory holds keys and the Raft log: nobody but its owner reads it.
fn restrict_to_owner(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
