//! The node's two doors and the gRPC services behind them: the cluster port (mutual TLS:
//! Raft, membership, control) and the local socket (control only, owner-only file mode).
//!
//! The top of the manager: each call is checked (`security::authz`), routed to the leader
//! when it needs the leader (`forward`), and answered by the control API, membership or the
//! dispatcher. Handlers speak `ControlError`; its one conversion to `tonic::Status` (in
//! `essaim_api`) is applied here by `?`.

use std::sync::Arc;

use essaim_api::pb::control_server::{Control, ControlServer};
use essaim_api::pb::dispatcher_server::{Dispatcher, DispatcherServer};
use essaim_api::pb::membership_server::{Membership, MembershipServer};
use essaim_api::pb::worker_server::{Worker, WorkerServer};
use essaim_api::pb::{
    ControlMessage, HeartbeatRequest, HeartbeatResponse, JoinRequest, JoinResponse, LeaveRequest,
    LeaveResponse, LogLines, LogsRequest, RenewRequest, RenewResponse, SessionReport,
};
use essaim_api::tls::{self, CertRole};
use essaim_api::{control, transport, ControlError, ControlRequest};
use essaim_core::liveness::NodeTrust;
use futures::stream::BoxStream;
use futures::StreamExt;
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::service::interceptor::InterceptedService;
use tonic::{Request, Response, Status, Streaming};

use crate::forward::{self, Route, ON_BEHALF_OF_HEADER};
use crate::node::Node;
use crate::replica::raft::network::RaftService;
use crate::replica::Leader;
use crate::security::{authz, renewal};
use crate::swarm::Swarm;

/// The control API, on either door.
struct ControlService {
    node: Arc<Node>,
    /// True on the local socket, whose callers are trusted by file permissions.
    local_socket: bool,
}

impl ControlService {
    /// Checks the caller (the local socket's are trusted by file permissions) and returns
    /// whether a manager passed the request on.
    fn admit<T>(&self, request: &Request<T>) -> Result<bool, ControlError> {
        if !self.local_socket {
            let swarm = self.node.in_swarm()?;
            swarm
                .authz
                .require_operator(authz::caller(request), "the control API")?;
        }
        Ok(forward::was_forwarded(request))
    }
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn call(
        &self,
        request: Request<ControlMessage>,
    ) -> Result<Response<ControlMessage>, Status> {
        let forwarded = self.admit(&request)?;
        let decoded: ControlRequest = control::decode(request.get_ref())?;
        let reply = self
            .node
            .dispatch(decoded, self.local_socket, forwarded)
            .await?;
        Ok(Response::new(control::encode(&reply)?))
    }

    type LogsStream = BoxStream<'static, Result<ControlMessage, Status>>;

    async fn logs(
        &self,
        request: Request<ControlMessage>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let forwarded = self.admit(&request)?;
        let decoded: control::ServiceLogs = control::decode(request.get_ref())?;
        let events = self.node.service_logs(decoded, forwarded).await?;
        Ok(Response::new(
            events
                .map(|event| control::encode(&event).map_err(Status::from))
                .boxed(),
        ))
    }
}

/// Joins, heartbeats, renewals and leaves, on the cluster port.
struct MembershipService {
    node: Arc<Node>,
}

impl MembershipService {
    /// The node a call acts on: the caller's own, or, from a manager passing the call on, the
    /// node it names.
    fn subject<T>(
        &self,
        swarm: &Swarm,
        request: &Request<T>,
        what: &str,
    ) -> Result<String, ControlError> {
        let on_behalf = request
            .metadata()
            .get(ON_BEHALF_OF_HEADER)
            .and_then(|v| v.to_str().ok());
        match on_behalf {
            // Speaking for another node takes a manager in good standing: a demoted manager
            // still holding its old certificate must not get certificates for others.
            Some(node) => {
                swarm.authz.require_manager(authz::caller(request), what)?;
                Ok(node.to_string())
            }
            None => Ok(swarm
                .authz
                .require_member(authz::caller(request), what)?
                .node_id),
        }
    }

    /// Where a call that needs the leader goes: answered here, or passed on to the leader on
    /// this channel. Only a manager knows the leader for sure.
    fn leader_channel<T>(
        &self,
        swarm: &Swarm,
        request: &Request<T>,
    ) -> Result<Option<tonic::transport::Channel>, ControlError> {
        if !swarm.replica.is_voter() {
            return Err(ControlError::Unavailable(
                "this node cannot reach the leader: it is not a manager; try a manager".into(),
            ));
        }
        match forward::route(&swarm.replica, forward::was_forwarded(request))? {
            Route::Here => Ok(None),
            Route::Leader(addr) => Ok(Some(swarm.peers.channel(&addr)?)),
        }
    }
}

#[tonic::async_trait]
impl Membership for MembershipService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let swarm = self.node.in_swarm()?;
        // The join token is the credential here: the joiner has no certificate yet.
        match self.leader_channel(&swarm, &request)? {
            None => Ok(Response::new(
                swarm.membership.join(request.into_inner()).await?,
            )),
            Some(channel) => {
                let mut forward = forward::forwarded(request.into_inner(), None)?;
                forward.set_timeout(std::time::Duration::from_secs(10));
                transport::membership_client(channel).join(forward).await
            }
        }
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let swarm = self.node.in_swarm()?;
        let identity = swarm
            .authz
            .require_member(authz::caller(&request), "heartbeat")?;
        if identity.node_id != request.get_ref().node_id {
            return Err(ControlError::PermissionDenied(format!(
                "heartbeat refused: the certificate is node {}'s, not {}'s",
                identity.node_id,
                request.get_ref().node_id
            ))
            .into());
        }
        // A heartbeat is never passed on: the node is told where the leader is, and goes
        // there itself.
        let redirect = |leader_addr: String| HeartbeatResponse {
            accepted: false,
            leader_addr,
            manager_addrs: swarm.replica.manager_addrs_from_state(),
            ..Default::default()
        };
        match swarm.replica.leader() {
            Leader::Me => {
                let trust = NodeTrust {
                    roots_fingerprint: request.get_ref().roots_fingerprint.clone(),
                    issuer_fingerprint: request.get_ref().cert_issuer_fingerprint.clone(),
                };
                Ok(Response::new(swarm.membership.heartbeat(
                    &identity.node_id,
                    identity.role,
                    trust,
                )?))
            }
            Leader::Other { addr, .. } => Ok(Response::new(redirect(addr))),
            Leader::Unknown => Ok(Response::new(redirect(String::new()))),
        }
    }

    async fn renew(
        &self,
        request: Request<RenewRequest>,
    ) -> Result<Response<RenewResponse>, Status> {
        let swarm = self.node.in_swarm()?;
        let node = self.subject(&swarm, &request, "certificate renewal")?;
        match self.leader_channel(&swarm, &request)? {
            None => Ok(Response::new(
                renewal::sign(&swarm.replica, &node, &request.get_ref().csr_pem).await?,
            )),
            Some(channel) => {
                let forward = forward::forwarded(request.into_inner(), Some(&node))?;
                transport::membership_client(channel).renew(forward).await
            }
        }
    }

    async fn leave(
        &self,
        request: Request<LeaveRequest>,
    ) -> Result<Response<LeaveResponse>, Status> {
        let swarm = self.node.in_swarm()?;
        let node = self.subject(&swarm, &request, "leave")?;
        match self.leader_channel(&swarm, &request)? {
            None => {
                swarm
                    .membership
                    .leave(&node, request.get_ref().force)
                    .await?;
                Ok(Response::new(LeaveResponse {}))
            }
            Some(channel) => {
                let forward = forward::forwarded(request.into_inner(), Some(&node))?;
                transport::membership_client(channel).leave(forward).await
            }
        }
    }
}

/// The task sessions of the nodes with the leader.
struct DispatcherService {
    node: Arc<Node>,
}

#[tonic::async_trait]
impl Dispatcher for DispatcherService {
    type SessionStream = crate::dispatcher::AssignmentStream;

    async fn session(
        &self,
        request: Request<Streaming<SessionReport>>,
    ) -> Result<Response<Self::SessionStream>, Status> {
        let swarm = self.node.in_swarm()?;
        let identity = swarm
            .authz
            .require_member(authz::caller(&request), "task session")?;
        // A session is never passed on: the node is sent to the leader, and keeps its
        // session there.
        if let Route::Leader(leader_addr) = forward::route(&swarm.replica, false)? {
            return Err(ControlError::NotLeader { leader_addr }.into());
        }
        let stream = swarm
            .dispatcher
            .open(&identity.node_id, request.into_inner())?;
        Ok(Response::new(stream))
    }
}

/// What this node tells managers about the tasks it runs.
struct WorkerService {
    node: Arc<Node>,
}

#[tonic::async_trait]
impl Worker for WorkerService {
    type LogsStream = BoxStream<'static, Result<LogLines, Status>>;

    async fn logs(
        &self,
        request: Request<LogsRequest>,
    ) -> Result<Response<Self::LogsStream>, Status> {
        let swarm = self.node.in_swarm()?;
        swarm
            .authz
            .require_manager(authz::caller(&request), "task logs")?;
        let request = request.into_inner();
        let tail = usize::try_from(request.tail).unwrap_or(usize::MAX);
        let streams = request.task_ids.into_iter().filter_map(|task_id| {
            let lines = swarm.worker().logs(&task_id, tail, request.follow)?;
            // Lines that come together travel together.
            Some(
                lines
                    .ready_chunks(256)
                    .map(move |lines| {
                        Ok(LogLines {
                            task_id: task_id.clone(),
                            lines,
                        })
                    })
                    .boxed(),
            )
        });
        Ok(Response::new(futures::stream::select_all(streams).boxed()))
    }
}

/// Serves both doors until `shutdown` resolves.
///
/// # Errors
/// A server failed for a reason other than the shutdown.
pub async fn serve(
    node: Arc<Node>,
    cluster_listener: TcpListener,
    socket_listener: UnixListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let wait_for = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let locate_node = node.clone();
    let cluster = transport::server()
        .add_service(InterceptedService::new(
            RaftService::new(Arc::new(move |caller| {
                locate_node.raft_for(caller).map_err(Status::from)
            })),
            authz::gate(&[CertRole::Manager], "raft"),
        ))
        .add_service(MembershipServer::new(MembershipService {
            node: node.clone(),
        }))
        .add_service(InterceptedService::new(
            DispatcherServer::new(DispatcherService { node: node.clone() })
                .max_decoding_message_size(transport::MAX_MESSAGE_BYTES)
                .max_encoding_message_size(transport::MAX_MESSAGE_BYTES),
            authz::gate(&[CertRole::Manager, CertRole::Worker], "task sessions"),
        ))
        .add_service(InterceptedService::new(
            WorkerServer::new(WorkerService { node: node.clone() }),
            authz::gate(&[CertRole::Manager], "task logs"),
        ))
        .add_service(InterceptedService::new(
            control_server(node.clone(), false),
            authz::gate(&[CertRole::Manager, CertRole::Client], "the control API"),
        ))
        .serve_with_incoming_shutdown(
            tls::accept(cluster_listener, node.tls().clone()),
            wait_for(stopped.clone()),
        );
    let local = transport::server()
        .add_service(control_server(node.clone(), true))
        .serve_with_incoming_shutdown(UnixListenerStream::new(socket_listener), wait_for(stopped));
    let cluster = tokio::spawn(cluster);
    let local = tokio::spawn(local);
    shutdown.await;
    tracing::info!("shutting down");
    let _ = stop.send(true);
    node.shutdown().await;
    cluster.await??;
    local.await??;
    Ok(())
}

/// Control requests are small; replies (a task list) can be large.
const MAX_CONTROL_REQUEST_BYTES: usize = 16 * 1024 * 1024;

fn control_server(node: Arc<Node>, local_socket: bool) -> ControlServer<ControlService> {
    ControlServer::new(ControlService { node, local_socket })
        .max_decoding_message_size(MAX_CONTROL_REQUEST_BYTES)
        .max_encoding_message_size(transport::MAX_MESSAGE_BYTES)
}
