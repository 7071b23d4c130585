//! End-to-end tests of `essaim stack`: compose files deployed on real `essaimd` processes with
//! the process runtime (an image is a program on the node), driven by the real `essaim`
//! binary. The seed's example; a stack of three services on two networks redeployed, dry-run,
//! pruned and removed; variables, `.env`, merged files and standard input; errors that deploy
//! nothing; a stack's own secret and config, seen by its task as files, rotated by a rename
//! and removed with it. With root, the services of a stack reach each other by their short names over the
//! cluster network.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use essaim_tests::docker::{install_test_deps, BUSYBOX};
use essaim_tests::underlay::{is_root, Underlay};
use essaim_tests::{essaim_path, running, wait_for, Cluster, Daemon};

const SETTLE: Duration = Duration::from_secs(30);

/// The seed's `docker-compose.yml`, with the one change the process runtime needs: its
/// "image" is a program of the node, given something to do.
const SEED: &str = "version: '3'
services:
  web:
    image: sleep
    command: '3600'
    ports:
      - \"80:80\"
    deploy:
      replicas: 3
";

fn write(dir: &Path, name: &str, text: &str) -> Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Runs `essaim ARGS` against `node` with `stdin` as its standard input; returns the exit
/// code, stdout and stderr.
fn essaim_with_stdin(node: &Daemon, args: &[&str], stdin: &str) -> Result<(i32, String, String)> {
    let mut child = Command::new(essaim_path())
        .arg("-H")
        .arg(format!("unix://{}", node.socket().display()))
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    child
        .stdin
        .take()
        .context("stdin")?
        .write_all(stdin.as_bytes())?;
    let output = child.wait_with_output()?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

/// The IDs of the running tasks of each of `services`.
fn task_ids(node: &Daemon, services: &[&str]) -> Result<BTreeMap<String, Vec<String>>> {
    let mut found = BTreeMap::new();
    for service in services {
        let tasks = node.tasks(service)?;
        let mut ids: Vec<String> = running(&tasks)
            .into_iter()
            .map(|view| view.task.id.clone())
            .collect();
        ids.sort();
        found.insert((*service).to_string(), ids);
    }
    Ok(found)
}

/// The `/spec/name` of each object of a JSON list.
fn names(list: &Value) -> Vec<String> {
    let mut names: Vec<String> = list
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|item| item.pointer("/spec/name")?.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn service_names(node: &Daemon) -> Result<Vec<String>> {
    Ok(names(&node.json(&["service", "ls"])?))
}

fn network_names(node: &Daemon) -> Result<Vec<String>> {
    Ok(names(&node.json(&["network", "ls"])?))
}

#[test]
fn the_seed_example_deploys_three_replicas_and_is_removed_without_a_trace() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    let file = write(cluster.root(), "docker-compose.yml", SEED)?;
    let file = file.to_string_lossy();

    // As the seed types it: the deploy waits until the three replicas run.
    let out = m1.ok(&["stack", "deploy", "--compose-file", &file, "my_stack"])?;
    assert!(out.contains("Creating network my_stack_default"), "{out}");
    assert!(out.contains("Creating service my_stack_web"), "{out}");
    let tasks = m1.tasks("my_stack_web")?;
    assert_eq!(
        running(&tasks).len(),
        3,
        "three replicas run once deploy returns"
    );

    let stacks = m1.json(&["stack", "ls"])?;
    assert_eq!(stacks[0]["name"], "my_stack");
    assert_eq!(stacks[0]["services"], 1);
    let services = m1.json(&["stack", "services", "my_stack"])?;
    assert_eq!(services[0]["spec"]["name"], "my_stack_web");
    assert_eq!(services[0]["running"], 3);
    assert_eq!(
        services[0]["spec"]["labels"]["com.docker.stack.namespace"],
        "my_stack"
    );
    assert_eq!(services[0]["spec"]["ports"][0]["published"], 80);
    let ps = m1.json(&["stack", "ps", "my_stack"])?;
    assert_eq!(ps.as_array().map(Vec::len), Some(3));

    // The same file again changes nothing: the same tasks run.
    let before = task_ids(m1, &["my_stack_web"])?;
    let again = m1.ok(&["stack", "deploy", "-c", &file, "my_stack"])?;
    assert!(
        again.contains("Service my_stack_web is unchanged"),
        "{again}"
    );
    assert_eq!(task_ids(m1, &["my_stack_web"])?, before);

    let removed = m1.ok(&["stack", "rm", "my_stack"])?;
    assert!(
        removed.contains("Removing network my_stack_default"),
        "{removed}"
    );
    assert_eq!(service_names(m1)?, Vec::<String>::new());
    assert!(!network_names(m1)?.contains(&"my_stack_default".to_string()));
    assert_eq!(m1.json(&["stack", "ls"])?, serde_json::json!([]));
    let gone = m1.essaim(&["stack", "services", "my_stack"]);
    assert!(!gone.status.success());
    assert!(String::from_utf8_lossy(&gone.stderr).contains("nothing found in stack: my_stack"));
    Ok(())
}

/// A front, an API and a database on two networks; the API's version comes from `.env`.
const SHOP: &str = "services:
  front:
    image: sleep
    command: ['3600']
    networks: [frontend]
    stop_grace_period: 1s
  api:
    image: sleep
    command: ['3600']
    environment:
      VERSION: ${API_VERSION:-0}
    networks: [frontend, backend]
    stop_grace_period: 1s
    deploy:
      replicas: 2
  db:
    image: sleep
    command: ['3600']
    networks: [backend]
    stop_grace_period: 1s
networks:
  frontend:
  backend:
";

#[test]
fn a_redeploy_touches_only_what_changed_and_dry_run_and_prune_do_what_they_say() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    let dir = cluster.root();
    let base = write(dir, "docker-compose.yml", SHOP)?;
    let base = base.to_string_lossy().into_owned();
    write(dir, ".env", "API_VERSION=1\n")?;
    let all = ["shop_front", "shop_api", "shop_db"];

    m1.ok(&["stack", "deploy", "-c", &base, "shop"])?;
    assert_eq!(
        service_names(m1)?,
        vec!["shop_api", "shop_db", "shop_front"]
    );
    let networks = network_names(m1)?;
    assert!(
        networks.contains(&"shop_frontend".to_string()),
        "{networks:?}"
    );
    assert!(
        networks.contains(&"shop_backend".to_string()),
        "{networks:?}"
    );
    let api = m1.json(&["service", "inspect", "shop_api"])?;
    assert_eq!(api[0]["spec"]["task"]["env"]["VERSION"], "1", "from .env");
    let before = task_ids(m1, &all)?;

    // A second file, from standard input, changes the API: the dry run says so exactly and
    // changes nothing.
    let change = "services:\n  api:\n    environment:\n      VERSION: '2'\n";
    let (code, plan, err) = essaim_with_stdin(
        m1,
        &[
            "stack",
            "deploy",
            "-c",
            &base,
            "-c",
            "-",
            "--dry-run",
            "shop",
        ],
        change,
    )?;
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        plan,
        "= service shop_front: unchanged\n\
         ~ service shop_api: env.VERSION 1 -> 2\n\
         = service shop_db: unchanged\n\
         Dry run: nothing was changed.\n"
    );
    let (code, json_plan, err) = essaim_with_stdin(
        m1,
        &[
            "stack",
            "deploy",
            "-c",
            &base,
            "-c",
            "-",
            "--dry-run",
            "--format",
            "json",
            "shop",
        ],
        change,
    )?;
    assert_eq!(code, 0, "{err}");
    let json_plan: Value = serde_json::from_str(&json_plan)?;
    assert_eq!(json_plan["services"][1]["action"], "update");
    assert_eq!(
        json_plan["services"][1]["changes"][0]["field"],
        "env.VERSION"
    );
    assert_eq!(json_plan["services"][1]["changes"][0]["to"], "2");
    assert_eq!(task_ids(m1, &all)?, before, "a dry run changes nothing");
    let api = m1.json(&["service", "inspect", "shop_api"])?;
    assert_eq!(api[0]["spec"]["task"]["env"]["VERSION"], "1");

    // The deploy itself: only the API gets new tasks.
    let (code, out, err) = essaim_with_stdin(
        m1,
        &["stack", "deploy", "-c", &base, "-c", "-", "shop"],
        change,
    )?;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("Updating service shop_api"), "{out}");
    let after = task_ids(m1, &all)?;
    assert_eq!(after["shop_front"], before["shop_front"]);
    assert_eq!(after["shop_db"], before["shop_db"]);
    assert_eq!(after["shop_api"].len(), 2);
    assert!(
        after["shop_api"]
            .iter()
            .all(|id| !before["shop_api"].contains(id)),
        "every API task is new: {after:?} after {before:?}"
    );

    // Without the database in the file: left alone, then removed with --prune.
    let without_db = SHOP.split("  db:").next().unwrap_or(SHOP).to_string()
        + "networks:\n  frontend:\n  backend:\n";
    let smaller = write(dir, "smaller.yml", &without_db)?;
    let smaller = smaller.to_string_lossy().into_owned();
    let out = m1.ok(&["stack", "deploy", "-c", &smaller, "shop"])?;
    assert!(
        out.contains("Service shop_db is no longer in the files: left alone"),
        "{out}"
    );
    assert!(service_names(m1)?.contains(&"shop_db".to_string()));
    let out = m1.ok(&["stack", "deploy", "-c", &smaller, "--prune", "shop"])?;
    assert!(out.contains("Removing service shop_db"), "{out}");
    assert_eq!(service_names(m1)?, vec!["shop_api", "shop_front"]);

    m1.ok(&["stack", "rm", "shop"])?;
    assert_eq!(service_names(m1)?, Vec::<String>::new());
    let networks = network_names(m1)?;
    assert!(
        !networks.iter().any(|name| name.starts_with("shop_")),
        "the stack's networks are gone: {networks:?}"
    );
    Ok(())
}

#[test]
fn a_file_with_one_bad_service_deploys_nothing_and_says_where() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    let text = "services:\n  good:\n    image: sleep\n    command: '3600'\n  bad:\n    image: sleep\n    deploy:\n      replicas: -1\n      resources:\n        limits:\n          memory: lots\n";
    let file = write(cluster.root(), "docker-compose.yml", text)?;
    let out = m1.essaim(&["stack", "deploy", "-c", &file.to_string_lossy(), "shop"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    let shown = file.display().to_string();
    assert!(
        err.contains(&format!(
            "{shown}:8:17: services.bad.deploy.replicas: expected a whole number of 0 or more, found '-1'"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{shown}:11:19: services.bad.deploy.resources.limits.memory"
        )),
        "{err}"
    );
    assert!(
        err.contains("2 errors in the compose files: nothing was deployed"),
        "{err}"
    );
    assert_eq!(service_names(m1)?, Vec::<String>::new());
    assert!(!network_names(m1)?.contains(&"shop_default".to_string()));

    // Broken YAML, from standard input.
    let (code, _, err) = essaim_with_stdin(
        m1,
        &["stack", "deploy", "-c", "-", "shop"],
        "services:\n  web:\n    image: [sleep\n",
    )?;
    assert_eq!(code, 1);
    assert!(err.contains("stdin:4:"), "{err}");
    assert_eq!(service_names(m1)?, Vec::<String>::new());
    Ok(())
}

/// A stack whose service copies the secret and config it sees, with the mode of the
/// config's file, to OUT/<task id>.{secret,config,mode}, then sleeps.
fn files_stack(out: &Path, config_key: &str) -> String {
    format!(
        "services:
  api:
    image: sh
    command:
      - -c
      - cat $$ESSAIM_SECRETS_DIR/db_pw > {out}/$$ESSAIM_TASK_ID.secret;
        cat $$ESSAIM_CONFIGS_DIR/etc/app.conf > {out}/$$ESSAIM_TASK_ID.config;
        stat -c %a $$ESSAIM_CONFIGS_DIR/etc/app.conf > {out}/$$ESSAIM_TASK_ID.mode;
        exec sleep 600
    secrets: [db_pw]
    configs:
      - source: {config_key}
        target: /etc/app.conf
        mode: 0440
secrets:
  db_pw:
    file: ./secrets/db_pw.txt
configs:
  {config_key}:
    file: app.conf
",
        out = out.display()
    )
}

/// The names in `essaim secret|config ls`.
fn file_names(node: &Daemon, kind: &str) -> Result<Vec<String>> {
    Ok(names(&node.json(&[kind, "ls"])?))
}

#[test]
fn a_stack_s_secret_and_config_reach_its_task_as_files_and_go_with_the_stack() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    let dir = cluster.root();
    let out = dir.join("out");
    std::fs::create_dir_all(dir.join("secrets"))?;
    std::fs::create_dir_all(&out)?;
    let (secret, config_v1, config_v2) = ("pw-from-a-stack-file", "listen=8080", "listen=9090");
    write(&dir.join("secrets"), "db_pw.txt", secret)?;
    write(dir, "app.conf", config_v1)?;
    let file = write(dir, "docker-compose.yml", &files_stack(&out, "app"))?;
    let file = file.to_string_lossy().into_owned();
    let seen = |task: &str, what: &str| {
        let path = out.join(format!("{task}.{what}"));
        wait_for(&path.display().to_string(), SETTLE, || {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            Ok((!text.is_empty()).then_some(text))
        })
    };

    // The dry run names the secret and config it would make, and makes nothing.
    let plan = m1.ok(&["stack", "deploy", "-c", &file, "--dry-run", "s"])?;
    assert_eq!(
        plan,
        "+ network s_default\n\
         + secret s_db_pw\n\
         + config s_app\n\
         + service s_api (sh, 1 replica)\n\
         Dry run: nothing was changed.\n"
    );
    assert_eq!(file_names(m1, "secret")?, Vec::<String>::new());

    // Made before the service, as STACK_KEY, labelled with the stack; the task sees them by
    // their keys.
    let deployed = m1.ok(&["stack", "deploy", "-c", &file, "s"])?;
    let (made, service) = (
        deployed.find("Creating secret s_db_pw"),
        deployed.find("Creating service s_api"),
    );
    assert!(made.is_some() && made < service, "{deployed}");
    assert_eq!(file_names(m1, "secret")?, ["s_db_pw"]);
    assert_eq!(file_names(m1, "config")?, ["s_app"]);
    let inspected = m1.json(&["secret", "inspect", "s_db_pw"])?;
    assert_eq!(
        inspected[0]["spec"]["labels"]["com.docker.stack.namespace"], "s",
        "{inspected}"
    );
    let first = m1.tasks("s_api")?[0].task.id.clone();
    assert_eq!(seen(&first, "secret")?, secret);
    assert_eq!(seen(&first, "config")?, config_v1);
    assert_eq!(seen(&first, "mode")?.trim(), "440");

    // New data under the same key is refused before any change: a config never changes.
    write(dir, "app.conf", config_v2)?;
    let refused = m1.essaim(&["stack", "deploy", "-c", &file, "s"]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the config s_app exists with other data"),
        "{err}"
    );
    assert_eq!(
        task_ids(m1, &["s_api"])?["s_api"],
        std::slice::from_ref(&first)
    );

    // Renamed, it is rolled out as an update; --prune removes the old one.
    let renamed = write(dir, "docker-compose.yml", &files_stack(&out, "app_v2"))?;
    let deployed = m1.ok(&[
        "stack",
        "deploy",
        "--prune",
        "-c",
        &renamed.to_string_lossy(),
        "s",
    ])?;
    assert!(deployed.contains("Creating config s_app_v2"), "{deployed}");
    assert!(deployed.contains("Removing config s_app"), "{deployed}");
    assert!(!deployed.contains("Creating secret"), "{deployed}");
    let second = wait_for("the updated task", SETTLE, || {
        Ok(running(&m1.tasks("s_api")?)
            .first()
            .map(|view| view.task.id.clone())
            .filter(|id| *id != first))
    })?;
    assert_eq!(seen(&second, "config")?, config_v2);
    assert_eq!(seen(&second, "secret")?, secret);
    assert_eq!(file_names(m1, "config")?, ["s_app_v2"]);

    m1.ok(&["stack", "rm", "s"])?;
    assert_eq!(file_names(m1, "secret")?, Vec::<String>::new());
    assert_eq!(file_names(m1, "config")?, Vec::<String>::new());
    Ok(())
}

/// `GET http://HOST:PORT/` from inside the task whose PID is in `pid_file`, as `docker exec`
/// would do it; the page without its headers.
fn get_from_task(pid_file: &Path, host: &str, port: u16) -> Result<String> {
    let pid = std::fs::read_to_string(pid_file).context("the client task's PID")?;
    let request = format!(
        "exec 3<>/dev/tcp/{host}/{port} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    );
    let output = Command::new("nsenter")
        .args(["--target", pid.trim(), "--net", "--mount"])
        .args(["timeout", "2", "bash", "-c", &request])
        .stdin(Stdio::null())
        .output()?;
    let response = String::from_utf8_lossy(&output.stdout);
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!(
            "no HTTP answer from {host}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    };
    if !head.contains(" 200 ") {
        bail!("{host} answered: {head}");
    }
    Ok(body.trim().to_string())
}

#[test]
fn the_services_of_a_stack_reach_each_other_by_their_short_names() -> Result<()> {
    if !is_root() {
        eprintln!("skipped: nodes in network namespaces need root");
        return Ok(());
    }
    install_test_deps()?;
    let underlay = Underlay::new(2)?;
    let cluster = underlay.swarm()?;
    let n1 = cluster.node("n1");
    let dir = cluster.root().join("probe");
    std::fs::create_dir_all(&dir)?;
    let dir = dir.display().to_string();
    // The API serves "api" on 8080, on the backend network; the front is on both, so it
    // reaches the API by the short name the stack gives it there.
    let text = format!(
        "services:
  api:
    image: sh
    command: ['-c', 'mkdir -p {dir}/www && echo api > {dir}/www/index.html && exec {BUSYBOX} httpd -f -p 8080 -h {dir}/www']
    networks: [backend]
    stop_grace_period: 1s
  front:
    image: sh
    command: ['-c', 'echo $$$$ > {dir}/front.pid; exec sleep 3600']
    networks: [frontend, backend]
    stop_grace_period: 1s
    deploy:
      placement:
        constraints: [node.hostname==n1]
networks:
  frontend:
  backend:
"
    );
    let file = write(cluster.root(), "docker-compose.yml", &text)?;
    n1.ok(&["stack", "deploy", "-c", &file.to_string_lossy(), "shop"])?;
    let pid_file = Path::new(&dir).join("front.pid");
    let page = wait_for("the front to reach 'api' by name", SETTLE, || {
        Ok(get_from_task(&pid_file, "api", 8080).ok())
    })?;
    assert_eq!(page, "api");
    n1.ok(&["stack", "rm", "shop"])?;
    wait_for("no essaim device left on n1", SETTLE, || {
        Ok(underlay.essaim_devices(1)?.is_empty().then_some(()))
    })?;
    Ok(())
}

#[test]
fn scripts_list_plan_deploy_and_walk_stacks() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    let file = write(cluster.root(), "shop.yml", SEED)?;
    let script = format!(
        r#"
let file = "{file}";
let planned = deploy_stack(file, "shop", #{{dry_run: true}});
if planned.applied || stacks().len() != 0 {{ throw "a dry run deployed" }}
let done = deploy_stack([file], "shop");
let services = stack("shop").services;
#{{
    planned: planned.lines,
    first_step: planned.plan.services[0],
    applied: done.applied,
    stacks: stacks(),
    services: services.map(|s| s.name),
    running: services[0].running,
    again: deploy_stack(file, "shop").lines,
}}
"#,
        file = file.display()
    );
    let out = Command::new(essaim_path())
        .arg("-H")
        .arg(format!("unix://{}", m1.socket().display()))
        .args(["run", "--format", "json", "-c", &script])
        .stdin(Stdio::null())
        .output()?;
    let document: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("no JSON: {}", String::from_utf8_lossy(&out.stderr)))?;
    assert_eq!(document["ok"], true, "{document}");
    let result = &document["result"];
    assert_eq!(
        result["planned"],
        serde_json::json!([
            "+ network shop_default",
            "+ service shop_web (sleep, 3 replicas)"
        ])
    );
    assert_eq!(result["first_step"]["name"], "shop_web", "{result}");
    assert_eq!(result["applied"], true);
    assert_eq!(
        result["stacks"],
        serde_json::json!([{"name": "shop", "services": 1}])
    );
    assert_eq!(result["services"], serde_json::json!(["shop_web"]));
    assert_eq!(result["running"], 3, "deploy_stack waits for the replicas");
    assert_eq!(
        result["again"],
        serde_json::json!(["= service shop_web: unchanged"])
    );

    // Bad files fail the call with their places, and nothing is deployed.
    let bad = write(
        cluster.root(),
        "bad.yml",
        "services:\n  web:\n    image: [x\n",
    )?;
    let out = Command::new(essaim_path())
        .arg("-H")
        .arg(format!("unix://{}", m1.socket().display()))
        .args([
            "run",
            "-c",
            &format!("deploy_stack(\"{}\", \"other\")", bad.display()),
        ])
        .stdin(Stdio::null())
        .output()?;
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("bad.yml:4:"), "{err}");
    assert_eq!(service_names(m1)?, ["shop_web"]);
    m1.ok(&["stack", "rm", "shop"])?;
    Ok(())
}
