//! The manager side of essaim: Raft storage and network, the control API, and node membership.
//!
//! # Layout
//! - [`raft`]: type configuration, durable log store (redb), state machine, gRPC network.
pub mod raft;
