//! `essaim`, the shell of essaim. With a command (`essaim service ls`) it runs it once: sends
//! it to the daemon on this machine through its local socket (or, with `-H tcp://` and
//! `--tls-dir`, to a manager over mutual TLS), prints the reply as docker would (tables,
//! `key: value` listings or JSON), and exits with a code a script can act on. With no command
//! it opens the interactive shell ([`repl`]), which takes the same commands, and Rhai.
//!
//! # Exit codes
//! - 0: success, including when stdout's reader goes away (a broken pipe, as in ripgrep).
//! - 1: the command failed: the daemon or the leader refused it. With several NODE arguments
//!   the command goes on past failures and exits 1 at the end (or the code all failures share).
//! - 2: usage error: clap's own errors, `tcp://` hosts without `--tls-dir`, a client bundle
//!   that is missing, unreadable or unusable, and `swarm ca issue-client` into a directory
//!   that already holds a bundle (without `--force`).
//! - 3: the daemon or the cluster is unreachable, or the managers have no quorum.
//! - 4: timeout: the command waited as long as it may (`swarm ca --rotate`, `service wait
//!   --timeout`); what it started goes on in the background.
//! - 130: interrupted (Ctrl-C) while waiting for convergence; the operation goes on.
//!
//! A question answered "no" (`service rm` at a terminal) changes nothing and exits 0.
//!
//! # Layout
//! - [`cli`]: the command table, from which parsing, help, completion, the examples and
//!   `docs/cli.md` are derived.
//! - [`client`]: connecting to the daemon, and one typed call per request.
//! - [`bundle`]: client bundles (`--tls-dir`): writing and reading them.
//! - [`commands`]: what each command does, one module per noun; [`watch`] reruns one on
//!   every change.
//! - [`converge`]: waiting for a service to converge, with progress.
//! - [`confirm`]: asking before destructive commands.
//! - [`render`]: tables, listings, JSON and timestamps, as pure functions; and [`render::Output`].
//! - [`style`]: colors and the terminal.
//! - [`repl`]: the interactive shell; [`script`]: its Rhai; [`embedded`]: the in-process
//!   cluster it starts when no daemon answers.

mod bundle;
mod cli;
mod client;
mod commands;
mod compose;
mod confirm;
mod connection;
mod converge;
mod embedded;
mod registry_auth;
mod render;
mod repl;
mod script;
mod style;
mod watch;

use std::io;
use std::process::ExitCode;

use clap::Parser;
use essaim_api::ControlError;

use crate::cli::Cli;
use crate::render::Output;

/// The exit codes, as documented above and in `essaim --help`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Success = 0,
    Failed = 1,
    Usage = 2,
    Unreachable = 3,
    Timeout = 4,
    Interrupted = 130,
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
            if cause.is::<TimedOut>() {
                return Exit::Timeout;
            }
            if cause.is::<Interrupted>() {
                return Exit::Interrupted;
            }
            if cause.is::<confirm::Declined>() {
                return Exit::Success;
            }
            if cause.is::<converge::NotConverged>() {
                return Exit::Failed;
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

/// A wait that ran out of time; the message says what goes on meanwhile.
#[derive(Debug)]
pub struct TimedOut(pub String);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimedOut {}

/// Ctrl-C during a wait; the message says what goes on and how to follow it.
#[derive(Debug)]
pub struct Interrupted(pub String);

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "interrupted: {}", self.0)
    }
}

impl std::error::Error for Interrupted {}

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
    style::init();
    if let (Some(_), Some(_)) = (&cli.eval, &cli.command) {
        eprintln!("Error: -c EXPR runs a script; it takes no command (use 'essaim run -c')");
        return Exit::Usage.into();
    }
    if let Some(eval) = cli.eval {
        let args = cli::RunArgs {
            eval: Some(eval),
            ..cli::RunArgs::default()
        };
        return ExitCode::from(script::runner::run(args, cli.host, cli.tls_dir));
    }
    let command = match cli.command {
        None => return repl::run(cli.host, cli.tls_dir),
        Some(cli::Command::Run(args)) => {
            return ExitCode::from(script::runner::run(args, cli.host, cli.tls_dir))
        }
        Some(command) => command,
    };
    let mut stdout = io::stdout().lock();
    let mut stderr = io::stderr().lock();
    let mut output = Output::for_terminal(&mut stdout, &mut stderr);
    let result = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(anyhow::Error::from)
        .and_then(|runtime| runtime.block_on(run(cli.host, cli.tls_dir, command, &mut output)));
    report(result, &mut output).into()
}

async fn run(
    host: Option<essaim_api::transport::Host>,
    tls_dir: Option<std::path::PathBuf>,
    command: cli::Command,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let mut client = match client::connect(host.as_ref(), tls_dir.as_deref()).await {
        Ok(client) => client,
        Err(error) if host.is_none() && Exit::of(&error) == Exit::Unreachable => {
            return Err(ControlError::Unavailable(format!(
                "{}; start the daemon with 'essaimd', or run 'essaim' alone for an embedded \
                 single-node cluster",
                render::error_line(&error)
            ))
            .into())
        }
        Err(error) => return Err(error),
    };
    commands::run(command, &mut client, output).await?;
    output.flush()?;
    Ok(())
}

/// Prints what a command failed with (unless already printed) and returns its exit code:
/// one way for one-shot commands and REPL lines alike.
pub fn report(result: anyhow::Result<()>, output: &mut Output<'_>) -> Exit {
    match result {
        Ok(()) => Exit::Success,
        Err(error) => {
            let exit = Exit::of(&error);
            if exit != Exit::Success && !error.is::<Reported>() {
                output.error(&error);
            }
            exit
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use essaim_api::transport::Host;

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

    /// Connects as `run` does, on a runtime of its own; the client is dropped with it.
    fn connect(host: &Host, tls_dir: Option<&Path>) -> anyhow::Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        runtime
            .block_on(client::connect(Some(host), tls_dir))
            .map(drop)
    }

    #[test]
    fn tcp_hosts_need_a_tls_dir() {
        let host = Host::Tcp("10.0.0.1:4242".into());
        let error = connect(&host, None).expect_err("tcp:// without a bundle");
        assert_eq!(Exit::of(&error), Exit::Usage);
        let message = error.to_string();
        assert!(message.contains("--tls-dir"), "{message}");
        assert!(
            message.contains("essaim swarm ca issue-client"),
            "{message}"
        );
    }

    #[test]
    fn a_tls_dir_without_a_bundle_names_the_missing_file() {
        let temp = tempfile::tempdir().expect("tempdir");
        let host = Host::Tcp("10.0.0.1:4242".into());
        let error = connect(&host, Some(temp.path())).expect_err("empty bundle dir");
        assert_eq!(Exit::of(&error), Exit::Usage);
        assert!(error.to_string().contains(bundle::KEY_FILE), "{error}");
    }

    #[test]
    fn a_bundle_that_is_not_pem_is_a_usage_error() {
        let temp = tempfile::tempdir().expect("tempdir");
        let credentials = essaim_api::tls::Credentials {
            cert_pem: "not a certificate".into(),
            key_pem: "not a key".into(),
            roots_pem: "not a CA".into(),
        };
        bundle::write(temp.path(), &credentials, false).expect("written");
        let host = Host::Tcp("10.0.0.1:4242".into());
        let error = connect(&host, Some(temp.path())).expect_err("garbage bundle");
        assert_eq!(Exit::of(&error), Exit::Usage);
        assert!(error.to_string().contains("unusable"), "{error}");
    }

    /// A bundle that rustls accepts: a self-signed client certificate, its own root, valid
    /// until the end of `year`.
    fn self_signed_bundle(dir: &Path, year: i32) {
        let mut params =
            rcgen::CertificateParams::new(vec!["essaim-client".to_string()]).expect("params");
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "client-test");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationalUnitName, "client");
        params.not_before = rcgen::date_time_ymd(1999, 1, 1);
        params.not_after = rcgen::date_time_ymd(year, 12, 31);
        let key = rcgen::KeyPair::generate().expect("key");
        let cert_pem = params.self_signed(&key).expect("certificate").pem();
        let credentials = essaim_api::tls::Credentials {
            roots_pem: cert_pem.clone(),
            cert_pem,
            key_pem: key.serialize_pem(),
        };
        bundle::write(dir, &credentials, false).expect("written");
    }

    #[test]
    fn an_expired_bundle_is_refused_before_connecting() {
        let temp = tempfile::tempdir().expect("tempdir");
        self_signed_bundle(temp.path(), 2000);
        let host = Host::Tcp("10.0.0.1:4242".into());
        let error = connect(&host, Some(temp.path())).expect_err("expired");
        assert_eq!(Exit::of(&error), Exit::Usage);
        let message = error.to_string();
        assert!(
            message.contains("expired at 2000-12-31T00:00:00Z"),
            "{message}"
        );
        assert!(message.contains(bundle::CERT_FILE), "{message}");
    }

    #[test]
    fn an_unreachable_manager_is_reported_by_the_first_request() {
        let temp = tempfile::tempdir().expect("tempdir");
        self_signed_bundle(temp.path(), 2999);
        // A port nobody listens on any more.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("free port")
            .to_string();
        let host = Host::Tcp(addr.clone());
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let error = runtime.block_on(async {
            let mut client = client::connect(Some(&host), Some(temp.path()))
                .await
                .expect("tcp:// connects lazily");
            match client.node_list().await {
                Ok(_) => panic!("listed the nodes of nobody"),
                Err(error) => anyhow::Error::from(error),
            }
        });
        assert_eq!(Exit::of(&error), Exit::Unreachable, "{error:#}");
        assert!(error.to_string().contains(&addr), "{error}");
    }

    #[test]
    fn a_missing_daemon_is_unreachable() {
        let host = Host::Unix("/nonexistent/essaim.sock".into());
        let error = connect(&host, None).expect_err("connected to nothing");
        assert_eq!(Exit::of(&error), Exit::Unreachable);
    }
}
