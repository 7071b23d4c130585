//! End-to-end tests of the engine foundation: real `essaimd` processes on loopback, driven by
//! the real `essaim` command line: forming a cluster, failover, restarts, quorum, forwarding,
//! tokens, and node management.

use std::process::Output;
use std::time::{Duration, Instant};

use anyhow::Result;
use essaim_api::control::LockView;
use essaim_api::{ControlError, ControlReply, ControlRequest};
use essaim_core::model::{ServiceMode, ServiceSpec, TaskSpec};
use essaim_tests::{row, wait_for, Cluster, Daemon};
use serde_json::Value;

const SETTLE: Duration = Duration::from_secs(20);

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn manager_label(node: &Value) -> String {
    if node["manager_status"]["leader"] == Value::Bool(true) {
        return "Leader".into();
    }
    match node["manager_status"]["reachability"].as_str() {
        Some("reachable") => "Reachable".into(),
        Some("unreachable") => "Unreachable".into(),
        _ => String::new(),
    }
}

/// Waits until all three managers are voters and ready, as every multi-manager test needs.
fn three_managers() -> Result<Cluster> {
    let cluster = Cluster::start(3, 0)?;
    cluster.wait_for_nodes("m1", "three ready managers", SETTLE, |nodes| {
        nodes.len() == 3
            && nodes
                .iter()
                .all(|n| n["status"]["state"] == "ready" && !manager_label(n).is_empty())
    })?;
    Ok(cluster)
}

#[test]
fn three_managers_form_a_cluster_with_one_leader() -> Result<()> {
    let cluster = three_managers()?;
    let nodes = cluster.node_list("m2")?;
    let labels: Vec<String> = nodes.iter().map(manager_label).collect();
    assert_eq!(
        labels.iter().filter(|l| *l == "Leader").count(),
        1,
        "{labels:?}"
    );
    assert_eq!(
        labels.iter().filter(|l| *l == "Reachable").count(),
        2,
        "{labels:?}"
    );

    // The table marks the node the command ran on.
    let table = cluster.node("m3").ok(&["node", "ls"])?;
    let header = table.lines().next().unwrap_or_default();
    for column in ["ID", "HOSTNAME", "STATUS", "AVAILABILITY", "MANAGER STATUS"] {
        assert!(header.contains(column), "missing {column} in {header}");
    }
    let m3_id = cluster.node("m3").node_id()?;
    let marked: Vec<&str> = table.lines().filter(|l| l.contains(" *")).collect();
    assert_eq!(marked.len(), 1, "{table}");
    assert!(
        marked[0].contains(&m3_id) && marked[0].contains("m3"),
        "{table}"
    );
    Ok(())
}

#[test]
fn leader_kill_elects_a_new_leader_and_writes_go_on() -> Result<()> {
    let mut cluster = three_managers()?;
    let old_leader = cluster.leader("m1")?;
    let survivor = ["m1", "m2", "m3"]
        .into_iter()
        .find(|n| *n != old_leader)
        .unwrap_or("m1")
        .to_string();
    cluster.node_mut(&old_leader).kill9();
    let killed_at = Instant::now();
    // A read asked at once waits out the election instead of failing.
    let listed = cluster.node(&survivor).essaim(&["node", "ls", "-q"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    wait_for("a write through a survivor", SETTLE, || {
        Ok(cluster
            .node(&survivor)
            .ok(&["node", "update", "--label-add", "after=failover", &survivor])
            .ok())
    })?;
    eprintln!(
        "failover: first successful write {:?} after kill -9",
        killed_at.elapsed()
    );

    let new_leader = cluster.leader(&survivor)?;
    assert_ne!(new_leader, old_leader);
    let nodes = cluster.wait_for_nodes(
        &survivor,
        "the old leader marked unreachable",
        SETTLE,
        |nodes| row(nodes, &old_leader).is_some_and(|n| manager_label(n) == "Unreachable"),
    )?;
    let updated = row(&nodes, &survivor).expect("survivor listed");
    assert_eq!(updated["spec"]["labels"]["after"], "failover");

    // The old leader comes back as a follower and catches up.
    cluster.node_mut(&old_leader).restart()?;
    cluster.wait_for_nodes(
        &old_leader,
        "the old leader to rejoin as reachable",
        SETTLE,
        |nodes| {
            row(nodes, &old_leader).is_some_and(|n| manager_label(n) == "Reachable")
                && row(nodes, &survivor).is_some_and(|n| n["spec"]["labels"]["after"] == "failover")
        },
    )?;
    Ok(())
}

#[test]
fn a_full_stop_and_restart_keeps_nodes_labels_roles_and_tokens() -> Result<()> {
    let mut cluster = Cluster::start(3, 1)?;
    cluster.wait_for_nodes("m1", "four ready nodes", SETTLE, |nodes| {
        nodes.len() == 4 && nodes.iter().all(|n| n["status"]["state"] == "ready")
    })?;
    cluster
        .node("m1")
        .ok(&["node", "update", "--label-add", "zone=a", "w1"])?;
    cluster
        .node("m1")
        .ok(&["node", "update", "--availability", "drain", "m3"])?;
    let token = cluster
        .node("m2")
        .ok(&["swarm", "join-token", "-q", "worker"])?;
    let before = cluster.node_list("m1")?;

    // kill -9 everybody: acknowledged writes must survive a crash, not only a clean stop.
    for node in &mut cluster.nodes {
        node.kill9();
    }
    for node in &mut cluster.nodes {
        node.restart()?;
    }
    let after = cluster.wait_for_nodes("m2", "the cluster back, all ready", SETTLE, |nodes| {
        nodes.len() == 4
            && nodes.iter().all(|n| n["status"]["state"] == "ready")
            && nodes.iter().any(|n| manager_label(n) == "Leader")
    })?;
    for node in &before {
        let id = node["id"].as_str().expect("id");
        let again = after.iter().find(|n| n["id"] == id).expect("node kept");
        assert_eq!(
            again["spec"], node["spec"],
            "spec of {id}: before {before:#?} after {after:#?}"
        );
        assert_eq!(
            again["description"], node["description"],
            "description of {id}"
        );
    }
    assert_eq!(
        row(&after, "w1").expect("w1")["spec"]["labels"]["zone"],
        "a"
    );
    assert_eq!(
        row(&after, "m3").expect("m3")["spec"]["availability"],
        "drain"
    );
    assert_eq!(
        cluster
            .node("m3")
            .ok(&["swarm", "join-token", "-q", "worker"])?,
        token
    );
    Ok(())
}

/// Runs an essaim command on a thread and gives up on it after `limit`, so a command that
/// hangs fails the test instead of blocking it.
fn within(limit: Duration, daemon: &essaim_tests::Daemon, args: &[&str]) -> Option<Output> {
    let exe = essaim_tests::essaim_path();
    let mut command = std::process::Command::new(exe);
    command
        .arg("-H")
        .arg(format!("unix://{}", daemon.socket().display()))
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = command.spawn().expect("spawn essaim");
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return child.wait_with_output().ok();
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn a_minority_cannot_write_and_says_no_quorum_instead_of_hanging() -> Result<()> {
    let mut cluster = three_managers()?;
    cluster.node_mut("m2").kill9();
    cluster.node_mut("m3").kill9();
    // Whether m1 was the leader or a follower, the write must fail clearly, not hang.
    let out = within(
        Duration::from_secs(15),
        cluster.node("m1"),
        &["node", "update", "--label-add", "x=y", "m1"],
    )
    .expect("the write returned instead of hanging");
    assert!(!out.status.success());
    assert_eq!(
        out.status.code(),
        Some(3),
        "unreachable exit code; {}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("no quorum"), "{}", stderr(&out));

    // Quorum back: writes work again.
    cluster.node_mut("m2").restart()?;
    wait_for("a write once quorum is back", SETTLE, || {
        Ok(cluster
            .node("m1")
            .ok(&["node", "update", "--label-add", "x=y", "m1"])
            .ok())
    })?;
    Ok(())
}

#[test]
fn a_follower_cut_off_from_the_others_fails_a_write_soon_and_says_why() -> Result<()> {
    let cluster = three_managers()?;
    let leader = cluster.leader("m1")?;
    let managers = ["m1", "m2", "m3"];
    let cut_off = managers
        .into_iter()
        .find(|n| *n != leader)
        .expect("a follower");
    let others: Vec<&str> = managers.into_iter().filter(|n| *n != cut_off).collect();
    // The others stop answering but keep their connections open, as when the network drops
    // the follower's packets: a call to the leader gets no answer and no error either.
    for other in &others {
        cluster.node(other).freeze();
    }
    let out = within(
        Duration::from_secs(5),
        cluster.node(cut_off),
        &["node", "update", "--label-add", "x=y", cut_off],
    );
    for other in &others {
        cluster.node(other).thaw();
    }
    let out = out.expect("the write failed within 5 s instead of hanging");
    assert!(!out.status.success());
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("heard nothing from a leader")
            && stderr(&out).contains("cannot reach a majority of the 3 managers"),
        "{}",
        stderr(&out)
    );

    // The others answer again: so do writes through the follower.
    wait_for("a write once the others answer again", SETTLE, || {
        Ok(cluster
            .node(cut_off)
            .ok(&["node", "update", "--label-add", "x=y", cut_off])
            .ok())
    })?;
    Ok(())
}

#[test]
fn a_write_right_after_the_leader_dies_waits_out_the_election() -> Result<()> {
    let mut cluster = three_managers()?;
    cluster.node("m1").ok(&[
        "service",
        "create",
        "--name",
        "web",
        "--replicas",
        "0",
        "busybox",
    ])?;
    for round in 0..3 {
        let old_leader = cluster.leader("m1")?;
        let survivor = ["m1", "m2", "m3"]
            .into_iter()
            .find(|n| *n != old_leader)
            .expect("a survivor")
            .to_string();
        cluster.node_mut(&old_leader).kill9();
        // At once: the survivor still names the dead leader, whose port refuses the call.
        // Nothing reached it, so the survivor waits for the new leader and sends it there.
        let replicas = format!("web={round}");
        let out = cluster
            .node(&survivor)
            .essaim(&["service", "scale", "--detach", &replicas]);
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        cluster.node_mut(&old_leader).restart()?;
        wait_for("the old leader back", SETTLE, || {
            Ok(cluster.node(&old_leader).ok(&["node", "ls", "-q"]).ok())
        })?;
    }
    Ok(())
}

#[test]
fn writes_through_a_follower_reach_the_leader_and_every_manager_reads_them() -> Result<()> {
    let cluster = three_managers()?;
    let leader = cluster.leader("m1")?;
    let followers: Vec<&str> = ["m1", "m2", "m3"]
        .into_iter()
        .filter(|n| *n != leader)
        .collect();
    cluster.node(followers[0]).ok(&[
        "node",
        "update",
        "--label-add",
        "written=via-follower",
        &leader,
    ])?;
    // Read through the other follower right away: reads go to the leader, so the writer's
    // write is there with no waiting.
    let nodes = cluster.node_list(followers[1])?;
    assert_eq!(
        row(&nodes, &leader).expect("leader listed")["spec"]["labels"]["written"],
        "via-follower"
    );
    // A stale version is refused: someone else changed the node since it was read.
    let version = row(&nodes, &leader).expect("leader")["version"]
        .as_u64()
        .expect("version");
    cluster
        .node(followers[0])
        .ok(&["node", "update", "--label-add", "second=1", &leader])?;
    let inspect = cluster
        .node(followers[1])
        .json(&["node", "inspect", &leader])?;
    let newer = inspect[0]["version"].as_u64().expect("version");
    assert!(newer > version);
    Ok(())
}

#[test]
fn join_tokens_are_checked_and_rotation_invalidates_the_old_one() -> Result<()> {
    let mut cluster = Cluster::start(1, 0)?;
    let old = cluster
        .node("m1")
        .ok(&["swarm", "join-token", "-q", "worker"])?;
    let rotated = cluster
        .node("m1")
        .ok(&["swarm", "join-token", "--rotate", "worker"])?;
    assert!(
        rotated.contains("Successfully rotated worker join token"),
        "{rotated}"
    );
    let new = cluster
        .node("m1")
        .ok(&["swarm", "join-token", "-q", "worker"])?;
    assert_ne!(old.trim(), new.trim());
    let manager_addr = cluster.node("m1").addr();

    let w1 = cluster.add("w1")?;
    let w1_addr = w1.addr();
    let join = |daemon: &essaim_tests::Daemon, token: &str| {
        daemon.essaim(&[
            "swarm",
            "join",
            "--token",
            token,
            "--advertise-addr",
            &w1_addr,
            &manager_addr,
        ])
    };
    let w1 = cluster.node("w1");
    let out = join(w1, old.trim());
    assert!(!out.status.success());
    assert!(stderr(&out).contains("rotated"), "{}", stderr(&out));

    let truncated = &new.trim()[..new.trim().len() - 4];
    let out = join(w1, truncated);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("malformed join token"),
        "{}",
        stderr(&out)
    );

    // A well-formed token of another cluster.
    let mut other = Cluster::start(1, 0)?;
    let foreign = other
        .node("m1")
        .ok(&["swarm", "join-token", "-q", "worker"])?;
    other.nodes[0].kill9();
    // The joiner sees at once, from the manager's certificate, that the token's CA is not
    // this cluster's, and sends nothing.
    let out = join(w1, foreign.trim());
    assert!(
        stderr(&out).contains("does not belong to the cluster this token is for"),
        "{}",
        stderr(&out)
    );

    // Nothing was half-made by the refused joins: the node is still free, and joins for real.
    assert_eq!(w1.json(&["info"])?["swarm"], "inactive");
    let out = join(w1, new.trim());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("joined a swarm as a worker"));
    cluster.wait_for_nodes("m1", "w1 ready", SETTLE, |nodes| {
        row(nodes, "w1")
            .is_some_and(|n| n["status"]["state"] == "ready" && n["spec"]["role"] == "worker")
    })?;
    Ok(())
}

#[test]
fn promote_demote_leave_and_rm() -> Result<()> {
    let cluster = Cluster::start(1, 2)?;
    let m1 = cluster.node("m1");
    cluster.wait_for_nodes("m1", "workers ready", SETTLE, |nodes| {
        nodes.len() == 3 && nodes.iter().all(|n| n["status"]["state"] == "ready")
    })?;

    // A worker cannot read the cluster state.
    let out = cluster.node("w1").essaim(&["node", "ls"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not a manager"), "{}", stderr(&out));

    let out = m1.ok(&["node", "promote", "w1", "w2"])?;
    assert!(out.contains("promoted to a manager"), "{out}");
    let nodes = cluster.wait_for_nodes("m1", "three managers", SETTLE, |nodes| {
        nodes
            .iter()
            .filter(|n| !manager_label(n).is_empty())
            .count()
            == 3
    })?;
    assert_eq!(row(&nodes, "w1").expect("w1")["spec"]["role"], "manager");
    // A promoted node now answers manager commands itself.
    assert_eq!(cluster.node_list("w2")?.len(), 3);

    let out = m1.ok(&["node", "demote", "w2"])?;
    assert!(out.contains("demoted"), "{out}");
    cluster.wait_for_nodes("m1", "w2 a worker again", SETTLE, |nodes| {
        row(nodes, "w2")
            .is_some_and(|n| manager_label(n).is_empty() && n["spec"]["role"] == "worker")
    })?;

    // A manager cannot be removed, a live worker needs --force.
    let out = m1.essaim(&["node", "rm", "w1"]);
    assert!(stderr(&out).contains("demote it first"), "{}", stderr(&out));
    let out = m1.essaim(&["node", "rm", "w2"]);
    assert!(stderr(&out).contains("not down"), "{}", stderr(&out));

    // A worker leaves: it shows down, then rm removes it.
    let w2 = cluster.node("w2");
    assert!(w2.ok(&["swarm", "leave"])?.contains("Node left the swarm"));
    assert_eq!(w2.json(&["info"])?["swarm"], "inactive");
    cluster.wait_for_nodes("m1", "w2 down after leaving", SETTLE, |nodes| {
        row(nodes, "w2").is_some_and(|n| n["status"]["state"] == "down")
    })?;
    m1.ok(&["node", "rm", "w2"])?;
    assert!(row(&cluster.node_list("m1")?, "w2").is_none());

    // A manager may leave when the others still make a quorum: w1 (a manager) leaves, m1
    // stays as the one manager.
    cluster.node("w1").ok(&["swarm", "leave"])?;
    cluster.wait_for_nodes("m1", "w1 out of the managers", SETTLE, |nodes| {
        row(nodes, "w1")
            .is_some_and(|n| manager_label(n).is_empty() && n["status"]["state"] == "down")
    })?;

    // The last manager leaves only with --force.
    let out = m1.essaim(&["swarm", "leave"]);
    assert!(stderr(&out).contains("last manager"), "{}", stderr(&out));
    m1.ok(&["swarm", "leave", "--force"])?;
    assert_eq!(m1.json(&["info"])?["swarm"], "inactive");
    Ok(())
}

#[test]
fn a_killed_worker_is_marked_down_and_ready_again_when_it_returns() -> Result<()> {
    let mut cluster = Cluster::start(1, 1)?;
    cluster.wait_for_nodes("m1", "w1 ready", SETTLE, |nodes| {
        row(nodes, "w1").is_some_and(|n| n["status"]["state"] == "ready")
    })?;
    cluster.node_mut("w1").kill9();
    cluster.wait_for_nodes("m1", "w1 down", SETTLE, |nodes| {
        row(nodes, "w1").is_some_and(|n| n["status"]["state"] == "down")
    })?;
    cluster.node_mut("w1").restart()?;
    cluster.wait_for_nodes("m1", "w1 ready again", SETTLE, |nodes| {
        row(nodes, "w1").is_some_and(|n| n["status"]["state"] == "ready")
    })?;
    Ok(())
}

#[test]
fn bad_input_gets_one_clear_line_and_changes_nothing() -> Result<()> {
    let mut cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");

    let out = m1.essaim(&["node", "inspect", "nosuchnode"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("nosuchnode") && stderr(&out).contains("not found"),
        "{}",
        stderr(&out)
    );
    // A typo of a known name is answered with it.
    let out = m1.essaim(&["node", "inspect", "m2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains(r#"node "m2" not found; did you mean "m1"?"#),
        "{}",
        stderr(&out)
    );

    let out = m1.essaim(&["swarm", "init"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("already part of a swarm"),
        "{}",
        stderr(&out)
    );

    let out = m1.essaim(&["node", "ls", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));

    let out = m1.essaim(&["node", "update", "--availability", "sleepy", "m1"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--availability"), "{}", stderr(&out));

    let token = m1.ok(&["swarm", "join-token", "-q", "worker"])?;
    cluster.add("w1")?;
    let fresh = cluster.node("w1");
    let m1 = cluster.node("m1");
    let out = fresh.essaim(&["swarm", "join", "--token", token.trim(), "not-an-address"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("not-an-address"), "{}", stderr(&out));

    // Nobody listens on this port: unreachable, said at once, and the node stays free.
    let nobody = format!("127.0.0.1:{}", essaim_tests::free_port());
    let out = fresh.essaim(&["swarm", "join", "--token", token.trim(), &nobody]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains(&nobody), "{}", stderr(&out));
    assert_eq!(fresh.json(&["info"])?["swarm"], "inactive");

    // Not in a swarm yet: cluster commands say what to do.
    let out = fresh.essaim(&["node", "ls"]);
    assert!(stderr(&out).contains("swarm init"), "{}", stderr(&out));

    // Errors are one line.
    let out = m1.essaim(&["node", "inspect", "nosuchnode"]);
    assert_eq!(stderr(&out).trim().lines().count(), 1, "{}", stderr(&out));
    Ok(())
}

#[test]
fn the_local_socket_is_owner_only() -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let cluster = Cluster::start(1, 0)?;
    let mode = std::fs::metadata(cluster.node("m1").socket())?
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    Ok(())
}

#[test]
fn a_manager_cannot_leave_when_the_rest_would_lose_quorum() -> Result<()> {
    let mut cluster = three_managers()?;
    cluster.node_mut("m3").kill9();
    // m3 is down: if m2 left too, m1 and the dead m3 would remain, and m1 alone is no quorum.
    cluster.wait_for_nodes("m1", "m3 unreachable", SETTLE, |nodes| {
        row(nodes, "m3").is_some_and(|n| manager_label(n) == "Unreachable")
    })?;
    let out = cluster.node("m2").essaim(&["swarm", "leave"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(stderr(&out).contains("quorum"), "{}", stderr(&out));
    // Refused means unchanged: m2 is still a manager in the swarm.
    assert_eq!(cluster.node("m2").json(&["info"])?["is_manager"], true);
    let out = cluster.node("m1").essaim(&["node", "demote", "m2"]);
    assert!(stderr(&out).contains("quorum"), "{}", stderr(&out));
    Ok(())
}

#[test]
fn snapshots_compact_the_log_and_bring_new_managers_up_to_date() -> Result<()> {
    // Snapshots every 20 entries, so a few dozen writes compact the log.
    let env = [("ESSAIM_RAFT_SNAPSHOT_INTERVAL", "20")];
    let mut cluster = Cluster::empty()?;
    cluster.add_with_env("m1", &env)?;
    let m1 = cluster.node("m1");
    m1.ok(&["swarm", "init", "--advertise-addr", &m1.addr()])?;
    for i in 0..60 {
        m1.ok(&["node", "update", "--label-add", &format!("step={i}"), "m1"])?;
    }
    let token = m1.ok(&["swarm", "join-token", "-q", "manager"])?;
    let leader_addr = m1.addr();
    for name in ["m2", "m3"] {
        cluster
            .add_with_env(name, &env)?
            .join(&token, &leader_addr)?;
    }
    // The log they needed was compacted away: they caught up from a snapshot.
    for name in ["m2", "m3"] {
        wait_for(&format!("{name} to install a snapshot"), SETTLE, || {
            Ok(cluster
                .node(name)
                .logs()
                .contains("installed a snapshot")
                .then_some(()))
        })?;
    }
    let nodes = three_reachable(&cluster, "m3")?;
    assert_eq!(
        row(&nodes, "m1").expect("m1")["spec"]["labels"]["step"],
        "59"
    );

    // A crash of everyone: state comes back from the snapshot plus the log after it.
    for node in &mut cluster.nodes {
        node.kill9();
    }
    for node in &mut cluster.nodes {
        node.restart()?;
    }
    let nodes = three_reachable(&cluster, "m2")?;
    assert_eq!(
        row(&nodes, "m1").expect("m1")["spec"]["labels"]["step"],
        "59"
    );
    Ok(())
}

fn three_reachable(cluster: &Cluster, via: &str) -> Result<Vec<Value>> {
    cluster.wait_for_nodes(via, "three reachable managers", SETTLE, |nodes| {
        nodes.len() == 3
            && nodes
                .iter()
                .all(|n| matches!(manager_label(n).as_str(), "Leader" | "Reachable"))
    })
}

#[test]
fn concurrent_label_updates_without_a_version_all_land() -> Result<()> {
    let cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");
    // Each update reads the node and writes it back: without a version from the caller, one
    // that loses the race to another is merged again rather than refused.
    let outputs: Vec<Output> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let label = format!("k{i}=v{i}");
                scope.spawn(move || m1.essaim(&["node", "update", "--label-add", &label, "m1"]))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("the thread ran"))
            .collect()
    });
    for output in &outputs {
        assert!(output.status.success(), "{}", stderr(output));
    }
    let node = m1.json(&["node", "inspect", "m1"])?;
    let labels = node[0]["spec"]["labels"]
        .as_object()
        .map(|l| l.len())
        .unwrap_or(0);
    assert_eq!(labels, 16, "{node}");
    Ok(())
}

/// Sends `WaitChange` to `daemon` and returns the index it answers with.
fn wait_change(daemon: &Daemon, after_index: u64, timeout_ms: u64) -> Result<u64> {
    match daemon.control(&ControlRequest::WaitChange {
        after_index,
        timeout_ms,
    })? {
        ControlReply::Changed { index } => Ok(index),
        other => anyhow::bail!("unexpected reply {other:?}"),
    }
}

#[test]
fn wait_change_answers_when_the_state_moves_or_the_time_runs_out() -> Result<()> {
    let mut cluster = Cluster::start(1, 0)?;
    let m1 = cluster.node("m1");

    // A past index is answered at once, with the current one; a long timeout shows it did not
    // wait for it.
    let asked = Instant::now();
    let current = wait_change(m1, 0, 30_000)?;
    assert!(current > 0, "init applied entries");
    assert!(asked.elapsed() < Duration::from_secs(20));
    assert_eq!(wait_change(m1, current - 1, 30_000)?, current);

    // Nothing changes: the wait runs out and says where things still stand.
    assert_eq!(wait_change(m1, current, 300)?, current);

    // Something changes: a wait from the current index answers with a later one.
    let index = std::thread::scope(|scope| -> Result<u64> {
        let waiter = scope.spawn(|| wait_change(m1, current, 30_000));
        std::thread::sleep(Duration::from_millis(500));
        assert!(!waiter.is_finished(), "answered before anything changed");
        let spec = ServiceSpec {
            name: "web".to_string(),
            labels: Default::default(),
            mode: ServiceMode::Replicated { replicas: 0 },
            task: TaskSpec {
                image: "sleep".to_string(),
                args: vec!["3600".to_string()],
                ..Default::default()
            },
            ports: vec![],
            update_config: Default::default(),
            rollback_config: Default::default(),
            endpoint_mode: Default::default(),
        };
        m1.control(&ControlRequest::ServiceCreate { spec })?;
        waiter.join().expect("the waiter ran")
    })?;
    assert!(index > current, "{index} after {current}");

    // A worker keeps no cluster state to wait on, and says so.
    let w1 = cluster.add_worker("w1")?;
    let refused = wait_change(w1, 0, 0).map_err(|e| e.downcast::<ControlError>());
    assert!(
        matches!(&refused, Err(Ok(ControlError::FailedPrecondition(m))) if m.contains("not a manager")),
        "{refused:?}"
    );

    // A daemon asked to stop answers its waiters at once, rather than holding them, and its own
    // exit, for their whole timeout.
    let m1 = cluster.node("m1");
    let pid = m1.pid().expect("m1 runs");
    let asked = Instant::now();
    let answer = std::thread::scope(|scope| {
        let waiter = scope.spawn(|| wait_change(m1, u64::MAX, 30_000));
        std::thread::sleep(Duration::from_millis(500));
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        waiter.join().expect("the waiter ran")
    });
    assert!(answer.is_ok(), "{answer:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(20),
        "{:?}",
        asked.elapsed()
    );
    Ok(())
}

fn lock_acquire(holder: &str, ttl_ms: u64) -> ControlRequest {
    ControlRequest::LockAcquire {
        name: "nightly".to_string(),
        holder: holder.to_string(),
        ttl_ms,
    }
}

fn lock_renew(holder: &str, ttl_ms: u64) -> ControlRequest {
    ControlRequest::LockRenew {
        name: "nightly".to_string(),
        holder: holder.to_string(),
        ttl_ms,
    }
}

fn lock_release(holder: &str) -> ControlRequest {
    ControlRequest::LockRelease {
        name: "nightly".to_string(),
        holder: holder.to_string(),
    }
}

/// Sends a lock request that answers with a lease.
fn lock(daemon: &Daemon, request: &ControlRequest) -> Result<LockView> {
    match daemon.control(request)? {
        ControlReply::Lock(view) => Ok(view),
        other => anyhow::bail!("unexpected reply {other:?}"),
    }
}

#[test]
fn a_lock_has_one_holder_until_its_lease_runs_out_and_survives_a_leader_change() -> Result<()> {
    let mut cluster = three_managers()?;
    let m1 = cluster.node("m1");

    // Through m1, whether it leads or passes the requests on.
    let a = lock(m1, &lock_acquire("A", 1000))?;
    assert!(a.acquired && a.holder == "A", "{a:?}");
    assert!(a.expires_in_ms <= 1000, "{a:?}");
    // Another holder is told who has the lock: an answer, not an error.
    let b = lock(m1, &lock_acquire("B", 1000))?;
    assert!(!b.acquired && b.holder == "A", "{b:?}");
    let renewed_at = Instant::now();
    let a = lock(m1, &lock_renew("A", 1000))?;
    assert!(a.acquired, "{a:?}");

    // A stops renewing: once its lease runs out, and not before, B gets the lock.
    let b = wait_for("B to take the lock after A's lease ran out", SETTLE, || {
        let view = lock(m1, &lock_acquire("B", 1000))?;
        Ok(view.acquired.then_some(view))
    })?;
    assert_eq!(b.holder, "B");
    assert!(
        renewed_at.elapsed() >= Duration::from_millis(950),
        "B got the lock {:?} after A renewed a 1 s lease",
        renewed_at.elapsed()
    );
    // A lost it: renewing and releasing are refused, and say who holds it now.
    for request in [lock_renew("A", 1000), lock_release("A")] {
        let refused = m1.control(&request);
        assert!(
            matches!(&refused, Err(ControlError::FailedPrecondition(m)) if m.contains("\"B\"")),
            "{request:?}: {refused:?}"
        );
    }
    let refused = m1.control(&lock_acquire("A", 10));
    assert!(
        matches!(&refused, Err(ControlError::InvalidArgument(m)) if m.starts_with("ttl_ms")),
        "{refused:?}"
    );
    assert_eq!(m1.control(&lock_release("B"))?, ControlReply::Done);
    let a = lock(m1, &lock_acquire("A", 60_000))?;
    assert!(a.acquired, "{a:?}");

    // The lease is in the Raft log: a new leader knows who holds the lock.
    let old_leader = cluster.leader("m1")?;
    let survivor = ["m1", "m2", "m3"]
        .into_iter()
        .find(|n| *n != old_leader)
        .unwrap_or("m1")
        .to_string();
    cluster.node_mut(&old_leader).kill9();
    let survivor = cluster.node(&survivor);
    let locks = wait_for("a new leader to list the locks", SETTLE, || {
        let listed = survivor.control(&ControlRequest::LockList)?;
        match listed {
            ControlReply::Locks(locks) => Ok(Some(locks)),
            other => anyhow::bail!("unexpected reply {other:?}"),
        }
    })?;
    assert_eq!(locks.len(), 1, "{locks:?}");
    assert!(
        locks[0].name == "nightly" && locks[0].holder == "A" && locks[0].acquired,
        "{locks:?}"
    );
    let b = lock(survivor, &lock_acquire("B", 1000))?;
    assert!(!b.acquired && b.holder == "A", "{b:?}");
    Ok(())
}

#[test]
fn every_acknowledged_write_survives_the_leader_killed_again_and_again() -> Result<()> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    let mut cluster = three_managers()?;
    let sockets: Vec<(String, std::path::PathBuf)> = ["m1", "m2", "m3"]
        .iter()
        .map(|n| (n.to_string(), cluster.node(n).socket()))
        .collect();
    // The managers that are up, which the writer goes through, each in turn.
    let up: Arc<Mutex<Vec<String>>> = Arc::new(Mutex::new(
        sockets.iter().map(|(name, _)| name.clone()).collect(),
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let written = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (up, stop, sockets) = (up.clone(), stop.clone(), sockets.clone());
        let written = written.clone();
        std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            let mut attempt = 0usize;
            while !stop.load(Ordering::SeqCst) {
                attempt += 1;
                let through = {
                    let up = up.lock().expect("lock");
                    up[attempt % up.len()].clone()
                };
                let socket = &sockets
                    .iter()
                    .find(|(n, _)| *n == through)
                    .expect("known")
                    .1;
                let key = format!("w{attempt}");
                let out = std::process::Command::new(essaim_tests::essaim_path())
                    .arg("-H")
                    .arg(format!("unix://{}", socket.display()))
                    .args(["node", "update", "--label-add", &format!("{key}=1"), "m1"])
                    .stdin(std::process::Stdio::null())
                    .output()
                    .expect("essaim runs");
                if out.status.success() {
                    acknowledged.push(key);
                    written.fetch_add(1, Ordering::SeqCst);
                }
            }
            acknowledged
        })
    };
    for round in 0..4 {
        let leader = cluster.leader(&up.lock().expect("lock")[0])?;
        up.lock().expect("lock").retain(|n| *n != leader);
        cluster.node_mut(&leader).kill9();
        let survivor = up.lock().expect("lock")[0].clone();
        wait_for(&format!("a new leader after kill {round}"), SETTLE, || {
            Ok(cluster.leader(&survivor).ok().filter(|l| *l != leader))
        })?;
        cluster.node_mut(&leader).restart()?;
        up.lock().expect("lock").push(leader);
        // Writes go on through the new leader before the next kill.
        let before = written.load(Ordering::SeqCst);
        wait_for(&format!("writes after kill {round}"), SETTLE, || {
            Ok((written.load(Ordering::SeqCst) >= before + 5).then_some(()))
        })?;
    }
    stop.store(true, Ordering::SeqCst);
    let acknowledged = writer.join().expect("writer");
    assert!(
        acknowledged.len() > 20,
        "too few writes: {}",
        acknowledged.len()
    );
    // Read through each manager, the ones killed included: every acknowledged write is there.
    for manager in ["m1", "m2", "m3"] {
        cluster.wait_for_nodes(manager, "every acknowledged write", SETTLE, |nodes| {
            row(nodes, "m1").is_some_and(|m1| {
                acknowledged
                    .iter()
                    .all(|key| m1["spec"]["labels"][key.as_str()] == "1")
            })
        })?;
    }
    eprintln!(
        "{} acknowledged writes through 4 kills of the leader",
        acknowledged.len()
    );
    Ok(())
}
