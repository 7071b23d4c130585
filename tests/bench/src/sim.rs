//! What the scenarios share: three managers, and processes hosting simulated worker
//! nodes (`essaimd --runtime sim --sim-nodes N`), each a real agent with its own certificate
//! and task session.

use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use essaim_api::control::{ServiceView, TaskView};
use essaim_api::{transport, ControlReply, ControlRequest};
use essaim_core::model::{ServiceMode, ServiceSpec, TaskSpec};
use essaim_tests::{die_with_parent, essaimd_path, Cluster};

pub const SETTLE: Duration = Duration::from_secs(120);

/// A process hosting simulated nodes; killed when dropped.
pub struct SimHost {
    name: String,
    child: Child,
}

impl SimHost {
    /// Starts `nodes` simulated nodes named `{name}-NNNN` that join the cluster through m1.
    pub fn start(cluster: &Cluster, name: &str, nodes: usize) -> Result<SimHost> {
        let m1 = cluster.node("m1");
        let token = m1.ok(&["swarm", "join-token", "-q", "worker"])?;
        let dir = cluster.root().join(name);
        std::fs::create_dir_all(&dir)?;
        let log = std::fs::File::create(dir.join("essaimd.log"))?;
        let mut command = Command::new(essaimd_path());
        die_with_parent(&mut command);
        // Simulated nodes stand in for other machines: on this one they must not take the
        // managers' CPU, or the figures would measure the simulation, not the control plane.
        // SAFETY: setpriority is async-signal-safe.
        unsafe {
            command.pre_exec(|| {
                libc::setpriority(libc::PRIO_PROCESS, 0, 19);
                Ok(())
            });
        }
        let child = command
            .args(["--runtime", "sim", "--sim-nodes", &nodes.to_string()])
            .args(["--hostname", name, "--data-dir"])
            .arg(&dir)
            .arg(m1.addr())
            .env("ESSAIM_JOIN_TOKEN", token.trim())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a sim host")?;
        Ok(SimHost {
            name: name.to_string(),
            child,
        })
    }

    /// The host's name; its nodes are named `{name}-NNNN`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Kills the process at once: its nodes fall silent, as machines that fail.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for SimHost {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// Three managers, settled.
pub fn managers() -> Result<Cluster> {
    let cluster = Cluster::start(3, 0)?;
    wait_for_managers(&cluster, "m1")?;
    Ok(cluster)
}

/// Waits until `via` sees three managers, each the leader or reachable.
pub fn wait_for_managers(cluster: &Cluster, via: &str) -> Result<()> {
    cluster.wait_for_nodes(via, "three reachable managers", SETTLE, |nodes| {
        nodes
            .iter()
            .filter(|n| !n["manager_status"].is_null())
            .count()
            == 3
            && nodes.iter().all(|n| {
                n["manager_status"]["leader"] == true
                    || n["manager_status"]["reachability"] == "reachable"
            })
    })?;
    Ok(())
}

/// Waits until `count` nodes in all are ready.
pub fn wait_for_ready_nodes(cluster: &Cluster, count: usize) -> Result<Duration> {
    let started = Instant::now();
    cluster.wait_for_nodes("m1", &format!("{count} ready nodes"), SETTLE, |nodes| {
        nodes.len() == count && nodes.iter().all(|n| n["status"]["state"] == "ready")
    })?;
    Ok(started.elapsed())
}

/// A service of simulated tasks on the simulated nodes only (managers keep to managing).
pub fn sim_service(name: &str, replicas: u64) -> ServiceSpec {
    ServiceSpec {
        name: name.to_string(),
        labels: Default::default(),
        mode: ServiceMode::Replicated { replicas },
        task: TaskSpec {
            image: "sim".to_string(),
            constraints: vec!["node.role==worker".to_string()],
            ..Default::default()
        },
        ports: vec![],
        update_config: Default::default(),
        rollback_config: Default::default(),
        endpoint_mode: Default::default(),
    }
}

/// One control call through a node's local socket, as the shell makes it.
pub async fn call(socket: &std::path::Path, request: &ControlRequest) -> Result<ControlReply> {
    let channel = transport::local_channel(socket).await?;
    let mut client = transport::control_client(channel);
    Ok(transport::call(&mut client, request).await?)
}

pub async fn inspect(socket: &std::path::Path, service: &str) -> Result<ServiceView> {
    match call(
        socket,
        &ControlRequest::ServiceInspect {
            service: service.to_string(),
        },
    )
    .await?
    {
        ControlReply::Service(view) => Ok(view),
        other => bail!("unexpected reply {other:?}"),
    }
}

/// The tasks of a service, as `service ps` sees them.
pub async fn tasks(socket: &std::path::Path, service: &str) -> Result<Vec<TaskView>> {
    match call(
        socket,
        &ControlRequest::TaskList {
            service: Some(service.to_string()),
            node: None,
        },
    )
    .await?
    {
        ControlReply::Tasks(tasks) => Ok(tasks),
        other => bail!("unexpected reply {other:?}"),
    }
}

/// The resident memory of a process, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let line = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .context("no VmRSS line")?;
    let kib: u64 = line
        .split_whitespace()
        .nth(1)
        .context("no VmRSS value")?
        .parse()?;
    Ok(kib * 1024)
}
