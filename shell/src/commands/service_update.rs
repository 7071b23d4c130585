//! `essaim service update` and `service rollback`: read the service, edit a copy of its spec
//! as the flags say, and send it back with the version read, so that a concurrent change is
//! refused, not lost; then follow the rolling update it starts. `--continue` goes on with a
//! paused update, `--rollback` goes back.

use essaim_api::control::ServiceView;
use essaim_core::model::{Checkpoint, FileKind, Protocol, ServiceMode, ServiceSpec, UpdateState};

use crate::cli::{ServiceChanges, ServiceRollbackArgs, ServiceUpdateArgs};
use crate::client::Client;
use crate::converge::Operation;
use crate::render::Output;

/// # Errors
/// The service is unknown, a flag removes something the service does not have or does not
/// fit its mode, or the leader refused the new spec (invalid, or the service changed since it
/// was read).
pub async fn run(
    args: ServiceUpdateArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let read = client.service_inspect(&args.service).await?;
    let name = read.service.spec.name.clone();
    if args.rollback {
        let view = client.service_rollback(&read).await?;
        output.print(&format!("{}\n", view.service.id))?;
        return follow(client, &name, Operation::Rollback, args.wait.detach, output).await;
    }
    let mut spec = apply(&read.service.spec, &args.changes)?;
    args.update
        .apply(&mut spec.update_config, &mut spec.rollback_config);
    let paused = read.service.update_status.as_ref().is_some_and(|status| {
        matches!(
            status.state,
            UpdateState::Paused | UpdateState::RollbackPaused
        )
    });
    // `--continue`, or `service update web` with nothing to change on a paused update, as
    // Swarm resumes one.
    if args.resume || (spec == read.service.spec && paused) {
        let view = client
            .service_update_continue(
                &read.service.id,
                args.update
                    .update_pause_after
                    .and_then(|pause| pause.0)
                    .map(|checkpoint| share_of_replicas(&read, checkpoint)),
            )
            .await?;
        output.print(&format!("{}\n", view.service.id))?;
        return follow(client, &name, Operation::Update, args.wait.detach, output).await;
    }
    if spec == read.service.spec {
        output.note(&format!("{name}: nothing to change\n"));
        return Ok(());
    }
    let replaces_tasks =
        spec.task != read.service.spec.task || spec.ports != read.service.spec.ports;
    let under_way = read.service.update_status.as_ref().is_some_and(|status| {
        matches!(
            status.state,
            UpdateState::Updating | UpdateState::RollbackStarted
        )
    });
    if replaces_tasks && under_way {
        output.note(&format!(
            "{name} was being updated: the new spec replaces that update\n"
        ));
    }
    let view = client.service_update(&read, spec).await?;
    output.print(&format!("{}\n", view.service.id))?;
    follow(client, &name, Operation::Update, args.wait.detach, output).await
}

/// The checkpoint `--continue` sends for the one an operator gave: a percentage is a share
/// of all the replicas (50% of 4 pauses at the second task updated), while the managers count
/// a checkpoint from the tasks already updated, so it becomes the tasks left to that share.
pub fn share_of_replicas(view: &ServiceView, checkpoint: Checkpoint) -> Checkpoint {
    if !matches!(checkpoint, Checkpoint::Percent(_)) {
        return checkpoint;
    }
    let updated = view.service.update_status.as_ref().map_or(0, |s| s.updated);
    Checkpoint::Tasks(
        checkpoint
            .tasks(view.desired)
            .saturating_sub(updated)
            .max(1),
    )
}

/// `service rollback SERVICE`.
///
/// # Errors
/// No such service, no previous spec, or the wait failed.
pub async fn rollback(
    args: ServiceRollbackArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let read = client.service_inspect(&args.service).await?;
    let view = client.service_rollback(&read).await?;
    output.print(&format!("{}\n", view.service.id))?;
    let name = view.service.spec.name.clone();
    follow(client, &name, Operation::Rollback, args.wait.detach, output).await
}

/// Waits for `operation` unless `detach`.
async fn follow(
    client: &mut Client,
    name: &str,
    operation: Operation,
    detach: bool,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    if detach {
        return Ok(());
    }
    crate::converge::wait(client, name, None, operation, output).await
}

/// Why `service update` refused its flags before sending anything (exit 1: the flags are
/// well formed, the service does not fit them).
#[derive(Debug, PartialEq, Eq)]
pub enum UpdateError {
    /// A `--*-rm` flag names something the service does not have.
    Absent {
        flag: &'static str,
        value: String,
        service: String,
        what: &'static str,
    },
    /// `--replicas` for a global service.
    ReplicasOfGlobal { service: String },
    /// `--with-registry-auth` found no credentials to send.
    RegistryAuth(String),
}

impl std::fmt::Display for UpdateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpdateError::Absent {
                flag,
                value,
                service,
                what,
            } => write!(f, "{flag} {value}: service {service} has no {what} {value}"),
            UpdateError::ReplicasOfGlobal { service } => write!(
                f,
                "--replicas: service {service} is global: it runs one task per node and has \
                 no replicas to set"
            ),
            UpdateError::RegistryAuth(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for UpdateError {}

/// `spec` as `changes` edit it. Removals apply before additions (`--env-rm A --env-add A=2`
/// replaces A); what the flags do not name stays as it is. The result is not validated here:
/// the leader does that, for every client alike.
///
/// # Errors
/// A removal of something `spec` does not have, or `--replicas` for a global service.
pub fn apply(spec: &ServiceSpec, changes: &ServiceChanges) -> Result<ServiceSpec, UpdateError> {
    let mut new = spec.clone();
    let absent = |flag, what, value: &str| UpdateError::Absent {
        flag,
        value: value.to_string(),
        service: spec.name.clone(),
        what,
    };

    if let Some(replicas) = changes.replicas {
        match new.mode {
            ServiceMode::Replicated { .. } => new.mode = ServiceMode::Replicated { replicas },
            ServiceMode::ReplicatedJob { max_concurrent, .. } => {
                new.mode = ServiceMode::ReplicatedJob {
                    completions: replicas,
                    max_concurrent,
                }
            }
            ServiceMode::Global | ServiceMode::GlobalJob => {
                return Err(UpdateError::ReplicasOfGlobal {
                    service: spec.name.clone(),
                })
            }
        }
    }

    if let Some(mode) = changes.endpoint_mode {
        new.endpoint_mode = mode;
    }

    for key in &changes.label_rm {
        new.labels
            .remove(key)
            .ok_or_else(|| absent("--label-rm", "label", key))?;
    }
    new.labels.extend(changes.label_add.iter().cloned());

    let task = &mut new.task;
    if let Some(image) = &changes.image {
        task.image.clone_from(image);
    }
    if let Some(args) = &changes.args {
        task.args.clone_from(&args.0);
    }

    for key in &changes.env_rm {
        task.env
            .remove(key)
            .ok_or_else(|| absent("--env-rm", "environment variable", key))?;
    }
    task.env.extend(changes.env_add.iter().cloned());

    // Constraints are compared without their spaces: `a == b` and `a==b` are one constraint.
    let squeeze = |text: &str| text.split_whitespace().collect::<String>();
    for expr in &changes.constraint_rm {
        let before = task.constraints.len();
        task.constraints.retain(|c| squeeze(c) != squeeze(expr));
        if task.constraints.len() == before {
            return Err(absent("--constraint-rm", "constraint", expr));
        }
    }
    for expr in &changes.constraint_add {
        if !task.constraints.iter().any(|c| squeeze(c) == squeeze(expr)) {
            task.constraints.push(expr.clone());
        }
    }

    for path in &changes.placement_pref_rm {
        let before = task.spread.len();
        task.spread.retain(|p| p != path);
        if task.spread.len() == before {
            return Err(absent(
                "--placement-pref-rm",
                "placement preference",
                &format!("spread={path}"),
            ));
        }
    }
    for path in &changes.placement_pref_add {
        if !task.spread.contains(path) {
            task.spread.push(path.clone());
        }
    }

    if let Some(n) = changes.replicas_max_per_node {
        task.max_replicas_per_node = n;
    }
    let resources = &mut task.resources;
    set(&mut resources.reserve_nano_cpus, changes.reserve_cpu);
    set(&mut resources.reserve_memory_bytes, changes.reserve_memory);
    set(&mut resources.limit_nano_cpus, changes.limit_cpu);
    set(&mut resources.limit_memory_bytes, changes.limit_memory);
    set(&mut resources.limit_pids, changes.limit_pids);
    for kind in &changes.generic_resource_rm {
        if resources.generic.remove(kind).is_none() {
            return Err(absent("--generic-resource-rm", "generic resource", kind));
        }
    }
    resources
        .generic
        .extend(changes.generic_resource_add.iter().cloned());
    let restart = &mut task.restart_policy;
    set(&mut restart.condition, changes.restart_condition);
    set(&mut restart.delay_ms, changes.restart_delay);
    set(&mut restart.max_attempts, changes.restart_max_attempts);
    set(&mut restart.window_ms, changes.restart_window);
    set(&mut task.stop_grace_period_ms, changes.stop_grace_period);
    for network in &changes.network_rm {
        let before = task.networks.len();
        task.networks.retain(|n| n.target != *network);
        if task.networks.len() == before {
            return Err(absent("--network-rm", "network", network));
        }
    }
    for network in &changes.network_add {
        // Added again, a network takes the aliases given now.
        task.networks.retain(|n| n.target != network.target);
        task.networks.push(network.clone());
    }
    task.healthcheck = changes.health().apply(task.healthcheck.take());
    for target in &changes.mount_rm {
        let before = task.mounts.len();
        let bare = target.trim_end_matches('/');
        task.mounts
            .retain(|m| m.target.trim_end_matches('/') != bare);
        if task.mounts.len() == before {
            return Err(absent("--mount-rm", "mount at", target));
        }
    }
    for mount in &changes.mount_add {
        // One mount per target: adding one again replaces it.
        let bare = mount.target.trim_end_matches('/');
        task.mounts
            .retain(|m| m.target.trim_end_matches('/') != bare);
        task.mounts.push(mount.clone());
    }
    for (kind, removed, added) in [
        (FileKind::Secret, &changes.secret_rm, &changes.secret_add),
        (FileKind::Config, &changes.config_rm, &changes.config_add),
    ] {
        let files = match kind {
            FileKind::Secret => &mut task.secrets,
            FileKind::Config => &mut task.configs,
        };
        for name in removed {
            let before = files.len();
            files.retain(|f| f.source != *name);
            if files.len() == before {
                let flag = if kind == FileKind::Secret {
                    "--secret-rm"
                } else {
                    "--config-rm"
                };
                return Err(absent(flag, kind.as_str(), name));
            }
        }
        for reference in added {
            // One file per path in the task: adding one there again replaces it.
            let path = reference.path_in_task(kind);
            files.retain(|f| f.path_in_task(kind) != path);
            files.push(reference.clone());
        }
    }
    changes
        .container
        .apply(&mut task.container)
        .map_err(|(flag, what, value)| absent(flag, what, &value))?;
    if changes.with_registry_auth {
        let credentials = crate::registry_auth::credentials_for(&task.image)
            .map_err(UpdateError::RegistryAuth)?;
        task.registry_auth = Some(essaim_core::model::RegistryAuth::Given(credentials));
    }
    if changes.force {
        // Any change of the task spec replaces the tasks; this one changes nothing else.
        task.force_update = task.force_update.wrapping_add(1);
    }

    for port in &changes.publish_rm {
        let before = new.ports.len();
        // A bare TARGET (published 0) removes every mapping to that target (TCP unless
        // `/udp` is given).
        new.ports.retain(|p| {
            p.target != port.target
                || p.protocol != port.protocol
                || (port.published != 0 && p.published != port.published)
        });
        if new.ports.len() == before {
            // As the user typed it: TCP is the default, left unsaid.
            let suffix = match port.protocol {
                Protocol::Tcp => "",
                Protocol::Udp => "/udp",
            };
            let value = match port.published {
                0 => format!("{}{suffix}", port.target),
                published => format!("{published}:{}{suffix}", port.target),
            };
            return Err(absent("--publish-rm", "published port", &value));
        }
    }
    for port in &changes.publish_add {
        // A node port leads to one target: publishing it again points it elsewhere.
        let same_node_port = new.ports.iter().position(|p| {
            port.published != 0 && p.published == port.published && p.protocol == port.protocol
        });
        match same_node_port {
            Some(index) => new.ports[index] = *port,
            None if !new.ports.contains(port) => new.ports.push(*port),
            None => {}
        }
    }
    Ok(new)
}

fn set<T>(field: &mut T, value: Option<T>) {
    if let Some(value) = value {
        *field = value;
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;

    use clap::Parser;
    use essaim_api::control::ServiceView;
    use essaim_api::{ControlError, ControlReply, ControlRequest};
    use essaim_core::model::{
        PortConfig, Resources, RestartCondition, RestartPolicy, Service, TaskSpec,
    };
    use essaim_core::Timestamp;

    use super::*;
    use crate::cli::{Cli, Command, CommandArgs, ServiceCommand};
    use crate::commands::run_line;
    use crate::Exit;

    fn spec() -> ServiceSpec {
        ServiceSpec {
            name: "web".to_string(),
            labels: BTreeMap::from([("team".to_string(), "core".to_string())]),
            mode: ServiceMode::Replicated { replicas: 2 },
            task: TaskSpec {
                image: "nginx:1.25".to_string(),
                args: vec!["serve".to_string()],
                env: BTreeMap::from([
                    ("A".to_string(), "1".to_string()),
                    ("B".to_string(), "2".to_string()),
                ]),
                constraints: vec!["node.labels.zone == a".to_string()],
                spread: vec!["node.labels.rack".to_string()],
                stop_grace_period_ms: 10_000,
                ..TaskSpec::default()
            },
            ports: vec![PortConfig::tcp(8080, 80), PortConfig::tcp(8443, 443)],
            update_config: Default::default(),
            rollback_config: Default::default(),
            endpoint_mode: Default::default(),
        }
    }

    fn update_args(flags: &[&str]) -> Result<ServiceUpdateArgs, clap::Error> {
        let line = ["essaim", "service", "update"]
            .iter()
            .chain(flags)
            .chain(&["web"]);
        match Cli::try_parse_from(line)?.command.expect("a command") {
            Command::Service {
                command: ServiceCommand::Update(args),
            } => Ok(*args),
            other => panic!("parsed as another command: {other:?}"),
        }
    }

    /// `spec()` as the flags edit it.
    fn updated(flags: &[&str]) -> Result<ServiceSpec, UpdateError> {
        apply(&spec(), &update_args(flags).expect("valid flags").changes)
    }

    #[test]
    fn update_with_nothing_to_change_sends_nothing() {
        // No flags: Swarm's way of going on with a paused update; with none, nothing to do.
        let (mut client, log) = fake_daemon();
        let (_, err, result) = run_line(&mut client, &["essaim", "service", "update", "web"]);
        assert!(result.is_ok(), "{err}");
        assert!(err.contains("web: nothing to change"), "{err}");
        assert!(log
            .borrow()
            .iter()
            .all(|request| !matches!(request, ControlRequest::ServiceUpdate { .. })));
        // --force alone is a change: it redeploys.
        assert!(update_args(&["--force"]).is_ok());
    }

    #[test]
    fn health_flags_change_only_their_part_and_no_healthcheck_disables_it() {
        let spec =
            updated(&["--health-cmd", "test -f /ready", "--health-retries", "5"]).expect("valid");
        let check = spec.task.healthcheck.clone().expect("a health check");
        assert_eq!(check.test, vec!["CMD-SHELL", "test -f /ready"]);
        assert_eq!(check.retries, 5);

        let mut changes = update_args(&["--health-interval", "2s"])
            .expect("valid flags")
            .changes;
        let edited = apply(&spec, &changes).expect("valid");
        let check = edited.task.healthcheck.expect("a health check");
        assert_eq!(check.test, vec!["CMD-SHELL", "test -f /ready"], "kept");
        assert_eq!((check.interval_ms, check.retries), (2_000, 5));

        changes = update_args(&["--no-healthcheck"]).expect("valid").changes;
        let disabled = apply(&spec, &changes).expect("valid");
        assert_eq!(
            disabled.task.healthcheck.map(|c| c.test),
            Some(vec!["NONE".to_string()])
        );
        assert!(update_args(&["--no-healthcheck", "--health-cmd", "true"]).is_err());
    }

    #[test]
    fn ulimits_sysctls_and_log_options_are_added_removed_and_replaced() {
        let spec = updated(&[
            "--ulimit-add",
            "nofile=10:20",
            "--sysctl-add",
            "a.b=1",
            "--log-driver",
            "json-file",
            "--log-opt",
            "max-size=1m",
            "--limit-pids",
            "50",
        ])
        .expect("valid");
        let changes = update_args(&[
            "--ulimit-add",
            "nofile=30:40",
            "--sysctl-rm",
            "a.b",
            "--log-opt",
            "max-file=2",
        ])
        .expect("valid")
        .changes;
        let next = apply(&spec, &changes).expect("valid");
        let options = &next.task.container;
        assert_eq!(options.ulimits.len(), 1);
        assert_eq!(options.ulimits[0].to_string(), "nofile=30:40");
        assert!(options.sysctls.is_empty());
        assert_eq!(options.log_driver, "json-file");
        assert_eq!(
            options.log_options.keys().collect::<Vec<_>>(),
            ["max-file"],
            "new options replace the old"
        );
        assert_eq!(next.task.resources.limit_pids, 50);
    }

    #[test]
    fn a_boolean_option_just_before_the_service_does_not_take_its_name() {
        let args = update_args(&["--tty"]).expect("valid");
        assert_eq!(args.service, "web");
        assert_eq!(args.changes.container.tty, Some(true));
        let args = update_args(&["--read-only=false"]).expect("valid");
        assert_eq!(args.changes.container.read_only, Some(false));
    }

    #[test]
    fn mounts_are_added_replaced_by_target_and_removed() {
        let spec = updated(&[
            "--mount-add",
            "source=data,target=/db",
            "--mount-add",
            "type=tmpfs,target=/cache",
        ])
        .expect("valid");
        assert_eq!(spec.task.mounts.len(), 2);
        let changes = update_args(&[
            "--mount-rm",
            "/cache",
            "--mount-add",
            "source=other,target=/db/",
        ])
        .expect("valid")
        .changes;
        let next = apply(&spec, &changes).expect("valid");
        assert_eq!(
            next.task
                .mounts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["type=volume,source=other,target=/db/"]
        );
        let changes = update_args(&["--mount-rm", "/nowhere"])
            .expect("valid")
            .changes;
        assert_eq!(
            apply(&next, &changes).expect_err("absent").to_string(),
            "--mount-rm /nowhere: service web has no mount at /nowhere"
        );
    }

    #[test]
    fn container_options_are_set_cleared_added_and_removed() {
        let spec = updated(&[
            "--user",
            "app",
            "--workdir",
            "/srv",
            "--group-add",
            "audio",
            "--host-add",
            "db:10.0.0.9",
            "--host-add",
            "cache:10.0.0.8",
            "--container-label-add",
            "team=shop",
            "--read-only",
            "--cap-add",
            "NET_ADMIN",
        ])
        .expect("valid");
        let options = &spec.task.container;
        assert_eq!(
            (options.user.as_str(), options.workdir.as_str()),
            ("app", "/srv")
        );
        assert_eq!(options.groups, ["audio"]);
        assert_eq!(options.hosts.len(), 2);
        assert!(options.read_only);
        assert!(spec.changes_tasks(&self::spec()), "a rolling update");

        let mut changes = update_args(&[
            "--user",
            "",
            "--host-add",
            "db:10.0.0.10",
            "--host-rm",
            "cache",
            "--read-only=false",
            "--cap-drop",
            "NET_ADMIN",
        ])
        .expect("valid")
        .changes;
        let next = apply(&spec, &changes).expect("valid");
        let options = &next.task.container;
        assert_eq!(options.user, "", "back to the image's");
        assert_eq!(options.workdir, "/srv", "untouched");
        assert_eq!(
            options
                .hosts
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>(),
            ["db:10.0.0.10"]
        );
        assert!(!options.read_only);
        assert!(options.cap_add.is_empty());
        assert_eq!(options.cap_drop, ["NET_ADMIN"]);

        changes = update_args(&["--group-rm", "video"])
            .expect("valid")
            .changes;
        assert_eq!(
            apply(&next, &changes).expect_err("absent").to_string(),
            "--group-rm video: service web has no group video"
        );
    }

    #[test]
    fn networks_are_added_once_and_a_missing_one_cannot_be_removed() {
        let spec = updated(&["--network-add", "front", "--network-add", "front"]).expect("valid");
        let names: Vec<&str> = spec
            .task
            .networks
            .iter()
            .map(|n| n.target.as_str())
            .collect();
        assert_eq!(names, ["front"]);
        let spec = updated(&["--network-add", "name=front,alias=www,alias=web2"]).expect("valid");
        assert_eq!(spec.task.networks[0].aliases, ["www", "web2"]);
        let error = updated(&["--network-rm", "back"]).expect_err("not attached");
        assert!(error.to_string().contains("back"), "{error}");
        assert!(update_args(&["--network-add", "-bad"]).is_err());
    }

    #[test]
    fn update_flags_parse_with_the_create_parsers() {
        let args = update_args(&[
            "--reserve-cpu",
            "0.5",
            "--limit-memory",
            "1G",
            "--restart-delay",
            "2s",
            "--publish-add",
            "9090:90",
            "--publish-rm",
            "443",
            "--placement-pref-add",
            "spread=node.labels.zone",
            "--env-add",
            "C=x=y",
            "--env-add",
            "D=4",
            "--args",
            "-c 'sleep 10'",
        ])
        .expect("valid flags");
        let changes = &args.changes;
        assert_eq!(args.service, "web");
        assert_eq!(changes.reserve_cpu, Some(500_000_000));
        assert_eq!(changes.limit_memory, Some(1024 * 1024 * 1024));
        assert_eq!(changes.restart_delay, Some(2_000));
        assert_eq!(changes.publish_add, vec![PortConfig::tcp(9090, 90)]);
        assert_eq!(changes.publish_rm, vec![PortConfig::tcp(0, 443)]);
        assert_eq!(changes.placement_pref_add, vec!["node.labels.zone"]);
        assert_eq!(
            changes.env_add,
            vec![
                ("C".to_string(), "x=y".to_string()),
                ("D".to_string(), "4".to_string())
            ]
        );
        assert_eq!(
            changes.args,
            Some(CommandArgs(vec!["-c".to_string(), "sleep 10".to_string()]))
        );
    }

    #[test]
    fn a_bad_update_value_is_a_usage_error_naming_the_flag() {
        for flags in [
            ["--reserve-memory", "lots"],
            ["--limit-cpu", "many"],
            ["--stop-grace-period", "soon"],
            ["--publish-add", "80:x"],
            ["--publish-rm", "x"],
            ["--placement-pref-add", "pack=node.labels.zone"],
            ["--restart-condition", "sometimes"],
            ["--env-add", "=1"],
            ["--args", "sh -c 'echo"],
            ["--replicas", "-1"],
        ] {
            let error = update_args(&flags).expect_err("bad value");
            assert_eq!(error.exit_code(), 2, "{flags:?}");
            let message = error.to_string();
            assert!(message.contains(flags[0]), "{message}");
        }
    }

    #[test]
    fn update_changes_only_what_the_flags_name() {
        let new = updated(&["--image", "nginx:1.27"]).expect("valid");
        let mut expected = spec();
        expected.task.image = "nginx:1.27".to_string();
        assert_eq!(new, expected);
    }

    #[test]
    fn update_edits_every_part_of_the_spec() {
        let new = updated(&[
            "--replicas",
            "5",
            "--args",
            "run --port 80",
            "--label-add",
            "tier=front",
            "--label-rm",
            "team",
            "--constraint-add",
            "node.role==worker",
            "--placement-pref-add",
            "spread=node.labels.zone",
            "--replicas-max-per-node",
            "2",
            "--reserve-cpu",
            "0.25",
            "--reserve-memory",
            "128M",
            "--limit-cpu",
            "1",
            "--limit-memory",
            "256M",
            "--restart-condition",
            "on-failure",
            "--restart-delay",
            "1s",
            "--restart-max-attempts",
            "3",
            "--restart-window",
            "2m",
            "--stop-grace-period",
            "30s",
        ])
        .expect("valid");
        assert_eq!(new.mode, ServiceMode::Replicated { replicas: 5 });
        assert_eq!(
            new.labels,
            BTreeMap::from([("tier".to_string(), "front".to_string())])
        );
        let task = &new.task;
        assert_eq!(task.args, vec!["run", "--port", "80"]);
        assert_eq!(
            task.constraints,
            vec!["node.labels.zone == a", "node.role==worker"]
        );
        assert_eq!(task.spread, vec!["node.labels.rack", "node.labels.zone"]);
        assert_eq!(task.max_replicas_per_node, 2);
        assert_eq!(
            task.resources,
            Resources {
                reserve_nano_cpus: 250_000_000,
                reserve_memory_bytes: 128 * 1024 * 1024,
                limit_nano_cpus: 1_000_000_000,
                limit_memory_bytes: 256 * 1024 * 1024,
                limit_pids: 0,
                generic: Default::default(),
            }
        );
        assert_eq!(
            task.restart_policy,
            RestartPolicy {
                condition: RestartCondition::OnFailure,
                delay_ms: 1_000,
                max_attempts: 3,
                window_ms: 120_000,
            }
        );
        assert_eq!(task.stop_grace_period_ms, 30_000);
        // Untouched.
        assert_eq!(task.image, "nginx:1.25");
        assert_eq!(task.env, spec().task.env);
        assert_eq!(new.ports, spec().ports);
        assert_eq!(task.force_update, 0);
    }

    #[test]
    fn removals_apply_before_additions() {
        let new = updated(&["--env-rm", "A", "--env-add", "A=9", "--env-rm", "B"]).expect("valid");
        assert_eq!(
            new.task.env,
            BTreeMap::from([("A".to_string(), "9".to_string())])
        );

        let new = updated(&[
            "--constraint-rm",
            "node.labels.zone==a",
            "--constraint-add",
            "node.labels.zone==b",
            "--placement-pref-rm",
            "spread=node.labels.rack",
        ])
        .expect("valid");
        assert_eq!(new.task.constraints, vec!["node.labels.zone==b"]);
        assert!(new.task.spread.is_empty());
    }

    #[test]
    fn adding_what_is_there_changes_nothing() {
        let new = updated(&[
            "--constraint-add",
            "node.labels.zone==a",
            "--placement-pref-add",
            "spread=node.labels.rack",
            "--publish-add",
            "8080:80",
            "--env-add",
            "A=1",
        ])
        .expect("valid");
        assert_eq!(new, spec());
    }

    #[test]
    fn ports_are_added_moved_and_removed() {
        let port = PortConfig::tcp;
        let new = updated(&["--publish-rm", "443", "--publish-add", "9000"]).expect("valid");
        assert_eq!(new.ports, vec![port(8080, 80), port(0, 9000)]);

        // Publishing a node port again points it at the new target.
        let new = updated(&["--publish-add", "8080:81"]).expect("valid");
        assert_eq!(new.ports, vec![port(8080, 81), port(8443, 443)]);

        let new = updated(&["--publish-rm", "8443:443"]).expect("valid");
        assert_eq!(new.ports, vec![port(8080, 80)]);

        let error = updated(&["--publish-rm", "9443:443"]).expect_err("not that mapping");
        assert_eq!(
            error.to_string(),
            "--publish-rm 9443:443: service web has no published port 9443:443"
        );
    }

    #[test]
    fn removing_what_is_absent_names_the_flag_and_value() {
        for (flags, message) in [
            (
                ["--env-rm", "FOO"],
                "--env-rm FOO: service web has no environment variable FOO",
            ),
            (
                ["--label-rm", "tier"],
                "--label-rm tier: service web has no label tier",
            ),
            (
                ["--constraint-rm", "node.role==manager"],
                "--constraint-rm node.role==manager: service web has no constraint \
                 node.role==manager",
            ),
            (
                ["--placement-pref-rm", "spread=node.labels.zone"],
                "--placement-pref-rm spread=node.labels.zone: service web has no placement \
                 preference spread=node.labels.zone",
            ),
            (
                ["--publish-rm", "22"],
                "--publish-rm 22: service web has no published port 22",
            ),
        ] {
            let error = updated(&flags).expect_err("absent");
            assert_eq!(error.to_string(), message);
        }
    }

    #[test]
    fn force_bumps_the_force_counter_and_nothing_else() {
        let new = updated(&["--force"]).expect("valid");
        let mut expected = spec();
        expected.task.force_update = 1;
        assert_eq!(new, expected);
        let again = apply(&new, &update_args(&["--force"]).expect("valid").changes);
        assert_eq!(again.expect("valid").task.force_update, 2);
    }

    #[test]
    fn replicas_of_a_global_service_are_refused() {
        let mut global = spec();
        global.mode = ServiceMode::Global;
        let changes = update_args(&["--replicas", "3"]).expect("valid").changes;
        let error = apply(&global, &changes).expect_err("global");
        assert_eq!(
            error,
            UpdateError::ReplicasOfGlobal {
                service: "web".to_string()
            }
        );
        assert!(error.to_string().starts_with("--replicas: "), "{error}");
    }

    pub(crate) fn service_view(spec: ServiceSpec, version: u64) -> ServiceView {
        ServiceView {
            service: Service {
                id: "svc-id".to_string(),
                version,
                created_at: Timestamp(0),
                updated_at: Timestamp(0),
                spec,
                previous_spec: None,
                update_status: None,
                virtual_ips: Vec::new(),
            },
            running: 2,
            completed: 0,
            desired: 2,
            live_by_state: Default::default(),
            problem: None,
        }
    }

    /// A daemon holding `spec()` at version 7 that records what it is sent.
    fn fake_daemon() -> (Client, Rc<RefCell<Vec<ControlRequest>>>) {
        let log = Rc::new(RefCell::new(Vec::new()));
        let seen = Rc::clone(&log);
        let client = Client::from_fn(move |request| {
            seen.borrow_mut().push(request.clone());
            let reply = match &request {
                ControlRequest::ServiceInspect { service } if service == "web" => {
                    Ok(ControlReply::Service(service_view(spec(), 7)))
                }
                ControlRequest::ServiceInspect { service } => Err(ControlError::NotFound(format!(
                    "service {service:?} not found"
                ))),
                ControlRequest::ServiceUpdate { spec, .. } => {
                    Ok(ControlReply::Service(service_view(spec.clone(), 8)))
                }
                _ => Err(ControlError::Internal("not faked".to_string())),
            };
            Box::pin(async move { reply })
        });
        (client, log)
    }

    #[test]
    fn update_sends_the_edited_spec_with_the_version_read_and_prints_the_id() {
        let (mut client, log) = fake_daemon();
        let (out, err, result) = run_line(
            &mut client,
            &[
                "essaim",
                "service",
                "update",
                "-d",
                "--image",
                "nginx:1.27",
                "web",
            ],
        );
        assert!(result.is_ok(), "{err}");
        assert_eq!(out, "svc-id\n");
        let mut expected = spec();
        expected.task.image = "nginx:1.27".to_string();
        assert_eq!(
            log.borrow()[1],
            ControlRequest::ServiceUpdate {
                service: "svc-id".to_string(),
                expected_version: Some(7),
                spec: expected,
            }
        );
    }

    #[test]
    fn update_refused_by_the_flags_sends_nothing() {
        let (mut client, log) = fake_daemon();
        let (out, _, result) = run_line(
            &mut client,
            &[
                "essaim", "service", "update", "-d", "--env-rm", "FOO", "web",
            ],
        );
        let error = result.expect_err("FOO is not set");
        assert_eq!(Exit::of(&error), Exit::Failed);
        assert!(error.to_string().contains("--env-rm FOO"), "{error}");
        assert!(out.is_empty(), "{out}");
        assert!(
            log.borrow()
                .iter()
                .all(|request| !matches!(request, ControlRequest::ServiceUpdate { .. })),
            "{:?}",
            log.borrow()
        );
    }

    #[test]
    fn a_concurrent_change_is_reported_as_the_leader_words_it() {
        let mut client = Client::from_fn(|request| {
            let reply = match request {
                ControlRequest::ServiceInspect { .. } => {
                    Ok(ControlReply::Service(service_view(spec(), 7)))
                }
                _ => Err(ControlError::Conflict(
                    "service svc-id changed meanwhile (read at version 7, now at 9): read it \
                     again and retry"
                        .to_string(),
                )),
            };
            Box::pin(async move { reply })
        });
        let (_, _, result) = run_line(
            &mut client,
            &["essaim", "service", "update", "-d", "--force", "web"],
        );
        let error = result.expect_err("conflict");
        assert_eq!(Exit::of(&error), Exit::Failed);
        assert!(error.to_string().contains("changed meanwhile"), "{error}");
    }

    #[test]
    fn the_update_request_crosses_the_wire_unchanged() {
        let request = ControlRequest::ServiceUpdate {
            service: "web".to_string(),
            expected_version: Some(7),
            spec: spec(),
        };
        let wire = essaim_api::control::encode(&request).expect("encode");
        assert_eq!(
            essaim_api::control::decode::<ControlRequest>(&wire).expect("decode"),
            request
        );
    }
}
