//! Module processes: spawning them from a thread of their own, draining
//! their stderr into the log, supervising each until it ends, and the
//! guardian that kills their process groups when the server is gone.

pub mod guardian;
pub mod spawner;
pub mod stderr;
pub mod supervisor;
