//! The replicated state machine: every manager applies the same requests in Raft log order and
//! reaches the same [`ClusterState`]. Apply is deterministic: no clock, no randomness, no I/O.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use crate::command::{Command, Request, Response};
use crate::error::{LookupError, StateError};
use crate::event::{Change, Event};
use crate::model::{
    Cluster, FileKind, Kind, Lease, Network, Node, ObjectId, Role, Service, StoredFile, Task,
    TaskState, TaskStatus,
};
use crate::time::Timestamp;

mod files;
mod locks;
mod networks;
mod table;

pub use networks::AddressHolder;
use table::Table;

/// Everything the managers agree on.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct ClusterState {
    /// `None` until `swarm init`.
    pub cluster: Option<Cluster>,
    nodes: Table<Node>,
    services: Table<Service>,
    tasks: Table<Task>,
    /// Nodes removed with `node rm`: their certificates are refused from then on.
    removed_nodes: BTreeSet<ObjectId>,
    /// Cluster-wide locks by name (`essaim run --lock`). Last, so that the fields before it
    /// keep their place in the encoding.
    #[serde(default)]
    locks: BTreeMap<String, Lease>,
    /// Cluster networks, with what the leader allocated for them.
    #[serde(default)]
    networks: Table<Network>,
    /// Secrets (their data sealed) and configs.
    #[serde(default)]
    files: Table<StoredFile>,
    /// Derived from the tables above; rebuilt after a snapshot is loaded.
    #[serde(skip)]
    index: Indexes,
}

#[derive(Clone, Debug, Default)]
struct Indexes {
    service_by_name: HashMap<String, ObjectId>,
    tasks_by_service: imbl::HashMap<ObjectId, imbl::OrdSet<ObjectId>>,
    tasks_by_node: imbl::HashMap<ObjectId, imbl::OrdSet<ObjectId>>,
    network_by_name: HashMap<String, ObjectId>,
    /// The addresses held on each network, by whom.
    addresses: imbl::HashMap<ObjectId, imbl::HashMap<std::net::Ipv4Addr, AddressHolder>>,
    file_by_name: HashMap<(FileKind, String), ObjectId>,
}

impl PartialEq for ClusterState {
    fn eq(&self, other: &Self) -> bool {
        self.cluster == other.cluster
            && self.nodes == other.nodes
            && self.services == other.services
            && self.tasks == other.tasks
            && self.removed_nodes == other.removed_nodes
            && self.locks == other.locks
            && self.networks == other.networks
            && self.files == other.files
    }
}

/// The bookkeeping of every stored object: the entry that last changed it, and when it was
/// created and last changed (the entry's time).
trait Versioned {
    fn stamps(&mut self) -> (&mut u64, &mut Timestamp, &mut Timestamp);

    /// Created by entry `index`, at `now`.
    fn created(&mut self, index: u64, now: Timestamp) {
        let (version, created_at, updated_at) = self.stamps();
        *version = index;
        *created_at = now;
        *updated_at = now;
    }

    /// Changed by entry `index`, at `now`.
    fn changed(&mut self, index: u64, now: Timestamp) {
        let (version, _, updated_at) = self.stamps();
        *version = index;
        *updated_at = now;
    }
}

macro_rules! versioned {
    ($($kind:ty),*) => {$(
        impl Versioned for $kind {
            fn stamps(&mut self) -> (&mut u64, &mut Timestamp, &mut Timestamp) {
                (&mut self.version, &mut self.created_at, &mut self.updated_at)
            }
        }
    )*};
}

versioned!(Cluster, Node, Service, Task, Network, StoredFile);

impl ClusterState {
    /// Applies one Raft entry at log `index`, appending what changed to `events`.
    pub fn apply(&mut self, index: u64, request: &Request, events: &mut Vec<Event>) -> Response {
        let results = request
            .commands
            .iter()
            .map(|command| {
                self.apply_command(index, request, command, events)
                    .map(|()| index)
            })
            .collect();
        Response { results }
    }

    /// Restores the derived indexes, after deserializing a snapshot.
    pub fn rebuild_indexes(&mut self) {
        let mut index = Indexes::default();
        for service in self.services.values() {
            index
                .service_by_name
                .insert(service.spec.name.clone(), service.id.clone());
        }
        for task in self.tasks.values() {
            index_task(&mut index, task);
        }
        for network in self.networks.values() {
            networks::index_network(&mut index, network);
        }
        for file in self.files.values() {
            index
                .file_by_name
                .insert((file.kind, file.spec.name.clone()), file.id.clone());
        }
        let tasks: Vec<&Task> = self.tasks.values().collect();
        let services: Vec<&Service> = self.services.values().collect();
        let nodes: Vec<&Node> = self.nodes.values().collect();
        networks::index_addresses(&mut index, &tasks, &services, &nodes);
        self.index = index;
    }

    fn apply_command(
        &mut self,
        index: u64,
        request: &Request,
        command: &Command,
        events: &mut Vec<Event>,
    ) -> Result<(), StateError> {
        let now = request.time;
        let mut emit = |change| events.push(Event { index, change });
        match command {
            Command::CreateCluster { cluster } => {
                if self.cluster.is_some() {
                    return Err(StateError::AlreadyExists {
                        kind: Kind::Cluster,
                        name: cluster.id.clone(),
                    });
                }
                let mut cluster = cluster.clone();
                cluster.created(index, now);
                emit(Change::Cluster(cluster.clone()));
                self.cluster = Some(cluster);
            }
            Command::UpdateClusterConfig {
                expected_version,
                config,
            } => {
                let cluster = self.cluster_mut()?;
                check_version(
                    Kind::Cluster,
                    &cluster.id,
                    cluster.version,
                    *expected_version,
                )?;
                cluster.config = config.clone();
                cluster.changed(index, now);
                emit(Change::Cluster(cluster.clone()));
            }
            Command::SetJoinToken { role, token } => {
                let cluster = self.cluster_mut()?;
                match role {
                    Role::Worker => cluster.join_tokens.worker = token.clone(),
                    Role::Manager => cluster.join_tokens.manager = token.clone(),
                }
                cluster.changed(index, now);
                emit(Change::Cluster(cluster.clone()));
            }
            Command::UpdateCa {
                expected_version,
                root_ca,
                ca_rotation,
                join_tokens,
            } => {
                let cluster = self.cluster_mut()?;
                check_version(
                    Kind::Cluster,
                    &cluster.id,
                    cluster.version,
                    *expected_version,
                )?;
                cluster.root_ca = root_ca.clone();
                cluster.ca_rotation = ca_rotation.clone();
                cluster.join_tokens = join_tokens.clone();
                cluster.changed(index, now);
                emit(Change::Cluster(cluster.clone()));
            }
            Command::AddNode { node } => {
                if self.nodes.contains_key(&node.id) {
                    return Err(StateError::AlreadyExists {
                        kind: Kind::Node,
                        name: node.id.clone(),
                    });
                }
                let mut node = node.clone();
                node.created(index, now);
                emit(Change::Node(node.clone()));
                self.nodes.insert(node.id.clone(), node);
            }
            Command::UpdateNodeSpec {
                id,
                expected_version,
                spec,
            } => {
                let node = get_mut(&mut self.nodes, Kind::Node, id)?;
                check_version(Kind::Node, id, node.version, *expected_version)?;
                node.spec = spec.clone();
                node.changed(index, now);
                emit(Change::Node(node.clone()));
            }
            Command::SetNodeStatus { id, status } => {
                let node = get_mut(&mut self.nodes, Kind::Node, id)?;
                node.status = status.clone();
                node.changed(index, now);
                emit(Change::Node(node.clone()));
            }
            Command::RemoveNode {
                id,
                expected_version,
            } => {
                let node = get_mut(&mut self.nodes, Kind::Node, id)?;
                check_version(Kind::Node, id, node.version, *expected_version)?;
                self.release_node_ingress(id);
                self.nodes.remove(id);
                self.removed_nodes.insert(id.clone());
                emit(Change::NodeRemoved { id: id.clone() });
            }
            Command::CreateService { service } => {
                if self.services.contains_key(&service.id) {
                    return Err(StateError::AlreadyExists {
                        kind: Kind::Service,
                        name: service.id.clone(),
                    });
                }
                if self.index.service_by_name.contains_key(&service.spec.name) {
                    return Err(StateError::AlreadyExists {
                        kind: Kind::Service,
                        name: service.spec.name.clone(),
                    });
                }
                self.check_service_networks(service)?;
                self.check_service_files(service)?;
                check_sealed(&service.spec)?;
                crate::allocator::ports::check(self, None, &service.spec)
                    .map_err(|e| StateError::Invalid(e.to_string()))?;
                self.hold_virtual_ips(&service.id, &[], &service.virtual_ips)?;
                let mut service = service.clone();
                service.created(index, now);
                self.index
                    .service_by_name
                    .insert(service.spec.name.clone(), service.id.clone());
                emit(Change::Service(service.clone()));
                self.services.insert(service.id.clone(), service);
            }
            Command::UpdateService {
                id,
                expected_version,
                spec,
                update_status,
            } => {
                let service = get_mut(&mut self.services, Kind::Service, id)?;
                check_version(Kind::Service, id, service.version, *expected_version)?;
                if service.spec.name != spec.name {
                    return Err(StateError::Invalid(format!(
                        "service {} cannot be renamed to {:?}",
                        service.spec.name, spec.name
                    )));
                }
                let mut checked = service.clone();
                checked.spec = spec.clone();
                self.check_service_networks(&checked)?;
                self.check_service_files(&checked)?;
                check_sealed(spec)?;
                crate::allocator::ports::check(self, Some(id), spec)
                    .map_err(|e| StateError::Invalid(e.to_string()))?;
                let service = get_mut(&mut self.services, Kind::Service, id)?;
                service.previous_spec = Some(std::mem::replace(&mut service.spec, spec.clone()));
                if let Some(status) = update_status {
                    service.update_status = Some(status.clone());
                }
                service.changed(index, now);
                emit(Change::Service(service.clone()));
            }
            Command::SetVirtualIps {
                service_id,
                virtual_ips,
            } => {
                let service = get_mut(&mut self.services, Kind::Service, service_id)?;
                let previous = service.virtual_ips.clone();
                self.hold_virtual_ips(service_id, &previous, virtual_ips)?;
                let service = get_mut(&mut self.services, Kind::Service, service_id)?;
                service.virtual_ips = virtual_ips.clone();
                service.changed(index, now);
                emit(Change::Service(service.clone()));
            }
            Command::SetNodeIngress { node_id, ingress } => {
                get_mut(&mut self.nodes, Kind::Node, node_id)?;
                self.set_node_ingress(node_id, ingress.as_ref())?;
                let node = get_mut(&mut self.nodes, Kind::Node, node_id)?;
                node.ingress = ingress.clone();
                node.changed(index, now);
                emit(Change::Node(node.clone()));
            }
            Command::SetUpdateStatus {
                service_id,
                expected,
                status,
            } => {
                let service = get_mut(&mut self.services, Kind::Service, service_id)?;
                if service.update_status != *expected {
                    return Err(StateError::UpdateStatusChanged {
                        id: service_id.clone(),
                    });
                }
                service.update_status = Some(status.clone());
                service.changed(index, now);
                emit(Change::Service(service.clone()));
            }
            Command::RemoveService {
                id,
                expected_version,
            } => {
                let service = get_mut(&mut self.services, Kind::Service, id)?;
                check_version(Kind::Service, id, service.version, *expected_version)?;
                let name = service.spec.name.clone();
                let vips = service.virtual_ips.clone();
                self.release_virtual_ips(id, &vips);
                self.services.remove(id);
                self.index.service_by_name.remove(&name);
                emit(Change::ServiceRemoved { id: id.clone() });
            }
            Command::CreateTask { task } => {
                if self.tasks.contains_key(&task.id) {
                    return Err(StateError::AlreadyExists {
                        kind: Kind::Task,
                        name: task.id.clone(),
                    });
                }
                if !self.services.contains_key(&task.service_id) {
                    return Err(StateError::NotFound {
                        kind: Kind::Service,
                        id: task.service_id.clone(),
                    });
                }
                if !task.status.state.is_terminal() {
                    self.hold_task_addresses(task)?;
                }
                let mut task = task.clone();
                task.created(index, now);
                index_task(&mut self.index, &task);
                emit(Change::Task(task.clone()));
                self.tasks.insert(task.id.clone(), task);
            }
            Command::AttachTask { id, networks } => {
                let task = get_mut(&mut self.tasks, Kind::Task, id)?;
                if !task.networks.is_empty() || task.status.state.is_terminal() {
                    return Err(StateError::Invalid(format!(
                        "task {id} cannot be given addresses: it has them, or it has ended"
                    )));
                }
                let mut attached = task.clone();
                attached.networks = networks.clone();
                self.hold_task_addresses(&attached)?;
                attached.changed(index, now);
                emit(Change::Task(attached.clone()));
                self.tasks.insert(id.clone(), attached);
            }
            Command::AssignTask { id, node_id } => {
                if !self.nodes.contains_key(node_id) {
                    return Err(StateError::NotFound {
                        kind: Kind::Node,
                        id: node_id.clone(),
                    });
                }
                let task = get_mut(&mut self.tasks, Kind::Task, id)?;
                match &task.node_id {
                    // A global task is created for its node; the scheduler confirms it there.
                    Some(previous) if previous == node_id => {}
                    Some(previous) => {
                        return Err(StateError::Invalid(format!(
                            "task {id} is already assigned to node {previous}"
                        )))
                    }
                    None => {}
                }
                task.node_id = Some(node_id.clone());
                // Assignment is a state of its own: the node's agent starts the task from it.
                if task.status.state < TaskState::Assigned {
                    task.status = TaskStatus::new(TaskState::Assigned, now, "assigned to a node");
                }
                task.changed(index, now);
                let task = task.clone();
                self.index
                    .tasks_by_node
                    .entry(node_id.clone())
                    .or_default()
                    .insert(id.clone());
                emit(Change::Task(task));
            }
            Command::UpdateTaskStatus { id, status } => {
                let task = get_mut(&mut self.tasks, Kind::Task, id)?;
                if status.state < task.status.state {
                    return Err(StateError::StateRegression {
                        id: id.clone(),
                        from: task.status.state,
                        to: status.state,
                    });
                }
                let ends = status.state.is_terminal() && !task.status.state.is_terminal();
                task.status = status.clone();
                task.changed(index, now);
                let task = task.clone();
                if ends {
                    self.release_task_addresses(&task);
                }
                emit(Change::Task(task));
            }
            Command::SetTaskDesiredState { id, desired_state } => {
                let task = get_mut(&mut self.tasks, Kind::Task, id)?;
                if *desired_state < task.desired_state {
                    return Err(StateError::StateRegression {
                        id: id.clone(),
                        from: task.desired_state,
                        to: *desired_state,
                    });
                }
                task.desired_state = *desired_state;
                task.changed(index, now);
                emit(Change::Task(task.clone()));
            }
            Command::RemoveTask { id } => {
                let task = self.tasks.remove(id).ok_or_else(|| StateError::NotFound {
                    kind: Kind::Task,
                    id: id.clone(),
                })?;
                unindex_task(&mut self.index, &task);
                self.release_task_addresses(&task);
                emit(Change::TaskRemoved {
                    id: id.clone(),
                    node_id: task.node_id.clone(),
                });
            }
            Command::AcquireLock {
                name,
                holder,
                ttl_ms,
            } => self.acquire_lock(name, holder, *ttl_ms, now, &mut emit)?,
            Command::RenewLock {
                name,
                holder,
                ttl_ms,
            } => self.renew_lock(name, holder, *ttl_ms, now, &mut emit)?,
            Command::ReleaseLock { name, holder } => self.release_lock(name, holder, &mut emit)?,
            Command::CreateNetwork { network } => {
                let mut network = network.clone();
                network.created(index, now);
                self.create_network(network, &mut emit)?;
            }
            Command::RemoveNetwork { id } => self.remove_network(id, &mut emit)?,
            Command::CreateFile { file } => {
                let mut file = file.clone();
                file.created(index, now);
                self.create_file(file, &mut emit)?;
            }
            Command::RemoveFile { kind, id } => self.remove_file(*kind, id, &mut emit)?,
        }
        Ok(())
    }

    fn cluster_mut(&mut self) -> Result<&mut Cluster, StateError> {
        self.cluster.as_mut().ok_or_else(|| StateError::NotFound {
            kind: Kind::Cluster,
            id: "(none: run swarm init)".to_string(),
        })
    }

    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes.values()
    }

    pub fn node_by_id(&self, id: &str) -> Option<&Node> {
        self.nodes.get(id)
    }

    /// True for a node that `node rm` removed: its certificate no longer admits it.
    pub fn is_removed(&self, id: &str) -> bool {
        self.removed_nodes.contains(id)
    }

    /// Finds a node by hostname, full ID or unambiguous ID prefix.
    ///
    /// # Errors
    /// Not found, or more than one node answers to the name.
    pub fn node(&self, name: &str) -> Result<&Node, LookupError> {
        if let Some(node) = self.nodes.get(name) {
            return Ok(node);
        }
        let describe = |n: &Node| format!("{} ({})", n.id, n.description.hostname);
        let by_hostname = || {
            self.nodes
                .values()
                .filter(|n| n.description.hostname == name)
        };
        if by_hostname().next().is_some() {
            return pick_one(Kind::Node, name, by_hostname(), describe, []);
        }
        pick_one(
            Kind::Node,
            name,
            self.nodes.values().filter(|n| n.id.starts_with(name)),
            describe,
            self.nodes.values().map(|n| n.description.hostname.as_str()),
        )
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.services.values()
    }

    pub fn service_by_id(&self, id: &str) -> Option<&Service> {
        self.services.get(id)
    }

    /// Finds a service by name, full ID or unambiguous ID prefix.
    ///
    /// # Errors
    /// Not found, or an ID prefix shared by several services.
    pub fn service(&self, name: &str) -> Result<&Service, LookupError> {
        if let Some(service) = self
            .index
            .service_by_name
            .get(name)
            .and_then(|id| self.services.get(id))
            .or_else(|| self.services.get(name))
        {
            return Ok(service);
        }
        pick_one(
            Kind::Service,
            name,
            self.services.values().filter(|s| s.id.starts_with(name)),
            |s| format!("{} ({})", s.id, s.spec.name),
            self.services.values().map(|s| s.spec.name.as_str()),
        )
    }

    pub fn tasks(&self) -> impl Iterator<Item = &Task> {
        self.tasks.values()
    }

    pub fn task_by_id(&self, id: &str) -> Option<&Task> {
        self.tasks.get(id)
    }

    /// The tasks of one service, in ID order.
    pub fn tasks_of_service<'a>(&'a self, service_id: &str) -> impl Iterator<Item = &'a Task> {
        self.index
            .tasks_by_service
            .get(service_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }

    /// The tasks assigned to one node, in ID order.
    pub fn tasks_on_node<'a>(&'a self, node_id: &str) -> impl Iterator<Item = &'a Task> {
        self.index
            .tasks_by_node
            .get(node_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.tasks.get(id))
    }
}

fn index_task(index: &mut Indexes, task: &Task) {
    index
        .tasks_by_service
        .entry(task.service_id.clone())
        .or_default()
        .insert(task.id.clone());
    if let Some(node) = &task.node_id {
        index
            .tasks_by_node
            .entry(node.clone())
            .or_default()
            .insert(task.id.clone());
    }
}

fn unindex_task(index: &mut Indexes, task: &Task) {
    if let Some(set) = index.tasks_by_service.get_mut(&task.service_id) {
        set.remove(&task.id);
        if set.is_empty() {
            index.tasks_by_service.remove(&task.service_id);
        }
    }
    if let Some(node) = &task.node_id {
        if let Some(set) = index.tasks_by_node.get_mut(node) {
            set.remove(&task.id);
            if set.is_empty() {
                index.tasks_by_node.remove(node);
            }
        }
    }
}

fn get_mut<'a, T: Clone>(
    table: &'a mut Table<T>,
    kind: Kind,
    id: &str,
) -> Result<&'a mut T, StateError> {
    table.get_mut(id).ok_or_else(|| StateError::NotFound {
        kind,
        id: id.to_string(),
    })
}

fn check_version(
    kind: Kind,
    id: &str,
    actual: u64,
    expected: Option<u64>,
) -> Result<(), StateError> {
    match expected {
        Some(expected) if expected != actual => Err(StateError::VersionConflict {
            kind,
            id: id.to_string(),
            expected,
            actual,
        }),
        _ => Ok(()),
    }
}

/// The one object among `candidates`, or why there is not one. `known_names` are the names
/// users give objects of this kind: when nothing answers, the closest is suggested. The
/// iterator is only walked then.
/// Registry credentials are written sealed, never as given: the leader seals them first.
fn check_sealed(spec: &crate::model::ServiceSpec) -> Result<(), StateError> {
    match spec.task.registry_auth {
        Some(crate::model::RegistryAuth::Given(_)) => Err(StateError::Invalid(format!(
            "service {}: registry credentials must be sealed before they are written",
            spec.name
        ))),
        _ => Ok(()),
    }
}

fn pick_one<'a, 'n, T: 'a>(
    kind: Kind,
    name: &str,
    candidates: impl Iterator<Item = &'a T>,
    describe: impl Fn(&T) -> String,
    known_names: impl IntoIterator<Item = &'n str>,
) -> Result<&'a T, LookupError> {
    let found: Vec<&T> = candidates.collect();
    match found.as_slice() {
        [one] => Ok(one),
        [] => Err(LookupError::NotFound {
            kind,
            name: name.to_string(),
            suggestion: crate::suggest::closest(name, known_names).map(str::to_string),
        }),
        many => Err(LookupError::Ambiguous {
            kind,
            name: name.to_string(),
            matches: many.iter().map(|t| describe(t)).collect(),
        }),
    }
}

#[cfg(test)]
mod tests;
