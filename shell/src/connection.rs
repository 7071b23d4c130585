//! The shell's connection to the cluster, shared by the REPL's commands and by Rhai: a client
//! and the runtime that drives it. Rhai runs synchronously, so each call from a script blocks
//! on the runtime here, bounded by the script's deadline and stopped by Ctrl-C.

use std::cell::{Cell, RefCell};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::client::Client;
use crate::{Interrupted, TimedOut};

/// How long a call interrupted by Ctrl-C may take to give its own answer.
const INTERRUPT_GRACE: Duration = Duration::from_millis(100);

pub struct Connection {
    runtime: tokio::runtime::Runtime,
    client: RefCell<Client>,
    /// When a script must stop (`essaim run --timeout`).
    deadline: Cell<Option<(Instant, Duration)>>,
    /// What the running script changed so far, to report if it fails halfway.
    changes: RefCell<Vec<String>>,
    /// The last call that failed, in its words, and the exit code its error means.
    last_error: RefCell<Option<(String, i32)>>,
    /// Set (from another thread) when the script's `--lock` lease is lost: the script must
    /// stop, for another run may hold the lock now.
    lock_lost: Arc<tokio::sync::watch::Sender<Option<String>>>,
}

/// The lease of `--lock` was lost; the message says why.
#[derive(Debug)]
pub struct LockLost(pub String);

impl std::fmt::Display for LockLost {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LockLost {}

impl Connection {
    /// A connection over `client`, which must have been connected on `runtime`. Make the
    /// runtime with [`Connection::runtime`].
    pub fn new(runtime: tokio::runtime::Runtime, client: Client) -> Connection {
        Connection {
            runtime,
            client: RefCell::new(client),
            deadline: Cell::new(None),
            changes: RefCell::new(Vec::new()),
            last_error: RefCell::new(None),
            lock_lost: Arc::new(tokio::sync::watch::channel(None).0),
        }
    }

    /// The runtime a connection needs: one worker thread keeps the connection alive (it
    /// answers the server's keep-alive pings) while the shell waits for a line or a script
    /// computes; calls themselves run on the caller's thread.
    ///
    /// # Errors
    /// The runtime cannot start.
    pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("essaim-connection")
            .enable_all()
            .build()
    }

    /// Runs `call` with the client, until it ends, Ctrl-C, or the deadline.
    ///
    /// # Errors
    /// What `call` failed with; [`Interrupted`] on Ctrl-C; [`TimedOut`] past the deadline.
    pub fn block_on<T>(
        &self,
        call: impl AsyncFnOnce(&mut Client) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let Ok(mut client) = self.client.try_borrow_mut() else {
            anyhow::bail!("the connection is busy (a call from within a call)");
        };
        let deadline = self.deadline.get();
        let mut lost = self.lock_lost.subscribe();
        let result = self.runtime.block_on(async {
            let past_deadline = async {
                match deadline {
                    Some((at, _)) => tokio::time::sleep_until(at.into()).await,
                    None => std::future::pending().await,
                }
            };
            let mut call = std::pin::pin!(call(&mut client));
            tokio::select! {
                biased;
                result = &mut call => result,
                _ = tokio::signal::ctrl_c() => {
                    // A call that listens for Ctrl-C itself (a wait that says what goes on in
                    // the cluster) heard it too, but not always in the same poll as this
                    // listener (seen about once in eight tries): a moment's grace lets its own
                    // answer, the better one, win.
                    match tokio::time::timeout(INTERRUPT_GRACE, &mut call).await {
                        Ok(result) => result,
                        Err(_) => Err(Interrupted("stopped".to_string()).into()),
                    }
                }
                () = past_deadline => Err(timed_out(deadline).into()),
                Ok(reason) = lost.wait_for(Option::is_some) => {
                    Err(LockLost(reason.clone().unwrap_or_default()).into())
                }
            }
        });
        if let Err(error) = &result {
            let exit = crate::Exit::of(error) as i32;
            *self.last_error.borrow_mut() = Some((crate::render::error_line(error), exit));
        }
        result
    }

    /// The exit code of the failed call whose words `message` carries: a script that dies of
    /// an unreachable cluster exits 3, as a command would.
    pub fn exit_of_last_error(&self, message: &str) -> Option<i32> {
        let last = self.last_error.borrow();
        let (words, exit) = last.as_ref()?;
        message.contains(words.as_str()).then_some(*exit)
    }

    /// Sets (or clears) the time by which the running script must end; `limit` is how long
    /// it was given, for the message.
    pub fn set_deadline(&self, limit: Option<Duration>) {
        self.deadline
            .set(limit.map(|limit| (Instant::now() + limit, limit)));
    }

    /// True once the deadline has passed.
    pub fn past_deadline(&self) -> Option<TimedOut> {
        let deadline = self.deadline.get()?;
        (Instant::now() >= deadline.0).then(|| timed_out(Some(deadline)))
    }

    /// What a lock keeper calls to stop the script: the lease is gone.
    pub fn lock_lost_signal(&self) -> Arc<tokio::sync::watch::Sender<Option<String>>> {
        Arc::clone(&self.lock_lost)
    }

    /// Why the lease was lost, once it was.
    pub fn lock_lost(&self) -> Option<String> {
        self.lock_lost.borrow().clone()
    }

    /// Notes a change the script made.
    pub fn record(&self, change: String) {
        self.changes.borrow_mut().push(change);
    }

    /// The changes noted since the last call.
    pub fn take_changes(&self) -> Vec<String> {
        std::mem::take(&mut self.changes.borrow_mut())
    }
}

fn timed_out(deadline: Option<(Instant, Duration)>) -> TimedOut {
    let limit = deadline.map_or(0, |(_, limit)| {
        u64::try_from(limit.as_millis()).unwrap_or(u64::MAX)
    });
    TimedOut(format!(
        "the script ran out of time (--timeout {})",
        essaim_core::time::format_duration_ms(limit)
    ))
}
