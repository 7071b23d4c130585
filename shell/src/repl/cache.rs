//! What the prompt and TAB completion know of the cluster: live names and health, kept fresh
//! by a background thread with its own connection. It refreshes when the manager reports a
//! change (a long poll), so a TAB or a prompt never waits on the network.

use std::path::PathBuf;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::Duration;

use essaim_api::control::{NodeView, Reachability, TaskView};
use essaim_api::transport::Host;
use essaim_core::model::Role;

use crate::client::Client;

/// How long one long poll waits before the names are read again anyway.
const POLL: Duration = Duration::from_secs(10);
/// Changes closer together than this are read together: a busy cluster commits many times a
/// second, and each refresh reads every node, service and task.
const SETTLE: Duration = Duration::from_millis(500);
/// Pause after a failure before trying again.
const RETRY: Duration = Duration::from_secs(1);
/// Tasks whose IDs are offered for completion: the newest ones of a large cluster.
const MAX_TASKS: usize = 2_000;

/// The cluster's health as the prompt shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Health {
    /// Not known yet.
    #[default]
    Unknown,
    /// The daemon or cluster cannot be reached (the reason).
    Unreachable(String),
    /// A leader, and how many managers are reachable.
    Up(Managers),
}

/// The managers as `node ls` shows them: who leads, how many answer, how many there are.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Managers {
    pub leader: Option<String>,
    pub reachable: usize,
    pub total: usize,
}

impl Managers {
    pub fn of(nodes: &[NodeView]) -> Managers {
        let managers: Vec<&NodeView> = nodes
            .iter()
            .filter(|view| view.node.spec.role == Role::Manager)
            .collect();
        let status = |view: &&NodeView| view.manager_status.clone();
        Managers {
            leader: managers
                .iter()
                .find(|view| status(view).is_some_and(|s| s.leader))
                .map(|view| view.node.description.hostname.clone()),
            reachable: managers
                .iter()
                .filter(|view| {
                    status(view).is_some_and(|s| s.reachability == Reachability::Reachable)
                })
                .count(),
            total: managers.len(),
        }
    }
}

/// What the shell knows of the cluster.
#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub services: Vec<String>,
    pub nodes: Vec<String>,
    pub tasks: Vec<String>,
    pub health: Health,
}

/// The snapshot, shared with the thread that refreshes it.
#[derive(Clone)]
pub struct Cache {
    snapshot: Arc<Mutex<Snapshot>>,
    /// Set to stop refreshing: the thread then hangs up, so that a daemon stopping (the
    /// embedded one) does not wait for its long poll.
    stop: Arc<tokio::sync::watch::Sender<bool>>,
    thread: Arc<Mutex<Option<std::thread::JoinHandle<()>>>>,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache {
            snapshot: Arc::default(),
            stop: Arc::new(tokio::sync::watch::channel(false).0),
            thread: Arc::default(),
        }
    }
}

impl Cache {
    /// Starts refreshing in the background from `host`.
    pub fn start(host: Host, tls_dir: Option<PathBuf>) -> Cache {
        let cache = Cache::default();
        let shared = cache.clone();
        let thread = std::thread::Builder::new()
            .name("name-cache".to_string())
            .spawn(move || {
                let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                else {
                    return;
                };
                let mut stopped = shared.stop.subscribe();
                runtime.block_on(async {
                    tokio::select! {
                        () = shared.refresh_forever(host, tls_dir) => {}
                        _ = stopped.wait_for(|stop| *stop) => {}
                    }
                });
            })
            .ok();
        *cache.thread.lock() = thread;
        cache
    }

    /// Stops refreshing and waits until the connection is closed.
    pub fn stop(&self) {
        self.stop.send_replace(true);
        let thread = self.thread.lock().take();
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }

    fn lock(&self) -> parking_lot::MutexGuard<'_, Snapshot> {
        self.snapshot.lock()
    }

    async fn refresh_forever(&self, host: Host, tls_dir: Option<PathBuf>) {
        loop {
            let error = match Client::connect(&host, tls_dir.as_deref()).await {
                Ok(mut client) => self.refresh_while_connected(&mut client).await,
                Err(error) => error,
            };
            self.lock().health = Health::Unreachable(crate::render::error_line(&error));
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Refreshes on every change until a request fails; returns why.
    async fn refresh_while_connected(&self, client: &mut Client) -> anyhow::Error {
        let mut index = 0;
        loop {
            if let Err(error) = self.refresh(client).await {
                return error;
            }
            match client.wait_change(index, POLL).await {
                Ok(next) => index = next,
                Err(error) => return error.into(),
            }
            tokio::time::sleep(SETTLE).await;
        }
    }

    async fn refresh(&self, client: &mut Client) -> anyhow::Result<()> {
        let nodes = client.node_list().await?;
        let services = client.service_list().await?;
        let tasks = client.task_list(None, None).await?;
        let mut snapshot = self.lock();
        snapshot.health = Health::Up(Managers::of(&nodes));
        snapshot.nodes = nodes
            .iter()
            .map(|view| view.node.description.hostname.clone())
            .collect();
        snapshot.services = services
            .iter()
            .map(|view| view.service.spec.name.clone())
            .collect();
        snapshot.tasks = task_ids(tasks);
        Ok(())
    }
}

/// The IDs of the newest live tasks, for completion.
fn task_ids(mut tasks: Vec<TaskView>) -> Vec<String> {
    tasks.sort_by_key(|view| std::cmp::Reverse(view.task.created_at));
    tasks
        .into_iter()
        .filter(|view| !view.task.status.state.is_terminal())
        .take(MAX_TASKS)
        .map(|view| view.task.id)
        .collect()
}
