//! The Docker runtime: each task is a container on the machine's Docker engine, made through
//! bollard. IMAGE is the image, ARGs replace its command, as `docker service create` has it.
//!
//! Every container carries essaim's labels (task, service, slot, node), so that an agent that
//! restarts finds its containers again instead of starting duplicates, and so that anything
//! essaim made can be listed and cleaned up by label.
//!
//! On a node that runs an overlay (see [`crate::overlay`]), a task on cluster networks is
//! attached the way CNI plugins attach containers: the engine makes the container with network
//! mode `none` (a namespace with loopback only), and once it runs, the overlay moves a veth
//! into its namespace (`/proc/PID/ns/net`) for each of its networks, with its allocated
//! address; its resolver is the name server on its first network's gateway. Network mode
//! `none` rather than a Docker network bridged to the VXLAN device, because one engine may
//! serve several essaim nodes (as on a test machine): a Docker network is the engine's, not
//! a node's, and the engine would allocate addresses the leader did not. A task that
//! publishes ports starts on its service's own bridge (`SERVICE_default`, `eth0`: the
//! engine's port bindings, and the way out of the cluster) and has its cluster networks
//! after it.
//!
//! On a node without an overlay, tasks join bridge networks that essaim creates and labels
//! on the engine: the user networks the service names, or one of the service's own
//! (`SERVICE_default`); on each, the container answers to the service's name, so Docker's
//! DNS resolves `web` to the replicas of web on this engine.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCpuStats, ContainerCreateBody, ContainerInspectResponse, ContainerMemoryStats,
    ContainerStatsResponse, EndpointSettings, HealthConfig, HealthStatusEnum, HostConfig,
    HostConfigLogConfig, MountTmpfsOptions, MountType, MountVolumeOptions, NetworkConnectRequest,
    NetworkCreateRequest, NetworkingConfig, PortBinding, ResourcesUlimits,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    ListNetworksOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    StatsOptionsBuilder, StopContainerOptionsBuilder, WaitContainerOptions,
};
use bollard::Docker;
use essaim_api::control::TaskUsage;
use essaim_core::model::{
    ContainerOptions, HealthCheck, Mount, MountKind, NetworkAttachment, PortConfig, PublishMode,
    RegistryAuth, Task,
};
use essaim_core::netmap::NetworkMap;
use essaim_core::Timestamp;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::executor::{ExecFuture, Executor, Exit, LogStream, StartError, Started};
use crate::overlay::{LocalAttachment, Overlay};

/// Labels on everything essaim makes on the engine.
pub const LABEL_TASK: &str = "essaim.task.id";
pub const LABEL_SERVICE_ID: &str = "essaim.service.id";
pub const LABEL_SERVICE_NAME: &str = "essaim.service.name";
pub const LABEL_SLOT: &str = "essaim.task.slot";
pub const LABEL_NODE: &str = "essaim.node.id";
pub const LABEL_NETWORK: &str = "essaim.network";
/// On the volumes a node made for a task's mount.
pub const LABEL_VOLUME: &str = "essaim.volume";
/// On a container attached to cluster networks: its [`Joined`], as JSON, so that an agent
/// that restarts puts it back in its overlay as it was.
pub const LABEL_JOINED: &str = "essaim.task.networks";

/// How often a container with a health check is looked at while it starts and runs.
const HEALTH_POLL: Duration = Duration::from_millis(250);
/// How long the engine may take to answer a ping before it counts as gone.
const ENGINE_CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a pull may take before the image counts as unavailable.
const PULL_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the engine may take to give one container's stats before the sample skips it.
const STATS_TIMEOUT: Duration = Duration::from_secs(2);
/// Containers asked for their stats at once: enough to sample many quickly, few enough not
/// to flood the engine.
const STATS_AT_ONCE: usize = 8;

pub struct DockerExecutor {
    docker: Docker,
    node_name: String,
    /// Task ID to container name, for the tasks this agent started or adopted.
    containers: Mutex<HashMap<String, String>>,
    /// Each task's CPU counters at its previous sample: one-shot stats come without earlier
    /// counters of their own, and CPU use is the difference.
    last_cpu: Mutex<HashMap<String, ContainerCpuStats>>,
    /// Held while a network is looked up and made: the engine accepts two networks of one
    /// name, and two tasks starting at once would each make one.
    networks: tokio::sync::Mutex<()>,
    /// Puts containers on cluster networks.
    overlay: Arc<Overlay>,
    /// Where the agent writes the tasks' secrets and configs (see [`crate::task_files`]).
    task_files: std::path::PathBuf,
}

/// How a container is on its cluster networks: its interfaces from `first_interface` on,
/// one per network.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
struct Joined {
    first_interface: usize,
    networks: Vec<NetworkAttachment>,
}

impl Joined {
    /// The container's attachment, in its namespace at `netns`.
    fn at(self, netns: std::path::PathBuf) -> LocalAttachment {
        LocalAttachment {
            netns,
            networks: self.networks,
            first_interface: self.first_interface,
        }
    }
}

/// What a container on cluster networks is made with.
struct OnOverlay {
    joined: Joined,
    /// Its resolver: the name server on its first network's gateway.
    name_server: Ipv4Addr,
}

impl DockerExecutor {
    /// Connects to the engine at `DOCKER_HOST` or the default socket, at the API version it
    /// speaks.
    ///
    /// # Errors
    /// No engine answers.
    pub async fn connect(node_name: &str, data_dir: &Path) -> anyhow::Result<DockerExecutor> {
        let docker = connect().await?;
        Ok(DockerExecutor {
            docker,
            node_name: node_name.to_string(),
            containers: Mutex::new(HashMap::new()),
            last_cpu: Mutex::new(HashMap::new()),
            networks: tokio::sync::Mutex::new(()),
            overlay: Overlay::new(),
            task_files: crate::task_files::root_for(data_dir),
        })
    }

    /// How `task` joins its cluster networks here; `None` when it has none, or when this node
    /// runs no overlay (it then joins bridges of the engine, by name).
    async fn on_overlay(&self, task: &Task) -> Result<Option<OnOverlay>, StartError> {
        if !self.overlay.takes(task).await {
            return Ok(None);
        }
        self.overlay
            .until_known(&task.networks)
            .await
            .map_err(StartError::failed)?;
        let name_server = self
            .overlay
            .name_server(&task.networks)
            .ok_or_else(|| StartError::failed("the task's first network has no gateway"))?;
        Ok(Some(OnOverlay {
            joined: Joined {
                first_interface: usize::from(!engine_ports(task, true).is_empty()),
                networks: task.networks.clone(),
            },
            name_server,
        }))
    }

    /// The running container's namespace, by the PID of its first process.
    async fn netns_of(&self, name: &str) -> Result<std::path::PathBuf, String> {
        let inspected = self
            .docker
            .inspect_container(name, None)
            .await
            .map_err(|e| format!("cannot inspect the container: {}", short_error(&e)))?;
        match inspected.state.and_then(|state| state.pid) {
            Some(pid) if pid > 0 => Ok(format!("/proc/{pid}/ns/net").into()),
            _ => Err("the container ended before it joined its networks".to_string()),
        }
    }

    /// Puts the running container `name` on its cluster networks.
    async fn join(&self, task_id: &str, name: &str, joined: &Joined) -> Result<(), StartError> {
        let netns = self.netns_of(name).await.map_err(StartError::failed)?;
        let attachment = joined.clone().at(netns);
        self.overlay
            .attach(task_id, attachment)
            .await
            .map_err(StartError::failed)
    }

    fn table(&self) -> parking_lot::MutexGuard<'_, HashMap<String, String>> {
        self.containers.lock()
    }

    fn container(&self, task_id: &str) -> Option<String> {
        self.table().get(task_id).cloned()
    }

    fn last_cpu(&self) -> parking_lot::MutexGuard<'_, HashMap<String, ContainerCpuStats>> {
        self.last_cpu.lock()
    }

    /// One container's usage, from one-shot stats (the engine answers at once rather than
    /// after its next collection, a second or two later).
    async fn sample(&self, task_id: String, name: String) -> Option<(String, TaskUsage)> {
        let options = StatsOptionsBuilder::default()
            .stream(false)
            .one_shot(true)
            .build();
        let mut answers = self.docker.stats(&name, Some(options));
        let stats = match tokio::time::timeout(STATS_TIMEOUT, answers.next()).await {
            Ok(Some(Ok(stats))) => stats,
            Ok(Some(Err(e))) => {
                tracing::debug!(task = %task_id, "no stats for the container: {e}");
                return None;
            }
            Ok(None) => return None,
            Err(_) => {
                tracing::debug!(task = %task_id, "no stats within {STATS_TIMEOUT:?}");
                return None;
            }
        };
        let previous = match &stats.cpu_stats {
            Some(cpu) => self.last_cpu().insert(task_id.clone(), cpu.clone()),
            None => None,
        };
        let usage = usage_of(&stats, previous.as_ref(), crate::agent::now())?;
        Some((task_id, usage))
    }

    /// The image, pulled if it is not here and a registry answers.
    /// Pulls `image` unless the engine has it, with the service's registry credentials if it
    /// has any.
    async fn ensure_image(
        &self,
        image: &str,
        auth: Option<&RegistryAuth>,
    ) -> Result<(), StartError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if status_of(&e) == Some(404) => {}
            Err(e) => {
                return Err(StartError::failed(format!(
                    "cannot inspect image {image}: {e}"
                )))
            }
        }
        // Without a tag the engine would pull every tag of the repository.
        let (repository, tag) = split_reference(image);
        let options = CreateImageOptionsBuilder::default()
            .from_image(repository)
            .tag(tag)
            .build();
        let credentials = match auth {
            Some(RegistryAuth::Given(given)) => Some(bollard::auth::DockerCredentials {
                username: (!given.username.is_empty()).then(|| given.username.clone()),
                password: (!given.password.is_empty()).then(|| given.password.clone()),
                serveraddress: Some(given.server_address.clone()),
                identitytoken: (!given.identity_token.is_empty())
                    .then(|| given.identity_token.clone()),
                ..Default::default()
            }),
            // The leader could not open them: pull as anyone, and fail with the registry's
            // reason if it wants credentials.
            _ => None,
        };
        let pull = async {
            let mut progress = self.docker.create_image(Some(options), None, credentials);
            while let Some(step) = progress.next().await {
                step?;
            }
            Ok::<_, DockerError>(())
        };
        let reason = match tokio::time::timeout(PULL_TIMEOUT, pull).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(e)) => short_error(&e),
            Err(_) => format!("the pull took longer than {PULL_TIMEOUT:?}"),
        };
        Err(StartError::rejected(format!(
            "image {image} not found on node {} (pull failed: {reason})",
            self.node_name
        )))
    }

    /// The ID of the bridge network `name`, created (and labelled) if it does not exist. The
    /// engine accepts two networks of one name, which two nodes sharing an engine (or two
    /// agents in a race) can make: then every one of them uses the lowest ID, and the others
    /// are removed.
    async fn ensure_network(&self, name: &str) -> Result<String, StartError> {
        let _one_at_a_time = self.networks.lock().await;
        let mut found = self.networks_named(name).await?;
        if found.is_empty() {
            let request = NetworkCreateRequest {
                name: name.to_string(),
                driver: Some("bridge".to_string()),
                attachable: Some(true),
                labels: Some(HashMap::from([(
                    LABEL_NETWORK.to_string(),
                    name.to_string(),
                )])),
                ..Default::default()
            };
            if let Err(e) = self.docker.create_network(request).await {
                if status_of(&e) != Some(409) {
                    return Err(StartError::failed(format!(
                        "cannot create network {name}: {e}"
                    )));
                }
            }
            found = self.networks_named(name).await?;
        }
        if found.iter().any(|(_, ours)| !ours) {
            return Err(StartError::rejected(format!(
                "network {name} exists on node {} and was not made by essaim",
                self.node_name
            )));
        }
        found.sort();
        let Some((keep, _)) = found.first().cloned() else {
            return Err(StartError::failed(format!(
                "network {name} vanished as it was made"
            )));
        };
        for (duplicate, _) in &found[1..] {
            // In use by a container of the other maker: it goes with its last container.
            let _ = self.docker.remove_network(duplicate).await;
        }
        Ok(keep)
    }

    /// The networks named exactly `name`: their IDs, and whether essaim made them.
    async fn networks_named(&self, name: &str) -> Result<Vec<(String, bool)>, StartError> {
        let filters = HashMap::from([("name".to_string(), vec![name.to_string()])]);
        let options = ListNetworksOptionsBuilder::default()
            .filters(&filters)
            .build();
        let networks = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| StartError::failed(format!("cannot list networks: {e}")))?;
        // The engine's name filter matches parts of names too.
        Ok(networks
            .into_iter()
            .filter(|network| network.name.as_deref() == Some(name))
            .filter_map(|network| {
                let ours = network
                    .labels
                    .as_ref()
                    .is_some_and(|labels| labels.contains_key(LABEL_NETWORK));
                Some((network.id?, ours))
            })
            .collect())
    }

    async fn create_and_start(&self, task: &Task) -> Result<Started, StartError> {
        let spec = &task.spec;
        if let Some(problem) = crate::mounts::missing_bind_source(task, &self.node_name) {
            return Err(StartError::rejected(problem));
        }
        self.ensure_image(&spec.image, spec.registry_auth.as_ref())
            .await?;
        let on_overlay = self.on_overlay(task).await?;
        let bridges = bridges_of(task, on_overlay.is_some());
        let mut network_ids = Vec::new();
        for network in &bridges {
            network_ids.push(self.ensure_network(network).await?);
        }
        let name = container_name(task);
        let mut body = container_body(
            task,
            network_ids.first().map(String::as_str),
            on_overlay.as_ref(),
        );
        let files = crate::task_files::placed(&self.task_files, task);
        if let Some(host) = body.host_config.as_mut().filter(|_| !files.is_empty()) {
            host.mounts
                .get_or_insert_with(Vec::new)
                .extend(files.iter().map(file_mount));
        }
        let options = CreateContainerOptionsBuilder::default().name(&name).build();
        let created = match self
            .docker
            .create_container(Some(options.clone()), body.clone())
            .await
        {
            // A container of this very task, left by an agent that died between create and
            // start: it never ran, so it goes.
            Err(e) if status_of(&e) == Some(409) => {
                self.remove_container(&name).await;
                self.docker.create_container(Some(options), body).await
            }
            other => other,
        };
        if let Err(e) = created {
            return Err(self.create_error(task, e));
        }
        self.table().insert(task.id.clone(), name.clone());
        for network in network_ids.iter().skip(1) {
            let request = NetworkConnectRequest {
                container: name.clone(),
                endpoint_config: Some(alias_on(task)),
            };
            if let Err(e) = self.docker.connect_network(network, request).await {
                self.remove_container(&name).await;
                return Err(StartError::failed(format!(
                    "cannot attach to network {network}: {e}"
                )));
            }
        }
        if let Err(e) = self.docker.start_container(&name, None).await {
            self.remove_container(&name).await;
            return Err(self.start_error(task, e));
        }
        let started = async {
            // The program runs a moment before its interfaces are there, as under CNI.
            if let Some(on) = &on_overlay {
                self.join(&task.id, &name, &on.joined).await?;
            }
            self.until_healthy(&name).await?;
            let inspected = self
                .docker
                .inspect_container(&name, None)
                .await
                .map_err(|e| StartError::failed(format!("cannot inspect the container: {e}")))?;
            let address = match &on_overlay {
                Some(on) => on.joined.networks.first().map(|n| n.address.to_string()),
                None => address_of(&inspected, &bridges[0]),
            };
            Ok(Started {
                ports: published_ports(&inspected),
                address,
            })
        };
        let started = started.await;
        if started.is_err() {
            // A task that failed to start leaves nothing running (nor holding its ports,
            // nor its addresses).
            self.kill(&name).await;
            self.overlay.detach(&task.id).await;
        }
        started
    }

    fn create_error(&self, task: &Task, e: DockerError) -> StartError {
        let message = short_error(&e);
        if status_of(&e) == Some(400) {
            // The engine refused the spec itself (a memory limit below its minimum, say):
            // this node can never run it.
            return StartError::rejected(format!(
                "node {} cannot run image {}: {message}",
                self.node_name, task.spec.image
            ));
        }
        StartError::failed(format!("cannot create the container: {message}"))
    }

    fn start_error(&self, task: &Task, e: DockerError) -> StartError {
        let message = short_error(&e);
        if message.contains("port is already allocated")
            || message.contains("address already in use")
        {
            let ports: Vec<String> = task
                .ports
                .iter()
                .filter(|p| p.published != 0)
                .map(|p| p.published.to_string())
                .collect();
            return StartError::failed(format!(
                "port {} already taken on node {}: {message}",
                ports.join(", "),
                self.node_name
            ));
        }
        StartError::failed(format!("cannot start the container: {message}"))
    }

    /// Returns once the container is healthy, at once when it has no health check. A
    /// container that ends or turns unhealthy first fails the start (and is stopped).
    async fn until_healthy(&self, name: &str) -> Result<(), StartError> {
        loop {
            let inspected = self
                .docker
                .inspect_container(name, None)
                .await
                .map_err(|e| StartError::failed(format!("cannot inspect the container: {e}")))?;
            let state = inspected.state.clone().unwrap_or_default();
            if state.running != Some(true) {
                // It ran, and ended already (a short job): `wait` says how.
                return Ok(());
            }
            match health_of(&inspected) {
                None | Some(HealthStatusEnum::HEALTHY) => return Ok(()),
                Some(HealthStatusEnum::UNHEALTHY) => {
                    let message = unhealthy_message(&inspected);
                    self.kill(name).await;
                    return Err(StartError::failed(message));
                }
                Some(_) => tokio::time::sleep(HEALTH_POLL).await,
            }
        }
    }

    /// Resolves when the container exits, or turns unhealthy (then it is killed first).
    async fn until_ended(&self, name: &str) -> Exit {
        let exited = async {
            loop {
                let mut wait = self
                    .docker
                    .wait_container(name, None::<WaitContainerOptions>);
                // bollard reports a non-zero exit as an error; either way the container is
                // done, and inspect says how. An engine that does not answer says nothing
                // about the container: wait for it to come back (meanwhile the node reports
                // its runtime unavailable, and the leader moves its tasks).
                match wait.next().await {
                    Some(Err(e)) if is_unreachable(&e) => {
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                    _ => return,
                }
            }
        };
        let unhealthy = async {
            // Looked at as often as the check runs, not more: a node may run many tasks.
            let mut every = HEALTH_POLL;
            loop {
                tokio::time::sleep(every).await;
                match self.docker.inspect_container(name, None).await {
                    Ok(inspected) if health_of(&inspected) == Some(HealthStatusEnum::UNHEALTHY) => {
                        return unhealthy_message(&inspected);
                    }
                    // No health check: nothing to watch here.
                    Ok(inspected) if health_of(&inspected).is_none() => {
                        futures::future::pending::<()>().await;
                    }
                    Ok(inspected) => every = check_interval(&inspected).max(HEALTH_POLL),
                    Err(_) => {}
                }
            }
        };
        tokio::select! {
            () = exited => match self.docker.inspect_container(name, None).await {
                Ok(inspected) => exit_of(&inspected),
                Err(e) => Exit { code: -1, message: format!("the container is gone: {}", short_error(&e)) },
            },
            message = unhealthy => {
                self.kill(name).await;
                Exit { code: 1, message }
            }
        }
    }

    async fn kill(&self, name: &str) {
        let options = StopContainerOptionsBuilder::default().t(0).build();
        let _ = self.docker.stop_container(name, Some(options)).await;
    }

    /// Removes the container and the networks of ours it leaves empty.
    async fn remove_container(&self, name: &str) {
        let networks: Vec<String> = match self.docker.inspect_container(name, None).await {
            Ok(inspected) => inspected
                .network_settings
                .and_then(|settings| settings.networks)
                .map(|networks| {
                    networks
                        .into_values()
                        .filter_map(|endpoint| endpoint.network_id)
                        .collect()
                })
                .unwrap_or_default(),
            Err(_) => Vec::new(),
        };
        let options = RemoveContainerOptionsBuilder::default()
            .force(true)
            .v(true)
            .build();
        if let Err(e) = self.docker.remove_container(name, Some(options)).await {
            if status_of(&e) != Some(404) {
                tracing::warn!(container = name, "cannot remove the container: {e}");
            }
        }
        for network in networks {
            self.remove_network_if_unused(&network).await;
        }
    }

    /// `network` is an ID, or a name that only one network has.
    async fn remove_network_if_unused(&self, name: &str) {
        let Ok(network) = self.docker.inspect_network(name, None).await else {
            return;
        };
        let ours = network
            .labels
            .as_ref()
            .is_some_and(|labels| labels.contains_key(LABEL_NETWORK));
        let empty = network.containers.as_ref().is_none_or(HashMap::is_empty);
        if ours && empty {
            // Another task may join it between the look and the removal: the engine then
            // refuses, and the network stays, as it should.
            let _ = self.docker.remove_network(name).await;
        }
    }
}

impl Executor for DockerExecutor {
    fn name(&self) -> &'static str {
        "docker"
    }

    fn start<'a>(&'a self, task: &'a Task) -> ExecFuture<'a, Result<Started, StartError>> {
        Box::pin(self.create_and_start(task))
    }

    fn wait<'a>(&'a self, task_id: &'a str) -> ExecFuture<'a, Exit> {
        Box::pin(async move {
            let exit = match self.container(task_id) {
                Some(name) => self.until_ended(&name).await,
                None => Exit {
                    code: -1,
                    message: "no such container".to_string(),
                },
            };
            // Off its networks before anyone hears of the exit.
            self.overlay.detach(task_id).await;
            exit
        })
    }

    fn stop<'a>(&'a self, task_id: &'a str, grace: Duration) -> ExecFuture<'a, ()> {
        Box::pin(async move {
            let Some(name) = self.container(task_id) else {
                return;
            };
            let seconds = i32::try_from(grace.as_secs_f64().ceil() as u64).unwrap_or(i32::MAX);
            let options = StopContainerOptionsBuilder::default().t(seconds).build();
            match self.docker.stop_container(&name, Some(options)).await {
                Ok(()) => {}
                // 304: already stopped; 404: already gone.
                Err(e) if matches!(status_of(&e), Some(304 | 404)) => {}
                Err(e) => tracing::warn!(task = task_id, "cannot stop the container: {e}"),
            }
            self.overlay.detach(task_id).await;
        })
    }

    fn remove<'a>(&'a self, task_id: &'a str) -> ExecFuture<'a, ()> {
        Box::pin(async move {
            let name = self.table().remove(task_id);
            self.last_cpu().remove(task_id);
            self.overlay.detach(task_id).await;
            if let Some(name) = name {
                self.remove_container(&name).await;
            }
        })
    }

    fn logs(&self, task_id: &str, tail: usize, follow: bool) -> Option<LogStream> {
        let name = self.container(task_id)?;
        let tail = if tail == 0 {
            "all".to_string()
        } else {
            tail.to_string()
        };
        let options = LogsOptionsBuilder::default()
            .follow(follow)
            .stdout(true)
            .stderr(true)
            .tail(&tail)
            .build();
        let chunks = self.docker.logs(&name, Some(options));
        let lines = chunks
            .take_while(|chunk| futures::future::ready(chunk.is_ok()))
            .filter_map(|chunk| async move { chunk.ok() })
            .flat_map(|chunk| {
                let text = String::from_utf8_lossy(&chunk.into_bytes()).into_owned();
                let lines: Vec<String> = text.lines().map(str::to_string).collect();
                futures::stream::iter(lines)
            });
        Some(lines.boxed())
    }

    fn usage<'a>(&'a self, task_ids: &'a [String]) -> ExecFuture<'a, HashMap<String, TaskUsage>> {
        Box::pin(async move {
            let named: Vec<(String, String)> = {
                let containers = self.table();
                task_ids
                    .iter()
                    .filter_map(|id| Some((id.clone(), containers.get(id)?.clone())))
                    .collect()
            };
            futures::stream::iter(named)
                .map(|(task_id, name)| self.sample(task_id, name))
                .buffer_unordered(STATS_AT_ONCE)
                .filter_map(futures::future::ready)
                .collect()
                .await
        })
    }

    fn network_map(&self, map: NetworkMap) {
        self.overlay.set_map(map);
    }

    fn leave_networks(&self) -> ExecFuture<'_, ()> {
        Box::pin(self.overlay.leave())
    }

    fn check(&self) -> ExecFuture<'_, Result<(), String>> {
        Box::pin(async {
            match tokio::time::timeout(ENGINE_CHECK_TIMEOUT, self.docker.ping()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("the Docker engine does not answer: {e}")),
                Err(_) => Err(format!(
                    "the Docker engine did not answer within {ENGINE_CHECK_TIMEOUT:?}"
                )),
            }
        })
    }

    fn adopt<'a>(&'a self, node_id: &'a str) -> ExecFuture<'a, Vec<String>> {
        Box::pin(async move {
            let filters =
                HashMap::from([("label".to_string(), vec![format!("{LABEL_NODE}={node_id}")])]);
            let options = ListContainersOptionsBuilder::default()
                .all(true)
                .filters(&filters)
                .build();
            let containers = match self.docker.list_containers(Some(options)).await {
                Ok(containers) => containers,
                Err(e) => {
                    tracing::warn!("cannot list this node's containers: {e}");
                    return Vec::new();
                }
            };
            let mut adopted = Vec::new();
            for container in containers {
                let Some(task_id) = container
                    .labels
                    .as_ref()
                    .and_then(|labels| labels.get(LABEL_TASK))
                    .cloned()
                else {
                    continue;
                };
                let Some(name) = container
                    .names
                    .as_ref()
                    .and_then(|names| names.first())
                    .map(|name| name.trim_start_matches('/').to_string())
                else {
                    continue;
                };
                let running = container
                    .state
                    .as_ref()
                    .is_some_and(|state| state.to_string() == "running");
                if running {
                    let joined = container
                        .labels
                        .as_ref()
                        .and_then(|labels| labels.get(LABEL_JOINED))
                        .and_then(|json| serde_json::from_str::<Joined>(json).ok());
                    if let Some(joined) = joined {
                        match self.netns_of(&name).await {
                            Ok(netns) => self.overlay.adopt(&task_id, joined.at(netns)).await,
                            Err(error) => tracing::warn!(task = %task_id, "{error}"),
                        }
                    }
                    self.table().insert(task_id.clone(), name);
                    adopted.push(task_id);
                } else {
                    // It ended while nobody watched; the managers hear of its task from the
                    // next full set, as of any task this node does not run.
                    self.remove_container(&name).await;
                }
            }
            adopted
        })
    }
}

/// A container's usage from its stats, as `docker stats` computes it. CPU use is measured
/// against the earlier counters the engine sent along (`precpu_stats`, when it collected
/// twice), else against `previous`, the counters of this task's previous sample; `None`
/// without either, or for stats of a container that no longer runs.
fn usage_of(
    stats: &ContainerStatsResponse,
    previous: Option<&ContainerCpuStats>,
    sampled_at: Timestamp,
) -> Option<TaskUsage> {
    let now = stats.cpu_stats.as_ref()?;
    let before = stats
        .precpu_stats
        .as_ref()
        .filter(|pre| pre.system_cpu_usage.is_some_and(|total| total > 0))
        .or(previous)?;
    Some(TaskUsage {
        cpu_millicores: cpu_millicores(now, before)?,
        memory_bytes: memory_bytes(stats.memory_stats.as_ref()?)?,
        sampled_at,
    })
}

/// The container's share of the machine's CPU time between two readings, times the CPUs
/// online, in thousandths of a core.
fn cpu_millicores(now: &ContainerCpuStats, before: &ContainerCpuStats) -> Option<u64> {
    let total = |stats: &ContainerCpuStats| stats.cpu_usage.as_ref()?.total_usage;
    // A counter that went back (the container restarted) gives no figure.
    let used = total(now)?.checked_sub(total(before).unwrap_or(0))?;
    let elapsed = now
        .system_cpu_usage?
        .checked_sub(before.system_cpu_usage?)
        .filter(|elapsed| *elapsed > 0)?;
    let cpus = match now.online_cpus {
        Some(cpus) if cpus > 0 => u64::from(cpus),
        // Engines before API 1.27 only list the CPUs.
        _ => now.cpu_usage.as_ref()?.percpu_usage.as_ref()?.len() as u64,
    };
    let millicores = u128::from(used) * u128::from(cpus) * 1_000 / u128::from(elapsed);
    u64::try_from(millicores).ok()
}

/// Memory in use, as `docker stats` counts it: the usage less the page cache the kernel can
/// take back at once (`total_inactive_file` under cgroup v1, `inactive_file` under v2).
fn memory_bytes(memory: &ContainerMemoryStats) -> Option<u64> {
    let usage = memory.usage?;
    let inactive = memory
        .stats
        .as_ref()
        .and_then(|stats| {
            stats
                .get("total_inactive_file")
                .or_else(|| stats.get("inactive_file"))
        })
        .copied()
        .unwrap_or(0);
    Some(usage.saturating_sub(inactive))
}

/// A client of the engine at `DOCKER_HOST` or the default socket, once it has answered.
///
/// # Errors
/// No engine answers within a few seconds.
pub async fn connect() -> anyhow::Result<Docker> {
    let docker = Docker::connect_with_defaults()
        .map_err(|e| anyhow::anyhow!("cannot reach the Docker engine: {e}"))?;
    let answered = tokio::time::timeout(Duration::from_secs(5), async {
        docker.ping().await?;
        docker.negotiate_version().await
    })
    .await;
    match answered {
        Ok(Ok(docker)) => Ok(docker),
        Ok(Err(e)) => Err(anyhow::anyhow!("the Docker engine does not answer: {e}")),
        Err(_) => Err(anyhow::anyhow!(
            "the Docker engine did not answer within 5 s"
        )),
    }
}

/// `web.1.<task id>` (or `web.<node id>.<task id>` for a global service), as Swarm names them.
fn container_name(task: &Task) -> String {
    let place = match (task.slot, &task.node_id) {
        (Some(slot), _) => slot.to_string(),
        (None, Some(node)) => node.clone(),
        (None, None) => "task".to_string(),
    };
    format!("{}.{place}.{}", task.service_name, task.id)
}

/// `repo[:tag]` (or `repo@digest`) as the pull endpoint takes it: the tag `latest` when none
/// is given. A colon before the last `/` belongs to a registry's port, not a tag.
fn split_reference(image: &str) -> (&str, &str) {
    if let Some((repository, digest)) = image.split_once('@') {
        return (repository, digest);
    }
    let name_start = image.rfind('/').map_or(0, |slash| slash + 1);
    match image[name_start..].rfind(':') {
        Some(colon) => (
            &image[..name_start + colon],
            &image[name_start + colon + 1..],
        ),
        None => (image, "latest"),
    }
}

/// The engine's networks a task joins. On cluster networks: its service's own bridge when the
/// engine publishes ports for it, else none. Without an overlay: its service's user
/// networks, or the service's own, each a bridge on this node's engine, by name.
fn bridges_of(task: &Task, on_overlay: bool) -> Vec<String> {
    if !on_overlay {
        networks_of(task)
    } else if engine_ports(task, true).is_empty() {
        Vec::new()
    } else {
        vec![format!("{}_default", task.service_name)]
    }
}

/// The ports the engine publishes on this node for the task. On cluster networks the routing
/// mesh opens the ingress ones on every node (see `mesh`): the engine publishes the host
/// ones only. Without an overlay there is no mesh, and the engine publishes them all.
fn engine_ports(task: &Task, on_overlay: bool) -> Vec<PortConfig> {
    task.ports
        .iter()
        .filter(|p| !on_overlay || p.mode == PublishMode::Host)
        .copied()
        .collect()
}

fn networks_of(task: &Task) -> Vec<String> {
    if task.spec.networks.is_empty() {
        vec![format!("{}_default", task.service_name)]
    } else {
        task.spec
            .networks
            .iter()
            .map(|n| n.target.clone())
            .collect()
    }
}

fn alias_on(task: &Task) -> EndpointSettings {
    EndpointSettings {
        aliases: Some(vec![task.service_name.clone()]),
        ..Default::default()
    }
}

/// The container's spec. `first_bridge` is the ID (or name) of the engine's network it starts
/// on, if any (network mode `none` otherwise); `on_overlay` says how it joins cluster networks.
fn container_body(
    task: &Task,
    first_bridge: Option<&str>,
    on_overlay: Option<&OnOverlay>,
) -> ContainerCreateBody {
    let spec = &task.spec;
    let mut env: Vec<String> = spec.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    env.push(format!("ESSAIM_TASK_ID={}", task.id));
    env.push(format!("ESSAIM_SERVICE_ID={}", task.service_id));
    env.push(format!("ESSAIM_SERVICE_NAME={}", task.service_name));
    let mut labels = HashMap::from([
        (LABEL_TASK.to_string(), task.id.clone()),
        (LABEL_SERVICE_ID.to_string(), task.service_id.clone()),
        (LABEL_SERVICE_NAME.to_string(), task.service_name.clone()),
    ]);
    if let Some(slot) = task.slot {
        env.push(format!("ESSAIM_TASK_SLOT={slot}"));
        labels.insert(LABEL_SLOT.to_string(), slot.to_string());
    }
    if let Some(node) = &task.node_id {
        labels.insert(LABEL_NODE.to_string(), node.clone());
    }
    if let Some(on) = on_overlay {
        let joined = serde_json::to_string(&on.joined).unwrap_or_default();
        labels.insert(LABEL_JOINED.to_string(), joined);
    }
    let port_key = |port: &PortConfig| format!("{}/{}", port.target, port.protocol);
    let ports = engine_ports(task, on_overlay.is_some());
    let port_bindings: HashMap<String, Option<Vec<PortBinding>>> = ports
        .iter()
        .map(|port| {
            let host_port = match port.published {
                0 => String::new(),
                published => published.to_string(),
            };
            (
                port_key(port),
                Some(vec![PortBinding {
                    host_ip: None,
                    host_port: Some(host_port),
                }]),
            )
        })
        .collect();
    let limit = |value: u64| (value > 0).then(|| i64::try_from(value).unwrap_or(i64::MAX));
    let options = &spec.container;
    // The container's own labels never hide essaim's, which find the task again.
    for (key, value) in &options.labels {
        labels.entry(key.clone()).or_insert_with(|| value.clone());
    }
    let text = |value: &str| (!value.is_empty()).then(|| value.to_string());
    let list = |values: &[String]| (!values.is_empty()).then(|| values.to_vec());
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        entrypoint: list(&options.entrypoint),
        cmd: (!spec.args.is_empty()).then(|| spec.args.clone()),
        env: Some(env),
        labels: Some(labels),
        user: text(&options.user),
        working_dir: text(&options.workdir),
        hostname: text(&options.hostname),
        stop_signal: text(&options.stop_signal),
        tty: options.tty.then_some(true),
        exposed_ports: Some(ports.iter().map(port_key).collect()),
        healthcheck: spec.healthcheck.as_ref().map(health_config),
        stop_timeout: Some(i64::try_from(spec.stop_grace_period_ms / 1000).unwrap_or(i64::MAX)),
        host_config: Some(HostConfig {
            memory: limit(spec.resources.limit_memory_bytes),
            nano_cpus: limit(spec.resources.limit_nano_cpus),
            port_bindings: Some(port_bindings),
            network_mode: Some(first_bridge.unwrap_or("none").to_string()),
            dns: name_servers(options, on_overlay),
            dns_search: list(&options.dns_search),
            dns_options: dns_options(options, on_overlay),
            extra_hosts: (!options.hosts.is_empty())
                .then(|| options.hosts.iter().map(ToString::to_string).collect()),
            group_add: list(&options.groups),
            init: options.init.then_some(true),
            readonly_rootfs: options.read_only.then_some(true),
            cap_add: list(&options.cap_add),
            cap_drop: list(&options.cap_drop),
            mounts: (!spec.mounts.is_empty())
                .then(|| spec.mounts.iter().map(engine_mount).collect()),
            pids_limit: limit(spec.resources.limit_pids),
            ulimits: (!options.ulimits.is_empty()).then(|| {
                options
                    .ulimits
                    .iter()
                    .map(|u| ResourcesUlimits {
                        name: Some(u.name.clone()),
                        soft: Some(u.soft),
                        hard: Some(u.hard),
                    })
                    .collect()
            }),
            sysctls: (!options.sysctls.is_empty())
                .then(|| options.sysctls.clone().into_iter().collect()),
            log_config: (!options.log_driver.is_empty()).then(|| HostConfigLogConfig {
                typ: Some(options.log_driver.clone()),
                config: Some(options.log_options.clone().into_iter().collect()),
            }),
            ..Default::default()
        }),
        // Docker's own name for the service only where Docker's DNS answers for it.
        networking_config: first_bridge.map(|bridge| {
            let endpoint = match on_overlay {
                Some(_) => EndpointSettings::default(),
                None => alias_on(task),
            };
            NetworkingConfig {
                endpoints_config: Some(HashMap::from([(bridge.to_string(), endpoint)])),
            }
        }),
        ..Default::default()
    }
}

/// A mount as the engine takes it. A named volume the node does not have yet is made by the
/// engine at create, with its labels and essaim's; it outlives the container, as in Swarm.
fn engine_mount(mount: &Mount) -> bollard::models::Mount {
    let (typ, volume_options, tmpfs_options) = match mount.kind {
        MountKind::Bind => (MountType::BIND, None, None),
        MountKind::Volume => {
            let mut labels: HashMap<String, String> = mount
                .volume_labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.insert(LABEL_VOLUME.to_string(), "true".to_string());
            let options = MountVolumeOptions {
                labels: Some(labels),
                ..Default::default()
            };
            (MountType::VOLUME, Some(options), None)
        }
        MountKind::Tmpfs => {
            let options = MountTmpfsOptions {
                size_bytes: (mount.tmpfs_size > 0)
                    .then(|| i64::try_from(mount.tmpfs_size).unwrap_or(i64::MAX)),
                ..Default::default()
            };
            (MountType::TMPFS, None, Some(options))
        }
    };
    bollard::models::Mount {
        target: Some(mount.target.clone()),
        source: (!mount.source.is_empty()).then(|| mount.source.clone()),
        typ: Some(typ),
        read_only: mount.read_only.then_some(true),
        volume_options,
        tmpfs_options,
        ..Default::default()
    }
}

/// A secret or config, written by the agent in memory, bound read-only at its path.
fn file_mount(file: &crate::task_files::PlacedFile) -> bollard::models::Mount {
    bollard::models::Mount {
        target: Some(file.path_in_task.clone()),
        source: Some(file.host_path.display().to_string()),
        typ: Some(MountType::BIND),
        read_only: Some(true),
        ..Default::default()
    }
}

/// On a cluster network, the network's name server comes first: it answers for the services
/// and relays the other names to the node's resolver; `--dns` servers follow it, for when it
/// cannot answer. Off the cluster networks, `--dns` alone.
fn name_servers(options: &ContainerOptions, on_overlay: Option<&OnOverlay>) -> Option<Vec<String>> {
    let mut servers: Vec<String> = on_overlay
        .map(|on| on.name_server.to_string())
        .into_iter()
        .collect();
    servers.extend(options.dns.iter().map(ToString::to_string));
    (!servers.is_empty()).then_some(servers)
}

/// `--dns-option`; on a cluster network `ndots:0` unless the user set ndots, so that names are
/// looked up as given first: `web` is a service, not a search domain's.
fn dns_options(options: &ContainerOptions, on_overlay: Option<&OnOverlay>) -> Option<Vec<String>> {
    let mut all = options.dns_options.clone();
    if on_overlay.is_some() && !all.iter().any(|o| o.starts_with("ndots:")) {
        all.push("ndots:0".to_string());
    }
    (!all.is_empty()).then_some(all)
}

fn health_config(check: &HealthCheck) -> HealthConfig {
    let nanos = |ms: u64| (ms > 0).then(|| i64::try_from(ms * 1_000_000).unwrap_or(i64::MAX));
    HealthConfig {
        test: (!check.test.is_empty()).then(|| check.test.clone()),
        interval: nanos(check.interval_ms),
        timeout: nanos(check.timeout_ms),
        start_period: nanos(check.start_period_ms),
        start_interval: nanos(check.start_interval_ms),
        retries: (check.retries > 0).then(|| i64::try_from(check.retries).unwrap_or(i64::MAX)),
    }
}

fn health_of(inspected: &ContainerInspectResponse) -> Option<HealthStatusEnum> {
    let status = inspected.state.as_ref()?.health.as_ref()?.status?;
    match status {
        HealthStatusEnum::EMPTY | HealthStatusEnum::NONE => None,
        other => Some(other),
    }
}

/// How often the container's health check runs (Docker's default, 30 s, when not set).
fn check_interval(inspected: &ContainerInspectResponse) -> Duration {
    inspected
        .config
        .as_ref()
        .and_then(|config| config.healthcheck.as_ref())
        .and_then(|check| check.interval)
        .and_then(|nanos| u64::try_from(nanos).ok())
        .filter(|nanos| *nanos > 0)
        .map_or(Duration::from_secs(30), Duration::from_nanos)
}

fn unhealthy_message(inspected: &ContainerInspectResponse) -> String {
    let last = inspected
        .state
        .as_ref()
        .and_then(|state| state.health.as_ref())
        .and_then(|health| health.log.as_ref())
        .and_then(|log| log.last())
        .and_then(|check| check.output.clone())
        .map(|output| output.trim().to_string())
        .filter(|output| !output.is_empty());
    match last {
        Some(output) => format!("unhealthy: {output}"),
        None => "unhealthy: the health check failed".to_string(),
    }
}

fn exit_of(inspected: &ContainerInspectResponse) -> Exit {
    let state = inspected.state.clone().unwrap_or_default();
    let code = state
        .exit_code
        .and_then(|code| i32::try_from(code).ok())
        .unwrap_or(-1);
    let message = if state.oom_killed == Some(true) {
        format!("killed: out of memory (OOM), exit code {code}")
    } else if let Some(error) = state.error.filter(|e| !e.is_empty()) {
        format!("exited with code {code}: {error}")
    } else {
        format!("exited with code {code}")
    };
    Exit { code, message }
}

/// The node ports the engine published the target ports on.
fn published_ports(inspected: &ContainerInspectResponse) -> Vec<PortConfig> {
    let Some(ports) = inspected
        .network_settings
        .as_ref()
        .and_then(|settings| settings.ports.as_ref())
    else {
        return Vec::new();
    };
    let mut published: Vec<PortConfig> = ports
        .iter()
        .filter_map(|(key, bindings)| {
            let (target, protocol) = key.split_once('/').unwrap_or((key, "tcp"));
            let target = target.parse().ok()?;
            let protocol = protocol.parse().ok()?;
            let host_port = bindings
                .as_ref()?
                .first()?
                .host_port
                .as_ref()?
                .parse()
                .ok()?;
            // The engine's binding is this node's own port, whatever the service asked.
            Some(PortConfig {
                protocol,
                mode: PublishMode::Host,
                ..PortConfig::tcp(host_port, target)
            })
        })
        .collect();
    published.sort_by_key(|port| port.target);
    published
}

fn address_of(inspected: &ContainerInspectResponse, network: &str) -> Option<String> {
    inspected
        .network_settings
        .as_ref()?
        .networks
        .as_ref()?
        .get(network)?
        .ip_address
        .clone()
        .filter(|ip| !ip.is_empty())
}

/// True when the engine could not be reached at all, as opposed to an answer saying no.
fn is_unreachable(error: &DockerError) -> bool {
    !matches!(
        error,
        DockerError::DockerResponseServerError { .. }
            | DockerError::DockerContainerWaitError { .. }
    )
}

fn status_of(error: &DockerError) -> Option<u16> {
    match error {
        DockerError::DockerResponseServerError { status_code, .. } => Some(*status_code),
        _ => None,
    }
}

/// The engine's own message, without bollard's wrapping.
fn short_error(error: &DockerError) -> String {
    match error {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use essaim_core::model::{TaskSpec, TaskStatus};
    use essaim_core::Timestamp;

    fn task() -> Task {
        Task {
            id: "t1".to_string(),
            version: 1,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            service_id: "s1".to_string(),
            service_name: "web".to_string(),
            slot: Some(2),
            node_id: Some("n1".to_string()),
            spec: TaskSpec {
                image: "app:1".to_string(),
                args: vec!["serve".to_string()],
                stop_grace_period_ms: 10_000,
                healthcheck: Some(HealthCheck {
                    test: vec!["CMD-SHELL".to_string(), "true".to_string()],
                    interval_ms: 500,
                    ..Default::default()
                }),
                ..Default::default()
            },
            ports: vec![PortConfig::tcp(8080, 80)],
            networks: Vec::new(),
            service_version: 1,
            desired_state: essaim_core::model::TaskState::Running,
            status: TaskStatus::new(essaim_core::model::TaskState::Assigned, Timestamp(0), ""),
        }
    }

    #[test]
    fn containers_are_named_and_labelled_as_swarm_names_them() {
        let task = task();
        assert_eq!(container_name(&task), "web.2.t1");
        let body = container_body(&task, Some("web_default"), None);
        let labels = body.labels.expect("labels");
        assert_eq!(labels[LABEL_TASK], "t1");
        assert_eq!(labels[LABEL_SERVICE_NAME], "web");
        assert_eq!(labels[LABEL_SLOT], "2");
        assert_eq!(labels[LABEL_NODE], "n1");
        assert_eq!(body.cmd, Some(vec!["serve".to_string()]));
        assert_eq!(body.stop_timeout, Some(10));
        let bindings = body
            .host_config
            .and_then(|h| h.port_bindings)
            .expect("bindings");
        assert_eq!(
            bindings["80/tcp"].as_ref().expect("binding")[0].host_port,
            Some("8080".to_string())
        );
        let health = body.healthcheck.expect("health check");
        assert_eq!(health.interval, Some(500_000_000));
        assert_eq!(health.retries, None, "0 keeps Docker's default");
    }

    #[test]
    fn container_options_become_the_engine_s_fields() {
        let mut task = task();
        task.spec.container = ContainerOptions {
            entrypoint: vec!["/bin/app".to_string(), "--verbose".to_string()],
            user: "1000:1000".to_string(),
            groups: vec!["audio".to_string()],
            workdir: "/srv".to_string(),
            hostname: "web-2".to_string(),
            dns: vec!["10.9.9.9".parse().expect("ip")],
            dns_search: vec!["example.org".to_string()],
            dns_options: vec!["ndots:2".to_string()],
            hosts: vec!["db.local:10.0.0.9".parse().expect("mapping")],
            labels: std::collections::BTreeMap::from([
                ("team".to_string(), "shop".to_string()),
                (LABEL_TASK.to_string(), "not-this-one".to_string()),
            ]),
            stop_signal: "SIGQUIT".to_string(),
            init: true,
            read_only: true,
            tty: true,
            cap_add: vec!["NET_ADMIN".to_string()],
            cap_drop: vec!["ALL".to_string()],
            ulimits: vec!["nofile=1024:2048".parse().expect("ulimit")],
            sysctls: std::collections::BTreeMap::from([(
                "net.core.somaxconn".to_string(),
                "1024".to_string(),
            )]),
            log_driver: "json-file".to_string(),
            log_options: std::collections::BTreeMap::from([(
                "max-size".to_string(),
                "10m".to_string(),
            )]),
        };
        task.spec.resources.limit_pids = 100;
        let body = container_body(&task, Some("web_default"), None);
        assert_eq!(
            body.entrypoint,
            Some(vec!["/bin/app".to_string(), "--verbose".to_string()])
        );
        assert_eq!(
            body.cmd,
            Some(vec!["serve".to_string()]),
            "the arguments follow"
        );
        assert_eq!(body.user.as_deref(), Some("1000:1000"));
        assert_eq!(body.working_dir.as_deref(), Some("/srv"));
        assert_eq!(body.hostname.as_deref(), Some("web-2"));
        assert_eq!(body.stop_signal.as_deref(), Some("SIGQUIT"));
        assert_eq!(body.tty, Some(true));
        let labels = body.labels.expect("labels");
        assert_eq!(labels["team"], "shop");
        assert_eq!(labels[LABEL_TASK], "t1", "essaim's labels win");
        let host = body.host_config.expect("host config");
        assert_eq!(host.dns, Some(vec!["10.9.9.9".to_string()]));
        assert_eq!(host.dns_search, Some(vec!["example.org".to_string()]));
        assert_eq!(host.dns_options, Some(vec!["ndots:2".to_string()]));
        assert_eq!(
            host.extra_hosts,
            Some(vec!["db.local:10.0.0.9".to_string()])
        );
        assert_eq!(host.group_add, Some(vec!["audio".to_string()]));
        assert_eq!(host.init, Some(true));
        assert_eq!(host.readonly_rootfs, Some(true));
        assert_eq!(host.cap_add, Some(vec!["NET_ADMIN".to_string()]));
        assert_eq!(host.cap_drop, Some(vec!["ALL".to_string()]));
        assert_eq!(host.pids_limit, Some(100));
        let ulimit = &host.ulimits.as_ref().expect("ulimits")[0];
        assert_eq!((ulimit.soft, ulimit.hard), (Some(1024), Some(2048)));
        assert_eq!(host.sysctls.expect("sysctls")["net.core.somaxconn"], "1024");
        let log = host.log_config.expect("log config");
        assert_eq!(log.typ.as_deref(), Some("json-file"));
        assert_eq!(log.config.expect("options")["max-size"], "10m");

        // None of them set: the image's own, and nothing sent.
        let plain = container_body(&self::task(), Some("web_default"), None);
        assert_eq!(plain.entrypoint, None);
        assert_eq!(plain.user, None);
        assert_eq!(plain.stop_signal, None);
        let host = plain.host_config.expect("host config");
        assert_eq!((host.dns, host.dns_options, host.init), (None, None, None));
    }

    #[test]
    fn mounts_become_the_engine_s_with_volumes_labelled_as_essaim_s() {
        let mut task = task();
        task.spec.mounts = [
            "source=data,target=/db,volume-label=team=shop",
            "type=tmpfs,target=/cache,tmpfs-size=1M",
            "type=bind,source=/srv,target=/www,ro",
        ]
        .iter()
        .map(|text| text.parse().expect("mount"))
        .collect();
        let mounts = container_body(&task, None, None)
            .host_config
            .and_then(|h| h.mounts)
            .expect("mounts");
        let volume = &mounts[0];
        assert_eq!(volume.typ, Some(MountType::VOLUME));
        assert_eq!(volume.source.as_deref(), Some("data"));
        let labels = volume
            .volume_options
            .as_ref()
            .and_then(|o| o.labels.clone())
            .expect("labels");
        assert_eq!(labels["team"], "shop");
        assert_eq!(labels[LABEL_VOLUME], "true");
        assert_eq!(
            mounts[1].tmpfs_options.as_ref().and_then(|o| o.size_bytes),
            Some(1 << 20)
        );
        assert_eq!(mounts[1].source, None);
        assert_eq!(
            (mounts[2].typ, mounts[2].read_only),
            (Some(MountType::BIND), Some(true))
        );
    }

    #[test]
    fn images_are_pulled_by_one_tag_latest_when_none_is_given() {
        assert_eq!(split_reference("nginx"), ("nginx", "latest"));
        assert_eq!(split_reference("nginx:1.25"), ("nginx", "1.25"));
        assert_eq!(
            split_reference("registry:5000/team/app"),
            ("registry:5000/team/app", "latest")
        );
        assert_eq!(
            split_reference("registry:5000/team/app:v2"),
            ("registry:5000/team/app", "v2")
        );
        assert_eq!(split_reference("app@sha256:abc"), ("app", "sha256:abc"));
    }

    /// The stats of a container running a busy loop, as a Docker 20.10 engine under cgroup v1
    /// gave them without one-shot: two collections, a second apart.
    const STATS: &str = include_str!("../tests/fixtures/docker-stats-busy.json");

    #[test]
    fn docker_stats_give_millicores_and_memory_less_inactive_cache() {
        let stats: ContainerStatsResponse = serde_json::from_str(STATS).expect("stats");
        let usage = usage_of(&stats, None, Timestamp(7)).expect("usage");
        // 978 ms of CPU time while the 2 CPUs had 2.01 s: one core, nearly fully busy.
        assert_eq!(usage.cpu_millicores, 973);
        // 2,248,704 bytes in use, of which 1,605,632 inactive page cache.
        assert_eq!(usage.memory_bytes, 643_072);
        assert_eq!(usage.sampled_at, Timestamp(7));

        // One-shot stats carry no earlier counters: the previous sample's serve instead.
        let mut one_shot = stats.clone();
        let previous = one_shot.precpu_stats.take();
        one_shot.precpu_stats = Some(ContainerCpuStats::default());
        assert_eq!(usage_of(&one_shot, None, Timestamp(7)), None);
        assert_eq!(
            usage_of(&one_shot, previous.as_ref(), Timestamp(7)).map(|u| u.cpu_millicores),
            Some(973)
        );
    }

    #[test]
    fn cpu_counters_that_went_back_or_did_not_move_give_no_figure() {
        let at = |total: u64, system: u64| ContainerCpuStats {
            cpu_usage: Some(bollard::models::ContainerCpuUsage {
                total_usage: Some(total),
                ..Default::default()
            }),
            system_cpu_usage: Some(system),
            online_cpus: Some(4),
            ..Default::default()
        };
        // Half a core's time of 4 CPUs' 1 s each: 500 millicores.
        assert_eq!(
            cpu_millicores(
                &at(1_500_000_000, 9_000_000_000),
                &at(1_000_000_000, 5_000_000_000)
            ),
            Some(500)
        );
        assert_eq!(cpu_millicores(&at(1, 9), &at(2, 5)), None, "restarted");
        assert_eq!(cpu_millicores(&at(2, 5), &at(1, 5)), None, "no time passed");
    }

    #[test]
    fn a_task_without_networks_joins_its_service_network_under_the_service_name() {
        let mut task = task();
        assert_eq!(networks_of(&task), vec!["web_default".to_string()]);
        task.spec.networks = ["front", "back"]
            .map(|name| essaim_core::model::NetworkAttachmentConfig {
                target: name.to_string(),
                aliases: vec![],
            })
            .to_vec();
        assert_eq!(networks_of(&task), vec!["front", "back"]);
        let body = container_body(&task, Some("front"), None);
        let endpoints = body
            .networking_config
            .and_then(|n| n.endpoints_config)
            .expect("endpoints");
        assert_eq!(endpoints["front"].aliases, Some(vec!["web".to_string()]));
    }

    #[test]
    fn a_task_on_cluster_networks_has_no_engine_network_and_the_gateway_for_resolver() {
        let mut task = task();
        let on = OnOverlay {
            joined: Joined {
                first_interface: 0,
                networks: vec![NetworkAttachment {
                    network_id: "n-front".to_string(),
                    network: "front".to_string(),
                    address: Ipv4Addr::new(10, 0, 1, 5),
                    aliases: vec![],
                }],
            },
            name_server: Ipv4Addr::new(10, 0, 1, 1),
        };
        task.ports.clear();
        assert!(bridges_of(&task, true).is_empty());
        let body = container_body(&task, None, Some(&on));
        let host = body.host_config.expect("host config");
        assert_eq!(host.network_mode.as_deref(), Some("none"));
        assert_eq!(host.dns, Some(vec!["10.0.1.1".to_string()]));
        assert!(body.networking_config.is_none());
        let labels = body.labels.expect("labels");
        let joined: Joined = serde_json::from_str(&labels[LABEL_JOINED]).expect("label JSON");
        assert_eq!(
            joined, on.joined,
            "a restarted agent reads back what it wrote"
        );

        // On cluster networks the mesh opens ingress ports: the engine publishes none.
        let mut publishing = self::task();
        publishing.networks = on.joined.networks.clone();
        assert!(bridges_of(&publishing, true).is_empty());
        let body = container_body(&publishing, None, Some(&on));
        assert_eq!(body.exposed_ports, Some(vec![]));
        // Host ports need the engine's bridge: the service's own, without Docker's name for
        // the service (the name server on the gateway answers for it).
        publishing.ports[0].mode = PublishMode::Host;
        assert_eq!(bridges_of(&publishing, true), vec!["web_default"]);
        let body = container_body(&publishing, Some("web_default"), Some(&on));
        let endpoints = body
            .networking_config
            .and_then(|n| n.endpoints_config)
            .expect("endpoints");
        assert_eq!(endpoints["web_default"].aliases, None);
    }
}
