//! The embedded cluster: when the interactive shell finds no daemon at the default socket, it
//! runs one in-process, exactly as `essaimd` would (the same code, `essaim_daemon::run`): a
//! single node that is manager and worker, on loopback, with its state in the default data
//! dir so the next start finds it again. The shell then talks to it through its local socket
//! like to any daemon. Leaving the shell stops it cleanly (its tasks stop with it).

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Parser;
use essaim_api::control::LocalSwarmState;
use essaim_api::ControlRequest;

use crate::client::Client;

/// The file, in the data dir, that keeps the embedded node's cluster address across starts.
const ADDR_FILE: &str = "embedded.addr";
/// The embedded node's log, in the data dir.
const LOG_FILE: &str = "embedded.log";
/// How long the node may take to open its socket.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running embedded node.
pub struct Embedded {
    pub data_dir: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<anyhow::Result<()>>>,
}

impl Embedded {
    /// Starts the node on its own threads and waits until its socket answers; makes it a
    /// single-node swarm on its first start.
    ///
    /// # Errors
    /// The node could not start (its error, and where its log is).
    pub fn start(data_dir: &Path, runtime: &tokio::runtime::Runtime) -> anyhow::Result<Embedded> {
        refuse_a_daemons_state(data_dir)?;
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("cannot create the data dir {}", data_dir.display()))?;
        let addr = cluster_addr(data_dir)?;
        log_to_file(&data_dir.join(LOG_FILE));
        let args = essaim_daemon::config::Args::try_parse_from([
            "essaimd".as_ref(),
            "--data-dir".as_ref(),
            data_dir.as_os_str(),
            "--listen-addr".as_ref(),
            addr.to_string().as_ref(),
        ])?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("embedded-node".to_string())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name("embedded-node")
                    .enable_all()
                    .build()?;
                runtime.block_on(essaim_daemon::run(args, async move {
                    let _ = stopped.await;
                }))
            })?;
        let mut embedded = Embedded {
            data_dir: data_dir.to_path_buf(),
            stop: Some(stop),
            thread: Some(thread),
        };
        let socket = essaim_api::paths::socket_in(data_dir);
        let deadline = Instant::now() + START_TIMEOUT;
        let mut client = loop {
            if embedded
                .thread
                .as_ref()
                .is_some_and(JoinHandle::is_finished)
            {
                let error = embedded
                    .join()
                    .err()
                    .unwrap_or_else(|| anyhow::anyhow!("the embedded node stopped as it started"));
                return Err(error.context(format!(
                    "the embedded cluster could not start (log: {})",
                    data_dir.join(LOG_FILE).display()
                )));
            }
            match runtime.block_on(Client::connect(
                &essaim_api::transport::Host::Unix(socket.clone()),
                None,
            )) {
                Ok(client) => break client,
                Err(_) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50))
                }
                Err(error) => {
                    return Err(error.context("the embedded cluster did not open its socket"))
                }
            }
        };
        let info = runtime.block_on(client.info())?;
        if info.swarm == LocalSwarmState::Inactive {
            runtime.block_on(client.call(&ControlRequest::SwarmInit {
                advertise_addr: Some(addr.to_string()),
                address_pool: None,
            }))?;
        }
        // After a restart the node must elect itself again before it takes commands.
        loop {
            let info = runtime.block_on(client.info())?;
            if info.leader_id.is_some() {
                break;
            }
            if Instant::now() >= deadline {
                anyhow::bail!(
                    "the embedded cluster has no leader after {}s (log: {})",
                    START_TIMEOUT.as_secs(),
                    data_dir.join(LOG_FILE).display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(embedded)
    }

    /// Stops the node and waits for it to finish.
    ///
    /// # Errors
    /// What the node stopped with.
    pub fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.join()
    }

    fn join(&mut self) -> anyhow::Result<()> {
        match self.thread.take() {
            Some(thread) => thread
                .join()
                .map_err(|_| anyhow::anyhow!("the embedded node panicked"))?,
            None => Ok(()),
        }
    }
}

impl Drop for Embedded {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
            let _ = self.join();
        }
    }
}

/// The embedded cluster runs only in a data dir that is empty or already its own (it has
/// [`ADDR_FILE`]): a stopped `essaimd`'s state must not come to life inside a shell, on
/// loopback, with its tasks tied to the shell.
///
/// # Errors
/// The data dir holds another node's state: unreachable (exit 3), with what to do.
fn refuse_a_daemons_state(data_dir: &Path) -> anyhow::Result<()> {
    if data_dir.join(ADDR_FILE).exists() {
        return Ok(());
    }
    let Ok(mut entries) = std::fs::read_dir(data_dir) else {
        return Ok(());
    };
    if entries.next().is_none() {
        return Ok(());
    }
    Err(essaim_api::ControlError::Unavailable(format!(
        "no essaimd answers, and {} holds the state of a node that is not running: start \
         essaimd, or set ESSAIM_DATA_DIR to an empty directory for an embedded cluster",
        data_dir.display()
    ))
    .into())
}

/// The loopback address the embedded node listens on: the one it had before (its peers and
/// certificates know it), else a free port, remembered in the data dir.
fn cluster_addr(data_dir: &Path) -> anyhow::Result<SocketAddr> {
    let file = data_dir.join(ADDR_FILE);
    if let Ok(text) = std::fs::read_to_string(&file) {
        if let Ok(addr) = text.trim().parse::<SocketAddr>() {
            return Ok(addr);
        }
    }
    let addr = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?;
    std::fs::write(&file, format!("{addr}\n"))
        .with_context(|| format!("cannot write {}", file.display()))?;
    Ok(addr)
}

/// Sends the node's logs to a file: the shell's terminal is the user's.
fn log_to_file(path: &Path) {
    let Ok(file) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return;
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::sync::Mutex::new(file))
        .with_ansi(false)
        .try_init();
}
