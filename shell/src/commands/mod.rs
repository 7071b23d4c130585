//! The commands, one module per noun, and what they share: going on past failures.
//!
//! # Layout
//! - [`swarm`]: `swarm init`, `join`, `join-token`, `leave`, `inspect`, `update`, and
//!   `swarm ca issue-client`.
//! - [`node`]: `node ls`, `inspect`, `update`, `promote`, `demote`, `rm`, `ps`.
//! - [`service`]: `service create`, `ls`, `ps`, `inspect`, `scale`, `rm`.
//! - [`info`]: `info`, the node's view of itself.

pub mod info;
pub mod node;
pub mod service;
pub mod swarm;

use crate::render::Output;
use crate::{Exit, Reported};

/// The failures of a command that acts on several NODE arguments: each is reported as it
/// happens and the command goes on with the next one, as docker does.
#[derive(Debug, Default)]
pub struct Failures {
    exits: Vec<Exit>,
}

impl Failures {
    /// Prints `error` now and remembers that the command failed.
    pub fn report(&mut self, output: &mut Output<'_>, error: anyhow::Error) {
        output.error(&error);
        self.exits.push(Exit::of(&error));
    }

    /// Ok when nothing failed; otherwise a [`Reported`] error (already printed) with the exit
    /// code the failures share, or 1 when they differ.
    ///
    /// # Errors
    /// At least one argument failed.
    pub fn finish(self) -> anyhow::Result<()> {
        let Some(&first) = self.exits.first() else {
            return Ok(());
        };
        let exit = if self.exits.iter().all(|&exit| exit == first) {
            first
        } else {
            Exit::Failed
        };
        Err(Reported(exit).into())
    }
}
