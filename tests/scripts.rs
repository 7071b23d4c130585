//! Scripting against a real cluster (process runtime): the Rhai object model, `essaim run`
//! and `-c` as cron runs them (exit codes, JSON, timeout, operation limit, locks), and each
//! script of `scripts/` with its effect checked.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use essaim_tests::{essaim_path, running, wait_for, Cluster, Daemon};
use serde_json::Value;

/// A manager m1 and a worker w1, once w1 has reported in: only a ready node gets tasks.
fn manager_and_ready_worker() -> Result<Cluster> {
    let cluster = Cluster::start(1, 1)?;
    cluster.wait_for_nodes("m1", "w1 ready", Duration::from_secs(20), |nodes| {
        essaim_tests::row(nodes, "w1").is_some_and(|w1| w1["status"]["state"] == "ready")
    })?;
    Ok(cluster)
}

fn script_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scripts")
        .join(name)
}

/// `essaim ARGS` against `daemon`, as cron would run it.
fn essaim(daemon: &Daemon, args: &[&str]) -> Output {
    Command::new(essaim_path())
        .arg("-H")
        .arg(format!("unix://{}", daemon.socket().display()))
        .args(args)
        .env_remove("NO_COLOR")
        .stdin(Stdio::null())
        .output()
        .expect("essaim runs")
}

/// `essaim run --format json -c EXPR`: the result, or the failure.
fn eval(daemon: &Daemon, expr: &str) -> Result<Value> {
    let out = essaim(daemon, &["run", "--format", "json", "-c", expr]);
    let document: Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "no JSON from {expr}: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if document["ok"] != true {
        bail!("{expr} failed: {}", document["error"]);
    }
    Ok(document["result"].clone())
}

fn text(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn services_nodes_and_tasks_are_objects() -> Result<()> {
    let cluster = Cluster::start(1, 1)?;
    let m1 = cluster.node("m1");
    let created = eval(
        m1,
        r#"let s = create_service(#{name: "web", image: "sleep", args: ["3600"], replicas: 2,
                                    env: #{MODE: "test"}, labels: #{team: "a"}});
           s.wait_converged("30s");
           s.refresh();
           #{name: s.name, image: s.image, mode: s.mode, replicas: s.replicas,
             running: s.running, team: s.labels.team, env: s.spec.task.env.MODE}"#,
    )?;
    assert_eq!(created["name"], "web");
    assert_eq!(created["image"], "sleep");
    assert_eq!(created["mode"], "replicated");
    assert_eq!(created["replicas"], 2);
    assert_eq!(created["running"], 2);
    assert_eq!(created["team"], "a");
    assert_eq!(created["env"], "test");

    let tasks = eval(
        m1,
        r#"tasks(#{service: "web", state: "running"}).map(|t| #{name: t.name, slot: t.slot,
             node: t.node, state: t.state, desired: t.desired_state, exit: t.exit_code})"#,
    )?;
    let tasks = tasks.as_array().context("array")?;
    assert_eq!(tasks.len(), 2);
    assert!(tasks
        .iter()
        .all(|t| t["state"] == "running" && t["desired"] == "running"));
    assert!(tasks.iter().any(|t| t["name"] == "web.1" && t["slot"] == 1));
    assert!(tasks.iter().all(|t| t["exit"].is_null()));

    let nodes = eval(
        m1,
        r#"nodes().map(|n| #{host: n.hostname, role: n.role, status: n.status,
             leader: n.leader, availability: n.availability})"#,
    )?;
    let nodes = nodes.as_array().context("array")?;
    assert!(nodes
        .iter()
        .any(|n| n["host"] == "m1" && n["role"] == "manager" && n["leader"] == true));
    assert!(nodes
        .iter()
        .any(|n| n["host"] == "w1" && n["role"] == "worker"));

    // Node changes, each sent with the version read.
    let labels = eval(m1, r#"let n = node("w1"); n.label("zone", "b"); n.labels"#)?;
    assert_eq!(labels["zone"], "b");
    let labels = eval(m1, r#"let n = node("w1"); n.unlabel("zone"); n.labels"#)?;
    assert!(labels.get("zone").is_none());
    assert_eq!(
        eval(m1, r#"let n = node("w1"); n.pause(); n.availability"#)?,
        "pause"
    );
    assert_eq!(
        eval(m1, r#"let n = node("w1"); n.activate(); n.availability"#)?,
        "active"
    );

    // Service changes: scale, update, rollback; run() returns data.
    assert_eq!(
        eval(m1, r#"let s = service("web"); s.scale(3); s.replicas"#)?,
        3
    );
    let updated = eval(
        m1,
        r#"let s = service("web"); s.update(#{env: #{MODE: "prod"}}); s.wait_converged("30s");
           s.spec.task.env.MODE"#,
    )?;
    assert_eq!(updated, "prod");
    let rolled = eval(
        m1,
        r#"let s = service("web"); s.rollback(); s.spec.task.env.MODE"#,
    )?;
    assert_eq!(rolled, "test");
    let listed = eval(m1, r#"run("service ls").map(|s| s.spec.name)"#)?;
    assert_eq!(listed, serde_json::json!(["web"]));
    let c = eval(m1, "cluster()")?;
    assert_eq!(c["leader"], "m1");
    assert_eq!(c["managers"], 1);
    assert_eq!(c["nodes"], 2);

    // Snapshots: a change made by someone else since the read is a conflict to catch.
    let conflict = eval(
        m1,
        r#"let a = service("web"); let b = service("web"); a.scale(2);
           let result = "no conflict";
           try { b.scale(4); } catch (e) { b.refresh(); b.scale(4); result = e.message; }
           result"#,
    )?;
    assert!(
        conflict
            .as_str()
            .is_some_and(|e| e.contains("changed meanwhile")),
        "{conflict}"
    );
    assert_eq!(eval(m1, r#"service("web").replicas"#)?, 4);

    eval(m1, r#"service("web").remove()"#)?;
    assert_eq!(eval(m1, "services().len()")?, 0);
    Ok(())
}

#[test]
fn errors_name_the_place_and_what_was_already_changed() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    m1.ok(&[
        "service", "create", "--detach", "--name", "web", "sleep", "600",
    ])?;
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("half.rhai");
    std::fs::write(
        &file,
        "let web = service(\"web\");\nweb.scale(2);\nlet api = service(\"apii\");\napi.scale(2);\n",
    )?;
    let out = essaim(m1, &["run", file.to_str().context("path")?]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("half.rhai:3:"), "{err}");
    assert!(err.contains("service \"apii\" not found"), "{err}");
    assert!(
        err.contains("let api = service(\"apii\");"),
        "the line is shown: {err}"
    );
    assert!(err.contains("scaled web from 1 to 2"), "{err}");

    let out = essaim(m1, &["-c", "let x = ;"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).1.contains("-c:1:"), "{}", text(&out).1);
    let out = essaim(m1, &["-c", "servces()"]);
    assert!(
        text(&out).1.contains("did you mean services?"),
        "{}",
        text(&out).1
    );
    let out = essaim(m1, &["-c", "service(\"web\").imag"]);
    assert!(
        text(&out).1.contains("did you mean image?"),
        "{}",
        text(&out).1
    );
    let out = essaim(m1, &["-c", "service(\"web\").update(#{replics: 3})"]);
    let (_, err) = text(&out);
    assert!(err.contains("replics") && err.contains("replicas"), "{err}");
    let out = essaim(m1, &["run", "/nonexistent/x.rhai"]);
    assert_eq!(out.status.code(), Some(2));
    Ok(())
}

#[test]
fn runaway_scripts_are_stopped_and_cron_can_tell_why() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    let out = essaim(m1, &["run", "--timeout", "1s", "-c", "loop { }"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out).1);
    let out = essaim(m1, &["run", "--timeout", "1s", "-c", "sleep(600)"]);
    assert_eq!(out.status.code(), Some(4), "a blocked call is cut too");
    let out = essaim(m1, &["run", "--max-operations", "1000", "-c", "loop { }"]);
    assert_eq!(out.status.code(), Some(1));
    let (_, err) = text(&out);
    assert!(
        err.contains("limit of 1000") && err.contains("--max-operations"),
        "the limit and the flag are named: {err}"
    );
    let out = essaim(m1, &["-c", "exit(7)"]);
    assert_eq!(out.status.code(), Some(7));
    let out = essaim(m1, &["run", "--format", "json", "-c", "exit(3)"]);
    let document: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(document["ok"], false);
    assert_eq!(document["exit_code"], 3);
    let out = Command::new(essaim_path())
        .args(["-H", "unix:///nonexistent.sock", "-c", "services()"])
        .output()?;
    assert_eq!(out.status.code(), Some(3));
    // Off a terminal: no escape codes, whatever the result.
    let out = essaim(m1, &["-c", "[#{state: \"running\"}, #{state: \"failed\"}]"]);
    assert!(!out.stdout.contains(&0x1b) && !out.stderr.contains(&0x1b));
    Ok(())
}

#[test]
fn two_runs_holding_one_lock_never_overlap() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    let mut first = essaim_tests::die_with_parent(&mut Command::new(essaim_path()))
        .arg("-H")
        .arg(format!("unix://{}", m1.socket().display()))
        .args(["run", "--lock", "nightly", "-c", "sleep(600)"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    wait_for(
        "the first run to hold the lock",
        Duration::from_secs(20),
        || {
            let reply = m1.control(&essaim_api::ControlRequest::LockList)?;
            let held = match reply {
                essaim_api::ControlReply::Locks(locks) => locks.iter().any(|l| l.name == "nightly"),
                _ => false,
            };
            Ok(held.then_some(()))
        },
    )?;
    let second = essaim(m1, &["run", "--lock", "nightly", "-c", "42"]);
    let (_, err) = text(&second);
    assert_eq!(second.status.code(), Some(5), "{err}");
    assert!(err.contains("lock nightly is held by"), "{err}");
    // Another lock is free meanwhile.
    let other = essaim(m1, &["run", "--lock", "weekly", "-c", "42"]);
    assert_eq!(other.status.code(), Some(0), "{}", text(&other).1);
    let _ = first.kill();
    let _ = first.wait();
    // The killed run never released it: the lease runs out (30 s at most), then it is free.
    wait_for(
        "the lease of the killed run to run out",
        Duration::from_secs(60),
        || {
            let out = essaim(m1, &["run", "--lock", "nightly", "-c", "42"]);
            Ok((out.status.code() == Some(0)).then_some(()))
        },
    )?;
    Ok(())
}

#[test]
fn health_report_is_quiet_when_healthy_and_exits_10_on_trouble() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    m1.ok(&["service", "create", "--name", "ok", "sleep", "600"])?;
    let report = script_path("health-report.rhai");
    let out = essaim(m1, &["run", report.to_str().context("path")?]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    assert!(text(&out).0.contains("healthy"));
    m1.create_stuck_service("stuck")?;
    let out = essaim(m1, &["run", report.to_str().context("path")?]);
    let (stdout, _) = text(&out);
    assert_eq!(out.status.code(), Some(10), "{stdout}");
    let row = stdout
        .lines()
        .find(|line| line.contains("stuck"))
        .with_context(|| format!("no row for stuck: {stdout}"))?;
    assert!(
        row.contains("service") && row.contains("0/1 running"),
        "{stdout}"
    );
    assert!(!stdout.contains(" ok "), "{stdout}");
    // The same for a program: one JSON document with the problems, exit code 10.
    let out = essaim(
        m1,
        &["run", "--format", "json", report.to_str().context("path")?],
    );
    assert_eq!(out.status.code(), Some(10));
    let document: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(document["ok"], false);
    assert_eq!(document["exit_code"], 10);
    assert_eq!(document["result"][0]["name"], "stuck");
    Ok(())
}

#[test]
fn drain_node_moves_the_tasks_and_reports_where_they_went() -> Result<()> {
    let cluster = manager_and_ready_worker()?;
    let m1 = cluster.node("m1");
    m1.ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "4",
        "sleep",
        "600",
    ])?;
    wait_for("tasks on w1", Duration::from_secs(20), || {
        let tasks = m1.tasks("web")?;
        Ok(running(&tasks)
            .iter()
            .any(|t| t.node_hostname.as_deref() == Some("w1"))
            .then_some(()))
    })?;
    let script = script_path("drain-node.rhai");
    let out = essaim(
        m1,
        &[
            "run",
            "--format",
            "json",
            script.to_str().context("path")?,
            "w1",
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let document: Value = serde_json::from_str(&stdout)?;
    let report = document["result"].as_array().context("a table")?;
    assert_eq!(report.len(), 4, "{stdout}");
    assert!(report
        .iter()
        .all(|row| row["node"] == "m1" && row["state"] == "running"));
    assert_eq!(document["changes"][0], "set node w1 to drain");
    let tasks = m1.tasks("web")?;
    assert!(running(&tasks)
        .iter()
        .all(|t| t.node_hostname.as_deref() == Some("m1")));
    Ok(())
}

#[test]
fn cleanup_lists_failing_services_and_removes_them_only_when_told() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    m1.ok(&["service", "create", "--name", "fine", "sleep", "600"])?;
    m1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "broken",
        "--restart-delay",
        "100ms",
        // It settles, failed, after three tries: "none running" holds from then on.
        "--restart-max-attempts",
        "2",
        "false",
    ])?;
    wait_for(
        "broken to fail three times",
        Duration::from_secs(30),
        || {
            let failed = m1
                .tasks("broken")?
                .iter()
                .filter(|t| t.task.status.state == essaim_core::model::TaskState::Failed)
                .count();
            Ok((failed >= 3).then_some(()))
        },
    )?;
    let cleanup = script_path("cleanup.rhai");
    let path = cleanup.to_str().context("path")?;
    let out = essaim(m1, &["run", "--format", "json", path]);
    let document: Value = serde_json::from_slice(&out.stdout)?;
    let found = document["result"].as_array().context("a table")?;
    assert_eq!(found.len(), 1, "{document}");
    assert_eq!(found[0]["service"], "broken");
    assert!(found[0]["action"]
        .as_str()
        .is_some_and(|a| a.starts_with("would remove")));
    assert_eq!(
        m1.json(&["service", "ls"])?.as_array().map(Vec::len),
        Some(2)
    );

    let out = essaim(m1, &["run", path, "--arg", "apply=yes"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out).1);
    let names: Vec<Value> = m1
        .json(&["service", "ls"])?
        .as_array()
        .context("array")?
        .iter()
        .map(|s| s["spec"]["name"].clone())
        .collect();
    assert_eq!(names, vec![Value::from("fine")]);
    Ok(())
}

#[test]
fn autoscale_follows_cpu_within_bounds_and_cools_down() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    m1.ok(&["swarm", "update", "--dispatcher-heartbeat", "1s"])?;
    m1.ok(&[
        "service",
        "create",
        "--name",
        "busy",
        "sh",
        "-c",
        "while :; do :; done",
    ])?;
    wait_for("busy's CPU to be reported", Duration::from_secs(30), || {
        let cpu = eval(m1, r#"service("busy").cpu()"#)?;
        Ok((cpu.as_f64().unwrap_or(0.0) > 30.0).then_some(()))
    })?;
    let autoscale = script_path("autoscale.rhai");
    let path = autoscale.to_str().context("path")?;
    let run = |extra: &[&str]| -> Result<Value> {
        let mut args = vec!["run", "--format", "json", path, "--arg", "service=busy"];
        args.extend(["--arg", "max=2", "--arg", "high=30", "--arg", "low=1"]);
        args.extend(extra);
        let out = essaim(m1, &args);
        let document: Value = serde_json::from_slice(&out.stdout).with_context(|| text(&out).1)?;
        Ok(document["result"].clone())
    };
    let first = run(&[])?;
    assert_eq!(first["action"], "scaled 1 -> 2", "{first}");
    assert_eq!(first["replicas"], 2);
    // The label keeps the time of the change for the next run, a new process.
    let label = eval(m1, r#"service("busy").labels["autoscale.last"]"#)?;
    assert!(
        label.as_str().is_some_and(|t| t.parse::<i64>().is_ok()),
        "{label}"
    );
    // At max: no change, whatever the CPU.
    let second = run(&["--arg", "cooldown=0"])?;
    assert_eq!(second["action"], "none", "{second}");
    assert_eq!(second["replicas"], 2);
    // Quiet now: it would scale down, but the cool-down holds it.
    let third = run(&["--arg", "high=1000", "--arg", "low=999"])?;
    assert!(
        third["action"]
            .as_str()
            .is_some_and(|a| a.starts_with("cooling down")),
        "{third}"
    );
    let fourth = run(&[
        "--arg",
        "high=1000",
        "--arg",
        "low=999",
        "--arg",
        "cooldown=0",
    ])?;
    assert_eq!(fourth["action"], "scaled 2 -> 1", "{fourth}");
    Ok(())
}

/// A service `web` of 4 replicas of `sleep 600`, converged.
fn web_of_four() -> Result<Cluster> {
    let cluster = Cluster::start(1, 0)?;
    cluster.node("m1").ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "4",
        "--stop-grace-period",
        "1s",
        "sleep",
        "600",
    ])?;
    Ok(cluster)
}

fn phased_rollout(m1: &Daemon, image: &str, args: &str) -> Output {
    let script = script_path("phased-rollout.rhai");
    essaim(
        m1,
        &[
            "run",
            "--format",
            "json",
            "--timeout",
            "2m",
            script.to_str().expect("utf-8 path"),
            image,
            "--arg",
            "service=web",
            "--arg",
            &format!("args={args}"),
            "--arg",
            "observe=1s",
            "--arg",
            "monitor=1s",
        ],
    )
}

#[test]
fn a_phased_rollout_of_a_good_release_goes_through_every_phase() -> Result<()> {
    let cluster = web_of_four()?;
    let m1 = cluster.node("m1");
    let out = phased_rollout(m1, "sleep", "700");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let document: Value = serde_json::from_str(&stdout)?;
    let phases = document["result"].as_array().context("a report")?;
    // A canary of one, then half, then all: 1, 2, 4 tasks of 4.
    let targets: Vec<Value> = phases.iter().map(|p| p["target"].clone()).collect();
    assert_eq!(
        targets,
        vec![Value::from(1), Value::from(2), Value::from(4)]
    );
    assert!(phases.iter().all(|p| p["verdict"] == "good"), "{stdout}");
    assert_eq!(phases[2]["state"], "completed");
    let tasks = m1.tasks("web")?;
    let live = running(&tasks);
    assert_eq!(live.len(), 4);
    assert!(live.iter().all(|t| t.task.spec.args == ["700"]));
    Ok(())
}

#[test]
fn a_phased_rollout_of_a_bad_release_rolls_back_at_the_canary() -> Result<()> {
    let cluster = web_of_four()?;
    let m1 = cluster.node("m1");
    // `false` exits at once: the canary fails.
    let out = phased_rollout(m1, "false", "");
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stderr.contains("looks wrong"), "{stderr}");
    let tasks = m1.tasks("web")?;
    wait_for("web back on sleep 600", Duration::from_secs(30), || {
        let tasks = m1.tasks("web")?;
        let live = running(&tasks);
        Ok((live.len() == 4
            && live
                .iter()
                .all(|t| t.task.spec.image == "sleep" && t.task.spec.args == ["600"]))
        .then_some(()))
    })?;
    // Only the canary's slot was ever given the bad release.
    let bad_slots: std::collections::BTreeSet<Option<u64>> = tasks
        .iter()
        .filter(|t| t.task.spec.image == "false")
        .map(|t| t.task.slot)
        .collect();
    assert_eq!(bad_slots.len(), 1, "{bad_slots:?}");
    Ok(())
}

#[test]
fn node_calls_logs_and_usage_reach_the_cluster() -> Result<()> {
    let cluster = manager_and_ready_worker()?;
    let m1 = cluster.node("m1");
    m1.ok(&[
        "service",
        "create",
        "--name",
        "talker",
        "--constraint",
        "node.role==manager",
        "sh",
        "-c",
        "echo hello from talker; while :; do :; done",
    ])?;
    // Roles and availability, each change sent with the version read.
    assert_eq!(
        eval(m1, r#"let n = node("w1"); n.promote(); n.role"#)?,
        "manager"
    );
    assert_eq!(
        eval(m1, r#"let n = node("w1"); n.demote(); n.role"#)?,
        "worker"
    );
    assert_eq!(
        eval(m1, r#"let n = node("w1"); n.drain(); n.availability"#)?,
        "drain"
    );
    assert_eq!(
        eval(m1, r#"let n = node("w1"); n.activate(); n.availability"#)?,
        "active"
    );
    // Tasks by node, and a node's own tasks.
    let on_m1 = eval(m1, r#"tasks(#{node: "m1"}).map(|t| t.node)"#)?;
    assert!(on_m1
        .as_array()
        .is_some_and(|a| !a.is_empty() && a.iter().all(|n| n == "m1")));
    assert_eq!(eval(m1, r#"node("m1").tasks().len()"#)?, 1);
    assert_eq!(eval(m1, r#"node("w1").tasks().len()"#)?, 0);
    // Logs as data.
    wait_for("talker's output", Duration::from_secs(20), || {
        let lines = eval(m1, r#"service("talker").logs(10).map(|l| l.line)"#)?;
        Ok(lines
            .as_array()
            .is_some_and(|l| l.iter().any(|line| line == "hello from talker"))
            .then_some(()))
    })?;
    // Usage, once the worker has sampled it: the service's and its task's.
    wait_for("talker's usage", Duration::from_secs(30), || {
        let usage = eval(
            m1,
            r#"let s = service("talker"); let t = s.tasks()[0];
               #{cpu: s.cpu(), memory: s.memory(), task_cpu: t.cpu, task_memory: t.memory}"#,
        )?;
        let busy = usage["cpu"].as_f64().is_some_and(|cpu| cpu > 30.0)
            && usage["memory"].as_i64().is_some_and(|m| m > 0)
            && usage["task_cpu"].as_f64().is_some_and(|cpu| cpu > 30.0)
            && usage["task_memory"].as_i64().is_some_and(|m| m > 0);
        Ok(busy.then_some(()))
    })?;
    Ok(())
}

/// A script that updates and then waits learns how the update ended: a checkpoint is not
/// the end; a percentage is a share of the replicas; the service keeps its checkpoint for the
/// next update until the script clears it.
#[test]
fn waits_tell_a_checkpoint_from_the_end_and_checkpoints_can_be_cleared() -> Result<()> {
    let cluster = web_of_four()?;
    let m1 = cluster.node("m1");
    let report = eval(
        m1,
        r#"
        let w = service("web");
        w.update(#{args: ["700"]}, #{parallelism: 1, monitor: 1, pause_after: 1});
        let converged = w.wait_converged(60);
        let first = w.wait_update("60s");
        let canary = w.update_status().updated;
        w.continue_update(#{pause_after: "50%"});
        let second = w.wait_update(60);
        let half = w.update_status().updated;
        w.continue_update();
        let done = w.wait_update("1m");
        w.update(#{args: ["800"]});
        let kept = w.wait_update(60);
        w.update(#{args: ["900"]}, #{pause_after: ()});
        let cleared = w.wait_update(60);
        #{converged: converged, first: first, canary: canary, second: second, half: half,
          done: done, kept: kept, cleared: cleared, pause_after: w.spec.update_config.pause_after}
        "#,
    )?;
    assert_eq!(report["converged"], false, "paused at the canary: {report}");
    assert_eq!(report["first"], "checkpoint", "{report}");
    assert_eq!(report["canary"], 1, "{report}");
    assert_eq!(report["second"], "checkpoint", "{report}");
    assert_eq!(report["half"], 2, "50% of 4 replicas is 2 tasks: {report}");
    assert_eq!(report["done"], "converged", "{report}");
    assert_eq!(
        report["kept"], "checkpoint",
        "the service's setting: {report}"
    );
    assert_eq!(report["cleared"], "converged", "{report}");
    assert_eq!(report["pause_after"], Value::Null, "{report}");
    let live = m1.tasks("web")?;
    let live = running(&live);
    assert_eq!(live.len(), 4);
    assert!(live.iter().all(|t| t.task.spec.args == ["900"]));
    Ok(())
}

/// What authors reached for: lists in a stable order, a task's spec, a wait on any condition,
/// a service that may not exist, typed arguments; and a no-op is not listed as a change.
#[test]
fn lists_are_ordered_and_waits_and_arguments_are_there_when_reached_for() -> Result<()> {
    let cluster = web_of_four()?;
    let m1 = cluster.node("m1");
    let out = essaim(
        m1,
        &[
            "run",
            "--format",
            "json",
            "--arg",
            "replicas=4",
            "-c",
            r#"
            let w = service("web");
            w.scale(arg_int("replicas"));
            create_service(#{name: "api", image: "sleep", args: ["600"]});
            let up = wait_until(|| service("web").running == 4 && service("api").running == 1, 30);
            let running = tasks(#{service: "web", desired_state: "running"});
            #{up: up, names: services().map(|s| s.name), slots: running.map(|t| t.slot),
              args: running.map(|t| t.spec.args), none: service_or_none("nope"),
              some: service_or_none("web").name, never: wait_until(|| false, "0.5"),
              nodes: nodes().map(|n| n.hostname)}
            "#,
        ],
    );
    let (stdout, stderr) = text(&out);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let document: Value = serde_json::from_str(&stdout)?;
    let report = &document["result"];
    assert_eq!(report["up"], true, "{report}");
    assert_eq!(
        report["names"],
        serde_json::json!(["api", "web"]),
        "{report}"
    );
    assert_eq!(report["slots"], serde_json::json!([1, 2, 3, 4]), "{report}");
    assert_eq!(
        report["args"],
        serde_json::json!([["600"], ["600"], ["600"], ["600"]])
    );
    assert_eq!(report["none"], Value::Null, "{report}");
    assert_eq!(report["some"], "web", "{report}");
    assert_eq!(report["never"], false, "{report}");
    assert_eq!(report["nodes"], serde_json::json!(["m1"]), "{report}");
    let changes = document["changes"].to_string();
    assert!(
        !changes.contains("scaled web"),
        "a no-op is no change: {changes}"
    );
    assert!(changes.contains("created service api"), "{changes}");
    let out = essaim(m1, &["run", "-c", "arg_int(\"max\")"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out).1.contains("give --arg max=VALUE"),
        "{}",
        text(&out).1
    );
    Ok(())
}

/// Misspellings get a "did you mean" everywhere: filter values (a misspelt state matched
/// nothing, silently), swapped letters, methods; wrong arguments name the calls there are.
#[test]
fn every_misspelling_gets_a_suggestion() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    m1.ok(&[
        "service", "create", "--detach", "--name", "web", "sleep", "600",
    ])?;
    let expect = |args: &[&str], code: i32, words: &str| {
        let out = essaim(m1, args);
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
        assert!(err.contains(words), "{args:?}: {err}");
    };
    expect(
        &["-c", r#"tasks(#{state: "runing"}).len()"#],
        1,
        "did you mean running?",
    );
    expect(
        &["service", "ps", "--filter", "desired-state=runing", "web"],
        2,
        "did you mean running?",
    );
    expect(&["-c", r#"service("wbe")"#], 1, "did you mean \"web\"?");
    expect(&["-c", r#"node("m1").drian()"#], 1, "did you mean drain?");
    expect(
        &["-c", r#"service("web").scale("four")"#],
        1,
        "Service.scale(int)",
    );
    // Caught, the error has the same facts.
    let caught = eval(
        m1,
        "let r = ();\ntry { service(\"wbe\") } catch (e) { r = e }\nr",
    )?;
    assert_eq!(caught["suggestion"], "web", "{caught}");
    assert_eq!(caught["source"], "-c", "{caught}");
    assert_eq!(caught["line"], 2, "{caught}");
    assert_eq!(caught["column"], 7, "{caught}");
    assert!(
        caught["message"]
            .as_str()
            .is_some_and(|m| m.contains("service \"wbe\" not found")),
        "{caught}"
    );
    Ok(())
}
