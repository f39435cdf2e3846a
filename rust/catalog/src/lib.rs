//! The module catalog: what every part of norgopolis must judge the same
//! way about modules on disk. The server loads modules with it, the
//! `norgopolis` command installs and lists them with it, and the Neovim
//! library answers Lua's questions with it, so none of them re-derives a
//! rule.
//!
//! - [`dirs`]: the modules-dirs rule (flags, env, `config.toml`, default);
//! - [`manifest`]: `module.toml`, and [`signature`] for its argument shapes;
//! - [`locate`]: one module by name, or every module in the dirs, and
//!   [`listing`] for the same as plain records;
//! - [`server_binary`]: which `norgopolis-server` a front end starts.

pub mod dirs;
pub mod listing;
pub mod locate;
pub mod manifest;
#[cfg(test)]
mod props;
pub mod server_binary;
pub mod signature;
