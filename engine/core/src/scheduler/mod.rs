//! Where tasks go: node filters, placement constraints, spread, and why a task waits.
//!
//! [`schedule`] is pure: it reads a [`ClusterState`] and the pending tasks and answers one
//! [`Placement`] per task; the leader commits the assignments. As in Swarm, a node qualifies
//! when it is ready, active, satisfies every constraint, has room for the task's reservations,
//! is below the service's max replicas per node, and has none of the task's host-mode ports
//! taken by another task. Among those, a task goes to the node
//! with the fewest tasks of its service, then the fewest tasks overall, then the smallest ID;
//! spread preferences first pick the label group with the fewest tasks of the service.
//!
//! Tasks of a service with the same spec pass the same filters, so they are placed as a group:
//! the filters run once per node per group, and a spread tree (`spread.rs`) gives the best
//! node for each task in logarithmic time, updated after every assignment.

mod constraint;
mod reason;
mod spread;

use std::collections::{BTreeMap, HashMap, HashSet};

pub use constraint::{Constraint, ConstraintError, Field, Operator};

use crate::model::{
    Availability, Node, NodeState, ObjectId, PortConfig, Protocol, PublishMode, Task, TaskSpec,
    TaskState, PROCESS_RUNTIME,
};
use crate::state::ClusterState;
use reason::{Tally, Unfit};
use spread::{Entry, SpreadTree};

/// The scheduler's decision for one pending task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Placement {
    Assign {
        task_id: ObjectId,
        node_id: ObjectId,
    },
    /// No node can take the task now; `reason` tells the user what to change.
    Wait { task_id: ObjectId, reason: String },
}

impl Placement {
    pub fn task_id(&self) -> &str {
        match self {
            Placement::Assign { task_id, .. } | Placement::Wait { task_id, .. } => task_id,
        }
    }
}

/// Places `pending` tasks: one [`Placement`] per task, in the same order. Assignments made
/// for earlier tasks count for later ones.
///
/// A task that already names its node (a global service's task) is only checked against
/// that node. The other tasks are grouped by service and spec, and groups are placed in the
/// order their first task appears.
///
/// # Caveats
/// A task that cannot be read (an invalid constraint or spread preference, which the control
/// API refuses up front) waits with the parse error as its reason.
pub fn schedule<'a>(state: &'a ClusterState, pending: &[&'a Task]) -> Vec<Placement> {
    let nodes: Vec<&Node> = state.nodes().collect();
    let mut load = Load::measure(state, &nodes);
    let mut placements: Vec<Option<Placement>> = vec![None; pending.len()];

    // Pinned tasks first: they have no other choice, the others do.
    for (position, task) in pending.iter().enumerate() {
        if let Some(node_id) = &task.node_id {
            placements[position] = Some(place_pinned(&nodes, &mut load, task, node_id));
        }
    }

    for group in groups(pending) {
        place_group(&nodes, &mut load, pending, &group, &mut placements);
    }

    placements
        .into_iter()
        .map(|placement| placement.expect("every pending task is pinned or in a group"))
        .collect()
}

/// Whether `node` may run tasks of `spec` at all, whatever its load: ready, active and
/// satisfying every constraint. For the global orchestrator, which wants a task on every
/// such node. A spec whose constraints cannot be read runs nowhere.
pub fn accepts(node: &Node, spec: &TaskSpec) -> bool {
    Filters::new(spec, &[]).is_ok_and(|filters| filters.check_node(node).is_ok())
}

/// What the tasks on a node hold.
#[derive(Clone, Debug, Default)]
struct NodeLoad {
    tasks: u64,
    nano_cpus: u64,
    memory_bytes: u64,
    /// The generic resources its tasks reserve, by kind; empty on most nodes.
    generic: BTreeMap<String, u64>,
    /// The host-mode ports its tasks publish: one task per port and protocol on a node.
    host_ports: HashSet<(u16, Protocol)>,
}

/// The host-mode ports a task publishes on its node, once chosen (a port left at 0 is picked
/// by the node, free by construction).
fn host_ports(ports: &[PortConfig]) -> impl Iterator<Item = &PortConfig> {
    ports
        .iter()
        .filter(|p| p.mode == PublishMode::Host && p.published != 0)
}

/// The load of every node and the tasks of each service per node, kept up to date as tasks
/// are assigned.
struct Load<'a> {
    /// Node ID to its index in the ID-ordered node list.
    index: HashMap<&'a str, usize>,
    nodes: Vec<NodeLoad>,
    /// Service ID to (node index to that service's tasks there).
    services: HashMap<&'a str, HashMap<usize, u64>>,
}

impl<'a> Load<'a> {
    /// One pass over the tasks. A task holds its place when it is on a node, meant to run and
    /// not yet stopped: a task that failed frees its resources even before a manager sets its
    /// desired state to shutdown.
    fn measure(state: &'a ClusterState, nodes: &[&'a Node]) -> Self {
        let index: HashMap<&str, usize> = nodes
            .iter()
            .enumerate()
            .map(|(i, node)| (node.id.as_str(), i))
            .collect();
        let mut load = Load {
            index,
            nodes: vec![NodeLoad::default(); nodes.len()],
            services: HashMap::new(),
        };
        for task in state.tasks() {
            let holds_place =
                task.desired_state <= TaskState::Running && !task.status.state.is_terminal();
            let node = task.node_id.as_deref().and_then(|id| load.index.get(id));
            if let (true, Some(&node)) = (holds_place, node) {
                load.add(node, task);
            }
        }
        load
    }

    fn add(&mut self, node: usize, task: &'a Task) {
        let reserved = &task.spec.resources;
        let entry = &mut self.nodes[node];
        entry.tasks += 1;
        entry.nano_cpus = entry.nano_cpus.saturating_add(reserved.reserve_nano_cpus);
        entry.memory_bytes = entry
            .memory_bytes
            .saturating_add(reserved.reserve_memory_bytes);
        for (kind, count) in &reserved.generic {
            let held = entry.generic.entry(kind.clone()).or_default();
            *held = held.saturating_add(*count);
        }
        entry
            .host_ports
            .extend(host_ports(&task.ports).map(|p| (p.published, p.protocol)));
        *self
            .services
            .entry(task.service_id.as_str())
            .or_default()
            .entry(node)
            .or_default() += 1;
    }

    /// The service's tasks on every node, by node index: one array for a group's many
    /// lookups.
    fn service_tasks_per_node(&self, service_id: &str) -> Vec<u64> {
        let mut counts = vec![0; self.nodes.len()];
        for (&node, &count) in self.services.get(service_id).into_iter().flatten() {
            counts[node] = count;
        }
        counts
    }

    fn service_tasks(&self, service_id: &str, node: usize) -> u64 {
        self.services
            .get(service_id)
            .and_then(|per_node| per_node.get(&node))
            .copied()
            .unwrap_or(0)
    }
}

/// A task's filters, read from its spec once per group.
struct Filters {
    constraints: Vec<Constraint>,
    spread: Vec<Field>,
    nano_cpus: u64,
    memory_bytes: u64,
    /// `--generic-resource`: so many of each kind.
    generic: Vec<(String, u64)>,
    /// 0 means no limit.
    max_per_node: u64,
    host_ports: Vec<PortConfig>,
    /// The options only a container can apply, joined (`--hostname, --read-only`); empty
    /// when there are none.
    container_only: String,
}

impl Filters {
    fn new(spec: &TaskSpec, ports: &[PortConfig]) -> Result<Self, ConstraintError> {
        Ok(Filters {
            constraints: spec
                .constraints
                .iter()
                .map(|text| Constraint::parse(text))
                .collect::<Result<_, _>>()?,
            spread: spec
                .spread
                .iter()
                .map(|text| Field::parse_spread(text))
                .collect::<Result<_, _>>()?,
            nano_cpus: spec.resources.reserve_nano_cpus,
            memory_bytes: spec.resources.reserve_memory_bytes,
            generic: spec
                .resources
                .generic
                .iter()
                .map(|(kind, count)| (kind.clone(), *count))
                .collect(),
            max_per_node: spec.max_replicas_per_node,
            host_ports: host_ports(ports).copied().collect(),
            container_only: spec.container_only().join(", "),
        })
    }

    /// Every filter, in the order a wait reason counts them.
    fn check(&self, node: &Node, load: &NodeLoad, service_tasks: u64) -> Result<(), Unfit> {
        self.check_node(node)?;
        self.check_room(node, load, service_tasks)
    }

    /// The filters that do not depend on load.
    fn check_node(&self, node: &Node) -> Result<(), Unfit> {
        match node.status.state {
            NodeState::Ready => {}
            NodeState::Down => return Err(Unfit::Down),
            NodeState::Unknown => return Err(Unfit::NotReady),
        }
        match node.spec.availability {
            Availability::Active => {}
            Availability::Drain => return Err(Unfit::Drained),
            Availability::Pause => return Err(Unfit::Paused),
        }
        if let Some(index) = self.constraints.iter().position(|c| !c.matches(node)) {
            return Err(Unfit::Constraint(index));
        }
        if !self.container_only.is_empty() && node.description.runtime == PROCESS_RUNTIME {
            return Err(Unfit::ProcessRuntime(self.container_only.clone()));
        }
        Ok(())
    }

    /// Whether the node has room for one more task: resources, then max replicas per node.
    fn check_room(&self, node: &Node, load: &NodeLoad, service_tasks: u64) -> Result<(), Unfit> {
        let capacity = &node.description.resources;
        let nano_cpus = shortage(capacity.nano_cpus, load.nano_cpus, self.nano_cpus);
        let memory_bytes = shortage(capacity.memory_bytes, load.memory_bytes, self.memory_bytes);
        if nano_cpus > 0 || memory_bytes > 0 {
            return Err(Unfit::Lacks {
                nano_cpus,
                memory_bytes,
            });
        }
        // Unlike CPUs and memory, a kind the node did not declare is a kind it has none of.
        for (kind, wanted) in &self.generic {
            let has = capacity.generic.get(kind).copied().unwrap_or(0);
            let held = load.generic.get(kind).copied().unwrap_or(0);
            if held.saturating_add(*wanted) > has {
                return Err(Unfit::LacksGeneric(kind.clone()));
            }
        }
        if self.max_per_node > 0 && service_tasks >= self.max_per_node {
            return Err(Unfit::MaxReplicas);
        }
        let taken = |p: &&PortConfig| load.host_ports.contains(&(p.published, p.protocol));
        match self.host_ports.iter().find(taken) {
            Some(port) => Err(Unfit::HostPort(port.published_label())),
            None => Ok(()),
        }
    }
}

/// How much of a resource is missing for `wanted` more; a capacity of 0 is unknown and never
/// short.
fn shortage(capacity: u64, used: u64, wanted: u64) -> u64 {
    if capacity == 0 || wanted == 0 {
        return 0;
    }
    used.saturating_add(wanted).saturating_sub(capacity)
}

/// Pending tasks of one service with one spec: they pass the same filters.
struct Group<'a> {
    service_id: &'a str,
    spec: &'a TaskSpec,
    ports: &'a [PortConfig],
    /// Positions in the pending list, in order.
    positions: Vec<usize>,
}

/// Groups the unpinned tasks by service and spec, in the order groups first appear.
fn groups<'a>(pending: &[&'a Task]) -> Vec<Group<'a>> {
    let mut groups: Vec<Group<'a>> = Vec::new();
    // A service rarely has more than two specs pending at once (during an update), so a short
    // list per service is enough; TaskSpec has no hash.
    let mut by_service: HashMap<&str, Vec<usize>> = HashMap::new();
    for (position, task) in pending.iter().enumerate() {
        if task.node_id.is_some() {
            continue;
        }
        let candidates = by_service.entry(task.service_id.as_str()).or_default();
        let found = candidates.iter().copied().find(|&g| {
            let spec = groups[g].spec;
            (std::ptr::eq(spec, &task.spec) || *spec == task.spec) && groups[g].ports == task.ports
        });
        match found {
            Some(g) => groups[g].positions.push(position),
            None => {
                candidates.push(groups.len());
                groups.push(Group {
                    service_id: &task.service_id,
                    spec: &task.spec,
                    ports: &task.ports,
                    positions: vec![position],
                });
            }
        }
    }
    groups
}

fn place_group<'a>(
    nodes: &[&'a Node],
    load: &mut Load<'a>,
    pending: &[&'a Task],
    group: &Group<'a>,
    placements: &mut [Option<Placement>],
) {
    let wait_all = |placements: &mut [Option<Placement>], reason: &str| {
        for &position in &group.positions {
            placements[position] = Some(Placement::Wait {
                task_id: pending[position].id.clone(),
                reason: reason.to_string(),
            });
        }
    };
    if nodes.is_empty() {
        wait_all(placements, "no suitable node: the swarm has no nodes");
        return;
    }
    let filters = match Filters::new(group.spec, group.ports) {
        Ok(filters) => filters,
        Err(error) => {
            wait_all(placements, &error.to_string());
            return;
        }
    };

    let mut service_tasks = load.service_tasks_per_node(group.service_id);
    let mut entries = Vec::new();
    let mut keys = Vec::new();
    for (index, node) in nodes.iter().enumerate() {
        if filters
            .check(node, &load.nodes[index], service_tasks[index])
            .is_err()
        {
            continue;
        }
        entries.push(Entry {
            node: index,
            keys_at: keys.len(),
            service_tasks: service_tasks[index],
            total_tasks: load.nodes[index].tasks,
        });
        keys.extend(filters.spread.iter().map(|field| match field.value(node) {
            Some(value) => (false, value),
            None => (true, ""),
        }));
    }
    let mut tree = SpreadTree::build(entries, &keys, filters.spread.len(), nodes.len());

    // Once no node is left, nothing changes for the rest of the group: explain once.
    let mut reason: Option<String> = None;
    for &position in &group.positions {
        let task = pending[position];
        let placement = match tree.best() {
            Some(index) => {
                load.add(index, task);
                service_tasks[index] += 1;
                let room =
                    filters.check_room(nodes[index], &load.nodes[index], service_tasks[index]);
                tree.assigned(index, load.nodes[index].tasks, room.is_ok());
                Placement::Assign {
                    task_id: task.id.clone(),
                    node_id: nodes[index].id.clone(),
                }
            }
            None => Placement::Wait {
                task_id: task.id.clone(),
                reason: reason
                    .get_or_insert_with(|| explain(nodes, load, &service_tasks, &filters))
                    .clone(),
            },
        };
        placements[position] = Some(placement);
    }
}

/// The wait reason when no node qualifies: how many nodes fail which filter.
fn explain(nodes: &[&Node], load: &Load<'_>, service_tasks: &[u64], filters: &Filters) -> String {
    let mut tally = Tally::default();
    for (index, node) in nodes.iter().enumerate() {
        if let Err(unfit) = filters.check(node, &load.nodes[index], service_tasks[index]) {
            tally.add(&unfit);
        }
    }
    tally.reason(&filters.constraints, filters.max_per_node)
}

/// A task that names its node: that node or nothing.
fn place_pinned<'a>(
    nodes: &[&'a Node],
    load: &mut Load<'a>,
    task: &'a Task,
    node_id: &str,
) -> Placement {
    let wait = |reason: String| Placement::Wait {
        task_id: task.id.clone(),
        reason,
    };
    let filters = match Filters::new(&task.spec, &task.ports) {
        Ok(filters) => filters,
        Err(error) => return wait(error.to_string()),
    };
    let Some(&index) = load.index.get(node_id) else {
        return wait(format!("node {node_id} is no longer in the swarm"));
    };
    let node = nodes[index];
    let service_tasks = load.service_tasks(&task.service_id, index);
    match filters.check(node, &load.nodes[index], service_tasks) {
        Ok(()) => {
            load.add(index, task);
            Placement::Assign {
                task_id: task.id.clone(),
                node_id: node.id.clone(),
            }
        }
        Err(unfit) => wait(format!(
            "node {} ({}) cannot take the task: {}",
            node.description.hostname,
            node.id,
            unfit.describe(&filters.constraints, filters.max_per_node)
        )),
    }
}

#[cfg(test)]
mod tests;
