//! The interactive shell: `essaim` with no command. Each line is a command of the table
//! (`service ls`, the same as `essaim service ls`) or else a Rhai expression. The prompt
//! shows the cluster and its health; TAB completes commands, flags and live names.
//!
//! # Layout
//! - [`cache`]: names and health, refreshed in the background for the prompt and completion.
//! - [`helper`]: completion, hints and multi-line validation for the line editor.

pub mod cache;
pub mod helper;

use std::io;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use clap::{CommandFactory, Parser};
use essaim_api::transport::Host;
use rustyline::config::Config;
use rustyline::error::ReadlineError;
use rustyline::history::FileHistory;
use rustyline::{CompletionType, Editor};

use self::cache::{Cache, Health};
use self::helper::Helper;
use crate::cli::Cli;
use crate::client::{self, Client};
use crate::connection::Connection;
use crate::embedded::Embedded;
use crate::render::Output;
use crate::script::Script;
use crate::style::{self, Tone};
use crate::Exit;

/// What the REPL prints at start and on `help`.
const TIPS: &str = "\
Type a command as you would after `essaim` (service ls, node ps node-1, service scale web=3),
or a Rhai expression (40 + 2, [1, 2, 3].len()). `help` lists the commands, `help service
create` shows one; TAB completes; Ctrl-R searches history; Ctrl-C clears the line or stops a
command; Ctrl-D or `exit` leaves.";

/// Runs the REPL until the user leaves; its exit code is that of the last command.
pub fn run(host: Option<Host>, tls_dir: Option<PathBuf>) -> ExitCode {
    let mut stdout = io::stdout();
    let mut stderr = io::stderr();
    let mut output = Output::for_terminal(&mut stdout, &mut stderr);
    match Session::open(host, tls_dir, &mut output) {
        Ok(mut session) => {
            let exit = session.run(&mut output);
            session.close(&mut output);
            exit.into()
        }
        Err(error) => {
            output.error(&error);
            Exit::of(&error).into()
        }
    }
}

struct Session {
    conn: Rc<Connection>,
    /// The cluster's name on the prompt: `embedded`, `local` or the host.
    label: String,
    cache: Cache,
    script: Script,
    interrupted: Arc<AtomicBool>,
    /// Where the shell connects, for the lock renewals of `run --lock`.
    host: Host,
    tls_dir: Option<PathBuf>,
    embedded: Option<Embedded>,
    history: PathBuf,
}

impl Session {
    /// Connects to the daemon, or starts the embedded cluster when none answers at the
    /// default socket.
    fn open(
        host: Option<Host>,
        tls_dir: Option<PathBuf>,
        output: &mut Output<'_>,
    ) -> anyhow::Result<Session> {
        let runtime = Connection::runtime()?;
        let explicit = host.is_some();
        let host = host.unwrap_or_else(client::default_host);
        let mut embedded = None;
        let client = match runtime.block_on(Client::connect(&host, tls_dir.as_deref())) {
            Ok(client) => client,
            Err(error) if !explicit && Exit::of(&error) == Exit::Unreachable => {
                let data_dir = essaim_api::paths::default_data_dir();
                let socket = essaim_api::paths::socket_in(&data_dir);
                let node = Embedded::start(&data_dir, &runtime)?;
                output.note(&format!(
                    "No essaimd answers at {}: started an embedded single-node cluster \
                     (state in {}; it stops when you leave).\n",
                    socket.display(),
                    data_dir.display()
                ));
                embedded = Some(node);
                runtime.block_on(Client::connect(&host, None))?
            }
            Err(error) => return Err(error),
        };
        let label = match (&embedded, &host) {
            (Some(_), _) => "embedded".to_string(),
            (None, Host::Unix(_)) if !explicit => "local".to_string(),
            (None, Host::Unix(path)) => path.display().to_string(),
            (None, Host::Tcp(addr)) => addr.clone(),
        };
        let interrupted = Arc::new(AtomicBool::new(false));
        watch_interrupts(Arc::clone(&interrupted));
        let conn = Rc::new(Connection::new(runtime, client));
        Ok(Session {
            cache: Cache::start(host.clone(), tls_dir.clone()),
            script: Script::with_cluster(Arc::clone(&interrupted), Rc::clone(&conn)),
            conn,
            interrupted,
            host,
            tls_dir,
            label,
            embedded,
            history: history_file(),
        })
    }

    fn run(&mut self, output: &mut Output<'_>) -> Exit {
        let config = Config::builder()
            .history_ignore_space(true)
            .history_ignore_dups(true)
            .map(|builder| builder.completion_type(CompletionType::List).build());
        let editor = config.and_then(Editor::<Helper, FileHistory>::with_config);
        let mut editor = match editor {
            Ok(editor) => editor,
            Err(error) => {
                output.error(&error.into());
                return Exit::Failed;
            }
        };
        editor.set_helper(Some(Helper::new(self.cache.clone())));
        // A first session has no history yet.
        let _ = editor.load_history(&self.history);
        if output.interactive {
            output.note(&format!("{TIPS}\n"));
        }
        let mut exit = Exit::Success;
        loop {
            let (raw, styled) = prompt(&self.label, &self.cache.snapshot().health);
            match editor.readline(&(raw.as_str(), styled.as_str())) {
                Ok(line) => {
                    if !line.trim().is_empty() {
                        let _ = editor.add_history_entry(line.as_str());
                        save_history(&mut editor, &self.history);
                    }
                    match self.execute(&line, output) {
                        Some(code) => exit = code,
                        None => break,
                    }
                }
                Err(ReadlineError::Interrupted) => continue,
                Err(ReadlineError::Eof) => break,
                Err(error) => {
                    output.error(&error.into());
                    exit = Exit::Failed;
                    break;
                }
            }
        }
        exit
    }

    /// Runs one entry; `None` when it asks to leave.
    fn execute(&mut self, line: &str, output: &mut Output<'_>) -> Option<Exit> {
        let trimmed = line.trim();
        if trimmed.is_empty() {
            return Some(Exit::Success);
        }
        if matches!(trimmed, "exit" | "quit") {
            return None;
        }
        if trimmed == "help" {
            let mut help = Cli::command().render_long_help().to_string();
            help.push_str(&format!("\n{TIPS}\n"));
            return Some(print_or_fail(output, &help));
        }
        let commands = Cli::command();
        if helper::is_command_line(&commands, trimmed) {
            return Some(self.command(trimmed, output));
        }
        Some(self.expression(line, &commands, output))
    }

    fn command(&mut self, line: &str, output: &mut Output<'_>) -> Exit {
        let words = match crate::cli::parse_command_args(line) {
            Ok(words) => words.0,
            Err(message) => {
                output.error(&crate::UsageError(message).into());
                return Exit::Usage;
            }
        };
        let cli = match Cli::try_parse_from(std::iter::once("essaim".to_string()).chain(words)) {
            Ok(cli) => cli,
            Err(error) => {
                let text = error.render().to_string();
                let code = error.exit_code();
                if code == 0 {
                    return print_or_fail(output, &text);
                }
                output.note(&text);
                return Exit::Usage;
            }
        };
        if cli.host.is_some() || cli.tls_dir.is_some() {
            output.error(
                &crate::UsageError(format!(
                    "-H and --tls-dir choose the cluster when essaim starts; this shell talks \
                     to {}",
                    self.label
                ))
                .into(),
            );
            return Exit::Usage;
        }
        let command = match cli.command {
            None => return Exit::Success,
            Some(crate::cli::Command::Run(args)) => {
                let code = crate::script::runner::run_with(
                    args,
                    &self.conn,
                    Arc::clone(&self.interrupted),
                    Some(self.host.clone()),
                    self.tls_dir.clone(),
                    output,
                );
                return if code == 0 {
                    Exit::Success
                } else {
                    Exit::Failed
                };
            }
            Some(command) => command,
        };
        let result = self
            .conn
            .block_on(async |client| crate::commands::run(command, client, output).await);
        crate::report(result, output)
    }

    fn expression(
        &mut self,
        line: &str,
        commands: &clap::Command,
        output: &mut Output<'_>,
    ) -> Exit {
        match self.script.eval(line) {
            Ok(value) => print_or_fail(output, &crate::script::show(&value)),
            Err(message) => {
                let first = line.split_whitespace().next().unwrap_or("");
                let names = commands
                    .get_subcommands()
                    .map(clap::Command::get_name)
                    .chain(helper::REPL_WORDS);
                let hint = essaim_core::suggest::closest(first, names)
                    .map(|name| format!("unknown command '{first}': did you mean '{name}'?"));
                let error = match hint {
                    Some(hint) => anyhow::anyhow!("{hint}"),
                    None => anyhow::anyhow!("{message}"),
                };
                output.note(&format!(
                    "{} {}\n",
                    style::paint("Error:", Tone::Bad),
                    error
                ));
                Exit::Failed
            }
        }
    }

    fn close(self, output: &mut Output<'_>) {
        // Hang up every connection first: a daemon stopping waits for its clients to go.
        // Connections live on their runtime; dropping the last handle closes them.
        self.cache.stop();
        drop(self.script);
        drop(self.conn);
        if let Some(embedded) = self.embedded {
            let dir = embedded.data_dir.clone();
            match embedded.stop() {
                Ok(()) => output.note(&format!(
                    "Stopped the embedded cluster (state kept in {}).\n",
                    dir.display()
                )),
                Err(error) => output.error(&error.context("stopping the embedded cluster")),
            }
        }
    }
}

fn print_or_fail(output: &mut Output<'_>, text: &str) -> Exit {
    match output.print(text) {
        Ok(()) => Exit::Success,
        Err(error) => {
            output.error(&error.into());
            Exit::Failed
        }
    }
}

/// `essaim[local · leader m1 · 3/3 managers]> `, plain and colored.
fn prompt(label: &str, health: &Health) -> (String, String) {
    let (status, tone) = match health {
        Health::Unknown => (String::new(), Tone::Plain),
        Health::Unreachable(_) => (" · unreachable".to_string(), Tone::Bad),
        Health::Up(managers) => {
            let tone = match managers.leader {
                None => Tone::Bad,
                Some(_) if managers.reachable < managers.total => Tone::Busy,
                Some(_) => Tone::Good,
            };
            let leader = managers
                .leader
                .as_ref()
                .map_or("no leader".to_string(), |name| format!("leader {name}"));
            (
                format!(
                    " · {leader} · {}/{} managers",
                    managers.reachable, managers.total
                ),
                tone,
            )
        }
    };
    let raw = format!("essaim[{label}{status}]> ");
    let styled = format!(
        "{}{}{}{}",
        style::bold("essaim["),
        style::bold(label),
        style::paint(&status, tone),
        style::bold("]> ")
    );
    (raw, styled)
}

/// Where history is kept: `$ESSAIM_HISTORY`, else `~/.local/state/essaim/history`.
fn history_file() -> PathBuf {
    if let Some(path) = std::env::var_os("ESSAIM_HISTORY") {
        return PathBuf::from(path);
    }
    let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/tmp"), PathBuf::from);
    home.join(".local/state/essaim/history")
}

/// Appends the session's new lines to the history file, so a crash loses none.
fn save_history(editor: &mut Editor<Helper, FileHistory>, path: &Path) {
    if let Some(dir) = path.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    let _ = editor.append_history(path);
}

/// Sets `flag` on each Ctrl-C that reaches the process while a command or script runs (the
/// line editor reads Ctrl-C as a key itself). The Rhai engine polls it to stop a script.
///
/// The handler is installed before this returns, on purpose: the line editor saves the
/// process's SIGINT handler when it starts reading a line and puts it back when it is done, so
/// a handler installed while it reads (from another thread) would be undone, and the next
/// Ctrl-C during a command would kill the shell.
pub fn watch_interrupts(flag: Arc<AtomicBool>) {
    let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    let interrupts = {
        let _context = runtime.enter();
        tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
    };
    let Ok(mut interrupts) = interrupts else {
        return;
    };
    let _ = std::thread::Builder::new()
        .name("interrupts".to_string())
        .spawn(move || {
            runtime.block_on(async {
                while interrupts.recv().await.is_some() {
                    flag.store(true, Ordering::Relaxed);
                }
            });
        });
}

#[cfg(test)]
mod tests {
    use super::cache::Managers;
    use super::*;

    #[test]
    fn the_prompt_names_the_cluster_and_its_health() {
        let up = Health::Up(Managers {
            leader: Some("m1".into()),
            reachable: 3,
            total: 3,
        });
        assert_eq!(
            prompt("local", &up).0,
            "essaim[local · leader m1 · 3/3 managers]> "
        );
        assert_eq!(
            prompt("embedded", &Health::Unreachable("gone".into())).0,
            "essaim[embedded · unreachable]> "
        );
        assert_eq!(prompt("local", &Health::Unknown).0, "essaim[local]> ");
        let leaderless = Health::Up(Managers {
            leader: None,
            reachable: 1,
            total: 3,
        });
        assert_eq!(
            prompt("local", &leaderless).0,
            "essaim[local · no leader · 1/3 managers]> "
        );
    }
}
