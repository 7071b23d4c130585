//! essaim and Docker Swarm mode side by side on this machine's Docker engine: the same image,
//! the same number of replicas, the time from the create call to every replica running.
//!
//! essaim: one manager with `--runtime docker`, `service create`, then the running count of
//! `service inspect` (each task reported running by the node after its container started).
//! Swarm: `docker swarm init`, `docker service create --detach`, then `docker service ls`'s
//! REPLICAS until N/N, then `docker swarm leave --force`. An engine already in a swarm is left
//! alone: the Swarm half is skipped, and the table says so.

use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use essaim_api::ControlRequest;
use essaim_tests::docker::{self, Cleanup};
use essaim_tests::{wait_for, Cluster};

use crate::interrupt;
use crate::report::Figure;
use crate::sim;

const SETTLE: Duration = Duration::from_secs(180);
const POLL: Duration = Duration::from_millis(20);

pub fn run(replicas: u64) -> Result<Vec<Figure>> {
    let Some(image) = docker::test_image() else {
        eprintln!("docker-swarm: skipped, no Docker engine answers here");
        return Ok(Vec::new());
    };
    let ours = essaim_time(image, replicas)?;
    eprintln!("docker-swarm: essaim, {replicas} replicas running in {ours:?}");
    let swarm = swarm_time(image, replicas)?;
    if let Some(swarm) = swarm {
        eprintln!("docker-swarm: Docker Swarm, {replicas} replicas running in {swarm:?}");
    }
    Ok(figures(replicas, ours, swarm))
}

fn essaim_time(image: &str, replicas: u64) -> Result<Duration> {
    let service = format!("bench-{}", std::process::id());
    let _cleanup = Cleanup {
        services: vec![service.clone()],
        networks: vec![],
    };
    interrupt::on_interrupt(&format!(
        "(docker ps -aq --filter label=essaim.service.name={service} | xargs -r docker rm -f -v; \
         docker network ls -q --filter label=essaim.network={service}_default \
         | xargs -r docker network rm) >/dev/null 2>&1"
    ));
    let mut cluster = Cluster::empty()?;
    let m1 = cluster.add_with_env("m1", &[("ESSAIM_RUNTIME", "docker")])?;
    m1.ok(&["swarm", "init", "--advertise-addr", &m1.addr()])?;
    let socket = m1.socket();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let elapsed = runtime.block_on(async {
        let mut spec = sim::sim_service(&service, replicas);
        spec.task.image = image.to_string();
        spec.task.args = vec!["sleep".to_string(), "3600".to_string()];
        spec.task.constraints.clear();
        spec.task.stop_grace_period_ms = 1_000;
        let started = Instant::now();
        sim::call(&socket, &ControlRequest::ServiceCreate { spec }).await?;
        loop {
            if sim::inspect(&socket, &service).await?.running >= replicas {
                return Ok::<_, anyhow::Error>(started.elapsed());
            }
            if started.elapsed() > SETTLE {
                bail!("essaim: not all {replicas} replicas running after {SETTLE:?}");
            }
            tokio::time::sleep(POLL).await;
        }
    })?;
    // Removed through essaim, as a user would: its containers and network go with it.
    m1.ok(&["service", "rm", &service])?;
    wait_for("essaim's containers removed", SETTLE, || {
        let left = docker::containers(&format!("essaim.service.name={service}"));
        Ok(left.is_empty().then_some(()))
    })?;
    Ok(elapsed)
}

/// `None` when the engine is already part of a swarm (not ours to leave).
fn swarm_time(image: &str, replicas: u64) -> Result<Option<Duration>> {
    let state = docker_text(&["info", "--format", "{{.Swarm.LocalNodeState}}"])?;
    if state.trim() != "inactive" {
        eprintln!("docker-swarm: the engine is in a swarm already ({state}): Swarm side skipped");
        return Ok(None);
    }
    let service = format!("essaim-bench-swarm-{}", std::process::id());
    let _swarm = SwarmMode::init(&service)?;
    let started = Instant::now();
    docker_text(&[
        "service",
        "create",
        "--detach",
        "--no-resolve-image",
        "--name",
        &service,
        "--replicas",
        &replicas.to_string(),
        "--stop-grace-period",
        "1s",
        image,
        "sleep",
        "3600",
    ])?;
    let wanted = format!("{replicas}/{replicas}");
    loop {
        let shown = docker_text(&[
            "service",
            "ls",
            "--filter",
            &format!("name={service}"),
            "--format",
            "{{.Replicas}}",
        ])?;
        if shown.trim() == wanted {
            return Ok(Some(started.elapsed()));
        }
        if started.elapsed() > SETTLE {
            bail!("Docker Swarm: {shown} after {SETTLE:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// This engine in swarm mode until dropped (or the run interrupted): then it leaves, and its
/// services' containers go with it. `docker_gwbridge`, which `swarm init` makes and `swarm
/// leave` keeps, goes too when the run made it.
struct SwarmMode {
    service: String,
    made_gwbridge: bool,
}

const GWBRIDGE: &str = "docker_gwbridge";

impl SwarmMode {
    /// `service`: the one service the run will create, whose containers a leave in the middle
    /// of its start can leave behind.
    fn init(service: &str) -> Result<SwarmMode> {
        let made_gwbridge = docker_text(&["network", "inspect", GWBRIDGE]).is_err();
        let mut undo = format!(
            "docker swarm leave --force; \
             docker ps -aq --filter label=com.docker.swarm.service.name={service} \
             | xargs -r docker rm -f"
        );
        if made_gwbridge {
            undo.push_str(&format!("; docker network rm {GWBRIDGE}"));
        }
        interrupt::on_interrupt(&format!("({undo}) >/dev/null 2>&1"));
        docker_text(&["swarm", "init", "--advertise-addr", "127.0.0.1"])?;
        Ok(SwarmMode {
            service: service.to_string(),
            made_gwbridge,
        })
    }
}

impl Drop for SwarmMode {
    fn drop(&mut self) {
        let _ = docker_text(&["swarm", "leave", "--force"]);
        let label = format!("label=com.docker.swarm.service.name={}", self.service);
        if let Ok(left) = docker_text(&["ps", "-aq", "--filter", &label]) {
            for id in left.split_whitespace() {
                let _ = docker_text(&["rm", "-f", id]);
            }
        }
        if self.made_gwbridge {
            let _ = docker_text(&["network", "rm", GWBRIDGE]);
        }
    }
}

fn docker_text(args: &[&str]) -> Result<String> {
    let output = Command::new("docker")
        .args(args)
        .output()
        .context("running docker")?;
    if !output.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn figures(replicas: u64, ours: Duration, swarm: Option<Duration>) -> Vec<Figure> {
    let ours_s = ours.as_secs_f64();
    let mut figures = vec![Figure {
        name: format!("{replicas} containers running, essaim"),
        value: ours_s,
        unit: "s",
        target: "see ratio".into(),
        met: true,
        anchor: "same engine, same image, same run".into(),
    }];
    match swarm {
        Some(swarm) => {
            let swarm_s = swarm.as_secs_f64();
            let ratio = ours_s / swarm_s;
            figures.push(Figure {
                name: format!("{replicas} containers running, Docker Swarm"),
                value: swarm_s,
                unit: "s",
                target: "reference".into(),
                met: true,
                anchor: "docker service create --replicas, same engine".into(),
            });
            figures.push(Figure {
                name: "time ratio essaim/Swarm".into(),
                value: ratio,
                unit: "x",
                target: "<= 0.5x".into(),
                met: ratio <= 0.5,
                anchor: format!("essaim {ours_s:.1} s, Swarm {swarm_s:.1} s"),
            });
        }
        None => figures.push(Figure {
            name: "time ratio essaim/Swarm".into(),
            value: 0.0,
            unit: "",
            target: "<= 0.5x".into(),
            met: false,
            anchor: "not measured: the engine was already in a swarm".into(),
        }),
    }
    figures
}
