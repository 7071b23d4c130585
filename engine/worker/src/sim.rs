//! The sim runtime: tasks do no OS work. They run after a start delay and until stopped, so
//! that one process can host hundreds of nodes for scale tests. A task's env tells it to
//! misbehave:
//! - `SIM_EXIT_AFTER=2s` ends it after that long, with `SIM_EXIT_CODE` (default 1);
//! - `SIM_REJECT=reason` refuses it at start.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::Duration;

use essaim_core::model::Task;
use essaim_core::time::parse_duration_ms;
use tokio::sync::watch;

use crate::executor::{ExecFuture, Executor, Exit, LogStream, StartError, Started};

pub struct SimExecutor {
    start_delay: Duration,
    tasks: Mutex<HashMap<String, watch::Sender<Option<Exit>>>>,
}

impl SimExecutor {
    pub fn new(start_delay: Duration) -> Self {
        SimExecutor {
            start_delay,
            tasks: Mutex::new(HashMap::new()),
        }
    }

    fn table(&self) -> parking_lot::MutexGuard<'_, HashMap<String, watch::Sender<Option<Exit>>>> {
        self.tasks.lock()
    }

    fn end(&self, task_id: &str, exit: Exit) {
        if let Some(task) = self.table().get(task_id) {
            end_once(task, exit);
        }
    }
}

/// Records how a task ended, unless it already has: the first end wins, a stop over a later
/// timed exit as much as the reverse. Kept even while nobody waits yet.
fn end_once(task: &watch::Sender<Option<Exit>>, exit: Exit) {
    task.send_if_modified(|current| {
        let first = current.is_none();
        if first {
            *current = Some(exit);
        }
        first
    });
}

impl Executor for SimExecutor {
    fn name(&self) -> &'static str {
        "sim"
    }

    fn start<'a>(&'a self, task: &'a Task) -> ExecFuture<'a, Result<Started, StartError>> {
        Box::pin(async move {
            if let Some(reason) = task.spec.env.get("SIM_REJECT") {
                return Err(StartError::rejected(reason.clone()));
            }
            let exit_after = match task.spec.env.get("SIM_EXIT_AFTER") {
                Some(text) => Some(
                    parse_duration_ms(text)
                        .map_err(|e| StartError::rejected(format!("SIM_EXIT_AFTER: {e}")))?,
                ),
                None => None,
            };
            let exit_code: i32 = match task.spec.env.get("SIM_EXIT_CODE") {
                Some(code) => code.parse().map_err(|_| {
                    StartError::rejected(format!("SIM_EXIT_CODE: {code:?} is not a number"))
                })?,
                None => 1,
            };
            tokio::time::sleep(self.start_delay).await;
            let (exit, _) = watch::channel(None);
            self.table().insert(task.id.clone(), exit.clone());
            if let Some(after) = exit_after {
                tokio::spawn(async move {
                    tokio::time::sleep(Duration::from_millis(after)).await;
                    end_once(
                        &exit,
                        Exit {
                            code: exit_code,
                            message: format!("exited with code {exit_code}"),
                        },
                    );
                });
            }
            Ok(Started::default())
        })
    }

    fn wait<'a>(&'a self, task_id: &'a str) -> ExecFuture<'a, Exit> {
        Box::pin(async move {
            let Some(mut exit) = self.table().get(task_id).map(|t| t.subscribe()) else {
                return Exit {
                    code: -1,
                    message: "no such task".to_string(),
                };
            };
            let ended = exit
                .wait_for(Option::is_some)
                .await
                .ok()
                .and_then(|e| e.clone());
            ended.unwrap_or(Exit {
                code: -1,
                message: "removed".to_string(),
            })
        })
    }

    fn stop<'a>(&'a self, task_id: &'a str, _grace: Duration) -> ExecFuture<'a, ()> {
        Box::pin(async move {
            self.end(
                task_id,
                Exit {
                    code: 0,
                    message: "stopped".to_string(),
                },
            );
        })
    }

    fn remove<'a>(&'a self, task_id: &'a str) -> ExecFuture<'a, ()> {
        Box::pin(async move {
            self.table().remove(task_id);
        })
    }

    fn logs(&self, task_id: &str, _tail: usize, _follow: bool) -> Option<LogStream> {
        self.table().contains_key(task_id).then(|| {
            use futures::StreamExt;
            futures::stream::iter(["simulated task: no output".to_string()]).boxed()
        })
    }

    fn adopt<'a>(&'a self, _node_id: &'a str) -> ExecFuture<'a, Vec<String>> {
        Box::pin(async { Vec::new() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use essaim_core::model::{TaskSpec, TaskState, TaskStatus};
    use essaim_core::Timestamp;

    fn task(id: &str, env: &[(&str, &str)]) -> Task {
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
                image: "sim".to_string(),
                env: env
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..TaskSpec::default()
            },
            ports: Vec::new(),
            networks: Vec::new(),
            service_version: 1,
            desired_state: TaskState::Running,
            status: TaskStatus::new(TaskState::Assigned, Timestamp(0), "assigned"),
        }
    }

    #[tokio::test]
    async fn an_exit_that_comes_before_anyone_waits_is_kept() {
        let executor = SimExecutor::new(Duration::ZERO);
        let task = task("t1", &[("SIM_EXIT_AFTER", "0ms"), ("SIM_EXIT_CODE", "7")]);
        executor.start(&task).await.expect("starts");
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(executor.wait("t1").await.code, 7);
    }

    #[tokio::test]
    async fn a_stop_wins_over_a_later_exit() {
        let executor = SimExecutor::new(Duration::ZERO);
        let task = task("t2", &[("SIM_EXIT_AFTER", "50ms")]);
        executor.start(&task).await.expect("starts");
        executor.stop("t2", Duration::ZERO).await;
        tokio::time::sleep(Duration::from_millis(80)).await;
        let exit = executor.wait("t2").await;
        assert_eq!((exit.code, exit.message.as_str()), (0, "stopped"));
    }

    #[tokio::test]
    async fn bad_switches_are_rejected_naming_them() {
        let executor = SimExecutor::new(Duration::ZERO);
        let rejected = executor
            .start(&task("t3", &[("SIM_REJECT", "no room")]))
            .await
            .expect_err("rejected");
        assert!(rejected.rejected);
        assert_eq!(rejected.message, "no room");
        let bad = executor
            .start(&task("t4", &[("SIM_EXIT_CODE", "seven")]))
            .await
            .expect_err("bad code");
        assert_eq!(bad.message, "SIM_EXIT_CODE: \"seven\" is not a number");
    }
}
