//! Raft writes side by side with etcd, on this machine, in the same run: three members on
//! loopback on each side, durable commits on each side, 256-byte values, at 1 and at 256
//! concurrent clients. Ours go through the path a user's command takes: `service update
//! --label-add`, each client on a service of its own (as etcd's clients write keys of their
//! own), through the control API of the leader's local socket, committed by Raft before the
//! reply. etcd's are Puts through its gRPC API.
//!
//! etcd comes from Debian's packages (`scripts/install-etcd.sh`); without it, only our side is
//! measured and the comparison says so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use essaim_api::{transport, ControlRequest};
use essaim_tests::{die_with_parent, free_port};
use futures::future::join_all;

use crate::report::{percentile, Figure};
use crate::sim;

mod etcd_pb {
    tonic::include_proto!("etcdserverpb");
}

const VALUE_BYTES: usize = 256;
const CLIENT_COUNTS: [usize; 2] = [1, 256];

/// Writes per second and latencies of one run.
struct Stats {
    per_second: f64,
    p50_ms: f64,
    p99_ms: f64,
}

/// Where the writes go.
#[derive(Clone)]
enum Target {
    Essaim {
        client: essaim_api::pb::control_client::ControlClient<tonic::transport::Channel>,
    },
    Etcd {
        client: etcd_pb::kv_client::KvClient<tonic::transport::Channel>,
    },
}

impl Target {
    async fn write(&mut self, client: usize, value: &str) -> Result<()> {
        match self {
            Target::Essaim { client: control } => {
                let mut spec = writer_service(client);
                spec.labels.insert("bench".to_string(), value.to_string());
                let request = ControlRequest::ServiceUpdate {
                    service: spec.name.clone(),
                    expected_version: None,
                    spec,
                };
                transport::call(control, &request).await?;
            }
            Target::Etcd { client: kv } => {
                kv.put(etcd_pb::PutRequest {
                    key: format!("bench/{client}").into_bytes(),
                    value: value.as_bytes().to_vec(),
                    ..Default::default()
                })
                .await?;
            }
        }
        Ok(())
    }
}

pub fn run(quick: bool) -> Result<Vec<Figure>> {
    let duration = if quick {
        Duration::from_secs(1)
    } else {
        Duration::from_secs(5)
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;

    let cluster = sim::managers()?;
    let leader = cluster.leader("m1")?;
    let socket = cluster.node(&leader).socket();
    let target = runtime.block_on(async {
        let channel = transport::local_channel(&socket).await?;
        let mut client = transport::control_client(channel);
        let writers = CLIENT_COUNTS.iter().copied().max().unwrap_or(1);
        for writer in 0..writers {
            transport::call(
                &mut client,
                &ControlRequest::ServiceCreate {
                    spec: writer_service(writer),
                },
            )
            .await?;
        }
        Ok::<_, anyhow::Error>(Target::Essaim { client })
    })?;
    let mut ours = Vec::new();
    for clients in CLIENT_COUNTS {
        let target = target.clone();
        let stats = runtime.block_on(load(target, clients, duration))?;
        eprintln!(
            "raft writes, essaim, {clients} clients: {:.0}/s",
            stats.per_second
        );
        ours.push(stats);
    }
    drop(cluster);

    let etcd = match which("etcd") {
        Some(binary) => {
            let members = EtcdCluster::start(&binary)?;
            let mut stats = Vec::new();
            for clients in CLIENT_COUNTS {
                let target = runtime.block_on(members.target())?;
                let result = runtime.block_on(load(target, clients, duration))?;
                eprintln!(
                    "raft writes, etcd, {clients} clients: {:.0}/s",
                    result.per_second
                );
                stats.push(result);
            }
            Some(stats)
        }
        None => None,
    };
    Ok(figures(&ours, etcd.as_deref()))
}

fn figures(ours: &[Stats], etcd: Option<&[Stats]>) -> Vec<Figure> {
    let mut figures = Vec::new();
    for (i, clients) in CLIENT_COUNTS.iter().enumerate() {
        let mine = &ours[i];
        let theirs = etcd.map(|e| &e[i]);
        figures.push(Figure {
            name: format!("raft writes/s, {clients} client(s), essaim (service update)"),
            value: mine.per_second,
            unit: "/s",
            target: "see ratio".into(),
            met: true,
            anchor: "etcd 3.2 on 8 vCPUs: 583/s at 1 client, 50,104/s at 1,000".into(),
        });
        figures.push(Figure {
            name: format!("raft write p50 / p99, {clients} client(s), essaim"),
            value: mine.p99_ms,
            unit: "ms",
            target: format!("p50 {:.1} ms; p99 shown", mine.p50_ms),
            met: true,
            anchor: String::new(),
        });
        let Some(theirs) = theirs else {
            figures.push(Figure {
                name: format!("raft writes/s ratio essaim/etcd, {clients} client(s)"),
                value: f64::NAN,
                unit: "",
                target: "etcd not installed: run scripts/install-etcd.sh".into(),
                met: false,
                anchor: String::new(),
            });
            continue;
        };
        figures.push(Figure {
            name: format!("raft writes/s, {clients} client(s), etcd 3.4 (put)"),
            value: theirs.per_second,
            unit: "/s",
            target: format!("p50 {:.1} ms, p99 {:.1} ms", theirs.p50_ms, theirs.p99_ms),
            met: true,
            anchor: "same machine, same run".into(),
        });
        let ratio = mine.per_second / theirs.per_second;
        let (target, met) = if *clients == 1 {
            (
                "p99 no worse than etcd's".to_string(),
                mine.p99_ms <= theirs.p99_ms,
            )
        } else {
            (">= 1.5x etcd".to_string(), ratio >= 1.5)
        };
        figures.push(Figure {
            name: format!("raft writes/s ratio essaim/etcd, {clients} client(s)"),
            value: ratio,
            unit: "x",
            target,
            met,
            anchor: format!(
                "p99 essaim {:.1} ms, etcd {:.1} ms",
                mine.p99_ms, theirs.p99_ms
            ),
        });
    }
    figures
}

/// The service writer `client` updates: no tasks, only a spec to write.
fn writer_service(client: usize) -> essaim_core::model::ServiceSpec {
    let mut spec = sim::sim_service(&format!("writer-{client}"), 0);
    spec.labels.clear();
    spec
}

/// `clients` writers, each writing in a loop for `duration`, each write timed.
async fn load(target: Target, clients: usize, duration: Duration) -> Result<Stats> {
    let value: String = "x".repeat(VALUE_BYTES);
    let started = Instant::now();
    let deadline = started + duration;
    let writers = (0..clients).map(|client| {
        let mut target = target.clone();
        let value = value.clone();
        async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                let began = Instant::now();
                target.write(client, &value).await?;
                latencies.push(began.elapsed().as_secs_f64() * 1000.0);
            }
            Ok::<_, anyhow::Error>(latencies)
        }
    });
    let mut all = Vec::new();
    for result in join_all(writers).await {
        all.extend(result?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let per_second = all.len() as f64 / elapsed;
    Ok(Stats {
        per_second,
        p50_ms: percentile(&mut all, 0.50),
        p99_ms: percentile(&mut all, 0.99),
    })
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
}

/// Three etcd members on loopback, killed when dropped.
struct EtcdCluster {
    members: Vec<Child>,
    client_urls: Vec<String>,
    _dir: tempfile::TempDir,
}

impl EtcdCluster {
    fn start(binary: &Path) -> Result<EtcdCluster> {
        let dir = tempfile::Builder::new().prefix("essaim-etcd-").tempdir()?;
        let peers: Vec<String> = (0..3)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let client_urls: Vec<String> = (0..3)
            .map(|_| format!("http://127.0.0.1:{}", free_port()))
            .collect();
        let initial: Vec<String> = peers
            .iter()
            .enumerate()
            .map(|(i, url)| format!("e{i}={url}"))
            .collect();
        let mut members = Vec::new();
        for i in 0..3 {
            let log = std::fs::File::create(dir.path().join(format!("e{i}.log")))?;
            let child = die_with_parent(&mut Command::new(binary))
                .args(["--name", &format!("e{i}")])
                .arg("--data-dir")
                .arg(dir.path().join(format!("e{i}")))
                .args(["--listen-peer-urls", &peers[i]])
                .args(["--initial-advertise-peer-urls", &peers[i]])
                .args(["--listen-client-urls", &client_urls[i]])
                .args(["--advertise-client-urls", &client_urls[i]])
                .args(["--initial-cluster", &initial.join(",")])
                .args(["--initial-cluster-token", "essaim-bench"])
                .args(["--initial-cluster-state", "new"])
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting etcd")?;
            members.push(child);
        }
        let cluster = EtcdCluster {
            members,
            client_urls,
            _dir: dir,
        };
        cluster.wait_ready()?;
        Ok(cluster)
    }

    /// Waits until a put succeeds: a leader is elected and a quorum is up.
    fn wait_ready(&self) -> Result<()> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let started = Instant::now();
        runtime.block_on(async {
            loop {
                if let Ok(mut target) = self.target().await {
                    if target.write(0, "ready").await.is_ok() {
                        return Ok(());
                    }
                }
                if started.elapsed() > Duration::from_secs(30) {
                    bail!("etcd did not become ready in 30 s");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    /// A client of the first member; etcd passes writes to its leader itself.
    async fn target(&self) -> Result<Target> {
        let channel = tonic::transport::Endpoint::from_shared(self.client_urls[0].clone())?
            .connect()
            .await?;
        Ok(Target::Etcd {
            client: etcd_pb::kv_client::KvClient::new(channel),
        })
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for member in &mut self.members {
            let _ = member.kill();
            let _ = member.wait();
        }
    }
}
