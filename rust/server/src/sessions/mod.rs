//! Front ends' sessions and the server's lifetime: the lease each front end
//! holds with `Control/Attach`, the task that decides when the server
//! exits, and the events pushed to sessions.

pub mod attach;
pub mod events;
pub mod lifetime;
