//! The sim runtime: tasks do no OS work. They run after a start delay and until stopped, so
//! that one process can host hundreds of nodes for scale tests. A task's env tells it to
//! misbehave:
//! - `SIM_EXIT_AFTER=2s` ends it after that long, with `SIM_EXIT_CODE` (default 1);
//! - `SIM_REJECT=reason` refuses it at start.

use std::collections::HashMap;
use std::sync::Mutex;
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

    fn table(&self) -> std::sync::MutexGuard<'_, HashMap<String, watch::Sender<Option<Exit>>>> {
        self.tasks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn end(&self, task_id: &str, exit: Exit) {
        if let Some(task) = self.table().get(task_id) {
            task.send_if_modified(|current| {
                let first = current.is_none();
                if first {
                    *current = Some(exit);
                }
                first
            });
        }
    }
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
                    // Kept even with nobody waiting yet, and never over an earlier stop.
                    exit.send_if_modified(|current| {
                        let first = current.is_none();
                        if first {
                            *current = Some(Exit {
                                code: exit_code,
                                message: format!("exited with code {exit_code}"),
                            });
                        }
                        first
                    });
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

    fn adopt(&self) -> ExecFuture<'_, Vec<String>> {
        Box::pin(async { Vec::new() })
    }
}
