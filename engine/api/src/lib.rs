//! essaim's wire protocol: the gRPC services, the control API's request and reply types, how
//! errors travel, and how channels and servers are set up. Everything that crosses a socket is
//! defined or converted here, so wire types never leak into the model.
//!
//! # Layout
//! - [`pb`]: code generated from `proto/essaim.proto`.
//! - [`control`]: the control API, typed: what the shell asks and what it gets back.
//! - [`error`]: [`ControlError`], and its conversion to and from `tonic::Status` (the only one).
//! - [`transport`]: channels and servers for the cluster port and the local socket.
//! - [`tls`]: mutual TLS on the cluster port: credentials, certificate identities, CA pinning.
//! - [`paths`]: where a node keeps its data and socket by default.

pub mod control;
pub mod error;
pub mod paths;
pub mod tls;
pub mod transport;

/// Code generated from `proto/essaim.proto`.
#[allow(clippy::all, clippy::unwrap_used)]
pub mod pb {
    tonic::include_proto!("essaim.v1");
}

pub use control::{ControlReply, ControlRequest};
pub use error::ControlError;
