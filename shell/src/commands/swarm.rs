//! `essaim swarm ...`: create, join, leave and inspect the swarm, and show its join tokens.

use essaim_api::{ControlReply, ControlRequest};
use essaim_core::model::Role;

use crate::cli::{
    Format, InitArgs, JoinArgs, JoinTokenArgs, LeaveArgs, SwarmCommand, SwarmInspectArgs,
};
use crate::client::{unexpected, Client};
use crate::render::{self, Output};

/// # Errors
/// The daemon could not be reached, or it or the leader refused.
pub async fn run(
    command: SwarmCommand,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    match command {
        SwarmCommand::Init(args) => init(args, client, output).await,
        SwarmCommand::Join(args) => join(args, client, output).await,
        SwarmCommand::JoinToken(args) => join_token(args, client, output).await,
        SwarmCommand::Leave(args) => leave(args, client, output).await,
        SwarmCommand::Inspect(args) => inspect(args, client, output).await,
    }
}

async fn init(args: InitArgs, client: &mut Client, output: &mut Output<'_>) -> anyhow::Result<()> {
    let request = ControlRequest::SwarmInit {
        advertise_addr: args.advertise_addr,
    };
    match client.call(&request).await? {
        ControlReply::Initialized {
            node_id,
            worker_token,
            manager_addr,
            ..
        } => output.print(&initialized(&node_id, &worker_token, &manager_addr))?,
        other => return Err(unexpected(&request, &other).into()),
    }
    Ok(())
}

/// What `swarm init` says, word for word docker's.
fn initialized(node_id: &str, worker_token: &str, manager_addr: &str) -> String {
    format!(
        "Swarm initialized: current node ({node_id}) is now a manager.\n\n{}\n\
         To add a manager to this swarm, run 'essaim swarm join-token manager' and follow the \
         instructions.\n",
        render::join_instructions(Role::Worker, worker_token, manager_addr)
    )
}

async fn join(args: JoinArgs, client: &mut Client, output: &mut Output<'_>) -> anyhow::Result<()> {
    let request = ControlRequest::SwarmJoin {
        token: args.token,
        remote_addr: args.remote_addr,
        advertise_addr: args.advertise_addr,
    };
    match client.call(&request).await? {
        ControlReply::Joined { role, .. } => {
            output.print(&format!("This node joined a swarm as a {role}.\n"))?;
        }
        other => return Err(unexpected(&request, &other).into()),
    }
    Ok(())
}

async fn join_token(
    args: JoinTokenArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let request = ControlRequest::JoinToken {
        role: args.role,
        rotate: args.rotate,
    };
    let (role, token, manager_addr) = match client.call(&request).await? {
        ControlReply::JoinToken {
            role,
            token,
            manager_addr,
        } => (role, token, manager_addr),
        other => return Err(unexpected(&request, &other).into()),
    };
    let mut text = String::new();
    if args.quiet {
        text.push_str(&token);
        text.push('\n');
    } else {
        if args.rotate {
            text.push_str(&format!("Successfully rotated {role} join token.\n\n"));
        }
        text.push_str(&render::join_instructions(role, &token, &manager_addr));
    }
    output.print(&text)?;
    Ok(())
}

async fn leave(
    args: LeaveArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let request = ControlRequest::SwarmLeave { force: args.force };
    match client.call(&request).await? {
        ControlReply::Done => output.print("Node left the swarm.\n")?,
        other => return Err(unexpected(&request, &other).into()),
    }
    Ok(())
}

async fn inspect(
    args: SwarmInspectArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let cluster = client.swarm_inspect().await?;
    let text = match args.format {
        Format::Json => render::json(&cluster)?,
        Format::Table => render::cluster(&cluster),
    };
    output.print(&text)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_says_what_docker_says() {
        assert_eq!(
            initialized("n1", "SWMTKN-1-a-b", "10.0.0.1:4242"),
            "Swarm initialized: current node (n1) is now a manager.\n\
             \n\
             To add a worker to this swarm, run the following command:\n\
             \n    essaim swarm join --token SWMTKN-1-a-b 10.0.0.1:4242\n\
             \n\
             To add a manager to this swarm, run 'essaim swarm join-token manager' and follow \
             the instructions.\n"
        );
    }
}
