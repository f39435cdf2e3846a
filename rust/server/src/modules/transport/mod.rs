//! Talking to a module: its stdio as one byte stream, and the two
//! transports over it (gRPC over HTTP/2, or lean frames).

pub mod http2;
pub mod lean_pipe;
pub mod stdio;
