//! Many simulated worker nodes in one process, for scale tests:
//! `essaimd --runtime sim --sim-nodes N --join-token T ADDR`. Each node joins with its own key
//! and certificate and keeps its own task session with the leader, exactly as a real worker
//! does; only its tasks are simulated. Nothing is kept on disk: a restarted host joins as new
//! nodes.

use essaim_worker::generic::GenericUnitsHeld;
use essaim_worker::task_files::TaskFiles;
use std::sync::Arc;
use std::time::Duration;

use essaim_api::pb::JoinRequest;
use essaim_api::tls::{self, Credentials, TlsState};
use essaim_api::transport::{self, ClientTls};
use essaim_api::ControlError;
use essaim_worker::{Executor, Worker, WorkerSetup};
use futures::StreamExt;

use crate::security::ca;
use crate::security::tokens::JoinToken;

/// Joins at once at most: enough to fill a cluster quickly, few enough not to time out.
const PARALLEL_JOINS: usize = 16;
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);

/// What simulated nodes say they have.
const SIM_NANO_CPUS: u64 = 8_000_000_000;
const SIM_MEMORY_BYTES: u64 = 16 << 30;

pub struct SimHost {
    pub workers: Vec<Arc<Worker>>,
}

/// Joins `count` simulated nodes named `{prefix}-{i}` to the cluster of the manager at
/// `manager_addr`, and starts their agents.
///
/// # Errors
/// The token is malformed, or a node could not join.
pub async fn start(
    count: usize,
    token: &str,
    manager_addr: &str,
    prefix: &str,
    executor: Arc<dyn Executor>,
) -> Result<SimHost, ControlError> {
    let pin = JoinToken::parse(token)?;
    let pinned = tls::pinned_client_config(&pin.digest)
        .map_err(|e| ControlError::Internal(e.to_string()))?;
    let channel = transport::cluster_channel(manager_addr, ClientTls::Fixed(Arc::new(pinned)))?;
    let joins = futures::stream::iter(0..count)
        .map(|i| {
            let channel = channel.clone();
            let executor = executor.clone();
            let hostname = format!("{prefix}-{i:04}");
            async move { join_one(channel, token, manager_addr, hostname, executor).await }
        })
        .buffer_unordered(PARALLEL_JOINS);
    let workers: Vec<Result<Arc<Worker>, ControlError>> = joins.collect().await;
    let workers = workers.into_iter().collect::<Result<Vec<_>, _>>()?;
    tracing::info!(nodes = workers.len(), "simulated nodes joined");
    Ok(SimHost { workers })
}

async fn join_one(
    channel: tonic::transport::Channel,
    token: &str,
    manager_addr: &str,
    hostname: String,
    executor: Arc<dyn Executor>,
) -> Result<Arc<Worker>, ControlError> {
    let (key_pem, csr_pem) = ca::new_key_and_request()?;
    let mut request = tonic::Request::new(JoinRequest {
        token: token.trim().to_string(),
        hostname: hostname.clone(),
        // A simulated node has no cluster port of its own.
        addr: "0.0.0.0:0".to_string(),
        os: std::env::consts::OS.to_string(),
        arch: std::env::consts::ARCH.to_string(),
        csr_pem,
        nano_cpus: SIM_NANO_CPUS,
        memory_bytes: SIM_MEMORY_BYTES,
        runtime: executor.name().to_string(),
        generic_resources: Vec::new(),
    });
    request.set_timeout(JOIN_TIMEOUT);
    let reply = transport::membership_client(channel)
        .join(request)
        .await
        .map_err(|status| {
            ControlError::Unavailable(format!("{hostname} could not join: {}", status.message()))
        })?
        .into_inner();
    let tls = Arc::new(TlsState::default());
    tls.install(Credentials {
        cert_pem: reply.certificate_pem,
        key_pem,
        roots_pem: reply.roots_pem,
    })
    .map_err(|e| ControlError::Internal(format!("{hostname}: {e}")))?;
    let mut managers = reply.manager_addrs;
    if managers.is_empty() {
        managers.push(manager_addr.to_string());
    }
    // A simulated node has no data directory: its files, if a task had any, under a name
    // of its own.
    let task_files = TaskFiles::new(
        &std::env::temp_dir().join("essaim-sim").join(&hostname),
        &hostname,
    );
    Ok(Worker::start(WorkerSetup {
        node_id: reply.node_id,
        task_files: Arc::new(task_files),
        generic_resources: Arc::new(GenericUnitsHeld::new(Default::default())),
        hostname,
        tls,
        managers: Arc::new(move || managers.clone()),
        executor,
    }))
}
