//! End-to-end tests of what real services need, on real daemons with the process runtime:
//! jobs that run to completion, and mounts (binds, named volumes that outlive their tasks).
//! The Docker side of the same is in `docker.rs`.

use std::time::Duration;

use anyhow::Result;
use essaim_core::model::TaskState;
use essaim_tests::underlay::is_root;
use essaim_tests::{wait_for, Cluster};

const SETTLE: Duration = Duration::from_secs(30);

#[test]
fn a_job_runs_its_completions_two_at_a_time_and_runs_again_when_forced() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    let dir = cluster.root().join("job");
    std::fs::create_dir_all(&dir)?;
    let dir = dir.display().to_string();
    // Each task marks itself at work, counts who else is, and leaves before it exits: the
    // count it records is how many ran at once.
    let script = format!(
        "touch {dir}/at-work.$ESSAIM_TASK_ID; ls {dir} | grep -c at-work >> {dir}/counts; \
         sleep 0.3; rm {dir}/at-work.$ESSAIM_TASK_ID; echo $ESSAIM_TASK_ID >> {dir}/done"
    );
    // As `service create` waits for a service to converge, it waits for a job to complete.
    let out = m1.ok(&[
        "service",
        "create",
        "--name",
        "batch",
        "--mode",
        "replicated-job",
        "--replicas",
        "5",
        "--max-concurrent",
        "2",
        "sh",
        "-c",
        &script,
    ])?;
    let read = |name: &str| std::fs::read_to_string(format!("{dir}/{name}")).unwrap_or_default();
    assert_eq!(read("done").lines().count(), 5, "{out}");
    let counts: Vec<u32> = read("counts")
        .lines()
        .filter_map(|line| line.trim().parse().ok())
        .collect();
    assert_eq!(counts.len(), 5);
    assert!(
        counts.iter().all(|&n| n <= 2),
        "at most 2 at once: {counts:?}"
    );
    assert!(counts.contains(&2), "two at once at some point: {counts:?}");
    let services = m1.ok(&["service", "ls"])?;
    assert!(services.contains("0/5 (5/5 completed)"), "{services}");
    assert!(services.contains("replicated-job"), "{services}");
    // Done is done: nothing runs again by itself.
    let tasks = m1.tasks("batch")?;
    assert_eq!(tasks.len(), 5);
    assert!(tasks
        .iter()
        .all(|t| t.task.status.state == TaskState::Complete));

    // `service update --force` runs the job again, and waits for it.
    m1.ok(&["service", "update", "--force", "batch"])?;
    assert_eq!(read("done").lines().count(), 10);
    // A job that fails is retried (on-failure, the jobs' default) and never completes.
    let out = m1.essaim(&[
        "service",
        "create",
        "--detach",
        "--name",
        "broken",
        "--mode",
        "replicated-job",
        "--restart-delay",
        "100ms",
        "--restart-max-attempts",
        "2",
        "sh",
        "-c",
        "exit 3",
    ]);
    assert!(out.status.success());
    wait_for("three failed attempts of broken", SETTLE, || {
        let failed = m1
            .tasks("broken")?
            .iter()
            .filter(|t| t.task.status.state == TaskState::Failed)
            .count();
        Ok((failed == 3).then_some(()))
    })?;
    let services = m1.ok(&["service", "ls"])?;
    let line = services
        .lines()
        .find(|line| line.contains("broken"))
        .unwrap_or_default();
    assert!(line.contains("0/1 (0/1 completed)"), "{services}");
    Ok(())
}

#[test]
fn a_named_volume_outlives_its_task_and_a_read_only_bind_is_read_only() -> Result<()> {
    if !is_root() {
        eprintln!("skipped: the process runtime mounts in a namespace of the task's own, as root");
        return Ok(());
    }
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    let root = cluster.root();
    let (site, data) = (root.join("site"), root.join("data"));
    std::fs::create_dir_all(&site)?;
    std::fs::create_dir_all(&data)?;
    std::fs::write(site.join("page"), "from the node\n")?;
    let out = root.join("out");
    let script = format!(
        "cat {site}/page >> {out}; touch {site}/new 2>/dev/null || echo read-only >> {out}; \
         cat {data}/note >> {out} 2>/dev/null; echo $ESSAIM_TASK_ID > {data}/note",
        site = site.display(),
        data = data.display(),
        out = out.display()
    );
    let create = |name: &str| {
        m1.ok(&[
            "service",
            "create",
            "--name",
            name,
            "--mode",
            "replicated-job",
            "--mount",
            &format!(
                "type=bind,source={},target={},ro",
                site.display(),
                site.display()
            ),
            "--mount",
            &format!("source=shared,target={}", data.display()),
            "sh",
            "-c",
            &script,
        ])
    };
    create("first")?;
    let first = m1.tasks("first")?[0].task.id.clone();
    create("second")?;
    let text = std::fs::read_to_string(&out)?;
    assert_eq!(
        text,
        format!("from the node\nread-only\nfrom the node\nread-only\n{first}\n"),
        "the second task read what the first wrote in the volume"
    );
    // The node's own directory never saw the volume's file, nor the bind a new one.
    assert!(!data.join("note").exists());
    assert!(!site.join("new").exists());
    assert!(m1.data_dir().join("volumes/shared/note").exists());
    Ok(())
}

#[test]
fn placeholders_take_each_task_s_values() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    let dir = cluster.root().join("env");
    std::fs::create_dir_all(&dir)?;
    m1.ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "2",
        "--env",
        "ME={{.Service.Name}}-{{.Task.Slot}}@{{.Node.Hostname}}",
        "sh",
        "-c",
        &format!(
            "echo $ME > {}/$ESSAIM_TASK_SLOT; exec sleep 600",
            dir.display()
        ),
    ])?;
    let read = |slot: &str| std::fs::read_to_string(dir.join(slot)).unwrap_or_default();
    assert_eq!(read("1").trim(), "web-1@m1");
    assert_eq!(read("2").trim(), "web-2@m1");
    let bad = m1.essaim(&["service", "create", "--env", "X={{.Service.Labels}}", "sh"]);
    let err = String::from_utf8_lossy(&bad.stderr);
    assert_eq!(bad.status.code(), Some(1), "{err}");
    assert!(
        err.contains("--env: unknown placeholder {{.Service.Labels}}"),
        "{err}"
    );
    Ok(())
}

#[test]
fn a_secret_reaches_only_its_task_as_a_file_and_rotates_like_any_update() -> Result<()> {
    let mut cluster = Cluster::start(3, 1)?;
    let root = cluster.root().to_path_buf();
    let out = root.join("out");
    std::fs::create_dir_all(&out)?;
    let (secret_v1, secret_v2, config) = (
        "s3cr3t-pw-0001-never-on-disk",
        "s3cr3t-pw-0002-never-on-disk",
        "listen=8080-from-a-config",
    );
    for (name, text) in [("v1", secret_v1), ("v2", secret_v2), ("conf", config)] {
        std::fs::write(root.join(name), text)?;
    }
    let m1 = cluster.node("m1");
    let path = |name: &str| root.join(name).display().to_string();
    m1.ok(&[
        "secret",
        "create",
        "--label",
        "team=db",
        "db_pw",
        &path("v1"),
    ])?;
    m1.ok(&["config", "create", "app_conf", &path("conf")])?;
    let missing = m1.essaim(&["secret", "create", "empty", "/dev/null"]);
    assert!(
        String::from_utf8_lossy(&missing.stderr).contains("/dev/null is empty"),
        "{missing:?}"
    );

    // Each task copies what it sees to OUT/<task id>.{secret,mode,config}.
    let script = format!(
        "cat $ESSAIM_SECRETS_DIR/db_pw > {out}/$ESSAIM_TASK_ID.secret; \
         stat -c %a $ESSAIM_SECRETS_DIR/db_pw > {out}/$ESSAIM_TASK_ID.mode; \
         cat $ESSAIM_CONFIGS_DIR/etc/app.conf > {out}/$ESSAIM_TASK_ID.config; exec sleep 600",
        out = out.display()
    );
    m1.ok(&[
        "service",
        "create",
        "--name",
        "api",
        "--constraint",
        "node.hostname==w1",
        "--secret",
        "source=db_pw,mode=0400",
        "--config",
        "source=app_conf,target=/etc/app.conf",
        "sh",
        "-c",
        &script,
    ])?;
    let read = |task: &str, what: &str| {
        std::fs::read_to_string(out.join(format!("{task}.{what}"))).unwrap_or_default()
    };
    let seen = |task: &str, what: &str| {
        let task = task.to_string();
        let what = what.to_string();
        wait_for(&format!("{task}.{what}"), SETTLE, || {
            let text = read(&task, &what);
            Ok((!text.is_empty()).then_some(text))
        })
    };
    let first = m1.tasks("api")?[0].task.id.clone();
    assert_eq!(seen(&first, "secret")?, secret_v1);
    assert_eq!(seen(&first, "mode")?.trim(), "400");
    assert_eq!(seen(&first, "config")?, config);

    // The secret is nowhere on the managers' disks, sealed in their logs; the config, which
    // is not sealed, is found there, so the search does look into the logs.
    for manager in ["m1", "m2", "m3"] {
        let dir = cluster.node(manager).data_dir();
        assert_eq!(
            essaim_tests::files_holding(&dir, secret_v1.as_bytes()),
            Vec::<String>::new()
        );
        assert!(
            !essaim_tests::files_holding(&dir, config.as_bytes()).is_empty(),
            "{manager}'s log holds the config"
        );
    }
    // Only w1, which runs the task, has its files, in memory.
    let w1_files = essaim_tests::task_files_of(&cluster.node("w1").data_dir());
    assert!(w1_files.join(&first).join("secrets/db_pw").exists());
    for manager in ["m1", "m2", "m3"] {
        let files = essaim_tests::task_files_of(&cluster.node(manager).data_dir());
        assert!(essaim_tests::files_holding(&files, secret_v1.as_bytes()).is_empty());
    }

    // Inspect names the users and never shows the data; a secret in use stays.
    let inspected = m1.ok(&["secret", "inspect", "db_pw"])?;
    assert!(
        inspected.contains("\"api\"") && inspected.contains("team"),
        "{inspected}"
    );
    assert!(!inspected.contains(secret_v1) && !inspected.contains("czNjcjN0"));
    let config_shown = m1.ok(&["config", "inspect", "--pretty", "app_conf"])?;
    assert!(config_shown.contains(config), "{config_shown}");
    let refused = m1.essaim(&["secret", "rm", "db_pw"]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("secret db_pw is in use by service api"),
        "{refused:?}"
    );

    // Rotation, as in Swarm: a new secret at the old path, rolled out as an update.
    m1.ok(&["secret", "create", "db_pw_v2", &path("v2")])?;
    m1.ok(&[
        "service",
        "update",
        "--secret-rm",
        "db_pw",
        "--secret-add",
        "source=db_pw_v2,target=db_pw",
        "api",
    ])?;
    let second = wait_for("the replacement task", SETTLE, || {
        Ok(essaim_tests::running(&m1.tasks("api")?)
            .first()
            .map(|t| t.task.id.clone())
            .filter(|id| *id != first))
    })?;
    assert_eq!(seen(&second, "secret")?, secret_v2);
    wait_for("the old task's files to go", SETTLE, || {
        Ok((!w1_files.join(&first).exists()).then_some(()))
    })?;
    m1.ok(&["secret", "rm", "db_pw"])?;

    // Another manager, leading once the first is gone, opens secrets with the key it got
    // when it joined.
    cluster.node_mut("m1").kill9();
    let leader = wait_for("a new leader", SETTLE, || {
        Ok(cluster.leader("m2").ok().filter(|l| l != "m1"))
    })?;
    let m2 = cluster.node("m2");
    wait_for("scaling through the new leader", SETTLE, || {
        Ok(m2
            .essaim(&["service", "scale", "--detach", "api=2"])
            .status
            .success()
            .then_some(()))
    })?;
    let third = wait_for("a second replica", SETTLE, || {
        Ok(essaim_tests::running(&m2.tasks("api")?)
            .iter()
            .map(|t| t.task.id.clone())
            .find(|id| *id != second))
    })?;
    assert_eq!(seen(&third, "secret")?, secret_v2, "led by {leader}");
    Ok(())
}

#[test]
fn the_process_runtime_holds_a_task_to_its_limits_in_a_cgroup_of_its_own() -> Result<()> {
    if !is_root() {
        eprintln!("skipped: the process runtime makes cgroups as root");
        return Ok(());
    }
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    let out = cluster.root().join("out");
    std::fs::create_dir_all(&out)?;
    // Six sleepers in a group of at most four processes: some cannot start (the subshell
    // that tries ends at the first fork refused, as sh does).
    let script = format!(
        "cat /proc/self/cgroup > {out}/cgroup; (for i in 1 2 3 4 5 6; do sleep 600 & done); \
         echo tried > {out}/tried; exec sleep 600",
        out = out.display()
    );
    m1.ok(&[
        "service",
        "create",
        "--name",
        "few",
        "--limit-pids",
        "4",
        "--limit-cpu",
        "0.5",
        "sh",
        "-c",
        &script,
    ])?;
    wait_for("the task to try its sleepers", SETTLE, || {
        Ok(out.join("tried").exists().then_some(()))
    })?;
    let task = m1.tasks("few")?[0].task.id.clone();
    let groups = std::fs::read_to_string(out.join("cgroup"))?;
    assert!(groups.contains(&format!("essaim/{task}")), "{groups}");
    // The node's own view of the group: the limit as asked, and no more processes in it.
    let cgroup = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
        .iter()
        .map(|root| std::path::Path::new(root).join("essaim").join(&task))
        .find(|dir| dir.join("pids.max").exists())
        .ok_or_else(|| anyhow::anyhow!("no pids group for {task}: {groups}"))?;
    assert_eq!(
        std::fs::read_to_string(cgroup.join("pids.max"))?.trim(),
        "4"
    );
    let members = std::fs::read_to_string(cgroup.join("cgroup.procs"))?;
    assert!(
        members.lines().count() <= 4,
        "more processes than --limit-pids 4: {members}"
    );

    // A task that needs more memory than its limit is killed, and says why.
    m1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "hungry",
        "--limit-memory",
        "32M",
        "--restart-condition",
        "none",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=256M",
        "count=1",
    ])?;
    let error = wait_for("the out-of-memory kill", SETTLE, || {
        Ok(m1
            .tasks("hungry")?
            .iter()
            .find_map(|t| t.task.status.error.clone()))
    })?;
    assert!(error.contains("out of memory: --limit-memory"), "{error}");

    // Its group goes with the task.
    m1.ok(&["service", "rm", "few"])?;
    wait_for("the task's cgroup gone", SETTLE, || {
        let left = ["pids", "cpu", "unified"]
            .iter()
            .map(|c| {
                std::path::Path::new("/sys/fs/cgroup")
                    .join(c)
                    .join("essaim")
                    .join(&task)
            })
            .chain([std::path::Path::new("/sys/fs/cgroup/essaim").join(&task)])
            .any(|dir| dir.exists());
        Ok((!left).then_some(()))
    })?;
    Ok(())
}

#[test]
fn generic_resources_go_where_the_node_has_them_one_named_unit_per_task() -> Result<()> {
    let mut cluster = Cluster::start(1, 0)?;
    let (token, manager) = {
        let m1 = cluster.node("m1");
        (m1.ok(&["swarm", "join-token", "-q", "worker"])?, m1.addr())
    };
    cluster
        .add_with_env("w1", &[("ESSAIM_GENERIC_RESOURCES", "gpu=GPU-a,gpu=GPU-b")])?
        .join(&token, &manager)?;
    let m1 = cluster.node("m1");
    let shown = m1.ok(&["node", "inspect", "--pretty", "w1"])?;
    assert!(shown.contains("gpu=2"), "{shown}");
    let out = cluster.root().join("gpus");
    std::fs::create_dir_all(&out)?;
    m1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "train",
        "--replicas",
        "3",
        "--generic-resource",
        "gpu=1",
        "sh",
        "-c",
        &format!(
            "echo $DOCKER_RESOURCE_GPU > {}/$ESSAIM_TASK_SLOT; exec sleep 600",
            out.display()
        ),
    ])?;
    // Two replicas on w1, each with a GPU of its own; m1 has none, so the third waits.
    let given = wait_for("two replicas with a GPU each", SETTLE, || {
        let mut gpus: Vec<String> = (1..=3)
            .filter_map(|slot| std::fs::read_to_string(out.join(slot.to_string())).ok())
            .map(|text| text.trim().to_string())
            .filter(|text| !text.is_empty())
            .collect();
        gpus.sort();
        Ok((gpus.len() == 2).then_some(gpus))
    })?;
    assert_eq!(given, ["GPU-a", "GPU-b"]);
    let waiting = wait_for("the third replica's reason", SETTLE, || {
        Ok(m1
            .tasks("train")?
            .iter()
            .map(|t| t.task.status.message.clone())
            .find(|m| m.contains("generic resource")))
    })?;
    assert!(
        waiting.contains("lack generic resource gpu")
            || waiting.contains("lacks generic resource gpu"),
        "{waiting}"
    );
    let bad = m1.essaim(&["service", "create", "--generic-resource", "gpu=0", "sleep"]);
    assert_eq!(bad.status.code(), Some(2), "{bad:?}");
    Ok(())
}
