//! Leader failover: kill -9 the Raft leader of three managers and time the first write that
//! succeeds through a survivor. The write goes straight to the control API (no shell process
//! in the measured path), retried every few milliseconds.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use essaim_api::{transport, ControlRequest};

use crate::report::{median_and_worst, Figure};

/// A trial slower than this prints how its election went.
const SLOW_MS: f64 = 1000.0;

/// What the managers log about elections (see `replica::election` and the Raft service).
const ELECTION_WORDS: [&str; 5] = [
    "calling an election",
    "vote asked",
    "now the leader",
    "no longer leads",
    "cannot call an election",
];

pub fn run(trials: usize) -> Result<Vec<Figure>> {
    let mut cluster = crate::sim::managers()?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut samples = Vec::new();
    for trial in 0..trials {
        let leader = cluster.leader("m1").or_else(|_| cluster.leader("m2"))?;
        let survivor = ["m1", "m2", "m3"]
            .into_iter()
            .find(|n| *n != leader)
            .context("a survivor")?
            .to_string();
        let socket = cluster.node(&survivor).socket();
        let logged_before: Vec<usize> = cluster.nodes.iter().map(|n| n.log_len()).collect();
        cluster.node_mut(&leader).kill9();
        let killed = Instant::now();
        runtime.block_on(async {
            loop {
                if write(&socket, &survivor, trial).await {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        });
        let elapsed = killed.elapsed().as_secs_f64() * 1000.0;
        eprintln!(
            "failover trial {}: {elapsed:.0} ms (killed {leader})",
            trial + 1
        );
        if elapsed > SLOW_MS {
            // A slow trial must be explained, not only counted: what the survivors did.
            eprintln!(
                "  trial {} took over {SLOW_MS} ms; the election, as logged:",
                trial + 1
            );
            for (node, before) in cluster.nodes.iter().zip(&logged_before) {
                if node.name == leader {
                    continue;
                }
                let logs = node.logs();
                for line in logs.get(*before..).unwrap_or_default().lines() {
                    if ELECTION_WORDS.iter().any(|w| line.contains(w)) {
                        eprintln!("    {}: {line}", node.name);
                    }
                }
            }
        }
        samples.push(elapsed);
        cluster.node_mut(&leader).restart()?;
        crate::sim::wait_for_managers(&cluster, &survivor)?;
        if std::env::var_os("ESSAIM_BENCH_KEEP_LOGS").is_some() {
            for node in &cluster.nodes {
                let path = format!("/tmp/failover-trial{}-{}.log", trial + 1, node.name);
                std::fs::write(path, node.logs())?;
            }
        }
    }
    let (median, worst) = median_and_worst(&mut samples);
    Ok(vec![
        Figure {
            name: format!("failover median ({trials} trials)"),
            value: median,
            unit: "ms",
            target: "< 300 ms".into(),
            met: median < 300.0,
            anchor: "etcd ~1 s; Raft paper median 287 ms; swarmkit >= 10 s".into(),
        },
        Figure {
            name: format!("failover worst ({trials} trials)"),
            value: worst,
            unit: "ms",
            target: "< 1000 ms".into(),
            met: worst < 1000.0,
            anchor: "Raft paper worst 513 ms".into(),
        },
    ])
}

/// One label update through the survivor's socket; true when it was committed.
async fn write(socket: &std::path::Path, node: &str, trial: usize) -> bool {
    let Ok(channel) = transport::local_channel(socket).await else {
        return false;
    };
    let mut client = transport::control_client(channel);
    let request = ControlRequest::NodeUpdate {
        node: node.to_string(),
        expected_version: None,
        availability: None,
        role: None,
        label_add: [("failover".to_string(), trial.to_string())].into(),
        label_rm: vec![],
    };
    matches!(
        tokio::time::timeout(
            Duration::from_secs(2),
            transport::call(&mut client, &request)
        )
        .await,
        Ok(Ok(_))
    )
}
