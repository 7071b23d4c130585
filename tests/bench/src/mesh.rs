//! The routing mesh against straight to a task, and the seed's example timed. Three `essaimd`
//! in network namespaces of their own on an underlay bridge, and a client machine on the same
//! underlay (as `tests/mesh.rs` makes them).
//!
//! - The seed's example: `service create --name web --replicas 3 -p 80:80` (the bench binary
//!   as the server), timed from the command to the first answer on every node's port 80.
//! - Then, from the client machine, alternating in the same run: requests one after the
//!   other (connect, one byte each way, the server closes) through n1's port 80, which sends
//!   each to one of the three replicas (two of them on other nodes, over VXLAN, the source
//!   translated); through n2's port 8090 to the one task of another service, on n2 (the
//!   rules without the hop between nodes); straight to a task on n2 through its host port
//!   9110 (host mode: n2 alone opens it and sends it to the task's address, in the task's
//!   own namespace, as Docker's `-p mode=host` reaches a container); and to a task on no
//!   network listening on n2's port 9100 in n2's own namespace (no veth, no translation: a
//!   floor no container reaches). Requests per second and the p99 of one request's time; the
//!   mesh's cost is how much worse than straight to a task each is.
//!
//! Needs root; without it the scenario says it is skipped.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Result;
use essaim_tests::underlay::{is_root, Underlay};
use essaim_tests::{running, wait_for};

use crate::report::Figure;
use crate::vip::{ping, requests, SERVE_ENV};

const MESH_PORT: u16 = 80;
const LOCAL_PORT: u16 = 8090;
const DIRECT_PORT: u16 = 9100;
const CONTAINED_PORT: u16 = 9110;
const CONTAINED_MESH_PORT: u16 = 9111;

pub fn run(quick: bool) -> Result<Vec<Figure>> {
    if !is_root() {
        eprintln!("mesh: skipped, nodes in network namespaces need root");
        return Ok(Vec::new());
    }
    essaim_tests::docker::install_test_deps()?;
    let period = Duration::from_millis(if quick { 300 } else { 2_000 });
    let rounds = if quick { 1 } else { 5 };
    let underlay = crate::interrupt::underlay(3)?;
    let cluster = underlay.swarm()?;
    let n1 = cluster.node("n1");
    let bench = std::env::current_exe()?.to_string_lossy().into_owned();
    let outside = underlay.outside();

    // The seed's example, timed to the first answer on every node.
    let began = Instant::now();
    n1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "web",
        "--replicas",
        "3",
        "-p",
        &format!("{MESH_PORT}:{MESH_PORT}"),
        "--env",
        &format!("{SERVE_ENV}={MESH_PORT}"),
        &bench,
    ])?;
    for node in 1..=3 {
        let address = SocketAddr::from((underlay.ip(node), MESH_PORT));
        wait_for(
            &format!("{address} to answer"),
            Duration::from_secs(60),
            || Underlay::run_in(&outside, || ping(address).ok()),
        )?;
    }
    let seed_example = began.elapsed();
    wait_for("three running replicas", Duration::from_secs(30), || {
        Ok((running(&n1.tasks("web")?).len() == 3).then_some(()))
    })?;

    // Three services of one task on n2, each its way straight or through the mesh to it.
    let on_n2 = |name: &str, publish: &[String], port: u16| {
        let mut args = vec![
            "service".to_owned(),
            "create".into(),
            "--detach".into(),
            "--name".into(),
            name.into(),
            "--constraint".into(),
            "node.hostname==n2".into(),
            "--env".into(),
            format!("{SERVE_ENV}={port}"),
        ];
        for port in publish {
            args.extend(["-p".to_owned(), port.clone()]);
        }
        args.push(bench.clone());
        n1.ok(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    // Straight to a task on no network: a host port, which its own node alone opens, to it
    // alone, in the node's own namespace.
    on_n2(
        "direct",
        &[format!(
            "published={DIRECT_PORT},target={DIRECT_PORT},mode=host"
        )],
        DIRECT_PORT,
    )?;
    // Straight to a task in a namespace of its own, as a container always is: a host port of
    // a task on the cluster network (its ingress port only puts it there), which n2 sends to
    // the task's address through its veth. This is what a Docker user's `-p mode=host` is.
    on_n2(
        "contained",
        &[
            format!("published={CONTAINED_PORT},target={CONTAINED_PORT},mode=host"),
            format!("{CONTAINED_MESH_PORT}:{CONTAINED_PORT}"),
        ],
        CONTAINED_PORT,
    )?;
    // The same through n2 to its own task only: the mesh's rules without the hop between
    // nodes.
    on_n2("local", &[format!("{LOCAL_PORT}:{LOCAL_PORT}")], LOCAL_PORT)?;
    let mesh = SocketAddr::from((underlay.ip(1), MESH_PORT));
    let local = SocketAddr::from((underlay.ip(2), LOCAL_PORT));
    let direct = SocketAddr::from((underlay.ip(2), DIRECT_PORT));
    let contained = SocketAddr::from((underlay.ip(2), CONTAINED_PORT));
    for target in [local, direct, contained] {
        wait_for(
            &format!("{target} to answer"),
            Duration::from_secs(30),
            || Underlay::run_in(&outside, || ping(target).ok()),
        )?;
    }

    let mut paths = [
        Path::new(direct),
        Path::new(contained),
        Path::new(mesh),
        Path::new(local),
    ];
    Underlay::run_in(&outside, || -> Result<()> {
        for _ in 0..rounds {
            for path in &mut paths {
                let (rate, times) = requests(path.target, period)?;
                path.rate = path.rate.max(rate);
                path.times.extend(times);
            }
        }
        Ok(())
    })??;
    let [direct, contained, mesh, local] = paths.map(|mut path| (path.rate, p99(&mut path.times)));
    eprintln!(
        "mesh: seed example {seed_example:?}; (req/s, p99 ms) direct {direct:?}, to a task in its own namespace {contained:?}, mesh {mesh:?}, mesh to the node's own task {local:?}"
    );
    let cost = |baseline: f64, other: f64| ((baseline - other) / baseline * 100.0).max(0.0);
    // The target's baseline is a task in a namespace of its own, as every container is; the
    // process in the node's own namespace is printed as the floor no task reaches.
    let rate_cost = cost(contained.0, mesh.0);
    let worse = |baseline: f64, other: f64| ((other - baseline) / baseline * 100.0).max(0.0);
    let latency_cost = worse(contained.1, mesh.1);
    let local_rate_cost = cost(contained.0, local.0);
    let local_latency_cost = worse(contained.1, local.1);
    let anchor = "Swarm's mesh: IPVS in an ingress sandbox per node, one more hop";
    let one = "one client outside the cluster, sequential";
    let (direct_rate, direct_p99, mesh_rate, mesh_p99) = (direct.0, direct.1, mesh.0, mesh.1);
    Ok(vec![
        Figure {
            name: "seed example: create -p 80:80, 3 replicas, to an answer on every node".into(),
            value: seed_example.as_secs_f64() * 1000.0,
            unit: "ms",
            target: "(measured)".into(),
            met: true,
            anchor: "three nodes, process runtime".into(),
        },
        Figure {
            name: "requests/s straight to a task (host-mode port, its own namespace)".into(),
            value: contained.0,
            unit: "req/s",
            target: "(baseline)".into(),
            met: true,
            anchor: one.into(),
        },
        Figure {
            name: "requests/s to a process in the node's namespace (no task is)".into(),
            value: direct_rate,
            unit: "req/s",
            target: "(floor)".into(),
            met: true,
            anchor: one.into(),
        },
        Figure {
            name: "requests/s through the mesh (3 replicas, 2 remote)".into(),
            value: mesh_rate,
            unit: "req/s",
            target: "(see cost)".into(),
            met: true,
            anchor: anchor.into(),
        },
        Figure {
            name: "mesh cost on requests/s".into(),
            value: rate_cost,
            unit: "%",
            target: "< 10 %".into(),
            met: rate_cost < 10.0,
            anchor: anchor.into(),
        },
        Figure {
            name: "mesh cost on requests/s, task on the node called".into(),
            value: local_rate_cost,
            unit: "%",
            target: "< 10 %".into(),
            met: local_rate_cost < 10.0,
            anchor: "the node's own task: DNAT and the task's veth, no hop".into(),
        },
        Figure {
            name: "p99 request straight to a task (its own namespace)".into(),
            value: contained.1,
            unit: "ms",
            target: "(baseline)".into(),
            met: true,
            anchor: one.into(),
        },
        Figure {
            name: "p99 request to a process in the node's namespace".into(),
            value: direct_p99,
            unit: "ms",
            target: "(floor)".into(),
            met: true,
            anchor: one.into(),
        },
        Figure {
            name: "p99 request through the mesh".into(),
            value: mesh_p99,
            unit: "ms",
            target: "(see cost)".into(),
            met: true,
            anchor: anchor.into(),
        },
        Figure {
            name: "mesh cost on p99".into(),
            value: latency_cost,
            unit: "%",
            target: "< 10 %".into(),
            met: latency_cost < 10.0,
            anchor: anchor.into(),
        },
        Figure {
            name: "mesh cost on p99, task on the node called".into(),
            value: local_latency_cost,
            unit: "%",
            target: "< 10 %".into(),
            met: local_latency_cost < 10.0,
            anchor: "the node's own task: DNAT and the task's veth, no hop".into(),
        },
    ])
}

/// One way to the server: its best rate over the rounds, and every request's time.
struct Path {
    target: SocketAddr,
    rate: f64,
    times: Vec<Duration>,
}

impl Path {
    fn new(target: SocketAddr) -> Path {
        Path {
            target,
            rate: 0.0,
            times: Vec::new(),
        }
    }
}

/// The 99th percentile, in milliseconds.
fn p99(times: &mut [Duration]) -> f64 {
    if times.is_empty() {
        return f64::NAN;
    }
    times.sort();
    let index = (times.len() * 99 / 100).min(times.len() - 1);
    times[index].as_secs_f64() * 1000.0
}
