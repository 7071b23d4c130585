//! The command table: every command, flag and argument of `essaim`, from which clap derives
//! parsing, `--help` and usage errors.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};
use essaim_api::transport::Host;
use essaim_core::model::{
    Availability, Checkpoint, EndpointMode, FailureAction, FileReference, HealthCheck, Ipv4Subnet,
    Mount, NetworkAttachmentConfig, NetworkDriver, PortConfig, RestartCondition, Role, TaskState,
    UpdateConfig, UpdateOrder,
};
use essaim_core::time::parse_duration_ms;
use essaim_core::units::{parse_cpus, parse_key_value, parse_memory, parse_port};

pub mod container;
pub mod examples;
// Only the test that keeps docs/cli.md true uses it.
#[cfg(test)]
pub mod reference;

/// The top command's `--help`: what essaim is, where it connects, and what its exit codes mean.
const LONG_ABOUT: &str = "\
essaim: drive an essaim cluster (a Docker-Swarm-like orchestrator).

By default every command talks to the essaim daemon (essaimd) on this machine through its \
local socket, which passes cluster-wide requests on to the Raft leader. With \
-H tcp://MANAGER:PORT and --tls-dir DIR, it talks to a manager's cluster port directly, over \
mutual TLS, with a client bundle made by 'essaim swarm ca issue-client --out DIR' (commands \
about the local node itself, such as info or swarm init/join/leave, need the local socket).

Exit codes:
  0  success (also when the reader of stdout goes away, as with `essaim node ls | head -1`)
  1  the command failed (the daemon or the cluster refused it); with several NODE arguments,
     at least one of them failed (the command goes on past each failure; when all failures
     share another code, such as 3, it exits with that one)
  2  usage error (unknown command or flag, bad value, unsupported host, tcp:// without
     --tls-dir, a client bundle that is missing, unreadable or unusable, or that
     'swarm ca issue-client' would overwrite without --force)
  3  the daemon or the cluster could not be reached, or the managers have no quorum
  4  timeout: a wait ran out (what it started goes on)
  5  essaim run --lock: another run holds the lock (or the lock was lost)
  130  interrupted (Ctrl-C) while waiting: what the command started goes on

With no command, essaim opens its interactive shell: the same commands, TAB completion of \
commands, flags and live names, history, and Rhai expressions. When no daemon answers at the \
default socket, the shell starts an embedded single-node cluster that keeps its state in the \
data dir and stops when the shell exits.";

#[derive(Debug, Parser)]
#[command(
    name = "essaim",
    version,
    about = "Drive an essaim cluster",
    long_about = LONG_ABOUT,
    // Output must never contain escape codes, help and usage errors included.
    color = clap::ColorChoice::Never,
)]
pub struct Cli {
    /// Daemon to connect to: unix:///path/to/essaim.sock, or tcp://host:port (a manager's
    /// cluster port; needs --tls-dir)
    ///
    /// Default: the daemon's local socket, unix://<data dir>/essaim.sock, where the data dir is
    /// $ESSAIM_DATA_DIR, else /var/lib/essaim for root, else ~/.local/share/essaim.
    #[arg(
        short = 'H',
        long,
        env = "ESSAIM_HOST",
        global = true,
        value_name = "HOST",
        value_parser = |text: &str| text.parse::<Host>()
    )]
    pub host: Option<Host>,

    /// Client bundle for tcp:// hosts: a directory holding client.crt, client.key and ca.crt
    ///
    /// Make one on a manager with 'essaim swarm ca issue-client --out DIR'. Unused with unix://
    /// hosts, which need no certificate.
    #[arg(long, env = "ESSAIM_TLS_DIR", global = true, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,

    /// Evaluate a Rhai script given as text, as `essaim run -c EXPR` does
    #[arg(short = 'c', long = "eval", value_name = "EXPR")]
    pub eval: Option<String>,

    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Manage the swarm
    Swarm {
        #[command(subcommand)]
        command: SwarmCommand,
    },
    /// Manage the nodes of the swarm
    Node {
        #[command(subcommand)]
        command: NodeCommand,
    },
    /// Manage the swarm's networks
    Network {
        #[command(subcommand)]
        command: NetworkCommand,
    },
    /// Manage the swarm's secrets: data given to services as files, kept encrypted
    Secret {
        #[command(subcommand)]
        command: SecretCommand,
    },
    /// Manage the swarm's configs: data given to services as files
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Manage the services of the swarm
    Service {
        #[command(subcommand)]
        command: ServiceCommand,
    },
    /// Deploy and manage stacks: the services of compose files, as one
    Stack {
        #[command(subcommand)]
        command: StackCommand,
    },
    /// Show this node's view of itself and its swarm
    #[command(after_long_help = examples::INFO)]
    Info(InfoArgs),
    /// Run a command again each time the cluster changes, showing its latest output
    #[command(after_long_help = examples::WATCH)]
    Watch(WatchArgs),
    /// Run a Rhai script against the cluster (see docs/scripting.md)
    #[command(after_long_help = examples::RUN)]
    Run(RunArgs),
}

/// `essaim run`: a script as a cron job runs it.
#[derive(Debug, Default, Args)]
pub struct RunArgs {
    /// The script file (.rhai); `import "lib"` looks next to it, then in $ESSAIM_SCRIPTS_DIR
    #[arg(value_name = "FILE", required_unless_present = "eval")]
    pub file: Option<PathBuf>,
    /// Evaluate this text instead of a file
    #[arg(
        short = 'c',
        long = "eval",
        value_name = "EXPR",
        conflicts_with = "file"
    )]
    pub eval: Option<String>,
    /// Arguments for the script, in its `argv` array
    #[arg(value_name = "ARG")]
    pub argv: Vec<String>,
    /// A named argument, in the script's `args` map (repeatable)
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub arg: Vec<(String, String)>,
    /// Stop the script after this long, with exit code 4 (like 30s or 5m)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub timeout: Option<u64>,
    /// How to print the script's result: a table or listing, or one JSON document
    /// {"ok", "result" or "error", "changes"}
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Hold this cluster-wide lock while the script runs; if another run holds it, exit 5 at
    /// once
    #[arg(long, value_name = "NAME")]
    pub lock: Option<String>,
    /// Stop the script after this many operations, as a runaway [default: 50000000]
    #[arg(long, value_name = "N")]
    pub max_operations: Option<u64>,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The command to run, as it would be typed after `essaim`
    #[arg(
        value_name = "COMMAND",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum SwarmCommand {
    /// Initialize a swarm, with this node as its first manager
    #[command(after_long_help = examples::SWARM_INIT)]
    Init(InitArgs),
    /// Join a swarm as a worker or a manager, as the token says
    #[command(after_long_help = examples::SWARM_JOIN)]
    Join(JoinArgs),
    /// Show (and optionally rotate) the join token of a role
    #[command(after_long_help = examples::SWARM_JOIN_TOKEN)]
    JoinToken(JoinTokenArgs),
    /// Leave the swarm
    #[command(after_long_help = examples::SWARM_LEAVE)]
    Leave(LeaveArgs),
    /// Show the swarm's settings
    #[command(after_long_help = examples::SWARM_INSPECT)]
    Inspect(SwarmInspectArgs),
    /// Change the swarm's settings
    #[command(after_long_help = examples::SWARM_UPDATE)]
    Update(SwarmUpdateArgs),
    /// Show or rotate the swarm's certificate authority, or issue client bundles
    ///
    /// With no flag, prints the CA certificate (PEM).
    Ca(CaArgs),
}

#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct CaArgs {
    /// Replace the CA: every node moves to a new one while both are trusted, then the old
    /// one is dropped (join tokens change too)
    #[arg(long)]
    pub rotate: bool,
    /// With --rotate: return at once instead of waiting for the rotation to finish
    #[arg(short, long, requires = "rotate")]
    pub detach: bool,
    #[command(subcommand)]
    pub command: Option<CaCommand>,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Address other nodes reach this node at (host:port)
    #[arg(long, value_name = "ADDR")]
    pub advertise_addr: Option<String>,
    /// Address pool that networks' subnets come from (repeatable; default 10.0.0.0/8)
    #[arg(long, value_name = "CIDR", value_parser = |text: &str| text.parse::<Ipv4Subnet>())]
    pub default_addr_pool: Vec<Ipv4Subnet>,
    /// Size of the subnets cut from the pool, in prefix bits (default 24)
    #[arg(long, value_name = "BITS")]
    pub default_addr_pool_mask_length: Option<u8>,
}

#[derive(Debug, Subcommand)]
pub enum NetworkCommand {
    /// Create a network that spans the swarm's nodes
    #[command(after_long_help = examples::NETWORK_CREATE)]
    Create(NetworkCreateArgs),
    /// List the networks
    #[command(visible_alias = "list", after_long_help = examples::NETWORK_LS)]
    Ls(NetworkLsArgs),
    /// Show one or more networks in detail
    #[command(after_long_help = examples::NETWORK_INSPECT)]
    Inspect(NetworkInspectArgs),
    /// Remove one or more networks (refused while a service uses one)
    #[command(visible_alias = "remove", after_long_help = examples::NETWORK_RM)]
    Rm(NetworkRmArgs),
}

#[derive(Debug, Args)]
pub struct NetworkCreateArgs {
    /// Driver: overlay, a network over all the swarm's nodes
    #[arg(short, long, value_name = "DRIVER", default_value = "overlay", value_parser = |text: &str| text.parse::<NetworkDriver>())]
    pub driver: NetworkDriver,
    /// Subnet, inside the swarm's address pool (default: the pool's next free one)
    #[arg(long, value_name = "CIDR", value_parser = |text: &str| text.parse::<Ipv4Subnet>())]
    pub subnet: Option<Ipv4Subnet>,
    /// Gateway address in the subnet (default: its first address)
    #[arg(long, value_name = "IP", requires = "subnet")]
    pub gateway: Option<std::net::Ipv4Addr>,
    /// Let standalone containers attach too
    #[arg(long)]
    pub attachable: bool,
    /// A label (repeatable)
    #[arg(short, long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub label: Vec<(String, String)>,
    /// Network name
    #[arg(value_name = "NAME", value_parser = parse_network_name)]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct NetworkLsArgs {
    /// Only display IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct NetworkInspectArgs {
    /// Output format: json (docker's default), or table for a listing
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Network ID, ID prefix or name
    #[arg(value_name = "NETWORK", required = true)]
    pub networks: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NetworkRmArgs {
    /// Network ID, ID prefix or name
    #[arg(value_name = "NETWORK", required = true)]
    pub networks: Vec<String>,
}

/// `secret ...`: the same four commands as `config ...`, each with its own examples.
#[derive(Debug, Subcommand)]
pub enum SecretCommand {
    /// Create a secret from a file, or from standard input with -
    #[command(after_long_help = examples::SECRET_CREATE)]
    Create(FileCreateArgs),
    /// List the secrets
    #[command(visible_alias = "list", after_long_help = examples::SECRET_LS)]
    Ls(FileLsArgs),
    /// Show one or more secrets in detail, never their data
    #[command(after_long_help = examples::SECRET_INSPECT)]
    Inspect(FileInspectArgs),
    /// Remove one or more secrets (refused while a service uses one)
    #[command(visible_alias = "remove", after_long_help = examples::SECRET_RM)]
    Rm(FileRmArgs),
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Create a config from a file, or from standard input with -
    #[command(after_long_help = examples::CONFIG_CREATE)]
    Create(FileCreateArgs),
    /// List the configs
    #[command(visible_alias = "list", after_long_help = examples::CONFIG_LS)]
    Ls(FileLsArgs),
    /// Show one or more configs in detail, with their data
    #[command(after_long_help = examples::CONFIG_INSPECT)]
    Inspect(FileInspectArgs),
    /// Remove one or more configs (refused while a service uses one)
    #[command(visible_alias = "remove", after_long_help = examples::CONFIG_RM)]
    Rm(FileRmArgs),
}

/// What `secret ...` and `config ...` ask, whichever the kind.
#[derive(Debug)]
pub enum FileCommand {
    Create(FileCreateArgs),
    Ls(FileLsArgs),
    Inspect(FileInspectArgs),
    Rm(FileRmArgs),
}

impl From<SecretCommand> for FileCommand {
    fn from(command: SecretCommand) -> Self {
        match command {
            SecretCommand::Create(args) => FileCommand::Create(args),
            SecretCommand::Ls(args) => FileCommand::Ls(args),
            SecretCommand::Inspect(args) => FileCommand::Inspect(args),
            SecretCommand::Rm(args) => FileCommand::Rm(args),
        }
    }
}

impl From<ConfigCommand> for FileCommand {
    fn from(command: ConfigCommand) -> Self {
        match command {
            ConfigCommand::Create(args) => FileCommand::Create(args),
            ConfigCommand::Ls(args) => FileCommand::Ls(args),
            ConfigCommand::Inspect(args) => FileCommand::Inspect(args),
            ConfigCommand::Rm(args) => FileCommand::Rm(args),
        }
    }
}

#[derive(Debug, Args)]
pub struct FileCreateArgs {
    /// A label (repeatable)
    #[arg(short, long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub label: Vec<(String, String)>,
    /// Its name: letters, digits, '_', '.' and '-'
    #[arg(value_name = "NAME")]
    pub name: String,
    /// The file that holds the data, or - for standard input
    #[arg(value_name = "FILE")]
    pub file: String,
}

#[derive(Debug, Args)]
pub struct FileLsArgs {
    /// Only display IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct FileInspectArgs {
    /// Print the information in a human friendly format (same as --format table)
    #[arg(long, conflicts_with = "format")]
    pub pretty: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// ID, ID prefix or name
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct FileRmArgs {
    /// ID, ID prefix or name
    #[arg(value_name = "NAME", required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, Args)]
pub struct JoinArgs {
    /// Token for entry into the swarm
    #[arg(long)]
    pub token: String,
    /// Address other nodes reach this node at (host:port)
    #[arg(long, value_name = "ADDR")]
    pub advertise_addr: Option<String>,
    /// Address of a manager of the swarm
    #[arg(value_name = "HOST:PORT")]
    pub remote_addr: String,
}

#[derive(Debug, Args)]
pub struct JoinTokenArgs {
    /// Only display the token
    #[arg(short, long)]
    pub quiet: bool,
    /// Rotate the join token first
    #[arg(long)]
    pub rotate: bool,
    /// The role the token admits
    #[arg(value_name = "worker|manager", value_parser = |text: &str| text.parse::<Role>())]
    pub role: Role,
}

#[derive(Debug, Args)]
pub struct LeaveArgs {
    /// Leave even if this breaks the managers' quorum or the cluster cannot be told
    #[arg(short, long)]
    pub force: bool,
    /// Do not ask for confirmation (a manager leaving is asked about when interactive)
    #[arg(short, long)]
    pub yes: bool,
}

#[derive(Debug, Args)]
pub struct SwarmInspectArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
}

/// `swarm update`: each flag changes one setting, the others stay as they are; at least one
/// is required.
#[derive(Debug, Args)]
#[group(id = "changes", required = true, multiple = true)]
pub struct SwarmUpdateArgs {
    /// Validity period of node certificates (like 2160h); nodes renew theirs at half of it
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub cert_expiry: Option<u64>,
    /// How often nodes report to the managers (like 5s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub dispatcher_heartbeat: Option<u64>,
    /// How many dead tasks to keep per slot
    #[arg(long, value_name = "N")]
    pub task_history_limit: Option<u32>,
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Issue a client bundle, for driving the swarm with essaim -H tcp://... --tls-dir DIR
    IssueClient(IssueClientArgs),
}

#[derive(Debug, Args)]
pub struct IssueClientArgs {
    /// Directory to write client.crt, client.key and ca.crt to (created if missing)
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
    /// Name the certificate is issued to (default: $USER, else "operator")
    #[arg(long)]
    pub name: Option<String>,
    /// Overwrite a bundle already in DIR
    #[arg(short, long)]
    pub force: bool,
}

#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// List the nodes of the swarm
    #[command(visible_alias = "list", after_long_help = examples::NODE_LS)]
    Ls(NodeLsArgs),
    /// Show one or more nodes in detail
    #[command(after_long_help = examples::NODE_INSPECT)]
    Inspect(NodeInspectArgs),
    /// Change a node's availability, role or labels
    #[command(after_long_help = examples::NODE_UPDATE)]
    Update(NodeUpdateArgs),
    /// Promote one or more nodes to managers
    #[command(after_long_help = examples::NODE_PROMOTE)]
    Promote(NodesArgs),
    /// Demote one or more managers to workers
    #[command(after_long_help = examples::NODE_DEMOTE)]
    Demote(NodeDemoteArgs),
    /// Remove one or more nodes from the swarm
    #[command(visible_alias = "remove", after_long_help = examples::NODE_RM)]
    Rm(NodeRmArgs),
    /// List the tasks running on a node
    #[command(after_long_help = examples::NODE_PS)]
    Ps(NodePsArgs),
}

#[derive(Debug, Args)]
pub struct NodePsArgs {
    #[command(flatten)]
    pub ps: PsArgs,
    /// Node ID, ID prefix or hostname
    #[arg(value_name = "NODE")]
    pub node: String,
}

/// What `service ps` and `node ps` share.
#[derive(Debug, Args)]
pub struct PsArgs {
    /// Only display task IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Show all tasks, including those that stopped and will not run again
    #[arg(short, long)]
    pub all: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    /// Only show the tasks that match: desired-state=running|shutdown|accepted, or node=NODE
    /// (a hostname, ID or ID prefix)
    ///
    /// Repeatable: tasks must match every key given, and any of the values given for one key.
    /// A desired-state filter also shows the stopped tasks it matches, as -a would.
    #[arg(short, long, value_name = "KEY=VALUE", value_parser = parse_task_filter)]
    pub filter: Vec<TaskFilter>,
}

/// A `--filter` of `service ps` and `node ps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskFilter {
    /// Tasks the managers want in this state.
    DesiredState(TaskState),
    /// Tasks on the node with this hostname, ID or ID prefix.
    Node(String),
}

/// The desired states `--filter desired-state=` takes, as docker's.
const FILTER_DESIRED_STATES: [TaskState; 3] =
    [TaskState::Running, TaskState::Shutdown, TaskState::Accepted];

/// Reads a `--filter` value of `service ps` and `node ps`: `KEY=VALUE`.
///
/// # Errors
/// No `=`, an unknown key (named), or a value the key does not take.
pub fn parse_task_filter(text: &str) -> Result<TaskFilter, String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("invalid filter {text:?}: expected KEY=VALUE"))?;
    let hint = |word: &str, candidates: &[&str]| {
        essaim_core::suggest::closest(word, candidates.iter().copied())
            .map_or(String::new(), |close| format!("; did you mean {close}?"))
    };
    match key {
        "desired-state" => value
            .parse::<TaskState>()
            .ok()
            .filter(|state| FILTER_DESIRED_STATES.contains(state))
            .map(TaskFilter::DesiredState)
            .ok_or_else(|| {
                let states = FILTER_DESIRED_STATES.map(TaskState::as_str);
                format!(
                    "invalid desired-state {value:?}: expected running, shutdown or accepted{}",
                    hint(value, &states)
                )
            }),
        "node" if !value.is_empty() => Ok(TaskFilter::Node(value.to_string())),
        "node" => Err("invalid filter \"node=\": the node is empty".to_string()),
        other => Err(format!(
            "unknown filter key {other:?}: expected desired-state or node{}",
            hint(other, &["desired-state", "node"])
        )),
    }
}

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Create a new service
    #[command(after_long_help = examples::SERVICE_CREATE)]
    Create(Box<ServiceCreateArgs>),
    /// List the services
    #[command(visible_alias = "list", after_long_help = examples::SERVICE_LS)]
    Ls(ServiceLsArgs),
    /// List the tasks of a service
    #[command(after_long_help = examples::SERVICE_PS)]
    Ps(ServicePsArgs),
    /// Show one or more services in detail
    #[command(after_long_help = examples::SERVICE_INSPECT)]
    Inspect(ServiceInspectArgs),
    /// Change a service: its image, command, environment, placement, resources, ports...
    // The generated usage would list all two dozen flags of the required group.
    #[command(
        override_usage = "essaim service update [OPTIONS] SERVICE",
        after_long_help = examples::SERVICE_UPDATE
    )]
    Update(Box<ServiceUpdateArgs>),
    /// Scale one or more replicated services
    #[command(after_long_help = examples::SERVICE_SCALE)]
    Scale(ServiceScaleArgs),
    /// Remove one or more services
    #[command(visible_alias = "remove", after_long_help = examples::SERVICE_RM)]
    Rm(ServiceRmArgs),
    /// Go back to a service's spec before its last update
    #[command(after_long_help = examples::SERVICE_ROLLBACK)]
    Rollback(ServiceRollbackArgs),
    /// Show the output of a service's tasks, from every node that runs them
    #[command(after_long_help = examples::SERVICE_LOGS)]
    Logs(ServiceLogsArgs),
    /// Wait until a service has converged: all its tasks running the current spec
    #[command(after_long_help = examples::SERVICE_WAIT)]
    Wait(ServiceWaitArgs),
}

#[derive(Debug, Args)]
pub struct ServiceRollbackArgs {
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Service ID, ID prefix or name
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

/// How an update (and a rollback) replaces tasks: `--update-*` and `--rollback-*`, with
/// Swarm's defaults; `--update-pause-after` is essaim's checkpoint for phased rollouts.
#[derive(Debug, Default, Args)]
pub struct UpdateFlags {
    /// Tasks updated at once; 0 updates all at once [default: 1]
    #[arg(long, value_name = "N")]
    pub update_parallelism: Option<u64>,
    /// Time between updating one batch and the next [default: 0s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub update_delay: Option<u64>,
    /// How long a new task must run (and stay healthy) to count as updated [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub update_monitor: Option<u64>,
    /// What to do when too many new tasks fail: pause, continue or rollback [default: pause]
    #[arg(long, value_name = "ACTION", value_parser = |t: &str| t.parse::<FailureAction>())]
    pub update_failure_action: Option<FailureAction>,
    /// Share of tasks that may fail during an update, 0 to 1 [default: 0]
    #[arg(long, value_name = "RATIO", value_parser = parse_ratio)]
    pub update_max_failure_ratio: Option<u64>,
    /// stop-first (stop the old task, then start its replacement) or start-first [default:
    /// stop-first]
    #[arg(long, value_name = "ORDER", value_parser = |t: &str| t.parse::<UpdateOrder>())]
    pub update_order: Option<UpdateOrder>,
    /// Pause the update once this many tasks (N) or this share of the replicas (P%) are
    /// updated: a checkpoint, kept in the service's update settings for later updates until
    /// `none` clears it; with `--continue`, the next checkpoint
    #[arg(long, value_name = "N|P%|none", value_parser = parse_pause_after)]
    pub update_pause_after: Option<PauseAfter>,
    /// Tasks rolled back at once; 0 for all at once [default: 1]
    #[arg(long, value_name = "N")]
    pub rollback_parallelism: Option<u64>,
    /// Time between rolling back one batch and the next [default: 0s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub rollback_delay: Option<u64>,
    /// How long a rolled-back task must run to count [default: 5s]
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub rollback_monitor: Option<u64>,
    /// What to do when a rollback fails: pause or continue [default: pause]
    #[arg(long, value_name = "ACTION", value_parser = |t: &str| t.parse::<FailureAction>())]
    pub rollback_failure_action: Option<FailureAction>,
    /// Share of tasks that may fail during a rollback, 0 to 1 [default: 0]
    #[arg(long, value_name = "RATIO", value_parser = parse_ratio)]
    pub rollback_max_failure_ratio: Option<u64>,
    /// stop-first or start-first [default: stop-first]
    #[arg(long, value_name = "ORDER", value_parser = |t: &str| t.parse::<UpdateOrder>())]
    pub rollback_order: Option<UpdateOrder>,
}

/// `--update-pause-after`: a checkpoint, or `none` (no checkpoint: clears the service's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PauseAfter(pub Option<Checkpoint>);

/// Reads `3`, `50%` or `none`.
///
/// # Errors
/// Anything else, or a checkpoint out of range.
pub fn parse_pause_after(text: &str) -> Result<PauseAfter, String> {
    if text.trim() == "none" {
        return Ok(PauseAfter(None));
    }
    text.parse::<Checkpoint>()
        .map(|checkpoint| PauseAfter(Some(checkpoint)))
        .map_err(|error| format!("{error}; or none for no checkpoint"))
}

impl UpdateFlags {
    /// Sets what the flags give in the update and rollback settings; the rest stays.
    pub fn apply(&self, update: &mut UpdateConfig, rollback: &mut UpdateConfig) {
        let set = |config: &mut UpdateConfig,
                   parallelism: Option<u64>,
                   delay: Option<u64>,
                   monitor: Option<u64>,
                   action: Option<FailureAction>,
                   ratio: Option<u64>,
                   order: Option<UpdateOrder>| {
            if let Some(value) = parallelism {
                config.parallelism = value;
            }
            if let Some(value) = delay {
                config.delay_ms = value;
            }
            if let Some(value) = monitor {
                config.monitor_ms = value;
            }
            if let Some(value) = action {
                config.failure_action = value;
            }
            if let Some(value) = ratio {
                config.max_failure_ratio_permille = value;
            }
            if let Some(value) = order {
                config.order = value;
            }
        };
        set(
            update,
            self.update_parallelism,
            self.update_delay,
            self.update_monitor,
            self.update_failure_action,
            self.update_max_failure_ratio,
            self.update_order,
        );
        if let Some(PauseAfter(checkpoint)) = self.update_pause_after {
            update.pause_after = checkpoint;
        }
        set(
            rollback,
            self.rollback_parallelism,
            self.rollback_delay,
            self.rollback_monitor,
            self.rollback_failure_action,
            self.rollback_max_failure_ratio,
            self.rollback_order,
        );
    }
}

/// Reads a failure ratio: a number from 0 to 1, kept in thousandths.
///
/// # Errors
/// Not a number, or outside 0-1.
pub fn parse_ratio(text: &str) -> Result<u64, String> {
    let ratio: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("invalid ratio {text:?}: expected a number from 0 to 1"))?;
    if !(0.0..=1.0).contains(&ratio) {
        return Err(format!("invalid ratio {text}: it must be from 0 to 1"));
    }
    Ok((ratio * 1000.0).round() as u64)
}

/// `--detach`, for the commands that wait for convergence by default.
#[derive(Debug, Default, Args)]
pub struct WaitArgs {
    /// Return at once instead of waiting for the tasks to converge
    #[arg(short, long)]
    pub detach: bool,
}

#[derive(Debug, Args)]
pub struct ServiceWaitArgs {
    /// Give up after this long, with exit code 4 (like 30s or 2m; default: no limit)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub timeout: Option<u64>,
    /// Service ID, ID prefix or name
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

/// How a service's tasks are spread: a number of replicas, or one per node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    Replicated,
    Global,
    /// Tasks that run to completion: --replicas of them, --max-concurrent at once
    ReplicatedJob,
    /// One task to completion on every eligible node
    GlobalJob,
}

#[derive(Debug, Args)]
pub struct ServiceCreateArgs {
    /// Service name (default: the image's name, without registry path or tag)
    #[arg(long)]
    pub name: Option<String>,
    /// Send this client's credentials for the image's registry (from ~/.docker/config.json,
    /// as docker login keeps them) for the nodes to pull with
    #[arg(long)]
    pub with_registry_auth: bool,
    /// Number of tasks (default 1); for a replicated job, the completions wanted
    #[arg(long, value_name = "N")]
    pub replicas: Option<u64>,
    /// Service mode: replicated, global (one task on every eligible node), replicated-job or
    /// global-job (tasks that run to completion, not restarted once they exit 0)
    #[arg(long, value_enum)]
    pub mode: Option<ModeArg>,
    /// A replicated job's tasks at work at once (default: all of --replicas)
    #[arg(long, value_name = "N")]
    pub max_concurrent: Option<u64>,
    /// Set an environment variable (KEY=VALUE)
    #[arg(short, long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env: Vec<(String, String)>,
    /// Set a service label (key=value)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub label: Vec<(String, String)>,
    /// Placement constraint, like node.labels.zone==a
    #[arg(long, value_name = "EXPR")]
    pub constraint: Vec<String>,
    /// Placement preference: spread=node.labels.KEY
    #[arg(long, value_name = "spread=PATH", value_parser = parse_spread_pref)]
    pub placement_pref: Vec<String>,
    /// Maximum number of tasks per node (default 0: no limit)
    #[arg(long, value_name = "N")]
    pub replicas_max_per_node: Option<u64>,
    /// Reserve CPUs (like 0.5)
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus)]
    pub reserve_cpu: Option<u64>,
    /// Reserve memory (like 512M)
    #[arg(long, value_name = "BYTES", value_parser = parse_memory)]
    pub reserve_memory: Option<u64>,
    /// Limit CPUs (like 1.5)
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus)]
    pub limit_cpu: Option<u64>,
    /// Limit memory (like 1G)
    #[arg(long, value_name = "BYTES", value_parser = parse_memory)]
    pub limit_memory: Option<u64>,
    /// Limit the processes and threads of a task (default 0: no limit)
    #[arg(long, value_name = "N")]
    pub limit_pids: Option<u64>,
    /// Reserve so many of a node's generic resource, as essaimd --generic-resource declares
    /// them (like gpu=1; repeatable)
    #[arg(long, value_name = "KIND=N", value_parser = parse_generic_resource)]
    pub generic_resource: Vec<(String, u64)>,
    /// Read environment variables from a file of KEY=VALUE lines (repeatable; --env wins)
    #[arg(long, value_name = "FILE")]
    pub env_file: Vec<PathBuf>,
    /// Restart when: any, on-failure or none (default any)
    #[arg(long, value_name = "CONDITION", value_parser = |text: &str| text.parse::<RestartCondition>())]
    pub restart_condition: Option<RestartCondition>,
    /// Delay between restart attempts (default 5s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub restart_delay: Option<u64>,
    /// Maximum number of restarts before giving up (default 0: unlimited)
    #[arg(long, value_name = "N")]
    pub restart_max_attempts: Option<u64>,
    /// Window in which restarts are counted (default 0: for ever)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub restart_window: Option<u64>,
    /// Time to wait before killing a task (default 10s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub stop_grace_period: Option<u64>,
    /// Publish a port: [PUBLISHED:]TARGET[/udp], or
    /// published=P,target=T,protocol=tcp|udp,mode=ingress|host,policy=cluster|local; ingress
    /// (every node answers, balanced over every task) is the default, policy=local sends only
    /// to the node's own tasks, a published port left out is picked from 30000-32767
    #[arg(short, long, value_name = "[PUBLISHED:]TARGET[/udp]", value_parser = parse_port)]
    pub publish: Vec<PortConfig>,
    /// Attach the tasks to a network: NAME, or name=NAME,alias=ALIAS (repeatable); services
    /// on one network reach each other by name
    #[arg(long, value_name = "NETWORK", value_parser = parse_network_attachment)]
    pub network: Vec<NetworkAttachmentConfig>,
    /// How the service's name resolves on its networks: vip (one address that balances
    /// connections) or dnsrr (the tasks' own addresses)
    #[arg(long, value_name = "MODE", value_parser = |text: &str| text.parse::<EndpointMode>())]
    pub endpoint_mode: Option<EndpointMode>,
    /// Mount a file system: type=bind|volume|tmpfs,source=S,target=T[,readonly]
    /// [,volume-label=K=V][,tmpfs-size=N] (repeatable); a named volume is made on the node
    /// when a task needs it, and outlives the task
    #[arg(long, value_name = "MOUNT", value_parser = parse_mount)]
    pub mount: Vec<Mount>,
    /// Give the tasks a secret as a file: NAME (at /run/secrets/NAME), or
    /// source=NAME,target=T,uid=U,gid=G,mode=0400 (repeatable)
    #[arg(long, value_name = "SECRET", value_parser = parse_file_reference)]
    pub secret: Vec<FileReference>,
    /// Give the tasks a config as a file: NAME (at /NAME), or
    /// source=NAME,target=/PATH,uid=U,gid=G,mode=0444 (repeatable)
    #[arg(long, value_name = "CONFIG", value_parser = parse_file_reference)]
    pub config: Vec<FileReference>,
    #[command(flatten)]
    pub health: HealthArgs,
    #[command(flatten)]
    pub container: container::ContainerArgs,
    #[command(flatten)]
    pub update: UpdateFlags,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Image (or program) the tasks run
    #[arg(value_name = "IMAGE")]
    pub image: String,
    /// Arguments of the tasks' command
    #[arg(
        value_name = "ARG",
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub args: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ServiceLsArgs {
    /// Only display IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct ServicePsArgs {
    #[command(flatten)]
    pub ps: PsArgs,
    /// Service ID, ID prefix or name
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

#[derive(Debug, Args)]
pub struct ServiceInspectArgs {
    /// Print the information in a human friendly format (same as --format table)
    #[arg(long, conflicts_with = "format")]
    pub pretty: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Service ID, ID prefix or name
    #[arg(value_name = "SERVICE", required = true)]
    pub services: Vec<String>,
}

/// `service update`: each flag changes one part of the spec, the rest stays as it is.
#[derive(Debug, Args)]
pub struct ServiceUpdateArgs {
    #[command(flatten)]
    pub changes: ServiceChanges,
    #[command(flatten)]
    pub update: UpdateFlags,
    /// Go on with a paused update (or rollback), to its next checkpoint
    /// (--update-pause-after) or to the end
    #[arg(long = "continue", conflicts_with = "rollback")]
    pub resume: bool,
    /// Go back to the spec before the last update, with the rollback settings
    #[arg(long)]
    pub rollback: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Service ID, ID prefix or name
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

/// The changes `service update` makes to a spec; at least one is required. Removals apply
/// before additions, so `--env-rm A --env-add A=2` replaces A.
#[derive(Debug, Default, Args)]
pub struct ServiceChanges {
    /// Image (or program) the tasks run
    #[arg(long, value_name = "IMAGE")]
    pub image: Option<String>,
    /// Replace the arguments of the tasks' command (split at spaces; quote with ' or ")
    #[arg(long, value_name = "ARGS", allow_hyphen_values = true, value_parser = parse_command_args)]
    pub args: Option<CommandArgs>,
    /// Number of tasks (replicated services only); a replicated job's completions, which
    /// runs it again
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub replicas: Option<u64>,
    /// Add or replace an environment variable (KEY=VALUE)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub env_add: Vec<(String, String)>,
    /// Remove an environment variable
    #[arg(long, value_name = "KEY")]
    pub env_rm: Vec<String>,
    /// Add or replace a service label (key=value)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub label_add: Vec<(String, String)>,
    /// Remove a service label
    #[arg(long, value_name = "KEY")]
    pub label_rm: Vec<String>,
    /// Add a placement constraint, like node.labels.zone==a
    #[arg(long, value_name = "EXPR")]
    pub constraint_add: Vec<String>,
    /// Remove a placement constraint
    #[arg(long, value_name = "EXPR")]
    pub constraint_rm: Vec<String>,
    /// Add a placement preference: spread=node.labels.KEY
    #[arg(long, value_name = "spread=PATH", value_parser = parse_spread_pref)]
    pub placement_pref_add: Vec<String>,
    /// Remove a placement preference: spread=node.labels.KEY
    #[arg(long, value_name = "spread=PATH", value_parser = parse_spread_pref)]
    pub placement_pref_rm: Vec<String>,
    /// Maximum number of tasks per node (0: no limit)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub replicas_max_per_node: Option<u64>,
    /// Reserve CPUs (like 0.5)
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus)]
    pub reserve_cpu: Option<u64>,
    /// Reserve memory (like 512M; 0: none)
    #[arg(long, value_name = "BYTES", value_parser = parse_memory)]
    pub reserve_memory: Option<u64>,
    /// Limit CPUs (like 1.5)
    #[arg(long, value_name = "CPUS", value_parser = parse_cpus)]
    pub limit_cpu: Option<u64>,
    /// Limit memory (like 1G; 0: no limit)
    #[arg(long, value_name = "BYTES", value_parser = parse_memory)]
    pub limit_memory: Option<u64>,
    /// Limit the processes and threads of a task (0: no limit)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub limit_pids: Option<u64>,
    /// Reserve a generic resource, as --generic-resource takes it (replaces that kind's)
    #[arg(long, value_name = "KIND=N", value_parser = parse_generic_resource)]
    pub generic_resource_add: Vec<(String, u64)>,
    /// Reserve no more of this generic resource kind
    #[arg(long, value_name = "KIND")]
    pub generic_resource_rm: Vec<String>,
    /// Restart when: any, on-failure or none
    #[arg(long, value_name = "CONDITION", value_parser = |text: &str| text.parse::<RestartCondition>())]
    pub restart_condition: Option<RestartCondition>,
    /// Delay between restart attempts
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub restart_delay: Option<u64>,
    /// Maximum number of restarts before giving up (0: unlimited)
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub restart_max_attempts: Option<u64>,
    /// Window in which restarts are counted (0: for ever)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub restart_window: Option<u64>,
    /// Time to wait before killing a task
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub stop_grace_period: Option<u64>,
    /// Publish a port, as --publish takes it (replaces a mapping of the same published port)
    #[arg(long, value_name = "[PUBLISHED:]TARGET[/udp]", value_parser = parse_port)]
    pub publish_add: Vec<PortConfig>,
    /// Unpublish a port: TARGET removes every mapping to it, PUBLISHED:TARGET that one
    #[arg(long, value_name = "[PUBLISHED:]TARGET[/udp]", value_parser = parse_port)]
    pub publish_rm: Vec<PortConfig>,
    /// Attach the tasks to a network as well: NAME, or name=NAME,alias=ALIAS
    #[arg(long, value_name = "NETWORK", value_parser = parse_network_attachment)]
    pub network_add: Vec<NetworkAttachmentConfig>,
    /// Detach the tasks from a network
    #[arg(long, value_name = "NETWORK")]
    pub network_rm: Vec<String>,
    /// How the service's name resolves: vip or dnsrr
    #[arg(long, value_name = "MODE", value_parser = |text: &str| text.parse::<EndpointMode>())]
    pub endpoint_mode: Option<EndpointMode>,
    // The health flags again, not flattened: they must count in the group of changes, of which
    // `service update` needs at least one.
    /// Command to run to check health, by the container's shell
    #[arg(long, value_name = "COMMAND")]
    pub health_cmd: Option<String>,
    /// Time between running the check
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub health_interval: Option<u64>,
    /// Maximum time to allow one check to run
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub health_timeout: Option<u64>,
    /// Consecutive failures needed to report unhealthy
    #[arg(long, value_name = "N")]
    pub health_retries: Option<u64>,
    /// Time for the task to initialize before failed checks count
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub health_start_period: Option<u64>,
    /// Time between checks during the start period (default: the interval)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub health_start_interval: Option<u64>,
    /// Disable any health check, the image's included
    #[arg(long, conflicts_with_all = ["health_cmd", "health_interval", "health_timeout", "health_retries", "health_start_period", "health_start_interval"])]
    pub no_healthcheck: bool,
    /// Add a mount, as --mount takes it (replaces the mount at the same target)
    #[arg(long, value_name = "MOUNT", value_parser = parse_mount)]
    pub mount_add: Vec<Mount>,
    /// Remove the mount at this target path
    #[arg(long, value_name = "TARGET")]
    pub mount_rm: Vec<String>,
    /// Add a secret, as --secret takes it (replaces the one at the same target)
    #[arg(long, value_name = "SECRET", value_parser = parse_file_reference)]
    pub secret_add: Vec<FileReference>,
    /// Remove a secret, by its name
    #[arg(long, value_name = "NAME")]
    pub secret_rm: Vec<String>,
    /// Add a config, as --config takes it (replaces the one at the same target)
    #[arg(long, value_name = "CONFIG", value_parser = parse_file_reference)]
    pub config_add: Vec<FileReference>,
    /// Remove a config, by its name
    #[arg(long, value_name = "NAME")]
    pub config_rm: Vec<String>,
    #[command(flatten)]
    pub container: container::ContainerChanges,
    /// Replace the tasks even if nothing else changes
    #[arg(long)]
    pub force: bool,
    /// Send this client's credentials for the image's registry (from ~/.docker/config.json,
    /// as docker login keeps them) for the nodes to pull with
    #[arg(long)]
    pub with_registry_auth: bool,
}

impl ServiceChanges {
    /// The health flags among the changes.
    pub fn health(&self) -> HealthArgs {
        HealthArgs {
            health_cmd: self.health_cmd.clone(),
            health_interval: self.health_interval,
            health_timeout: self.health_timeout,
            health_retries: self.health_retries,
            health_start_period: self.health_start_period,
            health_start_interval: self.health_start_interval,
            no_healthcheck: self.no_healthcheck,
        }
    }
}

/// `--health-*` and `--no-healthcheck`, as `docker service create` and `update` take them.
#[derive(Debug, Default, Args)]
pub struct HealthArgs {
    /// Command to run to check health, by the container's shell
    #[arg(long, value_name = "COMMAND")]
    pub health_cmd: Option<String>,
    /// Time between running the check (default 30s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub health_interval: Option<u64>,
    /// Maximum time to allow one check to run (default 30s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub health_timeout: Option<u64>,
    /// Consecutive failures needed to report unhealthy (default 3)
    #[arg(long, value_name = "N")]
    pub health_retries: Option<u64>,
    /// Time for the task to initialize before failed checks count (default 0s)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub health_start_period: Option<u64>,
    /// Time between checks during the start period (default: the interval)
    #[arg(long, value_name = "DURATION", value_parser = parse_duration_ms)]
    pub health_start_interval: Option<u64>,
    /// Disable any health check, the image's included
    #[arg(long, conflicts_with_all = ["health_cmd", "health_interval", "health_timeout", "health_retries", "health_start_period", "health_start_interval"])]
    pub no_healthcheck: bool,
}

impl HealthArgs {
    /// The health check after these flags, from `current` (the service's, or none).
    pub fn apply(&self, current: Option<HealthCheck>) -> Option<HealthCheck> {
        if self.no_healthcheck {
            return Some(HealthCheck {
                test: vec!["NONE".to_string()],
                ..HealthCheck::default()
            });
        }
        let touched = self.health_cmd.is_some()
            || self.health_interval.is_some()
            || self.health_timeout.is_some()
            || self.health_retries.is_some()
            || self.health_start_period.is_some()
            || self.health_start_interval.is_some();
        if !touched {
            return current;
        }
        let mut check = current
            .filter(|check| check.test.first().map(String::as_str) != Some("NONE"))
            .unwrap_or_default();
        if let Some(command) = &self.health_cmd {
            check.test = vec!["CMD-SHELL".to_string(), command.clone()];
        }
        let set = |field: &mut u64, value: Option<u64>| {
            if let Some(value) = value {
                *field = value;
            }
        };
        set(&mut check.interval_ms, self.health_interval);
        set(&mut check.timeout_ms, self.health_timeout);
        set(&mut check.retries, self.health_retries);
        set(&mut check.start_period_ms, self.health_start_period);
        set(&mut check.start_interval_ms, self.health_start_interval);
        Some(check)
    }
}

/// A network name as Docker takes it: letters, digits and `_.-`, starting with a letter or
/// digit.
fn parse_network_name(text: &str) -> Result<String, String> {
    let mut chars = text.chars();
    let valid_start = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    if valid_start && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        Ok(text.to_string())
    } else {
        Err(format!(
            "invalid network name {text:?}: use letters, digits, '_', '.' and '-', starting with a letter or digit"
        ))
    }
}

/// Reads a `--network` value: `NAME`, or docker's long form `name=NAME,alias=ALIAS,...`
/// (`target=` for `name=`; aliases repeatable).
///
/// # Errors
/// An invalid name, an unknown key (named), or no name.
pub fn parse_network_attachment(text: &str) -> Result<NetworkAttachmentConfig, String> {
    if !text.contains('=') {
        return Ok(NetworkAttachmentConfig {
            target: parse_network_name(text)?,
            aliases: Vec::new(),
        });
    }
    let mut target = None;
    let mut aliases = Vec::new();
    for part in text.split(',') {
        match part.split_once('=') {
            Some(("name" | "target", name)) => target = Some(parse_network_name(name)?),
            Some(("alias", alias)) if !alias.is_empty() => aliases.push(alias.to_string()),
            Some(("alias", _)) => return Err(format!("--network {text:?}: an alias is empty")),
            Some((key, _)) => {
                return Err(format!(
                    "--network {text:?}: unknown key {key:?}: expected name or alias"
                ))
            }
            None => {
                return Err(format!(
                    "--network {text:?}: {part:?} is not KEY=VALUE: expected name=NAME,alias=ALIAS"
                ))
            }
        }
    }
    let target = target.ok_or_else(|| format!("--network {text:?}: name=NAME is missing"))?;
    Ok(NetworkAttachmentConfig { target, aliases })
}

/// The arguments of a command, as `--args` reads them from one string.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct CommandArgs(pub Vec<String>);

fn parse_mount(text: &str) -> Result<Mount, String> {
    text.parse()
}

fn parse_generic_resource(text: &str) -> Result<(String, u64), String> {
    let (kind, count) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?}: expected KIND=N, like gpu=1"))?;
    essaim_core::model::check_generic_kind(kind)?;
    let count = count
        .parse::<u64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| format!("{text:?}: the count must be a whole number above 0"))?;
    Ok((kind.to_string(), count))
}

fn parse_file_reference(text: &str) -> Result<FileReference, String> {
    FileReference::parse(text)
}

/// Splits `--args` into words as a shell would in simple cases: at unquoted whitespace, with
/// `'...'` taken literally, `"..."` keeping spaces (`\"` and `\\` escaped inside), and `\`
/// escaping the next character elsewhere. No variables, globs or other expansions.
///
/// # Errors
/// An unterminated quote, or a `\` at the very end.
pub fn parse_command_args(text: &str) -> Result<CommandArgs, String> {
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut chars = text.chars();
    let unterminated = |quote: char| format!("unterminated {quote} quote in {text:?}");
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => words.extend(word.take()),
            '\'' => {
                let word = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(unterminated('\'')),
                    }
                }
            }
            '"' => {
                let word = word.get_or_insert_with(String::new);
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\')) => word.push(c),
                            Some(c) => {
                                word.push('\\');
                                word.push(c);
                            }
                            None => return Err(unterminated('"')),
                        },
                        Some(c) => word.push(c),
                        None => return Err(unterminated('"')),
                    }
                }
            }
            '\\' => match chars.next() {
                Some(c) => word.get_or_insert_with(String::new).push(c),
                None => return Err(format!("{text:?} ends with a lone \\")),
            },
            c => word.get_or_insert_with(String::new).push(c),
        }
    }
    words.extend(word);
    Ok(CommandArgs(words))
}

#[derive(Debug, Args)]
pub struct ServiceScaleArgs {
    #[command(flatten)]
    pub wait: WaitArgs,
    /// Service and its new number of replicas
    #[arg(value_name = "SERVICE=REPLICAS", required = true, value_parser = parse_scale)]
    pub scales: Vec<(String, u64)>,
}

#[derive(Debug, Args)]
pub struct ServiceLogsArgs {
    /// Keep printing new output until interrupted
    #[arg(short, long)]
    pub follow: bool,
    /// Only the last N lines of each task (default: all each node kept, up to 1000 per task)
    #[arg(long, short = 'n', value_name = "N")]
    pub tail: Option<u64>,
    /// Service ID, ID prefix or name
    #[arg(value_name = "SERVICE")]
    pub service: String,
}

#[derive(Debug, Args)]
pub struct ServiceRmArgs {
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub yes: bool,
    /// Service ID, ID prefix or name
    #[arg(value_name = "SERVICE", required = true)]
    pub services: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum StackCommand {
    /// Deploy a new stack or update an existing one from compose files
    #[command(after_long_help = examples::STACK_DEPLOY)]
    Deploy(StackDeployArgs),
    /// List the stacks
    #[command(visible_alias = "list", after_long_help = examples::STACK_LS)]
    Ls(StackLsArgs),
    /// List the tasks of a stack
    #[command(after_long_help = examples::STACK_PS)]
    Ps(StackPsArgs),
    /// List the services of a stack
    #[command(after_long_help = examples::STACK_SERVICES)]
    Services(StackServicesArgs),
    /// Remove one or more stacks: their services, and the networks, secrets and configs they
    /// made
    #[command(visible_alias = "remove", after_long_help = examples::STACK_RM)]
    Rm(StackRmArgs),
}

#[derive(Debug, Args)]
pub struct StackDeployArgs {
    /// Compose file to read; repeatable, later files merged over earlier ones; - for stdin
    #[arg(
        short = 'c',
        long = "compose-file",
        value_name = "FILE",
        required = true
    )]
    pub compose_files: Vec<PathBuf>,
    /// Remove the stack's services that are no longer in the files
    #[arg(long)]
    pub prune: bool,
    /// Print the plan (what would be created, updated and removed) and change nothing
    #[arg(long)]
    pub dry_run: bool,
    /// Output format of the plan
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// The stack's name: its services are NAME_SERVICE
    #[arg(value_name = "STACK", value_parser = parse_stack_name)]
    pub name: String,
}

fn parse_stack_name(text: &str) -> Result<String, String> {
    crate::compose::check_stack_name(text).map(|()| text.to_string())
}

#[derive(Debug, Args)]
pub struct StackLsArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct StackPsArgs {
    #[command(flatten)]
    pub ps: PsArgs,
    /// The stack's name
    #[arg(value_name = "STACK")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct StackServicesArgs {
    #[command(flatten)]
    pub ls: ServiceLsArgs,
    /// The stack's name
    #[arg(value_name = "STACK")]
    pub name: String,
}

#[derive(Debug, Args)]
pub struct StackRmArgs {
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub yes: bool,
    #[command(flatten)]
    pub wait: WaitArgs,
    /// The stack's name
    #[arg(value_name = "STACK", required = true)]
    pub names: Vec<String>,
}

/// Reads a `--placement-pref` value: `spread=node.labels.KEY`, kept as the path.
///
/// # Errors
/// Another preference than `spread`, or an empty path.
pub fn parse_spread_pref(text: &str) -> Result<String, String> {
    match text.split_once('=') {
        Some(("spread", path)) if !path.trim().is_empty() => Ok(path.trim().to_string()),
        _ => Err(format!(
            "invalid placement preference {text:?}: expected spread=node.labels.KEY"
        )),
    }
}

/// Reads a `service scale` argument: `SERVICE=REPLICAS`, as docker takes it.
///
/// # Errors
/// No `=`, an empty service, or replicas that are not a number.
pub fn parse_scale(text: &str) -> Result<(String, u64), String> {
    let invalid = || format!("invalid scale {text:?}: expected SERVICE=REPLICAS, like web=5");
    let (service, replicas) = text.split_once('=').ok_or_else(invalid)?;
    if service.is_empty() {
        return Err(invalid());
    }
    let replicas = replicas.parse::<u64>().map_err(|_| invalid())?;
    Ok((service.to_string(), replicas))
}

#[derive(Debug, Args)]
pub struct NodeLsArgs {
    /// Only display IDs
    #[arg(short, long)]
    pub quiet: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

#[derive(Debug, Args)]
pub struct NodeInspectArgs {
    /// Print the information in a human friendly format (same as --format table)
    #[arg(long, conflicts_with = "format")]
    pub pretty: bool,
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Json)]
    pub format: Format,
    /// Node ID, ID prefix or hostname
    #[arg(value_name = "NODE", required = true)]
    pub nodes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NodeUpdateArgs {
    /// Availability of the node: active, pause or drain
    #[arg(long, value_name = "AVAILABILITY", value_parser = |text: &str| text.parse::<Availability>())]
    pub availability: Option<Availability>,
    /// Role of the node: worker or manager
    #[arg(long, value_name = "ROLE", value_parser = |text: &str| text.parse::<Role>())]
    pub role: Option<Role>,
    /// Add or update a node label (key=value; `key` alone sets an empty value)
    #[arg(long, value_name = "KEY=VALUE", value_parser = parse_label_add)]
    pub label_add: Vec<(String, String)>,
    /// Remove a node label if it exists
    #[arg(long, value_name = "KEY", value_parser = parse_label_rm)]
    pub label_rm: Vec<String>,
    /// Node ID, ID prefix or hostname
    #[arg(value_name = "NODE")]
    pub node: String,
}

#[derive(Debug, Args)]
pub struct NodesArgs {
    /// Node ID, ID prefix or hostname
    #[arg(value_name = "NODE", required = true)]
    pub nodes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct NodeDemoteArgs {
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub yes: bool,
    #[command(flatten)]
    pub nodes: NodesArgs,
}

#[derive(Debug, Args)]
pub struct NodeRmArgs {
    /// Remove the nodes even if they are still up
    #[arg(short, long)]
    pub force: bool,
    /// Do not ask for confirmation
    #[arg(short, long)]
    pub yes: bool,
    /// Node ID, ID prefix or hostname
    #[arg(value_name = "NODE", required = true)]
    pub nodes: Vec<String>,
}

#[derive(Debug, Args)]
pub struct InfoArgs {
    /// Output format
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,
}

/// How a command shows its result: for people or for programs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Columns or `key: value` lines
    #[default]
    Table,
    /// Pretty-printed JSON
    Json,
}

/// Reads a `--label-add` value the way docker does: `k=v`, `k=` and `k` (both: empty value).
///
/// # Errors
/// The key is empty.
pub fn parse_label_add(text: &str) -> Result<(String, String), String> {
    let (key, value) = text.split_once('=').unwrap_or((text, ""));
    if key.is_empty() {
        return Err(format!("invalid label {text:?}: the key is empty"));
    }
    Ok((key.to_string(), value.to_string()))
}

/// Reads a `--label-rm` value: a key, not empty.
///
/// # Errors
/// The key is empty.
fn parse_label_rm(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("the label key is empty".to_string());
    }
    Ok(text.to_string())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_table_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn network_reads_as_a_name_or_docker_long_form() {
        let plain = parse_network_attachment("front").expect("name");
        assert_eq!((plain.target.as_str(), plain.aliases.len()), ("front", 0));
        let long = parse_network_attachment("name=front,alias=www,alias=web").expect("long");
        assert_eq!(long.target, "front");
        assert_eq!(long.aliases, ["www", "web"]);
        assert_eq!(
            parse_network_attachment("target=back").map(|n| n.target),
            Ok("back".to_string())
        );
        let unknown = parse_network_attachment("name=front,driver=x").expect_err("key");
        assert!(unknown.contains("unknown key \"driver\""), "{unknown}");
        let nameless = parse_network_attachment("alias=www").expect_err("no name");
        assert!(nameless.contains("name=NAME is missing"), "{nameless}");
        assert!(parse_network_attachment("-front").is_err());
    }

    #[test]
    fn label_add_reads_like_docker() {
        assert_eq!(
            parse_label_add("zone=a"),
            Ok(("zone".to_string(), "a".to_string()))
        );
        assert_eq!(
            parse_label_add("zone="),
            Ok(("zone".to_string(), String::new()))
        );
        assert_eq!(
            parse_label_add("zone"),
            Ok(("zone".to_string(), String::new()))
        );
        // Only the first `=` splits: values may contain more.
        assert_eq!(
            parse_label_add("expr=a=b"),
            Ok(("expr".to_string(), "a=b".to_string()))
        );
        assert!(parse_label_add("=a").is_err());
    }

    #[test]
    fn label_flags_collect_in_order() {
        let cli = Cli::try_parse_from([
            "essaim",
            "node",
            "update",
            "--label-add",
            "zone=a",
            "--label-add",
            "ssd",
            "--label-rm",
            "old",
            "m1",
        ])
        .expect("valid command line");
        let Command::Node {
            command: NodeCommand::Update(args),
        } = cli.command.expect("a command")
        else {
            panic!("parsed as another command");
        };
        assert_eq!(
            args.label_add,
            vec![
                ("zone".to_string(), "a".to_string()),
                ("ssd".to_string(), String::new())
            ]
        );
        assert_eq!(args.label_rm, vec!["old".to_string()]);
        assert_eq!(args.node, "m1");
    }

    #[test]
    fn a_bad_availability_is_a_usage_error_naming_the_flag() {
        let error =
            Cli::try_parse_from(["essaim", "node", "update", "--availability", "sleepy", "m1"])
                .expect_err("sleepy is not an availability");
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        assert_eq!(error.exit_code(), 2);
        let message = error.to_string();
        assert!(message.contains("--availability"), "{message}");
        assert!(message.contains("active, pause, drain"), "{message}");
    }

    #[test]
    fn availability_reads_any_case() {
        let cli =
            Cli::try_parse_from(["essaim", "node", "update", "--availability", "Drain", "m1"])
                .expect("valid command line");
        let Command::Node {
            command: NodeCommand::Update(args),
        } = cli.command.expect("a command")
        else {
            panic!("parsed as another command");
        };
        assert_eq!(args.availability, Some(Availability::Drain));
    }

    #[test]
    fn a_bad_host_is_a_usage_error() {
        let error = Cli::try_parse_from(["essaim", "-H", "ftp://x", "info"])
            .expect_err("ftp is not a host scheme");
        assert_eq!(error.exit_code(), 2);
        assert!(error.to_string().contains("--host"));
    }

    #[test]
    fn the_host_flag_works_after_the_subcommand() {
        let cli = Cli::try_parse_from(["essaim", "node", "ls", "-H", "unix:///tmp/e.sock"])
            .expect("valid command line");
        assert_eq!(cli.host, Some(Host::Unix("/tmp/e.sock".into())));
    }

    #[test]
    fn tcp_hosts_and_a_tls_dir_parse() {
        let cli = Cli::try_parse_from([
            "essaim",
            "-H",
            "tcp://10.0.0.1:4242",
            "node",
            "ls",
            "--tls-dir",
            "/home/op/bundle",
        ])
        .expect("valid command line");
        assert_eq!(cli.host, Some(Host::Tcp("10.0.0.1:4242".into())));
        assert_eq!(cli.tls_dir, Some(PathBuf::from("/home/op/bundle")));
    }

    fn swarm_update(flags: &[&str]) -> Result<SwarmUpdateArgs, clap::Error> {
        let line = ["essaim", "swarm", "update"].iter().chain(flags);
        let cli = Cli::try_parse_from(line)?;
        match cli.command.expect("a command") {
            Command::Swarm {
                command: SwarmCommand::Update(args),
            } => Ok(args),
            other => panic!("parsed as another command: {other:?}"),
        }
    }

    #[test]
    fn swarm_update_reads_durations_and_leaves_the_rest_unset() {
        let args = swarm_update(&["--cert-expiry", "2160h", "--dispatcher-heartbeat", "5s"])
            .expect("valid flags");
        assert_eq!(args.cert_expiry, Some(2160 * 3_600_000));
        assert_eq!(args.dispatcher_heartbeat, Some(5000));
        assert_eq!(args.task_history_limit, None);

        let args = swarm_update(&["--task-history-limit", "10"]).expect("valid flag");
        assert_eq!(args.task_history_limit, Some(10));
        assert_eq!(args.cert_expiry, None);
    }

    #[test]
    fn a_bad_duration_is_a_usage_error_naming_the_flag() {
        let error = swarm_update(&["--cert-expiry", "90days"]).expect_err("bad duration");
        assert_eq!(error.kind(), clap::error::ErrorKind::ValueValidation);
        assert_eq!(error.exit_code(), 2);
        let message = error.to_string();
        assert!(message.contains("--cert-expiry"), "{message}");
        assert!(message.contains("unknown unit"), "{message}");

        let error = swarm_update(&["--task-history-limit", "-1"]).expect_err("negative");
        assert_eq!(error.exit_code(), 2);
    }

    #[test]
    fn swarm_update_needs_at_least_one_flag() {
        let error = swarm_update(&[]).expect_err("nothing to update");
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
        assert_eq!(error.exit_code(), 2);
        let message = error.to_string();
        assert!(message.contains("--cert-expiry"), "{message}");
    }

    #[test]
    fn issue_client_needs_an_out_dir() {
        let cli = Cli::try_parse_from([
            "essaim",
            "swarm",
            "ca",
            "issue-client",
            "--out",
            "b",
            "--name",
            "ci",
        ])
        .expect("valid command line");
        let Command::Swarm {
            command:
                SwarmCommand::Ca(CaArgs {
                    command: Some(CaCommand::IssueClient(args)),
                    ..
                }),
        } = cli.command.expect("a command")
        else {
            panic!("parsed as another command");
        };
        assert_eq!(args.out, PathBuf::from("b"));
        assert_eq!(args.name.as_deref(), Some("ci"));
        assert!(!args.force);

        let error = Cli::try_parse_from(["essaim", "swarm", "ca", "issue-client"])
            .expect_err("--out is required");
        assert_eq!(
            error.kind(),
            clap::error::ErrorKind::MissingRequiredArgument
        );
    }

    #[test]
    fn pretty_and_format_exclude_each_other() {
        let error = Cli::try_parse_from([
            "essaim", "node", "inspect", "--pretty", "--format", "json", "m1",
        ])
        .expect_err("conflicting flags");
        assert_eq!(error.kind(), clap::error::ErrorKind::ArgumentConflict);
    }
}

/// The parsers of every long-form flag, on any input: each gives a value or a usage error,
/// and what it gives passes the leader's check or is refused by it, naming a flag; none
/// panics.
#[cfg(test)]
mod long_form_properties {
    use clap::Parser;
    use proptest::prelude::*;

    use super::*;

    /// Text made of the pieces the long forms are made of, so that many inputs get past the
    /// first check and reach the deeper ones.
    fn long_form() -> impl Strategy<Value = String> {
        let piece = prop::sample::select(vec![
            "type=",
            "bind",
            "volume",
            "tmpfs",
            "source=",
            "src=",
            "target=",
            "dst=",
            "/",
            "/x",
            "..",
            "readonly",
            "ro=",
            "true",
            "0",
            "1",
            "-1",
            "0400",
            "0999",
            "uid=",
            "gid=",
            "mode=",
            "name=",
            "alias=",
            "published=",
            "protocol=",
            "udp",
            "mode=host",
            "=",
            ",",
            "gpu",
            "gpu=",
            "{{.Task.Slot}}",
            "{{",
            "}}",
            "é",
            "\0",
            " ",
            "soft=",
            "hard=",
            "nofile=",
            ":",
            "64M",
            "99999999999999999999",
            "volume-label=",
            "tmpfs-size=",
        ]);
        prop::collection::vec(piece, 0..10).prop_map(|pieces| pieces.concat())
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(300))]

        #[test]
        fn no_long_form_flag_panics(text in long_form()) {
            for flag in [
                "--mount", "--secret", "--config", "--network", "--publish", "--ulimit",
                "--add-host", "--generic-resource", "--hostname", "--env", "--label",
                "--constraint", "--placement-pref", "--sysctl", "--dns-option",
            ] {
                let line = ["essaim", "service", "create", flag, &text, "app"];
                let Ok(cli) = Cli::try_parse_from(line) else { continue };
                let Some(Command::Service { command: ServiceCommand::Create(args) }) =
                    cli.command
                else {
                    continue;
                };
                if let Ok(spec) = crate::commands::service::build_spec(*args) {
                    if let Err(error) = spec.validate() {
                        prop_assert!(!error.field.is_empty(), "{flag} {text:?}: {error}");
                    }
                }
            }
            let _ = essaim_core::model::GenericResources::parse([text.as_str()]);
        }
    }
}
