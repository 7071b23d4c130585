//! The daemon's flags. Every flag has a default that works on one machine, so plain
//! `essaimd` starts a node.

use essaim_core::model::GenericResources;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use essaim_core::time::parse_duration_ms;
use essaim_manager::replica::raft::RaftTimings;
use essaim_manager::NodeConfig;
use essaim_worker::Runtime;

/// The cluster port when none is given.
pub const DEFAULT_PORT: u16 = 4242;

#[derive(Debug, Parser)]
#[command(
    name = "essaimd",
    version,
    about = "The essaim node daemon: runs a manager or worker of an essaim cluster.",
    after_help = "Logs go to standard error; RUST_LOG filters them (for example RUST_LOG=debug)."
)]
pub struct Args {
    /// Where the node keeps its state (Raft log, identity) [default: $ESSAIM_DATA_DIR,
    /// /var/lib/essaim for root, else ~/.local/share/essaim]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,

    /// The cluster port: other managers and workers connect here
    #[arg(long, value_name = "IP:PORT", default_value_t = SocketAddr::from((Ipv4Addr::UNSPECIFIED, DEFAULT_PORT)))]
    pub listen_addr: SocketAddr,

    /// The address other nodes reach this node at [default: the listen address, or this
    /// machine's first non-loopback IPv4 address when listening on all interfaces]
    #[arg(long, value_name = "IP[:PORT]")]
    pub advertise_addr: Option<String>,

    /// The local socket the essaim shell talks to [default: DATA_DIR/essaim.sock]
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// The node's name in `node ls` [default: this machine's hostname]
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,

    /// How often the Raft leader sends heartbeats to the other managers
    #[arg(long, env = "ESSAIM_RAFT_HEARTBEAT_INTERVAL", value_name = "DURATION", default_value = "50ms", value_parser = duration)]
    pub raft_heartbeat_interval: Duration,

    /// The shortest Raft election timeout; the longest is 1.5 times this. Lower heals faster,
    /// higher tolerates slower machines
    #[arg(long, env = "ESSAIM_RAFT_ELECTION_TIMEOUT", value_name = "DURATION", default_value = "150ms", value_parser = duration)]
    pub raft_election_timeout: Duration,

    /// Take a Raft snapshot every this many log entries (and compact the log behind it)
    #[arg(long, env = "ESSAIM_RAFT_SNAPSHOT_INTERVAL", value_name = "ENTRIES", default_value_t = essaim_manager::replica::raft::DEFAULT_SNAPSHOT_INTERVAL, value_parser = clap::value_parser!(u64).range(10..))]
    pub raft_snapshot_interval: u64,

    /// How this node runs tasks: `docker` (containers on this machine's Docker engine),
    /// `process` (IMAGE is a program on this machine), `sim` (simulated tasks, for scale
    /// tests), or `auto`: docker when an engine answers at DOCKER_HOST or the default socket,
    /// else process
    #[arg(long, env = "ESSAIM_RUNTIME", value_enum, default_value_t = RuntimeArg::Auto)]
    pub runtime: RuntimeArg,

    /// What else this node has to give tasks, as Swarm's --node-generic-resource: KIND=COUNT
    /// (`ssd=2`), or one named unit per flag (`gpu=GPU-3a1f`), which a task reserving it is
    /// told of in DOCKER_RESOURCE_GPU (repeatable; ESSAIM_GENERIC_RESOURCES: comma-separated)
    #[arg(
        long,
        env = "ESSAIM_GENERIC_RESOURCES",
        value_name = "KIND=VALUE",
        value_delimiter = ','
    )]
    pub generic_resource: Vec<String>,

    /// With --runtime sim: how long a simulated task takes to start
    #[arg(long, value_name = "DURATION", default_value = "0ms", value_parser = duration)]
    pub sim_start_delay: Duration,

    /// Host this many simulated worker nodes in this process, instead of a node of its own:
    /// they join the manager at MANAGER_ADDR with --join-token (needs --runtime sim)
    #[arg(long, value_name = "N", requires_all = ["join_token", "manager_addr"], value_parser = clap::value_parser!(u64).range(1..=100_000))]
    pub sim_nodes: Option<u64>,

    /// With --sim-nodes: the worker join token
    #[arg(
        long,
        env = "ESSAIM_JOIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub join_token: Option<String>,

    /// With --sim-nodes: the manager the simulated nodes join
    #[arg(value_name = "MANAGER_ADDR")]
    pub manager_addr: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum RuntimeArg {
    Auto,
    Docker,
    Process,
    Sim,
}

/// `--sim-nodes`: simulated nodes to host, and where they join.
#[derive(Debug, Clone)]
pub struct SimHosting {
    pub count: usize,
    pub join_token: String,
    pub manager_addr: String,
    pub hostname_prefix: String,
}

fn duration(text: &str) -> Result<Duration, String> {
    parse_duration_ms(text).map(Duration::from_millis)
}

/// The flags with every default filled in.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen_addr: SocketAddr,
    pub socket: PathBuf,
    pub node: NodeConfig,
    /// Set when this process hosts simulated nodes rather than a node of its own.
    pub sim_hosting: Option<SimHosting>,
}

impl Args {
    /// Fills in the defaults and checks that the flags agree.
    ///
    /// # Errors
    /// A flag value that cannot work, named with the flag.
    pub fn resolve(&self) -> anyhow::Result<Settings> {
        let data_dir = self
            .data_dir
            .clone()
            .unwrap_or_else(essaim_api::paths::default_data_dir);
        let socket = self
            .socket
            .clone()
            .unwrap_or_else(|| essaim_api::paths::socket_in(&data_dir));
        let advertise_addr = self.advertise_addr()?;
        let hostname = match &self.hostname {
            Some(name) if name.trim().is_empty() => anyhow::bail!("--hostname must not be empty"),
            Some(name) => name.clone(),
            None => system_hostname(),
        };
        if self.raft_election_timeout <= self.raft_heartbeat_interval {
            anyhow::bail!(
                "--raft-election-timeout ({:?}) must be longer than --raft-heartbeat-interval ({:?})",
                self.raft_election_timeout,
                self.raft_heartbeat_interval
            );
        }
        let runtime = match self.runtime {
            // Until the daemon, once started, finds out whether an engine answers.
            RuntimeArg::Auto | RuntimeArg::Process => Runtime::Process,
            RuntimeArg::Docker => Runtime::Docker,
            RuntimeArg::Sim => Runtime::Sim {
                start_delay: self.sim_start_delay,
            },
        };
        let sim_hosting = match (self.sim_nodes, &self.join_token, &self.manager_addr) {
            (Some(count), Some(token), Some(addr)) => {
                if self.runtime != RuntimeArg::Sim {
                    anyhow::bail!("--sim-nodes needs --runtime sim");
                }
                Some(SimHosting {
                    count: count as usize,
                    join_token: token.clone(),
                    manager_addr: addr.clone(),
                    hostname_prefix: hostname.clone(),
                })
            }
            (None, _, Some(addr)) => {
                anyhow::bail!("unexpected argument {addr:?}: a manager address is only taken with --sim-nodes")
            }
            _ => None,
        };
        Ok(Settings {
            listen_addr: self.listen_addr,
            socket,
            sim_hosting,
            node: NodeConfig {
                data_dir,
                advertise_addr: advertise_addr.to_string(),
                hostname,
                raft_timings: RaftTimings {
                    heartbeat: self.raft_heartbeat_interval,
                    election_min: self.raft_election_timeout,
                    election_max: self.raft_election_timeout * 3 / 2,
                    snapshot_interval: self.raft_snapshot_interval,
                },
                runtime,
                generic_resources: GenericResources::parse(
                    self.generic_resource.iter().map(String::as_str),
                )
                .map_err(|e| anyhow::anyhow!("--generic-resource: {e}"))?,
                clock: essaim_manager::clock::Clock::system(),
            },
        })
    }

    fn advertise_addr(&self) -> anyhow::Result<SocketAddr> {
        let port = self.listen_addr.port();
        match &self.advertise_addr {
            Some(text) => {
                if let Ok(addr) = text.parse::<SocketAddr>() {
                    return Ok(addr);
                }
                let ip: IpAddr = text.parse().with_context(|| {
                    format!("--advertise-addr {text:?}: expected IP or IP:PORT")
                })?;
                Ok(SocketAddr::new(ip, port))
            }
            None if self.listen_addr.ip().is_unspecified() => Ok(SocketAddr::new(
                first_external_ipv4().unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
                port,
            )),
            None => Ok(self.listen_addr),
        }
    }
}

fn system_hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "localhost".to_string())
}

/// The first IPv4 address of an interface that is up and not loopback.
fn first_external_ipv4() -> Option<IpAddr> {
    let mut addrs: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `addrs` with a list we free below with freeifaddrs.
    if unsafe { libc::getifaddrs(&mut addrs) } != 0 {
        return None;
    }
    let mut found = None;
    let mut cursor = addrs;
    while !cursor.is_null() {
        // SAFETY: `cursor` is a node of the list getifaddrs returned, not yet freed.
        let entry = unsafe { &*cursor };
        cursor = entry.ifa_next;
        let up = entry.ifa_flags & (libc::IFF_UP as u32) != 0;
        let loopback = entry.ifa_flags & (libc::IFF_LOOPBACK as u32) != 0;
        if entry.ifa_addr.is_null() || !up || loopback {
            continue;
        }
        // SAFETY: ifa_addr is non-null and points to a sockaddr of the family it names.
        let family = i32::from(unsafe { (*entry.ifa_addr).sa_family });
        if family == libc::AF_INET {
            // SAFETY: the family is AF_INET, so the address is a sockaddr_in.
            let sin = unsafe { &*(entry.ifa_addr as *const libc::sockaddr_in) };
            found = Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(
                sin.sin_addr.s_addr,
            ))));
            break;
        }
    }
    // SAFETY: `addrs` came from getifaddrs and is freed once.
    unsafe { libc::freeifaddrs(addrs) };
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_essaimd_has_working_defaults() {
        let args = Args::try_parse_from(["essaimd"]).expect("defaults parse");
        let settings = args.resolve().expect("defaults resolve");
        assert_eq!(settings.listen_addr.port(), DEFAULT_PORT);
        assert!(settings.socket.ends_with("essaim.sock"));
        assert!(settings.node.advertise_addr.ends_with(":4242"));
    }

    #[test]
    fn an_advertise_ip_without_port_takes_the_listen_port() {
        let args = Args::try_parse_from([
            "essaimd",
            "--listen-addr",
            "127.0.0.1:4001",
            "--advertise-addr",
            "127.0.0.2",
        ])
        .expect("parse");
        assert_eq!(
            args.resolve().expect("resolve").node.advertise_addr,
            "127.0.0.2:4001"
        );
    }

    #[test]
    fn sim_nodes_need_the_sim_runtime_a_token_and_a_manager() {
        let args = Args::try_parse_from([
            "essaimd",
            "--runtime",
            "sim",
            "--sim-nodes",
            "100",
            "--join-token",
            "T",
            "127.0.0.1:4242",
        ])
        .expect("parse");
        let hosting = args
            .resolve()
            .expect("resolve")
            .sim_hosting
            .expect("hosting");
        assert_eq!(hosting.count, 100);
        assert_eq!(hosting.manager_addr, "127.0.0.1:4242");

        assert!(Args::try_parse_from(["essaimd", "--sim-nodes", "3", "127.0.0.1:1"]).is_err());
        let args = Args::try_parse_from([
            "essaimd",
            "--sim-nodes",
            "3",
            "--join-token",
            "T",
            "127.0.0.1:4242",
        ])
        .expect("parse");
        let err = args.resolve().expect_err("process runtime").to_string();
        assert!(err.contains("--runtime sim"), "{err}");
    }

    #[test]
    fn bad_flag_values_name_the_flag() {
        let args = Args::try_parse_from(["essaimd", "--advertise-addr", "nowhere"]).expect("parse");
        let err = args.resolve().expect_err("bad address").to_string();
        assert!(err.contains("--advertise-addr"), "{err}");
        assert!(Args::try_parse_from(["essaimd", "--listen-addr", "x"]).is_err());
        let args =
            Args::try_parse_from(["essaimd", "--raft-election-timeout", "10ms"]).expect("parse");
        assert!(args
            .resolve()
            .expect_err("too short")
            .to_string()
            .contains("--raft-election-timeout"));
    }
}
