//! The functions scripts call: the cluster (`nodes()`, `service("web")`, `run("service ls")`,
//! ...) and the helpers of a cron job (`sleep`, `now`, `env`, `exit`, `to_json`, `log`).

use std::rc::Rc;
use std::time::Duration;

use clap::Parser;
use std::cell::RefCell;

use rhai::{Array, Dynamic, Engine, EvalAltResult, FnPtr, Map, NativeCallContext};

use super::objects::{at, failed, from_anyhow, sort_tasks, Fallible, Node, Service, Task};
use super::{flags, value};
use crate::cli::{Cli, Command, Format, NodeCommand, ServiceCommand, SwarmCommand};
use crate::compose;
use crate::connection::Connection;
use crate::render::Output;
use crate::repl::cache::Managers;

/// The functions scripts call, for "did you mean" (the documentation test checks this list
/// against the engine).
pub const FUNCTIONS: &[&str] = &[
    "nodes",
    "node",
    "services",
    "service",
    "tasks",
    "cluster",
    "create_service",
    "run",
    "sleep",
    "now",
    "env",
    "exit",
    "to_json",
    "parse_json",
    "log",
    "refresh",
    "drain",
    "pause",
    "activate",
    "label",
    "unlabel",
    "promote",
    "demote",
    "remove",
    "scale",
    "update",
    "rollback",
    "logs",
    "wait_converged",
    "update_status",
    "continue_update",
    "cpu",
    "memory",
    "networks",
    "network",
    "create_network",
    "remove_network",
    "stacks",
    "stack",
    "deploy_stack",
    "wait_update",
    "wait_until",
    "service_or_none",
    "arg",
    "arg_int",
    "arg_float",
    "arg_bool",
];

/// `exit(code)` / `exit(code, result)`: ends the script with this exit code (and result).
/// Carried as a termination, which `try`/`catch` cannot stop.
#[derive(Clone, Debug)]
pub struct ScriptExit {
    pub code: i64,
    pub result: Option<Dynamic>,
}

fn exit_with(code: i64, result: Option<Dynamic>) -> Fallible<()> {
    Err(Box::new(EvalAltResult::ErrorTerminated(
        Dynamic::from(ScriptExit { code, result }),
        rhai::Position::NONE,
    )))
}

/// The functions that need no cluster: time, environment, JSON, logging, exit.
pub fn register_helpers(engine: &mut Engine) {
    engine
        .register_fn("now", || -> i64 {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        })
        .register_fn("env", |name: &str| -> Dynamic {
            std::env::var(name).map_or(Dynamic::UNIT, Dynamic::from)
        })
        .register_fn("exit", |code: i64| exit_with(code, None))
        .register_fn("exit", |code: i64, result: Dynamic| {
            exit_with(code, Some(result))
        })
        .register_fn("exit", || exit_with(0, None))
        .register_fn(
            "to_json",
            |context: NativeCallContext, value: Dynamic| -> Fallible<String> {
                at(&context, || -> Fallible<String> {
                    let json = value::to_json(&value).map_err(failed)?;
                    serde_json::to_string_pretty(&json).map_err(failed)
                })
            },
        )
        .register_fn(
            "parse_json",
            |context: NativeCallContext, text: &str| -> Fallible<Dynamic> {
                at(&context, || -> Fallible<Dynamic> {
                    value::from_json(text).map_err(failed)
                })
            },
        )
        .register_fn("log", |message: Dynamic| {
            let now = crate::render::rfc3339_seconds(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(0)),
            );
            eprintln!("{now} {message}");
        });
}

/// The functions that talk to the cluster through `conn`.
pub fn register_cluster(engine: &mut Engine, conn: &Rc<Connection>) {
    // Rhai has a `sleep` of its own that neither Ctrl-C nor --timeout would cut short: these
    // take its place, for each kind of duration.
    let sleep = {
        let c = Rc::clone(conn);
        move |duration: Dynamic| -> Fallible<()> {
            let ms = duration_ms("sleep", &duration).map_err(failed)?;
            c.block_on(async |_| {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                Ok(())
            })
            .map_err(from_anyhow)
        }
    };
    let (s1, s2, s3) = (sleep.clone(), sleep.clone(), sleep);
    engine.register_fn(
        "sleep",
        move |context: NativeCallContext, seconds: i64| -> Fallible<()> {
            at(&context, || -> Fallible<()> { s1(seconds.into()) })
        },
    );
    engine.register_fn(
        "sleep",
        move |context: NativeCallContext, seconds: f64| -> Fallible<()> {
            at(&context, || -> Fallible<()> { s2(seconds.into()) })
        },
    );
    engine.register_fn(
        "sleep",
        move |context: NativeCallContext, text: &str| -> Fallible<()> {
            at(&context, || -> Fallible<()> { s3(text.into()) })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "nodes",
        move |context: NativeCallContext| -> Fallible<Array> {
            at(&context, || -> Fallible<Array> {
                let mut nodes = c
                    .block_on(async |client| Ok(client.node_list().await?))
                    .map_err(from_anyhow)?;
                nodes.sort_by(|a, b| {
                    a.node
                        .description
                        .hostname
                        .cmp(&b.node.description.hostname)
                });
                Ok(nodes
                    .into_iter()
                    .map(|view| Dynamic::from(Node::new(view, Rc::clone(&c))))
                    .collect())
            })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "node",
        move |context: NativeCallContext, name: &str| -> Fallible<Node> {
            at(&context, || -> Fallible<Node> {
                let view = c
                    .block_on(async |client| Ok(client.node_inspect(name).await?))
                    .map_err(from_anyhow)?;
                Ok(Node::new(view, Rc::clone(&c)))
            })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "services",
        move |context: NativeCallContext| -> Fallible<Array> {
            at(&context, || -> Fallible<Array> {
                let mut services = c
                    .block_on(async |client| Ok(client.service_list().await?))
                    .map_err(from_anyhow)?;
                services.sort_by(|a, b| a.service.spec.name.cmp(&b.service.spec.name));
                Ok(services
                    .into_iter()
                    .map(|view| Dynamic::from(Service::new(view, Rc::clone(&c))))
                    .collect())
            })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "service",
        move |context: NativeCallContext, name: &str| -> Fallible<Service> {
            at(&context, || -> Fallible<Service> {
                let view = c
                    .block_on(async |client| Ok(client.service_inspect(name).await?))
                    .map_err(from_anyhow)?;
                Ok(Service::new(view, Rc::clone(&c)))
            })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "service_or_none",
        move |context: NativeCallContext, name: &str| -> Fallible<Dynamic> {
            at(&context, || -> Fallible<Dynamic> {
                let view = c
                    .block_on(async |client| match client.service_inspect(name).await {
                        Ok(view) => Ok(Some(view)),
                        Err(essaim_api::ControlError::NotFound(_)) => Ok(None),
                        Err(error) => Err(error.into()),
                    })
                    .map_err(from_anyhow)?;
                Ok(view.map_or(Dynamic::UNIT, |view| {
                    Dynamic::from(Service::new(view, Rc::clone(&c)))
                }))
            })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "wait_until",
        move |context: NativeCallContext, condition: FnPtr, timeout: Dynamic| -> Fallible<bool> {
            at(&context, || wait_until(&c, &context, &condition, &timeout))
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "tasks",
        move |context: NativeCallContext| -> Fallible<Array> {
            at(&context, || -> Fallible<Array> { tasks(&c, &Map::new()) })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "tasks",
        move |context: NativeCallContext, filter: Map| -> Fallible<Array> {
            at(&context, || -> Fallible<Array> { tasks(&c, &filter) })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "cluster",
        move |context: NativeCallContext| -> Fallible<Map> {
            at(&context, || -> Fallible<Map> { cluster(&c) })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "create_service",
        move |context: NativeCallContext, fields: Map| -> Fallible<Service> {
            at(&context, || -> Fallible<Service> {
                let args = flags::create_args(&fields).map_err(failed)?;
                let spec = crate::commands::service::build_spec(args).map_err(failed)?;
                let name = spec.name.clone();
                let view = c
                    .block_on(async |client| Ok(client.service_create(spec).await?))
                    .map_err(from_anyhow)?;
                c.record(format!("created service {name}"));
                Ok(Service::new(view, Rc::clone(&c)))
            })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "networks",
        move |context: NativeCallContext| -> Fallible<Array> {
            at(&context, || -> Fallible<Array> {
                let networks = c
                    .block_on(async |client| Ok(client.network_list().await?))
                    .map_err(from_anyhow)?;
                Ok(networks
                    .iter()
                    .map(|view| network_map(view).into())
                    .collect())
            })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "network",
        move |context: NativeCallContext, name: &str| -> Fallible<Map> {
            at(&context, || -> Fallible<Map> {
                let view = c
                    .block_on(async |client| Ok(client.network_inspect(name).await?))
                    .map_err(from_anyhow)?;
                Ok(network_map(&view))
            })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "create_network",
        move |context: NativeCallContext, fields: Map| -> Fallible<Map> {
            at(&context, || -> Fallible<Map> {
                let args = flags::network_create_args(&fields).map_err(failed)?;
                let spec = crate::commands::network::build_spec(args);
                let name = spec.name.clone();
                let view = c
                    .block_on(async |client| Ok(client.network_create(spec).await?))
                    .map_err(from_anyhow)?;
                c.record(format!("created network {name}"));
                Ok(network_map(&view))
            })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "remove_network",
        move |context: NativeCallContext, name: &str| -> Fallible<()> {
            at(&context, || -> Fallible<()> {
                c.block_on(async |client| Ok(client.network_remove(name).await?))
                    .map_err(from_anyhow)?;
                c.record(format!("removed network {name}"));
                Ok(())
            })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "stacks",
        move |context: NativeCallContext| -> Fallible<Array> {
            at(&context, || -> Fallible<Array> {
                let stacks = c
                    .block_on(async |client| crate::commands::stack::stacks(client).await)
                    .map_err(from_anyhow)?;
                Ok(stacks
                    .into_iter()
                    .map(|stack| {
                        let mut map = Map::new();
                        map.insert("name".into(), stack.name.into());
                        map.insert("services".into(), int(stack.services).into());
                        map.into()
                    })
                    .collect())
            })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "stack",
        move |context: NativeCallContext, name: &str| -> Fallible<Map> {
            at(&context, || -> Fallible<Map> {
                let services = c
                    .block_on(async |client| {
                        crate::commands::stack::stack_services(client, name).await
                    })
                    .map_err(from_anyhow)?;
                let services: Array = services
                    .into_iter()
                    .map(|view| Dynamic::from(Service::new(view, Rc::clone(&c))))
                    .collect();
                let mut map = Map::new();
                map.insert("name".into(), name.into());
                map.insert("services".into(), services.into());
                Ok(map)
            })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "deploy_stack",
        move |context: NativeCallContext, files: Dynamic, name: &str| -> Fallible<Map> {
            at(&context, || -> Fallible<Map> {
                deploy_stack(&c, &files, name, &Map::new())
            })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "deploy_stack",
        move |context: NativeCallContext,
              files: Dynamic,
              name: &str,
              options: Map|
              -> Fallible<Map> {
            at(&context, || -> Fallible<Map> {
                deploy_stack(&c, &files, name, &options)
            })
        },
    );
    let c = Rc::clone(conn);
    engine.register_fn(
        "run",
        move |context: NativeCallContext, line: &str| -> Fallible<Dynamic> {
            at(&context, || -> Fallible<Dynamic> { run(&c, line) })
        },
    );
}

/// `tasks(#{service: "web", state: "running", node: "w1", desired_state: "running"})`.
fn tasks(conn: &Rc<Connection>, filter: &Map) -> Fallible<Array> {
    const KEYS: [&str; 4] = ["service", "state", "node", "desired_state"];
    for key in filter.keys() {
        if !KEYS.contains(&key.as_str()) {
            let hint = essaim_core::suggest::closest(key, KEYS)
                .map_or(String::new(), |k| format!("; did you mean {k}?"));
            return Err(failed(format!(
                "tasks: unknown filter {key} (filters: {}){hint}",
                KEYS.join(", ")
            )));
        }
    }
    let get = |key: &str| filter.get(key).map(|value| value.to_string());
    // A misspelt state would match nothing, and "wait until nothing runs" would end at once.
    for key in ["state", "desired_state"] {
        if let Some(state) = get(key) {
            if state.parse::<essaim_core::model::TaskState>().is_err() {
                let states: Vec<&str> = essaim_core::model::TaskState::ALL
                    .iter()
                    .map(|s| s.as_str())
                    .collect();
                let hint = essaim_core::suggest::closest(&state, states.iter().copied())
                    .map_or(String::new(), |s| format!("; did you mean {s}?"));
                return Err(failed(format!(
                    "tasks: {key} {state:?} is not a task state (states: {}){hint}",
                    states.join(", ")
                )));
            }
        }
    }
    let service = get("service");
    let node = get("node");
    let mut views = conn
        .block_on(async |client| {
            Ok(client
                .task_list(service.as_deref(), node.as_deref())
                .await?)
        })
        .map_err(from_anyhow)?;
    sort_tasks(&mut views);
    let state = get("state");
    let desired = get("desired_state");
    Ok(views
        .into_iter()
        .filter(|view| {
            state
                .as_deref()
                .is_none_or(|state| view.task.status.state.as_str() == state)
                && desired
                    .as_deref()
                    .is_none_or(|desired| view.task.desired_state.as_str() == desired)
        })
        .map(|view| Dynamic::from(Task { view }))
        .collect())
}

/// A network as scripts read it: `network("front").subnet`.
fn int(value: usize) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

/// `deploy_stack(files, name, #{prune, dry_run, detach})`: `stack deploy` for scripts. `files`
/// is a path or an array of paths, merged in order. Returns the plan as data (`plan`), as
/// `stack deploy --dry-run` prints it (`lines`), the files' `warnings`, and whether it was
/// carried out (`applied`); unless `detach`, it returns once every changed service
/// converged, and fails naming those that did not.
fn deploy_stack(
    conn: &Rc<Connection>,
    files: &Dynamic,
    name: &str,
    options: &Map,
) -> Fallible<Map> {
    const OPTIONS: &[&str] = &["prune", "dry_run", "detach"];
    let flag = |key: &str| -> Fallible<bool> {
        match options.get(key) {
            None => Ok(false),
            Some(value) => value.as_bool().map_err(|kind| {
                failed(format!(
                    "deploy_stack: option {key}: expected true or false, found {kind}"
                ))
            }),
        }
    };
    if let Some(key) = options.keys().find(|key| !OPTIONS.contains(&key.as_str())) {
        return Err(failed(format!(
            "deploy_stack: unknown option {key} (options: {})",
            OPTIONS.join(", ")
        )));
    }
    let (prune, dry_run, detach) = (flag("prune")?, flag("dry_run")?, flag("detach")?);
    let paths: Vec<std::path::PathBuf> = match files.clone().into_array() {
        Ok(items) => items.iter().map(|item| item.to_string().into()).collect(),
        Err(_) => vec![files.to_string().into()],
    };
    if paths.is_empty() {
        return Err(failed("deploy_stack: no compose file given"));
    }
    compose::check_stack_name(name).map_err(|e| failed(format!("deploy_stack: {e}")))?;
    let stack = crate::commands::stack::load_files(&paths, name)
        .map_err(|e| failed(format!("deploy_stack: {e}")))?;
    let how = crate::commands::stack::Deploy {
        prune,
        dry_run,
        format: Format::Table,
    };
    let plan = conn
        .block_on(async |client| {
            let (mut out, mut err) = (std::io::sink(), std::io::sink());
            let mut quiet = Output::new(&mut out, &mut err);
            let (plan, waits) =
                crate::commands::stack::deploy_stack(&stack, &how, client, &mut quiet).await?;
            if detach {
                return Ok(plan);
            }
            let mut failures = Vec::new();
            for (service, operation) in waits {
                let waited =
                    crate::converge::wait(client, &service, None, operation, &mut quiet).await;
                if let Err(error) = waited {
                    failures.push(format!("{error:#}"));
                }
            }
            if !failures.is_empty() {
                anyhow::bail!("{}", failures.join("; "));
            }
            Ok(plan)
        })
        .map_err(|e| {
            failed(super::objects::script_words(&format!(
                "deploy_stack: {e:#}"
            )))
        })?;
    if !dry_run {
        conn.record(format!("deployed stack {name}"));
    }
    let json = serde_json::to_string(&plan).map_err(failed)?;
    let mut map = Map::new();
    map.insert("plan".into(), value::from_json(&json).map_err(failed)?);
    let lines: Array = plan.lines().into_iter().map(Dynamic::from).collect();
    map.insert("lines".into(), lines.into());
    let warnings: Array = stack
        .warnings
        .iter()
        .map(|warning| Dynamic::from(warning.to_string()))
        .collect();
    map.insert("warnings".into(), warnings.into());
    map.insert("applied".into(), (!dry_run).into());
    Ok(map)
}

fn network_map(view: &essaim_api::control::NetworkView) -> Map {
    let network = &view.network;
    let mut map = Map::new();
    map.insert("id".into(), network.id.clone().into());
    map.insert("name".into(), network.spec.name.clone().into());
    map.insert("driver".into(), network.spec.driver.to_string().into());
    map.insert(
        "subnet".into(),
        network.allocation.subnet.to_string().into(),
    );
    map.insert(
        "gateway".into(),
        network.allocation.gateway.to_string().into(),
    );
    map.insert(
        "vxlan_id".into(),
        i64::from(network.allocation.vxlan_id).into(),
    );
    map.insert("attachable".into(), network.spec.attachable.into());
    let labels: Map = network
        .spec
        .labels
        .iter()
        .map(|(key, value)| (key.as_str().into(), value.clone().into()))
        .collect();
    map.insert("labels".into(), labels.into());
    let services: Array = view.services.iter().map(|s| s.clone().into()).collect();
    map.insert("services".into(), services.into());
    map.insert("tasks".into(), (view.tasks as i64).into());
    map.insert("free_addresses".into(), (view.free_addresses as i64).into());
    map
}

/// `cluster()`: the leader, the managers and how many answer, and a healthy flag.
fn cluster(conn: &Rc<Connection>) -> Fallible<Map> {
    let (swarm, nodes) = conn
        .block_on(async |client| Ok((client.swarm_inspect().await?, client.node_list().await?)))
        .map_err(from_anyhow)?;
    // The same count as the REPL's prompt.
    let Managers {
        leader,
        reachable,
        total: managers,
    } = Managers::of(&nodes);
    let down = nodes
        .iter()
        .filter(|n| n.node.status.state != essaim_core::model::NodeState::Ready)
        .count();
    let mut map = Map::new();
    map.insert("id".into(), swarm.id.into());
    map.insert(
        "leader".into(),
        leader.clone().map_or(Dynamic::UNIT, Dynamic::from),
    );
    map.insert("managers".into(), (managers as i64).into());
    map.insert("managers_reachable".into(), (reachable as i64).into());
    map.insert("nodes".into(), (nodes.len() as i64).into());
    map.insert("nodes_down".into(), (down as i64).into());
    map.insert(
        "healthy".into(),
        (leader.is_some() && reachable == managers && down == 0).into(),
    );
    Ok(map)
}

/// `run("service ls")`: any command, as typed after `essaim`. Commands that can print JSON
/// return it as data; the others return what they print.
fn run(conn: &Rc<Connection>, line: &str) -> Fallible<Dynamic> {
    let words = crate::cli::parse_command_args(line)
        .map_err(|e| failed(format!("run: {e}")))?
        .0;
    let cli = Cli::try_parse_from(std::iter::once("essaim".to_string()).chain(words))
        .map_err(|e| failed(format!("run: {}", first_line(&e.render().to_string()))))?;
    let Some(mut command) = cli.command else {
        return Err(failed("run: which command?"));
    };
    let json = ask_for_json(&mut command);
    if matches!(command, Command::Watch(_)) {
        return Err(failed("run: watch never ends; call the command itself"));
    }
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = conn.block_on(async |client| {
        let mut output = Output::new(&mut out, &mut err);
        crate::commands::run(command, client, &mut output).await
    });
    if let Err(error) = result {
        return Err(from_anyhow(error));
    }
    let text = String::from_utf8_lossy(&out).into_owned();
    if json {
        return value::from_json(&text).map_err(failed);
    }
    Ok(text.trim_end().to_string().into())
}

/// Sets `--format json` on the commands that have it; true if it did.
fn ask_for_json(command: &mut Command) -> bool {
    let format = match command {
        Command::Service { command } => match command {
            ServiceCommand::Ls(args) if !args.quiet => &mut args.format,
            ServiceCommand::Ps(args) if !args.ps.quiet => &mut args.ps.format,
            ServiceCommand::Inspect(args) => {
                args.pretty = false;
                &mut args.format
            }
            _ => return false,
        },
        Command::Node { command } => match command {
            NodeCommand::Ls(args) if !args.quiet => &mut args.format,
            NodeCommand::Ps(args) if !args.ps.quiet => &mut args.ps.format,
            NodeCommand::Inspect(args) => {
                args.pretty = false;
                &mut args.format
            }
            _ => return false,
        },
        Command::Swarm {
            command: SwarmCommand::Inspect(args),
        } => &mut args.format,
        Command::Info(args) => &mut args.format,
        _ => return false,
    };
    *format = Format::Json;
    true
}

fn first_line(text: &str) -> String {
    text.lines()
        .map(str::trim)
        .find(|line| !line.is_empty())
        .unwrap_or("")
        .trim_start_matches("error: ")
        .to_string()
}

/// A duration as scripts give it, in every function that takes one: a number of seconds
/// (`5`, `0.5`), or a string of one (`"0.5"`), with a unit (`"1.5s"`, `"500ms"`) or several
/// (`"1m30s"`).
///
/// # Errors
/// A negative number, or text that is no duration, named with `what`.
pub fn duration_ms(what: &str, value: &Dynamic) -> Result<u64, String> {
    let seconds = |seconds: f64| -> Result<u64, String> {
        if seconds >= 0.0 && seconds.is_finite() {
            Ok((seconds * 1000.0).round() as u64)
        } else {
            Err(format!("{what}: not a duration ({seconds})"))
        }
    };
    if let Ok(whole) = value.as_int() {
        return u64::try_from(whole)
            .map(|s| s.saturating_mul(1000))
            .map_err(|_| format!("{what}: a negative duration ({whole})"));
    }
    if let Ok(number) = value.as_float() {
        return seconds(number);
    }
    if !value.is_string() {
        return Err(format!(
            "{what}: a duration is a number of seconds or a string like \"1m30s\", not {}",
            value.type_name()
        ));
    }
    let text = value.to_string();
    let trimmed = text.trim();
    // Fractions, which the duration flags do not take: "0.1", "1.5s", "0.5m".
    for (unit, factor) in [
        ("ms", 0.001),
        ("s", 1.0),
        ("m", 60.0),
        ("h", 3600.0),
        ("", 1.0),
    ] {
        if let Some(number) = trimmed.strip_suffix(unit) {
            if let Ok(number) = number.trim_end().parse::<f64>() {
                return seconds(number * factor);
            }
        }
    }
    essaim_core::time::parse_duration_ms(trimmed).map_err(|e| format!("{what}: {text:?}: {e}"))
}

/// `wait_until(|| condition, timeout)`: calls `condition` now and after each change in the
/// cluster (the long poll of `watch`), until it gives true (true) or `timeout` passes (false).
fn wait_until(
    conn: &Rc<Connection>,
    context: &NativeCallContext,
    condition: &FnPtr,
    timeout: &Dynamic,
) -> Fallible<bool> {
    let limit = Duration::from_millis(duration_ms("wait_until", timeout).map_err(failed)?);
    let started = std::time::Instant::now();
    let mut index = 0;
    loop {
        let held = condition.call_within_context::<Dynamic>(context, ())?;
        let held = held.as_bool().map_err(|kind| {
            failed(format!(
                "wait_until: the condition must give true or false, not {kind}"
            ))
        })?;
        if held {
            return Ok(true);
        }
        let left = limit.saturating_sub(started.elapsed());
        if left.is_zero() {
            return Ok(false);
        }
        // A change wakes the poll at once; the cap keeps a condition on time (now()) honest.
        let poll = left.min(Duration::from_secs(2));
        index = conn
            .block_on(async |client| {
                let next = client.wait_change(index, poll).await?;
                // A first call (0) answers at once: wait for the next change.
                if index == 0 {
                    return Ok(client.wait_change(next, poll).await?);
                }
                Ok(next)
            })
            .map_err(from_anyhow)?;
    }
}

/// `arg("name")`, `arg_int("min", 1)`, `arg_bool("apply", false)`: the `--arg` values of
/// `essaim run`, read as a type; without a default, a missing one is an error that says how to
/// give it.
pub fn register_args(engine: &mut Engine, args: &Rc<RefCell<Map>>) {
    fn given(args: &Rc<RefCell<Map>>, what: &str, name: &str) -> Fallible<String> {
        args.borrow()
            .get(name)
            .map(|value| value.to_string())
            .ok_or_else(|| {
                failed(format!(
                    "{what}: the argument {name} is required: give --arg {name}=VALUE"
                ))
            })
    }
    fn int_of(name: &str, text: &str) -> Fallible<i64> {
        text.trim()
            .parse()
            .map_err(|_| failed(format!("arg_int: --arg {name}={text}: not an integer")))
    }
    fn float_of(name: &str, text: &str) -> Fallible<f64> {
        text.trim()
            .parse()
            .map_err(|_| failed(format!("arg_float: --arg {name}={text}: not a number")))
    }
    fn bool_of(name: &str, text: &str) -> Fallible<bool> {
        match text.trim().to_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Ok(true),
            "false" | "no" | "0" | "off" => Ok(false),
            _ => Err(failed(format!(
                "arg_bool: --arg {name}={text}: expected true/false, yes/no, 1/0 or on/off"
            ))),
        }
    }
    let a = Rc::clone(args);
    engine.register_fn(
        "arg",
        move |context: NativeCallContext, name: &str| -> Fallible<String> {
            at(&context, || -> Fallible<String> { given(&a, "arg", name) })
        },
    );
    let a = Rc::clone(args);
    engine.register_fn("arg", move |name: &str, default: Dynamic| -> Dynamic {
        a.borrow().get(name).cloned().unwrap_or(default)
    });
    let a = Rc::clone(args);
    engine.register_fn(
        "arg_int",
        move |context: NativeCallContext, name: &str| -> Fallible<i64> {
            at(&context, || -> Fallible<i64> {
                int_of(name, &given(&a, "arg_int", name)?)
            })
        },
    );
    let a = Rc::clone(args);
    engine.register_fn(
        "arg_int",
        move |context: NativeCallContext, name: &str, default: i64| -> Fallible<i64> {
            at(&context, || -> Fallible<i64> {
                match a.borrow().get(name) {
                    Some(value) => int_of(name, &value.to_string()),
                    None => Ok(default),
                }
            })
        },
    );
    let a = Rc::clone(args);
    engine.register_fn(
        "arg_float",
        move |context: NativeCallContext, name: &str| -> Fallible<f64> {
            at(&context, || -> Fallible<f64> {
                float_of(name, &given(&a, "arg_float", name)?)
            })
        },
    );
    let a = Rc::clone(args);
    engine.register_fn(
        "arg_float",
        move |context: NativeCallContext, name: &str, default: f64| -> Fallible<f64> {
            at(&context, || -> Fallible<f64> {
                match a.borrow().get(name) {
                    Some(value) => float_of(name, &value.to_string()),
                    None => Ok(default),
                }
            })
        },
    );
    let a = Rc::clone(args);
    engine.register_fn(
        "arg_bool",
        move |context: NativeCallContext, name: &str| -> Fallible<bool> {
            at(&context, || -> Fallible<bool> {
                bool_of(name, &given(&a, "arg_bool", name)?)
            })
        },
    );
    let a = Rc::clone(args);
    engine.register_fn(
        "arg_bool",
        move |context: NativeCallContext, name: &str, default: bool| -> Fallible<bool> {
            at(&context, || -> Fallible<bool> {
                match a.borrow().get(name) {
                    Some(value) => bool_of(name, &value.to_string()),
                    None => Ok(default),
                }
            })
        },
    );
}
