//! A rolling update at scale: simulated nodes, one service of many replicas all running, then
//! a change of the task spec rolled out in batches. Measures the time from the update call to
//! the update `completed` with every live task running the new spec, and checks that no slot
//! got more than one task of the new spec.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use essaim_api::ControlRequest;
use essaim_core::model::{FailureAction, TaskState, UpdateConfig, UpdateState};

use crate::report::Figure;
use crate::sim::{self, SimHost, SETTLE};

/// How often the service is inspected during the update: fine enough for a figure of seconds,
/// and light on the leader (an inspect counts the service's tasks under the state's read lock).
const POLL: Duration = Duration::from_millis(100);
/// How often the whole task list is read once the update says it completed: a list of every
/// task, old ones included, is far heavier than an inspect.
const LIST_POLL: Duration = Duration::from_millis(250);

/// The variable the update changes: a change of the task spec replaces every task.
const RELEASE: &str = "RELEASE";

pub struct Sizes {
    pub nodes: usize,
    pub replicas: u64,
    pub hosts: usize,
    pub parallelism: u64,
}

pub fn run(sizes: &Sizes) -> Result<Vec<Figure>> {
    let cluster = sim::managers()?;
    let per_host = sizes.nodes / sizes.hosts;
    let _hosts: Vec<SimHost> = (0..sizes.hosts)
        .map(|i| SimHost::start(&cluster, &format!("sim{i}"), per_host))
        .collect::<Result<_>>()?;
    let joined = sim::wait_for_ready_nodes(&cluster, 3 + per_host * sizes.hosts)?;
    eprintln!(
        "rolling-update: {} nodes ready in {joined:?}",
        per_host * sizes.hosts
    );
    let leader = cluster.leader("m1")?;
    let socket = cluster.node(&leader).socket();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (elapsed, not_once) = runtime.block_on(async {
        let mut spec = sim::sim_service("bench", sizes.replicas);
        spec.task.env.insert(RELEASE.to_string(), "1".to_string());
        sim::call(&socket, &ControlRequest::ServiceCreate { spec }).await?;
        let created = Instant::now();
        let before = loop {
            let view = sim::inspect(&socket, "bench").await?;
            if view.running >= sizes.replicas {
                break view;
            }
            if created.elapsed() > SETTLE {
                bail!(
                    "only {} of {} tasks running after {SETTLE:?}",
                    view.running,
                    sizes.replicas
                );
            }
            tokio::time::sleep(POLL).await;
        };
        eprintln!(
            "rolling-update: {} tasks running in {:?}",
            sizes.replicas,
            created.elapsed()
        );

        // As `service update --env-add RELEASE=2 --update-parallelism N --update-monitor 0
        // --update-failure-action pause` would send it.
        let mut spec = before.service.spec.clone();
        spec.task.env.insert(RELEASE.to_string(), "2".to_string());
        spec.update_config = UpdateConfig {
            parallelism: sizes.parallelism,
            monitor_ms: 0,
            failure_action: FailureAction::Pause,
            ..UpdateConfig::default()
        };
        let new_task = spec.task.clone();
        let started = Instant::now();
        sim::call(
            &socket,
            &ControlRequest::ServiceUpdate {
                service: "bench".to_string(),
                expected_version: Some(before.service.version),
                spec,
            },
        )
        .await?;

        // First the update's own word that it completed, then the task list's.
        let (completed_seen, leader_took) = loop {
            let view = sim::inspect(&socket, "bench").await?;
            let status = view.service.update_status.as_ref();
            match status.map(|s| s.state) {
                Some(UpdateState::Completed) => {
                    let took = status
                        .and_then(|s| Some(s.completed_at?.0.saturating_sub(s.started_at.0)));
                    break (started.elapsed(), took);
                }
                Some(UpdateState::Updating) | None => {}
                Some(other) => bail!(
                    "the update ended {other}: {}",
                    status.map(|s| s.message.as_str()).unwrap_or_default()
                ),
            }
            if started.elapsed() > SETTLE {
                bail!(
                    "the update had not completed {SETTLE:?} after the call: {:?}",
                    view.service.update_status
                );
            }
            tokio::time::sleep(POLL).await;
        };
        let (done, tasks) = loop {
            let tasks = sim::tasks(&socket, "bench").await?;
            let live: Vec<_> = tasks
                .iter()
                .filter(|v| v.task.desired_state == TaskState::Running)
                .collect();
            let all_new = live.len() as u64 == sizes.replicas
                && live
                    .iter()
                    .all(|v| v.task.spec == new_task && v.task.status.state == TaskState::Running);
            if all_new {
                break (started.elapsed(), tasks);
            }
            if started.elapsed() > SETTLE {
                bail!(
                    "{} live tasks, {} of them running the new spec, {SETTLE:?} after the update",
                    live.len(),
                    live.iter()
                        .filter(|v| v.task.spec == new_task
                            && v.task.status.state == TaskState::Running)
                        .count()
                );
            }
            tokio::time::sleep(LIST_POLL).await;
        };
        eprintln!(
            "rolling-update: completed seen after {completed_seen:?} (by the leader's clock: {} ms), \
             every live task on the new spec after {done:?}",
            leader_took.map_or("?".to_string(), |ms| ms.to_string())
        );

        // Every slot of the new spec once: a slot updated twice would have two such tasks
        // (the task history keeps the dead ones), a slot skipped none.
        let mut per_slot: BTreeMap<u64, u64> = BTreeMap::new();
        for view in tasks.iter().filter(|v| v.task.spec == new_task) {
            if let Some(slot) = view.task.slot {
                *per_slot.entry(slot).or_default() += 1;
            }
        }
        let not_once = (1..=sizes.replicas)
            .filter(|slot| per_slot.get(slot).copied() != Some(1))
            .count() as u64;
        if not_once > 0 {
            let twice: Vec<_> = per_slot.iter().filter(|(_, n)| **n > 1).take(5).collect();
            eprintln!("rolling-update: {not_once} slots not updated exactly once, e.g. {twice:?}");
        }
        Ok::<_, anyhow::Error>((done, not_once))
    })?;

    let seconds = elapsed.as_secs_f64();
    let per_second = sizes.replicas as f64 / seconds;
    let tasks = thousands(sizes.replicas);
    let parallelism = thousands(sizes.parallelism);
    Ok(vec![
        Figure {
            name: format!("rolling update, {tasks} tasks, parallelism {parallelism}"),
            value: seconds,
            unit: "s",
            target: "< 10 s".into(),
            met: seconds < 10.0,
            anchor: "Swarm default >= 5 s per task (parallelism 1, monitor 5 s): 10,000 tasks \
                     would take ~14 h; with parallelism 1,000 and monitor 5 s, >= 50 s"
                .into(),
        },
        Figure {
            name: format!("rolling update, tasks updated per second ({tasks} tasks)"),
            value: per_second,
            unit: "/s",
            target: ">= 1000/s".into(),
            met: per_second >= 1_000.0,
            anchor: "10,000 tasks in 10 s".into(),
        },
        Figure {
            name: format!("rolling update, slots not updated exactly once (of {tasks})"),
            value: not_once as f64,
            unit: "",
            target: "0".into(),
            met: not_once == 0,
            anchor: "one task of the new spec per slot".into(),
        },
    ])
}

/// `10000` as `10,000`, as the figures' names write counts.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
