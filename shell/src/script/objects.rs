//! Nodes, services and tasks as Rhai objects. Each object is a snapshot of what the cluster
//! said when it was read; `refresh()` reads it again. A change sends the version it read,
//! so a change made by someone else meanwhile is a conflict the script can catch and retry.

use std::rc::Rc;
use std::time::Duration;

use essaim_api::control::{NodeView, ServiceView, TaskView};
use essaim_core::model::{Availability, Role, TaskState};
use rhai::{Array, Dynamic, Engine, EvalAltResult, Map, NativeCallContext};

use super::{flags, value};
use crate::client::NodeChanges;
use crate::connection::Connection;
use crate::render;

pub type Fallible<T> = Result<T, Box<EvalAltResult>>;

/// An object as a table row: columns in the order they are shown.
pub type Row = Vec<(&'static str, String)>;

/// The row of an object, if `value` is one.
pub fn row_of(value: &Dynamic) -> Option<Row> {
    if let Some(node) = value.read_lock::<Node>() {
        return Some(node.row());
    }
    if let Some(service) = value.read_lock::<Service>() {
        return Some(service.row());
    }
    value.read_lock::<Task>().map(|task| task.row())
}

/// A failure of a call, as a Rhai error the script can catch.
pub fn failed(error: impl std::fmt::Display) -> Box<EvalAltResult> {
    Box::new(EvalAltResult::ErrorRuntime(
        Dynamic::from(error.to_string()),
        rhai::Position::NONE,
    ))
}

/// An error of essaim's as `catch` gives it, with the facts an uncaught one shows: a map of
/// `message`, `source` (the script), `line` and `column` of the call, and `suggestion` (what
/// "did you mean" offers, or `()`). Rhai keeps no place with the value it hands to `catch`, so
/// each call adds its own here.
pub fn at<T>(context: &NativeCallContext, call: impl FnOnce() -> Fallible<T>) -> Fallible<T> {
    call().map_err(|error| match *error {
        EvalAltResult::ErrorRuntime(value, position) if value.is_string() => {
            let message = value.to_string();
            let place = context.call_position();
            let number = |n: Option<usize>| {
                n.and_then(|n| i64::try_from(n).ok())
                    .map_or(Dynamic::UNIT, Dynamic::from)
            };
            let suggestion = message
                .split_once("did you mean ")
                .and_then(|(_, rest)| rest.split('?').next())
                .map(|name| name.trim_matches('"').to_string());
            let mut map = Map::new();
            map.insert("message".into(), message.into());
            map.insert(
                "source".into(),
                context
                    .call_source()
                    .map_or(Dynamic::UNIT, |source| source.to_string().into()),
            );
            map.insert("line".into(), number(place.line()));
            map.insert("column".into(), number(place.position()));
            map.insert(
                "suggestion".into(),
                suggestion.map_or(Dynamic::UNIT, Dynamic::from),
            );
            Box::new(EvalAltResult::ErrorRuntime(map.into(), position))
        }
        other => Box::new(other),
    })
}

/// Passes errors that must end the script (Ctrl-C, deadline) as termination, the rest as
/// catchable errors.
pub fn from_anyhow(error: anyhow::Error) -> Box<EvalAltResult> {
    let stop = if error.is::<crate::Interrupted>() {
        Some(super::Stop::Interrupted)
    } else if let Some(late) = error.downcast_ref::<crate::TimedOut>() {
        Some(super::Stop::TimedOut(late.0.clone()))
    } else {
        error
            .downcast_ref::<crate::connection::LockLost>()
            .map(|lost| super::Stop::LockLost(lost.0.clone()))
    };
    match stop {
        Some(stop) => Box::new(EvalAltResult::ErrorTerminated(
            Dynamic::from(stop),
            rhai::Position::NONE,
        )),
        None => failed(script_words(&render::error_line(&error))),
    }
}

/// Advice in a script's words: the function to call, not the command to type.
pub fn script_words(message: &str) -> String {
    const ADVICE: [(&str, &str); 4] = [
        ("'essaim service update --continue ", "continue_update()"),
        ("'essaim service rollback ", "rollback()"),
        ("'essaim service ps ", "tasks()"),
        ("'essaim service wait ", "wait_converged()"),
    ];
    let mut text = message.to_string();
    for (command, function) in ADVICE {
        while let Some(at) = text.find(command) {
            let end = text[at + 1..]
                .find('\'')
                .map_or(text.len(), |quote| at + quote + 2);
            text.replace_range(at..end, function);
        }
    }
    text
}

/// Tasks in the order scripts list them: by service, then slot (or node), newest first.
pub fn sort_tasks(tasks: &mut [TaskView]) {
    tasks.sort_by(|a, b| {
        (&a.task.service_name, a.task.slot, &a.node_hostname)
            .cmp(&(&b.task.service_name, b.task.slot, &b.node_hostname))
            .then(b.task.created_at.cmp(&a.task.created_at))
    });
}

/// How a wait for a service ended, as `wait_update` says it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Converged,
    Checkpoint,
    Paused,
    RolledBack,
    Timeout,
}

impl Outcome {
    fn word(self) -> &'static str {
        match self {
            Outcome::Converged => "converged",
            Outcome::Checkpoint => "checkpoint",
            Outcome::Paused => "paused",
            Outcome::RolledBack => "rolled_back",
            Outcome::Timeout => "timeout",
        }
    }
}

#[derive(Clone)]
pub struct Node {
    pub view: NodeView,
    conn: Rc<Connection>,
}

#[derive(Clone)]
pub struct Service {
    pub view: ServiceView,
    conn: Rc<Connection>,
}

#[derive(Clone)]
pub struct Task {
    pub view: TaskView,
}

impl Node {
    pub fn new(view: NodeView, conn: Rc<Connection>) -> Node {
        Node { view, conn }
    }

    fn name(&self) -> String {
        self.view.node.description.hostname.clone()
    }

    /// A change to this node, sent with the version read; the snapshot becomes the new one.
    fn change(&mut self, changes: NodeChanges, what: String) -> Fallible<()> {
        let read = self.view.clone();
        let fresh = self
            .conn
            .block_on(async |client| {
                client
                    .node_update(&read, changes, Some(read.node.version))
                    .await?;
                Ok(client.node_inspect(&read.node.id).await?)
            })
            .map_err(from_anyhow)?;
        self.view = fresh;
        self.conn.record(what);
        Ok(())
    }

    fn availability(&mut self, availability: Availability) -> Fallible<()> {
        let what = format!("set node {} to {}", self.name(), availability.as_str());
        self.change(
            NodeChanges {
                availability: Some(availability),
                ..NodeChanges::default()
            },
            what,
        )
    }

    pub fn row(&self) -> Row {
        let node = &self.view.node;
        vec![
            ("ID", render::short_id(&node.id)),
            ("HOSTNAME", node.description.hostname.clone()),
            ("STATUS", node.status.state.as_str().to_string()),
            ("AVAILABILITY", node.spec.availability.as_str().to_string()),
            ("ROLE", node.spec.role.as_str().to_string()),
            (
                "MANAGER",
                self.view
                    .manager_status
                    .as_ref()
                    .map_or(String::new(), |status| status.label().to_string()),
            ),
        ]
    }
}

impl Service {
    pub fn new(view: ServiceView, conn: Rc<Connection>) -> Service {
        Service { view, conn }
    }

    fn name(&self) -> String {
        self.view.service.spec.name.clone()
    }

    fn tasks(&self) -> Fallible<Vec<TaskView>> {
        let id = self.view.service.id.clone();
        let mut tasks = self
            .conn
            .block_on(async |client| Ok(client.task_list(Some(&id), None).await?))
            .map_err(from_anyhow)?;
        sort_tasks(&mut tasks);
        Ok(tasks)
    }

    /// Waits for the service as `operation` says, and tells how it ended: converged, at a
    /// checkpoint, paused for failures, rolled back, or `timeout` ran out.
    fn wait(
        &mut self,
        what: &str,
        timeout: &Dynamic,
        operation: crate::converge::Operation,
    ) -> Fallible<Outcome> {
        use essaim_core::model::UpdateState;
        let limit = super::api::duration_ms(what, timeout).map_err(failed)?;
        let name = self.view.service.id.clone();
        let result = self.conn.block_on(async |client| {
            let (mut out, mut err) = (std::io::sink(), std::io::sink());
            let mut quiet = crate::render::Output::new(&mut out, &mut err);
            crate::converge::wait(
                client,
                &name,
                Some(Duration::from_millis(limit)),
                operation,
                &mut quiet,
            )
            .await
        });
        let timed_out = match result {
            Ok(()) => false,
            Err(error) if error.is::<crate::TimedOut>() => {
                // The script's own deadline ends it; the wait's own timeout is an answer.
                if self.conn.past_deadline().is_some() {
                    return Err(from_anyhow(error));
                }
                true
            }
            // An update that paused for failures or rolled back is an answer; a slot that
            // keeps failing otherwise is an error.
            Err(error) if error.is::<crate::converge::NotConverged>() => {
                self.reread()?;
                let state = self.view.service.update_status.as_ref().map(|s| s.state);
                return match state {
                    Some(UpdateState::Paused | UpdateState::RollbackPaused) => Ok(Outcome::Paused),
                    Some(UpdateState::RollbackCompleted) => Ok(Outcome::RolledBack),
                    _ => Err(from_anyhow(error)),
                };
            }
            Err(error) => return Err(from_anyhow(error)),
        };
        self.reread()?;
        let status = self.view.service.update_status.as_ref();
        Ok(
            match status.map(|s| (s.state, s.pause_at == Some(s.updated))) {
                _ if timed_out => Outcome::Timeout,
                Some((UpdateState::Paused | UpdateState::RollbackPaused, true)) => {
                    Outcome::Checkpoint
                }
                Some((UpdateState::Paused | UpdateState::RollbackPaused, false)) => Outcome::Paused,
                Some((UpdateState::RollbackCompleted, _))
                    if operation == crate::converge::Operation::Update =>
                {
                    Outcome::RolledBack
                }
                _ => Outcome::Converged,
            },
        )
    }

    /// The service's tasks that run now and say how busy they are.
    fn running_usage(&self) -> Fallible<Vec<essaim_api::control::TaskUsage>> {
        Ok(self
            .tasks()?
            .into_iter()
            .filter(|view| {
                view.task.desired_state == TaskState::Running
                    && view.task.status.state == TaskState::Running
            })
            .filter_map(|view| view.usage)
            .collect())
    }

    /// Reads the service again.
    fn reread(&mut self) -> Fallible<()> {
        let id = self.view.service.id.clone();
        self.view = self
            .conn
            .block_on(async |client| Ok(client.service_inspect(&id).await?))
            .map_err(from_anyhow)?;
        Ok(())
    }

    /// Goes on with a paused update, to the next checkpoint or to the end.
    fn resume(&mut self, pause_after: Option<essaim_core::model::Checkpoint>) -> Fallible<()> {
        // A percentage is a share of the replicas: it needs the count updated so far.
        self.reread()?;
        let pause_after = pause_after.map(|checkpoint| {
            crate::commands::service_update::share_of_replicas(&self.view, checkpoint)
        });
        let id = self.view.service.id.clone();
        self.view = self
            .conn
            .block_on(async |client| Ok(client.service_update_continue(&id, pause_after).await?))
            .map_err(from_anyhow)?;
        self.conn
            .record(format!("continued the update of {}", self.name()));
        Ok(())
    }

    /// Runs `service update FLAGS` on this service as read, and takes the new snapshot.
    fn update_with(&mut self, flags: Vec<String>, what: String) -> Fallible<()> {
        let read = self.view.clone();
        let (changes, settings) =
            flags::service_changes(flags, &read.service.id).map_err(failed)?;
        let mut spec =
            crate::commands::service_update::apply(&read.service.spec, &changes).map_err(failed)?;
        settings.apply(&mut spec.update_config, &mut spec.rollback_config);
        let view = self
            .conn
            .block_on(async |client| Ok(client.service_update(&read, spec).await?))
            .map_err(from_anyhow)?;
        self.view = view;
        self.conn.record(what);
        Ok(())
    }

    pub fn row(&self) -> Row {
        let view = &self.view;
        let spec = &view.service.spec;
        vec![
            ("ID", render::short_id(&view.service.id)),
            ("NAME", spec.name.clone()),
            ("MODE", spec.mode.word().to_string()),
            ("REPLICAS", format!("{}/{}", view.running, view.desired)),
            ("IMAGE", spec.task.image.clone()),
        ]
    }
}

impl Task {
    pub fn row(&self) -> Row {
        let task = &self.view.task;
        vec![
            ("ID", render::short_id(&task.id)),
            ("NAME", self.view.name.clone()),
            ("NODE", self.view.node_hostname.clone().unwrap_or_default()),
            ("DESIRED", task.desired_state.as_str().to_string()),
            ("STATE", task.status.state.as_str().to_string()),
            ("ERROR", task.status.error.clone().unwrap_or_default()),
        ]
    }
}

/// The rolling update as a map: `state`, `started_at`, `completed_at`, `message`, `updated`,
/// `failures`, `pause_at`, `can_rollback`; `state` is `"none"` before any update.
fn update_status(view: &ServiceView) -> Map {
    let mut map = Map::new();
    map.insert(
        "can_rollback".into(),
        view.service.previous_spec.is_some().into(),
    );
    let Some(status) = &view.service.update_status else {
        map.insert("state".into(), "none".into());
        return map;
    };
    map.insert("state".into(), status.state.as_str().into());
    map.insert(
        "started_at".into(),
        render::rfc3339(status.started_at).into(),
    );
    map.insert(
        "completed_at".into(),
        status
            .completed_at
            .map_or(Dynamic::UNIT, |at| render::rfc3339(at).into()),
    );
    map.insert("message".into(), status.message.clone().into());
    map.insert("updated".into(), int(status.updated).into());
    map.insert("failures".into(), int(status.failures).into());
    map.insert(
        "pause_at".into(),
        status.pause_at.map_or(Dynamic::UNIT, |at| int(at).into()),
    );
    map
}

fn int(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn opt_string(value: Option<String>) -> Dynamic {
    value.map_or(Dynamic::UNIT, Dynamic::from)
}

/// The fields each type has, for "did you mean" and for the documentation test.
pub const NODE_FIELDS: &[&str] = &[
    "id",
    "hostname",
    "role",
    "availability",
    "status",
    "message",
    "address",
    "labels",
    "leader",
    "reachable",
    "runtime",
    "version",
];
pub const SERVICE_FIELDS: &[&str] = &[
    "id",
    "name",
    "image",
    "mode",
    "replicas",
    "running",
    "problem",
    "spec",
    "labels",
    "version",
    "update_status",
    "created_at",
    "updated_at",
];
pub const TASK_FIELDS: &[&str] = &[
    "id",
    "name",
    "service",
    "image",
    "spec",
    "slot",
    "node",
    "node_id",
    "state",
    "desired_state",
    "message",
    "error",
    "exit_code",
    "created_at",
    "updated_at",
    "cpu",
    "memory",
];

/// Registers the three types, their fields and methods.
pub fn register(engine: &mut Engine) {
    register_node(engine);
    register_service(engine);
    register_task(engine);
}

fn register_node(engine: &mut Engine) {
    engine
        .register_type_with_name::<Node>("Node")
        .register_get("id", |n: &mut Node| n.view.node.id.clone())
        .register_get("hostname", |n: &mut Node| n.name())
        .register_get("role", |n: &mut Node| {
            n.view.node.spec.role.as_str().to_string()
        })
        .register_get("availability", |n: &mut Node| {
            n.view.node.spec.availability.as_str().to_string()
        })
        .register_get("status", |n: &mut Node| {
            n.view.node.status.state.as_str().to_string()
        })
        .register_get("message", |n: &mut Node| n.view.node.status.message.clone())
        .register_get("address", |n: &mut Node| {
            n.view.node.description.addr.clone()
        })
        .register_get("runtime", |n: &mut Node| {
            n.view.node.description.runtime.clone()
        })
        .register_get("labels", |n: &mut Node| {
            value::string_map(&n.view.node.spec.labels)
        })
        .register_get("leader", |n: &mut Node| {
            n.view.manager_status.as_ref().is_some_and(|s| s.leader)
        })
        .register_get("reachable", |n: &mut Node| {
            n.view
                .manager_status
                .as_ref()
                .is_some_and(|s| s.reachability == essaim_api::control::Reachability::Reachable)
        })
        .register_get("version", |n: &mut Node| int(n.view.node.version))
        .register_fn("to_string", |n: &mut Node| {
            format!(
                "Node({}, {}, {})",
                n.name(),
                n.view.node.spec.role.as_str(),
                n.view.node.status.state.as_str()
            )
        })
        .register_fn(
            "refresh",
            |context: NativeCallContext, n: &mut Node| -> Fallible<()> {
                at(&context, || -> Fallible<()> {
                    let id = n.view.node.id.clone();
                    n.view = n
                        .conn
                        .block_on(async |client| Ok(client.node_inspect(&id).await?))
                        .map_err(from_anyhow)?;
                    Ok(())
                })
            },
        )
        .register_fn(
            "tasks",
            |context: NativeCallContext, n: &mut Node| -> Fallible<Array> {
                at(&context, || -> Fallible<Array> {
                    let id = n.view.node.id.clone();
                    let mut tasks = n
                        .conn
                        .block_on(async |client| Ok(client.task_list(None, Some(&id)).await?))
                        .map_err(from_anyhow)?;
                    sort_tasks(&mut tasks);
                    Ok(tasks
                        .into_iter()
                        .map(|view| Dynamic::from(Task { view }))
                        .collect())
                })
            },
        )
        .register_fn(
            "drain",
            |context: NativeCallContext, n: &mut Node| -> Fallible<()> {
                at(&context, || -> Fallible<()> {
                    n.availability(Availability::Drain)
                })
            },
        )
        .register_fn(
            "pause",
            |context: NativeCallContext, n: &mut Node| -> Fallible<()> {
                at(&context, || -> Fallible<()> {
                    n.availability(Availability::Pause)
                })
            },
        )
        .register_fn(
            "activate",
            |context: NativeCallContext, n: &mut Node| -> Fallible<()> {
                at(&context, || -> Fallible<()> {
                    n.availability(Availability::Active)
                })
            },
        )
        .register_fn(
            "label",
            |context: NativeCallContext, n: &mut Node, key: &str, value: &str| -> Fallible<()> {
                at(&context, || -> Fallible<()> {
                    let what = format!("labelled node {} {key}={value}", n.name());
                    let mut changes = NodeChanges::default();
                    changes.label_add.insert(key.to_string(), value.to_string());
                    n.change(changes, what)
                })
            },
        )
        .register_fn(
            "unlabel",
            |context: NativeCallContext, n: &mut Node, key: &str| -> Fallible<()> {
                at(&context, || -> Fallible<()> {
                    let what = format!("removed label {key} of node {}", n.name());
                    let changes = NodeChanges {
                        label_rm: vec![key.to_string()],
                        ..NodeChanges::default()
                    };
                    n.change(changes, what)
                })
            },
        )
        .register_fn(
            "promote",
            |context: NativeCallContext, n: &mut Node| -> Fallible<()> {
                at(&context, || -> Fallible<()> {
                    let what = format!("promoted node {}", n.name());
                    n.change(
                        NodeChanges {
                            role: Some(Role::Manager),
                            ..NodeChanges::default()
                        },
                        what,
                    )
                })
            },
        )
        .register_fn(
            "demote",
            |context: NativeCallContext, n: &mut Node| -> Fallible<()> {
                at(&context, || -> Fallible<()> {
                    let what = format!("demoted node {}", n.name());
                    n.change(
                        NodeChanges {
                            role: Some(Role::Worker),
                            ..NodeChanges::default()
                        },
                        what,
                    )
                })
            },
        )
        .register_fn(
            "remove",
            |context: NativeCallContext, n: &mut Node| -> Fallible<()> {
                at(&context, || -> Fallible<()> {
                    let id = n.view.node.id.clone();
                    n.conn
                        .block_on(async |client| Ok(client.node_remove(&id, false).await?))
                        .map_err(from_anyhow)?;
                    n.conn.record(format!("removed node {}", n.name()));
                    Ok(())
                })
            },
        );
}

fn register_service(engine: &mut Engine) {
    engine
        .register_type_with_name::<Service>("Service")
        .register_get("id", |s: &mut Service| s.view.service.id.clone())
        .register_get("name", |s: &mut Service| s.name())
        .register_get("image", |s: &mut Service| {
            s.view.service.spec.task.image.clone()
        })
        .register_get("mode", |s: &mut Service| {
            s.view.service.spec.mode.word().to_string()
        })
        .register_get("replicas", |s: &mut Service| int(s.view.desired))
        .register_get("running", |s: &mut Service| int(s.view.running))
        // Why fewer tasks run than wanted, or () when nothing is wrong.
        .register_get("problem", |s: &mut Service| {
            s.view.problem.clone().map_or(Dynamic::UNIT, Dynamic::from)
        })
        .register_get("version", |s: &mut Service| int(s.view.service.version))
        .register_get("labels", |s: &mut Service| {
            value::string_map(&s.view.service.spec.labels)
        })
        .register_get("spec", |s: &mut Service| -> Fallible<Dynamic> {
            rhai::serde::to_dynamic(&s.view.service.spec)
        })
        .register_get("update_status", |s: &mut Service| update_status(&s.view))
        .register_get("created_at", |s: &mut Service| {
            render::rfc3339(s.view.service.created_at)
        })
        .register_get("updated_at", |s: &mut Service| {
            render::rfc3339(s.view.service.updated_at)
        })
        .register_fn("to_string", |s: &mut Service| {
            format!(
                "Service({}, {}/{} running)",
                s.name(),
                s.view.running,
                s.view.desired
            )
        })
        .register_fn(
            "refresh",
            |context: NativeCallContext, s: &mut Service| -> Fallible<()> {
                at(&context, || -> Fallible<()> { s.reread() })
            },
        )
        .register_fn(
            "tasks",
            |context: NativeCallContext, s: &mut Service| -> Fallible<Array> {
                at(&context, || -> Fallible<Array> {
                    Ok(s.tasks()?
                        .into_iter()
                        .map(|view| Dynamic::from(Task { view }))
                        .collect())
                })
            },
        )
        .register_fn(
            "scale",
            |context: NativeCallContext, s: &mut Service, replicas: i64| -> Fallible<()> {
                at(&context, || -> Fallible<()> {
                    let replicas = u64::try_from(replicas).map_err(|_| {
                        failed(format!("scale: replicas must be 0 or more, not {replicas}"))
                    })?;
                    // Already there: nothing to change, nothing to report as a change.
                    if matches!(s.view.service.spec.mode,
                essaim_core::model::ServiceMode::Replicated { replicas: now } if now == replicas)
                    {
                        return Ok(());
                    }
                    let what = format!("scaled {} from {} to {replicas}", s.name(), s.view.desired);
                    s.update_with(vec!["--replicas".into(), replicas.to_string()], what)
                })
            },
        )
        .register_fn(
            "update",
            |context: NativeCallContext, s: &mut Service, changes: Map| -> Fallible<()> {
                at(&context, || -> Fallible<()> {
                    let flags = flags::from_map("update", &changes).map_err(failed)?;
                    let what = format!("updated {} ({})", s.name(), value::describe_map(&changes));
                    s.update_with(flags, what)
                })
            },
        )
        .register_fn(
            "update",
            |context: NativeCallContext,
             s: &mut Service,
             changes: Map,
             config: Map|
             -> Fallible<()> {
                at(&context, || -> Fallible<()> {
                    let mut flags = flags::from_map("update", &changes).map_err(failed)?;
                    flags.extend(flags::update_config("update", &config).map_err(failed)?);
                    let what = format!(
                        "updated {} ({}; {})",
                        s.name(),
                        value::describe_map(&changes),
                        value::describe_map(&config)
                    );
                    s.update_with(flags, what)
                })
            },
        )
        .register_fn(
            "update_status",
            |context: NativeCallContext, s: &mut Service| -> Fallible<Dynamic> {
                at(&context, || -> Fallible<Dynamic> {
                    s.reread()?;
                    Ok(update_status(&s.view).into())
                })
            },
        )
        .register_fn(
            "continue_update",
            |context: NativeCallContext, s: &mut Service| -> Fallible<()> {
                at(&context, || -> Fallible<()> { s.resume(None) })
            },
        )
        .register_fn(
            "continue_update",
            |context: NativeCallContext, s: &mut Service, options: Map| -> Fallible<()> {
                at(&context, || -> Fallible<()> {
                    let checkpoint = match options.get("pause_after") {
                        None => None,
                        Some(value) if value.is_unit() => None,
                        Some(value) => {
                            crate::cli::parse_pause_after(&value.to_string())
                                .map_err(|e| failed(format!("continue_update: pause_after: {e}")))?
                                .0
                        }
                    };
                    if let Some(key) = options.keys().find(|key| key.as_str() != "pause_after") {
                        return Err(failed(format!(
                            "continue_update: unknown option {key} (options: pause_after)"
                        )));
                    }
                    s.resume(checkpoint)
                })
            },
        )
        .register_fn(
            "rollback",
            |context: NativeCallContext, s: &mut Service| -> Fallible<()> {
                at(&context, || -> Fallible<()> {
                    let read = s.view.clone();
                    s.view = s
                        .conn
                        .block_on(async |client| Ok(client.service_rollback(&read).await?))
                        .map_err(from_anyhow)?;
                    s.conn.record(format!("rolled back {}", s.name()));
                    Ok(())
                })
            },
        )
        .register_fn(
            "remove",
            |context: NativeCallContext, s: &mut Service| -> Fallible<()> {
                at(&context, || -> Fallible<()> {
                    let id = s.view.service.id.clone();
                    s.conn
                        .block_on(async |client| Ok(client.service_remove(&id).await?))
                        .map_err(from_anyhow)?;
                    s.conn.record(format!("removed service {}", s.name()));
                    Ok(())
                })
            },
        )
        .register_fn(
            "logs",
            |context: NativeCallContext, s: &mut Service, lines: i64| -> Fallible<Array> {
                at(&context, || -> Fallible<Array> {
                    let request = essaim_api::control::ServiceLogs {
                        service: s.view.service.id.clone(),
                        tail: u64::try_from(lines).unwrap_or(0),
                        follow: false,
                    };
                    s.conn
                        .block_on(async |client| {
                            use futures::StreamExt;
                            let mut events = client.service_logs(request).await?;
                            let mut lines = Array::new();
                            while let Some(event) = events.next().await {
                                if let essaim_api::control::LogEvent::Lines {
                                    task,
                                    node,
                                    lines: text,
                                } = event?
                                {
                                    for line in text {
                                        let mut map = Map::new();
                                        map.insert("task".into(), task.clone().into());
                                        map.insert("node".into(), node.clone().into());
                                        map.insert("line".into(), line.into());
                                        lines.push(map.into());
                                    }
                                }
                            }
                            Ok(lines)
                        })
                        .map_err(from_anyhow)
                })
            },
        )
        .register_fn(
            "wait_converged",
            |context: NativeCallContext, s: &mut Service, timeout: Dynamic| -> Fallible<bool> {
                at(&context, || -> Fallible<bool> {
                    let outcome = s.wait(
                        "wait_converged",
                        &timeout,
                        crate::converge::Operation::Deployment,
                    )?;
                    Ok(outcome == Outcome::Converged)
                })
            },
        )
        .register_fn(
            "wait_update",
            |context: NativeCallContext, s: &mut Service, timeout: Dynamic| -> Fallible<String> {
                at(&context, || -> Fallible<String> {
                    let outcome =
                        s.wait("wait_update", &timeout, crate::converge::Operation::Update)?;
                    Ok(outcome.word().to_string())
                })
            },
        )
        // No sample yet (new tasks, a new leader, simulated tasks): `()`, not 0, so that a
        // script does not take "unknown" for "idle".
        .register_fn(
            "cpu",
            |context: NativeCallContext, s: &mut Service| -> Fallible<Dynamic> {
                at(&context, || -> Fallible<Dynamic> {
                    let usage = s.running_usage()?;
                    if usage.is_empty() {
                        return Ok(Dynamic::UNIT);
                    }
                    let total: u64 = usage.iter().map(|u| u.cpu_millicores).sum();
                    Ok((total as f64 / 10.0 / usage.len() as f64).into())
                })
            },
        )
        .register_fn(
            "memory",
            |context: NativeCallContext, s: &mut Service| -> Fallible<Dynamic> {
                at(&context, || -> Fallible<Dynamic> {
                    let usage = s.running_usage()?;
                    if usage.is_empty() {
                        return Ok(Dynamic::UNIT);
                    }
                    Ok(int(usage.iter().map(|u| u.memory_bytes).sum()).into())
                })
            },
        );
}

fn register_task(engine: &mut Engine) {
    engine
        .register_type_with_name::<Task>("Task")
        .register_get("id", |t: &mut Task| t.view.task.id.clone())
        .register_get("name", |t: &mut Task| t.view.name.clone())
        .register_get("service", |t: &mut Task| t.view.task.service_name.clone())
        .register_get("image", |t: &mut Task| t.view.task.spec.image.clone())
        .register_get("spec", |t: &mut Task| -> Fallible<Dynamic> {
            rhai::serde::to_dynamic(&t.view.task.spec)
        })
        .register_get("slot", |t: &mut Task| {
            t.view
                .task
                .slot
                .map_or(Dynamic::UNIT, |slot| int(slot).into())
        })
        .register_get("node", |t: &mut Task| {
            opt_string(t.view.node_hostname.clone())
        })
        .register_get("node_id", |t: &mut Task| {
            opt_string(t.view.task.node_id.clone())
        })
        .register_get("state", |t: &mut Task| {
            t.view.task.status.state.as_str().to_string()
        })
        .register_get("desired_state", |t: &mut Task| {
            t.view.task.desired_state.as_str().to_string()
        })
        .register_get("message", |t: &mut Task| t.view.task.status.message.clone())
        .register_get("error", |t: &mut Task| {
            opt_string(t.view.task.status.error.clone())
        })
        .register_get("exit_code", |t: &mut Task| {
            t.view
                .task
                .status
                .exit_code
                .map_or(Dynamic::UNIT, |code| i64::from(code).into())
        })
        .register_get("created_at", |t: &mut Task| {
            render::rfc3339(t.view.task.created_at)
        })
        .register_get("updated_at", |t: &mut Task| {
            render::rfc3339(t.view.task.updated_at)
        })
        .register_get("cpu", |t: &mut Task| {
            t.view.usage.as_ref().map_or(Dynamic::UNIT, |usage| {
                (usage.cpu_millicores as f64 / 10.0).into()
            })
        })
        .register_get("memory", |t: &mut Task| {
            t.view
                .usage
                .as_ref()
                .map_or(Dynamic::UNIT, |usage| int(usage.memory_bytes).into())
        })
        .register_fn("to_string", |t: &mut Task| {
            format!(
                "Task({}, {})",
                t.view.name,
                t.view.task.status.state.as_str()
            )
        });
}
