//! Channels and servers: the one place where connections are set up, so that transport
//! security slots in here and nowhere else.
//!
//! Two doors lead into a node: the cluster port (TCP, for managers and workers) and the local
//! socket (a Unix socket, owner-only, for the shell on the same machine).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tonic::transport::{Channel, Endpoint, Server, Uri};

use crate::error::ControlError;
use crate::pb::control_client::ControlClient;
use crate::pb::dispatcher_client::DispatcherClient;
use crate::pb::membership_client::MembershipClient;
use crate::pb::raft_client::RaftClient;
use crate::pb::worker_client::WorkerClient;
use crate::tls::{self, CertRole, TlsState};

/// Raft batches and snapshots can be large: one entry may carry thousands of task changes.
/// The metadata key in which a manager that is not the leader names the leader, when it
/// refuses a call only the leader takes (a task session).
pub const LEADER_METADATA: &str = "x-essaim-leader";

pub const MAX_MESSAGE_BYTES: usize = 512 * 1024 * 1024;

/// How long a connection attempt to another node may take (TCP, TLS handshake and the
/// manager's first bytes) before it counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Where a channel takes its TLS client settings from, at each (re)connection.
#[derive(Clone)]
pub enum ClientTls {
    /// The node's own credentials, as they are when the connection is made: a renewed
    /// certificate is used from the next connection on.
    Node(Arc<TlsState>),
    /// Fixed settings: a joining node's CA pin, or an operator's client bundle.
    Fixed(Arc<rustls::ClientConfig>),
}

impl ClientTls {
    fn config(&self) -> std::io::Result<Arc<rustls::ClientConfig>> {
        match self {
            ClientTls::Node(state) => state.client_config().ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotConnected,
                    "this node has no certificate: it is in no swarm",
                )
            }),
            ClientTls::Fixed(config) => Ok(config.clone()),
        }
    }
}

/// A mutual-TLS channel to a manager's cluster port. It connects lazily, on first use, and
/// reconnects by itself after a failure.
///
/// # Errors
/// `addr` is not a `host:port` address.
pub fn cluster_channel(addr: &str, tls: ClientTls) -> Result<Channel, ControlError> {
    node_channel(addr, tls, CertRole::Manager)
}

/// A mutual-TLS channel to the cluster port of a node that holds a certificate for `role`:
/// the server is refused unless its certificate says so.
///
/// # Errors
/// `addr` is not a `host:port` address.
pub fn node_channel(addr: &str, tls: ClientTls, role: CertRole) -> Result<Channel, ControlError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| ControlError::InvalidArgument(format!("invalid address {addr:?}: {e}")))?;
    let target = addr.to_string();
    let connector = tower::service_fn(move |_: Uri| {
        let target = target.clone();
        let tls = tls.clone();
        async move {
            let stream = tls::connect(&target, tls.config()?, role).await?;
            Ok::<_, std::io::Error>(TokioIo::new(stream))
        }
    });
    Ok(endpoint
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(Duration::from_secs(5))
        .keep_alive_timeout(Duration::from_secs(5))
        .connect_with_connector_lazy(connector))
}

/// A channel to a daemon's local socket, connected now so that a missing daemon is reported
/// at once.
///
/// # Errors
/// No daemon listens on `path`.
pub async fn local_channel(path: &Path) -> Result<Channel, ControlError> {
    let socket = path.to_path_buf();
    // The URI is required by the API but unused: the connector below decides where to go.
    let endpoint = Endpoint::from_static("http://localhost");
    endpoint
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let socket = socket.clone();
            async move { Ok::<_, std::io::Error>(TokioIo::new(UnixStream::connect(socket).await?)) }
        }))
        .await
        .map_err(|e| {
            ControlError::Unavailable(format!(
                "cannot reach the essaim daemon at unix://{}: {} (is essaimd running?)",
                path.display(),
                source_message(&e)
            ))
        })
}

/// The innermost cause of a transport error, which is the part a person can act on.
fn source_message(error: &(dyn std::error::Error + 'static)) -> String {
    let mut current = error;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

/// A server for either door, with the settings every essaim server shares.
pub fn server() -> Server {
    Server::builder()
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(Duration::from_secs(5)))
        .http2_keepalive_timeout(Some(Duration::from_secs(5)))
}

/// Binds the local socket, readable and writable by its owner only: it is the one door that
/// asks for no certificate, so file permissions are its lock.
///
/// # Errors
/// Another daemon already listens there, or the path cannot be created.
pub fn bind_local_socket(path: &Path) -> std::io::Result<UnixListener> {
    if path.exists() {
        // A socket file with nobody behind it is left over from a crash; a live one belongs to
        // another daemon, which we must not steal from.
        if std::os::unix::net::UnixStream::connect(path).is_ok() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("another essaimd already listens on {}", path.display()),
            ));
        }
        std::fs::remove_file(path)?;
    }
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    // Create the socket with no group or other bits at all, so there is no window in which
    // it is open to others.
    let listener = with_umask(0o177, || UnixListener::bind(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Runs `f` under a file creation mask. The mask is process-wide: files other threads create
/// meanwhile get it too, which can only make them more private.
fn with_umask<T>(mask: libc::mode_t, f: impl FnOnce() -> T) -> T {
    // SAFETY: umask only swaps the process's file creation mask; it cannot fail.
    let previous = unsafe { libc::umask(mask) };
    let out = f();
    // SAFETY: as above, restoring the previous mask.
    unsafe { libc::umask(previous) };
    out
}

/// Where a `-H` host string points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    Unix(PathBuf),
    Tcp(String),
}

impl std::str::FromStr for Host {
    type Err = ControlError;

    fn from_str(text: &str) -> Result<Host, ControlError> {
        if let Some(path) = text.strip_prefix("unix://") {
            if path.is_empty() {
                return Err(ControlError::InvalidArgument(
                    "invalid host \"unix://\": a socket path must follow".to_string(),
                ));
            }
            return Ok(Host::Unix(PathBuf::from(path)));
        }
        if let Some(addr) = text.strip_prefix("tcp://") {
            return Ok(Host::Tcp(addr.to_string()));
        }
        if text.starts_with('/') {
            return Ok(Host::Unix(PathBuf::from(text)));
        }
        Err(ControlError::InvalidArgument(format!(
            "invalid host {text:?}: expected unix:///path/to/essaim.sock or tcp://host:port"
        )))
    }
}

pub fn raft_client(channel: Channel) -> RaftClient<Channel> {
    RaftClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

pub fn membership_client(channel: Channel) -> MembershipClient<Channel> {
    MembershipClient::new(channel)
}

pub fn dispatcher_client(channel: Channel) -> DispatcherClient<Channel> {
    DispatcherClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

pub fn worker_client(channel: Channel) -> WorkerClient<Channel> {
    WorkerClient::new(channel)
}

pub fn control_client(channel: Channel) -> ControlClient<Channel> {
    ControlClient::new(channel)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES)
}

/// Sends one control request and waits for its reply.
///
/// # Errors
/// Whatever the serving node refused, or the transport failed with.
pub async fn call(
    client: &mut ControlClient<Channel>,
    request: &crate::ControlRequest,
) -> Result<crate::ControlReply, ControlError> {
    let message = crate::control::encode(request)?;
    let reply = client.call(message).await.map_err(ControlError::from)?;
    crate::control::decode(reply.get_ref())
}

/// Asks for a service's logs; the events come as the nodes send them.
///
/// # Errors
/// The request was refused, or the transport failed.
pub async fn logs(
    mut client: ControlClient<Channel>,
    request: &crate::control::ServiceLogs,
) -> Result<
    impl tokio_stream::Stream<Item = Result<crate::control::LogEvent, ControlError>> + Send,
    ControlError,
> {
    use tokio_stream::StreamExt;
    let message = crate::control::encode(request)?;
    let events = client
        .logs(message)
        .await
        .map_err(ControlError::from)?
        .into_inner();
    Ok(events.map(|message| {
        message
            .map_err(ControlError::from)
            .and_then(|m| crate::control::decode(&m))
    }))
}
