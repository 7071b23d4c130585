//! `essaim run FILE.rhai` and `essaim -c EXPR`: a script run as a cron job would. No colors or
//! questions off a terminal; one JSON document with `--format json`; an exit code that tells
//! success from each kind of failure; `--lock NAME` keeps two runs of one job apart.
//!
//! # Exit codes
//! 0 success (or `exit(0)`); 1 the script failed (syntax error, uncaught error, operation
//! limit); 2 usage (bad flags, a file that cannot be read); 3 the cluster is unreachable;
//! 4 `--timeout` ran out; 5 `--lock` is held by another run; 130 Ctrl-C; `exit(N)`: N.

use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use essaim_api::transport::Host;
use rhai::{Dynamic, Map};

use super::{plain, show, value, Script};
use crate::cli::{Format, RunArgs};
use crate::client::Client;
use crate::connection::Connection;
use crate::render::Output;
use crate::Exit;

/// The exit code of a run refused because another holds its lock.
pub const LOCK_HELD: u8 = 5;
/// How long a lock lasts without renewal: a run that dies frees it after this.
const LOCK_TTL: Duration = Duration::from_secs(30);
/// How often a running script renews its lock.
const LOCK_RENEW: Duration = Duration::from_secs(10);

/// Runs the script `args` names; returns the process's exit code.
pub fn run(args: RunArgs, host: Option<Host>, tls_dir: Option<PathBuf>) -> u8 {
    let mut stdout = std::io::stdout();
    let mut stderr = std::io::stderr();
    let mut output = Output::for_terminal(&mut stdout, &mut stderr);
    let script = match read_script(&args) {
        Ok(script) => script,
        Err(error) => return refuse(&args, error, Exit::Usage as u8, &mut output),
    };
    let runtime = match Connection::runtime() {
        Ok(runtime) => runtime,
        Err(error) => {
            output.error(&error.into());
            return Exit::Failed as u8;
        }
    };
    let client = match runtime.block_on(crate::client::connect(host.as_ref(), tls_dir.as_deref())) {
        Ok(client) => client,
        Err(error) => {
            let code = Exit::of(&error) as u8;
            return refuse(&args, error, code, &mut output);
        }
    };
    let conn = Rc::new(Connection::new(runtime, client));
    let interrupted = Arc::new(AtomicBool::new(false));
    crate::repl::watch_interrupts(Arc::clone(&interrupted));
    run_read(args, script, &conn, interrupted, host, tls_dir, &mut output)
}

/// Runs the script on an open connection: the REPL's `run FILE`.
pub fn run_with(
    args: RunArgs,
    conn: &Rc<Connection>,
    interrupted: Arc<AtomicBool>,
    host: Option<Host>,
    tls_dir: Option<PathBuf>,
    output: &mut Output<'_>,
) -> u8 {
    match read_script(&args) {
        Ok(script) => run_read(args, script, conn, interrupted, host, tls_dir, output),
        Err(error) => refuse(&args, error, Exit::Usage as u8, output),
    }
}

/// Runs `script`, read from what `args` names.
fn run_read(
    args: RunArgs,
    (text, source, dir): (String, String, PathBuf),
    conn: &Rc<Connection>,
    interrupted: Arc<AtomicBool>,
    host: Option<Host>,
    tls_dir: Option<PathBuf>,
    output: &mut Output<'_>,
) -> u8 {
    let _lock = match &args.lock {
        Some(name) => match Lock::take(conn, name, host, tls_dir) {
            Ok(lock) => Some(lock),
            Err((code, error)) => return refuse(&args, error, code, output),
        },
        None => None,
    };

    let mut script = Script::with_cluster(interrupted, Rc::clone(conn));
    script.resolve_imports_from(&dir);
    if let Some(limit) = args.max_operations {
        script.set_max_operations(limit);
    }
    if args.format == Format::Json {
        script.print_to_stderr();
    }
    let named: Map = args
        .arg
        .iter()
        .map(|(key, value)| (key.as_str().into(), value.clone().into()))
        .collect();
    // With -c, the first positional argument was read as FILE: it is the script's first.
    let first = args
        .eval
        .as_ref()
        .and(args.file.as_ref())
        .map(|file| file.display().to_string());
    let positional: rhai::Array = first
        .into_iter()
        .chain(args.argv.iter().cloned())
        .map(Dynamic::from)
        .collect();
    script.set_args(named);
    script.scope_mut().push_constant("argv", positional);
    conn.set_deadline(args.timeout.map(Duration::from_millis));

    let result = script.run(&text, Some(&source));
    conn.set_deadline(None);
    let changes = conn.take_changes();
    match result {
        Ok(value) => finish_ok(&value, &changes, args.format, output),
        Err(error) if error.exit == 0 => {
            let result = error.result.unwrap_or(Dynamic::UNIT);
            finish_ok(&result, &changes, args.format, output)
        }
        Err(error) => {
            let code = u8::try_from(error.exit).unwrap_or(1);
            let result = error.result.as_ref().map(plain);
            match args.format {
                Format::Json => {
                    let result = result
                        .as_ref()
                        .and_then(|value| value::to_json(value).ok())
                        .unwrap_or(serde_json::Value::Null);
                    let document = serde_json::json!({
                        "ok": false,
                        "error": error.message,
                        "result": result,
                        "exit_code": code,
                        "changes": changes,
                    });
                    let _ = output.print(&format!("{document:#}\n"));
                }
                Format::Table => {
                    if let Some(value) = &error.result {
                        let _ = output.print(&show(value));
                    }
                }
            }
            if !error.message.is_empty() {
                output.note(&format!(
                    "{} {}\n",
                    crate::style::paint("Error:", crate::style::Tone::Bad),
                    error.message
                ));
            }
            if !changes.is_empty() {
                let mut text = String::from("Changes made before the script stopped:\n");
                for change in &changes {
                    text.push_str(&format!("  - {change}\n"));
                }
                output.note(&text);
            }
            code
        }
    }
}

/// A run stopped before the script started: the error, and with `--format json` the
/// document a cron job expects.
fn refuse(args: &RunArgs, error: anyhow::Error, code: u8, output: &mut Output<'_>) -> u8 {
    if args.format == Format::Json {
        let document = serde_json::json!({
            "ok": false,
            "error": crate::render::error_line(&error),
            "result": null,
            "exit_code": code,
            "changes": [],
        });
        let _ = output.print(&format!("{document:#}\n"));
    }
    output.error(&error);
    code
}

fn finish_ok(value: &Dynamic, changes: &[String], format: Format, output: &mut Output<'_>) -> u8 {
    let printed = match format {
        Format::Table => output.print(&show(value)),
        Format::Json => {
            let result = match value::to_json(&plain(value)) {
                Ok(json) => json,
                Err(error) => {
                    output.error(&anyhow::anyhow!("the result cannot be JSON: {error}"));
                    return Exit::Failed as u8;
                }
            };
            let document = serde_json::json!({ "ok": true, "result": result, "changes": changes });
            output.print(&format!("{document:#}\n"))
        }
    };
    match printed {
        Ok(()) => 0,
        Err(error) => Exit::of(&error.into()) as u8,
    }
}

/// The script's text, the name errors give it, and the directory imports start from.
fn read_script(args: &RunArgs) -> anyhow::Result<(String, String, PathBuf)> {
    if let Some(text) = &args.eval {
        let here = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        return Ok((text.clone(), "-c".to_string(), here));
    }
    let Some(file) = &args.file else {
        return Err(crate::UsageError("run: give a script file, or -c EXPR".into()).into());
    };
    let text = std::fs::read_to_string(file).map_err(|e| {
        crate::UsageError(format!("cannot read the script {}: {e}", file.display()))
    })?;
    let dir = file
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .map_or_else(|| PathBuf::from("."), PathBuf::from);
    Ok((text, file.display().to_string(), dir))
}

/// A cluster-wide lease held while the script runs, renewed in the background, released at
/// the end. If the process dies, the lease runs out after [`LOCK_TTL`].
struct Lock {
    name: String,
    holder: String,
    conn: Rc<Connection>,
    stop: Arc<AtomicBool>,
    renewer: Option<std::thread::JoinHandle<()>>,
}

impl Lock {
    fn take(
        conn: &Rc<Connection>,
        name: &str,
        host: Option<Host>,
        tls_dir: Option<PathBuf>,
    ) -> Result<Lock, (u8, anyhow::Error)> {
        // Host and PID say who holds it; the nonce keeps two hosts of one name (containers)
        // or a reused PID from passing for the holder.
        let nonce = {
            use std::hash::{BuildHasher, Hasher};
            std::collections::hash_map::RandomState::new()
                .build_hasher()
                .finish()
        };
        let holder = format!(
            "{}:{}:{:08x}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| hostname()),
            std::process::id(),
            nonce & 0xffff_ffff
        );
        let granted = conn
            .block_on(async |client| Ok(client.lock_acquire(name, &holder, LOCK_TTL).await?))
            .map_err(|error| (Exit::of(&error) as u8, error))?;
        if !granted.acquired {
            return Err((
                LOCK_HELD,
                anyhow::anyhow!(
                    "lock {name} is held by {} for {}s more: another run of this job is under way",
                    granted.holder,
                    granted.expires_in_ms.div_ceil(1000)
                ),
            ));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let renewer = {
            let (name, holder, stop) = (name.to_string(), holder.clone(), Arc::clone(&stop));
            let lost = conn.lock_lost_signal();
            std::thread::Builder::new()
                .name("lock-renewer".into())
                .spawn(move || {
                    if let Some(reason) = renew(&name, &holder, host, tls_dir, &stop) {
                        lost.send_replace(Some(reason));
                    }
                })
                .ok()
        };
        Ok(Lock {
            name: name.to_string(),
            holder,
            conn: Rc::clone(conn),
            stop,
            renewer,
        })
    }
}

impl Drop for Lock {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(renewer) = self.renewer.take() {
            renewer.thread().unpark();
            let _ = renewer.join();
        }
        let (name, holder) = (self.name.clone(), self.holder.clone());
        self.conn.set_deadline(None);
        let _ = self
            .conn
            .block_on(async |client| Ok(client.lock_release(&name, &holder).await?));
    }
}

/// Renews the lease until told to stop; its own connection, so a script blocked in a call
/// does not let the lease run out. Returns why the lease was lost, if it was: a renewal
/// refused (another run took it), or none granted for a whole lease.
fn renew(
    name: &str,
    holder: &str,
    host: Option<Host>,
    tls_dir: Option<PathBuf>,
    stop: &AtomicBool,
) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .ok()?;
    let mut client: Option<Client> = None;
    let mut renewed = std::time::Instant::now();
    while !stop.load(Ordering::Relaxed) {
        std::thread::park_timeout(LOCK_RENEW);
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if client.is_none() {
            client = runtime
                .block_on(crate::client::connect(host.as_ref(), tls_dir.as_deref()))
                .ok();
        }
        if let Some(connected) = client.as_mut() {
            match runtime.block_on(connected.lock_renew(name, holder, LOCK_TTL)) {
                Ok(_) => renewed = std::time::Instant::now(),
                Err(
                    error @ (essaim_api::ControlError::FailedPrecondition(_)
                    | essaim_api::ControlError::NotFound(_)),
                ) => return Some(format!("lost the lock {name}: {error}")),
                Err(_) => client = None,
            }
        }
        if renewed.elapsed() >= LOCK_TTL {
            return Some(format!(
                "lost the lock {name}: not renewed for {}s (the cluster cannot be reached)",
                LOCK_TTL.as_secs()
            ));
        }
    }
    None
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_string())
        .unwrap_or_else(|_| "essaim".to_string())
}
