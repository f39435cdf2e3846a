//! What the router tells a module through its environment.
//!
//! The router sets these for every module it starts. [`crate::router`]
//! uses the socket to call other modules like any client does.

use std::path::PathBuf;

pub use norgopolis_common::places::{MODULE_ENV, SOCKET_ENV};

/// The name the router knows this module by (`NORGOPOLIS_MODULE`), or
/// `None` when not started by a router.
pub fn module_name() -> Option<String> {
    std::env::var(MODULE_ENV).ok().filter(|s| !s.is_empty())
}

/// The router's socket (`NORGOPOLIS_SOCKET`), or `None` when not started
/// by a router.
pub fn socket_path() -> Option<PathBuf> {
    std::env::var_os(SOCKET_ENV)
        .filter(|s| !s.is_empty())
        .map(PathBuf::from)
}
