//! The server's module-folder rules, compiled from the server's own source
//! files, so that `module install` and `module list` judge a module exactly
//! as the server will when it loads it.

#[allow(dead_code)]
#[path = "../../server/src/modules/manifest.rs"]
pub mod manifest;

#[allow(dead_code)]
#[path = "../../server/src/modules/locate.rs"]
pub mod locate;

#[allow(dead_code)]
#[path = "../../server/src/modules/signature.rs"]
pub mod signature;
