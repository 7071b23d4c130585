//! End-to-end tests of cluster networks with the process runtime: three `essaimd`, each in a
//! network namespace of its own on an underlay bridge, their tasks on overlay networks.
//!
//! Needs root (network namespaces); skipped with a message otherwise. Each test's namespaces,
//! and with them every device essaim made, go when it ends, also when it fails.

use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use essaim_tests::docker::{install_test_deps, BUSYBOX};
use essaim_tests::underlay::{client_task, is_root, Underlay};
use essaim_tests::{running, wait_for, Cluster, Daemon};

const SETTLE: Duration = Duration::from_secs(30);
const HTTP_PORT: u16 = 8080;

/// Where tasks leave their PIDs and web pages.
fn probe_dir(cluster: &Cluster) -> Result<PathBuf> {
    let dir = cluster.root().join("probe");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A service on `network` whose tasks serve their own task ID over HTTP.
fn web(manager: &Daemon, name: &str, network: &str, dir: &Path, extra: &[&str]) -> Result<()> {
    let script = format!(
        "mkdir -p {dir}/$ESSAIM_TASK_ID && echo $ESSAIM_TASK_ID > {dir}/$ESSAIM_TASK_ID/index.html \
         && echo $$ > {dir}/$ESSAIM_TASK_ID.pid && exec {BUSYBOX} httpd -f -p {HTTP_PORT} -h {dir}/$ESSAIM_TASK_ID",
        dir = dir.display()
    );
    let mut args = vec![
        "service",
        "create",
        "--detach",
        "--name",
        name,
        "--network",
        network,
        "--stop-grace-period",
        "1s",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["sh", "-c", &script]);
    manager.ok(&args)?;
    Ok(())
}

/// The running tasks of `service` by task ID, with their node and their address on their
/// first network, once there are `count`.
fn addresses(
    manager: &Daemon,
    service: &str,
    count: usize,
) -> Result<BTreeMap<String, (String, Ipv4Addr)>> {
    wait_for(
        &format!("{count} running tasks of {service}"),
        SETTLE,
        || {
            let tasks = manager.tasks(service)?;
            let up = running(&tasks);
            if up.len() != count {
                return Ok(None);
            }
            let mut found = BTreeMap::new();
            for view in up {
                let Some(first) = view.task.networks.first() else {
                    bail!("task {} runs without a network address", view.task.id);
                };
                let node = view.node_hostname.clone().unwrap_or_default();
                found.insert(view.task.id.clone(), (node, first.address));
            }
            Ok(Some(found))
        },
    )
}

/// `nsenter` into the client task's network and mount namespaces, as `docker exec` would.
fn in_client(dir: &Path) -> Result<Command> {
    let pid = std::fs::read_to_string(dir.join("client.pid")).context("the client's PID")?;
    let mut command = Command::new("nsenter");
    command
        .args(["--target", pid.trim(), "--net", "--mount"])
        .stdin(Stdio::null());
    Ok(command)
}

/// What `GET http://HOST:8080/` answers from inside the client task (the page, without the
/// headers), as `docker exec client wget` would show.
fn get_from_client(dir: &Path, host: impl std::fmt::Display, timeout_s: u32) -> Result<String> {
    let address = host;
    // bash's /dev/tcp: a client with nothing to resolve and nothing to install.
    let request = format!(
        "exec 3<>/dev/tcp/{address}/{HTTP_PORT} && printf 'GET / HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3"
    );
    let output = in_client(dir)?
        .args(["timeout", &timeout_s.to_string(), "bash", "-c", &request])
        .output()?;
    let response = String::from_utf8_lossy(&output.stdout);
    let Some((head, body)) = response.split_once("\r\n\r\n") else {
        bail!(
            "no HTTP answer from {address} to the client: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
    };
    if !head.starts_with("HTTP/1.0 200") && !head.starts_with("HTTP/1.1 200") {
        bail!("{address} answered the client: {head}");
    }
    Ok(body.trim().to_string())
}

/// The IPv4 addresses `name` resolves to in the client task, through its resolver (glibc,
/// its `/etc/resolv.conf`, the name server of its network); empty when it does not resolve.
fn resolve_in_client(dir: &Path, name: &str) -> Result<BTreeSet<Ipv4Addr>> {
    let output = in_client(dir)?
        .args(["getent", "ahostsv4", name])
        .output()?;
    Ok(String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_whitespace().next()?.parse().ok())
        .collect())
}

#[test]
fn tasks_on_three_nodes_reach_each_other_on_their_network_only_and_leave_nothing_behind(
) -> Result<()> {
    if !is_root() {
        eprintln!("skipped: nodes in network namespaces need root");
        return Ok(());
    }
    install_test_deps()?;
    let underlay = Underlay::new(3)?;
    let cluster = underlay.swarm()?;
    let n1 = cluster.node("n1");
    let dir = probe_dir(&cluster)?;
    n1.ok(&["network", "create", "front"])?;
    n1.ok(&["network", "create", "back"])?;
    web(
        n1,
        "web",
        "front",
        &dir,
        &["--mode", "global", "--restart-condition", "none"],
    )?;
    web(n1, "other", "back", &dir, &["--mode", "global"])?;
    web(
        n1,
        "rr",
        "front",
        &dir,
        &["--replicas", "2", "--endpoint-mode", "dnsrr"],
    )?;
    client_task(n1, "front", &dir)?;

    let webs = addresses(n1, "web", 3)?;
    let others = addresses(n1, "other", 3)?;
    addresses(n1, "client", 1)?;
    let mut nodes: Vec<&str> = webs.values().map(|(node, _)| node.as_str()).collect();
    nodes.sort_unstable();
    assert_eq!(nodes, ["n1", "n2", "n3"], "one web task per node");

    // Every replica answers the client by its address, across the nodes.
    for (task_id, (node, address)) in &webs {
        let answer = wait_for(&format!("web on {node} at {address}"), SETTLE, || {
            get_from_client(&dir, *address, 2).map(Some)
        })?;
        assert_eq!(&answer, task_id, "the task at {address} on {node}");
    }

    // By name: the service gives its VIP, tasks.SERVICE every replica.
    let vip = n1.virtual_ip("web")?;
    let all: BTreeSet<Ipv4Addr> = webs.values().map(|(_, address)| *address).collect();
    for (name, wanted) in [("web", BTreeSet::from([vip])), ("tasks.web", all.clone())] {
        wait_for(&format!("{name} to resolve in the client"), SETTLE, || {
            let found = resolve_in_client(&dir, name)?;
            Ok((found == wanted).then_some(()))
        })?;
    }
    // Connections to the VIP go to every replica, one chosen per connection.
    let answered: BTreeSet<String> = (0..40)
        .map(|_| get_from_client(&dir, "web", 2))
        .collect::<Result<_>>()?;
    assert_eq!(
        answered,
        webs.keys().cloned().collect::<BTreeSet<_>>(),
        "every replica answers behind the VIP {vip}"
    );
    // dnsrr: the name gives the tasks themselves.
    let rrs = addresses(n1, "rr", 2)?;
    let rr_addresses: BTreeSet<Ipv4Addr> = rrs.values().map(|(_, address)| *address).collect();
    wait_for("rr to resolve to its tasks", SETTLE, || {
        Ok((resolve_in_client(&dir, "rr")? == rr_addresses).then_some(()))
    })?;
    // A service on a network the client is not on has no name for it.
    assert_eq!(resolve_in_client(&dir, "other")?, BTreeSet::new());

    // A replica that dies drops out of the answers and of the VIP (its service does not
    // restart it here).
    let (victim, (_, victim_address)) = webs
        .iter()
        .find(|(_, (node, _))| node == "n3")
        .context("a web task on n3")?;
    let pid = std::fs::read_to_string(dir.join(format!("{victim}.pid")))?;
    Command::new("kill").args(["-KILL", pid.trim()]).status()?;
    let rest: BTreeSet<Ipv4Addr> = all
        .iter()
        .copied()
        .filter(|a| a != victim_address)
        .collect();
    wait_for("the dead replica to leave tasks.web", SETTLE, || {
        Ok((resolve_in_client(&dir, "tasks.web")? == rest).then_some(()))
    })?;
    wait_for(
        "the VIP to send nothing to the dead replica",
        SETTLE,
        || {
            let answers: Vec<String> = (0..20)
                .map(|_| get_from_client(&dir, vip, 2))
                .collect::<Result<_>>()?;
            Ok((!answers.contains(victim)).then_some(()))
        },
    )?;

    // The tasks of another network are out of reach, even on the client's own node, which
    // has both networks and forwards.
    for (node, address) in others.values() {
        let reached = get_from_client(&dir, *address, 2);
        assert!(
            reached.is_err(),
            "the client on front reached {address} on back (on {node}): {reached:?}"
        );
    }

    // A node that leaves the swarm stops its tasks, and with them their namespaces (and the
    // VIP rules in them) go; it takes its networks' devices down.
    let mut on_n2: Vec<String> = Vec::new();
    for service in ["web", "other", "rr"] {
        let tasks = n1.tasks(service)?;
        on_n2.extend(
            running(&tasks)
                .into_iter()
                .filter(|view| view.node_hostname.as_deref() == Some("n2"))
                .map(|view| view.task.id.clone()),
        );
    }
    assert!(!on_n2.is_empty(), "n2 runs tasks before it leaves");
    let pids: Vec<String> = on_n2
        .iter()
        .map(|id| std::fs::read_to_string(dir.join(format!("{id}.pid"))))
        .collect::<std::io::Result<_>>()?;
    cluster.node("n2").ok(&["swarm", "leave"])?;
    wait_for("no essaim device on n2 after it left", SETTLE, || {
        Ok(underlay.essaim_devices(2)?.is_empty().then_some(()))
    })?;
    for pid in &pids {
        let pid = pid.trim();
        wait_for(&format!("task process {pid} of n2 to end"), SETTLE, || {
            Ok((!Path::new(&format!("/proc/{pid}")).exists()).then_some(()))
        })?;
    }

    // With the services gone, each node takes its networks' devices down.
    for service in ["client", "web", "rr", "other"] {
        n1.ok(&["service", "rm", service])?;
    }
    for n in [1, 3] {
        wait_for(&format!("no essaim device on n{n}"), SETTLE, || {
            let left = underlay.essaim_devices(n)?;
            Ok(left.is_empty().then_some(()))
        })?;
    }
    n1.ok(&["network", "rm", "front", "back"])?;
    // Read typed: `network ls -q` prints IDs, and the JSON flattens each network into its view.
    let listed: Vec<essaim_api::control::NetworkView> =
        serde_json::from_value(n1.json(&["network", "ls"])?)?;
    let names: Vec<&str> = listed
        .iter()
        .map(|v| v.network.spec.name.as_str())
        .collect();
    assert!(
        !names.contains(&"front") && !names.contains(&"back"),
        "networks after network rm: {names:?}"
    );
    Ok(())
}
