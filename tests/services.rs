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
