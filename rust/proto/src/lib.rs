//! Wire types shared by every norgopolis part.
//!
//! `communication` and `module_communication` are the public norgopolis
//! protocol, unchanged; `v1` holds our extensions. [`msgpack`] converts
//! between serde values and the MessagePack bytes every call carries;
//! [`lean_frame`] is the framing of the opt-in lean module transport.

pub mod lean_callee;
pub mod lean_caller;
pub mod lean_frame;
pub mod msgpack;

/// Front end <-> router protocol of the public norgopolis.
pub mod communication {
    tonic::include_proto!("communication");
}

/// Router <-> module protocol of the public norgopolis (over stdio).
pub mod module_communication {
    tonic::include_proto!("module_communication");
}

/// Norgopolis extensions: sessions, control calls, events.
pub mod v1 {
    tonic::include_proto!("norgopolis.v1");
}

/// Version of the `norgopolis.v1` protocol this build speaks. Bumped on any
/// incompatible change; Attach refuses a mismatch with a clear error.
pub const PROTOCOL_VERSION: u32 = 1;
