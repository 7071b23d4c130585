//! `essaim network ...`: create, list, inspect and remove the swarm's networks.

use essaim_core::model::NetworkSpec;

use super::Failures;
use crate::cli::{
    Format, NetworkCommand, NetworkCreateArgs, NetworkInspectArgs, NetworkLsArgs, NetworkRmArgs,
};
use crate::client::Client;
use crate::render::{self, Output};

/// # Errors
/// The daemon could not be reached, the leader refused, or (with several NETWORK arguments)
/// at least one of them failed.
pub async fn run(
    command: NetworkCommand,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    match command {
        NetworkCommand::Create(args) => create(args, client, output).await,
        NetworkCommand::Ls(args) => ls(args, client, output).await,
        NetworkCommand::Inspect(args) => inspect(args, client, output).await,
        NetworkCommand::Rm(args) => rm(args, client, output).await,
    }
}

async fn create(
    args: NetworkCreateArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let view = client.network_create(build_spec(args)).await?;
    output.print(&format!("{}\n", view.network.id))?;
    Ok(())
}

/// The spec `network create` sends; the leader checks it against the pool and the other
/// networks.
pub fn build_spec(args: NetworkCreateArgs) -> NetworkSpec {
    NetworkSpec {
        name: args.name,
        driver: args.driver,
        labels: args.label.into_iter().collect(),
        subnet: args.subnet,
        gateway: args.gateway,
        attachable: args.attachable,
        ingress: false,
    }
}

async fn ls(
    args: NetworkLsArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let mut networks = client.network_list().await?;
    networks.sort_by(|a, b| a.network.spec.name.cmp(&b.network.spec.name));
    let text = if args.quiet {
        render::ids(networks.iter().map(|view| view.network.id.as_str()))
    } else {
        match args.format {
            Format::Json => render::json(&networks)?,
            Format::Table => render::network_table(&networks),
        }
    };
    output.print(&text)?;
    Ok(())
}

async fn inspect(
    args: NetworkInspectArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let mut failures = Failures::default();
    let mut views = Vec::new();
    for name in &args.networks {
        match client.network_inspect(name).await {
            Ok(view) => views.push(view),
            Err(error) => failures.report(output, error.into()),
        }
    }
    let pretty = args.format == Format::Table;
    let text = super::inspected(&views, pretty, render::network_pretty)?;
    output.print(&text)?;
    failures.finish()
}

async fn rm(
    args: NetworkRmArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let mut failures = Failures::default();
    for name in &args.networks {
        match client.network_remove(name).await {
            Ok(()) => output.print(&format!("{name}\n"))?,
            Err(error) => failures.report(output, error.into()),
        }
    }
    failures.finish()
}
