//! Calls to modules and the request plumbing: `set_sink`, `invoke`,
//! `cancel`, `in_flight`, `close`, and the bridge's self-tests.

use std::{rc::Rc, time::Duration};

use futures::StreamExt;
use mlua::{Function, Lua, Table};
use norgopolis_client::{Client, RawCallStream};
use rmpv::Value as Mp;

use super::{encode_boxed, id_or_error, Ctx};
use crate::{
    bridge::{self, ErrorInfo},
    conn::error_info,
    convert,
    requests::Reporter,
};

/// `set_sink`, `invoke`, `cancel`, `in_flight`, `close`.
pub(super) fn add(lua: &Lua, m: &Table, ctx: &Rc<Ctx>) -> mlua::Result<()> {
    m.set(
        "set_sink",
        lua.create_function(|lua, sink: Function| bridge::set_sink(lua, sink))?,
    )?;

    let c = ctx.clone();
    m.set(
        "invoke",
        lua.create_function(
            move |lua, (module, function, boxed): (String, String, Table)| {
                let bytes = match encode_boxed(lua, &c.codec, &boxed, "args")? {
                    Ok(bytes) => bytes,
                    Err(refusal) => return Ok(refusal),
                };
                // Attached and lean: the call leaves from this thread now,
                // before the runtime's thread is woken to take its results.
                if let Some(client) = c.conn.current().filter(Client::is_lean) {
                    let stream = client.start_raw(&module, &function, bytes);
                    let spawned = c.requests.spawn(|reporter| async move {
                        let result = forward_items(stream, &module, &function, &reporter).await;
                        reporter.finish(result.map(|()| Mp::Nil));
                    });
                    return id_or_error(lua, spawned);
                }
                let conn = c.conn.clone();
                let spawned = c.requests.spawn(|reporter| async move {
                    let result = match conn.client().await {
                        Ok(client) => {
                            stream_call(&client, &module, &function, bytes, &reporter).await
                        }
                        Err(e) => Err(e),
                    };
                    reporter.finish(result.map(|()| Mp::Nil));
                });
                id_or_error(lua, spawned)
            },
        )?,
    )?;

    let c = ctx.clone();
    m.set(
        "cancel",
        lua.create_function(move |_, id: u64| Ok(c.requests.cancel(id)))?,
    )?;

    let c = ctx.clone();
    m.set(
        "in_flight",
        lua.create_function(move |_, ()| Ok(c.requests.in_flight()))?,
    )?;

    let c = ctx.clone();
    m.set(
        "close",
        lua.create_function(move |_, ()| {
            // The session ends with the connection: dropping the client
            // closes it without making Neovim wait for the server.
            drop(c.conn.take_now());
            c.requests.close();
            Ok(())
        })?,
    )?;
    Ok(())
}

/// `_ticker` and `_panic`: self-tests of the bridge and of panic handling.
pub(super) fn add_self_tests(lua: &Lua, m: &Table, ctx: &Rc<Ctx>) -> mlua::Result<()> {
    // Self-test of the bridge, independent of any server: streams 0..n-1,
    // one every `interval_ms`, then finishes with `n`.
    let c = ctx.clone();
    m.set(
        "_ticker",
        lua.create_function(move |lua, (n, interval_ms): (u64, u64)| {
            let spawned = c.requests.spawn(|reporter| async move {
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

    // Proves that a Rust panic surfaces as a Lua error (or, in a task, as
    // the request's error) and never reaches Neovim.
    let c = ctx.clone();
    m.set(
        "_panic",
        lua.create_function(move |lua, (msg, in_task): (String, Option<bool>)| {
            if !in_task.unwrap_or(false) {
                panic!("{msg}");
            }
            let spawned = c.requests.spawn(|reporter| async move {
                let _reporter = reporter;
                panic!("{msg}");
            });
            id_or_error(lua, spawned)
        })?,
    )?;

    Ok(())
}

/// Streams one call's items to Lua as they arrive. Dropping the stream
/// (when the task is aborted) cancels the call at the server.
async fn stream_call(
    client: &Client,
    module: &str,
    function: &str,
    args: Vec<u8>,
    reporter: &Reporter,
) -> Result<(), ErrorInfo> {
    let stream = client
        .invoke_raw(module, function, args)
        .await
        .map_err(error_info)?;
    forward_items(stream, module, function, reporter).await
}

/// Hands a call's items to Lua as they arrive, checked for what Lua can
/// hold; the call's error ends it.
async fn forward_items(
    mut stream: RawCallStream,
    module: &str,
    function: &str,
    reporter: &Reporter,
) -> Result<(), ErrorInfo> {
    while let Some(item) = stream.next().await {
        let bytes = item.map_err(error_info)?;
        let value = convert::decode_checked(&bytes, 0).map_err(|e| {
            ErrorInfo::new(
                "Internal",
                format!("{module}.{function} returned a value Lua cannot hold: {e}"),
            )
        })?;
        reporter.value(value);
    }
    Ok(())
}
