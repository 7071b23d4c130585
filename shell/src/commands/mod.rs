//! The commands, one module per noun, and what they share: going on past failures.
//!
//! # Layout
//! - [`swarm`]: `swarm init`, `join`, `join-token`, `leave`, `inspect`, `update`, and
//!   `swarm ca issue-client`.
//! - [`node`]: `node ls`, `inspect`, `update`, `promote`, `demote`, `rm`, `ps`.
//! - [`network`]: `network create`, `ls`, `inspect`, `rm`.
//! - [`file`]: `secret` and `config`: `create`, `ls`, `inspect`, `rm`.
//! - [`service`]: `service create`, `ls`, `ps`, `inspect`, `scale`, `rm`.
//! - [`service_update`]: `service update`, which edits a spec flag by flag.
//! - [`stack`]: `stack deploy`, `ls`, `ps`, `services`, `rm`; [`stack_plan`] works out what a
//!   deploy changes before it changes anything.
//! - [`info`]: `info`, the node's view of itself.

pub mod file;
pub mod info;
pub mod network;
pub mod node;
pub mod service;
pub mod service_update;
pub mod stack;
pub mod stack_plan;
pub mod swarm;

use essaim_core::model::FileKind;
use serde::Serialize;

use crate::cli::Command;
use crate::client::Client;
use crate::render::{self, Output};
use crate::{Exit, Reported};

/// Runs one parsed command against `client`: the one place commands are dispatched, for the
/// binary and the tests alike.
///
/// # Errors
/// What the command failed with.
pub async fn run(
    command: Command,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    match command {
        Command::Swarm { command } => swarm::run(command, client, output).await,
        Command::Node { command } => node::run(command, client, output).await,
        Command::Network { command } => network::run(command, client, output).await,
        Command::Secret { command } => {
            file::run(FileKind::Secret, command.into(), client, output).await
        }
        Command::Config { command } => {
            file::run(FileKind::Config, command.into(), client, output).await
        }
        Command::Service { command } => service::run(command, client, output).await,
        Command::Stack { command } => stack::run(command, client, output).await,
        Command::Info(args) => info::run(args, client, output).await,
        Command::Watch(args) => crate::watch::run(args, client, output).await,
        // Scripts run synchronously, outside the async runtime: the binary and the REPL
        // start them themselves.
        Command::Run(_) => Err(crate::UsageError(
            "run: scripts are started by the shell, not from within a command".into(),
        )
        .into()),
    }
}

/// What `inspect` prints for the objects found: a listing per object, or a JSON array. Like
/// docker, what was found is shown even when some names were not.
///
/// # Errors
/// Only if the JSON cannot be made, which would be a bug.
pub fn inspected<T: Serialize>(
    found: &[T],
    pretty: bool,
    listing: fn(&T) -> String,
) -> anyhow::Result<String> {
    if pretty {
        Ok(found.iter().map(listing).collect::<Vec<_>>().join("\n"))
    } else {
        render::json(&found)
    }
}

/// Runs a command line against `client` as the binary would; returns stdout, stderr and the
/// result.
#[cfg(test)]
pub fn run_line(client: &mut Client, line: &[&str]) -> (String, String, anyhow::Result<()>) {
    use clap::Parser;
    let cli = crate::cli::Cli::try_parse_from(line).expect("valid command line");
    let command = cli.command.expect("a command");
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let (mut out, mut err) = (Vec::new(), Vec::new());
    let result = {
        let mut output = Output::new(&mut out, &mut err);
        runtime.block_on(run(command, client, &mut output))
    };
    (
        String::from_utf8(out).expect("utf-8"),
        String::from_utf8(err).expect("utf-8"),
        result,
    )
}

/// The failures of a command that acts on several NODE arguments: each is reported as it
/// happens and the command goes on with the next one, as docker does.
#[derive(Debug, Default)]
pub struct Failures {
    exits: Vec<Exit>,
}

impl Failures {
    /// Prints `error` now and remembers that the command failed.
    pub fn report(&mut self, output: &mut Output<'_>, error: anyhow::Error) {
        output.error(&error);
        self.exits.push(Exit::of(&error));
    }

    /// Ok when nothing failed; otherwise a [`Reported`] error (already printed) with the exit
    /// code the failures share, or 1 when they differ.
    ///
    /// # Errors
    /// At least one argument failed.
    pub fn finish(self) -> anyhow::Result<()> {
        let Some(&first) = self.exits.first() else {
            return Ok(());
        };
        let exit = if self.exits.iter().all(|&exit| exit == first) {
            first
        } else {
            Exit::Failed
        };
        Err(Reported(exit).into())
    }
}
