//! The process runtime: each task is an OS process. IMAGE names the program (looked up in
//! PATH unless it is a path), ARGs are its arguments. The runtime of machines without Docker,
//! and of most tests.
//!
//! Each task runs in its own process group, so that stopping it stops whatever it started,
//! and dies with the agent (PR_SET_PDEATHSIG): a node that is killed takes its tasks with it,
//! as a machine that fails would. Its usage is that of its process group, read from /proc.
//!
//! A task on cluster networks runs in a network namespace of its own, held by the runtime
//! while the task lives, with an interface and an address on each of its networks (see
//! [`crate::overlay`]); on a node without an overlay it runs in the node's namespace.

use std::collections::{HashMap, HashSet};
use std::ffi::CString;
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use essaim_api::control::TaskUsage;
use essaim_core::model::{PortConfig, Protocol, Task};
use essaim_core::netmap::NetworkMap;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use crate::accounts::{self, Identity};
use crate::cgroups::TaskCgroup;
use crate::dns;
use crate::executor::{ExecFuture, Executor, Exit, LogStream, StartError, Started};
use crate::logs::LogBuffer;
use crate::mounts::Mounts;
use crate::overlay::{LocalAttachment, Overlay};

/// How long one pass over /proc may take before the sample is given up.
const SAMPLE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct ProcessExecutor {
    node_name: String,
    /// Where named volumes live (see [`crate::mounts`]); `None`: this node keeps none.
    volumes: Option<PathBuf>,
    /// Where the agent writes the tasks' secrets and configs (see [`crate::task_files`]).
    task_files: Option<PathBuf>,
    tasks: Mutex<HashMap<String, Arc<ProcessTask>>>,
    overlay: Arc<Overlay>,
}

struct ProcessTask {
    /// Also the process group ID.
    pid: i32,
    /// What asks the task to stop (`--stop-signal`, SIGTERM by default).
    stop_signal: i32,
    exit: watch::Receiver<Option<Exit>>,
    logs: Arc<LogBuffer>,
    /// The group's CPU ticks at the previous sample, and when it was taken: CPU use is the
    /// difference over the time between the two.
    last_cpu: Mutex<Option<(u64, Instant)>>,
    /// What puts the task on its cluster networks, if it is on any.
    _networked: Option<Networked>,
}

/// A task's own network namespace, and the resolver configuration it sees.
struct Networked {
    /// The namespace lives as long as this file is open or a process is in it.
    netns: File,
    /// Mounted over `/etc/resolv.conf` in the task's own mount namespace.
    resolv_conf: PathBuf,
}

impl Drop for Networked {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.resolv_conf);
    }
}

impl ProcessExecutor {
    pub fn new(node_name: &str) -> Self {
        ProcessExecutor {
            node_name: node_name.to_string(),
            volumes: None,
            task_files: None,
            tasks: Mutex::new(HashMap::new()),
            overlay: Overlay::new(),
        }
    }

    /// Keeps the tasks' volumes under `dir`.
    pub fn with_volumes(mut self, dir: PathBuf) -> Self {
        self.volumes = Some(dir);
        self
    }

    /// Finds the tasks' secrets and configs under `root`, where the agent writes them.
    pub fn with_task_files(mut self, root: PathBuf) -> Self {
        self.task_files = Some(root);
        self
    }

    /// A namespace of the task's own, on its networks; `None` when it has none, or when this
    /// node runs no overlay.
    async fn join_networks(&self, task: &Task) -> Result<Option<Networked>, StartError> {
        if !self.overlay.takes(task).await {
            return Ok(None);
        }
        let netns = essaim_network::netns::anonymous().map_err(|e| {
            if e.kind() == std::io::ErrorKind::PermissionDenied {
                StartError::rejected(format!(
                    "node {} cannot put tasks on cluster networks: essaimd must run as root ({e})",
                    self.node_name
                ))
            } else {
                StartError::failed(e.to_string())
            }
        })?;
        let attachment = LocalAttachment::new(
            essaim_network::netns::path_of_file(&netns),
            task.networks.clone(),
        );
        self.overlay
            .attach(&task.id, attachment)
            .await
            .map_err(StartError::failed)?;
        // The attachment made the networks known: their gateways are there.
        let name_server = self
            .overlay
            .name_server(&task.networks)
            .unwrap_or(Ipv4Addr::LOCALHOST);
        let resolv_conf = std::env::temp_dir().join(format!("essaim-resolv-{}.conf", task.id));
        let networked = Networked { netns, resolv_conf };
        if let Err(e) = std::fs::write(&networked.resolv_conf, dns::resolv_conf(name_server)) {
            self.overlay.detach(&task.id).await;
            return Err(StartError::failed(format!(
                "cannot write {}: {e}",
                networked.resolv_conf.display()
            )));
        }
        Ok(Some(networked))
    }

    fn task(&self, task_id: &str) -> Option<Arc<ProcessTask>> {
        self.table().get(task_id).cloned()
    }

    fn table(&self) -> parking_lot::MutexGuard<'_, HashMap<String, Arc<ProcessTask>>> {
        self.tasks.lock()
    }

    fn spawn(&self, task: &Task, networked: Option<Networked>) -> Result<Started, StartError> {
        let options = &task.spec.container;
        // The scheduler keeps such tasks off process nodes; a task placed before it knew
        // the node's runtime is turned down here, whole.
        let container_only = task.spec.container_only();
        if !container_only.is_empty() {
            return Err(StartError::rejected(format!(
                "the process runtime of node {} cannot apply {}",
                self.node_name,
                container_only.join(", ")
            )));
        }
        // `--entrypoint` replaces the program (the image); the task's arguments follow its own.
        let (wanted, mut args) = match options.entrypoint.split_first() {
            Some((program, first_args)) => (program.as_str(), first_args.to_vec()),
            None => (task.spec.image.as_str(), Vec::new()),
        };
        args.extend(task.spec.args.iter().cloned());
        let program =
            find_program(wanted, std::env::var_os("PATH").as_deref()).ok_or_else(|| {
                StartError::rejected(format!(
                    "program {wanted:?} not found in PATH on node {}",
                    self.node_name
                ))
            })?;
        let setup = Setup::new(task, &self.node_name)?;
        let mounts = Mounts::prepare(task, self.volumes.as_deref(), &self.node_name)?;
        let cgroup = TaskCgroup::create(&task.id, &task.spec.resources, &self.node_name)?;
        let stop_signal = match options.stop_signal.as_str() {
            "" => libc::SIGTERM,
            name => essaim_core::model::signal_number(name).ok_or_else(|| {
                StartError::rejected(format!("--stop-signal: unknown signal {name:?}"))
            })?,
        };
        // A task in a namespace of its own listens on its target ports there, where the node's
        // published ports lead (see `mesh`); one in the node's namespace listens on a port
        // of the node.
        let (ports, listen): (Vec<PortConfig>, Vec<(u16, u16)>) = if networked.is_some() {
            let ports = task.ports.clone();
            let listen = ports.iter().map(|p| (p.target, p.target)).collect();
            (ports, listen)
        } else {
            let ports = allocate_ports(&task.ports)
                .map_err(|e| StartError::failed(format!("cannot allocate a port: {e}")))?;
            let listen = ports.iter().map(|p| (p.target, p.published)).collect();
            (ports, listen)
        };
        let address = networked
            .as_ref()
            .and_then(|_| task.networks.first())
            .map(|n| n.address);
        let mut command = tokio::process::Command::new(&program);
        command
            .args(&args)
            .envs(&task.spec.env)
            .env("ESSAIM_TASK_ID", &task.id)
            .env("ESSAIM_SERVICE_ID", &task.service_id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(slot) = task.slot {
            command.env("ESSAIM_TASK_SLOT", slot.to_string());
        }
        if let Some((_, first)) = listen.first() {
            command.env("PORT", first.to_string());
        }
        for (target, port) in &listen {
            command.env(format!("ESSAIM_PORT_{target}"), port.to_string());
        }
        // No file system of its own to mount them in: the task is told where they are.
        if let Some(root) = &self.task_files {
            use crate::task_files::{task_dir, CONFIGS_DIR_VAR, SECRETS_DIR_VAR};
            use essaim_core::model::FileKind;
            for (kind, var) in [
                (FileKind::Secret, SECRETS_DIR_VAR),
                (FileKind::Config, CONFIGS_DIR_VAR),
            ] {
                if !task.spec.files(kind).is_empty() {
                    command.env(var, task_dir(root, &task.id, kind));
                }
            }
        }
        // Made before the fork: the child may only make system calls.
        let joins = match &networked {
            Some(networked) => Some(JoinNetworks::new(networked)?),
            None => None,
        };
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            let limits = cgroup.as_ref().map(TaskCgroup::join_in_child);
            command.pre_exec(move || {
                // First, while the child is still root and sees the node's /sys.
                if let Some(limits) = &limits {
                    limits.join()?;
                }
                if let Some(joins) = &joins {
                    joins.enter()?;
                }
                mounts.apply(joins.is_some())?;
                // After the namespaces and mounts: entering a mount namespace moves to its
                // root, and only root may enter them or mount.
                setup.apply()?;
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = match command.spawn() {
            Ok(child) => child,
            Err(e) => {
                if let Some(cgroup) = &cgroup {
                    cgroup.remove();
                }
                return Err(StartError::failed(format!(
                    "cannot start {}: {e}",
                    program.display()
                )));
            }
        };
        let pid = child
            .id()
            .and_then(|pid| i32::try_from(pid).ok())
            .ok_or_else(|| StartError::failed("the process ended as it started"))?;
        let logs = Arc::new(LogBuffer::default());
        let readers = [
            child.stdout.take().map(|out| read_lines(out, logs.clone())),
            child.stderr.take().map(|err| read_lines(err, logs.clone())),
        ];
        let (exit_tx, exit_rx) = watch::channel(None);
        let waiter_logs = logs.clone();
        let on_networks = networked
            .is_some()
            .then(|| (self.overlay.clone(), task.id.clone()));
        tokio::spawn(async move {
            let mut exit = match child.wait().await {
                Ok(status) => exit_of(status),
                Err(e) => Exit {
                    code: -1,
                    message: format!("lost track of the process: {e}"),
                },
            };
            // As in a container, the task ends with its main process: whatever it started
            // goes too, at once, before the group's ID could ever be reused.
            signal_group(pid, libc::SIGKILL);
            if let Some(cgroup) = cgroup {
                if exit.code != 0 && cgroup.out_of_memory() {
                    exit.message = format!("{} (out of memory: --limit-memory)", exit.message);
                }
                cgroup.remove_when_empty().await;
            }
            // The exit counts now, even if a leftover still held the output open.
            // Off its networks before anyone hears of the exit: `remove` then closes its
            // namespace, which the data plane must no longer be looking at.
            if let Some((overlay, task_id)) = on_networks {
                overlay.detach(&task_id).await;
            }
            exit_tx.send_replace(Some(exit));
            for reader in readers.into_iter().flatten() {
                let _ = reader.await;
            }
            waiter_logs.close();
        });
        self.table().insert(
            task.id.clone(),
            Arc::new(ProcessTask {
                pid,
                stop_signal,
                exit: exit_rx,
                logs,
                last_cpu: Mutex::new(None),
                _networked: networked,
            }),
        );
        Ok(Started {
            ports,
            address: address.map(|a| a.to_string()),
        })
    }
}

impl Executor for ProcessExecutor {
    fn name(&self) -> &'static str {
        "process"
    }

    fn start<'a>(&'a self, task: &'a Task) -> ExecFuture<'a, Result<Started, StartError>> {
        Box::pin(async move {
            let networked = self.join_networks(task).await?;
            let on_networks = networked.is_some();
            let started = self.spawn(task, networked);
            if started.is_err() && on_networks {
                self.overlay.detach(&task.id).await;
            }
            started
        })
    }

    fn wait<'a>(&'a self, task_id: &'a str) -> ExecFuture<'a, Exit> {
        Box::pin(async move {
            let Some(task) = self.task(task_id) else {
                return Exit {
                    code: -1,
                    message: "no such process".to_string(),
                };
            };
            wait_exit(task.exit.clone()).await
        })
    }

    fn stop<'a>(&'a self, task_id: &'a str, grace: Duration) -> ExecFuture<'a, ()> {
        Box::pin(async move {
            let Some(task) = self.task(task_id) else {
                return;
            };
            if task.exit.borrow().is_some() {
                return;
            }
            signal_group(task.pid, task.stop_signal);
            if tokio::time::timeout(grace, wait_exit(task.exit.clone()))
                .await
                .is_err()
            {
                tracing::info!(
                    task = task_id,
                    "still running after the grace period: killing"
                );
                signal_group(task.pid, libc::SIGKILL);
                wait_exit(task.exit.clone()).await;
            }
        })
    }

    fn remove<'a>(&'a self, task_id: &'a str) -> ExecFuture<'a, ()> {
        Box::pin(async move {
            self.stop(task_id, Duration::ZERO).await;
            self.table().remove(task_id);
            // The volumes the task had of its own go with it; named ones stay.
            if let Some(volumes) = &self.volumes {
                let _ = std::fs::remove_dir_all(crate::mounts::task_volumes(volumes, task_id));
            }
        })
    }

    fn logs(&self, task_id: &str, tail: usize, follow: bool) -> Option<LogStream> {
        self.task(task_id).map(|t| t.logs.stream(tail, follow))
    }

    fn adopt<'a>(&'a self, _node_id: &'a str) -> ExecFuture<'a, Vec<String>> {
        // Processes die with the agent that started them: there is nothing to adopt.
        Box::pin(async { Vec::new() })
    }

    fn network_map(&self, map: NetworkMap) {
        self.overlay.set_map(map);
    }

    fn leave_networks(&self) -> ExecFuture<'_, ()> {
        Box::pin(self.overlay.leave())
    }

    fn usage<'a>(&'a self, task_ids: &'a [String]) -> ExecFuture<'a, HashMap<String, TaskUsage>> {
        Box::pin(async move {
            let tasks: Vec<(&String, Arc<ProcessTask>)> = task_ids
                .iter()
                .filter_map(|id| Some((id, self.task(id)?)))
                .filter(|(_, task)| task.exit.borrow().is_none())
                .collect();
            if tasks.is_empty() {
                return HashMap::new();
            }
            let groups: HashSet<i32> = tasks.iter().map(|(_, task)| task.pid).collect();
            let scan = tokio::task::spawn_blocking(move || {
                (Instant::now(), group_usage(Path::new("/proc"), &groups))
            });
            let (at, groups) = match tokio::time::timeout(SAMPLE_TIMEOUT, scan).await {
                Ok(Ok(scan)) => scan,
                Ok(Err(e)) => {
                    tracing::debug!("no usage sample: {e}");
                    return HashMap::new();
                }
                Err(_) => {
                    tracing::debug!("no usage sample: /proc took over {SAMPLE_TIMEOUT:?}");
                    return HashMap::new();
                }
            };
            let ticks_per_second = sysconf(libc::_SC_CLK_TCK);
            let page_size = sysconf(libc::_SC_PAGESIZE);
            let sampled_at = crate::agent::now();
            tasks
                .into_iter()
                .filter_map(|(id, task)| {
                    let group = groups.get(&task.pid)?;
                    let (ticks_before, before) =
                        task.last_cpu.lock().replace((group.cpu_ticks, at))?;
                    let usage = TaskUsage {
                        cpu_millicores: cpu_millicores(
                            // A member that left the group takes its ticks with it.
                            group.cpu_ticks.saturating_sub(ticks_before),
                            ticks_per_second,
                            at.saturating_duration_since(before),
                        ),
                        memory_bytes: group.rss_pages.saturating_mul(page_size),
                        sampled_at,
                    };
                    Some((id.clone(), usage))
                })
                .collect()
        })
    }
}

/// What a process, or a process group summed over its members, used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct ProcUsage {
    /// User and system time, its own and that of the children it has waited for: a task
    /// that runs many short commands uses CPU, and a child's ticks move to its parent when it
    /// is reaped rather than vanish.
    cpu_ticks: u64,
    /// Resident pages; pages shared by several members count once per member.
    rss_pages: u64,
}

/// The process group and usage of a process, from its /proc/PID/stat (proc(5)).
/// What the child does before it executes its program to join its networks: enter the
/// task's network namespace, and in a mount namespace of its own see the task's resolver
/// configuration as `/etc/resolv.conf`. The host's mounts are not changed.
struct JoinNetworks {
    netns: RawFd,
    resolv_conf: CString,
    target: CString,
}

impl JoinNetworks {
    fn new(networked: &Networked) -> Result<JoinNetworks, StartError> {
        let path = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|_| StartError::failed(format!("{} holds a NUL byte", p.display())))
        };
        Ok(JoinNetworks {
            netns: networked.netns.as_raw_fd(),
            resolv_conf: path(&networked.resolv_conf)?,
            target: path(Path::new("/etc/resolv.conf"))?,
        })
    }

    /// Runs in the child between fork and exec: system calls only.
    fn enter(&self) -> std::io::Result<()> {
        // SAFETY: plain system calls on valid descriptors and NUL-terminated paths.
        unsafe {
            check(libc::setns(self.netns, libc::CLONE_NEWNET))?;
            // Private, so that the bind mount below stays in the task's namespace.
            private_mount_namespace()?;
            check(libc::mount(
                self.resolv_conf.as_ptr(),
                self.target.as_ptr(),
                std::ptr::null(),
                libc::MS_BIND,
                std::ptr::null(),
            ))?;
        }
        Ok(())
    }
}

/// `--workdir` and `--user`/`--group`, read and checked before the fork: in the child there
/// is no reading files.
struct Setup {
    workdir: Option<CString>,
    identity: Option<Identity>,
    /// `--ulimit`s, as `setrlimit` takes them.
    limits: Vec<(libc::__rlimit_resource_t, libc::rlimit)>,
}

/// A `--ulimit` name as the kernel numbers it.
fn rlimit_resource(name: &str) -> Option<libc::__rlimit_resource_t> {
    Some(match name {
        "core" => libc::RLIMIT_CORE,
        "cpu" => libc::RLIMIT_CPU,
        "data" => libc::RLIMIT_DATA,
        "fsize" => libc::RLIMIT_FSIZE,
        "locks" => libc::RLIMIT_LOCKS,
        "memlock" => libc::RLIMIT_MEMLOCK,
        "msgqueue" => libc::RLIMIT_MSGQUEUE,
        "nice" => libc::RLIMIT_NICE,
        "nofile" => libc::RLIMIT_NOFILE,
        "nproc" => libc::RLIMIT_NPROC,
        "rss" => libc::RLIMIT_RSS,
        "rtprio" => libc::RLIMIT_RTPRIO,
        "rttime" => libc::RLIMIT_RTTIME,
        "sigpending" => libc::RLIMIT_SIGPENDING,
        "stack" => libc::RLIMIT_STACK,
        _ => return None,
    })
}

impl Setup {
    fn new(task: &Task, node_name: &str) -> Result<Setup, StartError> {
        let options = &task.spec.container;
        let workdir = match options.workdir.as_str() {
            "" => None,
            dir if !Path::new(dir).is_dir() => {
                return Err(StartError::rejected(format!(
                    "--workdir: directory {dir} does not exist on node {node_name}"
                )))
            }
            dir => Some(
                CString::new(dir)
                    .map_err(|_| StartError::rejected("--workdir: the path holds a NUL byte"))?,
            ),
        };
        let identity = if options.user.is_empty() && options.groups.is_empty() {
            None
        } else {
            let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
            // `--group` alone adds groups to the daemon's own user, root.
            let user = match options.user.as_str() {
                "" => "0",
                user => user,
            };
            let identity = accounts::resolve(
                user,
                &options.groups,
                &read("/etc/passwd"),
                &read("/etc/group"),
            )
            .map_err(|e| StartError::rejected(format!("--user: {e} on node {node_name}")))?;
            Some(identity)
        };
        let mut limits = Vec::new();
        for ulimit in &options.ulimits {
            let resource = rlimit_resource(&ulimit.name).ok_or_else(|| {
                StartError::rejected(format!("--ulimit: unknown limit {}", ulimit.name))
            })?;
            // -1 is unlimited, as Docker takes it.
            let value = |v: i64| u64::try_from(v).unwrap_or(libc::RLIM_INFINITY);
            let limit = libc::rlimit {
                rlim_cur: value(ulimit.soft),
                rlim_max: value(ulimit.hard),
            };
            limits.push((resource, limit));
        }
        Ok(Setup {
            workdir,
            identity,
            limits,
        })
    }

    /// Runs in the child between fork and exec: system calls only. Groups, then the group,
    /// then the user: after `setuid` nothing else may change.
    fn apply(&self) -> std::io::Result<()> {
        // SAFETY: plain system calls on a NUL-terminated path and a live slice.
        unsafe {
            if let Some(dir) = &self.workdir {
                check(libc::chdir(dir.as_ptr()))?;
            }
            // Before the user changes: raising a hard limit needs root.
            for (resource, limit) in &self.limits {
                check(libc::setrlimit(*resource, limit))?;
            }
            if let Some(identity) = &self.identity {
                check(libc::setgroups(
                    identity.groups.len(),
                    identity.groups.as_ptr(),
                ))?;
                check(libc::setgid(identity.gid))?;
                check(libc::setuid(identity.uid))?;
            }
        }
        Ok(())
    }
}

/// Moves the calling process (a task's child, between fork and exec) into a mount namespace
/// of its own whose mounts never reach the node's: what it mounts stays the task's.
pub(crate) fn private_mount_namespace() -> std::io::Result<()> {
    // SAFETY: plain system calls with a static path.
    unsafe {
        check(libc::unshare(libc::CLONE_NEWNS))?;
        check(libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))
    }
}

/// A system call's result as an error: -1 is the failure, with `errno`'s reason.
pub(crate) fn check(result: libc::c_int) -> std::io::Result<()> {
    if result == -1 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn parse_stat(stat: &str) -> Option<(i32, ProcUsage)> {
    // The command name comes in parentheses and may hold spaces and parentheses of its own.
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // Numbered as proc(5) numbers them: the state, right after the name, is field 3.
    let field = |number: usize| -> Option<i64> { fields.get(number - 3)?.parse().ok() };
    let counter = |number: usize| field(number).map(|v| u64::try_from(v).unwrap_or(0));
    let pgrp = i32::try_from(field(5)?).ok()?;
    let cpu_ticks = [14, 15, 16, 17]
        .into_iter()
        .map(counter)
        .sum::<Option<u64>>()?;
    Some((
        pgrp,
        ProcUsage {
            cpu_ticks,
            rss_pages: counter(24)?,
        },
    ))
}

/// The usage of each process group of `groups`, summed over its members, from one pass over
/// the processes in `proc`. One pass costs about a millisecond per hundred processes.
fn group_usage(proc: &Path, groups: &HashSet<i32>) -> HashMap<i32, ProcUsage> {
    let mut usage: HashMap<i32, ProcUsage> = HashMap::new();
    let Ok(entries) = std::fs::read_dir(proc) else {
        return usage;
    };
    for entry in entries.flatten() {
        let is_pid = entry
            .file_name()
            .to_str()
            .is_some_and(|name| name.bytes().all(|b| b.is_ascii_digit()));
        if !is_pid {
            continue;
        }
        // A process may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        let Some((pgrp, process)) = parse_stat(&stat) else {
            continue;
        };
        if groups.contains(&pgrp) {
            let group = usage.entry(pgrp).or_default();
            group.cpu_ticks += process.cpu_ticks;
            group.rss_pages += process.rss_pages;
        }
    }
    usage
}

/// `ticks` of CPU time over `elapsed` wall time, in thousandths of a core.
fn cpu_millicores(ticks: u64, ticks_per_second: u64, elapsed: Duration) -> u64 {
    let elapsed_micros = elapsed.as_micros();
    if ticks_per_second == 0 || elapsed_micros == 0 {
        return 0;
    }
    let millicores =
        u128::from(ticks) * 1_000 * 1_000_000 / (u128::from(ticks_per_second) * elapsed_micros);
    u64::try_from(millicores).unwrap_or(u64::MAX)
}

/// A system setting that cannot fail on Linux (clock ticks per second, page size).
fn sysconf(name: libc::c_int) -> u64 {
    // SAFETY: sysconf only reads a system setting.
    let value = unsafe { libc::sysconf(name) };
    u64::try_from(value).unwrap_or(0)
}

async fn wait_exit(mut exit: watch::Receiver<Option<Exit>>) -> Exit {
    match exit.wait_for(Option::is_some).await {
        Ok(exit) => exit.clone().unwrap_or_else(lost),
        Err(_) => lost(),
    }
}

fn lost() -> Exit {
    Exit {
        code: -1,
        message: "lost track of the process".to_string(),
    }
}

fn signal_group(pid: i32, signal: i32) {
    // SAFETY: kill(2) with a negative PID signals the process group the task leads.
    unsafe {
        libc::kill(-pid, signal);
    }
}

fn exit_of(status: std::process::ExitStatus) -> Exit {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => Exit {
            code,
            message: format!("exited with code {code}"),
        },
        (None, Some(signal)) => Exit {
            code: 128 + signal,
            message: format!("killed by signal {signal}"),
        },
        (None, None) => lost(),
    }
}

fn read_lines(
    pipe: impl AsyncRead + Unpin + Send + 'static,
    logs: Arc<LogBuffer>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut lines = BufReader::new(pipe).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            logs.push(line);
        }
    })
}

/// The program `image` names: a path as given, or the first executable of that name in PATH.
fn find_program(image: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if image.contains('/') {
        let candidate = PathBuf::from(image);
        return is_executable(&candidate).then_some(candidate);
    }
    std::env::split_paths(path?)
        .map(|dir| dir.join(image))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// A node port for each target port: the published one when given, else a free one.
fn allocate_ports(wanted: &[PortConfig]) -> std::io::Result<Vec<PortConfig>> {
    wanted
        .iter()
        .map(|port| {
            let published = if port.published != 0 {
                port.published
            } else {
                // The OS picks a free port; the task binds it right after we let it go.
                match port.protocol {
                    Protocol::Tcp => std::net::TcpListener::bind(("0.0.0.0", 0))?
                        .local_addr()?
                        .port(),
                    Protocol::Udp => std::net::UdpSocket::bind(("0.0.0.0", 0))?
                        .local_addr()?
                        .port(),
                }
            };
            Ok(PortConfig { published, ..*port })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use essaim_core::model::{Mount, TaskSpec, TaskState, TaskStatus};
    use essaim_core::Timestamp;
    use futures::StreamExt;

    fn task(id: &str, image: &str, args: &[&str]) -> Task {
        Task {
            id: id.to_string(),
            version: 1,
            created_at: Timestamp(0),
            updated_at: Timestamp(0),
            service_id: "svc".to_string(),
            service_name: "svc".to_string(),
            slot: Some(1),
            node_id: Some("n1".to_string()),
            spec: TaskSpec {
                image: image.to_string(),
                args: args.iter().map(|a| a.to_string()).collect(),
                ..TaskSpec::default()
            },
            ports: vec![PortConfig::tcp(0, 80)],
            networks: Vec::new(),
            service_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Assigned, Timestamp(0), "assigned"),
        }
    }

    #[test]
    fn programs_are_found_in_path_or_by_path() {
        let path = std::ffi::OsString::from("/nonexistent:/bin:/usr/bin");
        assert!(find_program("sh", Some(&path)).is_some());
        assert_eq!(find_program("no-such-program-here", Some(&path)), None);
        assert_eq!(
            find_program("/bin/sh", None),
            Some(PathBuf::from("/bin/sh"))
        );
        let plain = tempfile::NamedTempFile::new().expect("temp file");
        assert_eq!(
            find_program(&plain.path().display().to_string(), None),
            None
        );
    }

    #[tokio::test]
    async fn a_task_runs_with_its_port_and_exit_code_and_keeps_its_output() {
        let executor = ProcessExecutor::new("n1");
        let task = task("t1", "sh", &["-c", "echo port=$PORT; exit 3"]);
        let started = executor.start(&task).await.expect("starts");
        assert_eq!(started.ports.len(), 1);
        assert_ne!(started.ports[0].published, 0);
        let exit = executor.wait("t1").await;
        assert_eq!(exit.code, 3);
        let lines: Vec<String> = executor.logs("t1", 0, true).expect("kept").collect().await;
        assert_eq!(lines, [format!("port={}", started.ports[0].published)]);
        executor.remove("t1").await;
        assert!(executor.logs("t1", 0, false).is_none());
    }

    #[tokio::test]
    async fn stop_terminates_then_kills_after_the_grace_period() {
        let executor = ProcessExecutor::new("n1");
        // Ignores SIGTERM: only the kill after the grace period stops it.
        let task = task(
            "t2",
            "sh",
            &["-c", "trap '' TERM; echo ready; sleep 30 & wait"],
        );
        executor.start(&task).await.expect("starts");
        // Stopping before the trap is set would test nothing.
        let mut output = executor.logs("t2", 0, true).expect("kept");
        assert_eq!(output.next().await.as_deref(), Some("ready"));
        executor.stop("t2", Duration::from_millis(200)).await;
        let exit = executor.wait("t2").await;
        assert_eq!(exit.code, 128 + libc::SIGKILL, "{exit:?}");
    }

    #[tokio::test]
    async fn ulimits_apply_to_the_program() {
        let executor = ProcessExecutor::new("n1");
        let mut task = task("u1", "sh", &["-c", "ulimit -n; ulimit -Hn"]);
        task.spec.container.ulimits = vec!["nofile=64:128".parse().expect("ulimit")];
        executor.start(&task).await.expect("starts");
        executor.wait("u1").await;
        let lines: Vec<String> = executor.logs("u1", 0, true).expect("kept").collect().await;
        assert_eq!(lines, ["64", "128"]);
    }

    #[tokio::test]
    async fn the_stop_signal_is_the_one_asked_for() {
        let executor = ProcessExecutor::new("n1");
        // Exits 7 on SIGINT only; SIGTERM would end it with the shell's 143.
        let mut task = task(
            "t3",
            "sh",
            &[
                "-c",
                "trap 'exit 7' INT; trap '' TERM; echo ready; sleep 30 & wait",
            ],
        );
        task.spec.container.stop_signal = "INT".to_string();
        executor.start(&task).await.expect("starts");
        let mut output = executor.logs("t3", 0, true).expect("kept");
        assert_eq!(output.next().await.as_deref(), Some("ready"));
        executor.stop("t3", Duration::from_secs(10)).await;
        assert_eq!(executor.wait("t3").await.code, 7);
    }

    #[tokio::test]
    async fn entrypoint_user_and_workdir_apply_to_the_program() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: changing user needs root");
            return;
        }
        let executor = ProcessExecutor::new("n1");
        // The image is replaced by the entrypoint, whose own arguments come first.
        let mut task = task("t4", "no-such-program", &["id -u; id -g; pwd; id -G"]);
        task.spec.container.entrypoint = vec!["sh".to_string(), "-c".to_string()];
        task.spec.container.user = "65534:65534".to_string();
        task.spec.container.groups = vec!["4242".to_string()];
        task.spec.container.workdir = "/tmp".to_string();
        executor.start(&task).await.expect("starts");
        assert_eq!(executor.wait("t4").await.code, 0);
        let lines: Vec<String> = executor.logs("t4", 0, true).expect("kept").collect().await;
        assert_eq!(lines, ["65534", "65534", "/tmp", "65534 4242"]);
    }

    #[tokio::test]
    async fn mounts_are_the_task_s_alone_and_named_volumes_outlive_it() {
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: mounting needs root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let (source, target, volumes) = (
            dir.path().join("source"),
            dir.path().join("target"),
            dir.path().join("volumes"),
        );
        std::fs::create_dir_all(&source).expect("source");
        std::fs::create_dir_all(&target).expect("target");
        std::fs::write(source.join("page"), "from the node\n").expect("page");
        let executor = ProcessExecutor::new("n1").with_volumes(volumes.clone());
        let mount = |text: String| text.parse::<Mount>().expect("mount");
        let run = |id: &str, script: &str, mounts: Vec<Mount>| {
            let mut task = task(id, "sh", &["-c", script]);
            task.spec.mounts = mounts;
            task
        };
        let (source, target) = (source.display(), target.display());
        // A read-only bind: readable, not writable.
        let bind = mount(format!(
            "type=bind,source={source},target={target},readonly"
        ));
        let task = run(
            "m1",
            &format!(
                "cat {target}/page; touch {target}/new 2>/dev/null && echo wrote || echo read-only"
            ),
            vec![bind],
        );
        executor.start(&task).await.expect("starts");
        executor.wait("m1").await;
        let lines: Vec<String> = executor.logs("m1", 0, true).expect("kept").collect().await;
        assert_eq!(lines, ["from the node", "read-only"]);
        // A named volume: what one task writes, the next one reads; the node's path is
        // untouched.
        let volume = || mount(format!("source=data,target={target}"));
        let task = run("m2", &format!("echo kept > {target}/note"), vec![volume()]);
        executor.start(&task).await.expect("starts");
        assert_eq!(executor.wait("m2").await.code, 0);
        executor.remove("m2").await;
        let task = run("m3", &format!("cat {target}/note"), vec![volume()]);
        executor.start(&task).await.expect("starts");
        executor.wait("m3").await;
        let lines: Vec<String> = executor.logs("m3", 0, true).expect("kept").collect().await;
        assert_eq!(lines, ["kept"]);
        assert!(volumes.join("data/note").exists());
        assert!(
            !Path::new(&format!("{target}/note")).exists(),
            "the node's own path"
        );
        // A tmpfs of a given size.
        let tmpfs = mount(format!("type=tmpfs,target={target},tmpfs-size=1M"));
        let task = run("m4", &format!("df -k {target} | tail -1"), vec![tmpfs]);
        executor.start(&task).await.expect("starts");
        executor.wait("m4").await;
        let lines: Vec<String> = executor.logs("m4", 0, true).expect("kept").collect().await;
        assert!(
            lines[0].starts_with("tmpfs") && lines[0].contains(" 1024 "),
            "{lines:?}"
        );
        // What the node does not have rejects the task, naming it.
        let missing = mount("type=bind,source=/no/such/source,target=/tmp".to_string());
        let error = executor
            .start(&run("m5", "true", vec![missing]))
            .await
            .expect_err("rejected");
        assert!(error.rejected);
        assert_eq!(
            error.message,
            "--mount: bind source /no/such/source does not exist on node n1"
        );
        let nowhere = mount("type=tmpfs,target=/no/such/target".to_string());
        let error = executor
            .start(&run("m6", "true", vec![nowhere]))
            .await
            .expect_err("rejected");
        assert!(error
            .message
            .starts_with("--mount: target /no/such/target does not exist"));
    }

    #[tokio::test]
    async fn what_the_node_cannot_give_rejects_the_task_naming_the_option() {
        let executor = ProcessExecutor::new("n1");
        type Change = fn(&mut TaskSpec);
        let cases: [(&str, Change); 4] = [
            (
                "--workdir: directory /no/such/dir does not exist on node n1",
                |spec| {
                    spec.container.workdir = "/no/such/dir".to_string();
                },
            ),
            (
                "--user: user \"no-such-user\" not found in /etc/passwd on node n1",
                |spec| {
                    spec.container.user = "no-such-user".to_string();
                },
            ),
            (
                "the process runtime of node n1 cannot apply --hostname",
                |spec| {
                    spec.container.hostname = "web".to_string();
                },
            ),
            (
                "program \"no-such-entrypoint\" not found in PATH on node n1",
                |spec| {
                    spec.container.entrypoint = vec!["no-such-entrypoint".to_string()];
                },
            ),
        ];
        for (wanted, change) in cases {
            let mut task = task("t5", "true", &[]);
            change(&mut task.spec);
            let error = executor.start(&task).await.expect_err(wanted);
            assert!(error.rejected, "{wanted}");
            assert_eq!(error.message, wanted);
        }
    }

    #[test]
    fn stat_lines_give_the_group_the_cpu_ticks_and_the_resident_pages() {
        // A name with spaces and a parenthesis; utime 250, stime 50, cutime 7, cstime 3,
        // rss 1234 pages.
        let stat = "4242 (my (odd) task) R 1 4242 4242 0 -1 4194304 101 0 0 0 250 50 7 3 \
                    20 0 1 0 131789 3133440 1234 18446744073709551615 0 0 0 0 0 0 0 0 0 0 0 0 \
                    17 1 0 0 0 0 0";
        assert_eq!(
            parse_stat(stat),
            Some((
                4242,
                ProcUsage {
                    cpu_ticks: 310,
                    rss_pages: 1234
                }
            ))
        );
        assert_eq!(parse_stat("4242 (cut short) R 1 4242"), None);
        assert_eq!(parse_stat(""), None);
    }

    #[test]
    fn a_group_s_usage_sums_its_members_and_nothing_else() {
        let proc = tempfile::tempdir().expect("temp dir");
        let stat = |pid: u32, pgrp: u32, utime: u64, rss: u64| {
            let dir = proc.path().join(pid.to_string());
            std::fs::create_dir_all(&dir).expect("dir");
            let line = format!(
                "{pid} (sh) S 1 {pgrp} {pgrp} 0 -1 0 0 0 0 0 {utime} 0 0 0 20 0 1 0 1 1 {rss}"
            );
            std::fs::write(dir.join("stat"), line).expect("stat");
        };
        stat(100, 100, 40, 10);
        stat(101, 100, 2, 5);
        stat(200, 200, 99, 99);
        // Not a process, and a process gone before its stat was read.
        std::fs::create_dir_all(proc.path().join("self")).expect("dir");
        std::fs::create_dir_all(proc.path().join("300")).expect("dir");
        let usage = group_usage(proc.path(), &HashSet::from([100, 400]));
        assert_eq!(
            usage,
            HashMap::from([(
                100,
                ProcUsage {
                    cpu_ticks: 42,
                    rss_pages: 15
                }
            )])
        );
    }

    #[test]
    fn cpu_ticks_over_wall_time_are_millicores() {
        // 50 ticks of 10 ms in half a second: one core, fully busy.
        assert_eq!(cpu_millicores(50, 100, Duration::from_millis(500)), 1_000);
        assert_eq!(cpu_millicores(5, 100, Duration::from_secs(1)), 50);
        assert_eq!(cpu_millicores(300, 100, Duration::from_secs(1)), 3_000);
        assert_eq!(cpu_millicores(0, 100, Duration::from_secs(1)), 0);
        assert_eq!(cpu_millicores(50, 100, Duration::ZERO), 0);
    }

    #[tokio::test]
    async fn a_busy_task_uses_a_core_and_a_sleeping_one_next_to_nothing() {
        let executor = ProcessExecutor::new("n1");
        executor
            .start(&task("busy", "sh", &["-c", "while :; do :; done"]))
            .await
            .expect("starts");
        executor
            .start(&task("idle", "sleep", &["30"]))
            .await
            .expect("starts");
        let ids = ["busy".to_string(), "idle".to_string()];
        assert!(
            executor.usage(&ids).await.is_empty(),
            "CPU use needs two samples"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let usage = executor.usage(&ids).await;
        executor.remove("busy").await;
        executor.remove("idle").await;
        let (busy, idle) = (usage["busy"], usage["idle"]);
        assert!(busy.cpu_millicores > 300, "{busy:?}");
        assert!(idle.cpu_millicores < 200, "{idle:?}");
        assert!(busy.memory_bytes > 0 && idle.memory_bytes > 0, "{usage:?}");
    }

    #[tokio::test]
    async fn a_missing_program_is_rejected_naming_it_and_the_node() {
        let executor = ProcessExecutor::new("n1");
        let error = executor
            .start(&task("t3", "no-such-program-here", &[]))
            .await
            .expect_err("rejected");
        assert!(error.rejected);
        assert_eq!(
            error.message,
            "program \"no-such-program-here\" not found in PATH on node n1"
        );
    }
}
