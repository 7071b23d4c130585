//! Who may do what, and the cryptography behind it.
//!
//! - [`authz`]: who may call what on the cluster port, by certificate and cluster state.
//! - [`ca`]: the cluster CA: certificates from requests, join tokens derived from the CA key.
//! - [`rotation`]: the leader's steps through a CA rotation.
//! - [`renewal`]: certificates kept fitting their node's role, lifetime and CA.
//! - [`tokens`]: join tokens.

pub mod authz;
pub mod ca;
pub mod renewal;
pub mod rotation;
pub mod tokens;
