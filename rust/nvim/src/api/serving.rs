//! Serving a module from Lua: `provide` and `provide_reply`.

use std::{rc::Rc, sync::Arc};

use mlua::{IntoLuaMulti, Lua, Table, Value};

use super::{id_or_error, Ctx};
use crate::{
    convert::exact_get,
    provide::{self, Reply},
};

/// `provide`, `provide_reply`.
pub(super) fn add(lua: &Lua, m: &Table, ctx: &Rc<Ctx>) -> mlua::Result<()> {
    let c = ctx.clone();
    m.set(
        "provide",
        lua.create_function(move |lua, (name, functions): (String, Vec<String>)| {
            let conn = c.conn.clone();
            let providers = c.providers.clone();
            let calls = Arc::new(provide::Calls::default());
            let served = calls.clone();
            let own_id = Arc::new(std::sync::OnceLock::new());
            let ended = own_id.clone();
            let spawned = c.requests.spawn(|reporter| async move {
                // Attached first (starting a server if needed): this
                // Neovim's session keeps the server alive while it serves.
                let result = match conn.client().await {
                    Ok(client) => {
                        let options = norgopolis_client::ConnectOptions::new("nvim")
                            .spawn(false)
                            .socket(client.socket());
                        provide::serve(options, name, functions, served, &reporter).await
                    }
                    Err(e) => Err(e),
                };
                if let Some(id) = ended.get() {
                    providers.remove(*id);
                }
                reporter.finish(result);
            });
            if let Ok(id) = spawned {
                c.providers.add(id, calls);
                let _ = own_id.set(id);
            }
            id_or_error(lua, spawned)
        })?,
    )?;

    let c = ctx.clone();
    m.set(
        "provide_reply",
        lua.create_function(
            move |lua, (id, call, kind, arg, message): (u64, u32, String, Value, Option<String>)| {
                let reply = match kind.as_str() {
                    "item" => {
                        let Value::Table(boxed) = arg else {
                            return (Value::Nil, "an item is passed boxed: { value }")
                                .into_lua_multi(lua);
                        };
                        match c.codec.encode_bytes(&exact_get(&boxed, Value::Integer(1))?, "result")
                        {
                            Ok(bytes) => Reply::Item(bytes),
                            Err(e) => {
                                return (Value::Nil, format!("cannot send a result: {e}"))
                                    .into_lua_multi(lua)
                            }
                        }
                    }
                    "end" => Reply::End,
                    "error" => {
                        let name = match &arg {
                            Value::String(s) => s.to_string_lossy().to_string(),
                            _ => String::new(),
                        };
                        let message = message.unwrap_or_default();
                        match provide::code_from_name(&name) {
                            Some(code) => Reply::Error { code, message },
                            None => Reply::Error {
                                code: norgopolis_client::Code::Internal,
                                message: format!("{message} (error code {name:?} is not one)"),
                            },
                        }
                    }
                    other => {
                        return (Value::Nil, format!("unknown reply kind {other:?}"))
                            .into_lua_multi(lua)
                    }
                };
                (c.providers.reply(id, call, reply), Value::Nil).into_lua_multi(lua)
            },
        )?,
    )?;
    Ok(())
}
