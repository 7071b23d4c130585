//! The essaim shell as a user meets it: the REPL driven through a real pseudo-terminal
//! (completion, multi-line input, Ctrl-C, history, confirmation), one-shot commands as a
//! script sees them (JSON, exit codes, no escape codes), the embedded cluster, and the
//! examples of `essaim help`, each run against real daemons.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use essaim_tests::{die_with_parent, essaim_path, wait_for, Cluster, Daemon};
use rexpect::session::PtySession;
use serde_json::Value;

/// How long the REPL may take to answer anything in these tests.
const ANSWER_MS: u64 = 30_000;

/// Starts the REPL on a terminal, talking to `daemon`, with its history in `history`.
fn repl(daemon: &Daemon, history: &Path) -> Result<PtySession> {
    let mut command = Command::new(essaim_path());
    command
        .arg("-H")
        .arg(format!("unix://{}", daemon.socket().display()))
        .env("ESSAIM_HISTORY", history)
        .env("TERM", "xterm")
        .env_remove("NO_COLOR");
    die_with_parent(&mut command);
    let options = rexpect::reader::Options::new()
        .timeout_ms(Some(ANSWER_MS))
        .strip_ansi_escape_codes(true);
    let mut session = rexpect::session::spawn_with_options(command, options)?;
    wait_for_health(&mut session)?;
    Ok(session)
}

/// The prompt, drawn anew. (The line editor also redraws the prompt while a line is typed:
/// wait for a command's output first, then for this, before typing the next line; typing
/// while a command runs may be lost when the editor takes the terminal back.)
const PROMPT: &str = r"essaim\[[^\]\n]*\]> ";

/// Presses Enter until the prompt shows the cluster's health: the name cache has been filled.
fn wait_for_health(session: &mut PtySession) -> Result<()> {
    let deadline = Instant::now() + Duration::from_millis(ANSWER_MS);
    loop {
        let (_, prompt) = session.exp_regex(PROMPT)?;
        if prompt.contains("leader m1") {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the prompt never showed the leader: {prompt:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
        session.send_line("")?;
    }
}

/// A one-node swarm (m1) with a service `webfront` of one replica.
fn cluster_with_webfront() -> Result<Cluster> {
    let cluster = Cluster::start(1, 0)?;
    cluster
        .node("m1")
        .ok(&["service", "create", "--name", "webfront", "sleep", "3600"])?;
    Ok(cluster)
}

#[test]
fn tab_completes_a_live_service_name() -> Result<()> {
    let cluster = cluster_with_webfront()?;
    let history = cluster.root().join("history");
    let mut session = repl(cluster.node("m1"), &history)?;
    session.send("service ps webf")?;
    session.send("\t")?;
    session.flush()?;
    // The line now holds the whole name: Enter lists its task.
    session.exp_string("webfront")?;
    session.send_line("")?;
    session.exp_string("webfront.1")?;
    session.exp_string("Running")?;
    Ok(())
}

#[test]
fn an_open_rhai_block_continues_on_the_next_line() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let mut session = repl(cluster.node("m1"), &cluster.root().join("history"))?;
    session.send_line("let total = 0; for i in 1..=3 {")?;
    session.send_line("  total += i * 7;")?;
    // The block ends, and the whole entry is evaluated: its value is shown.
    session.send_line("}; total")?;
    session.exp_string("42")?;
    session.exp_regex(PROMPT)?;
    // A mistyped command is not taken for Rhai silently.
    session.send_line("servce ls")?;
    session.exp_string("did you mean 'service'?")?;
    Ok(())
}

#[test]
fn ctrl_c_stops_a_running_script_and_keeps_the_session() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let mut session = repl(cluster.node("m1"), &cluster.root().join("history"))?;
    session.send_line("let kept = 42; print(\"re\" + \"ady\");")?;
    session.exp_string("ready")?;
    session.exp_regex(PROMPT)?;
    // A loop that never ends (and never reaches the operation limit): it sleeps. It says when
    // it runs (the marker is built, so that the echo of the line does not match it).
    session.send_line("print(\"loop\" + \"ing\"); loop { sleep(0.05) }")?;
    session.exp_string("looping")?;
    session.send_control('c')?;
    session.exp_string("script stopped: interrupted by Ctrl-C")?;
    session.exp_regex(PROMPT)?;
    session.send_line("kept")?;
    session.exp_string("42")?;
    Ok(())
}

#[test]
fn ctrl_c_during_a_waiting_scale_leaves_it_running_and_keeps_the_session() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    // Its tasks stay pending: the scale cannot converge.
    m1.create_stuck_service("stuck")?;
    let mut session = repl(m1, &cluster.root().join("history"))?;
    session.send_line("service scale stuck=2")?;
    session.exp_string("overall progress: 0 out of 2 tasks")?;
    session.send_control('c')?;
    session.exp_string("the scaling of stuck goes on in the cluster")?;
    session.exp_string("essaim service wait stuck")?;
    // Still in the shell, and the scale went through.
    session.exp_regex(PROMPT)?;
    session.send_line("service ls")?;
    session.exp_string("0/2")?;
    let services = m1.json(&["service", "ls"])?;
    assert_eq!(services[0]["spec"]["mode"]["replicated"]["replicas"], 2);
    Ok(())
}

#[test]
fn history_is_kept_across_sessions() -> Result<()> {
    let cluster = cluster_with_webfront()?;
    let m1 = cluster.node("m1");
    let history = cluster.root().join("history");
    let id = m1.ok(&["service", "ls", "-q"])?.trim().to_string();
    {
        let mut first = repl(m1, &history)?;
        first.send_line("service ls -q")?;
        first.exp_string(&id)?;
        first.exp_regex(PROMPT)?;
        first.send_control('d')?;
        first.exp_eof()?;
    }
    let saved = std::fs::read_to_string(&history)?;
    assert!(saved.contains("service ls -q"), "{saved}");
    let mut second = repl(m1, &history)?;
    // Ctrl-R finds the line of the first session; Enter runs it.
    second.send_control('r')?;
    second.send("ls -q")?;
    second.flush()?;
    second.exp_string("service ls -q")?;
    second.send_line("")?;
    second.exp_string(&id)?;
    Ok(())
}

#[test]
fn service_rm_asks_first_and_no_keeps_the_service() -> Result<()> {
    let cluster = cluster_with_webfront()?;
    let m1 = cluster.node("m1");
    let mut session = repl(m1, &cluster.root().join("history"))?;
    session.send_line("service rm webfront")?;
    session.exp_string("remove service webfront (1 of 1 tasks running)")?;
    session.exp_string("Continue? [y/N]")?;
    session.send_line("n")?;
    session.exp_string("Cancelled: nothing was changed.")?;
    session.exp_regex(PROMPT)?;
    assert_eq!(
        m1.json(&["service", "ls"])?.as_array().map(Vec::len),
        Some(1)
    );

    session.send_line("service rm webfront")?;
    session.exp_string("Continue? [y/N]")?;
    session.send_line("y")?;
    session.exp_regex(PROMPT)?;
    wait_for("the service gone", Duration::from_secs(10), || {
        Ok(m1
            .json(&["service", "ls"])?
            .as_array()
            .is_some_and(Vec::is_empty)
            .then_some(()))
    })?;
    // Without a terminal nothing asks: a script is never stopped by a question.
    m1.ok(&[
        "service", "create", "--detach", "--name", "other", "sleep", "60",
    ])?;
    m1.ok(&["service", "rm", "other"])?;
    Ok(())
}

/// Runs `essaim ARGS` on `daemon` as a script would: no terminal, colors allowed by the
/// environment (so that their absence is the shell's doing).
fn script(daemon: &Daemon, args: &[&str]) -> Output {
    Command::new(essaim_path())
        .arg("-H")
        .arg(format!("unix://{}", daemon.socket().display()))
        .args(args)
        .env("TERM", "xterm-256color")
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .expect("essaim runs")
}

fn code(output: &Output) -> Option<i32> {
    output.status.code()
}

#[test]
fn one_shot_commands_print_json_and_exit_with_documented_codes() -> Result<()> {
    let cluster = cluster_with_webfront()?;
    let m1 = cluster.node("m1");
    for args in [
        &["service", "ls", "--format", "json"][..],
        &["service", "ps", "webfront", "--format", "json"],
        &["service", "inspect", "webfront"],
        &["node", "ls", "--format", "json"],
        &["node", "ps", "m1", "--format", "json"],
        &["node", "inspect", "m1"],
        &["swarm", "inspect"],
        &["info", "--format", "json"],
    ] {
        let out = script(m1, args);
        assert_eq!(
            code(&out),
            Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<Value>(&out.stdout)
            .with_context(|| format!("{args:?} printed no JSON"))?;
    }

    // 1: the command failed; a mistyped name gets a suggestion.
    let out = script(m1, &["service", "inspect", "webfrnt"]);
    assert_eq!(code(&out), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("did you mean \"webfront\"?"), "{err}");
    // 2: usage, with clap's suggestion for a mistyped command.
    let out = script(m1, &["servce", "ls"]);
    assert_eq!(code(&out), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("service"));
    let out = script(m1, &["service", "create", "--replicas", "x", "sleep"]);
    assert_eq!(code(&out), Some(2));
    // 3: no daemon there.
    let out = Command::new(essaim_path())
        .args(["-H", "unix:///nonexistent/essaim.sock", "service", "ls"])
        .output()?;
    assert_eq!(
        code(&out),
        Some(3),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // 4: a wait that runs out.
    m1.create_stuck_service("stuck")?;
    let out = script(m1, &["service", "wait", "--timeout", "1s", "stuck"]);
    assert_eq!(code(&out), Some(4));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("has not converged after 1s"), "{err}");
    // 0: a wait that is met.
    let out = script(m1, &["service", "wait", "--timeout", "30s", "webfront"]);
    assert_eq!(
        code(&out),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn output_without_a_terminal_has_no_escape_codes() -> Result<()> {
    let cluster = cluster_with_webfront()?;
    let m1 = cluster.node("m1");
    for args in [
        &["service", "ls"][..],
        &["service", "ps", "webfront"],
        &["node", "ls"],
        &["service", "inspect", "--pretty", "webfront"],
        &["service", "scale", "webfront=2"],
        &["service", "inspect", "nothing"],
        &["info"],
    ] {
        let out = script(m1, args);
        for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
            assert!(
                !bytes.contains(&0x1b),
                "{args:?} wrote an escape code on {stream}: {:?}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
    // The scale waited for convergence, and said so on stderr.
    let out = script(m1, &["service", "scale", "webfront=3"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("webfront: converged (3 out of 3 tasks running)"),
        "{err}"
    );
    Ok(())
}

/// Runs the shell with no daemon configured, feeding it `input` on stdin.
fn embedded(data_dir: &Path, input: &str) -> Result<Output> {
    use std::io::Write;
    let mut command = Command::new(essaim_path());
    command
        .env("ESSAIM_DATA_DIR", data_dir)
        .env("ESSAIM_RUNTIME", "process")
        .env("ESSAIM_HISTORY", data_dir.join("history"))
        .env_remove("ESSAIM_HOST")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = die_with_parent(&mut command).spawn()?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(input.as_bytes())?;
    Ok(child.wait_with_output()?)
}

#[test]
fn the_embedded_cluster_keeps_its_services_across_starts() -> Result<()> {
    let dir = tempfile::Builder::new()
        .prefix("essaim-embedded-")
        .tempdir()?;
    let first = embedded(
        dir.path(),
        "service create --name keep --replicas 2 sleep 3600\nservice ls\n",
    )?;
    let err = String::from_utf8_lossy(&first.stderr);
    assert_eq!(code(&first), Some(0), "{err}");
    assert!(
        err.contains("started an embedded single-node cluster"),
        "{err}"
    );
    assert!(
        err.contains("keep: converged (2 out of 2 tasks running)"),
        "{err}"
    );
    assert!(err.contains("Stopped the embedded cluster"), "{err}");
    // The node is gone with the shell: nothing answers at its socket.
    assert!(std::os::unix::net::UnixStream::connect(dir.path().join("essaim.sock")).is_err());

    let second = embedded(dir.path(), "service ls --format json\n")?;
    assert_eq!(
        code(&second),
        Some(0),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let services: Value = serde_json::from_slice(&second.stdout)?;
    assert_eq!(services[0]["spec"]["name"], "keep");
    assert_eq!(services[0]["spec"]["mode"]["replicated"]["replicas"], 2);
    Ok(())
}

/// The commands `essaim help` lists under `path`, read off its help.
fn subcommands(path: &[String]) -> Result<Vec<String>> {
    let help = help_of(path)?;
    Ok(help
        .lines()
        .skip_while(|line| *line != "Commands:")
        .skip(1)
        .take_while(|line| line.starts_with("  "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect())
}

fn help_of(path: &[String]) -> Result<String> {
    let out = Command::new(essaim_path())
        .args(path)
        .arg("--help")
        .output()?;
    if !out.status.success() {
        bail!("essaim {} --help failed", path.join(" "));
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// Every `$ essaim ...` line of every command's help, in the order the help lists them.
fn examples(path: &mut Vec<String>, found: &mut Vec<String>) -> Result<()> {
    let help = help_of(path)?;
    found.extend(
        help.lines()
            .filter_map(|line| line.trim_start().strip_prefix("$ essaim "))
            .map(str::to_string),
    );
    for sub in subcommands(path)? {
        path.push(sub);
        examples(path, found)?;
        path.pop();
    }
    Ok(())
}

#[test]
fn help_examples_run() -> Result<()> {
    // Some examples run busybox, as Docker's examples do.
    essaim_tests::docker::install_test_deps()?;
    let mut found = Vec::new();
    examples(&mut Vec::new(), &mut found)?;
    assert!(found.len() > 20, "too few examples: {found:?}");
    // Leaving the swarm ends the others' cluster: it goes last.
    found.sort_by_key(|line| line.starts_with("swarm leave"));

    let mut cluster = Cluster::empty()?;
    cluster.add("node-1")?;
    for line in &found {
        let node = cluster.node("node-1");
        // An example is a line of a shell: quotes and all.
        let out = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "'{}' -H 'unix://{}' {line}",
                essaim_path().display(),
                node.socket().display()
            ))
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .output()?;
        assert!(
            out.status.success(),
            "example `essaim {line}` failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if line.starts_with("swarm init") {
            // The second node the examples use joins as a worker.
            cluster.add_worker_of("node-1", "node-2")?;
        }
    }
    Ok(())
}

#[test]
fn watch_redraws_when_the_cluster_changes() -> Result<()> {
    use std::io::{BufRead, BufReader};
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    let mut command = Command::new(essaim_path());
    command
        .arg("-H")
        .arg(format!("unix://{}", m1.socket().display()))
        .args(["watch", "service", "ls"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = die_with_parent(&mut command).spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
    let (lines, seen) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines.send(line).is_err() {
                break;
            }
        }
    });
    let next_line_with = |needle: &str| -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = seen
                .recv_timeout(left)
                .with_context(|| format!("watch never printed {needle:?}"))?;
            if line.contains(needle) {
                return Ok(());
            }
        }
    };
    next_line_with("Every change: essaim service ls")?;
    m1.ok(&[
        "service", "create", "--detach", "--name", "watched", "sleep", "60",
    ])?;
    // A new drawing, with the new service in it.
    next_line_with("watched")?;
    let _ = child.kill();
    let _ = child.wait();
    Ok(())
}
