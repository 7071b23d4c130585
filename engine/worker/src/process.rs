//! The process runtime: each task is an OS process. IMAGE names the program (looked up in
//! PATH unless it is a path), ARGs are its arguments. The runtime of machines without Docker,
//! and of most tests.
//!
//! Each task runs in its own process group, so that stopping it stops whatever it started,
//! and dies with the agent (PR_SET_PDEATHSIG): a node that is killed takes its tasks with it,
//! as a machine that fails would.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use essaim_core::model::{PortConfig, Task};
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;

use crate::executor::{ExecFuture, Executor, Exit, LogStream, StartError, Started};
use crate::logs::LogBuffer;

pub struct ProcessExecutor {
    node_name: String,
    tasks: Mutex<HashMap<String, Arc<ProcessTask>>>,
}

struct ProcessTask {
    /// Also the process group ID.
    pid: i32,
    exit: watch::Receiver<Option<Exit>>,
    logs: Arc<LogBuffer>,
}

impl ProcessExecutor {
    pub fn new(node_name: &str) -> Self {
        ProcessExecutor {
            node_name: node_name.to_string(),
            tasks: Mutex::new(HashMap::new()),
        }
    }

    fn task(&self, task_id: &str) -> Option<Arc<ProcessTask>> {
        self.table().get(task_id).cloned()
    }

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<ProcessTask>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn(&self, task: &Task) -> Result<Started, StartError> {
        let program = find_program(&task.spec.image, std::env::var_os("PATH").as_deref())
            .ok_or_else(|| {
                StartError::rejected(format!(
                    "program {:?} not found in PATH on node {}",
                    task.spec.image, self.node_name
                ))
            })?;
        let ports = allocate_ports(&task.ports)
            .map_err(|e| StartError::failed(format!("cannot allocate a port: {e}")))?;
        let mut command = tokio::process::Command::new(&program);
        command
            .args(&task.spec.args)
            .envs(&task.spec.env)
            .env("ESSAIM_TASK_ID", &task.id)
            .env("ESSAIM_SERVICE_ID", &task.service_id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(slot) = task.slot {
            command.env("ESSAIM_TASK_SLOT", slot.to_string());
        }
        if let Some(first) = ports.first() {
            command.env("PORT", first.published.to_string());
        }
        for port in &ports {
            command.env(
                format!("ESSAIM_PORT_{}", port.target),
                port.published.to_string(),
            );
        }
        // SAFETY: only async-signal-safe calls between fork and exec.
        unsafe {
            command.pre_exec(|| {
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command
            .spawn()
            .map_err(|e| StartError::failed(format!("cannot start {}: {e}", program.display())))?;
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
        tokio::spawn(async move {
            let exit = match child.wait().await {
                Ok(status) => exit_of(status),
                Err(e) => Exit {
                    code: -1,
                    message: format!("lost track of the process: {e}"),
                },
            };
            // As in a container, the task ends with its main process: whatever it started
            // goes too, at once, before the group's ID could ever be reused.
            signal_group(pid, libc::SIGKILL);
            // The exit counts now, even if a leftover still held the output open.
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
                exit: exit_rx,
                logs,
            }),
        );
        Ok(Started {
            ports,
            address: None,
        })
    }
}

impl Executor for ProcessExecutor {
    fn name(&self) -> &'static str {
        "process"
    }

    fn start<'a>(&'a self, task: &'a Task) -> ExecFuture<'a, Result<Started, StartError>> {
        Box::pin(async move { self.spawn(task) })
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
            signal_group(task.pid, libc::SIGTERM);
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
        })
    }

    fn logs(&self, task_id: &str, tail: usize, follow: bool) -> Option<LogStream> {
        self.task(task_id).map(|t| t.logs.stream(tail, follow))
    }

    fn adopt<'a>(&'a self, _node_id: &'a str) -> ExecFuture<'a, Vec<String>> {
        // Processes die with the agent that started them: there is nothing to adopt.
        Box::pin(async { Vec::new() })
    }
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
                std::net::TcpListener::bind(("0.0.0.0", 0))?
                    .local_addr()?
                    .port()
            };
            Ok(PortConfig {
                published,
                target: port.target,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use essaim_core::model::{TaskSpec, TaskState, TaskStatus};
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
            ports: vec![PortConfig {
                published: 0,
                target: 80,
            }],
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
