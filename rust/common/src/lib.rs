//! What the norgopolis server and its clients must agree on without talking:
//! where things live ([`places`]), which module names are acceptable
//! ([`names`]), who is at the other end of the socket ([`peer`]), which
//! version is speaking ([`version`]) and how durations are written
//! ([`duration`]).

pub mod duration;
pub mod names;
pub mod peer;
pub mod places;
pub mod version;

pub use names::{validate_module_name, NameError};
pub use places::{Places, PlacesError};
pub use version::{version, VERSION};
