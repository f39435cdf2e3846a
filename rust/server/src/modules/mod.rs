//! Module hosting: finding modules on disk, running them, and routing calls.

mod autostart;
mod conn;
mod deps;
pub mod external;
mod failures;
pub mod guardian;
mod host;
mod idle;
mod instance;
mod lean;
mod restart;
mod spawner;
mod stderr;
mod stdio;

pub use autostart::spawn_autostart;
pub use conn::{ModuleStream, Ping};
pub use failures::FailureLog;
pub use host::ModuleHost;
pub use idle::Busy;
pub use instance::{InFlight, Instance, InstanceOptions};
pub use restart::RestartPolicy;
