//! The session and the server's control calls: `configure`, `connect`,
//! `detach`, `session`, `status`, `modules`, `load`, `unload`,
//! `shutdown`, `publish`.

use std::{rc::Rc, time::Duration};

use mlua::{IntoLuaMulti, Lua, Table, Value};
use rmpv::Value as Mp;

use super::{encode_boxed, id_or_error, Ctx, Reach};
use crate::{
    conn::{self, error_info, Settings},
    replies,
};

/// `configure`, `connect`, `detach`, `session`: this Neovim's session.
pub(super) fn add_session(lua: &Lua, m: &Table, ctx: &Rc<Ctx>) -> mlua::Result<()> {
    let c = ctx.clone();
    m.set(
        "configure",
        lua.create_function(move |lua, t: Table| match settings_from(&t) {
            Ok(s) => {
                c.conn.configure(s);
                (true, Value::Nil).into_lua_multi(lua)
            }
            Err(e) => (Value::Nil, e).into_lua_multi(lua),
        })?,
    )?;

    let c = ctx.clone();
    m.set(
        "connect",
        lua.create_function(move |lua, ()| {
            c.with_client(lua, |client| async move { Ok(conn::session_info(&client)) })
        })?,
    )?;

    let c = ctx.clone();
    m.set(
        "detach",
        lua.create_function(move |lua, ()| {
            let conn = c.conn.clone();
            let spawned = c.requests.spawn(|reporter| async move {
                let was = conn.detach().await;
                reporter.finish(Ok(Mp::from(was)));
            });
            id_or_error(lua, spawned)
        })?,
    )?;

    let c = ctx.clone();
    m.set(
        "session",
        lua.create_function(move |_, ()| match c.conn.current() {
            Some(client) => c
                .codec
                .decode(&conn::session_info(&client), 0)
                .map_err(|e| mlua::Error::runtime(e.to_string())),
            None => Ok(Value::Nil),
        })?,
    )?;
    Ok(())
}

/// `status`, `modules`, `load`, `unload`, `shutdown`, `publish`: the
/// server's control calls.
pub(super) fn add(lua: &Lua, m: &Table, ctx: &Rc<Ctx>) -> mlua::Result<()> {
    let c = ctx.clone();
    m.set(
        "status",
        lua.create_function(move |lua, spawn: Option<bool>| {
            let reach = if spawn.unwrap_or(true) {
                Reach::Attach
            } else {
                Reach::ExistingOrProbe
            };
            c.run_with(lua, reach, |client| async move {
                client
                    .status()
                    .await
                    .map(replies::status)
                    .map_err(error_info)
            })
        })?,
    )?;

    let c = ctx.clone();
    m.set(
        "modules",
        lua.create_function(move |lua, ()| {
            c.with_client(lua, |client| async move {
                client
                    .list_modules()
                    .await
                    .map(replies::list_modules)
                    .map_err(error_info)
            })
        })?,
    )?;

    let c = ctx.clone();
    m.set(
        "load",
        lua.create_function(move |lua, (name, path): (String, Option<String>)| {
            c.with_client(lua, |client| async move {
                client
                    .load(&name, path.as_deref().map(std::path::Path::new))
                    .await
                    .map(replies::load)
                    .map_err(error_info)
            })
        })?,
    )?;

    let c = ctx.clone();
    m.set(
        "unload",
        lua.create_function(move |lua, name: String| {
            c.with_client(lua, |client| async move {
                client.unload(&name).await.map(Mp::from).map_err(error_info)
            })
        })?,
    )?;

    let c = ctx.clone();
    m.set(
        "shutdown",
        lua.create_function(move |lua, reason: Option<String>| {
            let reason = reason.unwrap_or_else(|| "asked by Neovim".to_owned());
            // Never start a server just to stop it.
            c.run_with(lua, Reach::ExistingOrProbe, |client| async move {
                client
                    .shutdown(&reason)
                    .await
                    .map(|()| Mp::Nil)
                    .map_err(error_info)
            })
        })?,
    )?;

    let c = ctx.clone();
    m.set(
        "publish",
        lua.create_function(
            move |lua, (module, topic, boxed): (String, String, Table)| {
                let bytes = match encode_boxed(lua, &c.codec, &boxed, "payload")? {
                    Ok(bytes) => bytes,
                    Err(refusal) => return Ok(refusal),
                };
                c.with_client(lua, |client| async move {
                    client
                        .publish(&module, &topic, bytes)
                        .await
                        .map(Mp::from)
                        .map_err(error_info)
                })
            },
        )?,
    )?;
    Ok(())
}

/// Reads `configure`'s table; the Lua side has validated it already, so
/// errors here name the field for the rare direct caller.
fn settings_from(t: &Table) -> Result<Settings, String> {
    let field = |name: &str| -> Result<Option<String>, String> {
        t.get::<Option<String>>(name)
            .map_err(|e| format!("{name}: {e}"))
            .map(|v| v.filter(|s| !s.is_empty()))
    };
    let server_args = t
        .get::<Option<Vec<String>>>("server_args")
        .map_err(|e| format!("server_args: {e}"))?
        .unwrap_or_default();
    let spawn_timeout = t
        .get::<Option<f64>>("spawn_timeout_ms")
        .map_err(|e| format!("spawn_timeout_ms: {e}"))?
        .filter(|ms| ms.is_finite() && *ms > 0.0)
        .map(|ms| Duration::from_secs_f64(ms / 1000.0));
    Ok(Settings {
        socket: field("socket")?,
        server: field("server")?,
        server_args,
        spawn_timeout,
        client_name: field("client_name")?,
    })
}
