//! Module hosting: finding modules on disk, running them, and routing calls.

mod autostart;
mod deps;
pub mod external;
mod failures;
mod host;
mod idle;
mod instance;
mod locate;
mod manifest;
pub mod process;
#[cfg(test)]
mod props;
mod restart;
mod signature;
pub mod transport;

pub use autostart::spawn_autostart;
pub use failures::FailureLog;
pub use host::ModuleHost;
pub use idle::Busy;
pub use instance::{InFlight, Instance, InstanceOptions};
pub use restart::RestartPolicy;
pub use transport::{conn_end::Ping, module_conn::ModuleStream};
