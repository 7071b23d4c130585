//! Compose files as `stack deploy` reads them. So far: variable interpolation and `.env`
//! files, the part of reading a compose file that comes before its keys mean anything.
//!
//! # Layout
//! - `interpolation`: `${VAR}`, `${VAR:-default}`, `${VAR:?message}`... in one value, as Docker
//!   Compose substitutes them.
//! - `env_file`: the `.env` file beside the first compose file, and `env_file:` files.

// `stack deploy` is being built on these (issue 18); until it calls them only their tests do.
#![allow(dead_code)]

pub mod env_file;
pub mod interpolation;
