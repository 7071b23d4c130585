//! The node: what `essaimd` runs. It answers requests about itself (info, init, join,
//! leave), passes cluster requests to the leader, and owns the node's current [`Swarm`].

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use essaim_api::control::{LocalSwarmState, NodeInfo};
use essaim_api::pb::JoinRequest;
use essaim_api::{transport, ControlError, ControlReply, ControlRequest};
use essaim_core::model::{
    Availability, Cluster, ClusterConfig, JoinTokens, Node as NodeRecord, NodeDescription,
    NodeSpec, NodeState, NodeStatus, Role,
};
use essaim_core::Command;
use openraft::BasicNode;
use tonic::transport::Channel;

use crate::identity::{new_object_id, new_raft_id, SwarmFile};
use crate::leader;
use crate::raft::{LeaderContact, Raft, RaftTimings};
use crate::swarm::{Leader, Swarm};
use crate::tokens::{cluster_digest, JoinToken};

/// How long `swarm join` waits for the manager it contacts.
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a new manager waits to be voted in before `swarm join` reports it pending.
const VOTER_WAIT: Duration = Duration::from_secs(30);
/// Marks a control request that a manager already passed on, so it is never passed twice.
pub const FORWARDED_HEADER: &str = "x-essaim-forwarded";

/// Everything `essaimd` was told at start-up.
#[derive(Clone, Debug)]
pub struct NodeConfig {
    pub data_dir: PathBuf,
    /// The address other nodes reach this node's cluster port at.
    pub advertise_addr: String,
    pub hostname: String,
    pub raft_timings: RaftTimings,
}

pub struct Node {
    config: NodeConfig,
    swarm: RwLock<Option<Arc<Swarm>>>,
    /// One init, join or leave at a time.
    lifecycle: tokio::sync::Mutex<()>,
    /// Channels to other managers, for passing requests to the leader.
    peers: Mutex<HashMap<String, Channel>>,
}

impl Node {
    /// Starts the node, rejoining the swarm recorded in its data directory if any.
    ///
    /// # Errors
    /// The data directory cannot be used, or its swarm state cannot be opened.
    pub async fn start(config: NodeConfig) -> anyhow::Result<Arc<Node>> {
        std::fs::create_dir_all(&config.data_dir)?;
        restrict_to_owner(&config.data_dir)?;
        let swarm = match SwarmFile::load(&config.data_dir)? {
            Some(identity) => {
                tracing::info!(node = %identity.node_id, cluster = %identity.cluster_id, "rejoining the swarm");
                Some(open_swarm(&config, identity).await?)
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
            swarm: RwLock::new(swarm),
            lifecycle: tokio::sync::Mutex::new(()),
            peers: Mutex::new(HashMap::new()),
        }))
    }

    pub fn config(&self) -> &NodeConfig {
        &self.config
    }

    pub fn swarm(&self) -> Option<Arc<Swarm>> {
        self.swarm.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_swarm(&self, swarm: Option<Arc<Swarm>>) {
        *self.swarm.write().unwrap_or_else(|p| p.into_inner()) = swarm;
    }

    /// The Raft instance, and where to note a leader's word, for the Raft service.
    pub fn raft(&self) -> Option<(Raft, Arc<LeaderContact>)> {
        self.swarm()
            .map(|s| (s.raft().clone(), s.leader_contact().clone()))
    }

    /// Stops the node's swarm work, keeping its state on disk.
    pub async fn shutdown(&self) {
        if let Some(swarm) = self.swarm() {
            swarm.shutdown().await;
        }
    }

    fn in_swarm(&self) -> Result<Arc<Swarm>, ControlError> {
        self.swarm().ok_or_else(|| {
            ControlError::FailedPrecondition(
                "this node is not part of a swarm: run 'essaim swarm init' to start one, or \
                 'essaim swarm join' to join one"
                    .into(),
            )
        })
    }

    /// Answers a control request: requests about this node here, the rest on the leader.
    /// `forwarded` is set when another manager passed the request on already.
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
        if !swarm.is_voter() {
            return Err(ControlError::FailedPrecondition(
                "this node is not a manager: workers cannot view or change the cluster state; \
                 run the command on a manager, or promote this node ('essaim node promote')"
                    .into(),
            ));
        }
        match swarm.leader() {
            Leader::Me => leader::handle(&swarm, request).await,
            Leader::Other { addr, .. } if !forwarded => self.forward(&addr, &request).await,
            Leader::Other { .. } => Err(ControlError::Unavailable(
                "leadership moved while the request was on its way; retry".into(),
            )),
            Leader::Unknown => Err(swarm.no_quorum("no leader")),
        }
    }

    fn peer(&self, addr: &str) -> Result<Channel, ControlError> {
        let mut peers = self.peers.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(channel) = peers.get(addr) {
            return Ok(channel.clone());
        }
        let channel = transport::cluster_channel(addr)?;
        peers.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    async fn forward(
        &self,
        addr: &str,
        request: &ControlRequest,
    ) -> Result<ControlReply, ControlError> {
        let mut client = transport::control_client(self.peer(addr)?);
        let mut message = tonic::Request::new(essaim_api::control::encode(request)?);
        message.metadata_mut().insert(
            FORWARDED_HEADER,
            tonic::metadata::MetadataValue::from_static("1"),
        );
        match client.call(message).await {
            Ok(reply) => essaim_api::control::decode(reply.get_ref()),
            Err(status)
                if status.code() == tonic::Code::Unavailable && status.message().is_empty() =>
            {
                Err(ControlError::Unavailable(format!(
                    "cannot reach the leader at {addr}; retry"
                )))
            }
            Err(status) => Err(ControlError::from(status)),
        }
    }

    async fn handle_local(&self, request: ControlRequest) -> Result<ControlReply, ControlError> {
        match request {
            ControlRequest::Info => Ok(ControlReply::Info(self.info())),
            ControlRequest::SwarmInit { advertise_addr } => self.init(advertise_addr).await,
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
            },
            Some(swarm) => {
                let leader_raft_id = swarm.raft().metrics().borrow().current_leader;
                let leader_id = leader_raft_id.and_then(|raft_id| {
                    swarm
                        .state()
                        .nodes()
                        .find(|n| n.raft_id == raft_id)
                        .map(|n| n.id.clone())
                });
                NodeInfo {
                    node_id: Some(swarm.node_id().clone()),
                    hostname: swarm.hostname.clone(),
                    addr: swarm.addr.clone(),
                    swarm: LocalSwarmState::Active,
                    cluster_id: Some(swarm.identity.cluster_id.clone()),
                    is_manager: swarm.is_voter(),
                    leader_id,
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

    async fn init(&self, advertise_addr: Option<String>) -> Result<ControlReply, ControlError> {
        let _one_at_a_time = self.lifecycle.lock().await;
        self.refuse_if_in_swarm()?;
        let addr = self.advertise(advertise_addr)?;
        let identity = SwarmFile {
            node_id: new_object_id(),
            raft_id: new_raft_id(),
            cluster_id: new_object_id(),
            manager_addrs: vec![addr.clone()],
        };
        let swarm = self.create_swarm(identity.clone(), addr.clone()).await?;
        match bootstrap(&swarm, &identity, &addr, &self.config.hostname).await {
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
        open_swarm(&config, identity)
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
        JoinToken::parse(token)?;
        let remote: std::net::SocketAddr = remote_addr.parse().map_err(|_| {
            ControlError::InvalidArgument(format!(
                "invalid manager address {remote_addr:?}: expected IP:PORT, as printed by \
                 'essaim swarm join-token' on a manager"
            ))
        })?;
        let addr = self.advertise(advertise_addr)?;
        let mut client =
            transport::membership_client(transport::cluster_channel(&remote.to_string())?);
        let mut request = tonic::Request::new(JoinRequest {
            token: token.trim().to_string(),
            hostname: self.config.hostname.clone(),
            addr: addr.clone(),
            os: std::env::consts::OS.to_string(),
            arch: std::env::consts::ARCH.to_string(),
        });
        request.set_timeout(JOIN_TIMEOUT);
        let reply = client
            .join(request)
            .await
            .map_err(|status| match ControlError::from(status) {
                ControlError::Unavailable(why) => {
                    ControlError::Unavailable(format!("cannot reach a manager at {remote}: {why}"))
                }
                other => other,
            })?
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
        let swarm = self.create_swarm(identity, addr).await?;
        self.set_swarm(Some(swarm.clone()));
        tracing::info!(node = %reply.node_id, %role, "joined the swarm");
        if role == Role::Manager {
            let deadline = Instant::now() + VOTER_WAIT;
            while !swarm.is_voter() {
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
        let request = ControlRequest::NodeLeave {
            node_id: swarm.node_id().clone(),
            force,
        };
        let told = if swarm.is_voter() {
            if swarm.voters().len() == 1 && !force {
                return Err(ControlError::FailedPrecondition(
                    "this node is the swarm's last manager: leaving erases the swarm's state; \
                     use --force to leave anyway"
                        .into(),
                ));
            }
            match swarm.leader() {
                Leader::Me => leader::handle(&swarm, request).await,
                Leader::Other { addr, .. } => self.forward(&addr, &request).await,
                Leader::Unknown => Err(swarm.no_quorum("cannot tell the managers")),
            }
        } else {
            self.tell_any_manager(&swarm, &request).await
        };
        match told {
            Ok(_) => {}
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

    /// A worker has no Raft view of the leader: it asks the managers it knows in turn.
    async fn tell_any_manager(
        &self,
        swarm: &Swarm,
        request: &ControlRequest,
    ) -> Result<ControlReply, ControlError> {
        let mut last = ControlError::Unavailable("no manager is known to this node".into());
        for addr in swarm.manager_addrs() {
            match self.forward(&addr, request).await {
                Ok(reply) => return Ok(reply),
                Err(e) => last = e,
            }
        }
        Err(last)
    }
}

async fn open_swarm(config: &NodeConfig, identity: SwarmFile) -> anyhow::Result<Arc<Swarm>> {
    Swarm::open(
        &config.data_dir,
        identity,
        config.advertise_addr.clone(),
        config.hostname.clone(),
        config.raft_timings.clone(),
    )
    .await
}

/// Makes a fresh swarm of one manager: Raft membership, the cluster object and the node,
/// in one entry. Returns the worker join token.
async fn bootstrap(
    swarm: &Swarm,
    identity: &SwarmFile,
    addr: &str,
    hostname: &str,
) -> Result<String, ControlError> {
    let members = BTreeMap::from([(identity.raft_id, BasicNode::new(addr))]);
    swarm
        .raft()
        .initialize(members)
        .await
        .map_err(|e| ControlError::Internal(format!("cannot start raft: {e}")))?;
    let deadline = Instant::now() + Duration::from_secs(10);
    while swarm.leader() != Leader::Me {
        if Instant::now() > deadline {
            return Err(ControlError::Internal(
                "this node did not become leader of its own new swarm".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let digest = cluster_digest(&identity.cluster_id);
    let tokens = JoinTokens {
        worker: JoinToken::generate(&digest),
        manager: JoinToken::generate(&digest),
    };
    let cluster = Cluster {
        id: identity.cluster_id.clone(),
        version: 0,
        created_at: Default::default(),
        updated_at: Default::default(),
        config: ClusterConfig::default(),
        join_tokens: tokens.clone(),
    };
    let node = NodeRecord {
        id: identity.node_id.clone(),
        version: 0,
        created_at: Default::default(),
        updated_at: Default::default(),
        raft_id: identity.raft_id,
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
        },
        status: NodeStatus {
            state: NodeState::Ready,
            message: String::new(),
        },
    };
    for result in swarm
        .write(vec![
            Command::CreateCluster { cluster },
            Command::AddNode { node },
        ])
        .await?
        .results
    {
        result?;
    }
    Ok(tokens.worker)
}

/// The data directory holds keys and the Raft log: nobody but its owner reads it.
fn restrict_to_owner(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}
