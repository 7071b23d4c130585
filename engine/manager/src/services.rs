//! The node's two doors and the gRPC services behind them: the cluster port (Raft,
//! membership, control) and the local socket (control only).

use std::sync::Arc;

use essaim_api::pb::control_server::{Control, ControlServer};
use essaim_api::pb::membership_server::{Membership, MembershipServer};
use essaim_api::pb::{
    ControlMessage, HeartbeatRequest, HeartbeatResponse, JoinRequest, JoinResponse,
};
use essaim_api::{control, transport, ControlError, ControlRequest};
use tokio::net::{TcpListener, UnixListener};
use tokio_stream::wrappers::{TcpListenerStream, UnixListenerStream};
use tonic::{Request, Response, Status};

use crate::leader;
use crate::node::{Node, FORWARDED_HEADER};
use crate::raft::network::RaftService;
use crate::swarm::Leader;

/// The control API, on either door.
struct ControlService {
    node: Arc<Node>,
    /// True on the local socket, whose callers are trusted by file permissions.
    local_socket: bool,
}

#[tonic::async_trait]
impl Control for ControlService {
    async fn call(
        &self,
        request: Request<ControlMessage>,
    ) -> Result<Response<ControlMessage>, Status> {
        let forwarded = request.metadata().contains_key(FORWARDED_HEADER);
        let decoded: ControlRequest = control::decode(request.get_ref())?;
        let reply = self
            .node
            .dispatch(decoded, self.local_socket, forwarded)
            .await?;
        Ok(Response::new(control::encode(&reply)?))
    }
}

/// Joins and heartbeats, on the cluster port.
struct MembershipService {
    node: Arc<Node>,
}

#[tonic::async_trait]
impl Membership for MembershipService {
    async fn join(&self, request: Request<JoinRequest>) -> Result<Response<JoinResponse>, Status> {
        let swarm = self
            .node
            .swarm()
            .ok_or_else(|| Status::failed_precondition("this node is not part of a swarm"))?;
        match swarm.leader() {
            Leader::Me => Ok(Response::new(
                leader::join(&swarm, request.into_inner()).await?,
            )),
            Leader::Other { addr, .. } if swarm.is_voter() => {
                // The joiner may know any manager; the leader decides.
                let channel = transport::cluster_channel(&addr)?;
                transport::membership_client(channel)
                    .join(request.into_inner())
                    .await
            }
            _ => Err(ControlError::Unavailable(
                "this node cannot admit new nodes: it is not a manager, or the managers have \
                 no leader; try another manager"
                    .into(),
            )
            .into()),
        }
    }

    async fn heartbeat(
        &self,
        request: Request<HeartbeatRequest>,
    ) -> Result<Response<HeartbeatResponse>, Status> {
        let swarm = self
            .node
            .swarm()
            .ok_or_else(|| Status::failed_precondition("this node is not part of a swarm"))?;
        match swarm.leader() {
            Leader::Me => Ok(Response::new(leader::heartbeat(
                &swarm,
                &request.get_ref().node_id,
            )?)),
            Leader::Other { addr, .. } => Ok(Response::new(HeartbeatResponse {
                accepted: false,
                leader_addr: addr,
                manager_addrs: swarm.manager_addrs_from_state(),
                period_ms: 0,
            })),
            Leader::Unknown => Ok(Response::new(HeartbeatResponse {
                accepted: false,
                leader_addr: String::new(),
                manager_addrs: swarm.manager_addrs_from_state(),
                period_ms: 0,
            })),
        }
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
        .add_service(RaftService::new(Arc::new(move || locate_node.raft())))
        .add_service(MembershipServer::new(MembershipService {
            node: node.clone(),
        }))
        .add_service(control_server(node.clone(), false))
        .serve_with_incoming_shutdown(
            TcpListenerStream::new(cluster_listener),
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

fn control_server(node: Arc<Node>, local_socket: bool) -> ControlServer<ControlService> {
    ControlServer::new(ControlService { node, local_socket })
        .max_decoding_message_size(transport::MAX_MESSAGE_BYTES)
        .max_encoding_message_size(transport::MAX_MESSAGE_BYTES)
}
