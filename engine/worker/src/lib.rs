//! The worker side of a node: every node, manager or worker, runs tasks.
//!
//! ```text
//!  leader's dispatcher ──assignments──> agent ──start/stop──> executor (process | sim | docker)
//!                      <──status reports──     <──exits───
//! ```
//!
//! [`agent`] keeps one session with the leader and one supervisor per task; [`executor`] is the
//! one trait every runtime implements; [`process`] and [`sim`] are two of them.

pub mod agent;
pub mod executor;
pub mod logs;
pub mod machine;
pub mod process;
pub mod sim;

pub use agent::{Worker, WorkerSetup};
pub use executor::{Executor, Runtime};
