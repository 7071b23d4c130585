//! End-to-end tests of the Docker runtime, on this machine's real Docker engine: tasks are
//! containers made through bollard, seen here with the docker command line. Every test needs a
//! Docker engine: its name says so, and without one it prints why it is skipped.
//!
//! The image is made by the harness (`essaim-test/busybox:2`: a static busybox, nothing else).
//! Names carry the test process's ID, so that runs side by side do not meet; whatever a test
//! made is removed by label when it ends, passed or not.

use std::io::{Read, Write};
use std::time::Duration;

use anyhow::{Context, Result};
use essaim_api::control::TaskView;
use essaim_core::model::TaskState;
use essaim_tests::docker::{self, Cleanup};
use essaim_tests::underlay::{is_root, Underlay};
use essaim_tests::{running, wait_for, Cluster, Daemon};

const SETTLE: Duration = Duration::from_secs(40);

/// One manager that runs its tasks as containers, or `None` (and a line saying the test is
/// skipped) when no Docker engine answers.
fn docker_node(test: &str) -> Result<Option<(Cluster, &'static str)>> {
    let Some(image) = docker::test_image() else {
        eprintln!("SKIPPED {test}: needs a Docker engine, and none answers here");
        return Ok(None);
    };
    let mut cluster = Cluster::empty()?;
    let m1 = cluster.add_with_env("m1", &[("ESSAIM_RUNTIME", "docker")])?;
    m1.ok(&["swarm", "init", "--advertise-addr", &m1.addr()])?;
    Ok(Some((cluster, image)))
}

/// `nodes` Docker nodes in network namespaces on an underlay (each with an address of its
/// own, so the routing mesh runs), or `None` (and a line saying the test is skipped) without
/// root or a Docker engine.
fn docker_underlay(test: &str, nodes: usize) -> Result<Option<(Underlay, Cluster, &'static str)>> {
    if !is_root() {
        eprintln!("SKIPPED {test}: nodes in network namespaces need root");
        return Ok(None);
    }
    let Some(image) = docker::test_image() else {
        eprintln!("SKIPPED {test}: needs a Docker engine");
        return Ok(None);
    };
    docker::install_test_deps()?;
    let underlay = Underlay::new(nodes)?;
    let cluster = underlay.swarm_with_env(&[("ESSAIM_RUNTIME", "docker")])?;
    Ok(Some((underlay, cluster, image)))
}

/// `name` made unique to this test process.
fn unique(name: &str) -> String {
    format!("{name}-{}", std::process::id())
}

/// Containers of `service` that run now.
fn running_containers(service: &str) -> Vec<String> {
    let output = docker::docker(&[
        "ps",
        "--filter",
        &format!("label=essaim.service.name={service}"),
        "--format",
        "{{.Label \"essaim.task.id\"}}",
    ]);
    let mut ids: Vec<String> = String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    ids.sort();
    ids
}

/// Waits until `count` tasks of `service` run, each in a running container labelled with its
/// task ID, and no other container of the service runs. Returns the running tasks.
fn converged(manager: &Daemon, service: &str, count: usize) -> Result<Vec<TaskView>> {
    wait_for(
        &format!("{count} running tasks of {service}, each in its own running container"),
        SETTLE,
        || {
            let tasks = manager.tasks(service)?;
            let running: Vec<TaskView> = running(&tasks).into_iter().cloned().collect();
            let mut ids: Vec<String> = running.iter().map(|t| t.task.id.clone()).collect();
            ids.sort();
            let ok = running.len() == count && running_containers(service) == ids;
            Ok(ok.then_some(running))
        },
    )
}

/// Creates `service`: `replicas` containers of `image` running `sleep 3600`, stopped with a
/// 1 s grace; waits until they run.
fn sleepers(
    manager: &Daemon,
    service: &str,
    image: &str,
    replicas: usize,
) -> Result<Vec<TaskView>> {
    manager.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        service,
        "--replicas",
        &replicas.to_string(),
        "--stop-grace-period",
        "1s",
        image,
        "sleep",
        "3600",
    ])?;
    converged(manager, service, replicas)
}

#[test]
fn docker_tasks_are_labelled_containers_that_follow_scaling_and_go_with_the_service() -> Result<()>
{
    let service = unique("scaled");
    let _cleanup = Cleanup {
        services: vec![service.clone()],
        networks: vec![],
    };
    let Some((cluster, image)) = docker_node("docker_tasks_are_labelled_containers")? else {
        return Ok(());
    };
    let m1 = cluster.node("m1");
    m1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &service,
        "--replicas",
        "3",
        "--limit-memory",
        "64M",
        "--env",
        "GREETING=hello",
        "--stop-grace-period",
        "1s",
        image,
        "sleep",
        "3600",
    ])?;
    let running = converged(m1, &service, 3)?;

    // What docker shows: essaim's labels, the limit and the environment asked for.
    let task = &running[0];
    let container = docker::containers(&format!("essaim.task.id={}", task.task.id));
    assert_eq!(container.len(), 1, "one container per task: {container:?}");
    let inspect = docker::docker(&[
        "inspect",
        "--format",
        "{{index .Config.Labels \"essaim.node.id\"}} {{.HostConfig.Memory}} {{json .Config.Env}}",
        &container[0],
    ]);
    let inspect = String::from_utf8_lossy(&inspect.stdout).to_string();
    let node_id = m1.node_id()?;
    assert!(
        inspect.starts_with(&format!("{node_id} 67108864 ")),
        "{inspect}"
    );
    assert!(inspect.contains("GREETING=hello"), "{inspect}");
    assert!(
        container[0].starts_with(&format!("{service}.")),
        "named after the service: {container:?}"
    );

    m1.ok(&["service", "scale", "--detach", &format!("{service}=1")])?;
    converged(m1, &service, 1)?;
    wait_for(
        "the containers of the tasks scaled away removed, not only stopped",
        SETTLE,
        || {
            let left = docker::containers(&format!("essaim.service.name={service}"));
            Ok((left.len() == 1).then_some(()))
        },
    )?;

    m1.ok(&["service", "rm", &service])?;
    wait_for(
        "no container and no network of the removed service",
        SETTLE,
        || {
            let left = docker::containers(&format!("essaim.service.name={service}"));
            let networks = docker::networks(&format!("essaim.network={service}_default"));
            Ok((left.is_empty() && networks.is_empty()).then_some(()))
        },
    )?;
    Ok(())
}

#[test]
fn docker_a_killed_container_is_reported_with_its_exit_code_and_replaced() -> Result<()> {
    let service = unique("killed");
    let _cleanup = Cleanup {
        services: vec![service.clone()],
        networks: vec![],
    };
    let Some((cluster, image)) = docker_node("docker_a_killed_container")? else {
        return Ok(());
    };
    let m1 = cluster.node("m1");
    m1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &service,
        "--restart-delay",
        "100ms",
        image,
        "sleep",
        "3600",
    ])?;
    let first = converged(m1, &service, 1)?.remove(0);
    let container = docker::containers(&format!("essaim.task.id={}", first.task.id));
    assert!(docker::docker(&["kill", &container[0]]).status.success());

    let replacement = wait_for(
        "the killed task failed with code 137, and a new one running",
        SETTLE,
        || {
            let tasks = m1.tasks(&service)?;
            let killed = tasks.iter().find(|t| t.task.id == first.task.id);
            let failed = killed.is_some_and(|t| {
                t.task.status.state == TaskState::Failed && t.task.status.exit_code == Some(137)
            });
            let running = running(&tasks);
            Ok(
                (failed && running.len() == 1 && running[0].task.id != first.task.id)
                    .then(|| running[0].clone()),
            )
        },
    )?;
    converged(m1, &service, 1)?;
    assert_eq!(replacement.task.slot, first.task.slot, "same slot");
    Ok(())
}

#[test]
fn docker_a_busy_container_reports_its_cpu_and_memory() -> Result<()> {
    let service = unique("busy");
    let _cleanup = Cleanup {
        services: vec![service.clone()],
        networks: vec![],
    };
    let Some((cluster, image)) = docker_node("docker_a_busy_container_reports")? else {
        return Ok(());
    };
    let m1 = cluster.node("m1");
    m1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &service,
        "--stop-grace-period",
        "1s",
        image,
        "sh",
        "-c",
        "while :; do :; done",
    ])?;
    converged(m1, &service, 1)?;
    let usage = wait_for("the busy container at over 300 millicores", SETTLE, || {
        let tasks = m1.tasks(&service)?;
        Ok(running(&tasks)
            .first()
            .and_then(|t| t.usage)
            .filter(|u| u.cpu_millicores > 300))
    })?;
    assert!(usage.memory_bytes > 0, "{usage:?}");
    Ok(())
}

#[test]
fn docker_a_missing_image_is_rejected_naming_the_image_and_the_node() -> Result<()> {
    let service = unique("missing");
    let _cleanup = Cleanup {
        services: vec![service.clone()],
        networks: vec![],
    };
    let Some((cluster, _image)) = docker_node("docker_a_missing_image")? else {
        return Ok(());
    };
    let m1 = cluster.node("m1");
    m1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &service,
        "essaim-test/no-such-image:1",
    ])?;
    let error = wait_for("a rejected task", SETTLE, || {
        Ok(m1
            .tasks(&service)?
            .into_iter()
            .find(|t| t.task.status.state == TaskState::Rejected)
            .and_then(|t| t.task.status.error))
    })?;
    assert!(
        error.contains("image essaim-test/no-such-image:1 not found on node m1"),
        "{error}"
    );
    assert!(docker::containers(&format!("essaim.service.name={service}")).is_empty());
    // Between attempts no task is live: the listings still say why.
    let ls = wait_for("service ls to say why", SETTLE, || {
        let out = m1.ok(&["service", "ls"])?;
        Ok(out
            .contains("0/1 (rejected: image essaim-test/no-such-image:1 not found")
            .then_some(out))
    })?;
    assert!(ls.contains(&service), "{ls}");
    // (A new attempt may be under way at one look: then that is the slot's task.)
    let ps = wait_for("service ps to show the rejected attempt", SETTLE, || {
        let out = m1.ok(&["service", "ps", &service])?;
        Ok(out.contains("Rejected").then_some(out))
    })?;
    assert!(
        ps.contains("image essaim-test/no-such-image:1 not found on node m1"),
        "{ps}"
    );
    Ok(())
}

#[test]
fn docker_health_checks_gate_running_and_unhealthy_tasks_fail() -> Result<()> {
    let healthy = unique("healthy");
    let sick = unique("sick");
    let _cleanup = Cleanup {
        services: vec![healthy.clone(), sick.clone()],
        networks: vec![],
    };
    let Some((cluster, image)) = docker_node("docker_health_checks")? else {
        return Ok(());
    };
    let m1 = cluster.node("m1");
    // Healthy only once /tmp/ready exists, a second after the start; the checks that fail
    // before fall in the start period, and do not count.
    m1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &healthy,
        "--health-cmd",
        "test -f /tmp/ready",
        "--health-interval",
        "200ms",
        "--health-start-period",
        "20s",
        "--stop-grace-period",
        "1s",
        image,
        "sh",
        "-c",
        "sleep 1; touch /tmp/ready; exec sleep 3600",
    ])?;
    let task = converged(m1, &healthy, 1)?.remove(0);
    let container = docker::containers(&format!("essaim.task.id={}", task.task.id));
    let health = docker::docker(&[
        "inspect",
        "--format",
        "{{.State.Health.Status}}",
        &container[0],
    ]);
    assert_eq!(
        String::from_utf8_lossy(&health.stdout).trim(),
        "healthy",
        "RUNNING only once healthy"
    );

    m1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &sick,
        "--health-cmd",
        "echo not ready; false",
        "--health-interval",
        "200ms",
        "--health-retries",
        "1",
        "--stop-grace-period",
        "1s",
        image,
        "sleep",
        "3600",
    ])?;
    let error = wait_for("an unhealthy task failed", SETTLE, || {
        let tasks = m1.tasks(&sick)?;
        assert!(
            tasks
                .iter()
                .all(|t| t.task.status.state != TaskState::Running),
            "an unhealthy task never counts as running: {tasks:?}"
        );
        Ok(tasks
            .into_iter()
            .find(|t| t.task.status.state == TaskState::Failed)
            .and_then(|t| t.task.status.error))
    })?;
    assert!(error.contains("unhealthy: not ready"), "{error}");
    Ok(())
}

#[test]
fn docker_services_on_one_network_reach_each_other_by_name_and_publish_ports() -> Result<()> {
    let web = unique("web");
    let client = unique("client");
    let network = unique("front");
    let _cleanup = Cleanup {
        services: vec![web.clone(), client.clone()],
        networks: vec![network.clone()],
    };
    let Some((cluster, image)) = docker_node("docker_services_on_one_network")? else {
        return Ok(());
    };
    let m1 = cluster.node("m1");
    m1.ok(&["network", "create", &network])?;
    m1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &web,
        "--network",
        &network,
        "--publish",
        "80",
        image,
        "sh",
        "-c",
        "echo \"served by slot $ESSAIM_TASK_SLOT\" > /tmp/index.html; exec httpd -f -p 80 -h /tmp",
    ])?;
    let served = converged(m1, &web, 1)?.remove(0);
    let url = format!("http://{web}/index.html");
    m1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &client,
        "--network",
        &network,
        image,
        "sh",
        "-c",
        &format!("while true; do wget -qO- {url}; sleep 0.2; done"),
    ])?;
    converged(m1, &client, 1)?;
    wait_for("the client reaches web by name", SETTLE, || {
        let logs = m1.ok(&["service", "logs", &client, "--tail", "5"])?;
        Ok(logs.contains("served by slot 1").then_some(()))
    })?;

    // The port published on the node, and the container's address, are in the task status.
    let status = &served.task.status;
    assert!(status.address.is_some(), "{status:?}");
    let port = status
        .ports
        .iter()
        .find(|p| p.target == 80)
        .map(|p| p.published)
        .expect("port 80 published");
    assert_ne!(port, 0);
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    assert!(reply.contains("served by slot 1"), "{reply}");
    Ok(())
}

#[test]
fn docker_a_restarted_essaimd_adopts_its_containers_instead_of_starting_new_ones() -> Result<()> {
    let service = unique("adopted");
    let _cleanup = Cleanup {
        services: vec![service.clone()],
        networks: vec![],
    };
    let Some((mut cluster, image)) = docker_node("docker_a_restarted_essaimd")? else {
        return Ok(());
    };
    sleepers(cluster.node("m1"), &service, image, 2)?;
    let containers_before = docker::containers(&format!("essaim.service.name={service}"));

    let m1 = cluster.node_mut("m1");
    m1.kill9();
    m1.restart()?;
    let m1 = cluster.node("m1");
    let running = converged(m1, &service, 2)?;
    assert_eq!(
        docker::containers(&format!("essaim.service.name={service}")),
        containers_before,
        "the same containers, none started twice"
    );
    assert!(
        m1.logs().contains("adopting a task"),
        "the agent says it adopted them"
    );
    assert_eq!(running.len(), 2);

    // Adopted containers are managed as any other: scaling down stops one.
    m1.ok(&["service", "scale", "--detach", &format!("{service}=1")])?;
    converged(m1, &service, 1)?;
    Ok(())
}

/// A stand-in for a node's Docker engine that can go away: a socket that forwards to the real
/// engine's until stopped, then refuses (and cuts what it carried).
struct EngineProxy {
    path: std::path::PathBuf,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    accepting: Option<std::thread::JoinHandle<()>>,
}

impl EngineProxy {
    fn start(path: std::path::PathBuf) -> Result<EngineProxy> {
        use std::os::unix::net::{UnixListener, UnixStream};
        use std::sync::atomic::Ordering;
        use std::sync::{Arc, Mutex};
        let listener = UnixListener::bind(&path)?;
        listener.set_nonblocking(true)?;
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stopping = stop.clone();
        let accepting = std::thread::spawn(move || {
            let carried: Arc<Mutex<Vec<UnixStream>>> = Arc::default();
            while !stopping.load(Ordering::Relaxed) {
                let Ok((client, _)) = listener.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                let Ok(engine) = UnixStream::connect("/var/run/docker.sock") else {
                    continue;
                };
                let _ = client.set_nonblocking(false);
                let streams = [client.try_clone(), engine.try_clone()];
                if let [Ok(client_copy), Ok(engine_copy)] = streams {
                    let mut kept = carried.lock().expect("lock");
                    kept.push(client_copy);
                    kept.push(engine_copy);
                }
                for (mut from, mut to) in [
                    (client.try_clone(), engine.try_clone()),
                    (engine.try_clone(), client.try_clone()),
                ]
                .into_iter()
                .filter_map(|(a, b)| Some((a.ok()?, b.ok()?)))
                {
                    std::thread::spawn(move || {
                        let _ = std::io::copy(&mut from, &mut to);
                        let _ = to.shutdown(std::net::Shutdown::Write);
                    });
                }
            }
            for stream in carried.lock().expect("lock").iter() {
                let _ = stream.shutdown(std::net::Shutdown::Both);
            }
        });
        Ok(EngineProxy {
            path,
            stop,
            accepting: Some(accepting),
        })
    }

    /// The engine is gone: connections are cut and new ones refused.
    fn stop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(accepting) = self.accepting.take() {
            let _ = accepting.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn docker_a_node_whose_engine_goes_away_is_down_with_that_reason_and_its_tasks_move() -> Result<()>
{
    let service = unique("engine-gone");
    let network = unique("engine-gone-net");
    let _cleanup = Cleanup {
        services: vec![service.clone()],
        networks: vec![network.clone()],
    };
    let Some((mut cluster, image)) = docker_node("docker_a_node_whose_engine_goes_away")? else {
        return Ok(());
    };
    if !std::path::Path::new("/var/run/docker.sock").exists() {
        eprintln!("SKIPPED docker_a_node_whose_engine_goes_away: the engine is not at /var/run/docker.sock");
        return Ok(());
    }
    // Both nodes share this machine's engine: made once beforehand (as essaim makes it), the
    // network is not made twice by two nodes at the same moment.
    let label = format!("essaim.network={network}");
    assert!(
        docker::docker(&["network", "create", "--label", &label, &network])
            .status
            .success()
    );
    let proxy_path = cluster.root().join("engine.sock");
    let mut proxy = EngineProxy::start(proxy_path.clone())?;
    let docker_host = format!("unix://{}", proxy_path.display());
    let token = cluster
        .node("m1")
        .ok(&["swarm", "join-token", "-q", "worker"])?;
    let m1_addr = cluster.node("m1").addr();
    let w1 = cluster.add_with_env(
        "w1",
        &[("ESSAIM_RUNTIME", "docker"), ("DOCKER_HOST", &docker_host)],
    )?;
    w1.ok(&[
        "swarm",
        "join",
        "--token",
        token.trim(),
        "--advertise-addr",
        &w1.addr(),
        &m1_addr,
    ])?;
    let m1 = cluster.node("m1");
    cluster.wait_for_nodes("m1", "both nodes ready", SETTLE, |nodes| {
        nodes.len() == 2 && nodes.iter().all(|n| n["status"]["state"] == "ready")
    })?;
    m1.ok(&["network", "create", &network])?;
    m1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &service,
        "--replicas",
        "4",
        "--network",
        &network,
        "--stop-grace-period",
        "1s",
        image,
        "sleep",
        "3600",
    ])?;
    let placed = converged(m1, &service, 4)?;
    let on_w1 = placed
        .iter()
        .filter(|t| t.node_hostname.as_deref() == Some("w1"))
        .count();
    assert!(on_w1 > 0, "some tasks on w1: {placed:?}");

    proxy.stop();
    wait_for("w1 down, saying its runtime is unavailable", SETTLE, || {
        let nodes = cluster.node_list("m1")?;
        let w1 = essaim_tests::row(&nodes, "w1").cloned();
        Ok(w1.filter(|n| {
            n["status"]["state"] == "down"
                && n["status"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with("runtime unavailable"))
        }))
    })?;
    wait_for("all four tasks running on m1", SETTLE, || {
        let tasks = m1.tasks(&service)?;
        let on_m1 = running(&tasks)
            .iter()
            .filter(|t| t.node_hostname.as_deref() == Some("m1"))
            .count();
        Ok((on_m1 == 4).then_some(()))
    })?;
    Ok(())
}

#[test]
fn docker_a_start_first_rolling_update_never_drops_below_the_replicas_and_rolls_back() -> Result<()>
{
    let service = unique("rolling");
    let _cleanup = Cleanup {
        services: vec![service.clone()],
        networks: vec![],
    };
    let Some((cluster, image)) = docker_node("docker_a_start_first_rolling_update")? else {
        return Ok(());
    };
    let m1 = cluster.node("m1");
    sleepers(m1, &service, image, 3)?;
    m1.ok(&[
        "service",
        "update",
        "--detach",
        "--args",
        "sleep 3601",
        "--update-order",
        "start-first",
        "--update-monitor",
        "1s",
        &service,
    ])?;
    // Watch the whole update: never fewer than 3 containers running.
    let mut fewest = usize::MAX;
    wait_for("the start-first update to complete", SETTLE, || {
        let tasks = m1.tasks(&service)?;
        fewest = fewest.min(running(&tasks).len());
        let inspect = m1.json(&["service", "inspect", &service])?;
        let state = inspect[0]["update_status"]["state"].clone();
        Ok((state == "completed").then_some(()))
    })?;
    assert!(
        fewest >= 3,
        "only {fewest} tasks ran during a start-first update"
    );
    let running_now = converged(m1, &service, 3)?;
    assert!(running_now
        .iter()
        .all(|t| t.task.spec.args == ["sleep", "3601"]));

    // Back to the previous spec, containers and all.
    m1.ok(&["service", "rollback", &service])?;
    let back = converged(m1, &service, 3)?;
    assert!(back.iter().all(|t| t.task.spec.args == ["sleep", "3600"]));
    let inspect = m1.json(&["service", "inspect", &service])?;
    assert_eq!(inspect[0]["update_status"]["state"], "rollback_completed");
    Ok(())
}

#[test]
fn docker_an_update_to_a_missing_image_rolls_back_by_its_failure_action() -> Result<()> {
    let service = unique("badimage");
    let _cleanup = Cleanup {
        services: vec![service.clone()],
        networks: vec![],
    };
    let Some((cluster, image)) = docker_node("docker_an_update_to_a_missing_image")? else {
        return Ok(());
    };
    let m1 = cluster.node("m1");
    sleepers(m1, &service, image, 2)?;
    // No registry answers here: the new image cannot be had, its task is rejected.
    let out = m1.essaim(&[
        "service",
        "update",
        "--image",
        "essaim-test/missing:1",
        "--update-failure-action",
        "rollback",
        "--update-monitor",
        "1s",
        &service,
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "the update failed: {err}");
    assert!(err.contains("rolled back"), "{err}");
    wait_for("the rollback to complete", SETTLE, || {
        let inspect = m1.json(&["service", "inspect", &service])?;
        Ok((inspect[0]["update_status"]["state"] == "rollback_completed").then_some(()))
    })?;
    let back = converged(m1, &service, 2)?;
    assert!(back.iter().all(|t| t.task.spec.image == image));
    Ok(())
}

/// The engine's network mode of the container of task `task_id`.
fn network_mode(task_id: &str) -> Result<String> {
    let names = docker::containers(&format!("essaim.task.id={task_id}"));
    let name = names.first().context("the task's container")?;
    let output = docker::docker(&["inspect", "-f", "{{.HostConfig.NetworkMode}}", name]);
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[test]
fn docker_containers_on_three_nodes_reach_each_other_over_the_overlay_and_outlive_their_agent(
) -> Result<()> {
    if !is_root() {
        eprintln!(
            "SKIPPED docker_containers_on_three_nodes: nodes in network namespaces need root"
        );
        return Ok(());
    }
    let Some(image) = docker::test_image() else {
        eprintln!("SKIPPED docker_containers_on_three_nodes: needs a Docker engine");
        return Ok(());
    };
    docker::install_test_deps()?;
    let (web, client, echo, talker) = (
        unique("web"),
        unique("client"),
        unique("echo"),
        unique("talker"),
    );
    let network = unique("back");
    // Dropped last: the daemons and their namespaces go first, then what is left on the engine.
    let _cleanup = Cleanup {
        services: vec![web.clone(), client.clone(), echo.clone(), talker.clone()],
        networks: vec![network.clone()],
    };
    let underlay = Underlay::new(3)?;
    let mut cluster = underlay.swarm_with_env(&[("ESSAIM_RUNTIME", "docker")])?;
    let n1 = cluster.node("n1");
    n1.ok(&["network", "create", &network])?;
    let on = |service: &str, node: &str, extra: &[&str], script: &str| -> Result<()> {
        let constraint = format!("node.hostname{node}");
        let mut args = vec![
            "service",
            "create",
            "--detach",
            "--name",
            service,
            "--network",
            &network,
            "--constraint",
            &constraint,
            "--stop-grace-period",
            "1s",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[image, "sh", "-c", script]);
        n1.ok(&args)?;
        Ok(())
    };
    // The nodes share one engine: web's own bridge is made once here, so that two nodes do
    // not make it at the same moment (the engine would then hold two networks of one name).
    let bridge = format!("{web}_default");
    let label = format!("essaim.network={bridge}");
    docker::docker(&["network", "create", "--label", &label, &bridge]);
    // Two replicas on n2 and n3 serving their task ID, publishing a port on the engine.
    on(
        &web,
        "!=n1",
        &["--replicas", "2", "--publish", "mode=host,target=80"],
        "echo $ESSAIM_TASK_ID > /tmp/index.html; exec httpd -f -p 80 -h /tmp",
    )?;
    on(
        &client,
        "==n1",
        &[],
        &format!(
            "while true; do printf 'GET /index.html HTTP/1.0\\r\\n\\r\\n' | nc {web} 80; sleep 0.1; done"
        ),
    )?;
    let replicas = converged(n1, &web, 2)?;
    let client_task = converged(n1, &client, 1)?.remove(0);

    // By name, through the VIP, the client on n1 reaches both replicas on the other nodes.
    for replica in &replicas {
        let id = &replica.task.id;
        assert_ne!(replica.node_hostname.as_deref(), Some("n1"));
        wait_for(&format!("the client reaches replica {id}"), SETTLE, || {
            let logs = n1.ok(&["service", "logs", &client, "--tail", "40"])?;
            Ok(logs.contains(id.as_str()).then_some(()))
        })?;
    }
    // The engine gave the client no network of its own; the replica publishing a port is on
    // its service's bridge, which answers on the engine's published port.
    assert_eq!(network_mode(&client_task.task.id)?, "none");
    let served = &replicas[0];
    let bridge_id = docker::docker(&["network", "inspect", "-f", "{{.Id}}", &bridge]);
    let bridge_id = String::from_utf8_lossy(&bridge_id.stdout)
        .trim()
        .to_string();
    assert_eq!(network_mode(&served.task.id)?, bridge_id);
    let port = served
        .task
        .status
        .ports
        .iter()
        .find(|p| p.target == 80)
        .map(|p| p.published)
        .context("port 80 published")?;
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port))?;
    stream.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    assert!(reply.contains(served.task.id.as_str()), "{reply}");
    // The task's address is its cluster address.
    let address = served.task.networks[0].address.to_string();
    assert_eq!(
        served.task.status.address.as_deref(),
        Some(address.as_str())
    );

    // A connection from n1 to a task on n2 outlives a kill -9 of n2's essaimd: the restarted
    // agent adopts the container and keeps its interfaces.
    on(&echo, "==n2", &[], "exec nc -ll -p 9000 -e cat")?;
    converged(n1, &echo, 1)?;
    // The talker's program starts a moment before its interfaces are there (as under CNI):
    // it connects again until it is through, and says each time its connection closed.
    on(
        &talker,
        "==n1",
        &[],
        &format!(
            "while true; do (while true; do echo tick; sleep 0.2; done) | nc {echo} 9000; echo closed; sleep 0.2; done"
        ),
    )?;
    converged(n1, &talker, 1)?;
    // Ticks echoed back, and how many times the connection closed so far.
    let talked = |n1: &Daemon| -> Result<(usize, usize)> {
        let logs = n1.ok(&["service", "logs", &talker])?;
        let count = |word: &str| logs.lines().filter(|l| l.ends_with(word)).count();
        Ok((count("tick"), count("closed")))
    };
    wait_for("ticks echoed back", SETTLE, || {
        Ok((talked(n1)?.0 > 5).then_some(()))
    })?;
    let (_, closed_before) = talked(n1)?;
    let n2 = cluster.node_mut("n2");
    n2.kill9();
    n2.restart()?;
    let n2 = cluster.node("n2");
    wait_for("n2's agent adopts the echo container", SETTLE, || {
        Ok(n2.logs().contains("adopting a task").then_some(()))
    })?;
    let n1 = cluster.node("n1");
    // Long enough for the restarted node's first network map and reconcile.
    let (after_restart, _) = talked(n1)?;
    wait_for("ticks still echoed after the restart", SETTLE, || {
        Ok((talked(n1)?.0 > after_restart + 25).then_some(()))
    })?;
    let (_, closed_after) = talked(n1)?;
    assert_eq!(
        closed_after, closed_before,
        "the connection closed across the restart"
    );
    let echo_tasks = running(&n1.tasks(&echo)?).len();
    assert_eq!(echo_tasks, 1, "the echo task was adopted, not replaced");

    // Removing the services takes the containers, and every device essaim made with them.
    for service in [&web, &client, &echo, &talker] {
        n1.ok(&["service", "rm", service])?;
    }
    wait_for("no container and no essaim device left", SETTLE, || {
        let containers: usize = [&web, &client, &echo, &talker]
            .iter()
            .map(|s| docker::containers(&format!("essaim.service.name={s}")).len())
            .sum();
        let mut devices = Vec::new();
        for n in 1..=3 {
            devices.extend(underlay.essaim_devices(n)?);
        }
        Ok((containers == 0 && devices.is_empty()).then_some(()))
    })?;
    Ok(())
}

/// The page `GET /` gives at `address`, from the calling thread's network namespace.
fn page(address: std::net::SocketAddr) -> Result<String> {
    let timeout = Duration::from_secs(2);
    let mut stream = std::net::TcpStream::connect_timeout(&address, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(b"GET /index.html HTTP/1.0\r\n\r\n")?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply)?;
    let (head, body) = reply
        .split_once("\r\n\r\n")
        .with_context(|| format!("no HTTP answer from {address}: {reply:?}"))?;
    anyhow::ensure!(head.contains(" 200 "), "{address} answered {head}");
    Ok(body.trim().to_string())
}

#[test]
fn docker_a_published_port_answers_on_every_node_from_every_container() -> Result<()> {
    let web = unique("meshweb");
    let _cleanup = Cleanup {
        services: vec![web.clone()],
        networks: vec![],
    };
    let Some((underlay, cluster, image)) = docker_underlay("docker_a_published_port", 3)? else {
        return Ok(());
    };
    let n1 = cluster.node("n1");
    n1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &web,
        "--replicas",
        "3",
        "-p",
        "8000:80",
        "--stop-grace-period",
        "1s",
        image,
        "sh",
        "-c",
        "echo $ESSAIM_TASK_ID > /tmp/index.html; exec httpd -f -p 80 -h /tmp",
    ])?;
    let replicas: std::collections::BTreeSet<String> = converged(n1, &web, 3)?
        .into_iter()
        .map(|t| t.task.id)
        .collect();
    // No engine port: the mesh of each node's namespace takes the connections.
    let engine_ports = docker::docker(&[
        "ps",
        "--filter",
        &format!("label=essaim.service.name={web}"),
        "--format",
        "{{.Ports}}",
    ]);
    assert!(
        String::from_utf8_lossy(&engine_ports.stdout)
            .trim()
            .is_empty(),
        "the engine publishes nothing"
    );
    for node in 1..=3 {
        let address = std::net::SocketAddr::from((underlay.ip(node), 8000));
        wait_for(
            &format!("n{node}:8000 to reach every container"),
            SETTLE,
            || {
                let seen = Underlay::run_in(&underlay.outside(), || {
                    (0..30)
                        .map(|_| page(address))
                        .collect::<Result<std::collections::BTreeSet<String>>>()
                })?;
                Ok(seen.ok().filter(|seen| *seen == replicas))
            },
        )?;
    }
    Ok(())
}

/// `docker inspect --format FORMAT` of the one container of task `task_id`.
fn inspect_task(task_id: &str, format: &str) -> Result<String> {
    let container = docker::containers(&format!("essaim.task.id={task_id}"));
    let [container] = container.as_slice() else {
        anyhow::bail!("one container per task, found {container:?}");
    };
    let output = docker::docker(&["inspect", "--format", format, container]);
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}

#[test]
fn docker_container_options_are_the_container_s() -> Result<()> {
    let service = unique("options");
    let _cleanup = Cleanup {
        services: vec![service.clone()],
        networks: vec![],
    };
    let Some((cluster, image)) = docker_node("docker_container_options_are_the_container_s")?
    else {
        return Ok(());
    };
    let m1 = cluster.node("m1");
    m1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &service,
        "--entrypoint",
        "sleep",
        "--user",
        "1000:1000",
        "--workdir",
        "/tmp",
        "--hostname",
        "{{.Service.Name}}-{{.Task.Slot}}",
        "--add-host",
        "db.local:10.0.0.9",
        "--dns",
        "10.9.9.9",
        "--container-label",
        "team=shop",
        "--stop-signal",
        "SIGINT",
        "--read-only",
        "--cap-add",
        "NET_ADMIN",
        "--ulimit",
        "nofile=1024:2048",
        "--limit-pids",
        "100",
        "--stop-grace-period",
        "1s",
        image,
        "3600",
    ])?;
    let running = converged(m1, &service, 1)?;
    let task_id = &running[0].task.id;
    let shown = inspect_task(
        task_id,
        "{{json .Config.Entrypoint}} {{json .Config.Cmd}} {{.Config.User}} {{.Config.WorkingDir}} \
         {{.Config.Hostname}} {{json .HostConfig.ExtraHosts}} {{json .HostConfig.Dns}} \
         {{index .Config.Labels \"team\"}} {{.Config.StopSignal}} {{.HostConfig.ReadonlyRootfs}} \
         {{json .HostConfig.CapAdd}}",
    )?;
    assert_eq!(
        shown,
        format!(
            "[\"sleep\"] [\"3600\"] 1000:1000 /tmp {service}-1 [\"db.local:10.0.0.9\"] \
             [\"10.9.9.9\"] shop SIGINT true [\"NET_ADMIN\"]"
        ),
        "the hostname's placeholders filled in for the task"
    );
    let limits = inspect_task(
        task_id,
        "{{.HostConfig.PidsLimit}} {{range .HostConfig.Ulimits}}{{.Name}}={{.Soft}}:{{.Hard}}{{end}}",
    )?;
    assert_eq!(limits, "100 nofile=1024:2048");
    // The user and the directory are the program's own, as docker exec shows.
    let container = docker::containers(&format!("essaim.task.id={task_id}"));
    let exec = docker::docker(&[
        "exec",
        &container[0],
        "sh",
        "-c",
        "echo $PWD; cat /etc/hosts",
    ]);
    let exec = String::from_utf8_lossy(&exec.stdout);
    assert!(exec.starts_with("/tmp\n"), "{exec}");
    assert!(exec.contains("10.0.0.9\tdb.local"), "{exec}");

    // An update of one option rolls the task out with it; an empty value goes back.
    m1.ok(&[
        "service",
        "update",
        "--user",
        "",
        "--workdir",
        "/",
        &service,
    ])?;
    let replaced = converged(m1, &service, 1)?;
    assert_ne!(&replaced[0].task.id, task_id, "a new task");
    let shown = inspect_task(
        &replaced[0].task.id,
        "{{.Config.User}}|{{.Config.WorkingDir}}|{{.Config.Hostname}}",
    )?;
    assert_eq!(shown, format!("|/|{service}-1"));
    m1.ok(&["service", "rm", &service])?;
    Ok(())
}

/// The seed's example on one Docker node. It needs the routing mesh (three replicas, one
/// port 80), hence a node with an address of its own: a namespace on an underlay, with root.
#[test]
fn docker_the_seed_stack_runs_three_containers_behind_port_80_labelled_with_their_stack(
) -> Result<()> {
    let stack = format!("my_stack{}", std::process::id());
    let web = format!("{stack}_web");
    let _cleanup = Cleanup {
        services: vec![web.clone()],
        networks: vec![format!("{stack}_default")],
    };
    let Some((underlay, cluster, image)) = docker_underlay("docker_the_seed_stack", 1)? else {
        return Ok(());
    };
    let n1 = cluster.node("n1");
    // The seed's file, with the test image for nginx and busybox's web server for nginx's.
    let text = format!(
        "version: '3'
services:
  web:
    image: {image}
    command: sh -c 'echo $$ESSAIM_TASK_ID > /tmp/index.html; exec httpd -f -p 80 -h /tmp'
    ports:
      - \"80:80\"
    deploy:
      replicas: 3
"
    );
    let file = cluster.root().join("docker-compose.yml");
    std::fs::write(&file, text)?;
    let out = n1.ok(&[
        "stack",
        "deploy",
        "--compose-file",
        &file.to_string_lossy(),
        &stack,
    ])?;
    assert!(out.contains(&format!("Creating service {web}")), "{out}");
    let replicas: std::collections::BTreeSet<String> = converged(n1, &web, 3)?
        .into_iter()
        .map(|t| t.task.id)
        .collect();
    // As a Docker user finds a stack's containers.
    let labelled = docker::containers(&format!("com.docker.stack.namespace={stack}"));
    assert_eq!(labelled.len(), 3, "{labelled:?}");
    assert!(labelled
        .iter()
        .all(|name| name.starts_with(&format!("{web}."))));
    // Port 80 of the node answers from every replica.
    let address = std::net::SocketAddr::from((underlay.ip(1), 80));
    wait_for("n1:80 to reach every container", SETTLE, || {
        let seen = Underlay::run_in(&underlay.outside(), || {
            (0..30)
                .map(|_| page(address))
                .collect::<Result<std::collections::BTreeSet<String>>>()
        })?;
        Ok(seen.ok().filter(|seen| *seen == replicas))
    })?;

    n1.ok(&["stack", "rm", &stack])?;
    wait_for("no container of the stack left", SETTLE, || {
        let left = docker::containers(&format!("com.docker.stack.namespace={stack}"));
        Ok(left.is_empty().then_some(()))
    })?;
    Ok(())
}

/// Removes a named Docker volume when dropped, passed or failed.
struct VolumeGone(String);

impl Drop for VolumeGone {
    fn drop(&mut self) {
        docker::docker(&["volume", "rm", "-f", &self.0]);
    }
}

#[test]
fn docker_a_volume_outlives_its_task_and_a_read_only_bind_is_read_only() -> Result<()> {
    let service = unique("mounts");
    let volume = unique("essaim-test-data");
    let _volume = VolumeGone(volume.clone());
    let _cleanup = Cleanup {
        services: vec![service.clone()],
        networks: vec![],
    };
    let Some((cluster, image)) = docker_node("docker_a_volume_outlives_its_task")? else {
        return Ok(());
    };
    let m1 = cluster.node("m1");
    let site = cluster.root().join("site");
    std::fs::create_dir_all(&site)?;
    std::fs::write(site.join("page"), "from the node\n")?;
    m1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &service,
        "--mount",
        &format!("source={volume},target=/data,volume-label=team=shop"),
        "--mount",
        &format!("type=bind,source={},target=/www,readonly", site.display()),
        "--stop-grace-period",
        "1s",
        image,
        "sh",
        "-c",
        "echo $ESSAIM_TASK_ID >> /data/tasks; exec sleep 3600",
    ])?;
    let first = converged(m1, &service, 1)?[0].task.id.clone();
    let exec = |task_id: &str, script: &str| -> Result<String> {
        let container = docker::containers(&format!("essaim.task.id={task_id}"));
        let output = docker::docker(&["exec", &container[0], "sh", "-c", script]);
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
    };
    assert_eq!(exec(&first, "cat /www/page")?, "from the node");
    assert_eq!(
        exec(
            &first,
            "touch /www/new 2>/dev/null && echo wrote || echo read-only"
        )?,
        "read-only"
    );
    // The volume is the engine's, labelled as essaim's and as asked.
    let labels = docker::docker(&["volume", "inspect", "--format", "{{json .Labels}}", &volume]);
    let labels = String::from_utf8_lossy(&labels.stdout);
    assert!(labels.contains("\"essaim.volume\":\"true\""), "{labels}");
    assert!(labels.contains("\"team\":\"shop\""), "{labels}");

    // A new task (a forced update replaces the container) finds what the first one wrote.
    m1.ok(&["service", "update", "--force", &service])?;
    let second = converged(m1, &service, 1)?[0].task.id.clone();
    assert_ne!(second, first);
    assert_eq!(
        exec(&second, "cat /data/tasks")?,
        format!("{first}\n{second}")
    );
    m1.ok(&["service", "rm", &service])?;
    wait_for("the service's containers gone", SETTLE, || {
        let left = docker::containers(&format!("essaim.service.name={service}"));
        Ok(left.is_empty().then_some(()))
    })?;
    let kept = docker::docker(&["volume", "inspect", &volume]);
    assert!(
        kept.status.success(),
        "the named volume outlives the service"
    );
    Ok(())
}

#[test]
fn docker_a_job_of_five_runs_two_containers_at_most_and_completes() -> Result<()> {
    let service = unique("job");
    let _cleanup = Cleanup {
        services: vec![service.clone()],
        networks: vec![],
    };
    let Some((cluster, image)) = docker_node("docker_a_job_of_five")? else {
        return Ok(());
    };
    let m1 = cluster.node("m1");
    let probe = cluster.root().join("job");
    std::fs::create_dir_all(&probe)?;
    // Each container marks itself at work in a directory of the node, counts who else is,
    // and leaves before it exits.
    // As for any service, create waits: here until the job completed.
    m1.ok(&[
        "service",
        "create",
        "--name",
        &service,
        "--mode",
        "replicated-job",
        "--replicas",
        "5",
        "--max-concurrent",
        "2",
        "--mount",
        &format!("type=bind,source={},target=/probe", probe.display()),
        image,
        "sh",
        "-c",
        "touch /probe/at-work.$ESSAIM_TASK_ID; ls /probe | grep -c at-work >> /probe/counts; \
         sleep 0.5; rm /probe/at-work.$ESSAIM_TASK_ID",
    ])?;
    let counts = std::fs::read_to_string(probe.join("counts"))?;
    let counts: Vec<u32> = counts
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    assert_eq!(counts.len(), 5, "{counts:?}");
    assert!(
        counts.iter().all(|&n| n <= 2),
        "at most 2 at once: {counts:?}"
    );
    let services = m1.ok(&["service", "ls"])?;
    assert!(services.contains("0/5 (5/5 completed)"), "{services}");
    m1.ok(&["service", "rm", &service])?;
    Ok(())
}

#[test]
fn docker_a_secret_is_a_read_only_file_in_memory_at_run_secrets_and_on_no_disk() -> Result<()> {
    let service = unique("secrets");
    let (secret, config) = (unique("db_pw"), unique("app_conf"));
    let _cleanup = Cleanup {
        services: vec![service.clone()],
        networks: vec![],
    };
    let Some((cluster, image)) = docker_node("docker_a_secret_is_a_read_only_file")? else {
        return Ok(());
    };
    let m1 = cluster.node("m1");
    let password = "s3cr3t-in-a-container-0001";
    let data = cluster.root().join("secret-data");
    std::fs::write(&data, password)?;
    m1.ok(&["secret", "create", &secret, &data.display().to_string()])?;
    std::fs::write(&data, "port=8080\n")?;
    m1.ok(&["config", "create", &config, &data.display().to_string()])?;
    std::fs::remove_file(&data)?;
    m1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        &service,
        "--secret",
        &format!("source={secret},target=db_pw,uid=70,mode=0400"),
        "--config",
        &format!("source={config},target=/etc/app.conf"),
        "--stop-grace-period",
        "1s",
        image,
        "sleep",
        "3600",
    ])?;
    let task = converged(m1, &service, 1)?[0].task.id.clone();
    let container = docker::containers(&format!("essaim.task.id={task}"))[0].clone();
    let exec = |script: &str| -> String {
        let output = docker::docker(&["exec", &container, "sh", "-c", script]);
        String::from_utf8_lossy(&output.stdout).trim().to_string()
    };
    assert_eq!(exec("cat /run/secrets/db_pw"), password);
    assert_eq!(exec("stat -c '%a %u' /run/secrets/db_pw"), "400 70");
    assert_eq!(exec("cat /etc/app.conf"), "port=8080");
    assert_eq!(
        exec("echo x > /run/secrets/db_pw 2>/dev/null && echo wrote || echo read-only"),
        "read-only"
    );
    // Not in the container's own layer, not in the node's data directory: only in memory.
    let upper = docker::docker(&[
        "inspect",
        "--format",
        "{{.GraphDriver.Data.UpperDir}}",
        &container,
    ]);
    let upper = String::from_utf8_lossy(&upper.stdout).trim().to_string();
    let mut searched = vec![m1.data_dir()];
    if !upper.is_empty() && upper != "<no value>" {
        searched.push(upper.into());
    }
    for dir in &searched {
        let found = essaim_tests::files_holding(dir, password.as_bytes());
        assert!(found.is_empty(), "the secret is on disk: {found:?}");
    }
    let refused = m1.essaim(&["secret", "rm", &secret]);
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("is in use by service"),
        "{refused:?}"
    );
    m1.ok(&["service", "rm", &service])?;
    wait_for("the service's containers gone", SETTLE, || {
        let left = docker::containers(&format!("essaim.service.name={service}"));
        Ok(left.is_empty().then_some(()))
    })?;
    m1.ok(&["secret", "rm", &secret])?;
    m1.ok(&["config", "rm", &config])?;
    Ok(())
}

#[test]
fn docker_with_registry_auth_a_private_image_is_pulled_and_without_it_rejected() -> Result<()> {
    let (with, without) = (unique("private"), unique("no-auth"));
    let _cleanup = Cleanup {
        services: vec![with.clone(), without.clone()],
        networks: vec![],
    };
    let Some((cluster, image)) = docker_node("docker_with_registry_auth")? else {
        return Ok(());
    };
    let registry = docker::Registry::start()?;
    let private = format!("{}/essaim-private:{}", registry.address, std::process::id());
    let _untag = ImageGone(private.clone());
    assert!(docker::docker(&["tag", image, &private]).status.success());
    let pushed = registry.docker(&["push", &private]);
    assert!(pushed.status.success(), "{pushed:?}");
    // The engine must pull it: only the registry has it now.
    assert!(docker::docker(&["rmi", &private]).status.success());

    let m1 = cluster.node("m1");
    let essaim = |args: &[&str]| {
        std::process::Command::new(essaim_tests::essaim_path())
            .arg("-H")
            .arg(format!("unix://{}", m1.socket().display()))
            .args(args)
            .env("DOCKER_CONFIG", registry.client_config.path())
            .env("NO_COLOR", "1")
            .stdin(std::process::Stdio::null())
            .output()
    };
    let created = essaim(&[
        "service",
        "create",
        "--detach",
        "--with-registry-auth",
        "--name",
        &with,
        "--stop-grace-period",
        "1s",
        &private,
        "sleep",
        "3600",
    ])?;
    assert!(created.status.success(), "{created:?}");
    converged(m1, &with, 1)?;

    // The credentials are shown nowhere and written nowhere in the clear.
    let inspected = m1.ok(&["service", "inspect", &with])?;
    assert!(!inspected.contains(&registry.password), "{inspected}");
    let pretty = m1.ok(&["service", "inspect", "--pretty", &with])?;
    assert!(pretty.contains("Registry auth"), "{pretty}");
    assert!(
        essaim_tests::files_holding(&m1.data_dir(), registry.password.as_bytes()).is_empty(),
        "the password is on the manager's disk"
    );
    assert!(!m1.logs().contains(&registry.password));

    // Without credentials, the registry's refusal is the task's error.
    m1.ok(&["service", "rm", &with])?;
    wait_for("the first service's containers gone", SETTLE, || {
        Ok(docker::containers(&format!("essaim.service.name={with}"))
            .is_empty()
            .then_some(()))
    })?;
    let _ = docker::docker(&["rmi", &private]);
    m1.ok(&[
        "service", "create", "--detach", "--name", &without, &private, "sleep", "3600",
    ])?;
    let error = wait_for("the pull to be refused", SETTLE, || {
        Ok(m1
            .tasks(&without)?
            .iter()
            .find_map(|t| t.task.status.error.clone()))
    })?;
    assert!(
        error.contains("pull failed") && error.to_lowercase().contains("auth"),
        "{error}"
    );
    Ok(())
}

/// Removes an image tag when dropped, even when the test fails.
struct ImageGone(String);

impl Drop for ImageGone {
    fn drop(&mut self) {
        let _ = docker::docker(&["rmi", "--force", &self.0]);
    }
}
