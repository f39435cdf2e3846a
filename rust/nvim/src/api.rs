//! The table `require("norgopolis.native")` returns.
//!
//! This is an internal interface for `lua/norgopolis/`; users call
//! `require("norgopolis")`. Functions never raise for expected failures:
//! synchronous ones return `value, nil` or `nil, message`; asynchronous ones
//! return a request id (or `nil, {code, message}`) and report through the
//! sink set with `set_sink` (see [`crate::bridge`]). Values to encode are
//! passed boxed in a one-element table (`{ value }`) so numbers are read
//! exactly (see [`crate::convert::exact_get`]). Panics become Lua errors
//! (mlua catches them at every callback).
//!
//! | function | returns / reports |
//! |---|---|
//! | `version` | crate version (string field) |
//! | `encode({v})`, `decode(s)`, `roundtrip({v})` | value/bytes, or `nil, message` (`decode` refuses empty input) |
//! | `set_sink(fn(batch))` | — |
//! | `configure(settings)` | `true` or `nil, message` |
//! | `connect()` | id → `{ session_id, server_pid, server_version, socket }` |
//! | `invoke(module, fn, {args})` | id → one `value` per item, then `done` |
//! | `status(spawn)` | id → status table (`spawn=false`: probe, never start a server) |
//! | `modules()`, `load(name, path?)`, `unload(name)` | id → reply |
//! | `shutdown(reason)` | id → nil (never starts a server to stop it) |
//! | `publish(module, topic, {payload})` | id → number of sessions reached |
//! | `detach()` | id → whether a session was attached |
//! | `session()` | current session table or nil |
//! | `cancel(id)`, `in_flight()` | bool, count |
//! | `provide(name, {fn names})` | id → values `{type="registered"}`, `{type="call", call, fn, args}`, `{type="cancel", call}`; `done` when it ends (`cancel(id)` stops it) |
//! | `provide_reply(id, call, "item", {v})`, `(…, "end")`, `(…, "error", code, message)` | whether the call still runs (`nil, message` for an unsendable item) |
//! | `_ticker(n, ms)`, `_panic(msg)` | self-tests of the bridge and of panic handling |
//! | `places()`, `check_dir(path)`, `read_toml(path)` | paths table; `true` or `nil, message`; table or `nil, message` |
//! | `close()` | stops everything (VimLeavePre) |

use std::{future::Future, rc::Rc, sync::Arc, time::Duration};

use futures::StreamExt;
use mlua::{Function, IntoLuaMulti, Lua, MultiValue, Table, Value};
use norgopolis_client::{Client, RawCallStream};
use rmpv::Value as Mp;

use crate::{
    bridge::{self, ErrorInfo},
    conn::{self, error_info, Connection, Settings},
    convert::{self, exact_get, Codec},
    provide::{self, Providers, Reply},
    replies,
    requests::{Reporter, Requests},
};

/// Version of this library; the Lua side checks it matches its own.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Shared by every function in the table.
struct Ctx {
    codec: Rc<Codec>,
    requests: Requests,
    conn: Arc<Connection>,
    providers: Providers,
}

impl Ctx {
    /// Runs `work` with the attached client (attaching first if needed) and
    /// finishes the request with its result.
    fn with_client<F, Fut>(&self, lua: &Lua, work: F) -> mlua::Result<MultiValue>
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Mp, ErrorInfo>> + Send + 'static,
    {
        let conn = self.conn.clone();
        let spawned = self.requests.spawn(|reporter| async move {
            let result = match conn.client().await {
                Ok(client) => work(client).await,
                Err(e) => Err(e),
            };
            reporter.finish(result);
        });
        id_or_error(lua, spawned)
    }
}

/// Builds the module table (main thread, at load).
pub fn build(lua: &Lua) -> mlua::Result<Table> {
    let codec = Rc::new(Codec::new(lua)?);
    let outbox = bridge::install(lua, codec.clone())?;
    let requests = Requests::new(outbox.clone())
        .map_err(|e| mlua::Error::runtime(format!("cannot start the I/O runtime: {e}")))?;
    let ctx = Rc::new(Ctx {
        codec,
        requests,
        conn: Connection::new(outbox),
        providers: Providers::default(),
    });

    let m = lua.create_table()?;
    m.set("version", VERSION)?;
    add_codec(lua, &m, &ctx)?;
    add_requests(lua, &m, &ctx)?;
    add_control(lua, &m, &ctx)?;
    add_places(lua, &m)?;
    crate::catalog::add(lua, &m)?;
    add_provide(lua, &m, &ctx)?;
    Ok(m)
}

fn add_provide(lua: &Lua, m: &Table, ctx: &Rc<Ctx>) -> mlua::Result<()> {
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

fn add_codec(lua: &Lua, m: &Table, ctx: &Rc<Ctx>) -> mlua::Result<()> {
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

/// The value boxed in `boxed[1]` (boxed so that nil survives the call) as
/// MessagePack, or the `nil, error` pair that hands the refusal back to Lua
/// as an `InvalidArgument` error table.
fn encode_boxed(
    lua: &Lua,
    codec: &Codec,
    boxed: &Table,
    what: &str,
) -> mlua::Result<Result<Vec<u8>, MultiValue>> {
    let value = exact_get(boxed, Value::Integer(1))?;
    match codec.encode_bytes(&value, what) {
        Ok(bytes) => Ok(Ok(bytes)),
        Err(e) => {
            let err = ErrorInfo::new("InvalidArgument", format!("cannot send {what}: {e}"));
            Ok(Err(
                (Value::Nil, bridge::error_table(lua, &err)?).into_lua_multi(lua)?
            ))
        }
    }
}

fn add_requests(lua: &Lua, m: &Table, ctx: &Rc<Ctx>) -> mlua::Result<()> {
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
        let value = convert::decode_mp(&bytes)
            .and_then(|v| convert::check(&v, 0).map(|()| v))
            .map_err(|e| {
                ErrorInfo::new(
                    "Internal",
                    format!("{module}.{function} returned a value Lua cannot hold: {e}"),
                )
            })?;
        reporter.value(value);
    }
    Ok(())
}

fn add_control(lua: &Lua, m: &Table, ctx: &Rc<Ctx>) -> mlua::Result<()> {
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
        "status",
        lua.create_function(move |lua, spawn: Option<bool>| {
            if spawn.unwrap_or(true) {
                return c.with_client(lua, |client| async move {
                    client
                        .status()
                        .await
                        .map(replies::status)
                        .map_err(error_info)
                });
            }
            let conn = c.conn.clone();
            let spawned = c.requests.spawn(|reporter| async move {
                let result = match conn.existing_or_probe().await {
                    Ok(client) => client
                        .status()
                        .await
                        .map(replies::status)
                        .map_err(error_info),
                    Err(e) => Err(e),
                };
                reporter.finish(result);
            });
            id_or_error(lua, spawned)
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
            let conn = c.conn.clone();
            let spawned = c.requests.spawn(|reporter| async move {
                let result = match conn.existing_or_probe().await {
                    Ok(client) => client
                        .shutdown(&reason)
                        .await
                        .map(|()| Mp::Nil)
                        .map_err(error_info),
                    Err(e) => Err(e),
                };
                reporter.finish(result);
            });
            id_or_error(lua, spawned)
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

fn add_places(lua: &Lua, m: &Table) -> mlua::Result<()> {
    use norgopolis_common::places;
    m.set(
        "places",
        lua.create_function(|lua, ()| {
            let t = lua.create_table()?;
            let path = |r: Result<std::path::PathBuf, places::PlacesError>| match r {
                Ok(p) => Some(p.to_string_lossy().into_owned()),
                Err(_) => None,
            };
            if let Ok(p) = places::Places::from_env() {
                t.set("socket", p.socket.to_string_lossy().into_owned())?;
                t.set("runtime_dir", p.dir().to_string_lossy().into_owned())?;
                t.set("pid_file", p.pid_file.to_string_lossy().into_owned())?;
            }
            t.set("log", path(places::log_path()))?;
            t.set("config", path(places::config_path()))?;
            Ok(t)
        })?,
    )?;
    m.set(
        "read_toml",
        lua.create_function(|lua, path: String| {
            let parsed = std::fs::read_to_string(&path)
                .map_err(|e| format!("{path}: {e}"))
                .and_then(|text| {
                    toml::from_str::<toml::Value>(&text)
                        .map_err(|e| format!("{path}: {}", e.to_string().trim().replace('\n', " ")))
                });
            match parsed {
                Ok(v) => (toml_to_lua(lua, v)?, Value::Nil).into_lua_multi(lua),
                Err(e) => (Value::Nil, e).into_lua_multi(lua),
            }
        })?,
    )?;
    m.set(
        "check_dir",
        lua.create_function(|lua, dir: String| {
            match places::check_private_dir(std::path::Path::new(&dir)) {
                Ok(()) => (true, Value::Nil).into_lua_multi(lua),
                Err(e) => (Value::Nil, e.to_string()).into_lua_multi(lua),
            }
        })?,
    )?;
    Ok(())
}

/// A parsed TOML document as plain Lua values (datetimes as strings).
fn toml_to_lua(lua: &Lua, v: toml::Value) -> mlua::Result<Value> {
    Ok(match v {
        toml::Value::String(s) => Value::String(lua.create_string(s)?),
        toml::Value::Integer(i) => Value::Number(i as f64),
        toml::Value::Float(f) => Value::Number(f),
        toml::Value::Boolean(b) => Value::Boolean(b),
        toml::Value::Datetime(d) => Value::String(lua.create_string(d.to_string())?),
        toml::Value::Array(items) => {
            let t = lua.create_table_with_capacity(items.len(), 0)?;
            for (i, item) in items.into_iter().enumerate() {
                t.raw_set(i + 1, toml_to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
        toml::Value::Table(map) => {
            let t = lua.create_table_with_capacity(0, map.len())?;
            for (k, item) in map {
                t.raw_set(k, toml_to_lua(lua, item)?)?;
            }
            Value::Table(t)
        }
    })
}

/// `id` or `nil, {code, message}`.
fn id_or_error(lua: &Lua, spawned: Result<u64, ErrorInfo>) -> mlua::Result<MultiValue> {
    match spawned {
        Ok(id) => (id, Value::Nil).into_lua_multi(lua),
        Err(e) => (Value::Nil, bridge::error_table(lua, &e)?).into_lua_multi(lua),
    }
}
