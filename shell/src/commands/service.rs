//! `essaim service ...`: create, list, inspect, scale and remove services, and list their
//! tasks. Also the task listing (and its filters) `node ps` shares. `service update` has a
//! module of its own.

use std::collections::BTreeMap;

use essaim_api::control::{LogEvent, ServiceLogs, TaskView};
use essaim_core::model::{
    Resources, RestartCondition, RestartPolicy, ServiceMode, ServiceSpec, TaskSpec, UpdateConfig,
};

use super::Failures;
use crate::cli::{
    Format, ModeArg, PsArgs, ServiceCommand, ServiceCreateArgs, ServiceInspectArgs,
    ServiceLogsArgs, ServiceLsArgs, ServicePsArgs, ServiceRmArgs, ServiceScaleArgs, TaskFilter,
};
use crate::client::Client;
use crate::converge::Operation;
use crate::render::{self, Output};
use crate::UsageError;

/// The stop grace period when `--stop-grace-period` is not given, as docker's.
const DEFAULT_STOP_GRACE_MS: u64 = 10_000;

/// # Errors
/// The daemon could not be reached, the leader refused, or (with several SERVICE arguments)
/// at least one of them failed.
pub async fn run(
    command: ServiceCommand,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    match command {
        ServiceCommand::Create(args) => create(*args, client, output).await,
        ServiceCommand::Ls(args) => ls(args, client, output).await,
        ServiceCommand::Ps(args) => ps(args, client, output).await,
        ServiceCommand::Inspect(args) => inspect(args, client, output).await,
        ServiceCommand::Update(args) => super::service_update::run(*args, client, output).await,
        ServiceCommand::Scale(args) => scale(args, client, output).await,
        ServiceCommand::Rm(args) => rm(args, client, output).await,
        ServiceCommand::Logs(args) => logs(args, client, output).await,
        ServiceCommand::Wait(args) => crate::converge::service_wait(args, client, output).await,
        ServiceCommand::Rollback(args) => {
            super::service_update::rollback(args, client, output).await
        }
    }
}

async fn create(
    args: ServiceCreateArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let detach = args.wait.detach;
    let spec = build_spec(args)?;
    let view = client.service_create(spec).await?;
    output.print(&format!("{}\n", view.service.id))?;
    if detach {
        return Ok(());
    }
    let name = &view.service.spec.name;
    crate::converge::wait(client, name, None, Operation::Creation, output).await
}

/// The spec `service create` sends, with docker's defaults for what the flags leave out.
///
/// # Errors
/// `--replicas` with `--mode global`.
pub fn build_spec(args: ServiceCreateArgs) -> Result<ServiceSpec, UsageError> {
    let mode = match (args.mode, args.replicas) {
        (Some(ModeArg::Global | ModeArg::GlobalJob), Some(_)) => {
            return Err(UsageError(
                "--replicas can only be used with --mode replicated or replicated-job, not \
                 with a global mode"
                    .to_string(),
            ))
        }
        (Some(ModeArg::Global), None) => ServiceMode::Global,
        (Some(ModeArg::GlobalJob), None) => ServiceMode::GlobalJob,
        (Some(ModeArg::ReplicatedJob), replicas) => ServiceMode::ReplicatedJob {
            completions: replicas.unwrap_or(1),
            max_concurrent: args.max_concurrent.unwrap_or(0),
        },
        (_, replicas) => ServiceMode::Replicated {
            replicas: replicas.unwrap_or(1),
        },
    };
    if args.max_concurrent.is_some() && !matches!(mode, ServiceMode::ReplicatedJob { .. }) {
        return Err(UsageError(
            "--max-concurrent is for --mode replicated-job".to_string(),
        ));
    }
    // A job that completed is done: only failures are retried (Swarm's default for jobs).
    let default_condition = if mode.is_job() {
        RestartCondition::OnFailure
    } else {
        RestartPolicy::default().condition
    };
    let defaults = RestartPolicy::default();
    let restart_policy = RestartPolicy {
        condition: args.restart_condition.unwrap_or(default_condition),
        delay_ms: args.restart_delay.unwrap_or(defaults.delay_ms),
        max_attempts: args.restart_max_attempts.unwrap_or(defaults.max_attempts),
        window_ms: args.restart_window.unwrap_or(defaults.window_ms),
    };
    let resources = Resources {
        reserve_nano_cpus: args.reserve_cpu.unwrap_or(0),
        reserve_memory_bytes: args.reserve_memory.unwrap_or(0),
        limit_nano_cpus: args.limit_cpu.unwrap_or(0),
        limit_memory_bytes: args.limit_memory.unwrap_or(0),
        limit_pids: args.limit_pids.unwrap_or(0),
        generic: args.generic_resource.iter().cloned().collect(),
    };
    // The files first, in order, then --env over them, as docker reads them.
    let mut env = BTreeMap::new();
    for file in &args.env_file {
        env.extend(read_env_file(file)?);
    }
    env.extend(args.env);
    let name = args.name.unwrap_or_else(|| name_from_image(&args.image));
    let registry_auth = if args.with_registry_auth {
        let credentials = crate::registry_auth::credentials_for(&args.image).map_err(UsageError)?;
        Some(essaim_core::model::RegistryAuth::Given(credentials))
    } else {
        None
    };
    let mut update_config = UpdateConfig::default();
    let mut rollback_config = UpdateConfig::default();
    args.update.apply(&mut update_config, &mut rollback_config);
    Ok(ServiceSpec {
        name,
        labels: args.label.into_iter().collect::<BTreeMap<_, _>>(),
        mode,
        task: TaskSpec {
            image: args.image,
            args: args.args,
            env,
            resources,
            restart_policy,
            constraints: args.constraint,
            spread: args.placement_pref,
            max_replicas_per_node: args.replicas_max_per_node.unwrap_or(0),
            stop_grace_period_ms: args.stop_grace_period.unwrap_or(DEFAULT_STOP_GRACE_MS),
            force_update: 0,
            networks: args.network,
            healthcheck: args.health.apply(None),
            container: args.container.options(),
            mounts: args.mount,
            secrets: args.secret,
            configs: args.config,
            registry_auth,
        },
        ports: args.publish,
        update_config,
        rollback_config,
        endpoint_mode: args.endpoint_mode.unwrap_or_default(),
    })
}

/// The variables of an `--env-file`: `KEY=VALUE` lines, `#` comments; a `KEY` alone takes
/// its value from this shell's environment (and is left out when it has none), as docker's.
fn read_env_file(path: &std::path::Path) -> Result<Vec<(String, String)>, UsageError> {
    let shown = path.display();
    let text = std::fs::read_to_string(path)
        .map_err(|e| UsageError(format!("--env-file {shown}: cannot read it: {e}")))?;
    let variables = crate::compose::env_file::parse(&text)
        .map_err(|e| UsageError(format!("--env-file {shown}:{}: {}", e.line, e.message)))?;
    Ok(variables
        .into_iter()
        .filter_map(|v| {
            let value = v.value.or_else(|| std::env::var(&v.name).ok())?;
            Some((v.name, value))
        })
        .collect())
}

/// The name a service gets when `--name` is not given: the image's last path component,
/// without tag or digest (`library/nginx:1.25` gives `nginx`).
pub fn name_from_image(image: &str) -> String {
    let without_digest = image.split('@').next().unwrap_or(image);
    let last = without_digest.rsplit('/').next().unwrap_or(without_digest);
    last.split(':').next().unwrap_or(last).to_string()
}

async fn ls(
    args: ServiceLsArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let mut services = client.service_list().await?;
    services.sort_by(|a, b| {
        (&a.service.spec.name, &a.service.id).cmp(&(&b.service.spec.name, &b.service.id))
    });
    let text = if args.quiet {
        render::ids(services.iter().map(|view| view.service.id.as_str()))
    } else {
        match args.format {
            Format::Json => render::json(&services)?,
            Format::Table => render::service_table(&services),
        }
    };
    output.print(&text)?;
    Ok(())
}

async fn ps(
    args: ServicePsArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let tasks = client.task_list(Some(&args.service), None).await?;
    // A whole service's slots are all here: one with no live task shows its latest attempt.
    let slots_whole = !args
        .ps
        .filter
        .iter()
        .any(|filter| matches!(filter, TaskFilter::Node(_)));
    output.print(&tasks_text(&tasks, &args.ps, slots_whole)?)?;
    Ok(())
}

/// What `service ps` and `node ps` print for `tasks`; `slots_whole` when every task of each
/// slot is in the list (a whole service's), so a slot without a live task can show its latest
/// attempt.
///
/// # Errors
/// Only if the JSON cannot be made, which would be a bug.
pub fn tasks_text(tasks: &[TaskView], args: &PsArgs, slots_whole: bool) -> anyhow::Result<String> {
    let tasks = filter_tasks(tasks, &args.filter);
    // Asking for a desired state is asking for those tasks, stopped ones included.
    let all = args.all
        || args
            .filter
            .iter()
            .any(|filter| matches!(filter, TaskFilter::DesiredState(_)));
    let shown = match (all, slots_whole) {
        (true, _) => render::Shown::All,
        (false, true) => render::Shown::LiveOrLatestAttempt,
        (false, false) => render::Shown::Live,
    };
    if args.quiet {
        let rows = render::task_rows(&tasks, shown);
        return Ok(render::ids(
            rows.iter().map(|(view, _)| view.task.id.as_str()),
        ));
    }
    Ok(match args.format {
        Format::Json => {
            let rows: Vec<&TaskView> = render::task_rows(&tasks, shown)
                .into_iter()
                .map(|(view, _)| view)
                .collect();
            render::json(&rows)?
        }
        Format::Table => render::task_table(&tasks, shown),
    })
}

/// The tasks that pass `filters`: a task must match every key given, and any of the values
/// given for one key (as docker's filters do).
pub fn filter_tasks(tasks: &[TaskView], filters: &[TaskFilter]) -> Vec<TaskView> {
    let states: Vec<_> = filters
        .iter()
        .filter_map(|filter| match filter {
            TaskFilter::DesiredState(state) => Some(*state),
            TaskFilter::Node(_) => None,
        })
        .collect();
    let nodes: Vec<&str> = filters
        .iter()
        .filter_map(|filter| match filter {
            TaskFilter::Node(node) => Some(node.as_str()),
            TaskFilter::DesiredState(_) => None,
        })
        .collect();
    let on_node = |view: &TaskView, node: &str| {
        view.node_hostname.as_deref() == Some(node)
            || view
                .task
                .node_id
                .as_deref()
                .is_some_and(|id| id.starts_with(node))
    };
    tasks
        .iter()
        .filter(|view| states.is_empty() || states.contains(&view.task.desired_state))
        .filter(|view| nodes.is_empty() || nodes.iter().any(|node| on_node(view, node)))
        .cloned()
        .collect()
}

async fn inspect(
    args: ServiceInspectArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let pretty = args.pretty || args.format == Format::Table;
    let mut failures = Failures::default();
    let mut views = Vec::new();
    for name in &args.services {
        match client.service_inspect(name).await {
            Ok(view) => views.push(view),
            Err(error) => failures.report(output, error.into()),
        }
    }
    let text = super::inspected(&views, pretty, render::service_pretty)?;
    output.print(&text)?;
    failures.finish()
}

async fn scale(
    args: ServiceScaleArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let mut failures = Failures::default();
    let mut scaled = Vec::new();
    for (service, replicas) in &args.scales {
        match client.service_scale(service, *replicas).await {
            Ok(()) => {
                output.print(&format!("{service} scaled to {replicas}\n"))?;
                scaled.push(service);
            }
            Err(error) => failures.report(output, error.into()),
        }
    }
    if !args.wait.detach {
        for service in scaled {
            let wait = crate::converge::wait(client, service, None, Operation::Scaling, output);
            if let Err(error) = wait.await {
                if error.is::<crate::Interrupted>() {
                    return Err(error);
                }
                failures.report(output, error);
            }
        }
    }
    failures.finish()
}

async fn rm(
    args: ServiceRmArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    if !args.yes && output.interactive {
        let mut plan = Vec::new();
        for name in &args.services {
            // A name that does not resolve is reported by the removal itself.
            if let Ok(view) = client.service_inspect(name).await {
                plan.push(format!(
                    "remove service {} ({} of {} tasks running)",
                    view.service.spec.name, view.running, view.desired
                ));
            }
        }
        crate::confirm::go_ahead(&plan, output)?;
    }
    let mut failures = Failures::default();
    for name in &args.services {
        match client.service_remove(name).await {
            Ok(()) => output.print(&format!("{name}\n"))?,
            Err(error) => failures.report(output, error.into()),
        }
    }
    failures.finish()
}

/// Prints each line as `web.1@node | line`, as the nodes send them. Nodes that could not be
/// asked are named on stderr, and make the command fail once the rest is printed.
async fn logs(
    args: ServiceLogsArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    use futures::StreamExt;
    let mut events = client
        .service_logs(ServiceLogs {
            service: args.service.clone(),
            tail: args.tail.unwrap_or(0),
            follow: args.follow,
        })
        .await?;
    let mut failures = Failures::default();
    while let Some(event) = events.next().await {
        match event? {
            LogEvent::Lines { task, node, lines } => {
                let mut text = String::new();
                for line in lines {
                    text.push_str(&format!("{task}@{node} | {line}\n"));
                }
                output.print(&text)?;
                output.flush()?;
            }
            LogEvent::Unreachable { node, reason } => failures.report(
                output,
                anyhow::anyhow!("the output of the tasks on node {node} is missing: {reason}"),
            ),
        }
    }
    failures.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use clap::Parser;
    use essaim_api::control::ServiceView;
    use essaim_api::{ControlError, ControlReply, ControlRequest};
    use essaim_core::model::{PortConfig, RestartCondition, Service, Task, TaskState, TaskStatus};
    use essaim_core::Timestamp;

    use super::*;
    use crate::cli::{Cli, Command};
    use crate::commands::run_line;
    use crate::Exit;

    pub(crate) fn service_view(id: &str, name: &str, running: u64, desired: u64) -> ServiceView {
        ServiceView {
            service: Service {
                id: id.to_string(),
                version: 1,
                created_at: Timestamp(0),
                updated_at: Timestamp(0),
                spec: ServiceSpec {
                    name: name.to_string(),
                    labels: BTreeMap::new(),
                    mode: ServiceMode::Replicated { replicas: desired },
                    task: TaskSpec {
                        image: "nginx:1.25".to_string(),
                        ..TaskSpec::default()
                    },
                    ports: vec![PortConfig::tcp(8080, 80)],
                    update_config: Default::default(),
                    rollback_config: Default::default(),
                    endpoint_mode: Default::default(),
                },
                previous_spec: None,
                update_status: None,
                virtual_ips: Vec::new(),
            },
            running,
            completed: 0,
            desired,
            live_by_state: Default::default(),
            problem: None,
        }
    }

    pub(crate) fn task(
        id: &str,
        slot: u64,
        created: u64,
        desired: TaskState,
        state: TaskState,
        message: &str,
    ) -> TaskView {
        TaskView {
            task: Task {
                id: id.to_string(),
                version: 1,
                created_at: Timestamp(created),
                updated_at: Timestamp(created),
                service_id: "svc1".to_string(),
                service_name: "svc".to_string(),
                slot: Some(slot),
                node_id: Some("n1".to_string()),
                spec: TaskSpec {
                    image: "nginx".to_string(),
                    ..TaskSpec::default()
                },
                ports: Vec::new(),
                networks: Vec::new(),
                service_version: 1,
                desired_state: desired,
                status: TaskStatus {
                    state,
                    timestamp: Timestamp(created),
                    message: message.to_string(),
                    error: None,
                    exit_code: None,
                    ports: Vec::new(),
                    address: None,
                },
            },
            name: format!("web.{slot}"),
            node_hostname: Some("w1".to_string()),
            usage: None,
        }
    }

    fn tasks() -> Vec<TaskView> {
        use TaskState::{Failed, Pending, Running, Shutdown};
        vec![
            task("old-1", 1, 100, Shutdown, Failed, ""),
            task(
                "live-2",
                2,
                300,
                Running,
                Pending,
                "no suitable node: drained",
            ),
            task("live-1", 1, 200, Running, Running, ""),
            task("older-1", 1, 50, Shutdown, Shutdown, ""),
        ]
    }

    /// A daemon that answers service requests, records them, and refuses unknown services.
    fn fake_daemon() -> (Client, Rc<RefCell<Vec<ControlRequest>>>) {
        let log = Rc::new(RefCell::new(Vec::new()));
        let seen = Rc::clone(&log);
        let client = Client::from_fn(move |request| {
            seen.borrow_mut().push(request.clone());
            let reply = match &request {
                ControlRequest::ServiceCreate { spec } => {
                    let mut view = service_view("id-new", &spec.name, 0, 1);
                    view.service.spec = spec.clone();
                    Ok(ControlReply::Service(view))
                }
                ControlRequest::ServiceList => Ok(ControlReply::Services(vec![service_view(
                    "0123456789abcdef",
                    "web",
                    2,
                    3,
                )])),
                ControlRequest::ServiceScale { service, .. }
                | ControlRequest::ServiceRemove { service }
                    if service == "web" =>
                {
                    Ok(ControlReply::Done)
                }
                ControlRequest::ServiceScale { service, .. }
                | ControlRequest::ServiceRemove { service } => Err(ControlError::NotFound(
                    format!("service {service} not found"),
                )),
                ControlRequest::TaskList { .. } => Ok(ControlReply::Tasks(tasks())),
                _ => Err(ControlError::Internal("not faked".to_string())),
            };
            Box::pin(async move { reply })
        });
        (client, log)
    }

    fn parse(line: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(line)
    }

    fn create_args(flags: &[&str]) -> Result<ServiceCreateArgs, clap::Error> {
        let line = ["essaim", "service", "create"].iter().chain(flags);
        match Cli::try_parse_from(line)?.command.expect("a command") {
            Command::Service {
                command: ServiceCommand::Create(args),
            } => Ok(*args),
            other => panic!("parsed as another command: {other:?}"),
        }
    }

    #[test]
    fn create_builds_the_spec_from_the_flags() {
        let args = create_args(&[
            "--name",
            "api",
            "--replicas",
            "3",
            "-e",
            "A=1",
            "--env",
            "B=x=y",
            "--label",
            "team=core",
            "--constraint",
            "node.labels.zone==a",
            "--placement-pref",
            "spread=node.labels.rack",
            "--replicas-max-per-node",
            "2",
            "--reserve-cpu",
            "0.5",
            "--reserve-memory",
            "256M",
            "--limit-cpu",
            "2",
            "--limit-memory",
            "1G",
            "--restart-condition",
            "on-failure",
            "--restart-delay",
            "2s",
            "--restart-max-attempts",
            "4",
            "--restart-window",
            "1m",
            "--stop-grace-period",
            "30s",
            "-p",
            "8080:80",
            "--publish",
            "443",
            "registry:5000/team/api:2",
            "serve",
            "--port",
            "80",
        ])
        .expect("valid flags");
        let spec = build_spec(args).expect("valid spec");
        assert_eq!(spec.name, "api");
        assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 3 });
        assert_eq!(
            spec.labels,
            BTreeMap::from([("team".to_string(), "core".to_string())])
        );
        let task = &spec.task;
        assert_eq!(task.image, "registry:5000/team/api:2");
        assert_eq!(task.args, vec!["serve", "--port", "80"]);
        assert_eq!(
            task.env,
            BTreeMap::from([
                ("A".to_string(), "1".to_string()),
                ("B".to_string(), "x=y".to_string()),
            ])
        );
        assert_eq!(task.constraints, vec!["node.labels.zone==a"]);
        assert_eq!(task.spread, vec!["node.labels.rack"]);
        assert_eq!(task.max_replicas_per_node, 2);
        assert_eq!(
            task.resources,
            Resources {
                reserve_nano_cpus: 500_000_000,
                reserve_memory_bytes: 256 * 1024 * 1024,
                limit_nano_cpus: 2_000_000_000,
                limit_memory_bytes: 1024 * 1024 * 1024,
                limit_pids: 0,
                generic: Default::default(),
            }
        );
        assert_eq!(
            task.restart_policy,
            RestartPolicy {
                condition: RestartCondition::OnFailure,
                delay_ms: 2_000,
                max_attempts: 4,
                window_ms: 60_000,
            }
        );
        assert_eq!(task.stop_grace_period_ms, 30_000);
        assert_eq!(
            spec.ports,
            vec![PortConfig::tcp(8080, 80), PortConfig::tcp(0, 443),]
        );
        assert_eq!(spec.validate(), Ok(()));
    }

    #[test]
    fn create_defaults_are_dockers() {
        let spec =
            build_spec(create_args(&["library/nginx:1.25"]).expect("valid")).expect("valid spec");
        assert_eq!(spec.name, "nginx");
        assert_eq!(spec.mode, ServiceMode::Replicated { replicas: 1 });
        assert_eq!(spec.task.restart_policy, RestartPolicy::default());
        assert_eq!(spec.task.restart_policy.delay_ms, 5_000);
        assert_eq!(spec.task.stop_grace_period_ms, 10_000);
        assert!(spec.task.args.is_empty());

        let global = build_spec(create_args(&["--mode", "global", "agent"]).expect("valid"))
            .expect("valid spec");
        assert_eq!(global.mode, ServiceMode::Global);
    }

    #[test]
    fn names_come_from_the_image() {
        assert_eq!(name_from_image("library/nginx:1.25"), "nginx");
        assert_eq!(name_from_image("nginx"), "nginx");
        assert_eq!(name_from_image("localhost:5000/app:v1"), "app");
        assert_eq!(name_from_image("redis@sha256:abc"), "redis");
    }

    #[test]
    fn replicas_with_global_mode_is_a_usage_error_naming_both_flags() {
        let args = create_args(&["--mode", "global", "--replicas", "2", "agent"]).expect("parses");
        let error = anyhow::Error::from(build_spec(args).expect_err("conflict"));
        assert_eq!(Exit::of(&error), Exit::Usage);
        let message = error.to_string();
        assert!(message.contains("--replicas"), "{message}");
        assert!(message.contains("a global mode"), "{message}");
        let args = create_args(&["--max-concurrent", "2", "app"]).expect("parses");
        let message = build_spec(args).expect_err("not a job").to_string();
        assert!(
            message.contains("--max-concurrent is for --mode replicated-job"),
            "{message}"
        );
        let args = create_args(&[
            "--mode",
            "replicated-job",
            "--replicas",
            "5",
            "--max-concurrent",
            "2",
            "app",
        ])
        .expect("parses");
        let job = build_spec(args).expect("valid");
        assert_eq!(
            job.mode,
            ServiceMode::ReplicatedJob {
                completions: 5,
                max_concurrent: 2
            }
        );
        assert_eq!(
            job.task.restart_policy.condition,
            RestartCondition::OnFailure,
            "a job's default: completed tasks are not run again"
        );
    }

    #[test]
    fn a_bad_value_is_a_usage_error_naming_the_flag() {
        for flags in [
            ["--reserve-memory", "lots"],
            ["--limit-cpu", "many"],
            ["--restart-delay", "soon"],
            ["--publish", "80:x"],
            ["--restart-condition", "sometimes"],
        ] {
            let line: Vec<&str> = flags.iter().copied().chain(["nginx"]).collect();
            let error = create_args(&line).expect_err("bad value");
            assert_eq!(error.exit_code(), 2);
            assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
            let message = error.to_string();
            assert!(message.contains(flags[0]), "{message}");
        }
    }

    #[test]
    fn create_prints_the_service_id() {
        let (mut client, log) = fake_daemon();
        let (out, err, result) = run_line(
            &mut client,
            &["essaim", "service", "create", "-d", "-e", "A=1", "redis:7"],
        );
        assert!(result.is_ok(), "{err}");
        assert_eq!(out, "id-new\n");
        let ControlRequest::ServiceCreate { spec } = &log.borrow()[0] else {
            panic!("sent {:?}", log.borrow());
        };
        assert_eq!(spec.name, "redis");
    }

    #[test]
    fn a_refused_spec_is_shown_as_is() {
        let mut client = Client::from_fn(|_| {
            Box::pin(async {
                Err(ControlError::InvalidArgument(
                    "--constraint: bad expression".to_string(),
                ))
            })
        });
        let (_, err, result) =
            run_line(&mut client, &["essaim", "service", "create", "-d", "nginx"]);
        let error = result.expect_err("refused");
        assert_eq!(Exit::of(&error), Exit::Failed);
        assert_eq!(render::error_line(&error), "--constraint: bad expression");
        assert!(err.is_empty(), "main prints it: {err}");
    }

    #[test]
    fn ls_shows_running_over_desired() {
        let (mut client, _) = fake_daemon();
        let (out, _, result) = run_line(&mut client, &["essaim", "service", "ls"]);
        assert!(result.is_ok());
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines[0],
            "ID             NAME   MODE         REPLICAS   IMAGE        PORTS"
        );
        assert_eq!(
            lines[1],
            "0123456789ab   web    replicated   2/3        nginx:1.25   *:8080->80/tcp"
        );
    }

    #[test]
    fn ps_hides_dead_history_unless_all() {
        let (mut client, log) = fake_daemon();
        let (out, _, result) = run_line(&mut client, &["essaim", "service", "ps", "web"]);
        assert!(result.is_ok());
        assert_eq!(
            log.borrow()[0],
            ControlRequest::TaskList {
                service: Some("web".to_string()),
                node: None
            }
        );
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(lines[0].starts_with("ID "), "{out}");
        assert!(lines[1].starts_with("live-1 "), "{out}");
        assert!(lines[1].contains("   Running         Running"), "{out}");
        assert!(lines[2].starts_with("live-2 "), "{out}");
        assert!(
            lines[2].contains("Pending (no suitable node: drained)"),
            "{out}"
        );
        assert!(!out.contains("\\_"), "{out}");

        let (out, _, result) = run_line(&mut client, &["essaim", "service", "ps", "-a", "web"]);
        assert!(result.is_ok());
        let names: Vec<String> = out
            .lines()
            .skip(1)
            .map(|line| {
                let (id, rest) = line.split_once(' ').expect("columns");
                let name = rest.trim_start();
                let name = name.split("   ").next().expect("name");
                format!("{id} {name}")
            })
            .collect();
        assert_eq!(
            names,
            vec![
                "live-1 web.1",
                "old-1 \\_ web.1",
                "older-1 \\_ web.1",
                "live-2 web.2",
            ],
            "{out}"
        );
    }

    #[test]
    fn ps_filters_on_desired_state_showing_stopped_tasks_too() {
        let (mut client, _) = fake_daemon();
        let line = ["essaim", "service", "ps", "-q", "--filter"];
        let (out, _, result) = run_line(
            &mut client,
            &[&line[..], &["desired-state=running", "web"]].concat(),
        );
        assert!(result.is_ok());
        assert_eq!(out, "live-1\nlive-2\n");

        // Without -a: the filter asks for the stopped tasks.
        let (out, _, result) = run_line(
            &mut client,
            &[&line[..], &["desired-state=shutdown", "web"]].concat(),
        );
        assert!(result.is_ok());
        assert_eq!(out, "old-1\nolder-1\n");

        // Values of one key add up.
        let (out, _, result) = run_line(
            &mut client,
            &[
                &line[..],
                &[
                    "desired-state=running",
                    "-f",
                    "desired-state=Shutdown",
                    "web",
                ],
            ]
            .concat(),
        );
        assert!(result.is_ok());
        assert_eq!(out, "live-1\nold-1\nolder-1\nlive-2\n");
    }

    #[test]
    fn the_node_filter_takes_a_hostname_an_id_or_an_id_prefix() {
        let mut tasks = tasks();
        tasks[1].task.node_id = Some("n2abc".to_string());
        tasks[1].node_hostname = Some("w2".to_string());
        let ids = |filters: &[TaskFilter]| -> Vec<String> {
            filter_tasks(&tasks, filters)
                .into_iter()
                .map(|view| view.task.id)
                .collect()
        };
        let node = |name: &str| TaskFilter::Node(name.to_string());
        assert_eq!(ids(&[node("w2")]), vec!["live-2"]);
        assert_eq!(ids(&[node("n2abc")]), vec!["live-2"]);
        assert_eq!(ids(&[node("n2")]), vec!["live-2"]);
        assert_eq!(ids(&[node("w1"), node("w2")]).len(), 4);
        assert!(ids(&[node("w3")]).is_empty());
        // Different keys must all match.
        assert_eq!(
            ids(&[node("w1"), TaskFilter::DesiredState(TaskState::Running)]),
            vec!["live-1"]
        );
        assert_eq!(ids(&[]).len(), 4);
    }

    #[test]
    fn a_bad_filter_is_a_usage_error_naming_it() {
        for (filter, expected) in [
            ("color=red", "unknown filter key \"color\""),
            ("desired-state=remove", "invalid desired-state \"remove\""),
            ("node", "expected KEY=VALUE"),
            ("node=", "the node is empty"),
        ] {
            let error = parse(&["essaim", "service", "ps", "--filter", filter, "web"])
                .expect_err("bad filter");
            assert_eq!(error.exit_code(), 2);
            let message = error.to_string();
            assert!(message.contains(expected), "{message}");
            assert!(message.contains("--filter"), "{message}");
        }
        let error = parse(&["essaim", "node", "ps", "-f", "colour=red", "w1"]).expect_err("bad");
        assert!(error.to_string().contains("\"colour\""), "{error}");
    }

    #[test]
    fn node_ps_takes_filters_too() {
        let (mut client, _) = fake_daemon();
        let (out, _, result) = run_line(
            &mut client,
            &[
                "essaim",
                "node",
                "ps",
                "-q",
                "--filter",
                "desired-state=shutdown",
                "w1",
            ],
        );
        assert!(result.is_ok());
        assert_eq!(out, "old-1\nolder-1\n");
    }

    #[test]
    fn node_ps_lists_the_tasks_of_the_node() {
        let (mut client, log) = fake_daemon();
        let (out, _, result) = run_line(&mut client, &["essaim", "node", "ps", "-q", "w1"]);
        assert!(result.is_ok());
        assert_eq!(out, "live-1\nlive-2\n");
        assert_eq!(
            log.borrow()[0],
            ControlRequest::TaskList {
                service: None,
                node: Some("w1".to_string())
            }
        );
    }

    #[test]
    fn scale_reads_docker_syntax_and_goes_on_past_failures() {
        let (mut client, log) = fake_daemon();
        let (out, err, result) = run_line(
            &mut client,
            &["essaim", "service", "scale", "-d", "ghost=1", "web=5"],
        );
        assert_eq!(out, "web scaled to 5\n");
        assert_eq!(err, "Error: service ghost not found\n");
        assert!(result.is_err());
        assert_eq!(
            log.borrow()[1],
            ControlRequest::ServiceScale {
                service: "web".to_string(),
                replicas: 5
            }
        );

        let error = parse(&["essaim", "service", "scale", "web=x"]).expect_err("not a number");
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("web=x"), "{error}");
        assert!(parse(&["essaim", "service", "scale", "web"]).is_err());
    }

    #[test]
    fn rm_prints_each_name() {
        let (mut client, _) = fake_daemon();
        let (out, _, result) = run_line(&mut client, &["essaim", "service", "rm", "web"]);
        assert!(result.is_ok());
        assert_eq!(out, "web\n");
    }

    #[test]
    fn limits_logging_and_env_files_come_from_docker_s_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("app.env");
        std::fs::write(&file, "# settings\nA=from-file\nB=from-file\n").expect("env file");
        let file = file.display().to_string();
        let args = create_args(&[
            "--env-file",
            &file,
            "-e",
            "B=from-flag",
            "--ulimit",
            "nofile=1024:2048",
            "--sysctl",
            "net.core.somaxconn=1024",
            "--log-driver",
            "json-file",
            "--log-opt",
            "max-size=10m",
            "--limit-pids",
            "100",
            "--health-cmd",
            "true",
            "--health-start-interval",
            "1s",
            "app:1",
        ])
        .expect("valid flags");
        let task = build_spec(args).expect("valid").task;
        assert_eq!(task.env["A"], "from-file");
        assert_eq!(task.env["B"], "from-flag", "--env wins over the file");
        assert_eq!(task.container.ulimits[0].to_string(), "nofile=1024:2048");
        assert_eq!(task.container.sysctls["net.core.somaxconn"], "1024");
        assert_eq!(task.container.log_options["max-size"], "10m");
        assert_eq!(task.resources.limit_pids, 100);
        assert_eq!(task.healthcheck.expect("check").start_interval_ms, 1000);
        let missing = create_args(&["--env-file", "/no/such.env", "app:1"]).expect("parses");
        let error = build_spec(missing).expect_err("unreadable").to_string();
        assert!(
            error.starts_with("--env-file /no/such.env: cannot read it"),
            "{error}"
        );
        let error = create_args(&["--ulimit", "files=1", "app:1"])
            .expect_err("unknown")
            .to_string();
        assert!(error.contains("unknown limit \"files\""), "{error}");
    }

    #[test]
    fn mounts_come_from_docker_s_long_form() {
        let args = create_args(&[
            "--mount",
            "type=bind,source=/srv,target=/www,readonly",
            "--mount",
            "source=data,target=/db",
            "app:1",
        ])
        .expect("valid flags");
        let mounts = build_spec(args).expect("valid").task.mounts;
        assert_eq!(mounts.len(), 2);
        assert_eq!(mounts[1].to_string(), "type=volume,source=data,target=/db");
        let error = create_args(&["--mount", "source=data", "app:1"])
            .expect_err("no target")
            .to_string();
        assert!(
            error.contains("--mount") && error.contains("no target"),
            "{error}"
        );
    }

    #[test]
    fn container_options_come_from_docker_s_flags() {
        let args = create_args(&[
            "--entrypoint",
            "/bin/app --verbose",
            "-u",
            "app:staff",
            "--group",
            "audio",
            "-w",
            "/srv",
            "--hostname",
            "web-1",
            "--dns",
            "10.9.9.9",
            "--dns-search",
            "example.org",
            "--dns-option",
            "ndots:2",
            "--add-host",
            "db.local:10.0.0.9",
            "--container-label",
            "team=shop",
            "--stop-signal",
            "SIGQUIT",
            "--init",
            "--read-only",
            "-t",
            "--cap-add",
            "NET_ADMIN",
            "--cap-drop",
            "ALL",
            "app:1",
            "serve",
        ])
        .expect("valid flags");
        let options = build_spec(args).expect("valid").task.container;
        assert_eq!(options.entrypoint, ["/bin/app", "--verbose"]);
        assert_eq!(options.user, "app:staff");
        assert_eq!(options.groups, ["audio"]);
        assert_eq!(options.workdir, "/srv");
        assert_eq!(options.hostname, "web-1");
        assert_eq!(
            options.dns,
            ["10.9.9.9".parse::<std::net::IpAddr>().expect("ip")]
        );
        assert_eq!(options.dns_search, ["example.org"]);
        assert_eq!(options.dns_options, ["ndots:2"]);
        assert_eq!(options.hosts[0].to_string(), "db.local:10.0.0.9");
        assert_eq!(options.labels["team"], "shop");
        assert_eq!(options.stop_signal, "SIGQUIT");
        assert!(options.init && options.read_only && options.tty);
        assert_eq!(
            (options.cap_add, options.cap_drop),
            (vec!["NET_ADMIN".to_string()], vec!["ALL".to_string()])
        );
        for (flag, value) in [
            ("--dns", "not-an-ip"),
            ("--add-host", "db"),
            ("--entrypoint", "'open"),
        ] {
            let error = create_args(&[flag, value, "app:1"])
                .expect_err(flag)
                .to_string();
            assert!(error.contains(flag), "{error}");
        }
    }

    #[test]
    fn inspect_pretty_lists_the_spec() {
        let mut view = service_view("id1", "web", 1, 1);
        view.service.spec.task.resources.reserve_memory_bytes = 512 * 1024 * 1024;
        view.service.spec.task.env = BTreeMap::from([("A".to_string(), "1".to_string())]);
        view.service.spec.task.container.user = "app".to_string();
        view.service.spec.task.container.dns_search = vec!["example.org".to_string()];
        view.service.spec.task.mounts = vec!["type=tmpfs,target=/cache".parse().expect("mount")];
        let text = render::service_pretty(&view);
        assert!(text.contains("User:"), "{text}");
        assert!(text.contains("DNS:\n Search:"), "{text}");
        assert!(
            text.contains("Mounts:\n - type=tmpfs,target=/cache\n"),
            "{text}"
        );
        assert!(text.starts_with("ID:"), "{text}");
        assert!(text.contains("Env:\n - A=1\n"), "{text}");
        assert!(
            text.contains("Resources:\n Reservations:\n  Memory:"),
            "{text}"
        );
        assert!(text.contains("Restart policy:\n Condition:"), "{text}");
        assert!(
            text.contains("PublishedPort = 8080, TargetPort = 80"),
            "{text}"
        );
    }
}
