//! What the server is told: the command line, the config file, each
//! module's configuration, and how they combine into the settings it runs
//! with.

pub mod file;
pub mod limits;
pub mod listen_addr;
pub mod module_config;
pub mod settings;
