//! `essaim-bench`: measures essaim's control plane on real daemons (managers as processes on
//! loopback, durable storage, fsync on) and prints each figure beside its target and the
//! published figure it is meant to beat. The same figures are written as JSON.
//!
//! ```text
//! cargo run --release -p essaim-bench -- [SCENARIO...] [--quick] [--json PATH]
//! ```
//!
//! # Layout
//! - [`report`]: figures, the table and the JSON.
//! - [`interrupt`]: an interrupted run stops its daemons and removes its directories.
//! - [`docker_swarm`]: essaim and Docker Swarm mode side by side on this machine's engine.
//! - [`failover`]: kill -9 of the Raft leader to the first successful write through a survivor.
//! - [`placement`]: a large service on simulated nodes: placement rate, time to running, API
//!   latency under that load, leadership stability, memory per task; and node loss.
//! - [`raft_writes`]: durable writes side by side with etcd, at 1 and 256 clients.
//! - [`rolling_update`]: a change of the task spec rolled out over a large service on
//!   simulated nodes, in batches.
//! - [`sim`]: managers and hosts of simulated nodes, shared by the scale scenarios.
//! - [`mesh`]: requests through the routing mesh against straight to a task, and the seed's
//!   example timed, on nodes in network namespaces.
//! - [`vip`]: connections and throughput through a service's VIP against straight to a task,
//!   on nodes in network namespaces.

mod docker_swarm;
mod failover;
mod interrupt;
mod mesh;
mod placement;
mod raft_writes;
mod report;
mod rolling_update;
mod sim;
mod vip;

use std::path::PathBuf;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(
    name = "essaim-bench",
    about = "Benchmarks of essaim's control plane on real daemons"
)]
struct Args {
    /// Scenarios to run (all when none is named): placement, node-loss, raft-writes, failover,
    /// docker-swarm, rolling-update, vip, mesh
    scenarios: Vec<String>,
    /// Small sizes, for CI: checks that every scenario completes, in well under a minute
    #[arg(long)]
    quick: bool,
    /// Placement: simulated nodes (default 1000, 50 with --quick)
    #[arg(long)]
    nodes: Option<usize>,
    /// Placement: replicas of the service (default 100000, 5000 with --quick)
    #[arg(long)]
    replicas: Option<u64>,
    /// Where to write the figures as JSON
    #[arg(long, default_value = "target/essaim-bench.json")]
    json: PathBuf,
}

const SCENARIOS: &[&str] = &[
    "placement",
    "node-loss",
    "raft-writes",
    "failover",
    "docker-swarm",
    "rolling-update",
    "vip",
    "mesh",
];

fn main() -> anyhow::Result<()> {
    // The vip scenario runs this binary as its server task, too.
    if let Ok(port) = std::env::var(vip::SERVE_ENV) {
        return vip::serve(&port);
    }
    let args = Args::parse();
    let _root = interrupt::guard()?;
    for name in &args.scenarios {
        if !SCENARIOS.contains(&name.as_str()) {
            anyhow::bail!(
                "unknown scenario {name:?}: expected one of {}",
                SCENARIOS.join(", ")
            );
        }
    }
    let wanted = |name: &str| args.scenarios.is_empty() || args.scenarios.iter().any(|s| s == name);
    let mut figures = Vec::new();
    if wanted("placement") {
        let sizes = if args.quick {
            placement::Sizes {
                nodes: 50,
                replicas: 5_000,
                hosts: 2,
            }
        } else {
            placement::Sizes {
                nodes: 1_000,
                replicas: 100_000,
                hosts: 4,
            }
        };
        let sizes = placement::Sizes {
            nodes: args.nodes.unwrap_or(sizes.nodes),
            replicas: args.replicas.unwrap_or(sizes.replicas),
            ..sizes
        };
        figures.extend(placement::run(&sizes)?);
    }
    if wanted("node-loss") {
        let sizes = if args.quick {
            placement::Sizes {
                nodes: 50,
                replicas: 500,
                hosts: 5,
            }
        } else {
            placement::Sizes {
                nodes: 1_000,
                replicas: 10_000,
                hosts: 10,
            }
        };
        figures.extend(placement::node_loss(&sizes)?);
    }
    if wanted("raft-writes") {
        figures.extend(raft_writes::run(args.quick)?);
    }
    if wanted("failover") {
        figures.extend(failover::run(if args.quick { 3 } else { 50 })?);
    }
    if wanted("docker-swarm") {
        figures.extend(docker_swarm::run(if args.quick { 10 } else { 50 })?);
    }
    if wanted("rolling-update") {
        let sizes = if args.quick {
            rolling_update::Sizes {
                nodes: 50,
                replicas: 500,
                hosts: 2,
                parallelism: 50,
            }
        } else {
            rolling_update::Sizes {
                nodes: 1_000,
                replicas: 10_000,
                hosts: 4,
                parallelism: 1_000,
            }
        };
        figures.extend(rolling_update::run(&sizes)?);
    }
    if wanted("vip") {
        figures.extend(vip::run(args.quick)?);
    }
    if wanted("mesh") {
        figures.extend(mesh::run(args.quick)?);
    }
    print!("{}", report::table(&figures));
    report::write_json(&args.json, &figures)?;
    eprintln!("figures written to {}", args.json.display());
    Ok(())
}
