//! `essaim`, the one-shot command line of essaim: it parses a command, sends it to the daemon
//! on this machine through its local socket, prints the reply as docker would (plain tables,
//! `key: value` listings or JSON), and exits with a code a script can act on.
//!
//! # Exit codes
//! - 0: success, including when stdout's reader goes away (a broken pipe, as in ripgrep).
//! - 1: the command failed: the daemon or the leader refused it. With several NODE arguments
//!   the command goes on past failures and exits 1 at the end (or the code all failures share).
//! - 2: usage error: clap's own errors, and hosts the shell cannot use yet (`tcp://`).
//! - 3: the daemon or the cluster is unreachable, or the managers have no quorum.
//! - 4: timeout (reserved: no command has a timeout yet).
//!
//! # Layout
//! - [`cli`]: the command table, from which parsing, help and usage errors are derived.
//! - [`client`]: connecting to the daemon, and one typed call per request.
//! - [`commands`]: what each command does, one module per noun.
//! - [`render`]: tables, listings, JSON and timestamps, as pure functions; and [`render::Output`].

mod cli;
mod client;
mod commands;
mod render;

use std::io;
use std::process::ExitCode;

use clap::Parser;
use essaim_api::ControlError;

use crate::cli::{Cli, Command};
use crate::render::Output;

/// The exit codes, as documented above and in `essaim --help`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Failed = 1,
    Usage = 2,
    Unreachable = 3,
    /// Documented now so that scripts can rely on it once commands wait for convergence.
    #[allow(dead_code)]
    Timeout = 4,
}

impl Exit {
    /// The exit code an error means.
    pub fn of(error: &anyhow::Error) -> Exit {
        for cause in error.chain() {
            if let Some(Reported(exit)) = cause.downcast_ref::<Reported>() {
                return *exit;
            }
            if cause.is::<UsageError>() {
                return Exit::Usage;
            }
            if let Some(control) = cause.downcast_ref::<ControlError>() {
                return match control {
                    ControlError::Unavailable(_) | ControlError::NoQuorum(_) => Exit::Unreachable,
                    _ => Exit::Failed,
                };
            }
            if let Some(io) = cause.downcast_ref::<io::Error>() {
                if io.kind() == io::ErrorKind::BrokenPipe {
                    return Exit::Success;
                }
            }
        }
        Exit::Failed
    }
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// A command line that parsed but cannot be carried out as written (exit 2).
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Failures already printed one by one (several NODE arguments); `main` only exits with the
/// code they carry.
#[derive(Debug)]
pub struct Reported(pub Exit);

impl std::fmt::Display for Reported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("some of the arguments failed")
    }
}

impl std::error::Error for Reported {}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => {
            // Help and version are "errors" with exit code 0; a closed stdout changes nothing.
            let _ = error.print();
            return ExitCode::from(u8::try_from(error.exit_code()).unwrap_or(2));
        }
    };
    let mut stdout = io::stdout().lock();
    let mut stderr = io::stderr().lock();
    let mut output = Output::new(&mut stdout, &mut stderr);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli, &mut output)));
    match result {
        Ok(()) => Exit::Success.into(),
        Err(error) => {
            let exit = Exit::of(&error);
            if exit != Exit::Success && !error.is::<Reported>() {
                output.error(&error);
            }
            exit.into()
        }
    }
}

async fn run(cli: Cli, output: &mut Output<'_>) -> anyhow::Result<()> {
    let mut client = client::connect(cli.host.as_ref()).await?;
    match cli.command {
        Command::Swarm { command } => commands::swarm::run(command, &mut client, output).await,
        Command::Node { command } => commands::node::run(command, &mut client, output).await,
        Command::Info(args) => commands::info::run(args, &mut client, output).await,
    }?;
    output.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_map_to_documented_exit_codes() {
        let of = |error: anyhow::Error| Exit::of(&error);
        assert_eq!(
            of(ControlError::Unavailable("down".into()).into()),
            Exit::Unreachable
        );
        assert_eq!(
            of(ControlError::NoQuorum("1 of 3".into()).into()),
            Exit::Unreachable
        );
        assert_eq!(of(ControlError::NotFound("x".into()).into()), Exit::Failed);
        // A refusal by the server is the command failing, not a usage error.
        assert_eq!(
            of(ControlError::InvalidArgument("x".into()).into()),
            Exit::Failed
        );
        assert_eq!(of(UsageError("tcp".into()).into()), Exit::Usage);
        assert_eq!(of(Reported(Exit::Failed).into()), Exit::Failed);
        assert_eq!(
            of(io::Error::from(io::ErrorKind::BrokenPipe).into()),
            Exit::Success
        );
        assert_eq!(
            of(anyhow::Error::from(ControlError::Unavailable("x".into())).context("while")),
            Exit::Unreachable
        );
    }

    #[test]
    fn tcp_hosts_are_a_usage_error_for_now() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let host = essaim_api::transport::Host::Tcp("10.0.0.1:4242".into());
        let error = match runtime.block_on(client::connect(Some(&host))) {
            Ok(_) => panic!("tcp:// connected"),
            Err(error) => error,
        };
        assert_eq!(Exit::of(&error), Exit::Usage);
        assert!(error.to_string().contains("--tls-dir"), "{error}");
    }

    #[test]
    fn a_missing_daemon_is_unreachable() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let host = essaim_api::transport::Host::Unix("/nonexistent/essaim.sock".into());
        let error = match runtime.block_on(client::connect(Some(&host))) {
            Ok(_) => panic!("connected to nothing"),
            Err(error) => error,
        };
        assert_eq!(Exit::of(&error), Exit::Unreachable);
    }
}
