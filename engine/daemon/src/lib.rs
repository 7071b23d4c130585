//! `essaimd`, the node daemon: reads its configuration, opens the node's two doors (the
//! cluster port and the local socket) and runs the node until it is told to stop. All the
//! behaviour lives in `essaim-manager`; this crate is configuration and start-up only.
//!
//! # Layout
//! - [`config`]: command-line flags and their defaults, and the advertise address.

pub mod config;

use std::future::Future;

use anyhow::Context;
use essaim_manager::servers;

/// Runs the daemon until `shutdown` resolves.
///
/// # Errors
/// The node cannot start, or a door cannot be opened.
pub async fn run(
    args: config::Args,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut settings = args.resolve()?;
    if args.runtime == config::RuntimeArg::Auto {
        settings.node.runtime = match essaim_worker::docker::connect().await {
            Ok(_) => essaim_worker::Runtime::Docker,
            Err(e) => {
                tracing::info!("running tasks as processes: {e}");
                essaim_worker::Runtime::Process
            }
        };
    }
    if let Some(hosting) = &settings.sim_hosting {
        return host_sim_nodes(hosting, &settings, shutdown).await;
    }
    let cluster_listener = tokio::net::TcpListener::bind(settings.listen_addr)
        .await
        .with_context(|| format!("cannot listen on --listen-addr {}", settings.listen_addr))?;
    let socket_listener = essaim_api::transport::bind_local_socket(&settings.socket)
        .with_context(|| format!("cannot open --socket {}", settings.socket.display()))?;
    let node = essaim_manager::Node::start(settings.node.clone()).await?;
    tracing::info!(
        listen = %settings.listen_addr,
        advertise = %settings.node.advertise_addr,
        socket = %settings.socket.display(),
        data_dir = %settings.node.data_dir.display(),
        hostname = %settings.node.hostname,
        "essaimd ready"
    );
    let result = servers::serve(node, cluster_listener, socket_listener, shutdown).await;
    let _ = std::fs::remove_file(&settings.socket);
    result
}

/// `--sim-nodes`: joins the simulated nodes and keeps them running until `shutdown`.
async fn host_sim_nodes(
    hosting: &config::SimHosting,
    settings: &config::Settings,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let executor = settings
        .node
        .runtime
        .executor(&hosting.hostname_prefix, &settings.node.data_dir)
        .await?;
    let host = essaim_manager::sim_nodes::start(
        hosting.count,
        &hosting.join_token,
        &hosting.manager_addr,
        &hosting.hostname_prefix,
        executor,
    )
    .await?;
    tracing::info!(nodes = host.workers.len(), manager = %hosting.manager_addr, "essaimd hosting simulated nodes");
    shutdown.await;
    for worker in &host.workers {
        worker.shutdown().await;
    }
    Ok(())
}
