//! Turning replies into text: plain docker-like tables, `key: value` listings, JSON and
//! timestamps. Everything here is pure (values in, a `String` out) except [`Output`], the one
//! place that writes.

use std::io::{self, Write};

use comfy_table::{presets, Cell, ContentArrangement, Table};
use essaim_api::control::{
    FileView, LocalSwarmState, NetworkView, NodeInfo, NodeView, Reachability, ServiceView,
    SwarmView, TaskView,
};
use essaim_core::model::{ContainerOptions, PortConfig, Role, ServiceMode, TaskState};
use essaim_core::time::format_duration_ms;
use essaim_core::units::{format_cpus, format_memory};
use essaim_core::Timestamp;
use serde::Serialize;

use crate::style::{self, Tone};

/// Where a command's results and errors go: stdout and stderr, or buffers in tests.
pub struct Output<'a> {
    out: &'a mut dyn Write,
    err: &'a mut dyn Write,
    /// The user can be asked to confirm (stdin and stderr are terminals).
    pub interactive: bool,
    /// Stderr is a terminal: progress, which goes there so that stdout keeps only results, is
    /// redrawn in place rather than printed line by line.
    pub terminal: bool,
    /// Stdout is a terminal: a screen that may be cleared and redrawn (`watch`).
    pub screen: bool,
}

impl<'a> Output<'a> {
    /// An output for a program: no questions, no redrawing. See [`Output::for_terminal`].
    pub fn new(out: &'a mut dyn Write, err: &'a mut dyn Write) -> Output<'a> {
        Output {
            out,
            err,
            interactive: false,
            terminal: false,
            screen: false,
        }
    }

    /// An output that asks and redraws as the process's terminals allow.
    pub fn for_terminal(out: &'a mut dyn Write, err: &'a mut dyn Write) -> Output<'a> {
        use std::io::IsTerminal;
        Output {
            out,
            err,
            interactive: style::interactive(),
            terminal: std::io::stderr().is_terminal(),
            screen: std::io::stdout().is_terminal(),
        }
    }

    /// Writes `text` to stderr: notes and progress, which must not mix with results.
    pub fn note(&mut self, text: &str) {
        let _ = self.err.write_all(text.as_bytes());
        let _ = self.err.flush();
    }

    /// Writes `text` to stdout as is, flushed, so results and errors come out in order.
    ///
    /// # Errors
    /// Stdout is closed (a broken pipe, which the caller treats as success) or failing.
    pub fn print(&mut self, text: &str) -> io::Result<()> {
        self.out.write_all(text.as_bytes())?;
        self.out.flush()
    }

    /// # Errors
    /// As [`Output::print`].
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Writes `Error: <message>` on one line to stderr. A failing stderr is ignored: there is
    /// nowhere left to say so.
    pub fn error(&mut self, error: &anyhow::Error) {
        let _ = writeln!(
            self.err,
            "{} {}",
            style::paint("Error:", Tone::Bad),
            error_line(error)
        );
        let _ = self.err.flush();
    }
}

/// An error and its causes as one line, so each error is one line of stderr.
pub fn error_line(error: &anyhow::Error) -> String {
    format!("{error:#}")
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Pretty JSON, ending with a newline.
///
/// # Errors
/// Only if the value cannot be serialized, which would be a bug.
pub fn json<T: Serialize + ?Sized>(value: &T) -> anyhow::Result<String> {
    let mut text = serde_json::to_string_pretty(value)?;
    text.push('\n');
    Ok(text)
}

/// Plain columns like docker's: no borders, at least three spaces between columns, no
/// trailing spaces. `tone(column, text)` gives each cell's color (used only when colors are
/// on). On a terminal the table fits its width, wrapping the widest cells.
pub fn toned_columns(
    header: &[&str],
    rows: Vec<Vec<String>>,
    tone: impl Fn(usize, &str) -> Tone,
) -> String {
    let mut table = Table::new();
    table.load_style(presets::NOTHING);
    if style::color() {
        table.enforce_styling();
    } else {
        table.force_no_tty();
    }
    if let Some(width) = style::terminal_width() {
        table.set_content_arrangement(ContentArrangement::Dynamic);
        table.set_width(width);
    }
    table.set_header(header.to_vec());
    for row in rows {
        table.add_row(row.into_iter().enumerate().map(|(column, text)| {
            let cell = Cell::new(&text);
            match tone(column, &text).cell_color() {
                Some(color) if style::color() => cell.fg(color),
                _ => cell,
            }
        }));
    }
    let last = header.len().saturating_sub(1);
    for (index, column) in table.column_iter_mut().enumerate() {
        column.set_padding((0, if index == last { 0 } else { 3 }));
    }
    let mut text = String::new();
    for line in table.lines() {
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

/// IDs, one a line, for `-q`.
pub fn ids<'a>(ids: impl IntoIterator<Item = &'a str>) -> String {
    ids.into_iter().map(|id| format!("{id}\n")).collect()
}

/// The `node ls` table. `local_id` is the node the shell talks to, marked with `*`.
pub fn node_table(nodes: &[NodeView], local_id: Option<&str>) -> String {
    let rows = nodes
        .iter()
        .map(|view| {
            let node = &view.node;
            let id = if Some(node.id.as_str()) == local_id {
                format!("{} *", node.id)
            } else {
                node.id.clone()
            };
            vec![
                id,
                node.description.hostname.clone(),
                capitalize(node.status.state.as_str()),
                capitalize(node.spec.availability.as_str()),
                view.manager_status
                    .as_ref()
                    .map(|status| status.label().to_string())
                    .unwrap_or_default(),
            ]
        })
        .collect();
    toned_columns(
        &["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"],
        rows,
        |column, text| match column {
            2..=4 => Tone::of_state(text),
            _ => Tone::Plain,
        },
    )
}

/// `node inspect --pretty`, for one node.
pub fn node_pretty(view: &NodeView) -> String {
    let node = &view.node;
    let mut entries = vec![
        Entry::field(0, "ID", &node.id),
        Entry::field(0, "Hostname", &node.description.hostname),
        Entry::field(0, "Joined at", rfc3339(node.created_at)),
        Entry::Section("Status"),
        Entry::field(1, "State", capitalize(node.status.state.as_str())),
    ];
    if !node.status.message.is_empty() {
        entries.push(Entry::field(1, "Message", &node.status.message));
    }
    entries.push(Entry::field(1, "Address", &node.description.addr));
    if let Some(status) = &view.manager_status {
        entries.extend([
            Entry::Section("Manager Status"),
            Entry::field(1, "Address", &status.addr),
            Entry::field(
                1,
                "Raft Status",
                match status.reachability {
                    Reachability::Reachable => "Reachable",
                    Reachability::Unreachable => "Unreachable",
                },
            ),
            Entry::field(1, "Leader", if status.leader { "Yes" } else { "No" }),
        ]);
    }
    entries.extend([
        Entry::field(
            0,
            "Availability",
            capitalize(node.spec.availability.as_str()),
        ),
        Entry::field(0, "Role", capitalize(node.spec.role.as_str())),
    ]);
    if !node.spec.labels.is_empty() {
        entries.push(Entry::Section("Labels"));
        entries.extend(node.spec.labels.iter().map(|(key, value)| {
            Entry::Item(if value.is_empty() {
                key.clone()
            } else {
                format!("{key}={value}")
            })
        }));
    }
    entries.extend([
        Entry::Section("Platform"),
        Entry::field(1, "Operating System", &node.description.os),
        Entry::field(1, "Architecture", &node.description.arch),
    ]);
    let resources = &node.description.resources;
    entries.push(Entry::Section("Resources"));
    entries.push(Entry::field(1, "CPUs", format_cpus(resources.nano_cpus)));
    entries.push(Entry::field(
        1,
        "Memory",
        format_memory(resources.memory_bytes),
    ));
    if !resources.generic.is_empty() {
        entries.push(Entry::field(1, "Generic", generic_list(&resources.generic)));
    }
    entries.push(Entry::field(0, "Runtime", &node.description.runtime));
    listing(&entries)
}

/// `gpu=1, ssd=2`.
fn generic_list(generic: &std::collections::BTreeMap<String, u64>) -> String {
    generic
        .iter()
        .map(|(kind, count)| format!("{kind}={count}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// `info`, as `key: value` lines. Values the node does not have (no swarm yet) are left out.
pub fn info(info: &NodeInfo) -> String {
    let mut entries = Vec::new();
    if let Some(id) = &info.node_id {
        entries.push(Entry::field(0, "Node ID", id));
    }
    entries.extend([
        Entry::field(0, "Hostname", &info.hostname),
        Entry::field(0, "Address", &info.addr),
        Entry::field(
            0,
            "Swarm",
            match info.swarm {
                LocalSwarmState::Inactive => "inactive",
                LocalSwarmState::Active => "active",
            },
        ),
    ]);
    if let Some(id) = &info.cluster_id {
        entries.push(Entry::field(0, "Cluster ID", id));
    }
    entries.push(Entry::field(0, "Is Manager", info.is_manager.to_string()));
    if let Some(id) = &info.leader_id {
        entries.push(Entry::field(0, "Leader", id));
    }
    let expires = info
        .cert_not_after
        .map(|seconds| format!("expires {}", rfc3339_seconds(seconds)));
    let certificate: Vec<String> = info.cert_role.iter().cloned().chain(expires).collect();
    if !certificate.is_empty() {
        entries.push(Entry::field(0, "Certificate", certificate.join(", ")));
    }
    listing(&entries)
}

/// `swarm inspect --format table`. Join tokens are left out (`swarm join-token` shows them),
/// and so is the CA certificate: its fingerprint names it, the JSON holds it.
pub fn swarm(view: &SwarmView) -> String {
    let config = &view.config;
    let mut entries = vec![
        Entry::field(0, "ID", &view.id),
        Entry::field(0, "Created", rfc3339(view.created_at)),
        Entry::field(0, "Updated", rfc3339(view.updated_at)),
        Entry::field(0, "Version", view.version.to_string()),
        Entry::field(0, "CA fingerprint", &view.ca_fingerprint),
        Entry::field(
            0,
            "Dispatcher heartbeat",
            format_duration_ms(config.heartbeat_period_ms),
        ),
        Entry::field(
            0,
            "Node down after",
            format_duration_ms(config.node_down_after_ms()),
        ),
        Entry::field(
            0,
            "Task history limit",
            config.task_history_limit.to_string(),
        ),
        Entry::field(
            0,
            "Certificate expiry",
            format_duration_ms(config.cert_expiry_ms),
        ),
        Entry::field(
            0,
            "Default address pool",
            view.address_pool
                .pools
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Entry::field(
            0,
            "Subnet size",
            format!("/{}", view.address_pool.mask_length),
        ),
    ];
    if let Some(stage) = &view.ca_rotation {
        entries.push(Entry::field(0, "CA rotation", stage));
    }
    listing(&entries)
}

/// An ID as tables show it: its first 12 characters, as docker does.
pub fn short_id(id: &str) -> String {
    id.chars().take(12).collect()
}

/// Published ports as docker shows them: `*:8080->80/tcp`, comma separated.
pub fn ports(ports: &[PortConfig]) -> String {
    ports
        .iter()
        .map(|port| format!("*:{}->{}/{}", port.published, port.target, port.protocol))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The most of a service's problem `service ls` shows; `service ps` shows it whole.
const PROBLEM_WIDTH: usize = 80;

/// `running/desired`, and why not all run when a task says so: `0/1 (rejected: ...)`; a
/// job's completions too, as Docker shows them: `2/5 (3/5 completed)`.
fn replicas(view: &ServiceView) -> String {
    let mut counts = format!("{}/{}", view.running, view.desired);
    if view.service.spec.mode.is_job() {
        counts = format!("{counts} ({}/{} completed)", view.completed, view.desired);
    }
    match &view.problem {
        None => counts,
        Some(problem) if problem.chars().count() > PROBLEM_WIDTH => {
            let cut: String = problem.chars().take(PROBLEM_WIDTH - 1).collect();
            format!("{counts} ({cut}…)")
        }
        Some(problem) => format!("{counts} ({problem})"),
    }
}

/// The `service ls` table.
pub fn service_table(services: &[ServiceView]) -> String {
    let rows = services
        .iter()
        .map(|view| {
            let spec = &view.service.spec;
            vec![
                short_id(&view.service.id),
                spec.name.clone(),
                spec.mode.word().to_string(),
                replicas(view),
                spec.task.image.clone(),
                ports(&spec.ports),
            ]
        })
        .collect();
    toned_columns(
        &["ID", "NAME", "MODE", "REPLICAS", "IMAGE", "PORTS"],
        rows,
        |column, text| match (column, text.split_once('/')) {
            (3, Some((running, desired))) if running == desired => Tone::Good,
            (3, _) if text.ends_with(" completed)") => Tone::Busy,
            (3, _) if text.contains('(') => Tone::Bad,
            (3, _) => Tone::Busy,
            _ => Tone::Plain,
        },
    )
}

/// Which of a list's tasks `service ps` and `node ps` show.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shown {
    /// Every task, history included (`-a`, or a desired-state filter).
    All,
    /// The live tasks: meant to run, or not stopped yet.
    Live,
    /// The live tasks, and for a slot with none, its latest attempt, so that a slot whose
    /// task failed and waits for its restart delay shows why (`service ps` of a whole
    /// service). A slot scaled away shows nothing.
    LiveOrLatestAttempt,
}

/// The tasks `service ps` and `node ps` show, in their order, each with whether it is the
/// history of a slot (shown indented under the slot's newest task).
///
/// Tasks are grouped by slot (by node for global services), groups in slot order; in a group
/// the task meant to run comes first, then the others newest first. Dead history (desired
/// elsewhere than running, and stopped for good) is left out as `shown` says.
pub fn task_rows(tasks: &[TaskView], shown: Shown) -> Vec<(&TaskView, bool)> {
    let live = |view: &TaskView| {
        view.task.desired_state == TaskState::Running || !view.task.status.state.is_terminal()
    };
    let group = |view: &TaskView| {
        let task = &view.task;
        (
            task.service_id.clone(),
            task.slot.is_none(),
            task.slot.unwrap_or(0),
            if task.slot.is_none() {
                task.node_id.clone().unwrap_or_default()
            } else {
                String::new()
            },
        )
    };
    let mut shown: Vec<&TaskView> = match shown {
        Shown::All => tasks.iter().collect(),
        Shown::Live => tasks.iter().filter(|view| live(view)).collect(),
        Shown::LiveOrLatestAttempt => {
            let mut latest: std::collections::BTreeMap<_, &TaskView> = Default::default();
            for view in tasks {
                let newest = latest.entry(group(view)).or_insert(view);
                if (view.task.created_at, &view.task.id) > (newest.task.created_at, &newest.task.id)
                {
                    *newest = view;
                }
            }
            let with_live: std::collections::BTreeSet<_> =
                tasks.iter().filter(|view| live(view)).map(group).collect();
            tasks
                .iter()
                .filter(|view| {
                    live(view)
                        || (!with_live.contains(&group(view))
                            && view.task.desired_state != TaskState::Remove
                            && latest
                                .get(&group(view))
                                .is_some_and(|l| l.task.id == view.task.id))
                })
                .collect()
        }
    };
    shown.sort_by(|a, b| {
        group(a)
            .cmp(&group(b))
            .then_with(|| {
                let live = |view: &TaskView| view.task.desired_state != TaskState::Running;
                live(a).cmp(&live(b))
            })
            .then_with(|| b.task.created_at.cmp(&a.task.created_at))
            .then_with(|| a.task.id.cmp(&b.task.id))
    });
    let mut rows: Vec<(&TaskView, bool)> = Vec::with_capacity(shown.len());
    for view in shown {
        let history = rows
            .last()
            .is_some_and(|(previous, _)| group(previous) == group(view));
        rows.push((view, history));
    }
    rows
}

/// The `service ps` and `node ps` table.
pub fn task_table(tasks: &[TaskView], shown: Shown) -> String {
    let rows = task_rows(tasks, shown)
        .into_iter()
        .map(|(view, history)| {
            let task = &view.task;
            let name = if history {
                format!(" \\_ {}", view.name)
            } else {
                view.name.clone()
            };
            let mut current = capitalize(task.status.state.as_str());
            if task.status.state == TaskState::Pending && !task.status.message.is_empty() {
                current = format!("{current} ({})", task.status.message);
            }
            vec![
                short_id(&task.id),
                name,
                task.spec.image.clone(),
                view.node_hostname.clone().unwrap_or_default(),
                capitalize(task.desired_state.as_str()),
                current,
                task.status.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    toned_columns(
        &[
            "ID",
            "NAME",
            "IMAGE",
            "NODE",
            "DESIRED STATE",
            "CURRENT STATE",
            "ERROR",
        ],
        rows,
        |column, text| match column {
            1 if text.starts_with(' ') => Tone::Dim,
            5 => Tone::of_state(text),
            6 => Tone::Bad,
            _ => Tone::Plain,
        },
    )
}

/// The `network ls` table, as docker's with the subnet added.
pub fn network_table(networks: &[NetworkView]) -> String {
    let rows = networks
        .iter()
        .map(|view| {
            let network = &view.network;
            vec![
                short_id(&network.id),
                network.spec.name.clone(),
                network.spec.driver.to_string(),
                "swarm".to_string(),
                network.allocation.subnet.to_string(),
            ]
        })
        .collect();
    toned_columns(
        &["NETWORK ID", "NAME", "DRIVER", "SCOPE", "SUBNET"],
        rows,
        |_, _| Tone::Plain,
    )
}

/// `secret ls`, `config ls`.
pub fn file_table(files: &[FileView]) -> String {
    let rows = files
        .iter()
        .map(|view| {
            vec![
                short_id(&view.id),
                view.spec.name.clone(),
                rfc3339(view.created_at),
                rfc3339(view.updated_at),
            ]
        })
        .collect();
    toned_columns(&["ID", "NAME", "CREATED", "UPDATED"], rows, |_, _| {
        Tone::Plain
    })
}

/// `secret inspect --pretty`, `config inspect --pretty`, for one: a config's data as text,
/// a secret's never.
pub fn file_pretty(view: &FileView) -> String {
    let mut entries = vec![
        Entry::field(0, "ID", &view.id),
        Entry::field(0, "Name", &view.spec.name),
        Entry::field(0, "Created at", rfc3339(view.created_at)),
        Entry::field(0, "Updated at", rfc3339(view.updated_at)),
        Entry::field(0, "Size", format!("{} bytes", view.size)),
    ];
    labels_and_services(&mut entries, &view.spec.labels, &view.services);
    let mut text = listing(&entries);
    if let Some(data) = &view.data {
        text.push_str("Data:\n");
        match std::str::from_utf8(data) {
            Ok(data) => {
                text.push_str(data);
                if !data.ends_with('\n') {
                    text.push('\n');
                }
            }
            Err(_) => text.push_str(&format!("({} bytes that are not text)\n", data.len())),
        }
    }
    text
}

/// `network inspect --format table`, for one network.
pub fn network_pretty(view: &NetworkView) -> String {
    let network = &view.network;
    let allocation = &network.allocation;
    let mut entries = vec![
        Entry::field(0, "ID", &network.id),
        Entry::field(0, "Name", &network.spec.name),
        Entry::field(0, "Created", rfc3339(network.created_at)),
        Entry::field(0, "Driver", network.spec.driver.as_str()),
        Entry::field(0, "Scope", "swarm"),
        Entry::field(0, "Subnet", allocation.subnet.to_string()),
        Entry::field(0, "Gateway", allocation.gateway.to_string()),
        Entry::field(0, "VXLAN ID", allocation.vxlan_id.to_string()),
        Entry::field(0, "Attachable", network.spec.attachable.to_string()),
        Entry::field(0, "Tasks", view.tasks.to_string()),
        Entry::field(0, "Free addresses", view.free_addresses.to_string()),
    ];
    labels_and_services(&mut entries, &network.spec.labels, &view.services);
    listing(&entries)
}

/// The `Labels` and `Services` sections of an object's listing, each where it has any.
fn labels_and_services(
    entries: &mut Vec<Entry>,
    labels: &std::collections::BTreeMap<String, String>,
    services: &[String],
) {
    if !labels.is_empty() {
        entries.push(Entry::Section("Labels"));
        entries.extend(
            labels
                .iter()
                .map(|(key, value)| Entry::Item(format!("{key}={value}"))),
        );
    }
    if !services.is_empty() {
        entries.push(Entry::Section("Services"));
        entries.extend(services.iter().cloned().map(Entry::Item));
    }
}

/// `service inspect --pretty`, for one service.
pub fn service_pretty(view: &ServiceView) -> String {
    let service = &view.service;
    let spec = &service.spec;
    let task = &spec.task;
    let mut entries = vec![
        Entry::field(0, "ID", &service.id),
        Entry::field(0, "Name", &spec.name),
        Entry::field(0, "Created", rfc3339(service.created_at)),
        Entry::field(0, "Mode", capitalize(spec.mode.word())),
    ];
    match spec.mode {
        ServiceMode::Replicated { replicas } => {
            entries.push(Entry::field(1, "Replicas", replicas.to_string()));
        }
        ServiceMode::ReplicatedJob {
            completions,
            max_concurrent,
        } => {
            entries.push(Entry::field(1, "Completions", completions.to_string()));
            if max_concurrent > 0 {
                entries.push(Entry::field(
                    1,
                    "Max concurrent",
                    max_concurrent.to_string(),
                ));
            }
        }
        ServiceMode::Global | ServiceMode::GlobalJob => {}
    }
    if spec.mode.is_job() {
        entries.push(Entry::field(
            0,
            "Completed",
            format!("{}/{}", view.completed, view.desired),
        ));
    }
    entries.push(Entry::field(
        0,
        "Running",
        format!("{}/{}", view.running, view.desired),
    ));
    if let Some(problem) = &view.problem {
        entries.push(Entry::field(0, "Problem", problem));
    }
    entries.push(Entry::field(0, "Image", &task.image));
    if !task.args.is_empty() {
        entries.push(Entry::field(0, "Args", task.args.join(" ")));
    }
    let pairs = |map: &std::collections::BTreeMap<String, String>| {
        map.iter()
            .map(|(key, value)| Entry::Item(format!("{key}={value}")))
            .collect::<Vec<_>>()
    };
    container_entries(&task.container, &mut entries);
    if !task.mounts.is_empty() {
        entries.push(Entry::Section("Mounts"));
        entries.extend(task.mounts.iter().map(|m| Entry::Item(m.to_string())));
    }
    if !task.secrets.is_empty() {
        entries.push(Entry::Section("Secrets"));
        entries.extend(task.secrets.iter().map(|s| Entry::Item(s.to_string())));
    }
    if task.registry_auth.is_some() {
        entries.push(Entry::field(
            0,
            "Registry auth",
            "sent with the service (sealed)",
        ));
    }
    if !task.configs.is_empty() {
        entries.push(Entry::Section("Configs"));
        entries.extend(task.configs.iter().map(|c| Entry::Item(c.to_string())));
    }
    if !task.env.is_empty() {
        entries.push(Entry::Section("Env"));
        entries.extend(pairs(&task.env));
    }
    if !spec.labels.is_empty() {
        entries.push(Entry::Section("Labels"));
        entries.extend(pairs(&spec.labels));
    }
    if !task.constraints.is_empty() {
        entries.push(Entry::Section("Constraints"));
        entries.extend(task.constraints.iter().cloned().map(Entry::Item));
    }
    if !task.spread.is_empty() {
        entries.push(Entry::Section("Spread"));
        entries.extend(task.spread.iter().cloned().map(Entry::Item));
    }
    if task.max_replicas_per_node > 0 {
        entries.push(Entry::field(
            0,
            "Max replicas per node",
            task.max_replicas_per_node.to_string(),
        ));
    }
    let resources = &task.resources;
    let reserved = resources.reserve_nano_cpus > 0
        || resources.reserve_memory_bytes > 0
        || !resources.generic.is_empty();
    let limited = resources.limit_nano_cpus > 0
        || resources.limit_memory_bytes > 0
        || resources.limit_pids > 0;
    if reserved || limited {
        entries.push(Entry::Section("Resources"));
        for (shown, title, cpus, memory) in [
            (
                reserved,
                "Reservations",
                resources.reserve_nano_cpus,
                resources.reserve_memory_bytes,
            ),
            (
                limited,
                "Limits",
                resources.limit_nano_cpus,
                resources.limit_memory_bytes,
            ),
        ] {
            if !shown {
                continue;
            }
            entries.push(Entry::field(1, title, ""));
            if cpus > 0 {
                entries.push(Entry::field(2, "CPU", format_cpus(cpus)));
            }
            if memory > 0 {
                entries.push(Entry::field(2, "Memory", format_memory(memory)));
            }
            if title == "Reservations" && !resources.generic.is_empty() {
                entries.push(Entry::field(2, "Generic", generic_list(&resources.generic)));
            } else if title == "Limits" && resources.limit_pids > 0 {
                entries.push(Entry::field(2, "PIDs", resources.limit_pids.to_string()));
            }
        }
    }
    let restart = &task.restart_policy;
    entries.extend([
        Entry::Section("Restart policy"),
        Entry::field(1, "Condition", restart.condition.as_str()),
        Entry::field(1, "Delay", format_duration_ms(restart.delay_ms)),
        Entry::field(1, "Max attempts", restart.max_attempts.to_string()),
        Entry::field(1, "Window", format_duration_ms(restart.window_ms)),
        Entry::field(
            0,
            "Stop grace period",
            format_duration_ms(task.stop_grace_period_ms),
        ),
    ]);
    if let Some(check) = &task.healthcheck {
        entries.push(Entry::Section("Healthcheck"));
        match check.test.as_slice() {
            [none] if none == "NONE" => entries.push(Entry::Item("disabled".to_string())),
            [shell, command] if shell == "CMD-SHELL" => {
                entries.push(Entry::field(1, "Command", command));
            }
            [] => entries.push(Entry::field(1, "Command", "(the image's)")),
            test => entries.push(Entry::field(1, "Command", test.join(" "))),
        }
        let durations = [
            ("Interval", check.interval_ms),
            ("Timeout", check.timeout_ms),
            ("Start period", check.start_period_ms),
        ];
        for (title, ms) in durations.into_iter().filter(|(_, ms)| *ms > 0) {
            entries.push(Entry::field(1, title, format_duration_ms(ms)));
        }
        if check.retries > 0 {
            entries.push(Entry::field(1, "Retries", check.retries.to_string()));
        }
    }
    if !task.networks.is_empty() {
        entries.push(Entry::field(
            0,
            "Endpoint Mode",
            spec.endpoint_mode.as_str(),
        ));
        entries.push(Entry::Section("Networks"));
        entries.extend(task.networks.iter().map(|network| {
            let vip = service
                .virtual_ips
                .iter()
                .find(|vip| vip.network == network.target)
                .map(|vip| format!(" (virtual IP {})", vip.address))
                .unwrap_or_default();
            let aliases = if network.aliases.is_empty() {
                String::new()
            } else {
                format!(", aliases {}", network.aliases.join(", "))
            };
            Entry::Item(format!("{}{vip}{aliases}", network.target))
        }));
    }
    if !spec.ports.is_empty() {
        entries.push(Entry::Section("Ports"));
        entries.extend(spec.ports.iter().map(|port| {
            Entry::Item(format!(
                "PublishedPort = {}, TargetPort = {}, Protocol = {}, PublishMode = {}",
                port.published, port.target, port.protocol, port.mode
            ))
        }));
    }
    for (title, config) in [
        ("UpdateConfig", &spec.update_config),
        ("RollbackConfig", &spec.rollback_config),
    ] {
        entries.push(Entry::Section(title));
        entries.extend(update_config_entries(config));
    }
    if let Some(status) = &service.update_status {
        entries.extend([
            Entry::Section("UpdateStatus"),
            Entry::field(1, "State", status.state.as_str()),
            Entry::field(1, "Started", rfc3339(status.started_at)),
        ]);
        if let Some(at) = status.completed_at {
            entries.push(Entry::field(1, "Completed", rfc3339(at)));
        }
        entries.push(Entry::field(
            1,
            "Updated",
            format!("{} of {}", status.updated, view.desired),
        ));
        if status.failures > 0 {
            entries.push(Entry::field(1, "Failures", status.failures.to_string()));
        }
        if let Some(at) = status.pause_at {
            entries.push(Entry::field(1, "Checkpoint", format!("at {at} tasks")));
        }
        if !status.message.is_empty() {
            entries.push(Entry::field(1, "Message", &status.message));
        }
    }
    listing(&entries)
}

/// The lines of `--update-*` (or `--rollback-*`) settings, as `docker service inspect
/// --pretty` shows them.
fn update_config_entries(config: &essaim_core::model::UpdateConfig) -> Vec<Entry> {
    let mut entries = vec![
        Entry::field(1, "Parallelism", config.parallelism.to_string()),
        Entry::field(1, "Delay", format_duration_ms(config.delay_ms)),
        Entry::field(1, "On failure", config.failure_action.as_str()),
        Entry::field(
            1,
            "Monitoring Period",
            format_duration_ms(config.monitor_ms),
        ),
        Entry::field(
            1,
            "Max failure ratio",
            format!("{}", config.max_failure_ratio_permille as f64 / 1000.0),
        ),
        Entry::field(1, "Update order", config.order.as_str()),
    ];
    if let Some(checkpoint) = &config.pause_after {
        entries.push(Entry::field(1, "Pause after", checkpoint.to_string()));
    }
    entries
}

/// The instructions `swarm init` and `swarm join-token` give for adding a node.
pub fn join_instructions(role: Role, token: &str, manager_addr: &str) -> String {
    let article = match role {
        Role::Worker => "a worker",
        Role::Manager => "a manager",
    };
    format!(
        "To add {article} to this swarm, run the following command:\n\
         \n    essaim swarm join --token {token} {manager_addr}\n"
    )
}

/// The first letter in upper case: `ready` becomes `Ready`, as docker shows states.
pub fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// A timestamp as RFC 3339 in UTC, to the second: `2023-11-14T22:13:20Z`.
pub fn rfc3339(timestamp: Timestamp) -> String {
    let seconds = timestamp.0 / 1000;
    let (year, month, day) = civil_from_days(seconds / 86_400);
    let time = seconds % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        time / 3600,
        time % 3600 / 60,
        time % 60
    )
}

/// Seconds since the epoch (as certificates count) as RFC 3339; instants before the epoch,
/// which no certificate of ours has, show as the epoch.
pub fn rfc3339_seconds(seconds: i64) -> String {
    let millis = u64::try_from(seconds).unwrap_or(0).saturating_mul(1000);
    rfc3339(Timestamp(millis))
}

/// The proleptic Gregorian date `days` after 1970-01-01, after Howard Hinnant's
/// `civil_from_days` (restricted to dates on or after the epoch, all a `Timestamp` can hold).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Count from 0000-03-01, so that the leap day ends each 400-year era's years.
    let shifted = days + 719_468;
    let era = shifted / 146_097;
    let day_of_era = shifted % 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    // Months from March: 0 is March, 11 is February.
    let month_from_march = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_from_march + 2) / 5 + 1;
    let month = if month_from_march < 10 {
        month_from_march + 3
    } else {
        month_from_march - 9
    };
    let year = era * 400 + year_of_era + u64::from(month <= 2);
    (year, month, day)
}

/// One line of a `key: value` listing.
enum Entry {
    /// `key: value`, indented by `indent` spaces (1 inside a section).
    Field(usize, &'static str, String),
    /// A heading for the indented fields or items that follow.
    Section(&'static str),
    /// ` - text`, a list element inside a section.
    Item(String),
}

impl Entry {
    fn field(indent: usize, key: &'static str, value: impl Into<String>) -> Entry {
        Entry::Field(indent, key, value.into())
    }
}

/// The container options that are set, as `docker service inspect --pretty` shows them.
fn container_entries(options: &ContainerOptions, entries: &mut Vec<Entry>) {
    let text = [
        ("Entrypoint", options.entrypoint.join(" ")),
        ("User", options.user.clone()),
        ("Groups", options.groups.join(", ")),
        ("Dir", options.workdir.clone()),
        ("Hostname", options.hostname.clone()),
        ("Stop signal", options.stop_signal.clone()),
        ("Capabilities added", options.cap_add.join(", ")),
        ("Capabilities dropped", options.cap_drop.join(", ")),
    ];
    for (title, value) in text {
        if !value.is_empty() {
            entries.push(Entry::field(0, title, value));
        }
    }
    for (title, on) in [
        ("Init", options.init),
        ("Read only", options.read_only),
        ("TTY", options.tty),
    ] {
        if on {
            entries.push(Entry::field(0, title, "true"));
        }
    }
    let dns = !options.dns.is_empty()
        || !options.dns_search.is_empty()
        || !options.dns_options.is_empty();
    if dns {
        entries.push(Entry::Section("DNS"));
        let lists = [
            ("Name servers", join(&options.dns)),
            ("Search", options.dns_search.join(", ")),
            ("Options", options.dns_options.join(", ")),
        ];
        for (title, value) in lists {
            if !value.is_empty() {
                entries.push(Entry::field(1, title, value));
            }
        }
    }
    if !options.hosts.is_empty() {
        entries.push(Entry::Section("Hosts"));
        entries.extend(options.hosts.iter().map(|h| Entry::Item(h.to_string())));
    }
    if !options.labels.is_empty() {
        entries.push(Entry::Section("Container labels"));
        entries.extend(
            options
                .labels
                .iter()
                .map(|(key, value)| Entry::Item(format!("{key}={value}"))),
        );
    }
}

fn join(items: &[impl std::fmt::Display]) -> String {
    items
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

/// Lines up the values of a listing in one column, two spaces after the longest key.
fn listing(entries: &[Entry]) -> String {
    let width = entries
        .iter()
        .map(|entry| match entry {
            Entry::Field(indent, key, _) => indent + key.len() + 1,
            Entry::Section(_) | Entry::Item(_) => 0,
        })
        .max()
        .unwrap_or(0)
        + 2;
    let mut text = String::new();
    for entry in entries {
        let line = match entry {
            Entry::Field(indent, key, value) => {
                let label = format!("{:indent$}{key}:", "");
                format!("{label:width$}{value}")
            }
            Entry::Section(key) => format!("{key}:"),
            Entry::Item(item) => format!(" - {item}"),
        };
        text.push_str(line.trim_end());
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use essaim_api::control::ManagerStatus;
    use essaim_core::model::{
        Availability, ClusterConfig, Node, NodeDescription, NodeSpec, NodeState, NodeStatus,
    };

    use super::*;

    mod failing_services {
        use super::*;
        use crate::commands::service::tests::{service_view, task};

        fn rejected(id: &str, slot: u64, at: u64, desired: TaskState) -> TaskView {
            let mut view = task(id, slot, at, desired, TaskState::Rejected, "rejected");
            view.task.status.error = Some("image nginx not found on node w1".to_string());
            view
        }

        #[test]
        fn a_slot_with_no_live_task_shows_its_latest_attempt_and_why() {
            // Slot 1 waits for its restart delay: both attempts were rejected and are shut
            // down. Slot 2 runs. Slot 3 was scaled away.
            let tasks = vec![
                rejected("first-1", 1, 100, TaskState::Shutdown),
                rejected("second-1", 1, 200, TaskState::Shutdown),
                task("live-2", 2, 150, TaskState::Running, TaskState::Running, ""),
                task("gone-3", 3, 120, TaskState::Remove, TaskState::Shutdown, ""),
            ];
            let ids = |shown| -> Vec<&str> {
                task_rows(&tasks, shown)
                    .into_iter()
                    .map(|(view, _)| view.task.id.as_str())
                    .collect()
            };
            assert_eq!(ids(Shown::LiveOrLatestAttempt), vec!["second-1", "live-2"]);
            assert_eq!(ids(Shown::Live), vec!["live-2"]);
            let table = task_table(&tasks, Shown::LiveOrLatestAttempt);
            assert!(table.contains("Rejected"), "{table}");
            assert!(
                table.contains("image nginx not found on node w1"),
                "{table}"
            );
        }

        #[test]
        fn service_ls_says_why_a_service_is_short() {
            let mut failing = service_view("s1", "web", 0, 1);
            failing.problem = Some("rejected: image nginx not found on node w1".to_string());
            let table = service_table(&[failing.clone(), service_view("s2", "api", 2, 2)]);
            assert!(
                table.contains("0/1 (rejected: image nginx not found on node w1)"),
                "{table}"
            );
            assert!(table.contains("2/2 "), "{table}");
            failing.problem = Some(format!("failed: {}", "x".repeat(200)));
            let long = service_table(&[failing]);
            assert!(long.contains("…)"), "a long reason is cut: {long}");
        }
    }

    fn view(
        id: &str,
        hostname: &str,
        state: NodeState,
        availability: Availability,
        manager: Option<(bool, Reachability)>,
    ) -> NodeView {
        NodeView {
            node: Node {
                id: id.to_string(),
                version: 7,
                created_at: Timestamp(1_700_000_000_000),
                updated_at: Timestamp(1_700_000_000_000),
                raft_id: 1,
                ingress: None,
                spec: NodeSpec {
                    role: if manager.is_some() {
                        Role::Manager
                    } else {
                        Role::Worker
                    },
                    availability,
                    labels: BTreeMap::from([
                        ("zone".to_string(), "a".to_string()),
                        ("ssd".to_string(), String::new()),
                    ]),
                },
                description: NodeDescription {
                    hostname: hostname.to_string(),
                    addr: format!("{hostname}:4242"),
                    os: "linux".to_string(),
                    arch: "x86_64".to_string(),
                    ..NodeDescription::default()
                },
                status: NodeStatus {
                    state,
                    message: String::new(),
                },
            },
            manager_status: manager.map(|(leader, reachability)| ManagerStatus {
                leader,
                reachability,
                addr: format!("{hostname}:4242"),
            }),
        }
    }

    fn cluster_of_three() -> Vec<NodeView> {
        vec![
            view(
                "aaaa1",
                "m1",
                NodeState::Ready,
                Availability::Active,
                Some((true, Reachability::Reachable)),
            ),
            view(
                "bbbb2",
                "m2",
                NodeState::Ready,
                Availability::Drain,
                Some((false, Reachability::Reachable)),
            ),
            view("cccc3", "w1", NodeState::Down, Availability::Pause, None),
        ]
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(Timestamp(0)), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(Timestamp(951_782_400_000)), "2000-02-29T00:00:00Z");
        assert_eq!(
            rfc3339(Timestamp(1_700_000_000_123)),
            "2023-11-14T22:13:20Z"
        );
        assert_eq!(
            rfc3339(Timestamp(1_709_251_199_999)),
            "2024-02-29T23:59:59Z"
        );
        assert_eq!(
            rfc3339(Timestamp(4_102_444_799_000)),
            "2099-12-31T23:59:59Z"
        );
    }

    #[test]
    fn rfc3339_survives_the_largest_timestamp() {
        assert!(rfc3339(Timestamp(u64::MAX)).ends_with('Z'));
    }

    #[test]
    fn node_table_has_docker_columns_the_local_marker_and_manager_labels() {
        let text = node_table(&cluster_of_three(), Some("bbbb2"));
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 4, "{text}");
        assert_eq!(
            lines[0],
            "ID        HOSTNAME   STATUS   AVAILABILITY   MANAGER STATUS"
        );
        assert_eq!(
            lines[1],
            "aaaa1     m1         Ready    Active         Leader"
        );
        assert_eq!(
            lines[2],
            "bbbb2 *   m2         Ready    Drain          Reachable"
        );
        assert_eq!(lines[3], "cccc3     w1         Down     Pause");
        assert!(!text.contains('\u{1b}'), "no escape codes: {text:?}");
    }

    #[test]
    fn an_empty_node_table_still_has_its_header() {
        assert_eq!(
            node_table(&[], None),
            "ID   HOSTNAME   STATUS   AVAILABILITY   MANAGER STATUS\n"
        );
    }

    #[test]
    fn node_pretty_lists_sections_with_aligned_values() {
        let nodes = cluster_of_three();
        let text = node_pretty(&nodes[0]);
        assert!(text.starts_with("ID:                 aaaa1\n"), "{text}");
        assert!(
            text.contains("Joined at:          2023-11-14T22:13:20Z\n"),
            "{text}"
        );
        assert!(
            text.contains("Manager Status:\n Address:           m1:4242\n Raft Status:       Reachable\n Leader:            Yes\n"),
            "{text}"
        );
        assert!(text.contains("Labels:\n - ssd\n - zone=a\n"), "{text}");
        assert!(!text.contains("Message"), "empty message hidden: {text}");

        let worker = node_pretty(&nodes[2]);
        assert!(!worker.contains("Manager Status"), "{worker}");
        assert!(worker.contains("Role:"), "{worker}");
    }

    fn swarm_view() -> SwarmView {
        SwarmView {
            id: "c1".to_string(),
            version: 9,
            created_at: Timestamp(1_700_000_000_000),
            updated_at: Timestamp(1_709_251_199_999),
            config: ClusterConfig {
                heartbeat_period_ms: 5000,
                heartbeat_misses_before_down: 3,
                task_history_limit: 5,
                cert_expiry_ms: 2160 * 3_600_000,
            },
            ca_fingerprint: "ab12".to_string(),
            ca_cert_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"
                .to_string(),
            ca_rotation: None,
            address_pool: Default::default(),
        }
    }

    #[test]
    fn the_swarm_listing_shows_settings_and_never_the_ca_certificate() {
        let text = swarm(&swarm_view());
        assert_eq!(
            text,
            "ID:                    c1\n\
             Created:               2023-11-14T22:13:20Z\n\
             Updated:               2024-02-29T23:59:59Z\n\
             Version:               9\n\
             CA fingerprint:        ab12\n\
             Dispatcher heartbeat:  5s\n\
             Node down after:       15s\n\
             Task history limit:    5\n\
             Certificate expiry:    2160h\n\
             Default address pool:  10.0.0.0/8\n\
             Subnet size:           /24\n"
        );
        assert!(!text.contains("BEGIN CERTIFICATE"), "{text}");
        let rotating = SwarmView {
            ca_rotation: Some("trusting".to_string()),
            ..swarm_view()
        };
        assert!(
            swarm(&rotating).ends_with("CA rotation:           trusting\n"),
            "{}",
            swarm(&rotating)
        );
        // The JSON, for programs, keeps it.
        let json = json(&swarm_view()).expect("JSON");
        assert!(json.contains("BEGIN CERTIFICATE"), "{json}");
    }

    fn node_info() -> NodeInfo {
        NodeInfo {
            node_id: Some("n1".to_string()),
            hostname: "m1".to_string(),
            addr: "10.0.0.1:4242".to_string(),
            swarm: LocalSwarmState::Active,
            cluster_id: Some("c1".to_string()),
            is_manager: true,
            leader_id: Some("n1".to_string()),
            cert_role: Some("manager".to_string()),
            cert_not_after: Some(1_700_000_000),
        }
    }

    #[test]
    fn info_shows_the_certificate_role_and_expiry() {
        let text = info(&node_info());
        assert!(
            text.ends_with("Certificate:  manager, expires 2023-11-14T22:13:20Z\n"),
            "{text}"
        );
        let without = NodeInfo {
            cert_role: None,
            cert_not_after: None,
            ..node_info()
        };
        assert!(!info(&without).contains("Certificate"));
        // JSON shows the fields as they are.
        let json = json(&node_info()).expect("JSON");
        assert!(json.contains("\"cert_not_after\": 1700000000"), "{json}");
    }

    #[test]
    fn join_instructions_read_like_docker() {
        assert_eq!(
            join_instructions(Role::Manager, "SWMTKN-1-x-y", "10.0.0.1:4242"),
            "To add a manager to this swarm, run the following command:\n\n    \
             essaim swarm join --token SWMTKN-1-x-y 10.0.0.1:4242\n"
        );
    }

    #[test]
    fn errors_print_on_one_line() {
        let error = anyhow::anyhow!("second line\nthird").context("first");
        assert_eq!(error_line(&error), "first: second line third");
    }
}
