//! The table `require("norgopolis.native")` returns.
//!
//! Functions never raise for expected failures: they return `nil, message`
//! (or an id and report later), so the Lua layer can raise clean errors or
//! call callbacks. Panics become Lua errors (mlua catches them).

use std::{rc::Rc, time::Duration};

use mlua::{Function, Lua, Table, Value};
use rmpv::Value as Mp;

use crate::{
    bridge,
    convert::{exact_get, Codec},
    requests::Requests,
};

/// Version of this library; the Lua side checks it matches its own.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Builds the module table (main thread, at load).
pub fn build(lua: &Lua) -> mlua::Result<Table> {
    let codec = Rc::new(Codec::new(lua)?);
    let outbox = bridge::install(lua, codec.clone())?;
    let requests = Rc::new(
        Requests::new(outbox)
            .map_err(|e| mlua::Error::runtime(format!("cannot start the I/O runtime: {e}")))?,
    );

    let m = lua.create_table()?;
    m.set("version", VERSION)?;

    let c = codec.clone();
    m.set(
        "encode",
        lua.create_function(move |lua, boxed: Table| {
            let v = exact_get(&boxed, Value::Integer(1))?;
            match c.encode_bytes(&v, "value") {
                Ok(bytes) => (lua.create_string(bytes)?, Value::Nil).into_lua_multi(lua),
                Err(e) => (Value::Nil, e.to_string()).into_lua_multi(lua),
            }
        })?,
    )?;

    let c = codec.clone();
    m.set(
        "decode",
        lua.create_function(move |lua, bytes: mlua::String| {
            match c.decode_bytes(&bytes.as_bytes()) {
                Ok(v) => (v, Value::Nil).into_lua_multi(lua),
                Err(e) => (Value::Nil, e.to_string()).into_lua_multi(lua),
            }
        })?,
    )?;

    let c = codec.clone();
    m.set(
        "roundtrip",
        lua.create_function(move |lua, boxed: Table| {
            let v = exact_get(&boxed, Value::Integer(1))?;
            let result = c
                .encode_bytes(&v, "value")
                .map_err(|e| e.to_string())
                .and_then(|bytes| c.decode_bytes(&bytes).map_err(|e| e.to_string()));
            match result {
                Ok(v) => (v, Value::Nil).into_lua_multi(lua),
                Err(e) => (Value::Nil, e).into_lua_multi(lua),
            }
        })?,
    )?;

    m.set(
        "set_sink",
        lua.create_function(|lua, sink: Function| bridge::set_sink(lua, sink))?,
    )?;

    let r = requests.clone();
    m.set(
        "cancel",
        lua.create_function(move |_, id: u64| Ok(r.cancel(id)))?,
    )?;

    let r = requests.clone();
    m.set(
        "in_flight",
        lua.create_function(move |_, ()| Ok(r.in_flight()))?,
    )?;

    // Self-test of the bridge, independent of any server: streams 0..n-1,
    // one every `interval_ms`, then finishes with `n`.
    let r = requests.clone();
    m.set(
        "_ticker",
        lua.create_function(move |lua, (n, interval_ms): (u64, u64)| {
            let spawned = r.spawn(|reporter| async move {
                for i in 0..n {
                    if interval_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(interval_ms)).await;
                    }
                    reporter.value(Mp::from(i));
                }
                reporter.finish(Ok(Mp::from(n)));
            });
            id_or_error(lua, spawned)
        })?,
    )?;

    let r = requests.clone();
    m.set(
        "close",
        lua.create_function(move |_, ()| {
            r.close();
            Ok(())
        })?,
    )?;

    Ok(m)
}

use mlua::IntoLuaMulti;

/// `id` or `nil, {code, message}`.
fn id_or_error(
    lua: &Lua,
    spawned: Result<u64, bridge::ErrorInfo>,
) -> mlua::Result<mlua::MultiValue> {
    match spawned {
        Ok(id) => (id, Value::Nil).into_lua_multi(lua),
        Err(e) => (Value::Nil, bridge::error_table(lua, &e)?).into_lua_multi(lua),
    }
}
