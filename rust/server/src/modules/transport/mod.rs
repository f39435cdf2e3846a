//! Talking to a module: its stdio as one byte stream, the two transports
//! over it (gRPC over HTTP/2, or lean frames), and the transport-neutral
//! connection and call stream the rest of the server holds.

pub mod conn_end;
pub mod http2;
pub mod lean_pipe;
pub mod module_conn;
pub mod stdio;
