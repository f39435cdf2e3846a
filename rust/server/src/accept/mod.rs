//! Accepting client connections: the Unix socket and the optional TCP
//! listener, which connections each keeps (admission and the descriptor
//! budget), and serving one connection (gRPC over HTTP/2, or lean).

pub mod admission;
pub mod client_conn;
pub mod connection;
pub mod fds;
pub mod tcp_listener;
pub mod unix_listener;
