//! Through a VIP against straight to a task: two `essaimd` in network namespaces of their own
//! on an underlay bridge (as the network tests make them), a server task on n2, a client task
//! on n1. From inside the client's network namespace, in the same run and alternating:
//! connections per second (connect, one byte each way, the server closes) and throughput (one
//! connection, 64 KiB writes), to the service's VIP and to the task's own address. The VIP's
//! cost is the kernel's work per connection (one DNAT lookup in the client's namespace).
//!
//! Each path has a server port of its own. On one port, a connection through the VIP can get
//! the client port of a direct one whose TIME_WAIT the server still holds; its SYN carries
//! timestamps from another clock (Linux keys the offset on the addresses the socket sees, the
//! VIP's or the task's), so the server answers it with an ACK and the client waits a second
//! to retry: a cost of the bench, not of the VIP.
//!
//! Needs root; without it the scenario says it is skipped.

use std::fs::File;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use essaim_tests::underlay::{client_task, is_root};
use essaim_tests::{running, wait_for};

use crate::report::Figure;

/// Set in the server task's environment: the bench binary is its program too.
pub const SERVE_ENV: &str = "ESSAIM_BENCH_SERVE";
/// Where the direct path connects; the VIP path connects to the next port.
const DIRECT_PORT: u16 = 9000;
const VIP_PORT: u16 = DIRECT_PORT + 1;
const CHUNK: usize = 64 * 1024;

/// The server task, on `port` and the next one: `p` gets `p` back and the connection closed;
/// `s` is followed by data until the client shuts its side, answered with the byte count.
pub fn serve(port: &str) -> Result<()> {
    let port = port.parse::<u16>()?;
    let next = TcpListener::bind(("0.0.0.0", port + 1))?;
    std::thread::spawn(move || accept(&next));
    accept(&TcpListener::bind(("0.0.0.0", port))?);
    Ok(())
}

fn accept(listener: &TcpListener) {
    for stream in listener.incoming() {
        let Ok(mut stream) = stream else { continue };
        std::thread::spawn(move || {
            let mut kind = [0u8; 1];
            if stream.read_exact(&mut kind).is_err() {
                return;
            }
            match kind[0] {
                b'p' => {
                    let _ = stream.write_all(b"p");
                }
                b's' => {
                    let mut buffer = vec![0u8; CHUNK];
                    let mut total: u64 = 0;
                    while let Ok(n) = stream.read(&mut buffer) {
                        if n == 0 {
                            break;
                        }
                        total += n as u64;
                    }
                    let _ = stream.write_all(&total.to_be_bytes());
                }
                _ => {}
            }
        });
    }
}

pub fn run(quick: bool) -> Result<Vec<Figure>> {
    if !is_root() {
        eprintln!("vip: skipped, nodes in network namespaces need root");
        return Ok(Vec::new());
    }
    essaim_tests::docker::install_test_deps()?;
    let period = Duration::from_millis(if quick { 300 } else { 2_000 });
    let rounds = if quick { 1 } else { 5 };
    let underlay = crate::interrupt::underlay(2)?;
    let cluster = underlay.swarm()?;
    let n1 = cluster.node("n1");
    let dir = cluster.root().join("vip-bench");
    std::fs::create_dir_all(&dir)?;
    let bench = std::env::current_exe()?;
    n1.ok(&["network", "create", "bench"])?;
    n1.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "sink",
        "--network",
        "bench",
        "--constraint",
        "node.hostname==n2",
        "--env",
        &format!("{SERVE_ENV}={DIRECT_PORT}"),
        &bench.to_string_lossy(),
    ])?;
    client_task(n1, "bench", &dir)?;
    let direct = wait_for("the sink task", Duration::from_secs(30), || {
        let tasks = n1.tasks("sink")?;
        Ok(running(&tasks)
            .first()
            .and_then(|t| t.task.networks.first())
            .map(|n| n.address))
    })?;
    wait_for("the client task", Duration::from_secs(30), || {
        Ok(
            (running(&n1.tasks("client")?).len() == 1 && dir.join("client.pid").exists())
                .then_some(()),
        )
    })?;
    let vip = n1.virtual_ip("sink")?;
    let pid = std::fs::read_to_string(dir.join("client.pid"))?;
    let netns = File::open(format!("/proc/{}/ns/net", pid.trim()))?;

    // The measuring thread lives in the client task's namespace.
    let measured = std::thread::spawn(move || -> Result<Measured> {
        // SAFETY: setns on this thread only, with a valid namespace descriptor.
        if unsafe { libc::setns(netns.as_raw_fd(), libc::CLONE_NEWNET) } == -1 {
            bail!(
                "cannot enter the client's namespace: {}",
                std::io::Error::last_os_error()
            );
        }
        let direct = SocketAddr::from((direct, DIRECT_PORT));
        let vip = SocketAddr::from((vip, VIP_PORT));
        for target in [direct, vip] {
            wait_for(
                &format!("{target} to answer"),
                Duration::from_secs(30),
                || Ok(ping(target).ok()),
            )?;
        }
        let mut best = Measured::default();
        for _ in 0..rounds {
            best.direct_rate = best.direct_rate.max(requests(direct, period)?.0);
            best.vip_rate = best.vip_rate.max(requests(vip, period)?.0);
            best.direct_throughput = best.direct_throughput.max(throughput(direct, period)?);
            best.vip_throughput = best.vip_throughput.max(throughput(vip, period)?);
        }
        Ok(best)
    })
    .join()
    .map_err(|_| anyhow::anyhow!("the measuring thread panicked"))??;
    eprintln!("vip: {measured:?}");
    let rate_cost = cost(measured.vip_rate, measured.direct_rate);
    let throughput_cost = cost(measured.vip_throughput, measured.direct_throughput);
    let anchor = "kube-proxy nftables mode: DNAT per connection; IPVS (Swarm) in each sandbox";
    Ok(vec![
        Figure {
            name: "connections/s straight to a task".into(),
            value: measured.direct_rate,
            unit: "conn/s",
            target: "(baseline)".into(),
            met: true,
            anchor: "one client, sequential, across two nodes over VXLAN".into(),
        },
        Figure {
            name: "connections/s through the VIP".into(),
            value: measured.vip_rate,
            unit: "conn/s",
            target: "(see cost)".into(),
            met: true,
            anchor: anchor.into(),
        },
        Figure {
            name: "VIP cost on connections/s".into(),
            value: rate_cost,
            unit: "%",
            target: "< 10 %".into(),
            met: rate_cost < 10.0,
            anchor: anchor.into(),
        },
        Figure {
            name: "throughput straight to a task".into(),
            value: measured.direct_throughput,
            unit: "MB/s",
            target: "(baseline)".into(),
            met: true,
            anchor: "one connection, 64 KiB writes, over VXLAN".into(),
        },
        Figure {
            name: "throughput through the VIP".into(),
            value: measured.vip_throughput,
            unit: "MB/s",
            target: "(see cost)".into(),
            met: true,
            anchor: anchor.into(),
        },
        Figure {
            name: "VIP cost on throughput".into(),
            value: throughput_cost,
            unit: "%",
            target: "< 10 %".into(),
            met: throughput_cost < 10.0,
            anchor: anchor.into(),
        },
    ])
}

#[derive(Debug, Default)]
struct Measured {
    direct_rate: f64,
    vip_rate: f64,
    direct_throughput: f64,
    vip_throughput: f64,
}

/// How much slower the VIP is than the baseline, in percent (0 when it is not slower).
fn cost(vip: f64, direct: f64) -> f64 {
    if direct <= 0.0 {
        return f64::NAN;
    }
    ((direct - vip) / direct * 100.0).max(0.0)
}

/// One request: connect, a byte each way, the server closes.
pub(crate) fn ping(target: SocketAddr) -> Result<()> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.write_all(b"p")?;
    let mut answer = Vec::new();
    // The server closes after its byte: the wait in TIME_WAIT is on its side.
    stream.read_to_end(&mut answer)?;
    if answer != b"p" {
        bail!("{target} answered {answer:?}");
    }
    Ok(())
}

/// Connections completed one after the other to `target` for `period`: per second, and each
/// one's time.
pub fn requests(target: SocketAddr, period: Duration) -> Result<(f64, Vec<Duration>)> {
    let began = Instant::now();
    let mut times = Vec::new();
    while began.elapsed() < period {
        let one = Instant::now();
        ping(target).with_context(|| format!("connection {} to {target}", times.len()))?;
        times.push(one.elapsed());
    }
    Ok((times.len() as f64 / began.elapsed().as_secs_f64(), times))
}

/// What one connection carries for `period`, in MB/s, as the server counted it.
fn throughput(target: SocketAddr, period: Duration) -> Result<f64> {
    let mut stream = TcpStream::connect_timeout(&target, Duration::from_secs(2))?;
    stream.write_all(b"s")?;
    let chunk = vec![0x5au8; CHUNK];
    let began = Instant::now();
    while began.elapsed() < period {
        stream.write_all(&chunk)?;
    }
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut counted = [0u8; 8];
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    stream.read_exact(&mut counted)?;
    let elapsed = began.elapsed().as_secs_f64();
    Ok(u64::from_be_bytes(counted) as f64 / elapsed / 1e6)
}
