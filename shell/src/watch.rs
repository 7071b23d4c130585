//! `watch COMMAND`: runs a listing command again each time the cluster changes and shows its
//! latest output, redrawn in place on a terminal. It wakes on the manager's change feed (a
//! long poll), not on a timer, and runs until Ctrl-C.

use std::time::Duration;

use clap::Parser;

use crate::cli::{
    Cli, Command, ConfigCommand, NetworkCommand, NodeCommand, SecretCommand, ServiceCommand,
    StackCommand, SwarmCommand, WatchArgs,
};
use crate::client::Client;
use crate::render::Output;
use crate::style;
use crate::UsageError;

/// The longest one long poll waits; nothing is redrawn unless the output changed.
const POLL: Duration = Duration::from_secs(30);
/// Changes closer together than this are shown together.
const SETTLE: Duration = Duration::from_millis(200);

/// # Errors
/// A command that is not a listing, or the cluster could not be asked.
pub async fn run(
    args: WatchArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let line: Vec<String> = std::iter::once("essaim".to_string())
        .chain(args.command.iter().cloned())
        .collect();
    // Parsed once to refuse what cannot be watched before drawing anything.
    watched(&line)?;
    let title = args.command.join(" ");
    // One listener for the whole watch: Ctrl-C at any moment ends it.
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::select! {
        result = redraw_on_changes(&line, &title, client, output) => result,
        _ = interrupt.recv() => Ok(()),
    }
}

async fn redraw_on_changes(
    line: &[String],
    title: &str,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let mut index = 0;
    let mut shown: Option<String> = None;
    loop {
        let command = watched(line)?;
        let (mut out, mut err) = (Vec::new(), Vec::new());
        let result = {
            let mut inner = Output::new(&mut out, &mut err);
            Box::pin(super::commands::run(command, client, &mut inner)).await
        };
        let mut text = String::from_utf8_lossy(&out).into_owned();
        text.push_str(&String::from_utf8_lossy(&err));
        if let Err(error) = &result {
            text.push_str(&format!("Error: {}\n", crate::render::error_line(error)));
        }
        if shown.as_ref() != Some(&text) {
            let header = style::bold(&format!("Every change: essaim {title}"));
            if output.screen {
                output.print(&format!("\x1b[H\x1b[2J{header}\n\n{text}"))?;
            } else {
                output.print(&format!("{header}\n{text}\n"))?;
            }
            shown = Some(text);
        }
        index = client.wait_change(index, POLL).await?;
        tokio::time::sleep(SETTLE).await;
    }
}

/// The command of a `watch` line, if it only reads.
fn watched(line: &[String]) -> anyhow::Result<Command> {
    let cli = Cli::try_parse_from(line).map_err(|error| {
        UsageError(format!(
            "watch: {}",
            crate::render::error_line(&anyhow::anyhow!(error.render().to_string()))
        ))
    })?;
    let command = cli
        .command
        .ok_or_else(|| UsageError("watch: which command?".into()))?;
    let reads = match &command {
        Command::Service { command } => matches!(
            command,
            ServiceCommand::Ls(_) | ServiceCommand::Ps(_) | ServiceCommand::Inspect(_)
        ),
        Command::Node { command } => matches!(
            command,
            NodeCommand::Ls(_) | NodeCommand::Ps(_) | NodeCommand::Inspect(_)
        ),
        Command::Network { command } => {
            matches!(command, NetworkCommand::Ls(_) | NetworkCommand::Inspect(_))
        }
        Command::Secret { command } => {
            matches!(command, SecretCommand::Ls(_) | SecretCommand::Inspect(_))
        }
        Command::Config { command } => {
            matches!(command, ConfigCommand::Ls(_) | ConfigCommand::Inspect(_))
        }
        Command::Swarm { command } => matches!(command, SwarmCommand::Inspect(_)),
        Command::Stack { command } => matches!(
            command,
            StackCommand::Ls(_) | StackCommand::Ps(_) | StackCommand::Services(_)
        ),
        Command::Info(_) => true,
        Command::Watch(_) | Command::Run(_) => false,
    };
    if !reads {
        return Err(UsageError(format!(
            "watch: '{}' changes the cluster; watch takes commands that only read (ls, ps, \
             inspect, info)",
            line[1..].join(" ")
        ))
        .into());
    }
    Ok(command)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(words: &str) -> Vec<String> {
        std::iter::once("essaim")
            .chain(words.split_whitespace())
            .map(str::to_string)
            .collect()
    }

    #[test]
    fn only_commands_that_read_can_be_watched() {
        assert!(watched(&line("service ps web")).is_ok());
        assert!(watched(&line("node ls")).is_ok());
        let error = watched(&line("service rm web")).expect_err("changes things");
        assert!(error.to_string().contains("only read"), "{error}");
        assert!(watched(&line("watch node ls")).is_err());
        let error = watched(&line("service frobnicate")).expect_err("no such command");
        assert!(error.to_string().starts_with("watch: "), "{error}");
    }
}
