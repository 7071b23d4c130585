//! The one path by which a request that needs the leader gets there: a manager that does not
//! lead passes it on, once, marked as passed on; the leader answers it. Control calls, service
//! logs, joins, renewals and leaves all go this way.

use std::collections::HashMap;
use std::sync::Arc;

use essaim_api::control::{self, LogEvent, ServiceLogs};
use essaim_api::tls::TlsState;
use essaim_api::transport::{self, ClientTls};
use essaim_api::{ControlError, ControlReply, ControlRequest};
use futures::stream::BoxStream;
use futures::StreamExt;
use parking_lot::Mutex;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;

use crate::replica::{Leader, Replica};

/// Marks a request that a manager already passed on, so it is never passed twice.
pub const FORWARDED_HEADER: &str = "x-essaim-forwarded";
/// Names the node a forwarded Renew or Leave is for: a manager passing such a call on to the
/// leader speaks for the node that made it. Trusted only from a manager's certificate.
pub const ON_BEHALF_OF_HEADER: &str = "x-essaim-on-behalf-of";

/// The merged output of a service's tasks, as `service logs` streams it.
pub type LogEvents = BoxStream<'static, LogEvent>;

/// Where a request that needs the leader is answered.
#[derive(Debug, PartialEq, Eq)]
pub enum Route {
    Here,
    Leader(String),
}

/// What a manager says when a request passed to it as the leader finds that it no longer
/// leads: it did nothing with it, so the request may be sent again.
pub const MOVED: &str = "leadership moved while the request was on its way; retry";

/// Where to answer a request that needs the leader; `forwarded` when another manager passed
/// it on already (it is never passed twice: two managers that disagree on the leader must not
/// bounce it between them).
///
/// # Errors
/// Leadership moved while a forwarded request was on its way, or there is no leader.
pub fn route(replica: &Replica, forwarded: bool) -> Result<Route, ControlError> {
    match replica.leader() {
        Leader::Me => Ok(Route::Here),
        Leader::Other { addr, .. } if !forwarded => Ok(Route::Leader(addr)),
        Leader::Other { .. } => Err(ControlError::Unavailable(MOVED.into())),
        Leader::Unknown => Err(replica.no_quorum("no leader")),
    }
}

/// Channels to other managers, with the TLS generation they were made under: a renewed
/// certificate calls for new connections.
pub struct Peers {
    tls: Arc<TlsState>,
    channels: Mutex<(u64, HashMap<String, Channel>)>,
}

impl Peers {
    pub fn new(tls: Arc<TlsState>) -> Peers {
        Peers {
            tls,
            channels: Mutex::new((0, HashMap::new())),
        }
    }

    /// A channel to another manager, under this node's current certificate.
    ///
    /// # Errors
    /// The address is not one a channel can be made to.
    pub fn channel(&self, addr: &str) -> Result<Channel, ControlError> {
        let mut channels = self.channels.lock();
        let generation = self.tls.generation();
        if channels.0 != generation {
            *channels = (generation, HashMap::new());
        }
        if let Some(channel) = channels.1.get(addr) {
            return Ok(channel.clone());
        }
        let channel = transport::cluster_channel(addr, ClientTls::Node(self.tls.clone()))?;
        channels.1.insert(addr.to_string(), channel.clone());
        Ok(channel)
    }

    pub fn tls(&self) -> &Arc<TlsState> {
        &self.tls
    }
}

/// `message`, marked as passed on, and naming the node it is for.
///
/// # Errors
/// The node ID cannot travel in a header.
pub fn forwarded<T>(
    message: T,
    on_behalf_of: Option<&str>,
) -> Result<tonic::Request<T>, ControlError> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert(FORWARDED_HEADER, MetadataValue::from_static("1"));
    if let Some(node) = on_behalf_of {
        let value = MetadataValue::try_from(node)
            .map_err(|_| ControlError::InvalidArgument("node ID is not a valid header".into()))?;
        request.metadata_mut().insert(ON_BEHALF_OF_HEADER, value);
    }
    Ok(request)
}

/// True when a manager passed this request on.
pub fn was_forwarded<T>(request: &tonic::Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_HEADER)
}

/// A control call passed on to the leader, with what the leader can have done with it.
pub struct Passed {
    pub answer: Result<ControlReply, ControlError>,
    /// True when the leader did nothing with the request: no connection to it could be made
    /// (the request never left), or it reached a manager that no longer leads. Sending it
    /// again is then safe, whatever it asks.
    pub nothing_done: bool,
}

/// A control call, answered by the leader at `addr`.
pub async fn call(peers: &Peers, addr: &str, request: &ControlRequest) -> Passed {
    let sent = async {
        let mut client = transport::control_client(peers.channel(addr)?);
        let message = forwarded(control::encode(request)?, None)?;
        Ok::<_, ControlError>(client.call(message).await)
    };
    match sent.await {
        Err(e) => Passed {
            answer: Err(e),
            nothing_done: true,
        },
        Ok(Ok(reply)) => Passed {
            answer: control::decode(reply.get_ref()),
            nothing_done: false,
        },
        Ok(Err(status)) => {
            if let Some(refused) = connection_not_made(&status) {
                return Passed {
                    answer: Err(ControlError::Unavailable(format!(
                        "cannot reach the leader at {addr}: {refused}; retry"
                    ))),
                    nothing_done: true,
                };
            }
            let answer = match status.code() {
                tonic::Code::Unavailable if status.message().is_empty() => Err(
                    ControlError::Unavailable(format!("cannot reach the leader at {addr}; retry")),
                ),
                _ => Err(ControlError::from(status)),
            };
            let nothing_done = matches!(&answer, Err(ControlError::Unavailable(m)) if m == MOVED);
            Passed {
                answer,
                nothing_done,
            }
        }
    }
}

/// The connection error under a failed call that never got a connection: the manager's port
/// refused it (a dead leader that this node still names), or there is no route to it.
fn connection_not_made(status: &tonic::Status) -> Option<&std::io::Error> {
    use std::io::ErrorKind;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(status);
    while let Some(error) = cause {
        if let Some(io) = error.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::AddrNotAvailable
            ) {
                return Some(io);
            }
            // An io::Error's source() skips the error it wraps: look inside it by hand.
            cause = io
                .get_ref()
                .map(|inner| inner as &(dyn std::error::Error + 'static));
            continue;
        }
        cause = error.source();
    }
    None
}

/// `service logs`, streamed by the leader at `addr`.
///
/// # Errors
/// The leader's refusal, or it cannot be reached.
pub async fn logs(
    peers: &Peers,
    addr: &str,
    request: &ServiceLogs,
) -> Result<LogEvents, ControlError> {
    let mut client = transport::control_client(peers.channel(addr)?);
    let message = forwarded(control::encode(request)?, None)?;
    let events = client
        .logs(message)
        .await
        .map_err(ControlError::from)?
        .into_inner();
    let addr = addr.to_string();
    Ok(events
        .map(move |message| {
            message
                .map_err(ControlError::from)
                .and_then(|m| control::decode::<LogEvent>(&m))
                .unwrap_or_else(|e| LogEvent::Unreachable {
                    node: format!("the leader at {addr}"),
                    reason: e.to_string(),
                })
        })
        .boxed())
}
