//! Module hosting: finding modules on disk (through
//! `norgopolis-catalog`), the table of running ones
//! (loading on first use, dependencies, autostart, restarts, idle unload),
//! each instance with its call slots, external modules that register over
//! the socket, and, below, their processes (`process`) and the transports
//! that reach them (`transport`). Routing a client's call to an instance
//! is `services::router`'s job.

mod autostart;
mod deps;
pub mod external;
mod failures;
mod host;
mod idle;
mod instance;
pub mod process;
mod restart;
pub mod transport;

pub use autostart::spawn_autostart;
pub use failures::FailureLog;
pub use host::ModuleHost;
pub use idle::Busy;
pub use instance::{InFlight, Instance, InstanceOptions};
pub use restart::RestartPolicy;
pub use transport::{conn_end::Ping, module_conn::ModuleStream};
