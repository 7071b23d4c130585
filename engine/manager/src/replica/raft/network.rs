//! Raft over gRPC: the client side openraft uses to reach other managers, and the server side
//! that hands their messages to our Raft instance. Bodies are openraft's own types in our
//! binary codec.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use essaim_api::pb::raft_client::RaftClient;
use essaim_api::pb::raft_server;
use essaim_api::pb::RaftMessage;
use essaim_api::tls::{PeerIdentity, TlsState};
use essaim_api::transport::{self, ClientTls};
use essaim_api::ControlError;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::{de::DeserializeOwned, Serialize};
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{codec, LeaderContact, Raft, RaftId, TypeConfig};

/// How long openraft waits before retrying a manager it could not reach. Its default (500 ms)
/// leaves a restarted manager unattended long enough to time out and call a needless
/// election; on loopback or a LAN a refused connection costs nothing to retry.
const RETRY_UNREACHABLE: Duration = Duration::from_millis(100);

/// Makes a [`Peer`] for a remote manager whenever openraft asks: for each replication
/// stream, but also for every vote and every leadership confirmation round (each read's).
/// The peers of one manager share one connection, made once per credentials generation:
/// a new TLS handshake per round would cost more than the round. Connections are lazy:
/// openraft creates clients for managers that may be down, and they must not block it.
pub struct Network {
    tls: Arc<TlsState>,
    connections: Connections,
}

/// One connection per address, with the credentials generation it was made under.
type Connections =
    Arc<parking_lot::Mutex<HashMap<String, (u64, Result<RaftClient<Channel>, String>)>>>;

impl Network {
    pub fn new(tls: Arc<TlsState>) -> Network {
        Network {
            tls,
            connections: Arc::default(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Peer;

    async fn new_client(&mut self, target: RaftId, node: &BasicNode) -> Peer {
        let generation = self.tls.generation();
        Peer {
            target,
            client: connection(&self.connections, &node.addr, &self.tls, generation),
            addr: node.addr.clone(),
            tls: self.tls.clone(),
            generation,
            connections: self.connections.clone(),
        }
    }
}

/// The shared connection to `addr`, made anew after a renewal of this node's credentials.
fn connection(
    connections: &Connections,
    addr: &str,
    tls: &Arc<TlsState>,
    generation: u64,
) -> Result<RaftClient<Channel>, String> {
    let mut connections = connections.lock();
    match connections.get(addr) {
        Some((made_under, client)) if *made_under == generation => client.clone(),
        _ => {
            let client = transport::cluster_channel(addr, ClientTls::Node(tls.clone()))
                .map(transport::raft_client)
                .map_err(|e| e.to_string());
            connections.insert(addr.to_string(), (generation, client.clone()));
            client
        }
    }
}

/// The connection to one remote manager.
pub struct Peer {
    target: RaftId,
    /// An address that does not parse stays an error here and makes every call unreachable.
    client: Result<RaftClient<Channel>, String>,
    addr: String,
    tls: Arc<TlsState>,
    /// The credentials generation the connection was made under. After a renewal the peer
    /// reconnects: the other side checks on every call that the certificate the connection
    /// was opened with is still current (not expired, from a CA still trusted).
    generation: u64,
    connections: Connections,
}

type RpcResult<T, E = openraft::error::Infallible> =
    Result<T, RPCError<RaftId, BasicNode, RaftError<RaftId, E>>>;

impl Peer {
    async fn send<Req, Resp, E, F, Fut>(
        &mut self,
        rpc: &Req,
        option: &RPCOption,
        call: F,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(RaftClient<Channel>, Request<RaftMessage>) -> Fut,
        Fut: std::future::Future<Output = Result<Response<RaftMessage>, Status>>,
    {
        let generation = self.tls.generation();
        if generation != self.generation {
            self.client = connection(&self.connections, &self.addr, &self.tls, generation);
            self.generation = generation;
        }
        let client = match &self.client {
            Ok(client) => client.clone(),
            Err(e) => {
                return Err(RPCError::Unreachable(Unreachable::new(
                    &std::io::Error::other(e.clone()),
                )))
            }
        };
        let body = codec::encode(rpc).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let mut request = Request::new(RaftMessage { body });
        request.set_timeout(option.hard_ttl());
        // A transport failure counts as unreachable, so openraft backs off instead of
        // hammering a manager that is down. A call past its deadline does not: the manager
        // answers, slowly (a large AppendEntries on a busy machine), and a backoff would stop
        // the heartbeats to it for 100 ms at a time until it calls an election.
        let reply = call(client, request).await.map_err(|status| {
            if is_deadline(&status) {
                RPCError::Network(NetworkError::new(&status))
            } else {
                RPCError::Unreachable(Unreachable::new(&status))
            }
        })?;
        let result: Result<Resp, RaftError<RaftId, E>> = codec::decode(&reply.into_inner().body)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

/// Whether a call failed only because its deadline ran out: tonic's own timeout is somewhere
/// in the status's source chain.
fn is_deadline(status: &Status) -> bool {
    status.code() == tonic::Code::DeadlineExceeded
        || std::iter::successors(std::error::Error::source(status), |e| e.source())
            .any(|e| e.is::<tonic::TimeoutExpired>())
}

impl RaftNetwork<TypeConfig> for Peer {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<RaftId>> {
        self.send(&rpc, &option, |mut c, r| async move {
            c.append_entries(r).await
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<RaftId>, InstallSnapshotError> {
        self.send(&rpc, &option, |mut c, r| async move {
            c.install_snapshot(r).await
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<RaftId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<RaftId>> {
        self.send(&rpc, &option, |mut c, r| async move { c.vote(r).await })
            .await
    }

    fn backoff(&self) -> openraft::network::Backoff {
        openraft::network::Backoff::new(std::iter::repeat(RETRY_UNREACHABLE))
    }
}

/// Finds the Raft instance a message is for, and where to note that a leader spoke, after
/// checking that the caller (by its certificate) may speak Raft.
pub type RaftLocator =
    Arc<dyn Fn(Option<PeerIdentity>) -> Result<(Raft, Arc<LeaderContact>), Status> + Send + Sync>;

/// The server side: hands other managers' messages to our Raft instance.
pub struct RaftService {
    locate: RaftLocator,
}

impl RaftService {
    pub fn new(locate: RaftLocator) -> raft_server::RaftServer<RaftService> {
        raft_server::RaftServer::new(RaftService { locate })
            .max_decoding_message_size(transport::MAX_MESSAGE_BYTES)
            .max_encoding_message_size(transport::MAX_MESSAGE_BYTES)
    }

    fn raft<T>(&self, request: &Request<T>) -> Result<(Raft, Arc<LeaderContact>), Status> {
        let identity = request
            .extensions()
            .get::<essaim_api::tls::PeerInfo>()
            .and_then(|peer| peer.identity.clone());
        (self.locate)(identity)
    }
}

fn decode<T: DeserializeOwned>(request: Request<RaftMessage>) -> Result<T, Status> {
    codec::decode(&request.into_inner().body)
        .map_err(|e| ControlError::InvalidArgument(format!("malformed raft message: {e}")).into())
}

fn reply<T: Serialize>(value: &T) -> Result<Response<RaftMessage>, Status> {
    codec::encode(value)
        .map(|body| Response::new(RaftMessage { body }))
        .map_err(|e| ControlError::Internal(format!("cannot encode raft reply: {e}")).into())
}

#[tonic::async_trait]
impl raft_server::Raft for RaftService {
    async fn append_entries(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let (raft, contact) = self.raft(&request)?;
        let rpc: AppendEntriesRequest<TypeConfig> = decode(request)?;
        // In a task of its own: when the leader gives up on a slow call, the call is dropped
        // here, but the entries are taken all the same, and that is word from the leader.
        let taken = tokio::spawn(async move {
            let result = raft.append_entries(rpc).await;
            // A stale leader that we refuse is no sign of a live one.
            if matches!(&result, Ok(r) if !matches!(r, AppendEntriesResponse::HigherVote(_))) {
                contact.leader.mark();
            }
            result
        });
        let result = taken
            .await
            .map_err(|e| ControlError::Internal(format!("append entries failed: {e}")))?;
        reply(&result)
    }

    async fn vote(&self, request: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        let (raft, contact) = self.raft(&request)?;
        let rpc: VoteRequest<RaftId> = decode(request)?;
        let answer = raft.vote(rpc.clone()).await;
        // Elections are rare and a slow one must be explainable from the logs: who asked,
        // and why it was refused.
        if let Ok(answer) = &answer {
            if rpc.last_log_id > answer.last_log_id {
                contact.better_candidate.mark();
            } else if rpc.last_log_id < answer.last_log_id {
                contact.worse_candidate.mark();
            }
            if answer.vote_granted {
                contact.vote_granted.mark();
            }
            let silence_ms = contact
                .leader
                .last()
                .map(|at| u64::try_from(at.elapsed().as_millis()).unwrap_or(u64::MAX));
            tracing::info!(
                candidate = %rpc.vote.leader_id(),
                candidate_last_log = ?rpc.last_log_id.map(|l| l.to_string()),
                granted = answer.vote_granted,
                why = refusal(&rpc, answer),
                our_vote = %answer.vote,
                our_last_log = ?answer.last_log_id.map(|l| l.to_string()),
                leader_silent_ms = silence_ms,
                "vote asked"
            );
        }
        reply(&answer)
    }

    async fn install_snapshot(
        &self,
        request: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        let (raft, contact) = self.raft(&request)?;
        let rpc: InstallSnapshotRequest<TypeConfig> = decode(request)?;
        contact.leader.mark();
        reply(&raft.install_snapshot(rpc).await)
    }
}

/// Why a vote was refused, as far as the answer tells.
fn refusal(asked: &VoteRequest<RaftId>, answer: &VoteResponse<RaftId>) -> &'static str {
    if answer.vote_granted {
        ""
    } else if answer.last_log_id > asked.last_log_id {
        "the candidate's log is behind ours"
    } else if answer.vote > asked.vote {
        "we already voted in this term, or for a higher one"
    } else {
        "our leader's lease has not run out"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_call_past_its_deadline_counts_as_one() {
        // tonic turns its own timeout into a cancelled status with the timeout as source.
        let late = Status::from_error(Box::new(tonic::TimeoutExpired(())));
        assert!(is_deadline(&late));
        assert!(is_deadline(&Status::deadline_exceeded("too slow")));
        assert!(!is_deadline(&Status::unavailable("connection refused")));
        // The words alone are not the timeout: a peer may cancel for its own reasons.
        assert!(!is_deadline(&Status::cancelled("Timeout expired")));
    }
}
