//! Module hosting: finding modules on disk, running them, and routing calls.

mod host;
mod instance;
mod locate;
mod manifest;
mod spawner;
mod stdio;

pub use host::ModuleHost;
