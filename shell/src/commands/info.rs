//! `essaim info`: the node's own view of itself and its swarm, answered without the cluster.

use crate::cli::{Format, InfoArgs};
use crate::client::Client;
use crate::render::{self, Output};

/// # Errors
/// The daemon could not be reached or refused.
pub async fn run(
    args: InfoArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let info = client.info().await?;
    let text = match args.format {
        Format::Table => render::info(&info),
        Format::Json => render::json(&info)?,
    };
    output.print(&text)?;
    Ok(())
}
