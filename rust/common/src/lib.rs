//! What the norgopolis server and its clients must agree on without talking:
//! where things live ([`places`]), which module names are acceptable
//! ([`names`]), who is at the other end of the socket ([`peer`]) and how
//! durations are written ([`duration`]).

pub mod duration;
pub mod names;
pub mod peer;
pub mod places;

pub use names::{validate_module_name, NameError};
pub use places::{Places, PlacesError};

/// Version of this norgopolis build, shown by `--version` and `Status`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
