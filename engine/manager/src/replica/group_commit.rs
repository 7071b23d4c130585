//! Group commit: the small writes of concurrent callers share one Raft entry, so one append
//! and one fsync on the leader, and one on each follower, carry them all. openraft appends
//! each client write as an entry of its own, with its own fsync, which bounds the writes per
//! second by the disk; here a write waits at most for the entry before it to commit.
//!
//! ```text
//!  write(A) ─┐                       ┌─> A's results
//!  write(B) ─┼─> queue ─> one entry ─┼─> B's results
//!  write(C) ─┘   (drained while the  └─> C's results
//!                 previous commits)
//! ```
//!
//! An entry's commands are applied each on its own and get their own results already, so
//! several callers' commands in one entry are applied as if each had its own: a command that
//! is refused refuses nothing else.

use essaim_core::error::StateError;
use essaim_core::{Command, Request};
use openraft::error::{ClientWriteError, RaftError};
use tokio::sync::{mpsc, oneshot};

use super::raft::Raft;
use super::{COMMANDS_PER_ENTRY, QUORUM_TIMEOUT};
use crate::clock::Clock;

/// How a write ended, for the caller to put in its own words.
#[derive(Clone)]
pub enum Outcome {
    /// The results of the caller's commands, in order.
    Written(Vec<Result<u64, StateError>>),
    /// Not committed within [`QUORUM_TIMEOUT`] (it may still be).
    TimedOut,
    /// This node no longer leads.
    NotLeader,
    Failed(String),
}

struct Pending {
    commands: Vec<Command>,
    reply: oneshot::Sender<Outcome>,
}

/// The queue of writes waiting for the next entry.
pub struct GroupCommit {
    queue: mpsc::UnboundedSender<Pending>,
}

impl GroupCommit {
    /// Starts the writer; it ends when the queue is dropped.
    pub fn start(raft: Raft, clock: Clock) -> GroupCommit {
        let (queue, pending) = mpsc::unbounded_channel();
        tokio::spawn(run(raft, clock, pending));
        GroupCommit { queue }
    }

    /// Commits `commands` in the next entry, with whatever else is waiting.
    pub async fn write(&self, commands: Vec<Command>) -> Outcome {
        let (reply, outcome) = oneshot::channel();
        if self.queue.send(Pending { commands, reply }).is_err() {
            return Outcome::Failed("the replica is stopping".into());
        }
        outcome
            .await
            .unwrap_or_else(|_| Outcome::Failed("the replica is stopping".into()))
    }
}

async fn run(raft: Raft, clock: Clock, mut pending: mpsc::UnboundedReceiver<Pending>) {
    while let Some(first) = pending.recv().await {
        let mut count = first.commands.len();
        let mut batch = vec![first];
        while count < COMMANDS_PER_ENTRY {
            match pending.try_recv() {
                Ok(next) => {
                    count += next.commands.len();
                    batch.push(next);
                }
                Err(_) => break,
            }
        }
        let sizes: Vec<usize> = batch.iter().map(|p| p.commands.len()).collect();
        let (commands, replies): (Vec<Vec<Command>>, Vec<oneshot::Sender<Outcome>>) =
            batch.into_iter().map(|p| (p.commands, p.reply)).unzip();
        let commands = commands.into_iter().flatten().collect();
        match commit(&raft, &clock, commands).await {
            Outcome::Written(results) => {
                let mut results = results.into_iter();
                for (reply, size) in replies.into_iter().zip(sizes) {
                    let _ = reply.send(Outcome::Written(results.by_ref().take(size).collect()));
                }
            }
            failed => {
                for reply in replies {
                    let _ = reply.send(failed.clone());
                }
            }
        }
    }
}

/// Commits `commands` as one entry, now.
pub async fn commit(raft: &Raft, clock: &Clock, commands: Vec<Command>) -> Outcome {
    let request = Request::new(clock.now(), commands);
    match tokio::time::timeout(QUORUM_TIMEOUT, raft.client_write(request)).await {
        Err(_) => Outcome::TimedOut,
        Ok(Ok(reply)) => Outcome::Written(reply.data.results),
        Ok(Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))) => Outcome::NotLeader,
        Ok(Err(e)) => Outcome::Failed(e.to_string()),
    }
}
