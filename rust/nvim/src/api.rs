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
//! | `places()`, `check_dir(path)`, `read_toml(path)` | `{ socket, log }` (each absent when it cannot be located); `true` or `nil, message`; table or `nil, message` |
//! | `close()` | stops everything (VimLeavePre) |

mod calls;
mod codec;
mod control;
mod serving;

use std::{future::Future, rc::Rc, sync::Arc};

use mlua::{IntoLuaMulti, Lua, MultiValue, Table, Value};
use norgopolis_client::Client;
use rmpv::Value as Mp;

use crate::{
    bridge::{self, ErrorInfo},
    conn::Connection,
    convert::{exact_get, Codec},
    provide::Providers,
    requests::Requests,
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

/// Which client a request runs with.
#[derive(Clone, Copy)]
enum Reach {
    /// The attached client, attaching (and starting a server) if needed.
    Attach,
    /// The attached client, else a probe that neither starts a server nor
    /// keeps one alive (see [`Connection::existing_or_probe`]).
    ExistingOrProbe,
}

impl Ctx {
    /// Runs `work` with the attached client (attaching first if needed) and
    /// finishes the request with its result.
    fn with_client<F, Fut>(&self, lua: &Lua, work: F) -> mlua::Result<MultiValue>
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Mp, ErrorInfo>> + Send + 'static,
    {
        self.run_with(lua, Reach::Attach, work)
    }

    /// Runs `work` with the client `reach` finds and finishes the request
    /// with its result; failing to find one is the request's error.
    fn run_with<F, Fut>(&self, lua: &Lua, reach: Reach, work: F) -> mlua::Result<MultiValue>
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: Future<Output = Result<Mp, ErrorInfo>> + Send + 'static,
    {
        let conn = self.conn.clone();
        let spawned = self.requests.spawn(|reporter| async move {
            let client = match reach {
                Reach::Attach => conn.client().await,
                Reach::ExistingOrProbe => conn.existing_or_probe().await,
            };
            let result = match client {
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
    codec::add(lua, &m, &ctx)?;
    calls::add(lua, &m, &ctx)?;
    calls::add_self_tests(lua, &m, &ctx)?;
    control::add_session(lua, &m, &ctx)?;
    control::add(lua, &m, &ctx)?;
    add_places(lua, &m)?;
    crate::catalog::add(lua, &m)?;
    serving::add(lua, &m, &ctx)?;
    Ok(m)
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
            }
            t.set("log", path(places::log_path()))?;
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
