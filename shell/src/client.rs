//! The connection to the daemon: where `-H` points, connecting (to the local socket, or to a
//! manager over mutual TLS), and one typed call per request.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use essaim_api::control::{
    FileView, LogEvent, NetworkView, NodeInfo, NodeView, ServiceLogs, ServiceView, SwarmView,
    TaskView,
};
use essaim_api::tls::Credentials;
use essaim_api::transport::{self, ClientTls, Host};
use essaim_api::{ControlError, ControlReply, ControlRequest};
use essaim_core::model::{Availability, FileKind, FileSpec, NetworkSpec, Role, ServiceSpec};

use crate::{bundle, render, UsageError};

/// The host used when neither `-H` nor `ESSAIM_HOST` is given: the default local socket, the
/// one `essaimd` listens on when started with no flags.
pub fn default_host() -> Host {
    Host::Unix(essaim_api::paths::default_socket())
}

/// The reply to one request, on its way.
pub type PendingReply = Pin<Box<dyn Future<Output = Result<ControlReply, ControlError>>>>;

/// `service logs` events, as they come.
pub type LogEvents = Pin<Box<dyn futures::Stream<Item = Result<LogEvent, ControlError>>>>;
/// The start of a `service logs` answer, on its way.
pub type PendingLogs = Pin<Box<dyn Future<Output = Result<LogEvents, ControlError>>>>;

/// A connected control client.
pub struct Client {
    /// Sends one request. A function rather than the gRPC client itself so that tests can put
    /// a fake daemon behind it (and because the shell does not depend on tonic, whose channel
    /// type the gRPC client is generic over).
    send: Box<dyn FnMut(ControlRequest) -> PendingReply>,
    /// Asks for a service's logs, which come as a stream.
    logs: Box<dyn FnMut(ServiceLogs) -> PendingLogs>,
}

/// A node's spec changes, as `node update`, `promote` and `demote` send them.
#[derive(Debug, Default)]
pub struct NodeChanges {
    pub availability: Option<Availability>,
    pub role: Option<Role>,
    pub label_add: BTreeMap<String, String>,
    pub label_rm: Vec<String>,
}

impl Client {
    /// Connects to the daemon at `host`. A local socket is connected now, so that a missing
    /// daemon is reported before any request is built; a `tcp://` manager is connected on the
    /// first request, which reports it if unreachable.
    ///
    /// # Errors
    /// A [`UsageError`] for a `tcp://` host without `tls_dir`, or with a bundle that is
    /// missing, unreadable or unusable; a [`ControlError::Unavailable`] when no daemon listens
    /// on the socket.
    pub async fn connect(host: &Host, tls_dir: Option<&Path>) -> anyhow::Result<Client> {
        match host {
            Host::Unix(path) => Self::connect_unix(path).await,
            Host::Tcp(addr) => {
                let dir = tls_dir.ok_or_else(|| {
                    UsageError(
                        "tcp:// hosts need a client bundle: create one on a manager with \
                         'essaim swarm ca issue-client --out DIR', then pass --tls-dir DIR"
                            .to_string(),
                    )
                })?;
                Self::connect_tcp(addr, dir)
            }
        }
    }

    async fn connect_unix(path: &Path) -> anyhow::Result<Client> {
        let channel = transport::local_channel(path).await?;
        let client = transport::control_client(channel);
        let logs_client = client.clone();
        Ok(Client::from_fn(move |request| {
            // Clones share the one connection; each call gets its own so the future owns it.
            let mut client = client.clone();
            Box::pin(async move { transport::call(&mut client, &request).await })
        })
        .with_logs(move |request| {
            let client = logs_client.clone();
            Box::pin(async move {
                let events = transport::logs(client, &request).await?;
                Ok(Box::pin(events) as LogEvents)
            })
        }))
    }

    /// A client for the manager at `addr`, with the bundle in `dir`. Nothing is sent yet.
    fn connect_tcp(addr: &str, dir: &Path) -> anyhow::Result<Client> {
        let credentials = bundle::load(dir)?;
        check_not_expired(&credentials, dir)?;
        let config = essaim_api::tls::client_config(&credentials).map_err(|e| {
            UsageError(format!(
                "the client bundle in {} is unusable: {e} (make a new one with 'essaim swarm \
                 ca issue-client')",
                dir.display()
            ))
        })?;
        let channel = transport::cluster_channel(addr, ClientTls::Fixed(Arc::new(config)))
            .map_err(|e| UsageError(format!("invalid host tcp://{addr}: {e}")))?;
        let client = transport::control_client(channel);
        let logs_client = client.clone();
        let addr = addr.to_string();
        let logs_addr = addr.clone();
        Ok(Client::from_fn(move |request| {
            let mut client = client.clone();
            let addr = addr.clone();
            Box::pin(async move {
                transport::call(&mut client, &request)
                    .await
                    .map_err(|error| name_the_manager(&addr, error))
            })
        })
        .with_logs(move |request| {
            let client = logs_client.clone();
            let addr = logs_addr.clone();
            Box::pin(async move {
                let events = transport::logs(client, &request)
                    .await
                    .map_err(|error| name_the_manager(&addr, error))?;
                Ok(Box::pin(events) as LogEvents)
            })
        }))
    }

    /// A client that answers with `send`: the real transport, or a fake daemon in tests.
    pub fn from_fn(send: impl FnMut(ControlRequest) -> PendingReply + 'static) -> Client {
        Client {
            send: Box::new(send),
            logs: Box::new(|_| {
                Box::pin(async {
                    Err(ControlError::Unavailable(
                        "this client cannot stream logs".to_string(),
                    ))
                })
            }),
        }
    }

    /// The same client, answering `service logs` with `logs`.
    pub fn with_logs(mut self, logs: impl FnMut(ServiceLogs) -> PendingLogs + 'static) -> Client {
        self.logs = Box::new(logs);
        self
    }

    /// The output of a service's tasks, as the leader gathers it from the nodes.
    ///
    /// # Errors
    /// No such service, or the daemon or leader could not be reached.
    pub async fn service_logs(&mut self, request: ServiceLogs) -> Result<LogEvents, ControlError> {
        (self.logs)(request).await
    }

    /// Sends one request and returns the reply, whatever it is.
    ///
    /// # Errors
    /// What the daemon or the leader refused, or the transport failed with.
    pub async fn call(&mut self, request: &ControlRequest) -> Result<ControlReply, ControlError> {
        (self.send)(request.clone()).await
    }

    /// # Errors
    /// See [`Client::call`].
    pub async fn info(&mut self) -> Result<NodeInfo, ControlError> {
        let request = ControlRequest::Info;
        match self.call(&request).await? {
            ControlReply::Info(info) => Ok(info),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// # Errors
    /// See [`Client::call`].
    pub async fn swarm_inspect(&mut self) -> Result<SwarmView, ControlError> {
        let request = ControlRequest::SwarmInspect;
        match self.call(&request).await? {
            ControlReply::Swarm(view) => Ok(view),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Changes the settings given (`Some`), leaves the others as they are.
    ///
    /// # Errors
    /// See [`Client::call`].
    pub async fn swarm_update(&mut self, changes: SwarmChanges) -> Result<SwarmView, ControlError> {
        let request = ControlRequest::SwarmUpdate {
            cert_expiry_ms: changes.cert_expiry_ms,
            heartbeat_period_ms: changes.heartbeat_period_ms,
            task_history_limit: changes.task_history_limit,
        };
        match self.call(&request).await? {
            ControlReply::Swarm(view) => Ok(view),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Has the swarm's CA sign `csr_pem` as a client certificate for `name`; returns the
    /// certificate and the CA roots.
    ///
    /// # Errors
    /// See [`Client::call`].
    pub async fn issue_client_cert(
        &mut self,
        name: &str,
        csr_pem: &str,
    ) -> Result<(String, String, String), ControlError> {
        let request = ControlRequest::IssueClientCert {
            name: name.to_string(),
            csr_pem: csr_pem.to_string(),
        };
        match self.call(&request).await? {
            ControlReply::ClientCert {
                certificate_pem,
                roots_pem,
                manager_addr,
            } => Ok((certificate_pem, roots_pem, manager_addr)),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// # Errors
    /// See [`Client::call`].
    pub async fn node_list(&mut self) -> Result<Vec<NodeView>, ControlError> {
        let request = ControlRequest::NodeList;
        match self.call(&request).await? {
            ControlReply::Nodes(nodes) => Ok(nodes),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// # Errors
    /// See [`Client::call`].
    pub async fn node_inspect(&mut self, node: &str) -> Result<NodeView, ControlError> {
        let request = ControlRequest::NodeInspect {
            node: node.to_string(),
        };
        match self.call(&request).await? {
            ControlReply::Node(view) => Ok(view),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Applies `changes` to the node `read`. The changes are edits (set this, add that label),
    /// which the leader applies to the node as it stands: two operators changing different
    /// things of one node at once both succeed, rather than one being refused.
    ///
    /// # Errors
    /// See [`Client::call`].
    /// `expected_version`: refuse the change if the node changed since that version (scripts
    /// send the version they read); `None` applies the edits to the node as it stands.
    pub async fn node_update(
        &mut self,
        read: &NodeView,
        changes: NodeChanges,
        expected_version: Option<u64>,
    ) -> Result<(), ControlError> {
        let request = ControlRequest::NodeUpdate {
            // The ID, not the name the user gave: the node the user saw, even if renamed.
            node: read.node.id.clone(),
            expected_version,
            availability: changes.availability,
            role: changes.role,
            label_add: changes.label_add,
            label_rm: changes.label_rm,
        };
        match self.call(&request).await? {
            ControlReply::Node(_) | ControlReply::Done => Ok(()),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// # Errors
    /// See [`Client::call`].
    pub async fn node_remove(&mut self, node: &str, force: bool) -> Result<(), ControlError> {
        let request = ControlRequest::NodeRemove {
            node: node.to_string(),
            force,
        };
        match self.call(&request).await? {
            ControlReply::Done | ControlReply::Node(_) => Ok(()),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// # Errors
    /// See [`Client::call`]; the leader refuses a bad or taken name, or too much data.
    pub async fn file_create(
        &mut self,
        kind: FileKind,
        spec: FileSpec,
        data: Vec<u8>,
    ) -> Result<FileView, ControlError> {
        let request = ControlRequest::FileCreate { kind, spec, data };
        match self.call(&request).await? {
            ControlReply::File(view) => Ok(view),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// # Errors
    /// See [`Client::call`].
    pub async fn file_list(&mut self, kind: FileKind) -> Result<Vec<FileView>, ControlError> {
        let request = ControlRequest::FileList { kind };
        match self.call(&request).await? {
            ControlReply::Files(files) => Ok(files),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// # Errors
    /// See [`Client::call`].
    pub async fn file_inspect(
        &mut self,
        kind: FileKind,
        name: &str,
    ) -> Result<FileView, ControlError> {
        let request = ControlRequest::FileInspect {
            kind,
            name: name.to_string(),
        };
        match self.call(&request).await? {
            ControlReply::File(view) => Ok(view),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// # Errors
    /// See [`Client::call`]; refused while services use it.
    pub async fn file_remove(&mut self, kind: FileKind, name: &str) -> Result<(), ControlError> {
        let request = ControlRequest::FileRemove {
            kind,
            name: name.to_string(),
        };
        match self.call(&request).await? {
            ControlReply::Done => Ok(()),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// # Errors
    /// See [`Client::call`]; the leader refuses a name in use, or a subnet or gateway, naming
    /// the flag at fault.
    pub async fn network_create(&mut self, spec: NetworkSpec) -> Result<NetworkView, ControlError> {
        let request = ControlRequest::NetworkCreate { spec };
        match self.call(&request).await? {
            ControlReply::Network(view) => Ok(view),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// # Errors
    /// See [`Client::call`].
    pub async fn network_list(&mut self) -> Result<Vec<NetworkView>, ControlError> {
        let request = ControlRequest::NetworkList;
        match self.call(&request).await? {
            ControlReply::Networks(networks) => Ok(networks),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// # Errors
    /// See [`Client::call`].
    pub async fn network_inspect(&mut self, network: &str) -> Result<NetworkView, ControlError> {
        let request = ControlRequest::NetworkInspect {
            network: network.to_string(),
        };
        match self.call(&request).await? {
            ControlReply::Network(view) => Ok(view),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// # Errors
    /// See [`Client::call`]; refused while services or tasks use the network.
    pub async fn network_remove(&mut self, network: &str) -> Result<(), ControlError> {
        let request = ControlRequest::NetworkRemove {
            network: network.to_string(),
        };
        match self.call(&request).await? {
            ControlReply::Done => Ok(()),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// # Errors
    /// See [`Client::call`]; the leader refuses an invalid spec naming the flag at fault.
    pub async fn service_create(&mut self, spec: ServiceSpec) -> Result<ServiceView, ControlError> {
        let request = ControlRequest::ServiceCreate { spec };
        match self.call(&request).await? {
            ControlReply::Service(view) => Ok(view),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// # Errors
    /// See [`Client::call`].
    pub async fn service_list(&mut self) -> Result<Vec<ServiceView>, ControlError> {
        let request = ControlRequest::ServiceList;
        match self.call(&request).await? {
            ControlReply::Services(services) => Ok(services),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// # Errors
    /// See [`Client::call`].
    pub async fn service_inspect(&mut self, service: &str) -> Result<ServiceView, ControlError> {
        let request = ControlRequest::ServiceInspect {
            service: service.to_string(),
        };
        match self.call(&request).await? {
            ControlReply::Service(view) => Ok(view),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// # Errors
    /// See [`Client::call`].
    pub async fn service_scale(
        &mut self,
        service: &str,
        replicas: u64,
    ) -> Result<(), ControlError> {
        let request = ControlRequest::ServiceScale {
            service: service.to_string(),
            replicas,
        };
        match self.call(&request).await? {
            ControlReply::Done | ControlReply::Service(_) => Ok(()),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Replaces the spec of the service `read` with `spec`, on the version read, so that a
    /// concurrent change is refused rather than overwritten.
    ///
    /// # Errors
    /// See [`Client::call`]; [`ControlError::Conflict`] when the service changed since it was
    /// read; the leader refuses an invalid spec naming the flag at fault.
    pub async fn service_update(
        &mut self,
        read: &ServiceView,
        spec: ServiceSpec,
    ) -> Result<ServiceView, ControlError> {
        let request = ControlRequest::ServiceUpdate {
            // The ID, not the name the user gave: it is what the version read belongs to.
            service: read.service.id.clone(),
            expected_version: Some(read.service.version),
            spec,
        };
        match self.call(&request).await? {
            ControlReply::Service(view) => Ok(view),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// # Errors
    /// See [`Client::call`].
    pub async fn service_remove(&mut self, service: &str) -> Result<(), ControlError> {
        let request = ControlRequest::ServiceRemove {
            service: service.to_string(),
        };
        match self.call(&request).await? {
            ControlReply::Done | ControlReply::Service(_) => Ok(()),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// The tasks of `service`, or of `node`.
    ///
    /// # Errors
    /// See [`Client::call`].
    pub async fn task_list(
        &mut self,
        service: Option<&str>,
        node: Option<&str>,
    ) -> Result<Vec<TaskView>, ControlError> {
        let request = ControlRequest::TaskList {
            service: service.map(str::to_string),
            node: node.map(str::to_string),
        };
        match self.call(&request).await? {
            ControlReply::Tasks(tasks) => Ok(tasks),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Goes back to the spec before the last update (the leader rolls it out with the
    /// service's rollback settings).
    ///
    /// # Errors
    /// See [`Client::call`]; no previous spec is a refusal.
    pub async fn service_rollback(
        &mut self,
        read: &ServiceView,
    ) -> Result<ServiceView, ControlError> {
        let request = ControlRequest::ServiceRollback {
            service: read.service.id.clone(),
            expected_version: Some(read.service.version),
        };
        match self.call(&request).await? {
            ControlReply::Service(view) => Ok(view),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Goes on with a paused update or rollback, to the next checkpoint (`pause_after`) or
    /// to the end.
    ///
    /// # Errors
    /// See [`Client::call`]; a service with no paused update is a refusal.
    pub async fn service_update_continue(
        &mut self,
        service: &str,
        pause_after: Option<essaim_core::model::Checkpoint>,
    ) -> Result<ServiceView, ControlError> {
        let request = ControlRequest::ServiceUpdateContinue {
            service: service.to_string(),
            pause_after,
        };
        match self.call(&request).await? {
            ControlReply::Service(view) => Ok(view),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Waits until the manager has applied a change past `after_index`, or `timeout` ran out
    /// (the manager cuts it to 30 s), and returns its applied index then: greater than
    /// `after_index` when something changed. Pass 0 to learn the current index at once.
    ///
    /// # Errors
    /// See [`Client::call`]; a worker refuses with [`ControlError::FailedPrecondition`].
    ///
    /// # Caveats
    /// The index is the manager's own: after talking to another manager, or if the swarm was
    /// made anew, the answer may be lower than `after_index`; start again from it.
    pub async fn wait_change(
        &mut self,
        after_index: u64,
        timeout: std::time::Duration,
    ) -> Result<u64, ControlError> {
        let request = ControlRequest::WaitChange {
            after_index,
            timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        };
        match self.call(&request).await? {
            ControlReply::Changed { index } => Ok(index),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Takes the cluster-wide lock `name` for `holder`, for `ttl` (1 s to 1 h) by the leader's
    /// clock, or extends it if `holder` holds it already. A lock another holder keeps is an
    /// answer, not an error: `acquired` is false and `holder` names who has it.
    ///
    /// # Errors
    /// See [`Client::call`]; [`ControlError::InvalidArgument`] names the field at fault
    /// (`name`, `holder`, `ttl_ms`).
    ///
    /// # Caveats
    /// `expires_in_ms` is counted by the leader before the reply travels: renew well before it
    /// runs out (every third of `ttl`, say).
    pub async fn lock_acquire(
        &mut self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<essaim_api::control::LockView, ControlError> {
        let request = ControlRequest::LockAcquire {
            name: name.to_string(),
            holder: holder.to_string(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        };
        match self.call(&request).await? {
            ControlReply::Lock(view) => Ok(view),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Extends `holder`'s lease on `name` to `ttl` from now, even if it expired, as long as
    /// nobody else took the lock meanwhile.
    ///
    /// # Errors
    /// See [`Client::call`]; [`ControlError::FailedPrecondition`] naming the holder when
    /// another holder has the lock (the lease was lost: stop the work it guarded), and
    /// [`ControlError::NotFound`] when nobody holds it.
    pub async fn lock_renew(
        &mut self,
        name: &str,
        holder: &str,
        ttl: std::time::Duration,
    ) -> Result<essaim_api::control::LockView, ControlError> {
        let request = ControlRequest::LockRenew {
            name: name.to_string(),
            holder: holder.to_string(),
            ttl_ms: u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX),
        };
        match self.call(&request).await? {
            ControlReply::Lock(view) => Ok(view),
            other => Err(unexpected(&request, &other)),
        }
    }

    /// Frees the lock `name`, which `holder` must hold.
    ///
    /// # Errors
    /// See [`Client::call`]; [`ControlError::FailedPrecondition`] naming the holder when it is
    /// someone else, [`ControlError::NotFound`] when nobody holds the lock.
    pub async fn lock_release(&mut self, name: &str, holder: &str) -> Result<(), ControlError> {
        let request = ControlRequest::LockRelease {
            name: name.to_string(),
            holder: holder.to_string(),
        };
        match self.call(&request).await? {
            ControlReply::Done => Ok(()),
            other => Err(unexpected(&request, &other)),
        }
    }
}

/// The swarm settings `swarm update` changes; `None` leaves a setting as it is.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct SwarmChanges {
    pub cert_expiry_ms: Option<u64>,
    pub heartbeat_period_ms: Option<u64>,
    pub task_history_limit: Option<u32>,
}

/// Refuses a bundle whose certificate has expired, which the manager would refuse with a bare
/// TLS alert. A certificate that is not one of essaim's is left for the manager to judge.
///
/// # Errors
/// A [`UsageError`] when the certificate has expired.
fn check_not_expired(credentials: &Credentials, dir: &Path) -> Result<(), UsageError> {
    let Ok(identity) = credentials.identity() else {
        return Ok(());
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    if u64::try_from(identity.not_after).unwrap_or(0) > now {
        return Ok(());
    }
    Err(UsageError(format!(
        "the client certificate {} expired at {}: make a new bundle with 'essaim swarm ca \
         issue-client --force'",
        dir.join(bundle::CERT_FILE).display(),
        render::rfc3339_seconds(identity.not_after)
    )))
}

/// Names the manager in a [`ControlError::Unavailable`] error: tonic reports a connection
/// that failed without saying where it was going. The wording also fits the manager's own
/// "retry" refusals, which arrive as the same error. It stays `Unavailable` (exit 3).
fn name_the_manager(addr: &str, error: ControlError) -> ControlError {
    match error {
        ControlError::Unavailable(message) => ControlError::Unavailable(format!(
            "the essaim manager at tcp://{addr} is unavailable: {message}"
        )),
        other => other,
    }
}

/// The error for a reply that does not answer the request: a daemon of another version, or a
/// bug on one side.
pub fn unexpected(request: &ControlRequest, reply: &ControlReply) -> ControlError {
    ControlError::Internal(format!(
        "the daemon answered {} to {} (is it the same essaim version?)",
        wire_name(reply),
        wire_name(request)
    ))
}

/// The name a request or reply goes by on the wire, read from its encoding so that new
/// variants need no change here: the `call`/`reply` tag when internally tagged, else the
/// variant name serde uses (a bare string, or an object's one key).
fn wire_name(value: &impl serde::Serialize) -> String {
    let name = match serde_json::to_value(value) {
        Ok(serde_json::Value::String(name)) => Some(name),
        Ok(serde_json::Value::Object(map)) => ["call", "reply"]
            .iter()
            .find_map(|tag| map.get(*tag)?.as_str().map(str::to_string))
            .or_else(|| match map.len() {
                1 => map.keys().next().cloned(),
                _ => None,
            }),
        _ => None,
    };
    name.unwrap_or_else(|| "?".to_string())
}

/// Connects to `host`, or to the default local socket.
///
/// # Errors
/// See [`Client::connect`].
pub async fn connect(host: Option<&Host>, tls_dir: Option<&Path>) -> anyhow::Result<Client> {
    match host {
        Some(host) => Client::connect(host, tls_dir).await,
        None => Client::connect(&default_host(), tls_dir).await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mismatched_reply_names_both_sides() {
        let error = unexpected(
            &ControlRequest::NodeInspect { node: "m1".into() },
            &ControlReply::Nodes(Vec::new()),
        );
        assert_eq!(
            error.to_string(),
            "the daemon answered nodes to node_inspect (is it the same essaim version?)"
        );
        let error = unexpected(&ControlRequest::NodeList, &ControlReply::Done);
        assert_eq!(
            error.to_string(),
            "the daemon answered done to node_list (is it the same essaim version?)"
        );
    }
}
