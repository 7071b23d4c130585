//! Placement at scale: simulated nodes, one service of many replicas. Measures the time from
//! the create call to every task ASSIGNED (committed on a quorum) and to every task RUNNING
//! (reported by its node and committed); meanwhile, the latency of `service ls`, `node ls`
//! and a single-object write; whether leadership held; and the leader's memory per task.
//!
//! Also node loss: kill -9 a process hosting a share of the nodes, and time until every task
//! it ran is running again elsewhere.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use essaim_api::ControlRequest;
use essaim_core::model::TaskState;

use crate::report::{percentile, Figure};
use crate::sim::{self, SimHost, SETTLE};

/// How often the progress is polled: fine enough for figures of seconds.
const POLL: Duration = Duration::from_millis(20);

pub struct Sizes {
    pub nodes: usize,
    pub replicas: u64,
    pub hosts: usize,
}

pub fn run(sizes: &Sizes) -> Result<Vec<Figure>> {
    let cluster = sim::managers()?;
    let hosts: Vec<SimHost> = (0..sizes.hosts)
        .map(|i| SimHost::start(&cluster, &format!("sim{i}"), sizes.nodes / sizes.hosts))
        .collect::<Result<_>>()?;
    let joined = sim::wait_for_ready_nodes(&cluster, 3 + sizes.nodes / sizes.hosts * sizes.hosts)?;
    eprintln!("placement: {} nodes ready in {joined:?}", sizes.nodes);
    let leader = cluster.leader("m1")?;
    let leader_pid = cluster
        .node(&leader)
        .pid()
        .ok_or_else(|| anyhow::anyhow!("the leader is not running"))?;
    let rss_before = sim::rss_bytes(leader_pid)?;
    let socket = cluster.node(&leader).socket();

    let stop = Arc::new(AtomicBool::new(false));
    let probe = {
        let stop = stop.clone();
        let socket = socket.clone();
        let node = leader.clone();
        std::thread::spawn(move || api_latencies(&socket, &node, &stop))
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (to_assigned, to_running) = runtime.block_on(async {
        let started = Instant::now();
        sim::call(
            &socket,
            &ControlRequest::ServiceCreate {
                spec: sim::sim_service("bench", sizes.replicas),
            },
        )
        .await?;
        let mut assigned_at = None;
        loop {
            let view = sim::inspect(&socket, "bench").await?;
            let placed: u64 = view
                .live_by_state
                .iter()
                .filter(|(state, _)| **state >= TaskState::Assigned)
                .map(|(_, count)| count)
                .sum();
            if assigned_at.is_none() && placed >= sizes.replicas {
                assigned_at = Some(started.elapsed());
            }
            if view.running >= sizes.replicas {
                let running = started.elapsed();
                return Ok::<_, anyhow::Error>((assigned_at.unwrap_or(running), running));
            }
            if started.elapsed() > SETTLE {
                bail!(
                    "only {} of {} tasks running after {SETTLE:?} ({:?})",
                    view.running,
                    sizes.replicas,
                    view.live_by_state
                );
            }
            tokio::time::sleep(POLL).await;
        }
    })?;
    stop.store(true, Ordering::Relaxed);
    let latencies = probe
        .join()
        .map_err(|_| anyhow::anyhow!("the API probe panicked"))??;
    let leader_after = cluster.leader("m1")?;
    let rss_after = sim::rss_bytes(leader_pid)?;
    drop(hosts);

    let replicas = sizes.replicas as f64;
    let per_second = replicas / to_assigned.as_secs_f64();
    let running_s = to_running.as_secs_f64();
    let bytes_per_task = rss_after.saturating_sub(rss_before) as f64 / replicas;
    let mut figures = vec![
        Figure {
            name: format!(
                "placements per second ({} tasks, {} nodes)",
                sizes.replicas, sizes.nodes
            ),
            value: per_second,
            unit: "/s",
            target: ">= 20000/s".into(),
            met: per_second >= 20_000.0,
            anchor: "Nomad C1M ~3750/s; kube-scheduler ~650/s".into(),
        },
        Figure {
            name: format!("create to all {} running", sizes.replicas),
            value: running_s,
            unit: "s",
            target: "< 10 s".into(),
            met: running_s < 10.0,
            anchor: "GKE 65k pods running in ~150 s".into(),
        },
        Figure {
            name: "leader unchanged during placement".into(),
            value: if leader_after == leader { 1.0 } else { 0.0 },
            unit: "",
            target: "1 (no election)".into(),
            met: leader_after == leader,
            anchor: "the cluster must not mistake its own load for a failure".into(),
        },
        Figure {
            name: "leader memory per task".into(),
            value: bytes_per_task,
            unit: "B",
            target: "< 1024 B".into(),
            met: bytes_per_task < 1024.0,
            anchor: "etcd ~1.24 KB per small key".into(),
        },
    ];
    for (what, mut samples) in latencies {
        let p99 = percentile(&mut samples, 0.99);
        figures.push(Figure {
            name: format!("{what} p99 under load ({} calls)", samples.len()),
            value: p99,
            unit: "ms",
            target: "< 50 ms".into(),
            met: p99 < 50.0,
            anchor: "Kubernetes SLO 1 s; Swarm 1k nodes 360 ms".into(),
        });
    }
    Ok(figures)
}

/// `service ls`, `node ls` and a label write, over and over until `stop`, timed.
fn api_latencies(
    socket: &std::path::Path,
    node: &str,
    stop: &AtomicBool,
) -> Result<Vec<(&'static str, Vec<f64>)>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut service_ls = Vec::new();
    let mut node_ls = Vec::new();
    let mut write = Vec::new();
    runtime.block_on(async {
        let mut round = 0u64;
        while !stop.load(Ordering::Relaxed) {
            round += 1;
            let calls: [(&mut Vec<f64>, ControlRequest); 3] = [
                (&mut service_ls, ControlRequest::ServiceList),
                (&mut node_ls, ControlRequest::NodeList),
                (
                    &mut write,
                    ControlRequest::NodeUpdate {
                        node: node.to_string(),
                        expected_version: None,
                        availability: None,
                        role: None,
                        label_add: [("probe".to_string(), round.to_string())].into(),
                        label_rm: vec![],
                    },
                ),
            ];
            for (samples, request) in calls {
                let started = Instant::now();
                // A failed call counts at the time it took to fail: it is what a user waited.
                if let Err(e) = sim::call(socket, &request).await {
                    eprintln!("placement: API call failed under load: {e}");
                }
                samples.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok::<_, anyhow::Error>(())
    })?;
    Ok(vec![
        ("service ls", service_ls),
        ("node ls", node_ls),
        ("label write", write),
    ])
}

/// Kill -9 one of `sizes.hosts` sim hosts and time until its tasks run elsewhere.
pub fn node_loss(sizes: &Sizes) -> Result<Vec<Figure>> {
    let cluster = sim::managers()?;
    let per_host = sizes.nodes / sizes.hosts;
    let mut hosts: Vec<SimHost> = (0..sizes.hosts)
        .map(|i| SimHost::start(&cluster, &format!("sim{i}"), per_host))
        .collect::<Result<_>>()?;
    sim::wait_for_ready_nodes(&cluster, 3 + per_host * sizes.hosts)?;
    let leader = cluster.leader("m1")?;
    let socket = cluster.node(&leader).socket();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let elapsed = runtime.block_on(async {
        sim::call(
            &socket,
            &ControlRequest::ServiceCreate {
                spec: sim::sim_service("bench", sizes.replicas),
            },
        )
        .await?;
        let started = Instant::now();
        while sim::inspect(&socket, "bench").await?.running < sizes.replicas {
            if started.elapsed() > SETTLE {
                bail!("the service never got all its tasks running");
            }
            tokio::time::sleep(POLL).await;
        }
        hosts[0].kill9();
        let killed = Instant::now();
        // Done when every replica runs on a node that survived. Counting running replicas is
        // not enough: the replacements can start between two looks, so no dip is ever seen.
        let lost = format!("{}-", hosts[0].name());
        loop {
            let running = sim::tasks(&socket, "bench")
                .await?
                .iter()
                .filter(|view| {
                    view.task.desired_state == TaskState::Running
                        && view.task.status.state == TaskState::Running
                        && !view
                            .node_hostname
                            .as_deref()
                            .is_some_and(|host| host.starts_with(&lost))
                })
                .count() as u64;
            if running >= sizes.replicas {
                return Ok::<_, anyhow::Error>(killed.elapsed());
            }
            if killed.elapsed() > SETTLE {
                bail!(
                    "{running} of {} running on surviving nodes {SETTLE:?} after the loss",
                    sizes.replicas
                );
            }
            tokio::time::sleep(POLL).await;
        }
    })?;
    let seconds = elapsed.as_secs_f64();
    let lost_tasks = sizes.replicas / sizes.hosts as u64;
    Ok(vec![Figure {
        name: format!("node loss: {per_host} nodes, ~{lost_tasks} tasks back running"),
        value: seconds,
        unit: "s",
        target: "< 3 s".into(),
        met: seconds < 3.0,
        anchor: "Swarm ~20 s; Nomad ~20 s; Kubernetes ~350 s".into(),
    }])
}
