//! Waiting for a service to converge, and showing how far it got: what `service create`,
//! `update` and `scale` do unless `--detach`, and what `service wait` is.
//!
//! Converged means: as many tasks meant to run as the service wants, all running the current
//! spec, and none of the tasks being replaced or scaled away still alive. The wait wakes on
//! the cluster's changes (a long poll on the manager), not on a timer. It gives up, saying
//! why, when one slot has failed three times since the wait began: the cluster goes on
//! retrying, but a person or a script should look.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use essaim_api::control::{ServiceView, TaskView};
use essaim_core::model::{TaskState, UpdateState};
use essaim_core::Timestamp;

use crate::client::Client;
use crate::render::Output;
use crate::style::{self, Tone};
use crate::{Interrupted, TimedOut};

/// Failures of one slot, since the wait began, after which the wait gives up.
const FAILURES_TO_GIVE_UP: usize = 3;
/// Slots shown one bar each; past that, only the overall line.
const MAX_BARS: usize = 20;
/// The longest one long poll waits: the display's "for 12s" still moves meanwhile.
const POLL: Duration = Duration::from_secs(2);
/// Width of a slot's progress bar.
const BAR: usize = 40;

/// The service did not converge, and why; the cluster keeps trying (exit 1).
#[derive(Debug)]
pub struct NotConverged(pub String);

impl std::fmt::Display for NotConverged {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotConverged {}

/// What the wait follows: it names it on Ctrl-C, and tells a rollback that was asked for
/// (success) from an update that rolled back (failure).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Creation,
    Update,
    Scaling,
    Rollback,
    /// `service wait`, `wait_converged`: whatever is under way.
    Deployment,
}

impl Operation {
    fn describe(self, service: &str) -> String {
        let what = match self {
            Operation::Creation => "the creation",
            Operation::Update => "the update",
            Operation::Scaling => "the scaling",
            Operation::Rollback => "the rollback",
            Operation::Deployment => "the deployment",
        };
        format!("{what} of {service}")
    }
}

/// Waits until `service` converges, drawing progress on stderr.
///
/// # Errors
/// [`TimedOut`] after `timeout`, [`NotConverged`] when a slot keeps failing, [`Interrupted`] on
/// Ctrl-C (the operation goes on in the cluster), or the cluster could not be asked.
pub async fn wait(
    client: &mut Client,
    service: &str,
    timeout: Option<Duration>,
    operation: Operation,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let what = operation.describe(service);
    let follow =
        format!("follow it with 'essaim service ps {service}' or 'essaim service wait {service}'");
    // Listening starts before the first progress line, so that a Ctrl-C that follows the
    // line is always this wait's, never the connection's plain "stopped".
    let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
    tokio::select! {
        biased;
        result = wait_quietly_interruptible(client, service, timeout, operation, output) => result,
        _ = interrupt.recv() => {
            output.note("\n");
            Err(Interrupted(format!("{what} goes on in the cluster; {follow}")).into())
        }
    }
}

async fn wait_quietly_interruptible(
    client: &mut Client,
    service: &str,
    timeout: Option<Duration>,
    operation: Operation,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let since = now();
    let mut display = Display::default();
    let mut index = 0;
    loop {
        let view = client.service_inspect(service).await?;
        let tasks = client.task_list(Some(&view.service.id), None).await?;
        let progress = Progress::of(&view, &tasks, since, now());
        display.draw(&progress, output);
        if let Some(outcome) = update_outcome(&view, operation) {
            if outcome.is_ok() {
                let name = &view.service.spec.name;
                output.note(&format!(
                    "{name}: paused at a checkpoint; go on with 'essaim service update \
                     --continue {name}'\n"
                ));
            }
            return outcome;
        }
        if progress.converged {
            output.note(&format!(
                "{}\n",
                style::paint(
                    &match progress.completed {
                        Some(completed) => format!(
                            "{}: job complete ({completed} out of {} tasks completed)",
                            view.service.spec.name, progress.desired
                        ),
                        None => format!(
                            "{}: converged ({} out of {} tasks running)",
                            view.service.spec.name, progress.running, progress.desired
                        ),
                    },
                    Tone::Good
                )
            ));
            return Ok(());
        }
        if let Some(reason) = progress.stuck() {
            return Err(NotConverged(format!(
                "{} did not converge: {reason}; the cluster keeps trying (see 'essaim service \
                 ps {service}')",
                view.service.spec.name
            ))
            .into());
        }
        let poll = match timeout {
            Some(timeout) => {
                let left = timeout.saturating_sub(started.elapsed());
                if left.is_zero() {
                    return Err(TimedOut(format!(
                        "{} has not converged after {}: {} out of {} tasks running; it goes \
                         on in the cluster",
                        view.service.spec.name,
                        essaim_core::time::format_duration_ms(
                            u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX)
                        ),
                        progress.running,
                        progress.desired
                    ))
                    .into());
                }
                left.min(POLL)
            }
            None => POLL,
        };
        index = client.wait_change(index, poll).await?;
    }
}

fn now() -> Timestamp {
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_millis());
    Timestamp(u64::try_from(millis).unwrap_or(u64::MAX))
}

/// Where a rolling update (or rollback) that stopped leaves the wait: a checkpoint is the
/// end of a phase (success); a pause for failures or an update rolled back is a failure.
fn update_outcome(view: &ServiceView, operation: Operation) -> Option<anyhow::Result<()>> {
    let status = view.service.update_status.as_ref()?;
    let name = &view.service.spec.name;
    match status.state {
        UpdateState::RollbackCompleted if operation == Operation::Update => {
            Some(Err(NotConverged(format!(
                "{name}: the update was rolled back: {}",
                status.message
            ))
            .into()))
        }
        UpdateState::Paused | UpdateState::RollbackPaused
            if status.pause_at == Some(status.updated) =>
        {
            Some(Ok(()))
        }
        UpdateState::Paused | UpdateState::RollbackPaused => Some(Err(NotConverged(format!(
            "{name}: {}; fix it and go on with 'essaim service update --continue {name}', or \
             'essaim service rollback {name}'",
            status.message
        ))
        .into())),
        _ => None,
    }
}

/// One slot as the progress shows it: its newest task meant to run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// `1/3` for replicated slots, the node's hostname for global services.
    pub label: String,
    pub state: Option<TaskState>,
    /// The task runs an older spec: it is still to be replaced.
    pub outdated: bool,
    /// Why the task is not running yet, or why it failed.
    pub note: String,
}

/// How far a service is from converged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Progress {
    pub desired: u64,
    /// Tasks meant to run that run the current spec.
    pub running: u64,
    /// A job's completions; `None` for other services.
    pub completed: Option<u64>,
    pub converged: bool,
    pub slots: Vec<Slot>,
    /// Per slot: failures since the wait began, and the last one's words.
    pub failures: BTreeMap<String, (usize, String)>,
    /// The rolling update under way, as one line: `update: updating, 2 of 4 tasks updated`.
    pub update: Option<String>,
}

impl Progress {
    /// Reads the progress off the service and its tasks; failures count from `since`;
    /// `now` tells how long new tasks have yet to be watched by a rolling update.
    pub fn of(
        view: &ServiceView,
        tasks: &[TaskView],
        since: Timestamp,
        now: Timestamp,
    ) -> Progress {
        let current = |task: &TaskView| essaim_core::is_current(&task.task, &view.service);
        let live: Vec<&TaskView> = tasks
            .iter()
            .filter(|view| view.task.desired_state == TaskState::Running)
            .collect();
        let running = live
            .iter()
            .filter(|view| view.task.status.state == TaskState::Running && current(view))
            .count() as u64;
        // Tasks scaled away that have not stopped yet. (Tasks replaced by an update are the
        // updater's to follow; a task shut down on a node that died may never say it stopped.)
        let leaving = tasks.iter().any(|view| {
            view.task.desired_state == TaskState::Remove && !view.task.status.state.is_terminal()
        });
        // An update is done when the updater says so: new tasks must also pass their monitor
        // period.
        let update_done = view.service.update_status.as_ref().is_none_or(|status| {
            matches!(
                status.state,
                UpdateState::Completed | UpdateState::RollbackCompleted
            )
        });
        let job = view.service.spec.mode.is_job();
        // A job is done when every place completed; it has no rolling update.
        let converged = if job {
            view.completed >= view.desired
        } else {
            running == view.desired && live.len() as u64 == view.desired && !leaving && update_done
        };
        let update = view.service.update_status.as_ref().map(|status| {
            let mut line = format!(
                "{}: {} of {} tasks updated",
                status.state.as_str().replace('_', " "),
                status.updated,
                view.desired
            );
            if status.failures > 0 {
                line.push_str(&format!(", {} failed", status.failures));
            }
            if !status.message.is_empty() {
                line.push_str(&format!(" ({})", status.message));
            }
            line
        });

        let key = |view: &TaskView| match view.task.slot {
            Some(slot) => format!("{slot}"),
            None => view
                .node_hostname
                .clone()
                .unwrap_or_else(|| view.task.node_id.clone().unwrap_or_else(|| "?".to_string())),
        };
        let mut failures: BTreeMap<String, (usize, String)> = BTreeMap::new();
        for view in tasks {
            let status = &view.task.status;
            if matches!(status.state, TaskState::Failed | TaskState::Rejected)
                && status.timestamp >= since
                && current(view)
            {
                let entry = failures.entry(key(view)).or_default();
                entry.0 += 1;
                entry.1 = failure_words(view);
            }
        }

        // While an update runs, a new task counts once it has run for the monitor period.
        let monitor_ms =
            view.service
                .update_status
                .as_ref()
                .and_then(|status| match status.state {
                    UpdateState::Updating => Some(view.service.spec.update_config.monitor_ms),
                    UpdateState::RollbackStarted => {
                        Some(view.service.spec.rollback_config.monitor_ms)
                    }
                    _ => None,
                });
        // A job's places that completed show as complete.
        let shown: Vec<&TaskView> = if job {
            let mut shown = live.clone();
            shown.extend(tasks.iter().filter(|task| {
                task.task.status.state == TaskState::Complete
                    && current(task)
                    && !live.iter().any(|l| key(l) == key(task))
            }));
            shown
        } else {
            live.clone()
        };
        let mut slots: Vec<Slot> = shown
            .iter()
            .map(|task| {
                let status = &task.task.status;
                let watched_until = monitor_ms
                    .filter(|_| status.state == TaskState::Running && current(task))
                    .map(|ms| status.timestamp.0.saturating_add(ms))
                    .filter(|until| *until > now.0);
                let note = match (&status.error, status.state, watched_until) {
                    (Some(error), _, _) => error.clone(),
                    (None, TaskState::Running, Some(until)) => {
                        format!("monitoring, {}s left", (until - now.0).div_ceil(1000))
                    }
                    (None, TaskState::Running, None) => String::new(),
                    (None, _, _) => status.message.clone(),
                };
                let note = match failures.get(&key(task)) {
                    Some((count, last))
                        if note.is_empty() || status.state != TaskState::Running =>
                    {
                        format!("failed {count}x: {last}")
                    }
                    _ => note,
                };
                Slot {
                    label: key(task),
                    state: Some(status.state),
                    outdated: !current(task),
                    note,
                }
            })
            .collect();
        // Replicated slots not yet given a task show as new.
        if view.service.spec.mode.slots().is_some() {
            for slot in 1..=view.desired {
                let label = format!("{slot}");
                if !slots.iter().any(|s| s.label == label) {
                    slots.push(Slot {
                        label,
                        state: None,
                        outdated: false,
                        note: String::new(),
                    });
                }
            }
            slots.sort_by_key(|slot| slot.label.parse::<u64>().unwrap_or(u64::MAX));
            for slot in &mut slots {
                slot.label = format!("{}/{}", slot.label, view.desired);
            }
        } else {
            slots.sort_by(|a, b| a.label.cmp(&b.label));
        }
        Progress {
            desired: view.desired,
            running,
            completed: job.then_some(view.completed),
            converged,
            slots,
            failures,
            update,
        }
    }

    /// Why waiting longer would not help: a slot that failed again and again.
    pub fn stuck(&self) -> Option<String> {
        let (slot, (count, last)) = self
            .failures
            .iter()
            .filter(|(_, (count, _))| *count >= FAILURES_TO_GIVE_UP)
            .max_by_key(|(_, (count, _))| *count)?;
        Some(format!("slot {slot} failed {count} times: {last}"))
    }

    /// The lines the progress shows.
    pub fn lines(&self) -> Vec<String> {
        let mut lines = vec![match self.completed {
            Some(completed) => format!(
                "overall progress: {completed} out of {} tasks completed",
                self.desired
            ),
            None => format!(
                "overall progress: {} out of {} tasks",
                self.running, self.desired
            ),
        }];
        if let Some(update) = &self.update {
            lines.push(update.clone());
        }
        if self.slots.len() > MAX_BARS {
            let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
            for slot in &self.slots {
                *counts
                    .entry(slot.state.map_or("new", |state| state.as_str()))
                    .or_default() += 1;
            }
            let counts: Vec<String> = counts
                .iter()
                .map(|(state, count)| format!("{count} {state}"))
                .collect();
            lines.push(counts.join(", "));
            return lines;
        }
        let width = self.slots.iter().map(|s| s.label.len()).max().unwrap_or(0);
        for slot in &self.slots {
            let word = match (slot.state, slot.outdated) {
                (Some(state), false) => state.as_str().to_string(),
                (Some(state), true) => format!("{} (old spec)", state.as_str()),
                (None, _) => "new".to_string(),
            };
            let tone = if slot.outdated {
                Tone::Dim
            } else {
                Tone::of_state(&word)
            };
            let mut line = format!(
                "{:>width$}: {} {}",
                slot.label,
                style::paint(&format!("{word:<16}"), tone),
                bar(slot.state.filter(|_| !slot.outdated))
            );
            if !slot.note.is_empty() {
                line.push(' ');
                line.push_str(&style::paint(&slot.note, Tone::Bad));
            }
            lines.push(line);
        }
        lines
    }
}

/// What a failed task said: its error, else its message, with the exit code.
fn failure_words(view: &TaskView) -> String {
    let status = &view.task.status;
    let mut words = status
        .error
        .clone()
        .filter(|error| !error.is_empty())
        .unwrap_or_else(|| status.message.clone());
    if let Some(code) = status.exit_code {
        words = format!("{words} (exit code {code})");
    }
    words
}

/// `[=====>     ]`: how far along its way to running a task is.
fn bar(state: Option<TaskState>) -> String {
    let rank = |state: TaskState| state.rank();
    let filled = match state {
        None => 0,
        Some(state) if state.is_terminal() => 0,
        Some(state) => BAR * rank(state) / rank(TaskState::Running),
    };
    let mut bar = String::with_capacity(BAR + 2);
    bar.push('[');
    for i in 0..BAR {
        bar.push(match i.cmp(&filled) {
            std::cmp::Ordering::Less if i + 1 == filled => '>',
            std::cmp::Ordering::Less => '=',
            _ => ' ',
        });
    }
    bar.push(']');
    bar
}

/// Draws progress on stderr: redrawn in place on a terminal; elsewhere, a line each time the
/// overall count changes, so logs stay short.
#[derive(Default)]
struct Display {
    drawn: usize,
    printed: std::collections::HashSet<String>,
}

impl Display {
    fn draw(&mut self, progress: &Progress, output: &mut Output<'_>) {
        let lines = progress.lines();
        if output.terminal {
            let mut text = String::new();
            for _ in 0..self.drawn {
                text.push_str("\x1b[1A\x1b[2K");
            }
            for line in &lines {
                text.push_str(line);
                text.push('\n');
            }
            self.drawn = lines.len();
            output.note(&text);
        } else {
            // Off a terminal, a line only when it says something new: the overall count, the
            // update's state, and why a slot waits or fails.
            let news: Vec<String> = lines
                .iter()
                .filter(|line| !self.printed.contains(*line))
                .filter(|line| {
                    line.starts_with("overall") || !line.contains('[') || line.contains("] ")
                })
                .cloned()
                .collect();
            for line in news {
                output.note(&format!("{line}\n"));
                self.printed.insert(line);
            }
        }
    }
}

/// `service wait`: the same wait, alone.
///
/// # Errors
/// As [`wait`].
pub async fn service_wait(
    args: crate::cli::ServiceWaitArgs,
    client: &mut Client,
    output: &mut Output<'_>,
) -> anyhow::Result<()> {
    let timeout = args.timeout.map(Duration::from_millis);
    wait(
        client,
        &args.service,
        timeout,
        Operation::Deployment,
        output,
    )
    .await
}

#[cfg(test)]
mod tests {
    use essaim_core::model::TaskSpec;

    use super::*;
    use crate::commands::service::tests::service_view;

    fn spec(image: &str) -> TaskSpec {
        TaskSpec {
            image: image.to_string(),
            ..TaskSpec::default()
        }
    }

    /// A task of slot `slot` running `image`, in `state`, as of `at`.
    fn task(
        id: &str,
        slot: u64,
        image: &str,
        desired: TaskState,
        state: TaskState,
        at: u64,
    ) -> TaskView {
        let mut view = crate::commands::service::tests::task(id, slot, at, desired, state, "");
        view.task.spec = spec(image);
        view
    }

    /// Service web, publishing no port (so that the tasks above run its spec).
    fn web(running: u64, desired: u64, image: &str) -> ServiceView {
        let mut view = service_view("s1", "web", running, desired);
        view.service.spec.task = spec(image);
        view.service.spec.ports = Vec::new();
        view
    }

    #[test]
    fn a_task_without_the_ports_the_service_now_publishes_is_not_converged() {
        let mut view = web(1, 1, "v1");
        let one = task("t1", 1, "v1", TaskState::Running, TaskState::Running, 0);
        assert!(
            Progress::of(
                &view,
                std::slice::from_ref(&one),
                Timestamp(0),
                Timestamp(0)
            )
            .converged
        );
        view.service.spec.ports = vec![essaim_core::model::PortConfig::tcp(8080, 80)];
        assert!(!Progress::of(&view, &[one], Timestamp(0), Timestamp(0)).converged);
    }

    #[test]
    fn converged_needs_every_slot_running_the_current_spec() {
        use TaskState::Running;
        let view = web(2, 2, "v2");
        let one = task("t1", 1, "v2", Running, Running, 0);
        let two = task("t2", 2, "v1", Running, Running, 0);
        let progress = Progress::of(&view, &[one.clone(), two], Timestamp(0), Timestamp(0));
        assert!(!progress.converged, "slot 2 runs the old spec");
        assert_eq!(progress.running, 1);
        assert!(progress.slots[1].outdated);

        let two = task("t2", 2, "v2", Running, Running, 0);
        let progress = Progress::of(&view, &[one, two], Timestamp(0), Timestamp(0));
        assert!(progress.converged);
        assert_eq!(progress.lines()[0], "overall progress: 2 out of 2 tasks");
    }

    #[test]
    fn a_task_scaled_away_but_still_running_is_not_converged() {
        use TaskState::{Remove, Running, Shutdown};
        let view = web(1, 1, "v1");
        let one = task("t1", 1, "v1", Running, Running, 0);
        let two = task("t2", 2, "v1", Remove, Running, 0);
        assert!(!Progress::of(&view, &[one.clone(), two], Timestamp(0), Timestamp(0)).converged);
        let gone = task("t2", 2, "v1", Remove, Shutdown, 0);
        assert!(Progress::of(&view, &[one, gone], Timestamp(0), Timestamp(0)).converged);
    }

    #[test]
    fn missing_slots_show_as_new_and_repeated_failures_say_why() {
        let view = web(0, 2, "v1");
        let mut tasks = Vec::new();
        for (id, at) in [("f1", 10), ("f2", 20), ("f3", 30)] {
            let mut failed = task(id, 1, "v1", TaskState::Shutdown, TaskState::Rejected, at);
            failed.task.status.error = Some("image nope not found".to_string());
            tasks.push(failed);
        }
        let progress = Progress::of(&view, &tasks, Timestamp(15), Timestamp(0));
        assert_eq!(progress.slots.len(), 2);
        assert_eq!(progress.slots[0].label, "1/2");
        assert_eq!(progress.slots[0].state, None);
        assert_eq!(progress.stuck(), None, "two failures since the start");
        let progress = Progress::of(&view, &tasks, Timestamp(0), Timestamp(0));
        let stuck = progress.stuck().expect("three failures");
        assert!(stuck.contains("slot 1 failed 3 times"), "{stuck}");
        assert!(stuck.contains("image nope not found"), "{stuck}");
    }

    #[test]
    fn bars_fill_as_tasks_move_toward_running() {
        assert_eq!(bar(None), format!("[{}]", " ".repeat(BAR)));
        assert_eq!(
            bar(Some(TaskState::Running)),
            format!("[{}>]", "=".repeat(BAR - 1))
        );
        let halfway = bar(Some(TaskState::Preparing));
        assert!(halfway.contains('>') && halfway.contains(' '), "{halfway}");
    }
}
