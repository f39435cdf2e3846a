//! What clients call once connected: the router that takes a call to its
//! module, its two front doors (gRPC `communication.Forwarder` and the lean
//! transport), and the `norgopolis.v1.Control` service.

pub mod control;
pub mod grpc_calls;
pub mod lean_calls;
pub mod memory;
pub mod router;
