//! Module processes: spawning them from a thread of their own, draining
//! their stderr into the log, and the guardian that kills their process
//! groups when the server is gone.

pub mod guardian;
pub mod spawner;
pub mod stderr;
