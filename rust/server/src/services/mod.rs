//! What clients call once connected: the router that takes a call to its
//! module, its two front doors (gRPC `communication.Forwarder` and the lean
//! transport), the `norgopolis.v1.Control` service, and giving memory
//! back to the system after callers leave.

pub mod control;
pub mod grpc_calls;
pub mod lean_calls;
pub mod memory;
pub mod router;
