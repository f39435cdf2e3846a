//! The value codec as Lua sees it: `encode`, `decode`, `roundtrip`.

use std::rc::Rc;

use mlua::{IntoLuaMulti, Lua, Table, Value};

use super::Ctx;
use crate::convert::{self, exact_get};

/// `encode`, `decode`, `roundtrip`.
pub(super) fn add(lua: &Lua, m: &Table, ctx: &Rc<Ctx>) -> mlua::Result<()> {
    let c = ctx.clone();
    m.set(
        "encode",
        lua.create_function(move |lua, boxed: Table| {
            let v = exact_get(&boxed, Value::Integer(1))?;
            match c.codec.encode_bytes(&v, "value") {
                Ok(bytes) => (lua.create_string(bytes)?, Value::Nil).into_lua_multi(lua),
                Err(e) => (Value::Nil, e.to_string()).into_lua_multi(lua),
            }
        })?,
    )?;

    let c = ctx.clone();
    m.set(
        "decode",
        lua.create_function(move |lua, bytes: mlua::String| {
            let decoded =
                convert::decode_mp_strict(&bytes.as_bytes()).and_then(|mp| c.codec.decode(&mp, 0));
            match decoded {
                Ok(v) => (v, Value::Nil).into_lua_multi(lua),
                Err(e) => (Value::Nil, e.to_string()).into_lua_multi(lua),
            }
        })?,
    )?;

    let c = ctx.clone();
    m.set(
        "roundtrip",
        lua.create_function(move |lua, boxed: Table| {
            let v = exact_get(&boxed, Value::Integer(1))?;
            let result = c
                .codec
                .encode_bytes(&v, "value")
                .map_err(|e| e.to_string())
                .and_then(|bytes| c.codec.decode_bytes(&bytes).map_err(|e| e.to_string()));
            match result {
                Ok(v) => (v, Value::Nil).into_lua_multi(lua),
                Err(e) => (Value::Nil, e).into_lua_multi(lua),
            }
        })?,
    )?;
    Ok(())
}
