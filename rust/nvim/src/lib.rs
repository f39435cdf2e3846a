//! `norgopolis.native`: the native half of the Neovim plugin.
//!
//! Loaded by `require("norgopolis.native")` (the library is copied to
//! `lua/norgopolis/native.so`). mlua runs in module mode on Neovim's own
//! LuaJIT; I/O runs on a tokio runtime in background threads and results
//! come back to the main loop through a libuv async handle ([`bridge`]).
//! The Lua-facing API is small and callback-free: requests return ids and
//! their outcomes arrive as batches at one Lua sink function, which
//! `lua/norgopolis/init.lua` installs and turns into user callbacks.

mod api;
mod bridge;
mod catalog;
mod conn;
mod convert;
mod panics;
mod provide;
mod replies;
mod requests;

use std::ffi::c_int;

use nvim_oxi::lua::{ffi, Pushable};

/// Registry key under which the module table waits to be returned.
const MODULE_KEY: &std::ffi::CStr = c"norgopolis.native";

/// Pushes the module table stored in the Lua registry: the entry point must
/// return a `Pushable`, while the table is built with mlua.
struct Exported;

impl Pushable for Exported {
    unsafe fn push(self, lstate: *mut ffi::State) -> Result<c_int, nvim_oxi::lua::Error> {
        ffi::lua_getfield(lstate, ffi::LUA_REGISTRYINDEX, MODULE_KEY.as_ptr());
        Ok(1)
    }
}

#[nvim_oxi::plugin]
fn norgopolis_native() -> Result<Exported, String> {
    panics::install_hook();
    // Neither a panic nor an error may unwind into Neovim's C frames.
    match std::panic::catch_unwind(|| {
        let lua = nvim_oxi::mlua::lua();
        let result = api::build(&lua).and_then(|table| {
            lua.set_named_registry_value(MODULE_KEY.to_str().unwrap_or_default(), table)
        });
        // Dropping the first `Lua` handle runs a full GC cycle; clones kept by
        // the module do not, so this one is never dropped.
        std::mem::forget(lua);
        result
    }) {
        Ok(Ok(())) => Ok(Exported),
        Ok(Err(e)) => Err(format!("norgopolis.native failed to load: {e}")),
        Err(_) => Err("norgopolis.native panicked while loading (a bug; please report it)".into()),
    }
}
