//! Machines for the tests of cluster networks: each node a network namespace of its own,
//! joined to the others by a bridge in one more namespace, the underlay. Everything is made
//! under names of this test process and deleted when the [`Underlay`] goes, also when the
//! test fails; deleting a namespace takes its devices with it.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::{Cluster, Daemon};

/// Creates the service `client`: one task on n1, on `network`, that only sleeps, to reach
/// the others from (`nsenter --target PID`, as `docker exec`); its PID in `dir/client.pid`.
///
/// # Errors
/// The service could not be created.
pub fn client_task(manager: &Daemon, network: &str, dir: &Path) -> Result<()> {
    let script = format!("echo $$ > {}/client.pid; exec sleep 3600", dir.display());
    manager.ok(&[
        "service",
        "create",
        "--detach",
        "--name",
        "client",
        "--network",
        network,
        "--constraint",
        "node.hostname==n1",
        "--stop-grace-period",
        "1s",
        "sh",
        "-c",
        &script,
    ])?;
    Ok(())
}

/// Whether this process may make network namespaces.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Runs `ip ARGS`.
///
/// # Errors
/// It could not run, or failed.
pub fn ip(args: &[&str]) -> Result<String> {
    let output = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("running ip")?;
    if !output.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

pub struct Underlay {
    prefix: String,
    nodes: usize,
}

impl Underlay {
    /// `nodes` node namespaces, each with `under0` at 192.168.77.N/24 and a forwarding
    /// kernel, as a Docker host has.
    ///
    /// # Errors
    /// A namespace or device could not be made; what was made is deleted.
    pub fn new(nodes: usize) -> Result<Underlay> {
        // Tests of one process run side by side, each on an underlay of its own.
        static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let made = MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let underlay = Underlay {
            prefix: format!("es-e2e-{}-{made}", std::process::id()),
            nodes,
        };
        let switch = underlay.switch();
        ip(&["netns", "add", &switch])?;
        ip(&["-n", &switch, "link", "add", "under", "type", "bridge"])?;
        ip(&["-n", &switch, "link", "set", "under", "up"])?;
        for n in 1..=nodes {
            let node = underlay.netns(n);
            let port = format!("p{n}");
            ip(&["netns", "add", &node])?;
            ip(&[
                "-n", &switch, "link", "add", &port, "type", "veth", "peer", "name", "under0",
                "netns", &node,
            ])?;
            ip(&["-n", &switch, "link", "set", &port, "master", "under", "up"])?;
            ip(&[
                "-n",
                &node,
                "addr",
                "add",
                &format!("{}/24", underlay.ip(n)),
                "dev",
                "under0",
            ])?;
            ip(&["-n", &node, "link", "set", "under0", "up"])?;
            ip(&["-n", &node, "link", "set", "lo", "up"])?;
            ip(&[
                "netns",
                "exec",
                &node,
                "sysctl",
                "-qw",
                "net.ipv4.ip_forward=1",
            ])?;
        }
        // A machine outside the cluster, on the same wire: the clients of published ports.
        let outside = underlay.outside();
        ip(&["netns", "add", &outside])?;
        ip(&[
            "-n", &switch, "link", "add", "px", "type", "veth", "peer", "name", "under0", "netns",
            &outside,
        ])?;
        ip(&["-n", &switch, "link", "set", "px", "master", "under", "up"])?;
        let address = format!("{}/24", underlay.outside_ip());
        ip(&["-n", &outside, "addr", "add", &address, "dev", "under0"])?;
        ip(&["-n", &outside, "link", "set", "under0", "up"])?;
        ip(&["-n", &outside, "link", "set", "lo", "up"])?;
        Ok(underlay)
    }

    /// The namespace of a machine on the underlay that is no node: a client from outside.
    pub fn outside(&self) -> String {
        format!("{}-x", self.prefix)
    }

    /// The address of the machine outside the cluster.
    pub fn outside_ip(&self) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 77, 254)
    }

    /// Runs `f` on a thread of its own in the network namespace `netns` (as made by
    /// `ip netns add`), for sockets opened from there; returns what `f` returns.
    ///
    /// # Errors
    /// The namespace cannot be entered.
    pub fn run_in<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> Result<T> {
        let path = format!("/run/netns/{netns}");
        let namespace = std::fs::File::open(&path).with_context(|| format!("opening {path}"))?;
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    use std::os::fd::AsRawFd;
                    // SAFETY: setns on this thread only, with a namespace file kept open.
                    if unsafe { libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET) } == -1 {
                        bail!("cannot enter {path}: {}", std::io::Error::last_os_error());
                    }
                    Ok(f())
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the thread in {netns} panicked"))?
        })
    }

    fn switch(&self) -> String {
        format!("{}-u", self.prefix)
    }

    /// The namespace of node `n` (from 1).
    pub fn netns(&self, n: usize) -> String {
        format!("{}-n{n}", self.prefix)
    }

    /// The address of node `n` (from 1) on the underlay.
    pub fn ip(&self, n: usize) -> Ipv4Addr {
        Ipv4Addr::new(192, 168, 77, n as u8)
    }

    /// A swarm of one `essaimd` per node namespace, named n1, n2...: n1 the manager, the
    /// others workers, all ready.
    ///
    /// # Errors
    /// A daemon did not start, or the swarm did not form in time.
    pub fn swarm(&self) -> Result<Cluster> {
        self.swarm_with_env(&[])
    }

    /// As [`Underlay::swarm`], every daemon with extra environment variables (such as
    /// `ESSAIM_RUNTIME=docker`).
    ///
    /// # Errors
    /// As [`Underlay::swarm`].
    pub fn swarm_with_env(&self, env: &[(&str, &str)]) -> Result<Cluster> {
        let mut cluster = Cluster::empty()?;
        for n in 1..=self.nodes {
            let host = self.ip(n).to_string();
            cluster.add_in_netns(&format!("n{n}"), &self.netns(n), &host, env)?;
        }
        let n1 = cluster.node("n1");
        n1.ok(&["swarm", "init", "--advertise-addr", &n1.addr()])?;
        let token = n1.ok(&["swarm", "join-token", "-q", "worker"])?;
        let leader = n1.addr();
        for n in 2..=self.nodes {
            cluster.node(&format!("n{n}")).join(&token, &leader)?;
        }
        let count = self.nodes;
        cluster.wait_for_nodes(
            "n1",
            "every node ready",
            std::time::Duration::from_secs(30),
            |nodes| nodes.len() == count && nodes.iter().all(|n| n["status"]["state"] == "ready"),
        )?;
        Ok(cluster)
    }

    /// The names of the devices essaim made in node `n`'s namespace.
    ///
    /// # Errors
    /// `ip` failed.
    pub fn essaim_devices(&self, n: usize) -> Result<Vec<String>> {
        let links = ip(&["-n", &self.netns(n), "-o", "link", "show"])?;
        Ok(links
            .lines()
            .filter_map(|line| line.split(": ").nth(1))
            .map(|name| name.split('@').next().unwrap_or(name).to_string())
            .filter(|name| name.starts_with("es-"))
            .collect())
    }
}

impl Underlay {
    /// A shell command that deletes this underlay's namespaces, for a process that exits
    /// without dropping it (a benchmark stopped by a signal).
    pub fn removal_command(&self) -> String {
        let deletions: Vec<String> = self
            .namespaces()
            .iter()
            .map(|name| format!("ip netns del {name}"))
            .collect();
        format!("({}) 2>/dev/null", deletions.join("; "))
    }

    /// Every namespace this underlay made: the nodes, the outside client and the switch.
    fn namespaces(&self) -> Vec<String> {
        let mut names: Vec<String> = (1..=self.nodes).map(|n| self.netns(n)).collect();
        names.push(self.outside());
        names.push(self.switch());
        names
    }
}

impl Drop for Underlay {
    fn drop(&mut self) {
        for name in self.namespaces() {
            let _ = ip(&["netns", "del", &name]);
        }
    }
}
