//! End-to-end tests of the routing mesh with the process runtime: three `essaimd`, each in a
//! network namespace of its own on an underlay bridge, and a client machine on the same
//! underlay outside the cluster. Each task is `essaim-test-server`, which answers every
//! request with its task ID and the client address it sees.
//!
//! Needs root (network namespaces); skipped with a message otherwise.

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use essaim_tests::docker::install_test_deps;
use essaim_tests::underlay::{is_root, Underlay};
use essaim_tests::{running, wait_for, Daemon};

const SETTLE: Duration = Duration::from_secs(30);
const SERVER: &str = env!("CARGO_BIN_EXE_essaim-test-server");

/// One answer of a test server: which task answered, and whom it saw.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Answer {
    task: String,
    client: Ipv4Addr,
}

impl Answer {
    fn parse(text: &str) -> Result<Answer> {
        let mut words = text.split_whitespace();
        let (Some(task), Some(client)) = (words.next(), words.next()) else {
            bail!("not an answer of the test server: {text:?}");
        };
        Ok(Answer {
            task: task.to_string(),
            client: client.parse()?,
        })
    }
}

/// `GET /` to `address`, from wherever the calling thread's network namespace is.
fn get(address: SocketAddr) -> Result<Answer> {
    let timeout = Duration::from_secs(2);
    let mut stream = TcpStream::connect_timeout(&address, timeout)
        .with_context(|| format!("connecting to {address}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut reply = String::new();
    stream
        .read_to_string(&mut reply)
        .with_context(|| format!("reading from {address}"))?;
    let Some((head, body)) = reply.split_once("\r\n\r\n") else {
        bail!("no HTTP answer from {address}: {reply:?}");
    };
    if !head.starts_with("HTTP/1.0 200") {
        bail!("{address} answered {head}");
    }
    Answer::parse(body)
}

/// One datagram to `address`, and its answer.
fn ask_udp(address: SocketAddr) -> Result<Answer> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(Duration::from_millis(500)))?;
    socket.send_to(b"who?", address)?;
    let mut buffer = [0u8; 256];
    let (length, _) = socket.recv_from(&mut buffer)?;
    Answer::parse(&String::from_utf8_lossy(&buffer[..length]))
}

/// A service of test servers listening on `protocol` port `target`, published as `publish`.
fn serve(
    manager: &Daemon,
    name: &str,
    publish: &str,
    (protocol, target): (&str, &str),
    extra: &[&str],
) -> Result<()> {
    let mut args = vec![
        "service",
        "create",
        "--detach",
        "--name",
        name,
        "--publish",
        publish,
        "--stop-grace-period",
        "1s",
    ];
    args.extend_from_slice(extra);
    args.extend_from_slice(&[SERVER, protocol, target]);
    manager.ok(&args)?;
    Ok(())
}

/// The IDs of the running tasks of `service`, once there are `count`.
fn running_ids(manager: &Daemon, service: &str, count: usize) -> Result<BTreeSet<String>> {
    wait_for(
        &format!("{count} running tasks of {service}"),
        SETTLE,
        || {
            let tasks = manager.tasks(service)?;
            let up: BTreeSet<String> = running(&tasks).iter().map(|t| t.task.id.clone()).collect();
            Ok((up.len() == count).then_some(up))
        },
    )
}

/// The task IDs that answer on `address` from outside, over `tries` requests.
fn answering(underlay: &Underlay, address: SocketAddr, tries: usize) -> Result<BTreeSet<String>> {
    Underlay::run_in(&underlay.outside(), || {
        (0..tries)
            .map(|_| get(address).map(|a| a.task))
            .collect::<Result<BTreeSet<String>>>()
    })?
}

fn on(underlay: &Underlay, node: usize, port: u16) -> SocketAddr {
    SocketAddr::from((underlay.ip(node), port))
}

/// Requests through `address` from outside, one after the other, until `done` is set; the
/// answers and the errors.
fn request_loop(
    underlay: &Underlay,
    address: SocketAddr,
    done: &AtomicBool,
) -> Result<(Vec<Answer>, Vec<String>)> {
    Underlay::run_in(&underlay.outside(), || {
        let (mut answers, mut errors) = (Vec::new(), Vec::new());
        while !done.load(Ordering::Relaxed) {
            match get(address) {
                Ok(answer) => answers.push(answer),
                Err(error) => errors.push(format!("{error:#}")),
            }
        }
        (answers, errors)
    })
}

/// Runs `change` while a request loop goes through `address`; the loop's answers once the
/// change is done, and no error.
fn no_error_during(
    underlay: &Underlay,
    address: SocketAddr,
    change: impl FnOnce() -> Result<()>,
) -> Result<Vec<Answer>> {
    let done = AtomicBool::new(false);
    let (changed, looped) = std::thread::scope(|scope| {
        let looping = scope.spawn(|| request_loop(underlay, address, &done));
        let changed = change();
        done.store(true, Ordering::Relaxed);
        (changed, looping.join())
    });
    changed?;
    let (answers, errors) = looped.map_err(|_| anyhow::anyhow!("the request loop panicked"))??;
    assert!(
        errors.is_empty(),
        "{} of {} requests failed, first: {}",
        errors.len(),
        errors.len() + answers.len(),
        errors[0]
    );
    assert!(
        answers.len() > 20,
        "the loop ran: {} answers",
        answers.len()
    );
    Ok(answers)
}

fn skip() -> bool {
    if !is_root() {
        eprintln!("skipped: nodes in network namespaces need root");
        return true;
    }
    false
}

#[test]
fn a_published_port_answers_on_every_node_from_every_replica_and_through_changes() -> Result<()> {
    if skip() {
        return Ok(());
    }
    install_test_deps()?;
    let underlay = Underlay::new(3)?;
    let mut cluster = underlay.swarm()?;
    let n1 = cluster.node("n1");
    serve(
        n1,
        "web",
        "8000:8080",
        ("tcp", "8080"),
        &["--replicas", "3"],
    )?;
    let replicas = running_ids(n1, "web", 3)?;

    // Every node answers, managers included, from every replica wherever it runs.
    for node in 1..=3 {
        wait_for(
            &format!("n{node}:8000 to reach every replica"),
            SETTLE,
            || {
                let seen = answering(&underlay, on(&underlay, node, 8000), 30)?;
                Ok((seen == replicas).then_some(()))
            },
        )?;
    }
    // The client's address is kept when the task chosen runs on the node that took the
    // connection; a task on another node sees that node's ingress address.
    let tasks = n1.tasks("web")?;
    let local_to_n1: BTreeSet<String> = running(&tasks)
        .iter()
        .filter(|t| t.node_hostname.as_deref() == Some("n1"))
        .map(|t| t.task.id.clone())
        .collect();
    let answers: Vec<Answer> = Underlay::run_in(&underlay.outside(), || {
        (0..30)
            .map(|_| get(on(&underlay, 1, 8000)))
            .collect::<Result<Vec<_>>>()
    })??;
    for answer in &answers {
        let kept = answer.client == underlay.outside_ip();
        assert_eq!(
            kept,
            local_to_n1.contains(&answer.task),
            "{answer:?} (tasks on n1: {local_to_n1:?})"
        );
    }

    // A start-first update through n1: no request fails, and the new tasks answer.
    let n1 = cluster.node("n1");
    let answers = no_error_during(&underlay, on(&underlay, 1, 8000), || {
        n1.ok(&[
            "service",
            "update",
            "--update-order",
            "start-first",
            "--env-add",
            "VERSION=2",
            "web",
        ])?;
        Ok(())
    })?;
    let updated = running_ids(n1, "web", 3)?;
    assert!(updated.is_disjoint(&replicas), "every task replaced");
    let last: BTreeSet<&str> = answers
        .iter()
        .rev()
        .take(10)
        .map(|a| a.task.as_str())
        .collect();
    assert!(
        last.iter().all(|task| updated.contains(*task)),
        "the last answers come from the new tasks: {last:?}"
    );
    // Scaling down: no request fails either.
    no_error_during(&underlay, on(&underlay, 2, 8000), || {
        n1.ok(&["service", "scale", "web=1"])?;
        wait_for("web to be down to one task", SETTLE, || {
            let tasks = n1.tasks("web")?;
            let live = tasks
                .iter()
                .filter(|t| !t.task.status.state.is_terminal())
                .count();
            Ok((live == 1).then_some(()))
        })
    })?;

    // A node killed outright: once it is down, the others answer every request again.
    n1.ok(&["service", "scale", "web=3"])?;
    running_ids(n1, "web", 3)?;
    cluster.node_mut("n3").kill9();
    let n1 = cluster.node("n1");
    for node in [1, 2] {
        wait_for(
            &format!("n{node}:8000 to answer every request without n3"),
            SETTLE,
            || {
                let all_answered = Underlay::run_in(&underlay.outside(), || {
                    (0..20).all(|_| get(on(&underlay, node, 8000)).is_ok())
                })?;
                Ok(all_answered.then_some(()))
            },
        )?;
    }
    let tasks = n1.tasks("web")?;
    assert!(
        running(&tasks)
            .iter()
            .all(|t| t.node_hostname.as_deref() != Some("n3")),
        "n3's task was replaced"
    );
    Ok(())
}

#[test]
fn udp_host_mode_and_policy_local_open_where_they_should() -> Result<()> {
    if skip() {
        return Ok(());
    }
    install_test_deps()?;
    let underlay = Underlay::new(3)?;
    let cluster = underlay.swarm()?;
    let n1 = cluster.node("n1");

    // UDP through the mesh: a node without the task answers too.
    serve(
        n1,
        "dns",
        "5353:5353/udp",
        ("udp", "5353"),
        &["--constraint", "node.hostname==n2"],
    )?;
    let dns = running_ids(n1, "dns", 1)?;
    for node in [1, 3] {
        let answer = wait_for(&format!("UDP through n{node}"), SETTLE, || {
            let asked =
                Underlay::run_in(&underlay.outside(), || ask_udp(on(&underlay, node, 5353)))?;
            Ok(asked.ok())
        })?;
        assert!(dns.contains(&answer.task), "{answer:?}");
    }

    // policy=local: only the node's own task, which always sees the client (this one on a
    // network of its own too: its answers still leave through the ingress network).
    n1.ok(&["network", "create", "back"])?;
    serve(
        n1,
        "local",
        "published=8001,target=8080,policy=local",
        ("tcp", "8080"),
        &["--constraint", "node.hostname==n1", "--network", "back"],
    )?;
    let local = running_ids(n1, "local", 1)?;
    let answer = wait_for("n1:8001 to answer", SETTLE, || {
        let got = Underlay::run_in(&underlay.outside(), || get(on(&underlay, 1, 8001)))?;
        Ok(got.ok())
    })?;
    assert!(local.contains(&answer.task));
    assert_eq!(
        answer.client,
        underlay.outside_ip(),
        "the client's own address"
    );
    let elsewhere = Underlay::run_in(&underlay.outside(), || get(on(&underlay, 2, 8001)))?;
    assert!(elsewhere.is_err(), "n2 has no task of local: {elsewhere:?}");

    // Host mode: the port opens on the nodes that run a task, each straight to its own.
    serve(
        n1,
        "edge",
        "published=8100,target=8080,mode=host",
        ("tcp", "8080"),
        &["--replicas", "2", "--constraint", "node.hostname!=n3"],
    )?;
    running_ids(n1, "edge", 2)?;
    let tasks = n1.tasks("edge")?;
    for node in [1, 2] {
        let here = running(&tasks)
            .iter()
            .find(|t| t.node_hostname.as_deref() == Some(&format!("n{node}")))
            .map(|t| t.task.id.clone())
            .context("an edge task on each of n1, n2")?;
        let seen = wait_for(&format!("n{node}:8100"), SETTLE, || {
            Ok(answering(&underlay, on(&underlay, node, 8100), 5).ok())
        })?;
        assert_eq!(
            seen,
            BTreeSet::from([here]),
            "n{node} sends to its own task"
        );
    }
    let on_n3 = Underlay::run_in(&underlay.outside(), || get(on(&underlay, 3, 8100)))?;
    assert!(on_n3.is_err(), "no edge task on n3: {on_n3:?}");
    // Another service on the same host port has no node left, and says why.
    serve(
        n1,
        "edge2",
        "published=8100,target=8080,mode=host",
        ("tcp", "8080"),
        &["--constraint", "node.hostname!=n3"],
    )?;
    wait_for("edge2 to wait for a free host port", SETTLE, || {
        let tasks = n1.tasks("edge2")?;
        let message = tasks
            .first()
            .map(|t| t.task.status.message.clone())
            .unwrap_or_default();
        Ok(message.contains("host port 8100/tcp").then_some(message))
    })?;
    Ok(())
}
