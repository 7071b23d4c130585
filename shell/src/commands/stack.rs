//! `essaim stack ...`: deploy compose files as a stack, list stacks, their services and
//! tasks, and remove them. A stack is the services, networks, secrets and configs labelled
//! with its name
//! (`com.docker.stack.namespace`, as Docker labels them); there is no stack object in the
//! cluster, so a stack made by one shell is seen by every other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use essaim_api::control::{FileView, ServiceView};
use essaim_core::model::FileKind;
use serde::Serialize;

use super::stack_plan::{self, FileStep, Plan, ServiceStep};
use super::Failures;
use crate::cli::{
    Format, StackCommand, StackDeployArgs, StackLsArgs, StackPsArgs, StackRmArgs, StackServicesArgs,
};
use crate::client::Client;
use crate::compose::{self, env_file, Inputs, Source, Stack, NAMESPACE_LABEL};
use crate::converge::Operation;
use crate::render::{self, Output};
use crate::style::{self, Tone};

/// How long `stack rm` waits for the removed services' tasks to go.
const REMOVAL_WAIT: Duration = Duration::from_secs(30);

/// # Errors
/// The files are refused, the daemon could not be reached, the leader refused a change, or
/// a service did not converge.
pub async fn run(
    command: StackCommand,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    match command {
        StackCommand::Deploy(args) => deploy(args, client, output).await,
        StackCommand::Ls(args) => ls(args, client, output).await,
        StackCommand::Ps(args) => ps(args, client, output).await,
        StackCommand::Services(args) => services(args, client, output).await,
        StackCommand::Rm(args) => rm(args, client, output).await,
    }
}

/// Reads the `-c` files (`-` is standard input) and the `.env` file beside the first one,
/// and loads them as the stack `name`, with the process's environment over `.env`.
///
/// # Errors
/// A file that cannot be read, a bad `.env`, or the files' errors ([`compose::Refused`]).
pub fn load_files(files: &[PathBuf], name: &str) -> anyhow::Result<Stack> {
    let mut sources = Vec::new();
    for file in files {
        let (shown, text) = if file == Path::new("-") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|error| {
                anyhow::anyhow!("cannot read the compose file from stdin: {error}")
            })?;
            ("stdin".to_string(), text)
        } else {
            let text = std::fs::read_to_string(file).map_err(|error| {
                anyhow::anyhow!("cannot read the compose file {}: {error}", file.display())
            })?;
            (file.display().to_string(), text)
        };
        sources.push(Source { name: shown, text });
    }
    // Relative paths (.env, env_file:) are from the first file's directory, as Compose has it.
    let base = match files.first() {
        Some(first) if first != Path::new("-") => first
            .parent()
            .map_or_else(|| PathBuf::from("."), Path::to_path_buf),
        _ => PathBuf::from("."),
    };
    let base = if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    };
    let dot_env = read_dot_env(&base)?;
    let lookup = |variable: &str| {
        std::env::var(variable)
            .ok()
            .or_else(|| dot_env.get(variable).cloned())
    };
    let read_env_file = |path: &str| {
        let full = base.join(path);
        std::fs::read_to_string(&full)
            .map_err(|error| format!("cannot read the env_file {}: {error}", full.display()))
    };
    let read_data = |kind: FileKind, path: &Path| {
        super::file::read_file_data(kind, &path.display().to_string())
    };
    let stack = compose::load(
        &sources,
        name,
        &Inputs {
            lookup: &lookup,
            read_env_file: &read_env_file,
            base_dir: &std::path::absolute(&base).unwrap_or(base.clone()),
            read_data: &read_data,
        },
    )?;
    Ok(stack)
}

/// The variables of `base/.env`, if there is one.
fn read_dot_env(base: &Path) -> anyhow::Result<BTreeMap<String, String>> {
    let path = base.join(".env");
    let Ok(text) = std::fs::read_to_string(&path) else {
        return Ok(BTreeMap::new());
    };
    let variables = env_file::parse(&text)
        .map_err(|error| anyhow::anyhow!("{}:{}: {}", path.display(), error.line, error.message))?;
    Ok(variables
        .into_iter()
        .filter_map(|variable| Some((variable.name, variable.value?)))
        .collect())
}

async fn deploy(
    args: StackDeployArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let stack = match load_files(&args.compose_files, &args.name) {
        Ok(stack) => stack,
        Err(error) => {
            if let Some(refused) = error.downcast_ref::<compose::Refused>() {
                warn(&refused.warnings, output);
            }
            return Err(error);
        }
    };
    warn(&stack.warnings, output);
    let how = Deploy {
        prune: args.prune,
        dry_run: args.dry_run,
        format: args.format,
    };
    let (plan, waits) = deploy_stack(&stack, &how, client, output).await?;
    if args.dry_run && args.format == Format::Table {
        let mut text: String = plan
            .lines()
            .iter()
            .map(|line| format!("{line}\n"))
            .collect();
        text.push_str("Dry run: nothing was changed.\n");
        output.print(&text)?;
    }
    if args.wait.detach {
        return Ok(());
    }
    let mut failures = Failures::default();
    for (name, operation) in waits {
        if let Err(error) = crate::converge::wait(client, &name, None, operation, output).await {
            failures.report(output, error);
        }
    }
    failures.finish()
}

/// How `stack deploy` goes about it: its flags.
pub struct Deploy {
    pub prune: bool,
    pub dry_run: bool,
    /// With JSON, the plan is printed as data and the steps are not.
    pub format: Format,
}

/// Plans `stack` against the cluster and, unless it is a dry run, carries the plan out,
/// saying each step on `output`. Returns the plan and the services to wait for (none after
/// a dry run). The same for the command line and for scripts' `deploy_stack`.
///
/// # Errors
/// The plan is refused (a service of another stack, a missing external network, secret or
/// config, a config of the stack's with other data), or the leader refused a step.
pub async fn deploy_stack(
    stack: &Stack,
    how: &Deploy,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<(Plan, Vec<(String, Operation)>)> {
    let services = client.service_list().await?;
    let networks = client.network_list().await?;
    let files = cluster_files(client).await?;
    let plan = stack_plan::plan(stack, &services, &networks, &files, how.prune)?;
    let waits = if how.dry_run {
        Vec::new()
    } else {
        apply(&plan, client, output, how.format).await?
    };
    if how.format == Format::Json {
        output.print(&render::json(&plan)?)?;
    }
    Ok((plan, waits))
}

/// The cluster's secrets and configs (a config's data with it).
async fn cluster_files(client: &mut Client) -> anyhow::Result<Vec<FileView>> {
    let mut files = client.file_list(FileKind::Secret).await?;
    files.extend(client.file_list(FileKind::Config).await?);
    Ok(files)
}

/// Prints each warning of the files on stderr.
fn warn(warnings: &[compose::read::Problem], output: &mut Output<'_>) {
    for warning in warnings {
        output.note(&format!(
            "{} {warning}\n",
            style::paint("warning:", Tone::Busy)
        ));
    }
}

/// Carries out `plan`: the networks, secrets and configs first, then the services, then
/// what `--prune` removes (the services, then the secrets and configs they no longer use).
/// Returns the services to wait for.
async fn apply(
    plan: &Plan,
    client: &mut Client,
    output: &mut Output<'_>,
    format: Format,
) -> anyhow::Result<Vec<(String, Operation)>> {
    let say = |output: &mut Output<'_>, line: String| -> anyhow::Result<()> {
        // With --format json the plan is the output; the steps are for people.
        match format {
            Format::Table => Ok(output.print(&format!("{line}\n"))?),
            Format::Json => Ok(()),
        }
    };
    for network in &plan.networks {
        say(output, format!("Creating network {}", network.name))?;
        client.network_create(network.spec.clone()).await?;
    }
    for (kind, step) in plan.file_steps() {
        if let FileStep::Create { name, file } = step {
            say(output, format!("Creating {kind} {name}"))?;
            client
                .file_create(kind, file.spec.clone(), file.data.clone())
                .await?;
        }
    }
    let mut waits = Vec::new();
    for step in &plan.services {
        match step {
            ServiceStep::Create { name, spec, .. } => {
                say(output, format!("Creating service {name}"))?;
                client.service_create((**spec).clone()).await?;
                waits.push((name.clone(), Operation::Creation));
            }
            ServiceStep::Update {
                name,
                current,
                spec,
                ..
            } => {
                say(output, format!("Updating service {name}"))?;
                client.service_update(current, (**spec).clone()).await?;
                waits.push((name.clone(), Operation::Update));
            }
            ServiceStep::Remove { name } => {
                say(output, format!("Removing service {name}"))?;
                client.service_remove(name).await?;
            }
            ServiceStep::Unchanged { name } => {
                say(output, format!("Service {name} is unchanged"))?;
            }
            ServiceStep::LeaveAlone { name } => {
                say(
                    output,
                    format!(
                        "Service {name} is no longer in the files: left alone (--prune removes it)"
                    ),
                )?;
            }
        }
    }
    for (kind, step) in plan.file_steps() {
        match step {
            FileStep::Create { .. } => {}
            FileStep::Remove { name } => {
                say(output, format!("Removing {kind} {name}"))?;
                client.file_remove(kind, name).await?;
            }
            FileStep::LeaveAlone { name, why } => {
                say(
                    output,
                    format!("The {kind} {name} is no longer in the files: left alone ({why})"),
                )?;
            }
        }
    }
    Ok(waits)
}

/// The stack a service belongs to, from its label.
fn stack_of(view: &ServiceView) -> Option<&str> {
    view.service
        .spec
        .labels
        .get(NAMESPACE_LABEL)
        .map(String::as_str)
}

/// A stack as `stack ls` shows it.
#[derive(Debug, Serialize)]
pub struct StackSummary {
    pub name: String,
    pub services: usize,
}

/// Every stack, by name: the stacks the services' labels name.
///
/// # Errors
/// The daemon could not be reached.
pub async fn stacks(client: &mut Client) -> anyhow::Result<Vec<StackSummary>> {
    let services = client.service_list().await?;
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for view in &services {
        if let Some(stack) = stack_of(view) {
            *counts.entry(stack.to_string()).or_default() += 1;
        }
    }
    Ok(counts
        .into_iter()
        .map(|(name, services)| StackSummary { name, services })
        .collect())
}

async fn ls(args: StackLsArgs, client: &mut Client, output: &mut Output<'_>) -> anyhow::Result<()> {
    let stacks = stacks(client).await?;
    let text = match args.format {
        Format::Json => render::json(&stacks)?,
        Format::Table => render::toned_columns(
            &["NAME", "SERVICES"],
            stacks
                .iter()
                .map(|stack| vec![stack.name.clone(), stack.services.to_string()])
                .collect(),
            |_, _| Tone::Plain,
        ),
    };
    output.print(&text)?;
    Ok(())
}

/// The services of the stack `name`, sorted by name.
///
/// # Errors
/// The stack has no services (Docker's "nothing found in stack").
pub async fn stack_services(client: &mut Client, name: &str) -> anyhow::Result<Vec<ServiceView>> {
    let mut services: Vec<ServiceView> = client
        .service_list()
        .await?
        .into_iter()
        .filter(|view| stack_of(view) == Some(name))
        .collect();
    if services.is_empty() {
        anyhow::bail!("nothing found in stack: {name}");
    }
    services.sort_by(|a, b| a.service.spec.name.cmp(&b.service.spec.name));
    Ok(services)
}

async fn services(
    args: StackServicesArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let services = stack_services(client, &args.name).await?;
    let text = if args.ls.quiet {
        render::ids(services.iter().map(|view| view.service.id.as_str()))
    } else {
        match args.ls.format {
            Format::Json => render::json(&services)?,
            Format::Table => render::service_table(&services),
        }
    };
    output.print(&text)?;
    Ok(())
}

async fn ps(args: StackPsArgs, client: &mut Client, output: &mut Output<'_>) -> anyhow::Result<()> {
    let services = stack_services(client, &args.name).await?;
    let mut tasks = Vec::new();
    for view in &services {
        tasks.extend(client.task_list(Some(&view.service.id), None).await?);
    }
    let slots_whole = !args
        .ps
        .filter
        .iter()
        .any(|filter| matches!(filter, crate::cli::TaskFilter::Node(_)));
    output.print(&super::service::tasks_text(&tasks, &args.ps, slots_whole)?)?;
    Ok(())
}

async fn rm(args: StackRmArgs, client: &mut Client, output: &mut Output<'_>) -> anyhow::Result<()> {
    if !args.yes && output.interactive {
        let mut plan = Vec::new();
        for name in &args.names {
            if let Ok(services) = stack_services(client, name).await {
                plan.push(format!(
                    "remove stack {name}: {}",
                    services
                        .iter()
                        .map(|view| view.service.spec.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
        }
        crate::confirm::go_ahead(&plan, output)?;
    }
    let mut failures = Failures::default();
    for name in &args.names {
        if let Err(error) = remove_stack(client, name, args.wait.detach, output).await {
            failures.report(output, error);
        }
    }
    failures.finish()
}

/// Removes the services of the stack `name`, waits until their tasks are gone (unless
/// `detach`), then removes the networks, secrets and configs the stack made.
async fn remove_stack(
    client: &mut Client,
    name: &str,
    detach: bool,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let services = client.service_list().await?;
    let networks = client.network_list().await?;
    let files = cluster_files(client).await?;
    let files: Vec<&FileView> = files
        .iter()
        .filter(|view| view.spec.labels.get(NAMESPACE_LABEL).map(String::as_str) == Some(name))
        .collect();
    let ours: Vec<&ServiceView> = services
        .iter()
        .filter(|view| stack_of(view) == Some(name))
        .collect();
    let made: Vec<String> = networks
        .iter()
        .filter(|view| {
            view.network
                .spec
                .labels
                .get(NAMESPACE_LABEL)
                .map(String::as_str)
                == Some(name)
        })
        .map(|view| view.network.spec.name.clone())
        .collect();
    if ours.is_empty() && made.is_empty() && files.is_empty() {
        anyhow::bail!("nothing found in stack: {name}");
    }
    for view in &ours {
        output.print(&format!("Removing service {}\n", view.service.spec.name))?;
        client.service_remove(&view.service.id).await?;
    }
    if !detach {
        let ids: Vec<&str> = ours.iter().map(|view| view.service.id.as_str()).collect();
        let started = Instant::now();
        let mut index = 0;
        loop {
            let tasks = client.task_list(None, None).await?;
            let left = tasks
                .iter()
                .filter(|view| ids.contains(&view.task.service_id.as_str()))
                .count();
            if left == 0 {
                break;
            }
            if started.elapsed() > REMOVAL_WAIT {
                anyhow::bail!(
                    "{left} tasks of the stack {name} are still there after {}s; their \
                     networks, secrets and configs were kept",
                    REMOVAL_WAIT.as_secs()
                );
            }
            index = client.wait_change(index, Duration::from_secs(1)).await?;
        }
    }
    for network in made {
        output.print(&format!("Removing network {network}\n"))?;
        client.network_remove(&network).await?;
    }
    for file in files {
        output.print(&format!("Removing {} {}\n", file.kind, file.spec.name))?;
        client.file_remove(file.kind, &file.spec.name).await?;
    }
    Ok(())
}
